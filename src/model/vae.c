/*
 * vae.c: the decoder of diffusers' AutoencoderKLHunyuanImage, one sample at a
 * time, on backend ops only.
 *
 * Decoder (block channels are block_out_channels reversed, ch[0] first):
 *   conv_in(z) + repeat_interleave(z, ch[0] / latent_channels, dim=1)
 *   mid: resnet, single-head attention over H*W tokens, resnet
 *   up: per level i, layers_per_block + 1 resnets, then (i < log2(ratio),
 *       not the last level) a channel-to-space upsample whose shortcut is a
 *       repeat_interleave of its input
 *   norm_out, silu, conv_out
 * GroupNorm everywhere is 32 groups, eps 1e-6.
 *
 * Memory: at most the current activation, two scratch buffers of its size
 * (reused by every resnet and the attention of one resolution), and the
 * temporaries of the layer that is running, freed as soon as it ends.
 *
 * Not here: the encoder (vae_encoder.c) and tiled decoding.
 */
#include "vae.h"

#include <assert.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/config.h"
#include "vae_internal.h"

#define VAE_CLASS "AutoencoderKLHunyuanImage"
#define VAE_MAX_CHANNELS (1 << 16)
#define VAE_MAX_LAYERS_PER_BLOCK 64

/* ---- configuration ---------------------------------------------------- */

/* The decoder's up_blocks list, as HunyuanImageDecoder2D.__init__ builds it.
 * layers may be NULL to only count; returns the number of layers. */
static int vae_plan(const sdc_vae_config_t *c, sdc_vae_layer_t *layers)
{
    int64_t ch[8];
    int n = 0, n_up_levels = 0;
    for (int i = 0; i < c->n_blocks; i++) ch[i] = c->block_out_channels[c->n_blocks - 1 - i];
    while ((INT64_C(1) << n_up_levels) < c->spatial_compression_ratio) n_up_levels++;

    int64_t in = ch[0];
    for (int i = 0; i < c->n_blocks; i++) {
        int64_t out = ch[i];
        for (int64_t j = 0; j <= c->layers_per_block; j++, n++) {
            if (layers)
                layers[n] = (sdc_vae_layer_t){.kind = SDC_VAE_RESNET, .cin = in, .cout = out};
            in = out;
        }
        /* `i < np.log2(ratio)`: ratio is a power of two (checked). */
        if (i < n_up_levels && i != c->n_blocks - 1) {
            if (c->upsample_match_channel) out = ch[i + 1];
            if (layers)
                layers[n] = (sdc_vae_layer_t){.kind = SDC_VAE_UPSAMPLE, .cin = in, .cout = out};
            n++;
            in = out;
        }
    }
    return n;
}

typedef struct {
    const char *key;
    size_t offset;
} vae_int_key_t;

/* Constructor arguments without a default: a config must have them. */
static const vae_int_key_t vae_required_ints[] = {
    {"in_channels", offsetof(sdc_vae_config_t, in_channels)},
    {"out_channels", offsetof(sdc_vae_config_t, out_channels)},
    {"latent_channels", offsetof(sdc_vae_config_t, latent_channels)},
    {"layers_per_block", offsetof(sdc_vae_config_t, layers_per_block)},
    {"spatial_compression_ratio", offsetof(sdc_vae_config_t, spatial_compression_ratio)},
    {"sample_size", offsetof(sdc_vae_config_t, sample_size)},
};

