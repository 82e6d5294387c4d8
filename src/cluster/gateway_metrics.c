/*
 * gateway_metrics.c: /ready and /metrics of sdc-gateway (see
 * gateway_metrics.h). Per-node series carry node, role, pipeline and stage
 * labels; sums over nodes are left to the query (sum by (role) ...), so a
 * node's restart shows as that series' counter reset, as Prometheus expects.
 */
#include "gateway_metrics.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/metrics.h"

#define MAX_PIPELINES 64
#define MAX_STAGES 64

/* ---- readiness ----------------------------------------------------------------- */

typedef struct {
    uint64_t live;  /* bit s: a node for stage s is registered */
    int max_stage;
    int stages;     /* from the nodes' published metrics; -1: unknown */
    char probe[SDC_JOB_ID_MAX + 1]; /* a node of the pipeline, to read its stage count */
} pipe_seen_t;

static void ready_reason(cJSON *o, int *ready, const char *why)
{
    if (*ready)
        cJSON_AddStringToObject(o, "reason", why);
    *ready = 0;
}

sdc_status_t sdc_gw_ready(sdc_jobs_t *q, int *ready, cJSON **report, sdc_error_t *err)
{
    sdc_node_t *nodes = NULL;
    size_t n = 0;
    char leader[SDC_JOB_ID_MAX + 1];
    int has_leader = 0, te = 0, vae = 0;
    pipe_seen_t p[MAX_PIPELINES];
    *ready = 0;
    *report = NULL;
    sdc_status_t st = sdc_leader_get(q->r, leader, &has_leader, err);
    if (st == SDC_OK)
        st = sdc_node_list(q->r, &nodes, &n, err);
    if (st != SDC_OK)
        return st;
    memset(p, 0, sizeof(p));
    for (int i = 0; i < MAX_PIPELINES; i++)
        p[i].max_stage = p[i].stages = -1;
    for (size_t i = 0; i < n; i++) {
        const sdc_node_t *nd = &nodes[i];
        te += nd->role == SDC_ROLE_TEXT_ENCODER;
        vae += nd->role == SDC_ROLE_VAE;
        if (nd->role != SDC_ROLE_DIT_STAGE || nd->pipeline < 0 || nd->pipeline >= MAX_PIPELINES ||
            nd->stage < 0 || nd->stage >= MAX_STAGES)
            continue;
        pipe_seen_t *ps = &p[nd->pipeline];
        ps->live |= 1ull << nd->stage;
        if (nd->stage > ps->max_stage)
            ps->max_stage = nd->stage;
        memcpy(ps->probe, nd->id, sizeof(ps->probe));
    }
    sdc_nodes_free(nodes, n);
    cJSON *o = cJSON_CreateObject(), *pl = cJSON_CreateArray();
    if (!o || !pl) {
        cJSON_Delete(o);
        cJSON_Delete(pl);
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    }
    int complete = 0;
    for (int i = 0; i < MAX_PIPELINES && st == SDC_OK; i++) {
        if (!p[i].live)
            continue;
        sdc_node_metrics_t nm;
        int found = 0;
        st = sdc_metrics_read(q->r, p[i].probe, &nm, &found, err);
        if (st == SDC_OK && found && nm.stages > 0 && nm.stages <= MAX_STAGES)
            p[i].stages = nm.stages;
        /* Without a published stage count the pipeline is taken to end at
         * its highest live stage. */
        int want = p[i].stages > 0 ? p[i].stages : p[i].max_stage + 1;
        uint64_t all = want >= 64 ? ~0ull : (1ull << want) - 1;
        int ok = (p[i].live & all) == all;
        complete |= ok;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddItemToArray(pl, e);
        cJSON_AddNumberToObject(e, "pipeline", i);
        cJSON_AddNumberToObject(e, "stages", want);
        cJSON_AddNumberToObject(e, "live_stages", __builtin_popcountll(p[i].live & all));
        cJSON_AddBoolToObject(e, "complete", ok);
    }
    if (st != SDC_OK) {
        cJSON_Delete(o);
        cJSON_Delete(pl);
        return st;
    }
    *ready = 1;
    if (!has_leader)
        ready_reason(o, ready, "no coordinator holds the leader lease");
    if (!te)
        ready_reason(o, ready, "no text encoder is registered");
    if (!vae)
        ready_reason(o, ready, "no VAE node is registered");
    if (!complete)
        ready_reason(o, ready, "no pipeline has a live node for every stage");
    cJSON_AddBoolToObject(o, "ready", *ready);
    if (has_leader)
        cJSON_AddStringToObject(o, "coordinator", leader);
    else
        cJSON_AddNullToObject(o, "coordinator");
    cJSON_AddNumberToObject(o, "text_encoders", te);
    cJSON_AddNumberToObject(o, "vaes", vae);
    cJSON_AddItemToObject(o, "pipelines", pl);
    *report = o;
    return SDC_OK;
}

