/* activation.h -- element-wise activations of the position-wise feed-forward
 * network: ReLU, GELU (exact erf form and tanh approximation) and SiLU
 * (swish, x sigmoid(x)). */
#ifndef PT_ACTIVATION_H
#define PT_ACTIVATION_H

#include <stdint.h>
#include "runtime/simd.h"

/* The activation a kernel applies in its epilogue (the GEMM's act). */
enum { PT_ACT_NONE = 0, PT_ACT_RELU = 1, PT_ACT_GELU = 2, PT_ACT_GELU_TANH = 3,
       PT_ACT_SILU = 4 };

/* y[i] = f(x[i]) for i < n; y may alias x. */
PT_DECLARE_VARIANTS(void, pt_relu, (float *y, const float *x, int64_t n, int nthreads))
PT_DECLARE_VARIANTS(void, pt_gelu, (float *y, const float *x, int64_t n, int nthreads))
PT_DECLARE_VARIANTS(void, pt_gelu_tanh, (float *y, const float *x, int64_t n, int nthreads))
PT_DECLARE_VARIANTS(void, pt_silu, (float *y, const float *x, int64_t n, int nthreads))

/* Naive twins on libm (erfc, tanh, exp), in double where it is free. */
void pt_relu_ref(float *y, const float *x, int64_t n);
void pt_gelu_ref(float *y, const float *x, int64_t n);
void pt_gelu_tanh_ref(float *y, const float *x, int64_t n);
void pt_silu_ref(float *y, const float *x, int64_t n);
/* y[0 .. n) = act(y) in place by the twin of PT_ACT_* `act` (NONE: as is):
 * the epilogue of every GEMM twin. */
void pt_act_ref(float *y, int64_t n, int act);

#endif
