/*
 * sdc-status: what a running cluster looks like from its Redis: the live
 * nodes (role, place in a pipeline, heartbeat age), the coordinator holding
 * the leader lease, the queue's depth, the jobs in flight and the dead
 * letters. Read-only: it never writes a key.
 *
 * deploy/local.sh uses --nodes-tsv to wait for a cluster to register.
 */
#include <errno.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/jobs.h"
#include "cluster/redis.h"
#include "common/log.h"

#define EXIT_USAGE 2
#define STATUS_DEFAULT_URL "redis://127.0.0.1:6399"
#define STATUS_URL_ENV "SDC_REDIS_URL"

static void usage(FILE *f)
{
    fprintf(f,
"usage: sdc-status [--redis URL] [--prefix P] [--jobs N] [--nodes-tsv]\n"
"\n"
"Prints the state of an sdc cluster as its Redis holds it: live nodes with\n"
"their heartbeat age, the coordinator holding the leader lease, queue depth,\n"
"the oldest jobs in flight and the number of dead letters.\n"
"\n"
"  -r, --redis URL      Redis of the cluster (default $" STATUS_URL_ENV ", else\n"
"                       " STATUS_DEFAULT_URL "); the password comes only from\n"
"                       $SDC_REDIS_PASSWORD or $SDC_REDIS_PASSWORD_FILE\n"
"      --prefix P       key prefix (default sdc:)\n"
"  -j, --jobs N         list at most N unfinished jobs (default 10, 0: none)\n"
"      --nodes-tsv      print only the nodes, one per line, tab-separated:\n"
"                       id role pipeline stage heartbeat_ms age_ms (pipeline and\n"
"                       stage -1 when not a DiT stage), then a line\n"
"                       'leader<TAB>ID' when a coordinator holds the lease\n"
"  -h, --help           this help\n"
"\n"
"Exit status: 0 on success, 1 when Redis cannot be read, 2 on a usage error.\n");
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int cmp_node(const void *a, const void *b)
{
    const sdc_node_t *x = a, *y = b;
    if (x->role != y->role)
        return (int)x->role - (int)y->role;
    if (x->pipeline != y->pipeline)
        return x->pipeline - y->pipeline;
    if (x->stage != y->stage)
        return x->stage - y->stage;
    return strcmp(x->id, y->id);
}

static void fmt_age(char *buf, size_t cap, int64_t ms)
{
    if (ms < 0)
        ms = 0; /* clocks of two hosts */
    if (ms < 100000)
        snprintf(buf, cap, "%.1f s ago", ms / 1000.0);
    else
        snprintf(buf, cap, "%" PRId64 " min ago", ms / 60000);
}

static void print_place(char *buf, size_t cap, int v)
{
    if (v < 0)
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%d", v);
}

static sdc_status_t show_nodes(sdc_redis_t *r, int tsv, sdc_error_t *err)
{
    sdc_node_t *nodes = NULL;
    size_t n = 0;
    char leader[SDC_JOB_ID_MAX + 1];
    int has_leader = 0;
    sdc_status_t st = sdc_node_list(r, &nodes, &n, err);
    if (st == SDC_OK)
        st = sdc_leader_get(r, leader, &has_leader, err);
    if (st != SDC_OK)
        goto out;
    if (n > 1)
        qsort(nodes, n, sizeof(*nodes), cmp_node);
    int64_t now = wall_ms();
    if (tsv) {
        for (size_t i = 0; i < n; i++)
            printf("%s\t%s\t%d\t%d\t%" PRId64 "\t%" PRId64 "\n", nodes[i].id,
                   sdc_node_role_name(nodes[i].role), nodes[i].pipeline, nodes[i].stage,
                   nodes[i].heartbeat_ms, now - nodes[i].heartbeat_ms);
        if (has_leader)
            printf("leader\t%s\n", leader);
        goto out;
    }
    printf("leader: %s\n", has_leader ? leader : "none (no coordinator holds the lease)");
    printf("nodes: %zu\n", n);
    if (n)
        printf("  %-24s %-13s %8s %5s %8s  %s\n", "id", "role", "pipeline", "stage", "load",
               "heartbeat");
    for (size_t i = 0; i < n; i++) {
        char p[16], s[16], age[32];
        print_place(p, sizeof(p), nodes[i].pipeline);
        print_place(s, sizeof(s), nodes[i].stage);
        fmt_age(age, sizeof(age), now - nodes[i].heartbeat_ms);
        printf("  %-24s %-13s %8s %5s %8.2f  %s%s\n", nodes[i].id,
               sdc_node_role_name(nodes[i].role), p, s, nodes[i].load, age,
               nodes[i].draining ? " (draining)" : "");
    }
out:
    sdc_nodes_free(nodes, n);
    return st;
}

static sdc_status_t stream_len(sdc_redis_t *r, const char *suffix, long long *len,
                               sdc_error_t *err)
{
    char key[SDC_REDIS_KEY_MAX];
    redisReply *rep;
    sdc_status_t st = sdc_redis_key(r, key, sizeof(key), err, "%s", suffix);
    if (st == SDC_OK)
        st = sdc_redis_command(r, &rep, err, "XLEN %s", key);
    if (st != SDC_OK)
        return st;
    if ((st = sdc_redis_expect(rep, REDIS_REPLY_INTEGER, "XLEN", err)) == SDC_OK)
        *len = rep->integer;
    sdc_redis_reply_free(rep);
    return st;
}

static sdc_status_t show_queue(sdc_jobs_t *q, sdc_error_t *err)
{
    sdc_queue_depth_t d;
    sdc_status_t st = sdc_jobs_depth(q, &d, err);
    if (st == SDC_ERR_IO && strstr(err->msg, "NOGROUP")) {
        long long len = 0;
        if ((st = stream_len(q->r, "jobs", &len, err)) != SDC_OK)
            return st;
        printf("queue: %lld waiting (no consumer group yet: no coordinator has started)\n", len);
        return SDC_OK;
    }
    if (st != SDC_OK)
        return st;
    printf("queue: %" PRId64 " unfinished: %" PRId64 " in flight, %" PRId64 " waiting\n",
           d.length, d.pending, d.waiting);
    return SDC_OK;
}

/* The oldest unfinished jobs: entries stay in the jobs stream until done. */
static sdc_status_t show_jobs(sdc_jobs_t *q, long max, sdc_error_t *err)
{
    char key[SDC_REDIS_KEY_MAX];
    redisReply *rep;
    sdc_status_t st = sdc_redis_key(q->r, key, sizeof(key), err, "jobs");
    if (st == SDC_OK)
        st = sdc_redis_command(q->r, &rep, err, "XRANGE %s - + COUNT %ld", key, max);
    if (st != SDC_OK)
        return st;
    if ((st = sdc_redis_expect_array(rep, -1, "XRANGE", err)) != SDC_OK)
        goto out;
    if (rep->elements)
        printf("oldest unfinished jobs:\n  %-34s %-7s %-10s %9s %8s  %s\n", "id", "attempt",
               "state", "step", "pipeline", "since");
    int64_t now = wall_ms();
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *e = rep->element[i], *f;
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            (f = e->element[1])->type != REDIS_REPLY_ARRAY)
            continue;
        char id[SDC_JOB_ID_MAX + 1] = "";
        for (size_t k = 0; k + 1 < f->elements; k += 2)
            if (f->element[k]->type == REDIS_REPLY_STRING && strcmp(f->element[k]->str, "id") == 0 &&
                f->element[k + 1]->type == REDIS_REPLY_STRING)
                snprintf(id, sizeof(id), "%s", f->element[k + 1]->str);
        sdc_job_status_t s;
        sdc_error_t jerr = {0};
        if (!id[0] || sdc_job_get(q, id, &s, &jerr) != SDC_OK) {
            printf("  %-34s (entry %s: %s)\n", id[0] ? id : "?", e->element[0]->str,
                   jerr.msg[0] ? jerr.msg : "no job id");
            continue;
        }
        char step[32], pipe[16], age[32];
        snprintf(step, sizeof(step), "%" PRId64 "/%" PRId64, s.step, s.steps);
        print_place(pipe, sizeof(pipe), s.pipeline);
        fmt_age(age, sizeof(age), now - s.updated_ms);
        printf("  %-34s %-7" PRId64 " %-10s %9s %8s  %s\n", id, s.attempt,
               sdc_job_state_name(s.state), step, pipe, age);
    }
