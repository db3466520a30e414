/* The bf16 GEMM on every path (the conversion kernels of the table, and
 * VDPBF16PS where the CPU has it) against its naive twin pt_bgemm_ref (both
 * operands rounded to bf16, double sums): shapes around every tile, odd K,
 * K = 0, bias, each activation, 1 and 2 threads; bit-identity of a row alone
 * and inside batches of 1, 7 and 64 rows at 1 and 2 threads; the rounding
 * itself (ties to even, NaN, inf, subnormals, overflow). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"

/* One bf16 GEMM path: its packer and its multiply. */
typedef struct {
    const char *name;
    pt_packed_bf16 *(*pack)(const float *, int64_t, int, int64_t, int64_t);
    pt_bgemm_packed_fn mul;
} bpath;

static int bpaths(bpath *out) {
    int n = 0;
    for (const pt_kernel_table **k = pt_test_paths(); *k; k++)
        out[n++] = (bpath){(*k)->name, (*k)->bgemm_pack_b, (*k)->bgemm_packed};
    if (pt_bgemm_packed_dot())
        out[n++] = (bpath){"avx512_bf16", pt_kernels_for(PT_ISA_AVX512)->bgemm_pack_b,
                           pt_bgemm_packed_dot()};
    if (pt_bgemm_packed_amx_fn())
        out[n++] = (bpath){"amx_bf16", pt_kernels_for(PT_ISA_AVX512)->bgemm_pack_b,
                           pt_bgemm_packed_amx_fn()};
    else
        printf("(amx_bf16 not tested: the CPU, the OS or the build lacks AMX-BF16)\n");
    return n;
}

static const int64_t dims[] = {1, 2, 3, 7, 12, 13, 33, 64, 129};
#define NDIMS ((int)(sizeof dims / sizeof dims[0]))

/* Against the twin: the operands are the same bf16 values, so what is left
 * is fp32 accumulation of exact products, ~sqrt(K) u |a||b| (inputs in
 * [-1, 1)), bounded here as the fp32 GEMM's test bounds it. */
static double tol(int64_t K) { return 4e-7 * (double)K + 1e-6; }

static void run_case(const bpath *p, int64_t M, int64_t N, int64_t K, int tb, int use_bias,
                     int act, int nthreads) {
    int64_t lda = K + 3, ldb = tb ? K : N, ldc = N + 1;       /* strided A and C */
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
    pt_packed_bf16 *pk = p->pack(B, ldb, tb, K, N);
    pt_test_check(pk != NULL, "%s bgemm_pack_b failed", p->name);
    if (pk) {
        int st = p->mul(C, ldc, A, lda, M, pk, pb, act, nthreads);
        pt_test_check(st == PT_OK, "%s bgemm_packed status %d", p->name, st);
        pt_bgemm_ref(R, ldc, A, lda, B, ldb, tb, M, N, K, pb, act);
        double d = 0;
        int unwritten = 0;
        for (int64_t i = 0; i < M; i++) {
            double di = pt_test_max_abs_diff(C + i * ldc, R + i * ldc, N);
            d = di > d || di != di ? di : d;
            unwritten |= !isnan(C[i * ldc + N]) && i * ldc + N < M * ldc;  /* past N untouched */
        }
        pt_test_check(d <= tol(K) && !unwritten,
                      "%s M=%lld N=%lld K=%lld tb=%d bias=%d act=%d threads=%d: max diff %g%s",
                      p->name, (long long)M, (long long)N, (long long)K, tb, use_bias, act,
                      nthreads, d, unwritten ? " (wrote past N)" : "");
        pt_packed_bf16_free(pk);
    }
    free(A); free(B); free(bias); free(C); free(R);
}

static void test_shapes(const bpath *p) {
    int n = 0;
    for (int a = 0; a < NDIMS; a++)
        for (int b = 0; b < NDIMS; b++)
            for (int c = 0; c < NDIMS; c++, n++)
                run_case(p, dims[a], dims[b], dims[c], n & 1, (n >> 1) & 1, n % 4,
                         1 + ((n / 5) & 1));
    for (int act = 0; act < 5; act++)                            /* every PT_ACT_*, SiLU too */
        run_case(p, 300, 520, 1029, 1, 1, act, 1 + (act & 1));   /* 3 K blocks, odd K */
    run_case(p, 481, 97, 600, 0, 1, PT_ACT_GELU, 2);             /* 2 A blocks */
    run_case(p, 5, 4200, 513, 1, 1, PT_ACT_RELU, 2);             /* > NC columns */
    for (int use_bias = 0; use_bias < 2; use_bias++)             /* K = 0 */
        run_case(p, 5, 37, 0, 1, use_bias, PT_ACT_GELU, 2);
}

