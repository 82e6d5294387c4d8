/*
 * role_coord.c: the coordinator. The one holding the leader lease takes
 * jobs from the sdc:jobs stream (consumer group) only while a pipeline has
 * room (admission control: per pipeline fewer jobs in flight than
 * max(max_inflight, stages), so that every stage can be busy), places each
 * on the least-loaded pipeline whose sizes allow it, records queued ->
 * encoding and hands the job to the least-loaded text encoder (Assign).
 *
 * A job holds its pipeline slot until the last stage reports its final step
 * (StepDone); it is tracked until the VAE completes it (JobDone) or it
 * fails (Error). Messages are the fast path; Redis is the truth: held jobs
 * are polled, and one without progress for the job timeout, or reported
 * lost in transit, is requeued (a new attempt, up to max_attempts).
 *
 * Dead nodes: every 0.5 s the leader reads the node registry. A node whose
 * heartbeat has not changed for --dead-after (or that came back at a new
 * UCX address: it restarted) is dead: the jobs it held are requeued at once
 * (a DiT stage: every job in its pipeline's ring; a text encoder: the jobs
 * it was encoding; a VAE: the jobs being decoded), and a pipeline leaves
 * placement while any of its stages is dead, unseen or draining.
 *
 * Standbys renew nothing and claim nothing; the lease lasts --dead-after. A
 * new leader first takes back its own unacknowledged entries, then every
 * entry other coordinators hold (only a leader claims, so they are a dead
 * leader's), adopting jobs that are still running; later, entries idle for
 * the reclaim time.
 */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/model_parts.h"
#include "cluster/rt_internal.h"
#include "common/log.h"
#include "common/timer.h"
#include "model/vae_refiner.h"

#define COORD_POLL_S 0.5
#define COORD_WATCH_S 0.5
/* Watch rounds further apart than this (Redis away, this process stalled)
 * say nothing about the nodes: their silence is counted from now. */
#define COORD_WATCH_GAP_S 1.5
/* Entries a new leader takes over at once, at most. */
#define COORD_TAKEOVER_MAX 10000
#define COORD_CLAIM_IDLE_S 0.02
#define COORD_BATCH_CHECK_S 1.0
/* A job lost in transit is requeued after this long (its pipeline takes no
 * new job for --dead-after meanwhile: time for the registry to show whether
 * a node died), and a job adopted while encoding with no text encoder
 * holding it is taken as lost after this long. */
#define COORD_LOST_DELAY_S 0.5

typedef struct {
    char id[SDC_JOB_ID_MAX + 1];
    uint32_t attempt;
    int pipeline, te; /* te: index into coord_t.te, -1 when adopted */
    int holds_slot;
    int64_t updated_ms;
    double progressed;
    double lost_at;   /* > 0: reported lost, requeued COORD_LOST_DELAY_S later */
    char lost_why[SDC_WIRE_TEXT_MAX + 1];
} cjob_t;

typedef struct {
    sdc_job_entry_t e;
    int width, height;
} held_t;

typedef enum { NODE_UNSEEN = 0, NODE_ALIVE, NODE_DEAD } node_health_t;

/* A node as the registry shows it to the leader. */
typedef struct {
    node_health_t health;
    int draining;
    int64_t heartbeat_ms;
    uint32_t addr_crc;
    double changed; /* sdc_now() when its heartbeat or address last changed */
} node_watch_t;

typedef struct {
    int leader;
    double next_lease, next_poll, next_claim, next_reclaim, next_batch, next_watch;
    double watched;           /* last successful registry read */
    node_watch_t nodes[SDC_CF_MAX_NODES];
    int placeable[SDC_CF_MAX_PIPELINES]; /* every stage alive, none draining */
    /* A stage reported a job lost: the pipeline takes nothing new until
     * then (time for the registry to show whether a node died). */
    double suspect_until[SDC_CF_MAX_PIPELINES];
    int own_pending;          /* own entries were skipped while one was held */
    char run_id[48];          /* the Redis server's, "" until read */
    cjob_t *jobs;
    int n_jobs, cap_jobs;
    int inflight[SDC_CF_MAX_PIPELINES];
    int capacity[SDC_CF_MAX_PIPELINES];
    int te[SDC_CF_MAX_NODES];
    int te_load[SDC_CF_MAX_NODES];
    int n_te;
    held_t held;
    int has_held;
    int shutdown_sent;
    int n_refiner;     /* refiner nodes in the cluster file */
    int64_t refine_multiple[2]; /* refined sizes: multiples of these (H, W) */
    sdc_rt_retired_t retired; /* jobs settled here: their late notices are expected */
} coord_t;

/* ---- the job table ---------------------------------------------------------- */

static cjob_t *find_job(coord_t *c, const char *id)
{
    for (int i = 0; i < c->n_jobs; i++)
        if (strcmp(c->jobs[i].id, id) == 0)
            return &c->jobs[i];
    return NULL;
}

static void release_slot(coord_t *c, cjob_t *j)
{
    if (!j->holds_slot)
        return;
    j->holds_slot = 0;
    c->inflight[j->pipeline]--;
    if (j->te >= 0)
        c->te_load[j->te]--;
}

static void remove_job(coord_t *c, cjob_t *j)
{
    release_slot(c, j);
    sdc_rt_retire(&c->retired, j->id, j->attempt);
    *j = c->jobs[--c->n_jobs];
}

