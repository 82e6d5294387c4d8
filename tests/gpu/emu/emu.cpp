/*
 * emu.cpp: the CPU side of emu.h: fibers for the threads of a block, a
 * scheduler that releases them at barriers, and the runtime and cuBLASLt
 * stand-ins. Not a simulator of a GPU's timing or memory model.
 */
#include "emu.h"

#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <map>
#include <vector>

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
float *emu_dyn_smem;

/* A fiber starts on its own stack through makecontext/setcontext; after
 * that, switches are _setjmp/_longjmp, which (unlike swapcontext) make no
 * system call. */
enum { NEW, RUN, AT_BLOCK, AT_WARP, DONE };
struct Fiber {
    ucontext_t ctx;
    jmp_buf jb;
    int state;
    char *stack;
};
static jmp_buf sched_jb;
static const size_t STACK = 128 << 10;
static std::vector<Fiber> fibers;
static int cur;
static std::function<void()> *cur_fn;
static unsigned char xchg[32][32][8]; /* warp, lane, bytes */
static void device_open();
static void device_close();

static void yield_state(int st)
{
    fibers[cur].state = st;
    if (!_setjmp(fibers[cur].jb))
        _longjmp(sched_jb, 1);
}

void __syncthreads()
{
    yield_state(AT_BLOCK);
}
void __syncwarp(unsigned)
{
    yield_state(AT_WARP);
}

void emu_xchg(const void *in, void *out, int size, int m)
{
    int lane = cur % 32, w = cur / 32;
    memcpy(xchg[w][lane], in, (size_t)size);
    yield_state(AT_WARP);
    memcpy(out, xchg[w][lane ^ m], (size_t)size);
    yield_state(AT_WARP);
}

unsigned __ballot_sync(unsigned, int pred)
{
    int lane = cur % 32, w = cur / 32;
    int v = pred != 0;
    memcpy(xchg[w][lane], &v, sizeof v);
    yield_state(AT_WARP);
    unsigned bits = 0;
    for (int l = 0; l < 32; l++) {
        int p;
        memcpy(&p, xchg[w][l], sizeof p);
        if (p)
            bits |= 1u << l;
    }
    yield_state(AT_WARP);
    return bits;
}

static void fiber_entry()
{
    (*cur_fn)();
    fibers[cur].state = DONE;
    _longjmp(sched_jb, 1);
}

static void run_block(int n)
{
    if ((int)fibers.size() < n) {
        size_t old = fibers.size();
        fibers.resize((size_t)n);
        for (size_t i = old; i < (size_t)n; i++)
            fibers[i].stack = (char *)malloc(STACK);
    }
    for (int t = 0; t < n; t++) {
        Fiber &f = fibers[t];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = STACK;
        f.ctx.uc_link = NULL;
        makecontext(&f.ctx, fiber_entry, 0);
        f.state = NEW;
    }
    for (;;) {
        for (int t = 0; t < n; t++) {
            int st = fibers[t].state;
            if (st != RUN && st != NEW)
                continue;
            cur = t;
            threadIdx.x = (unsigned)(t % blockDim.x);
            threadIdx.y = (unsigned)((t / blockDim.x) % blockDim.y);
            threadIdx.z = (unsigned)(t / (blockDim.x * blockDim.y));
            if (!_setjmp(sched_jb)) {
                if (st == NEW) {
                    fibers[t].state = RUN;
                    setcontext(&fibers[t].ctx);
                }
                _longjmp(fibers[t].jb, 1);
            }
        }
        int live = 0, at_block = 0, released = 0;
        for (int t = 0; t < n; t++) {
            live += fibers[t].state != DONE;
            at_block += fibers[t].state == AT_BLOCK;
        }
        if (!live)
            return;
        for (int w = 0; w * 32 < n; w++) {
            int wl = 0, ww = 0;
            for (int t = w * 32; t < n && t < w * 32 + 32; t++) {
                wl += fibers[t].state != DONE;
                ww += fibers[t].state == AT_WARP;
            }
            if (wl && ww == wl) {
                if (wl != 32 && n >= w * 32 + 32) {
                    fprintf(stderr, "emu: warp op with %d of 32 lanes live\n", wl);
                    abort();
                }
                for (int t = w * 32; t < n && t < w * 32 + 32; t++)
                    fibers[t].state = RUN;
                released = 1;
            }
        }
        if (!released && at_block == live) {
            for (int t = 0; t < n; t++)
                if (fibers[t].state == AT_BLOCK)
                    fibers[t].state = RUN;
            released = 1;
        }
        if (!released) {
            fprintf(stderr, "emu: deadlock (live %d, at block barrier %d)\n", live, at_block);
            abort();
        }
    }
}

