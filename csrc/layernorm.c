/* layernorm.c -- two-pass layer norm: the mean first, then the variance as the
 * mean of squared deviations, which stays accurate when |mean| >> std (one-pass
 * E[x^2] - E[x]^2 cancels).  A Transformer row (d_model floats) sits in L1, so
 * the second and third passes read cache, not memory. */
#include "layernorm.h"
#include "pt_vmath.h"

static inline pt_vf tail_or_full(const float *p, int64_t left) {
    return left >= PT_VL ? pt_vload(p) : pt_vload_tail(p, (size_t)left, 0.0f);
}

static void layer_norm_row(float *y, const float *x, const float *w, const float *b,
                           int64_t n, float eps) {
    int64_t j;
    /* Two accumulators per pass halve the add latency chain; their order is
     * fixed, so a row's result depends only on the row. */
    pt_vf s0 = pt_vzero(), s1 = pt_vzero();
    for (j = 0; j + 2 * PT_VL <= n; j += 2 * PT_VL) {
        s0 = pt_vadd(s0, pt_vload(x + j));
        s1 = pt_vadd(s1, pt_vload(x + j + PT_VL));
    }
    for (; j < n; j += PT_VL) s0 = pt_vadd(s0, tail_or_full(x + j, n - j));
    const float mean = pt_vreduce_add(pt_vadd(s0, s1)) / (float)n;

    const pt_vf vmean = pt_vset1(mean);
    pt_vf q0 = pt_vzero(), q1 = pt_vzero();
    for (j = 0; j + 2 * PT_VL <= n; j += 2 * PT_VL) {
        pt_vf d0 = pt_vsub(pt_vload(x + j), vmean), d1 = pt_vsub(pt_vload(x + j + PT_VL), vmean);
        q0 = pt_vfmadd(d0, d0, q0);
        q1 = pt_vfmadd(d1, d1, q1);
    }
    for (; j < n; j += PT_VL) {
        int64_t left = n - j;
        pt_vf d = pt_vsub(tail_or_full(x + j, left), vmean);
        if (left < PT_VL) d = pt_vload_tail((const float *)&d, (size_t)left, 0.0f);
        q0 = pt_vfmadd(d, d, q0);
    }
    const float var = pt_vreduce_add(pt_vadd(q0, q1)) / (float)n;
    const float rstd = 1.0f / sqrtf(var + eps);

    const pt_vf vr = pt_vset1(rstd);
    for (j = 0; j < n; j += PT_VL) {
        int64_t left = n - j;
        pt_vf v = pt_vmul(pt_vsub(tail_or_full(x + j, left), vmean), vr);
        if (w) v = pt_vmul(v, tail_or_full(w + j, left));
        if (b) v = pt_vadd(v, tail_or_full(b + j, left));
        if (left >= PT_VL) pt_vstore(y + j, v);
        else pt_vstore_tail(y + j, v, (size_t)left);
    }
}

void PT_FN(pt_layer_norm)(float *y, const float *x, const float *weight, const float *bias,
                          int64_t rows, int64_t n, float eps, int nthreads) {
    (void)nthreads;
#pragma omp parallel for num_threads(nthreads) if(rows * n > 32768) schedule(static)
    for (int64_t r = 0; r < rows; r++)
        layer_norm_row(y + r * n, x + r * n, weight, bias, n, eps);
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