static cjob_t *track(sdc_rt_t *rt, coord_t *c, const char *id, uint32_t attempt, int pipeline,
                     int te, int holds_slot)
{
    if (c->n_jobs == c->cap_jobs) {
        int cap = c->cap_jobs ? 2 * c->cap_jobs : 32;
        cjob_t *g = realloc(c->jobs, (size_t)cap * sizeof(*g));
        if (!g) {
            SDC_ERROR("%s: out of memory tracking job %s", rt->id, id);
            return NULL;
        }
        c->jobs = g;
        c->cap_jobs = cap;
    }
    cjob_t *j = &c->jobs[c->n_jobs++];
    memset(j, 0, sizeof(*j));
    snprintf(j->id, sizeof(j->id), "%s", id);
    j->attempt = attempt;
    j->pipeline = pipeline;
    j->te = te;
    j->holds_slot = holds_slot && pipeline >= 0 && pipeline < rt->cf->n_pipelines;
    j->progressed = sdc_now();
    if (j->holds_slot) {
        c->inflight[pipeline]++;
        if (te >= 0)
            c->te_load[te]++;
    }
    return j;
}

/* A watched job is done: counted, with its latency from submission. */
static void count_done(sdc_rt_t *rt, const sdc_job_status_t *js)
{
    int64_t done_ms = js->state_ms[SDC_JOB_DONE];
    rt->metrics.jobs_completed++;
    if (js->created_ms > 0 && done_ms >= js->created_ms)
        sdc_hist_observe(&rt->metrics.hist[SDC_HIST_JOB], SDC_HIST_JOB,
                         (double)(done_ms - js->created_ms) / 1000.0);
}

static void requeue(sdc_rt_t *rt, coord_t *c, cjob_t *j, const char *reason)
{
    sdc_error_t err = {0};
    sdc_job_state_t to;
    sdc_job_outcome_t outcome;
    if (sdc_job_requeue(&rt->q, j->id, j->attempt, rt->o.max_attempts, reason, &to, &outcome,
                        &err) != SDC_OK)
        SDC_WARN("%s: requeueing job %s: %s", rt->id, j->id, err.msg);
    else if (outcome == SDC_JOB_APPLIED && to == SDC_JOB_QUEUED)
        rt->metrics.jobs_requeued++;
    else if (outcome == SDC_JOB_APPLIED)
        rt->metrics.jobs_failed++;
    if (outcome == SDC_JOB_APPLIED)
        SDC_WARN("%s: job %s attempt %u %s: %s", rt->id, j->id, j->attempt,
                 to == SDC_JOB_QUEUED ? "requeued" : "failed", reason);
    remove_job(c, j);
}

/* ---- placement --------------------------------------------------------------- */

static int serves(const sdc_cf_pipeline_t *p, int w, int h)
{
    if (p->n_sizes == 0)
        return 1;
    for (int i = 0; i < p->n_sizes; i++)
        if (p->sizes[i][0] == w && p->sizes[i][1] == h)
            return 1;
    return 0;
}

static int open_for_jobs(const coord_t *c, int p)
{
    return c->placeable[p] && sdc_now() >= c->suspect_until[p];
}

/* 1 when node i can take new work: alive and not draining. */
static int usable(const coord_t *c, int i)
{
    return c->nodes[i].health == NODE_ALIVE && !c->nodes[i].draining;
}

static int any_text_encoder(const coord_t *c)
{
    for (int i = 0; i < c->n_te; i++)
        if (usable(c, c->te[i]))
            return 1;
    return 0;
}

/* The least-loaded pipeline serving w x h with room; -1 when all are full
 * (or out of placement, or no text encoder is usable), -2 when none serves
 * the size at all. */
static int pick_pipeline(const sdc_rt_t *rt, const coord_t *c, int w, int h)
{
    int best = -2;
    for (int p = 0; p < rt->cf->n_pipelines; p++) {
        if (!serves(&rt->cf->pipelines[p], w, h))
            continue;
        if (best == -2)
            best = -1;
        if (c->inflight[p] >= c->capacity[p] || !open_for_jobs(c, p) || !any_text_encoder(c))
            continue;
        if (best < 0 || (long)c->inflight[p] * c->capacity[best] <
                            (long)c->inflight[best] * c->capacity[p])
            best = p;
    }
    return best;
}

static int room(const coord_t *c, int n_pipelines)
{
    for (int p = 0; p < n_pipelines; p++)
        if (c->inflight[p] < c->capacity[p] && open_for_jobs(c, p))
            return any_text_encoder(c);
    return 0;
}

static void node_failed(sdc_rt_t *rt, coord_t *c, int node, const char *why);

static sdc_status_t send_assign(sdc_rt_t *rt, coord_t *c, const sdc_job_entry_t *e,
                                const char *params, int pipeline, int *te_out,
                                sdc_error_t *err)
{
    Sdc__Envelope env;
    Sdc__Assign a;
    sdc_wire_envelope_init(&env, rt->id);
    sdc__assign__init(&a);
    a.job_id = (char *)e->job_id;
    a.attempt = (uint32_t)e->attempt;
    a.pipeline = (uint32_t)pipeline;
    a.params_json = (char *)params;
    a.entry_id = (char *)e->entry_id;
    env.msg_case = SDC__ENVELOPE__MSG_ASSIGN;
    env.assign = &a;
    /* Least loaded first; an unreachable text encoder is skipped. */
    int order[SDC_CF_MAX_NODES];
    for (int i = 0; i < c->n_te; i++)
        order[i] = i;
    for (int i = 1; i < c->n_te; i++)
        for (int k = i; k > 0 && c->te_load[order[k]] < c->te_load[order[k - 1]]; k--) {
            int t = order[k];
            order[k] = order[k - 1];
            order[k - 1] = t;
        }
    sdc_status_t st = sdc_error_set(err, SDC_ERR_NOT_FOUND, "the cluster has no text encoder");
    for (int i = 0; i < c->n_te && st != SDC_OK; i++) {
        if (!usable(c, c->te[order[i]]))
            continue;
        st = sdc_rt_send(rt, c->te[order[i]], &env, NULL, 0, err);
        if (st == SDC_OK)
            *te_out = order[i];
        else
            node_failed(rt, c, c->te[order[i]], err->msg);
    }
    return st;
}

