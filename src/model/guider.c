/*
 * guider.c: diffusers' ClassifierFreeGuidance and AdaptiveProjectedMixGuidance
 * (guiders/) on the host float arrays of one sample, with the same
 * enable rules, momentum order and float32 / float64 arithmetic.
 *
 * The guider objects of diffusers hold per-run state (step, momentum
 * buffer); here the configuration is immutable and the only state, APG's
 * momentum running average, lives in sdc_guider_state_t, which travels with
 * the job. Reductions that torch runs in float32 (norm, std) are accumulated
 * in double and rounded once; everything elementwise is float32 like torch.
 *
 * Not here: the other diffusers guiders (PAG, SLG, ...), which the
 * HunyuanImage pipeline does not use.
 */
#include "guider.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/config.h"

/* diffusers' GUIDER_CONFIG_NAME. */
#define GUIDER_CONFIG_NAME "guider_config.json"

typedef struct {
    const char *class_name;
    sdc_guider_kind_t kind;
} guider_class_t;

static const guider_class_t guider_classes[] = {
    {"ClassifierFreeGuidance", SDC_GUIDER_CFG},
    {"AdaptiveProjectedMixGuidance", SDC_GUIDER_APG_MIX},
};

/* Constructor defaults of AdaptiveProjectedMixGuidance; the CFG fields
 * that differ are patched in config_defaults. A missing guider behaves like
 * the pipeline's fallback AdaptiveProjectedMixGuidance(enabled=False). */
static void config_defaults(sdc_guider_config_t *c, sdc_guider_kind_t kind)
{
    memset(c, 0, sizeof(*c));
    c->kind = kind;
    c->enabled = kind != SDC_GUIDER_NONE;
    c->guidance_scale = kind == SDC_GUIDER_CFG ? 7.5 : 3.5;
    c->guidance_rescale = 0.0;
    c->use_original_formulation = 0;
    c->start = 0.0;
    c->stop = 1.0;
    c->adaptive_projected_guidance_scale = 10.0;
    c->adaptive_projected_guidance_momentum = -0.5;
    c->adaptive_projected_guidance_rescale = 10.0;
    c->eta = 0.0;
    c->adaptive_projected_guidance_start_step = 5;
}

static int dir_missing(const char *dir)
{
    struct stat sb;
    return stat(dir, &sb) != 0 && errno == ENOENT;
}

typedef struct {
    const char *key;
    size_t offset;
} guider_double_key_t;

static const guider_double_key_t guider_doubles[] = {
    {"guidance_scale", offsetof(sdc_guider_config_t, guidance_scale)},
    {"guidance_rescale", offsetof(sdc_guider_config_t, guidance_rescale)},
    {"start", offsetof(sdc_guider_config_t, start)},
    {"stop", offsetof(sdc_guider_config_t, stop)},
    {"adaptive_projected_guidance_scale",
     offsetof(sdc_guider_config_t, adaptive_projected_guidance_scale)},
    {"adaptive_projected_guidance_rescale",
     offsetof(sdc_guider_config_t, adaptive_projected_guidance_rescale)},
    {"eta", offsetof(sdc_guider_config_t, eta)},
};

/* adaptive_projected_guidance_momentum: absent -> -0.5, null -> None (NaN). */
static sdc_status_t read_momentum(sdc_guider_config_t *c, const sdc_json_t *doc,
                                  const char *where, sdc_error_t *err)
{
    const char *key = "adaptive_projected_guidance_momentum";
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc->root, key);
    if (cJSON_IsNull(v)) {
        c->adaptive_projected_guidance_momentum = NAN;
        return SDC_OK;
    }
    sdc_status_t st = sdc_json_get_double(doc, key, -0.5, &c->adaptive_projected_guidance_momentum,
                                          err);
    if (st == SDC_OK && !isfinite(c->adaptive_projected_guidance_momentum))
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: %s must be finite or null", where, key);
    return st;
}

