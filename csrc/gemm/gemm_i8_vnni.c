/* gemm_i8_vnni.c -- the int8 GEMM on VPDPBUSD (AVX512_VNNI): each
 * instruction multiplies four unsigned bytes of A by four signed bytes of B
 * and adds the four products to an int32 lane.  Built once, with PT_ISA=avx512
 * and -mavx512vnni (setup.py, tests/c/run.sh), and called only where
 * pt_igemm_packed_vnni_fn() (cpu.c) found the feature.
 *
 * A is quantized per row into bytes q + 128 (row-major, row stride Kp: a
 * row's quads contiguous, broadcast one at a time), so each sum is
 * sum (q + 128) w = acc + 128 * colsum, and 128 * colsum[j] (exact in int32)
 * is subtracted before the dequantization.  The sums are exact: the same
 * int32 as every other int8 path.
 *
 * Tile: 12 rows x 32 columns (24 zmm accumulators; per quad two B vectors and
 * twelve broadcasts).  Loops: ic over M in blocks of VMC rows (their bytes
 * stay in L2), jr over the 32-column panels (each streamed from memory once
 * per block), ir over 12-row groups, each over all of K.  Threads share out
 * (block, panel) pairs; which thread computes one never changes a bit.
 */
#include "gemm/i8.h"

#if PT_ISA != PT_ISA_AVX512 || !defined(__AVX512VNNI__)
#error "gemm_i8_vnni.c is built with -DPT_ISA=2 -mavx512vnni only"
#endif

#define VMR 12
#define VMC 240          /* rows per block (a multiple of VMR) */
#define PF_QUADS 32      /* quad rows of B prefetched ahead: 4 KiB */

PT_ALWAYS_INLINE void vnni_tile(const int M_, const uint8_t *a, int64_t Kp, const int8_t *b,
                                const int32_t *colsum, float *C, int64_t ldc, int64_t nr,
                                const float *sa, const i8_outliers *o, const float *sw,
                                const float *bias, int act) {
    __m512i acc[VMR][2];
    for (int r = 0; r < M_; r++) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 2
#endif
    for (int64_t kk = 0; kk < Kp / 4; kk++) {
        const int8_t *bq = b + kk * 4 * PT_I8_NR;
        if (M_ <= 4) {   /* few rows: B streams from memory, fetch it ahead */
            _mm_prefetch((const char *)(bq + PF_QUADS * 4 * PT_I8_NR), _MM_HINT_T0);
            _mm_prefetch((const char *)(bq + PF_QUADS * 4 * PT_I8_NR + 64), _MM_HINT_T0);
        }
        __m512i b0 = _mm512_load_si512((const void *)bq);
        __m512i b1 = _mm512_load_si512((const void *)(bq + 64));
        for (int r = 0; r < M_; r++) {
            int32_t quad;
            memcpy(&quad, a + r * Kp + 4 * kk, 4);
            __m512i av = _mm512_set1_epi32(quad);
            acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, b0);
            acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, b1);
        }
    }
    __m512i off0 = _mm512_slli_epi32(_mm512_loadu_si512((const void *)colsum), 7);
    __m512i off1 = _mm512_slli_epi32(_mm512_loadu_si512((const void *)(colsum + 16)), 7);
    for (int r = 0; r < M_; r++) {
        int32_t row[PT_I8_NR];
        _mm512_storeu_si512((void *)row, _mm512_sub_epi32(acc[r][0], off0));
        _mm512_storeu_si512((void *)(row + 16), _mm512_sub_epi32(acc[r][1], off1));
        i8_store_row(C + r * ldc, row, nr, sa[r], sw, o + r, b, bias, act);
    }
}

static __attribute__((noinline)) void vnni_tile_m(int m, const uint8_t *a, int64_t Kp,
                                                  const int8_t *b, const int32_t *colsum,
                                                  float *C, int64_t ldc, int64_t nr,
                                                  const float *sa, const i8_outliers *o,
                                                  const float *sw, const float *bias, int act) {
#define PT_VT_CASE(R) \
    case R: vnni_tile(R, a, Kp, b, colsum, C, ldc, nr, sa, o, sw, bias, act); break;
    switch (m) {
    PT_VT_CASE(1) PT_VT_CASE(2) PT_VT_CASE(3) PT_VT_CASE(4) PT_VT_CASE(5) PT_VT_CASE(6)
    PT_VT_CASE(7) PT_VT_CASE(8) PT_VT_CASE(9) PT_VT_CASE(10) PT_VT_CASE(11) PT_VT_CASE(12)
    default: break;
    }
#undef PT_VT_CASE
}

int pt_igemm_packed_vnni(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M,
                         const pt_packed_i8 *B, const float *bias, int act, int nthreads) {
    if (!B) return PT_ERR_ARG;
    int64_t N = B->N, K = B->K, Kp = B->Kp, panels = (N + PT_I8_NR - 1) / PT_I8_NR;
    if (M <= 0 || N <= 0) return PT_OK;
    if (nthreads < 1) nthreads = 1;
    float *sa;
    i8_outliers *o;
    uint8_t *q = i8_quantized_a(A, lda, M, M, K, Kp, 128, nthreads, &sa, &o);
    if (!q) return PT_ERR_NOMEM;   /* before C is touched */
    int64_t blocks = (M + VMC - 1) / VMC, units = blocks * panels;
    if ((double)M * (double)N * (double)K < 262144.0 || units < 2) nthreads = 1;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (int64_t u = 0; u < units; u++) {
        int64_t p = u % panels, i0 = (u / panels) * VMC;
        int64_t mc = M - i0 < VMC ? M - i0 : VMC;
        int64_t j0 = p * PT_I8_NR, nr = N - j0 < PT_I8_NR ? N - j0 : PT_I8_NR;
        const int8_t *b = B->data + p * Kp * PT_I8_NR;
        for (int64_t ir = 0; ir < mc; ir += VMR) {
            int m = (int)(mc - ir < VMR ? mc - ir : VMR);
            int64_t i = i0 + ir;
            vnni_tile_m(m, q + i * Kp, Kp, b, B->colsum + j0, C + i * ldc + j0, ldc, nr, sa + i,
                        o + i, B->scale + j0, bias ? bias + j0 : NULL, act);
        }
    }
    pt_free(q);
    return PT_OK;
}
