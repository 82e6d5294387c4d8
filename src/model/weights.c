/*
 * weights.c: named float32 tensors of one model component, from its
 * safetensors files into backend buffers.
 *
 * On a host-memory backend an aligned F32 tensor is used in place from the
 * read-only mapping (no copy, no memory beyond the page cache); anything
 * else is converted to float32 and copied into a buffer this module owns
 * and frees on close. Shapes are checked exactly: a checkpoint for another
 * configuration fails at load time with the tensor's name, not later with
 * wrong numbers.
 */
#include "weights.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../common/tensor.h"

/* Host staging for conversions and uploads is done in chunks of this size,
 * so loading a multi-GB embedding never needs a second multi-GB buffer. */
#define WEIGHTS_CHUNK_BYTES ((size_t)16 << 20)

#define WEIGHTS_NAME_MAX 512

sdc_status_t sdc_weights_open(sdc_weights_t *w, sdc_backend_t *be, const char *dir,
                              sdc_error_t *err)
{
    memset(w, 0, sizeof(*w));
    size_t len = strlen(dir);
    /* "a/transformer/" and "a/transformer" should read the same in errors. */
    while (len > 1 && dir[len - 1] == '/')
        len--;
    w->label = strndup(dir, len);
    if (!w->label)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", dir);
    sdc_status_t st = sdc_st_set_open(&w->st, dir, err);
    if (st != SDC_OK) {
        free(w->label);
        w->label = NULL;
        return st;
    }
    w->be = be;
    return SDC_OK;
}

void sdc_weights_close(sdc_weights_t *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_owned; i++)
        w->be->ops->free(w->be, w->owned[i]);
    free(w->owned);
    sdc_st_set_close(&w->st);
    free(w->label);
    memset(w, 0, sizeof(*w));
}

int sdc_weights_has(const sdc_weights_t *w, const char *name)
{
    return sdc_st_set_find(&w->st, name, NULL) != NULL;
}

/* Makes room for one more owned buffer before it is allocated, so a failed
 * grow never strands a device buffer. */
static sdc_status_t owned_reserve(sdc_weights_t *w, sdc_error_t *err)
{
    if (w->n_owned < w->cap_owned)
        return SDC_OK;
    size_t cap = w->cap_owned ? w->cap_owned * 2 : 64;
    void **p = realloc(w->owned, cap * sizeof(*p));
    if (!p)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", w->label);
    w->owned = p;
    w->cap_owned = cap;
    return SDC_OK;
}

static sdc_status_t check_shape(const sdc_weights_t *w, const char *name,
                                const sdc_st_entry_t *e, int ndim, const int64_t *shape,
                                sdc_error_t *err)
{
    int same = e->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = e->shape[i] == shape[i];
    if (same)
        return SDC_OK;
    char have[160], want[160];
    return sdc_error_set(err, SDC_ERR_SHAPE, "%s: '%s' has shape %s, expected %s", w->label, name,
                         sdc_shape_str(e->ndim, e->shape, have, sizeof(have)),
                         sdc_shape_str(ndim, shape, want, sizeof(want)));
}

/* Converts (or copies) src into the device buffer dst, chunk by chunk. */
static sdc_status_t copy_to_device(sdc_weights_t *w, const char *name, float *dst,
                                   const uint8_t *src, sdc_dtype_t dt, int64_t numel,
                                   sdc_error_t *err)
{
    sdc_backend_t *be = w->be;
    size_t esize = sdc_dtype_size(dt);
    if (be->ops->host_memory) {
        /* Device memory is host memory: convert straight into it. */
        sdc_convert_to_f32(dst, src, dt, numel);
        return SDC_OK;
    }
    if (dt == SDC_DTYPE_F32) {
        be->ops->upload(be, dst, src, (size_t)numel * sizeof(float));
        be->ops->sync(be);
        return SDC_OK;
    }
    const int64_t chunk = (int64_t)(WEIGHTS_CHUNK_BYTES / sizeof(float));
    float *tmp = malloc((size_t)(numel < chunk ? numel : chunk) * sizeof(float));
    if (!tmp)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory converting '%s'", w->label,
                             name);
    for (int64_t i = 0; i < numel; i += chunk) {
        int64_t m = numel - i < chunk ? numel - i : chunk;
        sdc_convert_to_f32(tmp, src + (size_t)i * esize, dt, m);
        be->ops->upload(be, dst + i, tmp, (size_t)m * sizeof(float));
        /* The next chunk overwrites tmp: the upload must have read it. */
        be->ops->sync(be);
    }
    free(tmp);
    return SDC_OK;
}

