/*
 * test_weights.c: loading component weights through a backend: F32 used in
 * place from the mapping on host-memory backends, F16/BF16 converted,
 * uploads (chunked) on device backends, exact shape checks with messages
 * naming the tensor, optional tensors, and release of every buffer on
 * close, including after an allocation failure.
 *
 * A small ops table stands in for a backend so both the host-memory and the
 * device path (and allocation failures) are exercised without a GPU; the
 * real CPU backend then loads the same fixture and the committed tiny model.
 */
#include "model/weights.h"

#include <ftw.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

typedef struct {
    int n_alloc, n_free, n_upload, n_sync;
    int fail_alloc; /* alloc returns NULL when set */
} fake_dev_t;

static void *fake_alloc(sdc_backend_t *be, size_t bytes)
{
    fake_dev_t *d = be->impl;
    if (d->fail_alloc)
        return NULL;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0)
        return NULL;
    /* Poison, so a missing upload shows up as wrong values. */
    memset(p, 0xcd, bytes);
    d->n_alloc++;
    return p;
}

static void fake_free(sdc_backend_t *be, void *p)
{
    fake_dev_t *d = be->impl;
    d->n_free++;
    free(p);
}

static void fake_upload(sdc_backend_t *be, void *dst, const void *src, size_t bytes)
{
    fake_dev_t *d = be->impl;
    d->n_upload++;
    memcpy(dst, src, bytes);
}

static void fake_sync(sdc_backend_t *be)
{
    fake_dev_t *d = be->impl;
    d->n_sync++;
}

static const sdc_backend_ops_t host_ops = {
    .name = "fake-host", .host_memory = 1, .alloc = fake_alloc, .free = fake_free,
    .upload = fake_upload, .sync = fake_sync,
};
static const sdc_backend_ops_t device_ops = {
    .name = "fake-device", .host_memory = 0, .alloc = fake_alloc, .free = fake_free,
    .upload = fake_upload, .sync = fake_sync,
};

static char tmp_root[64];
static char comp_dir[128];      /* transformer/: one file written by sdc_st_write */
static char unaligned_dir[128]; /* a file whose F32 tensor starts at an odd offset */

enum { BIG_N = (4 << 20) + 5 }; /* more than one 16 MiB conversion chunk */

static float embed_val(int i) { return (float)i * 0.25f - 8.0f; }
static float f16_val(int i) { return (float)(i % 7) - 3.5f; }
static float bf16_val(int i) { return (float)i * 1.5f; }

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int make_fixtures(void)
{
    snprintf(tmp_root, sizeof(tmp_root), "/tmp/sdc_test_weights_XXXXXX");
    if (!mkdtemp(tmp_root))
        return -1;
    snprintf(comp_dir, sizeof(comp_dir), "%s/transformer", tmp_root);
    snprintf(unaligned_dir, sizeof(unaligned_dir), "%s/unaligned", tmp_root);
    mkdir(comp_dir, 0755);
    mkdir(unaligned_dir, 0755);

    static float embed[64 * 4];
    static uint16_t w0[15], w1[4], big[BIG_N];
    static const int64_t ids[2] = {1, 2};
    for (int i = 0; i < 256; i++)
        embed[i] = embed_val(i);
    for (int i = 0; i < 15; i++)
        w0[i] = sdc_f32_to_f16(f16_val(i));
    for (int i = 0; i < 4; i++)
        w1[i] = sdc_f32_to_bf16(bf16_val(i));
    for (int i = 0; i < BIG_N; i++)
        big[i] = sdc_f32_to_f16(f16_val(i));

    const int64_t s_embed[4] = {64, 4, 1, 1}, s_w0[2] = {3, 5}, s_w1[2] = {2, 2},
                  s_ids[1] = {2}, s_big[1] = {BIG_N};
    sdc_tensor_t t[5];
    sdc_tensor_init(&t[0], SDC_DTYPE_F32, 4, s_embed, embed);
    sdc_tensor_init(&t[1], SDC_DTYPE_F16, 2, s_w0, w0);
    sdc_tensor_init(&t[2], SDC_DTYPE_BF16, 2, s_w1, w1);
    sdc_tensor_init(&t[3], SDC_DTYPE_I64, 1, s_ids, (void *)ids);
    sdc_tensor_init(&t[4], SDC_DTYPE_F16, 1, s_big, big);
    const char *names[5] = {"x_embedder.proj.weight", "blocks.0.w", "blocks.1.w", "ids",
                            "big.weight"};
    char path[256];
    sdc_error_t err = {0};
    snprintf(path, sizeof(path), "%s/diffusion_pytorch_model.safetensors", comp_dir);
    if (sdc_st_write(path, 5, names, t, &err) != SDC_OK) {
        fprintf(stderr, "  %s\n", err.msg);
        return -1;
    }

    /* U8 [2] at [0, 2], then F32 [2] at [2, 10]: the F32 data is not
     * 4-byte aligned in the mapping. */
    const char hdr[] = "{\"pad\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                       "\"odd\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10]}}";
    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;
    uint8_t buf[512] = {0};
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    const float odd[2] = {1.5f, -2.25f};
    memcpy(buf + 8 + padded + 2, odd, 8);
    snprintf(path, sizeof(path), "%s/model.safetensors", unaligned_dir);
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -1;
    fwrite(buf, 1, 8 + padded + 10, fp);
    fclose(fp);
    return 0;
}

