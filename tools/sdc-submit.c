/*
 * sdc-submit: a batch of prompts from a file -> jobs in the cluster's Redis
 * queue -> (with --wait) PNGs on disk, with a progress bar and a summary.
 * It only talks to Redis, through the schema in cluster/jobs.h: it never
 * contacts a coordinator or a worker, and it never decides how a job runs.
 *
 * The whole file is read and every job validated before the first one is
 * submitted, so a bad line submits nothing.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cli.h"
#include "cluster/jobs.h"
#include "cluster/redis.h"
#include "common/log.h"
#include "common/status.h"
#include "common/timer.h"

#define PROG "sdc-submit"
#define EXIT_USAGE 2
#define EXIT_TIMEOUT 3
#define EXIT_INTERRUPTED 130

/* The Redis that deploy/local.sh starts. */
#define SUBMIT_DEFAULT_URL "redis://127.0.0.1:6399"
#define SUBMIT_URL_ENV "SDC_REDIS_URL"
#define SUBMIT_MAX_JOBS 1000000
#define SUBMIT_LOG_EVERY_S 5.0
/* A wait whose every Redis sweep has failed for this long gives up. */
#define SUBMIT_REDIS_GIVE_UP_S 60.0
/* Distinct input images are held in memory from reading to submitting. */
#define SUBMIT_IMAGES_MAX_BYTES ((size_t)1 << 30)

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: sdc-submit --prompts FILE --out DIR [options]\n"
"\n"
"Submits a batch of text-to-image jobs to an sdc cluster's Redis queue; with\n"
"--wait, waits for them and writes each image as DIR/<job-id>.png.\n"
"\n"
"Required:\n"
"  -p, --prompts FILE       one job per line ('-': standard input). A line whose\n"
"                           first non-blank character is '{' is a JSON object with\n"
"                           any of: id, prompt, embeds, negative_prompt, width,\n"
"                           height, steps, seed, guidance, trim_text, init_image\n"
"                           (a PNG or JPEG file), strength, refine,\n"
"                           refiner_embeds, refine_steps, refine_guidance,\n"
"                           refine_strength, refine_seed; any other line is a\n"
"                           prompt. Blank lines and lines starting with '#' are\n"
"                           skipped. Relative 'embeds', 'refiner_embeds' and\n"
"                           'init_image' paths are relative to the file's directory.\n"
"  -o, --out DIR            output directory (created if missing): DIR/jobs.jsonl\n"
"                           maps each line to its job id and state; with --wait,\n"
"                           DIR/<job-id>.png\n"
"\n"
"Cluster:\n"
"  -r, --redis URL          Redis of the cluster, redis://host:port[/db] or\n"
"                           redis+unix:///path (default $" SUBMIT_URL_ENV ", else\n"
"                           " SUBMIT_DEFAULT_URL ", the one deploy/local.sh starts).\n"
"                           The password comes only from $SDC_REDIS_PASSWORD or\n"
"                           $SDC_REDIS_PASSWORD_FILE, never from the URL\n"
"      --prefix P           key prefix (default sdc:)\n"
"\n"
"Defaults for jobs that do not set a field:\n"
"  -W, --width N            width in pixels (default: the model's default size)\n"
"  -H, --height N           height in pixels (default: the model's default size)\n"
"  -s, --steps N            denoising steps (default 50)\n"
"  -S, --seed N             base seed: a job without a seed gets N + its index\n"
"                           (0 for the first job of the file; default 0)\n"
"  -g, --guidance G         guidance scale (default: the model's)\n"
"  -e, --embeds FILE        text embeddings (safetensors, as sdc-generate --embeds)\n"
"                           for JSON jobs with neither 'prompt' nor 'embeds'\n"
"  -n, --negative-prompt T  negative prompt for jobs with a prompt\n"
"      --no-trim-text       keep padded text tokens (trim_text false)\n"
"      --no-embeds-check    pass 'embeds' paths on unchecked (they exist only on\n"
"                           the workers' shared storage); otherwise each must be a\n"
"                           readable file here and is made absolute\n"
"\n"
"Image-to-image (as sdc-generate --init-image):\n"
"      --init-image FILE    input image (PNG or JPEG) for jobs without 'init_image'.\n"
"                           Its bytes travel with the job (Redis job:<id>:image); it\n"
"                           must already have the job's size, which width and height\n"
"                           default to: sdc does not resample images\n"
"      --strength S         for jobs with an image and no 'strength': the fraction of\n"
"                           the steps that runs, above 0 up to 1 (default 0.6)\n"
"      --max-image-bytes N  refuse larger input images (default 16777216; a cluster\n"
"                           has its own limit, max_image_bytes in its cluster file)\n"
"\n"
"Refiner (as sdc-generate --refiner; the cluster needs a refiner node):\n"
"      --refine             refine every job that does not set 'refine'\n"
"      --refiner-embeds FILE  the refiner's text conditioning (--embeds format, the\n"
"                           refiner's widths) for refine jobs without\n"
"                           'refiner_embeds'; without either, the refiner node\n"
"                           encodes the job's prompt with the refiner's own text\n"
"                           encoder (its model directory must have one)\n"
"      --refine-steps N     refiner steps for refine jobs without 'refine_steps'\n"
"                           (default 4)\n"
"      --refine-guidance G  the refiner's distilled guidance scale, above 0 up to\n"
"                           100 (default 3.25)\n"
"      --refine-strength S  0..1: the share of noise in the image latents the\n"
"                           refiner is conditioned on (default 0.25)\n"
"                           The refiner's seed is the job's ('refine_seed' sets\n"
"                           another); the refined image has the job's size.\n"
"\n"
"Waiting:\n"
"  -w, --wait               wait for every job and write its PNG\n"
"  -T, --timeout S          stop waiting after S seconds (default: no limit)\n"
"      --poll-ms MS         interval between state polls (default 200)\n"
"  -q, --quiet              no progress output or summary\n"
"      --log-level LEVEL    debug, info, warn (default), error\n"
"  -h, --help               this help\n"
"\n"
"On a terminal a progress bar shows jobs done/total, images/s and the ETA;\n"
"otherwise a line is logged every %.0f s. Jobs keep running in the cluster when\n"
"sdc-submit stops waiting (timeout, Ctrl-C).\n"
"\n"
"Exit status: 0 when every job was submitted (and, with --wait, is done with\n"
"its PNG written); 1 on a runtime error (unreachable Redis, a bad prompts\n"
"file) or when a job failed; 2 on a usage error; 3 when --timeout expired\n"
"with no job failed; 130 when interrupted.\n",
            SUBMIT_LOG_EVERY_S);
}

/* ---- options -------------------------------------------------------------- */

typedef struct {
    const char *prompts, *url, *prefix;
    char *out;
    /* Defaults applied to jobs that do not set the field. */
    long width, height, steps;
    uint64_t seed;
    int has_guidance;
    double guidance;
    const char *embeds, *negative;
    int trim_text;
    int check_embeds;
    const char *init_image;
    int refine;
    const char *refiner_embeds;
    long refine_steps;             /* 0: unset */
    double refine_guidance, refine_strength; /* < 0: unset */
    int has_strength;
    double strength;
    long max_image_bytes;
    int wait;
    double timeout_s; /* 0: no limit */
    long poll_ms;
    int quiet;
} cli_t;




