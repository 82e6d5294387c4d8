/*
 * ucx.c: sdc's UCX transport (see ucx.h): context, worker, endpoints,
 * active messages and their requests.
 *
 * Every message uses one active-message id; the header is a wire.h frame
 * and the payload raw tensor bytes. Requests are polled with
 * ucp_request_check_status rather than completed through callbacks, so a
 * caller-owned sdc_ucx_req_t never has to stay at a fixed address.
 *
 * UCX 1.13 notes that shaped this file:
 * - ucp_am_send_nbx keeps the header pointer until the send completes (a
 *   rendezvous RTS may be packed later), and 1.13 has no
 *   UCP_AM_SEND_FLAG_COPY_HEADER: the request owns a copy of the header.
 * - Eager data handed to the receive callback without
 *   UCP_AM_RECV_ATTR_FLAG_DATA dies when the callback returns; a receiver
 *   that defers such a message gets a private copy (small messages only:
 *   large ones arrive by rendezvous and are never copied).
 * - Endpoints close by a bounded flush followed by a forced close: a flush
 *   close can wait forever on a peer that is gone but not yet detected.
 * - With UCP_ERR_HANDLING_MODE_PEER, 1.13 carries active messages only on
 *   transports that report peer failure (tcp; rc/dc on InfiniBand) and puts
 *   rendezvous lanes only on memory domains that can invalidate (not cma):
 *   between processes of one host everything goes over TCP loopback, and a
 *   rendezvous transfer advances only while both sides call progress.
 */
#include "ucx.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <ucp/api/ucp.h>

#define SDC_UCX_AM_ID 1
#define SDC_UCX_NAME_MAX 64
#define SDC_UCX_DEFAULT_CLOSE_MS 2000
#define SDC_UCX_HUGE_PAGE ((size_t)2 << 20)

struct sdc_ucx_ep {
    sdc_ucx_t *ctx;
    ucp_ep_h ep;
    sdc_ucx_ep_t *prev, *next; /* ctx->eps */
    sdc_status_t status;       /* SDC_OK until the peer fails */
    ucs_status_t ucs_status;
    void *user;
    char peer[SDC_UCX_NAME_MAX];
};

struct sdc_ucx_msg {
    sdc_ucx_t *ctx;
    void *data;            /* eager bytes, or UCX's rendezvous descriptor */
    size_t len;
    unsigned rndv : 1;      /* data is a rendezvous descriptor */
    unsigned ucx_owned : 1; /* eager data UCX keeps until ucp_am_data_release */
    unsigned own_copy : 1;  /* eager data copied into our malloc */
    unsigned in_cb : 1;     /* inside the receive callback */
    unsigned consumed : 1;  /* received or dropped during the callback */
    sdc_ucx_msg_t *prev, *next; /* ctx->pending, once deferred */
};

struct sdc_ucx {
    ucp_context_h ucp;
    ucp_worker_h worker;
    void *addr;
    size_t addr_len;
    size_t max_header;
    int efd;
    sdc_ucx_params_t p;
    char name[SDC_UCX_NAME_MAX];
    sdc_ucx_ep_t *eps;
    sdc_ucx_msg_t *pending;
};

/* ---- small helpers --------------------------------------------------------- */

