/*
 * runtime.c: the life of one cluster process (see runtime.h): start-up and
 * bootstrap, the main loop (receive queue, role work, sends in flight,
 * heartbeat, drain) and shut-down. The roles' logic lives in role_*.c.
 *
 * Receiving: the UCX callback validates the header (wire.h) against the
 * model's limits and the role's job table and either drops the message
 * (logged) or starts receiving its payload into a fresh buffer. The main
 * loop hands messages to the role in arrival order once their payload has
 * landed and passed its checksum.
 */
#include "rt_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/tensor.h"
#include "common/timer.h"
#include "model/pipeline.h"

#define RT_IDLE_WAIT_MS 50
#define RT_HEARTBEAT_S 1.0
#define RT_LEADER_CACHE_S 1.0
#define RT_PEER_RETRY_MS 200
#define RT_TEARDOWN_WAIT_MS 2000
/* A worker stopped by a signal stays this long idle before it exits: the
 * coordinator reads the registry every 0.5 s, and work placed before it
 * saw the node draining may still be on its way here. */
#define RT_DRAIN_QUIET_S 2.0

/* ---- small helpers ----------------------------------------------------------- */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static const sdc_role_ops_t *role_ops(sdc_role_t r)
{
    static const sdc_role_ops_t *const table[SDC_ROLE_COUNT] = {
        [SDC_ROLE_COORDINATOR] = &sdc_role_coordinator,
        [SDC_ROLE_TEXT_ENCODER] = &sdc_role_text_encoder,
        [SDC_ROLE_DIT_STAGE] = &sdc_role_dit_stage,
        [SDC_ROLE_VAE] = &sdc_role_vae,
        [SDC_ROLE_REFINER] = &sdc_role_refiner,
    };
    return (unsigned)r < SDC_ROLE_COUNT ? table[r] : NULL;
}

/* ---- receiving ---------------------------------------------------------------- */

static sdc_wire_job_state_t job_fn(void *arg, const char *job_id, uint32_t attempt)
{
    sdc_rt_t *rt = arg;
    if (!rt->rs)
        return SDC_WIRE_JOB_UNKNOWN;
    return rt->role->job_state(rt->rs, job_id, attempt);
}

static void inbox_push(sdc_rt_t *rt, sdc_rt_msg_t *m)
{
    m->next = NULL;
    if (rt->in_tail)
        rt->in_tail->next = m;
    else
        rt->in_head = m;
    rt->in_tail = m;
}

static void on_recv(void *arg, sdc_ucx_msg_t *msg, const void *header, size_t header_len,
                    size_t payload_len)
{
    sdc_rt_t *rt = arg;
    sdc_error_t err = {0};
    rt->metrics.bytes_received += header_len + payload_len;
    sdc_rt_msg_t *m = calloc(1, sizeof(*m));
    if (!m) {
        SDC_ERROR("%s: out of memory receiving a message: dropped", rt->id);
        sdc_ucx_msg_drop(msg);
        return;
    }
    if (sdc_wire_decode(header, header_len, payload_len, &rt->lim, job_fn, rt, &m->w, &err) !=
        SDC_OK) {
        rt->dropped++;
        SDC_WARN("%s: dropped a message (%s): %s", rt->id, sdc_wire_fault_name(m->w.fault),
                 err.msg);
        sdc_ucx_msg_drop(msg);
        free(m);
        return;
    }
    if (payload_len == 0) {
        sdc_ucx_msg_drop(msg);
        inbox_push(rt, m);
        return;
    }
    void *buf;
    if (sdc_ucx_buf_alloc(payload_len, &buf, &err) != SDC_OK) {
        SDC_ERROR("%s: cannot receive a %zu-byte payload from %s: %s", rt->id, payload_len,
                  m->w.env->sender, err.msg);
        sdc_ucx_msg_drop(msg);
        sdc_rt_msg_free(m);
        return;
    }
    m->payload = buf;
    m->len = payload_len;
    if (sdc_ucx_msg_recv(msg, m->payload, payload_len, &m->req, &err) != SDC_OK) {
        SDC_ERROR("%s: cannot receive a %zu-byte payload from %s: %s", rt->id, payload_len,
                  m->w.env->sender, err.msg);
        sdc_rt_msg_free(m);
        return;
    }
    inbox_push(rt, m);
}

