/*
 * test_refiner.c: the refiner pipeline against diffusers'
 * HunyuanImageRefinerPipeline on tiny-hunyuanimage-refiner
 * (refiner_pipeline_64x96.safetensors): the image latents, the three
 * Philox draws, the conditioning latents, every DiT prediction and step,
 * the decoder input and output, the bytes; the one-call API equal to the
 * steps; the 3-D patch / RoPE config; and the errors (wrong model class,
 * sizes, strength). The refiner's own text encoding (refiner_text: the
 * token ids and encode_prompt's embeddings of bilingual, quoted, empty,
 * boundary, truncated and invalid-UTF-8 prompts) and a prompt -> refined
 * image run from an image half the output size (refiner_e2e_64x96: the
 * Lanczos resize, the embeddings, every step, the bytes).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "golden.h"

#include "backend/backend.h"
#include "common/philox.h"
#include "model/embeds.h"
#include "model/refiner.h"
#include "model/text_encoder.h"

#define GOLDEN "refiner_pipeline_64x96.safetensors"

static sdc_backend_t *make_backend(void)
{
    sdc_backend_config_t bc = {.name = "cpu", .n_threads = 0};
    sdc_backend_t *be = NULL;
    sdc_error_t err = {0};
    if (sdc_backend_create(&bc, &be, &err) != SDC_OK) fprintf(stderr, "  backend: %s\n", err.msg);
    return be;
}

static void model_dir(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", test_data_dir(), name);
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

/* Compares and reports one intermediate; returns the worst relative error. */
static double compare(const sdc_st_file_t *g, const char *name, const float *got, int64_t n,
                      double tol)
{
    int nd = 0;
    int64_t shape[8];
    float *ref = golden_f32(g, name, &nd, shape);
    double w = -1;
    if (ref && sdc_shape_numel(nd, shape) == n) {
        CHECK(test_close(name, got, ref, (long)n, tol));
        w = worst_rel(got, ref, n);
        fprintf(stderr, "  refiner %s: max rel err %.3g\n", name, w);
    } else {
        CHECK_MSG(0, "golden %s missing or of another size", name);
    }
    free(ref);
    return w;
}

typedef struct {
    sdc_st_file_t g;
    sdc_backend_t *be;
    sdc_refiner_t *r;
    sdc_refiner_params_t rp;
    float *embeds, *mask_f;
    uint8_t mask[64];
    sdc_text_cond_t pos;
    uint8_t *rgb;
    int W, H;
    int64_t h, w, n; /* latent size, 2 * latent_channels * h * w */
} ref_case_t;

static void case_close(ref_case_t *c)
{
    free(c->rgb);
    free(c->embeds);
    free(c->mask_f);
    sdc_refiner_free(c->r);
    sdc_st_close(&c->g);
    if (c->be) sdc_backend_destroy(c->be);
}

static int case_open(ref_case_t *c)
{
    char dir[1024];
    sdc_error_t err = {0};
    int nd = 0, nm = 0;
    int64_t shape[8], mshape[8];
    memset(c, 0, sizeof(*c));
    model_dir(dir, sizeof(dir), "tiny-hunyuanimage-refiner");
    c->be = make_backend();
    if (!c->be || golden_open(&c->g, GOLDEN) != 0) return -1;
    if (sdc_refiner_open(&c->r, c->be, dir, &err) != SDC_OK) {
        fprintf(stderr, "  %s: %s\n", dir, err.msg);
        return -1;
    }
    sdc_refiner_params_default(&c->rp);
    c->rp.seed = (uint64_t)golden_i64(&c->g, "seed", 0);
    float *gs = golden_f32(&c->g, "distilled_guidance_scale", NULL, NULL);
    if (gs) c->rp.distilled_guidance_scale = gs[0];
    free(gs);
    c->embeds = golden_f32(&c->g, "prompt_embeds", &nd, shape);
    c->mask_f = golden_f32(&c->g, "prompt_embeds_mask", &nm, mshape);
    if (!c->embeds || !c->mask_f || nd != 3 || mshape[1] > 64) return -1;
    for (int64_t i = 0; i < mshape[1]; i++) c->mask[i] = c->mask_f[i] != 0;
    c->pos = (sdc_text_cond_t){.embeds = c->embeds, .mask = c->mask, .n = shape[1]};
    float *u8 = golden_f32(&c->g, "image_u8", &nd, shape);
    if (!u8 || nd != 3) {
        free(u8);
        return -1;
    }
    c->H = (int)shape[0];
    c->W = (int)shape[1];
    c->rgb = malloc((size_t)(3 * c->H * c->W));
    for (int64_t i = 0; c->rgb && i < 3 * c->H * c->W; i++) c->rgb[i] = (uint8_t)u8[i];
    free(u8);
    c->h = c->H / 8;
    c->w = c->W / 8;
    c->n = 16 * c->h * c->w;
    return c->rgb ? 0 : -1;
}

