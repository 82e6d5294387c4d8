/*
 * test_img2img.c: image-to-image against the goldens made with diffusers'
 * components and the flux img2img recipe (tests/data/goldens/img2img_*):
 * preprocessing and noise bit for bit, the image latents, the starting
 * latent, every step, the VAE output and the bytes; strength 1 equal to
 * text-to-image; the strength -> first step rule; and the errors.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "test.h"
#include "golden.h"

#include "backend/backend.h"
#include "common/philox.h"
#include "model/embeds.h"
#include "model/img2img.h"
#include "model/pipeline.h"

static const struct {
    const char *name, *model;
    double strength; /* as a user types it (the golden stores float32) */
} cases[] = {
    {"apg_64x96", "tiny-hunyuanimage", 0.6},
    {"full_64x64", "tiny-hunyuanimage", 1.0},
    {"zero_64x64", "tiny-hunyuanimage", 0.0},
    {"distilled_64x64", "tiny-hunyuanimage-distilled", 0.5},
};

static sdc_backend_t *make_backend(void)
{
    sdc_backend_config_t bc = {.name = "cpu", .n_threads = 0};
    sdc_backend_t *be = NULL;
    sdc_error_t err = {0};
    if (sdc_backend_create(&bc, &be, &err) != SDC_OK) fprintf(stderr, "  backend: %s\n", err.msg);
    return be;
}

/* One golden case, opened with its model: parameters, conditioning, input. */
typedef struct {
    sdc_st_file_t g;
    sdc_backend_t *be;
    sdc_pipeline_t *p;
    sdc_embeds_t emb;
    int have_emb;
    sdc_gen_params_t gp;
    sdc_text_cond_t pos, neg;
    uint8_t *rgb;
    sdc_init_image_t init;
    int64_t n; /* latent elements */
} i2i_case_t;

static void case_close(i2i_case_t *c)
{
    free(c->rgb);
    if (c->have_emb) sdc_embeds_free(&c->emb);
    sdc_pipeline_free(c->p);
    sdc_st_close(&c->g);
    if (c->be) sdc_backend_destroy(c->be);
}

static int case_open(i2i_case_t *c, int ci)
{
    char model[512], gname[128], path[1024];
    sdc_error_t err = {0};
    memset(c, 0, sizeof(*c));
    snprintf(model, sizeof(model), "%s/%s", test_data_dir(), cases[ci].model);
    snprintf(gname, sizeof(gname), "img2img_%s.safetensors", cases[ci].name);
    snprintf(path, sizeof(path), "%s/goldens/%s", test_data_dir(), gname);
    c->be = make_backend();
    if (!c->be || golden_open(&c->g, gname) != 0) return -1;
    if (sdc_pipeline_open(&c->p, c->be, model, &err) != SDC_OK) {
        fprintf(stderr, "  %s: %s\n", model, err.msg);
        return -1;
    }
    const sdc_dit_config_t *dc = sdc_dit_config(c->p->dit);
    if (sdc_embeds_load(&c->emb, path, dc->text_embed_dim, dc->text_embed_2_dim, &err) !=
        SDC_OK) {
        fprintf(stderr, "  embeds: %s\n", err.msg);
        return -1;
    }
    c->have_emb = 1;
    sdc_embeds_cond(&c->emb.pos, &c->pos);
    sdc_embeds_cond(&c->emb.neg, &c->neg);
    sdc_gen_params_default(&c->gp);
    c->gp.height = (int)golden_i64(&c->g, "height", 0);
    c->gp.width = (int)golden_i64(&c->g, "width", 0);
    c->gp.steps = (int)golden_i64(&c->g, "steps", 0);
    c->gp.seed = (uint64_t)golden_i64(&c->g, "seed", 0);
    if (sdc_st_find(&c->g, "distilled_guidance_scale")) {
        float *s = golden_f32(&c->g, "distilled_guidance_scale", NULL, NULL);
        c->gp.distilled_guidance_scale = s ? s[0] : 3.25;
        free(s);
    }
    float *st = golden_f32(&c->g, "strength", NULL, NULL);
    CHECK(st && st[0] == (float)cases[ci].strength);
    free(st);

    int nd = 0;
    int64_t shape[8];
    float *u8 = golden_f32(&c->g, "init_image_u8", &nd, shape);
    if (!u8 || nd != 3 || shape[0] != c->gp.height || shape[1] != c->gp.width || shape[2] != 3) {
        free(u8);
        return -1;
    }
    size_t nb = (size_t)(3 * shape[0] * shape[1]);
    c->rgb = malloc(nb);
    for (size_t i = 0; c->rgb && i < nb; i++) c->rgb[i] = (uint8_t)u8[i];
    free(u8);
    c->init = (sdc_init_image_t){.rgb = c->rgb, .width = c->gp.width, .height = c->gp.height,
                                 .strength = cases[ci].strength};
    c->n = dc->in_channels * (c->gp.height / 8) * (c->gp.width / 8);
    return c->rgb ? 0 : -1;
}

