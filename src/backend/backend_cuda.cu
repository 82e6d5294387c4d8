/*
 * backend_cuda.cu: the CUDA implementation of backend.h on one device.
 * Matrix products (linear, and convolution through im2col) run on cuBLASLt
 * (or on a plain kernel of ours with SDC_CUDA_GEMM=simt); everything else is
 * a kernel of this file, including a fused flash-style attention.
 *
 * Determinism is the design constraint, as on the CPU: every reduction has
 * one fixed order that depends only on the length being reduced, and launch
 * shapes never depend on the number of rows of a call, so row r of an output
 * depends on row r of the inputs alone. What that means for cuBLASLt, which
 * makes no such promise, is under "matrix products" below and in
 * docs/cuda.md.
 *
 * Execution: every op is enqueued on one compute stream; upload and download
 * run on a copy stream through pinned staging buffers, ordered against the
 * compute stream with events. Memory comes from a private stream-ordered pool
 * that keeps freed blocks for reuse. Errors inside an op (which has no status
 * to return) are fatal and name the call that failed.
 *
 * Not here: choosing a backend by name (backend.c), the CPU reference
 * (backend_cpu.c).
 */
#include <assert.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>
#include <cuda_runtime.h>

extern "C" {
#include "backend.h"
}

#define FULL_MASK 0xffffffffu

/* Pinned staging: two buffers, so that the host fills one while the copy
 * engine drains the other. */
#define STAGING_BYTES ((size_t)8 << 20)

/* cuBLASLt workspace; 32 MiB is what NVIDIA recommends for Hopper. */
#define GEMM_WORKSPACE_BYTES ((size_t)32 << 20)

/* The row count the GEMM heuristic is asked about when it picks the one
 * algorithm a (K, N) shape then always uses, whatever M the call has. */
#define GEMM_REF_ROWS 4096

/* Largest im2col buffer a convolution builds; bigger images are done in
 * chunks of output pixels. */
#define CONV_COL_BYTES ((size_t)256 << 20)

/* Row kernels (norms, softmax): one warp per row, this many rows a block. */
#define ROW_WARPS 8

/* Group norm: each group is summed in chunks of this many elements, then
 * the chunk sums are added in order. */
#define GN_CHUNK 8192

/* Attention tiles: queries and keys per block step, head-dim chunk. */
#define AT_BQ 64
#define AT_BK 64
#define AT_DC 128
#define AT_THREADS 256
#define AT_LD (AT_DC + 1) /* smem row stride of the Q and K/V tiles */
#define AT_PLD (AT_BK + 1)  /* smem row stride of the score tile */
#define AT_SMEM_BYTES \
    ((size_t)(2 * AT_BQ * AT_LD + AT_BQ * AT_PLD + 3 * AT_BQ) * sizeof(float))

typedef struct {
    int trans_a;   /* A is stored k x m (op T) rather than m x k */
    int free_is_m; /* which of m, n varies from call to call */
    int has_bias;
    int align;     /* bytes every pointer and leading dimension is aligned to */
    int64_t fixed; /* the dimension that is not free */
    int64_t k, lda, ldb, ldd;
} gemm_key_t;

typedef struct {
    gemm_key_t key;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
} gemm_plan_t;

typedef struct {
    int device;
    int tf32; /* SDC_CUDA_TF32=1: cuBLASLt may use TF32 tensor cores */
    int simt; /* SDC_CUDA_GEMM=simt: products on k_simt_gemm, not cuBLASLt */
    int n_sm;
    cudaStream_t compute, copy;
    cudaEvent_t ev_compute, ev_copy, staging_done[2];
    cudaMemPool_t pool;
    cublasLtHandle_t lt;
    void *workspace;
    void *staging[2];
    void *scratch; /* grow-only, used within one op */
    size_t scratch_bytes;
    gemm_plan_t *plans;
    size_t n_plans, cap_plans;
} cuda_impl_t;

static cuda_impl_t *impl_of(sdc_backend_t *be)
{
    return (cuda_impl_t *)be->impl;
}

/* ---- errors ------------------------------------------------------------- */

static void cu_fatal(const char *file, int line, const char *call, const char *why)
{
    fprintf(stderr, "sdc cuda backend: %s:%d: %s failed: %s\n", file, line, call, why);
    abort();
}

#define CU_CHECK(call)                                                 \
    do {                                                               \
        cudaError_t e_ = (call);                                       \
        if (e_ != cudaSuccess)                                         \
            cu_fatal(__FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
    } while (0)

#define LT_CHECK(call)                                                     \
    do {                                                                   \
        cublasStatus_t s_ = (call);                                        \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                   \
            cu_fatal(__FILE__, __LINE__, #call, cublasLtGetStatusString(s_)); \
    } while (0)

/* After a launch: a bad configuration shows up here, a fault at sync. */
#define LAUNCHED() CU_CHECK(cudaGetLastError())

/* Ops may come from any host thread; the device is per thread in CUDA. */
static cuda_impl_t *cu_enter(sdc_backend_t *be)
{
    cuda_impl_t *im = impl_of(be);
    CU_CHECK(cudaSetDevice(im->device));
    return im;
}

static unsigned blocks_for(const cuda_impl_t *im, int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads, cap = (int64_t)im->n_sm * 16;
    return (unsigned)(b < 1 ? 1 : b < cap ? b : cap);
}

#define GRID_STRIDE(i, n)                                                              \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);          \
         i += (int64_t)gridDim.x * blockDim.x)

/* Scratch for the duration of one op; the previous buffer is released in
 * stream order, after the work that used it. */
static void *cu_scratch(cuda_impl_t *im, size_t bytes)
{
    if (bytes <= im->scratch_bytes)
        return im->scratch;
    size_t want = (bytes + ((size_t)2 << 20) - 1) / ((size_t)2 << 20) * ((size_t)2 << 20);
    if (im->scratch)
        CU_CHECK(cudaFreeAsync(im->scratch, im->compute));
    im->scratch = NULL;
    im->scratch_bytes = 0;
    CU_CHECK(cudaMallocFromPoolAsync(&im->scratch, want, im->pool, im->compute));
    im->scratch_bytes = want;
    return im->scratch;
}

/* ---- memory ------------------------------------------------------------- */

static void *cu_alloc(sdc_backend_t *be, size_t bytes)
{
    cuda_impl_t *im = cu_enter(be);
    void *p = NULL;

    if (bytes > SIZE_MAX - 255)
        return NULL;
    size_t n = bytes ? (bytes + 255) / 256 * 256 : 256;
    if (cudaMallocFromPoolAsync(&p, n, im->pool, im->compute) != cudaSuccess) {
        (void)cudaGetLastError(); /* out of memory is an answer, not a sticky error */
        return NULL;
    }
    assert((uintptr_t)p % 64 == 0);
    return p;
}

static void cu_free(sdc_backend_t *be, void *p)
{
    if (!p)
        return;
    cuda_impl_t *im = cu_enter(be);
    CU_CHECK(cudaFreeAsync(p, im->compute));
}

/* The copy stream starts after everything enqueued so far on the compute
 * stream (which may still read or write the destination). */
static void copy_after_compute(cuda_impl_t *im)
{
    CU_CHECK(cudaEventRecord(im->ev_compute, im->compute));
    CU_CHECK(cudaStreamWaitEvent(im->copy, im->ev_compute, 0));
}

/* Returns once src has been read: the caller may reuse it. Ops enqueued
 * afterwards see the data. */
static void cu_upload(sdc_backend_t *be, void *dst, const void *src, size_t bytes)
{
    if (!bytes)
        return;
    cuda_impl_t *im = cu_enter(be);
    copy_after_compute(im);
    for (size_t off = 0, i = 0; off < bytes; i++) {
        size_t n = bytes - off < STAGING_BYTES ? bytes - off : STAGING_BYTES;
        int s = (int)(i & 1);
        CU_CHECK(cudaEventSynchronize(im->staging_done[s]));
        memcpy(im->staging[s], (const char *)src + off, n);
        CU_CHECK(cudaMemcpyAsync((char *)dst + off, im->staging[s], n, cudaMemcpyHostToDevice,
                                 im->copy));
        CU_CHECK(cudaEventRecord(im->staging_done[s], im->copy));
        off += n;
    }
    CU_CHECK(cudaEventRecord(im->ev_copy, im->copy));
    CU_CHECK(cudaStreamWaitEvent(im->compute, im->ev_copy, 0));
}

/* Returns with the data in dst_host (after every op enqueued before it). */
static void cu_download(sdc_backend_t *be, void *dst_host, const void *src, size_t bytes)
{
    if (!bytes)
        return;
    cuda_impl_t *im = cu_enter(be);
    size_t prev_off = 0, prev_n = 0;
    int prev_s = 0;

    copy_after_compute(im);
    for (size_t off = 0, i = 0; off < bytes; i++) {
        size_t n = bytes - off < STAGING_BYTES ? bytes - off : STAGING_BYTES;
        int s = (int)(i & 1);
        /* staging[s] last held chunk i - 2, copied out in the previous round */
        CU_CHECK(cudaMemcpyAsync(im->staging[s], (const char *)src + off, n,
                                 cudaMemcpyDeviceToHost, im->copy));
        CU_CHECK(cudaEventRecord(im->staging_done[s], im->copy));
        if (i > 0) {
            CU_CHECK(cudaEventSynchronize(im->staging_done[prev_s]));
            memcpy((char *)dst_host + prev_off, im->staging[prev_s], prev_n);
        }
        prev_off = off;
        prev_n = n;
        prev_s = s;
        off += n;
    }
    CU_CHECK(cudaEventSynchronize(im->staging_done[prev_s]));
    memcpy((char *)dst_host + prev_off, im->staging[prev_s], prev_n);
}

static void cu_copy(sdc_backend_t *be, void *dst, const void *src, size_t bytes)
{
    if (!bytes)
        return;
    cuda_impl_t *im = cu_enter(be);
    CU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, im->compute));
}

