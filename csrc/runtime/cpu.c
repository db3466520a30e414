/* cpu.c -- run-time choice of the kernel path.  __builtin_cpu_supports checks
 * both the CPUID bits and that the OS saves the wider registers (XGETBV). */
#define _GNU_SOURCE                 /* syscall() */
#include "runtime/cpu.h"

#ifndef PT_HAVE_X86
#define PT_HAVE_X86 0
#endif
/* 1 when gemm_bf16_dot.c and peak_bf16.c are built (x86 with -mavx512bf16) */
#ifndef PT_HAVE_BF16_DOT
#define PT_HAVE_BF16_DOT 0
#endif
/* 1 when gemm_i8_vnni.c is built (x86 with -mavx512vnni) */
#ifndef PT_HAVE_VNNI
#define PT_HAVE_VNNI 0
#endif
/* 1 when gemm_bf16_amx.c, gemm_i8_amx.c and peak_amx.c are built (x86 with
 * -mamx-bf16 -mamx-int8) */
#ifndef PT_HAVE_AMX
#define PT_HAVE_AMX 0
#endif
#if PT_HAVE_X86 && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif
#if PT_HAVE_X86 && PT_HAVE_AMX && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define PT_ARCH_REQ_XCOMP_PERM 0x1023   /* linux/arch/x86/include/uapi/asm/prctl.h */
#define PT_XFEATURE_XTILEDATA 18
#endif

/* Every entry of kernels.def must have the type its header declares. */
#if defined(__GNUC__) || defined(__clang__)
#define PT_KERNEL(ret, name, args)                                                  \
    _Static_assert(__builtin_types_compatible_p(__typeof__(&pt_##name##_scalar),   \
                                                ret (*) args),                      \
                   "kernels.def: pt_" #name " differs from its header");
#include "runtime/kernels.def"
#undef PT_KERNEL
#endif

/* The table of one path: pt_<name>_<SUF> for every entry. */
#define PT_ENTRY(name, suf) .name = pt_##name##_##suf,
#define PT_ENTRY_OF(name, suf) PT_ENTRY(name, suf)
#define PT_KERNEL(ret, name, args) PT_ENTRY_OF(name, PT_TABLE_SUFFIX)

static const pt_kernel_table tables[] = {
#define PT_TABLE_SUFFIX scalar
    {.name = "scalar", .isa = PT_ISA_SCALAR,
#include "runtime/kernels.def"
    },
#undef PT_TABLE_SUFFIX
#if PT_HAVE_X86
#define PT_TABLE_SUFFIX avx2
    {.name = "avx2", .isa = PT_ISA_AVX2,
#include "runtime/kernels.def"
    },
#undef PT_TABLE_SUFFIX
#define PT_TABLE_SUFFIX avx512
    {.name = "avx512", .isa = PT_ISA_AVX512,
#include "runtime/kernels.def"
    },
#undef PT_TABLE_SUFFIX
#endif
};
#undef PT_KERNEL

const pt_kernel_table *pt_kernels_for(int isa) {
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
        if (tables[i].isa == isa) return &tables[i];
    return NULL;
}

int pt_cpu_supports(int isa) {
    if (!pt_kernels_for(isa)) return 0;
    switch (isa) {
    case PT_ISA_SCALAR: return 1;
#if PT_HAVE_X86 && (defined(__GNUC__) || defined(__clang__))
    case PT_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case PT_ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("fma");
#endif
    default: return 0;
    }
}

int pt_cpu_best_isa(void) {
    if (pt_cpu_supports(PT_ISA_AVX512)) return PT_ISA_AVX512;
    if (pt_cpu_supports(PT_ISA_AVX2)) return PT_ISA_AVX2;
    return PT_ISA_SCALAR;
}

#if PT_HAVE_X86 && (defined(__GNUC__) || defined(__clang__))
static uint64_t xcr0(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;   /* OSXSAVE */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}
#endif

int pt_cpu_has(int feature) {
#if PT_HAVE_X86 && (defined(__GNUC__) || defined(__clang__))
    unsigned a0 = 0, b0 = 0, c0 = 0, d0 = 0, a1 = 0, b1 = 0, c1 = 0, d1 = 0, max = 0;
    __get_cpuid(0, &max, &b0, &c0, &d0);
    if (max < 7) return 0;
    __cpuid_count(7, 0, a0, b0, c0, d0);
    if (a0 >= 1) __cpuid_count(7, 1, a1, b1, c1, d1);
    uint64_t x = xcr0();
    int zmm_os = (x & 0xe6) == 0xe6;       /* SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM */
    switch (feature) {
    case PT_FEAT_AVX512_BF16:
        __builtin_cpu_init();
        return (int)((a1 >> 5) & 1u) && zmm_os && __builtin_cpu_supports("avx512f");
    case PT_FEAT_AVX512_VNNI: return (int)((c0 >> 11) & 1u) && zmm_os;
    case PT_FEAT_AMX_BF16: return (int)((d0 >> 22) & 1u);
    case PT_FEAT_AMX_INT8: return (int)((d0 >> 25) & 1u);
    case PT_FEAT_AMX_TILE: return (int)((d0 >> 24) & 1u);
    case PT_FEAT_AMX_OS: return (int)((d0 >> 24) & 1u) && (x & 0x60000) == 0x60000;
    default: return 0;
    }
#else
    (void)feature;
    return 0;
#endif
}

pt_bgemm_packed_fn pt_bgemm_packed_dot(void) {
#if PT_HAVE_X86 && PT_HAVE_BF16_DOT
    if (pt_cpu_supports(PT_ISA_AVX512) && pt_cpu_has(PT_FEAT_AVX512_BF16))
        return pt_bgemm_packed_avx512bf16;
#endif
    return NULL;
}

int pt_cpu_amx_granted(void) {
#if PT_HAVE_X86 && PT_HAVE_AMX && defined(__linux__)
    static int granted = -1;    /* a benign race: the request is idempotent */
    if (granted < 0) {
        int ok = pt_cpu_has(PT_FEAT_AMX_OS) && pt_cpu_has(PT_FEAT_AMX_TILE) &&
                 syscall(SYS_arch_prctl, PT_ARCH_REQ_XCOMP_PERM, PT_XFEATURE_XTILEDATA) == 0;
        granted = ok;
    }
    return granted;
#else
    return 0;
#endif
}

pt_bgemm_packed_fn pt_bgemm_packed_amx_fn(void) {
#if PT_HAVE_X86 && PT_HAVE_AMX
    if (pt_cpu_supports(PT_ISA_AVX512) && pt_cpu_has(PT_FEAT_AMX_BF16) && pt_cpu_amx_granted())
        return pt_bgemm_packed_amx;
#endif
    return NULL;
}

pt_igemm_packed_fn pt_igemm_packed_vnni_fn(void) {
#if PT_HAVE_X86 && PT_HAVE_VNNI
    if (pt_cpu_supports(PT_ISA_AVX512) && pt_cpu_has(PT_FEAT_AVX512_VNNI))
        return pt_igemm_packed_vnni;
#endif
    return NULL;
}

pt_igemm_packed_fn pt_igemm_packed_amx_fn(void) {
#if PT_HAVE_X86 && PT_HAVE_AMX && PT_HAVE_VNNI
    if (pt_igemm_packed_vnni_fn() && pt_cpu_has(PT_FEAT_AMX_INT8) && pt_cpu_amx_granted())
        return pt_igemm_packed_amx;
#endif
    return NULL;
}
