/*
 * lg_http.c: the load generator's HTTP target, a client of sdc-gateway's
 * job API through libcurl (one connection, kept alive).
 *
 * The contract it expects (README "HTTP API the load generator expects"
 * repeats it; align the gateway and this comment together):
 *
 *   POST {base}/v1/jobs            Content-Type: application/json
 *        {"prompt": str, "negative_prompt": str (optional), "size": "WxH"
 *         (optional), "seed": int, "steps": int, "guidance_scale": number
 *         (optional)}
 *     -> 202 {"id": str, "state": "queued", ...}      (200 and 201 accepted)
 *   GET  {base}/v1/jobs/{id}
 *     -> 200 {"id": str, "state": "queued" | "encoding" | "denoising" |
 *             "decoding" | "done" | "failed" | "cancelled",
 *             "step": int, "steps": int, "attempt": int (optional),
 *             "error": str or {"message": str, ...} (when failed),
 *             "created_ms": int, "queued_ms", "encoding_ms", "denoising_ms",
 *             "decoding_ms", "done_ms", "failed_ms", "cancelled_ms": int}
 *        Timestamps are integer milliseconds since the Unix epoch, the same
 *        names and meaning as the fields of the job hash in Redis
 *        (cluster/jobs.h: when the job last entered each state); absent or
 *        null until the job gets there. They may also be nested in a
 *        "timestamps" object. Unknown fields are ignored.
 *     -> 404 when there is no such job
 *   GET  {base}/v1/jobs/{id}/result
 *     -> 200 image/png when done; 409 when not done yet
 *   Every request: "Authorization: Bearer <token>" when a token is given.
 *   Errors: {"error": {"message": str, "type": str, "code": str|int}};
 *   429 with Retry-After (seconds or an HTTP date) when rate limited.
 *
 * The gateway's clock is not measured (no endpoint gives it), so latency is
 * what the client observes: from the intended send time to the poll that
 * saw the job done, with the poll interval as its resolution.
 */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loadgen/loadgen.h"

#define JSON_MAX (1u << 20)           /* a job's JSON */
#define RESULT_MAX ((size_t)512 << 20) /* a PNG: Redis' largest string */
#define URL_MAX 2048
#define PNG_SIGNATURE "\x89PNG\r\n\x1a\n"

typedef struct {
    CURL *curl;
    struct curl_slist *headers;      /* Accept, Authorization */
    struct curl_slist *post_headers; /* the above + Content-Type */
    char base[URL_MAX];
    long timeout_ms;
} http_ctx_t;

typedef struct {
    char *data;
    size_t len, cap, max;
    int too_big;
    double retry_after_s;
    char content_type[64];
} body_t;

/* ---- parsing the contract ------------------------------------------------ */

static cJSON *parse_object(const char *body, size_t len, const char *what, sdc_error_t *err)
{
    if (len > JSON_MAX) {
        sdc_error_set(err, SDC_ERR_FORMAT, "%s: %zu bytes of JSON, more than %u", what, len,
                      JSON_MAX);
        return NULL;
    }
    cJSON *o = cJSON_ParseWithLength(body, len);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        sdc_error_set(err, SDC_ERR_FORMAT, "%s: not a JSON object", what);
        return NULL;
    }
    return o;
}

static sdc_status_t copy_id(const cJSON *o, char id[SDC_JOB_ID_MAX + 1], const char *what,
                            sdc_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "id");
    if (!cJSON_IsString(v))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: no string \"id\"", what);
    sdc_status_t st = sdc_job_id_check(v->valuestring, "job id", err);
    if (st != SDC_OK)
        return sdc_error_wrap(err, "%s", what);
    snprintf(id, SDC_JOB_ID_MAX + 1, "%s", v->valuestring);
    return SDC_OK;
}

sdc_status_t sdc_lg_http_parse_created(const char *body, size_t len,
                                       char id[SDC_JOB_ID_MAX + 1], sdc_error_t *err)
{
    cJSON *o = parse_object(body, len, "POST /v1/jobs answer", err);
    if (!o)
        return SDC_ERR_FORMAT;
    sdc_status_t st = copy_id(o, id, "POST /v1/jobs answer", err);
    cJSON_Delete(o);
    return st;
}

static int state_index(const char *name)
{
    return sdc_job_state_parse(name, strlen(name));
}

static const char *state_label(int k)
{
    return sdc_job_state_name((sdc_job_state_t)k);
}

