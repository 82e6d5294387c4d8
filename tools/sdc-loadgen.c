/*
 * sdc-loadgen: a load test of an sdc cluster, through its Redis queue or its
 * HTTP gateway. Offers jobs open loop (Poisson arrivals at one or more
 * rates) or closed loop (one or more concurrencies), bounded by a count
 * and/or a duration per phase, and reports throughput, goodput under a
 * latency objective, latency percentiles (end to end, queue wait, per
 * step, ...) and errors by kind; optionally as JSON and as a PNG chart of
 * latency against offered load.
 *
 * The measuring is src/loadgen/; this file is the command line.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cli.h"
#include "common/log.h"
#include "common/plot.h"
#include "common/timer.h"
#include "loadgen/loadgen.h"

#define PROG "sdc-loadgen"
#define EXIT_INCOMPLETE 3
#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130
#define DEFAULT_REDIS "redis://127.0.0.1:6399"
#define URL_ENV "SDC_REDIS_URL"
#define TOKEN_ENV "SDC_GATEWAY_TOKEN"
#define MAX_PHASES 64
#define LOG_EVERY_S 5.0

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: sdc-loadgen (--rate R | --rates R,R.. | --concurrency N | --concurrencies N,N..)\n"
"                   (--count N | --duration S) [options]\n"
"\n"
"Load test of an sdc cluster: offers text-to-image jobs at a controlled load and\n"
"measures throughput, goodput and latency as a client sees them.\n"
"\n"
"Load (one of):\n"
"      --rate R             open loop: Poisson arrivals, R jobs/s on average\n"
"      --rates R1,R2,..     open loop, one phase per rate (in order)\n"
"  -c, --concurrency N      closed loop: keep N jobs in flight\n"
"      --concurrencies N,.. closed loop, one phase per concurrency\n"
"Bounds (per phase; at least one):\n"
"  -n, --count N            offer N jobs\n"
"  -d, --duration S         offer jobs for S seconds\n"
"      --drain-timeout S    then wait at most S s for jobs in flight (default 600);\n"
"                           jobs still running count as 'unfinished'\n"
"\n"
"Target:\n"
"  -t, --target T           'redis' (default: the cluster's queue, through Redis)\n"
"                           or the gateway's URL, http://host:port\n"
"  -r, --redis URL          Redis for --target redis (default $" URL_ENV ", else\n"
"                           " DEFAULT_REDIS "); password from $SDC_REDIS_PASSWORD or\n"
"                           $SDC_REDIS_PASSWORD_FILE, never the URL\n"
"      --prefix P           Redis key prefix (default sdc:)\n"
"      --token-file FILE    gateway bearer token (first line of FILE); default\n"
"                           $" TOKEN_ENV "; never on the command line\n"
"      --http-timeout S     per HTTP request (default 30)\n"
"\n"
"Jobs:\n"
"  -p, --prompts FILE       prompts, used in turn: one per line, or JSON lines with\n"
"                           \"prompt\" and optional \"negative_prompt\"; blank and '#'\n"
"                           lines skipped (default: 12 built-in English and Chinese)\n"
"      --size WxH           image size (default: the model's)\n"
"  -W, --width N / -H, --height N   the same, separately\n"
"  -s, --steps N            denoising steps (default 50)\n"
"  -g, --guidance G         guidance scale (default: the model's)\n"
"      --negative-prompt T  for prompts without their own\n"
"  -S, --seed N             seed of the arrival times; job i gets seed N + i (default 0)\n"
"      --no-fetch           do not download results (by default each PNG is fetched\n"
"                           and checked)\n"
"\n"
"Report:\n"
"      --slo-ms MS          latency objective: goodput counts jobs done within it\n"
"      --json FILE          write the report as JSON\n"
"      --plot FILE          write a PNG: latency percentiles against offered load\n"
"      --poll-ms MS         interval between looks at a job (default 100)\n"
"  -q, --quiet              no progress, only the report\n"
"      --log-level LEVEL    debug, info, warn (default), error\n"
"  -h, --help               this help\n"
"\n"
"Latency counts from the intended send time (open loop: the Poisson schedule),\n"
"so a slow client cannot hide queueing. Against Redis the done time is the\n"
"cluster's own timestamp (Redis' clock, corrected by the offset measured with\n"
"TIME); against the gateway it is when a poll saw the job done.\n"
"\n"
"Exit status: 0 when every job was done; 3 when some failed or did not finish\n"
"(the report says why); 1 on a runtime error (unreachable target, unwritable\n"
"output); 2 on a usage error; 130 when interrupted.\n");
}

/* ---- options ------------------------------------------------------------- */

