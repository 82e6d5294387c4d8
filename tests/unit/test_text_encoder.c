/*
 * test_text_encoder.c: the text encoders against the transformers /
 * diffusers goldens (tests/data/goldens/text_*.safetensors, made by
 * tools/goldens/make_text_goldens.py on tests/data/tiny-hunyuanimage-text):
 * per prompt the Qwen2 ids of the templated prompt, the LLM embeddings
 * (valid rows) and mask, the ByT5 ids, embeddings and mask; every LLM hidden
 * state of one prompt; T5 position buckets and one T5 forward. Also both
 * checkpoint name layouts, the ByT5 tokenizer's added-token rules, bit
 * identity across runs and thread counts, and the errors for missing or
 * mismatched components.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "fault_be.h"
#include "golden.h"
#include "text_golden.h"

#include "backend/backend.h"
#include "common/safetensors.h"
#include "model/glyph.h"
#include "model/qwen2.h"
#include "model/t5.h"
#include "model/text_attention.h"
#include "model/text_encoder.h"

#define MODEL "tiny-hunyuanimage-text"
#define DIM 16
#define DIM_2 24
#define TOL 1e-4

static sdc_backend_t *make_backend(int threads)
{
    sdc_backend_config_t bc = {.name = "cpu", .n_threads = threads};
    sdc_backend_t *be = NULL;
    sdc_error_t err = {0};
    if (sdc_backend_create(&bc, &be, &err) != SDC_OK) fprintf(stderr, "  backend: %s\n", err.msg);
    return be;
}

static void model_path(char *buf, size_t cap, const char *sub)
{
    snprintf(buf, cap, "%s/%s%s%s", test_data_dir(), MODEL, sub ? "/" : "", sub ? sub : "");
}

static sdc_text_encoder_t *open_te(sdc_backend_t *be)
{
    char dir[1024];
    sdc_error_t err = {0};
    sdc_text_encoder_t *te = NULL;
    model_path(dir, sizeof(dir), NULL);
    if (sdc_text_encoder_open(&te, be, dir, DIM, DIM_2, &err) != SDC_OK)
        fprintf(stderr, "  open %s: %s\n", dir, err.msg);
    return te;
}

/* max |a - b| / max |b| over n floats. */
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

static double worst_llm, worst_byt5;

static int masks_equal(const uint8_t *got, const float *ref, long n)
{
    for (long i = 0; i < n; i++)
        if (got[i] != (uint8_t)ref[i]) {
            fprintf(stderr, "  mask[%ld] = %d, want %g\n", i, got[i], (double)ref[i]);
            return 0;
        }
    return 1;
}

static int all_zero(const float *x, long n)
{
    for (long i = 0; i < n; i++)
        if (x[i] != 0.0f) return 0;
    return 1;
}

