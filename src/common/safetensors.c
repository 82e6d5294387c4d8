/*
 * safetensors.c: validated, read-only access to safetensors files through
 * mmap, single files and shard sets, plus a writer for tools and tests.
 *
 * The file is untrusted input: every header field is checked before any
 * tensor byte is touched, and every error names the file and the tensor.
 * Layout: an 8-byte little-endian header length N, N bytes of JSON, then
 * the data section that each tensor's data_offsets index into.
 */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

/* JSON numbers reach us as doubles; above 2^53 they are no longer exact, so
 * a size or offset that large cannot be trusted (and no real file has one). */
#define ST_MAX_JSON_INT 9007199254740992.0

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void store_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* 0 and *out on an integral JSON number in [0, 2^53]; -1 otherwise. */
static int json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= ST_MAX_JSON_INT) || d != floor(d))
        return -1;
    *out = (uint64_t)d;
    return 0;
}

/* Valid safetensors dtypes that sdc has no use for: a file holding one is
 * well-formed but unsupported, not corrupt. */
static const char *const spec_only_dtypes[] = {
    "F64", "I8", "I16", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3",
    "F6_E3M2", "F4", "C64",
};

static int dtype_in_spec(const char *name)
{
    for (size_t i = 0; i < sizeof(spec_only_dtypes) / sizeof(spec_only_dtypes[0]); i++)
        if (strcmp(name, spec_only_dtypes[i]) == 0)
            return 1;
    return 0;
}

static sdc_status_t check_metadata(const char *path, const cJSON *meta, sdc_error_t *err)
{
    if (!cJSON_IsObject(meta))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: __metadata__ is not an object", path);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, meta) {
        if (!cJSON_IsString(kv))
            return sdc_error_set(err, SDC_ERR_FORMAT,
                                 "%s: __metadata__ value '%s' is not a string", path,
                                 kv->string ? kv->string : "");
    }
    return SDC_OK;
}

static sdc_status_t parse_shape(const char *path, const char *name, const cJSON *shape,
                                sdc_st_entry_t *e, sdc_error_t *err)
{
    if (!cJSON_IsArray(shape))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: tensor '%s': shape missing or not an array",
                             path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > SDC_MAX_DIMS)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: tensor '%s': %d dims, at most %d supported", path, name, ndim,
                             SDC_MAX_DIMS);
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape) {
        uint64_t v;
        if (json_uint(d, &v) != 0) {
            if (cJSON_IsNumber(d) && d->valuedouble < 0)
                return sdc_error_set(err, SDC_ERR_FORMAT, "%s: tensor '%s': shape[%d] = %.17g is "
                                     "negative", path, name, i, d->valuedouble);
            return sdc_error_set(err, SDC_ERR_FORMAT,
                                 "%s: tensor '%s': shape[%d] is not a non-negative integer",
                                 path, name, i);
        }
        e->shape[i++] = (int64_t)v;
    }
    e->ndim = ndim;
    return SDC_OK;
}

static sdc_status_t parse_offsets(const char *path, const char *name, const cJSON *offs,
                                  uint64_t data_size, sdc_st_entry_t *e, sdc_error_t *err)
{
    uint64_t b, en;
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        json_uint(cJSON_GetArrayItem(offs, 0), &b) != 0 ||
        json_uint(cJSON_GetArrayItem(offs, 1), &en) != 0)
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets must be [begin, end] with "
                             "non-negative integers", path, name);
    if (b > en)
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets [%llu, %llu] out of order", path,
                             name, (unsigned long long)b, (unsigned long long)en);
    if (en > data_size)
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of "
                             "the %llu-byte data section", path, name, (unsigned long long)b,
                             (unsigned long long)en, (unsigned long long)data_size);
    e->begin = b;
    e->end = en;
    return SDC_OK;
}

