/*
 * gateway.c: sdc-gateway's HTTP layer (see gateway.h): routing, bearer
 * authentication, rate limits, request bodies, the Redis connection pool,
 * and the handlers of the job and image endpoints. /metrics and /ready are
 * built by gateway_metrics.c.
 *
 * libmicrohttpd runs one thread per connection. A request's first call
 * routes, authenticates and checks the declared body size before a byte of
 * the body is read (so an unauthenticated or oversized upload is refused at
 * once); the body then arrives in pieces; the last call answers.
 */
#include "gateway.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "cluster/gateway_metrics.h"
#include "cluster/jobs.h"
#include "cluster/redis.h"
#include "common/base64.h"
#include "common/log.h"
#include "common/timer.h"

#define GW_SSE_KEEPALIVE_MS 5000  /* below the idle timeout: a quiet stream stays open */
#define GW_WAIT_SLICE_MS 1000     /* blocking reads are cut into slices to notice a stop */
#define GW_EVENTS_BATCH 64
#define GW_REDIS_RETRY_MS 2000    /* a request fails fast when Redis is away */
#define GW_CHUNKED_SLACK 16       /* a chunked body over max_body is read this far, then cut */

typedef enum {
    R_NONE = 0, R_HEALTH, R_READY, R_METRICS, R_JOBS, R_JOB, R_RESULT, R_EVENTS, R_IMAGES,
} route_t;

typedef struct {
    route_t route;
    const char *methods; /* allowed, for 405's Allow header */
    int needs_auth;
    int has_body;        /* POST: a JSON body follows */
    char id[SDC_JOB_ID_MAX + 1];
} match_t;

/* A borrowed Redis connection and the queue view over it. */
typedef struct conn {
    sdc_redis_t *r;
    sdc_jobs_t q;
    struct conn *next;
} conn_t;

struct sdc_gateway {
    sdc_gw_opts_t o;
    struct MHD_Daemon *d;
    int port;
    pthread_rwlock_t auth_lock;
    sdc_gw_auth_t *auth;
    pthread_mutex_t pool_mu;
    conn_t *idle;
    int stopping;             /* read and written with __atomic builtins */
    uint64_t answered[6];     /* responses by status class (1xx..5xx), index 0 unused */
};

typedef struct {
    match_t m;
    char *body;
    size_t len, cap;
    int too_large;
    int checked; /* routed, authenticated and admitted */
} req_t;

/* ---- Redis pool --------------------------------------------------------------- */

static sdc_status_t conn_get(sdc_gateway_t *g, conn_t **out, sdc_error_t *err)
{
    pthread_mutex_lock(&g->pool_mu);
    conn_t *c = g->idle;
    if (c)
        g->idle = c->next;
    pthread_mutex_unlock(&g->pool_mu);
    if (c) {
        *out = c;
        return SDC_OK;
    }
    if (!(c = calloc(1, sizeof(*c))))
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    sdc_redis_opts_t ro = {.url = g->o.redis_url, .prefix = g->o.prefix,
                           .password_file = g->o.redis_password_file,
                           .retry_budget_ms = GW_REDIS_RETRY_MS};
    sdc_status_t st = sdc_redis_open(&c->r, &ro, err);
    if (st == SDC_OK)
        st = sdc_jobs_init(&c->q, c->r, NULL, err);
    if (st != SDC_OK) {
        if (c->r)
            sdc_redis_close(c->r);
        free(c);
        return st;
    }
    *out = c;
    return SDC_OK;
}

static void conn_put(sdc_gateway_t *g, conn_t *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&g->pool_mu);
    c->next = g->idle;
    g->idle = c;
    pthread_mutex_unlock(&g->pool_mu);
}

static void pool_free(sdc_gateway_t *g)
{
    while (g->idle) {
        conn_t *c = g->idle;
        g->idle = c->next;
        sdc_redis_close(c->r);
        free(c);
    }
}

static int stopping(const sdc_gateway_t *g)
{
    return __atomic_load_n(&g->stopping, __ATOMIC_RELAXED);
}

/* ---- responses ------------------------------------------------------------------ */

typedef struct {
    const char *name, *value;
} header_t;

/* Queues status + body (taken over, malloc'd) with extra headers. */
static enum MHD_Result answer(sdc_gateway_t *g, struct MHD_Connection *conn, unsigned status,
                              const char *type, char *body, size_t len, const header_t *hs,
                              int nh)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    for (int i = 0; i < nh; i++)
        MHD_add_response_header(resp, hs[i].name, hs[i].value);
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    if (status >= 100 && status < 600)
        __atomic_fetch_add(&g->answered[status / 100], 1, __ATOMIC_RELAXED);
    return rc;
}

static enum MHD_Result answer_json(sdc_gateway_t *g, struct MHD_Connection *conn,
                                   unsigned status, cJSON *o, const header_t *hs, int nh)
{
    char *text = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!text)
        return MHD_NO;
    return answer(g, conn, status, "application/json", text, strlen(text), hs, nh);
}

