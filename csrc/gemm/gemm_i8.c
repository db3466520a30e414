/* gemm_i8.c -- the int8 GEMM on every path (the kernel table's
 * igemm_packed): A quantized per row, the integer sums over the packed
 * panels, four rows by one 32-column panel at a time -- in plain C on the
 * scalar path; on avx2 and avx512 (without VNNI) by the sign trick:
 * |a| (unsigned) times b with a's sign (signed), PMADDUBSW adding pairs
 * (|a| |b| <= 127 * 127: two fit int16 unsaturated), PMADDWD the pairs of
 * pairs into one int32 per column.  The fast
 * kernels are gemm_i8_vnni.c (VPDPBUSD) and gemm_i8_amx.c (TDPBSSD); all
 * give the same int32 sums.  The scalar pass also builds the packing, the
 * quantizer and the twin.  The contract is in gemm_i8.h. */
#include "gemm/i8.h"

#define GMR 4    /* rows per block */

/* acc[r][j] = sum_k a_r[k] * b(k, j) over one panel: a, m <= GMR rows of
 * int8 (row stride Kp); b, the panel's Kp/4 rows of 32 quads. */
static void i8_panel_sums(const int8_t *a, int64_t Kp, int m, const int8_t *b,
                          int32_t acc[GMR][PT_I8_NR]) {
#if PT_ISA == PT_ISA_AVX512
    __m512i s[GMR][2], ones = _mm512_set1_epi16(1), zero = _mm512_setzero_si512();
    for (int r = 0; r < GMR; r++) s[r][0] = s[r][1] = zero;
    for (int64_t kk = 0; kk < Kp / 4; kk++) {
        __m512i b0 = _mm512_loadu_si512((const void *)(b + kk * 4 * PT_I8_NR));
        __m512i b1 = _mm512_loadu_si512((const void *)(b + kk * 4 * PT_I8_NR + 64));
        for (int r = 0; r < m; r++) {
            int32_t quad;
            memcpy(&quad, a + r * Kp + 4 * kk, 4);
            __m512i av = _mm512_set1_epi32(quad), aa = _mm512_abs_epi8(av);
            __mmask64 neg = _mm512_movepi8_mask(av);
            __m512i p0 = _mm512_maddubs_epi16(aa, _mm512_mask_sub_epi8(b0, neg, zero, b0));
            __m512i p1 = _mm512_maddubs_epi16(aa, _mm512_mask_sub_epi8(b1, neg, zero, b1));
            s[r][0] = _mm512_add_epi32(s[r][0], _mm512_madd_epi16(p0, ones));
            s[r][1] = _mm512_add_epi32(s[r][1], _mm512_madd_epi16(p1, ones));
        }
    }
    for (int r = 0; r < GMR; r++) {
        _mm512_storeu_si512((void *)acc[r], s[r][0]);
        _mm512_storeu_si512((void *)(acc[r] + 16), s[r][1]);
    }
#elif PT_ISA == PT_ISA_AVX2
    /* two halves of 16 columns: 4 rows x 2 ymm of sums, 2 of B */
    __m256i ones = _mm256_set1_epi16(1);
    for (int h = 0; h < 2; h++) {
        __m256i s[GMR][2];
        for (int r = 0; r < GMR; r++) s[r][0] = s[r][1] = _mm256_setzero_si256();
        for (int64_t kk = 0; kk < Kp / 4; kk++) {
            const int8_t *bq = b + kk * 4 * PT_I8_NR + 64 * h;
            __m256i b0 = _mm256_loadu_si256((const __m256i *)bq);
            __m256i b1 = _mm256_loadu_si256((const __m256i *)(bq + 32));
            for (int r = 0; r < m; r++) {
                int32_t quad;
                memcpy(&quad, a + r * Kp + 4 * kk, 4);
                __m256i av = _mm256_set1_epi32(quad), aa = _mm256_abs_epi8(av);
                __m256i p0 = _mm256_maddubs_epi16(aa, _mm256_sign_epi8(b0, av));
                __m256i p1 = _mm256_maddubs_epi16(aa, _mm256_sign_epi8(b1, av));
                s[r][0] = _mm256_add_epi32(s[r][0], _mm256_madd_epi16(p0, ones));
                s[r][1] = _mm256_add_epi32(s[r][1], _mm256_madd_epi16(p1, ones));
            }
        }
        for (int r = 0; r < GMR; r++) {
            _mm256_storeu_si256((__m256i *)(acc[r] + 16 * h), s[r][0]);
            _mm256_storeu_si256((__m256i *)(acc[r] + 16 * h + 8), s[r][1]);
        }
    }
#else
    memset(acc, 0, sizeof(int32_t) * GMR * PT_I8_NR);
    for (int64_t kk = 0; kk < Kp / 4; kk++) {
        const int8_t *bq = b + kk * 4 * PT_I8_NR;
        for (int r = 0; r < m; r++) {
            const int8_t *ar = a + r * Kp + 4 * kk;
            int32_t a0 = ar[0], a1 = ar[1], a2 = ar[2], a3 = ar[3];
            for (int j = 0; j < PT_I8_NR; j++)
                acc[r][j] += a0 * bq[4 * j] + a1 * bq[4 * j + 1] + a2 * bq[4 * j + 2] +
                             a3 * bq[4 * j + 3];
        }
    }
#endif
}

