/*
 * text_encoder.c: encode_prompt of diffusers' HunyuanImagePipeline and
 * HunyuanImageRefinerPipeline (see text_encoder.h): the chat template,
 * truncation, the LLM hidden state with the template dropped, and the ByT5
 * glyph path. The two pipelines differ only in the profile's constants.
 *
 * The LLM runs on the valid tokens only: the reference pads to 1034 tokens
 * on the right, and with causal attention no valid token attends to a
 * padded one, so their hidden states are the same. ByT5 likewise runs on
 * its valid prefix (masked keys contribute nothing, see t5.h).
 */
#include "text_encoder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/config.h"
#include "../common/log.h"
#include "../common/utf8.h"
#include "glyph.h"
#include "qwen2.h"
#include "t5.h"
#include "tokenizer_bpe.h"

const char sdc_text_template_prefix[] =
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, "
    "quantity, text, spatial relationships of the objects and background:<|im_end|>\n"
    "<|im_start|>user\n";
const char sdc_text_template_suffix[] = "<|im_end|>";

/* Llama-3 style headers: the Qwen2 tokenizer has no special tokens for
 * them, so they are ordinary text to the BPE, as in the reference. */
static const char refiner_template_prefix[] =
    "<|start_header_id|>system<|end_header_id|>\n\nDescribe the image by detailing the color, "
    "shape, size, texture, quantity, text, spatial relationships of the objects and "
    "background:<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n";
static const char refiner_template_suffix[] = "<|eot_id|>";

const sdc_text_profile_t sdc_text_profile_base = {
    .name = "base",
    .template_prefix = sdc_text_template_prefix,
    .template_suffix = sdc_text_template_suffix,
    .drop_tokens = SDC_TEXT_DROP_TOKENS,
    .max_tokens = SDC_TEXT_MAX_TOKENS,
    .skip_layers = SDC_TEXT_SKIP_LAYERS,
    .glyph = 1,
};

const sdc_text_profile_t sdc_text_profile_refiner = {
    .name = "refiner",
    .template_prefix = refiner_template_prefix,
    .template_suffix = refiner_template_suffix,
    .drop_tokens = SDC_TEXT_REFINER_DROP_TOKENS,
    .max_tokens = SDC_TEXT_REFINER_MAX_TOKENS,
    .skip_layers = SDC_TEXT_SKIP_LAYERS,
    .glyph = 0,
};

static const sdc_text_profile_t *const profiles[] = {&sdc_text_profile_base,
                                                     &sdc_text_profile_refiner};

const sdc_text_profile_t *sdc_text_profile_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof(profiles) / sizeof(profiles[0]); i++)
        if (strcmp(profiles[i]->name, name) == 0)
            return profiles[i];
    return NULL;
}

struct sdc_text_encoder {
    const sdc_text_profile_t *prof;
    sdc_bpe_t *tok;
    sdc_qwen2_t *llm;
    sdc_byt5_tok_t *tok2; /* NULL with t5 when the DiT takes no ByT5 input */
    sdc_t5_t *t5;
    int64_t dim, dim_2;
};

/* model_index.json components and the classes sdc implements for them. */
static const struct {
    const char *key;
    const char *classes[3];
    int byt5; /* needed only when the DiT has a ByT5 input */
} te_components[] = {
    {"text_encoder", {"Qwen2_5_VLForConditionalGeneration", "Qwen2VLForConditionalGeneration"}, 0},
    {"tokenizer", {"Qwen2Tokenizer", "Qwen2TokenizerFast"}, 0},
    {"text_encoder_2", {"T5EncoderModel"}, 1},
    {"tokenizer_2", {"ByT5Tokenizer"}, 1},
};

