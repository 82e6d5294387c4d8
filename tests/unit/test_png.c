/*
 * test_png.c: encode/decode round trips (memory and file), other PNG colour
 * types, rejection of truncated, corrupt and oversized input, and the
 * float -> RGB8 postprocess against values computed by numpy 2.4 with
 * diffusers' formula, and against diffusers' own output in the pipeline
 * goldens when they are present.
 */
#include "common/png.h"

#include <png.h>
#include <stdint.h>
#include <unistd.h>

#include "test.h"
#include "golden.h"

static uint8_t *make_image(int w, int h, uint32_t seed)
{
    uint8_t *rgb = malloc((size_t)w * h * 3);
    uint32_t x = seed;
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        x = x * 1664525u + 1013904223u;
        rgb[i] = (uint8_t)(x >> 24);
    }
    return rgb;
}

static void test_roundtrip_memory(void)
{
    static const int sizes[][2] = {{1, 1}, {37, 23}, {64, 96}, {3, 200}};
    for (int s = 0; s < 4; s++) {
        int w = sizes[s][0], h = sizes[s][1];
        uint8_t *rgb = make_image(w, h, (uint32_t)s + 1);
        uint8_t *png = NULL, *back = NULL;
        size_t len = 0;
        int w2 = 0, h2 = 0;
        sdc_error_t err = {0};
        CHECK_EQ_INT(sdc_png_encode(rgb, w, h, &png, &len, &err), SDC_OK);
        CHECK(len > 8 && memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0);
        CHECK_EQ_INT(sdc_png_decode(png, len, (size_t)w * h, &back, &w2, &h2, &err), SDC_OK);
        CHECK(w2 == w && h2 == h);
        CHECK(back && memcmp(back, rgb, (size_t)w * h * 3) == 0);
        free(back);
        free(png);
        free(rgb);
    }
}

static void test_write_file(void)
{
    char path[] = "/tmp/sdc_test_png_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        CHECK(0);
        return;
    }
    close(fd);
    const int w = 20, h = 13;
    uint8_t *rgb = make_image(w, h, 99);
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_png_write_file(path, rgb, w, h, &err), SDC_OK);
    FILE *fp = fopen(path, "rb");
    uint8_t buf[8192];
    size_t n = fread(buf, 1, sizeof(buf), fp);
    fclose(fp);
    /* The file holds exactly what the memory encoder produces. */
    uint8_t *mem = NULL;
    size_t mlen = 0;
    CHECK_EQ_INT(sdc_png_encode(rgb, w, h, &mem, &mlen, &err), SDC_OK);
    CHECK(n == mlen && memcmp(buf, mem, n) == 0);
    uint8_t *back = NULL;
    int w2, h2;
    CHECK_EQ_INT(sdc_png_decode(buf, n, 1u << 20, &back, &w2, &h2, &err), SDC_OK);
    CHECK(w2 == w && h2 == h && back && memcmp(back, rgb, (size_t)w * h * 3) == 0);
    free(back);
    free(mem);
    unlink(path);

    CHECK_EQ_INT(sdc_png_write_file("/nonexistent-dir/x.png", rgb, w, h, &err),
                 SDC_ERR_NOT_FOUND);
    CHECK(strstr(err.msg, "/nonexistent-dir/x.png") != NULL);
    CHECK_EQ_INT(sdc_png_encode(rgb, 0, h, &mem, &mlen, &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_png_encode(rgb, w, -1, &mem, &mlen, &err), SDC_ERR_INVALID_ARG);
    free(rgb);
}

/* Encodes with libpng's simplified API in another colour format. */
static uint8_t *encode_format(const uint8_t *px, int w, int h, png_uint_32 format, size_t *len)
{
    png_image img;
    memset(&img, 0, sizeof(img));
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = format;
    png_alloc_size_t size = 0;
    if (!png_image_write_to_memory(&img, NULL, &size, 0, px, 0, NULL))
        return NULL;
    uint8_t *buf = malloc(size);
    if (!png_image_write_to_memory(&img, buf, &size, 0, px, 0, NULL)) {
        free(buf);
        return NULL;
    }
    *len = size;
    return buf;
}

