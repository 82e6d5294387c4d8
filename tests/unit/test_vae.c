/*
 * test_vae.c: the AutoencoderKLHunyuanImage decoder against diffusers
 * (tests/data/goldens/vae_decode.safetensors on tiny-hunyuanimage/vae), its
 * memory bound and allocation-failure paths, and config / weight / argument
 * errors.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "fault_be.h"
#include "golden.h"
#include "model/vae.h"

#define TOL 1e-4

static void tiny_vae_dir(char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/tiny-hunyuanimage/vae", test_data_dir());
}

static sdc_backend_t *cpu_backend(void)
{
    sdc_backend_config_t cfg = {.name = "cpu", .n_threads = 0, .device = 0};
    sdc_backend_t *be = NULL;
    sdc_error_t err = {0};
    if (sdc_backend_cpu_create(&cfg, &be, &err) != SDC_OK) {
        fprintf(stderr, "  cpu backend: %s\n", err.msg);
        return NULL;
    }
    return be;
}

typedef struct {
    sdc_st_file_t f;
    float *latent, *decoded;
    int64_t lshape[8], dshape[8];
} vae_golden_t;

static int vae_golden_open(vae_golden_t *g)
{
    int nl = 0, nd = 0;
    memset(g, 0, sizeof(*g));
    if (golden_open(&g->f, "vae_decode.safetensors") != 0) return -1;
    g->latent = golden_f32(&g->f, "latent", &nl, g->lshape);
    g->decoded = golden_f32(&g->f, "decoded", &nd, g->dshape);
    return g->latent && g->decoded && nl == 4 && nd == 4 ? 0 : -1;
}

static void vae_golden_close(vae_golden_t *g)
{
    free(g->latent);
    free(g->decoded);
    sdc_st_close(&g->f);
}

static void test_tiny_config(void)
{
    char dir[1024], path[1100];
    sdc_vae_config_t c;
    sdc_error_t err = {0};
    tiny_vae_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/config.json", dir);
    CHECK_EQ_INT(sdc_vae_config_load(&c, path, &err), SDC_OK);
    CHECK_EQ_INT(c.latent_channels, 8);
    CHECK_EQ_INT(c.out_channels, 3);
    CHECK_EQ_INT(c.n_blocks, 4);
    CHECK(c.block_out_channels[0] == 32 && c.block_out_channels[3] == 64);
    CHECK_EQ_INT(c.layers_per_block, 1);
    CHECK_EQ_INT(c.spatial_compression_ratio, 8);
    CHECK(c.scaling_factor == 0.75289);
    CHECK(c.upsample_match_channel && c.downsample_match_channel);
}

static void test_golden_decode(void)
{
    char dir[1024];
    vae_golden_t g;
    sdc_error_t err = {0};
    sdc_vae_t *v = NULL;
    sdc_backend_t *be = cpu_backend();
    tiny_vae_dir(dir, sizeof(dir));
    if (!be || vae_golden_open(&g) != 0) {
        CHECK(0);
        if (be) sdc_backend_destroy(be);
        return;
    }
    CHECK_EQ_INT(sdc_vae_load(&v, be, dir, &err), SDC_OK);
    if (v) {
        int64_t h = g.lshape[2], w = g.lshape[3], n = g.dshape[1] * g.dshape[2] * g.dshape[3];
        CHECK(g.lshape[1] == 8 && g.dshape[2] == 8 * h && g.dshape[3] == 8 * w);
        float *img = malloc((size_t)n * sizeof(float));
        float *img2 = malloc((size_t)n * sizeof(float));
        CHECK_EQ_INT(sdc_vae_decode(v, g.latent, h, w, img, &err), SDC_OK);
        CHECK(test_close("decoded", img, g.decoded, (long)n, TOL));
        double worst = 0, maxref = 0;
        for (int64_t i = 0; i < n; i++) {
            double d = fabs((double)img[i] - g.decoded[i]);
            if (d > worst) worst = d;
            if (fabs(g.decoded[i]) > maxref) maxref = fabs(g.decoded[i]);
        }
        fprintf(stderr, "  vae decode: max |err| %.3g = %.3g x max|ref| %.4g\n", worst,
                worst / maxref, maxref);
        /* Same input, same bytes. */
        CHECK_EQ_INT(sdc_vae_decode(v, g.latent, h, w, img2, &err), SDC_OK);
        CHECK(memcmp(img, img2, (size_t)n * sizeof(float)) == 0);
        free(img);
        free(img2);
    }
    sdc_vae_free(v);
    vae_golden_close(&g);
    sdc_backend_destroy(be);
}

