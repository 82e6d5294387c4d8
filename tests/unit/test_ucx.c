/*
 * test_ucx.c: the UCX transport between two processes on this host. Each
 * case forks; parent and child create their UCX contexts after the fork,
 * swap worker addresses over a socketpair (as bootstrap would through
 * Redis) and talk over active messages on whatever transports UCX picks
 * for loopback (UCX_TLS applies). Payloads carry a CRC-32C in the header
 * and are checked on arrival. A child's failed checks come back as its
 * exit status; every wait is bounded, so a hang fails instead of blocking.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster/ucx.h"
#include "cluster/wire.h"
#include "test.h"

#define MiB (1024u * 1024u)
#define HDR_MAGIC 0x54534554u
#define WAIT_MS 10000

/* The header of a test message: which one, how long, its checksum. */
typedef struct {
    uint32_t magic;
    uint32_t seq;
    uint64_t len;
    uint32_t crc;
    uint32_t spare;
} test_hdr_t;

typedef struct {
    test_hdr_t h;
    uint8_t *buf;
    sdc_ucx_req_t req;
} arrival_t;

/* One process's side of a test. */
typedef struct {
    sdc_ucx_t *ctx;
    sdc_ucx_ep_t *ep;
    int fd;                  /* socketpair to the other process */
    int defer;               /* hold messages instead of receiving them */
    sdc_ucx_msg_t *held[64];
    test_hdr_t held_hdr[64];
    int n_held;
    arrival_t *arr;
    int n_arr, cap_arr;
    int bad_headers;
    int peer_failed;
    sdc_status_t fail_why;
} side_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        memcpy(p + i, &s, 8);
    }
    for (; i < n; i++)
        p[i] = (uint8_t)(s >> (8 * (i & 7)));
}

/* ---- socketpair plumbing ----------------------------------------------------- */

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n, int timeout_ms)
{
    uint8_t *b = p;
    while (n) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, timeout_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        ssize_t got = read(fd, b, n);
        if (got <= 0)
            return -1;
        b += got;
        n -= (size_t)got;
    }
    return 0;
}

static void sync_send(side_t *s, uint8_t v)
{
    CHECK(write_all(s->fd, &v, 1) == 0);
}

/* Waits for the other side's byte while progressing UCX. */
static int sync_recv(side_t *s, int timeout_ms)
{
    double end = now_s() + timeout_ms / 1000.0;
    while (now_s() < end) {
        sdc_ucx_progress(s->ctx);
        uint8_t v;
        struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
        if (poll(&pfd, 1, 0) == 1)
            return read_all(s->fd, &v, 1, 0) == 0 ? v : -1;
    }
    return -1;
}

/* ---- UCX side setup ---------------------------------------------------------- */

static void on_recv(void *arg, sdc_ucx_msg_t *msg, const void *header, size_t header_len,
                    size_t payload_len)
{
    side_t *s = arg;
    test_hdr_t h;
    if (header_len != sizeof(h)) {
        s->bad_headers++;
        sdc_ucx_msg_drop(msg);
        return;
    }
    memcpy(&h, header, sizeof(h));
    if (h.magic != HDR_MAGIC || h.len != payload_len || h.len != sdc_ucx_msg_len(msg)) {
        s->bad_headers++;
        sdc_ucx_msg_drop(msg);
        return;
    }
    if (s->defer && s->n_held < 64) {
        s->held_hdr[s->n_held] = h;
        s->held[s->n_held++] = msg;
        return;
    }
    if (s->n_arr == s->cap_arr) {
        s->cap_arr = s->cap_arr ? 2 * s->cap_arr : 64;
        s->arr = realloc(s->arr, (size_t)s->cap_arr * sizeof(*s->arr));
    }
    arrival_t *a = &s->arr[s->n_arr++];
    a->h = h;
    a->buf = malloc(h.len ? h.len : 1);
    sdc_error_t err = {0};
    sdc_status_t st = sdc_ucx_msg_recv(msg, a->buf, h.len, &a->req, &err);
    CHECK_MSG(st == SDC_OK, "%s", err.msg);
}

static void on_peer_failed(void *arg, sdc_ucx_ep_t *ep, sdc_status_t why)
{
    side_t *s = arg;
    (void)ep;
    s->peer_failed++;
    s->fail_why = why;
}

/* Creates this side's context, swaps addresses with the other process and
 * connects to it. */