static sdc_status_t parse_entry(const char *path, const char *name, const cJSON *item,
                                uint64_t data_size, sdc_st_entry_t *e, sdc_error_t *err)
{
    char sbuf[160];
    if (!cJSON_IsObject(item))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: tensor '%s': entry is not an object", path,
                             name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    if (!cJSON_IsString(dt))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: tensor '%s': dtype missing or not a string",
                             path, name);
    if (sdc_dtype_parse(dt->valuestring, &e->dtype) != 0) {
        if (dtype_in_spec(dt->valuestring))
            return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                                 "%s: tensor '%s': dtype %s is not supported", path, name,
                                 dt->valuestring);
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s'", path,
                             name, dt->valuestring);
    }

    sdc_status_t st =
        parse_shape(path, name, cJSON_GetObjectItemCaseSensitive(item, "shape"), e, err);
    if (st != SDC_OK)
        return st;
    st = parse_offsets(path, name, cJSON_GetObjectItemCaseSensitive(item, "data_offsets"),
                       data_size, e, err);
    if (st != SDC_OK)
        return st;

    int64_t numel = sdc_shape_numel(e->ndim, e->shape);
    size_t esize = sdc_dtype_size(e->dtype);
    if (numel < 0 || (uint64_t)numel > UINT64_MAX / esize)
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: tensor '%s': shape %s overflows", path,
                             name, sdc_shape_str(e->ndim, e->shape, sbuf, sizeof(sbuf)));
    uint64_t nbytes = (uint64_t)numel * esize;
    if (e->end - e->begin != nbytes)
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes, but %s "
                             "%s needs %llu", path, name, (unsigned long long)e->begin,
                             (unsigned long long)e->end,
                             (unsigned long long)(e->end - e->begin), sdc_dtype_name(e->dtype),
                             sdc_shape_str(e->ndim, e->shape, sbuf, sizeof(sbuf)),
                             (unsigned long long)nbytes);
    return SDC_OK;
}

static int cmp_entry_offset(const void *a, const void *b)
{
    const sdc_st_entry_t *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_entry_name(const void *a, const void *b)
{
    const sdc_st_entry_t *x = a, *y = b;
    return strcmp(x->name, y->name);
}

static void entries_free(sdc_st_entry_t *entries, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(entries[i].name);
    free(entries);
}

/* Tensors may leave gaps but must not share bytes; zero-size tensors sit
 * between others. After this the entries are sorted by name, unique. */
static sdc_status_t check_layout(const char *path, sdc_st_entry_t *entries, size_t n,
                                 sdc_error_t *err)
{
    qsort(entries, n, sizeof(*entries), cmp_entry_offset);
    size_t owner = 0; /* the entry with the furthest end so far */
    for (size_t i = 1; i < n; i++) {
        if (entries[i].begin < entries[owner].end)
            return sdc_error_set(err, SDC_ERR_FORMAT,
                                 "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap",
                                 path, entries[owner].name,
                                 (unsigned long long)entries[owner].begin,
                                 (unsigned long long)entries[owner].end, entries[i].name,
                                 (unsigned long long)entries[i].begin,
                                 (unsigned long long)entries[i].end);
        if (entries[i].end >= entries[owner].end)
            owner = i;
    }
    qsort(entries, n, sizeof(*entries), cmp_entry_name);
    for (size_t i = 1; i < n; i++)
        if (strcmp(entries[i - 1].name, entries[i].name) == 0)
            return sdc_error_set(err, SDC_ERR_FORMAT, "%s: tensor '%s' is listed twice", path,
                                 entries[i].name);
    return SDC_OK;
}

static sdc_status_t parse_header(sdc_st_file_t *f, uint64_t hlen, sdc_error_t *err)
{
    const uint64_t data_size = f->map_size - f->data_start;
    char label[4096 + 16];
    snprintf(label, sizeof(label), "%s: header", f->path);

    sdc_json_t doc;
    sdc_status_t st = sdc_json_parse(&doc, (const char *)f->map + 8, (size_t)hlen, label, err);
    if (st != SDC_OK)
        return st;

    size_t n = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, doc.root) {
        if (strcmp(item->string, "__metadata__") != 0)
            n++;
    }
    sdc_st_entry_t *entries = calloc(n ? n : 1, sizeof(*entries));
    if (!entries) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory for %zu tensor entries",
                           f->path, n);
        goto err_free_doc;
    }
    size_t i = 0;
    cJSON_ArrayForEach(item, doc.root) {
        if (strcmp(item->string, "__metadata__") == 0) {
            st = check_metadata(f->path, item, err);
            if (st != SDC_OK)
                goto err_free_entries;
            continue;
        }
        st = parse_entry(f->path, item->string, item, data_size, &entries[i], err);
        if (st != SDC_OK)
            goto err_free_entries;
        entries[i].name = strdup(item->string);
        if (!entries[i].name) {
            st = sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", f->path);
            goto err_free_entries;
        }
        i++;
    }
    st = check_layout(f->path, entries, n, err);
    if (st != SDC_OK)
        goto err_free_entries;

    sdc_json_free(&doc);
    f->entries = entries;
    f->n_entries = n;
    return SDC_OK;

