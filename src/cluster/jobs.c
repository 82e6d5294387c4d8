/*
 * jobs.c: the Redis schema of jobs, nodes and the leader lease (see jobs.h).
 *
 * Each state change is one Lua script that reads the job's state and attempt
 * and writes only when the state machine (the table `edges` below, passed to
 * the scripts as the list of states a target may be reached from) allows it.
 * Scripts run atomically, so the check and the writes (hash, event, result,
 * ack, dead letter) cannot interleave with another client's, and a script
 * repeated after a reconnect meets the state its first run left. Submit is
 * one script too: it creates the hash, the stream entry and the first event
 * together only when the id is new, in a single round trip.
 *
 * Not the coordinator: this file never decides to retry or place a job.
 */
#include "jobs.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "cluster/wire.h"
#include "common/config.h"
#include "common/image.h"
#include "common/log.h"
#include "common/utf8.h"
#include "model/img2img.h"

#define KEY_MAX SDC_REDIS_KEY_MAX
#define SEED_EXACT_MAX 9007199254740992.0 /* 2^53: larger JSON numbers lose digits */
#define SEED_AS_NUMBER_MAX 2147483647u    /* larger seeds are written as strings */

/* ---- ids ----------------------------------------------------------------- */

static int id_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

sdc_status_t sdc_job_id_check(const char *id, const char *what, sdc_error_t *err)
{
    if (!id || !*id)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s is empty", what);
    size_t n = strnlen(id, SDC_JOB_ID_MAX + 1);
    if (n > SDC_JOB_ID_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s is longer than %d characters", what,
                             SDC_JOB_ID_MAX);
    for (size_t i = 0; i < n; i++)
        if (!id_char_ok(id[i]))
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "%s: byte 0x%02x at offset %zu is not one of [A-Za-z0-9._-]",
                                 what, (unsigned char)id[i], i);
    return SDC_OK;
}

sdc_status_t sdc_job_id_new(char out[SDC_JOB_ID_MAX + 1], sdc_error_t *err)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        return sdc_error_set(err, SDC_ERR_IO, "getrandom: %s", strerror(errno));
    for (size_t i = 0; i < sizeof(b); i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * sizeof(b)] = '\0';
    return SDC_OK;
}

/* Stream entry ids are "<ms>-<seq>". */
static int entry_id_ok(const char *s, size_t n)
{
    size_t i = 0, a = 0, b = 0;
    if (n == 0 || n > SDC_STREAM_ID_MAX)
        return 0;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++, a++;
    if (i == n || s[i] != '-')
        return 0;
    for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
        b++;
    return i == n && a > 0 && b > 0;
}

/* ---- states -------------------------------------------------------------- */

static const char *const state_names[SDC_JOB_STATE_COUNT] = {
    [SDC_JOB_QUEUED] = "queued",       [SDC_JOB_ENCODING] = "encoding",
    [SDC_JOB_DENOISING] = "denoising", [SDC_JOB_DECODING] = "decoding",
    [SDC_JOB_REFINING] = "refining",   [SDC_JOB_DONE] = "done",
    [SDC_JOB_FAILED] = "failed",       [SDC_JOB_CANCELLED] = "cancelled",
};

#define TO(s) (1u << (s))
/* edges[from]: the states a job may move to from `from`. A client may
 * cancel any job that has not ended; done, failed and cancelled are final. */
static const unsigned edges[SDC_JOB_STATE_COUNT] = {
    [SDC_JOB_QUEUED] = TO(SDC_JOB_ENCODING) | TO(SDC_JOB_FAILED) | TO(SDC_JOB_CANCELLED),
    [SDC_JOB_ENCODING] = TO(SDC_JOB_DENOISING) | TO(SDC_JOB_FAILED) | TO(SDC_JOB_QUEUED) |
                         TO(SDC_JOB_CANCELLED),
    [SDC_JOB_DENOISING] = TO(SDC_JOB_DENOISING) | TO(SDC_JOB_DECODING) | TO(SDC_JOB_FAILED) |
                          TO(SDC_JOB_QUEUED) | TO(SDC_JOB_CANCELLED),
    [SDC_JOB_DECODING] = TO(SDC_JOB_REFINING) | TO(SDC_JOB_DONE) | TO(SDC_JOB_FAILED) |
                         TO(SDC_JOB_QUEUED) | TO(SDC_JOB_CANCELLED),
    [SDC_JOB_REFINING] = TO(SDC_JOB_DONE) | TO(SDC_JOB_FAILED) | TO(SDC_JOB_QUEUED) |
                         TO(SDC_JOB_CANCELLED),
    [SDC_JOB_DONE] = 0,
    [SDC_JOB_FAILED] = 0,
    [SDC_JOB_CANCELLED] = 0,
};

const char *sdc_job_state_name(sdc_job_state_t s)
{
    return (unsigned)s < SDC_JOB_STATE_COUNT ? state_names[s] : "unknown";
}

int sdc_job_state_parse(const char *name, size_t len)
{
    for (int s = 0; s < SDC_JOB_STATE_COUNT; s++)
        if (strlen(state_names[s]) == len && memcmp(state_names[s], name, len) == 0)
            return s;
    return -1;
}

int sdc_job_state_final(sdc_job_state_t s)
{
    return (unsigned)s < SDC_JOB_STATE_COUNT && edges[s] == 0;
}

int sdc_job_transition_allowed(sdc_job_state_t from, sdc_job_state_t to)
{
    if ((unsigned)from >= SDC_JOB_STATE_COUNT || (unsigned)to >= SDC_JOB_STATE_COUNT)
        return 0;
    return (edges[from] & TO(to)) != 0;
}

/* The states `to` may be reached from, space-separated, for the scripts. */
static void sources_of(sdc_job_state_t to, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int s = 0; s < SDC_JOB_STATE_COUNT; s++) {
        if (!(edges[s] & TO(to)))
            continue;
        int n = snprintf(buf + o, cap - o, "%s%s", o ? " " : "", state_names[s]);
        if (n < 0 || (size_t)n >= cap - o)
            break;
        o += (size_t)n;
    }
}

/* ---- parameters ---------------------------------------------------------- */

void sdc_job_params_init(sdc_job_params_t *p)
{
    memset(p, 0, sizeof(*p));
    p->steps = SDC_JOB_STEPS_DEFAULT;
    p->trim_text = 1;
    p->strength = SDC_JOB_STRENGTH_DEFAULT;
    p->refine_steps = SDC_JOB_REFINE_STEPS_DEFAULT;
    p->refine_guidance = SDC_JOB_REFINE_GUIDANCE_DEFAULT;
    p->refine_strength = SDC_JOB_REFINE_STRENGTH_DEFAULT;
}

void sdc_job_params_free(sdc_job_params_t *p)
{
    if (!p)
        return;
    free(p->prompt);
    free(p->embeds);
    free(p->negative_prompt);
    free(p->refiner_embeds);
    sdc_job_params_init(p);
}

/* Text fields: bounded, valid UTF-8; a reference also has no control bytes. */
static sdc_status_t check_text(const char *field, const char *s, size_t min, size_t max,
                               int is_ref, sdc_error_t *err)
{
    size_t n = strlen(s);
    if (n < min || n > max)
        return sdc_error_set(err, SDC_ERR_RANGE, "job params: '%s' is %zu bytes, allowed %zu..%zu",
                             field, n, min, max);
    size_t ok = sdc_utf8_valid_len(s, n);
    if (ok != n)
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "job params: '%s' is not valid UTF-8 (bad byte 0x%02x at offset %zu)",
                             field, (unsigned char)s[ok], ok);
    for (size_t i = 0; is_ref && i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return sdc_error_set(err, SDC_ERR_FORMAT,
                                 "job params: '%s' has control byte 0x%02x at offset %zu", field,
                                 (unsigned char)s[i], i);
    return SDC_OK;
}

/* Image-to-image: strength only with an image; a strength that runs no
 * denoising step (0) has nothing for a pipeline to do, and the wire has
 * no zero-step jobs; the size is the image's, stated. */
static sdc_status_t validate_image(const sdc_job_params_t *p, sdc_error_t *err)
{
    if (!p->image_bytes) {
        if (p->has_strength)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG, "job params: 'strength' goes with "
                                 "'init_image' (image-to-image); this job has no image");
        return SDC_OK;
    }
    if (p->image_bytes > SDC_JOB_IMAGE_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE, "job params: 'init_image' of %zu bytes, over "
                             "%u", p->image_bytes, SDC_JOB_IMAGE_MAX);
    if (!(p->strength >= 0 && p->strength <= 1))
        return sdc_error_set(err, SDC_ERR_RANGE, "job params: 'strength' %g outside 0..1",
                             p->strength);
    if (sdc_job_params_run_steps(p) < 1)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "job params: 'strength' %g runs none of the %d steps: a cluster job "
                             "needs a strength above 0 (sdc-generate --strength 0 only encodes "
                             "and decodes the image)", p->strength, p->steps);
    if (!p->width || !p->height)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "job params: an image-to-image job states "
                             "its 'width' and 'height' (those of its image)");
    return SDC_OK;
}

uint64_t sdc_job_params_refine_seed(const sdc_job_params_t *p)
{
    return p->has_refine_seed ? p->refine_seed : p->seed;
}

/* The refiner's fields: a refine job names its conditioning; the ranges are
 * sdc_refiner_check's (guidance above 0: the refiner is guidance-distilled). */
static sdc_status_t validate_refine(const sdc_job_params_t *p, sdc_error_t *err)
{
    if (!p->refine) {
        if (p->refiner_embeds || p->has_refine_seed)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG, "job params: '%s' goes with "
                                 "'refine': true", p->refiner_embeds ? "refiner_embeds"
                                                                      : "refine_seed");
        return SDC_OK;
    }
    /* No refiner_embeds: the refiner node encodes the prompt itself. */
    if (!p->refiner_embeds && !p->prompt)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "job params: 'refine' needs "
                             "'refiner_embeds' or a 'prompt' (which the refiner node encodes)");
    sdc_status_t st = p->refiner_embeds ? check_text("refiner_embeds", p->refiner_embeds, 1,
                                                     SDC_JOB_EMBEDS_REF_MAX, 1, err)
                                        : SDC_OK;
    if (st != SDC_OK)
        return st;
    if (p->refine_steps < 1 || p->refine_steps > SDC_JOB_REFINE_STEPS_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE, "job params: 'refine_steps' %d outside 1..%d",
                             p->refine_steps, SDC_JOB_REFINE_STEPS_MAX);
    if (!(p->refine_guidance > 0 && p->refine_guidance <= SDC_JOB_GUIDANCE_MAX))
        return sdc_error_set(err, SDC_ERR_RANGE, "job params: 'refine_guidance' %g must be "
                             "above 0, at most %g", p->refine_guidance, SDC_JOB_GUIDANCE_MAX);
    if (!(p->refine_strength >= 0 && p->refine_strength <= 1))
        return sdc_error_set(err, SDC_ERR_RANGE, "job params: 'refine_strength' %g outside 0..1",
                             p->refine_strength);
    return SDC_OK;
}

int sdc_job_params_run_steps(const sdc_job_params_t *p)
{
    int t_start = 0;
    sdc_error_t ignored;
    if (p->image_bytes &&
        sdc_img2img_start_step(p->steps, p->strength, &t_start, &ignored) != SDC_OK)
        return 0;
    return p->steps - t_start;
}

sdc_status_t sdc_job_params_validate(const sdc_job_params_t *p, sdc_error_t *err)
{
    sdc_status_t st = sdc_job_id_check(p->id, "job params: 'id'", err);
    if (st != SDC_OK)
        return st;
    if (!p->prompt == !p->embeds)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "job params: give exactly one of 'prompt' and 'embeds'");
    if (p->prompt && (st = check_text("prompt", p->prompt, 0, SDC_JOB_PROMPT_MAX, 0, err)))
        return st;
    if (p->embeds && (st = check_text("embeds", p->embeds, 1, SDC_JOB_EMBEDS_REF_MAX, 1, err)))
        return st;
    if (p->negative_prompt) {
        if (!p->prompt)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "job params: 'negative_prompt' goes with 'prompt'; with "
                                 "'embeds' the negative embeddings are in the embeddings file");
        st = check_text("negative_prompt", p->negative_prompt, 0, SDC_JOB_PROMPT_MAX, 0, err);
        if (st != SDC_OK)
            return st;
    }
    if (p->width < 0 || p->width > SDC_JOB_SIDE_MAX || p->height < 0 ||
        p->height > SDC_JOB_SIDE_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "job params: size %dx%d outside 1..%d (0: the model's default)",
                             p->width, p->height, SDC_JOB_SIDE_MAX);
    if (p->steps < 1 || p->steps > SDC_JOB_STEPS_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE, "job params: 'steps' %d outside 1..%d",
                             p->steps, SDC_JOB_STEPS_MAX);
    if (p->has_guidance && !(p->guidance >= 0 && p->guidance <= SDC_JOB_GUIDANCE_MAX))
        return sdc_error_set(err, SDC_ERR_RANGE, "job params: 'guidance' %g outside 0..%g",
                             p->guidance, SDC_JOB_GUIDANCE_MAX);
    if (p->trim_text != 0 && p->trim_text != 1)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "job params: 'trim_text' must be 0 or 1");
    if (p->refine != 0 && p->refine != 1)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "job params: 'refine' must be 0 or 1");
    if ((st = validate_refine(p, err)) != SDC_OK)
        return st;
    return validate_image(p, err);
}

typedef enum {
    K_ID, K_TEXT, K_INT, K_SEED, K_GUIDANCE, K_BOOL, K_IMAGE, K_STRENGTH,
    K_REAL,   /* a double in lo..hi */
    K_RSEED,  /* refine_seed: as K_SEED */
} field_kind_t;

