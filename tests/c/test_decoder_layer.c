/* The fused decoder-layer step (layers/decoder_layer.c) on every path this
 * CPU runs, at 1 and 2 threads, post-LN and pre-LN, with and without the
 * cross attention (GPT-2's blocks), rows at one position and at positions of
 * their own (the keep mask): against the same layer
 * composed from the naive twins (pt_sgemm_ref, pt_layer_norm_ref,
 * pt_attention_ref) in double-checked float, with its key and value written
 * at pos and nothing else of the cache touched; with a padded source read
 * through an index (sequences sharing encoder rows); PT_ERR_NOMEM with x
 * untouched when its scratch cannot be had.  The whole stack's step
 * (layers/stack.c): two layers, the final norm and the output projection,
 * bit for bit the layer steps, layer norm and GEMM called one after the
 * other.  (Bit-identity with the Python composition is tested in
 * tests/nn/test_fused_step.py.) */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"
#include "layers/decoder_layer.h"
#include "layers/stack.h"
#include "runtime/mem.h"

enum { E = 40, H = 5, D = 8, F = 72, N = 3, T = 7, N0 = 2, S_MEM = 6 };

typedef struct {
    float *w[6], *b[6];          /* torch layout (out x in) */
    int64_t in[6], out[6];
    float *nw[3], *nb[3];
    pt_packed_b *p[6];
} weights;

static float *filled(int64_t n, uint64_t seed, float scale) {
    float *x = malloc(sizeof(float) * (size_t)n);
    pt_test_fill(x, n, seed);
    for (int64_t i = 0; i < n; i++) x[i] *= scale;
    return x;
}

static void make(weights *W, const pt_kernel_table *k) {
    int64_t in[6] = {E, E, E, E, E, F}, out[6] = {3 * E, E, E, E, F, E};
    for (int i = 0; i < 6; i++) {
        W->in[i] = in[i];
        W->out[i] = out[i];
        W->w[i] = filled(in[i] * out[i], 10 + i, 0.3f);
        W->b[i] = filled(out[i], 20 + i, 0.1f);
        W->p[i] = k->sgemm_pack_b(W->w[i], in[i], 1, in[i], out[i]);
    }
    for (int i = 0; i < 3; i++) {
        W->nw[i] = filled(E, 30 + i, 1.0f);
        W->nb[i] = filled(E, 40 + i, 0.2f);
    }
}

static void release(weights *W) {
    for (int i = 0; i < 6; i++) {
        free(W->w[i]);
        free(W->b[i]);
        pt_packed_b_free(W->p[i]);
    }
    for (int i = 0; i < 3; i++) {
        free(W->nw[i]);
        free(W->nb[i]);
    }
}

static pt_decoder_layer layer(const weights *W, int norm_first, int cross) {
    pt_decoder_layer L;
    memset(&L, 0, sizeof L);
    L.E = E, L.heads = H, L.head_dim = D, L.ff = F, L.norm_first = norm_first, L.cross = cross;
    L.act = PT_ACT_RELU;
    pt_step_matrix *m[6] = {&L.qkv, &L.self_out, &L.cross_q, &L.cross_out, &L.ff1, &L.ff2};
    for (int i = 0; i < 6; i++) {
        m[i]->kind = PT_MAT_F32;
        m[i]->packed = W->p[i];
        m[i]->K = W->in[i];
        m[i]->N = W->out[i];
        m[i]->bias = W->b[i];
    }
    for (int i = 0; i < 3; i++) {   /* without cross attention: norms 0 and 2 as the two */
        int j = !cross && i == 1 ? 2 : i;
        L.norm_w[i] = W->nw[j];
        L.norm_b[i] = W->nb[j];
        L.eps[i] = 1e-5f;
    }
    return L;
}

static void ref_linear(const weights *W, int i, float *y, const float *x, int act) {
    pt_sgemm_ref(y, W->out[i], x, W->in[i], 0, W->w[i], W->in[i], 1, N, W->out[i], W->in[i],
                 W->b[i], act);
}

