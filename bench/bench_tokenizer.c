/*
 * bench_tokenizer: throughput of sdc_bpe_encode on one large text, in MB/s
 * and tokens/s, single-threaded.
 *
 *   bench_tokenizer --make-text FILE [--mb N]   write the benchmark text
 *   bench_tokenizer --tokenizer DIR --text FILE [--lines] [--reps R] [--warmup W] [--json]
 *
 * The text is deterministic (a fixed generator and seed): mixed Chinese and
 * English prompts, with digits, punctuation and newlines, the material the
 * text encoder sees. tools/goldens/bench_tokenizer_hf.py times HF
 * `tokenizers` on the same file, and bench/run_tokenizer.sh runs both and
 * writes the comparison. Both sides print an ids checksum (sum of
 * (id + 1) * 1099511628211^i, modulo 2^64) so the runner can confirm they
 * produced the same ids. With --lines each line is encoded by its own call
 * (prompt-sized inputs: per-call overhead counts) instead of the whole text
 * in one. This program measures; tests/ checks correctness.
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/timer.h"
#include "model/tokenizer_bpe.h"

#define EXIT_USAGE 2
#define MAX_MB 1024
#define MAX_REPS 1000

typedef struct {
    const char *tokenizer, *text, *make_text;
    long mb, reps, warmup;
    int json, lines;
} bench_opts_t;

static const char *const english[] = {
    "A cat holding a sign that says \"hello world\"",
    "A photorealistic portrait of an astronaut riding a horse on Mars, 8k, highly detailed.",
    "An oil painting of a lighthouse at dusk, waves crashing against the rocks",
    "Cinematic shot of a futuristic city at night with neon signs reading \"OPEN 24/7\".",
    "A cozy reading nook with a window seat, rain outside, warm lamp light, 35mm film",
    "Minimalist logo, flat vector, two colors: #FF5733 and #1E90FF",
    "The quick brown fox jumps over the lazy dog; it's 3:45 pm and we'll be late.",
    "Isometric 3D render of a tiny island with a windmill, soft shadows, pastel palette",
    "A bowl of ramen with a soft-boiled egg, steam rising, top-down food photography",
    "Watercolor sketch of a fox in the snow -- muted tones, no text, 1920x1080",
};

static const char *const chinese[] = {
    "一个身穿唐朝服饰的女子，站在盛开的樱花树下",
    "用青花瓷风格写出“春”字",
    "一只橘猫坐在窗台上，窗外下着小雨，温暖的灯光，胶片质感。",
    "水墨画风格的山水，远处有一座小桥和几间茅屋。",
    "赛博朋克风格的城市夜景，霓虹灯招牌上写着“欢迎光临”。",
    "一碗热腾腾的兰州拉面，牛肉片和香菜，俯拍，美食摄影。",
    "故宫的雪景，红墙黄瓦，游客稀少，清晨的阳光。",
    "海报设计：标题为“中秋快乐”，月亮、玉兔和桂花。",
    "一位老人在公园里打太极拳，背景是2023年秋天的银杏树。",
    "书法作品，行书写“厚德载物”四个大字，宣纸，印章。",
};

static const char *const joiners[] = {" ", "\n", ", ", "，", "\n\n", " -- ", "。"};

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int make_text(const char *path, long mb)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "bench_tokenizer: %s: %s\n", path, strerror(errno));
        return 1;
    }
    uint64_t seed = 20250611, want = (uint64_t)mb << 20, written = 0;
    while (written < want) {
        uint64_t r = splitmix64(&seed);
        const char *s = (r & 1) ? english[(r >> 8) % COUNT(english)]
                                : chinese[(r >> 8) % COUNT(chinese)];
        written += fwrite(s, 1, strlen(s), f);
        if ((r >> 32) % 7 == 0) {
            char num[32];
            int k = snprintf(num, sizeof(num), " %llu", (unsigned long long)(r >> 40));
            written += fwrite(num, 1, (size_t)k, f);
        }
        const char *j = joiners[(r >> 20) % COUNT(joiners)];
        written += fwrite(j, 1, strlen(j), f);
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "bench_tokenizer: %s: write failed\n", path);
        return 1;
    }
    fprintf(stderr, "bench_tokenizer: wrote %llu bytes to %s\n", (unsigned long long)written,
            path);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: bench_tokenizer --make-text FILE [--mb N]\n"
"       bench_tokenizer --tokenizer DIR --text FILE [--lines] [--reps R] [--warmup W]\n"
"                       [--json]\n"
"\n"
"Times sdc_bpe_encode on the whole text (one call per repetition, one thread)\n"
"and reports the median, MB/s and tokens/s.\n"
"\n"
"  --make-text FILE  write the deterministic mixed Chinese/English text and exit\n"
"  --mb N            its size in MiB (default 4)\n"
"  --tokenizer DIR   tokenizer directory (tests/data/qwen2.5-tokenizer)\n"
"  --text FILE       text to encode\n"
"  --lines           encode each line with its own call (default: the whole text)\n"
"  --reps R          timed repetitions (default 5)\n"
"  --warmup W        untimed repetitions first (default 1)\n"
"  --json            one JSON object on stdout instead of a summary\n");
}

static int parse_long(const char *opt, const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "bench_tokenizer: %s: '%s' is not an integer in [%ld, %ld]\n", opt, v,
                lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_args(int argc, char **argv, bench_opts_t *o)
{
    static const struct option longs[] = {
        {"tokenizer", required_argument, NULL, 't'}, {"text", required_argument, NULL, 'x'},
        {"make-text", required_argument, NULL, 'm'}, {"mb", required_argument, NULL, 'n'},
        {"reps", required_argument, NULL, 'r'},      {"warmup", required_argument, NULL, 'w'},
        {"json", no_argument, NULL, 'j'},            {"help", no_argument, NULL, 'h'},
        {"lines", no_argument, NULL, 'l'},
        {NULL, 0, NULL, 0},
    };
    *o = (bench_opts_t){.mb = 4, .reps = 5, .warmup = 1};
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", longs, NULL)) != -1) {
        switch (c) {
        case 't': o->tokenizer = optarg; break;
        case 'x': o->text = optarg; break;
        case 'm': o->make_text = optarg; break;
        case 'n': if (parse_long("--mb", optarg, 1, MAX_MB, &o->mb)) return -1; break;
        case 'r': if (parse_long("--reps", optarg, 1, MAX_REPS, &o->reps)) return -1; break;
        case 'w': if (parse_long("--warmup", optarg, 0, MAX_REPS, &o->warmup)) return -1; break;
        case 'j': o->json = 1; break;
        case 'l': o->lines = 1; break;
        case 'h': usage(stdout); exit(0);
        case ':': fprintf(stderr, "bench_tokenizer: %s needs a value\n", argv[optind - 1]); return -1;
        default: fprintf(stderr, "bench_tokenizer: unknown option '%s'\n", argv[optind - 1]); return -1;
        }
    }
    if (!o->make_text && (!o->tokenizer || !o->text)) {
        fprintf(stderr, "bench_tokenizer: need --make-text FILE, or --tokenizer DIR and --text FILE\n");
        return -1;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 20, n = 0, k;
    char *buf = malloc(cap);
    while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

/* One timed repetition: the whole text in one call, or line by line. The
 * checksum (see the top of the file) is taken after the clock stops. */
