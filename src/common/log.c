/*
 * log.c: leveled, timestamped logging to stderr. The level is the one piece
 * of process-wide state in the library: main() sets it once from flags or
 * SDC_LOG_LEVEL, and everything else only reads it.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>

static sdc_log_level_t log_level = SDC_LOG_INFO;

/* Indexed by sdc_log_level_t; padded so message columns line up. */
static const struct {
    const char *name;
    const char *tag;
} log_levels[] = {
    [SDC_LOG_DEBUG] = {"debug", "DEBUG"},
    [SDC_LOG_INFO] = {"info", "INFO "},
    [SDC_LOG_WARN] = {"warn", "WARN "},
    [SDC_LOG_ERROR] = {"error", "ERROR"},
    [SDC_LOG_SILENT] = {"silent", "     "},
};
_Static_assert(sizeof(log_levels) / sizeof(log_levels[0]) == SDC_LOG_SILENT + 1,
               "log_levels must name every level");

void sdc_log_set_level(sdc_log_level_t level)
{
    if ((unsigned)level > SDC_LOG_SILENT)
        level = SDC_LOG_SILENT;
    log_level = level;
}

sdc_log_level_t sdc_log_get_level(void)
{
    return log_level;
}

int sdc_log_parse_level(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i <= SDC_LOG_SILENT; i++)
        if (strcasecmp(name, log_levels[i].name) == 0)
            return i;
    return -1;
}

void sdc_log_init_from_env(void)
{
    const char *v = getenv("SDC_LOG_LEVEL");
    if (!v || !*v)
        return;
    int level = sdc_log_parse_level(v);
    if (level < 0) {
        sdc_log(SDC_LOG_WARN, "SDC_LOG_LEVEL=%s is not one of debug, info, warn, error, silent; "
                              "keeping the current level", v);
        return;
    }
    sdc_log_set_level((sdc_log_level_t)level);
}

void sdc_log(sdc_log_level_t level, const char *fmt, ...)
{
    if (level < log_level || level >= SDC_LOG_SILENT)
        return;

    struct timespec ts;
    struct tm tm;
    char stamp[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);

    /* One locked write per line, so lines from worker threads never
     * interleave mid-line. */
    va_list ap;
    va_start(ap, fmt);
    flockfile(stderr);
    fprintf(stderr, "%s.%03ld %s ", stamp, ts.tv_nsec / 1000000L, log_levels[level].tag);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    funlockfile(stderr);
    va_end(ap);
}
