/* The fused Llama layer step (layers/llama_layer.c) on every path this CPU
 * runs, at 1 and 2 threads, in both rotary layouts: against the same layer
 * composed from the naive twins (pt_sgemm_ref, pt_rms_norm_ref,
 * pt_rope_ref, pt_attention_ref, pt_silu_and_mul_ref), with rows at
 * different positions (the keep mask) and grouped-query heads; each row's
 * key and value written at its own position and nothing else of the cache
 * touched; PT_ERR_NOMEM with x untouched when its scratch cannot be had.
 * (Bit-identity with the Python composition: tests/models/test_llama.py.) */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"
#include "layers/llama_layer.h"
#include "runtime/mem.h"

enum { E = 36, HQ = 6, HKV = 2, D = 8, F = 44, N = 3, T = 9, S = 7, QKV = (HQ + 2 * HKV) * D };

static float *filled(int64_t n, uint64_t seed, float scale, float shift) {
    float *x = malloc(sizeof(float) * (size_t)n);
    pt_test_fill(x, n, seed);
    for (int64_t i = 0; i < n; i++) x[i] = x[i] * scale + shift;
    return x;
}

static void ref_linear(float *y, const float *x, const float *w, int64_t K, int64_t Nout) {
    pt_sgemm_ref(y, Nout, x, K, 0, w, K, 1, N, Nout, K, NULL, PT_ACT_NONE);
}

