/*
 * tensor.h: a host tensor descriptor (dtype, shape, strides, data pointer)
 * and dtype helpers (sizes, names, f16/bf16 <-> f32 conversion).
 *
 * Descriptors do not own memory unless created with sdc_tensor_alloc; device
 * buffers are plain pointers handed to the backend (see backend.h).
 */
#ifndef SDC_TENSOR_H
#define SDC_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define SDC_MAX_DIMS 8

typedef enum {
    SDC_DTYPE_F32 = 0,
    SDC_DTYPE_F16,
    SDC_DTYPE_BF16,
    SDC_DTYPE_I64,
    SDC_DTYPE_I32,
    SDC_DTYPE_U8,
    SDC_DTYPE_BOOL,
    SDC_DTYPE_COUNT
} sdc_dtype_t;

typedef struct {
    sdc_dtype_t dtype;
    int ndim;
    int64_t shape[SDC_MAX_DIMS];
    int64_t stride[SDC_MAX_DIMS]; /* in elements */
    void *data;
    int owns_data;
} sdc_tensor_t;

size_t sdc_dtype_size(sdc_dtype_t dt);
/* safetensors spelling: "F32", "F16", "BF16", "I64", "I32", "U8", "BOOL". */
const char *sdc_dtype_name(sdc_dtype_t dt);
/* Returns 0 and sets *dt on a known name, -1 otherwise. */
int sdc_dtype_parse(const char *name, sdc_dtype_t *dt);

/* -1 for a negative dim, ndim outside [0, SDC_MAX_DIMS], or int64 overflow. */
int64_t sdc_shape_numel(int ndim, const int64_t *shape);
/* Formats "[2, 64, 32, 32]" into buf; returns buf. */
char *sdc_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap);

/* Fills contiguous row-major strides. */
void sdc_tensor_init(sdc_tensor_t *t, sdc_dtype_t dt, int ndim, const int64_t *shape, void *data);
sdc_status_t sdc_tensor_alloc(sdc_tensor_t *t, sdc_dtype_t dt, int ndim, const int64_t *shape,
                              sdc_error_t *err);
void sdc_tensor_free(sdc_tensor_t *t);
int64_t sdc_tensor_numel(const sdc_tensor_t *t);
size_t sdc_tensor_nbytes(const sdc_tensor_t *t);
int sdc_tensor_is_contiguous(const sdc_tensor_t *t);

float sdc_f16_to_f32(uint16_t h);
uint16_t sdc_f32_to_f16(float f);             /* round to nearest even */
float sdc_bf16_to_f32(uint16_t b);
uint16_t sdc_f32_to_bf16(float f);            /* round to nearest even */

/* Converts n contiguous elements of dtype src_dt to float32. F32, F16, BF16
 * only; others return SDC_ERR_UNSUPPORTED. */
sdc_status_t sdc_convert_to_f32(float *dst, const void *src, sdc_dtype_t src_dt, int64_t n);

#endif