__global__ void k_fill(float *y, float v, int64_t n)
{
    GRID_STRIDE(i, n) y[i] = v;
}

static void cu_fill(sdc_backend_t *be, float *dst, float value, int64_t n)
{
    if (n <= 0)
        return;
    cuda_impl_t *im = cu_enter(be);
    k_fill<<<blocks_for(im, n, 256), 256, 0, im->compute>>>(dst, value, n);
    LAUNCHED();
}

static void cu_sync(sdc_backend_t *be)
{
    cuda_impl_t *im = cu_enter(be);
    CU_CHECK(cudaStreamSynchronize(im->copy));
    CU_CHECK(cudaStreamSynchronize(im->compute));
}

/* ---- layout ------------------------------------------------------------- */

typedef struct {
    int ndim;
    int64_t shape[6], ds[6], ss[6];
} strided_t;

/* One thread per element; I is the index type of the multi-index
 * arithmetic (32-bit when the view allows: divisions are cheaper). */
template <typename I>
__global__ void k_copy_strided(float *dst, const float *src, strided_t v, int64_t total)
{
    GRID_STRIDE(e, total)
    {
        I rem = (I)e;
        int64_t doff = 0, soff = 0;
        for (int d = v.ndim - 1; d >= 0; d--) {
            I n = (I)v.shape[d], i = rem % n;
            rem /= n;
            doff += (int64_t)i * v.ds[d];
            soff += (int64_t)i * v.ss[d];
        }
        dst[doff] = src[soff];
    }
}

static void cu_copy_strided(sdc_backend_t *be, float *dst, const float *src, int ndim,
                            const int64_t *shape, const int64_t *dst_stride,
                            const int64_t *src_stride)
{
    cuda_impl_t *im = cu_enter(be);
    strided_t v;
    int64_t total = 1;

    assert(ndim <= 6);
    if (ndim <= 0) {
        CU_CHECK(cudaMemcpyAsync(dst, src, sizeof(float), cudaMemcpyDeviceToDevice, im->compute));
        return;
    }
    memset(&v, 0, sizeof(v));
    v.ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        v.shape[d] = shape[d];
        v.ds[d] = dst_stride[d];
        v.ss[d] = src_stride[d];
        total *= shape[d];
    }
    if (total <= 0)
        return;
    unsigned grid = blocks_for(im, total, 256);
    if (total <= INT32_MAX)
        k_copy_strided<uint32_t><<<grid, 256, 0, im->compute>>>(dst, src, v, total);
    else
        k_copy_strided<uint64_t><<<grid, 256, 0, im->compute>>>(dst, src, v, total);
    LAUNCHED();
}

/* ---- matrix products (cuBLASLt) ----------------------------------------
 *
 * cuBLAS promises the same bits for the same problem on the same GPU model
 * and library version, not a row that is independent of the other rows. To
 * get as close as the library allows:
 * - one algorithm per shape with the row count left out (gemm_key_t), chosen
 *   once by the heuristic for GEMM_REF_ROWS rows, used for every M;
 * - no split-K and no reduction scheme (a split of the K sum would depend
 *   on how many tiles there are);
 * - FMA kernels only unless SDC_CUDA_TF32=1 (no tensor-core rounding).
 * tests/gpu checks on the device that row r then never depends on M; where
 * it does not hold, SDC_CUDA_GEMM=simt swaps cuBLASLt for k_simt_gemm,
 * which guarantees it by construction. */

static int align_of(const void *p, int64_t ld)
{
    uintptr_t a = (uintptr_t)p | (uintptr_t)(ld * (int64_t)sizeof(float)) | 16u;
    return (int)(a & (~a + 1)); /* lowest set bit, at most 16 */
}

static int key_eq(const gemm_key_t *a, const gemm_key_t *b)
{
    return a->trans_a == b->trans_a && a->free_is_m == b->free_is_m &&
           a->has_bias == b->has_bias && a->align == b->align && a->fixed == b->fixed &&
           a->k == b->k && a->lda == b->lda && a->ldb == b->ldb && a->ldd == b->ldd;
}

static void layout_dims(cublasLtMatrixLayout_t l, int64_t rows, int64_t cols)
{
    uint64_t r = (uint64_t)rows, c = (uint64_t)cols;
    LT_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_ROWS, &r, sizeof(r)));
    LT_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_COLS, &c, sizeof(c)));
}

/* Sets the three layouts to an m x n x k problem. */
static void plan_dims(gemm_plan_t *p, int64_t m, int64_t n)
{
    const gemm_key_t *k = &p->key;
    if (k->trans_a)
        layout_dims(p->a, k->k, m);
    else
        layout_dims(p->a, m, k->k);
    layout_dims(p->b, k->k, n);
    layout_dims(p->d, m, n);
}

/* Makes algo one we accept, if it can be: K summed in one sequence (split-K
 * turned off and checked still valid), and unless TF32 is allowed, plain
 * FMA arithmetic (no tensor cores). */
static int algo_make_acceptable(cuda_impl_t *im, gemm_plan_t *p, cublasLtMatmulAlgo_t *algo)
{
    int32_t splitk = 1;
    uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_NONE;
    uint64_t impl = 0;
    size_t w;
    cublasLtMatmulHeuristicResult_t check;

    if (cublasLtMatmulAlgoCapGetAttribute(algo, CUBLASLT_ALGO_CAP_NUMERICAL_IMPL_FLAGS, &impl,
                                          sizeof(impl), &w) != CUBLAS_STATUS_SUCCESS)
        return 0;
    if (!im->tf32 && (impl & CUBLASLT_NUMERICAL_IMPL_FLAGS_TENSOR_OP_MASK) != 0)
        return 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk,
                                             sizeof(splitk), &w) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulAlgoConfigGetAttribute(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
                                             &scheme, sizeof(scheme), &w) !=
            CUBLAS_STATUS_SUCCESS)
        return 0;
    if (splitk <= 1 && scheme == CUBLASLT_REDUCTION_SCHEME_NONE)
        return 1;
    splitk = 1;
    scheme = CUBLASLT_REDUCTION_SCHEME_NONE;
    memset(&check, 0, sizeof(check));
    return cublasLtMatmulAlgoConfigSetAttribute(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk,
                                                sizeof(splitk)) == CUBLAS_STATUS_SUCCESS &&
           cublasLtMatmulAlgoConfigSetAttribute(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
                                                &scheme, sizeof(scheme)) ==
               CUBLAS_STATUS_SUCCESS &&
           cublasLtMatmulAlgoCheck(im->lt, p->op, p->a, p->b, p->d, p->d, algo, &check) ==
               CUBLAS_STATUS_SUCCESS &&
           check.state == CUBLAS_STATUS_SUCCESS;
}

/* The heuristic's fastest acceptable algorithm for the plan's shape, with
 * `ref` standing for the free dimension. */
