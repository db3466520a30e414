/* gemm_i8.h -- the int8 GEMM (compute type "int8"): weights int8 with one
 * scale per output channel, activations quantized per row at run time,
 * int32 accumulation, dequantize and epilogue in fp32.
 *
 *   C[i, j] = act((float)acc[i, j] * (sa[i] * sw[j]) + o[i, j] * sw[j] + bias[j])
 *   acc[i, j] = sum_k qa[i, k] * qw[j, k]          (exact, in int32)
 *   o[i, j]   = sum over the outliers (k, x) of row i of x * qw[j, k]   (fp32)
 *
 * Quantization (pt_i8_quantize: the same code for weights and activations):
 * symmetric, per row, amax = max |x|; scale = amax / 127, q = rint(x * (127 /
 * amax)) in [-127, 127] (ties to even).  A zero row has scale 0; a row holding
 * inf or NaN has scale NaN and q = 0, so its outputs are NaN, as in float32.
 * The weight's rows are its output channels (W: N x K, a Linear weight).
 *
 * Outliers.  Transformer activations carry a few channels far larger than
 * the rest (BERT's [CLS] rows: one value ~30 where the others are ~1), and
 * one scale per row would leave the rest a handful of levels.  So before a
 * row of A is quantized, its outliers -- x with x^2 > 64 mean(x^2), i.e.
 * |x| > 8 rms (the factor quadrupled until at most PT_I8_OUTLIERS remain;
 * mean(x^2) summed in a fixed order) -- are taken out (q = 0 there), the
 * rest quantized with their own amax, and each outlier multiplied in fp32 by
 * its int8 weight column (o above, in ascending k, one rounding per product
 * and sum).  A row's outliers depend on that row alone.
 * The product of the two scales is rounded once, then the conversion of acc,
 * the product, the outliers' term and the bias each once, in that order: the
 * twin (pt_igemm_ref) performs the same fp32 operations, and the activation
 * is the path's own (apply_act).
 *
 * Packed layout, one for every path: K padded to Kp, a multiple of 64 (one
 * AMX-INT8 tile row); ceil(N/32) panels of 32 columns, panel p holding Kp/4
 * rows of 32 quads at data + p*Kp*32 bytes, quad (kk, j) = qw[j, 4kk .. 4kk+3]
 * in its four bytes (the layout VPDPBUSD and TDPBSSD read), zero past K and
 * past N.  scale[j] = sw[j]; colsum[j] = sum_k qw[j, k] (for VPDPBUSD's
 * unsigned operand: it multiplies qa + 128 and subtracts 128 * colsum).
 *
 * Paths.  pt_igemm_packed_<isa> (kernels.def, every path): PMADDUBSW /
 * PMADDWD on |a| and b with a's sign (avx2, avx512), plain C (scalar).
 * pt_igemm_packed_vnni (gemm_i8_vnni.c, -mavx512vnni): VPDPBUSD, handed out
 * by cpu.c's pt_igemm_packed_vnni_fn() where CPUID says AVX512_VNNI.
 * pt_igemm_packed_amx (gemm_i8_amx.c, -mamx-int8): TDPBSSD tiles, handed out
 * by pt_igemm_packed_amx_fn() where the CPU has AMX-INT8 (and VNNI, which it
 * uses for fewer than 16 rows) and Linux granted the tile data.
 *
 * Determinism: acc is an exact integer sum (no overflow: K <= PT_I8_MAX_K),
 * so every path and every blocking gives the same acc, and a row's result
 * depends on that row alone -- never on M, on padding or on the thread split.
 */
#ifndef PT_GEMM_I8_H
#define PT_GEMM_I8_H

#include <stddef.h>
#include <stdint.h>
#include "rowwise/activation.h"
#include "runtime/simd.h"
#include "runtime/status.h"

/* Largest K: (qa + 128) * qw summed over K stays below 2^31 (255 * 127 * K). */
#define PT_I8_MAX_K 65536
#define PT_I8_NR 32      /* columns per panel */
#define PT_I8_KQ 64      /* Kp is a multiple of this */
#define PT_I8_OUTLIERS 8 /* outliers of a row of A at most */
#define PT_I8_OUTLIER_T 8 /* |x| > 8 rms is an outlier */

typedef struct {
    int64_t K, N;
    int64_t Kp;        /* K rounded up to a multiple of 64 */
    size_t size;       /* bytes of data */
    int8_t *data;      /* ceil(N/32) panels of Kp/4 x 32 quads, 64-byte aligned */
    float *scale;      /* N per-channel scales, then zeros to whole panels */
    int32_t *colsum;   /* N column sums of qw, then zeros to whole panels */
} pt_packed_i8;

/* Quantizes op(B) (B stored N x K with trans_b: a Linear weight) per output
 * channel and packs it; NULL when out of memory or K > PT_I8_MAX_K. */
pt_packed_i8 *pt_igemm_pack_b(const float *B, int64_t ldb, int trans_b, int64_t K, int64_t N);
void pt_packed_i8_free(pt_packed_i8 *p);

/* C = act(A . B + bias) as above, A: M x K float32 (row stride lda),
 * quantized per row in the call.  Returns PT_OK or PT_ERR_NOMEM (C
 * untouched). */
PT_DECLARE_VARIANTS(int, pt_igemm_packed,
                    (float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                     const pt_packed_i8 *B, const float *bias, int act, int nthreads))
int pt_igemm_packed_vnni(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                         const pt_packed_i8 *B, const float *bias, int act, int nthreads);
int pt_igemm_packed_amx(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                        const pt_packed_i8 *B, const float *bias, int act, int nthreads);

/* One row x[0 .. n) quantized as above into q[0 .. n); returns its scale.
 * With ok and ox (each of PT_I8_OUTLIERS), as a row of A: its outliers'
 * indices and values, their count in *nout; without (NULL), as a weight's. */
float pt_i8_quantize(const float *x, int64_t n, int8_t *q, int32_t *ok, float *ox,
                     int32_t *nout);

/* The twin: both operands quantized by pt_i8_quantize, the sums in int64,
 * the dequantization as above, the epilogue by the activation twins. */
void pt_igemm_ref(float *C, int64_t ldc, const float *A, int64_t lda, const float *B,
                  int64_t ldb, int trans_b, int64_t M, int64_t N, int64_t K,
                  const float *bias, int act);

#endif
