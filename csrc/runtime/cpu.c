/* cpu.c -- run-time choice of the kernel path.  __builtin_cpu_supports checks
 * both the CPUID bits and that the OS saves the wider registers (XGETBV). */
#include "runtime/cpu.h"

#ifndef PT_HAVE_X86
#define PT_HAVE_X86 0
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