static sdc_status_t check_components(const char *model_dir, int with_byt5, sdc_error_t *err)
{
    char path[4096];
    sdc_json_t doc;
    if (snprintf(path, sizeof(path), "%s/model_index.json", model_dir) >= (int)sizeof(path))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: path too long", model_dir);
    sdc_status_t st = sdc_json_load(&doc, path, err);
    if (st != SDC_OK)
        return st;
    for (size_t i = 0; i < sizeof(te_components) / sizeof(te_components[0]) && st == SDC_OK;
         i++) {
        const char *cls = NULL;
        if (te_components[i].byt5 && !with_byt5)
            continue;
        st = sdc_json_get_component_class(&doc, te_components[i].key, &cls, err);
        if (st != SDC_OK)
            break;
        if (!cls) {
            st = sdc_error_set(err, SDC_ERR_NOT_FOUND,
                               "%s: model_index.json has no '%s': this model has no text "
                               "encoder, it needs precomputed embeddings",
                               model_dir, te_components[i].key);
            break;
        }
        int ok = 0;
        for (size_t k = 0; k < 3 && te_components[i].classes[k]; k++)
            ok |= strcmp(cls, te_components[i].classes[k]) == 0;
        if (!ok)
            st = sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                               "%s: model_index.json: component '%s' is '%s', expected '%s'",
                               model_dir, te_components[i].key, cls,
                               te_components[i].classes[0]);
    }
    sdc_json_free(&doc);
    return st;
}

static sdc_status_t sub_path(char *buf, size_t cap, const char *dir, const char *sub,
                             sdc_error_t *err)
{
    int n = snprintf(buf, cap, "%s/%s", dir, sub);
    if (n < 0 || (size_t)n >= cap)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: path too long", dir);
    return SDC_OK;
}

/* Both widths are checked from the configs before any weight is read. */
static sdc_status_t check_widths(const char *model_dir, int64_t dim, int64_t dim_2,
                                 sdc_error_t *err)
{
    char path[4096];
    sdc_qwen2_config_t qc;
    sdc_t5_config_t tc;
    sdc_status_t st;
    st = sub_path(path, sizeof(path), model_dir, "text_encoder/config.json", err);
    if (st == SDC_OK)
        st = sdc_qwen2_config_load(&qc, path, err);
    if (st != SDC_OK)
        return st;
    if (qc.hidden_size != dim)
        return sdc_error_set(err, SDC_ERR_SHAPE,
                             "%s: text_encoder hidden_size %lld does not match the transformer's "
                             "text_embed_dim %lld",
                             model_dir, (long long)qc.hidden_size, (long long)dim);
    if (!dim_2)
        return SDC_OK;
    st = sub_path(path, sizeof(path), model_dir, "text_encoder_2/config.json", err);
    if (st == SDC_OK)
        st = sdc_t5_config_load(&tc, path, err);
    if (st == SDC_OK && tc.d_model != dim_2)
        st = sdc_error_set(err, SDC_ERR_SHAPE,
                           "%s: text_encoder_2 d_model %lld does not match the transformer's "
                           "text_embed_2_dim %lld",
                           model_dir, (long long)tc.d_model, (long long)dim_2);
    return st;
}

void sdc_text_encoder_free(sdc_text_encoder_t *te)
{
    if (!te)
        return;
    sdc_bpe_free(te->tok);
    sdc_qwen2_free(te->llm);
    sdc_byt5_tok_free(te->tok2);
    sdc_t5_free(te->t5);
    free(te);
}

sdc_status_t sdc_text_encoder_open(sdc_text_encoder_t **out, sdc_backend_t *be,
                                   const char *model_dir, int64_t text_embed_dim,
                                   int64_t text_embed_2_dim, sdc_error_t *err)
{
    return sdc_text_encoder_open_profile(out, be, model_dir, &sdc_text_profile_base,
                                         text_embed_dim, text_embed_2_dim, err);
}

const sdc_text_profile_t *sdc_text_encoder_profile(const sdc_text_encoder_t *te)
{
    return te->prof;
}

