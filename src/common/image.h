/*
 * image.h: reading an input image (image-to-image) from a file or memory:
 * PNG, or JPEG where the build has libjpeg, told apart by their signatures
 * and always decoded to RGB8. Other colour types become RGB as PIL's
 * convert("RGB") makes them: alpha dropped, gray replicated, palettes
 * expanded, 16-bit samples cut to their high byte.
 */
#ifndef SDC_IMAGE_H
#define SDC_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Files larger than this are refused before they are read. */
#define SDC_IMAGE_MAX_FILE_BYTES ((size_t)1 << 30)

/* *rgb (h x w x 3) is malloc'd. Images over max_pixels are refused from
 * their header, before pixel memory is allocated. */
sdc_status_t sdc_image_decode(const uint8_t *buf, size_t len, size_t max_pixels, uint8_t **rgb,
                              int *w, int *h, sdc_error_t *err);
/* The same from a file; errors name the path. */
sdc_status_t sdc_image_load(const char *path, size_t max_pixels, uint8_t **rgb, int *w, int *h,
                            sdc_error_t *err);

#endif
