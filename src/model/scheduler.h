/*
 * scheduler.h: FlowMatchEulerDiscreteScheduler (diffusers) as the
 * HunyuanImage pipeline drives it: sigmas = linspace(1, 0, N + 1)[:-1]
 * passed to set_timesteps, shifted by `shift`, terminal sigma 0 appended,
 * and the Euler step x_next = x + (sigma_next - sigma) * v.
 * The arithmetic reproduces diffusers' dtypes (float64 numpy, then float32).
 */
#ifndef SDC_SCHEDULER_H
#define SDC_SCHEDULER_H

#include <stdint.h>

#include "../common/config.h"
#include "../common/status.h"

typedef struct {
    int64_t num_train_timesteps; /* 1000 */
    double shift;                /* 1.0 */
    int use_dynamic_shifting;    /* unsupported when true (HunyuanImage uses false) */
    int invert_sigmas, use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas;
    int stochastic_sampling;
    const char *time_shift_type; /* static string: "exponential" (default) or "linear" */
    double shift_terminal;       /* 0 = none */
} sdc_sched_config_t;

/* Reads scheduler/scheduler_config.json (a path). Checks _class_name and
 * refuses options this implementation does not reproduce (dynamic shifting,
 * Karras / exponential / beta sigmas, stochastic sampling). */
sdc_status_t sdc_sched_config_load(sdc_sched_config_t *c, const char *scheduler_config_json,
                                   sdc_error_t *err);
sdc_status_t sdc_sched_config_from_json(sdc_sched_config_t *c, const sdc_json_t *doc,
                                        sdc_error_t *err);
void sdc_sched_config_default(sdc_sched_config_t *c);

typedef struct {
    int n_steps;
    float *sigmas;    /* n_steps + 1 (last is 0) */
    float *timesteps; /* n_steps: sigma * num_train_timesteps */
} sdc_schedule_t;

/* More steps than this is taken for a mistake. */
#define SDC_SCHED_MAX_STEPS 10000

/* n_steps in 1 .. SDC_SCHED_MAX_STEPS. */
sdc_status_t sdc_schedule_make(const sdc_sched_config_t *c, int n_steps, sdc_schedule_t *s,
                               sdc_error_t *err);
void sdc_schedule_free(sdc_schedule_t *s);
/* x[i] = x[i] + (sigmas[step + 1] - sigmas[step]) * v[i], in float32 as diffusers. */
void sdc_schedule_step(const sdc_schedule_t *s, int step, float *x, const float *v, int64_t n);

#endif
