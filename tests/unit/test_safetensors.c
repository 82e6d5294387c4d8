/*
 * test_safetensors.c: the writer's exact bytes, write/read round trips for
 * every dtype, shard sets (index file and directory rules), and one test per
 * class of malformed input, each checking the status and that the message
 * names the file and the problem.
 */
#include "common/safetensors.h"

#include <ftw.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

static char tmp_root[64];

static void tpath(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", tmp_root, name);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Writes an 8-byte length field, then the header bytes, then data. */
static void write_raw(const char *path, uint64_t hlen_field, const char *header, size_t hlen,
                      const void *data, size_t dlen)
{
    FILE *fp = fopen(path, "wb");
    uint8_t b[8];
    le64(b, hlen_field);
    fwrite(b, 1, 8, fp);
    fwrite(header, 1, hlen, fp);
    if (dlen)
        fwrite(data, 1, dlen, fp);
    fclose(fp);
}

/* A file with this JSON header (its true length) and dlen bytes of data. */
static void write_with_header(const char *path, const char *json, size_t dlen)
{
    uint8_t data[256] = {0};
    write_raw(path, strlen(json), json, strlen(json), data, dlen);
}

/* Opens path and checks it fails with code and a message containing the
 * path and want. */
static void expect_open_error(const char *path, sdc_status_t code, const char *want)
{
    sdc_st_file_t f;
    sdc_error_t err = {0};
    sdc_status_t st = sdc_st_open(&f, path, &err);
    CHECK_MSG(st == code, "%s: status %s, want %s (%s)", path, sdc_status_str(st),
              sdc_status_str(code), err.msg);
    CHECK_MSG(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    CHECK_MSG(strstr(err.msg, want) != NULL, "message lacks \"%s\": %s", want, err.msg);
    CHECK(f.map == NULL && f.entries == NULL && f.path == NULL);
    if (st == SDC_OK)
        sdc_st_close(&f);
}

static void test_write_exact_bytes(void)
{
    char path[128];
    tpath(path, sizeof(path), "exact.safetensors");
    const float v[2] = {1.0f, -2.0f};
    const int64_t shape[1] = {2};
    sdc_tensor_t t;
    sdc_tensor_init(&t, SDC_DTYPE_F32, 1, shape, (void *)v);
    const char *names[1] = {"a"};
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_st_write(path, 1, names, &t, &err), SDC_OK);

    /* What the reference Python writer produces for {"a": [1, -2] f32}:
     * compact JSON padded with spaces to a multiple of 8. */
    const char json[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    size_t jl = strlen(json), padded = (jl + 7) / 8 * 8;
    uint8_t want[256];
    le64(want, padded);
    memcpy(want + 8, json, jl);
    memset(want + 8 + jl, ' ', padded - jl);
    memcpy(want + 8 + padded, v, 8);
    size_t want_len = 8 + padded + 8;

    uint8_t got[256];
    FILE *fp = fopen(path, "rb");
    size_t n = fp ? fread(got, 1, sizeof(got), fp) : 0;
    if (fp)
        fclose(fp);
    CHECK_EQ_INT(n, want_len);
    CHECK(n == want_len && memcmp(got, want, want_len) == 0);
}

static void test_roundtrip(void)
{
    char path[128];
    tpath(path, sizeof(path), "rt.safetensors");
    const float f32[6] = {0.5f, -1.25f, 3.0f, 1e-8f, -0.0f, 65504.0f};
    uint16_t f16[5], bf16[4];
    const float f16_src[5] = {1.0f, -2.5f, 0.000061035156f, 65504.0f, 0x1p-24f};
    const float bf16_src[4] = {1.0f, -3.140625f, 1e30f, -1e-30f};
    for (int i = 0; i < 5; i++)
        f16[i] = sdc_f32_to_f16(f16_src[i]);
    for (int i = 0; i < 4; i++)
        bf16[i] = sdc_f32_to_bf16(bf16_src[i]);
    const int64_t ids[3] = {7, -1, INT64_C(1) << 40};
    const float scalar = 42.0f;
    uint8_t dummy = 0;

    const int64_t s_f32[2] = {2, 3}, s_f16[1] = {5}, s_bf16[2] = {2, 2}, s_ids[1] = {3},
                  s_empty[2] = {0, 4};
    sdc_tensor_t t[6];
    sdc_tensor_init(&t[0], SDC_DTYPE_F32, 2, s_f32, (void *)f32);
    sdc_tensor_init(&t[1], SDC_DTYPE_F16, 1, s_f16, f16);
    sdc_tensor_init(&t[2], SDC_DTYPE_BF16, 2, s_bf16, bf16);
    sdc_tensor_init(&t[3], SDC_DTYPE_I64, 1, s_ids, (void *)ids);
    sdc_tensor_init(&t[4], SDC_DTYPE_U8, 2, s_empty, &dummy);
    sdc_tensor_init(&t[5], SDC_DTYPE_F32, 0, NULL, (void *)&scalar);
    const char *names[6] = {"w.f32", "w.f16", "w.bf16", "ids", "empty", "scalar"};
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_st_write(path, 6, names, t, &err), SDC_OK);

    sdc_st_file_t f;
    if (sdc_st_open(&f, path, &err) != SDC_OK) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    CHECK_EQ_INT(f.n_entries, 6);
    CHECK_EQ_INT(f.data_start % 8, 0);
    CHECK_EQ_INT(f.fd, -1);
    /* Sorted by name. */
    static const char *sorted[6] = {"empty", "ids", "scalar", "w.bf16", "w.f16", "w.f32"};
    for (int i = 0; i < 6; i++)
        CHECK(strcmp(f.entries[i].name, sorted[i]) == 0);

    /* Wider dtypes are written first, so every tensor is aligned. */
    const sdc_st_entry_t *e = sdc_st_find(&f, "ids");
    CHECK(e && e->dtype == SDC_DTYPE_I64 && e->begin == 0 && e->end == 24);
    e = sdc_st_find(&f, "w.f32");
    CHECK(e && e->dtype == SDC_DTYPE_F32 && e->ndim == 2 && e->shape[0] == 2 &&
          e->shape[1] == 3 && e->begin == 24 && e->end == 48);
    sdc_tensor_t v;
    sdc_st_view(&f, e, &v);
    CHECK(memcmp(v.data, f32, sizeof(f32)) == 0);
    CHECK_EQ_INT((uintptr_t)v.data % 4, 0);
    CHECK(v.stride[0] == 3 && v.stride[1] == 1);

    e = sdc_st_find(&f, "scalar");
    CHECK(e && e->ndim == 0 && e->end - e->begin == 4);
    sdc_st_view(&f, e, &v);
    CHECK(memcmp(v.data, &scalar, 4) == 0);

    e = sdc_st_find(&f, "w.f16");
    CHECK(e && e->dtype == SDC_DTYPE_F16 && e->end - e->begin == 10);
    float back[5];
    sdc_st_view(&f, e, &v);
    CHECK_EQ_INT(sdc_convert_to_f32(back, v.data, SDC_DTYPE_F16, 5), SDC_OK);
    for (int i = 0; i < 5; i++)
        CHECK(back[i] == f16_src[i]);

    e = sdc_st_find(&f, "w.bf16");
    CHECK(e && e->dtype == SDC_DTYPE_BF16 && e->shape[1] == 2);
    sdc_st_view(&f, e, &v);
    CHECK(memcmp(v.data, bf16, sizeof(bf16)) == 0);
    CHECK_EQ_INT(sdc_convert_to_f32(back, v.data, SDC_DTYPE_BF16, 4), SDC_OK);
    CHECK(back[0] == 1.0f && back[1] == -3.140625f);

    e = sdc_st_find(&f, "ids");
    sdc_st_view(&f, e, &v);
    CHECK(memcmp(v.data, ids, sizeof(ids)) == 0);

    e = sdc_st_find(&f, "empty");
    CHECK(e && e->dtype == SDC_DTYPE_U8 && e->begin == e->end && e->shape[0] == 0);
    CHECK(sdc_st_find(&f, "missing") == NULL);
    CHECK(sdc_st_find(&f, "") == NULL);
    sdc_st_close(&f);
    CHECK(f.map == NULL && f.entries == NULL);
    sdc_st_close(&f); /* closing twice is harmless */
}

static void test_metadata_and_empty(void)
{
    char path[128];
    tpath(path, sizeof(path), "meta.safetensors");
    write_with_header(path,
                      "{\"__metadata__\":{\"format\":\"pt\",\"torch\":\"2.5\"},"
                      "\"x\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[0,2]}}   ",
                      2);
    sdc_st_file_t f;
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_st_open(&f, path, &err), SDC_OK);
    CHECK_EQ_INT(f.n_entries, 1);
    CHECK(sdc_st_find(&f, "__metadata__") == NULL);
    CHECK(sdc_st_find(&f, "x") != NULL);
    sdc_st_close(&f);

    write_with_header(path, "{}", 0);
    CHECK_EQ_INT(sdc_st_open(&f, path, &err), SDC_OK);
    CHECK_EQ_INT(f.n_entries, 0);
    CHECK(sdc_st_find(&f, "x") == NULL);
    sdc_st_close(&f);

    /* Gaps between tensors are allowed; the bytes in between are ignored. */
    write_with_header(path,
                      "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[6,8]}}",
                      8);
    CHECK_EQ_INT(sdc_st_open(&f, path, &err), SDC_OK);
    sdc_st_close(&f);
}