static void plan_pick_algo(cuda_impl_t *im, gemm_plan_t *p, int64_t ref)
{
    enum { N_RESULTS = 32 };
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulHeuristicResult_t res[N_RESULTS];
    uint64_t ws = GEMM_WORKSPACE_BYTES;
    uint32_t align = (uint32_t)p->key.align;
    int found = 0;

    LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &ws, sizeof(ws)));
    const cublasLtMatmulPreferenceAttributes_t aligns[] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (size_t i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++)
        LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, aligns[i], &align, sizeof(align)));

    if (p->key.free_is_m)
        plan_dims(p, ref, p->key.fixed);
    else
        plan_dims(p, p->key.fixed, ref);
    memset(res, 0, sizeof(res));
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(im->lt, p->op, p->a, p->b, p->d, p->d,
                                                       pref, N_RESULTS, res, &found);
    LT_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    if (st != CUBLAS_STATUS_SUCCESS)
        found = 0;
    for (int i = 0; i < found; i++) {
        if (res[i].state == CUBLAS_STATUS_SUCCESS && algo_make_acceptable(im, p, &res[i].algo)) {
            p->algo = res[i].algo;
            return;
        }
    }
    fprintf(stderr,
            "sdc cuda backend: cuBLASLt offers no deterministic algorithm for k=%lld, fixed "
            "dim %lld, lda=%lld ldb=%lld ldd=%lld, align %d (%s); SDC_CUDA_GEMM=simt avoids "
            "cuBLASLt\n",
            (long long)p->key.k, (long long)p->key.fixed, (long long)p->key.lda,
            (long long)p->key.ldb, (long long)p->key.ldd, p->key.align,
            st == CUBLAS_STATUS_SUCCESS ? "every candidate uses tensor cores or split K"
                                        : cublasLtGetStatusString(st));
    abort();
}

static gemm_plan_t *plan_get(cuda_impl_t *im, const gemm_key_t *key, int64_t ref)
{
    for (size_t i = 0; i < im->n_plans; i++)
        if (key_eq(&im->plans[i].key, key))
            return &im->plans[i];
    if (im->n_plans == im->cap_plans) {
        size_t cap = im->cap_plans ? im->cap_plans * 2 : 32;
        gemm_plan_t *np = (gemm_plan_t *)realloc(im->plans, cap * sizeof(*np));
        if (!np) {
            fprintf(stderr, "sdc cuda backend: out of memory for GEMM plans\n");
            abort();
        }
        im->plans = np;
        im->cap_plans = cap;
    }
    gemm_plan_t *p = &im->plans[im->n_plans];
    memset(p, 0, sizeof(*p));
    p->key = *key;

    cublasComputeType_t ct = im->tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    cublasOperation_t ta = key->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = key->has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    LT_CHECK(cublasLtMatmulDescCreate(&p->op, ct, CUDA_R_32F));
    LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                            sizeof(epi)));
    /* sizes are set per call (plan_dims); only the leading dimensions stay */
    LT_CHECK(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_32F, 1, 1, key->lda));
    LT_CHECK(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_32F, 1, 1, key->ldb));
    LT_CHECK(cublasLtMatrixLayoutCreate(&p->d, CUDA_R_32F, 1, 1, key->ldd));
    plan_pick_algo(im, p, ref);
    im->n_plans++;
    return p;
}

static void plan_destroy(gemm_plan_t *p)
{
    cublasLtMatrixLayoutDestroy(p->d);
    cublasLtMatrixLayoutDestroy(p->b);
    cublasLtMatrixLayoutDestroy(p->a);
    cublasLtMatmulDescDestroy(p->op);
}

/* Column-major D[m x n] = op(A) * B (+ bias[m] per row of D), where op(A) is
 * m x k (A stored k x m when trans_a), B is k x n. free_is_m says which of
 * m and n is the call's row count (left out of the plan); ref is the value
 * the heuristic is asked about for it. */
typedef struct {
    int trans_a, free_is_m;
    int64_t m, n, k;
    const float *a;
    int64_t lda;
    const float *b;
    int64_t ldb;
    float *d;
    int64_t ldd;
    const float *bias;
    int64_t ref;
} gemm_call_t;

/* The fallback product (SDC_CUDA_GEMM=simt), for when the pinned cuBLASLt
 * algorithm fails the row-independence check on some GPU or library:
 *   C[i * ldc + j] = sum_k A[i * sai + k * sak] * B[j * sbj + k * sbk] (+ bias[j])
 * as one FMA chain per element over k in increasing order, so an element
 * depends on its row of A, its column of B and K, and on nothing else.
 * Plain 64 x 64 tiles: correct first, a few times slower than cuBLASLt. */
#define SG_T 64
#define SG_BK 16

typedef struct {
    const float *a, *b, *bias;
    float *c;
    int64_t sai, sak, sbj, sbk, ldc, M, N, K;
} simt_gemm_t;

/* Element e of a T x BK tile: along k first when k is the contiguous
 * dimension, else along the rows, so that a warp reads contiguous memory. */
__device__ __forceinline__ void sg_slot(int e, int k_contiguous, int *r, int *kk)
{
    if (k_contiguous) {
        *r = e / SG_BK;
        *kk = e % SG_BK;
    } else {
        *r = e % SG_T;
        *kk = e / SG_T;
    }
}

__global__ void __launch_bounds__(256) k_simt_gemm(simt_gemm_t g)
{
    __shared__ float As[SG_BK][SG_T + 1], Bs[SG_BK][SG_T + 1];
    const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
    const int64_t i0 = (int64_t)blockIdx.y * SG_T, j0 = (int64_t)blockIdx.x * SG_T;
    float acc[4][4];

    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            acc[i][j] = 0.0f;
    for (int64_t k0 = 0; k0 < g.K; k0 += SG_BK) {
        for (int e = tid; e < SG_T * SG_BK; e += 256) {
            int r, kk;
            sg_slot(e, g.sak == 1, &r, &kk);
            int64_t i = i0 + r, k = k0 + kk;
            As[kk][r] = i < g.M && k < g.K ? g.a[i * g.sai + k * g.sak] : 0.0f;
            sg_slot(e, g.sbk == 1, &r, &kk);
            int64_t j = j0 + r;
            k = k0 + kk;
            Bs[kk][r] = j < g.N && k < g.K ? g.b[j * g.sbj + k * g.sbk] : 0.0f;
        }
        __syncthreads();
        for (int kk = 0; kk < SG_BK; kk++) {
            float a[4], b[4];
            for (int i = 0; i < 4; i++)
                a[i] = As[kk][ty + 16 * i];
            for (int j = 0; j < 4; j++)
                b[j] = Bs[kk][tx + 16 * j];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++)
                    acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; i++) {
        const int64_t row = i0 + ty + 16 * i;
        if (row >= g.M)
            continue;
        for (int j = 0; j < 4; j++) {
            const int64_t col = j0 + tx + 16 * j;
            if (col < g.N)
                g.c[row * g.ldc + col] = g.bias ? __fadd_rn(g.bias[col], acc[i][j]) : acc[i][j];
        }
    }
}

/* gemm_call_t's column-major D = op(A) * B, written as the row-major
 * C = B^T * op(A)^T that k_simt_gemm computes (row i of C: column i of D). */
static void simt_gemm_run(cuda_impl_t *im, const gemm_call_t *g)
{
    simt_gemm_t s;
    memset(&s, 0, sizeof(s));
    s.a = g->b;
    s.sai = g->ldb;
    s.sak = 1;
    s.b = g->a;
    s.sbj = g->trans_a ? g->lda : 1;
    s.sbk = g->trans_a ? 1 : g->lda;
    s.c = g->d;
    s.ldc = g->ldd;
    s.bias = g->bias;
    s.M = g->n;
    s.N = g->m;
    s.K = g->k;
    assert((s.M + SG_T - 1) / SG_T <= 65535);
    const dim3 grid((unsigned)((s.N + SG_T - 1) / SG_T), (unsigned)((s.M + SG_T - 1) / SG_T));
    k_simt_gemm<<<grid, 256, 0, im->compute>>>(s);
    LAUNCHED();
}

