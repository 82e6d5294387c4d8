/*
 * role_stage.c: a DiT stage, one link of a pipeline's ring. Every stage runs
 * its block range on micro-batches of samples (one sample = one job, one
 * guidance pass, one step), one sample at a time through the engine, so a
 * sample's bits never depend on its neighbours or on the split.
 *
 *   stage 0     keeps each job's text conditioning and a copy of its
 *               denoising state (schedule, guider choice, current latent);
 *               per step it queues the 1 or 2 passes sdc_denoise_passes asks
 *               for, embeds them (sdc_denoise_dit_input + sdc_dit_embed) and
 *               runs its blocks on up to micro_batch queued samples (FIFO).
 *   middle      runs its blocks on each arriving micro-batch and forwards it.
 *   last stage  runs its blocks and the head, and holds each job's
 *               authoritative sdc_denoise_t (created on the job's first
 *               sample from its parameters: the same Philox noise as stage
 *               0). When a step's passes are in it calls sdc_denoise_update
 *               and sends the new latent back to stage 0 (one ring lap per
 *               step) or, after the last step, to a VAE node.
 * With one stage, stage 0 is the last stage and the lap is a function call.
 *
 * Image-to-image: stage 0 fetches the job's input image from Redis, checks
 * it against the parameters and encodes it (the VAE encoder, loaded on
 * first use) exactly as sdc-generate --init-image does; the encoding
 * travels with the job's step-0 samples ("image_latents") through the ring
 * to the last stage, so both ends start from the same noised latent and the
 * same strength-truncated schedule without encoding twice.
 *
 * With --synthetic-ms MS (benchmarks) a stage sleeps MS per sample instead
 * of running its blocks, driving UCX meanwhile; activations pass through
 * unchanged and the last stage takes a zero velocity instead of the head's
 * prediction. Everything else (jobs, steps, messages) is as without it.
 *
 * Not here: text encoding, decoding, scheduling of jobs onto pipelines.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/checkpoint.h"
#include "cluster/model_parts.h"
#include "cluster/rt_internal.h"
#include "common/log.h"
#include "common/timer.h"
#include "model/embeds.h"
#include "model/img2img.h"

#define STAGE_CHECK_S 2.0    /* how often held jobs are checked against Redis */
#define STAGE_SAMPLE_HDR 320 /* header bytes a sample costs at most, params aside */
#define STAGE_TENSOR_HDR 64  /* header bytes of one more tensor of a sample */
#define STAGE_SYNTH_SLICE_S 0.0002 /* --synthetic-ms: sleep slice between UCX progress */

enum { PASS_COND = 0, PASS_UNCOND = 1 };

typedef struct {
    char id[SDC_JOB_ID_MAX + 1];
    uint32_t attempt;
    sdc_job_params_t params;
    char *params_json;
    int glyph;
    sdc_pipeline_t pipe;   /* the stage's model with this job's guidance */
    sdc_gen_params_t gp;
    sdc_denoise_t d;
    int has_d;
    int first_step;        /* the step this attempt started at: its samples
                              carry the parameters (a resumed job starts > 0) */
    sdc_embeds_t text;     /* stage 0 */
    float *image_latents;  /* stage 0 of several: the encoded input image, for step 0 */
    int queued;            /* stage 0: samples waiting to be embedded */
    float *pred[2];        /* last stage: this step's predictions */
    unsigned got;          /* bits of pred[] filled at this step */
    int dead;              /* finished or failed here: removed by sweep() */
    double touched, checked;
    double stepped;        /* last stage: when the previous step was recorded */
} stage_job_t;

typedef struct {
    stage_job_t *job;
    int pass;
} stage_task_t;

/* One sample of the micro-batch being computed, with what goes on the wire. */
typedef struct {
    Sdc__Sample meta;
    char job_id[SDC_JOB_ID_MAX + 1];
    const float *image_latents; /* step 0 of an image-to-image job, else NULL */
} stage_item_t;

typedef struct {
    sdc_pipeline_t *pipe;
    sdc_dit_t *dit;
    int pipeline, stage, n_stages, begin, end, first, last;
    int next_node, first_node;
    int vae[SDC_CF_MAX_NODES];
    int n_vae, vae_rr;
    int micro_batch, max_items;
    int64_t patch;
    stage_job_t **jobs;
    int n_jobs, cap_jobs;
    stage_task_t *tasks;
    int n_tasks, cap_tasks;
    sdc_rt_queue_t queue;
    stage_item_t *items;
    sdc_dit_sample_t *samples;
    uint8_t *mask;
    size_t mask_cap;
    double next_check;
    sdc_rt_retired_t retired;
} stage_t;

/* ---- jobs ------------------------------------------------------------------- */

static stage_job_t *find_job(const stage_t *st, const char *id)
{
    for (int i = 0; i < st->n_jobs; i++)
        if (strcmp(st->jobs[i]->id, id) == 0)
            return st->jobs[i];
    return NULL;
}

static void job_free(stage_job_t *j)
{
    if (j->has_d)
        sdc_denoise_free(&j->d);
    sdc_embeds_free(&j->text);
    free(j->image_latents);
    sdc_job_params_free(&j->params);
    free(j->params_json);
    free(j->pred[0]);
    free(j->pred[1]);
    free(j);
}

/* Removes dead jobs and their queued samples. */
static void sweep(stage_t *st)
{
    int w = 0;
    for (int i = 0; i < st->n_tasks; i++)
        if (!st->tasks[i].job->dead)
            st->tasks[w++] = st->tasks[i];
    st->n_tasks = w;
    w = 0;
    for (int i = 0; i < st->n_jobs; i++) {
        stage_job_t *j = st->jobs[i];
        if (!j->dead) {
            st->jobs[w++] = j;
            continue;
        }
        sdc_rt_retire(&st->retired, j->id, j->attempt);
        job_free(j);
    }
    st->n_jobs = w;
}

static void fail_job(sdc_rt_t *rt, stage_job_t *j, sdc_status_t code, const char *reason)
{
    if (j->dead)
        return;
    sdc_rt_job_fail(rt, j->id, j->attempt, code, reason);
    j->dead = 1;
}

static sdc_status_t add_job(stage_t *st, stage_job_t *j, sdc_error_t *err)
{
    if (st->n_jobs == st->cap_jobs) {
        int cap = st->cap_jobs ? 2 * st->cap_jobs : 16;
        stage_job_t **g = realloc(st->jobs, (size_t)cap * sizeof(*g));
        if (!g)
            return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        st->jobs = g;
        st->cap_jobs = cap;
    }
    st->jobs[st->n_jobs++] = j;
    return SDC_OK;
}

