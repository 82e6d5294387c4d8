/*
 * t5.c: ByT5Tokenizer and the T5 encoder (see t5.h), on backend ops only.
 *
 * Encoder layer (transformers T5Block, encoder side):
 *   x += o(attention(q, k, v of rms_norm(x)) + position_bias)   no 1/sqrt(d)
 *   x += wo(act(wi_0(rms_norm(x))) * wi_1(rms_norm(x)))         gated FFN
 * then final_layer_norm. The relative-position bias comes from block 0 and
 * is shared by every layer. Dropout is inference-off.
 */
#include "t5.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/config.h"
#include "../common/utf8.h"
#include "text_attention.h"
#include "weights.h"

#define T5_MAX_DIM (1 << 16)
#define T5_MAX_LAYERS 256
#define T5_MAX_VOCAB (1 << 24)
#define T5_MAX_BUCKETS 4096
/* UTF-8 bytes come after pad, eos and unk. */
#define BYT5_OFFSET 3
#define BYT5_EXTRA_IDS 125
/* ByT5 sees 128 tokens; the heads x L x L bias table bounds it. */
#define T5_MAX_TOKENS 4096

/* ---- tokenizer ---------------------------------------------------------- */

typedef struct {
    char *content;
    size_t len;
    int32_t id;
    int lstrip, rstrip;
} byt5_added_t;

struct sdc_byt5_tok {
    byt5_added_t *added; /* longest first */
    size_t n_added;
    int32_t pad_id, eos_id;
    uint8_t first[256]; /* 1 when some added token starts with that byte */
};

void sdc_byt5_tok_free(sdc_byt5_tok_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_added; i++)
        free(t->added[i].content);
    free(t->added);
    free(t);
}

int32_t sdc_byt5_tok_pad_id(const sdc_byt5_tok_t *t)
{
    return t->pad_id;
}

static sdc_status_t tok_add(sdc_byt5_tok_t *t, size_t *cap, const char *content, int32_t id,
                            int lstrip, int rstrip, sdc_error_t *err)
{
    if (t->n_added == *cap) {
        size_t c = *cap ? *cap * 2 : 160;
        byt5_added_t *p = realloc(t->added, c * sizeof(*p));
        if (!p)
            return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        t->added = p;
        *cap = c;
    }
    byt5_added_t *a = &t->added[t->n_added];
    a->len = strlen(content);
    a->content = strdup(content);
    if (!a->content)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    a->id = id;
    a->lstrip = lstrip;
    a->rstrip = rstrip;
    t->n_added++;
    return SDC_OK;
}

static sdc_status_t tok_defaults(sdc_byt5_tok_t *t, sdc_error_t *err)
{
    static const char *const special[3] = {"<pad>", "</s>", "<unk>"};
    size_t cap = 0;
    char name[32];
    sdc_status_t st = SDC_OK;
    for (int i = 0; i < 3 && st == SDC_OK; i++)
        st = tok_add(t, &cap, special[i], i, 1, 1, err);
    for (int i = 0; i < BYT5_EXTRA_IDS && st == SDC_OK; i++) {
        snprintf(name, sizeof(name), "<extra_id_%d>", i);
        st = tok_add(t, &cap, name, 256 + BYT5_OFFSET + i, 0, 0, err);
    }
    return st;
}

