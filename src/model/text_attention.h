/*
 * text_attention.h: attention with an additive score bias, for the text
 * encoders: T5's relative-position bias and the causal mask of the Qwen2.5
 * LLM. The backend's attention op takes only a key mask, so this computes
 * score matrices from backend ops (linear, axpby, softmax, linear). Text
 * sequences are short (about a thousand tokens at most), so the scores of a
 * few heads fit in tens of MB; the DiT's long sequences use the op, which
 * never materialises them.
 */
#ifndef SDC_TEXT_ATTENTION_H
#define SDC_TEXT_ATTENTION_H

#include <stdint.h>

#include "../backend/backend.h"

/* Floats of device scratch sdc_text_attention needs for these sizes. */
int64_t sdc_text_attention_scratch(int64_t L, int64_t H, int64_t Hkv, int64_t Dh,
                                   int bias_per_head);

/* For each head h of H (grouped-query: key/value head h / (H / Hkv)):
 *   out_h = softmax(scale * q_h k^T + bias_h) v
 * q: L x (H*Dh) rows strided by ldq; k, v: L x (Hkv*Dh) strided by ldk, ldv;
 * out: L x (H*Dh) strided by ldo (must not alias q, k or v). bias: L x L
 * per head (bias_per_head: H matrices one after another) or one L x L for
 * all heads; -INFINITY excludes a key (every row needs one finite entry). */
void sdc_text_attention(sdc_backend_t *be, float *out, int64_t ldo, const float *q, int64_t ldq,
                        const float *k, int64_t ldk, const float *v, int64_t ldv, int64_t L,
                        int64_t H, int64_t Hkv, int64_t Dh, float scale, const float *bias,
                        int bias_per_head, float *scratch);

#endif
