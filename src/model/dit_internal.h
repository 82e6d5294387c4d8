/*
 * dit_internal.h: what the DiT's files share (dit.c, dit_embed.c,
 * dit_blocks.c, dit_rope.c): the weight structs, the model object, and the
 * grow-only scratch buffers. Not part of the public API (see dit.h).
 */
#ifndef SDC_DIT_INTERNAL_H
#define SDC_DIT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "dit.h"
#include "weights.h"

/* Bound on the ByT5 projection's hidden width (2048 in diffusers), which is
 * read from the weight shapes. */
#define SDC_DIT_BYT5_MAX_HIDDEN 65536
/* Width of the sinusoidal timestep features (diffusers Timesteps(256)). */
#define SDC_DIT_TIME_FEATURES 256
/* Grid sizes whose RoPE tables stay on the device. */
#define SDC_DIT_ROPE_CACHE 4

typedef struct {
    sdc_linear_w_t w; /* out x in, packed when the backend packs */
    float *b;         /* out */
    int64_t in, out;
} sdc_dit_linear_t;

/* TimestepEmbedding / PixArtAlphaTextProjection: linear, SiLU, linear. */
typedef struct {
    sdc_dit_linear_t l1, l2;
} sdc_dit_mlp2_t;

typedef struct {
    float *norm1_w, *norm1_b, *norm2_w, *norm2_b;
    sdc_dit_linear_t to_q, to_k, to_v, to_out;
    sdc_dit_linear_t ff_in, ff_out; /* linear-silu FeedForward */
    sdc_dit_linear_t ada;           /* norm_out.linear: gate_msa, gate_mlp */
} sdc_dit_refiner_block_t;

typedef struct {
    sdc_dit_linear_t x_embed;     /* conv weight viewed as hidden x (C*ph*pw) */
    sdc_dit_mlp2_t time, time_r, guidance; /* time_r, guidance: l1.w NULL if absent */
    sdc_dit_mlp2_t ctx_time, ctx_text;     /* context_embedder.time_text_embed */
    sdc_dit_linear_t ctx_proj_in;
    sdc_dit_refiner_block_t *refiner; /* num_refiner_layers */
    int has_byt5;
    int64_t byt5_hidden;
    float *byt5_norm_w, *byt5_norm_b;
    sdc_dit_linear_t byt5_1, byt5_2, byt5_3;
} sdc_dit_embed_w_t;

typedef struct {
    sdc_dit_linear_t norm1, norm1_ctx; /* 6 x hidden each */
    sdc_dit_linear_t to_q, to_k, to_v, add_q, add_k, add_v, to_out, to_add_out;
    float *norm_q, *norm_k, *norm_added_q, *norm_added_k;
    sdc_dit_linear_t ff_in, ff_out, ff_ctx_in, ff_ctx_out;
} sdc_dit_dual_w_t;

typedef struct {
    sdc_dit_linear_t norm; /* 3 x hidden */
    sdc_dit_linear_t to_q, to_k, to_v, proj_mlp, proj_out;
    float *norm_q, *norm_k;
} sdc_dit_single_w_t;

typedef struct {
    sdc_dit_linear_t norm_out, proj_out;
} sdc_dit_head_w_t;

/* Device scratch buffers, each grown on demand and never shrunk. A caller
 * acquires every slot it needs before using any of them (growing a slot
 * frees its old contents). */
typedef enum {
    SDC_DIT_SLOT_NRM,  /* L x hidden: normalised + modulated activations */
    SDC_DIT_SLOT_Q,    /* L x hidden */
    SDC_DIT_SLOT_K,    /* L x hidden */
    SDC_DIT_SLOT_V,    /* L x hidden */
    SDC_DIT_SLOT_BIG,  /* L x (hidden + mlp): MLP hidden, single-block concat */
    SDC_DIT_SLOT_TXT,  /* embed: token refiner state */
    SDC_DIT_SLOT_IN,   /* embed: uploaded host inputs, patches */
    SDC_DIT_SLOT_VEC,  /* small per-sample vectors (adaLN, temb) */
    SDC_DIT_SLOT_MASK, /* key mask bytes */
    SDC_DIT_SLOT_COUNT
} sdc_dit_slot_t;

typedef struct {
    int64_t grid_h, grid_w;
    float *cos_, *sin_; /* device, (grid_h*grid_w) x head_dim */
    uint64_t last_use;
} sdc_dit_rope_entry_t;

struct sdc_dit {
    sdc_backend_t *be;
    sdc_dit_config_t cfg;
    int64_t hidden, mlp_dim, refiner_mlp_dim;
    int block_begin, block_end;
    int has_embed, has_head;
    sdc_weights_t w;
    int weights_open;

