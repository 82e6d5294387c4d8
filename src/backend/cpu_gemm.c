/*
 * cpu_gemm.c: the CPU backend's GEMM engine around the micro-tile kernels of
 * cpu_kernels.c: packing of A and B, the loops over blocks, and the OpenMP
 * split. The rounding contract is spelled out in cpu_kernels.h; everything
 * here only decides which tile runs where and when, never how an element is
 * summed.
 *
 * Blocking follows the BLIS scheme: B is packed NC columns x KC rows at a
 * time (shared by all threads, lives in L3), A is packed whole for the same
 * K-block, and each task streams MC rows of A (L2) past NR-wide panels of B
 * (L1).
 */
#include "cpu_kernels.h"

#include <assert.h>
#include <omp.h>
#include <string.h>

#define MR SDC_GEMM_MR
#define NR SDC_GEMM_NR
#define KC SDC_GEMM_KC

static inline int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Packing reads short pieces of many rows (KC floats from each), too short
 * for the hardware prefetcher to pick up; fetching the next rows while this
 * piece is copied turns the memory latency into bandwidth. */
static void prefetch_rows(const float *first, int64_t ld, int64_t rows, int64_t len)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t k = 0; k < len; k += 16)
            __builtin_prefetch(first + i * ld + k, 0, 3);
}

void sdc_gemm_pack_a(float *dst, const float *a, int64_t lda, int64_t m, int64_t k0, int64_t kc)
{
    for (int64_t i0 = 0; i0 < m; i0 += MR) {
        int64_t mr = min64(MR, m - i0);
        if (i0 + MR < m)
            prefetch_rows(a + (i0 + MR) * lda + k0, lda, min64(MR, m - i0 - MR), kc);
        for (int64_t i = 0; i < mr; i++) {
            const float *src = a + (i0 + i) * lda + k0;
            for (int64_t k = 0; k < kc; k++)
                dst[k * MR + i] = src[k];
        }
        for (int64_t i = mr; i < MR; i++)
            for (int64_t k = 0; k < kc; k++)
                dst[k * MR + i] = 0.0f;
        dst += MR * kc;
    }
}

void sdc_gemm_pack_b_nk(const void *ctx, float *dst, int64_t k0, int64_t kc, int64_t n0,
                        int64_t nc)
{
    const sdc_gemm_bnk_t *B = ctx;

    for (int64_t j0 = 0; j0 < nc; j0 += NR) {
        int64_t nr = min64(NR, nc - j0);
        if (!B->rows && j0 + NR < nc)
            prefetch_rows(B->b + (n0 + j0 + NR) * B->ld + k0, B->ld, min64(NR, nc - j0 - NR), kc);
        for (int64_t j = 0; j < nr; j++) {
            int64_t row = n0 + j0 + j;
            const float *src = B->b + (B->rows ? B->rows[row] : row) * B->ld + k0;
            for (int64_t k = 0; k < kc; k++)
                dst[k * NR + j] = src[k];
        }
        for (int64_t j = nr; j < NR; j++)
            for (int64_t k = 0; k < kc; k++)
                dst[k * NR + j] = 0.0f;
        dst += NR * kc;
    }
}

void sdc_gemm_pack_b_kn(const void *ctx, float *dst, int64_t k0, int64_t kc, int64_t n0,
                        int64_t nc)
{
    const sdc_gemm_bkn_t *B = ctx;

    /* Row by row, each row dealt out to every panel: one pass over B, which
     * is usually far bigger than a cache and strided. */
    for (int64_t k = 0; k < kc; k++) {
        int64_t row = k0 + k;
        const float *src = B->b + (B->rows ? B->rows[row] : row) * B->ld + n0;
        float *d = dst + k * NR;
        for (int64_t j0 = 0; j0 < nc; j0 += NR, d += NR * kc) {
            int64_t nr = min64(NR, nc - j0);
            memcpy(d, src + j0, (size_t)nr * sizeof(float));
            memset(d + nr, 0, (size_t)(NR - nr) * sizeof(float));
        }
    }
}

void sdc_gemm_block(const sdc_cpu_kernels_t *kt, float *c, int64_t ldc, const float *apack,
                    const float *bpack, int64_t m, int64_t n, int64_t kc, const float *bias,
                    sdc_gemm_mode_t mode)
{
    for (int64_t jr = 0; jr < n; jr += NR) {
        const float *bp = bpack + jr * kc;
        int nr = (int)min64(NR, n - jr);
        for (int64_t ir = 0; ir < m; ir += MR) {
            int mr = (int)min64(MR, m - ir);
            kt->gemm_tile(kc, apack + ir * kc, bp, c + ir * ldc + jr, ldc, mr, nr,
                          bias ? bias + jr : NULL, mode);
        }
    }
}