/* Returns -1 to continue, else the exit status. */
static int parse_args(int argc, char **argv, cli_t *c)
{
    enum { OPT_PREFIX = 256, OPT_NO_TRIM, OPT_NO_CHECK, OPT_POLL, OPT_LOG_LEVEL, OPT_INIT_IMAGE,
           OPT_STRENGTH, OPT_MAX_IMAGE, OPT_REFINE, OPT_REFINER_EMBEDS, OPT_REFINE_STEPS,
           OPT_REFINE_GUIDANCE, OPT_REFINE_STRENGTH };
    static const struct option opts[] = {
        {"prompts", required_argument, 0, 'p'},   {"out", required_argument, 0, 'o'},
        {"redis", required_argument, 0, 'r'},     {"prefix", required_argument, 0, OPT_PREFIX},
        {"width", required_argument, 0, 'W'},     {"height", required_argument, 0, 'H'},
        {"steps", required_argument, 0, 's'},     {"seed", required_argument, 0, 'S'},
        {"guidance", required_argument, 0, 'g'},  {"embeds", required_argument, 0, 'e'},
        {"negative-prompt", required_argument, 0, 'n'},
        {"no-trim-text", no_argument, 0, OPT_NO_TRIM},
        {"no-embeds-check", no_argument, 0, OPT_NO_CHECK},
        {"wait", no_argument, 0, 'w'},            {"timeout", required_argument, 0, 'T'},
        {"poll-ms", required_argument, 0, OPT_POLL},
        {"quiet", no_argument, 0, 'q'},           {"help", no_argument, 0, 'h'},
        {"log-level", required_argument, 0, OPT_LOG_LEVEL},
        {"init-image", required_argument, 0, OPT_INIT_IMAGE},
        {"strength", required_argument, 0, OPT_STRENGTH},
        {"max-image-bytes", required_argument, 0, OPT_MAX_IMAGE},
        {"refine", no_argument, 0, OPT_REFINE},
        {"refiner-embeds", required_argument, 0, OPT_REFINER_EMBEDS},
        {"refine-steps", required_argument, 0, OPT_REFINE_STEPS},
        {"refine-guidance", required_argument, 0, OPT_REFINE_GUIDANCE},
        {"refine-strength", required_argument, 0, OPT_REFINE_STRENGTH},
        {0, 0, 0, 0},
    };
    int ch;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":p:o:r:W:H:s:S:g:e:n:wT:qh", opts, NULL)) != -1) {
        switch (ch) {
        case 'p': c->prompts = optarg; break;
        case 'o': c->out = optarg; break; /* argv is writable */
        case 'r': c->url = optarg; break;
        case OPT_PREFIX: c->prefix = optarg; break;
        case 'W': if (sdc_cli_parse_long(PROG, "--width", optarg, 1, SDC_JOB_SIDE_MAX, &c->width)) return EXIT_USAGE; break;
        case 'H': if (sdc_cli_parse_long(PROG, "--height", optarg, 1, SDC_JOB_SIDE_MAX, &c->height)) return EXIT_USAGE; break;
        case 's': if (sdc_cli_parse_long(PROG, "--steps", optarg, 1, SDC_JOB_STEPS_MAX, &c->steps)) return EXIT_USAGE; break;
        case 'S': if (sdc_cli_parse_u64(PROG, "--seed", optarg, &c->seed)) return EXIT_USAGE; break;
        case 'g':
            if (sdc_cli_parse_double(PROG, "--guidance", optarg, 0.0, SDC_JOB_GUIDANCE_MAX, &c->guidance))
                return EXIT_USAGE;
            c->has_guidance = 1;
            break;
        case 'e': c->embeds = optarg; break;
        case 'n': c->negative = optarg; break;
        case OPT_NO_TRIM: c->trim_text = 0; break;
        case OPT_NO_CHECK: c->check_embeds = 0; break;
        case OPT_INIT_IMAGE: c->init_image = optarg; break;
        case OPT_STRENGTH:
            if (sdc_cli_parse_double(PROG, "--strength", optarg, 0.0, 1.0, &c->strength))
                return EXIT_USAGE;
            c->has_strength = 1;
            break;
        case OPT_MAX_IMAGE: if (sdc_cli_parse_long(PROG, "--max-image-bytes", optarg, 1, SDC_JOB_IMAGE_MAX, &c->max_image_bytes)) return EXIT_USAGE; break;
        case OPT_REFINE: c->refine = 1; break;
        case OPT_REFINER_EMBEDS: c->refiner_embeds = optarg; break;
        case OPT_REFINE_STEPS: if (sdc_cli_parse_long(PROG, "--refine-steps", optarg, 1, SDC_JOB_REFINE_STEPS_MAX, &c->refine_steps)) return EXIT_USAGE; break;
        case OPT_REFINE_GUIDANCE:
            if (sdc_cli_parse_double(PROG, "--refine-guidance", optarg, 0.0, SDC_JOB_GUIDANCE_MAX, &c->refine_guidance))
                return EXIT_USAGE;
            if (!(c->refine_guidance > 0)) {
                fprintf(stderr, "sdc-submit: --refine-guidance must be above 0\n");
                return EXIT_USAGE;
            }
            break;
        case OPT_REFINE_STRENGTH: if (sdc_cli_parse_double(PROG, "--refine-strength", optarg, 0.0, 1.0, &c->refine_strength)) return EXIT_USAGE; break;
        case 'w': c->wait = 1; break;
        case 'T': if (sdc_cli_parse_double(PROG, "--timeout", optarg, 0.001, 1e9, &c->timeout_s)) return EXIT_USAGE; break;
        case OPT_POLL: if (sdc_cli_parse_long(PROG, "--poll-ms", optarg, 10, 60000, &c->poll_ms)) return EXIT_USAGE; break;
        case 'q': c->quiet = 1; break;
        case 'h': usage(stdout); return 0;
        case OPT_LOG_LEVEL: {
            int lv = sdc_log_parse_level(optarg);
            if (lv < 0) {
                fprintf(stderr, "sdc-submit: --log-level: unknown level '%s'\n", optarg);
                return EXIT_USAGE;
            }
            sdc_log_set_level((sdc_log_level_t)lv);
            break;
        }
        case ':':
            fprintf(stderr, "sdc-submit: option '%s' needs a value\n", argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, "sdc-submit: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sdc-submit: unexpected argument '%s' (see --help)\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (!c->prompts || !c->out) {
        fprintf(stderr, "sdc-submit: --prompts and --out are required (see --help)\n");
        return EXIT_USAGE;
    }
    /* "out/" and "out" name the same directory; messages join with '/'. */
    for (size_t n = strlen(c->out); n > 1 && c->out[n - 1] == '/'; n--)
        c->out[n - 1] = '\0';
    if (c->has_strength && !c->init_image) {
        fprintf(stderr, "sdc-submit: --strength needs --init-image (see --help)\n");
        return EXIT_USAGE;
    }
    if (!c->refine && (c->refiner_embeds || c->refine_steps || c->refine_guidance >= 0 ||
                       c->refine_strength >= 0)) {
        fprintf(stderr, "sdc-submit: --refiner-embeds and --refine-* need --refine (see --help)\n");
        return EXIT_USAGE;
    }
    if (c->timeout_s > 0 && !c->wait) {
        fprintf(stderr, "sdc-submit: --timeout only applies with --wait\n");
        return EXIT_USAGE;
    }
    sdc_redis_url_t u;
    sdc_error_t err = {0};
    if (sdc_redis_url_parse(c->url, &u, &err) != SDC_OK) {
        fprintf(stderr, "sdc-submit: --redis: %s\n", err.msg);
        return EXIT_USAGE;
    }
    if (u.has_password) {
        fprintf(stderr, "sdc-submit: --redis: the URL carries a password; put it in "
                        "$SDC_REDIS_PASSWORD or $SDC_REDIS_PASSWORD_FILE instead (a command "
                        "line is visible to every user of the host)\n");
        return EXIT_USAGE;
    }
    return -1;
}

/* ---- jobs ------------------------------------------------------------------ */

typedef enum {
    FATE_PENDING = 0, /* submitted, not finished yet */
    FATE_DONE,        /* done and its PNG written */
    FATE_FAILED,      /* failed in the cluster, or its result could not be had */
} fate_t;

typedef struct {
    long line;              /* 1-based line of the prompts file */
    sdc_job_params_t p;
    const sdc_job_image_t *img; /* image-to-image: in jobs_t.images */
    int submitted, existed; /* existed: the same job was submitted before */
    fate_t fate;
    sdc_job_state_t state;  /* last seen */
    int has_state;
    int64_t step, steps;
    char *error;            /* why it failed */
} job_t;

/* An input image, read once however many jobs use it. */
typedef struct {
    char *path; /* absolute */
    uint8_t *data;
    sdc_job_image_t img;
} image_t;

typedef struct {
    job_t *v;
    size_t n, cap;
    image_t **images;
    size_t n_images, image_bytes;
} jobs_t;

static void jobs_free(jobs_t *js)
{
    for (size_t i = 0; i < js->n; i++) {
        sdc_job_params_free(&js->v[i].p);
        free(js->v[i].error);
    }
    free(js->v);
    for (size_t i = 0; i < js->n_images; i++) {
        free(js->images[i]->path);
        free(js->images[i]->data);
        free(js->images[i]);
    }
    free(js->images);
}

static sdc_status_t jobs_push(jobs_t *js, job_t **out, sdc_error_t *err)
{
    if (js->n == SUBMIT_MAX_JOBS)
        return sdc_error_set(err, SDC_ERR_RANGE, "more than %d jobs in one batch",
                             SUBMIT_MAX_JOBS);
    if (js->n == js->cap) {
        size_t cap = js->cap ? 2 * js->cap : 64;
        job_t *v = realloc(js->v, cap * sizeof(*v));
        if (!v)
            return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory reading the prompts");
        js->v = v;
        js->cap = cap;
    }
    *out = &js->v[js->n++];
    memset(*out, 0, sizeof(**out));
    sdc_job_params_init(&(*out)->p);
    return SDC_OK;
}

static void job_set_error(job_t *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void job_set_error(job_t *j, const char *fmt, ...)
{
    char buf[SDC_JOB_REASON_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    free(j->error);
    j->error = strdup(buf); /* NULL on exhaustion: the summary says "unknown" */
}

/* ---- reading the prompts ---------------------------------------------------- */

typedef struct {
    const cli_t *cli;
    const char *label;  /* the file's name in messages */
    char *base_dir;     /* for relative embeds and init_image paths */
    long line;
    jobs_t *js;         /* its image cache */
} reader_t;

/* "\u0000" would end a cJSON string early and silently shorten a prompt. */
static int has_escaped_nul(const char *s)
{
    for (const char *p = strstr(s, "\\u0000"); p; p = strstr(p + 1, "\\u0000")) {
        size_t bs = 0;
        while (p - (ptrdiff_t)bs > s && p[-(ptrdiff_t)bs - 1] == '\\')
            bs++;
        if (bs % 2 == 0)
            return 1;
    }
    return 0;
}

/* path relative to base (NULL: as given), made absolute. */
static sdc_status_t absolute_path(const char *base, const char *path, char **out,
                                  sdc_error_t *err)
{
    char *joined = NULL;
    if (path[0] != '/' && base) {
        size_t n = strlen(base) + strlen(path) + 2;
        if (!(joined = malloc(n)))
            return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        snprintf(joined, n, "%s/%s", base, path);
        path = joined;
    }
    sdc_status_t st = SDC_OK;
    if (!(*out = realpath(path, NULL)))
        st = sdc_error_set(err, errno == ENOENT ? SDC_ERR_NOT_FOUND : SDC_ERR_IO, "%s: %s", path,
                           strerror(errno));
    free(joined);
    return st;
}

/* An embeds reference as the workers will read it: absolute, checked here
 * unless told not to. */
static sdc_status_t resolve_embeds(const reader_t *rd, const char *base, char **ref,
                                   sdc_error_t *err)
{
    if (!rd->cli->check_embeds)
        return SDC_OK;
    char *abs = NULL;
    sdc_error_t perr = {0};
    struct stat sb;
    sdc_status_t st = absolute_path(base, *ref, &abs, &perr);
    if (st != SDC_OK)
        return sdc_error_set(err, st, "embeds file %s", perr.msg);
    if (stat(abs, &sb) != 0 || !S_ISREG(sb.st_mode) || access(abs, R_OK) != 0) {
        st = sdc_error_set(err, SDC_ERR_IO, "embeds file %s is not a readable file", abs);
        free(abs);
        return st;
    }
    free(*ref);
    *ref = abs;
    return SDC_OK;
}

/* The whole file, refused above max bytes before it is read. */
static sdc_status_t read_image_file(const char *path, size_t max, uint8_t **data, size_t *len,
                                    sdc_error_t *err)
{
    struct stat sb;
    FILE *f = fopen(path, "rb");
    if (!f)
        return sdc_error_set(err, SDC_ERR_IO, "%s: %s", path, strerror(errno));
    sdc_status_t st = SDC_OK;
    uint8_t *buf = NULL;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode))
        st = sdc_error_set(err, SDC_ERR_IO, "%s: not a regular file", path);
    else if ((uint64_t)sb.st_size > max)
        st = sdc_error_set(err, SDC_ERR_RANGE, "%s: %lld bytes, over the limit of %zu bytes "
                           "(--max-image-bytes)", path, (long long)sb.st_size, max);
    else if (!(buf = malloc(sb.st_size ? (size_t)sb.st_size : 1)))
        st = sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", path);
    else if (fread(buf, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size)
        st = sdc_error_set(err, SDC_ERR_IO, "%s: short read", path);
    fclose(f);
    if (st != SDC_OK) {
        free(buf);
        return st;
    }
    *data = buf;
    *len = (size_t)sb.st_size;
    return SDC_OK;
}

/* An input image, checked (sdc_job_image_check), from the cache or the file. */
static sdc_status_t image_get(const reader_t *rd, const char *base, const char *ref,
                              const sdc_job_image_t **out, sdc_error_t *err)
{
    jobs_t *js = rd->js;
    char *path = NULL;
    sdc_status_t st = absolute_path(base, ref, &path, err);
    if (st != SDC_OK)
        return st;
    for (size_t i = 0; i < js->n_images; i++)
        if (strcmp(js->images[i]->path, path) == 0) {
            *out = &js->images[i]->img;
            free(path);
            return SDC_OK;
        }
    image_t *im = calloc(1, sizeof(*im));
    image_t **grown = realloc(js->images, (js->n_images + 1) * sizeof(*grown));
    if (!im || !grown) {
        free(im);
        free(path);
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    }
    js->images = grown;
    im->path = path;
    size_t len = 0;
    st = read_image_file(path, (size_t)rd->cli->max_image_bytes, &im->data, &len, err);
    if (st == SDC_OK && js->image_bytes + len > SUBMIT_IMAGES_MAX_BYTES)
        st = sdc_error_set(err, SDC_ERR_RANGE, "more than %zu MiB of distinct input images in one "
                           "batch: split the prompts file", SUBMIT_IMAGES_MAX_BYTES >> 20);
    if (st == SDC_OK &&
        (st = sdc_job_image_check(im->data, len, (size_t)rd->cli->max_image_bytes, &im->img,
                                  err)) != SDC_OK)
        sdc_error_wrap(err, "%s", path);
    if (st != SDC_OK) {
        free(im->data);
        free(im->path);
        free(im);
        return st;
    }
    js->images[js->n_images++] = im;
    js->image_bytes += len;
    *out = &im->img;
    return SDC_OK;
}

/* Adds the command line's defaults to a job object for the fields it does not
 * set (absent or null). *default_embeds = 1 when embeds came from --embeds,
 * *default_image = 1 when init_image came from --init-image,
 * *default_refiner_embeds = 1 when refiner_embeds came from --refiner-embeds. */
static sdc_status_t add_defaults(const reader_t *rd, cJSON *o, size_t index, int *default_embeds,
                                 int *default_image, int *default_refiner_embeds,
                                 sdc_error_t *err)
{
    const cli_t *c = rd->cli;
    char id[SDC_JOB_ID_MAX + 1], seed[24];
    int ok = 1;
#define ABSENT(k) (!cJSON_GetObjectItemCaseSensitive(o, k) || \
                   cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, k)))
