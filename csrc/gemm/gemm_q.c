/* gemm_q.c -- float32 rows times GGUF's Q8_0 / Q4_0 / Q4_1 weights, on
 * every path (the contract and the packed layout are in gemm_q.h).
 *
 * The weights are re-laid once (pt_qgemm_pack) so that 16 output rows sit in
 * the lanes of a vector: per block of 32 k, the 16 rows' scales are one
 * fp16 vector (converted by one instruction), and one 16-byte load gives
 * the quants of all 16 rows at one k -- for Q4, at k and at k + 16, low and
 * high nibble, as ggml's blocks pair them.  No horizontal sums: a vector of
 * 16 results is stored whole.
 *
 * The block's scale is factored out of its sum (ggml's dequantization is
 * w = q*d, (q - 8)*d or q*d + m):
 *
 *   sum_k w_k a_k = d * sum_k q_k a_k + m' * sum_k a_k,   m' = 0, -8d or m,
 *
 * so each weight costs one conversion and one FMA, and the row's sum of a
 * over the block is taken once per call, not once per output.  The same
 * function as the dequantized matrix's, up to fp32 rounding (the tests
 * hold it to the twin's bound).  A row whose blocks hold a non-finite scale
 * gives NaN (pt_qgemm_pack notes it), as the dequantized sum does wherever
 * products of both signs, or a zero quant, meet the infinity.
 *
 * Sums: per output lane and block, QACC partial sums, k of the block to sum
 * (k mod 16) mod QACC; then acc += d * ((s0 + s1) + (s2 + s3)) and, for Q4,
 * acc += m' * (the block's sum of a, k in order).  The same on every call
 * whatever M, the rows sharing a pass or the thread split; only the path
 * (its FMA or the scalar multiply-add) decides the bits.
 */
#include <math.h>
#include <string.h>
#include "gemm/gemm_q.h"
#include "gemm/ukernel_f32.h"   /* apply_act */
#include "runtime/mem.h"

#define QG 16                  /* rows of W per group: the packed layout's lanes */
#define QGV (QG / PT_VL)       /* vectors per group */
#define Q_PF 8                 /* blocks prefetched ahead: decoding streams W from memory */
#define QACC 4                 /* partial sums per output and block */
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
#define QR 1                   /* AVX2: a row's 8 partial sums; two rows would take all 16 ymm */
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

/* An fp16 (little-endian bytes p) that is inf or NaN: its exponent all ones. */
static inline int q_half_nonfinite(const uint8_t *p) { return (p[1] & 0x7c) == 0x7c; }

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
#else
#define QMADD(a, b, c) pt_vfmadd(a, b, c)
#endif

/* Bytes of one packed block of QG rows (scales, then quants). */
static inline int64_t q_packed_block(int qtype) { return (int64_t)QG * pt_q_block_bytes(qtype); }

/* Vector v of a packed block's scales: d, and the weight of the block's sum
 * of a -- m for Q4_1, -8d for Q4_0 (exact), zero for Q8_0. */
PT_ALWAYS_INLINE void q_block_scales(const int T, const uint8_t *blk, int v, pt_vf *d, pt_vf *m) {
    *d = q_scales(blk + 2 * PT_VL * v);
    *m = T == PT_Q4_1 ? q_scales(blk + 2 * QG + 2 * PT_VL * v)
         : T == PT_Q4_0 ? pt_vmul(*d, pt_vset1(-8.0f)) : pt_vzero();
}

_Static_assert(QACC == 4, "q_fold sums four partial sums");

/* The end of a block: its QACC partial sums of q * a in their fixed tree,
 * times d, then (Q4) its sum of a, xs, times m. */
PT_ALWAYS_INLINE pt_vf q_fold(const int T, pt_vf acc, const pt_vf *s, pt_vf d, pt_vf m,
                              float xs) {
    acc = QMADD(d, pt_vadd(pt_vadd(s[0], s[1]), pt_vadd(s[2], s[3])), acc);
    return T == PT_Q8_0 ? acc : QMADD(m, pt_vset1(xs), acc);
}

