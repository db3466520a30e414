/* gemm.c -- single-precision GEMM, BLIS style.
 *
 *   C[M x N] = act(op(A)[M x K] . op(B)[K x N] + bias[N])
 *
 * Five loops around a register-tiled micro-kernel (Goto / BLIS):
 *
 *   jc  over N in NC columns    -- a K x NC slab of packed B stays in L3
 *    pc  over K in kc blocks    -- kc x NR micro-panels of B fit L1
 *     ic  over M in mc rows     -- pack an mc x kc block of A (lives in L2)
 *      jr  over NC in NR cols   -- one B micro-panel, reused by every ir
 *       ir  over mc in MR rows  -- micro-kernel: MR x NR of C in registers
 *
 * Packed layouts (both zero padded to whole tiles, in our own buffers):
 *   B: panels of NR columns; panel p is K x NR, row k at p*K*NR + k*NR.
 *      Independent of kc, so B is packed once (pt_sgemm_pack_b) and any
 *      K block of a panel is the contiguous run starting at row pc.
 *   A: per call and thread, an mc x kc block as micro-panels of MR rows;
 *      micro-panel q is kc x MR, element (r, k) at q*kc*MR + k*MR + r.
 * B multiplied by a single row tile of A (M <= MR: decoding) is not packed
 * ahead: each of its elements is used once, so an untransposed B is read in
 * place and a transposed one is transposed block by block as it is used.
 *
 * Determinism.  Element (i, j) of C is, for each K block in order, one FMA
 * chain over k starting from zero, added to what C holds after the previous
 * blocks; bias and activation come after the last block.  The K blocks depend
 * on K alone.  The micro-kernel is instantiated for m = 1..MR live rows, but
 * every instance performs the same per-element FMA chain, so a row's bits do
 * not depend on which tile it falls in, on M, or on the thread split (threads
 * split M or N, never K).
 */
#include <stdlib.h>
#include <string.h>
#include "gemm/gemm.h"
#include "runtime/mem.h"
#include "runtime/vmath.h"

/* ------------------------------------------------------------------------ */
/* Tile and cache-block sizes per path.                                      */
/*                                                                          */
/* AVX-512 (Zen 5: 32 zmm, two 512-bit FMA pipes, 48 KiB L1d, 1 MiB L2):    */
/*   12 x 32 tile = 24 zmm accumulators + 2 B vectors + a broadcast.  Per k  */
/*   it issues 24 FMAs against 2 vector loads and 12 broadcasts: 12 cycles  */
/*   of FMA work, enough to hide the loads.  A kc x 32 B micro-panel at      */
/*   kc = 256 is 32 KiB (L1); an mc x kc A block at mc = 432 is 432 KiB (L2).*/
/* AVX2 (16 ymm): 6 x 16 = 12 accumulators + 2 B vectors + a broadcast.      */
/* Scalar: a 4 x 4 tile of plain multiply-adds, portable C.                  */
/* ------------------------------------------------------------------------ */
#if PT_ISA == PT_ISA_AVX512
#define MR 12
#define NV 2
#define KC_MAX 256
#define MC_MAX 432
#define UKERNEL ukernel_avx512_12x32
#define UKERNEL_WIDE ukernel_avx512_12x32_wide
#define WIDE_NP1 8    /* 1 x 256: 16 chains */
#define WIDE_NP2 4    /* 2 x 128: 16 chains */
#define WIDE_NP3 2    /* 3 x 64: 12 chains */
#define GEMV_NP1 4    /* 1 x 128 from packed panels: 4 streams read fastest */
#elif PT_ISA == PT_ISA_AVX2
#define MR 6
#define NV 2
#define KC_MAX 256
#define MC_MAX 240
#define UKERNEL ukernel_avx2_6x16
#define UKERNEL_WIDE ukernel_avx2_6x16_wide
#define WIDE_NP1 4    /* 1 x 64: 8 chains */
#define WIDE_NP2 2    /* 2 x 32: 8 chains */
#define WIDE_NP3 1
#define GEMV_NP1 4
#else
#define MR 4
#define NV 4
#define KC_MAX 256
#define MC_MAX 128
#define UKERNEL ukernel_scalar_4x4
#define UKERNEL_WIDE ukernel_scalar_4x4_wide
#define WIDE_NP1 2
#define WIDE_NP2 1
#define WIDE_NP3 1
#define GEMV_NP1 2
#endif
#define NR (NV * PT_VL)
#define MC_TILES ((MC_MAX + MR - 1) / MR * MR)   /* rows of a packed A block */
#define WIDE_V (WIDE_NP1 * NV)   /* vectors per row in the widest instance */
#define NC_MAX (128 * NR)

