/* gemm_bf16_loops.h -- the bf16 GEMM's loops and micro-kernels, included by
 * gemm_bf16.c (every path: each bf16 pair converted to two floats, fp32 FMA)
 * and by gemm_bf16_dot.c (PT_BF16_DOT: VDPBF16PS on the avx512 layout).
 * Layouts and the determinism contract are in gemm.h.
 *
 * Loops as in gemm.c, over K blocks of whole pairs fixed by K alone:
 *   jc over N in NC columns, kb over K blocks, ic over M in mc rows (pack
 *   and round an mc x kc block of A), jr over nr-column panels, ir over MR
 *   rows (the micro-kernel: MR x nr of C in registers).
 * Packed A (per call and thread), micro-panel q of MR rows:
 *   conversion: kc' x MR floats (kc' = the block's k rounded up to even),
 *               element (r, k) at k*MR + r, already rounded to bf16;
 *   PT_BF16_DOT: MR x kc'/2 pairs, (r, kk) at r*(kc'/2) + kk: each row's
 *               pairs contiguous, so they are rounded 32 floats at a time
 *               and stored whole; the micro-kernel broadcasts from MR rows.
 */
#ifndef PT_GEMM_BF16_LOOPS_H
#define PT_GEMM_BF16_LOOPS_H

#include <stdlib.h>
#include <string.h>
#include "gemm/bf16.h"
#include "gemm/gemm.h"
#include "gemm/ukernel_f32.h"   /* apply_act: the epilogue of the fp32 GEMM */
#include "runtime/mem.h"
#include "runtime/status.h"

#ifndef PT_BF16_DOT
#define PT_BF16_DOT 0
#endif

/* Tiles.  AVX-512: 12 x 32 (24 zmm accumulators; per pair 2 B vectors and
 * 12 broadcasts, as the fp32 tile).  AVX2: 4 x 16 (8 accumulators and the 4
 * converted B vectors in 16 ymm).  Scalar: 4 x 4. */
#if PT_ISA == PT_ISA_AVX512
#define BMR 12
#define BNV 2
#elif PT_ISA == PT_ISA_AVX2
#define BMR 4
#define BNV 2
#else
#define BMR 4
#define BNV 4
#endif
#define BNR (BNV * PT_VL)
#define BKC_MAX 512                     /* k per block: 32 KiB of B micro-panel */
#define BMC_MAX 240                     /* rows per A block (a multiple of BMR) */
#define BNC_MAX (128 * BNR)

#if PT_BF16_DOT
#define BF_FN(name) name##_avx512bf16
typedef uint32_t a_elem;                /* a pair of bf16 */
#else
#define BF_FN(name) PT_FN(name)
typedef float a_elem;                   /* a bf16 value as a float */
#endif

/* K blocks: pairs of k split into as few near-equal blocks as BKC_MAX
 * allows.  A function of K alone. */
static inline int64_t bk_blocks(int64_t pairs) {
    return pairs <= 0 ? 1 : (pairs + BKC_MAX / 2 - 1) / (BKC_MAX / 2);
}
static inline int64_t bk_block_start(int64_t pairs, int64_t nb, int64_t b) {
    int64_t base = pairs / nb, extra = pairs % nb;
    return b * base + (b < extra ? b : extra);
}


/* Rows [i0, i0+mc) of A, pairs [p0, p0+np) (k from 2*p0), rounded to bf16,
 * as micro-panels of BMR rows; rows past mc and k past K are zero. */
