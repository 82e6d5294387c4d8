/*
 * test_utf8: UTF-8 decoding and the U+FFFD repair rule (maximal subparts),
 * with expectations from Python's bytes.decode("utf-8", errors="replace").
 */
#include <string.h>

#include "common/utf8.h"
#include "test.h"

static void test_next(void)
{
    static const struct {
        const char *s;
        size_t len;
        size_t want_n;
        int32_t want_cp;
    } cases[] = {
        {"A", 1, 1, 'A'},
        {"\0", 1, 1, 0},
        {"\xc3\xa9", 2, 2, 0xE9},
        {"\xe4\xb8\xad", 3, 3, 0x4E2D},
        {"\xf0\x9f\x98\x80", 4, 4, 0x1F600},
        {"\xf4\x8f\xbf\xbf", 4, 4, 0x10FFFF},
        {"\x80", 1, 1, -1},             /* lone continuation */
        {"\xc0\x80", 2, 1, -1},         /* overlong lead */
        {"\xc1\xbf", 2, 1, -1},
        {"\xe0\x80\x80", 3, 1, -1},     /* overlong: E0 needs A0..BF */
        {"\xed\xa0\x80", 3, 1, -1},     /* surrogate: ED needs 80..9F */
        {"\xf0\x8f\xbf\xbf", 4, 1, -1}, /* overlong: F0 needs 90..BF */
        {"\xf4\x90\x80\x80", 4, 1, -1}, /* above U+10FFFF */
        {"\xf5\x80\x80\x80", 4, 1, -1},
        {"\xff", 1, 1, -1},
        {"\xe4\xb8", 2, 2, -1},         /* truncated: one maximal subpart */
        {"\xf0\x9f\x98", 3, 3, -1},
        {"\xe4\xb8" "A", 3, 2, -1},
        {"\xe4" "A", 2, 1, -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int32_t cp = 123;
        size_t n = sdc_utf8_next((const unsigned char *)cases[i].s, cases[i].len, &cp);
        CHECK_MSG(n == cases[i].want_n && cp == cases[i].want_cp,
                  "case %zu: got (%zu, %d), want (%zu, %d)", i, n, cp, cases[i].want_n,
                  cases[i].want_cp);
    }
}

static void test_put(void)
{
    char b[4];
    CHECK(sdc_utf8_put(0x24, b) == 1 && b[0] == '$');
    CHECK(sdc_utf8_put(0xE9, b) == 2 && memcmp(b, "\xc3\xa9", 2) == 0);
    CHECK(sdc_utf8_put(0xFFFD, b) == 3 && memcmp(b, "\xef\xbf\xbd", 3) == 0);
    CHECK(sdc_utf8_put(0x1F600, b) == 4 && memcmp(b, "\xf0\x9f\x98\x80", 4) == 0);
}

static void check_repair_n(const char *in, size_t len, const char *want, size_t want_len)
{
    char *out = NULL;
    size_t n = 0;
    sdc_error_t err = {0};
    CHECK(sdc_utf8_repair(in, len, &out, &n, &err) == SDC_OK);
    CHECK_MSG(out && n == want_len && memcmp(out, want, n) == 0 && out[n] == '\0',
              "repair of %zu bytes gave '%s'", len, out ? out : "(null)");
    free(out);
}

static void check_repair(const char *in, size_t len, const char *want)
{
    check_repair_n(in, len, want, strlen(want));
}

#define R "\xef\xbf\xbd"

static void test_repair(void)
{
    /* Python: b"...".decode("utf-8", "replace") */
    check_repair("abc", 3, "abc");
    check_repair("", 0, "");
    check_repair("\xe0\x80\x80", 3, R R R);
    check_repair("\xed\xa0\x80", 3, R R R);
    check_repair("\xf0\x9f\x98", 3, R);
    check_repair("\xf0\x9f\x98" "A", 4, R "A");
    check_repair("a\xff" "b", 3, "a" R "b");
    check_repair("\xe1\x80\xe2\xf0\x91\x92\xf1\xbf\x41", 9, R R R R "A");
    check_repair("\xf8\x88\x80\x80\x80", 5, R R R R R);
    check_repair_n("x\0\xc3", 3, "x\0" R, 5);
    CHECK_EQ_INT(sdc_utf8_valid_len("ab\xc3\xa9\xff", 5), 4);
    CHECK_EQ_INT(sdc_utf8_valid_len("0123456789abcdef\x80", 17), 16);
    CHECK_EQ_INT(sdc_utf8_valid_len("\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad", 9), 9);
}

int main(void)
{
    RUN(test_next);
    RUN(test_put);
    RUN(test_repair);
    TEST_EXIT();
}
