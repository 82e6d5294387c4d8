/*
 * role_vae.c: the VAE node. It takes a job's final latent from the last DiT
 * stage, decodes it as sdc_pipeline_decode does (divide by the scaling
 * factor, decode, RGB8), encodes the PNG and completes the job in Redis
 * (result, state done, stream entry acked: once, whoever tries again). The
 * coordinator then hears JobDone.
 *
 * Not here: refinement (the refiner role will take the decoded image).
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
    sdc_rt_msg_t *q_head, *q_tail;
    sdc_rt_retired_t done;
    int n_queued;
} vae_t;

static void tell_done(sdc_rt_t *rt, const char *job_id, uint32_t attempt)
{
    char key[SDC_REDIS_KEY_MAX];
    sdc_error_t err = {0};
    if (sdc_redis_key(rt->redis, key, sizeof(key), &err, "result:%s", job_id) != SDC_OK)
        snprintf(key, sizeof(key), "result:%s", job_id);
    Sdc__Envelope env;
    Sdc__JobDone jd;
    sdc_wire_envelope_init(&env, rt->id);
    sdc__job_done__init(&jd);
    jd.job_id = (char *)job_id;
    jd.attempt = attempt;
    jd.result_key = key;
    env.msg_case = SDC__ENVELOPE__MSG_JOB_DONE;
    env.job_done = &jd;
    sdc_rt_tell_leader(rt, &env);
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
    sdc_status_t st = sdc_pipeline_decode(v->pipe, sdc_rt_tensor_data(m, t), s->grid_h,
                                          s->grid_w, &rgb, NULL, &err);
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
    tell_done(rt, s->job_id, s->attempt);
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
    m->next = NULL;
    if (v->q_tail)
        v->q_tail->next = m;
    else
        v->q_head = m;
    v->q_tail = m;
    v->n_queued++;
}

static int work(sdc_rt_t *rt, void *state)
{
    vae_t *v = state;
    sdc_rt_msg_t *m = v->q_head;
    if (!m)
        return 0;
    v->q_head = m->next;
    if (!v->q_head)
        v->q_tail = NULL;
    v->n_queued--;
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

static void tick(sdc_rt_t *rt, void *state, double now)
{
    (void)rt;
    (void)state;
    (void)now;
}

static int busy(sdc_rt_t *rt, void *state)
{
    (void)rt;
    return ((const vae_t *)state)->q_head != NULL;
}

static double load(void *state)
{
    return (double)((const vae_t *)state)->n_queued;
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
    return sdc_parts_open(&v->pipe, rt->be, rt->cf->model, SDC_PARTS_VAE, 0, 0, err);
}

static void close_vae(sdc_rt_t *rt, void *state)
{
    (void)rt;
    vae_t *v = state;
    sdc_rt_msg_list_free(&v->q_head);
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
    .tick = tick,
    .busy = busy,
    .load = load,
};
