/*
 * jobs.h: the cluster's Redis schema as functions (docs/ARCHITECTURE.md,
 * "Redis schema"). Key names below omit the configurable prefix ("sdc:").
 *
 *   jobs              stream, group "coordinators": entries {id, attempt, params}
 *   job:<id>          hash: state, attempt, step, steps (that run), params, pipeline, owner,
 *                     entry (the stream entry of the current attempt), error,
 *                     result, created_ms, updated_ms, <state>_ms,
 *                     encoder, decoder ("<attempt>:<node id>": the text
 *                     encoder that took the job, the VAE node that took its
 *                     final latent)
 *   job:<id>:events   stream capped near events_maxlen: {state, attempt, step,
 *                     steps, ts[, error]} per transition
 *   job:<id>:image    string: an image-to-image job's input image (PNG or
 *                     JPEG bytes), written with the job; the same retention
 *                     as the hash once the job is done or failed
 *   result:<id>       string with TTL: the PNG
 *   dead              stream: {job, attempt, entry, reason, ts}
 *   node:<id>         hash with TTL: role, address, pipeline, stage, load,
 *                     heartbeat_ms, draining
 *   metrics:<id>      hash with TTL: the node's counters (cluster/metrics.h)
 *   leader            string with PX: the coordinator holding the lease
 *
 * A job moves queued -> encoding -> denoising (step k of T, one event per
 * step) -> decoding [-> refining, for refine jobs] -> done, or to failed
 * or cancelled from any state before done; a requeue sends a running job
 * back to queued with attempt + 1 and a new stream entry. Done, failed and
 * cancelled are final. Every transition is one Lua script that checks
 * state and attempt before writing, so a stale worker (older attempt), a
 * second completion or any write after a cancel is refused, and a
 * transition repeated after a lost reply either
 * finds its own result (unchanged) or is refused: never applied twice.
 *
 * Not the policy: when to requeue, how many attempts, which pipeline, belong
 * to the coordinator.
 */
#ifndef SDC_CLUSTER_JOBS_H
#define SDC_CLUSTER_JOBS_H

#include <stddef.h>
#include <stdint.h>

#include "cluster/redis.h"
#include "common/status.h"

#define SDC_JOB_ID_MAX 64              /* [A-Za-z0-9._-], also node and consumer ids */
#define SDC_JOB_PARAMS_JSON_MAX (256 * 1024)
#define SDC_JOB_PROMPT_MAX 32768       /* bytes of UTF-8 */
#define SDC_JOB_EMBEDS_REF_MAX 4096
#define SDC_JOB_SIDE_MAX 8192          /* = SDC_MAX_IMAGE_SIDE */
#define SDC_JOB_STEPS_MAX 10000        /* = SDC_SCHED_MAX_STEPS */
#define SDC_JOB_STEPS_DEFAULT 50
#define SDC_JOB_GUIDANCE_MAX 100.0
#define SDC_JOB_RESULT_MAX (512u << 20) /* Redis' largest string */
#define SDC_JOB_REASON_MAX 1024
#define SDC_STREAM_ID_MAX 48           /* "<ms>-<seq>" */
#define SDC_JOB_IMAGE_MAX (512u << 20)   /* Redis' largest string */
#define SDC_JOB_IMAGE_DEFAULT_CAP (16u << 20) /* sdc_jobs_opts_t.max_image_bytes */
#define SDC_JOB_STRENGTH_DEFAULT 0.6   /* = sdc-generate --strength */
/* The refiner's defaults, = sdc-generate --refine-steps / --refine-guidance /
 * --refine-strength (sdc_refiner_params_default). */
#define SDC_JOB_REFINE_STEPS_DEFAULT 4
#define SDC_JOB_REFINE_STEPS_MAX 1000
#define SDC_JOB_REFINE_GUIDANCE_DEFAULT 3.25
#define SDC_JOB_REFINE_STRENGTH_DEFAULT 0.25

/* ---- parameters ----------------------------------------------------- */

