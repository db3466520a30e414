/* bf16.h -- bfloat16 as 16 bits: the rounding every bf16 file agrees on.
 * Internal to csrc/gemm/ (the packers and the twin). */
#ifndef PT_GEMM_BF16_H
#define PT_GEMM_BF16_H

#include <stdint.h>
#include <string.h>

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

#endif
