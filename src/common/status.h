/*
 * status.h: the status codes every sdc function returns, and a small error
 * record that carries a human-readable message up to whoever reports it.
 *
 * Not a logging facility: functions fill an sdc_error_t and return; callers
 * decide whether to print, retry or pass it on.
 */
#ifndef SDC_STATUS_H
#define SDC_STATUS_H

#include <stddef.h>

typedef enum {
    SDC_OK = 0,
    SDC_ERR_NOMEM,       /* allocation failed */
    SDC_ERR_IO,          /* open/read/write/mmap failed */
    SDC_ERR_FORMAT,      /* malformed file or message */
    SDC_ERR_INVALID_ARG, /* bad argument or option value */
    SDC_ERR_UNSUPPORTED, /* valid but not supported (dtype, architecture) */
    SDC_ERR_NOT_FOUND,   /* missing file, tensor or key */
    SDC_ERR_SHAPE,       /* tensor shape does not match what the model needs */
    SDC_ERR_RANGE,       /* value outside its allowed range */
    SDC_ERR_INTERNAL,    /* a bug: an invariant did not hold */
    SDC_STATUS_COUNT
} sdc_status_t;

#define SDC_ERROR_MSG_MAX 512

typedef struct {
    sdc_status_t code;
    char msg[SDC_ERROR_MSG_MAX];
} sdc_error_t;

/* Short constant name of a status code ("format error", ...). */
const char *sdc_status_str(sdc_status_t code);

/* Records code and a printf-style message in err (which may be NULL) and
 * returns code, so callers can write `return sdc_error_set(err, ...)`. */
sdc_status_t sdc_error_set(sdc_error_t *err, sdc_status_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the existing message with more context ("loading vae: ...") and
 * returns err->code (SDC_ERR_INTERNAL when err is NULL: the code is lost). */
sdc_status_t sdc_error_wrap(sdc_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void sdc_error_clear(sdc_error_t *err);

#endif
