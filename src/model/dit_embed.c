/*
 * dit_embed.c: the DiT's stage-0 embeddings: time (+ guidance, + meanflow
 * timestep_r) embedding, the patch embedder, the LLM token refiner
 * (context_embedder), the ByT5 projection (context_embedder_2) and the text
 * token order the blocks see: [valid ByT5, valid LLM, padded ByT5, padded
 * LLM], as in diffusers.
 *
 * The token refiner's self-attention mask in diffusers is m[i] & m[j], with
 * column 0 forced true: a valid query sees the valid keys plus key 0, a
 * padded query sees key 0 alone. Here the queries are split into those two
 * groups, two attention calls per refiner block: the valid ones over all
 * keys with the key mask (valid | token 0), the padded ones over the single
 * key of token 0. Every row then equals diffusers', padded ones included,
 * which matters because a padded token 0 is a key of the valid rows in the
 * next refiner block.
 *
 * trim_text drops the padded tokens altogether. That is exact because every
 * block masks padded text keys and the refiner's valid rows depend on no
 * padded token but token 0. So when token 0 is padded, trimmed mode still
 * runs the refiner over token 0 followed by the valid tokens, and drops row 0
 * afterwards.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dit_internal.h"

#define DIT_EMBED_EPS 1e-6f /* refiner LayerNorms */
#define DIT_BYT5_EPS 1e-5f  /* nn.LayerNorm default in the ByT5 projection */
#define DIT_MAX_TEXT (INT64_C(1) << 20)

typedef struct {
    int64_t n_llm_valid;
    int64_t n_b5, n_b5_valid; /* ByT5 tokens taken (0 when unused) and valid ones */
    int64_t n_txt;            /* text rows of the sample */
    int masked;               /* the sample keeps padded tokens and a text mask */
} text_plan_t;

static int valid_at(const uint8_t *mask, int64_t i)
{
    return !mask || mask[i];
}

static int64_t count_valid(const uint8_t *mask, int64_t n)
{
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++) c += valid_at(mask, i);
    return c;
}

/* ---- weights -------------------------------------------------------------- */

static sdc_status_t mlp2_load(sdc_dit_t *m, sdc_dit_mlp2_t *w, int64_t in, const char *prefix,
                              sdc_error_t *err)
{
    const int64_t h = m->hidden;
    sdc_status_t st = sdc_dit_load_linear(m, &w->l1, h, in, err, "%s.linear_1", prefix);
    if (st != SDC_OK) return st;
    return sdc_dit_load_linear(m, &w->l2, h, h, err, "%s.linear_2", prefix);
}

static sdc_status_t refiner_load(sdc_dit_t *m, sdc_dit_refiner_block_t *w, int i,
                                 sdc_error_t *err)
{
    const int64_t h = m->hidden, f = m->refiner_mlp_dim;
    const char *p = "context_embedder.token_refiner.refiner_blocks";
    sdc_status_t st;
    if ((st = sdc_dit_load_vec(m, &w->norm1_w, h, err, "%s.%d.norm1.weight", p, i)) ||
        (st = sdc_dit_load_vec(m, &w->norm1_b, h, err, "%s.%d.norm1.bias", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->to_q, h, h, err, "%s.%d.attn.to_q", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->to_k, h, h, err, "%s.%d.attn.to_k", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->to_v, h, h, err, "%s.%d.attn.to_v", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->to_out, h, h, err, "%s.%d.attn.to_out.0", p, i)) ||
        (st = sdc_dit_load_vec(m, &w->norm2_w, h, err, "%s.%d.norm2.weight", p, i)) ||
        (st = sdc_dit_load_vec(m, &w->norm2_b, h, err, "%s.%d.norm2.bias", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->ff_in, f, h, err, "%s.%d.ff.net.0.proj", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->ff_out, h, f, err, "%s.%d.ff.net.2", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->ada, 2 * h, h, err, "%s.%d.norm_out.linear", p, i)))
        return st;
    return SDC_OK;
}

