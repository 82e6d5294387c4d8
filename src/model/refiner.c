/*
 * refiner.c: HunyuanImageRefinerPipeline.__call__ in C for one image: the
 * model directory, image encoding, the conditioning latents, the loop (the
 * shared sdc_denoise_step on the refiner's transformer) and decoding. The
 * semantics, step by step, are in refiner.h.
 */
#include "refiner.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/png.h"
#include "../common/resize.h"
#include "../common/timer.h"
#include "img2img.h"
#include "vae.h"

void sdc_refiner_params_default(sdc_refiner_params_t *p)
{
    memset(p, 0, sizeof(*p));
    p->steps = 4;
    p->distilled_guidance_scale = 3.25;
    p->cond_strength = 0.25;
    p->trim_text = 1;
}

static sdc_status_t sub_path(char *buf, size_t cap, const char *dir, const char *sub,
                             sdc_error_t *err)
{
    if (snprintf(buf, cap, "%s/%s", dir, sub) >= (int)cap)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: path too long", dir);
    return SDC_OK;
}

sdc_status_t sdc_refiner_encode_text(sdc_text_encoder_t *te, const sdc_guider_config_t *g,
                                     const char *prompt, size_t len, const char *negative,
                                     size_t negative_len, int steps, sdc_embeds_t *out,
                                     sdc_text_info_t *info, sdc_error_t *err)
{
    memset(out, 0, sizeof(*out));
    sdc_status_t st = sdc_text_encoder_encode(te, prompt, len, &out->pos, info, err);
    /* The pipeline encodes the negative prompt ("" when none) only when
     * its guider makes an unconditional pass. */
    if (st == SDC_OK && g->kind != SDC_GUIDER_NONE && sdc_guider_needs_uncond(g, steps)) {
        st = sdc_text_encoder_encode(te, negative ? negative : "", negative ? negative_len : 0,
                                     &out->neg, NULL, err);
        out->has_neg = st == SDC_OK;
    }
    if (st != SDC_OK) sdc_embeds_free(out);
    return st;
}

sdc_status_t sdc_refiner_text_open(sdc_backend_t *be, const char *model_dir,
                                   sdc_text_encoder_t **te, sdc_error_t *err)
{
    char path[4096];
    sdc_dit_config_t dc;
    sdc_status_t st;
    *te = NULL;
    if ((st = sub_path(path, sizeof(path), model_dir, "transformer/config.json", err)) ||
        (st = sdc_dit_config_load(&dc, path, err)))
        return st;
    return sdc_text_encoder_open_profile(te, be, model_dir, &sdc_text_profile_refiner,
                                         dc.text_embed_dim, dc.text_embed_2_dim, err);
}

sdc_status_t sdc_refiner_encode_prompt(sdc_backend_t *be, const char *model_dir,
                                       const char *prompt, size_t len, const char *negative,
                                       size_t negative_len, int steps, sdc_embeds_t *out,
                                       sdc_text_info_t *info, sdc_error_t *err)
{
    sdc_guider_config_t g, ocr;
    sdc_text_encoder_t *te = NULL;
    sdc_status_t st;
    memset(out, 0, sizeof(*out));
    if (!be || !model_dir)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "refiner: NULL argument");
    if ((st = sdc_refiner_check_dir(model_dir, err)) ||
        (st = sdc_pipeline_load_guiders(model_dir, &g, &ocr, err)) ||
        (st = sdc_refiner_text_open(be, model_dir, &te, err)))
        return st;
    st = sdc_refiner_encode_text(te, &g, prompt, len, negative, negative_len, steps, out, info,
                                 err);
    sdc_text_encoder_free(te);
    return st;
}

static sdc_status_t refiner_load(sdc_refiner_t *r, const char *dir, sdc_error_t *err)
{
    char path[4096];
    sdc_dit_config_t dc;
    sdc_guider_config_t ocr;
    sdc_status_t st;
    if ((st = sub_path(path, sizeof(path), dir, "transformer/config.json", err)) ||
        (st = sdc_dit_config_load(&dc, path, err)) ||
        (st = sub_path(path, sizeof(path), dir, "transformer", err)) ||
        (st = sdc_dit_load(&r->dit, r->be, path, 0, sdc_dit_total_blocks(&dc), err)) ||
        (st = sub_path(path, sizeof(path), dir, "vae", err)) ||
        (st = sdc_vae_refiner_load(&r->vae, r->be, path, err)) ||
        (st = sub_path(path, sizeof(path), dir, "scheduler/scheduler_config.json", err)) ||
        (st = sdc_sched_config_load(&r->sched, path, err)) ||
        (st = sdc_pipeline_load_guiders(dir, &r->guider, &ocr, err)))
        return st;
    int64_t z = sdc_vae_refiner_config(r->vae)->latent_channels;
    if (dc.out_channels != 2 * z || dc.in_channels != 2 * dc.out_channels)
        return sdc_error_set(err, SDC_ERR_SHAPE,
                             "%s: the refiner transformer takes %lld and gives %lld channels; "
                             "with the VAE's %lld latent channels it must give %lld and take "
                             "%lld (latents + image latents)",
                             dir, (long long)dc.in_channels, (long long)dc.out_channels,
                             (long long)z, (long long)(2 * z), (long long)(4 * z));
    return SDC_OK;
}

