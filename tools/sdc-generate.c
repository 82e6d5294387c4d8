/*
 * sdc-generate: one process, no services: a prompt (or precomputed text
 * embeddings) + parameters -> PNG. The reference path every cluster result
 * is compared against.
 *
 * With a prompt the text encoders run first and are freed before the DiT
 * and VAE are loaded, so the LLM and the DiT are never in memory together.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cli.h"
#include "backend/backend.h"
#include "common/image.h"
#include "common/log.h"
#include "common/png.h"
#include "common/safetensors.h"
#include "common/timer.h"
#include "model/embeds.h"
#include "model/img2img.h"
#include "model/pipeline.h"
#include "model/refiner.h"
#include "model/text_encoder.h"

#define PROG "sdc-generate"
#define EXIT_USAGE 2
/* --prompt-file: far beyond any useful prompt (the text encoder keeps 1000
 * tokens), small enough to read into memory. */
#define PROMPT_FILE_MAX ((size_t)64 << 20)

static void usage(FILE *f)
{
    fprintf(f,
"usage: sdc-generate --model DIR (--prompt TEXT | --embeds FILE) [options] -o OUT.png\n"
"       sdc-generate --model DIR --prompt TEXT --dump-embeds FILE\n"
"\n"
"Generates one image with a HunyuanImage-2.1-family model in this process.\n"
"\n"
"Required: --model, one of --prompt / --prompt-file / --embeds, and --output\n"
"(or --dump-embeds).\n"
"  -m, --model DIR          model directory in diffusers layout (model_index.json,\n"
"                           transformer/, vae/, scheduler/, guider/ ... and, for\n"
"                           --prompt, text_encoder/, tokenizer/, text_encoder_2/,\n"
"                           tokenizer_2/)\n"
"  -p, --prompt TEXT        the prompt (Chinese or English; text in quotes, '..',\n"
"                           \"..\", \xe2\x80\x98..\xe2\x80\x99 or \xe2\x80\x9c..\xe2\x80\x9d, goes to the glyph encoder). The text\n"
"                           encoder keeps 1000 tokens; longer prompts are cut with a\n"
"                           warning\n"
"      --prompt-file FILE   read the prompt from FILE, byte for byte: NUL bytes are\n"
"                           characters, invalid UTF-8 becomes U+FFFD\n"
"  -e, --embeds FILE        instead of a prompt: text conditioning as a safetensors\n"
"                           file: prompt_embeds, prompt_embeds_mask [, prompt_embeds_2,\n"
"                           prompt_embeds_mask_2] and, for guided models, the same with\n"
"                           negative_ prefix\n"
"  -o, --output FILE        PNG to write (optional with --dump-embeds)\n"
"\n"
"Options:\n"
"  -n, --negative-prompt TEXT  negative prompt for guided models (default: empty, as\n"
"                           diffusers uses when none is given)\n"
"      --dump-embeds FILE   write the prompt's embeddings in the --embeds format; without\n"
"                           -o, stop there\n"
"  -W, --width N            image width in pixels (default: the model's default size)\n"
"  -H, --height N           image height in pixels (default: the model's default size)\n"
"  -s, --steps N            denoising steps (default 50)\n"
"  -g, --guidance G         guidance scale: the distilled guidance of guidance-embedding\n"
"                           models (default 3.25), else overrides the guider's\n"
"                           guidance_scale (default: the model's guider config)\n"
"  -S, --seed N             noise seed, 0..2^64-1 (default 0)\n"
"      --no-trim-text       keep padded text tokens (masked) instead of dropping them\n"
"      --latent-out FILE    also write the final latent as safetensors ('latent')\n"
"  -t, --threads N          CPU threads (default: all cores)\n"
"      --backend NAME       compute backend: cpu (default) or cuda\n"
"  -q, --quiet              no progress bar or summary\n"
"      --log-level LEVEL    debug, info, warn (default), error\n"
"  -h, --help               this help\n"
"\n"
"\n"
"Image-to-image:\n"
"      --init-image FILE    start from this PNG or JPEG image, noised to --strength,\n"
"                           instead of from pure noise (as diffusers' img2img\n"
"                           pipelines). It must already have the output size, which\n"
"                           -W / -H default to: sdc does not resample images\n"
"      --strength S         0..1 (default 0.6): the fraction of the --steps schedule\n"
"                           that runs; 1 ignores the image (text-to-image), 0 returns\n"
"                           it encoded and decoded\n"
"\n"
"Refiner (HunyuanImage-2.1 refiner, HunyuanImageRefinerPipeline):\n"
"      --refiner DIR        refine the generated image with the refiner model in DIR\n"
"                           (model_index.json: HunyuanImageRefinerPipeline); -o gets\n"
"                           the refined image\n"
"      --refine-image FILE  refine this PNG or JPEG image instead of generating one\n"
"                           (needs --refiner and a prompt or --refiner-embeds; no\n"
"                           --model)\n"
"      --refine-width N     width of the refined image (default: the input's). A\n"
"      --refine-height N    different size resamples the input first with Lanczos,\n"
"                           exactly as diffusers' image processor (PIL) does, e.g.\n"
"                           2x the base size to upscale. Multiples of the refiner's\n"
"                           VAE factor (16 for the released model), at most 8192\n"
"      --refiner-embeds FILE  the refiner's text conditioning as a file (--embeds\n"
"                           format, prompt_embeds [+ mask]) instead of running the\n"
"                           refiner's text encoder on the prompt (its text_encoder/,\n"
"                           tokenizer/: another chat template, 256 tokens kept)\n"
"      --base-output FILE   with --refiner: also write the unrefined image\n"
"      --refine-steps N     refiner steps (default 4)\n"
"      --refine-strength S  0..1 (default 0.25): the share of noise blended into the\n"
"                           image latents the refiner is conditioned on\n"
"      --refine-guidance G  the refiner's distilled guidance scale (default 3.25)\n"
"                           The refiner uses --seed for its noise and --prompt\n"
"                           (--negative-prompt only if its model has a guider) too.\n"
"\n"
"Exit status: 0 on success, 1 on a runtime error, 2 on a usage error.\n");
}