typedef struct {
    const char *name;
    field_kind_t kind;
    size_t offset;
    long lo, hi; /* K_INT: value range */
} field_t;

#define FIELD(name, kind, member, lo, hi) {name, kind, offsetof(sdc_job_params_t, member), lo, hi}
static const field_t fields[] = {
    FIELD("id", K_ID, id, 0, 0),
    FIELD("prompt", K_TEXT, prompt, 0, 0),
    FIELD("embeds", K_TEXT, embeds, 0, 0),
    FIELD("negative_prompt", K_TEXT, negative_prompt, 0, 0),
    FIELD("width", K_INT, width, 1, SDC_JOB_SIDE_MAX),
    FIELD("height", K_INT, height, 1, SDC_JOB_SIDE_MAX),
    FIELD("steps", K_INT, steps, 1, SDC_JOB_STEPS_MAX),
    FIELD("seed", K_SEED, seed, 0, 0),
    FIELD("guidance", K_GUIDANCE, guidance, 0, 0),
    FIELD("trim_text", K_BOOL, trim_text, 0, 0),
    FIELD("init_image", K_IMAGE, image_bytes, 0, 0),
    FIELD("strength", K_STRENGTH, strength, 0, 0),
    FIELD("refine", K_BOOL, refine, 0, 0),
    FIELD("refiner_embeds", K_TEXT, refiner_embeds, 0, 0),
    FIELD("refine_steps", K_INT, refine_steps, 1, SDC_JOB_REFINE_STEPS_MAX),
    FIELD("refine_guidance", K_REAL, refine_guidance, 0, (long)SDC_JOB_GUIDANCE_MAX),
    FIELD("refine_strength", K_REAL, refine_strength, 0, 1),
    FIELD("refine_seed", K_RSEED, refine_seed, 0, 0),
};
#define N_FIELDS (sizeof(fields) / sizeof(fields[0]))

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

static sdc_status_t wrong_type(const char *field, const char *want, const cJSON *v,
                               sdc_error_t *err)
{
    return sdc_error_set(err, SDC_ERR_FORMAT, "job params: '%s' must be %s, got %s", field, want,
                         json_type(v));
}

/* A decimal string 0..2^64-1 without sign or leading zeros. */
static sdc_status_t parse_seed_string(const char *field, const char *s, uint64_t *out,
                                       sdc_error_t *err)
{
    size_t n = strlen(s);
    uint64_t v = 0;
    if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
        goto bad;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            goto bad;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return sdc_error_set(err, SDC_ERR_RANGE,
                                 "job params: '%s' \"%s\" is larger than 2^64-1", field, s);
        v = v * 10 + d;
    }
    *out = v;
    return SDC_OK;
bad:
    return sdc_error_set(err, SDC_ERR_FORMAT,
                         "job params: '%s' string \"%.24s\" is not a decimal integer", field, s);
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

/* "init_image": {"bytes": N, "crc32c": "8 lowercase hex digits"}. */
static sdc_status_t parse_image(sdc_job_params_t *p, const cJSON *v, sdc_error_t *err)
{
    const cJSON *bytes = NULL, *crc = NULL;
    char nb[48];
    if (!cJSON_IsObject(v))
        return wrong_type("init_image", "an object {\"bytes\", \"crc32c\"} (the image itself "
                          "travels beside the job)", v, err);
    for (const cJSON *f = v->child; f; f = f->next) {
        const cJSON **slot = strcmp(f->string, "bytes") == 0    ? &bytes
                             : strcmp(f->string, "crc32c") == 0 ? &crc
                                                                : NULL;
        if (!slot)
            return sdc_error_set(err, SDC_ERR_FORMAT, "job params: unknown field "
                                 "'init_image.%s'", printable(f->string, nb, sizeof(nb)));
        if (*slot)
            return sdc_error_set(err, SDC_ERR_FORMAT, "job params: field 'init_image.%s' "
                                 "appears twice", f->string);
        *slot = f;
    }
    if (!bytes || !crc)
        return sdc_error_set(err, SDC_ERR_FORMAT, "job params: 'init_image' lacks '%s'",
                             bytes ? "crc32c" : "bytes");
    double d = bytes->valuedouble;
    if (!cJSON_IsNumber(bytes) || !isfinite(d) || d != floor(d) || d < 1 ||
        d > (double)SDC_JOB_IMAGE_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE, "job params: 'init_image.bytes' must be an "
                             "integer in 1..%u", SDC_JOB_IMAGE_MAX);
    const char *h = cJSON_IsString(crc) ? crc->valuestring : "";
    int hex_ok = strlen(h) == 8;
    for (size_t i = 0; hex_ok && i < 8; i++)
        hex_ok = (h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f');
    if (!hex_ok)
        return sdc_error_set(err, SDC_ERR_FORMAT, "job params: 'init_image.crc32c' must be 8 "
                             "lowercase hex digits");
    p->image_bytes = (size_t)d;
    p->image_crc32c = (uint32_t)strtoul(h, NULL, 16);
    return SDC_OK;
}

static sdc_status_t parse_field(sdc_job_params_t *p, const field_t *f, const cJSON *v,
                                sdc_error_t *err)
{
    void *dst = (char *)p + f->offset;
    double d = v->valuedouble;
    switch (f->kind) {
    case K_ID:
        if (!cJSON_IsString(v))
            return wrong_type(f->name, "a string", v, err);
        if (strlen(v->valuestring) > SDC_JOB_ID_MAX)
            return sdc_error_set(err, SDC_ERR_RANGE, "job params: 'id' is longer than %d "
                                 "characters", SDC_JOB_ID_MAX);
        strcpy(p->id, v->valuestring);
        return sdc_job_id_check(p->id, "job params: 'id'", err);
    case K_TEXT:
        if (!cJSON_IsString(v))
            return wrong_type(f->name, "a string", v, err);
        if (!(*(char **)dst = strdup(v->valuestring)))
            return sdc_error_set(err, SDC_ERR_NOMEM, "job params: out of memory");
        return SDC_OK;
    case K_INT:
        if (!cJSON_IsNumber(v))
            return wrong_type(f->name, "an integer", v, err);
        if (!isfinite(d) || d != floor(d) || d < (double)f->lo || d > (double)f->hi)
            return sdc_error_set(err, SDC_ERR_RANGE,
                                 "job params: '%s' must be an integer in %ld..%ld, got %.17g",
                                 f->name, f->lo, f->hi, d);
        *(int *)dst = (int)d;
        return SDC_OK;
    case K_SEED:
    case K_RSEED:
        if (f->kind == K_RSEED)
            p->has_refine_seed = 1;
        if (cJSON_IsString(v))
            return parse_seed_string(f->name, v->valuestring, (uint64_t *)dst, err);
        if (!cJSON_IsNumber(v))
            return wrong_type(f->name, "an integer or a decimal string", v, err);
        if (!isfinite(d) || d != floor(d) || d < 0 || d > SEED_EXACT_MAX)
            return sdc_error_set(err, SDC_ERR_RANGE,
                                 "job params: '%s' must be an integer in 0..2^53 (larger seeds "
                                 "as a decimal string), got %.17g", f->name, d);
        *(uint64_t *)dst = (uint64_t)d;
        return SDC_OK;
    case K_REAL:
        if (!cJSON_IsNumber(v))
            return wrong_type(f->name, "a number", v, err);
        if (!isfinite(d) || d < (double)f->lo || d > (double)f->hi)
            return sdc_error_set(err, SDC_ERR_RANGE, "job params: '%s' must be in %ld..%ld, "
                                 "got %.17g", f->name, f->lo, f->hi, d);
        *(double *)dst = d;
        return SDC_OK;
    case K_GUIDANCE:
        if (!cJSON_IsNumber(v))
            return wrong_type(f->name, "a number", v, err);
        if (!isfinite(d) || d < 0 || d > SDC_JOB_GUIDANCE_MAX)
            return sdc_error_set(err, SDC_ERR_RANGE, "job params: 'guidance' must be in 0..%g, "
                                 "got %.17g", SDC_JOB_GUIDANCE_MAX, d);
        p->has_guidance = 1;
        p->guidance = d;
        return SDC_OK;
    case K_BOOL:
        if (!cJSON_IsBool(v))
            return wrong_type(f->name, "a boolean", v, err);
        *(int *)dst = cJSON_IsTrue(v);
        return SDC_OK;
    case K_IMAGE:
        return parse_image(p, v, err);
    case K_STRENGTH:
        if (!cJSON_IsNumber(v))
            return wrong_type(f->name, "a number", v, err);
        if (!isfinite(d) || d < 0 || d > 1)
            return sdc_error_set(err, SDC_ERR_RANGE, "job params: 'strength' must be in 0..1, "
                                 "got %.17g", d);
        p->has_strength = 1;
        p->strength = d;
        return SDC_OK;
    }
    return sdc_error_set(err, SDC_ERR_INTERNAL, "job params: field kind %d", (int)f->kind);
}

/* cJSON ends strings at NUL, so "\u0000" would silently cut a prompt short;
 * refuse it, and raw NUL bytes, before parsing. */
static sdc_status_t scan_nul(const char *s, size_t n, sdc_error_t *err)
{
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\0')
            return sdc_error_set(err, SDC_ERR_FORMAT, "job params: NUL byte at offset %zu", i);
        if (!in_str) {
            in_str = s[i] == '"';
        } else if (s[i] == '"') {
            in_str = 0;
        } else if (s[i] == '\\' && i + 1 < n) {
            if (s[i + 1] == 'u' && i + 6 <= n && memcmp(s + i + 2, "0000", 4) == 0)
                return sdc_error_set(err, SDC_ERR_FORMAT,
                                     "job params: \\u0000 (NUL) in a string at offset %zu", i);
            i++;
        }
    }
    return SDC_OK;
}

static sdc_status_t parse_object(sdc_job_params_t *p, const cJSON *root, sdc_error_t *err)
{
    unsigned seen = 0;
    char nb[48];
    for (const cJSON *v = root->child; v; v = v->next) {
        size_t i = 0;
        while (i < N_FIELDS && strcmp(fields[i].name, v->string) != 0)
            i++;
        if (i == N_FIELDS)
            return sdc_error_set(err, SDC_ERR_FORMAT, "job params: unknown field '%s'",
                                 printable(v->string, nb, sizeof(nb)));
        if (seen & (1u << i))
            return sdc_error_set(err, SDC_ERR_FORMAT, "job params: field '%s' appears twice",
                                 fields[i].name);
        seen |= 1u << i;
        if (cJSON_IsNull(v) && fields[i].kind != K_ID)
            continue; /* null: the default */
        sdc_status_t st = parse_field(p, &fields[i], v, err);
        if (st != SDC_OK)
            return st;
    }
    if (!(seen & 1u))
        return sdc_error_set(err, SDC_ERR_FORMAT, "job params: missing 'id'");
    for (size_t i = 0; i < N_FIELDS && !p->refine; i++)
        if ((seen & (1u << i)) && strncmp(fields[i].name, "refine", 6) == 0 &&
            strcmp(fields[i].name, "refine") != 0)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG, "job params: '%s' goes with "
                                 "'refine': true", fields[i].name);
    return SDC_OK;
}

sdc_status_t sdc_job_params_parse(sdc_job_params_t *p, const char *json, size_t len,
                                  sdc_error_t *err)
{
    sdc_job_params_init(p);
    if (len > SDC_JOB_PARAMS_JSON_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE, "job params: %zu bytes of JSON, over the %d-byte "
                             "limit", len, SDC_JOB_PARAMS_JSON_MAX);
    sdc_status_t st = scan_nul(json, len, err);
    if (st != SDC_OK)
        return st;
    sdc_json_t doc;
    if ((st = sdc_json_parse(&doc, json, len, "job params", err)) != SDC_OK)
        return st;
    st = parse_object(p, doc.root, err);
    if (st == SDC_OK)
        st = sdc_job_params_validate(p, err);
    sdc_json_free(&doc);
    if (st != SDC_OK)
        sdc_job_params_free(p);
    return st;
}

/* "init_image" and "strength" of an image-to-image job; 1 on success. */
static int add_image(cJSON *o, const sdc_job_params_t *p)
{
    char crc[12];
    snprintf(crc, sizeof(crc), "%08" PRIx32, p->image_crc32c);
    cJSON *img = cJSON_AddObjectToObject(o, "init_image");
    return img && cJSON_AddNumberToObject(img, "bytes", (double)p->image_bytes) &&
           cJSON_AddStringToObject(img, "crc32c", crc) &&
           cJSON_AddNumberToObject(o, "strength", p->strength);
}

/* "refine" and the refiner's fields (the seed only when it was given). */
static int add_refine(cJSON *o, const sdc_job_params_t *p)
{
    char seed[24];
    int ok = cJSON_AddBoolToObject(o, "refine", 1) &&
             (!p->refiner_embeds ||
              cJSON_AddStringToObject(o, "refiner_embeds", p->refiner_embeds)) &&
             cJSON_AddNumberToObject(o, "refine_steps", p->refine_steps) &&
             cJSON_AddNumberToObject(o, "refine_guidance", p->refine_guidance) &&
             cJSON_AddNumberToObject(o, "refine_strength", p->refine_strength);
    if (!ok || !p->has_refine_seed)
        return ok;
    if (p->refine_seed <= SEED_AS_NUMBER_MAX)
        return cJSON_AddNumberToObject(o, "refine_seed", (double)p->refine_seed) != NULL;
    snprintf(seed, sizeof(seed), "%" PRIu64, p->refine_seed);
    return cJSON_AddStringToObject(o, "refine_seed", seed) != NULL;
}

