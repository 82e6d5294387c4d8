/*
 * model_parts.c: partial model loading and job parameters (see
 * model_parts.h). The loading mirrors sdc_pipeline_open component by
 * component; only which components are loaded differs.
 */
#include "model_parts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* diffusers' HunyuanImagePipeline.default_sample_size. */
#define PARTS_DEFAULT_SAMPLE 64

static sdc_status_t sub_path(char *buf, size_t cap, const char *dir, const char *sub,
                             sdc_error_t *err)
{
    if ((size_t)snprintf(buf, cap, "%s/%s", dir, sub) >= cap)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: model path too long", dir);
    return SDC_OK;
}

static sdc_status_t open_dit(sdc_pipeline_t *p, const char *model_dir, int begin, int end,
                             sdc_error_t *err)
{
    char dir[4096];
    sdc_status_t st = sub_path(dir, sizeof(dir), model_dir, "transformer", err);
    if (st != SDC_OK)
        return st;
    return sdc_dit_load(&p->dit, p->be, dir, begin, end, err);
}

static sdc_status_t open_vae(sdc_pipeline_t *p, const char *model_dir, sdc_error_t *err)
{
    char dir[4096];
    sdc_status_t st = sub_path(dir, sizeof(dir), model_dir, "vae", err);
    if (st != SDC_OK)
        return st;
    return sdc_vae_load(&p->vae, p->be, dir, err);
}

static sdc_status_t open_denoise(sdc_pipeline_t *p, const char *model_dir, sdc_error_t *err)
{
    char path[4096];
    sdc_status_t st = sub_path(path, sizeof(path), model_dir, "scheduler/scheduler_config.json",
                               err);
    if (st == SDC_OK)
        st = sdc_sched_config_load(&p->sched, path, err);
    if (st == SDC_OK)
        st = sub_path(path, sizeof(path), model_dir, "guider", err);
    if (st == SDC_OK)
        st = sdc_guider_config_load(&p->guider, path, err);
    if (st == SDC_OK)
        st = sub_path(path, sizeof(path), model_dir, "ocr_guider", err);
    if (st == SDC_OK)
        st = sdc_guider_config_load(&p->ocr_guider, path, err);
    return st;
}

sdc_status_t sdc_parts_open(sdc_pipeline_t **out, sdc_backend_t *be, const char *model_dir,
                            unsigned parts, int block_begin, int block_end, sdc_error_t *err)
{
    *out = NULL;
    sdc_pipeline_t *p = calloc(1, sizeof(*p));
    if (!p)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    p->be = be;
    p->guider.kind = SDC_GUIDER_NONE;
    p->ocr_guider.kind = SDC_GUIDER_NONE;
    sdc_status_t st = SDC_OK;
    p->model_dir = strdup(model_dir);
    if (!p->model_dir)
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    if (st == SDC_OK && (parts & SDC_PARTS_DIT))
        st = open_dit(p, model_dir, block_begin, block_end, err);
    if (st == SDC_OK && (parts & SDC_PARTS_VAE))
        st = open_vae(p, model_dir, err);
    if (st == SDC_OK && (parts & SDC_PARTS_DENOISE))
        st = open_denoise(p, model_dir, err);
    if (st != SDC_OK) {
        sdc_pipeline_free(p);
        return st;
    }
    *out = p;
    return SDC_OK;
}

static void override_guidance(sdc_guider_config_t *g, double scale)
{
    if (g->kind != SDC_GUIDER_NONE)
        g->guidance_scale = scale;
}

void sdc_parts_job(const sdc_pipeline_t *base, const sdc_dit_config_t *dc,
                   const sdc_job_params_t *jp, sdc_pipeline_t *job_pipe, sdc_gen_params_t *gp)
{
    *job_pipe = *base;
    sdc_gen_params_default(gp);
    gp->width = jp->width;
    gp->height = jp->height;
    gp->steps = jp->steps;
    gp->seed = jp->seed;
    gp->trim_text = jp->trim_text;
    if (!jp->has_guidance)
        return;
    if (dc->guidance_embeds) {
        gp->distilled_guidance_scale = jp->guidance;
    } else {
        override_guidance(&job_pipe->guider, jp->guidance);
        override_guidance(&job_pipe->ocr_guider, jp->guidance);
    }
}

int sdc_parts_default_side(const sdc_vae_config_t *vc)
{
    return (int)(PARTS_DEFAULT_SAMPLE * vc->spatial_compression_ratio);
}

sdc_status_t sdc_parts_check_params(const sdc_dit_config_t *dc, const sdc_vae_config_t *vc,
                                    const sdc_gen_params_t *gp, sdc_error_t *err)
{
    int64_t f = vc->spatial_compression_ratio;
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
    if (dc->guidance_embeds &&
        !(gp->distilled_guidance_scale > 0 && gp->distilled_guidance_scale < 1000))
        return sdc_error_set(err, SDC_ERR_RANGE, "guidance scale must be in (0, 1000), got %g",
                             gp->distilled_guidance_scale);
    return SDC_OK;
}