static sdc_status_t check_config(const sdc_guider_config_t *c, const char *where,
                                 sdc_error_t *err)
{
    for (size_t i = 0; i < sizeof(guider_doubles) / sizeof(guider_doubles[0]); i++) {
        double v = *(const double *)((const char *)c + guider_doubles[i].offset);
        if (!isfinite(v))
            return sdc_error_set(err, SDC_ERR_RANGE, "%s: %s = %g is not finite", where,
                                 guider_doubles[i].key, v);
    }
    /* BaseGuidance.__init__'s checks. */
    if (!(c->start >= 0.0 && c->start < 1.0))
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: start = %g, expected 0 <= start < 1", where,
                             c->start);
    if (!(c->stop >= c->start && c->stop <= 1.0))
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: stop = %g, expected %g <= stop <= 1", where,
                             c->stop, c->start);
    return SDC_OK;
}

static sdc_status_t config_from_json(sdc_guider_config_t *c, const sdc_json_t *doc,
                                     sdc_error_t *err)
{
    const char *where = doc->path ? doc->path : "guider config";
    const char *cls = NULL;
    sdc_status_t st = sdc_json_get_string(doc, "_class_name", NULL, &cls, err);
    if (st != SDC_OK) return st;
    if (!cls) return sdc_error_set(err, SDC_ERR_FORMAT, "%s: no _class_name", where);

    sdc_guider_kind_t kind = SDC_GUIDER_NONE;
    for (size_t i = 0; i < sizeof(guider_classes) / sizeof(guider_classes[0]); i++)
        if (strcmp(cls, guider_classes[i].class_name) == 0) kind = guider_classes[i].kind;
    if (kind == SDC_GUIDER_NONE)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: guider %s is not supported (ClassifierFreeGuidance, "
                             "AdaptiveProjectedMixGuidance are)",
                             where, cls);

    config_defaults(c, kind);
    for (size_t i = 0; st == SDC_OK && i < sizeof(guider_doubles) / sizeof(guider_doubles[0]); i++)
        st = sdc_json_get_double(doc, guider_doubles[i].key,
                                 *(double *)((char *)c + guider_doubles[i].offset),
                                 (double *)((char *)c + guider_doubles[i].offset), err);
    if (st == SDC_OK) st = sdc_json_get_bool(doc, "enabled", 1, &c->enabled, err);
    if (st == SDC_OK)
        st = sdc_json_get_bool(doc, "use_original_formulation", 0, &c->use_original_formulation,
                               err);
    if (st == SDC_OK && kind == SDC_GUIDER_APG_MIX) {
        int64_t start_step;
        st = sdc_json_get_int(doc, "adaptive_projected_guidance_start_step", 5, &start_step, err);
        if (st == SDC_OK && (start_step < -1000000000 || start_step > 1000000000))
            st = sdc_error_set(err, SDC_ERR_RANGE,
                               "%s: adaptive_projected_guidance_start_step = %lld is absurd", where,
                               (long long)start_step);
        if (st == SDC_OK) c->adaptive_projected_guidance_start_step = (int)start_step;
        if (st == SDC_OK) st = read_momentum(c, doc, where, err);
    }
    if (st != SDC_OK) return st;
    return check_config(c, where, err);
}

sdc_status_t sdc_guider_config_load(sdc_guider_config_t *c, const char *dir, sdc_error_t *err)
{
    if (!dir || dir_missing(dir)) {
        config_defaults(c, SDC_GUIDER_NONE);
        return SDC_OK;
    }
    size_t len = strlen(dir) + sizeof(GUIDER_CONFIG_NAME) + 1;
    char *path = malloc(len);
    if (!path) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    snprintf(path, len, "%s/%s", dir, GUIDER_CONFIG_NAME);

    sdc_json_t doc = {0};
    sdc_status_t st = sdc_json_load(&doc, path, err);
    free(path);
    if (st != SDC_OK) return st;
    st = config_from_json(c, &doc, err);
    sdc_json_free(&doc);
    return st;
}

