/*
 * test_backend_conformance.c: the CUDA backend against the CPU backend, op
 * by op, on random inputs (odd sizes, padded leading dimensions, offsets
 * into buffers), each op with its stated tolerance; and the determinism
 * contract of backend.h on the device: a rerun gives the same bits, row r
 * of linear, the norms and attention does not depend on the other rows of
 * the call, a masked key is exactly a dropped key. The products run twice:
 * on cuBLASLt (the default) and on the fallback kernel (SDC_CUDA_GEMM=simt).
 *
 * Needs a GPU: without one (or in a build without CUDA) it prints why and
 * exits 77, the "skipped" status. tests/gpu/run.sh runs it; make test does
 * not.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/test.h"

#include "backend/backend.h"

/* Tolerances, as max |gpu - cpu| <= tol * max |cpu| over the output. Both
 * backends are within about 1e-6 of a double-precision reference on these
 * sizes (tests/unit/test_backend_cpu.c holds the CPU to 1e-5); the GPU sums
 * in another order, so long sums get twice the CPU's bound. */
#define TOL_EXACT 0.0     /* data movement, add, mul: the same bits */
#define TOL_ROUNDED 1e-6  /* modulate, gate_add, axpby, rope: same roundings */
#define TOL_POINTWISE 1e-5 /* gelu, silu: other exp/tanh/erf implementations */
#define TOL_NORM 1e-5     /* layer/rms/group norm, softmax */
#define TOL_PRODUCT 2e-5  /* linear, conv2d, attention */
#define TOL_TF32 5e-3     /* linear and conv2d with SDC_CUDA_TF32=1 */

static sdc_backend_t *cpu, *gpu;
static double tol_gemm = TOL_PRODUCT;
/* SDC_CONFORMANCE_QUICK=1 leaves out the model-sized products, which take
 * hours under the CPU emulation of tests/gpu/emu (seconds on a GPU). */
static int quick;

/* ---- helpers ----------------------------------------------------------- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static float frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

static float *rand_buf(int64_t n, float scale)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        p[i] = frand() * scale;
    return p;
}

static float *copy_buf(const float *src, int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    memcpy(p, src, (size_t)n * sizeof(float));
    return p;
}

static int same_bits(const float *a, const float *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

/* A device copy of n host floats. */
static float *up(const float *h, int64_t n)
{
    size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(float);
    float *d = gpu->ops->alloc(gpu, bytes);
    if (!d) {
        fprintf(stderr, "  device alloc of %zu bytes failed\n", bytes);
        exit(1);
    }
    if (n > 0)
        gpu->ops->upload(gpu, d, h, (size_t)n * sizeof(float));
    return d;
}

static uint8_t *up_bytes(const uint8_t *h, int64_t n)
{
    uint8_t *d = gpu->ops->alloc(gpu, (size_t)n);
    gpu->ops->upload(gpu, d, h, (size_t)n);
    return d;
}

/* A host copy of n device floats (malloc'd). */
static float *down(const float *d, int64_t n)
{
    float *h = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    gpu->ops->download(gpu, h, d, (size_t)n * sizeof(float));
    gpu->ops->sync(gpu);
    return h;
}

static void dfree(void *d)
{
    gpu->ops->free(gpu, d);
}

/* Compares a device result with the CPU's and frees the host copy. */
static int check_dev(const char *what, const float *dev, const float *want, int64_t n,
                     double tol)
{
    float *got = down(dev, n);
    int ok = tol == 0.0 ? same_bits(got, want, n) : test_close(what, got, want, n, tol);
    if (!ok && tol == 0.0)
        fprintf(stderr, "  %s: not bit-identical to the CPU\n", what);
    free(got);
    return ok;
}

/* 1 when two device arrays hold the same bits. */
static int dev_same(const float *a, const float *b, int64_t n)
{
    float *ha = down(a, n), *hb = down(b, n);
    int ok = same_bits(ha, hb, n);
    free(ha);
    free(hb);
    return ok;
}

static sdc_backend_t *make_backend(const char *name, sdc_status_t *st, sdc_error_t *err)
{
    sdc_backend_config_t cfg = {.name = name, .n_threads = 0, .device = 0};
    sdc_backend_t *be = NULL;
    *st = sdc_backend_create(&cfg, &be, err);
    return be;
}

/* ---- creation and memory ----------------------------------------------- */

static void test_create(void)
{
    sdc_backend_t *be = NULL;
    sdc_error_t err = {0};
    sdc_backend_config_t bad = {.name = "cuda", .device = 4096};
    CHECK_EQ_INT(sdc_backend_create(&bad, &be, &err), SDC_ERR_INVALID_ARG);
    CHECK(be == NULL && strstr(err.msg, "4096") != NULL);
    CHECK(strcmp(gpu->ops->name, "cuda") == 0 && gpu->ops->host_memory == 0);
}