static void test_other_formats(void)
{
    const uint8_t gray[6] = {0, 50, 100, 150, 200, 255};
    size_t len = 0;
    uint8_t *png = encode_format(gray, 3, 2, PNG_FORMAT_GRAY, &len);
    uint8_t *rgb = NULL;
    int w, h;
    sdc_error_t err = {0};
    CHECK(png != NULL);
    CHECK_EQ_INT(sdc_png_decode(png, len, 100, &rgb, &w, &h, &err), SDC_OK);
    CHECK(w == 3 && h == 2);
    for (int i = 0; rgb && i < 6; i++)
        CHECK(rgb[3 * i] == gray[i] && rgb[3 * i + 1] == gray[i] && rgb[3 * i + 2] == gray[i]);
    free(rgb);
    free(png);

    /* Alpha is dropped, colour kept as stored. */
    const uint8_t rgba[8] = {10, 20, 30, 255, 40, 50, 60, 128};
    png = encode_format(rgba, 2, 1, PNG_FORMAT_RGBA, &len);
    rgb = NULL;
    CHECK(png != NULL);
    CHECK_EQ_INT(sdc_png_decode(png, len, 100, &rgb, &w, &h, &err), SDC_OK);
    CHECK(w == 2 && h == 1);
    const uint8_t want[6] = {10, 20, 30, 40, 50, 60};
    CHECK(rgb && memcmp(rgb, want, 6) == 0);
    free(rgb);
    free(png);
}

static void test_rejects_bad_input(void)
{
    const int w = 31, h = 17;
    uint8_t *rgb = make_image(w, h, 7);
    uint8_t *png = NULL, *out = NULL;
    size_t len = 0;
    int w2, h2;
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_png_encode(rgb, w, h, &png, &len, &err), SDC_OK);

    /* Every truncation point fails cleanly: in the signature, in IHDR, in
     * the image data, and just before IEND ends. */
    const size_t cuts[] = {0, 4, 8, 20, 33, 50, len / 2, len - 13, len - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        out = NULL;
        sdc_status_t st = sdc_png_decode(png, cuts[i], 1u << 20, &out, &w2, &h2, &err);
        CHECK_MSG(st == SDC_ERR_FORMAT, "cut at %zu of %zu: %s", cuts[i], len,
                  sdc_status_str(st));
        CHECK(out == NULL);
        CHECK(strstr(err.msg, "PNG decoding") != NULL);
    }

    /* Garbage, with and without a valid signature. */
    uint8_t *junk = make_image(40, 40, 3);
    CHECK_EQ_INT(sdc_png_decode(junk, 4800, 1u << 20, &out, &w2, &h2, &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "not a PNG") != NULL);
    memcpy(junk, png, 8);
    CHECK_EQ_INT(sdc_png_decode(junk, 4800, 1u << 20, &out, &w2, &h2, &err), SDC_ERR_FORMAT);
    free(junk);

    /* A flipped byte inside IDAT breaks its CRC. */
    uint8_t *bad = malloc(len);
    memcpy(bad, png, len);
    bad[len / 2] ^= 0x40;
    CHECK_EQ_INT(sdc_png_decode(bad, len, 1u << 20, &out, &w2, &h2, &err), SDC_ERR_FORMAT);
    /* A zeroed IHDR width: the chunk CRC no longer matches. */
    memcpy(bad, png, len);
    bad[16] = bad[17] = bad[18] = bad[19] = 0;
    CHECK_EQ_INT(sdc_png_decode(bad, len, 1u << 20, &out, &w2, &h2, &err), SDC_ERR_FORMAT);
    free(bad);

    /* Larger than the caller allows: refused from the header alone. */
    CHECK_EQ_INT(sdc_png_decode(png, len, (size_t)w * h - 1, &out, &w2, &h2, &err),
                 SDC_ERR_RANGE);
    CHECK(strstr(err.msg, "31 x 17 pixels exceeds the limit of 526 pixels") != NULL);
    CHECK_EQ_INT(sdc_png_decode(png, len, (size_t)w * h, &out, &w2, &h2, &err), SDC_OK);
    free(out);
    free(png);
    free(rgb);
}

