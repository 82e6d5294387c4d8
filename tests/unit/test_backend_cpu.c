/*
 * test_backend_cpu.c: every op of the CPU backend against a naive
 * double-precision reference on random inputs (odd sizes, padded leading
 * dimensions), plus the determinism contract of backend.h: bit-identical
 * results for 1 and 2 threads, a linear row that does not depend on the
 * other rows of the call, attention that does not depend on query tiling,
 * and masked keys that are exactly dropped keys. Both kernel tables (AVX2
 * when the CPU has it, and the portable one) go through the same checks.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#include "backend/backend.h"

#define TOL 1e-5

static sdc_backend_t *be1; /* 1 thread */
static sdc_backend_t *be2; /* 2 threads */
static const char *table_name = "default";

/* ---- helpers ----------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

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

static sdc_backend_t *make_cpu(int n_threads)
{
    sdc_backend_config_t cfg = {.name = "cpu", .n_threads = n_threads};
    sdc_backend_t *be = NULL;
    sdc_error_t err = {0};
    if (sdc_backend_create(&cfg, &be, &err) != SDC_OK) {
        fprintf(stderr, "  cpu backend: %s\n", err.msg);
        exit(1);
    }
    return be;
}

/* ---- references -------------------------------------------------------- */

static void ref_linear(float *y, int64_t ldy, const float *x, int64_t ldx, const float *w,
                       const float *b, int64_t M, int64_t K, int64_t N)
{
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double acc = b ? b[n] : 0.0;
            for (int64_t k = 0; k < K; k++)
                acc += (double)x[m * ldx + k] * w[n * K + k];
            y[m * ldy + n] = (float)acc;
        }
}

static void ref_attention(float *out, int64_t ldo, const float *q, int64_t ldq, const float *k,
                          int64_t ldk, const float *v, int64_t ldv, int64_t Lq, int64_t Lk,
                          int64_t H, int64_t Dh, const uint8_t *mask, float scale)
{
    double *s = malloc((size_t)(Lk > 0 ? Lk : 1) * sizeof(double));
    for (int64_t h = 0; h < H; h++)
        for (int64_t i = 0; i < Lq; i++) {
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < Lk; j++) {
                if (mask && !mask[j])
                    continue;
                double acc = 0;
                for (int64_t d = 0; d < Dh; d++)
                    acc += (double)q[i * ldq + h * Dh + d] * k[j * ldk + h * Dh + d];
                s[j] = acc * scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            for (int64_t j = 0; j < Lk; j++)
                if (!mask || mask[j]) {
                    s[j] = exp(s[j] - mx);
                    sum += s[j];
                }
            for (int64_t d = 0; d < Dh; d++) {
                double acc = 0;
                for (int64_t j = 0; j < Lk; j++)
                    if (!mask || mask[j])
                        acc += s[j] * v[j * ldv + h * Dh + d];
                out[i * ldo + h * Dh + d] = sum > 0 ? (float)(acc / sum) : 0.0f;
            }
        }
    free(s);
}

static void ref_conv2d(float *y, const float *x, const float *w, const float *b, int64_t Cin,
                       int64_t H, int64_t W, int64_t Cout, int64_t kh, int64_t kw, int64_t s,
                       int64_t p)
{
    int64_t Ho = (H + 2 * p - kh) / s + 1, Wo = (W + 2 * p - kw) / s + 1;
    for (int64_t co = 0; co < Cout; co++)
        for (int64_t oy = 0; oy < Ho; oy++)
            for (int64_t ox = 0; ox < Wo; ox++) {
                double acc = b ? b[co] : 0.0;
                for (int64_t ci = 0; ci < Cin; ci++)
                    for (int64_t ky = 0; ky < kh; ky++)
                        for (int64_t kx = 0; kx < kw; kx++) {
                            int64_t iy = oy * s - p + ky, ix = ox * s - p + kx;
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                continue;
                            acc += (double)x[(ci * H + iy) * W + ix] *
                                   w[((co * Cin + ci) * kh + ky) * kw + kx];
                        }
                y[(co * Ho + oy) * Wo + ox] = (float)acc;
            }
}

