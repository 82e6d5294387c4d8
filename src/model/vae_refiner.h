/*
 * vae_refiner.h: AutoencoderKLHunyuanImageRefiner (diffusers), the
 * HunyuanImage-2.1 refiner's VAE, for single images: encoder (image ->
 * posterior mean and log-variance) and decoder (latent -> image).
 *
 * diffusers' model is a causal video VAE over (frames, height, width); an
 * image is one frame, and with one frame every causal 3-D convolution is
 * exactly a 2-D convolution with replicate padding whose kernel is the sum
 * of the three temporal slices (docs/ARCHITECTURE.md, "Refiner"), and the
 * "temporal" down/upsamples only change channel bookkeeping. vae_refiner.c
 * computes that 2-D form. The posterior sample is the base VAE's
 * (sdc_vae_posterior_sample in vae.h, Philox stream 1).
 */
#ifndef SDC_VAE_REFINER_H
#define SDC_VAE_REFINER_H

#include <stdint.h>

#include "../backend/backend.h"
#include "../common/config.h"
#include "../common/status.h"

typedef struct {
    int64_t in_channels, out_channels, latent_channels;
    int64_t block_out_channels[8];
    int n_blocks;
    int64_t layers_per_block;
    int64_t spatial_compression_ratio, temporal_compression_ratio;
    int downsample_match_channel, upsample_match_channel;
    double scaling_factor;
} sdc_vae_refiner_config_t;

/* Reads vae/config.json (a path): _class_name must be
 * AutoencoderKLHunyuanImageRefiner; absent keys take the constructor's
 * defaults. Refuses what diffusers could not build or run: ratios that are
 * not powers of two, temporal > spatial, more downsampling levels than
 * blocks, channel counts its reshuffles cannot divide. */
sdc_status_t sdc_vae_refiner_config_load(sdc_vae_refiner_config_t *c, const char *config_json,
                                         sdc_error_t *err);
sdc_status_t sdc_vae_refiner_config_from_json(sdc_vae_refiner_config_t *c, const sdc_json_t *doc,
                                              sdc_error_t *err);

typedef struct sdc_vae_refiner sdc_vae_refiner_t;

/* Loads vae_dir/config.json and the encoder.* and decoder.* tensors. */
sdc_status_t sdc_vae_refiner_load(sdc_vae_refiner_t **out, sdc_backend_t *be,
                                  const char *vae_dir, sdc_error_t *err);
void sdc_vae_refiner_free(sdc_vae_refiner_t *v);
const sdc_vae_refiner_config_t *sdc_vae_refiner_config(const sdc_vae_refiner_t *v);

/* The largest image side the refiner VAE accepts (pixels). */
#define SDC_VAE_REFINER_MAX_SIDE 16384

/* Encoder + DiagonalGaussianDistribution of one frame.
 * image: host, in_channels x H x W in [-1, 1] (VaeImageProcessor.preprocess);
 * H, W multiples of spatial_compression_ratio r. mean, logvar: host,
 * latent_channels x (H/r) x (W/r) each; logvar clamped to [-30, 20].
 * No tiling: peak backend memory is about four activations of the largest
 * level (block_out_channels[0] x H x W at full resolution). */
sdc_status_t sdc_vae_refiner_encode(sdc_vae_refiner_t *v, const float *image, int64_t H,
                                    int64_t W, float *mean, float *logvar, sdc_error_t *err);

/* Decoder of one frame. latent: host, latent_channels x h x w, already
 * divided by scaling_factor; image: host, out_channels x (h*r) x (w*r),
 * values as the decoder outputs them. Memory as for encoding. */
sdc_status_t sdc_vae_refiner_decode(sdc_vae_refiner_t *v, const float *latent, int64_t h,
                                    int64_t w, float *image, sdc_error_t *err);

#endif