/* Everything one golden prompt pins down. */
static void check_case(sdc_text_encoder_t *te, const sdc_byt5_tok_t *tok2, const cJSON *c)
{
    const char *name = text_name(c);
    char gname[160], what[200];
    sdc_st_file_t g;
    sdc_error_t err = {0};
    size_t plen, glen;
    char *prompt = text_hex(c, "prompt_hex", &plen), *glyph = text_hex(c, "glyph_hex", &glen);
    snprintf(gname, sizeof(gname), "text_%s.safetensors", name);
    if (golden_open(&g, gname)) {
        test_failures_++;
        goto out_strings;
    }
    /* Token ids of the templated prompt, before and after truncation. */
    int32_t *ids = NULL;
    size_t n_ids = 0;
    CHECK(sdc_text_encoder_tokenize(te, prompt, plen, &ids, &n_ids, &err) == SDC_OK);
    CHECK_MSG((int64_t)n_ids == golden_i64(&g, "n_tokens", -1), "%s: %zu tokens", name, n_ids);
    float *gids = golden_f32(&g, "input_ids", NULL, NULL);
    float *gam = golden_f32(&g, "attention_mask", NULL, NULL);
    if (gids && gam) {
        long bad = 0;
        for (long i = 0; i < 1034; i++) {
            int valid = i < (long)n_ids;
            if (valid != (int)gam[i] || (valid && ids[i] != (int32_t)gids[i])) bad++;
        }
        CHECK_MSG(bad == 0, "%s: %ld token ids differ", name, bad);
    }
    free(ids);
    free(gids);
    free(gam);

    sdc_embeds_part_t part;
    sdc_text_info_t info;
    if (sdc_text_encoder_encode(te, prompt, plen, &part, &info, &err) != SDC_OK) {
        fprintf(stderr, "  %s: encode: %s\n", name, err.msg);
        test_failures_++;
        goto out_golden;
    }
    CHECK_EQ_INT(part.n, 1000);
    CHECK_EQ_INT(part.n_2, 128);
    CHECK_EQ_INT(info.n_valid, text_int(c, "n_valid"));
    CHECK_EQ_INT(info.n_valid_2, text_int(c, "n_valid_2"));
    CHECK_EQ_INT(info.truncated, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "truncated")));
    CHECK_EQ_INT(info.glyph_bytes, glen);

    float *ref = golden_f32(&g, "prompt_embeds", NULL, NULL);
    float *rmask = golden_f32(&g, "prompt_embeds_mask", NULL, NULL);
    float *ref2 = golden_f32(&g, "prompt_embeds_2", NULL, NULL);
    float *rmask2 = golden_f32(&g, "prompt_embeds_mask_2", NULL, NULL);
    CHECK(ref && rmask && ref2 && rmask2);
    if (ref && rmask && ref2 && rmask2) {
        long nv = (long)info.n_valid, nv2 = (long)info.n_valid_2;
        CHECK_MSG(masks_equal(part.mask, rmask, 1000), "%s: LLM mask", name);
        CHECK_MSG(masks_equal(part.mask_2, rmask2, 128), "%s: ByT5 mask", name);
        snprintf(what, sizeof(what), "%s prompt_embeds", name);
        CHECK(test_close(what, part.embeds, ref, nv * DIM, TOL));
        CHECK(all_zero(part.embeds + nv * DIM, (1000 - nv) * DIM));
        double e = rel_err(part.embeds, ref, nv * DIM);
        if (e > worst_llm) worst_llm = e;
        snprintf(what, sizeof(what), "%s prompt_embeds_2", name);
        if (nv2) {
            CHECK(test_close(what, part.embeds_2, ref2, nv2 * DIM_2, TOL));
            e = rel_err(part.embeds_2, ref2, nv2 * DIM_2);
            if (e > worst_byt5) worst_byt5 = e;
        }
        CHECK(all_zero(part.embeds_2 + nv2 * DIM_2, (128 - nv2) * DIM_2));
    }
    free(ref);
    free(rmask);
    free(ref2);
    free(rmask2);

    /* The glyph text and its ByT5 ids. */
    char *gl = NULL;
    size_t gl_n = 0;
    CHECK(sdc_glyph_extract(prompt, plen, &gl, &gl_n, &err) == SDC_OK);
    CHECK_MSG((!gl && !glyph) || (gl && glyph && gl_n == glen && !memcmp(gl, glyph, glen)),
              "%s: glyph text", name);
    if (glyph && sdc_st_find(&g, "input_ids_2")) {
        int32_t ids2[128];
        int nv = 0;
        CHECK(sdc_byt5_encode(tok2, glyph, glen, 128, ids2, &nv, NULL, &err) == SDC_OK);
        float *gi = golden_f32(&g, "input_ids_2", NULL, NULL);
        float *gm = golden_f32(&g, "attention_mask_2", NULL, NULL);
        if (gi && gm) {
            long bad = 0, gv = 0;
            for (int i = 0; i < 128; i++) {
                bad += ids2[i] != (int32_t)gi[i];
                gv += (long)gm[i];
            }
            CHECK_MSG(bad == 0, "%s: %ld ByT5 ids differ", name, bad);
            CHECK_EQ_INT(nv, gv);
        }
        free(gi);
        free(gm);
    }
    free(gl);
    free(part.embeds);
    free(part.mask);
    free(part.embeds_2);
    free(part.mask_2);
out_golden:
    sdc_st_close(&g);
