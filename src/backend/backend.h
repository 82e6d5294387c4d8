/*
 * backend.h: the compute backend interface. A backend is a table of function
 * pointers (sdc_backend_ops_t) plus its private state; model code calls these
 * ops and never a vendor API directly. backend_cpu.c implements it with
 * OpenBLAS + OpenMP; backend_cuda.cu with cuBLAS and CUDA kernels.
 *
 * Conventions, for every op:
 * - Buffers are device pointers obtained from ->alloc (host memory on the CPU
 *   backend). All activations are float32, row-major. Weights are float32 too
 *   (converted at load time when stored as F16/BF16).
 * - "rows x dim" ops treat x as `rows` contiguous vectors of length `dim`
 *   unless a leading dimension (ld*, in elements) is given.
 * - In-place use (y == x) is allowed wherever it is noted.
 * - Ops are deterministic: the same inputs give bit-identical outputs
 *   whatever the thread count, and row r of an output depends only on row r
 *   of the inputs (never on how many rows are in the call). This is what
 *   makes a job's image independent of its micro-batch and of the stage split.
 * - Ops are enqueued in order; ->sync waits for completion (a no-op on CPU).
 */
#ifndef SDC_BACKEND_H
#define SDC_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "../common/status.h"

typedef struct sdc_backend sdc_backend_t;

typedef struct {
    const char *name; /* "cpu", "cuda" */
    /* 1 when device pointers are host pointers (CPU): weights stored as F32
     * in an mmapped file are then used in place, without a copy. */
    int host_memory;

    void (*destroy)(sdc_backend_t *be);

    /* Memory. alloc returns 64-byte aligned memory or NULL. */
    void *(*alloc)(sdc_backend_t *be, size_t bytes);
    void (*free)(sdc_backend_t *be, void *p);
    void (*upload)(sdc_backend_t *be, void *dst, const void *src_host, size_t bytes);
    void (*download)(sdc_backend_t *be, void *dst_host, const void *src, size_t bytes);
    void (*copy)(sdc_backend_t *be, void *dst, const void *src, size_t bytes);
    void (*fill)(sdc_backend_t *be, float *dst, float value, int64_t n);
    void (*sync)(sdc_backend_t *be);

    /* dst[i] = src[i] for a strided float view of up to 6 dims; strides in
     * elements, may be 0 in src (broadcast). Covers permute, slice, concat
     * (one call per part), repeat_interleave. */
    void (*copy_strided)(sdc_backend_t *be, float *dst, const float *src, int ndim,
                         const int64_t *shape, const int64_t *dst_stride,
                         const int64_t *src_stride);

    /* Linear layer, torch nn.Linear semantics:
     * y[m, n] = sum_k x[m, k] * w[n, k] + (b ? b[n] : 0)
     * x: M x K with row stride ldx (>= K); w: N x K contiguous; y: M x N with
     * row stride ldy (>= N). y must not alias x. */
    void (*linear)(sdc_backend_t *be, float *y, int64_t ldy, const float *x, int64_t ldx,
                   const float *w, const float *b, int64_t M, int64_t K, int64_t N);

    /* Linear weights in the backend's own layout, made once at load time.
     * linear_pack returns a buffer from ->alloc (free it with ->free)
     * holding w (N x K) packed, or NULL when out of memory; linear_packed
     * then computes exactly what linear computes with w, bit for bit.
     * Both are NULL on a backend whose linear reads w as it is. */
    float *(*linear_pack)(sdc_backend_t *be, const float *w, int64_t N, int64_t K);
    void (*linear_packed)(sdc_backend_t *be, float *y, int64_t ldy, const float *x, int64_t ldx,
                          const float *wp, const float *b, int64_t M, int64_t K, int64_t N);

    /* y = (x - mean) / sqrt(var + eps) * (gamma ? gamma : 1) + (beta ? beta : 0),
     * over the last dim (biased variance, like torch). y may equal x. */
    void (*layer_norm)(sdc_backend_t *be, float *y, const float *x, const float *gamma,
                       const float *beta, int64_t rows, int64_t dim, float eps);
    /* y = x / sqrt(mean(x^2) + eps) * (w ? w : 1). y may equal x. Rows are
     * strided by ld (>= dim), used for per-head QK norm inside a q/k buffer. */
    void (*rms_norm)(sdc_backend_t *be, float *y, const float *x, const float *w, int64_t rows,
                     int64_t dim, int64_t ld, float eps);
    /* adaLN modulation: y[r, d] = x[r, d] * (1 + scale[d]) + shift[d]. y may equal x. */
    void (*modulate)(sdc_backend_t *be, float *y, const float *x, const float *shift,
                     const float *scale, int64_t rows, int64_t dim);
    /* Gated residual: x[r, d] += (gate ? gate[d] : 1) * r_[r * ldr + d]. */
    void (*gate_add)(sdc_backend_t *be, float *x, const float *gate, const float *r, int64_t ldr,
                     int64_t rows, int64_t dim);

    /* Elementwise, n contiguous elements; y may equal x. */
    void (*gelu_tanh)(sdc_backend_t *be, float *y, const float *x, int64_t n);
    void (*gelu_erf)(sdc_backend_t *be, float *y, const float *x, int64_t n);
    void (*silu)(sdc_backend_t *be, float *y, const float *x, int64_t n);
    void (*add)(sdc_backend_t *be, float *y, const float *a, const float *b, int64_t n);
    void (*mul)(sdc_backend_t *be, float *y, const float *a, const float *b, int64_t n);
    /* y = alpha * a + beta * b */
    void (*axpby)(sdc_backend_t *be, float *y, float alpha, const float *a, float beta,
                  const float *b, int64_t n);

    /* Multi-head scaled dot-product attention, one sample.
     * q: Lq x (H*Dh) rows strided by ldq; k, v: Lk x (H*Dh) strided by ldk/ldv;
     * out: Lq x (H*Dh) strided by ldo. key_mask: NULL or Lk bytes (device),
     * 0 = key excluded. Masked keys contribute exactly nothing: the result
     * equals attention over the unmasked keys alone. A query whose keys are
     * all masked gets zeros. Memory is bounded: query tiles, never an
     * Lq x Lk matrix per head. scale = 1/sqrt(Dh) for the usual SDPA. */
    void (*attention)(sdc_backend_t *be, float *out, int64_t ldo, const float *q, int64_t ldq,
                      const float *k, int64_t ldk, const float *v, int64_t ldv, int64_t Lq,
                      int64_t Lk, int64_t H, int64_t Dh, const uint8_t *key_mask, float scale);

    /* Rotary embedding on interleaved pairs (diffusers apply_rotary_emb,
     * use_real=True, use_real_unbind_dim=-1), in place, for L tokens x H heads:
     * for each pair j: (a, b) = (x[2j], x[2j+1])
     *   x[2j]   = a * cos[t, 2j]   - b * sin[t, 2j]
     *   x[2j+1] = b * cos[t, 2j+1] + a * sin[t, 2j+1]
     * x rows strided by ld; cos/sin: L x Dh contiguous. */
    void (*rope)(sdc_backend_t *be, float *x, int64_t ld, const float *cos_, const float *sin_,
                 int64_t L, int64_t H, int64_t Dh);

    /* 2D convolution of one NCHW sample, torch nn.Conv2d semantics with
     * square stride and zero padding: x: Cin x H x W, w: Cout x Cin x kh x kw,
     * b: Cout or NULL; y: Cout x Ho x Wo with Ho = (H + 2p - kh) / s + 1. */
    void (*conv2d)(sdc_backend_t *be, float *y, const float *x, const float *w, const float *b,
                   int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t kh, int64_t kw,
                   int64_t stride, int64_t pad);
    /* GroupNorm on one sample: x: C x HW. y may equal x. */
    void (*group_norm)(sdc_backend_t *be, float *y, const float *x, const float *gamma,
                       const float *beta, int64_t C, int64_t HW, int64_t groups, float eps);
    /* Nearest-neighbour 2x upsampling: x: C x H x W -> y: C x 2H x 2W. */
    void (*upsample_nearest2x)(sdc_backend_t *be, float *y, const float *x, int64_t C, int64_t H,
                               int64_t W);
    /* Row softmax in place (rows x dim), used by small heads and tests. */
    void (*softmax)(sdc_backend_t *be, float *x, int64_t rows, int64_t dim);
} sdc_backend_ops_t;