int PT_FN(pt_igemm_packed)(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                           const pt_packed_i8 *B, const float *bias, int act, int nthreads) {
    if (!B) return PT_ERR_ARG;
    int64_t N = B->N, K = B->K, Kp = B->Kp, panels = (N + PT_I8_NR - 1) / PT_I8_NR;
    if (M <= 0 || N <= 0) return PT_OK;
    if (nthreads < 1) nthreads = 1;
    float *sa;
    i8_outliers *o;
    uint8_t *q = i8_quantized_a(A, lda, M, M, K, Kp, 0, nthreads, &sa, &o);
    if (!q) return PT_ERR_NOMEM;   /* before C is touched */
    int64_t units = panels * ((M + GMR - 1) / GMR);
#pragma omp parallel for schedule(static) num_threads(nthreads) \
    if (nthreads > 1 && (double)M * (double)N * (double)K > 262144.0)
    for (int64_t u = 0; u < units; u++) {
        int64_t p = u % panels, i0 = (u / panels) * GMR;
        int m = (int)(M - i0 < GMR ? M - i0 : GMR);
        int64_t j0 = p * PT_I8_NR, n = N - j0 < PT_I8_NR ? N - j0 : PT_I8_NR;
        int32_t acc[GMR][PT_I8_NR];
        const int8_t *b = B->data + p * Kp * PT_I8_NR;
        i8_panel_sums((const int8_t *)q + i0 * Kp, Kp, m, b, acc);
        for (int r = 0; r < m; r++)
            i8_store_row(C + (i0 + r) * ldc + j0, acc[r], n, sa[i0 + r], B->scale + j0,
                         o + i0 + r, b, bias ? bias + j0 : NULL, act);
    }
    pt_free(q);
    return PT_OK;
}

#if PT_ISA == PT_ISA_SCALAR
float pt_i8_quantize(const float *x, int64_t n, int8_t *q, int32_t *ok, float *ox,
                     int32_t *nout) {
    i8_outliers o;
    float s = i8_quantize_row(x, n, (uint8_t *)q, n, 0, ok && ox ? &o : NULL);
    if (ok && ox) {
        for (int32_t t = 0; t < o.n; t++) {
            ok[t] = o.k[t];
            ox[t] = o.x[t];
        }
        if (nout) *nout = o.n;
    }
    return s;
}

