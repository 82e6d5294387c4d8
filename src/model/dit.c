/*
 * dit.c: HunyuanImageTransformer2DModel: configuration, loading a block
 * range, sample buffers, running blocks, and the output head (norm_out,
 * proj_out, unpatchify).
 *
 * The embedding stage lives in dit_embed.c, the blocks in dit_blocks.c, the
 * rotary tables in dit_rope.c. Nothing here is thread-safe: one sdc_dit_t
 * runs one call at a time (its scratch buffers are shared by calls).
 */
#include "dit.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dit_internal.h"

#define DIT_CLASS "HunyuanImageTransformer2DModel"
/* Sanity bounds on config values: far above any real model, low enough that
 * every size product below fits in int64 and a typo cannot ask for exabytes. */
#define DIT_MAX_DIM 65536
#define DIT_MAX_HEADS 1024
#define DIT_MAX_LAYERS 4096
#define DIT_MAX_PATCH 64
#define DIT_MAX_MLP_RATIO 64.0
/* Tokens of one sample (image + text); 2^22 is a 65k x 65k latent. */
#define DIT_MAX_TOKENS (INT64_C(1) << 22)

/* ---- configuration ------------------------------------------------------ */

static sdc_status_t cfg_int(const sdc_json_t *doc, const char *key, int64_t def, int64_t lo,
                            int64_t hi, int64_t *out, sdc_error_t *err)
{
    sdc_status_t st = sdc_json_get_int(doc, key, def, out, err);
    if (st != SDC_OK) return st;
    if (*out < lo || *out > hi)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: %s = %lld is outside [%lld, %lld]",
                             doc->path, key, (long long)*out, (long long)lo, (long long)hi);
    return SDC_OK;
}

/* A 2-element positive integer array (patch_size, rope_axes_dim, ...). */
static sdc_status_t cfg_pair(const sdc_json_t *doc, const char *key, const int64_t *def,
                             int64_t hi, int64_t *out, sdc_error_t *err)
{
    int64_t v[4];
    size_t n = 0;
    sdc_status_t st = sdc_json_get_int_array(doc, key, def, 2, v, 4, &n, err);
    if (st != SDC_OK) return st;
    if (n != 2)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: %s has %zu entries; only 2 (height, width) are supported",
                             doc->path, key, n);
    for (int i = 0; i < 2; i++) {
        if (v[i] < 1 || v[i] > hi)
            return sdc_error_set(err, SDC_ERR_RANGE, "%s: %s[%d] = %lld is outside [1, %lld]",
                                 doc->path, key, i, (long long)v[i], (long long)hi);
        out[i] = v[i];
    }
    return SDC_OK;
}

/* patch_size / rope_axes_dim: 2 entries (height, width), or 3 with a
 * leading frame entry returned in *lead (-1 when absent). */
static sdc_status_t cfg_axes(const sdc_json_t *doc, const char *key, const int64_t *def,
                             int64_t hi, int64_t *out, int64_t *lead, sdc_error_t *err)
{
    int64_t v[4];
    size_t n = 0;
    sdc_status_t st = sdc_json_get_int_array(doc, key, def, 2, v, 4, &n, err);
    if (st != SDC_OK) return st;
    if (n != 2 && n != 3)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: %s has %zu entries; 2 (height, width) or 3 (frame, height, "
                             "width) are supported",
                             doc->path, key, n);
    for (size_t i = 0; i < n; i++)
        if (v[i] < 1 || v[i] > hi)
            return sdc_error_set(err, SDC_ERR_RANGE, "%s: %s[%zu] = %lld is outside [1, %lld]",
                                 doc->path, key, i, (long long)v[i], (long long)hi);
    *lead = n == 3 ? v[0] : -1;
    out[0] = v[n - 2];
    out[1] = v[n - 1];
    return SDC_OK;
}

static sdc_status_t cfg_check_class(const sdc_json_t *doc, sdc_error_t *err)
{
    const char *cls = NULL;
    sdc_status_t st = sdc_json_get_string(doc, "_class_name", NULL, &cls, err);
    if (st != SDC_OK) return st;
    if (!cls)
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: no _class_name (want %s)", doc->path,
                             DIT_CLASS);
    if (strcmp(cls, DIT_CLASS) != 0)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED, "%s: _class_name is %s, want %s",
                             doc->path, cls, DIT_CLASS);
    const char *qk = NULL;
    st = sdc_json_get_string(doc, "qk_norm", "rms_norm", &qk, err);
    if (st != SDC_OK) return st;
    if (strcmp(qk, "rms_norm") != 0)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED, "%s: qk_norm is %s; only rms_norm is "
                             "supported", doc->path, qk);
    return SDC_OK;
}

