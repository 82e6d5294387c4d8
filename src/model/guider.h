/*
 * guider.h: the guidance methods the HunyuanImage pipeline uses, on host
 * float arrays of one job: ClassifierFreeGuidance and
 * AdaptiveProjectedMixGuidance (diffusers guiders/), configured from a model
 * directory's guider/ and ocr_guider/ configs. APG's momentum buffer is per
 * job state carried from step to step (sdc_guider_state_t), so a job can
 * move between processes between steps.
 */
#ifndef SDC_GUIDER_H
#define SDC_GUIDER_H

#include <stdint.h>

#include "../common/status.h"

typedef enum {
    SDC_GUIDER_NONE = 0, /* distilled model: one conditional pass */
    SDC_GUIDER_CFG,
    SDC_GUIDER_APG_MIX
} sdc_guider_kind_t;

typedef struct {
    sdc_guider_kind_t kind;
    int enabled;
    double guidance_scale;
    double guidance_rescale;
    int use_original_formulation;
    double start, stop;      /* fractions of the steps where guidance is on */
    /* AdaptiveProjectedMixGuidance */
    double adaptive_projected_guidance_scale;
    double adaptive_projected_guidance_momentum; /* NaN = no momentum */
    double adaptive_projected_guidance_rescale;
    double eta;
    int adaptive_projected_guidance_start_step;
} sdc_guider_config_t;

/* Loads DIR/guider_config.json (diffusers' file name for guiders). A missing
 * directory gives kind NONE. */
sdc_status_t sdc_guider_config_load(sdc_guider_config_t *c, const char *dir, sdc_error_t *err);

/* Number of model passes per step: 2 when guidance is active at this step,
 * 1 otherwise (diffusers' num_conditions and _is_*_enabled rules):
 * CFG is on when enabled, int(start * n_steps) <= step < int(stop * n_steps)
 * and guidance_scale is not close to 1 (0 with use_original_formulation);
 * APG additionally needs step > adaptive_projected_guidance_start_step and
 * adaptive_projected_guidance_scale not close to 1 (0). c NULL: 1. */
int sdc_guider_num_passes(const sdc_guider_config_t *c, int step, int n_steps);

/* 1 when some step of an n_steps run makes two passes, i.e. the job needs
 * negative-prompt embeddings. */
int sdc_guider_needs_uncond(const sdc_guider_config_t *c, int n_steps);

/* The pipeline's choice: ocr_guider when the job has glyph text (ByT5
 * embeddings not all zero) and one is configured, else guider, else NULL
 * (one conditional pass, pred = pred_cond). Either argument may be NULL. */
const sdc_guider_config_t *sdc_guider_select(const sdc_guider_config_t *guider,
                                             const sdc_guider_config_t *ocr_guider,
                                             int has_glyph_text);

/* A job's guider state: APG's MomentumBuffer.running_average. Zero-init
 * it; sdc_guider_apply resets it at step 0. To move a job between
 * processes, send has_momentum and, when set, the n floats of momentum. */
typedef struct {
    float *momentum; /* n elements or NULL until first use */
    int64_t n;
    int has_momentum;
} sdc_guider_state_t;

void sdc_guider_state_free(sdc_guider_state_t *st);
/* Deep copy; dst's previous buffer is freed. */
sdc_status_t sdc_guider_state_copy(sdc_guider_state_t *dst, const sdc_guider_state_t *src,
                                   sdc_error_t *err);

/* pred = guidance(pred_cond, pred_uncond) for this step; pred_uncond is
 * ignored when only one pass ran. Shape: C x H x W (n = C*H*W, dims given
 * because APG reduces over some of them). pred may alias pred_cond or
 * pred_uncond. The whole run must use the same config and n_steps. */
sdc_status_t sdc_guider_apply(const sdc_guider_config_t *c, sdc_guider_state_t *st, int step,
                              int n_steps, float timestep, const float *pred_cond,
                              const float *pred_uncond, float *pred, int64_t C, int64_t H,
                              int64_t W, sdc_error_t *err);

#endif