static sdc_status_t vae_check_channels(const sdc_vae_config_t *c, const char *where,
                                       sdc_error_t *err)
{
    if (c->in_channels <= 0 || c->in_channels > VAE_MAX_CHANNELS || c->out_channels <= 0 ||
        c->out_channels > VAE_MAX_CHANNELS || c->latent_channels <= 0 ||
        c->latent_channels > VAE_MAX_CHANNELS)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "%s: in_channels %lld, out_channels %lld, latent_channels %lld: "
                             "each must be in 1 .. %d",
                             where, (long long)c->in_channels, (long long)c->out_channels,
                             (long long)c->latent_channels, VAE_MAX_CHANNELS);
    if (c->n_blocks < 1 || c->n_blocks > 8)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: block_out_channels has %d entries, 1 .. 8",
                             where, c->n_blocks);
    for (int i = 0; i < c->n_blocks; i++) {
        int64_t b = c->block_out_channels[i];
        if (b <= 0 || b > VAE_MAX_CHANNELS || b % SDC_VAE_GROUPS != 0)
            return sdc_error_set(err, SDC_ERR_RANGE,
                                 "%s: block_out_channels[%d] = %lld must be a positive multiple "
                                 "of %d (GroupNorm groups), at most %d",
                                 where, i, (long long)b, SDC_VAE_GROUPS, VAE_MAX_CHANNELS);
    }
    /* HunyuanImageEncoder2D / Decoder2D constructor checks. */
    int64_t last = c->block_out_channels[c->n_blocks - 1];
    if (last % (2 * c->latent_channels) != 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "%s: block_out_channels[-1] = %lld must be divisible by 2 * "
                             "latent_channels = %lld",
                             where, (long long)last, (long long)(2 * c->latent_channels));
    return SDC_OK;
}

static sdc_status_t vae_check_layers(const sdc_vae_config_t *c, const char *where,
                                     sdc_error_t *err)
{
    int64_t r = c->spatial_compression_ratio;
    if (r <= 0 || (r & (r - 1)) != 0 || r > (INT64_C(1) << (c->n_blocks - 1)))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "%s: spatial_compression_ratio = %lld must be a power of two of at "
                             "most 2^(len(block_out_channels) - 1) = %lld, or the decoder's "
                             "upsampling would not match it",
                             where, (long long)r, (long long)(INT64_C(1) << (c->n_blocks - 1)));
    if (c->layers_per_block < 0 || c->layers_per_block > VAE_MAX_LAYERS_PER_BLOCK)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: layers_per_block = %lld, expected 0 .. %d",
                             where, (long long)c->layers_per_block, VAE_MAX_LAYERS_PER_BLOCK);
    if (c->sample_size <= 0)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: sample_size = %lld must be positive", where,
                             (long long)c->sample_size);
    if (!isfinite(c->scaling_factor) || c->scaling_factor == 0.0)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "%s: scaling_factor = %g, expected a finite non-zero number", where,
                             c->scaling_factor);

    int n = vae_plan(c, NULL);
    sdc_vae_layer_t *layers = calloc((size_t)n, sizeof(*layers));
    if (!layers) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    vae_plan(c, layers);
    sdc_status_t st = SDC_OK;
    for (int i = 0; i < n && st == SDC_OK; i++) {
        const sdc_vae_layer_t *l = &layers[i];
        /* diffusers' resnet applies conv_shortcut to the conv2 output, which
         * only runs when the channel count does not change. */
        if (l->kind == SDC_VAE_RESNET && l->cin != l->cout)
            st = sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                               "%s: decoder up_blocks.%d would change channels %lld -> %lld in a "
                               "resnet, which diffusers cannot run (upsample_match_channel=false "
                               "with differing block_out_channels)",
                               where, i, (long long)l->cin, (long long)l->cout);
        else if (l->kind == SDC_VAE_UPSAMPLE && (4 * l->cout) % l->cin != 0)
            st = sdc_error_set(err, SDC_ERR_INVALID_ARG,
                               "%s: decoder up_blocks.%d upsamples %lld -> %lld channels: 4 * %lld "
                               "must be a multiple of %lld for its repeat_interleave shortcut",
                               where, i, (long long)l->cin, (long long)l->cout,
                               (long long)l->cout, (long long)l->cin);
    }
    free(layers);
    return st;
}