static const char *error_type(unsigned status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 429: return "rate_limit_error";
    case 504: return "timeout_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

/* OpenAI's error object: {"error": {"message", "type", "code"}}. */
static enum MHD_Result answer_error_h(sdc_gateway_t *g, struct MHD_Connection *conn,
                                      unsigned status, const char *code, const header_t *hs,
                                      int nh, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static enum MHD_Result answer_error_h(sdc_gateway_t *g, struct MHD_Connection *conn,
                                      unsigned status, const char *code, const header_t *hs,
                                      int nh, const char *fmt, ...)
{
    char msg[SDC_ERROR_MSG_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject(), *e = cJSON_CreateObject();
    if (!o || !e) {
        cJSON_Delete(o);
        cJSON_Delete(e);
        return MHD_NO;
    }
    cJSON_AddItemToObject(o, "error", e);
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", error_type(status));
    cJSON_AddStringToObject(e, "code", code);
    return answer_json(g, conn, status, o, hs, nh);
}

#define answer_error(g, conn, status, code, ...) \
    answer_error_h(g, conn, status, code, NULL, 0, __VA_ARGS__)

/* A Redis failure: the cluster's state could not be read or written. */
static enum MHD_Result answer_redis_error(sdc_gateway_t *g, struct MHD_Connection *conn,
                                          const sdc_error_t *err)
{
    SDC_WARN("gateway: redis: %s", err->msg);
    return answer_error(g, conn, 503, "redis_unavailable",
                        "the cluster's state store is not available; try again later");
}

/* ---- routing ---------------------------------------------------------------------- */

/* Splits "/v1/jobs/<id>[/<tail>]"; 0 when url is not of that shape. */
static int job_path(const char *url, char *id, const char **tail)
{
    static const char pre[] = "/v1/jobs/";
    if (strncmp(url, pre, sizeof(pre) - 1) != 0)
        return 0;
    const char *p = url + sizeof(pre) - 1;
    size_t n = strcspn(p, "/");
    if (n == 0 || n > SDC_JOB_ID_MAX)
        return 0;
    memcpy(id, p, n);
    id[n] = '\0';
    *tail = p + n;
    return 1;
}

static int route(const char *url, match_t *m)
{
    const char *tail;
    memset(m, 0, sizeof(*m));
    if (strcmp(url, "/health") == 0)
        *m = (match_t){R_HEALTH, "GET, HEAD", 0, 0, ""};
    else if (strcmp(url, "/ready") == 0)
        *m = (match_t){R_READY, "GET, HEAD", 0, 0, ""};
    else if (strcmp(url, "/metrics") == 0)
        *m = (match_t){R_METRICS, "GET", 1, 0, ""};
    else if (strcmp(url, "/v1/jobs") == 0)
        *m = (match_t){R_JOBS, "POST", 1, 1, ""};
    else if (strcmp(url, "/v1/images/generations") == 0)
        *m = (match_t){R_IMAGES, "POST", 1, 1, ""};
    else if (job_path(url, m->id, &tail) && strcmp(tail, "") == 0)
        m->route = R_JOB, m->methods = "GET, DELETE", m->needs_auth = 1;
    else if (job_path(url, m->id, &tail) && strcmp(tail, "/result") == 0)
        m->route = R_RESULT, m->methods = "GET", m->needs_auth = 1;
    else if (job_path(url, m->id, &tail) && strcmp(tail, "/events") == 0)
        m->route = R_EVENTS, m->methods = "GET", m->needs_auth = 1;
    return m->route != R_NONE;
}

static int method_allowed(const match_t *m, const char *method)
{
    size_t n = strlen(method);
    for (const char *p = m->methods; *p;) {
        size_t k = strcspn(p, ",");
        if (k == n && memcmp(p, method, n) == 0)
            return 1;
        p += k;
        while (*p == ',' || *p == ' ')
            p++;
    }
    return 0;
}

/* ---- job status ------------------------------------------------------------------ */

static cJSON *status_json(const char *id, const sdc_job_status_t *s)
{
    cJSON *o = cJSON_CreateObject(), *ts = cJSON_CreateObject();
    if (!o || !ts) {
        cJSON_Delete(o);
        cJSON_Delete(ts);
        return NULL;
    }
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", "job");
    cJSON_AddStringToObject(o, "state", sdc_job_state_name(s->state));
    cJSON_AddNumberToObject(o, "step", (double)s->step);
    cJSON_AddNumberToObject(o, "steps", (double)s->steps);
    cJSON_AddNumberToObject(o, "progress",
                            s->state == SDC_JOB_DONE ? 1.0
                            : s->steps > 0           ? (double)s->step / (double)s->steps
                                                     : 0.0);
    cJSON_AddNumberToObject(o, "attempt", (double)s->attempt);
    if (s->state == SDC_JOB_FAILED)
        cJSON_AddStringToObject(o, "error", s->error[0] ? s->error : "failed");
    cJSON_AddNumberToObject(o, "created_ms", (double)s->created_ms);
    cJSON_AddNumberToObject(o, "updated_ms", (double)s->updated_ms);
    for (int k = 0; k < SDC_JOB_STATE_COUNT; k++)
        if (s->state_ms[k] > 0)
            cJSON_AddNumberToObject(ts, sdc_job_state_name((sdc_job_state_t)k),
                                    (double)s->state_ms[k]);
    cJSON_AddItemToObject(o, "timestamps", ts);
    return o;
}

/* The job's status; answers 400/404/503 itself and returns 0 then. */
static int load_status(sdc_gateway_t *g, struct MHD_Connection *conn, conn_t *c, const char *id,
                       sdc_job_status_t *s, enum MHD_Result *rc)
{
    sdc_error_t err = {0};
    sdc_status_t st = sdc_job_get(&c->q, id, s, &err);
    if (st == SDC_OK)
        return 1;
    if (st == SDC_ERR_NOT_FOUND)
        *rc = answer_error(g, conn, 404, "job_not_found", "no job '%s' (unknown, or expired)", id);
    else if (st == SDC_ERR_IO)
        *rc = answer_redis_error(g, conn, &err);
    else
        *rc = answer_error(g, conn, 500, "bad_job_record", "job '%s': %s", id, err.msg);
    return 0;
}

static enum MHD_Result handle_job_get(sdc_gateway_t *g, struct MHD_Connection *conn, conn_t *c,
                                      const char *id)
{
    sdc_job_status_t s;
    enum MHD_Result rc;
    if (!load_status(g, conn, c, id, &s, &rc))
        return rc;
    return answer_json(g, conn, 200, status_json(id, &s), NULL, 0);
}

static enum MHD_Result handle_cancel(sdc_gateway_t *g, struct MHD_Connection *conn, conn_t *c,
                                     const char *id)
{
    sdc_error_t err = {0};
    sdc_job_outcome_t outcome;
    sdc_job_status_t s;
    enum MHD_Result rc;
    sdc_status_t st = sdc_job_cancel(&c->q, id, NULL, &outcome, &err);
    if (st == SDC_ERR_IO)
        return answer_redis_error(g, conn, &err);
    if (st == SDC_ERR_NOT_FOUND)
        return answer_error(g, conn, 404, "job_not_found", "no job '%s' (unknown, or expired)",
                            id);
    if (st != SDC_OK && outcome != SDC_JOB_BAD_STATE)
        return answer_error(g, conn, 500, "bad_job_record", "job '%s': %s", id, err.msg);
    if (!load_status(g, conn, c, id, &s, &rc))
        return rc;
    if (st != SDC_OK)
        return answer_error(g, conn, 409, "job_finished", "job '%s' is %s already: nothing to "
                            "cancel", id, sdc_job_state_name(s.state));
    return answer_json(g, conn, 200, status_json(id, &s), NULL, 0);
}

static enum MHD_Result handle_result(sdc_gateway_t *g, struct MHD_Connection *conn, conn_t *c,
                                     const char *id)
{
    sdc_error_t err = {0};
    unsigned char *png;
    size_t len;
    sdc_job_status_t s;
    enum MHD_Result rc;
    sdc_status_t st = sdc_job_result_get(&c->q, id, &png, &len, &err);
    if (st == SDC_OK)
        return answer(g, conn, 200, "image/png", (char *)png, len, NULL, 0);
    if (st == SDC_ERR_IO)
        return answer_redis_error(g, conn, &err);
    if (!load_status(g, conn, c, id, &s, &rc))
        return rc;
    if (s.state == SDC_JOB_DONE)
        return answer_error(g, conn, 410, "result_expired", "job '%s' is done but its image has "
                            "expired", id);
    if (s.state == SDC_JOB_FAILED || s.state == SDC_JOB_CANCELLED)
        return answer_error(g, conn, 409, "job_not_done", "job '%s' is %s: no image%s%s", id,
                            sdc_job_state_name(s.state), s.state == SDC_JOB_FAILED ? ": " : "",
                            s.state == SDC_JOB_FAILED ? s.error : "");
    return answer_error(g, conn, 409, "job_not_done", "job '%s' is %s (step %" PRId64 " of %"
                        PRId64 "): not done yet", id, sdc_job_state_name(s.state), s.step,
                        s.steps);
}

/* ---- submitting ------------------------------------------------------------------- */

static sdc_status_t random_seed(uint64_t *seed, sdc_error_t *err)
{
    uint32_t v;
    if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v))
        return sdc_error_set(err, SDC_ERR_IO, "getrandom: %s", strerror(errno));
    *seed = v & 0x7fffffffu; /* stays a JSON number in the canonical params */
    return SDC_OK;
}

/* Parses the body as kind; answers 400 itself and returns 0 on a bad one. */
static int parse_body(sdc_gateway_t *g, struct MHD_Connection *conn, const req_t *rq,
                      sdc_gw_req_kind_t kind, sdc_gw_request_t *out, enum MHD_Result *rc)
{
    const char *code;
    sdc_error_t err = {0};
    sdc_status_t st =
        sdc_gateway_request_parse(kind, rq->body ? rq->body : "", rq->len, &g->o.lim, out, &code,
                                  &err);
    if (st == SDC_OK && !out->has_seed)
        st = random_seed(&out->params.seed, &err), code = "server_error";
    if (st == SDC_OK)
        return 1;
    *rc = answer_error(g, conn, st == SDC_ERR_NOMEM || st == SDC_ERR_IO ? 500 : 400, code, "%s",
                       err.msg);
    return 0;
}

/* Submits p under a fresh id (written into p->id), with its input image
 * when the request carried one. */
static sdc_status_t submit(conn_t *c, sdc_job_params_t *p, const sdc_gw_request_t *r,
                           sdc_error_t *err)
{
    sdc_status_t st = sdc_job_id_new(p->id, err);
    if (st != SDC_OK)
        return st;
    return sdc_job_submit_image(&c->q, p, r && r->image ? &r->img : NULL, NULL, err);
}

static enum MHD_Result handle_submit(sdc_gateway_t *g, struct MHD_Connection *conn, conn_t *c,
                                     const req_t *rq)
{
    sdc_gw_request_t r;
    sdc_error_t err = {0};
    enum MHD_Result rc;
    if (!parse_body(g, conn, rq, SDC_GW_REQ_JOB, &r, &rc))
        return rc;
    sdc_status_t st = submit(c, &r.params, &r, &err);
    if (st != SDC_OK) {
        sdc_gw_request_free(&r);
        return st == SDC_ERR_IO ? answer_redis_error(g, conn, &err)
                                : answer_error(g, conn, 500, "submit_failed", "%s", err.msg);
    }
    char body[160], loc[96];
    int n = snprintf(body, sizeof(body), "{\"id\":\"%s\",\"object\":\"job\",\"state\":\"queued\"}",
                     r.params.id);
    snprintf(loc, sizeof(loc), "/v1/jobs/%s", r.params.id);
    sdc_gw_request_free(&r);
    char *copy = strdup(body);
    if (!copy)
        return MHD_NO;
    header_t h = {"Location", loc};
    return answer(g, conn, 202, "application/json", copy, (size_t)n, &h, 1);
}

/* ---- waiting for a job ------------------------------------------------------------ */

/* The newest entry id of an XREAD reply for one stream, and whether any
 * entry reports a final state. */
static sdc_status_t read_events(const redisReply *rep, char *last, size_t cap, sdc_error_t *err)
{
    if (rep->type == REDIS_REPLY_NIL)
        return SDC_OK;
    sdc_status_t st = sdc_redis_expect_array(rep, 1, "XREAD", err);
    if (st == SDC_OK)
        st = sdc_redis_expect_array(rep->element[0], 2, "XREAD stream", err);
    if (st == SDC_OK)
        st = sdc_redis_expect(rep->element[0]->element[1], REDIS_REPLY_ARRAY, "XREAD entries",
                              err);
    if (st != SDC_OK)
        return st;
    const redisReply *es = rep->element[0]->element[1];
    if (es->elements == 0)
        return SDC_OK;
    const redisReply *e = es->element[es->elements - 1];
    if ((st = sdc_redis_expect_array(e, 2, "event", err)) != SDC_OK ||
        (st = sdc_redis_expect(e->element[0], REDIS_REPLY_STRING, "event id", err)) != SDC_OK)
        return st;
    if (e->element[0]->len >= cap)
        return sdc_error_set(err, SDC_ERR_FORMAT, "event id too long");
    memcpy(last, e->element[0]->str, e->element[0]->len + 1);
    return SDC_OK;
}

/* Waits until job id ends (or the deadline passes: *timed_out = 1), woken
 * by its events stream. s gets the last status read. */
static sdc_status_t wait_job(sdc_gateway_t *g, conn_t *c, const char *id, double deadline,
                             sdc_job_status_t *s, int *timed_out, sdc_error_t *err)
{
    char key[SDC_REDIS_KEY_MAX], last[SDC_STREAM_ID_MAX + 1] = "0-0";
    *timed_out = 0;
    sdc_status_t st = sdc_redis_key(c->r, key, sizeof(key), err, "job:%s:events", id);
    while (st == SDC_OK) {
        if ((st = sdc_job_get(&c->q, id, s, err)) != SDC_OK || sdc_job_state_final(s->state))
            return st;
        double left = deadline - sdc_now();
        if (left <= 0 || stopping(g)) {
            *timed_out = 1;
            return SDC_OK;
        }
        int ms = left * 1000 < GW_WAIT_SLICE_MS ? (int)(left * 1000) + 1 : GW_WAIT_SLICE_MS;
        redisReply *rep;
        st = sdc_redis_command_blocking(c->r, ms, &rep, err, "XREAD COUNT %d BLOCK %d STREAMS %s %s",
                                        GW_EVENTS_BATCH, ms, key, last);
        if (st == SDC_OK) {
            st = read_events(rep, last, sizeof(last), err);
            sdc_redis_reply_free(rep);
        }
    }
    return st;
}

/* The images of finished jobs as OpenAI's {"created", "data": [...]}. */
static enum MHD_Result answer_images(sdc_gateway_t *g, struct MHD_Connection *conn, conn_t *c,
                                     char (*ids)[SDC_JOB_ID_MAX + 1], int n)
{
    sdc_error_t err = {0};
    cJSON *o = cJSON_CreateObject(), *data = cJSON_CreateArray();
    if (!o || !data) {
        cJSON_Delete(o);
        cJSON_Delete(data);
        return MHD_NO;
    }
    cJSON_AddNumberToObject(o, "created", (double)time(NULL));
    cJSON_AddItemToObject(o, "data", data);
    for (int i = 0; i < n; i++) {
        unsigned char *png;
        size_t len;
        sdc_status_t st = sdc_job_result_get(&c->q, ids[i], &png, &len, &err);
        if (st != SDC_OK) {
            cJSON_Delete(o);
            return st == SDC_ERR_IO ? answer_redis_error(g, conn, &err)
                                    : answer_error(g, conn, 500, "result_missing", "%s", err.msg);
        }
        char *text = sdc_base64_encode(png, len);
        free(png);
        cJSON *item = cJSON_CreateObject();
        if (!text || !item || !cJSON_AddItemToArray(data, item)) {
            free(text);
            cJSON_Delete(item);
            cJSON_Delete(o);
            return MHD_NO;
        }
        cJSON_AddStringToObject(item, "b64_json", text);
        cJSON_AddStringToObject(item, "job_id", ids[i]);
        free(text);
    }
    return answer_json(g, conn, 200, o, NULL, 0);
}

static enum MHD_Result handle_images(sdc_gateway_t *g, struct MHD_Connection *conn, conn_t *c,
                                     const req_t *rq)
{
    sdc_gw_request_t r;
    sdc_error_t err = {0};
    enum MHD_Result rc;
    char ids[SDC_GW_N_MAX][SDC_JOB_ID_MAX + 1];
    if (!parse_body(g, conn, rq, SDC_GW_REQ_IMAGES, &r, &rc))
        return rc;
    double deadline = sdc_now() + g->o.wait_timeout_s;
    uint64_t seed0 = r.params.seed;
    sdc_status_t st = SDC_OK;
    int n = 0;
    for (; n < r.n && st == SDC_OK; n++) {
        r.params.seed = seed0 + (uint64_t)n;
        if ((st = submit(c, &r.params, NULL, &err)) == SDC_OK)
            memcpy(ids[n], r.params.id, sizeof(ids[n]));
    }
    sdc_gw_request_free(&r);
    if (st != SDC_OK)
        return st == SDC_ERR_IO ? answer_redis_error(g, conn, &err)
                                : answer_error(g, conn, 500, "submit_failed", "%s", err.msg);
    /* The jobs run side by side: waiting for each in turn costs no more
     * than waiting for the slowest. */
    for (int i = 0; i < n; i++) {
        sdc_job_status_t s;
        int timed_out;
        if ((st = wait_job(g, c, ids[i], deadline, &s, &timed_out, &err)) != SDC_OK)
            return answer_redis_error(g, conn, &err);
        if (timed_out)
            return answer_error(g, conn, 504, "timeout", "the image%s did not finish within %d s; "
                                "the job%s keep%s running: GET /v1/jobs/%s%s", n > 1 ? "s" : "",
                                g->o.wait_timeout_s, n > 1 ? "s" : "", n > 1 ? "" : "s", ids[i],
                                n > 1 ? " (and the others of this request)" : "");
        if (s.state == SDC_JOB_FAILED)
            return answer_error(g, conn, 500, "job_failed", "job %s failed: %s", ids[i],
                                s.error[0] ? s.error : "no reason recorded");
        if (s.state == SDC_JOB_CANCELLED)
            return answer_error(g, conn, 409, "job_cancelled", "job %s was cancelled", ids[i]);
    }
    return answer_images(g, conn, c, ids, n);
}

/* ---- events (Server-Sent Events) -------------------------------------------------- */

typedef struct {
    sdc_gateway_t *g;
    conn_t *c;
    char id[SDC_JOB_ID_MAX + 1];
    char key[SDC_REDIS_KEY_MAX];
    char last[SDC_STREAM_ID_MAX + 1];
    char *buf;        /* formatted events not yet handed to MHD */
    size_t len, off, cap;
    int ended;        /* a final state was formatted: end after the buffer */
    char state[32];   /* of the previous event: "state" vs "progress" events */
} sse_t;

static int buf_printf(sse_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int buf_printf(sse_t *e, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(e->buf + e->len, e->cap - e->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -1;
        if ((size_t)n < e->cap - e->len) {
            e->len += (size_t)n;
            return 0;
        }
        size_t cap = 2 * e->cap + (size_t)n + 1;
        char *grown = realloc(e->buf, cap);
        if (!grown)
            return -1;
        e->buf = grown;
        e->cap = cap;
    }
}

/* One stream entry {state, attempt, step, steps, ts[, error]} as an SSE
 * event "state" (a state change) or "progress" (a step). */
static int format_event(sse_t *e, const redisReply *entry)
{
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
        entry->element[0]->type != REDIS_REPLY_STRING ||
        entry->element[1]->type != REDIS_REPLY_ARRAY || entry->element[1]->elements % 2)
        return -1;
    const redisReply *f = entry->element[1];
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -1;
    const char *state = "";
    cJSON_AddStringToObject(o, "id", e->id);
    for (size_t i = 0; i < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (strcmp(k->str, "state") == 0 || strcmp(k->str, "error") == 0) {
            cJSON_AddStringToObject(o, k->str, v->str);
            if (strcmp(k->str, "state") == 0)
                state = cJSON_GetObjectItem(o, "state")->valuestring;
        } else {
            cJSON_AddNumberToObject(o, k->str, strtod(v->str, NULL));
        }
    }
    int change = strcmp(state, e->state) != 0;
    int s = sdc_job_state_parse(state, strlen(state));
    char *text = cJSON_PrintUnformatted(o);
    int rc = text ? buf_printf(e, "id: %s\nevent: %s\ndata: %s\n\n", entry->element[0]->str,
                               change ? "state" : "progress", text)
                  : -1;
    snprintf(e->state, sizeof(e->state), "%s", state);
    if (s >= 0 && sdc_job_state_final((sdc_job_state_t)s))
        e->ended = 1;
    free(text);
    cJSON_Delete(o);
    if (rc == 0 && entry->element[0]->len < sizeof(e->last))
        memcpy(e->last, entry->element[0]->str, entry->element[0]->len + 1);
    return rc;
}

/* Fills e->buf with the next events, or a keep-alive comment after a
 * quiet GW_SSE_KEEPALIVE_MS. */
static int sse_fill(sse_t *e)
{
    sdc_error_t err = {0};
    double until = sdc_now() + GW_SSE_KEEPALIVE_MS / 1000.0;
    e->len = e->off = 0;
    while (!stopping(e->g)) {
        double left = until - sdc_now();
        if (left <= 0)
            return buf_printf(e, ": keep-alive\n\n");
        int ms = left * 1000 < GW_WAIT_SLICE_MS ? (int)(left * 1000) + 1 : GW_WAIT_SLICE_MS;
        redisReply *rep;
        if (sdc_redis_command_blocking(e->c->r, ms, &rep, &err,
                                       "XREAD COUNT %d BLOCK %d STREAMS %s %s", GW_EVENTS_BATCH,
                                       ms, e->key, e->last) != SDC_OK) {
            SDC_WARN("gateway: events of job %s: %s", e->id, err.msg);
            return -1;
        }
        int rc = 0;
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 &&
            rep->element[0]->type == REDIS_REPLY_ARRAY && rep->element[0]->elements == 2) {
            const redisReply *es = rep->element[0]->element[1];
            for (size_t i = 0; rc == 0 && es->type == REDIS_REPLY_ARRAY && i < es->elements; i++)
                rc = format_event(e, es->element[i]);
        }
        sdc_redis_reply_free(rep);
        if (rc != 0 || e->len > 0)
            return rc;
    }
    return -1;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *out, size_t max)
{
    sse_t *e = cls;
    (void)pos;
    if (e->off == e->len) {
        if (e->ended)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (sse_fill(e) != 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = e->len - e->off < max ? e->len - e->off : max;
    memcpy(out, e->buf + e->off, n);
    e->off += n;
    return (ssize_t)n;
}

static void sse_free(void *cls)
{
    sse_t *e = cls;
    conn_put(e->g, e->c);
    free(e->buf);
    free(e);
}

/* Last-Event-ID resumes a stream after the given entry. */
static int event_id_ok(const char *s)
{
    size_t i = 0, n = strlen(s);
    if (n == 0 || n > SDC_STREAM_ID_MAX)
        return 0;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    if (i == 0 || i == n || s[i] != '-')
        return 0;
    size_t j = ++i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    return i == n && i > j;
}

/* Takes over c (returned to the pool when the stream ends). */
static enum MHD_Result handle_events(sdc_gateway_t *g, struct MHD_Connection *conn, conn_t *c,
                                     const char *id)
{
    sdc_job_status_t s;
    enum MHD_Result rc;
    sdc_error_t err = {0};
    if (!load_status(g, conn, c, id, &s, &rc)) {
        conn_put(g, c);
        return rc;
    }
    const char *resume = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Last-Event-ID");
    if (resume && !event_id_ok(resume)) {
        conn_put(g, c);
        return answer_error(g, conn, 400, "invalid_last_event_id",
                            "Last-Event-ID must be an event id of this stream (<ms>-<seq>)");
    }
    sse_t *e = calloc(1, sizeof(*e));
    if (!e || sdc_redis_key(c->r, e->key, sizeof(e->key), &err, "job:%s:events", id) != SDC_OK) {
        free(e);
        conn_put(g, c);
        return MHD_NO;
    }
    e->g = g;
    e->c = c;
    snprintf(e->id, sizeof(e->id), "%s", id);
    snprintf(e->last, sizeof(e->last), "%s", resume ? resume : "0-0");
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, e, sse_free);
    if (!resp) {
        sse_free(e);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    rc = MHD_queue_response(conn, 200, resp);
    MHD_destroy_response(resp);
    __atomic_fetch_add(&g->answered[2], 1, __ATOMIC_RELAXED);
    return rc;
}

/* ---- health, readiness, metrics --------------------------------------------------- */

static enum MHD_Result handle_ready(sdc_gateway_t *g, struct MHD_Connection *conn, conn_t *c)
{
    sdc_error_t err = {0};
    cJSON *o;
    int ready;
    if (sdc_gw_ready(&c->q, &ready, &o, &err) != SDC_OK)
        return err.code == SDC_ERR_IO ? answer_redis_error(g, conn, &err)
                                      : answer_error(g, conn, 500, "server_error", "%s", err.msg);
    return answer_json(g, conn, ready ? 200 : 503, o, NULL, 0);
}

static enum MHD_Result handle_metrics(sdc_gateway_t *g, struct MHD_Connection *conn, conn_t *c)
{
    sdc_error_t err = {0};
    char *text;
    size_t len;
    uint64_t answered[6];
    for (int i = 0; i < 6; i++)
        answered[i] = __atomic_load_n(&g->answered[i], __ATOMIC_RELAXED);
    if (sdc_gw_metrics_text(&c->q, answered, &text, &len, &err) != SDC_OK)
        return err.code == SDC_ERR_IO ? answer_redis_error(g, conn, &err)
                                      : answer_error(g, conn, 500, "server_error", "%s", err.msg);
    return answer(g, conn, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, NULL, 0);
}

/* ---- dispatch -------------------------------------------------------------------- */

static enum MHD_Result dispatch(sdc_gateway_t *g, struct MHD_Connection *conn, const req_t *rq,
                                const char *method)
{
    sdc_error_t err = {0};
    conn_t *c;
    if (rq->m.route == R_HEALTH) {
        char *body = strdup("{\"status\":\"ok\"}");
        return body ? answer(g, conn, 200, "application/json", body, strlen(body), NULL, 0)
                    : MHD_NO;
    }
    if (conn_get(g, &c, &err) != SDC_OK)
        return answer_redis_error(g, conn, &err);
    enum MHD_Result rc;
    switch (rq->m.route) {
    case R_READY: rc = handle_ready(g, conn, c); break;
    case R_METRICS: rc = handle_metrics(g, conn, c); break;
    case R_JOBS: rc = handle_submit(g, conn, c, rq); break;
    case R_IMAGES: rc = handle_images(g, conn, c, rq); break;
    case R_RESULT: rc = handle_result(g, conn, c, rq->m.id); break;
    case R_EVENTS: return handle_events(g, conn, c, rq->m.id); /* keeps c */
    case R_JOB:
        rc = strcmp(method, "DELETE") == 0 ? handle_cancel(g, conn, c, rq->m.id)
                                           : handle_job_get(g, conn, c, rq->m.id);
        break;
    default: rc = MHD_NO; break;
    }
    conn_put(g, c);
    return rc;
}

/* Auth and rate limit; 0 after answering 401/429. */
static int admit(sdc_gateway_t *g, struct MHD_Connection *conn, const match_t *m,
                 enum MHD_Result *rc)
{
    if (!m->needs_auth || (m->route == R_METRICS && g->o.open_metrics))
        return 1;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);
    pthread_rwlock_rdlock(&g->auth_lock);
    long tok = sdc_gw_auth_check(g->auth, h);
    int retry = 0;
    int allowed = tok >= 0 && sdc_gw_rate_take(g->auth, tok, sdc_now(), &retry);
    pthread_rwlock_unlock(&g->auth_lock);
    if (tok < 0) {
        header_t wa = {"WWW-Authenticate", "Bearer"};
        *rc = answer_error_h(g, conn, 401, h ? "invalid_api_key" : "missing_api_key", &wa, 1,
                             h ? "the bearer token is not valid"
                               : "this endpoint needs 'Authorization: Bearer <token>'");
        return 0;
    }
    if (!allowed) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", retry);
        header_t h2 = {"Retry-After", ra};
        *rc = answer_error_h(g, conn, 429, "rate_limit_exceeded", &h2, 1,
                             "rate limit of %g requests/s (burst %g) exceeded; retry after %d s",
                             g->o.rate.rate, g->o.rate.burst, retry);
        return 0;
    }
    return 1;
}

