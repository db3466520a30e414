/* gemv.c -- one to three rows of A against packed B panels (decoding),
 * streamed from the first panel to the last. */
#include "gemm/gemv.h"
#include "gemm/pack.h"
#include "gemm/ukernel_f32.h"

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
void gemv_packed(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a,
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
