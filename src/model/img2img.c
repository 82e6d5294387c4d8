/*
 * img2img.c: image-to-image on top of the text-to-image pipeline: input
 * preprocessing, VAE encoding and posterior sampling, the strength-truncated
 * schedule, the noised starting latent, and the whole-generation loop. The
 * semantics and their reference are in img2img.h; the denoising steps
 * themselves are pipeline.c's.
 */
#include "img2img.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/timer.h"
#include "vae.h"

void sdc_img2img_preprocess(const uint8_t *rgb, int w, int h, float *chw)
{
    const size_t plane = (size_t)w * (size_t)h;
    for (size_t i = 0; i < plane; i++) {
        for (int c = 0; c < 3; c++) {
            /* numpy: uint8 -> float32, / 255.0 in float32; torch: 2.0 * x - 1.0. */
            float x = (float)rgb[i * 3 + (size_t)c] / 255.0f;
            chw[(size_t)c * plane + i] = 2.0f * x - 1.0f;
        }
    }
}

sdc_status_t sdc_img2img_start_step(int steps, double strength, int *t_start, sdc_error_t *err)
{
    if (!(strength >= 0.0 && strength <= 1.0))
        return sdc_error_set(err, SDC_ERR_RANGE, "strength %g is outside [0, 1]", strength);
    if (steps < 1)
        return sdc_error_set(err, SDC_ERR_RANGE, "steps must be positive, got %d", steps);
    /* min(N * strength, N) and int(max(N - init, 0)) in Python floats. */
    double init = fmin((double)steps * strength, (double)steps);
    *t_start = (int)fmax((double)steps - init, 0.0);
    return SDC_OK;
}

sdc_status_t sdc_img2img_check(const sdc_gen_params_t *gp, const sdc_init_image_t *init,
                               sdc_error_t *err)
{
    int t_start;
    if (!init || !init->rgb)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "image-to-image: no input image");
    if (init->width != gp->width || init->height != gp->height)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "the input image is %dx%d but the output is %dx%d (WxH): resize or "
                             "crop it to the output size first (sdc does not resample images)",
                             init->width, init->height, gp->width, gp->height);
    return sdc_img2img_start_step(gp->steps, init->strength, &t_start, err);
}

sdc_status_t sdc_img2img_encode(sdc_pipeline_t *p, const sdc_gen_params_t *gp,
                                const sdc_init_image_t *init, float *image_latents,
                                sdc_error_t *err)
{
    const sdc_vae_config_t *vc = sdc_vae_config(p->vae);
    int64_t r = vc->spatial_compression_ratio, W = init->width, H = init->height;
    int64_t n = vc->latent_channels * (H / r) * (W / r);
    float *chw = NULL, *mean = NULL, *logvar = NULL;
    sdc_status_t st = sdc_img2img_check(gp, init, err);
    if (st != SDC_OK) return st;
    if (vc->in_channels != 3)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "image-to-image: the VAE takes %lld input channels, not RGB",
                             (long long)vc->in_channels);
    st = sdc_vae_load_encoder(p->vae, err);
    if (st != SDC_OK) return st;

    chw = malloc((size_t)(3 * H * W) * sizeof(float));
    mean = malloc((size_t)n * sizeof(float));
    logvar = malloc((size_t)n * sizeof(float));
    if (!chw || !mean || !logvar) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory encoding a %lldx%lld image",
                           (long long)W, (long long)H);
        goto out;
    }
    sdc_img2img_preprocess(init->rgb, init->width, init->height, chw);
    st = sdc_vae_encode(p->vae, chw, H, W, mean, logvar, err);
    if (st != SDC_OK) goto out;
    sdc_vae_posterior_sample(mean, logvar, n, gp->seed, image_latents);
    /* image_latents * vae.config.scaling_factor: a float32 tensor times a
     * Python float, i.e. times its float32 rounding. */
    float sf = (float)vc->scaling_factor;
    for (int64_t i = 0; i < n; i++) image_latents[i] *= sf;
out:
    free(chw);
    free(mean);
    free(logvar);
    return st;
}