/* A row's bits alone, in batches of 1, 7 and 64 rows (at every offset a
 * batch of that size can put it), at 1 and 2 threads. */
static void test_batch_invariance(const bpath *p) {
    const int64_t Mbig = 200, N = 300, K = 777;
    float *A = malloc(sizeof(float) * Mbig * K), *B = malloc(sizeof(float) * K * N);
    float *bias = malloc(sizeof(float) * N);
    float *alone = malloc(sizeof(float) * Mbig * N), *C = malloc(sizeof(float) * 64 * N);
    pt_test_fill(A, Mbig * K, 21);
    pt_test_fill(B, K * N, 22);
    pt_test_fill(bias, N, 23);
    pt_packed_bf16 *pk = p->pack(B, K, 1, K, N);
    for (int64_t i = 0; i < Mbig; i++)
        p->mul(alone + i * N, N, A + i * K, K, 1, pk, bias, PT_ACT_GELU, 1);
    static const int64_t sizes[] = {1, 7, 64};
    int same = 1;
    for (int s = 0; s < 3; s++)
        for (int nt = 1; nt <= 2; nt++)
            for (int64_t r0 = 0; r0 + sizes[s] <= Mbig; r0 += sizes[s] + 13) {
                p->mul(C, N, A + r0 * K, K, sizes[s], pk, bias, PT_ACT_GELU, nt);
                same &= memcmp(C, alone + r0 * N, sizeof(float) * (size_t)(sizes[s] * N)) == 0;
            }
    /* the whole batch at 2 threads (split over M) against rows alone */
    float *big = malloc(sizeof(float) * Mbig * N);
    p->mul(big, N, A, K, Mbig, pk, bias, PT_ACT_GELU, 2);
    same &= memcmp(big, alone, sizeof(float) * (size_t)(Mbig * N)) == 0;
    pt_test_check(same, "%s: a row's bits depend on its batch or the thread count", p->name);
    pt_packed_bf16_free(pk);
    free(A); free(B); free(bias); free(alone); free(C); free(big);
}

/* Operands packed by another path's layout are refused, C untouched. */
static void test_wrong_path(const bpath *all, int n) {
    float B[6 * 5], A[2 * 6], C[2 * 5];
    pt_test_fill(B, 30, 1);
    pt_test_fill(A, 12, 2);
    int ok = 1;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            pt_packed_bf16 *pi = all[i].pack(B, 6, 1, 6, 5), *pj = all[j].pack(B, 6, 1, 6, 5);
            if (pi->isa == pj->isa) { pt_packed_bf16_free(pi); pt_packed_bf16_free(pj); continue; }
            for (int t = 0; t < 10; t++) C[t] = 7.0f;
            ok &= all[j].mul(C, 5, A, 6, 2, pi, NULL, PT_ACT_NONE, 1) == PT_ERR_PATH;
            for (int t = 0; t < 10; t++) ok &= C[t] == 7.0f;
            pt_packed_bf16_free(pi);
            pt_packed_bf16_free(pj);
        }
    pt_test_check(ok, "bf16: operands packed for another path are refused");
}

static void test_rounding(void) {
    struct { float x; uint16_t h; } cases[] = {
        {1.0f, 0x3f80}, {-2.0f, 0xc000}, {0.0f, 0x0000}, {-0.0f, 0x8000},
        {1.00390625f, 0x3f80},            /* 1 + 2^-8: a tie, to even (down) */
        {1.01171875f, 0x3f82},            /* 1 + 3*2^-8: a tie, to even (up) */
        {1.0039065f, 0x3f81},             /* just past the tie: up */
        {INFINITY, 0x7f80}, {-INFINITY, 0xff80},
        {3.4028235e38f, 0x7f80},          /* FLT_MAX rounds to inf, as torch */
        {1e-40f, 0x0001},                 /* a subnormal stays a subnormal */
    };
    int ok = 1;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ok &= pt_bf16_from_float(cases[i].x) == cases[i].h;
    uint16_t nan = pt_bf16_from_float(NAN);
    ok &= (nan & 0x7f80) == 0x7f80 && (nan & 0x7f) != 0;
    ok &= pt_bf16_to_float(0x3f80) == 1.0f;
    pt_test_check(ok, "bf16 rounding: nearest even, NaN, inf, subnormal");
}

int main(void) {
    bpath paths[8];
    int n = bpaths(paths);
    test_rounding();
    test_wrong_path(paths, n);
    for (int i = 0; i < n; i++) {
        printf("bf16 path %s\n", paths[i].name);
        test_shapes(&paths[i]);
        test_batch_invariance(&paths[i]);
    }
    return pt_test_summary();
}
