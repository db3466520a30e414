/* layernorm.c -- two-pass layer norm.  A Transformer row (d_model floats)
 * sits in L1, so the second and third passes read cache, not memory. */
#include "rowwise/layernorm.h"
#include "runtime/vmath.h"

static inline pt_vf tail_or_full(const float *p, int64_t left) {
    return left >= PT_VL ? pt_vload(p) : pt_vload_tail(p, (size_t)left, 0.0f);
}

/* Sums run over blocks of PT_LN_BLOCK floats in float vector accumulators; the
 * block totals are added in double.  Rounding error then grows with the block
 * length, not the row length, so rows of 10^5+ stay accurate. */
#define PT_LN_BLOCK 1024

static double block_sum(const float *x, int64_t n, float shift, int squares) {
    const pt_vf vs = pt_vset1(shift);
    double total = 0.0;
    for (int64_t b = 0; b < n; b += PT_LN_BLOCK) {
        const int64_t end = b + PT_LN_BLOCK < n ? b + PT_LN_BLOCK : n;
        /* two accumulators halve the add latency chain; fixed order */
        pt_vf s0 = pt_vzero(), s1 = pt_vzero();
        int64_t j = b;
        for (; j + 2 * PT_VL <= end; j += 2 * PT_VL) {
            pt_vf d0 = pt_vsub(pt_vload(x + j), vs), d1 = pt_vsub(pt_vload(x + j + PT_VL), vs);
            s0 = squares ? pt_vfmadd(d0, d0, s0) : pt_vadd(s0, d0);
            s1 = squares ? pt_vfmadd(d1, d1, s1) : pt_vadd(s1, d1);
        }
        for (; j < end; j += PT_VL) {
            size_t len = (size_t)(end - j < PT_VL ? end - j : PT_VL);
            /* tail lanes read as `shift`, so they contribute exactly zero */
            pt_vf d = pt_vsub(len == PT_VL ? pt_vload(x + j) : pt_vload_tail(x + j, len, shift), vs);
            s0 = squares ? pt_vfmadd(d, d, s0) : pt_vadd(s0, d);
        }
        total += (double)pt_vreduce_add(pt_vadd(s0, s1));
    }
    return total;
}

static void layer_norm_row(float *y, const float *x, const float *w, const float *b,
                           int64_t n, double inv_n, float eps) {
    /* pass 1: the mean, summed as deviations from the row's first element (a
     * large offset never reaches the float accumulators) and kept as an
     * unevaluated sum hi + lo of two floats: a mean of 1e6 rounded to one
     * float is up to 0.03 off, and every output with it.
     * pass 2: the variance as the mean of squared deviations from hi, less
     * lo^2 (E[(x-hi)^2] = var + (mean-hi)^2), accurate when |mean| >> std
     * where the one-pass E[x^2] - E[x]^2 cancels.
     * pass 3: (x - hi - lo) * rstd as (x - hi) * rstd - lo * rstd. */
    const double mean = (double)x[0] + block_sum(x, n, x[0], 0) * inv_n;
    const float hi = (float)mean, lo = (float)(mean - (double)hi);
    const float var = (float)(block_sum(x, n, hi, 1) * inv_n - (double)lo * lo);
    const float rstd = 1.0f / sqrtf((var > 0.0f ? var : 0.0f) + eps);

    const pt_vf vh = pt_vset1(hi), vr = pt_vset1(rstd), vlr = pt_vset1(-lo * rstd);
    for (int64_t j = 0; j < n; j += PT_VL) {
        int64_t left = n - j;
        pt_vf v = pt_vfmadd(pt_vsub(tail_or_full(x + j, left), vh), vr, vlr);
        if (w) v = pt_vmul(v, tail_or_full(w + j, left));
        if (b) v = pt_vadd(v, tail_or_full(b + j, left));
        if (left >= PT_VL) pt_vstore(y + j, v);
        else pt_vstore_tail(y + j, v, (size_t)left);
    }
}

void PT_FN(pt_layer_norm)(float *y, const float *x, const float *weight, const float *bias,
                          int64_t rows, int64_t n, float eps, int nthreads) {
    (void)nthreads;
    const double inv_n = 1.0 / (double)n;
#pragma omp parallel for num_threads(nthreads) if(rows * n > 32768) schedule(static)
    for (int64_t r = 0; r < rows; r++)
        layer_norm_row(y + r * n, x + r * n, weight, bias, n, inv_n, eps);
}

#if PT_ISA == PT_ISA_SCALAR
void pt_layer_norm_ref(float *y, const float *x, const float *weight, const float *bias,
                       int64_t rows, int64_t n, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        double mean = 0.0, var = 0.0;
        for (int64_t j = 0; j < n; j++) mean += xr[j];
        mean /= (double)n;
        for (int64_t j = 0; j < n; j++) var += (xr[j] - mean) * (xr[j] - mean);
        var /= (double)n;
        double rstd = 1.0 / sqrt(var + (double)eps);
        for (int64_t j = 0; j < n; j++) {
            double v = (xr[j] - mean) * rstd;
            if (weight) v *= weight[j];
            if (bias) v += bias[j];
            y[r * n + j] = (float)v;
        }
    }
}
#endif