sdc_status_t sdc_refiner_check_dir(const char *model_dir, sdc_error_t *err)
{
    struct stat sb;
    if (!model_dir) return sdc_error_set(err, SDC_ERR_INVALID_ARG, "refiner: NULL argument");
    if (stat(model_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return sdc_error_set(err, SDC_ERR_NOT_FOUND, "%s: refiner model directory not found",
                             model_dir);
    return sdc_pipeline_check_index(model_dir, "HunyuanImageRefinerPipeline",
                                    "AutoencoderKLHunyuanImageRefiner", err);
}

sdc_status_t sdc_refiner_open(sdc_refiner_t **out, sdc_backend_t *be, const char *model_dir,
                              sdc_error_t *err)
{
    *out = NULL;
    if (!be) return sdc_error_set(err, SDC_ERR_INVALID_ARG, "refiner: NULL argument");
    sdc_status_t st = sdc_refiner_check_dir(model_dir, err);
    if (st != SDC_OK) return st;
    sdc_refiner_t *r = calloc(1, sizeof(*r));
    if (!r) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    r->be = be;
    r->model_dir = strdup(model_dir);
    st = r->model_dir ? refiner_load(r, model_dir, err)
                      : sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    if (st != SDC_OK) {
        sdc_refiner_free(r);
        return st;
    }
    *out = r;
    return SDC_OK;
}

void sdc_refiner_free(sdc_refiner_t *r)
{
    if (!r) return;
    if (r->dit) sdc_dit_free(r->dit);
    sdc_vae_refiner_free(r->vae);
    free(r->model_dir);
    free(r);
}

sdc_status_t sdc_refiner_check(const sdc_refiner_t *r, int width, int height,
                               const sdc_refiner_params_t *rp, sdc_error_t *err)
{
    const sdc_dit_config_t *dc = sdc_dit_config(r->dit);
    int64_t f = sdc_vae_refiner_config(r->vae)->spatial_compression_ratio;
    int64_t fh = f * dc->patch_size[0], fw = f * dc->patch_size[1];
    if (width <= 0 || height <= 0 || width > SDC_MAX_IMAGE_SIDE || height > SDC_MAX_IMAGE_SIDE)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "refiner: image size %dx%d, each side must be in 1 .. %d", width,
                             height, SDC_MAX_IMAGE_SIDE);
    if (height % fh != 0 || width % fw != 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "refiner: image size %dx%d (WxH) is not a multiple of %lldx%lld (the "
                             "refiner VAE factor %lld times the patch size)",
                             width, height, (long long)fw, (long long)fh, (long long)f);
    if (rp->steps < 1 || rp->steps > 1000)
        return sdc_error_set(err, SDC_ERR_RANGE, "refiner: steps must be in 1..1000, got %d",
                             rp->steps);
    if (!(rp->cond_strength >= 0.0 && rp->cond_strength <= 1.0))
        return sdc_error_set(err, SDC_ERR_RANGE, "refiner: strength %g is outside [0, 1]",
                             rp->cond_strength);
    if (dc->guidance_embeds &&
        !(rp->distilled_guidance_scale > 0 && rp->distilled_guidance_scale < 1000))
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "refiner: guidance scale must be in (0, 1000), got %g",
                             rp->distilled_guidance_scale);
    return SDC_OK;
}