static sdc_status_t cfg_sizes(sdc_dit_config_t *c, const sdc_json_t *doc, sdc_error_t *err)
{
    sdc_status_t st;
    if ((st = cfg_int(doc, "in_channels", 64, 1, DIT_MAX_DIM, &c->in_channels, err)) ||
        (st = cfg_int(doc, "out_channels", 0, 0, DIT_MAX_DIM, &c->out_channels, err)) ||
        (st = cfg_int(doc, "num_attention_heads", 28, 1, DIT_MAX_HEADS,
                      &c->num_attention_heads, err)) ||
        (st = cfg_int(doc, "attention_head_dim", 128, 2, DIT_MAX_DIM, &c->attention_head_dim,
                      err)) ||
        (st = cfg_int(doc, "num_layers", 20, 0, DIT_MAX_LAYERS, &c->num_layers, err)) ||
        (st = cfg_int(doc, "num_single_layers", 40, 0, DIT_MAX_LAYERS, &c->num_single_layers,
                      err)) ||
        (st = cfg_int(doc, "num_refiner_layers", 2, 0, DIT_MAX_LAYERS, &c->num_refiner_layers,
                      err)) ||
        (st = cfg_int(doc, "text_embed_dim", 3584, 1, DIT_MAX_DIM, &c->text_embed_dim, err)) ||
        (st = cfg_int(doc, "text_embed_2_dim", 0, 0, DIT_MAX_DIM, &c->text_embed_2_dim, err)))
        return st;
    /* diffusers: out_channels = out_channels or in_channels */
    if (c->out_channels == 0) c->out_channels = c->in_channels;
    if (sdc_dit_total_blocks(c) < 1)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: num_layers + num_single_layers is 0",
                             doc->path);
    if (sdc_dit_hidden(c) > DIT_MAX_DIM)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "%s: num_attention_heads %lld x attention_head_dim %lld = %lld "
                             "exceeds %d",
                             doc->path, (long long)c->num_attention_heads,
                             (long long)c->attention_head_dim, (long long)sdc_dit_hidden(c),
                             DIT_MAX_DIM);
    if (c->attention_head_dim % 2)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "%s: attention_head_dim %lld is odd (RoPE rotates pairs)",
                             doc->path, (long long)c->attention_head_dim);
    return SDC_OK;
}

static sdc_status_t cfg_mlp(sdc_dit_config_t *c, const sdc_json_t *doc, sdc_error_t *err)
{
    sdc_status_t st = sdc_json_get_double(doc, "mlp_ratio", 4.0, &c->mlp_ratio, err);
    if (st != SDC_OK) return st;
    if (!(c->mlp_ratio > 0 && c->mlp_ratio <= DIT_MAX_MLP_RATIO) ||
        (int64_t)(sdc_dit_hidden(c) * c->mlp_ratio) < 1)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: mlp_ratio %g is outside (0, %g] or "
                             "gives an empty MLP", doc->path, c->mlp_ratio, DIT_MAX_MLP_RATIO);
    return SDC_OK;
}