typedef struct {
    char id[SDC_JOB_ID_MAX + 1];
    char *prompt;          /* UTF-8, may be ""; NULL when embeds is set */
    char *embeds;          /* reference to precomputed text embeddings (a path
                              on shared storage); NULL when prompt is set */
    char *negative_prompt; /* NULL: none; only with prompt */
    int width, height;     /* pixels; 0: the model's default size */
    int steps;
    uint64_t seed;
    int has_guidance;      /* 0: the model's guidance */
    double guidance;
    int trim_text;         /* drop padded text tokens before the DiT */
    /* Image-to-image: the image itself is job:<id>:image; the parameters
     * name it by size and CRC-32C. image_bytes 0: text-to-image. */
    size_t image_bytes;
    uint32_t image_crc32c;
    int has_strength;      /* strength was given (it needs an image) */
    double strength;       /* 0 < strength <= 1 */
    int refine;            /* run the refiner after decoding */
    /* Refiner (only with refine): its conditioning is an embeddings file
     * (a path on shared storage, the --embeds format with the refiner's
     * widths), as sdc-generate --refiner-embeds. */
    char *refiner_embeds;
    int refine_steps;      /* 1..SDC_JOB_REFINE_STEPS_MAX */
    double refine_guidance; /* distilled guidance scale, above 0 up to 100 */
    double refine_strength; /* 0..1: noise share of the image latents */
    int has_refine_seed;   /* 0: the refiner uses the job's seed (sdc-generate's rule) */
    uint64_t refine_seed;
} sdc_job_params_t;

/* Defaults: no text, size 0x0 (model default), 50 steps, seed 0, model
 * guidance, trim_text 1, no image, strength SDC_JOB_STRENGTH_DEFAULT, no
 * refiner (and the SDC_JOB_REFINE_* defaults for one). */
void sdc_job_params_init(sdc_job_params_t *p);
void sdc_job_params_free(sdc_job_params_t *p);

/* Parses a params object: {"id", "prompt" | "embeds", "negative_prompt",
 * "width", "height", "steps", "seed", "guidance", "trim_text", "init_image",
 * "strength", "refine", "refiner_embeds", "refine_steps", "refine_guidance",
 * "refine_strength", "refine_seed"}. "init_image" is {"bytes": N, "crc32c":
 * "8 hex digits"}; an image-to-image job states its width and height (its
 * image's) and a strength that leaves at least one denoising step (> 0). A
 * refine job names its "refiner_embeds"; the refine_* fields go only with
 * "refine": true. Strict:
 * unknown or repeated fields, wrong types, non-integral or out-of-range
 * numbers, invalid UTF-8 and NUL characters are SDC_ERR_FORMAT or
 * SDC_ERR_RANGE with a message naming the field. "seed" is an integer up to
 * 2^53 or a decimal string for the full 64-bit range. */
sdc_status_t sdc_job_params_parse(sdc_job_params_t *p, const char *json, size_t len,
                                  sdc_error_t *err);
/* The checks of parse, for a struct filled in code. */
sdc_status_t sdc_job_params_validate(const sdc_job_params_t *p, sdc_error_t *err);
/* Canonical JSON (fixed field order): equal params give equal bytes.
 * *json is malloc'd and NUL-terminated. */
sdc_status_t sdc_job_params_to_json(const sdc_job_params_t *p, char **json, size_t *len,
                                    sdc_error_t *err);

/* The denoising steps the job runs: steps, or for image-to-image the tail
 * of the schedule that strength keeps (sdc_img2img_start_step). p must be
 * valid. */
int sdc_job_params_run_steps(const sdc_job_params_t *p);

/* The refiner's seed: refine_seed when given, else the job's seed (as
 * sdc-generate --refiner seeds the refiner with --seed). */
uint64_t sdc_job_params_refine_seed(const sdc_job_params_t *p);

/* ---- input images (image-to-image) ------------------------------------------ */

/* Image bytes checked for a job: data is borrowed. */
typedef struct {
    const uint8_t *data;
    size_t len;
    uint32_t crc32c;
    int width, height;
} sdc_job_image_t;