static sdc_status_t x_embed_load(sdc_dit_t *m, sdc_error_t *err)
{
    const sdc_dit_config_t *c = &m->cfg;
    sdc_dit_linear_t *l = &m->emb.x_embed;
    const int64_t h = m->hidden;
    /* The conv weight h x C x ph x pw is, row-major, the h x (C*ph*pw) matrix
     * of a linear layer over patches flattened in (c, i, j) order; a Conv3d
     * weight h x C x 1 x ph x pw (3-D patches of one frame) is the same
     * matrix. */
    const int64_t shape2[4] = {h, c->in_channels, c->patch_size[0], c->patch_size[1]};
    const int64_t shape3[5] = {h, c->in_channels, 1, c->patch_size[0], c->patch_size[1]};
    l->in = c->in_channels * c->patch_size[0] * c->patch_size[1];
    l->out = h;
    sdc_status_t st = c->patch_3d ? sdc_weights_load(&m->w, "x_embedder.proj.weight", 5, shape3,
                                                     &l->w.w, err)
                                  : sdc_weights_load(&m->w, "x_embedder.proj.weight", 4, shape2,
                                                     &l->w.w, err);
    if (st != SDC_OK) return st;
    return sdc_weights_load(&m->w, "x_embedder.proj.bias", 1, &h, &l->b, err);
}

/* The projection's hidden width is fixed inside diffusers (2048) rather than
 * in config.json, so it is read from linear_1's shape. */
static sdc_status_t byt5_width(sdc_dit_t *m, int64_t *width, sdc_error_t *err)
{
    static const char *name = "context_embedder_2.linear_1.weight";
    const sdc_st_file_t *file;
    const sdc_st_entry_t *e = sdc_st_set_find(&m->w.st, name, &file);
    if (!e)
        return sdc_error_set(err, SDC_ERR_NOT_FOUND, "no tensor '%s' (text_embed_2_dim is "
                             "%lld)", name, (long long)m->cfg.text_embed_2_dim);
    if (e->ndim != 2 || e->shape[1] != m->cfg.text_embed_2_dim || e->shape[0] < 1 ||
        e->shape[0] > SDC_DIT_BYT5_MAX_HIDDEN)
        return sdc_error_set(err, SDC_ERR_SHAPE,
                             "'%s' has %d dims [%lld, %lld], expected [1..%d, "
                             "text_embed_2_dim %lld]", name, e->ndim, (long long)e->shape[0],
                             (long long)(e->ndim > 1 ? e->shape[1] : 0),
                             SDC_DIT_BYT5_MAX_HIDDEN, (long long)m->cfg.text_embed_2_dim);
    *width = e->shape[0];
    return SDC_OK;
}

static sdc_status_t byt5_load(sdc_dit_t *m, sdc_error_t *err)
{
    sdc_dit_embed_w_t *e = &m->emb;
    const int64_t d2 = m->cfg.text_embed_2_dim;
    sdc_status_t st = byt5_width(m, &e->byt5_hidden, err);
    const int64_t hb = e->byt5_hidden;
    e->has_byt5 = 1;
    if (st ||
        (st = sdc_dit_load_vec(m, &e->byt5_norm_w, d2, err, "context_embedder_2.norm.weight")) ||
        (st = sdc_dit_load_vec(m, &e->byt5_norm_b, d2, err, "context_embedder_2.norm.bias")) ||
        (st = sdc_dit_load_linear(m, &e->byt5_1, hb, d2, err, "context_embedder_2.linear_1")) ||
        (st = sdc_dit_load_linear(m, &e->byt5_2, hb, hb, err, "context_embedder_2.linear_2")) ||
        (st = sdc_dit_load_linear(m, &e->byt5_3, m->hidden, hb, err,
                                  "context_embedder_2.linear_3")))
        return st;
    return SDC_OK;
}

