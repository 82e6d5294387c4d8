/*
 * jpeg.h: decoding JPEG images to RGB8 with libjpeg (libjpeg-turbo), for
 * image-to-image input. Builds without SDC_HAVE_JPEG (no libjpeg linked)
 * keep the interface and refuse every JPEG with SDC_ERR_UNSUPPORTED.
 */
#ifndef SDC_JPEG_H
#define SDC_JPEG_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* 1 when this build decodes JPEG. */
int sdc_jpeg_supported(void);

/* Decodes a baseline or progressive JPEG (grayscale or YCbCr; CMYK is
 * refused) from memory into RGB8 (*rgb malloc'd), with libjpeg's defaults
 * (islow IDCT, fancy upsampling), as PIL decodes. Rejects images over
 * max_pixels before allocating them, and data that ends before the image
 * does (libjpeg would pad it with grey). */
sdc_status_t sdc_jpeg_decode(const uint8_t *buf, size_t len, size_t max_pixels, uint8_t **rgb,
                             int *w, int *h, sdc_error_t *err);

#endif
