/* llama_layer.c -- one Llama decoder layer's decoding step in one call (see
 * llama_layer.h).  Each block mirrors a method of models/llama.py. */
#include <math.h>
#include <string.h>
#include "layers/llama_layer.h"
#include "runtime/mem.h"
#include "runtime/status.h"

/* LlamaAttention.step on h = RMSNorm(x): the fused projection, RoPE on the
 * query and key heads in place, the new key and value into the cache,
 * grouped-query attention over it, W^O. */
static int attention(const pt_kernel_table *kt, const pt_llama_layer *L,
                     const pt_llama_layer_state *st, const float *h, int64_t N, float *qkv,
                     float *q, float *o, float *out, int nthreads) {
    int64_t Hq = L->heads, Hkv = L->kv_heads, D = L->head_dim, T = st->t_max;
    int64_t ld = (Hq + 2 * Hkv) * D;
    int status = pt_step_linear(kt, &L->qkv, qkv, h, N, PT_ACT_NONE, nthreads);
    if (status != PT_OK) return status;
    kt->rope(qkv, ld, qkv, ld, st->pos, L->inv_freq, N, Hq + Hkv, D, L->rope_layout, nthreads);
    for (int64_t n = 0; n < N; n++)
        memcpy(q + n * Hq * D, qkv + n * ld, sizeof(float) * (size_t)(Hq * D));
    pt_step_write_kv(st->k, st->v, T, st->pos, qkv + Hq * D, qkv + (Hq + Hkv) * D, ld, N, Hkv,
                     D);
    /* grouped-query attention: the Hq / Hkv query heads of a kv head are
     * the rows of one batch (q holds them one after another), so its keys
     * are read -- and packed -- once for the group.  Rows are independent:
     * the bits are those of one head at a time.  Score row n*Hq + j is
     * query head j of sequence n either way, as keep addresses it. */
    float scale = (float)(1.0 / sqrt((double)D));
    status = kt->attention(o, q, NULL, st->k, NULL, T * D, st->v, NULL, T * D, N * Hkv,
                           Hq / Hkv, st->S, D, D, scale, st->keep, 0, nthreads);
    if (status != PT_OK) return status;
    return pt_step_linear(kt, &L->o, out, o, N, PT_ACT_NONE, nthreads);
}

/* LlamaMLP.step: down(SiLU(gate) * up), gate and up one GEMM. */
static int mlp(const pt_kernel_table *kt, const pt_llama_layer *L, const float *h, int64_t N,
               float *gu, float *f, float *out, int nthreads) {
    int status = pt_step_linear(kt, &L->gate_up, gu, h, N, PT_ACT_NONE, nthreads);
    if (status != PT_OK) return status;
    kt->silu_and_mul(f, gu, N, L->ff, nthreads);
    return pt_step_linear(kt, &L->down, out, f, N, PT_ACT_NONE, nthreads);
}

int pt_llama_layer_step(const pt_kernel_table *kt, const pt_llama_layer *L,
                        const pt_llama_layer_state *st, float *x, int64_t N, int nthreads) {
    int64_t E = L->E, Hq = L->heads, Hkv = L->kv_heads, D = L->head_dim, F = L->ff;
    if (N <= 0) return PT_OK;
    size_t nE = (size_t)(N * E), nq = (size_t)(N * Hq * D);
    size_t nqkv = (size_t)(N * (Hq + 2 * Hkv) * D), ngu = (size_t)(N * 2 * F);
    /* h | y | q | o | (qkv, then gate | up) | f */
    size_t big = nqkv > ngu ? nqkv : ngu;
    float *buf = pt_alloc(sizeof(float) * (2 * nE + 2 * nq + big + (size_t)(N * F)));
    if (!buf) return PT_ERR_NOMEM;
    float *h = buf, *y = h + nE, *q = y + nE, *o = q + nq, *wide = o + nq, *f = wide + big;
    /* LlamaDecoderLayer.add_norm around each sub-layer: x + Sublayer(RMSNorm(x)) */
    kt->rms_norm(h, x, L->norm_w[0], N, E, L->eps[0], nthreads);
    int status = attention(kt, L, st, h, N, wide, q, o, y, nthreads);
    if (status == PT_OK) {
        pt_step_add(x, y, (int64_t)nE);
        kt->rms_norm(h, x, L->norm_w[1], N, E, L->eps[1], nthreads);
        status = mlp(kt, L, h, N, wide, f, y, nthreads);
        if (status == PT_OK) pt_step_add(x, y, (int64_t)nE);
    }
    pt_free(buf);
    return status;
}