#define SET(k, item) (cJSON_DeleteItemFromObjectCaseSensitive(o, k), cJSON_AddItemToObject(o, k, item))
    if (!cJSON_GetObjectItemCaseSensitive(o, "id")) {
        sdc_status_t st = sdc_job_id_new(id, err);
        if (st != SDC_OK)
            return st;
        ok = cJSON_AddStringToObject(o, "id", id) != NULL;
    }
    if (ok && ABSENT("width") && c->width) ok = SET("width", cJSON_CreateNumber((double)c->width));
    if (ok && ABSENT("height") && c->height) ok = SET("height", cJSON_CreateNumber((double)c->height));
    if (ok && ABSENT("steps")) ok = SET("steps", cJSON_CreateNumber((double)c->steps));
    if (ok && ABSENT("seed")) {
        snprintf(seed, sizeof(seed), "%" PRIu64, c->seed + (uint64_t)index);
        ok = SET("seed", cJSON_CreateString(seed));
    }
    if (ok && ABSENT("guidance") && c->has_guidance)
        ok = SET("guidance", cJSON_CreateNumber(c->guidance));
    if (ok && ABSENT("trim_text") && !c->trim_text) ok = SET("trim_text", cJSON_CreateFalse());
    int has_prompt = !ABSENT("prompt"), has_embeds = !ABSENT("embeds");
    *default_embeds = 0;
    if (ok && !has_prompt && !has_embeds) {
        if (!c->embeds)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "the job has neither 'prompt' nor 'embeds', and no --embeds "
                                 "default was given");
        ok = SET("embeds", cJSON_CreateString(c->embeds));
        *default_embeds = 1;
    }
    if (ok && has_prompt && ABSENT("negative_prompt") && c->negative)
        ok = SET("negative_prompt", cJSON_CreateString(c->negative));
    *default_image = 0;
    if (ok && ABSENT("init_image") && c->init_image) {
        ok = SET("init_image", cJSON_CreateString(c->init_image));
        *default_image = 1;
    }
    if (ok && !ABSENT("init_image") && ABSENT("strength") && c->has_strength)
        ok = SET("strength", cJSON_CreateNumber(c->strength));
    if (ok && ABSENT("refine") && c->refine) ok = SET("refine", cJSON_CreateTrue());
    /* The refiner's defaults go only to jobs that refine: the parser refuses
     * them elsewhere. */
    const cJSON *refine = cJSON_GetObjectItemCaseSensitive(o, "refine");
    *default_refiner_embeds = 0;
    if (ok && cJSON_IsTrue(refine)) {
        if (ABSENT("refiner_embeds") && c->refiner_embeds) {
            ok = SET("refiner_embeds", cJSON_CreateString(c->refiner_embeds));
            *default_refiner_embeds = 1;
        }
        if (ok && ABSENT("refine_steps") && c->refine_steps)
            ok = SET("refine_steps", cJSON_CreateNumber((double)c->refine_steps));
        if (ok && ABSENT("refine_guidance") && c->refine_guidance >= 0)
            ok = SET("refine_guidance", cJSON_CreateNumber(c->refine_guidance));
        if (ok && ABSENT("refine_strength") && c->refine_strength >= 0)
            ok = SET("refine_strength", cJSON_CreateNumber(c->refine_strength));
    }
