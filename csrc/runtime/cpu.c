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

/* Walk the cache descriptors of `leaf` (4 or 0x8000001D: one format):
 * EAX[4:0] type (0: no more; 1 data, 3 unified), EAX[7:5] level,
 * EAX[25:14] + 1 logical processors sharing it; EBX ways, partitions, line
 * size and ECX sets, each minus one. */
static int64_t cache_from_leaf(unsigned leaf, int level) {
#if PT_HAVE_X86 && (defined(__GNUC__) || defined(__clang__))
    unsigned max = __get_cpuid_max(leaf & 0x80000000u, NULL);
    if (max < leaf) return 0;
    for (unsigned i = 0; i < 16; i++) {
        unsigned a, b, c, d;
        __cpuid_count(leaf, i, a, b, c, d);
        unsigned type = a & 31u;
        if (type == 0) break;
        if ((type != 1 && type != 3) || (int)((a >> 5) & 7u) != level) continue;
        int64_t bytes = (int64_t)((b >> 22) + 1) * (((b >> 12) & 1023u) + 1) *
                        ((b & 4095u) + 1) * ((int64_t)c + 1);
        int64_t sharing = (int64_t)((a >> 14) & 4095u) + 1;
        return bytes / sharing;
    }
#else
    (void)leaf;
    (void)level;
#endif
    return 0;
}

int64_t pt_cpu_cache_bytes(int level) {
    static int64_t sizes[4] = {-1, -1, -1, -1};   /* a benign race: the same values */
    if (level < 1 || level > 3) return 0;
    if (sizes[level] < 0) {
        int64_t b = 0;
#if PT_HAVE_X86 && (defined(__GNUC__) || defined(__clang__))
        unsigned a0 = 0, vb = 0, vc = 0, vd = 0;
        __get_cpuid(0, &a0, &vb, &vc, &vd);
        int amd = vb == 0x68747541u;                 /* "Auth"enticAMD */
        b = cache_from_leaf(amd ? 0x8000001Du : 4u, level);
#endif
        sizes[level] = b;
    }
    return sizes[level];
}

static int64_t forced_mc, forced_nc;

void pt_gemm_set_blocking(int64_t mc, int64_t nc) {
    forced_mc = mc > 0 ? mc : 0;
    forced_nc = nc > 0 ? nc : 0;
}

void pt_gemm_forced_blocking(int64_t *mc, int64_t *nc) {
    *mc = forced_mc;
    *nc = forced_nc;
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
