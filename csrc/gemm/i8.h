/* i8.h -- what every int8 GEMM file shares (gemm_i8.h has the contract):
 * the quantization of a row, the quantization of A in a call, and the store
 * of a row of int32 sums through the dequantization and the epilogue.
 * Internal to csrc/gemm/; included by gemm_i8.c (every path),
 * gemm_i8_vnni.c and gemm_i8_amx.c (avx512). */
#ifndef PT_GEMM_I8_INTERNAL_H
#define PT_GEMM_I8_INTERNAL_H

#include <float.h>
#include <math.h>
#include <string.h>
#include "gemm/gemm_i8.h"
#include "gemm/ukernel_f32.h"   /* apply_act: the epilogue of the fp32 GEMM */
#include "runtime/mem.h"

/* The outliers of a row (gemm_i8.h): at most PT_I8_OUTLIERS (index, value)
 * pairs, in ascending index order. */
typedef struct {
    int32_t n;
    int32_t k[PT_I8_OUTLIERS];
    float x[PT_I8_OUTLIERS];
} i8_outliers;

/* The steps of quantizing a row, each with an AVX-512 body that gives the
 * scalar body's bits (max is exact; the squares are summed lane by lane as
 * the scalar loop sums them; cvtps rounds to nearest even, as rintf). */

/* One pass over x: returns max |x[k]| over the k with x[k]^2 <= limit; *bad
 * = 1 if an x is inf or NaN; where ss is not NULL, *ss = sum of x[k]^2 over
 * all k, in a fixed order on every path: 16 lanes of partial sums (k mod 16,
 * in order of k), then the lanes added in order. */
static inline float i8_row_stats(const float *x, int64_t n, float limit, int *bad, float *ss) {
    float amax = 0.0f, part[16] = {0};
    int64_t k0 = 0;
    *bad = 0;
#if PT_ISA == PT_ISA_AVX512
    __m512 m = _mm512_setzero_ps(), acc = _mm512_setzero_ps();
    __m512 lim = _mm512_set1_ps(limit), big = _mm512_set1_ps(FLT_MAX);
    __mmask16 nonfinite = 0;
    for (; k0 + 16 <= n; k0 += 16) {
        __m512 v = _mm512_loadu_ps(x + k0), a = _mm512_abs_ps(v), v2 = _mm512_mul_ps(v, v);
        nonfinite |= _mm512_cmp_ps_mask(a, big, _CMP_NLE_UQ);
        m = _mm512_mask_max_ps(m, _mm512_cmp_ps_mask(v2, lim, _CMP_LE_OQ), m, a);
        if (ss) acc = _mm512_add_ps(acc, v2);
    }
    *bad = nonfinite != 0;
    amax = _mm512_reduce_max_ps(m);
    _mm512_storeu_ps(part, acc);
#endif
    for (int64_t l = 0; k0 + l < n; l++) {    /* the tail, or all of x on other paths */
        float v = x[k0 + l], a = fabsf(v);
        *bad |= !(a <= FLT_MAX);
        if (v * v <= limit) amax = a > amax ? a : amax;
        part[l % 16] += v * v;
    }
    if (ss) {
        float s = 0.0f;
        for (int l = 0; l < 16; l++) s += part[l];
        *ss = s;
    }
    return amax;
}

/* How many x[k]^2 > t. */
static inline int64_t i8_count_above(const float *x, int64_t n, float t) {
    int64_t c = 0, k = 0;
#if PT_ISA == PT_ISA_AVX512
    __m512 tv = _mm512_set1_ps(t);
    for (; k + 16 <= n; k += 16) {
        __m512 v = _mm512_loadu_ps(x + k);
        c += __builtin_popcount(_mm512_cmp_ps_mask(_mm512_mul_ps(v, v), tv, _CMP_GT_OQ));
    }
#endif
    for (; k < n; k++) c += x[k] * x[k] > t;
    return c;
}

/* q[k] = clamp(rint(x[k] * inv), -127, 127) + off for k < n. */
static inline void i8_round(const float *x, int64_t n, float inv, int off, uint8_t *q) {
    int64_t k = 0;
#if PT_ISA == PT_ISA_AVX512
    __m512 iv = _mm512_set1_ps(inv);
    __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127), o = _mm512_set1_epi32(off);
    for (; k + 16 <= n; k += 16) {
        __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), iv));
        v = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(v, lo), hi), o);
        _mm_storeu_si128((__m128i *)(q + k), _mm512_cvtepi32_epi8(v));
    }