#undef SET
#undef ABSENT
    return ok ? SDC_OK : sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
}

/* A job object (from a JSON line, or {"prompt": line}) with the defaults
 * added, through the strict job parameter parser. */
/* o[key] = v unless o sets key (a null counts as unset); 1 on success. */
static int default_number(cJSON *o, const char *key, double v)
{
    const cJSON *have = cJSON_GetObjectItemCaseSensitive(o, key);
    if (have && !cJSON_IsNull(have))
        return 1;
    cJSON_DeleteItemFromObjectCaseSensitive(o, key);
    return cJSON_AddNumberToObject(o, key, v) != NULL;
}

/* A prompts file's "init_image" (a path) becomes what the job's parameters
 * carry: the image's size and CRC-32C, and its size as the job's when the
 * line leaves it out. */
static sdc_status_t attach_image(const reader_t *rd, cJSON *o, int default_image,
                                 const sdc_job_image_t **img, sdc_error_t *err)
{
    const char *what = default_image ? "--init-image" : "init_image";
    cJSON *ref = cJSON_GetObjectItemCaseSensitive(o, "init_image");
    char crc[12];
    *img = NULL;
    if (!ref || cJSON_IsNull(ref))
        return SDC_OK;
    if (!cJSON_IsString(ref))
        return sdc_error_set(err, SDC_ERR_FORMAT, "'init_image' in a prompts file is the path of "
                             "a PNG or JPEG file");
    sdc_status_t st = image_get(rd, default_image ? NULL : rd->base_dir, ref->valuestring, img,
                                err);
    if (st != SDC_OK)
        return sdc_error_wrap(err, "%s", what);
    snprintf(crc, sizeof(crc), "%08" PRIx32, (*img)->crc32c);
    cJSON *desc = cJSON_CreateObject();
    int ok = desc && cJSON_AddNumberToObject(desc, "bytes", (double)(*img)->len) &&
             cJSON_AddStringToObject(desc, "crc32c", crc);
    if (ok)
        ok = cJSON_ReplaceItemInObjectCaseSensitive(o, "init_image", desc);
    else
        cJSON_Delete(desc);
    if (ok)
        ok = default_number(o, "width", (*img)->width) && default_number(o, "height", (*img)->height);
    return ok ? SDC_OK : sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
}

