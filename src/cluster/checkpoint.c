/*
 * checkpoint.c: the ckpt:<id> blob (format in checkpoint.h) and its Redis
 * reads and conditional writes.
 */
#include "checkpoint.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/jobs.h"
#include "cluster/wire.h"

#define CKPT_MAGIC "SDCK"
#define CKPT_VERSION 1u
/* Latent and momentum bound: 64 channels x 1024 x 1024 (a 32K image). */
#define CKPT_MAX_FLOATS (64LL << 20)

/* KEYS job, ckpt. ARGV 1 attempt, 2 TTL ms, 3 blob. */
static const sdc_redis_script_t script_put = {
    "checkpoint",
    "local s = redis.call('HMGET', KEYS[1], 'state', 'attempt')\n"
    "if s[1] ~= 'denoising' or s[2] ~= ARGV[1] then return 0 end\n"
    "redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])\n"
    "return 1\n",
};

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_i64(uint8_t *p, int64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)((uint64_t)v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static int64_t get_i64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return (int64_t)v;
}

/* Floats travel as their IEEE-754 bits, little-endian, like the wire. */
static void put_floats(uint8_t *p, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &x[i], 4);
        put_u32(p + 4 * i, b);
    }
}

static void get_floats(float *x, const uint8_t *p, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t b = get_u32(p + 4 * i);
        memcpy(&x[i], &b, 4);
    }
}

uint32_t sdc_ckpt_params_crc(const char *params_json)
{
    return sdc_wire_crc32c(0, params_json, strlen(params_json));
}

sdc_status_t sdc_ckpt_encode(const sdc_denoise_t *d, uint32_t params_crc, uint8_t **blob,
                             size_t *len, sdc_error_t *err)
{
    const sdc_guider_state_t *g = &d->guider_state;
    int64_t n = d->channels * d->h * d->w;
    int64_t m = g->has_momentum ? g->n : 0;
    if (g->has_momentum && (!g->momentum || g->n <= 0))
        return sdc_error_set(err, SDC_ERR_INTERNAL, "checkpoint: momentum flagged but no buffer");
    size_t total = SDC_CKPT_HEADER_BYTES + 4 * (size_t)(n + m) + 4;
    uint8_t *b = malloc(total);
    if (!b)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory for a %zu-byte checkpoint", total);
    memcpy(b, CKPT_MAGIC, 4);
    put_u32(b + 4, CKPT_VERSION);
    put_u32(b + 8, (uint32_t)d->step);
    put_u32(b + 12, (uint32_t)d->n_steps);
    put_u32(b + 16, params_crc);
    put_u32(b + 20, g->has_momentum ? 1u : 0u);
    put_i64(b + 24, d->channels);
    put_i64(b + 32, d->h);
    put_i64(b + 40, d->w);
    put_i64(b + 48, m);
    put_floats(b + SDC_CKPT_HEADER_BYTES, d->latent, n);
    if (m)
        put_floats(b + SDC_CKPT_HEADER_BYTES + 4 * n, g->momentum, m);
    put_u32(b + total - 4, sdc_wire_crc32c(0, b, total - 4));
    *blob = b;
    *len = total;
    return SDC_OK;
}

sdc_status_t sdc_ckpt_decode(const uint8_t *b, size_t len, uint32_t params_crc,
                             sdc_denoise_t *d, sdc_error_t *err)
{
    if (len < SDC_CKPT_HEADER_BYTES + 4 || memcmp(b, CKPT_MAGIC, 4) != 0)
        return sdc_error_set(err, SDC_ERR_FORMAT, "checkpoint: not a checkpoint (%zu bytes)", len);
    if (get_u32(b + len - 4) != sdc_wire_crc32c(0, b, len - 4))
        return sdc_error_set(err, SDC_ERR_FORMAT, "checkpoint: checksum mismatch");
    if (get_u32(b + 4) != CKPT_VERSION)
        return sdc_error_set(err, SDC_ERR_FORMAT, "checkpoint: version %u (this build reads %u)",
                             get_u32(b + 4), CKPT_VERSION);
    uint32_t step = get_u32(b + 8), steps = get_u32(b + 12), has_m = get_u32(b + 20);
    int64_t c = get_i64(b + 24), h = get_i64(b + 32), w = get_i64(b + 40), m = get_i64(b + 48);
    if (get_u32(b + 16) != params_crc)
        return sdc_error_set(err, SDC_ERR_FORMAT, "checkpoint: written for other parameters");
    if (c != d->channels || h != d->h || w != d->w || steps != (uint32_t)d->n_steps)
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "checkpoint: latent %" PRId64 "x%" PRId64 "x%" PRId64
                             ", %u steps; the job has %" PRId64 "x%" PRId64 "x%" PRId64 ", %d",
                             c, h, w, steps, d->channels, d->h, d->w, d->n_steps);
    if (step == 0 || step >= steps)
        return sdc_error_set(err, SDC_ERR_FORMAT, "checkpoint: step %u of %u", step, steps);
    int64_t n = c * h * w;
    if (has_m > 1 || m < 0 || m > CKPT_MAX_FLOATS || (has_m == 0) != (m == 0) ||
        len != SDC_CKPT_HEADER_BYTES + 4 * (size_t)(n + m) + 4)
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "checkpoint: %zu bytes do not hold %" PRId64 " + %" PRId64 " floats",
                             len, n, m);
    float *mom = NULL;
    if (m && !(mom = malloc((size_t)m * sizeof(float))))
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory restoring a checkpoint");
    get_floats(d->latent, b + SDC_CKPT_HEADER_BYTES, n);
    if (m)
        get_floats(mom, b + SDC_CKPT_HEADER_BYTES + 4 * n, m);
    sdc_guider_state_free(&d->guider_state);
    d->guider_state.momentum = mom;
    d->guider_state.n = m;
    d->guider_state.has_momentum = m > 0;
    d->step = (int)step;
    return SDC_OK;
}