/* The image bytes may differ by one level on a few pixels (float32
 * differences within tolerance crossing a rounding boundary). */
static void check_bytes(const char *what, const uint8_t *rgb, const float *ref, int64_t n)
{
    long off = 0, bad = 0;
    for (int64_t i = 0; i < n; i++) {
        int d = abs((int)rgb[i] - (int)ref[i]);
        off += d == 1;
        bad += d > 1;
    }
    CHECK_MSG(bad == 0 && off * 100 <= n, "%s: %ld bytes off by 1, %ld off by more", what, off,
              bad);
}

static double worst_rel(const float *got, const float *ref, int64_t n)
{
    double worst = 0, maxref = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (d > worst) worst = d;
        if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    }
    return worst / (maxref > 0 ? maxref : 1);
}

/* Every intermediate of one case against its golden. */
static void run_golden(int ci)
{
    i2i_case_t c;
    sdc_error_t err = {0};
    sdc_denoise_t d;
    int have_d = 0;
    float *chw = NULL, *lat = NULL, *pc = NULL, *pu = NULL, *noise = NULL;
    uint8_t *rgb = NULL, *rgb2 = NULL;
    float *decoded = NULL, *ref = NULL;
    if (case_open(&c, ci) != 0) {
        CHECK(0);
        goto out;
    }
    const char *name = cases[ci].name;
    int64_t npx = (int64_t)c.gp.width * c.gp.height, n = c.n;
    size_t bytes = (size_t)n * sizeof(float);

    /* VaeImageProcessor.preprocess, bit for bit. */
    chw = malloc((size_t)(3 * npx) * sizeof(float));
    ref = golden_f32(&c.g, "init_image", NULL, NULL);
    sdc_img2img_preprocess(c.rgb, c.gp.width, c.gp.height, chw);
    CHECK_MSG(ref && memcmp(chw, ref, (size_t)(3 * npx) * sizeof(float)) == 0,
              "%s: preprocessed image differs from diffusers'", name);
    free(ref);

    int t_start = -1;
    CHECK_EQ_INT(sdc_img2img_start_step(c.gp.steps, cases[ci].strength, &t_start, &err), SDC_OK);
    CHECK_EQ_INT(c.gp.steps - t_start, golden_i64(&c.g, "n_steps", -1));

    /* Image latents: encoder + posterior sample (stream 1) + scaling. */
    lat = malloc(bytes);
    CHECK_EQ_INT(sdc_img2img_encode(c.p, &c.gp, &c.init, lat, &err), SDC_OK);
    ref = golden_f32(&c.g, "image_latents", NULL, NULL);
    CHECK(ref && test_close("image_latents", lat, ref, (long)n, 1e-4));
    if (ref) fprintf(stderr, "  %s: image_latents max rel err %.3g\n", name, worst_rel(lat, ref, n));
    free(ref);

    /* The initial noise (stream 0), and scale_noise bit for bit from the
     * golden's own image latents. */
    noise = golden_f32(&c.g, "noise", NULL, NULL);
    float *gl = golden_f32(&c.g, "image_latents", NULL, NULL);
    ref = golden_f32(&c.g, "latents_init", NULL, NULL);
    int glyph = sdc_text_cond_has_glyph(&c.pos, sdc_dit_config(c.p->dit)->text_embed_2_dim);
    if (noise && gl && ref &&
        sdc_denoise_init_img2img(&d, c.p, &c.gp, glyph, gl, cases[ci].strength, NULL, &err) ==
            SDC_OK) {
        float *philox = malloc(bytes);
        sdc_philox_normal(c.gp.seed, 0, philox, n);
        CHECK_MSG(memcmp(philox, noise, bytes) == 0, "%s: Philox noise differs", name);
        free(philox);
        CHECK_MSG(memcmp(d.latent, ref, bytes) == 0, "%s: scale_noise differs from diffusers'",
                  name);
        CHECK_EQ_INT(d.n_steps, c.gp.steps - t_start);
        sdc_denoise_free(&d);
    } else {
        CHECK(0);
    }
    free(gl);
    free(ref);

    /* The whole run from our own image latents, step by step. */
    CHECK_EQ_INT(sdc_denoise_init_img2img(&d, c.p, &c.gp, glyph, lat, cases[ci].strength, NULL,
                                          &err),
                 SDC_OK);
    have_d = 1;
    pc = malloc(bytes);
    pu = malloc(bytes);
    sdc_gen_timing_t t = {0};
    while (!sdc_denoise_done(&d)) {
        int step = d.step;
        if (sdc_pipeline_step(c.p, &d, &c.pos, c.emb.has_neg ? &c.neg : NULL, 1, pc, pu, &t,
                              &err) != SDC_OK) {
            fprintf(stderr, "  step %d: %s\n", step, err.msg);
            CHECK(0);
            goto out;
        }
        char tname[64], what[160];
        snprintf(tname, sizeof(tname), "latents_step%d", step);
        snprintf(what, sizeof(what), "%s %s", name, tname);
        ref = golden_f32(&c.g, tname, NULL, NULL);
        CHECK(ref && test_close(what, d.latent, ref, (long)n, 1e-4));
        if (ref) fprintf(stderr, "  %s: max rel err %.3g\n", what, worst_rel(d.latent, ref, n));
        free(ref);
    }
    if (cases[ci].strength == 0.0) CHECK(memcmp(d.latent, lat, bytes) == 0);
    CHECK_EQ_INT(sdc_pipeline_decode(c.p, d.latent, d.h, d.w, &rgb, &decoded, &err), SDC_OK);
    ref = golden_f32(&c.g, "decoded", NULL, NULL);
    CHECK(ref && decoded && test_close("decoded", decoded, ref, (long)(3 * npx), 1e-4));
    if (ref && decoded)
        fprintf(stderr, "  %s: decoded max rel err %.3g\n", name, worst_rel(decoded, ref, 3 * npx));
    free(ref);
    ref = golden_f32(&c.g, "image_u8", NULL, NULL);
    if (ref && rgb) check_bytes(name, rgb, ref, 3 * npx);
    free(ref);
    ref = NULL;

    /* The one-call path gives the same bytes as the steps above. */
    CHECK_EQ_INT(sdc_pipeline_generate_img2img(c.p, &c.gp, &c.init, &c.pos,
                                               c.emb.has_neg ? &c.neg : NULL, NULL, NULL, NULL,
                                               &rgb2, NULL, NULL, &err),
                 SDC_OK);
    CHECK(rgb && rgb2 && memcmp(rgb, rgb2, (size_t)(3 * npx)) == 0);
    free(rgb2);
    rgb2 = NULL;
    if (cases[ci].strength == 1.0) {
        /* Strength 1 is text-to-image with the same seed, bit for bit. */
        CHECK_EQ_INT(sdc_pipeline_generate(c.p, &c.gp, &c.pos, c.emb.has_neg ? &c.neg : NULL,
                                           NULL, NULL, NULL, &rgb2, NULL, NULL, &err),
                     SDC_OK);
        CHECK(rgb && rgb2 && memcmp(rgb, rgb2, (size_t)(3 * npx)) == 0);
    }
out:
    free(rgb);
    free(rgb2);
    free(decoded);
    free(chw);
    free(lat);
    free(pc);
    free(pu);
    free(noise);
    if (have_d) sdc_denoise_free(&d);
    case_close(&c);
}

