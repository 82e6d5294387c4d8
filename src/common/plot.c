/*
 * plot.c: line charts into RGB8 buffers and PNG files (plot.h).
 *
 * Layout: title on top, y label rotated on the left, tick labels beside
 * the axes, x label at the bottom, legend in the plot's top-left corner.
 * Axes start at zero and end at the first round tick at or above the
 * largest value, so two charts of similar data read alike.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plot.h"
#include "png.h"

#define GLYPH_W 5
#define GLYPH_H 7
#define ADVANCE 6

/* The classic 5x7 font for ASCII 32..126: five columns per character, bit 0
 * the top row. */
static const uint8_t font5x7[95][5] = {
    {0x00, 0x00, 0x00, 0x00, 0x00}, {0x00, 0x00, 0x5F, 0x00, 0x00}, /*   ! */
    {0x00, 0x07, 0x00, 0x07, 0x00}, {0x14, 0x7F, 0x14, 0x7F, 0x14}, /* " # */
    {0x24, 0x2A, 0x7F, 0x2A, 0x12}, {0x23, 0x13, 0x08, 0x64, 0x62}, /* $ % */
    {0x36, 0x49, 0x55, 0x22, 0x50}, {0x00, 0x05, 0x03, 0x00, 0x00}, /* & ' */
    {0x00, 0x1C, 0x22, 0x41, 0x00}, {0x00, 0x41, 0x22, 0x1C, 0x00}, /* ( ) */
    {0x14, 0x08, 0x3E, 0x08, 0x14}, {0x08, 0x08, 0x3E, 0x08, 0x08}, /* * + */
    {0x00, 0x50, 0x30, 0x00, 0x00}, {0x08, 0x08, 0x08, 0x08, 0x08}, /* , - */
    {0x00, 0x60, 0x60, 0x00, 0x00}, {0x20, 0x10, 0x08, 0x04, 0x02}, /* . / */
    {0x3E, 0x51, 0x49, 0x45, 0x3E}, {0x00, 0x42, 0x7F, 0x40, 0x00}, /* 0 1 */
    {0x42, 0x61, 0x51, 0x49, 0x46}, {0x21, 0x41, 0x45, 0x4B, 0x31}, /* 2 3 */
    {0x18, 0x14, 0x12, 0x7F, 0x10}, {0x27, 0x45, 0x45, 0x45, 0x39}, /* 4 5 */
    {0x3C, 0x4A, 0x49, 0x49, 0x30}, {0x01, 0x71, 0x09, 0x05, 0x03}, /* 6 7 */
    {0x36, 0x49, 0x49, 0x49, 0x36}, {0x06, 0x49, 0x49, 0x29, 0x1E}, /* 8 9 */
    {0x00, 0x36, 0x36, 0x00, 0x00}, {0x00, 0x56, 0x36, 0x00, 0x00}, /* : ; */
    {0x08, 0x14, 0x22, 0x41, 0x00}, {0x14, 0x14, 0x14, 0x14, 0x14}, /* < = */
    {0x00, 0x41, 0x22, 0x14, 0x08}, {0x02, 0x01, 0x51, 0x09, 0x06}, /* > ? */
    {0x32, 0x49, 0x79, 0x41, 0x3E}, {0x7E, 0x11, 0x11, 0x11, 0x7E}, /* @ A */
    {0x7F, 0x49, 0x49, 0x49, 0x36}, {0x3E, 0x41, 0x41, 0x41, 0x22}, /* B C */
    {0x7F, 0x41, 0x41, 0x22, 0x1C}, {0x7F, 0x49, 0x49, 0x49, 0x41}, /* D E */
    {0x7F, 0x09, 0x09, 0x09, 0x01}, {0x3E, 0x41, 0x49, 0x49, 0x7A}, /* F G */
    {0x7F, 0x08, 0x08, 0x08, 0x7F}, {0x00, 0x41, 0x7F, 0x41, 0x00}, /* H I */
    {0x20, 0x40, 0x41, 0x3F, 0x01}, {0x7F, 0x08, 0x14, 0x22, 0x41}, /* J K */
    {0x7F, 0x40, 0x40, 0x40, 0x40}, {0x7F, 0x02, 0x0C, 0x02, 0x7F}, /* L M */
    {0x7F, 0x04, 0x08, 0x10, 0x7F}, {0x3E, 0x41, 0x41, 0x41, 0x3E}, /* N O */
    {0x7F, 0x09, 0x09, 0x09, 0x06}, {0x3E, 0x41, 0x51, 0x21, 0x5E}, /* P Q */
    {0x7F, 0x09, 0x19, 0x29, 0x46}, {0x46, 0x49, 0x49, 0x49, 0x31}, /* R S */
    {0x01, 0x01, 0x7F, 0x01, 0x01}, {0x3F, 0x40, 0x40, 0x40, 0x3F}, /* T U */
    {0x1F, 0x20, 0x40, 0x20, 0x1F}, {0x3F, 0x40, 0x38, 0x40, 0x3F}, /* V W */
    {0x63, 0x14, 0x08, 0x14, 0x63}, {0x07, 0x08, 0x70, 0x08, 0x07}, /* X Y */
    {0x61, 0x51, 0x49, 0x45, 0x43}, {0x00, 0x7F, 0x41, 0x41, 0x00}, /* Z [ */
    {0x02, 0x04, 0x08, 0x10, 0x20}, {0x00, 0x41, 0x41, 0x7F, 0x00}, /* \ ] */
    {0x04, 0x02, 0x01, 0x02, 0x04}, {0x40, 0x40, 0x40, 0x40, 0x40}, /* ^ _ */
    {0x00, 0x01, 0x02, 0x04, 0x00}, {0x20, 0x54, 0x54, 0x54, 0x78}, /* ` a */
    {0x7F, 0x48, 0x44, 0x44, 0x38}, {0x38, 0x44, 0x44, 0x44, 0x20}, /* b c */
    {0x38, 0x44, 0x44, 0x48, 0x7F}, {0x38, 0x54, 0x54, 0x54, 0x18}, /* d e */
    {0x08, 0x7E, 0x09, 0x01, 0x02}, {0x0C, 0x52, 0x52, 0x52, 0x3E}, /* f g */
    {0x7F, 0x08, 0x04, 0x04, 0x78}, {0x00, 0x44, 0x7D, 0x40, 0x00}, /* h i */
    {0x20, 0x40, 0x44, 0x3D, 0x00}, {0x7F, 0x10, 0x28, 0x44, 0x00}, /* j k */
    {0x00, 0x41, 0x7F, 0x40, 0x00}, {0x7C, 0x04, 0x18, 0x04, 0x78}, /* l m */
    {0x7C, 0x08, 0x04, 0x04, 0x78}, {0x38, 0x44, 0x44, 0x44, 0x38}, /* n o */
    {0x7C, 0x14, 0x14, 0x14, 0x08}, {0x08, 0x14, 0x14, 0x18, 0x7C}, /* p q */
    {0x7C, 0x08, 0x04, 0x04, 0x08}, {0x48, 0x54, 0x54, 0x54, 0x20}, /* r s */
    {0x04, 0x3F, 0x44, 0x40, 0x20}, {0x3C, 0x40, 0x40, 0x20, 0x7C}, /* t u */
    {0x1C, 0x20, 0x40, 0x20, 0x1C}, {0x3C, 0x40, 0x30, 0x40, 0x3C}, /* v w */
    {0x44, 0x28, 0x10, 0x28, 0x44}, {0x0C, 0x50, 0x50, 0x50, 0x3C}, /* x y */
    {0x44, 0x64, 0x54, 0x4C, 0x44}, {0x00, 0x08, 0x36, 0x41, 0x00}, /* z { */
    {0x00, 0x00, 0x7F, 0x00, 0x00}, {0x00, 0x41, 0x36, 0x08, 0x00}, /* | } */
    {0x08, 0x04, 0x08, 0x10, 0x08},                                 /* ~ */
};