sdc_status_t sdc_job_params_to_json(const sdc_job_params_t *p, char **json, size_t *len,
                                    sdc_error_t *err)
{
    sdc_status_t st = sdc_job_params_validate(p, err);
    if (st != SDC_OK)
        return st;
    char seed[24];
    cJSON *o = cJSON_CreateObject();
    int ok = o && cJSON_AddStringToObject(o, "id", p->id);
    if (ok && p->prompt)
        ok = cJSON_AddStringToObject(o, "prompt", p->prompt) != NULL;
    if (ok && p->embeds)
        ok = cJSON_AddStringToObject(o, "embeds", p->embeds) != NULL;
    if (ok && p->negative_prompt)
        ok = cJSON_AddStringToObject(o, "negative_prompt", p->negative_prompt) != NULL;
    if (ok && p->width)
        ok = cJSON_AddNumberToObject(o, "width", p->width) != NULL;
    if (ok && p->height)
        ok = cJSON_AddNumberToObject(o, "height", p->height) != NULL;
    if (ok)
        ok = cJSON_AddNumberToObject(o, "steps", p->steps) != NULL;
    if (ok && p->seed <= SEED_AS_NUMBER_MAX) {
        ok = cJSON_AddNumberToObject(o, "seed", (double)p->seed) != NULL;
    } else if (ok) {
        snprintf(seed, sizeof(seed), "%" PRIu64, p->seed);
        ok = cJSON_AddStringToObject(o, "seed", seed) != NULL;
    }
    if (ok && p->has_guidance)
        ok = cJSON_AddNumberToObject(o, "guidance", p->guidance) != NULL;
    if (ok)
        ok = cJSON_AddBoolToObject(o, "trim_text", p->trim_text) != NULL;
    if (ok && p->image_bytes)
        ok = add_image(o, p);
    if (ok && p->refine)
        ok = add_refine(o, p);
    char *text = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!text)
        return sdc_error_set(err, SDC_ERR_NOMEM, "job params: out of memory writing JSON");
    *json = text;
    *len = strlen(text);
    return SDC_OK;
}

/* ---- input images ---------------------------------------------------------- */

sdc_status_t sdc_job_image_check(const uint8_t *data, size_t len, size_t max_bytes,
                                 sdc_job_image_t *img, sdc_error_t *err)
{
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    memset(img, 0, sizeof(*img));
    if (!max_bytes)
        max_bytes = SDC_JOB_IMAGE_DEFAULT_CAP;
    if (!data || len == 0)
        return sdc_error_set(err, SDC_ERR_FORMAT, "the image is empty");
    if (len > max_bytes)
        return sdc_error_set(err, SDC_ERR_RANGE, "the image is %zu bytes, over the limit of %zu "
                             "bytes", len, max_bytes);
    sdc_status_t st = sdc_image_decode(data, len, (size_t)SDC_JOB_SIDE_MAX * SDC_JOB_SIDE_MAX,
                                       &rgb, &w, &h, err);
    if (st != SDC_OK)
        return st;
    free(rgb);
    if (w < 1 || h < 1 || w > SDC_JOB_SIDE_MAX || h > SDC_JOB_SIDE_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE, "the image is %dx%d (WxH): each side must be "
                             "1..%d", w, h, SDC_JOB_SIDE_MAX);
    img->data = data;
    img->len = len;
    img->crc32c = sdc_wire_crc32c(0, data, len);
    img->width = w;
    img->height = h;
    return SDC_OK;
}

sdc_status_t sdc_job_params_set_image(sdc_job_params_t *p, const sdc_job_image_t *img,
                                      sdc_error_t *err)
{
    if (!p->width)
        p->width = img->width;
    if (!p->height)
        p->height = img->height;
    if (p->width != img->width || p->height != img->height)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "the input image is %dx%d but the job's size is %dx%d (WxH): resize "
                             "or crop it to the output size first (sdc does not resample images)",
                             img->width, img->height, p->width, p->height);
    p->image_bytes = img->len;
    p->image_crc32c = img->crc32c;
    return SDC_OK;
}

/* ---- scripts -------------------------------------------------------------- */

/* Shared by the transition scripts. KEYS[1] job hash, KEYS[2] its events.
 * ARGV[1] the caller's attempt, ARGV[2] the states the target may be reached
 * from, ARGV[3] the events cap. Verdicts are {outcome, state, attempt, step}. */
#define LUA_PRELUDE                                                                     \
    "local function now_ms()\n"                                                         \
    "  local t = redis.call('TIME')\n"                                                  \
    "  return string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))\n" \
    "end\n"                                                                             \
    "local function load_job()\n"                                                       \
    "  local v = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'step', 'steps', 'entry',\n" \
    "                       'owner')\n"                                                 \
    "  return {state = v[1], attempt = v[2], step = v[3] or '0', steps = v[4] or '0',\n" \
    "          entry = v[5] or '', owner = v[6] or ''}\n"                               \
    "end\n"                                                                             \
    "local function verdict(what, j)\n"                                                 \
    "  return {what, j.state or '', j.attempt or '', j.step}\n"                         \
    "end\n"                                                                             \
    "local function precheck(j)\n"                                                      \
    "  if not j.state then return {'missing'} end\n"                                    \
    "  if j.attempt ~= ARGV[1] then return verdict('attempt', j) end\n"                 \
    "  return nil\n"                                                                    \
    "end\n"                                                                             \
    "local function allowed(j)\n"                                                       \
    "  return string.find(' ' .. ARGV[2] .. ' ', ' ' .. j.state .. ' ', 1, true) ~= nil\n" \
    "end\n"                                                                             \
    "local function event(...)\n"                                                       \
    "  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', ...)\n"                 \
    "end\n"                                                                             \
    "local function ack(stream, group, entry)\n"                                        \
    "  if entry ~= '' then\n"                                                           \
    "    redis.call('XACK', stream, group, entry)\n"                                    \
    "    redis.call('XDEL', stream, entry)\n"                                           \
    "  end\n"                                                                           \
    "end\n"

/* KEYS job, events. ARGV 4 entry, 5 owner, 6 pipeline. */
static const sdc_redis_script_t script_start = {
    "start",
    LUA_PRELUDE
    "local j = load_job()\n"
    "local bad = precheck(j)\n"
    "if bad then return bad end\n"
    "if j.state == 'encoding' and j.entry == ARGV[4] and j.owner == ARGV[5] then\n"
    "  return verdict('unchanged', j)\n"
    "end\n"
    "if not allowed(j) then return verdict('state', j) end\n"
    "local now = now_ms()\n"
    "redis.call('HSET', KEYS[1], 'state', 'encoding', 'entry', ARGV[4], 'owner', ARGV[5],\n"
    "           'pipeline', ARGV[6], 'step', '0', 'updated_ms', now, 'encoding_ms', now)\n"
    "event('state', 'encoding', 'attempt', j.attempt, 'step', '0', 'steps', j.steps, 'ts', now)\n"
    "return {'applied', 'encoding', j.attempt, '0'}\n",
};

/* KEYS job, events. ARGV 4 target state, 5 step. */
static const sdc_redis_script_t script_advance = {
    "advance",
    LUA_PRELUDE
    "local j = load_job()\n"
    "local bad = precheck(j)\n"
    "if bad then return bad end\n"
    "local to, steps = ARGV[4], tonumber(j.steps)\n"
    "local step = tonumber(ARGV[5])\n"
    "if to == 'decoding' or to == 'refining' then step = steps end\n"
    "if j.state == to and tonumber(j.step) == step then return verdict('unchanged', j) end\n"
    "if not allowed(j) then return verdict('state', j) end\n"
    "if step < 0 or step > steps or (j.state == to and step <= tonumber(j.step)) then\n"
    "  return verdict('step', j)\n"
    "end\n"
    "local now = now_ms()\n"
    "local s = string.format('%d', step)\n"
    "redis.call('HSET', KEYS[1], 'state', to, 'step', s, 'updated_ms', now)\n"
    "if j.state ~= to then redis.call('HSET', KEYS[1], to .. '_ms', now) end\n"
    "event('state', to, 'attempt', j.attempt, 'step', s, 'steps', j.steps, 'ts', now)\n"
    "return {'applied', to, j.attempt, s}\n",
};

/* KEYS job, events, result, jobs stream, image. ARGV 4 PNG, 5 result TTL
 * ms, 6 group, 7 retention ms. The ack goes first: if it fails (no group),
 * nothing has been written. */
static const sdc_redis_script_t script_complete = {
    "complete",
    LUA_PRELUDE
    "local j = load_job()\n"
    "local bad = precheck(j)\n"
    "if bad then return bad end\n"
    "if not allowed(j) then return verdict('state', j) end\n"
    "ack(KEYS[4], ARGV[6], j.entry)\n"
    "local now = now_ms()\n"
    "redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5])\n"
    "redis.call('HSET', KEYS[1], 'state', 'done', 'step', j.steps, 'result', KEYS[3],\n"
    "           'updated_ms', now, 'done_ms', now)\n"
    "event('state', 'done', 'attempt', j.attempt, 'step', j.steps, 'steps', j.steps, 'ts', now)\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[7])\n"
    "redis.call('PEXPIRE', KEYS[2], ARGV[7])\n"
    "redis.call('PEXPIRE', KEYS[5], ARGV[7])\n"
    "return {'applied', 'done', j.attempt, j.steps}\n",
};

/* Fail and requeue share: KEYS job, events, jobs stream, dead, image. ARGV 4 reason,
 * 5 group, 6 retention ms, 7 dead cap, 8 job id [, 9 max attempts]. */
#define LUA_FAIL                                                                        \
    "local function fail_job(j, reason)\n"                                              \
    "  ack(KEYS[3], ARGV[5], j.entry)\n"                                                \
    "  local now = now_ms()\n"                                                          \
    "  redis.call('HSET', KEYS[1], 'state', 'failed', 'error', reason, 'updated_ms', now,\n" \
    "             'failed_ms', now)\n"                                                  \
    "  event('state', 'failed', 'attempt', j.attempt, 'step', j.step, 'steps', j.steps,\n" \
    "        'ts', now, 'error', reason)\n"                                             \
    "  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'job', ARGV[8],\n"      \
    "             'attempt', j.attempt, 'entry', j.entry, 'reason', reason, 'ts', now)\n" \
    "  redis.call('PEXPIRE', KEYS[1], ARGV[6])\n"                                       \
    "  redis.call('PEXPIRE', KEYS[2], ARGV[6])\n"                                       \
    "  redis.call('PEXPIRE', KEYS[5], ARGV[6])\n"                                       \
    "  return {'applied', 'failed', j.attempt, j.step}\n"                               \
    "end\n"

static const sdc_redis_script_t script_fail = {
    "fail",
    LUA_PRELUDE LUA_FAIL
    "local j = load_job()\n"
    "local bad = precheck(j)\n"
    "if bad then return bad end\n"
    "if not allowed(j) then return verdict('state', j) end\n"
    "return fail_job(j, ARGV[4])\n",
};

static const sdc_redis_script_t script_requeue = {
    "requeue",
    LUA_PRELUDE LUA_FAIL
    "local j = load_job()\n"
    "local bad = precheck(j)\n"
    "if bad then return bad end\n"
    "if not allowed(j) then return verdict('state', j) end\n"
    "local params = redis.call('HGET', KEYS[1], 'params')\n"
    "if not params then return redis.error_reply('job hash has no params') end\n"
    "local next = tonumber(j.attempt) + 1\n"
    "if next > tonumber(ARGV[9]) then\n"
    "  return fail_job(j, 'attempt ' .. j.attempt .. ' of ' .. ARGV[9] .. ': ' .. ARGV[4])\n"
    "end\n"
    "ack(KEYS[3], ARGV[5], j.entry)\n"
    "local na = string.format('%d', next)\n"
    "local now = now_ms()\n"
    "redis.call('XADD', KEYS[3], '*', 'id', ARGV[8], 'attempt', na, 'params', params)\n"
    "redis.call('HSET', KEYS[1], 'state', 'queued', 'attempt', na, 'step', '0', 'entry', '',\n"
    "           'owner', '', 'pipeline', '-1', 'error', ARGV[4], 'updated_ms', now,\n"
    "           'queued_ms', now)\n"
    "event('state', 'queued', 'attempt', na, 'step', '0', 'steps', j.steps, 'ts', now,\n"
    "      'error', ARGV[4])\n"
    "return {'applied', 'queued', na, '0'}\n",
};

/* KEYS job, events, jobs stream. ARGV 4 group, 5 retention ms. A cancel
 * applies to whatever attempt is current, so ARGV[1] (the attempt) is not
 * checked. The stream entry of a running attempt is acked here; a queued
 * job's entry is acked by the coordinator that reads it and finds the job
 * cancelled. */
static const sdc_redis_script_t script_cancel = {
    "cancel",
    LUA_PRELUDE
    "local j = load_job()\n"
    "if not j.state then return {'missing'} end\n"
    "if j.state == 'cancelled' then return verdict('unchanged', j) end\n"
    "if not allowed(j) then return verdict('state', j) end\n"
    "ack(KEYS[3], ARGV[4], j.entry)\n"
    "local now = now_ms()\n"
    "redis.call('HSET', KEYS[1], 'state', 'cancelled', 'updated_ms', now, 'cancelled_ms', now)\n"
    "event('state', 'cancelled', 'attempt', j.attempt, 'step', j.step, 'steps', j.steps,\n"
    "      'ts', now)\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[5])\n"
    "redis.call('PEXPIRE', KEYS[2], ARGV[5])\n"
    "return {'applied', 'cancelled', j.attempt, j.step}\n",
};