sdc_status_t sdc_vae_config_from_json(sdc_vae_config_t *c, const sdc_json_t *doc,
                                      sdc_error_t *err)
{
    const char *where = doc->path ? doc->path : "vae config";
    const char *cls = NULL;
    sdc_status_t st;

    memset(c, 0, sizeof(*c));
    st = sdc_json_get_string(doc, "_class_name", NULL, &cls, err);
    if (st != SDC_OK) return st;
    if (!cls)
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: no _class_name (expected %s)", where,
                             VAE_CLASS);
    if (strcmp(cls, VAE_CLASS) != 0)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED, "%s: VAE class %s, only %s is supported",
                             where, cls, VAE_CLASS);

    for (size_t i = 0; i < sizeof(vae_required_ints) / sizeof(vae_required_ints[0]); i++) {
        const char *key = vae_required_ints[i].key;
        if (!sdc_json_has(doc, key))
            return sdc_error_set(err, SDC_ERR_NOT_FOUND, "%s: missing '%s'", where, key);
        st = sdc_json_get_int(doc, key, 0, (int64_t *)((char *)c + vae_required_ints[i].offset),
                              err);
        if (st != SDC_OK) return st;
    }
    if (!sdc_json_has(doc, "block_out_channels"))
        return sdc_error_set(err, SDC_ERR_NOT_FOUND, "%s: missing 'block_out_channels'", where);
    size_t nb = 0;
    st = sdc_json_get_int_array(doc, "block_out_channels", NULL, 0, c->block_out_channels, 8, &nb,
                                err);
    if (st != SDC_OK) return st;
    c->n_blocks = (int)nb;

    /* scaling_factor defaults to None, and the pipeline divides latents by
     * it, so a usable model has one. */
    if (!sdc_json_has(doc, "scaling_factor"))
        return sdc_error_set(err, SDC_ERR_NOT_FOUND,
                             "%s: missing 'scaling_factor' (the pipeline divides latents by it)",
                             where);
    st = sdc_json_get_double(doc, "scaling_factor", 0.0, &c->scaling_factor, err);
    if (st == SDC_OK)
        st = sdc_json_get_bool(doc, "upsample_match_channel", 1, &c->upsample_match_channel, err);
    if (st == SDC_OK)
        st = sdc_json_get_bool(doc, "downsample_match_channel", 1, &c->downsample_match_channel,
                               err);
    if (st != SDC_OK) return st;

    st = vae_check_channels(c, where, err);
    if (st != SDC_OK) return st;
    return vae_check_layers(c, where, err);
}

sdc_status_t sdc_vae_config_load(sdc_vae_config_t *c, const char *config_json, sdc_error_t *err)
{
    sdc_json_t doc = {0};
    sdc_status_t st = sdc_json_load(&doc, config_json, err);
    if (st != SDC_OK) return st;
    st = sdc_vae_config_from_json(c, &doc, err);
    sdc_json_free(&doc);
    return st;
}

/* ---- weights ------------------------------------------------------------ */

typedef enum { SHAPE_VEC, SHAPE_CONV3, SHAPE_CONV1 } vae_shape_kind_t;

typedef struct {
    const char *name;
    vae_shape_kind_t shape;
    size_t offset;
} vae_tensor_t;

static const vae_tensor_t resnet_tensors[] = {
    {"norm1.weight", SHAPE_VEC, offsetof(sdc_vae_resnet_t, norm1_w)},
    {"norm1.bias", SHAPE_VEC, offsetof(sdc_vae_resnet_t, norm1_b)},
    {"conv1.weight", SHAPE_CONV3, offsetof(sdc_vae_resnet_t, conv1_w)},
    {"conv1.bias", SHAPE_VEC, offsetof(sdc_vae_resnet_t, conv1_b)},
    {"norm2.weight", SHAPE_VEC, offsetof(sdc_vae_resnet_t, norm2_w)},
    {"norm2.bias", SHAPE_VEC, offsetof(sdc_vae_resnet_t, norm2_b)},
    {"conv2.weight", SHAPE_CONV3, offsetof(sdc_vae_resnet_t, conv2_w)},
    {"conv2.bias", SHAPE_VEC, offsetof(sdc_vae_resnet_t, conv2_b)},
};