#endif
    for (; k < n; k++) {
        float v = rintf(x[k] * inv);        /* |x * inv| <= 127 (1 + 2^-23): v in [-127, 127] */
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        q[k] = (uint8_t)((int)v + off);
    }
}

/* x[0 .. n) quantized into q[0 .. np) (np >= n: zero past n) as gemm_i8.h
 * says, each q stored plus `off` (0: int8 bytes; 128: the unsigned bytes
 * VPDPBUSD reads, q + 128).  With out (activations), the outliers are taken
 * out first (q = 0 there) and listed in *out.  Returns the scale. */
static inline float i8_quantize_row(const float *x, int64_t n, uint8_t *q, int64_t np, int off,
                                    i8_outliers *out) {
    int bad = 0;
    if (n < 0) n = 0;
    if (np < n) np = n;
    if (out) out->n = 0;
    float ss = 0.0f;
    float amax = i8_row_stats(x, n, INFINITY, &bad, out ? &ss : NULL);
    if (bad || amax == 0.0f) {
        memset(q, off, (size_t)np);
        return bad ? NAN : 0.0f;
    }
    /* outliers: x^2 > t * mean(x^2), t = PT_I8_OUTLIER_T^2, quadrupled until
     * at most PT_I8_OUTLIERS remain (none to count where amax^2 <= t) */
    float limit = INFINITY;
    if (out && n > 0) {
        float t = (float)(PT_I8_OUTLIER_T * PT_I8_OUTLIER_T) * (ss / (float)n);
        while (t < amax * amax && i8_count_above(x, n, t) > PT_I8_OUTLIERS) t *= 4.0f;
        if (t < amax * amax) {
            limit = t;
            amax = i8_row_stats(x, n, t, &bad, NULL);
        }
    }
    i8_round(x, n, amax > 0.0f ? 127.0f / amax : 0.0f, off, q);
    if (limit < INFINITY) {
        int64_t k = 0;
#if PT_ISA == PT_ISA_AVX512
        __m512 lim = _mm512_set1_ps(limit);
        for (; k + 16 <= n; k += 16) {
            __m512 v = _mm512_loadu_ps(x + k);
            unsigned m = _mm512_cmp_ps_mask(_mm512_mul_ps(v, v), lim, _CMP_GT_OQ);
            for (; m; m &= m - 1) {
                int64_t kk = k + __builtin_ctz(m);
                q[kk] = (uint8_t)off;
                out->k[out->n] = (int32_t)kk;
                out->x[out->n++] = x[kk];
            }
        }
#endif
        for (; k < n; k++)
            if (x[k] * x[k] > limit) {
                q[k] = (uint8_t)off;
                out->k[out->n] = (int32_t)k;
                out->x[out->n++] = x[k];
            }
    }
    memset(q + n, off, (size_t)(np - n));
    return amax / 127.0f;
}

/* Rows [0, M) of A (row stride lda, K columns) into q (row stride Kp),
 * their scales into sa and their outliers into o; rows [M, Mp) of q are
 * zero (plus off). */
static inline void i8_quantize_a(const float *A, int64_t lda, int64_t M, int64_t Mp, int64_t K,
                                 int64_t Kp, uint8_t *q, float *sa, i8_outliers *o, int off,
                                 int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && M * K > 65536)
    for (int64_t i = 0; i < M; i++)
        sa[i] = i8_quantize_row(A + i * lda, K, q + i * Kp, Kp, off, o + i);
    if (Mp > M) memset(q + M * Kp, off, (size_t)((Mp - M) * Kp));
}

/* The first step of every int8 kernel: A quantized into a working buffer of
 * Mp rows of Kp bytes (row stride Kp, rows past M zero; each byte plus off),
 * then the M rows' outlier lists (*o) and scales (*sa).  NULL when out of
 * memory (free it with pt_free). */
