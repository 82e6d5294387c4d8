/*
 * wire.c: framing, encoding and validation of sdc messages (see wire.h).
 *
 * Validation order matters for the reported fault: frame, protobuf parse,
 * envelope, then the message's own fields, and only for a well-formed
 * message the receiver's job table (so "stale" never hides "malformed").
 * Nothing here trusts a count or a length until it has been compared with
 * the limits; every rejection names the field and the value.
 */
#include "wire.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/tensor.h"

#define WIRE_MAGIC 0x46434453u /* "SDCF" read as little-endian u32 */

/* Masks may be stored in any of the integer types torch and numpy produce. */
#define MASK_DTYPES                                                                  \
    ((1u << SDC_DTYPE_BOOL) | (1u << SDC_DTYPE_U8) | (1u << SDC_DTYPE_I32) |          \
     (1u << SDC_DTYPE_I64))

typedef struct {
    const sdc_wire_limits_t *lim;
    sdc_wire_job_fn job;
    void *job_arg;
    size_t payload_len;
    sdc_wire_msg_t *msg;
    sdc_error_t *err;
} check_ctx_t;

/* ---- names and status ------------------------------------------------------ */

static const struct {
    const char *name;
    sdc_status_t status;
} fault_info[] = {
    [SDC_WIRE_FAULT_NONE] = {"none", SDC_OK},
    [SDC_WIRE_FAULT_TRUNCATED] = {"truncated", SDC_ERR_FORMAT},
    [SDC_WIRE_FAULT_FRAME] = {"bad frame", SDC_ERR_FORMAT},
    [SDC_WIRE_FAULT_CHECKSUM] = {"checksum mismatch", SDC_ERR_FORMAT},
    [SDC_WIRE_FAULT_PARSE] = {"unparseable", SDC_ERR_FORMAT},
    [SDC_WIRE_FAULT_VERSION] = {"unknown version", SDC_ERR_UNSUPPORTED},
    [SDC_WIRE_FAULT_TYPE] = {"no message", SDC_ERR_FORMAT},
    [SDC_WIRE_FAULT_OVERSIZED] = {"oversized", SDC_ERR_RANGE},
    [SDC_WIRE_FAULT_FIELD] = {"bad field", SDC_ERR_FORMAT},
    [SDC_WIRE_FAULT_DTYPE] = {"bad dtype", SDC_ERR_UNSUPPORTED},
    [SDC_WIRE_FAULT_SHAPE] = {"bad shape", SDC_ERR_SHAPE},
    [SDC_WIRE_FAULT_LAYOUT] = {"bad layout", SDC_ERR_FORMAT},
    [SDC_WIRE_FAULT_UNKNOWN_JOB] = {"unknown job", SDC_ERR_NOT_FOUND},
    [SDC_WIRE_FAULT_STALE] = {"stale attempt", SDC_ERR_RANGE},
};
_Static_assert(sizeof(fault_info) / sizeof(fault_info[0]) == SDC_WIRE_FAULT_COUNT,
               "fault_info must describe every sdc_wire_fault_t");

const char *sdc_wire_fault_name(sdc_wire_fault_t fault)
{
    return (unsigned)fault < SDC_WIRE_FAULT_COUNT ? fault_info[fault].name : "unknown fault";
}

sdc_status_t sdc_wire_fault_status(sdc_wire_fault_t fault)
{
    return (unsigned)fault < SDC_WIRE_FAULT_COUNT ? fault_info[fault].status : SDC_ERR_INTERNAL;
}

/* Records the fault and a message prefixed with the message type. */
__attribute__((format(printf, 3, 4))) static sdc_status_t reject(check_ctx_t *c,
                                                                 sdc_wire_fault_t fault,
                                                                 const char *fmt, ...)
{
    char what[SDC_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    c->msg->fault = fault;
    return sdc_error_set(c->err, fault_info[fault].status, "wire: %s", what);
}

/* ---- CRC-32C ----------------------------------------------------------------- */

/* One nibble at a time: 16 entries are enough for the rare CPU without
 * SSE4.2, and no table needs building at run time. */
static const uint32_t crc32c_nibble[16] = {
    0x00000000, 0x105ec76f, 0x20bd8ede, 0x30e349b1, 0x417b1dbc, 0x5125dad3,
    0x61c69362, 0x7198540d, 0x82f63b78, 0x92a8fc17, 0xa24bb5a6, 0xb21572c9,
    0xc38d26c4, 0xd3d3e1ab, 0xe330a81a, 0xf36e6f75,
};

static uint32_t crc32c_soft(uint32_t c, const uint8_t *p, size_t n)
{
    while (n--) {
        c ^= *p++;
        c = (c >> 4) ^ crc32c_nibble[c & 15];
        c = (c >> 4) ^ crc32c_nibble[c & 15];
    }
    return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t c, const uint8_t *p,
                                                               size_t n)
{
    uint64_t c64;
    while (n && ((uintptr_t)p & 7)) {
        c = __builtin_ia32_crc32qi(c, *p++);
        n--;
    }
    c64 = c;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = __builtin_ia32_crc32di(c64, v);
    }
    c = (uint32_t)c64;
    while (n--)
        c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

uint32_t sdc_wire_crc32c(uint32_t crc, const void *data, size_t n)
{
    uint32_t c = ~crc;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2"))
        return ~crc32c_sse42(c, data, n);
#endif
    return ~crc32c_soft(c, data, n);
}

/* ---- little helpers -------------------------------------------------------- */

static uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void store_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static int id_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == ':' || ch == '-';
}

