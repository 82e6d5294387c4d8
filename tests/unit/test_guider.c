/*
 * test_guider.c: CFG and APG-mix guidance against diffusers' guiders
 * (goldens driven like HunyuanImagePipeline), the enable rules, the momentum
 * state moving between owners, hand-computed values, and config errors.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "golden.h"
#include "model/guider.h"

#define TOL 1e-4
#define GOLDEN_STEPS 4

/* A temporary directory holding guider_config.json with the given text. */
typedef struct {
    char dir[64];
    char file[96];
} temp_guider_t;

static int temp_guider(temp_guider_t *t, const char *json)
{
    snprintf(t->dir, sizeof(t->dir), "/tmp/sdc_test_guider_XXXXXX");
    if (!mkdtemp(t->dir)) return -1;
    snprintf(t->file, sizeof(t->file), "%s/guider_config.json", t->dir);
    FILE *f = fopen(t->file, "w");
    if (!f) return -1;
    fputs(json, f);
    fclose(f);
    return 0;
}

static void temp_guider_remove(temp_guider_t *t)
{
    unlink(t->file);
    rmdir(t->dir);
}

static sdc_status_t load_text(const char *json, sdc_guider_config_t *c, sdc_error_t *err)
{
    temp_guider_t t;
    if (temp_guider(&t, json) != 0) return SDC_ERR_IO;
    sdc_status_t st = sdc_guider_config_load(c, t.dir, err);
    temp_guider_remove(&t);
    return st;
}

static int load_model_guider(const char *model, const char *name, sdc_guider_config_t *c)
{
    char dir[1024];
    sdc_error_t err = {0};
    snprintf(dir, sizeof(dir), "%s/%s/%s", test_data_dir(), model, name);
    if (sdc_guider_config_load(c, dir, &err) != SDC_OK) {
        fprintf(stderr, "  %s: %s\n", dir, err.msg);
        return -1;
    }
    return 0;
}

/* One golden step's tensors. */
typedef struct {
    float *cond, *uncond, *timestep, *pred;
    int64_t shape[8];
} golden_step_t;

static int golden_step(const sdc_st_file_t *f, int i, golden_step_t *s)
{
    char name[32];
    int nd = 0;
    memset(s, 0, sizeof(*s));
    snprintf(name, sizeof(name), "pred_cond_%d", i);
    s->cond = golden_f32(f, name, &nd, s->shape);
    snprintf(name, sizeof(name), "pred_uncond_%d", i);
    s->uncond = golden_f32(f, name, NULL, NULL);
    snprintf(name, sizeof(name), "timestep_%d", i);
    s->timestep = golden_f32(f, name, NULL, NULL);
    snprintf(name, sizeof(name), "pred_%d", i);
    s->pred = golden_f32(f, name, NULL, NULL);
    return s->cond && s->uncond && s->timestep && s->pred && nd == 4 && s->shape[0] == 1 ? 0 : -1;
}

static void golden_step_free(golden_step_t *s)
{
    free(s->cond);
    free(s->uncond);
    free(s->timestep);
    free(s->pred);
}

/* Runs the golden's steps [from, to) with state st; compares each output,
 * keeps the last in last (n floats) when given. */
static void run_golden_steps(const sdc_st_file_t *f, const sdc_guider_config_t *c,
                             sdc_guider_state_t *st, int from, int to, float *last)
{
    for (int i = from; i < to; i++) {
        golden_step_t s;
        sdc_error_t err = {0};
        if (golden_step(f, i, &s) != 0) {
            CHECK_MSG(0, "golden step %d unreadable", i);
            golden_step_free(&s);
            return;
        }
        int64_t C = s.shape[1], H = s.shape[2], W = s.shape[3], n = C * H * W;
        float *pred = malloc((size_t)n * sizeof(float));
        CHECK_EQ_INT(sdc_guider_num_passes(c, i, GOLDEN_STEPS), 2);
        CHECK_EQ_INT(sdc_guider_apply(c, st, i, GOLDEN_STEPS, s.timestep[0], s.cond, s.uncond,
                                      pred, C, H, W, &err),
                     SDC_OK);
        char what[32];
        snprintf(what, sizeof(what), "pred_%d", i);
        CHECK(test_close(what, pred, s.pred, (long)n, TOL));
        if (last && i == to - 1) memcpy(last, pred, (size_t)n * sizeof(float));
        free(pred);
        golden_step_free(&s);
    }
}

