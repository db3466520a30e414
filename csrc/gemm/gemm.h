/* gemm.h -- single-precision matrix multiply with a fused epilogue.
 *
 *   C[M x N] = act(op(A)[M x K] . op(B)[K x N] + bias[N])
 *
 * Row-major storage.  op(A) = A (M x K, row stride lda) or, with trans_a, A^T
 * where A is stored K x M; likewise op(B) = B (K x N) or B^T with B stored
 * N x K -- the layout of a torch Linear weight (out_features x in_features).
 * bias may be NULL; act is one of PT_ACT_*.  C must not overlap A or B.
 *
 * Determinism: each C element is a sum over k in a fixed order that depends
 * only on K -- never on M, on the thread count or on how the work is split
 * (threads split M and N, never K).
 */
#ifndef PT_GEMM_H
#define PT_GEMM_H

#include <stddef.h>
#include <stdint.h>
#include "rowwise/activation.h" /* PT_ACT_* */
#include "runtime/simd.h"
#include "runtime/status.h"

/* Returns PT_OK, or PT_ERR_NOMEM when its working buffers could not be
 * allocated: C is then untouched.  (Never a slower route instead: a row's bits
 * must not depend on malloc.) */
PT_DECLARE_VARIANTS(int, pt_sgemm,
                    (float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                     const float *B, int64_t ldb, int trans_b, int64_t M, int64_t N, int64_t K,
                     const float *bias, int act, int nthreads))

/* A B operand packed once for a kernel path and reused by every call: model
 * weights never change at inference.  Owns its memory; free with
 * pt_packed_b_free.  `isa` records the path whose layout it holds:
 * ceil(N/nr) panels of nr columns (the micro-kernel's NR: 32 on AVX-512,
 * 16 on AVX2, 4 scalar), panel p holding K rows of nr floats at
 * data + p*K*nr, zero padded past N.  pt_sgemm_packed of another path
 * returns PT_ERR_PATH and leaves C untouched: repack when the path changes. */
typedef struct {
    int isa;          /* PT_ISA_* whose micro-kernel layout `data` holds */
    int64_t K, N;     /* logical op(B) shape */
    int64_t nr;       /* panel width: the micro-kernel's NR on that path */
    size_t size;      /* floats in data */
    float *data;      /* packed panels, 64-byte aligned */
} pt_packed_b;

/* NULL when out of memory. */
PT_DECLARE_VARIANTS(pt_packed_b *, pt_sgemm_pack_b,
                    (const float *B, int64_t ldb, int trans_b, int64_t K, int64_t N))
/* C = act(A . B + bias) with A: M x K (row stride lda), B packed by the same
 * path.  Returns PT_OK, PT_ERR_NOMEM (C untouched) or PT_ERR_PATH. */
PT_DECLARE_VARIANTS(int, pt_sgemm_packed,
                    (float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                     const pt_packed_b *B, const float *bias, int act, int nthreads))
void pt_packed_b_free(pt_packed_b *p);

/* Naive triple loop with a double accumulator: the twin the tests trust. */
void pt_sgemm_ref(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                  const float *B, int64_t ldb, int trans_b, int64_t M, int64_t N, int64_t K,
                  const float *bias, int act);

#endif