/* math.isclose(a, b) with its defaults (rel_tol 1e-9, abs_tol 0). */
static int py_isclose(double a, double b)
{
    if (a == b) return 1;
    if (isinf(a) || isinf(b)) return 0;
    double diff = fabs(b - a);
    return diff <= fabs(1e-9 * b) || diff <= fabs(1e-9 * a);
}

/* _is_cfg_enabled: on for int(start * N) <= step < int(stop * N), unless
 * the scale makes guidance a no-op. */
static int cfg_enabled(const sdc_guider_config_t *c, int step, int n_steps)
{
    if (c->kind == SDC_GUIDER_NONE || !c->enabled) return 0;
    int64_t skip_start = (int64_t)(c->start * (double)n_steps);
    int64_t skip_stop = (int64_t)(c->stop * (double)n_steps);
    int in_range = skip_start <= step && step < skip_stop;
    double neutral = c->use_original_formulation ? 0.0 : 1.0;
    return in_range && !py_isclose(c->guidance_scale, neutral);
}

/* _is_apg_enabled: CFG on, and strictly after the start step. */
static int apg_enabled(const sdc_guider_config_t *c, int step, int n_steps)
{
    if (c->kind != SDC_GUIDER_APG_MIX || !cfg_enabled(c, step, n_steps)) return 0;
    double neutral = c->use_original_formulation ? 0.0 : 1.0;
    return step > c->adaptive_projected_guidance_start_step &&
           !py_isclose(c->adaptive_projected_guidance_scale, neutral);
}

int sdc_guider_num_passes(const sdc_guider_config_t *c, int step, int n_steps)
{
    if (!c) return 1;
    return 1 + (apg_enabled(c, step, n_steps) || cfg_enabled(c, step, n_steps));
}

int sdc_guider_needs_uncond(const sdc_guider_config_t *c, int n_steps)
{
    for (int i = 0; i < n_steps; i++)
        if (sdc_guider_num_passes(c, i, n_steps) > 1) return 1;
    return 0;
}

const sdc_guider_config_t *sdc_guider_select(const sdc_guider_config_t *guider,
                                             const sdc_guider_config_t *ocr_guider,
                                             int has_glyph_text)
{
    if (has_glyph_text && ocr_guider && ocr_guider->kind != SDC_GUIDER_NONE) return ocr_guider;
    if (guider && guider->kind != SDC_GUIDER_NONE) return guider;
    return NULL;
}

void sdc_guider_state_free(sdc_guider_state_t *st)
{
    if (!st) return;
    free(st->momentum);
    memset(st, 0, sizeof(*st));
}

sdc_status_t sdc_guider_state_copy(sdc_guider_state_t *dst, const sdc_guider_state_t *src,
                                   sdc_error_t *err)
{
    float *m = NULL;
    if (src->has_momentum) {
        if (!src->momentum || src->n <= 0)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "guider state: momentum flagged but no buffer");
        m = malloc((size_t)src->n * sizeof(float));
        if (!m) return sdc_error_set(err, SDC_ERR_NOMEM, "guider state: out of memory");
        memcpy(m, src->momentum, (size_t)src->n * sizeof(float));
    }
    sdc_guider_state_free(dst);
    dst->momentum = m;
    dst->n = m ? src->n : 0;
    dst->has_momentum = m != NULL;
    return SDC_OK;
}

/* MomentumBuffer.update(pred_cond - pred_uncond):
 * running = diff + momentum * running, running starting as the int 0. */
