/* test_gateway.c: sdc-gateway's pieces that need no server: request bodies
 * (gateway_request.c), tokens and rate limits (gateway_auth.c). The HTTP
 * server itself is tested over real HTTP by tests/integration/test_gateway*.sh. */
#include "cluster/gateway_auth.h"
#include "cluster/gateway_request.h"
#include "common/base64.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

static sdc_gw_limits_t lim;

/* Parses body as kind; returns the status, *code the refusal's code. */
static sdc_status_t parse(sdc_gw_req_kind_t kind, const char *body, sdc_gw_request_t *r,
                          const char **code, sdc_error_t *err)
{
    return sdc_gateway_request_parse(kind, body, strlen(body), &lim, r, code, err);
}

static int refused(sdc_gw_req_kind_t kind, const char *body, const char *want_code,
                   const char *want_msg)
{
    sdc_gw_request_t r;
    const char *code;
    sdc_error_t err = {0};
    if (parse(kind, body, &r, &code, &err) == SDC_OK) {
        fprintf(stderr, "  accepted: %s\n", body);
        sdc_gw_request_free(&r);
        return 0;
    }
    if (strcmp(code, want_code) != 0 || (want_msg && !strstr(err.msg, want_msg))) {
        fprintf(stderr, "  %s: code %s, message '%s'\n", body, code, err.msg);
        return 0;
    }
    return 1;
}

static void test_request_job(void)
{
    sdc_gw_request_t r;
    const char *code;
    sdc_error_t err = {0};
    CHECK_EQ_INT(parse(SDC_GW_REQ_JOB,
                       "{\"prompt\": \"a cat\", \"negative_prompt\": \"blurry\", \"size\": "
                       "\"64x96\", \"seed\": 9007199254740992, \"steps\": 7, "
                       "\"guidance_scale\": 4.5}", &r, &code, &err), SDC_OK);
    CHECK(strcmp(r.params.prompt, "a cat") == 0 && strcmp(r.params.negative_prompt, "blurry") == 0);
    CHECK(r.params.width == 64 && r.params.height == 96 && r.params.steps == 7);
    CHECK(r.params.seed == 9007199254740992ull && r.has_seed && r.n == 1);
    CHECK(r.params.has_guidance && r.params.guidance == 4.5 && r.params.id[0] == 0);
    sdc_gw_request_free(&r);
    /* Defaults: no size (the model's), default steps, no seed (drawn later). */
    CHECK_EQ_INT(parse(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"size\": null}", &r, &code, &err),
                 SDC_OK);
    CHECK(r.params.width == 0 && r.params.height == 0 && r.params.steps == 50 && !r.has_seed &&
          !r.params.has_guidance && !r.params.negative_prompt);
    sdc_gw_request_free(&r);
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"n\": 1}", "unknown_parameter", "'n'"));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"size\": \"64x64\"}", "missing_prompt", NULL));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": null}", "invalid_type", "'prompt' must be a string"));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"prompt\": \"y\"}", "duplicate_parameter",
                  NULL));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"steps\": 201}", "invalid_value", "1..200"));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"steps\": 1e400}", "invalid_value", NULL));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"seed\": -1}", "invalid_value", NULL));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"seed\": 1.5}", "invalid_value", NULL));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"guidance_scale\": 100.5}", "invalid_value",
                  NULL));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"size\": \"100x64\"}", "invalid_size",
                  "multiples of 16"));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"size\": \"64x64x64\"}", "invalid_size", NULL));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"size\": \"0000064x64\"}", "invalid_size",
                  NULL));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"a\\u0000b\"}", "invalid_json", "NUL"));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"a\tb\"}", "invalid_json", "control character"));
    CHECK(refused(SDC_GW_REQ_JOB, "\xef\xbb\xbf{\"prompt\": \"a\"}", "invalid_json", "byte order"));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"\xc0\x80\"}", "invalid_utf8", "offset 12"));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"\\ud800\"}", "invalid_json", NULL));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\"", "invalid_json", NULL));
    CHECK(refused(SDC_GW_REQ_JOB, "", "invalid_json", "empty"));
    CHECK(refused(SDC_GW_REQ_JOB, "[]", "invalid_json", "not an object"));
    char big[5000];
    snprintf(big, sizeof(big), "{\"prompt\": \"%4100s\"}", "x");
    CHECK(refused(SDC_GW_REQ_JOB, big, "prompt_too_long", "4100 bytes, at most 4096"));
    /* Not NUL-terminated: the length alone bounds the parse. */
    const char body[] = "{\"prompt\": \"x\"}GARBAGE";
    CHECK_EQ_INT(sdc_gateway_request_parse(SDC_GW_REQ_JOB, body, 15, &lim, &r, &code, &err), SDC_OK);
    sdc_gw_request_free(&r);
}

/* init_image: base64 (or a data URL) of a PNG that decodes, sized like the
 * job; the request then carries the bytes and the params name them. */
