/* gemv.h -- a few rows against packed panels, streamed (internal to
 * csrc/gemm/; gemm.c calls it from the five loops' entry). */
#ifndef PT_GEMM_GEMV_H
#define PT_GEMM_GEMV_H

#include <stdint.h>
#include "runtime/simd.h"

#define gemv_packed PT_FN(pt_gemm_gemv_packed)

/* C rows [m0, m0 + rows), columns [n0, n1) of act(op(A) . Bp + bias), rows
 * <= 3, Bp packed panels of all of op(B) (K x N).  Ap: room for K x MR
 * floats. */
void gemv_packed(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                 const float *Bp, int64_t K, int64_t N, int64_t m0, int rows, int64_t n0,
                 int64_t n1, const float *bias, int act, float *Ap);

#endif