sdc_status_t sdc_dit_embed_load(sdc_dit_t *m, sdc_error_t *err)
{
    const sdc_dit_config_t *c = &m->cfg;
    sdc_dit_embed_w_t *e = &m->emb;
    const int64_t d = c->text_embed_dim, tf = SDC_DIT_TIME_FEATURES;
    sdc_status_t st;
    if ((st = x_embed_load(m, err)) ||
        (st = mlp2_load(m, &e->time, tf, "time_guidance_embed.timestep_embedder", err)) ||
        (c->use_meanflow &&
         (st = mlp2_load(m, &e->time_r, tf, "time_guidance_embed.timestep_embedder_r", err))) ||
        (c->guidance_embeds &&
         (st = mlp2_load(m, &e->guidance, tf, "time_guidance_embed.guidance_embedder", err))) ||
        (st = mlp2_load(m, &e->ctx_time, tf,
                        "context_embedder.time_text_embed.timestep_embedder", err)) ||
        (st = mlp2_load(m, &e->ctx_text, d, "context_embedder.time_text_embed.text_embedder",
                        err)) ||
        (st = sdc_dit_load_linear(m, &e->ctx_proj_in, m->hidden, d, err,
                                  "context_embedder.proj_in")) ||
        (c->text_embed_2_dim > 0 && (st = byt5_load(m, err))))
        return st;
    e->refiner = calloc((size_t)c->num_refiner_layers + 1, sizeof(*e->refiner));
    if (!e->refiner) return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    for (int i = 0; i < (int)c->num_refiner_layers; i++)
        if ((st = refiner_load(m, &e->refiner[i], i, err)) != SDC_OK) return st;
    return SDC_OK;
}

/* ---- time embedding ------------------------------------------------------- */

/* diffusers Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0), in
 * torch's float32 order: exponent = (-ln(10000) * i) / 128, freq =
 * exp(exponent), arg = t * freq, features = [cos(arg), sin(arg)]. */
static void time_features(float t, float *out)
{
    const int half = SDC_DIT_TIME_FEATURES / 2;
    const float neg_log_period = (float)-log(10000.0);
    for (int i = 0; i < half; i++) {
        const float freq = expf(neg_log_period * (float)i / (float)half);
        const float arg = t * freq;
        out[i] = cosf(arg);
        out[half + i] = sinf(arg);
    }
}

/* out = l2(silu(l1(x))) for one vector; tmp: l1.out floats. */
static void mlp2(sdc_dit_t *m, const sdc_dit_mlp2_t *w, const float *x, float *out, float *tmp)
{
    sdc_dit_linear(m, &w->l1, tmp, w->l1.out, x, w->l1.in, 1);
    m->be->ops->silu(m->be, tmp, tmp, w->l1.out);
    sdc_dit_linear(m, &w->l2, out, w->l2.out, tmp, w->l2.in, 1);
}

/* TimestepEmbedding(Timesteps(t)); feat: 256 device floats, tmp: hidden. */
static sdc_status_t time_embed(sdc_dit_t *m, const sdc_dit_mlp2_t *w, float t, float *out,
                               float *feat, float *tmp, sdc_error_t *err)
{
    float *host;
    sdc_status_t st = sdc_dit_host_f(m, SDC_DIT_TIME_FEATURES, &host, err);
    if (st != SDC_OK) return st;
    time_features(t, host);
    m->be->ops->upload(m->be, feat, host, SDC_DIT_TIME_FEATURES * sizeof(float));
    mlp2(m, w, feat, out, tmp);
    return SDC_OK;
}

