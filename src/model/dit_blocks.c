/*
 * dit_blocks.c: the dual-stream (HunyuanImageTransformerBlock) and
 * single-stream (HunyuanImageSingleTransformerBlock) blocks, on one sample's
 * activation buffer: image rows first, then text rows.
 *
 * Both work in place on that buffer and in the scratch of sdc_dit_work_t;
 * the dual block's two streams are the two row ranges of the same buffer,
 * so joint attention needs no concatenation. The float32 order of each step
 * follows diffusers (norm, modulate, projections, RMS QK-norm, RoPE on image
 * rows, SDPA, gated residuals).
 */
#include <math.h>
#include <stddef.h>

#include "dit_internal.h"

#define DIT_NORM_EPS 1e-6f

/* Row-range wrappers: a stream may be empty (a text-free sample). */
static void modulate_rows(sdc_backend_t *be, float *x, const float *shift, const float *scale,
                          int64_t rows, int64_t dim)
{
    if (rows > 0) be->ops->modulate(be, x, x, shift, scale, rows, dim);
}

static void gate_rows(sdc_backend_t *be, float *x, const float *gate, const float *r,
                      int64_t rows, int64_t dim)
{
    if (rows > 0) be->ops->gate_add(be, x, gate, r, dim, rows, dim);
}

/* Per-head RMSNorm of `tokens` rows of q or k (hidden = heads x head_dim). */
static void qk_norm(sdc_dit_t *m, float *x, const float *w, int64_t tokens)
{
    const int64_t H = m->cfg.num_attention_heads, Dh = m->cfg.attention_head_dim;
    if (tokens > 0) m->be->ops->rms_norm(m->be, x, x, w, tokens * H, Dh, Dh, DIT_NORM_EPS);
}

static void rope_rows(sdc_dit_t *m, float *x, const sdc_dit_block_io_t *io)
{
    const int64_t H = m->cfg.num_attention_heads, Dh = m->cfg.attention_head_dim;
    m->be->ops->rope(m->be, x, m->hidden, io->cos_, io->sin_, io->n_img, H, Dh);
}

void sdc_dit_attention(sdc_dit_t *m, float *out, int64_t ldo, const sdc_dit_work_t *wk,
                       int64_t L, const uint8_t *key_mask)
{
    const int64_t H = m->cfg.num_attention_heads, Dh = m->cfg.attention_head_dim;
    const int64_t h = m->hidden;
    const float scale = (float)(1.0 / sqrt((double)Dh));
    m->be->ops->attention(m->be, out, ldo, wk->q, h, wk->k, h, wk->v, h, L, L, H, Dh, key_mask,
                          scale);
}