static void test_golden_apg(void)
{
    sdc_guider_config_t c;
    sdc_st_file_t f;
    if (load_model_guider("tiny-hunyuanimage", "guider", &c) != 0 ||
        golden_open(&f, "guider_apg.safetensors") != 0) {
        CHECK(0);
        return;
    }
    CHECK_EQ_INT(c.kind, SDC_GUIDER_APG_MIX);
    CHECK(c.enabled && c.guidance_scale == 3.5 && c.adaptive_projected_guidance_scale == 10.0);
    CHECK(c.adaptive_projected_guidance_momentum == -0.5 && c.eta == 0.0);
    CHECK_EQ_INT(c.adaptive_projected_guidance_start_step, 1);
    sdc_guider_state_t st = {0};
    run_golden_steps(&f, &c, &st, 0, GOLDEN_STEPS, NULL);
    CHECK(st.has_momentum && st.n == 8 * 8 * 8);
    sdc_guider_state_free(&st);
    sdc_st_close(&f);
}

static void test_golden_cfg(void)
{
    sdc_guider_config_t c;
    sdc_st_file_t f;
    if (load_model_guider("tiny-hunyuanimage-cfg", "guider", &c) != 0 ||
        golden_open(&f, "guider_cfg.safetensors") != 0) {
        CHECK(0);
        return;
    }
    CHECK_EQ_INT(c.kind, SDC_GUIDER_CFG);
    CHECK(c.guidance_scale == 4.0 && c.guidance_rescale == 0.0);
    sdc_guider_state_t st = {0};
    run_golden_steps(&f, &c, &st, 0, GOLDEN_STEPS, NULL);
    CHECK(!st.has_momentum); /* CFG keeps no state */
    sdc_guider_state_free(&st);
    sdc_st_close(&f);
}

/* A job whose state is copied out after step 1 (as if sent to another
 * process) and resumed from the copy gives the same bytes as one run. */
static void test_state_moves_between_owners(void)
{
    sdc_guider_config_t c;
    sdc_st_file_t f;
    if (load_model_guider("tiny-hunyuanimage", "guider", &c) != 0 ||
        golden_open(&f, "guider_apg.safetensors") != 0) {
        CHECK(0);
        return;
    }
    const int64_t n = 8 * 8 * 8;
    float straight[512], moved[512];
    sdc_guider_state_t a = {0};
    run_golden_steps(&f, &c, &a, 0, GOLDEN_STEPS, straight);
    sdc_guider_state_free(&a);

    run_golden_steps(&f, &c, &a, 0, 2, NULL);
    /* Serialize: the flag and the raw floats, into a fresh owner. */
    unsigned char wire[sizeof(int) + 512 * sizeof(float)];
    CHECK(a.has_momentum && a.n == n);
    memcpy(wire, &a.has_momentum, sizeof(int));
    memcpy(wire + sizeof(int), a.momentum, (size_t)n * sizeof(float));
    sdc_guider_state_free(&a);

    sdc_guider_state_t b = {0};
    memcpy(&b.has_momentum, wire, sizeof(int));
    b.n = n;
    b.momentum = malloc((size_t)n * sizeof(float));
    memcpy(b.momentum, wire + sizeof(int), (size_t)n * sizeof(float));
    sdc_guider_state_t b2 = {0};
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_guider_state_copy(&b2, &b, &err), SDC_OK);
    sdc_guider_state_free(&b);
    run_golden_steps(&f, &c, &b2, 2, GOLDEN_STEPS, moved);
    CHECK(memcmp(straight, moved, sizeof(straight)) == 0);

    /* Losing the state changes the result: it really carries something. */
    sdc_guider_state_t fresh = {0};
    golden_step_t s;
    float lost[512];
    CHECK(golden_step(&f, 3, &s) == 0);
    CHECK_EQ_INT(sdc_guider_apply(&c, &fresh, 3, GOLDEN_STEPS, 0.0f, s.cond, s.uncond, lost, 8,
                                  8, 8, &err),
                 SDC_OK);
    CHECK(memcmp(lost, straight, sizeof(lost)) != 0);
    golden_step_free(&s);
    sdc_guider_state_free(&fresh);
    sdc_guider_state_free(&b2);
    sdc_st_close(&f);
}