static int in_mapping(const sdc_weights_t *w, const void *p)
{
    const sdc_st_file_t *f = &w->st.files[0];
    return (const uint8_t *)p >= f->map && (const uint8_t *)p < f->map + f->map_size;
}

static void test_host_backend(void)
{
    fake_dev_t dev = {0};
    sdc_backend_t be = {.ops = &host_ops, .impl = &dev, .n_threads = 1};
    sdc_weights_t w;
    sdc_error_t err = {0};
    if (sdc_weights_open(&w, &be, comp_dir, &err) != SDC_OK) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    const int64_t s_embed[4] = {64, 4, 1, 1};
    float *p = NULL;
    CHECK_EQ_INT(sdc_weights_load(&w, "x_embedder.proj.weight", 4, s_embed, &p, &err), SDC_OK);
    /* Used in place: a pointer into the mapping, nothing allocated. */
    CHECK(p && in_mapping(&w, p));
    CHECK_EQ_INT(dev.n_alloc, 0);
    int bad = 0;
    for (int i = 0; p && i < 256; i++)
        bad += p[i] != embed_val(i);
    CHECK_EQ_INT(bad, 0);

    const int64_t s_w0[2] = {3, 5};
    CHECK_EQ_INT(sdc_weights_loadf(&w, 2, s_w0, &p, &err, "blocks.%d.w", 0), SDC_OK);
    CHECK(p && !in_mapping(&w, p));
    for (int i = 0; p && i < 15; i++)
        CHECK(p[i] == f16_val(i));
    const int64_t s_w1[2] = {2, 2};
    CHECK_EQ_INT(sdc_weights_loadf_opt(&w, 2, s_w1, &p, &err, "blocks.%d.w", 1), SDC_OK);
    for (int i = 0; p && i < 4; i++)
        CHECK(p[i] == bf16_val(i));
    CHECK_EQ_INT(dev.n_alloc, 2);
    CHECK_EQ_INT(dev.n_upload, 0); /* converted straight into host memory */
    CHECK_EQ_INT(w.n_owned, 2);
    CHECK_EQ_INT(w.n_loaded, 3);
    CHECK_EQ_INT(w.bytes_loaded, (256 + 15 + 4) * 4);

    CHECK(sdc_weights_has(&w, "ids"));
    CHECK(!sdc_weights_has(&w, "nope"));
    sdc_weights_close(&w);
    CHECK_EQ_INT(dev.n_free, dev.n_alloc);
    CHECK(w.owned == NULL && w.st.files == NULL);
}