/* The denoising state of an image-to-image job, as
 * sdc_pipeline_generate_img2img sets it up: stage 0 encodes the input
 * image, the last stage of several takes that encoding from the job's first
 * sample (il: il_bytes of float32, NULL when the sample had none). */
static sdc_status_t job_init_img2img(sdc_rt_t *rt, stage_t *st, stage_job_t *j,
                                     const float *il, size_t il_bytes, sdc_error_t *err)
{
    const int64_t f = rt->vc.spatial_compression_ratio;
    const size_t n = (size_t)(rt->dc.in_channels * (j->params.height / f) *
                              (j->params.width / f));
    float *own = NULL;
    uint8_t *rgb = NULL;
    sdc_status_t s = SDC_OK;
    if (rt->vc.latent_channels != rt->dc.in_channels)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "image-to-image: the VAE has %lld latent channels, the transformer "
                             "takes %lld", (long long)rt->vc.latent_channels,
                             (long long)rt->dc.in_channels);
    if (st->first) {
        if (!(own = malloc(n * sizeof(float))))
            return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory for the image latents");
        s = sdc_job_image_load(&rt->q, &j->params, &rgb, err);
        if (s == SDC_OK) {
            sdc_init_image_t init = {rgb, j->params.width, j->params.height,
                                     j->params.strength};
            s = sdc_img2img_encode(&j->pipe, &j->gp, &init, own, err);
        }
        il = own;
    } else if (!il || il_bytes != n * sizeof(float)) {
        s = sdc_error_set(err, SDC_ERR_FORMAT, "the first sample of image-to-image job %s "
                          "carries %s", j->id, il ? "'image_latents' of the wrong size"
                                                  : "no 'image_latents'");
    }
    if (s == SDC_OK)
        s = sdc_denoise_init_img2img(&j->d, &j->pipe, &j->gp, j->glyph, il, j->params.strength,
                                     NULL, err);
    j->has_d = s == SDC_OK;
    if (s == SDC_OK && st->first && !st->last) {
        j->image_latents = own;
        own = NULL;
    }
    free(own);
    free(rgb);
    return s;
}

/* A job record from its parameters (s: the job's first sample; il: its
 * image latents, see job_init_img2img). At the ends of the ring it holds
 * the engine state exactly as sdc_pipeline_generate sets it up (same
 * noise, schedule and guider); a middle stage only remembers the job, to
 * tell its samples from strays. */
static sdc_status_t job_create(sdc_rt_t *rt, stage_t *st, const Sdc__Sample *s0,
                               const char *params_json, int glyph, const float *il,
                               size_t il_bytes, stage_job_t **out, sdc_error_t *err)
{
    const char *id = s0->job_id;
    uint32_t attempt = s0->attempt;
    stage_job_t *j = calloc(1, sizeof(*j));
    if (!j)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    sdc_job_params_init(&j->params);
    snprintf(j->id, sizeof(j->id), "%s", id);
    j->attempt = attempt;
    j->glyph = glyph;
    j->touched = j->checked = sdc_now();
    sdc_status_t s = sdc_job_params_parse(&j->params, params_json, strlen(params_json), err);
    if (s == SDC_OK && strcmp(j->params.id, id) != 0)
        s = sdc_error_set(err, SDC_ERR_INVALID_ARG, "parameters of job %s name job %s", id,
                          j->params.id);
    if (s == SDC_OK && !(j->params_json = strdup(params_json)))
        s = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    if (s == SDC_OK && (st->first || st->last)) {
        sdc_parts_job(st->pipe, &rt->dc, &j->params, &j->pipe, &j->gp);
        if (j->params.image_bytes) {
            s = job_init_img2img(rt, st, j, il, il_bytes, err);
        } else {
            s = sdc_denoise_init(&j->d, &j->pipe, &j->gp, glyph, NULL, err);
            j->has_d = s == SDC_OK;
        }
    } else if (s == SDC_OK) {
        j->d.h = s0->grid_h;
        j->d.w = s0->grid_w;
        j->d.n_steps = (int)s0->steps;
    }
    if (s == SDC_OK && st->last) {
        size_t n = (size_t)(j->d.channels * j->d.h * j->d.w);
        j->pred[0] = malloc(n * sizeof(float));
        j->pred[1] = malloc(n * sizeof(float));
        if (!j->pred[0] || !j->pred[1])
            s = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory for predictions");
    }
    if (s == SDC_OK)
        s = add_job(st, j, err);
    if (s != SDC_OK) {
        job_free(j);
        return s;
    }
    *out = j;
    return SDC_OK;
}

/* A requeued job resumes from its checkpoint (checkpoint.h). Stage 0
 * decides: it restores the checkpoint when there is a usable one (want <
 * 0) and runs the attempt from its step. The last stage restores the same
 * checkpoint when the job's first sample arrives past step 0 and must find
 * that step there (want). */
static sdc_status_t resume(sdc_rt_t *rt, stage_job_t *j, int want, sdc_error_t *err)
{
    uint8_t *blob = NULL;
    size_t len = 0;
    sdc_status_t s = sdc_ckpt_get(rt->redis, j->id, &blob, &len, err);
    if (s == SDC_OK)
        s = sdc_ckpt_decode(blob, len, sdc_ckpt_params_crc(j->params_json), &j->d, err);
    free(blob);
    if (s == SDC_OK && want >= 0 && j->d.step != want)
        s = sdc_error_set(err, SDC_ERR_FORMAT,
                          "its checkpoint is at step %d, its samples at step %d", j->d.step, want);
    if (s != SDC_OK)
        return s;
    j->first_step = j->d.step;
    SDC_INFO("%s: job %s attempt %u resumes at step %d of %d", rt->id, j->id, j->attempt,
             j->d.step, j->d.n_steps);
    return SDC_OK;
}

/* Last stage, every --checkpoint-every steps: the job's state to Redis.
 * Best effort: a failed write only means a later resume starts earlier. */
static void checkpoint(sdc_rt_t *rt, stage_job_t *j)
{
    sdc_error_t err = {0};
    uint8_t *blob = NULL;
    size_t len = 0;
    int stored = 0;
    sdc_status_t s = sdc_ckpt_encode(&j->d, sdc_ckpt_params_crc(j->params_json), &blob, &len,
                                     &err);
    if (s == SDC_OK)
        s = sdc_ckpt_put(rt->redis, j->id, j->attempt, blob, len, &stored, &err);
    free(blob);
    if (s != SDC_OK)
        SDC_WARN("%s: job %s: checkpoint at step %d: %s", rt->id, j->id, j->d.step, err.msg);
    else
        SDC_DEBUG("%s: job %s attempt %u: checkpoint at step %d (%zu bytes)%s", rt->id, j->id,
                  j->attempt, j->d.step, len, stored ? "" : " refused: the job moved on");
}