static void test_step(const pt_kernel_table *k, int layout, int nt) {
    int64_t in[4] = {E, HQ * D, E, F}, out[4] = {QKV, E, 2 * F, E};
    float *w[4];
    pt_packed_b *p[4];
    pt_llama_layer L;
    memset(&L, 0, sizeof L);
    L.E = E, L.heads = HQ, L.kv_heads = HKV, L.head_dim = D, L.ff = F, L.rope_layout = layout;
    pt_step_matrix *m[4] = {&L.qkv, &L.o, &L.gate_up, &L.down};
    for (int i = 0; i < 4; i++) {
        w[i] = filled(in[i] * out[i], 10 + i, 1.2f / sqrtf((float)in[i]), 0.0f);
        p[i] = k->sgemm_pack_b(w[i], in[i], 1, in[i], out[i]);
        m[i]->kind = PT_MAT_F32, m[i]->packed = p[i], m[i]->K = in[i], m[i]->N = out[i];
    }
    float inv[D / 2], *nw0 = filled(E, 20, 0.3f, 1.0f), *nw1 = filled(E, 21, 0.3f, 1.0f);
    for (int i = 0; i < D / 2; i++) inv[i] = 1.0f / powf(10000.0f, (float)(2 * i) / D);
    L.inv_freq = inv, L.norm_w[0] = nw0, L.norm_w[1] = nw1, L.eps[0] = 1e-6f, L.eps[1] = 1e-5f;

    const int64_t cache = N * HKV * T * D;
    float *ck = filled(cache, 30, 1.0f, 0.0f), *cv = filled(cache, 31, 1.0f, 0.0f);
    float *rk = malloc(sizeof(float) * cache), *rv = malloc(sizeof(float) * cache);
    memcpy(rk, ck, sizeof(float) * cache);
    memcpy(rv, cv, sizeof(float) * cache);
    int64_t pos[N] = {6, 3, 5}, kv[N * HQ];
    for (int n = 0; n < N; n++)
        for (int j = 0; j < HQ; j++) kv[n * HQ + j] = n * HKV + j / (HQ / HKV);
    uint8_t keep[N * S];   /* each row attends to its positions 0..pos */
    for (int n = 0; n < N; n++)
        for (int s = 0; s < S; s++) keep[n * S + s] = s <= pos[n];
    pt_mask mask;
    memset(&mask, 0, sizeof mask);
    mask.data = keep, mask.is_bool = 1, mask.ndim = 2, mask.stride_last = 1;
    mask.shape[0] = N, mask.shape[1] = HQ, mask.stride[0] = S, mask.stride[1] = 0;
    pt_llama_layer_state st = {ck, cv, T, pos, S, &mask};
    float *x = filled(N * E, 40, 1.0f, 0.0f), want[N * E];
    memcpy(want, x, sizeof want);
    int status = pt_llama_layer_step(k, &L, &st, x, N, nt);

    /* the twins, in the order of models/llama.py */
    float h[N * E], qkv[N * QKV], q[N * HQ * D], o[N * HQ * D], y[N * E], gu[N * 2 * F], f[N * F];
    pt_rms_norm_ref(h, want, nw0, N, E, 1e-6f);
    ref_linear(qkv, h, w[0], E, QKV);
    pt_rope_ref(qkv, QKV, qkv, QKV, pos, inv, N, HQ + HKV, D, layout);
    for (int n = 0; n < N; n++) {
        memcpy(q + n * HQ * D, qkv + n * QKV, sizeof(float) * HQ * D);
        for (int j = 0; j < HKV; j++) {
            memcpy(rk + ((n * HKV + j) * T + pos[n]) * D, qkv + n * QKV + (HQ + j) * D,
                   sizeof(float) * D);
            memcpy(rv + ((n * HKV + j) * T + pos[n]) * D, qkv + n * QKV + (HQ + HKV + j) * D,
                   sizeof(float) * D);
        }
    }
    pt_attention_ref(o, q, NULL, rk, kv, T * D, rv, kv, T * D, N * HQ, 1, S, D, D,
                     (float)(1.0 / sqrt((double)D)), &mask, 0);
    ref_linear(y, o, w[1], HQ * D, E);
    for (int i = 0; i < N * E; i++) want[i] += y[i];
    pt_rms_norm_ref(h, want, nw1, N, E, 1e-5f);
    ref_linear(gu, h, w[2], E, 2 * F);
    pt_silu_and_mul_ref(f, gu, N, F);
    ref_linear(y, f, w[3], F, E);
    for (int i = 0; i < N * E; i++) want[i] += y[i];

    double d = pt_test_max_abs_diff(x, want, N * E);
    pt_test_check(status == PT_OK && d < 2e-4, "%s layout=%d threads=%d: status %d, max diff "
                  "%g from the twins", k->name, layout, nt, status, d);
    int other = 0;
    double dk = 0.0;
    for (int64_t i = 0; i < cache; i++) {
        int64_t n = i / (HKV * T * D), t = (i / D) % T;
        double e = fabs((double)ck[i] - rk[i]) + fabs((double)cv[i] - rv[i]);
        if (t == pos[n] && e > dk) dk = e;
        if (t != pos[n] && e != 0.0) other = 1;
    }
    pt_test_check(dk < 1e-4 && !other, "%s layout=%d: cache diff %g at each row's position, "
                  "other positions %s", k->name, layout, dk, other ? "changed" : "kept");
    memcpy(want, x, sizeof want);
    pt_mem_fail_after(0);
    status = pt_llama_layer_step(k, &L, &st, x, N, nt);
    pt_mem_fail_after(-1);
    pt_test_check(status == PT_ERR_NOMEM && memcmp(x, want, sizeof want) == 0,
                  "%s: out of memory gave %d", k->name, status);
    for (int i = 0; i < 4; i++) {
        free(w[i]);
        pt_packed_b_free(p[i]);
    }
    free(nw0), free(nw1), free(ck), free(cv), free(rk), free(rv), free(x);
}

int main(void) {
    for (const pt_kernel_table **p = pt_test_paths(); *p; p++)
        for (int layout = 0; layout < 2; layout++)
            for (int nt = 1; nt <= 2; nt++)
                test_step(*p, layout == 0 ? PT_ROPE_HALVES : PT_ROPE_PAIRS, nt);
    return pt_test_summary();
}