static sdc_status_t cfg_rope(sdc_dit_config_t *c, const sdc_json_t *doc, sdc_error_t *err)
{
    static const int64_t def_axes[2] = {64, 64};
    sdc_status_t st = sdc_json_get_double(doc, "rope_theta", 256.0, &c->rope_theta, err);
    if (st != SDC_OK) return st;
    if (!(c->rope_theta > 1.0 && c->rope_theta < 1e12))
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: rope_theta %g is outside (1, 1e12)",
                             doc->path, c->rope_theta);
    int64_t lead = -1;
    st = cfg_axes(doc, "rope_axes_dim", def_axes, DIT_MAX_DIM, c->rope_axes_dim, &lead, err);
    if (st != SDC_OK) return st;
    /* diffusers: patch_size and rope_dim must have the same length. */
    if ((lead > 0) != c->patch_3d)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "%s: patch_size and rope_axes_dim must both have 2 or both 3 entries",
                             doc->path);
    c->rope_frame_dim = lead > 0 ? lead : 0;
    if (c->rope_frame_dim % 2 || c->rope_axes_dim[0] % 2 || c->rope_axes_dim[1] % 2 ||
        c->rope_frame_dim + c->rope_axes_dim[0] + c->rope_axes_dim[1] != c->attention_head_dim)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "%s: rope_axes_dim entries must be even and sum to "
                             "attention_head_dim %lld",
                             doc->path, (long long)c->attention_head_dim);
    st = sdc_json_get_bool(doc, "sdc_rope_centered", 0, &c->rope_centered, err);
    if (st != SDC_OK) return st;
    c->rope_base_grid[0] = c->rope_base_grid[1] = 0;
    if (!c->rope_centered) return SDC_OK;
    if (!sdc_json_has(doc, "sdc_rope_base_grid"))
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "%s: sdc_rope_centered needs sdc_rope_base_grid [h, w] (tokens)",
                             doc->path);
    return cfg_pair(doc, "sdc_rope_base_grid", NULL, DIT_MAX_DIM, c->rope_base_grid, err);
}

sdc_status_t sdc_dit_config_from_json(sdc_dit_config_t *c, const sdc_json_t *doc,
                                      sdc_error_t *err)
{
    static const int64_t def_patch[2] = {1, 1};
    int64_t patch_t = -1;
    memset(c, 0, sizeof(*c));
    sdc_status_t st;
    if ((st = cfg_check_class(doc, err)) || (st = cfg_sizes(c, doc, err)) ||
        (st = cfg_mlp(c, doc, err)) ||
        (st = cfg_axes(doc, "patch_size", def_patch, DIT_MAX_PATCH, c->patch_size, &patch_t,
                       err)))
        return st;
    if (patch_t > 1)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: patch_size has a frame patch of %lld; sdc runs single images "
                             "(one frame), which need 1",
                             doc->path, (long long)patch_t);
    c->patch_3d = patch_t == 1;
    if ((st = sdc_json_get_bool(doc, "guidance_embeds", 0, &c->guidance_embeds, err)) ||
        (st = sdc_json_get_bool(doc, "use_meanflow", 0, &c->use_meanflow, err)) ||
        (st = cfg_rope(c, doc, err)))
        return st;
    return SDC_OK;
}

sdc_status_t sdc_dit_config_load(sdc_dit_config_t *c, const char *config_json, sdc_error_t *err)
{
    sdc_json_t doc;
    sdc_status_t st = sdc_json_load(&doc, config_json, err);
    if (st != SDC_OK) return st;
    st = sdc_dit_config_from_json(c, &doc, err);
    sdc_json_free(&doc);
    return st;
}

/* ---- scratch -------------------------------------------------------------- */

static void *scratch(sdc_dit_t *m, sdc_dit_slot_t slot, size_t bytes, sdc_error_t *err)
{
    if (m->slot_bytes[slot] >= bytes && m->slot[slot]) return m->slot[slot];
    sdc_backend_t *be = m->be;
    if (m->slot[slot]) be->ops->free(be, m->slot[slot]);
    m->slot[slot] = NULL;
    m->slot_bytes[slot] = 0;
    if (slot == SDC_DIT_SLOT_MASK) m->mask_ones = 0;
    size_t want = bytes < 64 ? 64 : bytes;
    void *p = be->ops->alloc(be, want);
    if (!p) {
        sdc_error_set(err, SDC_ERR_NOMEM, "DiT scratch: cannot allocate %zu bytes", want);
        return NULL;
    }
    /* Zeroed once so that no op ever reads uninitialised memory (the
     * single-stream GELU sweeps columns the attention overwrites later). */
    if (slot != SDC_DIT_SLOT_MASK) be->ops->fill(be, p, 0.0f, (int64_t)(want / sizeof(float)));
    m->slot[slot] = p;
    m->slot_bytes[slot] = want;
    return p;
}

sdc_status_t sdc_dit_scratch_f(sdc_dit_t *m, sdc_dit_slot_t slot, int64_t n, float **out,
                               sdc_error_t *err)
{
    *out = scratch(m, slot, (size_t)n * sizeof(float), err);
    return *out ? SDC_OK : SDC_ERR_NOMEM;
}