/* Each row's sum of a over each block of 32 (X: M x nblk), in order;
 * Q4 weights it by m. */
static void q_block_sums(float *X, const float *A, int64_t lda, int64_t M, int64_t nblk) {
    for (int64_t r = 0; r < M; r++)
        for (int64_t b = 0; b < nblk; b++) {
            const float *a = A + r * lda + 32 * b;
            float x = 0.0f;
            for (int k = 0; k < 32; k++) x += a[k];
            X[r * nblk + b] = x;
        }
}

/* One output vector, bias and act, stored to the `live` columns of c (row
 * n of W first); a row with a non-finite scale made NaN (poison). */
PT_ALWAYS_INLINE void q_store(float *c, pt_vf y, int64_t n, int64_t live, const float *bias,
                              const float *poison, int act) {
    if (live >= PT_VL) {
        if (poison) y = pt_vadd(y, pt_vload(poison + n));
        if (bias) y = pt_vadd(y, pt_vload(bias + n));
        pt_vstore(c, apply_act(y, act));
    } else {
        if (poison) y = pt_vadd(y, pt_vload_tail(poison + n, (size_t)live, 0.0f));
        if (bias) y = pt_vadd(y, pt_vload_tail(bias + n, (size_t)live, 0.0f));
        pt_vstore_tail(c, apply_act(y, act), (size_t)live);
    }
}

/* A block's partial sums of q * a for R_ rows (a: the rows at the block's
 * first k, lda apart), s[r][v][c] for k to c = (k mod 16) mod QACC: the
 * quants converted here from the packed bytes qs (a few rows), or read from
 * Qf, converted once for many rows.  One function for both passes, so a
 * row's bits do not depend on which one it takes. */
PT_ALWAYS_INLINE void q_partial_sums(const int T, const int R_, const int CONVERTED,
                                     const float *a, int64_t lda, const uint8_t *qs,
                                     const float *Qf, pt_vf s[QR][QGV][QACC]) {
    for (int r = 0; r < R_; r++)
        for (int v = 0; v < QGV; v++)
            for (int c = 0; c < QACC; c++) s[r][v][c] = pt_vzero();
    if (T == PT_Q8_0) {
        PT_Q_UNROLL
        for (int k = 0; k < 32; k++)
            for (int v = 0; v < QGV; v++) {
                pt_vf q = CONVERTED ? pt_vload(Qf + k * QG + v * PT_VL)
                                    : q_s8f(qs + k * QG + v * PT_VL);
                for (int r = 0; r < R_; r++)
                    s[r][v][k % 16 % QACC] =
                        QMADD(q, pt_vset1(a[r * lda + k]), s[r][v][k % 16 % QACC]);
            }
    } else {
        PT_Q_UNROLL
        for (int j = 0; j < 16; j++)
            for (int v = 0; v < QGV; v++) {
                pt_vf ql, qh;
                if (CONVERTED) {
                    ql = pt_vload(Qf + j * QG + v * PT_VL);
                    qh = pt_vload(Qf + (j + 16) * QG + v * PT_VL);
                } else {
                    q_vi x = q_u8(qs + j * QG + v * PT_VL);
                    ql = q_lo(x);
                    qh = q_hi(x);
                }
                for (int r = 0; r < R_; r++) {
                    pt_vf *p = &s[r][v][j % QACC];
                    *p = QMADD(ql, pt_vset1(a[r * lda + j]), *p);
                    *p = QMADD(qh, pt_vset1(a[r * lda + j + 16]), *p);
                }
            }
    }
}

/* NG consecutive groups of QG rows (from group g0) times R_ rows of A, over
 * all K; C rows ldc apart, columns from n0 = g0 * QG, nvalid of them; X the
 * rows' block sums. */
