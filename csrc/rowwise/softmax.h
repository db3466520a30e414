/* softmax.h -- softmax over the last axis, plain or masked.
 *
 * x and y are `rows` contiguous rows of `n` floats.  A mask is addressed per
 * row through the leading shape of x and the mask's element strides, so a mask
 * broadcast over heads or queries is never materialised: the Python boundary
 * broadcasts it (strides 0 where broadcast) and checks every offset is in bounds.
 */
#ifndef PT_SOFTMAX_H
#define PT_SOFTMAX_H

#include <stdint.h>
#include "runtime/simd.h"

#define PT_MAX_DIMS 16

typedef struct {
    const void *data;            /* uint8_t (bool, nonzero = keep) or float (added) */
    int is_bool;
    int ndim;                    /* leading dims of x: rows = prod(shape[:ndim]) */
    int64_t shape[PT_MAX_DIMS];  /* x's leading shape */
    int64_t stride[PT_MAX_DIMS]; /* mask element stride for each leading dim (0: broadcast) */
    int64_t stride_last;         /* mask element stride along the softmax axis: 0 or 1 */
} pt_mask;

/* Offset of row r's mask values in elements. */
static inline int64_t pt_mask_row_offset(const pt_mask *m, int64_t r) {
    int64_t off = 0;
    for (int d = m->ndim - 1; d >= 0; d--) {
        off += (r % m->shape[d]) * m->stride[d];
        r /= m->shape[d];
    }
    return off;
}

/* y = softmax(x (+ mask)) row by row; y may alias x.
 * mask == NULL: plain softmax, torch's semantics (a row of -inf gives NaN).
 * mask != NULL: masked softmax; a row with nothing kept (every score -inf
 * after masking) gives zeros, never NaN.  NaN in x propagates to its row. */
PT_DECLARE_VARIANTS(void, pt_softmax, (float *y, const float *x, int64_t rows, int64_t n,
                                       const pt_mask *mask, int nthreads))

void pt_softmax_ref(float *y, const float *x, int64_t rows, int64_t n, const pt_mask *mask);

#endif
