/*
 * cpu_kernels.c: the CPU backend's innermost loops, once in portable C and
 * once with AVX2+FMA intrinsics (compiled per function with a target
 * attribute and picked at run time, so the build needs no -march flag).
 *
 * Each element gets one fixed sequence of operations whatever its position:
 * vector loops pad their tails through a small buffer instead of switching
 * to scalar code, which is what lets callers split work between threads
 * without changing a bit of the result. Not here: packing and the loops
 * around the micro-tiles (cpu_gemm.c), the ops themselves (backend_cpu.c).
 */
#include "cpu_kernels.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SDC_HAVE_X86 1
#else
#define SDC_HAVE_X86 0
#endif

/* ---- portable C ------------------------------------------------------- */

/* A is read at a[i * rs + k * ks]: packed panels are (1, MR), plain rows
 * are (lda, 1). Rows past mr are read from row 0 (and never stored), so
 * plain rows need no padding. */
static void gemm_tile_any_generic(int64_t kc, const float *a, int64_t rs, int64_t ks,
                                  const float *b, float *c, int64_t ldc, int mr, int nr,
                                  const float *bias, sdc_gemm_mode_t mode)
{
    float acc[SDC_GEMM_MR][SDC_GEMM_NR] = {{0}};
    const float *ar[SDC_GEMM_MR];

    for (int i = 0; i < SDC_GEMM_MR; i++)
        ar[i] = a + (i < mr ? i : 0) * rs;
    for (int64_t k = 0; k < kc; k++) {
        for (int i = 0; i < SDC_GEMM_MR; i++) {
            float ai = ar[i][k * ks];
            for (int j = 0; j < SDC_GEMM_NR; j++)
                acc[i][j] = acc[i][j] + ai * b[j];
        }
        b += SDC_GEMM_NR;
    }
    for (int i = 0; i < mr; i++) {
        float *ci = c + i * ldc;
        for (int j = 0; j < nr; j++) {
            if (mode == SDC_GEMM_ACCUM)
                ci[j] = ci[j] + acc[i][j];
            else
                ci[j] = bias ? bias[j] + acc[i][j] : acc[i][j];
        }
    }
}

static void gemm_tile_generic(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                              int mr, int nr, const float *bias, sdc_gemm_mode_t mode)
{
    gemm_tile_any_generic(kc, a, 1, SDC_GEMM_MR, b, c, ldc, mr, nr, bias, mode);
}

static void gemm_tile_rows_generic(int64_t kc, const float *a, int64_t lda, const float *b,
                                   float *c, int64_t ldc, int mr, int nr, const float *bias,
                                   sdc_gemm_mode_t mode)
{
    gemm_tile_any_generic(kc, a, lda, 1, b, c, ldc, mr, nr, bias, mode);
}

static float softmax_row_generic(float *p, const float *x, int64_t n, float scale)
{
    float m = -INFINITY, sum = 0.0f;

    for (int64_t j = 0; j < n; j++)
        m = x[j] > m ? x[j] : m;
    for (int64_t j = 0; j < n; j++) {
        p[j] = expf((x[j] - m) * scale);
        sum += p[j];
    }
    return sum;
}

/* torch's tanh approximation, literally. */
static void gelu_tanh_generic(float *y, const float *x, int64_t n)
{
    const float k0 = 0.7978845608028654f; /* sqrt(2 / pi) */

    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + tanhf(k0 * (v + 0.044715f * v * v * v)));
    }
}

static void silu_generic(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] / (1.0f + expf(-x[i]));
}

static const sdc_cpu_kernels_t kernels_generic = {
    .name = "generic",
    .gemm_tile = gemm_tile_generic,
    .gemm_tile_rows = gemm_tile_rows_generic,
    .softmax_row = softmax_row_generic,
    .gelu_tanh = gelu_tanh_generic,
    .silu = silu_generic,
};

/* ---- AVX2 + FMA -------------------------------------------------------- */

#if SDC_HAVE_X86
#define AVX2 __attribute__((target("avx2,fma")))

/* exp with Cephes' range reduction and polynomial (max error ~2 ulp);
 * inputs below ln(FLT_MIN) give exactly 0, above ~88.38 give +inf. */