PT_ALWAYS_INLINE void q_groups(const int T, const int R_, const int NG, float *C, int64_t ldc,
                               const float *A, int64_t lda, const float *X, const uint8_t *P,
                               int64_t nblk, int64_t g0, int64_t nvalid, const float *bias,
                               const float *poison, int act) {
    const int64_t pb = q_packed_block(T), gbytes = nblk * pb;
    pt_vf acc[QR][QNG][QGV];
    for (int r = 0; r < R_; r++)
        for (int g = 0; g < NG; g++)
            for (int v = 0; v < QGV; v++) acc[r][g][v] = pt_vzero();
    for (int64_t b = 0; b < nblk; b++) {
        for (int g = 0; g < NG; g++) {
            const uint8_t *blk = P + (g0 + g) * gbytes + b * pb;
#if PT_ISA != PT_ISA_SCALAR
            /* Q_PF blocks ahead (past the last group: a hint, which never faults) */
            for (int64_t l = 0; l < pb; l += 64)
                _mm_prefetch((const char *)blk + Q_PF * pb + l, _MM_HINT_T0);
#endif
            pt_vf s[QR][QGV][QACC];
            q_partial_sums(T, R_, 0, A + 32 * b, lda, blk + (T == PT_Q4_1 ? 4 * QG : 2 * QG),
                           NULL, s);
            for (int v = 0; v < QGV; v++) {
                pt_vf d, m;
                q_block_scales(T, blk, v, &d, &m);
                for (int r = 0; r < R_; r++)
                    acc[r][g][v] = q_fold(T, acc[r][g][v], s[r][v], d, m,
                                          T == PT_Q8_0 ? 0.0f : X[r * nblk + b]);
            }
        }
    }
    for (int r = 0; r < R_; r++)
        for (int g = 0; g < NG; g++)
            for (int v = 0; v < QGV; v++) {
                int64_t n = (g0 + g) * QG + v * PT_VL, live = nvalid - (n - g0 * QG);
                if (live > 0) q_store(C + r * ldc + n, acc[r][g][v], n, live, bias, poison, act);
            }
}

/* R_ rows through one block of quants Qf (as floats, 32 x QG): each Qf
 * vector loaded once for the R_ rows, the QGV vectors of a row side by side
 * (QGV x QACC chains a row: on AVX2 one vector at a time was latency-bound);
 * the rows' totals (S, QG floats a row) folded as q_groups folds them. */
PT_ALWAYS_INLINE void q_rows_block(const int T, const int R_, const float *a, int64_t lda,
                                   const float *X, int64_t nblk, float *S, const float *Qf,
                                   const pt_vf *d, const pt_vf *m) {
    pt_vf s[QR][QGV][QACC];
    q_partial_sums(T, R_, 1, a, lda, NULL, Qf, s);
    for (int v = 0; v < QGV; v++)
        for (int r = 0; r < R_; r++) {
            float *sr = S + r * QG + v * PT_VL;
            pt_vstore(sr, q_fold(T, pt_vload(sr), s[r][v], d[v], m[v],
                                 T == PT_Q8_0 ? 0.0f : X[r * nblk]));
        }
}

/* Many rows (prefill): group by group, each block of 16 rows' quants
 * converted once into Qf (32 x QG floats) and multiplied into every row,
 * whose totals wait in S (M x QG floats) between blocks.  Each total sees
 * the same operations in the same order as in q_groups: the same bits. */