static void on_peer_failed(void *arg, sdc_ucx_ep_t *ep, sdc_status_t why)
{
    sdc_rt_t *rt = arg;
    /* Peers going away while this node stops are the normal end of a run. */
    sdc_log(rt->stopping ? SDC_LOG_INFO : SDC_LOG_WARN, "%s: peer %s failed (%s)", rt->id,
            sdc_ucx_ep_peer(ep), sdc_status_str(why));
    /* The role hears of it from the main loop, not from inside UCX. */
    for (int i = 0; i < rt->cf->n_nodes; i++)
        if (rt->peers[i].ep == ep)
            rt->peer_down[i] = 1;
}

void sdc_rt_msg_free(sdc_rt_msg_t *m)
{
    if (!m)
        return;
    sdc_wire_msg_free(&m->w);
    sdc_ucx_buf_free(m->payload, m->len);
    free(m);
}

void sdc_rt_msg_list_free(sdc_rt_msg_t **head)
{
    while (*head) {
        sdc_rt_msg_t *m = *head;
        *head = m->next;
        sdc_rt_msg_free(m);
    }
}

void sdc_rt_queue_push(sdc_rt_queue_t *q, sdc_rt_msg_t *m)
{
    m->next = NULL;
    if (q->tail)
        q->tail->next = m;
    else
        q->head = m;
    q->tail = m;
    q->n++;
}

sdc_rt_msg_t *sdc_rt_queue_pop(sdc_rt_queue_t *q)
{
    sdc_rt_msg_t *m = q->head;
    if (!m)
        return NULL;
    q->head = m->next;
    if (!q->head)
        q->tail = NULL;
    q->n--;
    return m;
}

void sdc_rt_queue_free(sdc_rt_queue_t *q)
{
    sdc_rt_msg_list_free(&q->head);
    q->tail = NULL;
    q->n = 0;
}

static void handle_shutdown(sdc_rt_t *rt, sdc_rt_msg_t *m)
{
    const char *from = m->w.env->sender;
    int node = sdc_rt_node_index(rt->cf, from);
    if (node < 0 || rt->cf->nodes[node].role != SDC_ROLE_COORDINATOR) {
        sdc_rt_drop(rt, m, "shutdown from %s, which is not a coordinator", from);
    } else if (!rt->stopping) {
        SDC_INFO("%s: shutdown requested by %s: %s", rt->id, from, m->w.env->shutdown->reason);
        rt->stopping = 1;
    }
    sdc_rt_msg_free(m);
}

/* Hands landed messages to the role, in arrival order. */
static int deliver(sdc_rt_t *rt)
{
    int did = 0;
    while (rt->in_head) {
        sdc_rt_msg_t *m = rt->in_head;
        sdc_error_t err = {0};
        int done;
        sdc_status_t st = sdc_ucx_req_test(&m->req, &done, &err);
        if (!done)
            break;
        rt->in_head = m->next;
        if (!rt->in_head)
            rt->in_tail = NULL;
        did = 1;
        if (st != SDC_OK) {
            SDC_WARN("%s: lost the payload of a %s from %s: %s", rt->id,
                     sdc_wire_type_name(m->w.type), m->w.env->sender, err.msg);
            sdc_rt_msg_free(m);
            continue;
        }
        if (m->w.type == SDC_WIRE_TENSOR &&
            sdc_wire_check_payload(&m->w, m->payload, m->len, &err) != SDC_OK) {
            rt->dropped++;
            SDC_WARN("%s: dropped a tensor from %s (%s): %s", rt->id, m->w.env->sender,
                     sdc_wire_fault_name(m->w.fault), err.msg);
            sdc_rt_msg_free(m);
            continue;
        }
        if (m->w.type == SDC_WIRE_SHUTDOWN) {
            handle_shutdown(rt, m);
            continue;
        }
        rt->role->on_message(rt, rt->rs, m);
    }
    return did;
}

static void report_peer_failures(sdc_rt_t *rt)
{
    for (int i = 0; i < rt->cf->n_nodes; i++) {
        if (!rt->peer_down[i])
            continue;
        rt->peer_down[i] = 0;
        if (rt->role->peer_failed)
            rt->role->peer_failed(rt, rt->rs, i);
    }
}

/* ---- sending ----------------------------------------------------------------- */

