/*
 * vae_refiner.c: AutoencoderKLHunyuanImageRefiner (the HunyuanImage-2.1
 * refiner's VAE) for one frame, on backend ops only.
 *
 * What one frame reduces to (derived in docs/ARCHITECTURE.md, "Refiner"):
 * - HunyuanImageRefinerCausalConv3d pads (W: 1, 1; H: 1, 1; T: 2, 0) in
 *   replicate mode, then runs a 3x3x3 convolution. With T = 1 the three
 *   frames it sees are copies of the one frame, so the output is a 3x3 2-D
 *   convolution with the kernel summed over its temporal axis, on the
 *   frame padded by edge replication (not zeros). The kernels are summed
 *   once at load.
 * - HunyuanImageRefinerRMS_norm is F.normalize over channels times
 *   sqrt(C) times gamma: an RMS norm per pixel across channels.
 * - Downsample (space-to-channel, as vae_encoder.c's): the temporal
 *   variant's conv has cout / 8 channels and its space-to-channel result
 *   is duplicated along channels (torch.cat([h, h])); the shortcut is the
 *   plain variant's.
 * - Upsample (channel-to-space, as vae.c's): the temporal variant's conv
 *   has 8 * cout channels of which the rearrangement keeps half, so only
 *   those 4 * cout are loaded; its shortcut is the channel-to-space input
 *   repeated 4 * cout / cin times, instead of the repeat before the
 *   rearrangement of the plain variant.
 * - The encoder's head adds the mid block's output averaged over groups of
 *   channels, the decoder's conv_in a repeat_interleave of the latent, as
 *   the base VAE does.
 *
 * Memory: the current activation, two scratch activations and one padded
 * copy, all sized for the largest activation of the network, allocated
 * once per call, plus the attention's q/k/v.
 *
 * Not here: tiled encoding/decoding, more than one frame.
 */
#include "vae_refiner.h"

#include <assert.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vae_internal.h"
#include "weights.h"

#define RVAE_CLASS "AutoencoderKLHunyuanImageRefiner"
#define RVAE_MAX_CHANNELS (1 << 16)
#define RVAE_MAX_LAYERS_PER_BLOCK 64
/* F.normalize divides by max(||x||, 1e-12); an RMS norm with this epsilon
 * per channel gives the same (up to rounding) and 0 for a zero vector. */
#define RVAE_NORM_EPS_SUM 1e-24f

typedef enum { RL_RESNET = 0, RL_DOWN, RL_UP } rlayer_kind_t;

typedef struct {
    float *w, *b; /* 3x3 (temporal slices summed) or 1x1: cout x cin x k x k */
} rconv_t;

typedef struct {
    rlayer_kind_t kind;
    int64_t cin, cout;
    int temporal;     /* down/upsample: the temporal variant */
    int block, index; /* diffusers' down_blocks/up_blocks.{block}.resnets.{index} */
    /* resnet */
    float *norm1, *norm2;
    rconv_t conv1, conv2, shortcut; /* shortcut.w NULL when cin == cout */
    /* down/upsample: down cout / f x cin, up 4 * cout x cin (the kept half) */
    rconv_t conv;
} rlayer_t;

typedef struct {
    float *norm;
    rconv_t q, k, v, proj;
} rattn_t;

typedef struct {
    rconv_t conv_in;
    rlayer_t *layers;
    int n_layers;
    int64_t mid_channels;
    rlayer_t mid_res[2];
    rattn_t attn;
    float *norm_out;
    rconv_t conv_out;
} rhalf_t;

struct sdc_vae_refiner {
    sdc_backend_t *be;
    sdc_vae_refiner_config_t cfg;
    sdc_weights_t w;
    rhalf_t enc, dec;
};

static int ilog2(int64_t x)
{
    int n = 0;
    while ((INT64_C(1) << n) < x) n++;
    return n;
}

/* ---- configuration ------------------------------------------------------ */

/* HunyuanImageRefinerEncoder3D.__init__'s down_blocks, flattened into
 * resnets and downsamples. layers may be NULL to count. */
static int enc_plan(const sdc_vae_refiner_config_t *c, rlayer_t *layers, int64_t *out_channels)
{
    const int64_t *ch = c->block_out_channels;
    int ns = ilog2(c->spatial_compression_ratio);
    int nt = ilog2(c->spatial_compression_ratio / c->temporal_compression_ratio);
    int n = 0;
    int64_t in = ch[0];
    for (int i = 0; i < c->n_blocks; i++) {
        int64_t out = ch[i];
        for (int j = 0; j < c->layers_per_block; j++, n++) {
            if (layers)
                layers[n] = (rlayer_t){.kind = RL_RESNET, .cin = j ? out : in, .cout = out,
                                       .block = i, .index = j};
        }
        in = out;
        if (i < ns) {
            int64_t dso = c->downsample_match_channel ? ch[i + 1] : out;
            if (layers)
                layers[n] = (rlayer_t){.kind = RL_DOWN, .cin = out, .cout = dso,
                                       .temporal = i >= nt, .block = i};
            n++;
            in = dso;
        }
    }
    *out_channels = in;
    return n;
}

