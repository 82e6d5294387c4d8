/*
 * bench_coordinator.c: how many jobs per second the cluster's Redis job path
 * carries when the stages do no work: the ceiling the coordinator and the
 * schema (cluster/jobs.h) put on a cluster, whatever its GPUs.
 *
 * Every job makes the trip a real one makes through Redis, with null
 * compute: sdc_job_submit by a client; sdc_job_claim (batched) and
 * sdc_job_start by the coordinator; sdc_job_advance to denoising (one step,
 * as the last stage reports it), sdc_job_advance to decoding and
 * sdc_job_complete with a small PNG-sized result by the "stages". Two runs:
 *
 *   serial      one thread, one connection, one job at a time through the
 *               whole trip: the per-job latency of the path
 *   concurrent  --submitters client threads, one coordinator thread that
 *               claims and starts, --stages threads that advance and
 *               complete, each thread on its own connection, all running at
 *               once: the throughput a cluster gets
 *
 * Both check that every job ended done exactly once (a refused transition is
 * an error). Prints one JSON object (--json) or a short report. Keys go
 * under a fresh prefix; point it at a scratch Redis (bench/cluster.sh
 * starts one).
 */
#include <errno.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/jobs.h"
#include "cluster/redis.h"
#include "common/timer.h"

#define MAX_THREADS 64

typedef struct {
    const char *url;
    char prefix[SDC_REDIS_PREFIX_MAX + 1];
    long jobs, serial_jobs;
    int submitters, stages, batch;
    size_t result_bytes;
    int json;
} opts_t;

/* ---- per-operation timing ------------------------------------------------------ */

enum { OP_SUBMIT, OP_CLAIM, OP_START, OP_ADVANCE, OP_COMPLETE, OP_COUNT };
static const char *const op_names[OP_COUNT] = {"submit", "claim", "start", "advance", "complete"};

typedef struct {
    double sum_s[OP_COUNT];
    long n[OP_COUNT];
} op_times_t;

static void op_add(op_times_t *t, int op, double s)
{
    t->sum_s[op] += s;
    t->n[op]++;
}

static void op_merge(op_times_t *into, const op_times_t *from)
{
    for (int i = 0; i < OP_COUNT; i++) {
        into->sum_s[i] += from->sum_s[i];
        into->n[i] += from->n[i];
    }
}

/* ---- shared state of a run -------------------------------------------------------- */

typedef struct {
    char id[SDC_JOB_ID_MAX + 1];
    int64_t attempt;
} started_t;

/* Jobs the coordinator started, for the stage threads: a bounded FIFO. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    started_t *v;
    long cap, head, tail; /* head: next to pop; tail: next free */
    int closed;
} handoff_t;

typedef struct {
    const opts_t *o;
    handoff_t hand;
    long next_submit; /* next job index to submit (under hand.mu) */
    unsigned char *result;
    int failed;       /* any thread hit an error */
    char error[SDC_ERROR_MSG_MAX + 64];
    pthread_mutex_t err_mu;
} run_t;

typedef struct {
    run_t *run;
    int index;
    op_times_t times;
    long done;
} worker_t;

static void run_fail(run_t *run, const char *who, const sdc_error_t *err)
{
    pthread_mutex_lock(&run->err_mu);
    if (!run->failed)
        snprintf(run->error, sizeof(run->error), "%s: %s", who, err->msg);
    run->failed = 1;
    pthread_mutex_unlock(&run->err_mu);
    pthread_mutex_lock(&run->hand.mu);
    run->hand.closed = 1;
    pthread_cond_broadcast(&run->hand.cv);
    pthread_mutex_unlock(&run->hand.mu);
}

static int open_jobs(const opts_t *o, sdc_redis_t **r, sdc_jobs_t *q, sdc_error_t *err)
{
    sdc_redis_opts_t ro = {.url = o->url, .prefix = o->prefix};
    if (sdc_redis_open(r, &ro, err) != SDC_OK)
        return -1;
    /* Results expire quickly: the bench makes many. */
    sdc_jobs_opts_t jo = {.result_ttl_ms = 60000, .retention_ms = 60000};
    if (sdc_jobs_init(q, *r, &jo, err) != SDC_OK) {
        sdc_redis_close(*r);
        return -1;
    }
    return 0;
}

