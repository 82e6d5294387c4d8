/*
 * test_wire.c: the wire format. Round trips of every message type, then a
 * corpus of broken headers (truncated at every byte, byte flips, oversized
 * counts, bad shapes and layouts, wrong dtypes, stale attempts), each of
 * which must be rejected with the right fault and status and without a
 * crash or a leak (run under `make asan`).
 */
#include <stdint.h>

#include "cluster/wire.h"
#include "common/tensor.h"
#include "test.h"

#define BUF_CAP 16384

static sdc_wire_limits_t test_limits(void)
{
    return (sdc_wire_limits_t){
        .max_header = 8192,
        .max_payload = 1u << 20,
        .max_samples = 8,
        .max_tensors = 32,
        .max_tokens = 256,
        .max_grid = 64,
        .max_steps = 100,
        .max_blocks = 60,
        .hidden = 64,
        .patch = 2,
        .latent_channels = 16,
        .text_dim = 48,
        .text_dim_2 = 32,
        .float_dtypes = 1u << SDC_DTYPE_F32,
    };
}

/* The receiver's job table: job-a at attempt 2, job-b at attempt 1. */
static sdc_wire_job_state_t job_table(void *arg, const char *job_id, uint32_t attempt)
{
    (void)arg;
    static const struct {
        const char *id;
        uint32_t attempt;
    } jobs[] = {{"job-a", 2}, {"job-b", 1}};
    for (size_t i = 0; i < sizeof(jobs) / sizeof(jobs[0]); i++)
        if (strcmp(jobs[i].id, job_id) == 0)
            return attempt < jobs[i].attempt ? SDC_WIRE_JOB_STALE : SDC_WIRE_JOB_CURRENT;
    return SDC_WIRE_JOB_UNKNOWN;
}

/* A micro-batch: job-a cond + uncond and job-b cond, each with hidden and
 * temb, laid out back to back. Storage lives in the struct. */
#define FX_SAMPLES 3
#define FX_TENSORS 6
typedef struct {
    Sdc__Envelope env;
    Sdc__TensorHeader th;
    Sdc__Sample s[FX_SAMPLES];
    Sdc__Sample *sp[FX_SAMPLES];
    Sdc__TensorDesc t[FX_TENSORS];
    Sdc__TensorDesc *tp[FX_TENSORS];
    int64_t shape[FX_TENSORS][3];
} fixture_t;

static void fixture_init(fixture_t *f)
{
    memset(f, 0, sizeof(*f));
    sdc_wire_envelope_init(&f->env, "stage-0");
    sdc__tensor_header__init(&f->th);
    f->env.msg_case = SDC__ENVELOPE__MSG_TENSOR;
    f->env.tensor = &f->th;
    static const char *ids[FX_SAMPLES] = {"job-a", "job-a", "job-b"};
    static const uint32_t attempts[FX_SAMPLES] = {2, 2, 1};
    static const uint32_t n_txt[FX_SAMPLES] = {10, 10, 7};
    for (int i = 0; i < FX_SAMPLES; i++) {
        Sdc__Sample *s = &f->s[i];
        sdc__sample__init(s);
        s->job_id = (char *)ids[i];
        s->attempt = attempts[i];
        s->step = 3;
        s->steps = 50;
        s->pass = i == 1 ? SDC__PASS__PASS_UNCOND : SDC__PASS__PASS_COND;
        s->grid_h = 8;
        s->grid_w = 12;
        s->n_img = (8 / 2) * (12 / 2);
        s->n_txt = n_txt[i];
        s->timestep = 940.5f;
        s->guidance = 3.5f;
        f->sp[i] = s;
    }
    for (int i = 0; i < FX_TENSORS; i++) {
        Sdc__TensorDesc *t = &f->t[i];
        int sample = i / 2;
        sdc__tensor_desc__init(t);
        t->sample = (uint32_t)sample;
        t->dtype = SDC__DTYPE__DTYPE_F32;
        t->shape = f->shape[i];
        if (i % 2 == 0) {
            t->name = "hidden";
            t->n_shape = 2;
            f->shape[i][0] = f->s[sample].n_img + f->s[sample].n_txt;
            f->shape[i][1] = 64;
        } else {
            t->name = "temb";
            t->n_shape = 1;
            f->shape[i][0] = 64;
        }
        f->tp[i] = t;
    }
    f->th.n_samples = FX_SAMPLES;
    f->th.samples = f->sp;
    f->th.n_tensors = FX_TENSORS;
    f->th.tensors = f->tp;
    sdc_status_t st = sdc_wire_layout(&f->th, 64, NULL);
    CHECK_EQ_INT(st, SDC_OK);
}

static size_t encode(const Sdc__Envelope *env, uint8_t *buf)
{
    size_t len = 0;
    sdc_error_t err = {0};
    sdc_status_t st = sdc_wire_encode(env, buf, BUF_CAP, &len, &err);
    CHECK_MSG(st == SDC_OK, "%s", err.msg);
    CHECK_EQ_INT(len, sdc_wire_frame_size(env));
    return len;
}

/* Decodes buf and checks it is rejected with `fault` and its status. */
static void expect_fault_at(const char *file, int line, const uint8_t *buf, size_t len,
                            size_t payload_len, const sdc_wire_limits_t *lim,
                            sdc_wire_fault_t fault)
{
    sdc_wire_msg_t msg;
    sdc_error_t err = {0};
    sdc_status_t st = sdc_wire_decode(buf, len, payload_len, lim, job_table, NULL, &msg, &err);
    int accepted = msg.env != NULL;
    if (msg.fault != fault || st != sdc_wire_fault_status(fault) ||
        accepted != (fault == SDC_WIRE_FAULT_NONE) || (!accepted && !err.msg[0])) {
        fprintf(stderr, "  %s:%d: want fault '%s', got '%s' (status %s): %s\n", file, line,
                sdc_wire_fault_name(fault), sdc_wire_fault_name(msg.fault), sdc_status_str(st),
                err.msg);
        test_failures_++;
    }
    sdc_wire_msg_free(&msg);
}
#define EXPECT_FAULT(buf, len, plen, lim, fault)                                       \
    expect_fault_at(__FILE__, __LINE__, buf, len, plen, lim, fault)

