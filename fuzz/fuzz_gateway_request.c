/*
 * fuzz_gateway_request.c: libFuzzer target for sdc-gateway's request bodies
 * (src/cluster/gateway_request.c: sdc_gateway_request_parse).
 *
 * Input layout: byte 0 picks the endpoint (bit 0: /v1/images/generations,
 * else /v1/jobs) and the limits (bit 1: a fixed list of sizes instead of
 * "any multiple of 16"; bit 2: tight prompt and step limits); the rest is
 * the body, as the HTTP layer hands it over (not NUL-terminated).
 *
 * Checked: a refusal always has a code and a message; an accepted request
 * respects every limit, holds valid job parameters (they serialize to
 * canonical JSON that parses back to the same JSON), and frees cleanly.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/gateway_request.h"
#include "common/utf8.h"

static void setup(sdc_gw_limits_t *l, unsigned mode)
{
    sdc_gw_limits_default(l);
    if (mode & 2) {
        l->n_sizes = 3;
        l->sizes[0][0] = 64, l->sizes[0][1] = 64;
        l->sizes[1][0] = 64, l->sizes[1][1] = 96;
        l->sizes[2][0] = 1024, l->sizes[2][1] = 1024;
    }
    if (mode & 4) {
        l->max_prompt_bytes = 16;
        l->max_steps = 8;
        l->default_steps = 4;
        l->max_n = 2;
        l->max_guidance = 10;
    }
}

static int size_ok(const sdc_gw_limits_t *l, int w, int h)
{
    if (w == 0 && h == 0)
        return 1; /* no size given: the model's default */
    if (l->n_sizes == 0)
        return w % 16 == 0 && h % 16 == 0 && w >= 16 && h >= 16 && w <= l->max_side &&
               h <= l->max_side;
    for (int i = 0; i < l->n_sizes; i++)
        if (l->sizes[i][0] == w && l->sizes[i][1] == h)
            return 1;
    return 0;
}

static void check_accepted(const sdc_gw_limits_t *l, sdc_gw_req_kind_t kind, sdc_gw_request_t *r)
{
    sdc_job_params_t *p = &r->params;
    sdc_error_t err = {0};
    if (!p->prompt || p->embeds || strlen(p->prompt) == 0 ||
        strlen(p->prompt) > l->max_prompt_bytes ||
        sdc_utf8_valid_len(p->prompt, strlen(p->prompt)) != strlen(p->prompt))
        abort();
    if (p->negative_prompt && strlen(p->negative_prompt) > l->max_prompt_bytes)
        abort();
    if (!size_ok(l, p->width, p->height) || p->steps < 1 || p->steps > l->max_steps)
        abort();
    if (p->has_guidance && !(p->guidance >= 0 && p->guidance <= l->max_guidance))
        abort();
    if (r->n < 1 || r->n > (kind == SDC_GW_REQ_IMAGES ? l->max_n : 1))
        abort();
    /* What the gateway submits: canonical JSON that reads back the same. */
    snprintf(p->id, sizeof(p->id), "fuzz");
    char *json = NULL, *again = NULL;
    size_t len = 0, len2 = 0;
    sdc_job_params_t back;
    if (sdc_job_params_to_json(p, &json, &len, &err) != SDC_OK)
        abort();
    if (sdc_job_params_parse(&back, json, len, &err) != SDC_OK ||
        sdc_job_params_to_json(&back, &again, &len2, &err) != SDC_OK || len != len2 ||
        memcmp(json, again, len) != 0)
        abort();
    sdc_job_params_free(&back);
    free(json);
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0];
    sdc_gw_req_kind_t kind = mode & 1 ? SDC_GW_REQ_IMAGES : SDC_GW_REQ_JOB;
    sdc_gw_limits_t lim;
    setup(&lim, mode);
    /* A copy of exactly the body: reads past it are caught by ASan. */
    size_t n = size - 1;
    char *body = malloc(n ? n : 1);
    if (!body)
        return 0;
    memcpy(body, data + 1, n);
    sdc_gw_request_t r;
    const char *code = NULL;
    sdc_error_t err = {0};
    sdc_status_t st = sdc_gateway_request_parse(kind, body, n, &lim, &r, &code, &err);
    if (st == SDC_OK) {
        check_accepted(&lim, kind, &r);
        sdc_gw_request_free(&r);
    } else if (!code || !code[0] || !err.msg[0]) {
        abort();
    }
    free(body);
    return 0;
}
