/*
 * test_scheduler.c: the flow-matching schedule against diffusers'
 * FlowMatchEulerDiscreteScheduler bit for bit (goldens and values computed
 * with diffusers 0.42.1 / numpy 2.4.6), the Euler step, and config errors.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "golden.h"
#include "model/scheduler.h"

/* Writes text to a new temporary file, whose name goes to path. */
static int write_temp(char *path, size_t cap, const char *text)
{
    snprintf(path, cap, "/tmp/sdc_test_sched_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    size_t n = strlen(text);
    int ok = write(fd, text, n) == (ssize_t)n;
    close(fd);
    return ok ? 0 : -1;
}

/* Loads a config from JSON text; returns the status. */
static sdc_status_t load_text(const char *json, sdc_sched_config_t *c, sdc_error_t *err)
{
    char path[64];
    if (write_temp(path, sizeof(path), json) != 0) return SDC_ERR_IO;
    sdc_status_t st = sdc_sched_config_load(c, path, err);
    unlink(path);
    return st;
}

static int bitwise_equal(const char *what, const float *got, const float *want, int n)
{
    for (int i = 0; i < n; i++) {
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0) {
            fprintf(stderr, "  %s[%d]: got %a (%.9g), want %a (%.9g)\n", what, i, got[i],
                    got[i], want[i], want[i]);
            return 0;
        }
    }
    return 1;
}

static void test_golden_schedules(void)
{
    sdc_st_file_t f;
    sdc_sched_config_t c;
    sdc_error_t err = {0};
    char path[1024];
    snprintf(path, sizeof(path), "%s/tiny-hunyuanimage/scheduler/scheduler_config.json",
             test_data_dir());
    CHECK_EQ_INT(sdc_sched_config_load(&c, path, &err), SDC_OK);
    CHECK(c.shift == 5.0);
    CHECK_EQ_INT(c.num_train_timesteps, 1000);
    if (golden_open(&f, "scheduler.safetensors") != 0) {
        CHECK(0);
        return;
    }
    const int ns[] = {1, 4, 28, 50};
    for (size_t k = 0; k < sizeof(ns) / sizeof(ns[0]); k++) {
        int n = ns[k];
        char name[32];
        int64_t shape[8];
        int nd = 0;
        sdc_schedule_t s;
        snprintf(name, sizeof(name), "sigmas_%d", n);
        float *sig = golden_f32(&f, name, &nd, shape);
        snprintf(name, sizeof(name), "timesteps_%d", n);
        float *ts = golden_f32(&f, name, NULL, NULL);
        CHECK(sig && ts && nd == 1 && shape[0] == n + 1);
        CHECK_EQ_INT(sdc_schedule_make(&c, n, &s, &err), SDC_OK);
        if (sig && ts && s.sigmas) {
            CHECK_EQ_INT(s.n_steps, n);
            CHECK_MSG(bitwise_equal("sigmas", s.sigmas, sig, n + 1), "N = %d", n);
            CHECK_MSG(bitwise_equal("timesteps", s.timesteps, ts, n), "N = %d", n);
        }
        sdc_schedule_free(&s);
        CHECK(s.sigmas == NULL && s.timesteps == NULL);
        free(sig);
        free(ts);
    }
    sdc_st_close(&f);
}

/* shift = 1 leaves linspace(1, 0, N + 1) as it is. */
static void test_shift1_by_hand(void)
{
    sdc_sched_config_t c;
    sdc_schedule_t s;
    sdc_error_t err = {0};
    sdc_sched_config_default(&c);
    CHECK_EQ_INT(sdc_schedule_make(&c, 4, &s, &err), SDC_OK);
    const float sig4[5] = {1.0f, 0.75f, 0.5f, 0.25f, 0.0f};
    const float ts4[4] = {1000.0f, 750.0f, 500.0f, 250.0f};
    CHECK(bitwise_equal("sigmas", s.sigmas, sig4, 5));
    CHECK(bitwise_equal("timesteps", s.timesteps, ts4, 4));
    sdc_schedule_free(&s);

    CHECK_EQ_INT(sdc_schedule_make(&c, 3, &s, &err), SDC_OK);
    const float sig3[4] = {1.0f, 0.6666667f, 0.33333334f, 0.0f};
    const float ts3[3] = {1000.0f, 666.6667f, 333.33334f};
    CHECK(bitwise_equal("sigmas", s.sigmas, sig3, 4));
    CHECK(bitwise_equal("timesteps", s.timesteps, ts3, 3));
    sdc_schedule_free(&s);

    /* shift 3: 3s / (1 + 2s) at s = 0.75, 0.5, 0.25 is 0.9, 0.75, 0.5. */
    c.shift = 3.0;
    CHECK_EQ_INT(sdc_schedule_make(&c, 4, &s, &err), SDC_OK);
    const float sig4s3[5] = {1.0f, 0.9f, 0.75f, 0.5f, 0.0f};
    CHECK(bitwise_equal("sigmas", s.sigmas, sig4s3, 5));
    sdc_schedule_free(&s);
}