/* Grid of a wire sample (latent pixels) against the job's latent. */
static int grid_matches(const stage_job_t *j, const Sdc__Sample *s)
{
    return s->grid_h == (uint32_t)j->d.h && s->grid_w == (uint32_t)j->d.w &&
           s->steps == (uint32_t)j->d.n_steps;
}

/* ---- stage 0: the task queue ------------------------------------------------- */

static int push_task(stage_t *st, stage_job_t *j, int pass)
{
    if (st->n_tasks == st->cap_tasks) {
        int cap = st->cap_tasks ? 2 * st->cap_tasks : 32;
        stage_task_t *g = realloc(st->tasks, (size_t)cap * sizeof(*g));
        if (!g)
            return -1;
        st->tasks = g;
        st->cap_tasks = cap;
    }
    st->tasks[st->n_tasks++] = (stage_task_t){j, pass};
    j->queued++;
    return 0;
}

/* Queues the passes of j's current step. */
static void push_step(sdc_rt_t *rt, stage_t *st, stage_job_t *j)
{
    int passes = sdc_denoise_passes(&j->d);
    if (passes > 1 && !j->text.has_neg) {
        fail_job(rt, j, SDC_ERR_INVALID_ARG,
                 "the model's guider needs negative (unconditional) embeddings");
        return;
    }
    if (push_task(st, j, PASS_COND) || (passes > 1 && push_task(st, j, PASS_UNCOND)))
        fail_job(rt, j, SDC_ERR_NOMEM, "out of memory queueing a step");
}

/* ---- stage 0: messages in ---------------------------------------------------- */

static sdc_status_t copy_part(const sdc_rt_msg_t *m, const Sdc__TensorHeader *h, uint32_t i,
                              const char *emb_name, const char *mask_name, float **emb,
                              uint8_t **mask, int64_t *n, int64_t *dim, sdc_error_t *err)
{
    const Sdc__TensorDesc *e = sdc_wire_find_tensor(h, i, emb_name);
    const Sdc__TensorDesc *k = sdc_wire_find_tensor(h, i, mask_name);
    if (!e && !k)
        return SDC_OK;
    if (!e || !k)
        return sdc_error_set(err, SDC_ERR_FORMAT, "sample %u has '%s' without '%s'", i,
                             e ? emb_name : mask_name, e ? mask_name : emb_name);
    *n = e->shape[0];
    *dim = e->shape[1];
    *emb = malloc(e->nbytes);
    *mask = malloc((size_t)*n);
    if (!*emb || !*mask)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory for text embeddings");
    memcpy(*emb, sdc_rt_tensor_data(m, e), e->nbytes);
    return sdc_rt_mask_copy(m, k, *mask, err);
}

/* The text message's embeddings as an sdc_embeds_t (cond: pos, uncond: neg). */
static sdc_status_t read_text(const sdc_rt_msg_t *m, sdc_embeds_t *t, sdc_error_t *err)
{
    const Sdc__TensorHeader *h = m->w.env->tensor;
    memset(t, 0, sizeof(*t));
    for (uint32_t i = 0; i < h->n_samples; i++) {
        int uncond = h->samples[i]->pass == SDC__PASS__PASS_UNCOND;
        sdc_embeds_part_t *p = uncond ? &t->neg : &t->pos;
        t->has_neg |= uncond;
        sdc_status_t s = copy_part(m, h, i, "prompt_embeds", "prompt_embeds_mask", &p->embeds,
                                   &p->mask, &p->n, &p->dim, err);
        if (s == SDC_OK)
            s = copy_part(m, h, i, "prompt_embeds_2", "prompt_embeds_mask_2", &p->embeds_2,
                          &p->mask_2, &p->n_2, &p->dim_2, err);
        if (s == SDC_OK && !p->embeds)
            s = sdc_error_set(err, SDC_ERR_FORMAT, "sample %u has no 'prompt_embeds'", i);
        if (s != SDC_OK)
            return s;
    }
    if (!t->pos.embeds)
        return sdc_error_set(err, SDC_ERR_FORMAT, "no conditional sample");
    return SDC_OK;
}

static void on_text(sdc_rt_t *rt, stage_t *st, sdc_rt_msg_t *m)
{
    const Sdc__TensorHeader *h = m->w.env->tensor;
    sdc_error_t err = {0};
    const Sdc__Sample *s0 = h->samples[0];
    if (!h->job_id[0] || h->n_samples > 2 || s0->step != 0 || !s0->params_json[0]) {
        sdc_rt_drop(rt, m, "text message must be one job's step 0 with its parameters");
        return;
    }
    stage_job_t *old = find_job(st, h->job_id);
    if (old && old->attempt >= h->attempt) {
        sdc_rt_drop(rt, m, "job %s attempt %u is already here", h->job_id, h->attempt);
        return;
    }
    if (old) {
        SDC_INFO("%s: job %s attempt %u replaces attempt %u", rt->id, h->job_id, h->attempt,
                 old->attempt);
        old->dead = 1;
        sweep(st);
    }
    sdc_embeds_t text;
    sdc_status_t s = read_text(m, &text, &err);
    if (s != SDC_OK) {
        sdc_embeds_free(&text);
        sdc_rt_drop(rt, m, "%s", err.msg);
        return;
    }
    sdc_text_cond_t pos;
    sdc_embeds_cond(&text.pos, &pos);
    int glyph = sdc_text_cond_has_glyph(&pos, rt->dc.text_embed_2_dim);
    stage_job_t *j;
    s = job_create(rt, st, s0, s0->params_json, glyph, NULL, 0, &j, &err);
    if (s != SDC_OK) {
        sdc_embeds_free(&text);
        /* Redis out of reach while fetching an input image is not the job's fault. */
        if (s == SDC_ERR_IO)
            sdc_rt_job_lost(rt, h->job_id, h->attempt, err.msg);
        else
            sdc_rt_job_fail(rt, h->job_id, h->attempt, s, err.msg);
        return;
    }
    j->text = text;
    if (!grid_matches(j, s0)) {
        fail_job(rt, j, SDC_ERR_SHAPE, "text message grid or steps disagree with the parameters");
        return;
    }
    if (j->attempt > 1 && resume(rt, j, -1, &err) != SDC_OK && err.code != SDC_ERR_NOT_FOUND)
        SDC_WARN("%s: job %s attempt %u starts at step 0: %s", rt->id, j->id, j->attempt,
                 err.msg);
    SDC_DEBUG("%s: job %s attempt %u: %dx%d, %d steps", rt->id, j->id, j->attempt, j->gp.width,
              j->gp.height, j->gp.steps);
    push_step(rt, st, j);
}