static int json_flag(const cJSON *o, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

/* tokenizer_config.json's added_tokens_decoder: {"<id>": {"content": ...}}. */
static sdc_status_t tok_from_config(sdc_byt5_tok_t *t, const sdc_json_t *cfg, sdc_error_t *err)
{
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(cfg->root, "added_tokens_decoder");
    const cJSON *o;
    size_t cap = 0;
    if (!dec || cJSON_IsNull(dec))
        return tok_defaults(t, err);
    if (!cJSON_IsObject(dec))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: added_tokens_decoder must be an object",
                             cfg->path);
    cJSON_ArrayForEach(o, dec) {
        char *end;
        long id = strtol(o->string, &end, 10);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "content");
        if (end == o->string || *end || id < 0 || id >= T5_MAX_VOCAB || !cJSON_IsObject(o) ||
            !cJSON_IsString(c) || !c->valuestring[0])
            return sdc_error_set(err, SDC_ERR_FORMAT,
                                 "%s: added_tokens_decoder entry '%.20s' must map a token id to "
                                 "{\"content\": non-empty string, ...}",
                                 cfg->path, o->string);
        if (json_flag(o, "single_word"))
            return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                                 "%s: added token '%.40s' has single_word set, which the ByT5 "
                                 "tokenizer does not implement",
                                 cfg->path, c->valuestring);
        sdc_status_t st = tok_add(t, &cap, c->valuestring, (int32_t)id, json_flag(o, "lstrip"),
                                  json_flag(o, "rstrip"), err);
        if (st != SDC_OK)
            return st;
    }
    return SDC_OK;
}

/* "eos_token": "</s>" or {"content": "</s>", ...}; the id of that token. */
static sdc_status_t tok_special_id(sdc_byt5_tok_t *t, const sdc_json_t *cfg, const char *key,
                                   const char *def, int32_t *id, sdc_error_t *err)
{
    const char *name = def;
    const cJSON *v = cfg ? cJSON_GetObjectItemCaseSensitive(cfg->root, key) : NULL;
    if (cJSON_IsObject(v))
        v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (cJSON_IsString(v))
        name = v->valuestring;
    for (size_t i = 0; i < t->n_added; i++)
        if (strcmp(t->added[i].content, name) == 0) {
            *id = t->added[i].id;
            return SDC_OK;
        }
    return sdc_error_set(err, SDC_ERR_FORMAT, "%s: %s '%.40s' is not an added token",
                         cfg ? cfg->path : "ByT5 tokenizer", key, name);
}

static int added_cmp(const void *a_, const void *b_)
{
    const byt5_added_t *a = a_, *b = b_;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

sdc_status_t sdc_byt5_tok_load(const char *dir, sdc_byt5_tok_t **out, sdc_error_t *err)
{
    sdc_json_t cfg = {0};
    int have_cfg = 0;
    sdc_status_t st;
    sdc_byt5_tok_t *t = calloc(1, sizeof(*t));
    if (!t)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    if (dir) {
        struct stat sb;
        char path[4096];
        if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            st = sdc_error_set(err, SDC_ERR_NOT_FOUND, "%s: tokenizer directory not found", dir);
            goto err_free;
        }
        if (snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir) >= (int)sizeof(path)) {
            st = sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: path too long", dir);
            goto err_free;
        }
        if (stat(path, &sb) == 0) {
            st = sdc_json_load(&cfg, path, err);
            if (st != SDC_OK)
                goto err_free;
            have_cfg = 1;
        }
    }
    st = have_cfg ? tok_from_config(t, &cfg, err) : tok_defaults(t, err);
    if (st == SDC_OK)
        st = tok_special_id(t, have_cfg ? &cfg : NULL, "eos_token", "</s>", &t->eos_id, err);
    if (st == SDC_OK)
        st = tok_special_id(t, have_cfg ? &cfg : NULL, "pad_token", "<pad>", &t->pad_id, err);
    if (st != SDC_OK)
        goto err_free;
    qsort(t->added, t->n_added, sizeof(*t->added), added_cmp);
    for (size_t i = 0; i < t->n_added; i++)
        t->first[(uint8_t)t->added[i].content[0]] = 1;
    if (have_cfg)
        sdc_json_free(&cfg);
    *out = t;
    return SDC_OK;

err_free:
    if (have_cfg)
        sdc_json_free(&cfg);
    sdc_byt5_tok_free(t);
    return st;
}