sdc_status_t sdc_refiner_encode_image(sdc_refiner_t *r, const uint8_t *rgb, int width,
                                      int height, uint64_t seed, float *image_latents,
                                      sdc_error_t *err)
{
    const sdc_vae_refiner_config_t *vc = sdc_vae_refiner_config(r->vae);
    int64_t f = vc->spatial_compression_ratio, W = width, H = height;
    int64_t n = vc->latent_channels * (H / f) * (W / f);
    float *chw = NULL, *logvar = NULL;
    sdc_status_t st = SDC_OK;
    if (vc->in_channels != 3)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "refiner: the VAE takes %lld input channels, not RGB",
                             (long long)vc->in_channels);
    chw = malloc((size_t)(3 * H * W) * sizeof(float));
    logvar = malloc((size_t)n * sizeof(float));
    if (!chw || !logvar) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory encoding a %dx%d image", width,
                           height);
        goto out;
    }
    sdc_img2img_preprocess(rgb, width, height, chw);
    /* The mean goes into the first frame's planes, the sample over it. */
    st = sdc_vae_refiner_encode(r->vae, chw, H, W, image_latents, logvar, err);
    if (st != SDC_OK) goto out;
    sdc_vae_posterior_sample(image_latents, logvar, n, seed, image_latents);
    /* * scaling_factor (a float32 tensor times a Python float, i.e. times
     * its float32 rounding), then the second frame = the first. */
    float sf = (float)vc->scaling_factor;
    for (int64_t i = 0; i < n; i++) image_latents[i] *= sf;
    memcpy(image_latents + n, image_latents, (size_t)n * sizeof(float));
out:
    free(chw);
    free(logvar);
    return st;
}

sdc_status_t sdc_refiner_denoise_init(sdc_denoise_t *d, const sdc_refiner_t *r,
                                      const sdc_refiner_params_t *rp, const float *image_latents,
                                      int64_t h, int64_t w, const float *noise, sdc_error_t *err)
{
    const sdc_dit_config_t *dc = sdc_dit_config(r->dit);
    sdc_gen_params_t gp;
    sdc_gen_params_default(&gp);
    gp.steps = rp->steps;
    gp.seed = rp->seed;
    gp.distilled_guidance_scale = rp->distilled_guidance_scale;
    const sdc_guider_config_t *g = r->guider.kind == SDC_GUIDER_NONE ? NULL : &r->guider;
    sdc_status_t st = sdc_denoise_setup(d, dc, &r->sched, g, h, w, dc->out_channels, &gp, noise, err);
    if (st != SDC_OK) return st;
    /* cond = strength * noise + (1 - strength) * image_latents, each
     * product in float32 (Python float times a float32 tensor). */
    int64_t n = d->channels * h * w;
    float *cond = d->latent + n;
    float s = (float)rp->cond_strength, keep = (float)(1.0 - rp->cond_strength);
    sdc_philox_normal_stream(rp->seed, SDC_PHILOX_STREAM_REFINER_COND, 0, cond, n);
    for (int64_t i = 0; i < n; i++) {
        float a = s * cond[i];
        float b = keep * image_latents[i];
        cond[i] = a + b;
    }
    return SDC_OK;
}

sdc_status_t sdc_refiner_decode(sdc_refiner_t *r, const float *latent, int64_t h, int64_t w,
                                uint8_t **rgb_out, float **decoded_out, sdc_error_t *err)
{
    const sdc_vae_refiner_config_t *vc = sdc_vae_refiner_config(r->vae);
    int64_t z = vc->latent_channels, f = vc->spatial_compression_ratio;
    int64_t n = z * h * w, H = h * f, W = w * f, C = vc->out_channels;
    sdc_status_t st = SDC_OK;
    if (C != 3)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "refiner: the VAE outputs %lld channels, not RGB", (long long)C);
    float *zz = malloc((size_t)n * sizeof(float));
    float *img = malloc((size_t)(3 * H * W) * sizeof(float));
    uint8_t *rgb = malloc((size_t)(3 * H * W));
    if (!zz || !img || !rgb) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory decoding a %lldx%lld image",
                           (long long)W, (long long)H);
        goto out;
    }
    /* latents / scaling_factor, then _restore_image_tokens_order: the
     * second frame, channels [z, 2z). */
    float sf = (float)vc->scaling_factor;
    for (int64_t i = 0; i < n; i++) zz[i] = latent[n + i] / sf;
    st = sdc_vae_refiner_decode(r->vae, zz, h, w, img, err);
    if (st != SDC_OK) goto out;
    sdc_image_to_rgb8(img, (int)W, (int)H, rgb);
    *rgb_out = rgb;
    rgb = NULL;
    if (decoded_out) {
        *decoded_out = img;
        img = NULL;
    }
out:
    free(zz);
    free(img);
    free(rgb);
    return st;
}