static int side_open(side_t *s, int fd, const char *name, int wakeup)
{
    memset(s, 0, sizeof(*s));
    s->fd = fd;
    sdc_ucx_params_t p = {
        .name = name,
        .wakeup = wakeup,
        .close_timeout_ms = 1000,
        .on_recv = on_recv,
        .recv_arg = s,
        .on_peer_failed = on_peer_failed,
        .peer_arg = s,
    };
    sdc_error_t err = {0};
    sdc_status_t st = sdc_ucx_create(&p, &s->ctx, &err);
    CHECK_MSG(st == SDC_OK, "%s", err.msg);
    if (st != SDC_OK)
        return -1;
    const void *addr;
    size_t len;
    sdc_ucx_address(s->ctx, &addr, &len);
    uint64_t len64 = len, peer_len = 0;
    CHECK(len > 0 && sdc_ucx_max_header(s->ctx) >= 256);
    if (write_all(fd, &len64, 8) || write_all(fd, addr, len) ||
        read_all(fd, &peer_len, 8, WAIT_MS) || peer_len == 0 || peer_len > 65536) {
        CHECK_MSG(0, "%s: address exchange failed", name);
        return -1;
    }
    uint8_t *peer = malloc(peer_len);
    int rc = read_all(fd, peer, peer_len, WAIT_MS);
    CHECK(rc == 0);
    if (rc == 0) {
        st = sdc_ucx_connect(s->ctx, peer, peer_len, name[0] == 'p' ? "child" : "parent", s,
                             &s->ep, &err);
        CHECK_MSG(st == SDC_OK, "%s", err.msg);
    }
    free(peer);
    return s->ep ? 0 : -1;
}

static void side_close(side_t *s)
{
    for (int i = 0; i < s->n_arr; i++)
        free(s->arr[i].buf);
    free(s->arr);
    for (int i = 0; i < s->n_held; i++)
        if (s->held[i])
            sdc_ucx_msg_drop(s->held[i]);
    sdc_ucx_destroy(s->ctx);
    close(s->fd);
}

/* Sends message seq: len bytes from buf whose CRC-32C is crc. */
static sdc_status_t send_crc(side_t *s, uint32_t seq, const uint8_t *buf, size_t len,
                             uint32_t crc, sdc_ucx_req_t *req, sdc_error_t *err)
{
    test_hdr_t h = {HDR_MAGIC, seq, len, crc, 0};
    return sdc_ucx_send(s->ep, &h, sizeof(h), buf, len, req, err);
}

static sdc_status_t send_msg(side_t *s, uint32_t seq, const uint8_t *buf, size_t len,
                             sdc_ucx_req_t *req, sdc_error_t *err)
{
    return send_crc(s, seq, buf, len, sdc_wire_crc32c(0, buf, len), req, err);
}

/* Progresses until n messages have arrived and landed; checks each. */
static int wait_arrivals(side_t *s, int n, int timeout_ms)
{
    double end = now_s() + timeout_ms / 1000.0;
    while (s->n_arr < n && now_s() < end)
        sdc_ucx_progress(s->ctx);
    CHECK_MSG(s->n_arr >= n, "%d of %d messages arrived", s->n_arr, n);
    for (int i = 0; i < s->n_arr; i++) {
        sdc_error_t err = {0};
        sdc_status_t st = sdc_ucx_req_wait(&s->arr[i].req, timeout_ms, &err);
        CHECK_MSG(st == SDC_OK, "message %d: %s", i, err.msg);
        const arrival_t *a = &s->arr[i];
        CHECK_MSG(sdc_wire_crc32c(0, a->buf, a->h.len) == a->h.crc,
                  "message %u (%llu bytes): payload checksum mismatch", a->h.seq,
                  (unsigned long long)a->h.len);
    }
    return s->n_arr >= n ? 0 : -1;
}

/* ---- fork harness ------------------------------------------------------------ */

typedef void (*role_fn)(side_t *s, int fd);

/* Runs child_fn in a child and parent_fn here, each on its end of a
 * socketpair; the child's failures come back as its exit status. */