static sdc_status_t status_from_ucs(ucs_status_t s)
{
    switch (s) {
    case UCS_OK: return SDC_OK;
    case UCS_ERR_NO_MEMORY: return SDC_ERR_NOMEM;
    case UCS_ERR_INVALID_PARAM: return SDC_ERR_INVALID_ARG;
    case UCS_ERR_UNSUPPORTED: return SDC_ERR_UNSUPPORTED;
    case UCS_ERR_MESSAGE_TRUNCATED: return SDC_ERR_RANGE;
    default: return SDC_ERR_IO; /* unreachable, reset, timed out, canceled ... */
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void name_copy(char *dst, const char *src)
{
    snprintf(dst, SDC_UCX_NAME_MAX, "%s", src && *src ? src : "?");
}

/* ---- requests -------------------------------------------------------------- */

static void req_start(sdc_ucx_req_t *req, sdc_ucx_t *ctx)
{
    memset(req, 0, sizeof(*req));
    req->ctx = ctx;
}

static void req_finish(sdc_ucx_req_t *req, ucs_status_t s)
{
    assert(s != UCS_INPROGRESS);
    free(req->hdr);
    req->hdr = NULL;
    req->ucp = NULL;
    req->ucs_status = s;
    req->status = status_from_ucs(s);
}

/* Takes over what ucp_*_nbx returned. */
static sdc_status_t req_track(sdc_ucx_req_t *req, ucs_status_ptr_t r, const char *what,
                              sdc_error_t *err)
{
    if (r == NULL) {
        req_finish(req, UCS_OK);
        return SDC_OK;
    }
    if (UCS_PTR_IS_ERR(r)) {
        req_finish(req, UCS_PTR_STATUS(r));
        return sdc_error_set(err, req->status, "ucx %s: %s: %s", req->ctx->name, what,
                             ucs_status_string(UCS_PTR_STATUS(r)));
    }
    req->ucp = r;
    return SDC_OK;
}

int sdc_ucx_req_done(const sdc_ucx_req_t *req)
{
    return req->ucp == NULL;
}

sdc_status_t sdc_ucx_req_test(sdc_ucx_req_t *req, int *done, sdc_error_t *err)
{
    if (req->ucp) {
        ucs_status_t s = ucp_request_check_status(req->ucp);
        if (s == UCS_INPROGRESS) {
            *done = 0;
            return SDC_OK;
        }
        ucp_request_free(req->ucp);
        req_finish(req, s);
    }
    *done = 1;
    if (req->status == SDC_OK)
        return SDC_OK;
    return sdc_error_set(err, req->status, "ucx %s: request failed: %s",
                         req->ctx ? req->ctx->name : "?",
                         ucs_status_string((ucs_status_t)req->ucs_status));
}

sdc_status_t sdc_ucx_req_wait(sdc_ucx_req_t *req, int timeout_ms, sdc_error_t *err)
{
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : now_ms() + timeout_ms;
    for (unsigned spin = 0;; spin++) {
        int done;
        sdc_status_t st = sdc_ucx_req_test(req, &done, err);
        if (done)
            return st;
        ucp_worker_progress(req->ctx->worker);
        /* Reading the clock on every spin would cost more than the spin. */
        if ((spin & 255) == 255 && now_ms() >= deadline)
            return sdc_error_set(err, SDC_ERR_IO, "ucx %s: request timed out after %d ms",
                                 req->ctx->name, timeout_ms);
    }
}

/* ---- receive --------------------------------------------------------------- */

static void pending_link(sdc_ucx_t *ctx, sdc_ucx_msg_t *m)
{
    m->prev = NULL;
    m->next = ctx->pending;
    if (ctx->pending)
        ctx->pending->prev = m;
    ctx->pending = m;
}

static void pending_unlink(sdc_ucx_t *ctx, sdc_ucx_msg_t *m)
{
    if (m->prev)
        m->prev->next = m->next;
    else
        ctx->pending = m->next;
    if (m->next)
        m->next->prev = m->prev;
}

/* Releases what msg holds, once its payload was received or dropped. A
 * rendezvous descriptor passed to ucp_am_recv_data_nbx belongs to UCX. */
static void msg_consume(sdc_ucx_msg_t *m, int rndv_taken)
{
    sdc_ucx_t *ctx = m->ctx;
    assert(!m->consumed && "a message was received or dropped twice");
    assert(!(m->own_copy && (m->rndv || m->ucx_owned)));
    if (m->own_copy)
        free(m->data);
    else if (!m->in_cb && (m->ucx_owned || (m->rndv && !rndv_taken)))
        ucp_am_data_release(ctx->worker, m->data);
    if (m->in_cb) {
        m->consumed = 1; /* am_recv_cb frees it and returns UCS_OK */
        return;
    }
    pending_unlink(ctx, m);
    free(m);
}

size_t sdc_ucx_msg_len(const sdc_ucx_msg_t *msg)
{
    return msg->len;
}

sdc_status_t sdc_ucx_msg_recv(sdc_ucx_msg_t *msg, void *dest, size_t cap, sdc_ucx_req_t *req,
                              sdc_error_t *err)
{
    sdc_ucx_t *ctx = msg->ctx;
    if (cap < msg->len)
        return sdc_error_set(err, SDC_ERR_RANGE, "ucx %s: payload of %zu bytes, buffer of %zu",
                             ctx->name, msg->len, cap);
    req_start(req, ctx);
    if (msg->rndv) {
        ucp_request_param_t prm = {.op_attr_mask = 0};
        ucs_status_ptr_t r = ucp_am_recv_data_nbx(ctx->worker, msg->data, dest, msg->len, &prm);
        msg_consume(msg, 1);
        return req_track(req, r, "receiving a rendezvous payload", err);
    }
    if (msg->len && !msg->data) {
        msg_consume(msg, 0);
        req_finish(req, UCS_ERR_NO_MEMORY);
        return sdc_error_set(err, SDC_ERR_NOMEM, "ucx %s: a deferred %zu-byte message was lost "
                             "(no memory to keep it)", ctx->name, msg->len);
    }
    if (msg->len)
        memcpy(dest, msg->data, msg->len);
    msg_consume(msg, 0);
    req_finish(req, UCS_OK);
    return SDC_OK;
}

void sdc_ucx_msg_drop(sdc_ucx_msg_t *msg)
{
    msg_consume(msg, 0);
}

static ucs_status_t am_recv_cb(void *arg, const void *header, size_t header_len, void *data,
                               size_t len, const ucp_am_recv_param_t *param)
{
    sdc_ucx_t *ctx = arg;
    if (!ctx->p.on_recv)
        return UCS_OK;
    sdc_ucx_msg_t *m = calloc(1, sizeof(*m));
    if (!m)
        return UCS_OK; /* dropped: for rendezvous the sender still completes */
    m->ctx = ctx;
    m->data = data;
    m->len = len;
    m->rndv = !!(param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV);
    m->ucx_owned = !!(param->recv_attr & UCP_AM_RECV_ATTR_FLAG_DATA);
    m->in_cb = 1;
    ctx->p.on_recv(ctx->p.recv_arg, m, header, header_len, len);
    m->in_cb = 0;
    if (m->consumed) {
        free(m);
        return UCS_OK;
    }
    pending_link(ctx, m);
    if (m->rndv || m->ucx_owned)
        return UCS_INPROGRESS;
    m->data = len ? malloc(len) : NULL;
    if (m->data) {
        memcpy(m->data, data, len);
        m->own_copy = 1;
    }
    return UCS_OK;
}

/* ---- endpoints ------------------------------------------------------------- */

static void ep_err_cb(void *arg, ucp_ep_h uep, ucs_status_t status)
{
    sdc_ucx_ep_t *ep = arg;
    (void)uep;
    if (ep->status != SDC_OK)
        return;
    assert(status != UCS_OK);
    ep->ucs_status = status;
    ep->status = status_from_ucs(status) == SDC_OK ? SDC_ERR_IO : status_from_ucs(status);
    if (ep->ctx->p.on_peer_failed)
        ep->ctx->p.on_peer_failed(ep->ctx->p.peer_arg, ep, ep->status);
}

sdc_status_t sdc_ucx_connect(sdc_ucx_t *ctx, const void *addr, size_t len, const char *peer,
                             void *user, sdc_ucx_ep_t **out, sdc_error_t *err)
{
    *out = NULL;
    if (!addr || len == 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "ucx %s: empty address for peer %s",
                             ctx->name, peer ? peer : "?");
    sdc_ucx_ep_t *ep = calloc(1, sizeof(*ep));
    if (!ep)
        return sdc_error_set(err, SDC_ERR_NOMEM, "ucx %s: endpoint", ctx->name);
    ep->ctx = ctx;
    ep->user = user;
    name_copy(ep->peer, peer);
    ucp_ep_params_t prm = {
        .field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER,
        .address = addr,
        .err_mode = UCP_ERR_HANDLING_MODE_PEER,
        .err_handler = {.cb = ep_err_cb, .arg = ep},
    };
    if (ctx->p.no_failure_detection) {
        prm.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
        prm.err_mode = UCP_ERR_HANDLING_MODE_NONE;
    }
    ucs_status_t s = ucp_ep_create(ctx->worker, &prm, &ep->ep);
    if (s != UCS_OK) {
        free(ep);
        int hint = s == UCS_ERR_UNREACHABLE && !ctx->p.no_failure_detection;
        return sdc_error_set(err, status_from_ucs(s), "ucx %s: connecting to %s: %s%s", ctx->name,
                             peer ? peer : "?", ucs_status_string(s),
                             hint ? " (failure detection needs a transport that reports peer "
                                    "failure, such as tcp: check UCX_TLS)"
                                  : "");
    }
    ep->next = ctx->eps;
    if (ctx->eps)
        ctx->eps->prev = ep;
    ctx->eps = ep;
    *out = ep;
    return SDC_OK;
}

sdc_status_t sdc_ucx_ep_status(const sdc_ucx_ep_t *ep)
{
    return ep->status;
}

const char *sdc_ucx_ep_peer(const sdc_ucx_ep_t *ep)
{
    return ep->peer;
}

void *sdc_ucx_ep_user(const sdc_ucx_ep_t *ep)
{
    return ep->user;
}

/* Progresses until every request in reqs has completed or the deadline
 * passes; frees them either way (UCX releases a freed in-flight request
 * when it completes). */
static void wait_all(sdc_ucx_t *ctx, void **reqs, size_t n, int64_t deadline)
{
    for (;;) {
        size_t left = 0;
        for (size_t i = 0; i < n; i++) {
            if (reqs[i] && ucp_request_check_status(reqs[i]) != UCS_INPROGRESS) {
                ucp_request_free(reqs[i]);
                reqs[i] = NULL;
            }
            left += reqs[i] != NULL;
        }
        if (!left || now_ms() >= deadline)
            break;
        ucp_worker_progress(ctx->worker);
    }
    for (size_t i = 0; i < n; i++)
        if (reqs[i])
            ucp_request_free(reqs[i]);
}

/* Starts a flush of a healthy endpoint; NULL when nothing to wait for. */
static void *ep_flush_start(sdc_ucx_ep_t *ep)
{
    if (ep->status != SDC_OK)
        return NULL;
    ucp_request_param_t prm = {.op_attr_mask = 0};
    ucs_status_ptr_t r = ucp_ep_flush_nbx(ep->ep, &prm);
    return UCS_PTR_IS_PTR(r) ? r : NULL;
}

/* Forced unless failure detection is off: UCX allows a forced close only
 * when both sides' endpoints handle peer errors. */
static void *ep_close_start(sdc_ucx_ep_t *ep)
{
    ucp_request_param_t prm = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                               .flags = ep->ctx->p.no_failure_detection ? 0
                                                                        : UCP_EP_CLOSE_FLAG_FORCE};
    ucs_status_ptr_t r = ucp_ep_close_nbx(ep->ep, &prm);
    return UCS_PTR_IS_PTR(r) ? r : NULL;
}

static void ep_unlink_free(sdc_ucx_ep_t *ep)
{
    sdc_ucx_t *ctx = ep->ctx;
    if (ep->prev)
        ep->prev->next = ep->next;
    else
        ctx->eps = ep->next;
    if (ep->next)
        ep->next->prev = ep->prev;
    free(ep);
}

sdc_status_t sdc_ucx_ep_close(sdc_ucx_ep_t *ep, sdc_error_t *err)
{
    sdc_ucx_t *ctx = ep->ctx;
    sdc_status_t st = ep->status;
    int64_t deadline = now_ms() + ctx->p.close_timeout_ms;
    void *r = ep_flush_start(ep);
    wait_all(ctx, &r, 1, deadline);
    r = ep_close_start(ep);
    wait_all(ctx, &r, 1, now_ms() + ctx->p.close_timeout_ms);
    char peer[SDC_UCX_NAME_MAX];
    memcpy(peer, ep->peer, sizeof(peer));
    ep_unlink_free(ep);
    if (st != SDC_OK)
        return sdc_error_set(err, st, "ucx %s: closed endpoint to %s had failed", ctx->name,
                             peer);
    return SDC_OK;
}

/* ---- send ------------------------------------------------------------------ */

sdc_status_t sdc_ucx_send(sdc_ucx_ep_t *ep, const void *hdr, size_t hdr_len,
                          const void *payload, size_t len, sdc_ucx_req_t *req, sdc_error_t *err)
{
    sdc_ucx_t *ctx = ep->ctx;
    req_start(req, ctx);
    if (ep->status != SDC_OK) {
        req_finish(req, ep->ucs_status);
        return sdc_error_set(err, ep->status, "ucx %s: peer %s has failed: %s", ctx->name,
                             ep->peer, ucs_status_string(ep->ucs_status));
    }
    if (hdr_len > ctx->max_header) {
        req_finish(req, UCS_ERR_INVALID_PARAM);
        return sdc_error_set(err, SDC_ERR_RANGE, "ucx %s: header of %zu bytes to %s (max %zu)",
                             ctx->name, hdr_len, ep->peer, ctx->max_header);
    }
    if (hdr_len) {
        req->hdr = malloc(hdr_len);
        if (!req->hdr) {
            req_finish(req, UCS_ERR_NO_MEMORY);
            return sdc_error_set(err, SDC_ERR_NOMEM, "ucx %s: header copy", ctx->name);
        }
        memcpy(req->hdr, hdr, hdr_len);
    }
    ucp_request_param_t prm = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS};
    if (ctx->p.rndv_thresh && len >= ctx->p.rndv_thresh)
        prm.flags = UCP_AM_SEND_FLAG_RNDV;
    assert(payload || len == 0);
    ucs_status_ptr_t r =
        ucp_am_send_nbx(ep->ep, SDC_UCX_AM_ID, req->hdr, hdr_len, payload, len, &prm);
    return req_track(req, r, "sending", err);
}