AVX2 static inline __m256 exp8(__m256 x)
{
    const __m256 lo = _mm256_set1_ps(-87.33654475f);
    const __m256 hi = _mm256_set1_ps(88.3762626647949f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
                                  23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* Fixed-order horizontal sum: (l0+l4) .. (l3+l7), then pairs. */
AVX2 static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One k step of the 6 x 16 tile: row i of A contributes a_i * b[0..16). */
#define TILE_STEP(a0, a1, a2, a3, a4, a5)                        \
    do {                                                         \
        __m256 b0_ = _mm256_loadu_ps(b), b1_ = _mm256_loadu_ps(b + 8), ai_; \
        ai_ = _mm256_broadcast_ss(a0);                           \
        c00 = _mm256_fmadd_ps(ai_, b0_, c00);                    \
        c01 = _mm256_fmadd_ps(ai_, b1_, c01);                    \
        ai_ = _mm256_broadcast_ss(a1);                           \
        c10 = _mm256_fmadd_ps(ai_, b0_, c10);                    \
        c11 = _mm256_fmadd_ps(ai_, b1_, c11);                    \
        ai_ = _mm256_broadcast_ss(a2);                           \
        c20 = _mm256_fmadd_ps(ai_, b0_, c20);                    \
        c21 = _mm256_fmadd_ps(ai_, b1_, c21);                    \
        ai_ = _mm256_broadcast_ss(a3);                           \
        c30 = _mm256_fmadd_ps(ai_, b0_, c30);                    \
        c31 = _mm256_fmadd_ps(ai_, b1_, c31);                    \
        ai_ = _mm256_broadcast_ss(a4);                           \
        c40 = _mm256_fmadd_ps(ai_, b0_, c40);                    \
        c41 = _mm256_fmadd_ps(ai_, b1_, c41);                    \
        ai_ = _mm256_broadcast_ss(a5);                           \
        c50 = _mm256_fmadd_ps(ai_, b0_, c50);                    \
        c51 = _mm256_fmadd_ps(ai_, b1_, c51);                    \
        b += SDC_GEMM_NR;                                        \
    } while (0)

#define TILE_DECLARE_ACC                                                                   \
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00; \
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00

/* C comes from far away (it is the big operand); start fetching it before
 * the k loop so that the stores at the end do not wait on it. (A macro: GCC
 * 12 drops the prefetches when this is an inline function.) */
#define TILE_PREFETCH_C(c, ldc, mr, nr)                                  \
    do {                                                                 \
        for (int i_ = 0; i_ < (mr); i_++) {                              \
            __builtin_prefetch((c) + i_ * (ldc), 1, 3);                  \
            __builtin_prefetch((c) + i_ * (ldc) + (nr)-1, 1, 3);         \
        }                                                                \
    } while (0)

/* Writes the top-left mr x nr of the tile: c = acc, bias + acc or c + acc. */
AVX2 static inline void tile_store(__m256 acc[SDC_GEMM_MR][2], float *c, int64_t ldc, int mr,
                                   int nr, const float *bias, sdc_gemm_mode_t mode)
{
    if (mr == SDC_GEMM_MR && nr == SDC_GEMM_NR) {
        __m256 bias0 = _mm256_setzero_ps(), bias1 = bias0;
        if (bias) {
            bias0 = _mm256_loadu_ps(bias);
            bias1 = _mm256_loadu_ps(bias + 8);
        }
        for (int i = 0; i < SDC_GEMM_MR; i++) {
            float *ci = c + i * ldc;
            __m256 v0 = acc[i][0], v1 = acc[i][1];
            if (mode == SDC_GEMM_ACCUM) {
                v0 = _mm256_add_ps(_mm256_loadu_ps(ci), v0);
                v1 = _mm256_add_ps(_mm256_loadu_ps(ci + 8), v1);
            } else if (bias) {
                v0 = _mm256_add_ps(bias0, v0);
                v1 = _mm256_add_ps(bias1, v1);
            }
            _mm256_storeu_ps(ci, v0);
            _mm256_storeu_ps(ci + 8, v1);
        }
        return;
    }
    float t[SDC_GEMM_MR][SDC_GEMM_NR];
    for (int i = 0; i < SDC_GEMM_MR; i++) {
        _mm256_storeu_ps(t[i], acc[i][0]);
        _mm256_storeu_ps(t[i] + 8, acc[i][1]);
    }
    for (int i = 0; i < mr; i++) {
        float *ci = c + i * ldc;
        for (int j = 0; j < nr; j++) {
            if (mode == SDC_GEMM_ACCUM)
                ci[j] = ci[j] + t[i][j];
            else
                ci[j] = bias ? bias[j] + t[i][j] : t[i][j];
        }
    }
}

AVX2 static void gemm_tile_avx2(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                                int mr, int nr, const float *bias, sdc_gemm_mode_t mode)
{
    TILE_DECLARE_ACC;

    TILE_PREFETCH_C(c, ldc, mr, nr);
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; k++) {
        TILE_STEP(a, a + 1, a + 2, a + 3, a + 4, a + 5);
        a += SDC_GEMM_MR;
    }
    __m256 acc[SDC_GEMM_MR][2] = {
        {c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    tile_store(acc, c, ldc, mr, nr, bias, mode);
}

/* The same tile with A read in place from rows lda apart. */
AVX2 static void gemm_tile_rows_avx2(int64_t kc, const float *a, int64_t lda, const float *b,
                                     float *c, int64_t ldc, int mr, int nr, const float *bias,
                                     sdc_gemm_mode_t mode)
{
    const float *a0 = a, *a1 = a + (mr > 1 ? lda : 0), *a2 = a + (mr > 2 ? 2 * lda : 0);
    const float *a3 = a + (mr > 3 ? 3 * lda : 0), *a4 = a + (mr > 4 ? 4 * lda : 0);
    const float *a5 = a + (mr > 5 ? 5 * lda : 0);
    TILE_DECLARE_ACC;

    TILE_PREFETCH_C(c, ldc, mr, nr);
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; k++)
        TILE_STEP(a0 + k, a1 + k, a2 + k, a3 + k, a4 + k, a5 + k);
    __m256 acc[SDC_GEMM_MR][2] = {
        {c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    tile_store(acc, c, ldc, mr, nr, bias, mode);
}

AVX2 static float softmax_row_avx2(float *p, const float *x, int64_t n, float scale)
{
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + j));
    float lanes[8], m;
    _mm256_storeu_ps(lanes, vmax);
    m = lanes[0];
    for (int l = 1; l < 8; l++)
        m = lanes[l] > m ? lanes[l] : m;
    for (; j < n; j++)
        m = x[j] > m ? x[j] : m;

    const __m256 vm = _mm256_set1_ps(m), vs = _mm256_set1_ps(scale);
    __m256 sum = _mm256_setzero_ps();
    for (j = 0; j + 8 <= n; j += 8) {
        __m256 e = exp8(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm), vs));
        _mm256_storeu_ps(p + j, e);
        sum = _mm256_add_ps(sum, e);
    }
    if (j < n) {
        float buf[8] = {0};
        memcpy(buf, x + j, (size_t)(n - j) * sizeof(float));
        __m256 e = exp8(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(buf), vm), vs));
        __m256i left = _mm256_set1_epi32((int)(n - j));
        __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        e = _mm256_and_ps(e, _mm256_castsi256_ps(_mm256_cmpgt_epi32(left, lane)));
        _mm256_storeu_ps(buf, e);
        memcpy(p + j, buf, (size_t)(n - j) * sizeof(float));
        sum = _mm256_add_ps(sum, e);
    }
    return hsum8(sum);
}