/* Options beside the default path, against values diffusers printed. */
static void test_options_vs_diffusers(void)
{
    sdc_sched_config_t c;
    sdc_schedule_t s;
    sdc_error_t err = {0};

    sdc_sched_config_default(&c);
    c.shift_terminal = 0.5;
    CHECK_EQ_INT(sdc_schedule_make(&c, 4, &s, &err), SDC_OK);
    const float st_sig[5] = {0x1p+0f, 0x1.aaaaaap-1f, 0x1.555554p-1f, 0x1p-1f, 0.0f};
    const float st_ts[4] = {0x1.f4p+9f, 0x1.a0aaaap+9f, 0x1.4d5554p+9f, 0x1.f4p+8f};
    CHECK(bitwise_equal("sigmas", s.sigmas, st_sig, 5));
    CHECK(bitwise_equal("timesteps", s.timesteps, st_ts, 4));
    sdc_schedule_free(&s);

    c.shift = 3.0;
    c.shift_terminal = 0.1;
    CHECK_EQ_INT(sdc_schedule_make(&c, 5, &s, &err), SDC_OK);
    const float st2_sig[6] = {0x1p+0f,        0x1.c1f822p-1f, 0x1.6d61bep-1f,
                              0x1.e66668p-2f, 0x1.9999ap-4f,  0.0f};
    const float st2_ts[5] = {0x1.f4p+9f, 0x1.b76c52p+9f, 0x1.64d174p+9f, 0x1.db0002p+8f,
                             0x1.900006p+6f};
    CHECK(bitwise_equal("sigmas", s.sigmas, st2_sig, 6));
    CHECK(bitwise_equal("timesteps", s.timesteps, st2_ts, 5));
    sdc_schedule_free(&s);

    sdc_sched_config_default(&c);
    c.invert_sigmas = 1;
    CHECK_EQ_INT(sdc_schedule_make(&c, 5, &s, &err), SDC_OK);
    const float inv_sig[6] = {0.0f, 0x1.999998p-3f, 0x1.999998p-2f, 0x1.333334p-1f,
                              0x1.99999ap-1f, 1.0f};
    const float inv_ts[5] = {0.0f, 0x1.8ffffep+7f, 0x1.8ffffep+8f, 0x1.2cp+9f, 0x1.9p+9f};
    CHECK(bitwise_equal("sigmas", s.sigmas, inv_sig, 6));
    CHECK(bitwise_equal("timesteps", s.timesteps, inv_ts, 5));
    sdc_schedule_free(&s);

    sdc_sched_config_default(&c);
    c.shift = 2.7;
    c.num_train_timesteps = 777;
    CHECK_EQ_INT(sdc_schedule_make(&c, 5, &s, &err), SDC_OK);
    const float o_sig[6] = {0x1p+0f,        0x1.d49c34p-1f, 0x1.9a9d28p-1f,
                            0x1.492492p-1f, 0x1.9ca81ep-2f, 0.0f};
    const float o_ts[5] = {0x1.848p+9f, 0x1.639386p+9f, 0x1.3791cp+9f, 0x1.f38p+8f,
                           0x1.391e9p+8f};
    CHECK(bitwise_equal("sigmas", s.sigmas, o_sig, 6));
    CHECK(bitwise_equal("timesteps", s.timesteps, o_ts, 5));
    sdc_schedule_free(&s);
}

static void test_euler_step(void)
{
    sdc_sched_config_t c;
    sdc_schedule_t s;
    sdc_error_t err = {0};
    sdc_sched_config_default(&c);
    c.shift = 3.0;
    CHECK_EQ_INT(sdc_schedule_make(&c, 4, &s, &err), SDC_OK);
    /* sigmas 1, 0.9, 0.75, 0.5, 0 */
    float x[3] = {1.0f, -2.0f, 0.5f};
    const float v[3] = {2.0f, 4.0f, -1.0f};
    sdc_schedule_step(&s, 0, x, v, 3);
    /* dt = 0.9f - 1 = -0.100000024f: x + dt * v in float. */
    float dt = 0.9f - 1.0f;
    CHECK(x[0] == 1.0f + dt * 2.0f && x[1] == -2.0f + dt * 4.0f && x[2] == 0.5f + dt * -1.0f);
    CHECK(fabsf(x[0] - 0.8f) < 1e-6f);
    sdc_schedule_step(&s, 3, x, v, 3); /* dt = -0.5 */
    CHECK(fabsf(x[0] - (-0.2f)) < 1e-6f);
    sdc_schedule_free(&s);
}

