/* stack.h -- a whole decoder stack's decoding step in one C call: every
 * layer's step in order (decoder_layer.c, or llama_layer.c for a Llama
 * stack), the final norm, and the output projection to the vocabulary's
 * logits.  The step of a model's decode_step (Seq2SeqTransformer, GPT-2,
 * Llama) with no Python between its layers; the Python composition stays
 * the readable reference the tests compare it with bit for bit.
 *
 * Everything here is trusted: the Python boundary (_kernels_layers.pxi,
 * StackStep) checks every layer's weights, cache and indices first.
 */
#ifndef PT_LAYERS_STACK_H
#define PT_LAYERS_STACK_H

#include <stdint.h>
#include "layers/decoder_layer.h"
#include "layers/llama_layer.h"

enum { PT_STACK_DECODER = 0, PT_STACK_LLAMA = 1 };
enum { PT_NORM_NONE = 0, PT_NORM_LAYER = 1, PT_NORM_RMS = 2 };

typedef struct {
    int kind;                               /* PT_STACK_* */
    int64_t n_layers, E;
    const pt_decoder_layer *dec;            /* n_layers of each (kind DECODER) */
    const pt_decoder_layer_state *dec_st;
    const pt_llama_layer *llama;            /* n_layers of each (kind LLAMA) */
    const pt_llama_layer_state *llama_st;
    int norm;                               /* PT_NORM_*: the stack's final norm */
    const float *norm_w, *norm_b;           /* E floats each, or NULL */
    float eps;
    int has_head;                           /* 1: the output projection E -> head.N */
    pt_step_matrix head;
} pt_stack;

/* x (N x E, C-contiguous) <- the stack's output after its final norm;
 * logits (N x head.N) <- the output projection of it, where the stack has
 * one (else logits is not touched).  PT_OK, PT_ERR_NOMEM before anything is
 * written when scratch cannot be had, or a kernel's status (the step is
 * abandoned: x, logits and the caches hold partial results). */
int pt_stack_step(const pt_kernel_table *kt, const pt_stack *s, float *x, int64_t N,
                  float *logits, int nthreads);

#endif
