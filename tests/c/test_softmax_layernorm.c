/* Softmax (plain and masked) and layer norm on every path against the naive
 * twins, at sizes around every vector width. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"

static const int64_t sizes[] = {1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 127, 257, 1000, 4099};

static void test_softmax(const pt_kernel_table *k) {
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t n = sizes[s], rows = 5;
        float *x = malloc(sizeof(float) * rows * n), *y = malloc(sizeof(float) * rows * n),
              *r = malloc(sizeof(float) * rows * n), *fm = malloc(sizeof(float) * n);
        uint8_t *bm = malloc((size_t)n);
        pt_test_fill(x, rows * n, (uint64_t)n);
        for (int64_t i = 0; i < rows * n; i++) x[i] *= 10.0f;
        pt_test_fill(fm, n, 7);
        for (int64_t j = 0; j < n; j++) bm[j] = (uint8_t)((j * 7 + 3) % 5 != 0);

        k->softmax(y, x, rows, n, NULL, 2);
        pt_softmax_ref(r, x, rows, n, NULL);
        double d = pt_test_max_abs_diff(y, r, rows * n);
        pt_test_check(d <= 1e-6, "%s softmax n=%lld diff %g", k->name, (long long)n, d);

        /* a bool mask broadcast over rows (stride 0), then an additive one */
        pt_mask m = {0};
        m.data = bm; m.is_bool = 1; m.ndim = 1; m.shape[0] = rows; m.stride[0] = 0;
        m.stride_last = 1;
        k->softmax(y, x, rows, n, &m, 1);
        pt_softmax_ref(r, x, rows, n, &m);
        d = pt_test_max_abs_diff(y, r, rows * n);
        pt_test_check(d <= 1e-6, "%s bool-masked softmax n=%lld diff %g", k->name, (long long)n, d);

        m.data = fm; m.is_bool = 0;
        k->softmax(y, x, rows, n, &m, 2);
        pt_softmax_ref(r, x, rows, n, &m);
        d = pt_test_max_abs_diff(y, r, rows * n);
        pt_test_check(d <= 1e-6, "%s float-masked softmax n=%lld diff %g", k->name, (long long)n, d);

        /* nothing kept: zeros, never NaN */
        memset(bm, 0, (size_t)n);
        m.data = bm; m.is_bool = 1;
        k->softmax(y, x, rows, n, &m, 2);
        int zeros = 1;
        for (int64_t i = 0; i < rows * n; i++) zeros &= y[i] == 0.0f;
        pt_test_check(zeros, "%s fully masked rows n=%lld not zero", k->name, (long long)n);
        free(x); free(y); free(r); free(fm); free(bm);
    }
}

static void test_layer_norm(const pt_kernel_table *k) {
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t n = sizes[s], rows = 4;
        float *x = malloc(sizeof(float) * rows * n), *y = malloc(sizeof(float) * rows * n),
              *r = malloc(sizeof(float) * rows * n), *w = malloc(sizeof(float) * n),
              *b = malloc(sizeof(float) * n);
        pt_test_fill(x, rows * n, (uint64_t)n + 1);
        for (int64_t i = 0; i < rows * n; i++) x[i] = 100.0f + 3.0f * x[i]; /* |mean| >> std */
        pt_test_fill(w, n, 3);
        pt_test_fill(b, n, 4);
        for (int with = 0; with < 2; with++) {
            k->layer_norm(y, x, with ? w : NULL, with ? b : NULL, rows, n, 1e-5f, 2);
            pt_layer_norm_ref(r, x, with ? w : NULL, with ? b : NULL, rows, n, 1e-5f);
            double d = pt_test_max_abs_diff(y, r, rows * n);
            /* n = 1: var = 0, output is bias; otherwise O(1) outputs */
            pt_test_check(d <= 2e-4, "%s layer_norm n=%lld affine=%d diff %g", k->name,
                          (long long)n, with, d);
        }
        free(x); free(y); free(r); free(w); free(b);
    }
}

static void test_activations(const pt_kernel_table *k) {
    int64_t n = 1037;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n),
          *r = malloc(sizeof(float) * n);
    pt_test_fill(x, n, 11);
    for (int64_t i = 0; i < n; i++) x[i] *= 12.0f;
    k->relu(y, x, n, 2);
    pt_relu_ref(r, x, n);
    pt_test_check(pt_test_max_abs_diff(y, r, n) == 0.0, "%s relu", k->name);
    k->gelu(y, x, n, 2);
    pt_gelu_ref(r, x, n);
    double d = pt_test_max_abs_diff(y, r, n);
    pt_test_check(d <= 4e-6, "%s gelu diff %g", k->name, d);
    k->gelu_tanh(y, x, n, 2);
    pt_gelu_tanh_ref(r, x, n);
    d = pt_test_max_abs_diff(y, r, n);
    pt_test_check(d <= 4e-6, "%s gelu_tanh diff %g", k->name, d);
    k->silu(y, x, n, 2);
    pt_silu_ref(r, x, n);
    d = pt_test_max_abs_diff(y, r, n);
    pt_test_check(d <= 4e-6, "%s silu diff %g", k->name, d);
    free(x); free(y); free(r);
}

int main(void) {
    for (const pt_kernel_table **p = pt_test_paths(); *p; p++) {
        test_softmax(*p);
        test_layer_norm(*p);
        test_activations(*p);
    }
    return pt_test_summary();
}
