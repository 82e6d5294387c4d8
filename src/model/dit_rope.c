/*
 * dit_rope.c: 2D rotary position tables for the image tokens
 * (HunyuanImageRotaryPosEmbed), computed on the host and cached on the
 * device per grid size.
 *
 * diffusers calls get_1d_rotary_pos_embed with its default float32
 * frequencies, so every step here is float32 in the same order:
 * freq_k = 1 / theta^(2k / d), angle = pos * freq_k, then cos/sin,
 * each repeated for the two elements of a pair (repeat_interleave_real).
 * The row axis takes the first rope_axes_dim[0] columns, the column axis
 * the rest; with a frame axis (rope_frame_dim, the refiner's 3-D RoPE) its
 * columns come first and hold the identity of frame position 0. The Seedream centre-aligned mode only changes pos; docs/rope.md
 * derives it.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dit_internal.h"

sdc_status_t sdc_dit_rope_positions(const sdc_dit_config_t *c, int axis, int64_t n, float *pos,
                                    sdc_error_t *err)
{
    if (axis < 0 || axis > 1 || n < 1)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "RoPE positions: axis %d, %lld tokens",
                             axis, (long long)n);
    if (!c->rope_centered) {
        for (int64_t i = 0; i < n; i++) pos[i] = (float)i;
        return SDC_OK;
    }
    /* Token i covers [i, i+1) of n; mapped onto the base grid's B tokens its
     * centre i + 0.5 lands at (i + 0.5) * B / n, i.e. the index
     * (i + 0.5) * B / n - 0.5. n == B gives exactly i (double, then float). */
    const double scale = (double)c->rope_base_grid[axis] / (double)n;
    for (int64_t i = 0; i < n; i++) pos[i] = (float)(((double)i + 0.5) * scale - 0.5);
    return SDC_OK;
}

/* cos/sin of pos[i] * freq_k for one axis: out[i * (d/2) + k]. */
static void axis_table(const float *pos, int64_t n, int64_t d, double theta, float *cos_out,
                       float *sin_out)
{
    const int64_t half = d / 2;
    for (int64_t k = 0; k < half; k++) {
        const float e = (float)(2 * k) / (float)d;
        const float freq = 1.0f / powf((float)theta, e);
        for (int64_t i = 0; i < n; i++) {
            const float a = pos[i] * freq;
            cos_out[i * half + k] = cosf(a);
            sin_out[i * half + k] = sinf(a);
        }
    }
}

/* Interleaves one axis' half-width table into columns [off, off + d). */
static void scatter_axis(float *out, int64_t off, const float *t, int64_t d)
{
    for (int64_t k = 0; k < d / 2; k++) out[off + 2 * k] = out[off + 2 * k + 1] = t[k];
}

