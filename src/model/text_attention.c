/*
 * text_attention.c: biased attention through explicit per-head score
 * matrices (see text_attention.h). The order of operations follows the
 * eager attention of transformers: scores = (q k^T) * scale + bias, a
 * softmax over keys in float32, then the weighted sum of values.
 */
#include "text_attention.h"

#include <assert.h>

int64_t sdc_text_attention_scratch(int64_t L, int64_t Dh)
{
    return L * L + 2 * L * Dh;
}

void sdc_text_attention(sdc_backend_t *be, float *out, int64_t ldo, const float *q, int64_t ldq,
                        const float *k, int64_t ldk, const float *v, int64_t ldv, int64_t L,
                        int64_t H, int64_t Hkv, int64_t Dh, float scale, const float *bias,
                        int bias_per_head, float *scratch)
{
    const sdc_backend_ops_t *op = be->ops;
    float *s = scratch, *kc = s + L * L, *vt = kc + L * Dh;
    const int64_t rep = H / Hkv;
    assert(Hkv > 0 && H % Hkv == 0);

    for (int64_t g = 0; g < Hkv; g++) {
        /* This key/value head as contiguous K (L x Dh) and V^T (Dh x L):
         * the weight layouts linear wants for q k^T and p v. */
        const int64_t shape[2] = {L, Dh};
        const int64_t kc_stride[2] = {Dh, 1}, k_stride[2] = {ldk, 1};
        const int64_t vt_stride[2] = {1, L}, v_stride[2] = {ldv, 1};
        op->copy_strided(be, kc, k + g * Dh, 2, shape, kc_stride, k_stride);
        op->copy_strided(be, vt, v + g * Dh, 2, shape, vt_stride, v_stride);
        for (int64_t r = 0; r < rep; r++) {
            int64_t h = g * rep + r;
            const float *b = bias ? bias + (bias_per_head ? h * L * L : 0) : NULL;
            op->linear(be, s, L, q + h * Dh, ldq, kc, NULL, L, Dh, L);
            if (b)
                op->axpby(be, s, scale, s, 1.0f, b, L * L);
            else if (scale != 1.0f)
                op->axpby(be, s, scale, s, 0.0f, s, L * L);
            op->softmax(be, s, L, L);
            op->linear(be, out + h * Dh, ldo, s, L, vt, NULL, L, L, Dh);
        }
    }
}