/* Encodes the fixture as modified by the caller and expects `fault`. */
#define EXPECT_FIXTURE_FAULT(f, fault)                                                 \
    do {                                                                               \
        uint8_t b_[BUF_CAP];                                                           \
        sdc_wire_limits_t l_ = test_limits();                                          \
        size_t n_ = encode(&(f)->env, b_);                                             \
        EXPECT_FAULT(b_, n_, (size_t)(f)->th.payload_bytes, &l_, fault);               \
    } while (0)

static void test_crc32c(void)
{
    CHECK_EQ_INT(sdc_wire_crc32c(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ_INT(sdc_wire_crc32c(0, "", 0), 0);
    /* Every length and alignment against a bit-at-a-time reference, which
     * covers both the byte and the 8-byte paths of the fast version. */
    uint8_t data[160];
    for (int i = 0; i < 160; i++)
        data[i] = (uint8_t)(i * 37 + 11);
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n + off <= 150; n++) {
            uint32_t c = 0xFFFFFFFFu;
            for (size_t k = 0; k < n; k++) {
                c ^= data[off + k];
                for (int b = 0; b < 8; b++)
                    c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
            }
            CHECK_EQ_INT(sdc_wire_crc32c(0, data + off, n), ~c);
        }
    /* Continuation: crc(a || b) from crc(a). */
    uint32_t whole = sdc_wire_crc32c(0, data, 150);
    CHECK_EQ_INT(sdc_wire_crc32c(sdc_wire_crc32c(0, data, 61), data + 61, 89), whole);
}

static void test_roundtrip_tensor(void)
{
    fixture_t f;
    fixture_init(&f);
    /* Layout: 64-byte aligned, back to back. */
    CHECK_EQ_INT(f.t[0].offset, 0);
    CHECK_EQ_INT(f.t[0].nbytes, 34 * 64 * 4);
    CHECK_EQ_INT(f.t[1].offset, 34 * 64 * 4);
    CHECK_EQ_INT(f.t[2].offset, 34 * 64 * 4 + 256);
    CHECK_EQ_INT(f.th.payload_bytes, (34 + 1 + 34 + 1 + 31 + 1) * 64 * 4);

    size_t plen = (size_t)f.th.payload_bytes;
    uint8_t *payload = malloc(plen);
    for (size_t i = 0; i < plen; i++)
        payload[i] = (uint8_t)(i * 131 + 7);
    f.th.checksum_case = SDC__TENSOR_HEADER__CHECKSUM_CRC32C;
    f.th.crc32c = sdc_wire_crc32c(0, payload, plen);

    uint8_t buf[BUF_CAP];
    size_t len = encode(&f.env, buf);
    sdc_wire_limits_t lim = test_limits();
    sdc_wire_msg_t msg;
    sdc_error_t err = {0};
    sdc_status_t st = sdc_wire_decode(buf, len, plen, &lim, job_table, NULL, &msg, &err);
    CHECK_MSG(st == SDC_OK, "%s", err.msg);
    CHECK_EQ_INT(msg.fault, SDC_WIRE_FAULT_NONE);
    CHECK_EQ_INT(msg.type, SDC_WIRE_TENSOR);
    CHECK_EQ_INT(msg.live, 0x7);
    if (st != SDC_OK) {
        free(payload);
        return;
    }
    const Sdc__TensorHeader *h = msg.env->tensor;
    CHECK(strcmp(msg.env->sender, "stage-0") == 0);
    CHECK_EQ_INT(msg.env->version, SDC_WIRE_VERSION);
    CHECK_EQ_INT(h->n_samples, 3);
    CHECK_EQ_INT(h->n_tensors, 6);
    CHECK_EQ_INT(h->payload_bytes, plen);
    CHECK(strcmp(h->samples[2]->job_id, "job-b") == 0);
    CHECK_EQ_INT(h->samples[1]->pass, SDC__PASS__PASS_UNCOND);
    CHECK_EQ_INT(h->samples[2]->n_txt, 7);
    CHECK(h->samples[0]->timestep == 940.5f && h->samples[0]->guidance == 3.5f);
    const Sdc__TensorDesc *temb = sdc_wire_find_tensor(h, 2, "temb");
    CHECK(temb && temb->offset == f.t[5].offset && temb->shape[0] == 64);
    CHECK(sdc_wire_find_tensor(h, 3, "temb") == NULL);
    CHECK_EQ_INT(h->checksum_case, SDC__TENSOR_HEADER__CHECKSUM_CRC32C);
    CHECK_EQ_INT(sdc_wire_check_payload(&msg, payload, plen, &err), SDC_OK);
    payload[plen / 2] ^= 0x10;
    CHECK_EQ_INT(sdc_wire_check_payload(&msg, payload, plen, &err), SDC_ERR_FORMAT);
    CHECK_EQ_INT(msg.fault, SDC_WIRE_FAULT_CHECKSUM);
    sdc_wire_msg_free(&msg);
    CHECK(msg.env == NULL);
    free(payload);
}

/* Encodes env, decodes it with the test limits and returns the message. */
static sdc_status_t roundtrip(const Sdc__Envelope *env, sdc_wire_msg_t *msg)
{
    uint8_t buf[BUF_CAP];
    size_t len = encode(env, buf);
    sdc_wire_limits_t lim = test_limits();
    sdc_error_t err = {0};
    sdc_status_t st = sdc_wire_decode(buf, len, 0, &lim, job_table, NULL, msg, &err);
    CHECK_MSG(st == SDC_OK, "%s", err.msg);
    return st;
}

static void test_roundtrip_control(void)
{
    Sdc__Envelope env;
    sdc_wire_msg_t msg;
    uint8_t addr[300];
    for (size_t i = 0; i < sizeof(addr); i++)
        addr[i] = (uint8_t)(255 - i);

    Sdc__Register reg = SDC__REGISTER__INIT;
    reg.node_id = "gpu-7:dit";
    reg.role = SDC__ROLE__ROLE_DIT_STAGE;
    reg.ucx_address.data = addr;
    reg.ucx_address.len = sizeof(addr);
    reg.pipeline = 3;
    reg.stage = 1;
    reg.block_begin = 20;
    reg.block_end = 40;
    sdc_wire_envelope_init(&env, "gpu-7:dit");
    env.msg_case = SDC__ENVELOPE__MSG_REGISTRATION;
    env.registration = &reg;
    if (roundtrip(&env, &msg) == SDC_OK) {
        const Sdc__Register *r = msg.env->registration;
        CHECK_EQ_INT(msg.type, SDC_WIRE_REGISTER);
        CHECK(strcmp(r->node_id, "gpu-7:dit") == 0 && r->role == SDC__ROLE__ROLE_DIT_STAGE);
        CHECK(r->ucx_address.len == sizeof(addr) && memcmp(r->ucx_address.data, addr, sizeof(addr)) == 0);
        CHECK(r->pipeline == 3 && r->stage == 1 && r->block_begin == 20 && r->block_end == 40);
        sdc_wire_msg_free(&msg);
    }

    Sdc__Assign as = SDC__ASSIGN__INIT;
    as.job_id = "job-new";
    as.attempt = 1;
    as.pipeline = 2;
    as.params_json = "{\"prompt\": \"a cat\", \"steps\": 50}";
    as.resume_step = 10;
    sdc_wire_envelope_init(&env, "coord");
    env.msg_case = SDC__ENVELOPE__MSG_ASSIGN;
    env.assign = &as;
    if (roundtrip(&env, &msg) == SDC_OK) {
        CHECK_EQ_INT(msg.type, SDC_WIRE_ASSIGN);
        CHECK(strcmp(msg.env->assign->params_json, as.params_json) == 0);
        CHECK(msg.env->assign->resume_step == 10 && msg.env->assign->pipeline == 2);
        sdc_wire_msg_free(&msg);
    }

    Sdc__StepDone sd = SDC__STEP_DONE__INIT;
    sd.job_id = "job-a";
    sd.attempt = 2;
    sd.step = 49;
    env.msg_case = SDC__ENVELOPE__MSG_STEP_DONE;
    env.step_done = &sd;
    if (roundtrip(&env, &msg) == SDC_OK) {
        CHECK_EQ_INT(msg.type, SDC_WIRE_STEP_DONE);
        CHECK_EQ_INT(msg.env->step_done->step, 49);
        CHECK_EQ_INT(msg.env->step_done->attempt, 2);
        sdc_wire_msg_free(&msg);
    }

    Sdc__JobDone jd = SDC__JOB_DONE__INIT;
    jd.job_id = "job-b";
    jd.attempt = 1;
    jd.result_key = "sdc:result:job-b";
    env.msg_case = SDC__ENVELOPE__MSG_JOB_DONE;
    env.job_done = &jd;
    if (roundtrip(&env, &msg) == SDC_OK) {
        CHECK(strcmp(msg.env->job_done->result_key, "sdc:result:job-b") == 0);
        sdc_wire_msg_free(&msg);
    }

    Sdc__Error er = SDC__ERROR__INIT;
    er.job_id = "job-a";
    er.attempt = 2;
    er.code = SDC_ERR_NOMEM;
    er.message = "stage 1: out of device memory";
    env.msg_case = SDC__ENVELOPE__MSG_ERROR;
    env.error = &er;
    if (roundtrip(&env, &msg) == SDC_OK) {
        CHECK_EQ_INT(msg.type, SDC_WIRE_ERROR);
        CHECK_EQ_INT(msg.env->error->code, SDC_ERR_NOMEM);
        CHECK(strcmp(msg.env->error->message, er.message) == 0);
        sdc_wire_msg_free(&msg);
    }

    Sdc__Heartbeat hb = SDC__HEARTBEAT__INIT;
    hb.node_id = "gpu-7:dit";
    hb.load = 0.75f;
    hb.time_us = 1700000000123456;
    env.msg_case = SDC__ENVELOPE__MSG_HEARTBEAT;
    env.heartbeat = &hb;
    if (roundtrip(&env, &msg) == SDC_OK) {
        CHECK(msg.env->heartbeat->load == 0.75f);
        CHECK(msg.env->heartbeat->time_us == 1700000000123456);
        sdc_wire_msg_free(&msg);
    }

    Sdc__Shutdown sh = SDC__SHUTDOWN__INIT;
    sh.reason = "drain";
    env.msg_case = SDC__ENVELOPE__MSG_SHUTDOWN;
    env.shutdown = &sh;
    if (roundtrip(&env, &msg) == SDC_OK) {
        CHECK_EQ_INT(msg.type, SDC_WIRE_SHUTDOWN);
        CHECK(strcmp(msg.env->shutdown->reason, "drain") == 0);
        sdc_wire_msg_free(&msg);
    }
    CHECK(strcmp(sdc_wire_type_name(SDC_WIRE_HEARTBEAT), "heartbeat") == 0);
}

/* Every proper prefix of a valid frame, and the frame with a byte more. */
static void test_truncated_every_byte(void)
{
    fixture_t f;
    fixture_init(&f);
    uint8_t buf[BUF_CAP];
    size_t len = encode(&f.env, buf);
    sdc_wire_limits_t lim = test_limits();
    size_t plen = (size_t)f.th.payload_bytes;
    for (size_t cut = 0; cut < len; cut++)
        EXPECT_FAULT(buf, cut, plen, &lim, SDC_WIRE_FAULT_TRUNCATED);
    buf[len] = 0;
    EXPECT_FAULT(buf, len + 1, plen, &lim, SDC_WIRE_FAULT_FRAME);
    /* The payload that came with it is shorter or longer than described. */
    EXPECT_FAULT(buf, len, plen - 1, &lim, SDC_WIRE_FAULT_TRUNCATED);
    EXPECT_FAULT(buf, len, 0, &lim, SDC_WIRE_FAULT_TRUNCATED);
    EXPECT_FAULT(buf, len, plen + 1, &lim, SDC_WIRE_FAULT_LAYOUT);
}

/* A sender that framed a truncated envelope (valid CRC): never accepted. */
static void test_truncated_envelope(void)
{
    fixture_t f;
    fixture_init(&f);
    uint8_t buf[BUF_CAP], frame[BUF_CAP];
    size_t len = encode(&f.env, buf);
    size_t n = len - SDC_WIRE_FRAME_BYTES;
    sdc_wire_limits_t lim = test_limits();
    int accepted = 0;
    for (size_t cut = 0; cut < n; cut++) {
        memcpy(frame, buf, SDC_WIRE_FRAME_BYTES);
        memcpy(frame + SDC_WIRE_FRAME_BYTES, buf + SDC_WIRE_FRAME_BYTES, cut);
        frame[4] = (uint8_t)cut;
        frame[5] = (uint8_t)(cut >> 8);
        frame[6] = frame[7] = 0;
        uint32_t crc = sdc_wire_crc32c(0, frame + SDC_WIRE_FRAME_BYTES, cut);
        for (int i = 0; i < 4; i++)
            frame[8 + i] = (uint8_t)(crc >> (8 * i));
        sdc_wire_msg_t msg;
        sdc_error_t err = {0};
        sdc_status_t st = sdc_wire_decode(frame, SDC_WIRE_FRAME_BYTES + cut,
                                          (size_t)f.th.payload_bytes, &lim, job_table, NULL,
                                          &msg, &err);
        accepted += st == SDC_OK;
        CHECK_MSG(st != SDC_OK, "prefix of %zu/%zu bytes accepted", cut, n);
        CHECK(msg.fault != SDC_WIRE_FAULT_NONE && err.msg[0]);
        sdc_wire_msg_free(&msg);
    }
    CHECK_EQ_INT(accepted, 0);
}

/* Deterministic generator for the flip tests. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void test_byte_flips(void)
{
    fixture_t f;
    fixture_init(&f);
    uint8_t buf[BUF_CAP], bad[BUF_CAP];
    size_t len = encode(&f.env, buf);
    size_t plen = (size_t)f.th.payload_bytes;
    sdc_wire_limits_t lim = test_limits();
    uint64_t seed = 0x5DC5DC5DCull;
    /* Every byte of the frame, flipped by a random non-zero mask: the frame
     * CRC catches all of them, and the fault names the region hit. */
    for (size_t pos = 0; pos < len; pos++) {
        memcpy(bad, buf, len);
        uint8_t mask = (uint8_t)(rng_next(&seed) % 255 + 1);
        bad[pos] ^= mask;
        sdc_wire_msg_t msg;
        sdc_error_t err = {0};
        sdc_status_t st = sdc_wire_decode(bad, len, plen, &lim, job_table, NULL, &msg, &err);
        CHECK_MSG(st != SDC_OK, "flip of byte %zu by %02x accepted", pos, mask);
        if (pos < 4)
            CHECK_EQ_INT(msg.fault, SDC_WIRE_FAULT_FRAME);
        else if (pos < 8)
            CHECK_MSG(msg.fault == SDC_WIRE_FAULT_TRUNCATED || msg.fault == SDC_WIRE_FAULT_FRAME,
                      "length byte %zu: %s", pos, sdc_wire_fault_name(msg.fault));
        else
            CHECK_MSG(msg.fault == SDC_WIRE_FAULT_CHECKSUM, "byte %zu: %s", pos,
                      sdc_wire_fault_name(msg.fault));
        CHECK_EQ_INT(st, SDC_ERR_FORMAT);
        sdc_wire_msg_free(&msg);
    }
}