static void run_pair(role_fn parent_fn, role_fn child_fn, int expect_killed)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        CHECK_MSG(0, "socketpair: %s", strerror(errno));
        return;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        side_t s;
        test_failures_ = 0;
        child_fn(&s, sv[1]);
        fflush(stdout);
        _exit(test_failures_ ? 1 : 0);
    }
    close(sv[1]);
    side_t s;
    parent_fn(&s, sv[0]);
    if (pid < 0)
        return;
    int status = 0;
    double end = now_s() + 20;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (now_s() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            CHECK_MSG(0, "child did not finish");
            return;
        }
        usleep(1000);
    }
    if (expect_killed)
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    else
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status 0x%x", status);
}

/* ---- cases ------------------------------------------------------------------- */

static const size_t sizes_small_large[] = {0, 100, 8192, 1 * MiB, 64 * MiB};
#define N_SMALL_LARGE (sizeof(sizes_small_large) / sizeof(sizes_small_large[0]))

static void small_large_child(side_t *s, int fd)
{
    if (side_open(s, fd, "child", 0) != 0)
        return;
    uint8_t *buf = malloc(64 * MiB);
    sdc_ucx_req_t req[N_SMALL_LARGE];
    uint8_t *bufs[N_SMALL_LARGE];
    for (size_t i = 0; i < N_SMALL_LARGE; i++) {
        bufs[i] = i + 1 < N_SMALL_LARGE ? malloc(sizes_small_large[i] + 1) : buf;
        fill(bufs[i], sizes_small_large[i], i);
        sdc_error_t err = {0};
        sdc_status_t st = send_msg(s, (uint32_t)i, bufs[i], sizes_small_large[i], &req[i], &err);
        CHECK_MSG(st == SDC_OK, "%s", err.msg);
    }
    for (size_t i = 0; i < N_SMALL_LARGE; i++) {
        sdc_error_t err = {0};
        CHECK_MSG(sdc_ucx_req_wait(&req[i], WAIT_MS, &err) == SDC_OK, "%s", err.msg);
    }
    /* The reply travels the other way on the parent's endpoint. */
    CHECK(wait_arrivals(s, 1, WAIT_MS) == 0 && s->arr[0].h.seq == 77 && s->arr[0].h.len == 5);
    CHECK(memcmp(s->arr[0].buf, "done!", 5) == 0);
    sync_send(s, 1);
    sync_recv(s, WAIT_MS);
    for (size_t i = 0; i + 1 < N_SMALL_LARGE; i++)
        free(bufs[i]);
    free(buf);
    side_close(s);
}

static void small_large_parent(side_t *s, int fd)
{
    if (side_open(s, fd, "parent", 0) != 0)
        return;
    if (wait_arrivals(s, N_SMALL_LARGE, WAIT_MS) == 0) {
        for (size_t i = 0; i < N_SMALL_LARGE; i++) {
            CHECK_EQ_INT(s->arr[i].h.seq, i);
            CHECK_EQ_INT(s->arr[i].h.len, sizes_small_large[i]);
        }
        /* Independent check of the largest payload against its generator. */
        uint8_t *want = malloc(64 * MiB);
        fill(want, 64 * MiB, N_SMALL_LARGE - 1);
        CHECK(memcmp(want, s->arr[N_SMALL_LARGE - 1].buf, 64 * MiB) == 0);
        free(want);
    }
    CHECK_EQ_INT(s->bad_headers, 0);
    sdc_ucx_req_t req;
    sdc_error_t err = {0};
    CHECK(send_msg(s, 77, (const uint8_t *)"done!", 5, &req, &err) == SDC_OK);
    CHECK(sdc_ucx_req_wait(&req, WAIT_MS, &err) == SDC_OK);
    CHECK_EQ_INT(sync_recv(s, WAIT_MS), 1);
    sync_send(s, 2);
    CHECK_EQ_INT(s->peer_failed, 0);
    side_close(s);
}

static void test_small_and_large(void)
{
    run_pair(small_large_parent, small_large_child, 0);
}

#define N_ORDER 3000
#define ORDER_WINDOW 64

static size_t order_size(uint32_t i)
{
    /* Mostly eager sizes, every 16th a rendezvous one. */
    return i % 16 == 15 ? 256 * 1024 + i : (i * 37) % 9000;
}

