/* pack.h -- the packed operands of the GEMM (internal to csrc/gemm/ and to
 * kernels that lay out a GEMM operand, such as attention's key blocks).
 *
 * Packed layouts (both zero padded to whole tiles, in our own buffers):
 *   B: panels of NR columns; panel p is K x NR, row k at p*K*NR + k*NR.
 *      Independent of kc, so B is packed once (pt_sgemm_pack_b) and any
 *      K block of a panel is the contiguous run starting at row pc.
 *   A: per call and thread, an mc x kc block as micro-panels of MR rows;
 *      micro-panel q is kc x MR, element (r, k) at q*kc*MR + k*MR + r.
 * Packing is a pure copy: its order never touches a result.
 */
#ifndef PT_GEMM_PACK_H
#define PT_GEMM_PACK_H

#include <stdint.h>
#include "gemm/tiles.h"

/* Each of the three objects of pack.c exports its own (pt_gemm_pack_a_block_avx2, ...). */
#define pack_b_panel PT_FN(pt_gemm_pack_b_panel)
#define pack_b_all PT_FN(pt_gemm_pack_b_all)
#define pack_a_block PT_FN(pt_gemm_pack_a_block)

/* One NR-column panel of op(B), columns j0 .. j0+nr-1, all K rows; columns
 * nr .. NR-1 are zero.  dst: K x NR. */
void pack_b_panel(float *dst, const float *B, int64_t ldb, int trans_b, int64_t K, int64_t j0,
                  int64_t nr);
/* Packs all of op(B) (K x N) into ceil(N/NR) panels. dst: npanels x K x NR. */
void pack_b_all(float *dst, const float *B, int64_t ldb, int trans_b, int64_t K, int64_t N,
                int nthreads);
/* An mc x kc block of op(A) at (i0, k0) as micro-panels of MR rows; rows
 * past mc are zero.  dst: ceil(mc/MR) x kc x MR. */
void pack_a_block(float *dst, const float *A, int64_t lda, int trans_a, int64_t i0, int64_t mc,
                  int64_t k0, int64_t kc);

#endif
