/*
 * bench_dit: wall-clock time of one full DiT forward (embed + every block +
 * head) on fixed random inputs, repeated, with the process's peak RSS.
 *
 * The inputs are Philox noise (seed, then consecutive stream offsets for the
 * latent, the LLM text and the ByT5 text), the same values that
 * tools/goldens/bench_dit_torch.py feeds diffusers, so the two outputs can be
 * compared as a sanity check. This program measures; it does not check
 * correctness (tests/ does) and does not compare implementations
 * (bench/run.sh does).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "backend/backend.h"
#include "common/log.h"
#include "common/philox.h"
#include "common/timer.h"
#include "model/dit.h"

#define EXIT_USAGE 2
#define MAX_SIDE 4096
#define MAX_TEXT 65536
#define MAX_REPS 10000

typedef struct {
    const char *model_dir;
    const char *backend;
    long height, width;
    long text, text2;   /* tokens given to the model */
    long valid, valid2; /* valid (unmasked) prefix; -1 = all */
    long threads, reps, warmup;
    unsigned long long seed;
    double timestep;
    int trim_text;
    int json;
} bench_opts_t;

typedef struct {
    double embed_s, blocks_s, head_s;
} bench_phase_t;

static void usage(FILE *f)
{
    fprintf(f,
"usage: bench_dit --model-dir DIR [options]\n"
"\n"
"Times one full forward of a HunyuanImageTransformer2DModel (embed, every\n"
"block, head) on fixed Philox-random inputs and reports the median.\n"
"\n"
"Required:\n"
"  --model-dir DIR      a transformer/ directory (config.json + safetensors)\n"
"\n"
"Options:\n"
"  --height H           latent height (default 32); image tokens = H*W / patch area\n"
"  --width W            latent width (default 32)\n"
"  --text N             LLM text tokens (default 224)\n"
"  --text2 N            ByT5 text tokens (default 32; 0 = none)\n"
"  --valid N            valid LLM tokens, a prefix (default: all N)\n"
"  --valid2 N           valid ByT5 tokens, a prefix (default: all N2)\n"
"  --no-trim-text       keep masked text tokens in the blocks (as diffusers does)\n"
"  --threads T          CPU threads (default 0 = all cores)\n"
"  --reps R             timed forwards (default 5)\n"
"  --warmup K           untimed forwards first (default 1)\n"
"  --seed S             input noise seed (default 0)\n"
"  --timestep T         timestep (default 500)\n"
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
        fprintf(stderr, "bench_dit: %s: '%s' is not an integer in %ld..%ld\n", flag, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_double(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "bench_dit: %s: '%s' is not a number in %g..%g\n", flag, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_u64(const char *flag, const char *s, unsigned long long *out)
{
    char *end;
    errno = 0;
    if (*s == '-' || *s == '\0') goto bad;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end != '\0') goto bad;
    *out = v;
    return 0;
bad:
    fprintf(stderr, "bench_dit: %s: '%s' is not an integer in 0..2^64-1\n", flag, s);
    return -1;
}

/* Returns -1 to continue, else the exit status. */
static int parse_args(int argc, char **argv, bench_opts_t *o)
{
    enum {
        OPT_MODEL = 256, OPT_HEIGHT, OPT_WIDTH, OPT_TEXT, OPT_TEXT2, OPT_VALID, OPT_VALID2,
        OPT_NO_TRIM, OPT_THREADS, OPT_REPS, OPT_WARMUP, OPT_SEED, OPT_TIMESTEP, OPT_BACKEND,
        OPT_JSON,
    };
    static const struct option opts[] = {
        {"model-dir", required_argument, 0, OPT_MODEL},
        {"height", required_argument, 0, OPT_HEIGHT},
        {"width", required_argument, 0, OPT_WIDTH},
        {"text", required_argument, 0, OPT_TEXT},
        {"text2", required_argument, 0, OPT_TEXT2},
        {"valid", required_argument, 0, OPT_VALID},
        {"valid2", required_argument, 0, OPT_VALID2},
        {"no-trim-text", no_argument, 0, OPT_NO_TRIM},
        {"threads", required_argument, 0, OPT_THREADS},
        {"reps", required_argument, 0, OPT_REPS},
        {"warmup", required_argument, 0, OPT_WARMUP},
        {"seed", required_argument, 0, OPT_SEED},
        {"timestep", required_argument, 0, OPT_TIMESTEP},
        {"backend", required_argument, 0, OPT_BACKEND},
        {"json", no_argument, 0, OPT_JSON},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    *o = (bench_opts_t){
        .backend = "cpu", .height = 32, .width = 32, .text = 224, .text2 = 32,
        .valid = -1, .valid2 = -1, .reps = 5, .warmup = 1, .timestep = 500.0, .trim_text = 1,
    };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case OPT_MODEL: o->model_dir = optarg; break;
        case OPT_HEIGHT: bad = parse_long("--height", optarg, 1, MAX_SIDE, &o->height); break;
        case OPT_WIDTH: bad = parse_long("--width", optarg, 1, MAX_SIDE, &o->width); break;
        case OPT_TEXT: bad = parse_long("--text", optarg, 1, MAX_TEXT, &o->text); break;
        case OPT_TEXT2: bad = parse_long("--text2", optarg, 0, MAX_TEXT, &o->text2); break;
        case OPT_VALID: bad = parse_long("--valid", optarg, 1, MAX_TEXT, &o->valid); break;
        case OPT_VALID2: bad = parse_long("--valid2", optarg, 0, MAX_TEXT, &o->valid2); break;
        case OPT_NO_TRIM: o->trim_text = 0; break;
        case OPT_THREADS: bad = parse_long("--threads", optarg, 0, 1024, &o->threads); break;
        case OPT_REPS: bad = parse_long("--reps", optarg, 1, MAX_REPS, &o->reps); break;
        case OPT_WARMUP: bad = parse_long("--warmup", optarg, 0, MAX_REPS, &o->warmup); break;
        case OPT_SEED: bad = parse_u64("--seed", optarg, &o->seed); break;
        case OPT_TIMESTEP:
            bad = parse_double("--timestep", optarg, 0.0, 1000.0, &o->timestep);
            break;
        case OPT_BACKEND: o->backend = optarg; break;
        case OPT_JSON: o->json = 1; break;
        case 'h': usage(stdout); return 0;
        case ':':
            fprintf(stderr, "bench_dit: option '%s' needs a value\n", argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, "bench_dit: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return EXIT_USAGE;
        }
        if (bad) return EXIT_USAGE;
    }
    if (optind < argc) {
        fprintf(stderr, "bench_dit: unexpected argument '%s' (see --help)\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (!o->model_dir) {
        fprintf(stderr, "bench_dit: --model-dir is required (see --help)\n");
        return EXIT_USAGE;
    }
    if (o->valid < 0) o->valid = o->text;
    if (o->valid2 < 0) o->valid2 = o->text2;
    if (o->valid > o->text) {
        fprintf(stderr, "bench_dit: --valid %ld exceeds --text %ld\n", o->valid, o->text);
        return EXIT_USAGE;
    }
    if (o->valid2 > o->text2) {
        fprintf(stderr, "bench_dit: --valid2 %ld exceeds --text2 %ld\n", o->valid2, o->text2);
        return EXIT_USAGE;
    }
    return -1;
}

/* The model's shape limits that depend on the options, checked before any
 * large allocation so a mistake reads as a usage error. */
static int check_against_config(const bench_opts_t *o, const sdc_dit_config_t *c)
{
    if (o->height % c->patch_size[0] || o->width % c->patch_size[1]) {
        fprintf(stderr, "bench_dit: latent %ldx%ld is not a multiple of the patch size %lldx%lld\n",
                o->height, o->width, (long long)c->patch_size[0], (long long)c->patch_size[1]);
        return -1;
    }
    if (o->text2 > 0 && c->text_embed_2_dim == 0) {
        fprintf(stderr, "bench_dit: --text2 %ld but %s has no ByT5 projection "
                "(text_embed_2_dim); use --text2 0\n", o->text2, o->model_dir);
        return -1;
    }
    return 0;
}

typedef struct {
    float *latent, *text, *text2, *out;
    uint8_t *mask, *mask2;
} bench_inputs_t;

static void inputs_free(bench_inputs_t *in)
{
    free(in->latent);
    free(in->text);
    free(in->text2);
    free(in->out);
    free(in->mask);
    free(in->mask2);
}

/* Philox offsets: latent at 0, LLM text right after, ByT5 text after that. */
static int inputs_make(const bench_opts_t *o, const sdc_dit_config_t *c, bench_inputs_t *in)
{
    int64_t n_lat = c->in_channels * o->height * o->width;
    int64_t n_out = c->out_channels * o->height * o->width;
    int64_t n_txt = o->text * c->text_embed_dim;
    int64_t n_txt2 = o->text2 * c->text_embed_2_dim;
    memset(in, 0, sizeof(*in));
    in->latent = malloc((size_t)n_lat * sizeof(float));
    in->out = malloc((size_t)n_out * sizeof(float));
    in->text = malloc((size_t)n_txt * sizeof(float));
    in->mask = malloc((size_t)o->text);
    if (o->text2 > 0) {
        in->text2 = malloc((size_t)n_txt2 * sizeof(float));
        in->mask2 = malloc((size_t)o->text2);
    }
    if (!in->latent || !in->out || !in->text || !in->mask ||
        (o->text2 > 0 && (!in->text2 || !in->mask2))) {
        inputs_free(in);
        return -1;
    }
    sdc_philox_normal(o->seed, 0, in->latent, n_lat);
    sdc_philox_normal(o->seed, (uint64_t)n_lat, in->text, n_txt);
    if (o->text2 > 0) sdc_philox_normal(o->seed, (uint64_t)(n_lat + n_txt), in->text2, n_txt2);
    for (long i = 0; i < o->text; i++) in->mask[i] = i < o->valid;
    for (long i = 0; i < o->text2; i++) in->mask2[i] = i < o->valid2;
    return 0;
}

static sdc_status_t forward(sdc_dit_t *m, const sdc_dit_input_t *in, float *out,
                            bench_phase_t *ph, int64_t *n_txt, sdc_error_t *err)
{
    sdc_dit_sample_t s;
    double t0 = sdc_now();
    sdc_status_t st = sdc_dit_embed(m, in, &s, err);
    if (st != SDC_OK) return st;
    double t1 = sdc_now();
    st = sdc_dit_run_blocks(m, &s, 1, 0, sdc_dit_total_blocks(sdc_dit_config(m)), err);
    double t2 = sdc_now();
    if (st == SDC_OK) st = sdc_dit_head(m, &s, out, err);
    double t3 = sdc_now();
    *n_txt = s.n_txt;
    sdc_dit_sample_free(m, &s);
    ph->embed_s = t1 - t0;
    ph->blocks_s = t2 - t1;
    ph->head_s = t3 - t2;
    return st;
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

/* CPU time of the whole process (all threads): less disturbed than wall
 * time by other work on the machine, though it counts spin-waiting too. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return NAN;
    return (double)ru.ru_maxrss / 1024.0; /* Linux: KiB */
}

typedef struct {
    double *total, *cpu, *embed, *blocks, *head; /* reps entries each */
    double load_s, rss_before_load_mb, rss_after_load_mb, peak_rss_mb;
    double out_mean_abs, out_rms;
    int out_finite;
    int64_t n_img, n_txt;
    int threads;
} bench_result_t;

static void output_stats(const float *out, int64_t n, bench_result_t *r)
{
    double sa = 0.0, s2 = 0.0;
    int finite = 1;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(out[i])) finite = 0;
        sa += fabs(out[i]);
        s2 += (double)out[i] * out[i];
    }
    r->out_finite = finite;
    r->out_mean_abs = sa / (double)n;
    r->out_rms = sqrt(s2 / (double)n);
}

static cJSON *json_times(const double *v, long n)
{
    cJSON *a = cJSON_CreateArray();
    for (long i = 0; a && i < n; i++) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%.6f", v[i]);
        cJSON_AddItemToArray(a, cJSON_CreateRaw(buf));
    }
    return a;
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

static int print_json(const bench_opts_t *o, const sdc_dit_config_t *c, const bench_result_t *r)
{
    cJSON *j = cJSON_CreateObject();
    if (!j) return -1;
    cJSON_AddStringToObject(j, "impl", "sdc");
    cJSON_AddStringToObject(j, "backend", o->backend);
    json_num(j, "median_s", median(r->total, o->reps), "%.6f");
    double mn = r->total[0], mx = r->total[0];
    for (long i = 1; i < o->reps; i++) {
        mn = fmin(mn, r->total[i]);
        mx = fmax(mx, r->total[i]);
    }
    json_num(j, "min_s", mn, "%.6f");
    json_num(j, "max_s", mx, "%.6f");
    cJSON_AddNumberToObject(j, "reps", (double)o->reps);
    cJSON_AddNumberToObject(j, "warmup", (double)o->warmup);
    cJSON_AddItemToObject(j, "times_s", json_times(r->total, o->reps));
    json_num(j, "cpu_median_s", median(r->cpu, o->reps), "%.6f");
    cJSON_AddItemToObject(j, "cpu_times_s", json_times(r->cpu, o->reps));
    cJSON *ph = cJSON_AddObjectToObject(j, "phase_median_s");
    if (ph) {
        json_num(ph, "embed", median(r->embed, o->reps), "%.6f");
        json_num(ph, "blocks", median(r->blocks, o->reps), "%.6f");
        json_num(ph, "head", median(r->head, o->reps), "%.6f");
    }
    json_num(j, "load_s", r->load_s, "%.4f");
    json_num(j, "peak_rss_mb", r->peak_rss_mb, "%.1f");
    json_num(j, "rss_before_load_mb", r->rss_before_load_mb, "%.1f");
    json_num(j, "rss_after_load_mb", r->rss_after_load_mb, "%.1f");
    cJSON_AddNumberToObject(j, "threads", r->threads);
    cJSON_AddStringToObject(j, "model_dir", o->model_dir);
    cJSON_AddNumberToObject(j, "hidden", (double)sdc_dit_hidden(c));
    cJSON_AddNumberToObject(j, "heads", (double)c->num_attention_heads);
    cJSON_AddNumberToObject(j, "dual_blocks", (double)c->num_layers);
    cJSON_AddNumberToObject(j, "single_blocks", (double)c->num_single_layers);
    cJSON_AddNumberToObject(j, "height", (double)o->height);
    cJSON_AddNumberToObject(j, "width", (double)o->width);
    cJSON_AddNumberToObject(j, "text", (double)o->text);
    cJSON_AddNumberToObject(j, "text2", (double)o->text2);
    cJSON_AddNumberToObject(j, "valid", (double)o->valid);
    cJSON_AddNumberToObject(j, "valid2", (double)o->valid2);
    cJSON_AddBoolToObject(j, "trim_text", o->trim_text);
    cJSON_AddNumberToObject(j, "image_tokens", (double)r->n_img);
    cJSON_AddNumberToObject(j, "text_tokens_in_blocks", (double)r->n_txt);
    cJSON_AddNumberToObject(j, "timestep", o->timestep);
    cJSON_AddNumberToObject(j, "seed", (double)o->seed);
    cJSON_AddBoolToObject(j, "out_finite", r->out_finite);
    json_num(j, "out_mean_abs", r->out_mean_abs, "%.7g");
    json_num(j, "out_rms", r->out_rms, "%.7g");
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s) return -1;
    puts(s);
    free(s);
    return 0;
}

static void print_summary(const bench_opts_t *o, const sdc_dit_config_t *c,
                          const bench_result_t *r)
{
    printf("sdc DiT forward: %s\n", o->model_dir);
    printf("  hidden %lld, %lld heads, %lld dual + %lld single blocks\n",
           (long long)sdc_dit_hidden(c), (long long)c->num_attention_heads,
           (long long)c->num_layers, (long long)c->num_single_layers);
    printf("  tokens: %lld image + %lld text, %d threads, %ld reps after %ld warmup\n",
           (long long)r->n_img, (long long)r->n_txt, r->threads, o->reps, o->warmup);
    printf("  median %.4f s (embed %.4f, blocks %.4f, head %.4f), CPU time %.4f s, load %.3f s\n",
           median(r->total, o->reps), median(r->embed, o->reps), median(r->blocks, o->reps),
           median(r->head, o->reps), median(r->cpu, o->reps), r->load_s);
    printf("  peak RSS %.1f MB; output mean |x| %.6g%s\n", r->peak_rss_mb, r->out_mean_abs,
           r->out_finite ? "" : " (NOT FINITE)");
}

static int run(const bench_opts_t *o, sdc_dit_t *m, const bench_inputs_t *bi, bench_result_t *r)
{
    const sdc_dit_config_t *c = sdc_dit_config(m);
    sdc_error_t err = {0};
    sdc_dit_input_t in = {
        .latent = bi->latent, .height = o->height, .width = o->width,
        .timestep = (float)o->timestep, .timestep_r = 0.0f, .guidance = 3250.0f,
        .text = bi->text, .text_mask = bi->mask, .n_text = o->text,
        .text_2 = bi->text2, .text_mask_2 = bi->mask2, .n_text_2 = o->text2,
        .trim_text = o->trim_text,
    };
    bench_phase_t ph;
    for (long i = 0; i < o->warmup + o->reps; i++) {
        double t0 = sdc_now(), c0 = cpu_now();
        if (forward(m, &in, bi->out, &ph, &r->n_txt, &err) != SDC_OK) {
            fprintf(stderr, "bench_dit: forward: %s\n", err.msg);
            return -1;
        }
        double dt = sdc_now() - t0, dc = cpu_now() - c0;
        long k = i - o->warmup;
        if (k < 0) continue;
        r->total[k] = dt;
        r->cpu[k] = dc;
        r->embed[k] = ph.embed_s;
        r->blocks[k] = ph.blocks_s;
        r->head[k] = ph.head_s;
    }
    r->n_img = (o->height / c->patch_size[0]) * (o->width / c->patch_size[1]);
    output_stats(bi->out, c->out_channels * o->height * o->width, r);
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts_t o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;
    sdc_log_set_level(SDC_LOG_WARN);
    sdc_log_init_from_env();

    rc = 1;
    sdc_error_t err = {0};
    sdc_dit_config_t cfg;
    char cfg_path[4096];
    if ((size_t)snprintf(cfg_path, sizeof(cfg_path), "%s/config.json", o.model_dir) >=
        sizeof(cfg_path)) {
        fprintf(stderr, "bench_dit: --model-dir: path too long\n");
        return EXIT_USAGE;
    }
    if (sdc_dit_config_load(&cfg, cfg_path, &err) != SDC_OK) {
        fprintf(stderr, "bench_dit: %s\n", err.msg);
        return 1;
    }
    if (check_against_config(&o, &cfg)) return EXIT_USAGE;

    bench_result_t r = {0};
    r.total = calloc((size_t)o.reps, sizeof(double));
    r.cpu = calloc((size_t)o.reps, sizeof(double));
    r.embed = calloc((size_t)o.reps, sizeof(double));
    r.blocks = calloc((size_t)o.reps, sizeof(double));
    r.head = calloc((size_t)o.reps, sizeof(double));
    bench_inputs_t in;
    if (!r.total || !r.cpu || !r.embed || !r.blocks || !r.head) {
        fprintf(stderr, "bench_dit: out of memory\n");
        goto err_free_result;
    }
    if (inputs_make(&o, &cfg, &in)) {
        fprintf(stderr, "bench_dit: out of memory for the inputs\n");
        goto err_free_result;
    }

    sdc_backend_config_t bc = {.name = o.backend, .n_threads = (int)o.threads};
    sdc_backend_t *be;
    if (sdc_backend_create(&bc, &be, &err) != SDC_OK) {
        fprintf(stderr, "bench_dit: backend '%s': %s\n", o.backend, err.msg);
        goto err_free_inputs;
    }
    r.threads = be->n_threads;
    r.rss_before_load_mb = peak_rss_mb();
    double t0 = sdc_now();
    sdc_dit_t *m;
    if (sdc_dit_load(&m, be, o.model_dir, 0, sdc_dit_total_blocks(&cfg), &err) != SDC_OK) {
        fprintf(stderr, "bench_dit: %s\n", err.msg);
        goto err_destroy_backend;
    }
    r.load_s = sdc_now() - t0;
    r.rss_after_load_mb = peak_rss_mb();

    if (run(&o, m, &in, &r)) goto err_free_model;
    r.peak_rss_mb = peak_rss_mb();
    if (o.json ? print_json(&o, &cfg, &r) : (print_summary(&o, &cfg, &r), 0)) {
        fprintf(stderr, "bench_dit: out of memory writing JSON\n");
        goto err_free_model;
    }
    rc = 0;

err_free_model:
    sdc_dit_free(m);
err_destroy_backend:
    sdc_backend_destroy(be);
err_free_inputs:
    inputs_free(&in);
err_free_result:
    free(r.total);
    free(r.cpu);
    free(r.embed);
    free(r.blocks);
    free(r.head);
    return rc;
}
