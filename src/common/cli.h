/*
 * cli.h: strict parsing of numeric command-line values. Each parser accepts
 * the whole string or nothing (no trailing junk, no overflow, in range) and
 * on failure prints "PROG: FLAG: 'VALUE' is not ..." to stderr and returns
 * -1, so every binary reports bad flags the same way.
 */
#ifndef SDC_CLI_H
#define SDC_CLI_H

#include <stdint.h>

int sdc_cli_parse_long(const char *prog, const char *flag, const char *s, long lo, long hi,
                       long *out);
/* 0..2^64-1; a leading '-' is refused (strtoull would wrap it). */
int sdc_cli_parse_u64(const char *prog, const char *flag, const char *s, uint64_t *out);
/* Finite numbers in [lo, hi]; nan and inf are refused. */
int sdc_cli_parse_double(const char *prog, const char *flag, const char *s, double lo, double hi,
                         double *out);

#endif
