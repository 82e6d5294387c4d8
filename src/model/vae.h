/*
 * vae.h: AutoencoderKLHunyuanImage (diffusers) decoder: latent -> image.
 * The encoder half arrives with image-to-image.
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

/* Loads vae_dir/config.json and only the decoder.* tensors. */
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

#endif