/* HunyuanImageRefinerDecoder3D.__init__'s up_blocks, flattened. */
static int dec_plan(const sdc_vae_refiner_config_t *c, rlayer_t *layers, int64_t *out_channels)
{
    int64_t ch[8] = {0};
    for (int i = 0; i < c->n_blocks; i++) ch[i] = c->block_out_channels[c->n_blocks - 1 - i];
    int ns = ilog2(c->spatial_compression_ratio), nt = ilog2(c->temporal_compression_ratio);
    int n = 0;
    int64_t in = ch[0];
    for (int i = 0; i < c->n_blocks; i++) {
        int64_t out = ch[i];
        for (int j = 0; j <= c->layers_per_block; j++, n++) {
            if (layers)
                layers[n] = (rlayer_t){.kind = RL_RESNET, .cin = j ? out : in, .cout = out,
                                       .block = i, .index = j};
        }
        in = out;
        if (i < ns || i < nt) {
            int64_t uso = c->upsample_match_channel ? ch[i + 1] : out;
            if (layers)
                layers[n] = (rlayer_t){.kind = RL_UP, .cin = out, .cout = uso,
                                       .temporal = i < nt, .block = i};
            n++;
            in = uso;
        }
    }
    *out_channels = in;
    return n;
}

static int pow2(int64_t x)
{
    return x > 0 && (x & (x - 1)) == 0;
}

static sdc_status_t check_sample_layer(const rlayer_t *l, const char *where, sdc_error_t *err)
{
    int64_t cin = l->cin, cout = l->cout;
    if (l->kind == RL_DOWN) {
        int64_t f = l->temporal ? 8 : 4;
        if (cout % f != 0 || (4 * cin) % cout != 0)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "%s: encoder down_blocks.%d downsamples %lld -> %lld channels: "
                                 "the output must be a multiple of %lld dividing 4 * %lld",
                                 where, l->block, (long long)cin, (long long)cout, (long long)f,
                                 (long long)cin);
    } else if (l->kind == RL_UP) {
        int ok = l->temporal ? (cin % 4 == 0 && (4 * cout) % cin == 0)
                             : ((4 * cout) % cin == 0);
        if (!ok)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "%s: decoder up_blocks.%d upsamples %lld -> %lld channels: 4 * "
                                 "%lld must be a multiple of %lld%s",
                                 where, l->block, (long long)cin, (long long)cout,
                                 (long long)cout, (long long)cin,
                                 l->temporal ? " and the input a multiple of 4" : "");
    }
    return SDC_OK;
}

static sdc_status_t check_plans(const sdc_vae_refiner_config_t *c, const char *where,
                                sdc_error_t *err)
{
    rlayer_t layers[8 * (RVAE_MAX_LAYERS_PER_BLOCK + 2)];
    int64_t last = c->block_out_channels[c->n_blocks - 1], first = c->block_out_channels[0];
    int64_t end = 0;
    int n = enc_plan(c, layers, &end);
    for (int i = 0; i < n; i++) {
        sdc_status_t st = check_sample_layer(&layers[i], where, err);
        if (st != SDC_OK) return st;
    }
    if (end != last)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: the encoder's down blocks end with %lld channels but its mid "
                             "block is built for block_out_channels[-1] = %lld",
                             where, (long long)end, (long long)last);
    n = dec_plan(c, layers, &end);
    for (int i = 0; i < n; i++) {
        sdc_status_t st = check_sample_layer(&layers[i], where, err);
        if (st != SDC_OK) return st;
    }
    if (end != first)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: the decoder's up blocks end with %lld channels but its norm_out "
                             "is built for block_out_channels[0] = %lld",
                             where, (long long)end, (long long)first);
    return SDC_OK;
}

static sdc_status_t check_config(const sdc_vae_refiner_config_t *c, const char *where,
                                 sdc_error_t *err)
{
    if (c->in_channels < 1 || c->in_channels > RVAE_MAX_CHANNELS || c->out_channels < 1 ||
        c->out_channels > RVAE_MAX_CHANNELS || c->latent_channels < 1 ||
        c->latent_channels > RVAE_MAX_CHANNELS)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "%s: in_channels %lld, out_channels %lld, latent_channels %lld: each "
                             "must be in 1 .. %d",
                             where, (long long)c->in_channels, (long long)c->out_channels,
                             (long long)c->latent_channels, RVAE_MAX_CHANNELS);
    if (c->n_blocks < 1 || c->n_blocks > 8)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: block_out_channels has %d entries, 1 .. 8",
                             where, c->n_blocks);
    for (int i = 0; i < c->n_blocks; i++)
        if (c->block_out_channels[i] < 1 || c->block_out_channels[i] > RVAE_MAX_CHANNELS)
            return sdc_error_set(err, SDC_ERR_RANGE,
                                 "%s: block_out_channels[%d] = %lld is outside 1 .. %d", where, i,
                                 (long long)c->block_out_channels[i], RVAE_MAX_CHANNELS);
    if (c->layers_per_block < 0 || c->layers_per_block > RVAE_MAX_LAYERS_PER_BLOCK)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: layers_per_block = %lld, expected 0 .. %d",
                             where, (long long)c->layers_per_block, RVAE_MAX_LAYERS_PER_BLOCK);
    int64_t s = c->spatial_compression_ratio, t = c->temporal_compression_ratio;
    if (!pow2(s) || !pow2(t) || t > s || ilog2(s) >= c->n_blocks)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: spatial_compression_ratio %lld and temporal_compression_ratio "
                             "%lld must be powers of two, temporal <= spatial, and spatial < "
                             "2^len(block_out_channels) = %lld",
                             where, (long long)s, (long long)t,
                             (long long)(INT64_C(1) << c->n_blocks));
    int64_t last = c->block_out_channels[c->n_blocks - 1];
    if (last % (2 * c->latent_channels) != 0 || last % c->latent_channels != 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "%s: block_out_channels[-1] = %lld must be a multiple of 2 * "
                             "latent_channels = %lld (the encoder's and decoder's shortcuts)",
                             where, (long long)last, (long long)(2 * c->latent_channels));
    if (!isfinite(c->scaling_factor) || c->scaling_factor == 0.0)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "%s: scaling_factor = %g, expected a finite non-zero number", where,
                             c->scaling_factor);
    return check_plans(c, where, err);
}