static void bpack_a_block(a_elem *dst, const float *A, int64_t lda, int64_t K, int64_t i0,
                          int64_t mc, int64_t p0, int64_t np) {
    int64_t k0 = 2 * p0;
    for (int64_t q = 0; q * BMR < mc; q++) {
        a_elem *d = dst + q * (PT_BF16_DOT ? np : 2 * np) * BMR;
        int64_t m = mc - q * BMR < BMR ? mc - q * BMR : BMR;
        if (m < BMR) memset(d, 0, sizeof(a_elem) * (size_t)((PT_BF16_DOT ? np : 2 * np) * BMR));
        for (int64_t r = 0; r < m; r++) {
            const float *src = A + (i0 + q * BMR + r) * lda;
#if PT_BF16_DOT
            /* row-major within the micro-panel: a row's pairs are contiguous */
            for (int64_t kk = 0; kk < np; kk += 16) {
                int64_t k = k0 + 2 * kk, nk = np - kk < 16 ? np - kk : 16;
                _mm512_mask_storeu_epi32(d + r * np + kk, (__mmask16)((1u << nk) - 1u),
                                         bf16_pairs16(src + k, K - k < 2 * nk ? K - k : 2 * nk));
            }
#else
            for (int64_t kk = 0; kk < np; kk++) {
                int64_t k = k0 + 2 * kk;
                d[(2 * kk) * BMR + r] = k < K ? bf16_round(src[k]) : 0.0f;   /* Kp pads K */
                d[(2 * kk + 1) * BMR + r] = k + 1 < K ? bf16_round(src[k + 1]) : 0.0f;
            }
#endif
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Micro-kernel: C[m x nr] (+)= a[m x 2np] . b[2np x BNR] in fp32.           */
/* b: np rows of BNR pairs (row stride BNR).  first / last as in the fp32    */
/* micro-kernel (ukernel_f32.h): overwrite C, and run the epilogue.          */
/* ------------------------------------------------------------------------ */
#if PT_BF16_DOT
typedef __m512i b_vec;
static inline b_vec bload(const uint32_t *p) { return _mm512_loadu_si512((const void *)p); }
#elif PT_ISA == PT_ISA_AVX512
typedef __m512i b_vec;
static inline b_vec bload(const uint32_t *p) { return _mm512_loadu_si512((const void *)p); }
static inline pt_vf b_even(b_vec x) { return _mm512_castsi512_ps(_mm512_slli_epi32(x, 16)); }
static inline pt_vf b_odd(b_vec x) {
    return _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32((int)0xffff0000u)));
}
#elif PT_ISA == PT_ISA_AVX2
typedef __m256i b_vec;
static inline b_vec bload(const uint32_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline pt_vf b_even(b_vec x) { return _mm256_castsi256_ps(_mm256_slli_epi32(x, 16)); }
static inline pt_vf b_odd(b_vec x) {
    return _mm256_castsi256_ps(_mm256_and_si256(x, _mm256_set1_epi32((int)0xffff0000u)));
}
#else
typedef uint32_t b_vec;
static inline b_vec bload(const uint32_t *p) { return *p; }
static inline pt_vf b_even(b_vec x) { return bf16_value((uint16_t)(x & 0xffffu)); }
static inline pt_vf b_odd(b_vec x) { return bf16_value((uint16_t)(x >> 16)); }
#endif

#if PT_ISA == PT_ISA_SCALAR
/* fmaf, not a * b + c: the product of two bf16 is exact in float, so a
 * fused and an unfused multiply-add round alike -- the same sum as VDPBF16PS
 * step for step, wherever nothing is subnormal. */
#define BMADD(a, b, c) fmaf(a, b, c)
#else
#define BMADD(a, b, c) pt_vfmadd(a, b, c)
#endif

PT_ALWAYS_INLINE void bukernel_body(const int M_, int64_t np, const a_elem *restrict a,
                                    const uint32_t *restrict b, float *restrict C, int64_t ldc,
                                    int64_t nr, int first, int last, const float *restrict bias,
                                    int act) {
    pt_vf acc[BMR][BNV];
    for (int r = 0; r < M_; r++)
        for (int v = 0; v < BNV; v++) acc[r][v] = pt_vzero();
#if PT_ISA != PT_ISA_SCALAR
    for (int r = 0; r < M_; r++)
        for (int v = 0; v < BNR; v += 16) _mm_prefetch((const char *)(C + r * ldc + v), _MM_HINT_T0);
#endif
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 2
#endif
    for (int64_t kk = 0; kk < np; kk++) {
#if PT_BF16_DOT
        __m512bh bv[BNV];
        for (int v = 0; v < BNV; v++) bv[v] = (__m512bh)bload(b + kk * BNR + v * PT_VL);
        for (int r = 0; r < M_; r++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)a[r * np + kk]);
            for (int v = 0; v < BNV; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
        }
#else
        pt_vf be[BNV], bo[BNV];
        for (int v = 0; v < BNV; v++) {
            b_vec x = bload(b + kk * BNR + v * PT_VL);
            be[v] = b_even(x);
            bo[v] = b_odd(x);
        }
        for (int r = 0; r < M_; r++) {
            pt_vf ae = pt_vset1(a[(2 * kk) * BMR + r]), ao = pt_vset1(a[(2 * kk + 1) * BMR + r]);
            for (int v = 0; v < BNV; v++) {
                acc[r][v] = BMADD(ao, bo[v], acc[r][v]);   /* odd k first, as VDPBF16PS */
                acc[r][v] = BMADD(ae, be[v], acc[r][v]);
            }
        }
#endif
    }

    /* the store, with the fp32 GEMM's epilogue */
    PT_STORE_TILE(acc, M_, BNV, BNV, C, ldc, nr, first, last, bias, act);
}

/* One out-of-line entry; m selects an instance with that many live rows
 * (all perform the same per-element arithmetic). */
PT_UK_DISPATCH bukernel(int m, int64_t np, const a_elem *a, const uint32_t *b, float *C,
                        int64_t ldc, int64_t nr, int first, int last, const float *bias,
                        int act) {
#define PT_BUK_CASE(R) \
    case R: bukernel_body(R, np, a, b, C, ldc, nr, first, last, bias, act); break;
    switch (m) {
    PT_BUK_CASE(1) PT_BUK_CASE(2) PT_BUK_CASE(3) PT_BUK_CASE(4)
#if BMR > 4
    PT_BUK_CASE(5) PT_BUK_CASE(6) PT_BUK_CASE(7) PT_BUK_CASE(8) PT_BUK_CASE(9) PT_BUK_CASE(10)
    PT_BUK_CASE(11) PT_BUK_CASE(12)
#endif
    default: break;
    }
#undef PT_BUK_CASE
}

/* The five loops on one strip of C: rows [m0, m1), columns [n0, n1) (n0 a
 * multiple of BNR).  Ap: this thread's A block buffer. */
static void bgemm_rect(float *C, int64_t ldc, const float *A, int64_t lda,
                       const pt_packed_bf16 *B, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                       const float *bias, int act, a_elem *Ap) {
    int64_t rows = m1 - m0, N = B->N, pairs = B->Kp / 2;
    if (rows <= 0 || n1 <= n0) return;
    int64_t nmb = (rows + BMC_MAX - 1) / BMC_MAX;
    int64_t mc_blk = ((rows + nmb - 1) / nmb + BMR - 1) / BMR * BMR;
    int64_t nkb = bk_blocks(pairs);
    int64_t per_k = PT_BF16_DOT ? 1 : 2;          /* a_elem per pair and row */
    for (int64_t jc = n0; jc < n1; jc += BNC_MAX) {                        /* jc */
        int64_t nc = n1 - jc < BNC_MAX ? n1 - jc : BNC_MAX;
        for (int64_t kb = 0; kb < nkb; kb++) {                             /* pc */
            int64_t p0 = bk_block_start(pairs, nkb, kb);
            int64_t np = bk_block_start(pairs, nkb, kb + 1) - p0;
            int first = kb == 0, last = kb == nkb - 1;
            for (int64_t ic = m0; ic < m1; ic += mc_blk) {                 /* ic */
                int64_t mc = m1 - ic < mc_blk ? m1 - ic : mc_blk;
                bpack_a_block(Ap, A, lda, B->K, ic, mc, p0, np);
                for (int64_t jr = jc; jr < jc + nc; jr += BNR) {           /* jr */
                    int64_t nr = N - jr < BNR ? N - jr : BNR;
                    const uint32_t *b = B->data + (jr / BNR) * pairs * BNR + p0 * BNR;
                    const float *bias_j = bias ? bias + jr : NULL;
                    for (int64_t ir = 0; ir < mc; ir += BMR) {             /* ir */
                        int m = (int)(mc - ir < BMR ? mc - ir : BMR);
                        bukernel(m, np, Ap + ir * per_k * np, b, C + (ic + ir) * ldc + jr, ldc,
                                 nr, first, last, bias_j, act);
                    }
                }
            }
        }
    }
}

/* Threads as in gemm.c: strips of rows when there are enough row tiles for
 * every thread, else strips of whole column panels; about four strips per
 * thread, handed out dynamically.  Which thread computes a strip never
 * changes its bits. */
int BF_FN(pt_bgemm_packed)(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                           const pt_packed_bf16 *B, const float *bias, int act, int nthreads) {
    if (!B || B->isa != PT_ISA || B->nr != BNR) return PT_ERR_PATH;   /* the caller repacks */
    int64_t N = B->N, pairs = B->Kp / 2;
    if (M <= 0 || N <= 0) return PT_OK;
    int64_t mtiles = (M + BMR - 1) / BMR, ntiles = (N + BNR - 1) / BNR;
    if (nthreads < 1) nthreads = 1;
    if (nthreads > 1 && (int64_t)nthreads > mtiles * ntiles) nthreads = (int)(mtiles * ntiles);
    if (2.0 * (double)M * (double)N * (double)(B->K + 1) < 524288.0) nthreads = 1;
    int split_m = mtiles >= 4 * (int64_t)nthreads;
    int64_t np_max = pairs < BKC_MAX / 2 ? (pairs > 0 ? pairs : 1) : BKC_MAX / 2;
    /* the A block: no more rows than M has, nor than a block holds */
    int64_t a_rows = (BMC_MAX + BMR - 1) / BMR * BMR;
    if (mtiles * BMR < a_rows) a_rows = mtiles * BMR;
    size_t per = (size_t)a_rows * (size_t)np_max * (PT_BF16_DOT ? 1 : 2);
    size_t tbuf = (per * sizeof(a_elem) + PT_ALIGN - 1) / PT_ALIGN * PT_ALIGN;
    char *Ap_all = pt_alloc(tbuf * (size_t)nthreads);
    if (!Ap_all) return PT_ERR_NOMEM;   /* before C is touched */
    if (nthreads == 1) {
        bgemm_rect(C, ldc, A, lda, B, 0, M, 0, N, bias, act, (a_elem *)Ap_all);
        pt_free(Ap_all);
        return PT_OK;
    }
    int64_t tiles = split_m ? mtiles : ntiles;
    int64_t spt = (tiles + 4 * nthreads - 1) / (4 * nthreads);         /* tiles per strip */
    if (split_m && spt * BMR > BMC_MAX) spt = BMC_MAX / BMR;
    int64_t nstrips = (tiles + spt - 1) / spt;
#pragma omp parallel num_threads(nthreads)
    {
        int t = 0;
#if defined(_OPENMP)
        t = omp_get_thread_num();
#endif
        a_elem *Ap = (a_elem *)(Ap_all + tbuf * (size_t)t);
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < nstrips; u++) {
            if (split_m) {
                int64_t r0 = u * spt * BMR, r1 = (u + 1) * spt * BMR < M ? (u + 1) * spt * BMR : M;
                bgemm_rect(C, ldc, A, lda, B, r0, r1, 0, N, bias, act, Ap);
            } else {
                int64_t c0 = u * spt * BNR, c1 = (u + 1) * spt * BNR < N ? (u + 1) * spt * BNR : N;
                bgemm_rect(C, ldc, A, lda, B, 0, M, c0, c1, bias, act, Ap);
            }
        }
    }
    pt_free(Ap_all);
    return PT_OK;
}

#endif
