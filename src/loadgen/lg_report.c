/*
 * lg_report.c: what a load phase measured, as numbers (distributions,
 * throughput, goodput, errors by kind), as JSON and as a table.
 *
 * Definitions (README "sdc-loadgen" repeats them):
 *   throughput  jobs done / wall time (first arrival to last end)
 *   goodput     jobs done within the latency objective / wall time
 *   e2e         intended send -> done
 *   queue       submitted (created_ms) -> the job left the queue
 *   encode      encoding -> denoising; step: denoising time / steps;
 *   decode      decoding -> done; fetch: downloading the PNG
 *   submit      the submit call itself; lag: sent - intended (open loop)
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "loadgen/loadgen.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double sdc_lg_percentile(const double *sorted, size_t n, double q)
{
    if (n == 0)
        return NAN;
    double pos = q / 100.0 * (double)(n - 1);
    size_t lo = (size_t)floor(pos), hi = lo + 1 < n ? lo + 1 : lo;
    double frac = pos - (double)lo;
    return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

void sdc_lg_dist(double *v, size_t n, sdc_lg_dist_t *d)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] >= 0)
            v[k++] = v[i];
    memset(d, 0, sizeof(*d));
    d->n = k;
    if (k == 0) {
        d->mean = d->min = d->p50 = d->p90 = d->p95 = d->p99 = d->max = NAN;
        return;
    }
    qsort(v, k, sizeof(*v), cmp_double);
    double sum = 0;
    for (size_t i = 0; i < k; i++)
        sum += v[i];
    d->mean = sum / (double)k;
    d->min = v[0];
    d->max = v[k - 1];
    d->p50 = sdc_lg_percentile(v, k, 50);
    d->p90 = sdc_lg_percentile(v, k, 90);
    d->p95 = sdc_lg_percentile(v, k, 95);
    d->p99 = sdc_lg_percentile(v, k, 99);
}

/* The distribution of the double at offset off of each job (done jobs only
 * when done_only). */
static void dist_of(const sdc_lg_run_t *r, double *buf, size_t off, int done_only,
                    sdc_lg_dist_t *d)
{
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++) {
        const sdc_lg_job_t *j = &r->jobs[i];
        if (done_only && j->error != SDC_LG_ERR_NONE)
            continue;
        buf[k++] = *(const double *)((const char *)j + off);
    }
    sdc_lg_dist(buf, k, d);
}

sdc_status_t sdc_lg_summarize(const sdc_lg_run_t *r, const sdc_lg_config_t *c, double slo_s,
                              sdc_lg_summary_t *s, sdc_error_t *err)
{
    memset(s, 0, sizeof(*s));
    s->mode = c->mode;
    s->offered = c->mode == SDC_LG_OPEN ? c->rate : (double)c->concurrency;
    s->slo_s = slo_s;
    s->offered_jobs = r->n;
    s->wall_s = r->wall_s;
    double bytes = 0;
    for (size_t i = 0; i < r->n; i++) {
        const sdc_lg_job_t *j = &r->jobs[i];
        s->errors[j->error]++;
        if (j->attempt > 1)
            s->requeued++;
        if (j->error != SDC_LG_ERR_NONE)
            continue;
        s->done++;
        bytes += (double)j->result_bytes;
        if (slo_s <= 0 || j->e2e_s <= slo_s)
            s->good++;
    }
    s->errors[SDC_LG_ERR_NONE] = 0;
    s->result_bytes_mean = s->done ? bytes / (double)s->done : 0;
    s->throughput = s->wall_s > 0 ? (double)s->done / s->wall_s : 0;
    s->goodput = s->wall_s > 0 ? (double)s->good / s->wall_s : 0;
    double *buf = malloc((r->n ? r->n : 1) * sizeof(*buf));
    if (!buf)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory for the report");
    dist_of(r, buf, offsetof(sdc_lg_job_t, e2e_s), 1, &s->e2e);
    dist_of(r, buf, offsetof(sdc_lg_job_t, queue_s), 1, &s->queue);
    dist_of(r, buf, offsetof(sdc_lg_job_t, step_s), 1, &s->step);
    dist_of(r, buf, offsetof(sdc_lg_job_t, encode_s), 1, &s->encode);
    dist_of(r, buf, offsetof(sdc_lg_job_t, decode_s), 1, &s->decode);
    dist_of(r, buf, offsetof(sdc_lg_job_t, fetch_s), 1, &s->fetch);
    dist_of(r, buf, offsetof(sdc_lg_job_t, submit_s), 0, &s->submit);
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++)
        buf[k++] = fmax(0, r->jobs[i].sent - r->jobs[i].intended);
    sdc_lg_dist(buf, k, &s->lag);
    free(buf);
    return SDC_OK;
}