static sdc_status_t ckpt_key(sdc_redis_t *r, const char *id, char *key, sdc_error_t *err)
{
    sdc_status_t st = sdc_job_id_check(id, "job id", err);
    if (st == SDC_OK)
        st = sdc_redis_key(r, key, SDC_REDIS_KEY_MAX, err, "ckpt:%s", id);
    return st;
}

sdc_status_t sdc_ckpt_put(sdc_redis_t *r, const char *id, int64_t attempt, const uint8_t *blob,
                          size_t len, int *stored, sdc_error_t *err)
{
    char job[SDC_REDIS_KEY_MAX], ckpt[SDC_REDIS_KEY_MAX], att[24], ttl[24];
    *stored = 0;
    sdc_status_t st = ckpt_key(r, id, ckpt, err);
    if (st == SDC_OK)
        st = sdc_redis_key(r, job, sizeof(job), err, "job:%s", id);
    if (st != SDC_OK)
        return st;
    snprintf(att, sizeof(att), "%" PRId64, attempt);
    snprintf(ttl, sizeof(ttl), "%lld", SDC_CKPT_TTL_MS);
    const char *keys[] = {job, ckpt};
    size_t klen[] = {strlen(job), strlen(ckpt)};
    const char *args[] = {att, ttl, (const char *)blob};
    size_t alen[] = {strlen(att), strlen(ttl), len};
    redisReply *rep;
    st = sdc_redis_eval(r, &script_put, 2, keys, klen, 3, args, alen, &rep, err);
    if (st != SDC_OK)
        return sdc_error_wrap(err, "job %s: checkpoint", id);
    st = sdc_redis_expect(rep, REDIS_REPLY_INTEGER, "checkpoint script", err);
    if (st == SDC_OK)
        *stored = rep->integer == 1;
    sdc_redis_reply_free(rep);
    return st;
}

sdc_status_t sdc_ckpt_get(sdc_redis_t *r, const char *id, uint8_t **blob, size_t *len,
                          sdc_error_t *err)
{
    char key[SDC_REDIS_KEY_MAX];
    redisReply *rep;
    *blob = NULL;
    *len = 0;
    sdc_status_t st = ckpt_key(r, id, key, err);
    if (st == SDC_OK)
        st = sdc_redis_command(r, &rep, err, "GET %s", key);
    if (st != SDC_OK)
        return st;
    if (rep->type == REDIS_REPLY_NIL)
        st = sdc_error_set(err, SDC_ERR_NOT_FOUND, "job %s: no checkpoint", id);
    else
        st = sdc_redis_expect(rep, REDIS_REPLY_STRING, "checkpoint", err);
    if (st == SDC_OK) {
        *blob = malloc(rep->len ? rep->len : 1);
        if (!*blob) {
            st = sdc_error_set(err, SDC_ERR_NOMEM, "job %s: out of memory for the checkpoint", id);
        } else {
            memcpy(*blob, rep->str, rep->len);
            *len = rep->len;
        }
    }
    sdc_redis_reply_free(rep);
    return st;
}

sdc_status_t sdc_ckpt_delete(sdc_redis_t *r, const char *id, sdc_error_t *err)
{
    char key[SDC_REDIS_KEY_MAX];
    redisReply *rep;
    sdc_status_t st = ckpt_key(r, id, key, err);
    if (st == SDC_OK)
        st = sdc_redis_command(r, &rep, err, "DEL %s", key);
    if (st != SDC_OK)
        return st;
    st = sdc_redis_expect(rep, REDIS_REPLY_INTEGER, "DEL checkpoint", err);
    sdc_redis_reply_free(rep);
    return st;
}