/* The first call of a request: route, method, auth, declared body. 0 when
 * it answered already. */
static int first_call(sdc_gateway_t *g, struct MHD_Connection *conn, req_t *rq, const char *url,
                      const char *method, enum MHD_Result *rc)
{
    if (!route(url, &rq->m)) {
        *rc = answer_error(g, conn, 404, "unknown_url", "no such endpoint");
        return 0;
    }
    if (!method_allowed(&rq->m, method)) {
        header_t allow = {"Allow", rq->m.methods};
        *rc = answer_error_h(g, conn, 405, "method_not_allowed", &allow, 1,
                             "this endpoint takes %s", rq->m.methods);
        return 0;
    }
    if (!admit(g, conn, &rq->m, rc))
        return 0;
    if (rq->m.id[0]) {
        sdc_error_t err = {0};
        if (sdc_job_id_check(rq->m.id, "job id", &err) != SDC_OK) {
            *rc = answer_error(g, conn, 400, "invalid_job_id", "%s", err.msg);
            return 0;
        }
    }
    if (!rq->m.has_body)
        return 1;
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!ct || strncasecmp(ct, "application/json", 16) != 0 || (ct[16] && ct[16] != ';')) {
        *rc = answer_error(g, conn, 415, "unsupported_media_type",
                           "the body must be JSON (Content-Type: application/json)");
        return 0;
    }
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > g->o.max_body) {
        *rc = answer_error(g, conn, 413, "body_too_large", "the body is over %zu bytes",
                           g->o.max_body);
        return 0;
    }
    return 1;
}