/* A buggy or hostile sender that frames corrupted envelopes with a valid
 * CRC: whatever parses must still satisfy every invariant the receiver
 * relies on, and nothing may crash or leak. */
static void test_mutations_with_valid_crc(void)
{
    fixture_t f;
    fixture_init(&f);
    uint8_t buf[BUF_CAP], bad[BUF_CAP];
    size_t len = encode(&f.env, buf);
    size_t n = len - SDC_WIRE_FRAME_BYTES;
    size_t plen = (size_t)f.th.payload_bytes;
    sdc_wire_limits_t lim = test_limits();
    uint64_t seed = 42;
    int accepted = 0, parsed_but_rejected = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(bad, buf, len);
        int flips = 1 + (int)(rng_next(&seed) % 4);
        for (int k = 0; k < flips; k++)
            bad[SDC_WIRE_FRAME_BYTES + rng_next(&seed) % n] ^= (uint8_t)(rng_next(&seed) % 255 + 1);
        uint32_t crc = sdc_wire_crc32c(0, bad + SDC_WIRE_FRAME_BYTES, n);
        for (int i = 0; i < 4; i++)
            bad[8 + i] = (uint8_t)(crc >> (8 * i));
        sdc_wire_msg_t msg;
        sdc_error_t err = {0};
        sdc_status_t st = sdc_wire_decode(bad, len, plen, &lim, job_table, NULL, &msg, &err);
        if (st != SDC_OK) {
            CHECK(msg.env == NULL && msg.fault != SDC_WIRE_FAULT_NONE);
            CHECK_EQ_INT(st, sdc_wire_fault_status(msg.fault));
            parsed_but_rejected += msg.fault != SDC_WIRE_FAULT_PARSE;
            continue;
        }
        accepted++;
        if (msg.type == SDC_WIRE_TENSOR) {
            const Sdc__TensorHeader *h = msg.env->tensor;
            CHECK(h->n_samples >= 1 && h->n_samples <= lim.max_samples);
            CHECK(h->payload_bytes == plen);
            for (size_t i = 0; i < h->n_tensors; i++) {
                const Sdc__TensorDesc *t = h->tensors[i];
                CHECK(t->sample < h->n_samples);
                CHECK(t->offset + t->nbytes <= h->payload_bytes && t->nbytes > 0);
            }
        }
        sdc_wire_msg_free(&msg);
    }
    /* Most mutations are caught by validation after a successful parse,
     * the rest by the parser; the few accepted change a value within its
     * range (a timestep, a guidance scale). */
    CHECK(parsed_but_rejected > 1000);
    CHECK(accepted < 20000 / 4);
}

