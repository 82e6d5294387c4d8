/*
 * metrics.h: the counters a cluster process keeps about its own work, and
 * their publication in Redis for a stateless reader (sdc-gateway's
 * /metrics). Each node writes metrics:<id>, a hash with the same TTL as its
 * registration, once per heartbeat: no Redis traffic per step or per
 * message. A reader lists the live nodes and reads their hashes.
 *
 * Not a metrics library: fixed fields, two fixed histograms, plain
 * counters owned by one thread (the runtime is single-threaded).
 */
#ifndef SDC_CLUSTER_METRICS_H
#define SDC_CLUSTER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "cluster/redis.h"
#include "common/status.h"

#define SDC_METRICS_BUCKETS 14 /* finite upper bounds; one more bucket for +Inf */

typedef enum { SDC_HIST_JOB = 0, SDC_HIST_STEP, SDC_HIST_COUNT } sdc_hist_kind_t;

/* Counts per bucket (not cumulative: bucket i holds bounds[i-1] < x <= bounds[i]). */
typedef struct {
    uint64_t bucket[SDC_METRICS_BUCKETS + 1];
    uint64_t count;
    double sum;
} sdc_hist_t;

typedef struct {
    uint64_t bytes_sent, bytes_received;  /* UCX payload + header bytes */
    uint64_t messages_dropped;
    uint64_t jobs_completed;              /* coordinator: jobs seen done */
    uint64_t jobs_failed;                 /* failures this node recorded */
    uint64_t jobs_requeued;               /* coordinator: requeues applied */
    int64_t jobs_tracked;                 /* coordinator: jobs it watches now */
    double busy_s;                        /* time spent working (role work) */
    double busy_ratio;                    /* busy share of the last publication interval */
    sdc_hist_t hist[SDC_HIST_COUNT];      /* job: submit -> done; step: one ring lap */
} sdc_metrics_t;

/* The finite bucket bounds of a histogram kind, in seconds (ascending). */
const double *sdc_hist_bounds(sdc_hist_kind_t kind);
/* "job_latency_seconds", "step_latency_seconds". */
const char *sdc_hist_name(sdc_hist_kind_t kind);
void sdc_hist_observe(sdc_hist_t *h, sdc_hist_kind_t kind, double seconds);

/* Where the numbers come from, published with them. */
typedef struct {
    const char *node_id;
    const char *role;
    int pipeline, stage, stages; /* -1: none */
} sdc_metrics_source_t;

/* HSET metrics:<id> ... + PEXPIRE in one script (one round trip). */
sdc_status_t sdc_metrics_publish(sdc_redis_t *r, const sdc_metrics_source_t *src,
                                 const sdc_metrics_t *m, int64_t ttl_ms, sdc_error_t *err);

/* One node's published metrics as a reader sees them. */
typedef struct {
    char node_id[65];
    char role[32];
    int pipeline, stage, stages;
    sdc_metrics_t m;
} sdc_node_metrics_t;

/* Reads metrics:<id>; *found = 0 when the node has published none (or it
 * expired). A malformed hash is SDC_ERR_FORMAT naming the field. */
sdc_status_t sdc_metrics_read(sdc_redis_t *r, const char *node_id, sdc_node_metrics_t *out,
                              int *found, sdc_error_t *err);

#endif