void sdc_gemm_block_rows(const sdc_cpu_kernels_t *kt, float *c, int64_t ldc, const float *a,
                         int64_t lda, const float *bpack, int64_t m, int64_t n, int64_t kc,
                         const float *bias, sdc_gemm_mode_t mode)
{
    for (int64_t jr = 0; jr < n; jr += NR) {
        const float *bp = bpack + jr * kc;
        int nr = (int)min64(NR, n - jr);
        for (int64_t ir = 0; ir < m; ir += MR) {
            int mr = (int)min64(MR, m - ir);
            kt->gemm_tile_rows(kc, a + ir * lda, lda, bp, c + ir * ldc + jr, ldc, mr, nr,
                               bias ? bias + jr : NULL, mode);
        }
    }
}

void sdc_gemm_pack_b_all(float *dst, sdc_gemm_pack_b_fn pack, const void *ctx, int64_t N,
                         int64_t K)
{
    int64_t npad = sdc_gemm_round_up(N, NR);

    for (int64_t pc = 0; pc < K; pc += KC)
        pack(ctx, dst + pc * npad, pc, min64(KC, K - pc), 0, N);
}

/* C = bias (or 0) when K is 0: the empty sum. */
static void gemm_fill_bias(float *c, int64_t ldc, int64_t M, int64_t N, const float *bias)
{
    for (int64_t i = 0; i < M; i++) {
        if (bias)
            memcpy(c + i * ldc, bias, (size_t)N * sizeof(float));
        else
            memset(c + i * ldc, 0, (size_t)N * sizeof(float));
    }
}

void sdc_gemm_packed(const sdc_cpu_kernels_t *kt, float *c, int64_t ldc, const float *a,
                     int64_t lda, const float *bpacked, float *apack, int64_t M, int64_t N,
                     int64_t K, const float *bias)
{
    int64_t npad = sdc_gemm_round_up(N, NR);

    if (K == 0) {
        gemm_fill_bias(c, ldc, M, N, bias);
        return;
    }
    for (int64_t pc = 0; pc < K; pc += KC) {
        int64_t kc = min64(KC, K - pc);
        sdc_gemm_pack_a(apack, a, lda, M, pc, kc);
        sdc_gemm_block(kt, c, ldc, apack, bpacked + pc * npad, M, N, kc, bias,
                       pc == 0 ? SDC_GEMM_STORE : SDC_GEMM_ACCUM);
    }
}

int64_t sdc_gemm_scratch_floats(const sdc_gemm_t *g, int n_threads)
{
    if (g->b_packed)
        return (int64_t)n_threads * SDC_GEMM_MC * KC;
    int64_t nc = min64(sdc_gemm_round_up(g->N, NR), SDC_GEMM_NC);
    return nc * KC + sdc_gemm_round_up(g->M, MR) * KC;
}

/* Splits the NR-panels of a B block into chunks so that each thread gets
 * some 16 tasks: few enough to keep tasks big, enough that the last one to
 * finish does not leave the others idle for long. */
static int64_t gemm_chunks(int64_t n_panels, int64_t n_row_blocks, int n_threads)
{
    if (n_threads == 1)
        return 1;
    int64_t want = (16 * (int64_t)n_threads + n_row_blocks - 1) / n_row_blocks;
    return want < 1 ? 1 : min64(want, n_panels);
}

/* B packed beforehand: nothing is shared between tasks, so one parallel
 * loop with one barrier at its end. A task owns a block of rows and a chunk
 * of columns of C and walks the K-blocks in order, packing its rows of A
 * into its thread's slice of scratch; each element sees the same sums in
 * the same order as in sdc_gemm_run's shared-packing path. */
