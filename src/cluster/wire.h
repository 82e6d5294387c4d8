/*
 * wire.h: the bytes sdc processes exchange. Every active message carries one
 * framed Envelope (proto/sdc.proto) as its header; a TensorHeader envelope is
 * followed by a raw payload it describes. This module frames, encodes,
 * decodes and, above all, validates: a received header is untrusted until
 * sdc_wire_decode has checked it against the receiver's limits and job table.
 *
 * Not the transport (ucx.h moves the bytes) and not policy: what a receiver
 * does with a rejected message (drop, log, count) is its caller's choice.
 *
 * Frame layout, little-endian:
 *   u32 magic "SDCF" | u32 envelope length N | u32 CRC-32C of the envelope |
 *   N bytes of protobuf Envelope
 * The frame CRC turns every truncation and byte flip of a header into a
 * clear rejection instead of a plausible but wrong message.
 */
#ifndef SDC_WIRE_H
#define SDC_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "sdc.pb-c.h"

#define SDC_WIRE_VERSION 1u
#define SDC_WIRE_FRAME_BYTES 12u      /* magic + length + CRC before the envelope */
#define SDC_WIRE_MAX_SAMPLES 64u      /* sdc_wire_msg_t.live is one bit per sample */
#define SDC_WIRE_ID_MAX 64u           /* job and node ids: [A-Za-z0-9._:-]{1,64} */
#define SDC_WIRE_ADDRESS_MAX 4096u    /* Register.ucx_address bytes */
#define SDC_WIRE_PARAMS_MAX 65536u    /* Assign.params_json bytes */
#define SDC_WIRE_TEXT_MAX 1024u       /* Error.message, Shutdown.reason, JobDone.result_key */

/* Envelope contents, in the order of wire.c's dispatch table. */
typedef enum {
    SDC_WIRE_REGISTER = 0,
    SDC_WIRE_ASSIGN,
    SDC_WIRE_STEP_DONE,
    SDC_WIRE_JOB_DONE,
    SDC_WIRE_ERROR,
    SDC_WIRE_HEARTBEAT,
    SDC_WIRE_SHUTDOWN,
    SDC_WIRE_TENSOR,
    SDC_WIRE_TYPE_COUNT
} sdc_wire_type_t;

/* Why a message was rejected; each maps to one sdc_status_t (in brackets). */
typedef enum {
    SDC_WIRE_FAULT_NONE = 0,
    SDC_WIRE_FAULT_TRUNCATED,   /* shorter than its frame or header says [FORMAT] */
    SDC_WIRE_FAULT_FRAME,       /* bad magic, or bytes past the frame [FORMAT] */
    SDC_WIRE_FAULT_CHECKSUM,    /* header or payload CRC-32C mismatch [FORMAT] */
    SDC_WIRE_FAULT_PARSE,       /* the envelope is not valid protobuf [FORMAT] */
    SDC_WIRE_FAULT_VERSION,     /* Envelope.version is not ours [UNSUPPORTED] */
    SDC_WIRE_FAULT_TYPE,        /* no message in the envelope [FORMAT] */
    SDC_WIRE_FAULT_OVERSIZED,   /* a size or count above the limits [RANGE] */
    SDC_WIRE_FAULT_FIELD,       /* an impossible field value [FORMAT] */
    SDC_WIRE_FAULT_DTYPE,       /* unknown dtype, or not one this tensor may have [UNSUPPORTED] */
    SDC_WIRE_FAULT_SHAPE,       /* bad dims, nbytes != numel * size, or not the model's [SHAPE] */
    SDC_WIRE_FAULT_LAYOUT,      /* offsets outside the payload, misaligned or overlapping [FORMAT] */
    SDC_WIRE_FAULT_UNKNOWN_JOB, /* a job the receiver does not know [NOT_FOUND] */
    SDC_WIRE_FAULT_STALE,       /* an attempt older than the job's current one [RANGE] */
    SDC_WIRE_FAULT_COUNT
} sdc_wire_fault_t;

/*
 * What a receiver accepts. Model sizes come from the model's config.json;
 * the caps from the deployment. Every field must be set: a zero cap accepts
 * nothing of that kind.
 *
 * Tensors a TensorHeader may describe (per sample; names are unique per
 * sample):
 *   hidden                [n_img + n_txt, hidden]   float   activations, image rows first
 *   temb                  [hidden]                  float   time/guidance embedding
 *   latent                [latent_channels, grid_h, grid_w]  float
 *   guider_state          [latent_channels, grid_h, grid_w]  float  (APG momentum)
 *   image_latents         [latent_channels, grid_h, grid_w]  float  (image-to-image:
 *                                                   the encoded input image, step 0)
 *   prompt_embeds         [rows, text_dim]          float   LLM hidden states
 *   prompt_embeds_mask    [rows]                    mask    rows as prompt_embeds
 *   prompt_embeds_2       [rows, text_dim_2]        float   ByT5 states
 *   prompt_embeds_mask_2  [rows]                    mask    rows as prompt_embeds_2
 *   image                 [grid_h * image_factor, grid_w * image_factor, 3]  U8
 *                                                   a decoded RGB8 image (to a refiner)
 * with rows <= max_tokens; "float" is any dtype in float_dtypes, "mask" is
 * BOOL, U8, I32 or I64. Cond and uncond text is told apart by Sample.pass.
 */