/* A tensor that can be loaded: present, of this exact shape, float-typed. */
static sdc_status_t check_entry(const sdc_weights_t *w, const char *name,
                                const sdc_st_entry_t *e, int ndim, const int64_t *shape,
                                sdc_error_t *err)
{
    if (!e)
        return sdc_error_set(err, SDC_ERR_NOT_FOUND, "%s: tensor '%s' not found", w->label, name);
    sdc_status_t st = check_shape(w, name, e, ndim, shape, err);
    if (st != SDC_OK)
        return st;
    if (e->dtype != SDC_DTYPE_F32 && e->dtype != SDC_DTYPE_F16 && e->dtype != SDC_DTYPE_BF16)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: '%s' is stored as %s; weights must be F32, F16 or BF16",
                             w->label, name, sdc_dtype_name(e->dtype));
    return SDC_OK;
}

static sdc_status_t weights_load(sdc_weights_t *w, const char *name, int ndim,
                                 const int64_t *shape, int optional, float **out,
                                 sdc_error_t *err)
{
    *out = NULL;
    const sdc_st_file_t *f;
    const sdc_st_entry_t *e = sdc_st_set_find(&w->st, name, &f);
    if (!e && optional)
        return SDC_OK;
    sdc_status_t st = check_entry(w, name, e, ndim, shape, err);
    if (st != SDC_OK)
        return st;

    sdc_tensor_t view;
    sdc_st_view(f, e, &view);
    int64_t numel = sdc_shape_numel(e->ndim, e->shape);
    size_t bytes = (size_t)numel * sizeof(float);

    if (w->be->ops->host_memory && e->dtype == SDC_DTYPE_F32 &&
        (uintptr_t)view.data % sizeof(float) == 0) {
        *out = view.data;
        w->bytes_loaded += bytes;
        w->n_loaded++;
        return SDC_OK;
    }

    st = owned_reserve(w, err);
    if (st != SDC_OK)
        return st;
    float *buf = w->be->ops->alloc(w->be, bytes ? bytes : sizeof(float));
    if (!buf)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: cannot allocate %zu bytes for '%s'",
                             w->label, bytes, name);
    st = copy_to_device(w, name, buf, view.data, e->dtype, numel, err);
    if (st != SDC_OK) {
        w->be->ops->free(w->be, buf);
        return st;
    }
    w->owned[w->n_owned++] = buf;
    w->bytes_loaded += bytes;
    w->n_loaded++;
    *out = buf;
    return SDC_OK;
}

sdc_status_t sdc_weights_load(sdc_weights_t *w, const char *name, int ndim,
                              const int64_t *shape, float **out, sdc_error_t *err)
{
    return weights_load(w, name, ndim, shape, 0, out, err);
}

sdc_status_t sdc_weights_load_opt(sdc_weights_t *w, const char *name, int ndim,
                                  const int64_t *shape, float **out, sdc_error_t *err)
{
    return weights_load(w, name, ndim, shape, 1, out, err);
}

static sdc_status_t weights_vloadf(sdc_weights_t *w, int ndim, const int64_t *shape,
                                   int optional, float **out, sdc_error_t *err, const char *fmt,
                                   va_list ap)
{
    char name[WEIGHTS_NAME_MAX];
    int n = vsnprintf(name, sizeof(name), fmt, ap);
    if (n < 0 || (size_t)n >= sizeof(name)) {
        *out = NULL;
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: tensor name '%.64s...' too long",
                             w->label, name);
    }
    return weights_load(w, name, ndim, shape, optional, out, err);
}

sdc_status_t sdc_weights_loadf(sdc_weights_t *w, int ndim, const int64_t *shape, float **out,
                               sdc_error_t *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sdc_status_t st = weights_vloadf(w, ndim, shape, 0, out, err, fmt, ap);
    va_end(ap);
    return st;
}

sdc_status_t sdc_weights_loadf_opt(sdc_weights_t *w, int ndim, const int64_t *shape, float **out,
                                   sdc_error_t *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sdc_status_t st = weights_vloadf(w, ndim, shape, 1, out, err, fmt, ap);
    va_end(ap);
    return st;
}

sdc_status_t sdc_weights_read_host(const sdc_weights_t *w, const char *name, int ndim,
                                   const int64_t *shape, float **out, sdc_error_t *err)
{
    *out = NULL;
    const sdc_st_file_t *f;
    const sdc_st_entry_t *e = sdc_st_set_find(&w->st, name, &f);
    sdc_status_t st = check_entry(w, name, e, ndim, shape, err);
    if (st != SDC_OK)
        return st;
    sdc_tensor_t view;
    sdc_st_view(f, e, &view);
    int64_t numel = sdc_shape_numel(e->ndim, e->shape);
    float *buf = malloc((size_t)(numel ? numel : 1) * sizeof(float));
    if (!buf)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory reading '%s'", w->label, name);
    sdc_convert_to_f32(buf, view.data, e->dtype, numel);
    *out = buf;
    return SDC_OK;
}

