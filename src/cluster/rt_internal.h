/*
 * rt_internal.h: the runtime as the roles see it (runtime.h is the tools'
 * view): the process context, the role operation table, sending and
 * receiving, peers, the leader, and small shared pieces (node ids, job
 * memory, tensor message building).
 *
 * Threading: one thread per process. UCX callbacks only decode and queue;
 * roles run from the main loop (on_message, work, tick), and a long
 * computation calls sdc_rt_service between samples so that transfers and
 * heartbeats go on.
 */
#ifndef SDC_RT_INTERNAL_H
#define SDC_RT_INTERNAL_H

#include <stdint.h>

#include "backend/backend.h"
#include "cluster/metrics.h"
#include "cluster/mpiboot.h"
#include "cluster/rt_jobs.h"
#include "cluster/runtime.h"
#include "cluster/ucx.h"
#include "cluster/wire.h"
#include "model/dit.h"
#include "model/vae.h"

/* Text rows (LLM + ByT5) a sample may carry; the reference pads to 1128. */
#define SDC_RT_MAX_TEXT_TOKENS 4096
/* sdc_pipeline_check_params' bound on steps. */
#define SDC_RT_MAX_STEPS 1000
/* Alignment of tensors in a payload. */
#define SDC_RT_ALIGN 64
/* Finished jobs remembered per process, to tell late messages from new jobs. */
#define SDC_RT_RETIRED 4096

typedef struct sdc_rt sdc_rt_t;
typedef struct sdc_rt_heart sdc_rt_heart_t;

/* A received message: header decoded and validated, payload landed (in a
 * buffer from sdc_ucx_buf_alloc). */
typedef struct sdc_rt_msg {
    sdc_wire_msg_t w;
    uint8_t *payload;
    size_t len;
    sdc_ucx_req_t req;
    struct sdc_rt_msg *next;
} sdc_rt_msg_t;

void sdc_rt_msg_free(sdc_rt_msg_t *m);
/* Frees a whole queue of messages and leaves *head NULL. */
void sdc_rt_msg_list_free(sdc_rt_msg_t **head);

/* Messages waiting for a role's work, in arrival order. */
typedef struct {
    sdc_rt_msg_t *head, *tail;
    int n;
} sdc_rt_queue_t;

void sdc_rt_queue_push(sdc_rt_queue_t *q, sdc_rt_msg_t *m);
/* The oldest message, or NULL when the queue is empty. */
sdc_rt_msg_t *sdc_rt_queue_pop(sdc_rt_queue_t *q);
void sdc_rt_queue_free(sdc_rt_queue_t *q);

/* What a role implements; one static table per role. */
typedef struct {
    sdc_role_t role;
    sdc_status_t (*open)(sdc_rt_t *rt, void **state, sdc_error_t *err);
    void (*close)(sdc_rt_t *rt, void *state);
    /* Nodes this role sends to that must be registered before it serves. */
    int (*peers)(sdc_rt_t *rt, void *state, int *nodes, int cap);
    /* The job table behind wire validation (see sdc_wire_job_fn). */
    sdc_wire_job_state_t (*job_state)(void *state, const char *job_id, uint32_t attempt);
    /* Takes ownership of m. */
    void (*on_message)(sdc_rt_t *rt, void *state, sdc_rt_msg_t *m);
    /* One unit of work; 1 when something was done. */
    int (*work)(sdc_rt_t *rt, void *state);
    /* Timers, every loop iteration; NULL for a role without any. */
    void (*tick)(sdc_rt_t *rt, void *state, double now);
    /* 1 while the role holds work that a drain must finish. */
    int (*busy)(sdc_rt_t *rt, void *state);
    double (*load)(void *state);
    /* Optional: UCX declared the peer `node` failed (from the main loop). */
    void (*peer_failed)(sdc_rt_t *rt, void *state, int node);
} sdc_role_ops_t;

extern const sdc_role_ops_t sdc_role_coordinator;
extern const sdc_role_ops_t sdc_role_text_encoder;
extern const sdc_role_ops_t sdc_role_dit_stage;
extern const sdc_role_ops_t sdc_role_vae;
extern const sdc_role_ops_t sdc_role_refiner;

typedef struct {
    uint8_t *addr;
    size_t addr_len;
    sdc_ucx_ep_t *ep;
} sdc_rt_peer_t;

