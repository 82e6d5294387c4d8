/*
 * bench_llm: wall-clock time of one forward of the Qwen2.5-VL language
 * model as sdc's text encoder runs it (sdc_qwen2_forward: embedding lookup,
 * the decoder layers, the final norm when the last hidden state is asked
 * for), repeated, with the process's peak RSS.
 *
 * Token ids are id[i] = (i * 2654435761) mod vocab_size, the sequence
 * tools/goldens/bench_llm_torch.py feeds transformers, so both sides print
 * comparable output statistics. This program measures; tests/ checks
 * correctness and bench/run_llm.sh compares implementations.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "backend/backend.h"
#include "common/log.h"
#include "common/timer.h"
#include "model/qwen2.h"

#define EXIT_USAGE 2
#define MAX_TOKENS 32768
#define MAX_REPS 10000

typedef struct {
    const char *model_dir, *backend;
    long tokens, skip, threads, reps, warmup;
    int json;
} bench_opts_t;

static void usage(FILE *f)
{
    fprintf(f,
"usage: bench_llm --model-dir DIR [options]\n"
"\n"
"Times one forward of a Qwen2 / Qwen2.5-VL language model (the text encoder)\n"
"on fixed token ids and reports the median.\n"
"\n"
"Required:\n"
"  --model-dir DIR      a text_encoder/ directory (config.json + safetensors)\n"
"\n"
"Options:\n"
"  --tokens N           sequence length (default 256)\n"
"  --skip S             output hidden_states[-(S+1)]: run all layers but S, and\n"
"                       the final norm only when S is 0 (default 0; the\n"
"                       HunyuanImage pipeline uses 2)\n"
"  --threads T          CPU threads (default 0 = all cores)\n"
"  --reps R             timed forwards (default 5)\n"
"  --warmup K           untimed forwards first (default 1)\n"
"  --backend NAME       cpu (default) or cuda\n"
"  --json               print one JSON object on stdout instead of a summary\n"
"  -h, --help           this help\n"
"\n"
"Exit status: 0 on success, 1 on a runtime error, 2 on a usage error.\n");
}

static int parse_long(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "bench_llm: %s: '%s' is not an integer in %ld..%ld\n", flag, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* Returns -1 to continue, else the exit status. */
static int parse_args(int argc, char **argv, bench_opts_t *o)
{
    enum { OPT_MODEL = 256, OPT_TOKENS, OPT_SKIP, OPT_THREADS, OPT_REPS, OPT_WARMUP, OPT_BACKEND,
           OPT_JSON };
    static const struct option opts[] = {
        {"model-dir", required_argument, 0, OPT_MODEL},
        {"tokens", required_argument, 0, OPT_TOKENS},
        {"skip", required_argument, 0, OPT_SKIP},
        {"threads", required_argument, 0, OPT_THREADS},
        {"reps", required_argument, 0, OPT_REPS},
        {"warmup", required_argument, 0, OPT_WARMUP},
        {"backend", required_argument, 0, OPT_BACKEND},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    *o = (bench_opts_t){.backend = "cpu", .tokens = 256, .reps = 5, .warmup = 1};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case OPT_MODEL: o->model_dir = optarg; break;
        case OPT_TOKENS: bad = parse_long("--tokens", optarg, 1, MAX_TOKENS, &o->tokens); break;
        case OPT_SKIP: bad = parse_long("--skip", optarg, 0, 1024, &o->skip); break;
        case OPT_THREADS: bad = parse_long("--threads", optarg, 0, 1024, &o->threads); break;
        case OPT_REPS: bad = parse_long("--reps", optarg, 1, MAX_REPS, &o->reps); break;
        case OPT_WARMUP: bad = parse_long("--warmup", optarg, 0, MAX_REPS, &o->warmup); break;
        case OPT_BACKEND: o->backend = optarg; break;
        case OPT_JSON: o->json = 1; break;
        case 'h': usage(stdout); return 0;
        case ':':
            fprintf(stderr, "bench_llm: option '%s' needs a value\n", argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, "bench_llm: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return EXIT_USAGE;
        }
        if (bad) return EXIT_USAGE;
    }
    if (optind < argc) {
        fprintf(stderr, "bench_llm: unexpected argument '%s' (see --help)\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (!o->model_dir) {
        fprintf(stderr, "bench_llm: --model-dir is required (see --help)\n");
        return EXIT_USAGE;
    }
    return -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, long n)
{
    double *s = malloc((size_t)n * sizeof(double));
    if (!s) return NAN;
    memcpy(s, v, (size_t)n * sizeof(double));
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return m;
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return NAN;
    return (double)ru.ru_maxrss / 1024.0; /* Linux: KiB */
}

/* CPU time of the whole process (all threads): less disturbed than wall
 * time by other work on the machine, though it counts spin-waiting too. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void json_num(cJSON *o, const char *key, double v, const char *fmt)
{
    char buf[64];
    if (!isfinite(v)) {
        cJSON_AddNullToObject(o, key);
        return;
    }
    snprintf(buf, sizeof(buf), fmt, v);
    cJSON_AddRawToObject(o, key, buf);
}

typedef struct {
    double *times, *cpu;
    double load_s, peak_mb, mean_abs, rms;
    int threads;
    int64_t layers_run;
} bench_result_t;

static int print_json(const bench_opts_t *o, const sdc_qwen2_config_t *c, const bench_result_t *r)
{
    cJSON *j = cJSON_CreateObject(), *t;
    if (!j) return -1;
    cJSON_AddStringToObject(j, "impl", "sdc");
    cJSON_AddStringToObject(j, "backend", o->backend);
    json_num(j, "median_s", median(r->times, o->reps), "%.6f");
    double mn = r->times[0];
    for (long i = 1; i < o->reps; i++) mn = fmin(mn, r->times[i]);
    json_num(j, "min_s", mn, "%.6f");
    t = cJSON_AddArrayToObject(j, "times_s");
    for (long i = 0; t && i < o->reps; i++) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%.6f", r->times[i]);
        cJSON_AddItemToArray(t, cJSON_CreateRaw(buf));
    }
    json_num(j, "cpu_median_s", median(r->cpu, o->reps), "%.6f");
    cJSON_AddNumberToObject(j, "reps", (double)o->reps);
    cJSON_AddNumberToObject(j, "warmup", (double)o->warmup);
    cJSON_AddNumberToObject(j, "threads", r->threads);
    cJSON_AddNumberToObject(j, "tokens", (double)o->tokens);
    cJSON_AddNumberToObject(j, "skip", (double)o->skip);
    cJSON_AddNumberToObject(j, "layers_run", (double)r->layers_run);
    cJSON_AddNumberToObject(j, "hidden", (double)c->hidden_size);
    cJSON_AddNumberToObject(j, "heads", (double)c->num_heads);
    cJSON_AddNumberToObject(j, "kv_heads", (double)c->num_kv_heads);
    cJSON_AddNumberToObject(j, "intermediate", (double)c->intermediate_size);
    json_num(j, "load_s", r->load_s, "%.4f");
    json_num(j, "peak_rss_mb", r->peak_mb, "%.1f");
    json_num(j, "out_mean_abs", r->mean_abs, "%.8g");
    json_num(j, "out_rms", r->rms, "%.8g");
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s) return -1;
    printf("%s\n", s);
    free(s);
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts_t o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;
    sdc_log_set_level(SDC_LOG_WARN);
    sdc_log_init_from_env();

    sdc_error_t err = {0};
    sdc_backend_t *be = NULL;
    sdc_qwen2_t *m = NULL;
    int32_t *ids = NULL;
    float *out = NULL;
    bench_result_t r = {0};
    rc = 1;
    sdc_backend_config_t bc = {.name = o.backend, .n_threads = (int)o.threads};
    if (sdc_backend_create(&bc, &be, &err) != SDC_OK) goto fail;
    r.threads = be->n_threads;
    double t0 = sdc_now();
    if (sdc_qwen2_load(&m, be, o.model_dir, (int)o.skip, &err) != SDC_OK) goto fail;
    r.load_s = sdc_now() - t0;
    const sdc_qwen2_config_t *c = sdc_qwen2_config(m);
    r.layers_run = sdc_qwen2_layers_run(m);
    ids = malloc((size_t)o.tokens * sizeof(int32_t));
    out = malloc((size_t)(o.tokens * c->hidden_size) * sizeof(float));
    r.times = malloc((size_t)o.reps * sizeof(double));
    r.cpu = malloc((size_t)o.reps * sizeof(double));
    if (!ids || !out || !r.times || !r.cpu) {
        sdc_error_set(&err, SDC_ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (long i = 0; i < o.tokens; i++)
        ids[i] = (int32_t)((uint64_t)i * 2654435761u % (uint64_t)c->vocab_size);
    for (long i = 0; i < o.warmup + o.reps; i++) {
        double a = sdc_now(), ac = cpu_now();
        if (sdc_qwen2_forward(m, ids, o.tokens, out, &err) != SDC_OK) goto fail;
        if (i >= o.warmup) {
            r.times[i - o.warmup] = sdc_now() - a;
            r.cpu[i - o.warmup] = cpu_now() - ac;
        }
    }
    double sa = 0, s2 = 0;
    for (int64_t i = 0; i < o.tokens * c->hidden_size; i++) {
        sa += fabs(out[i]);
        s2 += (double)out[i] * out[i];
    }
    r.mean_abs = sa / (double)(o.tokens * c->hidden_size);
    r.rms = sqrt(s2 / (double)(o.tokens * c->hidden_size));
    r.peak_mb = peak_rss_mb();
    if (o.json) {
        if (print_json(&o, c, &r)) goto fail;
    } else {
        printf("bench_llm: %s, %ld tokens, %lld of %lld layers, %d threads: median %.4f s "
               "(load %.2f s, peak RSS %.0f MB, mean |out| %.6g)\n",
               o.model_dir, o.tokens, (long long)r.layers_run, (long long)c->num_layers, r.threads,
               median(r.times, o.reps), r.load_s, r.peak_mb, r.mean_abs);
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "bench_llm: error: %s\n", err.msg[0] ? err.msg : sdc_status_str(err.code));
out:
    free(ids);
    free(out);
    free(r.times);
    free(r.cpu);
    sdc_qwen2_free(m);
    if (be) sdc_backend_destroy(be);
    return rc;
}
