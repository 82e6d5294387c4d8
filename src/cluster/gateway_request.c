/*
 * gateway_request.c: request bodies of sdc-gateway -> job parameters (see
 * gateway_request.h). One table of fields; each field's parser checks type
 * and range and says what was wrong. The job parameters are validated again
 * by sdc_job_params_validate before submission, so the gateway can never
 * write a job the cluster would refuse to read.
 */
#include "gateway_request.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "common/config.h"
#include "common/utf8.h"

#define SEED_MAX 9007199254740992.0 /* 2^53: larger JSON numbers lose digits */
#define SIDE_STEP 16                /* VAE factor x patch size of the model family */

void sdc_gw_limits_default(sdc_gw_limits_t *l)
{
    memset(l, 0, sizeof(*l));
    l->max_prompt_bytes = 4096;
    l->max_n = 4;
    l->max_steps = 200;
    l->max_guidance = SDC_JOB_GUIDANCE_MAX;
    l->default_steps = SDC_JOB_STEPS_DEFAULT;
    l->max_side = 2048;
    l->max_image_bytes = 8u << 20;
}

/* "WxH" with decimal sides; 0 when s is not exactly that. */
static int size_parse(const char *s, size_t n, int *w, int *h)
{
    long v[2] = {0, 0};
    size_t i = 0;
    for (int k = 0; k < 2; k++) {
        size_t start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9' && i - start < 6)
            v[k] = v[k] * 10 + (s[i++] - '0');
        if (i == start || (i < n && s[i] >= '0' && s[i] <= '9'))
            return 0;
        if (k == 0 && (i == n || s[i++] != 'x'))
            return 0;
    }
    if (i != n || v[0] < 1 || v[1] < 1)
        return 0;
    *w = (int)v[0];
    *h = (int)v[1];
    return 1;
}

sdc_status_t sdc_gw_sizes_parse(sdc_gw_limits_t *l, const char *list, sdc_error_t *err)
{
    int n = 0;
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        int w, h;
        if (!size_parse(p, len, &w, &h) || w > SDC_JOB_SIDE_MAX || h > SDC_JOB_SIDE_MAX)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "size '%.*s' is not WIDTHxHEIGHT with sides 1..%d", (int)len, p,
                                 SDC_JOB_SIDE_MAX);
        if (n == SDC_GW_MAX_SIZES)
            return sdc_error_set(err, SDC_ERR_RANGE, "more than %d sizes", SDC_GW_MAX_SIZES);
        l->sizes[n][0] = w;
        l->sizes[n][1] = h;
        n++;
        p += len;
        if (*p == ',' && *++p == '\0')
            return sdc_error_set(err, SDC_ERR_INVALID_ARG, "size list ends with ','");
    }
    if (n == 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "empty size list");
    l->n_sizes = n;
    return SDC_OK;
}

void sdc_gw_request_free(sdc_gw_request_t *r)
{
    if (!r)
        return;
    sdc_job_params_free(&r->params);
    free(r->image);
    memset(r, 0, sizeof(*r));
}

/* ---- fields ----------------------------------------------------------------- */

typedef struct {
    const sdc_gw_limits_t *lim;
    sdc_gw_request_t *r;
    const char **code;
    sdc_error_t *err;
} parse_ctx_t;

static sdc_status_t bad(parse_ctx_t *c, sdc_status_t st, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static sdc_status_t bad(parse_ctx_t *c, sdc_status_t st, const char *code, const char *fmt, ...)
{
    va_list ap;
    char msg[SDC_ERROR_MSG_MAX];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    *c->code = code;
    return sdc_error_set(c->err, st, "%s", msg);
}

static const char *json_type(const cJSON *v)
{
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    if (cJSON_IsNull(v)) return "null";
    return "an invalid value";
}

static sdc_status_t wrong_type(parse_ctx_t *c, const char *field, const char *want,
                               const cJSON *v)
{
    return bad(c, SDC_ERR_FORMAT, "invalid_type", "'%s' must be %s, got %s", field, want,
               json_type(v));
}

/* An integer in lo..hi (a JSON number with no fraction). */
static sdc_status_t get_int(parse_ctx_t *c, const char *field, const cJSON *v, double lo,
                            double hi, double *out)
{
    if (!cJSON_IsNumber(v))
        return wrong_type(c, field, "an integer", v);
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < lo || d > hi)
        return bad(c, SDC_ERR_RANGE, "invalid_value", "'%s' must be an integer in %.0f..%.0f",
                   field, lo, hi);
    *out = d;
    return SDC_OK;
}

