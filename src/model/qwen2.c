/*
 * qwen2.c: the Qwen2.5-VL language model forward (see qwen2.h) on backend
 * ops only.
 *
 * RoPE: transformers rotates the pairs (x[j], x[j + Dh/2]) (rotate_half);
 * the backend's rope op rotates interleaved pairs (x[2j], x[2j+1]). q and k
 * are copied into the interleaved order before rotating. Attention scores
 * are dot products over a head's dimensions, which do not depend on their
 * order as long as q and k agree, so the attention runs on the permuted
 * copies and v stays as it is.
 *
 * Causal attention: text_attention with an L x L bias of 0 on and below the
 * diagonal and -inf above it (the backend's attention op has no causal
 * mask).
 */
#include "qwen2.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/config.h"
#include "text_attention.h"
#include "weights.h"

#define QWEN2_MAX_DIM (1 << 16)
#define QWEN2_MAX_LAYERS 1024
#define QWEN2_MAX_VOCAB (1 << 24)
/* Text encoders see about a thousand tokens; the L x L mask and one head's
 * scores (256 MB each at this bound) are what limits it. */
#define QWEN2_MAX_TOKENS 8192

typedef struct {
    float *in_norm, *q_b, *k_b, *v_b, *post_norm;
    sdc_linear_w_t q_w, k_w, v_w, o_w, gate_w, up_w, down_w;
} qwen2_layer_t;

struct sdc_qwen2 {
    sdc_qwen2_config_t cfg;
    sdc_backend_t *be;
    sdc_weights_t w;
    char prefix[32]; /* "model.language_model." or "model." */
    char embed_name[64];
    int64_t n_run;
    qwen2_layer_t *layers;
    float *final_norm; /* NULL unless the last hidden state is wanted */
    float *inv_freq;   /* head_dim / 2, host */
};

/* ---- config ------------------------------------------------------------- */

static sdc_status_t need_int(const sdc_json_t *doc, const char *key, int64_t lo, int64_t hi,
                             int64_t *out, sdc_error_t *err)
{
    if (!sdc_json_has(doc, key))
        return sdc_error_set(err, SDC_ERR_NOT_FOUND, "%s: '%s' is missing", doc->path, key);
    sdc_status_t st = sdc_json_get_int(doc, key, 0, out, err);
    if (st == SDC_OK && (*out < lo || *out > hi))
        st = sdc_error_set(err, SDC_ERR_RANGE, "%s: %s = %lld is outside %lld..%lld", doc->path,
                           key, (long long)*out, (long long)lo, (long long)hi);
    return st;
}

/* transformers: rope_parameters = rope_scaling or rope_parameters; its
 * rope_theta, else the rope_theta key, else 1e6. "mrope" means "default". */
static sdc_status_t cfg_rope(sdc_qwen2_config_t *c, const sdc_json_t *text, sdc_error_t *err)
{
    sdc_json_t rp;
    const char *type = NULL;
    sdc_status_t st = sdc_json_get_object(text, "rope_scaling", &rp, err);
    if (st == SDC_OK && !rp.root)
        st = sdc_json_get_object(text, "rope_parameters", &rp, err);
    if (st == SDC_OK)
        st = sdc_json_get_double(text, "rope_theta", 1000000.0, &c->rope_theta, err);
    if (st != SDC_OK || !rp.root)
        return st;
    if ((st = sdc_json_get_double(&rp, "rope_theta", c->rope_theta, &c->rope_theta, err)) ||
        (st = sdc_json_get_string(&rp, "type", "default", &type, err)) ||
        (st = sdc_json_get_string(&rp, "rope_type", type, &type, err)))
        return st;
    if (strcmp(type, "default") != 0 && strcmp(type, "mrope") != 0)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: rope type '%s' is not supported (default / mrope)", text->path,
                             type);
    int64_t sec[8];
    size_t n_sec = 0;
    st = sdc_json_get_int_array(&rp, "mrope_section", NULL, 0, sec, 8, &n_sec, err);
    if (st != SDC_OK || n_sec == 0)
        return st;
    int64_t sum = 0;
    for (size_t i = 0; i < n_sec; i++)
        sum += sec[i];
    if (sum != c->head_dim / 2)
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "%s: mrope_section sums to %lld, expected head_dim / 2 = %lld",
                             text->path, (long long)sum, (long long)(c->head_dim / 2));
    return SDC_OK;
}

