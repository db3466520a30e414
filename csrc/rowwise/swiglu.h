/* swiglu.h -- the gate of a SwiGLU feed-forward network (Shazeer 2020, "GLU
 * Variants Improve Transformer"): FFN(x) = (SiLU(x W_gate) * x W_up) W_down.
 * The gate and up projections are one GEMM whose output rows are
 * [gate | up]; this kernel turns each such row into SiLU(gate) * up. */
#ifndef PT_SWIGLU_H
#define PT_SWIGLU_H

#include <stdint.h>
#include "runtime/simd.h"

/* x: rows of 2F floats [g_0..g_{F-1} | u_0..u_{F-1}]; y: rows of F floats,
 * y[j] = silu(g_j) * u_j with silu(g) = g / (1 + exp(-g)) (torch's formula,
 * rounded where torch rounds: silu, then the product).  y must not overlap
 * x.  Element-wise: no result depends on the thread split. */
PT_DECLARE_VARIANTS(void, pt_silu_and_mul, (float *y, const float *x, int64_t rows, int64_t F,
                                            int nthreads))

/* Naive twin: libm exp in double. */
void pt_silu_and_mul_ref(float *y, const float *x, int64_t rows, int64_t F);

#endif
