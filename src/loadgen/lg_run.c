/*
 * lg_run.c: one load phase. A single loop offers jobs on schedule, looks at
 * each job in flight every poll interval, and records when each got where.
 *
 * Open loop: arrival times are fixed in advance by a seeded Poisson process
 * and jobs are sent at them whatever the system does (a slow system does
 * not slow the arrivals, so queueing shows in the latency). Latency counts
 * from the intended send time, so a client that falls behind cannot hide
 * the wait (no coordinated omission); how late sends were is reported as
 * schedule lag. Closed loop: a new job is sent as soon as one ends, keeping
 * `concurrency` in flight; intended and actual send times are the same.
 *
 * A job's end is state done (result fetched when asked), failed or
 * cancelled, a vanished job, or the drain deadline. Transient errors while
 * polling (a restarting Redis or gateway) are counted and retried; a job
 * whose polls fail for POLL_GIVE_UP_S ends with that error.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/timer.h"
#include "loadgen/loadgen.h"

#define POLL_GIVE_UP_S 30.0
#define PROGRESS_EVERY_S 0.5
#define RETRY_AFTER_DEFAULT_S 1.0
#define RETRY_AFTER_MAX_S 60.0
#define MAX_SLEEP_S 0.05
#define MAX_JOBS 10000000L

static const char *const err_names[SDC_LG_ERR_COUNT] = {
    [SDC_LG_ERR_NONE] = "none",
    [SDC_LG_ERR_CONNECT] = "connect",
    [SDC_LG_ERR_TIMEOUT] = "timeout",
    [SDC_LG_ERR_RATE_LIMITED] = "rate_limited",
    [SDC_LG_ERR_AUTH] = "auth",
    [SDC_LG_ERR_REJECTED] = "rejected",
    [SDC_LG_ERR_SERVER] = "server_error",
    [SDC_LG_ERR_PROTOCOL] = "protocol",
    [SDC_LG_ERR_JOB_FAILED] = "job_failed",
    [SDC_LG_ERR_JOB_CANCELLED] = "job_cancelled",
    [SDC_LG_ERR_JOB_LOST] = "job_lost",
    [SDC_LG_ERR_RESULT] = "result",
    [SDC_LG_ERR_UNFINISHED] = "unfinished",
};

const char *sdc_lg_err_name(sdc_lg_err_t kind)
{
    return kind >= 0 && kind < SDC_LG_ERR_COUNT ? err_names[kind] : "?";
}

/* SplitMix64: a counter-based stream, so the k-th gap needs no state. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

double sdc_lg_arrival_gap(uint64_t seed, uint64_t k, double rate)
{
    uint64_t r = mix64(mix64(seed) ^ (k * 0xd1342543de82ef95ull + 1));
    /* u in (0, 1]: 53 random bits, never 0, so log(u) is finite. */
    double u = ((double)(r >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    return -log(u) / rate;
}

/* ---- state ---------------------------------------------------------------- */

typedef struct {
    sdc_lg_target_t *t;
    const sdc_lg_config_t *c;
    sdc_lg_run_t *r;
    double t0;          /* sdc_now() at the start */
    int64_t wall0_ms;   /* the wall clock at the same moment */
    size_t *flight;     /* indices of jobs in flight */
    size_t n_flight;
    size_t done, failed;
    double hold_until;  /* closed loop: no sends before this (429) */
} run_t;

static double now_rel(const run_t *x)
{
    return sdc_now() - x->t0;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A wall-clock timestamp as seconds since the run started. */
static double wall_to_rel(const run_t *x, int64_t ms)
{
    return (double)(ms - x->wall0_ms) / 1000.0;
}

static void note(run_t *x, sdc_lg_err_t kind, const char *msg)
{
    if (!x->r->example[kind][0])
        snprintf(x->r->example[kind], sizeof(x->r->example[kind]), "%.*s", SDC_LG_MSG_MAX - 1, msg);
}

static sdc_status_t push_job(run_t *x, sdc_lg_job_t **out, sdc_error_t *err)
{
    sdc_lg_run_t *r = x->r;
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 256;
        sdc_lg_job_t *v = realloc(r->jobs, cap * sizeof(*v));
        size_t *f = realloc(x->flight, cap * sizeof(*f));
        if (v)
            r->jobs = v;
        if (f)
            x->flight = f;
        if (!v || !f)
            return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory after %zu jobs", r->n);
        r->cap = cap;
    }
    *out = &r->jobs[r->n++];
    memset(*out, 0, sizeof(**out));
    (*out)->e2e_s = (*out)->queue_s = (*out)->encode_s = -1;
    (*out)->step_s = (*out)->decode_s = (*out)->fetch_s = -1;
    return SDC_OK;
}

static void finish(run_t *x, sdc_lg_job_t *j, sdc_lg_err_t kind)
{
    j->error = kind;
    j->finished = now_rel(x);
    j->finished_flag = 1;
    if (kind == SDC_LG_ERR_NONE)
        x->done++;
    else
        x->failed++;
}

/* ---- offering ------------------------------------------------------------------ */

static void offer(run_t *x, double intended)
{
    const sdc_lg_config_t *c = x->c;
    sdc_error_t err = {0};
    sdc_lg_job_t *j = NULL;
    if (push_job(x, &j, &err) != SDC_OK) {
        note(x, SDC_LG_ERR_REJECTED, err.msg);
        return;
    }
    size_t index = x->r->n - 1;
    sdc_lg_request_t rq = c->request;
    size_t pi = index % c->prompts->n;
    rq.prompt = c->prompts->prompt[pi];
    if (c->prompts->negative[pi])
        rq.negative_prompt = c->prompts->negative[pi];
    rq.seed = c->request.seed + (uint64_t)index;
    j->intended = intended;
    j->sent = now_rel(x);
    sdc_lg_fault_t f = {0};
    sdc_status_t st = x->t->submit(x->t, &rq, j->id, &f, &err);
    j->submit_s = now_rel(x) - j->sent;
    if (st != SDC_OK) {
        note(x, f.kind, err.msg);
        finish(x, j, f.kind ? f.kind : SDC_LG_ERR_REJECTED);
        /* A closed loop would otherwise resend at once, as fast as the
         * failures come back. */
        if (c->mode == SDC_LG_CLOSED) {
            double wait = f.retry_after_s > 0 ? f.retry_after_s : RETRY_AFTER_DEFAULT_S;
            x->hold_until = now_rel(x) + (wait < RETRY_AFTER_MAX_S ? wait : RETRY_AFTER_MAX_S);
        }
        return;
    }
    j->next_poll = j->sent + c->poll_s;
    x->flight[x->n_flight++] = index;
}

/* ---- watching ------------------------------------------------------------------- */

static double span_s(int64_t a_ms, int64_t b_ms)
{
    return a_ms > 0 && b_ms >= a_ms ? (double)(b_ms - a_ms) / 1000.0 : -1;
}

/* Times from the job's own timestamps. Queue wait ends when the job first
 * left the queue for its last attempt; with one attempt, its first. */
static void record_times(run_t *x, sdc_lg_job_t *j, const sdc_lg_status_t *s)
{
    const int64_t *ts = s->state_ms;
    j->queue_s = span_s(s->created_ms, ts[SDC_JOB_ENCODING]);
    j->encode_s = span_s(ts[SDC_JOB_ENCODING], ts[SDC_JOB_DENOISING]);
    double den = span_s(ts[SDC_JOB_DENOISING], ts[SDC_JOB_DECODING]);
    j->step_s = den >= 0 && s->steps > 0 ? den / (double)s->steps : -1;
    j->decode_s = span_s(ts[SDC_JOB_DECODING], ts[SDC_JOB_DONE]);
    if (x->t->exact_clock && ts[SDC_JOB_DONE] > 0)
        j->e2e_s = wall_to_rel(x, ts[SDC_JOB_DONE]) - j->intended;
    else
        j->e2e_s = now_rel(x) - j->intended;
    j->attempt = s->attempt;
}

/* One look at one job; returns 1 when the job has ended. */
static int watch(run_t *x, sdc_lg_job_t *j)
{
    const sdc_lg_config_t *c = x->c;
    sdc_lg_status_t s;
    sdc_lg_fault_t f = {0};
    sdc_error_t err = {0};
    double now = now_rel(x);
    j->next_poll = now + c->poll_s;
    if (x->t->poll(x->t, j->id, &s, &f, &err) != SDC_OK) {
        sdc_lg_err_t kind = f.kind ? f.kind : SDC_LG_ERR_PROTOCOL;
        note(x, kind, err.msg);
        if (kind == SDC_LG_ERR_JOB_LOST) {
            finish(x, j, kind);
            return 1;
        }
        x->r->poll_errors[kind]++;
        if (kind == SDC_LG_ERR_RATE_LIMITED && f.retry_after_s > c->poll_s)
            j->next_poll = now + (f.retry_after_s < RETRY_AFTER_MAX_S ? f.retry_after_s
                                                                       : RETRY_AFTER_MAX_S);
        if (!j->failing_since)
            j->failing_since = now;
        if (now - j->failing_since > POLL_GIVE_UP_S) {
            finish(x, j, kind);
            return 1;
        }
        return 0;
    }
    j->failing_since = 0;
    j->last = s;
    j->attempt = s.attempt;
    if (s.state == SDC_JOB_FAILED || s.state == SDC_JOB_CANCELLED) {
        sdc_lg_err_t kind = s.state == SDC_JOB_FAILED ? SDC_LG_ERR_JOB_FAILED
                                                      : SDC_LG_ERR_JOB_CANCELLED;
        note(x, kind, s.error[0] ? s.error : "no reason given");
        finish(x, j, kind);
        return 1;
    }
    if (s.state != SDC_JOB_DONE)
        return 0;
    record_times(x, j, &s);
    if (c->fetch_result) {
        double t = now_rel(x);
        if (x->t->result(x->t, j->id, &j->result_bytes, &f, &err) != SDC_OK) {
            note(x, f.kind ? f.kind : SDC_LG_ERR_RESULT, err.msg);
            finish(x, j, f.kind ? f.kind : SDC_LG_ERR_RESULT);
            return 1;
        }
        j->fetch_s = now_rel(x) - t;
    }
    finish(x, j, SDC_LG_ERR_NONE);
    return 1;
}

/* Polls the jobs whose turn it is; returns the earliest next poll. */
static double watch_due(run_t *x)
{
    double next = INFINITY;
    size_t keep = 0;
    for (size_t i = 0; i < x->n_flight; i++) {
        sdc_lg_job_t *j = &x->r->jobs[x->flight[i]];
        if (j->next_poll <= now_rel(x) && watch(x, j))
            continue;
        x->flight[keep++] = x->flight[i];
        if (j->next_poll < next)
            next = j->next_poll;
    }
    x->n_flight = keep;
    return next;
}

static void progress(run_t *x, int final)
{
    if (!x->c->progress)
        return;
    sdc_lg_progress_t p = {
        .elapsed_s = now_rel(x),
        .submitted = x->r->n,
        .done = x->done,
        .failed = x->failed,
        .in_flight = x->n_flight,
        .final = final,
    };
    x->c->progress(x->c->progress_arg, &p);
}

static void sleep_s(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    nanosleep(&ts, NULL); /* a signal cuts it short: the loop looks again */
}

static sdc_status_t check_config(const sdc_lg_config_t *c, sdc_error_t *err)
{
    if (c->mode == SDC_LG_OPEN && !(c->rate > 0 && isfinite(c->rate)))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "open loop needs a rate > 0");
    if (c->mode == SDC_LG_CLOSED && c->concurrency < 1)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "closed loop needs a concurrency >= 1");
    if (c->count <= 0 && c->duration_s <= 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "a run needs a count or a duration");
    if (c->count > MAX_JOBS)
        return sdc_error_set(err, SDC_ERR_RANGE, "count %ld is more than %ld", c->count, MAX_JOBS);
    if (!c->prompts || !c->prompts->n)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "no prompts");
    if (!(c->poll_s > 0))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "poll interval must be > 0");
    return SDC_OK;
}

