/*
 * png.c: PNG encoding (to a file or a memory buffer) and decoding with
 * libpng, and the float -> RGB8 conversion of diffusers' postprocess.
 *
 * libpng reports errors by longjmp. Each setjmp lives in a small function
 * that touches only state owned by its caller, so nothing it changes is
 * lost when the jump lands, and every resource is released by the caller
 * on one path. Corrupt, truncated or oversized input gives an error,
 * never a crash.
 */
#include "png.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* libpng's own default limit on either dimension; checked up front so the
 * error names our arguments rather than an IHDR failure. */
#define SDC_PNG_DIM_MAX 1000000

typedef struct {
    char msg[256];
    int nomem;    /* the failure was an allocation */
    int too_big;  /* the image exceeds the caller's pixel limit */
} codec_err_t;

static void codec_on_error(png_structp png, png_const_charp msg)
{
    codec_err_t *ctx = png_get_error_ptr(png);
    snprintf(ctx->msg, sizeof(ctx->msg), "%s", msg);
    png_longjmp(png, 1);
}

/* Warnings (bad ancillary chunks, which libpng skips) are not worth
 * reporting from a library. */
static void codec_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

void sdc_image_to_rgb8(const float *chw, int w, int h, uint8_t *rgb)
{
    const size_t plane = (size_t)w * (size_t)h;
    for (size_t i = 0; i < plane; i++) {
        for (int c = 0; c < 3; c++) {
            /* Each step rounds to float32 as torch and numpy do: x / 2 + 0.5,
             * clamp, * 255, then round half to even (rintf under the default
             * rounding mode, like numpy's round). NaN survives clamp in
             * torch and becomes 0 here, as numpy's cast does on x86. */
            float x = chw[(size_t)c * plane + i];
            float v = x / 2.0f + 0.5f;
            v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
            float r = rintf(v * 255.0f);
            rgb[i * 3 + (size_t)c] = isnan(r) ? 0 : (uint8_t)r;
        }
    }
}

/* ---- encoding ------------------------------------------------------------ */

typedef struct {
    uint8_t *buf;
    size_t len, cap;
} enc_buf_t;

static void enc_buf_write(png_structp png, png_bytep data, size_t n)
{
    enc_buf_t *m = png_get_io_ptr(png);
    if (n > SIZE_MAX / 2 - m->len)
        png_error(png, "encoded image too large");
    if (m->len + n > m->cap) {
        size_t cap = m->cap ? m->cap : 4096;
        while (cap < m->len + n)
            cap *= 2;
        uint8_t *p = realloc(m->buf, cap);
        if (!p) {
            ((codec_err_t *)png_get_error_ptr(png))->nomem = 1;
            png_error(png, "out of memory");
        }
        m->buf = p;
        m->cap = cap;
    }
    memcpy(m->buf + m->len, data, n);
    m->len += n;
}

static void enc_buf_flush(png_structp png)
{
    (void)png;
}

static int enc_rows(png_structp png, png_infop info, const uint8_t *rgb, int w, int h)
{
    if (setjmp(png_jmpbuf(png)))
        return -1;
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, rgb + (size_t)y * (size_t)w * 3);
    png_write_end(png, info);
    return 0;
}

/* Exactly one of fp and mem is set. */
static sdc_status_t enc_run(const char *label, FILE *fp, enc_buf_t *mem,
                                  const uint8_t *rgb, int w, int h, sdc_error_t *err)
{
    if (w <= 0 || h <= 0 || w > SDC_PNG_DIM_MAX || h > SDC_PNG_DIM_MAX)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: bad image size %d x %d", label, w, h);
    codec_err_t ctx = {0};
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, codec_on_error, codec_on_warning);
    if (!png)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", label);
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", label);
    }
    if (fp)
        png_init_io(png, fp);
    else
        png_set_write_fn(png, mem, enc_buf_write, enc_buf_flush);
    int rc = enc_rows(png, info, rgb, w, h);
    png_destroy_write_struct(&png, &info);
    if (rc != 0)
        return sdc_error_set(err, ctx.nomem ? SDC_ERR_NOMEM : SDC_ERR_IO, "%s: PNG encoding: %s",
                             label, ctx.msg);
    return SDC_OK;
}

sdc_status_t sdc_png_write_file(const char *path, const uint8_t *rgb, int w, int h,
                                sdc_error_t *err)
{
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return sdc_error_set(err, errno == ENOENT ? SDC_ERR_NOT_FOUND : SDC_ERR_IO, "%s: %s",
                             path, strerror(errno));
    sdc_status_t st = enc_run(path, fp, NULL, rgb, w, h, err);
    if (fclose(fp) != 0 && st == SDC_OK)
        st = sdc_error_set(err, SDC_ERR_IO, "%s: close: %s", path, strerror(errno));
    if (st != SDC_OK)
        unlink(path);
    return st;
}