sdc_status_t sdc_refiner_run_latents(sdc_refiner_t *r, const sdc_refiner_params_t *rp,
                                     const float *image_latents, int64_t h, int64_t w,
                                     const sdc_text_cond_t *pos, const sdc_text_cond_t *neg,
                                     sdc_progress_fn progress, void *progress_ctx,
                                     uint8_t **rgb_out, float **latent_out,
                                     sdc_gen_timing_t *timing, sdc_error_t *err)
{
    int64_t f = sdc_vae_refiner_config(r->vae)->spatial_compression_ratio;
    sdc_gen_timing_t t;
    sdc_denoise_t d;
    float *pc = NULL, *pu = NULL;
    double t0 = sdc_now();
    memset(&t, 0, sizeof(t));
    if (!r || !rp || !image_latents || !pos || !rgb_out)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "refiner: NULL argument");
    if (h < 1 || w < 1 || h > SDC_MAX_IMAGE_SIDE / f || w > SDC_MAX_IMAGE_SIDE / f)
        return sdc_error_set(err, SDC_ERR_RANGE, "refiner: latent %lldx%lld is out of range",
                             (long long)w, (long long)h);
    sdc_status_t st = sdc_refiner_check(r, (int)(w * f), (int)(h * f), rp, err);
    if (st != SDC_OK) return st;
    st = sdc_refiner_denoise_init(&d, r, rp, image_latents, h, w, NULL, err);
    if (st != SDC_OK) return st;
    int64_t n = d.channels * h * w;
    pc = malloc((size_t)n * sizeof(float));
    pu = malloc((size_t)n * sizeof(float));
    if (!pc || !pu) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        goto out;
    }
    while (!sdc_denoise_done(&d)) {
        st = sdc_denoise_step(r->dit, &d, pos, neg, rp->trim_text, pc, pu, &t, err);
        if (st != SDC_OK) goto out;
        if (progress) progress(progress_ctx, d.step, d.n_steps, sdc_now() - t0);
    }
    double v0 = sdc_now();
    st = sdc_refiner_decode(r, d.latent, h, w, rgb_out, NULL, err);
    t.vae_s += sdc_now() - v0;
    if (st == SDC_OK && latent_out) {
        *latent_out = d.latent;
        d.latent = NULL;
    }
out:
    t.total_s = sdc_now() - t0;
    if (timing) *timing = t;
    free(pc);
    free(pu);
    sdc_denoise_free(&d);
    return st;
}

void sdc_refiner_output_size(const sdc_refiner_params_t *rp, int image_width, int image_height,
                             int *width, int *height)
{
    *width = rp->width ? rp->width : image_width;
    *height = rp->height ? rp->height : image_height;
}

sdc_status_t sdc_refiner_prepare_image(const sdc_refiner_t *r, const sdc_refiner_params_t *rp,
                                       const uint8_t *rgb, int image_width, int image_height,
                                       uint8_t **out, int *width, int *height, sdc_error_t *err)
{
    *out = NULL;
    if (!r || !rp || !rgb)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "refiner: NULL argument");
    if (image_width < 1 || image_height < 1 || image_width > SDC_MAX_IMAGE_SIDE ||
        image_height > SDC_MAX_IMAGE_SIDE)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "refiner: input image %dx%d, each side must be in 1 .. %d",
                             image_width, image_height, SDC_MAX_IMAGE_SIDE);
    sdc_refiner_output_size(rp, image_width, image_height, width, height);
    sdc_status_t st = sdc_refiner_check(r, *width, *height, rp, err);
    if (st != SDC_OK) return st;
    return sdc_resize_lanczos_rgb8(rgb, image_width, image_height, *width, *height, out, err);
}

sdc_status_t sdc_refiner_run(sdc_refiner_t *r, const sdc_refiner_params_t *rp, const uint8_t *rgb,
                             int image_width, int image_height, const sdc_text_cond_t *pos,
                             const sdc_text_cond_t *neg, sdc_progress_fn progress,
                             void *progress_ctx, uint8_t **rgb_out, float **latent_out,
                             sdc_gen_timing_t *timing, sdc_error_t *err)
{
    uint8_t *img = NULL;
    int width, height;
    if (!r || !rp || !rgb || !pos || !rgb_out)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "refiner: NULL argument");
    double v0 = sdc_now();
    sdc_status_t st =
        sdc_refiner_prepare_image(r, rp, rgb, image_width, image_height, &img, &width, &height, err);
    if (st != SDC_OK) return st;
    int64_t f = sdc_vae_refiner_config(r->vae)->spatial_compression_ratio;
    int64_t h = height / f, w = width / f;
    int64_t n = 2 * sdc_vae_refiner_config(r->vae)->latent_channels * h * w;
    float *image_latents = malloc((size_t)n * sizeof(float));
    if (!image_latents) {
        free(img);
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    }
    st = sdc_refiner_encode_image(r, img, width, height, rp->seed, image_latents, err);
    free(img);
    double enc_s = sdc_now() - v0;
    if (st == SDC_OK)
        st = sdc_refiner_run_latents(r, rp, image_latents, h, w, pos, neg, progress, progress_ctx,
                                     rgb_out, latent_out, timing, err);
    if (timing) {
        timing->vae_s += enc_s;
        timing->total_s += enc_s;
    }
    free(image_latents);
    return st;
}