PT_ALWAYS_INLINE void q_group_rows(const int T, float *C, int64_t ldc, const float *A,
                                   int64_t lda, const float *X, int64_t M, const uint8_t *P,
                                   int64_t nblk, int64_t g, int64_t nvalid, const float *bias,
                                   const float *poison, int act, float *S, float *Qf) {
    const int64_t pb = q_packed_block(T);
    for (int64_t i = 0; i < M * QG; i++) S[i] = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        const uint8_t *blk = P + g * nblk * pb + b * pb;
        const uint8_t *qs = blk + (T == PT_Q4_1 ? 4 * QG : 2 * QG);
        pt_vf d[QGV], m[QGV];
        for (int v = 0; v < QGV; v++) {
            q_block_scales(T, blk, v, &d[v], &m[v]);
            if (T == PT_Q8_0) {
                for (int k = 0; k < 32; k++)
                    pt_vstore(Qf + k * QG + v * PT_VL, q_s8f(qs + k * QG + v * PT_VL));
            } else {
                for (int j = 0; j < 16; j++) {
                    q_vi x = q_u8(qs + j * QG + v * PT_VL);
                    pt_vstore(Qf + j * QG + v * PT_VL, q_lo(x));
                    pt_vstore(Qf + (j + 16) * QG + v * PT_VL, q_hi(x));
                }
            }
        }
        for (int64_t r = 0; r < M; r += QR) {
            int rows = M - r < QR ? (int)(M - r) : QR;
            const float *a = A + r * lda + 32 * b, *x = X + r * nblk + b;
            float *sr = S + r * QG;
            switch (rows) {
            case 1: q_rows_block(T, 1, a, lda, x, nblk, sr, Qf, d, m); break;
#if QR > 1
            case 2: q_rows_block(T, 2, a, lda, x, nblk, sr, Qf, d, m); break;
            case 3: q_rows_block(T, 3, a, lda, x, nblk, sr, Qf, d, m); break;
            case 4: q_rows_block(T, 4, a, lda, x, nblk, sr, Qf, d, m); break;
#endif
            default: break;
            }
        }
    }
    for (int64_t r = 0; r < M; r++)
        for (int v = 0; v < QGV; v++) {
            int64_t n = g * QG + v * PT_VL, live = nvalid - v * PT_VL;
            if (live > 0)
                q_store(C + r * ldc + n, pt_vload(S + r * QG + v * PT_VL), n, live, bias,
                        poison, act);
        }
}

/* Groups [ga, gb) of every row of A: passes of up to QR rows; NG = 2
 * groups at a time where the accumulators fit (one row: for enough chains). */