static const vae_tensor_t attn_tensors[] = {
    {"norm.weight", SHAPE_VEC, offsetof(sdc_vae_attn_t, norm_w)},
    {"norm.bias", SHAPE_VEC, offsetof(sdc_vae_attn_t, norm_b)},
    {"to_q.weight", SHAPE_CONV1, offsetof(sdc_vae_attn_t, q_w)},
    {"to_q.bias", SHAPE_VEC, offsetof(sdc_vae_attn_t, q_b)},
    {"to_k.weight", SHAPE_CONV1, offsetof(sdc_vae_attn_t, k_w)},
    {"to_k.bias", SHAPE_VEC, offsetof(sdc_vae_attn_t, k_b)},
    {"to_v.weight", SHAPE_CONV1, offsetof(sdc_vae_attn_t, v_w)},
    {"to_v.bias", SHAPE_VEC, offsetof(sdc_vae_attn_t, v_b)},
    {"proj.weight", SHAPE_CONV1, offsetof(sdc_vae_attn_t, proj_w)},
    {"proj.bias", SHAPE_VEC, offsetof(sdc_vae_attn_t, proj_b)},
};

/* Loads the tensors of one C-channel module from table into the struct at
 * dst, names prefixed by prefix. */
static sdc_status_t load_module(sdc_weights_t *w, const vae_tensor_t *table, size_t n, void *dst,
                                int64_t c, const char *prefix, sdc_error_t *err)
{
    for (size_t i = 0; i < n; i++) {
        int64_t shape[4] = {c, c, 3, 3};
        int ndim = 4;
        if (table[i].shape == SHAPE_VEC) ndim = 1;
        if (table[i].shape == SHAPE_CONV1) shape[2] = shape[3] = 1;
        float **out = (float **)((char *)dst + table[i].offset);
        sdc_status_t st =
            sdc_weights_loadf(w, ndim, shape, out, err, "%s.%s", prefix, table[i].name);
        if (st != SDC_OK) return st;
    }
    return SDC_OK;
}

sdc_status_t sdc_vae_load_resnet(sdc_weights_t *w, sdc_vae_resnet_t *r, int64_t c,
                                 const char *prefix, sdc_error_t *err)
{
    return load_module(w, resnet_tensors, sizeof(resnet_tensors) / sizeof(resnet_tensors[0]), r,
                       c, prefix, err);
}

sdc_status_t sdc_vae_load_attn(sdc_weights_t *w, sdc_vae_attn_t *a, int64_t c,
                               const char *prefix, sdc_error_t *err)
{
    return load_module(w, attn_tensors, sizeof(attn_tensors) / sizeof(attn_tensors[0]), a, c,
                       prefix, err);
}

sdc_status_t sdc_vae_load_conv(sdc_weights_t *w, float **wt, float **bias, int64_t cout,
                               int64_t cin, const char *prefix, sdc_error_t *err)
{
    int64_t shape[4] = {cout, cin, 3, 3};
    sdc_status_t st = sdc_weights_loadf(w, 4, shape, wt, err, "%s.weight", prefix);
    if (st == SDC_OK) st = sdc_weights_loadf(w, 1, shape, bias, err, "%s.bias", prefix);
    return st;
}

sdc_status_t sdc_vae_load_norm(sdc_weights_t *w, float **gamma, float **beta, int64_t c,
                               const char *prefix, sdc_error_t *err)
{
    sdc_status_t st = sdc_weights_loadf(w, 1, &c, gamma, err, "%s.weight", prefix);
    if (st == SDC_OK) st = sdc_weights_loadf(w, 1, &c, beta, err, "%s.bias", prefix);
    return st;
}

