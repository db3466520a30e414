/* gemm_bf16.c -- the bfloat16 GEMM on every path: weights packed once as
 * bf16 pairs, activations rounded to bf16 as A is packed, each pair turned
 * back into two floats by a shift and a mask and multiplied with fp32 FMAs
 * (the loops and micro-kernels are in gemm_bf16_loops.h; the VDPBF16PS
 * variant of the same loops is gemm_bf16_dot.c).  The contract is in gemm.h.
 */
#include "gemm/gemm_bf16_loops.h"
#include "rowwise/activation.h"

/* K is padded to whole pairs; on avx512 to whole AMX tiles (32 k: 16 pair
 * rows), so that gemm_bf16_amx.c reads the same panels. */
#if PT_ISA == PT_ISA_AVX512
#define BKP 32
#else
#define BKP 2
#endif

/* One panel of nr columns of op(B) from column j0, all Kp/2 pair rows;
 * columns past nr and k past K are zero. */
static void bpack_b_panel(uint32_t *dst, const float *B, int64_t ldb, int trans_b, int64_t K,
                          int64_t pairs, int64_t j0, int64_t nr) {
    if (nr < BNR) memset(dst, 0, sizeof(uint32_t) * (size_t)(pairs * BNR));
    for (int64_t j = 0; j < nr; j++)
        for (int64_t kk = 0; kk < pairs; kk++) {
            int64_t k = 2 * kk;
            float lo = k >= K ? 0.0f : trans_b ? B[(j0 + j) * ldb + k] : B[k * ldb + j0 + j];
            float hi = k + 1 >= K ? 0.0f : trans_b ? B[(j0 + j) * ldb + k + 1]
                                                   : B[(k + 1) * ldb + j0 + j];
            dst[kk * BNR + j] = (uint32_t)bf16_bits(lo) | (uint32_t)bf16_bits(hi) << 16;
        }
}

pt_packed_bf16 *PT_FN(pt_bgemm_pack_b)(const float *B, int64_t ldb, int trans_b, int64_t K,
                                       int64_t N) {
    if (K < 0 || N < 0) return NULL;
    pt_packed_bf16 *p = pt_alloc_zero(sizeof *p);
    if (!p) return NULL;
    int64_t np = (N + BNR - 1) / BNR;
    p->isa = PT_ISA;
    p->K = K;
    p->N = N;
    p->Kp = (K + BKP - 1) / BKP * BKP;
    p->nr = BNR;
    p->size = sizeof(uint32_t) * (size_t)(np * BNR) * (size_t)(p->Kp / 2);
    p->data = (uint32_t *)pt_weights_alloc(p->size);
    if (!p->data) { pt_free(p); return NULL; }
    for (int64_t q = 0; q < np && K > 0; q++) {
        int64_t nr = N - q * BNR < BNR ? N - q * BNR : BNR;
        bpack_b_panel(p->data + q * (p->Kp / 2) * BNR, B, ldb, trans_b, K, p->Kp / 2, q * BNR, nr);
    }
    return p;
}

#if PT_ISA == PT_ISA_SCALAR
void pt_packed_bf16_free(pt_packed_bf16 *p) {
    if (p) { pt_weights_free((float *)p->data, p->size); pt_free(p); }
}

uint16_t pt_bf16_from_float(float x) { return bf16_bits(x); }
float pt_bf16_to_float(uint16_t h) { return bf16_value(h); }

void pt_bgemm_ref(float *C, int64_t ldc, const float *A, int64_t lda, const float *B,
                  int64_t ldb, int trans_b, int64_t M, int64_t N, int64_t K,
                  const float *bias, int act) {
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++)
                s += (double)bf16_round(A[i * lda + k]) *
                     (double)bf16_round(trans_b ? B[j * ldb + k] : B[k * ldb + j]);
            if (bias) s += bias[j];
            C[i * ldc + j] = (float)s;
        }
        pt_act_ref(C + i * ldc, N, act);
    }
}
#endif
