/* ukernel_f32.h -- the fp32 micro-kernels, one per path, named by their
 * tile: ukernel_avx512_12x32, ukernel_avx2_6x16, ukernel_scalar_4x4, and
 * their wide variants for one to three rows.
 *
 * A header of static functions, included by the files whose loops call them
 * (gemm.c, gemv.c): the tile body is always inlined into its instance, and
 * the loops never call across translation units.
 */
#ifndef PT_GEMM_UKERNEL_F32_H
#define PT_GEMM_UKERNEL_F32_H

#include "gemm/gemm.h"
#include "gemm/tiles.h"
#include "runtime/vmath.h"

#if PT_ISA == PT_ISA_SCALAR
/* Written as multiply then add (with -std=c11 the compiler does not contract
 * it into an FMA), so the scalar path is the same on every machine. */
#define MADD(a, b, c) ((c) + (a) * (b))
#else
#define MADD(a, b, c) pt_vfmadd(a, b, c)
#endif

/* ------------------------------------------------------------------------ */
/* Micro-kernel: C[m x nr] (+)= a[m x kc] . b[kc x NR], m <= MR, nr <= NR.    */
/*                                                                          */
/* a: packed micro-panel (kc x MR); b: kc rows of NR readable floats, row    */
/* stride ldbk (NR in a packed panel, ldb when B is read in place).          */
/* first: C is overwritten (first K block) instead of accumulated into.     */
/* last:  the epilogue runs -- + bias[nr] (may be NULL), then act.           */
/* Columns past nr are computed from zero padding and never stored; rows     */
/* past m are not computed.  M_ is a compile-time constant in every caller.  */
/* ------------------------------------------------------------------------ */
PT_ALWAYS_INLINE pt_vf apply_act(pt_vf x, int act) {
    switch (act) {
    case PT_ACT_RELU: return pt_vrelu(x);
    case PT_ACT_GELU: return pt_vgelu(x);
    case PT_ACT_GELU_TANH: return pt_vgelu_tanh(x);
    case PT_ACT_SILU: return pt_vsilu(x);
    default: return x;
    }
}

/* The store of an M_ x NVEC-vector tile of accumulators acc[r][v] into C
 * (rows ldc apart, nr live columns): added to C unless `first`, and on the
 * `last` K block with the bias and the activation fused.  CAP, a constant at
 * least NVEC, sizes the bias vectors.  One definition for the fp32 and bf16
 * micro-kernels, expanded in each with its own compile-time sizes. */
#define PT_STORE_TILE(acc, M_, NVEC, CAP, C, ldc, nr, first, last, bias, act)           \
    do {                                                                             \
        pt_vf bias_v_[CAP];                                                          \
        if (last)                                                                    \
            for (int v = 0; v < (NVEC); v++) {                                       \
                int64_t n = (nr) - v * PT_VL;                                        \
                n = n < 0 ? 0 : n > PT_VL ? PT_VL : n;                               \
                bias_v_[v] = !(bias) || n == 0 ? pt_vzero()                          \
                             : n == PT_VL ? pt_vload((bias) + v * PT_VL)             \
                             : pt_vload_tail((bias) + v * PT_VL, (size_t)n, 0.0f);   \
            }                                                                        \
        for (int r = 0; r < (M_); r++) {                                             \
            float *c_ = (C) + r * (ldc);                                             \
            for (int v = 0; v < (NVEC); v++) {                                       \
                int64_t n = (nr) - v * PT_VL;                                        \
                if (n <= 0) break;                                                   \
                pt_vf x = (acc)[r][v];                                               \
                if (n >= PT_VL) {                                                    \
                    if (!(first)) x = pt_vadd(pt_vload(c_ + v * PT_VL), x);          \
                    if (last) {                                                      \
                        if (bias) x = pt_vadd(x, bias_v_[v]);                        \
                        x = apply_act(x, (act));                                     \
                    }                                                                \
                    pt_vstore(c_ + v * PT_VL, x);                                    \
                } else {                                                             \
                    if (!(first))                                                    \
                        x = pt_vadd(pt_vload_tail(c_ + v * PT_VL, (size_t)n, 0.0f), x); \
                    if (last) {                                                      \
                        if (bias) x = pt_vadd(x, bias_v_[v]);                        \
                        x = apply_act(x, (act));                                     \
                    }                                                                \
                    pt_vstore_tail(c_ + v * PT_VL, x, (size_t)n);                    \
                }                                                                    \
            }                                                                        \
        }                                                                            \
    } while (0)

#define PT_PF_K 32   /* rows of B prefetched ahead in the k loop */

