/*
 * clusterfile.c: parsing and validating cluster files (clusterfile.h). The
 * parser is strict: unknown keys, wrong types, duplicate names, stages
 * without a node and overlapping block ranges are errors naming the file and
 * the JSON path, because a typo in a deployment file should stop the launch,
 * not surface as a hung pipeline.
 */
#include "clusterfile.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/config.h"

static const char *const role_names[SDC_ROLE_COUNT] = {
    [SDC_ROLE_COORDINATOR] = "coordinator",
    [SDC_ROLE_TEXT_ENCODER] = "text-encoder",
    [SDC_ROLE_DIT_STAGE] = "dit-stage",
    [SDC_ROLE_VAE] = "vae",
    [SDC_ROLE_REFINER] = "refiner",
};

const char *sdc_role_name(sdc_role_t r)
{
    return (unsigned)r < SDC_ROLE_COUNT ? role_names[r] : "unknown";
}

int sdc_role_parse(const char *name)
{
    for (int i = 0; i < SDC_ROLE_COUNT; i++)
        if (name && strcmp(name, role_names[i]) == 0) return i;
    return -1;
}

void sdc_cluster_split_even(int n_blocks, int n_stages, int *begin, int *end)
{
    int base = n_blocks / n_stages, extra = n_blocks % n_stages, at = 0;
    for (int s = 0; s < n_stages; s++) {
        begin[s] = at;
        at += base + (s < extra ? 1 : 0);
        end[s] = at;
    }
}

/* Rejects keys not in allowed (NULL-terminated), naming the JSON path. */
static sdc_status_t check_keys(const cJSON *obj, const char *const *allowed, const char *label,
                               const char *where, sdc_error_t *err)
{
    for (const cJSON *it = obj->child; it; it = it->next) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(it->string, *a) == 0) ok = 1;
        if (!ok)
            return sdc_error_set(err, SDC_ERR_FORMAT, "%s: %s: unknown key '%s'", label, where,
                                 it->string);
    }
    return SDC_OK;
}

static sdc_status_t get_str(const cJSON *obj, const char *key, const char *def, char *out,
                            size_t cap, const char *label, const char *where, sdc_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    const char *s = def;
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v))
            return sdc_error_set(err, SDC_ERR_FORMAT, "%s: %s.%s must be a string", label, where,
                                 key);
        s = v->valuestring;
    }
    if (!s) return sdc_error_set(err, SDC_ERR_FORMAT, "%s: %s.%s is required", label, where, key);
    if (strlen(s) >= cap)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: %s.%s is too long (max %zu bytes)", label,
                             where, key, cap - 1);
    memcpy(out, s, strlen(s) + 1);
    return SDC_OK;
}

static sdc_status_t get_int(const cJSON *obj, const char *key, int def, int lo, int hi, int *out,
                            const char *label, const char *where, sdc_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return SDC_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int64_t)v->valuedouble ||
        v->valuedouble < lo || v->valuedouble > hi)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: %s.%s must be an integer in %d..%d", label,
                             where, key, lo, hi);
    *out = (int)v->valuedouble;
    return SDC_OK;
}

static sdc_status_t parse_size(const char *s, int *w, int *h)
{
    char *end;
    errno = 0;
    long a = strtol(s, &end, 10);
    if (errno || end == s || *end != 'x') return SDC_ERR_FORMAT;
    const char *p = end + 1;
    long b = strtol(p, &end, 10);
    if (errno || end == p || *end != '\0' || a < 1 || b < 1 || a > 65536 || b > 65536)
        return SDC_ERR_FORMAT;
    *w = (int)a;
    *h = (int)b;
    return SDC_OK;
}

