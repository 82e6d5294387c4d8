/*
 * gateway_metrics.h: what sdc-gateway's /ready and /metrics say, read from
 * Redis alone: the node registry, the leader lease, the job stream and the
 * counters each node publishes (metrics.h).
 */
#ifndef SDC_CLUSTER_GATEWAY_METRICS_H
#define SDC_CLUSTER_GATEWAY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "cluster/jobs.h"
#include "common/status.h"

struct cJSON;

/* Ready: a coordinator holds the lease, a text encoder and a VAE node are
 * registered, and some pipeline has a live node for each of its stages.
 * *report (cJSON object, caller frees) says what was found and, when not
 * ready, why. */
sdc_status_t sdc_gw_ready(sdc_jobs_t *q, int *ready, struct cJSON **report, sdc_error_t *err);

/* The Prometheus text exposition (version 0.0.4) of the queue, the nodes'
 * published counters and answered[1..5], the gateway's responses by status
 * class. *text is malloc'd. */
sdc_status_t sdc_gw_metrics_text(sdc_jobs_t *q, const uint64_t answered[6], char **text,
                                 size_t *len, sdc_error_t *err);

#endif