static void test_oversized(void)
{
    fixture_t f;
    sdc_wire_limits_t lim = test_limits();
    uint8_t buf[BUF_CAP];

    fixture_init(&f);
    lim.max_header = 100;
    size_t len = encode(&f.env, buf);
    EXPECT_FAULT(buf, len, (size_t)f.th.payload_bytes, &lim, SDC_WIRE_FAULT_OVERSIZED);

    fixture_init(&f); /* more samples than allowed */
    static const char *extra_ids[] = {"j3", "j4", "j5", "j6", "j7", "j8"};
    Sdc__Sample extra[6];
    Sdc__Sample *sp[FX_SAMPLES + 6];
    for (int i = 0; i < FX_SAMPLES; i++)
        sp[i] = &f.s[i];
    for (int i = 0; i < 6; i++) {
        extra[i] = f.s[2];
        extra[i].job_id = (char *)extra_ids[i];
        sp[FX_SAMPLES + i] = &extra[i];
    }
    f.th.samples = sp;
    f.th.n_samples = FX_SAMPLES + 6;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_OVERSIZED);

    fixture_init(&f); /* more tensors than allowed */
    Sdc__TensorDesc *many[33];
    for (int i = 0; i < 33; i++)
        many[i] = &f.t[i % FX_TENSORS];
    f.th.tensors = many;
    f.th.n_tensors = 33;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_OVERSIZED);

    fixture_init(&f); /* payload above the cap */
    f.th.payload_bytes = (1u << 20) + 1;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_OVERSIZED);

    fixture_init(&f); /* token count above max_tokens */
    f.s[0].n_txt = 240;
    f.shape[0][0] = 24 + 240;
    sdc_wire_layout(&f.th, 64, NULL);
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_OVERSIZED);

    fixture_init(&f); /* uint32 wrap of n_img + n_txt must not pass */
    f.s[0].n_txt = UINT32_MAX - 10;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_OVERSIZED);

    fixture_init(&f);
    f.s[1].steps = 101;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_OVERSIZED);

    fixture_init(&f);
    f.s[2].grid_h = 66;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_OVERSIZED);

    fixture_init(&f); /* text rows above max_tokens */
    f.t[5].name = "prompt_embeds";
    f.t[5].n_shape = 2;
    f.shape[5][0] = 257;
    f.shape[5][1] = 48;
    sdc_wire_layout(&f.th, 64, NULL);
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_OVERSIZED);

    fixture_init(&f); /* a job id too long for a Redis key */
    char longid[80];
    memset(longid, 'x', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = 0;
    f.s[2].job_id = longid;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_OVERSIZED);
}