static int body_append(req_t *rq, const char *data, size_t n, size_t max)
{
    if (rq->too_large || rq->len + n > max) {
        rq->too_large = 1;
        rq->len += n; /* counted, not kept */
        return 0;
    }
    if (rq->len + n > rq->cap) {
        size_t cap = rq->cap ? rq->cap : 1024;
        while (cap < rq->len + n)
            cap *= 2;
        char *grown = realloc(rq->body, cap);
        if (!grown)
            return -1;
        rq->body = grown;
        rq->cap = cap;
    }
    memcpy(rq->body + rq->len, data, n);
    rq->len += n;
    return 0;
}

/* libmicrohttpd closes the connection after a response queued in a
 * request's first call (it cannot know the request is over), so answers
 * wait for the last call, except refusals of a POST, which should not read
 * the body they refuse. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    sdc_gateway_t *g = cls;
    req_t *rq = *con_cls;
    enum MHD_Result rc = MHD_YES;
    (void)version;
    if (!rq) {
        if (!(rq = calloc(1, sizeof(*rq))))
            return MHD_NO;
        *con_cls = rq;
        if (strcmp(method, "POST") == 0) {
            if (!first_call(g, conn, rq, url, method, &rc))
                return rc;
            rq->checked = 1;
        }
        return MHD_YES;
    }
    if (*upload_size) {
        /* Only a checked POST keeps its body; any other is counted and dropped. */
        if (rq->checked && body_append(rq, upload_data, *upload_size, g->o.max_body) < 0)
            return MHD_NO;
        if (!rq->checked)
            rq->len += *upload_size;
        *upload_size = 0;
        /* A chunked body has no declared length: once well past the limit
         * the connection is cut rather than read to its end. */
        return rq->len > GW_CHUNKED_SLACK * g->o.max_body ? MHD_NO : MHD_YES;
    }
    if (!rq->checked && !first_call(g, conn, rq, url, method, &rc))
        return rc;
    if (rq->too_large)
        return answer_error(g, conn, 413, "body_too_large", "the body is over %zu bytes",
                            g->o.max_body);
    return dispatch(g, conn, rq, method);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode why)
{
    req_t *rq = *con_cls;
    (void)cls, (void)conn, (void)why;
    if (rq) {
        free(rq->body);
        free(rq);
    }
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    SDC_DEBUG("gateway: http: %s", msg);
}

