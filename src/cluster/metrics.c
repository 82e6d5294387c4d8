/*
 * metrics.c: a node's counters, written to and read from metrics:<id> (see
 * metrics.h). Histograms travel as one field each: the per-bucket counts,
 * then count and sum, separated by spaces.
 */
#include "metrics.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/jobs.h"

static const double job_bounds[SDC_METRICS_BUCKETS] = {
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500,
};
static const double step_bounds[SDC_METRICS_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25,
};

const double *sdc_hist_bounds(sdc_hist_kind_t kind)
{
    return kind == SDC_HIST_JOB ? job_bounds : step_bounds;
}

const char *sdc_hist_name(sdc_hist_kind_t kind)
{
    return kind == SDC_HIST_JOB ? "job_latency_seconds" : "step_latency_seconds";
}

void sdc_hist_observe(sdc_hist_t *h, sdc_hist_kind_t kind, double seconds)
{
    const double *b = sdc_hist_bounds(kind);
    if (!(seconds >= 0) || !isfinite(seconds))
        return;
    int i = 0;
    while (i < SDC_METRICS_BUCKETS && seconds > b[i])
        i++;
    h->bucket[i]++;
    h->count++;
    h->sum += seconds;
}

/* ---- publishing ------------------------------------------------------------- */

/* KEYS metrics key. ARGV 1 TTL ms, then field/value pairs. */
static const sdc_redis_script_t script_publish = {
    "metrics publish",
    "redis.call('HSET', KEYS[1], unpack(ARGV, 2))\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[1])\n"
    "return 1\n",
};

typedef enum { F_U64, F_I64, F_DBL } field_type_t;

typedef struct {
    const char *name;
    field_type_t type;
    size_t offset;
} metric_field_t;

#define MF(name, type) {#name, type, offsetof(sdc_metrics_t, name)}
static const metric_field_t metric_fields[] = {
    MF(bytes_sent, F_U64),     MF(bytes_received, F_U64), MF(messages_dropped, F_U64),
    MF(jobs_completed, F_U64), MF(jobs_failed, F_U64),    MF(jobs_requeued, F_U64),
    MF(jobs_tracked, F_I64),   MF(busy_s, F_DBL),         MF(busy_ratio, F_DBL),
};
#define N_METRIC_FIELDS (sizeof(metric_fields) / sizeof(metric_fields[0]))
/* ttl + 4 source fields + the scalar fields + the histograms, as pairs. */
#define PUBLISH_ARGS (1 + 2 * (4 + N_METRIC_FIELDS + SDC_HIST_COUNT))
#define VALUE_MAX 32
#define HIST_TEXT_MAX ((SDC_METRICS_BUCKETS + 3) * 24)

static void format_field(const metric_field_t *f, const sdc_metrics_t *m, char *out)
{
    const void *p = (const char *)m + f->offset;
    if (f->type == F_U64)
        snprintf(out, VALUE_MAX, "%" PRIu64, *(const uint64_t *)p);
    else if (f->type == F_I64)
        snprintf(out, VALUE_MAX, "%" PRId64, *(const int64_t *)p);
    else
        snprintf(out, VALUE_MAX, "%.17g", *(const double *)p);
}

static void format_hist(const sdc_hist_t *h, char *out)
{
    size_t o = 0;
    for (int i = 0; i <= SDC_METRICS_BUCKETS; i++)
        o += (size_t)snprintf(out + o, HIST_TEXT_MAX - o, "%" PRIu64 " ", h->bucket[i]);
    snprintf(out + o, HIST_TEXT_MAX - o, "%" PRIu64 " %.17g", h->count, h->sum);
}

