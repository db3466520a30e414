/* step_matrix.h -- a packed weight of any compute type, as the fused layer
 * steps (csrc/layers/) hold their weights: y (M x N) = act(x (M x K) . W +
 * bias) by the kernel of that type, the one its Python object's matmul
 * would call (the Python boundary, _kernels_layers.pxi, fills it). */
#ifndef PT_LAYERS_STEP_MATRIX_H
#define PT_LAYERS_STEP_MATRIX_H

#include <stdint.h>
#include "runtime/cpu.h"

enum { PT_MAT_F32 = 0, PT_MAT_BF16 = 1, PT_MAT_I8 = 2, PT_MAT_Q = 3 };
typedef struct {
    int kind;                  /* PT_MAT_* */
    const void *packed;        /* pt_packed_b / _bf16 / _i8 / _q */
    pt_bgemm_packed_fn bf16;   /* the bf16 kernel chosen (kind BF16) */
    pt_igemm_packed_fn i8;     /* the int8 kernel chosen (kind I8) */
    int64_t K, N;
    const float *bias;         /* N floats or NULL */
} pt_step_matrix;

static inline int pt_step_linear(const pt_kernel_table *kt, const pt_step_matrix *w, float *y,
                                 const float *x, int64_t M, int act, int nthreads) {
    switch (w->kind) {
    case PT_MAT_BF16:
        return w->bf16(y, w->N, x, w->K, M, (const pt_packed_bf16 *)w->packed, w->bias, act,
                       nthreads);
    case PT_MAT_I8:
        return w->i8(y, w->N, x, w->K, M, (const pt_packed_i8 *)w->packed, w->bias, act,
                     nthreads);
    case PT_MAT_Q:
        return kt->qgemm_packed(y, w->N, x, w->K, M, (const pt_packed_q *)w->packed, w->bias,
                                act, nthreads);
    default:
        return kt->sgemm_packed(y, w->N, x, w->K, M, (const pt_packed_b *)w->packed, w->bias,
                                act, nthreads);
    }
}

#endif