void sdc_dit_dual_block(sdc_dit_t *m, const sdc_dit_dual_w_t *w, const sdc_dit_block_io_t *io,
                        const sdc_dit_work_t *wk)
{
    sdc_backend_t *be = m->be;
    const int64_t h = m->hidden, f = m->mlp_dim;
    const int64_t ni = io->n_img, nt = io->n_txt, L = ni + nt;
    const int64_t ti = ni * h; /* offset of the text rows in an L x hidden buffer */
    float *x = io->x;

    /* AdaLayerNormZero of each stream: shift, scale, gate (msa), shift,
     * scale, gate (mlp). */
    float *mi = wk->mod, *mt = wk->mod + 6 * h;
    sdc_dit_linear(m, &w->norm1, mi, 6 * h, io->silu_temb, h, 1);
    sdc_dit_linear(m, &w->norm1_ctx, mt, 6 * h, io->silu_temb, h, 1);

    be->ops->layer_norm(be, wk->nrm, x, NULL, NULL, L, h, DIT_NORM_EPS);
    modulate_rows(be, wk->nrm, mi, mi + h, ni, h);
    modulate_rows(be, wk->nrm + ti, mt, mt + h, nt, h);

    sdc_dit_linear(m, &w->to_q, wk->q, h, wk->nrm, h, ni);
    sdc_dit_linear(m, &w->to_k, wk->k, h, wk->nrm, h, ni);
    sdc_dit_linear(m, &w->to_v, wk->v, h, wk->nrm, h, ni);
    sdc_dit_linear(m, &w->add_q, wk->q + ti, h, wk->nrm + ti, h, nt);
    sdc_dit_linear(m, &w->add_k, wk->k + ti, h, wk->nrm + ti, h, nt);
    sdc_dit_linear(m, &w->add_v, wk->v + ti, h, wk->nrm + ti, h, nt);
    qk_norm(m, wk->q, w->norm_q, ni);
    qk_norm(m, wk->k, w->norm_k, ni);
    qk_norm(m, wk->q + ti, w->norm_added_q, nt);
    qk_norm(m, wk->k + ti, w->norm_added_k, nt);
    rope_rows(m, wk->q, io);
    rope_rows(m, wk->k, io);
    sdc_dit_attention(m, wk->big, h, wk, L, io->key_mask);

    /* q is free again: it takes the output projections. */
    sdc_dit_linear(m, &w->to_out, wk->q, h, wk->big, h, ni);
    sdc_dit_linear(m, &w->to_add_out, wk->q + ti, h, wk->big + ti, h, nt);
    gate_rows(be, x, mi + 2 * h, wk->q, ni, h);
    gate_rows(be, x + ti, mt + 2 * h, wk->q + ti, nt, h);

    be->ops->layer_norm(be, wk->nrm, x, NULL, NULL, L, h, DIT_NORM_EPS);
    modulate_rows(be, wk->nrm, mi + 3 * h, mi + 4 * h, ni, h);
    modulate_rows(be, wk->nrm + ti, mt + 3 * h, mt + 4 * h, nt, h);
    sdc_dit_linear(m, &w->ff_in, wk->big, f, wk->nrm, h, ni);
    sdc_dit_linear(m, &w->ff_ctx_in, wk->big + ni * f, f, wk->nrm + ti, h, nt);
    be->ops->gelu_tanh(be, wk->big, wk->big, L * f);
    sdc_dit_linear(m, &w->ff_out, wk->q, h, wk->big, f, ni);
    sdc_dit_linear(m, &w->ff_ctx_out, wk->q + ti, h, wk->big + ni * f, f, nt);
    gate_rows(be, x, mi + 5 * h, wk->q, ni, h);
    gate_rows(be, x + ti, mt + 5 * h, wk->q + ti, nt, h);
}

void sdc_dit_single_block(sdc_dit_t *m, const sdc_dit_single_w_t *w,
                          const sdc_dit_block_io_t *io, const sdc_dit_work_t *wk)
{
    sdc_backend_t *be = m->be;
    const int64_t h = m->hidden, f = m->mlp_dim, wide = h + f;
    const int64_t L = io->n_img + io->n_txt;
    float *x = io->x;

    /* AdaLayerNormZeroSingle: shift, scale, gate. */
    float *mod = wk->mod;
    sdc_dit_linear(m, &w->norm, mod, 3 * h, io->silu_temb, h, 1);
    be->ops->layer_norm(be, wk->nrm, x, NULL, NULL, L, h, DIT_NORM_EPS);
    modulate_rows(be, wk->nrm, mod, mod + h, L, h);

    /* proj_out reads cat([attn, gelu(proj_mlp)]) as one L x (h + f) matrix,
     * so both halves are written into `big` in place. The MLP half goes
     * first, and GELU runs over the contiguous span from its first element
     * to its last: that span also covers the attention columns of rows
     * 1..L-1, which the attention below overwrites. One GELU call instead
     * of L, and no copy. */
    sdc_dit_linear(m, &w->proj_mlp, wk->big + h, wide, wk->nrm, h, L);
    be->ops->gelu_tanh(be, wk->big + h, wk->big + h, (L - 1) * wide + f);

    sdc_dit_linear(m, &w->to_q, wk->q, h, wk->nrm, h, L);
    sdc_dit_linear(m, &w->to_k, wk->k, h, wk->nrm, h, L);
    sdc_dit_linear(m, &w->to_v, wk->v, h, wk->nrm, h, L);
    qk_norm(m, wk->q, w->norm_q, L);
    qk_norm(m, wk->k, w->norm_k, L);
    rope_rows(m, wk->q, io);
    rope_rows(m, wk->k, io);
    sdc_dit_attention(m, wk->big, wide, wk, L, io->key_mask);

    sdc_dit_linear(m, &w->proj_out, wk->q, h, wk->big, wide, L);
    gate_rows(be, x, mod + 2 * h, wk->q, L, h);
}

