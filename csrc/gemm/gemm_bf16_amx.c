/* gemm_bf16_amx.c -- the bfloat16 GEMM on AMX tiles (TDPBF16PS): the
 * operands of gemm_bf16.c's avx512 layout, multiplied 16 x 16 x 32 at a time.
 * Built once, with PT_ISA=avx512 and -mamx-tile -mamx-bf16 (setup.py,
 * tests/c/run.sh), and called only where pt_bgemm_packed_amx_fn() (cpu.c)
 * found AMX-BF16 and Linux granted this process the tile data.
 *
 * Measured on one Sapphire Rapids core (TDPBF16PS peak ~3.8 TFLOP/s): a
 * tile load that misses L1 is what costs -- with 2 x 2 blocking every
 * TDPBF16PS needs 1 KiB of tiles, half of them from L2 -- so the blocks
 * below keep one operand's tiles in L1 and A in L2.
 *
 * Tiles.  Eight registers of 16 rows x 64 bytes: a 32 x 32 block of C in
 * four fp32 tiles (tmm0-3), two A tiles of 16 rows x 16 pairs (tmm4-5) and
 * two B tiles of 16 pair rows x 16 columns (tmm6-7).  Per 32 k: four loads,
 * four TDPBF16PS (16 x 16 x 32 multiply-adds each).
 *
 * Operands.  B: the avx512 panels of 32 columns as packed (gemm.h); a B tile
 * is the left or right 16 columns of 16 pair rows, 128 bytes apart, and Kp
 * is a multiple of 32, so no tile reads past its panel.  A: rounded to bf16
 * and packed block by block into tiles -- 16 rows x 16 pairs, 1 KiB each,
 * contiguous -- group g of 16 rows, chunk q of 16 pairs at tile g*nq + q;
 * rows past M are zero.
 *
 * Loops (a rectangle of C per strip): ic over M in blocks of amc rows (all
 * of K, about 512 KiB of packed A: it stays in L2), jr over 32-column panels
 * (B streams from memory once per A block), kb over K in blocks of at most
 * AKC pairs (the panel's block, 32 KiB, stays in L1 while every 32-row block
 * of the A block passes it), ir over 32-row blocks: the 32 x 32 block of C
 * in its four tiles, accumulated over the K block.  Between K blocks the
 * tiles park in a scratch strip (amc x 32 floats, in L2); after the last
 * they are stored to C -- through a 1 KiB staging buffer where a tile
 * overhangs M or N -- and the epilogue (bias, act) runs on them in place.
 * fp32 tiles store and load exactly, so the blocking changes no bit: each
 * element is one chain of TDPBF16PS over k in order, 32 k at a time from
 * k = 0, whatever M, the blocking or the thread split.
 * TDPBF16PS reads subnormal bf16 inputs as zero and flushes subnormal
 * results, as VDPBF16PS does.
 */
#include <immintrin.h>
#include <string.h>
#include "gemm/amx.h"
#include "gemm/bf16.h"
#include "gemm/gemm.h"
#include "gemm/ukernel_f32.h"   /* apply_act: the epilogue of the fp32 GEMM */
#include "runtime/mem.h"
#include "runtime/status.h"
#if defined(_OPENMP)
#include <omp.h>
#endif

#if PT_ISA != PT_ISA_AVX512 || !defined(__AMX_BF16__) || !defined(__AMX_TILE__)
#error "gemm_bf16_amx.c is built with -DPT_ISA=2 -mamx-tile -mamx-bf16 only"
#endif

#define PANEL 32                 /* columns per packed B panel (the avx512 BNR) */
#define TILE_U32 256             /* a tile: 16 rows x 16 pairs */
#define AKC 256                  /* pairs (512 k) per K block at most: 32 KiB of panel */
#define ABLOCK (512 * 1024)      /* bytes of packed A per ic block, about */
#define AMC_MAX 512              /* rows per ic block at most */

/* Rows [0, mc) of A (row stride lda, K columns), rounded to bf16, as tiles:
 * group g of 16 rows, chunk q of 16 pairs at dst + (g*nq + q) tiles; rows
 * of the last group past mc and k past K are zero. */
static void amx_pack_block(uint32_t *dst, const float *A, int64_t lda, int64_t mc, int64_t K,
                           int64_t nq) {
    for (int64_t r = 0; r < (mc + 15) / 16 * 16; r++) {
        uint32_t *d = dst + (r / 16) * nq * TILE_U32 + (r % 16) * 16;
        if (r >= mc) {
            for (int64_t q = 0; q < nq; q++) memset(d + q * TILE_U32, 0, 64);
            continue;
        }
        const float *src = A + r * lda;
        for (int64_t q = 0; q < nq; q++) {
            int64_t k = 32 * q;
            _mm512_store_si512((void *)(d + q * TILE_U32), bf16_pairs16(src + k, K - k < 32 ? K - k : 32));
        }
    }
}

/* The valid rows x cols corner of a 16 x 16 fp32 tile staged at s (row
 * stride 16 floats) to c (row stride ldc). */
