/*
 * test_base64.c: RFC 4648 vectors both ways, round trips of every length
 * up to 300, and every kind of malformed input refused with its offset.
 */
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "test.h"

static int decodes_to(const char *text, const char *want, size_t want_len)
{
    uint8_t *out;
    size_t n;
    sdc_error_t err = {0};
    if (sdc_base64_decode(text, strlen(text), 1 << 20, &out, &n, &err) != SDC_OK)
        return 0;
    int ok = n == want_len && memcmp(out, want, n) == 0;
    free(out);
    return ok;
}

static int refused(const char *text, size_t max_out, sdc_status_t want, const char *msg)
{
    uint8_t *out = (uint8_t *)"x";
    size_t n = 7;
    sdc_error_t err = {0};
    sdc_status_t st = sdc_base64_decode(text, strlen(text), max_out, &out, &n, &err);
    return st == want && out == NULL && n == 0 && strstr(err.msg, msg) != NULL;
}

static void test_vectors(void)
{
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *e = sdc_base64_encode((const uint8_t *)plain[i], strlen(plain[i]));
        CHECK_MSG(e && strcmp(e, coded[i]) == 0, "encode '%s'", plain[i]);
        free(e);
        CHECK_MSG(decodes_to(coded[i], plain[i], strlen(plain[i])), "decode '%s'", coded[i]);
    }
    CHECK(decodes_to("+/+/", "\xfb\xff\xbf", 3));
}

static void test_round_trip(void)
{
    uint8_t data[300];
    for (int i = 0; i < 300; i++)
        data[i] = (uint8_t)(i * 97 + 13);
    for (size_t len = 0; len <= 300; len++) {
        char *e = sdc_base64_encode(data, len);
        CHECK(e != NULL && strlen(e) == 4 * ((len + 2) / 3));
        CHECK_MSG(e && decodes_to(e, (const char *)data, len), "round trip of %zu bytes", len);
        free(e);
    }
}

static void test_malformed(void)
{
    CHECK(refused("Zg=", 100, SDC_ERR_FORMAT, "multiple of 4"));
    CHECK(refused("Zm9v\n", 100, SDC_ERR_FORMAT, "multiple of 4"));
    CHECK(refused("Zm 9", 100, SDC_ERR_FORMAT, "0x20 at offset 2"));
    CHECK(refused("Zm9v-_==", 100, SDC_ERR_FORMAT, "0x2d at offset 4"));
    CHECK(refused("Z===", 100, SDC_ERR_FORMAT, "offset 1"));
    CHECK(refused("=Zg=", 100, SDC_ERR_FORMAT, "offset 0"));
    CHECK(refused("Zg==Zg==", 100, SDC_ERR_FORMAT, "offset 2")); /* padding inside */
    CHECK(refused("Zh==", 100, SDC_ERR_FORMAT, "under the padding"));
    CHECK(refused("Zm9=", 100, SDC_ERR_FORMAT, "under the padding"));
    CHECK(refused("Zm9vYmFy", 5, SDC_ERR_RANGE, "6 bytes decoded, at most 5"));
}

int main(void)
{
    RUN(test_vectors);
    RUN(test_round_trip);
    RUN(test_malformed);
    TEST_EXIT();
}
