/* gemm_q.h -- weight-only quantized GEMM: float32 rows times weights held in
 * GGUF's own blocks (ggml's Q8_0, Q4_0, Q4_1), as a GGUF file stores them.
 *
 *   C[M x N] = act(A[M x K] . dequant(W)^T + bias[N])
 *
 * W: N rows (a Linear weight's out_features), row n at W + n * ldw bytes,
 * each K/32 blocks of 32 weights (K a multiple of 32):
 *   Q8_0 (34 bytes): fp16 d, 32 x int8 q           w = q * d
 *   Q4_0 (18 bytes): fp16 d, 16 bytes of nibbles   w = (q - 8) * d
 *   Q4_1 (20 bytes): fp16 d, fp16 m, 16 bytes      w = q * d + m
 * with q of element j < 16 in the low nibble of byte j and of element 16 + j
 * in its high nibble (ggml's order), as ggml's dequantize_row_* reads them.
 * The product is that of the dequantized matrix up to fp32 rounding: the
 * kernels sum q * a per block and apply the block's d (and m) once
 * (gemm_q.c), and a row whose blocks hold an inf or NaN scale gives NaN.
 * Activations stay float32: nothing is quantized at run time.
 *
 * The weights are re-laid once by pt_qgemm_pack (the same bytes, moved):
 * ceil(N/16) groups of 16 rows; group g holds its K/32 blocks in order, each
 * 16 x (block bytes): the 16 rows' fp16 d (then, for Q4_1, their 16 fp16
 * m), then the quants k-major -- Q8_0: q[k][row] for k < 32; Q4: byte j of
 * every row for j < 16 (low nibble k = j, high k = j + 16).  Rows past N
 * are zero.  One layout for every path.
 *
 * Determinism: each C element is one sum over k in an order fixed by K, the
 * type and the path alone (gemm_q.c), never by M, by which rows share a
 * pass, or by the thread split (threads split N).
 */
#ifndef PT_GEMM_Q_H
#define PT_GEMM_Q_H

#include <stddef.h>
#include <stdint.h>
#include "rowwise/activation.h"
#include "runtime/simd.h"
#include "runtime/status.h"

/* ggml's type ids */
#define PT_Q4_0 2
#define PT_Q4_1 3
#define PT_Q8_0 8

typedef struct {
    int qtype;        /* PT_Q8_0, PT_Q4_0 or PT_Q4_1 */
    int64_t K, N;     /* in_features, out_features */
    size_t size;      /* bytes of data */
    uint8_t *data;    /* the groups, 64-byte aligned */
    float *poison;    /* NULL, or per row (ceil(N/16) * 16): NaN where the row
                         holds a non-finite scale, else 0 */
} pt_packed_q;

/* Bytes per block of 32 weights of `qtype`, 0 for an unknown type. */
int pt_q_block_bytes(int qtype);

/* W: N rows of K/32 GGUF blocks, row n at W + n * ldw bytes.  NULL for an
 * unknown type, K not a multiple of 32, ldw shorter than a row, or out of
 * memory.  Rows with a non-finite scale are noted (poison). */
pt_packed_q *pt_qgemm_pack(const uint8_t *W, int64_t ldw, int qtype, int64_t N, int64_t K);
void pt_packed_q_free(pt_packed_q *p);

/* C = act(A . dequant(W)^T + bias), A: M x K (row stride lda).  Returns
 * PT_OK, PT_ERR_NOMEM (its working buffers for many rows; C untouched) or
 * PT_ERR_ARG for a NULL or malformed W (C untouched). */
PT_DECLARE_VARIANTS(int, pt_qgemm_packed,
                    (float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                     const pt_packed_q *W, const float *bias, int act, int nthreads))

/* The twin, on the GGUF blocks themselves: each weight dequantized by the
 * formulas above (fp16 widened in portable C), the products summed in
 * double, the epilogue by the activation twins.  PT_ERR_ARG as
 * pt_qgemm_pack refuses. */
int pt_qgemm_ref(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                 const uint8_t *W, int64_t ldw, int qtype, int64_t N, int64_t K,
                 const float *bias, int act);

#endif
