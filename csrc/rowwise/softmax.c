/* softmax.c -- max-subtracted softmax over rows, with optional masks.
 *
 * Three passes over a row that stays in L1: (1) masked max, (2) exp(x - max)
 * written to y while summing, (3) scale by 1/sum.  Sums use PT_VL lane
 * accumulators in a fixed order, so a row's result depends only on the row. */
#include "rowwise/softmax.h"
#include "runtime/vmath.h"

/* Load x[j..j+len) with the mask applied: bool False -> -inf (whatever x
 * holds there, as masked_fill), float -> added.  Lanes past len read -inf. */
static inline pt_vf masked_load(const float *x, const pt_mask *m, const void *mrow,
                                int64_t j, size_t len) {
    pt_vf v = len == PT_VL ? pt_vload(x + j) : pt_vload_tail(x + j, len, -INFINITY);
    if (!m) return v;
    if (len == PT_VL && m->stride_last == 1) {
        if (m->is_bool) return pt_vkeep((const uint8_t *)mrow + j, v);
        return pt_vadd(v, pt_vload((const float *)mrow + j));
    }
    /* a tail, or one mask value for the whole row (stride_last == 0) */
    float xv[PT_VL];
    pt_vstore(xv, v);
    for (size_t l = 0; l < len; l++) {
        int64_t at = m->stride_last * (j + (int64_t)l);
        if (m->is_bool) xv[l] = ((const uint8_t *)mrow)[at] ? xv[l] : -INFINITY;
        else xv[l] += ((const float *)mrow)[at];
    }
    return pt_vload(xv);
}

static void softmax_row(float *y, const float *x, int64_t n, const pt_mask *m,
                        const void *mrow) {
    int64_t j;
    /* pass 1: max of the masked scores.  The fast max may skip NaN lanes;
     * a NaN still reaches every output through the sum in pass 2. */
    pt_vf acc = pt_vset1(-INFINITY);
    for (j = 0; j < n; j += PT_VL) {
        size_t len = (size_t)(n - j < PT_VL ? n - j : PT_VL);
        acc = pt_vmax_fast(acc, masked_load(x, m, mrow, j, len));
    }
    float mx = pt_vreduce_max(acc);
    if (m && mx == -INFINITY) { /* nothing kept: zeros, unless a kept score is NaN */
        float fill = 0.0f;
        for (j = 0; j < n; j += PT_VL) {
            size_t len = (size_t)(n - j < PT_VL ? n - j : PT_VL);
            float lanes[PT_VL];
            pt_vstore(lanes, masked_load(x, m, mrow, j, len));
            for (size_t l = 0; l < len; l++)
                if (lanes[l] != lanes[l]) fill = NAN;
        }
        for (j = 0; j < n; j++) y[j] = fill;
        return;
    }
    /* pass 2: e = exp(x - max) into y, summed in PT_VL lanes (tail lanes
     * were loaded as -inf, so they add exp(-inf) = 0) */
    const pt_vf vm = pt_vset1(mx);
    pt_vf vsum = pt_vzero();
    for (j = 0; j < n; j += PT_VL) {
        size_t len = (size_t)(n - j < PT_VL ? n - j : PT_VL);
        pt_vf e = pt_vexp(pt_vsub(masked_load(x, m, mrow, j, len), vm));
        vsum = pt_vadd(vsum, e);
        if (len == PT_VL) pt_vstore(y + j, e);
        else pt_vstore_tail(y + j, e, len);
    }
    /* pass 3: normalise */
    const pt_vf inv = pt_vset1(1.0f / pt_vreduce_add(vsum));
    for (j = 0; j + PT_VL <= n; j += PT_VL) pt_vstore(y + j, pt_vmul(pt_vload(y + j), inv));
    if (j < n)
        pt_vstore_tail(y + j, pt_vmul(pt_vload_tail(y + j, (size_t)(n - j), 0.0f), inv),
                       (size_t)(n - j));
}

void PT_FN(pt_softmax)(float *y, const float *x, int64_t rows, int64_t n, const pt_mask *mask,
                       int nthreads) {
    (void)nthreads;
    const int64_t elem = mask ? (mask->is_bool ? 1 : (int64_t)sizeof(float)) : 0;
#pragma omp parallel for num_threads(nthreads) if(rows * n > 32768) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const void *mrow = mask ? (const char *)mask->data + elem * pt_mask_row_offset(mask, r) : NULL;
        softmax_row(y + r * n, x + r * n, n, mask, mrow);
    }
}

#if PT_ISA == PT_ISA_SCALAR
void pt_softmax_ref(float *y, const float *x, int64_t rows, int64_t n, const pt_mask *mask) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        const uint8_t *b = NULL;
        const float *f = NULL;
        if (mask) {
            int64_t off = pt_mask_row_offset(mask, r);
            if (mask->is_bool) b = (const uint8_t *)mask->data + off;
            else f = (const float *)mask->data + off;
        }
        double mx = -INFINITY;
        int nan = 0;
        for (int64_t j = 0; j < n; j++) {
            double v = (double)xr[j];
            if (b && !b[mask->stride_last * j]) v = -INFINITY;
            if (f) v += (double)f[mask->stride_last * j];
            if (v != v) nan = 1;
            if (v > mx) mx = v;
        }
        if (mask && !nan && mx == -INFINITY) {
            for (int64_t j = 0; j < n; j++) yr[j] = 0.0f;
            continue;
        }
        double sum = 0.0;
        for (int64_t j = 0; j < n; j++) {
            double v = (double)xr[j];
            if (b && !b[mask->stride_last * j]) v = -INFINITY;
            if (f) v += (double)f[mask->stride_last * j];
            sum += exp(v - (nan ? NAN : mx));
        }
        for (int64_t j = 0; j < n; j++) {
            double v = (double)xr[j];
            if (b && !b[mask->stride_last * j]) v = -INFINITY;
            if (f) v += (double)f[mask->stride_last * j];
            yr[j] = (float)(exp(v - (nan ? NAN : mx)) / sum);
        }
    }
}
#endif
