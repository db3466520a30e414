/* attention.c -- fused scaled dot-product attention with an online softmax.
 *
 * Work is split into units of (batch, block of PT_ATTN_BQ queries); threads
 * take units.  For one unit:
 *
 *   pack Q block                          Qp  (tiles of QK_MR rows, e-major)
 *   m = -inf, l = 0, O = 0
 *   for each key block [j0, j0 + BK):     (stops at the diagonal when causal)
 *       pack K block transposed           Kp  (panels of QK_W keys, e-major)
 *       S = Q Kp                          micro-kernel QK_MR x QK_W
 *       per query row: S = S*scale (+ mask), block max, m' = max(m, max),
 *           alpha = exp(m - m'), P = exp(S - m'), l = l*alpha + sum P
 *       O = O*alpha + P V                 micro-kernel PV_MR x PV_NV vectors
 *   out = O / l                           (l = 0: nothing attended -> zeros)
 *
 * A row whose keys in a block are all masked leaves m, l and O untouched,
 * exactly as if the block had been skipped; so skipping the causal blocks
 * above the diagonal changes nothing, and each row's sequence of operations
 * depends on that row, S and the block size alone -- never on L, on which
 * other rows share its tile, or on the thread.  Scores are dot products
 * accumulated e = 0..E-1 in one lane each; P V sums run j = 0..nk-1.
 */
#include <stdlib.h>
#include <string.h>
#include "attention/attention.h"
#include "runtime/mem.h"
#include "runtime/transpose.h"
#include "runtime/vmath.h"

/* Register tiles.  QK: QK_MR query rows x QK_NV vectors of keys (16 or 12
 * accumulators), a few rows over up to QK_NP panels; PV: PV_MR rows x PV_NV
 * vectors of the value dim, one row x PV_NV1.  (A tile's shape changes the
 * speed, never a bit: each result is one chain whatever the tile.) */
#if PT_ISA == PT_ISA_AVX512
#define QK_MR 8
#define QK_NV 2
#define PV_MR 4
#define PV_NV 4
#define PV_NV1 4   /* one row (decoding): vectors per tile */
#elif PT_ISA == PT_ISA_AVX2
#define QK_MR 6
#define QK_NV 2
#define PV_MR 4
#define PV_NV 3
#define PV_NV1 8
#else
#define QK_MR 4
#define QK_NV 4
#define PV_MR 4
#define PV_NV 4
#define PV_NV1 4
#endif
#define QK_NP 4    /* key panels per tile at most (a single query row) */
#define QK_W (QK_NV * PT_VL)
#define BQ PT_ATTN_BQ
#define BK PT_ATTN_BK
#define BQP (((BQ + QK_MR - 1) / QK_MR) * QK_MR)
#if BK % QK_W || BQ % PV_MR
#error "attention block sizes must be multiples of the register tiles"
#endif

/* One thread's working memory: sized by E, Ev and the block sizes only. */
typedef struct {
    float *qp;         /* (BQP/QK_MR, E, QK_MR) packed query tiles */
    float *kp;         /* (BK/QK_W, E, QK_W) packed key panels */
    float *s;          /* (BQP, BK) scores, then probabilities */
    float *o;          /* (BQ, evp) unnormalised output */
    float *vp;         /* (BK, evp) value block padded to whole vectors, or NULL */
    float *m, *l, *alpha; /* (BQ) running max, running sum, rescale factor */
    int *active;       /* (BQ) row attends something in the current key block */
    const void **mrow; /* (BQ) mask row of each query */
} scratch;

static void scratch_free(scratch *w) { pt_free(w->qp); }

/* Bytes rounded up to the alignment of every part of the scratch. */
static size_t aligned(size_t bytes) { return (bytes + PT_ALIGN - 1) / PT_ALIGN * PT_ALIGN; }

/* Sized for units of at most `rows` queries and `keys` keys (a decoding step
 * has one query: a few KiB instead of the full blocks); one allocation,
 * carved into the parts (w->qp holds it).  Not zeroed: attention_unit
 * initialises every part it reads (the packs write their zero padding, O,
 * m, l are set per unit). */