static sdc_status_t vae_load_weights(sdc_vae_t *v, sdc_error_t *err)
{
    const sdc_vae_config_t *c = &v->cfg;
    sdc_weights_t *w = &v->w;
    char prefix[96];
    sdc_status_t st;

    st = sdc_vae_load_conv(w, &v->conv_in_w, &v->conv_in_b, v->ch0, c->latent_channels,
                           "decoder.conv_in", err);
    for (int i = 0; i < 2 && st == SDC_OK; i++) {
        snprintf(prefix, sizeof(prefix), "decoder.mid_block.resnets.%d", i);
        st = sdc_vae_load_resnet(w, &v->mid_res[i], v->ch0, prefix, err);
    }
    if (st == SDC_OK)
        st = sdc_vae_load_attn(w, &v->mid_attn, v->ch0, "decoder.mid_block.attentions.0", err);
    for (int i = 0; i < v->n_up && st == SDC_OK; i++) {
        sdc_vae_layer_t *l = &v->up[i];
        snprintf(prefix, sizeof(prefix), "decoder.up_blocks.%d", i);
        if (l->kind == SDC_VAE_RESNET) {
            st = sdc_vae_load_resnet(w, &l->res, l->cout, prefix, err);
        } else {
            snprintf(prefix, sizeof(prefix), "decoder.up_blocks.%d.conv", i);
            st = sdc_vae_load_conv(w, &l->conv_w, &l->conv_b, 4 * l->cout, l->cin, prefix, err);
        }
    }
    if (st == SDC_OK)
        st = sdc_vae_load_norm(w, &v->norm_out_w, &v->norm_out_b, v->ch_last, "decoder.norm_out",
                               err);
    if (st == SDC_OK)
        st = sdc_vae_load_conv(w, &v->conv_out_w, &v->conv_out_b, c->out_channels, v->ch_last,
                               "decoder.conv_out", err);
    return st;
}

sdc_status_t sdc_vae_load(sdc_vae_t **out, sdc_backend_t *be, const char *vae_dir,
                          sdc_error_t *err)
{
    sdc_status_t st;
    *out = NULL;
    if (!be || !vae_dir) return sdc_error_set(err, SDC_ERR_INVALID_ARG, "vae: NULL argument");

    sdc_vae_t *v = calloc(1, sizeof(*v));
    if (!v) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    v->be = be;

    size_t len = strlen(vae_dir) + sizeof("/config.json");
    char *path = malloc(len);
    if (!path) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        goto err_free_vae;
    }
    snprintf(path, len, "%s/config.json", vae_dir);
    st = sdc_vae_config_load(&v->cfg, path, err);
    free(path);
    if (st != SDC_OK) goto err_free_vae;

    v->ch0 = v->cfg.block_out_channels[v->cfg.n_blocks - 1];
    v->ch_last = v->cfg.block_out_channels[0];
    v->n_up = vae_plan(&v->cfg, NULL);
    v->up = calloc((size_t)v->n_up, sizeof(*v->up));
    if (!v->up) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        goto err_free_vae;
    }
    vae_plan(&v->cfg, v->up);

    st = sdc_weights_open(&v->w, be, vae_dir, err);
    if (st != SDC_OK) goto err_free_up;
    st = vae_load_weights(v, err);
    if (st != SDC_OK) {
        sdc_error_wrap(err, "loading vae decoder from %s", vae_dir);
        goto err_close_weights;
    }
    *out = v;
    return SDC_OK;

err_close_weights:
    sdc_weights_close(&v->w);
err_free_up:
    free(v->up);
err_free_vae:
    free(v);
    return st;
}

void sdc_vae_free(sdc_vae_t *v)
{
    if (!v) return;
    sdc_vae_encoder_free(v);
    sdc_weights_close(&v->w);
    free(v->up);
    free(v);
}

