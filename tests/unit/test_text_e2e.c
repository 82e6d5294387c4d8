/*
 * test_text_e2e.c: prompt -> image against the diffusers goldens
 * tests/data/goldens/e2e_*.safetensors: HunyuanImagePipeline with the
 * real (tiny) text encoders, our Philox noise as latents, 4 steps. Checks
 * the embeddings of prompt and negative prompt (default: empty), the guider
 * the glyph text selects, the latent after every step, the VAE output and
 * the image bytes.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "test.h"
#include "golden.h"
#include "text_golden.h"

#include "backend/backend.h"
#include "model/pipeline.h"
#include "model/text_encoder.h"

#define MODEL "tiny-hunyuanimage-text"

/* max |a - b| / max |b|, for the summary line. */
static double rel_err(const float *a, const float *b, long n)
{
    double m = 0, d = 0;
    for (long i = 0; i < n; i++) {
        double r = fabs((double)b[i]), e = fabs((double)a[i] - (double)b[i]);
        if (r > m) m = r;
        if (e > d || isnan(a[i])) d = isnan(a[i]) ? INFINITY : e;
    }
    return d / (m > 0 ? m : 1);
}

static void free_part(sdc_embeds_part_t *p)
{
    free(p->embeds);
    free(p->mask);
    free(p->embeds_2);
    free(p->mask_2);
}

/* Valid rows against the golden's, masks exactly. */
static void check_embeds(const sdc_st_file_t *g, const char *prefix, const sdc_embeds_part_t *p)
{
    char name[96];
    const float *got[2] = {p->embeds, p->embeds_2};
    const uint8_t *mask[2] = {p->mask, p->mask_2};
    const int64_t n[2] = {p->n, p->n_2}, dim[2] = {p->dim, p->dim_2};
    for (int k = 0; k < 2; k++) {
        snprintf(name, sizeof(name), "%sprompt_embeds%s", prefix, k ? "_2" : "");
        float *ref = golden_f32(g, name, NULL, NULL);
        snprintf(name, sizeof(name), "%sprompt_embeds_mask%s", prefix, k ? "_2" : "");
        float *rm = golden_f32(g, name, NULL, NULL);
        CHECK(ref && rm);
        if (ref && rm) {
            long valid = 0, bad = 0;
            for (int64_t i = 0; i < n[k]; i++) {
                valid += mask[k][i];
                bad += mask[k][i] != (uint8_t)rm[i];
            }
            CHECK_MSG(bad == 0, "%s: %ld mask entries differ", name, bad);
            if (valid) CHECK(test_close(name, got[k], ref, valid * (long)dim[k], 1e-4));
        }
        free(ref);
        free(rm);
    }
}

