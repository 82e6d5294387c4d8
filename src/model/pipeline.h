/*
 * pipeline.h: HunyuanImagePipeline semantics in one process: text
 * conditioning + parameters -> latent -> image.
 *
 * The per-job denoising state (sdc_denoise_t: latent, step, schedule, chosen
 * guider and its momentum) is separate from the models, and one step is
 * split into "what the DiT must compute" (sdc_denoise_passes / _timesteps)
 * and "fold the DiT's predictions in" (sdc_denoise_update). sdc-generate
 * drives it in a loop; the cluster drives the same functions on the last DiT
 * stage, which is why both produce bit-identical images.
 */
#ifndef SDC_PIPELINE_H
#define SDC_PIPELINE_H

#include <stdint.h>

#include "../backend/backend.h"
#include "../common/status.h"
#include "dit.h"
#include "guider.h"
#include "scheduler.h"
#include "vae.h"

/* Largest image side sdc accepts, in pixels (HunyuanImage-2.1 trains at 2K). */
#define SDC_MAX_IMAGE_SIDE 8192

/* One prompt's text conditioning (host memory, not owned). */
typedef struct {
    const float *embeds;   /* n x text_embed_dim (Qwen2.5-VL hidden state) */
    const uint8_t *mask;   /* n, 1 = valid */
    int64_t n;
    const float *embeds_2; /* n_2 x text_embed_2_dim (ByT5), NULL if none */
    const uint8_t *mask_2;
    int64_t n_2;
} sdc_text_cond_t;

typedef struct {
    int width, height;              /* pixels */
    int steps;
    uint64_t seed;
    double distilled_guidance_scale; /* guidance-distilled models (default 3.25) */
    int trim_text;                  /* 1 (default): drop padded text tokens */
} sdc_gen_params_t;

void sdc_gen_params_default(sdc_gen_params_t *p);

typedef struct {
    char *model_dir;
    sdc_backend_t *be;
    sdc_dit_t *dit;   /* all blocks */
    sdc_vae_t *vae;
    sdc_sched_config_t sched;
    sdc_guider_config_t guider;     /* kind NONE when the model has none */
    sdc_guider_config_t ocr_guider; /* kind NONE when the model has none */
} sdc_pipeline_t;

/* model_index.json of model_dir must name pipeline_class, the transformer
 * HunyuanImageTransformer2DModel, the VAE vae_class and the scheduler
 * FlowMatchEulerDiscreteScheduler; the error names what differs. */
sdc_status_t sdc_pipeline_check_index(const char *model_dir, const char *pipeline_class,
                                      const char *vae_class, sdc_error_t *err);
/* Checks model_index.json and loads transformer/, vae/, scheduler/, guider/,
 * ocr_guider/. */
sdc_status_t sdc_pipeline_open(sdc_pipeline_t **out, sdc_backend_t *be, const char *model_dir,
                               sdc_error_t *err);
void sdc_pipeline_free(sdc_pipeline_t *p);

/* Reads only guider/ and ocr_guider/ of model_dir (kind NONE for an absent
 * directory), e.g. to know before loading the models whether a job needs
 * negative conditioning (sdc_guider_select on the result). */
sdc_status_t sdc_pipeline_load_guiders(const char *model_dir, sdc_guider_config_t *guider,
                                       sdc_guider_config_t *ocr_guider, sdc_error_t *err);

/* Validates width/height/steps against the model (multiples of the VAE factor
 * times the patch size, within SDC_MAX_IMAGE_SIDE) with a message naming the
 * flag-level problem. */
sdc_status_t sdc_pipeline_check_params(const sdc_pipeline_t *p, const sdc_gen_params_t *gp,
                                       sdc_error_t *err);

/* Per-job denoising state. */
typedef struct {
    int64_t channels, h, w;   /* latent shape */
    /* Image-conditioning planes (the refiner's cond_latents) stored after
     * the channels of the latent in `latent`, so that `latent` is the DiT's
     * whole input (torch.cat([latents, cond_latents], dim=1)); they never
     * change. 0 for text-to-image. */
    int64_t cond_channels;
    int step, n_steps;
    float *latent;            /* (channels + cond_channels) * h * w, host */
    sdc_schedule_t schedule;
    const sdc_guider_config_t *guider; /* NULL: no guidance (one pass) */
    sdc_guider_state_t guider_state;
    int use_meanflow;
    int guidance_embeds;
    float guidance;           /* distilled_guidance_scale * 1000 */
} sdc_denoise_t;