const sdc_vae_config_t *sdc_vae_config(const sdc_vae_t *v)
{
    return &v->cfg;
}

/* ---- decoding ----------------------------------------------------------- */

float *sdc_vae_alloc(sdc_vae_t *v, int64_t n)
{
    return v->be->ops->alloc(v->be, (size_t)n * sizeof(float));
}

void sdc_vae_release(sdc_vae_t *v, float **p)
{
    if (*p) v->be->ops->free(v->be, *p);
    *p = NULL;
}

void sdc_vae_bufs_release(sdc_vae_t *v, sdc_vae_bufs_t *bufs)
{
    sdc_vae_release(v, &bufs->t);
    sdc_vae_release(v, &bufs->b);
    sdc_vae_release(v, &bufs->a);
    sdc_vae_release(v, &bufs->cur);
}

void sdc_vae_group_norm(sdc_vae_t *v, float *y, const float *x, const float *gamma,
                        const float *beta, int64_t C, int64_t HW)
{
    v->be->ops->group_norm(v->be, y, x, gamma, beta, C, HW, SDC_VAE_GROUPS, SDC_VAE_EPS);
}

void sdc_vae_repeat_interleave(sdc_backend_t *be, float *y, const float *x, int64_t C,
                               int64_t rep, int64_t HW)
{
    const int64_t shape[3] = {C, rep, HW};
    const int64_t dst[3] = {rep * HW, HW, 1};
    const int64_t src[3] = {HW, 0, 1};
    be->ops->copy_strided(be, y, x, 3, shape, dst, src);
}

/* x + conv2(silu(norm2(conv1(silu(norm1(x)))))). */
void sdc_vae_resnet(sdc_vae_t *v, const sdc_vae_resnet_t *r, sdc_vae_bufs_t *bufs, int64_t C,
                    int64_t H, int64_t W)
{
    const sdc_backend_ops_t *op = v->be->ops;
    int64_t n = C * H * W;
    sdc_vae_group_norm(v, bufs->a, bufs->cur, r->norm1_w, r->norm1_b, C, H * W);
    op->silu(v->be, bufs->a, bufs->a, n);
    op->conv2d(v->be, bufs->b, bufs->a, r->conv1_w, r->conv1_b, C, H, W, C, 3, 3, 1, 1);
    sdc_vae_group_norm(v, bufs->b, bufs->b, r->norm2_w, r->norm2_b, C, H * W);
    op->silu(v->be, bufs->b, bufs->b, n);
    op->conv2d(v->be, bufs->a, bufs->b, r->conv2_w, r->conv2_b, C, H, W, C, 3, 3, 1, 1);
    op->add(v->be, bufs->cur, bufs->a, bufs->cur, n);
}

/* x + proj(sdpa(q, k, v)) with one head of width C over the H*W pixels.
 * The 1x1 convolutions are linear layers on the pixel-major (token) layout. */