/* HunyuanImageCombinedTimeGuidanceEmbedding. */
static sdc_status_t embed_time(sdc_dit_t *m, const sdc_dit_input_t *in, float *temb,
                               sdc_error_t *err)
{
    sdc_backend_t *be = m->be;
    const sdc_dit_embed_w_t *e = &m->emb;
    const int64_t h = m->hidden;
    float *feat;
    sdc_status_t st = sdc_dit_scratch_f(m, SDC_DIT_SLOT_VEC, SDC_DIT_TIME_FEATURES + 2 * h,
                                        &feat, err);
    if (st != SDC_OK) return st;
    float *tmp = feat + SDC_DIT_TIME_FEATURES, *other = tmp + h;
    st = time_embed(m, &e->time, in->timestep, temb, feat, tmp, err);
    if (st == SDC_OK && m->cfg.use_meanflow &&
        (st = time_embed(m, &e->time_r, in->timestep_r, other, feat, tmp, err)) == SDC_OK)
        /* (emb + emb_r) / 2: halving is exact, so this equals 0.5a + 0.5b. */
        be->ops->axpby(be, temb, 0.5f, temb, 0.5f, other, h);
    if (st == SDC_OK && m->cfg.guidance_embeds &&
        (st = time_embed(m, &e->guidance, in->guidance, other, feat, tmp, err)) == SDC_OK)
        be->ops->add(be, temb, temb, other, h);
    return st;
}

/* ---- image ---------------------------------------------------------------- */

/* HunyuanImagePatchEmbed: conv with kernel = stride = patch, as patchify +
 * linear, written into the sample's image rows. */
static sdc_status_t embed_image(sdc_dit_t *m, const sdc_dit_input_t *in, sdc_dit_sample_t *s,
                                sdc_error_t *err)
{
    sdc_backend_t *be = m->be;
    const sdc_dit_config_t *c = &m->cfg;
    const int64_t C = c->in_channels, H = in->height, W = in->width;
    const int64_t ph = c->patch_size[0], pw = c->patch_size[1], K = C * ph * pw;
    const int64_t n = C * H * W;
    float *buf;
    sdc_status_t st = sdc_dit_scratch_f(m, SDC_DIT_SLOT_IN, 2 * n, &buf, err);
    if (st != SDC_OK) return st;
    const float *latent = in->latent;
    if (!be->ops->host_memory) {
        be->ops->upload(be, buf + n, in->latent, (size_t)n * sizeof(float));
        latent = buf + n;
    }
    /* patches[gy][gx][c][i][j] = latent[c][gy*ph + i][gx*pw + j] */
    const int64_t shape[5] = {s->grid_h, s->grid_w, C, ph, pw};
    const int64_t dst_stride[5] = {s->grid_w * K, K, ph * pw, pw, 1};
    const int64_t src_stride[5] = {ph * W, pw, H * W, W, 1};
    be->ops->copy_strided(be, buf, latent, 5, shape, dst_stride, src_stride);
    sdc_dit_linear(m, &m->emb.x_embed, s->x, m->hidden, buf, K, s->n_img);
    return SDC_OK;
}

/* ---- LLM text: token refiner ---------------------------------------------- */

/* Which rows of the refiner see which keys (see the top of this file):
 * queries [valid0, valid0 + n_valid) attend every key through key_mask,
 * queries [pad0, pad0 + n_pad) attend key `key0` alone. */
typedef struct {
    int64_t valid0, n_valid, pad0, n_pad, key0;
    const uint8_t *key_mask; /* device, or NULL */
} refiner_attn_t;

/* HunyuanImageIndividualTokenRefinerBlock on x (L x hidden); silu_c is
 * SiLU of the refiner's conditioning vector. */