static void order_child(side_t *s, int fd)
{
    if (side_open(s, fd, "child", 0) != 0)
        return;
    uint8_t *pool = malloc(ORDER_WINDOW * (size_t)(260 * 1024 + N_ORDER));
    sdc_ucx_req_t req[ORDER_WINDOW];
    memset(req, 0, sizeof(req));
    for (uint32_t i = 0; i < N_ORDER; i++) {
        int slot = (int)(i % ORDER_WINDOW);
        sdc_error_t err = {0};
        /* The slot's previous send must finish before its buffer is reused. */
        CHECK_MSG(sdc_ucx_req_wait(&req[slot], WAIT_MS, &err) == SDC_OK, "%s", err.msg);
        uint8_t *buf = pool + (size_t)slot * (260 * 1024 + N_ORDER);
        fill(buf, order_size(i), i);
        sdc_status_t st = send_msg(s, i, buf, order_size(i), &req[slot], &err);
        CHECK_MSG(st == SDC_OK, "message %u: %s", i, err.msg);
    }
    for (int i = 0; i < ORDER_WINDOW; i++) {
        sdc_error_t err = {0};
        CHECK_MSG(sdc_ucx_req_wait(&req[i], WAIT_MS, &err) == SDC_OK, "%s", err.msg);
    }
    sync_recv(s, WAIT_MS);
    free(pool);
    side_close(s);
}

static void order_parent(side_t *s, int fd)
{
    if (side_open(s, fd, "parent", 0) != 0)
        return;
    if (wait_arrivals(s, N_ORDER, WAIT_MS) == 0) {
        int out_of_order = 0;
        for (int i = 0; i < N_ORDER; i++) {
            out_of_order += s->arr[i].h.seq != (uint32_t)i;
            CHECK_EQ_INT(s->arr[i].h.len, order_size(s->arr[i].h.seq));
        }
        CHECK_EQ_INT(out_of_order, 0);
    }
    sync_send(s, 1);
    side_close(s);
}

static void test_many_in_order(void)
{
    run_pair(order_parent, order_child, 0);
}

/* Busy work in ~1 ms slices with a progress call between them: what a
 * stage does between blocks while its send flies. Over TCP (the only
 * transport UCX 1.13 offers with failure detection on one host) the send
 * advances only inside progress calls. */
static double compute(sdc_ucx_t *ctx, double seconds)
{
    double end = now_s() + seconds, acc = 0;
    while (now_s() < end) {
        double slice = now_s() + 0.001;
        while (now_s() < slice)
            for (int i = 1; i < 1000; i++)
                acc += 1.0 / i;
        sdc_ucx_progress(ctx);
    }
    return acc;
}

static void overlap_child(side_t *s, int fd)
{
    if (side_open(s, fd, "child", 0) != 0)
        return;
    size_t len = 64 * MiB;
    uint8_t *buf = malloc(len);
    fill(buf, len, 99);
    uint32_t crc = sdc_wire_crc32c(0, buf, len);
    sdc_ucx_req_t req;
    sdc_error_t err = {0};

    /* Alone first, to know how long 64 MiB takes here. */
    double t0 = now_s();
    CHECK(send_crc(s, 0, buf, len, crc, &req, &err) == SDC_OK);
    CHECK(sdc_ucx_req_wait(&req, WAIT_MS, &err) == SDC_OK);
    double alone = now_s() - t0;
    CHECK_EQ_INT(sync_recv(s, WAIT_MS), 1);

    /* Post, compute, then wait. */
    t0 = now_s();
    CHECK(send_crc(s, 1, buf, len, crc, &req, &err) == SDC_OK);
    double posted = now_s() - t0;
    CHECK_MSG(!sdc_ucx_req_done(&req), "a 64 MiB send completed inside the call");
    double work = fmax(0.1, 2 * alone);
    CHECK(compute(s->ctx, work) != 0);
    double t1 = now_s();
    CHECK(sdc_ucx_req_wait(&req, WAIT_MS, &err) == SDC_OK);
    double waited = now_s() - t1;
    printf("  64 MiB send: alone %.1f ms; overlapped: post %.3f ms, compute %.1f ms, "
           "then wait %.1f ms\n", alone * 1e3, posted * 1e3, work * 1e3, waited * 1e3);
    /* The send went on while we computed: what is left to wait for is a
     * small part of the transfer. */
    CHECK_MSG(waited < 0.25 * alone, "waited %.1f ms after computing, transfer alone %.1f ms",
              waited * 1e3, alone * 1e3);
    CHECK(posted < 0.25 * alone);
    CHECK_EQ_INT(sync_recv(s, WAIT_MS), 2);
    free(buf);
    side_close(s);
}

