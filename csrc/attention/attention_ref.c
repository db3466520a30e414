/* attention_ref.c -- the naive twin of pt_attention, trusted by the tests:
 * one query row at a time, scores in double, a two-pass softmax. */
#include <math.h>
#include <stdlib.h>
#include "attention/attention.h"

#if PT_ISA == PT_ISA_SCALAR
void pt_attention_ref(float *out, const float *q, const int64_t *q_index, const float *k,
                      const int64_t *k_index, int64_t k_bs, const float *v,
                      const int64_t *v_index, int64_t v_bs, int64_t B, int64_t L, int64_t S, int64_t E, int64_t Ev, float scale,
                      const pt_mask *mask, int causal) {
    double *sc = malloc(sizeof(double) * (size_t)(S > 0 ? S : 1));
    double *acc = malloc(sizeof(double) * (size_t)(Ev > 0 ? Ev : 1));
    if (!sc || !acc) {
        free(sc); free(acc);
        return;
    }
    for (int64_t b = 0; b < B; b++) {
        const float *qb = q + (q_index ? q_index[b] : b) * L * E;
        const float *kb = k + (k_index ? k_index[b] : b) * k_bs;
        const float *vb = v + (v_index ? v_index[b] : b) * v_bs;
        for (int64_t i = 0; i < L; i++) {
            const uint8_t *bm = NULL;
            const float *fm = NULL;
            if (mask) {
                int64_t off = pt_mask_row_offset(mask, b * L + i);
                if (mask->is_bool) bm = (const uint8_t *)mask->data + off;
                else fm = (const float *)mask->data + off;
            }
            double mx = -INFINITY;
            int nan = 0;
            for (int64_t j = 0; j < S; j++) {
                double d = 0.0;
                for (int64_t e = 0; e < E; e++) d += (double)qb[i * E + e] * kb[j * E + e];
                d *= (double)scale;
                if (fm) d += (double)fm[mask->stride_last * j];
                if ((bm && !bm[mask->stride_last * j]) || (causal && j > i)) d = -INFINITY;
                sc[j] = d;
                if (d != d) nan = 1;
                else if (d > mx) mx = d;
            }
            float *o = out + (b * L + i) * Ev;
            if (!nan && mx == -INFINITY) {
                for (int64_t c = 0; c < Ev; c++) o[c] = 0.0f;
                continue;
            }
            double sum = 0.0;
            for (int64_t c = 0; c < Ev; c++) acc[c] = 0.0;
            for (int64_t j = 0; j < S; j++) {
                double p = exp(sc[j] - (nan ? NAN : mx));
                if (sc[j] == -INFINITY && !nan) continue;
                sum += p;
                for (int64_t c = 0; c < Ev; c++) acc[c] += p * vb[j * Ev + c];
            }
            for (int64_t c = 0; c < Ev; c++) o[c] = (float)(acc[c] / sum);
        }
    }
    free(sc);
    free(acc);
}
#endif
