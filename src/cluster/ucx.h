/*
 * ucx.h: the transport between sdc processes: one UCP context and one
 * worker per process (single-threaded), endpoints built from peers' worker
 * addresses (no listener: bootstrap exchanges the address blobs through
 * Redis or MPI_Allgather), and active messages of [header bytes] + payload.
 *
 * Payloads move without extra copies: a send reads straight from the
 * caller's buffer (UCX picks eager for small and rendezvous for large
 * payloads), and a receive lands rendezvous data straight in a buffer the
 * receiver chooses after seeing the header. Sends and receives complete
 * asynchronously; the caller drives UCX with sdc_ucx_progress (busy loop)
 * or sleeps on the worker's event fd (sdc_ucx_wait).
 *
 * A peer that dies or becomes unreachable never crashes or hangs the
 * process: its endpoint is marked failed, the on_peer_failed callback runs,
 * its requests finish with an error and later sends are refused.
 *
 * Not here: what the bytes mean (wire.h), who the peers are (bootstrap),
 * and thread safety: every call on one context comes from one thread.
 */
#ifndef SDC_UCX_H
#define SDC_UCX_H

#include <stddef.h>

#include "common/status.h"

typedef struct sdc_ucx sdc_ucx_t;         /* context + worker of this process */
typedef struct sdc_ucx_ep sdc_ucx_ep_t;   /* a connection to one peer */
typedef struct sdc_ucx_msg sdc_ucx_msg_t; /* an arrived message awaiting its payload */

/*
 * An asynchronous send or payload receive. The caller owns the struct (on
 * its stack, in a job record); the fields are private. It may be moved
 * while in flight. Every started request must be driven to completion
 * (sdc_ucx_req_test returning done, or sdc_ucx_req_wait returning anything
 * but a timeout) before sdc_ucx_destroy; a failed peer's requests complete
 * with an error on the next progress.
 */
typedef struct {
    void *ucp;        /* UCX request while in flight, NULL once finished */
    void *hdr;        /* sends: the header copy UCX reads until completion */
    sdc_ucx_t *ctx;
    int ucs_status;   /* UCX's verdict once finished */
    sdc_status_t status;
} sdc_ucx_req_t;

/*
 * Called from sdc_ucx_progress when a message arrives. header is valid only
 * during the call (decode it there). Exactly once per message, now or
 * later, the handler calls sdc_ucx_msg_recv (payload into its buffer) or
 * sdc_ucx_msg_drop. A deferred message holds the sender's rendezvous send
 * open: that is the backpressure for a receiver out of buffers.
 */
typedef void (*sdc_ucx_recv_fn)(void *arg, sdc_ucx_msg_t *msg, const void *header,
                                size_t header_len, size_t payload_len);

/* Called from progress when UCX declares ep's peer failed or gone (once per
 * ep): a killed process, a broken link, or a peer that closed its side.
 * Both callbacks run inside UCX's progress engine: they may send, receive
 * and drop, but must not call sdc_ucx_progress, sdc_ucx_wait,
 * sdc_ucx_req_wait, sdc_ucx_ep_close or sdc_ucx_destroy (note the failure;
 * close the endpoint later). */
typedef void (*sdc_ucx_peer_fn)(void *arg, sdc_ucx_ep_t *ep, sdc_status_t why);

typedef struct {
    const char *name;           /* this process in error messages (borrowed) */
    int wakeup;                 /* 1: enable sdc_ucx_efd / sdc_ucx_arm / sdc_ucx_wait */
    size_t rndv_thresh;         /* payloads of at least this many bytes are forced to
                                   rendezvous; 0: UCX's own choice */
    int close_timeout_ms;       /* bound on flushing an endpoint at close (0: 2000) */
    /* 1: endpoints without UCP_ERR_HANDLING_MODE_PEER. UCX 1.13 may then
     * use shared memory (sysv/posix + cma) between processes of one host,
     * which it cannot do with failure detection on, but a dead peer may
     * then hang or crash this process. For benchmarks, never for workers. */
    int no_failure_detection;
    sdc_ucx_recv_fn on_recv;    /* may be NULL: then every message is dropped */
    void *recv_arg;
    sdc_ucx_peer_fn on_peer_failed; /* may be NULL */
    void *peer_arg;
} sdc_ucx_params_t;

/* Creates the UCP context and worker (UCX_* environment variables apply). */
sdc_status_t sdc_ucx_create(const sdc_ucx_params_t *params, sdc_ucx_t **out, sdc_error_t *err);

/* Flushes (bounded by close_timeout_ms) and closes every endpoint, drops
 * deferred messages, destroys the worker and context. NULL is a no-op. */
void sdc_ucx_destroy(sdc_ucx_t *ctx);