static int scratch_alloc(scratch *w, int64_t E, int64_t evp, int pad_v, int64_t rows,
                         int64_t keys) {
    const int64_t rp = (rows + QK_MR - 1) / QK_MR * QK_MR;
    const int64_t kp = (keys + QK_W - 1) / QK_W * QK_W;
    const size_t f = sizeof(float);
    const size_t sizes[10] = {f * (size_t)(rp * E), f * (size_t)(kp * E), f * (size_t)rp * BK,
                              f * (size_t)(rows * evp), pad_v ? f * (size_t)(kp * evp) : 0,
                              f * (size_t)rows, f * (size_t)rows, f * (size_t)rows,
                              sizeof(int) * (size_t)rows, sizeof(void *) * (size_t)rows};
    size_t total = 0;
    for (int i = 0; i < 10; i++) total += aligned(sizes[i]);
    memset(w, 0, sizeof *w);
    char *p = pt_alloc(total);
    if (!p) return -1;
    void *parts[10];
    for (int i = 0; i < 10; i++) {
        parts[i] = p;
        p += aligned(sizes[i]);
    }
    w->qp = parts[0], w->kp = parts[1], w->s = parts[2], w->o = parts[3];
    w->vp = pad_v ? parts[4] : NULL;
    w->m = parts[5], w->l = parts[6], w->alpha = parts[7], w->active = parts[8];
    w->mrow = parts[9];
    return 0;
}

/* dst[e][c] = src[(first + c) * E + e] for columns c in [c0, W): rows of src
 * become interleaved columns; rows at or past n are zero. */
static void pack_columns(float *dst /* (E, W) */, const float *src /* (n, E) */, int64_t first,
                         int64_t n, int64_t E, int W, int c0) {
    int cz = n - first < W ? (int)(n - first) : W;   /* the first zero column */
    if (cz < c0) cz = c0;
    for (int c = c0; c < cz; c++)
        for (int64_t e = 0; e < E; e++) dst[e * W + c] = src[(first + c) * E + e];
    if (cz < W)   /* (a few floats per e: stores, not a memset call each) */
        for (int64_t e = 0; e < E; e++)
            for (int c = cz; c < W; c++) dst[e * W + c] = 0.0f;
}

/* qp[t][e][r] = q[t*QK_MR + r][e]; rows >= nq are zero. */
static void pack_q(float *qp, const float *q /* (nq, E) */, int64_t nq, int64_t E) {
    for (int64_t t = 0; t * QK_MR < nq; t++)
        pack_columns(qp + t * E * QK_MR, q, t * QK_MR, nq, E, QK_MR, 0);
}


/* kp[p][e][c] = k[p*QK_W + c][e]; keys >= nk are zero.  A pure copy: its
 * order does not touch any result. */
static void pack_k(float *kp, const float *k /* (nk, E) */, int64_t nk, int64_t E) {
    for (int64_t p = 0; p * QK_W < nk; p++) {
        int c0 = 0;
#if PT_ISA != PT_ISA_SCALAR
        /* whole groups of 8 keys by 8 x 8 in-register transposes */
        for (; c0 + 8 <= QK_W && p * QK_W + c0 + 8 <= nk; c0 += 8) {
            const float *src = k + (p * QK_W + c0) * E;
            float *dst = kp + p * E * QK_W + c0;
            int64_t e = 0;
            for (; e + 8 <= E; e += 8) pt_transpose8x8(dst + e * QK_W, QK_W, src + e, E);
            for (; e < E; e++)
                for (int c = 0; c < 8; c++) dst[e * QK_W + c] = src[c * E + e];
        }
#endif
        pack_columns(kp + p * E * QK_W, k, p * QK_W, nk, E, QK_W, c0);
    }
}

/* s[r][c] = sum_e q[r][e] k[c][e] for mr rows x np panels of QK_W keys (s has
 * row stride BK, panels lie E * QK_W apart in kp).  Every score is one lane's
 * chain of FMAs over e = 0..E-1, whatever mr and np: the tile shape changes
 * the speed, never a bit of the result. */