static sdc_status_t parse_object(const reader_t *rd, cJSON *o, job_t *j, size_t index,
                                 sdc_error_t *err)
{
    sdc_job_params_t *p = &j->p;
    int default_embeds = 0, default_image = 0, default_refiner_embeds = 0;
    sdc_status_t st = add_defaults(rd, o, index, &default_embeds, &default_image,
                                   &default_refiner_embeds, err);
    if (st == SDC_OK)
        st = attach_image(rd, o, default_image, &j->img, err);
    if (st != SDC_OK)
        return st;
    char *json = cJSON_PrintUnformatted(o);
    if (!json)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    st = sdc_job_params_parse(p, json, strlen(json), err);
    free(json);
    if (st == SDC_OK && j->img &&
        (st = sdc_job_params_set_image(p, j->img, err)) != SDC_OK && default_image)
        sdc_error_wrap(err, "--init-image %s", rd->cli->init_image);
    if (st == SDC_OK && p->embeds) {
        st = resolve_embeds(rd, default_embeds ? NULL : rd->base_dir, &p->embeds, err);
        if (st != SDC_OK && default_embeds)
            sdc_error_wrap(err, "--embeds");
    }
    if (st == SDC_OK && p->refiner_embeds) {
        st = resolve_embeds(rd, default_refiner_embeds ? NULL : rd->base_dir, &p->refiner_embeds,
                            err);
        if (st != SDC_OK)
            sdc_error_wrap(err, default_refiner_embeds ? "--refiner-embeds" : "refiner_embeds");
    }
    return st;
}

static sdc_status_t parse_json_line(const reader_t *rd, const char *text, size_t len,
                                    job_t *j, size_t index, sdc_error_t *err)
{
    if (has_escaped_nul(text))
        return sdc_error_set(err, SDC_ERR_FORMAT, "\\u0000 (NUL) inside a string");
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!o) {
        size_t col = end && end >= text ? (size_t)(end - text) + 1 : 1;
        return sdc_error_set(err, SDC_ERR_FORMAT, "invalid JSON at column %zu", col);
    }
    sdc_status_t st = SDC_OK;
    for (const char *e = end; e < text + len && st == SDC_OK; e++)
        if (*e != ' ' && *e != '\t')
            st = sdc_error_set(err, SDC_ERR_FORMAT,
                               "unexpected text after the JSON object at column %zu",
                               (size_t)(e - text) + 1);
    if (st == SDC_OK && !cJSON_IsObject(o))
        st = sdc_error_set(err, SDC_ERR_FORMAT, "a line starting with '{' must be a JSON object");
    if (st == SDC_OK)
        st = parse_object(rd, o, j, index, err);
    cJSON_Delete(o);
    return st;
}

static sdc_status_t parse_text_line(const reader_t *rd, const char *text, job_t *j,
                                    size_t index, sdc_error_t *err)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "prompt", text)) {
        cJSON_Delete(o);
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    }
    sdc_status_t st = parse_object(rd, o, j, index, err);
    cJSON_Delete(o);
    return st;
}

static char *trim(char *s, size_t *len)
{
    size_t n = *len;
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    while (*s == ' ' || *s == '\t')
        s++, n--;
    *len = n;
    return s;
}

static sdc_status_t parse_line(reader_t *rd, jobs_t *js, char *buf, size_t len,
                               sdc_error_t *err)
{
    if (len > SDC_JOB_PARAMS_JSON_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE, "%zu bytes, over the %d-byte limit of a line",
                             len, SDC_JOB_PARAMS_JSON_MAX);
    if (strlen(buf) != len)
        return sdc_error_set(err, SDC_ERR_FORMAT, "NUL byte at column %zu", strlen(buf) + 1);
    if (rd->line == 1 && len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
        buf += 3, len -= 3; /* a UTF-8 byte order mark */
    char *s = trim(buf, &len);
    if (len == 0 || s[0] == '#')
        return SDC_OK;
    job_t *j = NULL;
    sdc_status_t st = jobs_push(js, &j, err);
    if (st != SDC_OK)
        return st;
    j->line = rd->line;
    size_t index = js->n - 1;
    st = s[0] == '{' ? parse_json_line(rd, s, len, j, index, err)
                     : parse_text_line(rd, s, j, index, err);
    return st;
}

static int cmp_by_id(const void *a, const void *b)
{
    const job_t *x = *(job_t *const *)a, *y = *(job_t *const *)b;
    int c = strcmp(x->p.id, y->p.id);
    return c ? c : (x->line > y->line) - (x->line < y->line);
}

/* Two lines naming the same id would overwrite each other's images. */
static sdc_status_t check_unique_ids(const reader_t *rd, jobs_t *js, sdc_error_t *err)
{
    if (js->n < 2)
        return SDC_OK;
    job_t **by = malloc(js->n * sizeof(*by));
    if (!by)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < js->n; i++)
        by[i] = &js->v[i];
    qsort(by, js->n, sizeof(*by), cmp_by_id);
    sdc_status_t st = SDC_OK;
    for (size_t i = 1; i < js->n && st == SDC_OK; i++)
        if (strcmp(by[i - 1]->p.id, by[i]->p.id) == 0)
            st = sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s:%ld: job id '%s' is already used "
                               "on line %ld", rd->label, by[i]->line, by[i]->p.id,
                               by[i - 1]->line);
    free(by);
    return st;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static sdc_status_t read_prompts(const cli_t *c, jobs_t *js, sdc_error_t *err)
{
    int is_stdin = strcmp(c->prompts, "-") == 0;
    reader_t rd = {.cli = c, .label = is_stdin ? "(stdin)" : c->prompts, .js = js};
    FILE *f = is_stdin ? stdin : fopen(c->prompts, "r");
    if (!f)
        return sdc_error_set(err, errno == ENOENT ? SDC_ERR_NOT_FOUND : SDC_ERR_IO,
                             "--prompts %s: %s", c->prompts, strerror(errno));
    sdc_status_t st = SDC_OK;
    if (!(rd.base_dir = is_stdin ? strdup(".") : dir_of(c->prompts))) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        goto out;
    }
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n;
    errno = 0;
    while ((n = getline(&buf, &cap, f)) >= 0) {
        rd.line++;
        if ((st = parse_line(&rd, js, buf, (size_t)n, err)) != SDC_OK) {
            sdc_error_wrap(err, "%s:%ld", rd.label, rd.line);
            break;
        }
        errno = 0;
    }
    free(buf);
    if (st == SDC_OK && ferror(f))
        st = sdc_error_set(err, SDC_ERR_IO, "--prompts %s: read: %s", rd.label,
                           strerror(errno ? errno : EIO));
    if (st == SDC_OK && js->n == 0)
        st = sdc_error_set(err, SDC_ERR_INVALID_ARG, "--prompts %s: no jobs in the file "
                           "(%ld lines, all blank or comments)", rd.label, rd.line);
    if (st == SDC_OK)
        st = check_unique_ids(&rd, js, err);
