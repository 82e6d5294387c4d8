/*
 * safetensors.h: read-only access to safetensors files through mmap, single
 * file or sharded through a `*.safetensors.index.json` weight map.
 *
 * Every header field is validated before use: header length against the file
 * size and a sane maximum, JSON shape, dtype names, shapes (no negative dims,
 * no overflow), data_offsets in range, consistent with dtype x shape, and not
 * overlapping another tensor. Tensors are returned as views into the mapping;
 * they stay valid until the file or set is closed.
 */
#ifndef SDC_SAFETENSORS_H
#define SDC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "tensor.h"

/* Headers larger than this are rejected as absurd (real ones are < 10 MB). */
#define SDC_ST_MAX_HEADER (100u * 1024u * 1024u)

typedef struct {
    char *name;
    sdc_dtype_t dtype;
    int ndim;
    int64_t shape[SDC_MAX_DIMS];
    uint64_t begin, end; /* byte offsets into the data section */
} sdc_st_entry_t;

typedef struct {
    char *path;
    int fd;
    uint8_t *map;        /* whole file */
    size_t map_size;
    uint64_t data_start; /* 8 + header length */
    sdc_st_entry_t *entries; /* sorted by name */
    size_t n_entries;
} sdc_st_file_t;

/* Opens and validates one file. On failure err names the file and problem. */
sdc_status_t sdc_st_open(sdc_st_file_t *f, const char *path, sdc_error_t *err);
void sdc_st_close(sdc_st_file_t *f);
const sdc_st_entry_t *sdc_st_find(const sdc_st_file_t *f, const char *name);
/* A view of the tensor's bytes inside the mapping. */
void sdc_st_view(const sdc_st_file_t *f, const sdc_st_entry_t *e, sdc_tensor_t *out);

/* A set of shards: a directory's single `*.safetensors` file, or the files
 * listed by an index. Tensor names are unique across the set. */
typedef struct {
    sdc_st_file_t *files;
    size_t n_files;
} sdc_st_set_t;

/* path: a .safetensors file, a .safetensors.index.json file, or a directory
 * holding exactly one of `diffusion_pytorch_model.safetensors[.index.json]`,
 * `model.safetensors[.index.json]`, or a single other `*.safetensors`. */
sdc_status_t sdc_st_set_open(sdc_st_set_t *s, const char *path, sdc_error_t *err);
void sdc_st_set_close(sdc_st_set_t *s);
/* Finds a tensor by name; returns NULL (and which file in *file) when absent. */
const sdc_st_entry_t *sdc_st_set_find(const sdc_st_set_t *s, const char *name,
                                      const sdc_st_file_t **file);

/* Writes tensors to a new safetensors file (used for --dump-embeds, tests
 * and checkpoints). names[i] describes tensors[i], which must be contiguous. */
sdc_status_t sdc_st_write(const char *path, size_t n, const char *const *names,
                          const sdc_tensor_t *tensors, sdc_error_t *err);

#endif