static void overlap_parent(side_t *s, int fd)
{
    if (side_open(s, fd, "parent", 0) != 0)
        return;
    CHECK(wait_arrivals(s, 1, WAIT_MS) == 0);
    sync_send(s, 1);
    CHECK(wait_arrivals(s, 2, WAIT_MS) == 0);
    if (s->n_arr == 2)
        CHECK(memcmp(s->arr[0].buf, s->arr[1].buf, 64 * MiB) == 0);
    sync_send(s, 2);
    side_close(s);
}

static void test_send_overlaps_compute(void)
{
    run_pair(overlap_parent, overlap_child, 0);
}

/* The receiver holds messages (no buffer yet), then takes them in reverse
 * order, drops one, and rejects a too-small buffer without losing it. */
static const size_t defer_sizes[] = {64, 0, 4 * MiB, 3000, 16 * MiB};
#define N_DEFER (sizeof(defer_sizes) / sizeof(defer_sizes[0]))

static void defer_child(side_t *s, int fd)
{
    if (side_open(s, fd, "child", 0) != 0)
        return;
    uint8_t *bufs[N_DEFER];
    sdc_ucx_req_t req[N_DEFER];
    for (size_t i = 0; i < N_DEFER; i++) {
        bufs[i] = malloc(defer_sizes[i] + 1);
        fill(bufs[i], defer_sizes[i], 1000 + i);
        sdc_error_t err = {0};
        CHECK(send_msg(s, (uint32_t)i, bufs[i], defer_sizes[i], &req[i], &err) == SDC_OK);
    }
    /* Rendezvous sends stay open while the receiver holds the message. */
    CHECK_EQ_INT(sync_recv(s, WAIT_MS), 1);
    CHECK(!sdc_ucx_req_done(&req[2]) && !sdc_ucx_req_done(&req[4]));
    sync_send(s, 2);
    for (size_t i = 0; i < N_DEFER; i++) {
        sdc_error_t err = {0};
        CHECK_MSG(sdc_ucx_req_wait(&req[i], WAIT_MS, &err) == SDC_OK, "send %zu: %s", i, err.msg);
        free(bufs[i]);
    }
    sync_send(s, 3);
    sync_recv(s, WAIT_MS);
    side_close(s);
}

static void defer_parent(side_t *s, int fd)
{
    if (side_open(s, fd, "parent", 0) != 0)
        return;
    s->defer = 1;
    double end = now_s() + WAIT_MS / 1000.0;
    while (s->n_held < (int)N_DEFER && now_s() < end)
        sdc_ucx_progress(s->ctx);
    CHECK_EQ_INT(s->n_held, N_DEFER);
    /* Give the sender time to see that nothing completes yet. */
    for (double t = now_s() + 0.05; now_s() < t;)
        sdc_ucx_progress(s->ctx);
    sync_send(s, 1);
    CHECK_EQ_INT(sync_recv(s, WAIT_MS), 2);
    if (s->n_held == (int)N_DEFER) {
        sdc_error_t err = {0};
        uint8_t small[16];
        sdc_ucx_req_t req;
        CHECK_EQ_INT(sdc_ucx_msg_recv(s->held[4], small, sizeof(small), &req, &err),
                     SDC_ERR_RANGE);
        sdc_ucx_msg_drop(s->held[3]);
        s->held[3] = NULL;
        for (int i = (int)N_DEFER - 1; i >= 0; i--) {
            if (!s->held[i])
                continue;
            size_t len = s->held_hdr[i].len;
            uint8_t *buf = malloc(len + 1);
            CHECK(sdc_ucx_msg_recv(s->held[i], buf, len, &req, &err) == SDC_OK);
            s->held[i] = NULL;
            CHECK_MSG(sdc_ucx_req_wait(&req, WAIT_MS, &err) == SDC_OK, "%s", err.msg);
            CHECK_MSG(sdc_wire_crc32c(0, buf, len) == s->held_hdr[i].crc, "held message %d", i);
            free(buf);
        }
    }
    CHECK_EQ_INT(sync_recv(s, WAIT_MS), 3);
    sync_send(s, 4);
    side_close(s);
}

static void test_deferred_receive(void)
{
    run_pair(defer_parent, defer_child, 0);
}

/* The child streams 16 MiB messages both ways until the parent kills it
 * (the child's pid comes over the socketpair).
 * The parent must learn of it through the error callback, see its requests
 * fail and its sends refused, all within bounded time. */