sdc_status_t sdc_dit_scratch_u8(sdc_dit_t *m, sdc_dit_slot_t slot, int64_t n, uint8_t **out,
                                sdc_error_t *err)
{
    *out = scratch(m, slot, (size_t)n, err);
    return *out ? SDC_OK : SDC_ERR_NOMEM;
}

static void *host_scratch(sdc_dit_t *m, size_t bytes, sdc_error_t *err)
{
    if (m->host_bytes >= bytes && m->host) return m->host;
    free(m->host);
    m->host_bytes = 0;
    m->host = malloc(bytes ? bytes : 1);
    if (!m->host) {
        sdc_error_set(err, SDC_ERR_NOMEM, "DiT: cannot allocate %zu bytes of host staging",
                      bytes);
        return NULL;
    }
    m->host_bytes = bytes;
    return m->host;
}

sdc_status_t sdc_dit_host_f(sdc_dit_t *m, int64_t n, float **out, sdc_error_t *err)
{
    *out = host_scratch(m, (size_t)n * sizeof(float), err);
    return *out ? SDC_OK : SDC_ERR_NOMEM;
}

sdc_status_t sdc_dit_host_u8(sdc_dit_t *m, int64_t n, uint8_t **out, sdc_error_t *err)
{
    *out = host_scratch(m, (size_t)n, err);
    return *out ? SDC_OK : SDC_ERR_NOMEM;
}

sdc_status_t sdc_dit_work_get(sdc_dit_t *m, int64_t L, int64_t mlp, int64_t n_vec,
                              sdc_dit_work_t *wk, sdc_error_t *err)
{
    const int64_t hl = L * m->hidden;
    sdc_status_t st;
    memset(wk, 0, sizeof(*wk));
    if ((st = sdc_dit_scratch_f(m, SDC_DIT_SLOT_NRM, hl, &wk->nrm, err)) ||
        (st = sdc_dit_scratch_f(m, SDC_DIT_SLOT_Q, hl, &wk->q, err)) ||
        (st = sdc_dit_scratch_f(m, SDC_DIT_SLOT_K, hl, &wk->k, err)) ||
        (st = sdc_dit_scratch_f(m, SDC_DIT_SLOT_V, hl, &wk->v, err)) ||
        (st = sdc_dit_scratch_f(m, SDC_DIT_SLOT_BIG, L * (m->hidden + mlp), &wk->big, err)) ||
        (st = sdc_dit_scratch_f(m, SDC_DIT_SLOT_VEC, 12 * m->hidden + n_vec, &wk->mod, err)))
        return st;
    wk->vec = wk->mod + 12 * m->hidden;
    return SDC_OK;
}

void sdc_dit_linear(sdc_dit_t *m, const sdc_dit_linear_t *l, float *y, int64_t ldy,
                    const float *x, int64_t ldx, int64_t rows)
{
    if (rows <= 0) return;
    sdc_be_linear(m->be, y, ldy, x, ldx, &l->w, l->b, rows, l->in, l->out);
}

/* ---- loading -------------------------------------------------------------- */

static sdc_status_t vname(char *buf, size_t cap, sdc_error_t *err, const char *fmt, va_list ap)
{
    int n = vsnprintf(buf, cap, fmt, ap);
    if (n < 0 || (size_t)n >= cap)
        return sdc_error_set(err, SDC_ERR_INTERNAL, "DiT tensor name too long");
    return SDC_OK;
}

sdc_status_t sdc_dit_load_linear(sdc_dit_t *m, sdc_dit_linear_t *l, int64_t out, int64_t in,
                                 sdc_error_t *err, const char *fmt, ...)
{
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    sdc_status_t st = vname(prefix, sizeof(prefix), err, fmt, ap);
    va_end(ap);
    if (st != SDC_OK) return st;
    l->in = in;
    l->out = out;
    st = sdc_weights_load_linearf(&m->w, out, in, &l->w, err, "%s.weight", prefix);
    if (st != SDC_OK) return st;
    return sdc_weights_loadf(&m->w, 1, &out, &l->b, err, "%s.bias", prefix);
}

