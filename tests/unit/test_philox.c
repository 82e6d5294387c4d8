/*
 * test_philox.c: Philox4x32-10 against the published Random123 known-answer
 * vectors, the documented noise mapping element by element, split
 * invariance, moments, and (when tests/data/goldens/philox.safetensors is
 * present) the numpy reference in tools/goldens/philox.py.
 */
#include "common/philox.h"

#include <stdint.h>
#include <unistd.h>

#include "test.h"
#include "golden.h"

static void test_known_answers(void)
{
    static const struct {
        uint32_t ctr[4], key[2], want[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
        {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
         {0xffffffffu, 0xffffffffu},
         {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
        {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
         {0xa4093822u, 0x299f31d0u},
         {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
    };
    for (int k = 0; k < 3; k++) {
        uint32_t out[4];
        sdc_philox4x32_10(kat[k].ctr, kat[k].key, out);
        for (int j = 0; j < 4; j++)
            CHECK_MSG(out[j] == kat[k].want[j], "vector %d word %d: 0x%08x, want 0x%08x", k, j,
                      out[j], kat[k].want[j]);
    }
}

/* Element i of stream k by the formula in philox.h, written out independently. */
static float reference_stream_element(uint64_t seed, uint32_t k, uint64_t i)
{
    uint64_t b = i / 4;
    const uint32_t key[2] = {(uint32_t)(seed & 0xffffffffu), (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {(uint32_t)(b & 0xffffffffu), (uint32_t)(b >> 32), k, 0};
    uint32_t u[4];
    sdc_philox4x32_10(ctr, key, u);
    int lane = (int)(i % 4);
    uint32_t a = u[lane < 2 ? 0 : 2], c = u[lane < 2 ? 1 : 3];
    double fa = ((double)a + 0.5) / 4294967296.0;
    double fc = ((double)c + 0.5) / 4294967296.0;
    double r = sqrt(-2.0 * log(fa));
    double t = 2.0 * M_PI * fc;
    return (float)(lane % 2 == 0 ? r * cos(t) : r * sin(t));
}

static float reference_element(uint64_t seed, uint64_t i)
{
    return reference_stream_element(seed, SDC_PHILOX_STREAM_LATENT, i);
}

static void test_mapping(void)
{
    static const uint64_t seeds[] = {0, 42, (UINT64_C(1) << 40) + 7, UINT64_MAX};
    /* Offsets that cross the 32-bit half of the block counter too. */
    static const uint64_t offsets[] = {0, 5, 4099, (UINT64_C(1) << 34) - 3,
                                       UINT64_C(0xfffffffffffffff0)};
    for (int s = 0; s < 4; s++) {
        for (int o = 0; o < 5; o++) {
            float got[13];
            sdc_philox_normal(seeds[s], offsets[o], got, 13);
            for (int j = 0; j < 13; j++) {
                float want = reference_element(seeds[s], offsets[o] + (uint64_t)j);
                CHECK_MSG(memcmp(&got[j], &want, 4) == 0, "seed %llu element %llu: %.9g vs %.9g",
                          (unsigned long long)seeds[s],
                          (unsigned long long)(offsets[o] + (uint64_t)j), got[j], want);
            }
        }
    }
    /* The high counter word matters: block 2^32 differs from block 0. */
    float lo[4], hi[4];
    sdc_philox_normal(42, 0, lo, 4);
    sdc_philox_normal(42, UINT64_C(4) << 32, hi, 4);
    CHECK(memcmp(lo, hi, sizeof(lo)) != 0);
    /* So does the high key word. */
    float k2[4];
    sdc_philox_normal(42 + (UINT64_C(1) << 32), 0, k2, 4);
    CHECK(memcmp(lo, k2, sizeof(lo)) != 0);
}

/* Stream k puts k in the third counter word; stream 0 is the latent noise. */
static void test_streams(void)
{
    static const uint64_t seeds[] = {0, 42, UINT64_MAX};
    static const uint32_t streams[] = {SDC_PHILOX_STREAM_LATENT, SDC_PHILOX_STREAM_VAE_POSTERIOR,
                                       0xffffffffu};
    for (int s = 0; s < 3; s++) {
        for (int k = 0; k < 3; k++) {
            float got[11];
            sdc_philox_normal_stream(seeds[s], streams[k], 3, got, 11);
            for (int j = 0; j < 11; j++) {
                float want = reference_stream_element(seeds[s], streams[k], 3 + (uint64_t)j);
                CHECK_MSG(memcmp(&got[j], &want, 4) == 0, "seed %llu stream %u element %d",
                          (unsigned long long)seeds[s], streams[k], 3 + j);
            }
        }
    }
    float a[8], b[8];
    sdc_philox_normal(42, 0, a, 8);
    sdc_philox_normal_stream(42, SDC_PHILOX_STREAM_LATENT, 0, b, 8);
    CHECK(memcmp(a, b, sizeof(a)) == 0);
    sdc_philox_normal_stream(42, SDC_PHILOX_STREAM_VAE_POSTERIOR, 0, b, 8);
    CHECK(memcmp(a, b, sizeof(a)) != 0);
}

static void test_split_invariance(void)
{
    enum { N = 4099 };
    static float full[N], part[N];
    sdc_philox_normal(42, 0, full, N);
    /* Chunks of every length 1..9, starting at every alignment. */
    for (int len = 1; len <= 9; len++) {
        memset(part, 0, sizeof(part));
        for (int64_t off = 0; off < N; off += len) {
            int64_t n = N - off < len ? N - off : len;
            sdc_philox_normal(42, (uint64_t)off, part + off, n);
        }
        CHECK_MSG(memcmp(part, full, sizeof(full)) == 0, "chunk length %d differs", len);
    }
    float one;
    sdc_philox_normal(42, 1001, &one, 1);
    CHECK(memcmp(&one, &full[1001], 4) == 0);
    /* n = 0 writes nothing. */
    float guard = 123.0f;
    sdc_philox_normal(42, 7, &guard, 0);
    CHECK(guard == 123.0f);
}

static void test_moments(void)
{
    enum { N = 1000000 };
    float *z = malloc(N * sizeof(float));
    if (!z) {
        CHECK(0);
        return;
    }
    sdc_philox_normal(1234, 0, z, N);
    double sum = 0, sq = 0, cube = 0, quad = 0;
    long beyond3 = 0;
    for (int i = 0; i < N; i++) {
        double x = z[i];
        sum += x;
        sq += x * x;
        cube += x * x * x;
        quad += x * x * x * x;
        beyond3 += fabs(x) > 3.0;
        CHECK(isfinite(z[i]));
    }
    double mean = sum / N, var = sq / N - mean * mean;
    /* Standard errors for 1e6 samples: mean 0.001, var 0.0014, skew 0.0024,
     * kurtosis 0.005; bounds are about 5 sigma. */
    CHECK_MSG(fabs(mean) < 0.005, "mean %g", mean);
    CHECK_MSG(fabs(var - 1.0) < 0.007, "variance %g", var);
    CHECK_MSG(fabs(cube / N) < 0.015, "third moment %g", cube / N);
    CHECK_MSG(fabs(quad / N - 3.0) < 0.05, "fourth moment %g", quad / N);
    /* P(|x| > 3) = 0.0027. */
    CHECK_MSG(beyond3 > 2400 && beyond3 < 3000, "%ld samples beyond 3 sigma", beyond3);
    free(z);
}

/* The numpy reference's output; libm differences may move the last bit of
 * a float rarely, so the comparison allows a few ulps. */
static void test_numpy_golden(void)
{
    sdc_st_file_t f;
    if (golden_open(&f, "philox.safetensors") != 0) {
        CHECK(0);
        return;
    }
    static const char *const pairs[2][2] = {{"seed", "noise"}, {"seed_big", "noise_big"}};
    for (int p = 0; p < 2; p++) {
        int64_t seed = golden_i64(&f, pairs[p][0], -1);
        int ndim = 0;
        int64_t shape[SDC_MAX_DIMS];
        float *ref = golden_f32(&f, pairs[p][1], &ndim, shape);
        CHECK(seed >= 0 && ref != NULL && ndim == 1);
        if (seed < 0 || !ref || ndim != 1) {
            free(ref);
            continue;
        }
        float *got = malloc((size_t)shape[0] * sizeof(float));
        sdc_philox_normal((uint64_t)seed, 0, got, shape[0]);
        CHECK(test_close(pairs[p][1], got, ref, shape[0], 1e-6));
        long exact = 0;
        for (int64_t i = 0; i < shape[0]; i++)
            exact += memcmp(&got[i], &ref[i], 4) == 0;
        CHECK_MSG(exact >= shape[0] - 2, "%s: only %ld of %lld bit-exact", pairs[p][1], exact,
                  (long long)shape[0]);
        free(got);
        free(ref);
    }
    CHECK_EQ_INT(golden_i64(&f, "seed", -1), 42);
    CHECK_EQ_INT(golden_i64(&f, "seed_big", -1), (INT64_C(1) << 40) + 7);
    sdc_st_close(&f);
}

int main(void)
{
    RUN(test_known_answers);
    RUN(test_mapping);
    RUN(test_streams);
    RUN(test_split_invariance);
    RUN(test_moments);
    /* The golden comes from an optional generator; without it there is
     * nothing to compare and the case is not counted. */
    char path[1024];
    snprintf(path, sizeof(path), "%s/goldens/philox.safetensors", test_data_dir());
    if (access(path, R_OK) == 0)
        RUN(test_numpy_golden);
    TEST_EXIT();
}