static sdc_status_t get_text(parse_ctx_t *c, const char *field, const cJSON *v, int required,
                             char **out)
{
    if (!cJSON_IsString(v))
        return wrong_type(c, field, "a string", v);
    size_t n = strlen(v->valuestring);
    if (required && n == 0)
        return bad(c, SDC_ERR_INVALID_ARG, "invalid_value", "'%s' is empty", field);
    if (n > c->lim->max_prompt_bytes)
        return bad(c, SDC_ERR_RANGE, "prompt_too_long", "'%s' is %zu bytes, at most %zu allowed",
                   field, n, c->lim->max_prompt_bytes);
    size_t ok = sdc_utf8_valid_len(v->valuestring, n);
    if (ok != n)
        return bad(c, SDC_ERR_FORMAT, "invalid_utf8",
                   "'%s' is not valid UTF-8 (bad byte 0x%02x at offset %zu)", field,
                   (unsigned char)v->valuestring[ok], ok);
    if (!(*out = strdup(v->valuestring)))
        return bad(c, SDC_ERR_NOMEM, "server_error", "out of memory");
    return SDC_OK;
}

static int size_allowed(const sdc_gw_limits_t *l, int w, int h)
{
    if (l->n_sizes == 0)
        return w % SIDE_STEP == 0 && h % SIDE_STEP == 0 && w <= l->max_side && h <= l->max_side;
    for (int i = 0; i < l->n_sizes; i++)
        if (l->sizes[i][0] == w && l->sizes[i][1] == h)
            return 1;
    return 0;
}

static sdc_status_t f_prompt(parse_ctx_t *c, const cJSON *v)
{
    return get_text(c, "prompt", v, 1, &c->r->params.prompt);
}

static sdc_status_t f_negative(parse_ctx_t *c, const cJSON *v)
{
    return get_text(c, "negative_prompt", v, 0, &c->r->params.negative_prompt);
}

static sdc_status_t f_size(parse_ctx_t *c, const cJSON *v)
{
    int w, h;
    if (!cJSON_IsString(v))
        return wrong_type(c, "size", "a string \"WIDTHxHEIGHT\"", v);
    const char *s = v->valuestring;
    if (!size_parse(s, strlen(s), &w, &h))
        return bad(c, SDC_ERR_FORMAT, "invalid_size", "'size' \"%.32s\" is not WIDTHxHEIGHT", s);
    if (!size_allowed(c->lim, w, h)) {
        if (c->lim->n_sizes) {
            char list[256];
            size_t o = 0;
            for (int i = 0; i < c->lim->n_sizes && o + 24 < sizeof(list); i++)
                o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%dx%d", i ? ", " : "",
                                      c->lim->sizes[i][0], c->lim->sizes[i][1]);
            return bad(c, SDC_ERR_RANGE, "invalid_size",
                       "'size' %dx%d is not served here (allowed: %s)", w, h, list);
        }
        return bad(c, SDC_ERR_RANGE, "invalid_size",
                   "'size' %dx%d: sides must be multiples of %d in %d..%d", w, h, SIDE_STEP,
                   SIDE_STEP, c->lim->max_side);
    }
    c->r->params.width = w;
    c->r->params.height = h;
    return SDC_OK;
}

static sdc_status_t f_seed(parse_ctx_t *c, const cJSON *v)
{
    double d;
    sdc_status_t st = get_int(c, "seed", v, 0, SEED_MAX, &d);
    if (st == SDC_OK) {
        c->r->params.seed = (uint64_t)d;
        c->r->has_seed = 1;
    }
    return st;
}

static sdc_status_t f_steps(parse_ctx_t *c, const cJSON *v)
{
    double d;
    sdc_status_t st = get_int(c, "steps", v, 1, c->lim->max_steps, &d);
    if (st == SDC_OK)
        c->r->params.steps = (int)d;
    return st;
}

static sdc_status_t f_guidance(parse_ctx_t *c, const cJSON *v)
{
    if (!cJSON_IsNumber(v))
        return wrong_type(c, "guidance_scale", "a number", v);
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d > c->lim->max_guidance)
        return bad(c, SDC_ERR_RANGE, "invalid_value", "'guidance_scale' must be in 0..%g",
                   c->lim->max_guidance);
    c->r->params.has_guidance = 1;
    c->r->params.guidance = d;
    return SDC_OK;
}

static sdc_status_t f_n(parse_ctx_t *c, const cJSON *v)
{
    double d;
    sdc_status_t st = get_int(c, "n", v, 1, c->lim->max_n, &d);
    if (st == SDC_OK)
        c->r->n = (int)d;
    return st;
}

