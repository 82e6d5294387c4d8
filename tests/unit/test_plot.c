/*
 * test_plot.c: the chart writer. Tick spacing at round numbers, text pixels
 * where the font puts them (a glyph drawn by hand from its rows), and a
 * rendered chart decoded back from its PNG: white background, axes where
 * the layout says, each series' colour present at its points, gaps for NAN,
 * and clear errors for bad input.
 */
#include "common/plot.h"

#include <unistd.h>

#include "common/png.h"
#include "test.h"

static const uint8_t black[3] = {0, 0, 0};
static const uint8_t red[3] = {214, 39, 40};
static const uint8_t blue[3] = {31, 119, 180};

static const uint8_t *px(const uint8_t *rgb, int w, int x, int y)
{
    return rgb + ((size_t)y * (size_t)w + (size_t)x) * 3;
}

static int is(const uint8_t *p, const uint8_t c[3])
{
    return p[0] == c[0] && p[1] == c[1] && p[2] == c[2];
}

static void test_tick_step(void)
{
    CHECK(fabs(sdc_plot_tick_step(10, 5) - 2) < 1e-12);
    CHECK(fabs(sdc_plot_tick_step(7, 5) - 2) < 1e-12);
    CHECK(fabs(sdc_plot_tick_step(1, 5) - 0.2) < 1e-12);
    CHECK(fabs(sdc_plot_tick_step(0.3, 5) - 0.1) < 1e-12);
    CHECK(fabs(sdc_plot_tick_step(2000, 5) - 500) < 1e-9);
    CHECK(fabs(sdc_plot_tick_step(4.9, 5) - 1) < 1e-12);
}

/* 'L' is a full left column and a full bottom row; 'T' a full top row and
 * a full middle column. */
static void test_text_pixels(void)
{
    enum { W = 40, H = 20 };
    uint8_t rgb[W * H * 3];
    memset(rgb, 255, sizeof(rgb));
    sdc_plot_text(rgb, W, H, 2, 3, "LT", 1, 0, black);
    for (int row = 0; row < 7; row++)
        CHECK(is(px(rgb, W, 2, 3 + row), black));     /* L: left column */
    for (int col = 0; col < 5; col++) {
        CHECK(is(px(rgb, W, 2 + col, 9), black));     /* L: bottom row */
        CHECK(is(px(rgb, W, 8 + col, 3), black));     /* T: top row, 6 px on */
    }
    CHECK(!is(px(rgb, W, 4, 5), black));              /* inside the L: blank */
    CHECK(!is(px(rgb, W, 7, 3), black));              /* the gap between letters */
    for (int row = 0; row < 7; row++)
        CHECK(is(px(rgb, W, 10, 3 + row), black));    /* T: middle column */
    CHECK_EQ_INT(sdc_plot_text_width("LT", 1), 11);
    CHECK_EQ_INT(sdc_plot_text_width("LT", 2), 22);
    CHECK_EQ_INT(sdc_plot_text_width("", 3), 0);

    /* Vertical: the L's left column becomes its bottom row, read upwards. */
    memset(rgb, 255, sizeof(rgb));
    sdc_plot_text(rgb, W, H, 5, 15, "L", 1, 1, black);
    for (int row = 0; row < 7; row++)
        CHECK(is(px(rgb, W, 5 + row, 15), black));
    /* Off the image: clipped, no crash. */
    sdc_plot_text(rgb, W, H, -50, -50, "clipped ~ \x01\xff", 3, 0, black);
    sdc_plot_text(rgb, W, H, W - 2, H - 2, "clipped", 3, 1, black);
}

