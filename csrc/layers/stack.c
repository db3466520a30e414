/* stack.c -- a decoder stack's decoding step in one call (see stack.h):
 * the layers' own steps in order, then what the model's decode_step does
 * after them -- its final norm, its output projection -- with the kernels
 * and operands the Python composition uses, so the bits are its bits. */
#include <string.h>
#include "layers/stack.h"
#include "runtime/mem.h"
#include "runtime/status.h"

int pt_stack_step(const pt_kernel_table *kt, const pt_stack *s, float *x, int64_t N,
                  float *logits, int nthreads) {
    if (N <= 0) return PT_OK;
    for (int64_t i = 0; i < s->n_layers; i++) {
        int status = s->kind == PT_STACK_LLAMA
                         ? pt_llama_layer_step(kt, &s->llama[i], &s->llama_st[i], x, N, nthreads)
                         : pt_decoder_layer_step(kt, &s->dec[i], &s->dec_st[i], x, N, nthreads);
        if (status != PT_OK) return status;
    }
    size_t nE = (size_t)(N * s->E);
    if (s->norm != PT_NORM_NONE) {   /* LayerNorm.step / RMSNorm.step: into a new array */
        float *h = pt_alloc(sizeof(float) * nE);
        if (!h) return PT_ERR_NOMEM;
        if (s->norm == PT_NORM_RMS)
            kt->rms_norm(h, x, s->norm_w, N, s->E, s->eps, nthreads);
        else
            kt->layer_norm(h, x, s->norm_w, s->norm_b, N, s->E, s->eps, nthreads);
        memcpy(x, h, sizeof(float) * nE);
        pt_free(h);
    }
    if (!s->has_head) return PT_OK;
    /* Linear.step: the generator / lm_head */
    return pt_step_linear(kt, &s->head, logits, x, N, PT_ACT_NONE, nthreads);
}
