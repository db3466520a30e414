/* Out of memory is an error, never a slower route.  With the kernels' n-th
 * allocation made to fail (pt_mem_fail_after), every kernel that allocates
 * returns PT_ERR_NOMEM (pack_b: NULL) and GEMM leaves C untouched, for every
 * n until the call has all it needs, on every path this CPU runs, at 1 and 2
 * threads; the call that then succeeds gives the usual bits, and nothing
 * leaks (LeakSanitizer under SANITIZE=1).  Kernels that need no memory run
 * with every allocation failing. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"
#include "runtime/mem.h"

#define MAX_TRIES 64   /* more allocations than any call makes */

static float *filled(int64_t n, uint64_t seed) {
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    pt_test_fill(x, n, seed);
    return x;
}

/* sgemm (route: in place, transposed on the fly, packed per call) */
static void test_sgemm(const pt_kernel_table *k, int64_t M, int64_t N, int64_t K, int tb,
                       int nt) {
    float *A = filled(M * K, 1), *B = filled(K * N, 2), *bias = filled(N, 3);
    float *want = malloc(sizeof(float) * (size_t)(M * N)), *C = malloc(sizeof(float) * (size_t)(M * N));
    float *sentinel = malloc(sizeof(float) * (size_t)(M * N));
    int64_t ldb = tb ? K : N;
    int st = k->sgemm(want, N, A, K, 0, B, ldb, tb, M, N, K, bias, PT_ACT_GELU, nt);
    pt_test_check(st == PT_OK, "%s sgemm returned %d", k->name, st);
    for (int64_t i = 0; i < M * N; i++) sentinel[i] = (float)i;
    int failures = 0, done = 0;
    for (int n = 0; n < MAX_TRIES && !done; n++) {
        memcpy(C, sentinel, sizeof(float) * (size_t)(M * N));
        pt_mem_fail_after(n);
        st = k->sgemm(C, N, A, K, 0, B, ldb, tb, M, N, K, bias, PT_ACT_GELU, nt);
        pt_mem_fail_after(-1);
        if (st == PT_OK) {
            done = 1;
            pt_test_check(memcmp(C, want, sizeof(float) * (size_t)(M * N)) == 0,
                          "%s sgemm M=%lld N=%lld K=%lld tb=%d t=%d: bits differ after %d "
                          "allocations", k->name, (long long)M, (long long)N, (long long)K, tb,
                          nt, n);
        } else {
            failures++;
            pt_test_check(st == PT_ERR_NOMEM && !memcmp(C, sentinel, sizeof(float) * (size_t)(M * N)),
                          "%s sgemm M=%lld N=%lld K=%lld tb=%d t=%d, allocation %d failing: "
                          "status %d, C %s", k->name, (long long)M, (long long)N, (long long)K,
                          tb, nt, n, st,
                          memcmp(C, sentinel, sizeof(float) * (size_t)(M * N)) ? "written" : "untouched");
        }
    }
    pt_test_check(done && failures > 0, "%s sgemm M=%lld: %d failures, done=%d", k->name,
                  (long long)M, failures, done);
    free(A); free(B); free(bias); free(want); free(C); free(sentinel);
}

/* pack_b (small, and over 2 MiB: its own mapping), then sgemm_packed */
static void test_packed(const pt_kernel_table *k, int64_t M, int64_t N, int64_t K, int nt) {
    float *A = filled(M * K, 4), *B = filled(K * N, 5);
    float *want = malloc(sizeof(float) * (size_t)(M * N)), *C = malloc(sizeof(float) * (size_t)(M * N));
    float *sentinel = malloc(sizeof(float) * (size_t)(M * N));
    for (int64_t i = 0; i < M * N; i++) sentinel[i] = -(float)i;
    int failures = 0;
    pt_packed_b *p = NULL;
    for (int n = 0; n < MAX_TRIES && !p; n++) {
        pt_mem_fail_after(n);
        p = k->sgemm_pack_b(B, K, 1, K, N);
        pt_mem_fail_after(-1);
        if (!p) failures++;
    }
    pt_test_check(p && failures > 0, "%s pack_b N=%lld K=%lld: %d failures, packed=%d", k->name,
                  (long long)N, (long long)K, failures, p != NULL);
    if (!p) goto done;
    int st = k->sgemm_packed(want, N, A, K, M, p, NULL, PT_ACT_NONE, nt);
    pt_test_check(st == PT_OK, "%s sgemm_packed returned %d", k->name, st);
    failures = 0;
    for (int n = 0; n < MAX_TRIES; n++) {
        memcpy(C, sentinel, sizeof(float) * (size_t)(M * N));
        pt_mem_fail_after(n);
        st = k->sgemm_packed(C, N, A, K, M, p, NULL, PT_ACT_NONE, nt);
        pt_mem_fail_after(-1);
        if (st == PT_OK) {
            pt_test_check(memcmp(C, want, sizeof(float) * (size_t)(M * N)) == 0,
                          "%s sgemm_packed M=%lld: bits differ", k->name, (long long)M);
            break;
        }
        failures++;
        pt_test_check(st == PT_ERR_NOMEM && !memcmp(C, sentinel, sizeof(float) * (size_t)(M * N)),
                      "%s sgemm_packed M=%lld N=%lld K=%lld t=%d, allocation %d failing: status "
                      "%d", k->name, (long long)M, (long long)N, (long long)K, nt, n, st);
    }
    pt_test_check(failures > 0, "%s sgemm_packed M=%lld: never failed", k->name, (long long)M);
    pt_packed_b_free(p);
done:
    free(A); free(B); free(want); free(C); free(sentinel);
}

