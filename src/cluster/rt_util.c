/*
 * rt_util.c: the pieces every role shares (see rt_internal.h): node ids,
 * the memory of finished jobs, building and reading tensor messages, and
 * reporting a job's failure.
 */
#include "rt_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

/* ---- identity --------------------------------------------------------------- */

void sdc_rt_node_id(const sdc_cluster_t *cf, int node, char out[SDC_JOB_ID_MAX + 1])
{
    snprintf(out, SDC_JOB_ID_MAX + 1, "%s-%d", sdc_role_name(cf->nodes[node].role), node);
}

int sdc_rt_node_index(const sdc_cluster_t *cf, const char *id)
{
    const char *dash = strrchr(id, '-');
    if (!dash || dash[1] < '0' || dash[1] > '9')
        return -1;
    char *end;
    long i = strtol(dash + 1, &end, 10);
    if (*end || i < 0 || i >= cf->n_nodes)
        return -1;
    char want[SDC_JOB_ID_MAX + 1];
    sdc_rt_node_id(cf, (int)i, want);
    return strcmp(want, id) == 0 ? (int)i : -1;
}

/* ---- finished jobs ---------------------------------------------------------- */

void sdc_rt_retire(sdc_rt_retired_t *r, const char *id, uint32_t attempt)
{
    snprintf(r->id[r->next], sizeof(r->id[0]), "%s", id);
    r->attempt[r->next] = attempt;
    r->next = (r->next + 1) % SDC_RT_RETIRED;
    if (r->n < SDC_RT_RETIRED)
        r->n++;
}

uint32_t sdc_rt_retired_attempt(const sdc_rt_retired_t *r, const char *id)
{
    uint32_t best = 0;
    for (int i = 0; i < r->n; i++)
        if (r->attempt[i] > best && strcmp(r->id[i], id) == 0)
            best = r->attempt[i];
    return best;
}

sdc_wire_job_state_t sdc_rt_learned_state(const sdc_rt_retired_t *r, uint32_t active_attempt,
                                          const char *id, uint32_t attempt)
{
    if (active_attempt)
        return attempt < active_attempt ? SDC_WIRE_JOB_STALE : SDC_WIRE_JOB_CURRENT;
    uint32_t done = sdc_rt_retired_attempt(r, id);
    return done && attempt <= done ? SDC_WIRE_JOB_STALE : SDC_WIRE_JOB_CURRENT;
}

/* ---- tensor messages ------------------------------------------------------ */

sdc_status_t sdc_rt_tb_init(sdc_rt_tb_t *tb, size_t max_samples, size_t max_tensors,
                            sdc_error_t *err)
{
    memset(tb, 0, sizeof(*tb));
    sdc__tensor_header__init(&tb->h);
    tb->samples = calloc(max_samples, sizeof(*tb->samples));
    tb->sample_ptrs = calloc(max_samples, sizeof(*tb->sample_ptrs));
    tb->descs = calloc(max_tensors, sizeof(*tb->descs));
    tb->desc_ptrs = calloc(max_tensors, sizeof(*tb->desc_ptrs));
    tb->shapes = calloc(max_tensors, sizeof(*tb->shapes));
    if (!tb->samples || !tb->sample_ptrs || !tb->descs || !tb->desc_ptrs || !tb->shapes) {
        sdc_rt_tb_free(tb);
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory building a message");
    }
    tb->cap_samples = max_samples;
    tb->cap_descs = max_tensors;
    tb->h.samples = tb->sample_ptrs;
    tb->h.tensors = tb->desc_ptrs;
    return SDC_OK;
}

void sdc_rt_tb_free(sdc_rt_tb_t *tb)
{
    free(tb->samples);
    free(tb->sample_ptrs);
    free(tb->descs);
    free(tb->desc_ptrs);
    free(tb->shapes);
    memset(tb, 0, sizeof(*tb));
}

Sdc__Sample *sdc_rt_tb_sample(sdc_rt_tb_t *tb)
{
    if (tb->h.n_samples == tb->cap_samples)
        return NULL;
    Sdc__Sample *s = &tb->samples[tb->h.n_samples];
    sdc__sample__init(s);
    tb->sample_ptrs[tb->h.n_samples++] = s;
    return s;
}

int sdc_rt_tb_tensor(sdc_rt_tb_t *tb, uint32_t sample, const char *name, Sdc__DType dtype,
                     int ndim, const int64_t *shape)
{
    if (tb->h.n_tensors == tb->cap_descs || ndim < 1 || ndim > 3)
        return -1;
    size_t i = tb->h.n_tensors++;
    Sdc__TensorDesc *d = &tb->descs[i];
    sdc__tensor_desc__init(d);
    d->sample = sample;
    d->name = (char *)name;
    d->dtype = dtype;
    memcpy(tb->shapes[i], shape, (size_t)ndim * sizeof(int64_t));
    d->shape = tb->shapes[i];
    d->n_shape = (size_t)ndim;
    tb->desc_ptrs[i] = d;
    return (int)i;
}

sdc_status_t sdc_rt_tb_layout(sdc_rt_tb_t *tb, uint8_t **payload, sdc_error_t *err)
{
    sdc_status_t st = sdc_wire_layout(&tb->h, SDC_RT_ALIGN, err);
    if (st != SDC_OK)
        return st;
    void *p;
    st = sdc_ucx_buf_alloc(tb->h.payload_bytes, &p, err);
    if (st != SDC_OK)
        return st;
    /* Zeroed: alignment gaps are checksummed and sent too. */
    memset(p, 0, tb->h.payload_bytes);
    *payload = p;
    return SDC_OK;
}