/* An optional non-negative integer field; absent and null leave *out. */
static sdc_status_t opt_int(const cJSON *o, const char *key, int64_t hi, int64_t *out,
                            sdc_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v))
        return SDC_OK;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > (double)hi ||
        v->valuedouble != floor(v->valuedouble))
        return sdc_error_set(err, SDC_ERR_FORMAT, "GET job: \"%s\" is not an integer in 0..%lld",
                             key, (long long)hi);
    *out = (int64_t)v->valuedouble;
    return SDC_OK;
}

static sdc_status_t read_timestamps(const cJSON *o, sdc_lg_status_t *s, sdc_error_t *err)
{
    /* 2^53: exact in a double, far past any date. */
    const int64_t max = (int64_t)1 << 53;
    char key[32];
    sdc_status_t st = opt_int(o, "created_ms", max, &s->created_ms, err);
    for (int k = 0; k < SDC_JOB_STATE_COUNT && st == SDC_OK; k++) {
        snprintf(key, sizeof(key), "%s_ms", state_label(k));
        st = opt_int(o, key, max, &s->state_ms[k], err);
    }
    return st;
}

sdc_status_t sdc_lg_http_parse_job(const char *body, size_t len, const char *id,
                                   sdc_lg_status_t *s, sdc_error_t *err)
{
    memset(s, 0, sizeof(*s));
    s->attempt = 1;
    cJSON *o = parse_object(body, len, "GET job", err);
    if (!o)
        return SDC_ERR_FORMAT;
    char got[SDC_JOB_ID_MAX + 1];
    sdc_status_t st = copy_id(o, got, "GET job", err);
    if (st == SDC_OK && strcmp(got, id) != 0)
        st = sdc_error_set(err, SDC_ERR_FORMAT, "GET job %s: the answer is about job %s", id, got);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "state");
    if (st == SDC_OK && !cJSON_IsString(v))
        st = sdc_error_set(err, SDC_ERR_FORMAT, "GET job %s: no string \"state\"", id);
    if (st == SDC_OK && (s->state = state_index(v->valuestring)) < 0)
        st = sdc_error_set(err, SDC_ERR_FORMAT, "GET job %s: unknown state '%.40s'", id,
                           v->valuestring);
    if (st == SDC_OK) st = opt_int(o, "step", SDC_JOB_STEPS_MAX, &s->step, err);
    if (st == SDC_OK) st = opt_int(o, "steps", SDC_JOB_STEPS_MAX, &s->steps, err);
    if (st == SDC_OK) st = opt_int(o, "attempt", INT32_MAX, &s->attempt, err);
    if (st == SDC_OK) st = read_timestamps(o, s, err);
    const cJSON *nested = cJSON_GetObjectItemCaseSensitive(o, "timestamps");
    if (st == SDC_OK && cJSON_IsObject(nested))
        st = read_timestamps(nested, s, err);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    if (st == SDC_OK && cJSON_IsObject(e))
        e = cJSON_GetObjectItemCaseSensitive(e, "message");
    if (st == SDC_OK && cJSON_IsString(e))
        snprintf(s->error, sizeof(s->error), "%s", e->valuestring);
    cJSON_Delete(o);
    return st;
}

void sdc_lg_http_error_message(const char *body, size_t len, char *out, size_t cap)
{
    out[0] = '\0';
    cJSON *o = len && len <= JSON_MAX ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    const cJSON *m = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "message") : e;
    if (cJSON_IsString(m)) {
        snprintf(out, cap, "%s", m->valuestring);
    } else {
        /* Not the error format: the start of the body, printable only. */
        size_t n = 0;
        for (size_t i = 0; i < len && n + 1 < cap && n < 120; i++)
            out[n++] = isprint((unsigned char)body[i]) ? body[i] : ' ';
        out[n] = '\0';
    }
    cJSON_Delete(o);
}

double sdc_lg_retry_after(const char *value, long now)
{
    while (*value == ' ' || *value == '\t')
        value++;
    char *end;
    errno = 0;
    long s = strtol(value, &end, 10);
    if (end != value && errno == 0 && s >= 0) {
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')
            end++;
        if (*end == '\0')
            return (double)s;
    }
    /* IMF-fixdate, as HTTP/1.1 sends it: "Sun, 06 Nov 1994 08:49:37 GMT". */
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *rest = strptime(value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!rest)
        return -1;
    double d = difftime(timegm(&tm), (time_t)now);
    return d > 0 ? d : 0;
}