void emu_launch(dim3 grid, dim3 block, size_t smem, std::function<void()> fn)
{
    int n = (int)(block.x * block.y * block.z);
    if (n <= 0 || n > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
        grid.z > 65535) {
        fprintf(stderr, "emu: bad launch %u %u %u / %u %u %u\n", grid.x, grid.y, grid.z, block.x,
                block.y, block.z);
        abort();
    }
    std::vector<float> dyn(smem / sizeof(float) + 1);
    gridDim = grid;
    blockDim = block;
    cur_fn = &fn;
    device_open();
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                for (auto &v : dyn)
                    v = NAN; /* uninitialised shared memory */
                emu_dyn_smem = dyn.data();
                blockIdx.x = x;
                blockIdx.y = y;
                blockIdx.z = z;
                run_block(n);
            }
    device_close();
}

/* ---- device memory ------------------------------------------------------
 * One reserved address range, readable and writable only while a kernel,
 * a copy or a matmul runs: host code that dereferences a device pointer
 * crashes here as it would on a GPU. Allocation is a bump pointer (freed
 * pages go back to the kernel, addresses are not reused). */
static const size_t ARENA = (size_t)256 << 30;
static char *arena;
static size_t arena_used;
static int open_depth;
static std::map<void *, size_t> live_allocs;

static void device_open()
{
    if (open_depth++ == 0 && arena_used && mprotect(arena, arena_used, PROT_READ | PROT_WRITE)) {
        perror("emu: mprotect");
        abort();
    }
}

static void device_close()
{
    if (--open_depth == 0 && arena_used && mprotect(arena, arena_used, PROT_NONE)) {
        perror("emu: mprotect");
        abort();
    }
}