static void reap_sends(sdc_rt_t *rt)
{
    sdc_rt_send_t **pp = &rt->out;
    while (*pp) {
        sdc_rt_send_t *s = *pp;
        sdc_error_t err = {0};
        int done;
        sdc_status_t st = sdc_ucx_req_test(&s->req, &done, &err);
        if (!done) {
            pp = &s->next;
            continue;
        }
        if (st != SDC_OK) {
            char to[SDC_JOB_ID_MAX + 1];
            sdc_rt_node_id(rt->cf, s->node, to);
            SDC_WARN("%s: a send to %s failed: %s", rt->id, to, err.msg);
            for (int i = 0; i < s->n_jobs; i++)
                sdc_rt_job_lost(rt, s->jobs[i].id, s->jobs[i].attempt, err.msg);
        }
        *pp = s->next;
        sdc_ucx_buf_free(s->payload, s->len);
        free(s->jobs);
        free(s);
    }
}

sdc_status_t sdc_rt_send(sdc_rt_t *rt, int node, const Sdc__Envelope *env, void *payload,
                         size_t len, sdc_error_t *err)
{
    return sdc_rt_send_jobs(rt, node, env, payload, len, NULL, 0, err);
}

sdc_status_t sdc_rt_send_jobs(sdc_rt_t *rt, int node, const Sdc__Envelope *env, void *payload,
                              size_t len, const sdc_rt_jobref_t *jobs, int n_jobs,
                              sdc_error_t *err)
{
    sdc_ucx_ep_t *ep;
    size_t hl = sdc_wire_frame_size(env);
    uint8_t *hdr = malloc(hl);
    sdc_rt_send_t *s = calloc(1, sizeof(*s));
    sdc_status_t st = SDC_OK;
    if (s && n_jobs > 0) {
        s->jobs = malloc((size_t)n_jobs * sizeof(*jobs));
        if (s->jobs) {
            memcpy(s->jobs, jobs, (size_t)n_jobs * sizeof(*jobs));
            s->n_jobs = n_jobs;
        }
    }
    if (!hdr || !s || (n_jobs > 0 && !s->jobs)) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory sending to node %d", node);
        goto err_free;
    }
    if ((st = sdc_wire_encode(env, hdr, hl, &hl, err)) != SDC_OK ||
        (st = sdc_rt_peer(rt, node, &ep, err)) != SDC_OK)
        goto err_free;
    s->payload = payload;
    s->len = len;
    s->node = node;
    st = sdc_ucx_send(ep, hdr, hl, payload, len, &s->req, err);
    free(hdr);
    if (st == SDC_OK)
        rt->metrics.bytes_sent += hl + len;
    if (st != SDC_OK) {
        free(s->jobs);
        free(s);
        sdc_ucx_buf_free(payload, len);
        return st;
    }
    s->next = rt->out;
    rt->out = s;
    return SDC_OK;

err_free:
    free(hdr);
    if (s)
        free(s->jobs);
    free(s);
    sdc_ucx_buf_free(payload, len);
    return st;
}

/* ---- peers ------------------------------------------------------------------- */

/* Copies node's registered address from Redis into its peer slot. */
static sdc_status_t resolve(sdc_rt_t *rt, int node, sdc_error_t *err)
{
    char id[SDC_JOB_ID_MAX + 1];
    sdc_node_t *nodes = NULL;
    size_t n = 0;
    sdc_rt_node_id(rt->cf, node, id);
    sdc_status_t st = sdc_node_list(rt->redis, &nodes, &n, err);
    if (st != SDC_OK)
        return st;
    st = sdc_error_set(err, SDC_ERR_NOT_FOUND, "node %s is not registered in Redis", id);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(nodes[i].id, id) != 0 || nodes[i].address_len == 0)
            continue;
        sdc_rt_peer_t *p = &rt->peers[node];
        p->addr = nodes[i].address;
        p->addr_len = nodes[i].address_len;
        nodes[i].address = NULL;
        st = SDC_OK;
        break;
    }
    sdc_nodes_free(nodes, n);
    return st;
}