sdc_status_t sdc_lg_token_read(const char *path, char **token, sdc_error_t *err)
{
    *token = NULL;
    FILE *f = fopen(path, "r");
    if (!f)
        return sdc_error_set(err, SDC_ERR_IO, "token file %s: %s", path, strerror(errno));
    char buf[4096 + 2];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad)
        return sdc_error_set(err, SDC_ERR_IO, "token file %s: read error", path);
    buf[n] = '\0';
    char *nl = strpbrk(buf, "\r\n");
    if (nl)
        *nl = '\0';
    else if (n == sizeof(buf) - 1)
        return sdc_error_set(err, SDC_ERR_FORMAT, "token file %s: first line longer than 4096 bytes",
                             path);
    char *s = buf, *e = buf + strlen(buf);
    while (*s == ' ' || *s == '\t')
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *e = '\0';
    if (!*s)
        return sdc_error_set(err, SDC_ERR_FORMAT, "token file %s: empty first line", path);
    for (const char *p = s; *p; p++)
        if (*p < 0x21 || *p > 0x7e)
            return sdc_error_set(err, SDC_ERR_FORMAT,
                                 "token file %s: the token has a character outside visible "
                                 "ASCII at byte %zu", path, (size_t)(p - s));
    if (!(*token = strdup(s)))
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    return SDC_OK;
}

/* ---- requests ------------------------------------------------------------- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    body_t *b = arg;
    size_t n = size * nmemb;
    if (b->len + n > b->max) {
        b->too_big = 1;
        return 0; /* aborts the transfer */
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d)
            return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
    body_t *b = arg;
    size_t n = size * nmemb;
    char line[256];
    size_t k = n < sizeof(line) - 1 ? n : sizeof(line) - 1;
    memcpy(line, ptr, k);
    line[k] = '\0';
    if (strncasecmp(line, "Retry-After:", 12) == 0) {
        double s = sdc_lg_retry_after(line + 12, (long)time(NULL));
        b->retry_after_s = s >= 0 ? s : 0;
    } else if (strncasecmp(line, "Content-Type:", 13) == 0) {
        const char *v = line + 13;
        while (*v == ' ')
            v++;
        snprintf(b->content_type, sizeof(b->content_type), "%.*s", (int)strcspn(v, "; \r\n"), v);
    }
    return n;
}

static sdc_lg_err_t curl_kind(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: return SDC_LG_ERR_TIMEOUT;
    case CURLE_WRITE_ERROR:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_UNSUPPORTED_PROTOCOL: return SDC_LG_ERR_PROTOCOL;
    default: return SDC_LG_ERR_CONNECT;
    }
}

/* One request; *status is the HTTP status. A transport failure is an error
 * with f->kind set. */
static sdc_status_t request(http_ctx_t *c, const char *method, const char *path, const char *json,
                            size_t max, body_t *b, long *status, sdc_lg_fault_t *f,
                            sdc_error_t *err)
{
    char url[URL_MAX + 128];
    snprintf(url, sizeof(url), "%s%s", c->base, path);
    memset(b, 0, sizeof(*b));
    b->max = max;
    CURL *h = c->curl;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->timeout_ms < 5000 ? c->timeout_ms : 5000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, b);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "sdc-loadgen");
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (json) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(json));
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->post_headers);
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, c->headers);
    }
    CURLcode rc = curl_easy_perform(h);
    if (rc != CURLE_OK) {
        f->kind = b->too_big ? SDC_LG_ERR_PROTOCOL : curl_kind(rc);
        sdc_status_t st = sdc_error_set(err, SDC_ERR_IO, "%s %s: %s", method, url,
                                        b->too_big ? "answer too large" : curl_easy_strerror(rc));
        free(b->data);
        b->data = NULL;
        return st;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    return SDC_OK;
}

