/*
 * backend_cpu.c: the CPU implementation of backend.h, with OpenMP threads
 * and the deterministic GEMM engine of cpu_gemm.c (linear, attention and
 * convolution all run on it).
 *
 * Determinism is the design constraint: every op gives the same bits
 * whatever the thread count, and a row's result never depends on the other
 * rows of the call. Threads therefore only ever split independent outputs;
 * every reduction (norm statistics, softmax sums, dot products) runs in one
 * fixed order inside one thread.
 *
 * Not here: the inner kernels (cpu_kernels.c), picking a backend by name
 * (backend.c).
 */
#include "backend.h"

#include <assert.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"

/* Element-wise ops below this size stay on the calling thread: waking the
 * team costs more than it saves. */
#define PAR_MIN_ELEMS 32768
#define PAR_CHUNK 16384

/* Products below this many FLOPs run on one thread (tens of microseconds:
 * less than the team's wake-up and barriers cost on a busy machine). */
#define PAR_MIN_FLOPS 4e6

/* Query rows per attention task; a multiple of SDC_GEMM_MR. */
#define ATTN_TILE 48

typedef struct {
    const sdc_cpu_kernels_t *kt;
    float *scratch; /* grow-only, 64-byte aligned */
    size_t scratch_floats;
    int32_t *keys; /* unmasked key indices for attention, grow-only */
    size_t keys_cap;
} cpu_impl_t;

static cpu_impl_t *impl_of(sdc_backend_t *be)
{
    return be->impl;
}

/* The ops have no status to return, so running out of memory for scratch
 * is fatal; it names what was asked for so the failure can be sized. */
static void cpu_fatal_nomem(const char *what, size_t bytes)
{
    fprintf(stderr, "sdc cpu backend: out of memory: %s needs %zu bytes\n", what, bytes);
    abort();
}

static float *cpu_scratch(sdc_backend_t *be, int64_t floats)
{
    cpu_impl_t *im = impl_of(be);
    size_t want = (size_t)(floats > 0 ? floats : 1);

    if (want <= im->scratch_floats)
        return im->scratch;
    size_t bytes = (want * sizeof(float) + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes);
    if (!p)
        cpu_fatal_nomem("scratch", bytes);
    free(im->scratch);
    im->scratch = p;
    im->scratch_floats = bytes / sizeof(float);
    return p;
}

static int32_t *cpu_key_list(sdc_backend_t *be, int64_t n)
{
    cpu_impl_t *im = impl_of(be);

    if ((size_t)n <= im->keys_cap)
        return im->keys;
    int32_t *p = realloc(im->keys, (size_t)n * sizeof(int32_t));
    if (!p)
        cpu_fatal_nomem("attention key list", (size_t)n * sizeof(int32_t));
    im->keys = p;
    im->keys_cap = (size_t)n;
    return p;
}

static int n_threads_for(const sdc_backend_t *be, int64_t elems)
{
    return elems < PAR_MIN_ELEMS ? 1 : be->n_threads;
}

static int n_threads_for_flops(const sdc_backend_t *be, double flops)
{
    return flops < PAR_MIN_FLOPS ? 1 : be->n_threads;
}

/* ---- memory ------------------------------------------------------------ */

static void cpu_destroy(sdc_backend_t *be)
{
    if (!be)
        return;
    cpu_impl_t *im = impl_of(be);
    if (im) {
        free(im->scratch);
        free(im->keys);
        free(im);
    }
    free(be);
}

static void *cpu_alloc(sdc_backend_t *be, size_t bytes)
{
    (void)be;
    if (bytes > SIZE_MAX - 63)
        return NULL;
    return aligned_alloc(64, bytes ? (bytes + 63) / 64 * 64 : 64);
}

static void cpu_free(sdc_backend_t *be, void *p)
{
    (void)be;
    free(p);
}

static void cpu_memcpy(sdc_backend_t *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes)
        memcpy(dst, src, bytes);
}

