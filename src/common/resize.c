/*
 * resize.c: Pillow's Lanczos resampling of RGB8 images, bit for bit (see
 * resize.h). The arithmetic follows Pillow's libImaging/Resample.c: the
 * same double-precision kernel and normalisation, the same conversion of
 * coefficients to 22-bit fixed point, the same integer sums started at one
 * half and the same clipping, and the same pass order with an 8-bit
 * intermediate. Accumulators are 64-bit here (Pillow's are int, which the
 * coefficients keep far from overflow), so every sum is the same.
 *
 * The pass order is Pillow 13's, found by comparing both orders with its
 * output: the horizontal pass first, except when the width grows and the
 * height shrinks, where the vertical pass runs first (Pillow then never
 * enlarges rows it is about to merge). With one pass the order is moot.
 */
#include "resize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)
#define LANCZOS_SUPPORT 3.0

static double sinc(double x)
{
    if (x == 0.0) return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}

static double lanczos(double x)
{
    if (-3.0 <= x && x < 3.0) return sinc(x) * sinc(x / 3);
    return 0.0;
}

/* One axis: for each output position, the first input index, the number
 * of inputs read and their fixed-point coefficients (ksize per output). */
typedef struct {
    int ksize;
    int *bounds;   /* out_size x {first, count} */
    int32_t *coef; /* out_size x ksize */
} axis_t;

static void axis_free(axis_t *a)
{
    free(a->bounds);
    free(a->coef);
}

static int32_t fixed_point(double k)
{
    return k < 0 ? (int32_t)(-0.5 + k * (1 << PRECISION_BITS))
                 : (int32_t)(0.5 + k * (1 << PRECISION_BITS));
}