/* ---- payload memory ---------------------------------------------------------- */

static size_t buf_span(size_t size)
{
    size_t page = size >= SDC_UCX_HUGE_PAGE ? SDC_UCX_HUGE_PAGE : (size_t)sysconf(_SC_PAGESIZE);
    return (size + page - 1) / page * page;
}

sdc_status_t sdc_ucx_buf_alloc(size_t size, void **out, sdc_error_t *err)
{
    *out = NULL;
    if (size == 0 || size > SIZE_MAX - 2 * SDC_UCX_HUGE_PAGE)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "ucx: payload buffer of %zu bytes", size);
    size_t span = buf_span(size);
    size_t extra = size >= SDC_UCX_HUGE_PAGE ? SDC_UCX_HUGE_PAGE : 0;
    uint8_t *p = mmap(NULL, span + extra, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    if (p == MAP_FAILED)
        return sdc_error_set(err, SDC_ERR_NOMEM, "ucx: mapping %zu bytes: %s", span,
                             strerror(errno));
    /* Trim the mapping to a huge-page-aligned span. */
    size_t head = extra ? (SDC_UCX_HUGE_PAGE - (uintptr_t)p % SDC_UCX_HUGE_PAGE) % SDC_UCX_HUGE_PAGE
                        : 0;
    if (head)
        munmap(p, head);
    if (extra - head)
        munmap(p + head + span, extra - head);
    p += head;
    if (extra)
        madvise(p, span, MADV_HUGEPAGE); /* a hint: refused where THP is off */
    *out = p;
    return SDC_OK;
}