static void cpu_fill(sdc_backend_t *be, float *dst, float value, int64_t n)
{
#pragma omp parallel for schedule(static) num_threads(n_threads_for(be, n))
    for (int64_t i = 0; i < n; i++)
        dst[i] = value;
}

static void cpu_sync(sdc_backend_t *be)
{
    (void)be;
}

/* ---- layout ------------------------------------------------------------ */

static void copy_row(float *dst, int64_t ds, const float *src, int64_t ss, int64_t n)
{
    if (ds == 1 && ss == 1) {
        memcpy(dst, src, (size_t)n * sizeof(float));
    } else if (ss == 0) {
        for (int64_t i = 0; i < n; i++)
            dst[i * ds] = src[0];
    } else {
        for (int64_t i = 0; i < n; i++)
            dst[i * ds] = src[i * ss];
    }
}

static void cpu_copy_strided(sdc_backend_t *be, float *dst, const float *src, int ndim,
                             const int64_t *shape, const int64_t *dst_stride,
                             const int64_t *src_stride)
{
    assert(ndim <= 6);
    if (ndim <= 0) {
        dst[0] = src[0];
        return;
    }
    int64_t outer = 1, total;
    for (int d = 0; d < ndim - 1; d++)
        outer *= shape[d];
    const int64_t inner = shape[ndim - 1];
    total = outer * inner;
    if (total == 0)
        return;

#pragma omp parallel for schedule(static) num_threads(n_threads_for(be, total))
    for (int64_t o = 0; o < outer; o++) {
        int64_t rem = o, doff = 0, soff = 0;
        for (int d = ndim - 2; d >= 0; d--) {
            int64_t i = rem % shape[d];
            rem /= shape[d];
            doff += i * dst_stride[d];
            soff += i * src_stride[d];
        }
        copy_row(dst + doff, dst_stride[ndim - 1], src + soff, src_stride[ndim - 1], inner);
    }
}

/* ---- linear ------------------------------------------------------------ */

static void cpu_linear(sdc_backend_t *be, float *y, int64_t ldy, const float *x, int64_t ldx,
                       const float *w, const float *b, int64_t M, int64_t K, int64_t N)
{
    sdc_gemm_bnk_t bw = {.b = w, .ld = K, .rows = NULL};
    sdc_gemm_t g = {.M = M, .N = N, .K = K, .a = x, .lda = ldx, .c = y, .ldc = ldy,
                    .bias = b, .pack_b = sdc_gemm_pack_b_nk, .b_ctx = &bw};

    assert(ldx >= K && ldy >= N && (const float *)y != x);
    if (M <= 0 || N <= 0)
        return;
    int nt = n_threads_for_flops(be, 2.0 * (double)M * (double)N * (double)K);
    sdc_gemm_run(impl_of(be)->kt, &g, cpu_scratch(be, sdc_gemm_scratch_floats(&g, nt)), nt);
}

/* Weights packed once at load time, in the layout cpu_linear packs them to
 * on every call: the product runs the same tiles on the same numbers, so
 * linear_packed equals linear bit for bit, minus the packing. */
static float *cpu_linear_pack(sdc_backend_t *be, const float *w, int64_t N, int64_t K)
{
    sdc_gemm_bnk_t bw = {.b = w, .ld = K, .rows = NULL};
    float *wp = cpu_alloc(be, (size_t)sdc_gemm_packed_b_floats(N, K) * sizeof(float));

    if (wp)
        sdc_gemm_pack_b_all(wp, sdc_gemm_pack_b_nk, &bw, N, K);
    return wp;
}

static void cpu_linear_packed(sdc_backend_t *be, float *y, int64_t ldy, const float *x,
                              int64_t ldx, const float *wp, const float *b, int64_t M, int64_t K,
                              int64_t N)
{
    sdc_gemm_t g = {.M = M, .N = N, .K = K, .a = x, .lda = ldx, .c = y, .ldc = ldy,
                    .bias = b, .b_packed = wp};

    assert(ldx >= K && ldy >= N && (const float *)y != x);
    if (M <= 0 || N <= 0)
        return;
    int nt = n_threads_for_flops(be, 2.0 * (double)M * (double)N * (double)K);
    sdc_gemm_run(impl_of(be)->kt, &g, cpu_scratch(be, sdc_gemm_scratch_floats(&g, nt)), nt);
}