sdc_status_t sdc_vae_refiner_config_from_json(sdc_vae_refiner_config_t *c, const sdc_json_t *doc,
                                              sdc_error_t *err)
{
    static const int64_t def_blocks[5] = {128, 256, 512, 1024, 1024};
    const char *where = doc->path ? doc->path : "refiner vae config";
    const char *cls = NULL;
    size_t nb = 0;
    sdc_status_t st;

    memset(c, 0, sizeof(*c));
    st = sdc_json_get_string(doc, "_class_name", NULL, &cls, err);
    if (st != SDC_OK) return st;
    if (!cls || strcmp(cls, RVAE_CLASS) != 0)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED, "%s: VAE class %s, the refiner needs %s",
                             where, cls ? cls : "(missing)", RVAE_CLASS);
    /* AutoencoderKLHunyuanImageRefiner.__init__'s defaults. */
    if ((st = sdc_json_get_int(doc, "in_channels", 3, &c->in_channels, err)) ||
        (st = sdc_json_get_int(doc, "out_channels", 3, &c->out_channels, err)) ||
        (st = sdc_json_get_int(doc, "latent_channels", 32, &c->latent_channels, err)) ||
        (st = sdc_json_get_int(doc, "layers_per_block", 2, &c->layers_per_block, err)) ||
        (st = sdc_json_get_int(doc, "spatial_compression_ratio", 16,
                               &c->spatial_compression_ratio, err)) ||
        (st = sdc_json_get_int(doc, "temporal_compression_ratio", 4,
                               &c->temporal_compression_ratio, err)) ||
        (st = sdc_json_get_bool(doc, "downsample_match_channel", 1,
                                &c->downsample_match_channel, err)) ||
        (st = sdc_json_get_bool(doc, "upsample_match_channel", 1, &c->upsample_match_channel,
                                err)) ||
        (st = sdc_json_get_double(doc, "scaling_factor", 1.03682, &c->scaling_factor, err)) ||
        (st = sdc_json_get_int_array(doc, "block_out_channels", def_blocks, 5,
                                     c->block_out_channels, 8, &nb, err)))
        return st;
    c->n_blocks = (int)nb;
    return check_config(c, where, err);
}

sdc_status_t sdc_vae_refiner_config_load(sdc_vae_refiner_config_t *c, const char *config_json,
                                         sdc_error_t *err)
{
    sdc_json_t doc = {0};
    sdc_status_t st = sdc_json_load(&doc, config_json, err);
    if (st != SDC_OK) return st;
    st = sdc_vae_refiner_config_from_json(c, &doc, err);
    sdc_json_free(&doc);
    return st;
}

/* ---- weights ------------------------------------------------------------- */

/* A CausalConv3d "<prefix>.conv.weight" [cout_all, cin, 3, 3, 3] summed over
 * its temporal axis (slices added in order 0, 1, 2). keep: NULL, or the
 * cout output channels to keep, by index. */
static sdc_status_t load_causal(sdc_weights_t *w, rconv_t *cv, int64_t cout_all, int64_t cin,
                                const int64_t *keep, int64_t cout, const char *prefix,
                                sdc_error_t *err)
{
    char name[320];
    const int64_t shape[5] = {cout_all, cin, 3, 3, 3};
    float *wt = NULL, *bias = NULL, *sum = NULL;
    snprintf(name, sizeof(name), "%s.conv.weight", prefix);
    sdc_status_t st = sdc_weights_read_host(w, name, 5, shape, &wt, err);
    if (st != SDC_OK) return st;
    snprintf(name, sizeof(name), "%s.conv.bias", prefix);
    st = sdc_weights_read_host(w, name, 1, shape, &bias, err);
    if (st != SDC_OK) goto out;
    sum = malloc((size_t)(cout * cin * 9) * sizeof(float));
    if (!sum) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory loading %s", prefix);
        goto out;
    }
    for (int64_t o = 0; o < cout; o++) {
        int64_t src_o = keep ? keep[o] : o;
        for (int64_t i = 0; i < cin * 9; i++) {
            const float *k = wt + (src_o * cin + i / 9) * 27 + i % 9;
            sum[o * cin * 9 + i] = (k[0] + k[9]) + k[18];
        }
        bias[o] = bias[src_o]; /* src_o >= o: nothing needed is overwritten */
    }
    st = sdc_weights_upload(w, sum, cout * cin * 9, &cv->w, err);
    if (st == SDC_OK) st = sdc_weights_upload(w, bias, cout, &cv->b, err);
out:
    free(sum);
    free(bias);
    free(wt);
    return st;
}

/* A plain nn.Conv3d with kernel 1: [cout, cin, 1, 1, 1] is a cout x cin matrix. */
static sdc_status_t load_1x1(sdc_weights_t *w, rconv_t *cv, int64_t cout, int64_t cin,
                             const char *prefix, sdc_error_t *err)
{
    const int64_t shape[5] = {cout, cin, 1, 1, 1};
    sdc_status_t st = sdc_weights_loadf(w, 5, shape, &cv->w, err, "%s.weight", prefix);
    if (st == SDC_OK) st = sdc_weights_loadf(w, 1, shape, &cv->b, err, "%s.bias", prefix);
    return st;
}