static void test_request_init_image(void)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/goldens/img2img_init_64x64.png", test_data_dir());
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f) return;
    uint8_t png[65536];
    size_t n = fread(png, 1, sizeof(png), f);
    fclose(f);
    char *b64 = sdc_base64_encode(png, n);
    size_t cap = strlen(b64) + 256;
    char *body = malloc(cap);
    sdc_gw_request_t r;
    const char *code;
    sdc_error_t err = {0};

    snprintf(body, cap, "{\"prompt\": \"x\", \"strength\": 0.25, \"init_image\": "
             "\"data:image/png;base64,%s\"}", b64);
    CHECK_EQ_INT(parse(SDC_GW_REQ_JOB, body, &r, &code, &err), SDC_OK);
    CHECK(r.image_len == n && memcmp(r.image, png, n) == 0 && r.img.data == r.image);
    CHECK(r.params.image_bytes == n && r.params.has_strength && r.params.strength == 0.25);
    CHECK(r.params.width == 64 && r.params.height == 64); /* the image's size */
    sdc_gw_request_free(&r);
    snprintf(body, cap, "{\"prompt\": \"x\", \"size\": \"64x96\", \"init_image\": \"%s\"}", b64);
    CHECK(refused(SDC_GW_REQ_JOB, body, "invalid_image", NULL));
    lim.max_image_bytes = n - 1;
    snprintf(body, cap, "{\"prompt\": \"x\", \"init_image\": \"%s\"}", b64);
    CHECK(refused(SDC_GW_REQ_JOB, body, "invalid_image", "at most"));
    lim.max_image_bytes = 8u << 20;
    b64[strlen(b64) / 2] = '\0'; /* a truncated PNG */
    snprintf(body, cap, "{\"prompt\": \"x\", \"init_image\": \"%.*s\"}",
             (int)(strlen(b64) / 4 * 4), b64);
    CHECK(refused(SDC_GW_REQ_JOB, body, "invalid_image", NULL));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"init_image\": 5}", "invalid_type", NULL));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"init_image\": \"data:image/png,AAAA\"}",
                  "invalid_image", "base64"));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"init_image\": \"Zm9v\"}", "invalid_image",
                  NULL));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"strength\": 0.5}", "invalid_value",
                  "needs 'init_image'"));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"strength\": 0}", "invalid_value", NULL));
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"strength\": 1.5}", "invalid_value", NULL));
    CHECK(refused(SDC_GW_REQ_IMAGES, "{\"prompt\": \"x\", \"init_image\": \"Zm9v\"}",
                  "unknown_parameter", NULL));
    free(body);
    free(b64);
}

static void test_request_images(void)
{
    sdc_gw_request_t r;
    const char *code;
    sdc_error_t err = {0};
    CHECK_EQ_INT(parse(SDC_GW_REQ_IMAGES,
                       "{\"prompt\": \"x\", \"n\": 4, \"response_format\": \"b64_json\", "
                       "\"model\": \"any\", \"user\": \"u\"}", &r, &code, &err), SDC_OK);
    CHECK_EQ_INT(r.n, 4);
    sdc_gw_request_free(&r);
    CHECK(refused(SDC_GW_REQ_IMAGES, "{\"prompt\": \"x\", \"n\": 5}", "invalid_value", "1..4"));
    CHECK(refused(SDC_GW_REQ_IMAGES, "{\"prompt\": \"x\", \"response_format\": \"url\"}",
                  "unsupported_response_format", NULL));
    CHECK(refused(SDC_GW_REQ_IMAGES, "{\"prompt\": \"x\", \"quality\": \"hd\"}", "unknown_parameter",
                  NULL));
}