static double ref_gelu_tanh(double x)
{
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

/* ---- creation and memory ----------------------------------------------- */

static void test_create_by_name(void)
{
    sdc_backend_t *be = NULL;
    sdc_error_t err = {0};

    sdc_backend_config_t cpu = {.name = "cpu", .n_threads = 3};
    CHECK_EQ_INT(sdc_backend_create(&cpu, &be, &err), SDC_OK);
    CHECK(be && strcmp(be->ops->name, "cpu") == 0 && be->ops->host_memory == 1);
    CHECK_EQ_INT(be ? be->n_threads : -1, 3);
    sdc_backend_destroy(be);

    sdc_backend_config_t all = {.name = NULL, .n_threads = 0};
    CHECK_EQ_INT(sdc_backend_create(&all, &be, &err), SDC_OK);
    CHECK(be && be->n_threads >= 1);
    sdc_backend_destroy(be);

    /* "cuda" is known; without CUDA in the build or a GPU it says so */
    sdc_backend_config_t cuda = {.name = "cuda"};
    if (sdc_backend_create(&cuda, &be, &err) == SDC_OK) {
        CHECK(be && strcmp(be->ops->name, "cuda") == 0 && be->ops->host_memory == 0);
        sdc_backend_destroy(be);
    } else {
        CHECK_EQ_INT(err.code, SDC_ERR_UNSUPPORTED);
        CHECK(be == NULL && strstr(err.msg, "cuda") != NULL);
    }

    sdc_backend_config_t bogus = {.name = "tpu"};
    CHECK_EQ_INT(sdc_backend_create(&bogus, &be, &err), SDC_ERR_INVALID_ARG);
    CHECK(be == NULL && strstr(err.msg, "tpu") != NULL);

    sdc_backend_config_t neg = {.name = "cpu", .n_threads = -2};
    CHECK_EQ_INT(sdc_backend_create(&neg, &be, &err), SDC_ERR_INVALID_ARG);
    CHECK(be == NULL);
    sdc_backend_destroy(NULL);
}

static void test_memory(void)
{
    const sdc_backend_ops_t *o = be2->ops;
    size_t sizes[] = {0, 1, 63, 64, 1000, 1 << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        void *p = o->alloc(be2, sizes[i]);
        CHECK(p != NULL && (uintptr_t)p % 64 == 0);
        o->free(be2, p);
    }
    int64_t n = 100003;
    float *host = rand_buf(n, 1.0f), *back = calloc((size_t)n, sizeof(float));
    float *d = o->alloc(be2, (size_t)n * sizeof(float));
    float *e = o->alloc(be2, (size_t)n * sizeof(float));
    o->upload(be2, d, host, (size_t)n * sizeof(float));
    o->copy(be2, e, d, (size_t)n * sizeof(float));
    o->download(be2, back, e, (size_t)n * sizeof(float));
    o->sync(be2);
    CHECK(same_bits(back, host, n));
    o->fill(be2, d, -2.5f, n - 1);
    CHECK(d[0] == -2.5f && d[n - 2] == -2.5f && d[n - 1] == host[n - 1]);
    o->free(be2, d);
    o->free(be2, e);
    free(host);
    free(back);
}

/* ---- layout ------------------------------------------------------------ */

/* Naive strided copy through a multi-index, for comparison. */
static void ref_copy_strided(float *dst, const float *src, int ndim, const int64_t *shape,
                             const int64_t *ds, const int64_t *ss)
{
    int64_t idx[6] = {0}, total = 1;
    for (int d = 0; d < ndim; d++)
        total *= shape[d];
    for (int64_t t = 0; t < total; t++) {
        int64_t doff = 0, soff = 0;
        for (int d = 0; d < ndim; d++) {
            doff += idx[d] * ds[d];
            soff += idx[d] * ss[d];
        }
        dst[doff] = src[soff];
        for (int d = ndim - 1; d >= 0; d--) {
            if (++idx[d] < shape[d])
                break;
            idx[d] = 0;
        }
    }
}

static void check_copy_strided(const char *what, int ndim, const int64_t *shape,
                               const int64_t *ds, const int64_t *ss, int64_t src_n,
                               int64_t dst_n)
{
    float *src = rand_buf(src_n, 1.0f);
    float *want = rand_buf(dst_n, 1.0f), *got1 = copy_buf(want, dst_n),
          *got2 = copy_buf(want, dst_n);
    ref_copy_strided(want, src, ndim, shape, ds, ss);
    be1->ops->copy_strided(be1, got1, src, ndim, shape, ds, ss);
    be2->ops->copy_strided(be2, got2, src, ndim, shape, ds, ss);
    CHECK_MSG(same_bits(got1, want, dst_n), "%s (1 thread)", what);
    CHECK_MSG(same_bits(got2, want, dst_n), "%s (2 threads)", what);
    free(src);
    free(want);
    free(got1);
    free(got2);
}

static void test_copy_strided(void)
{
    /* permute (L, H, D) -> (H, L, D) with a padded source row */
    {
        int64_t L = 37, H = 5, D = 12, ld = H * D + 3;
        int64_t shape[3] = {H, L, D}, ds[3] = {L * D, D, 1}, ss[3] = {D, ld, 1};
        check_copy_strided("permute", 3, shape, ds, ss, L * ld, H * L * D);
    }
    /* transpose of the last two dims: unit destination, strided source */
    {
        int64_t A = 33, B = 129;
        int64_t shape[2] = {A, B}, ds[2] = {B, 1}, ss[2] = {1, A};
        check_copy_strided("transpose", 2, shape, ds, ss, A * B, A * B);
    }
    /* broadcast a row over 300 rows, and repeat_interleave x3 */
    {
        int64_t shape[2] = {300, 65}, ds[2] = {70, 1}, ss[2] = {0, 1};
        check_copy_strided("broadcast", 2, shape, ds, ss, 65, 300 * 70);
        int64_t shape3[3] = {41, 3, 7}, ds3[3] = {21, 7, 1}, ss3[3] = {7, 0, 1};
        check_copy_strided("repeat_interleave", 3, shape3, ds3, ss3, 41 * 7, 41 * 21);
    }
    /* six dims, every stride odd */
    {
        int64_t shape[6] = {2, 3, 2, 5, 3, 4};
        int64_t ss[6] = {3 * 2 * 5 * 3 * 4, 1, 3, 6, 30, 90};
        int64_t ds[6] = {360 + 7, 120 + 1, 60, 12, 4, 1};
        check_copy_strided("6d", 6, shape, ds, ss, 2 * 360, 2 * 367);
    }
    /* concat: a part written into the right half of wider rows */
    {
        int64_t shape[2] = {50, 9}, ds[2] = {20, 1}, ss[2] = {9, 1};
        check_copy_strided("concat part", 2, shape, ds, ss, 50 * 9, 50 * 20);
    }
}

/* ---- linear ------------------------------------------------------------ */

static void check_linear(int64_t M, int64_t K, int64_t N, int64_t padx, int64_t pady,
                         int with_bias)
{
    int64_t ldx = K + padx, ldy = N + pady;
    float *x = rand_buf(M * ldx, 1.0f), *w = rand_buf(N * K, 1.0f);
    float *b = with_bias ? rand_buf(N, 1.0f) : NULL;
    float *want = rand_buf(M * ldy, 1.0f), *got = copy_buf(want, M * ldy);
    ref_linear(want, ldy, x, ldx, w, b, M, K, N);
    be2->ops->linear(be2, got, ldy, x, ldx, w, b, M, K, N);
    char what[96];
    snprintf(what, sizeof what, "linear M=%lld K=%lld N=%lld", (long long)M, (long long)K,
             (long long)N);
    CHECK(test_close(what, got, want, M * ldy, TOL));
    for (int64_t m = 0; m < M; m++) /* padding columns untouched */
        CHECK(same_bits(got + m * ldy + N, want + m * ldy + N, pady));
    free(x);
    free(w);
    free(b);
    free(want);
    free(got);
}

static void test_linear(void)
{
    check_linear(1, 1, 1, 0, 0, 1);
    check_linear(7, 13, 5, 3, 2, 1);
    check_linear(37, 300, 29, 5, 0, 0);
    check_linear(100, 64, 96, 0, 7, 1);
    check_linear(3, 777, 131, 1, 1, 1);  /* K past one K-block */
    check_linear(150, 40, 2100, 0, 0, 1); /* N past one column block */
    check_linear(5, 0, 9, 0, 0, 1);      /* empty sum: the bias */
}

/* Row r of the output depends on row r of x only: every split of the rows
 * into calls, and either thread count, gives the same bits. */
static void check_linear_rows(int64_t M, int64_t K, int64_t N)
{
    float *x = rand_buf(M * K, 1.0f), *w = rand_buf(N * K, 1.0f), *b = rand_buf(N, 1.0f);
    float *all = calloc((size_t)(M * N), sizeof(float));
    float *part = calloc((size_t)(M * N), sizeof(float));
    float *all1 = calloc((size_t)(M * N), sizeof(float));

    be2->ops->linear(be2, all, N, x, K, w, b, M, K, N);
    be1->ops->linear(be1, all1, N, x, K, w, b, M, K, N);
    CHECK_MSG(same_bits(all, all1, M * N), "threads M=%lld K=%lld N=%lld", (long long)M,
              (long long)K, (long long)N);
    for (int64_t m = 0; m < M; m++)
        be2->ops->linear(be2, part + m * N, N, x + m * K, K, w, b, 1, K, N);
    CHECK_MSG(same_bits(all, part, M * N), "row by row M=%lld K=%lld N=%lld", (long long)M,
              (long long)K, (long long)N);
    memset(part, 0, (size_t)(M * N) * sizeof(float));
    for (int64_t m0 = 0, step = 1; m0 < M; m0 += step, step = step * 2 + 1) {
        int64_t m = M - m0 < step ? M - m0 : step;
        be1->ops->linear(be1, part + m0 * N, N, x + m0 * K, K, w, b, m, K, N);
    }
    CHECK_MSG(same_bits(all, part, M * N), "uneven splits M=%lld K=%lld N=%lld", (long long)M,
              (long long)K, (long long)N);
    free(x);
    free(w);
    free(b);
    free(all);
    free(part);
    free(all1);
}

/* Weights packed at load time give the bits of the per-call packing, for
 * both thread counts, strided x and y, and shapes off every block size. */
static void check_linear_packed(int64_t M, int64_t K, int64_t N, int64_t padx, int64_t pady)
{
    int64_t ldx = K + padx, ldy = N + pady;
    float *x = rand_buf(M * ldx, 1.0f), *w = rand_buf(N * K, 1.0f), *b = rand_buf(N, 1.0f);
    float *want = rand_buf(M * ldy, 1.0f), *got = copy_buf(want, M * ldy);
    float *got1 = copy_buf(want, M * ldy);
    float *wp = be2->ops->linear_pack(be2, w, N, K);

    CHECK(wp != NULL);
    be2->ops->linear(be2, want, ldy, x, ldx, w, b, M, K, N);
    be2->ops->linear_packed(be2, got, ldy, x, ldx, wp, b, M, K, N);
    be1->ops->linear_packed(be1, got1, ldy, x, ldx, wp, b, M, K, N);
    CHECK_MSG(same_bits(got, want, M * ldy), "packed M=%lld K=%lld N=%lld", (long long)M,
              (long long)K, (long long)N);
    CHECK_MSG(same_bits(got1, want, M * ldy), "packed 1 thread M=%lld K=%lld N=%lld",
              (long long)M, (long long)K, (long long)N);
    be2->ops->free(be2, wp);
    free(x);
    free(w);
    free(b);
    free(want);
    free(got);
    free(got1);
}

static void test_linear_packed(void)
{
    check_linear_packed(1, 1, 1, 0, 0);
    check_linear_packed(7, 13, 5, 3, 2);
    check_linear_packed(37, 300, 29, 5, 0);
    check_linear_packed(3, 777, 131, 1, 1);   /* K past one K-block */
    check_linear_packed(150, 40, 2100, 0, 3); /* N past one column block */
    check_linear_packed(200, 520, 2200, 2, 0); /* both, and row blocks */
    check_linear_packed(5, 0, 9, 0, 0);       /* empty sum: the bias */
}

static void test_linear_rows_independent(void)
{
    check_linear_rows(40, 8, 8);
    check_linear_rows(97, 64, 64);
    check_linear_rows(61, 300, 1000);
    check_linear_rows(300, 1024, 96);
    check_linear_rows(13, 4096, 40);
    check_linear_rows(1300, 96, 33);
    check_linear_rows(20, 300, 2100); /* two column blocks, two K-blocks */
}

/* ---- normalization ----------------------------------------------------- */

static void test_layer_norm(void)
{
    int64_t rows = 37, dim = 301;
    float *x = rand_buf(rows * dim, 3.0f), *g = rand_buf(dim, 1.0f), *bb = rand_buf(dim, 1.0f);
    for (int64_t i = 0; i < rows * dim; i++)
        x[i] += 5.0f; /* an offset the variance must not be fooled by */
    for (int variant = 0; variant < 3; variant++) {
        const float *gamma = variant == 1 ? NULL : g, *beta = variant == 2 ? NULL : bb;
        float *want = malloc((size_t)(rows * dim) * sizeof(float));
        for (int64_t r = 0; r < rows; r++) {
            double mean = 0, var = 0;
            for (int64_t d = 0; d < dim; d++)
                mean += x[r * dim + d];
            mean /= dim;
            for (int64_t d = 0; d < dim; d++)
                var += (x[r * dim + d] - mean) * (x[r * dim + d] - mean);
            var /= dim;
            for (int64_t d = 0; d < dim; d++) {
                double v = (x[r * dim + d] - mean) / sqrt(var + 1e-6);
                want[r * dim + d] =
                    (float)(v * (gamma ? gamma[d] : 1.0) + (beta ? beta[d] : 0.0));
            }
        }
        float *got = copy_buf(x, rows * dim);
        be2->ops->layer_norm(be2, got, got, gamma, beta, rows, dim, 1e-6f); /* in place */
        CHECK(test_close("layer_norm", got, want, rows * dim, TOL));
        free(want);
        free(got);
    }
    free(x);
    free(g);
    free(bb);
}

static void test_rms_norm(void)
{
    int64_t rows = 23, dim = 40, ld = 3 * dim + 5;
    float *x = rand_buf(rows * ld, 2.0f), *w = rand_buf(dim, 1.0f);
    for (int with_w = 0; with_w < 2; with_w++) {
        float *want = copy_buf(x, rows * ld), *got = copy_buf(x, rows * ld);
        for (int64_t r = 0; r < rows; r++) {
            double ms = 0;
            for (int64_t d = 0; d < dim; d++)
                ms += (double)x[r * ld + dim + d] * x[r * ld + dim + d];
            ms /= dim;
            for (int64_t d = 0; d < dim; d++)
                want[r * ld + dim + d] =
                    (float)(x[r * ld + dim + d] / sqrt(ms + 1e-6) * (with_w ? w[d] : 1.0));
        }
        /* the second head of each row, in place, neighbours untouched */
        be2->ops->rms_norm(be2, got + dim, got + dim, with_w ? w : NULL, rows, dim, ld, 1e-6f);
        CHECK(test_close("rms_norm", got, want, rows * ld, TOL));
        for (int64_t r = 0; r < rows; r++) {
            CHECK(same_bits(got + r * ld, x + r * ld, dim));
            CHECK(same_bits(got + r * ld + 2 * dim, x + r * ld + 2 * dim, ld - 2 * dim));
        }
        free(want);
        free(got);
    }
    free(x);
    free(w);
}

static void test_modulate_gate_add(void)
{
    int64_t rows = 19, dim = 77, ldr = 100;
    float *x = rand_buf(rows * dim, 1.0f), *shift = rand_buf(dim, 1.0f);
    float *scale = rand_buf(dim, 1.0f), *gate = rand_buf(dim, 1.0f);
    float *r = rand_buf(rows * ldr, 1.0f);
    float *want = malloc((size_t)(rows * dim) * sizeof(float)), *got = copy_buf(x, rows * dim);

    for (int64_t i = 0; i < rows; i++)
        for (int64_t d = 0; d < dim; d++)
            want[i * dim + d] = (float)((double)x[i * dim + d] * (1.0 + scale[d]) + shift[d]);
    be2->ops->modulate(be2, got, got, shift, scale, rows, dim);
    CHECK(test_close("modulate", got, want, rows * dim, TOL));

    for (int g = 0; g < 2; g++) {
        memcpy(got, x, (size_t)(rows * dim) * sizeof(float));
        for (int64_t i = 0; i < rows; i++)
            for (int64_t d = 0; d < dim; d++)
                want[i * dim + d] =
                    (float)(x[i * dim + d] + (g ? (double)gate[d] : 1.0) * r[i * ldr + d]);
        be2->ops->gate_add(be2, got, g ? gate : NULL, r, ldr, rows, dim);
        CHECK(test_close("gate_add", got, want, rows * dim, TOL));
    }
    free(x);
    free(shift);
    free(scale);
    free(gate);
    free(r);
    free(want);
    free(got);
}

static void test_group_norm(void)
{
    int64_t C = 12, HW = 37, G = 4;
    float *x = rand_buf(C * HW, 2.0f), *g = rand_buf(C, 1.0f), *b = rand_buf(C, 1.0f);
    float *want = malloc((size_t)(C * HW) * sizeof(float)), *got = copy_buf(x, C * HW);
    int64_t n = C / G * HW;
    for (int64_t gi = 0; gi < G; gi++) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < n; i++)
            mean += x[gi * n + i];
        mean /= n;
        for (int64_t i = 0; i < n; i++)
            var += (x[gi * n + i] - mean) * (x[gi * n + i] - mean);
        var /= n;
        for (int64_t i = 0; i < n; i++) {
            int64_t c = gi * (C / G) + i / HW;
            want[gi * n + i] = (float)((x[gi * n + i] - mean) / sqrt(var + 1e-6) * g[c] + b[c]);
        }
    }
    be2->ops->group_norm(be2, got, got, g, b, C, HW, G, 1e-6f);
    CHECK(test_close("group_norm", got, want, C * HW, TOL));
    free(x);
    free(g);
    free(b);
    free(want);
    free(got);
}

