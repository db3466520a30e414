/* peak.c -- the two yardsticks of the float32 kernels: a calibration loop of
 * independent FMAs (the bound of a GEMM) and a streaming read (the bound of
 * decoding at batch 1, which reads every weight once a step).
 *
 * Two FMA pipes of latency ~4 cycles need at least 8 independent chains in
 * flight; 16 (AVX-512) or 12 (AVX2) accumulators leave margin and stay in
 * registers, so memory never limits the loop.  The result is the ceiling a GEMM micro-kernel
 * could reach on this core at this moment (clock, sharing), measured in the
 * same run as the GEMM it judges. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c11 */
#include "runtime/peak.h"
#include "runtime/peak_timer.h"

/* The streaming read: each of nthreads threads sums its own contiguous part
 * of x (as a column-split GEMV streams its own panels), `passes` times over,
 * with four independent vector accumulators so that loads, not adds, are the
 * limit.  GB/s read, the time taken from before the threads start to after
 * the last one ends (what a kernel call pays). */
static float stream_part(const float *x, int64_t n) {
#if PT_ISA == PT_ISA_SCALAR
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += x[i];
        a1 += x[i + 1];
        a2 += x[i + 2];
        a3 += x[i + 3];
    }
    for (; i < n; i++) a0 += x[i];
    return (a0 + a1) + (a2 + a3);
#else
    /* STREAMS sequential streams at once, one cache line of each per round
     * (as the GEMV reads its panels), prefetched ahead */
    enum { STREAMS = 4, LINE = 64 / (int)sizeof(float), AHEAD = 16 * LINE };
    int64_t len = n / STREAMS / LINE * LINE;
    pt_vf acc[STREAMS];
    for (int q = 0; q < STREAMS; q++) acc[q] = pt_vzero();
    for (int64_t i = 0; i < len; i += LINE) {
        for (int q = 0; q < STREAMS; q++) {
            const float *p = x + q * len + i;
            _mm_prefetch((const char *)(p + AHEAD), _MM_HINT_T0);
            for (int v = 0; v < LINE; v += PT_VL) acc[q] = pt_vadd(acc[q], pt_vload(p + v));
        }
    }
    pt_vf s = acc[0];
    for (int q = 1; q < STREAMS; q++) s = pt_vadd(s, acc[q]);
    float r = pt_vreduce_add(s);
    for (int64_t i = STREAMS * len; i < n; i++) r += x[i];
    return r;
#endif
}

double PT_FN(pt_stream_read_gbs)(const float *x, int64_t n, int64_t passes, int nthreads) {
    if (n <= 0) return 0.0;
    if (passes < 1) passes = 1;
    if (nthreads < 1) nthreads = 1;
    volatile float sink = stream_part(x, n < 4096 ? n : 4096);   /* wake the clocks */
    double t0 = pt_peak_seconds();
#pragma omp parallel num_threads(nthreads)
    {
        int t = 0, nt = 1;
#if defined(_OPENMP)
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        int64_t lo = n * t / nt, hi = n * (t + 1) / nt;
        float s = 0.0f;
        for (int64_t p = 0; p < passes; p++) {
            s += stream_part(x + lo, hi - lo);
            __asm__ volatile("" : : "r"(x) : "memory");   /* read again each pass */
        }
#pragma omp atomic
        sink += s;
    }
    (void)sink;
    double dt = pt_peak_seconds() - t0;
    return 4.0 * (double)n * (double)passes / dt * 1e-9;
}

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
