/*
 * role_refiner.c: the refiner node. It takes a refine job's decoded RGB8
 * image from a VAE node, runs the HunyuanImage-2.1 refiner on it (encode,
 * denoise, decode: sdc_refiner_run, the call sdc-generate --refiner makes,
 * with the same parameters and seed) and completes the job with the
 * refined PNG as the VAE node completes a plain job (result, refining ->
 * done, stream entry acked, JobDone to the leader).
 *
 * One node holds the whole refiner (transformer, VAE): the released
 * refiner's DiT fits one accelerator, and a job's refinement is a few steps
 * (4 by default) against the base model's 50. Jobs are refined one at a
 * time, in arrival order; several refiner nodes share the work (the VAE
 * nodes send round robin). A refiner node that dies mid-job leaves the job
 * in state refining; the coordinator requeues it after --job-timeout
 * without progress (a send that fails is a lost job, requeued at once).
 *
 * Conditioning: the job's refiner_embeds file when it names one, else the
 * job's prompt (and negative prompt) through the refiner's own text encoder
 * (the refiner profile: its template, 256 tokens), which the node loads at
 * start when the refiner directory has one, as sdc-generate --refiner -p
 * does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/rt_internal.h"
#include "common/log.h"
#include "common/png.h"
#include "common/timer.h"
#include "model/embeds.h"
#include "model/refiner.h"
#include "model/text_encoder.h"

typedef struct {
    sdc_refiner_t *rf;
    sdc_text_encoder_t *te; /* NULL: the refiner directory has no text encoder */
    sdc_rt_queue_t queue;
    sdc_rt_retired_t done;
    int running; /* a job is being refined (its heartbeat counts it) */
} refiner_t;

/* The refiner's text conditioning of job p: its refiner_embeds file, at the
 * refiner transformer's widths, or its prompt encoded by the node. */
static sdc_status_t refiner_conditioning(const refiner_t *r, const sdc_job_params_t *p,
                                         sdc_embeds_t *out, sdc_error_t *err)
{
    if (!p->refiner_embeds && !r->te)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "the refiner model has no text encoder: "
                             "a refine job needs 'refiner_embeds' here");
    if (!p->refiner_embeds)
        return sdc_refiner_encode_text(r->te, &r->rf->guider, p->prompt, strlen(p->prompt),
                                       p->negative_prompt,
                                       p->negative_prompt ? strlen(p->negative_prompt) : 0,
                                       p->refine_steps, out, NULL, err);
    const sdc_dit_config_t *dc = sdc_dit_config(r->rf->dit);
    sdc_status_t st = sdc_embeds_load(out, p->refiner_embeds, dc->text_embed_dim,
                                      dc->text_embed_2_dim, err);
    if (st != SDC_OK)
        sdc_error_wrap(err, "refiner_embeds");
    return st;
}

/* The job's refiner parameters, as sdc-generate --refiner sets them. */
static void refiner_params(const sdc_job_params_t *p, sdc_refiner_params_t *rp)
{
    sdc_refiner_params_default(rp);
    rp->steps = p->refine_steps;
    rp->seed = sdc_job_params_refine_seed(p);
    rp->distilled_guidance_scale = p->refine_guidance;
    rp->cond_strength = p->refine_strength;
}

/* Transfers and heartbeats go on between the refiner's steps. */
static void on_step(void *ctx, int step, int n_steps, double elapsed_s)
{
    sdc_rt_t *rt = ctx;
    SDC_DEBUG("%s: refiner step %d/%d (%.2f s)", rt->id, step, n_steps, elapsed_s);
    sdc_rt_service(rt);
}

/* Refines the image of m's job: *png (malloc'd) on success. */
static sdc_status_t refine(sdc_rt_t *rt, refiner_t *r, const sdc_rt_msg_t *m,
                           const sdc_job_params_t *p, uint8_t **png, size_t *png_len,
                           sdc_error_t *err)
{
    const Sdc__TensorDesc *t = sdc_wire_find_tensor(m->w.env->tensor, 0, "image");
    const int w = (int)t->shape[1], h = (int)t->shape[0];
    sdc_refiner_params_t rp;
    sdc_embeds_t emb;
    uint8_t *rgb = NULL;
    refiner_params(p, &rp);
    sdc_status_t st = sdc_refiner_check(r->rf, w, h, &rp, err);
    if (st != SDC_OK)
        return st;
    if ((st = refiner_conditioning(r, p, &emb, err)) != SDC_OK)
        return st;
    sdc_text_cond_t pos, neg;
    sdc_embeds_cond(&emb.pos, &pos);
    sdc_embeds_cond(&emb.neg, &neg);
    sdc_gen_timing_t tm;
    st = sdc_refiner_run(r->rf, &rp, sdc_rt_tensor_data(m, t), w, h, &pos,
                         emb.has_neg ? &neg : NULL, on_step, rt, &rgb, NULL, &tm, err);
    sdc_embeds_free(&emb);
    if (st == SDC_OK)
        st = sdc_png_encode(rgb, w, h, png, png_len, err);
    free(rgb);
    return st;
}

