/* llama_layer.h -- one Llama-family decoder layer's decoding step in one C
 * call: the step of models.llama.LlamaDecoderLayer.step (the readable
 * composition in Python, which the tests compare this with bit for bit).
 *
 * For one new position of each of N sequences, pre-norm:
 *
 *   x = x + W^O Attention(RoPE(W^Q h), RoPE(W^K h) and the cache, W^V h ...),
 *       h = RMSNorm(x)
 *   x = x + W_down (SiLU(h W_gate) * (h W_up)),  h = RMSNorm(x)
 *
 * with grouped-query attention: query head j reads kv head j / (Hq / Hkv)
 * of the cache where it lies.  It composes the kernels' own functions with
 * the arguments the Python composition passes them, in the same order.
 * Compiled once; everything here is trusted (checked by
 * _kernels_layers.pxi).
 */
#ifndef PT_LAYERS_LLAMA_LAYER_H
#define PT_LAYERS_LLAMA_LAYER_H

#include <stdint.h>
#include "layers/step.h"
#include "runtime/mask.h"

typedef struct {
    int64_t E, heads, kv_heads, head_dim, ff;
    int rope_layout;                 /* PT_ROPE_HALVES / PT_ROPE_PAIRS */
    const float *inv_freq;           /* head_dim / 2 */
    pt_step_matrix qkv;              /* E -> (Hq + 2 Hkv) D, rows q | k | v */
    pt_step_matrix o;                /* Hq D -> E */
    pt_step_matrix gate_up;          /* E -> 2 ff, rows gate | up */
    pt_step_matrix down;             /* ff -> E */
    const float *norm_w[2];          /* input_layernorm, post_attention_layernorm */
    float eps[2];
} pt_llama_layer;

/* The layer's cache for N sequences: k, v (N, Hkv, t_max, D), row n at
 * n * Hkv * t_max * D.  pos (N): the position each sequence writes now; S:
 * the positions attended (0..S-1); keep: (N, Hq) batches of one query over
 * S keys (False past a row's own position), or NULL when every row is at
 * position S - 1. */
typedef struct {
    float *k, *v;
    int64_t t_max;
    const int64_t *pos;
    int64_t S;
    const pt_mask *keep;
} pt_llama_layer_state;

/* x (N x E, C-contiguous) <- the layer's output.  PT_OK; PT_ERR_NOMEM before
 * anything is written when its scratch cannot be had; otherwise a kernel's
 * status, with x and the cache partly written (the step is abandoned). */
int pt_llama_layer_step(const pt_kernel_table *kt, const pt_llama_layer *L,
                        const pt_llama_layer_state *st, float *x, int64_t N, int nthreads);

#endif
