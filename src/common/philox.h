/*
 * philox.h: Philox4x32-10 counter-based random numbers (Salmon et al., SC'11)
 * and standard normal noise derived from them.
 *
 * Noise element i of stream k of a job with seed s is a pure function of
 * (s, k, i): the same on every node, batch position and backend. The
 * mapping, part of the reproducibility contract (docs/ARCHITECTURE.md):
 *   block b = i / 4, key = (seed & 0xffffffff, seed >> 32),
 *   counter = (b & 0xffffffff, b >> 32, k, 0) -> u[0..3] = Philox4x32-10
 *   uniform  f(u) = ((double)u + 0.5) / 2^32            (in (0, 1))
 *   pair (u[0], u[1]) -> elements 4b+0, 4b+1; (u[2], u[3]) -> 4b+2, 4b+3:
 *   r = sqrt(-2 ln f(a)), t = 2 pi f(b); first = r cos t, second = r sin t
 *   computed in double, rounded once to float.
 * Noise is always generated on the host CPU, then uploaded.
 */
#ifndef SDC_PHILOX_H
#define SDC_PHILOX_H

#include <stdint.h>

/* One Philox4x32 block with 10 rounds. */
void sdc_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* The streams of one seed, one per use, so no two uses ever share a
 * counter block (whatever their lengths). Values are part of the contract. */
#define SDC_PHILOX_STREAM_LATENT 0u        /* initial latent noise */
#define SDC_PHILOX_STREAM_VAE_POSTERIOR 1u /* VAE encoder posterior sample (img2img) */

/* Fills out[0..n) with standard normal floats: element `offset + j` of
 * stream `stream` of seed. Any split of [0, N) into calls gives the same
 * values. */
void sdc_philox_normal_stream(uint64_t seed, uint32_t stream, uint64_t offset, float *out,
                              int64_t n);
/* Stream SDC_PHILOX_STREAM_LATENT. */
void sdc_philox_normal(uint64_t seed, uint64_t offset, float *out, int64_t n);

#endif