static void job_params(sdc_job_params_t *p, long i)
{
    static const char embeds[] = "/nonexistent/bench.safetensors";
    sdc_job_params_init(p);
    snprintf(p->id, sizeof(p->id), "b%ld", i);
    p->embeds = (char *)embeds; /* not freed: params_free is not called */
    p->width = p->height = 1024;
    p->steps = 1;
    p->seed = (uint64_t)i;
}

/* The stages' part of a job: last step reported, decoded, complete. */
static sdc_status_t finish_job(sdc_jobs_t *q, const run_t *run, const char *id, int64_t attempt,
                               op_times_t *t, sdc_error_t *err)
{
    sdc_job_outcome_t oc;
    double t0 = sdc_now();
    sdc_status_t st = sdc_job_advance(q, id, attempt, SDC_JOB_DENOISING, 1, &oc, err);
    double t1 = sdc_now();
    if (st == SDC_OK && oc == SDC_JOB_APPLIED)
        st = sdc_job_advance(q, id, attempt, SDC_JOB_DECODING, 1, &oc, err);
    double t2 = sdc_now();
    if (st == SDC_OK && oc == SDC_JOB_APPLIED)
        st = sdc_job_complete(q, id, attempt, run->result, run->o->result_bytes, &oc, err);
    double t3 = sdc_now();
    if (st == SDC_OK && oc != SDC_JOB_APPLIED)
        return sdc_error_set(err, SDC_ERR_INTERNAL, "job %s: a transition was not applied "
                             "(outcome %d)", id, (int)oc);
    op_add(t, OP_ADVANCE, t1 - t0);
    op_add(t, OP_ADVANCE, t2 - t1);
    op_add(t, OP_COMPLETE, t3 - t2);
    return st;
}

/* Claims up to batch entries and starts each; *n gets how many. */
static sdc_status_t claim_and_start(sdc_jobs_t *q, const opts_t *o, int block_ms,
                                    started_t *out, long *n, op_times_t *t, sdc_error_t *err)
{
    sdc_job_entry_t *e = NULL;
    size_t ne = 0;
    double t0 = sdc_now();
    sdc_status_t st = sdc_job_claim(q, "bench-coordinator", o->batch, block_ms, 0, &e, &ne, err);
    if (st != SDC_OK)
        return st;
    if (ne)
        op_add(t, OP_CLAIM, sdc_now() - t0);
    *n = 0;
    for (size_t i = 0; i < ne && st == SDC_OK; i++) {
        sdc_job_outcome_t oc;
        if (e[i].problem[0]) {
            st = sdc_error_set(err, SDC_ERR_FORMAT, "entry %s: %s", e[i].entry_id, e[i].problem);
            break;
        }
        t0 = sdc_now();
        st = sdc_job_start(q, e[i].job_id, e[i].attempt, e[i].entry_id, "bench-coordinator", 0, &oc,
                           err);
        op_add(t, OP_START, sdc_now() - t0);
        if (st == SDC_OK && oc != SDC_JOB_APPLIED)
            st = sdc_error_set(err, SDC_ERR_INTERNAL, "job %s: start not applied", e[i].job_id);
        if (st == SDC_OK) {
            memcpy(out[*n].id, e[i].job_id, sizeof(out[*n].id));
            out[(*n)++].attempt = e[i].attempt;
        }
    }
    sdc_job_entries_free(e, ne);
    return st;
}

/* ---- serial -------------------------------------------------------------------------- */

