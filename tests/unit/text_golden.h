/*
 * text_golden.h: the side file of the text goldens,
 * tests/data/goldens/text_prompts.json (made by
 * tools/goldens/make_text_goldens.py): prompts and expected glyph texts as
 * hex byte strings, which is how they survive NUL bytes and invalid UTF-8.
 */
#ifndef SDC_TEST_TEXT_GOLDEN_H
#define SDC_TEST_TEXT_GOLDEN_H

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"

/* Parses the side file; NULL (with a message) when it cannot be read. */
static inline cJSON *text_golden_load(sdc_json_t *doc)
{
    char path[1024];
    sdc_error_t err = {0};
    snprintf(path, sizeof(path), "%s/goldens/text_prompts.json", test_data_dir());
    if (sdc_json_load(doc, path, &err) != SDC_OK) {
        fprintf(stderr, "  %s\n", err.msg);
        return NULL;
    }
    return doc->root;
}

static inline int text_hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Decodes obj[key] (a hex string) into a malloc'd buffer (NUL-terminated
 * for convenience; *len excludes it). Returns NULL when the key is null or
 * absent (*len 0); a malformed string aborts the test binary. */
static inline char *text_hex(const cJSON *obj, const char *key, size_t *len)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *len = 0;
    if (!cJSON_IsString(v)) return NULL;
    size_t n = strlen(v->valuestring);
    char *out = malloc(n / 2 + 1);
    if (!out || n % 2) abort();
    for (size_t i = 0; i < n / 2; i++) {
        int hi = text_hexval(v->valuestring[2 * i]), lo = text_hexval(v->valuestring[2 * i + 1]);
        if (hi < 0 || lo < 0) abort();
        out[i] = (char)(hi << 4 | lo);
    }
    out[n / 2] = '\0';
    *len = n / 2;
    return out;
}

static inline const char *text_name(const cJSON *obj)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "name");
    return cJSON_IsString(v) ? v->valuestring : "?";
}

static inline int64_t text_int(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
}

#endif
