/* layernorm.h -- layer normalisation over the last n values of each row. */
#ifndef PT_LAYERNORM_H
#define PT_LAYERNORM_H

#include <stdint.h>
#include "runtime/simd.h"

/* y = (x - mean) / sqrt(var + eps) * weight + bias, row by row, with the
 * biased variance (divide by n) and eps inside the square root, as torch.
 * weight, bias: n floats or NULL (1 and 0).  y may alias x. */
PT_DECLARE_VARIANTS(void, pt_layer_norm, (float *y, const float *x, const float *weight,
                                          const float *bias, int64_t rows, int64_t n,
                                          float eps, int nthreads))

void pt_layer_norm_ref(float *y, const float *x, const float *weight, const float *bias,
                       int64_t rows, int64_t n, float eps);

#endif