/* Checks an input image: 1..max_bytes bytes (0: SDC_JOB_IMAGE_DEFAULT_CAP),
 * a PNG or JPEG that decodes completely, each side 1..SDC_JOB_SIDE_MAX. */
sdc_status_t sdc_job_image_check(const uint8_t *data, size_t len, size_t max_bytes,
                                 sdc_job_image_t *img, sdc_error_t *err);
/* Names img in p (image_bytes, image_crc32c); a width or height of 0 becomes
 * the image's (as sdc-generate's output defaults to the input's size), any
 * other must equal it: sdc does not resample. */
sdc_status_t sdc_job_params_set_image(sdc_job_params_t *p, const sdc_job_image_t *img,
                                      sdc_error_t *err);

/* 1..64 of [A-Za-z0-9._-]; what names the id in the message. */
sdc_status_t sdc_job_id_check(const char *id, const char *what, sdc_error_t *err);
/* 32 random hex digits. */
sdc_status_t sdc_job_id_new(char out[SDC_JOB_ID_MAX + 1], sdc_error_t *err);

/* ---- states ------------------------------------------------------------ */

typedef enum {
    SDC_JOB_QUEUED = 0,
    SDC_JOB_ENCODING,
    SDC_JOB_DENOISING,
    SDC_JOB_DECODING,
    SDC_JOB_REFINING,
    SDC_JOB_DONE,
    SDC_JOB_FAILED,
    SDC_JOB_CANCELLED,
    SDC_JOB_STATE_COUNT
} sdc_job_state_t;

const char *sdc_job_state_name(sdc_job_state_t s);
/* -1 when name[0..len) is no state. */
int sdc_job_state_parse(const char *name, size_t len);
/* 1 for done, failed and cancelled: nothing moves the job any more. */
int sdc_job_state_final(sdc_job_state_t s);
/* 1 when the state machine has an edge from -> to (denoising -> denoising is
 * a step). Requeue (-> queued) is its own edge from the running states. */
int sdc_job_transition_allowed(sdc_job_state_t from, sdc_job_state_t to);

/* What a conditional write found. APPLIED and UNCHANGED come with SDC_OK,
 * NO_JOB with SDC_ERR_NOT_FOUND, the others with SDC_ERR_INVALID_ARG and a
 * message giving the job's current state and attempt. */
typedef enum {
    SDC_JOB_APPLIED = 0,
    SDC_JOB_UNCHANGED,     /* the job was already where this call puts it */
    SDC_JOB_NO_JOB,
    SDC_JOB_BAD_STATE,     /* the state machine has no such edge from the job's state */
    SDC_JOB_STALE_ATTEMPT, /* the job has moved on to another attempt */
    SDC_JOB_BAD_STEP       /* step out of 0..steps or not after the current one */
} sdc_job_outcome_t;

/* ---- queue -------------------------------------------------------------- */

typedef struct {
    const char *group;     /* NULL: "coordinators" */
    int64_t result_ttl_ms; /* 0: 24 h */
    int64_t retention_ms;  /* 0: 7 days; job hash and events, once done or failed */
    long events_maxlen;    /* 0: 1000 (approximate trimming) */
    long dead_maxlen;      /* 0: 100000 */
    size_t max_image_bytes; /* 0: SDC_JOB_IMAGE_DEFAULT_CAP; input images */
} sdc_jobs_opts_t;

typedef struct {
    sdc_redis_t *r;
    char group[SDC_JOB_ID_MAX + 1];
    int64_t result_ttl_ms;
    int64_t retention_ms;
    long events_maxlen;
    long dead_maxlen;
    size_t max_image_bytes;
} sdc_jobs_t;

sdc_status_t sdc_jobs_init(sdc_jobs_t *q, sdc_redis_t *r, const sdc_jobs_opts_t *opts,
                           sdc_error_t *err);
/* XGROUP CREATE ... 0 MKSTREAM; an existing group is fine. */
sdc_status_t sdc_jobs_group_create(sdc_jobs_t *q, sdc_error_t *err);