pt_packed_i8 *pt_igemm_pack_b(const float *B, int64_t ldb, int trans_b, int64_t K, int64_t N) {
    if (K < 0 || N < 0 || K > PT_I8_MAX_K) return NULL;
    int64_t Kp = (K + PT_I8_KQ - 1) / PT_I8_KQ * PT_I8_KQ, panels = (N + PT_I8_NR - 1) / PT_I8_NR;
    if (Kp == 0) Kp = PT_I8_KQ;
    pt_packed_i8 *p = pt_alloc_zero(sizeof *p);
    float *col = pt_alloc(sizeof(float) * (size_t)(K > 0 ? K : 1));
    uint8_t *qrow = pt_alloc((size_t)Kp);
    if (!p || !col || !qrow) goto fail;
    p->K = K;
    p->N = N;
    p->Kp = Kp;
    p->size = (size_t)(panels * PT_I8_NR) * (size_t)Kp;
    p->data = (int8_t *)pt_weights_alloc(p->size);
    p->scale = pt_alloc_zero(sizeof(float) * (size_t)(panels * PT_I8_NR + 1));
    p->colsum = pt_alloc_zero(sizeof(int32_t) * (size_t)(panels * PT_I8_NR + 1));
    if (!p->data || !p->scale || !p->colsum) goto fail;
    memset(p->data, 0, p->size);
    for (int64_t j = 0; j < N; j++) {
        const float *w = B + j * ldb;
        if (!trans_b) {
            for (int64_t k = 0; k < K; k++) col[k] = B[k * ldb + j];
            w = col;
        }
        p->scale[j] = i8_quantize_row(w, K, qrow, Kp, 0, NULL);
        int8_t *dst = p->data + (j / PT_I8_NR) * Kp * PT_I8_NR + (j % PT_I8_NR) * 4;
        int32_t sum = 0;
        for (int64_t k = 0; k < Kp; k++) {
            int8_t v = (int8_t)qrow[k];
            dst[(k / 4) * 4 * PT_I8_NR + k % 4] = v;
            sum += v;
        }
        p->colsum[j] = sum;
    }
    pt_free(col);
    pt_free(qrow);
    return p;
fail:
    pt_free(col);
    pt_free(qrow);
    pt_packed_i8_free(p);
    return NULL;
}

void pt_packed_i8_free(pt_packed_i8 *p) {
    if (!p) return;
    if (p->data) pt_weights_free((float *)p->data, p->size);
    pt_free(p->scale);
    pt_free(p->colsum);
    pt_free(p);
}

void pt_igemm_ref(float *C, int64_t ldc, const float *A, int64_t lda, const float *B,
                  int64_t ldb, int trans_b, int64_t M, int64_t N, int64_t K,
                  const float *bias, int act) {
    int8_t *qa = pt_alloc((size_t)(K > 0 ? K : 1));
    float *col = pt_alloc(sizeof(float) * (size_t)(K > 0 ? K : 1));
    float *sw = pt_alloc(sizeof(float) * (size_t)(N > 0 ? N : 1));
    int8_t *wq = pt_alloc((size_t)(N * K > 0 ? N * K : 1));
    if (!qa || !col || !sw || !wq) goto done;   /* the twin: tests only */
    for (int64_t j = 0; j < N; j++) {
        for (int64_t k = 0; k < K; k++) col[k] = trans_b ? B[j * ldb + k] : B[k * ldb + j];
        sw[j] = pt_i8_quantize(col, K, wq + j * K, NULL, NULL, NULL);
    }
    for (int64_t i = 0; i < M; i++) {
        int32_t ok[PT_I8_OUTLIERS], no = 0;
        float ox[PT_I8_OUTLIERS];
        float sa = pt_i8_quantize(A + i * lda, K, qa, ok, ox, &no);
        for (int64_t j = 0; j < N; j++) {
            int64_t s = 0;
            for (int64_t k = 0; k < K; k++) s += (int64_t)qa[k] * (int64_t)wq[j * K + k];
            float x = (float)(int32_t)s * (sa * sw[j]);
            if (no) {
                float o = 0.0f;
                for (int32_t t = 0; t < no; t++) o = o + ox[t] * (float)wq[j * K + ok[t]];
                x = x + o * sw[j];
            }
            C[i * ldc + j] = bias ? x + bias[j] : x;
        }
        pt_act_ref(C + i * ldc, N, act);
    }
done:
    pt_free(qa);
    pt_free(col);
    pt_free(sw);
    pt_free(wq);
}
#endif