out_strings:
    free(prompt);
    free(glyph);
}

static void test_golden_prompts(void)
{
    char dir[1024];
    sdc_error_t err = {0};
    sdc_json_t doc;
    sdc_byt5_tok_t *tok2 = NULL;
    sdc_backend_t *be = make_backend(0);
    sdc_text_encoder_t *te = be ? open_te(be) : NULL;
    cJSON *root = text_golden_load(&doc);
    model_path(dir, sizeof(dir), "tokenizer_2");
    CHECK(sdc_byt5_tok_load(dir, &tok2, &err) == SDC_OK);
    CHECK(te && root && tok2);
    if (te && root && tok2) {
        const cJSON *c;
        int n = 0;
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "encode")) {
            check_case(te, tok2, c);
            n++;
        }
        CHECK(n >= 20);
        printf("  %d prompts: worst relative error LLM %.3g, ByT5 %.3g\n", n, worst_llm,
               worst_byt5);
    }
    if (root) sdc_json_free(&doc);
    sdc_byt5_tok_free(tok2);
    sdc_text_encoder_free(te);
    if (be) sdc_backend_destroy(be);
}

/* hidden_states[-(skip + 1)] for every skip of the 4-layer model. */
static void test_llm_hidden_states(void)
{
    char dir[1024];
    sdc_st_file_t g;
    sdc_error_t err = {0};
    int64_t ishape[2], hshape[3];
    sdc_backend_t *be = make_backend(0);
    if (!be || golden_open(&g, "text_encoders.safetensors")) {
        test_failures_++;
        if (be) sdc_backend_destroy(be);
        return;
    }
    float *fid = golden_f32(&g, "llm_input_ids", NULL, ishape);
    float *hs = golden_f32(&g, "llm_hidden_states", NULL, hshape);
    CHECK(fid && hs && hshape[0] == 5 && hshape[2] == DIM);
    model_path(dir, sizeof(dir), "text_encoder");
    if (fid && hs) {
        int64_t n = ishape[1];
        int32_t *ids = malloc((size_t)n * sizeof(int32_t));
        float *out = malloc((size_t)(n * DIM) * sizeof(float));
        for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)fid[i];
        for (int skip = 0; skip <= 4; skip++) {
            sdc_qwen2_t *m = NULL;
            char what[64];
            if (sdc_qwen2_load(&m, be, dir, skip, &err) != SDC_OK) {
                fprintf(stderr, "  skip %d: %s\n", skip, err.msg);
                test_failures_++;
                continue;
            }
            CHECK_EQ_INT(sdc_qwen2_layers_run(m), 4 - skip);
            CHECK(sdc_qwen2_forward(m, ids, n, out, &err) == SDC_OK);
            snprintf(what, sizeof(what), "hidden_states[%d]", 4 - skip);
            CHECK(test_close(what, out, hs + (4 - skip) * n * DIM, (long)(n * DIM), TOL));
            sdc_qwen2_free(m);
        }
        sdc_qwen2_t *m = NULL;
        CHECK(sdc_qwen2_load(&m, be, dir, 5, &err) == SDC_ERR_RANGE);
        free(ids);
        free(out);
    }
    free(fid);
    free(hs);
    sdc_st_close(&g);
    sdc_backend_destroy(be);
}

static void test_t5_buckets(void)
{
    static const struct {
        const char *name;
        int64_t nb, md;
        int bidi;
    } cfgs[] = {{"t5_buckets_32_128_bi", 32, 128, 1}, {"t5_buckets_64_256_bi", 64, 256, 1},
                {"t5_buckets_16_32_bi", 16, 32, 1},   {"t5_buckets_32_128_uni", 32, 128, 0},
                {"t5_buckets_8_20_bi", 8, 20, 1}};
    sdc_st_file_t g;
    int64_t shape[1];
    if (golden_open(&g, "text_encoders.safetensors")) {
        test_failures_++;
        return;
    }
    float *rel = golden_f32(&g, "t5_relative_positions", NULL, shape);
    CHECK(rel != NULL);
    for (size_t k = 0; rel && k < sizeof(cfgs) / sizeof(cfgs[0]); k++) {
        float *want = golden_f32(&g, cfgs[k].name, NULL, NULL);
        CHECK(want != NULL);
        long bad = 0;
        for (int64_t i = 0; want && i < shape[0]; i++) {
            int64_t got = sdc_t5_bucket((int64_t)rel[i], cfgs[k].bidi, cfgs[k].nb, cfgs[k].md);
            if (got != (int64_t)want[i] && bad++ < 3)
                fprintf(stderr, "  %s: rel %g -> %lld, want %g\n", cfgs[k].name, (double)rel[i],
                        (long long)got, (double)want[i]);
        }
        CHECK_EQ_INT(bad, 0);
        free(want);
    }
    free(rel);
    sdc_st_close(&g);
}

