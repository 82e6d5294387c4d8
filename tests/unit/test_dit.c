/*
 * test_dit.c: the DiT (HunyuanImageTransformer2DModel) against diffusers
 * goldens: each embedding module, one block of each kind, the head, and the
 * full forward with trimmed and untrimmed text; then the guarantees the
 * cluster relies on (splitting the blocks into stages and batching samples
 * change no bit), the centre-aligned RoPE switch, and config / weight errors.
 */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "golden.h"
#include "backend/backend.h"
#include "common/config.h"
#include "common/safetensors.h"
#include "model/dit.h"

#define TOL 1e-4           /* goldens: max |got - ref| <= TOL * max |ref| */
#define TOL_TRIM 1e-5      /* trimmed vs untrimmed text */
#define MODEL "tiny-hunyuanimage"
#define MODEL_DISTILLED "tiny-hunyuanimage-distilled"

/* ---- helpers -------------------------------------------------------------- */

/* SDC_TEST_BACKEND=cuda runs the goldens on the GPU (tests/gpu/run.sh);
 * n_threads then means nothing. */
static sdc_backend_t *make_backend_threads(int n_threads)
{
    const char *name = getenv("SDC_TEST_BACKEND");
    sdc_backend_config_t cfg = {.name = name && *name ? name : "cpu", .n_threads = n_threads};
    sdc_backend_t *be = NULL;
    sdc_error_t err = {0};
    if (sdc_backend_create(&cfg, &be, &err) != SDC_OK) {
        fprintf(stderr, "  backend: %s\n", err.msg);
        return NULL;
    }
    return be;
}

static sdc_backend_t *make_backend(void)
{
    return make_backend_threads(0);
}

static void transformer_dir(char *buf, size_t cap, const char *model)
{
    snprintf(buf, cap, "%s/%s/transformer", test_data_dir(), model);
}

static int total_blocks(const char *model)
{
    char dir[1024], path[1100];
    sdc_dit_config_t c;
    sdc_error_t err = {0};
    transformer_dir(dir, sizeof(dir), model);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    if (sdc_dit_config_load(&c, path, &err) != SDC_OK) {
        fprintf(stderr, "  %s\n", err.msg);
        return -1;
    }
    return sdc_dit_total_blocks(&c);
}

/* Loads blocks [a, b) of a tiny model; b < 0 means all the rest. */
static sdc_dit_t *load_range(sdc_backend_t *be, const char *model, int a, int b)
{
    char dir[1024];
    sdc_dit_t *m = NULL;
    sdc_error_t err = {0};
    transformer_dir(dir, sizeof(dir), model);
    if (b < 0) b = total_blocks(model);
    if (sdc_dit_load(&m, be, dir, a, b, &err) != SDC_OK) {
        fprintf(stderr, "  load %s [%d, %d): %s\n", model, a, b, err.msg);
        return NULL;
    }
    return m;
}

static uint8_t *mask_u8(const float *m, int64_t n)
{
    uint8_t *out = malloc((size_t)n);
    for (int64_t i = 0; out && i < n; i++) out[i] = m[i] != 0.0f;
    return out;
}

static int64_t count_u8(const uint8_t *m, int64_t n)
{
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) c += m[i] != 0;
    return c;
}

/* The inputs of a golden file (batch B). */
typedef struct {
    sdc_st_file_t f;
    int open;
    float *latent, *timestep, *text, *text_2, *guidance, *timestep_r;
    uint8_t *mask, *mask_2;
    int64_t B, C, H, W, n_text, d_text, n_text_2, d_text_2;
} golden_in_t;

static void golden_in_close(golden_in_t *g)
{
    free(g->latent);
    free(g->timestep);
    free(g->text);
    free(g->text_2);
    free(g->guidance);
    free(g->timestep_r);
    free(g->mask);
    free(g->mask_2);
    if (g->open) sdc_st_close(&g->f);
    memset(g, 0, sizeof(*g));
}

static int golden_in_open(golden_in_t *g, const char *file)
{
    int64_t sl[4], st[3], st2[3];
    memset(g, 0, sizeof(*g));
    if (golden_open(&g->f, file) != 0) return -1;
    g->open = 1;
    g->latent = golden_f32(&g->f, "latent", NULL, sl);
    g->timestep = golden_f32(&g->f, "timestep", NULL, NULL);
    g->text = golden_f32(&g->f, "text", NULL, st);
    g->text_2 = golden_f32(&g->f, "text_2", NULL, st2);
    float *m1 = golden_f32(&g->f, "text_mask", NULL, NULL);
    float *m2 = golden_f32(&g->f, "text_mask_2", NULL, NULL);
    if (sdc_st_find(&g->f, "guidance")) {
        g->guidance = golden_f32(&g->f, "guidance", NULL, NULL);
        g->timestep_r = golden_f32(&g->f, "timestep_r", NULL, NULL);
    }
    if (!g->latent || !g->timestep || !g->text || !g->text_2 || !m1 || !m2) {
        free(m1);
        free(m2);
        golden_in_close(g);
        return -1;
    }
    g->B = sl[0], g->C = sl[1], g->H = sl[2], g->W = sl[3];
    g->n_text = st[1], g->d_text = st[2], g->n_text_2 = st2[1], g->d_text_2 = st2[2];
    g->mask = mask_u8(m1, g->B * g->n_text);
    g->mask_2 = mask_u8(m2, g->B * g->n_text_2);
    free(m1);
    free(m2);
    return 0;
}

static void golden_in_sample(const golden_in_t *g, int b, int trim, sdc_dit_input_t *in)
{
    memset(in, 0, sizeof(*in));
    in->latent = g->latent + b * g->C * g->H * g->W;
    in->height = g->H;
    in->width = g->W;
    in->timestep = g->timestep[b];
    if (g->guidance) {
        in->guidance = g->guidance[b];
        in->timestep_r = g->timestep_r[b];
    }
    in->text = g->text + b * g->n_text * g->d_text;
    in->text_mask = g->mask + b * g->n_text;
    in->n_text = g->n_text;
    in->text_2 = g->text_2 + b * g->n_text_2 * g->d_text_2;
    in->text_mask_2 = g->mask_2 + b * g->n_text_2;
    in->n_text_2 = g->n_text_2;
    in->trim_text = trim;
}

static float *download(sdc_backend_t *be, const float *dev, int64_t n)
{
    float *h = malloc((size_t)n * sizeof(float));
    if (h) be->ops->download(be, h, dev, (size_t)n * sizeof(float));
    return h;
}

/* embed -> all blocks -> head; out: out_channels x H x W. */
static int forward(sdc_dit_t *m, const sdc_dit_input_t *in, float *out)
{
    sdc_dit_sample_t s;
    sdc_error_t err = {0};
    const int total = sdc_dit_total_blocks(sdc_dit_config(m));
    sdc_status_t st = sdc_dit_embed(m, in, &s, &err);
    if (st == SDC_OK) {
        st = sdc_dit_run_blocks(m, &s, 1, 0, total, &err);
        if (st == SDC_OK) st = sdc_dit_head(m, &s, out, &err);
        sdc_dit_sample_free(m, &s);
    }
    if (st != SDC_OK) fprintf(stderr, "  forward: %s\n", err.msg);
    return st == SDC_OK ? 0 : -1;
}

/* A sample on m's device with host contents (the receiving side of a stage);
 * mask: NULL or n_txt bytes. */
