/*
 * jsonstr.c: JSON string literals as lines of text (see jsonstr.h). The
 * grammar is RFC 8259 section 7; surrogate pairs in \u escapes are combined,
 * lone surrogates rejected because they have no UTF-8 form.
 */
#include "jsonstr.h"

#include <stdint.h>
#include <stdlib.h>

#include "utf8.h"

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int hex4(const char *s, size_t left, uint32_t *v)
{
    if (left < 4)
        return -1;
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        r <<= 4;
        if (c >= '0' && c <= '9')
            r |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            r |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            r |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *v = r;
    return 0;
}

/* Decodes the \u escape whose 'u' is at s[*i]; advances *i past it. */
static sdc_status_t unicode_escape(const char *s, size_t len, size_t *i, uint32_t *cp,
                                   sdc_error_t *err)
{
    size_t at = *i - 1;
    uint32_t hi;
    if (hex4(s + *i + 1, len - *i - 1, &hi) < 0)
        return sdc_error_set(err, SDC_ERR_FORMAT, "column %zu: \\u needs four hex digits",
                             at + 1);
    *i += 5;
    if (hi < 0xD800 || hi > 0xDFFF) {
        *cp = hi;
        return SDC_OK;
    }
    uint32_t lo;
    if (hi > 0xDBFF || *i + 1 >= len || s[*i] != '\\' || s[*i + 1] != 'u' ||
        hex4(s + *i + 2, len - *i - 2, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "column %zu: lone surrogate \\u%04X has no UTF-8 form", at + 1,
                             (unsigned)hi);
    *i += 6;
    *cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
    return SDC_OK;
}

sdc_status_t sdc_jsonstr_decode(const char *s, size_t len, char **out, size_t *out_len,
                                sdc_error_t *err)
{
    *out = NULL;
    *out_len = 0;
    size_t i = 0;
    while (i < len && is_ws(s[i]))
        i++;
    if (i >= len || s[i] != '"')
        return sdc_error_set(err, SDC_ERR_FORMAT, "column %zu: expected a JSON string (\")",
                             i + 1);
    i++;
    /* Escapes only shrink: the decoded text is never longer than the line. */
    char *buf = malloc(len + 1);
    if (!buf)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory decoding a %zu-byte line", len);
    size_t o = 0;
    sdc_status_t st;
    for (;;) {
        if (i >= len) {
            st = sdc_error_set(err, SDC_ERR_FORMAT, "column %zu: unterminated string", i + 1);
            goto err_free_buf;
        }
        unsigned char c = (unsigned char)s[i];
        if (c == '"')
            break;
        if (c < 0x20) {
            st = sdc_error_set(err, SDC_ERR_FORMAT,
                               "column %zu: raw control character 0x%02X in string (escape it)",
                               i + 1, c);
            goto err_free_buf;
        }
        if (c != '\\') {
            buf[o++] = (char)c;
            i++;
            continue;
        }
        if (i + 1 >= len) {
            st = sdc_error_set(err, SDC_ERR_FORMAT, "column %zu: unterminated escape", i + 1);
            goto err_free_buf;
        }
        char e = s[i + 1];
        i += 2;
        switch (e) {
        case '"': buf[o++] = '"'; break;
        case '\\': buf[o++] = '\\'; break;
        case '/': buf[o++] = '/'; break;
        case 'b': buf[o++] = '\b'; break;
        case 'f': buf[o++] = '\f'; break;
        case 'n': buf[o++] = '\n'; break;
        case 'r': buf[o++] = '\r'; break;
        case 't': buf[o++] = '\t'; break;
        case 'u': {
            uint32_t cp = 0;
            i -= 1; /* unicode_escape wants the index of 'u' */
            st = unicode_escape(s, len, &i, &cp, err);
            if (st != SDC_OK)
                goto err_free_buf;
            o += sdc_utf8_put(cp, buf + o);
            break;
        }
        default:
            st = sdc_error_set(err, SDC_ERR_FORMAT, "column %zu: invalid escape \\%c", i - 1,
                               e);
            goto err_free_buf;
        }
    }
    i++;
    while (i < len && is_ws(s[i]))
        i++;
    if (i < len) {
        st = sdc_error_set(err, SDC_ERR_FORMAT, "column %zu: text after the closing quote",
                           i + 1);
        goto err_free_buf;
    }
    buf[o] = '\0';
    *out = buf;
    *out_len = o;
    return SDC_OK;

err_free_buf:
    free(buf);
    return st;
}

int sdc_jsonstr_write(FILE *f, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    putc('"', f);
    size_t run = 0; /* bytes since the last escape, written in one go */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char ubuf[7];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c < 0x20 || c == 0x7F) {
            ubuf[0] = '\\';
            ubuf[1] = 'u';
            ubuf[2] = '0';
            ubuf[3] = '0';
            ubuf[4] = hex[c >> 4];
            ubuf[5] = hex[c & 15];
            ubuf[6] = '\0';
            esc = ubuf;
        }
        if (!esc) {
            run++;
            continue;
        }
        fwrite(s + i - run, 1, run, f);
        run = 0;
        fputs(esc, f);
    }
    fwrite(s + len - run, 1, run, f);
    putc('"', f);
    return ferror(f) ? -1 : 0;
}
