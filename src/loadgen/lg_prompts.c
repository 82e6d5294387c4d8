/*
 * lg_prompts.c: the prompts a load test sends: read from a file (plain
 * lines or JSON lines) or a built-in bilingual set. The whole file is
 * checked before a job is sent, so a bad line stops the run before it
 * starts, with FILE:LINE.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"
#include "loadgen/loadgen.h"

#define PROMPTS_MAX 1000000

/* English and Chinese, short and long, some with quoted text for the glyph
 * encoder: the mix a text-to-image service sees. */
static const char *const builtin[] = {
    "A cat holding a sign that says \"hello world\"",
    "一只熊猫在竹林里吃竹子，水墨画风格",
    "A lighthouse on a rocky coast at dawn, waves crashing, cinematic lighting",
    "夜晚的上海外滩，霓虹灯倒映在黄浦江上",
    "A red vintage bicycle leaning against a brick wall, film photograph",
    "一家咖啡店的招牌，上面写着“早安”",
    "An astronaut riding a horse on the moon, detailed digital art",
    "秋天的故宫，红墙金瓦，落叶满地",
    "A bowl of ramen with a soft-boiled egg, top-down food photography",
    "一只戴着眼镜的柴犬在看书",
    "A poster with the words 'OPEN 24 HOURS' in neon letters",
    "雪山下的湖泊，清晨的薄雾，高清风景摄影",
};

void sdc_lg_prompts_free(sdc_lg_prompts_t *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->prompt[i]);
        free(p->negative[i]);
    }
    free(p->prompt);
    free(p->negative);
    memset(p, 0, sizeof(*p));
}

static sdc_status_t push(sdc_lg_prompts_t *p, size_t *cap, const char *text, size_t len,
                         const char *negative, sdc_error_t *err)
{
    if (p->n == PROMPTS_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE, "more than %d prompts", PROMPTS_MAX);
    if (p->n == *cap) {
        size_t c = *cap ? 2 * *cap : 16;
        char **a = realloc(p->prompt, c * sizeof(*a));
        if (!a)
            return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory for prompts");
        p->prompt = a;
        char **b = realloc(p->negative, c * sizeof(*b));
        if (!b)
            return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory for prompts");
        p->negative = b;
        *cap = c;
    }
    char *t = strndup(text, len), *n = negative ? strdup(negative) : NULL;
    if (!t || (negative && !n)) {
        free(t);
        free(n);
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory for prompts");
    }
    p->prompt[p->n] = t;
    p->negative[p->n] = n;
    p->n++;
    return SDC_OK;
}

sdc_status_t sdc_lg_prompts_builtin(sdc_lg_prompts_t *p, sdc_error_t *err)
{
    memset(p, 0, sizeof(*p));
    size_t cap = 0;
    for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++) {
        sdc_status_t st = push(p, &cap, builtin[i], strlen(builtin[i]), NULL, err);
        if (st != SDC_OK) {
            sdc_lg_prompts_free(p);
            return st;
        }
    }
    return SDC_OK;
}

static sdc_status_t check_text(const char *text, size_t len, const char *what, sdc_error_t *err)
{
    if (len > SDC_JOB_PROMPT_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s of %zu bytes is longer than %d", what, len,
                             SDC_JOB_PROMPT_MAX);
    if (memchr(text, '\0', len))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s has a NUL character", what);
    size_t ok = sdc_utf8_valid_len(text, len);
    if (ok != len)
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s is not valid UTF-8 (byte %zu)", what, ok);
    return SDC_OK;
}

static sdc_status_t parse_json_line(sdc_lg_prompts_t *p, size_t *cap, const char *line,
                                    size_t len, sdc_error_t *err)
{
    cJSON *o = cJSON_ParseWithLength(line, len);
    sdc_status_t st = SDC_OK;
    if (!cJSON_IsObject(o)) {
        st = sdc_error_set(err, SDC_ERR_FORMAT, "not a JSON object");
        goto out;
    }
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    const cJSON *ng = cJSON_GetObjectItemCaseSensitive(o, "negative_prompt");
    if (!cJSON_IsString(pr)) {
        st = sdc_error_set(err, SDC_ERR_FORMAT, "\"prompt\" must be a string");
        goto out;
    }
    if (ng && !cJSON_IsNull(ng) && !cJSON_IsString(ng)) {
        st = sdc_error_set(err, SDC_ERR_FORMAT, "\"negative_prompt\" must be a string");
        goto out;
    }
    const char *neg = cJSON_IsString(ng) ? ng->valuestring : NULL;
    if ((st = check_text(pr->valuestring, strlen(pr->valuestring), "the prompt", err)) == SDC_OK &&
        (!neg || (st = check_text(neg, strlen(neg), "the negative prompt", err)) == SDC_OK))
        st = push(p, cap, pr->valuestring, strlen(pr->valuestring), neg, err);
out:
    cJSON_Delete(o);
    return st;
}

sdc_status_t sdc_lg_prompts_load(const char *path, sdc_lg_prompts_t *p, sdc_error_t *err)
{
    memset(p, 0, sizeof(*p));
    FILE *f = fopen(path, "r");
    if (!f)
        return sdc_error_set(err, SDC_ERR_IO, "prompts file %s: %s", path, strerror(errno));
    size_t cap = 0, bufcap = 0;
    char *line = NULL;
    ssize_t got;
    long lineno = 0;
    sdc_status_t st = SDC_OK;
    while (st == SDC_OK && (got = getline(&line, &bufcap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        size_t lead = 0;
        while (lead < len && (line[lead] == ' ' || line[lead] == '\t'))
            lead++;
        if (lead == len || line[lead] == '#')
            continue;
        if (line[lead] == '{')
            st = parse_json_line(p, &cap, line + lead, len - lead, err);
        else if ((st = check_text(line, len, "the prompt", err)) == SDC_OK)
            st = push(p, &cap, line, len, NULL, err);
        if (st != SDC_OK)
            sdc_error_wrap(err, "%s:%ld", path, lineno);
    }
    if (st == SDC_OK && ferror(f))
        st = sdc_error_set(err, SDC_ERR_IO, "prompts file %s: read error", path);
    if (st == SDC_OK && p->n == 0)
        st = sdc_error_set(err, SDC_ERR_FORMAT, "prompts file %s has no prompts", path);
    free(line);
    fclose(f);
    if (st != SDC_OK)
        sdc_lg_prompts_free(p);
    return st;
}
