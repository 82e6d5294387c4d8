/*
 * scheduler.c: FlowMatchEulerDiscreteScheduler (diffusers) as the
 * HunyuanImage pipeline drives it: set_timesteps(sigmas=linspace(1, 0, N+1)[:-1])
 * and the deterministic Euler step.
 *
 * Bit-exactness with diffusers is the point of this file, so every
 * expression mirrors the dtype numpy 2 / torch evaluate it in: the linspace
 * in float64, everything after `.astype(np.float32)` in float32 with Python
 * scalars rounded to float32 first (NEP 50 "weak" scalars). The build's
 * -std=c11 keeps the compiler from contracting a*b+c into an FMA.
 *
 * Not here: resolution-dependent (dynamic) shifting, Karras / exponential /
 * beta sigmas and stochastic sampling; configs asking for them are refused.
 */
#include "scheduler.h"

#include <assert.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define SCHED_CLASS "FlowMatchEulerDiscreteScheduler"

void sdc_sched_config_default(sdc_sched_config_t *c)
{
    memset(c, 0, sizeof(*c));
    c->num_train_timesteps = 1000;
    c->shift = 1.0;
    c->time_shift_type = "exponential";
    c->shift_terminal = 0.0;
}

/* Options this implementation cannot reproduce, or that diffusers itself
 * rejects when driven by the HunyuanImage pipeline (which never passes mu). */
static sdc_status_t sched_config_check(const sdc_sched_config_t *c, const char *where,
                                       sdc_error_t *err)
{
    if (c->num_train_timesteps <= 0 || c->num_train_timesteps > (1 << 24))
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "%s: num_train_timesteps = %lld, expected 1 .. 16777216", where,
                             (long long)c->num_train_timesteps);
    if (!isfinite(c->shift) || c->shift <= 0.0)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: shift = %g, expected a positive number",
                             where, c->shift);
    if (!isfinite(c->shift_terminal) || c->shift_terminal < 0.0 || c->shift_terminal >= 1.0)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "%s: shift_terminal = %g, expected 0 (none) or in (0, 1)", where,
                             c->shift_terminal);
    if (c->use_karras_sigmas + c->use_exponential_sigmas + c->use_beta_sigmas > 1)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "%s: only one of use_beta_sigmas, use_exponential_sigmas, "
                             "use_karras_sigmas can be set",
                             where);
    if (!c->time_shift_type || (strcmp(c->time_shift_type, "exponential") != 0 &&
                                strcmp(c->time_shift_type, "linear") != 0))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "%s: time_shift_type must be \"exponential\" or \"linear\"", where);
    if (c->use_dynamic_shifting)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: use_dynamic_shifting needs a resolution-dependent mu, which "
                             "the HunyuanImage pipeline does not provide",
                             where);
    if (c->use_karras_sigmas || c->use_exponential_sigmas || c->use_beta_sigmas)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: Karras, exponential and beta sigma schedules are not supported",
                             where);
    if (c->stochastic_sampling)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: stochastic_sampling (noise injected at every step) is not "
                             "supported",
                             where);
    return SDC_OK;
}

/* One boolean flag key; diffusers treats absent and null as the default. */
typedef struct {
    const char *key;
    size_t offset;
} sched_flag_t;

static const sched_flag_t sched_flags[] = {
    {"use_dynamic_shifting", offsetof(sdc_sched_config_t, use_dynamic_shifting)},
    {"invert_sigmas", offsetof(sdc_sched_config_t, invert_sigmas)},
    {"use_karras_sigmas", offsetof(sdc_sched_config_t, use_karras_sigmas)},
    {"use_exponential_sigmas", offsetof(sdc_sched_config_t, use_exponential_sigmas)},
    {"use_beta_sigmas", offsetof(sdc_sched_config_t, use_beta_sigmas)},
    {"stochastic_sampling", offsetof(sdc_sched_config_t, stochastic_sampling)},
};

sdc_status_t sdc_sched_config_from_json(sdc_sched_config_t *c, const sdc_json_t *doc,
                                        sdc_error_t *err)
{
    const char *where = doc->path ? doc->path : "scheduler config";
    const char *cls = NULL, *tst = NULL;
    sdc_status_t st;

    sdc_sched_config_default(c);
    st = sdc_json_get_string(doc, "_class_name", NULL, &cls, err);
    if (st != SDC_OK) return st;
    if (!cls)
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: no _class_name (expected %s)", where,
                             SCHED_CLASS);
    if (strcmp(cls, SCHED_CLASS) != 0)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED, "%s: scheduler class %s, only %s is supported",
                             where, cls, SCHED_CLASS);

    st = sdc_json_get_int(doc, "num_train_timesteps", 1000, &c->num_train_timesteps, err);
    if (st == SDC_OK) st = sdc_json_get_double(doc, "shift", 1.0, &c->shift, err);
    if (st == SDC_OK) st = sdc_json_get_double(doc, "shift_terminal", 0.0, &c->shift_terminal, err);
    if (st == SDC_OK) st = sdc_json_get_string(doc, "time_shift_type", "exponential", &tst, err);
    for (size_t i = 0; st == SDC_OK && i < sizeof(sched_flags) / sizeof(sched_flags[0]); i++)
        st = sdc_json_get_bool(doc, sched_flags[i].key, 0,
                               (int *)((char *)c + sched_flags[i].offset), err);
    if (st != SDC_OK) return st;

    /* Keep the config independent of the document's lifetime. */
    if (strcmp(tst, "exponential") == 0)
        c->time_shift_type = "exponential";
    else if (strcmp(tst, "linear") == 0)
        c->time_shift_type = "linear";
    else
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "%s: time_shift_type \"%s\", expected \"exponential\" or \"linear\"",
                             where, tst);
    return sched_config_check(c, where, err);
}

