/*
 * weights.h: loading named tensors of one model component (a directory such
 * as transformer/ or vae/) into backend buffers as float32.
 *
 * Only the tensors a caller asks for are read, so a DiT stage maps the whole
 * checkpoint but touches only its block range. F32 tensors on a host-memory
 * backend are used in place from the mapping when aligned; F16/BF16 are
 * converted. Every requested shape is checked against the file.
 */
#ifndef SDC_WEIGHTS_H
#define SDC_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "../backend/backend.h"
#include "../common/safetensors.h"
#include "../common/status.h"

typedef struct {
    sdc_backend_t *be;
    sdc_st_set_t st;
    void **owned;      /* device buffers allocated by loads, freed on close */
    size_t n_owned, cap_owned;
    size_t bytes_loaded; /* float32 bytes made available to the backend */
    size_t n_loaded;     /* tensors loaded */
    char *label;         /* the path as opened, naming the component in errors */
} sdc_weights_t;

/* dir: a component directory (or a .safetensors / .index.json path). */
sdc_status_t sdc_weights_open(sdc_weights_t *w, sdc_backend_t *be, const char *dir,
                              sdc_error_t *err);
/* Frees every buffer loaded through w and unmaps the files. */
void sdc_weights_close(sdc_weights_t *w);

/* Loads `name`, which must exist with exactly this shape (ndim dims). */
sdc_status_t sdc_weights_load(sdc_weights_t *w, const char *name, int ndim,
                              const int64_t *shape, float **out, sdc_error_t *err);
/* Same, but a missing tensor gives *out = NULL and SDC_OK. */
sdc_status_t sdc_weights_load_opt(sdc_weights_t *w, const char *name, int ndim,
                                  const int64_t *shape, float **out, sdc_error_t *err);
/* printf-style name helpers: sdc_weights_loadf(w, shape..., "blocks.%d.w", i). */
sdc_status_t sdc_weights_loadf(sdc_weights_t *w, int ndim, const int64_t *shape, float **out,
                               sdc_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
sdc_status_t sdc_weights_loadf_opt(sdc_weights_t *w, int ndim, const int64_t *shape, float **out,
                                   sdc_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
int sdc_weights_has(const sdc_weights_t *w, const char *name);

/* A linear layer's weight `name` ([N, K]), packed for the backend's GEMM
 * when the backend packs (->linear_pack): the packed copy replaces the
 * float32 one, so a layer costs its weight's memory once. */
sdc_status_t sdc_weights_load_linear(sdc_weights_t *w, const char *name, int64_t N, int64_t K,
                                     sdc_linear_w_t *out, sdc_error_t *err);
sdc_status_t sdc_weights_load_linearf(sdc_weights_t *w, int64_t N, int64_t K,
                                      sdc_linear_w_t *out, sdc_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* For weights that are transformed before use (summed, selected): `name`,
 * checked as sdc_weights_load does, as float32 in a malloc'd host array
 * (*out; the caller frees it). */
sdc_status_t sdc_weights_read_host(const sdc_weights_t *w, const char *name, int ndim,
                                   const int64_t *shape, float **out, sdc_error_t *err);
/* Uploads host[0..n) into a new backend buffer owned by w (freed on close). */
sdc_status_t sdc_weights_upload(sdc_weights_t *w, const float *host, int64_t n, float **out,
                                sdc_error_t *err);

/* Rows ids[0..n) of the 2-D tensor `name` ([rows, dim], F32/F16/BF16), as
 * float32 into host memory out (n x dim), read straight from the mapping:
 * an embedding lookup that never converts or uploads the whole table. An
 * id outside [0, rows) is an error naming its position. */
sdc_status_t sdc_weights_gather_rows(const sdc_weights_t *w, const char *name, const int32_t *ids,
                                     int64_t n, int64_t dim, float *out, sdc_error_t *err);

#endif