/* Resolves the default size and checks the parameters as the engine will. */
static sdc_status_t prepare(sdc_rt_t *rt, const coord_t *c, const sdc_job_entry_t *e,
                            sdc_job_params_t *p, sdc_error_t *err)
{
    sdc_status_t st = sdc_job_params_parse(p, e->params_json, e->params_len, err);
    if (st != SDC_OK)
        return st;
    if (strcmp(p->id, e->job_id) != 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "parameters name job %s", p->id);
    if (p->refine && !c->n_refiner)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED, "the job asks for 'refine', but this "
                             "cluster has no refiner node");
    if (p->image_bytes > rt->q.max_image_bytes)
        return sdc_error_set(err, SDC_ERR_RANGE, "its input image of %zu bytes is over this "
                             "cluster's limit of %zu bytes (max_image_bytes)", p->image_bytes,
                             rt->q.max_image_bytes);
    int side = sdc_parts_default_side(&rt->vc);
    if (!p->width)
        p->width = side;
    if (!p->height)
        p->height = side;
    sdc_pipeline_t none, jp;
    sdc_gen_params_t gp;
    memset(&none, 0, sizeof(none));
    sdc_parts_job(&none, &rt->dc, p, &jp, &gp);
    sdc_status_t st2 = sdc_parts_check_params(&rt->dc, &rt->vc, &gp, err);
    if (st2 != SDC_OK || !p->refine)
        return st2;
    /* sdc does not resample: the refiner takes the base image's size. */
    if (p->height % c->refine_multiple[0] || p->width % c->refine_multiple[1])
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "'refine': the image size %dx%d (WxH) is "
                             "not a multiple of %lldx%lld (the refiner's VAE factor times its "
                             "patch size)", p->width, p->height,
                             (long long)c->refine_multiple[1], (long long)c->refine_multiple[0]);
    return SDC_OK;
}

static void fail_entry(sdc_rt_t *rt, const sdc_job_entry_t *e, const char *reason)
{
    sdc_error_t err = {0};
    sdc_job_outcome_t outcome;
    char why[SDC_JOB_REASON_MAX + 1];
    snprintf(why, sizeof(why), "%s: %s", rt->id, reason);
    SDC_WARN("%s: job %s attempt %" PRId64 " failed: %s", rt->id, e->job_id, e->attempt, reason);
    if (sdc_job_fail(&rt->q, e->job_id, e->attempt, why, &outcome, &err) != SDC_OK)
        SDC_WARN("%s: recording the failure of job %s: %s", rt->id, e->job_id, err.msg);
    else if (outcome == SDC_JOB_APPLIED)
        rt->metrics.jobs_failed++;
}

/* Places a queued job. 1: placed or settled, 0: no room (held). */
static int place(sdc_rt_t *rt, coord_t *c, const sdc_job_entry_t *e)
{
    sdc_error_t err = {0};
    sdc_job_params_t p;
    char *json = NULL;
    size_t json_len;
    int rc = 1;
    sdc_job_params_init(&p);
    if (prepare(rt, c, e, &p, &err) != SDC_OK) {
        fail_entry(rt, e, err.msg);
        goto out;
    }
    int pipeline = pick_pipeline(rt, c, p.width, p.height);
    if (pipeline == -2) {
        char why[96];
        snprintf(why, sizeof(why), "no pipeline serves %dx%d", p.width, p.height);
        fail_entry(rt, e, why);
        goto out;
    }
    if (pipeline < 0) {
        rc = 0;
        c->held.width = p.width;
        c->held.height = p.height;
        goto out;
    }
    sdc_job_outcome_t outcome;
    if (sdc_job_params_to_json(&p, &json, &json_len, &err) != SDC_OK ||
        sdc_job_start(&rt->q, e->job_id, e->attempt, e->entry_id, rt->id, pipeline, &outcome,
                      &err) != SDC_OK) {
        SDC_WARN("%s: starting job %s: %s", rt->id, e->job_id, err.msg);
        goto out;
    }
    int te = -1;
    cjob_t *j;
    if (send_assign(rt, c, e, json, pipeline, &te, &err) != SDC_OK) {
        j = track(rt, c, e->job_id, (uint32_t)e->attempt, pipeline, -1, 0);
        if (j)
            requeue(rt, c, j, err.msg);
        goto out;
    }
    track(rt, c, e->job_id, (uint32_t)e->attempt, pipeline, te, 1);
    char te_id[SDC_JOB_ID_MAX + 1];
    sdc_rt_node_id(rt->cf, c->te[te], te_id);
    SDC_INFO("%s: job %s attempt %" PRId64 " (%dx%d, %d steps) -> pipeline %s via %s", rt->id,
             e->job_id, e->attempt, p.width, p.height, p.steps,
             rt->cf->pipelines[pipeline].name, te_id);
out:
    free(json);
    sdc_job_params_free(&p);
    return rc;
}