/* ---- life cycle -------------------------------------------------------------------- */

void sdc_gw_opts_default(sdc_gw_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->listen = "127.0.0.1";
    o->port = 8080;
    o->rate.rate = 100;
    o->rate.burst = 200;
    o->max_body = 12 << 20; /* an 8 MiB init_image in base64, and the rest */
    o->max_connections = 1024;
    o->conn_timeout_s = 10;
    o->wait_timeout_s = 300;
    sdc_gw_limits_default(&o->lim);
}

static sdc_status_t load_auth(const sdc_gw_opts_t *o, sdc_gw_auth_t **out, sdc_error_t *err)
{
    if (o->no_auth)
        return sdc_gw_auth_open(&o->rate, out, err);
    if (!o->tokens_path)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "no token file: give one, or turn authentication off explicitly");
    return sdc_gw_auth_load(o->tokens_path, &o->rate, out, err);
}

static sdc_status_t start_daemon(sdc_gateway_t *g, sdc_error_t *err)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)g->o.port);
    if (inet_pton(AF_INET, g->o.listen, &sa.sin_addr) != 1)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "listen address '%s' is not an IPv4 "
                             "address", g->o.listen);
    g->d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
            MHD_USE_ERROR_LOG,
        (uint16_t)g->o.port, NULL, NULL, on_request, g, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT, (unsigned)g->o.max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)g->o.conn_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, g, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
        g, MHD_OPTION_STRICT_FOR_CLIENT, 1, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
        MHD_OPTION_END);
    if (!g->d)
        return sdc_error_set(err, SDC_ERR_IO, "cannot listen on %s:%d: %s", g->o.listen,
                             g->o.port, strerror(errno));
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(g->d, MHD_DAEMON_INFO_BIND_PORT);
    g->port = info ? info->port : g->o.port;
    return SDC_OK;
}

