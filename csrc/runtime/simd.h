/* simd.h -- one vocabulary for the three kernel paths.
 *
 * Every kernel file in csrc/ is compiled three times by setup.py with
 * -DPT_ISA=0 (portable scalar C), 1 (AVX2 + FMA) or 2 (AVX-512).  PT_FN(name)
 * gives each compilation its own symbol (name_scalar, name_avx2, name_avx512);
 * cpu.c chooses one at run time.  Kernels written against pt_vf / PT_VL below
 * are the same source on every path; code that needs one ISA's instructions
 * (the GEMM micro-kernels) tests PT_ISA directly.
 *
 * Naive reference kernels (the "twins" used by tests) are compiled on the
 * scalar pass only: wrap them in #if PT_ISA == PT_ISA_SCALAR.
 */
#ifndef PT_SIMD_H
#define PT_SIMD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define PT_ISA_SCALAR 0
#define PT_ISA_AVX2 1
#define PT_ISA_AVX512 2

#ifndef PT_ISA
#define PT_ISA PT_ISA_SCALAR
#endif

#define PT_CAT_(a, b) a##_##b
#define PT_CAT(a, b) PT_CAT_(a, b)
#if PT_ISA == PT_ISA_AVX512
#define PT_ISA_SUFFIX avx512
#elif PT_ISA == PT_ISA_AVX2
#define PT_ISA_SUFFIX avx2
#else
#define PT_ISA_SUFFIX scalar
#endif
/* PT_FN(pt_relu) -> pt_relu_avx512 on the AVX-512 pass, and so on. */
#define PT_FN(name) PT_CAT(name, PT_ISA_SUFFIX)

/* For the register-tiled inner functions: they must be inlined into their
 * callers, whose compile-time tile shapes (rows, panels) they are specialised
 * for; a call there would spill the accumulators. */
#if defined(__GNUC__) || defined(__clang__)
#define PT_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define PT_ALWAYS_INLINE static inline
#endif

/* Declare the three compiled variants of a kernel in a header. */
#define PT_DECLARE_VARIANTS(ret, name, args) \
    ret name##_scalar args;                  \
    ret name##_avx2 args;                    \
    ret name##_avx512 args;

#if defined(_OPENMP)
#include <omp.h>
#endif

#if PT_ISA != PT_ISA_SCALAR
#include <immintrin.h>
#endif

/* ------------------------------------------------------------------------ */
/* pt_vf: a vector of PT_VL floats.                                          */
/* ------------------------------------------------------------------------ */
#if PT_ISA == PT_ISA_AVX512
#define PT_VL 16
typedef __m512 pt_vf;
typedef __m512i pt_vi;
typedef __mmask16 pt_vmask;
static inline pt_vf pt_vzero(void) { return _mm512_setzero_ps(); }
static inline pt_vf pt_vset1(float a) { return _mm512_set1_ps(a); }
static inline pt_vf pt_vload(const float *p) { return _mm512_loadu_ps(p); }
static inline void pt_vstore(float *p, pt_vf a) { _mm512_storeu_ps(p, a); }
static inline pt_vf pt_vadd(pt_vf a, pt_vf b) { return _mm512_add_ps(a, b); }
static inline pt_vf pt_vsub(pt_vf a, pt_vf b) { return _mm512_sub_ps(a, b); }
static inline pt_vf pt_vmul(pt_vf a, pt_vf b) { return _mm512_mul_ps(a, b); }
static inline pt_vf pt_vdiv(pt_vf a, pt_vf b) { return _mm512_div_ps(a, b); }
static inline pt_vf pt_vfmadd(pt_vf a, pt_vf b, pt_vf c) { return _mm512_fmadd_ps(a, b, c); }
/* max/min that propagate NaN from either operand, like torch. */
static inline pt_vf pt_vmax(pt_vf a, pt_vf b) {
    __mmask16 nan = _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    return _mm512_mask_blend_ps(nan, _mm512_max_ps(a, b), a);
}
static inline pt_vf pt_vmin(pt_vf a, pt_vf b) {
    __mmask16 nan = _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    return _mm512_mask_blend_ps(nan, _mm512_min_ps(a, b), a);
}
static inline pt_vf pt_vabs(pt_vf a) { return _mm512_abs_ps(a); }
/* min(hi, max(lo, x)); NaN in x stays NaN (maxps/minps return their second
 * operand when either is NaN). */
