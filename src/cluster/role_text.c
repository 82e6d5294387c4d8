/*
 * role_text.c: the text-encoder node. For each Assign from the coordinator
 * it builds the job's conditioning (the prompt's embeddings, and the
 * negative ones when the job's guider makes unconditional passes), records
 * encoding -> denoising and sends the conditioning once to stage 0 of the
 * job's pipeline: one sample per pass, the embeddings and masks raw after
 * the header, the job's parameters with the conditional sample.
 *
 * The conditioning comes from the job's 'embeds' file (the sdc-generate
 * --embeds format) or from its prompt through the text encoders
 * (Qwen2.5-VL + ByT5, model/text_encoder.h), loaded at start when the model
 * directory has them; the negative prompt (default empty, as sdc-generate)
 * is encoded only when the guider needs it.
 *
 * Not here: the DiT; the guider's choice is only read, to know whether the
 * negative conditioning is needed (stage 0 and the last stage make the same
 * choice from the same configs).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/model_parts.h"
#include "cluster/rt_internal.h"
#include "common/log.h"
#include "model/embeds.h"
#include "model/text_encoder.h"

typedef struct {
    sdc_pipeline_t *pipe; /* scheduler and guider configs only */
    sdc_text_encoder_t *enc; /* NULL: the model has no text encoders */
    char enc_error[SDC_ERROR_MSG_MAX];
    int stage0[SDC_CF_MAX_PIPELINES];
    sdc_rt_queue_t queue;
    sdc_rt_retired_t seen; /* Assigns taken, so that a repeat is refused */
} te_t;

static sdc_status_t encode_text(te_t *te, const char *text, sdc_embeds_part_t *out,
                                sdc_error_t *err)
{
    if (!te->enc)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "this cluster's model cannot encode prompts (%s): submit "
                             "precomputed 'embeds'", te->enc_error);
    return sdc_text_encoder_encode(te->enc, text, strlen(text), out, NULL, err);
}

/* The job's text conditioning: pos, and neg when an embeds file has it. */
static sdc_status_t conditioning(sdc_rt_t *rt, te_t *te, const sdc_job_params_t *p,
                                 sdc_embeds_t *out, sdc_error_t *err)
{
    memset(out, 0, sizeof(*out));
    if (p->embeds)
        return sdc_embeds_load(out, p->embeds, rt->dc.text_embed_dim, rt->dc.text_embed_2_dim,
                               err);
    return encode_text(te, p->prompt, &out->pos, err);
}

/* The unconditional side: the embeds file's, or the negative prompt's. */
static sdc_status_t negative(te_t *te, const sdc_job_params_t *p, sdc_embeds_t *emb,
                             sdc_error_t *err)
{
    if (emb->has_neg)
        return SDC_OK;
    if (p->embeds)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "the model's guider needs negative (unconditional) embeddings");
    sdc_status_t s = encode_text(te, p->negative_prompt ? p->negative_prompt : "", &emb->neg, err);
    emb->has_neg = s == SDC_OK;
    return s;
}

static int64_t count_valid(const uint8_t *mask, int64_t n)
{
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++)
        c += mask[i] != 0;
    return c;
}

/* Text rows of the sample that reach the DiT blocks (wire.h's n_txt). */
static uint32_t text_rows(const sdc_rt_t *rt, const sdc_embeds_part_t *p, int trim)
{
    int byt5 = rt->dc.text_embed_2_dim > 0 && p->embeds_2;
    if (!trim)
        return (uint32_t)(p->n + (byt5 ? p->n_2 : 0));
    return (uint32_t)(count_valid(p->mask, p->n) + (byt5 ? count_valid(p->mask_2, p->n_2) : 0));
}

static void add_part(sdc_rt_tb_t *tb, uint32_t i, const sdc_embeds_part_t *p)
{
    const int64_t e[2] = {p->n, p->dim}, m[1] = {p->n};
    sdc_rt_tb_tensor(tb, i, "prompt_embeds", SDC__DTYPE__DTYPE_F32, 2, e);
    sdc_rt_tb_tensor(tb, i, "prompt_embeds_mask", SDC__DTYPE__DTYPE_U8, 1, m);
    if (!p->embeds_2)
        return;
    const int64_t e2[2] = {p->n_2, p->dim_2}, m2[1] = {p->n_2};
    sdc_rt_tb_tensor(tb, i, "prompt_embeds_2", SDC__DTYPE__DTYPE_F32, 2, e2);
    sdc_rt_tb_tensor(tb, i, "prompt_embeds_mask_2", SDC__DTYPE__DTYPE_U8, 1, m2);
}

