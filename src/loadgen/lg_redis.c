/*
 * lg_redis.c: the load generator's Redis target: jobs go straight into the
 * cluster's queue through cluster/jobs.h, as sdc-submit sends them, and
 * their state is read from the job hash.
 *
 * Clocks: the job hash's created_ms is the submitter's (this host's) clock,
 * every later timestamp Redis' (the Lua scripts call TIME). The offset
 * between the two is measured at open with TIME (the sample with the
 * shortest round trip, error at most half of it) and taken off Redis'
 * timestamps, so all of a job's times are on this host's clock.
 */
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loadgen/loadgen.h"

#define CLOCK_SAMPLES 7
#define PNG_SIGNATURE "\x89PNG\r\n\x1a\n"

typedef struct {
    sdc_redis_t *r;
    sdc_jobs_t q;
    int64_t offset_ms; /* Redis minus local */
} redis_ctx_t;

/* A Redis failure: the connection (after the client's own retries); when
 * submitting, a refused job; when reading, a job that is gone or a job
 * hash that does not read. */
static sdc_status_t fail(sdc_lg_fault_t *f, sdc_status_t st, int reading)
{
    f->kind = st == SDC_ERR_IO               ? SDC_LG_ERR_CONNECT
              : !reading                     ? SDC_LG_ERR_REJECTED
              : st == SDC_ERR_NOT_FOUND      ? SDC_LG_ERR_JOB_LOST
                                             : SDC_LG_ERR_PROTOCOL;
    return st;
}

static sdc_status_t measure_offset(redis_ctx_t *c, sdc_error_t *err)
{
    double best_rtt = 1e9;
    for (int i = 0; i < CLOCK_SAMPLES; i++) {
        redisReply *rep;
        struct timespec a, b;
        clock_gettime(CLOCK_REALTIME, &a);
        sdc_status_t st = sdc_redis_command(c->r, &rep, err, "TIME");
        clock_gettime(CLOCK_REALTIME, &b);
        if (st != SDC_OK)
            return st;
        long long sec = 0, usec = 0;
        if ((st = sdc_redis_expect_array(rep, 2, "TIME", err)) == SDC_OK &&
            (st = sdc_redis_reply_int(rep->element[0], "TIME seconds", &sec, err)) == SDC_OK)
            st = sdc_redis_reply_int(rep->element[1], "TIME microseconds", &usec, err);
        sdc_redis_reply_free(rep);
        if (st != SDC_OK)
            return st;
        double la = (double)a.tv_sec * 1e3 + (double)a.tv_nsec * 1e-6;
        double lb = (double)b.tv_sec * 1e3 + (double)b.tv_nsec * 1e-6;
        if (lb - la < best_rtt) {
            best_rtt = lb - la;
            double server = (double)sec * 1e3 + (double)usec * 1e-3;
            c->offset_ms = (int64_t)(server - (la + lb) / 2 + (server >= (la + lb) / 2 ? 0.5 : -0.5));
        }
    }
    return SDC_OK;
}

static sdc_status_t redis_submit(sdc_lg_target_t *t, const sdc_lg_request_t *rq,
                                 char id[SDC_JOB_ID_MAX + 1], sdc_lg_fault_t *f, sdc_error_t *err)
{
    redis_ctx_t *c = t->ctx;
    sdc_job_params_t p;
    sdc_job_params_init(&p);
    sdc_status_t st = sdc_job_id_new(p.id, err);
    if (st != SDC_OK)
        return fail(f, st, 0);
    p.prompt = strdup(rq->prompt);
    p.negative_prompt = rq->negative_prompt ? strdup(rq->negative_prompt) : NULL;
    if (!p.prompt || (rq->negative_prompt && !p.negative_prompt)) {
        sdc_job_params_free(&p);
        f->kind = SDC_LG_ERR_REJECTED;
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory for a job");
    }
    p.width = rq->width;
    p.height = rq->height;
    p.steps = rq->steps;
    p.seed = rq->seed;
    p.has_guidance = rq->has_guidance;
    p.guidance = rq->guidance;
    st = sdc_job_submit(&c->q, &p, NULL, err);
    if (st == SDC_OK)
        memcpy(id, p.id, sizeof(p.id));
    sdc_job_params_free(&p);
    return st == SDC_OK ? SDC_OK : fail(f, st, 0);
}