/* ---- element-wise ------------------------------------------------------ */

static void test_elementwise(void)
{
    const int64_t n = 100003; /* several parallel chunks and a ragged tail */
    float *x = rand_buf(n, 8.0f), *a = rand_buf(n, 1.0f), *b = rand_buf(n, 1.0f);
    float *got = malloc((size_t)n * sizeof(float)), *want = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        want[i] = (float)ref_gelu_tanh(x[i]);
    be2->ops->gelu_tanh(be2, got, x, n);
    CHECK(test_close("gelu_tanh", got, want, n, TOL));
    for (int64_t i = 0; i < n; i++)
        want[i] = (float)(0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0))));
    be2->ops->gelu_erf(be2, got, x, n);
    CHECK(test_close("gelu_erf", got, want, n, TOL));
    for (int64_t i = 0; i < n; i++)
        want[i] = (float)(x[i] / (1.0 + exp(-(double)x[i])));
    be2->ops->silu(be2, got, x, n);
    CHECK(test_close("silu", got, want, n, TOL));

    memcpy(got, x, (size_t)n * sizeof(float)); /* in place */
    be2->ops->silu(be2, got, got, n);
    CHECK(test_close("silu in place", got, want, n, TOL));

    for (int64_t i = 0; i < n; i++)
        want[i] = a[i] + b[i];
    be2->ops->add(be2, got, a, b, n);
    CHECK(same_bits(got, want, n));
    for (int64_t i = 0; i < n; i++)
        want[i] = a[i] * b[i];
    be2->ops->mul(be2, got, a, b, n);
    CHECK(same_bits(got, want, n));
    for (int64_t i = 0; i < n; i++)
        want[i] = (float)(0.75 * a[i] - 1.5 * b[i]);
    be2->ops->axpby(be2, got, 0.75f, a, -1.5f, b, n);
    CHECK(test_close("axpby", got, want, n, TOL));
    free(x);
    free(a);
    free(b);
    free(got);
    free(want);
}

