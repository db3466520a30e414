/* rmsnorm.c -- RMS norm in two passes over a row: the sum of squares, then
 * the scaled store.  A decoder row (d_model floats) sits in L1, so the second
 * pass reads cache, not memory. */
#include "rowwise/rmsnorm.h"
#include "runtime/vmath.h"

static inline pt_vf tail_or_full(const float *p, int64_t left) {
    return left >= PT_VL ? pt_vload(p) : pt_vload_tail(p, (size_t)left, 0.0f);
}

/* The sum of squares runs over blocks of PT_RMS_BLOCK floats in float vector
 * accumulators, the block totals added in double: the rounding error grows
 * with the block length, not the row length. */
#define PT_RMS_BLOCK 1024

static double sum_of_squares(const float *x, int64_t n) {
    double total = 0.0;
    for (int64_t b = 0; b < n; b += PT_RMS_BLOCK) {
        const int64_t end = b + PT_RMS_BLOCK < n ? b + PT_RMS_BLOCK : n;
        /* two accumulators halve the FMA latency chain; fixed order */
        pt_vf s0 = pt_vzero(), s1 = pt_vzero();
        int64_t j = b;
        for (; j + 2 * PT_VL <= end; j += 2 * PT_VL) {
            pt_vf d0 = pt_vload(x + j), d1 = pt_vload(x + j + PT_VL);
            s0 = pt_vfmadd(d0, d0, s0);
            s1 = pt_vfmadd(d1, d1, s1);
        }
        for (; j < end; j += PT_VL) {
            pt_vf d = tail_or_full(x + j, end - j); /* tail lanes read 0 */
            s0 = pt_vfmadd(d, d, s0);
        }
        total += (double)pt_vreduce_add(pt_vadd(s0, s1));
    }
    return total;
}

static void rms_norm_row(float *y, const float *x, const float *w, int64_t n, float eps) {
    const float mean_sq = (float)(sum_of_squares(x, n) / (double)n);
    const float rrms = 1.0f / sqrtf(mean_sq + eps);
    const pt_vf vr = pt_vset1(rrms);
    for (int64_t j = 0; j < n; j += PT_VL) {
        int64_t left = n - j;
        pt_vf v = pt_vmul(tail_or_full(x + j, left), vr);
        if (w) v = pt_vmul(v, tail_or_full(w + j, left));
        if (left >= PT_VL) pt_vstore(y + j, v);
        else pt_vstore_tail(y + j, v, (size_t)left);
    }
}

void PT_FN(pt_rms_norm)(float *y, const float *x, const float *weight, int64_t rows, int64_t n,
                        float eps, int nthreads) {
    (void)nthreads;
#pragma omp parallel for num_threads(nthreads) if(rows * n > 32768) schedule(static)
    for (int64_t r = 0; r < rows; r++)
        rms_norm_row(y + r * n, x + r * n, weight, n, eps);
}

#if PT_ISA == PT_ISA_SCALAR
void pt_rms_norm_ref(float *y, const float *x, const float *weight, int64_t rows, int64_t n,
                     float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        double ms = 0.0;
        for (int64_t j = 0; j < n; j++) ms += (double)xr[j] * xr[j];
        ms /= (double)n;
        double rrms = 1.0 / sqrt(ms + (double)eps);
        for (int64_t j = 0; j < n; j++) {
            double v = xr[j] * rrms;
            if (weight) v *= weight[j];
            y[r * n + j] = (float)v;
        }
    }
}
#endif
