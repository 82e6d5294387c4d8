/*
 * vae_encoder.c: the encoder of diffusers' AutoencoderKLHunyuanImage and its
 * DiagonalGaussianDistribution, one sample at a time, on backend ops only.
 * Image-to-image is its only user, so its weights load on request.
 *
 * Encoder (block channels ch = block_out_channels):
 *   conv_in
 *   down: per level i, layers_per_block resnets, then (i < log2(ratio), not
 *         the last level) a space-to-channel downsample whose shortcut is
 *         the space-to-channel input averaged over groups of channels
 *   mid: resnet, single-head attention over H*W tokens, resnet
 *   norm_out, silu, conv_out (2 * latent_channels) + the last activation
 *   averaged over groups of ch[-1] / (2 * latent_channels) channels
 * then mean, logvar = chunk(2); logvar clamped to [-30, 20].
 *
 * The group averages are sums in channel order times 1 / group: the same
 * bits as torch's mean when the group is a power of two (every
 * HunyuanImage configuration), within one rounding otherwise.
 *
 * Not here: tiled encoding, the decoder (vae.c).
 */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/philox.h"
#include "vae_internal.h"

/* HunyuanImageEncoder2D.__init__'s down_blocks list. layers may be NULL to
 * only count; returns the number of layers and, in *out_channels, the
 * channel count the mid block receives. */
static int enc_plan(const sdc_vae_config_t *c, sdc_vae_layer_t *layers, int64_t *out_channels)
{
    const int64_t *ch = c->block_out_channels;
    int n = 0, n_levels = 0;
    while ((INT64_C(1) << n_levels) < c->spatial_compression_ratio) n_levels++;

    int64_t in = ch[0];
    for (int i = 0; i < c->n_blocks; i++) {
        int64_t out = ch[i];
        for (int64_t j = 0; j < c->layers_per_block; j++, n++) {
            if (layers)
                layers[n] = (sdc_vae_layer_t){.kind = SDC_VAE_RESNET, .cin = in, .cout = out};
            in = out;
        }
        /* `i < np.log2(ratio)`: ratio is a power of two (checked). */
        if (i < n_levels && i != c->n_blocks - 1) {
            if (c->downsample_match_channel) out = ch[i + 1];
            if (layers)
                layers[n] = (sdc_vae_layer_t){.kind = SDC_VAE_DOWNSAMPLE, .cin = in, .cout = out};
            n++;
            in = out;
        }
    }
    *out_channels = in;
    return n;
}

/* What diffusers would refuse to build or fail to run. */
static sdc_status_t enc_check_plan(const sdc_vae_config_t *c, const sdc_vae_layer_t *layers,
                                   int n, int64_t mid_channels, sdc_error_t *err)
{
    for (int i = 0; i < n; i++) {
        const sdc_vae_layer_t *l = &layers[i];
        if (l->kind == SDC_VAE_RESNET && l->cin != l->cout)
            return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                                 "vae encoder: down_blocks.%d would change channels %lld -> %lld "
                                 "in a resnet, which diffusers cannot run "
                                 "(downsample_match_channel=false with differing "
                                 "block_out_channels)",
                                 i, (long long)l->cin, (long long)l->cout);
        if (l->kind == SDC_VAE_DOWNSAMPLE && (l->cout % 4 != 0 || (4 * l->cin) % l->cout != 0))
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "vae encoder: down_blocks.%d downsamples %lld -> %lld channels: "
                                 "the output must be a multiple of 4 dividing 4 * %lld",
                                 i, (long long)l->cin, (long long)l->cout, (long long)l->cin);
    }
    int64_t last = c->block_out_channels[c->n_blocks - 1];
    if (mid_channels != last)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "vae encoder: the down blocks end with %lld channels but the mid "
                             "block is built for block_out_channels[-1] = %lld",
                             (long long)mid_channels, (long long)last);
    return SDC_OK;
}

