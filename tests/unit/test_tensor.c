/* test_tensor.c: dtype helpers, shapes, descriptors, and bit-exact f16/bf16
 * conversion (checked against the compiler's own _Float16 where available). */
#include "common/tensor.h"

#include <float.h>
#include <stdint.h>

#include "test.h"

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_dtype(void)
{
    static const struct {
        sdc_dtype_t dt;
        const char *name;
        size_t size;
    } cases[] = {
        {SDC_DTYPE_F32, "F32", 4}, {SDC_DTYPE_F16, "F16", 2}, {SDC_DTYPE_BF16, "BF16", 2},
        {SDC_DTYPE_I64, "I64", 8}, {SDC_DTYPE_I32, "I32", 4}, {SDC_DTYPE_U8, "U8", 1},
        {SDC_DTYPE_BOOL, "BOOL", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sdc_dtype_t dt = SDC_DTYPE_COUNT;
        CHECK_EQ_INT(sdc_dtype_size(cases[i].dt), cases[i].size);
        CHECK(strcmp(sdc_dtype_name(cases[i].dt), cases[i].name) == 0);
        CHECK_EQ_INT(sdc_dtype_parse(cases[i].name, &dt), 0);
        CHECK_EQ_INT(dt, cases[i].dt);
    }
    sdc_dtype_t dt = SDC_DTYPE_F32;
    CHECK_EQ_INT(sdc_dtype_parse("F64", &dt), -1);
    CHECK_EQ_INT(sdc_dtype_parse("f32", &dt), -1);
    CHECK_EQ_INT(sdc_dtype_parse(NULL, &dt), -1);
    CHECK_EQ_INT(dt, SDC_DTYPE_F32);
    CHECK_EQ_INT(sdc_dtype_size(SDC_DTYPE_COUNT), 0);
    CHECK(strcmp(sdc_dtype_name(SDC_DTYPE_COUNT), "?") == 0);
}

static void test_shape(void)
{
    const int64_t s4[] = {2, 64, 32, 32};
    CHECK_EQ_INT(sdc_shape_numel(4, s4), 2 * 64 * 32 * 32);
    CHECK_EQ_INT(sdc_shape_numel(0, NULL), 1);
    const int64_t zero[] = {3, 0, 5};
    CHECK_EQ_INT(sdc_shape_numel(3, zero), 0);
    const int64_t neg[] = {3, -1};
    CHECK_EQ_INT(sdc_shape_numel(2, neg), -1);
    const int64_t big[] = {INT64_C(1) << 40, INT64_C(1) << 30};
    CHECK_EQ_INT(sdc_shape_numel(2, big), -1);
    /* 2^62 fits; doubling it reaches 2^63, one past INT64_MAX. */
    const int64_t edge[] = {INT64_C(1) << 31, INT64_C(1) << 31, 2};
    CHECK_EQ_INT(sdc_shape_numel(2, edge), INT64_C(1) << 62);
    CHECK_EQ_INT(sdc_shape_numel(3, edge), -1);
    /* Zero anywhere makes the product zero even after a huge dim. */
    const int64_t zbig[] = {INT64_MAX, 0};
    CHECK_EQ_INT(sdc_shape_numel(2, zbig), 0);
    CHECK_EQ_INT(sdc_shape_numel(SDC_MAX_DIMS + 1, s4), -1);

    char buf[64];
    CHECK(strcmp(sdc_shape_str(4, s4, buf, sizeof(buf)), "[2, 64, 32, 32]") == 0);
    CHECK(strcmp(sdc_shape_str(0, NULL, buf, sizeof(buf)), "[]") == 0);
    CHECK(strcmp(sdc_shape_str(2, neg, buf, sizeof(buf)), "[3, -1]") == 0);
    char small[6];
    sdc_shape_str(4, s4, small, sizeof(small));
    CHECK(strcmp(small, "[2, 6") == 0);
}

static void test_tensor_desc(void)
{
    const int64_t shape[] = {2, 3, 4};
    float data[24];
    sdc_tensor_t t;
    sdc_tensor_init(&t, SDC_DTYPE_F32, 3, shape, data);
    CHECK_EQ_INT(t.stride[0], 12);
    CHECK_EQ_INT(t.stride[1], 4);
    CHECK_EQ_INT(t.stride[2], 1);
    CHECK(t.data == data && !t.owns_data);
    CHECK_EQ_INT(sdc_tensor_numel(&t), 24);
    CHECK_EQ_INT(sdc_tensor_nbytes(&t), 96);
    CHECK(sdc_tensor_is_contiguous(&t));
    /* A transposed view is not contiguous. */
    sdc_tensor_t tr = t;
    tr.shape[1] = 4;
    tr.shape[2] = 3;
    tr.stride[1] = 1;
    tr.stride[2] = 4;
    CHECK(!sdc_tensor_is_contiguous(&tr));
    /* Size-1 dims may carry any stride. */
    const int64_t s1[] = {1, 5, 1};
    sdc_tensor_t u;
    sdc_tensor_init(&u, SDC_DTYPE_F16, 3, s1, NULL);
    u.stride[0] = 999;
    u.stride[2] = 7;
    CHECK(sdc_tensor_is_contiguous(&u));
    CHECK_EQ_INT(sdc_tensor_nbytes(&u), 10);
    sdc_tensor_free(&t); /* does not own: must not free the stack array */
    CHECK(t.data == NULL);
}

static void test_tensor_alloc(void)
{
    sdc_error_t err = {0};
    const int64_t shape[] = {3, 5};
    sdc_tensor_t t;
    CHECK_EQ_INT(sdc_tensor_alloc(&t, SDC_DTYPE_BF16, 2, shape, &err), SDC_OK);
    CHECK(t.owns_data);
    CHECK_EQ_INT((uintptr_t)t.data % 64, 0);
    CHECK_EQ_INT(t.stride[0], 5);
    const uint8_t *p = t.data;
    int zero = 1;
    for (int i = 0; i < 30; i++)
        zero &= p[i] == 0;
    CHECK(zero);
    sdc_tensor_free(&t);
    CHECK(t.data == NULL && !t.owns_data);

    const int64_t empty[] = {0, 4};
    CHECK_EQ_INT(sdc_tensor_alloc(&t, SDC_DTYPE_F32, 2, empty, &err), SDC_OK);
    CHECK(t.data != NULL);
    sdc_tensor_free(&t);

    const int64_t huge[] = {INT64_C(1) << 62, 4};
    CHECK_EQ_INT(sdc_tensor_alloc(&t, SDC_DTYPE_F32, 2, huge, &err), SDC_ERR_RANGE);
    CHECK(strstr(err.msg, "[4611686018427387904, 4]") != NULL);
    const int64_t wraps[] = {INT64_C(1) << 61};
    CHECK_EQ_INT(sdc_tensor_alloc(&t, SDC_DTYPE_I64, 1, wraps, &err), SDC_ERR_RANGE);
    const int64_t neg[] = {-2};
    CHECK_EQ_INT(sdc_tensor_alloc(&t, SDC_DTYPE_F32, 1, neg, &err), SDC_ERR_RANGE);
    CHECK_EQ_INT(sdc_tensor_alloc(&t, SDC_DTYPE_COUNT, 1, shape, &err), SDC_ERR_INVALID_ARG);
    CHECK(t.data == NULL);
}

static void test_f16_values(void)
{
    static const struct {
        uint32_t f;
        uint16_t h;
    } cases[] = {
        {0x3f800000u, 0x3c00}, /* 1 */
        {0xc0000000u, 0xc000}, /* -2 */
        {0x00000000u, 0x0000}, {0x80000000u, 0x8000},
        {0x477fe000u, 0x7bff}, /* 65504, the largest half */
        {0x477fefffu, 0x7bff}, /* just below 65520 rounds down */
        {0x477ff000u, 0x7c00}, /* 65520: the tie goes up, to inf */
        {0x7f800000u, 0x7c00}, {0xff800000u, 0xfc00},
        {0x7f7fffffu, 0x7c00}, /* FLT_MAX */
        {0x38800000u, 0x0400}, /* 2^-14, smallest normal */
        {0x33800000u, 0x0001}, /* 2^-24, smallest subnormal */
        {0x33000000u, 0x0000}, /* 2^-25: tie between 0 and 2^-24 -> even (0) */
        {0x33000001u, 0x0001}, /* just above the tie */
        {0x33c00000u, 0x0002}, /* 3 x 2^-25: tie between 1 and 2 -> 2 */
        {0x34200000u, 0x0002}, /* 5 x 2^-25: tie between 2 and 3 -> 2 */
        {0x387fc000u, 0x03ff}, /* largest subnormal */
        {0x387fe000u, 0x0400}, /* tie between largest subnormal and 2^-14 -> 2^-14 */
        {0x3f801000u, 0x3c00}, /* 1 + 2^-11: tie -> even (1) */
        {0x3f803000u, 0x3c02}, /* 1 + 3 x 2^-11: tie -> even (0x3c02) */
        {0x3f801001u, 0x3c01}, /* just above a tie */
        {0x3f7ff000u, 0x3c00}, /* 1 - 2^-12: tie -> rounds up across the binade */
        {0x00000001u, 0x0000}, /* float32 subnormal */
        {0xb3800000u, 0x8001},
        {0x40490fdbu, 0x4248}, /* pi */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint16_t h = sdc_f32_to_f16(from_bits(cases[i].f));
        CHECK_MSG(h == cases[i].h, "f32 0x%08x -> 0x%04x, want 0x%04x", cases[i].f, h,
                  cases[i].h);
    }
    /* NaN stays NaN (quiet), sign kept. */
    uint16_t hn = sdc_f32_to_f16(from_bits(0xffc00001u));
    CHECK((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0 && (hn & 0x8000));
    hn = sdc_f32_to_f16(from_bits(0x7f800001u)); /* signalling, payload in low bits only */
    CHECK((hn & 0x7c00) == 0x7c00 && (hn & 0x3ff) != 0);

    CHECK(sdc_f16_to_f32(0x3c00) == 1.0f);
    CHECK(sdc_f16_to_f32(0x0001) == 0x1p-24f);
    CHECK(sdc_f16_to_f32(0x8001) == -0x1p-24f);
    CHECK(sdc_f16_to_f32(0x03ff) == 1023 * 0x1p-24f);
    CHECK(sdc_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(bits(sdc_f16_to_f32(0x8000)) == 0x80000000u);
    CHECK(isinf(sdc_f16_to_f32(0x7c00)) && sdc_f16_to_f32(0xfc00) < 0);
    CHECK(isnan(sdc_f16_to_f32(0x7e00)));
    CHECK(bits(sdc_f16_to_f32(0x7e01)) == 0x7fc02000u); /* payload carried */
}

/* Every half converts to float and back unchanged. */
static void test_f16_roundtrip_all(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sdc_f16_to_f32((uint16_t)h);
        uint16_t back = sdc_f32_to_f16(f);
        int is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (is_nan ? !(isnan(f) && (back & 0x8000) == (h & 0x8000) && (back & 0x7c00) == 0x7c00)
                   : back != h)
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

#if defined(__FLT16_MAX__)
/* The compiler's _Float16 conversion is IEEE round-to-nearest-even: an
 * independent oracle over a spread of float32 bit patterns, dense around
 * the half range's edges. */
static void test_f16_vs_compiler(void)
{
    long bad = 0, n = 0;
    for (uint64_t u = 0; u <= 0xffffffffu; u += 4093) {
        float f = from_bits((uint32_t)u);
        if (isnan(f))
            continue;
        _Float16 ref = (_Float16)f;
        uint16_t rb;
        memcpy(&rb, &ref, 2);
        bad += sdc_f32_to_f16(f) != rb;
        n++;
    }
    /* Every pattern in the subnormal and overflow boundary regions. */
    static const uint32_t ranges[][2] = {
        {0x32ff0000u, 0x33010000u}, {0x387f0000u, 0x38810000u}, {0x477f0000u, 0x47810000u}};
    for (int r = 0; r < 3; r++) {
        for (uint32_t u = ranges[r][0]; u < ranges[r][1]; u++) {
            float f = from_bits(u);
            _Float16 ref = (_Float16)f;
            uint16_t rb;
            memcpy(&rb, &ref, 2);
            bad += sdc_f32_to_f16(f) != rb;
            bad += sdc_f32_to_f16(-f) != (uint16_t)(rb | 0x8000);
            n += 2;
        }
    }
    CHECK_MSG(bad == 0, "%ld of %ld conversions differ from _Float16", bad, n);
}
#endif

static void test_bf16(void)
{
    CHECK_EQ_INT(sdc_f32_to_bf16(1.0f), 0x3f80);
    CHECK_EQ_INT(sdc_f32_to_bf16(from_bits(0x3f808000u)), 0x3f80); /* tie -> even */
    CHECK_EQ_INT(sdc_f32_to_bf16(from_bits(0x3f818000u)), 0x3f82); /* tie -> even */
    CHECK_EQ_INT(sdc_f32_to_bf16(from_bits(0x3f808001u)), 0x3f81);
    CHECK_EQ_INT(sdc_f32_to_bf16(from_bits(0x3f807fffu)), 0x3f80);
    CHECK_EQ_INT(sdc_f32_to_bf16(FLT_MAX), 0x7f80); /* rounds to inf */
    CHECK_EQ_INT(sdc_f32_to_bf16(-INFINITY), 0xff80);
    CHECK_EQ_INT(sdc_f32_to_bf16(from_bits(0x00008000u)), 0x0000); /* subnormal tie */
    CHECK_EQ_INT(sdc_f32_to_bf16(from_bits(0x00018000u)), 0x0002);
    /* A NaN whose payload sits only in the low half must stay NaN. */
    uint16_t nb = sdc_f32_to_bf16(from_bits(0x7f800001u));
    CHECK((nb & 0x7f80) == 0x7f80 && (nb & 0x7f) != 0);
    CHECK(bits(sdc_bf16_to_f32(0x3f80)) == 0x3f800000u);
    CHECK(bits(sdc_bf16_to_f32(0xc049)) == 0xc0490000u);
    int bad = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        float f = sdc_bf16_to_f32((uint16_t)b);
        if (!isnan(f))
            bad += sdc_f32_to_bf16(f) != b;
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_convert(void)
{
    float out[8];
    const float f32[3] = {1.5f, -2.0f, 1e-3f};
    CHECK_EQ_INT(sdc_convert_to_f32(out, f32, SDC_DTYPE_F32, 3), SDC_OK);
    CHECK(memcmp(out, f32, sizeof(f32)) == 0);

    /* F16 from an odd address, as mapped data can be. */
    uint8_t raw[1 + 2 * 4];
    const uint16_t h[4] = {0x3c00, 0xc000, 0x0001, 0x7c00};
    memcpy(raw + 1, h, sizeof(h));
    CHECK_EQ_INT(sdc_convert_to_f32(out, raw + 1, SDC_DTYPE_F16, 4), SDC_OK);
    CHECK(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0x1p-24f && isinf(out[3]));

    const uint16_t b[2] = {0x3f80, 0xbf00};
    memcpy(raw + 1, b, sizeof(b));
    CHECK_EQ_INT(sdc_convert_to_f32(out, raw + 1, SDC_DTYPE_BF16, 2), SDC_OK);
    CHECK(out[0] == 1.0f && out[1] == -0.5f);

    CHECK_EQ_INT(sdc_convert_to_f32(out, raw, SDC_DTYPE_I64, 1), SDC_ERR_UNSUPPORTED);
    CHECK_EQ_INT(sdc_convert_to_f32(out, raw, SDC_DTYPE_U8, 0), SDC_OK);

    /* Large enough for the threaded path; same result element by element. */
    const int64_t n = (1 << 18) + 3;
    uint16_t *src = malloc((size_t)n * 2);
    float *dst = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++)
        src[i] = (uint16_t)(i * 7919);
    CHECK_EQ_INT(sdc_convert_to_f32(dst, src, SDC_DTYPE_F16, n), SDC_OK);
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += memcmp(&dst[i], &(float){sdc_f16_to_f32(src[i])}, 4) != 0;
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(sdc_convert_to_f32(dst, src, SDC_DTYPE_BF16, n), SDC_OK);
    bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += bits(dst[i]) != (uint32_t)src[i] << 16;
    CHECK_EQ_INT(bad, 0);
    free(src);
    free(dst);
}

int main(void)
{
    RUN(test_dtype);
    RUN(test_shape);
    RUN(test_tensor_desc);
    RUN(test_tensor_alloc);
    RUN(test_f16_values);
    RUN(test_f16_roundtrip_all);
#if defined(__FLT16_MAX__)
    RUN(test_f16_vs_compiler);
#endif
    RUN(test_bf16);
    RUN(test_convert);
    TEST_EXIT();
}