static void test_sizes(void)
{
    sdc_gw_limits_t l;
    sdc_error_t err = {0};
    sdc_gw_limits_default(&l);
    CHECK_EQ_INT(sdc_gw_sizes_parse(&l, "64x64,1280x768", &err), SDC_OK);
    CHECK(l.n_sizes == 2 && l.sizes[1][0] == 1280 && l.sizes[1][1] == 768);
    CHECK_EQ_INT(sdc_gw_sizes_parse(&l, "64x64,", &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_gw_sizes_parse(&l, "64", &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_gw_sizes_parse(&l, "9000x64", &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_gw_sizes_parse(&l, "", &err), SDC_ERR_INVALID_ARG);
    sdc_gw_limits_t saved = lim;
    lim.n_sizes = 0;
    CHECK_EQ_INT(sdc_gw_sizes_parse(&lim, "64x96", &err), SDC_OK);
    CHECK(refused(SDC_GW_REQ_JOB, "{\"prompt\": \"x\", \"size\": \"64x64\"}", "invalid_size",
                  "allowed: 64x96"));
    lim = saved;
}

static char tmpdir[64];

static const char *write_file(const char *name, const char *text, mode_t mode)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
    return path;
}

static void test_tokens(void)
{
    sdc_gw_rate_t rate = {0, 1};
    sdc_gw_auth_t *a = NULL;
    sdc_error_t err = {0};
    const char *p = write_file("t1", "# comment\n\nfirst-token-0123456789\r\nsecond-token-012345678\n",
                               0600);
    CHECK_EQ_INT(sdc_gw_auth_load(p, &rate, &a, &err), SDC_OK);
    CHECK_EQ_INT(sdc_gw_auth_count(a), 2);
    CHECK_EQ_INT(sdc_gw_auth_check(a, "Bearer first-token-0123456789"), 0);
    CHECK_EQ_INT(sdc_gw_auth_check(a, "bearer  second-token-012345678 "), 1);
    CHECK_EQ_INT(sdc_gw_auth_check(a, "Bearer first-token-012345678"), -1);
    CHECK_EQ_INT(sdc_gw_auth_check(a, "Bearer first-token-01234567890"), -1);
    CHECK_EQ_INT(sdc_gw_auth_check(a, "Bearer # comment"), -1);
    CHECK_EQ_INT(sdc_gw_auth_check(a, "Basic first-token-0123456789"), -1);
    CHECK_EQ_INT(sdc_gw_auth_check(a, "Bearer "), -1);
    CHECK_EQ_INT(sdc_gw_auth_check(a, NULL), -1);
    sdc_gw_auth_free(a);
    CHECK_EQ_INT(sdc_gw_auth_load(write_file("t2", "first-token-0123456789\n", 0644), &rate, &a,
                                  &err), SDC_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "readable by every user") != NULL);
    CHECK_EQ_INT(sdc_gw_auth_load(write_file("t3", "ok-token-0123456789ab\nhas space in it 0123\n",
                                             0600), &rate, &a, &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "line 2") != NULL && !strstr(err.msg, "space in"));
    CHECK_EQ_INT(sdc_gw_auth_load(write_file("t4", "# none\n\n", 0600), &rate, &a, &err),
                 SDC_ERR_FORMAT);
    snprintf(err.msg, sizeof(err.msg), "%s", "");
    CHECK_EQ_INT(sdc_gw_auth_load("/nonexistent/tokens", &rate, &a, &err), SDC_ERR_IO);
}

static void test_rate(void)
{
    sdc_gw_rate_t rate = {2, 3}; /* 2/s, bursts of 3 */
    sdc_gw_auth_t *a = NULL;
    sdc_error_t err = {0};
    int retry;
    const char *p = write_file("t5", "first-token-0123456789\nsecond-token-012345678\n", 0600);
    CHECK_EQ_INT(sdc_gw_auth_load(p, &rate, &a, &err), SDC_OK);
    double t = 1000;
    for (int i = 0; i < 3; i++)
        CHECK(sdc_gw_rate_take(a, 0, t, &retry));
    CHECK(!sdc_gw_rate_take(a, 0, t, &retry));
    CHECK_EQ_INT(retry, 1);
    CHECK(sdc_gw_rate_take(a, 1, t, &retry)); /* buckets are per token */
    CHECK(!sdc_gw_rate_take(a, 0, t + 0.4, &retry));
    CHECK(sdc_gw_rate_take(a, 0, t + 0.9, &retry)); /* 0.9 s at 2/s refilled one */
    CHECK(sdc_gw_rate_take(a, 0, t + 100, &retry));
    CHECK(sdc_gw_rate_take(a, 0, t + 100, &retry));
    CHECK(sdc_gw_rate_take(a, 0, t + 100, &retry));
    CHECK(!sdc_gw_rate_take(a, 0, t + 100, &retry)); /* refill stops at the burst */
    CHECK(!sdc_gw_rate_take(a, 7, t, &retry));
    sdc_gw_auth_free(a);
    sdc_gw_rate_t bad = {1, 0.5};
    CHECK_EQ_INT(sdc_gw_auth_open(&bad, &a, &err), SDC_ERR_INVALID_ARG);
    sdc_gw_rate_t off = {0, 1};
    CHECK_EQ_INT(sdc_gw_auth_open(&off, &a, &err), SDC_OK);
    CHECK_EQ_INT(sdc_gw_auth_check(a, NULL), 0);
    for (int i = 0; i < 100; i++)
        CHECK(sdc_gw_rate_take(a, 0, t, &retry));
    sdc_gw_auth_free(a);
}

int main(void)
{
    sdc_gw_limits_default(&lim);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sdc-gwunit-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("FAIL tmpdir\n");
        return 1;
    }
    RUN(test_request_job);
    RUN(test_request_init_image);
    RUN(test_request_images);
    RUN(test_sizes);
    RUN(test_tokens);
    RUN(test_rate);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "  could not remove %s\n", tmpdir);
    TEST_EXIT();
}