static void test_t5_forward(void)
{
    char dir[1024];
    sdc_st_file_t g;
    sdc_error_t err = {0};
    int64_t shape[2];
    sdc_t5_t *m = NULL;
    sdc_backend_t *be = make_backend(0);
    model_path(dir, sizeof(dir), "text_encoder_2");
    if (!be || golden_open(&g, "text_encoders.safetensors")) {
        test_failures_++;
        if (be) sdc_backend_destroy(be);
        return;
    }
    CHECK(sdc_t5_load(&m, be, dir, &err) == SDC_OK);
    float *fid = golden_f32(&g, "t5_input_ids", NULL, shape);
    float *want = golden_f32(&g, "t5_output", NULL, NULL);
    if (m && fid && want) {
        const sdc_t5_config_t *c = sdc_t5_config(m);
        CHECK(c->gated && c->act == SDC_T5_ACT_GELU_TANH && c->d_model == DIM_2);
        int64_t n = shape[1];
        int32_t ids[64];
        float *out = malloc((size_t)(n * DIM_2) * sizeof(float));
        for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)fid[i];
        CHECK(sdc_t5_encode(m, ids, n, out, &err) == SDC_OK);
        CHECK(test_close("t5_output", out, want, (long)(n * DIM_2), TOL));
        ids[0] = 384;
        CHECK(sdc_t5_encode(m, ids, n, out, &err) == SDC_ERR_RANGE);
        CHECK(strstr(err.msg, "384") != NULL);
        free(out);
    }
    free(fid);
    free(want);
    sdc_t5_free(m);
    sdc_st_close(&g);
    sdc_backend_destroy(be);
}

/* Results of transformers' ByT5Tokenizer() on these strings. */
static void test_byt5_tokenizer_rules(void)
{
    static const struct {
        const char *text;
        int32_t ids[16];
        int n;
    } cases[] = {
        {"abc", {100, 101, 102, 1}, 4},
        {"<extra_id_0>", {259, 1}, 2},
        {"a <pad> b", {100, 0, 101, 1}, 4},
        {"x</s>", {123, 1}, 2},
        {"x </s> y", {123, 1, 124, 1}, 4},
        {"<extra_id_124>", {383, 1}, 2},
        {"\xc3\xa9\xe4\xb8\xad", {198, 172, 231, 187, 176, 1}, 6},
        {"a\xe3\x80\x80<unk>\xe3\x80\x80" "b", {100, 2, 101, 1}, 4},
        {"<extra_id_125>", {63, 104, 123, 119, 117, 100, 98, 108, 103, 98, 52, 53, 56, 65, 1}, 15},
        {"", {1}, 1},
    };
    sdc_byt5_tok_t *t = NULL;
    sdc_error_t err = {0};
    CHECK(sdc_byt5_tok_load(NULL, &t, &err) == SDC_OK);
    if (!t) return;
    CHECK_EQ_INT(sdc_byt5_tok_pad_id(t), 0);
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        int32_t ids[32];
        int nv = 0;
        CHECK(sdc_byt5_encode(t, cases[k].text, strlen(cases[k].text), 32, ids, &nv, NULL, &err) ==
              SDC_OK);
        CHECK_MSG(nv == cases[k].n && !memcmp(ids, cases[k].ids, (size_t)nv * 4), "case %zu", k);
        for (int i = nv; i < 32; i++) CHECK(ids[i] == 0);
    }
    /* Truncation: 200 bytes -> 127 + eos, and n_full says it was cut. */
    char text[200];
    memset(text, 'a', sizeof(text));
    int32_t ids[128];
    int nv = 0;
    size_t full = 0;
    CHECK(sdc_byt5_encode(t, text, sizeof(text), 128, ids, &nv, &full, &err) == SDC_OK);
    CHECK(nv == 128 && ids[126] == 100 && ids[127] == 1 && full == 128);
    CHECK(sdc_byt5_encode(t, text, 127, 128, ids, &nv, &full, &err) == SDC_OK);
    CHECK(nv == 128 && ids[127] == 1 && full == 127);
    CHECK(sdc_byt5_encode(t, text, 5, 1, ids, &nv, &full, &err) == SDC_ERR_INVALID_ARG);
    /* Invalid UTF-8 becomes U+FFFD (EF BF BD). */
    CHECK(sdc_byt5_encode(t, "\xff", 1, 8, ids, &nv, NULL, &err) == SDC_OK);
    CHECK(nv == 4 && ids[0] == 0xEF + 3 && ids[1] == 0xBF + 3 && ids[2] == 0xBD + 3);
    sdc_byt5_tok_free(t);
}

