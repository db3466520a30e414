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

/* sum of x[k]^2 in a fixed order on every path: 16 lanes of partial sums
 * (k mod 16, in order of k), then the lanes added in order. */
static inline float i8_sumsq(const float *x, int64_t n) {
    float part[16] = {0};
    int64_t k0 = 0;
    for (; k0 + 16 <= n; k0 += 16)
        for (int l = 0; l < 16; l++) part[l] += x[k0 + l] * x[k0 + l];
    for (int l = 0; k0 + l < n; l++) part[l] += x[k0 + l] * x[k0 + l];
    float s = 0.0f;
    for (int l = 0; l < 16; l++) s += part[l];
    return s;
}

/* x[0 .. n) quantized into q[0 .. np) (np >= n: zero past n) as gemm_i8.h
 * says, each q stored plus `off` (0: int8 bytes; 128: the unsigned bytes
 * VPDPBUSD reads, q + 128).  With out (activations), the outliers are taken
 * out first (q = 0 there) and listed in *out.  Returns the scale. */
static inline float i8_quantize_row(const float *x, int64_t n, uint8_t *q, int64_t np, int off,
                                    i8_outliers *out) {
    float amax = 0.0f;
    int bad = 0;
    if (n < 0) n = 0;
    if (np < n) np = n;
    if (out) out->n = 0;
    for (int64_t k = 0; k < n; k++) {
        float a = fabsf(x[k]);
        bad |= !(a <= FLT_MAX);
        amax = a > amax ? a : amax;
    }
    if (bad || amax == 0.0f) {
        memset(q, off, (size_t)np);
        return bad ? NAN : 0.0f;
    }
    /* outliers: x^2 > t * mean(x^2), t = PT_I8_OUTLIER_T^2, quadrupled until
     * at most PT_I8_OUTLIERS remain */
    float limit = INFINITY;
    if (out && n > 0) {
        float t = (float)(PT_I8_OUTLIER_T * PT_I8_OUTLIER_T) * (i8_sumsq(x, n) / (float)n);
        for (;;) {
            int64_t c = 0;
            for (int64_t k = 0; k < n; k++) c += x[k] * x[k] > t;
            if (c <= PT_I8_OUTLIERS) break;
            t *= 4.0f;
        }
        if (t < amax * amax) {
            limit = t;
            amax = 0.0f;
            for (int64_t k = 0; k < n; k++) {
                float a = x[k] * x[k] > t ? 0.0f : fabsf(x[k]);
                amax = a > amax ? a : amax;
            }
        }
    }
    float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int64_t k = 0; k < n; k++) {
        float v = rintf(x[k] * inv);        /* |x * inv| <= 127 (1 + 2^-23): v in [-127, 127] */
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        q[k] = (uint8_t)((int)v + off);
    }
    if (limit < INFINITY)
        for (int64_t k = 0; k < n; k++)
            if (x[k] * x[k] > limit) {
                q[k] = (uint8_t)off;
                out->k[out->n] = (int32_t)k;
                out->x[out->n++] = x[k];
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

/* The working buffer of a call: Mp rows of Kp bytes, then M outlier lists,
 * then M scales. */
static inline uint8_t *i8_alloc_a(int64_t Mp, int64_t Kp, int64_t M, float **sa,
                                  i8_outliers **o) {
    size_t qbytes = ((size_t)(Mp * Kp) + 63) / 64 * 64;
    size_t m = (size_t)(M > 0 ? M : 1);
    uint8_t *q = (uint8_t *)pt_alloc(qbytes + (sizeof(i8_outliers) + sizeof(float)) * m);
    *o = q ? (i8_outliers *)(q + qbytes) : NULL;
    *sa = q ? (float *)(q + qbytes + sizeof(i8_outliers) * m) : NULL;
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
 * path. */
static inline void i8_store_row(float *c, const int32_t *acc, int64_t n, float sa, const float *sw,
                                const i8_outliers *o, const int8_t *b, const float *bias,
                                int act) {
    float s[PT_I8_NR] = {0}, corr[PT_I8_NR] = {0}, w[PT_I8_NR];
    for (int64_t j = 0; j < n; j++) s[j] = sa * sw[j];
    for (int32_t t = 0; t < o->n; t++) {
        i8_panel_column(b, o->k[t], w);
        for (int j = 0; j < PT_I8_NR; j++) corr[j] = corr[j] + o->x[t] * w[j];
    }
    if (o->n)
        for (int64_t j = 0; j < n; j++) corr[j] = corr[j] * sw[j];
    for (int64_t j = 0; j < PT_I8_NR; j += PT_VL) {
        if (j >= n) break;
        pt_vf x = pt_vmul(i8_vcvt(acc + j), pt_vload(s + j));
        if (o->n) x = pt_vadd(x, pt_vload(corr + j));
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
