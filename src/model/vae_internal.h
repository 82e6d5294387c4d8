/*
 * vae_internal.h: what the VAE's two halves share (vae.c, the decoder and
 * the model object; vae_encoder.c, the encoder): weight structs, the
 * activation buffers, and the layers both use (resnet, single-head
 * attention, GroupNorm). Not part of the public API (see vae.h).
 */
#ifndef SDC_VAE_INTERNAL_H
#define SDC_VAE_INTERNAL_H

#include <stdint.h>

#include "vae.h"
#include "weights.h"

#define SDC_VAE_GROUPS 32
#define SDC_VAE_EPS 1e-6f
/* Latent and image sides are bounded so that every buffer size fits int64
 * without overflow checks at each product. */
#define SDC_VAE_MAX_IMAGE_SIDE (1 << 17)

typedef enum { SDC_VAE_RESNET = 0, SDC_VAE_UPSAMPLE, SDC_VAE_DOWNSAMPLE } sdc_vae_layer_kind_t;

typedef struct {
    float *norm1_w, *norm1_b, *conv1_w, *conv1_b;
    float *norm2_w, *norm2_b, *conv2_w, *conv2_b;
} sdc_vae_resnet_t;

typedef struct {
    float *norm_w, *norm_b;
    float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b;
    float *proj_w, *proj_b;
} sdc_vae_attn_t;

typedef struct {
    sdc_vae_layer_kind_t kind;
    int64_t cin, cout; /* a resnet has cin == cout */
    sdc_vae_resnet_t res;
    /* upsample conv: 4 * cout x cin x 3 x 3; downsample conv: cout / 4 x cin x 3 x 3 */
    float *conv_w, *conv_b;
} sdc_vae_layer_t;

/* The encoder's weights, loaded on request (image-to-image only). */
typedef struct {
    float *conv_in_w, *conv_in_b;
    sdc_vae_layer_t *down;
    int n_down;
    sdc_vae_resnet_t mid_res[2];
    sdc_vae_attn_t mid_attn;
    float *norm_out_w, *norm_out_b, *conv_out_w, *conv_out_b;
} sdc_vae_encoder_t;

struct sdc_vae {
    sdc_backend_t *be;
    sdc_vae_config_t cfg;
    sdc_weights_t w;
    int64_t ch0;        /* decoder channels after conv_in */
    int64_t ch_last;    /* channels at norm_out */
    float *conv_in_w, *conv_in_b;
    sdc_vae_resnet_t mid_res[2];
    sdc_vae_attn_t mid_attn;
    sdc_vae_layer_t *up;
    int n_up;
    float *norm_out_w, *norm_out_b, *conv_out_w, *conv_out_b;
    sdc_vae_encoder_t *enc; /* NULL until sdc_vae_load_encoder */
};

/* The activations alive during a forward: cur is the layer input/output, a
 * and b are scratch of cur's size, t a temporary of the running layer. */
typedef struct {
    float *cur, *a, *b, *t;
} sdc_vae_bufs_t;

float *sdc_vae_alloc(sdc_vae_t *v, int64_t n);
/* Frees *p (if set) and clears it. */
void sdc_vae_release(sdc_vae_t *v, float **p);
void sdc_vae_bufs_release(sdc_vae_t *v, sdc_vae_bufs_t *bufs);
/* x: C x HW. Torch's GroupNorm(32, C, eps=1e-6). */
void sdc_vae_group_norm(sdc_vae_t *v, float *y, const float *x, const float *gamma,
                        const float *beta, int64_t C, int64_t HW);
/* HunyuanImageResnetBlock with in == out channels, in place on bufs->cur
 * (a and b must hold C * H * W floats). */
void sdc_vae_resnet(sdc_vae_t *v, const sdc_vae_resnet_t *r, sdc_vae_bufs_t *bufs, int64_t C,
                    int64_t H, int64_t W);
/* HunyuanImageAttentionBlock, in place on bufs->cur. */
sdc_status_t sdc_vae_attention(sdc_vae_t *v, const sdc_vae_attn_t *at, sdc_vae_bufs_t *bufs,
                               int64_t C, int64_t HW, sdc_error_t *err);

/* Loading, names prefixed by prefix ("decoder.mid_block.resnets.0"). */
sdc_status_t sdc_vae_load_resnet(sdc_weights_t *w, sdc_vae_resnet_t *r, int64_t c,
                                 const char *prefix, sdc_error_t *err);
sdc_status_t sdc_vae_load_attn(sdc_weights_t *w, sdc_vae_attn_t *a, int64_t c,
                               const char *prefix, sdc_error_t *err);
/* A 3x3 convolution cout x cin x 3 x 3 with bias. */
sdc_status_t sdc_vae_load_conv(sdc_weights_t *w, float **wt, float **bias, int64_t cout,
                               int64_t cin, const char *prefix, sdc_error_t *err);
sdc_status_t sdc_vae_load_norm(sdc_weights_t *w, float **gamma, float **beta, int64_t c,
                               const char *prefix, sdc_error_t *err);

void sdc_vae_encoder_free(sdc_vae_t *v);

/* Layers whose math both VAEs share (vae_refiner.c too), on backend buffers. */
/* repeat_interleave(x, rep, dim=0) of x: C x HW into y: (C * rep) x HW. */
void sdc_vae_repeat_interleave(sdc_backend_t *be, float *y, const float *x, int64_t C,
                               int64_t rep, int64_t HW);
/* y[0 .. n) += (sum over j < g of p[j * n + i]) / g: the "h +
 * shortcut.mean()" of the group-averaged shortcuts. p is summed in place.
 * The sum in channel order times 1 / g is torch's mean bit for bit when g
 * is a power of two, within one rounding otherwise. */
void sdc_vae_add_group_mean(sdc_backend_t *be, float *y, float *p, int64_t g, int64_t n);

#endif