static void killed_child(side_t *s, int fd)
{
    if (side_open(s, fd, "child", 0) != 0)
        return;
    pid_t self = getpid();
    CHECK(write_all(fd, &self, sizeof(self)) == 0);
    size_t len = 16 * MiB;
    uint8_t *buf = malloc(len);
    fill(buf, len, 5);
    sdc_ucx_req_t req[2];
    memset(req, 0, sizeof(req));
    for (uint32_t i = 0;; i++) {
        sdc_error_t err = {0};
        sdc_ucx_req_wait(&req[i & 1], WAIT_MS, &err);
        if (send_msg(s, i, buf, len, &req[i & 1], &err) != SDC_OK)
            break;
        sdc_ucx_progress(s->ctx);
    }
    _exit(1); /* only reached if the parent died first */
}

static void killed_parent(side_t *s, int fd)
{
    if (side_open(s, fd, "parent", 0) != 0)
        return;
    size_t len = 16 * MiB;
    uint8_t *buf = malloc(len);
    fill(buf, len, 6);
    sdc_ucx_req_t out[4];
    memset(out, 0, sizeof(out));
    sdc_error_t err = {0};
    /* Mid-stream: receives in flight and our own sends to the child. */
    double end = now_s() + WAIT_MS / 1000.0;
    while (s->n_arr < 3 && now_s() < end)
        sdc_ucx_progress(s->ctx);
    CHECK(s->n_arr >= 3);
    for (int i = 0; i < 4; i++)
        CHECK(send_msg(s, (uint32_t)i, buf, len, &out[i], &err) == SDC_OK);
    pid_t child = 0;
    CHECK(read_all(fd, &child, sizeof(child), WAIT_MS) == 0 && child > 0);
    if (child > 0)
        kill(child, SIGKILL);
    double t0 = now_s();
    end = t0 + 15;
    while (!s->peer_failed && now_s() < end)
        sdc_ucx_progress(s->ctx);
    double detect = now_s() - t0;
    printf("  peer death detected after %.2f s (%s)\n", detect,
           s->peer_failed ? sdc_status_str(s->fail_why) : "never");
    CHECK_EQ_INT(s->peer_failed, 1);
    CHECK(sdc_ucx_ep_status(s->ep) != SDC_OK);
    /* Requests to and from the dead peer finish (with an error or, if they
     * had completed before the kill, success) instead of hanging. */
    int failed = 0;
    for (int i = 0; i < 4; i++) {
        sdc_status_t st = sdc_ucx_req_wait(&out[i], 5000, &err);
        CHECK(sdc_ucx_req_done(&out[i]));
        failed += st != SDC_OK;
    }
    for (int i = 0; i < s->n_arr; i++) {
        sdc_ucx_req_wait(&s->arr[i].req, 5000, &err);
        CHECK(sdc_ucx_req_done(&s->arr[i].req));
    }
    CHECK(failed >= 1);
    /* New sends are refused with the reason. */
    sdc_ucx_req_t req;
    sdc_status_t st = send_msg(s, 99, buf, 100, &req, &err);
    CHECK_EQ_INT(st, SDC_ERR_IO);
    CHECK(strstr(err.msg, "child") != NULL);
    CHECK(sdc_ucx_req_done(&req));
    double t1 = now_s();
    side_close(s);
    CHECK_MSG(now_s() - t1 < 3, "destroy took %.1f s", now_s() - t1);
    free(buf);
}

static void test_peer_killed(void)
{
    run_pair(killed_parent, killed_child, 1);
}

/* A worker with nothing to do sleeps in poll() on the event fd and wakes
 * when a message arrives. */