sdc_status_t sdc_sched_config_load(sdc_sched_config_t *c, const char *scheduler_config_json,
                                   sdc_error_t *err)
{
    sdc_json_t doc = {0};
    sdc_status_t st = sdc_json_load(&doc, scheduler_config_json, err);
    if (st != SDC_OK) return st;
    st = sdc_sched_config_from_json(c, &doc, err);
    sdc_json_free(&doc);
    return st;
}

/* np.linspace(1.0, 0.0, n + 1)[:-1].astype(np.float32): numpy computes
 * arange(n + 1) * step + start in float64 with step = (stop - start) / n. */
static void sched_linspace(float *sigmas, int n)
{
    double step = -1.0 / (double)n;
    for (int i = 0; i < n; i++) {
        double y = (double)i * step;
        y += 1.0;
        sigmas[i] = (float)y;
    }
}

/* sigmas = shift * sigmas / (1 + (shift - 1) * sigmas) on a float32 array:
 * the Python floats shift and shift - 1 are rounded to float32 first. */
static void sched_apply_shift(float *sigmas, int n, double shift)
{
    float s = (float)shift, sm1 = (float)(shift - 1.0);
    for (int i = 0; i < n; i++) {
        float num = s * sigmas[i];
        float den = 1.0f + sm1 * sigmas[i];
        sigmas[i] = num / den;
    }
}

/* stretch_shift_to_terminal: 1 - (1 - t) / ((1 - t[-1]) / (1 - shift_terminal)). */
static void sched_stretch_to_terminal(float *sigmas, int n, double shift_terminal)
{
    float scale = (1.0f - sigmas[n - 1]) / (float)(1.0 - shift_terminal);
    for (int i = 0; i < n; i++) {
        float one_minus_z = 1.0f - sigmas[i];
        sigmas[i] = 1.0f - one_minus_z / scale;
    }
}

sdc_status_t sdc_schedule_make(const sdc_sched_config_t *c, int n_steps, sdc_schedule_t *s,
                               sdc_error_t *err)
{
    sdc_status_t st;

    memset(s, 0, sizeof(*s));
    st = sched_config_check(c, "scheduler", err);
    if (st != SDC_OK) return st;
    if (n_steps <= 0 || n_steps > SDC_SCHED_MAX_STEPS)
        return sdc_error_set(err, SDC_ERR_RANGE, "scheduler: %d steps, expected 1 .. %d", n_steps,
                             SDC_SCHED_MAX_STEPS);

    float *sigmas = malloc(((size_t)n_steps + 1) * sizeof(float));
    float *timesteps = malloc((size_t)n_steps * sizeof(float));
    if (!sigmas || !timesteps) {
        free(sigmas);
        free(timesteps);
        return sdc_error_set(err, SDC_ERR_NOMEM, "scheduler: out of memory for %d steps", n_steps);
    }

    sched_linspace(sigmas, n_steps);
    sched_apply_shift(sigmas, n_steps, c->shift);
    /* `if self.config.shift_terminal:` treats 0 like None. */
    if (c->shift_terminal != 0.0) sched_stretch_to_terminal(sigmas, n_steps, c->shift_terminal);

    float ntt = (float)c->num_train_timesteps;
    if (c->invert_sigmas) {
        for (int i = 0; i < n_steps; i++) sigmas[i] = 1.0f - sigmas[i];
        sigmas[n_steps] = 1.0f;
    } else {
        sigmas[n_steps] = 0.0f;
    }
    for (int i = 0; i < n_steps; i++) timesteps[i] = sigmas[i] * ntt;

    s->n_steps = n_steps;
    s->sigmas = sigmas;
    s->timesteps = timesteps;
    return SDC_OK;
}

void sdc_schedule_free(sdc_schedule_t *s)
{
    if (!s) return;
    free(s->sigmas);
    free(s->timesteps);
    memset(s, 0, sizeof(*s));
}

void sdc_schedule_step(const sdc_schedule_t *s, int step, float *x, const float *v, int64_t n)
{
    assert(s && s->sigmas && step >= 0 && step < s->n_steps);
    assert(n >= 0 && (n == 0 || (x && v)));
    /* dt = sigma_next - sigma as 0-dim float32 tensors; prev = x + dt * v. */
    float dt = s->sigmas[step + 1] - s->sigmas[step];
    for (int64_t i = 0; i < n; i++) {
        float inc = dt * v[i];
        x[i] = x[i] + inc;
    }
}