/* KEYS jobs stream, dead. ARGV 1 group, 2 entry, 3 reason ("" for a plain
 * ack), 4 job id, 5 dead cap. Only the call that acks the entry records it
 * as dead, so a repeat adds nothing. */
static const sdc_redis_script_t script_ack = {
    "ack",
    "local n = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('XDEL', KEYS[1], ARGV[2])\n"
    "if n == 1 and ARGV[3] ~= '' then\n"
    "  local t = redis.call('TIME')\n"
    "  local now = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'job', ARGV[4], 'attempt', '',\n"
    "             'entry', ARGV[2], 'reason', ARGV[3], 'ts', now)\n"
    "end\n"
    "return n\n",
};

/* KEYS leader. ARGV 1 id, 2 ttl ms. */
static const sdc_redis_script_t script_renew = {
    "leader renew",
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "end\n"
    "return 0\n",
};

static const sdc_redis_script_t script_release = {
    "leader release",
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n",
};

/* KEYS job, jobs stream, events, image. ARGV 1 job id, 2 params JSON,
 * 3 steps, 4 now (ms, the submitter's clock), 5 events cap, 6 the input
 * image ("" for none). A job hash that exists already is left alone: "same"
 * when its params equal ARGV[2] and its stored image ARGV[6] (a repeated
 * submit), "other" / "otherimage" when they differ, "noparams" when it has
 * none. Otherwise writes the hash, the image, the stream entry and the
 * first event: "added". */
static const sdc_redis_script_t script_submit = {
    "submit",
    "if redis.call('EXISTS', KEYS[1]) == 1 then\n"
    "  local p = redis.call('HGET', KEYS[1], 'params')\n"
    "  if not p then return 'noparams' end\n"
    "  if p ~= ARGV[2] then return 'other' end\n"
    "  if ARGV[6] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[6] then return 'otherimage' end\n"
    "  return 'same'\n"
    "end\n"
    "if ARGV[6] ~= '' then redis.call('SET', KEYS[4], ARGV[6]) end\n"
    "redis.call('HSET', KEYS[1], 'state', 'queued', 'attempt', '1', 'step', '0', 'steps', ARGV[3],\n"
    "           'params', ARGV[2], 'created_ms', ARGV[4], 'updated_ms', ARGV[4],\n"
    "           'queued_ms', ARGV[4])\n"
    "redis.call('XADD', KEYS[2], '*', 'id', ARGV[1], 'attempt', '1', 'params', ARGV[2])\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'state', 'queued', 'attempt', '1',\n"
    "           'step', '0', 'steps', ARGV[3], 'ts', ARGV[4])\n"
    "return 'added'\n",
};

/* KEYS job. ARGV 1 attempt, 2 node id, 3 state, 4 field. */
static const sdc_redis_script_t script_holder = {
    "holder",
    "local s = redis.call('HMGET', KEYS[1], 'state', 'attempt')\n"
    "if s[1] ~= ARGV[3] or s[2] ~= ARGV[1] then return 0 end\n"
    "redis.call('HSET', KEYS[1], ARGV[4], ARGV[1] .. ':' .. ARGV[2])\n"
    "return 1\n",
};

/* ---- queue --------------------------------------------------------------- */

/* A string reply equal to s (binary-safe). */
static int reply_is(const redisReply *r, const char *s)
{
    size_t n = strlen(s);
    return r && r->type == REDIS_REPLY_STRING && r->len == n && memcmp(r->str, s, n) == 0;
}

typedef struct {
    char job[KEY_MAX], events[KEY_MAX], result[KEY_MAX], stream[KEY_MAX], dead[KEY_MAX];
    char image[KEY_MAX];
} job_keys_t;

static sdc_status_t job_keys(sdc_jobs_t *q, const char *id, job_keys_t *k, sdc_error_t *err)
{
    sdc_status_t st = sdc_job_id_check(id, "job id", err);
    if (st == SDC_OK) st = sdc_redis_key(q->r, k->job, KEY_MAX, err, "job:%s", id);
    if (st == SDC_OK) st = sdc_redis_key(q->r, k->events, KEY_MAX, err, "job:%s:events", id);
    if (st == SDC_OK) st = sdc_redis_key(q->r, k->result, KEY_MAX, err, "result:%s", id);
    if (st == SDC_OK) st = sdc_redis_key(q->r, k->stream, KEY_MAX, err, "jobs");
    if (st == SDC_OK) st = sdc_redis_key(q->r, k->dead, KEY_MAX, err, "dead");
    if (st == SDC_OK) st = sdc_redis_key(q->r, k->image, KEY_MAX, err, "job:%s:image", id);
    return st;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

sdc_status_t sdc_jobs_init(sdc_jobs_t *q, sdc_redis_t *r, const sdc_jobs_opts_t *opts,
                           sdc_error_t *err)
{
    static const sdc_jobs_opts_t defaults = {0};
    if (!opts)
        opts = &defaults;
    memset(q, 0, sizeof(*q));
    const char *group = opts->group ? opts->group : "coordinators";
    sdc_status_t st = sdc_job_id_check(group, "consumer group name", err);
    if (st != SDC_OK)
        return st;
    if (opts->result_ttl_ms < 0 || opts->retention_ms < 0 || opts->events_maxlen < 0 ||
        opts->dead_maxlen < 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "jobs: negative TTL or stream cap");
    q->r = r;
    strcpy(q->group, group);
    q->result_ttl_ms = opts->result_ttl_ms ? opts->result_ttl_ms : 24 * 3600 * 1000LL;
    q->retention_ms = opts->retention_ms ? opts->retention_ms : 7 * 24 * 3600 * 1000LL;
    q->events_maxlen = opts->events_maxlen ? opts->events_maxlen : 1000;
    q->dead_maxlen = opts->dead_maxlen ? opts->dead_maxlen : 100000;
    q->max_image_bytes = opts->max_image_bytes ? opts->max_image_bytes : SDC_JOB_IMAGE_DEFAULT_CAP;
    return SDC_OK;
}

sdc_status_t sdc_jobs_group_create(sdc_jobs_t *q, sdc_error_t *err)
{
    char stream[KEY_MAX];
    redisReply *rep;
    sdc_status_t st = sdc_redis_key(q->r, stream, sizeof(stream), err, "jobs");
    if (st != SDC_OK)
        return st;
    st = sdc_redis_command_or_error(q->r, &rep, err, "XGROUP CREATE %s %s 0 MKSTREAM", stream,
                                    q->group);
    if (st != SDC_OK)
        return st;
    if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "BUSYGROUP", 9) == 0)
        st = SDC_OK; /* created before: fine */
    else
        st = sdc_redis_expect(rep, REDIS_REPLY_STATUS, "XGROUP CREATE", err);
    sdc_redis_reply_free(rep);
    return st;
}

/* ---- submit ---------------------------------------------------------------- */

/* Leaves the connection without WATCH or MULTI state after a failure. */
static void tx_reset(sdc_redis_t *r, int in_multi)
{
    redisReply *rep = NULL;
    sdc_error_t ignored;
    if (sdc_redis_command_or_error(r, &rep, &ignored, in_multi ? "DISCARD" : "UNWATCH") == SDC_OK)
        sdc_redis_reply_free(rep);
}

static sdc_status_t expect_status(sdc_redis_t *r, const char *what, sdc_error_t *err,
                                  const char *fmt, ...)
{
    redisReply *rep;
    va_list ap;
    va_start(ap, fmt);
    sdc_status_t st = sdc_redis_vcommand(r, &rep, err, fmt, ap);
    va_end(ap);
    if (st != SDC_OK)
        return st;
    st = sdc_redis_expect(rep, REDIS_REPLY_STATUS, what, err);
    sdc_redis_reply_free(rep);
    return st;
}

sdc_status_t sdc_job_submit(sdc_jobs_t *q, const sdc_job_params_t *p, int *existed,
                            sdc_error_t *err)
{
    return sdc_job_submit_image(q, p, NULL, existed, err);
}

/* The image a job's params name, against what is at hand. */
static sdc_status_t image_matches(const sdc_jobs_t *q, const sdc_job_params_t *p,
                                  const sdc_job_image_t *img, sdc_error_t *err)
{
    if (!img != !p->image_bytes)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "job %s: %s", p->id,
                             img ? "an image without 'init_image' in the params"
                                 : "'init_image' without the image");
    if (!img)
        return SDC_OK;
    if (img->len > q->max_image_bytes)
        return sdc_error_set(err, SDC_ERR_RANGE, "job %s: the image is %zu bytes, over the limit "
                             "of %zu bytes", p->id, img->len, q->max_image_bytes);
    if (img->len != p->image_bytes || img->crc32c != p->image_crc32c ||
        img->width != p->width || img->height != p->height)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "job %s: the image (%zu bytes, %dx%d) is "
                             "not the one its params name (sdc_job_params_set_image)", p->id,
                             img->len, img->width, img->height);
    return SDC_OK;
}

/* One round trip: script_submit checks and writes atomically. */
sdc_status_t sdc_job_submit_image(sdc_jobs_t *q, const sdc_job_params_t *p,
                                  const sdc_job_image_t *img, int *existed, sdc_error_t *err)
{
    job_keys_t k;
    char *json;
    size_t len;
    char ms[24], steps[16], cap[24];
    if (existed)
        *existed = 0;
    sdc_status_t st = sdc_job_params_to_json(p, &json, &len, err);
    if (st != SDC_OK)
        return st;
    if ((st = image_matches(q, p, img, err)) != SDC_OK ||
        (st = job_keys(q, p->id, &k, err)) != SDC_OK)
        goto out;
    snprintf(ms, sizeof(ms), "%" PRId64, wall_ms());
    snprintf(steps, sizeof(steps), "%d", sdc_job_params_run_steps(p));
    snprintf(cap, sizeof(cap), "%ld", q->events_maxlen);
    const char *keys[] = {k.job, k.stream, k.events, k.image};
    size_t klen[] = {strlen(k.job), strlen(k.stream), strlen(k.events), strlen(k.image)};
    const char *args[] = {p->id, json, steps, ms, cap, img ? (const char *)img->data : ""};
    size_t alen[] = {strlen(p->id), len, strlen(steps), strlen(ms), strlen(cap),
                     img ? img->len : 0};
    redisReply *rep;
    st = sdc_redis_eval(q->r, &script_submit, 4, keys, klen, 6, args, alen, &rep, err);
    if (st != SDC_OK)
        goto out;
    if ((st = sdc_redis_expect(rep, REDIS_REPLY_STRING, "submit script", err)) != SDC_OK) {
        /* st set */
    } else if (reply_is(rep, "same")) {
        if (existed)
            *existed = 1;
    } else if (reply_is(rep, "other")) {
        st = sdc_error_set(err, SDC_ERR_INVALID_ARG,
                           "job %s: a job with this id exists with other params", p->id);
    } else if (reply_is(rep, "otherimage")) {
        st = sdc_error_set(err, SDC_ERR_INVALID_ARG,
                           "job %s: a job with this id exists with another input image", p->id);
    } else if (reply_is(rep, "noparams")) {
        st = sdc_error_set(err, SDC_ERR_FORMAT, "job %s: hash exists without params", p->id);
    } else if (!reply_is(rep, "added")) {
        st = sdc_error_set(err, SDC_ERR_FORMAT, "submit: unknown verdict '%.32s'", rep->str);
    }
    sdc_redis_reply_free(rep);
out:
    free(json);
    return st;
}

/* ---- claim ----------------------------------------------------------------- */

void sdc_job_entries_free(sdc_job_entry_t *e, size_t n)
{
    for (size_t i = 0; e && i < n; i++)
        free(e[i].params_json);
    free(e);
}

/* Fills the fields of e from a stream entry's field list; a problem with the
 * data goes into e->problem, not into the return value. */
