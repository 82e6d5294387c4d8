/* test_log.c: level parsing and filtering, and the line format on stderr. */
#include "common/log.h"

#include <unistd.h>

#include "test.h"

/* Runs emit() with stderr redirected to a temp file; returns what it wrote
 * (static buffer, NUL-terminated). */
static char captured[4096];

static const char *capture(void (*emit)(void))
{
    char path[] = "/tmp/sdc_test_log_XXXXXX";
    int fd = mkstemp(path);
    captured[0] = '\0';
    if (fd < 0)
        return captured;
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    emit();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, captured, sizeof(captured) - 1);
    captured[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    return captured;
}

static void emit_all_levels(void)
{
    SDC_DEBUG("debug %d", 1);
    SDC_INFO("info %d", 2);
    SDC_WARN("warn %d", 3);
    SDC_ERROR("error %d", 4);
}

static void test_parse_level(void)
{
    CHECK_EQ_INT(sdc_log_parse_level("debug"), SDC_LOG_DEBUG);
    CHECK_EQ_INT(sdc_log_parse_level("info"), SDC_LOG_INFO);
    CHECK_EQ_INT(sdc_log_parse_level("WARN"), SDC_LOG_WARN);
    CHECK_EQ_INT(sdc_log_parse_level("error"), SDC_LOG_ERROR);
    CHECK_EQ_INT(sdc_log_parse_level("silent"), SDC_LOG_SILENT);
    CHECK_EQ_INT(sdc_log_parse_level("verbose"), -1);
    CHECK_EQ_INT(sdc_log_parse_level(""), -1);
    CHECK_EQ_INT(sdc_log_parse_level(NULL), -1);
}

static void test_filtering(void)
{
    sdc_log_set_level(SDC_LOG_WARN);
    CHECK_EQ_INT(sdc_log_get_level(), SDC_LOG_WARN);
    const char *out = capture(emit_all_levels);
    CHECK(!strstr(out, "debug 1"));
    CHECK(!strstr(out, "info 2"));
    CHECK(strstr(out, "WARN  warn 3\n") != NULL);
    CHECK(strstr(out, "ERROR error 4\n") != NULL);

    sdc_log_set_level(SDC_LOG_DEBUG);
    out = capture(emit_all_levels);
    CHECK(strstr(out, "DEBUG debug 1\n") != NULL);
    CHECK(strstr(out, "INFO  info 2\n") != NULL);

    sdc_log_set_level(SDC_LOG_SILENT);
    out = capture(emit_all_levels);
    CHECK_EQ_INT(strlen(out), 0);
    sdc_log_set_level(SDC_LOG_INFO);
}

static void emit_one(void)
{
    SDC_INFO("hello %s", "world");
}

static void test_format(void)
{
    sdc_log_set_level(SDC_LOG_INFO);
    const char *out = capture(emit_one);
    /* "YYYY-MM-DD HH:MM:SS.mmm INFO  hello world\n" */
    CHECK_EQ_INT(strlen(out), 23 + 1 + 5 + 1 + 11 + 1);
    CHECK(out[4] == '-' && out[7] == '-' && out[10] == ' ' && out[13] == ':' &&
          out[16] == ':' && out[19] == '.');
    for (int i = 0; i < 23; i++)
        if (i != 4 && i != 7 && i != 10 && i != 13 && i != 16 && i != 19)
            CHECK(out[i] >= '0' && out[i] <= '9');
    CHECK(strcmp(out + 24, "INFO  hello world\n") == 0);
}

static void test_init_from_env(void)
{
    sdc_log_set_level(SDC_LOG_INFO);
    setenv("SDC_LOG_LEVEL", "error", 1);
    sdc_log_init_from_env();
    CHECK_EQ_INT(sdc_log_get_level(), SDC_LOG_ERROR);
    /* An invalid value keeps the level (and warns, filtered here). */
    setenv("SDC_LOG_LEVEL", "loud", 1);
    sdc_log_init_from_env();
    CHECK_EQ_INT(sdc_log_get_level(), SDC_LOG_ERROR);
    unsetenv("SDC_LOG_LEVEL");
    sdc_log_init_from_env();
    CHECK_EQ_INT(sdc_log_get_level(), SDC_LOG_ERROR);
    sdc_log_set_level((sdc_log_level_t)99);
    CHECK_EQ_INT(sdc_log_get_level(), SDC_LOG_SILENT);
    sdc_log_set_level(SDC_LOG_INFO);
}

int main(void)
{
    RUN(test_parse_level);
    RUN(test_filtering);
    RUN(test_format);
    RUN(test_init_from_env);
    TEST_EXIT();
}