static void fill_part(const sdc_rt_tb_t *tb, size_t *k, uint8_t *payload,
                      const sdc_embeds_part_t *p)
{
    const void *src[4] = {p->embeds, p->mask, p->embeds_2, p->mask_2};
    for (int t = 0; t < (p->embeds_2 ? 4 : 2); t++, (*k)++)
        memcpy(payload + tb->descs[*k].offset, src[t], tb->descs[*k].nbytes);
}

static sdc_status_t send_text(sdc_rt_t *rt, const te_t *te, const Sdc__Assign *a,
                              const sdc_job_params_t *p, const sdc_embeds_t *emb, int glyph,
                              int with_neg, sdc_error_t *err)
{
    const int64_t f = rt->vc.spatial_compression_ratio, patch = rt->dc.patch_size[0];
    const int n = with_neg ? 2 : 1;
    const sdc_embeds_part_t *parts[2] = {&emb->pos, &emb->neg};
    sdc_rt_tb_t tb;
    uint8_t *payload;
    sdc_status_t s = sdc_rt_tb_init(&tb, (size_t)n, 4 * (size_t)n, err);
    if (s != SDC_OK)
        return s;
    tb.h.job_id = a->job_id;
    tb.h.attempt = a->attempt;
    for (int i = 0; i < n; i++) {
        Sdc__Sample *smp = sdc_rt_tb_sample(&tb);
        smp->job_id = a->job_id;
        smp->attempt = a->attempt;
        smp->steps = (uint32_t)sdc_job_params_run_steps(p);
        smp->pass = i ? SDC__PASS__PASS_UNCOND : SDC__PASS__PASS_COND;
        smp->grid_h = (uint32_t)(p->height / f);
        smp->grid_w = (uint32_t)(p->width / f);
        smp->n_img = (uint32_t)((smp->grid_h / patch) * (smp->grid_w / patch));
        smp->n_txt = text_rows(rt, parts[i], p->trim_text);
        if (i == 0) {
            smp->params_json = a->params_json;
            smp->glyph = glyph;
        }
        add_part(&tb, (uint32_t)i, parts[i]);
    }
    s = sdc_rt_tb_layout(&tb, &payload, err);
    if (s == SDC_OK) {
        size_t k = 0;
        for (int i = 0; i < n; i++)
            fill_part(&tb, &k, payload, parts[i]);
        s = sdc_rt_tb_send(rt, &tb, te->stage0[a->pipeline], payload, err);
    }
    sdc_rt_tb_free(&tb);
    return s;
}

static void encode(sdc_rt_t *rt, te_t *te, const Sdc__Assign *a)
{
    sdc_error_t err = {0};
    sdc_job_params_t p;
    sdc_embeds_t emb;
    memset(&emb, 0, sizeof(emb));
    sdc_job_params_init(&p);
    sdc_status_t s = sdc_job_params_parse(&p, a->params_json, strlen(a->params_json), &err);
    if (s == SDC_OK && strcmp(p.id, a->job_id) != 0)
        s = sdc_error_set(&err, SDC_ERR_INVALID_ARG, "parameters name job %s", p.id);
    if (s == SDC_OK && (int)a->pipeline >= rt->cf->n_pipelines)
        s = sdc_error_set(&err, SDC_ERR_INVALID_ARG, "no pipeline %u", a->pipeline);
    if (s == SDC_OK)
        s = conditioning(rt, te, &p, &emb, &err);
    if (s != SDC_OK) {
        sdc_rt_job_fail(rt, a->job_id, a->attempt, s, err.msg);
        goto out;
    }
    sdc_text_cond_t pos;
    sdc_pipeline_t jp;
    sdc_gen_params_t gp;
    sdc_embeds_cond(&emb.pos, &pos);
    int glyph = sdc_text_cond_has_glyph(&pos, rt->dc.text_embed_2_dim);
    sdc_parts_job(te->pipe, &rt->dc, &p, &jp, &gp);
    const sdc_guider_config_t *g = sdc_guider_select(&jp.guider, &jp.ocr_guider, glyph);
    /* Image-to-image: the guider sees only the steps strength leaves, as
     * in sdc-generate. */
    int with_neg = g && sdc_guider_needs_uncond(g, sdc_job_params_run_steps(&p));
    if (with_neg && (s = negative(te, &p, &emb, &err)) != SDC_OK) {
        sdc_rt_job_fail(rt, a->job_id, a->attempt, s, err.msg);
        goto out;
    }
    sdc_job_outcome_t outcome;
    s = sdc_job_advance(&rt->q, a->job_id, a->attempt, SDC_JOB_DENOISING, 0, &outcome, &err);
    if (s != SDC_OK && s != SDC_ERR_IO) {
        SDC_WARN("%s: job %s attempt %u: %s; not sending it on", rt->id, a->job_id, a->attempt,
                 err.msg);
        goto out;
    }
    if (send_text(rt, te, a, &p, &emb, glyph, with_neg, &err) != SDC_OK)
        sdc_rt_job_lost(rt, a->job_id, a->attempt, err.msg);
    else
        SDC_DEBUG("%s: job %s attempt %u -> pipeline %u", rt->id, a->job_id, a->attempt,
                  a->pipeline);
out:
    sdc_embeds_free(&emb);
    sdc_job_params_free(&p);
}