static void on_latent(sdc_rt_t *rt, stage_t *st, sdc_rt_msg_t *m)
{
    const Sdc__TensorHeader *h = m->w.env->tensor;
    const Sdc__Sample *s = h->samples[0];
    stage_job_t *j = find_job(st, s->job_id);
    if (!j || j->attempt != s->attempt || j->dead) {
        sdc_rt_drop(rt, m, "latent for unknown job %s attempt %u", s->job_id, s->attempt);
        return;
    }
    if (h->n_samples != 1 || s->step != (uint32_t)j->d.step + 1 || !grid_matches(j, s) ||
        j->queued) {
        sdc_rt_drop(rt, m, "latent for job %s step %u, expected step %d", s->job_id, s->step,
                    j->d.step + 1);
        return;
    }
    const Sdc__TensorDesc *t = sdc_wire_find_tensor(h, 0, "latent");
    if (!t) {
        sdc_rt_drop(rt, m, "latent message without a 'latent' tensor");
        return;
    }
    memcpy(j->d.latent, sdc_rt_tensor_data(m, t), t->nbytes);
    j->d.step = (int)s->step;
    j->touched = sdc_now();
    push_step(rt, st, j);
}

/* ---- messages ---------------------------------------------------------------- */

static void on_message(sdc_rt_t *rt, void *state, sdc_rt_msg_t *m)
{
    stage_t *st = state;
    if (m->w.type != SDC_WIRE_TENSOR) {
        sdc_rt_drop(rt, m, "a DiT stage takes only tensor messages");
        sdc_rt_msg_free(m);
        return;
    }
    const char *kind = m->w.env->tensor->tensors[0]->name;
    if (st->first && strcmp(kind, "prompt_embeds") == 0) {
        on_text(rt, st, m);
    } else if (st->first && !st->last && strcmp(kind, "latent") == 0) {
        on_latent(rt, st, m);
    } else if (!st->first && strcmp(kind, "hidden") == 0) {
        sdc_rt_queue_push(&st->queue, m);
        return;
    } else {
        sdc_rt_drop(rt, m, "stage %d of pipeline %d does not take '%s' tensors", st->stage,
                    st->pipeline, kind);
    }
    sdc_rt_msg_free(m);
}

static sdc_wire_job_state_t job_state(void *state, const char *job_id, uint32_t attempt)
{
    const stage_t *st = state;
    const stage_job_t *j = find_job(st, job_id);
    return sdc_rt_learned_state(&st->retired, j ? j->attempt : 0, job_id, attempt);
}

/* ---- the ring ---------------------------------------------------------------- */

/* A one-sample latent message (to stage 0, or to a VAE after the last step). */
static sdc_status_t send_latent(sdc_rt_t *rt, const stage_job_t *j, int node, uint32_t step,
                                sdc_error_t *err)
{
    sdc_rt_tb_t tb;
    uint8_t *payload;
    sdc_status_t s = sdc_rt_tb_init(&tb, 1, 1, err);
    if (s != SDC_OK)
        return s;
    tb.h.job_id = (char *)j->id;
    tb.h.attempt = j->attempt;
    tb.h.step = step;
    Sdc__Sample *smp = sdc_rt_tb_sample(&tb);
    smp->job_id = (char *)j->id;
    smp->attempt = j->attempt;
    smp->step = step;
    smp->steps = (uint32_t)j->d.n_steps;
    smp->pass = SDC__PASS__PASS_COND;
    smp->grid_h = (uint32_t)j->d.h;
    smp->grid_w = (uint32_t)j->d.w;
    smp->n_img = (uint32_t)((j->d.h / rt->dc.patch_size[0]) * (j->d.w / rt->dc.patch_size[1]));
    /* The VAE node routes a refine job's image on to a refiner, which needs
     * the job's parameters. */
    if (j->params.refine && step + 1 == (uint32_t)j->d.n_steps)
        smp->params_json = j->params_json;
    const int64_t shape[3] = {j->d.channels, j->d.h, j->d.w};
    sdc_rt_tb_tensor(&tb, 0, "latent", SDC__DTYPE__DTYPE_F32, 3, shape);
    s = sdc_rt_tb_layout(&tb, &payload, err);
    if (s == SDC_OK) {
        memcpy(payload + tb.descs[0].offset, j->d.latent, tb.descs[0].nbytes);
        s = sdc_rt_tb_send(rt, &tb, node, payload, err);
    }
    sdc_rt_tb_free(&tb);
    return s;
}

/* Records j's progress in Redis; 0 when the job has moved on there (failed,
 * requeued as a new attempt): it is then dropped here. A Redis outage only
 * delays the record. */
static int advance(sdc_rt_t *rt, stage_job_t *j, sdc_job_state_t to)
{
    sdc_error_t err = {0};
    sdc_job_outcome_t outcome;
    sdc_status_t s = sdc_job_advance(&rt->q, j->id, j->attempt, to, j->d.step, &outcome, &err);
    double now = sdc_now();
    if (j->stepped > 0)
        sdc_hist_observe(&rt->metrics.hist[SDC_HIST_STEP], SDC_HIST_STEP, now - j->stepped);
    j->stepped = now;
    if (s == SDC_OK)
        return 1;
    if (s == SDC_ERR_IO) {
        SDC_WARN("%s: job %s: recording step %d: %s", rt->id, j->id, j->d.step, err.msg);
        return 1;
    }
    SDC_WARN("%s: job %s attempt %u: %s; dropping it", rt->id, j->id, j->attempt, err.msg);
    j->dead = 1;
    return 0;
}

/* The last step is done: the latent goes to a VAE node (round robin over
 * the reachable ones) and the coordinator learns the pipeline slot is free. */