static void test_bad_file_level(void)
{
    char path[128];
    tpath(path, sizeof(path), "bad.safetensors");

    /* Truncated: too short for the length field. */
    FILE *fp = fopen(path, "wb");
    fwrite("\x10\0\0\0\0", 1, 5, fp);
    fclose(fp);
    expect_open_error(path, SDC_ERR_FORMAT, "5 bytes, too short");

    /* Header length larger than the file. */
    const char *h = "{}";
    write_raw(path, 1000, h, 2, NULL, 0);
    expect_open_error(path, SDC_ERR_FORMAT, "header length 1000 is larger than the 2 bytes");

    /* Absurd header length, larger than any real header. */
    write_raw(path, UINT64_C(1) << 62, h, 2, NULL, 0);
    expect_open_error(path, SDC_ERR_FORMAT, "header length 4611686018427387904 exceeds");
    write_raw(path, SDC_ST_MAX_HEADER + 1ull, h, 2, NULL, 0);
    expect_open_error(path, SDC_ERR_FORMAT, "exceeds the 104857600-byte maximum");

    /* A valid file cut short inside its data. */
    const float v[4] = {1, 2, 3, 4};
    const int64_t shape[1] = {4};
    sdc_tensor_t t;
    sdc_tensor_init(&t, SDC_DTYPE_F32, 1, shape, (void *)v);
    const char *names[1] = {"weight"};
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_st_write(path, 1, names, &t, &err), SDC_OK);
    struct stat sb;
    stat(path, &sb);
    CHECK_EQ_INT(truncate(path, sb.st_size - 3), 0);
    expect_open_error(path, SDC_ERR_FORMAT,
                      "tensor 'weight': data_offsets [0, 16] run past the end of the 13-byte");
    /* ...and cut inside its header. */
    CHECK_EQ_INT(truncate(path, 20), 0);
    expect_open_error(path, SDC_ERR_FORMAT, "is larger than the 12 bytes after it");

    /* Not a regular file / not there. */
    expect_open_error(tmp_root, SDC_ERR_IO, "not a regular file");
    char missing[128];
    tpath(missing, sizeof(missing), "nope.safetensors");
    expect_open_error(missing, SDC_ERR_NOT_FOUND, "No such file");
}