/* precompute_coeffs + normalize_coeffs_8bpc for the box [0, in_size). */
static sdc_status_t axis_init(axis_t *a, int in_size, int out_size, sdc_error_t *err)
{
    /* Pillow computes in1 - in0 in float: exact for these sizes. */
    double scale = (double)((float)in_size - 0.0f) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = LANCZOS_SUPPORT * filterscale;
    double *k = NULL;
    a->ksize = (int)ceil(support) * 2 + 1;
    a->bounds = malloc((size_t)out_size * 2 * sizeof(int));
    a->coef = malloc((size_t)out_size * (size_t)a->ksize * sizeof(int32_t));
    k = malloc((size_t)a->ksize * sizeof(double));
    if (!a->bounds || !a->coef || !k) {
        free(k);
        axis_free(a);
        return sdc_error_set(err, SDC_ERR_NOMEM, "resize: out of memory for %d x %d coefficients",
                             out_size, a->ksize);
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = 0.0 + (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            double w = lanczos((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        int32_t *c = a->coef + (size_t)xx * a->ksize;
        for (int x = 0; x < a->ksize; x++)
            c[x] = x < xmax ? fixed_point(ww != 0.0 ? k[x] / ww : k[x]) : 0;
        a->bounds[2 * xx] = xmin;
        a->bounds[2 * xx + 1] = xmax;
    }
    free(k);
    return SDC_OK;
}

static uint8_t clip8(int64_t ss)
{
    if (ss < 0) return 0;
    ss >>= PRECISION_BITS;
    return ss > 255 ? 255 : (uint8_t)ss;
}

/* Output rows [0, rows) from input rows [row0, row0 + rows), new width. */
static void pass_horizontal(const uint8_t *src, int src_w, int row0, int rows, const axis_t *a,
                            int dst_w, uint8_t *dst)
{
    for (int yy = 0; yy < rows; yy++) {
        const uint8_t *in = src + (size_t)(row0 + yy) * src_w * 3;
        uint8_t *o = dst + (size_t)yy * dst_w * 3;
        for (int xx = 0; xx < dst_w; xx++) {
            const int32_t *c = a->coef + (size_t)xx * a->ksize;
            const uint8_t *p = in + (size_t)a->bounds[2 * xx] * 3;
            int64_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < a->bounds[2 * xx + 1]; x++) {
                s0 += (int64_t)p[3 * x] * c[x];
                s1 += (int64_t)p[3 * x + 1] * c[x];
                s2 += (int64_t)p[3 * x + 2] * c[x];
            }
            o[3 * xx] = clip8(s0);
            o[3 * xx + 1] = clip8(s1);
            o[3 * xx + 2] = clip8(s2);
        }
    }
}

/* Output row yy reads input rows bounds[2 yy] - row0 onwards. */
static void pass_vertical(const uint8_t *src, int w, int row0, const axis_t *a, int dst_h,
                          uint8_t *dst)
{
    const size_t stride = (size_t)w * 3;
    for (int yy = 0; yy < dst_h; yy++) {
        const int32_t *c = a->coef + (size_t)yy * a->ksize;
        const uint8_t *in = src + (size_t)(a->bounds[2 * yy] - row0) * stride;
        int n = a->bounds[2 * yy + 1];
        uint8_t *o = dst + (size_t)yy * stride;
        for (size_t i = 0; i < stride; i++) {
            int64_t s = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < n; y++)
                s += (int64_t)in[(size_t)y * stride + i] * c[y];
            o[i] = clip8(s);
        }
    }
}

sdc_status_t sdc_resize_lanczos_rgb8(const uint8_t *src, int src_w, int src_h, int dst_w,
                                     int dst_h, uint8_t **out, sdc_error_t *err)
{
    axis_t ax = {0}, ay = {0};
    uint8_t *tmp = NULL, *dst = NULL;
    sdc_status_t st;
    *out = NULL;
    if (!src)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "resize: no image");
    if (src_w < 1 || src_h < 1 || dst_w < 1 || dst_h < 1 || src_w > SDC_RESIZE_MAX_SIDE ||
        src_h > SDC_RESIZE_MAX_SIDE || dst_w > SDC_RESIZE_MAX_SIDE || dst_h > SDC_RESIZE_MAX_SIDE)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "resize: %dx%d -> %dx%d: each side must be in 1 .. %d", src_w, src_h,
                             dst_w, dst_h, SDC_RESIZE_MAX_SIDE);
    dst = malloc((size_t)dst_w * dst_h * 3);
    if (!dst)
        return sdc_error_set(err, SDC_ERR_NOMEM, "resize: out of memory for a %dx%d image",
                             dst_w, dst_h);
    if (src_w == dst_w && src_h == dst_h) {
        memcpy(dst, src, (size_t)dst_w * dst_h * 3);
        *out = dst;
        return SDC_OK;
    }
    if ((st = axis_init(&ay, src_h, dst_h, err)) != SDC_OK)
        goto err_free_dst;
    if (dst_w != src_w && (st = axis_init(&ax, src_w, dst_w, err)) != SDC_OK)
        goto err_free_ay;
    if (dst_w == src_w) {
        pass_vertical(src, src_w, 0, &ay, dst_h, dst);
    } else if (dst_h == src_h) {
        pass_horizontal(src, src_w, 0, src_h, &ax, dst_w, dst);
    } else if (dst_w > src_w && dst_h < src_h) {
        /* Pillow shrinks before it enlarges: the vertical pass first. */
        tmp = malloc((size_t)src_w * dst_h * 3);
        if (!tmp)
            goto err_nomem;
        pass_vertical(src, src_w, 0, &ay, dst_h, tmp);
        pass_horizontal(tmp, src_w, 0, dst_h, &ax, dst_w, dst);
    } else {
        /* Only the input rows the vertical pass reads are resampled. */
        int first = ay.bounds[0], last = ay.bounds[2 * dst_h - 2] + ay.bounds[2 * dst_h - 1];
        tmp = malloc((size_t)dst_w * (size_t)(last - first) * 3);
        if (!tmp)
            goto err_nomem;
        pass_horizontal(src, src_w, first, last - first, &ax, dst_w, tmp);
        pass_vertical(tmp, dst_w, first, &ay, dst_h, dst);
    }
    free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    *out = dst;
    return SDC_OK;

err_nomem:
    st = sdc_error_set(err, SDC_ERR_NOMEM, "resize: out of memory for %dx%d -> %dx%d", src_w,
                       src_h, dst_w, dst_h);
    axis_free(&ax);
err_free_ay:
    axis_free(&ay);
err_free_dst:
    free(dst);
    return st;
}