/* Job and node ids end up in Redis keys and log lines: a small alphabet. */
static sdc_status_t check_id(check_ctx_t *c, const char *what, const char *id)
{
    size_t n = strnlen(id, SDC_WIRE_ID_MAX + 1);
    if (n == 0)
        return reject(c, SDC_WIRE_FAULT_FIELD, "%s is empty", what);
    if (n > SDC_WIRE_ID_MAX)
        return reject(c, SDC_WIRE_FAULT_OVERSIZED, "%s is longer than %u bytes", what,
                      SDC_WIRE_ID_MAX);
    for (size_t i = 0; i < n; i++)
        if (!id_char_ok(id[i]))
            return reject(c, SDC_WIRE_FAULT_FIELD, "%s '%s' has a byte 0x%02x outside [A-Za-z0-9._:-]",
                          what, id, (unsigned char)id[i]);
    return SDC_OK;
}

static sdc_status_t check_text(check_ctx_t *c, const char *what, const char *s, size_t max)
{
    if (strnlen(s, max + 1) > max)
        return reject(c, SDC_WIRE_FAULT_OVERSIZED, "%s is longer than %zu bytes", what, max);
    return SDC_OK;
}

static sdc_status_t check_attempt(check_ctx_t *c, const char *what, uint32_t attempt)
{
    if (attempt == 0)
        return reject(c, SDC_WIRE_FAULT_FIELD, "%s attempt is 0 (attempts start at 1)", what);
    return SDC_OK;
}

/* Asks the receiver's job table; unknown_ok for messages that introduce a
 * job (Assign) rather than refer to one. */
static sdc_status_t check_job(check_ctx_t *c, const char *job_id, uint32_t attempt,
                              int unknown_ok)
{
    if (!c->job)
        return SDC_OK;
    switch (c->job(c->job_arg, job_id, attempt)) {
    case SDC_WIRE_JOB_CURRENT:
        return SDC_OK;
    case SDC_WIRE_JOB_STALE:
        return reject(c, SDC_WIRE_FAULT_STALE, "%s: job %s attempt %u is not the current attempt",
                      sdc_wire_type_name(c->msg->type), job_id, attempt);
    case SDC_WIRE_JOB_UNKNOWN:
        if (unknown_ok)
            return SDC_OK;
        return reject(c, SDC_WIRE_FAULT_UNKNOWN_JOB, "%s: job %s is not known here",
                      sdc_wire_type_name(c->msg->type), job_id);
    }
    return sdc_error_set(c->err, SDC_ERR_INTERNAL, "wire: job table gave no answer for job %s",
                         job_id);
}

#define TRY(expr)                                                                    \
    do {                                                                             \
        sdc_status_t st_ = (expr);                                                   \
        if (st_ != SDC_OK)                                                           \
            return st_;                                                              \
    } while (0)

/* ---- control messages ------------------------------------------------------ */

static sdc_status_t check_register(check_ctx_t *c, const Sdc__Envelope *env)
{
    const Sdc__Register *m = env->registration;
    const sdc_wire_limits_t *lim = c->lim;
    TRY(check_id(c, "register: node_id", m->node_id));
    if (m->role <= SDC__ROLE__ROLE_UNSPECIFIED || m->role > SDC__ROLE__ROLE_REFINER)
        return reject(c, SDC_WIRE_FAULT_FIELD, "register: unknown role %d", (int)m->role);
    if (m->ucx_address.len == 0)
        return reject(c, SDC_WIRE_FAULT_FIELD, "register: node %s has no UCX address", m->node_id);
    if (m->ucx_address.len > SDC_WIRE_ADDRESS_MAX)
        return reject(c, SDC_WIRE_FAULT_OVERSIZED, "register: UCX address of %zu bytes (max %u)",
                      m->ucx_address.len, SDC_WIRE_ADDRESS_MAX);
    if (m->role != SDC__ROLE__ROLE_DIT_STAGE) {
        if (m->stage || m->block_begin || m->block_end)
            return reject(c, SDC_WIRE_FAULT_FIELD,
                          "register: node %s is not a DiT stage but has stage %u, blocks [%u, %u)",
                          m->node_id, m->stage, m->block_begin, m->block_end);
        return SDC_OK;
    }
    if (m->block_begin >= m->block_end)
        return reject(c, SDC_WIRE_FAULT_FIELD, "register: empty block range [%u, %u)",
                      m->block_begin, m->block_end);
    if (m->block_end > lim->max_blocks || m->stage >= lim->max_blocks)
        return reject(c, SDC_WIRE_FAULT_OVERSIZED,
                      "register: stage %u, blocks [%u, %u) beyond the model's %u blocks", m->stage,
                      m->block_begin, m->block_end, lim->max_blocks);
    return SDC_OK;
}

static sdc_status_t check_assign(check_ctx_t *c, const Sdc__Envelope *env)
{
    const Sdc__Assign *m = env->assign;
    TRY(check_id(c, "assign: job_id", m->job_id));
    TRY(check_attempt(c, "assign:", m->attempt));
    TRY(check_text(c, "assign: params_json", m->params_json, SDC_WIRE_PARAMS_MAX));
    if (m->resume_step >= c->lim->max_steps)
        return reject(c, SDC_WIRE_FAULT_OVERSIZED, "assign: resume_step %u (max steps %u)",
                      m->resume_step, c->lim->max_steps);
    return check_job(c, m->job_id, m->attempt, 1);
}

static sdc_status_t check_step_done(check_ctx_t *c, const Sdc__Envelope *env)
{
    const Sdc__StepDone *m = env->step_done;
    TRY(check_id(c, "step_done: job_id", m->job_id));
    TRY(check_attempt(c, "step_done:", m->attempt));
    if (m->step >= c->lim->max_steps)
        return reject(c, SDC_WIRE_FAULT_OVERSIZED, "step_done: step %u (max steps %u)", m->step,
                      c->lim->max_steps);
    return check_job(c, m->job_id, m->attempt, 0);
}