/* The layer from the twins, in the order of the paper's figure (the cross
 * attention left out when cross is 0); rows at positions pos[n] attending
 * to 0..S-1 through self_keep (or all at S - 1 when it is NULL). */
static void reference(const weights *W, int norm_first, int cross, float *x, float *sk,
                      float *sv, const int64_t *pos, int64_t S, const pt_mask *self_keep,
                      const float *ck, const float *cv, const int64_t *kv, const pt_mask *mask) {
    float qkv[N * 3 * E], q[N * E], o[N * E], y[N * E], h[N * E], f[N * F];
    float scale = (float)(1.0 / sqrt((double)D));
    for (int sub = 0; sub < 3; sub++) {
        if (sub == 1 && !cross) continue;
        const float *in = x;
        if (norm_first) {
            pt_layer_norm_ref(h, x, W->nw[sub], W->nb[sub], N, E, 1e-5f);
            in = h;
        }
        if (sub == 0) {
            ref_linear(W, 0, qkv, in, PT_ACT_NONE);
            for (int n = 0; n < N; n++) {
                memcpy(q + n * E, qkv + n * 3 * E, sizeof(float) * E);
                for (int j = 0; j < H; j++) {
                    memcpy(sk + ((n * H + j) * T + pos[n]) * D, qkv + n * 3 * E + E + j * D,
                           sizeof(float) * D);
                    memcpy(sv + ((n * H + j) * T + pos[n]) * D,
                           qkv + n * 3 * E + 2 * E + j * D, sizeof(float) * D);
                }
            }
            pt_attention_ref(o, q, NULL, sk, NULL, T * D, sv, NULL, T * D, N * H, 1, S, D, D,
                             scale, self_keep, 0);
            ref_linear(W, 1, y, o, PT_ACT_NONE);
        } else if (sub == 1) {
            ref_linear(W, 2, q, in, PT_ACT_NONE);
            pt_attention_ref(o, q, NULL, ck, kv, S_MEM * D, cv, kv, S_MEM * D, N * H, 1, S_MEM, D,
                             D, scale, mask, 0);
            ref_linear(W, 3, y, o, PT_ACT_NONE);
        } else {
            ref_linear(W, 4, f, in, PT_ACT_RELU);
            ref_linear(W, 5, y, f, PT_ACT_NONE);
        }
        for (int i = 0; i < N * E; i++) y[i] += x[i];
        if (norm_first)
            memcpy(x, y, sizeof y);
        else
            pt_layer_norm_ref(x, y, W->nw[sub], W->nb[sub], N, E, 1e-5f);
    }
}

/* cross: the paper's decoder layer (else a decoder-only block, GPT-2's);
 * staggered: rows at positions of their own, through the keep mask */