sdc_status_t sdc_gateway_start(const sdc_gw_opts_t *o, sdc_gateway_t **out, sdc_error_t *err)
{
    sdc_gateway_t *g = calloc(1, sizeof(*g));
    if (!g)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    g->o = *o;
    pthread_rwlock_init(&g->auth_lock, NULL);
    pthread_mutex_init(&g->pool_mu, NULL);
    conn_t *c = NULL;
    sdc_status_t st = load_auth(o, &g->auth, err);
    if (st == SDC_OK && (st = conn_get(g, &c, err)) != SDC_OK)
        sdc_error_wrap(err, "redis");
    /* The queue's consumer group, as a coordinator creates it: /metrics and
     * /ready read it before any coordinator has started. */
    if (st == SDC_OK && (st = sdc_jobs_group_create(&c->q, err)) != SDC_OK)
        sdc_error_wrap(err, "redis");
    conn_put(g, c);
    if (st == SDC_OK)
        st = start_daemon(g, err);
    if (st != SDC_OK) {
        sdc_gateway_stop(g);
        return st;
    }
    *out = g;
    return SDC_OK;
}

int sdc_gateway_port(const sdc_gateway_t *g)
{
    return g->port;
}

sdc_status_t sdc_gateway_reload(sdc_gateway_t *g, sdc_error_t *err)
{
    sdc_gw_auth_t *fresh;
    sdc_status_t st = load_auth(&g->o, &fresh, err);
    if (st != SDC_OK)
        return st;
    pthread_rwlock_wrlock(&g->auth_lock);
    sdc_gw_auth_t *old = g->auth;
    g->auth = fresh;
    pthread_rwlock_unlock(&g->auth_lock);
    sdc_gw_auth_free(old);
    return SDC_OK;
}

void sdc_gateway_stop(sdc_gateway_t *g)
{
    if (!g)
        return;
    __atomic_store_n(&g->stopping, 1, __ATOMIC_RELAXED);
    if (g->d)
        MHD_stop_daemon(g->d);
    pool_free(g);
    sdc_gw_auth_free(g->auth);
    pthread_rwlock_destroy(&g->auth_lock);
    pthread_mutex_destroy(&g->pool_mu);
    free(g);
}
