/*
 * pipeline.c: HunyuanImagePipeline.__call__ in C, for one prompt and one
 * image: model directory checks, the per-job denoising state machine, and the
 * whole-generation loop sdc-generate uses. Text encoding lives elsewhere; this
 * file starts from text embeddings.
 */
#include "pipeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/config.h"
#include "../common/philox.h"
#include "../common/png.h"
#include "../common/timer.h"

void sdc_gen_params_default(sdc_gen_params_t *p)
{
    memset(p, 0, sizeof(*p));
    p->width = 0; /* 0: default_sample_size * vae factor, resolved in check_params */
    p->height = 0;
    p->steps = 50;
    p->seed = 0;
    p->distilled_guidance_scale = 3.25;
    p->trim_text = 1;
}

static int dir_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static char *path_join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    if (!s) return NULL;
    memcpy(s, a, la);
    s[la] = '/';
    memcpy(s + la + 1, b, lb + 1);
    return s;
}

sdc_status_t sdc_pipeline_check_index(const char *model_dir, const char *pipeline_class,
                                      const char *vae_class, sdc_error_t *err)
{
    const struct {
        const char *key, *cls;
    } expected[] = {
        {"transformer", "HunyuanImageTransformer2DModel"},
        {"vae", vae_class},
        {"scheduler", "FlowMatchEulerDiscreteScheduler"},
    };
    sdc_json_t doc;
    char *path = path_join(model_dir, "model_index.json");
    if (!path) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    sdc_status_t st = sdc_json_load(&doc, path, err);
    free(path);
    if (st != SDC_OK) return st;
    const char *cls = NULL;
    st = sdc_json_get_string(&doc, "_class_name", NULL, &cls, err);
    if (st != SDC_OK) goto out;
    if (!cls || strcmp(cls, pipeline_class) != 0) {
        st = sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                           "%s: model_index.json: _class_name is '%s', expected '%s' here",
                           model_dir, cls ? cls : "(missing)", pipeline_class);
        goto out;
    }
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
        const char *c = NULL;
        st = sdc_json_get_component_class(&doc, expected[i].key, &c, err);
        if (st != SDC_OK) goto out;
        if (!c || strcmp(c, expected[i].cls) != 0) {
            st = sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                               "%s: model_index.json: component '%s' is '%s', expected '%s'",
                               model_dir, expected[i].key, c ? c : "(missing)", expected[i].cls);
            goto out;
        }
    }
out:
    sdc_json_free(&doc);
    return st;
}

static sdc_status_t load_guider(const char *model_dir, const char *name, sdc_guider_config_t *g,
                                sdc_error_t *err)
{
    char *dir = path_join(model_dir, name);
    if (!dir) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    sdc_status_t st = SDC_OK;
    if (dir_exists(dir)) {
        st = sdc_guider_config_load(g, dir, err);
    } else {
        memset(g, 0, sizeof(*g));
        g->kind = SDC_GUIDER_NONE;
    }
    free(dir);
    return st;
}

sdc_status_t sdc_pipeline_load_guiders(const char *model_dir, sdc_guider_config_t *guider,
                                       sdc_guider_config_t *ocr_guider, sdc_error_t *err)
{
    sdc_status_t st = load_guider(model_dir, "guider", guider, err);
    if (st == SDC_OK)
        st = load_guider(model_dir, "ocr_guider", ocr_guider, err);
    return st;
}