PT_ALWAYS_INLINE void q_range(const int T, float *C, int64_t ldc, const float *A, int64_t lda,
                              const float *X, int64_t M, const uint8_t *P, int64_t nblk,
                              int64_t N, int64_t ga, int64_t gb, const float *bias,
                              const float *poison, int act, float *S) {
    if (S) {                                  /* many rows: q_group_rows */
        for (int64_t g = ga; g < gb; g++)
            q_group_rows(T, C, ldc, A, lda, X, M, P, nblk, g, N - g * QG < QG ? N - g * QG : QG,
                         bias, poison, act, S, S + M * QG);
        return;
    }
    for (int64_t i = 0; i < M; i += QR) {
        int rows = M - i < QR ? (int)(M - i) : QR;
        float *c = C + i * ldc;
        const float *a = A + i * lda, *x = X + i * nblk;
        for (int64_t g = ga; g < gb;) {
            int ng = QNG > 1 && rows <= 2 && g + 1 < gb ? 2 : 1;
            int64_t nvalid = N - g * QG < ng * QG ? N - g * QG : ng * QG;
#define PT_Q_CASE(R, G)                                                                    \
    if (rows == R && ng == G)                                                              \
        q_groups(T, R, G, c, ldc, a, lda, x, P, nblk, g, nvalid, bias, poison, act);
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
                       const float *X, int64_t M, int64_t ga, int64_t gb, const float *bias,
                       int act, float *S) {
    int64_t nblk = W->K / 32;
    const float *pz = W->poison;
    switch (W->qtype) {
    case PT_Q8_0: q_range(PT_Q8_0, C, ldc, A, lda, X, M, W->data, nblk, W->N, ga, gb, bias, pz, act, S); break;
    case PT_Q4_0: q_range(PT_Q4_0, C, ldc, A, lda, X, M, W->data, nblk, W->N, ga, gb, bias, pz, act, S); break;
    case PT_Q4_1: q_range(PT_Q4_1, C, ldc, A, lda, X, M, W->data, nblk, W->N, ga, gb, bias, pz, act, S); break;
    default: break;
    }
}

/* Below this many bytes of W times rows / 4, one thread: a second one's wake-up
 * costs more than its share (576 x 576 Q4_1, 207 KB, took 17 us on one
 * thread and 10 on two on Zen 3). */
#define PT_Q_SERIAL_BYTES 131072.0
/* From this many rows on, each block's quants are converted once for all of them. */
#define Q_ROWS_BUFFERED 8
#define Q_SUMS_ON_STACK 512   /* block sums of a few rows: no allocation */

/* Threads split the groups of W, a contiguous range each. */
int PT_FN(pt_qgemm_packed)(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                           const pt_packed_q *W, const float *bias, int act, int nthreads) {
    if (!W || !pt_q_block_bytes(W->qtype)) return PT_ERR_ARG;
    if (M <= 0 || W->N <= 0) return PT_OK;
    int64_t groups = (W->N + QG - 1) / QG, nblk = W->K / 32;
    if (nthreads < 1) nthreads = 1;
    if ((double)W->size * (double)(M < 4 ? 1 : M / 4) < PT_Q_SERIAL_BYTES) nthreads = 1;
    if (nthreads > groups) nthreads = (int)groups;
    /* shared: the rows' block sums (Q4); per thread: the rows' totals and a
     * block of quants as floats */
    size_t nx = W->qtype == PT_Q8_0 ? 0 : (size_t)(M * nblk);
    size_t per = M >= Q_ROWS_BUFFERED ? (size_t)(M * QG + 32 * QG) : 0;
    float xs_stack[Q_SUMS_ON_STACK];
    float *buf = NULL, *X = xs_stack;
    if (per || nx > Q_SUMS_ON_STACK) {
        buf = pt_alloc(sizeof(float) * (per * (size_t)nthreads + nx));
        if (!buf) return PT_ERR_NOMEM;   /* before C is touched */
        if (nx > Q_SUMS_ON_STACK) X = buf + per * (size_t)nthreads;
    }
    float *S = per ? buf : NULL;
    if (nx) q_block_sums(X, A, lda, M, nblk);
    if (nthreads == 1) {
        q_dispatch(W, C, ldc, A, lda, X, M, 0, groups, bias, act, S);
        pt_free(buf);
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
        if (ga < gb)
            q_dispatch(W, C, ldc, A, lda, X, M, ga, gb, bias, act, S ? S + per * t : NULL);
    }
    pt_free(buf);
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
    int nonfinite = 0;   /* a scale that is inf or NaN */
    for (int64_t g = 0; g < groups; g++)
        for (int64_t b = 0; b < nblk; b++) {
            uint8_t *dst = p->data + (g * nblk + b) * pb;
            for (int r = 0; r < QG && g * QG + r < N; r++) {
                const uint8_t *src = W + (g * QG + r) * ldw + b * bb;
                for (int s = 0; s < nscale; s++) {
                    memcpy(dst + s * 2 * QG + 2 * r, src + 2 * s, 2);
                    nonfinite |= q_half_nonfinite(src + 2 * s);
                }
                for (int j = 0; j < nq; j++) dst[2 * nscale * QG + j * QG + r] = src[2 * nscale + j];
            }
        }
    if (nonfinite && !(p->poison = pt_alloc_zero(sizeof(float) * (size_t)(groups * QG)))) {
        pt_packed_q_free(p);
        return NULL;
    }
    for (int64_t n = 0; nonfinite && n < N; n++)
        for (int64_t b = 0; b < nblk; b++)
            for (int s = 0; s < nscale; s++)
                if (q_half_nonfinite(W + n * ldw + b * bb + 2 * s)) p->poison[n] = NAN;
    return p;
}

void pt_packed_q_free(pt_packed_q *p) {
    if (p) {
        pt_weights_free((float *)p->data, p->size ? p->size : 1);
        pt_free(p->poison);
        pt_free(p);
    }
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