static void refiner_block(sdc_dit_t *m, const sdc_dit_refiner_block_t *w, float *x, int64_t L,
                          const float *silu_c, const refiner_attn_t *ra,
                          const sdc_dit_work_t *wk)
{
    sdc_backend_t *be = m->be;
    const int64_t h = m->hidden, f = m->refiner_mlp_dim;
    const int64_t H = m->cfg.num_attention_heads, Dh = m->cfg.attention_head_dim;
    const float scale = (float)(1.0 / sqrt((double)Dh));
    float *gate_msa = wk->mod, *gate_mlp = wk->mod + h;
    sdc_dit_linear(m, &w->ada, wk->mod, 2 * h, silu_c, h, 1);

    be->ops->layer_norm(be, wk->nrm, x, w->norm1_w, w->norm1_b, L, h, DIT_EMBED_EPS);
    sdc_dit_linear(m, &w->to_q, wk->q, h, wk->nrm, h, L);
    sdc_dit_linear(m, &w->to_k, wk->k, h, wk->nrm, h, L);
    sdc_dit_linear(m, &w->to_v, wk->v, h, wk->nrm, h, L);
    be->ops->attention(be, wk->big + ra->valid0 * h, h, wk->q + ra->valid0 * h, h, wk->k, h,
                       wk->v, h, ra->n_valid, L, H, Dh, ra->key_mask, scale);
    if (ra->n_pad > 0)
        be->ops->attention(be, wk->big + ra->pad0 * h, h, wk->q + ra->pad0 * h, h,
                           wk->k + ra->key0 * h, h, wk->v + ra->key0 * h, h, ra->n_pad, 1, H,
                           Dh, NULL, scale);
    sdc_dit_linear(m, &w->to_out, wk->q, h, wk->big, h, L);
    be->ops->gate_add(be, x, gate_msa, wk->q, h, L, h);

    be->ops->layer_norm(be, wk->nrm, x, w->norm2_w, w->norm2_b, L, h, DIT_EMBED_EPS);
    sdc_dit_linear(m, &w->ff_in, wk->big, f, wk->nrm, h, L);
    be->ops->silu(be, wk->big, wk->big, L * f);
    sdc_dit_linear(m, &w->ff_out, wk->q, h, wk->big, f, L);
    be->ops->gate_add(be, x, gate_mlp, wk->q, h, L, h);
}

/* The refiner's rows on the host: which input token each row is (valid
 * tokens in order, then padded ones or, trimmed, only a padded token 0
 * first), the attention split, and the key mask of the valid queries. */
typedef struct {
    int64_t *order;
    uint8_t *key_mask; /* NULL when every key is valid */
    double *sum;
    int64_t rows;
    int extra;         /* trimmed: row 0 is padded token 0, kept as a key */
    refiner_attn_t attn;
} llm_rows_t;

static void llm_rows_free(llm_rows_t *r)
{
    free(r->order);
    free(r->key_mask);
    free(r->sum);
}

static sdc_status_t llm_rows_plan(const sdc_dit_t *m, const sdc_dit_input_t *in,
                                  const text_plan_t *p, llm_rows_t *r, sdc_error_t *err)
{
    const uint8_t *mask = in->text_mask;
    const int64_t n = in->n_text;
    memset(r, 0, sizeof(*r));
    r->extra = in->trim_text && !valid_at(mask, 0);
    r->rows = in->trim_text ? r->extra + p->n_llm_valid : n;
    const int need_mask = !in->trim_text && p->n_llm_valid < n;
    r->order = malloc((size_t)r->rows * sizeof(*r->order));
    r->key_mask = need_mask ? malloc((size_t)r->rows) : NULL;
    r->sum = calloc((size_t)m->cfg.text_embed_dim, sizeof(*r->sum));
    if (!r->order || (need_mask && !r->key_mask) || !r->sum) {
        llm_rows_free(r);
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    }
    int64_t k = 0;
    if (r->extra) r->order[k++] = 0;
    for (int64_t i = 0; i < n; i++)
        if (valid_at(mask, i)) r->order[k++] = i;
    if (!in->trim_text)
        for (int64_t i = 0; i < n; i++)
            if (!valid_at(mask, i)) r->order[k++] = i;
    if (r->key_mask)
        for (k = 0; k < r->rows; k++)
            r->key_mask[k] = valid_at(mask, r->order[k]) || r->order[k] == 0;
    const int64_t nv = p->n_llm_valid;
    if (in->trim_text)
        r->attn = (refiner_attn_t){.valid0 = r->extra, .n_valid = nv, .pad0 = 0,
                                   .n_pad = r->extra, .key0 = 0};
    else /* a padded token 0 is the first padded row */
        r->attn = (refiner_attn_t){.valid0 = 0, .n_valid = nv, .pad0 = nv, .n_pad = n - nv,
                                   .key0 = valid_at(mask, 0) ? 0 : nv};
    return SDC_OK;
}

/* Gathers the refiner's input rows and the masked mean of the valid tokens
 * (the pooled projection input) into host (rows x D, then D). */