err_free_entries:
    entries_free(entries, n);
err_free_doc:
    sdc_json_free(&doc);
    return st;
}

sdc_status_t sdc_st_open(sdc_st_file_t *f, const char *path, sdc_error_t *err)
{
    sdc_status_t st;
    memset(f, 0, sizeof(*f));
    f->fd = -1;
    f->path = strdup(path);
    if (!f->path)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", path);

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        st = sdc_error_set(err, errno == ENOENT ? SDC_ERR_NOT_FOUND : SDC_ERR_IO, "%s: %s", path,
                           strerror(errno));
        goto err_free_path;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = sdc_error_set(err, SDC_ERR_IO, "%s: %s", path, strerror(errno));
        goto err_close;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = sdc_error_set(err, SDC_ERR_IO, "%s: not a regular file", path);
        goto err_close;
    }
    if (sb.st_size < 8) {
        st = sdc_error_set(err, SDC_ERR_FORMAT,
                           "%s: %lld bytes, too short to hold the 8-byte header length", path,
                           (long long)sb.st_size);
        goto err_close;
    }
    f->map_size = (size_t)sb.st_size;
    void *map = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        st = sdc_error_set(err, SDC_ERR_IO, "%s: mmap: %s", path, strerror(errno));
        goto err_close;
    }
    f->map = map;

    uint64_t hlen = load_le64(f->map);
    if (hlen > SDC_ST_MAX_HEADER) {
        st = sdc_error_set(err, SDC_ERR_FORMAT,
                           "%s: header length %llu exceeds the %u-byte maximum", path,
                           (unsigned long long)hlen, SDC_ST_MAX_HEADER);
        goto err_unmap;
    }
    if (hlen > f->map_size - 8) {
        st = sdc_error_set(err, SDC_ERR_FORMAT,
                           "%s: header length %llu is larger than the %zu bytes after it "
                           "(truncated file?)", path, (unsigned long long)hlen,
                           f->map_size - 8);
        goto err_unmap;
    }
    f->data_start = 8 + hlen;
    st = parse_header(f, hlen, err);
    if (st != SDC_OK)
        goto err_unmap;
    /* The mapping keeps the file alive; holding no descriptor keeps large
     * shard sets clear of the open-file limit. */
    close(fd);
    return SDC_OK;

err_unmap:
    munmap(f->map, f->map_size);
err_close:
    close(fd);
err_free_path:
    free(f->path);
    memset(f, 0, sizeof(*f));
    f->fd = -1;
    return st;
}

void sdc_st_close(sdc_st_file_t *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_size);
    entries_free(f->entries, f->n_entries);
    free(f->path);
    memset(f, 0, sizeof(*f));
    f->fd = -1;
}

const sdc_st_entry_t *sdc_st_find(const sdc_st_file_t *f, const char *name)
{
    if (!f->entries)
        return NULL;
    sdc_st_entry_t key = {.name = (char *)name};
    return bsearch(&key, f->entries, f->n_entries, sizeof(key), cmp_entry_name);
}