static inline uint8_t *i8_quantized_a(const float *A, int64_t lda, int64_t M, int64_t Mp,
                                      int64_t K, int64_t Kp, int off, int nthreads, float **sa,
                                      i8_outliers **o) {
    size_t qbytes = ((size_t)(Mp * Kp) + 63) / 64 * 64;
    size_t m = (size_t)(M > 0 ? M : 1);
    uint8_t *q = (uint8_t *)pt_alloc(qbytes + (sizeof(i8_outliers) + sizeof(float)) * m);
    if (!q) return NULL;
    *o = (i8_outliers *)(q + qbytes);
    *sa = (float *)(q + qbytes + sizeof(i8_outliers) * m);
    i8_quantize_a(A, lda, M, Mp, K, Kp, q, *sa, *o, off, nthreads);
    return q;
}

static inline pt_vf i8_vcvt(const int32_t *x) {
#if PT_ISA == PT_ISA_AVX512
    return _mm512_cvtepi32_ps(_mm512_loadu_si512((const void *)x));
#elif PT_ISA == PT_ISA_AVX2
    return _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)x));
#else
    return (float)*x;
#endif
}

/* The 32 weights qw[j0 .. j0+32, k] of a panel b (gemm_i8.h's layout) as
 * floats. */
static inline void i8_panel_column(const int8_t *b, int64_t k, float *w) {
    const int8_t *row = b + (k / 4) * 4 * PT_I8_NR + k % 4;
    for (int j = 0; j < PT_I8_NR; j++) w[j] = (float)row[4 * j];
}

/* c[0 .. n) = act((float)acc[j] * (sa * sw[j]) + o[j] * sw[j] + bias[j]),
 * n <= 32, with o[j] = sum over the row's outliers, in order, of x * qw[j, k]
 * (b: the panel): each product and sum rounded once, in this order, on every
 * path.  sw holds 32 readable scales (zero past N: gemm_i8.h). */
static inline void i8_store_row(float *c, const int32_t *acc, int64_t n, float sa, const float *sw,
                                const i8_outliers *o, const int8_t *b, const float *bias,
                                int act) {
    float corr[PT_I8_NR] = {0};
#if PT_ISA == PT_ISA_AVX512
    if (o->n) {
        __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps();
        for (int32_t t = 0; t < o->n; t++) {
            const int8_t *row = b + (o->k[t] / 4) * 4 * PT_I8_NR;
            int sh = 24 - 8 * (o->k[t] % 4);   /* byte k % 4 of each column's quad */
            __m512i v0 = _mm512_loadu_si512((const void *)row);
            __m512i v1 = _mm512_loadu_si512((const void *)(row + 64));
            __m512 w0 = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_sllv_epi32(
                            v0, _mm512_set1_epi32(sh)), 24));
            __m512 w1 = _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_sllv_epi32(
                            v1, _mm512_set1_epi32(sh)), 24));
            __m512 xv = _mm512_set1_ps(o->x[t]);
            c0 = _mm512_add_ps(c0, _mm512_mul_ps(xv, w0));
            c1 = _mm512_add_ps(c1, _mm512_mul_ps(xv, w1));
        }
        _mm512_storeu_ps(corr, c0);
        _mm512_storeu_ps(corr + 16, c1);
    }
#else
    float w[PT_I8_NR];
    for (int32_t t = 0; t < o->n; t++) {
        i8_panel_column(b, o->k[t], w);
        for (int j = 0; j < PT_I8_NR; j++) corr[j] = corr[j] + o->x[t] * w[j];
    }
#endif
    pt_vf sav = pt_vset1(sa);
    for (int64_t j = 0; j < PT_I8_NR; j += PT_VL) {
        if (j >= n) break;
        pt_vf swv = pt_vload(sw + j);
        pt_vf x = pt_vmul(i8_vcvt(acc + j), pt_vmul(sav, swv));
        if (o->n) x = pt_vadd(x, pt_vmul(pt_vload(corr + j), swv));
        if (bias) {
            if (n - j >= PT_VL) x = pt_vadd(x, pt_vload(bias + j));
            else x = pt_vadd(x, pt_vload_tail(bias + j, (size_t)(n - j), 0.0f));
        }
        x = apply_act(x, act);
        if (n - j >= PT_VL) pt_vstore(c + j, x);
        else pt_vstore_tail(c + j, x, (size_t)(n - j));
    }
}

#endif