static void test_bad_header_json(void)
{
    char path[128];
    tpath(path, sizeof(path), "badjson.safetensors");
    write_with_header(path, "{\"a\": {\"dtype\": \"F32\",", 0);
    expect_open_error(path, SDC_ERR_FORMAT, "header: invalid JSON at line 1");
    write_with_header(path, "[1, 2, 3]", 0);
    expect_open_error(path, SDC_ERR_FORMAT, "header: top-level JSON value is not an object");
    write_with_header(path, "{} {}", 0);
    expect_open_error(path, SDC_ERR_FORMAT, "unexpected data after the JSON value");
    write_with_header(path, "", 0);
    expect_open_error(path, SDC_ERR_FORMAT, "invalid JSON");
    write_with_header(path, "{\"a\": 3}", 0);
    expect_open_error(path, SDC_ERR_FORMAT, "tensor 'a': entry is not an object");
    write_with_header(path, "{\"__metadata__\": {\"k\": 1}}", 0);
    expect_open_error(path, SDC_ERR_FORMAT, "__metadata__ value 'k' is not a string");
    write_with_header(path, "{\"__metadata__\": [\"k\"]}", 0);
    expect_open_error(path, SDC_ERR_FORMAT, "__metadata__ is not an object");
}

static void test_bad_entries(void)
{
    char path[128];
    tpath(path, sizeof(path), "badentry.safetensors");
    static const struct {
        const char *json;
        size_t dlen;
        sdc_status_t code;
        const char *want;
    } cases[] = {
        {"{\"x\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, SDC_ERR_FORMAT,
         "tensor 'x': unknown dtype 'F33'"},
        {"{\"x\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
         SDC_ERR_UNSUPPORTED, "tensor 'x': dtype F64 is not supported"},
        {"{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, SDC_ERR_FORMAT,
         "tensor 'x': dtype missing"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,4]}}", 4,
         SDC_ERR_FORMAT, "tensor 'x': shape[1] = -3 is negative"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,4]}}", 4, SDC_ERR_FORMAT,
         "tensor 'x': shape[0] is not a non-negative integer"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":\"4\",\"data_offsets\":[0,4]}}", 4, SDC_ERR_FORMAT,
         "tensor 'x': shape missing or not an array"},
        {"{\"x\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
         SDC_ERR_UNSUPPORTED, "tensor 'x': 9 dims, at most 8"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}",
         4, SDC_ERR_FORMAT, "tensor 'x': shape [4294967296, 4294967296] overflows"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, SDC_ERR_FORMAT,
         "tensor 'x': data_offsets [0, 8] hold 8 bytes, but F32 [3] needs 12"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[10,8]}}", 16, SDC_ERR_FORMAT,
         "tensor 'x': data_offsets [10, 8] out of order"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 8, SDC_ERR_FORMAT,
         "tensor 'x': data_offsets [4, 12] run past the end of the 8-byte data section"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, SDC_ERR_FORMAT,
         "tensor 'x': data_offsets must be [begin, end]"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, SDC_ERR_FORMAT,
         "tensor 'x': data_offsets must be [begin, end]"},
        {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.5,4.5]}}", 8,
         SDC_ERR_FORMAT, "tensor 'x': data_offsets must be [begin, end]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, SDC_ERR_FORMAT, "tensors 'a' [0, 8] and 'b' [4, 12] overlap"},
        /* A zero-size tensor inside another one is an overlap too. */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
         8, SDC_ERR_FORMAT, "tensors 'a' [0, 8] and 'e' [4, 4] overlap"},
        /* An overlap with an earlier, longer tensor, not just the previous one. */
        {"{\"big\":{\"dtype\":\"U8\",\"shape\":[10],\"data_offsets\":[0,10]},"
         "\"c\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
         "\"d\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]}}",
         10, SDC_ERR_FORMAT, "overlap"},
        {"{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
         "\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
         2, SDC_ERR_FORMAT, "tensor 'x' is listed twice"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_with_header(path, cases[i].json, cases[i].dlen);
        expect_open_error(path, cases[i].code, cases[i].want);
    }
}