/* A stream entry, new or taken over. 1: settled, 0: held for room. */
static int handle_entry(sdc_rt_t *rt, coord_t *c, const sdc_job_entry_t *e)
{
    sdc_error_t err = {0};
    sdc_job_status_t js;
    if (e->problem[0]) {
        SDC_WARN("%s: rejecting stream entry %s: %s", rt->id, e->entry_id, e->problem);
        if (sdc_job_reject_entry(&rt->q, e->entry_id, e->job_id, e->problem, &err) != SDC_OK)
            SDC_WARN("%s: %s", rt->id, err.msg);
        return 1;
    }
    cjob_t *known = find_job(c, e->job_id);
    if (known && known->attempt == (uint32_t)e->attempt)
        return 1;
    if (c->has_held && &c->held.e != e && strcmp(c->held.e.entry_id, e->entry_id) == 0)
        return 1; /* taken over again while waiting for room */
    sdc_status_t st = sdc_job_get(&rt->q, e->job_id, &js, &err);
    if (st == SDC_ERR_NOT_FOUND) {
        if (sdc_job_reject_entry(&rt->q, e->entry_id, e->job_id, "no job record", &err) != SDC_OK)
            SDC_WARN("%s: %s", rt->id, err.msg);
        return 1;
    }
    if (st != SDC_OK) {
        SDC_WARN("%s: reading job %s: %s (entry left pending)", rt->id, e->job_id, err.msg);
        return 1;
    }
    if (js.attempt != e->attempt || sdc_job_state_final(js.state)) {
        if (sdc_job_ack(&rt->q, e->entry_id, &err) != SDC_OK)
            SDC_WARN("%s: %s", rt->id, err.msg);
        return 1;
    }
    if (js.state != SDC_JOB_QUEUED) {
        SDC_INFO("%s: adopting job %s attempt %" PRId64 " (%s)", rt->id, e->job_id, e->attempt,
                 sdc_job_state_name(js.state));
        cjob_t *j = track(rt, c, e->job_id, (uint32_t)e->attempt, js.pipeline, -1,
                          js.state != SDC_JOB_DECODING && js.state != SDC_JOB_REFINING);
        if (j)
            j->updated_ms = js.updated_ms;
        return 1;
    }
    return place(rt, c, e);
}

static void take_entries(sdc_rt_t *rt, coord_t *c, sdc_job_entry_t *es, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (c->has_held) {
            c->own_pending = 1; /* left pending: read again once room frees */
            continue;
        }
        if (handle_entry(rt, c, &es[i]))
            continue;
        c->held.e = es[i];
        memset(&es[i], 0, sizeof(es[i]));
        c->has_held = 1;
    }
}

/* ---- dead nodes ---------------------------------------------------------------- */

/* Requeues the tracked jobs node held when it died. */
static void node_died(sdc_rt_t *rt, coord_t *c, int node, const char *why)
{
    const sdc_cf_node_t *nd = &rt->cf->nodes[node];
    char id[SDC_JOB_ID_MAX + 1], reason[160];
    int te = -1, n = 0;
    sdc_rt_node_id(rt->cf, node, id);
    snprintf(reason, sizeof(reason), "node %s died (%s)", id, why);
    for (int i = 0; i < c->n_te; i++)
        if (c->te[i] == node)
            te = i;
    for (int i = c->n_jobs - 1; i >= 0; i--) {
        cjob_t *j = &c->jobs[i];
        sdc_job_status_t js;
        sdc_error_t err = {0};
        int hit = 0;
        if (nd->role == SDC_ROLE_DIT_STAGE && j->pipeline == nd->pipeline) {
            /* Every job in the ring passes every stage each step; a job
             * past its last step whose latent no VAE took was in flight. */
            hit = j->holds_slot ||
                  (sdc_job_get(&rt->q, j->id, &js, &err) == SDC_OK && js.attempt == j->attempt &&
                   js.state == SDC_JOB_DECODING && !js.decoder[0]);
        } else if (nd->role == SDC_ROLE_TEXT_ENCODER) {
            /* Its own jobs, Assigns on their way to it, and jobs at step 0
             * whose text may have died with it (a job stage 0 did get
             * loses one step's work). */
            int mine = j->te == te || j->te < 0;
            hit = sdc_job_get(&rt->q, j->id, &js, &err) == SDC_OK && js.attempt == j->attempt &&
                  ((js.state == SDC_JOB_ENCODING && (strcmp(js.encoder, id) == 0 ||
                                                     (!js.encoder[0] && mine))) ||
                   (js.state == SDC_JOB_DENOISING && js.step == 0 && mine));
        } else if (nd->role == SDC_ROLE_VAE) {
            /* Its own jobs, and latents on their way to some VAE (which
             * one a last stage chose is only known once a VAE takes it). */
            hit = sdc_job_get(&rt->q, j->id, &js, &err) == SDC_OK &&
                  js.attempt == j->attempt && js.state == SDC_JOB_DECODING &&
                  (!js.decoder[0] || strcmp(js.decoder, id) == 0);
        }
        if (hit) {
            requeue(rt, c, j, reason);
            n++;
        }
    }
    SDC_WARN("%s: %s; %d job%s requeued", rt->id, reason, n, n == 1 ? "" : "s");
}

/* A node this coordinator cannot reach: dead until the registry shows it
 * again (a new heartbeat or a new address). */
static void node_failed(sdc_rt_t *rt, coord_t *c, int node, const char *why)
{
    if (c->nodes[node].health != NODE_ALIVE)
        return;
    c->nodes[node].health = NODE_DEAD;
    node_died(rt, c, node, why);
}

/* Pipelines with every stage usable take jobs; the others wait. */
static void update_placement(sdc_rt_t *rt, coord_t *c)
{
    for (int p = 0; p < rt->cf->n_pipelines; p++) {
        const sdc_cf_pipeline_t *pl = &rt->cf->pipelines[p];
        int ok = 1, bad = -1;
        for (int s = 0; s < pl->n_stages && ok; s++) {
            int node = sdc_cluster_find_node(rt->cf, SDC_ROLE_DIT_STAGE, p, s);
            ok = node >= 0 && usable(c, node);
            bad = node;
        }
        if (ok == c->placeable[p])
            continue;
        c->placeable[p] = ok;
        char id[SDC_JOB_ID_MAX + 1] = "?";
        if (bad >= 0)
            sdc_rt_node_id(rt->cf, bad, id);
        if (ok)
            SDC_INFO("%s: pipeline %s takes jobs", rt->id, pl->name);
        else
            SDC_WARN("%s: pipeline %s out of placement: %s is %s", rt->id, pl->name, id,
                     c->nodes[bad].health == NODE_ALIVE ? "draining" : "not alive");
    }
}

