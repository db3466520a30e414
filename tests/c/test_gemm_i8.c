/* The int8 GEMM on every path (the table's plain-C kernels, VPDPBUSD and
 * AMX-INT8 where the CPU has them) against its naive twin pt_igemm_ref (the
 * same quantization, int64 sums): bit for bit without an activation or with
 * ReLU, within float rounding with GELU and SiLU; shapes around every tile,
 * K past the 64-byte tile rows, K = 0, strided A and C, bias, 1 and 2
 * threads; every path's bits equal; a row alone equals the same row in
 * batches of 7 and 64 rows; the quantization itself (ties, the largest
 * value, zero rows, inf and NaN rows); the K limit. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"

typedef struct {
    const char *name;
    pt_igemm_packed_fn mul;
} ipath;

static int ipaths(ipath *out) {
    int n = 0;
    for (const pt_kernel_table **k = pt_test_paths(); *k; k++)
        out[n++] = (ipath){(*k)->name, (*k)->igemm_packed};
    if (pt_igemm_packed_vnni_fn()) out[n++] = (ipath){"avx512_vnni", pt_igemm_packed_vnni_fn()};
    else printf("(avx512_vnni not tested: the CPU or the build lacks AVX512_VNNI)\n");
    if (pt_igemm_packed_amx_fn()) out[n++] = (ipath){"amx_int8", pt_igemm_packed_amx_fn()};
    else printf("(amx_int8 not tested: the CPU, the OS or the build lacks AMX-INT8)\n");
    return n;
}

static int same_bits(const float *a, const float *b, int64_t n) {
    return memcmp(a, b, sizeof(float) * (size_t)n) == 0;
}

/* C of one path (row stride ldc, NaN past N) against the twin. */
static void run_case(const ipath *p, int64_t M, int64_t N, int64_t K, int tb, int use_bias,
                     int act, int nthreads) {
    int64_t lda = K + 3, ldb = tb ? K : N, ldc = N + 1;
    float *A = malloc(sizeof(float) * (size_t)(M * lda + 1));
    float *B = malloc(sizeof(float) * (size_t)(K * N + 1));
    float *bias = malloc(sizeof(float) * (size_t)N);
    float *C = malloc(sizeof(float) * (size_t)(M * ldc));
    float *R = malloc(sizeof(float) * (size_t)(M * ldc));
    pt_test_fill(A, M * lda, (uint64_t)(M * 131 + K));
    pt_test_fill(B, K * N, (uint64_t)(N * 17 + K + 5));
    pt_test_fill(bias, N, 99);
    for (int64_t i = 0; i < M * ldc; i++) C[i] = R[i] = NAN;
    const float *pb = use_bias ? bias : NULL;
    pt_packed_i8 *pk = pt_igemm_pack_b(B, ldb, tb, K, N);
    pt_test_check(pk != NULL, "igemm_pack_b failed");
    if (pk) {
        int st = p->mul(C, ldc, A, lda, M, pk, pb, act, nthreads);
        pt_test_check(st == PT_OK, "%s igemm_packed status %d", p->name, st);
        pt_igemm_ref(R, ldc, A, lda, B, ldb, tb, M, N, K, pb, act);
        int exact = act == PT_ACT_NONE || act == PT_ACT_RELU, ok = 1;
        for (int64_t i = 0; i < M && ok; i++) {
            if (exact) ok = same_bits(C + i * ldc, R + i * ldc, N);
            else
                for (int64_t j = 0; j < N; j++) {
                    float r = R[i * ldc + j], c = C[i * ldc + j];
                    ok &= fabsf(c - r) <= 4e-6f * (1.0f + fabsf(r));
                }
            if (i * ldc + N < M * ldc) ok &= isnan(C[i * ldc + N]) != 0;   /* past N untouched */
        }
        pt_test_check(ok, "%s M=%lld N=%lld K=%lld tb=%d bias=%d act=%d threads=%d: %s",
                      p->name, (long long)M, (long long)N, (long long)K, tb, use_bias, act,
                      nthreads, exact ? "bits differ from the twin" : "beyond rounding");
        pt_packed_i8_free(pk);
    }
    free(A); free(B); free(bias); free(C); free(R);
}