static sdc_status_t f_format(parse_ctx_t *c, const cJSON *v)
{
    if (!cJSON_IsString(v))
        return wrong_type(c, "response_format", "a string", v);
    if (strcmp(v->valuestring, "b64_json") == 0)
        return SDC_OK;
    if (strcmp(v->valuestring, "url") == 0)
        return bad(c, SDC_ERR_UNSUPPORTED, "unsupported_response_format",
                   "'response_format' \"url\" is not supported: use \"b64_json\" (or the "
                   "asynchronous /v1/jobs API and /v1/jobs/{id}/result)");
    return bad(c, SDC_ERR_INVALID_ARG, "invalid_value",
               "'response_format' must be \"b64_json\"");
}

static sdc_status_t f_init_image(parse_ctx_t *c, const cJSON *v)
{
    static const char data_url[] = "data:image/";
    if (!cJSON_IsString(v))
        return wrong_type(c, "init_image", "a base64 string", v);
    const char *s = v->valuestring;
    if (strncmp(s, data_url, sizeof(data_url) - 1) == 0) {
        const char *comma = strstr(s, ";base64,");
        if (!comma)
            return bad(c, SDC_ERR_FORMAT, "invalid_image",
                       "'init_image' is a data URL without \";base64,\"");
        s = comma + 8;
    }
    sdc_status_t st = sdc_base64_decode(s, strlen(s), c->lim->max_image_bytes, &c->r->image,
                                        &c->r->image_len, c->err);
    if (st != SDC_OK)
        *c->code = st == SDC_ERR_NOMEM ? "server_error" : "invalid_image";
    return st;
}

static sdc_status_t f_strength(parse_ctx_t *c, const cJSON *v)
{
    if (!cJSON_IsNumber(v))
        return wrong_type(c, "strength", "a number", v);
    double d = v->valuedouble;
    if (!isfinite(d) || d <= 0 || d > 1)
        return bad(c, SDC_ERR_RANGE, "invalid_value", "'strength' must be in (0, 1]");
    c->r->params.has_strength = 1;
    c->r->params.strength = d;
    return SDC_OK;
}

/* The image decodes, fits the job's size (or gives it) and that size is
 * served here: the checks sdc-submit makes, answered as 400s. */
static sdc_status_t check_image(parse_ctx_t *c)
{
    sdc_status_t st = sdc_job_image_check(c->r->image, c->r->image_len, c->lim->max_image_bytes,
                                          &c->r->img, c->err);
    if (st == SDC_OK)
        st = sdc_job_params_set_image(&c->r->params, &c->r->img, c->err);
    if (st != SDC_OK) {
        *c->code = st == SDC_ERR_NOMEM ? "server_error" : "invalid_image";
        return st;
    }
    if (!size_allowed(c->lim, c->r->params.width, c->r->params.height))
        return bad(c, SDC_ERR_RANGE, "invalid_size", "'init_image' is %dx%d, a size not served here",
                   c->r->params.width, c->r->params.height);
    return SDC_OK;
}

/* OpenAI clients send these; the gateway serves one model for one user. */
static sdc_status_t f_ignored(parse_ctx_t *c, const cJSON *v)
{
    char *s = NULL;
    sdc_status_t st = get_text(c, v->string, v, 0, &s);
    free(s);
    return st;
}

typedef struct {
    const char *name;
    sdc_status_t (*parse)(parse_ctx_t *c, const cJSON *v);
    unsigned kinds; /* bit per sdc_gw_req_kind_t */
} field_t;

#define BOTH ((1u << SDC_GW_REQ_JOB) | (1u << SDC_GW_REQ_IMAGES))
#define IMAGES (1u << SDC_GW_REQ_IMAGES)
#define JOB (1u << SDC_GW_REQ_JOB)
static const field_t fields[] = {
    {"prompt", f_prompt, BOTH},         {"negative_prompt", f_negative, BOTH},
    {"size", f_size, BOTH},             {"seed", f_seed, BOTH},
    {"steps", f_steps, BOTH},           {"guidance_scale", f_guidance, BOTH},
    {"init_image", f_init_image, JOB},  {"strength", f_strength, JOB},
    {"n", f_n, IMAGES},                 {"response_format", f_format, IMAGES},
    {"model", f_ignored, IMAGES},       {"user", f_ignored, IMAGES},
};
#define N_FIELDS (sizeof(fields) / sizeof(fields[0]))

