/*
 * t5.h: the ByT5 glyph encoder of HunyuanImage-2.1: transformers'
 * ByT5Tokenizer (UTF-8 bytes + 3, pad 0, eos 1, unk 2, sentinel tokens)
 * and T5EncoderModel (relative-position attention without score scaling,
 * RMS layer norms, gated or plain FFN, final layer norm).
 *
 * Only what the pipeline uses: tokenizer(text, padding="max_length",
 * max_length, truncation=True, add_special_tokens=True) and the encoder's
 * last hidden state. Not the decoder, not relu FFNs (the backend has no
 * relu op; ByT5 is gated-gelu).
 */
#ifndef SDC_T5_H
#define SDC_T5_H

#include <stddef.h>
#include <stdint.h>

#include "../backend/backend.h"
#include "../common/status.h"

/* ---- tokenizer ---------------------------------------------------------- */

typedef struct sdc_byt5_tok sdc_byt5_tok_t;

/* Reads dir/tokenizer_config.json (added_tokens_decoder, eos_token,
 * pad_token); a directory without that file gets ByT5Tokenizer's defaults
 * (<pad> 0, </s> 1, <unk> 2, <extra_id_0..124> 259..383). dir NULL: the
 * defaults. */
sdc_status_t sdc_byt5_tok_load(const char *dir, sdc_byt5_tok_t **out, sdc_error_t *err);
void sdc_byt5_tok_free(sdc_byt5_tok_t *t);
int32_t sdc_byt5_tok_pad_id(const sdc_byt5_tok_t *t);

/* ids[0..max_length) = the padded encoding of text[0..len) (invalid UTF-8
 * replaced first); *n_valid = the attention-mask count. Added tokens
 * ("</s>", "<extra_id_3>") in the text are matched first, leftmost-longest,
 * stripping the whitespace next to them as their lstrip / rstrip flags say
 * (Python's str.strip whitespace); truncation keeps max_length - 1 ids and
 * the eos is appended unless the kept ids already end with it. *n_full
 * (optional) gets the id count before truncation and eos, capped at
 * max_length (enough to tell whether anything was cut). max_length >= 2. */
sdc_status_t sdc_byt5_encode(const sdc_byt5_tok_t *t, const char *text, size_t len,
                             int max_length, int32_t *ids, int *n_valid, size_t *n_full,
                             sdc_error_t *err);

/* ---- encoder ------------------------------------------------------------ */

typedef enum { SDC_T5_ACT_GELU_TANH = 0, SDC_T5_ACT_GELU, SDC_T5_ACT_SILU } sdc_t5_act_t;

typedef struct {
    int64_t vocab_size, d_model, d_kv, num_heads, d_ff, num_layers;
    int64_t num_buckets, max_distance;
    double eps;
    int gated;          /* feed_forward_proj "gated-*" */
    sdc_t5_act_t act;   /* "gated-gelu" is gelu_new, the tanh approximation */
} sdc_t5_config_t;

/* Reads a T5 config.json (T5EncoderModel, T5ForConditionalGeneration). */
sdc_status_t sdc_t5_config_load(sdc_t5_config_t *c, const char *config_json, sdc_error_t *err);

typedef struct sdc_t5 sdc_t5_t;

/* dir: config.json + safetensors; loads the encoder only. */
sdc_status_t sdc_t5_load(sdc_t5_t **out, sdc_backend_t *be, const char *dir, sdc_error_t *err);
void sdc_t5_free(sdc_t5_t *m);
const sdc_t5_config_t *sdc_t5_config(const sdc_t5_t *m);

/* Encoder output for ids[0..n), every token attended, into host memory out
 * (n x d_model). For a right-padded batch row this is exactly the valid
 * prefix's output: masked keys contribute nothing, and the relative bias
 * depends only on offsets. */
sdc_status_t sdc_t5_encode(sdc_t5_t *m, const int32_t *ids, int64_t n, float *out,
                           sdc_error_t *err);

/* transformers' T5Attention._relative_position_bucket for one offset
 * (key position - query position), float32 rounding included. */
int64_t sdc_t5_bucket(int64_t rel, int bidirectional, int64_t num_buckets, int64_t max_distance);

#endif