static const uint8_t white[3] = {255, 255, 255};
static const uint8_t black[3] = {0, 0, 0};
static const uint8_t grid[3] = {225, 225, 225};

typedef struct {
    uint8_t *rgb;
    int w, h;
} canvas_t;

static void put(const canvas_t *c, int x, int y, const uint8_t col[3])
{
    if (x < 0 || y < 0 || x >= c->w || y >= c->h)
        return;
    memcpy(c->rgb + ((size_t)y * (size_t)c->w + (size_t)x) * 3, col, 3);
}

static void fill(const canvas_t *c, int x0, int y0, int x1, int y1, const uint8_t col[3])
{
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++)
            put(c, x, y, col);
}

/* Bresenham, `thick` pixels wide; dash > 0 draws dash on, dash off. */
static void line(const canvas_t *c, int x0, int y0, int x1, int y1, int thick, int dash,
                 const uint8_t col[3])
{
    int dx = abs(x1 - x0), dy = -abs(y1 - y0);
    int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, e = dx + dy;
    for (int i = 0;; i++) {
        if (dash <= 0 || (i / dash) % 2 == 0)
            fill(c, x0 - thick / 2, y0 - thick / 2, x0 + (thick - 1) / 2, y0 + (thick - 1) / 2,
                 col);
        if (x0 == x1 && y0 == y1)
            break;
        int e2 = 2 * e;
        if (e2 >= dy) {
            e += dy;
            x0 += sx;
        }
        if (e2 <= dx) {
            e += dx;
            y0 += sy;
        }
    }
}

