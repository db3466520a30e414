/* rope.c -- rotary position embedding, one position (row) at a time.
 *
 * For a row, the cos/sin of its angles are computed once, a chunk of
 * PT_ROPE_CHUNK pairs at a time (on the stack: no allocation, any D), and
 * applied to every head of the row; the heads then cost two multiplies and
 * an add per element. */
#include "rowwise/rope.h"

#define PT_ROPE_CHUNK 64 /* pairs per chunk of the cos/sin table */

static inline pt_vf tail_or_full(const float *p, int64_t left) {
    return left >= PT_VL ? pt_vload(p) : pt_vload_tail(p, (size_t)left, 0.0f);
}

static inline void store_or_tail(float *p, pt_vf v, int64_t left) {
    if (left >= PT_VL) pt_vstore(p, v);
    else pt_vstore_tail(p, v, (size_t)left);
}

/* (v0, v1, v2, v3, ...) -> (v1, v0, v3, v2, ...): each pair's partner. */
#if PT_ISA == PT_ISA_AVX512
static inline pt_vf swap_pairs(pt_vf v) { return _mm512_permute_ps(v, 0xB1); }
#elif PT_ISA == PT_ISA_AVX2
static inline pt_vf swap_pairs(pt_vf v) { return _mm256_permute_ps(v, 0xB1); }
#endif

/* Pairs (i, i + D/2) for i in [i0, i0 + m) of each head, with c[i - i0],
 * s[i - i0] their cos and sin. */
static void rotate_halves(float *y, const float *x, const float *c, const float *s,
                          int64_t heads, int64_t D, int64_t i0, int64_t m) {
    const int64_t half = D / 2;
    for (int64_t h = 0; h < heads; h++) {
        const float *x1 = x + h * D + i0, *x2 = x1 + half;
        float *y1 = y + h * D + i0, *y2 = y1 + half;
        for (int64_t j = 0; j < m; j += PT_VL) {
            const int64_t left = m - j;
            pt_vf a = tail_or_full(x1 + j, left), b = tail_or_full(x2 + j, left);
            pt_vf vc = tail_or_full(c + j, left), vs = tail_or_full(s + j, left);
            /* transformers: x*cos + rotate_half(x)*sin, each product rounded */
            store_or_tail(y1 + j, pt_vsub(pt_vmul(a, vc), pt_vmul(b, vs)), left);
            store_or_tail(y2 + j, pt_vadd(pt_vmul(b, vc), pt_vmul(a, vs)), left);
        }
    }
}

/* Pairs (2i, 2i + 1) for i in [i0, i0 + m) of each head; cc[k] = cos of the
 * pair element k belongs to, ss[k] = -sin for the first of a pair, +sin for
 * the second, k < 2m. */
static void rotate_pairs(float *y, const float *x, const float *cc, const float *ss,
                         int64_t heads, int64_t D, int64_t i0, int64_t m) {
    const int64_t w = 2 * m;
    for (int64_t h = 0; h < heads; h++) {
        const float *xh = x + h * D + 2 * i0;
        float *yh = y + h * D + 2 * i0;
        int64_t k = 0;
#if PT_ISA != PT_ISA_SCALAR
        for (; k + PT_VL <= w; k += PT_VL) {
            pt_vf v = pt_vload(xh + k);
            pt_vf r = pt_vadd(pt_vmul(v, pt_vload(cc + k)), pt_vmul(swap_pairs(v), pt_vload(ss + k)));
            pt_vstore(yh + k, r);
        }
#endif
        for (; k < w; k += 2) {   /* the last pairs of a chunk (all, on the scalar path) */
            const float a = xh[k], b = xh[k + 1];
            yh[k] = a * cc[k] + b * ss[k];
            yh[k + 1] = b * cc[k + 1] + a * ss[k + 1];
        }
    }
}

static void rope_row(float *y, const float *x, int64_t pos, const float *inv_freq,
                     int64_t heads, int64_t D, int layout) {
    const int64_t half = D / 2;
    const float p = (float)pos; /* transformers: position_ids.float() */
    float c[2 * PT_ROPE_CHUNK], s[2 * PT_ROPE_CHUNK];
    for (int64_t i0 = 0; i0 < half; i0 += PT_ROPE_CHUNK) {
        const int64_t m = half - i0 < PT_ROPE_CHUNK ? half - i0 : PT_ROPE_CHUNK;
        if (layout == PT_ROPE_HALVES) {
            for (int64_t i = 0; i < m; i++) {
                const float a = p * inv_freq[i0 + i];
                c[i] = cosf(a);
                s[i] = sinf(a);
            }
            rotate_halves(y, x, c, s, heads, D, i0, m);
        } else {
            for (int64_t i = 0; i < m; i++) {
                const float a = p * inv_freq[i0 + i], ci = cosf(a), si = sinf(a);
                c[2 * i] = c[2 * i + 1] = ci;
                s[2 * i] = -si;
                s[2 * i + 1] = si;
            }
            rotate_pairs(y, x, c, s, heads, D, i0, m);
        }
    }
}

void PT_FN(pt_rope)(float *y, int64_t ldy, const float *x, int64_t ldx,
                    const int64_t *positions, const float *inv_freq, int64_t rows,
                    int64_t heads, int64_t D, int layout, int nthreads) {
    (void)nthreads;
#pragma omp parallel for num_threads(nthreads) if(rows * heads * D > 32768) schedule(static)
    for (int64_t r = 0; r < rows; r++)
        rope_row(y + r * ldy, x + r * ldx, positions[r], inv_freq, heads, D, layout);
}

#if PT_ISA == PT_ISA_SCALAR
void pt_rope_ref(float *y, int64_t ldy, const float *x, int64_t ldx, const int64_t *positions,
                 const float *inv_freq, int64_t rows, int64_t heads, int64_t D, int layout) {
    const int64_t half = D / 2;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t h = 0; h < heads; h++) {
            const float *xh = x + r * ldx + h * D;
            float *yh = y + r * ldy + h * D;
            for (int64_t i = 0; i < half; i++) {
                const float angle = (float)positions[r] * inv_freq[i];
                const double c = cos((double)angle), s = sin((double)angle);
                const int64_t ia = layout == PT_ROPE_HALVES ? i : 2 * i;
                const int64_t ib = layout == PT_ROPE_HALVES ? i + half : 2 * i + 1;
                const double a = xh[ia], b = xh[ib];
                yh[ia] = (float)(a * c - b * s);
                yh[ib] = (float)(b * c + a * s);
            }
        }
    }
}
#endif