static sdc_status_t cfg_text(sdc_qwen2_config_t *c, const sdc_json_t *t, sdc_error_t *err)
{
    const char *act;
    int sliding = 0;
    int64_t head_dim;
    sdc_status_t st;
    if ((st = need_int(t, "vocab_size", 1, QWEN2_MAX_VOCAB, &c->vocab_size, err)) ||
        (st = need_int(t, "hidden_size", 1, QWEN2_MAX_DIM, &c->hidden_size, err)) ||
        (st = need_int(t, "intermediate_size", 1, 1 << 20, &c->intermediate_size, err)) ||
        (st = need_int(t, "num_hidden_layers", 1, QWEN2_MAX_LAYERS, &c->num_layers, err)) ||
        (st = need_int(t, "num_attention_heads", 1, 4096, &c->num_heads, err)) ||
        (st = sdc_json_get_int(t, "num_key_value_heads", c->num_heads, &c->num_kv_heads, err)) ||
        (st = sdc_json_get_double(t, "rms_norm_eps", 1e-5, &c->rms_eps, err)) ||
        (st = sdc_json_get_string(t, "hidden_act", "silu", &act, err)) ||
        (st = sdc_json_get_bool(t, "use_sliding_window", 0, &sliding, err)))
        return st;
    if (c->num_kv_heads < 1 || c->num_heads % c->num_kv_heads != 0)
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "%s: num_key_value_heads %lld does not divide num_attention_heads "
                             "%lld",
                             t->path, (long long)c->num_kv_heads, (long long)c->num_heads);
    c->head_dim = c->hidden_size / c->num_heads;
    if (c->head_dim * c->num_heads != c->hidden_size || c->head_dim % 2 != 0)
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "%s: hidden_size %lld is not num_attention_heads %lld times an even "
                             "head size",
                             t->path, (long long)c->hidden_size, (long long)c->num_heads);
    st = sdc_json_get_int(t, "head_dim", c->head_dim, &head_dim, err);
    if (st == SDC_OK && head_dim != c->head_dim)
        st = sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                           "%s: head_dim %lld differs from hidden_size / num_attention_heads = "
                           "%lld",
                           t->path, (long long)head_dim, (long long)c->head_dim);
    if (st == SDC_OK && strcmp(act, "silu") != 0)
        st = sdc_error_set(err, SDC_ERR_UNSUPPORTED, "%s: hidden_act '%s' is not supported (silu)",
                           t->path, act);
    if (st == SDC_OK && sliding)
        st = sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                           "%s: use_sliding_window is set; sdc runs full attention only", t->path);
    if (st == SDC_OK && !(c->rms_eps > 0 && c->rms_eps < 1))
        st = sdc_error_set(err, SDC_ERR_RANGE, "%s: rms_norm_eps %g is outside (0, 1)", t->path,
                           c->rms_eps);
    if (st == SDC_OK)
        st = cfg_rope(c, t, err);
    if (st == SDC_OK && !(c->rope_theta > 1))
        st = sdc_error_set(err, SDC_ERR_RANGE, "%s: rope_theta %g must be > 1", t->path,
                           c->rope_theta);
    return st;
}

sdc_status_t sdc_qwen2_config_load(sdc_qwen2_config_t *c, const char *config_json,
                                   sdc_error_t *err)
{
    static const char *const types[] = {"qwen2_5_vl", "qwen2_vl", "qwen2"};
    sdc_json_t doc, text;
    const char *mt;
    memset(c, 0, sizeof(*c));
    sdc_status_t st = sdc_json_load(&doc, config_json, err);
    if (st != SDC_OK)
        return st;
    st = sdc_json_get_string(&doc, "model_type", "", &mt, err);
    size_t i = 0;
    while (st == SDC_OK && i < sizeof(types) / sizeof(types[0]) && strcmp(mt, types[i]) != 0)
        i++;
    if (st == SDC_OK && i == sizeof(types) / sizeof(types[0]))
        st = sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                           "%s: model_type '%s' is not a Qwen2 / Qwen2.5-VL language model",
                           config_json, mt);
    if (st == SDC_OK)
        st = sdc_json_get_object(&doc, "text_config", &text, err);
    if (st == SDC_OK)
        st = cfg_text(c, text.root ? &text : &doc, err);
    sdc_json_free(&doc);
    return st;
}

/* ---- weights ------------------------------------------------------------ */

const sdc_qwen2_config_t *sdc_qwen2_config(const sdc_qwen2_t *m)
{
    return &m->cfg;
}

int64_t sdc_qwen2_layers_run(const sdc_qwen2_t *m)
{
    return m->n_run;
}