/* Copies the text encoder with its tensors renamed model.* ->
 * model.language_model.* (transformers >= 4.52 layout) into dir. */
static int write_renamed(const char *src, const char *dst)
{
    char path[1024], cmd[2200];
    sdc_st_set_t set;
    sdc_error_t err = {0};
    if (sdc_st_set_open(&set, src, &err) != SDC_OK) return -1;
    size_t n = 0;
    for (size_t f = 0; f < set.n_files; f++) n += set.files[f].n_entries;
    const char **names = calloc(n, sizeof(*names));
    sdc_tensor_t *ts = calloc(n, sizeof(*ts));
    char **owned = calloc(n, sizeof(*owned));
    size_t k = 0;
    for (size_t f = 0; f < set.n_files; f++)
        for (size_t i = 0; i < set.files[f].n_entries; i++) {
            const sdc_st_entry_t *e = &set.files[f].entries[i];
            if (strncmp(e->name, "model.", 6) != 0) continue;
            owned[k] = malloc(strlen(e->name) + 32);
            sprintf(owned[k], "model.language_model.%s", e->name + 6);
            names[k] = owned[k];
            sdc_st_view(&set.files[f], e, &ts[k]);
            k++;
        }
    snprintf(path, sizeof(path), "%s/model.safetensors", dst);
    int rc = sdc_st_write(path, k, names, ts, &err) == SDC_OK ? 0 : -1;
    snprintf(cmd, sizeof(cmd), "cp '%s/config.json' '%s/'", src, dst);
    if (rc == 0 && system(cmd) != 0) rc = -1;
    for (size_t i = 0; i < k; i++) free(owned[i]);
    free(owned);
    free(names);
    free(ts);
    sdc_st_set_close(&set);
    return rc;
}

static void test_name_layouts(void)
{
    char src[1024], tmp[] = "/tmp/sdc-te-XXXXXX", cmd[1200];
    sdc_error_t err = {0};
    const int32_t ids[6] = {151644, 8948, 198, 74785, 279, 151645};
    float a[6 * DIM], b[6 * DIM];
    sdc_qwen2_t *m1 = NULL, *m2 = NULL;
    sdc_backend_t *be = make_backend(0);
    model_path(src, sizeof(src), "text_encoder");
    CHECK(be && mkdtemp(tmp) != NULL);
    CHECK(write_renamed(src, tmp) == 0);
    CHECK(sdc_qwen2_load(&m1, be, src, 2, &err) == SDC_OK);
    CHECK(sdc_qwen2_load(&m2, be, tmp, 2, &err) == SDC_OK);
    if (m1 && m2) {
        CHECK(sdc_qwen2_forward(m1, ids, 6, a, &err) == SDC_OK);
        CHECK(sdc_qwen2_forward(m2, ids, 6, b, &err) == SDC_OK);
        CHECK(memcmp(a, b, sizeof(a)) == 0);
    }
    sdc_qwen2_free(m1);
    sdc_qwen2_free(m2);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    CHECK(system(cmd) == 0);
    if (be) sdc_backend_destroy(be);
}