static void test_memory(void)
{
    const sdc_backend_ops_t *o = gpu->ops;
    size_t sizes[] = {0, 1, 63, 64, 1000, 1 << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        void *p = o->alloc(gpu, sizes[i]);
        CHECK(p != NULL && (uintptr_t)p % 64 == 0);
        o->free(gpu, p);
    }
    /* more than two staging buffers' worth, and a ragged end */
    int64_t n = (int64_t)5 << 20 | 3;
    float *host = rand_buf(n, 1.0f);
    float *d = up(host, n), *e = o->alloc(gpu, (size_t)n * sizeof(float));
    o->copy(gpu, e, d, (size_t)n * sizeof(float));
    CHECK(check_dev("upload, copy, download", e, host, n, TOL_EXACT));
    o->fill(gpu, d, -2.5f, n - 1);
    float *back = down(d, n);
    CHECK(back[0] == -2.5f && back[n - 2] == -2.5f && back[n - 1] == host[n - 1]);
    /* uploads from a host buffer reused at once land in order */
    float v[4] = {1, 2, 3, 4};
    o->upload(gpu, d, v, sizeof(v));
    v[0] = 9;
    o->upload(gpu, d + 1, v, sizeof(float));
    float w[2];
    o->download(gpu, w, d, sizeof(w));
    o->sync(gpu);
    CHECK(w[0] == 1.0f && w[1] == 9.0f);
    dfree(d);
    dfree(e);
    free(host);
    free(back);
}

/* ---- layout ------------------------------------------------------------ */

static void check_copy_strided(const char *what, int ndim, const int64_t *shape,
                               const int64_t *ds, const int64_t *ss, int64_t src_n,
                               int64_t dst_n)
{
    float *src = rand_buf(src_n, 1.0f), *want = rand_buf(dst_n, 1.0f);
    float *dsrc = up(src, src_n), *ddst = up(want, dst_n);
    cpu->ops->copy_strided(cpu, want, src, ndim, shape, ds, ss);
    gpu->ops->copy_strided(gpu, ddst, dsrc, ndim, shape, ds, ss);
    CHECK_MSG(check_dev(what, ddst, want, dst_n, TOL_EXACT), "%s", what);
    dfree(dsrc);
    dfree(ddst);
    free(src);
    free(want);
}

static void test_copy_strided(void)
{
    {
        int64_t L = 37, H = 5, D = 12, ld = H * D + 3;
        int64_t shape[3] = {H, L, D}, ds[3] = {L * D, D, 1}, ss[3] = {D, ld, 1};
        check_copy_strided("permute", 3, shape, ds, ss, L * ld, H * L * D);
    }
    {
        int64_t A = 33, B = 129;
        int64_t shape[2] = {A, B}, ds[2] = {B, 1}, ss[2] = {1, A};
        check_copy_strided("transpose", 2, shape, ds, ss, A * B, A * B);
    }
    {
        int64_t shape[2] = {300, 65}, ds[2] = {70, 1}, ss[2] = {0, 1};
        check_copy_strided("broadcast", 2, shape, ds, ss, 65, 300 * 70);
        int64_t shape3[3] = {41, 3, 7}, ds3[3] = {21, 7, 1}, ss3[3] = {7, 0, 1};
        check_copy_strided("repeat_interleave", 3, shape3, ds3, ss3, 41 * 7, 41 * 21);
    }
    {
        int64_t shape[6] = {2, 3, 2, 5, 3, 4};
        int64_t ss[6] = {3 * 2 * 5 * 3 * 4, 1, 3, 6, 30, 90};
        int64_t ds[6] = {360 + 7, 120 + 1, 60, 12, 4, 1};
        check_copy_strided("6d", 6, shape, ds, ss, 2 * 360, 2 * 367);
    }
    {
        int64_t shape[1] = {1};
        int64_t one[1] = {1};
        check_copy_strided("one element", 1, shape, one, one, 1, 1);
    }
}

/* ---- linear ------------------------------------------------------------ */

static void check_linear(int64_t M, int64_t K, int64_t N, int64_t padx, int64_t pady,
                         int with_bias)
{
    int64_t ldx = K + padx, ldy = N + pady;
    float *x = rand_buf(M * ldx, 1.0f), *w = rand_buf(N * K, 1.0f);
    float *b = with_bias ? rand_buf(N, 1.0f) : NULL;
    float *want = rand_buf(M * ldy, 1.0f);
    float *dx = up(x, M * ldx), *dw = up(w, N * K), *db = b ? up(b, N) : NULL;
    float *dy = up(want, M * ldy), *dy2 = up(want, M * ldy);
    char what[96];
    snprintf(what, sizeof what, "linear M=%lld K=%lld N=%lld", (long long)M, (long long)K,
             (long long)N);

    cpu->ops->linear(cpu, want, ldy, x, ldx, w, b, M, K, N);
    gpu->ops->linear(gpu, dy, ldy, dx, ldx, dw, db, M, K, N);
    gpu->ops->linear(gpu, dy2, ldy, dx, ldx, dw, db, M, K, N);
    CHECK(check_dev(what, dy, want, M * ldy, tol_gemm)); /* padding columns included */
    CHECK_MSG(dev_same(dy, dy2, M * ldy), "%s: rerun differs", what);
    float *got = down(dy, M * ldy);
    for (int64_t m = 0; m < M; m++) /* padding columns untouched */
        CHECK(same_bits(got + m * ldy + N, want + m * ldy + N, pady));
    free(got);
    dfree(dx);
    dfree(dw);
    dfree(db);
    dfree(dy);
    dfree(dy2);
    free(x);
    free(w);
    free(b);
    free(want);
}