static sdc_status_t load_layer(sdc_qwen2_t *m, int64_t i, sdc_error_t *err)
{
    const sdc_qwen2_config_t *c = &m->cfg;
    qwen2_layer_t *L = &m->layers[i];
    const int64_t D = c->hidden_size, I = c->intermediate_size;
    const int64_t Dq = c->num_heads * c->head_dim, Dkv = c->num_kv_heads * c->head_dim;
    const int64_t s_d[1] = {D}, s_qb[1] = {Dq}, s_kvb[1] = {Dkv};
    const struct {
        const char *suffix;
        float **dst;
        const int64_t *shape;
    } vec[] = {
        {"input_layernorm.weight", &L->in_norm, s_d},
        {"self_attn.q_proj.bias", &L->q_b, s_qb},
        {"self_attn.k_proj.bias", &L->k_b, s_kvb},
        {"self_attn.v_proj.bias", &L->v_b, s_kvb},
        {"post_attention_layernorm.weight", &L->post_norm, s_d},
    };
    const struct {
        const char *suffix;
        sdc_linear_w_t *dst;
        int64_t out, in;
    } lin[] = {
        {"self_attn.q_proj.weight", &L->q_w, Dq, D},
        {"self_attn.k_proj.weight", &L->k_w, Dkv, D},
        {"self_attn.v_proj.weight", &L->v_w, Dkv, D},
        {"self_attn.o_proj.weight", &L->o_w, D, Dq},
        {"mlp.gate_proj.weight", &L->gate_w, I, D},
        {"mlp.up_proj.weight", &L->up_w, I, D},
        {"mlp.down_proj.weight", &L->down_w, D, I},
    };
    for (size_t k = 0; k < sizeof(vec) / sizeof(vec[0]); k++) {
        sdc_status_t st = sdc_weights_loadf(&m->w, 1, vec[k].shape, vec[k].dst, err,
                                            "%slayers.%lld.%s", m->prefix, (long long)i,
                                            vec[k].suffix);
        if (st != SDC_OK)
            return st;
    }
    for (size_t k = 0; k < sizeof(lin) / sizeof(lin[0]); k++) {
        sdc_status_t st = sdc_weights_load_linearf(&m->w, lin[k].out, lin[k].in, lin[k].dst, err,
                                                   "%slayers.%lld.%s", m->prefix, (long long)i,
                                                   lin[k].suffix);
        if (st != SDC_OK)
            return st;
    }
    return SDC_OK;
}

/* transformers: inv_freq = 1 / base ** (arange(0, dim, 2).float() / dim), in
 * float32. */
static sdc_status_t make_inv_freq(sdc_qwen2_t *m, sdc_error_t *err)
{
    const int64_t half = m->cfg.head_dim / 2;
    m->inv_freq = malloc((size_t)half * sizeof(float));
    if (!m->inv_freq)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    for (int64_t j = 0; j < half; j++) {
        float e = (float)(2 * j) / (float)m->cfg.head_dim;
        float p = (float)pow((double)(float)m->cfg.rope_theta, (double)e);
        m->inv_freq[j] = 1.0f / p;
    }
    return SDC_OK;
}

void sdc_qwen2_free(sdc_qwen2_t *m)
{
    if (!m)
        return;
    sdc_weights_close(&m->w);
    free(m->layers);
    free(m->inv_freq);
    free(m);
}