static int sample_upload(sdc_dit_t *m, sdc_backend_t *be, sdc_dit_sample_t *s, int64_t gh,
                         int64_t gw, int64_t n_txt, const float *x, const float *temb,
                         const uint8_t *mask)
{
    sdc_error_t err = {0};
    const int64_t h = sdc_dit_hidden(sdc_dit_config(m));
    if (sdc_dit_sample_alloc(m, s, gh, gw, n_txt, mask != NULL, &err) != SDC_OK) {
        fprintf(stderr, "  sample_alloc: %s\n", err.msg);
        return -1;
    }
    be->ops->upload(be, s->x, x, (size_t)((gh * gw + n_txt) * h) * sizeof(float));
    be->ops->upload(be, s->temb, temb, (size_t)h * sizeof(float));
    if (s->txt_mask) be->ops->upload(be, s->txt_mask, mask, (size_t)n_txt);
    return 0;
}

/* ---- configuration -------------------------------------------------------- */

static sdc_status_t config_text(const char *json, sdc_dit_config_t *c, sdc_error_t *err)
{
    sdc_json_t doc;
    sdc_status_t st = sdc_json_parse(&doc, json, strlen(json), "test config", err);
    if (st != SDC_OK) return st;
    st = sdc_dit_config_from_json(c, &doc, err);
    sdc_json_free(&doc);
    return st;
}

static void test_config_tiny(void)
{
    char dir[1024], path[1100];
    sdc_dit_config_t c;
    sdc_error_t err = {0};
    transformer_dir(dir, sizeof(dir), MODEL);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    CHECK_EQ_INT(sdc_dit_config_load(&c, path, &err), SDC_OK);
    CHECK_EQ_INT(c.in_channels, 8);
    CHECK_EQ_INT(c.out_channels, 8);
    CHECK_EQ_INT(c.num_attention_heads, 4);
    CHECK_EQ_INT(c.attention_head_dim, 16);
    CHECK_EQ_INT(sdc_dit_hidden(&c), 64);
    CHECK_EQ_INT(c.num_layers, 2);
    CHECK_EQ_INT(c.num_single_layers, 2);
    CHECK_EQ_INT(c.num_refiner_layers, 2);
    CHECK_EQ_INT(sdc_dit_total_blocks(&c), 4);
    CHECK(c.mlp_ratio == 4.0);
    CHECK_EQ_INT(c.patch_size[0], 1);
    CHECK_EQ_INT(c.patch_size[1], 1);
    CHECK_EQ_INT(c.text_embed_dim, 32);
    CHECK_EQ_INT(c.text_embed_2_dim, 24);
    CHECK(c.rope_theta == 256.0);
    CHECK_EQ_INT(c.rope_axes_dim[0], 8);
    CHECK_EQ_INT(c.rope_axes_dim[1], 8);
    CHECK_EQ_INT(c.guidance_embeds, 0);
    CHECK_EQ_INT(c.use_meanflow, 0);
    CHECK_EQ_INT(c.rope_centered, 0);

    transformer_dir(dir, sizeof(dir), MODEL_DISTILLED);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    CHECK_EQ_INT(sdc_dit_config_load(&c, path, &err), SDC_OK);
    CHECK_EQ_INT(c.guidance_embeds, 1);
    CHECK_EQ_INT(c.use_meanflow, 1);
}

static void test_config_defaults(void)
{
    sdc_dit_config_t c;
    sdc_error_t err = {0};
    /* The diffusers constructor defaults (HunyuanImage-2.1 itself). */
    CHECK_EQ_INT(config_text("{\"_class_name\": \"HunyuanImageTransformer2DModel\"}", &c, &err),
                 SDC_OK);
    CHECK_EQ_INT(c.in_channels, 64);
    CHECK_EQ_INT(c.out_channels, 64);
    CHECK_EQ_INT(sdc_dit_hidden(&c), 3584);
    CHECK_EQ_INT(c.num_layers, 20);
    CHECK_EQ_INT(c.num_single_layers, 40);
    CHECK_EQ_INT(c.num_refiner_layers, 2);
    CHECK_EQ_INT(c.patch_size[0], 1);
    CHECK_EQ_INT(c.text_embed_dim, 3584);
    CHECK_EQ_INT(c.text_embed_2_dim, 0);
    CHECK_EQ_INT(c.rope_axes_dim[0], 64);
    CHECK_EQ_INT(c.rope_axes_dim[1], 64);
    CHECK(c.rope_theta == 256.0);
    /* out_channels null -> in_channels; the Seedream RoPE switch. */
    CHECK_EQ_INT(config_text("{\"_class_name\": \"HunyuanImageTransformer2DModel\", "
                             "\"in_channels\": 16, \"out_channels\": null, "
                             "\"text_embed_2_dim\": null, \"sdc_rope_centered\": true, "
                             "\"sdc_rope_base_grid\": [64, 48]}",
                             &c, &err),
                 SDC_OK);
    CHECK_EQ_INT(c.out_channels, 16);
    CHECK_EQ_INT(c.text_embed_2_dim, 0);
    CHECK_EQ_INT(c.rope_centered, 1);
    CHECK_EQ_INT(c.rope_base_grid[0], 64);
    CHECK_EQ_INT(c.rope_base_grid[1], 48);
}

static void test_config_errors(void)
{
    static const struct {
        const char *extra; /* keys overriding a valid tiny config */
        sdc_status_t code;
        const char *needle; /* must appear in the message */
    } cases[] = {
        {"\"num_attention_heads\": 0", SDC_ERR_RANGE, "num_attention_heads"},
        {"\"num_attention_heads\": -3", SDC_ERR_RANGE, "num_attention_heads"},
        {"\"in_channels\": 0", SDC_ERR_RANGE, "in_channels"},
        {"\"rope_axes_dim\": [8, 6]", SDC_ERR_RANGE, "rope_axes_dim"},
        {"\"rope_axes_dim\": [7, 9]", SDC_ERR_RANGE, "rope_axes_dim"},
        {"\"rope_axes_dim\": [4, 4, 8]", SDC_ERR_INVALID_ARG, "both 3 entries"},
        {"\"attention_head_dim\": 15, \"rope_axes_dim\": [8, 7]", SDC_ERR_RANGE,
         "attention_head_dim"},
        {"\"patch_size\": [1, 1, 1]", SDC_ERR_INVALID_ARG, "both 3 entries"},
        {"\"patch_size\": [0, 1]", SDC_ERR_RANGE, "patch_size"},
        {"\"mlp_ratio\": 0", SDC_ERR_RANGE, "mlp_ratio"},
        {"\"qk_norm\": \"layer_norm\"", SDC_ERR_UNSUPPORTED, "qk_norm"},
        {"\"num_layers\": 0, \"num_single_layers\": 0", SDC_ERR_RANGE, "num_layers"},
        {"\"num_attention_heads\": 100000", SDC_ERR_RANGE, "num_attention_heads"},
        {"\"num_attention_heads\": 1024, \"attention_head_dim\": 128", SDC_ERR_RANGE,
         "exceeds"},
        {"\"rope_theta\": -1", SDC_ERR_RANGE, "rope_theta"},
        {"\"sdc_rope_centered\": true", SDC_ERR_FORMAT, "sdc_rope_base_grid"},
        {"\"sdc_rope_centered\": true, \"sdc_rope_base_grid\": [0, 4]", SDC_ERR_RANGE,
         "sdc_rope_base_grid"},
        {"\"sdc_rope_centered\": true, \"sdc_rope_base_grid\": [4]", SDC_ERR_UNSUPPORTED,
         "sdc_rope_base_grid"},
    };
    /* The case's keys come first: cJSON finds the first of duplicate keys. */
    const char *rest = "\"num_attention_heads\": 4, \"attention_head_dim\": 16, "
                       "\"rope_axes_dim\": [8, 8]}";
    char json[1024];
    sdc_dit_config_t c;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sdc_error_t err = {0};
        snprintf(json, sizeof(json),
                 "{\"_class_name\": \"HunyuanImageTransformer2DModel\", %s, %s",
                 cases[i].extra, rest);
        sdc_status_t st = config_text(json, &c, &err);
        CHECK_MSG(st == cases[i].code, "%s: got status %d, want %d (%s)", cases[i].extra,
                  (int)st, (int)cases[i].code, err.msg);
        CHECK_MSG(strstr(err.msg, cases[i].needle) != NULL, "%s: message '%s' lacks '%s'",
                  cases[i].extra, err.msg, cases[i].needle);
    }
    sdc_error_t err = {0};
    CHECK_EQ_INT(config_text("{\"_class_name\": \"FluxTransformer2DModel\"}", &c, &err),
                 SDC_ERR_UNSUPPORTED);
    CHECK(strstr(err.msg, "FluxTransformer2DModel") != NULL);
    CHECK_EQ_INT(config_text("{\"in_channels\": 8}", &c, &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "_class_name") != NULL);
    /* A wrong type is the getter's error, naming the key. */
    CHECK(config_text("{\"_class_name\": \"HunyuanImageTransformer2DModel\", "
                      "\"num_layers\": \"two\"}", &c, &err) != SDC_OK);
    CHECK(strstr(err.msg, "num_layers") != NULL);
}