static sdc_status_t parse_pipeline(const cJSON *pj, int idx, sdc_cf_pipeline_t *p,
                                   const char *label, sdc_error_t *err)
{
    static const char *const keys[] = {"name", "stages", "blocks", "sizes", NULL};
    char where[48];
    sdc_status_t st;
    snprintf(where, sizeof(where), "pipelines[%d]", idx);
    if (!cJSON_IsObject(pj))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: %s must be an object", label, where);
    if ((st = check_keys(pj, keys, label, where, err)) != SDC_OK) return st;
    char defname[32];
    snprintf(defname, sizeof(defname), "p%d", idx);
    if ((st = get_str(pj, "name", defname, p->name, sizeof(p->name), label, where, err)) != SDC_OK)
        return st;
    if ((st = get_int(pj, "stages", 1, 1, SDC_CF_MAX_STAGES, &p->n_stages, label, where, err)) !=
        SDC_OK)
        return st;
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(pj, "blocks");
    if (!b || cJSON_IsNull(b) || (cJSON_IsString(b) && strcmp(b->valuestring, "even") == 0)) {
        p->split_even = 1;
    } else if (cJSON_IsArray(b)) {
        if (cJSON_GetArraySize(b) != p->n_stages)
            return sdc_error_set(err, SDC_ERR_FORMAT,
                                 "%s: %s.blocks has %d ranges for %d stages", label, where,
                                 cJSON_GetArraySize(b), p->n_stages);
        int s = 0;
        for (const cJSON *r = b->child; r; r = r->next, s++) {
            const cJSON *lo = cJSON_GetArrayItem(r, 0), *hi = cJSON_GetArrayItem(r, 1);
            if (!cJSON_IsArray(r) || cJSON_GetArraySize(r) != 2 || !cJSON_IsNumber(lo) ||
                !cJSON_IsNumber(hi) || lo->valuedouble < 0 || hi->valuedouble > 100000 ||
                lo->valuedouble != (int)lo->valuedouble || hi->valuedouble != (int)hi->valuedouble)
                return sdc_error_set(err, SDC_ERR_FORMAT,
                                     "%s: %s.blocks[%d] must be [begin, end] (integers)", label,
                                     where, s);
            p->block_begin[s] = (int)lo->valuedouble;
            p->block_end[s] = (int)hi->valuedouble;
        }
    } else {
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "%s: %s.blocks must be \"even\" or a list of [begin, end] ranges",
                             label, where);
    }
    const cJSON *sz = cJSON_GetObjectItemCaseSensitive(pj, "sizes");
    if (sz && !cJSON_IsNull(sz)) {
        if (!cJSON_IsArray(sz) || cJSON_GetArraySize(sz) > SDC_CF_MAX_SIZES)
            return sdc_error_set(err, SDC_ERR_FORMAT,
                                 "%s: %s.sizes must be a list of at most %d \"WxH\" strings", label,
                                 where, SDC_CF_MAX_SIZES);
        for (const cJSON *s = sz->child; s; s = s->next) {
            int *wh = p->sizes[p->n_sizes];
            if (!cJSON_IsString(s) || parse_size(s->valuestring, &wh[0], &wh[1]) != SDC_OK)
                return sdc_error_set(err, SDC_ERR_FORMAT,
                                     "%s: %s.sizes[%d] must be \"WxH\" (e.g. \"1024x768\")",
                                     label, where, p->n_sizes);
            p->n_sizes++;
        }
    }
    return SDC_OK;
}

static int pipeline_index(const sdc_cluster_t *c, const char *name)
{
    for (int i = 0; i < c->n_pipelines; i++)
        if (strcmp(c->pipelines[i].name, name) == 0) return i;
    return -1;
}

static sdc_status_t parse_node(const cJSON *nj, int idx, sdc_cluster_t *c, const char *label,
                               sdc_error_t *err)
{
    static const char *const keys[] = {"role", "host", "pipeline", "stage", NULL};
    sdc_cf_node_t *n = &c->nodes[idx];
    char where[48], role[32], pname[64];
    sdc_status_t st;
    snprintf(where, sizeof(where), "nodes[%d]", idx);
    if (!cJSON_IsObject(nj))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: %s must be an object", label, where);
    if ((st = check_keys(nj, keys, label, where, err)) != SDC_OK) return st;
    if ((st = get_str(nj, "role", NULL, role, sizeof(role), label, where, err)) != SDC_OK) return st;
    int r = sdc_role_parse(role);
    if (r < 0)
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "%s: %s.role '%s' is not one of coordinator, text-encoder, "
                             "dit-stage, vae, refiner",
                             label, where, role);
    n->role = (sdc_role_t)r;
    if ((st = get_str(nj, "host", "localhost", n->host, sizeof(n->host), label, where, err)) !=
        SDC_OK)
        return st;
    n->pipeline = -1;
    n->stage = -1;
    int has_p = cJSON_GetObjectItemCaseSensitive(nj, "pipeline") != NULL;
    int has_s = cJSON_GetObjectItemCaseSensitive(nj, "stage") != NULL;
    if (n->role != SDC_ROLE_DIT_STAGE) {
        if (has_p || has_s)
            return sdc_error_set(err, SDC_ERR_FORMAT,
                                 "%s: %s: only dit-stage nodes take pipeline/stage", label, where);
        return SDC_OK;
    }
    if ((st = get_str(nj, "pipeline", c->n_pipelines == 1 ? c->pipelines[0].name : NULL, pname,
                      sizeof(pname), label, where, err)) != SDC_OK)
        return st;
    n->pipeline = pipeline_index(c, pname);
    if (n->pipeline < 0)
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: %s.pipeline '%s' is not defined", label,
                             where, pname);
    if (!has_s)
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: %s.stage is required for dit-stage",
                             label, where);
    return get_int(nj, "stage", 0, 0, c->pipelines[n->pipeline].n_stages - 1, &n->stage, label,
                   where, err);
}