static void test_write_errors(void)
{
    char path[128];
    tpath(path, sizeof(path), "w.safetensors");
    float v[6] = {0};
    const int64_t shape[2] = {2, 3};
    sdc_tensor_t t[2];
    sdc_tensor_init(&t[0], SDC_DTYPE_F32, 2, shape, v);
    sdc_tensor_init(&t[1], SDC_DTYPE_F32, 2, shape, v);
    sdc_error_t err = {0};
    const char *dup[2] = {"a", "a"};
    CHECK_EQ_INT(sdc_st_write(path, 2, dup, t, &err), SDC_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "tensor name 'a' given twice") != NULL);
    const char *meta[1] = {"__metadata__"};
    CHECK_EQ_INT(sdc_st_write(path, 1, meta, t, &err), SDC_ERR_INVALID_ARG);
    sdc_tensor_t tr = t[0];
    tr.stride[0] = 1;
    tr.stride[1] = 2;
    const char *one[1] = {"t"};
    CHECK_EQ_INT(sdc_st_write(path, 1, one, &tr, &err), SDC_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "'t' is not contiguous") != NULL);
    sdc_tensor_t nodata = t[0];
    nodata.data = NULL;
    CHECK_EQ_INT(sdc_st_write(path, 1, one, &nodata, &err), SDC_ERR_INVALID_ARG);
    char bad[160];
    tpath(bad, sizeof(bad), "no/such/dir/x.safetensors");
    CHECK_EQ_INT(sdc_st_write(bad, 1, one, t, &err), SDC_ERR_NOT_FOUND);
    CHECK(strstr(err.msg, bad) != NULL);
    /* An empty file set is still a valid file. */
    CHECK_EQ_INT(sdc_st_write(path, 0, NULL, NULL, &err), SDC_OK);
    sdc_st_file_t f;
    CHECK_EQ_INT(sdc_st_open(&f, path, &err), SDC_OK);
    CHECK_EQ_INT(f.n_entries, 0);
    sdc_st_close(&f);
}