static sdc_status_t check_job_done(check_ctx_t *c, const Sdc__Envelope *env)
{
    const Sdc__JobDone *m = env->job_done;
    TRY(check_id(c, "job_done: job_id", m->job_id));
    TRY(check_attempt(c, "job_done:", m->attempt));
    if (!m->result_key[0])
        return reject(c, SDC_WIRE_FAULT_FIELD, "job_done: job %s has no result_key", m->job_id);
    TRY(check_text(c, "job_done: result_key", m->result_key, SDC_WIRE_TEXT_MAX));
    return check_job(c, m->job_id, m->attempt, 0);
}

/* An Error without a job is about the sending node itself. */
static sdc_status_t check_error(check_ctx_t *c, const Sdc__Envelope *env)
{
    const Sdc__Error *m = env->error;
    if (m->code == SDC_OK || m->code >= SDC_STATUS_COUNT)
        return reject(c, SDC_WIRE_FAULT_FIELD, "error: code %u is not an error status", m->code);
    TRY(check_text(c, "error: message", m->message, SDC_WIRE_TEXT_MAX));
    if (!m->job_id[0]) {
        if (m->attempt)
            return reject(c, SDC_WIRE_FAULT_FIELD, "error: attempt %u without a job", m->attempt);
        return SDC_OK;
    }
    TRY(check_id(c, "error: job_id", m->job_id));
    TRY(check_attempt(c, "error:", m->attempt));
    return check_job(c, m->job_id, m->attempt, 0);
}

static sdc_status_t check_heartbeat(check_ctx_t *c, const Sdc__Envelope *env)
{
    const Sdc__Heartbeat *m = env->heartbeat;
    TRY(check_id(c, "heartbeat: node_id", m->node_id));
    if (!isfinite(m->load) || m->load < 0)
        return reject(c, SDC_WIRE_FAULT_FIELD, "heartbeat: load %g", (double)m->load);
    if (m->time_us <= 0)
        return reject(c, SDC_WIRE_FAULT_FIELD, "heartbeat: time_us %lld", (long long)m->time_us);
    return SDC_OK;
}

static sdc_status_t check_shutdown(check_ctx_t *c, const Sdc__Envelope *env)
{
    return check_text(c, "shutdown: reason", env->shutdown->reason, SDC_WIRE_TEXT_MAX);
}

/* ---- tensor messages ------------------------------------------------------- */

static const struct {
    Sdc__DType wire;
    sdc_dtype_t dt;
} dtype_map[] = {
    {SDC__DTYPE__DTYPE_F32, SDC_DTYPE_F32},   {SDC__DTYPE__DTYPE_F16, SDC_DTYPE_F16},
    {SDC__DTYPE__DTYPE_BF16, SDC_DTYPE_BF16}, {SDC__DTYPE__DTYPE_I64, SDC_DTYPE_I64},
    {SDC__DTYPE__DTYPE_I32, SDC_DTYPE_I32},   {SDC__DTYPE__DTYPE_U8, SDC_DTYPE_U8},
    {SDC__DTYPE__DTYPE_BOOL, SDC_DTYPE_BOOL},
};

static int dtype_from_wire(Sdc__DType wire, sdc_dtype_t *dt)
{
    for (size_t i = 0; i < sizeof(dtype_map) / sizeof(dtype_map[0]); i++)
        if (dtype_map[i].wire == wire) {
            *dt = dtype_map[i].dt;
            return 0;
        }
    return -1;
}

/* What one dimension of a named tensor must be. */
typedef enum {
    DIM_TOKENS,   /* n_img + n_txt of the sample */
    DIM_HIDDEN,
    DIM_CHANNELS, /* latent channels */
    DIM_GRID_H,
    DIM_GRID_W,
    DIM_TEXT,     /* LLM width */
    DIM_TEXT_2,   /* ByT5 width */
    DIM_ROWS,     /* free, 1..max_tokens */
    DIM_IMAGE_H,  /* grid_h * image_factor */
    DIM_IMAGE_W,
    DIM_RGB,      /* 3 */
} dim_kind_t;

/* What dtypes a tensor may have. */
typedef enum { T_FLOAT = 0, T_MASK, T_RGB8 } tensor_kind_t;

static const struct tensor_rule {
    const char *name;
    tensor_kind_t kind;
    int ndim;
    dim_kind_t dims[3];
    const char *rows_like; /* a tensor of the same sample whose rows this one must match */
} tensor_rules[] = {
    {"hidden", T_FLOAT, 2, {DIM_TOKENS, DIM_HIDDEN}, NULL},
    {"temb", T_FLOAT, 1, {DIM_HIDDEN}, NULL},
    {"latent", T_FLOAT, 3, {DIM_CHANNELS, DIM_GRID_H, DIM_GRID_W}, NULL},
    {"guider_state", T_FLOAT, 3, {DIM_CHANNELS, DIM_GRID_H, DIM_GRID_W}, NULL},
    {"image_latents", T_FLOAT, 3, {DIM_CHANNELS, DIM_GRID_H, DIM_GRID_W}, NULL},
    {"prompt_embeds", T_FLOAT, 2, {DIM_ROWS, DIM_TEXT}, NULL},
    {"prompt_embeds_mask", T_MASK, 1, {DIM_ROWS}, "prompt_embeds"},
    {"prompt_embeds_2", T_FLOAT, 2, {DIM_ROWS, DIM_TEXT_2}, NULL},
    {"prompt_embeds_mask_2", T_MASK, 1, {DIM_ROWS}, "prompt_embeds_2"},
    {"image", T_RGB8, 3, {DIM_IMAGE_H, DIM_IMAGE_W, DIM_RGB}, NULL},
};