static void finish_job(sdc_rt_t *rt, stage_t *st, stage_job_t *j)
{
    sdc_error_t err = {0};
    if (!advance(rt, j, SDC_JOB_DECODING))
        return;
    if ((rt->o.checkpoint_every > 0 || j->attempt > 1) &&
        sdc_ckpt_delete(rt->redis, j->id, &err) != SDC_OK)
        SDC_WARN("%s: job %s: deleting its checkpoint: %s", rt->id, j->id, err.msg);
    sdc_status_t s = SDC_ERR_NOT_FOUND;
    for (int k = 0; k < st->n_vae && s != SDC_OK; k++) {
        int node = st->vae[(st->vae_rr + k) % st->n_vae];
        s = send_latent(rt, j, node, (uint32_t)j->d.n_steps - 1, &err);
        if (s == SDC_OK)
            st->vae_rr = (st->vae_rr + k + 1) % st->n_vae;
    }
    if (s != SDC_OK)
        sdc_rt_job_lost(rt, j->id, j->attempt, err.msg[0] ? err.msg : "no VAE node");
    Sdc__Envelope env;
    Sdc__StepDone sd;
    sdc_wire_envelope_init(&env, rt->id);
    sdc__step_done__init(&sd);
    sd.job_id = j->id;
    sd.attempt = j->attempt;
    sd.step = (uint32_t)j->d.n_steps - 1;
    env.msg_case = SDC__ENVELOPE__MSG_STEP_DONE;
    env.step_done = &sd;
    sdc_rt_tell_leader(rt, &env);
    SDC_DEBUG("%s: job %s denoised (%d steps)", rt->id, j->id, j->d.n_steps);
    j->dead = 1;
}

/* Last stage: 1 when a sample for (step, pass) is what j waits for. */
static int accepts(const stage_job_t *j, uint32_t step, int pass)
{
    if (j->dead || step != (uint32_t)j->d.step || sdc_denoise_done(&j->d))
        return 0;
    int passes = sdc_denoise_passes(&j->d);
    return pass == PASS_COND || passes > 1;
}

/* Last stage: j's prediction for pass is in j->pred[pass]. */
static void deliver(sdc_rt_t *rt, stage_t *st, stage_job_t *j, int pass)
{
    sdc_error_t err = {0};
    int passes = sdc_denoise_passes(&j->d);
    unsigned need = passes > 1 ? 3u : 1u;
    j->got |= 1u << pass;
    j->touched = sdc_now();
    if (j->got != need)
        return;
    j->got = 0;
    sdc_status_t s = sdc_denoise_update(&j->d, j->pred[0], passes > 1 ? j->pred[1] : NULL, &err);
    if (s != SDC_OK) {
        fail_job(rt, j, s, err.msg);
        return;
    }
    if (!sdc_denoise_done(&j->d) && !advance(rt, j, SDC_JOB_DENOISING))
        return;
    if (!sdc_denoise_done(&j->d) && rt->o.checkpoint_every > 0 &&
        j->d.step % rt->o.checkpoint_every == 0)
        checkpoint(rt, j);
    if (sdc_denoise_done(&j->d))
        finish_job(rt, st, j);
    else if (st->first)
        push_step(rt, st, j);
    else if (send_latent(rt, j, st->first_node, (uint32_t)j->d.step, &err) != SDC_OK)
        sdc_rt_job_lost(rt, j->id, j->attempt, err.msg);
}

/* Rows of the sample's text that are padding: its mask is [1.., 0..]. */
static sdc_status_t text_padding(sdc_rt_t *rt, stage_t *st, const sdc_dit_sample_t *s,
                                 uint32_t *pad, sdc_error_t *err)
{
    *pad = 0;
    if (!s->txt_mask)
        return SDC_OK;
    if ((size_t)s->n_txt > st->mask_cap) {
        uint8_t *g = realloc(st->mask, (size_t)s->n_txt);
        if (!g)
            return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        st->mask = g;
        st->mask_cap = (size_t)s->n_txt;
    }
    rt->be->ops->download(rt->be, st->mask, s->txt_mask, (size_t)s->n_txt);
    rt->be->ops->sync(rt->be);
    int64_t valid = 0;
    while (valid < s->n_txt && st->mask[valid])
        valid++;
    for (int64_t i = valid; i < s->n_txt; i++)
        if (st->mask[i])
            return sdc_error_set(err, SDC_ERR_INTERNAL, "text mask is not valid rows first");
    *pad = (uint32_t)(s->n_txt - valid);
    return SDC_OK;
}

/* Sends the computed micro-batch to the next stage. */
static void forward(sdc_rt_t *rt, stage_t *st, int n)
{
    sdc_error_t err = {0};
    sdc_rt_tb_t tb;
    uint8_t *payload = NULL;
    sdc_backend_t *be = rt->be;
    const int64_t hidden = sdc_dit_hidden(&rt->dc);
    sdc_status_t s = sdc_rt_tb_init(&tb, (size_t)n, 3 * (size_t)n, &err);
    for (int i = 0; s == SDC_OK && i < n; i++) {
        const sdc_dit_sample_t *x = &st->samples[i];
        const stage_item_t *it = &st->items[i];
        Sdc__Sample *smp = sdc_rt_tb_sample(&tb);
        *smp = it->meta;
        smp->job_id = st->items[i].job_id;
        const int64_t rows[2] = {x->n_img + x->n_txt, hidden}, vec[1] = {hidden};
        const int64_t lat[3] = {rt->dc.in_channels, it->meta.grid_h, it->meta.grid_w};
        sdc_rt_tb_tensor(&tb, (uint32_t)i, "hidden", SDC__DTYPE__DTYPE_F32, 2, rows);
        sdc_rt_tb_tensor(&tb, (uint32_t)i, "temb", SDC__DTYPE__DTYPE_F32, 1, vec);
        if (it->image_latents)
            sdc_rt_tb_tensor(&tb, (uint32_t)i, "image_latents", SDC__DTYPE__DTYPE_F32, 3, lat);
    }
    if (s == SDC_OK)
        s = sdc_rt_tb_layout(&tb, &payload, &err);
    for (int i = 0, k = 0; s == SDC_OK && i < n; i++) {
        const Sdc__TensorDesc *hx = tb.desc_ptrs[k++], *ht = tb.desc_ptrs[k++];
        be->ops->download(be, payload + hx->offset, st->samples[i].x, hx->nbytes);
        be->ops->download(be, payload + ht->offset, st->samples[i].temb, ht->nbytes);
        if (st->items[i].image_latents) {
            const Sdc__TensorDesc *il = tb.desc_ptrs[k++];
            memcpy(payload + il->offset, st->items[i].image_latents, il->nbytes);
        }
    }
    if (s == SDC_OK) {
        be->ops->sync(be);
        s = sdc_rt_tb_send(rt, &tb, st->next_node, payload, &err);
    } else {
        sdc_ucx_buf_free(payload, tb.h.payload_bytes);
    }
    if (s != SDC_OK)
        for (int i = 0; i < n; i++)
            sdc_rt_job_lost(rt, st->items[i].job_id, st->items[i].meta.attempt, err.msg);
    sdc_rt_tb_free(&tb);
}

/* --synthetic-ms: waits until `deadline` (sdc_now() seconds), driving UCX,
 * the heartbeat and finished sends in short slices. */