#if PT_ISA == PT_ISA_SCALAR
/* Written as multiply then add (with -std=c11 the compiler does not contract
 * it into an FMA), so the scalar path is the same on every machine. */
#define MADD(a, b, c) ((c) + (a) * (b))
#else
#define MADD(a, b, c) pt_vfmadd(a, b, c)
#endif

/* K blocks: as few as KC_MAX allows, of near-equal size.  A function of K
 * alone -- the heart of the determinism contract. */
static int64_t k_blocks(int64_t K) { return K <= 0 ? 1 : (K + KC_MAX - 1) / KC_MAX; }
static int64_t k_block_start(int64_t K, int64_t nb, int64_t b) {
    int64_t base = K / nb, extra = K % nb;
    return b * base + (b < extra ? b : extra);
}

/* ------------------------------------------------------------------------ */
/* Packing.                                                                 */
/* ------------------------------------------------------------------------ */

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

/* One NR-column panel of op(B), columns j0 .. j0+nr-1, all K rows; columns
 * nr .. NR-1 are zero.  dst: K x NR. */
static void pack_b_panel(float *dst, const float *B, int64_t ldb, int trans_b, int64_t K,
                         int64_t j0, int64_t nr) {
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

/* kc rows of columns j0 .. j0+nr-1 of an untransposed B, zero padded: kc x NR. */
static void pack_b_block(float *dst, const float *B, int64_t ldb, int64_t kc, int64_t j0,
                         int64_t nr) {
    pack_b_panel(dst, B, ldb, 0, kc, j0, nr);
}

/* Packs all of op(B) (K x N) into ceil(N/NR) panels. dst: npanels x K x NR. */
static void pack_b_all(float *dst, const float *B, int64_t ldb, int trans_b, int64_t K,
                       int64_t N, int nthreads) {
    int64_t np = (N + NR - 1) / NR;
    (void)nthreads;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (np > 1 && K * N > 65536)
    for (int64_t p = 0; p < np; p++) {
        int64_t nr = N - p * NR < NR ? N - p * NR : NR;
        pack_b_panel(dst + p * K * NR, B, ldb, trans_b, K, p * NR, nr);
    }
}

/* An mc x kc block of op(A) at (i0, k0) as micro-panels of MR rows; rows
 * past mc are zero.  dst: ceil(mc/MR) x kc x MR. */
static void pack_a_block(float *dst, const float *A, int64_t lda, int trans_a, int64_t i0,
                         int64_t mc, int64_t k0, int64_t kc) {
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

/* ------------------------------------------------------------------------ */
/* Micro-kernel: C[m x nr] (+)= a[m x kc] . b[kc x NR], m <= MR, nr <= NR.    */
/*                                                                          */
/* a: packed micro-panel (kc x MR); b: kc rows of NR readable floats, row    */
/* stride ldbk (NR in a packed panel, ldb when B is read in place).          */
/* first: C is overwritten (first K block) instead of accumulated into.     */
/* last:  the epilogue runs -- + bias[nr] (may be NULL), then act.           */
/* Columns past nr are computed from zero padding and never stored; rows     */
/* past m are not computed.  M_ is a compile-time constant in every caller.  */
/* ------------------------------------------------------------------------ */
PT_ALWAYS_INLINE pt_vf apply_act(pt_vf x, int act) {
    switch (act) {
    case PT_ACT_RELU: return pt_vrelu(x);
    case PT_ACT_GELU: return pt_vgelu(x);
    case PT_ACT_GELU_TANH: return pt_vgelu_tanh(x);
    default: return x;
    }
}

PT_ALWAYS_INLINE void ukernel_body(const int M_, const int NP_, int64_t kc, const float *restrict a,
                            const float *restrict b, int64_t ldbk, int64_t pstride,
                            float *restrict C, int64_t ldc, int64_t nr, int first, int last,
                            const float *restrict bias, int act) {
    pt_vf acc[MR][WIDE_V];
    for (int r = 0; r < M_; r++)
        for (int v = 0; v < NP_ * NV; v++) acc[r][v] = pt_vzero();
#if PT_ISA != PT_ISA_SCALAR
    /* fetch the C tile while the k loop runs: its rows are far apart (ldc)
     * and would otherwise be missed one by one at the store */
    for (int r = 0; r < M_; r++)
        for (int v = 0; v < NP_ * NV * PT_VL; v += 16)
            _mm_prefetch((const char *)(C + r * ldc + v), _MM_HINT_T0);
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 4
#endif
    for (int64_t k = 0; k < kc; k++) {
        pt_vf bv[WIDE_V];
        for (int p = 0; p < NP_; p++)
            for (int v = 0; v < NV; v++)
                bv[p * NV + v] = pt_vload(b + p * pstride + k * ldbk + v * PT_VL);
        for (int r = 0; r < M_; r++) {
            pt_vf av = pt_vset1(a[k * MR + r]);
            for (int v = 0; v < NP_ * NV; v++) acc[r][v] = MADD(av, bv[v], acc[r][v]);
        }
    }

    /* the store, with the epilogue fused */
    pt_vf bias_v[WIDE_V];
    if (last)
        for (int v = 0; v < NP_ * NV; v++) {
            int64_t n = nr - v * PT_VL;
            n = n < 0 ? 0 : n > PT_VL ? PT_VL : n;
            bias_v[v] = !bias || n == 0 ? pt_vzero()
                        : n == PT_VL ? pt_vload(bias + v * PT_VL)
                        : pt_vload_tail(bias + v * PT_VL, (size_t)n, 0.0f);
        }
    for (int r = 0; r < M_; r++) {
        float *c = C + r * ldc;
        for (int v = 0; v < NP_ * NV; v++) {
            int64_t n = nr - v * PT_VL;
            if (n <= 0) break;
            pt_vf x = acc[r][v];
            if (n >= PT_VL) {
                if (!first) x = pt_vadd(pt_vload(c + v * PT_VL), x);
                if (last) {
                    if (bias) x = pt_vadd(x, bias_v[v]);
                    x = apply_act(x, act);
                }
                pt_vstore(c + v * PT_VL, x);
            } else {
                if (!first) x = pt_vadd(pt_vload_tail(c + v * PT_VL, (size_t)n, 0.0f), x);
                if (last) {
                    if (bias) x = pt_vadd(x, bias_v[v]);
                    x = apply_act(x, act);
                }
                pt_vstore_tail(c + v * PT_VL, x, (size_t)n);
            }
        }
    }
}

/* One entry point per path, named by its tile; m selects an instance with
 * that many live rows (all perform the same per-element arithmetic). */
static void UKERNEL(int m, int64_t kc, const float *a, const float *b, int64_t ldbk, float *C,
                    int64_t ldc, int64_t nr, int first, int last, const float *bias, int act) {
#define PT_UK_CASE(R) \
    case R: ukernel_body(R, 1, kc, a, b, ldbk, 0, C, ldc, nr, first, last, bias, act); break;
    switch (m) {
    PT_UK_CASE(1) PT_UK_CASE(2) PT_UK_CASE(3) PT_UK_CASE(4)
#if MR > 4
    PT_UK_CASE(5) PT_UK_CASE(6)
#endif
#if MR > 6
    PT_UK_CASE(7) PT_UK_CASE(8) PT_UK_CASE(9) PT_UK_CASE(10) PT_UK_CASE(11) PT_UK_CASE(12)
#endif
    default: break;
    }
#undef PT_UK_CASE
}

/* Wide instances for 1..3 rows (decoding): one or two rows give the MR x NR
 * tile only 2-4 FMA chains, too few to cover the FMA latency, so these span
 * wide_panels(m) NR-panels at once (panel p at b + p*pstride).  Each element
 * still sees exactly the FMA chain of the MR x NR tile: same bits. */
static int wide_panels(int m) {
    return m == 1 ? WIDE_NP1 : m == 2 ? WIDE_NP2 : m == 3 ? WIDE_NP3 : 1;
}

static void UKERNEL_WIDE(int m, int64_t kc, const float *a, const float *b, int64_t ldbk,
                         int64_t pstride, float *C, int64_t ldc, int64_t nr, int first,
                         int last, const float *bias, int act) {
    switch (m) {
    case 1: ukernel_body(1, WIDE_NP1, kc, a, b, ldbk, pstride, C, ldc, nr, first, last, bias, act); break;
    case 2: ukernel_body(2, WIDE_NP2, kc, a, b, ldbk, pstride, C, ldc, nr, first, last, bias, act); break;
    case 3: ukernel_body(3, WIDE_NP3, kc, a, b, ldbk, pstride, C, ldc, nr, first, last, bias, act); break;
    default: break;
    }
}

/* ------------------------------------------------------------------------ */
/* The five loops, on one strip of C: rows [m0, m1), columns                */
/* [n0, n1) (n0 a multiple of NR).  Bo: op(B), packed or read in place.      */
/* Ap: this thread's A block buffer (MC_MAX rounded to MR, x kc_max);        */
/* Bbuf: its buffer for B blocks (B's last columns when read in place;     */
/* WIDE_NP1 panels of kc_max x NR when transposed on the fly).              */
/* ------------------------------------------------------------------------ */
enum { B_PACKED = 0, B_IN_PLACE = 1, B_TRANS_ON_THE_FLY = 2 };
typedef struct {
    const float *p;   /* packed panels, or B itself (row stride ld) */
    int64_t ld;
    int mode;         /* B_PACKED; B_IN_PLACE: op(B) = B read where it lies;
                         B_TRANS_ON_THE_FLY: op(B) = B^T, each kc x NR block
                         transposed into Bbuf just before its use */
} b_operand;

/* A few rows (decoding) against packed panels: every element of B is used
 * once, so the order of the loops only decides how memory is read.  Here
 * each group of panels is finished -- all its K blocks in order -- before the
 * next, so B streams from start to end with no jumps (the five loops would
 * read half a panel, skip half, and come back for it).  One row reads
 * GEMV_NP1 panels at once: on Zen 5, streaming from 4 places at a time reads
 * memory fastest (44 GB/s on one core, against 40.6 with the 8 panels of
 * the in-place path and 38 with the five loops).  Per element the same K
 * blocks, chains and additions as the five loops: same bits.  Ap receives
 * every K block of A (the caller checks K * MR floats fit). */
static void gemv_packed(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                        const float *Bp, int64_t K, int64_t N, int64_t m0, int rows, int64_t n0,
                        int64_t n1, const float *bias, int act, float *Ap) {
    int64_t nkb = k_blocks(K);
    for (int64_t kb = 0; kb < nkb; kb++) {   /* block kb of A at Ap + pc * MR */
        int64_t pc = k_block_start(K, nkb, kb);
        pack_a_block(Ap + pc * MR, A, lda, trans_a, m0, rows, pc,
                     k_block_start(K, nkb, kb + 1) - pc);
    }
    int wnp = rows == 1 ? GEMV_NP1 : wide_panels(rows);
    for (int64_t jr = n0; jr < n1; jr += wnp * NR) {
        int64_t span = n1 - jr < wnp * NR ? n1 - jr : wnp * NR;
        for (int64_t kb = 0; kb < nkb; kb++) {
            int64_t pc = k_block_start(K, nkb, kb);
            int64_t kc = k_block_start(K, nkb, kb + 1) - pc;
            const float *b = Bp + (jr / NR) * K * NR + pc * NR;
            float *c = C + m0 * ldc + jr;
            const float *bias_j = bias ? bias + jr : NULL;
            if (rows == 1 && span > (wnp - 1) * NR)
                ukernel_body(1, GEMV_NP1, kc, Ap + pc * MR, b, NR, K * NR, c, ldc, span,
                             kb == 0, kb == nkb - 1, bias_j, act);
            else if (span > (wnp - 1) * NR)
                UKERNEL_WIDE(rows, kc, Ap + pc * MR, b, NR, K * NR, c, ldc, span, kb == 0,
                             kb == nkb - 1, bias_j, act);
            else    /* the last few panels, one at a time */
                for (int64_t j = 0; j < span; j += NR)
                    UKERNEL(rows, kc, Ap + pc * MR, b + (j / NR) * K * NR, NR, c + j, ldc,
                            span - j < NR ? span - j : NR, kb == 0, kb == nkb - 1,
                            bias_j ? bias_j + j : NULL, act);
        }
    }
}

static void gemm_rect(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                      const b_operand *Bo, int64_t K, int64_t N, int64_t m0, int64_t m1,
                      int64_t n0, int64_t n1, const float *bias, int act, float *Ap,
                      float *Bbuf) {
    int64_t rows = m1 - m0;
    if (rows <= 0 || n1 <= n0) return;
    /* mc: near-equal row blocks no larger than MC_MAX, whole tiles */
    int64_t nmb = (rows + MC_MAX - 1) / MC_MAX;
    int64_t mc_blk = ((rows + nmb - 1) / nmb + MR - 1) / MR * MR;
    int64_t nkb = k_blocks(K);

    if (Bo->mode == B_PACKED && rows <= 3 &&
        K * MR <= MC_TILES * KC_MAX) {
        gemv_packed(C, ldc, A, lda, trans_a, Bo->p, K, N, m0, (int)rows, n0, n1, bias, act, Ap);
        return;
    }
    for (int64_t jc = n0; jc < n1; jc += NC_MAX) {                         /* jc */
        int64_t nc = n1 - jc < NC_MAX ? n1 - jc : NC_MAX;
        for (int64_t kb = 0; kb < nkb; kb++) {                             /* pc */
            int64_t pc = k_block_start(K, nkb, kb);
            int64_t kc = k_block_start(K, nkb, kb + 1) - pc;
            int first = kb == 0, last = kb == nkb - 1;
            for (int64_t ic = m0; ic < m1; ic += mc_blk) {                 /* ic */
                int64_t mc = m1 - ic < mc_blk ? m1 - ic : mc_blk;
                pack_a_block(Ap, A, lda, trans_a, ic, mc, pc, kc);
                int wnp = mc <= 3 ? wide_panels((int)mc) : 1;
                for (int64_t jr = jc; jr < jc + nc; jr += NR) {            /* jr */
                    int64_t nr = N - jr < NR ? N - jr : NR;
                    int64_t span = jc + nc - jr;
                    if (wnp > 1 && span > (wnp - 1) * NR &&
                        (Bo->mode != B_IN_PLACE || span >= wnp * NR)) {
                        /* a few rows: wnp panels at once (whole panels when in place) */
                        int64_t nrw = span < wnp * NR ? span : wnp * NR;
                        const float *b;
                        int64_t ldbk = NR, pstride = K * NR;
                        if (Bo->mode == B_PACKED) {
                            b = Bo->p + (jr / NR) * K * NR + pc * NR;
                        } else if (Bo->mode == B_IN_PLACE) {
                            b = Bo->p + pc * Bo->ld + jr;
                            ldbk = Bo->ld;
                            pstride = NR;
                        } else {
                            for (int64_t q = 0; q < wnp; q++) {
                                int64_t jq = jr + q * NR;
                                int64_t nq = nrw - q * NR < NR ? nrw - q * NR : NR;
                                pack_b_panel(Bbuf + q * kc * NR, Bo->p + pc, Bo->ld, 1, kc, jq,
                                             nq);
                            }
                            b = Bbuf;
                            pstride = kc * NR;
                        }
                        UKERNEL_WIDE((int)mc, kc, Ap, b, ldbk, pstride, C + ic * ldc + jr, ldc,
                                     nrw, first, last, bias ? bias + jr : NULL, act);
                        jr += (wnp - 1) * NR;
                        continue;
                    }
                    const float *b;
                    int64_t ldbk = NR;
                    if (Bo->mode == B_PACKED) {
                        b = Bo->p + (jr / NR) * K * NR + pc * NR;
                    } else if (Bo->mode == B_IN_PLACE && nr == NR) {
                        b = Bo->p + pc * Bo->ld + jr;
                        ldbk = Bo->ld;
                    } else if (Bo->mode == B_IN_PLACE) {
                        /* last columns: zero pad a copy, never read past B */
                        pack_b_panel(Bbuf, Bo->p + pc * Bo->ld, Bo->ld, 0, kc, jr, nr);
                        b = Bbuf;
                    } else {
                        pack_b_panel(Bbuf, Bo->p + pc, Bo->ld, 1, kc, jr, nr);
                        b = Bbuf;
                    }
                    const float *bias_j = bias ? bias + jr : NULL;
                    for (int64_t ir = 0; ir < mc; ir += MR) {              /* ir */
                        int m = (int)(mc - ir < MR ? mc - ir : MR);
                        UKERNEL(m, kc, Ap + ir * kc, b, ldbk, C + (ic + ir) * ldc + jr, ldc, nr,
                                first, last, bias_j, act);
                    }
                }
            }
        }
    }
}

/* Threads share C in strips, each strip computed whole (every K block) by
 * the thread that takes it: strips of rows when there are enough MR-row
 * tiles for every thread (prefill, training-size batches), otherwise strips
 * of columns in whole NR panels (decoding at batch 1: the cost is streaming
 * B, which the column split shares between the cores).  About four strips
 * per thread, handed out dynamically: on a machine shared with other work a
 * thread that loses its core leaves its strips to the others.  Which thread
 * computes a strip never changes its bits. */
static void gemm_core(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                      const b_operand *Bo, int64_t M, int64_t N, int64_t K,
                      const float *bias, int act, int nthreads) {
    if (M <= 0 || N <= 0) return;
    int64_t mtiles = (M + MR - 1) / MR, ntiles = (N + NR - 1) / NR;
    if (nthreads < 1) nthreads = 1;
    if (nthreads > 1 && (int64_t)nthreads > mtiles * ntiles)
        nthreads = (int)(mtiles * ntiles);
    /* under ~0.5 MFLOP (a few microseconds) waking another thread costs
     * more than it saves */
    if (2.0 * (double)M * (double)N * (double)(K + 1) < 524288.0) nthreads = 1;
    int split_m = mtiles >= 4 * (int64_t)nthreads;
    int64_t kc_max = K < KC_MAX ? (K > 0 ? K : 1) : KC_MAX;
    /* per thread: the A block, then a buffer for blocks of B */
    size_t abuf = (size_t)MC_TILES * (size_t)kc_max;
    size_t ebuf = Bo->mode == B_IN_PLACE ? (size_t)(kc_max * NR)
                  : Bo->mode == B_TRANS_ON_THE_FLY ? (size_t)(kc_max * NR * WIDE_NP1) : 0;
    size_t tbuf = (abuf + ebuf + PT_ALIGN / sizeof(float) - 1) / (PT_ALIGN / sizeof(float)) *
                  (PT_ALIGN / sizeof(float));
    float *Ap_all = pt_alloc(sizeof(float) * tbuf * (size_t)nthreads);
    if (!Ap_all) {
        /* out of memory: the same product through the naive loop */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                float s = 0.0f;
                for (int64_t k = 0; k < K; k++)
                    s += (trans_a ? A[k * lda + i] : A[i * lda + k]) *
                         (Bo->mode == B_IN_PLACE ? Bo->p[k * Bo->ld + j]
                          : Bo->mode == B_TRANS_ON_THE_FLY ? Bo->p[j * Bo->ld + k]
                          : Bo->p[(j / NR) * K * NR + k * NR + j % NR]);
                if (bias) s += bias[j];
                pt_vf x = apply_act(pt_vset1(s), act);
                float out[PT_VL];
                pt_vstore(out, x);
                C[i * ldc + j] = out[0];
            }
        return;
    }
    if (nthreads == 1) {
        gemm_rect(C, ldc, A, lda, trans_a, Bo, K, N, 0, M, 0, N, bias, act, Ap_all,
                  Ap_all + abuf);
        pt_free(Ap_all);
        return;
    }
    int64_t tiles = split_m ? mtiles : ntiles;
    int64_t per = (tiles + 4 * nthreads - 1) / (4 * nthreads);          /* tiles per strip */
    if (split_m && per * MR > MC_MAX) per = MC_MAX / MR;
    int64_t nstrips = (tiles + per - 1) / per;
#pragma omp parallel num_threads(nthreads)
    {
        int t = 0;
#if defined(_OPENMP)
        t = omp_get_thread_num();
#endif
        float *Ap = Ap_all + tbuf * (size_t)t, *Bbuf = Ap + abuf;
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < nstrips; u++) {
            if (split_m) {
                int64_t m0 = u * per * MR, m1 = (u + 1) * per * MR < M ? (u + 1) * per * MR : M;
                gemm_rect(C, ldc, A, lda, trans_a, Bo, K, N, m0, m1, 0, N, bias, act, Ap, Bbuf);
            } else {
                int64_t n0 = u * per * NR, n1 = (u + 1) * per * NR < N ? (u + 1) * per * NR : N;
                gemm_rect(C, ldc, A, lda, trans_a, Bo, K, N, 0, M, n0, n1, bias, act, Ap, Bbuf);
            }
        }
    }
    pt_free(Ap_all);
}

