/*
 * test_checkpoint.c: the ckpt:<id> blob (cluster/checkpoint.h): an exact
 * round trip of the denoising state (latent bits, step, APG momentum), the
 * documented little-endian layout, and refusal of every corrupted,
 * truncated or mismatched blob without touching the state.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "cluster/checkpoint.h"

#define C 4
#define H 3
#define W 2
#define N (C * H * W)
#define STEPS 10
#define CRC 0x1234abcdu

/* A denoising state as sdc_denoise_init leaves it: latent, step 0, no momentum. */
static void state_init(sdc_denoise_t *d)
{
    memset(d, 0, sizeof(*d));
    d->channels = C;
    d->h = H;
    d->w = W;
    d->n_steps = STEPS;
    d->latent = calloc(N, sizeof(float));
}

/* The same state after some steps, with values whose bits matter. */
static void state_run(sdc_denoise_t *d, int with_momentum)
{
    state_init(d);
    d->step = 4;
    for (int i = 0; i < N; i++)
        d->latent[i] = (float)(i - 7) / 3.0f;
    d->latent[0] = -0.0f;
    d->latent[1] = 1e-40f; /* subnormal */
    if (with_momentum) {
        d->guider_state.momentum = malloc(N * sizeof(float));
        for (int i = 0; i < N; i++)
            d->guider_state.momentum[i] = (float)i * -0.25f + 0.1f;
        d->guider_state.n = N;
        d->guider_state.has_momentum = 1;
    }
}