sdc_status_t sdc_pipeline_open(sdc_pipeline_t **out, sdc_backend_t *be, const char *model_dir,
                               sdc_error_t *err)
{
    sdc_status_t st;
    char *sub = NULL;
    if (!dir_exists(model_dir))
        return sdc_error_set(err, SDC_ERR_NOT_FOUND, "%s: model directory not found", model_dir);
    st = sdc_pipeline_check_index(model_dir, "HunyuanImagePipeline", "AutoencoderKLHunyuanImage",
                                  err);
    if (st != SDC_OK) return st;

    sdc_pipeline_t *p = calloc(1, sizeof(*p));
    if (!p) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    p->be = be;
    p->model_dir = strdup(model_dir);
    if (!p->model_dir) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        goto err_free;
    }

    sub = path_join(model_dir, "transformer");
    if (!sub) goto err_nomem;
    sdc_dit_config_t dc;
    char *cfg = path_join(sub, "config.json");
    if (!cfg) goto err_nomem;
    st = sdc_dit_config_load(&dc, cfg, err);
    free(cfg);
    if (st != SDC_OK) goto err_free;
    st = sdc_dit_load(&p->dit, be, sub, 0, sdc_dit_total_blocks(&dc), err);
    free(sub);
    sub = NULL;
    if (st != SDC_OK) goto err_free;

    sub = path_join(model_dir, "vae");
    if (!sub) goto err_nomem;
    st = sdc_vae_load(&p->vae, be, sub, err);
    free(sub);
    sub = NULL;
    if (st != SDC_OK) goto err_free;
    if (sdc_vae_config(p->vae)->latent_channels != dc.in_channels ||
        dc.in_channels != dc.out_channels) {
        st = sdc_error_set(err, SDC_ERR_SHAPE,
                           "%s: vae latent_channels %lld does not match transformer in/out "
                           "channels %lld/%lld",
                           model_dir, (long long)sdc_vae_config(p->vae)->latent_channels,
                           (long long)dc.in_channels, (long long)dc.out_channels);
        goto err_free;
    }

    sub = path_join(model_dir, "scheduler/scheduler_config.json");
    if (!sub) goto err_nomem;
    st = sdc_sched_config_load(&p->sched, sub, err);
    free(sub);
    sub = NULL;
    if (st != SDC_OK) goto err_free;

    st = sdc_pipeline_load_guiders(model_dir, &p->guider, &p->ocr_guider, err);
    if (st != SDC_OK) goto err_free;
    *out = p;
    return SDC_OK;

err_nomem:
    st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
err_free:
    free(sub);
    sdc_pipeline_free(p);
    return st;
}

void sdc_pipeline_free(sdc_pipeline_t *p)
{
    if (!p) return;
    if (p->dit) sdc_dit_free(p->dit);
    if (p->vae) sdc_vae_free(p->vae);
    free(p->model_dir);
    free(p);
}

sdc_status_t sdc_pipeline_check_params(const sdc_pipeline_t *p, const sdc_gen_params_t *gp,
                                       sdc_error_t *err)
{
    const sdc_dit_config_t *dc = sdc_dit_config(p->dit);
    int64_t f = sdc_vae_config(p->vae)->spatial_compression_ratio;
    int64_t fh = f * dc->patch_size[0], fw = f * dc->patch_size[1];
    if (gp->width <= 0 || gp->height <= 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "width and height must be positive, got %dx%d",
                             gp->width, gp->height);
    if (gp->width > SDC_MAX_IMAGE_SIDE || gp->height > SDC_MAX_IMAGE_SIDE)
        return sdc_error_set(err, SDC_ERR_RANGE, "image size %dx%d is too large (max %d per side)",
                             gp->width, gp->height, SDC_MAX_IMAGE_SIDE);
    if (gp->height % fh != 0 || gp->width % fw != 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "image size %dx%d (WxH) is not a multiple of %lldx%lld (the VAE "
                             "factor %lld times the patch size)",
                             gp->width, gp->height, (long long)fw, (long long)fh, (long long)f);
    if (gp->steps < 1 || gp->steps > 1000)
        return sdc_error_set(err, SDC_ERR_RANGE, "steps must be in 1..1000, got %d", gp->steps);
    if (dc->guidance_embeds && !(gp->distilled_guidance_scale > 0 &&
                                 gp->distilled_guidance_scale < 1000))
        return sdc_error_set(err, SDC_ERR_RANGE, "guidance scale must be in (0, 1000), got %g",
                             gp->distilled_guidance_scale);
    return SDC_OK;
}

