/*
 * test_image.c: input images by signature (common/image.h): PNG and JPEG
 * files of every colour type decoded exactly as PIL's convert("RGB")
 * (tests/data/goldens/image_decode.safetensors), and clean errors for
 * unknown, empty, truncated, oversized and unreadable input. In builds
 * without libjpeg, JPEG files must be refused with a message saying so.
 */
#include "common/image.h"

#include <stdint.h>
#include <stdio.h>
#include <fcntl.h>
#include <unistd.h>

#include "test.h"
#include "golden.h"
#include "common/jpeg.h"

static void golden_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/goldens/%s", test_data_dir(), name);
}

static int is_jpeg(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && strcmp(name + n - 4, ".jpg") == 0;
}

static void test_formats_match_pil(void)
{
    static const struct {
        const char *file, *tensor;
    } files[] = {
        {"image_rgb.jpg", "rgb_jpg_u8"},
        {"image_rgb444.jpg", "rgb444_jpg_u8"},
        {"image_progressive.jpg", "progressive_jpg_u8"},
        {"image_gray.jpg", "gray_jpg_u8"},
        {"image_gray.png", "gray_png_u8"},
        {"image_rgba.png", "rgba_png_u8"},
        {"image_palette.png", "palette_png_u8"},
        {"img2img_init_64x96.png", NULL},
    };
    sdc_st_file_t g;
    if (golden_open(&g, "image_decode.safetensors") != 0) {
        CHECK(0);
        return;
    }
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[1024];
        uint8_t *rgb = NULL;
        int w = 0, h = 0;
        sdc_error_t err = {0};
        golden_path(path, sizeof(path), files[i].file);
        sdc_status_t st = sdc_image_load(path, 1u << 20, &rgb, &w, &h, &err);
        if (is_jpeg(files[i].file) && !sdc_jpeg_supported()) {
            CHECK_EQ_INT(st, SDC_ERR_UNSUPPORTED);
            CHECK(strstr(err.msg, "libjpeg") && strstr(err.msg, files[i].file));
            continue;
        }
        CHECK_MSG(st == SDC_OK, "%s: %s", files[i].file, err.msg);
        if (st != SDC_OK) continue;
        if (files[i].tensor) {
            int nd = 0;
            int64_t shape[8];
            float *ref = golden_f32(&g, files[i].tensor, &nd, shape);
            CHECK(ref && nd == 3 && shape[0] == h && shape[1] == w && shape[2] == 3);
            long diff = 0;
            for (int64_t k = 0; ref && k < (int64_t)w * h * 3; k++) diff += rgb[k] != (uint8_t)ref[k];
            CHECK_MSG(ref && diff == 0, "%s: %ld bytes differ from PIL's", files[i].file, diff);
            free(ref);
        } else {
            CHECK(w == 96 && h == 64);
        }
        free(rgb);
    }
    sdc_st_close(&g);
}

/* The whole file in memory. */
static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *buf = malloc(1 << 20);
    *len = buf ? fread(buf, 1, 1 << 20, f) : 0;
    fclose(f);
    return buf;
}

static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A PNG signature and an IHDR chunk claiming w x h RGB8, nothing else. */
static size_t png_header_only(uint8_t *buf, uint32_t w, uint32_t h)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(buf, sig, 8);
    put_be32(buf + 8, 13);
    memcpy(buf + 12, "IHDR", 4);
    put_be32(buf + 16, w);
    put_be32(buf + 20, h);
    const uint8_t rest[5] = {8, 2, 0, 0, 0};
    memcpy(buf + 24, rest, 5);
    put_be32(buf + 29, crc32_png(buf + 12, 17));
    return 33;
}

