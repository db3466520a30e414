/* peak_vnni.c -- a calibration loop of independent VPDPBUSD on zmm: the
 * ceiling of gemm_i8_vnni.c's instruction on this core.  Built once with
 * -mavx512vnni (setup.py), called only where pt_igemm_packed_vnni_fn() is
 * not NULL. */
#define _POSIX_C_SOURCE 200809L
#include <immintrin.h>
#include "runtime/peak.h"
#include "runtime/peak_timer.h"

#if !defined(__AVX512VNNI__)
#error "peak_vnni.c is built with -mavx512vnni only"
#endif

#define CHAINS 16

static float dot_loop(int64_t iters) {
    __m512i acc[CHAINS];
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_epi32(c);
    __m512i x = _mm512_set1_epi32(0x01010101), y = _mm512_set1_epi32(0x01010101);
    for (int64_t i = 0; i < iters; i++) {
        for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_dpbusd_epi32(acc[c], x, y);
        __asm__ volatile("" : "+v"(x), "+v"(y));
    }
    __m512i s = acc[0];
    for (int c = 1; c < CHAINS; c++) s = _mm512_add_epi32(s, acc[c]);
    return (float)_mm512_reduce_add_epi32(s);
}

double pt_vnni_peak_gops(int nthreads, int64_t iters) {
    /* 16 lanes x 4 products x (multiply + add) per instruction */
    return pt_peak_rate(dot_loop, nthreads, iters, 128.0 * CHAINS);
}