static sdc_status_t load_gamma(sdc_weights_t *w, float **g, int64_t c, const char *prefix,
                               sdc_error_t *err)
{
    const int64_t shape[4] = {c, 1, 1, 1};
    return sdc_weights_loadf(w, 4, shape, g, err, "%s.gamma", prefix);
}

static sdc_status_t load_resnet(sdc_weights_t *w, rlayer_t *l, const char *prefix,
                                sdc_error_t *err)
{
    char p[256];
    sdc_status_t st;
    snprintf(p, sizeof(p), "%s.norm1", prefix);
    if ((st = load_gamma(w, &l->norm1, l->cin, p, err))) return st;
    snprintf(p, sizeof(p), "%s.conv1", prefix);
    if ((st = load_causal(w, &l->conv1, l->cout, l->cin, NULL, l->cout, p, err))) return st;
    snprintf(p, sizeof(p), "%s.norm2", prefix);
    if ((st = load_gamma(w, &l->norm2, l->cout, p, err))) return st;
    snprintf(p, sizeof(p), "%s.conv2", prefix);
    if ((st = load_causal(w, &l->conv2, l->cout, l->cout, NULL, l->cout, p, err))) return st;
    if (l->cin == l->cout) return SDC_OK;
    snprintf(p, sizeof(p), "%s.conv_shortcut", prefix);
    return load_1x1(w, &l->shortcut, l->cout, l->cin, p, err);
}

static sdc_status_t load_attn(sdc_weights_t *w, rattn_t *a, int64_t c, const char *prefix,
                              sdc_error_t *err)
{
    char p[256];
    sdc_status_t st;
    snprintf(p, sizeof(p), "%s.norm", prefix);
    if ((st = load_gamma(w, &a->norm, c, p, err))) return st;
    const struct {
        const char *name;
        rconv_t *cv;
    } convs[] = {{"to_q", &a->q}, {"to_k", &a->k}, {"to_v", &a->v}, {"proj_out", &a->proj}};
    for (size_t i = 0; i < sizeof(convs) / sizeof(convs[0]); i++) {
        snprintf(p, sizeof(p), "%s.%s", prefix, convs[i].name);
        if ((st = load_1x1(w, convs[i].cv, c, c, p, err))) return st;
    }
    return SDC_OK;
}

/* The sampling layer's conv. A temporal upsample keeps, of its 8 * cout
 * output channels (ordered r_h, r_w, c with c < 2 * cout), those with
 * c < cout: the half `h[:, : h.shape[1] // 2]` keeps after the
 * rearrangement. */
static sdc_status_t load_sampler(sdc_weights_t *w, rlayer_t *l, const char *prefix,
                                 sdc_error_t *err)
{
    if (l->kind == RL_DOWN)
        return load_causal(w, &l->conv, l->cout / (l->temporal ? 8 : 4), l->cin, NULL,
                           l->cout / (l->temporal ? 8 : 4), prefix, err);
    if (!l->temporal)
        return load_causal(w, &l->conv, 4 * l->cout, l->cin, NULL, 4 * l->cout, prefix, err);
    int64_t *keep = malloc((size_t)(4 * l->cout) * sizeof(int64_t));
    if (!keep) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory loading %s", prefix);
    for (int64_t r = 0; r < 4; r++)
        for (int64_t c = 0; c < l->cout; c++) keep[r * l->cout + c] = r * 2 * l->cout + c;
    sdc_status_t st =
        load_causal(w, &l->conv, 8 * l->cout, l->cin, keep, 4 * l->cout, prefix, err);
    free(keep);
    return st;
}

static sdc_status_t load_half(sdc_vae_refiner_t *v, rhalf_t *h, int decoder, sdc_error_t *err)
{
    const sdc_vae_refiner_config_t *c = &v->cfg;
    const char *half = decoder ? "decoder" : "encoder";
    const char *blocks = decoder ? "up_blocks" : "down_blocks";
    const char *sampler = decoder ? "upsamplers" : "downsamplers";
    /* The mid block is built for block_out_channels[-1] in both halves. */
    int64_t mid = c->block_out_channels[c->n_blocks - 1];
    int64_t ch_in = decoder ? c->latent_channels : c->in_channels;
    int64_t ch_first = decoder ? mid : c->block_out_channels[0];
    int64_t ch_out = decoder ? c->out_channels : 2 * c->latent_channels;
    int64_t ch_last = decoder ? c->block_out_channels[0] : mid;
    int64_t end = 0;
    char p[160];
    sdc_status_t st;

    h->n_layers = decoder ? dec_plan(c, NULL, &end) : enc_plan(c, NULL, &end);
    h->layers = calloc((size_t)(h->n_layers > 0 ? h->n_layers : 1), sizeof(*h->layers));
    if (!h->layers) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    if (decoder)
        dec_plan(c, h->layers, &end);
    else
        enc_plan(c, h->layers, &end);
    h->mid_channels = mid;

    snprintf(p, sizeof(p), "%s.conv_in", half);
    if ((st = load_causal(&v->w, &h->conv_in, ch_first, ch_in, NULL, ch_first, p, err)))
        return st;
    for (int i = 0; i < h->n_layers; i++) {
        rlayer_t *l = &h->layers[i];
        if (l->kind == RL_RESNET) {
            snprintf(p, sizeof(p), "%s.%s.%d.resnets.%d", half, blocks, l->block, l->index);
            st = load_resnet(&v->w, l, p, err);
        } else {
            snprintf(p, sizeof(p), "%s.%s.%d.%s.0.conv", half, blocks, l->block, sampler);
            st = load_sampler(&v->w, l, p, err);
        }
        if (st != SDC_OK) return st;
    }
    for (int i = 0; i < 2; i++) {
        h->mid_res[i] = (rlayer_t){.kind = RL_RESNET, .cin = mid, .cout = mid};
        snprintf(p, sizeof(p), "%s.mid_block.resnets.%d", half, i);
        if ((st = load_resnet(&v->w, &h->mid_res[i], p, err))) return st;
    }
    snprintf(p, sizeof(p), "%s.mid_block.attentions.0", half);
    if ((st = load_attn(&v->w, &h->attn, mid, p, err))) return st;
    snprintf(p, sizeof(p), "%s.norm_out", half);
    if ((st = load_gamma(&v->w, &h->norm_out, ch_last, p, err))) return st;
    snprintf(p, sizeof(p), "%s.conv_out", half);
    return load_causal(&v->w, &h->conv_out, ch_out, ch_last, NULL, ch_out, p, err);
}