/* ---- shard sets ---- */

static void write_tensors(const char *path, int n, const char *const *names, float base)
{
    float v[4][3];
    const int64_t shape[1] = {3};
    sdc_tensor_t t[4];
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < 3; j++)
            v[i][j] = base + (float)(10 * i + j);
        sdc_tensor_init(&t[i], SDC_DTYPE_F32, 1, shape, v[i]);
    }
    sdc_error_t err = {0};
    if (sdc_st_write(path, (size_t)n, names, t, &err) != SDC_OK)
        fprintf(stderr, "  write %s: %s\n", path, err.msg);
}

static void write_text(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    fputs(text, fp);
    fclose(fp);
}

/* dir/ with shard a (t1, t2) and shard b (t3), plus an index naming them. */
static void make_sharded(const char *dir, const char *index_name, const char *weight_map)
{
    char p[256];
    mkdir(dir, 0755);
    const char *a[2] = {"t1", "t2"}, *b[1] = {"t3"};
    snprintf(p, sizeof(p), "%s/m-00001-of-00002.safetensors", dir);
    write_tensors(p, 2, a, 0.0f);
    snprintf(p, sizeof(p), "%s/m-00002-of-00002.safetensors", dir);
    write_tensors(p, 1, b, 100.0f);
    snprintf(p, sizeof(p), "%s/%s", dir, index_name);
    char text[1024];
    snprintf(text, sizeof(text), "{\"metadata\": {\"total_size\": 36}, \"weight_map\": %s}",
             weight_map);
    write_text(p, text);
}

static const char good_map[] = "{\"t1\": \"m-00001-of-00002.safetensors\", "
                               "\"t2\": \"m-00001-of-00002.safetensors\", "
                               "\"t3\": \"m-00002-of-00002.safetensors\"}";

static void check_good_set(const sdc_st_set_t *s)
{
    CHECK_EQ_INT(s->n_files, 2);
    const sdc_st_file_t *f = NULL;
    const sdc_st_entry_t *e = sdc_st_set_find(s, "t3", &f);
    CHECK(e != NULL && f != NULL && strstr(f->path, "m-00002-of-00002") != NULL);
    if (e && f) {
        sdc_tensor_t v;
        sdc_st_view(f, e, &v);
        CHECK(((const float *)v.data)[2] == 102.0f);
    }
    e = sdc_st_set_find(s, "t2", &f);
    CHECK(e != NULL && f != NULL && strstr(f->path, "m-00001-of-00002") != NULL);
    if (e && f) {
        sdc_tensor_t v;
        sdc_st_view(f, e, &v);
        CHECK(((const float *)v.data)[1] == 11.0f);
    }
    CHECK(sdc_st_set_find(s, "t4", &f) == NULL && f == NULL);
    CHECK(sdc_st_set_find(s, "t1", NULL) != NULL);
}