static const struct tensor_rule *find_rule(const char *name)
{
    for (size_t i = 0; i < sizeof(tensor_rules) / sizeof(tensor_rules[0]); i++)
        if (strcmp(tensor_rules[i].name, name) == 0)
            return &tensor_rules[i];
    return NULL;
}

/* The required size of a dimension, 0 for DIM_ROWS (checked separately). */
static int64_t dim_expected(dim_kind_t kind, const Sdc__Sample *s, const sdc_wire_limits_t *lim)
{
    switch (kind) {
    case DIM_TOKENS: return (int64_t)s->n_img + s->n_txt;
    case DIM_HIDDEN: return lim->hidden;
    case DIM_CHANNELS: return lim->latent_channels;
    case DIM_GRID_H: return s->grid_h;
    case DIM_GRID_W: return s->grid_w;
    case DIM_TEXT: return lim->text_dim;
    case DIM_TEXT_2: return lim->text_dim_2;
    case DIM_ROWS: return 0;
    /* No image_factor: no image is accepted (-1 matches no dimension). */
    case DIM_IMAGE_H: return lim->image_factor ? (int64_t)s->grid_h * lim->image_factor : -1;
    case DIM_IMAGE_W: return lim->image_factor ? (int64_t)s->grid_w * lim->image_factor : -1;
    case DIM_RGB: return 3;
    }
    return -1;
}

static sdc_status_t check_sample(check_ctx_t *c, const Sdc__TensorHeader *h, size_t i)
{
    const Sdc__Sample *s = h->samples[i];
    const sdc_wire_limits_t *lim = c->lim;
    char what[48];
    snprintf(what, sizeof(what), "tensor: sample %zu job_id", i);
    TRY(check_id(c, what, s->job_id));
    if (h->job_id[0] && (strcmp(s->job_id, h->job_id) != 0 || s->attempt != h->attempt ||
                         s->step != h->step))
        return reject(c, SDC_WIRE_FAULT_FIELD,
                      "tensor: sample %zu is job %s attempt %u step %u in a message for job %s "
                      "attempt %u step %u",
                      i, s->job_id, s->attempt, s->step, h->job_id, h->attempt, h->step);
    if (s->attempt == 0)
        return reject(c, SDC_WIRE_FAULT_FIELD, "tensor: sample %zu attempt is 0", i);
    if (s->steps == 0 || s->step >= s->steps)
        return reject(c, SDC_WIRE_FAULT_FIELD, "tensor: sample %zu step %u of %u", i, s->step,
                      s->steps);
    if (s->steps > lim->max_steps)
        return reject(c, SDC_WIRE_FAULT_OVERSIZED, "tensor: sample %zu has %u steps (max %u)", i,
                      s->steps, lim->max_steps);
    if (s->pass != SDC__PASS__PASS_COND && s->pass != SDC__PASS__PASS_UNCOND)
        return reject(c, SDC_WIRE_FAULT_FIELD, "tensor: sample %zu has unknown pass %d", i,
                      (int)s->pass);
    if (s->grid_h == 0 || s->grid_w == 0 || s->grid_h % lim->patch || s->grid_w % lim->patch)
        return reject(c, SDC_WIRE_FAULT_SHAPE,
                      "tensor: sample %zu grid %ux%u is not a positive multiple of patch %u", i,
                      s->grid_h, s->grid_w, lim->patch);
    if (s->grid_h > lim->max_grid || s->grid_w > lim->max_grid)
        return reject(c, SDC_WIRE_FAULT_OVERSIZED, "tensor: sample %zu grid %ux%u (max %u)", i,
                      s->grid_h, s->grid_w, lim->max_grid);
    uint64_t n_img = (uint64_t)(s->grid_h / lim->patch) * (s->grid_w / lim->patch);
    if (s->n_img != n_img)
        return reject(c, SDC_WIRE_FAULT_SHAPE,
                      "tensor: sample %zu has %u image tokens, grid %ux%u / patch %u gives %llu",
                      i, s->n_img, s->grid_h, s->grid_w, lim->patch, (unsigned long long)n_img);
    if ((uint64_t)s->n_img + s->n_txt > lim->max_tokens)
        return reject(c, SDC_WIRE_FAULT_OVERSIZED,
                      "tensor: sample %zu has %u + %u tokens (max %u)", i, s->n_img, s->n_txt,
                      lim->max_tokens);
    if (!isfinite(s->timestep) || s->timestep < 0 || s->timestep > 1000)
        return reject(c, SDC_WIRE_FAULT_FIELD, "tensor: sample %zu timestep %g outside [0, 1000]",
                      i, (double)s->timestep);
    if (!isfinite(s->guidance) || s->guidance < 0)
        return reject(c, SDC_WIRE_FAULT_FIELD, "tensor: sample %zu guidance %g", i,
                      (double)s->guidance);
    for (size_t j = 0; j < i; j++)
        if (h->samples[j]->pass == s->pass && strcmp(h->samples[j]->job_id, s->job_id) == 0)
            return reject(c, SDC_WIRE_FAULT_FIELD, "tensor: samples %zu and %zu are both job %s %s",
                          j, i, s->job_id, s->pass == SDC__PASS__PASS_COND ? "cond" : "uncond");
    return SDC_OK;
}

/* A tensor's byte range in the payload, for the overlap check. */
typedef struct {
    uint64_t begin, end;
    size_t index;
} span_t;

