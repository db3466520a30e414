/* step.h -- what the fused layer steps (csrc/layers/) share: a packed weight
 * of any compute type, y (M x N) = act(x (M x K) . W + bias) by the kernel
 * of that type, the one its Python object's matmul would call (the Python
 * boundary, _kernels_layers.pxi, fills it); the KV cache write; the
 * residual sum. */
#ifndef PT_LAYERS_STEP_H
#define PT_LAYERS_STEP_H

#include <stdint.h>
#include <string.h>
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

/* Each row's new key and value into the cache (N, heads, t_max, d) at its
 * position pos[n]: row n of the projection holds them at k[n * ld] and
 * v[n * ld], heads contiguous. */
static inline void pt_step_write_kv(float *cache_k, float *cache_v, int64_t t_max,
                                    const int64_t *pos, const float *k, const float *v,
                                    int64_t ld, int64_t N, int64_t heads, int64_t d) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < heads; j++) {
            int64_t at = ((n * heads + j) * t_max + pos[n]) * d;
            memcpy(cache_k + at, k + n * ld + j * d, sizeof(float) * (size_t)d);
            memcpy(cache_v + at, v + n * ld + j * d, sizeof(float) * (size_t)d);
        }
}

/* y += x, elementwise: the residual sum (numpy's np.add(y, x, out=y); the
 * sum is commutative, so either operand may be the one written). */
static inline void pt_step_add(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = y[i] + x[i];
}

#endif
