/*
 * sdc-gateway: the HTTP front of an sdc cluster. It serves an
 * OpenAI-compatible POST /v1/images/generations and an asynchronous job API
 * (docs/openapi.yaml) over the cluster's Redis, and nothing else: it never
 * talks to a coordinator or a worker, so gateways can be added and removed
 * freely. The server itself is cluster/gateway.c; this is its command line,
 * signals (SIGHUP reloads the tokens, SIGTERM/SIGINT stop) and exit status.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* jobs.h and clusterfile.h together: rt_jobs.h resolves their role names. */
#include "cluster/rt_jobs.h"
#include "cluster/gateway.h"
#include "common/cli.h"
#include "common/log.h"

#define PROG "sdc-gateway"
#define EXIT_USAGE 2
#define GATEWAY_DEFAULT_URL "redis://127.0.0.1:6399" /* the Redis deploy/local.sh starts */
#define ENV_URL "SDC_REDIS_URL"
#define ENV_TOKENS "SDC_GATEWAY_TOKENS_FILE"

static volatile sig_atomic_t stop_requested, reload_requested;

static void on_stop(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void on_hup(int sig)
{
    (void)sig;
    reload_requested = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: sdc-gateway --tokens FILE [options]\n"
"       sdc-gateway --no-auth [options]\n"
"\n"
"HTTP API of an sdc cluster: OpenAI-compatible POST /v1/images/generations\n"
"(blocking) and asynchronous jobs (POST /v1/jobs, GET /v1/jobs/{id},\n"
"/v1/jobs/{id}/result, /v1/jobs/{id}/events, DELETE /v1/jobs/{id}), plus\n"
"/health, /ready and /metrics. Stateless: it only reads and writes the\n"
"cluster's Redis. docs/openapi.yaml describes every endpoint.\n"
"\n"
"Listening:\n"
"  -l, --listen ADDR        IPv4 address to bind (default 127.0.0.1)\n"
"  -p, --port N             TCP port (default 8080; 0: any free port)\n"
"      --port-file FILE     write the bound port to FILE once listening\n"
"      --max-connections N  concurrent connections (default 1024)\n"
"      --timeout S          close connections idle (or stalled mid-request) for\n"
"                           S seconds (default 10)\n"
"      --max-body BYTES     largest request body (default 12582912: room for an\n"
"                           --max-image-bytes image in base64)\n"
"\n"
"Cluster:\n"
"  -r, --redis URL          redis://host:port[/db] or redis+unix:///path (default\n"
"                           $" ENV_URL ", else " GATEWAY_DEFAULT_URL ")\n"
"      --prefix P           key prefix (default sdc:)\n"
"      --redis-password-file FILE\n"
"                           Redis password (else $SDC_REDIS_PASSWORD_FILE or\n"
"                           $SDC_REDIS_PASSWORD; the user goes in the URL)\n"
"\n"
"Access:\n"
"  -t, --tokens FILE        bearer tokens, one per line (else $" ENV_TOKENS ");\n"
"                           the file must not be readable by every user. SIGHUP\n"
"                           reads it again\n"
"      --no-auth            serve without tokens (say so explicitly)\n"
"      --open-metrics       /metrics without a token (/health and /ready are\n"
"                           always open)\n"
"      --rate R             requests per second per token (default 100; 0: no limit)\n"
"      --burst B            bucket size per token (default 200)\n"
"\n"
"Requests:\n"
"      --sizes LIST         allowed sizes, e.g. 1024x1024,1280x768\n"
"      --cluster FILE       allowed sizes from a cluster file: those its pipelines\n"
"                           serve (any multiple of 16 if one serves any size)\n"
"                           (default: any WxH of multiples of 16 up to --max-side)\n"
"      --max-side N         with neither: the largest side (default 2048)\n"
"      --max-prompt-bytes N prompt and negative prompt (default 4096)\n"
"      --max-n N            images per generation request (default 4, at most 16)\n"
"      --max-image-bytes N  init_image of a job (image-to-image), decoded\n"
"                           (default 8388608)\n"
"      --max-steps N        (default 200)\n"
"      --default-steps N    steps of a request that gives none (default 50)\n"
"      --max-guidance G     (default 100)\n"
"      --wait-timeout S     a generation request waits this long for its images\n"
"                           (default 300); the jobs go on after a timeout\n"
"\n"
"      --log-level LEVEL    debug, info (default), warn, error\n"
"  -h, --help               this help\n"
"\n"
"Exit status: 0 after SIGTERM/SIGINT; 1 when it cannot start (Redis\n"
"unreachable or refusing the password, bad token file, port in use); 2 on a\n"
"usage error.\n");
}

typedef struct {
    sdc_gw_opts_t o;
    const char *port_file;
} cli_t;