sdc_status_t sdc_metrics_publish(sdc_redis_t *r, const sdc_metrics_source_t *src,
                                 const sdc_metrics_t *m, int64_t ttl_ms, sdc_error_t *err)
{
    char key[SDC_REDIS_KEY_MAX], ttl[24], pl[16], stage[16], stages[16];
    char values[N_METRIC_FIELDS][VALUE_MAX], hists[SDC_HIST_COUNT][HIST_TEXT_MAX];
    const char *args[PUBLISH_ARGS];
    size_t alen[PUBLISH_ARGS];
    int n = 0;
    sdc_status_t st = sdc_job_id_check(src->node_id, "metrics: node id", err);
    if (st == SDC_OK)
        st = sdc_redis_key(r, key, sizeof(key), err, "metrics:%s", src->node_id);
    if (st != SDC_OK)
        return st;
    snprintf(ttl, sizeof(ttl), "%" PRId64, ttl_ms);
    snprintf(pl, sizeof(pl), "%d", src->pipeline);
    snprintf(stage, sizeof(stage), "%d", src->stage);
    snprintf(stages, sizeof(stages), "%d", src->stages);
    args[n++] = ttl;
    args[n++] = "role", args[n++] = src->role;
    args[n++] = "pipeline", args[n++] = pl;
    args[n++] = "stage", args[n++] = stage;
    args[n++] = "stages", args[n++] = stages;
    for (size_t i = 0; i < N_METRIC_FIELDS; i++) {
        format_field(&metric_fields[i], m, values[i]);
        args[n++] = metric_fields[i].name, args[n++] = values[i];
    }
    for (int k = 0; k < SDC_HIST_COUNT; k++) {
        format_hist(&m->hist[k], hists[k]);
        args[n++] = sdc_hist_name((sdc_hist_kind_t)k), args[n++] = hists[k];
    }
    for (int i = 0; i < n; i++)
        alen[i] = strlen(args[i]);
    const char *keys[] = {key};
    size_t klen[] = {strlen(key)};
    redisReply *rep;
    st = sdc_redis_eval(r, &script_publish, 1, keys, klen, n, args, alen, &rep, err);
    if (st != SDC_OK)
        return st;
    st = sdc_redis_expect(rep, REDIS_REPLY_INTEGER, "metrics publish", err);
    sdc_redis_reply_free(rep);
    return st;
}

/* ---- reading ------------------------------------------------------------------ */

static int reply_is(const redisReply *r, const char *s)
{
    size_t n = strlen(s);
    return r->type == REDIS_REPLY_STRING && r->len == n && memcmp(r->str, s, n) == 0;
}

/* v as a NUL-terminated copy (at most cap - 1 bytes; longer is an error). */
static sdc_status_t value_text(const redisReply *v, const char *field, char *out, size_t cap,
                               sdc_error_t *err)
{
    if (v->type != REDIS_REPLY_STRING || v->len >= cap || strlen(v->str) != v->len)
        return sdc_error_set(err, SDC_ERR_FORMAT, "metrics: field '%s' is malformed", field);
    memcpy(out, v->str, v->len + 1);
    return SDC_OK;
}

static sdc_status_t parse_number(const char *text, const char *field, field_type_t type,
                                 void *out, sdc_error_t *err)
{
    char *end;
    errno = 0;
    if (type == F_DBL) {
        double d = strtod(text, &end);
        if (errno || end == text || *end || !isfinite(d) || d < 0)
            goto bad;
        *(double *)out = d;
    } else if (type == F_U64) {
        if (text[0] == '-')
            goto bad;
        unsigned long long u = strtoull(text, &end, 10);
        if (errno || end == text || *end)
            goto bad;
        *(uint64_t *)out = u;
    } else {
        long long x = strtoll(text, &end, 10);
        if (errno || end == text || *end)
            goto bad;
        *(int64_t *)out = x;
    }
    return SDC_OK;
bad:
    return sdc_error_set(err, SDC_ERR_FORMAT, "metrics: field '%s' = '%.32s' is not a number",
                         field, text);
}