static void test_bad_input(void)
{
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    sdc_error_t err = {0};
    const uint8_t text[] = "this is not an image\n";
    CHECK_EQ_INT(sdc_image_decode(text, sizeof(text) - 1, 1u << 20, &rgb, &w, &h, &err),
                 SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "not a PNG or JPEG") != NULL);
    CHECK_EQ_INT(sdc_image_decode(text, 0, 1u << 20, &rgb, &w, &h, &err), SDC_ERR_FORMAT);
    CHECK(rgb == NULL);

    /* 100000 x 100000 from the header alone: refused before allocating. */
    uint8_t hdr[64];
    size_t n = png_header_only(hdr, 100000, 100000);
    CHECK_EQ_INT(sdc_image_decode(hdr, n, (size_t)8192 * 8192, &rgb, &w, &h, &err),
                 SDC_ERR_RANGE);
    CHECK(strstr(err.msg, "100000 x 100000") != NULL);
    /* A plausible header with no data after it. */
    n = png_header_only(hdr, 64, 64);
    CHECK_EQ_INT(sdc_image_decode(hdr, n, 1u << 20, &rgb, &w, &h, &err), SDC_ERR_FORMAT);
    CHECK(rgb == NULL);

    /* Truncated files of both kinds, cut anywhere. */
    static const char *const names[] = {"img2img_init_64x96.png", "image_rgb.jpg",
                                        "image_progressive.jpg"};
    for (int f = 0; f < 3; f++) {
        char path[1024];
        size_t len = 0;
        golden_path(path, sizeof(path), names[f]);
        uint8_t *buf = read_all(path, &len);
        CHECK(buf && len > 100);
        if (!buf) continue;
        if (is_jpeg(names[f]) && !sdc_jpeg_supported()) {
            CHECK_EQ_INT(sdc_image_decode(buf, len, 1u << 20, &rgb, &w, &h, &err),
                         SDC_ERR_UNSUPPORTED);
            free(buf);
            continue;
        }
        const size_t cuts[] = {3, 10, 40, len / 3, len / 2, len - 20, len - 2};
        for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
            sdc_status_t st = sdc_image_decode(buf, cuts[c], 1u << 20, &rgb, &w, &h, &err);
            CHECK_MSG(st == SDC_ERR_FORMAT, "%s cut at %zu of %zu: %s (%s)", names[f], cuts[c],
                      len, sdc_status_str(st), err.msg);
            CHECK(rgb == NULL);
        }
        if (is_jpeg(names[f])) {
            /* SOF0/SOF2 claiming 60000 x 60000: refused from the header. */
            for (size_t i = 2; i + 9 < len; i++) {
                if (buf[i] == 0xff && (buf[i + 1] == 0xc0 || buf[i + 1] == 0xc2)) {
                    buf[i + 5] = buf[i + 7] = 0xea;
                    buf[i + 6] = buf[i + 8] = 0x60;
                    break;
                }
            }
            CHECK_EQ_INT(sdc_image_decode(buf, len, (size_t)8192 * 8192, &rgb, &w, &h, &err),
                         SDC_ERR_RANGE);
            CHECK(strstr(err.msg, "60000 x 60000") != NULL);
        }
        free(buf);
    }
    CHECK(rgb == NULL);
}

/* Random byte flips: decoding succeeds with a size within the limit or
 * fails cleanly, never crashes or leaks (run under ASan). */
static void test_mutations(void)
{
    static const char *const names[] = {"image_rgb.jpg", "image_progressive.jpg",
                                        "image_palette.png"};
    for (int f = 0; f < 3; f++) {
        char path[1024];
        size_t len = 0;
        if (is_jpeg(names[f]) && !sdc_jpeg_supported()) continue;
        golden_path(path, sizeof(path), names[f]);
        uint8_t *orig = read_all(path, &len), *buf = malloc(len ? len : 1);
        CHECK(orig && buf && len > 100);
        uint32_t rng = 12345u + (uint32_t)f;
        for (int iter = 0; orig && buf && iter < 500; iter++) {
            memcpy(buf, orig, len);
            rng = rng * 1103515245u + 12345u;
            int flips = 1 + (int)((rng >> 16) % 4);
            for (int k = 0; k < flips; k++) {
                rng = rng * 1103515245u + 12345u;
                buf[3 + (rng >> 8) % (len - 3)] = (uint8_t)(rng >> 20);
            }
            uint8_t *out = NULL;
            int w = 0, h = 0;
            sdc_error_t err = {0};
            sdc_status_t st = sdc_image_decode(buf, len, 1u << 16, &out, &w, &h, &err);
            if (st == SDC_OK) {
                CHECK(out && w > 0 && h > 0 && (size_t)w * (size_t)h <= 1u << 16);
                free(out);
            } else {
                CHECK_MSG(st == SDC_ERR_FORMAT || st == SDC_ERR_RANGE, "%s iter %d: %s: %s",
                          names[f], iter, sdc_status_str(st), err.msg);
                CHECK(out == NULL && err.msg[0]);
            }
        }
        free(orig);
        free(buf);
    }
}

static void test_files(void)
{
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_image_load("/nonexistent/in.png", 1u << 20, &rgb, &w, &h, &err),
                 SDC_ERR_NOT_FOUND);
    CHECK(strstr(err.msg, "/nonexistent/in.png") != NULL);
    CHECK_EQ_INT(sdc_image_load("/tmp", 1u << 20, &rgb, &w, &h, &err), SDC_ERR_IO);
    CHECK(strstr(err.msg, "not a regular file") != NULL);
    char path[] = "/tmp/sdc_test_image_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    CHECK(write(fd, "hello", 5) == 5);
    close(fd);
    CHECK_EQ_INT(sdc_image_load(path, 1u << 20, &rgb, &w, &h, &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, path) && strstr(err.msg, "not a PNG or JPEG"));
    fd = open(path, O_WRONLY | O_TRUNC);
    close(fd);
    CHECK_EQ_INT(sdc_image_load(path, 1u << 20, &rgb, &w, &h, &err), SDC_ERR_FORMAT);
    unlink(path);
    CHECK(rgb == NULL);
}

int main(void)
{
    RUN(test_formats_match_pil);
    RUN(test_bad_input);
    RUN(test_mutations);
    RUN(test_files);
    TEST_EXIT();
}
