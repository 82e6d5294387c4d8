/*
 * image.c: input images by file signature: PNG (png.c) or JPEG (jpeg.c).
 * Reading a file is bounded by SDC_IMAGE_MAX_FILE_BYTES; decoding is
 * bounded by the caller's pixel limit.
 */
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jpeg.h"
#include "png.h"

static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
static const uint8_t jpeg_magic[3] = {0xff, 0xd8, 0xff};

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* libpng reads past IHDR before it reports the size, so a file that ends
 * after a header claiming a huge image would read as merely truncated:
 * the size is checked here first. */
static sdc_status_t png_check_header_size(const uint8_t *buf, size_t len, size_t max_pixels,
                                          sdc_error_t *err)
{
    if (len < 24 || memcmp(buf + 12, "IHDR", 4) != 0) return SDC_OK;
    uint32_t w = be32(buf + 16), h = be32(buf + 20);
    if ((uint64_t)w * h <= max_pixels) return SDC_OK;
    return sdc_error_set(err, SDC_ERR_RANGE,
                         "PNG decoding: %u x %u pixels exceeds the limit of %zu pixels",
                         (unsigned)w, (unsigned)h, max_pixels);
}

sdc_status_t sdc_image_decode(const uint8_t *buf, size_t len, size_t max_pixels, uint8_t **rgb,
                              int *w, int *h, sdc_error_t *err)
{
    if (len >= sizeof(png_magic) && memcmp(buf, png_magic, sizeof(png_magic)) == 0) {
        sdc_status_t st = png_check_header_size(buf, len, max_pixels, err);
        return st != SDC_OK ? st : sdc_png_decode(buf, len, max_pixels, rgb, w, h, err);
    }
    if (len >= sizeof(jpeg_magic) && memcmp(buf, jpeg_magic, sizeof(jpeg_magic)) == 0)
        return sdc_jpeg_decode(buf, len, max_pixels, rgb, w, h, err);
    return sdc_error_set(err, SDC_ERR_FORMAT, "not a PNG or JPEG image (%zu bytes, unknown "
                                              "signature)", len);
}

/* The whole file into *buf (malloc'd). */
static sdc_status_t image_read_file(const char *path, uint8_t **buf, size_t *len,
                                    sdc_error_t *err)
{
    struct stat sb;
    sdc_status_t st = SDC_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sdc_error_set(err, errno == ENOENT ? SDC_ERR_NOT_FOUND : SDC_ERR_IO, "%s: %s",
                             path, strerror(errno));
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = sdc_error_set(err, SDC_ERR_IO, "%s: not a regular file", path);
        goto out_close;
    }
    if ((uint64_t)sb.st_size > SDC_IMAGE_MAX_FILE_BYTES) {
        st = sdc_error_set(err, SDC_ERR_RANGE, "%s: %lld bytes, larger than the %zu MiB limit",
                           path, (long long)sb.st_size, SDC_IMAGE_MAX_FILE_BYTES >> 20);
        goto out_close;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    uint8_t *p = malloc(n ? n : 1);
    if (!p) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory for %zu bytes", path, n);
        goto out_close;
    }
    while (got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            st = sdc_error_set(err, SDC_ERR_IO, "%s: read failed after %zu of %zu bytes: %s",
                               path, got, n, r < 0 ? strerror(errno) : "file shrank");
            free(p);
            goto out_close;
        }
        got += (size_t)r;
    }
    *buf = p;
    *len = n;
out_close:
    close(fd);
    return st;
}

sdc_status_t sdc_image_load(const char *path, size_t max_pixels, uint8_t **rgb, int *w, int *h,
                            sdc_error_t *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    sdc_status_t st = image_read_file(path, &buf, &len, err);
    if (st != SDC_OK) return st;
    st = sdc_image_decode(buf, len, max_pixels, rgb, w, h, err);
    free(buf);
    if (st != SDC_OK) sdc_error_wrap(err, "%s", path);
    return st;
}