static void test_golden_apg_06(void) { run_golden(0); }
static void test_golden_full_strength(void) { run_golden(1); }
static void test_golden_zero_strength(void) { run_golden(2); }
static void test_golden_distilled_05(void) { run_golden(3); }

/* get_timesteps' arithmetic, with values computed by Python. */
static void test_start_step(void)
{
    static const struct {
        int steps;
        double strength;
        int t_start;
    } v[] = {
        {4, 0.6, 1},   {4, 1.0, 0},     {4, 0.0, 4},      {4, 0.5, 2},   {4, 0.2, 3},
        {50, 0.3, 35}, {10, 0.7, 3},    {3, 0.1, 2},      {28, 0.35, 18}, {1, 0.999, 0},
        {1000, 0.001, 999}, {7, 1.0 / 7.0, 6}, {5, 1e-300, 5},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        sdc_error_t err = {0};
        int t = -1;
        CHECK_EQ_INT(sdc_img2img_start_step(v[i].steps, v[i].strength, &t, &err), SDC_OK);
        CHECK_MSG(t == v[i].t_start, "steps %d strength %.17g: t_start %d, want %d", v[i].steps,
                  v[i].strength, t, v[i].t_start);
    }
    static const double bad[] = {-0.1, 1.5, -1e-300, 1.0000000000000002, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sdc_error_t err = {0};
        int t = -1;
        CHECK_EQ_INT(sdc_img2img_start_step(4, bad[i], &t, &err), SDC_ERR_RANGE);
        CHECK(strstr(err.msg, "strength") != NULL);
    }
}