/* The decode at the end of a whole pipeline run, on a portrait image
 * (H > W; the dedicated golden is landscape): decoded = vae(latents /
 * scaling_factor), the division in float32 as torch does it. */
static void test_pipeline_decode(void)
{
    char dir[1024];
    sdc_st_file_t f;
    sdc_error_t err = {0};
    sdc_vae_t *v = NULL;
    sdc_backend_t *be = cpu_backend();
    tiny_vae_dir(dir, sizeof(dir));
    if (!be || golden_open(&f, "pipeline_cfg_96x64.safetensors") != 0) {
        CHECK(0);
        if (be) sdc_backend_destroy(be);
        return;
    }
    int nl = 0, nd = 0;
    int64_t ls[8], ds[8];
    float *lat = golden_f32(&f, "latents_step3", &nl, ls);
    float *ref = golden_f32(&f, "decoded", &nd, ds);
    CHECK(lat && ref && nl == 4 && nd == 4 && ds[2] == 96 && ds[3] == 64);
    CHECK_EQ_INT(sdc_vae_load(&v, be, dir, &err), SDC_OK);
    if (lat && ref && v) {
        float sf = (float)sdc_vae_config(v)->scaling_factor;
        int64_t nz = ls[1] * ls[2] * ls[3], n = ds[1] * ds[2] * ds[3];
        for (int64_t i = 0; i < nz; i++) lat[i] = lat[i] / sf;
        float *img = malloc((size_t)n * sizeof(float));
        CHECK_EQ_INT(sdc_vae_decode(v, lat, ls[2], ls[3], img, &err), SDC_OK);
        CHECK(test_close("pipeline decoded", img, ref, (long)n, TOL));
        free(img);
    }
    sdc_vae_free(v);
    free(lat);
    free(ref);
    sdc_st_close(&f);
    sdc_backend_destroy(be);
}

/* Peak backend memory of a decode is three activations of the last level,
 * every buffer is returned, and every allocation failure is reported as
 * SDC_ERR_NOMEM without leaking. */
static void test_memory_and_alloc_failures(void)
{
    char dir[1024];
    vae_golden_t g;
    sdc_error_t err = {0};
    sdc_vae_t *v = NULL;
    sdc_backend_t *real = cpu_backend();
    fault_be_t fb;
    tiny_vae_dir(dir, sizeof(dir));
    if (!real || vae_golden_open(&g) != 0) {
        CHECK(0);
        if (real) sdc_backend_destroy(real);
        return;
    }
    fault_init(&fb, real);
    CHECK_EQ_INT(sdc_vae_load(&v, &fb.be, dir, &err), SDC_OK);
    if (!v) goto out;
    int64_t h = g.lshape[2], w = g.lshape[3], n = g.dshape[1] * g.dshape[2] * g.dshape[3];
    float *img = malloc((size_t)n * sizeof(float));
    size_t weights_live = fb.live;
    fb.peak = fb.live;
    fb.n_allocs = 0;
    fb.fail_at = LONG_MAX;
    CHECK_EQ_INT(sdc_vae_decode(v, g.latent, h, w, img, &err), SDC_OK);
    CHECK(fb.live == weights_live);
    size_t last_level = (size_t)32 * (size_t)(8 * h) * (size_t)(8 * w) * sizeof(float);
    CHECK_MSG(fb.peak - weights_live <= 3 * last_level, "peak %zu bytes > 3 x %zu",
              fb.peak - weights_live, last_level);
    long n_allocs = fb.n_allocs;
    CHECK(n_allocs > 4);
    /* The allocation sequence does not depend on the size: fail each one
     * on a small latent. */
    for (long k = 0; k < n_allocs; k++) {
        fb.n_allocs = 0;
        fb.fail_at = k;
        err.msg[0] = '\0';
        CHECK_MSG(sdc_vae_decode(v, g.latent, 2, 3, img, &err) == SDC_ERR_NOMEM,
                  "allocation %ld", k);
        CHECK(strstr(err.msg, "out of memory") != NULL);
        CHECK_MSG(fb.live == weights_live, "allocation %ld leaked %zu bytes", k,
                  fb.live - weights_live);
    }
    fb.fail_at = -1;
    free(img);
    sdc_vae_free(v);
    CHECK(fb.live == 0);
out:
    vae_golden_close(&g);
    sdc_backend_destroy(real);
}

