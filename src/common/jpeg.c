/*
 * jpeg.c: JPEG decoding through libjpeg's memory source.
 *
 * libjpeg reports fatal errors through error_exit, which must not return:
 * it longjmps back into the one function that holds the setjmp, which
 * touches only state owned by its caller (as png.c does), so the caller
 * frees everything on one path. Warnings are ignored as PIL ignores them,
 * except "premature end of data", after which libjpeg would invent the
 * rest of the image.
 */
#include "jpeg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef SDC_HAVE_JPEG

#include <jpeglib.h>
#include <jerror.h>
#include <setjmp.h>

typedef struct {
    struct jpeg_error_mgr pub; /* first: libjpeg hands back a pointer to it */
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
    int too_big, nomem;
} jpeg_err_t;

static void jpeg_on_error(j_common_ptr ci)
{
    jpeg_err_t *e = (jpeg_err_t *)ci->err;
    ci->err->format_message(ci, e->msg);
    longjmp(e->jump, 1);
}

static void jpeg_on_message(j_common_ptr ci, int level)
{
    if (level < 0 && ci->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error(ci);
}

typedef struct {
    const uint8_t *buf;
    size_t len, max_pixels;
    uint8_t *rgb; /* owned by the caller of jpeg_dec_rows, even after a jump */
    JDIMENSION w, h;
} jpeg_dec_t;

static int jpeg_dec_rows(struct jpeg_decompress_struct *ci, jpeg_err_t *e, jpeg_dec_t *d)
{
    if (setjmp(e->jump)) return -1;
    jpeg_mem_src(ci, d->buf, (unsigned long)d->len);
    jpeg_read_header(ci, TRUE);
    /* Checked before any pixel memory is allocated: the header alone can
     * claim a huge image. */
    if ((uint64_t)ci->image_width * ci->image_height > d->max_pixels) {
        e->too_big = 1;
        snprintf(e->msg, sizeof(e->msg), "%u x %u pixels exceeds the limit of %zu pixels",
                 (unsigned)ci->image_width, (unsigned)ci->image_height, d->max_pixels);
        return -1;
    }
    ci->out_color_space = JCS_RGB;
    jpeg_start_decompress(ci);
    if (ci->output_components != 3) {
        snprintf(e->msg, sizeof(e->msg), "%d output components, expected 3",
                 ci->output_components);
        return -1;
    }
    size_t row_bytes = (size_t)ci->output_width * 3;
    d->rgb = malloc(row_bytes * ci->output_height);
    if (!d->rgb) {
        e->nomem = 1;
        snprintf(e->msg, sizeof(e->msg), "out of memory");
        return -1;
    }
    while (ci->output_scanline < ci->output_height) {
        JSAMPROW row = d->rgb + (size_t)ci->output_scanline * row_bytes;
        jpeg_read_scanlines(ci, &row, 1);
    }
    jpeg_finish_decompress(ci);
    d->w = ci->output_width;
    d->h = ci->output_height;
    return 0;
}

int sdc_jpeg_supported(void)
{
    return 1;
}

sdc_status_t sdc_jpeg_decode(const uint8_t *buf, size_t len, size_t max_pixels, uint8_t **rgb,
                             int *w, int *h, sdc_error_t *err)
{
    if (len < 3 || buf[0] != 0xff || buf[1] != 0xd8 || buf[2] != 0xff)
        return sdc_error_set(err, SDC_ERR_FORMAT, "JPEG decoding: not a JPEG (bad signature)");
    struct jpeg_decompress_struct ci;
    jpeg_err_t e;
    memset(&e, 0, sizeof(e));
    ci.err = jpeg_std_error(&e.pub);
    e.pub.error_exit = jpeg_on_error;
    e.pub.emit_message = jpeg_on_message;
    jpeg_create_decompress(&ci);
    jpeg_dec_t d = {.buf = buf, .len = len, .max_pixels = max_pixels};
    int rc = jpeg_dec_rows(&ci, &e, &d);
    jpeg_destroy_decompress(&ci);
    if (rc != 0) {
        free(d.rgb);
        sdc_status_t code = e.nomem ? SDC_ERR_NOMEM : e.too_big ? SDC_ERR_RANGE : SDC_ERR_FORMAT;
        return sdc_error_set(err, code, "JPEG decoding: %s", e.msg);
    }
    *rgb = d.rgb;
    *w = (int)d.w;
    *h = (int)d.h;
    return SDC_OK;
}

#else

int sdc_jpeg_supported(void)
{
    return 0;
}

sdc_status_t sdc_jpeg_decode(const uint8_t *buf, size_t len, size_t max_pixels, uint8_t **rgb,
                             int *w, int *h, sdc_error_t *err)
{
    (void)buf;
    (void)len;
    (void)max_pixels;
    (void)rgb;
    (void)w;
    (void)h;
    return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                         "JPEG input needs a build with libjpeg (SDC_HAVE_JPEG); use PNG");
}

#endif