typedef struct {
    size_t max_header;        /* framed header bytes (at most sdc_ucx_max_header) */
    uint64_t max_payload;     /* payload bytes of one message */
    uint32_t max_samples;     /* per message, <= SDC_WIRE_MAX_SAMPLES */
    uint32_t max_tensors;     /* per message */
    uint32_t max_tokens;      /* n_img + n_txt of one sample; text rows */
    uint32_t max_grid;        /* grid_h, grid_w */
    uint32_t max_steps;       /* Sample.steps */
    uint32_t max_blocks;      /* DiT blocks of the model (Register block ranges) */
    uint32_t hidden;          /* model width */
    uint32_t patch;           /* latent pixels per token side */
    uint32_t latent_channels;
    uint32_t text_dim;        /* LLM embedding width */
    uint32_t text_dim_2;      /* ByT5 embedding width */
    uint32_t float_dtypes;    /* bit (1u << sdc_dtype_t) for each accepted float dtype */
    uint32_t image_factor;    /* image pixels per latent pixel (the VAE's); 0: no images */
} sdc_wire_limits_t;

/* The receiver's view of a job: is (job_id, attempt) the attempt it runs?
 * A receiver that learns of newer attempts from the message itself may
 * answer CURRENT for those. */
typedef enum {
    SDC_WIRE_JOB_CURRENT = 0,
    SDC_WIRE_JOB_STALE,
    SDC_WIRE_JOB_UNKNOWN
} sdc_wire_job_state_t;

typedef sdc_wire_job_state_t (*sdc_wire_job_fn)(void *arg, const char *job_id, uint32_t attempt);

/* A decoded message. env is NULL unless decoding succeeded; fault says why
 * it failed (SDC_WIRE_FAULT_NONE on success). */
typedef struct {
    Sdc__Envelope *env;
    sdc_wire_type_t type;
    sdc_wire_fault_t fault;
    /* TENSOR: bit i set when samples[i] belongs to a current attempt. A
     * message is rejected only when no sample is current; a stage drops the
     * others' rows. Other types: 1 when accepted. */
    uint64_t live;
} sdc_wire_msg_t;

const char *sdc_wire_type_name(sdc_wire_type_t type);
const char *sdc_wire_fault_name(sdc_wire_fault_t fault);
sdc_status_t sdc_wire_fault_status(sdc_wire_fault_t fault);

/* sdc__envelope__init plus the version and the sender's node id (borrowed). */
void sdc_wire_envelope_init(Sdc__Envelope *env, const char *sender);

/* Framed size of env, SDC_WIRE_FRAME_BYTES included. */
size_t sdc_wire_frame_size(const Sdc__Envelope *env);

/* Frames env into buf (cap bytes); *len is the frame size. The sender's own
 * messages are not validated here: decode them in tests. */
sdc_status_t sdc_wire_encode(const Sdc__Envelope *env, void *buf, size_t cap, size_t *len,
                             sdc_error_t *err);

/* Fills every tensor's nbytes (from dtype and shape), its offset (tensors
 * back to back in array order, each rounded up to a multiple of align and of
 * its element size; align 0 or a power of two) and h->payload_bytes. */
sdc_status_t sdc_wire_layout(Sdc__TensorHeader *h, size_t align, sdc_error_t *err);

/*
 * Decodes and validates a received header. payload_len is the number of
 * payload bytes that came with it (0 for control messages). job (may be
 * NULL: every job current) is asked about each (job_id, attempt) the message
 * names, after every structural check has passed. On failure msg->env is
 * NULL, msg->fault says what kind of failure, err says what and where.
 */
sdc_status_t sdc_wire_decode(const void *buf, size_t len, size_t payload_len,
                             const sdc_wire_limits_t *lim, sdc_wire_job_fn job, void *job_arg,
                             sdc_wire_msg_t *msg, sdc_error_t *err);

/* Checks the payload of a decoded TENSOR message against its optional
 * CRC-32C (a no-op without one). Sets msg->fault on mismatch. */
sdc_status_t sdc_wire_check_payload(sdc_wire_msg_t *msg, const void *payload, size_t len,
                                    sdc_error_t *err);

void sdc_wire_msg_free(sdc_wire_msg_t *msg);

/* The descriptor of tensor `name` of sample `sample`, or NULL. */
const Sdc__TensorDesc *sdc_wire_find_tensor(const Sdc__TensorHeader *h, uint32_t sample,
                                            const char *name);

/* CRC-32C (Castagnoli), continuing from crc (0 to start): SSE4.2 when the
 * CPU has it. crc32c("123456789") == 0xE3069283. */
uint32_t sdc_wire_crc32c(uint32_t crc, const void *data, size_t n);

#endif