/* ---- normalization ----------------------------------------------------- */

/* Sums (of x, and of (x - shift)^2) in double: four interleaved
 * accumulators combined in a fixed order, so that the latency of one add
 * chain does not bound the loop while the order stays fixed. */
static double sum_f64(const float *x, int64_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += x[i];
        s1 += x[i + 1];
        s2 += x[i + 2];
        s3 += x[i + 3];
    }
    for (; i < n; i++)
        s0 += x[i];
    return (s0 + s1) + (s2 + s3);
}

static double sumsq_f64(const float *x, int64_t n, double shift)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        double d0 = x[i] - shift, d1 = x[i + 1] - shift;
        double d2 = x[i + 2] - shift, d3 = x[i + 3] - shift;
        s0 += d0 * d0;
        s1 += d1 * d1;
        s2 += d2 * d2;
        s3 += d3 * d3;
    }
    for (; i < n; i++) {
        double d = x[i] - shift;
        s0 += d * d;
    }
    return (s0 + s1) + (s2 + s3);
}

static void cpu_layer_norm(sdc_backend_t *be, float *y, const float *x, const float *gamma,
                           const float *beta, int64_t rows, int64_t dim, float eps)
{
#pragma omp parallel for schedule(static) num_threads(n_threads_for(be, rows * dim))
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim;
        double mean = sum_f64(xr, dim) / (double)dim;
        double var = sumsq_f64(xr, dim, mean) / (double)dim;
        double rstd = 1.0 / sqrt(var + (double)eps);
        for (int64_t d = 0; d < dim; d++) {
            float v = (float)((xr[d] - mean) * rstd);
            if (gamma)
                v = v * gamma[d];
            if (beta)
                v = v + beta[d];
            yr[d] = v;
        }
    }
}

static void cpu_rms_norm(sdc_backend_t *be, float *y, const float *x, const float *w,
                         int64_t rows, int64_t dim, int64_t ld, float eps)
{
    assert(ld >= dim);
#pragma omp parallel for schedule(static) num_threads(n_threads_for(be, rows * dim))
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * ld;
        float *yr = y + r * ld;
        double ms = sumsq_f64(xr, dim, 0.0) / (double)dim;
        double rstd = 1.0 / sqrt(ms + (double)eps);
        for (int64_t d = 0; d < dim; d++) {
            float v = (float)(xr[d] * rstd);
            yr[d] = w ? v * w[d] : v;
        }
    }
}

static void cpu_group_norm(sdc_backend_t *be, float *y, const float *x, const float *gamma,
                           const float *beta, int64_t C, int64_t HW, int64_t groups, float eps)
{
    const int64_t cpg = C / groups, n = cpg * HW;

    assert(groups > 0 && C % groups == 0);

#pragma omp parallel for schedule(static) num_threads(n_threads_for(be, C * HW))
    for (int64_t g = 0; g < groups; g++) {
        const float *xg = x + g * n;
        double mean = sum_f64(xg, n) / (double)n;
        double var = sumsq_f64(xg, n, mean) / (double)n;
        double rstd = 1.0 / sqrt(var + (double)eps);
        for (int64_t c = g * cpg; c < (g + 1) * cpg; c++) {
            const float *xc = x + c * HW;
            float *yc = y + c * HW;
            for (int64_t i = 0; i < HW; i++) {
                float v = (float)((xc[i] - mean) * rstd);
                if (gamma)
                    v = v * gamma[c];
                if (beta)
                    v = v + beta[c];
                yc[i] = v;
            }
        }
    }
}