PT_ALWAYS_INLINE void ukernel_body(const int M_, const int NP_, int64_t kc, const float *restrict a,
                            const float *restrict b, int64_t ldbk, int64_t pstride,
                            float *restrict C, int64_t ldc, int64_t nr, int first, int last,
                            const float *restrict bias, int act) {
    pt_vf acc[MR][WIDE_V];
    for (int r = 0; r < M_; r++)
        for (int v = 0; v < NP_ * NV; v++) acc[r][v] = pt_vzero();
#if PT_ISA != PT_ISA_SCALAR
    /* fetch the C tile while the k loop runs: its rows are far apart (ldc)
     * and would otherwise be missed one by one at the store */
    for (int r = 0; r < M_; r++)
        for (int v = 0; v < NP_ * NV * PT_VL; v += 16)
            _mm_prefetch((const char *)(C + r * ldc + v), _MM_HINT_T0);
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 4
#endif
    for (int64_t k = 0; k < kc; k++) {
        pt_vf bv[WIDE_V];
#if PT_ISA != PT_ISA_SCALAR
        /* One panel at a time, B streams from memory when few rows share it
         * (small batches, beam search): fetch it PT_PF_K rows ahead, across
         * the page boundaries the hardware prefetcher stops at.  (The wide
         * instances read several panels at once and need no help.)  A
         * prefetch never faults, past the panel's end included; the
         * arithmetic is unchanged. */
        if (NP_ == 1)
            for (int o = 0; o < NR; o += 16)
                _mm_prefetch((const char *)(b + (k + PT_PF_K) * ldbk + o), _MM_HINT_T0);
#endif
        for (int p = 0; p < NP_; p++)
            for (int v = 0; v < NV; v++)
                bv[p * NV + v] = pt_vload(b + p * pstride + k * ldbk + v * PT_VL);
        for (int r = 0; r < M_; r++) {
            pt_vf av = pt_vset1(a[k * MR + r]);
            for (int v = 0; v < NP_ * NV; v++) acc[r][v] = MADD(av, bv[v], acc[r][v]);
        }
    }

    /* the store, with the epilogue fused */
    PT_STORE_TILE(acc, M_, NP_ * NV, WIDE_V, C, ldc, nr, first, last, bias, act);
}

/* The loops call a tile through these two dispatchers, kept out of line: a
 * file that calls one from a single place would otherwise get a dozen tile
 * instances inlined into its loops, for the tail tiles alone. */
#if defined(__GNUC__) || defined(__clang__)
#define PT_UK_DISPATCH static __attribute__((noinline)) void
#else
#define PT_UK_DISPATCH static void
#endif

/* One entry point per path, named by its tile; m selects an instance with
 * that many live rows (all perform the same per-element arithmetic). */
PT_UK_DISPATCH UKERNEL(int m, int64_t kc, const float *a, const float *b, int64_t ldbk,
                       float *C, int64_t ldc, int64_t nr, int first, int last,
                       const float *bias, int act) {
#define PT_UK_CASE(R) \
    case R: ukernel_body(R, 1, kc, a, b, ldbk, 0, C, ldc, nr, first, last, bias, act); break;
    switch (m) {
    PT_UK_CASE(1) PT_UK_CASE(2) PT_UK_CASE(3) PT_UK_CASE(4)
#if MR > 4
    PT_UK_CASE(5) PT_UK_CASE(6)
#endif
#if MR > 6
    PT_UK_CASE(7) PT_UK_CASE(8) PT_UK_CASE(9) PT_UK_CASE(10) PT_UK_CASE(11) PT_UK_CASE(12)
#endif
    default: break;
    }
#undef PT_UK_CASE
}

/* Wide instances for 1..3 rows (decoding): one or two rows give the MR x NR
 * tile only 2-4 FMA chains, too few to cover the FMA latency, so these span
 * wide_panels(m) NR-panels at once (panel p at b + p*pstride).  Each element
 * still sees exactly the FMA chain of the MR x NR tile: same bits. */
static inline int wide_panels(int m) {
    return m == 1 ? WIDE_NP1 : m == 2 ? WIDE_NP2 : m == 3 ? WIDE_NP3 : 1;
}

PT_UK_DISPATCH UKERNEL_WIDE(int m, int64_t kc, const float *a, const float *b, int64_t ldbk,
                            int64_t pstride, float *C, int64_t ldc, int64_t nr, int first,
                            int last, const float *bias, int act) {
    switch (m) {
    case 1: ukernel_body(1, WIDE_NP1, kc, a, b, ldbk, pstride, C, ldc, nr, first, last, bias, act); break;
    case 2: ukernel_body(2, WIDE_NP2, kc, a, b, ldbk, pstride, C, ldc, nr, first, last, bias, act); break;
    case 3: ukernel_body(3, WIDE_NP3, kc, a, b, ldbk, pstride, C, ldc, nr, first, last, bias, act); break;
    default: break;
    }
}

#endif
