/*
 * resize.h: resampling an RGB8 image to another size exactly as Pillow's
 * Image.resize(size, Image.Resampling.LANCZOS) does (reducing_gap None,
 * the whole image as the box): what diffusers' VaeImageProcessor.preprocess
 * does to a PIL image whose size differs from the requested one.
 *
 * Pillow resamples in two separable passes on 8-bit data, with an 8-bit
 * intermediate image between them (resize.c says in which order).
 * Each output sample is a sum of input samples times fixed-point
 * coefficients (22 fraction bits, from the Lanczos-3 kernel widened by the
 * downscale factor and normalised in double), plus one half, shifted and
 * clipped to 0..255. This file reproduces the coefficients, the rounding
 * and the clipping bit for bit; it is not a general image library.
 */
#ifndef SDC_RESIZE_H
#define SDC_RESIZE_H

#include <stdint.h>

#include "status.h"

/* Largest side either image may have (well above any model's size). */
#define SDC_RESIZE_MAX_SIDE 16384

/* src: src_h x src_w x 3 bytes; *out (malloc'd): dst_h x dst_w x 3. Equal
 * sizes give a copy. Sides outside 1 .. SDC_RESIZE_MAX_SIDE are refused. */
sdc_status_t sdc_resize_lanczos_rgb8(const uint8_t *src, int src_w, int src_h, int dst_w,
                                     int dst_h, uint8_t **out, sdc_error_t *err);

#endif