/* A non-success status as a fault and an error naming the request. */
static sdc_status_t http_fail(const char *what, long status, const body_t *b, int on_job,
                              sdc_lg_fault_t *f, sdc_error_t *err)
{
    char msg[SDC_LG_MSG_MAX];
    sdc_lg_http_error_message(b->data ? b->data : "", b->len, msg, sizeof(msg));
    f->http_status = (int)status;
    if (status == 429) {
        f->kind = SDC_LG_ERR_RATE_LIMITED;
        f->retry_after_s = b->retry_after_s;
    } else if (status == 401 || status == 403) {
        f->kind = SDC_LG_ERR_AUTH;
    } else if (status == 404 && on_job) {
        f->kind = SDC_LG_ERR_JOB_LOST;
    } else if (status >= 400 && status < 500) {
        f->kind = SDC_LG_ERR_REJECTED;
    } else if (status >= 500 && status < 600) {
        f->kind = SDC_LG_ERR_SERVER;
    } else {
        f->kind = SDC_LG_ERR_PROTOCOL;
    }
    return sdc_error_set(err, f->kind == SDC_LG_ERR_PROTOCOL ? SDC_ERR_FORMAT : SDC_ERR_IO,
                         "%s: HTTP %ld%s%s", what, status, msg[0] ? ": " : "", msg);
}

static char *request_json(const sdc_lg_request_t *rq)
{
    cJSON *o = cJSON_CreateObject();
    char size[48];
    int ok = o && cJSON_AddStringToObject(o, "prompt", rq->prompt);
    if (ok && rq->negative_prompt)
        ok = cJSON_AddStringToObject(o, "negative_prompt", rq->negative_prompt) != NULL;
    if (ok && rq->width && rq->height) {
        snprintf(size, sizeof(size), "%dx%d", rq->width, rq->height);
        ok = cJSON_AddStringToObject(o, "size", size) != NULL;
    }
    /* sdc-loadgen keeps HTTP seeds below 2^53, exact in a JSON number. */
    if (ok) ok = cJSON_AddNumberToObject(o, "seed", (double)rq->seed) != NULL;
    if (ok) ok = cJSON_AddNumberToObject(o, "steps", rq->steps) != NULL;
    if (ok && rq->has_guidance)
        ok = cJSON_AddNumberToObject(o, "guidance_scale", rq->guidance) != NULL;
    char *s = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
}

static sdc_status_t http_submit(sdc_lg_target_t *t, const sdc_lg_request_t *rq,
                                char id[SDC_JOB_ID_MAX + 1], sdc_lg_fault_t *f, sdc_error_t *err)
{
    http_ctx_t *c = t->ctx;
    char *json = request_json(rq);
    if (!json) {
        f->kind = SDC_LG_ERR_REJECTED;
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory for a request");
    }
    body_t b;
    long status = 0;
    sdc_status_t st = request(c, "POST", "/v1/jobs", json, JSON_MAX, &b, &status, f, err);
    free(json);
    if (st != SDC_OK)
        return st;
    if (status == 200 || status == 201 || status == 202) {
        st = sdc_lg_http_parse_created(b.data ? b.data : "", b.len, id, err);
        if (st != SDC_OK)
            f->kind = SDC_LG_ERR_PROTOCOL;
    } else {
        st = http_fail("POST /v1/jobs", status, &b, 0, f, err);
    }
    free(b.data);
    return st;
}

static sdc_status_t http_poll(sdc_lg_target_t *t, const char *id, sdc_lg_status_t *s,
                              sdc_lg_fault_t *f, sdc_error_t *err)
{
    http_ctx_t *c = t->ctx;
    char path[SDC_JOB_ID_MAX + 16], what[SDC_JOB_ID_MAX + 24];
    snprintf(path, sizeof(path), "/v1/jobs/%s", id);
    snprintf(what, sizeof(what), "GET %s", path);
    body_t b;
    long status = 0;
    sdc_status_t st = request(c, "GET", path, NULL, JSON_MAX, &b, &status, f, err);
    if (st != SDC_OK)
        return st;
    if (status == 200) {
        st = sdc_lg_http_parse_job(b.data ? b.data : "", b.len, id, s, err);
        if (st != SDC_OK)
            f->kind = SDC_LG_ERR_PROTOCOL;
    } else {
        st = http_fail(what, status, &b, 1, f, err);
    }
    free(b.data);
    return st;
}

