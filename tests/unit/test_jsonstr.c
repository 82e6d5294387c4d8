/*
 * test_jsonstr: JSON string lines (the tokenizer corpus and
 * `sdc-tokenize --jsonl` format): escapes, surrogate pairs, embedded NULs,
 * every error with its column, and writing back.
 */
#include <stdio.h>
#include <string.h>

#include "common/jsonstr.h"
#include "test.h"

static void check_decode(const char *line, const char *want, size_t want_len)
{
    char *out = NULL;
    size_t n = 0;
    sdc_error_t err = {0};
    sdc_status_t st = sdc_jsonstr_decode(line, strlen(line), &out, &n, &err);
    CHECK_MSG(st == SDC_OK && n == want_len && memcmp(out, want, n) == 0 && out[n] == '\0',
              "decode of %s: %s", line, st == SDC_OK ? "wrong bytes" : err.msg);
    free(out);
}

static void check_error(const char *line, const char *msg_part)
{
    char *out = (char *)1;
    size_t n = 7;
    sdc_error_t err = {0};
    CHECK(sdc_jsonstr_decode(line, strlen(line), &out, &n, &err) == SDC_ERR_FORMAT);
    CHECK(out == NULL && n == 0);
    CHECK_MSG(strstr(err.msg, msg_part), "%s: message '%s' lacks '%s'", line, err.msg, msg_part);
}

static void test_decode(void)
{
    check_decode("\"hello\"", "hello", 5);
    check_decode("  \"\"  \r", "", 0);
    check_decode("\"a\\\"b\\\\c\\/d\"", "a\"b\\c/d", 7);
    check_decode("\"\\b\\f\\n\\r\\t\"", "\b\f\n\r\t", 5);
    check_decode("\"\\u00e9\\u4E2D\"", "\xc3\xa9\xe4\xb8\xad", 5);
    check_decode("\"\\ud83d\\ude00!\"", "\xf0\x9f\x98\x80!", 5);
    check_decode("\"a\\u0000b\"", "a\0b", 3);
    check_decode("\"\xe4\xb8\xad\xff\"", "\xe4\xb8\xad\xff", 4); /* raw bytes kept */
}

static void test_errors(void)
{
    check_error("hello", "column 1: expected a JSON string");
    check_error("", "column 1: expected a JSON string");
    check_error("\"abc", "column 5: unterminated string");
    check_error("\"a\tb\"", "column 3: raw control character 0x09");
    check_error("\"a\\qb\"", "column 3: invalid escape \\q");
    check_error("\"\\u12\"", "column 2: \\u needs four hex digits");
    check_error("\"\\ud800\"", "column 2: lone surrogate");
    check_error("\"\\ude00\"", "lone surrogate");
    check_error("\"\\ud800\\u0041\"", "lone surrogate");
    check_error("\"a\" x", "column 5: text after the closing quote");
    check_error("\"a\\", "unterminated escape");
}

static void test_write_round_trip(void)
{
    char in[160];
    size_t n = 0;
    for (int c = 0; c < 128; c++)
        in[n++] = (char)c;
    memcpy(in + n, "\xe4\xb8\xad\xf0\x9f\x98\x80", 7);
    n += 7;
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    CHECK(sdc_jsonstr_write(f, in, n) == 0);
    fclose(f);
    CHECK(memchr(buf, '\n', blen) == NULL); /* one line, whatever the text */
    char *out = NULL;
    size_t m = 0;
    sdc_error_t err = {0};
    CHECK(sdc_jsonstr_decode(buf, blen, &out, &m, &err) == SDC_OK);
    CHECK(m == n && memcmp(out, in, n) == 0);
    CHECK(strstr(buf, "\\u0000") && strstr(buf, "\\n") && strstr(buf, "\\\"") &&
          strstr(buf, "\xe4\xb8\xad"));
    free(out);
    free(buf);
}

int main(void)
{
    RUN(test_decode);
    RUN(test_errors);
    RUN(test_write_round_trip);
    TEST_EXIT();
}