void sdc_st_view(const sdc_st_file_t *f, const sdc_st_entry_t *e, sdc_tensor_t *out)
{
    /* The mapping is read-only: writing through this view faults, which is
     * what model code that writes to a weight deserves. */
    sdc_tensor_init(out, e->dtype, e->ndim, e->shape, f->map + f->data_start + e->begin);
}

/* ---- shard sets ---------------------------------------------------------- */

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    size_t n = a;
    if (a && dir[a - 1] != '/')
        p[n++] = '/';
    memcpy(p + n, name, b + 1);
    return p;
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int is_regular_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

typedef struct {
    const char *name;
    size_t file;
} set_name_t;

static int cmp_set_name(const void *a, const void *b)
{
    const set_name_t *x = a, *y = b;
    return strcmp(x->name, y->name);
}

/* A name in two shards would make lookups depend on shard order. */
static sdc_status_t set_check_unique(const sdc_st_set_t *s, const char *label, sdc_error_t *err)
{
    size_t total = 0;
    for (size_t i = 0; i < s->n_files; i++)
        total += s->files[i].n_entries;
    if (total < 2)
        return SDC_OK;
    set_name_t *all = malloc(total * sizeof(*all));
    if (!all)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", label);
    size_t k = 0;
    for (size_t i = 0; i < s->n_files; i++)
        for (size_t j = 0; j < s->files[i].n_entries; j++)
            all[k++] = (set_name_t){s->files[i].entries[j].name, i};
    qsort(all, total, sizeof(*all), cmp_set_name);
    sdc_status_t st = SDC_OK;
    for (size_t i = 1; i < total; i++) {
        if (strcmp(all[i - 1].name, all[i].name) == 0) {
            st = sdc_error_set(err, SDC_ERR_FORMAT, "%s: tensor '%s' is in both %s and %s", label,
                               all[i].name, s->files[all[i - 1].file].path,
                               s->files[all[i].file].path);
            break;
        }
    }
    free(all);
    return st;
}

static sdc_status_t set_open_single(sdc_st_set_t *s, const char *path, sdc_error_t *err)
{
    s->files = calloc(1, sizeof(*s->files));
    if (!s->files)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", path);
    sdc_status_t st = sdc_st_open(&s->files[0], path, err);
    if (st != SDC_OK) {
        free(s->files);
        s->files = NULL;
        return st;
    }
    s->n_files = 1;
    return SDC_OK;
}

/* Shards must sit beside the index: a weight map must not reach elsewhere
 * on the filesystem. */
static int shard_name_ok(const char *name)
{
    return name[0] && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static sdc_status_t index_collect_shards(const char *index_path, const cJSON *wm,
                                         const char ***shards, size_t *n_shards,
                                         sdc_error_t *err)
{
    size_t n = (size_t)cJSON_GetArraySize(wm);
    const char **names = malloc((n ? n : 1) * sizeof(*names));
    if (!names)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", index_path);
    size_t k = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, wm) {
        if (!cJSON_IsString(item) || !shard_name_ok(item->valuestring)) {
            free(names);
            return sdc_error_set(err, SDC_ERR_FORMAT,
                                 "%s: weight_map['%s'] must name a shard file in the same "
                                 "directory", index_path, item->string);
        }
        size_t j = 0;
        while (j < k && strcmp(names[j], item->valuestring) != 0)
            j++;
        if (j == k)
            names[k++] = item->valuestring;
    }
    *shards = names;
    *n_shards = k;
    return SDC_OK;
}

static size_t shard_index(const char **shards, size_t n, const char *name)
{
    size_t j = 0;
    while (j < n && strcmp(shards[j], name) != 0)
        j++;
    return j;
}

