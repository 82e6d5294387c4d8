/*
 * dit.h: HunyuanImageTransformer2DModel (diffusers), runnable as a
 * contiguous range of blocks so the cluster can split it into stages.
 *
 * Block numbering: blocks [0, num_layers) are the dual-stream
 * transformer_blocks, [num_layers, num_layers + num_single_layers) the
 * single-stream single_transformer_blocks. A stage holding [a, b) loads only
 * those blocks; the stage with a == 0 also loads the embedders, the stage
 * with b == total also norm_out/proj_out.
 *
 * One sample's activation is one buffer of (n_img + n_txt) rows x hidden:
 * image tokens first, then text tokens, the layout the single-stream blocks
 * use; dual-stream blocks treat the two row ranges as their two streams.
 * Samples are processed one at a time, so a sample's result never depends on
 * its micro-batch neighbours, nor on how the blocks are split into stages.
 *
 * An sdc_dit_t is used by one thread at a time: its scratch buffers (grown
 * on demand, never shrunk) and RoPE table cache are shared by its calls.
 */
#ifndef SDC_DIT_H
#define SDC_DIT_H

#include <stdint.h>

#include "../backend/backend.h"
#include "../common/config.h"
#include "../common/status.h"

typedef struct {
    int64_t in_channels, out_channels;
    int64_t num_attention_heads, attention_head_dim;
    int64_t num_layers, num_single_layers, num_refiner_layers;
    double mlp_ratio;
    int64_t patch_size[2];    /* height, width */
    /* 1 when patch_size has three entries (frame, height, width), as the
     * refiner's: sdc runs one frame, so the frame patch must be 1 and the
     * x_embedder is a Conv3d whose kernel has a single frame. 0: 2-D. */
    int patch_3d;
    int guidance_embeds;
    int use_meanflow;
    int64_t text_embed_dim;
    int64_t text_embed_2_dim; /* 0: no ByT5 projection (context_embedder_2) */
    double rope_theta;
    int64_t rope_axes_dim[2]; /* the row and column axes */
    /* With three rope_axes_dim entries (frame, rows, columns; the refiner's)
     * the frame axis comes first in each head. One frame sits at frame
     * position 0, where every angle is 0: cos 1, sin 0, an identity on those
     * columns. 0 with two entries. */
    int64_t rope_frame_dim;
    /* Seedream switch (sdc extension key "sdc_rope_centered" in config.json):
     * centre-aligned scaled 2D RoPE; base grid in tokens from
     * "sdc_rope_base_grid" [h, w]. docs/rope.md has the formula. */
    int rope_centered;
    int64_t rope_base_grid[2];
} sdc_dit_config_t;

/* Reads transformer/config.json; checks _class_name and every size. */
sdc_status_t sdc_dit_config_load(sdc_dit_config_t *c, const char *config_json, sdc_error_t *err);
sdc_status_t sdc_dit_config_from_json(sdc_dit_config_t *c, const sdc_json_t *doc,
                                      sdc_error_t *err);
static inline int64_t sdc_dit_hidden(const sdc_dit_config_t *c)
{
    return c->num_attention_heads * c->attention_head_dim;
}
static inline int sdc_dit_total_blocks(const sdc_dit_config_t *c)
{
    return (int)(c->num_layers + c->num_single_layers);
}

typedef struct sdc_dit sdc_dit_t;

/* Loads the weights for blocks [block_begin, block_end) (plus embedders and/or
 * head as described above) from transformer_dir. */
sdc_status_t sdc_dit_load(sdc_dit_t **out, sdc_backend_t *be, const char *transformer_dir,
                          int block_begin, int block_end, sdc_error_t *err);
void sdc_dit_free(sdc_dit_t *m);
const sdc_dit_config_t *sdc_dit_config(const sdc_dit_t *m);

/* Per-sample conditioning, host memory. */
typedef struct {
    const float *latent;       /* in_channels x H x W (latent pixels) */
    int64_t height, width;     /* latent H, W; multiples of patch_size */
    float timestep;            /* t (sigma * 1000) */
    float timestep_r;          /* meanflow models only */
    float guidance;            /* guidance_embeds models only (scale * 1000) */
    const float *text;         /* n_text x text_embed_dim */
    const uint8_t *text_mask;  /* n_text, 1 = valid; NULL = all valid. At
                                * least one token must be valid. */
    int64_t n_text;
    const float *text_2;       /* n_text_2 x text_embed_2_dim, or NULL; ignored
                                * (as in diffusers) by a model without
                                * context_embedder_2 */
    const uint8_t *text_mask_2; /* NULL = all valid */
    int64_t n_text_2;
    /* 1: drop masked text tokens before the DiT (exact; the default).
     * 0: keep them, masked out of attention, as diffusers does. Both give the
     * same result up to float rounding. */
    int trim_text;
} sdc_dit_input_t;

/* One sample's state between blocks (device buffers owned by the sample). */
typedef struct {
    int64_t grid_h, grid_w; /* image tokens = grid_h * grid_w */
    int64_t n_img, n_txt;
    float *x;               /* (n_img + n_txt) x hidden */
    float *temb;            /* hidden */
    uint8_t *txt_mask;      /* n_txt bytes (device) or NULL when all valid */
} sdc_dit_sample_t;

/* Stage 0: embeddings, token refiner, ByT5 projection, token reordering.
 * Allocates *s afresh (free it with sdc_dit_sample_free); on failure *s is
 * left empty. Text rows are [valid ByT5, valid LLM] then, untrimmed,
 * [padded ByT5, padded LLM] with txt_mask marking them (NULL when none). */
sdc_status_t sdc_dit_embed(sdc_dit_t *m, const sdc_dit_input_t *in, sdc_dit_sample_t *s,
                           sdc_error_t *err);
/* Allocates a sample's buffers for given sizes (receiving side of a stage). */
sdc_status_t sdc_dit_sample_alloc(sdc_dit_t *m, sdc_dit_sample_t *s, int64_t grid_h,
                                  int64_t grid_w, int64_t n_txt, int with_mask,
                                  sdc_error_t *err);
void sdc_dit_sample_free(sdc_dit_t *m, sdc_dit_sample_t *s);
/* Runs blocks [begin, end) (within the loaded range; an empty range is a
 * no-op) on n samples in order, updating each sample's x in place. */
sdc_status_t sdc_dit_run_blocks(sdc_dit_t *m, sdc_dit_sample_t *samples, int n, int begin,
                                int end, sdc_error_t *err);
/* Last stage: norm_out + proj_out + unpatchify into out (host,
 * out_channels x H x W). */
sdc_status_t sdc_dit_head(sdc_dit_t *m, const sdc_dit_sample_t *s, float *out,
                          sdc_error_t *err);

/* Host-side helpers exposed for tests and the cluster. */
/* RoPE tables for a grid: cos/sin each (grid_h*grid_w) x head_dim. */
sdc_status_t sdc_dit_rope_tables(const sdc_dit_config_t *c, int64_t grid_h, int64_t grid_w,
                                 float *cos_out, float *sin_out, sdc_error_t *err);
/* RoPE positions of the n tokens along axis 0 (rows) or 1 (columns): i, or
 * the centre-aligned scaled positions when rope_centered (docs/rope.md). */
sdc_status_t sdc_dit_rope_positions(const sdc_dit_config_t *c, int axis, int64_t n, float *pos,
                                    sdc_error_t *err);

#endif
