/*
 * base64.c: see base64.h. Table-driven both ways; decoding checks every
 * character and the canonical padding so that one image has one encoding.
 */
#include "base64.h"

#include <stdlib.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *sdc_base64_encode(const uint8_t *data, size_t len)
{
    if (len > (SIZE_MAX - 1) / 4 * 3 - 2)
        return NULL;
    char *out = malloc(4 * ((len + 2) / 3) + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < len) v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < len) v |= data[i + 2];
        *o++ = alphabet[v >> 18 & 63];
        *o++ = alphabet[v >> 12 & 63];
        *o++ = i + 1 < len ? alphabet[v >> 6 & 63] : '=';
        *o++ = i + 2 < len ? alphabet[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* 0..63, or -1 for a character outside the alphabet. */
static int sextet(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

sdc_status_t sdc_base64_decode(const char *text, size_t len, size_t max_out, uint8_t **out,
                               size_t *out_len, sdc_error_t *err)
{
    *out = NULL;
    *out_len = 0;
    if (len % 4)
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "base64: length %zu is not a multiple of 4 (padding missing?)", len);
    size_t pad = len && text[len - 1] == '=' ? (text[len - 2] == '=' ? 2 : 1) : 0;
    size_t n = len / 4 * 3 - pad;
    if (n > max_out)
        return sdc_error_set(err, SDC_ERR_RANGE, "base64: %zu bytes decoded, at most %zu allowed",
                             n, max_out);
    uint8_t *buf = malloc(n ? n : 1), *o = buf;
    if (!buf)
        return sdc_error_set(err, SDC_ERR_NOMEM, "base64: out of memory for %zu bytes", n);
    for (size_t i = 0; i < len; i += 4) {
        int last = i + 4 == len;
        uint32_t v = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)text[i + k];
            int s = sextet(c);
            if (s < 0 && !(last && c == '=' && k >= 4 - (int)pad)) {
                free(buf);
                return sdc_error_set(err, SDC_ERR_FORMAT,
                                     "base64: invalid character 0x%02x at offset %zu", c, i + k);
            }
            v = v << 6 | (uint32_t)(s < 0 ? 0 : s);
        }
        /* Canonical form: the bits the padding stands for are zero. */
        if ((pad == 1 && last && (v & 0xff)) || (pad == 2 && last && (v & 0xffff))) {
            free(buf);
            return sdc_error_set(err, SDC_ERR_FORMAT,
                                 "base64: non-zero bits under the padding at offset %zu", i);
        }
        *o++ = (uint8_t)(v >> 16);
        if (!last || pad < 2) *o++ = (uint8_t)(v >> 8);
        if (!last || pad < 1) *o++ = (uint8_t)v;
    }
    *out = buf;
    *out_len = n;
    return SDC_OK;
}