void sdc_ucx_buf_free(void *p, size_t size)
{
    if (p)
        munmap(p, buf_span(size));
}

/* ---- context --------------------------------------------------------------- */

unsigned sdc_ucx_progress(sdc_ucx_t *ctx)
{
    return ucp_worker_progress(ctx->worker);
}

void sdc_ucx_address(const sdc_ucx_t *ctx, const void **addr, size_t *len)
{
    *addr = ctx->addr;
    *len = ctx->addr_len;
}

size_t sdc_ucx_max_header(const sdc_ucx_t *ctx)
{
    return ctx->max_header;
}

sdc_status_t sdc_ucx_efd(sdc_ucx_t *ctx, int *fd, sdc_error_t *err)
{
    if (ctx->efd < 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "ucx %s: created without wakeup",
                             ctx->name);
    *fd = ctx->efd;
    return SDC_OK;
}

sdc_status_t sdc_ucx_arm(sdc_ucx_t *ctx, int *armed, sdc_error_t *err)
{
    *armed = 0;
    if (ctx->efd < 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "ucx %s: created without wakeup",
                             ctx->name);
    ucs_status_t s = ucp_worker_arm(ctx->worker);
    if (s == UCS_ERR_BUSY)
        return SDC_OK;
    if (s != UCS_OK)
        return sdc_error_set(err, status_from_ucs(s), "ucx %s: arming the event fd: %s",
                             ctx->name, ucs_status_string(s));
    *armed = 1;
    return SDC_OK;
}