static void check_bytes(const uint8_t *rgb, const float *ref, int64_t n)
{
    long off = 0, bad = 0;
    for (int64_t i = 0; i < n; i++) {
        int d = abs((int)rgb[i] - (int)ref[i]);
        off += d == 1;
        bad += d > 1;
    }
    CHECK_MSG(bad == 0 && off * 100 <= n, "image bytes: %ld off by 1, %ld off by more", off, bad);
    fprintf(stderr, "  refiner image: %ld of %lld bytes off by one\n", off, (long long)n);
}

static void test_golden_pipeline(void)
{
    ref_case_t c;
    sdc_error_t err = {0};
    sdc_denoise_t d;
    int have_d = 0;
    float *lat = NULL, *pc = NULL, *pu = NULL, *decoded = NULL, *ref = NULL, *final = NULL;
    uint8_t *rgb = NULL, *rgb2 = NULL;
    if (case_open(&c) != 0) {
        CHECK(0);
        goto out;
    }
    int64_t n = c.n, half = n / 2, npx = (int64_t)c.W * c.H;
    size_t bytes = (size_t)n * sizeof(float);
    CHECK_EQ_INT(sdc_refiner_check(c.r, c.W, c.H, &c.rp, &err), SDC_OK);

    /* The three Philox draws are the golden's, bit for bit. */
    static const struct {
        const char *name;
        uint32_t stream;
        int64_t n_div;
    } draws[] = {{"noise", SDC_PHILOX_STREAM_LATENT, 1},
                 {"posterior_noise", SDC_PHILOX_STREAM_VAE_POSTERIOR, 2},
                 {"cond_noise", SDC_PHILOX_STREAM_REFINER_COND, 1}};
    for (size_t i = 0; i < sizeof(draws) / sizeof(draws[0]); i++) {
        int64_t m = n / draws[i].n_div;
        float *mine = malloc((size_t)m * sizeof(float));
        ref = golden_f32(&c.g, draws[i].name, NULL, NULL);
        sdc_philox_normal_stream(c.rp.seed, draws[i].stream, 0, mine, m);
        CHECK_MSG(ref && memcmp(mine, ref, (size_t)m * sizeof(float)) == 0, "%s differs",
                  draws[i].name);
        free(mine);
        free(ref);
        ref = NULL;
    }

    /* Image latents: encoder, posterior sample, both frames, scaling. */
    lat = malloc(bytes);
    CHECK_EQ_INT(sdc_refiner_encode_image(c.r, c.rgb, c.W, c.H, c.rp.seed, lat, &err), SDC_OK);
    compare(&c.g, "image_latents", lat, n, 1e-4);
    CHECK(memcmp(lat, lat + half, (size_t)half * sizeof(float)) == 0);

    /* The conditioning latents from the golden's image latents: bit for bit. */
    float *gl = golden_f32(&c.g, "image_latents", NULL, NULL);
    ref = golden_f32(&c.g, "cond_latents", NULL, NULL);
    if (gl && ref && sdc_refiner_denoise_init(&d, c.r, &c.rp, gl, c.h, c.w, NULL, &err) == SDC_OK) {
        CHECK_MSG(memcmp(d.latent + n, ref, bytes) == 0, "cond_latents differ from diffusers'");
        CHECK(d.channels == 16 && d.cond_channels == 16 && d.n_steps == 4 && !d.guider);
        sdc_denoise_free(&d);
    } else {
        CHECK(0);
    }
    free(gl);
    free(ref);
    ref = NULL;

    /* Every step from our own image latents. */
    CHECK_EQ_INT(sdc_refiner_denoise_init(&d, c.r, &c.rp, lat, c.h, c.w, NULL, &err), SDC_OK);
    have_d = 1;
    pc = malloc(bytes);
    pu = malloc(bytes);
    sdc_gen_timing_t t = {0};
    while (!sdc_denoise_done(&d)) {
        int step = d.step;
        char name[32];
        if (sdc_denoise_step(c.r->dit, &d, &c.pos, NULL, 1, pc, pu, &t, &err) != SDC_OK) {
            fprintf(stderr, "  step %d: %s\n", step, err.msg);
            CHECK(0);
            goto out;
        }
        snprintf(name, sizeof(name), "pred_%d", step);
        compare(&c.g, name, pc, n, 1e-4);
        snprintf(name, sizeof(name), "latents_%d", step);
        compare(&c.g, name, d.latent, n, 1e-4);
    }
    float sf = (float)sdc_vae_refiner_config(c.r->vae)->scaling_factor;
    float *vin = malloc((size_t)half * sizeof(float));
    for (int64_t i = 0; vin && i < half; i++) vin[i] = d.latent[half + i] / sf;
    if (vin) compare(&c.g, "vae_in", vin, half, 1e-4);
    free(vin);
    CHECK_EQ_INT(sdc_refiner_decode(c.r, d.latent, c.h, c.w, &rgb, &decoded, &err), SDC_OK);
    if (decoded) compare(&c.g, "decoded", decoded, 3 * npx, 1e-4);
    ref = golden_f32(&c.g, "out_u8", NULL, NULL);
    if (ref && rgb) check_bytes(rgb, ref, 3 * npx);
    free(ref);
    ref = NULL;

    /* The one-call API: the same bytes and latents. */
    CHECK_EQ_INT(sdc_refiner_run(c.r, &c.rp, c.rgb, c.W, c.H, &c.pos, NULL, NULL, NULL, &rgb2,
                                 &final, &t, &err),
                 SDC_OK);
    CHECK(rgb && rgb2 && memcmp(rgb, rgb2, (size_t)(3 * npx)) == 0);
    CHECK(final && memcmp(final, d.latent, bytes) == 0);
out:
    free(rgb);
    free(rgb2);
    free(final);
    free(decoded);
    free(lat);
    free(pc);
    free(pu);
    if (have_d) sdc_denoise_free(&d);
    case_close(&c);
}

