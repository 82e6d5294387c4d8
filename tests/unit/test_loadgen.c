/*
 * test_loadgen.c: the load generator's pure parts. Percentiles against
 * numpy's (linear) values, the seeded Poisson arrivals (repeatable, mean
 * 1/rate, exponential shape), the HTTP contract's parsers on good and bad
 * bodies, Retry-After, bearer token files, prompt files, and a summary of
 * a known run (counts, goodput under the SLO, JSON fields). The request
 * loop itself runs against a real cluster in tests/integration/
 * test_loadgen.sh.
 */
#include "loadgen/loadgen.h"

#include <cjson/cJSON.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

static int near(double a, double b, double tol)
{
    return fabs(a - b) <= tol;
}

static void write_text(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        fwrite(text, 1, len, f);
        fclose(f);
    }
}

static void test_percentiles(void)
{
    /* numpy.percentile([1, 2, 3, 4], q) for q = 0, 50, 90, 99, 100. */
    const double v[] = {1, 2, 3, 4};
    CHECK(near(sdc_lg_percentile(v, 4, 0), 1.0, 1e-12));
    CHECK(near(sdc_lg_percentile(v, 4, 50), 2.5, 1e-12));
    CHECK(near(sdc_lg_percentile(v, 4, 90), 3.7, 1e-12));
    CHECK(near(sdc_lg_percentile(v, 4, 99), 3.97, 1e-12));
    CHECK(near(sdc_lg_percentile(v, 4, 100), 4.0, 1e-12));
    const double one = 7;
    CHECK(near(sdc_lg_percentile(&one, 1, 99), 7, 0));
    CHECK(isnan(sdc_lg_percentile(v, 0, 50)));

    /* Unknown values (< 0) are left out; the rest sorted. */
    double w[] = {5, -1, 1, 3, -1, 2, 4};
    sdc_lg_dist_t d;
    sdc_lg_dist(w, 7, &d);
    CHECK_EQ_INT(d.n, 5);
    CHECK(near(d.mean, 3, 1e-12) && d.min == 1 && d.max == 5);
    CHECK(near(d.p50, 3, 1e-12) && near(d.p90, 4.6, 1e-12) && near(d.p99, 4.96, 1e-12));
    double none[] = {-1};
    sdc_lg_dist(none, 1, &d);
    CHECK(d.n == 0 && isnan(d.p50) && isnan(d.mean));
}

