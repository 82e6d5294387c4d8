/*
 * role_vae.c: the VAE node. It takes a job's final latent from the last DiT
 * stage, decodes it as sdc_pipeline_decode does (divide by the scaling
 * factor, decode, RGB8), encodes the PNG and completes the job in Redis
 * (result, state done, stream entry acked: once, whoever tries again). The
 * coordinator then hears JobDone.
 *
 * A refine job (its final latent carries the job's parameters) is not
 * completed here: its RGB8 image goes on to a refiner node (round robin
 * over the reachable ones) after decoding -> refining in Redis. The image,
 * not the latent, travels: the refiner starts from the decoded 8-bit
 * image exactly as sdc-generate --refiner does, and the refiner node needs
 * no base VAE.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/model_parts.h"
#include "cluster/rt_internal.h"
#include "common/log.h"
#include "common/png.h"
#include "common/timer.h"

typedef struct {
    sdc_pipeline_t *pipe; /* the VAE decoder only */
    int refiner[SDC_CF_MAX_NODES];
    int n_refiner, refiner_rr;
    sdc_rt_queue_t queue;
    sdc_rt_retired_t done;
} vae_t;

/* A one-sample message with the decoded image of a refine job, its sample
 * as the final latent's (grid, steps, parameters). */
static sdc_status_t send_image(sdc_rt_t *rt, const Sdc__Sample *from, const uint8_t *rgb,
                               int node, sdc_error_t *err)
{
    sdc_rt_tb_t tb;
    uint8_t *payload;
    const int64_t f = rt->vc.spatial_compression_ratio;
    sdc_status_t s = sdc_rt_tb_init(&tb, 1, 1, err);
    if (s != SDC_OK)
        return s;
    tb.h.job_id = from->job_id;
    tb.h.attempt = from->attempt;
    tb.h.step = from->step;
    Sdc__Sample *smp = sdc_rt_tb_sample(&tb);
    smp->job_id = from->job_id;
    smp->attempt = from->attempt;
    smp->step = from->step;
    smp->steps = from->steps;
    smp->pass = SDC__PASS__PASS_COND;
    smp->grid_h = from->grid_h;
    smp->grid_w = from->grid_w;
    smp->n_img = from->n_img;
    smp->params_json = from->params_json;
    const int64_t shape[3] = {(int64_t)from->grid_h * f, (int64_t)from->grid_w * f, 3};
    sdc_rt_tb_tensor(&tb, 0, "image", SDC__DTYPE__DTYPE_U8, 3, shape);
    s = sdc_rt_tb_layout(&tb, &payload, err);
    if (s == SDC_OK) {
        memcpy(payload + tb.descs[0].offset, rgb, tb.descs[0].nbytes);
        s = sdc_rt_tb_send(rt, &tb, node, payload, err);
    }
    sdc_rt_tb_free(&tb);
    return s;
}

/* decoding -> refining, then the image to a refiner node. */
static void route_to_refiner(sdc_rt_t *rt, vae_t *v, const Sdc__Sample *s, const uint8_t *rgb)
{
    sdc_error_t err = {0};
    sdc_job_outcome_t outcome;
    sdc_status_t st = sdc_job_advance(&rt->q, s->job_id, s->attempt, SDC_JOB_REFINING,
                                      s->steps, &outcome, &err);
    if (st != SDC_OK && st != SDC_ERR_IO) {
        SDC_WARN("%s: job %s attempt %u: %s; dropping it", rt->id, s->job_id, s->attempt,
                 err.msg);
        return;
    }
    if (st == SDC_ERR_IO)
        SDC_WARN("%s: job %s: recording refining: %s", rt->id, s->job_id, err.msg);
    st = SDC_ERR_NOT_FOUND;
    int node = -1;
    for (int k = 0; k < v->n_refiner && st != SDC_OK; k++) {
        node = v->refiner[(v->refiner_rr + k) % v->n_refiner];
        st = send_image(rt, s, rgb, node, &err);
        if (st == SDC_OK)
            v->refiner_rr = (v->refiner_rr + k + 1) % v->n_refiner;
    }
    if (st != SDC_OK) {
        sdc_rt_job_lost(rt, s->job_id, s->attempt,
                        err.msg[0] ? err.msg : "the cluster file names no refiner node");
        return;
    }
    char to[SDC_JOB_ID_MAX + 1];
    sdc_rt_node_id(rt->cf, node, to);
    SDC_INFO("%s: job %s decoded, refining on %s", rt->id, s->job_id, to);
}

/* A refine job: its final latent carries its parameters (a plain job's does
 * not). Unparsable parameters fail the job (*bad = 1). */
static int wants_refiner(sdc_rt_t *rt, const Sdc__Sample *s, int *bad)
{
    sdc_job_params_t p;
    sdc_error_t err = {0};
    *bad = 0;
    if (!s->params_json || !s->params_json[0])
        return 0;
    if (sdc_job_params_parse(&p, s->params_json, strlen(s->params_json), &err) != SDC_OK) {
        sdc_rt_job_fail(rt, s->job_id, s->attempt, err.code, err.msg);
        *bad = 1;
        return 0;
    }
    int refine = p.refine;
    sdc_job_params_free(&p);
    return refine;
}

