/* tiles.h -- the sizes every gemm file agrees on, per path: the micro-
 * kernel's register tile (it fixes the packed layouts of pack.c) and the cache
 * blocks (KC_MAX fixes the K blocks, and so the bits of every result).
 * Internal to csrc/gemm/: included by files compiled once per PT_ISA.
 */
#ifndef PT_GEMM_TILES_H
#define PT_GEMM_TILES_H

#include <stdint.h>
#include "runtime/simd.h"

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
/* The M and N blocks are chosen at run time from the CPU's caches (gemm.c:
 * cache_blocks); MC_MAX and NC_MAX are the defaults where the CPU does not
 * report them, the LIMITs bound what the caches can ask for. */
#define MC_LIMIT (1024 / MR * MR)
#define NC_LIMIT (512 * NR)

/* K blocks: as few as KC_MAX allows, of near-equal size.  A function of K
 * alone -- the heart of the determinism contract. */
static inline int64_t k_blocks(int64_t K) { return K <= 0 ? 1 : (K + KC_MAX - 1) / KC_MAX; }
static inline int64_t k_block_start(int64_t K, int64_t nb, int64_t b) {
    int64_t base = K / nb, extra = K % nb;
    return b * base + (b < extra ? b : extra);
}

#endif
