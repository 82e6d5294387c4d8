/*
 * test_vae_refiner.c: AutoencoderKLHunyuanImageRefiner (one frame) against
 * diffusers: encoder moments and posterior sample
 * (refiner_vae_encode.safetensors), decoder (refiner_vae_decode), on
 * tiny-hunyuanimage-refiner/vae; thread-count independence, argument and
 * config errors, every allocation failure.
 */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "fault_be.h"
#include "golden.h"
#include "common/config.h"
#include "model/vae.h"
#include "model/vae_refiner.h"

#define TOL 1e-4

static void vae_dir(char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/tiny-hunyuanimage-refiner/vae", test_data_dir());
}

static sdc_backend_t *cpu_backend(int n_threads)
{
    sdc_backend_config_t cfg = {.name = "cpu", .n_threads = n_threads, .device = 0};
    sdc_backend_t *be = NULL;
    sdc_error_t err = {0};
    if (sdc_backend_cpu_create(&cfg, &be, &err) != SDC_OK) {
        fprintf(stderr, "  cpu backend: %s\n", err.msg);
        return NULL;
    }
    return be;
}

static double max_rel_err(const float *got, const float *ref, int64_t n)
{
    double worst = 0, maxref = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (d > worst) worst = d;
        if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    }
    return worst / (maxref > 0 ? maxref : 1);
}

static sdc_vae_refiner_t *load(sdc_backend_t *be)
{
    char dir[1024];
    sdc_error_t err = {0};
    sdc_vae_refiner_t *v = NULL;
    vae_dir(dir, sizeof(dir));
    if (sdc_vae_refiner_load(&v, be, dir, &err) != SDC_OK)
        fprintf(stderr, "  load: %s\n", err.msg);
    return v;
}