sdc_status_t sdc_text_encoder_open_profile(sdc_text_encoder_t **out, sdc_backend_t *be,
                                           const char *model_dir,
                                           const sdc_text_profile_t *profile,
                                           int64_t text_embed_dim, int64_t text_embed_2_dim,
                                           sdc_error_t *err)
{
    char path[4096];
    sdc_status_t st;
    if (!profile)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "text encoder: no profile");
    if (text_embed_dim < 1 || text_embed_2_dim < 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "text encoder: bad widths %lld / %lld",
                             (long long)text_embed_dim, (long long)text_embed_2_dim);
    if (!profile->glyph && text_embed_2_dim)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: the transformer takes a glyph (ByT5) input of width %lld, "
                             "which the %s pipeline never feeds",
                             model_dir, (long long)text_embed_2_dim, profile->name);
    st = check_components(model_dir, text_embed_2_dim > 0, err);
    if (st == SDC_OK)
        st = check_widths(model_dir, text_embed_dim, text_embed_2_dim, err);
    if (st != SDC_OK)
        return st;
    sdc_text_encoder_t *te = calloc(1, sizeof(*te));
    if (!te)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    te->prof = profile;
    te->dim = text_embed_dim;
    te->dim_2 = text_embed_2_dim;
    if ((st = sub_path(path, sizeof(path), model_dir, "tokenizer", err)) ||
        (st = sdc_bpe_load(path, &te->tok, err)) ||
        (st = sub_path(path, sizeof(path), model_dir, "text_encoder", err)) ||
        (st = sdc_qwen2_load(&te->llm, be, path, profile->skip_layers, err)))
        goto err_free;
    if (text_embed_2_dim &&
        ((st = sub_path(path, sizeof(path), model_dir, "tokenizer_2", err)) ||
         (st = sdc_byt5_tok_load(path, &te->tok2, err)) ||
         (st = sub_path(path, sizeof(path), model_dir, "text_encoder_2", err)) ||
         (st = sdc_t5_load(&te->t5, be, path, err))))
        goto err_free;
    *out = te;
    return SDC_OK;

err_free:
    sdc_text_encoder_free(te);
    return st;
}

/* Valid UTF-8 view of the prompt: the prompt itself, or a repaired copy in
 * *owned. */
static sdc_status_t valid_text(const char *prompt, size_t len, const char **text, size_t *tlen,
                               char **owned, sdc_error_t *err)
{
    *owned = NULL;
    *text = prompt ? prompt : "";
    *tlen = len;
    if (!len || sdc_utf8_valid_len(prompt, len) == len)
        return SDC_OK;
    sdc_status_t st = sdc_utf8_repair(prompt, len, owned, tlen, err);
    if (st == SDC_OK)
        *text = *owned;
    return st;
}

static sdc_status_t tokenize_valid(sdc_text_encoder_t *te, const char *text, size_t len,
                                   int32_t **ids, size_t *n, sdc_error_t *err)
{
    const char *prefix = te->prof->template_prefix, *suffix = te->prof->template_suffix;
    size_t np = strlen(prefix), ns = strlen(suffix);
    char *buf = malloc(np + len + ns + 1);
    if (!buf)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory for a %zu-byte prompt", len);
    memcpy(buf, prefix, np);
    if (len)
        memcpy(buf + np, text, len);
    memcpy(buf + np + len, suffix, ns + 1);
    sdc_status_t st = sdc_bpe_encode(te->tok, buf, np + len + ns, ids, n, err);
    free(buf);
    return st;
}

sdc_status_t sdc_text_encoder_tokenize(sdc_text_encoder_t *te, const char *prompt, size_t len,
                                       int32_t **ids, size_t *n, sdc_error_t *err)
{
    const char *text;
    size_t tlen;
    char *owned;
    sdc_status_t st = valid_text(prompt, len, &text, &tlen, &owned, err);
    if (st == SDC_OK)
        st = tokenize_valid(te, text, tlen, ids, n, err);
    free(owned);
    return st;
}

