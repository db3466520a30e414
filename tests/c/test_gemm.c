/* sgemm on every path against the naive twin (pt_sgemm_ref): shapes around
 * every tile size, transposed operands, bias, each activation, packed and
 * unpacked B, 1 and 2 threads; and bit-identity of rows whatever M, the
 * thread count or the route (packed / unpacked). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"

static const int64_t dims[] = {1, 2, 3, 7, 16, 17, 33, 127, 257};
#define NDIMS ((int)(sizeof dims / sizeof dims[0]))

/* Tolerance against the double-accumulated reference: a float32 dot product
 * of length K errs by ~sqrt(K) u |a||b|; inputs are in [-1, 1). */
static double tol(int64_t K) { return 4e-7 * (double)K + 1e-6; }

/* op(A) with trans_a is stored K x M; op(B) with trans_b is stored N x K. */
static void run_case(const pt_kernel_table *k, int64_t M, int64_t N, int64_t K, int ta, int tb,
                     int use_bias, int act, int packed, int nthreads) {
    int64_t lda = ta ? M : K, ldb = tb ? K : N, ldc = N;
    float *A = malloc(sizeof(float) * (size_t)(M * K + 1));
    float *B = malloc(sizeof(float) * (size_t)(K * N + 1));
    float *bias = malloc(sizeof(float) * (size_t)N);
    float *C = malloc(sizeof(float) * (size_t)(M * N));
    float *R = malloc(sizeof(float) * (size_t)(M * N));
    pt_test_fill(A, M * K, (uint64_t)(M * 131 + K));
    pt_test_fill(B, K * N, (uint64_t)(N * 17 + K + 5));
    pt_test_fill(bias, N, 99);
    for (int64_t i = 0; i < M * N; i++) C[i] = NAN;    /* every element must be written */
    const float *pb = use_bias ? bias : NULL;
    if (packed) {
        if (ta) goto done;                              /* the packed route takes A as is */
        pt_packed_b *p = k->sgemm_pack_b(B, ldb, tb, K, N);
        pt_test_check(p != NULL, "%s pack_b failed", k->name);
        if (!p) goto done;
        k->sgemm_packed(C, ldc, A, lda, M, p, pb, act, nthreads);
        pt_packed_b_free(p);
    } else {
        k->sgemm(C, ldc, A, lda, ta, B, ldb, tb, M, N, K, pb, act, nthreads);
    }
    pt_sgemm_ref(R, ldc, A, lda, ta, B, ldb, tb, M, N, K, pb, act);
    double d = pt_test_max_abs_diff(C, R, M * N);
    pt_test_check(d <= tol(K), "%s M=%lld N=%lld K=%lld ta=%d tb=%d bias=%d act=%d packed=%d "
                  "threads=%d: max diff %g", k->name, (long long)M, (long long)N, (long long)K,
                  ta, tb, use_bias, act, packed, nthreads, d);
done:
    free(A); free(B); free(bias); free(C); free(R);
}

static void test_shapes(const pt_kernel_table *k) {
    /* all of dims^3 once plainly, then a rotating subset of the options */
    int n = 0;
    for (int a = 0; a < NDIMS; a++)
        for (int b = 0; b < NDIMS; b++)
            for (int c = 0; c < NDIMS; c++, n++) {
                int64_t M = dims[a], N = dims[b], K = dims[c];
                int ta = n & 1, tb = (n >> 1) & 1, act = n % (PT_ACT_SILU + 1), use_bias = (n / 3) & 1;
                int packed = (n / 5) & 1, nt = 1 + ((n / 7) & 1);
                run_case(k, M, N, K, ta, tb, use_bias, act, packed, nt);
            }
    /* bigger than one cache block in every dimension; every option */
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int act = 0; act <= PT_ACT_SILU; act++)
                for (int packed = 0; packed < 2; packed++)
                    run_case(k, 300, 520, 129, ta, tb, 1, act, packed, 1 + (act & 1));
    run_case(k, 481, 97, 600, 0, 1, 1, PT_ACT_GELU, 0, 2);   /* 3 K blocks, 2 M blocks */
    run_case(k, 5, 4100, 513, 0, 1, 1, PT_ACT_RELU, 1, 2);   /* decoder shape, > NC */
    /* packed weights of more than 2 MiB (their own huge-page mapping), a few
     * rows (the decoding GEMV), N past whole panel groups */
    for (int64_t m = 1; m <= 3; m++)
        run_case(k, m, 1000, 700, 0, 1, 1, PT_ACT_NONE, 1, 1 + (m & 1));
    /* K too long for every K block of A to be packed at once: the five loops */
    run_case(k, 1, 70, 12000, 0, 1, 1, PT_ACT_NONE, 1, 1);
    /* K = 0: bias, activated, or zeros */
    for (int packed = 0; packed < 2; packed++)
        for (int use_bias = 0; use_bias < 2; use_bias++)
            run_case(k, 5, 37, 0, 0, 0, use_bias, PT_ACT_GELU, packed, 2);
}

