/*
 * test_glyph.c: quoted-text extraction (sdc_glyph_extract) against the
 * Python results stored in tests/data/goldens/text_prompts.json (the
 * "glyph" and "encode" cases: every quote kind, nesting, unbalanced and
 * unclosed quotes, newlines, thousands of segments, NUL bytes, invalid
 * UTF-8), against a direct transcription of the regex semantics on random
 * inputs, and on inputs large enough that a quadratic scan would hang.
 */
#include <stdint.h>
#include <string.h>

#include "test.h"
#include "text_golden.h"

#include "common/timer.h"
#include "common/utf8.h"
#include "model/glyph.h"

/* Checks one input against an expected glyph text (NULL: none). */
static int check_one(const char *name, const char *in, size_t n, const char *want, size_t want_n)
{
    char *got = NULL;
    size_t got_n = 0;
    sdc_error_t err = {0};
    if (sdc_glyph_extract(in, n, &got, &got_n, &err) != SDC_OK) {
        fprintf(stderr, "  %s: %s\n", name, err.msg);
        return 0;
    }
    int ok = (!got && !want) || (got && want && got_n == want_n && memcmp(got, want, got_n) == 0);
    if (!ok)
        fprintf(stderr, "  %s: got %s%.80s%s (%zu bytes), want %s%.80s%s (%zu bytes)\n", name,
                got ? "'" : "", got ? got : "none", got ? "'" : "", got_n, want ? "'" : "",
                want ? want : "none", want ? "'" : "", want_n);
    if (got) ok &= got[got_n] == '\0' && sdc_utf8_valid_len(got, got_n) == got_n;
    free(got);
    return ok;
}

static void check_section(const char *section, int *n_cases)
{
    sdc_json_t doc;
    cJSON *root = text_golden_load(&doc);
    CHECK(root != NULL);
    if (!root) return;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, section), *c;
    CHECK(cJSON_IsArray(arr) && cJSON_GetArraySize(arr) > 0);
    cJSON_ArrayForEach(c, arr) {
        size_t n, wn;
        char *in = text_hex(c, "prompt_hex", &n), *want = text_hex(c, "glyph_hex", &wn);
        CHECK_MSG(check_one(text_name(c), in ? in : "", n, want, wn), "case %s", text_name(c));
        free(in);
        free(want);
        (*n_cases)++;
    }
    sdc_json_free(&doc);
}

static void test_python_glyph_cases(void)
{
    int n = 0;
    check_section("glyph", &n);
    CHECK(n >= 50);
}

static void test_python_prompt_cases(void)
{
    int n = 0;
    check_section("encode", &n);
    CHECK(n >= 20);
}

/* The regex semantics, written out the slow way on valid UTF-8: at every
 * byte, try to match open, then scan to the first close, failing at '\n'. */
static const char *const naive_q[4][2] = {
    {"'", "'"}, {"\"", "\""}, {"\xe2\x80\x98", "\xe2\x80\x99"}, {"\xe2\x80\x9c", "\xe2\x80\x9d"}};

static char *naive(const char *s, size_t n, size_t *out_n)
{
    char *out = malloc(16 * n + 16);
    size_t o = 0, spans = 0;
    for (int k = 0; k < 4; k++) {
        size_t no = strlen(naive_q[k][0]), nc = strlen(naive_q[k][1]);
        size_t p = 0;
        while (p < n) {
            if (n - p < no || memcmp(s + p, naive_q[k][0], no) != 0) {
                p++;
                continue;
            }
            size_t q = p + no;
            int found = 0;
            for (; q < n && s[q] != '\n'; q++)
                if (n - q >= nc && memcmp(s + q, naive_q[k][1], nc) == 0) {
                    found = 1;
                    break;
                }
            if (!found) {
                p++;
                continue;
            }
            if (spans++) o += (size_t)sprintf(out + o, ". ");
            o += (size_t)sprintf(out + o, "Text \"");
            memcpy(out + o, s + p + no, q - p - no);
            o += q - p - no;
            out[o++] = '"';
            p = q + nc;
        }
    }
    if (!spans) {
        free(out);
        *out_n = 0;
        return NULL;
    }
    o += (size_t)sprintf(out + o, ". ");
    *out_n = o;
    return out;
}

