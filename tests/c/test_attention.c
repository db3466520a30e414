/* Fused attention on every path against the naive twin: no mask, bool, float
 * and causal masks, L != S, head dims around every vector width, broadcast
 * batches, k and v strided as in a KV cache, fully masked rows, 1 and 2
 * threads; and the determinism contract: a query row is bit-identical
 * whatever L and the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"

enum { MASK_NONE, MASK_BOOL, MASK_FLOAT, MASK_CAUSAL };
static const char *mask_names[] = {"none", "bool", "float", "causal"};

typedef struct {
    int64_t B, L, S, E, Ev;
    int kind;
    int full_rows; /* bool mask: also mask out every key of some rows */
} problem;

/* Scores spread like a trained model's: q, k in [-2, 2). */
static void fill_scaled(float *x, int64_t n, uint64_t seed, float s) {
    pt_test_fill(x, n, seed);
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

static void run(const pt_kernel_table *kt, problem p, int nthreads) {
    /* q is broadcast over the batch's first half (two q batches, index b % 2);
     * k, v are per batch. */
    const int64_t Bq = p.B > 1 ? 2 : 1;
    float *q = malloc(sizeof(float) * Bq * p.L * p.E), *k = malloc(sizeof(float) * p.B * p.S * p.E),
          *v = malloc(sizeof(float) * p.B * p.S * p.Ev), *y = malloc(sizeof(float) * p.B * p.L * p.Ev),
          *r = malloc(sizeof(float) * p.B * p.L * p.Ev);
    int64_t *qi = malloc(sizeof(int64_t) * p.B);
    for (int64_t b = 0; b < p.B; b++) qi[b] = b % Bq;
    fill_scaled(q, Bq * p.L * p.E, 1 + p.E, 2.0f);
    fill_scaled(k, p.B * p.S * p.E, 2 + p.S, 2.0f);
    fill_scaled(v, p.B * p.S * p.Ev, 3 + p.Ev, 1.0f);
    /* bool mask (L, S) broadcast over the batch; float mask (B, 1, S) */
    uint8_t *bm = malloc((size_t)(p.L * p.S));
    float *fm = malloc(sizeof(float) * p.B * p.S);
    for (int64_t i = 0; i < p.L; i++)
        for (int64_t j = 0; j < p.S; j++)
            bm[i * p.S + j] = (uint8_t)(p.full_rows && i % 3 == 1 ? 0 : (i * 7 + j * 3) % 5 != 0);
    pt_test_fill(fm, p.B * p.S, 99);
    for (int64_t j = 0; j < p.B * p.S; j++) fm[j] = fm[j] < -0.8f ? -INFINITY : 3.0f * fm[j];
    pt_mask m = {0};
    m.ndim = 2; m.shape[0] = p.B; m.shape[1] = p.L; m.stride_last = 1;
    if (p.kind == MASK_BOOL) {
        m.data = bm; m.is_bool = 1; m.stride[0] = 0; m.stride[1] = p.S;
    } else if (p.kind == MASK_FLOAT) {
        m.data = fm; m.is_bool = 0; m.stride[0] = p.S; m.stride[1] = 0;
    }
    const pt_mask *pm = (p.kind == MASK_BOOL || p.kind == MASK_FLOAT) ? &m : NULL;
    const int causal = p.kind == MASK_CAUSAL;
    const float scale = 1.0f / sqrtf((float)p.E);

    memset(y, 0xff, sizeof(float) * p.B * p.L * p.Ev); /* NaN: every element must be written */
    int st = kt->attention(y, q, qi, k, NULL, p.S * p.E, v, NULL, p.S * p.Ev, p.B, p.L, p.S,
                           p.E, p.Ev, scale, pm, causal, nthreads);
    pt_test_check(st == 0, "%s attention returned %d", kt->name, st);
    pt_attention_ref(r, q, qi, k, NULL, p.S * p.E, v, NULL, p.S * p.Ev, p.B, p.L, p.S, p.E,
                     p.Ev, scale, pm, causal);
    double d = pt_test_max_abs_diff(y, r, p.B * p.L * p.Ev);
    /* outputs are convex combinations of v in [-1, 1]; scores O(sqrt E) with
     * float32 dot products: a few e-6 typical */
    pt_test_check(d <= 2e-5, "%s attention B=%lld L=%lld S=%lld E=%lld Ev=%lld mask=%s%s t=%d diff %g",
                  kt->name, (long long)p.B, (long long)p.L, (long long)p.S, (long long)p.E,
                  (long long)p.Ev, mask_names[p.kind], p.full_rows ? "+full" : "", nthreads, d);
    /* k and v as the first S rows of longer per-batch buffers (a KV cache):
     * the same bits */
    {
        const int64_t T = p.S + 5;
        float *kl = malloc(sizeof(float) * p.B * T * p.E), *vl = malloc(sizeof(float) * p.B * T * p.Ev),
              *yl = malloc(sizeof(float) * p.B * p.L * p.Ev);
        for (int64_t b = 0; b < p.B; b++) {
            memcpy(kl + b * T * p.E, k + b * p.S * p.E, sizeof(float) * p.S * p.E);
            memcpy(vl + b * T * p.Ev, v + b * p.S * p.Ev, sizeof(float) * p.S * p.Ev);
        }
        kt->attention(yl, q, qi, kl, NULL, T * p.E, vl, NULL, T * p.Ev, p.B, p.L, p.S, p.E, p.Ev,
                      scale, pm, causal, nthreads);
        pt_test_check(memcmp(yl, y, sizeof(float) * p.B * p.L * p.Ev) == 0,
                      "%s attention B=%lld L=%lld S=%lld: strided k, v differ", kt->name,
                      (long long)p.B, (long long)p.L, (long long)p.S);
        free(kl); free(vl); free(yl);
    }
    if (p.full_rows && p.kind == MASK_BOOL) {
        int zeros = 1;
        for (int64_t b = 0; b < p.B; b++)
            for (int64_t i = 1; i < p.L; i += 3)
                for (int64_t c = 0; c < p.Ev; c++) zeros &= y[(b * p.L + i) * p.Ev + c] == 0.0f;
        pt_test_check(zeros, "%s fully masked rows not zero (L=%lld S=%lld)", kt->name,
                      (long long)p.L, (long long)p.S);
    }
    free(q); free(k); free(v); free(y); free(r); free(qi); free(bm); free(fm);
}

/* A row computed among L = 300 queries, alone (L = 1), and with 1 or 2
 * threads: bit-identical. */
static void run_invariance(const pt_kernel_table *kt, int64_t E, int64_t S, int kind) {
    const int64_t L = 300, Ev = E;
    float *q = malloc(sizeof(float) * L * E), *k = malloc(sizeof(float) * S * E),
          *v = malloc(sizeof(float) * S * Ev), *y1 = malloc(sizeof(float) * L * Ev),
          *y2 = malloc(sizeof(float) * L * Ev), *row = malloc(sizeof(float) * Ev);
    uint8_t *bm = malloc((size_t)(L * S));
    fill_scaled(q, L * E, 5, 2.0f);
    fill_scaled(k, S * E, 6, 2.0f);
    fill_scaled(v, S * Ev, 7, 1.0f);
    for (int64_t i = 0; i < L * S; i++) bm[i] = (uint8_t)((i * 13) % 7 != 0);
    pt_mask m = {0};
    m.data = bm; m.is_bool = 1; m.ndim = 1; m.shape[0] = L; m.stride[0] = S; m.stride_last = 1;
    const float scale = 1.0f / sqrtf((float)E);
    const pt_mask *pm = kind == MASK_BOOL ? &m : NULL;
    kt->attention(y1, q, NULL, k, NULL, S * E, v, NULL, S * Ev, 1, L, S, E, Ev, scale, pm, 0,
                  1);
    kt->attention(y2, q, NULL, k, NULL, S * E, v, NULL, S * Ev, 1, L, S, E, Ev, scale, pm, 0,
                  2);
    pt_test_check(memcmp(y1, y2, sizeof(float) * L * Ev) == 0,
                  "%s attention E=%lld S=%lld mask=%s: 1 vs 2 threads differ", kt->name,
                  (long long)E, (long long)S, mask_names[kind]);
    int same = 1;
    for (int64_t i = 0; i < L; i += 37) {
        pt_mask m1 = m;
        m1.data = bm + i * S; m1.shape[0] = 1;
        kt->attention(row, q + i * E, NULL, k, NULL, S * E, v, NULL, S * Ev, 1, 1, S, E, Ev,
                      scale, kind == MASK_BOOL ? &m1 : NULL, 0, 2);
        same &= memcmp(row, y1 + i * Ev, sizeof(float) * Ev) == 0;
    }
    pt_test_check(same, "%s attention E=%lld S=%lld mask=%s: row differs at L=1 vs L=%lld",
                  kt->name, (long long)E, (long long)S, mask_names[kind], (long long)L);
    /* causal: the first rows of a causal problem are the rows of a shorter one */
    float *yc = malloc(sizeof(float) * L * Ev), *ys = malloc(sizeof(float) * 70 * Ev);
    kt->attention(yc, q, NULL, k, NULL, S * E, v, NULL, S * Ev, 1, L, S, E, Ev, scale, NULL, 1,
                  2);
    kt->attention(ys, q, NULL, k, NULL, S * E, v, NULL, S * Ev, 1, 70, S, E, Ev, scale, NULL, 1,
                  1);
    pt_test_check(memcmp(yc, ys, sizeof(float) * 70 * Ev) == 0,
                  "%s causal attention E=%lld S=%lld: rows differ at L=70 vs L=%lld", kt->name,
                  (long long)E, (long long)S, (long long)L);
    free(q); free(k); free(v); free(y1); free(y2); free(row); free(bm); free(yc); free(ys);
}

int main(void) {
    static const int64_t dims[] = {1, 7, 32, 64, 80, 128};
    static const int64_t ls[][2] = {{1, 1}, {5, 9}, {37, 130}, {130, 37}, {70, 257}, {200, 200}};
    for (const pt_kernel_table **kp = pt_test_paths(); *kp; kp++) {
        const pt_kernel_table *kt = *kp;
        for (size_t e = 0; e < sizeof dims / sizeof dims[0]; e++)
            for (size_t s = 0; s < sizeof ls / sizeof ls[0]; s++)
                for (int kind = MASK_NONE; kind <= MASK_CAUSAL; kind++) {
                    problem p = {3, ls[s][0], ls[s][1], dims[e], dims[(e + s) % 6], kind, 0};
                    run(kt, p, 1 + (int)((e + s + kind) % 2));
                }
        /* fully masked rows (bool), rows with every key -inf (float) */
        problem full = {2, 40, 150, 64, 64, MASK_BOOL, 1};
        run(kt, full, 2);
        problem fl = {2, 17, 3, 32, 16, MASK_FLOAT, 0};
        run(kt, fl, 1);
        /* S = 0: nothing to attend to */
        problem empty = {2, 5, 0, 32, 32, MASK_NONE, 0};
        run(kt, empty, 2);
        for (int kind = MASK_NONE; kind <= MASK_BOOL; kind++) {
            run_invariance(kt, 64, 300, kind);
            run_invariance(kt, 80, 1000, kind);
            run_invariance(kt, 7, 129, kind);
        }
    }
    return pt_test_summary();
}