/* Row i of C must have the same bits at M = 1 and M = 1000, with 1 or 2
 * threads, packed or not, with a strided C. */
static void test_bit_identity(const pt_kernel_table *k) {
    const int64_t Mbig = 1000, N = 300, K = 600;  /* N: wide 1-3 row tiles and an edge */
    float *A = malloc(sizeof(float) * Mbig * K), *B = malloc(sizeof(float) * K * N);
    float *bias = malloc(sizeof(float) * N);
    float *big = malloc(sizeof(float) * Mbig * N), *one = malloc(sizeof(float) * (N + 3));
    pt_test_fill(A, Mbig * K, 1);
    pt_test_fill(B, K * N, 2);
    pt_test_fill(bias, N, 3);
    pt_packed_b *p = k->sgemm_pack_b(B, K, 1, K, N);     /* B read as N x K, transposed */
    for (int act = 0; act < 4; act += 3)
        for (int nt = 1; nt <= 2; nt++) {
            k->sgemm(big, N, A, K, 0, B, K, 1, Mbig, N, K, bias, act, nt);
            int same = 1;
            for (int64_t i = 0; i < Mbig; i += 37) {
                for (int route = 0; route < 2; route++)
                    for (int nt1 = 1; nt1 <= 2; nt1++) {
                        if (route == 0)
                            k->sgemm(one, N, A + i * K, K, 0, B, K, 1, 1, N, K, bias, act, nt1);
                        else
                            k->sgemm_packed(one, N, A + i * K, K, 1, p, bias, act, nt1);
                        same &= memcmp(one, big + i * N, sizeof(float) * N) == 0;
                    }
                /* also as a middle row of a 3-row call */
                if (i >= 1 && i + 1 < Mbig) {
                    float three[3 * 304];
                    k->sgemm(three, 304, A + (i - 1) * K, K, 0, B, K, 1, 3, N, K, bias, act, nt);
                    same &= memcmp(three + 304, big + i * N, sizeof(float) * N) == 0;
                }
            }
            pt_test_check(same, "%s act=%d threads=%d: rows differ between M=1000 and M=1",
                          k->name, act, nt);
        }
    /* transposed A (stored K x M): column i alone vs inside the big call */
    float *At = malloc(sizeof(float) * Mbig * K), *col = malloc(sizeof(float) * K);
    for (int64_t i = 0; i < Mbig; i++)
        for (int64_t kk = 0; kk < K; kk++) At[kk * Mbig + i] = A[i * K + kk];
    k->sgemm(big, N, At, Mbig, 1, B, K, 1, Mbig, N, K, bias, 0, 2);
    int same = 1;
    for (int64_t i = 0; i < Mbig; i += 111) {
        for (int64_t kk = 0; kk < K; kk++) col[kk] = At[kk * Mbig + i];
        k->sgemm(one, N, col, 1, 1, B, K, 1, 1, N, K, bias, 0, 1);
        same &= memcmp(one, big + i * N, sizeof(float) * N) == 0;
    }
    pt_test_check(same, "%s trans_a rows differ between M=1000 and M=1", k->name);

    /* untransposed B (K x N), read in place by calls of a few rows: rows of
     * 1..13-row calls against the big call, at both thread counts */
    float *Bn = malloc(sizeof(float) * K * N), *few = malloc(sizeof(float) * 13 * N);
    for (int64_t kk = 0; kk < K; kk++)
        for (int64_t j = 0; j < N; j++) Bn[kk * N + j] = B[j * K + kk];
    k->sgemm(big, N, A, K, 0, Bn, N, 0, Mbig, N, K, bias, PT_ACT_RELU, 1);
    same = 1;
    for (int64_t m = 1; m <= 13; m++)
        for (int nt = 1; nt <= 2; nt++) {
            int64_t i = (m * 71) % (Mbig - 13);
            k->sgemm(few, N, A + i * K, K, 0, Bn, N, 0, m, N, K, bias, PT_ACT_RELU, nt);
            same &= memcmp(few, big + i * N, sizeof(float) * (size_t)(m * N)) == 0;
        }
    pt_test_check(same, "%s untransposed B: rows differ between M=1000 and M<=13", k->name);
    free(Bn); free(few);

    /* wide enough that one row is split over N between two threads while
     * the 100-row call is split over M */
    {
        const int64_t M2 = 100, N2 = 1300, K2 = 300;
        float *A2 = malloc(sizeof(float) * M2 * K2), *B2 = malloc(sizeof(float) * K2 * N2);
        float *C2 = malloc(sizeof(float) * M2 * N2), *r2 = malloc(sizeof(float) * 3 * N2);
        pt_test_fill(A2, M2 * K2, 11);
        pt_test_fill(B2, K2 * N2, 12);
        pt_packed_b *p2 = k->sgemm_pack_b(B2, K2, 1, K2, N2);   /* B2 read as N2 x K2 */
        int same2 = 1;
        for (int tb = 0; tb < 2; tb++) {
            int64_t ldb2 = tb ? K2 : N2;
            k->sgemm(C2, N2, A2, K2, 0, B2, ldb2, tb, M2, N2, K2, NULL, PT_ACT_NONE, 2);
            for (int64_t m = 1; m <= 3; m++) {
                k->sgemm(r2, N2, A2 + 50 * K2, K2, 0, B2, ldb2, tb, m, N2, K2, NULL,
                         PT_ACT_NONE, 2);
                same2 &= memcmp(r2, C2 + 50 * N2, sizeof(float) * (size_t)(m * N2)) == 0;
                if (tb) {
                    k->sgemm_packed(r2, N2, A2 + 50 * K2, K2, m, p2, NULL, PT_ACT_NONE, 2);
                    same2 &= memcmp(r2, C2 + 50 * N2, sizeof(float) * (size_t)(m * N2)) == 0;
                }
            }
        }
        pt_test_check(same2, "%s rows split over N differ from rows split over M", k->name);
        pt_packed_b_free(p2);
        free(A2); free(B2); free(C2); free(r2);
    }
    pt_packed_b_free(p);
    free(A); free(B); free(bias); free(big); free(one); free(At); free(col);
}

/* NaN and Inf in A reach exactly the rows they belong to. */
static void test_nonfinite(const pt_kernel_table *k) {
    const int64_t M = 13, N = 40, K = 20;
    float A[13 * 20], B[20 * 40], C[13 * 40], R[13 * 40];
    pt_test_fill(A, M * K, 4);
    pt_test_fill(B, K * N, 5);
    A[3 * K + 7] = NAN;
    A[9 * K + 2] = INFINITY;
    k->sgemm(C, N, A, K, 0, B, N, 0, M, N, K, NULL, PT_ACT_RELU, 2);
    pt_sgemm_ref(R, N, A, K, 0, B, N, 0, M, N, K, NULL, PT_ACT_RELU);
    double d = pt_test_max_abs_diff(C, R, M * N);
    pt_test_check(d <= tol(K), "%s NaN/Inf propagation: diff %g", k->name, d);
}

int main(void) {
    for (const pt_kernel_table **k = pt_test_paths(); *k; k++) {
        test_shapes(*k);
        test_bit_identity(*k);
        test_nonfinite(*k);
    }
    return pt_test_summary();
}
