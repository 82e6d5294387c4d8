/*
 * config.h: JSON documents (config.json, model_index.json, scheduler and
 * guider configs) parsed with cJSON, with typed accessors that return the
 * diffusers default when a key is absent and an error when it has the wrong
 * type or an out-of-range value.
 */
#ifndef SDC_CONFIG_H
#define SDC_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct cJSON cJSON;

typedef struct {
    char *path;  /* for error messages */
    cJSON *root; /* an object */
} sdc_json_t;

/* Reads and parses a JSON object from a file (at most 16 MiB). */
sdc_status_t sdc_json_load(sdc_json_t *doc, const char *path, sdc_error_t *err);
/* Parses a JSON object from memory; label names it in errors. */
sdc_status_t sdc_json_parse(sdc_json_t *doc, const char *text, size_t len, const char *label,
                            sdc_error_t *err);
void sdc_json_free(sdc_json_t *doc);

int sdc_json_has(const sdc_json_t *doc, const char *key);
/* Each getter: key absent or null -> *out = def, SDC_OK. Wrong type -> error
 * naming file and key. */
sdc_status_t sdc_json_get_int(const sdc_json_t *doc, const char *key, int64_t def, int64_t *out,
                              sdc_error_t *err);
sdc_status_t sdc_json_get_double(const sdc_json_t *doc, const char *key, double def, double *out,
                                 sdc_error_t *err);
sdc_status_t sdc_json_get_bool(const sdc_json_t *doc, const char *key, int def, int *out,
                               sdc_error_t *err);
/* *out points into the document (valid until sdc_json_free); def may be NULL. */
sdc_status_t sdc_json_get_string(const sdc_json_t *doc, const char *key, const char *def,
                                 const char **out, sdc_error_t *err);
/* Integer array; absent -> copies def (n_def items). *n gets the length;
 * more than cap items is an error. */
sdc_status_t sdc_json_get_int_array(const sdc_json_t *doc, const char *key, const int64_t *def,
                                    size_t n_def, int64_t *out, size_t cap, size_t *n,
                                    sdc_error_t *err);
/* Double array, same rules. */
sdc_status_t sdc_json_get_double_array(const sdc_json_t *doc, const char *key, const double *def,
                                       size_t n_def, double *out, size_t cap, size_t *n,
                                       sdc_error_t *err);
/* A view of the object under key (sub->root = NULL when the key is absent
 * or null): the same getters apply to it. The view shares the document's
 * memory: never sdc_json_free it, and do not use it after doc is freed. */
sdc_status_t sdc_json_get_object(const sdc_json_t *doc, const char *key, sdc_json_t *sub,
                                 sdc_error_t *err);
/* model_index.json entries are ["library", "ClassName"] pairs: returns the
 * class name of component key (NULL with SDC_OK when the key is absent or null). */
sdc_status_t sdc_json_get_component_class(const sdc_json_t *doc, const char *key,
                                          const char **class_name, sdc_error_t *err);

#endif