/* Reads the registry: heartbeats that changed, addresses that changed (a
 * restart), silences past --dead-after. */
static void watch_nodes(sdc_rt_t *rt, coord_t *c, double now)
{
    sdc_error_t err = {0};
    sdc_node_t *list;
    size_t n;
    if (sdc_node_list(rt->redis, &list, &n, &err) != SDC_OK) {
        SDC_WARN("%s: reading the node registry: %s", rt->id, err.msg);
        return;
    }
    if (now - c->watched > COORD_WATCH_GAP_S)
        for (int i = 0; i < rt->cf->n_nodes; i++)
            c->nodes[i].changed = now;
    c->watched = now;
    int restarted[SDC_CF_MAX_NODES] = {0};
    for (size_t k = 0; k < n; k++) {
        int i = sdc_rt_node_index(rt->cf, list[k].id);
        if (i < 0 || rt->cf->nodes[i].role == SDC_ROLE_COORDINATOR)
            continue;
        node_watch_t *w = &c->nodes[i];
        uint32_t crc = sdc_wire_crc32c(0, list[k].address, list[k].address_len);
        w->draining = list[k].draining;
        if (w->health != NODE_UNSEEN && crc == w->addr_crc &&
            list[k].heartbeat_ms == w->heartbeat_ms)
            continue;
        restarted[i] = w->health != NODE_UNSEEN && crc != w->addr_crc;
        w->addr_crc = crc;
        w->heartbeat_ms = list[k].heartbeat_ms;
        w->changed = now;
        if (w->health != NODE_ALIVE)
            SDC_INFO("%s: node %s alive", rt->id, list[k].id);
        w->health = NODE_ALIVE;
    }
    sdc_nodes_free(list, n);
    for (int i = 0; i < rt->cf->n_nodes; i++) {
        node_watch_t *w = &c->nodes[i];
        char why[64];
        if (restarted[i]) {
            node_died(rt, c, i, "restarted at a new address");
        } else if (w->health == NODE_ALIVE && now - w->changed > rt->o.dead_after_ms / 1000.0) {
            snprintf(why, sizeof(why), "no heartbeat for %.1f s", now - w->changed);
            w->health = NODE_DEAD;
            node_died(rt, c, i, why);
        }
    }
    update_placement(rt, c);
}

/* ---- a Redis restart ------------------------------------------------------------- */

/* INFO server's run_id: a new one means the server restarted. 0 on failure. */
static int read_run_id(sdc_rt_t *rt, char out[48])
{
    sdc_error_t err = {0};
    redisReply *rep;
    if (sdc_redis_command(rt->redis, &rep, &err, "INFO server") != SDC_OK)
        return 0;
    int ok = 0;
    const char *p = rep->type == REDIS_REPLY_STRING ? strstr(rep->str, "run_id:") : NULL;
    if (p) {
        p += 7;
        size_t n = strcspn(p, "\r\n");
        if (n > 0 && n < 48) {
            memcpy(out, p, n);
            out[n] = '\0';
            ok = 1;
        }
    }
    sdc_redis_reply_free(rep);
    return ok;
}

/* Appends entries to a growing list; takes ownership of their strings. */
static int collect(sdc_job_entry_t **all, size_t *n_all, sdc_job_entry_t *es, size_t n)
{
    sdc_job_entry_t *g = realloc(*all, (*n_all + n) * sizeof(*g));
    if (!g)
        return -1;
    memcpy(g + *n_all, es, n * sizeof(*es));
    *all = g;
    *n_all += n;
    free(es);
    return 0;
}

/* The server restarted and, with appendfsync everysec, may have lost its
 * last second of writes: job states may be behind what the workers did,
 * stream entries may be undelivered again. Every unfinished job (each has
 * exactly one live entry in the stream) starts a new attempt: whatever a
 * worker still holds of the old one becomes stale. Done jobs stay done:
 * completion and ack are one script, both kept or both lost. */
static void redis_restarted(sdc_rt_t *rt, coord_t *c)
{
    sdc_error_t err = {0};
    sdc_job_entry_t *all = NULL, *es;
    size_t n_all = 0, n, again = 0;
    SDC_WARN("%s: the Redis server restarted; every unfinished job starts a new attempt", rt->id);
    for (int i = 0; i < c->n_jobs; i++)
        sdc_rt_retire(&c->retired, c->jobs[i].id, c->jobs[i].attempt);
    c->n_jobs = 0;
    memset(c->inflight, 0, sizeof(c->inflight));
    memset(c->te_load, 0, sizeof(c->te_load));
    if (c->has_held)
        free(c->held.e.params_json);
    c->has_held = 0;
    c->own_pending = 0;
    /* All entries first, then the new attempts: their own entries must not
     * be collected as well. */
    sdc_status_t st = sdc_job_reclaim(&rt->q, rt->id, 0, COORD_TAKEOVER_MAX, &es, &n, &err);
    if (st == SDC_OK && collect(&all, &n_all, es, n) != 0)
        st = sdc_error_set(&err, SDC_ERR_NOMEM, "out of memory");
    while (st == SDC_OK && n_all < COORD_TAKEOVER_MAX) {
        if ((st = sdc_job_claim(&rt->q, rt->id, 1000, 0, 0, &es, &n, &err)) != SDC_OK || n == 0)
            break;
        if (collect(&all, &n_all, es, n) != 0)
            st = sdc_error_set(&err, SDC_ERR_NOMEM, "out of memory");
    }
    if (st != SDC_OK)
        SDC_WARN("%s: reading the queue after the restart: %s", rt->id, err.msg);
    for (size_t i = 0; i < n_all; i++) {
        const sdc_job_entry_t *e = &all[i];
        sdc_job_status_t js;
        sdc_job_outcome_t outcome;
        if (e->problem[0] || sdc_job_get(&rt->q, e->job_id, &js, &err) != SDC_OK ||
            js.attempt != e->attempt || js.state == SDC_JOB_DONE ||
            js.state == SDC_JOB_FAILED) {
            handle_entry(rt, c, e); /* rejected or acked there */
            continue;
        }
        /* The old entry goes too: a queued job's is not in its hash. */
        if (sdc_job_reattempt(&rt->q, e->job_id, e->attempt, "the Redis server restarted",
                              &outcome, &err) != SDC_OK ||
            sdc_job_ack(&rt->q, e->entry_id, &err) != SDC_OK)
            SDC_WARN("%s: %s", rt->id, err.msg);
        else
            again++;
    }
    SDC_WARN("%s: %zu job%s started again after the Redis restart", rt->id, again,
             again == 1 ? "" : "s");
    sdc_job_entries_free(all, n_all);
}

