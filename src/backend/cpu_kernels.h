/*
 * cpu_kernels.h: the CPU backend's inner kernels and its GEMM engine
 * (internal to src/backend; model code goes through backend.h).
 *
 * Why a GEMM of our own instead of cblas_sgemm: OpenBLAS 0.3.21's sgemm
 * rounds an output element differently depending on where it lands in a
 * micro-tile (its Haswell/Zen kernel keeps split even/odd-k accumulators in
 * some tiles and one chain in others), so a row's result changes with M and
 * with the thread split. This engine computes every element the same way:
 *
 *   c[i][j] = init + acc_0 + acc_1 + ...   (left to right)
 *   acc_p   = fma chain over k in K-block p, in increasing k, from 0
 *
 * with K-blocks of SDC_GEMM_KC, init = bias[j] or 0 (or c[i][j] itself when
 * accumulating). Nothing depends on M, N, the tile an element falls in, or
 * the thread count. Each kernel table (generic C, AVX2+FMA) is deterministic
 * on its own; the two tables do not agree bit for bit with each other.
 *
 * Element-wise kernels likewise give each element the same result wherever
 * it sits in the array, so callers may split arrays between threads freely.
 */
#ifndef SDC_CPU_KERNELS_H
#define SDC_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define SDC_GEMM_MR 6    /* rows of a micro-tile */
#define SDC_GEMM_NR 16   /* columns of a micro-tile */
#define SDC_GEMM_KC 256  /* K-block: fixed, part of the rounding contract */
#define SDC_GEMM_MC 144 /* rows of A kept hot in L2 by one task */
#define SDC_GEMM_NC 2048 /* columns of B packed at once */

/* How a micro-tile's sums meet C. */
typedef enum {
    SDC_GEMM_STORE, /* c = acc, or c = bias + acc when a bias is given */
    SDC_GEMM_ACCUM  /* c = c + acc */
} sdc_gemm_mode_t;

typedef struct {
    const char *name; /* "avx2", "generic" */
    /* One micro-tile: a is a packed A panel (kc x MR), b a packed B panel
     * (kc x NR); only the top-left mr x nr of the tile reaches c. bias (NR
     * entries from the tile's first column) is used in STORE mode only. */
    void (*gemm_tile)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int mr,
                      int nr, const float *bias, sdc_gemm_mode_t mode);
    /* The same tile with A unpacked: row i at a + i * lda (rows past mr are
     * never read), for an A that is read once and so is not worth packing. */
    void (*gemm_tile_rows)(int64_t kc, const float *a, int64_t lda, const float *b, float *c,
                           int64_t ldc, int mr, int nr, const float *bias, sdc_gemm_mode_t mode);
    /* Softmax numerator of one row: finds the max of x[0..n), writes
     * p[j] = exp((x[j] - max) * scale) (x and p may be the same array) and
     * returns the sum of p[0..n). scale > 0. */
    float (*softmax_row)(float *p, const float *x, int64_t n, float scale);
    void (*gelu_tanh)(float *y, const float *x, int64_t n);
    void (*silu)(float *y, const float *x, int64_t n);
} sdc_cpu_kernels_t;

/* The fastest table this CPU runs; force = "generic" or "avx2" picks one
 * ("avx2" falls back to generic when the CPU lacks AVX2 or FMA). */
const sdc_cpu_kernels_t *sdc_cpu_kernels_select(const char *force);

/* Packs rows [k0, k0 + kc) x columns [n0, n0 + nc) of the logical K x N
 * matrix B into ceil(nc / NR) panels of kc x NR floats each, zero-filling
 * columns past nc. */
typedef void (*sdc_gemm_pack_b_fn)(const void *ctx, float *dst, int64_t k0, int64_t kc,
                                   int64_t n0, int64_t nc);

/* B stored as N rows of K (a linear weight, attention keys): row j at
 * b + j * ld, or at b + rows[j] * ld when rows is not NULL. */
typedef struct {
    const float *b;
    int64_t ld;
    const int32_t *rows;
} sdc_gemm_bnk_t;
void sdc_gemm_pack_b_nk(const void *ctx, float *dst, int64_t k0, int64_t kc, int64_t n0,
                        int64_t nc);

/* B stored as K rows of N (attention values): row k at b + k * ld, or at
 * b + rows[k] * ld when rows is not NULL. */
typedef struct {
    const float *b;
    int64_t ld;
    const int32_t *rows;
} sdc_gemm_bkn_t;
void sdc_gemm_pack_b_kn(const void *ctx, float *dst, int64_t k0, int64_t kc, int64_t n0,
                        int64_t nc);

static inline int64_t sdc_gemm_round_up(int64_t x, int64_t m)
{
    return (x + m - 1) / m * m;
}

/* Packs rows [0, m) x columns [k0, k0 + kc) of the row-major A (row stride
 * lda) into ceil(m / MR) panels of kc x MR, zero-filling rows past m. */
void sdc_gemm_pack_a(float *dst, const float *a, int64_t lda, int64_t m, int64_t k0, int64_t kc);

/* C[m x n] (row stride ldc) from packed A (m rows) and packed B (n columns),
 * both for one K-block of length kc. Single-threaded. */
void sdc_gemm_block(const sdc_cpu_kernels_t *kt, float *c, int64_t ldc, const float *apack,
                    const float *bpack, int64_t m, int64_t n, int64_t kc, const float *bias,
                    sdc_gemm_mode_t mode);

/* sdc_gemm_block with A unpacked: rows of a, lda apart, from its K-block's
 * first column. */
void sdc_gemm_block_rows(const sdc_cpu_kernels_t *kt, float *c, int64_t ldc, const float *a,
                         int64_t lda, const float *bpack, int64_t m, int64_t n, int64_t kc,
                         const float *bias, sdc_gemm_mode_t mode);

/* Floats needed to hold all of B packed (every K-block, every column). */
static inline int64_t sdc_gemm_packed_b_floats(int64_t N, int64_t K)
{
    return sdc_gemm_round_up(N, SDC_GEMM_NR) * K;
}
/* Packs all of B; K-block p starts at dst + p * KC * round_up(N, NR). */
void sdc_gemm_pack_b_all(float *dst, sdc_gemm_pack_b_fn pack, const void *ctx, int64_t N,
                         int64_t K);

/* C = A * B (+ bias) single-threaded, B packed whole by sdc_gemm_pack_b_all;
 * apack holds round_up(M, MR) * KC floats. */
void sdc_gemm_packed(const sdc_cpu_kernels_t *kt, float *c, int64_t ldc, const float *a,
                     int64_t lda, const float *bpacked, float *apack, int64_t M, int64_t N,
                     int64_t K, const float *bias);

/* A full product C[M x N] = A[M x K] * B (+ bias[N]), threaded with OpenMP. */
typedef struct {
    int64_t M, N, K;
    const float *a;
    int64_t lda;
    float *c;
    int64_t ldc;
    const float *bias;
    /* B: packed whole beforehand (sdc_gemm_pack_b_all layout), or packed
     * block by block during the product by pack_b(b_ctx, ...). */
    const float *b_packed;
    sdc_gemm_pack_b_fn pack_b;
    const void *b_ctx;
} sdc_gemm_t;

/* Scratch floats sdc_gemm_run needs for g on n_threads threads. */
int64_t sdc_gemm_scratch_floats(const sdc_gemm_t *g, int n_threads);
void sdc_gemm_run(const sdc_cpu_kernels_t *kt, const sdc_gemm_t *g, float *scratch,
                  int n_threads);

#endif
