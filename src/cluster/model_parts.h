/*
 * model_parts.h: the part of a model one cluster process loads, as an
 * sdc_pipeline_t so that the engine's own functions (sdc_denoise_*,
 * sdc_pipeline_decode) run on it unchanged: a DiT stage loads its block
 * range, a VAE node only the decoder, a text-encoder node only the guider
 * configs. It also turns a job's parameters into the engine's
 * (sdc_gen_params_t plus the guider override), exactly as sdc-generate does
 * with its flags: every process that needs them derives them here, so stage
 * 0, the last stage and the text encoder agree on the guider and its passes.
 *
 * Not the engine: nothing here computes.
 */
#ifndef SDC_MODEL_PARTS_H
#define SDC_MODEL_PARTS_H

#include "backend/backend.h"
#include "cluster/rt_jobs.h"
#include "common/status.h"
#include "model/pipeline.h"

enum {
    SDC_PARTS_DIT = 1u,     /* blocks [block_begin, block_end) (+ embedders / head) */
    SDC_PARTS_VAE = 2u,     /* the VAE decoder */
    SDC_PARTS_DENOISE = 4u, /* scheduler + guider + ocr_guider configs */
};

/* Opens model_dir's parts. be may be NULL when neither DIT nor VAE is
 * asked for. sdc_denoise_init needs DIT, VAE and DENOISE together (it reads
 * the VAE factor from the loaded VAE). Free with sdc_pipeline_free. */
sdc_status_t sdc_parts_open(sdc_pipeline_t **out, sdc_backend_t *be, const char *model_dir,
                            unsigned parts, int block_begin, int block_end, sdc_error_t *err);

/* A job's engine parameters and its copy of base with the guidance
 * override applied (sdc-generate's --guidance: the distilled guidance of a
 * guidance-embedding model, else both guiders' guidance_scale). job_pipe
 * must outlive any sdc_denoise_t initialised from it: the state points at
 * its guider configs. */
void sdc_parts_job(const sdc_pipeline_t *base, const sdc_dit_config_t *dc,
                   const sdc_job_params_t *jp, sdc_pipeline_t *job_pipe, sdc_gen_params_t *gp);

/* sdc-generate's default size: default_sample_size (64) latent pixels. */
int sdc_parts_default_side(const sdc_vae_config_t *vc);

/* The checks sdc_pipeline_check_params makes, from the configs alone (the
 * coordinator loads no weights). The stage that initialises the job runs
 * the engine's own check again. */
sdc_status_t sdc_parts_check_params(const sdc_dit_config_t *dc, const sdc_vae_config_t *vc,
                                    const sdc_gen_params_t *gp, sdc_error_t *err);

#endif
