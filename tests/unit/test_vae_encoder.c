/*
 * test_vae_encoder.c: the AutoencoderKLHunyuanImage encoder and posterior
 * sample against diffusers (tests/data/goldens/vae_encode.safetensors on
 * tiny-hunyuanimage/vae), the Philox stream of the posterior noise, loading
 * the encoder only on request, its memory bound and allocation-failure
 * paths, and argument / weight / config errors.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "fault_be.h"
#include "golden.h"
#include "common/philox.h"
#include "model/vae.h"

#define TOL 1e-4

static void tiny_vae_dir(char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/tiny-hunyuanimage/vae", test_data_dir());
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

typedef struct {
    sdc_st_file_t f;
    float *image, *mean, *logvar, *noise, *sample;
    int64_t ishape[8], mshape[8];
    uint64_t seed;
    int64_t H, W, n; /* image size, latent elements */
} enc_golden_t;

static int enc_golden_open(enc_golden_t *g)
{
    int ni = 0, nm = 0;
    memset(g, 0, sizeof(*g));
    if (golden_open(&g->f, "vae_encode.safetensors") != 0) return -1;
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

/* Loads the tiny VAE with its encoder on a backend of n_threads threads
 * and encodes the golden image; mean and logvar get g->n floats each. */
static int encode_golden(const enc_golden_t *g, int n_threads, float *mean, float *logvar)
{
    char dir[1024];
    sdc_error_t err = {0};
    sdc_vae_t *v = NULL;
    int rc = -1;
    sdc_backend_t *be = cpu_backend(n_threads);
    if (!be) return -1;
    tiny_vae_dir(dir, sizeof(dir));
    if (sdc_vae_load(&v, be, dir, &err) != SDC_OK || sdc_vae_load_encoder(v, &err) != SDC_OK) {
        fprintf(stderr, "  load: %s\n", err.msg);
        goto out;
    }
    if (sdc_vae_encode(v, g->image, g->H, g->W, mean, logvar, &err) != SDC_OK) {
        fprintf(stderr, "  encode: %s\n", err.msg);
        goto out;
    }
    rc = 0;
out:
    sdc_vae_free(v);
    sdc_backend_destroy(be);
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
    CHECK(g.mshape[1] == 8 && g.mshape[2] * 8 == g.H && g.mshape[3] * 8 == g.W);
    CHECK(g.H != g.W); /* a non-square image catches H / W mix-ups */
    size_t bytes = (size_t)g.n * sizeof(float);
    float *mean = malloc(bytes), *logvar = malloc(bytes), *mean1 = malloc(bytes),
          *logvar1 = malloc(bytes);
    CHECK(encode_golden(&g, 0, mean, logvar) == 0);
    CHECK(test_close("mean", mean, g.mean, (long)g.n, TOL));
    CHECK(test_close("logvar", logvar, g.logvar, (long)g.n, TOL));
    fprintf(stderr, "  vae encode: max rel err mean %.3g, logvar %.3g\n",
            max_rel_err(mean, g.mean, g.n), max_rel_err(logvar, g.logvar, g.n));
    /* One thread gives the same bits as all of them. */
    CHECK(encode_golden(&g, 1, mean1, logvar1) == 0);
    CHECK(memcmp(mean, mean1, bytes) == 0 && memcmp(logvar, logvar1, bytes) == 0);
    /* The posterior sample of our encoding. */
    sdc_vae_posterior_sample(mean, logvar, g.n, g.seed, mean1);
    CHECK(test_close("sample", mean1, g.sample, (long)g.n, TOL));
    free(mean);
    free(logvar);
    free(mean1);
    free(logvar1);
    enc_golden_close(&g);
}

/* The posterior noise is Philox stream 1 of the seed, and the sample is
 * mean + exp(0.5 logvar) * noise as diffusers computes it. */
static void test_posterior_sample(void)
{
    enc_golden_t g;
    if (enc_golden_open(&g) != 0) {
        CHECK(0);
        enc_golden_close(&g);
        return;
    }
    size_t bytes = (size_t)g.n * sizeof(float);
    float *eps = malloc(bytes), *eps0 = malloc(bytes), *z = malloc(bytes);
    sdc_philox_normal_stream(g.seed, SDC_PHILOX_STREAM_VAE_POSTERIOR, 0, eps, g.n);
    CHECK_MSG(memcmp(eps, g.noise, bytes) == 0, "posterior noise differs from the golden's");
    sdc_philox_normal(g.seed, 0, eps0, g.n);
    long same = 0;
    for (int64_t i = 0; i < g.n; i++) same += eps0[i] == eps[i];
    CHECK_MSG(same == 0, "%ld elements of streams 0 and 1 coincide", same);
    sdc_vae_posterior_sample(g.mean, g.logvar, g.n, g.seed, z);
    CHECK(test_close("sample from golden moments", z, g.sample, (long)g.n, 1e-6));
    /* In place (z == mean). */
    memcpy(z, g.mean, bytes);
    sdc_vae_posterior_sample(z, g.logvar, g.n, g.seed, z);
    CHECK(test_close("sample in place", z, g.sample, (long)g.n, 1e-6));
    free(eps);
    free(eps0);
    free(z);
    enc_golden_close(&g);
}

/* sdc_vae_load maps the encoder's tensors but loads none of them. */
static void test_encoder_on_request(void)
{
    char dir[1024];
    sdc_error_t err = {0};
    sdc_vae_t *v = NULL;
    sdc_backend_t *real = cpu_backend(0);
    fault_be_t fb;
    if (!real) {
        CHECK(0);
        return;
    }
    tiny_vae_dir(dir, sizeof(dir));
    fault_init(&fb, real);
    CHECK_EQ_INT(sdc_vae_load(&v, &fb.be, dir, &err), SDC_OK);
    if (v) {
        size_t decoder_bytes = fb.live;
        float img[3 * 8 * 8] = {0}, m[8], lv[8];
        CHECK(!sdc_vae_has_encoder(v));
        CHECK_EQ_INT(sdc_vae_encode(v, img, 8, 8, m, lv, &err), SDC_ERR_INVALID_ARG);
        CHECK(strstr(err.msg, "sdc_vae_load_encoder") != NULL);
        CHECK_EQ_INT(sdc_vae_load_encoder(v, &err), SDC_OK);
        CHECK(sdc_vae_has_encoder(v));
        size_t with_encoder = fb.live;
        CHECK(with_encoder > decoder_bytes);
        CHECK_EQ_INT(sdc_vae_load_encoder(v, &err), SDC_OK);
        CHECK(fb.live == with_encoder);
        CHECK_EQ_INT(sdc_vae_encode(v, img, 8, 8, m, lv, &err), SDC_OK);
    }
    sdc_vae_free(v);
    CHECK(fb.live == 0);
    sdc_backend_destroy(real);
}

static void test_bad_encode_args(void)
{
    char dir[1024];
    sdc_error_t err = {0};
    sdc_vae_t *v = NULL;
    sdc_backend_t *be = cpu_backend(0);
    if (!be) {
        CHECK(0);
        return;
    }
    tiny_vae_dir(dir, sizeof(dir));
    CHECK_EQ_INT(sdc_vae_load(&v, be, dir, &err), SDC_OK);
    CHECK_EQ_INT(sdc_vae_load_encoder(NULL, &err), SDC_ERR_INVALID_ARG);
    if (v && sdc_vae_load_encoder(v, &err) == SDC_OK) {
        float img[3 * 16 * 16] = {0}, m[8 * 2 * 2], lv[8 * 2 * 2];
        CHECK_EQ_INT(sdc_vae_encode(v, img, 0, 8, m, lv, &err), SDC_ERR_RANGE);
        CHECK_EQ_INT(sdc_vae_encode(v, img, 8, -8, m, lv, &err), SDC_ERR_RANGE);
        CHECK_EQ_INT(sdc_vae_encode(v, img, 12, 8, m, lv, &err), SDC_ERR_RANGE);
        CHECK(strstr(err.msg, "multiple of 8") != NULL);
        CHECK_EQ_INT(sdc_vae_encode(v, img, 8, 4, m, lv, &err), SDC_ERR_RANGE);
        CHECK_EQ_INT(sdc_vae_encode(v, img, INT64_MAX / 4, 8, m, lv, &err), SDC_ERR_RANGE);
        CHECK_EQ_INT(sdc_vae_encode(v, img, 1 << 20, 1 << 20, m, lv, &err), SDC_ERR_RANGE);
        CHECK_EQ_INT(sdc_vae_encode(v, NULL, 8, 8, m, lv, &err), SDC_ERR_INVALID_ARG);
        CHECK_EQ_INT(sdc_vae_encode(v, img, 8, 8, NULL, lv, &err), SDC_ERR_INVALID_ARG);
        CHECK_EQ_INT(sdc_vae_encode(v, img, 8, 8, m, NULL, &err), SDC_ERR_INVALID_ARG);
        CHECK_EQ_INT(sdc_vae_encode(NULL, img, 8, 8, m, lv, &err), SDC_ERR_INVALID_ARG);
        /* The smallest image (one latent pixel) and a 2 x 2 latent work. */
        CHECK_EQ_INT(sdc_vae_encode(v, img, 8, 8, m, lv, &err), SDC_OK);
        CHECK_EQ_INT(sdc_vae_encode(v, img, 16, 16, m, lv, &err), SDC_OK);
        for (int i = 0; i < 8 * 2 * 2; i++) CHECK(isfinite(m[i]) && lv[i] >= -30 && lv[i] <= 20);
    } else {
        CHECK(0);
    }
    sdc_vae_free(v);
    sdc_backend_destroy(be);
}

/* Peak backend memory of an encode is three activations of the first
 * level, every buffer is returned, and every allocation failure is reported
 * as SDC_ERR_NOMEM without leaking. */
static void test_memory_and_alloc_failures(void)
{
    char dir[1024];
    enc_golden_t g;
    sdc_error_t err = {0};
    sdc_vae_t *v = NULL;
    sdc_backend_t *real = cpu_backend(0);
    fault_be_t fb;
    tiny_vae_dir(dir, sizeof(dir));
    if (!real || enc_golden_open(&g) != 0) {
        CHECK(0);
        enc_golden_close(&g);
        if (real) sdc_backend_destroy(real);
        return;
    }
    fault_init(&fb, real);
    CHECK_EQ_INT(sdc_vae_load(&v, &fb.be, dir, &err), SDC_OK);
    if (!v || sdc_vae_load_encoder(v, &err) != SDC_OK) {
        CHECK(0);
        goto out;
    }
    float *m = malloc((size_t)g.n * sizeof(float)), *lv = malloc((size_t)g.n * sizeof(float));
    size_t weights_live = fb.live;
    fb.peak = fb.live;
    fb.n_allocs = 0;
    fb.fail_at = LONG_MAX;
    CHECK_EQ_INT(sdc_vae_encode(v, g.image, g.H, g.W, m, lv, &err), SDC_OK);
    CHECK(fb.live == weights_live);
    size_t first_level = (size_t)32 * (size_t)(g.H * g.W) * sizeof(float);
    CHECK_MSG(fb.peak - weights_live <= 3 * first_level, "peak %zu bytes > 3 x %zu",
              fb.peak - weights_live, first_level);
    long n_allocs = fb.n_allocs;
    CHECK(n_allocs > 4);
    /* The allocation sequence does not depend on the size: fail each one
     * on a small image. */
    for (long k = 0; k < n_allocs; k++) {
        fb.n_allocs = 0;
        fb.fail_at = k;
        err.msg[0] = '\0';
        CHECK_MSG(sdc_vae_encode(v, g.image, 16, 8, m, lv, &err) == SDC_ERR_NOMEM,
                  "allocation %ld", k);
        CHECK(strstr(err.msg, "out of memory") != NULL);
        CHECK_MSG(fb.live == weights_live, "allocation %ld leaked %zu bytes", k,
                  fb.live - weights_live);
    }
    fb.fail_at = -1;
    free(m);
    free(lv);
    sdc_vae_free(v);
    v = NULL;
    CHECK(fb.live == 0);
out:
    sdc_vae_free(v);
    enc_golden_close(&g);
    sdc_backend_destroy(real);
}

typedef struct {
    char dir[64], config[96], weights[128];
} temp_vae_t;

/* A VAE directory: config.json = json, and the tiny model's tensors whose
 * names start with prefix ("" for all of them). */
static int temp_vae(temp_vae_t *t, const char *json, const char *prefix)
{
    char vdir[1024], src[1100];
    sdc_st_file_t f;
    sdc_error_t err = {0};
    snprintf(t->dir, sizeof(t->dir), "/tmp/sdc_test_venc_XXXXXX");
    if (!mkdtemp(t->dir)) return -1;
    snprintf(t->config, sizeof(t->config), "%s/config.json", t->dir);
    snprintf(t->weights, sizeof(t->weights), "%s/diffusion_pytorch_model.safetensors", t->dir);
    FILE *cf = fopen(t->config, "w");
    if (!cf) return -1;
    fputs(json, cf);
    fclose(cf);
    tiny_vae_dir(vdir, sizeof(vdir));
    snprintf(src, sizeof(src), "%s/diffusion_pytorch_model.safetensors", vdir);
    if (sdc_st_open(&f, src, &err) != SDC_OK) return -1;
    const char **names = calloc(f.n_entries, sizeof(*names));
    sdc_tensor_t *ts = calloc(f.n_entries, sizeof(*ts));
    size_t n = 0;
    for (size_t i = 0; names && ts && i < f.n_entries; i++) {
        if (strncmp(f.entries[i].name, prefix, strlen(prefix)) != 0) continue;
        names[n] = f.entries[i].name;
        sdc_st_view(&f, &f.entries[i], &ts[n++]);
    }
    int rc = names && ts && sdc_st_write(t->weights, n, names, ts, &err) == SDC_OK ? 0 : -1;
    free(names);
    free(ts);
    sdc_st_close(&f);
    return rc;
}

static void temp_vae_remove(temp_vae_t *t)
{
    unlink(t->weights);
    unlink(t->config);
    rmdir(t->dir);
}

#define TINY_JSON(extra)                                                                    \
    "{\"_class_name\": \"AutoencoderKLHunyuanImage\", \"in_channels\": 3, "                 \
    "\"out_channels\": 3, \"latent_channels\": 8, \"block_out_channels\": [32, 32, 64, 64], " \
    "\"layers_per_block\": 1, \"spatial_compression_ratio\": 8, \"sample_size\": 256, "      \
    "\"scaling_factor\": 0.75289" extra "}"

/* A checkpoint without the encoder decodes, and says which tensor is
 * missing when image-to-image asks for the encoder; a config whose encoder
 * diffusers could not run is refused by name. */
static void test_encoder_weight_and_plan_errors(void)
{
    static const struct {
        const char *json, *prefix;
        sdc_status_t want;
        const char *msg;
    } cases[] = {
        {TINY_JSON(""), "decoder.", SDC_ERR_NOT_FOUND, "encoder.conv_in.weight"},
        {TINY_JSON(""), "", SDC_OK, ""},
        {TINY_JSON(", \"downsample_match_channel\": false"), "", SDC_ERR_UNSUPPORTED,
         "down_blocks.4"},
    };
    sdc_backend_t *be = cpu_backend(0);
    if (!be) {
        CHECK(0);
        return;
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        temp_vae_t t;
        sdc_vae_t *v = NULL;
        sdc_error_t err = {0};
        if (temp_vae(&t, cases[i].json, cases[i].prefix) != 0) {
            CHECK(0);
            temp_vae_remove(&t);
            continue;
        }
        CHECK_EQ_INT(sdc_vae_load(&v, be, t.dir, &err), SDC_OK);
        if (v) {
            sdc_status_t st = sdc_vae_load_encoder(v, &err);
            CHECK_MSG(st == cases[i].want, "case %zu: got %d (%s), want %d", i, (int)st, err.msg,
                      (int)cases[i].want);
            CHECK_MSG(strstr(err.msg, cases[i].msg) != NULL, "case %zu: '%s' not in '%s'", i,
                      cases[i].msg, err.msg);
            CHECK(sdc_vae_has_encoder(v) == (cases[i].want == SDC_OK));
            /* The decoder still works. */
            float z[8] = {0}, img[3 * 8 * 8];
            CHECK_EQ_INT(sdc_vae_decode(v, z, 1, 1, img, &err), SDC_OK);
        }
        sdc_vae_free(v);
        temp_vae_remove(&t);
    }
    sdc_backend_destroy(be);
}

int main(void)
{
    RUN(test_golden_encode);
    RUN(test_posterior_sample);
    RUN(test_encoder_on_request);
    RUN(test_bad_encode_args);
    RUN(test_memory_and_alloc_failures);
    RUN(test_encoder_weight_and_plan_errors);
    TEST_EXIT();
}