sdc_status_t sdc_vae_refiner_load(sdc_vae_refiner_t **out, sdc_backend_t *be,
                                  const char *vae_dir, sdc_error_t *err)
{
    char path[4096];
    sdc_status_t st;
    *out = NULL;
    if (!be || !vae_dir)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "refiner vae: NULL argument");
    if (snprintf(path, sizeof(path), "%s/config.json", vae_dir) >= (int)sizeof(path))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: path too long", vae_dir);
    sdc_vae_refiner_t *v = calloc(1, sizeof(*v));
    if (!v) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    v->be = be;
    st = sdc_vae_refiner_config_load(&v->cfg, path, err);
    if (st != SDC_OK) goto err_free;
    st = sdc_weights_open(&v->w, be, vae_dir, err);
    if (st != SDC_OK) goto err_free;
    st = load_half(v, &v->enc, 0, err);
    if (st == SDC_OK) st = load_half(v, &v->dec, 1, err);
    if (st != SDC_OK) {
        sdc_error_wrap(err, "loading the refiner vae from %s", vae_dir);
        goto err_free;
    }
    *out = v;
    return SDC_OK;

err_free:
    sdc_vae_refiner_free(v);
    return st;
}

void sdc_vae_refiner_free(sdc_vae_refiner_t *v)
{
    if (!v) return;
    sdc_weights_close(&v->w);
    free(v->enc.layers);
    free(v->dec.layers);
    free(v);
}

const sdc_vae_refiner_config_t *sdc_vae_refiner_config(const sdc_vae_refiner_t *v)
{
    return &v->cfg;
}

/* ---- layers ------------------------------------------------------------- */

/* The activations of one forward: cur is the running activation, a and b
 * scratch, p the padded copy (or a transpose); each holds n (p: n_pad)
 * floats, enough for any activation of the network. */
typedef struct {
    sdc_backend_t *be;
    float *cur, *a, *b, *p;
} rbufs_t;

static void swap(float **x, float **y)
{
    float *t = *x;
    *x = *y;
    *y = t;
}

/* x: C x H x W -> p: C x (H + 2) x (W + 2), edges replicated (F.pad
 * "replicate"): interior, top and bottom rows, then the left and right
 * columns from the already padded rows (which fills the corners). */
static void pad_replicate(sdc_backend_t *be, float *p, const float *x, int64_t C, int64_t H,
                          int64_t W)
{
    const sdc_backend_ops_t *op = be->ops;
    const int64_t Wp = W + 2, P = (H + 2) * Wp;
    const int64_t in_shape[3] = {C, H, W}, in_dst[3] = {P, Wp, 1}, in_src[3] = {H * W, W, 1};
    const int64_t row_shape[2] = {C, W}, row_dst[2] = {P, 1}, row_src[2] = {H * W, 1};
    const int64_t col_shape[2] = {C, H + 2}, col_str[2] = {P, Wp};
    op->copy_strided(be, p + Wp + 1, x, 3, in_shape, in_dst, in_src);
    op->copy_strided(be, p + 1, x, 2, row_shape, row_dst, row_src);
    op->copy_strided(be, p + (H + 1) * Wp + 1, x + (H - 1) * W, 2, row_shape, row_dst, row_src);
    op->copy_strided(be, p, p + 1, 2, col_shape, col_str, col_str);
    op->copy_strided(be, p + W + 1, p + W, 2, col_shape, col_str, col_str);
}

/* CausalConv3d on one frame: y (cout x H x W) = conv3x3(replicate_pad(x)). */
static void causal_conv(rbufs_t *bf, float *y, const float *x, const rconv_t *cv, int64_t cin,
                        int64_t H, int64_t W, int64_t cout)
{
    pad_replicate(bf->be, bf->p, x, cin, H, W);
    bf->be->ops->conv2d(bf->be, y, bf->p, cv->w, cv->b, cin, H + 2, W + 2, cout, 3, 3, 1, 0);
}

/* y = RMS_norm(x) over channels at each of the HW pixels (y may equal x),
 * through the pixel-major layout in tmp. */
static void channel_rms(sdc_backend_t *be, float *y, const float *x, const float *gamma,
                        int64_t C, int64_t HW, float *tmp)
{
    const int64_t t_shape[2] = {HW, C}, t_dst[2] = {C, 1}, t_src[2] = {1, HW};
    const int64_t b_shape[2] = {C, HW}, b_dst[2] = {HW, 1}, b_src[2] = {1, C};
    be->ops->copy_strided(be, tmp, x, 2, t_shape, t_dst, t_src);
    be->ops->rms_norm(be, tmp, tmp, gamma, HW, C, C, RVAE_NORM_EPS_SUM / (float)C);
    be->ops->copy_strided(be, y, tmp, 2, b_shape, b_dst, b_src);
}