static void on_message(sdc_rt_t *rt, void *state, sdc_rt_msg_t *m)
{
    te_t *te = state;
    if (m->w.type != SDC_WIRE_ASSIGN) {
        sdc_rt_drop(rt, m, "a text encoder takes only assignments");
        sdc_rt_msg_free(m);
        return;
    }
    const Sdc__Assign *a = m->w.env->assign;
    sdc_rt_retire(&te->seen, a->job_id, a->attempt);
    /* The coordinator requeues an encoding job nobody took (its Assign died
     * with the coordinator that sent it); this one is taken here. */
    sdc_error_t err = {0};
    int stored;
    if (sdc_job_set_holder(&rt->q, a->job_id, a->attempt, SDC_JOB_ENCODING, rt->id, &stored,
                           &err) != SDC_OK)
        SDC_WARN("%s: job %s: %s", rt->id, a->job_id, err.msg);
    sdc_rt_queue_push(&te->queue, m);
}

static int work(sdc_rt_t *rt, void *state)
{
    te_t *te = state;
    sdc_rt_msg_t *m = sdc_rt_queue_pop(&te->queue);
    if (!m)
        return 0;
    encode(rt, te, m->w.env->assign);
    sdc_rt_msg_free(m);
    return 1;
}

static sdc_wire_job_state_t job_state(void *state, const char *job_id, uint32_t attempt)
{
    const te_t *te = state;
    return sdc_rt_learned_state(&te->seen, 0, job_id, attempt);
}

static int busy(sdc_rt_t *rt, void *state)
{
    (void)rt;
    return ((const te_t *)state)->queue.n > 0;
}

static int peers(sdc_rt_t *rt, void *state, int *nodes, int cap)
{
    const te_t *te = state;
    int n = 0;
    for (int p = 0; p < rt->cf->n_pipelines && n < cap; p++)
        nodes[n++] = te->stage0[p];
    return n;
}

static sdc_status_t open_te(sdc_rt_t *rt, void **state, sdc_error_t *err)
{
    te_t *te = calloc(1, sizeof(*te));
    if (!te)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    *state = te;
    for (int p = 0; p < rt->cf->n_pipelines; p++)
        te->stage0[p] = sdc_cluster_find_node(rt->cf, SDC_ROLE_DIT_STAGE, p, 0);
    sdc_error_t enc_err = {0};
    if (sdc_text_encoder_open(&te->enc, rt->be, rt->cf->model, rt->dc.text_embed_dim,
                              rt->dc.text_embed_2_dim, &enc_err) != SDC_OK) {
        te->enc = NULL;
        snprintf(te->enc_error, sizeof(te->enc_error), "%s", enc_err.msg);
        SDC_INFO("%s: no text encoders, jobs need 'embeds': %s", rt->id, enc_err.msg);
    }
    return sdc_parts_open(&te->pipe, NULL, rt->cf->model, SDC_PARTS_DENOISE, 0, 0, err);
}

static void close_te(sdc_rt_t *rt, void *state)
{
    (void)rt;
    te_t *te = state;
    sdc_rt_queue_free(&te->queue);
    sdc_text_encoder_free(te->enc);
    sdc_pipeline_free(te->pipe);
    free(te);
}

const sdc_role_ops_t sdc_role_text_encoder = {
    .role = SDC_ROLE_TEXT_ENCODER,
    .open = open_te,
    .close = close_te,
    .peers = peers,
    .job_state = job_state,
    .on_message = on_message,
    .work = work,
    .busy = busy,
};