sdc_status_t sdc_weights_upload(sdc_weights_t *w, const float *host, int64_t n, float **out,
                                sdc_error_t *err)
{
    *out = NULL;
    sdc_status_t st = owned_reserve(w, err);
    if (st != SDC_OK)
        return st;
    size_t bytes = (size_t)n * sizeof(float);
    float *buf = w->be->ops->alloc(w->be, bytes ? bytes : sizeof(float));
    if (!buf)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: cannot allocate %zu bytes", w->label, bytes);
    w->be->ops->upload(w->be, buf, host, bytes);
    w->be->ops->sync(w->be);
    w->owned[w->n_owned++] = buf;
    w->bytes_loaded += bytes;
    w->n_loaded++;
    *out = buf;
    return SDC_OK;
}

sdc_status_t sdc_weights_gather_rows(const sdc_weights_t *w, const char *name, const int32_t *ids,
                                     int64_t n, int64_t dim, float *out, sdc_error_t *err)
{
    const sdc_st_file_t *f;
    const sdc_st_entry_t *e = sdc_st_set_find(&w->st, name, &f);
    char have[160];
    if (!e)
        return sdc_error_set(err, SDC_ERR_NOT_FOUND, "%s: tensor '%s' not found", w->label, name);
    if (e->ndim != 2 || e->shape[1] != dim)
        return sdc_error_set(err, SDC_ERR_SHAPE, "%s: '%s' has shape %s, expected [rows, %lld]",
                             w->label, name, sdc_shape_str(e->ndim, e->shape, have, sizeof(have)),
                             (long long)dim);
    if (e->dtype != SDC_DTYPE_F32 && e->dtype != SDC_DTYPE_F16 && e->dtype != SDC_DTYPE_BF16)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: '%s' is stored as %s; weights must be F32, F16 or BF16",
                             w->label, name, sdc_dtype_name(e->dtype));
    sdc_tensor_t view;
    sdc_st_view(f, e, &view);
    size_t row_bytes = (size_t)dim * sdc_dtype_size(e->dtype);
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= e->shape[0])
            return sdc_error_set(err, SDC_ERR_RANGE,
                                 "%s: token id %d at position %lld is outside '%s' (%lld rows)",
                                 w->label, (int)ids[i], (long long)i, name,
                                 (long long)e->shape[0]);
        sdc_convert_to_f32(out + i * dim, (const uint8_t *)view.data + (size_t)ids[i] * row_bytes,
                           e->dtype, dim);
    }
    return SDC_OK;
}

/* Drops the loaded float32 copy `buf` (n floats) once it is packed: freed
 * when it is the newest buffer w owns; a mapped F32 weight (not owned)
 * gives its pages back instead, so that the packed copy is the only one
 * resident (the mapping is read-only and private: a page read again later
 * comes back from the file unchanged). */
static void drop_unpacked(sdc_weights_t *w, float *buf, int64_t n)
{
    if (w->n_owned && w->owned[w->n_owned - 1] == buf) {
        w->be->ops->free(w->be, buf);
        w->n_owned--;
        return;
    }
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)buf + page - 1) / page * page;
    uintptr_t hi = ((uintptr_t)(buf + n)) / page * page;
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

sdc_status_t sdc_weights_load_linear(sdc_weights_t *w, const char *name, int64_t N, int64_t K,
                                     sdc_linear_w_t *out, sdc_error_t *err)
{
    const int64_t shape[2] = {N, K};
    float *plain;

    out->w = NULL;
    out->packed = 0;
    sdc_status_t st = weights_load(w, name, 2, shape, 0, &plain, err);
    if (st != SDC_OK || !w->be->ops->linear_pack) {
        out->w = plain;
        return st;
    }
    if ((st = owned_reserve(w, err)) != SDC_OK)
        return st;
    float *packed = w->be->ops->linear_pack(w->be, plain, N, K);
    if (!packed)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: cannot allocate the packed copy of '%s'",
                             w->label, name);
    drop_unpacked(w, plain, N * K);
    w->owned[w->n_owned++] = packed;
    out->w = packed;
    out->packed = 1;
    return SDC_OK;
}

sdc_status_t sdc_weights_load_linearf(sdc_weights_t *w, int64_t N, int64_t K,
                                      sdc_linear_w_t *out, sdc_error_t *err, const char *fmt, ...)
{
    char name[WEIGHTS_NAME_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(name)) {
        out->w = NULL;
        out->packed = 0;
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: tensor name '%.64s...' too long",
                             w->label, name);
    }
    return sdc_weights_load_linear(w, name, N, K, out, err);
}
