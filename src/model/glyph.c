/*
 * glyph.c: extract_glyph_text (diffusers, pipeline_hunyuanimage.py) on bytes.
 *
 * On valid UTF-8 the quote characters and '\n' are unambiguous byte
 * sequences, so matching bytes is matching characters. Python's
 * re.findall(r"O(.*?)C") means: from the leftmost O, the span ends at the
 * first C unless a '\n' comes first, in which case there is no match at that
 * O and the search resumes at the next O; after a match it resumes after C.
 * Remembering the first C-or-newline position makes that linear, where the
 * regex engine is quadratic on many unclosed quotes.
 */
#include "glyph.h"

#include <stdlib.h>
#include <string.h>

#include "../common/utf8.h"

typedef struct {
    const char *open, *close; /* UTF-8 */
} glyph_quote_t;

/* In the order the pipeline concatenates its four findall results. */
static const glyph_quote_t glyph_quotes[] = {
    {"'", "'"},
    {"\"", "\""},
    {"\xe2\x80\x98", "\xe2\x80\x99"}, /* U+2018 U+2019 */
    {"\xe2\x80\x9c", "\xe2\x80\x9d"}, /* U+201C U+201D */
};

typedef struct {
    char *buf;
    size_t len, cap;
    size_t n_spans;
} glyph_out_t;

static int out_append(glyph_out_t *o, const char *s, size_t n)
{
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->len + n + 1)
            cap *= 2;
        char *p = realloc(o->buf, cap);
        if (!p)
            return -1;
        o->buf = p;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
    return 0;
}

/* One matched span: ". " between spans, then Text "<span>". */
static int out_span(glyph_out_t *o, const char *s, size_t n)
{
    if (o->n_spans++ && out_append(o, ". ", 2))
        return -1;
    if (out_append(o, "Text \"", 6) || out_append(o, s, n) || out_append(o, "\"", 1))
        return -1;
    return 0;
}

/* First position >= from where close or '\n' starts; len when none. */
static size_t find_stop(const char *s, size_t len, size_t from, const char *close, size_t nc)
{
    for (size_t i = from; i < len; i++) {
        if (s[i] == '\n')
            return i;
        if (s[i] == close[0] && len - i >= nc && memcmp(s + i, close, nc) == 0)
            return i;
    }
    return len;
}

/* memchr for the first byte, then the rest: memmem is quadratic here under
 * sanitizers, which check its whole haystack on every call. */
static const char *find_open(const char *s, size_t len, size_t pos, const char *open, size_t no)
{
    while (pos < len) {
        const char *p = memchr(s + pos, open[0], len - pos);
        if (!p)
            return NULL;
        size_t i = (size_t)(p - s);
        if (len - i >= no && memcmp(p, open, no) == 0)
            return p;
        pos = i + 1;
    }
    return NULL;
}

static int scan_quote(glyph_out_t *o, const char *s, size_t len, const glyph_quote_t *q)
{
    size_t no = strlen(q->open), nc = strlen(q->close);
    size_t pos = 0, stop = 0;
    int have_stop = 0;
    while (pos < len) {
        const char *hit = find_open(s, len, pos, q->open, no);
        if (!hit)
            break;
        size_t start = (size_t)(hit - s) + no;
        /* A stop found for an earlier start is still the first one here:
         * nothing between the two starts was a close or a newline. */
        if (!have_stop || stop < start) {
            stop = find_stop(s, len, start, q->close, nc);
            have_stop = 1;
        }
        if (stop < len && s[stop] != '\n') {
            if (out_span(o, s + start, stop - start))
                return -1;
            pos = stop + nc;
            have_stop = 0;
        } else {
            pos = (size_t)(hit - s) + 1;
        }
    }
    return 0;
}

sdc_status_t sdc_glyph_extract(const char *prompt, size_t len, char **out, size_t *out_len,
                               sdc_error_t *err)
{
    char *fixed = NULL;
    size_t fixed_len;
    glyph_out_t o = {0};
    *out = NULL;
    *out_len = 0;
    if (len && sdc_utf8_valid_len(prompt, len) != len) {
        sdc_status_t st = sdc_utf8_repair(prompt, len, &fixed, &fixed_len, err);
        if (st != SDC_OK)
            return st;
        prompt = fixed;
        len = fixed_len;
    }
    for (size_t i = 0; i < sizeof(glyph_quotes) / sizeof(glyph_quotes[0]); i++)
        if (scan_quote(&o, prompt, len, &glyph_quotes[i]))
            goto err_nomem;
    if (o.n_spans && out_append(&o, ". ", 2))
        goto err_nomem;
    free(fixed);
    *out = o.buf;
    *out_len = o.len;
    return SDC_OK;

err_nomem:
    free(o.buf);
    free(fixed);
    return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory extracting the quoted text of a "
                                             "%zu-byte prompt", len);
}