static sdc_status_t momentum_update(const sdc_guider_config_t *c, sdc_guider_state_t *st,
                                    const float *pc, const float *pu, int64_t n, sdc_error_t *err)
{
    if (!st->has_momentum) {
        if (!st->momentum || st->n != n) {
            free(st->momentum);
            st->momentum = NULL;
            st->n = 0;
            st->momentum = malloc((size_t)n * sizeof(float));
            if (!st->momentum)
                return sdc_error_set(err, SDC_ERR_NOMEM, "guider: out of memory for momentum");
            st->n = n;
        }
        /* momentum * 0 is a Python float (+-0.0); diff + -0.0 == diff. */
        for (int64_t i = 0; i < n; i++) st->momentum[i] = pc[i] - pu[i];
        st->has_momentum = 1;
        return SDC_OK;
    }
    float m = (float)c->adaptive_projected_guidance_momentum;
    for (int64_t i = 0; i < n; i++) {
        float diff = pc[i] - pu[i];
        float avg = m * st->momentum[i];
        st->momentum[i] = diff + avg;
    }
    return SDC_OK;
}

/* The (possibly norm-clipped) guidance direction of normalized_guidance,
 * recomputed on the fly so no n-sized scratch is needed. */
typedef struct {
    const float *running; /* momentum average or NULL */
    const float *pc, *pu;
    float scale; /* min(1, threshold / |diff|) or 1 */
} apg_diff_t;

static inline float apg_diff_raw(const apg_diff_t *d, int64_t i)
{
    return d->running ? d->running[i] : d->pc[i] - d->pu[i];
}

static inline float apg_diff(const apg_diff_t *d, int64_t i)
{
    return apg_diff_raw(d, i) * d->scale;
}

/* normalized_guidance(): projection of diff on pred_cond in float64, the
 * parallel and orthogonal parts rounded to float32, then
 * pred = base + scale * (orth + eta * par) in float32. */
static void apg_guidance(const sdc_guider_config_t *c, const sdc_guider_state_t *st,
                         const float *pc, const float *pu, float *pred, int64_t n)
{
    apg_diff_t d = {.running = isnan(c->adaptive_projected_guidance_momentum) ? NULL
                                                                              : st->momentum,
                    .pc = pc,
                    .pu = pu,
                    .scale = 1.0f};
    double thr = c->adaptive_projected_guidance_rescale;
    if (thr > 0.0) {
        double ss = 0.0;
        for (int64_t i = 0; i < n; i++) {
            double v = apg_diff_raw(&d, i);
            ss += v * v;
        }
        /* norm_threshold / diff_norm is diff_norm.reciprocal() * threshold;
         * torch.minimum(ones, .) keeps a NaN. */
        float norm = (float)sqrt(ss);
        float ratio = (1.0f / norm) * (float)thr;
        d.scale = ratio < 1.0f || isnan(ratio) ? ratio : 1.0f;
    }

    double pc_ss = 0.0;
    for (int64_t i = 0; i < n; i++) pc_ss += (double)pc[i] * (double)pc[i];
    double denom = sqrt(pc_ss);
    if (denom < 1e-12) denom = 1e-12; /* F.normalize's clamp_min(eps) */
    double dot = 0.0;
    for (int64_t i = 0; i < n; i++) dot += (double)apg_diff(&d, i) * ((double)pc[i] / denom);

    float eta = (float)c->eta, scale = (float)c->adaptive_projected_guidance_scale;
    const float *base = c->use_original_formulation ? pc : pu;
    for (int64_t i = 0; i < n; i++) {
        double v1 = (double)pc[i] / denom;
        double par = dot * v1;
        double orth = (double)apg_diff(&d, i) - par;
        float par_f = (float)par, orth_f = (float)orth;
        float upd = orth_f + eta * par_f;
        float inc = scale * upd;
        pred[i] = base[i] + inc;
    }
}

/* pred = base + guidance_scale * (pred_cond - pred_uncond), float32. */
static void cfg_guidance(const sdc_guider_config_t *c, const float *pc, const float *pu,
                         float *pred, int64_t n)
{
    float scale = (float)c->guidance_scale;
    const float *base = c->use_original_formulation ? pc : pu;
    for (int64_t i = 0; i < n; i++) {
        float shift = pc[i] - pu[i];
        float inc = scale * shift;
        pred[i] = base[i] + inc;
    }
}