sdc_status_t sdc_rt_peer(sdc_rt_t *rt, int node, sdc_ucx_ep_t **ep, sdc_error_t *err)
{
    if (node < 0 || node >= rt->cf->n_nodes)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "no node %d in the cluster file", node);
    sdc_rt_peer_t *p = &rt->peers[node];
    if (p->ep && sdc_ucx_ep_status(p->ep) == SDC_OK) {
        *ep = p->ep;
        return SDC_OK;
    }
    if (p->ep) {
        /* A failed endpoint stays with the UCX context until it is
         * destroyed: requests on it may still be finishing. On the Redis
         * path the peer may have restarted at a new address. */
        p->ep = NULL;
        if (!rt->mpi) {
            free(p->addr);
            p->addr = NULL;
        }
    }
    sdc_status_t st;
    if (!p->addr && (st = resolve(rt, node, err)) != SDC_OK)
        return st;
    char id[SDC_JOB_ID_MAX + 1];
    sdc_rt_node_id(rt->cf, node, id);
    st = sdc_ucx_connect(rt->ucx, p->addr, p->addr_len, id, NULL, &p->ep, err);
    if (st != SDC_OK && !rt->mpi) {
        /* The registration may be a dead process's: look it up again next
         * time, when a restarted node has registered its new address. */
        free(p->addr);
        p->addr = NULL;
    }
    if (st != SDC_OK)
        return st;
    *ep = p->ep;
    return SDC_OK;
}

sdc_status_t sdc_rt_wait_peers(sdc_rt_t *rt, const int *nodes, int n, sdc_error_t *err)
{
    double deadline = sdc_now() + rt->o.peer_timeout_ms / 1000.0;
    for (;;) {
        sdc_error_t e = {0};
        int missing = -1;
        for (int i = 0; i < n && missing < 0; i++) {
            sdc_ucx_ep_t *ep;
            if (sdc_rt_peer(rt, nodes[i], &ep, &e) != SDC_OK)
                missing = i;
        }
        if (missing < 0)
            return SDC_OK;
        if (*rt->stop)
            return sdc_error_set(err, SDC_ERR_IO, "stopped while waiting for peers");
        if (sdc_now() > deadline)
            return sdc_error_set(err, e.code ? e.code : SDC_ERR_NOT_FOUND,
                                 "peers did not appear within %d ms: %s", rt->o.peer_timeout_ms,
                                 e.msg);
        sdc_rt_service(rt);
        sleep_ms(RT_PEER_RETRY_MS);
    }
}

/* ---- leader and heartbeat ----------------------------------------------------- */

int sdc_rt_leader(sdc_rt_t *rt)
{
    double now = sdc_now();
    if (rt->leader >= 0 && now - rt->leader_checked < RT_LEADER_CACHE_S)
        return rt->leader;
    char id[SDC_JOB_ID_MAX + 1];
    int present = 0;
    sdc_error_t err = {0};
    rt->leader_checked = now;
    rt->leader = -1;
    if (sdc_leader_get(rt->redis, id, &present, &err) != SDC_OK) {
        SDC_WARN("%s: reading the leader: %s", rt->id, err.msg);
        return -1;
    }
    if (present)
        rt->leader = sdc_rt_node_index(rt->cf, id);
    return rt->leader;
}

void sdc_rt_tell_leader(sdc_rt_t *rt, const Sdc__Envelope *env)
{
    sdc_error_t err = {0};
    /* A second try with a fresh lookup: the lease may just have moved. */
    for (int attempt = 0; attempt < 2; attempt++) {
        int leader = sdc_rt_leader(rt);
        if (leader >= 0 && sdc_rt_send(rt, leader, env, NULL, 0, &err) == SDC_OK)
            return;
        rt->leader = -1;
    }
    SDC_WARN("%s: the coordinator was not told (%s); it will read the job's state from Redis",
             rt->id, err.msg[0] ? err.msg : "no coordinator holds the lease");
}

/* The node's counters, beside its registration and with the same TTL. */
static sdc_status_t publish_metrics(sdc_rt_t *rt, sdc_error_t *err)
{
    double now = sdc_now();
    sdc_metrics_t *m = &rt->metrics;
    /* A heartbeat in the middle of a long unit of work (sdc_rt_service)
     * counts the work done so far into this interval. */
    if (rt->work_since > 0) {
        m->busy_s += now - rt->work_since;
        rt->work_since = now;
    }
    if (rt->published_at > 0 && now > rt->published_at) {
        double r = (m->busy_s - rt->published_busy_s) / (now - rt->published_at);
        m->busy_ratio = r < 0 ? 0 : r > 1 ? 1 : r;
    }
    rt->published_at = now;
    rt->published_busy_s = m->busy_s;
    m->messages_dropped = rt->dropped;
    int pl = rt->me->pipeline;
    sdc_metrics_source_t src = {rt->id, sdc_role_name(rt->me->role), pl, rt->me->stage,
                                pl >= 0 ? rt->cf->pipelines[pl].n_stages : -1};
    return sdc_metrics_publish(rt->redis, &src, m, rt->o.heartbeat_ttl_ms, err);
}