static void test_bad_shapes(void)
{
    fixture_t f;

    fixture_init(&f); /* negative dim */
    f.shape[1][0] = -64;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_SHAPE);

    fixture_init(&f); /* zero dim */
    f.shape[0][1] = 0;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_SHAPE);

    fixture_init(&f); /* product overflows int64 */
    f.shape[0][0] = INT64_C(1) << 40;
    f.shape[0][1] = INT64_C(1) << 40;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_SHAPE);

    fixture_init(&f); /* numel * 4 overflows uint64 */
    f.shape[0][0] = INT64_C(1) << 31;
    f.shape[0][1] = INT64_C(1) << 31;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_SHAPE);

    fixture_init(&f); /* nbytes disagrees with shape x dtype */
    f.t[3].nbytes -= 4;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_SHAPE);

    fixture_init(&f); /* not the model's width */
    f.shape[2][1] = 128;
    f.t[2].nbytes *= 2;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_SHAPE);

    fixture_init(&f); /* rows disagree with the sample's token count */
    f.shape[4][0] = 30;
    f.t[4].nbytes = 30 * 64 * 4;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_SHAPE);

    fixture_init(&f); /* wrong rank */
    f.t[1].n_shape = 2;
    f.shape[1][1] = 1;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_SHAPE);

    fixture_init(&f); /* n_img inconsistent with the grid */
    f.s[0].n_img = 25;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_SHAPE);

    fixture_init(&f); /* grid not a multiple of the patch */
    f.s[0].grid_h = 7;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_SHAPE);

    fixture_init(&f); /* an image-to-image job's image latents: the sample's grid */
    f.t[1].name = "image_latents";
    f.t[1].n_shape = 3;
    f.shape[1][0] = 16;
    f.shape[1][1] = 8;
    f.shape[1][2] = 12;
    sdc_wire_layout(&f.th, 64, NULL);
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_NONE);
    f.shape[1][2] = 8;
    sdc_wire_layout(&f.th, 64, NULL);
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_SHAPE);

    fixture_init(&f); /* mask rows differ from its embeddings */
    static int64_t emb[2] = {20, 48}, mask[1] = {21};
    Sdc__TensorDesc te = SDC__TENSOR_DESC__INIT, tm = SDC__TENSOR_DESC__INIT;
    te.name = "prompt_embeds";
    te.dtype = SDC__DTYPE__DTYPE_F32;
    te.n_shape = 2;
    te.shape = emb;
    tm.name = "prompt_embeds_mask";
    tm.dtype = SDC__DTYPE__DTYPE_I64;
    tm.n_shape = 1;
    tm.shape = mask;
    Sdc__TensorDesc *tp[2] = {&te, &tm};
    f.th.tensors = tp;
    f.th.n_tensors = 2;
    sdc_wire_layout(&f.th, 0, NULL);
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_SHAPE);
    mask[0] = 20;
    sdc_wire_layout(&f.th, 0, NULL);
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_NONE);
}