static sdc_status_t set_open_index(sdc_st_set_t *s, const char *index_path, sdc_error_t *err)
{
    sdc_json_t doc;
    sdc_status_t st = sdc_json_load(&doc, index_path, err);
    if (st != SDC_OK)
        return st;

    const char **shards = NULL;
    size_t n_shards = 0;
    char *dir = NULL;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(doc.root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        st = sdc_error_set(err, SDC_ERR_FORMAT, "%s: 'weight_map' missing or not an object",
                           index_path);
        goto err_free_doc;
    }
    st = index_collect_shards(index_path, wm, &shards, &n_shards, err);
    if (st != SDC_OK)
        goto err_free_doc;
    if (n_shards == 0) {
        st = sdc_error_set(err, SDC_ERR_FORMAT, "%s: weight_map lists no tensors", index_path);
        goto err_free_shards;
    }

    const char *slash = strrchr(index_path, '/');
    dir = slash ? strndup(index_path, (size_t)(slash - index_path + 1)) : strdup(".");
    s->files = calloc(n_shards, sizeof(*s->files));
    if (!dir || !s->files) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", index_path);
        goto err_close_shards;
    }
    for (size_t i = 0; i < n_shards; i++) {
        char *p = path_join(dir, shards[i]);
        if (!p) {
            st = sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", index_path);
            goto err_close_shards;
        }
        st = sdc_st_open(&s->files[i], p, err);
        free(p);
        if (st != SDC_OK) {
            sdc_error_wrap(err, "%s: shard '%s'", index_path, shards[i]);
            goto err_close_shards;
        }
        s->n_files = i + 1;
    }

    const cJSON *item;
    cJSON_ArrayForEach(item, wm) {
        const sdc_st_file_t *f = &s->files[shard_index(shards, n_shards, item->valuestring)];
        if (!sdc_st_find(f, item->string)) {
            st = sdc_error_set(err, SDC_ERR_NOT_FOUND,
                               "%s: tensor '%s' is mapped to %s, which does not contain it",
                               index_path, item->string, f->path);
            goto err_close_shards;
        }
    }
    st = set_check_unique(s, index_path, err);
    if (st != SDC_OK)
        goto err_close_shards;

    free(dir);
    free(shards);
    sdc_json_free(&doc);
    return SDC_OK;

err_close_shards:
    sdc_st_set_close(s);
    free(dir);
err_free_shards:
    free(shards);
err_free_doc:
    sdc_json_free(&doc);
    return st;
}

/* The file names diffusers and transformers save under, in the order we
 * look for them. A directory must hold exactly one of them. */
static const char *const set_dir_candidates[] = {
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.safetensors",
    "model.safetensors.index.json",
    "model.safetensors",
};
#define N_DIR_CANDIDATES (sizeof(set_dir_candidates) / sizeof(set_dir_candidates[0]))

static sdc_status_t set_open_path(sdc_st_set_t *s, const char *path, sdc_error_t *err)
{
    if (has_suffix(path, ".index.json"))
        return set_open_index(s, path, err);
    return set_open_single(s, path, err);
}

/* No well-known name: accept the directory's only *.safetensors file. */
static sdc_status_t set_find_lone_file(const char *dir, char **found, sdc_error_t *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return sdc_error_set(err, SDC_ERR_IO, "%s: %s", dir, strerror(errno));
    sdc_status_t st = SDC_OK;
    size_t count = 0;
    char *first = NULL;
    const struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!has_suffix(de->d_name, ".safetensors"))
            continue;
        char *p = path_join(dir, de->d_name);
        if (!p) {
            st = sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", dir);
            goto err_close_dir;
        }
        if (!is_regular_file(p)) {
            free(p);
            continue;
        }
        if (++count == 1) {
            first = p;
        } else {
            free(p);
        }
    }
    if (count == 0) {
        st = sdc_error_set(err, SDC_ERR_NOT_FOUND, "%s: no .safetensors file in the directory",
                           dir);
        goto err_close_dir;
    }
    if (count > 1) {
        st = sdc_error_set(err, SDC_ERR_FORMAT,
                           "%s: %zu .safetensors files and no index naming the shards; expected "
                           "one file or a *.safetensors.index.json", dir, count);
        goto err_close_dir;
    }
    closedir(d);
    *found = first;
    return SDC_OK;

err_close_dir:
    free(first);
    closedir(d);
    return st;
}