/* Random byte flips in a valid PNG: decoding either succeeds with the
 * right size or fails cleanly, never crashes or leaks. */
static void test_mutations(void)
{
    const int w = 16, h = 9;
    uint8_t *rgb = make_image(w, h, 11);
    uint8_t *png = NULL;
    size_t len = 0;
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_png_encode(rgb, w, h, &png, &len, &err), SDC_OK);
    uint8_t *buf = malloc(len);
    uint32_t rng = 777;
    int rejected = 0;
    for (int iter = 0; iter < 1000; iter++) {
        memcpy(buf, png, len);
        rng = rng * 1103515245u + 12345u;
        int flips = 1 + (int)((rng >> 16) % 3);
        for (int k = 0; k < flips; k++) {
            rng = rng * 1103515245u + 12345u;
            buf[8 + (rng >> 8) % (len - 8)] = (uint8_t)(rng >> 20);
        }
        uint8_t *out = NULL;
        int w2 = 0, h2 = 0;
        sdc_status_t st = sdc_png_decode(buf, len, 1u << 16, &out, &w2, &h2, &err);
        if (st == SDC_OK) {
            CHECK(out != NULL && (size_t)w2 * (size_t)h2 <= 1u << 16);
            free(out);
        } else {
            CHECK_MSG(st == SDC_ERR_FORMAT || st == SDC_ERR_RANGE, "iter %d: %s: %s", iter,
                      sdc_status_str(st), err.msg);
            CHECK(out == NULL);
            rejected++;
        }
    }
    CHECK(rejected > 900); /* CRCs catch nearly every flip */
    free(buf);
    free(png);
    free(rgb);
}

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* numpy 2.4.6: ((np.clip(x / 2 + 0.5, 0, 1)) * 255).round().astype(np.uint8)
 * on float32 x. The first six are inputs where the same formula in float64
 * gives a different byte; then exact .5 ties, then edges. */
static const struct {
    uint32_t x;
    uint8_t want;
} numpy_cases[] = {
    {0xbefcfcfcu, 64},  {0xbef4f4f4u, 66},  {0xbeecececu, 68},  {0xbee4e4e4u, 70},
    {0xbedcdcdcu, 72},  {0xbed4d4d4u, 74},  {0xbef8f8f8u, 66},  {0x3e949494u, 164},
    {0x3e989898u, 166}, {0x3e9c9c9cu, 166}, {0xbf800000u, 0},   {0x3f800000u, 255},
    {0x00000000u, 128}, {0x80000000u, 128}, {0xc0000000u, 0},   {0x40000000u, 255},
    {0x0da24260u, 128}, {0x8da24260u, 128}, {0x3b808081u, 128}, {0x3f7fffffu, 255},
    {0xbf7fffffu, 0},   {0x7f800000u, 255}, {0xff800000u, 0},
};

static void test_image_to_rgb8_numpy(void)
{
    enum { N = sizeof(numpy_cases) / sizeof(numpy_cases[0]) };
    /* One pixel per case, the same value in all three planes. */
    float chw[3 * N];
    uint8_t rgb[3 * N];
    for (int i = 0; i < N; i++)
        chw[i] = chw[N + i] = chw[2 * N + i] = bitsf(numpy_cases[i].x);
    sdc_image_to_rgb8(chw, N, 1, rgb);
    for (int i = 0; i < N; i++)
        for (int c = 0; c < 3; c++)
            CHECK_MSG(rgb[3 * i + c] == numpy_cases[i].want, "x=%.9g (0x%08x): %d, want %d",
                      chw[i], numpy_cases[i].x, rgb[3 * i + c], numpy_cases[i].want);
}