typedef struct {
    sdc_lg_mode_t mode;
    double loads[MAX_PHASES]; /* rates or concurrencies */
    int n_loads;
    long count;
    double duration_s, drain_s;
    const char *target, *redis, *prefix, *token_file, *prompts, *negative;
    const char *json, *plot;
    double http_timeout_s, slo_ms;
    long width, height, steps, poll_ms;
    int has_guidance;
    double guidance;
    uint64_t seed;
    int fetch, quiet;
} cli_t;

/* "1,2.5,4": ascending or not, each in [lo, hi]; integers when whole. */
static int parse_list(const char *flag, const char *s, double lo, double hi, int whole, cli_t *c)
{
    char buf[1024];
    if (strlen(s) >= sizeof(buf)) {
        fprintf(stderr, PROG ": %s: list too long\n", flag);
        return -1;
    }
    snprintf(buf, sizeof(buf), "%s", s);
    c->n_loads = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (c->n_loads == MAX_PHASES) {
            fprintf(stderr, PROG ": %s: more than %d values\n", flag, MAX_PHASES);
            return -1;
        }
        double v;
        if (whole) {
            long n;
            if (sdc_cli_parse_long(PROG, flag, tok, (long)lo, (long)hi, &n))
                return -1;
            v = (double)n;
        } else if (sdc_cli_parse_double(PROG, flag, tok, lo, hi, &v)) {
            return -1;
        }
        c->loads[c->n_loads++] = v;
    }
    if (c->n_loads == 0 || s[strlen(s) - 1] == ',' || s[0] == ',' || strstr(s, ",,")) {
        fprintf(stderr, PROG ": %s: '%s' is not a comma-separated list of values\n", flag, s);
        return -1;
    }
    return 0;
}

static int parse_size(const char *s, cli_t *c)
{
    char w[32], h[32];
    const char *x = strchr(s, 'x');
    if (!x || x == s || (size_t)(x - s) >= sizeof(w) || strlen(x + 1) >= sizeof(h)) {
        fprintf(stderr, PROG ": --size: '%s' is not WIDTHxHEIGHT (e.g. 1024x1024)\n", s);
        return -1;
    }
    snprintf(w, sizeof(w), "%.*s", (int)(x - s), s);
    snprintf(h, sizeof(h), "%s", x + 1);
    if (sdc_cli_parse_long(PROG, "--size (width)", w, 1, SDC_JOB_SIDE_MAX, &c->width) ||
        sdc_cli_parse_long(PROG, "--size (height)", h, 1, SDC_JOB_SIDE_MAX, &c->height))
        return -1;
    return 0;
}

/* One load option only. */
static int set_mode(cli_t *c, sdc_lg_mode_t mode, int *seen, const char *flag)
{
    if (*seen) {
        fprintf(stderr, PROG ": %s: give only one of --rate, --rates, --concurrency, "
                        "--concurrencies\n", flag);
        return -1;
    }
    *seen = 1;
    c->mode = mode;
    return 0;
}

/* Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, cli_t *c)
{
    enum {
        O_RATE = 256, O_RATES, O_CONCS, O_DRAIN, O_PREFIX, O_TOKEN, O_HTTP_TIMEOUT, O_SIZE,
        O_NEG, O_NO_FETCH, O_SLO, O_JSON, O_PLOT, O_POLL, O_LOG
    };
    static const struct option opts[] = {
        {"rate", required_argument, 0, O_RATE},       {"rates", required_argument, 0, O_RATES},
        {"concurrency", required_argument, 0, 'c'},   {"concurrencies", required_argument, 0, O_CONCS},
        {"count", required_argument, 0, 'n'},         {"duration", required_argument, 0, 'd'},
        {"drain-timeout", required_argument, 0, O_DRAIN},
        {"target", required_argument, 0, 't'},        {"redis", required_argument, 0, 'r'},
        {"prefix", required_argument, 0, O_PREFIX},   {"token-file", required_argument, 0, O_TOKEN},
        {"http-timeout", required_argument, 0, O_HTTP_TIMEOUT},
        {"prompts", required_argument, 0, 'p'},       {"size", required_argument, 0, O_SIZE},
        {"width", required_argument, 0, 'W'},         {"height", required_argument, 0, 'H'},
        {"steps", required_argument, 0, 's'},         {"guidance", required_argument, 0, 'g'},
        {"negative-prompt", required_argument, 0, O_NEG},
        {"seed", required_argument, 0, 'S'},          {"no-fetch", no_argument, 0, O_NO_FETCH},
        {"slo-ms", required_argument, 0, O_SLO},      {"json", required_argument, 0, O_JSON},
        {"plot", required_argument, 0, O_PLOT},       {"poll-ms", required_argument, 0, O_POLL},
        {"quiet", no_argument, 0, 'q'},               {"log-level", required_argument, 0, O_LOG},
        {"help", no_argument, 0, 'h'},                {0, 0, 0, 0},
    };
    int ch, seen_mode = 0;
    long n;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":c:n:d:t:r:p:W:H:s:g:S:qh", opts, NULL)) != -1) {
        switch (ch) {
        case O_RATE:
        case O_RATES:
            if (set_mode(c, SDC_LG_OPEN, &seen_mode, argv[optind - 1]) ||
                parse_list(ch == O_RATE ? "--rate" : "--rates", optarg, 1e-6, 1e6, 0, c))
                return EXIT_USAGE;
            if (ch == O_RATE && c->n_loads != 1) {
                fprintf(stderr, PROG ": --rate takes one value; use --rates for a list\n");
                return EXIT_USAGE;
            }
            break;
        case 'c':
        case O_CONCS:
            if (set_mode(c, SDC_LG_CLOSED, &seen_mode, argv[optind - 1]) ||
                parse_list(ch == 'c' ? "--concurrency" : "--concurrencies", optarg, 1, 100000, 1, c))
                return EXIT_USAGE;
            if (ch == 'c' && c->n_loads != 1) {
                fprintf(stderr, PROG ": --concurrency takes one value; use --concurrencies for a list\n");
                return EXIT_USAGE;
            }
            break;
        case 'n': if (sdc_cli_parse_long(PROG, "--count", optarg, 1, 10000000, &c->count)) return EXIT_USAGE; break;
        case 'd': if (sdc_cli_parse_double(PROG, "--duration", optarg, 0.001, 1e7, &c->duration_s)) return EXIT_USAGE; break;
        case O_DRAIN: if (sdc_cli_parse_double(PROG, "--drain-timeout", optarg, 0, 1e7, &c->drain_s)) return EXIT_USAGE; break;
        case 't': c->target = optarg; break;
        case 'r': c->redis = optarg; break;
        case O_PREFIX: c->prefix = optarg; break;
        case O_TOKEN: c->token_file = optarg; break;
        case O_HTTP_TIMEOUT: if (sdc_cli_parse_double(PROG, "--http-timeout", optarg, 0.01, 3600, &c->http_timeout_s)) return EXIT_USAGE; break;
        case 'p': c->prompts = optarg; break;
        case O_SIZE: if (parse_size(optarg, c)) return EXIT_USAGE; break;
        case 'W': if (sdc_cli_parse_long(PROG, "--width", optarg, 1, SDC_JOB_SIDE_MAX, &c->width)) return EXIT_USAGE; break;
        case 'H': if (sdc_cli_parse_long(PROG, "--height", optarg, 1, SDC_JOB_SIDE_MAX, &c->height)) return EXIT_USAGE; break;
        case 's': if (sdc_cli_parse_long(PROG, "--steps", optarg, 1, SDC_JOB_STEPS_MAX, &c->steps)) return EXIT_USAGE; break;
        case 'g':
            if (sdc_cli_parse_double(PROG, "--guidance", optarg, 0, SDC_JOB_GUIDANCE_MAX, &c->guidance))
                return EXIT_USAGE;
            c->has_guidance = 1;
            break;
        case O_NEG: c->negative = optarg; break;
        case 'S': if (sdc_cli_parse_u64(PROG, "--seed", optarg, &c->seed)) return EXIT_USAGE; break;
        case O_NO_FETCH: c->fetch = 0; break;
        case O_SLO: if (sdc_cli_parse_double(PROG, "--slo-ms", optarg, 0.001, 1e9, &c->slo_ms)) return EXIT_USAGE; break;
        case O_JSON: c->json = optarg; break;
        case O_PLOT: c->plot = optarg; break;
        case O_POLL: if (sdc_cli_parse_long(PROG, "--poll-ms", optarg, 1, 60000, &n)) return EXIT_USAGE; c->poll_ms = n; break;
        case 'q': c->quiet = 1; break;
        case O_LOG: {
            int lv = sdc_log_parse_level(optarg);
            if (lv < 0) {
                fprintf(stderr, PROG ": --log-level: unknown level '%s'\n", optarg);
                return EXIT_USAGE;
            }
            sdc_log_set_level((sdc_log_level_t)lv);
            break;
        }
        case 'h': usage(stdout); return 0;
        case ':':
            fprintf(stderr, PROG ": option '%s' needs a value\n", argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, PROG ": unknown option '%s' (see --help)\n", argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument '%s' (see --help)\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (!seen_mode) {
        fprintf(stderr, PROG ": give the load: --rate, --rates, --concurrency or "
                        "--concurrencies (see --help)\n");
        return EXIT_USAGE;
    }
    if (c->count <= 0 && c->duration_s <= 0) {
        fprintf(stderr, PROG ": give a bound: --count and/or --duration (see --help)\n");
        return EXIT_USAGE;
    }
    if ((c->width != 0) != (c->height != 0)) {
        fprintf(stderr, PROG ": give both --width and --height, or --size WxH\n");
        return EXIT_USAGE;
    }
    int http = strcmp(c->target, "redis") != 0;
    if (http && strncmp(c->target, "http://", 7) != 0 && strncmp(c->target, "https://", 8) != 0) {
        fprintf(stderr, PROG ": --target: '%s' is neither 'redis' nor an http:// or https:// "
                        "URL\n", c->target);
        return EXIT_USAGE;
    }
    if (http && (c->redis || c->prefix)) {
        fprintf(stderr, PROG ": --redis and --prefix apply to --target redis only\n");
        return EXIT_USAGE;
    }
    /* Job seeds are seed + index; JSON numbers are exact up to 2^53. */
    if (http && c->seed > ((uint64_t)1 << 53) - 1 - 10000000) {
        fprintf(stderr, PROG ": --seed: over HTTP seeds must stay below 2^53 - 10^7 (JSON "
                        "numbers)\n");
        return EXIT_USAGE;
    }
    if (!http && c->token_file) {
        fprintf(stderr, PROG ": --token-file applies to an HTTP target only\n");
        return EXIT_USAGE;
    }
    if (!http) {
        const char *env = getenv(URL_ENV);
        if (!c->redis)
            c->redis = env && *env ? env : DEFAULT_REDIS;
        sdc_redis_url_t u;
        sdc_error_t err = {0};
        if (sdc_redis_url_parse(c->redis, &u, &err) != SDC_OK) {
            fprintf(stderr, PROG ": --redis: %s\n", err.msg);
            return EXIT_USAGE;
        }
        if (u.has_password) {
            fprintf(stderr, PROG ": --redis: the URL carries a password; put it in "
                            "$SDC_REDIS_PASSWORD or $SDC_REDIS_PASSWORD_FILE instead\n");
            return EXIT_USAGE;
        }
    }
    return -1;
}