static void test_arrivals(void)
{
    /* Repeatable: the same seed and index give the same gap. */
    CHECK(sdc_lg_arrival_gap(7, 3, 2.0) == sdc_lg_arrival_gap(7, 3, 2.0));
    CHECK(sdc_lg_arrival_gap(7, 3, 2.0) != sdc_lg_arrival_gap(8, 3, 2.0));
    CHECK(sdc_lg_arrival_gap(7, 3, 2.0) != sdc_lg_arrival_gap(7, 4, 2.0));
    /* The rate scales the gap exactly. */
    CHECK(near(sdc_lg_arrival_gap(1, 9, 4.0) * 2, sdc_lg_arrival_gap(1, 9, 2.0), 1e-12));
    /* Exponential with mean 1/rate: mean and P(gap > mean) = 1/e. */
    const int n = 200000;
    const double rate = 4.0;
    double sum = 0;
    int above = 0, bad = 0;
    for (int k = 0; k < n; k++) {
        double g = sdc_lg_arrival_gap(42, (uint64_t)k, rate);
        bad += !(g >= 0 && isfinite(g));
        sum += g;
        above += g > 1 / rate;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_MSG(near(sum / n, 1 / rate, 0.01 / rate), "mean gap %g", sum / n);
    CHECK_MSG(near((double)above / n, exp(-1), 0.005), "P(gap > mean) %g", (double)above / n);
}

static void test_http_created(void)
{
    char id[SDC_JOB_ID_MAX + 1];
    sdc_error_t err = {0};
    const char *ok = "{\"id\": \"job-12.a_b\", \"state\": \"queued\"}";
    CHECK_EQ_INT(sdc_lg_http_parse_created(ok, strlen(ok), id, &err), SDC_OK);
    CHECK(strcmp(id, "job-12.a_b") == 0);
    const char *bad[] = {"", "[]", "{\"state\": \"queued\"}", "{\"id\": 5}",
                         "{\"id\": \"a b\"}", "{\"id\": \"\"}", "{\"id\": \"x\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err.msg[0] = '\0';
        CHECK_MSG(sdc_lg_http_parse_created(bad[i], strlen(bad[i]), id, &err) != SDC_OK, "%s",
                  bad[i]);
        CHECK(strstr(err.msg, "POST /v1/jobs") != NULL);
    }
}

static void test_http_job(void)
{
    sdc_lg_status_t s;
    sdc_error_t err = {0};
    const char *flat =
        "{\"id\": \"j1\", \"state\": \"denoising\", \"step\": 3, \"steps\": 50, \"attempt\": 2,"
        " \"created_ms\": 1700000000000, \"queued_ms\": 1700000000000,"
        " \"encoding_ms\": 1700000000100, \"denoising_ms\": 1700000000150,"
        " \"decoding_ms\": null, \"extra\": {\"ignored\": true}}";
    CHECK_EQ_INT(sdc_lg_http_parse_job(flat, strlen(flat), "j1", &s, &err), SDC_OK);
    CHECK(s.state == SDC_JOB_DENOISING && s.step == 3 && s.steps == 50 && s.attempt == 2);
    CHECK(s.created_ms == 1700000000000LL && s.state_ms[SDC_JOB_ENCODING] == 1700000000100LL);
    CHECK(s.state_ms[SDC_JOB_DENOISING] == 1700000000150LL && s.state_ms[SDC_JOB_DECODING] == 0);
    CHECK(s.state_ms[SDC_JOB_DONE] == 0 && s.error[0] == '\0');

    const char *nested =
        "{\"id\": \"j2\", \"state\": \"failed\", \"error\": {\"message\": \"bad size\","
        " \"type\": \"invalid_request\", \"code\": 400},"
        " \"timestamps\": {\"created_ms\": 5, \"failed_ms\": 9}}";
    CHECK_EQ_INT(sdc_lg_http_parse_job(nested, strlen(nested), "j2", &s, &err), SDC_OK);
    CHECK(s.state == SDC_JOB_FAILED && strcmp(s.error, "bad size") == 0 && s.attempt == 1);
    CHECK(s.created_ms == 5 && s.state_ms[SDC_JOB_FAILED] == 9);

    const char *cancelled = "{\"id\": \"j3\", \"state\": \"cancelled\", \"error\": \"by user\","
                            " \"cancelled_ms\": 12}";
    CHECK_EQ_INT(sdc_lg_http_parse_job(cancelled, strlen(cancelled), "j3", &s, &err), SDC_OK);
    CHECK(s.state == SDC_JOB_CANCELLED && strcmp(s.error, "by user") == 0);
    CHECK(s.state_ms[SDC_JOB_CANCELLED] == 12);

    static const struct {
        const char *body, *want;
    } bad[] = {
        {"{\"id\": \"other\", \"state\": \"done\"}", "about job other"},
        {"{\"id\": \"j1\", \"state\": \"sleeping\"}", "unknown state 'sleeping'"},
        {"{\"id\": \"j1\"}", "no string \"state\""},
        {"{\"id\": \"j1\", \"state\": \"done\", \"step\": 1.5}", "\"step\" is not an integer"},
        {"{\"id\": \"j1\", \"state\": \"done\", \"steps\": -1}", "\"steps\" is not an integer"},
        {"{\"id\": \"j1\", \"state\": \"done\", \"done_ms\": \"soon\"}", "\"done_ms\""},
        {"not json", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err.msg[0] = '\0';
        CHECK_EQ_INT(sdc_lg_http_parse_job(bad[i].body, strlen(bad[i].body), "j1", &s, &err),
                     SDC_ERR_FORMAT);
        CHECK_MSG(strstr(err.msg, bad[i].want) != NULL, "%s: %s", bad[i].body, err.msg);
    }
}

static void test_http_error_message(void)
{
    char msg[64];
    const char *e = "{\"error\": {\"message\": \"slow down\", \"type\": \"rate_limit\", \"code\": 429}}";
    sdc_lg_http_error_message(e, strlen(e), msg, sizeof(msg));
    CHECK(strcmp(msg, "slow down") == 0);
    const char *plain = "Bad\ngateway";
    sdc_lg_http_error_message(plain, strlen(plain), msg, sizeof(msg));
    CHECK(strcmp(msg, "Bad gateway") == 0);
    sdc_lg_http_error_message("", 0, msg, sizeof(msg));
    CHECK(msg[0] == '\0');
    char small[6];
    sdc_lg_http_error_message(e, strlen(e), small, sizeof(small));
    CHECK(strcmp(small, "slow ") == 0);
}

static void test_retry_after(void)
{
    CHECK(sdc_lg_retry_after("5", 0) == 5);
    CHECK(sdc_lg_retry_after(" 10\r\n", 0) == 10);
    CHECK(sdc_lg_retry_after("0", 0) == 0);
    struct tm tm = {.tm_year = 115, .tm_mon = 9, .tm_mday = 21, .tm_hour = 7, .tm_min = 28};
    long at = (long)timegm(&tm);
    CHECK(sdc_lg_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", at - 60) == 60);
    CHECK(sdc_lg_retry_after("Wed, 21 Oct 2015 07:28:00 GMT\r\n", at + 60) == 0);
    CHECK(sdc_lg_retry_after("soon", 0) < 0);
    CHECK(sdc_lg_retry_after("-3", 0) < 0);
    CHECK(sdc_lg_retry_after("5 s", 0) < 0);
}

static void test_token_file(void)
{
    char path[] = "/tmp/sdc-test-token-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    char *tok = NULL;
    sdc_error_t err = {0};
    write_text(path, "  s3cr3t-T0ken.x  \nsecond line\n", 31);
    CHECK_EQ_INT(sdc_lg_token_read(path, &tok, &err), SDC_OK);
    CHECK(tok && strcmp(tok, "s3cr3t-T0ken.x") == 0);
    free(tok);
    write_text(path, "abc", 3);
    CHECK_EQ_INT(sdc_lg_token_read(path, &tok, &err), SDC_OK);
    CHECK(tok && strcmp(tok, "abc") == 0);
    free(tok);
    write_text(path, "\n", 1);
    CHECK_EQ_INT(sdc_lg_token_read(path, &tok, &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "empty") && tok == NULL);
    write_text(path, "a b\n", 4);
    CHECK_EQ_INT(sdc_lg_token_read(path, &tok, &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "visible ASCII at byte 1"));
    write_text(path, "tok\x7f\n", 5);
    CHECK_EQ_INT(sdc_lg_token_read(path, &tok, &err), SDC_ERR_FORMAT);
    unlink(path);
    CHECK_EQ_INT(sdc_lg_token_read(path, &tok, &err), SDC_ERR_IO);
    CHECK(strstr(err.msg, path) != NULL);
}

static void test_prompts(void)
{
    char path[] = "/tmp/sdc-test-prompts-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    sdc_lg_prompts_t p;
    sdc_error_t err = {0};
    const char *good = "# a comment\n"
                       "A cat\r\n"
                       "\n"
                       "   \t\n"
                       "  {\"prompt\": \"一只熊猫\", \"negative_prompt\": \"blurry\"}\n"
                       "{\"prompt\": \"a dog\", \"negative_prompt\": null, \"seed\": 3}\n"
                       "  leading spaces kept";
    write_text(path, good, strlen(good));
    CHECK_EQ_INT(sdc_lg_prompts_load(path, &p, &err), SDC_OK);
    CHECK_EQ_INT(p.n, 4);
    if (p.n == 4) {
        CHECK(strcmp(p.prompt[0], "A cat") == 0 && p.negative[0] == NULL);
        CHECK(strcmp(p.prompt[1], "一只熊猫") == 0 && strcmp(p.negative[1], "blurry") == 0);
        CHECK(strcmp(p.prompt[2], "a dog") == 0 && p.negative[2] == NULL);
        CHECK(strcmp(p.prompt[3], "  leading spaces kept") == 0);
    }
    sdc_lg_prompts_free(&p);

    static const struct {
        const char *text, *want;
    } bad[] = {
        {"ok\n{\"prompt\": 1}\n", ":2: \"prompt\" must be a string"},
        {"ok\n{\"negative_prompt\": \"x\"}\n", ":2: \"prompt\" must be a string"},
        {"{\"prompt\": \"a\", \"negative_prompt\": 5}\n", ":1: \"negative_prompt\" must be"},
        {"{not json\n", ":1: not a JSON object"},
        {"fine\nbad \xff byte\n", ":2: the prompt is not valid UTF-8 (byte 4)"},
        {"# only a comment\n\n", "has no prompts"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_text(path, bad[i].text, strlen(bad[i].text));
        err.msg[0] = '\0';
        CHECK(sdc_lg_prompts_load(path, &p, &err) != SDC_OK);
        CHECK_MSG(strstr(err.msg, bad[i].want) != NULL, "%s", err.msg);
        CHECK(p.n == 0 && p.prompt == NULL);
    }
    unlink(path);
    CHECK_EQ_INT(sdc_lg_prompts_load(path, &p, &err), SDC_ERR_IO);

    CHECK_EQ_INT(sdc_lg_prompts_builtin(&p, &err), SDC_OK);
    CHECK_EQ_INT(p.n, 12);
    int chinese = 0, quoted = 0;
    for (size_t i = 0; i < p.n; i++) {
        chinese += (unsigned char)p.prompt[i][0] >= 0xe4;
        quoted += strchr(p.prompt[i], '"') != NULL || strstr(p.prompt[i], "“") != NULL;
    }
    CHECK(chinese >= 4 && quoted >= 2);
    sdc_lg_prompts_free(&p);
}

/* Four jobs: three done (e2e 1, 2, 3 s), one failed, over 10 s. */
static void test_summary(void)
{
    sdc_lg_job_t jobs[4];
    memset(jobs, 0, sizeof(jobs));
    for (int i = 0; i < 4; i++) {
        jobs[i].e2e_s = i + 1.0;
        jobs[i].queue_s = 0.1 * (i + 1);
        jobs[i].step_s = i == 1 ? -1 : 0.05;
        jobs[i].encode_s = jobs[i].decode_s = jobs[i].fetch_s = -1;
        jobs[i].submit_s = 0.001;
        jobs[i].intended = i;
        jobs[i].sent = i + (i == 2 ? 0.5 : 0.0);
        jobs[i].attempt = i == 0 ? 2 : 1;
        jobs[i].result_bytes = 1000;
    }
    jobs[3].error = SDC_LG_ERR_JOB_FAILED;
    sdc_lg_run_t r = {.jobs = jobs, .n = 4, .wall_s = 10};
    snprintf(r.example[SDC_LG_ERR_JOB_FAILED], SDC_LG_MSG_MAX, "bad size");
    r.poll_errors[SDC_LG_ERR_CONNECT] = 2;
    sdc_lg_config_t c = {.mode = SDC_LG_OPEN, .rate = 0.5};
    sdc_lg_summary_t s;
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_lg_summarize(&r, &c, 2.5, &s, &err), SDC_OK);
    CHECK(s.offered_jobs == 4 && s.done == 3 && s.good == 2 && s.requeued == 1);
    CHECK(s.errors[SDC_LG_ERR_JOB_FAILED] == 1 && s.errors[SDC_LG_ERR_NONE] == 0);
    CHECK(near(s.throughput, 0.3, 1e-12) && near(s.goodput, 0.2, 1e-12));
    CHECK(s.e2e.n == 3 && near(s.e2e.p50, 2, 1e-12) && near(s.e2e.max, 3, 1e-12));
    CHECK(s.step.n == 2 && s.encode.n == 0 && s.submit.n == 4);
    CHECK(s.lag.n == 4 && near(s.lag.max, 0.5, 1e-12));
    CHECK(near(s.result_bytes_mean, 1000, 0));

    cJSON *o = sdc_lg_summary_json(&s, &r);
    CHECK(o != NULL);
    if (!o)
        return;
    CHECK(cJSON_GetObjectItem(o, "rate")->valuedouble == 0.5);
    CHECK(cJSON_GetObjectItem(o, "done")->valuedouble == 3);
    CHECK(cJSON_GetObjectItem(o, "failed")->valuedouble == 1);
    CHECK(cJSON_GetObjectItem(o, "good")->valuedouble == 2);
    CHECK(cJSON_GetObjectItem(o, "slo_ms")->valuedouble == 2500);
    const cJSON *lat = cJSON_GetObjectItem(o, "latency_ms");
    const cJSON *e2e = cJSON_GetObjectItem(lat, "e2e");
    CHECK(cJSON_GetObjectItem(e2e, "p50")->valuedouble == 2000);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(lat, "encode"), "p50")));
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "errors"), "job_failed")->valuedouble == 1);
    CHECK(strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "error_examples"), "job_failed")
                     ->valuestring, "bad size") == 0);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "poll_errors_retried"), "connect")
              ->valuedouble == 2);
    cJSON_Delete(o);

    /* Without an SLO every done job is good. */
    CHECK_EQ_INT(sdc_lg_summarize(&r, &c, 0, &s, &err), SDC_OK);
    CHECK(s.good == 3);
    CHECK(strcmp(sdc_lg_err_name(SDC_LG_ERR_RATE_LIMITED), "rate_limited") == 0);
    CHECK(strcmp(sdc_lg_err_name(SDC_LG_ERR_COUNT), "?") == 0);
}

int main(void)
{
    RUN(test_percentiles);
    RUN(test_arrivals);
    RUN(test_http_created);
    RUN(test_http_job);
    RUN(test_http_error_message);
    RUN(test_retry_after);
    RUN(test_token_file);
    RUN(test_prompts);
    RUN(test_summary);
    TEST_EXIT();
}
