/*
 * rt_cli.c: the command line of sdc-worker and sdc-coordinator (one parser,
 * so that both accept the same flags and mpirun can start either).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/runtime.h"
#include "common/log.h"

void sdc_rt_opts_default(sdc_rt_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->prog = "sdc-worker";
    o->node = -1;
    o->peer_timeout_ms = 60000;
    o->heartbeat_ttl_ms = 5000;
    o->drain_timeout_ms = 60000;
    o->job_timeout_ms = 600000;
    o->max_attempts = 3;
    o->reclaim_ms = 30000;
    o->dead_after_ms = 3000;
}

static void usage(const sdc_rt_opts_t *o, FILE *f)
{
    const int coord = o->coordinator_only;
    fprintf(f, "usage: %s --cluster FILE [--node I | --mpi] [options]\n\n", o->prog);
    if (coord)
        fprintf(f,
"Runs a coordinator node of an sdc cluster (docs/cluster-file.md): it takes\n"
"jobs from the Redis queue while a pipeline has room, places each on the\n"
"least-loaded pipeline that serves its size and hands it to a text encoder.\n"
"One coordinator holds the leader lease; others wait as standbys.\n\n");
    else
        fprintf(f,
"Runs one node of an sdc cluster (docs/cluster-file.md) as nodes[I] of the\n"
"cluster file says: a text encoder, a DiT stage or a VAE decoder. A\n"
"coordinator node runs the coordinator, so one mpirun command line starts a\n"
"whole cluster.\n\n");
    fprintf(f,
"  -c, --cluster FILE      the cluster file (required)\n"
"  -n, --node I            this process is nodes[I] of the cluster file\n"
"      --mpi               bootstrap with MPI: node I = MPI rank, UCX addresses\n"
"                          exchanged with MPI_Allgather. The default under mpirun\n"
"                          when --node is not given; otherwise peers are found\n"
"                          through their registration in Redis\n");
    if (!coord)
        fprintf(f,
"  -t, --threads N         CPU threads of the compute backend (default: all cores)\n"
"      --synthetic-ms MS   DiT stages, for benchmarks: replace the DiT compute by\n"
"                          a sleep of MS milliseconds per sample (and step) that\n"
"                          keeps UCX transfers moving. Stage 0 still embeds each\n"
"                          sample (for the exact token count) and every stage\n"
"                          sends real-size activations ((n_img + n_txt) x hidden\n"
"                          float32 and temb), unchanged by its blocks. The last\n"
"                          stage skips the head and takes a zero velocity as\n"
"                          every pass's prediction, so the guider and the Euler\n"
"                          update still run and leave the latent at its initial\n"
"                          noise: the VAE decodes that. Jobs, steps and messages\n"
"                          are as without the flag. Other roles ignore it\n"
"      --checkpoint-every K  last DiT stages: save each job's denoising state\n"
"                          (latent, step, guider momentum) to Redis every K\n"
"                          steps, so that a requeued job resumes there instead\n"
"                          of at step 0, with the same image (default 0: off)\n");
    fprintf(f,
"      --peer-timeout S    wait up to S seconds for peers to register (default 60)\n"
"      --heartbeat-ttl S   TTL of the node's registration in Redis, refreshed\n"
"                          every second (default 5)\n"
"      --drain-timeout S   after SIGTERM/SIGINT (or a coordinator's shutdown),\n"
"                          finish held work for up to S seconds (default 60)\n"
"      --job-timeout S     a job without progress for S seconds is requeued by\n"
"                          the coordinator and forgotten by workers (default 600)\n"
"      --max-attempts N    coordinator: attempts before a job fails (default 3)\n"
"      --dead-after S      coordinator: a node whose heartbeat has not changed\n"
"                          for S seconds is dead (default 3): its pipeline leaves\n"
"                          placement until all its nodes are alive, and its jobs\n"
"                          are requeued at once. Also the leader lease's TTL: a\n"
"                          standby takes over within about S seconds\n"
"      --reclaim S         coordinator: take over queue entries another\n"
"                          coordinator left unacknowledged for S seconds (default 30)\n"
"      --batch             coordinator: once the queue is empty and no job runs,\n"
"                          stop every node of the cluster and exit\n"
"      --log-level LEVEL   debug, info (default), warn, error\n"
"  -h, --help              this help\n"
"\n"
"SIGTERM or SIGINT stops the node gracefully: it finishes the work it holds,\n"
"deregisters and exits 0. A coordinator stops taking jobs, waits for its jobs\n"
"and then stops the workers.\n"
"\n"
"Exit status: 0 after a clean stop, 1 on a runtime error, 2 on a usage error.\n");
}

static int bad(const sdc_rt_opts_t *o, const char *flag, const char *v, const char *want)
{
    fprintf(stderr, "%s: %s: '%s' is not %s\n", o->prog, flag, v, want);
    return 2;
}

static int parse_int(const sdc_rt_opts_t *o, const char *flag, const char *s, long lo, long hi,
                     int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        char want[64];
        snprintf(want, sizeof(want), "an integer in %ld..%ld", lo, hi);
        return bad(o, flag, s, want);
    }
    *out = (int)v;
    return 0;
}

/* Seconds (fractions allowed) -> milliseconds. */
static int parse_seconds(const sdc_rt_opts_t *o, const char *flag, const char *s, double lo,
                         double hi, int *ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        char want[64];
        snprintf(want, sizeof(want), "a number of seconds in %g..%g", lo, hi);
        return bad(o, flag, s, want);
    }
    *ms = (int)(v * 1000.0 + 0.5);
    return 0;
}