/* Same prompt twice, and with 1 thread vs all: the same bits. */
static void test_bit_identical(void)
{
    static const char prompt[] =
        "Poster with \"SALE\" and \xe2\x80\x9c\xe9\x99\x90\xe6\x97\xb6\xe2\x80\x9d";
    sdc_error_t err = {0};
    sdc_embeds_part_t p[3];
    sdc_backend_t *be1 = make_backend(1), *be0 = make_backend(0);
    sdc_text_encoder_t *t1 = be1 ? open_te(be1) : NULL, *t0 = be0 ? open_te(be0) : NULL;
    CHECK(t1 && t0);
    if (t1 && t0) {
        CHECK(sdc_text_encoder_encode(t0, prompt, sizeof(prompt) - 1, &p[0], NULL, &err) == SDC_OK);
        CHECK(sdc_text_encoder_encode(t0, prompt, sizeof(prompt) - 1, &p[1], NULL, &err) == SDC_OK);
        CHECK(sdc_text_encoder_encode(t1, prompt, sizeof(prompt) - 1, &p[2], NULL, &err) == SDC_OK);
        for (int i = 1; i < 3; i++) {
            CHECK(memcmp(p[0].embeds, p[i].embeds, 1000 * DIM * sizeof(float)) == 0);
            CHECK(memcmp(p[0].embeds_2, p[i].embeds_2, 128 * DIM_2 * sizeof(float)) == 0);
        }
        for (int i = 0; i < 3; i++) {
            free(p[i].embeds);
            free(p[i].mask);
            free(p[i].embeds_2);
            free(p[i].mask_2);
        }
    }
    sdc_text_encoder_free(t1);
    sdc_text_encoder_free(t0);
    if (be1) sdc_backend_destroy(be1);
    if (be0) sdc_backend_destroy(be0);
}

/* A model directory made of links to the tiny model's components, with
 * model_index.json and one component replaceable. */