int sdc_text_cond_has_glyph(const sdc_text_cond_t *c, int64_t dim_2)
{
    if (!c->embeds_2) return 0;
    int64_t n = c->n_2 * dim_2;
    for (int64_t i = 0; i < n; i++)
        if (c->embeds_2[i] != 0.0f) return 1;
    return 0;
}

sdc_status_t sdc_denoise_setup(sdc_denoise_t *d, const sdc_dit_config_t *dc,
                               const sdc_sched_config_t *sched, const sdc_guider_config_t *guider,
                               int64_t h, int64_t w, int64_t cond_channels,
                               const sdc_gen_params_t *gp, const float *noise, sdc_error_t *err)
{
    memset(d, 0, sizeof(*d));
    if (dc->out_channels + cond_channels != dc->in_channels)
        return sdc_error_set(err, SDC_ERR_SHAPE,
                             "the transformer takes %lld channels, not its %lld output channels "
                             "plus %lld conditioning channels",
                             (long long)dc->in_channels, (long long)dc->out_channels,
                             (long long)cond_channels);
    d->channels = dc->out_channels;
    d->cond_channels = cond_channels;
    d->h = h;
    d->w = w;
    d->n_steps = gp->steps;
    d->use_meanflow = dc->use_meanflow;
    d->guidance_embeds = dc->guidance_embeds;
    /* torch.tensor([scale], dtype=float32) * 1000.0: rounded to float, then
     * multiplied in float. */
    d->guidance = (float)gp->distilled_guidance_scale * 1000.0f;
    d->guider = guider;

    int64_t n = d->channels * h * w;
    d->latent = calloc((size_t)(dc->in_channels * h * w), sizeof(float));
    if (!d->latent) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory for the latent");
    if (noise)
        memcpy(d->latent, noise, (size_t)n * sizeof(float));
    else
        sdc_philox_normal(gp->seed, 0, d->latent, n);
    sdc_status_t st = sdc_schedule_make(sched, gp->steps, &d->schedule, err);
    if (st != SDC_OK) {
        free(d->latent);
        d->latent = NULL;
    }
    return st;
}

sdc_status_t sdc_denoise_init(sdc_denoise_t *d, const sdc_pipeline_t *p,
                              const sdc_gen_params_t *gp, int has_glyph, const float *noise,
                              sdc_error_t *err)
{
    int64_t f = sdc_vae_config(p->vae)->spatial_compression_ratio;
    memset(d, 0, sizeof(*d));
    sdc_status_t st = sdc_pipeline_check_params(p, gp, err);
    if (st != SDC_OK) return st;
    return sdc_denoise_setup(d, sdc_dit_config(p->dit), &p->sched,
                             sdc_guider_select(&p->guider, &p->ocr_guider, has_glyph),
                             gp->height / f, gp->width / f, 0, gp, noise, err);
}

void sdc_denoise_free(sdc_denoise_t *d)
{
    free(d->latent);
    d->latent = NULL;
    sdc_schedule_free(&d->schedule);
    sdc_guider_state_free(&d->guider_state);
}

int sdc_denoise_passes(const sdc_denoise_t *d)
{
    if (!d->guider) return 1;
    return sdc_guider_num_passes(d->guider, d->step, d->n_steps);
}

void sdc_denoise_inputs(const sdc_denoise_t *d, float *timestep, float *timestep_r,
                        float *guidance)
{
    *timestep = d->schedule.timesteps[d->step];
    /* meanflow: timestep_r is the next timestep, 0 after the last. */
    if (d->use_meanflow)
        *timestep_r = d->step + 1 < d->n_steps ? d->schedule.timesteps[d->step + 1] : 0.0f;
    else
        *timestep_r = 0.0f;
    *guidance = d->guidance_embeds ? d->guidance : 0.0f;
}