sdc_status_t sdc_vae_attention(sdc_vae_t *v, const sdc_vae_attn_t *at, sdc_vae_bufs_t *bufs,
                               int64_t C, int64_t HW, sdc_error_t *err)
{
    const sdc_backend_ops_t *op = v->be->ops;
    const int64_t to_tok_shape[2] = {HW, C}, to_tok_dst[2] = {C, 1}, to_tok_src[2] = {1, HW};
    const int64_t to_chw_shape[2] = {C, HW}, to_chw_dst[2] = {HW, 1}, to_chw_src[2] = {1, C};

    bufs->t = sdc_vae_alloc(v, 3 * C * HW);
    if (!bufs->t)
        return sdc_error_set(err, SDC_ERR_NOMEM, "vae: out of memory for attention q/k/v");
    float *q = bufs->t, *k = bufs->t + C, *val = bufs->t + 2 * C;

    sdc_vae_group_norm(v, bufs->a, bufs->cur, at->norm_w, at->norm_b, C, HW);
    op->copy_strided(v->be, bufs->b, bufs->a, 2, to_tok_shape, to_tok_dst, to_tok_src);
    op->linear(v->be, q, 3 * C, bufs->b, C, at->q_w, at->q_b, HW, C, C);
    op->linear(v->be, k, 3 * C, bufs->b, C, at->k_w, at->k_b, HW, C, C);
    op->linear(v->be, val, 3 * C, bufs->b, C, at->v_w, at->v_b, HW, C, C);
    op->attention(v->be, bufs->a, C, q, 3 * C, k, 3 * C, val, 3 * C, HW, HW, 1, C, NULL,
                  (float)(1.0 / sqrt((double)C)));
    sdc_vae_release(v, &bufs->t);
    op->linear(v->be, bufs->b, C, bufs->a, C, at->proj_w, at->proj_b, HW, C, C);
    op->copy_strided(v->be, bufs->a, bufs->b, 2, to_chw_shape, to_chw_dst, to_chw_src);
    op->add(v->be, bufs->cur, bufs->a, bufs->cur, C * HW);
    return SDC_OK;
}

/* HunyuanImageUpsample, cin x H x W -> cout x 2H x 2W:
 *   h = conv(x) (4 * cout channels ordered r1, r2, c), shortcut =
 *   repeat_interleave(x, 4 * cout / cin), both rearranged channel-to-space.
 * The sum is taken before the rearrangement, which only moves elements.
 * The scratch buffers are reallocated at the new size. */
static sdc_status_t vae_upsample(sdc_vae_t *v, const sdc_vae_layer_t *l, sdc_vae_bufs_t *bufs,
                                 int64_t H, int64_t W, sdc_error_t *err)
{
    const sdc_backend_ops_t *op = v->be->ops;
    int64_t cin = l->cin, cout = l->cout, HW = H * W, n = 4 * cout * HW;
    const int64_t shape[5] = {cout, H, 2, W, 2};
    const int64_t dst[5] = {4 * HW, 4 * W, 2 * W, 2, 1};
    const int64_t src[5] = {HW, W, 2 * cout * HW, 1, cout * HW};

    sdc_vae_release(v, &bufs->a);
    sdc_vae_release(v, &bufs->b);
    bufs->t = sdc_vae_alloc(v, n);
    if (!bufs->t) goto err_nomem;
    op->conv2d(v->be, bufs->t, bufs->cur, l->conv_w, l->conv_b, cin, H, W, 4 * cout, 3, 3, 1, 1);
    bufs->a = sdc_vae_alloc(v, n);
    if (!bufs->a) goto err_nomem;
    sdc_vae_repeat_interleave(v->be, bufs->a, bufs->cur, cin, 4 * cout / cin, HW);
    sdc_vae_release(v, &bufs->cur);
    op->add(v->be, bufs->t, bufs->t, bufs->a, n);
    op->copy_strided(v->be, bufs->a, bufs->t, 5, shape, dst, src);
    bufs->cur = bufs->a;
    bufs->a = NULL;
    sdc_vae_release(v, &bufs->t);
    bufs->a = sdc_vae_alloc(v, n);
    bufs->b = sdc_vae_alloc(v, n);
    if (!bufs->a || !bufs->b) goto err_nomem;
    return SDC_OK;

err_nomem:
    return sdc_error_set(err, SDC_ERR_NOMEM, "vae: out of memory upsampling to %lld x %lld x %lld",
                         (long long)cout, (long long)(2 * H), (long long)(2 * W));
}

static sdc_status_t vae_check_decode_args(const sdc_vae_t *v, const float *latent, int64_t h,
                                          int64_t w, const float *image, sdc_error_t *err)
{
    if (!v || !latent || !image)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "vae decode: NULL argument");
    int64_t r = v->cfg.spatial_compression_ratio;
    if (h <= 0 || w <= 0 || h > SDC_VAE_MAX_IMAGE_SIDE / r || w > SDC_VAE_MAX_IMAGE_SIDE / r)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "vae decode: latent %lld x %lld, each side must be in 1 .. %lld",
                             (long long)h, (long long)w, (long long)(SDC_VAE_MAX_IMAGE_SIDE / r));
    return SDC_OK;
}