static void test_set_index(void)
{
    char dir[128], idx[192];
    tpath(dir, sizeof(dir), "sharded");
    make_sharded(dir, "diffusion_pytorch_model.safetensors.index.json", good_map);
    snprintf(idx, sizeof(idx), "%s/diffusion_pytorch_model.safetensors.index.json", dir);
    sdc_st_set_t s;
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_st_set_open(&s, idx, &err), SDC_OK);
    check_good_set(&s);
    sdc_st_set_close(&s);
    CHECK(s.files == NULL && s.n_files == 0);

    /* The directory resolves to the same index. */
    CHECK_EQ_INT(sdc_st_set_open(&s, dir, &err), SDC_OK);
    check_good_set(&s);
    sdc_st_set_close(&s);
    char slash[160];
    snprintf(slash, sizeof(slash), "%s/", dir);
    CHECK_EQ_INT(sdc_st_set_open(&s, slash, &err), SDC_OK);
    sdc_st_set_close(&s);

    /* A single file is a set of one. */
    char one[192];
    snprintf(one, sizeof(one), "%s/m-00001-of-00002.safetensors", dir);
    CHECK_EQ_INT(sdc_st_set_open(&s, one, &err), SDC_OK);
    CHECK_EQ_INT(s.n_files, 1);
    CHECK(sdc_st_set_find(&s, "t1", NULL) && !sdc_st_set_find(&s, "t3", NULL));
    sdc_st_set_close(&s);
}

static void expect_set_error(const char *path, sdc_status_t code, const char *want1,
                             const char *want2)
{
    sdc_st_set_t s;
    sdc_error_t err = {0};
    sdc_status_t st = sdc_st_set_open(&s, path, &err);
    CHECK_MSG(st == code, "%s: status %s, want %s (%s)", path, sdc_status_str(st),
              sdc_status_str(code), err.msg);
    CHECK_MSG(strstr(err.msg, want1) != NULL, "message lacks \"%s\": %s", want1, err.msg);
    CHECK_MSG(!want2 || strstr(err.msg, want2) != NULL, "message lacks \"%s\": %s", want2,
              err.msg);
    CHECK(s.files == NULL && s.n_files == 0);
    if (st == SDC_OK)
        sdc_st_set_close(&s);
}

