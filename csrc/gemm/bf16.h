/* bf16.h -- bfloat16 as 16 bits: the rounding every bf16 file agrees on.
 * Internal to csrc/gemm/ (the packers and the twin). */
#ifndef PT_GEMM_BF16_H
#define PT_GEMM_BF16_H

#include <stdint.h>
#include <string.h>
#if defined(__AVX512BW__)
#include <immintrin.h>
#endif

/* Round to nearest even on the bits, as torch's float -> bfloat16: a NaN
 * stays a (quiet) NaN, subnormals are rounded like any other value, values
 * past the largest bf16 round to inf. */
static inline uint16_t bf16_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float bf16_value(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* x rounded to the nearest bf16, as a float. */
static inline float bf16_round(float x) { return bf16_value(bf16_bits(x)); }

#if defined(__AVX512BW__)
/* 16 pairs from floats x[0 .. n) (n <= 32; past n: zero) rounded to bf16 as
 * bf16_bits does: nearest even on the bits, NaN kept quiet, subnormals kept. */
static inline __m512i bf16_pairs16(const float *x, int64_t n) {
    int nl = n <= 0 ? 0 : n >= 16 ? 16 : (int)n, nh = n <= 16 ? 0 : n >= 32 ? 16 : (int)n - 16;
    __m512i v[2] = {_mm512_castps_si512(_mm512_maskz_loadu_ps((__mmask16)((1u << nl) - 1u), x)),
                    _mm512_castps_si512(_mm512_maskz_loadu_ps((__mmask16)((1u << nh) - 1u),
                                                              x + 16))};
    for (int h = 0; h < 2; h++) {
        __m512i u = v[h];
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
        __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
        v[h] = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x400000));
    }
    /* the high halves of v[0] then of v[1], in order: pairs (x[2j], x[2j+1]) */
    const __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37,
                                         35, 33, 31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9,
                                         7, 5, 3, 1);
    return _mm512_permutex2var_epi16(v[0], odd, v[1]);
}
#endif

#endif
