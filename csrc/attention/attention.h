/* attention.h -- scaled dot-product attention, fused (Vaswani et al. 2017,
 * section 3.2.1):
 *
 *   out[b] (L x Ev) = softmax(q[b] k[b]^T * scale + mask[b]) v[b]
 *
 * computed FlashAttention-style: for a block of queries, the keys are visited
 * block by block and the softmax is carried online (running row max m and sum
 * l, the partial output rescaled when m grows), so no L x S score matrix is
 * ever stored.  Working memory is a per-thread scratch whose size depends on
 * the head dims and block sizes only.
 *
 * Batches: q is (Bq, L, E) contiguous, k (Bk, S, E) and v (Bv, S, Ev) with
 * contiguous rows and k_bs, v_bs elements from one batch to the next (S*E,
 * S*Ev when contiguous; more for the first S rows of a longer buffer, such as
 * a KV cache); batch b of the result reads q[q_index[b]], k[k_index[b]],
 * v[v_index[b]] (NULL index: b itself), which is how broadcast batch/head
 * dims reach the kernel without copies.  out is (B, L, Ev).
 *
 * Masks: `mask` (may be NULL) addresses the B*L score rows through its leading
 * shape (the batch shape followed by L) and element strides (runtime/mask.h);
 * stride_last (0 or 1) runs along the keys.  Bool: nonzero = may attend (the
 * SDPA convention); float: added to the scaled scores.  `causal`: query i
 * attends keys j <= i (top-left aligned, torch's tril(ones(L, S))); key blocks
 * entirely above the diagonal are skipped.  A query with nothing to attend to
 * gives a row of zeros, never NaN.
 *
 * Determinism: the key blocks are visited in a fixed order with a fixed size
 * (PT_ATTN_BK), and every sum for a query row runs in an order set by that row
 * and S alone, so a row's output is bit-identical whatever L, the batch or the
 * thread count.
 */
#ifndef PT_ATTENTION_H
#define PT_ATTENTION_H

#include <stdint.h>
#include "runtime/mask.h"
#include "runtime/simd.h"
#include "runtime/status.h"

#define PT_ATTN_BK 128 /* keys per block: fixes the order of every row's sums */
#define PT_ATTN_BQ 64  /* queries per work unit (free: rows never interact) */

/* Returns PT_OK, or PT_ERR_NOMEM when a thread's scratch could not be
 * allocated (out is then unspecified: the other threads may have written
 * their units). */
PT_DECLARE_VARIANTS(int, pt_attention,
                    (float *out, const float *q, const int64_t *q_index, const float *k,
                     const int64_t *k_index, int64_t k_bs, const float *v,
                     const int64_t *v_index, int64_t v_bs, int64_t B, int64_t L, int64_t S, int64_t E, int64_t Ev, float scale,
                     const pt_mask *mask, int causal, int nthreads))

/* Naive twin: one query row at a time, scores in double, two-pass softmax. */
void pt_attention_ref(float *out, const float *q, const int64_t *q_index, const float *k,
                      const int64_t *k_index, int64_t k_bs, const float *v,
                      const int64_t *v_index, int64_t v_bs, int64_t B, int64_t L, int64_t S, int64_t E, int64_t Ev, float scale,
                      const pt_mask *mask, int causal);

#endif