static sdc_status_t set_open_dir(sdc_st_set_t *s, const char *dir, sdc_error_t *err)
{
    char *chosen = NULL;
    for (size_t i = 0; i < N_DIR_CANDIDATES; i++) {
        char *p = path_join(dir, set_dir_candidates[i]);
        if (!p) {
            free(chosen);
            return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", dir);
        }
        if (!is_regular_file(p)) {
            free(p);
            continue;
        }
        if (chosen) {
            sdc_status_t st = sdc_error_set(err, SDC_ERR_FORMAT,
                                            "%s: holds both %s and %s; expected exactly one", dir,
                                            chosen, p);
            free(p);
            free(chosen);
            return st;
        }
        chosen = p;
    }
    if (!chosen) {
        sdc_status_t st = set_find_lone_file(dir, &chosen, err);
        if (st != SDC_OK)
            return st;
    }
    sdc_status_t st = set_open_path(s, chosen, err);
    free(chosen);
    return st;
}

sdc_status_t sdc_st_set_open(sdc_st_set_t *s, const char *path, sdc_error_t *err)
{
    memset(s, 0, sizeof(*s));
    struct stat sb;
    if (stat(path, &sb) != 0)
        return sdc_error_set(err, errno == ENOENT ? SDC_ERR_NOT_FOUND : SDC_ERR_IO, "%s: %s",
                             path, strerror(errno));
    if (S_ISDIR(sb.st_mode))
        return set_open_dir(s, path, err);
    return set_open_path(s, path, err);
}

void sdc_st_set_close(sdc_st_set_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_files; i++)
        sdc_st_close(&s->files[i]);
    free(s->files);
    memset(s, 0, sizeof(*s));
}

const sdc_st_entry_t *sdc_st_set_find(const sdc_st_set_t *s, const char *name,
                                      const sdc_st_file_t **file)
{
    for (size_t i = 0; i < s->n_files; i++) {
        const sdc_st_entry_t *e = sdc_st_find(&s->files[i], name);
        if (e) {
            if (file)
                *file = &s->files[i];
            return e;
        }
    }
    if (file)
        *file = NULL;
    return NULL;
}

/* ---- writer -------------------------------------------------------------- */

typedef struct {
    size_t idx;
    size_t esize;
} write_order_t;

/* Larger elements first, then input order: every tensor then starts at a
 * multiple of its element size, so F32 data stays usable in place. */
static int cmp_write_order(const void *a, const void *b)
{
    const write_order_t *x = a, *y = b;
    if (x->esize != y->esize)
        return x->esize > y->esize ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static sdc_status_t write_check_args(const char *path, size_t n, const char *const *names,
                                     const sdc_tensor_t *tensors, sdc_error_t *err)
{
    for (size_t i = 0; i < n; i++) {
        const sdc_tensor_t *t = &tensors[i];
        if (!names[i] || strcmp(names[i], "__metadata__") == 0)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: tensor %zu has no usable name",
                                 path, i);
        if ((unsigned)t->dtype >= SDC_DTYPE_COUNT || t->ndim < 0 || t->ndim > SDC_MAX_DIMS ||
            sdc_tensor_numel(t) < 0)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: tensor '%s' has a bad descriptor",
                                 path, names[i]);
        if (!sdc_tensor_is_contiguous(t))
            return sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: tensor '%s' is not contiguous",
                                 path, names[i]);
        if (!t->data && sdc_tensor_nbytes(t) > 0)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: tensor '%s' has no data", path,
                                 names[i]);
    }
    if (n < 2)
        return SDC_OK;
    const char **sorted = malloc(n * sizeof(*sorted));
    if (!sorted)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", path);
    memcpy(sorted, names, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), cmp_str_ptr);
    sdc_status_t st = SDC_OK;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            st = sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: tensor name '%s' given twice", path,
                               sorted[i]);
            break;
        }
    }
    free(sorted);
    return st;
}