/* Python's str.isspace, which is what str.strip removes. */
static int py_isspace(int32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

static size_t skip_space(const char *s, size_t a, size_t b)
{
    while (a < b) {
        int32_t cp;
        size_t n = sdc_utf8_next((const unsigned char *)s + a, b - a, &cp);
        if (!py_isspace(cp))
            break;
        a += n;
    }
    return a;
}

static size_t trim_space(const char *s, size_t a, size_t b)
{
    while (b > a) {
        size_t j = b - 1;
        while (j > a && ((unsigned char)s[j] & 0xC0) == 0x80)
            j--;
        int32_t cp;
        sdc_utf8_next((const unsigned char *)s + j, b - j, &cp);
        if (!py_isspace(cp))
            break;
        b = j;
    }
    return b;
}

/* The leftmost added token at or after from (longest at that position). */
static const byt5_added_t *next_added(const sdc_byt5_tok_t *t, const char *s, size_t len,
                                      size_t from, size_t *at)
{
    for (size_t i = from; i < len; i++) {
        if (!t->first[(uint8_t)s[i]])
            continue;
        for (size_t k = 0; k < t->n_added; k++) {
            const byt5_added_t *a = &t->added[k];
            if (a->len <= len - i && memcmp(s + i, a->content, a->len) == 0) {
                *at = i;
                return a;
            }
        }
    }
    *at = len;
    return NULL;
}

/* Appends ids while room is left; counts every id (capped) in *n_full. */
typedef struct {
    int32_t *ids;
    int room, n;
    size_t full, cap_full;
} byt5_sink_t;

static int sink_put(byt5_sink_t *k, int32_t id)
{
    if (k->full < k->cap_full)
        k->full++;
    if (k->n < k->room)
        k->ids[k->n++] = id;
    return k->n < k->room || k->full < k->cap_full;
}

sdc_status_t sdc_byt5_encode(const sdc_byt5_tok_t *t, const char *text, size_t len,
                             int max_length, int32_t *ids, int *n_valid, size_t *n_full,
                             sdc_error_t *err)
{
    char *fixed = NULL;
    size_t fixed_len;
    if (max_length < 2)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "ByT5 max_length must be >= 2, got %d",
                             max_length);
    if (len && sdc_utf8_valid_len(text, len) != len) {
        sdc_status_t st = sdc_utf8_repair(text, len, &fixed, &fixed_len, err);
        if (st != SDC_OK)
            return st;
        text = fixed;
        len = fixed_len;
    }
    /* Truncation keeps max_length - 1 ids for the eos; counting one more
     * is enough to know whether anything was cut. */
    byt5_sink_t k = {.ids = ids, .room = max_length - 1, .cap_full = (size_t)max_length};
    size_t pos = 0;
    int strip_left = 0, more = 1;
    while (more) {
        size_t at;
        const byt5_added_t *a = next_added(t, text, len, pos, &at);
        size_t b = a && a->lstrip ? trim_space(text, pos, at) : at;
        size_t s0 = strip_left ? skip_space(text, pos, b) : pos;
        for (size_t i = s0; i < b && more; i++)
            more = sink_put(&k, (uint8_t)text[i] + BYT5_OFFSET);
        if (!a || !more)
            break;
        more = sink_put(&k, a->id);
        strip_left = a->rstrip;
        pos = at + a->len;
    }
    free(fixed);
    int n = k.n;
    if (n == 0 || ids[n - 1] != t->eos_id)
        ids[n++] = t->eos_id;
    *n_valid = n;
    for (int i = n; i < max_length; i++)
        ids[i] = t->pad_id;
    if (n_full)
        *n_full = k.full;
    return SDC_OK;
}

/* ---- config ------------------------------------------------------------- */

static sdc_status_t cfg_int(const sdc_json_t *doc, const char *key, int64_t def, int64_t lo,
                            int64_t hi, int64_t *out, sdc_error_t *err)
{
    sdc_status_t st = sdc_json_get_int(doc, key, def, out, err);
    if (st == SDC_OK && (*out < lo || *out > hi))
        st = sdc_error_set(err, SDC_ERR_RANGE, "%s: %s = %lld is outside %lld..%lld", doc->path,
                           key, (long long)*out, (long long)lo, (long long)hi);
    return st;
}

/* feed_forward_proj as transformers' T5Config reads it: "[gated-]ACT", and
 * "gated-gelu" means gelu_new. */