static sdc_status_t check_shape(check_ctx_t *c, const Sdc__TensorDesc *t, size_t i,
                                const struct tensor_rule *rule, const Sdc__Sample *s)
{
    char got[128];
    sdc_shape_str((int)t->n_shape, t->shape, got, sizeof(got));
    for (int d = 0; d < rule->ndim; d++) {
        int64_t want = dim_expected(rule->dims[d], s, c->lim);
        if (want == 0) {
            if (t->shape[d] > (int64_t)c->lim->max_tokens)
                return reject(c, SDC_WIRE_FAULT_OVERSIZED,
                              "tensor: tensor %zu '%s' shape %s has %lld rows (max %u)", i,
                              t->name, got, (long long)t->shape[d], c->lim->max_tokens);
            continue;
        }
        if (t->shape[d] != want)
            return reject(c, SDC_WIRE_FAULT_SHAPE,
                          "tensor: tensor %zu '%s' shape %s: dim %d must be %lld for sample %u",
                          i, t->name, got, d, (long long)want, t->sample);
    }
    return SDC_OK;
}

static sdc_status_t check_desc(check_ctx_t *c, const Sdc__TensorHeader *h, size_t i, span_t *span)
{
    const Sdc__TensorDesc *t = h->tensors[i];
    if (t->sample >= h->n_samples)
        return reject(c, SDC_WIRE_FAULT_FIELD, "tensor: tensor %zu names sample %u of %zu", i,
                      t->sample, h->n_samples);
    const struct tensor_rule *rule = find_rule(t->name);
    if (!rule)
        return reject(c, SDC_WIRE_FAULT_FIELD, "tensor: tensor %zu has unknown name '%.64s'", i,
                      t->name);
    sdc_dtype_t dt;
    if (dtype_from_wire(t->dtype, &dt) != 0)
        return reject(c, SDC_WIRE_FAULT_DTYPE, "tensor: tensor %zu '%s' has unknown dtype %d", i,
                      t->name, (int)t->dtype);
    uint32_t allowed = rule->kind == T_MASK   ? MASK_DTYPES
                       : rule->kind == T_RGB8 ? 1u << SDC_DTYPE_U8
                                              : c->lim->float_dtypes;
    if (!(allowed & (1u << dt)))
        return reject(c, SDC_WIRE_FAULT_DTYPE, "tensor: tensor %zu '%s' may not be %s", i, t->name,
                      sdc_dtype_name(dt));
    if (t->n_shape != (size_t)rule->ndim)
        return reject(c, SDC_WIRE_FAULT_SHAPE, "tensor: tensor %zu '%s' has %zu dims, needs %d", i,
                      t->name, t->n_shape, rule->ndim);
    for (size_t d = 0; d < t->n_shape; d++)
        if (t->shape[d] <= 0)
            return reject(c, SDC_WIRE_FAULT_SHAPE, "tensor: tensor %zu '%s' dim %zu is %lld", i,
                          t->name, d, (long long)t->shape[d]);
    int64_t numel = sdc_shape_numel((int)t->n_shape, t->shape);
    size_t esize = sdc_dtype_size(dt);
    if (numel < 0 || (uint64_t)numel > UINT64_MAX / esize)
        return reject(c, SDC_WIRE_FAULT_SHAPE, "tensor: tensor %zu '%s' shape overflows", i,
                      t->name);
    if ((uint64_t)numel * esize != t->nbytes)
        return reject(c, SDC_WIRE_FAULT_SHAPE,
                      "tensor: tensor %zu '%s' is %llu bytes, its shape and dtype need %llu", i,
                      t->name, (unsigned long long)t->nbytes,
                      (unsigned long long)((uint64_t)numel * esize));
    TRY(check_shape(c, t, i, rule, h->samples[t->sample]));
    if (t->offset % esize)
        return reject(c, SDC_WIRE_FAULT_LAYOUT,
                      "tensor: tensor %zu '%s' offset %llu is not aligned to %zu bytes", i,
                      t->name, (unsigned long long)t->offset, esize);
    if (t->offset > h->payload_bytes || t->nbytes > h->payload_bytes - t->offset)
        return reject(c, SDC_WIRE_FAULT_LAYOUT,
                      "tensor: tensor %zu '%s' bytes [%llu, +%llu) outside the %llu-byte payload",
                      i, t->name, (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                      (unsigned long long)h->payload_bytes);
    span->begin = t->offset;
    span->end = t->offset + t->nbytes;
    span->index = i;
    return SDC_OK;
}

static int span_cmp(const void *a, const void *b)
{
    const span_t *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static sdc_status_t check_overlap(check_ctx_t *c, const Sdc__TensorHeader *h, span_t *spans)
{
    qsort(spans, h->n_tensors, sizeof(*spans), span_cmp);
    for (size_t i = 1; i < h->n_tensors; i++)
        if (spans[i].begin < spans[i - 1].end)
            return reject(c, SDC_WIRE_FAULT_LAYOUT, "tensor: tensors %zu '%s' and %zu '%s' overlap",
                          spans[i - 1].index, h->tensors[spans[i - 1].index]->name,
                          spans[i].index, h->tensors[spans[i].index]->name);
    return SDC_OK;
}

/* Names unique per sample, and masks as long as the embeddings they mask. */
static sdc_status_t check_pairs(check_ctx_t *c, const Sdc__TensorHeader *h)
{
    for (size_t i = 0; i < h->n_tensors; i++) {
        const Sdc__TensorDesc *t = h->tensors[i];
        const struct tensor_rule *rule = find_rule(t->name);
        for (size_t j = 0; j < i; j++)
            if (h->tensors[j]->sample == t->sample && strcmp(h->tensors[j]->name, t->name) == 0)
                return reject(c, SDC_WIRE_FAULT_FIELD,
                              "tensor: tensors %zu and %zu are both '%s' of sample %u", j, i,
                              t->name, t->sample);
        if (!rule->rows_like)
            continue;
        const Sdc__TensorDesc *ref = sdc_wire_find_tensor(h, t->sample, rule->rows_like);
        if (ref && ref->shape[0] != t->shape[0])
            return reject(c, SDC_WIRE_FAULT_SHAPE,
                          "tensor: '%s' of sample %u has %lld rows, '%s' has %lld", t->name,
                          t->sample, (long long)t->shape[0], ref->name, (long long)ref->shape[0]);
    }
    return SDC_OK;
}

/* Marks the samples of current attempts; rejects when none is. */
static sdc_status_t check_tensor_jobs(check_ctx_t *c, const Sdc__TensorHeader *h)
{
    uint64_t all = h->n_samples == 64 ? UINT64_MAX : (1ull << h->n_samples) - 1;
    if (!c->job) {
        c->msg->live = all;
        return SDC_OK;
    }
    if (h->job_id[0]) {
        TRY(check_job(c, h->job_id, h->attempt, 0));
        c->msg->live = all;
        return SDC_OK;
    }
    int stale = 0;
    uint64_t live = 0;
    for (size_t i = 0; i < h->n_samples; i++) {
        sdc_wire_job_state_t st = c->job(c->job_arg, h->samples[i]->job_id, h->samples[i]->attempt);
        if (st == SDC_WIRE_JOB_CURRENT)
            live |= 1ull << i;
        stale |= st == SDC_WIRE_JOB_STALE;
    }
    if (!live && stale)
        return reject(c, SDC_WIRE_FAULT_STALE, "tensor: no sample belongs to a current attempt "
                                               "(first: job %s attempt %u)",
                      h->samples[0]->job_id, h->samples[0]->attempt);
    if (!live)
        return reject(c, SDC_WIRE_FAULT_UNKNOWN_JOB, "tensor: no sample belongs to a known job "
                                                     "(first: job %s)",
                      h->samples[0]->job_id);
    c->msg->live = live;
    return SDC_OK;
}

static sdc_status_t check_tensor(check_ctx_t *c, const Sdc__Envelope *env)
{
    const Sdc__TensorHeader *h = env->tensor;
    const sdc_wire_limits_t *lim = c->lim;
    if (h->n_samples == 0 || h->n_tensors == 0)
        return reject(c, SDC_WIRE_FAULT_FIELD, "tensor: %zu samples, %zu tensors", h->n_samples,
                      h->n_tensors);
    if (h->n_samples > lim->max_samples || h->n_tensors > lim->max_tensors)
        return reject(c, SDC_WIRE_FAULT_OVERSIZED, "tensor: %zu samples, %zu tensors (max %u, %u)",
                      h->n_samples, h->n_tensors, lim->max_samples, lim->max_tensors);
    if (h->payload_bytes > lim->max_payload)
        return reject(c, SDC_WIRE_FAULT_OVERSIZED, "tensor: payload of %llu bytes (max %llu)",
                      (unsigned long long)h->payload_bytes, (unsigned long long)lim->max_payload);
    if (c->payload_len < h->payload_bytes)
        return reject(c, SDC_WIRE_FAULT_TRUNCATED,
                      "tensor: %zu payload bytes arrived, the header describes %llu",
                      c->payload_len, (unsigned long long)h->payload_bytes);
    if (c->payload_len > h->payload_bytes)
        return reject(c, SDC_WIRE_FAULT_LAYOUT,
                      "tensor: %zu payload bytes arrived, the header describes only %llu",
                      c->payload_len, (unsigned long long)h->payload_bytes);
    if (h->job_id[0]) {
        TRY(check_id(c, "tensor: job_id", h->job_id));
    } else if (h->attempt || h->step) {
        return reject(c, SDC_WIRE_FAULT_FIELD, "tensor: attempt %u step %u without a job_id",
                      h->attempt, h->step);
    }
    for (size_t i = 0; i < h->n_samples; i++)
        TRY(check_sample(c, h, i));

    span_t *spans = malloc(h->n_tensors * sizeof(*spans));
    if (!spans)
        return sdc_error_set(c->err, SDC_ERR_NOMEM, "wire: tensor: %zu spans", h->n_tensors);
    sdc_status_t st = SDC_OK;
    for (size_t i = 0; i < h->n_tensors && st == SDC_OK; i++)
        st = check_desc(c, h, i, &spans[i]);
    if (st == SDC_OK)
        st = check_overlap(c, h, spans);
    free(spans);
    TRY(st);
    TRY(check_pairs(c, h));
    return check_tensor_jobs(c, h);
}

/* ---- dispatch table -------------------------------------------------------- */

static const struct {
    Sdc__Envelope__MsgCase msg_case;
    const char *name;
    sdc_status_t (*check)(check_ctx_t *c, const Sdc__Envelope *env);
} wire_types[] = {
    [SDC_WIRE_REGISTER] = {SDC__ENVELOPE__MSG_REGISTRATION, "register", check_register},
    [SDC_WIRE_ASSIGN] = {SDC__ENVELOPE__MSG_ASSIGN, "assign", check_assign},
    [SDC_WIRE_STEP_DONE] = {SDC__ENVELOPE__MSG_STEP_DONE, "step_done", check_step_done},
    [SDC_WIRE_JOB_DONE] = {SDC__ENVELOPE__MSG_JOB_DONE, "job_done", check_job_done},
    [SDC_WIRE_ERROR] = {SDC__ENVELOPE__MSG_ERROR, "error", check_error},
    [SDC_WIRE_HEARTBEAT] = {SDC__ENVELOPE__MSG_HEARTBEAT, "heartbeat", check_heartbeat},
    [SDC_WIRE_SHUTDOWN] = {SDC__ENVELOPE__MSG_SHUTDOWN, "shutdown", check_shutdown},
    [SDC_WIRE_TENSOR] = {SDC__ENVELOPE__MSG_TENSOR, "tensor", check_tensor},
};
_Static_assert(sizeof(wire_types) / sizeof(wire_types[0]) == SDC_WIRE_TYPE_COUNT,
               "wire_types must describe every sdc_wire_type_t");

const char *sdc_wire_type_name(sdc_wire_type_t type)
{
    return (unsigned)type < SDC_WIRE_TYPE_COUNT ? wire_types[type].name : "unknown type";
}

static int type_of_case(Sdc__Envelope__MsgCase msg_case, sdc_wire_type_t *type)
{
    for (int t = 0; t < SDC_WIRE_TYPE_COUNT; t++)
        if (wire_types[t].msg_case == msg_case) {
            *type = (sdc_wire_type_t)t;
            return 0;
        }
    return -1;
}

/* ---- encode ------------------------------------------------------------------ */

void sdc_wire_envelope_init(Sdc__Envelope *env, const char *sender)
{
    sdc__envelope__init(env);
    env->version = SDC_WIRE_VERSION;
    env->sender = (char *)sender;
}

size_t sdc_wire_frame_size(const Sdc__Envelope *env)
{
    return SDC_WIRE_FRAME_BYTES + protobuf_c_message_get_packed_size(&env->base);
}

sdc_status_t sdc_wire_encode(const Sdc__Envelope *env, void *buf, size_t cap, size_t *len,
                             sdc_error_t *err)
{
    size_t n = protobuf_c_message_get_packed_size(&env->base);
    if (n > UINT32_MAX - SDC_WIRE_FRAME_BYTES)
        return sdc_error_set(err, SDC_ERR_RANGE, "wire: envelope of %zu bytes", n);
    if (cap < SDC_WIRE_FRAME_BYTES + n)
        return sdc_error_set(err, SDC_ERR_RANGE, "wire: frame needs %zu bytes, buffer has %zu",
                             SDC_WIRE_FRAME_BYTES + n, cap);
    uint8_t *p = buf;
    size_t packed = protobuf_c_message_pack(&env->base, p + SDC_WIRE_FRAME_BYTES);
    assert(packed == n);
    store_le32(p, WIRE_MAGIC);
    store_le32(p + 4, (uint32_t)n);
    store_le32(p + 8, sdc_wire_crc32c(0, p + SDC_WIRE_FRAME_BYTES, n));
    *len = SDC_WIRE_FRAME_BYTES + packed;
    return SDC_OK;
}

sdc_status_t sdc_wire_layout(Sdc__TensorHeader *h, size_t align, sdc_error_t *err)
{
    if (align & (align - 1))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "wire: layout alignment %zu", align);
    uint64_t off = 0;
    for (size_t i = 0; i < h->n_tensors; i++) {
        Sdc__TensorDesc *t = h->tensors[i];
        sdc_dtype_t dt;
        if (dtype_from_wire(t->dtype, &dt) != 0)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG, "wire: layout: tensor %zu '%s' dtype %d",
                                 i, t->name, (int)t->dtype);
        size_t esize = sdc_dtype_size(dt);
        int64_t numel = t->n_shape <= SDC_MAX_DIMS ? sdc_shape_numel((int)t->n_shape, t->shape) : -1;
        if (numel < 0 || (uint64_t)numel > (UINT64_MAX / 2) / esize)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG, "wire: layout: tensor %zu '%s' shape",
                                 i, t->name);
        uint64_t a = align > esize ? align : esize;
        uint64_t nbytes = (uint64_t)numel * esize;
        off = (off + a - 1) / a * a;
        if (off > UINT64_MAX / 2 - nbytes)
            return sdc_error_set(err, SDC_ERR_RANGE, "wire: layout: payload overflows");
        t->offset = off;
        t->nbytes = nbytes;
        off += nbytes;
    }
    h->payload_bytes = off;
    return SDC_OK;
}

