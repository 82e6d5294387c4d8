/*
 * jsonstr.h: one JSON string literal per line, the format of the tokenizer
 * corpus and of `sdc-tokenize --jsonl`. Unlike cJSON, the decoded text keeps
 * its length, so "\u0000" survives as a NUL byte.
 *
 * Not a JSON parser: only a lone string literal is accepted (config files go
 * through common/config.h).
 */
#ifndef SDC_JSONSTR_H
#define SDC_JSONSTR_H

#include <stddef.h>
#include <stdio.h>

#include "status.h"

/* Decodes the JSON string literal that makes up s[0..len) (whitespace around
 * it allowed). *out is malloc'd and NUL-terminated, *out_len excludes the
 * terminator and counts embedded NULs. Bytes outside escapes are copied as
 * they are. SDC_ERR_FORMAT, with the byte column, for anything else: no
 * opening or closing quote, a raw control character, a bad escape, a lone
 * surrogate, trailing characters. */
sdc_status_t sdc_jsonstr_decode(const char *s, size_t len, char **out, size_t *out_len,
                                sdc_error_t *err);

/* Writes s[0..len) as a JSON string literal: '"', '\\' and control
 * characters escaped, every other byte (UTF-8 included) as is. Returns 0, or
 * -1 when the stream reports an error. */
int sdc_jsonstr_write(FILE *f, const char *s, size_t len);

#endif