/* Tensor.std() over the sample (unbiased), accumulated in double. */
static float std_unbiased(const float *x, int64_t n)
{
    double mean = 0.0, ss = 0.0;
    for (int64_t i = 0; i < n; i++) mean += x[i];
    mean /= (double)n;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - mean;
        ss += d * d;
    }
    return (float)sqrt(ss / (double)(n - 1));
}

/* rescale_noise_cfg: pred = r * pred * (std_cond / std_pred) + (1 - r) * pred. */
static void rescale_guidance(double rescale, float std_cond, float *pred, int64_t n)
{
    float ratio = std_cond / std_unbiased(pred, n);
    float r = (float)rescale, one_minus_r = (float)(1.0 - rescale);
    for (int64_t i = 0; i < n; i++) {
        float rescaled = pred[i] * ratio;
        float a = r * rescaled;
        float b = one_minus_r * pred[i];
        pred[i] = a + b;
    }
}

static sdc_status_t check_apply_args(const sdc_guider_config_t *c, const sdc_guider_state_t *st,
                                     int step, int n_steps, const float *pc, float *pred,
                                     int64_t C, int64_t H, int64_t W, sdc_error_t *err)
{
    if (!c || !st || !pc || !pred)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "guider: NULL argument");
    if (n_steps <= 0 || step < 0 || step >= n_steps)
        return sdc_error_set(err, SDC_ERR_RANGE, "guider: step %d of %d", step, n_steps);
    if (C <= 0 || H <= 0 || W <= 0 || C > INT64_MAX / H || C * H > INT64_MAX / W ||
        (uint64_t)(C * H * W) > SIZE_MAX / sizeof(float))
        return sdc_error_set(err, SDC_ERR_SHAPE, "guider: bad prediction shape %lld x %lld x %lld",
                             (long long)C, (long long)H, (long long)W);
    if (st->has_momentum && (!st->momentum || st->n != C * H * W))
        return sdc_error_set(err, SDC_ERR_SHAPE,
                             "guider: momentum state has %lld elements, prediction %lld",
                             (long long)st->n, (long long)(C * H * W));
    return SDC_OK;
}

sdc_status_t sdc_guider_apply(const sdc_guider_config_t *c, sdc_guider_state_t *st, int step,
                              int n_steps, float timestep, const float *pred_cond,
                              const float *pred_uncond, float *pred, int64_t C, int64_t H,
                              int64_t W, sdc_error_t *err)
{
    (void)timestep; /* diffusers records it in set_state; no guider here reads it */
    sdc_status_t s = check_apply_args(c, st, step, n_steps, pred_cond, pred, C, H, W, err);
    if (s != SDC_OK) return s;
    int64_t n = C * H * W;
    int has_momentum_buffer =
        c->kind == SDC_GUIDER_APG_MIX && !isnan(c->adaptive_projected_guidance_momentum);

    /* prepare_inputs at step 0 starts a fresh MomentumBuffer. */
    if (step == 0 && has_momentum_buffer) st->has_momentum = 0;

    int cfg = cfg_enabled(c, step, n_steps);
    int apg = apg_enabled(c, step, n_steps);
    if ((cfg || apg) && !pred_uncond)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "guider: step %d of %d needs the unconditional prediction", step,
                             n_steps);
    /* rescale_noise_cfg reads pred_cond, which pred may alias. */
    float std_cond = c->guidance_rescale > 0.0 ? std_unbiased(pred_cond, n) : 0.0f;

    if (cfg && has_momentum_buffer) {
        s = momentum_update(c, st, pred_cond, pred_uncond, n, err);
        if (s != SDC_OK) return s;
    }
    if (apg)
        apg_guidance(c, st, pred_cond, pred_uncond, pred, n);
    else if (cfg)
        cfg_guidance(c, pred_cond, pred_uncond, pred, n);
    else if (pred != pred_cond)
        memcpy(pred, pred_cond, (size_t)n * sizeof(float));

    if (c->guidance_rescale > 0.0) rescale_guidance(c->guidance_rescale, std_cond, pred, n);
    return SDC_OK;
}