sdc_status_t sdc_qwen2_load(sdc_qwen2_t **out, sdc_backend_t *be, const char *dir, int skip,
                            sdc_error_t *err)
{
    char path[4096];
    sdc_status_t st;
    sdc_qwen2_t *m = calloc(1, sizeof(*m));
    if (!m)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    m->be = be;
    if (snprintf(path, sizeof(path), "%s/config.json", dir) >= (int)sizeof(path)) {
        st = sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: path too long", dir);
        goto err_free;
    }
    st = sdc_qwen2_config_load(&m->cfg, path, err);
    if (st != SDC_OK)
        goto err_free;
    if (skip < 0 || skip > m->cfg.num_layers) {
        st = sdc_error_set(err, SDC_ERR_RANGE,
                           "%s: hidden state -%d does not exist in a %lld-layer model", dir,
                           skip + 1, (long long)m->cfg.num_layers);
        goto err_free;
    }
    m->n_run = m->cfg.num_layers - skip;
    st = sdc_weights_open(&m->w, be, dir, err);
    if (st != SDC_OK)
        goto err_free;
    /* transformers >= 4.52 nests the decoder under model.language_model;
     * older checkpoints (and plain Qwen2) have it at model. */
    static const char *const prefixes[] = {"model.language_model.", "model."};
    for (size_t i = 0; i < 2 && !m->prefix[0]; i++) {
        snprintf(m->embed_name, sizeof(m->embed_name), "%sembed_tokens.weight", prefixes[i]);
        if (sdc_weights_has(&m->w, m->embed_name))
            snprintf(m->prefix, sizeof(m->prefix), "%s", prefixes[i]);
    }
    if (!m->prefix[0]) {
        st = sdc_error_set(err, SDC_ERR_NOT_FOUND,
                           "%s: no language model embedding (model.language_model.embed_tokens"
                           ".weight or model.embed_tokens.weight)",
                           dir);
        goto err_free;
    }
    m->layers = calloc((size_t)(m->n_run ? m->n_run : 1), sizeof(*m->layers));
    if (!m->layers) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        goto err_free;
    }
    for (int64_t i = 0; i < m->n_run && st == SDC_OK; i++)
        st = load_layer(m, i, err);
    const int64_t s_d[1] = {m->cfg.hidden_size};
    if (st == SDC_OK && skip == 0)
        st = sdc_weights_loadf(&m->w, 1, s_d, &m->final_norm, err, "%snorm.weight", m->prefix);
    if (st == SDC_OK)
        st = make_inv_freq(m, err);
    if (st != SDC_OK)
        goto err_free;
    *out = m;
    return SDC_OK;

err_free:
    sdc_qwen2_free(m);
    return st;
}

/* ---- forward ------------------------------------------------------------ */

typedef struct {
    float *x, *xn, *q, *k, *v, *qr, *kr, *att, *gate, *up;
    float *mask, *cos, *sin, *scratch;
} qwen2_bufs_t;

/* rotate_half order -> interleaved pairs: dst[t, h, 2j + s] = src[t, h, j + s * Dh/2]. */
static void to_pairs(sdc_backend_t *be, float *dst, const float *src, int64_t L, int64_t H,
                     int64_t Dh)
{
    const int64_t shape[4] = {L, H, Dh / 2, 2};
    const int64_t ds[4] = {H * Dh, Dh, 2, 1}, ss[4] = {H * Dh, Dh, 1, Dh / 2};
    be->ops->copy_strided(be, dst, src, 4, shape, ds, ss);
}

static void qwen2_layer(sdc_qwen2_t *m, const qwen2_layer_t *Ly, const qwen2_bufs_t *b, int64_t L)
{
    sdc_backend_t *be = m->be;
    const sdc_backend_ops_t *op = be->ops;
    const sdc_qwen2_config_t *c = &m->cfg;
    const int64_t D = c->hidden_size, I = c->intermediate_size, Dh = c->head_dim;
    const int64_t H = c->num_heads, Hkv = c->num_kv_heads, Dq = H * Dh, Dkv = Hkv * Dh;
    const float eps = (float)c->rms_eps;

    op->rms_norm(be, b->xn, b->x, Ly->in_norm, L, D, D, eps);
    sdc_be_linear(be, b->q, Dq, b->xn, D, &Ly->q_w, Ly->q_b, L, D, Dq);
    sdc_be_linear(be, b->k, Dkv, b->xn, D, &Ly->k_w, Ly->k_b, L, D, Dkv);
    sdc_be_linear(be, b->v, Dkv, b->xn, D, &Ly->v_w, Ly->v_b, L, D, Dkv);
    to_pairs(be, b->qr, b->q, L, H, Dh);
    to_pairs(be, b->kr, b->k, L, Hkv, Dh);
    op->rope(be, b->qr, Dq, b->cos, b->sin, L, H, Dh);
    op->rope(be, b->kr, Dkv, b->cos, b->sin, L, Hkv, Dh);
    sdc_text_attention(be, b->att, Dq, b->qr, Dq, b->kr, Dkv, b->v, Dkv, L, H, Hkv, Dh,
                       1.0f / sqrtf((float)Dh), b->mask, 0, b->scratch);
    sdc_be_linear(be, b->xn, D, b->att, Dq, &Ly->o_w, NULL, L, Dq, D);
    op->add(be, b->x, b->x, b->xn, L * D);

    op->rms_norm(be, b->xn, b->x, Ly->post_norm, L, D, D, eps);
    sdc_be_linear(be, b->gate, I, b->xn, D, &Ly->gate_w, NULL, L, D, I);
    sdc_be_linear(be, b->up, I, b->xn, D, &Ly->up_w, NULL, L, D, I);
    op->silu(be, b->gate, b->gate, L * I);
    op->mul(be, b->gate, b->gate, b->up, L * I);
    sdc_be_linear(be, b->xn, D, b->gate, I, &Ly->down_w, NULL, L, I, D);
    op->add(be, b->x, b->x, b->xn, L * D);
}