int sdc_plot_text_width(const char *s, int scale)
{
    int n = (int)strlen(s);
    return n ? (n * ADVANCE - 1) * scale : 0;
}

void sdc_plot_text(uint8_t *rgb, int w, int h, int x, int y, const char *s, int scale,
                   int vertical, const uint8_t color[3])
{
    canvas_t c = {rgb, w, h};
    for (int i = 0; s[i]; i++) {
        unsigned ch = (unsigned char)s[i];
        const uint8_t *g = font5x7[(ch < 32 || ch > 126 ? '?' : ch) - 32];
        for (int col = 0; col < GLYPH_W; col++)
            for (int row = 0; row < GLYPH_H; row++) {
                if (!(g[col] >> row & 1))
                    continue;
                /* Position along the text and across it, in pixels. */
                int along = (i * ADVANCE + col) * scale, across = row * scale;
                for (int a = 0; a < scale; a++)
                    for (int b = 0; b < scale; b++) {
                        if (vertical)
                            put(&c, x + across + b, y - along - a, color);
                        else
                            put(&c, x + along + a, y + across + b, color);
                    }
            }
    }
}

double sdc_plot_tick_step(double max, int ticks)
{
    double raw = max / (ticks > 0 ? ticks : 1);
    double mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

/* A tick value with as many decimals as its step needs. */
static void tick_label(char *buf, size_t cap, double v, double step)
{
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    snprintf(buf, cap, "%.*f", dec > 6 ? 6 : dec, v);
}

static sdc_status_t check(const sdc_plot_t *p, int w, int h, sdc_error_t *err)
{
    if (w < 200 || h < 150 || w > SDC_PLOT_MAX_SIDE || h > SDC_PLOT_MAX_SIDE)
        return sdc_error_set(err, SDC_ERR_RANGE, "plot: %d x %d pixels is outside 200 x 150 .. "
                             "%d x %d", w, h, SDC_PLOT_MAX_SIDE, SDC_PLOT_MAX_SIDE);
    if (p->n < 1 || p->n > SDC_PLOT_MAX_POINTS || !p->x)
        return sdc_error_set(err, SDC_ERR_RANGE, "plot: %zu points, need 1..%d", p->n,
                             SDC_PLOT_MAX_POINTS);
    if (p->n_series < 1 || p->n_series > SDC_PLOT_MAX_SERIES || !p->series)
        return sdc_error_set(err, SDC_ERR_RANGE, "plot: %zu series, need 1..%d", p->n_series,
                             SDC_PLOT_MAX_SERIES);
    for (size_t i = 0; i < p->n; i++)
        if (!isfinite(p->x[i]) || p->x[i] < 0)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG, "plot: x[%zu] = %g is not a finite "
                                 "value >= 0", i, p->x[i]);
    for (size_t s = 0; s < p->n_series; s++)
        for (size_t i = 0; i < p->n; i++)
            if (isinf(p->series[s].y[i]) || p->series[s].y[i] < 0)
                return sdc_error_set(err, SDC_ERR_INVALID_ARG, "plot: series %zu, y[%zu] = %g "
                                     "is not a value >= 0 or NAN", s, i, p->series[s].y[i]);
    return SDC_OK;
}