out:
    sdc_redis_reply_free(rep);
    return st;
}

int main(int argc, char **argv)
{
    const char *url = getenv(STATUS_URL_ENV) && *getenv(STATUS_URL_ENV) ? getenv(STATUS_URL_ENV)
                                                                        : STATUS_DEFAULT_URL;
    const char *prefix = NULL;
    long max_jobs = 10;
    int tsv = 0;
    enum { OPT_PREFIX = 256, OPT_TSV };
    static const struct option opts[] = {
        {"redis", required_argument, 0, 'r'}, {"prefix", required_argument, 0, OPT_PREFIX},
        {"jobs", required_argument, 0, 'j'},  {"nodes-tsv", no_argument, 0, OPT_TSV},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0},
    };
    sdc_log_set_level(SDC_LOG_WARN);
    sdc_log_init_from_env();
    int c;
    char *end;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":r:j:h", opts, NULL)) != -1) {
        switch (c) {
        case 'r': url = optarg; break;
        case OPT_PREFIX: prefix = optarg; break;
        case 'j':
            errno = 0;
            max_jobs = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || max_jobs < 0 || max_jobs > 100000) {
                fprintf(stderr, "sdc-status: --jobs: '%s' is not an integer in 0..100000\n",
                        optarg);
                return EXIT_USAGE;
            }
            break;
        case OPT_TSV: tsv = 1; break;
        case 'h': usage(stdout); return 0;
        case ':':
            fprintf(stderr, "sdc-status: option '%s' needs a value\n", argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, "sdc-status: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sdc-status: unexpected argument '%s' (see --help)\n", argv[optind]);
        return EXIT_USAGE;
    }

    sdc_error_t err = {0};
    sdc_redis_t *r = NULL;
    sdc_jobs_t q;
    sdc_redis_opts_t ro = {.url = url, .prefix = prefix, .retry_budget_ms = 3000};
    if (sdc_redis_open(&r, &ro, &err) != SDC_OK) {
        fprintf(stderr, "sdc-status: cannot use Redis at %s: %s\n", url, err.msg);
        return 1;
    }
    sdc_status_t st = sdc_jobs_init(&q, r, NULL, &err);
    if (st == SDC_OK && !tsv)
        printf("redis: %s (prefix %s)\n", url, sdc_redis_prefix(r));
    if (st == SDC_OK)
        st = show_nodes(r, tsv, &err);
    if (st == SDC_OK && !tsv)
        st = show_queue(&q, &err);
    if (st == SDC_OK && !tsv && max_jobs > 0)
        st = show_jobs(&q, max_jobs, &err);
    long long dead = 0;
    if (st == SDC_OK && !tsv && (st = stream_len(r, "dead", &dead, &err)) == SDC_OK)
        printf("dead letters: %lld\n", dead);
    if (st != SDC_OK)
        fprintf(stderr, "sdc-status: %s\n", err.msg);
    sdc_redis_close(r);
    return st == SDC_OK ? 0 : 1;
}