/* ---- progress ------------------------------------------------------------------ */

typedef struct {
    int tty, quiet, phase, phases;
    double offered;
    sdc_lg_mode_t mode;
    double last_log;
} progress_t;

static void show_progress(void *arg, const sdc_lg_progress_t *p)
{
    progress_t *pg = arg;
    if (pg->quiet)
        return;
    double now = sdc_now();
    char what[64];
    snprintf(what, sizeof(what), pg->mode == SDC_LG_OPEN ? "%.3g jobs/s" : "concurrency %.0f",
             pg->offered);
    if (pg->tty) {
        fprintf(stderr, "\rphase %d/%d (%s): %5.1f s  offered %zu  done %zu  failed %zu  "
                "in flight %zu\033[K%s", pg->phase, pg->phases, what, p->elapsed_s, p->submitted,
                p->done, p->failed, p->in_flight, p->final ? "\n" : "");
        fflush(stderr);
    } else if (p->final || now - pg->last_log >= LOG_EVERY_S) {
        pg->last_log = now;
        fprintf(stderr, PROG ": phase %d/%d (%s): %.1f s, offered %zu, done %zu, failed %zu, "
                "in flight %zu\n", pg->phase, pg->phases, what, p->elapsed_s, p->submitted,
                p->done, p->failed, p->in_flight);
    }
}

/* ---- outputs ------------------------------------------------------------------- */