/* The axis end: the first round tick at or above max (1 when all zero). */
static double axis_max(double max, double *step)
{
    if (!(max > 0))
        max = 1;
    *step = sdc_plot_tick_step(max, 5);
    return ceil(max / *step - 1e-9) * *step;
}

sdc_status_t sdc_plot_render(const sdc_plot_t *p, uint8_t **out, int *ow, int *oh,
                             sdc_error_t *err)
{
    int w = p->width ? p->width : 800, h = p->height ? p->height : 500;
    sdc_status_t st = check(p, w, h, err);
    if (st != SDC_OK)
        return st;
    canvas_t c = {malloc((size_t)w * (size_t)h * 3), w, h};
    if (!c.rgb)
        return sdc_error_set(err, SDC_ERR_NOMEM, "plot: out of memory");
    fill(&c, 0, 0, w - 1, h - 1, white);

    double xmax = 0, ymax = 0, xstep, ystep;
    for (size_t i = 0; i < p->n; i++) {
        xmax = fmax(xmax, p->x[i]);
        for (size_t s = 0; s < p->n_series; s++)
            if (!isnan(p->series[s].y[i]))
                ymax = fmax(ymax, p->series[s].y[i]);
    }
    for (size_t k = 0; k < p->n_hlines; k++)
        if (isfinite(p->hlines[k].y) && p->hlines[k].y > 0)
            ymax = fmax(ymax, p->hlines[k].y);
    xmax = axis_max(xmax, &xstep);
    ymax = axis_max(ymax, &ystep);

    /* The plot area. */
    int left = 80, right = w - 30, top = 40, bottom = h - 55;
    if (p->title)
        sdc_plot_text(c.rgb, w, h, (w - sdc_plot_text_width(p->title, 2)) / 2, 12, p->title, 2, 0,
                      black);
    if (p->xlabel)
        sdc_plot_text(c.rgb, w, h, left + (right - left - sdc_plot_text_width(p->xlabel, 1)) / 2,
                      h - 18, p->xlabel, 1, 0, black);
    if (p->ylabel)
        sdc_plot_text(c.rgb, w, h, 12, top + (bottom - top + sdc_plot_text_width(p->ylabel, 1)) / 2,
                      p->ylabel, 1, 1, black);
#define PX(v) (left + (int)lround((v) / xmax * (right - left)))
#define PY(v) (bottom - (int)lround((v) / ymax * (bottom - top)))
    char buf[32];
    for (int k = 0; k * ystep <= ymax * (1 + 1e-9); k++) {
        double v = k * ystep;
        line(&c, left, PY(v), right, PY(v), 1, 0, grid);
        line(&c, left - 5, PY(v), left, PY(v), 1, 0, black);
        tick_label(buf, sizeof(buf), v, ystep);
        sdc_plot_text(c.rgb, w, h, left - 8 - sdc_plot_text_width(buf, 1), PY(v) - 3, buf, 1, 0,
                      black);
    }
    for (int k = 0; k * xstep <= xmax * (1 + 1e-9); k++) {
        double v = k * xstep;
        line(&c, PX(v), top, PX(v), bottom, 1, 0, grid);
        line(&c, PX(v), bottom, PX(v), bottom + 5, 1, 0, black);
        tick_label(buf, sizeof(buf), v, xstep);
        sdc_plot_text(c.rgb, w, h, PX(v) - sdc_plot_text_width(buf, 1) / 2, bottom + 10, buf, 1,
                      0, black);
    }
    line(&c, left, top, left, bottom, 2, 0, black);
    line(&c, left, bottom, right, bottom, 2, 0, black);

    for (size_t k = 0; k < p->n_hlines; k++) {
        const sdc_plot_hline_t *hl = &p->hlines[k];
        if (!isfinite(hl->y) || hl->y < 0)
            continue;
        line(&c, left, PY(hl->y), right, PY(hl->y), 1, 6, hl->rgb);
        if (hl->label)
            sdc_plot_text(c.rgb, w, h, right - sdc_plot_text_width(hl->label, 1), PY(hl->y) - 10,
                          hl->label, 1, 0, hl->rgb);
    }
    int legend_w = 0;
    for (size_t s = 0; s < p->n_series; s++) {
        const sdc_plot_series_t *sr = &p->series[s];
        for (size_t i = 0; i < p->n; i++) {
            if (isnan(sr->y[i]))
                continue;
            int x = PX(p->x[i]), y = PY(sr->y[i]);
            fill(&c, x - 3, y - 3, x + 3, y + 3, sr->rgb);
            if (i + 1 < p->n && !isnan(sr->y[i + 1]))
                line(&c, x, y, PX(p->x[i + 1]), PY(sr->y[i + 1]), 2, 0, sr->rgb);
        }
        if (sr->label && sdc_plot_text_width(sr->label, 1) > legend_w)
            legend_w = sdc_plot_text_width(sr->label, 1);
    }
    /* Legend on a framed white box over the lines: a swatch and the label,
     * one row per series. */
    int lx = left + 8, ly0 = top + 6, lh = (int)p->n_series * 14 + 6;
    fill(&c, lx, ly0, lx + 30 + legend_w + 6, ly0 + lh, white);
    line(&c, lx, ly0, lx + 30 + legend_w + 6, ly0, 1, 0, grid);
    line(&c, lx, ly0 + lh, lx + 30 + legend_w + 6, ly0 + lh, 1, 0, grid);
    line(&c, lx, ly0, lx, ly0 + lh, 1, 0, grid);
    line(&c, lx + 30 + legend_w + 6, ly0, lx + 30 + legend_w + 6, ly0 + lh, 1, 0, grid);
    for (size_t s = 0; s < p->n_series; s++) {
        const sdc_plot_series_t *sr = &p->series[s];
        int ly = ly0 + 6 + (int)s * 14;
        fill(&c, lx + 6, ly, lx + 20, ly + 6, sr->rgb);
        if (sr->label)
            sdc_plot_text(c.rgb, w, h, lx + 26, ly, sr->label, 1, 0, black);
    }
#undef PX
#undef PY
    *out = c.rgb;
    *ow = w;
    *oh = h;
    return SDC_OK;
}

sdc_status_t sdc_plot_write_png(const sdc_plot_t *p, const char *path, sdc_error_t *err)
{
    uint8_t *rgb;
    int w, h;
    sdc_status_t st = sdc_plot_render(p, &rgb, &w, &h, err);
    if (st != SDC_OK)
        return st;
    st = sdc_png_write_file(path, rgb, w, h, err);
    free(rgb);
    return st;
}