out:
    free(rd.base_dir);
    if (!is_stdin)
        fclose(f);
    return st;
}

/* ---- output ------------------------------------------------------------------- */

static sdc_status_t make_dirs(const char *dir, sdc_error_t *err)
{
    char *p = strdup(dir);
    if (!p)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    sdc_status_t st = SDC_OK;
    for (char *s = p + 1; ; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char keep = *s;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            st = sdc_error_set(err, SDC_ERR_IO, "--out: cannot create %s: %s", p, strerror(errno));
            break;
        }
        *s = keep;
        if (!keep)
            break;
    }
    struct stat sb;
    if (st == SDC_OK && (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)))
        st = sdc_error_set(err, SDC_ERR_IO, "--out: %s is not a directory", dir);
    free(p);
    return st;
}

/* Writes via a temporary name and a rename: a reader never sees half a file. */
static sdc_status_t write_atomic(const char *dir, const char *name, const void *data, size_t len,
                                 sdc_error_t *err)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path) ||
        snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= (int)sizeof(tmp))
        return sdc_error_set(err, SDC_ERR_RANGE, "path %s/%s is too long", dir, name);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return sdc_error_set(err, SDC_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    int ok = fwrite(data, 1, len, f) == len;
    int saved = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    if (!ok || rename(tmp, path) != 0) {
        if (ok)
            saved = errno;
        unlink(tmp);
        return sdc_error_set(err, SDC_ERR_IO, "cannot write %s: %s", path, strerror(saved));
    }
    return SDC_OK;
}

static const char *job_state_label(const job_t *j)
{
    if (!j->submitted)
        return "not_submitted";
    if (j->fate == FATE_DONE)
        return "done";
    if (j->fate == FATE_FAILED)
        return "failed";
    return j->has_state ? sdc_job_state_name(j->state) : "queued";
}

/* DIR/jobs.jsonl: one object per job in file order. */
static sdc_status_t write_index(const cli_t *c, const jobs_t *js, sdc_error_t *err)
{
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    if (!m)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory writing jobs.jsonl");
    sdc_status_t st = SDC_OK;
    for (size_t i = 0; i < js->n && st == SDC_OK; i++) {
        const job_t *j = &js->v[i];
        char *params = NULL, *line = NULL;
        size_t plen;
        cJSON *o = cJSON_CreateObject(), *po = NULL;
        if ((st = sdc_job_params_to_json(&j->p, &params, &plen, err)) != SDC_OK) {
            cJSON_Delete(o);
            break;
        }
        char file[SDC_JOB_ID_MAX + 8];
        snprintf(file, sizeof(file), "%s.png", j->p.id);
        int ok = o && (po = cJSON_Parse(params)) && cJSON_AddNumberToObject(o, "line", (double)j->line) &&
                 cJSON_AddStringToObject(o, "id", j->p.id) &&
                 cJSON_AddStringToObject(o, "state", job_state_label(j));
        if (ok && j->has_state && j->fate == FATE_PENDING && j->state == SDC_JOB_DENOISING)
            ok = cJSON_AddNumberToObject(o, "step", (double)j->step) &&
                 cJSON_AddNumberToObject(o, "steps", (double)j->steps);
        if (ok && j->fate == FATE_DONE)
            ok = cJSON_AddStringToObject(o, "file", file) != NULL;
        if (ok && j->fate == FATE_FAILED)
            ok = cJSON_AddStringToObject(o, "error", j->error ? j->error : "unknown") != NULL;
        if (ok) {
            ok = cJSON_AddItemToObject(o, "params", po);
            if (ok) po = NULL;
        }
        if (ok && (line = cJSON_PrintUnformatted(o)))
            fprintf(m, "%s\n", line);
        else
            st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory writing jobs.jsonl");
        free(line);
        free(params);
        cJSON_Delete(po);
        cJSON_Delete(o);
    }
    if (fclose(m) != 0 && st == SDC_OK)
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory writing jobs.jsonl");
    if (st == SDC_OK)
        st = write_atomic(c->out, "jobs.jsonl", text, len, err);
    free(text);
    return st;
}

/* ---- progress ----------------------------------------------------------------- */

typedef struct {
    size_t total, done, failed, running, queued;
} counts_t;

static counts_t count_jobs(const jobs_t *js)
{
    counts_t k = {.total = 0};
    for (size_t i = 0; i < js->n; i++) {
        const job_t *j = &js->v[i];
        if (!j->submitted)
            continue;
        k.total++;
        if (j->fate == FATE_DONE)
            k.done++;
        else if (j->fate == FATE_FAILED)
            k.failed++;
        else if (j->has_state && j->state != SDC_JOB_QUEUED)
            k.running++;
        else
            k.queued++;
    }
    return k;
}

typedef struct {
    int tty, quiet;
    double t_start, t_last_log;
    int drawn; /* a bar is on the terminal's last line */
} progress_t;

static void fmt_eta(char *buf, size_t cap, double s)
{
    if (!isfinite(s) || s < 0)
        snprintf(buf, cap, "--");
    else if (s < 100)
        snprintf(buf, cap, "%.0f s", s);
    else if (s < 6000)
        snprintf(buf, cap, "%.0f min", s / 60);
    else
        snprintf(buf, cap, "%.1f h", s / 3600);
}