static void gemm_run(cuda_impl_t *im, const gemm_call_t *g)
{
    if (im->simt) {
        simt_gemm_run(im, g);
        return;
    }
    gemm_key_t key;
    memset(&key, 0, sizeof(key));
    key.trans_a = g->trans_a;
    key.free_is_m = g->free_is_m;
    key.has_bias = g->bias != NULL;
    key.fixed = g->free_is_m ? g->n : g->m;
    key.k = g->k;
    key.lda = g->lda;
    key.ldb = g->ldb;
    key.ldd = g->ldd;
    int al = align_of(g->a, g->lda), bl = align_of(g->b, g->ldb), dl = align_of(g->d, g->ldd);
    int bias_al = g->bias ? align_of(g->bias, 0) : 16;
    key.align = al < bl ? al : bl;
    key.align = key.align < dl ? key.align : dl;
    key.align = key.align < bias_al ? key.align : bias_al;

    gemm_plan_t *p = plan_get(im, &key, g->ref);
    const float one = 1.0f, zero = 0.0f;
    plan_dims(p, g->m, g->n);
    if (g->bias)
        LT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias,
                                                sizeof(g->bias)));
    cublasStatus_t st = cublasLtMatmul(im->lt, p->op, &one, g->a, p->a, g->b, p->b, &zero, g->d,
                                       p->d, g->d, p->d, &p->algo, im->workspace,
                                       GEMM_WORKSPACE_BYTES, im->compute);
    if (st != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr,
                "sdc cuda backend: cublasLtMatmul m=%lld n=%lld k=%lld lda=%lld ldb=%lld "
                "ldd=%lld: %s (the algorithm pinned for this shape does not take this size)\n",
                (long long)g->m, (long long)g->n, (long long)g->k, (long long)g->lda,
                (long long)g->ldb, (long long)g->ldd, cublasLtGetStatusString(st));
        abort();
    }
}

/* y[r * ldy + c] = bias ? bias[c] : 0, for an empty sum. */
__global__ void k_rows_set_bias(float *y, int64_t ldy, const float *bias, int64_t rows,
                                int64_t cols)
{
    GRID_STRIDE(e, rows * cols)
    {
        int64_t r = e / cols, c = e % cols;
        y[r * ldy + c] = bias ? bias[c] : 0.0f;
    }
}

/* y (M x N, row-major) is column-major N x M: D = W^T(N x K) * X(K x M). */
static void cu_linear(sdc_backend_t *be, float *y, int64_t ldy, const float *x, int64_t ldx,
                      const float *w, const float *b, int64_t M, int64_t K, int64_t N)
{
    assert(ldx >= K && ldy >= N && (const float *)y != x);
    if (M <= 0 || N <= 0)
        return;
    cuda_impl_t *im = cu_enter(be);
    if (K <= 0) {
        k_rows_set_bias<<<blocks_for(im, M * N, 256), 256, 0, im->compute>>>(y, ldy, b, M, N);
        LAUNCHED();
        return;
    }
    gemm_call_t g;
    memset(&g, 0, sizeof(g));
    g.trans_a = 1;
    g.free_is_m = 0;
    g.m = N;
    g.n = M;
    g.k = K;
    g.a = w;
    g.lda = K;
    g.b = x;
    g.ldb = ldx;
    g.d = y;
    g.ldd = ldy;
    g.bias = b;
    g.ref = GEMM_REF_ROWS;
    gemm_run(im, &g);
}

/* ---- row reductions ------------------------------------------------------
 * One warp per row. Lane l sums elements l, l + 32, ... in order, then the
 * lanes combine by a xor butterfly, which leaves the same bits in every lane
 * (each step adds the same two values, in either order). The order depends
 * on the row length only. Sums are in double, as on the CPU. */

__device__ __forceinline__ double warp_sum_f64(double v)
{
    for (int m = 16; m > 0; m >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, m);
    return v;
}

__device__ __forceinline__ float warp_sum_f32(float v)
{
    for (int m = 16; m > 0; m >>= 1)
        v += __shfl_xor_sync(FULL_MASK, v, m);
    return v;
}

__device__ __forceinline__ float warp_max_f32(float v)
{
    for (int m = 16; m > 0; m >>= 1)
        v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, m));
    return v;
}

#define ROW_OF_WARP() ((int64_t)blockIdx.x * ROW_WARPS + threadIdx.x / 32)

static unsigned row_blocks(int64_t rows)
{
    return (unsigned)((rows + ROW_WARPS - 1) / ROW_WARPS);
}

/* The products below are written with _rn intrinsics so that they are not
 * contracted into FMAs: the CPU backend rounds each step, and so do we. */
__global__ void k_layer_norm(float *y, const float *x, const float *gamma, const float *beta,
                             int64_t rows, int64_t dim, float eps)
{
    const int64_t r = ROW_OF_WARP();
    const int lane = threadIdx.x & 31;
    if (r >= rows)
        return;
    const float *xr = x + r * dim;
    float *yr = y + r * dim;
    double s = 0.0;
    for (int64_t d = lane; d < dim; d += 32)
        s += xr[d];
    const double mean = warp_sum_f64(s) / (double)dim;
    double q = 0.0;
    for (int64_t d = lane; d < dim; d += 32) {
        double t = xr[d] - mean;
        q = __fma_rn(t, t, q);
    }
    const double rstd = 1.0 / sqrt(warp_sum_f64(q) / (double)dim + (double)eps);
    for (int64_t d = lane; d < dim; d += 32) {
        float v = (float)__dmul_rn(xr[d] - mean, rstd);
        if (gamma)
            v = __fmul_rn(v, gamma[d]);
        if (beta)
            v = __fadd_rn(v, beta[d]);
        yr[d] = v;
    }
}

static void cu_layer_norm(sdc_backend_t *be, float *y, const float *x, const float *gamma,
                          const float *beta, int64_t rows, int64_t dim, float eps)
{
    if (rows <= 0 || dim <= 0)
        return;
    cuda_impl_t *im = cu_enter(be);
    k_layer_norm<<<row_blocks(rows), ROW_WARPS * 32, 0, im->compute>>>(y, x, gamma, beta, rows,
                                                                      dim, eps);
    LAUNCHED();
}

__global__ void k_rms_norm(float *y, const float *x, const float *w, int64_t rows, int64_t dim,
                           int64_t ld, float eps)
{
    const int64_t r = ROW_OF_WARP();
    const int lane = threadIdx.x & 31;
    if (r >= rows)
        return;
    const float *xr = x + r * ld;
    float *yr = y + r * ld;
    double q = 0.0;
    for (int64_t d = lane; d < dim; d += 32) {
        double t = xr[d];
        q = __fma_rn(t, t, q);
    }
    const double rstd = 1.0 / sqrt(warp_sum_f64(q) / (double)dim + (double)eps);
    for (int64_t d = lane; d < dim; d += 32) {
        float v = (float)__dmul_rn(xr[d], rstd);
        yr[d] = w ? __fmul_rn(v, w[d]) : v;
    }
}

static void cu_rms_norm(sdc_backend_t *be, float *y, const float *x, const float *w,
                        int64_t rows, int64_t dim, int64_t ld, float eps)
{
    assert(ld >= dim);
    if (rows <= 0 || dim <= 0)
        return;
    cuda_impl_t *im = cu_enter(be);
    k_rms_norm<<<row_blocks(rows), ROW_WARPS * 32, 0, im->compute>>>(y, x, w, rows, dim, ld,
                                                                    eps);
    LAUNCHED();
}

__global__ void k_softmax(float *x, int64_t rows, int64_t dim)
{
    const int64_t r = ROW_OF_WARP();
    const int lane = threadIdx.x & 31;
    if (r >= rows)
        return;
    float *xr = x + r * dim;
    float m = -INFINITY;
    for (int64_t d = lane; d < dim; d += 32)
        m = fmaxf(m, xr[d]);
    m = warp_max_f32(m);
    float s = 0.0f;
    for (int64_t d = lane; d < dim; d += 32) {
        float p = expf(xr[d] - m);
        xr[d] = p;
        s += p;
    }
    s = warp_sum_f32(s);
    for (int64_t d = lane; d < dim; d += 32)
        xr[d] = xr[d] / s;
}

static void cu_softmax(sdc_backend_t *be, float *x, int64_t rows, int64_t dim)
{
    if (rows <= 0 || dim <= 0)
        return;
    cuda_impl_t *im = cu_enter(be);
    k_softmax<<<row_blocks(rows), ROW_WARPS * 32, 0, im->compute>>>(x, rows, dim);
    LAUNCHED();
}

/* ---- group norm ----------------------------------------------------------
 * A group is one contiguous run of (C / groups) * HW values, far too long
 * for one warp. It is summed in fixed chunks of GN_CHUNK (one block each,
 * a fixed tree inside the block), and the chunk sums are added in order by
 * one thread: the order depends on the group's length only. */

