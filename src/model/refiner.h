/*
 * refiner.h: the HunyuanImage-2.1 refiner, HunyuanImageRefinerPipeline
 * semantics in one process: an image (or its latents) + text conditioning
 * -> a refined image. This is the engine API a cluster role calls; the
 * denoising steps are pipeline.c's (sdc_denoise_step) on the refiner's own
 * transformer, the VAE is vae_refiner.c's.
 *
 * A refiner model directory is a diffusers layout of its own:
 * model_index.json with _class_name HunyuanImageRefinerPipeline,
 * transformer/ (HunyuanImageTransformer2DModel taking 2 x its output
 * channels: the noisy latents and the image latents, concatenated),
 * vae/ (AutoencoderKLHunyuanImageRefiner), scheduler/
 * (FlowMatchEulerDiscreteScheduler), optional guider/, and text_encoder/ +
 * tokenizer/ (Qwen2.5-VL and its tokenizer, the same as the base model's).
 * The text conditioning is computed by sdc_refiner_encode_prompt (the text
 * encoder's "refiner" profile: the refiner's chat template, 36 template
 * tokens dropped, 256 kept, no glyph encoder), or comes in as embeddings;
 * the run functions take it as sdc_text_cond_t.
 *
 * What one run computes (pipeline_hunyuanimage_refiner.py):
 *   0. prompt -> prompt_embeds (1 x 256 x text_embed_dim) + mask
 *      (sdc_refiner_encode_prompt, before the refiner is opened: the LLM
 *      and the DiT need not be resident together).
 *   1. image: resized to the output size with PIL's Lanczos when the sizes
 *      differ (VaeImageProcessor.preprocess on a PIL image; common/resize
 *      is bit-exact), then RGB8 -> 2 * (u / 255) - 1.
 *   2. z = VAE posterior sample (mean + exp(0.5 logvar) * eps, eps = Philox
 *      stream 1 of the seed), latent_channels x h x w.
 *   3. image_latents = cat([z, z]) * scaling_factor: _reorder_image_tokens
 *      of one frame puts the frame twice along channels.
 *   4. latents = Philox stream 0 (2 latent_channels x h x w);
 *      cond_latents = s * noise + (1 - s) * image_latents with noise =
 *      Philox stream 2 and s = cond_strength (prepare_latents' strength,
 *      0.25 in diffusers, not a __call__ argument there).
 *   5. steps: sigmas linspace(1, 0, N + 1)[:-1] through the scheduler (the
 *      whole schedule: the refiner starts from pure noise, the image enters
 *      as conditioning), DiT on cat([latents, cond_latents]) with guidance
 *      = distilled_guidance_scale * 1000, the guider (none: one pass), the
 *      Euler step.
 *   6. decode: _restore_image_tokens_order keeps the second frame, i.e.
 *      channels [latent_channels, 2 latent_channels) of the final latents,
 *      divided by scaling_factor, through the VAE decoder, then to RGB8.
 */
#ifndef SDC_REFINER_H
#define SDC_REFINER_H

#include <stdint.h>

#include "../backend/backend.h"
#include "../common/philox.h"
#include "../common/status.h"
#include "dit.h"
#include "embeds.h"
#include "guider.h"
#include "pipeline.h"
#include "scheduler.h"
#include "text_encoder.h"
#include "vae_refiner.h"

/* Philox stream of the noise blended into the image latents (step 4). */
#define SDC_PHILOX_STREAM_REFINER_COND 2u

typedef struct {
    int steps;                       /* default 4, the pipeline's */
    uint64_t seed;                   /* Philox seed of all three draws */
    double distilled_guidance_scale; /* default 3.25 */
    double cond_strength;            /* 0 .. 1, default 0.25 */
    int trim_text;                   /* 1 (default): drop padded text tokens */
    int width, height;               /* output size; 0 (default): the input's */
} sdc_refiner_params_t;

void sdc_refiner_params_default(sdc_refiner_params_t *p);

/* Step 0 for the refiner in model_dir (HunyuanImageRefinerPipeline.
 * encode_prompt): out->pos from prompt[0..len); out->neg (has_neg) from
 * negative ("" when NULL) only when the model's guider makes an
 * unconditional pass over `steps` steps, as the pipeline decides. Reads the
 * transformer and guider configs, loads text_encoder/ and tokenizer/ and
 * frees them before returning. Free out with sdc_embeds_free. info
 * (optional): token counts of the prompt. */
sdc_status_t sdc_refiner_encode_prompt(sdc_backend_t *be, const char *model_dir,
                                       const char *prompt, size_t len, const char *negative,
                                       size_t negative_len, int steps, sdc_embeds_t *out,
                                       sdc_text_info_t *info, sdc_error_t *err);

/* The same in two halves, for a process that keeps the encoder (a refiner
 * node): sdc_refiner_text_open opens model_dir's text encoder with the
 * refiner profile at its transformer's widths; sdc_refiner_encode_text
 * encodes with it, g (the refiner's guider) deciding whether the negative
 * prompt is needed. */
sdc_status_t sdc_refiner_text_open(sdc_backend_t *be, const char *model_dir,
                                   sdc_text_encoder_t **te, sdc_error_t *err);