static void gemm_run_prepacked(const sdc_cpu_kernels_t *kt, const sdc_gemm_t *g, float *scratch,
                               int n_threads)
{
    const int64_t M = g->M, N = g->N, K = g->K, npad = sdc_gemm_round_up(N, NR);
    const int64_t n_panels = npad / NR;
    const int64_t n_rowblocks = (M + SDC_GEMM_MC - 1) / SDC_GEMM_MC;
    const int64_t n_chunks = gemm_chunks(n_panels, n_rowblocks, n_threads);
    const int64_t n_tasks = n_chunks * n_rowblocks;

#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
    for (int64_t t = 0; t < n_tasks; t++) {
        float *apack = scratch + (int64_t)omp_get_thread_num() * SDC_GEMM_MC * KC;
        int64_t rb = t % n_rowblocks, chunk = t / n_rowblocks;
        int64_t p0 = n_panels * chunk / n_chunks, p1 = n_panels * (chunk + 1) / n_chunks;
        int64_t i0 = rb * SDC_GEMM_MC, m = min64(SDC_GEMM_MC, M - i0);
        int64_t j0 = p0 * NR, n = min64(p1 * NR, N) - j0;
        if (n <= 0)
            continue;
        for (int64_t pc = 0; pc < K; pc += KC) {
            int64_t kc = min64(KC, K - pc);
            sdc_gemm_pack_a(apack, g->a + i0 * g->lda, g->lda, m, pc, kc);
            sdc_gemm_block(kt, g->c + i0 * g->ldc + j0, g->ldc, apack,
                           g->b_packed + pc * npad + j0 * kc, m, n, kc,
                           g->bias ? g->bias + j0 : NULL,
                           pc == 0 ? SDC_GEMM_STORE : SDC_GEMM_ACCUM);
        }
    }
}

void sdc_gemm_run(const sdc_cpu_kernels_t *kt, const sdc_gemm_t *g, float *scratch,
                  int n_threads)
{
    const int64_t M = g->M, N = g->N, K = g->K;
    const int64_t n_apanels = (M + MR - 1) / MR;
    const int64_t n_rowblocks = (M + SDC_GEMM_MC - 1) / SDC_GEMM_MC;
    float *bpack = scratch;
    float *apack = scratch + min64(sdc_gemm_round_up(N, NR), SDC_GEMM_NC) * KC;

    assert(g->lda >= K && g->ldc >= N);
    if (M == 0 || N == 0)
        return;
    if (K == 0) {
        gemm_fill_bias(g->c, g->ldc, M, N, g->bias);
        return;
    }
    if (g->b_packed) {
        gemm_run_prepacked(kt, g, scratch, n_threads);
        return;
    }

    /* K-blocks outermost: A is packed once per K-block, B once per
     * (K-block, column block); C takes one K-block's sums at a time. */
#pragma omp parallel num_threads(n_threads)
    for (int64_t pc = 0; pc < K; pc += KC) {
        const int64_t kc = min64(KC, K - pc);
        const sdc_gemm_mode_t mode = pc == 0 ? SDC_GEMM_STORE : SDC_GEMM_ACCUM;

        for (int64_t jc = 0; jc < N; jc += SDC_GEMM_NC) {
            const int64_t nc = min64(SDC_GEMM_NC, N - jc);
            const int64_t n_bpanels = (nc + NR - 1) / NR;
            const int64_t n_pack = n_bpanels + (jc == 0 ? n_apanels : 0);
            const int64_t n_chunks = gemm_chunks(n_bpanels, n_rowblocks, n_threads);
            const int64_t n_tasks = n_chunks * n_rowblocks;

#pragma omp for schedule(static)
            for (int64_t t = 0; t < n_pack; t++) {
                if (t < n_bpanels) {
                    g->pack_b(g->b_ctx, bpack + t * NR * kc, pc, kc, jc + t * NR,
                              min64(NR, nc - t * NR));
                } else {
                    int64_t i0 = (t - n_bpanels) * MR;
                    sdc_gemm_pack_a(apack + i0 * kc, g->a + i0 * g->lda, g->lda,
                                    min64(MR, M - i0), pc, kc);
                }
            }

#pragma omp for schedule(dynamic, 1)
            for (int64_t t = 0; t < n_tasks; t++) {
                int64_t rb = t % n_rowblocks, chunk = t / n_rowblocks;
                int64_t p0 = n_bpanels * chunk / n_chunks;
                int64_t p1 = n_bpanels * (chunk + 1) / n_chunks;
                int64_t i0 = rb * SDC_GEMM_MC, m = min64(SDC_GEMM_MC, M - i0);
                int64_t j0 = p0 * NR, n = min64(p1 * NR, nc) - j0;
                if (n <= 0)
                    continue;
                sdc_gemm_block(kt, g->c + i0 * g->ldc + jc + j0, g->ldc, apack + i0 * kc,
                               bpack + j0 * kc, m, n, kc, g->bias ? g->bias + jc + j0 : NULL,
                               mode);
            }
        }
    }
}
