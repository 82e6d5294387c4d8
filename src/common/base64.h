/*
 * base64.h: standard base64 (RFC 4648, "+/" alphabet, "=" padding), for
 * images inside JSON: results out of sdc-gateway, input images in.
 * Strict on decode: no whitespace, no missing padding, no bits after the
 * last byte. Not the URL-safe alphabet.
 */
#ifndef SDC_BASE64_H
#define SDC_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* data[0..len) as a malloc'd, NUL-terminated string; NULL when out of memory. */
char *sdc_base64_encode(const uint8_t *data, size_t len);

/* Decodes text[0..len) into a malloc'd *out (*out_len bytes). Refuses more
 * than max_out bytes of output before allocating (SDC_ERR_RANGE) and any
 * malformed input (SDC_ERR_FORMAT, naming the offset). */
sdc_status_t sdc_base64_decode(const char *text, size_t len, size_t max_out, uint8_t **out,
                               size_t *out_len, sdc_error_t *err);

#endif