static void test_bad_decode_args(void)
{
    char dir[1024];
    sdc_error_t err = {0};
    sdc_vae_t *v = NULL;
    sdc_backend_t *be = cpu_backend();
    tiny_vae_dir(dir, sizeof(dir));
    if (!be) {
        CHECK(0);
        return;
    }
    CHECK_EQ_INT(sdc_vae_load(&v, be, dir, &err), SDC_OK);
    if (v) {
        float z[8 * 2 * 2] = {0}, img[3 * 16 * 16];
        CHECK_EQ_INT(sdc_vae_decode(v, z, 0, 2, img, &err), SDC_ERR_RANGE);
        CHECK_EQ_INT(sdc_vae_decode(v, z, 2, -1, img, &err), SDC_ERR_RANGE);
        CHECK_EQ_INT(sdc_vae_decode(v, z, INT64_MAX / 4, 2, img, &err), SDC_ERR_RANGE);
        CHECK_EQ_INT(sdc_vae_decode(v, z, 1 << 20, 1 << 20, img, &err), SDC_ERR_RANGE);
        CHECK_EQ_INT(sdc_vae_decode(v, NULL, 2, 2, img, &err), SDC_ERR_INVALID_ARG);
        CHECK_EQ_INT(sdc_vae_decode(v, z, 2, 2, NULL, &err), SDC_ERR_INVALID_ARG);
        /* A 1x1 latent works (every level is then tiny). */
        CHECK_EQ_INT(sdc_vae_decode(v, z, 1, 1, img, &err), SDC_OK);
    }
    sdc_vae_free(v);
    sdc_backend_destroy(be);
}

/* A VAE config in the tiny model's shape, with pieces swapped out. */
#define VAE_JSON_FULL(cls, out, lat, boc, lpb, ratio, ss, sf, extra)                            \
    "{\"_class_name\": \"" cls "\", \"in_channels\": 3, \"out_channels\": " out ", "           \
    "\"latent_channels\": " lat ", \"block_out_channels\": " boc ", \"layers_per_block\": " lpb \
    ", \"spatial_compression_ratio\": " ratio ", \"sample_size\": " ss                          \
    ", \"scaling_factor\": " sf extra "}"
#define VAE_JSON(cls, lat, boc, lpb, ratio, extra)                                               \
    VAE_JSON_FULL(cls, "3", lat, boc, lpb, ratio, "256", "0.75289", extra)
#define GOOD_CLS "AutoencoderKLHunyuanImage"
#define GOOD_BOC "[32, 32, 64, 64]"

typedef struct {
    char dir[64];
    char config[96];
    char weights[128];
} temp_vae_t;

/* A directory with config.json = json and, when link_weights, the tiny
 * model's safetensors linked in. */
static int temp_vae(temp_vae_t *t, const char *json, int link_weights)
{
    char vdir[1024], src[1100];
    snprintf(t->dir, sizeof(t->dir), "/tmp/sdc_test_vae_XXXXXX");
    t->weights[0] = '\0';
    if (!mkdtemp(t->dir)) return -1;
    snprintf(t->config, sizeof(t->config), "%s/config.json", t->dir);
    FILE *f = fopen(t->config, "w");
    if (!f) return -1;
    fputs(json, f);
    fclose(f);
    if (!link_weights) return 0;
    tiny_vae_dir(vdir, sizeof(vdir));
    snprintf(src, sizeof(src), "%s/diffusion_pytorch_model.safetensors", vdir);
    char *abs = realpath(src, NULL);
    if (!abs) return -1;
    snprintf(t->weights, sizeof(t->weights), "%s/diffusion_pytorch_model.safetensors", t->dir);
    int rc = symlink(abs, t->weights);
    free(abs);
    return rc;
}

static void temp_vae_remove(temp_vae_t *t)
{
    if (t->weights[0]) unlink(t->weights);
    unlink(t->config);
    rmdir(t->dir);
}

