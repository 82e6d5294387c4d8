/*
 * gateway_request.h: the JSON bodies sdc-gateway accepts, parsed and
 * checked in one place (the HTTP layer never looks inside a body, and the
 * fuzz target drives exactly this function). Two shapes:
 *
 *   POST /v1/jobs                 {"prompt", "negative_prompt", "size",
 *                                  "seed", "steps", "guidance_scale",
 *                                  "init_image", "strength"}
 *                                 init_image: a PNG or JPEG in base64 (a
 *                                 "data:image/...;base64," prefix is
 *                                 allowed): image-to-image
 *   POST /v1/images/generations   the same plus OpenAI's "n",
 *                                  "response_format" (b64_json only),
 *                                  "model" and "user" (accepted, unused)
 *
 * Strict: unknown or repeated fields, wrong types, non-integral or
 * out-of-range numbers, sizes the gateway does not serve, invalid UTF-8 and
 * NUL characters are refused with a message naming the field and a short
 * machine-readable code, as OpenAI's error objects carry.
 *
 * Not HTTP: body size limits on the wire and status codes are gateway.c's.
 */
#ifndef SDC_CLUSTER_GATEWAY_REQUEST_H
#define SDC_CLUSTER_GATEWAY_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "cluster/jobs.h"
#include "common/status.h"

#define SDC_GW_MAX_SIZES 64
#define SDC_GW_N_MAX 16 /* the largest n any configuration may allow */

typedef enum { SDC_GW_REQ_JOB = 0, SDC_GW_REQ_IMAGES } sdc_gw_req_kind_t;

typedef struct {
    size_t max_prompt_bytes; /* prompt and negative_prompt, each */
    int max_n;               /* images: 1..max_n images per request */
    int max_steps;
    double max_guidance;
    int default_steps;
    /* Allowed sizes; n_sizes == 0: any WxH with both sides multiples of
     * 16 in 16..max_side. */
    int n_sizes;
    int sizes[SDC_GW_MAX_SIZES][2];
    int max_side;
    size_t max_image_bytes; /* decoded init_image, at most */
} sdc_gw_limits_t;

/* The defaults documented in README (sdc-gateway): prompts up to 4096
 * bytes, n up to 4, steps 1..200 (default 50), guidance 0..100, any size of
 * multiples of 16 up to 2048, input images up to 8 MiB. */
void sdc_gw_limits_default(sdc_gw_limits_t *l);

/* Parses "64x64,96x64" into l->sizes (replacing them); SDC_ERR_INVALID_ARG
 * naming the bad item. */
sdc_status_t sdc_gw_sizes_parse(sdc_gw_limits_t *l, const char *list, sdc_error_t *err);

typedef struct {
    sdc_job_params_t params; /* id left empty: the gateway names the job */
    int has_seed;            /* 0: the caller gave none (the gateway draws one) */
    int n;                   /* images: how many; jobs: 1 */
    uint8_t *image;          /* init_image decoded (params name it), or NULL */
    size_t image_len;
    sdc_job_image_t img;     /* image checked: what sdc_job_submit_image takes */
} sdc_gw_request_t;

void sdc_gw_request_free(sdc_gw_request_t *r);

/* Parses body[0..len) (not NUL-terminated) as kind. On error *code (never
 * NULL afterwards) is a short token such as "invalid_json", "missing_prompt",
 * "invalid_size", "unknown_parameter", and r holds nothing to free. */
sdc_status_t sdc_gateway_request_parse(sdc_gw_req_kind_t kind, const char *body, size_t len,
                                       const sdc_gw_limits_t *lim, sdc_gw_request_t *r,
                                       const char **code, sdc_error_t *err);

#endif