static sdc_status_t enc_load_weights(sdc_vae_t *v, sdc_vae_encoder_t *e, sdc_error_t *err)
{
    const sdc_vae_config_t *c = &v->cfg;
    sdc_weights_t *w = &v->w;
    int64_t last = c->block_out_channels[c->n_blocks - 1];
    char prefix[96];
    sdc_status_t st;

    st = sdc_vae_load_conv(w, &e->conv_in_w, &e->conv_in_b, c->block_out_channels[0],
                           c->in_channels, "encoder.conv_in", err);
    for (int i = 0; i < e->n_down && st == SDC_OK; i++) {
        sdc_vae_layer_t *l = &e->down[i];
        if (l->kind == SDC_VAE_RESNET) {
            snprintf(prefix, sizeof(prefix), "encoder.down_blocks.%d", i);
            st = sdc_vae_load_resnet(w, &l->res, l->cout, prefix, err);
        } else {
            snprintf(prefix, sizeof(prefix), "encoder.down_blocks.%d.conv", i);
            st = sdc_vae_load_conv(w, &l->conv_w, &l->conv_b, l->cout / 4, l->cin, prefix, err);
        }
    }
    for (int i = 0; i < 2 && st == SDC_OK; i++) {
        snprintf(prefix, sizeof(prefix), "encoder.mid_block.resnets.%d", i);
        st = sdc_vae_load_resnet(w, &e->mid_res[i], last, prefix, err);
    }
    if (st == SDC_OK)
        st = sdc_vae_load_attn(w, &e->mid_attn, last, "encoder.mid_block.attentions.0", err);
    if (st == SDC_OK)
        st = sdc_vae_load_norm(w, &e->norm_out_w, &e->norm_out_b, last, "encoder.norm_out", err);
    if (st == SDC_OK)
        st = sdc_vae_load_conv(w, &e->conv_out_w, &e->conv_out_b, 2 * c->latent_channels, last,
                               "encoder.conv_out", err);
    return st;
}

sdc_status_t sdc_vae_load_encoder(sdc_vae_t *v, sdc_error_t *err)
{
    if (!v) return sdc_error_set(err, SDC_ERR_INVALID_ARG, "vae encoder: NULL argument");
    if (v->enc) return SDC_OK;
    sdc_status_t st;
    int64_t mid_channels = 0;
    sdc_vae_encoder_t *e = calloc(1, sizeof(*e));
    if (!e) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    e->n_down = enc_plan(&v->cfg, NULL, &mid_channels);
    e->down = calloc((size_t)(e->n_down > 0 ? e->n_down : 1), sizeof(*e->down));
    if (!e->down) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        goto err_free_enc;
    }
    enc_plan(&v->cfg, e->down, &mid_channels);
    st = enc_check_plan(&v->cfg, e->down, e->n_down, mid_channels, err);
    if (st != SDC_OK) goto err_free_down;
    /* Tensors loaded before a failure stay owned by v->w until sdc_vae_free. */
    st = enc_load_weights(v, e, err);
    if (st != SDC_OK) {
        sdc_error_wrap(err, "loading vae encoder from %s", v->w.label ? v->w.label : "vae");
        goto err_free_down;
    }
    v->enc = e;
    return SDC_OK;

err_free_down:
    free(e->down);
err_free_enc:
    free(e);
    return st;
}

int sdc_vae_has_encoder(const sdc_vae_t *v)
{
    return v && v->enc;
}

void sdc_vae_encoder_free(sdc_vae_t *v)
{
    if (!v->enc) return;
    free(v->enc->down);
    free(v->enc);
    v->enc = NULL;
}

void sdc_vae_add_group_mean(sdc_backend_t *be, float *y, float *p, int64_t g, int64_t n)
{
    const sdc_backend_ops_t *op = be->ops;
    for (int64_t j = 1; j < g; j++) op->add(be, p, p, p + j * n, n);
    op->axpby(be, y, 1.0f, y, 1.0f / (float)g, p, n);
}

/* HunyuanImageDownsample, cin x H x W -> cout x H/2 x W/2:
 *   h = space-to-channel(conv(x)) (cout / 4 channels before, ordered r1, r2, c)
 *   shortcut = space-to-channel(x) viewed as (cout, g, H/2, W/2), mean over g,
 *   g = 4 * cin / cout.
 * The shortcut's elements are gathered straight into [g][cout][H/2][W/2]
 * order (one strided copy) so that the mean is g contiguous adds. The
 * scratch buffers are reallocated at the new size. */