static void test_render(void)
{
    const double x[] = {1, 2, 4, 8};
    const double a[] = {0.5, 0.6, 1.2, 3.9};
    const double b[] = {0.4, NAN, 0.8, 2.0};
    const sdc_plot_series_t series[] = {{"p99", a, {214, 39, 40}}, {"p50", b, {31, 119, 180}}};
    const sdc_plot_hline_t slo = {"SLO", 3.0, {120, 120, 120}};
    sdc_plot_t p = {.title = "latency", .xlabel = "jobs/s", .ylabel = "s", .x = x, .n = 4,
                    .series = series, .n_series = 2, .hlines = &slo, .n_hlines = 1,
                    .width = 400, .height = 300};
    char path[] = "/tmp/sdc-test-plot-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_plot_write_png(&p, path, &err), SDC_OK);
    FILE *f = fopen(path, "rb");
    uint8_t buf[1 << 18];
    size_t len = f ? fread(buf, 1, sizeof(buf), f) : 0;
    if (f)
        fclose(f);
    unlink(path);
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    CHECK_EQ_INT(sdc_png_decode(buf, len, 1u << 20, &rgb, &w, &h, &err), SDC_OK);
    if (!rgb)
        return;
    CHECK(w == 400 && h == 300);
    CHECK(is(px(rgb, w, 1, 1), (const uint8_t[]){255, 255, 255}));
    /* Layout: left 80, right w - 30, top 40, bottom h - 55; axes 2 px. */
    int left = 80, right = 370, top = 40, bottom = 245;
    CHECK(is(px(rgb, w, left, (top + bottom) / 2), black));
    CHECK(is(px(rgb, w, (left + right) / 2, bottom), black));
    /* x axis 0..8 (step 2), y axis 0..4 (step 1): a's last point (8, 3.9)
     * is a red square at the right edge, 3.9/4 of the way up. */
    int yx = bottom - (int)lround(3.9 / 4 * (bottom - top));
    CHECK(is(px(rgb, w, right, yx), red));
    /* b's first point (1, 0.4) in blue; its NAN leaves no point at x = 2. */
    int bx = left + (int)lround(1.0 / 8 * (right - left));
    int by = bottom - (int)lround(0.4 / 4 * (bottom - top));
    CHECK(is(px(rgb, w, bx, by), blue));
    int gx = left + (int)lround(2.0 / 8 * (right - left));
    int blue_at_gap = 0;
    for (int y = top; y < bottom; y++)
        blue_at_gap += is(px(rgb, w, gx, y), blue);
    CHECK_EQ_INT(blue_at_gap, 0);
    free(rgb);

    /* Bad input: clear errors, nothing drawn. */
    const double bad[] = {1, -2, 3, 4};
    sdc_plot_t q = p;
    q.x = bad;
    CHECK_EQ_INT(sdc_plot_render(&q, &rgb, &w, &h, &err), SDC_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "x[1]") != NULL);
    q = p;
    q.n = 0;
    CHECK_EQ_INT(sdc_plot_render(&q, &rgb, &w, &h, &err), SDC_ERR_RANGE);
    q = p;
    q.width = 100000;
    CHECK_EQ_INT(sdc_plot_render(&q, &rgb, &w, &h, &err), SDC_ERR_RANGE);
    const double inf[] = {1, INFINITY, 1, 1};
    const sdc_plot_series_t bad_series = {"x", inf, {0, 0, 0}};
    q = p;
    q.series = &bad_series;
    q.n_series = 1;
    CHECK_EQ_INT(sdc_plot_render(&q, &rgb, &w, &h, &err), SDC_ERR_INVALID_ARG);
    CHECK(sdc_plot_write_png(&p, "/nonexistent-dir/x.png", &err) != SDC_OK);
    CHECK(strstr(err.msg, "/nonexistent-dir/x.png") != NULL);
}

/* All values zero or missing: the axes still have a range, no division by 0. */
static void test_render_empty_values(void)
{
    const double x[] = {0};
    const double y[] = {NAN};
    const sdc_plot_series_t s = {"none", y, {0, 0, 0}};
    sdc_plot_t p = {.x = x, .n = 1, .series = &s, .n_series = 1};
    uint8_t *rgb = NULL;
    int w, h;
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_plot_render(&p, &rgb, &w, &h, &err), SDC_OK);
    CHECK(w == 800 && h == 500);
    free(rgb);
}

int main(void)
{
    RUN(test_tick_step);
    RUN(test_text_pixels);
    RUN(test_render);
    RUN(test_render_empty_values);
    TEST_EXIT();
}
