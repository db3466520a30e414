/* gemm_q.c -- float32 rows times GGUF's Q8_0 / Q4_0 / Q4_1 weights, on
 * every path (the contract and the packed layout are in gemm_q.h).
 *
 * The weights are re-laid once (pt_qgemm_pack) so that 16 output rows sit in
 * the lanes of a vector: per block of 32 k, the 16 rows' scales are one
 * fp16 vector (converted by one instruction), and one 16-byte load gives
 * the quants of all 16 rows at one k -- for Q4, at k and at k + 16, low and
 * high nibble, as ggml's blocks pair them.  Each weight is dequantized in
 * its lane exactly as ggml does and multiplied by a[k], broadcast.  No
 * horizontal sums: a vector of 16 results is stored whole.
 *
 * Sums: each output lane keeps QACC accumulators, k of a block going to
 * accumulator (k mod 16) mod QACC, blocks in order; at the end
 * ((acc0 + acc1) + (acc2 + acc3)).  The same on every call whatever M, the
 * rows sharing a pass or the thread split; only the path (its FMA or the
 * scalar multiply-add) decides the bits.
 */
#include <math.h>
#include <string.h>
#include "gemm/gemm_q.h"
#include "gemm/ukernel_f32.h"   /* apply_act */
#include "runtime/mem.h"

#define QG 16                  /* rows of W per group: the packed layout's lanes */
#define QGV (QG / PT_VL)       /* vectors per group */
#define Q_PF 8                 /* blocks prefetched ahead: decoding streams W from memory */
#define QACC 4                 /* accumulators per output */
/* unrolled, so that each accumulator index is a constant: registers */
#if defined(__GNUC__) && !defined(__clang__)
#define PT_Q_UNROLL _Pragma("GCC unroll 32")
#else
#define PT_Q_UNROLL
#endif

#if PT_ISA == PT_ISA_AVX512
#define QR 4                   /* rows of A per pass at most */
#define QNG 2                  /* groups per pass at most (one or two rows) */
#else
#define QR 1                   /* AVX2: 8 accumulators of 16 ymm */
#define QNG 1
#endif