static sdc_status_t enc_downsample(sdc_vae_t *v, const sdc_vae_layer_t *l, sdc_vae_bufs_t *bufs,
                                   int64_t H, int64_t W, sdc_error_t *err)
{
    const sdc_backend_ops_t *op = v->be->ops;
    int64_t cin = l->cin, cout = l->cout, cq = cout / 4, g = 4 * cin / cout;
    int64_t H2 = H / 2, W2 = W / 2, hw2 = H2 * W2, HW = H * W, n = cout * hw2;
    const int64_t h_shape[5] = {2, 2, cq, H2, W2};
    const int64_t h_dst[5] = {2 * cq * hw2, cq * hw2, hw2, W2, 1};
    const int64_t h_src[5] = {W, 1, HW, 2 * W, 2};
    /* Shortcut element (j, r1, r2, c_hi, i, jj): input channel c_hi * g + j,
     * pixel (2i + r1, 2jj + r2); output channel (2 r1 + r2) * cq + c_hi. */
    const int64_t s_shape[6] = {g, 2, 2, cq, H2, W2};
    const int64_t s_dst[6] = {n, 2 * cq * hw2, cq * hw2, hw2, W2, 1};
    const int64_t s_src[6] = {HW, W, 1, g * HW, 2 * W, 2};
    assert(cq * g == cin && H % 2 == 0 && W % 2 == 0);

    sdc_vae_release(v, &bufs->a);
    sdc_vae_release(v, &bufs->b);
    bufs->t = sdc_vae_alloc(v, cq * HW);
    if (!bufs->t) goto err_nomem;
    op->conv2d(v->be, bufs->t, bufs->cur, l->conv_w, l->conv_b, cin, H, W, cq, 3, 3, 1, 1);
    bufs->a = sdc_vae_alloc(v, n);
    if (!bufs->a) goto err_nomem;
    op->copy_strided(v->be, bufs->a, bufs->t, 5, h_shape, h_dst, h_src);
    sdc_vae_release(v, &bufs->t);
    bufs->t = sdc_vae_alloc(v, g * n);
    if (!bufs->t) goto err_nomem;
    op->copy_strided(v->be, bufs->t, bufs->cur, 6, s_shape, s_dst, s_src);
    sdc_vae_release(v, &bufs->cur);
    sdc_vae_add_group_mean(v->be, bufs->a, bufs->t, g, n);
    sdc_vae_release(v, &bufs->t);
    bufs->cur = bufs->a;
    bufs->a = sdc_vae_alloc(v, n);
    bufs->b = sdc_vae_alloc(v, n);
    if (!bufs->a || !bufs->b) goto err_nomem;
    return SDC_OK;

err_nomem:
    return sdc_error_set(err, SDC_ERR_NOMEM,
                         "vae encoder: out of memory downsampling to %lld x %lld x %lld",
                         (long long)cout, (long long)H2, (long long)W2);
}

static sdc_status_t enc_check_args(const sdc_vae_t *v, const float *image, int64_t H, int64_t W,
                                   const float *mean, const float *logvar, sdc_error_t *err)
{
    if (!v || !image || !mean || !logvar)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "vae encode: NULL argument");
    if (!v->enc)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "vae encode: the encoder is not loaded (sdc_vae_load_encoder)");
    int64_t r = v->cfg.spatial_compression_ratio;
    if (H <= 0 || W <= 0 || H > SDC_VAE_MAX_IMAGE_SIDE || W > SDC_VAE_MAX_IMAGE_SIDE ||
        H % r != 0 || W % r != 0)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "vae encode: image %lld x %lld (H x W): each side must be a "
                             "multiple of %lld in %lld .. %d",
                             (long long)H, (long long)W, (long long)r, (long long)r,
                             SDC_VAE_MAX_IMAGE_SIDE);
    return SDC_OK;
}

/* norm_out, silu, conv_out, + the group mean of the mid block's output;
 * returns the 2 * latent_channels x HW result in bufs->cur. */
static void enc_head(sdc_vae_t *v, sdc_vae_bufs_t *bufs, int64_t C, int64_t H, int64_t W)
{
    const sdc_backend_ops_t *op = v->be->ops;
    const sdc_vae_encoder_t *e = v->enc;
    int64_t z2 = 2 * v->cfg.latent_channels, g = C / z2, HW = H * W;
    const int64_t shape[3] = {g, z2, HW};
    const int64_t dst[3] = {z2 * HW, HW, 1};
    const int64_t src[3] = {HW, g * HW, 1};

    op->copy_strided(v->be, bufs->a, bufs->cur, 3, shape, dst, src);
    sdc_vae_group_norm(v, bufs->b, bufs->cur, e->norm_out_w, e->norm_out_b, C, HW);
    op->silu(v->be, bufs->b, bufs->b, C * HW);
    op->conv2d(v->be, bufs->cur, bufs->b, e->conv_out_w, e->conv_out_b, C, H, W, z2, 3, 3, 1,
               1);
    sdc_vae_add_group_mean(v->be, bufs->cur, bufs->a, g, z2 * HW);
}