static void test_errors(void)
{
    fake_dev_t dev = {0};
    sdc_backend_t be = {.ops = &host_ops, .impl = &dev, .n_threads = 1};
    sdc_weights_t w;
    sdc_error_t err = {0};
    char slash[160];
    snprintf(slash, sizeof(slash), "%s/", comp_dir);
    if (sdc_weights_open(&w, &be, slash, &err) != SDC_OK) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    float *p = (float *)&err;
    const int64_t wrong[4] = {64, 8, 1, 1};
    CHECK_EQ_INT(sdc_weights_load(&w, "x_embedder.proj.weight", 4, wrong, &p, &err),
                 SDC_ERR_SHAPE);
    char want[512];
    snprintf(want, sizeof(want),
             "%s: 'x_embedder.proj.weight' has shape [64, 4, 1, 1], expected [64, 8, 1, 1]",
             comp_dir);
    CHECK_MSG(strcmp(err.msg, want) == 0, "got: %s", err.msg);
    CHECK(p == NULL);

    const int64_t flat[2] = {64, 4};
    CHECK_EQ_INT(sdc_weights_load(&w, "x_embedder.proj.weight", 2, flat, &p, &err),
                 SDC_ERR_SHAPE);
    CHECK(strstr(err.msg, "expected [64, 4]") != NULL);

    CHECK_EQ_INT(sdc_weights_load(&w, "proj_out.weight", 2, flat, &p, &err), SDC_ERR_NOT_FOUND);
    CHECK(strstr(err.msg, comp_dir) && strstr(err.msg, "'proj_out.weight' not found"));
    p = (float *)&err;
    CHECK_EQ_INT(sdc_weights_load_opt(&w, "proj_out.weight", 2, flat, &p, &err), SDC_OK);
    CHECK(p == NULL);
    /* An optional tensor that is present must still have the right shape. */
    CHECK_EQ_INT(sdc_weights_loadf_opt(&w, 4, wrong, &p, &err, "x_embedder.%s.weight", "proj"),
                 SDC_ERR_SHAPE);

    const int64_t s_ids[1] = {2};
    CHECK_EQ_INT(sdc_weights_load(&w, "ids", 1, s_ids, &p, &err), SDC_ERR_UNSUPPORTED);
    CHECK(strstr(err.msg, "'ids' is stored as I64") != NULL);

    char longname[600];
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    CHECK_EQ_INT(sdc_weights_loadf(&w, 1, s_ids, &p, &err, "%s", longname), SDC_ERR_INVALID_ARG);

    /* A failed allocation leaves nothing behind. */
    dev.fail_alloc = 1;
    const int64_t s_w0[2] = {3, 5};
    CHECK_EQ_INT(sdc_weights_load(&w, "blocks.0.w", 2, s_w0, &p, &err), SDC_ERR_NOMEM);
    CHECK(strstr(err.msg, "'blocks.0.w'") != NULL);
    CHECK_EQ_INT(w.n_owned, 0);
    CHECK_EQ_INT(w.n_loaded, 0);
    sdc_weights_close(&w);
    CHECK_EQ_INT(dev.n_free, dev.n_alloc);

    char missing[160];
    snprintf(missing, sizeof(missing), "%s/vae", tmp_root);
    CHECK_EQ_INT(sdc_weights_open(&w, &be, missing, &err), SDC_ERR_NOT_FOUND);
    CHECK(strstr(err.msg, missing) != NULL);
    CHECK(w.label == NULL);
    sdc_weights_close(&w);
}

static void test_unaligned_f32_is_copied(void)
{
    fake_dev_t dev = {0};
    sdc_backend_t be = {.ops = &host_ops, .impl = &dev, .n_threads = 1};
    sdc_weights_t w;
    sdc_error_t err = {0};
    if (sdc_weights_open(&w, &be, unaligned_dir, &err) != SDC_OK) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    const int64_t s[1] = {2};
    float *p = NULL;
    CHECK_EQ_INT(sdc_weights_load(&w, "odd", 1, s, &p, &err), SDC_OK);
    CHECK(p && !in_mapping(&w, p) && (uintptr_t)p % 4 == 0);
    CHECK(p && p[0] == 1.5f && p[1] == -2.25f);
    CHECK_EQ_INT(w.n_owned, 1);
    sdc_weights_close(&w);
    CHECK_EQ_INT(dev.n_free, 1);
}

static void test_device_backend(void)
{
    fake_dev_t dev = {0};
    sdc_backend_t be = {.ops = &device_ops, .impl = &dev, .n_threads = 1};
    sdc_weights_t w;
    sdc_error_t err = {0};
    char file[256];
    snprintf(file, sizeof(file), "%s/diffusion_pytorch_model.safetensors", comp_dir);
    if (sdc_weights_open(&w, &be, file, &err) != SDC_OK) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    /* F32 is uploaded, never aliased: device memory is not the mapping. */
    const int64_t s_embed[4] = {64, 4, 1, 1};
    float *p = NULL;
    CHECK_EQ_INT(sdc_weights_load(&w, "x_embedder.proj.weight", 4, s_embed, &p, &err), SDC_OK);
    CHECK(p && !in_mapping(&w, p));
    int bad = 0;
    for (int i = 0; p && i < 256; i++)
        bad += p[i] != embed_val(i);
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(dev.n_upload, 1);

    /* A tensor over one chunk goes up in pieces, each fully converted. */
    const int64_t s_big[1] = {BIG_N};
    int uploads = dev.n_upload;
    CHECK_EQ_INT(sdc_weights_load(&w, "big.weight", 1, s_big, &p, &err), SDC_OK);
    CHECK_EQ_INT(dev.n_upload - uploads, 2);
    CHECK(dev.n_sync >= dev.n_upload);
    bad = 0;
    for (int i = 0; p && i < BIG_N; i++)
        bad += p[i] != f16_val(i);
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(w.n_owned, 2);
    CHECK_EQ_INT(w.bytes_loaded, (size_t)(256 + BIG_N) * 4);
    sdc_weights_close(&w);
    CHECK_EQ_INT(dev.n_alloc, 2);
    CHECK_EQ_INT(dev.n_free, 2);
}