/* Runs f8 over n elements, 8 at a time; the tail goes through a padded
 * buffer so that every element sees the same instructions. */
#define AVX2_MAP(y, x, n, f8)                                          \
    do {                                                               \
        int64_t i_ = 0;                                                \
        for (; i_ + 8 <= (n); i_ += 8)                                 \
            _mm256_storeu_ps((y) + i_, f8(_mm256_loadu_ps((x) + i_))); \
        if (i_ < (n)) {                                                \
            float buf_[8] = {0};                                       \
            memcpy(buf_, (x) + i_, (size_t)((n)-i_) * sizeof(float));  \
            _mm256_storeu_ps(buf_, f8(_mm256_loadu_ps(buf_)));         \
            memcpy((y) + i_, buf_, (size_t)((n)-i_) * sizeof(float));  \
        }                                                              \
    } while (0)

/* gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)),
 * u = sqrt(2/pi) (x + 0.044715 x^3). */
AVX2 static inline __m256 gelu_tanh8(__m256 x)
{
    __m256 x2 = _mm256_mul_ps(x, x);
    __m256 inner = _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x2, _mm256_set1_ps(1.0f));
    __m256 m2u = _mm256_mul_ps(_mm256_mul_ps(x, inner), _mm256_set1_ps(-1.5957691216057308f));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(m2u)));
}

AVX2 static inline __m256 silu8(__m256 x)
{
    __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

AVX2 static void gelu_tanh_avx2(float *y, const float *x, int64_t n)
{
    AVX2_MAP(y, x, n, gelu_tanh8);
}

AVX2 static void silu_avx2(float *y, const float *x, int64_t n)
{
    AVX2_MAP(y, x, n, silu8);
}

static const sdc_cpu_kernels_t kernels_avx2 = {
    .name = "avx2",
    .gemm_tile = gemm_tile_avx2,
    .gemm_tile_rows = gemm_tile_rows_avx2,
    .softmax_row = softmax_row_avx2,
    .gelu_tanh = gelu_tanh_avx2,
    .silu = silu_avx2,
};

static int cpu_has_avx2_fma(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif /* SDC_HAVE_X86 */

const sdc_cpu_kernels_t *sdc_cpu_kernels_select(const char *force)
{
    if (force && strcmp(force, "generic") == 0)
        return &kernels_generic;
#if SDC_HAVE_X86
    if (cpu_has_avx2_fma())
        return &kernels_avx2;
#endif
    return &kernels_generic;
}
