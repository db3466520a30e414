/* decoder_layer.h -- one Transformer decoder layer's decoding step in one C
 * call: the step of nn.TransformerDecoderLayer.forward_step (the readable
 * composition in Python, which the tests compare this with bit for bit).
 *
 * Section 3.1 of the paper, for one new position of each of N sequences:
 *
 *   x = AddNorm(x, masked multi-head self-attention over the KV cache)
 *   x = AddNorm(x, multi-head attention over the encoder's keys and values)
 *   x = AddNorm(x, position-wise feed-forward network)
 *
 * (the second without cross attention in a decoder-only stack: GPT-2's
 * blocks) with AddNorm(x, f) = LayerNorm(x + f(x)) (post-LN, the paper's) or
 * x + f(LayerNorm(x)) (pre-LN).  It composes the kernels' own functions --
 * the packed GEMMs, layer norm, fused attention -- called with the same
 * arguments, in the same order, as the Python composition calls them, so
 * its bits are the Python step's.  Compiled once: it calls the kernels
 * through the kernel table of the path the caller chose.
 *
 * Everything here is trusted: the Python boundary (_kernels_layers.pxi)
 * checks every shape, stride and index before the call.
 */
#ifndef PT_LAYERS_DECODER_LAYER_H
#define PT_LAYERS_DECODER_LAYER_H

#include <stdint.h>
#include "layers/step.h"
#include "runtime/mask.h"

typedef struct {
    int64_t E, heads, head_dim, ff;             /* E = heads * head_dim */
    int norm_first;                             /* pre-LN when 1 */
    int cross;                                  /* 1: a cross-attention sub-layer (norm2) */
    int act;                                    /* PT_ACT_* of the feed-forward */
    pt_step_matrix qkv;                         /* self-attention W^Q,K,V fused: E -> 3E */
    pt_step_matrix self_out;                    /* W^O: E -> E */
    pt_step_matrix cross_q, cross_out;          /* encoder-decoder attention: E -> E
                                                   (unused without cross) */
    pt_step_matrix ff1, ff2;                    /* E -> ff -> E */
    const float *norm_w[3], *norm_b[3];         /* the sub-layers' norms, in order
                                                   (each may be NULL) */
    float eps[3];
} pt_decoder_layer;

/* The layer's state for N sequences.  self_k, self_v: (N, h, t_max, d), row
 * n at n * h * t_max * d; each row writes its new key and value at pos[n]
 * and attends to positions 0..S-1 -- self_keep, batches (N, h) of one query
 * over S keys, False past a row's own position, or NULL when every row is
 * at position S - 1.  cross_k, cross_v: (N0, h, S_mem, d); batch r*h + j of
 * the cross attention reads batch cross_index[r*h + j] (N*h entries);
 * cross_mask: the memory padding mask (batches (N, h), one query, S_mem
 * keys) or NULL.  A layer without cross attention (L->cross == 0: GPT-2's
 * blocks, a decoder-only stack) reads none of the cross fields. */
typedef struct {
    float *self_k, *self_v;
    int64_t t_max;
    const int64_t *pos;
    int64_t S;
    const pt_mask *self_keep;
    const float *cross_k, *cross_v;
    int64_t S_mem;
    const int64_t *cross_index;
    const pt_mask *cross_mask;
} pt_decoder_layer_state;

/* x (N x E, C-contiguous) <- the layer's output.  PT_OK; PT_ERR_NOMEM
 * before anything is written when its scratch cannot be had; otherwise a
 * kernel's status, after which x and the cache hold partial results (the
 * step is to be abandoned). */
int pt_decoder_layer_step(const pt_kernel_table *kt, const pt_decoder_layer *L,
                          const pt_decoder_layer_state *st, float *x, int64_t N,
                          int nthreads);

#endif