static sdc_status_t entry_fields(sdc_job_entry_t *e, const redisReply *f, sdc_error_t *err)
{
    const redisReply *id = NULL, *attempt = NULL, *params = NULL;
    if (f->type == REDIS_REPLY_NIL) {
        snprintf(e->problem, sizeof(e->problem), "the entry's data was deleted");
        return SDC_OK;
    }
    sdc_status_t st = sdc_redis_expect(f, REDIS_REPLY_ARRAY, "stream entry fields", err);
    if (st != SDC_OK)
        return st;
    if (f->elements % 2)
        return sdc_error_set(err, SDC_ERR_FORMAT, "stream entry %s: odd field list",
                             e->entry_id);
    for (size_t i = 0; i < f->elements; i += 2) {
        const redisReply *name = f->element[i], *v = f->element[i + 1];
        if (name->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            return sdc_error_set(err, SDC_ERR_FORMAT, "stream entry %s: non-string field",
                                 e->entry_id);
        if (reply_is(name, "id")) id = v;
        else if (reply_is(name, "attempt")) attempt = v;
        else if (reply_is(name, "params")) params = v;
    }
    long long a = 0;
    sdc_error_t perr;
    int id_ok = id && id->len == strlen(id->str) && sdc_job_id_check(id->str, "", &perr) == SDC_OK;
    if (id_ok)
        memcpy(e->job_id, id->str, id->len + 1);
    if (!id || !attempt || !params)
        snprintf(e->problem, sizeof(e->problem), "missing field '%s'",
                 !id ? "id" : !attempt ? "attempt" : "params");
    else if (!id_ok)
        snprintf(e->problem, sizeof(e->problem), "bad job id");
    else if (sdc_redis_reply_int(attempt, "attempt", &a, &perr) != SDC_OK || a < 1)
        snprintf(e->problem, sizeof(e->problem), "bad attempt");
    else if (params->len > SDC_JOB_PARAMS_JSON_MAX)
        snprintf(e->problem, sizeof(e->problem), "params of %zu bytes", params->len);
    if (e->problem[0])
        return SDC_OK;
    e->attempt = a;
    e->params_json = malloc(params->len + 1);
    if (!e->params_json)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory copying job params");
    memcpy(e->params_json, params->str, params->len);
    e->params_json[params->len] = '\0';
    e->params_len = params->len;
    return SDC_OK;
}

static sdc_status_t parse_entry(const redisReply *r, sdc_job_entry_t *e, sdc_error_t *err)
{
    memset(e, 0, sizeof(*e));
    sdc_status_t st = sdc_redis_expect_array(r, 2, "stream entry", err);
    if (st == SDC_OK)
        st = sdc_redis_expect(r->element[0], REDIS_REPLY_STRING, "stream entry id", err);
    if (st != SDC_OK)
        return st;
    if (!entry_id_ok(r->element[0]->str, r->element[0]->len))
        return sdc_error_set(err, SDC_ERR_FORMAT, "stream entry id '%.48s' is malformed",
                             r->element[0]->str);
    memcpy(e->entry_id, r->element[0]->str, r->element[0]->len + 1);
    return entry_fields(e, r->element[1], err);
}

/* Appends the entries of an array of stream entries (nil elements skipped). */
static sdc_status_t append_entries(const redisReply *list, sdc_job_entry_t **out, size_t *n,
                                   sdc_error_t *err)
{
    sdc_status_t st = sdc_redis_expect(list, REDIS_REPLY_ARRAY, "stream entries", err);
    if (st != SDC_OK || list->elements == 0)
        return st;
    sdc_job_entry_t *grown = realloc(*out, (*n + list->elements) * sizeof(**out));
    if (!grown)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory reading stream entries");
    *out = grown;
    for (size_t i = 0; i < list->elements; i++) {
        if (list->element[i]->type == REDIS_REPLY_NIL)
            continue; /* XAUTOCLAIM before Redis 7 for a deleted entry */
        if ((st = parse_entry(list->element[i], &grown[*n], err)) != SDC_OK) {
            free(grown[*n].params_json);
            return st;
        }
        (*n)++;
    }
    return SDC_OK;
}

static sdc_status_t claim_check(sdc_jobs_t *q, const char *consumer, int count,
                                char *stream, sdc_error_t *err)
{
    sdc_status_t st = sdc_job_id_check(consumer, "consumer name", err);
    if (st != SDC_OK)
        return st;
    if (count < 1 || count > 10000)
        return sdc_error_set(err, SDC_ERR_RANGE, "claim count %d outside 1..10000", count);
    return sdc_redis_key(q->r, stream, KEY_MAX, err, "jobs");
}

sdc_status_t sdc_job_claim(sdc_jobs_t *q, const char *consumer, int count, int block_ms,
                           int own_pending, sdc_job_entry_t **entries, size_t *n,
                           sdc_error_t *err)
{
    char stream[KEY_MAX];
    redisReply *rep;
    *entries = NULL;
    *n = 0;
    sdc_status_t st = claim_check(q, consumer, count, stream, err);
    if (st != SDC_OK)
        return st;
    if (block_ms < 0 || block_ms > 3600 * 1000)
        return sdc_error_set(err, SDC_ERR_RANGE, "claim block time %d ms outside 0..1 h",
                             block_ms);
    if (own_pending)
        st = sdc_redis_command(q->r, &rep, err, "XREADGROUP GROUP %s %s COUNT %d STREAMS %s 0",
                               q->group, consumer, count, stream);
    else if (block_ms > 0)
        st = sdc_redis_command_blocking(q->r, block_ms, &rep, err,
                                        "XREADGROUP GROUP %s %s COUNT %d BLOCK %d STREAMS %s >",
                                        q->group, consumer, count, block_ms, stream);
    else
        st = sdc_redis_command(q->r, &rep, err, "XREADGROUP GROUP %s %s COUNT %d STREAMS %s >",
                               q->group, consumer, count, stream);
    if (st != SDC_OK)
        return st;
    if (rep->type == REDIS_REPLY_NIL)
        goto out; /* timed out: nothing new */
    if ((st = sdc_redis_expect_array(rep, 1, "XREADGROUP", err)) != SDC_OK)
        goto out;
    const redisReply *s = rep->element[0];
    if ((st = sdc_redis_expect_array(s, 2, "XREADGROUP stream", err)) != SDC_OK)
        goto out;
    st = append_entries(s->element[1], entries, n, err);
out:
    sdc_redis_reply_free(rep);
    if (st != SDC_OK) {
        sdc_job_entries_free(*entries, *n);
        *entries = NULL;
        *n = 0;
    }
    return st;
}

sdc_status_t sdc_job_reclaim(sdc_jobs_t *q, const char *consumer, int64_t min_idle_ms, int count,
                             sdc_job_entry_t **entries, size_t *n, sdc_error_t *err)
{
    char stream[KEY_MAX], cursor[SDC_STREAM_ID_MAX + 1] = "0-0";
    *entries = NULL;
    *n = 0;
    sdc_status_t st = claim_check(q, consumer, count, stream, err);
    if (st != SDC_OK)
        return st;
    if (min_idle_ms < 0)
        return sdc_error_set(err, SDC_ERR_RANGE, "reclaim: negative idle time");
    /* Bounded: each round scans at most count PEL entries. */
    for (int round = 0; round < 64 && *n < (size_t)count; round++) {
        redisReply *rep;
        st = sdc_redis_command(q->r, &rep, err, "XAUTOCLAIM %s %s %s %lld %s COUNT %d", stream,
                               q->group, consumer, (long long)min_idle_ms, cursor,
                               count - (int)*n);
        if (st != SDC_OK)
            break;
        st = sdc_redis_expect(rep, REDIS_REPLY_ARRAY, "XAUTOCLAIM", err);
        if (st == SDC_OK && rep->elements != 2 && rep->elements != 3)
            st = sdc_error_set(err, SDC_ERR_FORMAT, "XAUTOCLAIM: %zu elements", rep->elements);
        if (st == SDC_OK)
            st = sdc_redis_expect(rep->element[0], REDIS_REPLY_STRING, "XAUTOCLAIM cursor", err);
        if (st == SDC_OK && !entry_id_ok(rep->element[0]->str, rep->element[0]->len))
            st = sdc_error_set(err, SDC_ERR_FORMAT, "XAUTOCLAIM: malformed cursor");
        if (st == SDC_OK) {
            memcpy(cursor, rep->element[0]->str, rep->element[0]->len + 1);
            st = append_entries(rep->element[1], entries, n, err);
        }
        sdc_redis_reply_free(rep);
        if (st != SDC_OK || strcmp(cursor, "0-0") == 0)
            break;
    }
    if (st != SDC_OK) {
        sdc_job_entries_free(*entries, *n);
        *entries = NULL;
        *n = 0;
    }
    return st;
}

static sdc_status_t run_ack(sdc_jobs_t *q, const char *entry_id, const char *job_id,
                            const char *reason, sdc_error_t *err)
{
    char stream[KEY_MAX], dead[KEY_MAX], cap[24];
    if (!entry_id || !entry_id_ok(entry_id, strlen(entry_id)))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "stream entry id '%.48s' is malformed",
                             entry_id ? entry_id : "(null)");
    if (strlen(reason) > SDC_JOB_REASON_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE, "reason longer than %d bytes",
                             SDC_JOB_REASON_MAX);
    sdc_status_t st = sdc_redis_key(q->r, stream, sizeof(stream), err, "jobs");
    if (st == SDC_OK)
        st = sdc_redis_key(q->r, dead, sizeof(dead), err, "dead");
    if (st != SDC_OK)
        return st;
    snprintf(cap, sizeof(cap), "%ld", q->dead_maxlen);
    const char *keys[] = {stream, dead};
    size_t klen[] = {strlen(stream), strlen(dead)};
    const char *args[] = {q->group, entry_id, reason, job_id, cap};
    size_t alen[] = {strlen(q->group), strlen(entry_id), strlen(reason), strlen(job_id),
                     strlen(cap)};
    redisReply *rep;
    st = sdc_redis_eval(q->r, &script_ack, 2, keys, klen, 5, args, alen, &rep, err);
    if (st != SDC_OK)
        return st;
    st = sdc_redis_expect(rep, REDIS_REPLY_INTEGER, "ack script", err);
    sdc_redis_reply_free(rep);
    return st;
}

sdc_status_t sdc_job_ack(sdc_jobs_t *q, const char *entry_id, sdc_error_t *err)
{
    return run_ack(q, entry_id, "", "", err);
}

sdc_status_t sdc_job_reject_entry(sdc_jobs_t *q, const char *entry_id, const char *job_id,
                                  const char *reason, sdc_error_t *err)
{
    if (!reason || !*reason)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "reject: empty reason");
    return run_ack(q, entry_id, job_id ? job_id : "", reason, err);
}

/* ---- transitions ----------------------------------------------------------- */

typedef struct {
    const char *op; /* for messages: "start", "complete", ... */
    const char *id;
    int64_t attempt;
    sdc_job_state_t to;
    sdc_job_state_t reached; /* the job's state afterwards, when applied */
} transition_t;

/* The one transition whose sources are not the state machine's: a
 * reattempt also leaves queued (sdc_job_reattempt). */
static const char op_reattempt[] = "reattempt";

static const char *elem_str(const redisReply *rep, size_t i)
{
    if (i >= rep->elements || rep->element[i]->type != REDIS_REPLY_STRING)
        return "?";
    return rep->element[i]->str;
}

/* Reads a script's verdict {outcome, state, attempt, step}. */
static sdc_status_t verdict(transition_t *t, const redisReply *rep, sdc_job_outcome_t *outcome,
                            sdc_error_t *err)
{
    sdc_status_t st = sdc_redis_expect(rep, REDIS_REPLY_ARRAY, t->op, err);
    if (st == SDC_OK && rep->elements == 0)
        st = sdc_error_set(err, SDC_ERR_FORMAT, "%s: empty verdict", t->op);
    if (st == SDC_OK)
        st = sdc_redis_expect(rep->element[0], REDIS_REPLY_STRING, t->op, err);
    if (st != SDC_OK)
        return st;
    const redisReply *what = rep->element[0];
    const char *state = elem_str(rep, 1), *attempt = elem_str(rep, 2), *step = elem_str(rep, 3);
    if (reply_is(what, "applied") || reply_is(what, "unchanged")) {
        int s = sdc_job_state_parse(state, strlen(state));
        if (s < 0)
            return sdc_error_set(err, SDC_ERR_FORMAT, "job %s: %s left unknown state '%.32s'",
                                 t->id, t->op, state);
        t->reached = (sdc_job_state_t)s;
        *outcome = reply_is(what, "applied") ? SDC_JOB_APPLIED : SDC_JOB_UNCHANGED;
        return SDC_OK;
    }
    if (reply_is(what, "missing")) {
        *outcome = SDC_JOB_NO_JOB;
        return sdc_error_set(err, SDC_ERR_NOT_FOUND, "job %s: cannot %s: no such job", t->id,
                             t->op);
    }
    if (reply_is(what, "attempt")) {
        *outcome = SDC_JOB_STALE_ATTEMPT;
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "job %s: cannot %s attempt %" PRId64 ": the job is at attempt %.20s "
                             "(state %.32s)", t->id, t->op, t->attempt, attempt, state);
    }
    if (reply_is(what, "state")) {
        *outcome = SDC_JOB_BAD_STATE;
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "job %s: cannot %s: the job is %.32s (attempt %.20s), and %s cannot "
                             "follow %.32s", t->id, t->op, state, attempt,
                             sdc_job_state_name(t->to), state);
    }
    if (reply_is(what, "step")) {
        *outcome = SDC_JOB_BAD_STEP;
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "job %s: cannot %s: step out of order or range (the job is %.32s at "
                             "step %.20s)", t->id, t->op, state, step);
    }
    return sdc_error_set(err, SDC_ERR_FORMAT, "%s: unknown verdict '%.32s'", t->op, what->str);
}

/* Runs a transition script with ARGV = attempt, sources of t->to, events cap,
 * then extra. */
static sdc_status_t transition(sdc_jobs_t *q, const sdc_redis_script_t *s, transition_t *t,
                               int nkeys, const char **keys, int nextra, const char **extra,
                               const size_t *extra_len, sdc_job_outcome_t *outcome,
                               sdc_error_t *err)
{
    enum { MAX_ARGS = 12 };
    char attempt[24], sources[128], cap[24];
    const char *args[MAX_ARGS];
    size_t alen[MAX_ARGS], klen[8];
    sdc_job_outcome_t ignored;
    if (!outcome)
        outcome = &ignored;
    *outcome = SDC_JOB_NO_JOB;
    if (t->attempt < 1)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "job %s: %s: attempt %" PRId64 " < 1",
                             t->id, t->op, t->attempt);
    if (nextra + 3 > MAX_ARGS || nkeys > 8)
        return sdc_error_set(err, SDC_ERR_INTERNAL, "%s: too many script arguments", t->op);
    snprintf(attempt, sizeof(attempt), "%" PRId64, t->attempt);
    sources_of(t->to, sources, sizeof(sources));
    if (t->op == op_reattempt)
        snprintf(sources + strlen(sources), sizeof(sources) - strlen(sources), " %s",
                 state_names[SDC_JOB_QUEUED]);
    snprintf(cap, sizeof(cap), "%ld", q->events_maxlen);
    args[0] = attempt, args[1] = sources, args[2] = cap;
    for (int i = 0; i < 3; i++)
        alen[i] = strlen(args[i]);
    for (int i = 0; i < nextra; i++)
        args[3 + i] = extra[i], alen[3 + i] = extra_len ? extra_len[i] : strlen(extra[i]);
    for (int i = 0; i < nkeys; i++)
        klen[i] = strlen(keys[i]);
    redisReply *rep;
    sdc_status_t st = sdc_redis_eval(q->r, s, nkeys, keys, klen, 3 + nextra, args, alen, &rep,
                                     err);
    if (st != SDC_OK) {
        sdc_error_wrap(err, "job %s: %s", t->id, t->op);
        return st;
    }
    st = verdict(t, rep, outcome, err);
    sdc_redis_reply_free(rep);
    return st;
}