static sdc_status_t run_serial(const opts_t *o, run_t *run, double *wall, op_times_t *t,
                               sdc_error_t *err)
{
    sdc_redis_t *r;
    sdc_jobs_t q;
    if (open_jobs(o, &r, &q, err))
        return err->code;
    sdc_status_t st = sdc_jobs_group_create(&q, err);
    started_t s;
    double t0 = sdc_now();
    for (long i = 0; i < o->serial_jobs && st == SDC_OK; i++) {
        sdc_job_params_t p;
        job_params(&p, o->jobs + i); /* ids after the concurrent run's */
        double ts = sdc_now();
        if ((st = sdc_job_submit(&q, &p, NULL, err)) != SDC_OK)
            break;
        op_add(t, OP_SUBMIT, sdc_now() - ts);
        long n = 0;
        if ((st = claim_and_start(&q, o, 0, &s, &n, t, err)) != SDC_OK)
            break;
        if (n != 1) {
            st = sdc_error_set(err, SDC_ERR_INTERNAL, "claimed %ld entries, expected 1", n);
            break;
        }
        st = finish_job(&q, run, s.id, s.attempt, t, err);
    }
    *wall = sdc_now() - t0;
    sdc_redis_close(r);
    return st;
}

/* ---- concurrent ------------------------------------------------------------------------ */

static void *submitter(void *arg)
{
    worker_t *w = arg;
    run_t *run = w->run;
    sdc_redis_t *r;
    sdc_jobs_t q;
    sdc_error_t err = {0};
    if (open_jobs(run->o, &r, &q, &err)) {
        run_fail(run, "submitter", &err);
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&run->hand.mu);
        long i = run->next_submit < run->o->jobs && !run->hand.closed ? run->next_submit++ : -1;
        pthread_mutex_unlock(&run->hand.mu);
        if (i < 0)
            break;
        sdc_job_params_t p;
        job_params(&p, i);
        double t0 = sdc_now();
        if (sdc_job_submit(&q, &p, NULL, &err) != SDC_OK) {
            run_fail(run, "submit", &err);
            break;
        }
        op_add(&w->times, OP_SUBMIT, sdc_now() - t0);
    }
    sdc_redis_close(r);
    return NULL;
}

static void *coordinator(void *arg)
{
    worker_t *w = arg;
    run_t *run = w->run;
    handoff_t *h = &run->hand;
    sdc_redis_t *r;
    sdc_jobs_t q;
    sdc_error_t err = {0};
    started_t *batch = malloc((size_t)run->o->batch * sizeof(*batch));
    if (!batch || open_jobs(run->o, &r, &q, &err)) {
        if (!batch)
            sdc_error_set(&err, SDC_ERR_NOMEM, "out of memory");
        run_fail(run, "coordinator", &err);
        free(batch);
        return NULL;
    }
    long started = 0;
    while (started < run->o->jobs && !run->failed) {
        long n = 0;
        if (claim_and_start(&q, run->o, 100, batch, &n, &w->times, &err) != SDC_OK) {
            run_fail(run, "coordinator", &err);
            break;
        }
        pthread_mutex_lock(&h->mu);
        for (long i = 0; i < n; i++) {
            while (h->tail - h->head == h->cap && !h->closed)
                pthread_cond_wait(&h->cv, &h->mu);
            h->v[h->tail++ % h->cap] = batch[i];
        }
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
        started += n;
    }
    pthread_mutex_lock(&h->mu);
    h->closed = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    sdc_redis_close(r);
    free(batch);
    return NULL;
}

static void *stage(void *arg)
{
    worker_t *w = arg;
    run_t *run = w->run;
    handoff_t *h = &run->hand;
    sdc_redis_t *r;
    sdc_jobs_t q;
    sdc_error_t err = {0};
    if (open_jobs(run->o, &r, &q, &err)) {
        run_fail(run, "stage", &err);
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&h->mu);
        while (h->head == h->tail && !h->closed)
            pthread_cond_wait(&h->cv, &h->mu);
        if (h->head == h->tail || run->failed) {
            pthread_mutex_unlock(&h->mu);
            break;
        }
        started_t s = h->v[h->head++ % h->cap];
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
        if (finish_job(&q, run, s.id, s.attempt, &w->times, &err) != SDC_OK) {
            run_fail(run, "stage", &err);
            break;
        }
        w->done++;
    }
    sdc_redis_close(r);
    return NULL;
}