/* A job a message carries, reported lost when the message is. */
typedef struct {
    char id[SDC_JOB_ID_MAX + 1];
    uint32_t attempt;
} sdc_rt_jobref_t;

typedef struct rt_send {
    sdc_ucx_req_t req;
    void *payload;
    size_t len;
    int node;
    sdc_rt_jobref_t *jobs;
    int n_jobs;
    struct rt_send *next;
} sdc_rt_send_t;

struct sdc_rt {
    sdc_rt_opts_t o;
    sdc_cluster_t *cf;
    int self;
    const sdc_cf_node_t *me;
    char id[SDC_JOB_ID_MAX + 1];
    sdc_dit_config_t dc;
    sdc_vae_config_t vc;
    sdc_backend_t *be;   /* NULL for the coordinator */
    sdc_ucx_t *ucx;
    sdc_redis_t *redis;
    sdc_jobs_t q;
    sdc_mpi_t *mpi;      /* non-NULL after an MPI bootstrap, until exit */
    sdc_rt_peer_t *peers; /* cf->n_nodes */
    uint8_t *peer_down;   /* cf->n_nodes: failures not yet handed to the role */
    sdc_wire_limits_t lim;
    const sdc_role_ops_t *role;
    void *rs;
    sdc_rt_msg_t *in_head, *in_tail;
    sdc_rt_send_t *out;
    volatile sig_atomic_t *stop;
    int stopping;        /* a signal or Shutdown: drain and exit */
    int draining;
    double drain_deadline;
    int drain_quiet;     /* stopped by a signal with a leader around: see serve() */
    double idle_since;   /* draining: when the node last became idle, 0 while busy */
    double next_heartbeat;
    sdc_rt_heart_t *heart; /* the heartbeat thread, once registered */
    int leader;          /* cached leader node, -1 when unknown */
    double leader_checked;
    uint64_t dropped;    /* messages rejected */
    sdc_metrics_t metrics; /* published with the heartbeat (metrics.h) */
    double published_at, published_busy_s;
    double work_since;     /* > 0 while the role works: busy time not yet counted */
};

/* ---- identity --------------------------------------------------------------- */

/* "<role>-<index>", e.g. "dit-stage-3": the node id in Redis and on the wire. */
void sdc_rt_node_id(const sdc_cluster_t *cf, int node, char out[SDC_JOB_ID_MAX + 1]);
/* The node index named by id, or -1. */
int sdc_rt_node_index(const sdc_cluster_t *cf, const char *id);

/* ---- peers and sending ----------------------------------------------------- */

/* The endpoint to node, connecting (and, on the Redis path, looking the
 * node up) when needed. */
sdc_status_t sdc_rt_peer(sdc_rt_t *rt, int node, sdc_ucx_ep_t **ep, sdc_error_t *err);
/* Waits until every node in nodes can be reached (peer_timeout_ms). */
sdc_status_t sdc_rt_wait_peers(sdc_rt_t *rt, const int *nodes, int n, sdc_error_t *err);

/* Sends env (and payload: len bytes from sdc_ucx_buf_alloc, or NULL) to
 * node. The runtime owns payload from here and frees it once the send
 * completes, also on failure. */
sdc_status_t sdc_rt_send(sdc_rt_t *rt, int node, const Sdc__Envelope *env, void *payload,
                         size_t len, sdc_error_t *err);
/* The same for a message carrying jobs' data: should the send fail after
 * it was posted, each job is reported lost (sdc_rt_job_lost). jobs is
 * copied. */
sdc_status_t sdc_rt_send_jobs(sdc_rt_t *rt, int node, const Sdc__Envelope *env, void *payload,
                              size_t len, const sdc_rt_jobref_t *jobs, int n_jobs,
                              sdc_error_t *err);

/* The coordinator holding the lease (cached for a second), or -1. */
int sdc_rt_leader(sdc_rt_t *rt);
/* Best effort: env to the leader; logged when it cannot be sent. */
void sdc_rt_tell_leader(sdc_rt_t *rt, const Sdc__Envelope *env);

/* ---- heartbeat (rt_heart.c) ------------------------------------------------ */

/* A thread that registers n (copied; its address must outlive the thread)
 * every second with a Redis connection of its own, so that a node busy in
 * one long computation still looks alive. */
sdc_status_t sdc_rt_heart_start(sdc_rt_heart_t **out, const sdc_redis_opts_t *ro,
                                const sdc_node_t *n, int64_t ttl_ms, sdc_error_t *err);
