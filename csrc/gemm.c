/* gemm.c -- single-precision GEMM. */
#include <stdlib.h>
#include <string.h>
#include "gemm.h"
#include "pt_vmath.h"

static inline float act_scalar(float v, int act) {
    pt_vf x = pt_vset1(v);
    float out[PT_VL];
    switch (act) {
    case PT_ACT_RELU: x = pt_vrelu(x); break;
    case PT_ACT_GELU: x = pt_vgelu(x); break;
    case PT_ACT_GELU_TANH: x = pt_vgelu_tanh(x); break;
    default: break;
    }
    pt_vstore(out, x);
    return out[0];
}

/* Provisional: a simple k-ordered loop; a blocked, packed kernel replaces it. */
void PT_FN(pt_sgemm)(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                     const float *B, int64_t ldb, int trans_b, int64_t M, int64_t N, int64_t K,
                     const float *bias, int act, int nthreads) {
    (void)nthreads;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float s = 0.0f;
            for (int64_t k = 0; k < K; k++)
                s += (trans_a ? A[k * lda + i] : A[i * lda + k]) *
                     (trans_b ? B[j * ldb + k] : B[k * ldb + j]);
            if (bias) s += bias[j];
            C[i * ldc + j] = act_scalar(s, act);
        }
}

pt_packed_b *PT_FN(pt_sgemm_pack_b)(const float *B, int64_t ldb, int trans_b, int64_t K,
                                    int64_t N) {
    pt_packed_b *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->isa = PT_ISA;
    p->K = K;
    p->N = N;
    p->size = (size_t)(K * N);
    p->data = malloc((p->size ? p->size : 1) * sizeof(float));
    if (!p->data) { free(p); return NULL; }
    for (int64_t k = 0; k < K; k++)
        for (int64_t j = 0; j < N; j++)
            p->data[k * N + j] = trans_b ? B[j * ldb + k] : B[k * ldb + j];
    return p;
}

void PT_FN(pt_sgemm_packed)(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                            const pt_packed_b *B, const float *bias, int act, int nthreads) {
    PT_FN(pt_sgemm)(C, ldc, A, lda, 0, B->data, B->N, 0, M, B->N, B->K, bias, act, nthreads);
}

#if PT_ISA == PT_ISA_SCALAR
void pt_packed_b_free(pt_packed_b *p) {
    if (p) { free(p->data); free(p); }
}

void pt_sgemm_ref(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                  const float *B, int64_t ldb, int trans_b, int64_t M, int64_t N, int64_t K,
                  const float *bias, int act) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++)
                s += (double)(trans_a ? A[k * lda + i] : A[i * lda + k]) *
                     (double)(trans_b ? B[j * ldb + k] : B[k * ldb + j]);
            if (bias) s += bias[j];
            float v = (float)s;
            if (act == PT_ACT_RELU) v = v > 0.0f || v != v ? v : 0.0f;
            else if (act == PT_ACT_GELU) v = (float)(0.5 * v * erfc(-(double)v * 0.70710678118654752440));
            else if (act == PT_ACT_GELU_TANH) {
                double d = v;
                v = (float)(0.5 * d * (1.0 + tanh(0.79788456080286535588 * (d + 0.044715 * d * d * d))));
            }
            C[i * ldc + j] = v;
        }
}
#endif