static void cpu_modulate(sdc_backend_t *be, float *y, const float *x, const float *shift,
                         const float *scale, int64_t rows, int64_t dim)
{
#pragma omp parallel for schedule(static) num_threads(n_threads_for(be, rows * dim))
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim;
        for (int64_t d = 0; d < dim; d++)
            yr[d] = xr[d] * (1.0f + scale[d]) + shift[d];
    }
}

static void cpu_gate_add(sdc_backend_t *be, float *x, const float *gate, const float *r_,
                         int64_t ldr, int64_t rows, int64_t dim)
{
    assert(ldr >= dim);
#pragma omp parallel for schedule(static) num_threads(n_threads_for(be, rows * dim))
    for (int64_t r = 0; r < rows; r++) {
        float *xr = x + r * dim;
        const float *rr = r_ + r * ldr;
        if (gate) {
            for (int64_t d = 0; d < dim; d++)
                xr[d] = xr[d] + gate[d] * rr[d];
        } else {
            for (int64_t d = 0; d < dim; d++)
                xr[d] = xr[d] + rr[d];
        }
    }
}

/* ---- element-wise ------------------------------------------------------ */

typedef void (*unary_fn)(float *y, const float *x, int64_t n);

/* Splits n elements in fixed chunks; the kernels give every element the
 * same result wherever a chunk boundary falls. */
static void run_unary(sdc_backend_t *be, unary_fn f, float *y, const float *x, int64_t n)
{
    const int64_t chunks = (n + PAR_CHUNK - 1) / PAR_CHUNK;

#pragma omp parallel for schedule(static) num_threads(n_threads_for(be, n))
    for (int64_t c = 0; c < chunks; c++) {
        int64_t i0 = c * PAR_CHUNK, len = n - i0 < PAR_CHUNK ? n - i0 : PAR_CHUNK;
        f(y + i0, x + i0, len);
    }
}

static void cpu_gelu_tanh(sdc_backend_t *be, float *y, const float *x, int64_t n)
{
    run_unary(be, impl_of(be)->kt->gelu_tanh, y, x, n);
}

static void cpu_silu(sdc_backend_t *be, float *y, const float *x, int64_t n)
{
    run_unary(be, impl_of(be)->kt->silu, y, x, n);
}