static void run_job(sdc_rt_t *rt, refiner_t *r, const sdc_rt_msg_t *m)
{
    const Sdc__Sample *s = m->w.env->tensor->samples[0];
    sdc_error_t err = {0};
    sdc_job_params_t p;
    uint8_t *png = NULL;
    size_t png_len = 0;
    double t0 = sdc_now();
    sdc_rt_retire(&r->done, s->job_id, s->attempt);
    sdc_status_t st = sdc_job_params_parse(&p, s->params_json, strlen(s->params_json), &err);
    if (st == SDC_OK && !p.refine)
        st = sdc_error_set(&err, SDC_ERR_INVALID_ARG, "the job does not ask for 'refine'");
    if (st != SDC_OK) {
        sdc_rt_job_fail(rt, s->job_id, s->attempt, st, err.msg);
        return;
    }
    r->running = 1;
    st = refine(rt, r, m, &p, &png, &png_len, &err);
    r->running = 0;
    if (st != SDC_OK) {
        sdc_rt_job_fail(rt, s->job_id, s->attempt, st, err.msg);
        goto out;
    }
    sdc_job_outcome_t outcome;
    if (sdc_job_complete(&rt->q, s->job_id, s->attempt, png, png_len, &outcome, &err) !=
        SDC_OK) {
        SDC_WARN("%s: job %s attempt %u not completed: %s", rt->id, s->job_id, s->attempt,
                 err.msg);
        goto out;
    }
    SDC_INFO("%s: job %s done (refined %dx%d, %d steps, %.3f s)", rt->id, s->job_id,
             (int)(s->grid_w * rt->vc.spatial_compression_ratio),
             (int)(s->grid_h * rt->vc.spatial_compression_ratio), p.refine_steps,
             sdc_now() - t0);
    sdc_rt_job_done(rt, s->job_id, s->attempt);
out:
    free(png);
    sdc_job_params_free(&p);
}

static void on_message(sdc_rt_t *rt, void *state, sdc_rt_msg_t *m)
{
    refiner_t *r = state;
    const Sdc__TensorHeader *h = m->w.type == SDC_WIRE_TENSOR ? m->w.env->tensor : NULL;
    if (!h || h->n_samples != 1 || !sdc_wire_find_tensor(h, 0, "image")) {
        sdc_rt_drop(rt, m, "a refiner node takes one job's decoded image");
        sdc_rt_msg_free(m);
        return;
    }
    const Sdc__Sample *s = h->samples[0];
    if (s->step + 1 != s->steps || !s->params_json || !s->params_json[0]) {
        sdc_rt_drop(rt, m, "image of job %s (step %u of %u) is not a finished job's or lacks "
                    "its parameters", s->job_id, s->step, s->steps);
        sdc_rt_msg_free(m);
        return;
    }
    sdc_rt_queue_push(&r->queue, m);
}

static int work(sdc_rt_t *rt, void *state)
{
    refiner_t *r = state;
    sdc_rt_msg_t *m = sdc_rt_queue_pop(&r->queue);
    if (!m)
        return 0;
    const Sdc__Sample *s = m->w.env->tensor->samples[0];
    if (sdc_rt_retired_attempt(&r->done, s->job_id) >= s->attempt)
        sdc_rt_drop(rt, m, "job %s attempt %u was refined already", s->job_id, s->attempt);
    else
        run_job(rt, r, m);
    sdc_rt_msg_free(m);
    return 1;
}

static sdc_wire_job_state_t job_state(void *state, const char *job_id, uint32_t attempt)
{
    const refiner_t *r = state;
    return sdc_rt_learned_state(&r->done, 0, job_id, attempt);
}

static int busy(sdc_rt_t *rt, void *state)
{
    (void)rt;
    return ((const refiner_t *)state)->queue.n > 0;
}

static double load(void *state)
{
    const refiner_t *r = state;
    return (double)(r->queue.n + r->running);
}

static int peers(sdc_rt_t *rt, void *state, int *nodes, int cap)
{
    (void)rt;
    (void)state;
    (void)nodes;
    (void)cap;
    return 0;
}

static sdc_status_t open_refiner(sdc_rt_t *rt, void **state, sdc_error_t *err)
{
    refiner_t *r = calloc(1, sizeof(*r));
    if (!r)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    *state = r;
    sdc_status_t st = sdc_refiner_open(&r->rf, rt->be, rt->cf->refiner_model, err);
    if (st != SDC_OK)
        return sdc_error_wrap(err, "refiner_model");
    char te_config[4096];
    snprintf(te_config, sizeof(te_config), "%s/text_encoder/config.json", rt->cf->refiner_model);
    if (access(te_config, F_OK) == 0) {
        if ((st = sdc_refiner_text_open(rt->be, rt->cf->refiner_model, &r->te, err)) != SDC_OK)
            return sdc_error_wrap(err, "refiner_model text encoder");
    }
    SDC_INFO("%s: refiner %s loaded (%s)", rt->id, rt->cf->refiner_model,
             r->te ? "with its text encoder" : "no text encoder: jobs bring refiner_embeds");
    return SDC_OK;
}

static void close_refiner(sdc_rt_t *rt, void *state)
{
    (void)rt;
    refiner_t *r = state;
    sdc_rt_queue_free(&r->queue);
    sdc_text_encoder_free(r->te);
    sdc_refiner_free(r->rf);
    free(r);
}

const sdc_role_ops_t sdc_role_refiner = {
    .role = SDC_ROLE_REFINER,
    .open = open_refiner,
    .close = close_refiner,
    .peers = peers,
    .job_state = job_state,
    .on_message = on_message,
    .work = work,
    .busy = busy,
    .load = load,
};