static sdc_status_t parse_hist(const char *text, const char *field, sdc_hist_t *h,
                               sdc_error_t *err)
{
    const char *p = text;
    char *end;
    for (int i = 0; i <= SDC_METRICS_BUCKETS + 1; i++) {
        errno = 0;
        if (*p == '-')
            goto bad;
        unsigned long long u = strtoull(p, &end, 10);
        if (errno || end == p || *end != ' ')
            goto bad;
        if (i <= SDC_METRICS_BUCKETS)
            h->bucket[i] = u;
        else
            h->count = u;
        p = end + 1;
    }
    errno = 0;
    h->sum = strtod(p, &end);
    if (errno || end == p || *end || !isfinite(h->sum) || h->sum < 0)
        goto bad;
    return SDC_OK;
bad:
    return sdc_error_set(err, SDC_ERR_FORMAT, "metrics: histogram '%s' is malformed", field);
}

static sdc_status_t parse_entry(sdc_node_metrics_t *out, const redisReply *k, const redisReply *v,
                                sdc_error_t *err)
{
    char text[HIST_TEXT_MAX];
    int64_t x;
    if (k->type != REDIS_REPLY_STRING)
        return sdc_error_set(err, SDC_ERR_FORMAT, "metrics: non-string field name");
    if (reply_is(k, "role"))
        return value_text(v, "role", out->role, sizeof(out->role), err);
    sdc_status_t st = value_text(v, k->str, text, sizeof(text), err);
    if (st != SDC_OK)
        return st;
    int *place = reply_is(k, "pipeline") ? &out->pipeline
                 : reply_is(k, "stage")  ? &out->stage
                 : reply_is(k, "stages") ? &out->stages
                                         : NULL;
    if (place) {
        if ((st = parse_number(text, k->str, F_I64, &x, err)) != SDC_OK)
            return st;
        if (x < -1 || x > INT32_MAX)
            return sdc_error_set(err, SDC_ERR_FORMAT, "metrics: %s %lld out of range", k->str,
                                 (long long)x);
        *place = (int)x;
        return SDC_OK;
    }
    for (size_t i = 0; i < N_METRIC_FIELDS; i++)
        if (reply_is(k, metric_fields[i].name))
            return parse_number(text, k->str, metric_fields[i].type,
                                (char *)&out->m + metric_fields[i].offset, err);
    for (int h = 0; h < SDC_HIST_COUNT; h++)
        if (reply_is(k, sdc_hist_name((sdc_hist_kind_t)h)))
            return parse_hist(text, k->str, &out->m.hist[h], err);
    return SDC_OK; /* a field from a newer version: ignored */
}

sdc_status_t sdc_metrics_read(sdc_redis_t *r, const char *node_id, sdc_node_metrics_t *out,
                              int *found, sdc_error_t *err)
{
    char key[SDC_REDIS_KEY_MAX];
    redisReply *rep;
    memset(out, 0, sizeof(*out));
    out->pipeline = out->stage = out->stages = -1;
    *found = 0;
    sdc_status_t st = sdc_job_id_check(node_id, "metrics: node id", err);
    if (st == SDC_OK)
        st = sdc_redis_key(r, key, sizeof(key), err, "metrics:%s", node_id);
    if (st == SDC_OK)
        st = sdc_redis_command(r, &rep, err, "HGETALL %s", key);
    if (st != SDC_OK)
        return st;
    snprintf(out->node_id, sizeof(out->node_id), "%s", node_id);
    st = sdc_redis_expect(rep, REDIS_REPLY_ARRAY, "HGETALL metrics", err);
    if (st == SDC_OK && rep->elements % 2)
        st = sdc_error_set(err, SDC_ERR_FORMAT, "metrics: odd HGETALL reply");
    for (size_t i = 0; st == SDC_OK && i < rep->elements; i += 2)
        st = parse_entry(out, rep->element[i], rep->element[i + 1], err);
    if (st == SDC_OK)
        *found = rep->elements > 0;
    sdc_redis_reply_free(rep);
    return st;
}