/* ---- weights -------------------------------------------------------------- */

static sdc_status_t dual_load(sdc_dit_t *m, sdc_dit_dual_w_t *w, int i, sdc_error_t *err)
{
    const int64_t h = m->hidden, f = m->mlp_dim, dh = m->cfg.attention_head_dim;
    const char *p = "transformer_blocks";
    sdc_status_t st;
    if ((st = sdc_dit_load_linear(m, &w->norm1, 6 * h, h, err, "%s.%d.norm1.linear", p,
                                  i)) ||
        (st = sdc_dit_load_linear(m, &w->norm1_ctx, 6 * h, h, err,
                                  "%s.%d.norm1_context.linear", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->to_q, h, h, err, "%s.%d.attn.to_q", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->to_k, h, h, err, "%s.%d.attn.to_k", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->to_v, h, h, err, "%s.%d.attn.to_v", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->add_q, h, h, err, "%s.%d.attn.add_q_proj", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->add_k, h, h, err, "%s.%d.attn.add_k_proj", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->add_v, h, h, err, "%s.%d.attn.add_v_proj", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->to_out, h, h, err, "%s.%d.attn.to_out.0", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->to_add_out, h, h, err, "%s.%d.attn.to_add_out", p,
                                  i)) ||
        (st = sdc_dit_load_vec(m, &w->norm_q, dh, err, "%s.%d.attn.norm_q.weight", p, i)) ||
        (st = sdc_dit_load_vec(m, &w->norm_k, dh, err, "%s.%d.attn.norm_k.weight", p, i)) ||
        (st = sdc_dit_load_vec(m, &w->norm_added_q, dh, err, "%s.%d.attn.norm_added_q.weight",
                               p, i)) ||
        (st = sdc_dit_load_vec(m, &w->norm_added_k, dh, err, "%s.%d.attn.norm_added_k.weight",
                               p, i)) ||
        (st = sdc_dit_load_linear(m, &w->ff_in, f, h, err, "%s.%d.ff.net.0.proj", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->ff_out, h, f, err, "%s.%d.ff.net.2", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->ff_ctx_in, f, h, err,
                                  "%s.%d.ff_context.net.0.proj", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->ff_ctx_out, h, f, err, "%s.%d.ff_context.net.2", p,
                                  i)))
        return st;
    return SDC_OK;
}

static sdc_status_t single_load(sdc_dit_t *m, sdc_dit_single_w_t *w, int i, sdc_error_t *err)
{
    const int64_t h = m->hidden, f = m->mlp_dim, dh = m->cfg.attention_head_dim;
    const char *p = "single_transformer_blocks";
    sdc_status_t st;
    if ((st = sdc_dit_load_linear(m, &w->norm, 3 * h, h, err, "%s.%d.norm.linear", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->to_q, h, h, err, "%s.%d.attn.to_q", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->to_k, h, h, err, "%s.%d.attn.to_k", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->to_v, h, h, err, "%s.%d.attn.to_v", p, i)) ||
        (st = sdc_dit_load_vec(m, &w->norm_q, dh, err, "%s.%d.attn.norm_q.weight", p, i)) ||
        (st = sdc_dit_load_vec(m, &w->norm_k, dh, err, "%s.%d.attn.norm_k.weight", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->proj_mlp, f, h, err, "%s.%d.proj_mlp", p, i)) ||
        (st = sdc_dit_load_linear(m, &w->proj_out, h, h + f, err, "%s.%d.proj_out", p, i)))
        return st;
    return SDC_OK;
}

sdc_status_t sdc_dit_blocks_load(sdc_dit_t *m, sdc_error_t *err)
{
    const int n_dual = (int)m->cfg.num_layers;
    for (int b = m->block_begin; b < m->block_end; b++) {
        sdc_status_t st = b < n_dual ? dual_load(m, &m->dual[b], b, err)
                                     : single_load(m, &m->single[b - n_dual], b - n_dual, err);
        if (st != SDC_OK) return st;
    }
    return SDC_OK;
}
