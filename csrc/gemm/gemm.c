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
 *
 * Beside this file: packing (pack.c, layouts in pack.h), the micro-kernels
 * (ukernel_f32.h), the few-row streaming GEMV (gemv.c), the naive twin
 * (gemm_ref.c); tile and cache-block sizes in tiles.h.
 */
#include <stdlib.h>
#include <string.h>
#include "gemm/gemm.h"
#include "gemm/gemv.h"
#include "gemm/pack.h"
#include "gemm/ukernel_f32.h"
#include "runtime/cpu.h"
#include "runtime/mem.h"
#include "runtime/status.h"

/* ------------------------------------------------------------------------ */
/* The five loops, on one strip of C: rows [m0, m1), columns                */
/* [n0, n1) (n0 a multiple of NR).  Bo: op(B), packed or read in place.      */
/* Ap: this thread's A block buffer (min(M, bl->mc) rows rounded to MR, x  */
/* kc_max; K x MR for a few rows against packed panels);                    */
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

/* The M and N cache blocks of this call: forced (pt_gemm_set_blocking), or
 * from the caches the CPU reports -- the A block in under half of L2 (the
 * B micro-panel and C tiles share it), the B slab in half of this core's
 * share of L3 -- else the path's defaults (tiles.h). */
typedef struct {
    int64_t mc, nc;   /* rows of A per block (a multiple of MR); columns per slab (of NR) */
} blocking;

static blocking cache_blocks(void) {
    int64_t fm, fn;
    pt_gemm_forced_blocking(&fm, &fn);
    int64_t l2 = pt_cpu_cache_bytes(2), l3 = pt_cpu_cache_bytes(3);
    int64_t panel = (int64_t)sizeof(float) * KC_MAX;   /* bytes of one row at full kc */
    int64_t mc = fm > 0 ? fm : l2 > 0 ? l2 * 45 / 100 / panel : MC_MAX;
    int64_t nc = fn > 0 ? fn : l3 > 0 ? l3 / 2 / panel : NC_MAX;
    mc = mc / MR * MR;
    nc = nc / NR * NR;
    blocking b = {mc < MR ? MR : mc > MC_LIMIT ? MC_LIMIT : mc,
                  nc < NR ? NR : nc > NC_LIMIT ? NC_LIMIT : nc};
    return b;
}

