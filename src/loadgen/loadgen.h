/*
 * loadgen.h: the load generator behind sdc-loadgen. It offers a cluster jobs
 * at a controlled load, open loop (Poisson arrivals at a rate, seeded) or
 * closed loop (a fixed number of jobs in flight), watches each job to its
 * end and measures what a client sees: end-to-end latency, queue wait, time
 * per denoising step, throughput and goodput under a latency objective,
 * errors by kind.
 *
 * Two targets behind one operation table: the Redis queue itself (through
 * cluster/jobs.h, as sdc-submit does) and the HTTP gateway (libcurl, the
 * /v1/jobs API; lg_http.c states the contract it expects).
 *
 * Not a benchmark of the client: one thread submits and polls, which keeps
 * up with hundreds of requests per second; the report says how late
 * arrivals were sent (schedule lag) so an overloaded client shows.
 */
#ifndef SDC_LOADGEN_H
#define SDC_LOADGEN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cluster/jobs.h"
#include "common/status.h"

struct cJSON;

#define SDC_LG_MSG_MAX 256

/* ---- errors ----------------------------------------------------------- */

typedef enum {
    SDC_LG_ERR_NONE = 0,
    SDC_LG_ERR_CONNECT,       /* no connection, or Redis unreachable */
    SDC_LG_ERR_TIMEOUT,       /* a request got no answer in time */
    SDC_LG_ERR_RATE_LIMITED,  /* HTTP 429 */
    SDC_LG_ERR_AUTH,          /* HTTP 401 or 403 */
    SDC_LG_ERR_REJECTED,      /* another 4xx, or Redis refused the job */
    SDC_LG_ERR_SERVER,        /* HTTP 5xx */
    SDC_LG_ERR_PROTOCOL,      /* an answer outside the contract */
    SDC_LG_ERR_JOB_FAILED,    /* the cluster ran the job and it failed */
    SDC_LG_ERR_JOB_CANCELLED,
    SDC_LG_ERR_JOB_LOST,      /* the job vanished (expired, deleted, 404) */
    SDC_LG_ERR_RESULT,        /* done, but its PNG could not be had */
    SDC_LG_ERR_UNFINISHED,    /* still running when the run ended */
    SDC_LG_ERR_COUNT
} sdc_lg_err_t;

/* "connect", "timeout", "rate_limited", ... (the report's keys). */
const char *sdc_lg_err_name(sdc_lg_err_t kind);

/* What went wrong with one call to a target. */
typedef struct {
    sdc_lg_err_t kind;
    double retry_after_s; /* rate limited: the server's Retry-After, else 0 */
    int http_status;      /* 0 outside HTTP */
} sdc_lg_fault_t;

/* ---- targets ------------------------------------------------------------ */

typedef struct {
    const char *prompt;
    const char *negative_prompt; /* NULL: none */
    int width, height;           /* 0: the model's default size */
    int steps;
    uint64_t seed;
    int has_guidance;
    double guidance;
} sdc_lg_request_t;

/* A job as the target last reported it. Timestamps are wall-clock ms since
 * the epoch on this host's clock (the target corrects for the server's
 * clock where it can measure the offset); 0 when unknown or not reached. */
typedef struct {
    int state; /* sdc_job_state_t */
    int64_t attempt, step, steps;
    int64_t created_ms;
    int64_t state_ms[SDC_JOB_STATE_COUNT]; /* when the job last entered each state */
    char error[SDC_LG_MSG_MAX];
} sdc_lg_status_t;

typedef struct sdc_lg_target sdc_lg_target_t;

/* Each call returns SDC_OK, or an error with fault->kind set and err
 * saying what happened. */