static void test_bad_layout(void)
{
    fixture_t f;

    fixture_init(&f); /* two tensors overlap */
    f.t[3].offset = f.t[2].offset + 64;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_LAYOUT);

    fixture_init(&f); /* overlap in a different array order */
    f.t[1].offset = f.t[4].offset + 128;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_LAYOUT);

    fixture_init(&f); /* past the end of the payload */
    f.t[5].offset = f.th.payload_bytes - 128;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_LAYOUT);

    fixture_init(&f); /* offset + nbytes wraps around */
    f.t[5].offset = UINT64_MAX - 103;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_LAYOUT);

    fixture_init(&f); /* not aligned to the element size */
    f.t[1].offset += 2;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_LAYOUT);

    fixture_init(&f); /* a control message with payload bytes */
    Sdc__Shutdown sh = SDC__SHUTDOWN__INIT;
    sdc_wire_envelope_init(&f.env, "coord");
    f.env.msg_case = SDC__ENVELOPE__MSG_SHUTDOWN;
    f.env.shutdown = &sh;
    uint8_t buf[BUF_CAP];
    sdc_wire_limits_t lim = test_limits();
    size_t len = encode(&f.env, buf);
    EXPECT_FAULT(buf, len, 16, &lim, SDC_WIRE_FAULT_LAYOUT);
    EXPECT_FAULT(buf, len, 0, &lim, SDC_WIRE_FAULT_NONE);
}

static void test_bad_dtype(void)
{
    fixture_t f;

    fixture_init(&f);
    f.t[2].dtype = (Sdc__DType)99;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_DTYPE);

    fixture_init(&f);
    f.t[2].dtype = SDC__DTYPE__DTYPE_UNSPECIFIED;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_DTYPE);

    fixture_init(&f); /* BF16 activations to a float32-only receiver */
    f.t[0].dtype = SDC__DTYPE__DTYPE_BF16;
    sdc_wire_layout(&f.th, 64, NULL);
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_DTYPE);

    fixture_init(&f); /* ... which a receiver that allows BF16 accepts */
    f.t[0].dtype = SDC__DTYPE__DTYPE_BF16;
    sdc_wire_layout(&f.th, 64, NULL);
    uint8_t buf[BUF_CAP];
    size_t len = encode(&f.env, buf);
    sdc_wire_limits_t lim = test_limits();
    lim.float_dtypes |= 1u << SDC_DTYPE_BF16;
    EXPECT_FAULT(buf, len, (size_t)f.th.payload_bytes, &lim, SDC_WIRE_FAULT_NONE);

    fixture_init(&f); /* integer activations */
    f.t[1].dtype = SDC__DTYPE__DTYPE_I32;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_DTYPE);
}

