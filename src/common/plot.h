/*
 * plot.h: small line charts as PNG files (axes, ticks at round numbers,
 * axis labels, a title, a legend, optional horizontal reference lines),
 * drawn into an RGB8 buffer with a built-in 5x7 bitmap font and written
 * with png.h. For reports such as sdc-loadgen's latency vs load; no
 * dependency beyond libpng.
 *
 * Not a plotting library: linear axes from zero, one x vector shared by
 * every series, printable ASCII text only (other bytes draw as '?').
 */
#ifndef SDC_PLOT_H
#define SDC_PLOT_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define SDC_PLOT_MAX_SERIES 8
#define SDC_PLOT_MAX_POINTS 1024
#define SDC_PLOT_MAX_SIDE 4096

typedef struct {
    const char *label;
    const double *y;   /* n values; NAN leaves a gap */
    uint8_t rgb[3];
} sdc_plot_series_t;

typedef struct {
    const char *label;
    double y;
    uint8_t rgb[3];
} sdc_plot_hline_t;

typedef struct {
    const char *title, *xlabel, *ylabel;
    const double *x;   /* n finite values >= 0 */
    size_t n;
    const sdc_plot_series_t *series;
    size_t n_series;
    const sdc_plot_hline_t *hlines; /* drawn dashed, labelled at the right */
    size_t n_hlines;
    int width, height; /* pixels; 0: 800 x 500 */
} sdc_plot_t;

/* Renders p into *rgb (malloc'd, [h][w][3]). */
sdc_status_t sdc_plot_render(const sdc_plot_t *p, uint8_t **rgb, int *w, int *h,
                             sdc_error_t *err);
sdc_status_t sdc_plot_write_png(const sdc_plot_t *p, const char *path, sdc_error_t *err);

/* Text: 6 x scale pixels per character (5 + a space), 7 x scale high. */
int sdc_plot_text_width(const char *s, int scale);
/* Draws s with its top-left corner at (x, y); vertical: rotated a quarter
 * turn counter-clockwise, reading bottom to top, starting at (x, y) as the
 * bottom-left corner. Pixels outside the image are skipped. */
void sdc_plot_text(uint8_t *rgb, int w, int h, int x, int y, const char *s, int scale,
                   int vertical, const uint8_t color[3]);

/* The round tick spacing (1, 2 or 5 x 10^k) giving about `ticks` steps up
 * to max (> 0). */
double sdc_plot_tick_step(double max, int ticks);

#endif