static void stage_out(const float *s, float *c, int64_t ldc, int64_t rows, int64_t cols) {
    __mmask16 m = cols >= 16 ? 0xffff : cols <= 0 ? 0 : (__mmask16)((1u << cols) - 1u);
    for (int r = 0; r < 16 && r < rows; r++) _mm512_mask_storeu_ps(c + r * ldc, m, _mm512_load_ps(s + 16 * r));
}

/* Tile T (= 2i + j) of a 32 x 32 block: rows 16i.., columns 16j.. of C
 * (row stride ldc; rows x cols of it inside the matrix) or of the scratch
 * strip S (row stride 32, always whole). */
#define C_TILE(i, j) (C + (int64_t)(16 * (i)) * ldc + 16 * (j))
#define S_TILE(i, j) (S + 16 * (i) * 32 + 16 * (j))
#define C_FULL(i, j) (rows >= 16 * ((i) + 1) && cols >= 16 * ((j) + 1))
#define C_LOAD(T, i, j)                                                                  \
    do {                                                                                 \
        if (first) _tile_zero(T);                                                        \
        else _tile_loadd(T, S_TILE(i, j), 128);                                          \
    } while (0)
#define C_STORE(T, i, j)                                                                 \
    do {                                                                                 \
        if (!last) _tile_stored(T, S_TILE(i, j), 128);                                   \
        else if (C_FULL(i, j)) _tile_stored(T, C_TILE(i, j), ldc * 4);                   \
        else {                                                                           \
            _tile_stored(T, stage, 64);                                                  \
            stage_out(stage, C_TILE(i, j), ldc, rows - 16 * (i), cols - 16 * (j));       \
        }                                                                                \
    } while (0)

/* One 32 x 32 block (G row groups of 16) over nq chunks of 16 pairs: a, the
 * block's first A tile (the second row group gstride further on); b, the
 * panel's first pair row of the K block (row stride PANEL pairs).  The
 * tiles start from zero (first) or from S, and end in S or, on the last K
 * block, in C (rows x cols of it inside the matrix). */