PT_ALWAYS_INLINE void qk_tile(float *s, const float *qp /* (E, QK_MR) */,
                              const float *kp /* np x (E, QK_W) */, int64_t E, int mr, int np) {
    pt_vf acc[QK_MR][QK_NP][QK_NV];
    for (int r = 0; r < mr; r++)
        for (int p = 0; p < np; p++)
            for (int c = 0; c < QK_NV; c++) acc[r][p][c] = pt_vzero();
    for (int64_t e = 0; e < E; e++) {
        pt_vf kv[QK_NP][QK_NV];
        for (int p = 0; p < np; p++)
            for (int c = 0; c < QK_NV; c++)
                kv[p][c] = pt_vload(kp + p * E * QK_W + e * QK_W + c * PT_VL);
        for (int r = 0; r < mr; r++) {
            pt_vf qb = pt_vset1(qp[e * QK_MR + r]);
            for (int p = 0; p < np; p++)
                for (int c = 0; c < QK_NV; c++) acc[r][p][c] = pt_vfmadd(qb, kv[p][c], acc[r][p][c]);
        }
    }
    for (int r = 0; r < mr; r++)
        for (int p = 0; p < np; p++)
            for (int c = 0; c < QK_NV; c++)
                pt_vstore(s + r * BK + p * QK_W + c * PT_VL, acc[r][p][c]);
}

/* Scores of the nq packed query rows against npanels key panels.  Full row
 * tiles take one panel at a time (QK_MR x QK_NV accumulators); the last,
 * partial tile -- all there is when decoding one token -- takes panels two
 * (one row: four) at a time when its rows are few, to keep enough FMA
 * chains in flight. */
static void qk_block(float *s, const float *qp, const float *kp, int64_t E, int64_t nq,
                     int64_t npanels) {
    int64_t t = 0;
    for (; (t + 1) * QK_MR <= nq; t++)
        for (int64_t p = 0; p < npanels; p++)
            qk_tile(s + t * QK_MR * BK + p * QK_W, qp + t * E * QK_MR, kp + p * E * QK_W, E,
                    QK_MR, 1);
    const int mr = (int)(nq - t * QK_MR);
    if (mr == 0) return;
    float *st = s + t * QK_MR * BK;
    const float *qt = qp + t * E * QK_MR;
    for (int64_t p = 0; p < npanels;) {
        const int four = mr == 1 && p + 3 < npanels;
        const int two = !four && 2 * mr <= QK_MR && p + 1 < npanels;
        const float *kt = kp + p * E * QK_W;
        float *sp = st + p * QK_W;
#define QK_ROWS(n)                                          \
    case n:                                                 \
        if (two) qk_tile(sp, qt, kt, E, n, 2);              \
        else qk_tile(sp, qt, kt, E, n, 1);                  \
        break;
        switch (mr) {
        case 1:
            if (four) qk_tile(sp, qt, kt, E, 1, 4);
            else if (two) qk_tile(sp, qt, kt, E, 1, 2);
            else qk_tile(sp, qt, kt, E, 1, 1);
            break;
            QK_ROWS(2)
            QK_ROWS(3)
#if QK_MR > 4
            QK_ROWS(4)
            QK_ROWS(5)
#endif
#if QK_MR > 6
            QK_ROWS(6)
            QK_ROWS(7)
#endif
        }
#undef QK_ROWS
        p += four ? 4 : two ? 2 : 1;
    }
}

/* o[r][:] = o[r][:]*alpha[r] + sum_{j<nk} p[r][j] v[j][:] for mr rows and nv
 * vectors of columns, stored for active rows only (inactive rows stay
 * untouched).  Each element is one chain j = 0..nk-1, whatever mr and nv. */
