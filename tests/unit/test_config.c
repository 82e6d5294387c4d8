/* test_config.c: JSON loading and the typed getters: defaults, type errors
 * naming file and key, integral floats for ints, strict bools, arrays,
 * model_index component pairs, bad JSON and oversized files. */
#include "common/config.h"

#include <fcntl.h>
#include <unistd.h>

#include "test.h"

static const char doc_text[] =
    "{\n"
    "  \"_class_name\": \"HunyuanImageTransformer2DModel\",\n"
    "  \"num_layers\": 20,\n"
    "  \"patch\": 2.0,\n"
    "  \"ratio\": 4.5,\n"
    "  \"neg\": -7,\n"
    "  \"big\": 1e30,\n"
    "  \"flag\": true,\n"
    "  \"off\": false,\n"
    "  \"one\": 1,\n"
    "  \"nothing\": null,\n"
    "  \"axes\": [16, 56, 56],\n"
    "  \"mixed\": [1, 2.5],\n"
    "  \"sigmas\": [1.0, 0.5, 0],\n"
    "  \"strs\": [\"a\"],\n"
    "  \"transformer\": [\"diffusers\", \"HunyuanImageTransformer2DModel\"],\n"
    "  \"text_encoder_2\": [null, null],\n"
    "  \"bad_pair\": [\"diffusers\"],\n"
    "  \"bad_pair2\": [\"diffusers\", 3]\n"
    "}\n";