/* HunyuanImageRefinerResnetBlock on bf->cur (cin -> cout channels). */
static void resnet(rbufs_t *bf, const rlayer_t *l, int64_t H, int64_t W)
{
    sdc_backend_t *be = bf->be;
    int64_t HW = H * W, cin = l->cin, cout = l->cout;
    channel_rms(be, bf->a, bf->cur, l->norm1, cin, HW, bf->b);
    be->ops->silu(be, bf->a, bf->a, cin * HW);
    causal_conv(bf, bf->b, bf->a, &l->conv1, cin, H, W, cout);
    channel_rms(be, bf->b, bf->b, l->norm2, cout, HW, bf->a);
    be->ops->silu(be, bf->b, bf->b, cout * HW);
    causal_conv(bf, bf->a, bf->b, &l->conv2, cout, H, W, cout);
    if (l->shortcut.w) {
        be->ops->conv2d(be, bf->b, bf->cur, l->shortcut.w, l->shortcut.b, cin, 1, HW, cout, 1, 1,
                        1, 0);
        be->ops->add(be, bf->cur, bf->a, bf->b, cout * HW);
    } else {
        be->ops->add(be, bf->cur, bf->cur, bf->a, cout * HW);
    }
}

/* HunyuanImageRefinerAttnBlock: one head of width C over the HW pixels. */
static sdc_status_t attention(rbufs_t *bf, const rattn_t *at, int64_t C, int64_t HW,
                              sdc_error_t *err)
{
    sdc_backend_t *be = bf->be;
    const sdc_backend_ops_t *op = be->ops;
    const int64_t t_shape[2] = {HW, C}, t_dst[2] = {C, 1}, t_src[2] = {1, HW};
    const int64_t b_shape[2] = {C, HW}, b_dst[2] = {HW, 1}, b_src[2] = {1, C};
    float *qkv = op->alloc(be, (size_t)(3 * C * HW) * sizeof(float));
    if (!qkv)
        return sdc_error_set(err, SDC_ERR_NOMEM, "refiner vae: out of memory for attention");
    op->copy_strided(be, bf->b, bf->cur, 2, t_shape, t_dst, t_src);
    op->rms_norm(be, bf->b, bf->b, at->norm, HW, C, C, RVAE_NORM_EPS_SUM / (float)C);
    op->linear(be, qkv, 3 * C, bf->b, C, at->q.w, at->q.b, HW, C, C);
    op->linear(be, qkv + C, 3 * C, bf->b, C, at->k.w, at->k.b, HW, C, C);
    op->linear(be, qkv + 2 * C, 3 * C, bf->b, C, at->v.w, at->v.b, HW, C, C);
    op->attention(be, bf->a, C, qkv, 3 * C, qkv + C, 3 * C, qkv + 2 * C, 3 * C, HW, HW, 1, C,
                  NULL, (float)(1.0 / sqrt((double)C)));
    op->free(be, qkv);
    op->linear(be, bf->b, C, bf->a, C, at->proj.w, at->proj.b, HW, C, C);
    op->copy_strided(be, bf->a, bf->b, 2, b_shape, b_dst, b_src);
    op->add(be, bf->cur, bf->cur, bf->a, C * HW);
    return SDC_OK;
}

/* HunyuanImageRefinerDownsampleDCAE, cin x H x W -> cout x H/2 x W/2. The
 * conv output's space-to-channel layout and the shortcut's gather are
 * vae_encoder.c's; the temporal variant's conv has half the channels and
 * its result is duplicated. */
static void downsample(rbufs_t *bf, const rlayer_t *l, int64_t H, int64_t W)
{
    sdc_backend_t *be = bf->be;
    const sdc_backend_ops_t *op = be->ops;
    int64_t cin = l->cin, cout = l->cout, H2 = H / 2, W2 = W / 2, hw2 = H2 * W2, HW = H * W;
    int64_t cq = cout / (l->temporal ? 8 : 4), cs = cout / 4, g = 4 * cin / cout;
    const int64_t h_shape[5] = {2, 2, cq, H2, W2};
    const int64_t h_dst[5] = {2 * cq * hw2, cq * hw2, hw2, W2, 1};
    const int64_t h_src[5] = {W, 1, HW, 2 * W, 2};
    const int64_t s_shape[6] = {g, 2, 2, cs, H2, W2};
    const int64_t s_dst[6] = {cout * hw2, 2 * cs * hw2, cs * hw2, hw2, W2, 1};
    const int64_t s_src[6] = {HW, W, 1, g * HW, 2 * W, 2};
    assert(cs * g == cin && H % 2 == 0 && W % 2 == 0);

    causal_conv(bf, bf->a, bf->cur, &l->conv, cin, H, W, cq);
    op->copy_strided(be, bf->b, bf->a, 5, h_shape, h_dst, h_src);
    if (l->temporal)
        op->copy(be, bf->b + 4 * cq * hw2, bf->b, (size_t)(4 * cq * hw2) * sizeof(float));
    op->copy_strided(be, bf->a, bf->cur, 6, s_shape, s_dst, s_src);
    sdc_vae_add_group_mean(be, bf->b, bf->a, g, cout * hw2);
    swap(&bf->cur, &bf->b);
}

/* HunyuanImageRefinerUpsampleDCAE, cin x H x W -> cout x 2H x 2W. Conv and
 * shortcut are summed in the packed layout (channel (2 r_h + r_w) * cout +
 * c), then moved channel-to-space as vae.c does. */
