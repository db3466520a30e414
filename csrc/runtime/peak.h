/* peak.h -- the machine's fp32 FMA peak and its streaming-read bandwidth,
 * measured: the yardsticks GEMM efficiency and decoding are reported
 * against (bench/). */
#ifndef PT_PEAK_H
#define PT_PEAK_H

#include <stdint.h>
#include "runtime/simd.h"

/* GFLOP/s of `nthreads` threads each running `iters` rounds of independent
 * FMAs on this path's widest registers (2 flops per lane per FMA).  Only the
 * vector paths have a real loop; the scalar path returns 0. */
PT_DECLARE_VARIANTS(double, pt_fma_peak_gflops, (int nthreads, int64_t iters))

/* GB/s of `nthreads` threads each reading its contiguous share of the n
 * floats at x, `passes` times (vector loads summed into four accumulators):
 * the memory-bandwidth bound of a decoding step, which streams its weights
 * once, when x is much larger than the last-level cache. */
PT_DECLARE_VARIANTS(double, pt_stream_read_gbs, (const float *x, int64_t n, int64_t passes,
                                                  int nthreads))

/* The same for VDPBF16PS (64 flops per instruction: 16 lanes x 2 products x
 * multiply-add), in runtime/peak_bf16.c, built only with -mavx512bf16: call
 * it only where pt_cpu_has(PT_FEAT_AVX512_BF16). */
double pt_bf16_dot_peak_gflops(int nthreads, int64_t iters);

/* The same for TDPBF16PS (16384 flops per instruction: a 16 x 16 tile of
 * 32 products each, multiply-add), in runtime/peak_amx.c, built only with
 * -mamx-bf16: call it only where pt_bgemm_packed_amx() is not NULL. */
double pt_amx_bf16_peak_gflops(int nthreads, int64_t iters);
/* The same with TDPBSSD (64 int8 products per output, GOP/s); only where
 * pt_igemm_packed_amx_fn() is not NULL. */
double pt_amx_int8_peak_gops(int nthreads, int64_t iters);
/* VPDPBUSD on zmm (64 int8 products per instruction, GOP/s), in
 * runtime/peak_vnni.c: only where pt_igemm_packed_vnni_fn() is not NULL. */
double pt_vnni_peak_gops(int nthreads, int64_t iters);

#endif