struct sdc_lg_target {
    char name[160];  /* "redis <url>" or the gateway's URL, for reports */
    void *ctx;
    /* 1: the done timestamp is on this host's clock to a millisecond, so
     * latency is taken from it; 0: from when the client saw the job done. */
    int exact_clock;
    double clock_offset_ms; /* server minus local, as measured; 0 when not */
    sdc_status_t (*submit)(sdc_lg_target_t *t, const sdc_lg_request_t *rq,
                           char id[SDC_JOB_ID_MAX + 1], sdc_lg_fault_t *f, sdc_error_t *err);
    sdc_status_t (*poll)(sdc_lg_target_t *t, const char *id, sdc_lg_status_t *s,
                         sdc_lg_fault_t *f, sdc_error_t *err);
    /* Downloads the PNG and checks its signature; *bytes is its size. */
    sdc_status_t (*result)(sdc_lg_target_t *t, const char *id, size_t *bytes, sdc_lg_fault_t *f,
                           sdc_error_t *err);
    void (*close)(sdc_lg_target_t *t);
};

/* The Redis queue at url (as sdc-submit's --redis; the password from the
 * environment) under key prefix (NULL: "sdc:"). Measures the clock offset
 * to the server with TIME. */
sdc_status_t sdc_lg_redis_open(sdc_lg_target_t *t, const char *url, const char *prefix,
                               sdc_error_t *err);

/* The gateway at base_url (http[s]://host:port[/path]); token NULL for no
 * Authorization header. timeout_s bounds each request. */
sdc_status_t sdc_lg_http_open(sdc_lg_target_t *t, const char *base_url, const char *token,
                              double timeout_s, sdc_error_t *err);

/* The HTTP contract's parsers, exported for tests. Bodies need not be
 * NUL-terminated. */
sdc_status_t sdc_lg_http_parse_created(const char *body, size_t len,
                                       char id[SDC_JOB_ID_MAX + 1], sdc_error_t *err);
sdc_status_t sdc_lg_http_parse_job(const char *body, size_t len, const char *id,
                                   sdc_lg_status_t *s, sdc_error_t *err);
/* error.message of an error body, or the start of the body as text. */
void sdc_lg_http_error_message(const char *body, size_t len, char *out, size_t cap);
/* Retry-After: delay-seconds or an HTTP date; now is time(NULL). -1 when
 * the value is neither. */
double sdc_lg_retry_after(const char *value, long now);
/* A bearer token from a file: its first line, trimmed; visible ASCII only.
 * *token is malloc'd. */
sdc_status_t sdc_lg_token_read(const char *path, char **token, sdc_error_t *err);

/* ---- prompts -------------------------------------------------------- */

typedef struct {
    char **prompt;
    char **negative; /* per prompt; NULL: none */
    size_t n;
} sdc_lg_prompts_t;

/* One prompt per line; a line whose first non-blank character is '{' is a
 * JSON object with "prompt" and optional "negative_prompt". Blank lines and
 * '#' lines are skipped. Errors name FILE:LINE. */
sdc_status_t sdc_lg_prompts_load(const char *path, sdc_lg_prompts_t *p, sdc_error_t *err);
/* Built-in English and Chinese prompts, some with quoted text. */
sdc_status_t sdc_lg_prompts_builtin(sdc_lg_prompts_t *p, sdc_error_t *err);
void sdc_lg_prompts_free(sdc_lg_prompts_t *p);

/* ---- a run ----------------------------------------------------------------- */

typedef enum { SDC_LG_OPEN = 0, SDC_LG_CLOSED } sdc_lg_mode_t;

typedef struct {
    double elapsed_s;
    size_t submitted, done, failed, in_flight;
    int final;
} sdc_lg_progress_t;

