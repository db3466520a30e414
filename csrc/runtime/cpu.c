/* cpu.c -- run-time choice of the kernel path.  __builtin_cpu_supports checks
 * both the CPUID bits and that the OS saves the wider registers (XGETBV). */
#include "runtime/cpu.h"

#ifndef PT_HAVE_X86
#define PT_HAVE_X86 0
#endif

#define PT_TABLE(SUF, ISA)                                                  \
    {#SUF, ISA, pt_relu_##SUF, pt_gelu_##SUF, pt_gelu_tanh_##SUF,            \
     pt_softmax_##SUF, pt_layer_norm_##SUF, pt_sgemm_##SUF,                  \
     pt_sgemm_pack_b_##SUF, pt_sgemm_packed_##SUF, pt_attention_##SUF,  \
     pt_fma_peak_gflops_##SUF}

static const pt_kernel_table tables[] = {
    PT_TABLE(scalar, PT_ISA_SCALAR),
#if PT_HAVE_X86
    PT_TABLE(avx2, PT_ISA_AVX2),
    PT_TABLE(avx512, PT_ISA_AVX512),
#endif
};

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