/* ---- RoPE ----------------------------------------------------------------- */

static int tiny_config(sdc_dit_config_t *c)
{
    char dir[1024], path[1100];
    sdc_error_t err = {0};
    transformer_dir(dir, sizeof(dir), MODEL);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    if (sdc_dit_config_load(c, path, &err) == SDC_OK) return 0;
    fprintf(stderr, "  %s\n", err.msg);
    return -1;
}

static void test_rope_golden(void)
{
    sdc_dit_config_t c;
    sdc_st_file_t f;
    sdc_error_t err = {0};
    if (tiny_config(&c) != 0 || golden_open(&f, "dit_modules.safetensors") != 0) {
        CHECK(0);
        return;
    }
    int64_t shape[2];
    float *rc = golden_f32(&f, "rope_cos", NULL, shape);
    float *rs = golden_f32(&f, "rope_sin", NULL, NULL);
    float *cs = malloc(96 * 16 * sizeof(float)), *sn = malloc(96 * 16 * sizeof(float));
    CHECK(rc && rs && shape[0] == 96 && shape[1] == 16);
    CHECK_EQ_INT(sdc_dit_rope_tables(&c, 8, 12, cs, sn, &err), SDC_OK);
    if (rc && rs) {
        CHECK(test_close("rope_cos", cs, rc, 96 * 16, TOL));
        CHECK(test_close("rope_sin", sn, rs, 96 * 16, TOL));
    }
    free(rc);
    free(rs);
    free(cs);
    free(sn);
    sdc_st_close(&f);
}

/* Centre-aligned RoPE: identity at the base grid, centres aligned and the
 * extent scaled otherwise (docs/rope.md). */
static void test_rope_centered(void)
{
    sdc_dit_config_t c, cc;
    sdc_error_t err = {0};
    if (tiny_config(&c) != 0) {
        CHECK(0);
        return;
    }
    const int64_t n = 8 * 12 * 16;
    float *a = malloc(4 * n * sizeof(float));
    float *as = a + n, *b = a + 2 * n, *bs = a + 3 * n;
    cc = c;
    cc.rope_centered = 1;
    cc.rope_base_grid[0] = 8;
    cc.rope_base_grid[1] = 12;
    CHECK_EQ_INT(sdc_dit_rope_tables(&c, 8, 12, a, as, &err), SDC_OK);
    CHECK_EQ_INT(sdc_dit_rope_tables(&cc, 8, 12, b, bs, &err), SDC_OK);
    CHECK(memcmp(a, b, (size_t)n * sizeof(float)) == 0);
    CHECK(memcmp(as, bs, (size_t)n * sizeof(float)) == 0);

    float pos[64];
    cc.rope_base_grid[0] = 9;
    cc.rope_base_grid[1] = 30;
    /* Odd n: the centre token sits at the base grid's centre (B - 1) / 2. */
    CHECK_EQ_INT(sdc_dit_rope_positions(&cc, 0, 5, pos, &err), SDC_OK);
    CHECK(fabsf(pos[2] - 4.0f) < 1e-6f);
    CHECK(fabsf(pos[0] - (0.5f * 9.0f / 5.0f - 0.5f)) < 1e-6f);
    /* Even n: the two middle tokens straddle it; every pair is symmetric. */
    const int64_t ns[3] = {6, 18, 40};
    for (int k = 0; k < 3; k++) {
        CHECK_EQ_INT(sdc_dit_rope_positions(&cc, 1, ns[k], pos, &err), SDC_OK);
        for (int64_t i = 0; i < ns[k]; i++)
            CHECK(fabsf(pos[i] + pos[ns[k] - 1 - i] - 29.0f) < 1e-5f);
        /* Uniform spacing B / n: the extent is scaled to the base grid. */
        CHECK(fabsf((pos[ns[k] - 1] - pos[0]) - 30.0f * (float)(ns[k] - 1) / (float)ns[k]) <
              1e-5f);
    }
    /* The tables use those positions: column 0 is cos(pos_row * 1). */
    CHECK_EQ_INT(sdc_dit_rope_tables(&cc, 5, 6, a, as, &err), SDC_OK);
    CHECK_EQ_INT(sdc_dit_rope_positions(&cc, 0, 5, pos, &err), SDC_OK);
    for (int r = 0; r < 5; r++) {
        CHECK(a[(r * 6 + 3) * 16] == cosf(pos[r]));
        CHECK(as[(r * 6 + 3) * 16 + 1] == sinf(pos[r]));
    }
    CHECK_EQ_INT(sdc_dit_rope_positions(&cc, 2, 5, pos, &err), SDC_ERR_INVALID_ARG);
    free(a);
}

/* ---- modules -------------------------------------------------------------- */