static void node_record(sdc_rt_t *rt, sdc_node_t *n)
{
    const void *addr;
    memset(n, 0, sizeof(*n));
    memcpy(n->id, rt->id, sizeof(n->id));
    n->role = sdc_rt_node_role(rt->me->role);
    sdc_ucx_address(rt->ucx, &addr, &n->address_len);
    n->address = (unsigned char *)addr;
    n->pipeline = rt->me->pipeline;
    n->stage = rt->me->stage;
    n->load = rt->role->load && rt->rs ? rt->role->load(rt->rs) : 0.0;
    n->draining = rt->draining;
}

/* The first registration, from the main thread (its failure stops the
 * start), then the heartbeat thread. */
static sdc_status_t register_node(sdc_rt_t *rt, sdc_error_t *err)
{
    sdc_node_t n;
    node_record(rt, &n);
    sdc_status_t st = sdc_node_register(rt->redis, &n, rt->o.heartbeat_ttl_ms, err);
    if (st == SDC_OK)
        st = publish_metrics(rt, err);
    if (st != SDC_OK)
        return st;
    sdc_redis_opts_t ro = {.url = rt->cf->redis_url, .prefix = rt->cf->prefix};
    return sdc_rt_heart_start(&rt->heart, &ro, &n, rt->o.heartbeat_ttl_ms, err);
}

static void heartbeat_if_due(sdc_rt_t *rt, double now)
{
    if (now < rt->next_heartbeat || !rt->heart)
        return;
    rt->next_heartbeat = now + RT_HEARTBEAT_S;
    sdc_rt_heart_set(rt->heart, rt->role->load && rt->rs ? rt->role->load(rt->rs) : 0.0,
                     rt->draining);
    /* The counters go from the main thread, which owns them; liveness does
     * not depend on it (the heartbeat thread registers the node). */
    sdc_error_t err = {0};
    if (publish_metrics(rt, &err) != SDC_OK)
        SDC_DEBUG("%s: metrics not published: %s", rt->id, err.msg);
}

void sdc_rt_service(sdc_rt_t *rt)
{
    while (sdc_ucx_progress(rt->ucx))
        ;
    reap_sends(rt);
    heartbeat_if_due(rt, sdc_now());
}

/* ---- start-up ----------------------------------------------------------------- */

static sdc_status_t load_configs(sdc_rt_t *rt, sdc_error_t *err)
{
    char path[4096];
    const char *model = rt->cf->model;
    sdc_status_t st;
    snprintf(path, sizeof(path), "%s/transformer/config.json", model);
    if ((st = sdc_dit_config_load(&rt->dc, path, err)) != SDC_OK)
        return sdc_error_wrap(err, "model %s", model);
    snprintf(path, sizeof(path), "%s/vae/config.json", model);
    if ((st = sdc_vae_config_load(&rt->vc, path, err)) != SDC_OK)
        return sdc_error_wrap(err, "model %s", model);
    if (rt->dc.patch_size[0] != rt->dc.patch_size[1])
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "model %s: the cluster needs a square patch, the model's is %lldx%lld",
                             model, (long long)rt->dc.patch_size[0],
                             (long long)rt->dc.patch_size[1]);
    st = sdc_cluster_resolve(rt->cf, sdc_dit_total_blocks(&rt->dc), err);
    if (st != SDC_OK)
        return sdc_error_wrap(err, "%s", rt->o.cluster_path);
    return SDC_OK;
}

/* The node index: --node, else the MPI rank (MPI_Init happens here). */
static sdc_status_t pick_node(sdc_rt_t *rt, sdc_error_t *err)
{
    int use_mpi = rt->o.mpi || (rt->o.node < 0 && sdc_mpi_env_rank() >= 0);
    if (!use_mpi) {
        if (rt->o.node < 0)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "--node is required (or start the cluster under mpirun)");
        rt->self = rt->o.node;
    } else {
        int rank, size;
        sdc_status_t st = sdc_mpi_init(&rt->mpi, &rank, &size, err);
        if (st != SDC_OK)
            return st;
        if (size != rt->cf->n_nodes)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "mpirun started %d ranks but %s describes %d nodes", size,
                                 rt->o.cluster_path, rt->cf->n_nodes);
        if (rt->o.node >= 0 && rt->o.node != rank)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "--node %d differs from the MPI rank %d", rt->o.node, rank);
        rt->self = rank;
    }
    if (rt->self >= rt->cf->n_nodes)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "node %d: %s has nodes 0..%d", rt->self,
                             rt->o.cluster_path, rt->cf->n_nodes - 1);
    rt->me = &rt->cf->nodes[rt->self];
    if (rt->o.coordinator_only && rt->me->role != SDC_ROLE_COORDINATOR)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "node %d of %s is a %s, not a coordinator (start it with sdc-worker)",
                             rt->self, rt->o.cluster_path, sdc_role_name(rt->me->role));
    rt->role = role_ops(rt->me->role);
    if (!rt->role)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED, "node %d: role %s has no implementation",
                             rt->self, sdc_role_name(rt->me->role));
    sdc_rt_node_id(rt->cf, rt->self, rt->id);
    return SDC_OK;
}