static sdc_status_t cfg_ffn(sdc_t5_config_t *c, const sdc_json_t *doc, sdc_error_t *err)
{
    static const struct {
        const char *name;
        sdc_t5_act_t act;
    } acts[] = {
        {"gelu_new", SDC_T5_ACT_GELU_TANH}, {"gelu_pytorch_tanh", SDC_T5_ACT_GELU_TANH},
        {"gelu", SDC_T5_ACT_GELU},          {"silu", SDC_T5_ACT_SILU},
        {"swish", SDC_T5_ACT_SILU},
    };
    const char *ff;
    sdc_status_t st = sdc_json_get_string(doc, "feed_forward_proj", "relu", &ff, err);
    if (st != SDC_OK)
        return st;
    c->gated = strncmp(ff, "gated-", 6) == 0;
    const char *act = c->gated ? ff + 6 : ff;
    if (strcmp(ff, "gated-gelu") == 0) {
        c->act = SDC_T5_ACT_GELU_TANH;
        return SDC_OK;
    }
    for (size_t i = 0; i < sizeof(acts) / sizeof(acts[0]); i++)
        if (strcmp(act, acts[i].name) == 0) {
            c->act = acts[i].act;
            return SDC_OK;
        }
    return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                         "%s: feed_forward_proj '%s' is not supported (gated or plain gelu, "
                         "gelu_new, silu)",
                         doc->path, ff);
}

static sdc_status_t cfg_sizes(sdc_t5_config_t *c, const sdc_json_t *doc, sdc_error_t *err)
{
    sdc_status_t st;
    if ((st = cfg_int(doc, "vocab_size", 32128, 1, T5_MAX_VOCAB, &c->vocab_size, err)) ||
        (st = cfg_int(doc, "d_model", 512, 1, T5_MAX_DIM, &c->d_model, err)) ||
        (st = cfg_int(doc, "d_kv", 64, 1, T5_MAX_DIM, &c->d_kv, err)) ||
        (st = cfg_int(doc, "num_heads", 8, 1, 1024, &c->num_heads, err)) ||
        (st = cfg_int(doc, "d_ff", 2048, 1, 1 << 20, &c->d_ff, err)) ||
        (st = cfg_int(doc, "num_layers", 6, 1, T5_MAX_LAYERS, &c->num_layers, err)) ||
        (st = cfg_int(doc, "relative_attention_num_buckets", 32, 2, T5_MAX_BUCKETS,
                      &c->num_buckets, err)) ||
        (st = cfg_int(doc, "relative_attention_max_distance", 128, 1, 1 << 20, &c->max_distance,
                      err)) ||
        (st = sdc_json_get_double(doc, "layer_norm_epsilon", 1e-6, &c->eps, err)))
        return st;
    return cfg_ffn(c, doc, err);
}

sdc_status_t sdc_t5_config_load(sdc_t5_config_t *c, const char *config_json, sdc_error_t *err)
{
    sdc_json_t doc;
    const char *mt;
    memset(c, 0, sizeof(*c));
    sdc_status_t st = sdc_json_load(&doc, config_json, err);
    if (st != SDC_OK)
        return st;
    st = sdc_json_get_string(&doc, "model_type", "t5", &mt, err);
    if (st == SDC_OK && strcmp(mt, "t5") != 0 && strcmp(mt, "mt5") != 0)
        st = sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                           "%s: model_type '%s' is not a T5 encoder sdc runs (t5, mt5)",
                           config_json, mt);
    if (st == SDC_OK)
        st = cfg_sizes(c, &doc, err);
    if (st == SDC_OK && c->num_heads * c->d_kv > T5_MAX_DIM)
        st = sdc_error_set(err, SDC_ERR_RANGE, "%s: num_heads x d_kv = %lld is too large",
                           config_json, (long long)(c->num_heads * c->d_kv));
    if (st == SDC_OK && !(c->eps > 0 && c->eps < 1))
        st = sdc_error_set(err, SDC_ERR_RANGE, "%s: layer_norm_epsilon %g is outside (0, 1)",
                           config_json, c->eps);
    sdc_json_free(&doc);
    return st;
}

/* ---- encoder ------------------------------------------------------------ */