PT_ALWAYS_INLINE void amx_block_body(const int G, const uint32_t *a, int64_t gstride,
                                     const uint32_t *b, int64_t nq, float *S, float *C,
                                     int64_t ldc, int64_t rows, int64_t cols, int first,
                                     int last, float *stage) {
    C_LOAD(0, 0, 0);
    C_LOAD(1, 0, 1);
    if (G == 2) {
        C_LOAD(2, 1, 0);
        C_LOAD(3, 1, 1);
    }
    for (int64_t q = 0; q < nq; q++) {
        _tile_loadd(4, a + q * TILE_U32, 64);
        _tile_loadd(6, b + q * 16 * PANEL, PANEL * 4);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(7, b + q * 16 * PANEL + 16, PANEL * 4);
        _tile_dpbf16ps(1, 4, 7);
        if (G == 2) {
            _tile_loadd(5, a + gstride + q * TILE_U32, 64);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    }
    C_STORE(0, 0, 0);
    C_STORE(1, 0, 1);
    if (G == 2) {
        C_STORE(2, 1, 0);
        C_STORE(3, 1, 1);
    }
}

static void amx_block(const uint32_t *a, int64_t gstride, const uint32_t *b, int64_t nq,
                      float *S, float *C, int64_t ldc, int64_t rows, int64_t cols, int first,
                      int last, float *stage) {
    if (rows > 16) amx_block_body(2, a, gstride, b, nq, S, C, ldc, rows, cols, first, last, stage);
    else amx_block_body(1, a, gstride, b, nq, S, C, ldc, rows, cols, first, last, stage);
}

/* The last K block's epilogue on rows x cols of C: + bias, then act. */
static void epilogue(float *C, int64_t ldc, int64_t rows, int64_t cols, const float *bias,
                     int act) {
    if (!bias && act == PT_ACT_NONE) return;
    for (int64_t j = 0; j < cols; j += 16) {
        int64_t n = cols - j < 16 ? cols - j : 16;
        __mmask16 m = (__mmask16)(n >= 16 ? 0xffffu : (1u << n) - 1u);
        __m512 bv = bias ? _mm512_maskz_loadu_ps(m, bias + j) : _mm512_setzero_ps();
        for (int64_t r = 0; r < rows; r++) {
            __m512 x = _mm512_maskz_loadu_ps(m, C + r * ldc + j);
            if (bias) x = _mm512_add_ps(x, bv);
            _mm512_mask_storeu_ps(C + r * ldc + j, m, apply_act(x, act));
        }
    }
}

/* K blocks: chunks of 16 pairs split into near-equal blocks of at most AKC
 * pairs.  (Free to depend on anything: blocking changes no bit here.) */
static int64_t chunk_start(int64_t nq, int64_t nb, int64_t b) {
    int64_t base = nq / nb, extra = nq % nb;
    return b * base + (b < extra ? b : extra);
}

/* Rows of packed A per ic block: about ABLOCK bytes, a multiple of 32. */
static int64_t amx_mc(int64_t nq) {
    int64_t mc = ABLOCK / (nq > 0 ? nq * 1024 / 16 : 64) / 32 * 32;
    return mc < 32 ? 32 : mc > AMC_MAX ? AMC_MAX : mc;
}

/* Rows [m0, m1), columns [n0, n1) (n0 a multiple of PANEL) of C.  Ap, S,
 * stage: this thread's A block (amx_mc rows), scratch strip and staging. */
static void amx_rect(float *C, int64_t ldc, const float *A, int64_t lda, const pt_packed_bf16 *B,
                     int64_t m0, int64_t m1, int64_t n0, int64_t n1, const float *bias, int act,
                     uint32_t *Ap, float *S, float *stage) {
    int64_t pairs = B->Kp / 2, nq = pairs / 16, N = B->N, K = B->K, amc = amx_mc(nq);
    int64_t nkb = (pairs + AKC - 1) / AKC;
    if (nkb < 1) nkb = 1;
    for (int64_t ic = m0; ic < m1; ic += amc) {
        int64_t mc = m1 - ic < amc ? m1 - ic : amc;
        amx_pack_block(Ap, A + ic * lda, lda, mc, K, nq);
        for (int64_t jr = n0; jr < n1; jr += PANEL) {
            int64_t cols = N - jr < PANEL ? N - jr : PANEL;
            const float *bias_j = bias ? bias + jr : NULL;
            for (int64_t kb = 0; kb < nkb; kb++) {
                int64_t q0 = chunk_start(nq, nkb, kb), qn = chunk_start(nq, nkb, kb + 1) - q0;
                int first = kb == 0, last = kb == nkb - 1;
                const uint32_t *b = B->data + (jr / PANEL) * pairs * PANEL + q0 * 16 * PANEL;
                for (int64_t ir = 0; ir < mc; ir += 32) {
                    int64_t rows = mc - ir < 32 ? mc - ir : 32;
                    float *c = C + (ic + ir) * ldc + jr;
                    amx_block(Ap + ((ir / 16) * nq + q0) * TILE_U32, nq * TILE_U32, b, qn,
                              S + ir * 32, c, ldc, rows, cols, first, last, stage);
                    if (last) epilogue(c, ldc, rows, cols, bias_j, act);
                }
            }
        }
    }
}

/* Threads as in gemm_bf16.c: strips of 32-row blocks when there are enough
 * for every thread, else strips of whole panels.  Which thread computes a
 * strip never changes a bit. */
int pt_bgemm_packed_amx(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                        const pt_packed_bf16 *B, const float *bias, int act, int nthreads) {
    if (!B || B->isa != PT_ISA_AVX512 || B->nr != PANEL || B->Kp % 32) return PT_ERR_PATH;
    int64_t N = B->N, K = B->K, nq = B->Kp / 32;
    if (M <= 0 || N <= 0) return PT_OK;
    int64_t mblocks = (M + 31) / 32, panels = (N + PANEL - 1) / PANEL;
    if (nthreads < 1) nthreads = 1;
    if (2.0 * (double)M * (double)N * (double)(K + 1) < 1048576.0) nthreads = 1;
    if (nthreads > 1 && (int64_t)nthreads > mblocks * panels) nthreads = (int)(mblocks * panels);
    int64_t amc = amx_mc(nq);
    /* per thread: an A block, a scratch strip, a staging tile */
    size_t abytes = (size_t)amc * (size_t)(nq > 0 ? nq : 1) * 64;
    size_t per = abytes + sizeof(float) * (size_t)(amc * 32 + 256);
    char *buf = pt_alloc(per * (size_t)nthreads);
    if (!buf) return PT_ERR_NOMEM;   /* before C is touched */
    int split_m = mblocks >= 4 * (int64_t)nthreads;
    int64_t tiles = split_m ? mblocks : panels;
    /* a strip of rows streams all of B: one per thread; strips of columns
     * pack A again: four per thread, for balance */
    int64_t spt = split_m ? (tiles + nthreads - 1) / nthreads
                          : (tiles + 4 * nthreads - 1) / (4 * nthreads);   /* tiles per strip */
    int64_t nstrips = (tiles + spt - 1) / spt;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        int t = 0;
#if defined(_OPENMP)
        t = omp_get_thread_num();
#endif
        uint32_t *Ap = (uint32_t *)(buf + per * (size_t)t);
        float *S = (float *)(buf + per * (size_t)t + abytes), *stage = S + amc * 32;
        pt_amx_configure();
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < nstrips; u++) {
            if (split_m) {
                int64_t r0 = u * spt * 32, r1 = (u + 1) * spt * 32 < M ? (u + 1) * spt * 32 : M;
                amx_rect(C, ldc, A, lda, B, r0, r1, 0, N, bias, act, Ap, S, stage);
            } else {
                int64_t c0 = u * spt * PANEL;
                int64_t c1 = (u + 1) * spt * PANEL < N ? (u + 1) * spt * PANEL : N;
                amx_rect(C, ldc, A, lda, B, 0, M, c0, c1, bias, act, Ap, S, stage);
            }
        }
        _tile_release();
    }
    pt_free(buf);
    return PT_OK;
}