PT_ALWAYS_INLINE void pv_tile(float *o, int64_t ldo, const float *p /* (mr, BK) */,
                              const float *v, int64_t ldv, int64_t nk, const float *alpha,
                              const int *active, int mr, int nv) {
    pt_vf acc[PV_MR][PV_NV > PV_NV1 ? PV_NV : PV_NV1];
    for (int r = 0; r < mr; r++) {
        pt_vf a = pt_vset1(alpha[r]);
        for (int c = 0; c < nv; c++) acc[r][c] = pt_vmul(pt_vload(o + r * ldo + c * PT_VL), a);
    }
    for (int64_t j = 0; j < nk; j++) {
        pt_vf vv[PV_NV > PV_NV1 ? PV_NV : PV_NV1];
        for (int c = 0; c < nv; c++) vv[c] = pt_vload(v + j * ldv + c * PT_VL);
        for (int r = 0; r < mr; r++) {
            pt_vf pb = pt_vset1(p[r * BK + j]);
            for (int c = 0; c < nv; c++) acc[r][c] = pt_vfmadd(pb, vv[c], acc[r][c]);
        }
    }
    for (int r = 0; r < mr; r++)
        if (active[r])
            for (int c = 0; c < nv; c++) pt_vstore(o + r * ldo + c * PT_VL, acc[r][c]);
}

/* One PV_MR-row (or last, shorter) tile across all column vectors. */
#define PV_COLS(mr)                                                                      \
    for (int64_t c0 = 0; c0 < nvec; c0 += PV_NV) {                                      \
        float *ot = o + r0 * evp + c0 * PT_VL;                                            \
        const float *pt = p + r0 * BK, *vt = v + c0 * PT_VL;                              \
        switch (nvec - c0 < PV_NV ? (int)(nvec - c0) : PV_NV) {                           \
        case 1: pv_tile(ot, evp, pt, vt, ldv, nk, alpha + r0, active + r0, mr, 1); break; \
        case 2: pv_tile(ot, evp, pt, vt, ldv, nk, alpha + r0, active + r0, mr, 2); break; \
        case 3: pv_tile(ot, evp, pt, vt, ldv, nk, alpha + r0, active + r0, mr, 3); break; \
        case 4: pv_tile(ot, evp, pt, vt, ldv, nk, alpha + r0, active + r0, mr,           \
                        PV_NV > 3 ? 4 : PV_NV); break; /* (PV_NV = 3: never reached) */ \
        }                                                                                 \
    }

static void pv_block(float *o, int64_t evp, const float *p, const float *v, int64_t ldv,
                     int64_t nk, const float *alpha, const int *active, int64_t nq) {
    const int64_t nvec = evp / PT_VL;
    for (int64_t r0 = 0; r0 < nq; r0 += PV_MR) {
        const int mr = nq - r0 < PV_MR ? (int)(nq - r0) : PV_MR;
        int any = 0;
        for (int r = 0; r < mr; r++) any |= active[r0 + r];
        if (!any) continue;
        if (mr == 1) { /* one row: PV_NV1 vectors a tile, for enough chains */
            for (int64_t c0 = 0; c0 < nvec; c0 += PV_NV1) {
                float *ot = o + r0 * evp + c0 * PT_VL;
                const float *pt = p + r0 * BK, *vt = v + c0 * PT_VL;
                switch (nvec - c0 < PV_NV1 ? (int)(nvec - c0) : PV_NV1) {
#define PV_ONE(n) case n: pv_tile(ot, evp, pt, vt, ldv, nk, alpha + r0, active + r0, 1, n); break;
                PV_ONE(1) PV_ONE(2) PV_ONE(3) PV_ONE(4)
#if PV_NV1 > 4
                PV_ONE(5) PV_ONE(6) PV_ONE(7) PV_ONE(8)
#endif
#undef PV_ONE
                }
            }
            continue;
        }
        switch (mr) {
        case 2: PV_COLS(2) break;
        case 3: PV_COLS(3) break;
        default: PV_COLS(PV_MR) break;
        }
    }
}
#undef PV_COLS

static inline float hmax(pt_vf acc) {
    float lanes[PT_VL], mx = -INFINITY;
    pt_vstore(lanes, acc);
    for (int l = 0; l < PT_VL; l++) mx = (lanes[l] != lanes[l] || lanes[l] > mx) ? lanes[l] : mx;
    return mx;
}