/* Bad inputs are refused before any model work. */
static void test_errors(void)
{
    i2i_case_t c;
    sdc_error_t err = {0};
    uint8_t *rgb = NULL;
    if (case_open(&c, 0) != 0) {
        CHECK(0);
        case_close(&c);
        return;
    }
    sdc_init_image_t bad = c.init;
    bad.width = c.init.width - 8;
    CHECK_EQ_INT(sdc_pipeline_generate_img2img(c.p, &c.gp, &bad, &c.pos, &c.neg, NULL, NULL, NULL,
                                               &rgb, NULL, NULL, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "88x64") && strstr(err.msg, "96x64") && strstr(err.msg, "resize"));
    bad = c.init;
    bad.strength = 1.5;
    CHECK_EQ_INT(sdc_pipeline_generate_img2img(c.p, &c.gp, &bad, &c.pos, &c.neg, NULL, NULL, NULL,
                                               &rgb, NULL, NULL, &err),
                 SDC_ERR_RANGE);
    bad.strength = NAN;
    CHECK_EQ_INT(sdc_img2img_check(&c.gp, &bad, &err), SDC_ERR_RANGE);
    bad = c.init;
    bad.rgb = NULL;
    CHECK_EQ_INT(sdc_img2img_check(&c.gp, &bad, &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_img2img_check(&c.gp, NULL, &err), SDC_ERR_INVALID_ARG);
    /* Output size not a multiple of the VAE factor: the pipeline's own check. */
    sdc_gen_params_t gp = c.gp;
    gp.width = 60;
    bad = c.init;
    bad.width = 60;
    CHECK_EQ_INT(sdc_pipeline_generate_img2img(c.p, &gp, &bad, &c.pos, &c.neg, NULL, NULL, NULL,
                                               &rgb, NULL, NULL, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "multiple") != NULL);
    CHECK(rgb == NULL);
    /* A guided model without negative conditioning fails at the first step. */
    CHECK_EQ_INT(sdc_pipeline_generate_img2img(c.p, &c.gp, &c.init, &c.pos, NULL, NULL, NULL,
                                               NULL, &rgb, NULL, NULL, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK(rgb == NULL);
    case_close(&c);
}

int main(void)
{
    RUN(test_golden_apg_06);
    RUN(test_golden_full_strength);
    RUN(test_golden_zero_strength);
    RUN(test_golden_distilled_05);
    RUN(test_start_step);
    RUN(test_errors);
    TEST_EXIT();
}