/* Every pipeline's sizes; a pipeline serving any size leaves the default. */
static int sizes_from_cluster(cli_t *c, const char *path)
{
    sdc_cluster_t *cf = calloc(1, sizeof(*cf));
    sdc_error_t err = {0};
    if (!cf || sdc_cluster_load(cf, path, 0, &err) != SDC_OK) {
        fprintf(stderr, PROG ": --cluster: %s\n", cf ? err.msg : "out of memory");
        free(cf);
        return -1;
    }
    sdc_gw_limits_t *l = &c->o.lim;
    int n = 0, any = 0;
    for (int p = 0; p < cf->n_pipelines; p++) {
        any |= cf->pipelines[p].n_sizes == 0;
        for (int s = 0; s < cf->pipelines[p].n_sizes && n < SDC_GW_MAX_SIZES; s++) {
            int w = cf->pipelines[p].sizes[s][0], h = cf->pipelines[p].sizes[s][1], dup = 0;
            for (int k = 0; k < n; k++)
                dup |= l->sizes[k][0] == w && l->sizes[k][1] == h;
            if (!dup)
                l->sizes[n][0] = w, l->sizes[n][1] = h, n++;
        }
    }
    l->n_sizes = any ? 0 : n;
    free(cf);
    return 0;
}

static int parse_args(int argc, char **argv, cli_t *c)
{
    enum {
        O_PORT_FILE = 256, O_MAXCONN, O_TIMEOUT, O_MAXBODY, O_PREFIX, O_PWFILE, O_NOAUTH,
        O_OPENMETRICS, O_RATE, O_BURST, O_SIZES, O_CLUSTER, O_MAXSIDE, O_MAXPROMPT, O_MAXN,
        O_MAXSTEPS, O_DEFSTEPS, O_MAXGUID, O_WAIT, O_LOG, O_MAXIMAGE,
    };
    static const struct option opts[] = {
        {"listen", required_argument, 0, 'l'},       {"port", required_argument, 0, 'p'},
        {"port-file", required_argument, 0, O_PORT_FILE},
        {"max-connections", required_argument, 0, O_MAXCONN},
        {"timeout", required_argument, 0, O_TIMEOUT},
        {"max-body", required_argument, 0, O_MAXBODY},
        {"redis", required_argument, 0, 'r'},        {"prefix", required_argument, 0, O_PREFIX},
        {"redis-password-file", required_argument, 0, O_PWFILE},
        {"tokens", required_argument, 0, 't'},       {"no-auth", no_argument, 0, O_NOAUTH},
        {"open-metrics", no_argument, 0, O_OPENMETRICS},
        {"rate", required_argument, 0, O_RATE},      {"burst", required_argument, 0, O_BURST},
        {"sizes", required_argument, 0, O_SIZES},    {"cluster", required_argument, 0, O_CLUSTER},
        {"max-side", required_argument, 0, O_MAXSIDE},
        {"max-prompt-bytes", required_argument, 0, O_MAXPROMPT},
        {"max-image-bytes", required_argument, 0, O_MAXIMAGE},
        {"max-n", required_argument, 0, O_MAXN},     {"max-steps", required_argument, 0, O_MAXSTEPS},
        {"default-steps", required_argument, 0, O_DEFSTEPS},
        {"max-guidance", required_argument, 0, O_MAXGUID},
        {"wait-timeout", required_argument, 0, O_WAIT},
        {"log-level", required_argument, 0, O_LOG},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    sdc_gw_opts_t *o = &c->o;
    const char *sizes = NULL, *cluster = NULL;
    long v;
    int opt, rc = 0;
    while (rc == 0 && (opt = getopt_long(argc, argv, "l:p:r:t:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'l': o->listen = optarg; break;
        case 'p': rc = sdc_cli_parse_long(PROG, "--port", optarg, 0, 65535, &v); o->port = (int)v; break;
        case O_PORT_FILE: c->port_file = optarg; break;
        case O_MAXCONN:
            rc = sdc_cli_parse_long(PROG, "--max-connections", optarg, 1, 100000, &v);
            o->max_connections = (int)v;
            break;
        case O_TIMEOUT:
            rc = sdc_cli_parse_long(PROG, "--timeout", optarg, 1, 3600, &v);
            o->conn_timeout_s = (int)v;
            break;
        case O_MAXBODY:
            rc = sdc_cli_parse_long(PROG, "--max-body", optarg, 64, 64L << 20, &v);
            o->max_body = (size_t)v;
            break;
        case 'r': o->redis_url = optarg; break;
        case O_PREFIX: o->prefix = optarg; break;
        case O_PWFILE: o->redis_password_file = optarg; break;
        case 't': o->tokens_path = optarg; break;
        case O_NOAUTH: o->no_auth = 1; break;
        case O_OPENMETRICS: o->open_metrics = 1; break;
        case O_RATE: rc = sdc_cli_parse_double(PROG, "--rate", optarg, 0, 1e9, &o->rate.rate); break;
        case O_BURST:
            rc = sdc_cli_parse_double(PROG, "--burst", optarg, 1, 1e9, &o->rate.burst);
            break;
        case O_SIZES: sizes = optarg; break;
        case O_CLUSTER: cluster = optarg; break;
        case O_MAXSIDE:
            rc = sdc_cli_parse_long(PROG, "--max-side", optarg, 16, SDC_JOB_SIDE_MAX, &v);
            o->lim.max_side = (int)v;
            break;
        case O_MAXPROMPT:
            rc = sdc_cli_parse_long(PROG, "--max-prompt-bytes", optarg, 1, SDC_JOB_PROMPT_MAX, &v);
            o->lim.max_prompt_bytes = (size_t)v;
            break;
        case O_MAXIMAGE:
            rc = sdc_cli_parse_long(PROG, "--max-image-bytes", optarg, 64, SDC_JOB_IMAGE_DEFAULT_CAP,
                                    &v);
            o->lim.max_image_bytes = (size_t)v;
            break;
        case O_MAXN:
            rc = sdc_cli_parse_long(PROG, "--max-n", optarg, 1, SDC_GW_N_MAX, &v);
            o->lim.max_n = (int)v;
            break;
        case O_MAXSTEPS:
            rc = sdc_cli_parse_long(PROG, "--max-steps", optarg, 1, SDC_JOB_STEPS_MAX, &v);
            o->lim.max_steps = (int)v;
            break;
        case O_DEFSTEPS:
            rc = sdc_cli_parse_long(PROG, "--default-steps", optarg, 1, SDC_JOB_STEPS_MAX, &v);
            o->lim.default_steps = (int)v;
            break;
        case O_MAXGUID:
            rc = sdc_cli_parse_double(PROG, "--max-guidance", optarg, 0, SDC_JOB_GUIDANCE_MAX,
                                      &o->lim.max_guidance);
            break;
        case O_WAIT:
            rc = sdc_cli_parse_long(PROG, "--wait-timeout", optarg, 1, 86400, &v);
            o->wait_timeout_s = (int)v;
            break;
        case O_LOG: {
            int lv = sdc_log_parse_level(optarg);
            if (lv < 0) {
                fprintf(stderr, PROG ": --log-level: '%s' is not debug, info, warn or error\n",
                        optarg);
                return EXIT_USAGE;
            }
            sdc_log_set_level((sdc_log_level_t)lv);
            break;
        }
        case 'h': usage(stdout); return -2;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (rc != 0)
        return EXIT_USAGE;
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument '%s' (see --help)\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (!o->redis_url)
        o->redis_url = getenv(ENV_URL) ? getenv(ENV_URL) : GATEWAY_DEFAULT_URL;
    if (!o->tokens_path && getenv(ENV_TOKENS) && *getenv(ENV_TOKENS))
        o->tokens_path = getenv(ENV_TOKENS);
    if (o->no_auth && o->tokens_path) {
        fprintf(stderr, PROG ": --no-auth and a token file exclude each other\n");
        return EXIT_USAGE;
    }
    if (!o->no_auth && !o->tokens_path) {
        fprintf(stderr, PROG ": no token file: give --tokens FILE (or $" ENV_TOKENS "), or "
                "--no-auth to serve without authentication\n");
        return EXIT_USAGE;
    }
    if (o->lim.default_steps > o->lim.max_steps) {
        fprintf(stderr, PROG ": --default-steps %d is over --max-steps %d\n",
                o->lim.default_steps, o->lim.max_steps);
        return EXIT_USAGE;
    }
    if (sizes && cluster) {
        fprintf(stderr, PROG ": give --sizes or --cluster, not both\n");
        return EXIT_USAGE;
    }
    if (sizes) {
        sdc_error_t err = {0};
        if (sdc_gw_sizes_parse(&o->lim, sizes, &err) != SDC_OK) {
            fprintf(stderr, PROG ": --sizes: %s\n", err.msg);
            return EXIT_USAGE;
        }
    }
    if (cluster && sizes_from_cluster(c, cluster) != 0)
        return EXIT_USAGE;
    return -1;
}

static int write_port_file(const char *path, int port)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, PROG ": --port-file %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    cli_t c;
    memset(&c, 0, sizeof(c));
    sdc_gw_opts_default(&c.o);
    sdc_log_set_level(SDC_LOG_INFO);
    int rc = parse_args(argc, argv, &c);
    if (rc == -2)
        return 0;
    if (rc >= 0)
        return rc;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    sdc_gateway_t *g;
    sdc_error_t err = {0};
    if (sdc_gateway_start(&c.o, &g, &err) != SDC_OK) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        return 1;
    }
    int port = sdc_gateway_port(g);
    if (c.port_file && write_port_file(c.port_file, port) != 0) {
        sdc_gateway_stop(g);
        return 1;
    }
    SDC_INFO(PROG ": listening on %s:%d (%s, redis %s)", c.o.listen, port,
             c.o.no_auth ? "no authentication" : "bearer tokens", c.o.redis_url);
    while (!stop_requested) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (reload_requested) {
            reload_requested = 0;
            if (sdc_gateway_reload(g, &err) != SDC_OK)
                SDC_WARN(PROG ": reloading tokens: %s (keeping the old ones)", err.msg);
            else
                SDC_INFO(PROG ": tokens reloaded");
        }
    }
    SDC_INFO(PROG ": stopping");
    sdc_gateway_stop(g);
    return 0;
}
