/* peak_bf16.c -- a calibration loop of independent VDPBF16PS: the ceiling of
 * the bf16 GEMM's instruction on this core, as peak.c's FMA loop is for the
 * fp32 GEMM.  Built once with -mavx512bf16 (setup.py), called only where
 * pt_cpu_has(PT_FEAT_AVX512_BF16). */
#define _POSIX_C_SOURCE 200809L
#include "runtime/peak.h"
#include "runtime/peak_timer.h"

#if !defined(__AVX512BF16__)
#error "peak_bf16.c is built with -mavx512bf16 only"
#endif

#define CHAINS 16

static float dot_loop(int64_t iters) {
    __m512 acc[CHAINS];
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_ps(1.0f + (float)c * 1e-3f);
    /* bf16 pairs of 2^-10 each: products stay far from overflow and subnormals */
    __m512i x = _mm512_set1_epi32(0x3a803a80), y = _mm512_set1_epi32(0x3a803a80);
    for (int64_t i = 0; i < iters; i++) {
        for (int c = 0; c < CHAINS; c++)
            acc[c] = _mm512_dpbf16_ps(acc[c], (__m512bh)x, (__m512bh)y);
        __asm__ volatile("" : "+v"(x), "+v"(y));
    }
    __m512 s = acc[0];
    for (int c = 1; c < CHAINS; c++) s = _mm512_add_ps(s, acc[c]);
    return _mm512_reduce_add_ps(s);
}

double pt_bf16_dot_peak_gflops(int nthreads, int64_t iters) {
    /* 16 lanes x 2 products x (multiply + add) per instruction */
    return pt_peak_rate(dot_loop, nthreads, iters, 64.0 * CHAINS);
}
