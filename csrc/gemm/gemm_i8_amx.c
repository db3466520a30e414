/* gemm_i8_amx.c -- the int8 GEMM on AMX tiles (TDPBSSD: signed bytes times
 * signed bytes, int32 sums, 16 x 16 x 64 per instruction).  Built once, with
 * PT_ISA=avx512 and -mamx-tile -mamx-int8 -mavx512vnni, and called only where
 * pt_igemm_packed_amx_fn() (cpu.c) found AMX-INT8 and AVX512_VNNI and Linux
 * granted this process the tile data.  Fewer than 16 rows (decoding) go to
 * the VPDPBUSD kernel: the same sums, without a tile mostly empty.
 *
 * Operands.  A is quantized per row to int8 in a buffer of row stride Kp,
 * its row count rounded up to 16 with zero rows: an A tile is 16 rows x 64
 * bytes read in place.  B: the packed panels of 32 columns (gemm_i8.h); a B
 * tile is the left or right 16 columns of 16 quad rows, 128 bytes apart.
 *
 * Tiles: a 32 x 32 block of C in four int32 tiles (tmm0-3), two A tiles
 * (tmm4-5), two B tiles (tmm6-7); per 64 k four loads, four TDPBSSD.  Loops:
 * (block of AMC rows, panel) pairs shared out among threads; in each, the
 * 32-row blocks, each one chain over all of K (the sums are exact: no
 * blocking of K is needed for the bits, nor taken), stored through a 4 KiB
 * staging area to the dequantization and the epilogue.  Measured on one
 * Sapphire Rapids core: without the quantization of A and the float32 store
 * of C the tiles run at 50-60% of the TDPBSSD peak; those two, bound by
 * memory (float32 in and out), cost about as much again.  (Tried and left
 * out: blocking K so that a panel's block stays in L1 changed nothing
 * measurable; streaming stores of a large C sped the GEMM alone by ~25% but
 * slowed a Transformer encoder by ~17%, whose next GEMM then read C from
 * memory instead of the last-level cache.)
 */
#include <immintrin.h>
#include "gemm/amx.h"
#include "gemm/i8.h"

#if PT_ISA != PT_ISA_AVX512 || !defined(__AMX_INT8__) || !defined(__AMX_TILE__)
#error "gemm_i8_amx.c is built with -DPT_ISA=2 -mamx-tile -mamx-int8 only"
#endif

#define ABLOCK (512 * 1024)   /* bytes of quantized A per block, about */

static int64_t amx_mc(int64_t Kp) {
    int64_t mc = ABLOCK / Kp / 32 * 32;
    return mc < 32 ? 32 : mc > 512 ? 512 : mc;
}

/* Rows [i, i + rows) (rows <= 32) of C, columns [j0, j0 + nr) of one panel. */
static void amx_block(const int8_t *a, int64_t Kp, const int8_t *b, int64_t rows, int32_t *stage,
                      float *C, int64_t ldc, int64_t nr, const float *sa, const i8_outliers *o,
                      const float *sw, const float *bias, int act) {
    int two = rows > 16;
    _tile_zero(0);
    _tile_zero(1);
    if (two) {
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int64_t q = 0; q < Kp / 64; q++) {
        _tile_loadd(4, a + 64 * q, Kp);
        _tile_loadd(6, b + q * 16 * 4 * PT_I8_NR, 4 * PT_I8_NR);
        _tile_dpbssd(0, 4, 6);
        _tile_loadd(7, b + q * 16 * 4 * PT_I8_NR + 64, 4 * PT_I8_NR);
        _tile_dpbssd(1, 4, 7);
        if (two) {
            _tile_loadd(5, a + 16 * Kp + 64 * q, Kp);
            _tile_dpbssd(2, 5, 6);
            _tile_dpbssd(3, 5, 7);
        }
    }
    /* stage: row r of the block at stage + 32 r (left tile, then right) */
    _tile_stored(0, stage, 128);
    _tile_stored(1, stage + 16, 128);
    if (two) {
        _tile_stored(2, stage + 512, 128);
        _tile_stored(3, stage + 528, 128);
    }
    for (int64_t r = 0; r < rows; r++)
        i8_store_row(C + r * ldc, stage + 32 * r, nr, sa[r], sw, o + r, b, bias, act);
}

int pt_igemm_packed_amx(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                        const pt_packed_i8 *B, const float *bias, int act, int nthreads) {
    if (!B) return PT_ERR_ARG;
    if (M < 16) return pt_igemm_packed_vnni(C, ldc, A, lda, M, B, bias, act, nthreads);
    int64_t N = B->N, K = B->K, Kp = B->Kp, panels = (N + PT_I8_NR - 1) / PT_I8_NR;
    if (N <= 0) return PT_OK;
    int64_t Mp = (M + 15) / 16 * 16, amc = amx_mc(Kp);
    if (nthreads < 1) nthreads = 1;
    float *sa;
    i8_outliers *o;
    int32_t *stages = pt_alloc(sizeof(int32_t) * 1024 * (size_t)nthreads);
    uint8_t *q = stages ? i8_quantized_a(A, lda, M, Mp, K, Kp, 0, nthreads, &sa, &o) : NULL;
    if (!q) {
        pt_free(stages);
        return PT_ERR_NOMEM;   /* before C is touched */
    }
    int64_t blocks = (M + amc - 1) / amc, units = blocks * panels;
    if ((double)M * (double)N * (double)K < 1048576.0 || units < 2) nthreads = 1;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        int t = 0;
#if defined(_OPENMP)
        t = omp_get_thread_num();
#endif
        int32_t *stage = stages + 1024 * t;
        pt_amx_configure();
#pragma omp for schedule(static)
        for (int64_t u = 0; u < units; u++) {
            int64_t p = u % panels, i0 = (u / panels) * amc;
            int64_t mc = M - i0 < amc ? M - i0 : amc;
            int64_t j0 = p * PT_I8_NR, nr = N - j0 < PT_I8_NR ? N - j0 : PT_I8_NR;
            const int8_t *b = B->data + p * Kp * PT_I8_NR;
            for (int64_t ir = 0; ir < mc; ir += 32) {
                int64_t i = i0 + ir, rows = mc - ir < 32 ? mc - ir : 32;
                amx_block((const int8_t *)q + i * Kp, Kp, b, rows, stage, C + i * ldc + j0, ldc,
                          nr, sa + i, o + i, B->scale + j0, bias ? bias + j0 : NULL, act);
            }
        }
        _tile_release();
    }
    pt_free(q);
    pt_free(stages);
    return PT_OK;
}