static int parse_doc(sdc_json_t *doc)
{
    sdc_error_t err = {0};
    if (sdc_json_parse(doc, doc_text, strlen(doc_text), "transformer/config.json", &err) !=
        SDC_OK) {
        fprintf(stderr, "  parse failed: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static void test_ints(void)
{
    sdc_json_t doc;
    sdc_error_t err = {0};
    int64_t v = 0;
    if (parse_doc(&doc) != 0) {
        CHECK(0);
        return;
    }
    CHECK_EQ_INT(sdc_json_get_int(&doc, "num_layers", 1, &v, &err), SDC_OK);
    CHECK_EQ_INT(v, 20);
    CHECK_EQ_INT(sdc_json_get_int(&doc, "neg", 1, &v, &err), SDC_OK);
    CHECK_EQ_INT(v, -7);
    /* 2.0 is an integer value written as a float. */
    CHECK_EQ_INT(sdc_json_get_int(&doc, "patch", 1, &v, &err), SDC_OK);
    CHECK_EQ_INT(v, 2);
    CHECK_EQ_INT(sdc_json_get_int(&doc, "absent", 42, &v, &err), SDC_OK);
    CHECK_EQ_INT(v, 42);
    CHECK_EQ_INT(sdc_json_get_int(&doc, "nothing", -3, &v, &err), SDC_OK);
    CHECK_EQ_INT(v, -3);

    CHECK_EQ_INT(sdc_json_get_int(&doc, "ratio", 1, &v, &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "transformer/config.json") && strstr(err.msg, "'ratio'") &&
          strstr(err.msg, "4.5"));
    CHECK_EQ_INT(sdc_json_get_int(&doc, "_class_name", 1, &v, &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "transformer/config.json: '_class_name' must be an integer, got a "
                          "string") != NULL);
    CHECK_EQ_INT(sdc_json_get_int(&doc, "flag", 1, &v, &err), SDC_ERR_FORMAT);
    CHECK_EQ_INT(sdc_json_get_int(&doc, "big", 1, &v, &err), SDC_ERR_RANGE);
    CHECK(strstr(err.msg, "'big'") != NULL);
    CHECK(sdc_json_has(&doc, "num_layers"));
    CHECK(!sdc_json_has(&doc, "absent"));
    CHECK(!sdc_json_has(&doc, "nothing"));
    sdc_json_free(&doc);
    CHECK(doc.root == NULL && doc.path == NULL);
}

static void test_double_bool_string(void)
{
    sdc_json_t doc;
    sdc_error_t err = {0};
    if (parse_doc(&doc) != 0) {
        CHECK(0);
        return;
    }
    double d = 0;
    CHECK_EQ_INT(sdc_json_get_double(&doc, "ratio", 0, &d, &err), SDC_OK);
    CHECK(d == 4.5);
    CHECK_EQ_INT(sdc_json_get_double(&doc, "num_layers", 0, &d, &err), SDC_OK);
    CHECK(d == 20.0);
    CHECK_EQ_INT(sdc_json_get_double(&doc, "absent", 0.25, &d, &err), SDC_OK);
    CHECK(d == 0.25);
    CHECK_EQ_INT(sdc_json_get_double(&doc, "flag", 0, &d, &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "'flag' must be a number, got a boolean") != NULL);

    int b = -1;
    CHECK_EQ_INT(sdc_json_get_bool(&doc, "flag", 0, &b, &err), SDC_OK);
    CHECK_EQ_INT(b, 1);
    CHECK_EQ_INT(sdc_json_get_bool(&doc, "off", 1, &b, &err), SDC_OK);
    CHECK_EQ_INT(b, 0);
    CHECK_EQ_INT(sdc_json_get_bool(&doc, "absent", 1, &b, &err), SDC_OK);
    CHECK_EQ_INT(b, 1);
    /* Strict: 1 is not true. */
    CHECK_EQ_INT(sdc_json_get_bool(&doc, "one", 0, &b, &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "transformer/config.json: 'one' must be true or false") != NULL);

    const char *s = NULL;
    CHECK_EQ_INT(sdc_json_get_string(&doc, "_class_name", NULL, &s, &err), SDC_OK);
    CHECK(s && strcmp(s, "HunyuanImageTransformer2DModel") == 0);
    CHECK_EQ_INT(sdc_json_get_string(&doc, "absent", "dflt", &s, &err), SDC_OK);
    CHECK(s && strcmp(s, "dflt") == 0);
    CHECK_EQ_INT(sdc_json_get_string(&doc, "absent", NULL, &s, &err), SDC_OK);
    CHECK(s == NULL);
    CHECK_EQ_INT(sdc_json_get_string(&doc, "axes", NULL, &s, &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "'axes' must be a string, got an array") != NULL);
    sdc_json_free(&doc);
}

static void test_arrays(void)
{
    sdc_json_t doc;
    sdc_error_t err = {0};
    if (parse_doc(&doc) != 0) {
        CHECK(0);
        return;
    }
    int64_t iv[4] = {0};
    size_t n = 99;
    CHECK_EQ_INT(sdc_json_get_int_array(&doc, "axes", NULL, 0, iv, 4, &n, &err), SDC_OK);
    CHECK_EQ_INT(n, 3);
    CHECK(iv[0] == 16 && iv[1] == 56 && iv[2] == 56);
    const int64_t def[2] = {64, 64};
    CHECK_EQ_INT(sdc_json_get_int_array(&doc, "absent", def, 2, iv, 4, &n, &err), SDC_OK);
    CHECK(n == 2 && iv[0] == 64 && iv[1] == 64);
    CHECK_EQ_INT(sdc_json_get_int_array(&doc, "axes", NULL, 0, iv, 2, &n, &err), SDC_ERR_RANGE);
    CHECK(strstr(err.msg, "'axes' has 3 items, at most 2 allowed") != NULL);
    CHECK_EQ_INT(sdc_json_get_int_array(&doc, "mixed", NULL, 0, iv, 4, &n, &err),
                 SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "'mixed'[1]") != NULL);
    CHECK_EQ_INT(sdc_json_get_int_array(&doc, "num_layers", NULL, 0, iv, 4, &n, &err),
                 SDC_ERR_FORMAT);
    CHECK_EQ_INT(sdc_json_get_int_array(&doc, "absent", def, 2, iv, 1, &n, &err),
                 SDC_ERR_INVALID_ARG);

    double dv[4];
    CHECK_EQ_INT(sdc_json_get_double_array(&doc, "sigmas", NULL, 0, dv, 4, &n, &err), SDC_OK);
    CHECK(n == 3 && dv[0] == 1.0 && dv[1] == 0.5 && dv[2] == 0.0);
    const double ddef[1] = {3.5};
    CHECK_EQ_INT(sdc_json_get_double_array(&doc, "nothing", ddef, 1, dv, 4, &n, &err), SDC_OK);
    CHECK(n == 1 && dv[0] == 3.5);
    CHECK_EQ_INT(sdc_json_get_double_array(&doc, "strs", NULL, 0, dv, 4, &n, &err),
                 SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "'strs'[0] must be a number, got a string") != NULL);
    sdc_json_free(&doc);
}

static void test_component_class(void)
{
    sdc_json_t doc;
    sdc_error_t err = {0};
    if (parse_doc(&doc) != 0) {
        CHECK(0);
        return;
    }
    const char *cls = "x";
    CHECK_EQ_INT(sdc_json_get_component_class(&doc, "transformer", &cls, &err), SDC_OK);
    CHECK(cls && strcmp(cls, "HunyuanImageTransformer2DModel") == 0);
    CHECK_EQ_INT(sdc_json_get_component_class(&doc, "text_encoder_2", &cls, &err), SDC_OK);
    CHECK(cls == NULL);
    cls = "x";
    CHECK_EQ_INT(sdc_json_get_component_class(&doc, "absent", &cls, &err), SDC_OK);
    CHECK(cls == NULL);
    CHECK_EQ_INT(sdc_json_get_component_class(&doc, "bad_pair", &cls, &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "'bad_pair'") != NULL);
    CHECK_EQ_INT(sdc_json_get_component_class(&doc, "bad_pair2", &cls, &err), SDC_ERR_FORMAT);
    CHECK_EQ_INT(sdc_json_get_component_class(&doc, "num_layers", &cls, &err), SDC_ERR_FORMAT);
    sdc_json_free(&doc);
}

static void test_bad_json(void)
{
    sdc_json_t doc;
    sdc_error_t err = {0};
    const char *bad = "{\n  \"a\": 1,\n  \"b\": ,\n}";
    CHECK_EQ_INT(sdc_json_parse(&doc, bad, strlen(bad), "cfg.json", &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "cfg.json: invalid JSON at line 3") != NULL);
    CHECK(doc.root == NULL);

    const char *arr = "[1, 2]";
    CHECK_EQ_INT(sdc_json_parse(&doc, arr, strlen(arr), "cfg.json", &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "cfg.json: top-level JSON value is not an object") != NULL);

    const char *trail = "{\"a\": 1} x";
    CHECK_EQ_INT(sdc_json_parse(&doc, trail, strlen(trail), "cfg.json", &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "unexpected data after the JSON value at line 1, column 10") != NULL);

    CHECK_EQ_INT(sdc_json_parse(&doc, "", 0, "empty.json", &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "empty.json") != NULL);

    /* Length bounds the parse: the text after len is never read. */
    const char *ok = "{\"a\": 5}garbage";
    CHECK_EQ_INT(sdc_json_parse(&doc, ok, 8, "cut.json", &err), SDC_OK);
    int64_t v = 0;
    CHECK_EQ_INT(sdc_json_get_int(&doc, "a", 0, &v, &err), SDC_OK);
    CHECK_EQ_INT(v, 5);
    sdc_json_free(&doc);

    /* Trailing whitespace is fine. */
    const char *ws = "{}\n \t\r\n";
    CHECK_EQ_INT(sdc_json_parse(&doc, ws, strlen(ws), "ws.json", &err), SDC_OK);
    sdc_json_free(&doc);
}

static void test_load_files(void)
{
    char dir[] = "/tmp/sdc_test_config_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    char path[256], big[256], bad[256];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    snprintf(big, sizeof(big), "%s/huge.json", dir);
    snprintf(bad, sizeof(bad), "%s/bad.json", dir);
    sdc_json_t doc;
    sdc_error_t err = {0};

    FILE *fp = fopen(path, "w");
    fputs("{\"in_channels\": 64, \"use_meanflow\": false}\n", fp);
    fclose(fp);
    CHECK_EQ_INT(sdc_json_load(&doc, path, &err), SDC_OK);
    int64_t v = 0;
    CHECK_EQ_INT(sdc_json_get_int(&doc, "in_channels", 0, &v, &err), SDC_OK);
    CHECK_EQ_INT(v, 64);
    CHECK(strcmp(doc.path, path) == 0);
    CHECK_EQ_INT(sdc_json_get_int(&doc, "use_meanflow", 0, &v, &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, path) != NULL && strstr(err.msg, "'use_meanflow'") != NULL);
    sdc_json_free(&doc);

    fp = fopen(bad, "w");
    fputs("{\"a\": [1, 2}\n", fp);
    fclose(fp);
    CHECK_EQ_INT(sdc_json_load(&doc, bad, &err), SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, bad) != NULL && strstr(err.msg, "invalid JSON") != NULL);

    /* Over 16 MiB is refused before reading (a sparse file costs nothing). */
    int fd = open(big, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    CHECK(fd >= 0 && ftruncate(fd, (16 << 20) + 1) == 0);
    close(fd);
    CHECK_EQ_INT(sdc_json_load(&doc, big, &err), SDC_ERR_RANGE);
    CHECK(strstr(err.msg, big) != NULL && strstr(err.msg, "16777217 bytes") != NULL);

    char missing[300];
    snprintf(missing, sizeof(missing), "%s/nope.json", dir);
    CHECK_EQ_INT(sdc_json_load(&doc, missing, &err), SDC_ERR_NOT_FOUND);
    CHECK(strstr(err.msg, missing) != NULL);
    CHECK_EQ_INT(sdc_json_load(&doc, dir, &err), SDC_ERR_IO);

    unlink(path);
    unlink(big);
    unlink(bad);
    rmdir(dir);
}

int main(void)
{
    RUN(test_ints);
    RUN(test_double_bool_string);
    RUN(test_arrays);
    RUN(test_component_class);
    RUN(test_bad_json);
    RUN(test_load_files);
    TEST_EXIT();
}