static cJSON *write_entry_json(const sdc_tensor_t *t, uint64_t begin, uint64_t end)
{
    cJSON *e = cJSON_CreateObject();
    cJSON *shape = cJSON_CreateArray();
    cJSON *offs = cJSON_CreateArray();
    int ok = e && shape && offs;
    for (int d = 0; ok && d < t->ndim; d++)
        ok = cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
    ok = ok && cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)begin)) &&
         cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)end)) &&
         cJSON_AddStringToObject(e, "dtype", sdc_dtype_name(t->dtype)) != NULL;
    if (ok && cJSON_AddItemToObject(e, "shape", shape)) {
        shape = NULL;
        if (cJSON_AddItemToObject(e, "data_offsets", offs))
            return e;
    }
    cJSON_Delete(shape);
    cJSON_Delete(offs);
    cJSON_Delete(e);
    return NULL;
}

/* Builds the header JSON, padded with spaces to a multiple of 8 bytes as the
 * reference writer does, so the data section starts 8-byte aligned. */
static sdc_status_t write_build_header(const char *path, size_t n, const char *const *names,
                                       const sdc_tensor_t *tensors, const write_order_t *order,
                                       char **out, size_t *out_len, sdc_error_t *err)
{
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", path);
    uint64_t off = 0;
    for (size_t k = 0; k < n; k++) {
        const sdc_tensor_t *t = &tensors[order[k].idx];
        uint64_t nbytes = sdc_tensor_nbytes(t);
        if ((double)(off + nbytes) > ST_MAX_JSON_INT) {
            cJSON_Delete(root);
            return sdc_error_set(err, SDC_ERR_RANGE, "%s: data section too large", path);
        }
        cJSON *e = write_entry_json(t, off, off + nbytes);
        if (!e || !cJSON_AddItemToObject(root, names[order[k].idx], e)) {
            cJSON_Delete(e);
            cJSON_Delete(root);
            return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", path);
        }
        off += nbytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", path);
    size_t len = strlen(json);
    size_t padded = (len + 7) & ~(size_t)7;
    char *buf = realloc(json, padded + 1);
    if (!buf) {
        free(json);
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", path);
    }
    memset(buf + len, ' ', padded - len);
    buf[padded] = '\0';
    *out = buf;
    *out_len = padded;
    return SDC_OK;
}

sdc_status_t sdc_st_write(const char *path, size_t n, const char *const *names,
                          const sdc_tensor_t *tensors, sdc_error_t *err)
{
    sdc_status_t st = write_check_args(path, n, names, tensors, err);
    if (st != SDC_OK)
        return st;

    write_order_t *order = malloc((n ? n : 1) * sizeof(*order));
    if (!order)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++)
        order[i] = (write_order_t){i, sdc_dtype_size(tensors[i].dtype)};
    qsort(order, n, sizeof(*order), cmp_write_order);

    char *header = NULL;
    size_t hlen = 0;
    st = write_build_header(path, n, names, tensors, order, &header, &hlen, err);
    if (st != SDC_OK)
        goto err_free_order;

    FILE *fp = fopen(path, "wb");
    if (!fp) {
        st = sdc_error_set(err, errno == ENOENT ? SDC_ERR_NOT_FOUND : SDC_ERR_IO, "%s: %s", path,
                           strerror(errno));
        goto err_free_header;
    }
    uint8_t lenbuf[8];
    store_le64(lenbuf, hlen);
    int ok = fwrite(lenbuf, 1, 8, fp) == 8 && fwrite(header, 1, hlen, fp) == hlen;
    for (size_t k = 0; ok && k < n; k++) {
        const sdc_tensor_t *t = &tensors[order[k].idx];
        size_t nbytes = sdc_tensor_nbytes(t);
        ok = fwrite(t->data, 1, nbytes, fp) == nbytes;
    }
    if (!ok) {
        st = sdc_error_set(err, SDC_ERR_IO, "%s: write: %s", path, strerror(errno));
        fclose(fp);
        goto err_unlink;
    }
    if (fclose(fp) != 0) {
        st = sdc_error_set(err, SDC_ERR_IO, "%s: close: %s", path, strerror(errno));
        goto err_unlink;
    }
    free(header);
    free(order);
    return SDC_OK;

err_unlink:
    unlink(path);
err_free_header:
    free(header);
err_free_order:
    free(order);
    return st;
}