sdc_status_t sdc_job_start(sdc_jobs_t *q, const char *id, int64_t attempt, const char *entry_id,
                           const char *owner, int pipeline, sdc_job_outcome_t *outcome,
                           sdc_error_t *err)
{
    job_keys_t k;
    char pl[16];
    sdc_status_t st = job_keys(q, id, &k, err);
    if (st == SDC_OK)
        st = sdc_job_id_check(owner, "owner", err);
    if (st != SDC_OK)
        return st;
    if (!entry_id || !entry_id_ok(entry_id, strlen(entry_id)))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "job %s: start: malformed entry id", id);
    if (pipeline < -1)
        return sdc_error_set(err, SDC_ERR_RANGE, "job %s: start: pipeline %d < -1", id, pipeline);
    snprintf(pl, sizeof(pl), "%d", pipeline);
    transition_t t = {"start", id, attempt, SDC_JOB_ENCODING, SDC_JOB_QUEUED};
    const char *keys[] = {k.job, k.events};
    const char *extra[] = {entry_id, owner, pl};
    return transition(q, &script_start, &t, 2, keys, 3, extra, NULL, outcome, err);
}

sdc_status_t sdc_job_advance(sdc_jobs_t *q, const char *id, int64_t attempt,
                             sdc_job_state_t to, int64_t step, sdc_job_outcome_t *outcome,
                             sdc_error_t *err)
{
    job_keys_t k;
    char sb[24];
    sdc_status_t st = job_keys(q, id, &k, err);
    if (st != SDC_OK)
        return st;
    if (to != SDC_JOB_DENOISING && to != SDC_JOB_DECODING && to != SDC_JOB_REFINING)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "job %s: advance goes to denoising, decoding or refining, not "
                             "%s (start, complete, fail and requeue have their own calls)", id,
                             sdc_job_state_name(to));
    if (step < 0 || step > SDC_JOB_STEPS_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE, "job %s: step %" PRId64 " outside 0..%d", id,
                             step, SDC_JOB_STEPS_MAX);
    snprintf(sb, sizeof(sb), "%" PRId64, step);
    transition_t t = {"advance", id, attempt, to, to};
    const char *keys[] = {k.job, k.events};
    const char *extra[] = {sdc_job_state_name(to), sb};
    return transition(q, &script_advance, &t, 2, keys, 2, extra, NULL, outcome, err);
}

sdc_status_t sdc_job_complete(sdc_jobs_t *q, const char *id, int64_t attempt,
                              const unsigned char *png, size_t len, sdc_job_outcome_t *outcome,
                              sdc_error_t *err)
{
    job_keys_t k;
    char ttl[24], keep[24];
    sdc_status_t st = job_keys(q, id, &k, err);
    if (st != SDC_OK)
        return st;
    if (!png || len == 0 || len > SDC_JOB_RESULT_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE, "job %s: result of %zu bytes (1..%u allowed)",
                             id, png ? len : 0, SDC_JOB_RESULT_MAX);
    snprintf(ttl, sizeof(ttl), "%" PRId64, q->result_ttl_ms);
    snprintf(keep, sizeof(keep), "%" PRId64, q->retention_ms);
    transition_t t = {"complete", id, attempt, SDC_JOB_DONE, SDC_JOB_DONE};
    const char *keys[] = {k.job, k.events, k.result, k.stream, k.image};
    const char *extra[] = {(const char *)png, ttl, q->group, keep};
    size_t elen[] = {len, strlen(ttl), strlen(q->group), strlen(keep)};
    return transition(q, &script_complete, &t, 5, keys, 4, extra, elen, outcome, err);
}

static sdc_status_t fail_or_requeue(sdc_jobs_t *q, const sdc_redis_script_t *s, transition_t *t,
                                    const char *reason, int max_attempts,
                                    sdc_job_outcome_t *outcome, sdc_error_t *err)
{
    job_keys_t k;
    char keep[24], cap[24], maxa[16];
    sdc_status_t st = job_keys(q, t->id, &k, err);
    if (st != SDC_OK)
        return st;
    if (!reason || !*reason || strlen(reason) > SDC_JOB_REASON_MAX)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "job %s: %s: the reason must be 1..%d "
                             "bytes", t->id, t->op, SDC_JOB_REASON_MAX);
    snprintf(keep, sizeof(keep), "%" PRId64, q->retention_ms);
    snprintf(cap, sizeof(cap), "%ld", q->dead_maxlen);
    snprintf(maxa, sizeof(maxa), "%d", max_attempts);
    const char *keys[] = {k.job, k.events, k.stream, k.dead, k.image};
    const char *extra[] = {reason, q->group, keep, cap, t->id, maxa};
    return transition(q, s, t, 5, keys, s == &script_requeue ? 6 : 5, extra, NULL, outcome, err);
}

sdc_status_t sdc_job_fail(sdc_jobs_t *q, const char *id, int64_t attempt, const char *reason,
                          sdc_job_outcome_t *outcome, sdc_error_t *err)
{
    transition_t t = {"fail", id, attempt, SDC_JOB_FAILED, SDC_JOB_FAILED};
    return fail_or_requeue(q, &script_fail, &t, reason, 0, outcome, err);
}

sdc_status_t sdc_job_requeue(sdc_jobs_t *q, const char *id, int64_t attempt, int max_attempts,
                             const char *reason, sdc_job_state_t *state_out,
                             sdc_job_outcome_t *outcome, sdc_error_t *err)
{
    if (max_attempts < 1 || max_attempts > 1000)
        return sdc_error_set(err, SDC_ERR_RANGE, "job %s: requeue: max attempts %d outside "
                             "1..1000", id ? id : "?", max_attempts);
    transition_t t = {"requeue", id, attempt, SDC_JOB_QUEUED, SDC_JOB_QUEUED};
    sdc_status_t st = fail_or_requeue(q, &script_requeue, &t, reason, max_attempts, outcome, err);
    if (st == SDC_OK && state_out)
        *state_out = t.reached;
    return st;
}

sdc_status_t sdc_job_cancel(sdc_jobs_t *q, const char *id, sdc_job_state_t *state_out,
                            sdc_job_outcome_t *outcome, sdc_error_t *err)
{
    job_keys_t k;
    char keep[24];
    sdc_status_t st = job_keys(q, id, &k, err);
    if (st != SDC_OK)
        return st;
    snprintf(keep, sizeof(keep), "%" PRId64, q->retention_ms);
    transition_t t = {"cancel", id, 1, SDC_JOB_CANCELLED, SDC_JOB_CANCELLED};
    const char *keys[] = {k.job, k.events, k.stream};
    const char *extra[] = {q->group, keep};
    st = transition(q, &script_cancel, &t, 3, keys, 2, extra, NULL, outcome, err);
    if (st == SDC_OK && state_out)
        *state_out = t.reached;
    return st;
}

sdc_status_t sdc_job_reattempt(sdc_jobs_t *q, const char *id, int64_t attempt,
                               const char *reason, sdc_job_outcome_t *outcome, sdc_error_t *err)
{
    transition_t t = {op_reattempt, id, attempt, SDC_JOB_QUEUED, SDC_JOB_QUEUED};
    return fail_or_requeue(q, &script_requeue, &t, reason, 1000, outcome, err);
}

/* ---- reading --------------------------------------------------------------- */

static sdc_status_t field_int(const redisReply *v, const char *id, const char *name, int64_t lo,
                              int64_t hi, int64_t *out, sdc_error_t *err)
{
    long long x;
    char what[96];
    snprintf(what, sizeof(what), "job %s: field %s", id, name);
    sdc_status_t st = sdc_redis_reply_int(v, what, &x, err);
    if (st == SDC_OK && (x < lo || x > hi))
        st = sdc_error_set(err, SDC_ERR_FORMAT, "%s: %lld outside %" PRId64 "..%" PRId64, what, x,
                           lo, hi);
    if (st == SDC_OK)
        *out = x;
    return st;
}

static void copy_str(const redisReply *v, char *dst, size_t cap)
{
    size_t n = v->len < cap - 1 ? v->len : cap - 1;
    memcpy(dst, v->str, n);
    dst[n] = '\0';
}

static sdc_status_t status_field(sdc_job_status_t *s, const char *id, const redisReply *name,
                                 const redisReply *v, unsigned *seen, sdc_error_t *err)
{
    int64_t x = 0;
    sdc_status_t st = SDC_OK;
    if (reply_is(name, "state")) {
        int state = sdc_job_state_parse(v->str, v->len);
        if (state < 0)
            return sdc_error_set(err, SDC_ERR_FORMAT, "job %s: unknown state '%.32s'", id, v->str);
        s->state = (sdc_job_state_t)state;
        *seen |= 1;
    } else if (reply_is(name, "attempt")) {
        st = field_int(v, id, "attempt", 1, INT64_MAX, &s->attempt, err);
        *seen |= 2;
    } else if (reply_is(name, "step")) {
        st = field_int(v, id, "step", 0, SDC_JOB_STEPS_MAX, &s->step, err);
    } else if (reply_is(name, "steps")) {
        st = field_int(v, id, "steps", 0, SDC_JOB_STEPS_MAX, &s->steps, err);
    } else if (reply_is(name, "pipeline")) {
        if ((st = field_int(v, id, "pipeline", -1, INT32_MAX, &x, err)) == SDC_OK)
            s->pipeline = (int)x;
    } else if (reply_is(name, "created_ms")) {
        st = field_int(v, id, "created_ms", 0, INT64_MAX, &s->created_ms, err);
    } else if (reply_is(name, "updated_ms")) {
        st = field_int(v, id, "updated_ms", 0, INT64_MAX, &s->updated_ms, err);
    } else if (v->len > 0 && name->len > 3 && memcmp(name->str + name->len - 3, "_ms", 3) == 0 &&
               sdc_job_state_parse(name->str, name->len - 3) >= 0) {
        int state = sdc_job_state_parse(name->str, name->len - 3);
        st = field_int(v, id, sdc_job_state_name((sdc_job_state_t)state), 0, INT64_MAX,
                       &s->state_ms[state], err);
    } else if (reply_is(name, "entry")) {
        copy_str(v, s->entry_id, sizeof(s->entry_id));
    } else if (reply_is(name, "owner")) {
        copy_str(v, s->owner, sizeof(s->owner));
    } else if (reply_is(name, "error")) {
        copy_str(v, s->error, sizeof(s->error));
    } else if (reply_is(name, "result")) {
        s->has_result = 1;
    } else if (reply_is(name, "encoder")) {
        /* "<attempt>:<node>"; kept until the attempt is known, see sdc_job_get */
        copy_str(v, s->encoder, sizeof(s->encoder));
    } else if (reply_is(name, "decoder")) {
        copy_str(v, s->decoder, sizeof(s->decoder));
    }
    return st;
}

/* A holder field names an attempt: only the current one's counts. */
static void holder_current(const sdc_job_status_t *s, char *holder)
{
    char *colon = strchr(holder, ':');
    char want[24];
    snprintf(want, sizeof(want), "%" PRId64, s->attempt);
    if (!colon || (size_t)(colon - holder) != strlen(want) ||
        strncmp(holder, want, strlen(want)) != 0) {
        holder[0] = '\0';
        return;
    }
    memmove(holder, colon + 1, strlen(colon + 1) + 1);
}

sdc_status_t sdc_job_get(sdc_jobs_t *q, const char *id, sdc_job_status_t *s, sdc_error_t *err)
{
    job_keys_t k;
    redisReply *rep;
    memset(s, 0, sizeof(*s));
    s->pipeline = -1;
    sdc_status_t st = job_keys(q, id, &k, err);
    if (st == SDC_OK)
        st = sdc_redis_command(q->r, &rep, err, "HGETALL %s", k.job);
    if (st != SDC_OK)
        return st;
    unsigned seen = 0;
    if ((st = sdc_redis_expect(rep, REDIS_REPLY_ARRAY, "HGETALL job", err)) != SDC_OK)
        goto out;
    if (rep->elements == 0) {
        st = sdc_error_set(err, SDC_ERR_NOT_FOUND, "job %s: no such job", id);
        goto out;
    }
    if (rep->elements % 2) {
        st = sdc_error_set(err, SDC_ERR_FORMAT, "job %s: HGETALL: odd reply", id);
        goto out;
    }
    for (size_t i = 0; i < rep->elements && st == SDC_OK; i += 2) {
        const redisReply *name = rep->element[i], *v = rep->element[i + 1];
        if ((st = sdc_redis_expect(name, REDIS_REPLY_STRING, "job field name", err)) == SDC_OK &&
            (st = sdc_redis_expect(v, REDIS_REPLY_STRING, "job field value", err)) == SDC_OK)
            st = status_field(s, id, name, v, &seen, err);
    }
    if (st == SDC_OK && seen != 3)
        st = sdc_error_set(err, SDC_ERR_FORMAT, "job %s: hash without %s", id,
                           seen & 1 ? "attempt" : "state");
    if (st == SDC_OK) {
        holder_current(s, s->encoder);
        holder_current(s, s->decoder);
    }
out:
    sdc_redis_reply_free(rep);
    return st;
}