typedef struct {
    float *ln0, *ln1;
    sdc_linear_w_t q, k, v, o;
    sdc_linear_w_t wi0, wi1, wo; /* wi1.w NULL unless gated; wi0 is "wi" then */
} t5_layer_t;

struct sdc_t5 {
    sdc_t5_config_t cfg;
    sdc_backend_t *be;
    sdc_weights_t w;
    char embed_name[64];
    t5_layer_t *layers;
    float *final_ln;
    float *rel_bias; /* host copy, num_buckets x num_heads */
};

const sdc_t5_config_t *sdc_t5_config(const sdc_t5_t *m)
{
    return &m->cfg;
}

int64_t sdc_t5_bucket(int64_t rel, int bidirectional, int64_t num_buckets, int64_t max_distance)
{
    int64_t bucket = 0;
    if (bidirectional) {
        num_buckets /= 2;
        if (rel > 0)
            bucket += num_buckets;
        rel = rel < 0 ? -rel : rel;
    } else {
        rel = rel < 0 ? -rel : 0;
    }
    int64_t max_exact = num_buckets / 2;
    if (rel < max_exact)
        return bucket + rel;
    /* torch: log(rel.float() / max_exact) / math.log(max_distance / max_exact)
     * * (num_buckets - max_exact), each step in float32, then truncated. */
    float x = logf((float)rel / (float)max_exact);
    x = x / (float)log((double)max_distance / (double)max_exact);
    x = x * (float)(num_buckets - max_exact);
    int64_t large = max_exact + (int64_t)x;
    return bucket + (large < num_buckets - 1 ? large : num_buckets - 1);
}

static sdc_status_t load_layer(sdc_t5_t *m, int64_t i, sdc_error_t *err)
{
    const sdc_t5_config_t *c = &m->cfg;
    t5_layer_t *L = &m->layers[i];
    const int64_t d = c->d_model, inner = c->num_heads * c->d_kv, ff = c->d_ff;
    float **norm[2] = {&L->ln0, &L->ln1};
    const struct {
        const char *suffix;
        sdc_linear_w_t *dst;
        int64_t out, in;
    } lin[] = {
        {"0.SelfAttention.q.weight", &L->q, inner, d},
        {"0.SelfAttention.k.weight", &L->k, inner, d},
        {"0.SelfAttention.v.weight", &L->v, inner, d},
        {"0.SelfAttention.o.weight", &L->o, d, inner},
        {c->gated ? "1.DenseReluDense.wi_0.weight" : "1.DenseReluDense.wi.weight", &L->wi0, ff,
         d},
        {c->gated ? "1.DenseReluDense.wi_1.weight" : NULL, &L->wi1, ff, d},
        {"1.DenseReluDense.wo.weight", &L->wo, d, ff},
    };
    for (int k = 0; k < 2; k++) {
        sdc_status_t st = sdc_weights_loadf(&m->w, 1, &d, norm[k], err,
                                            "encoder.block.%lld.layer.%d.layer_norm.weight",
                                            (long long)i, k);
        if (st != SDC_OK)
            return st;
    }
    for (size_t k = 0; k < sizeof(lin) / sizeof(lin[0]); k++) {
        if (!lin[k].suffix)
            continue;
        sdc_status_t st = sdc_weights_load_linearf(&m->w, lin[k].out, lin[k].in, lin[k].dst, err,
                                                   "encoder.block.%lld.layer.%s", (long long)i,
                                                   lin[k].suffix);
        if (st != SDC_OK)
            return st;
    }
    return SDC_OK;
}

static sdc_status_t load_rel_bias(sdc_t5_t *m, sdc_error_t *err)
{
    const sdc_t5_config_t *c = &m->cfg;
    const int64_t shape[2] = {c->num_buckets, c->num_heads};
    float *dev;
    sdc_status_t st = sdc_weights_load(
        &m->w, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", 2, shape,
        &dev, err);
    if (st != SDC_OK)
        return st;
    size_t bytes = (size_t)(c->num_buckets * c->num_heads) * sizeof(float);
    m->rel_bias = malloc(bytes);
    if (!m->rel_bias)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    m->be->ops->download(m->be, m->rel_bias, dev, bytes);
    m->be->ops->sync(m->be);
    return SDC_OK;
}

