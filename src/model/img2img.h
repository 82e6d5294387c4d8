/*
 * img2img.h: image-to-image (SDEdit) on the HunyuanImage pipeline.
 *
 * diffusers has no HunyuanImage image-to-image pipeline; the semantics are
 * HunyuanImagePipeline's components driven by diffusers' flux img2img
 * recipe (FluxImg2ImgPipeline), which tests/data/goldens/img2img_*.safetensors
 * were made with:
 *   1. image = VaeImageProcessor.preprocess(image): RGB8 -> float32
 *      2 * (u / 255) - 1, CHW. The image must already have the output size:
 *      sdc does not resample (diffusers would resize with PIL's Lanczos).
 *   2. schedule: the pipeline's N-step schedule; get_timesteps keeps its
 *      tail from t_start = int(max(N - min(N * strength, N), 0)), so
 *      N - t_start steps run, numbered 0 .. N - t_start - 1 for the guider.
 *   3. image_latents = (mean + exp(0.5 * logvar) * eps) * scaling_factor:
 *      the VAE posterior sampled as flux does (retrieve_latents, "sample"),
 *      eps from Philox stream 1 of the seed (vae.h).
 *   4. latents = sigma * noise + (1 - sigma) * image_latents
 *      (scheduler.scale_noise), sigma = sigmas[t_start], noise = the usual
 *      initial noise (Philox stream 0 of the seed).
 *   5. denoise the remaining steps exactly as text-to-image, then decode.
 * strength 1 gives t_start 0 and sigma 1: the text-to-image result, bit
 * for bit. strength 0 runs no step (flux refuses it; here it returns the
 * decoded image latents, i.e. scale_noise at the terminal sigma 0).
 */
#ifndef SDC_IMG2IMG_H
#define SDC_IMG2IMG_H

#include <stdint.h>

#include "../common/status.h"
#include "pipeline.h"

/* The input image, host memory, not owned. */
typedef struct {
    const uint8_t *rgb; /* height x width x 3, row-major RGB8 */
    int width, height;
    double strength;    /* 0 .. 1 */
} sdc_init_image_t;

/* VaeImageProcessor.preprocess of an RGB8 image at its own size:
 * chw[c][y][x] = 2 * (rgb[y][x][c] / 255) - 1, each op in float32. */
void sdc_img2img_preprocess(const uint8_t *rgb, int w, int h, float *chw);

/* get_timesteps: the first of steps steps that strength keeps. strength
 * must be in [0, 1] (NaN is refused). */
sdc_status_t sdc_img2img_start_step(int steps, double strength, int *t_start, sdc_error_t *err);

/* Checks init against gp: same width and height, strength in [0, 1]. */
sdc_status_t sdc_img2img_check(const sdc_gen_params_t *gp, const sdc_init_image_t *init,
                               sdc_error_t *err);

/* Step 3: image_latents (latent_channels x height/r x width/r, host)
 * from init->rgb, with the posterior noise of gp->seed. Loads the VAE
 * encoder on first use. */
sdc_status_t sdc_img2img_encode(sdc_pipeline_t *p, const sdc_gen_params_t *gp,
                                const sdc_init_image_t *init, float *image_latents,
                                sdc_error_t *err);

/* sdc_denoise_init, then steps 2 and 4: d keeps only the schedule's tail
 * (d->n_steps = N - t_start, possibly 0) and starts from the noised image
 * latents. noise: channels*h*w, or NULL for Philox stream 0 of gp->seed. */
sdc_status_t sdc_denoise_init_img2img(sdc_denoise_t *d, const sdc_pipeline_t *p,
                                      const sdc_gen_params_t *gp, int has_glyph,
                                      const float *image_latents, double strength,
                                      const float *noise, sdc_error_t *err);

/* The whole image-to-image generation, as sdc_pipeline_generate (same
 * outputs; timing->vae_s counts encoding and decoding). */
sdc_status_t sdc_pipeline_generate_img2img(sdc_pipeline_t *p, const sdc_gen_params_t *gp,
                                           const sdc_init_image_t *init,
                                           const sdc_text_cond_t *pos, const sdc_text_cond_t *neg,
                                           const float *noise, sdc_progress_fn progress,
                                           void *progress_ctx, uint8_t **rgb_out,
                                           float **latent_out, sdc_gen_timing_t *timing,
                                           sdc_error_t *err);

#endif
