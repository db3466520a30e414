/* vmath.h -- vectorised elementary functions on pt_vf, shared by the
 * kernels that need them (softmax, activations, GEMM epilogues, attention).
 * Each is written once against simd.h and so exists on every kernel path.
 */
#ifndef PT_VMATH_H
#define PT_VMATH_H

#include "runtime/simd.h"

/* ------------------------------------------------------------------------ */
/* exp(x), vectorised: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6     */
/* polynomial (Cephes expf coefficients), 2^n by building the exponent.      */
/* Max error ~1.5 ulp on [-87.3, 88.7]; saturates to 0 / +inf outside;      */
/* NaN propagates.                                                          */
/* ------------------------------------------------------------------------ */
static inline pt_vf pt_vexp(pt_vf x) {
    const pt_vf hi = pt_vset1(88.72283935546875f), lo = pt_vset1(-87.33654022216797f);
    pt_vf big = x;                                 /* kept to restore +inf/NaN/0 */
    x = pt_vclamp(x, lo, hi);                      /* NaN stays NaN */
    pt_vf n = pt_vround(pt_vmul(x, pt_vset1(1.44269504088896341f)));
    /* r = x - n*ln2, with ln2 split in two for accuracy (Cody-Waite) */
    pt_vf r = pt_vfmadd(n, pt_vset1(-0.693359375f), x);
    r = pt_vfmadd(n, pt_vset1(2.12194440e-4f), r);
    pt_vf p = pt_vset1(1.9875691500e-4f);
    p = pt_vfmadd(p, r, pt_vset1(1.3981999507e-3f));
    p = pt_vfmadd(p, r, pt_vset1(8.3334519073e-3f));
    p = pt_vfmadd(p, r, pt_vset1(4.1665795894e-2f));
    p = pt_vfmadd(p, r, pt_vset1(1.6666665459e-1f));
    p = pt_vfmadd(p, r, pt_vset1(5.0000001201e-1f));
    pt_vf r2 = pt_vmul(r, r);
    p = pt_vfmadd(p, r2, pt_vadd(r, pt_vset1(1.0f)));
#if PT_ISA == PT_ISA_AVX512
    /* p * 2^n in one instruction: the same value as the two steps below
     * (each of those is exact but the last, which rounds only a subnormal) */
    pt_vf y = _mm512_scalef_ps(p, n);
#else
    /* n can reach 128 at the top of the range: scale in two steps */
    pt_vf half = pt_vround(pt_vmul(n, pt_vset1(0.5f)));
    pt_vf y = pt_vmul(pt_vmul(p, pt_vpow2i(half)), pt_vpow2i(pt_vsub(n, half)));
#endif
    y = pt_vselect_gt(big, hi, pt_vset1(INFINITY), y);
    y = pt_vselect_gt(lo, big, pt_vzero(), y);
    return y;
}


/* ------------------------------------------------------------------------ */
/* GELU, exact form: x/2 * (1 + erf(x/sqrt2)).                              */
/* With z = |x|/sqrt2, 1 + erf(x/sqrt2) is erfc(z) for x < 0 and 2 - erfc(z) */
/* for x >= 0, so the negative tail is computed relative to its own (tiny)  */
/* size instead of cancelling.  erfc(z) = t exp(-z^2 + P(t)), t = 1/(1+z/2): */
/* Chebyshev fit with relative error < 1.2e-7 for all z >= 0 (Numerical     */
/* Recipes, erfcc).                                                         */
/* ------------------------------------------------------------------------ */
static inline pt_vf pt_verfc_nonneg(pt_vf z) {
    pt_vf t = pt_vdiv(pt_vset1(1.0f), pt_vfmadd(pt_vset1(0.5f), z, pt_vset1(1.0f)));
    pt_vf p = pt_vset1(0.17087277f);
    p = pt_vfmadd(p, t, pt_vset1(-0.82215223f));
    p = pt_vfmadd(p, t, pt_vset1(1.48851587f));
    p = pt_vfmadd(p, t, pt_vset1(-1.13520398f));
    p = pt_vfmadd(p, t, pt_vset1(0.27886807f));
    p = pt_vfmadd(p, t, pt_vset1(-0.18628806f));
    p = pt_vfmadd(p, t, pt_vset1(0.09678418f));
    p = pt_vfmadd(p, t, pt_vset1(0.37409196f));
    p = pt_vfmadd(p, t, pt_vset1(1.00002368f));
    p = pt_vfmadd(p, t, pt_vset1(-1.26551223f));
    return pt_vmul(t, pt_vexp(pt_vsub(p, pt_vmul(z, z))));
}

static inline pt_vf pt_vgelu(pt_vf x) {
    pt_vf q = pt_verfc_nonneg(pt_vmul(pt_vabs(x), pt_vset1(0.70710678118654752f)));
    pt_vf one_plus_erf = pt_vselect_gt(pt_vzero(), x, q, pt_vsub(pt_vset1(2.0f), q));
    return pt_vmul(pt_vmul(pt_vset1(0.5f), x), one_plus_erf);
}

/* GELU, tanh form: x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
 * Since (1 + tanh u)/2 = 1/(1 + exp(-2u)), compute x / (1 + exp(-2u)):
 * no cancellation for negative x, and exp saturates cleanly at both ends. */
static inline pt_vf pt_vgelu_tanh(pt_vf x) {
    pt_vf x3 = pt_vmul(pt_vmul(x, x), x);
    pt_vf u = pt_vmul(pt_vset1(0.79788456080286536f), pt_vfmadd(pt_vset1(0.044715f), x3, x));
    pt_vf e = pt_vexp(pt_vmul(pt_vset1(-2.0f), u));
    return pt_vdiv(x, pt_vadd(pt_vset1(1.0f), e));
}

/* SiLU (swish), x sigmoid(x) = x / (1 + exp(-x)): one exp and one divide;
 * at x -> -inf exp saturates to +inf and the quotient to -0, at +inf to x;
 * NaN propagates (exp(NaN) is NaN). */
static inline pt_vf pt_vsilu(pt_vf x) {
    return pt_vdiv(x, pt_vadd(pt_vset1(1.0f), pt_vexp(pt_vsub(pt_vzero(), x))));
}

static inline pt_vf pt_vrelu(pt_vf x) {
    /* max(x, 0) that keeps NaN */
    return pt_vselect_gt(pt_vzero(), x, pt_vzero(), x);
}

#endif /* PT_VMATH_H */
