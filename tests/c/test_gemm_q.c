/* The weight-only GEMM on GGUF blocks (Q8_0, Q4_0, Q4_1) on every path
 * against its naive twin pt_qgemm_ref (the same dequantized weights, double
 * sums): shapes around the tiles, strided rows, bias, each activation, 1 and
 * 2 threads; bit-identity of a row alone and inside batches at 1 and 2
 * threads; refused arguments; fp16 scales that are subnormal, inf or NaN. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"

static const int qtypes[] = {PT_Q8_0, PT_Q4_0, PT_Q4_1};

/* Pack W (pt_qgemm_pack) and multiply on path kt; PT_ERR_ARG where the
 * packer refuses. */
static int qmul(const pt_kernel_table *kt, float *C, int64_t ldc, const float *A, int64_t lda,
                int64_t M, const uint8_t *W, int64_t ldw, int qtype, int64_t N, int64_t K,
                const float *bias, int act, int nthreads) {
    pt_packed_q *p = pt_qgemm_pack(W, ldw, qtype, N, K);
    if (!p) return PT_ERR_ARG;
    int st = kt->qgemm_packed(C, ldc, A, lda, M, p, bias, act, nthreads);
    pt_packed_q_free(p);
    return st;
}

/* A random normal fp16 in +-[2^-7, 2^-4): the scales of the test blocks. */
static uint16_t random_half(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t r = *s >> 11;
    return (uint16_t)((r & 0x8000u) | (uint16_t)((8 + (r >> 16) % 3) << 10) | ((r >> 24) & 0x3ffu));
}

/* N rows of K/32 random blocks of qtype, ldw bytes apart. */
static uint8_t *random_blocks(int qtype, int64_t N, int64_t K, int64_t ldw, uint64_t seed) {
    int bb = pt_q_block_bytes(qtype);
    uint8_t *W = calloc((size_t)(N * ldw + 1), 1);
    uint64_t s = seed * 2654435761u + 1;
    for (int64_t n = 0; n < N; n++)
        for (int64_t b = 0; b < K / 32; b++) {
            uint8_t *blk = W + n * ldw + b * bb;
            uint16_t d = random_half(&s), m = random_half(&s);
            blk[0] = (uint8_t)d; blk[1] = (uint8_t)(d >> 8);
            int at = 2;
            if (qtype == PT_Q4_1) { blk[2] = (uint8_t)m; blk[3] = (uint8_t)(m >> 8); at = 4; }
            for (int j = at; j < bb; j++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                blk[j] = (uint8_t)(s >> 56);
            }
        }
    return W;
}

/* Against the twin: the same dequantized weights (|w| < 128 * 2^-4 = 8),
 * so what is left is fp32 accumulation of K products, bounded as the fp32
 * GEMM's test bounds it, scaled by |w|. */
static double tol(int64_t K) { return 8 * (4e-7 * (double)K + 1e-6); }

static void run_case(const pt_kernel_table *kt, int qtype, int64_t M, int64_t N, int64_t K,
                     int use_bias, int act, int nthreads) {
    int64_t lda = K + 3, ldc = N + 1, ldw = K / 32 * pt_q_block_bytes(qtype) + 5;
    float *A = malloc(sizeof(float) * (size_t)(M * lda + 1));
    float *bias = malloc(sizeof(float) * (size_t)(N + 1));
    float *C = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    float *R = malloc(sizeof(float) * (size_t)(M * ldc + 1));
    uint8_t *W = random_blocks(qtype, N, K, ldw, (uint64_t)(N * 7 + K + qtype));
    pt_test_fill(A, M * lda, (uint64_t)(M * 31 + K));
    pt_test_fill(bias, N, 5);
    for (int64_t i = 0; i < M * ldc; i++) C[i] = R[i] = NAN;
    const float *pb = use_bias ? bias : NULL;
    int st = qmul(kt, C, ldc, A, lda, M, W, ldw, qtype, N, K, pb, act, nthreads);
    int sr = pt_qgemm_ref(R, ldc, A, lda, M, W, ldw, qtype, N, K, pb, act);
    double d = 0;
    int unwritten = 0;
    for (int64_t i = 0; i < M; i++) {
        double di = pt_test_max_abs_diff(C + i * ldc, R + i * ldc, N);
        d = di > d || di != di ? di : d;
        unwritten |= !isnan(C[i * ldc + N]) && i * ldc + N < M * ldc;
    }
    pt_test_check(st == PT_OK && sr == PT_OK && d <= tol(K) && !unwritten,
                  "%s qtype=%d M=%lld N=%lld K=%lld bias=%d act=%d threads=%d: status %d, "
                  "max diff %g%s", kt->name, qtype, (long long)M, (long long)N, (long long)K,
                  use_bias, act, nthreads, st, d, unwritten ? " (wrote past N)" : "");
    free(A); free(bias); free(C); free(R); free(W);
}