sdc_status_t sdc_dit_rope_tables(const sdc_dit_config_t *c, int64_t grid_h, int64_t grid_w,
                                 float *cos_out, float *sin_out, sdc_error_t *err)
{
    if (grid_h < 1 || grid_w < 1)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "RoPE tables: grid %lld x %lld",
                             (long long)grid_h, (long long)grid_w);
    const int64_t d0 = c->rope_axes_dim[0], d1 = c->rope_axes_dim[1];
    const int64_t dt = c->rope_frame_dim, dh = c->attention_head_dim;
    if (dt + d0 + d1 != dh || dt % 2 || d0 % 2 || d1 % 2)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "RoPE tables: axes dims %lld + %lld + "
                             "%lld do not make head_dim %lld", (long long)dt, (long long)d0,
                             (long long)d1, (long long)dh);
    const size_t n_pos = (size_t)(grid_h + grid_w);
    const size_t n_tab = (size_t)(grid_h * (d0 / 2) + grid_w * (d1 / 2));
    float *buf = malloc((n_pos + 2 * n_tab) * sizeof(float));
    if (!buf) return sdc_error_set(err, SDC_ERR_NOMEM, "RoPE tables: out of memory");
    float *pos_r = buf, *pos_c = buf + grid_h;
    float *cr = buf + n_pos, *sr = cr + grid_h * (d0 / 2);
    float *cc = sr + grid_h * (d0 / 2), *sc = cc + grid_w * (d1 / 2);
    sdc_status_t st = sdc_dit_rope_positions(c, 0, grid_h, pos_r, err);
    if (st == SDC_OK) st = sdc_dit_rope_positions(c, 1, grid_w, pos_c, err);
    if (st != SDC_OK) {
        free(buf);
        return st;
    }
    axis_table(pos_r, grid_h, d0, c->rope_theta, cr, sr);
    axis_table(pos_c, grid_w, d1, c->rope_theta, cc, sc);
    for (int64_t r = 0; r < grid_h; r++) {
        for (int64_t q = 0; q < grid_w; q++) {
            const int64_t t = r * grid_w + q;
            /* The frame axis at position 0: cos(0) = 1, sin(0) = 0. */
            for (int64_t k = 0; k < dt; k++) {
                cos_out[t * dh + k] = 1.0f;
                sin_out[t * dh + k] = 0.0f;
            }
            scatter_axis(cos_out + t * dh, dt, cr + r * (d0 / 2), d0);
            scatter_axis(sin_out + t * dh, dt, sr + r * (d0 / 2), d0);
            scatter_axis(cos_out + t * dh, dt + d0, cc + q * (d1 / 2), d1);
            scatter_axis(sin_out + t * dh, dt + d0, sc + q * (d1 / 2), d1);
        }
    }
    free(buf);
    return SDC_OK;
}

static void entry_free(sdc_dit_t *m, sdc_dit_rope_entry_t *e)
{
    if (e->cos_) m->be->ops->free(m->be, e->cos_);
    if (e->sin_) m->be->ops->free(m->be, e->sin_);
    memset(e, 0, sizeof(*e));
}

void sdc_dit_rope_cache_free(sdc_dit_t *m)
{
    for (int i = 0; i < SDC_DIT_ROPE_CACHE; i++) entry_free(m, &m->rope[i]);
}

sdc_status_t sdc_dit_rope_get(sdc_dit_t *m, int64_t grid_h, int64_t grid_w, const float **cos_,
                              const float **sin_, sdc_error_t *err)
{
    sdc_dit_rope_entry_t *victim = &m->rope[0];
    for (int i = 0; i < SDC_DIT_ROPE_CACHE; i++) {
        sdc_dit_rope_entry_t *e = &m->rope[i];
        if (e->cos_ && e->grid_h == grid_h && e->grid_w == grid_w) {
            e->last_use = ++m->rope_clock;
            *cos_ = e->cos_;
            *sin_ = e->sin_;
            return SDC_OK;
        }
        if (!e->cos_ || (victim->cos_ && e->last_use < victim->last_use)) victim = e;
    }
    entry_free(m, victim);
    sdc_backend_t *be = m->be;
    const int64_t n = grid_h * grid_w * m->cfg.attention_head_dim;
    const size_t bytes = (size_t)n * sizeof(float);
    float *host;
    sdc_status_t st = sdc_dit_host_f(m, 2 * n, &host, err);
    if (st == SDC_OK) st = sdc_dit_rope_tables(&m->cfg, grid_h, grid_w, host, host + n, err);
    if (st != SDC_OK) return st;
    victim->cos_ = be->ops->alloc(be, bytes);
    victim->sin_ = be->ops->alloc(be, bytes);
    if (!victim->cos_ || !victim->sin_) {
        entry_free(m, victim);
        return sdc_error_set(err, SDC_ERR_NOMEM, "RoPE tables: cannot allocate %zu bytes",
                             2 * bytes);
    }
    be->ops->upload(be, victim->cos_, host, bytes);
    be->ops->upload(be, victim->sin_, host + n, bytes);
    victim->grid_h = grid_h;
    victim->grid_w = grid_w;
    victim->last_use = ++m->rope_clock;
    *cos_ = victim->cos_;
    *sin_ = victim->sin_;
    return SDC_OK;
}
