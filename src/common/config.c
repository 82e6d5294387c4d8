/*
 * config.c: JSON documents (model_index.json, component config.json files,
 * safetensors index files) read with cJSON, and typed getters that apply the
 * diffusers default for an absent key and reject a present key of the wrong
 * type, naming the file and the key.
 *
 * Not a schema validator: the modules that own a config check its values.
 */
#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Real configs are a few KB and index files a few MB; anything larger is
 * not a config and should not be read into memory. */
#define JSON_MAX_BYTES (16u << 20)

/* 2^63 as a double: the first value past the int64 range. */
#define INT64_LIMIT_D 9223372036854775808.0

static void json_where(const char *text, size_t len, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

sdc_status_t sdc_json_parse(sdc_json_t *doc, const char *text, size_t len, const char *label,
                            sdc_error_t *err)
{
    memset(doc, 0, sizeof(*doc));
    if (!label)
        label = "(json)";
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        int line, col;
        size_t off = end && end >= text ? (size_t)(end - text) : 0;
        json_where(text, len, off, &line, &col);
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: invalid JSON at line %d, column %d", label,
                             line, col);
    }
    /* cJSON stops after the first value; anything but whitespace after it
     * means the file is not one JSON document. */
    for (size_t off = (size_t)(end - text); off < len; off++) {
        char c = text[off];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            int line, col;
            json_where(text, len, off, &line, &col);
            cJSON_Delete(root);
            return sdc_error_set(err, SDC_ERR_FORMAT,
                                 "%s: unexpected data after the JSON value at line %d, column %d",
                                 label, line, col);
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: top-level JSON value is not an object",
                             label);
    }
    doc->path = strdup(label);
    if (!doc->path) {
        cJSON_Delete(root);
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", label);
    }
    doc->root = root;
    return SDC_OK;
}

static sdc_status_t read_small_file(const char *path, size_t max, char **out, size_t *out_len,
                                    sdc_error_t *err)
{
    sdc_status_t st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sdc_error_set(err, errno == ENOENT ? SDC_ERR_NOT_FOUND : SDC_ERR_IO, "%s: %s",
                             path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = sdc_error_set(err, SDC_ERR_IO, "%s: %s", path, strerror(errno));
        goto err_close;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = sdc_error_set(err, SDC_ERR_IO, "%s: not a regular file", path);
        goto err_close;
    }
    if ((uint64_t)sb.st_size > max) {
        st = sdc_error_set(err, SDC_ERR_RANGE, "%s: %lld bytes, over the %zu-byte limit for "
                           "JSON documents", path, (long long)sb.st_size, max);
        goto err_close;
    }
    size_t size = (size_t)sb.st_size;
    char *buf = malloc(size + 1);
    if (!buf) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, size);
        goto err_close;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = sdc_error_set(err, SDC_ERR_IO, "%s: read: %s", path, strerror(errno));
            goto err_free_buf;
        }
        if (r == 0) {
            st = sdc_error_set(err, SDC_ERR_IO, "%s: file shrank while reading (%zu of %zu "
                               "bytes)", path, got, size);
            goto err_free_buf;
        }
        got += (size_t)r;
    }
    buf[size] = '\0';
    close(fd);
    *out = buf;
    *out_len = size;
    return SDC_OK;

err_free_buf:
    free(buf);
err_close:
    close(fd);
    return st;
}

sdc_status_t sdc_json_load(sdc_json_t *doc, const char *path, sdc_error_t *err)
{
    memset(doc, 0, sizeof(*doc));
    char *text = NULL;
    size_t len = 0;
    sdc_status_t st = read_small_file(path, JSON_MAX_BYTES, &text, &len, err);
    if (st != SDC_OK)
        return st;
    st = sdc_json_parse(doc, text, len, path, err);
    free(text);
    return st;
}

void sdc_json_free(sdc_json_t *doc)
{
    if (!doc)
        return;
    cJSON_Delete(doc->root);
    free(doc->path);
    memset(doc, 0, sizeof(*doc));
}

/* NULL when the key is absent or JSON null: both mean "use the default". */
static const cJSON *json_value(const sdc_json_t *doc, const char *key)
{
    if (!doc || !doc->root)
        return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc->root, key);
    return cJSON_IsNull(v) ? NULL : v;
}

int sdc_json_has(const sdc_json_t *doc, const char *key)
{
    return json_value(doc, key) != NULL;
}

static const char *json_type_name(const cJSON *v)
{
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsObject(v))
        return "an object";
    if (cJSON_IsNull(v))
        return "null";
    return "an invalid value";
}

static const char *doc_name(const sdc_json_t *doc)
{
    return doc && doc->path ? doc->path : "(json)";
}

/* JSON has one number type; an integer key accepts 3.0 but not 3.5. */
static sdc_status_t number_to_int(const sdc_json_t *doc, const char *what, const cJSON *v,
                                  int64_t *out, sdc_error_t *err)
{
    if (!cJSON_IsNumber(v))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: %s must be an integer, got %s",
                             doc_name(doc), what, json_type_name(v));
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: %s must be an integer, got %.17g",
                             doc_name(doc), what, d);
    if (d < -INT64_LIMIT_D || d >= INT64_LIMIT_D)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: %s = %.17g is outside the 64-bit range",
                             doc_name(doc), what, d);
    *out = (int64_t)d;
    return SDC_OK;
}

sdc_status_t sdc_json_get_int(const sdc_json_t *doc, const char *key, int64_t def, int64_t *out,
                              sdc_error_t *err)
{
    const cJSON *v = json_value(doc, key);
    if (!v) {
        *out = def;
        return SDC_OK;
    }
    char what[160];
    snprintf(what, sizeof(what), "'%s'", key);
    return number_to_int(doc, what, v, out, err);
}