static void llm_rows_gather(const sdc_dit_t *m, const sdc_dit_input_t *in, const text_plan_t *p,
                            llm_rows_t *r, float *host)
{
    const int64_t D = m->cfg.text_embed_dim;
    for (int64_t k = 0; k < r->rows; k++)
        memcpy(host + k * D, in->text + r->order[k] * D, (size_t)D * sizeof(float));
    for (int64_t i = 0; i < in->n_text; i++) {
        if (!valid_at(in->text_mask, i)) continue;
        const float *t = in->text + i * D;
        for (int64_t d = 0; d < D; d++) r->sum[d] += t[d];
    }
    float *pooled = host + r->rows * D;
    for (int64_t d = 0; d < D; d++) pooled[d] = (float)(r->sum[d] / (double)p->n_llm_valid);
}

/* CombinedTimestepTextProjEmbeddings(timestep, pooled) -> SiLU of it, the
 * only form the refiner blocks use; vec: 256 + 3 x hidden device floats. */
static sdc_status_t refiner_cond(sdc_dit_t *m, float timestep, const float *pooled, float *vec,
                                 float **silu_c, sdc_error_t *err)
{
    sdc_backend_t *be = m->be;
    const int64_t h = m->hidden;
    float *feat = vec, *tmp = feat + SDC_DIT_TIME_FEATURES, *c = tmp + h, *pp = c + h;
    sdc_status_t st = time_embed(m, &m->emb.ctx_time, timestep, c, feat, tmp, err);
    if (st != SDC_OK) return st;
    mlp2(m, &m->emb.ctx_text, pooled, pp, tmp);
    be->ops->add(be, c, c, pp, h);
    be->ops->silu(be, c, c, h);
    *silu_c = c;
    return SDC_OK;
}

/* Copies the refiner's rows to their places in the sample's text rows:
 * valid rows after the valid ByT5 rows, padded rows (untrimmed) after the
 * padded ByT5 rows. */
static void llm_rows_place(sdc_dit_t *m, const sdc_dit_input_t *in, const text_plan_t *p,
                           const llm_rows_t *r, const float *state, float *txt)
{
    sdc_backend_t *be = m->be;
    const int64_t h = m->hidden, nv = p->n_llm_valid;
    const size_t row = (size_t)h * sizeof(float);
    be->ops->copy(be, txt + p->n_b5_valid * h, state + r->extra * h, (size_t)nv * row);
    if (!in->trim_text && r->rows > nv)
        be->ops->copy(be, txt + (p->n_b5 + nv) * h, state + nv * h,
                      (size_t)(r->rows - nv) * row);
}

/* HunyuanImageTokenRefiner, written into the LLM rows of the sample. */
static sdc_status_t embed_llm(sdc_dit_t *m, const sdc_dit_input_t *in, const text_plan_t *p,
                              sdc_dit_sample_t *s, sdc_error_t *err)
{
    sdc_backend_t *be = m->be;
    const int64_t h = m->hidden, D = m->cfg.text_embed_dim;
    float *txt = s->x + s->n_img * h; /* the sample's text rows */
    llm_rows_t r;
    sdc_status_t st = llm_rows_plan(m, in, p, &r, err);
    if (st != SDC_OK) return st;
    const int64_t L = r.rows;
    /* Trimmed without an extra row, the refiner's rows are exactly the
     * sample's valid LLM rows: it works there directly. */
    const int direct = in->trim_text && !r.extra;
    sdc_dit_work_t wk;
    float *rows, *state = txt + p->n_b5_valid * h, *host, *silu_c;
    uint8_t *dmask = NULL;
    if ((st = sdc_dit_work_get(m, L, m->refiner_mlp_dim, SDC_DIT_TIME_FEATURES + 3 * h, &wk,
                               err)) ||
        (st = sdc_dit_scratch_f(m, SDC_DIT_SLOT_IN, (L + 1) * D, &rows, err)) ||
        (!direct && (st = sdc_dit_scratch_f(m, SDC_DIT_SLOT_TXT, L * h, &state, err))) ||
        (r.key_mask && (st = sdc_dit_scratch_u8(m, SDC_DIT_SLOT_MASK, L, &dmask, err))) ||
        (st = sdc_dit_host_f(m, (L + 1) * D, &host, err)))
        goto out;
    llm_rows_gather(m, in, p, &r, host);
    be->ops->upload(be, rows, host, (size_t)((L + 1) * D) * sizeof(float));
    if (dmask) {
        be->ops->upload(be, dmask, r.key_mask, (size_t)L);
        m->mask_ones = 0;
    }
    r.attn.key_mask = dmask;
    if ((st = refiner_cond(m, in->timestep, rows + L * D, wk.vec, &silu_c, err)) != SDC_OK)
        goto out;

    sdc_dit_linear(m, &m->emb.ctx_proj_in, state, h, rows, D, L);
    for (int i = 0; i < (int)m->cfg.num_refiner_layers; i++)
        refiner_block(m, &m->emb.refiner[i], state, L, silu_c, &r.attn, &wk);
    if (!direct) llm_rows_place(m, in, p, &r, state, txt);
out:
    llm_rows_free(&r);
    return st;
}