static int encode_all(sdc_bpe_t *tok, const char *text, size_t len, int lines, size_t *ntok,
                      uint64_t *checksum)
{
    size_t cap = 0, n = 0, pos = 0;
    int32_t *all = NULL;
    *ntok = 0;
    *checksum = 0;
    uint64_t p = 1;
    while (pos < len || (!lines && pos == 0)) {
        const char *nl = lines ? memchr(text + pos, '\n', len - pos) : NULL;
        size_t end = nl ? (size_t)(nl - text) : len;
        sdc_error_t err = {0};
        int32_t *ids = NULL;
        size_t k = 0;
        if (sdc_bpe_encode(tok, text + pos, end - pos, &ids, &k, &err) != SDC_OK) {
            fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
            free(all);
            return 1;
        }
        if (n + k > cap) {
            cap = (n + k) * 2;
            int32_t *na = realloc(all, cap * sizeof(int32_t));
            if (!na) {
                fprintf(stderr, "bench_tokenizer: out of memory\n");
                free(ids);
                free(all);
                return 1;
            }
            all = na;
        }
        if (k)
            memcpy(all + n, ids, k * sizeof(int32_t));
        n += k;
        free(ids);
        pos = end + (nl != NULL);
        if (!lines)
            break;
    }
    for (size_t i = 0; i < n; i++) {
        *checksum += ((uint64_t)all[i] + 1) * p;
        p *= 1099511628211ull;
    }
    *ntok = n;
    free(all);
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts_t o;
    if (parse_args(argc, argv, &o) < 0)
        return EXIT_USAGE;
    if (o.make_text)
        return make_text(o.make_text, o.mb);

    size_t len = 0;
    char *text = read_all(o.text, &len);
    if (!text) {
        fprintf(stderr, "bench_tokenizer: cannot read %s: %s\n", o.text, strerror(errno));
        return 1;
    }
    sdc_error_t err = {0};
    sdc_bpe_t *tok = NULL;
    double t0 = sdc_now();
    if (sdc_bpe_load(o.tokenizer, &tok, &err) != SDC_OK) {
        fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
        free(text);
        return 1;
    }
    double load_s = sdc_now() - t0;
    double *times = calloc((size_t)o.reps, sizeof(double));
    size_t ntok = 0;
    uint64_t checksum = 0;
    int rc = times ? 0 : 1;
    for (long r = 0; r < o.warmup + o.reps && times && !rc; r++) {
        double a = sdc_now();
        rc = encode_all(tok, text, len, o.lines, &ntok, &checksum);
        double b = sdc_now();
        if (r >= o.warmup)
            times[r - o.warmup] = b - a;
    }
    if (!rc && times) {
        double *sorted = malloc((size_t)o.reps * sizeof(double));
        memcpy(sorted, times, (size_t)o.reps * sizeof(double));
        qsort(sorted, (size_t)o.reps, sizeof(double), cmp_double);
        double med = o.reps % 2 ? sorted[o.reps / 2]
                                : (sorted[o.reps / 2 - 1] + sorted[o.reps / 2]) / 2;
        double mbps = (double)len / 1e6 / med, tps = (double)ntok / med;
        if (o.json) {
            printf("{\"impl\": \"sdc\", \"mode\": \"%s\", \"bytes\": %zu, \"tokens\": %zu, \"ids_checksum\": "
                   "\"%016llx\", \"load_s\": %.4f, \"median_s\": %.6f, \"min_s\": %.6f, "
                   "\"mb_per_s\": %.3f, \"tokens_per_s\": %.0f, \"reps\": %ld, \"warmup\": %ld, "
                   "\"threads\": 1, \"times_s\": [",
                   o.lines ? "lines" : "whole", len, ntok, (unsigned long long)checksum, load_s,
                   med, sorted[0], mbps, tps, o.reps, o.warmup);
            for (long i = 0; i < o.reps; i++)
                printf("%s%.6f", i ? ", " : "", times[i]);
            printf("]}\n");
        } else {
            printf("sdc (%s): %zu bytes -> %zu tokens; load %.3f s; median %.4f s (min %.4f) over %ld "
                   "reps: %.2f MB/s, %.0f tokens/s; ids checksum %016llx\n",
                   o.lines ? "lines" : "whole", len, ntok, load_s, med, sorted[0], o.reps, mbps,
                   tps, (unsigned long long)checksum);
        }
        free(sorted);
    }
    free(times);
    sdc_bpe_free(tok);
    free(text);
    return rc;
}