/* ---- decode ------------------------------------------------------------------ */

static sdc_status_t check_limits(const sdc_wire_limits_t *lim, sdc_error_t *err)
{
    if (lim->patch == 0 || lim->max_samples > SDC_WIRE_MAX_SAMPLES ||
        lim->max_header < SDC_WIRE_FRAME_BYTES)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "wire: limits: patch %u, max_samples %u (<= %u), max_header %zu",
                             lim->patch, lim->max_samples, SDC_WIRE_MAX_SAMPLES, lim->max_header);
    return SDC_OK;
}

static sdc_status_t check_frame(check_ctx_t *c, const uint8_t *p, size_t len)
{
    if (len < SDC_WIRE_FRAME_BYTES)
        return reject(c, SDC_WIRE_FAULT_TRUNCATED, "header of %zu bytes is shorter than a frame",
                      len);
    if (load_le32(p) != WIRE_MAGIC)
        return reject(c, SDC_WIRE_FAULT_FRAME, "header does not start with the sdc magic");
    if (len > c->lim->max_header)
        return reject(c, SDC_WIRE_FAULT_OVERSIZED, "header of %zu bytes (max %zu)", len,
                      c->lim->max_header);
    uint32_t n = load_le32(p + 4);
    if (n > len - SDC_WIRE_FRAME_BYTES)
        return reject(c, SDC_WIRE_FAULT_TRUNCATED, "header has %zu envelope bytes, frame says %u",
                      len - SDC_WIRE_FRAME_BYTES, n);
    if (n < len - SDC_WIRE_FRAME_BYTES)
        return reject(c, SDC_WIRE_FAULT_FRAME, "%zu bytes after the %u-byte envelope",
                      len - SDC_WIRE_FRAME_BYTES - n, n);
    uint32_t want = load_le32(p + 8), got = sdc_wire_crc32c(0, p + SDC_WIRE_FRAME_BYTES, n);
    if (want != got)
        return reject(c, SDC_WIRE_FAULT_CHECKSUM, "envelope CRC-32C is %08x, frame says %08x",
                      got, want);
    return SDC_OK;
}