/* Embedding stage vs the golden submodule outputs, untrimmed then trimmed. */
static void check_embed(sdc_dit_t *m, sdc_backend_t *be, const golden_in_t *g,
                        const sdc_st_file_t *f, int trim)
{
    sdc_dit_input_t in;
    sdc_dit_sample_t s;
    sdc_error_t err = {0};
    const int64_t h = 64, n_img = g->H * g->W;
    const int64_t nv = count_u8(g->mask, g->n_text), nbv = count_u8(g->mask_2, g->n_text_2);
    const int64_t nbp = g->n_text_2 - nbv;
    float *temb = golden_f32(f, "temb", NULL, NULL);
    float *x_embed = golden_f32(f, "x_embed", NULL, NULL);
    float *ctx = golden_f32(f, "context_embed", NULL, NULL);
    float *ctx2 = golden_f32(f, "context_embed_2", NULL, NULL);
    float *enc = golden_f32(f, "encoder_hidden", NULL, NULL);
    float *enc_mask = golden_f32(f, "encoder_mask", NULL, NULL);
    golden_in_sample(g, 0, trim, &in);
    CHECK_EQ_INT(sdc_dit_embed(m, &in, &s, &err), SDC_OK);
    if (!temb || !x_embed || !ctx || !ctx2 || !enc || !enc_mask || !s.x) {
        CHECK(0);
        goto out;
    }
    CHECK_EQ_INT(s.grid_h, g->H);
    CHECK_EQ_INT(s.grid_w, g->W);
    CHECK_EQ_INT(s.n_txt, trim ? nbv + nv : g->n_text + g->n_text_2);
    CHECK(trim ? s.txt_mask == NULL : s.txt_mask != NULL);
    float *x = download(be, s.x, (n_img + s.n_txt) * h);
    float *t = download(be, s.temb, h);
    float *txt = x + n_img * h;
    CHECK(test_close("temb", t, temb, h, TOL));
    CHECK(test_close("x_embed", x, x_embed, n_img * h, TOL));

    /* context_embed in the blocks' order: valid rows after the valid ByT5
     * rows, padded rows (untrimmed) after the padded ByT5 rows. */
    float *want = malloc((size_t)(g->n_text * h) * sizeof(float));
    float *got = malloc((size_t)(g->n_text * h) * sizeof(float));
    int64_t k = 0;
    for (int pass = 1; want && got && pass >= 0; pass--) {
        int64_t dst = pass ? nbv : g->n_text_2 + nv;
        for (int64_t i = 0; i < g->n_text; i++) {
            if (g->mask[i] != pass || (!pass && trim)) continue;
            memcpy(want + k * h, ctx + i * h, (size_t)h * sizeof(float));
            memcpy(got + k * h, txt + (dst++) * h, (size_t)h * sizeof(float));
            k++;
        }
    }
    CHECK(want && got && test_close("context_embed", got, want, k * h, TOL));
    free(want);
    free(got);
    CHECK(test_close("context_embed_2 (valid rows)", txt, ctx2, nbv * h, TOL));
    /* The reordered text as the blocks see it. */
    CHECK(test_close("encoder_hidden", txt, enc, s.n_txt * h, TOL));
    if (!trim) {
        CHECK(test_close("context_embed_2 (padded rows)", txt + (nbv + nv) * h, ctx2 + nbv * h,
                         nbp * h, TOL));
        uint8_t *mk = malloc((size_t)s.n_txt);
        be->ops->download(be, mk, s.txt_mask, (size_t)s.n_txt);
        for (int64_t i = 0; i < s.n_txt; i++) CHECK(mk[i] == (enc_mask[i] != 0.0f));
        free(mk);
    }
    free(x);
    free(t);
out:
    sdc_dit_sample_free(m, &s);
    free(temb);
    free(x_embed);
    free(ctx);
    free(ctx2);
    free(enc);
    free(enc_mask);
}

static void test_embed_modules(void)
{
    sdc_backend_t *be = make_backend();
    sdc_dit_t *m = be ? load_range(be, MODEL, 0, 1) : NULL;
    golden_in_t g;
    if (!m || golden_in_open(&g, "dit_modules.safetensors") != 0) {
        CHECK(0);
        sdc_dit_free(m);
        sdc_backend_destroy(be);
        return;
    }
    check_embed(m, be, &g, &g.f, 0);
    check_embed(m, be, &g, &g.f, 1);
    golden_in_close(&g);
    sdc_dit_free(m);
    sdc_backend_destroy(be);
}

/* One block on the golden inputs (x_embed, encoder_hidden, temb, mask), from
 * a stage holding only that block. */
static void check_block(int block, const char *img_name, const char *txt_name)
{
    sdc_backend_t *be = make_backend();
    sdc_dit_t *m = be ? load_range(be, MODEL, block, block + 1) : NULL;
    sdc_st_file_t f;
    if (!m || golden_open(&f, "dit_modules.safetensors") != 0) {
        CHECK(0);
        sdc_dit_free(m);
        sdc_backend_destroy(be);
        return;
    }
    const int64_t h = 64, n_img = 96, n_txt = 56;
    float *x_embed = golden_f32(&f, "x_embed", NULL, NULL);
    float *enc = golden_f32(&f, "encoder_hidden", NULL, NULL);
    float *temb = golden_f32(&f, "temb", NULL, NULL);
    float *enc_mask = golden_f32(&f, "encoder_mask", NULL, NULL);
    float *ref_img = golden_f32(&f, img_name, NULL, NULL);
    float *ref_txt = golden_f32(&f, txt_name, NULL, NULL);
    float *x = malloc((size_t)((n_img + n_txt) * h) * sizeof(float));
    uint8_t *mask = enc_mask ? mask_u8(enc_mask, n_txt) : NULL;
    sdc_dit_sample_t s = {0};
    sdc_error_t err = {0};
    if (!x_embed || !enc || !temb || !mask || !ref_img || !ref_txt || !x) {
        CHECK(0);
        goto out;
    }
    memcpy(x, x_embed, (size_t)(n_img * h) * sizeof(float));
    memcpy(x + n_img * h, enc, (size_t)(n_txt * h) * sizeof(float));
    CHECK(sample_upload(m, be, &s, 8, 12, n_txt, x, temb, mask) == 0);
    CHECK_EQ_INT(sdc_dit_run_blocks(m, &s, 1, block, block + 1, &err), SDC_OK);
    be->ops->download(be, x, s.x, (size_t)((n_img + n_txt) * h) * sizeof(float));
    CHECK(test_close(img_name, x, ref_img, n_img * h, TOL));
    CHECK(test_close(txt_name, x + n_img * h, ref_txt, n_txt * h, TOL));
out:
    sdc_dit_sample_free(m, &s);
    free(x_embed);
    free(enc);
    free(temb);
    free(enc_mask);
    free(ref_img);
    free(ref_txt);
    free(x);
    free(mask);
    sdc_st_close(&f);
    sdc_dit_free(m);
    sdc_backend_destroy(be);
}

static void test_block_dual(void)
{
    check_block(0, "block0_out_img", "block0_out_txt");
}

static void test_block_single(void)
{
    check_block(2, "single0_out_img", "single0_out_txt"); /* 2 dual blocks come first */
}

static void test_head(void)
{
    sdc_backend_t *be = make_backend();
    const int total = total_blocks(MODEL);
    sdc_dit_t *m = be ? load_range(be, MODEL, total - 1, total) : NULL;
    sdc_st_file_t f;
    if (!m || golden_open(&f, "dit_modules.safetensors") != 0) {
        CHECK(0);
        sdc_dit_free(m);
        sdc_backend_destroy(be);
        return;
    }
    float *x_embed = golden_f32(&f, "x_embed", NULL, NULL);
    float *temb = golden_f32(&f, "temb", NULL, NULL);
    float *ref = golden_f32(&f, "head_out", NULL, NULL);
    float *out = malloc(8 * 8 * 12 * sizeof(float));
    sdc_dit_sample_t s = {0};
    sdc_error_t err = {0};
    /* The head reads image rows only: a sample without text will do. */
    if (x_embed && temb && ref && out &&
        sample_upload(m, be, &s, 8, 12, 0, x_embed, temb, NULL) == 0) {
        CHECK_EQ_INT(sdc_dit_head(m, &s, out, &err), SDC_OK);
        CHECK(test_close("head_out", out, ref, 8 * 8 * 12, TOL));
    } else {
        CHECK(0);
    }
    sdc_dit_sample_free(m, &s);
    free(x_embed);
    free(temb);
    free(ref);
    free(out);
    sdc_st_close(&f);
    sdc_dit_free(m);
    sdc_backend_destroy(be);
}

