/*
 * text_attention.c: biased attention through explicit score matrices (see
 * text_attention.h). The order of operations follows transformers' eager
 * attention: scores = (q k^T) * scale + bias, a float32 softmax over keys,
 * then the weighted sum of values.
 *
 * q, k and v are first copied head-major, so the query rows of all heads
 * sharing one key/value head form one (rep * L) x Dh matrix: one linear per
 * key/value head computes all their scores, and one more all their outputs.
 * axpby and softmax then run over a whole chunk of heads at once. Few,
 * large ops instead of several small ones per head; each output row still
 * depends only on its own inputs (backend.h), so the grouping does not
 * change a bit of the result.
 */
#include "text_attention.h"

#include <assert.h>

/* Scores held at once, in floats (64 MB): a chunk of key/value heads. */
#define TEXT_ATTN_SCORE_BUDGET ((int64_t)16 << 20)

/* Key/value heads per chunk: as many as the budget allows, at least one. */
static int64_t groups_per_chunk(int64_t L, int64_t H, int64_t Hkv)
{
    const int64_t per_group = (H / Hkv) * L * L;
    int64_t g = TEXT_ATTN_SCORE_BUDGET / per_group;
    return g < 1 ? 1 : g > Hkv ? Hkv : g;
}

int64_t sdc_text_attention_scratch(int64_t L, int64_t H, int64_t Hkv, int64_t Dh,
                                   int bias_per_head)
{
    const int64_t scores = groups_per_chunk(L, H, Hkv) * (H / Hkv) * L * L;
    return 2 * H * L * Dh + 2 * Hkv * L * Dh + scores * (bias_per_head ? 1 : 2);
}

void sdc_text_attention(sdc_backend_t *be, float *out, int64_t ldo, const float *q, int64_t ldq,
                        const float *k, int64_t ldk, const float *v, int64_t ldv, int64_t L,
                        int64_t H, int64_t Hkv, int64_t Dh, float scale, const float *bias,
                        int bias_per_head, float *scratch)
{
    const sdc_backend_ops_t *op = be->ops;
    assert(Hkv > 0 && H % Hkv == 0 && bias);
    const int64_t rep = H / Hkv, LL = L * L, chunk = groups_per_chunk(L, H, Hkv);
    float *qh = scratch, *oh = qh + H * L * Dh, *kc = oh + H * L * Dh, *vt = kc + Hkv * L * Dh;
    float *s = vt + Hkv * L * Dh, *rep_bias = s + chunk * rep * LL;

    /* Head-major q (H x L x Dh), k (Hkv x L x Dh) and v transposed
     * (Hkv x Dh x L): the layouts linear wants for q k^T and p v. */
    const int64_t sq[3] = {H, L, Dh}, skv[3] = {Hkv, L, Dh}, svt[3] = {Hkv, Dh, L};
    const int64_t hm[3] = {L * Dh, Dh, 1}, tq[3] = {Dh, ldq, 1}, tk[3] = {Dh, ldk, 1};
    const int64_t vt_d[3] = {Dh * L, L, 1}, vt_s[3] = {Dh, 1, ldv};
    op->copy_strided(be, qh, q, 3, sq, hm, tq);
    op->copy_strided(be, kc, k, 3, skv, hm, tk);
    op->copy_strided(be, vt, v, 3, svt, vt_d, vt_s);
    if (!bias_per_head) {
        /* The shared bias repeated for a chunk's heads, once per call. */
        const int64_t sb[2] = {chunk * rep, LL}, db[2] = {LL, 1}, bb[2] = {0, 1};
        op->copy_strided(be, rep_bias, bias, 2, sb, db, bb);
    }

    for (int64_t g0 = 0; g0 < Hkv; g0 += chunk) {
        const int64_t ng = Hkv - g0 < chunk ? Hkv - g0 : chunk, nh = ng * rep;
        for (int64_t g = g0; g < g0 + ng; g++)
            op->linear(be, s + (g - g0) * rep * LL, L, qh + g * rep * L * Dh, Dh, kc + g * L * Dh,
                       NULL, rep * L, Dh, L);
        op->axpby(be, s, scale, s, 1.0f, bias_per_head ? bias + g0 * rep * LL : rep_bias,
                  nh * LL);
        op->softmax(be, s, nh * L, L);
        for (int64_t g = g0; g < g0 + ng; g++)
            op->linear(be, oh + g * rep * L * Dh, Dh, s + (g - g0) * rep * LL, L,
                       vt + g * Dh * L, NULL, rep * L, L, Dh);
    }

    const int64_t to[3] = {Dh, ldo, 1};
    op->copy_strided(be, out, oh, 3, sq, to, hm);
}