static int write_file(const char *path, const char *text)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        fprintf(stderr, PROG ": %s: path too long\n", path);
        return -1;
    }
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, PROG ": cannot write %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    int ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        fprintf(stderr, PROG ": cannot write %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static cJSON *config_json(const cli_t *c, const sdc_lg_target_t *t)
{
    cJSON *o = cJSON_CreateObject();
    char size[48];
    snprintf(size, sizeof(size), "%ldx%ld", c->width, c->height);
    int ok = o && cJSON_AddStringToObject(o, "target", t->name) &&
             cJSON_AddStringToObject(o, "mode", c->mode == SDC_LG_OPEN ? "open" : "closed") &&
             cJSON_AddNumberToObject(o, "count", (double)c->count) &&
             cJSON_AddNumberToObject(o, "duration_s", c->duration_s) &&
             cJSON_AddNumberToObject(o, "drain_timeout_s", c->drain_s) &&
             cJSON_AddStringToObject(o, "size", c->width ? size : "model default") &&
             cJSON_AddNumberToObject(o, "steps", (double)c->steps) &&
             (c->has_guidance ? cJSON_AddNumberToObject(o, "guidance", c->guidance)
                              : cJSON_AddNullToObject(o, "guidance")) &&
             cJSON_AddNumberToObject(o, "seed", (double)c->seed) &&
             cJSON_AddStringToObject(o, "prompts", c->prompts ? c->prompts : "built-in") &&
             cJSON_AddNumberToObject(o, "poll_ms", (double)c->poll_ms) &&
             cJSON_AddBoolToObject(o, "fetch_results", c->fetch) &&
             cJSON_AddBoolToObject(o, "exact_clock", t->exact_clock) &&
             cJSON_AddNumberToObject(o, "clock_offset_ms", t->clock_offset_ms);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static int write_plot(const cli_t *c, const sdc_lg_summary_t *s, int n)
{
    /* Points in order of offered load, latency in seconds. */
    int order[MAX_PHASES];
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int i = 1; i < n; i++)
        for (int k = i; k > 0 && s[order[k]].offered < s[order[k - 1]].offered; k--) {
            int t = order[k];
            order[k] = order[k - 1];
            order[k - 1] = t;
        }
    double x[MAX_PHASES], p50[MAX_PHASES], p90[MAX_PHASES], p95[MAX_PHASES], p99[MAX_PHASES];
    for (int i = 0; i < n; i++) {
        const sdc_lg_summary_t *p = &s[order[i]];
        x[i] = p->offered;
        p50[i] = p->e2e.p50;
        p90[i] = p->e2e.p90;
        p95[i] = p->e2e.p95;
        p99[i] = p->e2e.p99;
    }
    const sdc_plot_series_t series[] = {
        {"p50", p50, {31, 119, 180}},
        {"p90", p90, {44, 160, 44}},
        {"p95", p95, {255, 127, 14}},
        {"p99", p99, {214, 39, 40}},
    };
    char slo_label[64];
    snprintf(slo_label, sizeof(slo_label), "SLO %.0f ms", c->slo_ms);
    sdc_plot_hline_t slo = {slo_label, c->slo_ms / 1e3, {120, 120, 120}};
    sdc_plot_t p = {
        .title = "sdc-loadgen: end-to-end latency vs offered load",
        .xlabel = c->mode == SDC_LG_OPEN ? "offered load (jobs/s, Poisson)"
                                         : "concurrency (jobs in flight)",
        .ylabel = "latency (s)",
        .x = x,
        .n = (size_t)n,
        .series = series,
        .n_series = 4,
        .hlines = &slo,
        .n_hlines = c->slo_ms > 0 ? 1 : 0,
    };
    sdc_error_t err = {0};
    if (sdc_plot_write_png(&p, c->plot, &err) != SDC_OK) {
        fprintf(stderr, PROG ": --plot %s: %s\n", c->plot, err.msg);
        return -1;
    }
    return 0;
}

/* ---- main ------------------------------------------------------------------------ */