sdc_status_t sdc_json_get_double(const sdc_json_t *doc, const char *key, double def, double *out,
                                 sdc_error_t *err)
{
    const cJSON *v = json_value(doc, key);
    if (!v) {
        *out = def;
        return SDC_OK;
    }
    if (!cJSON_IsNumber(v))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: '%s' must be a number, got %s",
                             doc_name(doc), key, json_type_name(v));
    *out = v->valuedouble;
    return SDC_OK;
}

sdc_status_t sdc_json_get_bool(const sdc_json_t *doc, const char *key, int def, int *out,
                               sdc_error_t *err)
{
    const cJSON *v = json_value(doc, key);
    if (!v) {
        *out = def;
        return SDC_OK;
    }
    if (!cJSON_IsBool(v))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: '%s' must be true or false, got %s",
                             doc_name(doc), key, json_type_name(v));
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return SDC_OK;
}

sdc_status_t sdc_json_get_string(const sdc_json_t *doc, const char *key, const char *def,
                                 const char **out, sdc_error_t *err)
{
    const cJSON *v = json_value(doc, key);
    if (!v) {
        *out = def;
        return SDC_OK;
    }
    if (!cJSON_IsString(v))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: '%s' must be a string, got %s",
                             doc_name(doc), key, json_type_name(v));
    *out = v->valuestring;
    return SDC_OK;
}

sdc_status_t sdc_json_get_object(const sdc_json_t *doc, const char *key, sdc_json_t *sub,
                                 sdc_error_t *err)
{
    const cJSON *v = json_value(doc, key);
    sub->path = doc ? doc->path : NULL;
    sub->root = NULL;
    if (!v)
        return SDC_OK;
    if (!cJSON_IsObject(v))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: '%s' must be an object, got %s",
                             doc_name(doc), key, json_type_name(v));
    sub->root = (cJSON *)v;
    return SDC_OK;
}

/* Shared checks of the array getters: returns the array (NULL when absent)
 * and its length, or an error when it is not an array or too long. */
static sdc_status_t array_value(const sdc_json_t *doc, const char *key, size_t n_def, size_t cap,
                                const cJSON **arr, size_t *n, sdc_error_t *err)
{
    const cJSON *v = json_value(doc, key);
    *arr = NULL;
    if (!v) {
        if (n_def > cap)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "%s: default for '%s' has %zu items, capacity %zu",
                                 doc_name(doc), key, n_def, cap);
        *n = n_def;
        return SDC_OK;
    }
    if (!cJSON_IsArray(v))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: '%s' must be an array, got %s",
                             doc_name(doc), key, json_type_name(v));
    size_t len = (size_t)cJSON_GetArraySize(v);
    if (len > cap)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: '%s' has %zu items, at most %zu allowed",
                             doc_name(doc), key, len, cap);
    *arr = v;
    *n = len;
    return SDC_OK;
}

sdc_status_t sdc_json_get_int_array(const sdc_json_t *doc, const char *key, const int64_t *def,
                                    size_t n_def, int64_t *out, size_t cap, size_t *n,
                                    sdc_error_t *err)
{
    const cJSON *arr;
    size_t len;
    sdc_status_t st = array_value(doc, key, n_def, cap, &arr, &len, err);
    if (st != SDC_OK)
        return st;
    if (!arr) {
        if (n_def)
            memcpy(out, def, n_def * sizeof(*out));
        *n = n_def;
        return SDC_OK;
    }
    size_t i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, arr) {
        char what[160];
        snprintf(what, sizeof(what), "'%s'[%zu]", key, i);
        st = number_to_int(doc, what, item, &out[i], err);
        if (st != SDC_OK)
            return st;
        i++;
    }
    *n = len;
    return SDC_OK;
}

sdc_status_t sdc_json_get_double_array(const sdc_json_t *doc, const char *key, const double *def,
                                       size_t n_def, double *out, size_t cap, size_t *n,
                                       sdc_error_t *err)
{
    const cJSON *arr;
    size_t len;
    sdc_status_t st = array_value(doc, key, n_def, cap, &arr, &len, err);
    if (st != SDC_OK)
        return st;
    if (!arr) {
        if (n_def)
            memcpy(out, def, n_def * sizeof(*out));
        *n = n_def;
        return SDC_OK;
    }
    size_t i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, arr) {
        if (!cJSON_IsNumber(item))
            return sdc_error_set(err, SDC_ERR_FORMAT, "%s: '%s'[%zu] must be a number, got %s",
                                 doc_name(doc), key, i, json_type_name(item));
        out[i++] = item->valuedouble;
    }
    *n = len;
    return SDC_OK;
}

/* diffusers writes absent optional components as [null, null]; those read
 * as absent too. */
sdc_status_t sdc_json_get_component_class(const sdc_json_t *doc, const char *key,
                                          const char **class_name, sdc_error_t *err)
{
    const cJSON *v = json_value(doc, key);
    *class_name = NULL;
    if (!v)
        return SDC_OK;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "%s: '%s' must be a [\"library\", \"ClassName\"] pair, got %s",
                             doc_name(doc), key, json_type_name(v));
    const cJSON *lib = cJSON_GetArrayItem(v, 0);
    const cJSON *cls = cJSON_GetArrayItem(v, 1);
    if (cJSON_IsNull(lib) && cJSON_IsNull(cls))
        return SDC_OK;
    if (!cJSON_IsString(lib) || !cJSON_IsString(cls))
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "%s: '%s' must be a pair of strings [\"library\", \"ClassName\"]",
                             doc_name(doc), key);
    *class_name = cls->valuestring;
    return SDC_OK;
}