/* ---- ByT5 text: projection ------------------------------------------------ */

/* HunyuanImageByT5TextProjection: LayerNorm, linear, GELU, linear, GELU,
 * linear; valid rows go first in the text, padded ones after the valid LLM
 * rows. */
static sdc_status_t embed_byt5(sdc_dit_t *m, const sdc_dit_input_t *in, const text_plan_t *p,
                               sdc_dit_sample_t *s, sdc_error_t *err)
{
    sdc_backend_t *be = m->be;
    const sdc_dit_embed_w_t *e = &m->emb;
    const int64_t h = m->hidden, D = m->cfg.text_embed_2_dim, hb = e->byt5_hidden;
    const int64_t nv = p->n_b5_valid, L = in->trim_text ? nv : p->n_b5;
    if (L == 0) return SDC_OK;
    float *rows, *nrm, *big, *host;
    sdc_status_t st;
    if ((st = sdc_dit_scratch_f(m, SDC_DIT_SLOT_IN, L * D, &rows, err)) ||
        (st = sdc_dit_scratch_f(m, SDC_DIT_SLOT_NRM, L * D, &nrm, err)) ||
        (st = sdc_dit_scratch_f(m, SDC_DIT_SLOT_BIG, 2 * L * hb, &big, err)) ||
        (st = sdc_dit_host_f(m, L * D, &host, err)))
        return st;
    int64_t k = 0; /* valid rows first, then (untrimmed) the padded ones */
    for (int pass = 1; pass >= 0; pass--)
        for (int64_t i = 0; i < in->n_text_2; i++)
            if (valid_at(in->text_mask_2, i) == pass && (pass || !in->trim_text))
                memcpy(host + (k++) * D, in->text_2 + i * D, (size_t)D * sizeof(float));
    be->ops->upload(be, rows, host, (size_t)(L * D) * sizeof(float));

    float *a = big, *b = big + L * hb;
    be->ops->layer_norm(be, nrm, rows, e->byt5_norm_w, e->byt5_norm_b, L, D, DIT_BYT5_EPS);
    sdc_dit_linear(m, &e->byt5_1, a, hb, nrm, D, L);
    be->ops->gelu_erf(be, a, a, L * hb);
    sdc_dit_linear(m, &e->byt5_2, b, hb, a, hb, L);
    be->ops->gelu_erf(be, b, b, L * hb);
    float *txt = s->x + s->n_img * h;
    sdc_dit_linear(m, &e->byt5_3, txt, h, b, hb, nv);
    sdc_dit_linear(m, &e->byt5_3, txt + (nv + p->n_llm_valid) * h, h, b + nv * hb, hb, L - nv);
    return SDC_OK;
}

/* ---- stage ---------------------------------------------------------------- */