sdc_status_t sdc_ucx_wait(sdc_ucx_t *ctx, int timeout_ms, sdc_error_t *err)
{
    if (ucp_worker_progress(ctx->worker) || ctx->efd < 0)
        return SDC_OK;
    int armed;
    sdc_status_t st = sdc_ucx_arm(ctx, &armed, err);
    if (st != SDC_OK || !armed)
        return st;
    struct pollfd pfd = {.fd = ctx->efd, .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) < 0 && errno != EINTR)
        return sdc_error_set(err, SDC_ERR_IO, "ucx %s: poll on the event fd: %s", ctx->name,
                             strerror(errno));
    return SDC_OK;
}

static sdc_status_t worker_setup(sdc_ucx_t *ctx, sdc_error_t *err)
{
    ucp_worker_params_t wp = {.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
                              .thread_mode = UCS_THREAD_MODE_SINGLE};
    ucs_status_t s = ucp_worker_create(ctx->ucp, &wp, &ctx->worker);
    if (s != UCS_OK)
        return sdc_error_set(err, status_from_ucs(s), "ucx %s: ucp_worker_create: %s", ctx->name,
                             ucs_status_string(s));
    ucp_worker_attr_t attr = {.field_mask = UCP_WORKER_ATTR_FIELD_ADDRESS |
                                            UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER};
    s = ucp_worker_query(ctx->worker, &attr);
    if (s != UCS_OK)
        return sdc_error_set(err, status_from_ucs(s), "ucx %s: ucp_worker_query: %s", ctx->name,
                             ucs_status_string(s));
    ctx->max_header = attr.max_am_header;
    ctx->addr = malloc(attr.address_length);
    if (ctx->addr) {
        memcpy(ctx->addr, attr.address, attr.address_length);
        ctx->addr_len = attr.address_length;
    }
    ucp_worker_release_address(ctx->worker, attr.address);
    if (!ctx->addr)
        return sdc_error_set(err, SDC_ERR_NOMEM, "ucx %s: worker address", ctx->name);
    ucp_am_handler_param_t hp = {
        .field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                      UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG,
        .id = SDC_UCX_AM_ID,
        .flags = UCP_AM_FLAG_WHOLE_MSG,
        .cb = am_recv_cb,
        .arg = ctx,
    };
    s = ucp_worker_set_am_recv_handler(ctx->worker, &hp);
    if (s != UCS_OK)
        return sdc_error_set(err, status_from_ucs(s), "ucx %s: setting the AM handler: %s",
                             ctx->name, ucs_status_string(s));
    if (!ctx->p.wakeup)
        return SDC_OK;
    s = ucp_worker_get_efd(ctx->worker, &ctx->efd);
    if (s != UCS_OK)
        return sdc_error_set(err, status_from_ucs(s), "ucx %s: ucp_worker_get_efd: %s",
                             ctx->name, ucs_status_string(s));
    return SDC_OK;
}