static void check_redis(sdc_rt_t *rt, coord_t *c)
{
    char id[48];
    if (!read_run_id(rt, id))
        return;
    if (c->run_id[0] && strcmp(id, c->run_id) != 0)
        redis_restarted(rt, c);
    memcpy(c->run_id, id, sizeof(id));
}

/* ---- leadership ------------------------------------------------------------ */

static void take_own_pending(sdc_rt_t *rt, coord_t *c)
{
    sdc_error_t err = {0};
    sdc_job_entry_t *es;
    size_t n;
    c->own_pending = 0;
    if (sdc_job_claim(&rt->q, rt->id, 1000, 0, 1, &es, &n, &err) != SDC_OK) {
        SDC_WARN("%s: reading own pending entries: %s", rt->id, err.msg);
        c->own_pending = 1;
        return;
    }
    take_entries(rt, c, es, n);
    sdc_job_entries_free(es, n);
}

static void become_leader(sdc_rt_t *rt, coord_t *c, double now)
{
    sdc_error_t err = {0};
    sdc_job_entry_t *es;
    size_t n, total = 0;
    c->leader = 1;
    SDC_INFO("%s: leader", rt->id);
    memset(c->nodes, 0, sizeof(c->nodes));
    memset(c->placeable, 0, sizeof(c->placeable));
    c->watched = now;
    read_run_id(rt, c->run_id);
    watch_nodes(rt, c, now);
    c->next_watch = now + COORD_WATCH_S;
    take_own_pending(rt, c);
    /* Only a leader claims entries: whatever other coordinators hold is a
     * former leader's, to be taken over now rather than after --reclaim. */
    /* One scan of the pending list (idle 0 takes this coordinator's own
     * entries again: they are known, or left for take_own_pending). */
    if (sdc_job_reclaim(&rt->q, rt->id, 0, COORD_TAKEOVER_MAX, &es, &n, &err) != SDC_OK) {
        SDC_WARN("%s: taking over pending entries: %s", rt->id, err.msg);
        return;
    }
    take_entries(rt, c, es, n);
    sdc_job_entries_free(es, n);
    total = n;
    if (total)
        SDC_INFO("%s: took over %zu pending entries", rt->id, total);
}

static void lose_leadership(sdc_rt_t *rt, coord_t *c)
{
    SDC_WARN("%s: lost the leader lease; standing by", rt->id);
    c->leader = 0;
    for (int i = 0; i < c->n_jobs; i++)
        sdc_rt_retire(&c->retired, c->jobs[i].id, c->jobs[i].attempt);
    c->n_jobs = 0;
    memset(c->inflight, 0, sizeof(c->inflight));
    memset(c->te_load, 0, sizeof(c->te_load));
    if (c->has_held)
        free(c->held.e.params_json);
    c->has_held = 0;
    c->own_pending = 0;
}

static void lease(sdc_rt_t *rt, coord_t *c, double now)
{
    sdc_error_t err = {0};
    int is_leader = 0;
    sdc_status_t st;
    if (c->leader)
        st = sdc_leader_renew(rt->redis, rt->id, rt->o.dead_after_ms, &is_leader, &err);
    else if (!rt->stopping)
        st = sdc_leader_acquire(rt->redis, rt->id, rt->o.dead_after_ms, &is_leader, &err);
    else
        return;
    if (st != SDC_OK) {
        SDC_WARN("%s: leader lease: %s", rt->id, err.msg);
        return;
    }
    if (c->leader && !is_leader)
        lose_leadership(rt, c);
    else if (!c->leader && is_leader)
        become_leader(rt, c, now);
}

/* Entries other coordinators took and left (they died). */
static void reclaim(sdc_rt_t *rt, coord_t *c)
{
    sdc_error_t err = {0};
    sdc_job_entry_t *es;
    size_t n;
    if (sdc_job_reclaim(&rt->q, rt->id, rt->o.reclaim_ms, 100, &es, &n, &err) != SDC_OK) {
        SDC_WARN("%s: reclaiming entries: %s", rt->id, err.msg);
        return;
    }
    take_entries(rt, c, es, n);
    sdc_job_entries_free(es, n);
}

/* ---- watching jobs ----------------------------------------------------------- */