/* ---- metrics ----------------------------------------------------------------------- */

typedef struct {
    char *s;
    size_t len, cap;
    int failed;
} text_t;

static void put(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(text_t *t, const char *fmt, ...)
{
    va_list ap;
    while (!t->failed) {
        va_start(ap, fmt);
        int n = vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
        } else if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        } else {
            size_t cap = 2 * t->cap + (size_t)n + 1;
            char *grown = realloc(t->s, cap);
            if (!grown)
                t->failed = 1;
            else
                t->s = grown, t->cap = cap;
        }
    }
}

static void family(text_t *t, const char *name, const char *type, const char *help)
{
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The labels of a node's series (ids are [A-Za-z0-9._-]; roles are checked). */
static void labels(const sdc_node_metrics_t *nm, char *out, size_t cap)
{
    const char *role = sdc_node_role_parse(nm->role, strlen(nm->role)) >= 0 ? nm->role : "unknown";
    snprintf(out, cap, "node=\"%s\",role=\"%s\",pipeline=\"%d\",stage=\"%d\"", nm->node_id, role,
             nm->pipeline, nm->stage);
}

typedef enum { V_U64, V_I64, V_DBL } vtype_t;

typedef struct {
    const char *name, *type, *help;
    size_t offset;
    vtype_t vt;
    const char *extra; /* more labels, e.g. direction="sent" */
} series_t;

#define S(name, type, help, member, vt, extra) \
    {name, type, help, offsetof(sdc_metrics_t, member), vt, extra}
static const series_t node_series[] = {
    S("sdc_node_busy_ratio", "gauge",
      "Share of the last heartbeat interval the node spent working.", busy_ratio, V_DBL, NULL),
    S("sdc_node_busy_seconds_total", "counter", "Seconds the node spent working.", busy_s, V_DBL,
      NULL),
    S("sdc_transfer_bytes_total", "counter", "Bytes sent between nodes (headers + payloads).",
      bytes_sent, V_U64, "direction=\"sent\""),
    S(NULL, NULL, NULL, bytes_received, V_U64, "direction=\"received\""),
    S("sdc_messages_dropped_total", "counter", "Messages a node rejected.", messages_dropped,
      V_U64, NULL),
    S("sdc_jobs_completed_total", "counter", "Jobs a coordinator saw finish.", jobs_completed,
      V_U64, NULL),
    S("sdc_jobs_failed_total", "counter", "Job failures a node recorded.", jobs_failed, V_U64,
      NULL),
    S("sdc_jobs_requeued_total", "counter", "Jobs a coordinator requeued after a loss or a "
      "timeout.", jobs_requeued, V_U64, NULL),
    S("sdc_jobs_tracked", "gauge", "Jobs a coordinator is watching.", jobs_tracked, V_I64, NULL),
};
#define N_SERIES (sizeof(node_series) / sizeof(node_series[0]))

static void series_value(text_t *t, const series_t *s, const sdc_node_metrics_t *nm,
                         const char *lb)
{
    const void *p = (const char *)&nm->m + s->offset;
    char v[40];
    if (s->vt == V_U64)
        snprintf(v, sizeof(v), "%" PRIu64, *(const uint64_t *)p);
    else if (s->vt == V_I64)
        snprintf(v, sizeof(v), "%" PRId64, *(const int64_t *)p);
    else
        snprintf(v, sizeof(v), "%.17g", *(const double *)p);
    put(t, "%s{%s%s%s} %s\n", s->name, lb, s->extra ? "," : "", s->extra ? s->extra : "", v);
}

static void histogram(text_t *t, sdc_hist_kind_t kind, const sdc_node_metrics_t *nms, size_t n)
{
    char name[64];
    snprintf(name, sizeof(name), "sdc_%s", sdc_hist_name(kind));
    family(t, name, "histogram",
           kind == SDC_HIST_JOB ? "Seconds from submission to done, seen by coordinators."
                                : "Seconds per denoising step (one ring lap), seen by the last "
                                  "stage of each pipeline.");
    const double *b = sdc_hist_bounds(kind);
    for (size_t i = 0; i < n; i++) {
        const sdc_hist_t *h = &nms[i].m.hist[kind];
        if (h->count == 0)
            continue;
        char lb[256];
        labels(&nms[i], lb, sizeof(lb));
        uint64_t cum = 0;
        for (int k = 0; k < SDC_METRICS_BUCKETS; k++) {
            cum += h->bucket[k];
            put(t, "%s_bucket{%s,le=\"%g\"} %" PRIu64 "\n", name, lb, b[k], cum);
        }
        put(t, "%s_bucket{%s,le=\"+Inf\"} %" PRIu64 "\n", name, lb, h->count);
        put(t, "%s_sum{%s} %.17g\n%s_count{%s} %" PRIu64 "\n", name, lb, h->sum, name, lb,
            h->count);
    }
}

static sdc_status_t read_all(sdc_jobs_t *q, sdc_node_metrics_t **out, size_t *count,
                             int roles[SDC_ROLE_COUNT], sdc_error_t *err)
{
    sdc_node_t *nodes = NULL;
    size_t n = 0, k = 0;
    *out = NULL;
    *count = 0;
    sdc_status_t st = sdc_node_list(q->r, &nodes, &n, err);
    if (st != SDC_OK)
        return st;
    sdc_node_metrics_t *nm = n ? calloc(n, sizeof(*nm)) : NULL;
    if (n && !nm)
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; st == SDC_OK && i < n; i++) {
        int found = 0;
        roles[nodes[i].role]++;
        st = sdc_metrics_read(q->r, nodes[i].id, &nm[k], &found, err);
        k += (size_t)found;
    }
    sdc_nodes_free(nodes, n);
    if (st != SDC_OK) {
        free(nm);
        return st;
    }
    *out = nm;
    *count = k;
    return SDC_OK;
}