sdc_status_t sdc_ucx_create(const sdc_ucx_params_t *params, sdc_ucx_t **out, sdc_error_t *err)
{
    *out = NULL;
    sdc_ucx_t *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return sdc_error_set(err, SDC_ERR_NOMEM, "ucx: context");
    ctx->p = *params;
    ctx->efd = -1;
    name_copy(ctx->name, params->name);
    ctx->p.name = ctx->name;
    if (ctx->p.close_timeout_ms <= 0)
        ctx->p.close_timeout_ms = SDC_UCX_DEFAULT_CLOSE_MS;

    ucp_config_t *cfg;
    sdc_status_t st;
    ucs_status_t s = ucp_config_read(NULL, NULL, &cfg);
    if (s != UCS_OK) {
        st = sdc_error_set(err, status_from_ucs(s), "ucx %s: reading UCX_* configuration: %s",
                           ctx->name, ucs_status_string(s));
        goto err_free_ctx;
    }
    ucp_params_t up = {
        .field_mask = UCP_PARAM_FIELD_FEATURES,
        .features = UCP_FEATURE_AM | (params->wakeup ? UCP_FEATURE_WAKEUP : 0),
    };
    s = ucp_init(&up, cfg, &ctx->ucp);
    ucp_config_release(cfg);
    if (s != UCS_OK) {
        st = sdc_error_set(err, status_from_ucs(s), "ucx %s: ucp_init: %s", ctx->name,
                           ucs_status_string(s));
        goto err_free_ctx;
    }
    st = worker_setup(ctx, err);
    if (st != SDC_OK)
        goto err_destroy_worker;
    *out = ctx;
    return SDC_OK;

err_destroy_worker:
    free(ctx->addr);
    if (ctx->worker)
        ucp_worker_destroy(ctx->worker);
    ucp_cleanup(ctx->ucp);
err_free_ctx:
    free(ctx);
    return st;
}

