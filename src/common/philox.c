/*
 * philox.c: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy
 * as 1, 2, 3", SC'11) and the Box-Muller mapping from its output to the
 * standard normal noise a job starts from.
 *
 * The exact mapping is a reproducibility contract (see philox.h): changing
 * any constant, the uniform transform or the order of operations changes
 * every image generated from a seed.
 */
#include "philox.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u /* golden ratio */
#define PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */
#define PHILOX_ROUNDS 10

static inline void philox_round(uint32_t c[4], const uint32_t k[2])
{
    uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
    uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t c1 = c[1], c3 = c[3];
    c[0] = hi1 ^ c1 ^ k[0];
    c[1] = lo1;
    c[2] = hi0 ^ c3 ^ k[1];
    c[3] = lo0;
}

void sdc_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t k[2] = {key[0], key[1]};
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        if (r > 0) {
            k[0] += PHILOX_W0;
            k[1] += PHILOX_W1;
        }
        philox_round(c, k);
    }
    out[0] = c[0];
    out[1] = c[1];
    out[2] = c[2];
    out[3] = c[3];
}

/* Maps a 32-bit word to the open interval (0, 1): never 0, so log is finite. */
static inline double philox_uniform(uint32_t u)
{
    return ((double)u + 0.5) / 4294967296.0;
}

/* The four normals of block b, elements 4b .. 4b+3 of the stream. */
static void philox_normal_block(const uint32_t key[2], uint32_t stream, uint64_t b, float z[4])
{
    const uint32_t ctr[4] = {(uint32_t)b, (uint32_t)(b >> 32), stream, 0};
    uint32_t u[4];
    sdc_philox4x32_10(ctr, key, u);
    for (int p = 0; p < 2; p++) {
        double r = sqrt(-2.0 * log(philox_uniform(u[2 * p])));
        double t = 2.0 * M_PI * philox_uniform(u[2 * p + 1]);
        z[2 * p] = (float)(r * cos(t));
        z[2 * p + 1] = (float)(r * sin(t));
    }
}

void sdc_philox_normal_stream(uint64_t seed, uint32_t stream, uint64_t offset, float *out,
                              int64_t n)
{
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    int64_t j = 0;
    while (j < n) {
        uint64_t i = offset + (uint64_t)j;
        float z[4];
        philox_normal_block(key, stream, i / 4, z);
        /* Copy from this block the elements the request covers; a split in
         * the middle of a block recomputes it, giving the same values. */
        for (unsigned lane = (unsigned)(i % 4); lane < 4 && j < n; lane++)
            out[j++] = z[lane];
    }
}

void sdc_philox_normal(uint64_t seed, uint64_t offset, float *out, int64_t n)
{
    sdc_philox_normal_stream(seed, SDC_PHILOX_STREAM_LATENT, offset, out, n);
}
