/*
 * tensor.c: host tensor descriptors and dtype helpers. The f16/bf16
 * conversions are bit-exact IEEE 754 (round to nearest even, subnormals,
 * inf and NaN preserved), because weights converted here must match what
 * torch computes from the same file.
 */
#include "tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Indexed by sdc_dtype_t; names are the safetensors spellings. */
static const struct {
    const char *name;
    size_t size;
} dtype_info[] = {
    [SDC_DTYPE_F32] = {"F32", 4}, [SDC_DTYPE_F16] = {"F16", 2}, [SDC_DTYPE_BF16] = {"BF16", 2},
    [SDC_DTYPE_I64] = {"I64", 8}, [SDC_DTYPE_I32] = {"I32", 4}, [SDC_DTYPE_U8] = {"U8", 1},
    [SDC_DTYPE_BOOL] = {"BOOL", 1},
};
_Static_assert(sizeof(dtype_info) / sizeof(dtype_info[0]) == SDC_DTYPE_COUNT,
               "dtype_info must describe every sdc_dtype_t");

/* Below this many elements a conversion is not worth waking threads for. */
#define CONVERT_PARALLEL_MIN (1 << 18)

size_t sdc_dtype_size(sdc_dtype_t dt)
{
    return (unsigned)dt < SDC_DTYPE_COUNT ? dtype_info[dt].size : 0;
}

const char *sdc_dtype_name(sdc_dtype_t dt)
{
    return (unsigned)dt < SDC_DTYPE_COUNT ? dtype_info[dt].name : "?";
}

int sdc_dtype_parse(const char *name, sdc_dtype_t *dt)
{
    if (!name)
        return -1;
    for (int i = 0; i < SDC_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_info[i].name) == 0) {
            *dt = (sdc_dtype_t)i;
            return 0;
        }
    }
    return -1;
}

/* -1 for a negative dim or a product that overflows int64, so callers
 * validating file input need only one check. */
int64_t sdc_shape_numel(int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > SDC_MAX_DIMS)
        return -1;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return -1;
        if (shape[i] != 0 && n > INT64_MAX / shape[i])
            return -1;
        n *= shape[i];
    }
    return n;
}

char *sdc_shape_str(int ndim, const int64_t *shape, char *buf, size_t cap)
{
    if (cap == 0)
        return buf;
    /* snprintf reports the untruncated length, so pos may pass cap and
     * stop the loop; the buffer stays terminated either way. */
    int w = snprintf(buf, cap, "[");
    size_t pos = w > 0 ? (size_t)w : 0;
    for (int i = 0; i < ndim && pos < cap; i++) {
        w = snprintf(buf + pos, cap - pos, i ? ", %lld" : "%lld", (long long)shape[i]);
        if (w < 0)
            return buf;
        pos += (size_t)w;
    }
    if (pos < cap)
        snprintf(buf + pos, cap - pos, "]");
    return buf;
}

void sdc_tensor_init(sdc_tensor_t *t, sdc_dtype_t dt, int ndim, const int64_t *shape, void *data)
{
    memset(t, 0, sizeof(*t));
    t->dtype = dt;
    t->ndim = ndim;
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        t->shape[i] = shape[i];
        t->stride[i] = stride;
        stride *= shape[i];
    }
    t->data = data;
}

sdc_status_t sdc_tensor_alloc(sdc_tensor_t *t, sdc_dtype_t dt, int ndim, const int64_t *shape,
                              sdc_error_t *err)
{
    char sbuf[128];
    memset(t, 0, sizeof(*t));
    if ((unsigned)dt >= SDC_DTYPE_COUNT || ndim < 0 || ndim > SDC_MAX_DIMS)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "tensor alloc: bad dtype %d or ndim %d",
                             (int)dt, ndim);
    int64_t numel = sdc_shape_numel(ndim, shape);
    size_t esize = sdc_dtype_size(dt);
    if (numel < 0 || (uint64_t)numel > (SIZE_MAX - 63) / esize)
        return sdc_error_set(err, SDC_ERR_RANGE, "tensor alloc: shape %s is invalid or too large",
                             sdc_shape_str(ndim, shape, sbuf, sizeof(sbuf)));
    /* Rounded up to whole cache lines so vector loops may read a full
     * line past the last element; never zero bytes. */
    size_t bytes = ((size_t)numel * esize + 63) & ~(size_t)63;
    if (bytes == 0)
        bytes = 64;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0)
        return sdc_error_set(err, SDC_ERR_NOMEM, "tensor alloc: %zu bytes for shape %s", bytes,
                             sdc_shape_str(ndim, shape, sbuf, sizeof(sbuf)));
    memset(p, 0, bytes);
    sdc_tensor_init(t, dt, ndim, shape, p);
    t->owns_data = 1;
    return SDC_OK;
}