static sdc_status_t check_envelope(check_ctx_t *c, const Sdc__Envelope *env)
{
    if (env->version != SDC_WIRE_VERSION)
        return reject(c, SDC_WIRE_FAULT_VERSION, "envelope version %u, this build speaks %u",
                      env->version, SDC_WIRE_VERSION);
    TRY(check_id(c, "envelope: sender", env->sender));
    if (type_of_case(env->msg_case, &c->msg->type) != 0)
        return reject(c, SDC_WIRE_FAULT_TYPE, "envelope from %s carries no known message (case %d)",
                      env->sender, (int)env->msg_case);
    if (c->msg->type != SDC_WIRE_TENSOR && c->payload_len)
        return reject(c, SDC_WIRE_FAULT_LAYOUT, "%s message carries %zu payload bytes",
                      wire_types[c->msg->type].name, c->payload_len);
    c->msg->live = 1;
    return wire_types[c->msg->type].check(c, env);
}

/* protobuf-c accepts field number 0 when its tag is spelt in more than one
 * byte (0x82 0x00) and keeps it as an unknown field; packed again it becomes
 * 0x02, which protobuf-c itself refuses. Field 0 is not valid protobuf: find
 * it anywhere in the message tree so that what we accept also re-encodes. */
static const ProtobufCMessage *find_field_zero(const ProtobufCMessage *m)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0)
            return m;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned f = 0; f < d->n_fields; f++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[f];
        if (fd->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF &&
            *(const uint32_t *)(base + fd->quantifier_offset) != fd->id)
            continue;
        const ProtobufCMessage *const *subs = (const ProtobufCMessage *const *)(base + fd->offset);
        size_t n = 1;
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)(base + fd->quantifier_offset);
            subs = *(const ProtobufCMessage *const *const *)(base + fd->offset);
        }
        for (size_t k = 0; k < n; k++) {
            const ProtobufCMessage *bad = subs[k] ? find_field_zero(subs[k]) : NULL;
            if (bad)
                return bad;
        }
    }
    return NULL;
}