static int open_target(const cli_t *c, sdc_lg_target_t *t)
{
    sdc_error_t err = {0};
    if (strcmp(c->target, "redis") == 0) {
        if (sdc_lg_redis_open(t, c->redis, c->prefix, &err) != SDC_OK) {
            fprintf(stderr, PROG ": cannot use Redis at %s: %s\n", c->redis, err.msg);
            return -1;
        }
        return 0;
    }
    char *token = NULL;
    const char *env = getenv(TOKEN_ENV);
    if (c->token_file && sdc_lg_token_read(c->token_file, &token, &err) != SDC_OK) {
        fprintf(stderr, PROG ": --token-file: %s\n", err.msg);
        return -1;
    }
    if (!token && env && *env && !(token = strdup(env))) {
        fprintf(stderr, PROG ": out of memory\n");
        return -1;
    }
    sdc_status_t st = sdc_lg_http_open(t, c->target, token, c->http_timeout_s, &err);
    free(token);
    if (st != SDC_OK) {
        fprintf(stderr, PROG ": --target: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int load_prompts(const cli_t *c, sdc_lg_prompts_t *p)
{
    sdc_error_t err = {0};
    sdc_status_t st = c->prompts ? sdc_lg_prompts_load(c->prompts, p, &err)
                                 : sdc_lg_prompts_builtin(p, &err);
    if (st != SDC_OK) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    cli_t c = {
        .target = "redis",
        .drain_s = 600,
        .http_timeout_s = 30,
        .steps = SDC_JOB_STEPS_DEFAULT,
        .poll_ms = 100,
        .fetch = 1,
    };
    sdc_log_set_level(SDC_LOG_WARN);
    sdc_log_init_from_env();
    int rc = parse_args(argc, argv, &c);
    if (rc >= 0)
        return rc;

    sdc_lg_prompts_t prompts = {0};
    sdc_lg_target_t target = {0};
    sdc_lg_summary_t sums[MAX_PHASES];
    cJSON *report = NULL, *phases = NULL;
    rc = 1;
    if (load_prompts(&c, &prompts) || open_target(&c, &target))
        goto out;

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    report = cJSON_CreateObject();
    phases = cJSON_CreateArray();
    cJSON *cfg = config_json(&c, &target);
    if (!report || !phases || !cfg || !cJSON_AddStringToObject(report, "tool", PROG) ||
        !cJSON_AddItemToObject(report, "config", cfg)) {
        cJSON_Delete(cfg);
        fprintf(stderr, PROG ": out of memory\n");
        goto out;
    }
    if (!c.quiet)
        fprintf(stderr, PROG ": %d phase%s against %s, %zu prompt%s\n", c.n_loads,
                c.n_loads == 1 ? "" : "s", target.name, prompts.n, prompts.n == 1 ? "" : "s");
    int incomplete = 0, ran = 0;
    for (int i = 0; i < c.n_loads && !interrupted; i++) {
        progress_t pg = {.tty = isatty(STDERR_FILENO), .quiet = c.quiet, .phase = i + 1,
                         .phases = c.n_loads, .offered = c.loads[i], .mode = c.mode};
        sdc_lg_config_t lc = {
            .mode = c.mode,
            .rate = c.loads[i],
            .concurrency = (int)c.loads[i],
            .count = c.count,
            .duration_s = c.duration_s,
            .drain_s = c.drain_s,
            .poll_s = (double)c.poll_ms / 1000.0,
            .seed = c.seed,
            .fetch_result = c.fetch,
            .prompts = &prompts,
            .request = {.negative_prompt = c.negative, .width = (int)c.width,
                        .height = (int)c.height, .steps = (int)c.steps, .seed = c.seed,
                        .has_guidance = c.has_guidance, .guidance = c.guidance},
            .stop = &interrupted,
            .progress = show_progress,
            .progress_arg = &pg,
        };
        sdc_lg_run_t run;
        sdc_error_t err = {0};
        if (sdc_lg_run(&target, &lc, &run, &err) != SDC_OK ||
            sdc_lg_summarize(&run, &lc, c.slo_ms / 1e3, &sums[i], &err) != SDC_OK) {
            fprintf(stderr, PROG ": %s\n", err.msg);
            sdc_lg_run_free(&run);
            goto out;
        }
        ran++;
        sdc_lg_summary_print(stdout, &sums[i], &run);
        fflush(stdout);
        incomplete |= sums[i].done != sums[i].offered_jobs;
        cJSON *pj = sdc_lg_summary_json(&sums[i], &run);
        sdc_lg_run_free(&run);
        if (!pj || !cJSON_AddItemToArray(phases, pj)) {
            cJSON_Delete(pj);
            fprintf(stderr, PROG ": out of memory\n");
            goto out;
        }
    }
    cJSON_AddItemToObject(report, "phases", phases);
    phases = NULL;
    rc = interrupted ? EXIT_INTERRUPTED : incomplete ? EXIT_INCOMPLETE : 0;
    if (c.json) {
        char *text = cJSON_Print(report);
        if (!text || write_file(c.json, text))
            rc = 1;
        free(text);
    }
    if (c.plot && ran > 0 && write_plot(&c, sums, ran))
        rc = 1;
out:
    cJSON_Delete(phases);
    cJSON_Delete(report);
    if (target.close)
        target.close(&target);
    sdc_lg_prompts_free(&prompts);
    return rc;
}