sdc_status_t sdc_dit_load_vec(sdc_dit_t *m, float **v, int64_t n, sdc_error_t *err,
                              const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    sdc_status_t st = vname(name, sizeof(name), err, fmt, ap);
    va_end(ap);
    if (st != SDC_OK) return st;
    return sdc_weights_load(&m->w, name, 1, &n, v, err);
}

static sdc_status_t head_load(sdc_dit_t *m, sdc_error_t *err)
{
    const sdc_dit_config_t *c = &m->cfg;
    const int64_t h = m->hidden;
    const int64_t p = c->out_channels * c->patch_size[0] * c->patch_size[1];
    sdc_status_t st = sdc_dit_load_linear(m, &m->head.norm_out, 2 * h, h, err,
                                          "norm_out.linear");
    if (st != SDC_OK) return st;
    return sdc_dit_load_linear(m, &m->head.proj_out, p, h, err, "proj_out");
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

void sdc_dit_free(sdc_dit_t *m)
{
    if (!m) return;
    if (m->weights_open) sdc_weights_close(&m->w);
    for (int i = 0; i < SDC_DIT_SLOT_COUNT; i++)
        if (m->slot[i]) m->be->ops->free(m->be, m->slot[i]);
    sdc_dit_rope_cache_free(m);
    free(m->host);
    free(m->emb.refiner);
    free(m->dual);
    free(m->single);
    free(m);
}

static sdc_status_t dit_open(sdc_dit_t *m, const char *dir, sdc_error_t *err)
{
    char *cfg_path = path_join(dir, "config.json");
    if (!cfg_path) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    sdc_status_t st = sdc_dit_config_load(&m->cfg, cfg_path, err);
    free(cfg_path);
    if (st != SDC_OK) return st;
    const sdc_dit_config_t *c = &m->cfg;
    const int total = sdc_dit_total_blocks(c);
    if (m->block_begin < 0 || m->block_end > total || m->block_begin >= m->block_end)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "block range [%d, %d) is empty or outside the model's [0, %d)",
                             m->block_begin, m->block_end, total);
    m->hidden = sdc_dit_hidden(c);
    /* Python int(hidden * mlp_ratio); the token refiner always uses 4.0. */
    m->mlp_dim = (int64_t)((double)m->hidden * c->mlp_ratio);
    m->refiner_mlp_dim = m->hidden * 4;
    m->has_embed = m->block_begin == 0;
    m->has_head = m->block_end == total;
    m->dual = calloc((size_t)c->num_layers + 1, sizeof(*m->dual));
    m->single = calloc((size_t)c->num_single_layers + 1, sizeof(*m->single));
    if (!m->dual || !m->single) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    st = sdc_weights_open(&m->w, m->be, dir, err);
    m->weights_open = st == SDC_OK;
    return st;
}

sdc_status_t sdc_dit_load(sdc_dit_t **out, sdc_backend_t *be, const char *transformer_dir,
                          int block_begin, int block_end, sdc_error_t *err)
{
    *out = NULL;
    sdc_dit_t *m = calloc(1, sizeof(*m));
    if (!m) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    m->be = be;
    m->block_begin = block_begin;
    m->block_end = block_end;
    sdc_status_t st = dit_open(m, transformer_dir, err);
    if (st == SDC_OK && m->has_embed) st = sdc_dit_embed_load(m, err);
    if (st == SDC_OK) st = sdc_dit_blocks_load(m, err);
    if (st == SDC_OK && m->has_head) st = head_load(m, err);
    if (st != SDC_OK) {
        sdc_dit_free(m);
        return sdc_error_wrap(err, "loading DiT blocks [%d, %d) from %s", block_begin,
                              block_end, transformer_dir);
    }
    *out = m;
    return SDC_OK;
}

const sdc_dit_config_t *sdc_dit_config(const sdc_dit_t *m)
{
    return &m->cfg;
}

/* ---- samples -------------------------------------------------------------- */

