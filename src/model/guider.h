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
 * 1 otherwise (diffusers' num_conditions and _is_*_enabled rules). */
int sdc_guider_num_passes(const sdc_guider_config_t *c, int step, int n_steps);

typedef struct {
    float *momentum; /* n elements or NULL until first use */
    int64_t n;
    int has_momentum;
} sdc_guider_state_t;

void sdc_guider_state_free(sdc_guider_state_t *st);

/* pred = guidance(pred_cond, pred_uncond) for this step; pred_uncond is
 * ignored when only one pass ran. Shape: C x H x W (n = C*H*W, dims given
 * because APG reduces over some of them). */
sdc_status_t sdc_guider_apply(const sdc_guider_config_t *c, sdc_guider_state_t *st, int step,
                              int n_steps, float timestep, const float *pred_cond,
                              const float *pred_uncond, float *pred, int64_t C, int64_t H,
                              int64_t W, sdc_error_t *err);

#endif