static void synthetic_wait(sdc_rt_t *rt, double deadline)
{
    for (;;) {
        sdc_rt_service(rt);
        double left = deadline - sdc_now();
        if (left <= 0)
            return;
        if (left > STAGE_SYNTH_SLICE_S)
            left = STAGE_SYNTH_SLICE_S;
        struct timespec ts = {0, (long)(left * 1e9)};
        nanosleep(&ts, NULL);
    }
}

/* Runs this stage's blocks on each sample, one block at a time: the
 * engine's result does not depend on how a block range is split, and
 * between blocks the previous micro-batch's transfer and the heartbeat
 * advance. A sample that fails takes only its job down; it is removed from
 * samples[] and items[]. Returns how many samples are left. */
static int run_blocks(sdc_rt_t *rt, stage_t *st, int n)
{
    int kept = 0;
    const double synth_s = rt->o.synthetic_ms / 1000.0;
    double deadline = sdc_now();
    for (int i = 0; i < n; i++) {
        sdc_error_t err = {0};
        sdc_status_t s = SDC_OK;
        if (synth_s > 0) {
            deadline += synth_s; /* per sample, not drifting with the slices */
            synthetic_wait(rt, deadline);
        }
        for (int b = st->begin; synth_s <= 0 && b < st->end && s == SDC_OK; b++) {
            s = sdc_dit_run_blocks(st->dit, &st->samples[i], 1, b, b + 1, &err);
            sdc_rt_service(rt);
        }
        if (s != SDC_OK) {
            stage_job_t *j = find_job(st, st->items[i].job_id);
            if (j)
                fail_job(rt, j, s, err.msg);
            else
                sdc_rt_job_fail(rt, st->items[i].job_id, st->items[i].meta.attempt, s, err.msg);
            sdc_dit_sample_free(st->dit, &st->samples[i]);
            continue;
        }
        st->samples[kept] = st->samples[i];
        st->items[kept] = st->items[i];
        st->items[kept].meta.job_id = st->items[kept].job_id;
        kept++;
    }
    return kept;
}

/* Runs this stage's blocks on samples[0..n) and passes them on: the head and
 * the update on the last stage, the network otherwise. */
static void finish_batch(sdc_rt_t *rt, stage_t *st, int n)
{
    sdc_error_t err = {0};
    n = run_blocks(rt, st, n);
    if (n > 0 && !st->last)
        forward(rt, st, n);
    for (int i = 0; st->last && i < n; i++) {
        const stage_item_t *it = &st->items[i];
        int pass = it->meta.pass == SDC__PASS__PASS_UNCOND ? PASS_UNCOND : PASS_COND;
        stage_job_t *j = find_job(st, it->job_id);
        if (!j || j->attempt != it->meta.attempt || !accepts(j, it->meta.step, pass))
            continue;
        sdc_status_t hs = SDC_OK;
        if (rt->o.synthetic_ms > 0) /* a zero velocity: the latent stays put */
            memset(j->pred[pass], 0,
                   (size_t)(j->d.channels * j->d.h * j->d.w) * sizeof(*j->pred[pass]));
        else
            hs = sdc_dit_head(st->dit, &st->samples[i], j->pred[pass], &err);
        if (hs != SDC_OK)
            fail_job(rt, j, hs, err.msg);
        else
            deliver(rt, st, j, pass);
        sdc_rt_service(rt);
    }
    for (int i = 0; i < n; i++)
        sdc_dit_sample_free(st->dit, &st->samples[i]);
}

/* Debug log of a micro-batch: job/pass/step of each sample. */
static void log_batch(sdc_rt_t *rt, const stage_t *st, int n)
{
    char line[1024];
    size_t used = 0;
    if (sdc_log_get_level() > SDC_LOG_DEBUG)
        return;
    line[0] = '\0';
    for (int i = 0; i < n && used < sizeof(line); i++) {
        const stage_item_t *it = &st->items[i];
        int w = snprintf(line + used, sizeof(line) - used, " %s/%s/%u", it->job_id,
                         it->meta.pass == SDC__PASS__PASS_UNCOND ? "uncond" : "cond",
                         it->meta.step);
        used += w > 0 ? (size_t)w : 0;
    }
    SDC_DEBUG("%s: micro-batch of %d:%s", rt->id, n, line);
}

/* Stage 0: embeds up to micro_batch queued samples and runs them. */
static int run_first(sdc_rt_t *rt, stage_t *st)
{
    sdc_error_t err = {0};
    size_t budget = rt->lim.max_header - 256, used = 0;
    int n = 0;
    const int limit = st->micro_batch < st->max_items ? st->micro_batch : st->max_items;
    while (n < limit && st->n_tasks > 0) {
        stage_task_t t = st->tasks[0];
        stage_job_t *j = t.job;
        size_t cost = STAGE_SAMPLE_HDR +
                      (j->d.step == j->first_step ? strlen(j->params_json) : 0) +
                      (j->d.step == j->first_step && j->image_latents ? STAGE_TENSOR_HDR : 0);
        if (n > 0 && used + cost > budget)
            break;
        memmove(st->tasks, st->tasks + 1, (size_t)(st->n_tasks - 1) * sizeof(*st->tasks));
        st->n_tasks--;
        j->queued--;
        used += cost;
        sdc_text_cond_t text;
        sdc_dit_input_t in;
        sdc_embeds_cond(t.pass == PASS_UNCOND ? &j->text.neg : &j->text.pos, &text);
        sdc_denoise_dit_input(&j->d, &text, j->gp.trim_text, &in);
        sdc_dit_sample_t *x = &st->samples[n];
        uint32_t pad = 0;
        sdc_status_t s = sdc_dit_embed(st->dit, &in, x, &err);
        if (s == SDC_OK && (s = text_padding(rt, st, x, &pad, &err)) != SDC_OK)
            sdc_dit_sample_free(st->dit, x);
        if (s != SDC_OK) {
            fail_job(rt, j, s, err.msg);
            continue;
        }
        stage_item_t *it = &st->items[n++];
        sdc__sample__init(&it->meta);
        snprintf(it->job_id, sizeof(it->job_id), "%s", j->id);
        it->image_latents = j->d.step == 0 ? j->image_latents : NULL;
        it->meta.attempt = j->attempt;
        it->meta.step = (uint32_t)j->d.step;
        it->meta.steps = (uint32_t)j->d.n_steps;
        it->meta.pass = t.pass == PASS_UNCOND ? SDC__PASS__PASS_UNCOND : SDC__PASS__PASS_COND;
        it->meta.grid_h = (uint32_t)j->d.h;
        it->meta.grid_w = (uint32_t)j->d.w;
        it->meta.n_img = (uint32_t)x->n_img;
        it->meta.n_txt = (uint32_t)x->n_txt;
        it->meta.timestep = in.timestep;
        it->meta.guidance = in.guidance;
        it->meta.n_txt_pad = pad;
        if (j->d.step == j->first_step) {
            it->meta.params_json = j->params_json;
            it->meta.glyph = j->glyph;
        }
        j->touched = sdc_now();
    }
    if (n > 0) {
        log_batch(rt, st, n);
        finish_batch(rt, st, n);
    }
    /* With more than one stage, stage 0 is done with a job once its last
     * step is on its way. */
    for (int i = 0; !st->last && i < st->n_jobs; i++) {
        stage_job_t *j = st->jobs[i];
        if (!j->queued && j->d.step == j->d.n_steps - 1)
            j->dead = 1;
    }
    sweep(st);
    return 1;
}

