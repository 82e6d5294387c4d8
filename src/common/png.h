/*
 * png.h: encoding RGB8 images to PNG files or memory buffers (libpng), and
 * converting the VAE's [-1, 1] float output to RGB8 exactly as diffusers'
 * VaeImageProcessor.postprocess does for output_type "pil".
 */
#ifndef SDC_PNG_H
#define SDC_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* chw: [3, h, w] float32 in [-1, 1]; rgb: [h, w, 3] bytes.
 * diffusers: x = clamp(x / 2 + 0.5, 0, 1); byte = round(x * 255)
 * (numpy: (x * 255).round().astype(uint8)). */
void sdc_image_to_rgb8(const float *chw, int w, int h, uint8_t *rgb);

sdc_status_t sdc_png_write_file(const char *path, const uint8_t *rgb, int w, int h,
                                sdc_error_t *err);
/* *out is malloc'd; the caller frees it. */
sdc_status_t sdc_png_encode(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *out_len,
                            sdc_error_t *err);
/* Decodes an 8-bit RGB/RGBA/gray PNG from memory into RGB8 (*rgb malloc'd).
 * Rejects images over max_pixels. */
sdc_status_t sdc_png_decode(const uint8_t *buf, size_t len, size_t max_pixels, uint8_t **rgb,
                            int *w, int *h, sdc_error_t *err);

#endif