/* Bounds on what this process accepts, from the model and the cluster file. */
static void set_limits(sdc_rt_t *rt)
{
    sdc_wire_limits_t *l = &rt->lim;
    const sdc_dit_config_t *dc = &rt->dc;
    uint32_t patch = (uint32_t)dc->patch_size[0];
    int max_side = 0, all_listed = 1;
    for (int p = 0; p < rt->cf->n_pipelines; p++) {
        const sdc_cf_pipeline_t *pl = &rt->cf->pipelines[p];
        all_listed &= pl->n_sizes > 0;
        for (int s = 0; s < pl->n_sizes; s++)
            for (int d = 0; d < 2; d++)
                max_side = pl->sizes[s][d] > max_side ? pl->sizes[s][d] : max_side;
    }
    if (!all_listed || max_side > SDC_MAX_IMAGE_SIDE)
        max_side = SDC_MAX_IMAGE_SIDE;
    uint32_t grid = (uint32_t)(max_side / rt->vc.spatial_compression_ratio);
    uint64_t img_tokens = (uint64_t)(grid / patch) * (grid / patch);
    int mb = rt->cf->micro_batch > 2 ? rt->cf->micro_batch : 2;
    memset(l, 0, sizeof(*l));
    l->max_header = sdc_ucx_max_header(rt->ucx);
    l->max_samples = mb > (int)SDC_WIRE_MAX_SAMPLES ? SDC_WIRE_MAX_SAMPLES : (uint32_t)mb;
    l->max_tensors = 4 * l->max_samples;
    l->max_tokens = (uint32_t)(img_tokens + SDC_RT_MAX_TEXT_TOKENS);
    l->max_grid = grid;
    l->max_steps = SDC_RT_MAX_STEPS;
    l->max_blocks = (uint32_t)sdc_dit_total_blocks(dc);
    l->hidden = (uint32_t)sdc_dit_hidden(dc);
    l->patch = patch;
    l->latent_channels = (uint32_t)dc->in_channels;
    l->text_dim = (uint32_t)dc->text_embed_dim;
    l->text_dim_2 = (uint32_t)dc->text_embed_2_dim;
    l->float_dtypes = 1u << SDC_DTYPE_F32;
    l->image_factor = (uint32_t)rt->vc.spatial_compression_ratio;
    /* The largest sample: activations of max_tokens rows (text embeddings
     * are smaller), plus its other tensors (temb; at step 0 of an
     * image-to-image job a latent) and alignment; or a decoded RGB8 image
     * (VAE node to refiner). */
    uint64_t per_sample = (uint64_t)l->max_tokens * (l->hidden + 2) * sizeof(float) +
                          (uint64_t)(l->hidden + 2 * SDC_RT_ALIGN) * 4 +
                          (uint64_t)l->latent_channels * grid * grid * sizeof(float);
    uint64_t image = (uint64_t)grid * l->image_factor * grid * l->image_factor * 3 + SDC_RT_ALIGN;
    if (image > per_sample)
        per_sample = image;
    l->max_payload = per_sample * l->max_samples;
}

static sdc_status_t open_backend(sdc_rt_t *rt, sdc_error_t *err)
{
    if (rt->me->role == SDC_ROLE_COORDINATOR)
        return SDC_OK;
    sdc_backend_config_t bc = {.name = rt->cf->backend, .n_threads = rt->o.threads, .device = 0};
    return sdc_backend_create(&bc, &rt->be, err);
}