/* Saturated and tiny inputs, each element against its own reference. */
static void test_elementwise_extremes(void)
{
    const float x[] = {0.0f,  -0.0f,  1e-30f, -1e-30f, 1e-3f, -1e-3f, 20.0f,  -20.0f,
                       88.0f, -88.0f, 90.0f,  -90.0f,  100.0f, -100.0f, 1e4f, -1e4f};
    const int64_t n = sizeof(x) / sizeof(x[0]);
    float got[sizeof(x) / sizeof(x[0])];

    be2->ops->gelu_tanh(be2, got, x, n);
    for (int64_t i = 0; i < n; i++) {
        double want = ref_gelu_tanh(x[i]);
        CHECK_MSG(fabs(got[i] - want) <= 1e-6 * fabs(want) + 1e-30, "gelu_tanh(%g) = %g, want %g",
                  (double)x[i], (double)got[i], want);
    }
    be2->ops->silu(be2, got, x, n);
    for (int64_t i = 0; i < n; i++) {
        double want = x[i] / (1.0 + exp(-(double)x[i]));
        CHECK_MSG(fabs(got[i] - want) <= 1e-6 * fabs(want) + 1e-30, "silu(%g) = %g, want %g",
                  (double)x[i], (double)got[i], want);
    }
    be2->ops->gelu_erf(be2, got, x, n);
    for (int64_t i = 0; i < n; i++) {
        double want = 0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0)));
        CHECK_MSG(fabs(got[i] - want) <= 1e-6 * fabs(want) + 1e-30, "gelu_erf(%g) = %g, want %g",
                  (double)x[i], (double)got[i], want);
    }
}