/* attention: its status (out is unspecified on failure: other threads may
 * have written their units) */
static void test_attention(const pt_kernel_table *k, int64_t B, int64_t L, int64_t S,
                           int64_t E, int64_t Ev, int nt) {
    float *q = filled(B * L * E, 6), *kk = filled(B * S * E, 7), *v = filled(B * S * Ev, 8);
    float *want = malloc(sizeof(float) * (size_t)(B * L * Ev)), *y = malloc(sizeof(float) * (size_t)(B * L * Ev));
    int st = k->attention(want, q, NULL, kk, NULL, S * E, v, NULL, S * Ev, B, L, S, E, Ev, 0.125f,
                          NULL, 1, nt);
    pt_test_check(st == PT_OK, "%s attention returned %d", k->name, st);
    int failures = 0, done = 0;
    for (int n = 0; n < MAX_TRIES && !done; n++) {
        pt_mem_fail_after(n);
        st = k->attention(y, q, NULL, kk, NULL, S * E, v, NULL, S * Ev, B, L, S, E, Ev, 0.125f,
                          NULL, 1, nt);
        pt_mem_fail_after(-1);
        if (st == PT_OK) {
            done = 1;
            pt_test_check(memcmp(y, want, sizeof(float) * (size_t)(B * L * Ev)) == 0,
                          "%s attention: bits differ after %d allocations", k->name, n);
        } else {
            failures++;
            pt_test_check(st == PT_ERR_NOMEM, "%s attention B=%lld L=%lld Ev=%lld t=%d, "
                          "allocation %d failing: status %d", k->name, (long long)B,
                          (long long)L, (long long)Ev, nt, n, st);
        }
    }
    pt_test_check(done && failures > 0, "%s attention: %d failures, done=%d", k->name, failures,
                  done);
    free(q); free(kk); free(v); free(want); free(y);
}

/* softmax, layer norm and the activations allocate nothing */
static void test_no_alloc(const pt_kernel_table *k) {
    const int64_t rows = 7, n = 300;
    float *x = filled(rows * n, 9), *a = malloc(sizeof(float) * rows * n),
          *b = malloc(sizeof(float) * rows * n);
    for (int pass = 0; pass < 2; pass++) {
        float *y = pass ? b : a;
        if (pass) pt_mem_fail_after(0);
        k->softmax(y, x, rows, n, NULL, 2);
        k->layer_norm(y + n, x + n, NULL, NULL, 1, n, 1e-5f, 2);
        k->gelu(y + 2 * n, x + 2 * n, n, 2);
        k->gelu_tanh(y + 3 * n, x + 3 * n, n, 2);
        k->relu(y + 4 * n, x + 4 * n, n, 2);
        k->silu(y + 5 * n, x + 5 * n, n, 2);
        pt_mem_fail_after(-1);
    }
    pt_test_check(memcmp(a, b, sizeof(float) * rows * n) == 0,
                  "%s row-wise kernels differ when allocation fails", k->name);
    free(x); free(a); free(b);
}

/* requests too large to round up fail cleanly */
static void test_huge_requests(void) {
    pt_test_check(pt_alloc(SIZE_MAX) == NULL, "pt_alloc(SIZE_MAX) did not fail");
    pt_test_check(pt_alloc_zero(SIZE_MAX - 8) == NULL, "pt_alloc_zero(SIZE_MAX - 8) did not fail");
    pt_test_check(pt_weights_alloc(SIZE_MAX - 8) == NULL, "pt_weights_alloc(huge) did not fail");
    void *p = pt_alloc(0);   /* zero bytes: one aligned line */
    pt_test_check(p != NULL && (uintptr_t)p % PT_ALIGN == 0, "pt_alloc(0) gave %p", p);
    pt_free(p);
}

int main(void) {
    test_huge_requests();
    for (const pt_kernel_table **kp = pt_test_paths(); *kp; kp++) {
        const pt_kernel_table *k = *kp;
        for (int nt = 1; nt <= 2; nt++) {
            test_sgemm(k, 3, 100, 300, 0, nt);     /* a few rows, B read in place */
            test_sgemm(k, 2, 100, 300, 1, nt);     /* a few rows, B transposed on the fly */
            test_sgemm(k, 70, 90, 300, 1, nt);     /* B packed for the call */
            test_sgemm(k, 200, 300, 260, 0, nt);   /* threads split the rows */
            test_packed(k, 1, 130, 70, nt);        /* the streaming GEMV */
            test_packed(k, 40, 1000, 700, nt);     /* > 2 MiB of weights: their own mapping */
            test_attention(k, 3, 70, 150, 32, 20, nt);
        }
        test_no_alloc(k);
    }
    return pt_test_summary();
}