/* Validates p, then in one Lua script (one round trip): the job hash (state
 * queued, attempt 1), the stream entry and the first event. A job with this id and the
 * same params already there is SDC_OK with *existed = 1 (a retried submit);
 * with other params it is SDC_ERR_INVALID_ARG. existed may be NULL. */
sdc_status_t sdc_job_submit(sdc_jobs_t *q, const sdc_job_params_t *p, int *existed,
                            sdc_error_t *err);
/* The same for an image-to-image job: img (from sdc_job_image_check, at
 * most q->max_image_bytes) must be the image p names; it is written as
 * job:<id>:image in the same script. A retried submit is "the same job"
 * only when the stored image is byte-identical too. img NULL: as
 * sdc_job_submit. */
sdc_status_t sdc_job_submit_image(sdc_jobs_t *q, const sdc_job_params_t *p,
                                  const sdc_job_image_t *img, int *existed, sdc_error_t *err);

/* A stream entry as a consumer receives it. problem[0] != 0 marks an entry
 * that cannot be run (missing or bad fields, deleted data): hand it to
 * sdc_job_reject_entry so that it leaves the pending list. */
typedef struct {
    char entry_id[SDC_STREAM_ID_MAX + 1];
    char job_id[SDC_JOB_ID_MAX + 1];
    int64_t attempt;
    char *params_json; /* NUL-terminated */
    size_t params_len;
    char problem[160];
} sdc_job_entry_t;

void sdc_job_entries_free(sdc_job_entry_t *e, size_t n);

/* XREADGROUP for consumer: up to count new entries, waiting up to block_ms
 * (0: do not wait). own_pending: instead, this consumer's entries delivered
 * before and not yet acked (after a restart, or a reply lost to a reconnect),
 * without waiting. *n = 0 when nothing came. A server that lost its data
 * answers NOGROUP (SDC_ERR_IO): call sdc_jobs_group_create again. */
sdc_status_t sdc_job_claim(sdc_jobs_t *q, const char *consumer, int count, int block_ms,
                           int own_pending, sdc_job_entry_t **entries, size_t *n,
                           sdc_error_t *err);
/* XAUTOCLAIM: takes over up to count entries that other consumers have held
 * unacked for at least min_idle_ms (their coordinator died). */
sdc_status_t sdc_job_reclaim(sdc_jobs_t *q, const char *consumer, int64_t min_idle_ms, int count,
                             sdc_job_entry_t **entries, size_t *n, sdc_error_t *err);
/* Acks and deletes an entry that needs no work (stale attempt, job done). */
sdc_status_t sdc_job_ack(sdc_jobs_t *q, const char *entry_id, sdc_error_t *err);
/* Acks and deletes a malformed entry and records it in the dead stream
 * (once, even when repeated). job_id may be "" when unknown. */
sdc_status_t sdc_job_reject_entry(sdc_jobs_t *q, const char *entry_id, const char *job_id,
                                  const char *reason, sdc_error_t *err);

/* ---- transitions ------------------------------------------------------- */

/* queued -> encoding for attempt, by consumer owner on pipeline; records
 * entry_id so that whoever completes the job acks it. Repeated with the same
 * owner and entry: UNCHANGED. outcome may be NULL here and below. */
sdc_status_t sdc_job_start(sdc_jobs_t *q, const char *id, int64_t attempt, const char *entry_id,
                           const char *owner, int pipeline, sdc_job_outcome_t *outcome,
                           sdc_error_t *err);
/* encoding -> denoising, denoising -> denoising (step must grow), denoising
 * -> decoding, decoding -> refining. step is 0..steps (for decoding and
 * refining it is set to steps). */
sdc_status_t sdc_job_advance(sdc_jobs_t *q, const char *id, int64_t attempt,
                             sdc_job_state_t to, int64_t step, sdc_job_outcome_t *outcome,
                             sdc_error_t *err);