static void test_image_to_rgb8_layout_and_ties(void)
{
    /* [3, h=1, w=2] planes land interleaved; NaN becomes 0. */
    const float chw[6] = {-1.0f, 1.0f, 0.0f, NAN, 0.5f, -0.5f};
    uint8_t rgb[6];
    sdc_image_to_rgb8(chw, 2, 1, rgb);
    const uint8_t want[6] = {0, 128, 191, 255, 0, 64};
    CHECK(memcmp(rgb, want, 6) == 0);

    /* Every float32 input whose scaled value is exactly k + 0.5 rounds to
     * the even neighbour, as numpy's round does. */
    int ties = 0, odd_k = 0;
    for (int k = 0; k < 255; k++) {
        float y0 = (float)((2.0 * k + 1.0) / 510.0);
        for (int d = -2; d <= 2; d++) {
            float y = bitsf(fbits(y0) + (uint32_t)d);
            float x = (y - 0.5f) * 2.0f;
            if (x / 2.0f + 0.5f != y || y * 255.0f != (float)k + 0.5f)
                continue;
            uint8_t px[3];
            const float in[3] = {x, x, x};
            sdc_image_to_rgb8(in, 1, 1, px);
            int even = k % 2 == 0 ? k : k + 1;
            CHECK_MSG(px[0] == even, "tie %d.5 from x=%.9g gave %d", k, x, px[0]);
            ties++;
            odd_k += k % 2;
        }
    }
    CHECK_MSG(ties > 100 && odd_k > 40, "only %d ties (%d odd) found", ties, odd_k);
}

static const char *const pipeline_goldens[] = {
    "pipeline_apg_64x64.safetensors", "pipeline_apg_ocr_64x96.safetensors",
    "pipeline_cfg_96x64.safetensors", "pipeline_distilled_64x96.safetensors",
};
#define N_PIPELINE_GOLDENS (sizeof(pipeline_goldens) / sizeof(pipeline_goldens[0]))

static int golden_exists(const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/goldens/%s", test_data_dir(), name);
    return access(path, R_OK) == 0;
}

/* `decoded` is the VAE output diffusers postprocessed into `image_u8`
 * (the PIL image's bytes): the conversion must reproduce it exactly. */
static void test_image_to_rgb8_diffusers(void)
{
    for (size_t g = 0; g < N_PIPELINE_GOLDENS; g++) {
        if (!golden_exists(pipeline_goldens[g]))
            continue;
        sdc_st_file_t f;
        if (golden_open(&f, pipeline_goldens[g]) != 0) {
            CHECK(0);
            continue;
        }
        int nd = 0, nu = 0;
        int64_t sd[SDC_MAX_DIMS], su[SDC_MAX_DIMS];
        float *dec = golden_f32(&f, "decoded", &nd, sd);
        float *ref = golden_f32(&f, "image_u8", &nu, su);
        CHECK(dec && ref && nd == 4 && nu == 3 && sd[1] == 3 && su[0] == sd[2] &&
              su[1] == sd[3] && su[2] == 3);
        if (dec && ref && nd == 4 && nu == 3) {
            int h = (int)sd[2], w = (int)sd[3];
            uint8_t *rgb = malloc((size_t)w * h * 3);
            sdc_image_to_rgb8(dec, w, h, rgb);
            long bad = 0;
            for (size_t i = 0; i < (size_t)w * h * 3; i++)
                bad += rgb[i] != (uint8_t)ref[i];
            CHECK_MSG(bad == 0, "%s: %ld of %d bytes differ", pipeline_goldens[g], bad,
                      w * h * 3);
            free(rgb);
        }
        free(dec);
        free(ref);
        sdc_st_close(&f);
    }
}

int main(void)
{
    RUN(test_roundtrip_memory);
    RUN(test_write_file);
    RUN(test_other_formats);
    RUN(test_rejects_bad_input);
    RUN(test_mutations);
    RUN(test_image_to_rgb8_numpy);
    RUN(test_image_to_rgb8_layout_and_ties);
    /* Counted only when the goldens are there to compare with. */
    int have_goldens = 0;
    for (size_t g = 0; g < N_PIPELINE_GOLDENS; g++)
        have_goldens |= golden_exists(pipeline_goldens[g]);
    if (have_goldens)
        RUN(test_image_to_rgb8_diffusers);
    TEST_EXIT();
}
