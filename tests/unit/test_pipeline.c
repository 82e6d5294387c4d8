/*
 * test_pipeline.c: whole HunyuanImagePipeline runs against the diffusers
 * goldens (tests/data/goldens/pipeline_*.safetensors): initial noise from
 * Philox, the latent after every step, the VAE output and the final bytes;
 * trimmed vs untrimmed text; and run-to-run bit-identity.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "test.h"
#include "golden.h"

#include "backend/backend.h"
#include "common/philox.h"
#include "model/embeds.h"
#include "model/pipeline.h"

static const struct {
    const char *name, *model;
} cases[] = {
    {"apg_64x64", "tiny-hunyuanimage"},
    {"apg_ocr_64x96", "tiny-hunyuanimage"},
    {"cfg_96x64", "tiny-hunyuanimage-cfg"},
    {"distilled_64x96", "tiny-hunyuanimage-distilled"},
};

/* SDC_TEST_BACKEND=cuda runs the goldens on the GPU (tests/gpu/run.sh). */
static sdc_backend_t *make_backend(void)
{
    const char *name = getenv("SDC_TEST_BACKEND");
    sdc_backend_config_t bc = {.name = name && *name ? name : "cpu", .n_threads = 0};
    sdc_backend_t *be = NULL;
    sdc_error_t err = {0};
    if (sdc_backend_create(&bc, &be, &err) != SDC_OK) fprintf(stderr, "  backend: %s\n", err.msg);
    return be;
}

/* Runs one golden case step by step; trim selects the text mode. Returns the
 * final latent (malloc'd) or NULL. */
static float *run_case(int ci, int trim, int compare, int64_t *n_out)
{
    char model[512], gname[128], path[1024];
    sdc_error_t err = {0};
    sdc_st_file_t g;
    sdc_pipeline_t *p = NULL;
    sdc_embeds_t emb;
    sdc_denoise_t d;
    float *result = NULL, *pc = NULL, *pu = NULL, *noise = NULL;
    int have_emb = 0, have_d = 0;
    sdc_backend_t *be = make_backend();
    if (!be) return NULL;
    snprintf(model, sizeof(model), "%s/%s", test_data_dir(), cases[ci].model);
    snprintf(gname, sizeof(gname), "pipeline_%s.safetensors", cases[ci].name);
    snprintf(path, sizeof(path), "%s/goldens/%s", test_data_dir(), gname);
    if (golden_open(&g, gname)) goto out_be;
    if (sdc_pipeline_open(&p, be, model, &err) != SDC_OK) {
        fprintf(stderr, "  %s: %s\n", model, err.msg);
        goto out;
    }
    const sdc_dit_config_t *dc = sdc_dit_config(p->dit);
    if (sdc_embeds_load(&emb, path, dc->text_embed_dim, dc->text_embed_2_dim, &err) != SDC_OK) {
        fprintf(stderr, "  embeds: %s\n", err.msg);
        goto out;
    }
    have_emb = 1;
    sdc_gen_params_t gp;
    sdc_gen_params_default(&gp);
    gp.height = (int)golden_i64(&g, "height", 0);
    gp.width = (int)golden_i64(&g, "width", 0);
    gp.steps = (int)golden_i64(&g, "steps", 0);
    gp.seed = (uint64_t)golden_i64(&g, "seed", 0);
    gp.trim_text = trim;
    if (sdc_st_find(&g, "distilled_guidance_scale")) {
        float *s = golden_f32(&g, "distilled_guidance_scale", NULL, NULL);
        gp.distilled_guidance_scale = s ? s[0] : 3.25;
        free(s);
    }
    sdc_text_cond_t pos, neg;
    sdc_embeds_cond(&emb.pos, &pos);
    sdc_embeds_cond(&emb.neg, &neg);
    int glyph = sdc_text_cond_has_glyph(&pos, dc->text_embed_2_dim);
    if (sdc_denoise_init(&d, p, &gp, glyph, NULL, &err) != SDC_OK) {
        fprintf(stderr, "  denoise init: %s\n", err.msg);
        goto out;
    }
    have_d = 1;
    int64_t n = d.channels * d.h * d.w;
    if (n_out) *n_out = n;
    /* The noise our Philox draws for the seed is the noise the golden used. */
    noise = golden_f32(&g, "noise", NULL, NULL);
    CHECK(noise != NULL);
    if (noise && compare) CHECK_MSG(memcmp(noise, d.latent, (size_t)n * 4) == 0, "Philox noise differs from the golden's");
    pc = malloc((size_t)n * 4);
    pu = malloc((size_t)n * 4);
    sdc_gen_timing_t t = {0};
    while (!sdc_denoise_done(&d)) {
        int step = d.step;
        if (sdc_pipeline_step(p, &d, &pos, emb.has_neg ? &neg : NULL, trim, pc, pu, &t, &err) !=
            SDC_OK) {
            fprintf(stderr, "  step %d: %s\n", step, err.msg);
            test_failures_++;
            goto out;
        }
        if (!compare) continue;
        char name[64], what[160];
        snprintf(name, sizeof(name), "latents_step%d", step);
        float *ref = golden_f32(&g, name, NULL, NULL);
        CHECK(ref != NULL);
        snprintf(what, sizeof(what), "%s %s (trim=%d)", cases[ci].name, name, trim);
        if (ref) CHECK(test_close(what, d.latent, ref, (long)n, 1e-4));
        free(ref);
    }
    if (compare) {
        uint8_t *rgb = NULL;
        float *decoded = NULL;
        if (sdc_pipeline_decode(p, d.latent, d.h, d.w, &rgb, &decoded, &err) != SDC_OK) {
            fprintf(stderr, "  decode: %s\n", err.msg);
            test_failures_++;
        } else {
            int64_t npx = (int64_t)gp.width * gp.height;
            float *ref = golden_f32(&g, "decoded", NULL, NULL);
            CHECK(ref != NULL);
            if (ref) CHECK(test_close("decoded", decoded, ref, (long)(3 * npx), 1e-4));
            free(ref);
            float *u8 = golden_f32(&g, "image_u8", NULL, NULL);
            CHECK(u8 != NULL);
            if (u8) {
                /* fp32 differences within tolerance may move a value across a
                 * rounding boundary: allow 1 level, on few pixels. */
                long off = 0, bad = 0;
                for (int64_t i = 0; i < 3 * npx; i++) {
                    int dlt = abs((int)rgb[i] - (int)u8[i]);
                    if (dlt == 1) off++;
                    if (dlt > 1) bad++;
                }
                CHECK_MSG(bad == 0 && off * 100 <= 3 * npx, "image bytes: %ld off by 1, %ld off by more", off, bad);
                free(u8);
            }
        }
        free(rgb);
        free(decoded);
    }
    result = malloc((size_t)n * 4);
    if (result) memcpy(result, d.latent, (size_t)n * 4);
out:
    free(noise);
    free(pc);
    free(pu);
    if (have_d) sdc_denoise_free(&d);
    if (have_emb) sdc_embeds_free(&emb);
    sdc_pipeline_free(p);
    sdc_st_close(&g);
out_be:
    sdc_backend_destroy(be);
    if (!result) test_failures_++;
    return result;
}

