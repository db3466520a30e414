/* rmsnorm.h -- root-mean-square layer normalisation (Zhang & Sennrich 2019),
 * the pre-norm of Llama-family decoders, over the last n values of each row. */
#ifndef PT_RMSNORM_H
#define PT_RMSNORM_H

#include <stdint.h>
#include "runtime/simd.h"

/* y = x / sqrt(mean(x^2) + eps) * weight, row by row (no mean subtracted, no
 * bias), as torch.nn.functional.rms_norm.  weight: n floats or NULL (1).
 * Each row's sum of squares runs in an order set by n alone, so a row's bits
 * do not depend on the other rows or on the thread count.  y may alias x. */
PT_DECLARE_VARIANTS(void, pt_rms_norm, (float *y, const float *x, const float *weight,
                                        int64_t rows, int64_t n, float eps, int nthreads))

/* Naive twin: the mean of squares in double. */
void pt_rms_norm_ref(float *y, const float *x, const float *weight, int64_t rows, int64_t n,
                     float eps);

#endif
