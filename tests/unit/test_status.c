/* test_status.c: status names and the error record (set, wrap, clear). */
#include "common/status.h"

#include "test.h"

static void test_status_str(void)
{
    CHECK(strcmp(sdc_status_str(SDC_OK), "ok") == 0);
    CHECK(strcmp(sdc_status_str(SDC_ERR_FORMAT), "format error") == 0);
    CHECK(strcmp(sdc_status_str(SDC_ERR_NOT_FOUND), "not found") == 0);
    CHECK(strcmp(sdc_status_str(SDC_STATUS_COUNT), "unknown status") == 0);
    CHECK(strcmp(sdc_status_str((sdc_status_t)-1), "unknown status") == 0);
    /* Every code has its own non-empty name. */
    for (int i = 0; i < SDC_STATUS_COUNT; i++) {
        CHECK(sdc_status_str((sdc_status_t)i)[0] != '\0');
        for (int j = 0; j < i; j++)
            CHECK(strcmp(sdc_status_str((sdc_status_t)i), sdc_status_str((sdc_status_t)j)) != 0);
    }
}

static void test_error_set(void)
{
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_error_set(&err, SDC_ERR_SHAPE, "%s has %d dims", "x", 3), SDC_ERR_SHAPE);
    CHECK_EQ_INT(err.code, SDC_ERR_SHAPE);
    CHECK(strcmp(err.msg, "x has 3 dims") == 0);
    /* A NULL record still returns the code. */
    CHECK_EQ_INT(sdc_error_set(NULL, SDC_ERR_IO, "ignored"), SDC_ERR_IO);
    /* Long messages are truncated, never overflowed. */
    char big[2 * SDC_ERROR_MSG_MAX];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    sdc_error_set(&err, SDC_ERR_RANGE, "%s", big);
    CHECK_EQ_INT(strlen(err.msg), SDC_ERROR_MSG_MAX - 1);
}

static void test_error_wrap(void)
{
    sdc_error_t err = {0};
    sdc_error_set(&err, SDC_ERR_NOT_FOUND, "tensor 'w' not found");
    CHECK_EQ_INT(sdc_error_wrap(&err, "loading %s", "vae"), SDC_ERR_NOT_FOUND);
    CHECK(strcmp(err.msg, "loading vae: tensor 'w' not found") == 0);
    CHECK_EQ_INT(sdc_error_wrap(&err, "stage %d", 2), SDC_ERR_NOT_FOUND);
    CHECK(strcmp(err.msg, "stage 2: loading vae: tensor 'w' not found") == 0);
    /* Wrapping an empty message gives just the prefix. */
    sdc_error_t e2 = {0};
    e2.code = SDC_ERR_IO;
    CHECK_EQ_INT(sdc_error_wrap(&e2, "ctx"), SDC_ERR_IO);
    CHECK(strcmp(e2.msg, "ctx") == 0);
    CHECK_EQ_INT(sdc_error_wrap(NULL, "ctx"), SDC_ERR_INTERNAL);
    /* A full message stays terminated after wrapping. */
    char big[SDC_ERROR_MSG_MAX + 10];
    memset(big, 'b', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    sdc_error_set(&err, SDC_ERR_FORMAT, "%s", big);
    sdc_error_wrap(&err, "prefix");
    CHECK(strncmp(err.msg, "prefix: bbb", 11) == 0);
    CHECK_EQ_INT(strlen(err.msg), SDC_ERROR_MSG_MAX - 1);
}

static void test_error_clear(void)
{
    sdc_error_t err;
    sdc_error_set(&err, SDC_ERR_IO, "boom");
    sdc_error_clear(&err);
    CHECK_EQ_INT(err.code, SDC_OK);
    CHECK(err.msg[0] == '\0');
    sdc_error_clear(NULL);
}

int main(void)
{
    RUN(test_status_str);
    RUN(test_error_set);
    RUN(test_error_wrap);
    RUN(test_error_clear);
    TEST_EXIT();
}