int sdc_rt_parse_args(sdc_rt_opts_t *o, int argc, char **argv)
{
    enum {
        OPT_MPI = 256, OPT_PEER_TIMEOUT, OPT_TTL, OPT_DRAIN, OPT_JOB_TIMEOUT, OPT_ATTEMPTS,
        OPT_RECLAIM, OPT_BATCH, OPT_LOG_LEVEL, OPT_SYNTHETIC, OPT_DEAD_AFTER, OPT_CHECKPOINT
    };
    static const struct option opts[] = {
        {"cluster", required_argument, 0, 'c'},
        {"node", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'},
        {"mpi", no_argument, 0, OPT_MPI},
        {"peer-timeout", required_argument, 0, OPT_PEER_TIMEOUT},
        {"heartbeat-ttl", required_argument, 0, OPT_TTL},
        {"drain-timeout", required_argument, 0, OPT_DRAIN},
        {"job-timeout", required_argument, 0, OPT_JOB_TIMEOUT},
        {"max-attempts", required_argument, 0, OPT_ATTEMPTS},
        {"reclaim", required_argument, 0, OPT_RECLAIM},
        {"batch", no_argument, 0, OPT_BATCH},
        {"log-level", required_argument, 0, OPT_LOG_LEVEL},
        {"synthetic-ms", required_argument, 0, OPT_SYNTHETIC},
        {"dead-after", required_argument, 0, OPT_DEAD_AFTER},
        {"checkpoint-every", required_argument, 0, OPT_CHECKPOINT},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c, rc = 0;
    opterr = 0;
    optind = 1;
    while (rc == 0 && (c = getopt_long(argc, argv, ":c:n:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': o->cluster_path = optarg; break;
        case 'n': rc = parse_int(o, "--node", optarg, 0, 1023, &o->node); break;
        case 't': rc = parse_int(o, "--threads", optarg, 0, 1024, &o->threads); break;
        case OPT_MPI: o->mpi = 1; break;
        case OPT_PEER_TIMEOUT:
            rc = parse_seconds(o, "--peer-timeout", optarg, 0, 86400, &o->peer_timeout_ms);
            break;
        case OPT_TTL:
            rc = parse_seconds(o, "--heartbeat-ttl", optarg, 2, 3600, &o->heartbeat_ttl_ms);
            break;
        case OPT_DRAIN:
            rc = parse_seconds(o, "--drain-timeout", optarg, 0, 86400, &o->drain_timeout_ms);
            break;
        case OPT_JOB_TIMEOUT:
            rc = parse_seconds(o, "--job-timeout", optarg, 1, 86400, &o->job_timeout_ms);
            break;
        case OPT_ATTEMPTS:
            rc = parse_int(o, "--max-attempts", optarg, 1, 100, &o->max_attempts);
            break;
        case OPT_RECLAIM:
            rc = parse_seconds(o, "--reclaim", optarg, 1, 86400, &o->reclaim_ms);
            break;
        case OPT_BATCH: o->batch = 1; break;
        case OPT_DEAD_AFTER:
            rc = parse_seconds(o, "--dead-after", optarg, 1.5, 3600, &o->dead_after_ms);
            break;
        case OPT_CHECKPOINT:
            if (o->coordinator_only) {
                fprintf(stderr, "%s: --checkpoint-every is for DiT stages (sdc-worker)\n",
                        o->prog);
                rc = 2;
            } else {
                rc = parse_int(o, "--checkpoint-every", optarg, 0, 100000, &o->checkpoint_every);
            }
            break;
        case OPT_SYNTHETIC: {
            char *end;
            errno = 0;
            double v = strtod(optarg, &end);
            if (o->coordinator_only) {
                fprintf(stderr, "%s: --synthetic-ms is for DiT stages (sdc-worker)\n", o->prog);
                rc = 2;
            } else if (errno || end == optarg || *end || !isfinite(v) || v <= 0 || v > 3600000)
                rc = bad(o, "--synthetic-ms", optarg, "a number of milliseconds in (0, 3600000]");
            else
                o->synthetic_ms = v;
            break;
        }
        case OPT_LOG_LEVEL: {
            int lv = sdc_log_parse_level(optarg);
            if (lv < 0)
                rc = bad(o, "--log-level", optarg, "debug, info, warn or error");
            else
                sdc_log_set_level((sdc_log_level_t)lv);
            break;
        }
        case 'h': usage(o, stdout); return 1;
        case ':':
            fprintf(stderr, "%s: option '%s' needs a value\n", o->prog, argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, "%s: unknown option '%s' (see --help)\n", o->prog, argv[optind - 1]);
            return 2;
        }
    }
    if (rc)
        return rc;
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", o->prog, argv[optind]);
        return 2;
    }
    if (!o->cluster_path) {
        fprintf(stderr, "%s: --cluster is required (see --help)\n", o->prog);
        return 2;
    }
    return 0;
}