static void test_step(const pt_kernel_table *k, int norm_first, int cross, int staggered,
                      int nt) {
    weights W;
    make(&W, k);
    pt_decoder_layer L = layer(&W, norm_first, cross);
    const int64_t cache = N * H * T * D;
    int64_t pos[N] = {4, 4, 4}, S = 5;
    if (staggered) pos[1] = 1, pos[2] = 3;
    uint8_t self_keep[N * 5];
    for (int n = 0; n < N; n++)
        for (int s = 0; s < S; s++) self_keep[n * S + s] = s <= pos[n];
    pt_mask km;
    memset(&km, 0, sizeof km);
    km.data = self_keep, km.is_bool = 1, km.ndim = 2, km.stride_last = 1;
    km.shape[0] = N, km.shape[1] = H, km.stride[0] = S, km.stride[1] = 0;
    float *sk = filled(cache, 50, 1.0f), *sv = filled(cache, 51, 1.0f);
    float *rk = malloc(sizeof(float) * cache), *rv = malloc(sizeof(float) * cache);
    memcpy(rk, sk, sizeof(float) * cache);
    memcpy(rv, sv, sizeof(float) * cache);
    float *ck = filled(N0 * H * S_MEM * D, 52, 1.0f), *cv = filled(N0 * H * S_MEM * D, 53, 1.0f);
    int64_t rows[N] = {1, 0, 1}, kv[N * H];
    for (int n = 0; n < N; n++)
        for (int j = 0; j < H; j++) kv[n * H + j] = rows[n] * H + j;
    /* the memory padding mask, (N, 1, 1, S_MEM) broadcast over heads: the
     * last source positions of sequence 0 padded */
    uint8_t keep[N * S_MEM];
    for (int i = 0; i < N * S_MEM; i++) keep[i] = 1;
    keep[S_MEM - 1] = keep[S_MEM - 2] = 0;
    pt_mask m;
    memset(&m, 0, sizeof m);
    m.data = keep, m.is_bool = 1, m.ndim = 2;
    m.shape[0] = N, m.shape[1] = H, m.stride[0] = S_MEM, m.stride[1] = 0, m.stride_last = 1;
    const pt_mask *sm = staggered ? &km : NULL;
    pt_decoder_layer_state st = {sk, sv, T, pos, S, sm, cross ? ck : NULL, cross ? cv : NULL,
                                 cross ? S_MEM : 0, cross ? kv : NULL, cross ? &m : NULL};
    float *x = filled(N * E, 54, 1.0f), want[N * E];
    memcpy(want, x, sizeof want);
    int status = pt_decoder_layer_step(k, &L, &st, x, N, nt);
    reference(&W, norm_first, cross, want, rk, rv, pos, S, sm, ck, cv, kv, &m);
    double d = pt_test_max_abs_diff(x, want, N * E);
    pt_test_check(status == PT_OK && d < 2e-4, "%s norm_first=%d cross=%d staggered=%d "
                  "threads=%d: status %d, max diff %g from the twins", k->name, norm_first, cross,
                  staggered, nt, status, d);
    /* the cache: each row's position written with the twins' key and value
     * (to rounding), every other position untouched */
    int other = 0;
    double dk = 0.0;
    for (int64_t i = 0; i < cache; i++) {
        int at_pos = (i / D) % T == pos[i / (H * T * D)];
        double e = fabs((double)sk[i] - rk[i]) + fabs((double)sv[i] - rv[i]);
        if (at_pos && e > dk) dk = e;
        if (!at_pos && e != 0.0) other = 1;
    }
    pt_test_check(dk < 1e-4 && !other, "%s norm_first=%d: cache key/value diff %g at pos, "
                  "other positions %s", k->name, norm_first, dk, other ? "changed" : "kept");
    /* out of memory: an error before anything is written */
    memcpy(want, x, sizeof want);
    pt_mem_fail_after(0);
    status = pt_decoder_layer_step(k, &L, &st, x, N, nt);
    pt_mem_fail_after(-1);
    pt_test_check(status == PT_ERR_NOMEM && memcmp(x, want, sizeof want) == 0,
                  "%s: out of memory gave %d, x %s", k->name, status,
                  memcmp(x, want, sizeof want) ? "changed" : "kept");
    free(sk), free(sv), free(rk), free(rv), free(ck), free(cv), free(x);
    release(&W);
}

/* Two post-LN layers with cross attention (the paper's decoder, each with
 * its own cache), the final norm and a head E -> V: pt_stack_step against
 * the same calls made one by one. */