/* Middle and last stages: the job a sample belongs to, created on its
 * first lap; NULL (logged) for samples of jobs not running here. */
static stage_job_t *ring_job(sdc_rt_t *rt, stage_t *st, const sdc_rt_msg_t *m,
                             const Sdc__Sample *s, const Sdc__TensorDesc *il)
{
    sdc_error_t err = {0};
    stage_job_t *j = find_job(st, s->job_id);
    if (j && j->attempt == s->attempt)
        return j->dead ? NULL : j;
    if (j && j->attempt > s->attempt)
        return NULL;
    if (j) {
        j->dead = 1;
        sweep(st);
    }
    if (!s->params_json[0]) {
        sdc_rt_drop(rt, m, "sample of unknown job %s attempt %u at step %u", s->job_id,
                    s->attempt, s->step);
        return NULL;
    }
    sdc_status_t rc = job_create(rt, st, s, s->params_json, s->glyph,
                                 il ? sdc_rt_tensor_data(m, il) : NULL, il ? il->nbytes : 0, &j,
                                 &err);
    if (rc != SDC_OK) {
        sdc_rt_job_fail(rt, s->job_id, s->attempt, rc, err.msg);
        return NULL;
    }
    if (!grid_matches(j, s) || s->step >= (uint32_t)j->d.n_steps) {
        fail_job(rt, j, SDC_ERR_SHAPE, "sample grid or steps disagree with the parameters");
        return NULL;
    }
    j->first_step = (int)s->step;
    if (st->last && s->step > 0 && (rc = resume(rt, j, (int)s->step, &err)) != SDC_OK) {
        char why[SDC_ERROR_MSG_MAX + 64];
        snprintf(why, sizeof(why), "resuming at step %u: %s", s->step, err.msg);
        if (rc == SDC_ERR_IO) {
            sdc_rt_job_lost(rt, j->id, j->attempt, why);
            j->dead = 1;
        } else {
            fail_job(rt, j, rc, why);
        }
        return NULL;
    }
    return j;
}

/* Loads sample i of m into st->samples[n]; 0 when it is skipped. */
static int load_sample(sdc_rt_t *rt, stage_t *st, const sdc_rt_msg_t *m, uint32_t i, int n)
{
    const Sdc__TensorHeader *h = m->w.env->tensor;
    const Sdc__Sample *s = h->samples[i];
    const Sdc__TensorDesc *hx = sdc_wire_find_tensor(h, i, "hidden");
    const Sdc__TensorDesc *ht = sdc_wire_find_tensor(h, i, "temb");
    const Sdc__TensorDesc *il = s->step == 0 ? sdc_wire_find_tensor(h, i, "image_latents") : NULL;
    sdc_backend_t *be = rt->be;
    sdc_error_t err = {0};
    if (!(m->w.live >> i & 1u)) {
        sdc_rt_drop(rt, m, "sample %u: job %s attempt %u is stale", i, s->job_id, s->attempt);
        return 0;
    }
    if (!hx || !ht || (s->n_txt_pad && s->n_txt_pad >= s->n_txt)) {
        sdc_rt_drop(rt, m, "sample %u: needs 'hidden' and 'temb' and a valid text row", i);
        return 0;
    }
    stage_job_t *j = ring_job(rt, st, m, s, il);
    if (!j)
        return 0;
    j->touched = sdc_now();
    if (st->last) {
        int pass = s->pass == SDC__PASS__PASS_UNCOND ? PASS_UNCOND : PASS_COND;
        if (!accepts(j, s->step, pass)) {
            sdc_rt_drop(rt, m, "sample %u: job %s step %u pass %d is not awaited (step %d)", i,
                        s->job_id, s->step, pass, j->d.step);
            return 0;
        }
    }
    sdc_dit_sample_t *x = &st->samples[n];
    if (sdc_dit_sample_alloc(st->dit, x, s->grid_h / st->patch, s->grid_w / st->patch, s->n_txt,
                             s->n_txt_pad > 0, &err) != SDC_OK) {
        sdc_rt_job_fail(rt, s->job_id, s->attempt, err.code, err.msg);
        return 0;
    }
    be->ops->upload(be, x->x, sdc_rt_tensor_data(m, hx), hx->nbytes);
    be->ops->upload(be, x->temb, sdc_rt_tensor_data(m, ht), ht->nbytes);
    if (s->n_txt_pad) {
        if (st->mask_cap < s->n_txt) {
            uint8_t *g = realloc(st->mask, s->n_txt);
            if (!g) {
                sdc_dit_sample_free(st->dit, x);
                sdc_rt_job_fail(rt, s->job_id, s->attempt, SDC_ERR_NOMEM, "out of memory");
                return 0;
            }
            st->mask = g;
            st->mask_cap = s->n_txt;
        }
        memset(st->mask, 1, s->n_txt - s->n_txt_pad);
        memset(st->mask + (s->n_txt - s->n_txt_pad), 0, s->n_txt_pad);
        be->ops->upload(be, x->txt_mask, st->mask, s->n_txt);
    }
    stage_item_t *it = &st->items[n];
    it->meta = *s;
    snprintf(it->job_id, sizeof(it->job_id), "%s", s->job_id);
    it->meta.job_id = it->job_id;
    /* Passed on as it came: m outlives the forward of this micro-batch. */
    it->image_latents = il ? sdc_rt_tensor_data(m, il) : NULL;
    return 1;
}

/* Middle and last stages: one received micro-batch. */
static int run_message(sdc_rt_t *rt, stage_t *st)
{
    sdc_rt_msg_t *m = sdc_rt_queue_pop(&st->queue);
    const Sdc__TensorHeader *h = m->w.env->tensor;
    int n = 0;
    for (uint32_t i = 0; i < h->n_samples && n < st->max_items; i++)
        n += load_sample(rt, st, m, i, n);
    if (n > 0)
        finish_batch(rt, st, n);
    sdc_rt_msg_free(m);
    sweep(st);
    return 1;
}