void sdc_t5_free(sdc_t5_t *m)
{
    if (!m)
        return;
    sdc_weights_close(&m->w);
    free(m->layers);
    free(m->rel_bias);
    free(m);
}

sdc_status_t sdc_t5_load(sdc_t5_t **out, sdc_backend_t *be, const char *dir, sdc_error_t *err)
{
    char path[4096];
    sdc_status_t st;
    sdc_t5_t *m = calloc(1, sizeof(*m));
    if (!m)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    m->be = be;
    if (snprintf(path, sizeof(path), "%s/config.json", dir) >= (int)sizeof(path)) {
        st = sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: path too long", dir);
        goto err_free;
    }
    st = sdc_t5_config_load(&m->cfg, path, err);
    if (st != SDC_OK)
        goto err_free;
    st = sdc_weights_open(&m->w, be, dir, err);
    if (st != SDC_OK)
        goto err_free;
    /* T5EncoderModel ties encoder.embed_tokens to shared and saves one of
     * them; checkpoints of the full model have both. */
    snprintf(m->embed_name, sizeof(m->embed_name), "%s",
             sdc_weights_has(&m->w, "encoder.embed_tokens.weight") ? "encoder.embed_tokens.weight"
                                                                    : "shared.weight");
    if (!sdc_weights_has(&m->w, m->embed_name)) {
        st = sdc_error_set(err, SDC_ERR_NOT_FOUND,
                           "%s: no token embedding (shared.weight or encoder.embed_tokens.weight)",
                           dir);
        goto err_free;
    }
    m->layers = calloc((size_t)m->cfg.num_layers, sizeof(*m->layers));
    if (!m->layers) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        goto err_free;
    }
    for (int64_t i = 0; i < m->cfg.num_layers && st == SDC_OK; i++)
        st = load_layer(m, i, err);
    const int64_t s_d[1] = {m->cfg.d_model};
    if (st == SDC_OK)
        st = sdc_weights_load(&m->w, "encoder.final_layer_norm.weight", 1, s_d, &m->final_ln, err);
    if (st == SDC_OK)
        st = load_rel_bias(m, err);
    if (st != SDC_OK)
        goto err_free;
    *out = m;
    return SDC_OK;

err_free:
    sdc_t5_free(m);
    return st;
}

/* Device buffers of one forward. */
typedef struct {
    float *x, *xn, *q, *k, *v, *att, *ff0, *ff1, *bias, *scratch;
} t5_bufs_t;

static void act_apply(sdc_backend_t *be, sdc_t5_act_t act, float *x, int64_t n)
{
    switch (act) {
    case SDC_T5_ACT_GELU_TANH: be->ops->gelu_tanh(be, x, x, n); break;
    case SDC_T5_ACT_GELU: be->ops->gelu_erf(be, x, x, n); break;
    case SDC_T5_ACT_SILU: be->ops->silu(be, x, x, n); break;
    }
}

static void t5_layer(sdc_t5_t *m, const t5_layer_t *L, const t5_bufs_t *b, int64_t n)
{
    sdc_backend_t *be = m->be;
    const sdc_backend_ops_t *op = be->ops;
    const sdc_t5_config_t *c = &m->cfg;
    const int64_t d = c->d_model, inner = c->num_heads * c->d_kv, ff = c->d_ff;
    const float eps = (float)c->eps;

    op->rms_norm(be, b->xn, b->x, L->ln0, n, d, d, eps);
    sdc_be_linear(be, b->q, inner, b->xn, d, &L->q, NULL, n, d, inner);
    sdc_be_linear(be, b->k, inner, b->xn, d, &L->k, NULL, n, d, inner);
    sdc_be_linear(be, b->v, inner, b->xn, d, &L->v, NULL, n, d, inner);
    sdc_text_attention(be, b->att, inner, b->q, inner, b->k, inner, b->v, inner, n,
                       c->num_heads, c->num_heads, c->d_kv, 1.0f, b->bias, 1, b->scratch);
    sdc_be_linear(be, b->xn, d, b->att, inner, &L->o, NULL, n, inner, d);
    op->add(be, b->x, b->x, b->xn, n * d);

    op->rms_norm(be, b->xn, b->x, L->ln1, n, d, d, eps);
    sdc_be_linear(be, b->ff0, ff, b->xn, d, &L->wi0, NULL, n, d, ff);
    act_apply(be, c->act, b->ff0, n * ff);
    if (L->wi1.w) {
        sdc_be_linear(be, b->ff1, ff, b->xn, d, &L->wi1, NULL, n, d, ff);
        op->mul(be, b->ff0, b->ff0, b->ff1, n * ff);
    }
    sdc_be_linear(be, b->xn, d, b->ff0, ff, &L->wo, NULL, n, ff, d);
    op->add(be, b->x, b->x, b->xn, n * d);
}