__device__ double block_sum_f64(double v, double *smem)
{
    const int lane = threadIdx.x & 31, w = threadIdx.x / 32, nw = blockDim.x / 32;
    v = warp_sum_f64(v);
    if (lane == 0)
        smem[w] = v;
    __syncthreads();
    double t = 0.0;
    for (int i = 0; i < nw; i++)
        t += smem[i];
    __syncthreads();
    return t;
}

/* partial[g * n_chunks + c]: the sum over chunk c of group g of x, or of
 * (x - mean[g])^2 when mean is given. */
__global__ void k_gn_partial(double *partial, const float *x, const double *mean, int64_t n,
                             int64_t n_chunks)
{
    __shared__ double smem[32];
    const int64_t g = blockIdx.y, c = blockIdx.x;
    const float *xg = x + g * n;
    const int64_t i0 = c * GN_CHUNK, i1 = i0 + GN_CHUNK < n ? i0 + GN_CHUNK : n;
    const double mu = mean ? mean[g] : 0.0;
    double s = 0.0;
    for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
        double t = xg[i];
        if (mean) {
            t -= mu;
            s = __fma_rn(t, t, s);
        } else {
            s += t;
        }
    }
    s = block_sum_f64(s, smem);
    if (threadIdx.x == 0)
        partial[g * n_chunks + c] = s;
}

/* stat[g] = sum of its chunks / n, then turned into rstd when to_rstd. */
__global__ void k_gn_finish(double *stat, const double *partial, int64_t groups, int64_t n,
                            int64_t n_chunks, float eps, int to_rstd)
{
    const int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= groups)
        return;
    double s = 0.0;
    for (int64_t c = 0; c < n_chunks; c++)
        s += partial[g * n_chunks + c];
    s /= (double)n;
    stat[g] = to_rstd ? 1.0 / sqrt(s + (double)eps) : s;
}

__global__ void k_gn_apply(float *y, const float *x, const float *gamma, const float *beta,
                           const double *mean, const double *rstd, int64_t C, int64_t HW,
                           int64_t cpg)
{
    GRID_STRIDE(e, C * HW)
    {
        const int64_t c = e / HW, g = c / cpg;
        float v = (float)__dmul_rn(x[e] - mean[g], rstd[g]);
        if (gamma)
            v = __fmul_rn(v, gamma[c]);
        if (beta)
            v = __fadd_rn(v, beta[c]);
        y[e] = v;
    }
}

static void cu_group_norm(sdc_backend_t *be, float *y, const float *x, const float *gamma,
                          const float *beta, int64_t C, int64_t HW, int64_t groups, float eps)
{
    assert(groups > 0 && C % groups == 0);
    if (C <= 0 || HW <= 0)
        return;
    cuda_impl_t *im = cu_enter(be);
    const int64_t cpg = C / groups, n = cpg * HW, n_chunks = (n + GN_CHUNK - 1) / GN_CHUNK;
    double *partial = (double *)cu_scratch(im, (size_t)(groups * n_chunks + 2 * groups) *
                                                   sizeof(double));
    double *mean = partial + groups * n_chunks, *rstd = mean + groups;
    const dim3 grid((unsigned)n_chunks, (unsigned)groups);
    const unsigned fin = (unsigned)((groups + 127) / 128);

    assert(groups <= 65535);
    k_gn_partial<<<grid, 256, 0, im->compute>>>(partial, x, NULL, n, n_chunks);
    LAUNCHED();
    k_gn_finish<<<fin, 128, 0, im->compute>>>(mean, partial, groups, n, n_chunks, eps, 0);
    LAUNCHED();
    k_gn_partial<<<grid, 256, 0, im->compute>>>(partial, x, mean, n, n_chunks);
    LAUNCHED();
    k_gn_finish<<<fin, 128, 0, im->compute>>>(rstd, partial, groups, n, n_chunks, eps, 1);
    LAUNCHED();
    k_gn_apply<<<blocks_for(im, C * HW, 256), 256, 0, im->compute>>>(y, x, gamma, beta, mean,
                                                                     rstd, C, HW, cpg);
    LAUNCHED();
}

/* ---- row-wise affine ops ------------------------------------------------ */

__global__ void k_modulate(float *y, const float *x, const float *shift, const float *scale,
                           int64_t rows, int64_t dim)
{
    GRID_STRIDE(e, rows * dim)
    {
        const int64_t d = e % dim;
        y[e] = __fadd_rn(__fmul_rn(x[e], __fadd_rn(1.0f, scale[d])), shift[d]);
    }
}

static void cu_modulate(sdc_backend_t *be, float *y, const float *x, const float *shift,
                        const float *scale, int64_t rows, int64_t dim)
{
    if (rows <= 0 || dim <= 0)
        return;
    cuda_impl_t *im = cu_enter(be);
    k_modulate<<<blocks_for(im, rows * dim, 256), 256, 0, im->compute>>>(y, x, shift, scale,
                                                                         rows, dim);
    LAUNCHED();
}

__global__ void k_gate_add(float *x, const float *gate, const float *r, int64_t ldr,
                           int64_t rows, int64_t dim)
{
    GRID_STRIDE(e, rows * dim)
    {
        const int64_t i = e / dim, d = e % dim;
        const float rv = r[i * ldr + d];
        x[e] = __fadd_rn(x[e], gate ? __fmul_rn(gate[d], rv) : rv);
    }
}

static void cu_gate_add(sdc_backend_t *be, float *x, const float *gate, const float *r,
                        int64_t ldr, int64_t rows, int64_t dim)
{
    assert(ldr >= dim);
    if (rows <= 0 || dim <= 0)
        return;
    cuda_impl_t *im = cu_enter(be);
    k_gate_add<<<blocks_for(im, rows * dim, 256), 256, 0, im->compute>>>(x, gate, r, ldr, rows,
                                                                         dim);
    LAUNCHED();
}

/* ---- element-wise --------------------------------------------------------- */

enum { OP_GELU_TANH, OP_GELU_ERF, OP_SILU };

template <int OP>
__device__ __forceinline__ float unary_op(float v)
{
    if (OP == OP_GELU_TANH) {
        const float k0 = 0.7978845608028654f; /* sqrt(2 / pi); torch's formula, literally */
        return 0.5f * v * (1.0f + tanhf(k0 * (v + 0.044715f * v * v * v)));
    }
    if (OP == OP_GELU_ERF)
        return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    return v / (1.0f + expf(-v));
}

template <int OP>
__global__ void k_unary(float *y, const float *x, int64_t n)
{
    GRID_STRIDE(i, n) y[i] = unary_op<OP>(x[i]);
}

template <int OP>
static void run_unary(sdc_backend_t *be, float *y, const float *x, int64_t n)
{
    if (n <= 0)
        return;
    cuda_impl_t *im = cu_enter(be);
    k_unary<OP><<<blocks_for(im, n, 256), 256, 0, im->compute>>>(y, x, n);
    LAUNCHED();
}

static void cu_gelu_tanh(sdc_backend_t *be, float *y, const float *x, int64_t n)
{
    run_unary<OP_GELU_TANH>(be, y, x, n);
}

static void cu_gelu_erf(sdc_backend_t *be, float *y, const float *x, int64_t n)
{
    run_unary<OP_GELU_ERF>(be, y, x, n);
}

static void cu_silu(sdc_backend_t *be, float *y, const float *x, int64_t n)
{
    run_unary<OP_SILU>(be, y, x, n);
}

/* y = alpha * a + beta * b; add is (1, 1) and mul has its own kernel. */
__global__ void k_axpby(float *y, float alpha, const float *a, float beta, const float *b,
                        int64_t n)
{
    GRID_STRIDE(i, n) y[i] = __fadd_rn(__fmul_rn(alpha, a[i]), __fmul_rn(beta, b[i]));
}

__global__ void k_add(float *y, const float *a, const float *b, int64_t n)
{
    GRID_STRIDE(i, n) y[i] = __fadd_rn(a[i], b[i]);
}

__global__ void k_mul(float *y, const float *a, const float *b, int64_t n)
{
    GRID_STRIDE(i, n) y[i] = __fmul_rn(a[i], b[i]);
}

static void cu_add(sdc_backend_t *be, float *y, const float *a, const float *b, int64_t n)
{
    if (n <= 0)
        return;
    cuda_impl_t *im = cu_enter(be);
    k_add<<<blocks_for(im, n, 256), 256, 0, im->compute>>>(y, a, b, n);
    LAUNCHED();
}

static void cu_mul(sdc_backend_t *be, float *y, const float *a, const float *b, int64_t n)
{
    if (n <= 0)
        return;
    cuda_impl_t *im = cu_enter(be);
    k_mul<<<blocks_for(im, n, 256), 256, 0, im->compute>>>(y, a, b, n);
    LAUNCHED();
}