static void test_softmax(void)
{
    int64_t rows = 9, dim = 1001;
    float *x = rand_buf(rows * dim, 20.0f), *want = malloc((size_t)(rows * dim) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        double mx = -INFINITY, sum = 0;
        for (int64_t d = 0; d < dim; d++)
            mx = fmax(mx, x[r * dim + d]);
        for (int64_t d = 0; d < dim; d++)
            sum += exp(x[r * dim + d] - mx);
        for (int64_t d = 0; d < dim; d++)
            want[r * dim + d] = (float)(exp(x[r * dim + d] - mx) / sum);
    }
    be2->ops->softmax(be2, x, rows, dim);
    CHECK(test_close("softmax", x, want, rows * dim, TOL));
    float one[3] = {5.0f, 5.0f, 5.0f};
    be2->ops->softmax(be2, one, 1, 3);
    CHECK(fabsf(one[0] - 1.0f / 3.0f) < 1e-7f && one[0] == one[2]);
    free(x);
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
          *v = rand_buf(c.Lk * ldv, 1.0f);
    float *want = rand_buf(c.Lq * ldo, 1.0f), *got = copy_buf(want, c.Lq * ldo),
          *got1 = copy_buf(want, c.Lq * ldo);
    float scale = 1.0f / sqrtf((float)c.Dh);

    ref_attention(want, ldo, q, ldq, k, ldk, v, ldv, c.Lq, c.Lk, c.H, c.Dh, mask, scale);
    be2->ops->attention(be2, got, ldo, q, ldq, k, ldk, v, ldv, c.Lq, c.Lk, c.H, c.Dh, mask,
                        scale);
    be1->ops->attention(be1, got1, ldo, q, ldq, k, ldk, v, ldv, c.Lq, c.Lk, c.H, c.Dh, mask,
                        scale);
    char what[128];
    snprintf(what, sizeof what, "attention Lq=%lld Lk=%lld H=%lld Dh=%lld%s", (long long)c.Lq,
             (long long)c.Lk, (long long)c.H, (long long)c.Dh, mask ? " masked" : "");
    CHECK(test_close(what, got, want, c.Lq * ldo, TOL));
    CHECK_MSG(same_bits(got, got1, c.Lq * ldo), "%s: 1 vs 2 threads", what);

    /* each query alone gives the same bits as in the full call */
    float *one = malloc((size_t)ldo * sizeof(float));
    int ok = 1;
    for (int64_t i = 0; i < c.Lq; i += (c.Lq > 40 ? 7 : 1)) {
        memcpy(one, want + i * ldo, (size_t)ldo * sizeof(float));
        be1->ops->attention(be1, one, ldo, q + i * ldq, ldq, k, ldk, v, ldv, 1, c.Lk, c.H,
                            c.Dh, mask, scale);
        ok &= same_bits(one, got + i * ldo, W);
    }
    CHECK_MSG(ok, "%s: a query alone differs from the full call", what);
    /* and an odd slice of the queries too */
    if (c.Lq > 5) {
        float *tail = copy_buf(got, c.Lq * ldo);
        be2->ops->attention(be2, tail + 5 * ldo, ldo, q + 5 * ldq, ldq, k, ldk, v, ldv,
                            c.Lq - 5, c.Lk, c.H, c.Dh, mask, scale);
        CHECK_MSG(same_bits(tail, got, c.Lq * ldo), "%s: query slice differs", what);
        free(tail);
    }
    free(one);
    free(q);
    free(k);
    free(v);
    free(want);
    free(got);
    free(got1);
}