void sdc_tensor_free(sdc_tensor_t *t)
{
    if (!t)
        return;
    if (t->owns_data)
        free(t->data);
    t->data = NULL;
    t->owns_data = 0;
}

int64_t sdc_tensor_numel(const sdc_tensor_t *t)
{
    return sdc_shape_numel(t->ndim, t->shape);
}

size_t sdc_tensor_nbytes(const sdc_tensor_t *t)
{
    int64_t n = sdc_tensor_numel(t);
    return n < 0 ? 0 : (size_t)n * sdc_dtype_size(t->dtype);
}

/* Dims of size 1 may carry any stride, as in torch: they are never stepped. */
int sdc_tensor_is_contiguous(const sdc_tensor_t *t)
{
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] == 0)
            return 1;
        if (t->shape[i] != 1 && t->stride[i] != expect)
            return 0;
        expect *= t->shape[i];
    }
    return 1;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

float sdc_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f)
        return bits_f32(sign | 0x7f800000u | (mant << 13));
    if (exp != 0)
        return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
    /* Subnormal (or zero): mant x 2^-24 is exact in float32. */
    float v = (float)mant * 0x1p-24f;
    return sign ? -v : v;
}

uint16_t sdc_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;

    if (ax > 0x7f800000u) /* NaN: keep it quiet and keep the top payload bits */
        return sign | 0x7e00 | (uint16_t)((ax >> 13) & 0x3ff);
    if (ax >= 0x477ff000u) /* >= 65520 rounds past the largest half (65504) */
        return sign | 0x7c00;
    if (ax >= 0x38800000u) { /* normal half: |f| >= 2^-14 */
        uint32_t exp = (ax >> 23) - 112;
        uint32_t mant = ax & 0x7fffffu;
        uint32_t h = (exp << 10) | (mant >> 13);
        uint32_t rem = mant & 0x1fffu;
        /* A carry out of the mantissa correctly bumps the exponent. */
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
            h++;
        return sign | (uint16_t)h;
    }
    if (ax <= 0x33000000u) /* <= 2^-25: the tie with the smallest subnormal goes to 0 */
        return sign;
    /* Subnormal half: the result counts units of 2^-24. */
    uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
    int e = (int)(ax >> 23) - 127; /* in [-25, -15] */
    int shift = -e - 1;            /* in [14, 24] */
    uint32_t h = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1)))
        h++;
    return sign | (uint16_t)h;
}

float sdc_bf16_to_f32(uint16_t b)
{
    return bits_f32((uint32_t)b << 16);
}

uint16_t sdc_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x0040);
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

sdc_status_t sdc_convert_to_f32(float *dst, const void *src, sdc_dtype_t src_dt, int64_t n)
{
    const uint8_t *s = src;
    if (n <= 0)
        return SDC_OK;
    switch (src_dt) {
    case SDC_DTYPE_F32:
        memmove(dst, src, (size_t)n * sizeof(float));
        return SDC_OK;
    case SDC_DTYPE_F16:
        /* Sources come from file mappings at any byte offset: read with
         * memcpy, never through a uint16_t pointer. */
#pragma omp parallel for schedule(static) if (n >= CONVERT_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = sdc_f16_to_f32(h);
        }
        return SDC_OK;
    case SDC_DTYPE_BF16:
#pragma omp parallel for schedule(static) if (n >= CONVERT_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            uint16_t b;
            memcpy(&b, s + 2 * i, 2);
            dst[i] = sdc_bf16_to_f32(b);
        }
        return SDC_OK;
    default:
        return SDC_ERR_UNSUPPORTED;
    }
}
