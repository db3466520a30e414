/* activation.c -- ReLU, GELU and SiLU over a flat float buffer. */
#include "rowwise/activation.h"
#include "runtime/vmath.h"

/* Split [0, n) into per-thread chunks of whole vectors; element-wise, so the
 * split cannot change any result. */
#define PT_ELEMENTWISE(NAME, VF)                                             \
    void PT_FN(NAME)(float *y, const float *x, int64_t n, int nthreads) {   \
        const int64_t per = 1 << 14; /* floats per task: 64 KiB */           \
        const int64_t ntasks = (n + per - 1) / per;                          \
        (void)nthreads;                                                      \
        _Pragma("omp parallel for num_threads(nthreads) if(ntasks > 1) schedule(static)") \
        for (int64_t t = 0; t < ntasks; t++) {                               \
            const int64_t lo = t * per, hi = lo + per < n ? lo + per : n;    \
            int64_t i = lo;                                                  \
            for (; i + PT_VL <= hi; i += PT_VL)                              \
                pt_vstore(y + i, VF(pt_vload(x + i)));                       \
            if (i < hi)                                                      \
                pt_vstore_tail(y + i, VF(pt_vload_tail(x + i, (size_t)(hi - i), 0.0f)), \
                               (size_t)(hi - i));                            \
        }                                                                    \
    }

PT_ELEMENTWISE(pt_relu, pt_vrelu)
PT_ELEMENTWISE(pt_gelu, pt_vgelu)
PT_ELEMENTWISE(pt_gelu_tanh, pt_vgelu_tanh)
PT_ELEMENTWISE(pt_silu, pt_vsilu)

#if PT_ISA == PT_ISA_SCALAR
void pt_relu_ref(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0.0f || x[i] != x[i] ? x[i] : 0.0f;
}

void pt_gelu_ref(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        y[i] = (float)(0.5 * v * erfc(-v * 0.70710678118654752440));
    }
}

void pt_gelu_tanh_ref(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        y[i] = (float)(0.5 * v * (1.0 + tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v))));
    }
}

void pt_silu_ref(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        y[i] = (float)(v / (1.0 + exp(-v)));
    }
}

void pt_act_ref(float *y, int64_t n, int act) {
    switch (act) {
    case PT_ACT_RELU: pt_relu_ref(y, y, n); break;
    case PT_ACT_GELU: pt_gelu_ref(y, y, n); break;
    case PT_ACT_GELU_TANH: pt_gelu_tanh_ref(y, y, n); break;
    case PT_ACT_SILU: pt_silu_ref(y, y, n); break;
    default: break;
    }
}
#endif