static void cu_axpby(sdc_backend_t *be, float *y, float alpha, const float *a, float beta,
                     const float *b, int64_t n)
{
    if (n <= 0)
        return;
    cuda_impl_t *im = cu_enter(be);
    k_axpby<<<blocks_for(im, n, 256), 256, 0, im->compute>>>(y, alpha, a, beta, b, n);
    LAUNCHED();
}

/* ---- attention -----------------------------------------------------------
 *
 * Flash-style: a block owns AT_BQ queries of one head (and, for heads wider
 * than AT_DC, one AT_DC-wide slice of the output dims), walks the keys in
 * tiles of AT_BK with an online softmax, and never holds more than one
 * AT_BQ x AT_BK score tile. Per query, every step is one fixed sequence:
 * - score s_j: an FMA chain over d = 0 .. Dh-1 in order;
 * - per tile: max, then p_j = exp2(s_j * scale * log2 e - m), summed over
 *   four fixed quarters of the tile combined by a fixed butterfly;
 * - output: o = o * alpha + an FMA chain over the tile's keys in order;
 * and the key tiles follow the list of unmasked keys, so a masked key is
 * exactly a dropped key. Nothing depends on Lq or on the query's position
 * inside its block. Heads wider than AT_DC recompute the scores once per
 * output slice (the VAE's single head; the DiT's 128 needs one pass). */

/* rows [0, AT_BK) of a tile, columns [c0, c0 + cn) of each source row, into
 * smem rows AT_LD apart; row j is source row (idx ? idx[r0 + j] : r0 + j),
 * zeros past n_rows. */
__device__ void at_load_tile(float *tile, const float *src, int64_t ld, const int32_t *idx,
                             int64_t r0, int64_t n_rows, int64_t c0, int cn)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
    for (int j = warp; j < AT_BK; j += AT_THREADS / 32) {
        const int64_t r = r0 + j;
        float *t = tile + j * AT_LD;
        if (r < n_rows) {
            const float *s = src + (int64_t)(idx ? idx[r] : r) * ld + c0;
            for (int c = lane; c < cn; c += 32)
                t[c] = s[c];
        } else {
            for (int c = lane; c < cn; c += 32)
                t[c] = 0.0f;
        }
    }
}

__global__ void __launch_bounds__(AT_THREADS)
    k_attention(float *out, int64_t ldo, const float *q, int64_t ldq, const float *k,
                int64_t ldk, const float *v, int64_t ldv, int64_t Lq, int64_t Lk, int64_t Dh,
                const int32_t *key_idx, const int32_t *n_keys_dev, float scale_log2)
{
    static_assert(AT_BQ == 64 && AT_BK == 64 && AT_DC == 128 && AT_THREADS == 256,
                  "the thread mapping below assumes these tile sizes");
    extern __shared__ float smem[];
    float *Qs = smem, *KV = Qs + AT_BQ * AT_LD, *Ps = KV + AT_BK * AT_LD;
    float *row_m = Ps + AT_BQ * AT_PLD, *row_l = row_m + AT_BQ, *row_a = row_l + AT_BQ;

    const int tid = threadIdx.x;
    const int tr = tid / 16, tc = tid % 16; /* queries tr + 16 i; keys / dims tc + 16 j */
    const int64_t q0 = (int64_t)blockIdx.x * AT_BQ, h = blockIdx.y;
    const int64_t o0 = (int64_t)blockIdx.z * AT_DC;
    const int on = (int)(Dh - o0 < AT_DC ? Dh - o0 : AT_DC);
    const int64_t n_keys = key_idx ? *n_keys_dev : Lk;
    const float *qh = q + h * Dh, *kh = k + h * Dh, *vh = v + h * Dh;
    float *oh = out + h * Dh + o0;

    if (n_keys == 0) { /* every key masked: zeros */
        for (int e = tid; e < AT_BQ * on; e += AT_THREADS) {
            const int64_t i = q0 + e / on;
            if (i < Lq)
                oh[i * ldo + e % on] = 0.0f;
        }
        return;
    }

    const int n_dc = (int)((Dh + AT_DC - 1) / AT_DC);
    float o[4][8];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++)
            o[i][j] = 0.0f;
    if (tid < AT_BQ) {
        row_m[tid] = -INFINITY;
        row_l[tid] = 0.0f;
    }
    if (n_dc == 1) /* the whole head fits: load the queries once */
        at_load_tile(Qs, qh, ldq, NULL, q0, Lq, 0, (int)Dh);

    for (int64_t kb = 0; kb < n_keys; kb += AT_BK) {
        float s[4][4];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                s[i][j] = 0.0f;
        for (int c = 0; c < n_dc; c++) {
            const int64_t d0 = (int64_t)c * AT_DC;
            const int dn = (int)(Dh - d0 < AT_DC ? Dh - d0 : AT_DC);
            if (n_dc > 1)
                at_load_tile(Qs, qh, ldq, NULL, q0, Lq, d0, dn);
            at_load_tile(KV, kh, ldk, key_idx, kb, n_keys, d0, dn);
            __syncthreads();
            for (int d = 0; d < dn; d++) {
                float qa[4], ka[4];
                for (int i = 0; i < 4; i++)
                    qa[i] = Qs[(tr + 16 * i) * AT_LD + d];
                for (int j = 0; j < 4; j++)
                    ka[j] = KV[(tc + 16 * j) * AT_LD + d];
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 4; j++)
                        s[i][j] = fmaf(qa[i], ka[j], s[i][j]);
            }
            __syncthreads();
        }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                const int jj = tc + 16 * j;
                Ps[(tr + 16 * i) * AT_PLD + jj] =
                    kb + jj < n_keys ? s[i][j] * scale_log2 : -INFINITY;
            }
        __syncthreads();

        /* the keys are read: their buffer takes this block's slice of V */
        at_load_tile(KV, vh, ldv, key_idx, kb, n_keys, o0, on);
        { /* online softmax statistics, four threads per query row */
            const int r = tid / 4, part = tid % 4;
            float *pr = Ps + r * AT_PLD + part * (AT_BK / 4);
            float mx = -INFINITY;
            for (int j = 0; j < AT_BK / 4; j++)
                mx = fmaxf(mx, pr[j]);
            mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, 2));
            const float m_old = row_m[r], m_new = fmaxf(m_old, mx);
            float sum = 0.0f;
            for (int j = 0; j < AT_BK / 4; j++) {
                const float p = exp2f(pr[j] - m_new);
                pr[j] = p;
                sum += p;
            }
            sum += __shfl_xor_sync(FULL_MASK, sum, 1);
            sum += __shfl_xor_sync(FULL_MASK, sum, 2);
            __syncwarp();
            if (part == 0) {
                const float a = exp2f(m_old - m_new);
                row_a[r] = a;
                row_l[r] = row_l[r] * a + sum;
                row_m[r] = m_new;
            }
        }
        __syncthreads();

        for (int i = 0; i < 4; i++) {
            const float a = row_a[tr + 16 * i];
            for (int j = 0; j < 8; j++)
                o[i][j] *= a;
        }
        for (int j = 0; j < AT_BK; j++) {
            float p[4];
            for (int i = 0; i < 4; i++)
                p[i] = Ps[(tr + 16 * i) * AT_PLD + j];
            for (int dd = 0; dd < 8; dd++) {
                const float vv = KV[j * AT_LD + tc + 16 * dd];
                for (int i = 0; i < 4; i++)
                    o[i][dd] = fmaf(p[i], vv, o[i][dd]);
            }
        }
        __syncthreads();
    }

    for (int i = 0; i < 4; i++) {
        const int64_t qi = q0 + tr + 16 * i;
        if (qi >= Lq)
            continue;
        const float l = row_l[tr + 16 * i];
        for (int dd = 0; dd < 8; dd++) {
            const int d = tc + 16 * dd;
            if (d < on)
                oh[qi * ldo + d] = o[i][dd] / l;
        }
    }
}

/* idx[0 .. count) = the positions of the nonzero mask bytes, in order. One
 * block of 1024 threads walks the mask in chunks. */