sdc_status_t sdc_wire_decode(const void *buf, size_t len, size_t payload_len,
                             const sdc_wire_limits_t *lim, sdc_wire_job_fn job, void *job_arg,
                             sdc_wire_msg_t *msg, sdc_error_t *err)
{
    memset(msg, 0, sizeof(*msg));
    TRY(check_limits(lim, err));
    check_ctx_t c = {lim, job, job_arg, payload_len, msg, err};
    const uint8_t *p = buf;
    TRY(check_frame(&c, p, len));
    Sdc__Envelope *env = sdc__envelope__unpack(NULL, len - SDC_WIRE_FRAME_BYTES,
                                               p + SDC_WIRE_FRAME_BYTES);
    if (!env)
        return reject(&c, SDC_WIRE_FAULT_PARSE, "envelope of %zu bytes is not valid protobuf",
                      len - SDC_WIRE_FRAME_BYTES);
    const ProtobufCMessage *zero = find_field_zero(&env->base);
    sdc_status_t st = zero ? reject(&c, SDC_WIRE_FAULT_PARSE, "%s carries field number 0 "
                                    "(not valid protobuf)", zero->descriptor->short_name)
                           : check_envelope(&c, env);
    if (st != SDC_OK) {
        sdc__envelope__free_unpacked(env, NULL);
        msg->live = 0;
        return st;
    }
    msg->env = env;
    return SDC_OK;
}

sdc_status_t sdc_wire_check_payload(sdc_wire_msg_t *msg, const void *payload, size_t len,
                                    sdc_error_t *err)
{
    if (!msg->env || msg->type != SDC_WIRE_TENSOR)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "wire: payload check on a %s message",
                             msg->env ? sdc_wire_type_name(msg->type) : "rejected");
    const Sdc__TensorHeader *h = msg->env->tensor;
    if (len != h->payload_bytes)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "wire: payload of %zu bytes, header %llu",
                             len, (unsigned long long)h->payload_bytes);
    if (h->checksum_case != SDC__TENSOR_HEADER__CHECKSUM_CRC32C)
        return SDC_OK;
    uint32_t got = sdc_wire_crc32c(0, payload, len);
    if (got == h->crc32c)
        return SDC_OK;
    msg->fault = SDC_WIRE_FAULT_CHECKSUM;
    return sdc_error_set(err, SDC_ERR_FORMAT, "wire: payload CRC-32C is %08x, header says %08x",
                         got, h->crc32c);
}

void sdc_wire_msg_free(sdc_wire_msg_t *msg)
{
    if (msg->env)
        sdc__envelope__free_unpacked(msg->env, NULL);
    memset(msg, 0, sizeof(*msg));
}

const Sdc__TensorDesc *sdc_wire_find_tensor(const Sdc__TensorHeader *h, uint32_t sample,
                                            const char *name)
{
    for (size_t i = 0; i < h->n_tensors; i++)
        if (h->tensors[i]->sample == sample && strcmp(h->tensors[i]->name, name) == 0)
            return h->tensors[i];
    return NULL;
}
