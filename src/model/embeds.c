/*
 * embeds.c: reading and writing `--embeds` files (see embeds.h). Every tensor
 * is checked against the model's text dims; masks are normalised to bytes.
 */
#include "embeds.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/safetensors.h"
#include "../common/tensor.h"

/* Shape [1, n, D] or [n, D] -> n (and checks D). */
static sdc_status_t embeds_shape(const char *path, const sdc_st_entry_t *e, int64_t dim,
                                 int64_t *n, sdc_error_t *err)
{
    char buf[96];
    int nd = e->ndim;
    const int64_t *s = e->shape;
    if (nd == 3 && s[0] == 1) {
        nd = 2;
        s++;
    }
    if (nd != 2 || s[1] != dim || s[0] < 1)
        return sdc_error_set(err, SDC_ERR_SHAPE,
                             "%s: '%s' has shape %s, expected [1, n, %lld] or [n, %lld] with n >= 1",
                             path, e->name, sdc_shape_str(e->ndim, e->shape, buf, sizeof(buf)),
                             (long long)dim, (long long)dim);
    *n = s[0];
    return SDC_OK;
}

static sdc_status_t load_embeds(const char *path, const sdc_st_set_t *set, const char *name,
                                int64_t dim, float **out, int64_t *n, sdc_error_t *err)
{
    const sdc_st_file_t *f;
    const sdc_st_entry_t *e = sdc_st_set_find(set, name, &f);
    sdc_tensor_t t;
    if (!e) return sdc_error_set(err, SDC_ERR_NOT_FOUND, "%s: tensor '%s' is missing", path, name);
    sdc_status_t st = embeds_shape(path, e, dim, n, err);
    if (st != SDC_OK) return st;
    sdc_st_view(f, e, &t);
    *out = malloc((size_t)(*n * dim) * sizeof(float));
    if (!*out) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    st = sdc_convert_to_f32(*out, t.data, e->dtype, *n * dim);
    if (st != SDC_OK) {
        free(*out);
        *out = NULL;
        return sdc_error_set(err, st, "%s: '%s' has dtype %s; embeddings must be F32, F16 or BF16",
                             path, name, sdc_dtype_name(e->dtype));
    }
    return SDC_OK;
}

static sdc_status_t load_mask(const char *path, const sdc_st_set_t *set, const char *name,
                              int64_t n, uint8_t **out, sdc_error_t *err)
{
    const sdc_st_file_t *f;
    const sdc_st_entry_t *e = sdc_st_set_find(set, name, &f);
    sdc_tensor_t t;
    char buf[96];
    if (!e) return sdc_error_set(err, SDC_ERR_NOT_FOUND, "%s: tensor '%s' is missing", path, name);
    int64_t numel = sdc_shape_numel(e->ndim, e->shape);
    int shape_ok = (e->ndim == 1 && e->shape[0] == n) ||
                   (e->ndim == 2 && e->shape[0] == 1 && e->shape[1] == n);
    if (!shape_ok)
        return sdc_error_set(err, SDC_ERR_SHAPE, "%s: '%s' has shape %s, expected [1, %lld] or [%lld]",
                             path, name, sdc_shape_str(e->ndim, e->shape, buf, sizeof(buf)),
                             (long long)n, (long long)n);
    sdc_st_view(f, e, &t);
    uint8_t *m = malloc((size_t)numel);
    if (!m) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < numel; i++) {
        double v;
        switch (e->dtype) {
        case SDC_DTYPE_I64: { int64_t x; memcpy(&x, (const uint8_t *)t.data + 8 * i, 8); v = (double)x; break; }
        case SDC_DTYPE_I32: { int32_t x; memcpy(&x, (const uint8_t *)t.data + 4 * i, 4); v = x; break; }
        case SDC_DTYPE_U8:
        case SDC_DTYPE_BOOL: v = ((const uint8_t *)t.data)[i]; break;
        case SDC_DTYPE_F32: { float x; memcpy(&x, (const uint8_t *)t.data + 4 * i, 4); v = x; break; }
        default:
            free(m);
            return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                                 "%s: '%s' has dtype %s; masks must be I64, I32, U8, BOOL or F32",
                                 path, name, sdc_dtype_name(e->dtype));
        }
        if (v != 0.0 && v != 1.0) {
            free(m);
            return sdc_error_set(err, SDC_ERR_FORMAT, "%s: '%s'[%lld] is %g; mask values must be 0 or 1",
                                 path, name, (long long)i, v);
        }
        m[i] = v != 0.0;
    }
    *out = m;
    return SDC_OK;
}

