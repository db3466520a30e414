/* peak.c -- a calibration loop of independent FMAs.
 *
 * Two FMA pipes of latency ~4 cycles need at least 8 independent chains in
 * flight; 16 (AVX-512) or 12 (AVX2) accumulators leave margin and stay in
 * registers, so memory never limits the loop.  The result is the ceiling a GEMM micro-kernel
 * could reach on this core at this moment (clock, sharing), measured in the
 * same run as the GEMM it judges. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c11 */
#include "runtime/peak.h"
#include "runtime/peak_timer.h"

#if PT_ISA == PT_ISA_SCALAR
double PT_FN(pt_fma_peak_gflops)(int nthreads, int64_t iters) {
    (void)nthreads;
    (void)iters;
    return 0.0;
}
#else
#if PT_ISA == PT_ISA_AVX512
#define CHAINS 16   /* of 32 zmm */
#else
#define CHAINS 12   /* of 16 ymm: with x and y, more would spill */
#endif

/* Returns a sum so the compiler cannot drop the loop. */
static float fma_loop(int64_t iters) {
    pt_vf acc[CHAINS];
    for (int c = 0; c < CHAINS; c++) acc[c] = pt_vset1(1.0f + (float)c * 1e-3f);
    pt_vf x = pt_vset1(0.999999f), y = pt_vset1(1e-7f);
    for (int64_t i = 0; i < iters; i++) {
        for (int c = 0; c < CHAINS; c++) acc[c] = pt_vfmadd(acc[c], x, y);
        /* keep x, y in registers but opaque to the optimiser */
        __asm__ volatile("" : "+x"(x), "+x"(y));
    }
    pt_vf s = acc[0];
    for (int c = 1; c < CHAINS; c++) s = pt_vadd(s, acc[c]);
    return pt_vreduce_add(s);
}

double PT_FN(pt_fma_peak_gflops)(int nthreads, int64_t iters) {
    return pt_peak_rate(fma_loop, nthreads, iters, 2.0 * PT_VL * CHAINS);
}
#endif