static void test_cpu_backend(void)
{
    sdc_backend_config_t cfg = {.name = "cpu", .n_threads = 2};
    sdc_backend_t *be = NULL;
    sdc_error_t err = {0};
    if (sdc_backend_create(&cfg, &be, &err) != SDC_OK) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    sdc_weights_t w;
    if (sdc_weights_open(&w, be, comp_dir, &err) != SDC_OK) {
        CHECK_MSG(0, "%s", err.msg);
        sdc_backend_destroy(be);
        return;
    }
    const int64_t s_embed[4] = {64, 4, 1, 1}, s_w0[2] = {3, 5};
    float *p = NULL, *q = NULL;
    CHECK_EQ_INT(sdc_weights_load(&w, "x_embedder.proj.weight", 4, s_embed, &p, &err), SDC_OK);
    CHECK(p && in_mapping(&w, p) && p[255] == embed_val(255));
    CHECK_EQ_INT(sdc_weights_load(&w, "blocks.0.w", 2, s_w0, &q, &err), SDC_OK);
    CHECK(q && !in_mapping(&w, q) && q[14] == f16_val(14));
    CHECK_EQ_INT(w.n_owned, 1);
    sdc_weights_close(&w);
    sdc_backend_destroy(be);
}

/* The committed tiny transformer is stored as BF16: every weight goes
 * through conversion, and shape errors read as the model code sees them. */
static char tiny_dir[1024];

static void test_tiny_model(void)
{
    const char *dir = tiny_dir;
    sdc_backend_config_t cfg = {.name = "cpu", .n_threads = 1};
    sdc_backend_t *be = NULL;
    sdc_error_t err = {0};
    if (sdc_backend_create(&cfg, &be, &err) != SDC_OK) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    sdc_weights_t w;
    if (sdc_weights_open(&w, be, dir, &err) != SDC_OK) {
        CHECK_MSG(0, "%s", err.msg);
        sdc_backend_destroy(be);
        return;
    }
    const sdc_st_file_t *f = NULL;
    const sdc_st_entry_t *e = sdc_st_set_find(&w.st, "x_embedder.proj.weight", &f);
    CHECK(e && f && e->dtype == SDC_DTYPE_BF16);
    const int64_t right[4] = {64, 8, 1, 1}, wrong[4] = {64, 4, 1, 1};
    float *p = NULL;
    CHECK_EQ_INT(sdc_weights_load(&w, "x_embedder.proj.weight", 4, right, &p, &err), SDC_OK);
    if (p && e && f) {
        sdc_tensor_t v;
        sdc_st_view(f, e, &v);
        int bad = 0;
        for (int i = 0; i < 64 * 8; i++) {
            uint16_t raw;
            memcpy(&raw, (const uint8_t *)v.data + 2 * i, 2);
            bad += p[i] != sdc_bf16_to_f32(raw);
        }
        CHECK_EQ_INT(bad, 0);
    }
    CHECK_EQ_INT(sdc_weights_load(&w, "x_embedder.proj.weight", 4, wrong, &p, &err),
                 SDC_ERR_SHAPE);
    char want[1200];
    snprintf(want, sizeof(want),
             "%s: 'x_embedder.proj.weight' has shape [64, 8, 1, 1], expected [64, 4, 1, 1]", dir);
    CHECK_MSG(strcmp(err.msg, want) == 0, "got: %s", err.msg);
    sdc_weights_close(&w);
    sdc_backend_destroy(be);
}

int main(void)
{
    if (make_fixtures() != 0) {
        printf("FAIL make_fixtures\n");
        return 1;
    }
    RUN(test_host_backend);
    RUN(test_errors);
    RUN(test_unaligned_f32_is_copied);
    RUN(test_device_backend);
    RUN(test_cpu_backend);
    /* Counted only where the committed test data is present. */
    struct stat sb;
    snprintf(tiny_dir, sizeof(tiny_dir), "%s/tiny-hunyuanimage/transformer", test_data_dir());
    if (stat(tiny_dir, &sb) == 0)
        RUN(test_tiny_model);
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    TEST_EXIT();
}