static void gelu_erf_rows(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

static void cpu_gelu_erf(sdc_backend_t *be, float *y, const float *x, int64_t n)
{
    run_unary(be, gelu_erf_rows, y, x, n);
}

static void cpu_add(sdc_backend_t *be, float *y, const float *a, const float *b, int64_t n)
{
#pragma omp parallel for schedule(static) num_threads(n_threads_for(be, n))
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

static void cpu_mul(sdc_backend_t *be, float *y, const float *a, const float *b, int64_t n)
{
#pragma omp parallel for schedule(static) num_threads(n_threads_for(be, n))
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] * b[i];
}

static void cpu_axpby(sdc_backend_t *be, float *y, float alpha, const float *a, float beta,
                      const float *b, int64_t n)
{
#pragma omp parallel for schedule(static) num_threads(n_threads_for(be, n))
    for (int64_t i = 0; i < n; i++)
        y[i] = alpha * a[i] + beta * b[i];
}

static void cpu_softmax(sdc_backend_t *be, float *x, int64_t rows, int64_t dim)
{
    const sdc_cpu_kernels_t *kt = impl_of(be)->kt;

#pragma omp parallel for schedule(static) num_threads(n_threads_for(be, rows * dim))
    for (int64_t r = 0; r < rows; r++) {
        float *xr = x + r * dim;
        float sum = kt->softmax_row(xr, xr, dim, 1.0f);
        for (int64_t d = 0; d < dim; d++)
            xr[d] = xr[d] / sum;
    }
}

/* ---- attention --------------------------------------------------------- */

typedef struct {
    int64_t n_keys, Dh;
    int64_t kpad;         /* row stride of the score tile */
    int64_t dpad;         /* Dh rounded up to whole B panels */
    int64_t pk, pv, s, a; /* floats of each per-thread buffer */
} attn_layout_t;

static attn_layout_t attn_layout(int64_t n_keys, int64_t Dh)
{
    attn_layout_t L = {.n_keys = n_keys, .Dh = Dh};
    L.kpad = sdc_gemm_round_up(n_keys, SDC_GEMM_NR);
    if (L.kpad % 1024 == 0) /* rows 4 KiB apart would share L1 sets */
        L.kpad += SDC_GEMM_NR;
    L.dpad = sdc_gemm_round_up(Dh, SDC_GEMM_NR);
    L.pk = sdc_gemm_round_up(sdc_gemm_packed_b_floats(n_keys, Dh), 16);
    L.pv = sdc_gemm_round_up(sdc_gemm_packed_b_floats(Dh, n_keys), 16);
    L.s = sdc_gemm_round_up(ATTN_TILE * L.kpad, 16);
    L.a = sdc_gemm_round_up(ATTN_TILE, SDC_GEMM_MR) * SDC_GEMM_KC;
    return L;
}

static void attn_zero(float *out, int64_t ldo, int64_t Lq, int64_t width)
{
    for (int64_t i = 0; i < Lq; i++)
        memset(out + i * ldo, 0, (size_t)width * sizeof(float));
}

/* One head, one tile of query rows: scores, exact softmax over all keys,
 * then P.V and the division by the row sums. pk/pv hold the head's keys and
 * values packed (sdc_gemm_pack_b_all). */
static void attn_tile(const sdc_cpu_kernels_t *kt, const attn_layout_t *L, float *out,
                      int64_t ldo, const float *q, int64_t ldq, int64_t m, const float *pk,
                      const float *pv, float *s, float *apack, float scale)
{
    float sums[ATTN_TILE];

    sdc_gemm_packed(kt, s, L->kpad, q, ldq, pk, apack, m, L->n_keys, L->Dh, NULL);
    for (int64_t r = 0; r < m; r++)
        sums[r] = kt->softmax_row(s + r * L->kpad, s + r * L->kpad, L->n_keys, scale);
    /* P is read once per K-block, so it is not worth packing. */
    for (int64_t pc = 0; pc < L->n_keys; pc += SDC_GEMM_KC) {
        int64_t kc = L->n_keys - pc < SDC_GEMM_KC ? L->n_keys - pc : SDC_GEMM_KC;
        sdc_gemm_block_rows(kt, out, ldo, s + pc, L->kpad, pv + pc * L->dpad, m, L->Dh, kc, NULL,
                            pc == 0 ? SDC_GEMM_STORE : SDC_GEMM_ACCUM);
    }
    for (int64_t r = 0; r < m; r++) {
        float *o = out + r * ldo, inv = 1.0f / sums[r];
        for (int64_t d = 0; d < L->Dh; d++)
            o[d] = o[d] * inv;
    }
}

static void cpu_attention(sdc_backend_t *be, float *out, int64_t ldo, const float *q,
                          int64_t ldq, const float *k, int64_t ldk, const float *v, int64_t ldv,
                          int64_t Lq, int64_t Lk, int64_t H, int64_t Dh,
                          const uint8_t *key_mask, float scale)
{
    const sdc_cpu_kernels_t *kt = impl_of(be)->kt;
    const int32_t *rows = NULL;
    int64_t n_keys = Lk;

    assert(ldq >= H * Dh && ldk >= H * Dh && ldv >= H * Dh && ldo >= H * Dh);
    if (Lq <= 0 || H <= 0 || Dh <= 0)
        return;
    if (key_mask) {
        int32_t *list = cpu_key_list(be, Lk);
        n_keys = 0;
        for (int64_t j = 0; j < Lk; j++)
            if (key_mask[j])
                list[n_keys++] = (int32_t)j;
        if (n_keys < Lk)
            rows = list;
    }
    if (n_keys == 0) {
        attn_zero(out, ldo, Lq, H * Dh);
        return;
    }

    const attn_layout_t L = attn_layout(n_keys, Dh);
    const int64_t per_thread = L.pk + L.pv + L.s + L.a;
    const int64_t n_tiles = (Lq + ATTN_TILE - 1) / ATTN_TILE, n_tasks = n_tiles * H;
    const double flops = 4.0 * (double)Lq * (double)n_keys * (double)(H * Dh);
    const int nt_max = n_threads_for_flops(be, flops);
    const int nt = n_tasks < nt_max ? (int)n_tasks : nt_max;
    float *scratch = cpu_scratch(be, per_thread * nt);

    /* Tasks go out in runs of consecutive (head, tile) pairs, about four
     * runs per thread, so that a thread packs a head's keys and values once
     * per run, and a thread that falls behind (a busy machine) takes fewer. */
    const int64_t run = n_tasks / (4 * nt) > 1 ? n_tasks / (4 * nt) : 1;
#pragma omp parallel num_threads(nt)
    {
        float *pk = scratch + per_thread * omp_get_thread_num();
        float *pv = pk + L.pk, *s = pv + L.pv, *apack = s + L.s;
        int64_t packed_head = -1;

#pragma omp for schedule(dynamic, run)
        for (int64_t t = 0; t < n_tasks; t++) {
            int64_t h = t / n_tiles, i0 = (t % n_tiles) * ATTN_TILE;
            int64_t m = Lq - i0 < ATTN_TILE ? Lq - i0 : ATTN_TILE;
            if (h != packed_head) {
                sdc_gemm_bnk_t bk = {.b = k + h * Dh, .ld = ldk, .rows = rows};
                sdc_gemm_bkn_t bv = {.b = v + h * Dh, .ld = ldv, .rows = rows};
                sdc_gemm_pack_b_all(pk, sdc_gemm_pack_b_nk, &bk, n_keys, Dh);
                sdc_gemm_pack_b_all(pv, sdc_gemm_pack_b_kn, &bv, Dh, n_keys);
                packed_head = h;
            }
            attn_tile(kt, &L, out + i0 * ldo + h * Dh, ldo, q + i0 * ldq + h * Dh, ldq, m, pk,
                      pv, s, apack, scale);
        }
    }
}

static void cpu_rope(sdc_backend_t *be, float *x, int64_t ld, const float *cos_,
                     const float *sin_, int64_t L, int64_t H, int64_t Dh)
{
    assert(Dh % 2 == 0 && ld >= H * Dh);
#pragma omp parallel for schedule(static) num_threads(n_threads_for(be, L * H * Dh))
    for (int64_t t = 0; t < L; t++) {
        const float *c = cos_ + t * Dh, *s = sin_ + t * Dh;
        for (int64_t h = 0; h < H; h++) {
            float *xh = x + t * ld + h * Dh;
            for (int64_t j = 0; j + 1 < Dh; j += 2) {
                float a = xh[j], b = xh[j + 1];
                xh[j] = a * c[j] - b * s[j];
                xh[j + 1] = b * c[j + 1] + a * s[j + 1];
            }
        }
    }
}

/* ---- convolution ------------------------------------------------------- */

typedef struct {
    const float *x;
    int64_t Cin, H, W, Wo, kh, kw, stride, pad;
} conv_src_t;

/* One im2col row (input channel c, tap ky, kx) for NR output pixels that
 * share output row oy and start at column ox0, stride 1: a shifted copy of
 * one image row, zero outside the image. */
static void conv_pack_row_s1(float *d, const conv_src_t *cs, const float *xc, int64_t oy,
                             int64_t ox0, int64_t ky, int64_t kx)
{
    int64_t iy = oy - cs->pad + ky, ix0 = ox0 - cs->pad + kx;

    if (iy < 0 || iy >= cs->H) {
        memset(d, 0, SDC_GEMM_NR * sizeof(float));
        return;
    }
    const float *row = xc + iy * cs->W;
    if (ix0 >= 0 && ix0 + SDC_GEMM_NR <= cs->W) {
        memcpy(d, row + ix0, SDC_GEMM_NR * sizeof(float));
        return;
    }
    for (int64_t j = 0; j < SDC_GEMM_NR; j++) {
        int64_t ix = ix0 + j;
        d[j] = ix >= 0 && ix < cs->W ? row[ix] : 0.0f;
    }
}

/* Any stride, pixels anywhere: each column located on its own. */
static void conv_pack_row_any(float *d, const conv_src_t *cs, const float *xc,
                              const int64_t *iy0, const int64_t *ix0, int64_t nr, int64_t ky,
                              int64_t kx)
{
    for (int64_t j = 0; j < nr; j++) {
        int64_t iy = iy0[j] + ky, ix = ix0[j] + kx;
        d[j] = iy >= 0 && iy < cs->H && ix >= 0 && ix < cs->W ? xc[iy * cs->W + ix] : 0.0f;
    }
    for (int64_t j = nr; j < SDC_GEMM_NR; j++)
        d[j] = 0.0f;
}

/* Packs the im2col matrix (rows: cin, ky, kx; columns: output pixels)
 * straight from the image, so that no column buffer is ever built. */
static void conv_pack_b(const void *ctx, float *dst, int64_t k0, int64_t kc, int64_t n0,
                        int64_t nc)
{
    const conv_src_t *cs = ctx;
    const int64_t khw = cs->kh * cs->kw;

    for (int64_t j0 = 0; j0 < nc; j0 += SDC_GEMM_NR) {
        int64_t nr = nc - j0 < SDC_GEMM_NR ? nc - j0 : SDC_GEMM_NR;
        int64_t p0 = n0 + j0, oy = p0 / cs->Wo, ox0 = p0 % cs->Wo;
        int one_row = cs->stride == 1 && nr == SDC_GEMM_NR && ox0 + SDC_GEMM_NR <= cs->Wo;
        int64_t iy0[SDC_GEMM_NR], ix0[SDC_GEMM_NR];
        if (!one_row) {
            for (int64_t j = 0; j < nr; j++) {
                iy0[j] = ((p0 + j) / cs->Wo) * cs->stride - cs->pad;
                ix0[j] = ((p0 + j) % cs->Wo) * cs->stride - cs->pad;
            }
        }
        int64_t c = k0 / khw, ky = (k0 % khw) / cs->kw, kx = k0 % cs->kw;
        for (int64_t kk = 0; kk < kc; kk++) {
            const float *xc = cs->x + c * cs->H * cs->W;
            float *d = dst + kk * SDC_GEMM_NR;
            if (one_row)
                conv_pack_row_s1(d, cs, xc, oy, ox0, ky, kx);
            else
                conv_pack_row_any(d, cs, xc, iy0, ix0, nr, ky, kx);
            if (++kx == cs->kw) {
                kx = 0;
                if (++ky == cs->kh) {
                    ky = 0;
                    c++;
                }
            }
        }
        dst += SDC_GEMM_NR * kc;
    }
}

static void cpu_conv2d(sdc_backend_t *be, float *y, const float *x, const float *w,
                       const float *b, int64_t Cin, int64_t H, int64_t W, int64_t Cout,
                       int64_t kh, int64_t kw, int64_t stride, int64_t pad)
{
    const int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
    const int64_t HWo = Ho * Wo;
    conv_src_t cs = {.x = x, .Cin = Cin, .H = H, .W = W, .Wo = Wo, .kh = kh, .kw = kw,
                     .stride = stride, .pad = pad};
    sdc_gemm_bkn_t plain = {.b = x, .ld = H * W, .rows = NULL};
    const int direct = kh == 1 && kw == 1 && stride == 1 && pad == 0;
    sdc_gemm_t g = {.M = Cout, .N = HWo, .K = Cin * kh * kw, .a = w, .lda = Cin * kh * kw,
                    .c = y, .ldc = HWo, .bias = NULL,
                    .pack_b = direct ? sdc_gemm_pack_b_kn : conv_pack_b,
                    .b_ctx = direct ? (const void *)&plain : (const void *)&cs};

    assert(stride >= 1 && pad >= 0 && kh >= 1 && kw >= 1);
    if (Cout <= 0 || HWo <= 0)
        return;
    int nt = n_threads_for_flops(be, 2.0 * (double)g.M * (double)g.N * (double)g.K);
    sdc_gemm_run(impl_of(be)->kt, &g, cpu_scratch(be, sdc_gemm_scratch_floats(&g, nt)), nt);
    if (!b)
        return;
#pragma omp parallel for schedule(static) num_threads(n_threads_for(be, Cout * HWo))
    for (int64_t c = 0; c < Cout; c++) {
        float *yc = y + c * HWo;
        for (int64_t i = 0; i < HWo; i++)
            yc[i] = yc[i] + b[c];
    }
}

static void cpu_upsample_nearest2x(sdc_backend_t *be, float *y, const float *x, int64_t C,
                                   int64_t H, int64_t W)
{
#pragma omp parallel for schedule(static) num_threads(n_threads_for(be, C * H * W * 4))
    for (int64_t r = 0; r < C * H; r++) {
        const float *xr = x + r * W;
        float *y0 = y + r * 4 * W, *y1 = y0 + 2 * W;
        for (int64_t i = 0; i < W; i++)
            y0[2 * i] = y0[2 * i + 1] = xr[i];
        memcpy(y1, y0, (size_t)(2 * W) * sizeof(float));
    }
}

static const sdc_backend_ops_t cpu_ops = {
    .name = "cpu",
    .host_memory = 1,
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_memcpy,
    .download = cpu_memcpy,
    .copy = cpu_memcpy,
    .fill = cpu_fill,
    .sync = cpu_sync,
    .copy_strided = cpu_copy_strided,
    .linear = cpu_linear,
    .linear_pack = cpu_linear_pack,
    .linear_packed = cpu_linear_packed,
    .layer_norm = cpu_layer_norm,
    .rms_norm = cpu_rms_norm,
    .modulate = cpu_modulate,
    .gate_add = cpu_gate_add,
    .gelu_tanh = cpu_gelu_tanh,
    .gelu_erf = cpu_gelu_erf,
    .silu = cpu_silu,
    .add = cpu_add,
    .mul = cpu_mul,
    .axpby = cpu_axpby,
    .attention = cpu_attention,
    .rope = cpu_rope,
    .conv2d = cpu_conv2d,
    .group_norm = cpu_group_norm,
    .upsample_nearest2x = cpu_upsample_nearest2x,
    .softmax = cpu_softmax,
};

sdc_status_t sdc_backend_cpu_create(const sdc_backend_config_t *cfg, sdc_backend_t **out,
                                    sdc_error_t *err)
{
    int n_threads = cfg ? cfg->n_threads : 0;

    *out = NULL;
    if (n_threads < 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "cpu backend: n_threads is %d, want 0 (all cores) or more",
                             n_threads);
    if (n_threads == 0)
        n_threads = omp_get_num_procs();

    sdc_backend_t *be = calloc(1, sizeof(*be));
    if (!be)
        goto err_nomem;
    cpu_impl_t *im = calloc(1, sizeof(*im));
    if (!im)
        goto err_free_be;
    /* SDC_CPU_KERNELS=generic forces the portable kernels (for testing
     * them on a machine that has AVX2). */
    im->kt = sdc_cpu_kernels_select(getenv("SDC_CPU_KERNELS"));
    be->ops = &cpu_ops;
    be->impl = im;
    be->n_threads = n_threads;
    *out = be;
    return SDC_OK;

err_free_be:
    free(be);
err_nomem:
    return sdc_error_set(err, SDC_ERR_NOMEM, "cpu backend: out of memory creating the backend");
}
