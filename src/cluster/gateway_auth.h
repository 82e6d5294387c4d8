/*
 * gateway_auth.h: who may call sdc-gateway and how often. Bearer tokens
 * come from a file (never from argv: a command line is visible to every
 * user of the host), are compared in constant time, and each token has a
 * token bucket (rate per second, burst) that answers "retry after N
 * seconds" when empty.
 *
 * Thread-safe: one sdc_gw_auth_t is shared by every connection thread;
 * reloading builds a new one and the caller swaps it in.
 */
#ifndef SDC_CLUSTER_GATEWAY_AUTH_H
#define SDC_CLUSTER_GATEWAY_AUTH_H

#include <stddef.h>

#include "common/status.h"

#define SDC_GW_TOKEN_MIN 16
#define SDC_GW_TOKEN_MAX 512
#define SDC_GW_TOKENS_MAX 10000

typedef struct sdc_gw_auth sdc_gw_auth_t;

typedef struct {
    double rate;  /* requests per second per token; 0: no limit */
    double burst; /* bucket size (>= 1 when rate > 0) */
} sdc_gw_rate_t;

/* Reads a token file: one token per line (SDC_GW_TOKEN_MIN..MAX printable
 * ASCII characters, no spaces), blank lines and lines starting with '#'
 * skipped. A file others may read, an empty file, or a bad line (reported by
 * number, never by content) is an error. */
sdc_status_t sdc_gw_auth_load(const char *path, const sdc_gw_rate_t *rate, sdc_gw_auth_t **out,
                              sdc_error_t *err);
/* No tokens: every request is let in and shares one bucket (--no-auth). */
sdc_status_t sdc_gw_auth_open(const sdc_gw_rate_t *rate, sdc_gw_auth_t **out, sdc_error_t *err);
void sdc_gw_auth_free(sdc_gw_auth_t *a);

size_t sdc_gw_auth_count(const sdc_gw_auth_t *a);

/* The index of the token an "Authorization" header value carries ("Bearer
 * <token>"), or -1 (header NULL, malformed or the token unknown). Every
 * configured token is compared in full, whatever matches, so the time taken
 * says nothing about which bytes were right. With no tokens configured
 * (sdc_gw_auth_open) the answer is always 0. */
long sdc_gw_auth_check(const sdc_gw_auth_t *a, const char *header);

/* Takes one request from token's bucket at time now (seconds): 1 when
 * allowed, else 0 with *retry_after_s the whole seconds until one is. */
int sdc_gw_rate_take(sdc_gw_auth_t *a, long token, double now, int *retry_after_s);

#endif