static void test_attention(void)
{
    attn_case_t cases[] = {
        {37, 53, 3, 16, 5}, {1, 300, 2, 64, 0}, {96, 96, 4, 16, 0},
        {130, 261, 2, 128, 3}, /* keys past one K-block, Lk not a tile multiple */
        {50, 1, 1, 8, 1},      /* a single key */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_attention(cases[i], NULL);

    attn_case_t mc = {61, 300, 3, 32, 2};
    uint8_t *mask = malloc((size_t)mc.Lk);
    for (int64_t j = 0; j < mc.Lk; j++)
        mask[j] = frand() > -0.4f;
    check_attention(mc, mask);
    memset(mask, 1, (size_t)mc.Lk);
    check_attention(mc, mask); /* all kept: same as no mask */
    free(mask);
}

/* Masked keys contribute exactly nothing: the same bits as a call with
 * those keys removed. A query whose keys are all masked gets zeros. */
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
        } else { /* what a masked key holds must not matter */
            k[j * W] = 1e30f;
            v[j * W + 1] = NAN;
        }
    }
    float *masked = malloc((size_t)(Lq * W) * sizeof(float));
    float *dropped = malloc((size_t)(Lq * W) * sizeof(float));
    be2->ops->attention(be2, masked, W, q, W, k, W, v, W, Lq, Lk, H, Dh, mask, 0.3f);
    be1->ops->attention(be1, dropped, W, q, W, kd, W, vd, W, Lq, kept, H, Dh, NULL, 0.3f);
    CHECK(same_bits(masked, dropped, Lq * W));

    memset(mask, 0, (size_t)Lk);
    for (int64_t i = 0; i < Lq * W; i++)
        masked[i] = 7.0f;
    be2->ops->attention(be2, masked, W, q, W, k, W, v, W, Lq, Lk, H, Dh, mask, 0.3f);
    int zeros = 1;
    for (int64_t i = 0; i < Lq * W; i++)
        zeros &= masked[i] == 0.0f;
    CHECK(zeros);
    free(q);
    free(k);
    free(v);
    free(kd);
    free(vd);
    free(mask);
    free(masked);
    free(dropped);
}

