/* gemm_ref.c -- the naive twin of pt_sgemm, trusted by the tests: a triple
 * loop with a double accumulator, the epilogue by the activation twins
 * (pt_act_ref). */
#include "gemm/gemm.h"
#include "rowwise/activation.h"

#if PT_ISA == PT_ISA_SCALAR
void pt_sgemm_ref(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                  const float *B, int64_t ldb, int trans_b, int64_t M, int64_t N, int64_t K,
                  const float *bias, int act) {
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++)
                s += (double)(trans_a ? A[k * lda + i] : A[i * lda + k]) *
                     (double)(trans_b ? B[j * ldb + k] : B[k * ldb + j]);
            if (bias) s += bias[j];
            C[i * ldc + j] = (float)s;
        }
        pt_act_ref(C + i * ldc, N, act);
    }
}
#endif