/* decoding | refining -> done for attempt, atomically: result:<id> = png (PX
 * result_ttl), state done, event, XACK + XDEL of the entry, retention TTL on
 * the hash and events. A second completion (same or other attempt) is
 * refused and the first result stays. */
sdc_status_t sdc_job_complete(sdc_jobs_t *q, const char *id, int64_t attempt,
                              const unsigned char *png, size_t len, sdc_job_outcome_t *outcome,
                              sdc_error_t *err);
/* Any state but done/failed -> failed, with reason in the hash, an event, an
 * entry in the dead stream and the stream entry acked. */
sdc_status_t sdc_job_fail(sdc_jobs_t *q, const char *id, int64_t attempt, const char *reason,
                          sdc_job_outcome_t *outcome, sdc_error_t *err);
/* encoding | denoising | decoding | refining -> queued with attempt + 1 and a new stream
 * entry (the old one acked), or, when attempt + 1 > max_attempts, -> failed
 * as sdc_job_fail. *state_out (may be NULL) gets queued or failed. */
sdc_status_t sdc_job_requeue(sdc_jobs_t *q, const char *id, int64_t attempt, int max_attempts,
                             const char *reason, sdc_job_state_t *state_out,
                             sdc_job_outcome_t *outcome, sdc_error_t *err);

/* Any state but done/failed -> cancelled (a client's request), whatever the
 * attempt: the stream entry of the running attempt is acked, an event
 * written, the hash and events kept for the retention time. Workers that
 * still hold the job find their next transition refused and drop it.
 * Cancelling a cancelled job is UNCHANGED; a done or failed one is
 * BAD_STATE. *state_out (may be NULL) gets the state the job is in after. */
sdc_status_t sdc_job_cancel(sdc_jobs_t *q, const char *id, sdc_job_state_t *state_out,
                            sdc_job_outcome_t *outcome, sdc_error_t *err);

/* Node `node` holds the job: the text encoder that took it (state
 * encoding) or the VAE node that took its final latent (state decoding).
 * Recorded only while the job is in that state at that attempt (*stored =
 * 0 otherwise), so that the coordinator knows whose death loses it. */
sdc_status_t sdc_job_set_holder(sdc_jobs_t *q, const char *id, int64_t attempt,
                                sdc_job_state_t state, const char *node, int *stored,
                                sdc_error_t *err);

/* A new attempt from any state but done and failed, queued included, not
 * counted against max attempts: for a Redis server that restarted and lost
 * its last writes, after which workers may hold this attempt whatever its
 * recorded state; everything they still send for it is then stale. */
sdc_status_t sdc_job_reattempt(sdc_jobs_t *q, const char *id, int64_t attempt,
                               const char *reason, sdc_job_outcome_t *outcome, sdc_error_t *err);

/* ---- reading ---------------------------------------------------------- */

typedef struct {
    sdc_job_state_t state;
    int64_t attempt;
    int64_t step, steps;
    int pipeline; /* -1: none */
    int64_t created_ms, updated_ms;
    /* When the job last entered each state (<state>_ms in the hash: Redis'
     * clock, except queued of attempt 1, which is created_ms, the
     * submitter's clock); 0 when it never did. */
    int64_t state_ms[SDC_JOB_STATE_COUNT];
    char entry_id[SDC_STREAM_ID_MAX + 1]; /* "" when none */
    char owner[SDC_JOB_ID_MAX + 1];
    char error[SDC_JOB_REASON_MAX + 1];
    int has_result;
    /* The current attempt's holders (sdc_job_set_holder), "" when none. */
    char encoder[SDC_JOB_ID_MAX + 24];
    char decoder[SDC_JOB_ID_MAX + 24];
} sdc_job_status_t;

/* SDC_ERR_NOT_FOUND when there is no such job (or it expired). */
sdc_status_t sdc_job_get(sdc_jobs_t *q, const char *id, sdc_job_status_t *st, sdc_error_t *err);
sdc_status_t sdc_job_get_params(sdc_jobs_t *q, const char *id, sdc_job_params_t *p,
                                sdc_error_t *err);
