/* decoder_layer.c -- one decoder layer's decoding step in one call (see
 * decoder_layer.h).  Each block below mirrors a method of the Python
 * composition in pytransformer/nn: the same kernels on the same operands,
 * so the bits are the same. */
#include <math.h>
#include <string.h>
#include "layers/decoder_layer.h"
#include "runtime/mem.h"
#include "runtime/status.h"

/* LayerNorm.step: y = LayerNorm(x) over rows of E. */
static void norm(const pt_kernel_table *kt, const pt_decoder_layer *L, int i, float *y,
                 const float *x, int64_t N, int nthreads) {
    kt->layer_norm(y, x, L->norm_w[i], L->norm_b[i], N, L->E, L->eps[i], nthreads);
}

/* Scratch of one step, carved out of one allocation. */
typedef struct {
    float *qkv;   /* N x 3E: the fused projection; then N x E queries of the cross attention */
    float *q;     /* N x E: self-attention queries, contiguous per (sequence, head) */
    float *o;     /* N x E: Concat(head_1..head_h) */
    float *y;     /* N x E: a sub-layer's output, then x + it */
    float *h;     /* N x E: the normalised input (pre-LN) */
    float *f;     /* N x ff: the feed-forward's hidden layer */
} scratch;

/* MultiheadAttention.step_self_attention: W^Q,K,V x; each row's new key and
 * value written at its position; scaled dot-product attention of each
 * head's query over positions 0..S-1 (masked past a row's own); W^O. */
static int self_attention(const pt_kernel_table *kt, const pt_decoder_layer *L,
                          const pt_decoder_layer_state *st, const float *x, int64_t N,
                          const scratch *s, float *out, int nthreads) {
    int64_t E = L->E, h = L->heads, d = L->head_dim, T = st->t_max;
    int status = pt_step_linear(kt, &L->qkv, s->qkv, x, N, PT_ACT_NONE, nthreads);
    if (status != PT_OK) return status;
    for (int64_t n = 0; n < N; n++)
        memcpy(s->q + n * E, s->qkv + n * 3 * E, sizeof(float) * (size_t)E);
    pt_step_write_kv(st->self_k, st->self_v, T, st->pos, s->qkv + E, s->qkv + 2 * E, 3 * E, N,
                     h, d);
    float scale = (float)(1.0 / sqrt((double)d));
    status = kt->attention(s->o, s->q, NULL, st->self_k, NULL, T * d, st->self_v, NULL, T * d,
                           N * h, 1, st->S, d, d, scale, st->self_keep, 0, nthreads);
    if (status != PT_OK) return status;
    return pt_step_linear(kt, &L->self_out, out, s->o, N, PT_ACT_NONE, nthreads);
}

/* MultiheadAttention.step_cross_attention: W^Q x; attention over the
 * encoder's keys and values (each sequence's row of them); W^O. */
static int cross_attention(const pt_kernel_table *kt, const pt_decoder_layer *L,
                           const pt_decoder_layer_state *st, const float *x, int64_t N,
                           const scratch *s, float *out, int nthreads) {
    int64_t h = L->heads, d = L->head_dim, S = st->S_mem;
    int status = pt_step_linear(kt, &L->cross_q, s->qkv, x, N, PT_ACT_NONE, nthreads);
    if (status != PT_OK) return status;
    float scale = (float)(1.0 / sqrt((double)d));
    status = kt->attention(s->o, s->qkv, NULL, st->cross_k, st->cross_index, S * d, st->cross_v,
                           st->cross_index, S * d, N * h, 1, S, d, d, scale, st->cross_mask, 0,
                           nthreads);
    if (status != PT_OK) return status;
    return pt_step_linear(kt, &L->cross_out, out, s->o, N, PT_ACT_NONE, nthreads);
}

/* _TransformerLayer._ff_step: the position-wise feed-forward network. */
static int feed_forward(const pt_kernel_table *kt, const pt_decoder_layer *L, const float *x,
                        int64_t N, const scratch *s, float *out, int nthreads) {
    int status = pt_step_linear(kt, &L->ff1, s->f, x, N, L->act, nthreads);
    if (status != PT_OK) return status;
    return pt_step_linear(kt, &L->ff2, out, s->f, N, PT_ACT_NONE, nthreads);
}

int pt_decoder_layer_step(const pt_kernel_table *kt, const pt_decoder_layer *L,
                          const pt_decoder_layer_state *st, float *x, int64_t N,
                          int nthreads) {
    int64_t E = L->E;
    if (N <= 0) return PT_OK;
    size_t nE = (size_t)(N * E);
    float *buf = pt_alloc(sizeof(float) * (nE * 7 + (size_t)(N * L->ff)));
    if (!buf) return PT_ERR_NOMEM;
    scratch s = {buf, buf + 3 * nE, buf + 4 * nE, buf + 5 * nE, buf + 6 * nE, buf + 7 * nE};
    int status = PT_OK;
    /* _TransformerLayer.add_norm around each sub-layer, in forward_step's
     * order: self-attention, the cross attention (where there is one), the
     * feed-forward network; norm i belongs to the i-th */
    int subs[3] = {0, 1, 2}, nsub = 3;
    if (!L->cross) subs[1] = 2, nsub = 2;
    for (int i = 0; i < nsub && status == PT_OK; i++) {
        const float *in = x;
        if (L->norm_first) {
            norm(kt, L, i, s.h, x, N, nthreads);
            in = s.h;
        }
        status = subs[i] == 0 ? self_attention(kt, L, st, in, N, &s, s.y, nthreads)
                 : subs[i] == 1 ? cross_attention(kt, L, st, in, N, &s, s.y, nthreads)
                 : feed_forward(kt, L, in, N, &s, s.y, nthreads);
        if (status != PT_OK) break;
        if (L->norm_first) {
            pt_step_add(x, s.y, (int64_t)nE);
        } else {
            pt_step_add(s.y, x, (int64_t)nE);
            norm(kt, L, i, x, s.y, N, nthreads);
        }
    }
    pt_free(buf);
    return status;
}