static sdc_status_t check_input(const sdc_dit_t *m, const sdc_dit_input_t *in, text_plan_t *p,
                                sdc_error_t *err)
{
    const sdc_dit_config_t *c = &m->cfg;
    memset(p, 0, sizeof(*p));
    if (!in->latent || !in->text)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "no latent or no text embeddings");
    if (in->height < 1 || in->width < 1 || in->height % c->patch_size[0] ||
        in->width % c->patch_size[1])
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "latent %lld x %lld is not a positive multiple of the patch size "
                             "%lld x %lld", (long long)in->height, (long long)in->width,
                             (long long)c->patch_size[0], (long long)c->patch_size[1]);
    if (in->n_text < 1 || in->n_text > DIT_MAX_TEXT || in->n_text_2 < 0 ||
        in->n_text_2 > DIT_MAX_TEXT)
        return sdc_error_set(err, SDC_ERR_RANGE, "text lengths %lld, %lld are outside "
                             "[1, %lld] and [0, %lld]", (long long)in->n_text,
                             (long long)in->n_text_2, (long long)DIT_MAX_TEXT,
                             (long long)DIT_MAX_TEXT);
    if (!isfinite(in->timestep) || (c->use_meanflow && !isfinite(in->timestep_r)) ||
        (c->guidance_embeds && !isfinite(in->guidance)))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "timestep, timestep_r or guidance is "
                             "not finite");
    p->n_llm_valid = count_valid(in->text_mask, in->n_text);
    if (p->n_llm_valid == 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "text_mask marks none of the %lld text tokens valid",
                             (long long)in->n_text);
    /* As in diffusers, ByT5 input is ignored by a model without
     * context_embedder_2. */
    if (m->emb.has_byt5 && in->text_2 && in->n_text_2 > 0) {
        p->n_b5 = in->n_text_2;
        p->n_b5_valid = count_valid(in->text_mask_2, in->n_text_2);
    }
    const int64_t n_valid = p->n_b5_valid + p->n_llm_valid;
    p->n_txt = in->trim_text ? n_valid : p->n_b5 + in->n_text;
    p->masked = p->n_txt > n_valid;
    return SDC_OK;
}

static sdc_status_t upload_text_mask(sdc_dit_t *m, const text_plan_t *p, sdc_dit_sample_t *s,
                                     sdc_error_t *err)
{
    uint8_t *host;
    sdc_status_t st = sdc_dit_host_u8(m, p->n_txt, &host, err);
    if (st != SDC_OK) return st;
    const int64_t n_valid = p->n_b5_valid + p->n_llm_valid;
    memset(host, 1, (size_t)n_valid);
    memset(host + n_valid, 0, (size_t)(p->n_txt - n_valid));
    m->be->ops->upload(m->be, s->txt_mask, host, (size_t)p->n_txt);
    return SDC_OK;
}

sdc_status_t sdc_dit_embed(sdc_dit_t *m, const sdc_dit_input_t *in, sdc_dit_sample_t *s,
                           sdc_error_t *err)
{
    memset(s, 0, sizeof(*s));
    if (!m->has_embed)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "DiT embed: this stage holds blocks [%d, %d) without the "
                             "embedders", m->block_begin, m->block_end);
    text_plan_t p;
    sdc_status_t st = check_input(m, in, &p, err);
    if (st == SDC_OK)
        st = sdc_dit_sample_alloc(m, s, in->height / m->cfg.patch_size[0],
                                  in->width / m->cfg.patch_size[1], p.n_txt, p.masked, err);
    if (st != SDC_OK) return sdc_error_wrap(err, "DiT embed");
    if ((st = embed_time(m, in, s->temb, err)) || (st = embed_image(m, in, s, err)) ||
        (st = embed_llm(m, in, &p, s, err)) || (st = embed_byt5(m, in, &p, s, err)) ||
        (p.masked && (st = upload_text_mask(m, &p, s, err)))) {
        sdc_dit_sample_free(m, s);
        return sdc_error_wrap(err, "DiT embed");
    }
    return SDC_OK;
}