/* ---- full forward --------------------------------------------------------- */

static void check_forward(const char *model, const char *file)
{
    sdc_backend_t *be = make_backend();
    sdc_dit_t *m = be ? load_range(be, model, 0, -1) : NULL;
    golden_in_t g;
    if (!m || golden_in_open(&g, file) != 0) {
        CHECK(0);
        sdc_dit_free(m);
        sdc_backend_destroy(be);
        return;
    }
    const int64_t n = g.C * g.H * g.W;
    float *ref = golden_f32(&g.f, "out", NULL, NULL);
    float *out = malloc(2 * (size_t)n * sizeof(float));
    for (int b = 0; ref && out && b < g.B; b++) {
        char what[128];
        sdc_dit_input_t in;
        for (int trim = 0; trim < 2; trim++) {
            golden_in_sample(&g, b, trim, &in);
            CHECK(forward(m, &in, out + trim * n) == 0);
            snprintf(what, sizeof(what), "%s sample %d %s", file, b,
                     trim ? "trimmed" : "untrimmed");
            CHECK(test_close(what, out + trim * n, ref + b * n, n, TOL));
        }
        snprintf(what, sizeof(what), "%s sample %d trimmed vs untrimmed", file, b);
        CHECK(test_close(what, out + n, out, n, TOL_TRIM));
    }
    CHECK(ref && out);
    free(ref);
    free(out);
    golden_in_close(&g);
    sdc_dit_free(m);
    sdc_backend_destroy(be);
}

static void test_forward(void)
{
    check_forward(MODEL, "dit_forward.safetensors");
}

static void test_forward_distilled(void)
{
    check_forward(MODEL_DISTILLED, "dit_forward_distilled.safetensors");
}

/* Token 0 padded: diffusers' refiner still lets valid queries attend to it,
 * so trimmed mode must keep it as a refiner key; both modes agree. */
static void test_forward_token0_padded(void)
{
    sdc_backend_t *be = make_backend();
    sdc_dit_t *m = be ? load_range(be, MODEL, 0, -1) : NULL;
    golden_in_t g;
    if (!m || golden_in_open(&g, "dit_forward.safetensors") != 0) {
        CHECK(0);
        sdc_dit_free(m);
        sdc_backend_destroy(be);
        return;
    }
    const int64_t n = g.C * g.H * g.W;
    float *out = malloc(3 * (size_t)n * sizeof(float));
    sdc_dit_input_t in;
    g.mask[0] = 0;
    for (int trim = 0; out && trim < 2; trim++) {
        golden_in_sample(&g, 0, trim, &in);
        CHECK(forward(m, &in, out + trim * n) == 0);
    }
    /* Dropping token 0 outright changes the result (the check has teeth). */
    memmove(g.text, g.text + g.d_text, (size_t)((g.n_text - 1) * g.d_text) * sizeof(float));
    memmove(g.mask, g.mask + 1, (size_t)(g.n_text - 1));
    golden_in_sample(&g, 0, 1, &in);
    in.n_text = g.n_text - 1;
    CHECK(out && forward(m, &in, out + 2 * n) == 0);
    if (out) {
        CHECK(test_close("token 0 padded: trimmed vs untrimmed", out + n, out, n, TOL_TRIM));
        double worst = 0, maxref = 0;
        for (int64_t i = 0; i < n; i++) {
            worst = fmax(worst, fabs((double)out[2 * n + i] - out[i]));
            maxref = fmax(maxref, fabs((double)out[i]));
        }
        CHECK_MSG(worst > 1e-3 * maxref, "dropping token 0 changed the output by only %g",
                  worst);
    }
    free(out);
    golden_in_close(&g);
    sdc_dit_free(m);
    sdc_backend_destroy(be);
}

/* ---- determinism ---------------------------------------------------------- */

static int bits_equal(const char *what, const float *a, const float *b, int64_t n)
{
    if (memcmp(a, b, (size_t)n * sizeof(float)) == 0) return 1;
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
            fprintf(stderr, "  %s: element %lld differs: %a vs %a\n", what, (long long)i, a[i],
                    b[i]);
            break;
        }
    return 0;
}

/* Moves a sample from stage a's device to stage b's, as the cluster does. */
static int transfer(sdc_backend_t *be_a, sdc_dit_t *a, sdc_dit_sample_t *sa,
                    sdc_backend_t *be_b, sdc_dit_t *b, sdc_dit_sample_t *sb)
{
    const int64_t h = sdc_dit_hidden(sdc_dit_config(a));
    const int64_t rows = sa->n_img + sa->n_txt;
    float *x = download(be_a, sa->x, rows * h);
    float *t = download(be_a, sa->temb, h);
    uint8_t *mask = sa->txt_mask ? malloc((size_t)sa->n_txt) : NULL;
    if (mask) be_a->ops->download(be_a, mask, sa->txt_mask, (size_t)sa->n_txt);
    int rc = x && t ? sample_upload(b, be_b, sb, sa->grid_h, sa->grid_w, sa->n_txt, x, t, mask)
                    : -1;
    free(x);
    free(t);
    free(mask);
    sdc_dit_sample_free(a, sa);
    return rc;
}

/* Every split point, with the two stages on backends of different thread
 * counts (machines differ), gives the bits of the unsplit forward. */
static void test_split_determinism(void)
{
    sdc_backend_t *be = make_backend(), *be1 = make_backend_threads(1);
    sdc_dit_t *full = be ? load_range(be, MODEL, 0, -1) : NULL;
    golden_in_t g;
    if (!full || !be1 || golden_in_open(&g, "dit_forward.safetensors") != 0) {
        CHECK(0);
        sdc_dit_free(full);
        sdc_backend_destroy(be);
        sdc_backend_destroy(be1);
        return;
    }
    const int total = sdc_dit_total_blocks(sdc_dit_config(full));
    const int64_t n = g.C * g.H * g.W;
    float *ref = malloc(4 * (size_t)n * sizeof(float)), *out = malloc((size_t)n * sizeof(float));
    sdc_dit_input_t in;
    for (int c = 0; c < 4; c++) { /* (sample, trim) pairs */
        golden_in_sample(&g, c / 2, c % 2, &in);
        CHECK(forward(full, &in, ref + c * n) == 0);
    }
    for (int k = 1; k < total; k++) {
        sdc_dit_t *a = load_range(be1, MODEL, 0, k), *b = load_range(be, MODEL, k, total);
        CHECK(a && b);
        for (int c = 0; a && b && c < 4; c++) {
            sdc_dit_sample_t sa, sb = {0};
            sdc_error_t err = {0};
            char what[64];
            golden_in_sample(&g, c / 2, c % 2, &in);
            CHECK_EQ_INT(sdc_dit_embed(a, &in, &sa, &err), SDC_OK);
            CHECK_EQ_INT(sdc_dit_run_blocks(a, &sa, 1, 0, k, &err), SDC_OK);
            CHECK(transfer(be1, a, &sa, be, b, &sb) == 0);
            CHECK_EQ_INT(sdc_dit_run_blocks(b, &sb, 1, k, total, &err), SDC_OK);
            CHECK_EQ_INT(sdc_dit_head(b, &sb, out, &err), SDC_OK);
            sdc_dit_sample_free(b, &sb);
            snprintf(what, sizeof(what), "split at %d, case %d", k, c);
            CHECK(bits_equal(what, out, ref + c * n, n));
        }
        sdc_dit_free(a);
        sdc_dit_free(b);
    }
    free(ref);
    free(out);
    golden_in_close(&g);
    sdc_dit_free(full);
    sdc_backend_destroy(be);
    sdc_backend_destroy(be1);
}