static void wakeup_child(side_t *s, int fd)
{
    if (side_open(s, fd, "child", 0) != 0)
        return;
    CHECK_EQ_INT(sync_recv(s, WAIT_MS), 1);
    usleep(300 * 1000);
    sdc_ucx_req_t req;
    sdc_error_t err = {0};
    CHECK(send_msg(s, 1, (const uint8_t *)"wake", 4, &req, &err) == SDC_OK);
    CHECK(sdc_ucx_req_wait(&req, WAIT_MS, &err) == SDC_OK);
    sync_recv(s, WAIT_MS);
    side_close(s);
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static void wakeup_parent(side_t *s, int fd)
{
    if (side_open(s, fd, "parent", 1) != 0)
        return;
    int efd = -1;
    sdc_error_t err = {0};
    CHECK(sdc_ucx_efd(s->ctx, &efd, &err) == SDC_OK && efd >= 0);
    /* Let connection setup settle so the sleep below is a real idle one. */
    for (double t = now_s() + 0.1; now_s() < t;)
        sdc_ucx_progress(s->ctx);
    sync_send(s, 1);
    double t0 = now_s(), c0 = cpu_s();
    while (s->n_arr < 1 && now_s() < t0 + 5)
        CHECK(sdc_ucx_wait(s->ctx, 1000, &err) == SDC_OK);
    double wall = now_s() - t0, cpu = cpu_s() - c0;
    printf("  woke after %.0f ms, %.0f ms of CPU\n", wall * 1e3, cpu * 1e3);
    CHECK(wait_arrivals(s, 1, WAIT_MS) == 0);
    CHECK(wall > 0.2);
    CHECK_MSG(cpu < 0.5 * wall, "used %.0f ms of CPU in %.0f ms", cpu * 1e3, wall * 1e3);
    sync_send(s, 2);
    side_close(s);
}

static void test_wakeup_fd(void)
{
    run_pair(wakeup_parent, wakeup_child, 0);
}

static void test_api_errors(void)
{
    sdc_ucx_params_t p = {.name = "solo"};
    sdc_ucx_t *ctx = NULL;
    sdc_error_t err = {0};
    CHECK(sdc_ucx_create(&p, &ctx, &err) == SDC_OK);
    if (!ctx)
        return;
    sdc_ucx_ep_t *ep = NULL;
    CHECK_EQ_INT(sdc_ucx_connect(ctx, NULL, 0, "nobody", NULL, &ep, &err), SDC_ERR_INVALID_ARG);
    CHECK(ep == NULL);
    int fd;
    CHECK_EQ_INT(sdc_ucx_efd(ctx, &fd, &err), SDC_ERR_INVALID_ARG);
    /* Loopback to our own address: a header above the limit is refused. */
    const void *addr;
    size_t len;
    sdc_ucx_address(ctx, &addr, &len);
    CHECK(sdc_ucx_connect(ctx, addr, len, "self", NULL, &ep, &err) == SDC_OK);
    if (ep) {
        size_t big = sdc_ucx_max_header(ctx) + 1;
        uint8_t *hdr = calloc(1, big);
        sdc_ucx_req_t req;
        CHECK_EQ_INT(sdc_ucx_send(ep, hdr, big, NULL, 0, &req, &err), SDC_ERR_RANGE);
        CHECK(sdc_ucx_req_done(&req));
        /* Without a receive callback a message is dropped, the send completes. */
        CHECK(sdc_ucx_send(ep, hdr, 16, hdr, 16, &req, &err) == SDC_OK);
        CHECK(sdc_ucx_req_wait(&req, WAIT_MS, &err) == SDC_OK);
        free(hdr);
        CHECK(sdc_ucx_ep_close(ep, &err) == SDC_OK);
    }
    sdc_ucx_destroy(ctx);
    sdc_ucx_destroy(NULL);
}

static void test_payload_buffers(void)
{
    static const size_t sizes[] = {1, 4096, 100000, 2u << 20, (2u << 20) + 1, 37u * MiB};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        void *p = NULL;
        sdc_error_t err = {0};
        CHECK(sdc_ucx_buf_alloc(sizes[i], &p, &err) == SDC_OK);
        if (!p)
            continue;
        uintptr_t align = sizes[i] >= (2u << 20) ? (2u << 20) : 4096;
        CHECK_MSG((uintptr_t)p % align == 0, "%zu bytes at %p", sizes[i], p);
        memset(p, 0xA5, sizes[i]);
        CHECK(((uint8_t *)p)[sizes[i] - 1] == 0xA5);
        sdc_ucx_buf_free(p, sizes[i]);
    }
    void *p = NULL;
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_ucx_buf_alloc(0, &p, &err), SDC_ERR_INVALID_ARG);
    CHECK(p == NULL);
}

int main(void)
{
    /* A hang anywhere fails the binary instead of blocking the suite. */
    alarm(120);
    RUN(test_api_errors);
    RUN(test_payload_buffers);
    RUN(test_small_and_large);
    RUN(test_many_in_order);
    RUN(test_send_overlaps_compute);
    RUN(test_deferred_receive);
    RUN(test_wakeup_fd);
    RUN(test_peer_killed);
    TEST_EXIT();
}