static sdc_status_t load_part(const char *path, const sdc_st_set_t *set, const char *prefix,
                              int64_t dim, int64_t dim_2, sdc_embeds_part_t *p, sdc_error_t *err)
{
    char name[96], mname[112];
    sdc_status_t st;
    p->dim = dim;
    p->dim_2 = dim_2;
    snprintf(name, sizeof(name), "%sprompt_embeds", prefix);
    snprintf(mname, sizeof(mname), "%s_mask", name);
    st = load_embeds(path, set, name, dim, &p->embeds, &p->n, err);
    if (st == SDC_OK) st = load_mask(path, set, mname, p->n, &p->mask, err);
    if (st != SDC_OK) return st;
    snprintf(name, sizeof(name), "%sprompt_embeds_2", prefix);
    snprintf(mname, sizeof(mname), "%sprompt_embeds_mask_2", prefix);
    int present = sdc_st_set_find(set, name, NULL) != NULL;
    if (!present) return SDC_OK;
    if (dim_2 == 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "%s: has '%s' but the model has no ByT5 input (text_embed_2_dim)",
                             path, name);
    st = load_embeds(path, set, name, dim_2, &p->embeds_2, &p->n_2, err);
    if (st == SDC_OK) st = load_mask(path, set, mname, p->n_2, &p->mask_2, err);
    return st;
}

sdc_status_t sdc_embeds_load(sdc_embeds_t *e, const char *path, int64_t dim, int64_t dim_2,
                             sdc_error_t *err)
{
    sdc_st_set_t set;
    memset(e, 0, sizeof(*e));
    sdc_status_t st = sdc_st_set_open(&set, path, err);
    if (st != SDC_OK) return st;
    st = load_part(path, &set, "", dim, dim_2, &e->pos, err);
    if (st == SDC_OK && sdc_st_set_find(&set, "negative_prompt_embeds", NULL)) {
        e->has_neg = 1;
        st = load_part(path, &set, "negative_", dim, dim_2, &e->neg, err);
    }
    sdc_st_set_close(&set);
    if (st != SDC_OK) sdc_embeds_free(e);
    return st;
}

static void part_free(sdc_embeds_part_t *p)
{
    free(p->embeds);
    free(p->embeds_2);
    free(p->mask);
    free(p->mask_2);
    memset(p, 0, sizeof(*p));
}

void sdc_embeds_free(sdc_embeds_t *e)
{
    part_free(&e->pos);
    part_free(&e->neg);
    e->has_neg = 0;
}

void sdc_embeds_cond(const sdc_embeds_part_t *part, sdc_text_cond_t *c)
{
    c->embeds = part->embeds;
    c->mask = part->mask;
    c->n = part->n;
    c->embeds_2 = part->embeds_2;
    c->mask_2 = part->mask_2;
    c->n_2 = part->embeds_2 ? part->n_2 : 0;
}

/* Appends one part's tensors (masks widened to I64) to the lists. */
static sdc_status_t add_part(const sdc_embeds_part_t *p, const char *prefix, char names[8][64],
                             sdc_tensor_t *ts, int64_t **masks, size_t *n, sdc_error_t *err)
{
    const float *emb[2] = {p->embeds, p->embeds_2};
    const uint8_t *msk[2] = {p->mask, p->mask_2};
    int64_t len[2] = {p->n, p->n_2}, dims[2] = {p->dim, p->dim_2};
    for (int k = 0; k < 2; k++) {
        if (!emb[k]) continue;
        const char *sfx = k ? "_2" : "";
        int64_t es[3] = {1, len[k], dims[k]}, ms[2] = {1, len[k]};
        snprintf(names[*n], 64, "%sprompt_embeds%s", prefix, sfx);
        sdc_tensor_init(&ts[*n], SDC_DTYPE_F32, 3, es, (void *)emb[k]);
        (*n)++;
        int64_t *m = malloc((size_t)len[k] * sizeof(int64_t));
        if (!m) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
        for (int64_t i = 0; i < len[k]; i++) m[i] = msk[k][i];
        masks[*n] = m;
        snprintf(names[*n], 64, "%sprompt_embeds_mask%s", prefix, sfx);
        sdc_tensor_init(&ts[*n], SDC_DTYPE_I64, 2, ms, m);
        (*n)++;
    }
    return SDC_OK;
}

sdc_status_t sdc_embeds_save(const sdc_embeds_t *e, const char *path, sdc_error_t *err)
{
    char names[8][64];
    const char *name_ptrs[8];
    sdc_tensor_t ts[8];
    int64_t *masks[8] = {0};
    size_t n = 0;
    sdc_status_t st = add_part(&e->pos, "", names, ts, masks, &n, err);
    if (st == SDC_OK && e->has_neg) st = add_part(&e->neg, "negative_", names, ts, masks, &n, err);
    if (st == SDC_OK) {
        for (size_t i = 0; i < n; i++) name_ptrs[i] = names[i];
        st = sdc_st_write(path, n, name_ptrs, ts, err);
    }
    for (size_t i = 0; i < 8; i++) free(masks[i]);
    return st;
}