static void poll_jobs(sdc_rt_t *rt, coord_t *c, double now)
{
    for (int i = c->n_jobs - 1; i >= 0; i--) {
        cjob_t *j = &c->jobs[i];
        sdc_job_status_t js;
        sdc_error_t err = {0};
        sdc_status_t st = sdc_job_get(&rt->q, j->id, &js, &err);
        if (st == SDC_ERR_NOT_FOUND ||
            (st == SDC_OK && (js.attempt != j->attempt || sdc_job_state_final(js.state)))) {
            if (st == SDC_OK && js.attempt == j->attempt && js.state == SDC_JOB_DONE)
                count_done(rt, &js);
            remove_job(c, j);
            continue;
        }
        if (st != SDC_OK)
            continue;
        if (j->lost_at > 0 && now - j->lost_at >= COORD_LOST_DELAY_S) {
            requeue(rt, c, j, j->lost_why);
            continue;
        }
        if (js.state == SDC_JOB_DECODING || js.state == SDC_JOB_REFINING)
            release_slot(c, j);
        /* Adopted while encoding, and no text encoder took it: the Assign
         * died with the coordinator that sent it. */
        if (j->te < 0 && js.state == SDC_JOB_ENCODING && !js.encoder[0] &&
            now - j->progressed > COORD_LOST_DELAY_S) {
            requeue(rt, c, j, "its assignment was lost with the previous coordinator");
            continue;
        }
        if (js.updated_ms != j->updated_ms) {
            j->updated_ms = js.updated_ms;
            j->progressed = now;
        } else if (now - j->progressed > rt->o.job_timeout_ms / 1000.0) {
            char why[96];
            snprintf(why, sizeof(why), "no progress for %d s in state %s",
                     rt->o.job_timeout_ms / 1000, sdc_job_state_name(js.state));
            requeue(rt, c, j, why);
        }
    }
}

/* Batch mode: the queue is empty and nothing runs: stop every node. */
static void batch_check(sdc_rt_t *rt, coord_t *c)
{
    sdc_error_t err = {0};
    sdc_queue_depth_t d;
    if (c->n_jobs || c->has_held || c->shutdown_sent)
        return;
    if (sdc_jobs_depth(&rt->q, &d, &err) != SDC_OK) {
        SDC_WARN("%s: queue depth: %s", rt->id, err.msg);
        return;
    }
    if (d.length > 0)
        return;
    SDC_INFO("%s: batch done: the queue is empty; stopping the cluster", rt->id);
    Sdc__Envelope env;
    Sdc__Shutdown sd;
    sdc_wire_envelope_init(&env, rt->id);
    sdc__shutdown__init(&sd);
    sd.reason = "batch done";
    env.msg_case = SDC__ENVELOPE__MSG_SHUTDOWN;
    env.shutdown = &sd;
    for (int i = 0; i < rt->cf->n_nodes; i++) {
        if (i == rt->self)
            continue;
        if (sdc_rt_send(rt, i, &env, NULL, 0, &err) != SDC_OK)
            SDC_WARN("%s: stopping node %d: %s", rt->id, i, err.msg);
    }
    c->shutdown_sent = 1;
    rt->stopping = 1;
}

/* ---- role operations --------------------------------------------------------- */

static void tick(sdc_rt_t *rt, void *state, double now)
{
    coord_t *c = state;
    rt->metrics.jobs_tracked = c->n_jobs;
    if (now >= c->next_lease) {
        /* Renewed three times per lease; a standby asks twice a second. */
        double every = rt->o.dead_after_ms / 3000.0;
        c->next_lease = now + (c->leader ? every : COORD_POLL_S);
        lease(rt, c, now);
    }
    if (!c->leader)
        return;
    if (now >= c->next_watch) {
        c->next_watch = now + COORD_WATCH_S;
        check_redis(rt, c);
        watch_nodes(rt, c, now);
    }
    if (now >= c->next_poll) {
        c->next_poll = now + COORD_POLL_S;
        poll_jobs(rt, c, now);
    }
    if (!rt->stopping && now >= c->next_reclaim) {
        c->next_reclaim = now + rt->o.reclaim_ms / 2000.0;
        reclaim(rt, c);
    }
    if (rt->o.batch && now >= c->next_batch) {
        c->next_batch = now + COORD_BATCH_CHECK_S;
        batch_check(rt, c);
    }
}

static int work(sdc_rt_t *rt, void *state)
{
    coord_t *c = state;
    double now = sdc_now();
    if (!c->leader || rt->stopping)
        return 0;
    if (c->has_held) {
        if (pick_pipeline(rt, c, c->held.width, c->held.height) < 0)
            return 0;
        c->has_held = 0;
        if (!handle_entry(rt, c, &c->held.e)) {
            c->has_held = 1;
            return 0;
        }
        free(c->held.e.params_json);
        return 1;
    }
    if (c->own_pending && now >= c->next_claim) {
        c->next_claim = now + COORD_CLAIM_IDLE_S;
        take_own_pending(rt, c);
        return 1;
    }
    if (!room(c, rt->cf->n_pipelines) || now < c->next_claim)
        return 0;
    sdc_error_t err = {0};
    sdc_job_entry_t *es;
    size_t n;
    if (sdc_job_claim(&rt->q, rt->id, 1, 0, 0, &es, &n, &err) != SDC_OK) {
        SDC_WARN("%s: claiming jobs: %s", rt->id, err.msg);
        c->next_claim = now + 1.0;
        return 0;
    }
    if (n == 0)
        c->next_claim = now + COORD_CLAIM_IDLE_S;
    take_entries(rt, c, es, n);
    sdc_job_entries_free(es, n);
    return n > 0;
}