/* What the next beats carry; a change of draining beats at once. */
void sdc_rt_heart_set(sdc_rt_heart_t *h, double load, int draining);
/* Stops and joins the thread: no registration is written after it. */
void sdc_rt_heart_stop(sdc_rt_heart_t *h);

/* Progress, finished sends and the role's load for the heartbeat: for
 * long computations. */
void sdc_rt_service(sdc_rt_t *rt);

/* ---- jobs ------------------------------------------------------------------- */

/* A job failed here for good: state failed in Redis (dead letter, ack) and
 * an Error to the leader so that it frees the job's slot. */
void sdc_rt_job_fail(sdc_rt_t *rt, const char *job_id, uint32_t attempt, sdc_status_t code,
                     const char *reason);
/* A job is done (its result is in Redis): JobDone to the leader. */
void sdc_rt_job_done(sdc_rt_t *rt, const char *job_id, uint32_t attempt);
/* A job's data was lost in transit (not the job's fault): an Error to the
 * leader, which requeues it. */
void sdc_rt_job_lost(sdc_rt_t *rt, const char *job_id, uint32_t attempt, const char *reason);

/* Jobs this process finished with, most recent SDC_RT_RETIRED. */
typedef struct {
    char id[SDC_RT_RETIRED][SDC_JOB_ID_MAX + 1];
    uint32_t attempt[SDC_RT_RETIRED];
    int next, n;
} sdc_rt_retired_t;

void sdc_rt_retire(sdc_rt_retired_t *r, const char *id, uint32_t attempt);
/* The attempt last retired for id, 0 when none. */
uint32_t sdc_rt_retired_attempt(const sdc_rt_retired_t *r, const char *id);
/* Wire job state for a role that learns jobs from messages: an attempt at or
 * below a retired one is stale; a job it holds (active_attempt > 0) is stale
 * below that attempt; anything else is current (the role checks, after
 * decoding, that an unknown job's message may introduce it). */
sdc_wire_job_state_t sdc_rt_learned_state(const sdc_rt_retired_t *r, uint32_t active_attempt,
                                          const char *id, uint32_t attempt);

/* ---- tensor messages ------------------------------------------------------ */

/* Builds a TensorHeader with room for a fixed number of samples and tensors
 * (strings are borrowed until the message is sent). */
typedef struct {
    Sdc__TensorHeader h;
    Sdc__Sample *samples;
    Sdc__Sample **sample_ptrs;
    Sdc__TensorDesc *descs;
    Sdc__TensorDesc **desc_ptrs;
    int64_t (*shapes)[3];
    size_t cap_samples, cap_descs;
} sdc_rt_tb_t;

sdc_status_t sdc_rt_tb_init(sdc_rt_tb_t *tb, size_t max_samples, size_t max_tensors,
                            sdc_error_t *err);
void sdc_rt_tb_free(sdc_rt_tb_t *tb);
/* A new sample, initialised; NULL when full. */
Sdc__Sample *sdc_rt_tb_sample(sdc_rt_tb_t *tb);
/* A new tensor of sample `sample`; returns its index, -1 when full. */
int sdc_rt_tb_tensor(sdc_rt_tb_t *tb, uint32_t sample, const char *name, Sdc__DType dtype,
                     int ndim, const int64_t *shape);
/* Lays the tensors out and allocates the zeroed payload (sdc_ucx_buf_alloc). */
sdc_status_t sdc_rt_tb_layout(sdc_rt_tb_t *tb, uint8_t **payload, sdc_error_t *err);
/* Checksums the payload and sends it (ownership passes as in sdc_rt_send). */
sdc_status_t sdc_rt_tb_send(sdc_rt_t *rt, sdc_rt_tb_t *tb, int node, uint8_t *payload,
                            sdc_error_t *err);

/* Payload bytes of a received tensor. */
static inline const void *sdc_rt_tensor_data(const sdc_rt_msg_t *m, const Sdc__TensorDesc *t)
{
    return m->payload + t->offset;
}
/* A received mask (BOOL, U8, I32, I64 of 0/1) as bytes. */
sdc_status_t sdc_rt_mask_copy(const sdc_rt_msg_t *m, const Sdc__TensorDesc *t, uint8_t *out,
                              sdc_error_t *err);

/* ---- logging --------------------------------------------------------------- */

/* A message that validated but makes no sense here: logged and counted. */
void sdc_rt_drop(sdc_rt_t *rt, const sdc_rt_msg_t *m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