static inline pt_vf pt_vclamp(pt_vf x, pt_vf lo, pt_vf hi) {
    return _mm512_min_ps(hi, _mm512_max_ps(lo, x));
}
/* Max over lanes; NaN lanes may be ignored (callers that care check). */
static inline float pt_vreduce_max(pt_vf a) { return _mm512_reduce_max_ps(a); }
static inline pt_vf pt_vmax_fast(pt_vf a, pt_vf b) { return _mm512_max_ps(a, b); }
static inline float pt_vreduce_add(pt_vf a) { return _mm512_reduce_add_ps(a); }
/* First n (< PT_VL) lanes; the rest read as `fill` and are never stored. */
static inline pt_vf pt_vload_tail(const float *p, size_t n, float fill) {
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), (__mmask16)((1u << n) - 1u), p);
}
static inline void pt_vstore_tail(float *p, pt_vf a, size_t n) {
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), a);
}
static inline pt_vf pt_vselect_gt(pt_vf a, pt_vf b, pt_vf x, pt_vf y) { /* a > b ? x : y */
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), y, x);
}
/* v where keep[l] != 0, else -inf: PT_VL bytes of a bool mask. */
static inline pt_vf pt_vkeep(const uint8_t *keep, pt_vf v) {
    __m512i k = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)keep));
    return _mm512_mask_blend_ps(_mm512_test_epi32_mask(k, k), _mm512_set1_ps(-INFINITY), v);
}
/* 2^n for integral-valued float n in [-126, 127]. */
static inline pt_vf pt_vpow2i(pt_vf n) {
    __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
}
static inline pt_vf pt_vround(pt_vf a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

#elif PT_ISA == PT_ISA_AVX2
#define PT_VL 8
typedef __m256 pt_vf;
static inline pt_vf pt_vzero(void) { return _mm256_setzero_ps(); }
static inline pt_vf pt_vset1(float a) { return _mm256_set1_ps(a); }
static inline pt_vf pt_vload(const float *p) { return _mm256_loadu_ps(p); }
static inline void pt_vstore(float *p, pt_vf a) { _mm256_storeu_ps(p, a); }
static inline pt_vf pt_vadd(pt_vf a, pt_vf b) { return _mm256_add_ps(a, b); }
static inline pt_vf pt_vsub(pt_vf a, pt_vf b) { return _mm256_sub_ps(a, b); }
static inline pt_vf pt_vmul(pt_vf a, pt_vf b) { return _mm256_mul_ps(a, b); }
static inline pt_vf pt_vdiv(pt_vf a, pt_vf b) { return _mm256_div_ps(a, b); }
static inline pt_vf pt_vfmadd(pt_vf a, pt_vf b, pt_vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline pt_vf pt_vmax(pt_vf a, pt_vf b) {
    __m256 nan = _mm256_cmp_ps(a, a, _CMP_UNORD_Q);
    return _mm256_blendv_ps(_mm256_max_ps(a, b), a, nan);
}
static inline pt_vf pt_vmin(pt_vf a, pt_vf b) {
    __m256 nan = _mm256_cmp_ps(a, a, _CMP_UNORD_Q);
    return _mm256_blendv_ps(_mm256_min_ps(a, b), a, nan);
}
static inline pt_vf pt_vabs(pt_vf a) {
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a);
}
static inline pt_vf pt_vclamp(pt_vf x, pt_vf lo, pt_vf hi) {
    return _mm256_min_ps(hi, _mm256_max_ps(lo, x));
}
static inline float pt_vreduce_max(pt_vf a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline pt_vf pt_vmax_fast(pt_vf a, pt_vf b) { return _mm256_max_ps(a, b); }
static inline float pt_vreduce_add(pt_vf a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline __m256i pt_avx2_tail_mask(size_t n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), idx);
}
static inline pt_vf pt_vload_tail(const float *p, size_t n, float fill) {
    __m256i m = pt_avx2_tail_mask(n);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m),
                            _mm256_castsi256_ps(m));
}
static inline void pt_vstore_tail(float *p, pt_vf a, size_t n) {
    _mm256_maskstore_ps(p, pt_avx2_tail_mask(n), a);
}
static inline pt_vf pt_vselect_gt(pt_vf a, pt_vf b, pt_vf x, pt_vf y) {
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_GT_OQ));
}
static inline pt_vf pt_vkeep(const uint8_t *keep, pt_vf v) {
    __m256i k = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)keep));
    __m256 drop = _mm256_castsi256_ps(_mm256_cmpeq_epi32(k, _mm256_setzero_si256()));
    return _mm256_blendv_ps(v, _mm256_set1_ps(-INFINITY), drop);
}
static inline pt_vf pt_vpow2i(pt_vf n) {
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
}
static inline pt_vf pt_vround(pt_vf a) {
    return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

#else /* portable scalar: a "vector" of one float */
#define PT_VL 1
typedef float pt_vf;
static inline pt_vf pt_vzero(void) { return 0.0f; }
static inline pt_vf pt_vset1(float a) { return a; }
static inline pt_vf pt_vload(const float *p) { return *p; }
static inline void pt_vstore(float *p, pt_vf a) { *p = a; }
static inline pt_vf pt_vadd(pt_vf a, pt_vf b) { return a + b; }
static inline pt_vf pt_vsub(pt_vf a, pt_vf b) { return a - b; }
static inline pt_vf pt_vmul(pt_vf a, pt_vf b) { return a * b; }
static inline pt_vf pt_vdiv(pt_vf a, pt_vf b) { return a / b; }
static inline pt_vf pt_vfmadd(pt_vf a, pt_vf b, pt_vf c) { return fmaf(a, b, c); }
static inline pt_vf pt_vmax(pt_vf a, pt_vf b) { return (a != a) ? a : (b != b ? b : (a > b ? a : b)); }
static inline pt_vf pt_vmin(pt_vf a, pt_vf b) { return (a != a) ? a : (b != b ? b : (a < b ? a : b)); }
static inline pt_vf pt_vabs(pt_vf a) { return fabsf(a); }
static inline pt_vf pt_vclamp(pt_vf x, pt_vf lo, pt_vf hi) { return x < lo ? lo : (x > hi ? hi : x); }
static inline float pt_vreduce_max(pt_vf a) { return a; }
static inline pt_vf pt_vmax_fast(pt_vf a, pt_vf b) { return a > b ? a : b; }
static inline float pt_vreduce_add(pt_vf a) { return a; }
static inline pt_vf pt_vload_tail(const float *p, size_t n, float fill) { return n ? *p : fill; }
static inline void pt_vstore_tail(float *p, pt_vf a, size_t n) { if (n) *p = a; }
static inline pt_vf pt_vselect_gt(pt_vf a, pt_vf b, pt_vf x, pt_vf y) { return a > b ? x : y; }
static inline pt_vf pt_vkeep(const uint8_t *keep, pt_vf v) { return *keep ? v : -INFINITY; }
static inline pt_vf pt_vpow2i(pt_vf n) { return n != n ? n : ldexpf(1.0f, (int)n); }
static inline pt_vf pt_vround(pt_vf a) { return nearbyintf(a); }
#endif

#endif /* PT_SIMD_H */