static void progress_show(progress_t *pg, const counts_t *k, int final)
{
    if (pg->quiet)
        return;
    double now = sdc_now(), el = now - pg->t_start;
    size_t finished = k->done + k->failed;
    double rate = el > 0 ? (double)k->done / el : 0;
    double frate = el > 0 ? (double)finished / el : 0;
    char eta[32];
    fmt_eta(eta, sizeof(eta), frate > 0 ? (double)(k->total - finished) / frate : NAN);
    if (!pg->tty) {
        if (!final && now - pg->t_last_log < SUBMIT_LOG_EVERY_S)
            return;
        pg->t_last_log = now;
        fprintf(stderr, "sdc-submit: %zu/%zu done, %zu failed, %zu running, %zu queued | "
                "%.2f images/s | ETA %s\n", k->done, k->total, k->failed, k->running, k->queued,
                rate, eta);
        return;
    }
    const int width = 30;
    int filled = k->total ? (int)((long)width * (long)finished / (long)k->total) : width;
    fprintf(stderr, "\rjobs [");
    for (int i = 0; i < width; i++)
        fputc(i < filled ? '=' : (i == filled ? '>' : ' '), stderr);
    fprintf(stderr, "] %zu/%zu", k->done, k->total);
    if (k->failed)
        fprintf(stderr, " (%zu failed)", k->failed);
    fprintf(stderr, "  %zu running  %.2f img/s  ETA %s \033[K", k->running, rate, eta);
    pg->drawn = 1;
    if (final) {
        fputc('\n', stderr);
        pg->drawn = 0;
    }
    fflush(stderr);
}

/* A message while a bar may be on screen: start a fresh line first. */
static void progress_break(progress_t *pg)
{
    if (pg->drawn) {
        fputc('\n', stderr);
        pg->drawn = 0;
    }
}

/* ---- submitting ----------------------------------------------------------------- */

static sdc_status_t submit_all(const cli_t *c, sdc_jobs_t *q, jobs_t *js, progress_t *pg,
                               sdc_error_t *err)
{
    size_t again = 0;
    for (size_t i = 0; i < js->n; i++) {
        job_t *j = &js->v[i];
        if (interrupted)
            return sdc_error_set(err, SDC_ERR_IO, "interrupted after submitting %zu of %zu jobs",
                                 i, js->n);
        sdc_status_t st = sdc_job_submit_image(q, &j->p, j->img, &j->existed, err);
        if (st != SDC_OK)
            return sdc_error_wrap(err, "%s:%ld: submitting job %s",
                                  strcmp(c->prompts, "-") ? c->prompts : "(stdin)", j->line,
                                  j->p.id);
        j->submitted = 1;
        again += (size_t)j->existed;
        if (pg->tty && !pg->quiet && (i % 64 == 63 || i + 1 == js->n)) {
            fprintf(stderr, "\rsubmitted %zu/%zu\033[K", i + 1, js->n);
            fflush(stderr);
        }
    }
    if (pg->tty && !pg->quiet)
        fputc('\r', stderr);
    if (!pg->quiet) {
        fprintf(stderr, "sdc-submit: submitted %zu job%s to %s", js->n, js->n == 1 ? "" : "s", c->url);
        if (again)
            fprintf(stderr, " (%zu of them had been submitted before with the same "
                    "parameters: not queued again)", again);
        fputc('\n', stderr);
    }
    return SDC_OK;
}

/* ---- waiting -------------------------------------------------------------------- */

static sdc_status_t fetch_result(const cli_t *c, sdc_jobs_t *q, job_t *j, sdc_error_t *err)
{
    unsigned char *png = NULL;
    size_t len = 0;
    sdc_status_t st = sdc_job_result_get(q, j->p.id, &png, &len, err);
    if (st == SDC_ERR_NOT_FOUND) {
        j->fate = FATE_FAILED;
        job_set_error(j, "done, but its result is gone from Redis (expired?)");
        return SDC_OK;
    }
    if (st != SDC_OK)
        return st;
    char name[SDC_JOB_ID_MAX + 8];
    snprintf(name, sizeof(name), "%s.png", j->p.id);
    sdc_error_t werr = {0};
    if (write_atomic(c->out, name, png, len, &werr) != SDC_OK) {
        j->fate = FATE_FAILED;
        job_set_error(j, "%s", werr.msg);
    } else {
        j->fate = FATE_DONE;
    }
    free(png);
    return SDC_OK;
}

/* One look at one job. A Redis error leaves the job as it was. */
static sdc_status_t poll_job(const cli_t *c, sdc_jobs_t *q, job_t *j, sdc_error_t *err)
{
    sdc_job_status_t s;
    sdc_status_t st = sdc_job_get(q, j->p.id, &s, err);
    if (st == SDC_ERR_NOT_FOUND) {
        j->fate = FATE_FAILED;
        job_set_error(j, "the job is gone from Redis (expired or deleted)");
        return SDC_OK;
    }
    if (st != SDC_OK)
        return st;
    j->state = s.state;
    j->has_state = 1;
    j->step = s.step;
    j->steps = s.steps;
    if (s.state == SDC_JOB_FAILED) {
        j->fate = FATE_FAILED;
        job_set_error(j, "%s", s.error[0] ? s.error : "failed (no reason recorded)");
    } else if (s.state == SDC_JOB_CANCELLED) {
        j->fate = FATE_FAILED;
        job_set_error(j, "cancelled");
    } else if (s.state == SDC_JOB_DONE) {
        return fetch_result(c, q, j, err);
    }
    return SDC_OK;
}

typedef enum { WAIT_ALL_FINISHED, WAIT_TIMED_OUT, WAIT_INTERRUPTED } wait_end_t;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !interrupted)
        ;
}

static sdc_status_t wait_all(const cli_t *c, sdc_jobs_t *q, jobs_t *js, progress_t *pg,
                             wait_end_t *end, sdc_error_t *err)
{
    double t0 = sdc_now(), failing_since = 0;
    for (;;) {
        sdc_status_t st = SDC_OK;
        for (size_t i = 0; i < js->n && st == SDC_OK && !interrupted; i++)
            if (js->v[i].submitted && js->v[i].fate == FATE_PENDING)
                st = poll_job(c, q, &js->v[i], err);
        if (st != SDC_OK) {
            /* Redis may be restarting (its data is on disk): keep trying a while. */
            if (!failing_since)
                failing_since = sdc_now();
            if (sdc_now() - failing_since > SUBMIT_REDIS_GIVE_UP_S)
                return sdc_error_wrap(err, "giving up after %.0f s of Redis errors",
                                      SUBMIT_REDIS_GIVE_UP_S);
            progress_break(pg);
            fprintf(stderr, "sdc-submit: warning: %s; retrying\n", err->msg);
        } else {
            failing_since = 0;
        }
        counts_t k = count_jobs(js);
        progress_show(pg, &k, 0);
        if (k.done + k.failed == k.total) {
            *end = WAIT_ALL_FINISHED;
            return SDC_OK;
        }
        if (interrupted) {
            *end = WAIT_INTERRUPTED;
            return SDC_OK;
        }
        if (c->timeout_s > 0 && sdc_now() - t0 >= c->timeout_s) {
            *end = WAIT_TIMED_OUT;
            return SDC_OK;
        }
        sleep_ms(c->poll_ms);
    }
}

/* ---- summary -------------------------------------------------------------------- */