sdc_status_t sdc_job_set_holder(sdc_jobs_t *q, const char *id, int64_t attempt,
                                sdc_job_state_t state, const char *node, int *stored,
                                sdc_error_t *err)
{
    job_keys_t k;
    char att[24];
    redisReply *rep;
    *stored = 0;
    sdc_status_t st = job_keys(q, id, &k, err);
    if (st == SDC_OK)
        st = sdc_job_id_check(node, "node id", err);
    if (st == SDC_OK && state != SDC_JOB_ENCODING && state != SDC_JOB_DECODING)
        st = sdc_error_set(err, SDC_ERR_INVALID_ARG, "job %s: only encoding and decoding have "
                           "holders", id);
    if (st != SDC_OK)
        return st;
    snprintf(att, sizeof(att), "%" PRId64, attempt);
    const char *field = state == SDC_JOB_ENCODING ? "encoder" : "decoder";
    const char *keys[] = {k.job};
    size_t klen[] = {strlen(k.job)};
    const char *args[] = {att, node, state_names[state], field};
    size_t alen[] = {strlen(att), strlen(node), strlen(state_names[state]), strlen(field)};
    st = sdc_redis_eval(q->r, &script_holder, 1, keys, klen, 4, args, alen, &rep, err);
    if (st != SDC_OK)
        return sdc_error_wrap(err, "job %s: recording its %s", id, field);
    st = sdc_redis_expect(rep, REDIS_REPLY_INTEGER, "holder script", err);
    if (st == SDC_OK)
        *stored = rep->integer == 1;
    sdc_redis_reply_free(rep);
    return st;
}

sdc_status_t sdc_job_get_params(sdc_jobs_t *q, const char *id, sdc_job_params_t *p,
                                sdc_error_t *err)
{
    job_keys_t k;
    redisReply *rep;
    sdc_job_params_init(p);
    sdc_status_t st = job_keys(q, id, &k, err);
    if (st == SDC_OK)
        st = sdc_redis_command(q->r, &rep, err, "HGET %s params", k.job);
    if (st != SDC_OK)
        return st;
    if (rep->type == REDIS_REPLY_NIL)
        st = sdc_error_set(err, SDC_ERR_NOT_FOUND, "job %s: no such job", id);
    else if ((st = sdc_redis_expect(rep, REDIS_REPLY_STRING, "job params", err)) == SDC_OK &&
             (st = sdc_job_params_parse(p, rep->str, rep->len, err)) != SDC_OK)
        sdc_error_wrap(err, "job %s: stored params", id);
    sdc_redis_reply_free(rep);
    return st;
}

/* The stored bytes of p's image, checked against p's size and CRC-32C. */
static sdc_status_t image_fetch(sdc_jobs_t *q, const sdc_job_params_t *p, const job_keys_t *k,
                                redisReply **out, sdc_error_t *err)
{
    redisReply *rep;
    long long n = 0;
    sdc_status_t st = sdc_redis_command(q->r, &rep, err, "STRLEN %s", k->image);
    if (st != SDC_OK)
        return st;
    st = sdc_redis_expect(rep, REDIS_REPLY_INTEGER, "STRLEN image", err);
    if (st == SDC_OK)
        n = rep->integer;
    sdc_redis_reply_free(rep);
    if (st != SDC_OK)
        return st;
    if (n == 0)
        return sdc_error_set(err, SDC_ERR_NOT_FOUND, "its input image (%s) is not in Redis",
                             k->image);
    if ((unsigned long long)n > q->max_image_bytes)
        return sdc_error_set(err, SDC_ERR_RANGE, "its input image of %lld bytes is over this "
                             "cluster's limit of %zu bytes (max_image_bytes)", n,
                             q->max_image_bytes);
    if ((st = sdc_redis_command(q->r, &rep, err, "GET %s", k->image)) != SDC_OK)
        return st;
    if (rep->type == REDIS_REPLY_NIL)
        st = sdc_error_set(err, SDC_ERR_NOT_FOUND, "its input image (%s) is not in Redis",
                           k->image);
    else
        st = sdc_redis_expect(rep, REDIS_REPLY_STRING, "GET image", err);
    uint32_t crc = st == SDC_OK ? sdc_wire_crc32c(0, rep->str, rep->len) : 0;
    if (st == SDC_OK && (rep->len != p->image_bytes || crc != p->image_crc32c))
        st = sdc_error_set(err, SDC_ERR_FORMAT, "its stored input image (%zu bytes, CRC-32C "
                           "%08" PRIx32 ") is not the one its parameters name (%zu bytes, "
                           "%08" PRIx32 ")", rep->len, crc, p->image_bytes, p->image_crc32c);
    if (st != SDC_OK) {
        sdc_redis_reply_free(rep);
        return st;
    }
    *out = rep;
    return SDC_OK;
}

sdc_status_t sdc_job_image_load(sdc_jobs_t *q, const sdc_job_params_t *p, uint8_t **rgb,
                                sdc_error_t *err)
{
    job_keys_t k;
    redisReply *rep = NULL;
    int w = 0, h = 0;
    *rgb = NULL;
    sdc_status_t st = job_keys(q, p->id, &k, err);
    if (st != SDC_OK)
        return st;
    if (!p->image_bytes)
        st = sdc_error_set(err, SDC_ERR_INVALID_ARG, "no input image in its parameters");
    else if (p->image_bytes > q->max_image_bytes)
        st = sdc_error_set(err, SDC_ERR_RANGE, "its input image of %zu bytes is over this "
                           "cluster's limit of %zu bytes (max_image_bytes)", p->image_bytes,
                           q->max_image_bytes);
    else
        st = image_fetch(q, p, &k, &rep, err);
    if (st == SDC_OK) {
        st = sdc_image_decode((const uint8_t *)rep->str, rep->len,
                              (size_t)SDC_JOB_SIDE_MAX * SDC_JOB_SIDE_MAX, rgb, &w, &h, err);
        if (st != SDC_OK)
            sdc_error_wrap(err, "its input image");
        sdc_redis_reply_free(rep);
    }
    if (st == SDC_OK && (w != p->width || h != p->height))
        st = sdc_error_set(err, SDC_ERR_INVALID_ARG, "its input image is %dx%d but the job's "
                           "size is %dx%d (WxH)", w, h, p->width, p->height);
    if (st != SDC_OK) {
        free(*rgb);
        *rgb = NULL;
        if (st != SDC_ERR_IO)
            sdc_error_wrap(err, "job %s", p->id);
    }
    return st;
}

sdc_status_t sdc_job_result_get(sdc_jobs_t *q, const char *id, unsigned char **data,
                                size_t *len, sdc_error_t *err)
{
    job_keys_t k;
    redisReply *rep;
    *data = NULL;
    *len = 0;
    sdc_status_t st = job_keys(q, id, &k, err);
    if (st == SDC_OK)
        st = sdc_redis_command(q->r, &rep, err, "GET %s", k.result);
    if (st != SDC_OK)
        return st;
    if (rep->type == REDIS_REPLY_NIL)
        st = sdc_error_set(err, SDC_ERR_NOT_FOUND, "job %s: no result (not done, or expired)", id);
    else
        st = sdc_redis_expect(rep, REDIS_REPLY_STRING, "job result", err);
    if (st == SDC_OK) {
        *data = malloc(rep->len ? rep->len : 1);
        if (!*data)
            st = sdc_error_set(err, SDC_ERR_NOMEM, "job %s: out of memory for the result", id);
        else
            memcpy(*data, rep->str, rep->len), *len = rep->len;
    }
    sdc_redis_reply_free(rep);
    return st;
}

sdc_status_t sdc_jobs_depth(sdc_jobs_t *q, sdc_queue_depth_t *d, sdc_error_t *err)
{
    char stream[KEY_MAX];
    redisReply *rep;
    long long len = 0;
    memset(d, 0, sizeof(*d));
    sdc_status_t st = sdc_redis_key(q->r, stream, sizeof(stream), err, "jobs");
    if (st == SDC_OK)
        st = sdc_redis_command(q->r, &rep, err, "XLEN %s", stream);
    if (st != SDC_OK)
        return st;
    if ((st = sdc_redis_expect(rep, REDIS_REPLY_INTEGER, "XLEN", err)) == SDC_OK)
        len = rep->integer;
    sdc_redis_reply_free(rep);
    if (st != SDC_OK)
        return st;
    if ((st = sdc_redis_command(q->r, &rep, err, "XPENDING %s %s", stream, q->group)) != SDC_OK)
        return st;
    /* [count, smallest id | nil, largest id | nil, [[consumer, count], ...] | nil] */
    if ((st = sdc_redis_expect_array(rep, 4, "XPENDING", err)) == SDC_OK &&
        (st = sdc_redis_expect(rep->element[0], REDIS_REPLY_INTEGER, "XPENDING count", err)) ==
            SDC_OK) {
        d->length = len;
        d->pending = rep->element[0]->integer;
        d->waiting = len > d->pending ? len - d->pending : 0;
    }
    sdc_redis_reply_free(rep);
    return st;
}

/* ---- nodes ------------------------------------------------------------------ */

static const char *const role_names[SDC_ROLE_COUNT] = {
    [SDC_ROLE_COORDINATOR] = "coordinator", [SDC_ROLE_TEXT_ENCODER] = "text-encoder",
    [SDC_ROLE_DIT_STAGE] = "dit-stage",     [SDC_ROLE_VAE] = "vae",
    [SDC_ROLE_REFINER] = "refiner",         [SDC_ROLE_GATEWAY] = "gateway",
};

const char *sdc_node_role_name(sdc_node_role_t role)
{
    return (unsigned)role < SDC_ROLE_COUNT ? role_names[role] : "unknown";
}

int sdc_node_role_parse(const char *name, size_t len)
{
    for (int i = 0; i < SDC_ROLE_COUNT; i++)
        if (strlen(role_names[i]) == len && memcmp(role_names[i], name, len) == 0)
            return i;
    return -1;
}

static sdc_status_t node_check(const sdc_node_t *n, sdc_error_t *err)
{
    sdc_status_t st = sdc_job_id_check(n->id, "node id", err);
    if (st != SDC_OK)
        return st;
    if ((unsigned)n->role >= SDC_ROLE_COUNT)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "node %s: role %d unknown", n->id,
                             (int)n->role);
    if (n->address_len > SDC_NODE_ADDRESS_MAX || (n->address_len && !n->address))
        return sdc_error_set(err, SDC_ERR_RANGE, "node %s: address of %zu bytes (at most %d)",
                             n->id, n->address_len, SDC_NODE_ADDRESS_MAX);
    if (n->pipeline < -1 || n->stage < -1)
        return sdc_error_set(err, SDC_ERR_RANGE, "node %s: pipeline %d / stage %d below -1",
                             n->id, n->pipeline, n->stage);
    if (!(n->load >= 0) || !isfinite(n->load))
        return sdc_error_set(err, SDC_ERR_RANGE, "node %s: load %g is not a finite number >= 0",
                             n->id, n->load);
    return SDC_OK;
}

typedef struct {
    const sdc_node_t *n;
    const char *key;
    int64_t ttl_ms;
} node_reg_t;

static sdc_status_t node_register_fn(sdc_redis_t *r, void *vctx, sdc_error_t *err)
{
    node_reg_t *c = vctx;
    const sdc_node_t *n = c->n;
    char load[32];
    snprintf(load, sizeof(load), "%.17g", n->load);
    static const unsigned char empty = 0;
    const unsigned char *addr = n->address_len ? n->address : &empty;
    sdc_status_t st = expect_status(r, "MULTI", err, "MULTI");
    if (st == SDC_OK)
        st = expect_status(r, "HSET node", err,
                           "HSET %s role %s address %b pipeline %d stage %d load %s "
                           "heartbeat_ms %lld draining %d", c->key, sdc_node_role_name(n->role),
                           addr, n->address_len, n->pipeline, n->stage, load,
                           (long long)wall_ms(), n->draining ? 1 : 0);
    if (st == SDC_OK)
        st = expect_status(r, "PEXPIRE node", err, "PEXPIRE %s %lld", c->key,
                           (long long)c->ttl_ms);
    if (st != SDC_OK) {
        tx_reset(r, 1);
        return st;
    }
    redisReply *rep;
    if ((st = sdc_redis_command(r, &rep, err, "EXEC")) != SDC_OK)
        return st;
    if ((st = sdc_redis_expect_array(rep, 2, "EXEC (node)", err)) == SDC_OK &&
        (st = sdc_redis_expect(rep->element[0], REDIS_REPLY_INTEGER, "HSET", err)) == SDC_OK)
        st = sdc_redis_expect(rep->element[1], REDIS_REPLY_INTEGER, "PEXPIRE", err);
    sdc_redis_reply_free(rep);
    return st;
}

sdc_status_t sdc_node_register(sdc_redis_t *r, const sdc_node_t *n, int64_t ttl_ms,
                               sdc_error_t *err)
{
    char key[KEY_MAX];
    sdc_status_t st = node_check(n, err);
    if (st != SDC_OK)
        return st;
    if (ttl_ms < 1 || ttl_ms > 24 * 3600 * 1000LL)
        return sdc_error_set(err, SDC_ERR_RANGE, "node %s: TTL %" PRId64 " ms outside 1 ms..1 day",
                             n->id, ttl_ms);
    if ((st = sdc_redis_key(r, key, sizeof(key), err, "node:%s", n->id)) != SDC_OK)
        return st;
    node_reg_t c = {n, key, ttl_ms};
    return sdc_redis_retry(r, node_register_fn, &c, err);
}