/* ---- JSON ------------------------------------------------------------------ */

/* Seconds in, milliseconds out, rounded to a microsecond; null when unknown. */
static int add_ms(cJSON *o, const char *key, double s)
{
    if (!isfinite(s))
        return cJSON_AddNullToObject(o, key) != NULL;
    return cJSON_AddNumberToObject(o, key, round(s * 1e6) / 1e3) != NULL;
}

static cJSON *dist_json(const sdc_lg_dist_t *d)
{
    cJSON *o = cJSON_CreateObject();
    int ok = o && cJSON_AddNumberToObject(o, "n", (double)d->n) && add_ms(o, "mean", d->mean) &&
             add_ms(o, "min", d->min) && add_ms(o, "p50", d->p50) && add_ms(o, "p90", d->p90) &&
             add_ms(o, "p95", d->p95) && add_ms(o, "p99", d->p99) && add_ms(o, "max", d->max);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static int add_dist(cJSON *o, const char *key, const sdc_lg_dist_t *d)
{
    cJSON *x = dist_json(d);
    return x && cJSON_AddItemToObject(o, key, x);
}

cJSON *sdc_lg_summary_json(const sdc_lg_summary_t *s, const sdc_lg_run_t *r)
{
    cJSON *o = cJSON_CreateObject(), *errs = cJSON_CreateObject(), *ex = cJSON_CreateObject();
    cJSON *lat = cJSON_CreateObject(), *polls = cJSON_CreateObject();
    size_t failed = 0;
    int ok = o && errs && ex && lat && polls;
    for (int k = 1; k < SDC_LG_ERR_COUNT && ok; k++) {
        failed += s->errors[k];
        if (s->errors[k])
            ok = cJSON_AddNumberToObject(errs, sdc_lg_err_name(k), (double)s->errors[k]) != NULL;
        if (ok && r->example[k][0])
            ok = cJSON_AddStringToObject(ex, sdc_lg_err_name(k), r->example[k]) != NULL;
        if (ok && r->poll_errors[k])
            ok = cJSON_AddNumberToObject(polls, sdc_lg_err_name(k), (double)r->poll_errors[k]) != NULL;
    }
    ok = ok && cJSON_AddStringToObject(o, "mode", s->mode == SDC_LG_OPEN ? "open" : "closed") &&
         cJSON_AddNumberToObject(o, s->mode == SDC_LG_OPEN ? "rate" : "concurrency", s->offered) &&
         cJSON_AddNumberToObject(o, "offered", (double)s->offered_jobs) &&
         cJSON_AddNumberToObject(o, "done", (double)s->done) &&
         cJSON_AddNumberToObject(o, "failed", (double)failed) &&
         cJSON_AddNumberToObject(o, "requeued", (double)s->requeued) &&
         cJSON_AddBoolToObject(o, "interrupted", r->interrupted) &&
         add_ms(o, "wall_ms", s->wall_s) &&
         cJSON_AddNumberToObject(o, "throughput_images_per_s", s->throughput) &&
         (s->slo_s > 0 ? add_ms(o, "slo_ms", s->slo_s) : cJSON_AddNullToObject(o, "slo_ms") != NULL) &&
         cJSON_AddNumberToObject(o, "good", (double)s->good) &&
         cJSON_AddNumberToObject(o, "goodput_images_per_s", s->goodput) &&
         cJSON_AddNumberToObject(o, "result_bytes_mean", s->result_bytes_mean);
    if (ok) {
        ok = add_dist(lat, "e2e", &s->e2e) && add_dist(lat, "queue_wait", &s->queue) &&
             add_dist(lat, "per_step", &s->step) && add_dist(lat, "encode", &s->encode) &&
             add_dist(lat, "decode", &s->decode) && add_dist(lat, "fetch", &s->fetch) &&
             add_dist(lat, "submit", &s->submit) && add_dist(lat, "schedule_lag", &s->lag);
    }
    if (ok) {
        ok = cJSON_AddItemToObject(o, "latency_ms", lat);
        lat = NULL;
    }
    if (ok) {
        ok = cJSON_AddItemToObject(o, "errors", errs);
        errs = NULL;
    }
    if (ok) {
        ok = cJSON_AddItemToObject(o, "error_examples", ex);
        ex = NULL;
    }
    if (ok) {
        ok = cJSON_AddItemToObject(o, "poll_errors_retried", polls);
        polls = NULL;
    }
    cJSON_Delete(lat);
    cJSON_Delete(errs);
    cJSON_Delete(ex);
    cJSON_Delete(polls);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* ---- table ------------------------------------------------------------------ */

static void print_dist(FILE *f, const char *name, const sdc_lg_dist_t *d)
{
    if (!d->n) {
        fprintf(f, "  %-13s %8s\n", name, "-");
        return;
    }
    fprintf(f, "  %-13s %8zu %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f\n", name, d->n, d->mean * 1e3,
            d->p50 * 1e3, d->p90 * 1e3, d->p95 * 1e3, d->p99 * 1e3, d->max * 1e3);
}

void sdc_lg_summary_print(FILE *f, const sdc_lg_summary_t *s, const sdc_lg_run_t *r)
{
    size_t failed = 0;
    for (int k = 1; k < SDC_LG_ERR_COUNT; k++)
        failed += s->errors[k];
    if (s->mode == SDC_LG_OPEN)
        fprintf(f, "open loop, %.3g jobs/s offered:", s->offered);
    else
        fprintf(f, "closed loop, concurrency %.0f:", s->offered);
    fprintf(f, " %zu offered, %zu done, %zu failed", s->offered_jobs, s->done, failed);
    if (s->requeued)
        fprintf(f, ", %zu requeued", s->requeued);
    fprintf(f, " in %.2f s%s\n", s->wall_s, r->interrupted ? " (interrupted)" : "");
    fprintf(f, "  throughput %.3f images/s", s->throughput);
    if (s->slo_s > 0)
        fprintf(f, ", goodput %.3f images/s (%zu of %zu within %.0f ms)", s->goodput, s->good,
                s->done, s->slo_s * 1e3);
    fputc('\n', f);
    fprintf(f, "  %-13s %8s %9s %9s %9s %9s %9s %9s\n", "ms", "n", "mean", "p50", "p90", "p95",
            "p99", "max");
    print_dist(f, "end-to-end", &s->e2e);
    print_dist(f, "queue wait", &s->queue);
    print_dist(f, "per step", &s->step);
    print_dist(f, "encode", &s->encode);
    print_dist(f, "decode", &s->decode);
    print_dist(f, "fetch", &s->fetch);
    print_dist(f, "submit call", &s->submit);
    if (s->mode == SDC_LG_OPEN)
        print_dist(f, "schedule lag", &s->lag);
    for (int k = 1; k < SDC_LG_ERR_COUNT; k++)
        if (s->errors[k])
            fprintf(f, "  error %-13s %zu  (e.g. %s)\n", sdc_lg_err_name(k), s->errors[k],
                    r->example[k]);
    for (int k = 1; k < SDC_LG_ERR_COUNT; k++)
        if (r->poll_errors[k])
            fprintf(f, "  polls retried after %s: %zu\n", sdc_lg_err_name(k), r->poll_errors[k]);
}