/* This worker's address blob, owned by ctx; what bootstrap publishes. */
void sdc_ucx_address(const sdc_ucx_t *ctx, const void **addr, size_t *len);

/* The largest header sdc_ucx_send accepts (UCX's max_am_header). */
size_t sdc_ucx_max_header(const sdc_ucx_t *ctx);

/* Starts a connection to the peer whose address blob is addr; it completes
 * in the background. peer names it in errors (copied); user is returned by
 * sdc_ucx_ep_user. */
sdc_status_t sdc_ucx_connect(sdc_ucx_t *ctx, const void *addr, size_t len, const char *peer,
                             void *user, sdc_ucx_ep_t **out, sdc_error_t *err);

/* SDC_OK while the peer is healthy, else why it failed (SDC_ERR_IO ...). */
sdc_status_t sdc_ucx_ep_status(const sdc_ucx_ep_t *ep);
const char *sdc_ucx_ep_peer(const sdc_ucx_ep_t *ep);
void *sdc_ucx_ep_user(const sdc_ucx_ep_t *ep);

/* Flushes (bounded) and closes ep; ep is freed whatever the result. Its
 * requests must have finished. */
sdc_status_t sdc_ucx_ep_close(sdc_ucx_ep_t *ep, sdc_error_t *err);

/*
 * Posts an active message: hdr (copied; at most sdc_ucx_max_header bytes,
 * about 8 KB with Debian's UCX 1.13)
 * and len bytes of payload read in place from `payload`, which must stay
 * valid and unchanged until req finishes. Returns an error without posting
 * when ep's peer has failed. On SDC_OK the send may already be complete
 * (req finished) or still in flight.
 */
sdc_status_t sdc_ucx_send(sdc_ucx_ep_t *ep, const void *hdr, size_t hdr_len,
                          const void *payload, size_t len, sdc_ucx_req_t *req, sdc_error_t *err);

/* Payload bytes that came with msg. */
size_t sdc_ucx_msg_len(const sdc_ucx_msg_t *msg);

/*
 * Receives msg's payload into dest (cap bytes, at least sdc_ucx_msg_len).
 * On SDC_OK msg is consumed and req tracks the data landing in dest
 * (already finished for eager data). On SDC_ERR_RANGE (cap too small) msg
 * is left as it was; on other errors it is consumed.
 */
sdc_status_t sdc_ucx_msg_recv(sdc_ucx_msg_t *msg, void *dest, size_t cap, sdc_ucx_req_t *req,
                              sdc_error_t *err);

/* Discards msg's payload; the sender's request completes normally. */
void sdc_ucx_msg_drop(sdc_ucx_msg_t *msg);

/* *done = 1 when req has finished. Returns SDC_OK while in flight or after
 * success, the failure (and err) once it finished badly. */
sdc_status_t sdc_ucx_req_test(sdc_ucx_req_t *req, int *done, sdc_error_t *err);

/* Progresses until req finishes or timeout_ms passes (< 0: no limit).
 * Returns the request's result; SDC_ERR_IO "timed out" leaves it in flight. */
sdc_status_t sdc_ucx_req_wait(sdc_ucx_req_t *req, int timeout_ms, sdc_error_t *err);

/* 1 once req has finished (or was never started). */
int sdc_ucx_req_done(const sdc_ucx_req_t *req);

/* Memory for payloads that travel: page-aligned, and for sizes of 2 MiB and
 * more 2 MiB-aligned with transparent huge pages requested. The kernel
 * copies behind TCP and cma run up to twice as fast on it as on plain
 * malloc memory. Free with sdc_ucx_buf_free and the same size. */
sdc_status_t sdc_ucx_buf_alloc(size_t size, void **out, sdc_error_t *err);
void sdc_ucx_buf_free(void *p, size_t size);

/* Runs UCX's progress engine once: receive callbacks and peer-failure
 * callbacks run from here. Returns nonzero if anything happened. */
unsigned sdc_ucx_progress(sdc_ucx_t *ctx);

/* The worker's event fd (wakeup must be set): poll it for POLLIN after a
 * successful sdc_ucx_arm. */
sdc_status_t sdc_ucx_efd(sdc_ucx_t *ctx, int *fd, sdc_error_t *err);

/* Arms the event fd. *armed = 0 means events are pending: progress again
 * instead of sleeping. */
sdc_status_t sdc_ucx_arm(sdc_ucx_t *ctx, int *armed, sdc_error_t *err);

/* Progresses; if nothing happened, sleeps on the event fd (wakeup set) for
 * up to timeout_ms, or returns at once (wakeup unset). */
sdc_status_t sdc_ucx_wait(sdc_ucx_t *ctx, int timeout_ms, sdc_error_t *err);

#endif