typedef struct {
    sdc_lg_mode_t mode;
    double rate;         /* open loop: mean arrivals per second */
    int concurrency;     /* closed loop: jobs in flight */
    long count;          /* jobs to offer; 0: as many as the duration allows */
    double duration_s;   /* stop offering after this long; 0: until count */
    double drain_s;      /* then wait at most this long for jobs in flight */
    double poll_s;       /* interval between two looks at one job */
    uint64_t seed;       /* arrival times; job seeds are request.seed + index */
    int fetch_result;    /* download each PNG */
    const sdc_lg_prompts_t *prompts; /* used in turn */
    sdc_lg_request_t request;        /* everything but the prompt */
    volatile sig_atomic_t *stop;     /* non-zero: stop offering and waiting */
    void (*progress)(void *arg, const sdc_lg_progress_t *p);
    void *progress_arg;
} sdc_lg_config_t;

/* One offered job. Times are seconds since the run started (monotonic);
 * durations are -1 when unknown. */
typedef struct {
    char id[SDC_JOB_ID_MAX + 1];
    double intended;  /* when the schedule wanted it sent */
    double sent;      /* when the submit call started */
    double submit_s;  /* how long the submit call took */
    double finished;  /* when the client saw its end */
    double e2e_s;     /* intended -> done (see sdc_lg_target_t.exact_clock) */
    double queue_s, encode_s, step_s, decode_s, fetch_s;
    int64_t attempt;
    size_t result_bytes;
    sdc_lg_err_t error; /* NONE: done */
    int finished_flag;
    /* while in flight */
    double next_poll, failing_since;
    sdc_lg_status_t last;
} sdc_lg_job_t;

typedef struct {
    sdc_lg_job_t *jobs;
    size_t n, cap;
    double wall_s;                          /* first arrival to last end */
    size_t poll_errors[SDC_LG_ERR_COUNT];   /* transient, retried */
    char example[SDC_LG_ERR_COUNT][SDC_LG_MSG_MAX]; /* first message of each kind */
    int interrupted;
} sdc_lg_run_t;

/* Runs one load phase to its end (bounds reached and jobs drained, or
 * *stop). Only a failure of the client itself is an error: failed jobs
 * are results, in out. */
sdc_status_t sdc_lg_run(sdc_lg_target_t *t, const sdc_lg_config_t *c, sdc_lg_run_t *out,
                        sdc_error_t *err);
void sdc_lg_run_free(sdc_lg_run_t *r);

/* Exponential inter-arrival times of a Poisson process: the k-th gap
 * (k from 0) of the sequence that seed names, for mean rate per second. */
double sdc_lg_arrival_gap(uint64_t seed, uint64_t k, double rate);

/* ---- reports --------------------------------------------------------------- */

typedef struct {
    size_t n;
    double mean, min, p50, p90, p95, p99, max;
} sdc_lg_dist_t;

/* Percentile q (0..100) of sorted[0..n), linear between closest ranks
 * (numpy's default); NAN when n is 0. */
double sdc_lg_percentile(const double *sorted, size_t n, double q);
/* Distribution of v[0..n) (sorted in place); values < 0 (unknown) are left
 * out. */
void sdc_lg_dist(double *v, size_t n, sdc_lg_dist_t *d);

typedef struct {
    sdc_lg_mode_t mode;
    double offered;        /* rate (jobs/s) or concurrency */
    double slo_s;          /* 0: none */
    size_t offered_jobs, done, good, requeued;
    size_t errors[SDC_LG_ERR_COUNT];
    double wall_s, throughput, goodput;
    sdc_lg_dist_t e2e, queue, step, encode, decode, fetch, submit, lag;
    double result_bytes_mean;
} sdc_lg_summary_t;

sdc_status_t sdc_lg_summarize(const sdc_lg_run_t *r, const sdc_lg_config_t *c, double slo_s,
                              sdc_lg_summary_t *s, sdc_error_t *err);
/* The summary as a JSON object (NULL when out of memory). */
struct cJSON *sdc_lg_summary_json(const sdc_lg_summary_t *s, const sdc_lg_run_t *r);
/* A human-readable table. */
void sdc_lg_summary_print(FILE *f, const sdc_lg_summary_t *s, const sdc_lg_run_t *r);

#endif