/* ---- rope, conv, upsample ---------------------------------------------- */

static void test_rope(void)
{
    int64_t L = 7, H = 3, Dh = 8, ld = H * Dh + 4;
    float *x = rand_buf(L * ld, 1.0f), *c = rand_buf(L * Dh, 1.0f), *s = rand_buf(L * Dh, 1.0f);
    float *want = copy_buf(x, L * ld), *got = copy_buf(x, L * ld);
    for (int64_t t = 0; t < L; t++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t j = 0; j < Dh; j += 2) {
                double a = x[t * ld + h * Dh + j], b = x[t * ld + h * Dh + j + 1];
                want[t * ld + h * Dh + j] = (float)(a * c[t * Dh + j] - b * s[t * Dh + j]);
                want[t * ld + h * Dh + j + 1] =
                    (float)(b * c[t * Dh + j + 1] + a * s[t * Dh + j + 1]);
            }
    be2->ops->rope(be2, got, ld, c, s, L, H, Dh);
    CHECK(test_close("rope", got, want, L * ld, TOL));
    free(x);
    free(c);
    free(s);
    free(want);
    free(got);
}

static void check_conv(int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t kh, int64_t kw,
                       int64_t s, int64_t p, int with_bias)
{
    int64_t Ho = (H + 2 * p - kh) / s + 1, Wo = (W + 2 * p - kw) / s + 1, n = Cout * Ho * Wo;
    float *x = rand_buf(Cin * H * W, 1.0f), *w = rand_buf(Cout * Cin * kh * kw, 1.0f);
    float *b = with_bias ? rand_buf(Cout, 1.0f) : NULL;
    float *want = malloc((size_t)n * sizeof(float)), *got = malloc((size_t)n * sizeof(float));
    float *got1 = malloc((size_t)n * sizeof(float));
    ref_conv2d(want, x, w, b, Cin, H, W, Cout, kh, kw, s, p);
    be2->ops->conv2d(be2, got, x, w, b, Cin, H, W, Cout, kh, kw, s, p);
    be1->ops->conv2d(be1, got1, x, w, b, Cin, H, W, Cout, kh, kw, s, p);
    char what[96];
    snprintf(what, sizeof what, "conv2d %lldx%lld s%lld p%lld", (long long)kh, (long long)kw,
             (long long)s, (long long)p);
    CHECK(test_close(what, got, want, n, TOL));
    CHECK_MSG(same_bits(got, got1, n), "%s: 1 vs 2 threads", what);
    free(x);
    free(w);
    free(b);
    free(want);
    free(got);
    free(got1);
}

static void test_conv2d(void)
{
    check_conv(5, 9, 11, 7, 3, 3, 1, 1, 1);  /* 3x3 pad 1 */
    check_conv(5, 9, 11, 7, 1, 1, 1, 0, 1);  /* 1x1: plain GEMM */
    check_conv(6, 13, 10, 4, 3, 3, 2, 0, 0); /* stride 2, no pad */
    check_conv(3, 12, 12, 9, 3, 3, 2, 1, 1); /* stride 2 with pad */
    check_conv(4, 8, 9, 3, 1, 1, 2, 0, 1);   /* strided 1x1 */
    check_conv(33, 20, 21, 17, 3, 3, 1, 1, 1); /* K past one K-block */
    check_conv(3, 7, 45, 5, 3, 3, 1, 1, 1);    /* rows wider than a panel */
    check_conv(2, 6, 40, 3, 3, 3, 1, 0, 0);    /* ... without padding */
}

static void test_upsample(void)
{
    int64_t C = 3, H = 5, W = 7;
    float *x = rand_buf(C * H * W, 1.0f), *y = malloc((size_t)(C * 4 * H * W) * sizeof(float));
    be2->ops->upsample_nearest2x(be2, y, x, C, H, W);
    int ok = 1;
    for (int64_t c = 0; c < C; c++)
        for (int64_t i = 0; i < 2 * H; i++)
            for (int64_t j = 0; j < 2 * W; j++)
                ok &= y[(c * 2 * H + i) * 2 * W + j] == x[(c * H + i / 2) * W + j / 2];
    CHECK(ok);
    free(x);
    free(y);
}

