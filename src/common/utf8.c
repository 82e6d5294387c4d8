/*
 * utf8.c: UTF-8 decoding and lossy repair (see utf8.h for the rule). The
 * well-formed byte ranges are Table 3-7 of the Unicode standard; anything
 * outside them ends a maximal subpart.
 */
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

size_t sdc_utf8_next(const unsigned char *s, size_t len, int32_t *cp)
{
    unsigned char b0 = s[0];
    if (b0 < 0x80) {
        *cp = b0;
        return 1;
    }
    size_t need;
    uint32_t v;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 2;
        v = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 3;
        v = b0 & 0x0F;
        if (b0 == 0xE0)
            lo = 0xA0; /* overlong */
        else if (b0 == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 4;
        v = b0 & 0x07;
        if (b0 == 0xF0)
            lo = 0x90; /* overlong */
        else if (b0 == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        *cp = -1; /* continuation byte, C0, C1 or F5..FF: never starts a character */
        return 1;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= len) {
            *cp = -1;
            return i;
        }
        unsigned char b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) {
            *cp = -1;
            return i;
        }
        v = (v << 6) | (b & 0x3F);
    }
    *cp = (int32_t)v;
    return need;
}

size_t sdc_utf8_valid_len(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        /* ASCII dominates real text: skip it eight bytes at a time. */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, u + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= len)
            break;
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int32_t cp;
        size_t n = sdc_utf8_next(u + i, len - i, &cp);
        if (cp < 0)
            return i;
        i += n;
    }
    return len;
}

size_t sdc_utf8_put(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

sdc_status_t sdc_utf8_repair(const char *s, size_t len, char **out, size_t *out_len,
                             sdc_error_t *err)
{
    *out = NULL;
    *out_len = 0;
    /* Each replaced subpart is at least one byte and becomes three. */
    if (len > (SIZE_MAX - 1) / 3)
        return sdc_error_set(err, SDC_ERR_RANGE, "utf8: text of %zu bytes is too long", len);
    char *buf = malloc(len * 3 + 1);
    if (!buf)
        return sdc_error_set(err, SDC_ERR_NOMEM, "utf8: out of memory repairing %zu bytes", len);
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < len) {
        size_t good = sdc_utf8_valid_len(s + i, len - i);
        memcpy(buf + o, s + i, good);
        o += good;
        i += good;
        if (i >= len)
            break;
        int32_t cp;
        i += sdc_utf8_next(u + i, len - i, &cp);
        o += sdc_utf8_put(SDC_UTF8_REPLACEMENT, buf + o);
    }
    buf[o] = '\0';
    *out = buf;
    *out_len = o;
    return SDC_OK;
}