/* ------------------------------------------------------------------------ */
/* Public entry points.                                                      */
/* ------------------------------------------------------------------------ */

void PT_FN(pt_sgemm)(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                     const float *B, int64_t ldb, int trans_b, int64_t M, int64_t N, int64_t K,
                     const float *bias, int act, int nthreads) {
    if (M <= 0 || N <= 0) return;
    if (M <= MR) {
        /* One row tile: every element of B is used once, so packing all of
         * it first would only add passes over B.  Read it in place, or
         * transpose each block just before its use (the same FMA chains as
         * from packed panels: same bits). */
        b_operand Bo = {B, ldb, trans_b ? B_TRANS_ON_THE_FLY : B_IN_PLACE};
        gemm_core(C, ldc, A, lda, trans_a, &Bo, M, N, K, bias, act, nthreads);
        return;
    }
    int64_t np = (N + NR - 1) / NR;
    float *Bp = pt_alloc(sizeof(float) * (size_t)(np * NR) * (size_t)(K > 0 ? K : 0));
    if (!Bp) {
        pt_sgemm_ref(C, ldc, A, lda, trans_a, B, ldb, trans_b, M, N, K, bias, act);
        return;
    }
    if (K > 0) pack_b_all(Bp, B, ldb, trans_b, K, N, nthreads);
    b_operand Bo = {Bp, NR, B_PACKED};
    gemm_core(C, ldc, A, lda, trans_a, &Bo, M, N, K, bias, act, nthreads);
    pt_free(Bp);
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

void PT_FN(pt_sgemm_packed)(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                            const pt_packed_b *B, const float *bias, int act, int nthreads) {
    if (!B || B->isa != PT_ISA || B->nr != NR) return;   /* caller repacks on a path change */
    b_operand Bo = {B->data, NR, B_PACKED};
    gemm_core(C, ldc, A, lda, 0, &Bo, M, B->N, B->K, bias, act, nthreads);
}

#if PT_ISA == PT_ISA_SCALAR
void pt_packed_b_free(pt_packed_b *p) {
    if (p) { pt_weights_free(p->data, p->size * sizeof(float)); pt_free(p); }
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