static int64_t to_local(const redis_ctx_t *c, int64_t server_ms)
{
    return server_ms ? server_ms - c->offset_ms : 0;
}

static sdc_status_t redis_poll(sdc_lg_target_t *t, const char *id, sdc_lg_status_t *s,
                               sdc_lg_fault_t *f, sdc_error_t *err)
{
    redis_ctx_t *c = t->ctx;
    sdc_job_status_t js;
    sdc_status_t st = sdc_job_get(&c->q, id, &js, err);
    if (st != SDC_OK)
        return fail(f, st, 1);
    memset(s, 0, sizeof(*s));
    s->state = (int)js.state;
    s->attempt = js.attempt;
    s->step = js.step;
    s->steps = js.steps;
    s->created_ms = js.created_ms; /* the submitter's clock: ours */
    s->state_ms[SDC_JOB_QUEUED] = js.attempt == 1 ? js.created_ms
                                                  : to_local(c, js.state_ms[SDC_JOB_QUEUED]);
    for (int k = SDC_JOB_ENCODING; k < SDC_JOB_STATE_COUNT; k++)
        s->state_ms[k] = to_local(c, js.state_ms[k]);
    snprintf(s->error, sizeof(s->error), "%.*s", (int)sizeof(s->error) - 1, js.error);
    return SDC_OK;
}

static sdc_status_t redis_result(sdc_lg_target_t *t, const char *id, size_t *bytes,
                                 sdc_lg_fault_t *f, sdc_error_t *err)
{
    redis_ctx_t *c = t->ctx;
    unsigned char *png = NULL;
    size_t len = 0;
    sdc_status_t st = sdc_job_result_get(&c->q, id, &png, &len, err);
    if (st != SDC_OK) {
        f->kind = st == SDC_ERR_IO ? SDC_LG_ERR_CONNECT : SDC_LG_ERR_RESULT;
        return st;
    }
    if (len < 8 || memcmp(png, PNG_SIGNATURE, 8) != 0) {
        free(png);
        f->kind = SDC_LG_ERR_RESULT;
        return sdc_error_set(err, SDC_ERR_FORMAT, "job %s: the result (%zu bytes) is not a PNG",
                             id, len);
    }
    free(png);
    *bytes = len;
    return SDC_OK;
}

static void redis_close(sdc_lg_target_t *t)
{
    redis_ctx_t *c = t->ctx;
    if (c) {
        sdc_redis_close(c->r);
        free(c);
    }
    t->ctx = NULL;
}

sdc_status_t sdc_lg_redis_open(sdc_lg_target_t *t, const char *url, const char *prefix,
                               sdc_error_t *err)
{
    memset(t, 0, sizeof(*t));
    redis_ctx_t *c = calloc(1, sizeof(*c));
    if (!c)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    sdc_redis_opts_t ro = {.url = url, .prefix = prefix};
    sdc_status_t st = sdc_redis_open(&c->r, &ro, err);
    if (st != SDC_OK)
        goto err_free;
    if ((st = sdc_jobs_init(&c->q, c->r, NULL, err)) != SDC_OK ||
        (st = measure_offset(c, err)) != SDC_OK)
        goto err_close;
    snprintf(t->name, sizeof(t->name), "redis %s", url ? url : SDC_REDIS_DEFAULT_URL);
    t->ctx = c;
    t->exact_clock = 1;
    t->clock_offset_ms = (double)c->offset_ms;
    t->submit = redis_submit;
    t->poll = redis_poll;
    t->result = redis_result;
    t->close = redis_close;
    return SDC_OK;

err_close:
    sdc_redis_close(c->r);
err_free:
    free(c);
    return st;
}