static void test_linear(void)
{
    check_linear(1, 1, 1, 0, 0, 1);
    check_linear(7, 13, 5, 3, 2, 1);
    check_linear(37, 300, 29, 5, 0, 0);
    check_linear(100, 64, 96, 0, 7, 1);
    check_linear(3, 777, 131, 1, 1, 1);
    check_linear(150, 40, 2100, 0, 0, 1);
    check_linear(5, 0, 9, 0, 0, 1); /* empty sum: the bias */
    check_linear(5, 0, 9, 0, 0, 0);
    if (!quick)
        check_linear(257, 1024, 3072, 0, 0, 1); /* DiT-like: aligned, several tiles */
}

/* Row r depends on row r of x alone: row by row, uneven splits and an
 * offset into x and y give the bits of the one full call. */
static void check_linear_rows(int64_t M, int64_t K, int64_t N, int with_bias)
{
    float *x = rand_buf(M * K, 1.0f), *w = rand_buf(N * K, 1.0f);
    float *b = with_bias ? rand_buf(N, 1.0f) : NULL;
    float *dx = up(x, M * K), *dw = up(w, N * K), *db = b ? up(b, N) : NULL;
    float *dall = gpu->ops->alloc(gpu, (size_t)(M * N) * sizeof(float));
    float *dpart = gpu->ops->alloc(gpu, (size_t)(M * N) * sizeof(float));
    char what[96];
    snprintf(what, sizeof what, "M=%lld K=%lld N=%lld", (long long)M, (long long)K, (long long)N);

    gpu->ops->linear(gpu, dall, N, dx, K, dw, db, M, K, N);
    for (int64_t m = 0; m < M; m++)
        gpu->ops->linear(gpu, dpart + m * N, N, dx + m * K, K, dw, db, 1, K, N);
    CHECK_MSG(dev_same(dall, dpart, M * N), "row by row %s", what);
    gpu->ops->fill(gpu, dpart, 0.0f, M * N);
    for (int64_t m0 = 0, step = 1; m0 < M; m0 += step, step = step * 2 + 1) {
        int64_t m = M - m0 < step ? M - m0 : step;
        gpu->ops->linear(gpu, dpart + m0 * N, N, dx + m0 * K, K, dw, db, m, K, N);
    }
    CHECK_MSG(dev_same(dall, dpart, M * N), "uneven splits %s", what);
    dfree(dx);
    dfree(dw);
    dfree(db);
    dfree(dall);
    dfree(dpart);
    free(x);
    free(w);
    free(b);
}

static void test_linear_rows_independent(void)
{
    check_linear_rows(40, 8, 8, 1);
    check_linear_rows(97, 64, 64, 0);
    check_linear_rows(61, 300, 1000, 1);
    check_linear_rows(300, 1024, 96, 1);
    check_linear_rows(13, 4096, 40, 0);
    check_linear_rows(1300, 96, 33, 1);
    if (quick)
        return;
    check_linear_rows(64, 3584, 3584, 1);  /* HunyuanImage-2.1 hidden size */
    check_linear_rows(37, 3584, 10752, 1); /* qkv */
    check_linear_rows(20, 14336, 3584, 1); /* mlp down */
}

/* ---- normalization, softmax -------------------------------------------- */

static void test_layer_norm(void)
{
    int64_t rows = 37, dim = 3584 + 5;
    float *x = rand_buf(rows * dim, 3.0f), *g = rand_buf(dim, 1.0f), *bb = rand_buf(dim, 1.0f);
    for (int64_t i = 0; i < rows * dim; i++)
        x[i] += 5.0f;
    float *dx = up(x, rows * dim), *dg = up(g, dim), *db = up(bb, dim);
    for (int variant = 0; variant < 3; variant++) {
        const float *gamma = variant == 1 ? NULL : g, *beta = variant == 2 ? NULL : bb;
        const float *dgamma = variant == 1 ? NULL : dg, *dbeta = variant == 2 ? NULL : db;
        float *want = copy_buf(x, rows * dim), *dy = up(x, rows * dim);
        cpu->ops->layer_norm(cpu, want, want, gamma, beta, rows, dim, 1e-6f);
        gpu->ops->layer_norm(gpu, dy, dy, dgamma, dbeta, rows, dim, 1e-6f); /* in place */
        CHECK(check_dev("layer_norm", dy, want, rows * dim, TOL_NORM));
        /* rows 5.. alone give the same bits */
        float *dpart = up(x, rows * dim);
        gpu->ops->layer_norm(gpu, dpart + 5 * dim, dx + 5 * dim, dgamma, dbeta, rows - 5, dim,
                             1e-6f);
        CHECK_MSG(dev_same(dpart + 5 * dim, dy + 5 * dim, (rows - 5) * dim), "layer_norm rows");
        dfree(dpart);
        dfree(dy);
        free(want);
    }
    dfree(dx);
    dfree(dg);
    dfree(db);
    free(x);
    free(g);
    free(bb);
}