/* The input image of p's job, where it is used: fetched (refused above
 * q->max_image_bytes before it is read), checked against p (size and
 * CRC-32C), decoded to RGB8 (*rgb malloc'd, height x width x 3) and checked
 * against p's width and height. SDC_ERR_NOT_FOUND when it is gone;
 * SDC_ERR_IO only for Redis itself. */
sdc_status_t sdc_job_image_load(sdc_jobs_t *q, const sdc_job_params_t *p, uint8_t **rgb,
                                sdc_error_t *err);
/* The PNG, malloc'd; SDC_ERR_NOT_FOUND when absent or expired. */
sdc_status_t sdc_job_result_get(sdc_jobs_t *q, const char *id, unsigned char **data,
                                size_t *len, sdc_error_t *err);

typedef struct {
    int64_t length;  /* XLEN: entries not yet completed (done entries are deleted) */
    int64_t pending; /* delivered to a consumer, not acked */
    int64_t waiting; /* length - pending: not yet delivered */
} sdc_queue_depth_t;

sdc_status_t sdc_jobs_depth(sdc_jobs_t *q, sdc_queue_depth_t *d, sdc_error_t *err);

/* ---- nodes ----------------------------------------------------------- */

typedef enum {
    SDC_ROLE_COORDINATOR = 0,
    SDC_ROLE_TEXT_ENCODER,
    SDC_ROLE_DIT_STAGE,
    SDC_ROLE_VAE,
    SDC_ROLE_REFINER,
    SDC_ROLE_GATEWAY,
    SDC_ROLE_COUNT
} sdc_node_role_t;

#define SDC_NODE_ADDRESS_MAX 65536

const char *sdc_node_role_name(sdc_node_role_t role);
/* -1 when unknown. */
int sdc_node_role_parse(const char *name, size_t len);

typedef struct {
    char id[SDC_JOB_ID_MAX + 1];
    sdc_node_role_t role;
    unsigned char *address; /* opaque bytes (a UCX worker address) */
    size_t address_len;
    int pipeline, stage;    /* -1: none */
    double load;            /* >= 0, the role's own measure */
    int64_t heartbeat_ms;   /* wall clock of the registration, ms since the epoch */
    int draining;           /* 1: stopping; finishes its work, takes no new jobs */
} sdc_node_t;

/* Writes node:<id> and sets its TTL in one MULTI/EXEC; call again as the
 * heartbeat (heartbeat_ms is set to now). */
sdc_status_t sdc_node_register(sdc_redis_t *r, const sdc_node_t *n, int64_t ttl_ms,
                               sdc_error_t *err);
sdc_status_t sdc_node_remove(sdc_redis_t *r, const char *id, sdc_error_t *err);
/* Every live node (SCAN over node:*). A malformed node hash is skipped with a
 * warning: one bad registration must not hide the others. */
sdc_status_t sdc_node_list(sdc_redis_t *r, sdc_node_t **nodes, size_t *n, sdc_error_t *err);
void sdc_nodes_free(sdc_node_t *nodes, size_t n);

/* ---- leader lease -------------------------------------------------------- */

/* SET leader id NX PX ttl_ms. *is_leader = 1 when id holds the lease now
 * (also when it already held it: the lease is then renewed). */
sdc_status_t sdc_leader_acquire(sdc_redis_t *r, const char *id, int64_t ttl_ms, int *is_leader,
                                sdc_error_t *err);
/* Extends the lease only while id still holds it (compare-and-pexpire). */
sdc_status_t sdc_leader_renew(sdc_redis_t *r, const char *id, int64_t ttl_ms, int *is_leader,
                              sdc_error_t *err);
/* Deletes the lease only while id holds it. */
sdc_status_t sdc_leader_release(sdc_redis_t *r, const char *id, int *released,
                                sdc_error_t *err);
/* The holder's id, or *present = 0. */
sdc_status_t sdc_leader_get(sdc_redis_t *r, char out[SDC_JOB_ID_MAX + 1], int *present,
                            sdc_error_t *err);

#endif