/* A linear layer's weight as the model holds it: as stored (N x K), or
 * packed by ->linear_pack (sdc_weights_load_linear decides). */
typedef struct {
    float *w;
    int packed;
} sdc_linear_w_t;

struct sdc_backend {
    const sdc_backend_ops_t *ops;
    void *impl;      /* backend-private state */
    int n_threads;   /* CPU threads used by the backend */
};

/* y = x w^T + b through whichever form w is in. */
static inline void sdc_be_linear(sdc_backend_t *be, float *y, int64_t ldy, const float *x,
                                 int64_t ldx, const sdc_linear_w_t *w, const float *b, int64_t M,
                                 int64_t K, int64_t N)
{
    if (w->packed)
        be->ops->linear_packed(be, y, ldy, x, ldx, w->w, b, M, K, N);
    else
        be->ops->linear(be, y, ldy, x, ldx, w->w, b, M, K, N);
}

typedef struct {
    const char *name;  /* "cpu" (default), "cuda" */
    int n_threads;     /* 0 = all cores */
    int device;        /* GPU ordinal for cuda */
} sdc_backend_config_t;

/* Creates a backend by name; "cuda" fails with SDC_ERR_UNSUPPORTED when the
 * build has no CUDA or no device is present. */
sdc_status_t sdc_backend_create(const sdc_backend_config_t *cfg, sdc_backend_t **out,
                                sdc_error_t *err);
void sdc_backend_destroy(sdc_backend_t *be);

sdc_status_t sdc_backend_cpu_create(const sdc_backend_config_t *cfg, sdc_backend_t **out,
                                    sdc_error_t *err);
/* Defined only in builds with CUDA (SDC_HAVE_CUDA, backend_cuda.cu); fails
 * with SDC_ERR_UNSUPPORTED "no CUDA device" on a machine without a GPU.
 * SDC_CUDA_TF32=1 in the environment lets linear and conv2d use TF32. */
sdc_status_t sdc_backend_cuda_create(const sdc_backend_config_t *cfg, sdc_backend_t **out,
                                     sdc_error_t *err);

#endif
