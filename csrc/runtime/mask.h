/* mask.h -- how a kernel finds the mask values of one row of scores.
 *
 * A mask is addressed per row through the leading shape of the scores and the
 * mask's element strides, so a mask broadcast over heads or queries is never
 * materialised: the Python boundary broadcasts it (strides 0 where broadcast)
 * and checks every offset is in bounds.  Softmax and attention read it alike.
 */
#ifndef PT_MASK_H
#define PT_MASK_H

#include <stdint.h>

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

#endif
