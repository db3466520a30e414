/* RMS norm, rotary position embedding and SiLU-and-multiply on every path
 * against their naive twins, at sizes around every vector width; a row's bits
 * alone and in a batch, at 1 and 2 threads, and in place. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"

static const int64_t sizes[] = {1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 127, 257, 1000, 1025, 4099};

static double max_rel_diff(const float *a, const float *b, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) != isnan(b[i])) return NAN;
        double d = fabs((double)a[i] - (double)b[i]) / (1.0 + fabs((double)b[i]));
        if (d > m) m = d;
    }
    return m;
}

static void test_rms_norm(const pt_kernel_table *k) {
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t n = sizes[s], rows = 9;
        float *x = malloc(sizeof(float) * rows * n), *y = malloc(sizeof(float) * rows * n),
              *r = malloc(sizeof(float) * rows * n), *w = malloc(sizeof(float) * n),
              *one = malloc(sizeof(float) * n);
        pt_test_fill(x, rows * n, (uint64_t)n + 5);
        for (int64_t i = 0; i < rows * n; i++) x[i] = 3.0f * x[i] + (i % 3 ? 0.0f : 50.0f);
        pt_test_fill(w, n, 6);
        for (int with = 0; with < 2; with++) {
            k->rms_norm(y, x, with ? w : NULL, rows, n, 1e-6f, 2);
            pt_rms_norm_ref(r, x, with ? w : NULL, rows, n, 1e-6f);
            double d = max_rel_diff(y, r, rows * n);
            pt_test_check(d <= 2e-6, "%s rms_norm n=%lld weight=%d rel diff %g", k->name,
                          (long long)n, with, d);
            /* the last row alone, at one thread: the same bits */
            k->rms_norm(one, x + (rows - 1) * n, with ? w : NULL, 1, n, 1e-6f, 1);
            pt_test_check(!memcmp(one, y + (rows - 1) * n, sizeof(float) * n),
                          "%s rms_norm n=%lld: a row alone differs from the batch", k->name,
                          (long long)n);
        }
        /* in place */
        memcpy(r, x, sizeof(float) * rows * n);
        k->rms_norm(r, r, w, rows, n, 1e-6f, 2);
        k->rms_norm(y, x, w, rows, n, 1e-6f, 2);
        pt_test_check(!memcmp(r, y, sizeof(float) * rows * n), "%s rms_norm n=%lld in place",
                      k->name, (long long)n);
        free(x); free(y); free(r); free(w); free(one);
    }
    /* a zero row: x * rsqrt(eps) = zeros, not NaN */
    float z[5] = {0}, out[5];
    k->rms_norm(out, z, NULL, 1, 5, 1e-6f, 1);
    int zeros = 1;
    for (int i = 0; i < 5; i++) zeros &= out[i] == 0.0f;
    pt_test_check(zeros, "%s rms_norm of a zero row", k->name);
}

static void test_rope(const pt_kernel_table *k) {
    static const int64_t dims[] = {2, 4, 6, 8, 18, 32, 34, 64, 128, 130, 258};
    static const int64_t heads_of[] = {1, 3};
    static const int64_t starts[] = {0, 7, 1000, 30000};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
    for (size_t hi = 0; hi < 2; hi++)
    for (int layout = PT_ROPE_HALVES; layout <= PT_ROPE_PAIRS; layout++) {
        const int64_t D = dims[di], H = heads_of[hi], rows = 7, pad = 5;
        const int64_t ld = H * D + pad;  /* rows further apart than their heads */
        float *x = malloc(sizeof(float) * rows * ld), *y = malloc(sizeof(float) * rows * ld),
              *r = malloc(sizeof(float) * rows * ld), *inv = malloc(sizeof(float) * (D / 2)),
              *one = malloc(sizeof(float) * H * D);
        int64_t pos[7];
        pt_test_fill(x, rows * ld, (uint64_t)(D * 10 + H));
        for (int64_t i = 0; i < D / 2; i++)
            inv[i] = 1.0f / powf(10000.0f, (float)(2 * i) / (float)D);
        for (size_t si = 0; si < sizeof starts / sizeof starts[0]; si++) {
            for (int64_t t = 0; t < rows; t++) pos[t] = starts[si] + t;
            memset(y, 0, sizeof(float) * rows * ld);
            memset(r, 0, sizeof(float) * rows * ld);
            k->rope(y, ld, x, ld, pos, inv, rows, H, D, layout, 2);
            pt_rope_ref(r, ld, x, ld, pos, inv, rows, H, D, layout);
            double d = pt_test_max_abs_diff(y, r, rows * ld);
            pt_test_check(d <= 1e-6, "%s rope D=%lld H=%lld layout=%d start=%lld diff %g",
                          k->name, (long long)D, (long long)H, layout, (long long)starts[si],
                          d);
            /* the padding between rows is never written */
            int untouched = 1;
            for (int64_t t = 0; t < rows; t++)
                for (int64_t j = H * D; j < ld; j++) untouched &= y[t * ld + j] == 0.0f;
            pt_test_check(untouched, "%s rope D=%lld wrote between rows", k->name, (long long)D);
            /* the last row alone, contiguous, at one thread: the same bits */
            k->rope(one, H * D, x + (rows - 1) * ld, H * D, pos + rows - 1, inv, 1, H, D,
                    layout, 1);
            pt_test_check(!memcmp(one, y + (rows - 1) * ld, sizeof(float) * H * D),
                          "%s rope D=%lld: a row alone differs from the batch", k->name,
                          (long long)D);
            /* in place */
            memcpy(r, x, sizeof(float) * rows * ld);
            k->rope(r, ld, r, ld, pos, inv, rows, H, D, layout, 2);
            int same = 1;
            for (int64_t t = 0; t < rows; t++)
                same &= !memcmp(r + t * ld, y + t * ld, sizeof(float) * H * D);
            pt_test_check(same, "%s rope D=%lld in place differs", k->name, (long long)D);
        }
        free(x); free(y); free(r); free(inv); free(one);
    }
}

static void test_silu_and_mul(const pt_kernel_table *k) {
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t F = sizes[s], rows = 6;
        float *x = malloc(sizeof(float) * rows * 2 * F), *y = malloc(sizeof(float) * rows * F),
              *r = malloc(sizeof(float) * rows * F), *one = malloc(sizeof(float) * F);
        pt_test_fill(x, rows * 2 * F, (uint64_t)F + 9);
        for (int64_t i = 0; i < rows * 2 * F; i++) x[i] *= 12.0f;
        if (F > 3) { x[0] = -100.0f; x[1] = 100.0f; x[2] = NAN; }  /* saturation, NaN */
        k->silu_and_mul(y, x, rows, F, 2);
        pt_silu_and_mul_ref(r, x, rows, F);
        double d = max_rel_diff(y, r, rows * F);
        pt_test_check(d <= 1e-6, "%s silu_and_mul F=%lld rel diff %g", k->name, (long long)F, d);
        k->silu_and_mul(one, x + (rows - 1) * 2 * F, 1, F, 1);
        pt_test_check(!memcmp(one, y + (rows - 1) * F, sizeof(float) * F),
                      "%s silu_and_mul F=%lld: a row alone differs", k->name, (long long)F);
        free(x); free(y); free(r); free(one);
    }
}

int main(void) {
    for (const pt_kernel_table **p = pt_test_paths(); *p; p++) {
        test_rms_norm(*p);
        test_rope(*p);
        test_silu_and_mul(*p);
    }
    return pt_test_summary();
}
