/* softmax.h -- softmax over the last axis, plain or masked.
 *
 * x and y are `rows` contiguous rows of `n` floats; a mask (runtime/mask.h) is
 * addressed per row through the leading shape of x.
 */
#ifndef PT_SOFTMAX_H
#define PT_SOFTMAX_H

#include <stdint.h>
#include "runtime/mask.h"
#include "runtime/simd.h"

/* y = softmax(x (+ mask)) row by row; y may alias x.
 * mask == NULL: plain softmax, torch's semantics (a row of -inf gives NaN).
 * mask != NULL: masked softmax; a row with nothing kept (every score -inf
 * after masking) gives zeros, never NaN.  NaN in x propagates to its row. */
PT_DECLARE_VARIANTS(void, pt_softmax, (float *y, const float *x, int64_t rows, int64_t n,
                                       const pt_mask *mask, int nthreads))

void pt_softmax_ref(float *y, const float *x, int64_t rows, int64_t n, const pt_mask *mask);

#endif