static void test_model_guider_configs(void)
{
    sdc_guider_config_t c, g;
    CHECK(load_model_guider("tiny-hunyuanimage", "ocr_guider", &c) == 0);
    CHECK_EQ_INT(c.kind, SDC_GUIDER_APG_MIX);
    CHECK(c.guidance_scale == 4.5 && c.adaptive_projected_guidance_scale == 8.0);
    CHECK(c.adaptive_projected_guidance_rescale == 1.5);
    CHECK_EQ_INT(c.adaptive_projected_guidance_start_step, 2);
    CHECK(load_model_guider("tiny-hunyuanimage", "guider", &g) == 0);
    /* The distilled model has no guider directory: one pass. */
    sdc_guider_config_t d;
    CHECK(load_model_guider("tiny-hunyuanimage-distilled", "guider", &d) == 0);
    CHECK_EQ_INT(d.kind, SDC_GUIDER_NONE);
    CHECK_EQ_INT(sdc_guider_num_passes(&d, 0, 4), 1);
    CHECK_EQ_INT(sdc_guider_needs_uncond(&d, 4), 0);

    CHECK(sdc_guider_select(&g, &c, 1) == &c);
    CHECK(sdc_guider_select(&g, &c, 0) == &g);
    CHECK(sdc_guider_select(&g, &d, 1) == &g);
    CHECK(sdc_guider_select(&d, &d, 1) == NULL);
    CHECK(sdc_guider_select(NULL, NULL, 0) == NULL);
}

