/*
 * sdc-wire-probe: sends one deliberately bad, stale or misdirected message
 * to a node of a running cluster, to check that receivers validate what
 * they get (tests/integration/test_cluster.sh). It finds the node's UCX
 * address where the node registered it (sdc:node:<id> in Redis), connects
 * like any peer and sends. It reads no weights: sizes come from the model's
 * config files.
 *
 * Not a load generator and not a fuzzer: each kind is one fixed message.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/rt_jobs.h"
#include "cluster/ucx.h"
#include "cluster/wire.h"
#include "common/log.h"
#include "model/dit.h"
#include "model/vae.h"

#define EXIT_USAGE 2

typedef struct {
    const char *cluster, *to, *kind, *job;
    long attempt, step;
} opts_t;

typedef struct {
    sdc_dit_config_t dc;
    sdc_vae_config_t vc;
    sdc_cluster_t cf;
} model_t;

/* A message under construction: header frame bytes and payload. */
typedef struct {
    uint8_t *hdr;
    size_t hdr_len;
    uint8_t *payload;
    size_t len;
} probe_msg_t;

static const char *const kinds[] = {
    "garbage",        "truncated",  "checksum",    "oversized",   "tokens",
    "shape",          "short-payload", "payload-checksum", "unknown-job", "stale",
    "stale-assign",   "wrong-type",  "unknown-step-done",
};

static void usage(FILE *f)
{
    fprintf(f,
"usage: sdc-wire-probe --cluster FILE --to NODE --kind KIND [--job ID] [--attempt N]\n"
"                      [--step N]\n"
"\n"
"Sends one bad, stale or misdirected message to NODE (a node id such as\n"
"dit-stage-3, as registered in the cluster's Redis) and exits. For tests of\n"
"the receivers' validation: the node must drop and log it, and keep serving.\n"
"\n"
"Kinds:\n"
"  garbage            header bytes that are not an sdc frame\n"
"  truncated          a valid activation header cut in half\n"
"  checksum           a valid header with one envelope byte flipped\n"
"  oversized          a header announcing a 1 TiB payload\n"
"  tokens             a sample with more tokens than any image has\n"
"  shape              activations whose width is not the model's\n"
"  short-payload      less payload than the header describes\n"
"  payload-checksum   a payload that does not match the header's CRC-32C\n"
"  unknown-job        activations of a job nobody started, past its first step\n"
"  stale              activations (or, to a VAE, a final latent) of --job at\n"
"                     --attempt, for a job the node has finished\n"
"  stale-assign       an assignment of --job at --attempt (to a text encoder)\n"
"  wrong-type         a well-formed message of a type the node never takes\n"
"  unknown-step-done  a step report for a job nobody runs (to a coordinator)\n"
"\n"
"Options: --job ID (default probe-job), --attempt N (default 1), --step N\n"
"(default 2), -h/--help.\n"
"Exit status: 0 when the message was sent, 1 on an error, 2 on a usage error.\n");
}