static void test_bad_configs(void)
{
    static const struct {
        const char *json;
        sdc_status_t want;
    } cases[] = {
        {VAE_JSON("AutoencoderKL", "8", GOOD_BOC, "1", "8", ""), SDC_ERR_UNSUPPORTED},
        {"{\"latent_channels\": 8}", SDC_ERR_FORMAT},
        {"{\"_class_name\": \"" GOOD_CLS "\", \"in_channels\": 3, \"out_channels\": 3, "
         "\"block_out_channels\": [32, 32, 64, 64], \"layers_per_block\": 1, "
         "\"spatial_compression_ratio\": 8, \"sample_size\": 256, \"scaling_factor\": 0.75}",
         SDC_ERR_NOT_FOUND},
        {"{\"_class_name\": \"" GOOD_CLS "\", \"in_channels\": 3, \"out_channels\": 3, "
         "\"latent_channels\": 8, \"layers_per_block\": 1, "
         "\"spatial_compression_ratio\": 8, \"sample_size\": 256, \"scaling_factor\": 0.75}",
         SDC_ERR_NOT_FOUND},
        {"{\"_class_name\": \"" GOOD_CLS "\", \"in_channels\": 3, \"out_channels\": 3, "
         "\"latent_channels\": 8, \"block_out_channels\": [32, 32, 64, 64], "
         "\"layers_per_block\": 1, \"spatial_compression_ratio\": 8, \"sample_size\": 256}",
         SDC_ERR_NOT_FOUND},
        {VAE_JSON(GOOD_CLS, "\"8\"", GOOD_BOC, "1", "8", ""), SDC_ERR_FORMAT},
        {VAE_JSON(GOOD_CLS, "8.5", GOOD_BOC, "1", "8", ""), SDC_ERR_FORMAT},
        {VAE_JSON(GOOD_CLS, "8", "32", "1", "8", ""), SDC_ERR_FORMAT},
        {VAE_JSON(GOOD_CLS, "8", GOOD_BOC, "1", "8", ", \"upsample_match_channel\": 1"),
         SDC_ERR_FORMAT},
        {VAE_JSON(GOOD_CLS, "-8", GOOD_BOC, "1", "8", ""), SDC_ERR_RANGE},
        {VAE_JSON(GOOD_CLS, "0", GOOD_BOC, "1", "8", ""), SDC_ERR_RANGE},
        {VAE_JSON(GOOD_CLS, "8", GOOD_BOC, "-1", "8", ""), SDC_ERR_RANGE},
        {VAE_JSON(GOOD_CLS, "8", GOOD_BOC, "1000", "8", ""), SDC_ERR_RANGE},
        {VAE_JSON(GOOD_CLS, "8", "[32, 32, 64, 48]", "1", "8", ""), SDC_ERR_RANGE},
        {VAE_JSON(GOOD_CLS, "8", "[32, -32, 64, 64]", "1", "8", ""), SDC_ERR_RANGE},
        {VAE_JSON(GOOD_CLS, "8", "[]", "1", "8", ""), SDC_ERR_RANGE},
        {VAE_JSON(GOOD_CLS, "8", "[32, 32, 32, 32, 32, 32, 32, 32, 32]", "1", "8", ""),
         SDC_ERR_RANGE},
        {VAE_JSON(GOOD_CLS, "48", GOOD_BOC, "1", "8", ""), SDC_ERR_INVALID_ARG},
        {VAE_JSON(GOOD_CLS, "8", GOOD_BOC, "1", "12", ""), SDC_ERR_INVALID_ARG},
        {VAE_JSON(GOOD_CLS, "8", GOOD_BOC, "1", "16", ""), SDC_ERR_INVALID_ARG},
        {VAE_JSON(GOOD_CLS, "8", GOOD_BOC, "1", "0", ""), SDC_ERR_INVALID_ARG},
        {VAE_JSON(GOOD_CLS, "8", GOOD_BOC, "1", "-8", ""), SDC_ERR_INVALID_ARG},
        {VAE_JSON(GOOD_CLS, "8", "[32, 32, 32, 256]", "1", "8", ""), SDC_ERR_INVALID_ARG},
        {VAE_JSON(GOOD_CLS, "8", GOOD_BOC, "1", "8", ", \"upsample_match_channel\": false"),
         SDC_ERR_UNSUPPORTED},
        {VAE_JSON_FULL(GOOD_CLS, "3", "8", GOOD_BOC, "1", "8", "0", "0.75", ""), SDC_ERR_RANGE},
        {VAE_JSON_FULL(GOOD_CLS, "3", "8", GOOD_BOC, "1", "8", "256", "0", ""), SDC_ERR_RANGE},
        {VAE_JSON_FULL(GOOD_CLS, "3", "8", GOOD_BOC, "1", "8", "256", "null", ""),
         SDC_ERR_NOT_FOUND},
        {VAE_JSON_FULL(GOOD_CLS, "0", "8", GOOD_BOC, "1", "8", "256", "0.75", ""), SDC_ERR_RANGE},
        /* Accepted variants. */
        {VAE_JSON(GOOD_CLS, "8", "[64, 64, 64, 64]", "1", "8",
                  ", \"upsample_match_channel\": false"),
         SDC_OK},
        {VAE_JSON(GOOD_CLS, "8", GOOD_BOC, "0", "4", ", \"_diffusers_version\": \"0.42.1\""),
         SDC_OK},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        temp_vae_t t;
        sdc_vae_config_t c;
        sdc_error_t err = {0};
        if (temp_vae(&t, cases[i].json, 0) != 0) {
            CHECK(0);
            continue;
        }
        sdc_status_t st = sdc_vae_config_load(&c, t.config, &err);
        CHECK_MSG(st == cases[i].want, "case %zu %s: got %d (%s), want %d", i, cases[i].json,
                  (int)st, err.msg, (int)cases[i].want);
        if (cases[i].want != SDC_OK)
            CHECK_MSG(err.msg[0] != '\0', "case %zu: no message", i);
        temp_vae_remove(&t);
    }
}

