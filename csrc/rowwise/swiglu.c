/* swiglu.c -- SiLU(gate) * up over the rows of a fused gate/up projection. */
#include "rowwise/swiglu.h"
#include "runtime/vmath.h"

/* silu(g) = g * sigmoid(g) = g / (1 + exp(-g)); exp saturates to +inf for
 * g < -88.7, giving -0, and to 0 for large g, giving g: no NaN from the
 * formula itself. */
static inline pt_vf silu(pt_vf g) {
    return pt_vdiv(g, pt_vadd(pt_vset1(1.0f), pt_vexp(pt_vsub(pt_vzero(), g))));
}

static void silu_and_mul_row(float *y, const float *x, int64_t F) {
    const float *g = x, *u = x + F;
    int64_t j = 0;
    for (; j + PT_VL <= F; j += PT_VL)
        pt_vstore(y + j, pt_vmul(silu(pt_vload(g + j)), pt_vload(u + j)));
    if (j < F) {
        const size_t left = (size_t)(F - j);
        pt_vf v = pt_vmul(silu(pt_vload_tail(g + j, left, 0.0f)),
                          pt_vload_tail(u + j, left, 0.0f));
        pt_vstore_tail(y + j, v, left);
    }
}

void PT_FN(pt_silu_and_mul)(float *y, const float *x, int64_t rows, int64_t F, int nthreads) {
    (void)nthreads;
#pragma omp parallel for num_threads(nthreads) if(rows * F > 32768) schedule(static)
    for (int64_t r = 0; r < rows; r++)
        silu_and_mul_row(y + r * F, x + r * 2 * F, F);
}

#if PT_ISA == PT_ISA_SCALAR
void pt_silu_and_mul_ref(float *y, const float *x, int64_t rows, int64_t F) {
    for (int64_t r = 0; r < rows; r++) {
        const float *g = x + r * 2 * F, *u = g + F;
        for (int64_t j = 0; j < F; j++) {
            const double gj = g[j];
            y[r * F + j] = (float)(gj / (1.0 + exp(-gj)) * (double)u[j]);
        }
    }
}
#endif