/* The online-softmax step for one query row and one key block: turn the raw
 * scores sr[0..nk) into probabilities relative to the new running max.
 * Returns 0 (row untouched) when every key of the block is masked. */
static int softmax_step(float *sr, int64_t nk, int64_t kn, float scale, const pt_mask *mask,
                        const void *mrow, int64_t j0, float *m, float *l, float *alpha) {
    int64_t j;
    if (kn <= 0) return 0;
    const pt_vf vscale = pt_vset1(scale);
    const float *fm = (mask && !mask->is_bool) ? (const float *)mrow : NULL;
    const int64_t st = mask ? mask->stride_last : 0;
    /* scale, and add a float mask; the tail past kn is never read after this */
    for (j = 0; j < kn; j += PT_VL) {
        size_t len = (size_t)(kn - j < PT_VL ? kn - j : PT_VL);
        pt_vf x = pt_vmul(pt_vload(sr + j), vscale);
        if (fm) x = pt_vadd(x, st ? pt_vload_tail(fm + j0 + j, len, 0.0f) : pt_vset1(fm[0]));
        pt_vstore(sr + j, x);
    }
    if (mask && mask->is_bool) {
        const uint8_t *b = (const uint8_t *)mrow + st * j0;
        if (st) /* branch-free so that it vectorises */
            for (j = 0; j < kn; j++) sr[j] = b[j] ? sr[j] : -INFINITY;
        else if (!b[0])
            for (j = 0; j < kn; j++) sr[j] = -INFINITY;
    }
    pt_vf acc = pt_vset1(-INFINITY);
    for (j = 0; j < kn; j += PT_VL) {
        size_t len = (size_t)(kn - j < PT_VL ? kn - j : PT_VL);
        acc = pt_vmax(len == PT_VL ? pt_vload(sr + j) : pt_vload_tail(sr + j, len, -INFINITY), acc);
    }
    const float mx = hmax(acc);
    if (mx == -INFINITY) return 0; /* nothing to attend to in this block */
    float mnew = *m;               /* NaN, once seen, stays (as torch) */
    if (*m == *m && (mx != mx || mx > *m)) mnew = mx;
    *alpha = expf(*m - mnew); /* 0 on the first block (m = -inf), 1 if m did not grow */
    *m = mnew;
    const pt_vf vm = pt_vset1(mnew);
    pt_vf vsum = pt_vzero();
    for (j = 0; j < kn; j += PT_VL) {
        size_t len = (size_t)(kn - j < PT_VL ? kn - j : PT_VL);
        pt_vf x = len == PT_VL ? pt_vload(sr + j) : pt_vload_tail(sr + j, len, -INFINITY);
        pt_vf e = pt_vexp(pt_vsub(x, vm)); /* tail lanes: exp(-inf) = 0 */
        vsum = pt_vadd(vsum, e);
        pt_vstore(sr + j, e);
    }
    for (; j < nk; j++) sr[j] = 0.0f; /* keys past the causal limit */
    *l = *l * *alpha + pt_vreduce_add(vsum);
    return 1;
}