// ---- runtime ----
const char *cudaGetErrorString(cudaError_t e)
{
    return e ? "emu error" : "no error";
}
cudaError_t cudaGetLastError()
{
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int)
{
    return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int *n)
{
    *n = getenv("EMU_NO_DEVICE") ? 0 : 1;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr, int)
{
    *v = 4;
    return cudaSuccess;
}
struct emu_stream {
    int x;
};
struct emu_event {
    int x;
};
struct emu_pool {
    int x;
};
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned)
{
    *s = new emu_stream();
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t)
{
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned)
{
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned)
{
    *e = new emu_event();
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t)
{
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t)
{
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    delete e;
    return cudaSuccess;
}
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned)
{
    *p = malloc(n);
    return cudaSuccess;
}
cudaError_t cudaFreeHost(void *p)
{
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t)
{
    device_open();
    memmove(d, s, n);
    device_close();
    return cudaSuccess;
}
cudaError_t cudaMemPoolCreate(cudaMemPool_t *p, const cudaMemPoolProps *)
{
    *p = new emu_pool();
    return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void *)
{
    return cudaSuccess;
}
cudaError_t cudaMemPoolDestroy(cudaMemPool_t p)
{
    delete p;
    return cudaSuccess;
}
cudaError_t cudaMallocFromPoolAsync(void **p, size_t n, cudaMemPool_t, cudaStream_t)
{
    const size_t page = 4096, bytes = (n + page - 1) / page * page;
    if (!arena) {
        void *a = mmap(NULL, ARENA, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (a == MAP_FAILED)
            return cudaErrorMemoryAllocation;
        arena = (char *)a;
    }
    if (n > ((size_t)8 << 30) || bytes > ARENA - arena_used)
        return cudaErrorMemoryAllocation;
    *p = arena + arena_used;
    arena_used += bytes;
    live_allocs[*p] = bytes;
    device_open();
    uint32_t nan = 0x7fc00001u; /* poison: reads of unwritten memory show up as NaN */
    for (size_t i = 0; i + 4 <= bytes; i += 4)
        memcpy((char *)*p + i, &nan, 4);
    device_close();
    return cudaSuccess;
}
cudaError_t cudaFreeAsync(void *p, cudaStream_t)
{
    auto it = live_allocs.find(p);
    if (it == live_allocs.end()) {
        fprintf(stderr, "emu: cudaFreeAsync of %p, not a live device allocation\n", p);
        abort();
    }
    madvise(p, it->second, MADV_DONTNEED);
    live_allocs.erase(it);
    return cudaSuccess;
}

// ---- cuBLASLt ----
struct emu_lt {
    int x;
};
struct emu_desc {
    int ta, tb, epi;
    const float *bias;
};
struct emu_layout {
    uint64_t rows, cols;
    int64_t ld;
};
struct emu_pref {
    int x;
};
const char *cublasLtGetStatusString(cublasStatus_t s)
{
    return s ? "emu lt error" : "ok";
}
cublasStatus_t cublasLtCreate(cublasLtHandle_t *h)
{
    *h = new emu_lt();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t, cudaDataType)
{
    *d = new emu_desc();
    (*d)->epi = CUBLASLT_EPILOGUE_DEFAULT;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d)
{
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t a, const void *v,
                                              size_t n)
{
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
        if (n != sizeof(int))
            abort();
        memcpy(&d->ta, v, n);
        break;
    case CUBLASLT_MATMUL_DESC_TRANSB:
        if (n != sizeof(int))
            abort();
        memcpy(&d->tb, v, n);
        break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
        if (n != sizeof(int))
            abort();
        memcpy(&d->epi, v, n);
        break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
        if (n != sizeof(void *))
            abort();
        memcpy(&d->bias, v, n);
        break;
    }
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType, uint64_t r,
                                          uint64_t c, int64_t ld)
{
    *l = new emu_layout{r, c, ld};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l)
{
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l,
                                                cublasLtMatrixLayoutAttribute_t a, const void *v,
                                                size_t n)
{
    if (n != 8)
        abort();
    if (a == CUBLASLT_MATRIX_LAYOUT_ROWS)
        memcpy(&l->rows, v, 8);
    else
        memcpy(&l->cols, v, 8);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p)
{
    *p = new emu_pref();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p)
{
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t,
                                                    cublasLtMatmulPreferenceAttributes_t,
                                                    const void *, size_t)
{
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t check_dims(cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t A,
                                 cublasLtMatrixLayout_t B, cublasLtMatrixLayout_t D, uint64_t *m,
                                 uint64_t *n, uint64_t *k)
{
    *m = D->rows;
    *n = D->cols;
    uint64_t am = d->ta ? A->cols : A->rows;
    *k = d->ta ? A->rows : A->cols;
    if (am != *m || B->rows != *k || B->cols != *n || d->tb)
        return CUBLAS_STATUS_INVALID_VALUE;
    if ((uint64_t)A->ld < A->rows || (uint64_t)B->ld < B->rows || (uint64_t)D->ld < D->rows)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (*m == 0 || *n == 0 || *k == 0)
        return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d,
                                              cublasLtMatrixLayout_t A, cublasLtMatrixLayout_t B,
                                              cublasLtMatrixLayout_t, cublasLtMatrixLayout_t D,
                                              cublasLtMatmulPreference_t, int req,
                                              cublasLtMatmulHeuristicResult_t *r, int *found)
{
    uint64_t m, n, k;
    cublasStatus_t s = check_dims(d, A, B, D, &m, &n, &k);
    if (s)
        return s;
    /* two candidates: a split-K one first, to exercise the fix-up */
    *found = req < 2 ? req : 2;
    for (int i = 0; i < *found; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        r[i].algo.data[0] = i == 0 ? 4 : 1; /* split-K count */
        r[i].state = CUBLAS_STATUS_SUCCESS;
    }
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoConfigGetAttribute(const cublasLtMatmulAlgo_t *a,
                                                    cublasLtMatmulAlgoConfigAttributes_t at,
                                                    void *v, size_t n, size_t *w)
{
    if (at == CUBLASLT_ALGO_CONFIG_SPLITK_NUM) {
        if (n != 4)
            abort();
        int32_t s = (int32_t)a->data[0];
        memcpy(v, &s, 4);
    } else {
        if (n != 4)
            abort();
        uint32_t s = (uint32_t)a->data[1];
        memcpy(v, &s, 4);
    }
    *w = 4;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoConfigSetAttribute(cublasLtMatmulAlgo_t *a,
                                                    cublasLtMatmulAlgoConfigAttributes_t at,
                                                    const void *v, size_t n)
{
    if (n != 4)
        abort();
    uint32_t s;
    memcpy(&s, v, 4);
    a->data[at == CUBLASLT_ALGO_CONFIG_SPLITK_NUM ? 0 : 1] = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoCapGetAttribute(const cublasLtMatmulAlgo_t *,
                                                 cublasLtMatmulAlgoCapAttributes_t, void *v,
                                                 size_t n, size_t *w)
{
    if (n != 8)
        abort();
    uint64_t f = CUBLASLT_NUMERICAL_IMPL_FLAGS_FMA;
    memcpy(v, &f, 8);
    *w = 8;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoCheck(cublasLtHandle_t, cublasLtMatmulDesc_t d,
                                       cublasLtMatrixLayout_t A, cublasLtMatrixLayout_t B,
                                       cublasLtMatrixLayout_t, cublasLtMatrixLayout_t D,
                                       const cublasLtMatmulAlgo_t *,
                                       cublasLtMatmulHeuristicResult_t *r)
{
    uint64_t m, n, k;
    cublasStatus_t s = check_dims(d, A, B, D, &m, &n, &k);
    r->state = s;
    return s;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void *alpha,
                              const void *Ap, cublasLtMatrixLayout_t A, const void *Bp,
                              cublasLtMatrixLayout_t B, const void *beta, const void *Cp,
                              cublasLtMatrixLayout_t C, void *Dp, cublasLtMatrixLayout_t D,
                              const cublasLtMatmulAlgo_t *algo, void *, size_t, cudaStream_t)
{
    uint64_t m, n, k;
    cublasStatus_t s = check_dims(d, A, B, D, &m, &n, &k);
    if (s)
        return s;
    if (algo->data[0] != 1 || algo->data[1] != 0) {
        fprintf(stderr, "emu: split-K algo used\n");
        abort();
    }
    if (Cp != Dp || C != D)
        abort();
    float al = *(const float *)alpha, be = *(const float *)beta;
    if (al != 1.0f || be != 0.0f)
        abort();
    const float *a = (const float *)Ap, *b = (const float *)Bp;
    float *dd = (float *)Dp;
    device_open();
    for (uint64_t j = 0; j < n; j++)
        for (uint64_t i = 0; i < m; i++) {
            float acc = 0.0f;
            for (uint64_t kk = 0; kk < k; kk++) {
                float av = d->ta ? a[kk + i * A->ld] : a[i + kk * A->ld];
                acc = fmaf(av, b[kk + j * B->ld], acc);
            }
            if (d->epi == CUBLASLT_EPILOGUE_BIAS)
                acc += d->bias[i];
            dd[i + j * D->ld] = acc;
        }
    device_close();
    return CUBLAS_STATUS_SUCCESS;
}