sdc_status_t sdc_denoise_update(sdc_denoise_t *d, const float *pred_cond,
                                const float *pred_uncond, sdc_error_t *err)
{
    int64_t n = d->channels * d->h * d->w;
    if (sdc_denoise_done(d))
        return sdc_error_set(err, SDC_ERR_INTERNAL, "denoise update after the last step");
    if (!d->guider) {
        sdc_schedule_step(&d->schedule, d->step, d->latent, pred_cond, n);
        d->step++;
        return SDC_OK;
    }
    float *pred = malloc((size_t)n * sizeof(float));
    if (!pred) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    sdc_status_t st = sdc_guider_apply(d->guider, &d->guider_state, d->step, d->n_steps,
                                       d->schedule.timesteps[d->step], pred_cond, pred_uncond,
                                       pred, d->channels, d->h, d->w, err);
    if (st == SDC_OK) {
        sdc_schedule_step(&d->schedule, d->step, d->latent, pred, n);
        d->step++;
    }
    free(pred);
    return st;
}

void sdc_denoise_dit_input(const sdc_denoise_t *d, const sdc_text_cond_t *text, int trim_text,
                           sdc_dit_input_t *in)
{
    memset(in, 0, sizeof(*in));
    in->latent = d->latent;
    in->height = d->h;
    in->width = d->w;
    sdc_denoise_inputs(d, &in->timestep, &in->timestep_r, &in->guidance);
    in->text = text->embeds;
    in->text_mask = text->mask;
    in->n_text = text->n;
    in->text_2 = text->embeds_2;
    in->text_mask_2 = text->mask_2;
    in->n_text_2 = text->n_2;
    in->trim_text = trim_text;
}

/* One DiT pass (embed -> all blocks -> head) for one conditioning. */
static sdc_status_t dit_pass(sdc_dit_t *dit, const sdc_denoise_t *d,
                             const sdc_text_cond_t *text, int trim, float *pred,
                             sdc_gen_timing_t *t, sdc_error_t *err)
{
    sdc_dit_input_t in;
    sdc_dit_sample_t s;
    double t0 = sdc_now();
    sdc_denoise_dit_input(d, text, trim, &in);
    sdc_status_t st = sdc_dit_embed(dit, &in, &s, err);
    if (st != SDC_OK) return st;
    double t1 = sdc_now();
    st = sdc_dit_run_blocks(dit, &s, 1, 0, sdc_dit_total_blocks(sdc_dit_config(dit)), err);
    double t2 = sdc_now();
    if (st == SDC_OK) st = sdc_dit_head(dit, &s, pred, err);
    double t3 = sdc_now();
    sdc_dit_sample_free(dit, &s);
    t->embed_s += t1 - t0;
    t->blocks_s += t2 - t1;
    t->head_s += t3 - t2;
    t->dit_passes++;
    return st;
}

sdc_status_t sdc_pipeline_step(sdc_pipeline_t *p, sdc_denoise_t *d, const sdc_text_cond_t *pos,
                               const sdc_text_cond_t *neg, int trim_text, float *pred_cond,
                               float *pred_uncond, sdc_gen_timing_t *t, sdc_error_t *err)
{
    return sdc_denoise_step(p->dit, d, pos, neg, trim_text, pred_cond, pred_uncond, t, err);
}

sdc_status_t sdc_denoise_step(sdc_dit_t *dit, sdc_denoise_t *d, const sdc_text_cond_t *pos,
                              const sdc_text_cond_t *neg, int trim_text, float *pred_cond,
                              float *pred_uncond, sdc_gen_timing_t *t, sdc_error_t *err)
{
    int passes = sdc_denoise_passes(d);
    if (passes > 1 && !neg)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "the model's guider needs negative (unconditional) embeddings");
    sdc_status_t st = dit_pass(dit, d, pos, trim_text, pred_cond, t, err);
    if (st == SDC_OK && passes > 1) st = dit_pass(dit, d, neg, trim_text, pred_uncond, t, err);
    if (st != SDC_OK) return st;
    double g0 = sdc_now();
    st = sdc_denoise_update(d, pred_cond, passes > 1 ? pred_uncond : NULL, err);
    t->guide_s += sdc_now() - g0;
    return st;
}