/* _is_cfg_enabled / _is_apg_enabled / num_conditions. */
static void test_enable_rules(void)
{
    sdc_guider_config_t c;
    sdc_error_t err = {0};
    CHECK_EQ_INT(load_text("{\"_class_name\": \"ClassifierFreeGuidance\", \"start\": 0.25, "
                           "\"stop\": 0.75}",
                           &c, &err),
                 SDC_OK);
    /* int(0.25 * 10) = 2 <= step < int(0.75 * 10) = 7 */
    for (int i = 0; i < 10; i++)
        CHECK_MSG(sdc_guider_num_passes(&c, i, 10) == (i >= 2 && i < 7 ? 2 : 1), "step %d", i);
    /* int(0.25 * 3) = 0, int(0.75 * 3) = 2 */
    CHECK_EQ_INT(sdc_guider_num_passes(&c, 0, 3), 2);
    CHECK_EQ_INT(sdc_guider_num_passes(&c, 1, 3), 2);
    CHECK_EQ_INT(sdc_guider_num_passes(&c, 2, 3), 1);
    CHECK_EQ_INT(sdc_guider_needs_uncond(&c, 3), 1);
    CHECK_EQ_INT(sdc_guider_needs_uncond(&c, 1), 0); /* int(.25) = int(.75) = 0: empty range */

    c.guidance_scale = 1.0 + 1e-12; /* math.isclose(scale, 1.0) */
    CHECK_EQ_INT(sdc_guider_num_passes(&c, 3, 10), 1);
    c.guidance_scale = 1.0 + 1e-8;
    CHECK_EQ_INT(sdc_guider_num_passes(&c, 3, 10), 2);
    c.use_original_formulation = 1; /* then the neutral scale is 0 */
    CHECK_EQ_INT(sdc_guider_num_passes(&c, 3, 10), 2);
    c.guidance_scale = 0.0;
    CHECK_EQ_INT(sdc_guider_num_passes(&c, 3, 10), 1);
    c.guidance_scale = 5.0;
    c.enabled = 0;
    CHECK_EQ_INT(sdc_guider_num_passes(&c, 3, 10), 1);
    CHECK_EQ_INT(sdc_guider_num_passes(NULL, 3, 10), 1);

    /* APG: CFG rules decide the passes; APG itself starts strictly after
     * adaptive_projected_guidance_start_step. */
    CHECK_EQ_INT(load_text("{\"_class_name\": \"AdaptiveProjectedMixGuidance\", "
                           "\"adaptive_projected_guidance_start_step\": 1, "
                           "\"adaptive_projected_guidance_momentum\": null, "
                           "\"adaptive_projected_guidance_rescale\": 0}",
                           &c, &err),
                 SDC_OK);
    CHECK(isnan(c.adaptive_projected_guidance_momentum));
    /* pc = (1, 0), pu = (0, -1): CFG gives pu + 3.5 (pc - pu); APG projects
     * diff = (1, 1) off pc: orthogonal part (0, 1), so pu + 10 * (0, 1). */
    const float pc[2] = {1.0f, 0.0f}, pu[2] = {0.0f, -1.0f};
    float pred[2];
    sdc_guider_state_t st = {0};
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(sdc_guider_num_passes(&c, i, 3), 2);
        CHECK_EQ_INT(sdc_guider_apply(&c, &st, i, 3, 0.0f, pc, pu, pred, 2, 1, 1, &err), SDC_OK);
        if (i <= 1)
            CHECK_MSG(pred[0] == 3.5f && pred[1] == 2.5f, "step %d: %g %g", i, pred[0], pred[1]);
        else
            CHECK_MSG(pred[0] == 0.0f && pred[1] == 9.0f, "step %d: %g %g", i, pred[0], pred[1]);
    }
    CHECK(!st.has_momentum); /* momentum None: no buffer */
    c.eta = 0.5; /* + eta * parallel part (1, 0) */
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 2, 3, 0.0f, pc, pu, pred, 2, 1, 1, &err), SDC_OK);
    CHECK(pred[0] == 5.0f && pred[1] == 9.0f);
    c.adaptive_projected_guidance_scale = 1.0; /* APG neutral: back to CFG */
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 2, 3, 0.0f, pc, pu, pred, 2, 1, 1, &err), SDC_OK);
    CHECK(pred[0] == 3.5f && pred[1] == 2.5f);
    sdc_guider_state_free(&st);
}

/* Momentum: running = diff + m * running, updated on CFG steps too, reset at
 * step 0; the APG norm threshold clips the direction. */