static void test_shapes(const pt_kernel_table *kt) {
    static const int64_t ms[] = {1, 2, 3, 4, 5, 9}, ns[] = {1, 3, 4, 5, 17, 64};
    static const int64_t ks[] = {0, 32, 64, 96, 576};
    int c = 0;
    for (int q = 0; q < 3; q++)
        for (size_t a = 0; a < 6; a++)
            for (size_t b = 0; b < 6; b++)
                for (size_t k = 0; k < 5; k++, c++)
                    run_case(kt, qtypes[q], ms[a], ns[b], ks[k], c & 1, c % 5, 1 + ((c >> 1) & 1));
    for (int q = 0; q < 3; q++)
        run_case(kt, qtypes[q], 3, 1536, 576, 1, PT_ACT_SILU, 2);   /* split over threads */
}

/* A row's bits alone, in batches of 1, 3 and 10 rows, at 1 and 2 threads. */
static void test_batch_invariance(const pt_kernel_table *kt, int qtype) {
    const int64_t Mbig = 40, N = 301, K = 320;
    int64_t ldw = K / 32 * pt_q_block_bytes(qtype);
    float *A = malloc(sizeof(float) * Mbig * K), *bias = malloc(sizeof(float) * N);
    float *alone = malloc(sizeof(float) * Mbig * N), *C = malloc(sizeof(float) * Mbig * N);
    uint8_t *W = random_blocks(qtype, N, K, ldw, 77);
    pt_test_fill(A, Mbig * K, 21);
    pt_test_fill(bias, N, 23);
    for (int64_t i = 0; i < Mbig; i++)
        qmul(kt, alone + i * N, N, A + i * K, K, 1, W, ldw, qtype, N, K, bias, PT_ACT_GELU, 1);
    static const int64_t sizes[] = {1, 3, 10, 40};
    int same = 1;
    for (int s = 0; s < 4; s++)
        for (int nt = 1; nt <= 2; nt++)
            for (int64_t r0 = 0; r0 + sizes[s] <= Mbig; r0 += sizes[s] + 7) {
                qmul(kt, C, N, A + r0 * K, K, sizes[s], W, ldw, qtype, N, K, bias, PT_ACT_GELU, nt);
                same &= memcmp(C, alone + r0 * N, sizeof(float) * (size_t)(sizes[s] * N)) == 0;
            }
    pt_test_check(same, "%s qtype=%d: a row's bits depend on its batch or the thread count",
                  kt->name, qtype);
    free(A); free(bias); free(alone); free(C); free(W);
}

/* An unknown type, K not a multiple of 32, a short row stride: refused, C
 * untouched. */
static void test_refused(const pt_kernel_table *kt) {
    float A[64], C[4] = {7, 7, 7, 7};
    uint8_t W[4 * 68] = {0};
    pt_test_fill(A, 64, 3);
    int ok = qmul(kt, C, 2, A, 64, 1, W, 68, 1, 2, 64, NULL, 0, 1) == PT_ERR_ARG;
    ok &= qmul(kt, C, 2, A, 40, 1, W, 68, PT_Q8_0, 2, 40, NULL, 0, 1) == PT_ERR_ARG;
    ok &= qmul(kt, C, 2, A, 64, 1, W, 67, PT_Q8_0, 2, 64, NULL, 0, 1) == PT_ERR_ARG;
    for (int i = 0; i < 4; i++) ok &= C[i] == 7.0f;
    pt_test_check(ok, "%s: bad qgemm arguments are refused", kt->name);
}

/* Scales that are subnormal halves, inf and NaN dequantize as ggml's do: the
 * path matches the twin, NaN where the twin has NaN. */
static void test_special_scales(const pt_kernel_table *kt) {
    static const uint16_t ds[] = {0x0001, 0x03ff, 0x0400, 0x7c00, 0xfc00, 0x7e00, 0x3c00};
    for (int q = 0; q < 3; q++) {
        int bb = pt_q_block_bytes(qtypes[q]);
        uint8_t W[7 * 34];
        float A[32], C[7], R[7];
        memset(W, 0x11, sizeof W);
        for (int n = 0; n < 7; n++) {
            W[n * bb] = (uint8_t)ds[n];
            W[n * bb + 1] = (uint8_t)(ds[n] >> 8);
            if (qtypes[q] == PT_Q4_1) { W[n * bb + 2] = 0x00; W[n * bb + 3] = 0x3c; }  /* m = 1 */
        }
        pt_test_fill(A, 32, 9);
        qmul(kt, C, 7, A, 32, 1, W, bb, qtypes[q], 7, 32, NULL, 0, 1);
        pt_qgemm_ref(R, 7, A, 32, 1, W, bb, qtypes[q], 7, 32, NULL, 0);
        int ok = 1;
        for (int n = 0; n < 7; n++)
            ok &= isnan(R[n]) ? isnan(C[n]) : isinf(R[n]) ? C[n] == R[n]
                                                           : fabs(C[n] - R[n]) <= 1e-6 * (1 + fabs(R[n]));
        pt_test_check(ok, "%s qtype=%d: subnormal, inf and NaN scales", kt->name, qtypes[q]);
    }
}

int main(void) {
    for (const pt_kernel_table **k = pt_test_paths(); *k; k++) {
        printf("qgemm path %s\n", (*k)->name);
        test_shapes(*k);
        for (int q = 0; q < 3; q++) test_batch_invariance(*k, qtypes[q]);
        test_refused(*k);
        test_special_scales(*k);
    }
    return pt_test_summary();
}