static void test_shapes(const ipath *p) {
    static const int64_t ms[] = {1, 2, 5, 12, 13, 16, 17, 33, 70};
    static const int64_t ns[] = {1, 7, 16, 32, 33, 65};
    static const int64_t ks[] = {0, 1, 3, 63, 64, 65, 130, 300};
    for (int a = 0; a < 9; a++)
        for (int b = 0; b < 6; b++)
            for (int c = 0; c < 8; c++)
                run_case(p, ms[a], ns[b], ks[c], (a + b + c) % 2, (a + c) % 2, PT_ACT_NONE,
                         1 + (a + b) % 2);
    for (int act = 0; act <= PT_ACT_SILU; act++) {
        run_case(p, 20, 40, 100, 1, 1, act, 1);
        run_case(p, 3, 70, 129, 1, 1, act, 2);
    }
    run_case(p, 130, 96, 520, 1, 1, PT_ACT_NONE, 2);   /* several blocks, both threads */
}

/* Row 0 alone, and inside batches of 7 and 64 rows at 1 and 2 threads, on
 * every path: the same bits everywhere (the sums are exact integers). */
static void test_invariance(const ipath *ps, int np) {
    const int64_t K = 200, N = 100;
    float *A = malloc(sizeof(float) * 64 * K), *B = malloc(sizeof(float) * N * K);
    float *ref = malloc(sizeof(float) * N), *C = malloc(sizeof(float) * 64 * N);
    pt_test_fill(A, 64 * K, 5);
    pt_test_fill(B, N * K, 6);
    pt_packed_i8 *pk = pt_igemm_pack_b(B, K, 1, K, N);
    ps[0].mul(ref, N, A, K, 1, pk, NULL, PT_ACT_NONE, 1);
    for (int p = 0; p < np; p++)
        for (int t = 1; t <= 2; t++)
            for (int64_t m = 1; m <= 64; m = m == 1 ? 7 : m == 7 ? 64 : 65) {
                ps[p].mul(C, N, A, K, m, pk, NULL, PT_ACT_NONE, t);
                pt_test_check(same_bits(C, ref, N), "%s: row 0 in a batch of %lld rows at %d "
                              "threads differs from row 0 alone on %s", ps[p].name,
                              (long long)m, t, ps[0].name);
            }
    pt_packed_i8_free(pk);
    free(A); free(B); free(ref); free(C);
}

static void test_quantize(void) {
    int8_t q[8];
    float x[8] = {0.5f, -1.0f, 2.0f, 0.25f, 0.0f, -2.0f, 1.0f / 127.0f * 2.5f, 3.0f};
    float s = pt_i8_quantize(x, 8, q, NULL, NULL, NULL);
    pt_test_check(s == 3.0f / 127.0f && q[7] == 127 && q[5] == -85 && q[4] == 0,
                  "quantize: scale %g, q %d %d %d", s, q[7], q[5], q[4]);
    float t[2] = {2.5f, -1.5f};   /* amax 2.5: 127 and -76.2 -> -76 */
    s = pt_i8_quantize(t, 2, q, NULL, NULL, NULL);
    pt_test_check(q[0] == 127 && q[1] == -76, "quantize: %d %d", q[0], q[1]);
    float h[2] = {127.0f, 0.5f};  /* 0.5 * 1: a tie, to even */
    s = pt_i8_quantize(h, 2, q, NULL, NULL, NULL);
    pt_test_check(q[1] == 0 && s == 1.0f, "quantize: tie to %d", q[1]);
    float z[3] = {0.0f, -0.0f, 0.0f};
    s = pt_i8_quantize(z, 3, q, NULL, NULL, NULL);
    pt_test_check(s == 0.0f && q[0] == 0 && q[2] == 0, "quantize: zero row");
    float bad[3] = {1.0f, INFINITY, 2.0f}, nanrow[2] = {NAN, 1.0f};
    s = pt_i8_quantize(bad, 3, q, NULL, NULL, NULL);
    pt_test_check(isnan(s) && q[0] == 0 && q[2] == 0, "quantize: inf row");
    s = pt_i8_quantize(nanrow, 2, q, NULL, NULL, NULL);
    pt_test_check(isnan(s) && q[1] == 0, "quantize: NaN row");
    /* outliers of a row of A: |x| > 8 rms taken out, the rest on its own amax */
    static float row[4000];
    static int8_t qr[4000];
    int32_t ok[PT_I8_OUTLIERS], no = -1;
    float ox[PT_I8_OUTLIERS];
    for (int k = 0; k < 400; k++) row[k] = k % 2 ? 0.5f : -1.0f;
    row[17] = 100.0f;
    row[60] = -90.0f;
    s = pt_i8_quantize(row, 400, qr, ok, ox, &no);
    pt_test_check(no == 2 && ok[0] == 17 && ok[1] == 60 && ox[0] == 100.0f && ox[1] == -90.0f &&
                  qr[17] == 0 && qr[60] == 0 && s == 1.0f / 127.0f && qr[0] == -127 && qr[1] == 64,
                  "quantize: outliers %d (%d, %d), scale %g", no, ok[0], ok[1], s);
    s = pt_i8_quantize(row, 400, qr, NULL, NULL, NULL);   /* a weight's row: none */
    pt_test_check(s == 100.0f / 127.0f && qr[17] == 127, "quantize: weight row");
    /* more than PT_I8_OUTLIERS above 8 rms: the bar rises until at most 8 */
    for (int k = 0; k < 4000; k++) row[k] = 0.01f;
    for (int k = 0; k < 12; k++) row[5 * k] = (float)(20 + k);
    s = pt_i8_quantize(row, 4000, qr, ok, ox, &no);
    int sorted = 1;
    for (int t = 1; t < no; t++) sorted &= ok[t] > ok[t - 1];
    pt_test_check(no >= 0 && no <= PT_I8_OUTLIERS && sorted, "quantize: %d outliers", no);
}

