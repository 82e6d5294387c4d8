/*
 * qwen2.h: the language model of Qwen2.5-VL (transformers'
 * Qwen2_5_VLForConditionalGeneration) as a text encoder: token ids in, one
 * hidden state out. Text only: for a prompt without images the multimodal
 * RoPE gives every section the same position, i.e. ordinary 1-D RoPE, and
 * the vision tower is never read. Plain Qwen2 checkpoints (the same decoder
 * without the tower) load too.
 *
 * Decoder layer: x += o(causal GQA attention(rope(q), rope(k), v)) with
 * q/k/v biases and RMS norms before attention and MLP; MLP is
 * down(silu(gate(x)) * up(x)).
 *
 * hidden_states as transformers numbers them: [0] is the embedding output,
 * [i] the output of layer i-1, and the last one has the final norm applied.
 * HunyuanImage uses hidden_states[-3]; sdc_qwen2_load(skip = 2) loads only
 * the layers that state needs.
 */
#ifndef SDC_QWEN2_H
#define SDC_QWEN2_H

#include <stdint.h>

#include "../backend/backend.h"
#include "../common/status.h"

typedef struct {
    int64_t vocab_size, hidden_size, intermediate_size;
    int64_t num_layers, num_heads, num_kv_heads, head_dim;
    double rms_eps, rope_theta;
} sdc_qwen2_config_t;

/* Reads config.json: the text_config object when there is one (transformers
 * 5 layout), else the top level (older flat layout); rope_theta from
 * rope_parameters / rope_scaling / rope_theta as transformers resolves it. */
sdc_status_t sdc_qwen2_config_load(sdc_qwen2_config_t *c, const char *config_json,
                                   sdc_error_t *err);

typedef struct sdc_qwen2 sdc_qwen2_t;

/* Loads dir (config.json + safetensors, tensor names model.language_model.*
 * or model.*) for hidden_states[-(skip + 1)]: the first num_layers - skip
 * layers, and the final norm only when skip is 0. */
sdc_status_t sdc_qwen2_load(sdc_qwen2_t **out, sdc_backend_t *be, const char *dir, int skip,
                            sdc_error_t *err);
void sdc_qwen2_free(sdc_qwen2_t *m);
const sdc_qwen2_config_t *sdc_qwen2_config(const sdc_qwen2_t *m);
/* Layers the loaded model runs. */
int64_t sdc_qwen2_layers_run(const sdc_qwen2_t *m);

/* The hidden state for ids[0..n) at positions 0..n-1, causal attention over
 * all of them, into host memory out (n x hidden_size). A right-padded batch
 * row's valid prefix gives exactly its outputs here: with a causal mask a
 * valid token never sees a padded one, so running only the prefix is exact. */
sdc_status_t sdc_qwen2_forward(sdc_qwen2_t *m, const int32_t *ids, int64_t n, float *out,
                               sdc_error_t *err);

#endif
