/* peak_timer.h -- what every calibration loop (peak.c, peak_bf16.c,
 * peak_vnni.c, peak_amx.c) shares: a short warm-up run of the loop (to wake
 * the clocks), then `nthreads` threads each running it `iters` times; the
 * rate in G operations per second, given the operations of one iteration.
 * A file including it defines _POSIX_C_SOURCE first (clock_gettime under
 * -std=c11). */
#ifndef PT_PEAK_TIMER_H
#define PT_PEAK_TIMER_H

#include <stdint.h>
#include <time.h>

static inline double pt_peak_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* loop returns a value computed from its accumulators, so the compiler
 * cannot drop it; the values are summed and discarded. */
static inline double pt_peak_rate(float (*loop)(int64_t), int nthreads, int64_t iters,
                                  double ops_per_iter) {
    if (nthreads < 1) nthreads = 1;
    if (iters < 1) iters = 1;
    volatile float sink = 0.0f;
    loop(iters / 16 + 1);
    double t0 = pt_peak_seconds();
#pragma omp parallel num_threads(nthreads)
    {
        float s = loop(iters);
#pragma omp atomic
        sink += s;
    }
    (void)sink;
    double dt = pt_peak_seconds() - t0;
    return ops_per_iter * (double)iters * (double)nthreads / dt * 1e-9;
}

#endif
