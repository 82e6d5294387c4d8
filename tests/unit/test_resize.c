/*
 * test_resize.c: Lanczos resampling (common/resize.h) against Pillow's
 * Image.resize(LANCZOS) on every case of resize_lanczos.safetensors (up
 * and down by integer and fractional ratios, odd sizes, one axis, 1-pixel
 * sides, overshoot clipped at both ends): every byte equal. Also the
 * identity at equal sizes and the refused sizes.
 */
#include "common/resize.h"

#include <stdint.h>

#include "test.h"
#include "golden.h"

#define GOLDEN "resize_lanczos.safetensors"

/* The golden's <case>.src / .dst tensor as bytes with its size. */
static uint8_t *golden_u8(const sdc_st_file_t *g, const char *name, int *w, int *h)
{
    int nd = 0;
    int64_t shape[8];
    float *f = golden_f32(g, name, &nd, shape);
    if (!f || nd != 3 || shape[2] != 3) {
        free(f);
        return NULL;
    }
    int64_t n = shape[0] * shape[1] * 3;
    uint8_t *u = malloc((size_t)n);
    for (int64_t i = 0; u && i < n; i++) u[i] = (uint8_t)f[i];
    free(f);
    *h = (int)shape[0];
    *w = (int)shape[1];
    return u;
}

static void test_matches_pillow(void)
{
    sdc_st_file_t g;
    if (golden_open(&g, GOLDEN)) {
        CHECK(0);
        return;
    }
    int cases = 0;
    for (size_t i = 0; i < g.n_entries; i++) {
        const char *name = g.entries[i].name;
        size_t len = strlen(name);
        if (len < 5 || strcmp(name + len - 4, ".src") != 0) continue;
        char dst_name[256];
        snprintf(dst_name, sizeof(dst_name), "%.*s.dst", (int)(len - 4), name);
        int sw, sh, dw, dh;
        uint8_t *src = golden_u8(&g, name, &sw, &sh), *ref = golden_u8(&g, dst_name, &dw, &dh);
        uint8_t *got = NULL;
        sdc_error_t err = {0};
        CHECK(src && ref);
        if (src && ref) {
            CHECK(sdc_resize_lanczos_rgb8(src, sw, sh, dw, dh, &got, &err) == SDC_OK);
            size_t n = (size_t)dw * dh * 3, diff = 0, first = n;
            for (size_t k = 0; got && k < n; k++)
                if (got[k] != ref[k]) {
                    diff++;
                    if (first == n) first = k;
                }
            CHECK_MSG(got && diff == 0, "%.*s: %dx%d -> %dx%d: %zu of %zu bytes differ (first at %zu)",
                      (int)(len - 4), name, sw, sh, dw, dh, diff, n, first);
            cases++;
        }
        free(src);
        free(ref);
        free(got);
    }
    CHECK_MSG(cases >= 10, "only %d cases in %s", cases, GOLDEN);
    sdc_st_close(&g);
}

static void test_same_size_is_copy(void)
{
    uint8_t src[5 * 3 * 3];
    for (size_t i = 0; i < sizeof(src); i++) src[i] = (uint8_t)(i * 37);
    uint8_t *out = NULL;
    sdc_error_t err = {0};
    CHECK(sdc_resize_lanczos_rgb8(src, 5, 3, 5, 3, &out, &err) == SDC_OK);
    CHECK(out && memcmp(out, src, sizeof(src)) == 0);
    free(out);
}

static void test_bad_sizes(void)
{
    uint8_t px[3] = {1, 2, 3}, *out = (uint8_t *)1;
    sdc_error_t err = {0};
    static const int sizes[][4] = {
        {0, 1, 1, 1}, {1, 0, 1, 1}, {1, 1, 0, 1}, {1, 1, 1, -4},
        {1, 1, SDC_RESIZE_MAX_SIDE + 1, 1}, {1, 1, 1, 1 << 30},
    };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        CHECK(sdc_resize_lanczos_rgb8(px, sizes[i][0], sizes[i][1], sizes[i][2], sizes[i][3],
                                      &out, &err) == SDC_ERR_RANGE);
        CHECK(out == NULL);
        CHECK(strstr(err.msg, "each side must be in") != NULL);
    }
    CHECK(sdc_resize_lanczos_rgb8(NULL, 1, 1, 2, 2, &out, &err) == SDC_ERR_INVALID_ARG);
}

int main(void)
{
    RUN(test_matches_pillow);
    RUN(test_same_size_is_copy);
    RUN(test_bad_sizes);
    TEST_EXIT();
}