static void test_config(void)
{
    char dir[1024], path[1100];
    sdc_error_t err = {0};
    sdc_vae_refiner_config_t c;
    vae_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/config.json", dir);
    CHECK_EQ_INT(sdc_vae_refiner_config_load(&c, path, &err), SDC_OK);
    CHECK(c.latent_channels == 8 && c.n_blocks == 4 && c.spatial_compression_ratio == 8 &&
          c.temporal_compression_ratio == 4 && c.block_out_channels[0] == 16);
    CHECK(fabs(c.scaling_factor - 1.03682) < 1e-12);

    static const struct {
        const char *json;
        sdc_status_t want;
        const char *msg;
    } bad[] = {
        {"{\"_class_name\": \"AutoencoderKLHunyuanImage\"}", SDC_ERR_UNSUPPORTED,
         "the refiner needs AutoencoderKLHunyuanImageRefiner"},
        {"{}", SDC_ERR_UNSUPPORTED, "(missing)"},
        {"{\"_class_name\": \"AutoencoderKLHunyuanImageRefiner\", \"spatial_compression_ratio\": 12}",
         SDC_ERR_UNSUPPORTED, "powers of two"},
        {"{\"_class_name\": \"AutoencoderKLHunyuanImageRefiner\", \"temporal_compression_ratio\": 32}",
         SDC_ERR_UNSUPPORTED, "temporal <= spatial"},
        {"{\"_class_name\": \"AutoencoderKLHunyuanImageRefiner\", \"spatial_compression_ratio\": 32}",
         SDC_ERR_UNSUPPORTED, "spatial < 2^len"},
        {"{\"_class_name\": \"AutoencoderKLHunyuanImageRefiner\", \"latent_channels\": 3}",
         SDC_ERR_INVALID_ARG, "2 * latent_channels"},
        {"{\"_class_name\": \"AutoencoderKLHunyuanImageRefiner\", \"block_out_channels\": [16, 20, "
         "32, 32], \"latent_channels\": 8, \"spatial_compression_ratio\": 8}",
         SDC_ERR_INVALID_ARG, "downsamples 16 -> 20"},
        {"{\"_class_name\": \"AutoencoderKLHunyuanImageRefiner\", \"layers_per_block\": -1}",
         SDC_ERR_RANGE, "layers_per_block"},
        {"{\"_class_name\": \"AutoencoderKLHunyuanImageRefiner\", \"scaling_factor\": 0}",
         SDC_ERR_RANGE, "scaling_factor"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sdc_json_t doc;
        err.msg[0] = '\0';
        if (sdc_json_parse(&doc, bad[i].json, strlen(bad[i].json), "config.json", &err) != SDC_OK) {
            CHECK_MSG(0, "case %zu does not parse: %s", i, err.msg);
            continue;
        }
        sdc_status_t st = sdc_vae_refiner_config_from_json(&c, &doc, &err);
        CHECK_MSG(st == bad[i].want && strstr(err.msg, bad[i].msg), "case %zu: %d '%s'", i,
                  (int)st, err.msg);
        sdc_json_free(&doc);
    }
}

typedef struct {
    sdc_st_file_t f;
    float *image, *mean, *logvar, *noise, *sample;
    int64_t ishape[8], mshape[8];
    uint64_t seed;
    int64_t H, W, n;
} enc_golden_t;

static int enc_golden_open(enc_golden_t *g)
{
    int ni = 0, nm = 0;
    memset(g, 0, sizeof(*g));
    if (golden_open(&g->f, "refiner_vae_encode.safetensors") != 0) return -1;
    g->image = golden_f32(&g->f, "image", &ni, g->ishape);
    g->mean = golden_f32(&g->f, "mean", &nm, g->mshape);
    g->logvar = golden_f32(&g->f, "logvar", NULL, NULL);
    g->noise = golden_f32(&g->f, "noise", NULL, NULL);
    g->sample = golden_f32(&g->f, "sample", NULL, NULL);
    g->seed = (uint64_t)golden_i64(&g->f, "seed", -1);
    if (!g->image || !g->mean || !g->logvar || !g->noise || !g->sample || ni != 4 || nm != 4)
        return -1;
    g->H = g->ishape[2];
    g->W = g->ishape[3];
    g->n = g->mshape[1] * g->mshape[2] * g->mshape[3];
    return 0;
}

static void enc_golden_close(enc_golden_t *g)
{
    free(g->image);
    free(g->mean);
    free(g->logvar);
    free(g->noise);
    free(g->sample);
    sdc_st_close(&g->f);
}

static int encode(const enc_golden_t *g, int n_threads, float *mean, float *logvar)
{
    sdc_error_t err = {0};
    int rc = -1;
    sdc_backend_t *be = cpu_backend(n_threads);
    sdc_vae_refiner_t *v = be ? load(be) : NULL;
    if (v && sdc_vae_refiner_encode(v, g->image, g->H, g->W, mean, logvar, &err) == SDC_OK)
        rc = 0;
    else if (v)
        fprintf(stderr, "  encode: %s\n", err.msg);
    sdc_vae_refiner_free(v);
    if (be) sdc_backend_destroy(be);
    return rc;
}

static void test_golden_encode(void)
{
    enc_golden_t g;
    if (enc_golden_open(&g) != 0) {
        CHECK(0);
        enc_golden_close(&g);
        return;
    }
    CHECK(g.H != g.W && g.mshape[1] == 8 && g.mshape[2] * 8 == g.H);
    size_t bytes = (size_t)g.n * sizeof(float);
    float *mean = malloc(bytes), *logvar = malloc(bytes), *m1 = malloc(bytes),
          *lv1 = malloc(bytes);
    CHECK(encode(&g, 0, mean, logvar) == 0);
    CHECK(test_close("mean", mean, g.mean, (long)g.n, TOL));
    CHECK(test_close("logvar", logvar, g.logvar, (long)g.n, TOL));
    fprintf(stderr, "  refiner vae encode: max rel err mean %.3g, logvar %.3g\n",
            max_rel_err(mean, g.mean, g.n), max_rel_err(logvar, g.logvar, g.n));
    CHECK(encode(&g, 1, m1, lv1) == 0);
    CHECK(memcmp(mean, m1, bytes) == 0 && memcmp(logvar, lv1, bytes) == 0);
    /* The posterior sample: the base VAE's, Philox stream 1. */
    sdc_vae_posterior_sample(mean, logvar, g.n, g.seed, m1);
    CHECK(test_close("sample", m1, g.sample, (long)g.n, TOL));
    fprintf(stderr, "  refiner vae encode: max rel err sample %.3g\n",
            max_rel_err(m1, g.sample, g.n));
    sdc_vae_posterior_sample(g.mean, g.logvar, g.n, g.seed, m1);
    CHECK(test_close("sample of the golden moments", m1, g.sample, (long)g.n, 1e-6));
    free(mean);
    free(logvar);
    free(m1);
    free(lv1);
    enc_golden_close(&g);
}

static void test_golden_decode(void)
{
    sdc_st_file_t f;
    int nl = 0, nd = 0;
    int64_t ls[8], ds[8];
    sdc_error_t err = {0};
    if (golden_open(&f, "refiner_vae_decode.safetensors") != 0) {
        CHECK(0);
        return;
    }
    float *latent = golden_f32(&f, "latent", &nl, ls), *ref = golden_f32(&f, "decoded", &nd, ds);
    sdc_backend_t *be = cpu_backend(0), *be1 = cpu_backend(1);
    sdc_vae_refiner_t *v = be ? load(be) : NULL, *v1 = be1 ? load(be1) : NULL;
    if (latent && ref && v && v1 && nl == 4 && nd == 4) {
        int64_t n = ds[1] * ds[2] * ds[3];
        float *img = malloc((size_t)n * sizeof(float)), *img1 = malloc((size_t)n * sizeof(float));
        CHECK_EQ_INT(sdc_vae_refiner_decode(v, latent, ls[2], ls[3], img, &err), SDC_OK);
        CHECK(test_close("decoded", img, ref, (long)n, TOL));
        fprintf(stderr, "  refiner vae decode: max rel err %.3g\n", max_rel_err(img, ref, n));
        CHECK_EQ_INT(sdc_vae_refiner_decode(v1, latent, ls[2], ls[3], img1, &err), SDC_OK);
        CHECK(memcmp(img, img1, (size_t)n * sizeof(float)) == 0);
        free(img);
        free(img1);
    } else {
        CHECK(0);
    }
    sdc_vae_refiner_free(v);
    sdc_vae_refiner_free(v1);
    if (be) sdc_backend_destroy(be);
    if (be1) sdc_backend_destroy(be1);
    free(latent);
    free(ref);
    sdc_st_close(&f);
}

static void test_bad_args(void)
{
    sdc_error_t err = {0};
    sdc_backend_t *be = cpu_backend(0);
    sdc_vae_refiner_t *v = be ? load(be) : NULL;
    if (!v) {
        CHECK(0);
        if (be) sdc_backend_destroy(be);
        return;
    }
    float img[3 * 16 * 16] = {0}, m[8 * 4], lv[8 * 4];
    CHECK_EQ_INT(sdc_vae_refiner_encode(v, img, 0, 8, m, lv, &err), SDC_ERR_RANGE);
    CHECK_EQ_INT(sdc_vae_refiner_encode(v, img, 12, 8, m, lv, &err), SDC_ERR_RANGE);
    CHECK(strstr(err.msg, "multiple of 8") != NULL);
    CHECK_EQ_INT(sdc_vae_refiner_encode(v, img, INT64_MAX / 2, 8, m, lv, &err), SDC_ERR_RANGE);
    CHECK_EQ_INT(sdc_vae_refiner_encode(v, img, 1 << 20, 1 << 20, m, lv, &err), SDC_ERR_RANGE);
    CHECK_EQ_INT(sdc_vae_refiner_encode(v, NULL, 8, 8, m, lv, &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_vae_refiner_encode(NULL, img, 8, 8, m, lv, &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_vae_refiner_decode(v, m, 0, 1, img, &err), SDC_ERR_RANGE);
    CHECK_EQ_INT(sdc_vae_refiner_decode(v, m, 1 << 20, 1, img, &err), SDC_ERR_RANGE);
    CHECK_EQ_INT(sdc_vae_refiner_decode(v, NULL, 1, 1, img, &err), SDC_ERR_INVALID_ARG);
    /* The smallest sizes (one latent pixel: every replicate pad reads one
     * pixel) and a 2 x 2 latent work. */
    CHECK_EQ_INT(sdc_vae_refiner_encode(v, img, 8, 8, m, lv, &err), SDC_OK);
    CHECK_EQ_INT(sdc_vae_refiner_encode(v, img, 16, 16, m, lv, &err), SDC_OK);
    for (int i = 0; i < 8 * 4; i++) CHECK(isfinite(m[i]) && lv[i] >= -30 && lv[i] <= 20);
    CHECK_EQ_INT(sdc_vae_refiner_decode(v, m, 1, 1, img, &err), SDC_OK);
    CHECK_EQ_INT(sdc_vae_refiner_decode(v, m, 2, 2, img, &err), SDC_OK);
    for (int i = 0; i < 3 * 16 * 16; i++) CHECK(isfinite(img[i]));
    sdc_vae_refiner_free(v);
    sdc_backend_destroy(be);
}

/* Every allocation of a load, an encode and a decode may fail: each
 * failure is SDC_ERR_NOMEM and leaks nothing. */
static void test_alloc_failures(void)
{
    char dir[1024];
    sdc_error_t err = {0};
    sdc_backend_t *real = cpu_backend(0);
    fault_be_t fb;
    if (!real) {
        CHECK(0);
        return;
    }
    vae_dir(dir, sizeof(dir));
    fault_init(&fb, real);
    sdc_vae_refiner_t *v = NULL;
    CHECK_EQ_INT(sdc_vae_refiner_load(&v, &fb.be, dir, &err), SDC_OK);
    long n_load = fb.n_allocs;
    sdc_vae_refiner_free(v);
    CHECK(fb.live == 0);
    for (long k = 0; k < n_load; k += 7) {
        fb.n_allocs = 0;
        fb.fail_at = k;
        v = NULL;
        CHECK_MSG(sdc_vae_refiner_load(&v, &fb.be, dir, &err) == SDC_ERR_NOMEM, "load alloc %ld", k);
        CHECK(v == NULL && fb.live == 0);
    }
    fb.fail_at = -1;
    CHECK_EQ_INT(sdc_vae_refiner_load(&v, &fb.be, dir, &err), SDC_OK);
    if (!v) goto out;
    float img[3 * 16 * 8] = {0}, m[8 * 2], lv[8 * 2];
    size_t weights = fb.live;
    for (int dec = 0; dec < 2; dec++) {
        fb.n_allocs = 0;
        fb.fail_at = LONG_MAX;
        CHECK_EQ_INT(dec ? sdc_vae_refiner_decode(v, m, 2, 1, img, &err)
                         : sdc_vae_refiner_encode(v, img, 16, 8, m, lv, &err),
                     SDC_OK);
        long n = fb.n_allocs;
        CHECK(n >= 4 && fb.live == weights);
        for (long k = 0; k < n; k++) {
            fb.n_allocs = 0;
            fb.fail_at = k;
            err.msg[0] = '\0';
            sdc_status_t st = dec ? sdc_vae_refiner_decode(v, m, 2, 1, img, &err)
                                  : sdc_vae_refiner_encode(v, img, 16, 8, m, lv, &err);
            CHECK_MSG(st == SDC_ERR_NOMEM && strstr(err.msg, "out of memory"),
                      "%s alloc %ld: %d '%s'", dec ? "decode" : "encode", k, (int)st, err.msg);
            CHECK_MSG(fb.live == weights, "%s alloc %ld leaked", dec ? "decode" : "encode", k);
        }
    }
    fb.fail_at = -1;
    sdc_vae_refiner_free(v);
    CHECK(fb.live == 0);
out:
    sdc_backend_destroy(real);
}

int main(void)
{
    RUN(test_config);
    RUN(test_golden_encode);
    RUN(test_golden_decode);
    RUN(test_bad_args);
    RUN(test_alloc_failures);
    TEST_EXIT();
}