/* Rows with outliers (and one with more than PT_I8_OUTLIERS) against the
 * twin, bit for bit, at row counts for every kernel's tiles. */
static void test_outlier_rows(const ipath *p) {
    const int64_t K = 300, N = 70;
    for (int64_t M = 1; M <= 40; M += 19) {
        float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * N * K);
        float *C = malloc(sizeof(float) * M * N), *R = malloc(sizeof(float) * M * N);
        float bias[70];
        pt_test_fill(A, M * K, 11);
        pt_test_fill(B, N * K, 12);
        pt_test_fill(bias, N, 13);
        for (int64_t i = 0; i < M; i++) A[i * K + (i * 37) % K] = 30.0f + (float)i;
        for (int k = 0; k < 12; k++) A[(M - 1) * K + 3 + 20 * k] = -20.0f - (float)k;
        pt_packed_i8 *pk = pt_igemm_pack_b(B, K, 1, K, N);
        p->mul(C, N, A, K, M, pk, bias, PT_ACT_NONE, 2);
        pt_igemm_ref(R, N, A, K, B, K, 1, M, N, K, bias, PT_ACT_NONE);
        pt_test_check(same_bits(C, R, M * N), "%s: rows with outliers, M=%lld", p->name,
                      (long long)M);
        pt_packed_i8_free(pk);
        free(A); free(B); free(C); free(R);
    }
}

/* A NaN in one row of A gives that row NaN, the others their values. */
static void test_nan_row(const ipath *p) {
    const int64_t K = 70, N = 33, M = 20;
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * N * K);
    float *C = malloc(sizeof(float) * M * N), *R = malloc(sizeof(float) * M * N);
    pt_test_fill(A, M * K, 8);
    pt_test_fill(B, N * K, 9);
    A[3 * K + 5] = NAN;
    pt_packed_i8 *pk = pt_igemm_pack_b(B, K, 1, K, N);
    p->mul(C, N, A, K, M, pk, NULL, PT_ACT_NONE, 1);
    pt_igemm_ref(R, N, A, K, B, K, 1, M, N, K, NULL, PT_ACT_NONE);
    int ok = 1;
    for (int64_t j = 0; j < N; j++) ok &= isnan(C[3 * N + j]) != 0;
    ok &= same_bits(C, R, 3 * N) && same_bits(C + 4 * N, R + 4 * N, (M - 4) * N);
    pt_test_check(ok, "%s: a NaN row", p->name);
    pt_packed_i8_free(pk);
    free(A); free(B); free(C); free(R);
}

int main(void) {
    ipath ps[8];
    int np = ipaths(ps);
    test_quantize();
    for (int p = 0; p < np; p++) {
        test_shapes(&ps[p]);
        test_nan_row(&ps[p]);
        test_outlier_rows(&ps[p]);
    }
    test_invariance(ps, np);
    float w = 1.0f;
    pt_test_check(pt_igemm_pack_b(&w, 1, 1, PT_I8_MAX_K + 1, 0) == NULL,
                  "igemm_pack_b accepted K past PT_I8_MAX_K");
    return pt_test_summary();
}