static int work(sdc_rt_t *rt, void *state)
{
    stage_t *st = state;
    if (st->first)
        return st->n_tasks > 0 ? run_first(rt, st) : 0;
    return st->queue.n > 0 ? run_message(rt, st) : 0;
}

/* Jobs that failed, finished or were requeued elsewhere leave no trace
 * here otherwise: held jobs idle for a while are checked against Redis, and
 * jobs idle past the job timeout are forgotten. */
static void tick(sdc_rt_t *rt, void *state, double now)
{
    stage_t *st = state;
    if (now < st->next_check)
        return;
    st->next_check = now + STAGE_CHECK_S;
    int changed = 0;
    for (int i = 0; i < st->n_jobs; i++) {
        stage_job_t *j = st->jobs[i];
        sdc_job_status_t js;
        sdc_error_t err = {0};
        if (j->dead || now - j->touched < STAGE_CHECK_S || now - j->checked < STAGE_CHECK_S)
            continue;
        j->checked = now;
        sdc_status_t s = sdc_job_get(&rt->q, j->id, &js, &err);
        /* Decoding, refining: the job has left the ring. */
        int gone = s == SDC_ERR_NOT_FOUND ||
                   (s == SDC_OK && (js.attempt != j->attempt || sdc_job_state_final(js.state) ||
                                    js.state == SDC_JOB_QUEUED ||
                                    js.state == SDC_JOB_DECODING ||
                                    js.state == SDC_JOB_REFINING));
        if (gone || now - j->touched > rt->o.job_timeout_ms / 1000.0) {
            SDC_INFO("%s: forgetting job %s attempt %u (%s)", rt->id, j->id, j->attempt,
                     gone ? "no longer running here" : "no progress");
            j->dead = 1;
            changed = 1;
        }
    }
    if (changed)
        sweep(st);
}

/* Every job in the ring passes every stage each step: when a neighbour in
 * the ring fails, the jobs held here cannot finish. */
static void peer_failed(sdc_rt_t *rt, void *state, int node)
{
    stage_t *st = state;
    if (node != st->next_node && node != st->first_node)
        return;
    char id[SDC_JOB_ID_MAX + 1];
    sdc_rt_node_id(rt->cf, node, id);
    for (int i = 0; i < st->n_jobs; i++) {
        stage_job_t *j = st->jobs[i];
        if (j->dead)
            continue;
        char why[128];
        snprintf(why, sizeof(why), "%s of the job's pipeline failed", id);
        sdc_rt_job_lost(rt, j->id, j->attempt, why);
        j->dead = 1;
    }
    sdc_rt_queue_free(&st->queue);
    sweep(st);
}

static int busy(sdc_rt_t *rt, void *state)
{
    (void)rt;
    const stage_t *st = state;
    return st->n_jobs > 0 || st->n_tasks > 0 || st->queue.n > 0;
}

static double load(void *state)
{
    const stage_t *st = state;
    return (double)st->n_jobs;
}

static int peers(sdc_rt_t *rt, void *state, int *nodes, int cap)
{
    (void)rt;
    const stage_t *st = state;
    int n = 0;
    if (!st->last && n < cap)
        nodes[n++] = st->next_node;
    if (st->last && !st->first && n < cap)
        nodes[n++] = st->first_node;
    for (int i = 0; st->last && i < st->n_vae && n < cap; i++)
        nodes[n++] = st->vae[i];
    return n;
}

static sdc_status_t open_stage(sdc_rt_t *rt, void **state, sdc_error_t *err)
{
    const sdc_cluster_t *cf = rt->cf;
    stage_t *st = calloc(1, sizeof(*st));
    if (!st)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    const sdc_cf_pipeline_t *pl = &cf->pipelines[rt->me->pipeline];
    st->pipeline = rt->me->pipeline;
    st->stage = rt->me->stage;
    st->n_stages = pl->n_stages;
    st->begin = pl->block_begin[st->stage];
    st->end = pl->block_end[st->stage];
    st->first = st->stage == 0;
    st->last = st->stage == st->n_stages - 1;
    st->patch = rt->dc.patch_size[0];
    st->micro_batch = cf->micro_batch;
    st->max_items = (int)rt->lim.max_samples;
    st->next_node = st->last ? -1
                             : sdc_cluster_find_node(cf, SDC_ROLE_DIT_STAGE, st->pipeline,
                                                     st->stage + 1);
    st->first_node = sdc_cluster_find_node(cf, SDC_ROLE_DIT_STAGE, st->pipeline, 0);
    for (int i = 0; i < cf->n_nodes; i++)
        if (cf->nodes[i].role == SDC_ROLE_VAE)
            st->vae[st->n_vae++] = i;
    st->items = calloc((size_t)st->max_items, sizeof(*st->items));
    st->samples = calloc((size_t)st->max_items, sizeof(*st->samples));
    *state = st;
    if (!st->items || !st->samples)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    /* Both ends run the engine's denoising state, which needs the scheduler,
     * the guiders and the VAE factor. */
    unsigned parts = SDC_PARTS_DIT | (st->first || st->last ? SDC_PARTS_VAE | SDC_PARTS_DENOISE : 0);
    sdc_status_t s = sdc_parts_open(&st->pipe, rt->be, cf->model, parts, st->begin, st->end, err);
    if (s != SDC_OK)
        return s;
    st->dit = st->pipe->dit;
    SDC_INFO("%s: pipeline %s stage %d/%d, blocks [%d, %d)", rt->id, pl->name, st->stage,
             st->n_stages, st->begin, st->end);
    if (rt->o.synthetic_ms > 0)
        SDC_INFO("%s: synthetic DiT compute: %g ms per sample, zero velocity", rt->id,
                 rt->o.synthetic_ms);
    return SDC_OK;
}

static void close_stage(sdc_rt_t *rt, void *state)
{
    (void)rt;
    stage_t *st = state;
    for (int i = 0; i < st->n_jobs; i++)
        job_free(st->jobs[i]);
    sdc_rt_queue_free(&st->queue);
    free(st->jobs);
    free(st->tasks);
    free(st->items);
    free(st->samples);
    free(st->mask);
    sdc_pipeline_free(st->pipe);
    free(st);
}

const sdc_role_ops_t sdc_role_dit_stage = {
    .role = SDC_ROLE_DIT_STAGE,
    .open = open_stage,
    .close = close_stage,
    .peers = peers,
    .job_state = job_state,
    .on_message = on_message,
    .work = work,
    .tick = tick,
    .busy = busy,
    .load = load,
    .peer_failed = peer_failed,
};