/* Configs that parse but do not describe the checkpoint next to them. */
static void test_wrong_weights(void)
{
    static const struct {
        const char *json;
        sdc_status_t want;
        const char *tensor; /* named in the message */
    } cases[] = {
        {VAE_JSON(GOOD_CLS, "16", GOOD_BOC, "1", "8", ""), SDC_ERR_SHAPE, "decoder.conv_in.weight"},
        {VAE_JSON_FULL(GOOD_CLS, "4", "8", GOOD_BOC, "1", "8", "256", "0.75", ""), SDC_ERR_SHAPE,
         "decoder.conv_out.weight"},
        {VAE_JSON(GOOD_CLS, "8", "[32, 32, 64, 128]", "1", "8", ""), SDC_ERR_SHAPE,
         "decoder.conv_in.weight"},
        {VAE_JSON(GOOD_CLS, "8", GOOD_BOC, "2", "8", ""), SDC_ERR_NOT_FOUND,
         "decoder.up_blocks.2."},
    };
    sdc_backend_t *be = cpu_backend();
    if (!be) {
        CHECK(0);
        return;
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        temp_vae_t t;
        sdc_vae_t *v = NULL;
        sdc_error_t err = {0};
        if (temp_vae(&t, cases[i].json, 1) != 0) {
            CHECK(0);
            continue;
        }
        sdc_status_t st = sdc_vae_load(&v, be, t.dir, &err);
        CHECK_MSG(st == cases[i].want, "case %zu: got %d (%s), want %d", i, (int)st, err.msg,
                  (int)cases[i].want);
        CHECK_MSG(strstr(err.msg, cases[i].tensor) != NULL, "case %zu: '%s' not in '%s'", i,
                  cases[i].tensor, err.msg);
        CHECK(v == NULL);
        temp_vae_remove(&t);
    }
    /* No weights at all. */
    temp_vae_t t;
    sdc_vae_t *v = NULL;
    sdc_error_t err = {0};
    CHECK(temp_vae(&t, VAE_JSON(GOOD_CLS, "8", GOOD_BOC, "1", "8", ""), 0) == 0);
    CHECK(sdc_vae_load(&v, be, t.dir, &err) != SDC_OK);
    CHECK(v == NULL);
    temp_vae_remove(&t);
    CHECK(sdc_vae_load(&v, be, "/nonexistent/vae", &err) != SDC_OK);
    sdc_backend_destroy(be);
}

int main(void)
{
    RUN(test_tiny_config);
    RUN(test_golden_decode);
    RUN(test_pipeline_decode);
    RUN(test_memory_and_alloc_failures);
    RUN(test_bad_decode_args);
    RUN(test_bad_configs);
    RUN(test_wrong_weights);
    TEST_EXIT();
}