/* Every stage of every pipeline has exactly one node; the roles a job needs
 * exist (refiner nodes are optional: only refine jobs need one, and they
 * need the refiner model). */
static sdc_status_t check_topology(const sdc_cluster_t *c, const char *label, sdc_error_t *err)
{
    int counts[SDC_ROLE_COUNT] = {0};
    for (int i = 0; i < c->n_nodes; i++) counts[c->nodes[i].role]++;
    for (int r = 0; r < SDC_ROLE_COUNT; r++)
        if (r != SDC_ROLE_DIT_STAGE && r != SDC_ROLE_REFINER && counts[r] == 0)
            return sdc_error_set(err, SDC_ERR_FORMAT, "%s: no %s node", label,
                                 sdc_role_name((sdc_role_t)r));
    if (counts[SDC_ROLE_REFINER] > 0 && !c->refiner_model[0])
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: refiner nodes need 'refiner_model' (the "
                             "refiner's model directory) at the top level", label);
    if (counts[SDC_ROLE_REFINER] == 0 && c->refiner_model[0])
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: 'refiner_model' is set but no node has "
                             "role refiner", label);
    for (int p = 0; p < c->n_pipelines; p++) {
        for (int s = 0; s < c->pipelines[p].n_stages; s++) {
            int n = 0;
            for (int i = 0; i < c->n_nodes; i++)
                if (c->nodes[i].role == SDC_ROLE_DIT_STAGE && c->nodes[i].pipeline == p &&
                    c->nodes[i].stage == s)
                    n++;
            if (n != 1)
                return sdc_error_set(err, SDC_ERR_FORMAT,
                                     "%s: pipeline '%s' stage %d has %d nodes, needs exactly 1",
                                     label, c->pipelines[p].name, s, n);
        }
    }
    return SDC_OK;
}

sdc_status_t sdc_cluster_resolve(sdc_cluster_t *c, int total_blocks, sdc_error_t *err)
{
    for (int p = 0; p < c->n_pipelines; p++) {
        sdc_cf_pipeline_t *pl = &c->pipelines[p];
        if (pl->n_stages > total_blocks)
            return sdc_error_set(err, SDC_ERR_RANGE,
                                 "pipeline '%s': %d stages but the model has only %d blocks",
                                 pl->name, pl->n_stages, total_blocks);
        if (pl->split_even) {
            sdc_cluster_split_even(total_blocks, pl->n_stages, pl->block_begin, pl->block_end);
            continue;
        }
        int at = 0;
        for (int s = 0; s < pl->n_stages; s++) {
            if (pl->block_begin[s] != at || pl->block_end[s] <= pl->block_begin[s])
                return sdc_error_set(err, SDC_ERR_RANGE,
                                     "pipeline '%s': stage %d holds [%d, %d); ranges must be "
                                     "non-empty and contiguous from 0 (expected begin %d)",
                                     pl->name, s, pl->block_begin[s], pl->block_end[s], at);
            at = pl->block_end[s];
        }
        if (at != total_blocks)
            return sdc_error_set(err, SDC_ERR_RANGE,
                                 "pipeline '%s': block ranges end at %d but the model has %d "
                                 "blocks",
                                 pl->name, at, total_blocks);
    }
    return SDC_OK;
}

