/*
 * checkpoint.h: a job's denoising state saved in Redis every K steps by the
 * last DiT stage, so that a requeued job resumes from its last checkpoint
 * instead of step 0 and still ends bit-identical to an uninterrupted run.
 *
 * What evolves in sdc_denoise_t from step to step is the latent, the step
 * and the guider state (APG's momentum buffer); everything else (schedule,
 * guider choice, shape) follows from the job's parameters and the model, so
 * a checkpoint holds exactly those three plus what identifies the run it
 * belongs to. Key ckpt:<id> (string, with a TTL), little-endian:
 *
 *   0  "SDCK"            magic
 *   4  u32 version       1
 *   8  u32 step          the next step to run (1..n_steps-1)
 *  12  u32 n_steps
 *  16  u32 params_crc    CRC-32C of the job's canonical parameters JSON
 *  20  u32 has_momentum
 *  24  i64 channels, h, w
 *  48  i64 momentum_n    floats of momentum (0 without)
 *  56  f32 latent[channels*h*w], f32 momentum[momentum_n]
 *  end u32 crc           CRC-32C of every byte before it
 *
 * Writes are conditional (one Lua script): only while the job is denoising
 * at the writer's attempt, so a stage still running a requeued attempt
 * cannot overwrite the state of the current one.
 *
 * Not here: when to checkpoint (role_stage.c) or whether to requeue.
 */
#ifndef SDC_CLUSTER_CHECKPOINT_H
#define SDC_CLUSTER_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "cluster/redis.h"
#include "common/status.h"
#include "model/pipeline.h"

#define SDC_CKPT_HEADER_BYTES 56
/* Checkpoints outlive a job only by accident (a job that failed for good):
 * they expire after a day. */
#define SDC_CKPT_TTL_MS (24LL * 3600 * 1000)

/* CRC-32C of the canonical parameters JSON: ties a checkpoint to its job. */
uint32_t sdc_ckpt_params_crc(const char *params_json);

/* d's state after d->step steps, as a malloc'd blob. */
sdc_status_t sdc_ckpt_encode(const sdc_denoise_t *d, uint32_t params_crc, uint8_t **blob,
                             size_t *len, sdc_error_t *err);
/* Restores step, latent and guider state into d, which sdc_denoise_init
 * prepared for the same job: every field is checked against d (shape,
 * steps) and params_crc; SDC_ERR_FORMAT names what disagrees. d is only
 * changed on success. */
sdc_status_t sdc_ckpt_decode(const uint8_t *blob, size_t len, uint32_t params_crc,
                             sdc_denoise_t *d, sdc_error_t *err);

/* ckpt:<id> = blob, only while job:<id> is denoising at attempt; *stored = 0
 * when refused (the job moved on). */
sdc_status_t sdc_ckpt_put(sdc_redis_t *r, const char *id, int64_t attempt, const uint8_t *blob,
                          size_t len, int *stored, sdc_error_t *err);
/* The blob, malloc'd; SDC_ERR_NOT_FOUND when there is none. */
sdc_status_t sdc_ckpt_get(sdc_redis_t *r, const char *id, uint8_t **blob, size_t *len,
                          sdc_error_t *err);
sdc_status_t sdc_ckpt_delete(sdc_redis_t *r, const char *id, sdc_error_t *err);

#endif