typedef struct {
    int tty;
    int quiet;
} progress_ctx_t;

static void on_progress(void *ctx_, int step, int n_steps, double elapsed)
{
    progress_ctx_t *ctx = ctx_;
    if (ctx->quiet) return;
    if (!ctx->tty) {
        SDC_INFO("step %d/%d (%.2f s)", step, n_steps, elapsed);
        return;
    }
    const int width = 30;
    int filled = (int)((long)width * step / n_steps);
    double per = elapsed / step;
    fprintf(stderr, "\rdenoising [");
    for (int i = 0; i < width; i++) fputc(i < filled ? '=' : (i == filled ? '>' : ' '), stderr);
    fprintf(stderr, "] %d/%d  %.2f s/step  ETA %.1f s ", step, n_steps, per,
            per * (n_steps - step));
    if (step == n_steps) fputc('\n', stderr);
    fflush(stderr);
}

static void override_guidance(sdc_guider_config_t *g, double scale)
{
    if (g->kind != SDC_GUIDER_NONE) g->guidance_scale = scale;
}

static int write_latent(const char *path, const float *latent, int64_t c, int64_t h, int64_t w)
{
    sdc_error_t err = {0};
    sdc_tensor_t t;
    int64_t shape[4] = {1, c, h, w};
    const char *name = "latent";
    sdc_tensor_init(&t, SDC_DTYPE_F32, 4, shape, (void *)latent);
    if (sdc_st_write(path, 1, &name, &t, &err) != SDC_OK) {
        fprintf(stderr, "sdc-generate: --latent-out: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* The whole file as bytes (NULs kept). */
static int read_prompt_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "sdc-generate: --prompt-file: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 0, n = 0;
    char *buf = NULL;
    int rc = -1;
    for (;;) {
        if (n == cap) {
            if (cap >= PROMPT_FILE_MAX) {
                fprintf(stderr, "sdc-generate: --prompt-file: %s is larger than %zu MiB\n", path,
                        PROMPT_FILE_MAX >> 20);
                goto out;
            }
            size_t ncap = cap ? cap * 2 : 4096;
            char *p = realloc(buf, ncap);
            if (!p) {
                fprintf(stderr, "sdc-generate: --prompt-file: out of memory reading %s\n", path);
                goto out;
            }
            buf = p;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, "sdc-generate: --prompt-file: %s: %s\n", path, strerror(errno));
        goto out;
    }
    *out = buf;
    *len = n;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    fclose(f);
    return rc;
}

typedef struct {
    const char *text; /* NULL: not given */
    size_t len;
} prompt_t;

/* Prompt (and, when the chosen guider needs it, negative prompt) ->
 * embeddings, as HunyuanImagePipeline.encode_prompt. Only configs are read
 * besides the text encoders, which are freed before returning. */
static sdc_status_t encode_prompts(sdc_backend_t *be, const char *model, const prompt_t *pos,
                                   const prompt_t *neg, int steps, int quiet, sdc_embeds_t *emb,
                                   sdc_error_t *err)
{
    char path[4096];
    sdc_dit_config_t dc;
    sdc_guider_config_t g, og;
    sdc_text_encoder_t *te = NULL;
    sdc_text_info_t info;
    sdc_status_t st;
    memset(emb, 0, sizeof(*emb));
    if (snprintf(path, sizeof(path), "%s/transformer/config.json", model) >= (int)sizeof(path))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: path too long", model);
    st = sdc_dit_config_load(&dc, path, err);
    if (st == SDC_OK) st = sdc_pipeline_load_guiders(model, &g, &og, err);
    if (st == SDC_OK)
        st = sdc_text_encoder_open(&te, be, model, dc.text_embed_dim, dc.text_embed_2_dim, err);
    if (st != SDC_OK) return st;
    double t0 = sdc_now();
    st = sdc_text_encoder_encode(te, pos->text, pos->len, &emb->pos, &info, err);
    if (st != SDC_OK) goto out;
    sdc_text_cond_t c;
    sdc_embeds_cond(&emb->pos, &c);
    const sdc_guider_config_t *chosen =
        sdc_guider_select(&g, &og, sdc_text_cond_has_glyph(&c, dc.text_embed_2_dim));
    if (chosen && sdc_guider_needs_uncond(chosen, steps)) {
        st = sdc_text_encoder_encode(te, neg->text ? neg->text : "", neg->text ? neg->len : 0,
                                     &emb->neg, NULL, err);
        if (st != SDC_OK) goto out;
        emb->has_neg = 1;
    } else if (neg->text) {
        SDC_INFO("the model's guider makes no unconditional pass: --negative-prompt is unused");
    }
    if (!quiet)
        fprintf(stderr,
                "sdc-generate: prompt: %zu tokens (%lld encoded), quoted text: %zu bytes (%lld "
                "ByT5 tokens)%s; text encoders %.2f s\n",
                info.n_tokens - SDC_TEXT_DROP_TOKENS, (long long)info.n_valid, info.glyph_bytes,
                (long long)info.n_valid_2, emb->has_neg ? ", with negative prompt" : "",
                sdc_now() - t0);
out:
    sdc_text_encoder_free(te);
    if (st != SDC_OK) sdc_embeds_free(emb);
    return st;
}

typedef struct {
    const char *dir, *embeds, *image, *base_out;
    prompt_t prompt, negative; /* for the refiner's text encoder */
    sdc_refiner_params_t rp;
} refine_opts_t;

/* The refiner's text conditioning: its text encoder on the prompt (loaded
 * and freed here, before the refiner's DiT), or --refiner-embeds. */
static sdc_status_t refiner_text(sdc_backend_t *be, const refine_opts_t *ro, int quiet,
                                 sdc_embeds_t *emb, sdc_error_t *err)
{
    sdc_status_t st;
    if (ro->embeds) {
        char path[4096];
        sdc_dit_config_t dc;
        if ((st = sdc_refiner_check_dir(ro->dir, err)) != SDC_OK) return st;
        if (snprintf(path, sizeof(path), "%s/transformer/config.json", ro->dir) >=
            (int)sizeof(path))
            return sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: path too long", ro->dir);
        if ((st = sdc_dit_config_load(&dc, path, err)) != SDC_OK) return st;
        st = sdc_embeds_load(emb, ro->embeds, dc.text_embed_dim, dc.text_embed_2_dim, err);
        if (st != SDC_OK) sdc_error_wrap(err, "--refiner-embeds");
        return st;
    }
    sdc_text_info_t info;
    double t0 = sdc_now();
    st = sdc_refiner_encode_prompt(be, ro->dir, ro->prompt.text, ro->prompt.len,
                                   ro->negative.text, ro->negative.len, ro->rp.steps, emb, &info,
                                   err);
    if (st != SDC_OK) return st;
    if (ro->negative.text && !emb->has_neg)
        SDC_INFO("the refiner makes no unconditional pass: --negative-prompt is unused there");
    if (!quiet)
        fprintf(stderr, "sdc-generate: refiner prompt: %zu tokens (%lld encoded)%s; text encoder "
                        "%.2f s\n",
                info.n_tokens - (size_t)sdc_text_profile_refiner.drop_tokens,
                (long long)info.n_valid, emb->has_neg ? ", with negative prompt" : "",
                sdc_now() - t0);
    return SDC_OK;
}

/* Refines rgb (w x h) with the refiner model; *out gets the refined RGB8
 * of *ow x *oh (ro->rp's size, resampled from w x h when it differs). The
 * refiner is loaded here and freed before returning. */
static sdc_status_t refine(sdc_backend_t *be, const refine_opts_t *ro, const uint8_t *rgb, int w,
                           int h, int quiet, uint8_t **out, int *ow, int *oh, sdc_error_t *err)
{
    sdc_refiner_t *r = NULL;
    sdc_embeds_t emb;
    int have_emb = 0;
    sdc_status_t st = refiner_text(be, ro, quiet, &emb, err);
    if (st != SDC_OK) return st;
    have_emb = 1;
    double t0 = sdc_now();
    st = sdc_refiner_open(&r, be, ro->dir, err);
    if (st != SDC_OK) goto out;
    sdc_refiner_output_size(&ro->rp, w, h, ow, oh);
    st = sdc_refiner_check(r, *ow, *oh, &ro->rp, err);
    if (st != SDC_OK) goto out;
    sdc_text_cond_t pos, neg;
    sdc_embeds_cond(&emb.pos, &pos);
    sdc_embeds_cond(&emb.neg, &neg);
    progress_ctx_t pc = {.tty = isatty(STDERR_FILENO), .quiet = quiet};
    sdc_gen_timing_t tm;
    double t_load = sdc_now() - t0;
    st = sdc_refiner_run(r, &ro->rp, rgb, w, h, &pos, emb.has_neg ? &neg : NULL, on_progress, &pc,
                         out, NULL, &tm, err);
    if (st == SDC_OK && !quiet)
        fprintf(stderr,
                "sdc-generate: refiner: %dx%d -> %dx%d, %d steps | load %.2f s | denoise %.2f s "
                "(%d DiT passes) | resize + encode + decode %.2f s\n",
                w, h, *ow, *oh, ro->rp.steps, t_load, tm.embed_s + tm.blocks_s + tm.head_s + tm.guide_s,
                tm.dit_passes, tm.vae_s);
out:
    if (have_emb) sdc_embeds_free(&emb);
    sdc_refiner_free(r);
    return st;
}

/* --refine-image: read the image, refine it, write it. */
static int refine_file(const char *backend_name, long threads, const refine_opts_t *ro,
                       const char *out, int quiet)
{
    sdc_error_t err = {0};
    sdc_backend_t *be = NULL;
    uint8_t *rgb = NULL, *refined = NULL;
    int w = 0, h = 0, ow = 0, oh = 0, rc = 1;
    if (sdc_image_load(ro->image, (size_t)SDC_MAX_IMAGE_SIDE * SDC_MAX_IMAGE_SIDE, &rgb, &w, &h,
                       &err) != SDC_OK) {
        sdc_error_wrap(&err, "--refine-image");
        goto fail;
    }
    sdc_backend_config_t bc = {.name = backend_name, .n_threads = (int)threads, .device = 0};
    if (sdc_backend_create(&bc, &be, &err) != SDC_OK) goto fail;
    if (refine(be, ro, rgb, w, h, quiet, &refined, &ow, &oh, &err) != SDC_OK) goto fail;
    if (sdc_png_write_file(out, refined, ow, oh, &err) != SDC_OK) goto fail;
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "sdc-generate: error: %s\n", err.msg[0] ? err.msg : sdc_status_str(err.code));
done:
    free(rgb);
    free(refined);
    if (be) sdc_backend_destroy(be);
    return rc;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *embeds_path = NULL, *out = NULL, *latent_out = NULL;
    const char *prompt_file = NULL, *dump_path = NULL;
    prompt_t prompt = {0}, negative = {0};
    char *file_text = NULL;
    const char *backend_name = "cpu";
    long width = 0, height = 0, steps = 50, threads = 0;
    double guidance = NAN;
    uint64_t seed = 0;
    int trim = 1, quiet = 0;
    enum { OPT_NO_TRIM = 256, OPT_LATENT_OUT, OPT_BACKEND, OPT_LOG_LEVEL, OPT_PROMPT_FILE,
           OPT_DUMP };
    /* Image-to-image. */
    enum { OPT_INIT_IMAGE = 512, OPT_STRENGTH };
    const char *init_path = NULL;
    double strength = NAN;
    /* Refiner. */
    enum { OPT_REFINER = 768, OPT_REFINE_IMAGE, OPT_REFINER_EMBEDS, OPT_BASE_OUT,
           OPT_REFINE_STEPS, OPT_REFINE_STRENGTH, OPT_REFINE_GUIDANCE, OPT_REFINE_WIDTH,
           OPT_REFINE_HEIGHT };
    refine_opts_t ro = {0};
    long refine_steps = 4, refine_w = 0, refine_h = 0;
    int refine_tuned = 0;
    sdc_refiner_params_default(&ro.rp);
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},     {"embeds", required_argument, 0, 'e'},
        {"output", required_argument, 0, 'o'},    {"width", required_argument, 0, 'W'},
        {"height", required_argument, 0, 'H'},    {"steps", required_argument, 0, 's'},
        {"guidance", required_argument, 0, 'g'},  {"seed", required_argument, 0, 'S'},
        {"threads", required_argument, 0, 't'},   {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},            {"no-trim-text", no_argument, 0, OPT_NO_TRIM},
        {"latent-out", required_argument, 0, OPT_LATENT_OUT},
        {"backend", required_argument, 0, OPT_BACKEND},
        {"log-level", required_argument, 0, OPT_LOG_LEVEL},
        {"prompt", required_argument, 0, 'p'},
        {"negative-prompt", required_argument, 0, 'n'},
        {"prompt-file", required_argument, 0, OPT_PROMPT_FILE},
        {"dump-embeds", required_argument, 0, OPT_DUMP},
        {"init-image", required_argument, 0, OPT_INIT_IMAGE},
        {"strength", required_argument, 0, OPT_STRENGTH},
        {"refiner", required_argument, 0, OPT_REFINER},
        {"refine-image", required_argument, 0, OPT_REFINE_IMAGE},
        {"refiner-embeds", required_argument, 0, OPT_REFINER_EMBEDS},
        {"base-output", required_argument, 0, OPT_BASE_OUT},
        {"refine-steps", required_argument, 0, OPT_REFINE_STEPS},
        {"refine-strength", required_argument, 0, OPT_REFINE_STRENGTH},
        {"refine-guidance", required_argument, 0, OPT_REFINE_GUIDANCE},
        {"refine-width", required_argument, 0, OPT_REFINE_WIDTH},
        {"refine-height", required_argument, 0, OPT_REFINE_HEIGHT},
        {0, 0, 0, 0},
    };
    sdc_log_set_level(SDC_LOG_WARN);
    sdc_log_init_from_env();
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:e:o:p:n:W:H:s:g:S:t:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'e': embeds_path = optarg; break;
        case 'p': prompt.text = optarg; prompt.len = strlen(optarg); break;
        case 'n': negative.text = optarg; negative.len = strlen(optarg); break;
        case OPT_PROMPT_FILE: prompt_file = optarg; break;
        case OPT_DUMP: dump_path = optarg; break;
        case OPT_INIT_IMAGE: init_path = optarg; break;
        case OPT_STRENGTH: if (sdc_cli_parse_double(PROG, "--strength", optarg, 0.0, 1.0, &strength)) return EXIT_USAGE; break;
        case OPT_REFINER: ro.dir = optarg; break;
        case OPT_REFINE_IMAGE: ro.image = optarg; break;
        case OPT_REFINER_EMBEDS: ro.embeds = optarg; break;
        case OPT_BASE_OUT: ro.base_out = optarg; break;
        case OPT_REFINE_STEPS: refine_tuned = 1; if (sdc_cli_parse_long(PROG, "--refine-steps", optarg, 1, 1000, &refine_steps)) return EXIT_USAGE; break;
        case OPT_REFINE_STRENGTH: refine_tuned = 1; if (sdc_cli_parse_double(PROG, "--refine-strength", optarg, 0.0, 1.0, &ro.rp.cond_strength)) return EXIT_USAGE; break;
        case OPT_REFINE_GUIDANCE: refine_tuned = 1; if (sdc_cli_parse_double(PROG, "--refine-guidance", optarg, 0.0, 100.0, &ro.rp.distilled_guidance_scale)) return EXIT_USAGE; break;
        case OPT_REFINE_WIDTH: refine_tuned = 1; if (sdc_cli_parse_long(PROG, "--refine-width", optarg, 1, SDC_MAX_IMAGE_SIDE, &refine_w)) return EXIT_USAGE; break;
        case OPT_REFINE_HEIGHT: refine_tuned = 1; if (sdc_cli_parse_long(PROG, "--refine-height", optarg, 1, SDC_MAX_IMAGE_SIDE, &refine_h)) return EXIT_USAGE; break;
        case 'o': out = optarg; break;
        case 'W': if (sdc_cli_parse_long(PROG, "--width", optarg, 1, SDC_MAX_IMAGE_SIDE, &width)) return EXIT_USAGE; break;
        case 'H': if (sdc_cli_parse_long(PROG, "--height", optarg, 1, SDC_MAX_IMAGE_SIDE, &height)) return EXIT_USAGE; break;
        case 's': if (sdc_cli_parse_long(PROG, "--steps", optarg, 1, 1000, &steps)) return EXIT_USAGE; break;
        case 'g': if (sdc_cli_parse_double(PROG, "--guidance", optarg, 0.0, 100.0, &guidance)) return EXIT_USAGE; break;
        case 'S': if (sdc_cli_parse_u64(PROG, "--seed", optarg, &seed)) return EXIT_USAGE; break;
        case 't': if (sdc_cli_parse_long(PROG, "--threads", optarg, 0, 1024, &threads)) return EXIT_USAGE; break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return 0;
        case OPT_NO_TRIM: trim = 0; break;
        case OPT_LATENT_OUT: latent_out = optarg; break;
        case OPT_BACKEND: backend_name = optarg; break;
        case OPT_LOG_LEVEL: {
            int lv = sdc_log_parse_level(optarg);
            if (lv < 0) {
                fprintf(stderr, "sdc-generate: --log-level: unknown level '%s'\n", optarg);
                return EXIT_USAGE;
            }
            sdc_log_set_level((sdc_log_level_t)lv);
            break;
        }
        case ':':
            fprintf(stderr, "sdc-generate: option '%s' needs a value\n", argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, "sdc-generate: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sdc-generate: unexpected argument '%s' (see --help)\n", argv[optind]);
        return EXIT_USAGE;
    }
    int n_inputs = (prompt.text != NULL) + (prompt_file != NULL) + (embeds_path != NULL);
    ro.rp.steps = (int)refine_steps;
    ro.rp.seed = seed;
    ro.rp.width = (int)refine_w;
    ro.rp.height = (int)refine_h;
    if (!ro.dir && (ro.image || ro.embeds || ro.base_out || refine_tuned)) {
        fprintf(stderr, "sdc-generate: --refine-image, --refiner-embeds, --base-output and "
                        "--refine-* need --refiner (see --help)\n");
        return EXIT_USAGE;
    }
    int has_prompt = prompt.text != NULL || prompt_file != NULL;
    if (ro.dir && ((!ro.embeds && !has_prompt) || !out)) {
        fprintf(stderr, "sdc-generate: --refiner needs a prompt (--prompt / --prompt-file) or "
                        "--refiner-embeds, and --output (see --help)\n");
        return EXIT_USAGE;
    }
    if (ro.image) {
        if (model || embeds_path || init_path || dump_path || ro.base_out || latent_out ||
            (ro.embeds && (has_prompt || negative.text))) {
            fprintf(stderr, "sdc-generate: --refine-image refines an existing image: it takes "
                            "a prompt or --refiner-embeds (not both), and no --model, --embeds, "
                            "--init-image, --dump-embeds, --base-output or --latent-out (see "
                            "--help)\n");
            return EXIT_USAGE;
        }
        if (prompt_file) {
            if (read_prompt_file(prompt_file, &file_text, &prompt.len)) return 1;
            prompt.text = file_text;
        }
        ro.prompt = prompt;
        ro.negative = negative;
        int rc_refine = refine_file(backend_name, threads, &ro, out, quiet);
        free(file_text);
        return rc_refine;
    }
    if (!model || n_inputs != 1 || (!out && !dump_path)) {
        fprintf(stderr, "sdc-generate: --model, one of --prompt / --prompt-file / --embeds, and "
                        "--output (or --dump-embeds) are required (see --help)\n");
        return EXIT_USAGE;
    }
    if (embeds_path && (negative.text || dump_path)) {
        fprintf(stderr, "sdc-generate: --%s needs a prompt, not --embeds (see --help)\n",
                negative.text ? "negative-prompt" : "dump-embeds");
        return EXIT_USAGE;
    }
    if (!init_path && !isnan(strength)) {
        fprintf(stderr, "sdc-generate: --strength needs --init-image (see --help)\n");
        return EXIT_USAGE;
    }
    if (init_path && !out) {
        fprintf(stderr, "sdc-generate: --init-image needs --output (see --help)\n");
        return EXIT_USAGE;
    }
    if (prompt_file) {
        if (read_prompt_file(prompt_file, &file_text, &prompt.len)) return 1;
        prompt.text = file_text;
    }

    int rc = 1;
    sdc_error_t err = {0};
    sdc_backend_t *be = NULL;
    sdc_pipeline_t *p = NULL;
    sdc_embeds_t emb;
    int have_emb = 0;
    uint8_t *rgb = NULL;
    float *latent = NULL;
    double t0 = sdc_now();

    /* Image-to-image: the input is read and checked before any model loads,
     * and the guider sees only the steps that strength leaves. */
    sdc_init_image_t init = {0};
    uint8_t *init_rgb = NULL;
    int run_steps = (int)steps;
    if (init_path) {
        int t_start = 0;
        init.strength = isnan(strength) ? 0.6 : strength;
        if (sdc_image_load(init_path, (size_t)SDC_MAX_IMAGE_SIDE * SDC_MAX_IMAGE_SIDE, &init_rgb,
                           &init.width, &init.height, &err) != SDC_OK ||
            sdc_img2img_start_step((int)steps, init.strength, &t_start, &err) != SDC_OK) {
            sdc_error_wrap(&err, "--init-image");
            goto fail;
        }
        init.rgb = init_rgb;
        run_steps = (int)steps - t_start;
    }

    sdc_backend_config_t bc = {.name = backend_name, .n_threads = (int)threads, .device = 0};
    if (sdc_backend_create(&bc, &be, &err) != SDC_OK) goto fail;
    if (prompt.text) {
        if (encode_prompts(be, model, &prompt, &negative, run_steps, quiet, &emb, &err) != SDC_OK)
            goto fail;
        have_emb = 1;
        if (dump_path && sdc_embeds_save(&emb, dump_path, &err) != SDC_OK) goto fail;
        if (!out) {
            rc = 0;
            goto out;
        }
    }
    double t_model = sdc_now();
    if (sdc_pipeline_open(&p, be, model, &err) != SDC_OK) goto fail;
    const sdc_dit_config_t *dc = sdc_dit_config(p->dit);
    const int64_t latent_c = dc->in_channels; /* p may be freed before the latent is written */
    if (!have_emb) {
        if (sdc_embeds_load(&emb, embeds_path, dc->text_embed_dim, dc->text_embed_2_dim, &err) !=
            SDC_OK)
            goto fail;
        have_emb = 1;
    }

    sdc_gen_params_t gp;
    sdc_gen_params_default(&gp);
    /* diffusers: default_sample_size (64) * vae_scale_factor. */
    int64_t f = sdc_vae_config(p->vae)->spatial_compression_ratio;
    gp.width = width ? (int)width : (int)(64 * f);
    gp.height = height ? (int)height : (int)(64 * f);
    gp.steps = (int)steps;
    gp.seed = seed;
    gp.trim_text = trim;
    if (init_rgb) {
        /* Image-to-image: the output defaults to the input's size. */
        gp.width = width ? (int)width : init.width;
        gp.height = height ? (int)height : init.height;
    }
    if (!isnan(guidance)) {
        if (dc->guidance_embeds) {
            gp.distilled_guidance_scale = guidance;
        } else {
            override_guidance(&p->guider, guidance);
            override_guidance(&p->ocr_guider, guidance);
        }
    }
    if (sdc_pipeline_check_params(p, &gp, &err) != SDC_OK) goto fail;
    double t_load = sdc_now() - t_model;
    int out_w = gp.width, out_h = gp.height; /* the refiner may change them */

    sdc_text_cond_t pos, neg;
    sdc_embeds_cond(&emb.pos, &pos);
    sdc_embeds_cond(&emb.neg, &neg);
    progress_ctx_t pc = {.tty = isatty(STDERR_FILENO), .quiet = quiet};
    sdc_gen_timing_t tm;
    sdc_status_t gen_st;
    if (init_rgb)
        gen_st = sdc_pipeline_generate_img2img(p, &gp, &init, &pos, emb.has_neg ? &neg : NULL,
                                               NULL, on_progress, &pc, &rgb, &latent, &tm, &err);
    else
        gen_st = sdc_pipeline_generate(p, &gp, &pos, emb.has_neg ? &neg : NULL, NULL, on_progress,
                                       &pc, &rgb, &latent, &tm, &err);
    if (gen_st != SDC_OK) goto fail;
    if (ro.dir) {
        /* The base model is freed before the refiner loads. */
        uint8_t *refined = NULL;
        if (ro.base_out && sdc_png_write_file(ro.base_out, rgb, gp.width, gp.height, &err) != SDC_OK)
            goto fail;
        sdc_pipeline_free(p);
        p = NULL;
        ro.prompt = prompt;
        ro.negative = negative;
        if (refine(be, &ro, rgb, gp.width, gp.height, quiet, &refined, &out_w, &out_h, &err) !=
            SDC_OK)
            goto fail;
        free(rgb);
        rgb = refined;
    }
    if (sdc_png_write_file(out, rgb, out_w, out_h, &err) != SDC_OK) goto fail;
    if (latent_out && write_latent(latent_out, latent, latent_c, gp.height / f, gp.width / f))
        goto out;
    if (!quiet)
        fprintf(stderr,
                "sdc-generate: %s: %dx%d, %d steps, seed %" PRIu64 "\n"
                "  load %.2f s | denoise %.2f s (%d DiT passes, %.3f s/pass: embed %.3f, blocks "
                "%.3f, head %.3f; guidance %.3f) | decode %.2f s | total %.2f s\n",
                out, gp.width, gp.height, gp.steps, gp.seed, t_load,
                tm.embed_s + tm.blocks_s + tm.head_s + tm.guide_s, tm.dit_passes,
                tm.dit_passes ? (tm.embed_s + tm.blocks_s + tm.head_s) / tm.dit_passes : 0.0,
                tm.embed_s, tm.blocks_s, tm.head_s, tm.guide_s, tm.vae_s, sdc_now() - t0);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "sdc-generate: error: %s\n", err.msg[0] ? err.msg : sdc_status_str(err.code));
out:
    free(rgb);
    free(latent);
    free(init_rgb);
    if (have_emb) sdc_embeds_free(&emb);
    free(file_text);
    sdc_pipeline_free(p);
    if (be) sdc_backend_destroy(be);
    return rc;
}