static sdc_status_t check_sizes(int64_t grid_h, int64_t grid_w, int64_t n_txt, sdc_error_t *err)
{
    if (grid_h < 1 || grid_w < 1 || grid_h > DIT_MAX_TOKENS || grid_w > DIT_MAX_TOKENS ||
        grid_h * grid_w > DIT_MAX_TOKENS)
        return sdc_error_set(err, SDC_ERR_RANGE, "image grid %lld x %lld tokens is empty or "
                             "larger than %lld tokens", (long long)grid_h, (long long)grid_w,
                             (long long)DIT_MAX_TOKENS);
    if (n_txt < 0 || n_txt > DIT_MAX_TOKENS)
        return sdc_error_set(err, SDC_ERR_RANGE, "text length %lld is outside [0, %lld]",
                             (long long)n_txt, (long long)DIT_MAX_TOKENS);
    return SDC_OK;
}

static sdc_status_t check_sample(const sdc_dit_sample_t *s, sdc_error_t *err)
{
    sdc_status_t st = check_sizes(s->grid_h, s->grid_w, s->n_txt, err);
    if (st != SDC_OK) return st;
    if (s->n_img != s->grid_h * s->grid_w)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "sample has %lld image tokens for a "
                             "%lld x %lld grid", (long long)s->n_img, (long long)s->grid_h,
                             (long long)s->grid_w);
    if (!s->x || !s->temb)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "sample has no buffers");
    return SDC_OK;
}

sdc_status_t sdc_dit_sample_alloc(sdc_dit_t *m, sdc_dit_sample_t *s, int64_t grid_h,
                                  int64_t grid_w, int64_t n_txt, int with_mask,
                                  sdc_error_t *err)
{
    memset(s, 0, sizeof(*s));
    sdc_status_t st = check_sizes(grid_h, grid_w, n_txt, err);
    if (st != SDC_OK) return st;
    sdc_backend_t *be = m->be;
    s->grid_h = grid_h;
    s->grid_w = grid_w;
    s->n_img = grid_h * grid_w;
    s->n_txt = n_txt;
    const size_t rows = (size_t)(s->n_img + n_txt);
    s->x = be->ops->alloc(be, rows * (size_t)m->hidden * sizeof(float));
    s->temb = be->ops->alloc(be, (size_t)m->hidden * sizeof(float));
    if (with_mask && n_txt > 0) s->txt_mask = be->ops->alloc(be, (size_t)n_txt);
    if (!s->x || !s->temb || (with_mask && n_txt > 0 && !s->txt_mask)) {
        sdc_dit_sample_free(m, s);
        return sdc_error_set(err, SDC_ERR_NOMEM, "cannot allocate a sample of %zu tokens",
                             rows);
    }
    return SDC_OK;
}

void sdc_dit_sample_free(sdc_dit_t *m, sdc_dit_sample_t *s)
{
    sdc_backend_t *be = m->be;
    if (s->x) be->ops->free(be, s->x);
    if (s->temb) be->ops->free(be, s->temb);
    if (s->txt_mask) be->ops->free(be, s->txt_mask);
    memset(s, 0, sizeof(*s));
}

/* ---- blocks --------------------------------------------------------------- */

/* The joint key mask: image keys always valid, then the sample's text mask. */
static sdc_status_t key_mask(sdc_dit_t *m, const sdc_dit_sample_t *s, const uint8_t **out,
                             sdc_error_t *err)
{
    *out = NULL;
    if (!s->txt_mask || s->n_txt == 0) return SDC_OK;
    sdc_backend_t *be = m->be;
    uint8_t *mask, *ones;
    sdc_status_t st = sdc_dit_scratch_u8(m, SDC_DIT_SLOT_MASK, s->n_img + s->n_txt, &mask, err);
    if (st != SDC_OK) return st;
    if (m->mask_ones < s->n_img) {
        if ((st = sdc_dit_host_u8(m, s->n_img, &ones, err)) != SDC_OK) return st;
        memset(ones, 1, (size_t)s->n_img);
        be->ops->upload(be, mask, ones, (size_t)s->n_img);
    }
    be->ops->copy(be, mask + s->n_img, s->txt_mask, (size_t)s->n_txt);
    m->mask_ones = s->n_img;
    *out = mask;
    return SDC_OK;
}