static void test_rms_norm(void)
{
    int64_t rows = 230, dim = 128, ld = 3 * dim + 5;
    float *x = rand_buf(rows * ld, 2.0f), *w = rand_buf(dim, 1.0f);
    float *dw = up(w, dim);
    for (int with_w = 0; with_w < 2; with_w++) {
        float *want = copy_buf(x, rows * ld), *dy = up(x, rows * ld), *dy2 = up(x, rows * ld);
        cpu->ops->rms_norm(cpu, want + dim, want + dim, with_w ? w : NULL, rows, dim, ld, 1e-6f);
        gpu->ops->rms_norm(gpu, dy + dim, dy + dim, with_w ? dw : NULL, rows, dim, ld, 1e-6f);
        CHECK(check_dev("rms_norm", dy, want, rows * ld, TOL_NORM));
        /* the same rows in two calls */
        gpu->ops->rms_norm(gpu, dy2 + dim, dy2 + dim, with_w ? dw : NULL, 7, dim, ld, 1e-6f);
        gpu->ops->rms_norm(gpu, dy2 + 7 * ld + dim, dy2 + 7 * ld + dim, with_w ? dw : NULL,
                           rows - 7, dim, ld, 1e-6f);
        CHECK_MSG(dev_same(dy, dy2, rows * ld), "rms_norm split rows");
        dfree(dy);
        dfree(dy2);
        free(want);
    }
    dfree(dw);
    free(x);
    free(w);
}

static void test_group_norm(void)
{
    /* small, and groups spanning several GN_CHUNKs */
    const int64_t shapes[][3] = {{12, 37, 4}, {64, 4099, 8}, {128, 256 * 64, 32}};
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        int64_t C = shapes[s][0], HW = shapes[s][1], G = shapes[s][2], n = C * HW;
        float *x = rand_buf(n, 2.0f), *g = rand_buf(C, 1.0f), *b = rand_buf(C, 1.0f);
        for (int64_t i = 0; i < n; i++)
            x[i] += 3.0f;
        float *dx = up(x, n), *dg = up(g, C), *db = up(b, C), *dy = up(x, n);
        float *dy2 = gpu->ops->alloc(gpu, (size_t)n * sizeof(float));
        cpu->ops->group_norm(cpu, x, x, g, b, C, HW, G, 1e-6f);
        gpu->ops->group_norm(gpu, dy, dy, dg, db, C, HW, G, 1e-6f); /* in place */
        gpu->ops->group_norm(gpu, dy2, dx, dg, db, C, HW, G, 1e-6f);
        CHECK(check_dev("group_norm", dy, x, n, TOL_NORM));
        CHECK_MSG(dev_same(dy, dy2, n), "group_norm rerun");
        dfree(dx);
        dfree(dg);
        dfree(db);
        dfree(dy);
        dfree(dy2);
        free(x);
        free(g);
        free(b);
    }
}

static void test_softmax(void)
{
    int64_t rows = 9, dim = 1001;
    float *x = rand_buf(rows * dim, 20.0f);
    float *dx = up(x, rows * dim), *dx2 = up(x + dim, (rows - 1) * dim);
    cpu->ops->softmax(cpu, x, rows, dim);
    gpu->ops->softmax(gpu, dx, rows, dim);
    gpu->ops->softmax(gpu, dx2, rows - 1, dim);
    CHECK(check_dev("softmax", dx, x, rows * dim, TOL_NORM));
    CHECK_MSG(dev_same(dx + dim, dx2, (rows - 1) * dim), "softmax rows");
    float one[3] = {5.0f, 5.0f, 5.0f};
    float *d1 = up(one, 3);
    gpu->ops->softmax(gpu, d1, 1, 3);
    float *h1 = down(d1, 3);
    CHECK(fabsf(h1[0] - 1.0f / 3.0f) < 1e-7f && h1[0] == h1[2]);
    free(h1);
    dfree(d1);
    dfree(dx);
    dfree(dx2);
    free(x);
}

/* ---- element-wise and row-wise affine ---------------------------------- */