static void upsample(rbufs_t *bf, const rlayer_t *l, int64_t H, int64_t W)
{
    sdc_backend_t *be = bf->be;
    const sdc_backend_ops_t *op = be->ops;
    int64_t cin = l->cin, cout = l->cout, HW = H * W, n = 4 * cout * HW;
    const int64_t shape[5] = {cout, H, 2, W, 2};
    const int64_t dst[5] = {4 * HW, 4 * W, 2 * W, 2, 1};
    const int64_t src[5] = {HW, W, 2 * cout * HW, 1, cout * HW};

    causal_conv(bf, bf->a, bf->cur, &l->conv, cin, H, W, 4 * cout);
    if (l->temporal) {
        /* Packed channel (r, c) <- input channel r * cin / 4 + c / k: the
         * input moved channel-to-space, then repeated k = 4 cout / cin times. */
        int64_t cq = cin / 4, k = 4 * cout / cin;
        const int64_t s_shape[4] = {4, cq, k, HW};
        const int64_t s_dst[4] = {cout * HW, k * HW, HW, 1};
        const int64_t s_src[4] = {cq * HW, HW, 0, 1};
        op->copy_strided(be, bf->b, bf->cur, 4, s_shape, s_dst, s_src);
    } else {
        sdc_vae_repeat_interleave(be, bf->b, bf->cur, cin, 4 * cout / cin, HW);
    }
    op->add(be, bf->a, bf->a, bf->b, n);
    op->copy_strided(be, bf->cur, bf->a, 5, shape, dst, src);
}

static sdc_status_t run_layers(rbufs_t *bf, const rhalf_t *h, int64_t *C, int64_t *H, int64_t *W,
                               sdc_error_t *err)
{
    (void)err;
    for (int i = 0; i < h->n_layers; i++) {
        const rlayer_t *l = &h->layers[i];
        assert(l->cin == *C);
        if (l->kind == RL_RESNET) {
            resnet(bf, l, *H, *W);
        } else if (l->kind == RL_DOWN) {
            downsample(bf, l, *H, *W);
            *H /= 2;
            *W /= 2;
        } else {
            upsample(bf, l, *H, *W);
            *H *= 2;
            *W *= 2;
        }
        *C = l->cout;
    }
    return SDC_OK;
}

static sdc_status_t run_mid(rbufs_t *bf, const rhalf_t *h, int64_t H, int64_t W,
                            sdc_error_t *err)
{
    resnet(bf, &h->mid_res[0], H, W);
    sdc_status_t st = attention(bf, &h->attn, h->mid_channels, H * W, err);
    if (st == SDC_OK) resnet(bf, &h->mid_res[1], H, W);
    return st;
}

/* The largest activation (n) and padded activation (n_pad) of a pass over
 * half h starting with C0 channels at H x W (input and output included). */
static void pass_sizes(const rhalf_t *h, int64_t c_in, int64_t C0, int64_t c_out, int64_t H,
                       int64_t W, int64_t *n, int64_t *n_pad)
{
    int64_t mx = (c_in > C0 ? c_in : C0) * H * W, mp = (c_in > C0 ? c_in : C0) * (H + 2) * (W + 2);
    for (int i = 0; i < h->n_layers; i++) {
        const rlayer_t *l = &h->layers[i];
        int64_t c = l->cin > l->cout ? l->cin : l->cout;
        if (l->kind == RL_UP) c = 4 * l->cout;
        if (c * H * W > mx) mx = c * H * W;
        if (l->cin * (H + 2) * (W + 2) > mp) mp = l->cin * (H + 2) * (W + 2);
        if (l->kind == RL_DOWN) H /= 2, W /= 2;
        if (l->kind == RL_UP) H *= 2, W *= 2;
        if (l->cout * (H + 2) * (W + 2) > mp) mp = l->cout * (H + 2) * (W + 2);
    }
    int64_t last = c_out > h->mid_channels ? c_out : h->mid_channels;
    if (last * H * W > mx) mx = last * H * W;
    /* channel_rms of the last level uses p as its transpose. */
    if (mp < mx) mp = mx;
    *n = mx;
    *n_pad = mp;
}

static sdc_status_t bufs_alloc(sdc_vae_refiner_t *v, rbufs_t *bf, int64_t n, int64_t n_pad)
{
    const sdc_backend_ops_t *op = v->be->ops;
    bf->be = v->be;
    bf->cur = op->alloc(v->be, (size_t)n * sizeof(float));
    bf->a = op->alloc(v->be, (size_t)n * sizeof(float));
    bf->b = op->alloc(v->be, (size_t)n * sizeof(float));
    bf->p = op->alloc(v->be, (size_t)n_pad * sizeof(float));
    return bf->cur && bf->a && bf->b && bf->p ? SDC_OK : SDC_ERR_NOMEM;
}

static void bufs_free(rbufs_t *bf)
{
    float **all[4] = {&bf->cur, &bf->a, &bf->b, &bf->p};
    for (int i = 0; i < 4; i++) {
        if (*all[i]) bf->be->ops->free(bf->be, *all[i]);
        *all[i] = NULL;
    }
}

/* ---- encode / decode ------------------------------------------------------- */