sdc_status_t sdc_vae_encode(sdc_vae_t *v, const float *image, int64_t H, int64_t W, float *mean,
                            float *logvar, sdc_error_t *err)
{
    sdc_status_t st = enc_check_args(v, image, H, W, mean, logvar, err);
    if (st != SDC_OK) return st;
    const sdc_backend_ops_t *op = v->be->ops;
    const sdc_vae_config_t *c = &v->cfg;
    const sdc_vae_encoder_t *e = v->enc;
    int64_t C = c->block_out_channels[0], cin = c->in_channels, z = c->latent_channels;
    int64_t h = H, w = W;
    sdc_vae_bufs_t bufs = {0};

    bufs.t = sdc_vae_alloc(v, cin * H * W);
    bufs.cur = sdc_vae_alloc(v, C * H * W);
    if (!bufs.t || !bufs.cur) goto err_nomem;
    op->upload(v->be, bufs.t, image, (size_t)(cin * H * W) * sizeof(float));
    op->conv2d(v->be, bufs.cur, bufs.t, e->conv_in_w, e->conv_in_b, cin, H, W, C, 3, 3, 1, 1);
    sdc_vae_release(v, &bufs.t);
    bufs.a = sdc_vae_alloc(v, C * H * W);
    bufs.b = sdc_vae_alloc(v, C * H * W);
    if (!bufs.a || !bufs.b) goto err_nomem;

    for (int i = 0; i < e->n_down; i++) {
        const sdc_vae_layer_t *l = &e->down[i];
        assert(l->cin == C);
        if (l->kind == SDC_VAE_RESNET) {
            sdc_vae_resnet(v, &l->res, &bufs, C, h, w);
            continue;
        }
        st = enc_downsample(v, l, &bufs, h, w, err);
        if (st != SDC_OK) goto free_bufs;
        C = l->cout;
        h /= 2;
        w /= 2;
    }
    assert(C == c->block_out_channels[c->n_blocks - 1]);

    sdc_vae_resnet(v, &e->mid_res[0], &bufs, C, h, w);
    st = sdc_vae_attention(v, &e->mid_attn, &bufs, C, h * w, err);
    if (st != SDC_OK) goto free_bufs;
    sdc_vae_resnet(v, &e->mid_res[1], &bufs, C, h, w);
    enc_head(v, &bufs, C, h, w);

    op->sync(v->be);
    int64_t n = z * h * w;
    op->download(v->be, mean, bufs.cur, (size_t)n * sizeof(float));
    op->download(v->be, logvar, bufs.cur + n, (size_t)n * sizeof(float));
    /* torch.clamp keeps NaN; so do these comparisons. */
    for (int64_t i = 0; i < n; i++)
        logvar[i] = logvar[i] < -30.0f ? -30.0f : (logvar[i] > 20.0f ? 20.0f : logvar[i]);

free_bufs:
    sdc_vae_bufs_release(v, &bufs);
    return st;

err_nomem:
    st = sdc_error_set(err, SDC_ERR_NOMEM, "vae encoder: out of memory encoding a %lld x %lld image",
                       (long long)W, (long long)H);
    goto free_bufs;
}

void sdc_vae_posterior_sample(const float *mean, const float *logvar, int64_t n, uint64_t seed,
                              float *z)
{
    enum { CHUNK = 256 };
    float eps[CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
        int64_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
        sdc_philox_normal_stream(seed, SDC_PHILOX_STREAM_VAE_POSTERIOR, (uint64_t)i0, eps, m);
        for (int64_t j = 0; j < m; j++) {
            /* std = exp(0.5 * logvar); x = mean + std * sample, each op in float. */
            float sd = expf(0.5f * logvar[i0 + j]);
            float scaled = sd * eps[j];
            z[i0 + j] = mean[i0 + j] + scaled;
        }
    }
}