static void tb_envelope(sdc_rt_t *rt, sdc_rt_tb_t *tb, Sdc__Envelope *env)
{
    sdc_wire_envelope_init(env, rt->id);
    env->msg_case = SDC__ENVELOPE__MSG_TENSOR;
    env->tensor = &tb->h;
}

sdc_status_t sdc_rt_tb_send(sdc_rt_t *rt, sdc_rt_tb_t *tb, int node, uint8_t *payload,
                            sdc_error_t *err)
{
    Sdc__Envelope env;
    sdc_rt_jobref_t jobs[SDC_WIRE_MAX_SAMPLES];
    int n = 0;
    for (size_t i = 0; i < tb->h.n_samples && n < (int)SDC_WIRE_MAX_SAMPLES; i++) {
        const Sdc__Sample *s = tb->h.samples[i];
        int seen = 0;
        for (int k = 0; k < n && !seen; k++)
            seen = strcmp(jobs[k].id, s->job_id) == 0;
        if (seen)
            continue;
        snprintf(jobs[n].id, sizeof(jobs[n].id), "%s", s->job_id);
        jobs[n++].attempt = s->attempt;
    }
    tb->h.checksum_case = SDC__TENSOR_HEADER__CHECKSUM_CRC32C;
    tb->h.crc32c = sdc_wire_crc32c(0, payload, tb->h.payload_bytes);
    tb_envelope(rt, tb, &env);
    return sdc_rt_send_jobs(rt, node, &env, payload, tb->h.payload_bytes, jobs, n, err);
}

sdc_status_t sdc_rt_mask_copy(const sdc_rt_msg_t *m, const Sdc__TensorDesc *t, uint8_t *out,
                              sdc_error_t *err)
{
    const uint8_t *p = sdc_rt_tensor_data(m, t);
    int64_t n = t->shape[0];
    for (int64_t i = 0; i < n; i++) {
        int64_t v;
        switch (t->dtype) {
        case SDC__DTYPE__DTYPE_I64: memcpy(&v, p + 8 * i, 8); break;
        case SDC__DTYPE__DTYPE_I32: { int32_t x; memcpy(&x, p + 4 * i, 4); v = x; break; }
        default: v = p[i]; break; /* U8, BOOL: wire.c admits no other mask dtype */
        }
        if (v != 0 && v != 1)
            return sdc_error_set(err, SDC_ERR_FORMAT, "'%s'[%lld] is %lld; masks hold 0 or 1",
                                 t->name, (long long)i, (long long)v);
        out[i] = (uint8_t)v;
    }
    return SDC_OK;
}

/* ---- reports --------------------------------------------------------------- */

void sdc_rt_drop(sdc_rt_t *rt, const sdc_rt_msg_t *m, const char *fmt, ...)
{
    char why[SDC_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    rt->dropped++;
    SDC_WARN("%s: dropped a %s from %s: %s", rt->id, sdc_wire_type_name(m->w.type),
             m->w.env->sender, why);
}

static void tell_error(sdc_rt_t *rt, const char *job_id, uint32_t attempt, sdc_status_t code,
                       const char *reason)
{
    char msg[SDC_WIRE_TEXT_MAX + 1];
    snprintf(msg, sizeof(msg), "%s", reason);
    Sdc__Envelope env;
    Sdc__Error e;
    sdc_wire_envelope_init(&env, rt->id);
    sdc__error__init(&e);
    e.job_id = (char *)job_id;
    e.attempt = attempt;
    e.code = code == SDC_OK ? SDC_ERR_INTERNAL : code;
    e.message = msg;
    env.msg_case = SDC__ENVELOPE__MSG_ERROR;
    env.error = &e;
    sdc_rt_tell_leader(rt, &env);
}

void sdc_rt_job_fail(sdc_rt_t *rt, const char *job_id, uint32_t attempt, sdc_status_t code,
                     const char *reason)
{
    char why[SDC_JOB_REASON_MAX + 1];
    sdc_error_t err = {0};
    sdc_job_outcome_t outcome;
    snprintf(why, sizeof(why), "%s: %s", rt->id, reason);
    SDC_WARN("%s: job %s attempt %u failed: %s", rt->id, job_id, attempt, reason);
    if (sdc_job_fail(&rt->q, job_id, attempt, why, &outcome, &err) != SDC_OK)
        SDC_WARN("%s: recording the failure of job %s: %s", rt->id, job_id, err.msg);
    else if (outcome == SDC_JOB_APPLIED)
        rt->metrics.jobs_failed++;
    tell_error(rt, job_id, attempt, code, why);
}

void sdc_rt_job_lost(sdc_rt_t *rt, const char *job_id, uint32_t attempt, const char *reason)
{
    SDC_WARN("%s: job %s attempt %u lost: %s", rt->id, job_id, attempt, reason);
    tell_error(rt, job_id, attempt, SDC_ERR_IO, reason);
}

void sdc_rt_job_done(sdc_rt_t *rt, const char *job_id, uint32_t attempt)
{
    char key[SDC_REDIS_KEY_MAX];
    sdc_error_t err = {0};
    if (sdc_redis_key(rt->redis, key, sizeof(key), &err, "result:%s", job_id) != SDC_OK)
        snprintf(key, sizeof(key), "result:%s", job_id);
    Sdc__Envelope env;
    Sdc__JobDone jd;
    sdc_wire_envelope_init(&env, rt->id);
    sdc__job_done__init(&jd);
    jd.job_id = (char *)job_id;
    jd.attempt = attempt;
    jd.result_key = key;
    env.msg_case = SDC__ENVELOPE__MSG_JOB_DONE;
    env.job_done = &jd;
    sdc_rt_tell_leader(rt, &env);
}