static void test_stack(const pt_kernel_table *k, int nt) {
    enum { V = 11 };
    weights W;
    make(&W, k);
    pt_decoder_layer L[2] = {layer(&W, 0, 1), layer(&W, 0, 1)};
    const int64_t cache = N * H * T * D;
    int64_t pos[N] = {2, 2, 2}, rows[N] = {1, 0, 1}, kv[N * H];
    for (int n = 0; n < N; n++)
        for (int j = 0; j < H; j++) kv[n * H + j] = rows[n] * H + j;
    float *ck = filled(N0 * H * S_MEM * D, 60, 1.0f), *cv = filled(N0 * H * S_MEM * D, 61, 1.0f);
    float *caches[2][2][2];    /* [stack or one by one][layer][k or v] */
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            caches[0][i][j] = filled(cache, 62 + 2 * i + j, 1.0f);
            caches[1][i][j] = malloc(sizeof(float) * cache);
            memcpy(caches[1][i][j], caches[0][i][j], sizeof(float) * cache);
        }
    pt_decoder_layer_state st[2][2];
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 2; i++) {
            pt_decoder_layer_state s = {caches[c][i][0], caches[c][i][1], T, pos, 3, NULL, ck, cv,
                                        S_MEM, kv, NULL};
            st[c][i] = s;
        }
    float *hw = filled(E * V, 70, 0.3f), *hb = filled(V, 71, 0.1f);
    pt_packed_b *hp = k->sgemm_pack_b(hw, E, 1, E, V);
    pt_stack S;
    memset(&S, 0, sizeof S);
    S.kind = PT_STACK_DECODER, S.n_layers = 2, S.E = E, S.dec = L, S.dec_st = st[0];
    S.norm = PT_NORM_LAYER, S.norm_w = W.nw[0], S.norm_b = W.nb[1], S.eps = 1e-5f;
    S.has_head = 1;
    S.head.kind = PT_MAT_F32, S.head.packed = hp, S.head.K = E, S.head.N = V, S.head.bias = hb;
    float *x = filled(N * E, 72, 1.0f), want[N * E], h[N * E], logits[N * V], wl[N * V];
    memcpy(want, x, sizeof want);
    int status = pt_stack_step(k, &S, x, N, logits, nt);
    int ok = 1;
    for (int i = 0; i < 2; i++) ok &= pt_decoder_layer_step(k, &L[i], &st[1][i], want, N, nt) == 0;
    k->layer_norm(h, want, W.nw[0], W.nb[1], N, E, 1e-5f, nt);
    ok &= k->sgemm_packed(wl, V, h, E, N, hp, hb, PT_ACT_NONE, nt) == 0;
    int same_caches = 1;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            same_caches &= !memcmp(caches[0][i][j], caches[1][i][j], sizeof(float) * cache);
    pt_test_check(status == PT_OK && ok && !memcmp(x, h, sizeof h) &&
                  !memcmp(logits, wl, sizeof wl) && same_caches,
                  "%s threads=%d: the stack's step differs from its calls one by one "
                  "(status %d; hidden %s, logits %s, caches %s)", k->name, nt, status,
                  memcmp(x, h, sizeof h) ? "differ" : "same",
                  memcmp(logits, wl, sizeof wl) ? "differ" : "same",
                  same_caches ? "same" : "differ");
    /* out of memory in the first layer: an error before anything is written */
    memcpy(want, x, sizeof want);
    pt_mem_fail_after(0);
    status = pt_stack_step(k, &S, x, N, logits, nt);
    pt_mem_fail_after(-1);
    pt_test_check(status == PT_ERR_NOMEM && !memcmp(x, want, sizeof want),
                  "%s: the stack out of memory gave %d", k->name, status);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) free(caches[0][i][j]), free(caches[1][i][j]);
    free(ck), free(cv), free(hw), free(hb), free(x);
    pt_packed_b_free(hp);
    release(&W);
}

int main(void) {
    for (const pt_kernel_table **p = pt_test_paths(); *p; p++)
        for (int nf = 0; nf < 2; nf++)
            for (int cross = 0; cross < 2; cross++)
                for (int stag = 0; stag < 2; stag++)
                    for (int nt = 1; nt <= 2; nt++) test_step(*p, nf, cross, stag, nt);
    for (const pt_kernel_table **p = pt_test_paths(); *p; p++)
        for (int nt = 1; nt <= 2; nt++) test_stack(*p, nt);
    return pt_test_summary();
}