sdc_status_t sdc_cluster_parse(sdc_cluster_t *c, const char *text, size_t len, const char *label,
                               int total_blocks, sdc_error_t *err)
{
    static const char *const keys[] = {"redis", "prefix", "model", "refiner_model", "backend",
                                       "micro_batch", "max_inflight", "max_image_bytes",
                                       "pipelines", "nodes", NULL};
    sdc_json_t doc;
    sdc_status_t st = sdc_json_parse(&doc, text, len, label, err);
    if (st != SDC_OK) return st;
    const cJSON *root = doc.root;
    memset(c, 0, sizeof(*c));
    if ((st = check_keys(root, keys, label, "top level", err)) != SDC_OK) goto out;
    if ((st = get_str(root, "redis", "redis://127.0.0.1:6379", c->redis_url, sizeof(c->redis_url),
                      label, "top level", err)) != SDC_OK ||
        (st = get_str(root, "prefix", "sdc:", c->prefix, sizeof(c->prefix), label, "top level",
                      err)) != SDC_OK ||
        (st = get_str(root, "model", NULL, c->model, sizeof(c->model), label, "top level", err)) !=
            SDC_OK ||
        (st = get_str(root, "refiner_model", "", c->refiner_model, sizeof(c->refiner_model),
                      label, "top level", err)) != SDC_OK ||
        (st = get_str(root, "backend", "cpu", c->backend, sizeof(c->backend), label, "top level",
                      err)) != SDC_OK ||
        (st = get_int(root, "micro_batch", 4, 1, 256, &c->micro_batch, label, "top level", err)) !=
            SDC_OK ||
        (st = get_int(root, "max_image_bytes", SDC_CF_IMAGE_BYTES_DEFAULT, 1, SDC_CF_IMAGE_BYTES_MAX,
                      &c->max_image_bytes, label, "top level", err)) != SDC_OK)
        goto out;
    const cJSON *pls = cJSON_GetObjectItemCaseSensitive(root, "pipelines");
    if (!cJSON_IsArray(pls) || cJSON_GetArraySize(pls) < 1 ||
        cJSON_GetArraySize(pls) > SDC_CF_MAX_PIPELINES) {
        st = sdc_error_set(err, SDC_ERR_FORMAT, "%s: 'pipelines' must be a list of 1..%d objects",
                           label, SDC_CF_MAX_PIPELINES);
        goto out;
    }
    int max_stages = 1;
    for (const cJSON *pj = pls->child; pj; pj = pj->next) {
        sdc_cf_pipeline_t *p = &c->pipelines[c->n_pipelines];
        if ((st = parse_pipeline(pj, c->n_pipelines, p, label, err)) != SDC_OK) goto out;
        if (pipeline_index(c, p->name) >= 0) {
            st = sdc_error_set(err, SDC_ERR_FORMAT, "%s: pipeline name '%s' is used twice", label,
                               p->name);
            goto out;
        }
        if (p->n_stages > max_stages) max_stages = p->n_stages;
        c->n_pipelines++;
    }
    if ((st = get_int(root, "max_inflight", 2 * max_stages + 2, 1, 100000, &c->max_inflight, label,
                      "top level", err)) != SDC_OK)
        goto out;
    const cJSON *nodes = cJSON_GetObjectItemCaseSensitive(root, "nodes");
    if (!cJSON_IsArray(nodes) || cJSON_GetArraySize(nodes) < 1 ||
        cJSON_GetArraySize(nodes) > SDC_CF_MAX_NODES) {
        st = sdc_error_set(err, SDC_ERR_FORMAT, "%s: 'nodes' must be a list of 1..%d objects",
                           label, SDC_CF_MAX_NODES);
        goto out;
    }
    for (const cJSON *nj = nodes->child; nj; nj = nj->next) {
        if ((st = parse_node(nj, c->n_nodes, c, label, err)) != SDC_OK) goto out;
        c->n_nodes++;
    }
    if ((st = check_topology(c, label, err)) != SDC_OK) goto out;
    if (total_blocks > 0 && (st = sdc_cluster_resolve(c, total_blocks, err)) != SDC_OK)
        sdc_error_wrap(err, "%s", label);
out:
    sdc_json_free(&doc);
    return st;
}

sdc_status_t sdc_cluster_load(sdc_cluster_t *c, const char *path, int total_blocks,
                              sdc_error_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return sdc_error_set(err, SDC_ERR_IO, "%s: %s", path, strerror(errno));
    char *buf = malloc(1 << 20);
    if (!buf) {
        fclose(f);
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    }
    size_t n = fread(buf, 1, 1 << 20, f);
    int big = !feof(f);
    fclose(f);
    sdc_status_t st;
    if (big)
        st = sdc_error_set(err, SDC_ERR_RANGE, "%s: cluster file larger than 1 MiB", path);
    else
        st = sdc_cluster_parse(c, buf, n, path, total_blocks, err);
    free(buf);
    return st;
}

int sdc_cluster_find_node(const sdc_cluster_t *c, sdc_role_t role, int pipeline, int stage)
{
    for (int i = 0; i < c->n_nodes; i++) {
        const sdc_cf_node_t *n = &c->nodes[i];
        if (n->role != role) continue;
        if (role == SDC_ROLE_DIT_STAGE && (n->pipeline != pipeline || n->stage != stage)) continue;
        return i;
    }
    return -1;
}