static void describe_pending(const job_t *j, char *buf, size_t cap)
{
    if (!j->has_state || j->state == SDC_JOB_QUEUED)
        snprintf(buf, cap, "still queued");
    else if (j->state == SDC_JOB_DENOISING)
        snprintf(buf, cap, "still denoising, step %" PRId64 "/%" PRId64, j->step, j->steps);
    else
        snprintf(buf, cap, "still %s", sdc_job_state_name(j->state));
}

static void print_summary(const cli_t *c, const jobs_t *js, double wall_s, wait_end_t end)
{
    counts_t k = count_jobs(js);
    size_t unfinished = k.total - k.done - k.failed;
    fprintf(stderr, "sdc-submit: %zu job%s: %zu done, %zu failed", k.total, k.total == 1 ? "" : "s", k.done, k.failed);
    if (unfinished)
        fprintf(stderr, ", %zu unfinished (%s)", unfinished,
                end == WAIT_TIMED_OUT ? "timed out" : "interrupted");
    fprintf(stderr, " in %.1f s (%.2f images/s)\n", wall_s, wall_s > 0 ? k.done / wall_s : 0.0);
    const size_t show = 20;
    size_t shown = 0;
    for (size_t i = 0; i < js->n; i++) {
        const job_t *j = &js->v[i];
        if (!j->submitted || j->fate == FATE_DONE)
            continue;
        if (shown++ == show) {
            fprintf(stderr, "  ... and %zu more (see %s/jobs.jsonl)\n",
                    k.failed + unfinished - show, c->out);
            break;
        }
        char what[96];
        if (j->fate == FATE_FAILED)
            fprintf(stderr, "  failed: line %ld, job %s: %s\n", j->line, j->p.id,
                    j->error ? j->error : "unknown");
        else {
            describe_pending(j, what, sizeof(what));
            fprintf(stderr, "  unfinished: line %ld, job %s: %s\n", j->line, j->p.id, what);
        }
    }
    fprintf(stderr, "sdc-submit: images in %s/, index in %s/jobs.jsonl\n", c->out, c->out);
}

/* Jobs asking for the refiner need a refiner node in the cluster's registry. */
static sdc_status_t check_refiner(const cli_t *c, const jobs_t *js, sdc_redis_t *r,
                                  sdc_error_t *err)
{
    const job_t *want = NULL;
    for (size_t i = 0; i < js->n && !want; i++)
        if (js->v[i].p.refine)
            want = &js->v[i];
    if (!want)
        return SDC_OK;
    sdc_node_t *nodes;
    size_t n;
    sdc_status_t st = sdc_node_list(r, &nodes, &n, err);
    if (st != SDC_OK)
        return st;
    int found = 0;
    for (size_t i = 0; i < n; i++)
        found |= nodes[i].role == SDC_ROLE_REFINER;
    sdc_nodes_free(nodes, n);
    if (found)
        return SDC_OK;
    return sdc_error_set(err, SDC_ERR_UNSUPPORTED, "%s:%ld: job %s asks for 'refine', but this "
                         "cluster has no refiner node (none is registered); nothing was "
                         "submitted", strcmp(c->prompts, "-") ? c->prompts : "(stdin)",
                         want->line, want->p.id);
}

/* ---- main ------------------------------------------------------------------------- */

static int open_queue(const cli_t *c, sdc_redis_t **r, sdc_jobs_t *q)
{
    sdc_error_t err = {0};
    sdc_redis_opts_t ro = {.url = c->url, .prefix = c->prefix};
    if (sdc_redis_open(r, &ro, &err) != SDC_OK) {
        fprintf(stderr, "sdc-submit: cannot use Redis at %s: %s\n"
                "sdc-submit: is the cluster up? (deploy/local.sh status; --redis URL)\n",
                c->url, err.msg);
        return 1;
    }
    sdc_jobs_opts_t jo = {.max_image_bytes = (size_t)c->max_image_bytes};
    if (sdc_jobs_init(q, *r, &jo, &err) != SDC_OK) {
        fprintf(stderr, "sdc-submit: %s\n", err.msg);
        sdc_redis_close(*r);
        *r = NULL;
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    cli_t c = {
        .url = getenv(SUBMIT_URL_ENV) && *getenv(SUBMIT_URL_ENV) ? getenv(SUBMIT_URL_ENV)
                                                                  : SUBMIT_DEFAULT_URL,
        .steps = SDC_JOB_STEPS_DEFAULT,
        .trim_text = 1,
        .check_embeds = 1,
        .max_image_bytes = SDC_JOB_IMAGE_DEFAULT_CAP,
        .refine_guidance = -1,
        .refine_strength = -1,
        .poll_ms = 200,
    };
    sdc_log_set_level(SDC_LOG_WARN);
    sdc_log_init_from_env();
    int rc = parse_args(argc, argv, &c);
    if (rc >= 0)
        return rc;

    jobs_t js = {0};
    sdc_redis_t *r = NULL;
    sdc_jobs_t q;
    sdc_error_t err = {0};
    double t0 = sdc_now();
    progress_t pg = {.tty = isatty(STDERR_FILENO), .quiet = c.quiet};
    wait_end_t end = WAIT_ALL_FINISHED;
    rc = 1;

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    if (read_prompts(&c, &js, &err) != SDC_OK || make_dirs(c.out, &err) != SDC_OK ||
        write_index(&c, &js, &err) != SDC_OK) {
        fprintf(stderr, "sdc-submit: %s\n", err.msg);
        goto out;
    }
    if (open_queue(&c, &r, &q))
        goto out;
    if (check_refiner(&c, &js, r, &err) != SDC_OK) {
        fprintf(stderr, "sdc-submit: %s\n", err.msg);
        goto out;
    }
    sdc_status_t st = submit_all(&c, &q, &js, &pg, &err);
    sdc_error_t ierr = {0};
    if (write_index(&c, &js, &ierr) != SDC_OK)
        fprintf(stderr, "sdc-submit: %s\n", ierr.msg);
    if (st != SDC_OK) {
        fprintf(stderr, "sdc-submit: %s\n", err.msg);
        goto out;
    }
    if (!c.wait) {
        if (!c.quiet)
            fprintf(stderr, "sdc-submit: job ids in %s/jobs.jsonl\n", c.out);
        rc = 0;
        goto out;
    }
    pg.t_start = sdc_now();
    st = wait_all(&c, &q, &js, &pg, &end, &err);
    counts_t k = count_jobs(&js);
    progress_show(&pg, &k, 1);
    if (st != SDC_OK)
        fprintf(stderr, "sdc-submit: %s\n", err.msg);
    if (write_index(&c, &js, &ierr) != SDC_OK) {
        fprintf(stderr, "sdc-submit: %s\n", ierr.msg);
        st = ierr.code;
    }
    if (!c.quiet)
        print_summary(&c, &js, sdc_now() - t0, end);
    if (st != SDC_OK || k.failed)
        rc = 1;
    else if (end == WAIT_INTERRUPTED)
        rc = EXIT_INTERRUPTED;
    else if (end == WAIT_TIMED_OUT)
        rc = EXIT_TIMEOUT;
    else
        rc = 0;
out:
    if (r)
        sdc_redis_close(r);
    jobs_free(&js);
    return rc;
}