sdc_status_t sdc_gw_metrics_text(sdc_jobs_t *q, const uint64_t answered[6], char **text,
                                 size_t *len, sdc_error_t *err)
{
    sdc_queue_depth_t d;
    sdc_node_metrics_t *nms = NULL;
    size_t n = 0;
    int roles[SDC_ROLE_COUNT] = {0};
    sdc_status_t st = sdc_jobs_depth(q, &d, err);
    if (st == SDC_OK)
        st = read_all(q, &nms, &n, roles, err);
    if (st != SDC_OK)
        return st;
    text_t t = {0};
    family(&t, "sdc_queue_waiting", "gauge", "Jobs submitted and not yet taken by a coordinator.");
    put(&t, "sdc_queue_waiting %" PRId64 "\n", d.waiting);
    family(&t, "sdc_jobs_in_flight", "gauge", "Jobs taken by a coordinator and not finished.");
    put(&t, "sdc_jobs_in_flight %" PRId64 "\n", d.pending);
    family(&t, "sdc_nodes", "gauge", "Live nodes in the registry, by role.");
    for (int r = 0; r < SDC_ROLE_COUNT; r++)
        put(&t, "sdc_nodes{role=\"%s\"} %d\n", sdc_node_role_name((sdc_node_role_t)r), roles[r]);
    for (size_t s = 0; s < N_SERIES; s++) {
        const series_t *se = &node_series[s];
        if (se->name == NULL)
            continue;
        family(&t, se->name, se->type, se->help);
        for (size_t i = 0; i < n; i++) {
            char lb[256];
            labels(&nms[i], lb, sizeof(lb));
            series_value(&t, se, &nms[i], lb);
            /* A family's continuation rows (no name of their own) follow it. */
            for (size_t c = s + 1; c < N_SERIES && node_series[c].name == NULL; c++) {
                series_t cont = node_series[c];
                cont.name = se->name;
                series_value(&t, &cont, &nms[i], lb);
            }
        }
    }
    histogram(&t, SDC_HIST_JOB, nms, n);
    histogram(&t, SDC_HIST_STEP, nms, n);
    family(&t, "sdc_gateway_responses_total", "counter",
           "Responses this gateway process sent, by status class.");
    for (int c = 1; c <= 5; c++)
        put(&t, "sdc_gateway_responses_total{class=\"%dxx\"} %" PRIu64 "\n", c, answered[c]);
    free(nms);
    if (t.failed || !t.s) {
        free(t.s);
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory writing metrics");
    }
    *text = t.s;
    *len = t.len;
    return SDC_OK;
}
