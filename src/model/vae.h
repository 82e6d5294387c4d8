/*
 * vae.h: AutoencoderKLHunyuanImage (diffusers): the decoder (latent ->
 * image, vae.c) and, loaded only on request, the encoder (image ->
 * posterior mean and log-variance, vae_encoder.c) image-to-image needs.
 */
#ifndef SDC_VAE_H
#define SDC_VAE_H

#include <stdint.h>

#include "../backend/backend.h"
#include "../common/config.h"
#include "../common/status.h"

typedef struct {
    int64_t in_channels, out_channels, latent_channels;
    int64_t block_out_channels[8];
    int n_blocks;
    int64_t layers_per_block;
    int64_t spatial_compression_ratio;
    int64_t sample_size;
    double scaling_factor;
    int upsample_match_channel, downsample_match_channel;
} sdc_vae_config_t;

/* Reads vae/config.json (a path): _class_name must be AutoencoderKLHunyuanImage;
 * the constructor arguments without a default (and scaling_factor, which the
 * pipeline needs) must be present; channel counts must satisfy diffusers'
 * divisibility rules and GroupNorm's 32 groups; spatial_compression_ratio
 * must be the power of two the decoder's upsampling gives. */
sdc_status_t sdc_vae_config_load(sdc_vae_config_t *c, const char *config_json, sdc_error_t *err);
sdc_status_t sdc_vae_config_from_json(sdc_vae_config_t *c, const sdc_json_t *doc,
                                      sdc_error_t *err);

typedef struct sdc_vae sdc_vae_t;

/* Loads vae_dir/config.json and only the decoder.* tensors (the encoder
 * follows with sdc_vae_load_encoder). */
sdc_status_t sdc_vae_load(sdc_vae_t **out, sdc_backend_t *be, const char *vae_dir,
                          sdc_error_t *err);
void sdc_vae_free(sdc_vae_t *v);
const sdc_vae_config_t *sdc_vae_config(const sdc_vae_t *v);

/* latent: host, latent_channels x h x w, already divided by scaling_factor
 * (the pipeline does that); image: host, out_channels x (h*r) x (w*r),
 * r = spatial_compression_ratio, values as the decoder outputs them.
 * Peak backend memory is about three activations of the largest level
 * (channels x pixels) plus the backend's own convolution scratch. */
sdc_status_t sdc_vae_decode(sdc_vae_t *v, const float *latent, int64_t h, int64_t w,
                            float *image, sdc_error_t *err);

/* Loads the encoder.* tensors of the same directory; a no-op when already
 * loaded. Checks the encoder's layer plan (HunyuanImageEncoder2D: resnets
 * that keep their channel count, downsamples whose output channels are a
 * multiple of 4 dividing 4 x input channels). */
sdc_status_t sdc_vae_load_encoder(sdc_vae_t *v, sdc_error_t *err);
int sdc_vae_has_encoder(const sdc_vae_t *v);

/* HunyuanImageEncoder2D + DiagonalGaussianDistribution.
 * image: host, in_channels x H x W, values in [-1, 1] as
 * VaeImageProcessor.preprocess makes them; H and W multiples of
 * spatial_compression_ratio r. mean, logvar: host, latent_channels x (H/r)
 * x (W/r) each; logvar is clamped to [-30, 20] as diffusers does (NaN stays
 * NaN). No tiling: peak backend memory is about three activations of the
 * first level (block_out_channels[0] x H x W) plus one of the input's. */
sdc_status_t sdc_vae_encode(sdc_vae_t *v, const float *image, int64_t H, int64_t W, float *mean,
                            float *logvar, sdc_error_t *err);

/* The posterior sample of DiagonalGaussianDistribution.sample():
 *   z = mean + exp(0.5 * logvar) * eps   (float32, in this order)
 * with eps element i = element i of Philox stream
 * SDC_PHILOX_STREAM_VAE_POSTERIOR (1) of seed (common/philox.h). The
 * initial latent noise is stream 0 of the same seed, so the two never share
 * a Philox block whatever their sizes. n elements, z may equal mean. */
void sdc_vae_posterior_sample(const float *mean, const float *logvar, int64_t n, uint64_t seed,
                              float *z);

#endif