static void test_golden_apg(void) { free(run_case(0, 1, 1, NULL)); }
static void test_golden_apg_ocr(void) { free(run_case(1, 1, 1, NULL)); }
static void test_golden_cfg(void) { free(run_case(2, 1, 1, NULL)); }
static void test_golden_distilled(void) { free(run_case(3, 1, 1, NULL)); }
static void test_golden_untrimmed(void) { free(run_case(1, 0, 1, NULL)); }

/* Dropping padded text tokens is exact up to float rounding. */
static void test_trim_matches_untrimmed(void)
{
    for (int ci = 0; ci < 4; ci++) {
        int64_t n = 0;
        float *a = run_case(ci, 1, 0, &n), *b = run_case(ci, 0, 0, NULL);
        CHECK(a && b);
        if (a && b) CHECK(test_close(cases[ci].name, a, b, (long)n, 1e-5));
        free(a);
        free(b);
    }
}

/* The same job twice gives the same bits. */
static void test_run_to_run_identical(void)
{
    int64_t n = 0;
    float *a = run_case(1, 1, 0, &n), *b = run_case(1, 1, 0, NULL);
    CHECK(a && b);
    if (a && b) CHECK(memcmp(a, b, (size_t)n * sizeof(float)) == 0);
    free(a);
    free(b);
}

static void test_bad_model_dirs(void)
{
    sdc_backend_t *be = make_backend();
    sdc_pipeline_t *p = NULL;
    sdc_error_t err = {0};
    CHECK(sdc_pipeline_open(&p, be, "/nonexistent/model", &err) == SDC_ERR_NOT_FOUND);
    CHECK(strstr(err.msg, "/nonexistent/model") != NULL);
    /* A directory without model_index.json. */
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/goldens", test_data_dir());
    CHECK(sdc_pipeline_open(&p, be, dir, &err) != SDC_OK);
    CHECK(strstr(err.msg, "model_index.json") != NULL);
    sdc_backend_destroy(be);
}

int main(void)
{
    RUN(test_golden_apg);
    RUN(test_golden_apg_ocr);
    RUN(test_golden_cfg);
    RUN(test_golden_distilled);
    RUN(test_golden_untrimmed);
    RUN(test_trim_matches_untrimmed);
    RUN(test_run_to_run_identical);
    RUN(test_bad_model_dirs);
    TEST_EXIT();
}