static void on_message(sdc_rt_t *rt, void *state, sdc_rt_msg_t *m)
{
    coord_t *c = state;
    const Sdc__Envelope *env = m->w.env;
    sdc_error_t err = {0};
    cjob_t *j = NULL;
    switch (m->w.type) {
    case SDC_WIRE_STEP_DONE:
        j = find_job(c, env->step_done->job_id);
        if (j && j->attempt == env->step_done->attempt)
            release_slot(c, j);
        break;
    case SDC_WIRE_JOB_DONE:
        j = find_job(c, env->job_done->job_id);
        if (j && j->attempt == env->job_done->attempt) {
            sdc_job_status_t js;
            SDC_INFO("%s: job %s done", rt->id, j->id);
            if (sdc_job_get(&rt->q, j->id, &js, &err) == SDC_OK && js.state == SDC_JOB_DONE)
                count_done(rt, &js);
            remove_job(c, j);
        }
        break;
    case SDC_WIRE_ERROR: {
        const Sdc__Error *e = env->error;
        j = e->job_id[0] ? find_job(c, e->job_id) : NULL;
        if (!j || j->attempt != e->attempt) {
            SDC_WARN("%s: %s reports: %s", rt->id, env->sender, e->message);
            break;
        }
        sdc_job_status_t js;
        if (sdc_job_get(&rt->q, j->id, &js, &err) == SDC_OK && js.attempt == j->attempt &&
            !sdc_job_state_final(js.state)) {
            SDC_WARN("%s: job %s attempt %u lost: %s", rt->id, j->id, j->attempt, e->message);
            if (j->lost_at <= 0) {
                j->lost_at = sdc_now();
                if (j->pipeline >= 0 && j->pipeline < rt->cf->n_pipelines)
                    c->suspect_until[j->pipeline] = j->lost_at + rt->o.dead_after_ms / 1000.0;
                snprintf(j->lost_why, sizeof(j->lost_why), "%s", e->message);
            }
        } else {
            remove_job(c, j);
        }
        break;
    }
    default:
        sdc_rt_drop(rt, m, "a coordinator does not take %s messages",
                    sdc_wire_type_name(m->w.type));
        break;
    }
    sdc_rt_msg_free(m);
}

static sdc_wire_job_state_t job_state(void *state, const char *job_id, uint32_t attempt)
{
    coord_t *c = state;
    cjob_t *j = find_job(c, job_id);
    if (j)
        return attempt == j->attempt ? SDC_WIRE_JOB_CURRENT : SDC_WIRE_JOB_STALE;
    /* A notice racing the poll that already settled the job: accepted, and
     * ignored by on_message. */
    if (sdc_rt_retired_attempt(&c->retired, job_id) == attempt)
        return SDC_WIRE_JOB_CURRENT;
    return SDC_WIRE_JOB_UNKNOWN;
}

/* UCX declared a text encoder's endpoint failed: no need to wait for its
 * heartbeat to stop. */
static void peer_failed(sdc_rt_t *rt, void *state, int node)
{
    coord_t *c = state;
    if (c->leader && rt->cf->nodes[node].role == SDC_ROLE_TEXT_ENCODER)
        node_failed(rt, c, node, "its endpoint failed");
}

static int busy(sdc_rt_t *rt, void *state)
{
    (void)rt;
    const coord_t *c = state;
    return c->n_jobs > 0;
}

static double load(void *state)
{
    return (double)((const coord_t *)state)->n_jobs;
}

static int peers(sdc_rt_t *rt, void *state, int *nodes, int cap)
{
    (void)rt;
    const coord_t *c = state;
    int n = 0;
    for (int i = 0; i < c->n_te && n < cap; i++)
        nodes[n++] = c->te[i];
    return n;
}

/* The refiner's size rule from its configs (no weights): sizes it refines
 * are multiples of its VAE factor times its patch. */
static sdc_status_t refiner_sizes(const char *dir, coord_t *c, sdc_error_t *err)
{
    char path[4096];
    sdc_dit_config_t dc;
    sdc_vae_refiner_config_t vc;
    sdc_status_t st;
    snprintf(path, sizeof(path), "%s/transformer/config.json", dir);
    if ((st = sdc_dit_config_load(&dc, path, err)) != SDC_OK)
        return sdc_error_wrap(err, "refiner_model %s", dir);
    snprintf(path, sizeof(path), "%s/vae/config.json", dir);
    if ((st = sdc_vae_refiner_config_load(&vc, path, err)) != SDC_OK)
        return sdc_error_wrap(err, "refiner_model %s", dir);
    c->refine_multiple[0] = vc.spatial_compression_ratio * dc.patch_size[0];
    c->refine_multiple[1] = vc.spatial_compression_ratio * dc.patch_size[1];
    return SDC_OK;
}

static sdc_status_t open_coord(sdc_rt_t *rt, void **state, sdc_error_t *err)
{
    coord_t *c = calloc(1, sizeof(*c));
    if (!c)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    *state = c;
    for (int p = 0; p < rt->cf->n_pipelines; p++) {
        int stages = rt->cf->pipelines[p].n_stages;
        c->capacity[p] = rt->cf->max_inflight > stages ? rt->cf->max_inflight : stages;
    }
    for (int i = 0; i < rt->cf->n_nodes; i++) {
        if (rt->cf->nodes[i].role == SDC_ROLE_TEXT_ENCODER)
            c->te[c->n_te++] = i;
        c->n_refiner += rt->cf->nodes[i].role == SDC_ROLE_REFINER;
    }
    sdc_status_t st = c->n_refiner ? refiner_sizes(rt->cf->refiner_model, c, err) : SDC_OK;
    if (st != SDC_OK)
        return st;
    st = sdc_jobs_group_create(&rt->q, err);
    if (st != SDC_OK)
        return sdc_error_wrap(err, "creating the consumer group");
    return SDC_OK;
}

static void close_coord(sdc_rt_t *rt, void *state)
{
    coord_t *c = state;
    sdc_error_t err = {0};
    int released;
    if (c->leader && sdc_leader_release(rt->redis, rt->id, &released, &err) != SDC_OK)
        SDC_WARN("%s: releasing the lease: %s", rt->id, err.msg);
    if (c->has_held)
        free(c->held.e.params_json);
    free(c->jobs);
    free(c);
}

const sdc_role_ops_t sdc_role_coordinator = {
    .role = SDC_ROLE_COORDINATOR,
    .open = open_coord,
    .close = close_coord,
    .peers = peers,
    .job_state = job_state,
    .on_message = on_message,
    .work = work,
    .tick = tick,
    .busy = busy,
    .load = load,
    .peer_failed = peer_failed,
};