/* A sample's blocks output is the same bits alone or in a micro-batch, with
 * neighbours of other sizes before and after it (scratch grows mid-call). */
static void test_batch_independence(void)
{
    sdc_backend_t *be = make_backend();
    sdc_dit_t *m = be ? load_range(be, MODEL, 0, -1) : NULL;
    golden_in_t g;
    if (!m || golden_in_open(&g, "dit_forward.safetensors") != 0) {
        CHECK(0);
        sdc_dit_free(m);
        sdc_backend_destroy(be);
        return;
    }
    const int total = sdc_dit_total_blocks(sdc_dit_config(m));
    /* A third, larger sample: a 16 x 20 latent of deterministic values. */
    const int64_t big_h = 16, big_w = 20;
    float *big = malloc((size_t)(g.C * big_h * big_w) * sizeof(float));
    uint32_t r = 12345;
    for (int64_t i = 0; big && i < g.C * big_h * big_w; i++) {
        r = r * 1664525u + 1013904223u;
        big[i] = (float)((double)(r >> 8) / 16777216.0 * 2.0 - 1.0);
    }
    sdc_dit_input_t ins[3];
    golden_in_sample(&g, 0, 0, &ins[0]);
    golden_in_sample(&g, 1, 1, &ins[1]);
    golden_in_sample(&g, 1, 0, &ins[2]);
    ins[2].latent = big;
    ins[2].height = big_h;
    ins[2].width = big_w;
    ins[2].timestep = 123.0f;

    sdc_dit_sample_t alone[3], batch[3];
    sdc_error_t err = {0};
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(sdc_dit_embed(m, &ins[i], &alone[i], &err), SDC_OK);
        CHECK_EQ_INT(sdc_dit_run_blocks(m, &alone[i], 1, 0, total, &err), SDC_OK);
    }
    /* Batched in the order 1, 2, 0 (small, large, small). */
    static const int order[3] = {1, 2, 0};
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(sdc_dit_embed(m, &ins[order[i]], &batch[i], &err), SDC_OK);
    CHECK_EQ_INT(sdc_dit_run_blocks(m, batch, 3, 0, total, &err), SDC_OK);
    for (int i = 0; i < 3; i++) {
        const sdc_dit_sample_t *a = &alone[order[i]], *b = &batch[i];
        const int64_t cnt = (a->n_img + a->n_txt) * 64;
        float *xa = download(be, a->x, cnt), *xb = download(be, b->x, cnt);
        char what[64];
        snprintf(what, sizeof(what), "sample %d alone vs batched", order[i]);
        CHECK(a->n_txt == b->n_txt && xa && xb && bits_equal(what, xa, xb, cnt));
        free(xa);
        free(xb);
    }
    for (int i = 0; i < 3; i++) {
        sdc_dit_sample_free(m, &alone[i]);
        sdc_dit_sample_free(m, &batch[i]);
    }
    free(big);
    golden_in_close(&g);
    sdc_dit_free(m);
    sdc_backend_destroy(be);
}

/* ---- errors --------------------------------------------------------------- */

static void test_stage_errors(void)
{
    sdc_backend_t *be = make_backend();
    const int total = total_blocks(MODEL);
    sdc_dit_t *a = be ? load_range(be, MODEL, 0, 1) : NULL;
    sdc_dit_t *b = be ? load_range(be, MODEL, 1, total) : NULL;
    golden_in_t g;
    if (!a || !b || golden_in_open(&g, "dit_forward.safetensors") != 0) {
        CHECK(0);
        sdc_dit_free(a);
        sdc_dit_free(b);
        sdc_backend_destroy(be);
        return;
    }
    sdc_dit_input_t in;
    sdc_dit_sample_t s;
    sdc_error_t err = {0};
    float *out = malloc((size_t)(g.C * g.H * g.W) * sizeof(float));
    golden_in_sample(&g, 0, 1, &in);
    CHECK_EQ_INT(sdc_dit_embed(a, &in, &s, &err), SDC_OK);
    CHECK_EQ_INT(sdc_dit_run_blocks(a, &s, 1, 0, 2, &err), SDC_ERR_RANGE);
    CHECK(strstr(err.msg, "[0, 1)") != NULL);
    CHECK_EQ_INT(sdc_dit_run_blocks(a, &s, 1, 1, 2, &err), SDC_ERR_RANGE);
    CHECK_EQ_INT(sdc_dit_run_blocks(a, &s, 1, 1, 0, &err), SDC_ERR_RANGE);
    CHECK_EQ_INT(sdc_dit_run_blocks(a, &s, 1, 1, 1, &err), SDC_OK); /* empty: no-op */
    CHECK_EQ_INT(sdc_dit_run_blocks(a, &s, 1, 0, 1, &err), SDC_OK);
    CHECK_EQ_INT(sdc_dit_head(a, &s, out, &err), SDC_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "head") != NULL);
    sdc_dit_sample_free(a, &s);

    sdc_dit_sample_t s2 = {.x = (float *)1};
    CHECK_EQ_INT(sdc_dit_embed(b, &in, &s2, &err), SDC_ERR_INVALID_ARG);
    CHECK(s2.x == NULL && strstr(err.msg, "embedders") != NULL);

    /* Bad inputs to embed leave no sample behind. */
    sdc_dit_input_t bad = in;
    uint8_t zeros[64] = {0};
    bad.text_mask = zeros;
    CHECK_EQ_INT(sdc_dit_embed(a, &bad, &s, &err), SDC_ERR_INVALID_ARG);
    CHECK(s.x == NULL && strstr(err.msg, "text_mask") != NULL);
    bad = in;
    bad.height = 0;
    CHECK_EQ_INT(sdc_dit_embed(a, &bad, &s, &err), SDC_ERR_INVALID_ARG);
    bad = in;
    bad.latent = NULL;
    CHECK_EQ_INT(sdc_dit_embed(a, &bad, &s, &err), SDC_ERR_INVALID_ARG);
    bad = in;
    bad.timestep = NAN;
    CHECK_EQ_INT(sdc_dit_embed(a, &bad, &s, &err), SDC_ERR_INVALID_ARG);

    /* Broken sample headers are refused before any op runs. */
    CHECK_EQ_INT(sdc_dit_sample_alloc(b, &s, 8, 12, 4, 0, &err), SDC_OK);
    s.n_img = 95;
    CHECK_EQ_INT(sdc_dit_run_blocks(b, &s, 1, 1, total, &err), SDC_ERR_INVALID_ARG);
    s.n_img = 96;
    CHECK_EQ_INT(sdc_dit_sample_alloc(b, &s2, 0, 12, 4, 0, &err), SDC_ERR_RANGE);
    sdc_dit_sample_free(b, &s);

    /* Block ranges a model does not have. */
    char dir[1024];
    sdc_dit_t *m = (sdc_dit_t *)1;
    transformer_dir(dir, sizeof(dir), MODEL);
    CHECK_EQ_INT(sdc_dit_load(&m, be, dir, 2, 1, &err), SDC_ERR_RANGE);
    CHECK(m == NULL);
    CHECK_EQ_INT(sdc_dit_load(&m, be, dir, 0, total + 1, &err), SDC_ERR_RANGE);
    CHECK_EQ_INT(sdc_dit_load(&m, be, dir, -1, 1, &err), SDC_ERR_RANGE);
    free(out);
    golden_in_close(&g);
    sdc_dit_free(a);
    sdc_dit_free(b);
    sdc_backend_destroy(be);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