static void test_bad_fields(void)
{
    fixture_t f;

    fixture_init(&f);
    f.env.version = 2;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_VERSION);

    fixture_init(&f);
    f.env.msg_case = SDC__ENVELOPE__MSG__NOT_SET;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_TYPE);

    fixture_init(&f);
    f.env.sender = "";
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_FIELD);

    fixture_init(&f);
    f.s[1].job_id = "job a";
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_FIELD);

    fixture_init(&f);
    f.t[3].name = "weights";
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_FIELD);

    fixture_init(&f);
    f.t[3].sample = 3;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_FIELD);

    fixture_init(&f);
    f.s[1].pass = SDC__PASS__PASS_COND; /* job-a cond twice */
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_FIELD);

    fixture_init(&f);
    f.t[3].name = "hidden"; /* two 'hidden' for sample 1 */
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_SHAPE);
    f.t[3].n_shape = 2;
    f.shape[3][0] = 34;
    f.shape[3][1] = 64;
    sdc_wire_layout(&f.th, 64, NULL);
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_FIELD);

    fixture_init(&f);
    f.s[0].step = 50;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_FIELD);

    fixture_init(&f);
    f.s[0].timestep = NAN;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_FIELD);

    fixture_init(&f); /* a single-job message whose samples disagree with it */
    f.th.job_id = "job-a";
    f.th.attempt = 2;
    f.th.step = 3;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_FIELD);
    f.th.n_samples = 2;
    f.th.n_tensors = 4;
    sdc_wire_layout(&f.th, 64, NULL);
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_NONE);

    fixture_init(&f);
    f.th.n_samples = 0;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_FIELD);

    Sdc__Envelope env;
    Sdc__Register reg = SDC__REGISTER__INIT;
    uint8_t addr[8] = {1};
    reg.node_id = "n1";
    reg.role = (Sdc__Role)9;
    reg.ucx_address.data = addr;
    reg.ucx_address.len = sizeof(addr);
    sdc_wire_envelope_init(&env, "n1");
    env.msg_case = SDC__ENVELOPE__MSG_REGISTRATION;
    env.registration = &reg;
    uint8_t buf[BUF_CAP];
    sdc_wire_limits_t lim = test_limits();
    size_t len = encode(&env, buf);
    EXPECT_FAULT(buf, len, 0, &lim, SDC_WIRE_FAULT_FIELD);
    reg.role = SDC__ROLE__ROLE_DIT_STAGE;
    reg.block_begin = 40;
    reg.block_end = 61;
    len = encode(&env, buf);
    EXPECT_FAULT(buf, len, 0, &lim, SDC_WIRE_FAULT_OVERSIZED);
    reg.block_end = 40;
    len = encode(&env, buf);
    EXPECT_FAULT(buf, len, 0, &lim, SDC_WIRE_FAULT_FIELD);
    reg.role = SDC__ROLE__ROLE_VAE;
    len = encode(&env, buf);
    EXPECT_FAULT(buf, len, 0, &lim, SDC_WIRE_FAULT_FIELD);
    reg.block_begin = reg.block_end = 0;
    reg.ucx_address.len = 0;
    len = encode(&env, buf);
    EXPECT_FAULT(buf, len, 0, &lim, SDC_WIRE_FAULT_FIELD);

    Sdc__Error er = SDC__ERROR__INIT;
    er.code = 0;
    env.msg_case = SDC__ENVELOPE__MSG_ERROR;
    env.error = &er;
    len = encode(&env, buf);
    EXPECT_FAULT(buf, len, 0, &lim, SDC_WIRE_FAULT_FIELD);
    er.code = SDC_ERR_IO; /* a node-level error, no job */
    len = encode(&env, buf);
    EXPECT_FAULT(buf, len, 0, &lim, SDC_WIRE_FAULT_NONE);

    Sdc__Heartbeat hb = SDC__HEARTBEAT__INIT;
    hb.node_id = "n1";
    hb.load = -1;
    hb.time_us = 5;
    env.msg_case = SDC__ENVELOPE__MSG_HEARTBEAT;
    env.heartbeat = &hb;
    len = encode(&env, buf);
    EXPECT_FAULT(buf, len, 0, &lim, SDC_WIRE_FAULT_FIELD);
}

static void test_stale_attempt(void)
{
    fixture_t f;

    fixture_init(&f); /* attempt 0 is malformed, not stale */
    f.s[1].attempt = 0;
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_FIELD);

    fixture_init(&f); /* no sample current */
    f.s[0].attempt = f.s[1].attempt = 1; /* job-a is at attempt 2 */
    f.s[2].job_id = "job-old";           /* unknown */
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_STALE);

    fixture_init(&f);
    f.s[0].job_id = f.s[1].job_id = f.s[2].job_id = "job-gone";
    f.s[2].pass = SDC__PASS__PASS_UNCOND;
    f.s[1].job_id = "job-gone-2";
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_UNKNOWN_JOB);

    /* Mixed micro-batch: job-a stale, job-b current -> only job-b is live. */
    fixture_init(&f);
    f.s[0].attempt = f.s[1].attempt = 1;
    uint8_t buf[BUF_CAP];
    size_t len = encode(&f.env, buf);
    sdc_wire_limits_t lim = test_limits();
    sdc_wire_msg_t msg;
    sdc_error_t err = {0};
    sdc_status_t st = sdc_wire_decode(buf, len, (size_t)f.th.payload_bytes, &lim, job_table, NULL,
                                      &msg, &err);
    CHECK_MSG(st == SDC_OK, "%s", err.msg);
    CHECK_EQ_INT(msg.live, 1u << 2);
    sdc_wire_msg_free(&msg);
    /* Without a job table everything is live. */
    st = sdc_wire_decode(buf, len, (size_t)f.th.payload_bytes, &lim, NULL, NULL, &msg, &err);
    CHECK_EQ_INT(st, SDC_OK);
    CHECK_EQ_INT(msg.live, 0x7);
    sdc_wire_msg_free(&msg);

    /* Single-job message of an old attempt. */
    fixture_init(&f);
    f.th.job_id = "job-a";
    f.th.attempt = 1;
    f.th.step = 3;
    f.s[0].attempt = f.s[1].attempt = 1;
    f.th.n_samples = 2;
    f.th.n_tensors = 4;
    sdc_wire_layout(&f.th, 64, NULL);
    EXPECT_FIXTURE_FAULT(&f, SDC_WIRE_FAULT_STALE);

    /* Control messages. */
    Sdc__Envelope env;
    Sdc__StepDone sd = SDC__STEP_DONE__INIT;
    sd.job_id = "job-a";
    sd.attempt = 1;
    sd.step = 4;
    sdc_wire_envelope_init(&env, "stage-3");
    env.msg_case = SDC__ENVELOPE__MSG_STEP_DONE;
    env.step_done = &sd;
    len = encode(&env, buf);
    EXPECT_FAULT(buf, len, 0, &lim, SDC_WIRE_FAULT_STALE);
    sd.job_id = "job-zzz";
    len = encode(&env, buf);
    EXPECT_FAULT(buf, len, 0, &lim, SDC_WIRE_FAULT_UNKNOWN_JOB);
    sd.job_id = "job-a";
    sd.attempt = 3; /* newer than the table knows: the table says current */
    len = encode(&env, buf);
    EXPECT_FAULT(buf, len, 0, &lim, SDC_WIRE_FAULT_NONE);

    Sdc__Assign as = SDC__ASSIGN__INIT;
    as.job_id = "job-new";
    as.attempt = 1;
    as.params_json = "{}";
    env.msg_case = SDC__ENVELOPE__MSG_ASSIGN;
    env.assign = &as;
    len = encode(&env, buf);
    EXPECT_FAULT(buf, len, 0, &lim, SDC_WIRE_FAULT_NONE); /* Assign introduces jobs */
    as.job_id = "job-a";
    len = encode(&env, buf);
    EXPECT_FAULT(buf, len, 0, &lim, SDC_WIRE_FAULT_STALE);
}