static void decode(sdc_rt_t *rt, vae_t *v, const sdc_rt_msg_t *m)
{
    const Sdc__Sample *s = m->w.env->tensor->samples[0];
    const Sdc__TensorDesc *t = sdc_wire_find_tensor(m->w.env->tensor, 0, "latent");
    sdc_error_t err = {0};
    uint8_t *rgb = NULL, *png = NULL;
    size_t png_len = 0;
    double t0 = sdc_now();
    const int64_t f = rt->vc.spatial_compression_ratio;
    sdc_rt_retire(&v->done, s->job_id, s->attempt);
    int bad, refine = wants_refiner(rt, s, &bad);
    if (bad)
        return;
    sdc_status_t st = sdc_pipeline_decode(v->pipe, sdc_rt_tensor_data(m, t), s->grid_h,
                                          s->grid_w, &rgb, NULL, &err);
    if (st == SDC_OK && refine) {
        route_to_refiner(rt, v, s, rgb);
        goto out;
    }
    if (st == SDC_OK)
        st = sdc_png_encode(rgb, (int)(s->grid_w * f), (int)(s->grid_h * f), &png, &png_len,
                            &err);
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
    SDC_INFO("%s: job %s done (%lldx%lld, decode %.3f s)", rt->id, s->job_id,
             (long long)(s->grid_w * f), (long long)(s->grid_h * f), sdc_now() - t0);
    sdc_rt_job_done(rt, s->job_id, s->attempt);
out:
    free(rgb);
    free(png);
}

static void on_message(sdc_rt_t *rt, void *state, sdc_rt_msg_t *m)
{
    vae_t *v = state;
    const Sdc__TensorHeader *h = m->w.type == SDC_WIRE_TENSOR ? m->w.env->tensor : NULL;
    if (!h || h->n_samples != 1 || !sdc_wire_find_tensor(h, 0, "latent")) {
        sdc_rt_drop(rt, m, "a VAE node takes one job's final latent");
        sdc_rt_msg_free(m);
        return;
    }
    const Sdc__Sample *s = h->samples[0];
    if (s->step + 1 != s->steps) {
        sdc_rt_drop(rt, m, "latent of job %s at step %u of %u is not final", s->job_id,
                    s->step, s->steps);
        sdc_rt_msg_free(m);
        return;
    }
    /* The coordinator requeues a decoding job nobody holds when the last
     * stage that sent it dies; this one is held here. */
    sdc_error_t err = {0};
    int stored;
    if (sdc_job_set_holder(&rt->q, s->job_id, s->attempt, SDC_JOB_DECODING, rt->id, &stored,
                           &err) != SDC_OK)
        SDC_WARN("%s: job %s: %s", rt->id, s->job_id, err.msg);
    sdc_rt_queue_push(&v->queue, m);
}

static int work(sdc_rt_t *rt, void *state)
{
    vae_t *v = state;
    sdc_rt_msg_t *m = sdc_rt_queue_pop(&v->queue);
    if (!m)
        return 0;
    const Sdc__Sample *s = m->w.env->tensor->samples[0];
    if (sdc_rt_retired_attempt(&v->done, s->job_id) >= s->attempt)
        sdc_rt_drop(rt, m, "job %s attempt %u was decoded already", s->job_id, s->attempt);
    else
        decode(rt, v, m);
    sdc_rt_msg_free(m);
    return 1;
}

static sdc_wire_job_state_t job_state(void *state, const char *job_id, uint32_t attempt)
{
    const vae_t *v = state;
    return sdc_rt_learned_state(&v->done, 0, job_id, attempt);
}

static int busy(sdc_rt_t *rt, void *state)
{
    (void)rt;
    return ((const vae_t *)state)->queue.n > 0;
}

static double load(void *state)
{
    return (double)((const vae_t *)state)->queue.n;
}

static int peers(sdc_rt_t *rt, void *state, int *nodes, int cap)
{
    (void)rt;
    (void)state;
    (void)nodes;
    (void)cap;
    return 0;
}

static sdc_status_t open_vae(sdc_rt_t *rt, void **state, sdc_error_t *err)
{
    vae_t *v = calloc(1, sizeof(*v));
    if (!v)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    *state = v;
    for (int i = 0; i < rt->cf->n_nodes; i++)
        if (rt->cf->nodes[i].role == SDC_ROLE_REFINER)
            v->refiner[v->n_refiner++] = i;
    return sdc_parts_open(&v->pipe, rt->be, rt->cf->model, SDC_PARTS_VAE, 0, 0, err);
}

static void close_vae(sdc_rt_t *rt, void *state)
{
    (void)rt;
    vae_t *v = state;
    sdc_rt_queue_free(&v->queue);
    sdc_pipeline_free(v->pipe);
    free(v);
}

const sdc_role_ops_t sdc_role_vae = {
    .role = SDC_ROLE_VAE,
    .open = open_vae,
    .close = close_vae,
    .peers = peers,
    .job_state = job_state,
    .on_message = on_message,
    .work = work,
    .busy = busy,
    .load = load,
};