static sdc_status_t open_transport(sdc_rt_t *rt, sdc_error_t *err)
{
    sdc_ucx_params_t up = {
        .name = rt->id,
        .wakeup = 1,
        .on_recv = on_recv,
        .recv_arg = rt,
        .on_peer_failed = on_peer_failed,
        .peer_arg = rt,
    };
    sdc_status_t st = sdc_ucx_create(&up, &rt->ucx, err);
    if (st != SDC_OK)
        return st;
    rt->peers = calloc((size_t)rt->cf->n_nodes, sizeof(*rt->peers));
    rt->peer_down = calloc((size_t)rt->cf->n_nodes, 1);
    if (!rt->peers || !rt->peer_down)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    set_limits(rt);
    return SDC_OK;
}

static sdc_status_t open_redis(sdc_rt_t *rt, sdc_error_t *err)
{
    sdc_redis_opts_t ro = {.url = rt->cf->redis_url, .prefix = rt->cf->prefix};
    sdc_status_t st = sdc_redis_open(&rt->redis, &ro, err);
    if (st != SDC_OK)
        return sdc_error_wrap(err, "Redis %s", rt->cf->redis_url);
    sdc_jobs_opts_t jo = {.max_image_bytes = (size_t)rt->cf->max_image_bytes};
    return sdc_jobs_init(&rt->q, rt->redis, &jo, err);
}

/* MPI_Allgather of every rank's UCX address: the whole peer table at once. */
static sdc_status_t mpi_exchange(sdc_rt_t *rt, sdc_error_t *err)
{
    const void *addr;
    size_t len, *lens;
    uint8_t **blobs;
    sdc_ucx_address(rt->ucx, &addr, &len);
    sdc_status_t st = sdc_mpi_allgather_blobs(rt->mpi, addr, len, SDC_WIRE_ADDRESS_MAX, &blobs,
                                              &lens, err);
    if (st != SDC_OK)
        return st;
    for (int i = 0; i < rt->cf->n_nodes; i++) {
        rt->peers[i].addr = blobs[i];
        rt->peers[i].addr_len = lens[i];
        blobs[i] = NULL;
    }
    sdc_mpi_blobs_free(blobs, lens, rt->cf->n_nodes);
    return SDC_OK;
}

static sdc_status_t start(sdc_rt_t *rt, sdc_error_t *err)
{
    int peers[SDC_CF_MAX_NODES];
    sdc_status_t st;
    rt->cf = calloc(1, sizeof(*rt->cf));
    if (!rt->cf)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    if ((st = sdc_cluster_load(rt->cf, rt->o.cluster_path, 0, err)) != SDC_OK ||
        (st = load_configs(rt, err)) != SDC_OK || (st = pick_node(rt, err)) != SDC_OK ||
        (st = open_backend(rt, err)) != SDC_OK || (st = open_transport(rt, err)) != SDC_OK)
        return st;
    if (rt->mpi && (st = mpi_exchange(rt, err)) != SDC_OK)
        return st;
    if ((st = open_redis(rt, err)) != SDC_OK)
        return st;
    SDC_INFO("%s: node %d of %s, bootstrap %s", rt->id, rt->self, rt->o.cluster_path,
             rt->mpi ? "MPI" : "Redis");
    if ((st = rt->role->open(rt, &rt->rs, err)) != SDC_OK)
        return sdc_error_wrap(err, "%s", rt->id);
    if ((st = register_node(rt, err)) != SDC_OK)
        return sdc_error_wrap(err, "registering %s", rt->id);
    rt->next_heartbeat = sdc_now() + RT_HEARTBEAT_S;
    int n = rt->role->peers(rt, rt->rs, peers, SDC_CF_MAX_NODES);
    if ((st = sdc_rt_wait_peers(rt, peers, n, err)) != SDC_OK)
        return sdc_error_wrap(err, "%s", rt->id);
    return SDC_OK;
}

/* ---- main loop ----------------------------------------------------------------- */