static void test_encode_errors(void)
{
    fixture_t f;
    fixture_init(&f);
    uint8_t buf[64];
    size_t len = 0;
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_wire_encode(&f.env, buf, sizeof(buf), &len, &err), SDC_ERR_RANGE);
    CHECK(strstr(err.msg, "buffer") != NULL);
    CHECK_EQ_INT(sdc_wire_layout(&f.th, 48, &err), SDC_ERR_INVALID_ARG);
    f.t[2].dtype = (Sdc__DType)42;
    CHECK_EQ_INT(sdc_wire_layout(&f.th, 0, &err), SDC_ERR_INVALID_ARG);
    /* Limits a receiver could not mean. */
    uint8_t frame[BUF_CAP];
    fixture_init(&f);
    size_t n = encode(&f.env, frame);
    sdc_wire_limits_t lim = test_limits();
    lim.patch = 0;
    sdc_wire_msg_t msg;
    CHECK_EQ_INT(sdc_wire_decode(frame, n, (size_t)f.th.payload_bytes, &lim, NULL, NULL, &msg, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK(msg.env == NULL);
}

/* Frames env_bytes (a raw Envelope) with a correct CRC into frame. */
static size_t frame_raw(const uint8_t *env_bytes, size_t n, uint8_t *frame)
{
    memcpy(frame, "SDCF", 4);
    uint32_t crc = sdc_wire_crc32c(0, env_bytes, n);
    for (int i = 0; i < 4; i++) {
        frame[4 + i] = (uint8_t)(n >> (8 * i));
        frame[8 + i] = (uint8_t)(crc >> (8 * i));
    }
    memcpy(frame + SDC_WIRE_FRAME_BYTES, env_bytes, n);
    return n + SDC_WIRE_FRAME_BYTES;
}

/* Field number 0 spelt as a two-byte tag (0x82 0x00): protobuf-c parses it
 * as an unknown field but cannot parse its own re-encoding of it. Found by
 * fuzz/fuzz_wire.c; it must be rejected at the top level and nested. */
static void test_field_number_zero(void)
{
    sdc_wire_limits_t lim = test_limits();
    uint8_t env_bytes[256], frame[512];
    Sdc__Envelope env;
    Sdc__Shutdown sh = SDC__SHUTDOWN__INIT;
    sh.reason = "done";
    sdc_wire_envelope_init(&env, "coordinator-0");
    env.msg_case = SDC__ENVELOPE__MSG_SHUTDOWN;
    env.shutdown = &sh;
    size_t n = sdc__envelope__pack(&env, env_bytes);
    /* Top level: an extra length-delimited field 0 of 2 bytes. */
    static const uint8_t zero_field[] = {0x82, 0x00, 0x02, 'h', 'i'};
    memcpy(env_bytes + n, zero_field, sizeof(zero_field));
    size_t len = frame_raw(env_bytes, n + sizeof(zero_field), frame);
    EXPECT_FAULT(frame, len, 0, &lim, SDC_WIRE_FAULT_PARSE);
    sdc_wire_msg_t msg;
    sdc_error_t err = {0};
    sdc_wire_decode(frame, len, 0, &lim, job_table, NULL, &msg, &err);
    CHECK_MSG(strstr(err.msg, "field number 0") != NULL, "%s", err.msg);

    /* Nested inside the Shutdown: Envelope{version, sender} + field 16 {reason, field 0}. */
    env.msg_case = SDC__ENVELOPE__MSG__NOT_SET;
    n = sdc__envelope__pack(&env, env_bytes);
    uint8_t sub[64];
    size_t sn = sdc__shutdown__pack(&sh, sub);
    memcpy(sub + sn, zero_field, sizeof(zero_field));
    sn += sizeof(zero_field);
    env_bytes[n++] = 0x82; /* field 16, length-delimited */
    env_bytes[n++] = 0x01;
    env_bytes[n++] = (uint8_t)sn;
    memcpy(env_bytes + n, sub, sn);
    len = frame_raw(env_bytes, n + sn, frame);
    EXPECT_FAULT(frame, len, 0, &lim, SDC_WIRE_FAULT_PARSE);

    /* The same nested message without field 0 is accepted. */
    sn -= sizeof(zero_field);
    env_bytes[n - 1] = (uint8_t)sn;
    len = frame_raw(env_bytes, n + sn, frame);
    EXPECT_FAULT(frame, len, 0, &lim, SDC_WIRE_FAULT_NONE);
}

int main(void)
{
    RUN(test_crc32c);
    RUN(test_roundtrip_tensor);
    RUN(test_roundtrip_control);
    RUN(test_truncated_every_byte);
    RUN(test_truncated_envelope);
    RUN(test_byte_flips);
    RUN(test_mutations_with_valid_crc);
    RUN(test_oversized);
    RUN(test_bad_shapes);
    RUN(test_bad_layout);
    RUN(test_bad_dtype);
    RUN(test_bad_fields);
    RUN(test_stale_attempt);
    RUN(test_encode_errors);
    RUN(test_field_number_zero);
    TEST_EXIT();
}