/* Tensors that replace (or add to) the tiny model's in a temporary dir. */
typedef struct {
    const char *name;
    sdc_tensor_t t;
} replacement_t;

/* A temporary transformer dir: config.json from text, and the tiny model's
 * tensors except `skip` (NULL: none), with n_rep replacements. Returns 0 on
 * success. */
static int make_dir_with(char *dir, size_t cap, const char *config, const char *skip,
                         const replacement_t *rep, size_t n_rep)
{
    char src[1024], path[1200];
    sdc_st_file_t f;
    sdc_error_t err = {0};
    snprintf(dir, cap, "/tmp/sdc_test_dit_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    snprintf(path, sizeof(path), "%s/config.json", dir);
    FILE *fp = fopen(path, "w");
    if (!fp) return -1;
    fputs(config, fp);
    fclose(fp);
    transformer_dir(src, sizeof(src), MODEL);
    snprintf(path, sizeof(path), "%s/diffusion_pytorch_model.safetensors", src);
    if (sdc_st_open(&f, path, &err) != SDC_OK) return -1;
    const char **names = malloc((f.n_entries + n_rep) * sizeof(*names));
    sdc_tensor_t *ts = malloc((f.n_entries + n_rep) * sizeof(*ts));
    size_t n = 0;
    for (size_t i = 0; names && ts && i < f.n_entries; i++) {
        int replaced = skip && strcmp(f.entries[i].name, skip) == 0;
        for (size_t r = 0; r < n_rep; r++) replaced |= strcmp(f.entries[i].name, rep[r].name) == 0;
        if (replaced) continue;
        names[n] = f.entries[i].name;
        sdc_st_view(&f, &f.entries[i], &ts[n++]);
    }
    for (size_t r = 0; names && ts && r < n_rep; r++) {
        names[n] = rep[r].name;
        ts[n++] = rep[r].t;
    }
    snprintf(path, sizeof(path), "%s/diffusion_pytorch_model.safetensors", dir);
    int rc = names && ts && sdc_st_write(path, n, names, ts, &err) == SDC_OK ? 0 : -1;
    free(names);
    free(ts);
    sdc_st_close(&f);
    return rc;
}

static int make_dir(char *dir, size_t cap, const char *config, const char *skip)
{
    return make_dir_with(dir, cap, config, skip, NULL, 0);
}

static char *tiny_config_text(const char *replace_key, const char *value)
{
    char dir[1024], path[1100];
    transformer_dir(dir, sizeof(dir), MODEL);
    snprintf(path, sizeof(path), "%s/config.json", dir);
    FILE *fp = fopen(path, "r");
    if (!fp) return NULL;
    char *text = calloc(1, 1 << 16);
    size_t n = text ? fread(text, 1, (1 << 16) - 1, fp) : 0;
    fclose(fp);
    if (!text || !replace_key) return text;
    text[n] = 0;
    /* "key": old, -> "key": value, where old is a scalar or a flat array */
    char *k = strstr(text, replace_key);
    char *colon = k ? strchr(k, ':') : NULL;
    char *old = colon ? colon + 1 + strspn(colon + 1, " \n\t") : NULL;
    char *end = !old ? NULL : *old == '[' ? strchr(old, ']') : strpbrk(old, ",}");
    if (end && *end == ']') end++;
    if (!end) {
        free(text);
        return NULL;
    }
    char *out = calloc(1, (size_t)n + strlen(value) + 8);
    if (out) {
        memcpy(out, text, (size_t)(colon + 1 - text));
        strcat(out, " ");
        strcat(out, value);
        strcat(out, end);
    }
    free(text);
    return out;
}

static void check_load_error(const char *what, const char *config, const char *skip, int a,
                             int b, sdc_status_t want, const char *needle)
{
    sdc_backend_t *be = make_backend();
    char dir[256];
    sdc_dit_t *m = (sdc_dit_t *)1;
    sdc_error_t err = {0};
    if (!be || !config || make_dir(dir, sizeof(dir), config, skip) != 0) {
        CHECK_MSG(0, "%s: setup failed", what);
        sdc_backend_destroy(be);
        return;
    }
    sdc_status_t st = sdc_dit_load(&m, be, dir, a, b, &err);
    CHECK_MSG(st == want, "%s: status %d, want %d (%s)", what, (int)st, (int)want, err.msg);
    CHECK_MSG(want != SDC_OK || m != NULL, "%s: no model", what);
    CHECK_MSG(want == SDC_OK || m == NULL, "%s: model left behind", what);
    CHECK_MSG(needle == NULL || strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'",
              what, err.msg, needle);
    if (st == SDC_OK) sdc_dit_free(m);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    sdc_backend_destroy(be);
}

static void test_load_errors(void)
{
    char *good = tiny_config_text(NULL, NULL);
    char *cls = tiny_config_text("\"_class_name\"", "\"FluxTransformer2DModel\"");
    char *dim = tiny_config_text("\"text_embed_dim\"", "31");
    char *heads = tiny_config_text("\"num_attention_heads\"", "2");
    char *single = tiny_config_text("\"num_single_layers\"", "3");
    const char *gone = "transformer_blocks.1.attn.to_q.weight";
    check_load_error("wrong class", cls, NULL, 0, 4, SDC_ERR_UNSUPPORTED, "FluxTransformer2DModel");
    check_load_error("missing tensor", good, gone, 0, 4, SDC_ERR_NOT_FOUND, gone);
    /* A stage that does not hold block 1 does not need its tensors. */
    check_load_error("missing tensor, other stage", good, gone, 2, 4, SDC_OK, NULL);
    check_load_error("missing tensor, first stage", good, gone, 0, 1, SDC_OK, NULL);
    check_load_error("wrong shape", dim, NULL, 0, 4, SDC_ERR_SHAPE, "[64, 31]");
    check_load_error("wrong heads", heads, NULL, 1, 2, SDC_ERR_SHAPE, "transformer_blocks.1");
    check_load_error("missing block", single, NULL, 0, 5, SDC_ERR_NOT_FOUND,
                     "single_transformer_blocks.2");
    check_load_error("no embedders in range", single, NULL, 0, 1, SDC_OK, NULL);
    free(good);
    free(cls);
    free(dim);
    free(heads);
    free(single);

    sdc_backend_t *be = make_backend();
    sdc_dit_t *m = NULL;
    sdc_error_t err = {0};
    CHECK(be && sdc_dit_load(&m, be, "/nonexistent/transformer", 0, 1, &err) != SDC_OK);
    CHECK(m == NULL && strstr(err.msg, "/nonexistent/transformer") != NULL);
    sdc_backend_destroy(be);
}

/* ---- patch size 2 x 2 ----------------------------------------------------- */

/* A tensor of the tiny model as float32 (n elements expected). */
static float *model_tensor(const char *name, int64_t n)
{
    char dir[1024], path[1200];
    sdc_st_file_t f;
    sdc_error_t err = {0};
    sdc_tensor_t t;
    transformer_dir(dir, sizeof(dir), MODEL);
    snprintf(path, sizeof(path), "%s/diffusion_pytorch_model.safetensors", dir);
    if (sdc_st_open(&f, path, &err) != SDC_OK) return NULL;
    const sdc_st_entry_t *e = sdc_st_find(&f, name);
    float *out = e && sdc_shape_numel(e->ndim, e->shape) == n ? malloc((size_t)n * 4) : NULL;
    if (out) {
        sdc_st_view(&f, e, &t);
        if (sdc_convert_to_f32(out, t.data, e->dtype, n) != SDC_OK) {
            free(out);
            out = NULL;
        }
    }
    sdc_st_close(&f);
    return out;
}

static void fill_uniform(float *x, int64_t n, float scale, uint32_t seed)
{
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = scale * (float)((double)(seed >> 8) / 16777216.0 * 2.0 - 1.0);
    }
}