static sdc_status_t http_result(sdc_lg_target_t *t, const char *id, size_t *bytes,
                                sdc_lg_fault_t *f, sdc_error_t *err)
{
    http_ctx_t *c = t->ctx;
    char path[SDC_JOB_ID_MAX + 24], what[SDC_JOB_ID_MAX + 32];
    snprintf(path, sizeof(path), "/v1/jobs/%s/result", id);
    snprintf(what, sizeof(what), "GET %s", path);
    body_t b;
    long status = 0;
    sdc_status_t st = request(c, "GET", path, NULL, RESULT_MAX, &b, &status, f, err);
    if (st != SDC_OK)
        return st;
    if (status != 200) {
        st = http_fail(what, status, &b, 1, f, err);
        if (status == 409 || status == 404)
            f->kind = SDC_LG_ERR_RESULT;
    } else if (b.len < 8 || memcmp(b.data, PNG_SIGNATURE, 8) != 0) {
        f->kind = SDC_LG_ERR_RESULT;
        st = sdc_error_set(err, SDC_ERR_FORMAT, "%s: %zu bytes of %s, not a PNG", what, b.len,
                           b.content_type[0] ? b.content_type : "unknown type");
    } else {
        *bytes = b.len;
    }
    free(b.data);
    return st;
}

static void http_close(sdc_lg_target_t *t)
{
    http_ctx_t *c = t->ctx;
    if (c) {
        curl_slist_free_all(c->headers);
        curl_slist_free_all(c->post_headers);
        curl_easy_cleanup(c->curl);
        free(c);
        curl_global_cleanup();
    }
    t->ctx = NULL;
}

static sdc_status_t add_header(struct curl_slist **l, const char *h, sdc_error_t *err)
{
    struct curl_slist *n = curl_slist_append(*l, h);
    if (!n)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    *l = n;
    return SDC_OK;
}

/* base: http:// or https://, a host, no query or fragment; stored without
 * trailing slashes. */
static sdc_status_t check_base(const char *base, char *out, size_t cap, sdc_error_t *err)
{
    const char *rest = strncmp(base, "http://", 7) == 0    ? base + 7
                       : strncmp(base, "https://", 8) == 0 ? base + 8
                                                           : NULL;
    if (!rest)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "gateway URL '%.80s' must start with http:// or https://", base);
    if (!*rest || *rest == '/')
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "gateway URL '%.80s' has no host", base);
    for (const char *p = base; *p; p++)
        if (*p == '?' || *p == '#' || *p <= ' ' || *p == 0x7f)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "gateway URL '%.80s': no query, fragment, spaces or control "
                                 "characters", base);
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    if (n >= cap)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "gateway URL longer than %zu bytes", cap - 1);
    memcpy(out, base, n);
    out[n] = '\0';
    return SDC_OK;
}

sdc_status_t sdc_lg_http_open(sdc_lg_target_t *t, const char *base_url, const char *token,
                              double timeout_s, sdc_error_t *err)
{
    memset(t, 0, sizeof(*t));
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return sdc_error_set(err, SDC_ERR_IO, "libcurl failed to initialize");
    http_ctx_t *c = calloc(1, sizeof(*c));
    sdc_status_t st;
    if (!c) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        goto err_global;
    }
    if ((st = check_base(base_url, c->base, sizeof(c->base), err)) != SDC_OK)
        goto err_free;
    /* A token with a line break would inject headers. */
    for (const char *p = token; p && *p; p++)
        if (*p < 0x21 || *p > 0x7e || p - token > 4096) {
            st = sdc_error_set(err, SDC_ERR_INVALID_ARG, "the bearer token has a character "
                               "outside visible ASCII at byte %zu, or is over 4096 bytes",
                               (size_t)(p - token));
            goto err_free;
        }
    c->timeout_ms = (long)(timeout_s * 1000);
    if (!(c->curl = curl_easy_init())) {
        st = sdc_error_set(err, SDC_ERR_IO, "libcurl: no easy handle");
        goto err_free;
    }
    char auth[4200];
    if (token)
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
    if ((st = add_header(&c->headers, "Accept: application/json", err)) != SDC_OK ||
        (token && (st = add_header(&c->headers, auth, err)) != SDC_OK) ||
        (st = add_header(&c->post_headers, "Accept: application/json", err)) != SDC_OK ||
        (token && (st = add_header(&c->post_headers, auth, err)) != SDC_OK) ||
        (st = add_header(&c->post_headers, "Content-Type: application/json", err)) != SDC_OK)
        goto err_lists;
    snprintf(t->name, sizeof(t->name), "%.*s", (int)sizeof(t->name) - 1, c->base);
    t->ctx = c;
    t->submit = http_submit;
    t->poll = http_poll;
    t->result = http_result;
    t->close = http_close;
    return SDC_OK;

err_lists:
    curl_slist_free_all(c->headers);
    curl_slist_free_all(c->post_headers);
    curl_easy_cleanup(c->curl);
err_free:
    free(c);
err_global:
    curl_global_cleanup();
    return st;
}