sdc_status_t sdc_pipeline_decode(sdc_pipeline_t *p, const float *latent, int64_t h, int64_t w,
                                 uint8_t **rgb_out, float **decoded_out, sdc_error_t *err)
{
    const sdc_vae_config_t *vc = sdc_vae_config(p->vae);
    int64_t C = vc->latent_channels, r = vc->spatial_compression_ratio;
    int64_t n = C * h * w, H = h * r, W = w * r;
    sdc_status_t st = SDC_OK;
    float *z = malloc((size_t)n * sizeof(float));
    float *img = malloc((size_t)(3 * H * W) * sizeof(float));
    uint8_t *rgb = malloc((size_t)(3 * H * W));
    if (!z || !img || !rgb) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory decoding a %lldx%lld image",
                           (long long)W, (long long)H);
        goto out;
    }
    /* latents.to(vae.dtype) / vae.config.scaling_factor: float32 tensor
     * divided by a Python float, i.e. by the float32 rounding of it. */
    float sf = (float)vc->scaling_factor;
    for (int64_t i = 0; i < n; i++) z[i] = latent[i] / sf;
    st = sdc_vae_decode(p->vae, z, h, w, img, err);
    if (st != SDC_OK) goto out;
    sdc_image_to_rgb8(img, (int)W, (int)H, rgb);
    *rgb_out = rgb;
    rgb = NULL;
    if (decoded_out) {
        *decoded_out = img;
        img = NULL;
    }
out:
    free(z);
    free(img);
    free(rgb);
    return st;
}

sdc_status_t sdc_pipeline_generate(sdc_pipeline_t *p, const sdc_gen_params_t *gp,
                                   const sdc_text_cond_t *pos, const sdc_text_cond_t *neg,
                                   const float *noise, sdc_progress_fn progress,
                                   void *progress_ctx, uint8_t **rgb_out, float **latent_out,
                                   sdc_gen_timing_t *timing, sdc_error_t *err)
{
    const sdc_dit_config_t *dc = sdc_dit_config(p->dit);
    sdc_gen_timing_t t;
    sdc_denoise_t d;
    float *pc = NULL, *pu = NULL;
    double t_start = sdc_now();
    memset(&t, 0, sizeof(t));
    int glyph = sdc_text_cond_has_glyph(pos, dc->text_embed_2_dim);
    sdc_status_t st = sdc_denoise_init(&d, p, gp, glyph, noise, err);
    if (st != SDC_OK) return st;
    int64_t n = d.channels * d.h * d.w;
    pc = malloc((size_t)n * sizeof(float));
    pu = malloc((size_t)n * sizeof(float));
    if (!pc || !pu) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        goto out;
    }
    while (!sdc_denoise_done(&d)) {
        st = sdc_pipeline_step(p, &d, pos, neg, gp->trim_text, pc, pu, &t, err);
        if (st != SDC_OK) goto out;
        if (progress) progress(progress_ctx, d.step, d.n_steps, sdc_now() - t_start);
    }
    double v0 = sdc_now();
    st = sdc_pipeline_decode(p, d.latent, d.h, d.w, rgb_out, NULL, err);
    t.vae_s = sdc_now() - v0;
    if (st != SDC_OK) goto out;
    if (latent_out) {
        *latent_out = d.latent;
        d.latent = NULL;
    }
out:
    t.total_s = sdc_now() - t_start;
    if (timing) *timing = t;
    free(pc);
    free(pu);
    sdc_denoise_free(&d);
    return st;
}