static void test_bad_steps(void)
{
    sdc_sched_config_t c;
    sdc_schedule_t s;
    sdc_error_t err = {0};
    sdc_sched_config_default(&c);
    CHECK_EQ_INT(sdc_schedule_make(&c, 0, &s, &err), SDC_ERR_RANGE);
    CHECK(s.sigmas == NULL);
    CHECK_EQ_INT(sdc_schedule_make(&c, -3, &s, &err), SDC_ERR_RANGE);
    CHECK_EQ_INT(sdc_schedule_make(&c, SDC_SCHED_MAX_STEPS + 1, &s, &err), SDC_ERR_RANGE);
    CHECK(strstr(err.msg, "steps") != NULL);
    CHECK_EQ_INT(sdc_schedule_make(&c, SDC_SCHED_MAX_STEPS, &s, &err), SDC_OK);
    CHECK(s.sigmas[SDC_SCHED_MAX_STEPS] == 0.0f && s.sigmas[0] == 1.0f);
    sdc_schedule_free(&s);

    c.shift = -1.0;
    CHECK_EQ_INT(sdc_schedule_make(&c, 4, &s, &err), SDC_ERR_RANGE);
    c.shift = 1.0;
    c.use_karras_sigmas = 1;
    CHECK_EQ_INT(sdc_schedule_make(&c, 4, &s, &err), SDC_ERR_UNSUPPORTED);
}

static void test_bad_configs(void)
{
    static const struct {
        const char *json;
        sdc_status_t want;
    } cases[] = {
        {"{\"_class_name\": \"EulerDiscreteScheduler\"}", SDC_ERR_UNSUPPORTED},
        {"{\"shift\": 5.0}", SDC_ERR_FORMAT},
        {"{\"_class_name\": 3}", SDC_ERR_FORMAT},
        {"{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"shift\": \"5\"}",
         SDC_ERR_FORMAT},
        {"{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"shift\": -2}", SDC_ERR_RANGE},
        {"{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"shift\": 0}", SDC_ERR_RANGE},
        {"{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"num_train_timesteps\": 0}",
         SDC_ERR_RANGE},
        {"{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"num_train_timesteps\": -1000}",
         SDC_ERR_RANGE},
        {"{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"num_train_timesteps\": 10.5}",
         SDC_ERR_FORMAT},
        {"{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"invert_sigmas\": 1}",
         SDC_ERR_FORMAT},
        {"{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"use_karras_sigmas\": true}",
         SDC_ERR_UNSUPPORTED},
        {"{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"use_beta_sigmas\": true, "
         "\"use_exponential_sigmas\": true}",
         SDC_ERR_INVALID_ARG},
        {"{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"use_dynamic_shifting\": true}",
         SDC_ERR_UNSUPPORTED},
        {"{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"stochastic_sampling\": true}",
         SDC_ERR_UNSUPPORTED},
        {"{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"time_shift_type\": \"cubic\"}",
         SDC_ERR_INVALID_ARG},
        {"{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"shift_terminal\": 1.0}",
         SDC_ERR_RANGE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sdc_sched_config_t c;
        sdc_error_t err = {0};
        sdc_status_t st = load_text(cases[i].json, &c, &err);
        CHECK_MSG(st == cases[i].want, "%s: got %d (%s), want %d", cases[i].json, (int)st,
                  err.msg, (int)cases[i].want);
        CHECK_MSG(err.msg[0] != '\0', "%s: no message", cases[i].json);
    }

    /* Defaults, null as absent, and the accepted spellings. */
    sdc_sched_config_t c;
    sdc_error_t err = {0};
    CHECK_EQ_INT(load_text("{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"shift\": 3, "
                           "\"shift_terminal\": null, \"time_shift_type\": \"linear\", "
                           "\"base_shift\": 0.5, \"_diffusers_version\": \"0.42.1\"}",
                           &c, &err),
               SDC_OK);
    CHECK(c.shift == 3.0 && c.shift_terminal == 0.0 && c.num_train_timesteps == 1000);
    CHECK(strcmp(c.time_shift_type, "linear") == 0);
    CHECK(!c.invert_sigmas && !c.use_dynamic_shifting && !c.stochastic_sampling);

    CHECK(sdc_sched_config_load(&c, "/nonexistent/scheduler_config.json", &err) != SDC_OK);
}

int main(void)
{
    RUN(test_golden_schedules);
    RUN(test_shift1_by_hand);
    RUN(test_options_vs_diffusers);
    RUN(test_euler_step);
    RUN(test_bad_steps);
    RUN(test_bad_configs);
    TEST_EXIT();
}