static void test_momentum_and_rescale(void)
{
    sdc_guider_config_t c;
    sdc_error_t err = {0};
    CHECK_EQ_INT(load_text("{\"_class_name\": \"AdaptiveProjectedMixGuidance\", "
                           "\"adaptive_projected_guidance_start_step\": 0, "
                           "\"adaptive_projected_guidance_momentum\": -0.5, "
                           "\"adaptive_projected_guidance_rescale\": 0.5, "
                           "\"adaptive_projected_guidance_scale\": 2}",
                           &c, &err),
                 SDC_OK);
    const float pc[2] = {1.0f, 0.0f}, pu[2] = {0.0f, -1.0f};
    float pred[2];
    sdc_guider_state_t st = {0};
    /* step 0: CFG (APG needs step > 0), momentum = diff = (1, 1). */
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 0, 4, 0.0f, pc, pu, pred, 2, 1, 1, &err), SDC_OK);
    CHECK(st.has_momentum && st.momentum[0] == 1.0f && st.momentum[1] == 1.0f);
    CHECK(pred[0] == 3.5f && pred[1] == 2.5f);
    /* step 1: momentum = (1, 1) - 0.5 * (1, 1) = (0.5, 0.5), norm 0.7071 >
     * 0.5 clips it to (0.3536, 0.3536); orthogonal part (0, 0.3536). */
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 1, 4, 0.0f, pc, pu, pred, 2, 1, 1, &err), SDC_OK);
    CHECK(st.momentum[0] == 0.5f && st.momentum[1] == 0.5f);
    CHECK(pred[0] == 0.0f && fabsf(pred[1] - (-1.0f + 2.0f * 0.35355339f)) < 1e-6f);
    /* step 0 again starts a new buffer. */
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 0, 4, 0.0f, pc, pu, pred, 2, 1, 1, &err), SDC_OK);
    CHECK(st.momentum[0] == 1.0f && st.momentum[1] == 1.0f);
    sdc_guider_state_free(&st);

    /* rescale_noise_cfg: pc = (1, 3), CFG 2 with pu = (1, 1) gives (1, 5);
     * std ratio sqrt(2) / sqrt(8) = 0.5; 0.5 * (0.5, 2.5) + 0.5 * (1, 5). */
    CHECK_EQ_INT(load_text("{\"_class_name\": \"ClassifierFreeGuidance\", \"guidance_scale\": 2, "
                           "\"guidance_rescale\": 0.5}",
                           &c, &err),
                 SDC_OK);
    const float pc2[2] = {1.0f, 3.0f}, pu2[2] = {1.0f, 1.0f};
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 0, 1, 0.0f, pc2, pu2, pred, 1, 2, 1, &err), SDC_OK);
    CHECK_MSG(pred[0] == 0.75f && pred[1] == 3.75f, "%g %g", pred[0], pred[1]);
    /* In place over pred_cond. */
    float inplace[2] = {1.0f, 3.0f};
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 0, 1, 0.0f, inplace, pu2, inplace, 1, 2, 1, &err),
                 SDC_OK);
    CHECK(inplace[0] == 0.75f && inplace[1] == 3.75f);
    /* CFG off: pred_cond (still rescaled, by a ratio of 1). */
    c.enabled = 0;
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 0, 1, 0.0f, pc2, NULL, pred, 1, 2, 1, &err), SDC_OK);
    CHECK(pred[0] == 1.0f && pred[1] == 3.0f);
}

