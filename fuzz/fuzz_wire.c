/*
 * fuzz_wire.c: libFuzzer target for wire message validation
 * (src/cluster/wire.c: sdc_wire_decode, sdc_wire_check_payload,
 * sdc_wire_find_tensor, sdc_wire_encode).
 *
 * Input layout: byte 0 flags, bytes 1..4 the payload length the header
 * arrives with (little-endian), the rest either an Envelope that the target
 * frames with a correct CRC (flags bit 0 clear: mutations reach the protobuf
 * parser and the semantic checks instead of dying at the frame CRC) or a raw
 * frame (bit 0 set: magic, length and CRC checks). Bits 1..2 pick the job
 * table's answer for unknown jobs, so stale and unknown paths are reached.
 *
 * Checked: every rejection has a fault and a message; an accepted message
 * encodes again to a frame that decodes the same way (validation is stable
 * under a round trip), and its tensors are findable by sample and name.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/wire.h"
#include "common/tensor.h"

#define MAX_FRAME (1u << 16)

/* The limits of a small model (the unit tests' tiny configuration). */
static const sdc_wire_limits_t limits = {
    .max_header = MAX_FRAME,
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
    .float_dtypes = (1u << SDC_DTYPE_F32) | (1u << SDC_DTYPE_BF16),
};

/* job-a runs attempt 2; other jobs get the answer the input picked. */
static sdc_wire_job_state_t job_table(void *arg, const char *job_id, uint32_t attempt)
{
    unsigned mode = *(const unsigned *)arg;
    if (strcmp(job_id, "job-a") == 0)
        return attempt < 2 ? SDC_WIRE_JOB_STALE : SDC_WIRE_JOB_CURRENT;
    return mode == 0 ? SDC_WIRE_JOB_CURRENT : mode == 1 ? SDC_WIRE_JOB_STALE : SDC_WIRE_JOB_UNKNOWN;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void check_accepted(const sdc_wire_msg_t *msg, size_t payload_len, unsigned mode)
{
    static uint8_t again[MAX_FRAME + SDC_WIRE_FRAME_BYTES];
    size_t len = 0;
    sdc_error_t err = {0};
    if (sdc_wire_encode(msg->env, again, sizeof(again), &len, &err) != SDC_OK)
        return; /* re-encoding may grow past the buffer: not a validation question */
    sdc_wire_msg_t m2;
    if (sdc_wire_decode(again, len, payload_len, &limits, job_table, &mode, &m2, &err) != SDC_OK ||
        m2.type != msg->type || m2.live != msg->live) {
        fprintf(stderr, "accepted message not stable under re-encoding: %s\n", err.msg);
        abort();
    }
    sdc_wire_msg_free(&m2);
    if (msg->type != SDC_WIRE_TENSOR)
        return;
    const Sdc__TensorHeader *h = msg->env->tensor;
    for (size_t i = 0; i < h->n_tensors; i++) {
        const Sdc__TensorDesc *t = h->tensors[i];
        if (t->offset > payload_len || t->nbytes > payload_len - t->offset)
            abort();
        if (sdc_wire_find_tensor(h, t->sample, t->name) != t)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t frame[MAX_FRAME + SDC_WIRE_FRAME_BYTES];
    static uint8_t payload[1u << 12];
    if (size < 5)
        return 0;
    unsigned flags = data[0], mode = (flags >> 1) & 3u;
    uint32_t payload_len = (uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16 |
                           (uint32_t)data[4] << 24;
    data += 5;
    size -= 5;
    const uint8_t *buf = data;
    size_t len = size;
    if (!(flags & 1)) {
        if (size > MAX_FRAME)
            return 0;
        memcpy(frame, "SDCF", 4);
        put_le32(frame + 4, (uint32_t)size);
        put_le32(frame + 8, sdc_wire_crc32c(0, data, size));
        memcpy(frame + SDC_WIRE_FRAME_BYTES, data, size);
        buf = frame;
        len = size + SDC_WIRE_FRAME_BYTES;
    }
    sdc_wire_msg_t msg;
    sdc_error_t err = {0};
    sdc_status_t st = sdc_wire_decode(buf, len, payload_len, &limits, job_table, &mode, &msg, &err);
    if (st != SDC_OK) {
        if (msg.env || msg.fault == SDC_WIRE_FAULT_NONE || !err.msg[0] ||
            st != sdc_wire_fault_status(msg.fault))
            abort();
        return 0;
    }
    if (!msg.env || msg.fault != SDC_WIRE_FAULT_NONE || !msg.live)
        abort();
    check_accepted(&msg, payload_len, mode);
    if (msg.type == SDC_WIRE_TENSOR && payload_len <= sizeof(payload)) {
        memset(payload, 0x5a, payload_len);
        if (sdc_wire_check_payload(&msg, payload, payload_len, &err) != SDC_OK &&
            msg.fault != SDC_WIRE_FAULT_CHECKSUM)
            abort();
    }
    sdc_wire_msg_free(&msg);
    return 0;
}