sdc_status_t sdc_node_remove(sdc_redis_t *r, const char *id, sdc_error_t *err)
{
    char key[KEY_MAX];
    redisReply *rep;
    sdc_status_t st = sdc_job_id_check(id, "node id", err);
    if (st == SDC_OK)
        st = sdc_redis_key(r, key, sizeof(key), err, "node:%s", id);
    if (st == SDC_OK)
        st = sdc_redis_command(r, &rep, err, "DEL %s", key);
    if (st != SDC_OK)
        return st;
    st = sdc_redis_expect(rep, REDIS_REPLY_INTEGER, "DEL node", err);
    sdc_redis_reply_free(rep);
    return st;
}

void sdc_nodes_free(sdc_node_t *nodes, size_t n)
{
    for (size_t i = 0; nodes && i < n; i++)
        free(nodes[i].address);
    free(nodes);
}

/* Fills n from an HGETALL reply; SDC_ERR_FORMAT names the bad field. */
static sdc_status_t node_parse(sdc_node_t *n, const redisReply *h, sdc_error_t *err)
{
    unsigned seen = 0;
    long long x;
    char *end;
    if (h->elements % 2)
        return sdc_error_set(err, SDC_ERR_FORMAT, "odd HGETALL reply");
    for (size_t i = 0; i < h->elements; i += 2) {
        const redisReply *k = h->element[i], *v = h->element[i + 1];
        sdc_status_t st = SDC_OK;
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            return sdc_error_set(err, SDC_ERR_FORMAT, "non-string field");
        if (reply_is(k, "role")) {
            int role = sdc_node_role_parse(v->str, v->len);
            if (role < 0)
                return sdc_error_set(err, SDC_ERR_FORMAT, "unknown role '%.32s'", v->str);
            n->role = (sdc_node_role_t)role;
            seen |= 1;
        } else if (reply_is(k, "address")) {
            if (v->len > SDC_NODE_ADDRESS_MAX)
                return sdc_error_set(err, SDC_ERR_FORMAT, "address of %zu bytes", v->len);
            free(n->address);
            n->address = malloc(v->len ? v->len : 1);
            if (!n->address)
                return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
            memcpy(n->address, v->str, v->len);
            n->address_len = v->len;
            seen |= 2;
        } else if (reply_is(k, "pipeline") || reply_is(k, "stage")) {
            st = sdc_redis_reply_int(v, k->str, &x, err);
            if (st == SDC_OK && (x < -1 || x > INT32_MAX))
                st = sdc_error_set(err, SDC_ERR_FORMAT, "%s %lld out of range", k->str, x);
            if (st == SDC_OK)
                *(reply_is(k, "stage") ? &n->stage : &n->pipeline) = (int)x;
        } else if (reply_is(k, "load")) {
            errno = 0;
            n->load = strtod(v->str, &end);
            if (errno || end != v->str + v->len || v->len == 0 || !(n->load >= 0) ||
                !isfinite(n->load))
                return sdc_error_set(err, SDC_ERR_FORMAT, "load '%.32s' is not a number >= 0",
                                     v->str);
        } else if (reply_is(k, "heartbeat_ms")) {
            if ((st = sdc_redis_reply_int(v, "heartbeat_ms", &x, err)) == SDC_OK)
                n->heartbeat_ms = x;
        } else if (reply_is(k, "draining")) {
            if ((st = sdc_redis_reply_int(v, "draining", &x, err)) == SDC_OK)
                n->draining = x != 0;
        }
        if (st != SDC_OK)
            return st;
    }
    if (seen != 3)
        return sdc_error_set(err, SDC_ERR_FORMAT, "no %s field", seen & 1 ? "address" : "role");
    return SDC_OK;
}

/* MATCH pattern for prefix + "node:*", the prefix's glob characters escaped. */
static sdc_status_t node_pattern(sdc_redis_t *r, char *buf, size_t cap, sdc_error_t *err)
{
    const char *p = sdc_redis_prefix(r);
    size_t o = 0;
    for (; *p; p++) {
        if (o + 2 >= cap)
            return sdc_error_set(err, SDC_ERR_RANGE, "node key pattern too long");
        if (strchr("*?[]\\", *p))
            buf[o++] = '\\';
        buf[o++] = *p;
    }
    if (o + sizeof("node:*") > cap)
        return sdc_error_set(err, SDC_ERR_RANGE, "node key pattern too long");
    memcpy(buf + o, "node:*", sizeof("node:*"));
    return SDC_OK;
}

typedef struct {
    char **keys;
    size_t n, cap;
} key_set_t;

static void key_set_free(key_set_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->keys[i]);
    free(s->keys);
}

/* SCAN may return a key more than once; duplicates are kept out here. */
static sdc_status_t key_set_add(key_set_t *s, const redisReply *k, sdc_error_t *err)
{
    for (size_t i = 0; i < s->n; i++)
        if (reply_is(k, s->keys[i]))
            return SDC_OK;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        char **grown = realloc(s->keys, cap * sizeof(*grown));
        if (!grown)
            return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory listing nodes");
        s->keys = grown;
        s->cap = cap;
    }
    if (!(s->keys[s->n] = strndup(k->str, k->len)))
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory listing nodes");
    s->n++;
    return SDC_OK;
}

static sdc_status_t scan_nodes(sdc_redis_t *r, key_set_t *keys, sdc_error_t *err)
{
    char pattern[2 * SDC_REDIS_PREFIX_MAX + 16], cursor[24] = "0";
    sdc_status_t st = node_pattern(r, pattern, sizeof(pattern), err);
    /* SCAN ends when the cursor comes back to 0; the bound guards a server
     * that never says so. */
    for (int round = 0; st == SDC_OK && round < 100000; round++) {
        redisReply *rep;
        st = sdc_redis_command(r, &rep, err, "SCAN %s MATCH %s COUNT 512 TYPE hash", cursor,
                               pattern);
        if (st != SDC_OK)
            return st;
        if ((st = sdc_redis_expect_array(rep, 2, "SCAN", err)) == SDC_OK &&
            (st = sdc_redis_expect(rep->element[0], REDIS_REPLY_STRING, "SCAN cursor", err)) ==
                SDC_OK &&
            (st = sdc_redis_expect(rep->element[1], REDIS_REPLY_ARRAY, "SCAN keys", err)) ==
                SDC_OK) {
            if (rep->element[0]->len >= sizeof(cursor))
                st = sdc_error_set(err, SDC_ERR_FORMAT, "SCAN cursor too long");
            else
                copy_str(rep->element[0], cursor, sizeof(cursor));
            const redisReply *ks = rep->element[1];
            for (size_t i = 0; st == SDC_OK && i < ks->elements; i++)
                if ((st = sdc_redis_expect(ks->element[i], REDIS_REPLY_STRING, "SCAN key", err)) ==
                    SDC_OK)
                    st = key_set_add(keys, ks->element[i], err);
        }
        sdc_redis_reply_free(rep);
        if (st == SDC_OK && strcmp(cursor, "0") == 0)
            return SDC_OK;
    }
    return st != SDC_OK ? st : sdc_error_set(err, SDC_ERR_IO, "SCAN did not finish");
}

/* Reads one node key; *found = 0 when it expired meanwhile or is malformed
 * (with a warning). */
static sdc_status_t read_node(sdc_redis_t *r, const char *key, sdc_node_t *n, int *found,
                              sdc_error_t *err)
{
    size_t skip = strlen(sdc_redis_prefix(r)) + strlen("node:");
    sdc_error_t perr;
    memset(n, 0, sizeof(*n));
    n->pipeline = n->stage = -1;
    *found = 0;
    if (strlen(key) <= skip || sdc_job_id_check(key + skip, "node id", &perr) != SDC_OK) {
        SDC_WARN("node registry: skipping key '%.80s': not a node id", key);
        return SDC_OK;
    }
    strcpy(n->id, key + skip);
    redisReply *rep;
    sdc_status_t st = sdc_redis_command(r, &rep, err, "HGETALL %s", key);
    if (st != SDC_OK)
        return st;
    if ((st = sdc_redis_expect(rep, REDIS_REPLY_ARRAY, "HGETALL node", err)) == SDC_OK &&
        rep->elements > 0) {
        if (node_parse(n, rep, &perr) == SDC_OK)
            *found = 1;
        else
            SDC_WARN("node registry: skipping node %s: %s", n->id, perr.msg);
    }
    sdc_redis_reply_free(rep);
    if (!*found) {
        free(n->address);
        n->address = NULL;
    }
    return st;
}

sdc_status_t sdc_node_list(sdc_redis_t *r, sdc_node_t **nodes, size_t *n, sdc_error_t *err)
{
    key_set_t keys = {0};
    *nodes = NULL;
    *n = 0;
    sdc_status_t st = scan_nodes(r, &keys, err);
    sdc_node_t *out = NULL;
    size_t count = 0;
    if (st == SDC_OK && keys.n && !(out = calloc(keys.n, sizeof(*out))))
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory listing nodes");
    for (size_t i = 0; st == SDC_OK && i < keys.n; i++) {
        int found;
        st = read_node(r, keys.keys[i], &out[count], &found, err);
        count += (size_t)found;
    }
    key_set_free(&keys);
    if (st != SDC_OK) {
        sdc_nodes_free(out, count);
        return st;
    }
    *nodes = out;
    *n = count;
    return SDC_OK;
}

/* ---- leader lease ---------------------------------------------------------- */

static sdc_status_t lease_args(sdc_redis_t *r, const char *id, int64_t ttl_ms, char *key,
                               sdc_error_t *err)
{
    sdc_status_t st = sdc_job_id_check(id, "leader id", err);
    if (st != SDC_OK)
        return st;
    if (ttl_ms < 1 || ttl_ms > 24 * 3600 * 1000LL)
        return sdc_error_set(err, SDC_ERR_RANGE, "leader lease of %" PRId64 " ms outside "
                             "1 ms..1 day", ttl_ms);
    return sdc_redis_key(r, key, KEY_MAX, err, "leader");
}

static sdc_status_t lease_script(sdc_redis_t *r, const sdc_redis_script_t *s, const char *key,
                                 const char *id, int64_t ttl_ms, int *ok, sdc_error_t *err)
{
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%" PRId64, ttl_ms);
    const char *keys[] = {key}, *args[] = {id, ttl};
    size_t klen[] = {strlen(key)}, alen[] = {strlen(id), strlen(ttl)};
    redisReply *rep;
    sdc_status_t st = sdc_redis_eval(r, s, 1, keys, klen, 2, args, alen, &rep, err);
    if (st != SDC_OK)
        return st;
    if ((st = sdc_redis_expect(rep, REDIS_REPLY_INTEGER, s->name, err)) == SDC_OK)
        *ok = rep->integer == 1;
    sdc_redis_reply_free(rep);
    return st;
}

sdc_status_t sdc_leader_renew(sdc_redis_t *r, const char *id, int64_t ttl_ms, int *is_leader,
                              sdc_error_t *err)
{
    char key[KEY_MAX];
    *is_leader = 0;
    sdc_status_t st = lease_args(r, id, ttl_ms, key, err);
    return st != SDC_OK ? st : lease_script(r, &script_renew, key, id, ttl_ms, is_leader, err);
}

sdc_status_t sdc_leader_acquire(sdc_redis_t *r, const char *id, int64_t ttl_ms, int *is_leader,
                                sdc_error_t *err)
{
    char key[KEY_MAX];
    redisReply *rep;
    *is_leader = 0;
    sdc_status_t st = lease_args(r, id, ttl_ms, key, err);
    if (st == SDC_OK)
        st = sdc_redis_command(r, &rep, err, "SET %s %s NX PX %lld", key, id, (long long)ttl_ms);
    if (st != SDC_OK)
        return st;
    int taken = rep->type == REDIS_REPLY_NIL;
    if (!taken)
        st = sdc_redis_expect(rep, REDIS_REPLY_STATUS, "SET leader NX", err);
    sdc_redis_reply_free(rep);
    if (st != SDC_OK)
        return st;
    if (!taken) {
        *is_leader = 1;
        return SDC_OK;
    }
    /* Held: by us when an earlier acquire's reply was lost, or we already
     * led; then this is a renewal. */
    return lease_script(r, &script_renew, key, id, ttl_ms, is_leader, err);
}

sdc_status_t sdc_leader_release(sdc_redis_t *r, const char *id, int *released, sdc_error_t *err)
{
    char key[KEY_MAX];
    *released = 0;
    sdc_status_t st = lease_args(r, id, 1, key, err);
    return st != SDC_OK ? st : lease_script(r, &script_release, key, id, 1, released, err);
}

sdc_status_t sdc_leader_get(sdc_redis_t *r, char out[SDC_JOB_ID_MAX + 1], int *present,
                            sdc_error_t *err)
{
    char key[KEY_MAX];
    redisReply *rep;
    out[0] = '\0';
    *present = 0;
    sdc_status_t st = sdc_redis_key(r, key, sizeof(key), err, "leader");
    if (st == SDC_OK)
        st = sdc_redis_command(r, &rep, err, "GET %s", key);
    if (st != SDC_OK)
        return st;
    if (rep->type != REDIS_REPLY_NIL &&
        (st = sdc_redis_expect(rep, REDIS_REPLY_STRING, "GET leader", err)) == SDC_OK) {
        if (rep->len > SDC_JOB_ID_MAX || rep->len != strlen(rep->str))
            st = sdc_error_set(err, SDC_ERR_FORMAT, "leader key holds a %zu-byte value, not an id",
                               rep->len);
        else
            memcpy(out, rep->str, rep->len + 1), *present = 1;
    }
    sdc_redis_reply_free(rep);
    return st;
}