/* Flushes every healthy endpoint at once (bounded), then closes all. */
static void close_all_eps(sdc_ucx_t *ctx)
{
    size_t n = 0;
    for (sdc_ucx_ep_t *ep = ctx->eps; ep; ep = ep->next)
        n++;
    if (!n)
        return;
    void **reqs = calloc(n, sizeof(*reqs));
    size_t i = 0;
    int64_t deadline = now_ms() + ctx->p.close_timeout_ms;
    if (reqs) {
        for (sdc_ucx_ep_t *ep = ctx->eps; ep; ep = ep->next)
            reqs[i++] = ep_flush_start(ep);
        wait_all(ctx, reqs, n, deadline);
    }
    i = 0;
    for (sdc_ucx_ep_t *ep = ctx->eps; ep; ep = ep->next) {
        void *r = ep_close_start(ep);
        if (reqs)
            reqs[i++] = r;
        else
            wait_all(ctx, &r, 1, now_ms() + ctx->p.close_timeout_ms);
    }
    if (reqs)
        wait_all(ctx, reqs, n, now_ms() + ctx->p.close_timeout_ms);
    free(reqs);
    while (ctx->eps)
        ep_unlink_free(ctx->eps);
}

void sdc_ucx_destroy(sdc_ucx_t *ctx)
{
    if (!ctx)
        return;
    while (ctx->pending)
        sdc_ucx_msg_drop(ctx->pending);
    close_all_eps(ctx);
    assert(!ctx->eps);
    free(ctx->addr);
    ucp_worker_destroy(ctx->worker);
    ucp_cleanup(ctx->ucp);
    free(ctx);
}