static void gemm_rect(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                      const b_operand *Bo, int64_t K, int64_t N, int64_t m0, int64_t m1,
                      int64_t n0, int64_t n1, const float *bias, int act, float *Ap,
                      float *Bbuf, const blocking *bl) {
    int64_t rows = m1 - m0;
    if (rows <= 0 || n1 <= n0) return;
    /* mc: near-equal row blocks no larger than bl->mc, whole tiles */
    int64_t nmb = (rows + bl->mc - 1) / bl->mc;
    int64_t mc_blk = ((rows + nmb - 1) / nmb + MR - 1) / MR * MR;
    int64_t nkb = k_blocks(K);

    if (Bo->mode == B_PACKED && rows <= 3 &&
        K * MR <= MC_TILES * KC_MAX) {
        gemv_packed(C, ldc, A, lda, trans_a, Bo->p, K, N, m0, (int)rows, n0, n1, bias, act, Ap);
        return;
    }
    for (int64_t jc = n0; jc < n1; jc += bl->nc) {                         /* jc */
        int64_t nc = n1 - jc < bl->nc ? n1 - jc : bl->nc;
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
static int gemm_core(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                     const b_operand *Bo, int64_t M, int64_t N, int64_t K,
                     const float *bias, int act, int nthreads) {
    if (M <= 0 || N <= 0) return PT_OK;
    int64_t mtiles = (M + MR - 1) / MR, ntiles = (N + NR - 1) / NR;
    if (nthreads < 1) nthreads = 1;
    if (nthreads > 1 && (int64_t)nthreads > mtiles * ntiles)
        nthreads = (int)(mtiles * ntiles);
    /* under ~0.5 MFLOP (a few microseconds) waking another thread costs
     * more than it saves */
    if (2.0 * (double)M * (double)N * (double)(K + 1) < 524288.0) nthreads = 1;
    int split_m = mtiles >= 4 * (int64_t)nthreads;
    int64_t kc_max = K < KC_MAX ? (K > 0 ? K : 1) : KC_MAX;
    blocking bl = cache_blocks();
    /* per thread: the A block -- no more rows than M has, nor than a block
     * holds; a few rows against packed panels keep every K block of theirs
     * (gemv_packed) -- then a buffer for blocks of B.  Sized to the call: a
     * decoding step's GEMV asks for a few KiB, not a whole block. */
    int64_t a_rows = (M + MR - 1) / MR * MR;
    if (a_rows > bl.mc) a_rows = bl.mc;
    size_t abuf = (size_t)a_rows * (size_t)kc_max;
    if (Bo->mode == B_PACKED && M <= 3 && K * MR <= MC_TILES * KC_MAX && (size_t)(K * MR) > abuf)
        abuf = (size_t)(K * MR);
    size_t ebuf = Bo->mode == B_IN_PLACE ? (size_t)(kc_max * NR)
                  : Bo->mode == B_TRANS_ON_THE_FLY ? (size_t)(kc_max * NR * WIDE_NP1) : 0;
    size_t tbuf = (abuf + ebuf + PT_ALIGN / sizeof(float) - 1) / (PT_ALIGN / sizeof(float)) *
                  (PT_ALIGN / sizeof(float));
    float *Ap_all = pt_alloc(sizeof(float) * tbuf * (size_t)nthreads);
    if (!Ap_all) return PT_ERR_NOMEM;   /* before C is touched */
    if (nthreads == 1) {
        gemm_rect(C, ldc, A, lda, trans_a, Bo, K, N, 0, M, 0, N, bias, act, Ap_all,
                  Ap_all + abuf, &bl);
        pt_free(Ap_all);
        return PT_OK;
    }
    int64_t tiles = split_m ? mtiles : ntiles;
    int64_t per = (tiles + 4 * nthreads - 1) / (4 * nthreads);          /* tiles per strip */
    if (split_m && per * MR > bl.mc) per = bl.mc / MR;
    /* a few rows from packed panels (decoding): whole groups of the panels
     * the GEMV streams together, or a strip streams fewer at a time (slower) */
    if (!split_m && Bo->mode == B_PACKED && M <= 3) {
        int64_t g = M == 1 ? GEMV_NP1 : wide_panels((int)M);
        per = (per + g - 1) / g * g;
    }
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
                gemm_rect(C, ldc, A, lda, trans_a, Bo, K, N, m0, m1, 0, N, bias, act, Ap, Bbuf,
                          &bl);
            } else {
                int64_t n0 = u * per * NR, n1 = (u + 1) * per * NR < N ? (u + 1) * per * NR : N;
                gemm_rect(C, ldc, A, lda, trans_a, Bo, K, N, 0, M, n0, n1, bias, act, Ap, Bbuf,
                          &bl);
            }
        }
    }
    pt_free(Ap_all);
    return PT_OK;
}

/* ------------------------------------------------------------------------ */
/* Public entry points.                                                      */
/* ------------------------------------------------------------------------ */

int PT_FN(pt_sgemm)(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
                    const float *B, int64_t ldb, int trans_b, int64_t M, int64_t N, int64_t K,
                    const float *bias, int act, int nthreads) {
    if (M <= 0 || N <= 0) return PT_OK;
    if (M <= MR) {
        /* One row tile: every element of B is used once, so packing all of
         * it first would only add passes over B.  Read it in place, or
         * transpose each block just before its use (the same FMA chains as
         * from packed panels: same bits). */
        b_operand Bo = {B, ldb, trans_b ? B_TRANS_ON_THE_FLY : B_IN_PLACE};
        return gemm_core(C, ldc, A, lda, trans_a, &Bo, M, N, K, bias, act, nthreads);
    }
    int64_t np = (N + NR - 1) / NR;
    float *Bp = pt_alloc(sizeof(float) * (size_t)(np * NR) * (size_t)(K > 0 ? K : 0));
    if (!Bp) return PT_ERR_NOMEM;
    if (K > 0) pack_b_all(Bp, B, ldb, trans_b, K, N, nthreads);
    b_operand Bo = {Bp, NR, B_PACKED};
    int status = gemm_core(C, ldc, A, lda, trans_a, &Bo, M, N, K, bias, act, nthreads);
    pt_free(Bp);
    return status;
}

int PT_FN(pt_sgemm_packed)(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                           const pt_packed_b *B, const float *bias, int act, int nthreads) {
    if (!B || B->isa != PT_ISA || B->nr != NR) return PT_ERR_PATH;  /* the caller repacks */
    b_operand Bo = {B->data, NR, B_PACKED};
    return gemm_core(C, ldc, A, lda, 0, &Bo, M, B->N, B->K, bias, act, nthreads);
}
