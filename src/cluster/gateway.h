/*
 * gateway.h: sdc-gateway's HTTP server: the OpenAI-compatible image API and
 * the asynchronous job API over the cluster's Redis (docs/openapi.yaml is
 * the contract). Stateless: every answer comes from Redis (jobs.h,
 * metrics.h), so any number of gateways can serve one cluster.
 *
 * One thread per connection (libmicrohttpd), each borrowing a Redis
 * connection from a pool for the time of a request; long waits (a blocking
 * generation, an event stream) hold their thread and connection and are
 * bounded.
 *
 * Not the request bodies (gateway_request.h) nor the tokens and rate limits
 * (gateway_auth.h).
 */
#ifndef SDC_CLUSTER_GATEWAY_H
#define SDC_CLUSTER_GATEWAY_H

#include <stddef.h>

#include "cluster/gateway_auth.h"
#include "cluster/gateway_request.h"
#include "common/status.h"

typedef struct sdc_gateway sdc_gateway_t;

typedef struct {
    const char *listen;         /* IPv4 address to bind (default 127.0.0.1) */
    int port;                   /* 0: a free port (sdc_gateway_port says which) */
    const char *redis_url;      /* NULL: SDC_REDIS_DEFAULT_URL */
    const char *prefix;         /* NULL: "sdc:" */
    const char *redis_password_file;
    const char *tokens_path;    /* bearer tokens; NULL only with no_auth */
    int no_auth;
    int open_metrics;           /* /metrics without a token */
    sdc_gw_rate_t rate;
    size_t max_body;            /* request body bytes */
    int max_connections;
    int conn_timeout_s;         /* idle connections (and stalled requests) are closed */
    int wait_timeout_s;         /* POST /v1/images/generations waits this long at most */
    sdc_gw_limits_t lim;
} sdc_gw_opts_t;

/* 127.0.0.1:8080, 100 requests/s with bursts of 200 per token, 1 MiB
 * bodies, 1024 connections, 10 s idle timeout, 300 s generation wait,
 * sdc_gw_limits_default. */
void sdc_gw_opts_default(sdc_gw_opts_t *o);

/* Loads the tokens, checks that Redis answers, and starts serving. */
sdc_status_t sdc_gateway_start(const sdc_gw_opts_t *o, sdc_gateway_t **out, sdc_error_t *err);
/* The bound port (useful with port 0). */
int sdc_gateway_port(const sdc_gateway_t *g);
/* Reads the token file again and swaps it in; on error the old tokens stay. */
sdc_status_t sdc_gateway_reload(sdc_gateway_t *g, sdc_error_t *err);
/* Stops accepting, ends waits and streams, joins the connection threads. */
void sdc_gateway_stop(sdc_gateway_t *g);

#endif
