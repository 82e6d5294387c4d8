/*
 * bench_backend: throughput of the CPU backend's heavy ops at the sizes of
 * the `mid` DiT config (1280 tokens, hidden 1024 = 8 heads x 128) and of the
 * tiny test model, printed as one JSON object on stdout.
 *
 * Each case runs a warm-up call, then repeats until about --seconds of wall
 * time have passed, a few times over; the fastest repetition counts (the
 * least disturbed one on a shared machine). Measures only; tests/ checks
 * the results.
 *
 *   build/bench/bench_backend [--threads N] [--seconds S]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "common/timer.h"

#define ROUNDS 5

typedef enum { OP_LINEAR, OP_ATTENTION, OP_CONV3X3, OP_GELU } op_kind_t;

typedef struct {
    const char *name;
    op_kind_t kind;
    int64_t a, b, c, d; /* linear: M K N; attention: L H Dh; conv: C H W; gelu: n */
} bench_case_t;

static const bench_case_t cases[] = {
    {"linear_qkv", OP_LINEAR, 1280, 1024, 3072, 0},
    {"linear_mlp_up", OP_LINEAR, 1280, 1024, 4096, 0},
    {"linear_mlp_down", OP_LINEAR, 1280, 4096, 1024, 0},
    {"linear_modulation", OP_LINEAR, 1, 1024, 6144, 0},
    {"linear_tiny", OP_LINEAR, 136, 64, 192, 0},
    {"attention_mid", OP_ATTENTION, 1280, 8, 128, 0},
    {"attention_tiny", OP_ATTENTION, 96, 4, 16, 0},
    {"conv3x3_128ch_64x64", OP_CONV3X3, 128, 64, 64, 0},
    {"gelu_tanh_5M", OP_GELU, 1280 * 4096, 0, 0, 0},
};

typedef struct {
    float *x, *y, *w, *b, *k, *v;
} bench_bufs_t;

static float *bench_buf(sdc_backend_t *be, int64_t n)
{
    float *p = be->ops->alloc(be, (size_t)n * sizeof(float));
    if (!p) {
        fprintf(stderr, "bench_backend: out of memory (%lld floats)\n", (long long)n);
        exit(1);
    }
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)((i * 7919 % 1000) - 500) * 1e-3f;
    return p;
}

/* Sizes every buffer for case c; returns the FLOPs of one call. */
static double bench_setup(sdc_backend_t *be, const bench_case_t *c, bench_bufs_t *B)
{
    switch (c->kind) {
    case OP_LINEAR:
        B->x = bench_buf(be, c->a * c->b);
        B->w = bench_buf(be, c->c * c->b);
        B->b = bench_buf(be, c->c);
        B->y = bench_buf(be, c->a * c->c);
        return 2.0 * (double)c->a * (double)c->b * (double)c->c;
    case OP_ATTENTION:
        B->x = bench_buf(be, c->a * c->b * c->c);
        B->k = bench_buf(be, c->a * c->b * c->c);
        B->v = bench_buf(be, c->a * c->b * c->c);
        B->y = bench_buf(be, c->a * c->b * c->c);
        return 4.0 * (double)c->a * (double)c->a * (double)c->b * (double)c->c;
    case OP_CONV3X3:
        B->x = bench_buf(be, c->a * c->b * c->c);
        B->w = bench_buf(be, c->a * c->a * 9);
        B->b = bench_buf(be, c->a);
        B->y = bench_buf(be, c->a * c->b * c->c);
        return 2.0 * (double)c->a * (double)c->a * 9.0 * (double)c->b * (double)c->c;
    case OP_GELU:
        B->x = bench_buf(be, c->a);
        B->y = bench_buf(be, c->a);
        return (double)c->a;
    }
    return 0;
}

static void bench_call(sdc_backend_t *be, const bench_case_t *c, const bench_bufs_t *B)
{
    const sdc_backend_ops_t *o = be->ops;
    switch (c->kind) {
    case OP_LINEAR:
        o->linear(be, B->y, c->c, B->x, c->b, B->w, B->b, c->a, c->b, c->c);
        break;
    case OP_ATTENTION: {
        int64_t W = c->b * c->c;
        o->attention(be, B->y, W, B->x, W, B->k, W, B->v, W, c->a, c->a, c->b, c->c, NULL,
                     0.08838834764831845f);
        break;
    }
    case OP_CONV3X3:
        o->conv2d(be, B->y, B->x, B->w, B->b, c->a, c->b, c->c, c->a, 3, 3, 1, 1);
        break;
    case OP_GELU:
        o->gelu_tanh(be, B->y, B->x, c->a);
        break;
    }
    o->sync(be);
}

static void bench_free(sdc_backend_t *be, bench_bufs_t *B)
{
    float *all[] = {B->x, B->y, B->w, B->b, B->k, B->v};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        be->ops->free(be, all[i]);
    memset(B, 0, sizeof(*B));
}

int main(int argc, char **argv)
{
    int threads = 0;
    double seconds = 0.5;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--threads N] [--seconds S]\n", argv[0]);
            return 2;
        }
    }

    sdc_backend_config_t cfg = {.name = "cpu", .n_threads = threads};
    sdc_backend_t *be = NULL;
    sdc_error_t err = {0};
    if (sdc_backend_create(&cfg, &be, &err) != SDC_OK) {
        fprintf(stderr, "bench_backend: %s\n", err.msg);
        return 1;
    }

    printf("{\"benchmark\": \"backend_ops\", \"backend\": \"cpu\", \"threads\": %d, \"results\": [",
           be->n_threads);
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        const bench_case_t *c = &cases[ci];
        bench_bufs_t B = {0};
        double flops = bench_setup(be, c, &B), best = 1e30;
        bench_call(be, c, &B);
        for (int r = 0; r < ROUNDS; r++) {
            int reps = 0;
            double t0 = sdc_now(), t;
            do {
                bench_call(be, c, &B);
                reps++;
                t = sdc_now() - t0;
            } while (t < seconds / ROUNDS);
            if (t / reps < best)
                best = t / reps;
        }
        printf("%s\n  {\"case\": \"%s\", \"dims\": [%lld, %lld, %lld], \"ms\": %.4f, \"%s\": %.2f}",
               ci ? "," : "", c->name, (long long)c->a, (long long)c->b, (long long)c->c,
               best * 1e3, c->kind == OP_GELU ? "Melem_per_s" : "gflops",
               flops / best / (c->kind == OP_GELU ? 1e6 : 1e9));
        bench_free(be, &B);
    }
    printf("\n]}\n");
    sdc_backend_destroy(be);
    return 0;
}