sdc_status_t sdc_denoise_init_img2img(sdc_denoise_t *d, const sdc_pipeline_t *p,
                                      const sdc_gen_params_t *gp, int has_glyph,
                                      const float *image_latents, double strength,
                                      const float *noise, sdc_error_t *err)
{
    int t_start;
    sdc_status_t st = sdc_img2img_start_step(gp->steps, strength, &t_start, err);
    if (st != SDC_OK) return st;
    st = sdc_denoise_init(d, p, gp, has_glyph, noise, err);
    if (st != SDC_OK) return st;

    /* The tail of the full schedule: its values are those of the full
     * schedule (a shift_terminal stretch depends on all of it), and the
     * steps left are numbered from 0 as the guider and meanflow see them. */
    sdc_schedule_t *s = &d->schedule;
    int left = s->n_steps - t_start;
    memmove(s->sigmas, s->sigmas + t_start, (size_t)(left + 1) * sizeof(float));
    memmove(s->timesteps, s->timesteps + t_start, (size_t)left * sizeof(float));
    s->n_steps = left;
    d->n_steps = left;

    /* scale_noise: sigma * noise + (1.0 - sigma) * sample, in float32. */
    float sigma = s->sigmas[0], keep = 1.0f - sigma;
    int64_t n = d->channels * d->h * d->w;
    for (int64_t i = 0; i < n; i++) {
        float a = sigma * d->latent[i];
        float b = keep * image_latents[i];
        d->latent[i] = a + b;
    }
    return SDC_OK;
}

sdc_status_t sdc_pipeline_generate_img2img(sdc_pipeline_t *p, const sdc_gen_params_t *gp,
                                           const sdc_init_image_t *init,
                                           const sdc_text_cond_t *pos, const sdc_text_cond_t *neg,
                                           const float *noise, sdc_progress_fn progress,
                                           void *progress_ctx, uint8_t **rgb_out,
                                           float **latent_out, sdc_gen_timing_t *timing,
                                           sdc_error_t *err)
{
    const sdc_dit_config_t *dc = sdc_dit_config(p->dit);
    const sdc_vae_config_t *vc = sdc_vae_config(p->vae);
    sdc_gen_timing_t t;
    sdc_denoise_t d;
    int have_d = 0;
    float *image_latents = NULL, *pc = NULL, *pu = NULL;
    double t_begin = sdc_now();
    memset(&t, 0, sizeof(t));

    sdc_status_t st = sdc_pipeline_check_params(p, gp, err);
    if (st == SDC_OK) st = sdc_img2img_check(gp, init, err);
    if (st != SDC_OK) return st;
    if (vc->latent_channels != dc->in_channels)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "image-to-image: the VAE has %lld latent channels, the transformer "
                             "takes %lld",
                             (long long)vc->latent_channels, (long long)dc->in_channels);
    int64_t r = vc->spatial_compression_ratio;
    int64_t n = dc->in_channels * (gp->height / r) * (gp->width / r);
    image_latents = malloc((size_t)n * sizeof(float));
    pc = malloc((size_t)n * sizeof(float));
    pu = malloc((size_t)n * sizeof(float));
    if (!image_latents || !pc || !pu) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        goto out;
    }

    double v0 = sdc_now();
    st = sdc_img2img_encode(p, gp, init, image_latents, err);
    t.vae_s += sdc_now() - v0;
    if (st != SDC_OK) goto out;
    int glyph = sdc_text_cond_has_glyph(pos, dc->text_embed_2_dim);
    st = sdc_denoise_init_img2img(&d, p, gp, glyph, image_latents, init->strength, noise, err);
    if (st != SDC_OK) goto out;
    have_d = 1;

    while (!sdc_denoise_done(&d)) {
        st = sdc_pipeline_step(p, &d, pos, neg, gp->trim_text, pc, pu, &t, err);
        if (st != SDC_OK) goto out;
        if (progress) progress(progress_ctx, d.step, d.n_steps, sdc_now() - t_begin);
    }
    v0 = sdc_now();
    st = sdc_pipeline_decode(p, d.latent, d.h, d.w, rgb_out, NULL, err);
    t.vae_s += sdc_now() - v0;
    if (st != SDC_OK) goto out;
    if (latent_out) {
        *latent_out = d.latent;
        d.latent = NULL;
    }
out:
    t.total_s = sdc_now() - t_begin;
    if (timing) *timing = t;
    free(image_latents);
    free(pc);
    free(pu);
    if (have_d) sdc_denoise_free(&d);
    return st;
}