/* x_embedder (patchify + linear) and the head (norm_out, proj_out,
 * unpatchify) for a 2 x 2 patch, against direct host loops over the conv and
 * the unpatchify index map; the goldens only cover patch 1 x 1. */
static void test_patch2(void)
{
    enum { C = 8, H = 8, W = 12, PH = 2, PW = 2, GH = H / PH, GW = W / PW, HID = 64 };
    enum { K = C * PH * PW, N_IMG = GH * GW };
    static float wx[HID * K], wo[K * HID], bo[K], lat[C * H * W];
    fill_uniform(wx, HID * K, 0.2f, 1);
    fill_uniform(wo, K * HID, 0.15f, 2);
    fill_uniform(bo, K, 0.05f, 3);
    fill_uniform(lat, C * H * W, 1.0f, 4);
    replacement_t rep[3] = {{"x_embedder.proj.weight", {0}}, {"proj_out.weight", {0}},
                            {"proj_out.bias", {0}}};
    const int64_t s_wx[4] = {HID, C, PH, PW}, s_wo[2] = {K, HID}, s_bo[1] = {K};
    sdc_tensor_init(&rep[0].t, SDC_DTYPE_F32, 4, s_wx, wx);
    sdc_tensor_init(&rep[1].t, SDC_DTYPE_F32, 2, s_wo, wo);
    sdc_tensor_init(&rep[2].t, SDC_DTYPE_F32, 1, s_bo, bo);

    char *config = tiny_config_text("\"patch_size\"", "[2, 2]");
    char dir[256];
    sdc_backend_t *be = make_backend();
    golden_in_t g;
    float *bx = model_tensor("x_embedder.proj.bias", HID);
    float *wn = model_tensor("norm_out.linear.weight", 2 * HID * HID);
    float *bn = model_tensor("norm_out.linear.bias", 2 * HID);
    sdc_dit_t *m = NULL;
    sdc_dit_sample_t s = {0};
    sdc_error_t err = {0};
    int have_dir = 0, have_g = 0;
    if (!config || !be || !bx || !wn || !bn ||
        !(have_dir = make_dir_with(dir, sizeof(dir), config, NULL, rep, 3) == 0) ||
        sdc_dit_load(&m, be, dir, 0, 4, &err) != SDC_OK ||
        !(have_g = golden_in_open(&g, "dit_forward.safetensors") == 0)) {
        CHECK_MSG(0, "setup: %s", err.msg);
        goto out;
    }
    CHECK_EQ_INT(sdc_dit_config(m)->patch_size[0], 2);
    sdc_dit_input_t in;
    golden_in_sample(&g, 0, 1, &in);
    in.latent = lat;
    in.height = H;
    in.width = W;
    CHECK_EQ_INT(sdc_dit_embed(m, &in, &s, &err), SDC_OK);
    CHECK(s.grid_h == GH && s.grid_w == GW && s.n_img == N_IMG);
    static float x[N_IMG * HID], ref[N_IMG * HID], temb[HID], out[C * H * W], want[C * H * W];
    be->ops->download(be, x, s.x, sizeof(x));
    be->ops->download(be, temb, s.temb, sizeof(temb));
    for (int gy = 0; gy < GH; gy++)
        for (int gx = 0; gx < GW; gx++)
            for (int o = 0; o < HID; o++) {
                double acc = bx[o];
                for (int c = 0; c < C; c++)
                    for (int i = 0; i < PH; i++)
                        for (int j = 0; j < PW; j++)
                            acc += (double)wx[((o * C + c) * PH + i) * PW + j] *
                                   lat[(c * H + gy * PH + i) * W + gx * PW + j];
                ref[(gy * GW + gx) * HID + o] = (float)acc;
            }
    CHECK(test_close("patch 2x2 x_embed", x, ref, N_IMG * HID, TOL));

    /* Head on those rows: emb = linear(silu(temb)) -> scale, shift. */
    double emb[2 * HID];
    for (int o = 0; o < 2 * HID; o++) {
        emb[o] = bn[o];
        for (int d = 0; d < HID; d++)
            emb[o] += (double)wn[o * HID + d] * (temb[d] / (1.0 + exp(-(double)temb[d])));
    }
    for (int t = 0; t < N_IMG; t++) {
        double mean = 0, var = 0, y[HID];
        for (int d = 0; d < HID; d++) mean += x[t * HID + d] / (double)HID;
        for (int d = 0; d < HID; d++) var += pow(x[t * HID + d] - mean, 2) / HID;
        for (int d = 0; d < HID; d++)
            y[d] = (x[t * HID + d] - mean) / sqrt(var + 1e-6) * (1 + emb[d]) + emb[HID + d];
        for (int q = 0; q < K; q++) {
            double acc = bo[q];
            for (int d = 0; d < HID; d++) acc += (double)wo[q * HID + d] * y[d];
            const int c = q / (PH * PW), i = q / PW % PH, j = q % PW;
            want[(c * H + (t / GW) * PH + i) * W + (t % GW) * PW + j] = (float)acc;
        }
    }
    CHECK_EQ_INT(sdc_dit_head(m, &s, out, &err), SDC_OK);
    CHECK(test_close("patch 2x2 head", out, want, C * H * W, TOL));
out:
    if (m) sdc_dit_sample_free(m, &s);
    sdc_dit_free(m);
    if (have_g) golden_in_close(&g);
    if (have_dir) nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(config);
    free(bx);
    free(wn);
    free(bn);
    sdc_backend_destroy(be);
}

int main(void)
{
    RUN(test_config_tiny);
    RUN(test_config_defaults);
    RUN(test_config_errors);
    RUN(test_rope_golden);
    RUN(test_rope_centered);
    RUN(test_embed_modules);
    RUN(test_block_dual);
    RUN(test_block_single);
    RUN(test_head);
    RUN(test_forward);
    RUN(test_forward_distilled);
    RUN(test_forward_token0_padded);
    RUN(test_split_determinism);
    RUN(test_batch_independence);
    RUN(test_stage_errors);
    RUN(test_load_errors);
    RUN(test_patch2);
    TEST_EXIT();
}