/* ---- the loop ---------------------------------------------------------------------- */

sdc_status_t sdc_lg_run(sdc_lg_target_t *t, const sdc_lg_config_t *c, sdc_lg_run_t *out,
                        sdc_error_t *err)
{
    memset(out, 0, sizeof(*out));
    sdc_status_t st = check_config(c, err);
    if (st != SDC_OK)
        return st;
    run_t x = {.t = t, .c = c, .r = out};
    x.t0 = sdc_now();
    x.wall0_ms = wall_ms();
    /* Closed loop sends at once; open loop at the first arrival. */
    double next_arrival = c->mode == SDC_LG_OPEN ? sdc_lg_arrival_gap(c->seed, 0, c->rate) : 0;
    uint64_t arrivals = 1;
    int offering = 1;
    double drain_until = 0, next_progress = 0;
    for (;;) {
        double now = now_rel(&x);
        int stop = c->stop && *c->stop;
        if (offering && (stop || (c->count > 0 && (long)out->n >= c->count) ||
                         (c->duration_s > 0 && now >= c->duration_s))) {
            offering = 0;
            drain_until = now + c->drain_s;
        }
        if (offering && c->mode == SDC_LG_OPEN) {
            while (offering && next_arrival <= now_rel(&x) &&
                   (c->count <= 0 || (long)out->n < c->count) &&
                   (c->duration_s <= 0 || next_arrival < c->duration_s)) {
                offer(&x, next_arrival);
                next_arrival += sdc_lg_arrival_gap(c->seed, arrivals++, c->rate);
            }
        } else if (offering) {
            while (x.n_flight < (size_t)c->concurrency && now_rel(&x) >= x.hold_until &&
                   (c->count <= 0 || (long)out->n < c->count))
                offer(&x, now_rel(&x));
        }
        double next_poll = watch_due(&x);
        now = now_rel(&x);
        if (now >= next_progress) {
            progress(&x, 0);
            next_progress = now + PROGRESS_EVERY_S;
        }
        if (!offering && (x.n_flight == 0 || stop || now >= drain_until))
            break;
        double wake = fmin(next_poll, next_progress);
        if (offering)
            wake = fmin(wake, c->mode == SDC_LG_OPEN ? next_arrival
                              : x.n_flight < (size_t)c->concurrency ? x.hold_until : INFINITY);
        else
            wake = fmin(wake, drain_until);
        sleep_s(fmin(wake - now_rel(&x), MAX_SLEEP_S));
    }
    for (size_t i = 0; i < x.n_flight; i++) {
        sdc_lg_job_t *j = &out->jobs[x.flight[i]];
        note(&x, SDC_LG_ERR_UNFINISHED, "still running when the run ended");
        finish(&x, j, SDC_LG_ERR_UNFINISHED);
    }
    x.n_flight = 0;
    out->interrupted = c->stop && *c->stop;
    /* From the first arrival to the last end. */
    double first = INFINITY, last = 0;
    for (size_t i = 0; i < out->n; i++) {
        first = fmin(first, out->jobs[i].intended);
        last = fmax(last, out->jobs[i].finished);
    }
    out->wall_s = out->n ? last - first : 0;
    progress(&x, 1);
    free(x.flight);
    return SDC_OK;
}

void sdc_lg_run_free(sdc_lg_run_t *r)
{
    free(r->jobs);
    memset(r, 0, sizeof(*r));
}
