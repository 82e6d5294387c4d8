/*
 * cli.c: strict numeric parsing for command-line flags (cli.h).
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int sdc_cli_parse_long(const char *prog, const char *flag, const char *s, long lo, long hi,
                       long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "%s: %s: '%s' is not an integer in %ld..%ld\n", prog, flag, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int sdc_cli_parse_u64(const char *prog, const char *flag, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (*s == '-' || *s == '\0') goto bad;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end != '\0') goto bad;
    *out = v;
    return 0;
bad:
    fprintf(stderr, "%s: %s: '%s' is not an integer in 0..2^64-1\n", prog, flag, s);
    return -1;
}

int sdc_cli_parse_double(const char *prog, const char *flag, const char *s, double lo, double hi,
                         double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "%s: %s: '%s' is not a number in %g..%g\n", prog, flag, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}