sdc_status_t sdc_vae_refiner_encode(sdc_vae_refiner_t *v, const float *image, int64_t H,
                                    int64_t W, float *mean, float *logvar, sdc_error_t *err)
{
    if (!v || !image || !mean || !logvar)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "refiner vae encode: NULL argument");
    const sdc_vae_refiner_config_t *c = &v->cfg;
    const rhalf_t *e = &v->enc;
    int64_t r = c->spatial_compression_ratio;
    if (H < r || W < r || H > SDC_VAE_REFINER_MAX_SIDE || W > SDC_VAE_REFINER_MAX_SIDE ||
        H % r || W % r)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "refiner vae encode: image %lld x %lld (H x W): each side must be a "
                             "multiple of %lld in %lld .. %d",
                             (long long)H, (long long)W, (long long)r, (long long)r,
                             SDC_VAE_REFINER_MAX_SIDE);
    const sdc_backend_ops_t *op = v->be->ops;
    int64_t C = c->block_out_channels[0], z2 = 2 * c->latent_channels, h = H, w = W, n, n_pad;
    rbufs_t bf = {0};
    sdc_status_t st;
    pass_sizes(e, c->in_channels, C, z2, H, W, &n, &n_pad);
    if (bufs_alloc(v, &bf, n, n_pad) != SDC_OK) goto err_nomem;

    op->upload(v->be, bf.b, image, (size_t)(c->in_channels * H * W) * sizeof(float));
    causal_conv(&bf, bf.cur, bf.b, &e->conv_in, c->in_channels, H, W, C);
    st = run_layers(&bf, e, &C, &h, &w, err);
    if (st == SDC_OK) st = run_mid(&bf, e, h, w, err);
    if (st != SDC_OK) goto out;
    assert(C == e->mid_channels);

    /* conv_out(silu(norm_out(x))) + x averaged over groups of g channels. */
    int64_t HW = h * w, g = C / z2;
    const int64_t s_shape[3] = {g, z2, HW}, s_dst[3] = {z2 * HW, HW, 1}, s_src[3] = {HW, g * HW, 1};
    op->copy_strided(v->be, bf.a, bf.cur, 3, s_shape, s_dst, s_src);
    channel_rms(v->be, bf.b, bf.cur, e->norm_out, C, HW, bf.p);
    op->silu(v->be, bf.b, bf.b, C * HW);
    causal_conv(&bf, bf.cur, bf.b, &e->conv_out, C, h, w, z2);
    sdc_vae_add_group_mean(v->be, bf.cur, bf.a, g, z2 * HW);

    op->sync(v->be);
    int64_t nz = c->latent_channels * HW;
    op->download(v->be, mean, bf.cur, (size_t)nz * sizeof(float));
    op->download(v->be, logvar, bf.cur + nz, (size_t)nz * sizeof(float));
    /* torch.clamp keeps NaN; so do these comparisons. */
    for (int64_t i = 0; i < nz; i++)
        logvar[i] = logvar[i] < -30.0f ? -30.0f : (logvar[i] > 20.0f ? 20.0f : logvar[i]);
out:
    bufs_free(&bf);
    return st;
err_nomem:
    bufs_free(&bf);
    return sdc_error_set(err, SDC_ERR_NOMEM,
                         "refiner vae: out of memory encoding a %lld x %lld image (%lld floats "
                         "per activation)",
                         (long long)W, (long long)H, (long long)n);
}

sdc_status_t sdc_vae_refiner_decode(sdc_vae_refiner_t *v, const float *latent, int64_t h,
                                    int64_t w, float *image, sdc_error_t *err)
{
    if (!v || !latent || !image)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "refiner vae decode: NULL argument");
    const sdc_vae_refiner_config_t *c = &v->cfg;
    const rhalf_t *d = &v->dec;
    int64_t r = c->spatial_compression_ratio, max = SDC_VAE_REFINER_MAX_SIDE / r;
    if (h < 1 || w < 1 || h > max || w > max)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "refiner vae decode: latent %lld x %lld, each side must be in 1 .. "
                             "%lld",
                             (long long)h, (long long)w, (long long)max);
    const sdc_backend_ops_t *op = v->be->ops;
    int64_t cz = c->latent_channels, C = d->mid_channels, H = h, W = w, n, n_pad;
    rbufs_t bf = {0};
    sdc_status_t st;
    pass_sizes(d, cz, C, c->out_channels, h, w, &n, &n_pad);
    if (bufs_alloc(v, &bf, n, n_pad) != SDC_OK) goto err_nomem;

    /* conv_in(z) + repeat_interleave(z, C / latent_channels). */
    op->upload(v->be, bf.b, latent, (size_t)(cz * h * w) * sizeof(float));
    causal_conv(&bf, bf.cur, bf.b, &d->conv_in, cz, H, W, C);
    sdc_vae_repeat_interleave(v->be, bf.a, bf.b, cz, C / cz, H * W);
    op->add(v->be, bf.cur, bf.cur, bf.a, C * H * W);
    st = run_mid(&bf, d, H, W, err);
    if (st == SDC_OK) st = run_layers(&bf, d, &C, &H, &W, err);
    if (st != SDC_OK) goto out;
    assert(C == c->block_out_channels[0]);

    channel_rms(v->be, bf.a, bf.cur, d->norm_out, C, H * W, bf.b);
    op->silu(v->be, bf.a, bf.a, C * H * W);
    causal_conv(&bf, bf.b, bf.a, &d->conv_out, C, H, W, c->out_channels);
    op->sync(v->be);
    op->download(v->be, image, bf.b, (size_t)(c->out_channels * H * W) * sizeof(float));
out:
    bufs_free(&bf);
    return st;
err_nomem:
    bufs_free(&bf);
    return sdc_error_set(err, SDC_ERR_NOMEM,
                         "refiner vae: out of memory decoding a %lld x %lld latent (%lld floats "
                         "per activation)",
                         (long long)w, (long long)h, (long long)n);
}