static int same_bits(const float *a, const float *b, int n)
{
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

static void test_round_trip_with_momentum(void)
{
    sdc_denoise_t d, r;
    sdc_error_t err = {0};
    uint8_t *blob;
    size_t len;
    state_run(&d, 1);
    state_init(&r);
    CHECK(sdc_ckpt_encode(&d, CRC, &blob, &len, &err) == SDC_OK);
    CHECK_EQ_INT(len, SDC_CKPT_HEADER_BYTES + 4 * (2 * N) + 4);
    CHECK(sdc_ckpt_decode(blob, len, CRC, &r, &err) == SDC_OK);
    CHECK_EQ_INT(r.step, 4);
    CHECK(same_bits(r.latent, d.latent, N));
    CHECK(r.guider_state.has_momentum && r.guider_state.n == N);
    CHECK(r.guider_state.momentum && same_bits(r.guider_state.momentum, d.guider_state.momentum, N));
    free(blob);
    sdc_denoise_free(&d);
    sdc_denoise_free(&r);
}

/* A state without momentum clears one the target had. */
static void test_round_trip_without_momentum(void)
{
    sdc_denoise_t d, r;
    sdc_error_t err = {0};
    uint8_t *blob;
    size_t len;
    state_run(&d, 0);
    state_run(&r, 1);
    r.step = 0;
    CHECK(sdc_ckpt_encode(&d, CRC, &blob, &len, &err) == SDC_OK);
    CHECK_EQ_INT(len, SDC_CKPT_HEADER_BYTES + 4 * N + 4);
    CHECK(sdc_ckpt_decode(blob, len, CRC, &r, &err) == SDC_OK);
    CHECK(!r.guider_state.has_momentum && !r.guider_state.momentum && r.guider_state.n == 0);
    CHECK(same_bits(r.latent, d.latent, N));
    free(blob);
    sdc_denoise_free(&d);
    sdc_denoise_free(&r);
}

/* checkpoint.h's layout, little-endian. */
static void test_layout(void)
{
    sdc_denoise_t d;
    sdc_error_t err = {0};
    uint8_t *blob;
    size_t len;
    state_run(&d, 1);
    CHECK(sdc_ckpt_encode(&d, CRC, &blob, &len, &err) == SDC_OK);
    CHECK(memcmp(blob, "SDCK", 4) == 0);
    CHECK(blob[4] == 1 && blob[5] == 0 && blob[6] == 0 && blob[7] == 0);
    CHECK(blob[8] == 4 && blob[12] == STEPS);
    CHECK(blob[16] == 0xcd && blob[17] == 0xab && blob[18] == 0x34 && blob[19] == 0x12);
    CHECK(blob[20] == 1 && blob[24] == C && blob[32] == H && blob[40] == W && blob[48] == N);
    float f;
    uint32_t bits = (uint32_t)blob[56 + 8] | (uint32_t)blob[57 + 8] << 8 |
                    (uint32_t)blob[58 + 8] << 16 | (uint32_t)blob[59 + 8] << 24;
    memcpy(&f, &bits, 4);
    CHECK(f == d.latent[2]);
    free(blob);
    sdc_denoise_free(&d);
}

/* Every single flipped byte and every truncation is refused, and the
 * state is left as it was. */
static void test_corruption_refused(void)
{
    sdc_denoise_t d, r;
    sdc_error_t err = {0};
    uint8_t *blob;
    size_t len;
    state_run(&d, 1);
    state_init(&r);
    CHECK(sdc_ckpt_encode(&d, CRC, &blob, &len, &err) == SDC_OK);
    int accepted = 0;
    for (size_t i = 0; i < len; i++) {
        blob[i] ^= 0x5a;
        accepted += sdc_ckpt_decode(blob, len, CRC, &r, &err) == SDC_OK;
        blob[i] ^= 0x5a;
    }
    for (size_t n = 0; n < len; n++)
        accepted += sdc_ckpt_decode(blob, n, CRC, &r, &err) == SDC_OK;
    CHECK_EQ_INT(accepted, 0);
    CHECK_EQ_INT(r.step, 0);
    CHECK(!r.guider_state.momentum);
    for (int i = 0; i < N; i++)
        CHECK(r.latent[i] == 0.0f);
    free(blob);
    sdc_denoise_free(&d);
    sdc_denoise_free(&r);
}

/* A valid blob of another job, shape or run is refused with the reason. */
static void test_mismatch_refused(void)
{
    sdc_denoise_t d, r;
    sdc_error_t err = {0};
    uint8_t *blob;
    size_t len;
    state_run(&d, 1);
    state_init(&r);
    CHECK(sdc_ckpt_encode(&d, CRC, &blob, &len, &err) == SDC_OK);
    CHECK(sdc_ckpt_decode(blob, len, CRC + 1, &r, &err) == SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "other parameters") != NULL);
    r.n_steps = STEPS + 1;
    CHECK(sdc_ckpt_decode(blob, len, CRC, &r, &err) == SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "steps") != NULL);
    r.n_steps = STEPS;
    r.w = W + 1;
    CHECK(sdc_ckpt_decode(blob, len, CRC, &r, &err) == SDC_ERR_FORMAT);
    r.w = W;
    free(blob);
    /* Step 0 or the last step are no resume points. */
    d.step = 0;
    CHECK(sdc_ckpt_encode(&d, CRC, &blob, &len, &err) == SDC_OK);
    CHECK(sdc_ckpt_decode(blob, len, CRC, &r, &err) == SDC_ERR_FORMAT);
    free(blob);
    d.step = STEPS;
    CHECK(sdc_ckpt_encode(&d, CRC, &blob, &len, &err) == SDC_OK);
    CHECK(sdc_ckpt_decode(blob, len, CRC, &r, &err) == SDC_ERR_FORMAT);
    CHECK_EQ_INT(r.step, 0);
    free(blob);
    sdc_denoise_free(&d);
    sdc_denoise_free(&r);
}

static void test_params_crc(void)
{
    CHECK(sdc_ckpt_params_crc("{\"id\":\"a\"}") == sdc_ckpt_params_crc("{\"id\":\"a\"}"));
    CHECK(sdc_ckpt_params_crc("{\"id\":\"a\"}") != sdc_ckpt_params_crc("{\"id\":\"b\"}"));
}

int main(void)
{
    RUN(test_round_trip_with_momentum);
    RUN(test_round_trip_without_momentum);
    RUN(test_layout);
    RUN(test_corruption_refused);
    RUN(test_mismatch_refused);
    RUN(test_params_crc);
    TEST_EXIT();
}