/* ---- thread count ------------------------------------------------------ */

/* Every op at sizes where the threads really split the work: 1 and 2
 * threads give the same bits. */
static void test_threads_bit_identical(void)
{
    const int64_t n = 400001, rows = 300, dim = 1001;
    float *x = rand_buf(n, 4.0f), *a = rand_buf(n, 1.0f), *b = rand_buf(n, 1.0f);
    float *y1 = malloc((size_t)n * sizeof(float)), *y2 = malloc((size_t)n * sizeof(float));
    float *g = rand_buf(dim, 1.0f), *be_ = rand_buf(dim, 1.0f);

#define BOTH(call1, call2, what)                        \
    do {                                                \
        memcpy(y1, x, (size_t)n * sizeof(float));       \
        memcpy(y2, x, (size_t)n * sizeof(float));       \
        call1;                                          \
        call2;                                          \
        CHECK_MSG(same_bits(y1, y2, n), "%s", what);    \
    } while (0)

    BOTH(be1->ops->gelu_tanh(be1, y1, x, n), be2->ops->gelu_tanh(be2, y2, x, n), "gelu_tanh");
    BOTH(be1->ops->gelu_erf(be1, y1, x, n), be2->ops->gelu_erf(be2, y2, x, n), "gelu_erf");
    BOTH(be1->ops->silu(be1, y1, x, n), be2->ops->silu(be2, y2, x, n), "silu");
    BOTH(be1->ops->axpby(be1, y1, 0.3f, a, 0.7f, b, n),
         be2->ops->axpby(be2, y2, 0.3f, a, 0.7f, b, n), "axpby");
    BOTH(be1->ops->layer_norm(be1, y1, x, g, be_, rows, dim, 1e-6f),
         be2->ops->layer_norm(be2, y2, x, g, be_, rows, dim, 1e-6f), "layer_norm");
    BOTH(be1->ops->rms_norm(be1, y1, y1, g, rows, dim - 1, dim, 1e-6f),
         be2->ops->rms_norm(be2, y2, y2, g, rows, dim - 1, dim, 1e-6f), "rms_norm");
    BOTH(be1->ops->softmax(be1, y1, rows, dim), be2->ops->softmax(be2, y2, rows, dim), "softmax");
    BOTH(be1->ops->modulate(be1, y1, x, g, be_, rows, dim),
         be2->ops->modulate(be2, y2, x, g, be_, rows, dim), "modulate");
    BOTH(be1->ops->group_norm(be1, y1, x, a, b, 64, 4096, 8, 1e-6f),
         be2->ops->group_norm(be2, y2, x, a, b, 64, 4096, 8, 1e-6f), "group_norm");
    BOTH(be1->ops->conv2d(be1, y1, x, a, b, 16, 40, 40, 24, 3, 3, 1, 1),
         be2->ops->conv2d(be2, y2, x, a, b, 16, 40, 40, 24, 3, 3, 1, 1), "conv2d");
    BOTH(be1->ops->linear(be1, y1, 500, x, 520, a, b, 300, 520, 500),
         be2->ops->linear(be2, y2, 500, x, 520, a, b, 300, 520, 500), "linear");
    BOTH(be1->ops->attention(be1, y1, 96, x, 96, a, 96, b, 96, 200, 333, 3, 32, NULL, 0.2f),
         be2->ops->attention(be2, y2, 96, x, 96, a, 96, b, 96, 200, 333, 3, 32, NULL, 0.2f),
         "attention");
#undef BOTH
    free(x);
    free(a);
    free(b);
    free(y1);
    free(y2);
    free(g);
    free(be_);
}

static void run_all(void)
{
    printf("# kernels: %s\n", table_name);
    RUN(test_memory);
    RUN(test_copy_strided);
    RUN(test_linear);
    RUN(test_linear_packed);
    RUN(test_linear_rows_independent);
    RUN(test_layer_norm);
    RUN(test_rms_norm);
    RUN(test_modulate_gate_add);
    RUN(test_group_norm);
    RUN(test_elementwise);
    RUN(test_elementwise_extremes);
    RUN(test_softmax);
    RUN(test_attention);
    RUN(test_attention_mask_is_drop);
    RUN(test_rope);
    RUN(test_conv2d);
    RUN(test_upsample);
    RUN(test_threads_bit_identical);
}

int main(void)
{
    RUN(test_create_by_name);

    be1 = make_cpu(1);
    be2 = make_cpu(2);
    run_all();
    sdc_backend_destroy(be1);
    sdc_backend_destroy(be2);

    /* the portable kernels, which machines without AVX2 run */
    setenv("SDC_CPU_KERNELS", "generic", 1);
    table_name = "generic";
    be1 = make_cpu(1);
    be2 = make_cpu(2);
    run_all();
    sdc_backend_destroy(be1);
    sdc_backend_destroy(be2);
    unsetenv("SDC_CPU_KERNELS");
    TEST_EXIT();
}