sdc_status_t sdc_refiner_encode_text(sdc_text_encoder_t *te, const sdc_guider_config_t *g,
                                     const char *prompt, size_t len, const char *negative,
                                     size_t negative_len, int steps, sdc_embeds_t *out,
                                     sdc_text_info_t *info, sdc_error_t *err);

typedef struct {
    char *model_dir;
    sdc_backend_t *be;
    sdc_dit_t *dit;            /* all blocks */
    sdc_vae_refiner_t *vae;    /* encoder and decoder */
    sdc_sched_config_t sched;
    sdc_guider_config_t guider; /* kind NONE when the model has none */
} sdc_refiner_t;

/* model_dir exists and its model_index.json names
 * HunyuanImageRefinerPipeline (a base model directory is refused by name). */
sdc_status_t sdc_refiner_check_dir(const char *model_dir, sdc_error_t *err);

/* Checks model_index.json (a base HunyuanImagePipeline directory, or any
 * other class, is refused by name) and loads transformer/, vae/,
 * scheduler/ and guider/; the transformer must take twice the channels it
 * outputs, and output 2 x the VAE's latent_channels. */
sdc_status_t sdc_refiner_open(sdc_refiner_t **out, sdc_backend_t *be, const char *model_dir,
                              sdc_error_t *err);
void sdc_refiner_free(sdc_refiner_t *r);

/* Image sizes must be positive multiples of the VAE factor times the patch
 * size, at most SDC_MAX_IMAGE_SIDE per side; steps 1 .. 1000; strength in
 * [0, 1]; guidance in (0, 1000) for guidance-embedding transformers. */
sdc_status_t sdc_refiner_check(const sdc_refiner_t *r, int width, int height,
                               const sdc_refiner_params_t *rp, sdc_error_t *err);

/* The output size for an input image: rp->width / rp->height, or the
 * image's own where they are 0. */
void sdc_refiner_output_size(const sdc_refiner_params_t *rp, int image_width, int image_height,
                             int *width, int *height);

/* Step 1's resize: the input image (image_width x image_height, each side
 * 1 .. SDC_MAX_IMAGE_SIDE) at the output size (*width x *height, checked
 * with sdc_refiner_check), malloc'd into *out; a copy when the sizes
 * agree. */
sdc_status_t sdc_refiner_prepare_image(const sdc_refiner_t *r, const sdc_refiner_params_t *rp,
                                       const uint8_t *rgb, int image_width, int image_height,
                                       uint8_t **out, int *width, int *height, sdc_error_t *err);

/* Steps 1-3 (the image already at the output size): image_latents (2 latent_channels x height/f x width/f, host)
 * of an RGB8 image (height x width x 3), posterior noise from seed. */
sdc_status_t sdc_refiner_encode_image(sdc_refiner_t *r, const uint8_t *rgb, int width,
                                      int height, uint64_t seed, float *image_latents,
                                      sdc_error_t *err);

/* Step 4 into a fresh denoising state (free with sdc_denoise_free):
 * d->latent holds the noise and, after it, cond_latents. noise: NULL for
 * Philox stream 0 of rp->seed. h, w: latent size. */
sdc_status_t sdc_refiner_denoise_init(sdc_denoise_t *d, const sdc_refiner_t *r,
                                      const sdc_refiner_params_t *rp, const float *image_latents,
                                      int64_t h, int64_t w, const float *noise, sdc_error_t *err);

/* Step 6: final latents (2 latent_channels x h x w) -> RGB8 (malloc'd,
 * (h*f) x (w*f) x 3); decoded_out (optional, malloc'd) gets the raw VAE
 * output (3 x H x W). */
sdc_status_t sdc_refiner_decode(sdc_refiner_t *r, const float *latent, int64_t h, int64_t w,
                                uint8_t **rgb_out, float **decoded_out, sdc_error_t *err);

/* Steps 4-6 from image latents (h x w latent pixels). neg: NULL unless the
 * model's guider makes an unconditional pass. latent_out (optional,
 * malloc'd): the final latents. timing->vae_s counts decoding. */
sdc_status_t sdc_refiner_run_latents(sdc_refiner_t *r, const sdc_refiner_params_t *rp,
                                     const float *image_latents, int64_t h, int64_t w,
                                     const sdc_text_cond_t *pos, const sdc_text_cond_t *neg,
                                     sdc_progress_fn progress, void *progress_ctx,
                                     uint8_t **rgb_out, float **latent_out,
                                     sdc_gen_timing_t *timing, sdc_error_t *err);

/* The whole refiner on an RGB8 image of image_width x image_height: steps
 * 1-6; the output has sdc_refiner_output_size's size. timing->vae_s counts
 * resizing, encoding and decoding. */
sdc_status_t sdc_refiner_run(sdc_refiner_t *r, const sdc_refiner_params_t *rp, const uint8_t *rgb,
                             int image_width, int image_height, const sdc_text_cond_t *pos,
                             const sdc_text_cond_t *neg, sdc_progress_fn progress,
                             void *progress_ctx, uint8_t **rgb_out, float **latent_out,
                             sdc_gen_timing_t *timing, sdc_error_t *err);

#endif