/* fp16 bits -> float, exactly (subnormals, inf, NaN made quiet). */
static inline float q_half_bits(uint16_t h) {
    uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    float f;
    if (e == 0) {
        f = (float)m * 0x1p-24f;                 /* zero or subnormal: exact */
        memcpy(&u, &f, sizeof u);
        u |= s;
    } else if (e == 31) {
        u = s | 0x7f800000u | m << 13 | (m ? 0x400000u : 0u);
    } else {
        u = s | (e + 112) << 23 | m << 13;
    }
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float q_half(const uint8_t *p) { return q_half_bits((uint16_t)(p[0] | p[1] << 8)); }

/* PT_VL lanes from bytes p[0 .. PT_VL): unsigned or signed, as floats; the
 * low or high nibbles of unsigned bytes; PT_VL fp16 scales. */
#if PT_ISA == PT_ISA_AVX512
typedef __m512i q_vi;
static inline q_vi q_u8(const uint8_t *p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)); }
static inline pt_vf q_s8f(const uint8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
static inline pt_vf q_lo(q_vi x) { return _mm512_cvtepi32_ps(_mm512_and_si512(x, _mm512_set1_epi32(15))); }
static inline pt_vf q_hi(q_vi x) { return _mm512_cvtepi32_ps(_mm512_srli_epi32(x, 4)); }
static inline pt_vf q_scales(const uint8_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
#elif PT_ISA == PT_ISA_AVX2
typedef __m256i q_vi;
static inline q_vi q_u8(const uint8_t *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }
static inline pt_vf q_s8f(const uint8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
static inline pt_vf q_lo(q_vi x) { return _mm256_cvtepi32_ps(_mm256_and_si256(x, _mm256_set1_epi32(15))); }
static inline pt_vf q_hi(q_vi x) { return _mm256_cvtepi32_ps(_mm256_srli_epi32(x, 4)); }
static inline pt_vf q_scales(const uint8_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
#else
typedef int q_vi;
static inline q_vi q_u8(const uint8_t *p) { return p[0]; }
static inline pt_vf q_s8f(const uint8_t *p) { return (float)(int8_t)p[0]; }
static inline pt_vf q_lo(q_vi x) { return (float)(x & 15); }
static inline pt_vf q_hi(q_vi x) { return (float)(x >> 4); }
static inline pt_vf q_scales(const uint8_t *p) { return q_half(p); }
#endif

#if PT_ISA == PT_ISA_SCALAR
#define QMADD(a, b, c) ((c) + (a) * (b))   /* as the fp32 scalar kernels */
#define QDEQ(q, d, m) fmaf(q, d, m)        /* q * d is exact: one rounding, as ggml */
#else
#define QMADD(a, b, c) pt_vfmadd(a, b, c)
#define QDEQ(q, d, m) pt_vfmadd(q, d, m)
#endif

/* Bytes of one packed block of QG rows (scales, then quants). */
static inline int64_t q_packed_block(int qtype) { return (int64_t)QG * pt_q_block_bytes(qtype); }

/* Vector v of a packed block's scales: d, and m for Q4_1 (zero otherwise). */
PT_ALWAYS_INLINE void q_block_scales(const int T, const uint8_t *blk, int v, pt_vf *d, pt_vf *m) {
    *d = q_scales(blk + 2 * PT_VL * v);
    *m = T == PT_Q4_1 ? q_scales(blk + 2 * QG + 2 * PT_VL * v) : pt_vzero();
}

/* A Q4 byte's two weights, k = j (low nibble) and k = j + 16 (high), as ggml
 * dequantizes them: (q - 8) * d exactly, or q * d + m rounded once. */
PT_ALWAYS_INLINE void q4_weights(const int T, q_vi x, pt_vf d, pt_vf m, pt_vf *wl, pt_vf *wh) {
    if (T == PT_Q4_0) {
        *wl = pt_vmul(pt_vsub(q_lo(x), pt_vset1(8.0f)), d);
        *wh = pt_vmul(pt_vsub(q_hi(x), pt_vset1(8.0f)), d);
    } else {
        *wl = QDEQ(q_lo(x), d, m);
        *wh = QDEQ(q_hi(x), d, m);
    }
}

_Static_assert(QACC == 4, "q_store sums four accumulators");

/* One output vector: the QACC accumulators summed in their fixed tree, then
 * bias and act, stored to the `live` columns of c (row n of W first). */
PT_ALWAYS_INLINE void q_store(float *c, pt_vf a0, pt_vf a1, pt_vf a2, pt_vf a3, int64_t n,
                              int64_t live, const float *bias, int act) {
    pt_vf y = pt_vadd(pt_vadd(a0, a1), pt_vadd(a2, a3));
    if (live >= PT_VL) {
        if (bias) y = pt_vadd(y, pt_vload(bias + n));
        pt_vstore(c, apply_act(y, act));
    } else {
        if (bias) y = pt_vadd(y, pt_vload_tail(bias + n, (size_t)live, 0.0f));
        pt_vstore_tail(c, apply_act(y, act), (size_t)live);
    }
}

/* NG consecutive groups of QG rows (from group g0) times R_ rows of A, over
 * all K; C rows ldc apart, columns from n0 = g0 * QG, nvalid of them. */
PT_ALWAYS_INLINE void q_groups(const int T, const int R_, const int NG, float *C, int64_t ldc,
                               const float *A, int64_t lda, const uint8_t *P, int64_t nblk,
                               int64_t g0, int64_t nvalid, const float *bias, int act) {
    const int64_t pb = q_packed_block(T), gbytes = nblk * pb;
    pt_vf acc[QR][QNG][QGV][QACC];
    for (int r = 0; r < R_; r++)
        for (int g = 0; g < NG; g++)
            for (int v = 0; v < QGV; v++)
                for (int c = 0; c < QACC; c++) acc[r][g][v][c] = pt_vzero();
    for (int64_t b = 0; b < nblk; b++) {
        for (int g = 0; g < NG; g++) {
            const uint8_t *blk = P + (g0 + g) * gbytes + b * pb;
#if PT_ISA != PT_ISA_SCALAR
            /* Q_PF blocks ahead (past the last group: a hint, which never faults) */
            for (int64_t l = 0; l < pb; l += 64)
                _mm_prefetch((const char *)blk + Q_PF * pb + l, _MM_HINT_T0);
#endif
            pt_vf d[QGV], m[QGV];
            for (int v = 0; v < QGV; v++) q_block_scales(T, blk, v, &d[v], &m[v]);
            const uint8_t *qs = blk + (T == PT_Q4_1 ? 4 * QG : 2 * QG);
            if (T == PT_Q8_0) {
                PT_Q_UNROLL
                for (int k = 0; k < 32; k++)
                    for (int v = 0; v < QGV; v++) {
                        pt_vf w = pt_vmul(q_s8f(qs + k * QG + v * PT_VL), d[v]);
                        for (int r = 0; r < R_; r++)
                            acc[r][g][v][k % 16 % QACC] = QMADD(
                                w, pt_vset1(A[r * lda + 32 * b + k]), acc[r][g][v][k % 16 % QACC]);
                    }
            } else {
                PT_Q_UNROLL
                for (int j = 0; j < 16; j++)
                    for (int v = 0; v < QGV; v++) {
                        pt_vf wl, wh;
                        q4_weights(T, q_u8(qs + j * QG + v * PT_VL), d[v], m[v], &wl, &wh);
                        for (int r = 0; r < R_; r++) {
                            const float *a = A + r * lda + 32 * b;
                            pt_vf *s = &acc[r][g][v][j % QACC];
                            *s = QMADD(wl, pt_vset1(a[j]), *s);
                            *s = QMADD(wh, pt_vset1(a[j + 16]), *s);
                        }
                    }
            }
        }
    }
    for (int r = 0; r < R_; r++)
        for (int g = 0; g < NG; g++)
            for (int v = 0; v < QGV; v++) {
                int64_t n = (g0 + g) * QG + v * PT_VL, live = nvalid - (n - g0 * QG);
                if (live > 0)
                    q_store(C + r * ldc + n, acc[r][g][v][0], acc[r][g][v][1], acc[r][g][v][2],
                            acc[r][g][v][3], n, live, bias, act);
            }
}

/* R_ rows' accumulators (S, QACC x QG floats a row) through one dequantized
 * block Wf: each Wf vector loaded once for the R_ rows. */
PT_ALWAYS_INLINE void q_rows_block(const int T, const int R_, const float *a, int64_t lda,
                                   float *S, const float *Wf) {
    for (int v = 0; v < QGV; v++) {
        pt_vf acc[QR][QACC];
        for (int r = 0; r < R_; r++)
            for (int c = 0; c < QACC; c++) acc[r][c] = pt_vload(S + r * QACC * QG + c * QG + v * PT_VL);
        if (T == PT_Q8_0) {
            PT_Q_UNROLL
            for (int k = 0; k < 32; k++) {
                pt_vf w = pt_vload(Wf + k * QG + v * PT_VL);
                for (int r = 0; r < R_; r++)
                    acc[r][k % 16 % QACC] = QMADD(w, pt_vset1(a[r * lda + k]), acc[r][k % 16 % QACC]);
            }
        } else {
            PT_Q_UNROLL
            for (int j = 0; j < 16; j++) {
                pt_vf wl = pt_vload(Wf + j * QG + v * PT_VL), wh = pt_vload(Wf + (j + 16) * QG + v * PT_VL);
                for (int r = 0; r < R_; r++) {
                    acc[r][j % QACC] = QMADD(wl, pt_vset1(a[r * lda + j]), acc[r][j % QACC]);
                    acc[r][j % QACC] = QMADD(wh, pt_vset1(a[r * lda + j + 16]), acc[r][j % QACC]);
                }
            }
        }
        for (int r = 0; r < R_; r++)
            for (int c = 0; c < QACC; c++) pt_vstore(S + r * QACC * QG + c * QG + v * PT_VL, acc[r][c]);
    }
}

/* Many rows (prefill): group by group, each block of 16 rows dequantized
 * once into Wf (32 x QG floats, as q_groups computes them) and multiplied
 * into every row, whose QACC accumulators wait in S (M x QACC x QG floats)
 * between blocks.  Each accumulator sees the same multiply-adds in the same
 * order as in q_groups: the same bits. */
PT_ALWAYS_INLINE void q_group_rows(const int T, float *C, int64_t ldc, const float *A,
                                   int64_t lda, int64_t M, const uint8_t *P, int64_t nblk,
                                   int64_t g, int64_t nvalid, const float *bias, int act,
                                   float *S, float *Wf) {
    const int64_t pb = q_packed_block(T);
    for (int64_t i = 0; i < M * QACC * QG; i++) S[i] = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        const uint8_t *blk = P + g * nblk * pb + b * pb;
        const uint8_t *qs = blk + (T == PT_Q4_1 ? 4 * QG : 2 * QG);
        for (int v = 0; v < QGV; v++) {
            pt_vf d, m;
            q_block_scales(T, blk, v, &d, &m);
            if (T == PT_Q8_0) {
                for (int k = 0; k < 32; k++)
                    pt_vstore(Wf + k * QG + v * PT_VL, pt_vmul(q_s8f(qs + k * QG + v * PT_VL), d));
            } else {
                for (int j = 0; j < 16; j++) {
                    pt_vf wl, wh;
                    q4_weights(T, q_u8(qs + j * QG + v * PT_VL), d, m, &wl, &wh);
                    pt_vstore(Wf + j * QG + v * PT_VL, wl);
                    pt_vstore(Wf + (j + 16) * QG + v * PT_VL, wh);
                }
            }
        }
        for (int64_t r = 0; r < M; r += QR) {
            int rows = M - r < QR ? (int)(M - r) : QR;
            switch (rows) {
            case 1: q_rows_block(T, 1, A + r * lda + 32 * b, lda, S + r * QACC * QG, Wf); break;
#if QR > 1
            case 2: q_rows_block(T, 2, A + r * lda + 32 * b, lda, S + r * QACC * QG, Wf); break;
            case 3: q_rows_block(T, 3, A + r * lda + 32 * b, lda, S + r * QACC * QG, Wf); break;
            case 4: q_rows_block(T, 4, A + r * lda + 32 * b, lda, S + r * QACC * QG, Wf); break;
#endif
            default: break;
            }
        }
    }
    for (int64_t r = 0; r < M; r++)
        for (int v = 0; v < QGV; v++) {
            int64_t n = g * QG + v * PT_VL, live = nvalid - v * PT_VL;
            const float *sr = S + r * QACC * QG + v * PT_VL;
            if (live > 0)
                q_store(C + r * ldc + n, pt_vload(sr), pt_vload(sr + QG), pt_vload(sr + 2 * QG),
                        pt_vload(sr + 3 * QG), n, live, bias, act);
        }
}

/* Groups [ga, gb) of every row of A: passes of up to QR rows; NG = 2
 * groups at a time where the accumulators fit (one row: for enough chains). */
PT_ALWAYS_INLINE void q_range(const int T, float *C, int64_t ldc, const float *A, int64_t lda,
                              int64_t M, const uint8_t *P, int64_t nblk, int64_t N, int64_t ga,
                              int64_t gb, const float *bias, int act, float *S) {
    if (S) {                                  /* many rows: q_group_rows */
        for (int64_t g = ga; g < gb; g++)
            q_group_rows(T, C, ldc, A, lda, M, P, nblk, g, N - g * QG < QG ? N - g * QG : QG,
                         bias, act, S, S + M * QACC * QG);
        return;
    }
    for (int64_t i = 0; i < M; i += QR) {
        int rows = M - i < QR ? (int)(M - i) : QR;
        float *c = C + i * ldc;
        const float *a = A + i * lda;
        for (int64_t g = ga; g < gb;) {
            int ng = QNG > 1 && rows <= 2 && g + 1 < gb ? 2 : 1;
            int64_t nvalid = N - g * QG < ng * QG ? N - g * QG : ng * QG;
#define PT_Q_CASE(R, G) \
    if (rows == R && ng == G) q_groups(T, R, G, c, ldc, a, lda, P, nblk, g, nvalid, bias, act);
            PT_Q_CASE(1, 1)
#if QR > 1
            PT_Q_CASE(1, 2) PT_Q_CASE(2, 1) PT_Q_CASE(2, 2) PT_Q_CASE(3, 1) PT_Q_CASE(4, 1)
#endif
#undef PT_Q_CASE
            g += ng;
        }
    }
}

static void q_dispatch(const pt_packed_q *W, float *C, int64_t ldc, const float *A, int64_t lda,
                       int64_t M, int64_t ga, int64_t gb, const float *bias, int act, float *S) {
    int64_t nblk = W->K / 32;
    switch (W->qtype) {
    case PT_Q8_0: q_range(PT_Q8_0, C, ldc, A, lda, M, W->data, nblk, W->N, ga, gb, bias, act, S); break;
    case PT_Q4_0: q_range(PT_Q4_0, C, ldc, A, lda, M, W->data, nblk, W->N, ga, gb, bias, act, S); break;
    case PT_Q4_1: q_range(PT_Q4_1, C, ldc, A, lda, M, W->data, nblk, W->N, ga, gb, bias, act, S); break;
    default: break;
    }
}

/* From this many rows on, each block is dequantized once for all of them. */
#define Q_ROWS_BUFFERED 8

/* Threads split the groups of W, a contiguous range each. */
int PT_FN(pt_qgemm_packed)(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                           const pt_packed_q *W, const float *bias, int act, int nthreads) {
    if (!W || !pt_q_block_bytes(W->qtype)) return PT_ERR_ARG;
    if (M <= 0 || W->N <= 0) return PT_OK;
    int64_t groups = (W->N + QG - 1) / QG;
    if (nthreads < 1) nthreads = 1;
    if ((double)W->size * (double)(M < 4 ? 1 : M / 4) < 262144.0) nthreads = 1;
    if (nthreads > groups) nthreads = (int)groups;
    /* per thread: the rows' accumulators and a dequantized block */
    size_t per = M >= Q_ROWS_BUFFERED ? (size_t)(M * QACC * QG + 32 * QG) : 0;
    float *S = per ? pt_alloc(sizeof(float) * per * (size_t)nthreads) : NULL;
    if (per && !S) return PT_ERR_NOMEM;   /* before C is touched */
    if (nthreads == 1) {
        q_dispatch(W, C, ldc, A, lda, M, 0, groups, bias, act, S);
        pt_free(S);
        return PT_OK;
    }
#pragma omp parallel num_threads(nthreads)
    {
        int t = 0, nt = 1;
#if defined(_OPENMP)
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        int64_t ga = groups * t / nt, gb = groups * (t + 1) / nt;
        if (ga < gb) q_dispatch(W, C, ldc, A, lda, M, ga, gb, bias, act, S ? S + per * t : NULL);
    }
    pt_free(S);
    return PT_OK;
}

#if PT_ISA == PT_ISA_SCALAR
int pt_q_block_bytes(int qtype) {
    return qtype == PT_Q8_0 ? 34 : qtype == PT_Q4_0 ? 18 : qtype == PT_Q4_1 ? 20 : 0;
}

/* Group by group, block by block: the QG rows' fp16 scales (d, then m for
 * Q4_1) and their quants transposed to k-major (Q8_0: k, then row; Q4:
 * byte j, then row).  Rows past N: zero. */
pt_packed_q *pt_qgemm_pack(const uint8_t *W, int64_t ldw, int qtype, int64_t N, int64_t K) {
    int bb = pt_q_block_bytes(qtype);
    if (!bb || K < 0 || K % 32 || N < 0 || ldw < K / 32 * bb) return NULL;
    pt_packed_q *p = pt_alloc_zero(sizeof *p);
    if (!p) return NULL;
    int64_t groups = (N + QG - 1) / QG, nblk = K / 32, pb = (int64_t)QG * bb;
    p->qtype = qtype;
    p->K = K;
    p->N = N;
    p->size = (size_t)(groups * nblk * pb);
    p->data = (uint8_t *)pt_weights_alloc(p->size ? p->size : 1);
    if (!p->data) { pt_free(p); return NULL; }
    memset(p->data, 0, p->size);
    int nscale = qtype == PT_Q4_1 ? 2 : 1, nq = bb - 2 * nscale;   /* quant bytes per row */
    for (int64_t g = 0; g < groups; g++)
        for (int64_t b = 0; b < nblk; b++) {
            uint8_t *dst = p->data + (g * nblk + b) * pb;
            for (int r = 0; r < QG && g * QG + r < N; r++) {
                const uint8_t *src = W + (g * QG + r) * ldw + b * bb;
                for (int s = 0; s < nscale; s++) memcpy(dst + s * 2 * QG + 2 * r, src + 2 * s, 2);
                for (int j = 0; j < nq; j++) dst[2 * nscale * QG + j * QG + r] = src[2 * nscale + j];
            }
        }
    return p;
}

void pt_packed_q_free(pt_packed_q *p) {
    if (p) { pt_weights_free((float *)p->data, p->size ? p->size : 1); pt_free(p); }
}

int pt_qgemm_ref(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                 const uint8_t *W, int64_t ldw, int qtype, int64_t N, int64_t K,
                 const float *bias, int act) {
    int bb = pt_q_block_bytes(qtype);
    if (!bb || K < 0 || K % 32 || N < 0 || ldw < K / 32 * bb) return PT_ERR_ARG;
    for (int64_t i = 0; i < M; i++) {
        for (int64_t n = 0; n < N; n++) {
            double s = 0.0;
            for (int64_t b = 0; b < K / 32; b++) {
                const uint8_t *blk = W + n * ldw + b * bb;
                float d = q_half(blk), m = qtype == PT_Q4_1 ? q_half(blk + 2) : 0.0f;
                for (int j = 0; j < 32; j++) {
                    float w;
                    if (qtype == PT_Q8_0) {
                        w = (float)(int8_t)blk[2 + j] * d;
                    } else {
                        uint8_t x = blk[(qtype == PT_Q4_1 ? 4 : 2) + j % 16];
                        int q = j < 16 ? x & 15 : x >> 4;
                        w = qtype == PT_Q4_0 ? (float)(q - 8) * d : fmaf((float)q, d, m);
                    }
                    s += (double)w * (double)A[i * lda + 32 * b + j];
                }
            }
            if (bias) s += bias[n];
            C[i * ldc + n] = (float)s;
        }
        pt_act_ref(C + i * ldc, N, act);
    }
    return PT_OK;
}
#endif
