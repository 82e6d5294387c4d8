/*
 * text_encoder.h: prompt -> text conditioning, as diffusers'
 * HunyuanImagePipeline.encode_prompt computes it (the "base" profile), or
 * HunyuanImageRefinerPipeline.encode_prompt (the "refiner" profile: another
 * chat template, 36 template tokens dropped, 256 tokens kept, no ByT5).
 * The base profile:
 *
 *   LLM:  the prompt in the chat template below, Qwen2 BPE ids, truncated
 *         to 34 + 1000 tokens (a warning is logged when a prompt is cut),
 *         Qwen2.5-VL hidden_states[-3], the 34 template tokens dropped;
 *         embeds padded to 1000 rows with a mask (1 = token).
 *   ByT5: the quoted text of the prompt (glyph.h); when there is some,
 *         ByT5 ids padded to 128 and the T5 encoder output; when there is
 *         none, 128 rows of zeros and an all-zero mask.
 *
 * Rows past a mask's valid prefix are zeros here (transformers leaves
 * values of padded positions there); every consumer masks them out.
 * Invalid UTF-8 in a prompt is replaced as bytes.decode("utf-8",
 * "replace") would, NUL bytes are ordinary characters.
 *
 * Components come from the model directory: model_index.json must name
 * text_encoder (Qwen2_5_VLForConditionalGeneration), tokenizer
 * (Qwen2Tokenizer) and, for the base profile with a ByT5 input,
 * text_encoder_2 (T5EncoderModel) and tokenizer_2 (ByT5Tokenizer); the
 * widths must match the transformer's text_embed_dim and text_embed_2_dim.
 * A refiner model directory has its own text_encoder/ and tokenizer/.
 */
#ifndef SDC_TEXT_ENCODER_H
#define SDC_TEXT_ENCODER_H

#include <stddef.h>
#include <stdint.h>

#include "../backend/backend.h"
#include "../common/status.h"
#include "embeds.h"

/* The pipeline's constants (HunyuanImagePipeline.__init__). */
#define SDC_TEXT_MAX_TOKENS 1000  /* tokenizer_max_length */
#define SDC_TEXT_DROP_TOKENS 34   /* prompt_template_encode_start_idx */
#define SDC_TEXT_MAX_TOKENS_2 128 /* tokenizer_2_max_length */
#define SDC_TEXT_SKIP_LAYERS 2    /* hidden_state_skip_layer: hidden_states[-3] */

/* HunyuanImageRefinerPipeline.__init__'s. */
#define SDC_TEXT_REFINER_MAX_TOKENS 256
#define SDC_TEXT_REFINER_DROP_TOKENS 36

extern const char sdc_text_template_prefix[];
extern const char sdc_text_template_suffix[];

/* How one pipeline's encode_prompt calls the shared LLM path
 * (_get_qwen_prompt_embeds): the prompt goes between template_prefix and
 * template_suffix; the ids are cut to drop_tokens + max_tokens; the first
 * drop_tokens hidden states (of hidden_states[-1 - skip_layers]) are
 * dropped; the output has max_tokens rows. glyph: the pipeline also runs
 * the ByT5 path on quoted text. */
typedef struct {
    const char *name;
    const char *template_prefix, *template_suffix;
    int drop_tokens;
    int max_tokens;
    int skip_layers;
    int glyph;
} sdc_text_profile_t;

extern const sdc_text_profile_t sdc_text_profile_base;    /* HunyuanImagePipeline */
extern const sdc_text_profile_t sdc_text_profile_refiner; /* HunyuanImageRefinerPipeline */

/* The profile called name ("base", "refiner"), or NULL. */
const sdc_text_profile_t *sdc_text_profile_find(const char *name);

typedef struct sdc_text_encoder sdc_text_encoder_t;

/* Opens model_dir's text components for the base profile. text_embed_dim /
 * text_embed_2_dim: the transformer's widths (text_embed_2_dim 0: the DiT
 * takes no ByT5 input, so text_encoder_2 is not loaded and embeds_2 stays
 * NULL). */
sdc_status_t sdc_text_encoder_open(sdc_text_encoder_t **out, sdc_backend_t *be,
                                   const char *model_dir, int64_t text_embed_dim,
                                   int64_t text_embed_2_dim, sdc_error_t *err);
/* The same for any profile. A profile without the glyph path refuses a
 * text_embed_2_dim other than 0 (its pipeline never feeds that input). */
sdc_status_t sdc_text_encoder_open_profile(sdc_text_encoder_t **out, sdc_backend_t *be,
                                           const char *model_dir,
                                           const sdc_text_profile_t *profile,
                                           int64_t text_embed_dim, int64_t text_embed_2_dim,
                                           sdc_error_t *err);
const sdc_text_profile_t *sdc_text_encoder_profile(const sdc_text_encoder_t *te);
void sdc_text_encoder_free(sdc_text_encoder_t *te);

typedef struct {
    size_t n_tokens;     /* templated prompt tokens before truncation */
    int truncated;       /* n_tokens > drop_tokens + max_tokens */
    int64_t n_valid;     /* LLM rows with mask 1 */
    int64_t n_valid_2;   /* ByT5 rows with mask 1 (0: no quoted text) */
    size_t glyph_bytes;  /* length of the glyph text (0: none) */
    int glyph_truncated; /* the glyph text did not fit 128 ByT5 tokens */
} sdc_text_info_t;

/* Encodes prompt[0..len) into out (malloc'd members; free with
 * sdc_embeds_free on an sdc_embeds_t or free() each). info is optional. */
sdc_status_t sdc_text_encoder_encode(sdc_text_encoder_t *te, const char *prompt, size_t len,
                                     sdc_embeds_part_t *out, sdc_text_info_t *info,
                                     sdc_error_t *err);

/* The templated prompt's Qwen2 ids, untruncated (*ids malloc'd). */
sdc_status_t sdc_text_encoder_tokenize(sdc_text_encoder_t *te, const char *prompt, size_t len,
                                       int32_t **ids, size_t *n, sdc_error_t *err);

#endif