static void attention_unit(float *out /* (nq, Ev) */, const float *q /* (nq, E) */,
                           const float *k /* (S, E) */, const float *v /* (S, Ev) */,
                           int64_t q0, int64_t nq, int64_t S, int64_t E, int64_t Ev,
                           int64_t evp, float scale, const pt_mask *mask, int64_t mask_row0,
                           int causal, scratch *w) {
    const int64_t elem = mask ? (mask->is_bool ? 1 : (int64_t)sizeof(float)) : 0;
    pack_q(w->qp, q, nq, E);
    for (int64_t r = 0; r < nq; r++) {
        w->m[r] = -INFINITY;
        w->l[r] = 0.0f;
        w->alpha[r] = 1.0f;
        w->active[r] = 0;
        if (mask)
            w->mrow[r] = (const char *)mask->data + elem * pt_mask_row_offset(mask, mask_row0 + r);
    }
    memset(w->o, 0, sizeof(float) * (size_t)(nq * evp));
    /* causal: the block's last query, q0 + nq - 1, attends keys up to itself */
    const int64_t kend = causal ? (S < q0 + nq ? S : q0 + nq) : S;
    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        const int64_t nk = S - j0 < BK ? S - j0 : BK;
        const int64_t npanels = (nk + QK_W - 1) / QK_W;
        pack_k(w->kp, k + j0 * E, nk, E);
        qk_block(w->s, w->qp, w->kp, E, nq, npanels);
        for (int64_t r = 0; r < nq; r++) {
            int64_t kn = nk;
            if (causal) {
                int64_t lim = q0 + r - j0 + 1;
                kn = lim < 0 ? 0 : (lim < nk ? lim : nk);
            }
            w->active[r] = softmax_step(w->s + r * BK, nk, kn, scale, mask,
                                        mask ? w->mrow[r] : NULL, j0, &w->m[r], &w->l[r],
                                        &w->alpha[r]);
        }
        const float *vb = v + j0 * Ev;
        int64_t ldv = Ev;
        if (w->vp) { /* Ev is not a whole number of vectors: pad the block */
            for (int64_t j = 0; j < nk; j++) {
                memcpy(w->vp + j * evp, vb + j * Ev, sizeof(float) * (size_t)Ev);
                memset(w->vp + j * evp + Ev, 0, sizeof(float) * (size_t)(evp - Ev));
            }
            vb = w->vp;
            ldv = evp;
        }
        pv_block(w->o, evp, w->s, vb, ldv, nk, w->alpha, w->active, nq);
    }
    for (int64_t r = 0; r < nq; r++) {
        float *dst = out + r * Ev;
        const float *src = w->o + r * evp;
        if (w->l[r] == 0.0f) { /* nothing attended anywhere: zeros, not 0/0 */
            memset(dst, 0, sizeof(float) * (size_t)Ev);
            continue;
        }
        const pt_vf vl = pt_vset1(w->l[r]);
        int64_t c = 0;
        for (; c + PT_VL <= Ev; c += PT_VL) pt_vstore(dst + c, pt_vdiv(pt_vload(src + c), vl));
        if (c < Ev) pt_vstore_tail(dst + c, pt_vdiv(pt_vload(src + c), vl), (size_t)(Ev - c));
    }
}

int PT_FN(pt_attention)(float *out, const float *q, const int64_t *q_index, const float *k,
                         const int64_t *k_index, int64_t k_bs, const float *v,
                         const int64_t *v_index, int64_t v_bs, int64_t B, int64_t L, int64_t S, int64_t E, int64_t Ev, float scale,
                         const pt_mask *mask, int causal, int nthreads) {
    (void)nthreads;
    if (B <= 0 || L <= 0 || Ev <= 0) return PT_OK;
    const int64_t evp = (Ev + PT_VL - 1) / PT_VL * PT_VL;
    const int pad_v = evp != Ev;
    const int64_t nqb = (L + BQ - 1) / BQ, units = B * nqb;
    int failed = 0;
    /* a decoding step's few heads over a short cache (a few microseconds):
     * waking another thread costs more than it saves */
    const double flops = 2.0 * (double)B * (double)L * (double)S * (double)(E + Ev);
#pragma omp parallel num_threads(nthreads) if(units > 1 && flops >= 262144.0)
    {
        scratch w;
        int ok = scratch_alloc(&w, E, evp, pad_v, L < BQ ? L : BQ, S < BK ? S : BK) == 0;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < units; u++) {
            if (!ok) continue;
            const int64_t b = u / nqb, q0 = (u % nqb) * BQ;
            const int64_t nq = L - q0 < BQ ? L - q0 : BQ;
            const int64_t qb = q_index ? q_index[b] : b, kb = k_index ? k_index[b] : b,
                          vb = v_index ? v_index[b] : b;
            attention_unit(out + (b * L + q0) * Ev, q + (qb * L + q0) * E, k + kb * k_bs,
                           v + vb * v_bs, q0, nq, S, E, Ev, evp, scale, mask, b * L + q0,
                           causal, &w);
        }
        if (ok) scratch_free(&w);
    }
    return failed ? PT_ERR_NOMEM : PT_OK;
}