/* has_glyph: the prompt's ByT5 embeddings are not all zero (the pipeline
 * then uses ocr_guider when the model has one). noise: channels*h*w initial
 * latent, or NULL to draw it from Philox with gp->seed. */
sdc_status_t sdc_denoise_init(sdc_denoise_t *d, const sdc_pipeline_t *p,
                              const sdc_gen_params_t *gp, int has_glyph, const float *noise,
                              sdc_error_t *err);
/* The model-independent part of sdc_denoise_init, for pipelines with
 * another VAE (the refiner): a latent of dc->out_channels x h x w (noise,
 * or Philox stream 0 of gp->seed when NULL) followed by cond_channels
 * zeroed planes the caller fills; dc->in_channels must be their sum.
 * guider: NULL for one conditional pass. gp->steps and
 * gp->distilled_guidance_scale are used as given. */
sdc_status_t sdc_denoise_setup(sdc_denoise_t *d, const sdc_dit_config_t *dc,
                               const sdc_sched_config_t *sched, const sdc_guider_config_t *guider,
                               int64_t h, int64_t w, int64_t cond_channels,
                               const sdc_gen_params_t *gp, const float *noise, sdc_error_t *err);
void sdc_denoise_free(sdc_denoise_t *d);
/* 1 or 2 DiT passes (cond, then uncond) at the current step. */
int sdc_denoise_passes(const sdc_denoise_t *d);
/* The current step's DiT scalar inputs. */
void sdc_denoise_inputs(const sdc_denoise_t *d, float *timestep, float *timestep_r,
                        float *guidance);
/* Folds the DiT outputs of this step in (guider + Euler step); step++. */
sdc_status_t sdc_denoise_update(sdc_denoise_t *d, const float *pred_cond,
                                const float *pred_uncond, sdc_error_t *err);
static inline int sdc_denoise_done(const sdc_denoise_t *d) { return d->step >= d->n_steps; }

/* 1 if any element of the ByT5 embeddings is non-zero. */
int sdc_text_cond_has_glyph(const sdc_text_cond_t *c, int64_t dim_2);

/* Builds the DiT input for one pass of the current step. */
void sdc_denoise_dit_input(const sdc_denoise_t *d, const sdc_text_cond_t *text, int trim_text,
                           sdc_dit_input_t *in);

typedef struct {
    double embed_s, blocks_s, head_s, guide_s, vae_s, total_s;
    int dit_passes;
} sdc_gen_timing_t;

typedef void (*sdc_progress_fn)(void *ctx, int step, int n_steps, double elapsed_s);

/* Whole generation: returns the image as RGB8 (w*h*3, malloc'd) and,
 * optionally, the final latent (malloc'd, channels*h*w). neg may be NULL
 * when the chosen guider needs no unconditional pass. */
sdc_status_t sdc_pipeline_generate(sdc_pipeline_t *p, const sdc_gen_params_t *gp,
                                   const sdc_text_cond_t *pos, const sdc_text_cond_t *neg,
                                   const float *noise, sdc_progress_fn progress,
                                   void *progress_ctx, uint8_t **rgb_out, float **latent_out,
                                   sdc_gen_timing_t *timing, sdc_error_t *err);

/* One whole denoising step of d: the DiT passes the guider needs at this
 * step, then sdc_denoise_update. pred_cond/pred_uncond: scratch of
 * channels*h*w floats each (they hold the predictions afterwards). */
sdc_status_t sdc_pipeline_step(sdc_pipeline_t *p, sdc_denoise_t *d, const sdc_text_cond_t *pos,
                               const sdc_text_cond_t *neg, int trim_text, float *pred_cond,
                               float *pred_uncond, sdc_gen_timing_t *t, sdc_error_t *err);

/* sdc_pipeline_step with the transformer given (any pipeline's DiT). */
sdc_status_t sdc_denoise_step(sdc_dit_t *dit, sdc_denoise_t *d, const sdc_text_cond_t *pos,
                              const sdc_text_cond_t *neg, int trim_text, float *pred_cond,
                              float *pred_uncond, sdc_gen_timing_t *t, sdc_error_t *err);
/* Latent (already final) -> RGB8 via the VAE, dividing by scaling_factor as
 * the pipeline does. decoded_out (optional, malloc'd) gets the raw VAE output. */
sdc_status_t sdc_pipeline_decode(sdc_pipeline_t *p, const float *latent, int64_t h, int64_t w,
                                 uint8_t **rgb_out, float **decoded_out, sdc_error_t *err);

#endif