/* The refiner transformer's config: 3-D patches and RoPE axes. */
static void test_dit_config_3d(void)
{
    char path[1024];
    sdc_error_t err = {0};
    sdc_dit_config_t dc;
    snprintf(path, sizeof(path), "%s/tiny-hunyuanimage-refiner/transformer/config.json",
             test_data_dir());
    CHECK_EQ_INT(sdc_dit_config_load(&dc, path, &err), SDC_OK);
    CHECK(dc.patch_3d == 1 && dc.patch_size[0] == 1 && dc.patch_size[1] == 1);
    CHECK(dc.rope_frame_dim == 4 && dc.rope_axes_dim[0] == 6 && dc.rope_axes_dim[1] == 6);
    CHECK(dc.in_channels == 32 && dc.out_channels == 16 && dc.text_embed_2_dim == 0);
    /* The frame columns are the identity, the rest the 2-D table. */
    float cs[2 * 3 * 16], sn[2 * 3 * 16];
    CHECK_EQ_INT(sdc_dit_rope_tables(&dc, 2, 3, cs, sn, &err), SDC_OK);
    for (int t = 0; t < 6; t++)
        for (int k = 0; k < 4; k++) CHECK(cs[t * 16 + k] == 1.0f && sn[t * 16 + k] == 0.0f);
    CHECK(sn[5 * 16 + 4] != 0.0f && sn[5 * 16 + 10] != 0.0f);

    static const struct {
        const char *json, *msg;
    } bad[] = {
        {"{\"_class_name\": \"HunyuanImageTransformer2DModel\", \"attention_head_dim\": 16, "
         "\"patch_size\": [2, 1, 1], \"rope_axes_dim\": [4, 6, 6]}",
         "frame patch of 2"},
        {"{\"_class_name\": \"HunyuanImageTransformer2DModel\", \"attention_head_dim\": 16, "
         "\"patch_size\": [1, 1, 1], \"rope_axes_dim\": [8, 8]}",
         "both 3 entries"},
        {"{\"_class_name\": \"HunyuanImageTransformer2DModel\", \"attention_head_dim\": 16, "
         "\"patch_size\": [1, 1], \"rope_axes_dim\": [4, 6, 6]}",
         "both 3 entries"},
        {"{\"_class_name\": \"HunyuanImageTransformer2DModel\", \"attention_head_dim\": 16, "
         "\"patch_size\": [1, 1, 1], \"rope_axes_dim\": [4, 6, 8]}",
         "sum to attention_head_dim"},
        {"{\"_class_name\": \"HunyuanImageTransformer2DModel\", \"patch_size\": [1, 1, 1, 1]}",
         "has 4 entries"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sdc_json_t doc;
        err.msg[0] = '\0';
        if (sdc_json_parse(&doc, bad[i].json, strlen(bad[i].json), "config.json", &err) != SDC_OK) {
            CHECK(0);
            continue;
        }
        CHECK_MSG(sdc_dit_config_from_json(&dc, &doc, &err) != SDC_OK && strstr(err.msg, bad[i].msg),
                  "case %zu: '%s'", i, err.msg);
        sdc_json_free(&doc);
    }
}

static void test_errors(void)
{
    char dir[1024];
    sdc_error_t err = {0};
    sdc_refiner_t *r = NULL;
    sdc_backend_t *be = make_backend();
    if (!be) {
        CHECK(0);
        return;
    }
    /* A base model directory is not a refiner, and the reverse. */
    model_dir(dir, sizeof(dir), "tiny-hunyuanimage-distilled");
    CHECK_EQ_INT(sdc_refiner_open(&r, be, dir, &err), SDC_ERR_UNSUPPORTED);
    CHECK(r == NULL && strstr(err.msg, "'HunyuanImagePipeline', expected "
                                       "'HunyuanImageRefinerPipeline'") != NULL);
    sdc_pipeline_t *p = NULL;
    model_dir(dir, sizeof(dir), "tiny-hunyuanimage-refiner");
    CHECK_EQ_INT(sdc_pipeline_open(&p, be, dir, &err), SDC_ERR_UNSUPPORTED);
    CHECK(p == NULL && strstr(err.msg, "expected 'HunyuanImagePipeline'") != NULL);
    CHECK_EQ_INT(sdc_refiner_open(&r, be, "/nonexistent/refiner", &err), SDC_ERR_NOT_FOUND);

    CHECK_EQ_INT(sdc_refiner_open(&r, be, dir, &err), SDC_OK);
    if (r) {
        sdc_refiner_params_t rp;
        sdc_refiner_params_default(&rp);
        CHECK(rp.steps == 4 && rp.cond_strength == 0.25 && rp.distilled_guidance_scale == 3.25);
        CHECK_EQ_INT(sdc_refiner_check(r, 64, 96, &rp, &err), SDC_OK);
        CHECK_EQ_INT(sdc_refiner_check(r, 60, 96, &rp, &err), SDC_ERR_INVALID_ARG);
        CHECK_EQ_INT(sdc_refiner_check(r, 0, 96, &rp, &err), SDC_ERR_RANGE);
        CHECK_EQ_INT(sdc_refiner_check(r, 1 << 20, 96, &rp, &err), SDC_ERR_RANGE);
        const double bad_s[] = {-0.01, 1.5, NAN};
        for (int i = 0; i < 3; i++) {
            rp.cond_strength = bad_s[i];
            CHECK_EQ_INT(sdc_refiner_check(r, 64, 64, &rp, &err), SDC_ERR_RANGE);
            CHECK(strstr(err.msg, "strength") != NULL);
        }
        sdc_refiner_params_default(&rp);
        rp.steps = 0;
        CHECK_EQ_INT(sdc_refiner_check(r, 64, 64, &rp, &err), SDC_ERR_RANGE);
        rp.steps = 4;
        rp.distilled_guidance_scale = 0;
        CHECK_EQ_INT(sdc_refiner_check(r, 64, 64, &rp, &err), SDC_ERR_RANGE);
        sdc_refiner_params_default(&rp);
        uint8_t img[3 * 8 * 8] = {0}, *out = NULL;
        float e[32] = {0};
        uint8_t m[1] = {1};
        sdc_text_cond_t pos = {.embeds = e, .mask = m, .n = 1};
        CHECK_EQ_INT(sdc_refiner_run(r, &rp, img, 8, 12, &pos, NULL, NULL, NULL, &out, NULL, NULL,
                                     &err),
                     SDC_ERR_INVALID_ARG);
        CHECK_EQ_INT(sdc_refiner_run(r, &rp, NULL, 8, 8, &pos, NULL, NULL, NULL, &out, NULL, NULL,
                                     &err),
                     SDC_ERR_INVALID_ARG);
        /* The smallest image runs. */
        CHECK_EQ_INT(sdc_refiner_run(r, &rp, img, 8, 8, &pos, NULL, NULL, NULL, &out, NULL, NULL,
                                     &err),
                     SDC_OK);
        free(out);
    }
    sdc_refiner_free(r);
    sdc_backend_destroy(be);
}

/* "<case>.<what>" of the refiner_text golden. */
static float *text_tensor(const sdc_st_file_t *g, const char *c, const char *what, int64_t *n)
{
    char name[128];
    int nd = 0;
    int64_t shape[8];
    snprintf(name, sizeof(name), "%s.%s", c, what);
    float *t = golden_f32(g, name, &nd, shape);
    if (t && n) *n = sdc_shape_numel(nd, shape);
    return t;
}

static void test_text_golden(void)
{
    static const char *cases[] = {"en_plain", "zh_plain", "en_double_quotes", "zh_chinese_quotes",
                                  "empty", "template_tokens_in_text", "tokens_292", "tokens_293",
                                  "long_truncated", "invalid_utf8"};
    char dir[1024];
    sdc_error_t err = {0};
    sdc_st_file_t g;
    sdc_text_encoder_t *te = NULL;
    sdc_backend_t *be = make_backend();
    double worst_all = 0;
    model_dir(dir, sizeof(dir), "tiny-hunyuanimage-refiner");
    if (!be || golden_open(&g, "refiner_text.safetensors") != 0) {
        CHECK(0);
        if (be) sdc_backend_destroy(be);
        return;
    }
    CHECK(sdc_text_profile_find("refiner") == &sdc_text_profile_refiner);
    CHECK(sdc_text_profile_find("base") == &sdc_text_profile_base);
    CHECK(sdc_text_profile_find("nope") == NULL && sdc_text_profile_find(NULL) == NULL);
    if (sdc_text_encoder_open_profile(&te, be, dir, &sdc_text_profile_refiner, 16, 0, &err) !=
        SDC_OK) {
        CHECK_MSG(0, "%s", err.msg);
        goto out;
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t nb = 0, nid = 0, ne = 0, nm = 0;
        float *pb = text_tensor(&g, cases[i], "prompt_bytes", &nb);
        float *ids_ref = text_tensor(&g, cases[i], "input_ids", &nid);
        float *emb_ref = text_tensor(&g, cases[i], "prompt_embeds", &ne);
        float *mask_ref = text_tensor(&g, cases[i], "prompt_embeds_mask", &nm);
        char *prompt = malloc((size_t)nb + 1);
        int32_t *ids = NULL;
        size_t n_ids = 0;
        sdc_embeds_part_t part = {0};
        sdc_text_info_t info;
        CHECK(pb && ids_ref && emb_ref && mask_ref && prompt && nm == 256 && ne == 256 * 16);
        if (!pb || !ids_ref || !emb_ref || !mask_ref || !prompt || nm != 256 || ne != 256 * 16)
            goto next;
        for (int64_t k = 0; k < nb; k++) prompt[k] = (char)(uint8_t)pb[k];
        /* Token ids: the templated prompt, then the reference's cut at 292. */
        CHECK_EQ_INT(sdc_text_encoder_tokenize(te, prompt, (size_t)nb, &ids, &n_ids, &err), SDC_OK);
        char nname[128];
        snprintf(nname, sizeof(nname), "%s.n_tokens", cases[i]);
        CHECK_EQ_INT(n_ids, golden_i64(&g, nname, -1));
        for (size_t k = 0; ids && k < n_ids && k < (size_t)nid; k++)
            if (ids[k] != (int32_t)ids_ref[k]) {
                CHECK_MSG(0, "%s: token %zu is %d, reference %d", cases[i], k, ids[k],
                          (int)ids_ref[k]);
                break;
            }
        CHECK_EQ_INT(sdc_text_encoder_encode(te, prompt, (size_t)nb, &part, &info, &err), SDC_OK);
        if (!part.embeds) goto next;
        CHECK(part.n == 256 && part.dim == 16 && !part.embeds_2 && !part.mask_2);
        int64_t valid = 0;
        for (int64_t k = 0; k < 256; k++) {
            CHECK(part.mask[k] == (mask_ref[k] != 0));
            valid += part.mask[k];
        }
        CHECK_EQ_INT(info.n_valid, valid);
        CHECK_EQ_INT(info.truncated, info.n_tokens > 292);
        /* Valid rows against the reference; padded rows are zeros here. */
        double w = worst_rel(part.embeds, emb_ref, valid * 16);
        CHECK(test_close(cases[i], part.embeds, emb_ref, (long)(valid * 16), 1e-4));
        for (int64_t k = valid * 16; k < 256 * 16; k++) CHECK(part.embeds[k] == 0.0f);
        fprintf(stderr, "  refiner text %s: %zu tokens, %lld valid, max rel err %.3g\n", cases[i],
                info.n_tokens, (long long)valid, w);
        if (w > worst_all) worst_all = w;
    next:
        free(ids);
        free(part.embeds);
        free(part.mask);
        free(prompt);
        free(pb);
        free(ids_ref);
        free(emb_ref);
        free(mask_ref);
    }
    fprintf(stderr, "  refiner text: worst max rel err %.3g\n", worst_all);
out:
    sdc_text_encoder_free(te);
    sdc_st_close(&g);
    sdc_backend_destroy(be);
}

/* Prompt -> refined image: the public path sdc-generate takes. */
static void test_e2e_prompt_resize(void)
{
    char dir[1024];
    sdc_error_t err = {0};
    sdc_st_file_t g;
    sdc_embeds_t emb;
    int have_emb = 0;
    sdc_refiner_t *r = NULL;
    uint8_t *img = NULL, *resized = NULL, *rgb = NULL;
    float *u8 = NULL, *ref = NULL, *pb = NULL, *latent = NULL;
    char *prompt = NULL;
    sdc_backend_t *be = make_backend();
    model_dir(dir, sizeof(dir), "tiny-hunyuanimage-refiner");
    if (!be || golden_open(&g, "refiner_e2e_64x96.safetensors") != 0) {
        CHECK(0);
        if (be) sdc_backend_destroy(be);
        return;
    }
    int nd = 0;
    int64_t shape[8], pshape[8];
    pb = golden_f32(&g, "prompt_bytes", &nd, pshape);
    u8 = golden_f32(&g, "image_u8", &nd, shape);
    if (!pb || !u8) {
        CHECK(0);
        goto out;
    }
    int iw = (int)shape[1], ih = (int)shape[0];
    int64_t nb = pshape[0];
    prompt = malloc((size_t)nb + 1);
    img = malloc((size_t)(3 * iw * ih));
    for (int64_t k = 0; k < nb; k++) prompt[k] = (char)(uint8_t)pb[k];
    for (int64_t k = 0; k < 3 * iw * ih; k++) img[k] = (uint8_t)u8[k];

    sdc_refiner_params_t rp;
    sdc_refiner_params_default(&rp);
    rp.seed = (uint64_t)golden_i64(&g, "seed", 0);
    rp.steps = (int)golden_i64(&g, "steps", 0);
    rp.width = (int)golden_i64(&g, "width", 0);
    rp.height = (int)golden_i64(&g, "height", 0);
    CHECK(rp.width == 2 * iw && rp.height == 2 * ih);

    /* Step 0 before the refiner is opened. */
    CHECK_EQ_INT(sdc_refiner_encode_prompt(be, dir, prompt, (size_t)nb, NULL, 0, rp.steps, &emb,
                                           NULL, &err),
                 SDC_OK);
    have_emb = err.code == SDC_OK;
    if (!have_emb) goto out;
    CHECK(!emb.has_neg); /* no guider: the pipeline encodes no negative prompt */
    /* Valid rows only: transformers leaves values in padded rows, sdc zeros. */
    int64_t valid = 0;
    for (int64_t k = 0; k < emb.pos.n; k++) valid += emb.pos.mask[k];
    ref = golden_f32(&g, "prompt_embeds", NULL, NULL);
    float *mref = golden_f32(&g, "prompt_embeds_mask", NULL, NULL);
    int64_t vref = 0;
    for (int64_t k = 0; mref && k < 256; k++) vref += mref[k] != 0;
    free(mref);
    CHECK(emb.pos.n == 256 && valid == vref && valid > 0);
    if (ref) {
        CHECK(test_close("e2e prompt_embeds", emb.pos.embeds, ref, (long)(valid * 16), 1e-4));
        fprintf(stderr, "  refiner e2e prompt_embeds (%lld valid rows): max rel err %.3g\n",
                (long long)valid, worst_rel(emb.pos.embeds, ref, valid * 16));
    }
    free(ref);
    ref = NULL;

    CHECK_EQ_INT(sdc_refiner_open(&r, be, dir, &err), SDC_OK);
    if (!r) goto out;
    int ow = 0, oh = 0;
    CHECK_EQ_INT(sdc_refiner_prepare_image(r, &rp, img, iw, ih, &resized, &ow, &oh, &err), SDC_OK);
    ref = golden_f32(&g, "resized_u8", NULL, NULL);
    CHECK(resized && ref && ow == rp.width && oh == rp.height);
    for (int64_t k = 0; resized && ref && k < 3 * (int64_t)ow * oh; k++)
        if (resized[k] != (uint8_t)ref[k]) {
            CHECK_MSG(0, "resized byte %lld is %d, PIL's %d", (long long)k, resized[k],
                      (int)ref[k]);
            break;
        }
    free(ref);
    ref = NULL;

    sdc_text_cond_t pos;
    sdc_embeds_cond(&emb.pos, &pos);
    sdc_gen_timing_t t;
    CHECK_EQ_INT(sdc_refiner_run(r, &rp, img, iw, ih, &pos, NULL, NULL, NULL, &rgb, &latent, &t,
                                 &err),
                 SDC_OK);
    if (!rgb) goto out;
    compare(&g, "latents_3", latent, 16 * (oh / 8) * (ow / 8), 1e-4);
    ref = golden_f32(&g, "out_u8", NULL, NULL);
    if (ref) check_bytes(rgb, ref, 3 * (int64_t)ow * oh);

    /* Output sizes the refiner cannot take are refused before any work. */
    uint8_t *bad = NULL;
    rp.width = 60;
    CHECK_EQ_INT(sdc_refiner_prepare_image(r, &rp, img, iw, ih, &bad, &ow, &oh, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK(bad == NULL && strstr(err.msg, "not a multiple of") != NULL);
    rp.width = 1 << 20;
    CHECK_EQ_INT(sdc_refiner_prepare_image(r, &rp, img, iw, ih, &bad, &ow, &oh, &err),
                 SDC_ERR_RANGE);
    rp.width = 0;
    CHECK_EQ_INT(sdc_refiner_prepare_image(r, &rp, img, 0, ih, &bad, &ow, &oh, &err),
                 SDC_ERR_RANGE);
    /* A base model directory has no refiner text encoder. */
    sdc_embeds_t e2;
    model_dir(dir, sizeof(dir), "tiny-hunyuanimage-text");
    CHECK_EQ_INT(sdc_refiner_encode_prompt(be, dir, "x", 1, NULL, 0, 4, &e2, NULL, &err),
                 SDC_ERR_UNSUPPORTED);
out:
    if (have_emb) sdc_embeds_free(&emb);
    sdc_refiner_free(r);
    free(img);
    free(resized);
    free(rgb);
    free(u8);
    free(ref);
    free(pb);
    free(latent);
    free(prompt);
    sdc_st_close(&g);
    sdc_backend_destroy(be);
}

int main(void)
{
    RUN(test_dit_config_3d);
    RUN(test_golden_pipeline);
    RUN(test_errors);
    RUN(test_text_golden);
    RUN(test_e2e_prompt_resize);
    TEST_EXIT();
}