static void test_set_index_errors(void)
{
    char dir[128], idx[192];

    /* An index naming a shard that does not exist. */
    tpath(dir, sizeof(dir), "missing_shard");
    make_sharded(dir, "model.safetensors.index.json",
                 "{\"t1\": \"m-00001-of-00002.safetensors\", \"t9\": \"m-00003.safetensors\"}");
    snprintf(idx, sizeof(idx), "%s/model.safetensors.index.json", dir);
    expect_set_error(idx, SDC_ERR_NOT_FOUND, idx, "m-00003.safetensors");

    /* An index mapping a tensor to a shard that lacks it. */
    tpath(dir, sizeof(dir), "not_in_shard");
    make_sharded(dir, "model.safetensors.index.json",
                 "{\"t1\": \"m-00001-of-00002.safetensors\", "
                 "\"t3\": \"m-00001-of-00002.safetensors\"}");
    snprintf(idx, sizeof(idx), "%s/model.safetensors.index.json", dir);
    expect_set_error(idx, SDC_ERR_NOT_FOUND, idx,
                     "tensor 't3' is mapped to");

    /* The same tensor in two shards. */
    tpath(dir, sizeof(dir), "dup_shard");
    make_sharded(dir, "model.safetensors.index.json", good_map);
    char p[256];
    snprintf(p, sizeof(p), "%s/m-00002-of-00002.safetensors", dir);
    const char *b[2] = {"t3", "t1"};
    write_tensors(p, 2, b, 0.0f);
    snprintf(idx, sizeof(idx), "%s/model.safetensors.index.json", dir);
    expect_set_error(idx, SDC_ERR_FORMAT, idx, "tensor 't1' is in both");

    /* Shards must sit beside the index. */
    tpath(dir, sizeof(dir), "escape");
    make_sharded(dir, "model.safetensors.index.json",
                 "{\"t1\": \"../sharded/m-00001-of-00002.safetensors\"}");
    snprintf(idx, sizeof(idx), "%s/model.safetensors.index.json", dir);
    expect_set_error(idx, SDC_ERR_FORMAT, idx, "weight_map['t1'] must name a shard file");

    /* No weight_map / an empty one / not JSON. */
    tpath(dir, sizeof(dir), "nomap");
    make_sharded(dir, "model.safetensors.index.json", "[]");
    snprintf(idx, sizeof(idx), "%s/model.safetensors.index.json", dir);
    expect_set_error(idx, SDC_ERR_FORMAT, idx, "'weight_map' missing or not an object");
    write_text(idx, "{\"weight_map\": {}}");
    expect_set_error(idx, SDC_ERR_FORMAT, idx, "weight_map lists no tensors");
    write_text(idx, "{\"weight_map\": ");
    expect_set_error(idx, SDC_ERR_FORMAT, idx, "invalid JSON");
}

static void test_set_dir_rules(void)
{
    char dir[128], p[256];
    sdc_st_set_t s;
    sdc_error_t err = {0};
    const char *names[1] = {"w"};

    /* A lone file with any name. */
    tpath(dir, sizeof(dir), "lone");
    mkdir(dir, 0755);
    snprintf(p, sizeof(p), "%s/some_model.fp16.safetensors", dir);
    write_tensors(p, 1, names, 1.0f);
    snprintf(p, sizeof(p), "%s/config.json", dir);
    write_text(p, "{}");
    CHECK_EQ_INT(sdc_st_set_open(&s, dir, &err), SDC_OK);
    CHECK(s.n_files == 1 && sdc_st_set_find(&s, "w", NULL) != NULL);
    sdc_st_set_close(&s);

    /* A well-known name wins over other files. */
    tpath(dir, sizeof(dir), "named");
    mkdir(dir, 0755);
    snprintf(p, sizeof(p), "%s/diffusion_pytorch_model.safetensors", dir);
    write_tensors(p, 1, names, 5.0f);
    snprintf(p, sizeof(p), "%s/diffusion_pytorch_model.fp16.safetensors", dir);
    write_tensors(p, 1, names, 6.0f);
    CHECK_EQ_INT(sdc_st_set_open(&s, dir, &err), SDC_OK);
    CHECK(s.n_files == 1 && strstr(s.files[0].path, "diffusion_pytorch_model.safetensors"));
    sdc_st_set_close(&s);

    /* Two well-known names are ambiguous. */
    snprintf(p, sizeof(p), "%s/model.safetensors", dir);
    write_tensors(p, 1, names, 7.0f);
    expect_set_error(dir, SDC_ERR_FORMAT, dir, "expected exactly one");

    /* Several unnamed files and no index. */
    tpath(dir, sizeof(dir), "several");
    mkdir(dir, 0755);
    snprintf(p, sizeof(p), "%s/a.safetensors", dir);
    write_tensors(p, 1, names, 1.0f);
    snprintf(p, sizeof(p), "%s/b.safetensors", dir);
    write_tensors(p, 1, names, 1.0f);
    expect_set_error(dir, SDC_ERR_FORMAT, dir, "2 .safetensors files and no index");

    /* Nothing at all. */
    tpath(dir, sizeof(dir), "emptydir");
    mkdir(dir, 0755);
    expect_set_error(dir, SDC_ERR_NOT_FOUND, dir, "no .safetensors file");
    tpath(dir, sizeof(dir), "does-not-exist");
    expect_set_error(dir, SDC_ERR_NOT_FOUND, dir, "No such file");

    /* A bad single file reports the file. */
    tpath(dir, sizeof(dir), "badone");
    mkdir(dir, 0755);
    snprintf(p, sizeof(p), "%s/model.safetensors", dir);
    write_text(p, "abc");
    expect_set_error(dir, SDC_ERR_FORMAT, p, "too short");
}