static sdc_status_t run_sample(sdc_dit_t *m, sdc_dit_sample_t *s, int begin, int end,
                               sdc_error_t *err)
{
    sdc_status_t st = check_sample(s, err);
    if (st != SDC_OK) return st;
    sdc_dit_work_t wk;
    st = sdc_dit_work_get(m, s->n_img + s->n_txt, m->mlp_dim, m->hidden, &wk, err);
    if (st != SDC_OK) return st;
    sdc_dit_block_io_t io = {.x = s->x, .n_img = s->n_img, .n_txt = s->n_txt,
                             .silu_temb = wk.vec};
    if ((st = key_mask(m, s, &io.key_mask, err)) != SDC_OK ||
        (st = sdc_dit_rope_get(m, s->grid_h, s->grid_w, &io.cos_, &io.sin_, err)) != SDC_OK)
        return st;
    m->be->ops->silu(m->be, wk.vec, s->temb, m->hidden);
    const int n_dual = (int)m->cfg.num_layers;
    for (int b = begin; b < end; b++) {
        if (b < n_dual)
            sdc_dit_dual_block(m, &m->dual[b], &io, &wk);
        else
            sdc_dit_single_block(m, &m->single[b - n_dual], &io, &wk);
    }
    return SDC_OK;
}

sdc_status_t sdc_dit_run_blocks(sdc_dit_t *m, sdc_dit_sample_t *samples, int n, int begin,
                                int end, sdc_error_t *err)
{
    if (begin < m->block_begin || end > m->block_end || begin > end)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "blocks [%d, %d) requested, but this DiT holds blocks [%d, %d)",
                             begin, end, m->block_begin, m->block_end);
    if (n < 0 || (n > 0 && !samples))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "run_blocks: bad sample list (n = %d)",
                             n);
    for (int i = 0; i < n; i++) {
        sdc_status_t st = run_sample(m, &samples[i], begin, end, err);
        if (st != SDC_OK) return sdc_error_wrap(err, "DiT blocks [%d, %d), sample %d", begin,
                                                end, i);
    }
    return SDC_OK;
}

/* ---- head ----------------------------------------------------------------- */

sdc_status_t sdc_dit_head(sdc_dit_t *m, const sdc_dit_sample_t *s, float *out, sdc_error_t *err)
{
    if (!m->has_head)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "DiT head: this stage holds blocks [%d, %d) without the output "
                             "head", m->block_begin, m->block_end);
    sdc_status_t st = check_sample(s, err);
    if (st != SDC_OK) return sdc_error_wrap(err, "DiT head");
    sdc_backend_t *be = m->be;
    const sdc_dit_config_t *c = &m->cfg;
    const int64_t h = m->hidden, n = s->n_img;
    const int64_t ph = c->patch_size[0], pw = c->patch_size[1], C = c->out_channels;
    const int64_t P = C * ph * pw;
    float *vec, *nrm, *proj, *img;
    if (sdc_dit_scratch_f(m, SDC_DIT_SLOT_VEC, 3 * h, &vec, err) ||
        sdc_dit_scratch_f(m, SDC_DIT_SLOT_NRM, n * h, &nrm, err) ||
        sdc_dit_scratch_f(m, SDC_DIT_SLOT_Q, n * P, &proj, err) ||
        sdc_dit_scratch_f(m, SDC_DIT_SLOT_K, n * P, &img, err))
        return sdc_error_wrap(err, "DiT head");

    /* AdaLayerNormContinuous: emb = linear(silu(temb)); scale, shift = chunk(2). */
    be->ops->silu(be, vec, s->temb, h);
    sdc_dit_linear(m, &m->head.norm_out, vec + h, 2 * h, vec, h, 1);
    be->ops->layer_norm(be, nrm, s->x, NULL, NULL, n, h, 1e-6f);
    be->ops->modulate(be, nrm, nrm, vec + 2 * h, vec + h, n, h);
    sdc_dit_linear(m, &m->head.proj_out, proj, P, nrm, h, n);

    /* Unpatchify: token (gy, gx) column (c, i, j) -> out[c, gy*ph + i, gx*pw + j]. */
    const int64_t gw = s->grid_w;
    const int64_t shape[5] = {C, s->grid_h, ph, gw, pw};
    const int64_t dst_stride[5] = {s->grid_h * ph * gw * pw, ph * gw * pw, gw * pw, pw, 1};
    const int64_t src_stride[5] = {ph * pw, gw * P, pw, P, 1};
    be->ops->copy_strided(be, img, proj, 5, shape, dst_stride, src_stride);
    be->ops->download(be, out, img, (size_t)(n * P) * sizeof(float));
    be->ops->sync(be);
    return SDC_OK;
}