static void test_elementwise(void)
{
    const int64_t n = 100003;
    float *x = rand_buf(n, 8.0f), *a = rand_buf(n, 1.0f), *b = rand_buf(n, 1.0f);
    float *want = malloc((size_t)n * sizeof(float));
    float *dx = up(x, n), *da = up(a, n), *db = up(b, n), *dy = up(x, n);

#define UNARY(op, tol)                                                \
    do {                                                              \
        cpu->ops->op(cpu, want, x, n);                                \
        gpu->ops->op(gpu, dy, dx, n);                                 \
        CHECK(check_dev(#op, dy, want, n, tol));                      \
    } while (0)
    UNARY(gelu_tanh, TOL_POINTWISE);
    UNARY(gelu_erf, TOL_POINTWISE);
    UNARY(silu, TOL_POINTWISE);
#undef UNARY
    gpu->ops->upload(gpu, dy, x, (size_t)n * sizeof(float));
    gpu->ops->silu(gpu, dy, dy, n); /* in place */
    CHECK(check_dev("silu in place", dy, want, n, TOL_POINTWISE));

    cpu->ops->add(cpu, want, a, b, n);
    gpu->ops->add(gpu, dy, da, db, n);
    CHECK(check_dev("add", dy, want, n, TOL_EXACT));
    cpu->ops->mul(cpu, want, a, b, n);
    gpu->ops->mul(gpu, dy, da, db, n);
    CHECK(check_dev("mul", dy, want, n, TOL_EXACT));
    cpu->ops->axpby(cpu, want, 0.75f, a, -1.5f, b, n);
    gpu->ops->axpby(gpu, dy, 0.75f, da, -1.5f, db, n);
    CHECK(check_dev("axpby", dy, want, n, TOL_ROUNDED));
    dfree(dx);
    dfree(da);
    dfree(db);
    dfree(dy);
    free(x);
    free(a);
    free(b);
    free(want);
}

/* Saturated and tiny inputs, element by element against the CPU. */
static void test_elementwise_extremes(void)
{
    const float x[] = {0.0f,  -0.0f,  1e-30f, -1e-30f, 1e-3f,  -1e-3f, 20.0f, -20.0f,
                       88.0f, -88.0f, 90.0f,  -90.0f,  100.0f, -100.0f, 1e4f, -1e4f};
    const int64_t n = sizeof(x) / sizeof(x[0]);
    float want[sizeof(x) / sizeof(x[0])];
    float *dx = up(x, n), *dy = up(x, n);
    void (*ops_cpu[3])(sdc_backend_t *, float *, const float *, int64_t) = {
        cpu->ops->gelu_tanh, cpu->ops->gelu_erf, cpu->ops->silu};
    void (*ops_gpu[3])(sdc_backend_t *, float *, const float *, int64_t) = {
        gpu->ops->gelu_tanh, gpu->ops->gelu_erf, gpu->ops->silu};
    const char *names[3] = {"gelu_tanh", "gelu_erf", "silu"};

    for (int o = 0; o < 3; o++) {
        ops_cpu[o](cpu, want, x, n);
        ops_gpu[o](gpu, dy, dx, n);
        float *got = down(dy, n);
        for (int64_t i = 0; i < n; i++)
            CHECK_MSG(fabsf(got[i] - want[i]) <= 1e-6f * fabsf(want[i]) + 1e-30f,
                      "%s(%g) = %g on the GPU, %g on the CPU", names[o], (double)x[i],
                      (double)got[i], (double)want[i]);
        free(got);
    }
    dfree(dx);
    dfree(dy);
}

static void test_modulate_gate_add(void)
{
    int64_t rows = 190, dim = 77, ldr = 100;
    float *x = rand_buf(rows * dim, 1.0f), *shift = rand_buf(dim, 1.0f);
    float *scale = rand_buf(dim, 1.0f), *gate = rand_buf(dim, 1.0f);
    float *r = rand_buf(rows * ldr, 1.0f);
    float *want = copy_buf(x, rows * dim);
    float *dshift = up(shift, dim), *dscale = up(scale, dim), *dgate = up(gate, dim);
    float *dr = up(r, rows * ldr), *dy = up(x, rows * dim);

    cpu->ops->modulate(cpu, want, want, shift, scale, rows, dim);
    gpu->ops->modulate(gpu, dy, dy, dshift, dscale, rows, dim);
    CHECK(check_dev("modulate", dy, want, rows * dim, TOL_ROUNDED));
    for (int g = 0; g < 2; g++) {
        memcpy(want, x, (size_t)(rows * dim) * sizeof(float));
        gpu->ops->upload(gpu, dy, x, (size_t)(rows * dim) * sizeof(float));
        cpu->ops->gate_add(cpu, want, g ? gate : NULL, r, ldr, rows, dim);
        gpu->ops->gate_add(gpu, dy, g ? dgate : NULL, dr, ldr, rows, dim);
        CHECK(check_dev("gate_add", dy, want, rows * dim, TOL_ROUNDED));
    }
    dfree(dshift);
    dfree(dscale);
    dfree(dgate);
    dfree(dr);
    dfree(dy);
    free(x);
    free(shift);
    free(scale);
    free(gate);
    free(r);
    free(want);
}

/* ---- attention --------------------------------------------------------- */

typedef struct {
    int64_t Lq, Lk, H, Dh, pad;
} attn_case_t;

static void check_attention(attn_case_t c, const uint8_t *mask)
{
    int64_t W = c.H * c.Dh, ldq = W + c.pad, ldk = W + 2 * c.pad, ldv = W + 3 * c.pad,
            ldo = W + c.pad;
    float *q = rand_buf(c.Lq * ldq, 2.0f), *k = rand_buf(c.Lk * ldk, 2.0f),
          *v = rand_buf(c.Lk * ldv, 1.0f), *want = rand_buf(c.Lq * ldo, 1.0f);
    float *dq = up(q, c.Lq * ldq), *dk = up(k, c.Lk * ldk), *dv = up(v, c.Lk * ldv);
    float *dout = up(want, c.Lq * ldo), *dout2 = up(want, c.Lq * ldo);
    uint8_t *dmask = mask ? up_bytes(mask, c.Lk) : NULL;
    float scale = 1.0f / sqrtf((float)c.Dh);
    char what[128];
    snprintf(what, sizeof what, "attention Lq=%lld Lk=%lld H=%lld Dh=%lld%s", (long long)c.Lq,
             (long long)c.Lk, (long long)c.H, (long long)c.Dh, mask ? " masked" : "");

    cpu->ops->attention(cpu, want, ldo, q, ldq, k, ldk, v, ldv, c.Lq, c.Lk, c.H, c.Dh, mask,
                        scale);
    gpu->ops->attention(gpu, dout, ldo, dq, ldq, dk, ldk, dv, ldv, c.Lq, c.Lk, c.H, c.Dh, dmask,
                        scale);
    gpu->ops->attention(gpu, dout2, ldo, dq, ldq, dk, ldk, dv, ldv, c.Lq, c.Lk, c.H, c.Dh, dmask,
                        scale);
    CHECK(check_dev(what, dout, want, c.Lq * ldo, TOL_PRODUCT));
    CHECK_MSG(dev_same(dout, dout2, c.Lq * ldo), "%s: rerun differs", what);

    /* each query alone, and an odd slice of the queries, give the same bits */
    gpu->ops->fill(gpu, dout2, 0.0f, c.Lq * ldo);
    for (int64_t i = 0; i < c.Lq; i += (c.Lq > 40 ? 7 : 1))
        gpu->ops->attention(gpu, dout2 + i * ldo, ldo, dq + i * ldq, ldq, dk, ldk, dv, ldv, 1,
                            c.Lk, c.H, c.Dh, dmask, scale);
    float *all = down(dout, c.Lq * ldo), *one = down(dout2, c.Lq * ldo);
    int ok = 1;
    for (int64_t i = 0; i < c.Lq; i += (c.Lq > 40 ? 7 : 1))
        ok &= same_bits(all + i * ldo, one + i * ldo, W);
    CHECK_MSG(ok, "%s: a query alone differs from the full call", what);
    if (c.Lq > 5) {
        gpu->ops->attention(gpu, dout2 + 5 * ldo, ldo, dq + 5 * ldq, ldq, dk, ldk, dv, ldv,
                            c.Lq - 5, c.Lk, c.H, c.Dh, dmask, scale);
        float *tail = down(dout2, c.Lq * ldo);
        ok = 1;
        for (int64_t i = 5; i < c.Lq; i++)
            ok &= same_bits(tail + i * ldo, all + i * ldo, W);
        CHECK_MSG(ok, "%s: query slice differs", what);
        free(tail);
    }
    free(all);
    free(one);
    dfree(dq);
    dfree(dk);
    dfree(dv);
    dfree(dout);
    dfree(dout2);
    dfree(dmask);
    free(q);
    free(k);
    free(v);
    free(want);
}

static void test_attention(void)
{
    attn_case_t cases[] = {
        {37, 53, 3, 16, 5},   {1, 300, 2, 64, 0},    {96, 96, 4, 16, 0},
        {130, 261, 2, 128, 3}, {50, 1, 1, 8, 1},      {200, 333, 3, 40, 0},
        {300, 700, 4, 128, 0}, /* DiT head size, several key and query tiles */
        {70, 90, 1, 200, 1},   /* a head wider than one 128-dim chunk */
        {130, 140, 1, 512, 0}, /* VAE mid-block attention: one head of 512 */
        {65, 64, 1, 1024, 0},  /* the widest head the contract names */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_attention(cases[i], NULL);

    attn_case_t mc = {61, 300, 3, 32, 2};
    uint8_t *mask = malloc((size_t)mc.Lk);
    for (int64_t j = 0; j < mc.Lk; j++)
        mask[j] = frand() > -0.4f;
    check_attention(mc, mask);
    memset(mask, 1, (size_t)mc.Lk);
    check_attention(mc, mask);
    free(mask);
}

/* Masked keys contribute exactly nothing: the same bits as a call with those
 * keys removed, whatever they hold. All keys masked: zeros. */
static void test_attention_mask_is_drop(void)
{
    const int64_t Lq = 45, Lk = 270, H = 2, Dh = 40, W = H * Dh;
    float *q = rand_buf(Lq * W, 2.0f), *k = rand_buf(Lk * W, 2.0f), *v = rand_buf(Lk * W, 1.0f);
    float *kd = malloc((size_t)(Lk * W) * sizeof(float));
    float *vd = malloc((size_t)(Lk * W) * sizeof(float));
    uint8_t *mask = malloc((size_t)Lk);
    int64_t kept = 0;
    for (int64_t j = 0; j < Lk; j++) {
        mask[j] = (j % 3 != 1) && j != 7;
        if (mask[j]) {
            memcpy(kd + kept * W, k + j * W, (size_t)W * sizeof(float));
            memcpy(vd + kept * W, v + j * W, (size_t)W * sizeof(float));
            kept++;
        } else {
            k[j * W] = 1e30f;
            v[j * W + 1] = NAN;
        }
    }
    float *dq = up(q, Lq * W), *dk = up(k, Lk * W), *dv = up(v, Lk * W);
    float *dkd = up(kd, kept * W), *dvd = up(vd, kept * W);
    uint8_t *dmask = up_bytes(mask, Lk);
    float *dm = gpu->ops->alloc(gpu, (size_t)(Lq * W) * sizeof(float));
    float *dd = gpu->ops->alloc(gpu, (size_t)(Lq * W) * sizeof(float));
    gpu->ops->attention(gpu, dm, W, dq, W, dk, W, dv, W, Lq, Lk, H, Dh, dmask, 0.3f);
    gpu->ops->attention(gpu, dd, W, dq, W, dkd, W, dvd, W, Lq, kept, H, Dh, NULL, 0.3f);
    CHECK(dev_same(dm, dd, Lq * W));

    memset(mask, 0, (size_t)Lk);
    gpu->ops->upload(gpu, dmask, mask, (size_t)Lk);
    gpu->ops->fill(gpu, dm, 7.0f, Lq * W);
    gpu->ops->attention(gpu, dm, W, dq, W, dk, W, dv, W, Lq, Lk, H, Dh, dmask, 0.3f);
    float *got = down(dm, Lq * W);
    int zeros = 1;
    for (int64_t i = 0; i < Lq * W; i++)
        zeros &= got[i] == 0.0f;
    CHECK(zeros);
    free(got);
    dfree(dq);
    dfree(dk);
    dfree(dv);
    dfree(dkd);
    dfree(dvd);
    dfree(dmask);
    dfree(dm);
    dfree(dd);
    free(q);
    free(k);
    free(v);
    free(kd);
    free(vd);
    free(mask);
}

/* ---- rope, conv, upsample ---------------------------------------------- */

static void test_rope(void)
{
    int64_t L = 70, H = 3, Dh = 128, ld = H * Dh + 4;
    float *x = rand_buf(L * ld, 1.0f), *c = rand_buf(L * Dh, 1.0f), *s = rand_buf(L * Dh, 1.0f);
    float *dx = up(x, L * ld), *dc = up(c, L * Dh), *ds = up(s, L * Dh);
    cpu->ops->rope(cpu, x, ld, c, s, L, H, Dh);
    gpu->ops->rope(gpu, dx, ld, dc, ds, L, H, Dh);
    CHECK(check_dev("rope", dx, x, L * ld, TOL_ROUNDED));
    dfree(dx);
    dfree(dc);
    dfree(ds);
    free(x);
    free(c);
    free(s);
}

static void check_conv(int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t kh, int64_t kw,
                       int64_t s, int64_t p, int with_bias)
{
    int64_t Ho = (H + 2 * p - kh) / s + 1, Wo = (W + 2 * p - kw) / s + 1, n = Cout * Ho * Wo;
    float *x = rand_buf(Cin * H * W, 1.0f), *w = rand_buf(Cout * Cin * kh * kw, 1.0f);
    float *b = with_bias ? rand_buf(Cout, 1.0f) : NULL;
    float *want = malloc((size_t)n * sizeof(float));
    float *dx = up(x, Cin * H * W), *dw = up(w, Cout * Cin * kh * kw), *db = b ? up(b, Cout) : NULL;
    float *dy = gpu->ops->alloc(gpu, (size_t)n * sizeof(float));
    float *dy2 = gpu->ops->alloc(gpu, (size_t)n * sizeof(float));
    char what[128];
    snprintf(what, sizeof what, "conv2d %lldx%lldx%lld -> %lld, %lldx%lld s%lld p%lld",
             (long long)Cin, (long long)H, (long long)W, (long long)Cout, (long long)kh,
             (long long)kw, (long long)s, (long long)p);

    cpu->ops->conv2d(cpu, want, x, w, b, Cin, H, W, Cout, kh, kw, s, p);
    gpu->ops->conv2d(gpu, dy, dx, dw, db, Cin, H, W, Cout, kh, kw, s, p);
    gpu->ops->conv2d(gpu, dy2, dx, dw, db, Cin, H, W, Cout, kh, kw, s, p);
    CHECK(check_dev(what, dy, want, n, tol_gemm));
    CHECK_MSG(dev_same(dy, dy2, n), "%s: rerun differs", what);
    dfree(dx);
    dfree(dw);
    dfree(db);
    dfree(dy);
    dfree(dy2);
    free(x);
    free(w);
    free(b);
    free(want);
}

static void test_conv2d(void)
{
    check_conv(5, 9, 11, 7, 3, 3, 1, 1, 1);
    check_conv(5, 9, 11, 7, 1, 1, 1, 0, 1);
    check_conv(6, 13, 10, 4, 3, 3, 2, 0, 0);
    check_conv(3, 12, 12, 9, 3, 3, 2, 1, 1);
    check_conv(4, 8, 9, 3, 1, 1, 2, 0, 1);
    check_conv(33, 20, 21, 17, 3, 3, 1, 1, 1);
    check_conv(3, 7, 45, 5, 3, 3, 1, 1, 1);
    check_conv(2, 6, 40, 3, 3, 3, 1, 0, 0);
    if (!quick)
        check_conv(128, 256, 256, 4, 3, 3, 1, 1, 1); /* a column buffer in two chunks */
}

static void test_upsample(void)
{
    int64_t C = 3, H = 5, W = 7;
    float *x = rand_buf(C * H * W, 1.0f), *want = malloc((size_t)(C * 4 * H * W) * sizeof(float));
    float *dx = up(x, C * H * W);
    float *dy = gpu->ops->alloc(gpu, (size_t)(C * 4 * H * W) * sizeof(float));
    cpu->ops->upsample_nearest2x(cpu, want, x, C, H, W);
    gpu->ops->upsample_nearest2x(gpu, dy, dx, C, H, W);
    CHECK(check_dev("upsample_nearest2x", dy, want, C * 4 * H * W, TOL_EXACT));
    dfree(dx);
    dfree(dy);
    free(x);
    free(want);
}

int main(void)
{
    sdc_error_t err = {0};
    sdc_status_t st;

    gpu = make_backend("cuda", &st, &err);
    if (st == SDC_ERR_UNSUPPORTED) {
        printf("SKIP test_backend_conformance: %s\n", err.msg);
        return 77;
    }
    if (st != SDC_OK) {
        fprintf(stderr, "cuda backend: %s\n", err.msg);
        return 1;
    }
    cpu = make_backend("cpu", &st, &err);
    if (st != SDC_OK) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    const char *q = getenv("SDC_CONFORMANCE_QUICK");
    quick = q && strcmp(q, "1") == 0;
    const char *tf32 = getenv("SDC_CUDA_TF32");
    if (tf32 && strcmp(tf32, "1") == 0)
        tol_gemm = TOL_TF32;
    printf("# linear/conv2d tolerance %.0e%s\n", tol_gemm,
           tol_gemm == TOL_TF32 ? " (SDC_CUDA_TF32=1)" : "");

    RUN(test_create);
    RUN(test_memory);
    RUN(test_copy_strided);
    RUN(test_linear);
    RUN(test_linear_rows_independent);
    RUN(test_layer_norm);
    RUN(test_rms_norm);
    RUN(test_group_norm);
    RUN(test_softmax);
    RUN(test_elementwise);
    RUN(test_elementwise_extremes);
    RUN(test_modulate_gate_add);
    RUN(test_attention);
    RUN(test_attention_mask_is_drop);
    RUN(test_rope);
    RUN(test_conv2d);
    RUN(test_upsample);

    /* the fallback product (SDC_CUDA_GEMM=simt) through the same checks */
    sdc_backend_t *lt = gpu;
    setenv("SDC_CUDA_GEMM", "simt", 1);
    gpu = make_backend("cuda", &st, &err);
    unsetenv("SDC_CUDA_GEMM");
    if (st != SDC_OK) {
        fprintf(stderr, "cuda backend with SDC_CUDA_GEMM=simt: %s\n", err.msg);
        return 1;
    }
    tol_gemm = TOL_PRODUCT;
    printf("# SDC_CUDA_GEMM=simt\n");
    RUN(test_linear);
    RUN(test_linear_rows_independent);
    RUN(test_conv2d);
    sdc_backend_destroy(gpu);
    gpu = lt;

    sdc_backend_destroy(cpu);
    sdc_backend_destroy(gpu);
    TEST_EXIT();
}
