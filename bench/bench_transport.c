/*
 * bench_transport.c: bandwidth of sdc's UCX active-message path between two
 * processes on this host, for comparison with `ucx_perftest -t ucp_am_bw`
 * (bench/transport.sh runs both).
 *
 * The process forks: the parent sends, the child receives. Each message is
 * what a stage sends: a wire.h TensorHeader (encoded per message) and a
 * float32 "hidden" payload of the requested size, sent in place from one
 * tensor buffer with up to --window sends in flight. The receiver decodes
 * and validates every header, then lands the payload in one of --recv-bufs
 * buffers; when all are busy it holds the message (the sender's rendezvous
 * stays open) until one frees. Buffers come from sdc_ucx_buf_alloc, as a
 * worker's activation buffers should (--malloc: plain malloc, to see what
 * that costs). After --warmup messages and again after
 * --iters messages it acks; the timed phase runs from the first timed send
 * to the second ack. The last payload's CRC-32C is checked after timing.
 *
 * Prints one JSON line (--json) or a sentence. Bandwidth is in MiB/s, the
 * unit ucx_perftest calls MB/s.
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster/ucx.h"
#include "cluster/wire.h"
#include "common/tensor.h"

#define HIDDEN 1024
#define MAX_WINDOW 256
#define MAX_RECV_BUFS 64
#define TIMEOUT_MS 60000

typedef struct {
    size_t size;
    long iters, warmup;
    int window, recv_bufs;
    size_t rndv_thresh;
    int no_failure_detection;
    int use_malloc;
    int json;
} opts_t;

typedef struct {
    sdc_ucx_t *ctx;
    sdc_ucx_ep_t *ep;
    sdc_wire_limits_t lim;
    const opts_t *o;
    /* receiver */
    uint8_t *bufs[MAX_RECV_BUFS];
    sdc_ucx_req_t reqs[MAX_RECV_BUFS];
    int busy[MAX_RECV_BUFS];
    sdc_ucx_msg_t **held; /* FIFO of messages waiting for a buffer */
    long held_head, held_tail;
    long landed, bad;
    int last_slot;
    uint32_t last_crc;
    int has_last_crc;
    /* sender */
    long acks;
    int failed;
} side_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what, const sdc_error_t *err)
{
    fprintf(stderr, "bench_transport: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
    exit(1);
}

static uint8_t *payload_alloc(const opts_t *o)
{
    void *p = NULL;
    sdc_error_t err = {0};
    if (o->use_malloc)
        p = malloc(o->size);
    else if (sdc_ucx_buf_alloc(o->size, &p, &err) != SDC_OK)
        die("payload buffer", &err);
    if (!p)
        die("payload buffer", NULL);
    return p;
}

static void payload_free(const opts_t *o, uint8_t *p)
{
    if (o->use_malloc)
        free(p);
    else
        sdc_ucx_buf_free(p, o->size);
}

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

static int read_all(int fd, void *p, size_t n)
{
    uint8_t *b = p;
    while (n) {
        ssize_t r = read(fd, b, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

/* ---- the message ------------------------------------------------------------- */

/* One sample of `rows` float32 rows of width HIDDEN: a square image grid
 * with patch 1 and no text, so the header is what a real stage sends. */
typedef struct {
    Sdc__Envelope env;
    Sdc__TensorHeader th;
    Sdc__Sample s;
    Sdc__Sample *sp;
    Sdc__TensorDesc t;
    Sdc__TensorDesc *tp;
    int64_t shape[2];
} header_t;

static void header_init(header_t *h, size_t size, uint32_t crc)
{
    uint32_t rows = (uint32_t)(size / (HIDDEN * sizeof(float)));
    uint32_t side = 1;
    while (side * side < rows)
        side++;
    sdc_wire_envelope_init(&h->env, "bench-sender");
    sdc__tensor_header__init(&h->th);
    sdc__sample__init(&h->s);
    sdc__tensor_desc__init(&h->t);
    h->s.job_id = "bench";
    h->s.attempt = 1;
    h->s.steps = 1000;
    h->s.pass = SDC__PASS__PASS_COND;
    h->s.grid_h = rows / side;
    h->s.grid_w = side;
    h->s.n_img = rows;
    h->s.timestep = 500;
    h->sp = &h->s;
    h->t.name = "hidden";
    h->t.dtype = SDC__DTYPE__DTYPE_F32;
    h->t.n_shape = 2;
    h->t.shape = h->shape;
    h->shape[0] = rows;
    h->shape[1] = HIDDEN;
    h->tp = &h->t;
    h->th.n_samples = 1;
    h->th.samples = &h->sp;
    h->th.n_tensors = 1;
    h->th.tensors = &h->tp;
    h->th.checksum_case = SDC__TENSOR_HEADER__CHECKSUM_CRC32C;
    h->th.crc32c = crc;
    h->env.msg_case = SDC__ENVELOPE__MSG_TENSOR;
    h->env.tensor = &h->th;
    sdc_wire_layout(&h->th, 64, NULL);
}

static sdc_wire_limits_t bench_limits(const sdc_ucx_t *ctx)
{
    return (sdc_wire_limits_t){
        .max_header = sdc_ucx_max_header(ctx),
        .max_payload = UINT64_C(1) << 32,
        .max_samples = 1,
        .max_tensors = 1,
        .max_tokens = 1u << 20,
        .max_grid = 1u << 20,
        .max_steps = 1000,
        .max_blocks = 1,
        .hidden = HIDDEN,
        .patch = 1,
        .latent_channels = 64,
        .text_dim = 3584,
        .text_dim_2 = 1472,
        .float_dtypes = 1u << SDC_DTYPE_F32,
    };
}

/* ---- receiver ---------------------------------------------------------------- */

static void post_recv(side_t *s, sdc_ucx_msg_t *msg, int slot)
{
    sdc_error_t err = {0};
    if (sdc_ucx_msg_recv(msg, s->bufs[slot], s->o->size, &s->reqs[slot], &err) != SDC_OK)
        die("receive", &err);
    s->busy[slot] = 1;
}

static int free_slot(const side_t *s)
{
    for (int i = 0; i < s->o->recv_bufs; i++)
        if (!s->busy[i])
            return i;
    return -1;
}

static void rx_on_recv(void *arg, sdc_ucx_msg_t *msg, const void *header, size_t header_len,
                       size_t payload_len)
{
    side_t *s = arg;
    sdc_wire_msg_t wm;
    sdc_error_t err = {0};
    if (sdc_wire_decode(header, header_len, payload_len, &s->lim, NULL, NULL, &wm, &err) != SDC_OK ||
        wm.type != SDC_WIRE_TENSOR || payload_len != s->o->size) {
        fprintf(stderr, "bench_transport: rejected: %s\n", err.msg);
        s->bad++;
        sdc_ucx_msg_drop(msg);
        return;
    }
    s->last_crc = wm.env->tensor->crc32c;
    s->has_last_crc = wm.env->tensor->checksum_case == SDC__TENSOR_HEADER__CHECKSUM_CRC32C;
    sdc_wire_msg_free(&wm);
    int slot = free_slot(s);
    if (slot < 0) {
        s->held[s->held_tail++] = msg;
        return;
    }
    post_recv(s, msg, slot);
}

/* Progresses; retires landed payloads and gives freed buffers to held
 * messages, oldest first. */
static void rx_poll(side_t *s)
{
    sdc_ucx_progress(s->ctx);
    for (int i = 0; i < s->o->recv_bufs; i++) {
        if (!s->busy[i])
            continue;
        int done;
        sdc_error_t err = {0};
        if (sdc_ucx_req_test(&s->reqs[i], &done, &err) != SDC_OK)
            die("payload", &err);
        if (!done)
            continue;
        s->busy[i] = 0;
        s->landed++;
        s->last_slot = i;
        if (s->held_head < s->held_tail)
            post_recv(s, s->held[s->held_head++], i);
    }
}

static void send_ack(side_t *s, uint32_t phase)
{
    Sdc__Envelope env;
    Sdc__StepDone sd = SDC__STEP_DONE__INIT;
    sd.job_id = "bench";
    sd.attempt = 1;
    sd.step = phase;
    sdc_wire_envelope_init(&env, "bench-receiver");
    env.msg_case = SDC__ENVELOPE__MSG_STEP_DONE;
    env.step_done = &sd;
    uint8_t buf[256];
    size_t len;
    sdc_ucx_req_t req;
    sdc_error_t err = {0};
    if (sdc_wire_encode(&env, buf, sizeof(buf), &len, &err) != SDC_OK ||
        sdc_ucx_send(s->ep, buf, len, NULL, 0, &req, &err) != SDC_OK ||
        sdc_ucx_req_wait(&req, TIMEOUT_MS, &err) != SDC_OK)
        die("ack", &err);
}

static void receiver(side_t *s, int fd)
{
    const opts_t *o = s->o;
    long total = o->warmup + o->iters;
    s->held = calloc((size_t)total, sizeof(*s->held));
    for (int i = 0; i < o->recv_bufs; i++) {
        s->bufs[i] = payload_alloc(o);
        memset(s->bufs[i], 0, o->size); /* fault the pages in before timing */
    }
    uint8_t go = 1;
    write_all(fd, &go, 1);
    double end = now_s() + TIMEOUT_MS / 1000.0;
    while (s->landed < o->warmup && now_s() < end)
        rx_poll(s);
    send_ack(s, 0);
    while (s->landed < total && now_s() < end)
        rx_poll(s);
    if (s->landed < total)
        die("receiver timed out", NULL);
    send_ack(s, 1);
    int ok = !s->has_last_crc ||
             sdc_wire_crc32c(0, s->bufs[s->last_slot], o->size) == s->last_crc;
    int32_t verdict = ok && s->bad == 0 ? 0 : 1;
    write_all(fd, &verdict, sizeof(verdict));
    read_all(fd, &go, 1); /* the sender is done with us */
    for (int i = 0; i < o->recv_bufs; i++)
        payload_free(o, s->bufs[i]);
    free(s->held);
}

/* ---- sender ------------------------------------------------------------------ */

static void tx_on_recv(void *arg, sdc_ucx_msg_t *msg, const void *header, size_t header_len,
                       size_t payload_len)
{
    side_t *s = arg;
    sdc_wire_msg_t wm;
    sdc_error_t err = {0};
    if (sdc_wire_decode(header, header_len, payload_len, &s->lim, NULL, NULL, &wm, &err) == SDC_OK &&
        wm.type == SDC_WIRE_STEP_DONE)
        s->acks++;
    sdc_wire_msg_free(&wm);
    sdc_ucx_msg_drop(msg);
}

static void wait_acks(side_t *s, long n)
{
    double end = now_s() + TIMEOUT_MS / 1000.0;
    while (s->acks < n && now_s() < end)
        sdc_ucx_progress(s->ctx);
    if (s->acks < n)
        die("no ack from the receiver", NULL);
}

/* Sends n messages with up to window in flight. */
static void send_burst(side_t *s, const uint8_t *payload, header_t *h, sdc_ucx_req_t *reqs,
                       long n)
{
    const opts_t *o = s->o;
    uint8_t hdr[1024];
    for (long i = 0; i < n; i++) {
        sdc_ucx_req_t *r = &reqs[i % o->window];
        sdc_error_t err = {0};
        if (sdc_ucx_req_wait(r, TIMEOUT_MS, &err) != SDC_OK)
            die("send", &err);
        size_t len;
        h->s.step = (uint32_t)(i % 1000);
        if (sdc_wire_encode(&h->env, hdr, sizeof(hdr), &len, &err) != SDC_OK ||
            sdc_ucx_send(s->ep, hdr, len, payload, o->size, r, &err) != SDC_OK)
            die("send", &err);
    }
    for (int i = 0; i < o->window; i++) {
        sdc_error_t err = {0};
        if (sdc_ucx_req_wait(&reqs[i], TIMEOUT_MS, &err) != SDC_OK)
            die("send", &err);
    }
}

static double sender(side_t *s, int fd)
{
    const opts_t *o = s->o;
    uint8_t *payload = payload_alloc(o);
    float *f = (float *)payload;
    for (size_t i = 0; i < o->size / sizeof(float); i++)
        f[i] = (float)(i % 4093) * 0.25f;
    header_t h;
    header_init(&h, o->size, sdc_wire_crc32c(0, payload, o->size));
    sdc_ucx_req_t reqs[MAX_WINDOW];
    memset(reqs, 0, sizeof(reqs));
    uint8_t go;
    if (read_all(fd, &go, 1) != 0)
        die("receiver did not start", NULL);
    send_burst(s, payload, &h, reqs, o->warmup);
    wait_acks(s, 1);
    double t0 = now_s();
    send_burst(s, payload, &h, reqs, o->iters);
    wait_acks(s, 2);
    double t = now_s() - t0;
    int32_t verdict = 1;
    read_all(fd, &verdict, sizeof(verdict));
    if (verdict != 0)
        die("the receiver saw a bad header or payload", NULL);
    write_all(fd, &go, 1);
    payload_free(o, payload);
    return t;
}

/* ---- setup ------------------------------------------------------------------- */

static void side_open(side_t *s, const opts_t *o, int fd, int is_sender)
{
    memset(s, 0, sizeof(*s));
    s->o = o;
    sdc_ucx_params_t p = {
        .name = is_sender ? "sender" : "receiver",
        .rndv_thresh = o->rndv_thresh,
        .no_failure_detection = o->no_failure_detection,
        .on_recv = is_sender ? tx_on_recv : rx_on_recv,
        .recv_arg = s,
    };
    sdc_error_t err = {0};
    if (sdc_ucx_create(&p, &s->ctx, &err) != SDC_OK)
        die("ucx", &err);
    s->lim = bench_limits(s->ctx);
    const void *addr;
    size_t len;
    sdc_ucx_address(s->ctx, &addr, &len);
    uint64_t len64 = len, peer_len;
    if (write_all(fd, &len64, 8) || write_all(fd, addr, len) || read_all(fd, &peer_len, 8) ||
        peer_len == 0 || peer_len > 65536)
        die("address exchange", NULL);
    uint8_t *peer = malloc(peer_len);
    if (read_all(fd, peer, peer_len))
        die("address exchange", NULL);
    if (sdc_ucx_connect(s->ctx, peer, peer_len, is_sender ? "receiver" : "sender", NULL, &s->ep,
                        &err) != SDC_OK)
        die("connect", &err);
    free(peer);
}

static size_t parse_size(const char *arg)
{
    char *end;
    unsigned long long v = strtoull(arg, &end, 10);
    if (*end == 'K' || *end == 'k')
        v <<= 10, end++;
    else if (*end == 'M' || *end == 'm')
        v <<= 20, end++;
    if (*end || v == 0)
        return 0;
    return (size_t)v;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_transport --size BYTES[K|M] [--iters N] [--warmup N] [--window N]\n"
            "                       [--recv-bufs N] [--rndv-thresh BYTES] [--no-failure-detection]\n"
            "                       [--malloc] [--json]\n"
            "Sends N tensor messages of BYTES payload from a parent to a forked child over\n"
            "sdc's UCX active messages and prints the bandwidth in MiB/s. The size must be\n"
            "a multiple of %d bytes (float32 rows of width %d).\n",
            (int)(HIDDEN * sizeof(float)), HIDDEN);
}

static void parse_opts(int argc, char **argv, opts_t *o)
{
    static const struct option longopts[] = {
        {"size", required_argument, 0, 's'},       {"iters", required_argument, 0, 'n'},
        {"warmup", required_argument, 0, 'w'},     {"window", required_argument, 0, 'W'},
        {"recv-bufs", required_argument, 0, 'r'},  {"rndv-thresh", required_argument, 0, 't'},
        {"no-failure-detection", no_argument, 0, 'E'}, {"malloc", no_argument, 0, 'm'},
        {"json", no_argument, 0, 'j'},             {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    *o = (opts_t){.iters = 100, .warmup = 10, .window = 32, .recv_bufs = 4};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 's': o->size = parse_size(optarg); break;
        case 'n': o->iters = atol(optarg); break;
        case 'w': o->warmup = atol(optarg); break;
        case 'W': o->window = atoi(optarg); break;
        case 'r': o->recv_bufs = atoi(optarg); break;
        case 't': o->rndv_thresh = parse_size(optarg); break;
        case 'E': o->no_failure_detection = 1; break;
        case 'm': o->use_malloc = 1; break;
        case 'j': o->json = 1; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (!o->size || o->size % (HIDDEN * sizeof(float)) || o->iters < 1 || o->warmup < 1 ||
        o->window < 1 || o->window > MAX_WINDOW || o->recv_bufs < 1 ||
        o->recv_bufs > MAX_RECV_BUFS) {
        usage(stderr);
        exit(2);
    }
}

int main(int argc, char **argv)
{
    opts_t o;
    parse_opts(argc, argv, &o);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        die("socketpair", NULL);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork", NULL);
    side_t s;
    if (pid == 0) {
        close(sv[0]);
        side_open(&s, &o, sv[1], 0);
        receiver(&s, sv[1]);
        sdc_ucx_destroy(s.ctx);
        _exit(0);
    }
    close(sv[1]);
    side_open(&s, &o, sv[0], 1);
    double t = sender(&s, sv[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    sdc_ucx_destroy(s.ctx);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("the receiver failed", NULL);
    double mib_s = (double)o.size * o.iters / t / (1024.0 * 1024.0);
    if (o.json)
        printf("{\"impl\": \"sdc\", \"size_bytes\": %zu, \"iters\": %ld, \"warmup\": %ld, "
               "\"window\": %d, \"recv_bufs\": %d, \"rndv_thresh\": %zu, "
               "\"failure_detection\": %s, \"buffers\": \"%s\", \"seconds\": %.6f, "
               "\"mib_s\": %.2f}\n",
               o.size, o.iters, o.warmup, o.window, o.recv_bufs, o.rndv_thresh,
               o.no_failure_detection ? "false" : "true", o.use_malloc ? "malloc" : "sdc_ucx_buf_alloc",
               t, mib_s);
    else
        printf("%zu bytes x %ld: %.3f s, %.1f MiB/s\n", o.size, o.iters, t, mib_s);
    return 0;
}