static sdc_status_t run_concurrent(const opts_t *o, run_t *run, double *wall, long *done,
                                   op_times_t *t, sdc_error_t *err)
{
    sdc_redis_t *r;
    sdc_jobs_t q;
    if (open_jobs(o, &r, &q, err))
        return err->code;
    sdc_status_t st = sdc_jobs_group_create(&q, err);
    sdc_redis_close(r);
    if (st != SDC_OK)
        return st;
    int n = o->submitters + 1 + o->stages;
    worker_t w[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    memset(w, 0, sizeof(w));
    double t0 = sdc_now();
    int started = 0;
    for (int i = 0; i < n; i++) {
        void *(*fn)(void *) = i < o->submitters ? submitter : i == o->submitters ? coordinator
                                                                                : stage;
        w[i].run = run;
        w[i].index = i;
        if (pthread_create(&th[i], NULL, fn, &w[i]) != 0) {
            sdc_error_set(err, SDC_ERR_IO, "pthread_create: %s", strerror(errno));
            run_fail(run, "bench", err);
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    *wall = sdc_now() - t0;
    *done = 0;
    for (int i = 0; i < started; i++) {
        op_merge(t, &w[i].times);
        *done += w[i].done;
    }
    if (run->failed)
        return sdc_error_set(err, SDC_ERR_IO, "%s", run->error);
    if (*done != o->jobs)
        return sdc_error_set(err, SDC_ERR_INTERNAL, "%ld of %ld jobs completed", *done, o->jobs);
    return SDC_OK;
}

/* Every job is done, once: its state and its result are there. */
static sdc_status_t verify(const opts_t *o, long first, long count, sdc_error_t *err)
{
    sdc_redis_t *r;
    sdc_jobs_t q;
    if (open_jobs(o, &r, &q, err))
        return err->code;
    sdc_status_t st = SDC_OK;
    for (long i = first; i < first + count && st == SDC_OK; i++) {
        char id[SDC_JOB_ID_MAX + 1];
        sdc_job_status_t s;
        snprintf(id, sizeof(id), "b%ld", i);
        if ((st = sdc_job_get(&q, id, &s, err)) == SDC_OK &&
            (s.state != SDC_JOB_DONE || s.attempt != 1 || !s.has_result))
            st = sdc_error_set(err, SDC_ERR_INTERNAL, "job %s: state %s, attempt %" PRId64
                               ", result %d", id, sdc_job_state_name(s.state), s.attempt,
                               s.has_result);
    }
    sdc_queue_depth_t d;
    if (st == SDC_OK && (st = sdc_jobs_depth(&q, &d, err)) == SDC_OK && d.length != 0)
        st = sdc_error_set(err, SDC_ERR_INTERNAL, "%" PRId64 " entries left in the stream",
                           d.length);
    sdc_redis_close(r);
    return st;
}

/* CPU seconds the Redis server has used (user + system), from INFO cpu: the
 * server is single-threaded, so jobs / its CPU time bounds a cluster's rate. */
static sdc_status_t redis_cpu_s(const opts_t *o, double *out, sdc_error_t *err)
{
    sdc_redis_t *r;
    sdc_jobs_t q;
    redisReply *rep;
    if (open_jobs(o, &r, &q, err))
        return err->code;
    sdc_status_t st = sdc_redis_command(r, &rep, err, "INFO cpu");
    if (st == SDC_OK && (st = sdc_redis_expect(rep, REDIS_REPLY_STRING, "INFO", err)) == SDC_OK) {
        const char *u = strstr(rep->str, "used_cpu_user:");
        const char *s = strstr(rep->str, "used_cpu_sys:");
        if (u && s)
            *out = strtod(u + strlen("used_cpu_user:"), NULL) +
                   strtod(s + strlen("used_cpu_sys:"), NULL);
        else
            st = sdc_error_set(err, SDC_ERR_FORMAT, "INFO cpu: no used_cpu_user/used_cpu_sys");
    }
    if (st == SDC_OK || rep)
        sdc_redis_reply_free(rep);
    sdc_redis_close(r);
    return st;
}

/* ---- main --------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
"usage: bench_coordinator [--redis URL] [options]\n"
"\n"
"Jobs per second through the cluster's Redis job path with null stages:\n"
"submit, claim, start, advance (denoising, decoding), complete.\n"
"\n"
"  -r, --redis URL        a scratch Redis (default redis://127.0.0.1:6379)\n"
"      --prefix P         key prefix (default bench<pid>:)\n"
"  -n, --jobs N           jobs of the concurrent run (default 20000)\n"
"      --serial-jobs N    jobs of the serial run (default 2000, 0: skip it)\n"
"      --submitters C     client threads submitting (default 2)\n"
"      --stages S         threads advancing and completing jobs (default 2)\n"
"      --batch B          entries per claim (default 64)\n"
"      --result-bytes N   size of each job's result (default 4096)\n"
"      --json             one JSON object on stdout\n"
"  -h, --help\n");
}

static int parse_pos(const char *flag, const char *s, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > hi) {
        fprintf(stderr, "bench_coordinator: %s: '%s' is not an integer in 0..%ld\n", flag, s, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static void print_ops(const op_times_t *t, int json)
{
    for (int i = 0; i < OP_COUNT; i++) {
        double us = t->n[i] ? 1e6 * t->sum_s[i] / (double)t->n[i] : 0;
        if (json)
            printf("%s\"%s\": {\"count\": %ld, \"mean_us\": %.1f}", i ? ", " : "", op_names[i],
                   t->n[i], us);
        else
            printf("    %-8s %8ld calls, mean %7.1f us\n", op_names[i], t->n[i], us);
    }
}

int main(int argc, char **argv)
{
    opts_t o = {.url = "redis://127.0.0.1:6379", .jobs = 20000, .serial_jobs = 2000,
                .submitters = 2, .stages = 2, .batch = 64, .result_bytes = 4096};
    snprintf(o.prefix, sizeof(o.prefix), "bench%ld:", (long)getpid());
    enum { OPT_PREFIX = 256, OPT_SERIAL, OPT_SUBMITTERS, OPT_STAGES, OPT_BATCH, OPT_RESULT,
           OPT_JSON };
    static const struct option opts[] = {
        {"redis", required_argument, 0, 'r'},        {"prefix", required_argument, 0, OPT_PREFIX},
        {"jobs", required_argument, 0, 'n'},         {"serial-jobs", required_argument, 0, OPT_SERIAL},
        {"submitters", required_argument, 0, OPT_SUBMITTERS},
        {"stages", required_argument, 0, OPT_STAGES}, {"batch", required_argument, 0, OPT_BATCH},
        {"result-bytes", required_argument, 0, OPT_RESULT},
        {"json", no_argument, 0, OPT_JSON},          {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    long v;
    while ((c = getopt_long(argc, argv, "r:n:h", opts, NULL)) != -1) {
        switch (c) {
        case 'r': o.url = optarg; break;
        case OPT_PREFIX:
            if (strlen(optarg) > SDC_REDIS_PREFIX_MAX) {
                fprintf(stderr, "bench_coordinator: --prefix is too long\n");
                return 2;
            }
            strcpy(o.prefix, optarg);
            break;
        case 'n': if (parse_pos("--jobs", optarg, 10000000, &o.jobs)) return 2; break;
        case OPT_SERIAL: if (parse_pos("--serial-jobs", optarg, 10000000, &o.serial_jobs)) return 2; break;
        case OPT_SUBMITTERS: if (parse_pos("--submitters", optarg, 16, &v) || !v) return 2; o.submitters = (int)v; break;
        case OPT_STAGES: if (parse_pos("--stages", optarg, 16, &v) || !v) return 2; o.stages = (int)v; break;
        case OPT_BATCH: if (parse_pos("--batch", optarg, 10000, &v) || !v) return 2; o.batch = (int)v; break;
        case OPT_RESULT: if (parse_pos("--result-bytes", optarg, 64 << 20, &v)) return 2; o.result_bytes = (size_t)v; break;
        case OPT_JSON: o.json = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (o.jobs < 1) {
        fprintf(stderr, "bench_coordinator: --jobs must be at least 1\n");
        return 2;
    }

    sdc_error_t err = {0};
    run_t run = {.o = &o};
    pthread_mutex_init(&run.hand.mu, NULL);
    pthread_cond_init(&run.hand.cv, NULL);
    pthread_mutex_init(&run.err_mu, NULL);
    run.hand.cap = 4 * o.batch;
    run.hand.v = malloc((size_t)run.hand.cap * sizeof(*run.hand.v));
    run.result = calloc(1, o.result_bytes ? o.result_bytes : 1);
    int rc = 1;
    if (!run.hand.v || !run.result) {
        fprintf(stderr, "bench_coordinator: out of memory\n");
        goto out;
    }
    memcpy(run.result, "\x89PNG\r\n\x1a\n", o.result_bytes < 8 ? o.result_bytes : 8);

    op_times_t ts, tc;
    memset(&ts, 0, sizeof(ts));
    memset(&tc, 0, sizeof(tc));
    double wall_s = 0, wall_c = 0;
    long done = 0;
    double c0, c1, cpu_c = 0, cpu_s = 0;
    if (redis_cpu_s(&o, &c0, &err) != SDC_OK ||
        run_concurrent(&o, &run, &wall_c, &done, &tc, &err) != SDC_OK ||
        redis_cpu_s(&o, &c1, &err) != SDC_OK || verify(&o, 0, o.jobs, &err) != SDC_OK)
        goto fail;
    cpu_c = c1 - c0;
    if (o.serial_jobs) {
        if (redis_cpu_s(&o, &c0, &err) != SDC_OK ||
            run_serial(&o, &run, &wall_s, &ts, &err) != SDC_OK ||
            redis_cpu_s(&o, &c1, &err) != SDC_OK ||
            verify(&o, o.jobs, o.serial_jobs, &err) != SDC_OK)
            goto fail;
        cpu_s = c1 - c0;
    }

    /* Redis runs commands on one thread: jobs per second of its CPU bounds
     * the rate of any cluster using it, whatever the clients. */
    double rate_c = (double)o.jobs / wall_c, rate_s = o.serial_jobs ? o.serial_jobs / wall_s : 0;
    double us_c = 1e6 * cpu_c / (double)o.jobs;
    double us_s = o.serial_jobs ? 1e6 * cpu_s / (double)o.serial_jobs : 0;
    if (o.json) {
        printf("{\"jobs\": %ld, \"submitters\": %d, \"stages\": %d, \"batch\": %d, "
               "\"result_bytes\": %zu, \"concurrent\": {\"wall_s\": %.4f, \"jobs_per_s\": %.1f, "
               "\"redis_cpu_us_per_job\": %.1f, \"redis_bound_jobs_per_s\": %.0f, \"ops\": {",
               o.jobs, o.submitters, o.stages, o.batch, o.result_bytes, wall_c, rate_c, us_c,
               us_c > 0 ? 1e6 / us_c : 0.0);
        print_ops(&tc, 1);
        printf("}}, \"serial\": ");
        if (o.serial_jobs) {
            printf("{\"jobs\": %ld, \"wall_s\": %.4f, \"jobs_per_s\": %.1f, \"ms_per_job\": %.4f, "
                   "\"redis_cpu_us_per_job\": %.1f, \"ops\": {", o.serial_jobs, wall_s, rate_s,
                   1e3 * wall_s / o.serial_jobs, us_s);
            print_ops(&ts, 1);
            printf("}}");
        } else {
            printf("null");
        }
        printf("}\n");
    } else {
        printf("concurrent: %ld jobs in %.2f s: %.0f jobs/s (%d submitters, 1 coordinator, "
               "%d stage threads, claims of %d)\n", o.jobs, wall_c, rate_c, o.submitters,
               o.stages, o.batch);
        printf("  Redis CPU %.1f us per job: at most %.0f jobs/s on one Redis\n", us_c,
               us_c > 0 ? 1e6 / us_c : 0.0);
        print_ops(&tc, 0);
        if (o.serial_jobs) {
            printf("serial: %ld jobs in %.2f s: %.0f jobs/s, %.3f ms per job, Redis CPU %.1f us "
                   "per job\n", o.serial_jobs, wall_s, rate_s, 1e3 * wall_s / o.serial_jobs, us_s);
            print_ops(&ts, 0);
        }
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "bench_coordinator: %s\n", err.msg);
out:
    free(run.hand.v);
    free(run.result);
    return rc;
}