static int parse_args(opts_t *o, int argc, char **argv)
{
    static const struct option opts[] = {
        {"cluster", required_argument, 0, 'c'}, {"to", required_argument, 0, 't'},
        {"kind", required_argument, 0, 'k'},    {"job", required_argument, 0, 'j'},
        {"attempt", required_argument, 0, 'a'}, {"step", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    int c;
    char *end;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:t:k:j:a:s:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': o->cluster = optarg; break;
        case 't': o->to = optarg; break;
        case 'k': o->kind = optarg; break;
        case 'j': o->job = optarg; break;
        case 'a':
        case 's': {
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (errno || *end || v < 0 || v > 1000000) {
                fprintf(stderr, "sdc-wire-probe: --%s: '%s' is not a small integer\n",
                        c == 'a' ? "attempt" : "step", optarg);
                return EXIT_USAGE;
            }
            *(c == 'a' ? &o->attempt : &o->step) = v;
            break;
        }
        case 'h': usage(stdout); return -1;
        case ':':
            fprintf(stderr, "sdc-wire-probe: option '%s' needs a value\n", argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, "sdc-wire-probe: unknown option '%s' (see --help)\n",
                    argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    if (optind < argc || !o->cluster || !o->to || !o->kind) {
        fprintf(stderr, "sdc-wire-probe: --cluster, --to and --kind are required (see --help)\n");
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strcmp(kinds[i], o->kind) == 0)
            return 0;
    fprintf(stderr, "sdc-wire-probe: --kind: unknown kind '%s' (see --help)\n", o->kind);
    return EXIT_USAGE;
}

static sdc_status_t load_model(model_t *m, const char *cluster, sdc_error_t *err)
{
    char path[4096];
    sdc_status_t st = sdc_cluster_load(&m->cf, cluster, 0, err);
    if (st != SDC_OK)
        return st;
    snprintf(path, sizeof(path), "%s/transformer/config.json", m->cf.model);
    if ((st = sdc_dit_config_load(&m->dc, path, err)) != SDC_OK)
        return st;
    snprintf(path, sizeof(path), "%s/vae/config.json", m->cf.model);
    return sdc_vae_config_load(&m->vc, path, err);
}

static sdc_status_t frame(const Sdc__Envelope *env, probe_msg_t *pm, sdc_error_t *err)
{
    pm->hdr_len = sdc_wire_frame_size(env);
    pm->hdr = malloc(pm->hdr_len);
    if (!pm->hdr)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    return sdc_wire_encode(env, pm->hdr, pm->hdr_len, &pm->hdr_len, err);
}

/* One sample of activations (or a final latent) of job/attempt/step. */
static sdc_status_t tensor_msg(const model_t *m, const opts_t *o, int latent, int64_t extra_width,
                               probe_msg_t *pm, sdc_error_t *err)
{
    const int64_t patch = m->dc.patch_size[0], grid = 8 * patch, n_txt = 4;
    const int64_t hidden = sdc_dit_hidden(&m->dc);
    const int64_t n_img = (grid / patch) * (grid / patch);
    const uint32_t steps = (uint32_t)o->step + 1;
    Sdc__Envelope env;
    Sdc__TensorHeader h;
    Sdc__Sample s, *sp = &s;
    Sdc__TensorDesc d[2], *dp[2] = {&d[0], &d[1]};
    int64_t shape0[3], shape1[1] = {hidden};
    sdc_wire_envelope_init(&env, "probe-0");
    sdc__tensor_header__init(&h);
    sdc__sample__init(&s);
    s.job_id = (char *)o->job;
    s.attempt = (uint32_t)o->attempt;
    s.step = (uint32_t)o->step;
    s.steps = latent ? (uint32_t)o->step + 1 : steps + 3;
    s.pass = SDC__PASS__PASS_COND;
    s.grid_h = s.grid_w = (uint32_t)grid;
    s.n_img = (uint32_t)n_img;
    s.n_txt = latent ? 0 : (uint32_t)n_txt;
    s.timestep = 500.0f;
    h.n_samples = 1;
    h.samples = &sp;
    sdc__tensor_desc__init(&d[0]);
    sdc__tensor_desc__init(&d[1]);
    d[0].dtype = d[1].dtype = SDC__DTYPE__DTYPE_F32;
    if (latent) {
        shape0[0] = m->dc.in_channels;
        shape0[1] = shape0[2] = grid;
        d[0].name = "latent";
        d[0].n_shape = 3;
        h.n_tensors = 1;
    } else {
        shape0[0] = n_img + n_txt;
        shape0[1] = hidden + extra_width;
        d[0].name = "hidden";
        d[0].n_shape = 2;
        d[1].name = "temb";
        d[1].shape = shape1;
        d[1].n_shape = 1;
        h.n_tensors = 2;
    }
    d[0].shape = shape0;
    h.tensors = dp;
    sdc_status_t st = sdc_wire_layout(&h, 64, err);
    if (st != SDC_OK)
        return st;
    pm->len = h.payload_bytes;
    pm->payload = calloc(1, pm->len);
    if (!pm->payload)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    h.checksum_case = SDC__TENSOR_HEADER__CHECKSUM_CRC32C;
    h.crc32c = sdc_wire_crc32c(0, pm->payload, pm->len);
    env.msg_case = SDC__ENVELOPE__MSG_TENSOR;
    env.tensor = &h;
    if (strcmp(o->kind, "oversized") == 0)
        h.payload_bytes = 1ull << 40;
    else if (strcmp(o->kind, "tokens") == 0)
        s.n_txt = 1u << 30;
    else if (strcmp(o->kind, "payload-checksum") == 0)
        h.crc32c ^= 1u;
    return frame(&env, pm, err);
}

static sdc_status_t control_msg(const opts_t *o, probe_msg_t *pm, sdc_error_t *err)
{
    Sdc__Envelope env;
    Sdc__Assign a;
    Sdc__StepDone sd;
    char params[256];
    sdc_wire_envelope_init(&env, "probe-0");
    if (strcmp(o->kind, "unknown-step-done") == 0) {
        sdc__step_done__init(&sd);
        sd.job_id = (char *)o->job;
        sd.attempt = (uint32_t)o->attempt;
        sd.step = (uint32_t)o->step;
        env.msg_case = SDC__ENVELOPE__MSG_STEP_DONE;
        env.step_done = &sd;
    } else {
        snprintf(params, sizeof(params), "{\"id\":\"%s\",\"embeds\":\"/nonexistent\"}", o->job);
        sdc__assign__init(&a);
        a.job_id = (char *)o->job;
        a.attempt = (uint32_t)o->attempt;
        a.params_json = params;
        env.msg_case = SDC__ENVELOPE__MSG_ASSIGN;
        env.assign = &a;
    }
    return frame(&env, pm, err);
}

static sdc_status_t build(const model_t *m, const opts_t *o, int to_vae, probe_msg_t *pm,
                          sdc_error_t *err)
{
    const char *k = o->kind;
    if (strcmp(k, "garbage") == 0) {
        static const char junk[] = "this is not an sdc frame, just bytes on the wire";
        pm->hdr_len = sizeof(junk);
        pm->hdr = malloc(pm->hdr_len);
        if (!pm->hdr)
            return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        memcpy(pm->hdr, junk, pm->hdr_len);
        return SDC_OK;
    }
    if (strcmp(k, "stale-assign") == 0 || strcmp(k, "unknown-step-done") == 0)
        return control_msg(o, pm, err);
    if (strcmp(k, "wrong-type") == 0)
        return tensor_msg(m, o, 1, 0, pm, err);
    sdc_status_t st = tensor_msg(m, o, to_vae, strcmp(k, "shape") == 0 ? 1 : 0, pm, err);
    if (st != SDC_OK)
        return st;
    if (strcmp(k, "truncated") == 0)
        pm->hdr_len /= 2;
    else if (strcmp(k, "checksum") == 0)
        pm->hdr[SDC_WIRE_FRAME_BYTES + (pm->hdr_len - SDC_WIRE_FRAME_BYTES) / 2] ^= 0x40;
    else if (strcmp(k, "short-payload") == 0)
        pm->len -= 4;
    return SDC_OK;
}

/* The node's registered UCX address. */
static sdc_status_t lookup(const model_t *m, const char *id, uint8_t **addr, size_t *len,
                           sdc_error_t *err)
{
    sdc_redis_t *r;
    sdc_redis_opts_t ro = {.url = m->cf.redis_url, .prefix = m->cf.prefix};
    sdc_node_t *nodes;
    size_t n;
    sdc_status_t st = sdc_redis_open(&r, &ro, err);
    if (st != SDC_OK)
        return st;
    st = sdc_node_list(r, &nodes, &n, err);
    sdc_redis_close(r);
    if (st != SDC_OK)
        return st;
    st = sdc_error_set(err, SDC_ERR_NOT_FOUND, "node %s is not registered", id);
    for (size_t i = 0; i < n; i++)
        if (strcmp(nodes[i].id, id) == 0) {
            *addr = nodes[i].address;
            *len = nodes[i].address_len;
            nodes[i].address = NULL;
            st = SDC_OK;
            break;
        }
    sdc_nodes_free(nodes, n);
    return st;
}

static sdc_status_t send_to(const uint8_t *addr, size_t addr_len, const char *id,
                            const probe_msg_t *pm, sdc_error_t *err)
{
    sdc_ucx_t *ctx;
    sdc_ucx_ep_t *ep;
    sdc_ucx_req_t req;
    sdc_ucx_params_t up = {.name = "sdc-wire-probe"};
    sdc_status_t st = sdc_ucx_create(&up, &ctx, err);
    if (st != SDC_OK)
        return st;
    st = sdc_ucx_connect(ctx, addr, addr_len, id, NULL, &ep, err);
    if (st == SDC_OK)
        st = sdc_ucx_send(ep, pm->hdr, pm->hdr_len, pm->payload, pm->len, &req, err);
    if (st == SDC_OK)
        st = sdc_ucx_req_wait(&req, 10000, err);
    sdc_ucx_destroy(ctx);
    return st;
}

int main(int argc, char **argv)
{
    opts_t o = {.job = "probe-job", .attempt = 1, .step = 2};
    sdc_log_set_level(SDC_LOG_WARN);
    sdc_log_init_from_env();
    int rc = parse_args(&o, argc, argv);
    if (rc)
        return rc < 0 ? 0 : rc;
    sdc_error_t err = {0};
    model_t *m = calloc(1, sizeof(*m));
    probe_msg_t pm = {0};
    uint8_t *addr = NULL;
    size_t addr_len = 0;
    rc = 1;
    if (!m) {
        fprintf(stderr, "sdc-wire-probe: out of memory\n");
        return 1;
    }
    if (load_model(m, o.cluster, &err) != SDC_OK ||
        build(m, &o, strncmp(o.to, "vae-", 4) == 0, &pm, &err) != SDC_OK ||
        lookup(m, o.to, &addr, &addr_len, &err) != SDC_OK ||
        send_to(addr, addr_len, o.to, &pm, &err) != SDC_OK)
        fprintf(stderr, "sdc-wire-probe: error: %s\n", err.msg);
    else
        rc = 0;
    free(addr);
    free(pm.hdr);
    free(pm.payload);
    free(m);
    return rc;
}