/* Random strings over quote characters, newlines, letters, NUL and bytes
 * that are not UTF-8 (which both sides see repaired). */
static void test_random_vs_naive(void)
{
    static const char *const atoms[] = {"'", "\"", "\xe2\x80\x98", "\xe2\x80\x99", "\xe2\x80\x9c",
                                        "\xe2\x80\x9d", "\n", "a", "b", " ", "\xff", "\xe2\x80",
                                        "\0", "\xe4\xb8\xad"};
    const int n_atoms = (int)(sizeof(atoms) / sizeof(atoms[0]));
    uint64_t r = 0x9E3779B97F4A7C15ull;
    int bad = 0;
    for (int t = 0; t < 20000 && bad < 5; t++) {
        char buf[256];
        size_t n = 0;
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        int len = (int)((r >> 33) % 40);
        for (int i = 0; i < len; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            const char *a = atoms[(r >> 33) % (uint64_t)n_atoms];
            size_t an = a[0] ? strlen(a) : 1;
            memcpy(buf + n, a, an);
            n += an;
        }
        char *fixed = NULL;
        size_t fixed_n = 0;
        sdc_error_t err = {0};
        if (sdc_utf8_repair(buf, n, &fixed, &fixed_n, &err) != SDC_OK) {
            bad++;
            continue;
        }
        size_t want_n;
        char *want = naive(fixed, fixed_n, &want_n);
        char name[32];
        snprintf(name, sizeof(name), "random %d", t);
        if (!check_one(name, buf, n, want, want_n)) bad++;
        free(want);
        free(fixed);
    }
    CHECK_EQ_INT(bad, 0);
}

/* A megabyte of unclosed opening quotes: the regex engine is quadratic
 * there; the extractor must stay linear. */
static void test_large_inputs_linear(void)
{
    const size_t n = 1 << 20;
    char *s = malloc(n);
    CHECK(s != NULL);
    if (!s) return;
    for (size_t i = 0; i < n; i += 3) memcpy(s + i, "\xe2\x80\x98", n - i < 3 ? n - i : 3);
    char *out = NULL;
    size_t on = 0;
    sdc_error_t err = {0};
    double t0 = sdc_now();
    CHECK(sdc_glyph_extract(s, n, &out, &on, &err) == SDC_OK);
    CHECK(out == NULL);
    /* "''''..." closes every other quote: 2^19 empty segments. */
    memset(s, '\'', n);
    CHECK(sdc_glyph_extract(s, n, &out, &on, &err) == SDC_OK);
    CHECK(out != NULL);
    if (out) {
        CHECK_EQ_INT(on, (n / 2) * 9 - 2 + 2);
        CHECK(memcmp(out, "Text \"\". Text \"\"", 16) == 0);
        CHECK(memcmp(out + on - 4, "\"\". ", 4) == 0);
    }
    free(out);
    /* Unclosed ASCII quotes separated by newlines. */
    for (size_t i = 0; i < n; i++) s[i] = i % 2 ? '\n' : '"';
    CHECK(sdc_glyph_extract(s, n, &out, &on, &err) == SDC_OK);
    CHECK(out == NULL);
    double dt = sdc_now() - t0;
    /* Linear is well under a second (a few under valgrind); quadratic would
     * be minutes. */
    CHECK_MSG(dt < 20.0, "took %.2f s", dt);
    free(s);
}

static void test_empty_and_null(void)
{
    char *out = (char *)1;
    size_t on = 7;
    sdc_error_t err = {0};
    CHECK(sdc_glyph_extract(NULL, 0, &out, &on, &err) == SDC_OK);
    CHECK(out == NULL && on == 0);
    CHECK(check_one("nul only", "\0\0\0", 3, NULL, 0));
    CHECK(check_one("quoted nul", "'\0'", 3, "Text \"\0\". ", 10));
}

int main(void)
{
    RUN(test_python_glyph_cases);
    RUN(test_python_prompt_cases);
    RUN(test_random_vs_naive);
    RUN(test_large_inputs_linear);
    RUN(test_empty_and_null);
    TEST_EXIT();
}
