/* rope.h -- rotary position embedding (Su et al. 2021, "RoFormer"), as the
 * Llama family applies it to queries and keys.
 *
 * Each head vector of D floats (D even) is split into D/2 pairs; pair i of a
 * vector at absolute position p is rotated by the angle p * inv_freq[i]:
 *
 *   (a, b) -> (a cos - b sin, b cos + a sin)
 *
 * Which elements form pair i is the layout:
 *   PT_ROPE_HALVES  (i, i + D/2)  Hugging Face's rotate_half;
 *   PT_ROPE_PAIRS   (2i, 2i + 1)  the original Meta layout, GGUF / llama.cpp.
 *
 * The angle is the float32 product (float)p * inv_freq[i] and each output is
 * computed as transformers computes it in float32 -- x*cos and x*sin rounded,
 * then added -- so the results differ from transformers' only by the
 * cos/sin (libm's sinf/cosf against torch's; both within ~1 ulp).
 */
#ifndef PT_ROPE_H
#define PT_ROPE_H

#include <stdint.h>
#include "runtime/simd.h"

enum { PT_ROPE_HALVES = 0, PT_ROPE_PAIRS = 1 };

/* rows positions, each with `heads` head vectors of D floats laid out one
 * after another: row r reads x + r*ldx (heads*D floats) and writes
 * y + r*ldy, at position positions[r].  inv_freq: D/2 floats.  y may be x
 * (ldy == ldx: in place).  Rows are independent: the result of a row does not
 * depend on the others or on the thread count. */
PT_DECLARE_VARIANTS(void, pt_rope, (float *y, int64_t ldy, const float *x, int64_t ldx,
                                    const int64_t *positions, const float *inv_freq,
                                    int64_t rows, int64_t heads, int64_t D, int layout,
                                    int nthreads))

/* Naive twin: the same float32 angle, cos/sin and the rotation in double. */
void pt_rope_ref(float *y, int64_t ldy, const float *x, int64_t ldx, const int64_t *positions,
                 const float *inv_freq, int64_t rows, int64_t heads, int64_t D, int layout);

#endif