static void run_case(const cJSON *c)
{
    char model[512], gname[128];
    sdc_error_t err = {0};
    sdc_st_file_t g;
    sdc_pipeline_t *p = NULL;
    sdc_text_encoder_t *te = NULL;
    sdc_embeds_part_t pos = {0}, neg = {0};
    sdc_denoise_t d;
    int have_d = 0;
    double worst_latent = INFINITY;
    float *pc = NULL, *pu = NULL, *noise = NULL;
    size_t plen, nlen;
    char *prompt = text_hex(c, "prompt_hex", &plen);
    char *negp = text_hex(c, "negative_prompt_hex", &nlen);
    sdc_backend_config_t bc = {.name = "cpu", .n_threads = 0};
    sdc_backend_t *be = NULL;
    CHECK(sdc_backend_create(&bc, &be, &err) == SDC_OK);
    snprintf(model, sizeof(model), "%s/%s", test_data_dir(), MODEL);
    snprintf(gname, sizeof(gname), "e2e_%s.safetensors", text_name(c));
    if (!be || golden_open(&g, gname)) {
        test_failures_++;
        goto out_be;
    }
    if (sdc_pipeline_open(&p, be, model, &err) != SDC_OK) {
        fprintf(stderr, "  %s: %s\n", model, err.msg);
        test_failures_++;
        goto out;
    }
    const sdc_dit_config_t *dc = sdc_dit_config(p->dit);
    if (sdc_text_encoder_open(&te, be, model, dc->text_embed_dim, dc->text_embed_2_dim, &err) !=
            SDC_OK ||
        sdc_text_encoder_encode(te, prompt, plen, &pos, NULL, &err) != SDC_OK ||
        sdc_text_encoder_encode(te, negp ? negp : "", nlen, &neg, NULL, &err) != SDC_OK) {
        fprintf(stderr, "  text encoder: %s\n", err.msg);
        test_failures_++;
        goto out;
    }
    sdc_text_encoder_free(te);
    te = NULL;
    check_embeds(&g, "", &pos);
    check_embeds(&g, "negative_", &neg);

    sdc_gen_params_t gp;
    sdc_gen_params_default(&gp);
    gp.height = (int)golden_i64(&g, "height", 0);
    gp.width = (int)golden_i64(&g, "width", 0);
    gp.steps = (int)golden_i64(&g, "steps", 0);
    gp.seed = (uint64_t)golden_i64(&g, "seed", 0);
    sdc_text_cond_t cp, cn;
    sdc_embeds_cond(&pos, &cp);
    sdc_embeds_cond(&neg, &cn);
    int glyph = sdc_text_cond_has_glyph(&cp, dc->text_embed_2_dim);
    const cJSON *gv = cJSON_GetObjectItemCaseSensitive(c, "guider");
    CHECK_EQ_INT(glyph, cJSON_IsString(gv) && strcmp(gv->valuestring, "ocr_guider") == 0);
    if (sdc_denoise_init(&d, p, &gp, glyph, NULL, &err) != SDC_OK) {
        fprintf(stderr, "  denoise init: %s\n", err.msg);
        test_failures_++;
        goto out;
    }
    have_d = 1;
    CHECK(d.guider == (glyph ? &p->ocr_guider : &p->guider));
    int64_t n = d.channels * d.h * d.w;
    noise = golden_f32(&g, "noise", NULL, NULL);
    CHECK(noise && memcmp(noise, d.latent, (size_t)n * 4) == 0);
    pc = malloc((size_t)n * 4);
    pu = malloc((size_t)n * 4);
    sdc_gen_timing_t t = {0};
    while (!sdc_denoise_done(&d)) {
        int step = d.step;
        char name[64], what[160];
        if (sdc_pipeline_step(p, &d, &cp, &cn, 1, pc, pu, &t, &err) != SDC_OK) {
            fprintf(stderr, "  step %d: %s\n", step, err.msg);
            test_failures_++;
            goto out;
        }
        snprintf(name, sizeof(name), "latents_step%d", step);
        snprintf(what, sizeof(what), "%s %s", text_name(c), name);
        float *ref = golden_f32(&g, name, NULL, NULL);
        CHECK(ref != NULL);
        if (ref) CHECK(test_close(what, d.latent, ref, (long)n, 1e-4));
        if (ref && sdc_denoise_done(&d)) worst_latent = rel_err(d.latent, ref, (long)n);
        free(ref);
    }
    uint8_t *rgb = NULL;
    float *decoded = NULL;
    if (sdc_pipeline_decode(p, d.latent, d.h, d.w, &rgb, &decoded, &err) != SDC_OK) {
        fprintf(stderr, "  decode: %s\n", err.msg);
        test_failures_++;
    } else {
        int64_t npx = (int64_t)gp.width * gp.height;
        float *ref = golden_f32(&g, "decoded", NULL, NULL);
        CHECK(ref && test_close("decoded", decoded, ref, (long)(3 * npx), 1e-4));
        double worst_decoded = ref ? rel_err(decoded, ref, (long)(3 * npx)) : INFINITY;
        free(ref);
        float *u8 = golden_f32(&g, "image_u8", NULL, NULL);
        CHECK(u8 != NULL);
        if (u8) {
            /* A float difference within tolerance may cross a rounding
             * boundary: 1 level on few pixels. */
            long off = 0, bad = 0;
            for (int64_t i = 0; i < 3 * npx; i++) {
                int dl = abs((int)rgb[i] - (int)u8[i]);
                off += dl == 1;
                bad += dl > 1;
            }
            CHECK_MSG(bad == 0 && off * 100 <= 3 * npx, "image bytes: %ld off by 1, %ld more", off,
                      bad);
            printf("  %s: final latent max rel err %.3g, decoded %.3g, %ld of %lld bytes off by "
                   "one\n",
                   text_name(c), worst_latent, worst_decoded, off, (long long)(3 * npx));
        }
        free(u8);
    }
    free(rgb);
    free(decoded);
out:
    free(noise);
    free(pc);
    free(pu);
    if (have_d) sdc_denoise_free(&d);
    sdc_text_encoder_free(te);
    free_part(&pos);
    free_part(&neg);
    sdc_pipeline_free(p);
    sdc_st_close(&g);
out_be:
    if (be) sdc_backend_destroy(be);
    free(prompt);
    free(negp);
}

static void test_e2e_goldens(void)
{
    sdc_json_t doc;
    cJSON *root = text_golden_load(&doc);
    CHECK(root != NULL);
    if (!root) return;
    const cJSON *c;
    int n = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "e2e")) {
        run_case(c);
        n++;
    }
    CHECK(n == 2);
    sdc_json_free(&doc);
}

int main(void)
{
    RUN(test_e2e_goldens);
    TEST_EXIT();
}
