/* pack.c -- packing for the GEMM: blocks of A, panels of B, and the packed
 * weights (pt_packed_b) that are packed once and reused by every call.
 * Layouts in pack.h. */
#include <string.h>
#include "gemm/gemm.h"
#include "gemm/pack.h"
#include "runtime/mem.h"
#include "runtime/transpose.h"

#if PT_ISA == PT_ISA_AVX512
/* dst[k][i] = src[i][k] for i < rows, k < kn (both <= 16); dst[k][rows..15]
 * = 0.  Loads only inside src's rows and columns; writes 16 floats for each
 * of kn rows of dst.  A 16 x 16 transpose in registers: unpack pairs of rows,
 * then pairs of pairs, then move 128-bit lanes. */
static void transpose16_avx512(float *dst, int64_t ldd, const float *src, int64_t lds, int rows,
                               int kn) {
    __m512 r[16], t[16], u[16];
    __mmask16 km = (__mmask16)((1u << kn) - 1u);
    for (int i = 0; i < 16; i++)
        r[i] = i < rows ? _mm512_maskz_loadu_ps(km, src + i * lds) : _mm512_setzero_ps();
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {   /* u[4i + c], lane L: rows 4i..4i+3 at k = 4L + c */
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int c = 0; c < 4; c++) {   /* dst row 4L + c gathers lane L of u[c], u[4+c], ... */
        __m512 x0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);
        __m512 x1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
        __m512 y0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
        __m512 y1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
        __m512 o[4] = {_mm512_shuffle_f32x4(x0, y0, 0x88), _mm512_shuffle_f32x4(x0, y0, 0xDD),
                       _mm512_shuffle_f32x4(x1, y1, 0x88), _mm512_shuffle_f32x4(x1, y1, 0xDD)};
        for (int L = 0; L < 4; L++)
            if (4 * L + c < kn) _mm512_storeu_ps(dst + (4 * L + c) * ldd, o[L]);
    }
}
#endif

void pack_b_panel(float *dst, const float *B, int64_t ldb, int trans_b, int64_t K, int64_t j0,
                  int64_t nr) {
    if (nr < NR)
        memset(dst, 0, sizeof(float) * (size_t)(K * NR));
    if (trans_b) {
        /* B stored N x K (a Linear weight): column j of op(B) is a row of B.
         * Transpose in strips of 16 k: a strip reads one cache line per
         * column and writes 16 panel rows, all of which stay in L1. */
#if PT_ISA == PT_ISA_AVX512
        for (int64_t k0 = 0; k0 < K; k0 += 16) {
            int kn = (int)(K - k0 < 16 ? K - k0 : 16);
            for (int64_t jb = 0; jb < nr; jb += 16)
                transpose16_avx512(dst + k0 * NR + jb, NR, B + (j0 + jb) * ldb + k0, ldb,
                                   (int)(nr - jb < 16 ? nr - jb : 16), kn);
        }
        return;
#endif
#if PT_ISA == PT_ISA_AVX2
        /* whole 8 x 8 blocks in registers, the edges below */
        int64_t k8 = K / 8 * 8, j8 = nr / 8 * 8;
        for (int64_t k0 = 0; k0 < k8; k0 += 8) {
            for (int64_t jb = 0; jb < j8; jb += 8)
                pt_transpose8x8(dst + k0 * NR + jb, NR, B + (j0 + jb) * ldb + k0, ldb);
            for (int64_t j = j8; j < nr; j++)
                for (int64_t k = 0; k < 8; k++) dst[(k0 + k) * NR + j] = B[(j0 + j) * ldb + k0 + k];
        }
        for (int64_t j = 0; j < nr; j++)
            for (int64_t k = k8; k < K; k++) dst[k * NR + j] = B[(j0 + j) * ldb + k];
        return;
#endif
        for (int64_t k0 = 0; k0 < K; k0 += 16) {
            int64_t kn = K - k0 < 16 ? K - k0 : 16;
            for (int64_t j = 0; j < nr; j++) {
                const float *src = B + (j0 + j) * ldb + k0;
                float *d = dst + k0 * NR + j;
                for (int64_t k = 0; k < kn; k++) d[k * NR] = src[k];
            }
        }
    } else {                /* B stored K x N: rows of op(B) are contiguous */
        for (int64_t k = 0; k < K; k++)
            memcpy(dst + k * NR, B + k * ldb + j0, sizeof(float) * (size_t)nr);
    }
}

void pack_b_all(float *dst, const float *B, int64_t ldb, int trans_b, int64_t K, int64_t N,
                int nthreads) {
    int64_t np = (N + NR - 1) / NR;
    (void)nthreads;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (np > 1 && K * N > 65536)
    for (int64_t p = 0; p < np; p++) {
        int64_t nr = N - p * NR < NR ? N - p * NR : NR;
        pack_b_panel(dst + p * K * NR, B, ldb, trans_b, K, p * NR, nr);
    }
}

void pack_a_block(float *dst, const float *A, int64_t lda, int trans_a, int64_t i0, int64_t mc,
                  int64_t k0, int64_t kc) {
    for (int64_t q = 0; q * MR < mc; q++) {
        float *d = dst + q * kc * MR;
        int64_t m = mc - q * MR < MR ? mc - q * MR : MR;
        if (m < MR)
            memset(d, 0, sizeof(float) * (size_t)(kc * MR));
        if (trans_a) {      /* A stored K x M: a row of A holds op(A)'s column k */
            for (int64_t k = 0; k < kc; k++) {
                const float *src = A + (k0 + k) * lda + i0 + q * MR;
                for (int64_t r = 0; r < m; r++) d[k * MR + r] = src[r];
            }
        } else {            /* A stored M x K: walk each row along k */
            for (int64_t r = 0; r < m; r++) {
                const float *src = A + (i0 + q * MR + r) * lda + k0;
                for (int64_t k = 0; k < kc; k++) d[k * MR + r] = src[k];
            }
        }
    }
}

pt_packed_b *PT_FN(pt_sgemm_pack_b)(const float *B, int64_t ldb, int trans_b, int64_t K,
                                    int64_t N) {
    if (K < 0 || N < 0) return NULL;
    pt_packed_b *p = pt_alloc_zero(sizeof *p);
    if (!p) return NULL;
    int64_t np = (N + NR - 1) / NR;
    p->isa = PT_ISA;
    p->K = K;
    p->N = N;
    p->nr = NR;
    p->size = (size_t)(np * NR) * (size_t)K;
    p->data = pt_weights_alloc(p->size * sizeof(float));
    if (!p->data) { pt_free(p); return NULL; }
    if (K > 0 && N > 0) pack_b_all(p->data, B, ldb, trans_b, K, N, 1);
    return p;
}

#if PT_ISA == PT_ISA_SCALAR
void pt_packed_b_free(pt_packed_b *p) {
    if (p) { pt_weights_free(p->data, p->size * sizeof(float)); pt_free(p); }
}
#endif