static void serve(sdc_rt_t *rt)
{
    SDC_INFO("%s: serving", rt->id);
    for (;;) {
        double now = sdc_now();
        if (!rt->stopping && *rt->stop) {
            SDC_INFO("%s: stop requested", rt->id);
            rt->stopping = 1;
            rt->drain_quiet = rt->me->role != SDC_ROLE_COORDINATOR;
        }
        if (rt->stopping && !rt->draining) {
            rt->draining = 1;
            rt->drain_deadline = now + rt->o.drain_timeout_ms / 1000.0;
            SDC_INFO("%s: draining (up to %d ms)", rt->id, rt->o.drain_timeout_ms);
            /* At once: the coordinator stops sending new work here. */
            rt->next_heartbeat = now;
            heartbeat_if_due(rt, now);
        }
        while (sdc_ucx_progress(rt->ucx))
            ;
        int did = deliver(rt);
        report_peer_failures(rt);
        rt->work_since = sdc_now();
        int worked = rt->role->work(rt, rt->rs);
        if (worked)
            rt->metrics.busy_s += sdc_now() - rt->work_since;
        rt->work_since = 0;
        did |= worked;
        reap_sends(rt);
        heartbeat_if_due(rt, now);
        if (rt->role->tick)
            rt->role->tick(rt, rt->rs, now);
        if (rt->draining) {
            int idle = !rt->role->busy(rt, rt->rs) && !rt->in_head && !rt->out;
            if (!idle)
                rt->idle_since = 0;
            else if (rt->idle_since == 0)
                rt->idle_since = now;
            /* Without a leader nothing new comes (the whole cluster stops). */
            if (idle && (!rt->drain_quiet || now - rt->idle_since >= RT_DRAIN_QUIET_S ||
                         sdc_rt_leader(rt) < 0))
                break;
            if (now > rt->drain_deadline) {
                SDC_WARN("%s: drain timed out with work left", rt->id);
                break;
            }
        }
        if (!did) {
            sdc_error_t err = {0};
            if (sdc_ucx_wait(rt->ucx, RT_IDLE_WAIT_MS, &err) != SDC_OK)
                SDC_WARN("%s: waiting for messages: %s", rt->id, err.msg);
        }
    }
}

/* ---- shut-down ----------------------------------------------------------------- */

static void finish_requests(sdc_rt_t *rt)
{
    double deadline = sdc_now() + RT_TEARDOWN_WAIT_MS / 1000.0;
    while (rt->out && sdc_now() < deadline) {
        sdc_ucx_progress(rt->ucx);
        reap_sends(rt);
    }
    while (rt->in_head) {
        sdc_rt_msg_t *m = rt->in_head;
        sdc_error_t err;
        rt->in_head = m->next;
        sdc_ucx_req_wait(&m->req, RT_TEARDOWN_WAIT_MS, &err);
        if (sdc_ucx_req_done(&m->req)) {
            sdc_rt_msg_free(m);
        } else {
            /* UCX may still write into the buffer: leave it to the exit. */
            sdc_wire_msg_free(&m->w);
        }
    }
    rt->in_tail = NULL;
}

static void stop_all(sdc_rt_t *rt)
{
    sdc_error_t err = {0};
    if (rt->rs)
        rt->role->close(rt, rt->rs);
    rt->rs = NULL;
    if (rt->ucx)
        finish_requests(rt);
    /* Sends that outlived the bound are abandoned with the context. */
    for (sdc_rt_send_t *s = rt->out, *next; s; s = next) {
        next = s->next;
        free(s->jobs);
        free(s);
    }
    rt->out = NULL;
    sdc_rt_heart_stop(rt->heart);
    rt->heart = NULL;
    if (rt->redis && rt->me && sdc_node_remove(rt->redis, rt->id, &err) != SDC_OK)
        SDC_WARN("%s: deregistering: %s", rt->id, err.msg);
    sdc_ucx_destroy(rt->ucx);
    for (int i = 0; rt->peers && i < rt->cf->n_nodes; i++)
        free(rt->peers[i].addr);
    free(rt->peers);
    free(rt->peer_down);
    if (rt->redis)
        sdc_redis_close(rt->redis);
    sdc_mpi_finalize(rt->mpi);
    if (rt->be)
        sdc_backend_destroy(rt->be);
    free(rt->cf);
}

sdc_status_t sdc_rt_run(const sdc_rt_opts_t *o, volatile sig_atomic_t *stop, sdc_error_t *err)
{
    sdc_rt_t *rt = calloc(1, sizeof(*rt));
    if (!rt)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    rt->o = *o;
    rt->stop = stop;
    rt->leader = -1;
    sdc_status_t st = start(rt, err);
    if (st == SDC_OK) {
        serve(rt);
        SDC_INFO("%s: stopped (%" PRIu64 " messages rejected)", rt->id, rt->dropped);
    } else if (rt->mpi) {
        SDC_ERROR("%s: %s; aborting the MPI job", rt->id[0] ? rt->id : o->prog, err->msg);
        sdc_mpi_abort(rt->mpi, 1);
    }
    stop_all(rt);
    free(rt);
    return st;
}