/* Random byte flips and truncations of a valid file: every outcome is a
 * clean accept or a format or unsupported-dtype error, and an accepted
 * file's tensors all lie inside the mapping. */
static void test_mutations(void)
{
    char path[128];
    tpath(path, sizeof(path), "mut.safetensors");
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[3] = {1, 2, 3};
    const int64_t sa[2] = {2, 3}, sb[1] = {3};
    sdc_tensor_t t[2];
    sdc_tensor_init(&t[0], SDC_DTYPE_F32, 2, sa, a);
    sdc_tensor_init(&t[1], SDC_DTYPE_BF16, 1, sb, b);
    const char *names[2] = {"layer.weight", "layer.bias"};
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_st_write(path, 2, names, t, &err), SDC_OK);
    uint8_t orig[512];
    FILE *fp = fopen(path, "rb");
    size_t len = fread(orig, 1, sizeof(orig), fp);
    fclose(fp);

    uint32_t rng = 12345;
    int accepted = 0, rejected = 0;
    for (int iter = 0; iter < 800; iter++) {
        uint8_t buf[512];
        memcpy(buf, orig, len);
        size_t n = len;
        rng = rng * 1103515245u + 12345u;
        int flips = 1 + (int)((rng >> 16) % 4);
        for (int k = 0; k < flips; k++) {
            rng = rng * 1103515245u + 12345u;
            size_t pos = (rng >> 8) % n;
            rng = rng * 1103515245u + 12345u;
            /* Half the flips write printable bytes, which keep the JSON
             * plausible enough to reach the deeper checks. */
            buf[pos] = (rng >> 24) & 1 ? (uint8_t)(' ' + (rng >> 8) % 95) : (uint8_t)(rng >> 16);
        }
        if (iter % 5 == 0) {
            rng = rng * 1103515245u + 12345u;
            n = (rng >> 8) % (len + 1);
        }
        fp = fopen(path, "wb");
        fwrite(buf, 1, n, fp);
        fclose(fp);

        sdc_st_file_t f;
        sdc_status_t st = sdc_st_open(&f, path, &err);
        if (st != SDC_OK) {
            CHECK_MSG(st == SDC_ERR_FORMAT || st == SDC_ERR_UNSUPPORTED, "iter %d: %s: %s", iter,
                      sdc_status_str(st), err.msg);
            CHECK(strstr(err.msg, path) != NULL);
            rejected++;
            continue;
        }
        accepted++;
        for (size_t i = 0; i < f.n_entries; i++) {
            const sdc_st_entry_t *e = &f.entries[i];
            CHECK(e->begin <= e->end && f.data_start + e->end <= f.map_size);
            sdc_tensor_t v;
            sdc_st_view(&f, e, &v);
            /* Touch every byte the entry claims (volatile: the loop must run). */
            volatile unsigned sum = 0;
            for (uint64_t j = 0; j < e->end - e->begin; j++)
                sum += ((const uint8_t *)v.data)[j];
        }
        sdc_st_close(&f);
    }
    CHECK_MSG(rejected > 600 && accepted > 20, "%d rejected, %d accepted", rejected, accepted);
}

int main(void)
{
    snprintf(tmp_root, sizeof(tmp_root), "/tmp/sdc_test_st_XXXXXX");
    if (!mkdtemp(tmp_root)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_write_exact_bytes);
    RUN(test_roundtrip);
    RUN(test_metadata_and_empty);
    RUN(test_bad_file_level);
    RUN(test_bad_header_json);
    RUN(test_bad_entries);
    RUN(test_write_errors);
    RUN(test_set_index);
    RUN(test_set_index_errors);
    RUN(test_set_dir_rules);
    RUN(test_mutations);
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    TEST_EXIT();
}