    sdc_dit_embed_w_t emb;
    sdc_dit_dual_w_t *dual;     /* num_layers entries; loaded ones filled */
    sdc_dit_single_w_t *single; /* num_single_layers entries */
    sdc_dit_head_w_t head;

    void *slot[SDC_DIT_SLOT_COUNT];
    size_t slot_bytes[SDC_DIT_SLOT_COUNT];
    /* Leading bytes of the MASK slot known to hold 1 (image keys). */
    int64_t mask_ones;
    void *host;        /* host staging, grow-only */
    size_t host_bytes;

    sdc_dit_rope_entry_t rope[SDC_DIT_ROPE_CACHE];
    uint64_t rope_clock;
};

/* The buffers one block (or token-refiner block) works in, for L tokens. */
typedef struct {
    float *nrm, *q, *k, *v; /* L x hidden each */
    float *big;             /* L x (hidden + mlp) */
    float *mod;             /* 12 x hidden: adaLN vectors of both streams */
    float *vec;             /* the caller's extra vectors after mod */
} sdc_dit_work_t;

/* Scratch slot `slot` grown to at least n floats (or bytes, _u8); contents
 * are kept only when no growth was needed. */
sdc_status_t sdc_dit_scratch_f(sdc_dit_t *m, sdc_dit_slot_t slot, int64_t n, float **out,
                               sdc_error_t *err);
sdc_status_t sdc_dit_scratch_u8(sdc_dit_t *m, sdc_dit_slot_t slot, int64_t n, uint8_t **out,
                                sdc_error_t *err);
/* The host staging buffer, at least n floats (or bytes); one buffer shared by
 * both, valid until the next call. */
sdc_status_t sdc_dit_host_f(sdc_dit_t *m, int64_t n, float **out, sdc_error_t *err);
sdc_status_t sdc_dit_host_u8(sdc_dit_t *m, int64_t n, uint8_t **out, sdc_error_t *err);
/* Acquires the work buffers for L tokens, an MLP of width mlp and n_vec
 * extra floats in wk->vec. */
sdc_status_t sdc_dit_work_get(sdc_dit_t *m, int64_t L, int64_t mlp, int64_t n_vec,
                              sdc_dit_work_t *wk, sdc_error_t *err);
/* Device RoPE tables for a grid, from the cache or computed. */
sdc_status_t sdc_dit_rope_get(sdc_dit_t *m, int64_t grid_h, int64_t grid_w, const float **cos_,
                              const float **sin_, sdc_error_t *err);
void sdc_dit_rope_cache_free(sdc_dit_t *m);

/* y (rows x l->out, row stride ldy) = x (row stride ldx) W^T + b; no-op for 0 rows. */
void sdc_dit_linear(sdc_dit_t *m, const sdc_dit_linear_t *l, float *y, int64_t ldy,
                    const float *x, int64_t ldx, int64_t rows);

/* What a block needs besides its weights, for one sample. */
typedef struct {
    float *x;               /* (n_img + n_txt) x hidden, updated in place */
    int64_t n_img, n_txt;
    const float *silu_temb; /* SiLU(temb), hidden */
    const uint8_t *key_mask; /* NULL or (n_img + n_txt) bytes */
    const float *cos_, *sin_; /* RoPE tables, n_img x head_dim */
} sdc_dit_block_io_t;

/* Self-attention of L tokens over wk->q/k/v (L x hidden each), SDPA scale
 * 1/sqrt(head_dim); out rows strided by ldo. */
void sdc_dit_attention(sdc_dit_t *m, float *out, int64_t ldo, const sdc_dit_work_t *wk,
                       int64_t L, const uint8_t *key_mask);
/* Blocks, on one sample; wk from sdc_dit_work_get(L, mlp_dim, 0). */
void sdc_dit_dual_block(sdc_dit_t *m, const sdc_dit_dual_w_t *w, const sdc_dit_block_io_t *io,
                        const sdc_dit_work_t *wk);
void sdc_dit_single_block(sdc_dit_t *m, const sdc_dit_single_w_t *w,
                          const sdc_dit_block_io_t *io, const sdc_dit_work_t *wk);
sdc_status_t sdc_dit_blocks_load(sdc_dit_t *m, sdc_error_t *err);

/* Loading helpers shared by the weight loaders of each file. */
/* Loads "<prefix>.weight" (out x in) and "<prefix>.bias" (out). */
sdc_status_t sdc_dit_load_linear(sdc_dit_t *m, sdc_dit_linear_t *l, int64_t out, int64_t in,
                                 sdc_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
sdc_status_t sdc_dit_load_vec(sdc_dit_t *m, float **v, int64_t n, sdc_error_t *err,
                              const char *fmt, ...) __attribute__((format(printf, 5, 6)));
sdc_status_t sdc_dit_embed_load(sdc_dit_t *m, sdc_error_t *err);

#endif
