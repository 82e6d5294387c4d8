/*
 * utf8.h: UTF-8 decoding with the replacement rule that Python's
 * bytes.decode("utf-8", errors="replace") and Rust's String::from_utf8_lossy
 * share: each maximal subpart of an ill-formed sequence becomes one U+FFFD
 * (Unicode 15, section 3.9, "substitution of maximal subparts").
 *
 * Not a Unicode library: properties and normalisation come from libutf8proc.
 */
#ifndef SDC_UTF8_H
#define SDC_UTF8_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define SDC_UTF8_REPLACEMENT 0xFFFD

/* Decodes the sequence at s[0..len) (len >= 1). Returns its length in bytes:
 * for a well-formed character 1..4 with *cp set; for an ill-formed one the
 * length of its maximal subpart (1..3) with *cp = -1. */
size_t sdc_utf8_next(const unsigned char *s, size_t len, int32_t *cp);

/* Length of the longest well-formed prefix of s (len when all of s is). */
size_t sdc_utf8_valid_len(const char *s, size_t len);

/* Writes cp (a scalar value) as UTF-8 into out; returns 1..4. */
size_t sdc_utf8_put(uint32_t cp, char out[4]);

/* A malloc'd, NUL-terminated copy of s with every maximal ill-formed subpart
 * replaced by U+FFFD; *out_len excludes the terminator. */
sdc_status_t sdc_utf8_repair(const char *s, size_t len, char **out, size_t *out_len,
                             sdc_error_t *err);

#endif