/* What cJSON lets through and JSON (RFC 8259) does not: raw control
 * characters inside strings, a byte order mark; and NUL, which cJSON would
 * take as the end of a string and so silently cut a prompt short ("\u0000"
 * or a raw byte). Refused before parsing. */
static sdc_status_t scan_text(parse_ctx_t *c, const char *s, size_t n)
{
    int in_str = 0;
    if (n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
        return bad(c, SDC_ERR_FORMAT, "invalid_json", "the body starts with a byte order mark");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\0')
            return bad(c, SDC_ERR_FORMAT, "invalid_json", "NUL byte at offset %zu", i);
        if (!in_str) {
            in_str = ch == '"';
        } else if (ch < 0x20) {
            return bad(c, SDC_ERR_FORMAT, "invalid_json",
                       "control character 0x%02x in a string at offset %zu (escape it)", ch, i);
        } else if (ch == '"') {
            in_str = 0;
        } else if (ch == '\\' && i + 1 < n) {
            if (s[i + 1] == 'u' && i + 6 <= n && memcmp(s + i + 2, "0000", 4) == 0)
                return bad(c, SDC_ERR_FORMAT, "invalid_json",
                           "\\u0000 (NUL) in a string at offset %zu", i);
            i++;
        }
    }
    return SDC_OK;
}

/* A field name for a message: printable ASCII only, truncated. */
static const char *printable(const char *s, char *buf, size_t cap)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        buf[i] = s[i] >= ' ' && s[i] <= '~' ? s[i] : '?';
    buf[i] = '\0';
    return buf;
}

static sdc_status_t parse_fields(parse_ctx_t *c, sdc_gw_req_kind_t kind, const cJSON *root)
{
    unsigned seen = 0;
    char nb[48];
    for (const cJSON *v = root->child; v; v = v->next) {
        size_t i = 0;
        while (i < N_FIELDS &&
               (strcmp(fields[i].name, v->string) != 0 || !(fields[i].kinds & (1u << kind))))
            i++;
        if (i == N_FIELDS)
            return bad(c, SDC_ERR_FORMAT, "unknown_parameter", "unknown parameter '%s'",
                       printable(v->string, nb, sizeof(nb)));
        if (seen & (1u << i))
            return bad(c, SDC_ERR_FORMAT, "duplicate_parameter", "'%s' appears twice",
                       fields[i].name);
        seen |= 1u << i;
        if (cJSON_IsNull(v) && strcmp(fields[i].name, "prompt") != 0)
            continue; /* null: the default */
        sdc_status_t st = fields[i].parse(c, v);
        if (st != SDC_OK)
            return st;
    }
    if (!c->r->params.prompt)
        return bad(c, SDC_ERR_INVALID_ARG, "missing_prompt", "'prompt' is required");
    if (c->r->params.has_strength && !c->r->image)
        return bad(c, SDC_ERR_INVALID_ARG, "invalid_value", "'strength' needs 'init_image'");
    return c->r->image ? check_image(c) : SDC_OK;
}

sdc_status_t sdc_gateway_request_parse(sdc_gw_req_kind_t kind, const char *body, size_t len,
                                       const sdc_gw_limits_t *lim, sdc_gw_request_t *r,
                                       const char **code, sdc_error_t *err)
{
    parse_ctx_t c = {lim, r, code, err};
    sdc_json_t doc;
    memset(r, 0, sizeof(*r));
    sdc_job_params_init(&r->params);
    r->params.steps = lim->default_steps;
    r->n = 1;
    *code = "";
    if (len == 0)
        return bad(&c, SDC_ERR_FORMAT, "invalid_json", "the request body is empty");
    size_t ok = sdc_utf8_valid_len(body, len);
    if (ok != len)
        return bad(&c, SDC_ERR_FORMAT, "invalid_utf8",
                   "the body is not valid UTF-8 (bad byte 0x%02x at offset %zu)",
                   (unsigned char)body[ok], ok);
    sdc_status_t st = scan_text(&c, body, len);
    if (st != SDC_OK)
        return st;
    if ((st = sdc_json_parse(&doc, body, len, "request body", err)) != SDC_OK) {
        *code = "invalid_json";
        return st;
    }
    st = parse_fields(&c, kind, doc.root);
    sdc_json_free(&doc);
    if (st == SDC_OK) {
        /* The same checks the cluster applies when it reads the job. */
        snprintf(r->params.id, sizeof(r->params.id), "request");
        st = sdc_job_params_validate(&r->params, err);
        r->params.id[0] = '\0';
        if (st != SDC_OK)
            *code = "invalid_value";
    }
    if (st != SDC_OK)
        sdc_gw_request_free(r);
    return st;
}