/* position_bias[h, i, j] = rel_bias[bucket(j - i), h], host memory. */
static void fill_bias(const sdc_t5_t *m, float *bias, int64_t n)
{
    const sdc_t5_config_t *c = &m->cfg;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            int64_t bk = sdc_t5_bucket(j - i, 1, c->num_buckets, c->max_distance);
            for (int64_t h = 0; h < c->num_heads; h++)
                bias[(h * n + i) * n + j] = m->rel_bias[bk * c->num_heads + h];
        }
}

sdc_status_t sdc_t5_encode(sdc_t5_t *m, const int32_t *ids, int64_t n, float *out,
                           sdc_error_t *err)
{
    sdc_backend_t *be = m->be;
    const sdc_t5_config_t *c = &m->cfg;
    const int64_t d = c->d_model, inner = c->num_heads * c->d_kv, H = c->num_heads;
    sdc_status_t st = SDC_OK;
    float *host = NULL, *hbias = NULL;
    t5_bufs_t b = {0};
    if (n <= 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "T5: no tokens to encode");
    if (n > T5_MAX_TOKENS)
        return sdc_error_set(err, SDC_ERR_RANGE, "T5: %lld tokens is too many (max %d)",
                             (long long)n, T5_MAX_TOKENS);
    const int64_t sizes[] = {n * d, n * d, n * inner, n * inner, n * inner, n * inner,
                             n * c->d_ff, n * c->d_ff, H * n * n,
                             sdc_text_attention_scratch(n, H, H, c->d_kv, 1)};
    float **bufs[] = {&b.x, &b.xn, &b.q, &b.k, &b.v, &b.att, &b.ff0, &b.ff1, &b.bias, &b.scratch};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
        *bufs[i] = be->ops->alloc(be, (size_t)sizes[i] * sizeof(float));
        if (!*bufs[i]) {
            st = sdc_error_set(err, SDC_ERR_NOMEM, "T5: out of memory for %lld tokens",
                               (long long)n);
            goto out;
        }
    }
    host = malloc((size_t)(n * d) * sizeof(float));
    hbias = malloc((size_t)(H * n * n) * sizeof(float));
    if (!host || !hbias) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "T5: out of memory for %lld tokens", (long long)n);
        goto out;
    }
    st = sdc_weights_gather_rows(&m->w, m->embed_name, ids, n, d, host, err);
    if (st != SDC_OK)
        goto out;
    fill_bias(m, hbias, n);
    be->ops->upload(be, b.x, host, (size_t)(n * d) * sizeof(float));
    be->ops->upload(be, b.bias, hbias, (size_t)(H * n * n) * sizeof(float));
    for (int64_t i = 0; i < c->num_layers; i++)
        t5_layer(m, &m->layers[i], &b, n);
    be->ops->rms_norm(be, b.x, b.x, m->final_ln, n, d, d, (float)c->eps);
    be->ops->download(be, out, b.x, (size_t)(n * d) * sizeof(float));
    be->ops->sync(be);
out:
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        if (*bufs[i])
            be->ops->free(be, *bufs[i]);
    free(host);
    free(hbias);
    return st;
}