sdc_status_t sdc_vae_decode(sdc_vae_t *v, const float *latent, int64_t h, int64_t w,
                            float *image, sdc_error_t *err)
{
    sdc_status_t st = vae_check_decode_args(v, latent, h, w, image, err);
    if (st != SDC_OK) return st;
    const sdc_backend_ops_t *op = v->be->ops;
    const sdc_vae_config_t *c = &v->cfg;
    int64_t C = v->ch0, H = h, W = w, cz = c->latent_channels;
    sdc_vae_bufs_t bufs = {0};

    /* conv_in(z) + repeat_interleave(z); t holds z. */
    bufs.t = sdc_vae_alloc(v, cz * H * W);
    bufs.cur = sdc_vae_alloc(v, C * H * W);
    bufs.a = sdc_vae_alloc(v, C * H * W);
    if (!bufs.t || !bufs.cur || !bufs.a) goto err_nomem;
    op->upload(v->be, bufs.t, latent, (size_t)(cz * H * W) * sizeof(float));
    op->conv2d(v->be, bufs.cur, bufs.t, v->conv_in_w, v->conv_in_b, cz, H, W, C, 3, 3, 1, 1);
    sdc_vae_repeat_interleave(v->be, bufs.a, bufs.t, cz, C / cz, H * W);
    sdc_vae_release(v, &bufs.t);
    op->add(v->be, bufs.cur, bufs.cur, bufs.a, C * H * W);
    bufs.b = sdc_vae_alloc(v, C * H * W);
    if (!bufs.b) goto err_nomem;

    sdc_vae_resnet(v, &v->mid_res[0], &bufs, C, H, W);
    st = sdc_vae_attention(v, &v->mid_attn, &bufs, C, H * W, err);
    if (st != SDC_OK) goto free_bufs;
    sdc_vae_resnet(v, &v->mid_res[1], &bufs, C, H, W);

    for (int i = 0; i < v->n_up; i++) {
        const sdc_vae_layer_t *l = &v->up[i];
        if (l->kind == SDC_VAE_RESNET) {
            assert(l->cin == C && l->cout == C);
            sdc_vae_resnet(v, &l->res, &bufs, C, H, W);
            continue;
        }
        assert(l->cin == C);
        st = vae_upsample(v, l, &bufs, H, W, err);
        if (st != SDC_OK) goto free_bufs;
        C = l->cout;
        H *= 2;
        W *= 2;
    }
    assert(C == v->ch_last);

    /* norm_out, silu, conv_out. */
    sdc_vae_group_norm(v, bufs.a, bufs.cur, v->norm_out_w, v->norm_out_b, C, H * W);
    sdc_vae_release(v, &bufs.cur);
    op->silu(v->be, bufs.a, bufs.a, C * H * W);
    if (c->out_channels > C) {
        sdc_vae_release(v, &bufs.b);
        bufs.b = sdc_vae_alloc(v, c->out_channels * H * W);
        if (!bufs.b) goto err_nomem;
    }
    op->conv2d(v->be, bufs.b, bufs.a, v->conv_out_w, v->conv_out_b, C, H, W, c->out_channels, 3,
               3, 1, 1);
    op->sync(v->be);
    op->download(v->be, image, bufs.b, (size_t)(c->out_channels * H * W) * sizeof(float));

free_bufs:
    sdc_vae_bufs_release(v, &bufs);
    return st;

err_nomem:
    st = sdc_error_set(err, SDC_ERR_NOMEM, "vae: out of memory decoding a %lld x %lld latent",
                       (long long)h, (long long)w);
    goto free_bufs;
}