static void test_bad_configs(void)
{
    static const struct {
        const char *json;
        sdc_status_t want;
    } cases[] = {
        {"{\"_class_name\": \"PerturbedAttentionGuidance\"}", SDC_ERR_UNSUPPORTED},
        {"{\"guidance_scale\": 3}", SDC_ERR_FORMAT},
        {"{\"_class_name\": [\"ClassifierFreeGuidance\"]}", SDC_ERR_FORMAT},
        {"{\"_class_name\": \"ClassifierFreeGuidance\", \"guidance_scale\": \"7\"}",
         SDC_ERR_FORMAT},
        {"{\"_class_name\": \"ClassifierFreeGuidance\", \"enabled\": \"yes\"}", SDC_ERR_FORMAT},
        {"{\"_class_name\": \"ClassifierFreeGuidance\", \"start\": 1.0}", SDC_ERR_RANGE},
        {"{\"_class_name\": \"ClassifierFreeGuidance\", \"start\": -0.1}", SDC_ERR_RANGE},
        {"{\"_class_name\": \"ClassifierFreeGuidance\", \"start\": 0.5, \"stop\": 0.4}",
         SDC_ERR_RANGE},
        {"{\"_class_name\": \"ClassifierFreeGuidance\", \"stop\": 1.5}", SDC_ERR_RANGE},
        {"{\"_class_name\": \"AdaptiveProjectedMixGuidance\", "
         "\"adaptive_projected_guidance_start_step\": 1.5}",
         SDC_ERR_FORMAT},
        {"{\"_class_name\": \"AdaptiveProjectedMixGuidance\", "
         "\"adaptive_projected_guidance_momentum\": \"-0.5\"}",
         SDC_ERR_FORMAT},
        {"[1, 2]", SDC_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sdc_guider_config_t c;
        sdc_error_t err = {0};
        sdc_status_t st = load_text(cases[i].json, &c, &err);
        CHECK_MSG(st == cases[i].want, "%s: got %d (%s), want %d", cases[i].json, (int)st,
                  err.msg, (int)cases[i].want);
        CHECK_MSG(err.msg[0] != '\0', "%s: no message", cases[i].json);
    }
    sdc_guider_config_t c;
    sdc_error_t err = {0};
    CHECK_EQ_INT(load_text(cases[0].json, &c, &err), SDC_ERR_UNSUPPORTED);
    CHECK(strstr(err.msg, "PerturbedAttentionGuidance") != NULL);

    /* A missing directory is "no guider"; a directory without the file is an error. */
    CHECK_EQ_INT(sdc_guider_config_load(&c, "/nonexistent/guider", &err), SDC_OK);
    CHECK_EQ_INT(c.kind, SDC_GUIDER_NONE);
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/sdc_test_guider_XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    CHECK(sdc_guider_config_load(&c, dir, &err) != SDC_OK);
    rmdir(dir);
}

static void test_bad_apply_args(void)
{
    sdc_guider_config_t c;
    sdc_error_t err = {0};
    CHECK_EQ_INT(load_text("{\"_class_name\": \"AdaptiveProjectedMixGuidance\"}", &c, &err),
                 SDC_OK);
    float pc[24] = {1.0f}, pu[24] = {0.0f}, pred[24];
    sdc_guider_state_t st = {0};
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 0, 4, 0.0f, pc, pu, pred, 2, 3, 4, &err), SDC_OK);
    CHECK(st.has_momentum && st.n == 24);
    /* The job's state belongs to 24-element predictions. */
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 1, 4, 0.0f, pc, pu, pred, 2, 3, 2, &err),
                 SDC_ERR_SHAPE);
    CHECK(strstr(err.msg, "24") != NULL);
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 1, 4, 0.0f, pc, pu, pred, 0, 3, 4, &err),
                 SDC_ERR_SHAPE);
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 1, 4, 0.0f, pc, pu, pred, -2, -3, 4, &err),
                 SDC_ERR_SHAPE);
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 1, 4, 0.0f, pc, pu, pred, INT64_MAX / 2, 4, 4, &err),
                 SDC_ERR_SHAPE);
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 4, 4, 0.0f, pc, pu, pred, 2, 3, 4, &err),
                 SDC_ERR_RANGE);
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, -1, 4, 0.0f, pc, pu, pred, 2, 3, 4, &err),
                 SDC_ERR_RANGE);
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 0, 0, 0.0f, pc, pu, pred, 2, 3, 4, &err),
                 SDC_ERR_RANGE);
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 1, 4, 0.0f, pc, NULL, pred, 2, 3, 4, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_guider_apply(&c, &st, 1, 4, 0.0f, NULL, pu, pred, 2, 3, 4, &err),
                 SDC_ERR_INVALID_ARG);
    /* A state that claims momentum without a buffer is refused, not read. */
    sdc_guider_state_t bad = {.momentum = NULL, .n = 24, .has_momentum = 1};
    CHECK_EQ_INT(sdc_guider_apply(&c, &bad, 1, 4, 0.0f, pc, pu, pred, 2, 3, 4, &err),
                 SDC_ERR_SHAPE);
    sdc_guider_state_t copy = {0};
    CHECK_EQ_INT(sdc_guider_state_copy(&copy, &bad, &err), SDC_ERR_INVALID_ARG);
    sdc_guider_state_free(&st);
}

int main(void)
{
    RUN(test_golden_apg);
    RUN(test_golden_cfg);
    RUN(test_state_moves_between_owners);
    RUN(test_model_guider_configs);
    RUN(test_enable_rules);
    RUN(test_momentum_and_rescale);
    RUN(test_bad_configs);
    RUN(test_bad_apply_args);
    TEST_EXIT();
}
