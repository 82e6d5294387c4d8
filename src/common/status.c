/*
 * status.c: names for status codes and the error record that carries a
 * message from where a failure is detected to whoever reports it. Nothing
 * here prints; callers decide.
 */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Indexed by sdc_status_t; the static assert below keeps the two in step. */
static const char *const status_names[] = {
    [SDC_OK] = "ok",
    [SDC_ERR_NOMEM] = "out of memory",
    [SDC_ERR_IO] = "I/O error",
    [SDC_ERR_FORMAT] = "format error",
    [SDC_ERR_INVALID_ARG] = "invalid argument",
    [SDC_ERR_UNSUPPORTED] = "unsupported",
    [SDC_ERR_NOT_FOUND] = "not found",
    [SDC_ERR_SHAPE] = "shape mismatch",
    [SDC_ERR_RANGE] = "out of range",
    [SDC_ERR_INTERNAL] = "internal error",
};
_Static_assert(sizeof(status_names) / sizeof(status_names[0]) == SDC_STATUS_COUNT,
               "status_names must name every sdc_status_t");

const char *sdc_status_str(sdc_status_t code)
{
    if ((unsigned)code >= SDC_STATUS_COUNT)
        return "unknown status";
    return status_names[code];
}

sdc_status_t sdc_error_set(sdc_error_t *err, sdc_status_t code, const char *fmt, ...)
{
    if (!err)
        return code;
    va_list ap;
    va_start(ap, fmt);
    /* Truncation is acceptable: the message is for humans and the code
     * carries the meaning. */
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    err->code = code;
    return code;
}

/* Appends s at pos, truncating to the buffer; returns the new end. */
static size_t msg_append(char *buf, size_t pos, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (n > cap - 1 - pos)
        n = cap - 1 - pos;
    memcpy(buf + pos, s, n);
    buf[pos + n] = '\0';
    return pos + n;
}

/* With no record there is no code to pass on; INTERNAL marks that the caller
 * dropped it, which only a caller that ignores errors can do. */
sdc_status_t sdc_error_wrap(sdc_error_t *err, const char *fmt, ...)
{
    if (!err)
        return SDC_ERR_INTERNAL;
    char old[SDC_ERROR_MSG_MAX];
    memcpy(old, err->msg, sizeof(old));
    old[sizeof(old) - 1] = '\0';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    if (old[0]) {
        size_t pos = strlen(err->msg);
        pos = msg_append(err->msg, pos, sizeof(err->msg), ": ");
        msg_append(err->msg, pos, sizeof(err->msg), old);
    }
    return err->code;
}

void sdc_error_clear(sdc_error_t *err)
{
    if (!err)
        return;
    err->code = SDC_OK;
    err->msg[0] = '\0';
}