static int make_variant(char *tmp, const char *skip, const char *index_sed)
{
    static const char *const comps[] = {"text_encoder", "tokenizer", "text_encoder_2",
                                        "tokenizer_2", "transformer", "vae", "scheduler",
                                        "guider", "ocr_guider"};
    char src[1024], dst[1100], cmd[2600];
    if (!mkdtemp(tmp)) return -1;
    for (size_t i = 0; i < sizeof(comps) / sizeof(comps[0]); i++) {
        if (skip && strcmp(skip, comps[i]) == 0) continue;
        model_path(src, sizeof(src), comps[i]);
        char abs[1024];
        if (!realpath(src, abs)) return -1;
        snprintf(dst, sizeof(dst), "%s/%s", tmp, comps[i]);
        if (symlink(abs, dst) != 0) return -1;
    }
    model_path(src, sizeof(src), "model_index.json");
    snprintf(cmd, sizeof(cmd), "sed -e '%s' '%s' > '%s/model_index.json'",
             index_sed ? index_sed : "", src, tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static void expect_open_error(const char *what, const char *dir, int64_t d, int64_t d2,
                              sdc_status_t code, const char *needle)
{
    sdc_error_t err = {0};
    sdc_text_encoder_t *te = NULL;
    sdc_backend_t *be = make_backend(1);
    sdc_status_t st = sdc_text_encoder_open(&te, be, dir, d, d2, &err);
    CHECK_MSG(st == code && te == NULL && strstr(err.msg, needle) != NULL,
              "%s: status %d, message '%s'", what, (int)st, err.msg);
    sdc_text_encoder_free(te);
    sdc_backend_destroy(be);
}

static void test_open_errors(void)
{
    char dir[1024], cmd[64];
    snprintf(dir, sizeof(dir), "%s/tiny-hunyuanimage", test_data_dir());
    expect_open_error("no text encoder", dir, 32, 24, SDC_ERR_NOT_FOUND, "'text_encoder'");
    model_path(dir, sizeof(dir), NULL);
    expect_open_error("LLM width", dir, 32, 24, SDC_ERR_SHAPE, "text_embed_dim 32");
    expect_open_error("ByT5 width", dir, 16, 48, SDC_ERR_SHAPE, "text_embed_2_dim 48");
    expect_open_error("missing dir", "/nonexistent/model", 16, 24, SDC_ERR_NOT_FOUND,
                      "/nonexistent/model");

    struct {
        const char *skip, *sed;
        sdc_status_t code;
        const char *needle;
    } v[] = {
        {"tokenizer", NULL, SDC_ERR_NOT_FOUND, "tokenizer"},
        {"tokenizer_2", NULL, SDC_ERR_NOT_FOUND, "tokenizer_2"},
        {"text_encoder_2", NULL, SDC_ERR_NOT_FOUND, "text_encoder_2"},
        {NULL, "s/T5EncoderModel/UMT5EncoderModel/", SDC_ERR_UNSUPPORTED, "UMT5EncoderModel"},
        {NULL, "s/Qwen2Tokenizer/LlamaTokenizer/", SDC_ERR_UNSUPPORTED, "LlamaTokenizer"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char tmp[] = "/tmp/sdc-te-XXXXXX";
        CHECK(make_variant(tmp, v[i].skip, v[i].sed) == 0);
        expect_open_error(v[i].needle, tmp, 16, 24, v[i].code, v[i].needle);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
        CHECK(system(cmd) == 0);
    }
    /* A DiT without a ByT5 input: text_encoder_2 is neither needed nor read. */
    char tmp[] = "/tmp/sdc-te-XXXXXX";
    CHECK(make_variant(tmp, "text_encoder_2", NULL) == 0);
    sdc_error_t err = {0};
    sdc_text_encoder_t *te = NULL;
    sdc_backend_t *be = make_backend(1);
    CHECK(sdc_text_encoder_open(&te, be, tmp, 16, 0, &err) == SDC_OK);
    if (te) {
        sdc_embeds_part_t p;
        CHECK(sdc_text_encoder_encode(te, "\"x\"", 3, &p, NULL, &err) == SDC_OK);
        CHECK(p.embeds && !p.embeds_2 && p.n_2 == 0);
        free(p.embeds);
        free(p.mask);
    }
    sdc_text_encoder_free(te);
    sdc_backend_destroy(be);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    CHECK(system(cmd) == 0);
}

/* sdc_text_attention against a double-precision reference on sampled query
 * rows: grouped-query heads, a shared causal bias and per-head biases, and
 * a length whose scores do not fit one chunk (several chunks of heads). */
static void check_attention(int64_t L, int64_t H, int64_t Hkv, int64_t Dh, int per_head,
                            long row_step)
{
    sdc_backend_t *be = make_backend(0);
    const int64_t ld = H * Dh + 3, ldkv = Hkv * Dh + 1, ldo = H * Dh + 5;
    float *q = malloc((size_t)(L * ld) * 4), *k = malloc((size_t)(L * ldkv) * 4);
    float *v = malloc((size_t)(L * ldkv) * 4), *o = malloc((size_t)(L * ldo) * 4);
    float *bias = malloc((size_t)((per_head ? H : 1) * L * L) * 4);
    float *scr = malloc((size_t)sdc_text_attention_scratch(L, H, Hkv, Dh, per_head) * 4);
    uint64_t r = 12345;
#define RND() ((r = r * 6364136223846793005ull + 1442695040888963407ull), \
               ((double)(r >> 11) / 9007199254740992.0 - 0.5))
    for (int64_t i = 0; i < L * ld; i++) q[i] = (float)RND();
    for (int64_t i = 0; i < L * ldkv; i++) k[i] = (float)RND(), v[i] = (float)RND();
    for (int64_t h = 0; h < (per_head ? H : 1); h++)
        for (int64_t i = 0; i < L; i++)
            for (int64_t j = 0; j < L; j++)
                bias[(h * L + i) * L + j] = per_head ? (float)RND() : (j <= i ? 0.0f : -INFINITY);
#undef RND
    const float scale = 0.35f;
    sdc_text_attention(be, o, ldo, q, ld, k, ldkv, v, ldkv, L, H, Hkv, Dh, scale, bias, per_head,
                       scr);
    double worst = 0;
    double *p = malloc((size_t)L * sizeof(double));
    for (int64_t h = 0; h < H; h++) {
        int64_t g = h / (H / Hkv);
        const float *b = bias + (per_head ? h * L * L : 0);
        for (int64_t i = 0; i < L; i += row_step) {
            double m = -INFINITY, sum = 0;
            for (int64_t j = 0; j < L; j++) {
                double d = 0;
                for (int64_t e = 0; e < Dh; e++)
                    d += (double)q[i * ld + h * Dh + e] * k[j * ldkv + g * Dh + e];
                p[j] = d * scale + b[i * L + j];
                if (p[j] > m) m = p[j];
            }
            for (int64_t j = 0; j < L; j++) sum += (p[j] = exp(p[j] - m));
            for (int64_t e = 0; e < Dh; e++) {
                double acc = 0;
                for (int64_t j = 0; j < L; j++) acc += p[j] * v[j * ldkv + g * Dh + e];
                double diff = fabs(acc / sum - o[i * ldo + h * Dh + e]);
                if (diff > worst) worst = diff;
            }
        }
    }
    CHECK_MSG(worst < 1e-5, "L %lld H %lld Hkv %lld: worst |diff| %.3g", (long long)L,
              (long long)H, (long long)Hkv, worst);
    free(p);
    free(q);
    free(k);
    free(v);
    free(o);
    free(bias);
    free(scr);
    sdc_backend_destroy(be);
}

static void test_attention_reference(void)
{
    check_attention(37, 6, 2, 8, 0, 1);
    check_attention(37, 6, 6, 8, 1, 1);
    check_attention(3, 4, 1, 4, 0, 1);
    /* 8 heads x 2048^2 scores exceed one chunk: two chunks of heads. */
    check_attention(2048, 8, 4, 4, 0, 97);
}

/* Every device allocation of opening and encoding fails once in turn:
 * each failure is an out-of-memory error, never a crash, and nothing stays
 * allocated once the encoder is freed. */
static void test_alloc_failures(void)
{
    static const char prompt[] = "A sign that says \"OPEN\"";
    char dir[1024];
    sdc_backend_t *real = make_backend(1);
    model_path(dir, sizeof(dir), NULL);
    int done = 0, failures = 0;
    for (long k = 0; k < 1000 && !done && real; k++) {
        fault_be_t fb;
        sdc_error_t err = {0};
        sdc_text_encoder_t *te = NULL;
        sdc_embeds_part_t p;
        fault_init(&fb, real);
        fb.fail_at = k;
        sdc_status_t st = sdc_text_encoder_open(&te, &fb.be, dir, DIM, DIM_2, &err);
        if (st == SDC_OK)
            st = sdc_text_encoder_encode(te, prompt, sizeof(prompt) - 1, &p, NULL, &err);
        if (st == SDC_OK) {
            done = fb.n_allocs <= k;
            free(p.embeds);
            free(p.mask);
            free(p.embeds_2);
            free(p.mask_2);
        } else {
            CHECK_MSG(st == SDC_ERR_NOMEM, "allocation %ld: status %d: %s", k, (int)st, err.msg);
            failures++;
        }
        sdc_text_encoder_free(te);
        CHECK_MSG(fb.live == 0, "allocation %ld: %zu bytes left", k, fb.live);
    }
    CHECK(done && failures > 20);
    if (real) sdc_backend_destroy(real);
}

int main(void)
{
    RUN(test_golden_prompts);
    RUN(test_llm_hidden_states);
    RUN(test_t5_buckets);
    RUN(test_attention_reference);
    RUN(test_t5_forward);
    RUN(test_byt5_tokenizer_rules);
    RUN(test_name_layouts);
    RUN(test_bit_identical);
    RUN(test_open_errors);
    RUN(test_alloc_failures);
    TEST_EXIT();
}