/* The LLM half: rows [0, n_valid) of a max-length, zero-padded matrix. */
static sdc_status_t encode_llm(sdc_text_encoder_t *te, const char *text, size_t len,
                               sdc_embeds_part_t *out, sdc_text_info_t *info, sdc_error_t *err)
{
    const int64_t D = te->dim, drop = te->prof->drop_tokens, max = te->prof->max_tokens;
    const int64_t keep_max = drop + max;
    int32_t *ids = NULL;
    size_t n_total = 0;
    float *hidden = NULL;
    sdc_status_t st = tokenize_valid(te, text, len, &ids, &n_total, err);
    if (st != SDC_OK)
        return st;
    int64_t n_keep = (int64_t)n_total < keep_max ? (int64_t)n_total : keep_max;
    int64_t n_valid = n_keep > drop ? n_keep - drop : 0;
    if ((int64_t)n_total > keep_max)
        SDC_WARN("the prompt is %zu tokens long, more than the %s text encoder's %lld: the last "
                 "%zu are dropped",
                 n_total - (size_t)drop, te->prof->name, (long long)max,
                 n_total - (size_t)keep_max);
    out->embeds = calloc((size_t)(max * D), sizeof(float));
    out->mask = calloc((size_t)max, 1);
    hidden = malloc((size_t)(n_keep * D) * sizeof(float));
    if (!out->embeds || !out->mask || !hidden) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory encoding the prompt");
        goto out;
    }
    st = sdc_qwen2_forward(te->llm, ids, n_keep, hidden, err);
    if (st != SDC_OK)
        goto out;
    memcpy(out->embeds, hidden + drop * D, (size_t)(n_valid * D) * sizeof(float));
    memset(out->mask, 1, (size_t)n_valid);
    out->n = max;
    out->dim = D;
    if (info) {
        info->n_tokens = n_total;
        info->truncated = (int64_t)n_total > keep_max;
        info->n_valid = n_valid;
    }
out:
    free(ids);
    free(hidden);
    return st;
}

/* The ByT5 half: zeros and an all-zero mask when nothing is quoted. */
static sdc_status_t encode_glyph(sdc_text_encoder_t *te, const char *text, size_t len,
                                 sdc_embeds_part_t *out, sdc_text_info_t *info, sdc_error_t *err)
{
    const int64_t D2 = te->dim_2, L2 = SDC_TEXT_MAX_TOKENS_2;
    char *glyph = NULL;
    size_t glyph_len = 0, n_full = 0;
    int32_t ids[SDC_TEXT_MAX_TOKENS_2];
    int n_valid = 0;
    float *hidden = NULL;
    out->embeds_2 = calloc((size_t)(L2 * D2), sizeof(float));
    out->mask_2 = calloc((size_t)L2, 1);
    out->n_2 = L2;
    out->dim_2 = D2;
    if (!out->embeds_2 || !out->mask_2)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory encoding the prompt");
    sdc_status_t st = sdc_glyph_extract(text, len, &glyph, &glyph_len, err);
    if (st != SDC_OK || !glyph)
        return st;
    st = sdc_byt5_encode(te->tok2, glyph, glyph_len, (int)L2, ids, &n_valid, &n_full, err);
    if (st != SDC_OK)
        goto out;
    if (n_full >= (size_t)L2)
        SDC_WARN("the quoted text (%zu bytes as the glyph encoder reads it) is longer than "
                 "ByT5's %lld tokens: only its beginning is encoded",
                 glyph_len, (long long)L2);
    hidden = malloc((size_t)(n_valid * D2) * sizeof(float));
    if (!hidden) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory encoding the quoted text");
        goto out;
    }
    st = sdc_t5_encode(te->t5, ids, n_valid, hidden, err);
    if (st != SDC_OK)
        goto out;
    memcpy(out->embeds_2, hidden, (size_t)(n_valid * D2) * sizeof(float));
    memset(out->mask_2, 1, (size_t)n_valid);
    if (info) {
        info->n_valid_2 = n_valid;
        info->glyph_bytes = glyph_len;
        info->glyph_truncated = n_full >= (size_t)L2;
    }
out:
    free(glyph);
    free(hidden);
    return st;
}

sdc_status_t sdc_text_encoder_encode(sdc_text_encoder_t *te, const char *prompt, size_t len,
                                     sdc_embeds_part_t *out, sdc_text_info_t *info,
                                     sdc_error_t *err)
{
    const char *text;
    size_t tlen;
    char *owned;
    memset(out, 0, sizeof(*out));
    if (info)
        memset(info, 0, sizeof(*info));
    sdc_status_t st = valid_text(prompt, len, &text, &tlen, &owned, err);
    if (st == SDC_OK)
        st = encode_llm(te, text, tlen, out, info, err);
    if (st == SDC_OK && te->t5)
        st = encode_glyph(te, text, tlen, out, info, err);
    free(owned);
    if (st != SDC_OK) {
        free(out->embeds);
        free(out->mask);
        free(out->embeds_2);
        free(out->mask_2);
        memset(out, 0, sizeof(*out));
    }
    return st;
}
