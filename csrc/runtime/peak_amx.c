/* peak_amx.c -- calibration loops of independent TDPBF16PS (or TDPBSSD) on
 * four accumulator tiles: the ceiling of gemm_bf16_amx.c's (gemm_i8_amx.c's)
 * instruction on this core.  Built once with the AMX flags (setup.py),
 * called only where pt_bgemm_packed_amx_fn() (pt_igemm_packed_amx_fn()) is
 * not NULL: the OS has granted the tiles. */
#define _POSIX_C_SOURCE 200809L
#include "gemm/amx.h"
#include "runtime/peak.h"
#include "runtime/peak_timer.h"

#if !defined(__AMX_BF16__) || !defined(__AMX_TILE__) || !defined(__AMX_INT8__)
#error "peak_amx.c is built with -mamx-tile -mamx-bf16 -mamx-int8 only"
#endif

static float tile_loop(int64_t iters, int int8) {
    pt_amx_configure();
    /* bf16 pairs of 2^-10 each: products stay far from overflow and subnormals */
    static const uint32_t src[256] __attribute__((aligned(64))) = {[0 ... 255] = 0x3a803a80u};
    float out[256] __attribute__((aligned(64)));
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, src, 64); _tile_loadd(5, src, 64);
    _tile_loadd(6, src, 64); _tile_loadd(7, src, 64);
    if (int8)   /* bytes of 0x3a: int32 sums of 58^2 x 64 per step, wrapping harmlessly */
        for (int64_t i = 0; i < iters; i++) {
            _tile_dpbssd(0, 4, 6);
            _tile_dpbssd(1, 4, 7);
            _tile_dpbssd(2, 5, 6);
            _tile_dpbssd(3, 5, 7);
        }
    else
        for (int64_t i = 0; i < iters; i++) {
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    _tile_stored(0, out, 64);
    float s = out[0];
    _tile_stored(3, out, 64);
    s += out[255];
    _tile_release();
    return s;
}

static float bf16_loop(int64_t iters) { return tile_loop(iters, 0); }
static float int8_loop(int64_t iters) { return tile_loop(iters, 1); }

/* 4 instructions x 16 x 16 outputs x 32 (bf16) or 64 (int8) products x
 * (multiply + add) per iteration */
double pt_amx_bf16_peak_gflops(int nthreads, int64_t iters) {
    return pt_peak_rate(bf16_loop, nthreads, iters, 4.0 * 16384.0);
}
double pt_amx_int8_peak_gops(int nthreads, int64_t iters) {
    return pt_peak_rate(int8_loop, nthreads, iters, 4.0 * 32768.0);
}