__global__ void __launch_bounds__(1024)
    k_mask_compact(int32_t *idx, int32_t *count, const uint8_t *mask, int64_t Lk)
{
    __shared__ int warp_tot[32];
    __shared__ int base;
    const int lane = threadIdx.x & 31, w = threadIdx.x / 32;

    if (threadIdx.x == 0)
        base = 0;
    __syncthreads();
    for (int64_t c0 = 0; c0 < Lk; c0 += 1024) {
        const int64_t j = c0 + threadIdx.x;
        const int f = j < Lk && mask[j] != 0;
        const unsigned bits = __ballot_sync(FULL_MASK, f);
        if (lane == 0)
            warp_tot[w] = __popc(bits);
        __syncthreads();
        int off = base;
        for (int i = 0; i < w; i++)
            off += warp_tot[i];
        if (f)
            idx[off + __popc(bits & ((1u << lane) - 1u))] = (int32_t)j;
        __syncthreads();
        if (threadIdx.x == 0)
            for (int i = 0; i < 32; i++)
                base += warp_tot[i];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        *count = base;
}

static void cu_attention(sdc_backend_t *be, float *out, int64_t ldo, const float *q,
                         int64_t ldq, const float *k, int64_t ldk, const float *v, int64_t ldv,
                         int64_t Lq, int64_t Lk, int64_t H, int64_t Dh,
                         const uint8_t *key_mask, float scale)
{
    assert(ldq >= H * Dh && ldk >= H * Dh && ldv >= H * Dh && ldo >= H * Dh);
    assert(Lk < INT32_MAX && H <= 65535);
    if (Lq <= 0 || H <= 0 || Dh <= 0)
        return;
    cuda_impl_t *im = cu_enter(be);
    const int32_t *key_idx = NULL, *n_keys = NULL;
    if (key_mask && Lk > 0) {
        int32_t *buf = (int32_t *)cu_scratch(im, (size_t)(Lk + 1) * sizeof(int32_t));
        k_mask_compact<<<1, 1024, 0, im->compute>>>(buf + 1, buf, key_mask, Lk);
        LAUNCHED();
        n_keys = buf;
        key_idx = buf + 1;
    }
    const dim3 grid((unsigned)((Lq + AT_BQ - 1) / AT_BQ), (unsigned)H,
                    (unsigned)((Dh + AT_DC - 1) / AT_DC));
    const float scale_log2 = scale * 1.4426950408889634f;
    k_attention<<<grid, AT_THREADS, AT_SMEM_BYTES, im->compute>>>(
        out, ldo, q, ldq, k, ldk, v, ldv, Lq, Lk > 0 ? Lk : 0, Dh, key_idx, n_keys, scale_log2);
    LAUNCHED();
}

/* ---- rope, upsample ------------------------------------------------------ */

__global__ void k_rope(float *x, int64_t ld, const float *cos_, const float *sin_, int64_t L,
                       int64_t H, int64_t Dh)
{
    const int64_t half = Dh / 2;
    GRID_STRIDE(e, L * H * half)
    {
        const int64_t j = 2 * (e % half), th = e / half, h = th % H, t = th / H;
        float *xh = x + t * ld + h * Dh;
        const float *c = cos_ + t * Dh, *s = sin_ + t * Dh;
        const float a = xh[j], b = xh[j + 1];
        xh[j] = __fsub_rn(__fmul_rn(a, c[j]), __fmul_rn(b, s[j]));
        xh[j + 1] = __fadd_rn(__fmul_rn(b, c[j + 1]), __fmul_rn(a, s[j + 1]));
    }
}

static void cu_rope(sdc_backend_t *be, float *x, int64_t ld, const float *cos_,
                    const float *sin_, int64_t L, int64_t H, int64_t Dh)
{
    assert(Dh % 2 == 0 && ld >= H * Dh);
    if (L <= 0 || H <= 0 || Dh < 2)
        return;
    cuda_impl_t *im = cu_enter(be);
    k_rope<<<blocks_for(im, L * H * (Dh / 2), 256), 256, 0, im->compute>>>(x, ld, cos_, sin_, L,
                                                                           H, Dh);
    LAUNCHED();
}

__global__ void k_upsample2x(float *y, const float *x, int64_t C, int64_t H, int64_t W)
{
    GRID_STRIDE(e, C * 4 * H * W)
    {
        const int64_t ox = e % (2 * W), r = e / (2 * W), oy = r % (2 * H), c = r / (2 * H);
        y[e] = x[(c * H + oy / 2) * W + ox / 2];
    }
}

static void cu_upsample_nearest2x(sdc_backend_t *be, float *y, const float *x, int64_t C,
                                  int64_t H, int64_t W)
{
    if (C <= 0 || H <= 0 || W <= 0)
        return;
    cuda_impl_t *im = cu_enter(be);
    k_upsample2x<<<blocks_for(im, C * 4 * H * W, 256), 256, 0, im->compute>>>(y, x, C, H, W);
    LAUNCHED();
}

/* ---- convolution ----------------------------------------------------------
 *
 * im2col + cuBLASLt rather than an implicit-GEMM kernel of our own: the
 * product then runs on the same tuned, pinned cuBLASLt path as linear, and
 * the extra traffic (the column buffer is written once and read once per
 * output tile) is small next to the product for the VAE's 3x3 convolutions
 * with hundreds of channels. The column buffer is bounded (CONV_COL_BYTES):
 * large images go in chunks of output pixels, each chunk a product over the
 * full K, so the chunking changes no sum. A 1x1 stride-1 unpadded
 * convolution is a product on the image itself. */

/* col[kk * ldc + p] for kk = (c, ky, kx) and output pixel p0 + p. */
__global__ void k_im2col(float *col, int64_t ldc, const float *x, int64_t H, int64_t W,
                         int64_t Wo, int64_t kh, int64_t kw, int64_t stride, int64_t pad,
                         int64_t K, int64_t p0, int64_t np)
{
    GRID_STRIDE(e, K * np)
    {
        const int64_t kk = e / np, p = e % np, pix = p0 + p;
        const int64_t c = kk / (kh * kw), ky = (kk / kw) % kh, kx = kk % kw;
        const int64_t iy = (pix / Wo) * stride - pad + ky, ix = (pix % Wo) * stride - pad + kx;
        col[kk * ldc + p] =
            iy >= 0 && iy < H && ix >= 0 && ix < W ? x[(c * H + iy) * W + ix] : 0.0f;
    }
}

__global__ void k_add_channel_bias(float *y, const float *b, int64_t C, int64_t HW)
{
    GRID_STRIDE(e, C * HW) y[e] = __fadd_rn(y[e], b[e / HW]);
}

/* y (Cout x HWo, row-major) is column-major HWo x Cout:
 * D = col(HWo x K) * W^T(K x Cout). */
static void conv_product(cuda_impl_t *im, float *y, const float *x, const float *w, int64_t Cin,
                         int64_t H, int64_t W, int64_t Cout, int64_t kh, int64_t kw,
                         int64_t stride, int64_t pad)
{
    const int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
    const int64_t HWo = Ho * Wo, K = Cin * kh * kw;
    gemm_call_t g;

    memset(&g, 0, sizeof(g));
    g.trans_a = 0;
    g.free_is_m = 1;
    g.n = Cout;
    g.k = K;
    g.b = w;
    g.ldb = K;
    g.ldd = HWo;
    if (kh == 1 && kw == 1 && stride == 1 && pad == 0) {
        g.m = HWo;
        g.a = x;
        g.lda = HWo;
        g.d = y;
        g.ref = HWo;
        gemm_run(im, &g);
        return;
    }
    int64_t chunk = (int64_t)(CONV_COL_BYTES / sizeof(float)) / K;
    chunk = chunk >= 128 ? chunk / 128 * 128 : chunk > 0 ? chunk : 1;
    chunk = chunk < HWo ? chunk : HWo;
    float *col = (float *)cu_scratch(im, (size_t)(K * chunk) * sizeof(float));
    g.a = col;
    g.lda = chunk;
    g.ref = chunk;
    for (int64_t p0 = 0; p0 < HWo; p0 += chunk) {
        const int64_t np = HWo - p0 < chunk ? HWo - p0 : chunk;
        k_im2col<<<blocks_for(im, K * np, 256), 256, 0, im->compute>>>(
            col, chunk, x, H, W, Wo, kh, kw, stride, pad, K, p0, np);
        LAUNCHED();
        g.m = np;
        g.d = y + p0;
        gemm_run(im, &g);
    }
}

static void cu_conv2d(sdc_backend_t *be, float *y, const float *x, const float *w,
                      const float *b, int64_t Cin, int64_t H, int64_t W, int64_t Cout,
                      int64_t kh, int64_t kw, int64_t stride, int64_t pad)
{
    assert(stride >= 1 && pad >= 0 && kh >= 1 && kw >= 1);
    const int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
    const int64_t HWo = Ho * Wo, K = Cin * kh * kw;
    if (Cout <= 0 || Ho <= 0 || Wo <= 0)
        return;
    cuda_impl_t *im = cu_enter(be);
    if (K <= 0) { /* no input channels: the bias alone */
        k_fill<<<blocks_for(im, Cout * HWo, 256), 256, 0, im->compute>>>(y, 0.0f, Cout * HWo);
        LAUNCHED();
    } else {
        conv_product(im, y, x, w, Cin, H, W, Cout, kh, kw, stride, pad);
    }
    if (b) {
        k_add_channel_bias<<<blocks_for(im, Cout * HWo, 256), 256, 0, im->compute>>>(y, b, Cout,
                                                                                     HWo);
        LAUNCHED();
    }
}

/* ---- the table, creation ------------------------------------------------- */

static void cu_destroy(sdc_backend_t *be)
{
    if (!be)
        return;
    cuda_impl_t *im = impl_of(be);
    if (im) {
        cudaSetDevice(im->device);
        if (im->copy)
            cudaStreamSynchronize(im->copy);
        for (size_t i = 0; i < im->n_plans; i++)
            plan_destroy(&im->plans[i]);
        free(im->plans);
        if (im->lt)
            cublasLtDestroy(im->lt);
        if (im->compute) {
            if (im->scratch)
                cudaFreeAsync(im->scratch, im->compute);
            if (im->workspace)
                cudaFreeAsync(im->workspace, im->compute);
            cudaStreamSynchronize(im->compute);
        }
        for (int i = 0; i < 2; i++) {
            if (im->staging[i])
                cudaFreeHost(im->staging[i]);
            if (im->staging_done[i])
                cudaEventDestroy(im->staging_done[i]);
        }
        if (im->ev_compute)
            cudaEventDestroy(im->ev_compute);
        if (im->ev_copy)
            cudaEventDestroy(im->ev_copy);
        if (im->copy)
            cudaStreamDestroy(im->copy);
        if (im->compute)
            cudaStreamDestroy(im->compute);
        if (im->pool)
            cudaMemPoolDestroy(im->pool);
        free(im);
    }
    free(be);
}

static const sdc_backend_ops_t cuda_ops = {
    .name = "cuda",
    .host_memory = 0,
    .destroy = cu_destroy,
    .alloc = cu_alloc,
    .free = cu_free,
    .upload = cu_upload,
    .download = cu_download,
    .copy = cu_copy,
    .fill = cu_fill,
    .sync = cu_sync,
    .copy_strided = cu_copy_strided,
    .linear = cu_linear,
    /* cuBLAS reads the weights as they are stored. */
    .linear_pack = nullptr,
    .linear_packed = nullptr,
    .layer_norm = cu_layer_norm,
    .rms_norm = cu_rms_norm,
    .modulate = cu_modulate,
    .gate_add = cu_gate_add,
    .gelu_tanh = cu_gelu_tanh,
    .gelu_erf = cu_gelu_erf,
    .silu = cu_silu,
    .add = cu_add,
    .mul = cu_mul,
    .axpby = cu_axpby,
    .attention = cu_attention,
    .rope = cu_rope,
    .conv2d = cu_conv2d,
    .group_norm = cu_group_norm,
    .upsample_nearest2x = cu_upsample_nearest2x,
    .softmax = cu_softmax,
};

/* Everything that can fail at creation, in order; cu_destroy undoes any
 * prefix of it (the impl starts zeroed). */
static sdc_status_t cu_init(cuda_impl_t *im, sdc_error_t *err)
{
    cudaError_t e;
    cudaMemPoolProps props;
    uint64_t keep = UINT64_MAX;

#define INIT(call, what)                                                                  \
    do {                                                                                  \
        if ((e = (call)) != cudaSuccess)                                                  \
            return sdc_error_set(err, SDC_ERR_INTERNAL, "cuda backend: %s: %s", what,      \
                                 cudaGetErrorString(e));                                  \
    } while (0)

    INIT(cudaSetDevice(im->device), "selecting the device");
    INIT(cudaDeviceGetAttribute(&im->n_sm, cudaDevAttrMultiProcessorCount, im->device),
         "querying the device");
    INIT(cudaStreamCreateWithFlags(&im->compute, cudaStreamNonBlocking), "creating a stream");
    INIT(cudaStreamCreateWithFlags(&im->copy, cudaStreamNonBlocking), "creating a stream");
    INIT(cudaEventCreateWithFlags(&im->ev_compute, cudaEventDisableTiming), "creating an event");
    INIT(cudaEventCreateWithFlags(&im->ev_copy, cudaEventDisableTiming), "creating an event");
    for (int i = 0; i < 2; i++) {
        INIT(cudaEventCreateWithFlags(&im->staging_done[i], cudaEventDisableTiming),
             "creating an event");
        INIT(cudaHostAlloc(&im->staging[i], STAGING_BYTES, cudaHostAllocDefault),
             "allocating pinned staging memory");
    }
    memset(&props, 0, sizeof(props));
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = im->device;
    INIT(cudaMemPoolCreate(&im->pool, &props), "creating the memory pool");
    /* a caching allocator: freed blocks stay in the pool for the next alloc */
    INIT(cudaMemPoolSetAttribute(im->pool, cudaMemPoolAttrReleaseThreshold, &keep),
         "configuring the memory pool");
    INIT(cudaMallocFromPoolAsync(&im->workspace, GEMM_WORKSPACE_BYTES, im->pool, im->compute),
         "allocating the GEMM workspace");
    INIT(cudaFuncSetAttribute(k_attention, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              (int)AT_SMEM_BYTES),
         "configuring the attention kernel");
    cublasStatus_t st = cublasLtCreate(&im->lt);
    if (st != CUBLAS_STATUS_SUCCESS) {
        im->lt = NULL;
        return sdc_error_set(err, SDC_ERR_INTERNAL, "cuda backend: cublasLtCreate: %s",
                             cublasLtGetStatusString(st));
    }
    INIT(cudaStreamSynchronize(im->compute), "initialising the device");
#undef INIT
    return SDC_OK;
}

extern "C" sdc_status_t sdc_backend_cuda_create(const sdc_backend_config_t *cfg,
                                                sdc_backend_t **out, sdc_error_t *err)
{
    int device = cfg ? cfg->device : 0, count = 0;
    const char *tf32 = getenv("SDC_CUDA_TF32"), *gemm = getenv("SDC_CUDA_GEMM");

    *out = NULL;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        (void)cudaGetLastError();
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED, "backend \"cuda\": no CUDA device (%s)",
                             e != cudaSuccess ? cudaGetErrorString(e) : "the driver sees none");
    }
    if (gemm && *gemm && strcmp(gemm, "cublaslt") != 0 && strcmp(gemm, "simt") != 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "backend \"cuda\": SDC_CUDA_GEMM is \"%s\", want \"cublaslt\" "
                             "(default) or \"simt\"",
                             gemm);
    if (device < 0 || device >= count)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "backend \"cuda\": device %d does not exist (this machine has %d)",
                             device, count);

    /* a device older than the build's CUDA_ARCH has no code to run */
    cudaFuncAttributes fa;
    if ((e = cudaSetDevice(device)) == cudaSuccess)
        e = cudaFuncGetAttributes(&fa, k_fill);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "backend \"cuda\": no code for device %d in this build (%s); "
                             "rebuild with its architecture in CUDA_ARCH",
                             device, cudaGetErrorString(e));
    }

    sdc_backend_t *be = (sdc_backend_t *)calloc(1, sizeof(*be));
    if (!be)
        goto err_nomem;
    cuda_impl_t *im;
    im = (cuda_impl_t *)calloc(1, sizeof(*im));
    if (!im)
        goto err_free_be;
    im->device = device;
    im->tf32 = tf32 && strcmp(tf32, "1") == 0;
    im->simt = gemm && strcmp(gemm, "simt") == 0;
    be->ops = &cuda_ops;
    be->impl = im;
    be->n_threads = 1;
    sdc_status_t st;
    st = cu_init(im, err);
    if (st != SDC_OK)
        goto err_destroy;
    *out = be;
    return SDC_OK;

err_destroy:
    cu_destroy(be);
    return st;
err_free_be:
    free(be);
err_nomem:
    return sdc_error_set(err, SDC_ERR_NOMEM, "cuda backend: out of memory creating the backend");
}
