/*
 * golden.h: reading golden tensors (tests/data/goldens/, safetensors files) in
 * unit tests: open a file by name, fetch a tensor as float32 or int64 with
 * its shape.
 */
#ifndef SDC_TEST_GOLDEN_H
#define SDC_TEST_GOLDEN_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/safetensors.h"
#include "common/tensor.h"

/* Opens tests/data/goldens/<name>; returns 0 on success, prints why not. */
static inline int golden_open(sdc_st_file_t *f, const char *name)
{
    char path[1024];
    sdc_error_t err = {0};
    snprintf(path, sizeof(path), "%s/goldens/%s", test_data_dir(), name);
    if (sdc_st_open(f, path, &err) != SDC_OK) {
        fprintf(stderr, "  cannot open golden %s: %s\n", path, err.msg);
        return -1;
    }
    return 0;
}

/* Tensor `name` as malloc'd float32 (F32/F16/BF16/I64 converted); shape and
 * ndim optional. NULL (with a message) when absent. */
static inline float *golden_f32(const sdc_st_file_t *f, const char *name, int *ndim,
                                int64_t *shape)
{
    const sdc_st_entry_t *e = sdc_st_find(f, name);
    sdc_tensor_t t;
    if (!e) {
        fprintf(stderr, "  golden %s: no tensor '%s'\n", f->path, name);
        return NULL;
    }
    sdc_st_view(f, e, &t);
    int64_t n = sdc_shape_numel(e->ndim, e->shape);
    float *out = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!out) return NULL;
    if (e->dtype == SDC_DTYPE_I64) {
        for (int64_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, (const char *)t.data + 8 * i, 8);
            out[i] = (float)v;
        }
    } else if (sdc_convert_to_f32(out, t.data, e->dtype, n) != SDC_OK) {
        fprintf(stderr, "  golden %s: '%s' has unsupported dtype\n", f->path, name);
        free(out);
        return NULL;
    }
    if (ndim) *ndim = e->ndim;
    if (shape)
        for (int i = 0; i < e->ndim; i++) shape[i] = e->shape[i];
    return out;
}

/* Integer scalar or first element; def when absent. */
static inline int64_t golden_i64(const sdc_st_file_t *f, const char *name, int64_t def)
{
    const sdc_st_entry_t *e = sdc_st_find(f, name);
    sdc_tensor_t t;
    if (!e || e->dtype != SDC_DTYPE_I64 || e->end == e->begin) return def;
    sdc_st_view(f, e, &t);
    int64_t v;
    memcpy(&v, t.data, 8);
    return v;
}

#endif