sdc_status_t sdc_png_encode(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *out_len,
                            sdc_error_t *err)
{
    enc_buf_t mem = {0};
    sdc_status_t st = enc_run("(memory)", NULL, &mem, rgb, w, h, err);
    if (st != SDC_OK) {
        free(mem.buf);
        return st;
    }
    *out = mem.buf;
    *out_len = mem.len;
    return SDC_OK;
}

/* ---- decoding ------------------------------------------------------------ */

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
} dec_src_t;

static void dec_src_read(png_structp png, png_bytep out, size_t n)
{
    dec_src_t *s = png_get_io_ptr(png);
    if (n > s->len - s->pos)
        png_error(png, "truncated PNG data");
    memcpy(out, s->buf + s->pos, n);
    s->pos += n;
}

typedef struct {
    dec_src_t src;
    size_t max_pixels;
    uint8_t *rgb;    /* owned by the caller of dec_rows, even after a jump */
    png_bytep *rows;
    png_uint_32 w, h;
} dec_state_t;

/* Asks libpng for 8-bit RGB whatever the stored format. */
static void dec_request_rgb8(png_structp png, int depth, int ctype)
{
    if (depth == 16)
        png_set_strip_16(png);
    if (ctype == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (!(ctype & PNG_COLOR_MASK_COLOR) && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (ctype & PNG_COLOR_MASK_ALPHA)
        png_set_strip_alpha(png);
    if (!(ctype & PNG_COLOR_MASK_COLOR))
        png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
}

static int dec_rows(png_structp png, png_infop info, dec_state_t *d)
{
    codec_err_t *ctx = png_get_error_ptr(png);
    if (setjmp(png_jmpbuf(png)))
        return -1;
    png_set_read_fn(png, &d->src, dec_src_read);
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, ctype;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, NULL, NULL, NULL);
    /* Checked before any pixel memory is allocated: the header alone can
     * claim a huge image. */
    if ((uint64_t)w * h > d->max_pixels || w > SDC_PNG_DIM_MAX || h > SDC_PNG_DIM_MAX) {
        ctx->too_big = 1;
        snprintf(ctx->msg, sizeof(ctx->msg), "%u x %u pixels exceeds the limit of %zu pixels",
                 (unsigned)w, (unsigned)h, d->max_pixels);
        return -1;
    }
    dec_request_rgb8(png, depth, ctype);
    png_read_update_info(png, info);
    size_t row_bytes = (size_t)w * 3;
    if (png_get_rowbytes(png, info) != row_bytes)
        png_error(png, "unexpected row size after conversion to RGB8");
    d->rgb = malloc(row_bytes * h);
    d->rows = malloc(sizeof(*d->rows) * h);
    if (!d->rgb || !d->rows) {
        ctx->nomem = 1;
        png_error(png, "out of memory");
    }
    for (png_uint_32 y = 0; y < h; y++)
        d->rows[y] = d->rgb + (size_t)y * row_bytes;
    png_read_image(png, d->rows);
    /* Reading through IEND makes a file cut after its image data an error. */
    png_read_end(png, NULL);
    d->w = w;
    d->h = h;
    return 0;
}

sdc_status_t sdc_png_decode(const uint8_t *buf, size_t len, size_t max_pixels, uint8_t **rgb,
                            int *w, int *h, sdc_error_t *err)
{
    if (len < 8 || png_sig_cmp(buf, 0, 8) != 0)
        return sdc_error_set(err, SDC_ERR_FORMAT, "PNG decoding: not a PNG (bad signature)");
    codec_err_t ctx = {0};
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, codec_on_error, codec_on_warning);
    if (!png)
        return sdc_error_set(err, SDC_ERR_NOMEM, "PNG decoding: out of memory");
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return sdc_error_set(err, SDC_ERR_NOMEM, "PNG decoding: out of memory");
    }
    dec_state_t d = {.src = {buf, len, 0}, .max_pixels = max_pixels};
    int rc = dec_rows(png, info, &d);
    png_destroy_read_struct(&png, &info, NULL);
    free(d.rows);
    if (rc != 0) {
        free(d.rgb);
        sdc_status_t code = ctx.nomem     ? SDC_ERR_NOMEM
                            : ctx.too_big ? SDC_ERR_RANGE
                                          : SDC_ERR_FORMAT;
        return sdc_error_set(err, code, "PNG decoding: %s", ctx.msg);
    }
    *rgb = d.rgb;
    *w = (int)d.w;
    *h = (int)d.h;
    return SDC_OK;
}