/* Host tables: the causal bias and the RoPE cos/sin in interleaved order
 * (both entries of pair j hold position * inv_freq[j]). */
static void fill_tables(const sdc_qwen2_t *m, int64_t L, float *mask, float *cs, float *sn)
{
    const int64_t Dh = m->cfg.head_dim;
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j < L; j++)
            mask[i * L + j] = j <= i ? 0.0f : -INFINITY;
    for (int64_t t = 0; t < L; t++)
        for (int64_t j = 0; j < Dh / 2; j++) {
            float a = (float)t * m->inv_freq[j];
            float cv = (float)cos((double)a), sv = (float)sin((double)a);
            cs[t * Dh + 2 * j] = cs[t * Dh + 2 * j + 1] = cv;
            sn[t * Dh + 2 * j] = sn[t * Dh + 2 * j + 1] = sv;
        }
}

sdc_status_t sdc_qwen2_forward(sdc_qwen2_t *m, const int32_t *ids, int64_t L, float *out,
                               sdc_error_t *err)
{
    sdc_backend_t *be = m->be;
    const sdc_qwen2_config_t *c = &m->cfg;
    const int64_t D = c->hidden_size, I = c->intermediate_size, Dh = c->head_dim;
    const int64_t Dq = c->num_heads * Dh, Dkv = c->num_kv_heads * Dh;
    sdc_status_t st = SDC_OK;
    float *host = NULL, *hmask = NULL, *hcos = NULL, *hsin = NULL;
    qwen2_bufs_t b = {0};
    if (L <= 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "Qwen2: no tokens to encode");
    if (L > QWEN2_MAX_TOKENS)
        return sdc_error_set(err, SDC_ERR_RANGE, "Qwen2: %lld tokens is too many (max %d)",
                             (long long)L, QWEN2_MAX_TOKENS);
    const int64_t scratch = sdc_text_attention_scratch(L, c->num_heads, c->num_kv_heads, Dh, 0);
    const int64_t sizes[] = {L * D,  L * D, L * Dq, L * Dkv, L * Dkv, L * Dq, L * Dkv,
                             L * Dq, L * I, L * I,  L * L,   L * Dh,  L * Dh, scratch};
    float **bufs[] = {&b.x,   &b.xn, &b.q,    &b.k,   &b.v,   &b.qr,  &b.kr,
                      &b.att, &b.gate, &b.up, &b.mask, &b.cos, &b.sin, &b.scratch};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
        *bufs[i] = be->ops->alloc(be, (size_t)sizes[i] * sizeof(float));
        if (!*bufs[i]) {
            st = sdc_error_set(err, SDC_ERR_NOMEM, "Qwen2: out of memory for %lld tokens",
                               (long long)L);
            goto out;
        }
    }
    host = malloc((size_t)(L * D) * sizeof(float));
    hmask = malloc((size_t)(L * L) * sizeof(float));
    hcos = malloc((size_t)(L * Dh) * sizeof(float));
    hsin = malloc((size_t)(L * Dh) * sizeof(float));
    if (!host || !hmask || !hcos || !hsin) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "Qwen2: out of memory for %lld tokens",
                           (long long)L);
        goto out;
    }
    st = sdc_weights_gather_rows(&m->w, m->embed_name, ids, L, D, host, err);
    if (st != SDC_OK)
        goto out;
    fill_tables(m, L, hmask, hcos, hsin);
    be->ops->upload(be, b.x, host, (size_t)(L * D) * sizeof(float));
    be->ops->upload(be, b.mask, hmask, (size_t)(L * L) * sizeof(float));
    be->ops->upload(be, b.cos, hcos, (size_t)(L * Dh) * sizeof(float));
    be->ops->upload(be, b.sin, hsin, (size_t)(L * Dh) * sizeof(float));
    for (int64_t i = 0; i < m->n_run; i++)
        qwen2_layer(m, &m->layers[i], &b, L);
    if (m->final_norm)
        be->ops->rms_norm(be, b.x, b.x, m->final_norm, L, D, D, (float)c->rms_eps);
    be->ops->download(be, out, b.x, (size_t)(L * D) * sizeof(float));
    be->ops->sync(be);
out:
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        if (*bufs[i])
            be->ops->free(be, *bufs[i]);
    free(host);
    free(hmask);
    free(hcos);
    free(hsin);
    return st;
}
