/*
 * test_tokenizer_bpe: the Qwen2.5 tokenizer against HF `tokenizers`.
 *
 * Goldens (tools/goldens/make_tokenizer_corpus.py): tokenizer_corpus.jsonl
 * and its ids from HF on tests/data/qwen2.5-tokenizer, checked in both file
 * layouts (vocab.json + merges.txt as committed, and a tokenizer.json this
 * test assembles from them); invalid UTF-8 byte strings with the ids of
 * their U+FFFD-repaired text; and a tiny tokenizer whose added tokens use
 * every flag. Plus round trips, special tokens, NUL, empty input, 1 MB
 * inputs under a time bound, and broken tokenizer directories.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>

#include "common/jsonstr.h"
#include "common/timer.h"
#include "model/tokenizer_bpe.h"
#include "model/tokenizer_bpe_internal.h"
#include "test.h"

#define QWEN_DIR_NAME "qwen2.5-tokenizer"

static const char qwen2_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static sdc_bpe_t *qwen; /* loaded once: every case below reads it */
static char tmp_root[256];

static char *data_path(const char *name)
{
    static char buf[1024];
    snprintf(buf, sizeof(buf), "%s/%s", test_data_dir(), name);
    return buf;
}

/* --- file helpers ------------------------------------------------------- */

typedef struct {
    char **lines;
    size_t *lens;
    size_t n;
} lines_t;

static int read_lines(const char *path, lines_t *out)
{
    memset(out, 0, sizeof(*out));
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "  cannot open %s\n", path);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, room = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n')
            line[--n] = '\0';
        if (out->n == room) {
            room = room ? room * 2 : 1024;
            out->lines = realloc(out->lines, room * sizeof(char *));
            out->lens = realloc(out->lens, room * sizeof(size_t));
        }
        out->lines[out->n] = malloc((size_t)n + 1);
        memcpy(out->lines[out->n], line, (size_t)n + 1);
        out->lens[out->n] = (size_t)n;
        out->n++;
    }
    free(line);
    fclose(f);
    return 0;
}

static void free_lines(lines_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->lines[i]);
    free(l->lines);
    free(l->lens);
}

/* A JSON array of integers into ids; returns the count or -1. */
static long parse_ids(const cJSON *arr, int32_t **ids)
{
    long n = cJSON_GetArraySize(arr);
    *ids = malloc(((size_t)n + 1) * sizeof(int32_t));
    long i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) {
        if (!cJSON_IsNumber(v))
            return -1;
        (*ids)[i++] = (int32_t)v->valuedouble;
    }
    return n;
}

static void print_ids(const char *label, const int32_t *ids, size_t n)
{
    fprintf(stderr, "    %s (%zu):", label, n);
    for (size_t i = 0; i < n && i < 60; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "%s\n", n > 60 ? " ..." : "");
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

/* A fresh directory under tmp_root. */
static const char *tmp_dir(const char *name)
{
    static char buf[512];
    snprintf(buf, sizeof(buf), "%s/%s", tmp_root, name);
    mkdir(buf, 0700);
    return buf;
}

/* --- corpus -------------------------------------------------------------- */

/* Encodes every corpus text with tok and compares with the HF ids; prints
 * the first mismatch in full. Returns the number of matches. */
static size_t check_corpus(sdc_bpe_t *tok, const char *label)
{
    lines_t texts, refs;
    if (read_lines(data_path("tokenizer_corpus.jsonl"), &texts) ||
        read_lines(data_path("tokenizer_corpus_ids.jsonl"), &refs)) {
        CHECK(!"corpus files readable");
        return 0;
    }
    CHECK_EQ_INT(texts.n, refs.n);
    CHECK(texts.n >= 2000);
    size_t ok = 0, shown = 0;
    double t0 = sdc_now();
    size_t bytes = 0;
    for (size_t i = 0; i < texts.n && i < refs.n; i++) {
        sdc_error_t err = {0};
        char *s;
        size_t len;
        if (sdc_jsonstr_decode(texts.lines[i], texts.lens[i], &s, &len, &err) != SDC_OK) {
            CHECK_MSG(0, "corpus line %zu: %s", i + 1, err.msg);
            continue;
        }
        bytes += len;
        cJSON *ref = cJSON_Parse(refs.lines[i]);
        int32_t *want = NULL, *got = NULL;
        long nwant = parse_ids(ref, &want);
        size_t ngot = 0;
        sdc_status_t st = sdc_bpe_encode(tok, s, len, &got, &ngot, &err);
        int same = st == SDC_OK && nwant >= 0 && (size_t)nwant == ngot &&
                   (ngot == 0 || memcmp(want, got, ngot * sizeof(int32_t)) == 0);
        if (same) {
            ok++;
        } else if (!shown++) {
            fprintf(stderr, "  %s: first mismatch, corpus line %zu: %.300s\n", label, i + 1,
                    texts.lines[i]);
            if (st != SDC_OK)
                fprintf(stderr, "    encode failed: %s\n", err.msg);
            print_ids("ours", got, ngot);
            print_ids("HF  ", want, nwant < 0 ? 0 : (size_t)nwant);
        }
        free(got);
        free(want);
        cJSON_Delete(ref);
        free(s);
    }
    double dt = sdc_now() - t0;
    fprintf(stderr, "  %s: %zu / %zu corpus texts match HF (%.2f MB in %.3f s)\n", label, ok,
            texts.n, (double)bytes / 1e6, dt);
    CHECK_EQ_INT(ok, texts.n);
    free_lines(&texts);
    free_lines(&refs);
    return ok;
}

static void test_corpus_vocab_merges(void)
{
    CHECK(qwen != NULL);
    if (qwen)
        check_corpus(qwen, "vocab.json + merges.txt");
}

/* tokenizer.json as the Qwen2.5 release lays it out, built from the
 * committed vocab.json, merges.txt and tokenizer_config.json. */
static int write_qwen_tokenizer_json(const char *dir)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/" QWEN_DIR_NAME "/vocab.json", test_data_dir());
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = '\0';
    cJSON *vocab = cJSON_Parse(buf);
    free(buf);

    snprintf(path, sizeof(path), "%s/" QWEN_DIR_NAME "/tokenizer_config.json", test_data_dir());
    f = fopen(path, "rb");
    if (!f)
        return -1;
    char cfgbuf[65536];
    size_t m = fread(cfgbuf, 1, sizeof(cfgbuf) - 1, f);
    fclose(f);
    cfgbuf[m] = '\0';
    cJSON *cfg = cJSON_Parse(cfgbuf);

    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(cfg, "added_tokens_decoder")) {
        cJSON *o = cJSON_Duplicate(e, 1);
        cJSON_AddNumberToObject(o, "id", atoi(e->string));
        cJSON_AddItemToArray(added, o);
    }
    cJSON_Delete(cfg);
    cJSON *nrm = cJSON_AddObjectToObject(root, "normalizer");
    cJSON_AddStringToObject(nrm, "type", "NFC");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "Sequence");
    cJSON *items = cJSON_AddArrayToObject(pre, "pretokenizers");
    cJSON *split = cJSON_CreateObject();
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(split, "pattern"), "Regex", qwen2_pattern);
    cJSON_AddStringToObject(split, "behavior", "Isolated");
    cJSON_AddFalseToObject(split, "invert");
    cJSON_AddItemToArray(items, split);
    cJSON *bl = cJSON_CreateObject();
    cJSON_AddStringToObject(bl, "type", "ByteLevel");
    cJSON_AddFalseToObject(bl, "add_prefix_space");
    cJSON_AddFalseToObject(bl, "trim_offsets");
    cJSON_AddFalseToObject(bl, "use_regex");
    cJSON_AddItemToArray(items, bl);
    cJSON_AddItemToObject(root, "decoder", cJSON_Duplicate(bl, 1));
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddFalseToObject(model, "byte_fallback");
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    lines_t ml;
    snprintf(path, sizeof(path), "%s/" QWEN_DIR_NAME "/merges.txt", test_data_dir());
    read_lines(path, &ml);
    for (size_t i = 1; i < ml.n; i++) {
        char *sp = strchr(ml.lines[i], ' ');
        if (!sp)
            continue;
        *sp = '\0';
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateString(ml.lines[i]));
        cJSON_AddItemToArray(pair, cJSON_CreateString(sp + 1));
        cJSON_AddItemToArray(merges, pair);
    }
    free_lines(&ml);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    int rc = write_file(path, text);
    free(text);
    return rc;
}

static void test_corpus_tokenizer_json(void)
{
    const char *dir = tmp_dir("qwen-json");
    CHECK(write_qwen_tokenizer_json(dir) == 0);
    sdc_error_t err = {0};
    sdc_bpe_t *tok = NULL;
    sdc_status_t st = sdc_bpe_load(dir, &tok, &err);
    CHECK_MSG(st == SDC_OK, "%s", err.msg);
    if (st != SDC_OK)
        return;
    CHECK_EQ_INT(sdc_bpe_vocab_size(tok), 151665);
    check_corpus(tok, "tokenizer.json");
    sdc_bpe_free(tok);
}

/* decode(encode(x)) is NFC(x) (added tokens are not normalised, but they
 * end in '>' and begin with '<', which never compose or reorder). */
static void test_round_trip(void)
{
    lines_t texts;
    if (read_lines(data_path("tokenizer_corpus.jsonl"), &texts)) {
        CHECK(!"corpus readable");
        return;
    }
    size_t bad = 0;
    for (size_t i = 0; i < texts.n; i++) {
        sdc_error_t err = {0};
        char *s, *back = NULL;
        size_t len, nback = 0, n = 0;
        int32_t *ids = NULL;
        if (sdc_jsonstr_decode(texts.lines[i], texts.lens[i], &s, &len, &err) != SDC_OK)
            continue;
        utf8proc_uint8_t *norm = NULL;
        utf8proc_ssize_t nn = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len,
                                           &norm, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        int ok = nn >= 0 && sdc_bpe_encode(qwen, s, len, &ids, &n, &err) == SDC_OK &&
                 sdc_bpe_decode(qwen, ids, n, 0, &back, &nback, &err) == SDC_OK &&
                 nback == (size_t)nn && memcmp(back, norm, nback) == 0;
        if (!ok && !bad++)
            fprintf(stderr, "  round trip differs on corpus line %zu: %.200s -> %.200s\n", i + 1,
                    texts.lines[i], back ? back : err.msg);
        free(norm);
        free(ids);
        free(back);
        free(s);
    }
    CHECK_EQ_INT(bad, 0);
    free_lines(&texts);
}

/* --- behaviour ----------------------------------------------------------- */

static int encode_eq(sdc_bpe_t *tok, const char *s, size_t len, const int32_t *want, size_t n)
{
    sdc_error_t err = {0};
    int32_t *ids = NULL;
    size_t got = 0;
    if (sdc_bpe_encode(tok, s, len, &ids, &got, &err) != SDC_OK) {
        fprintf(stderr, "  encode failed: %s\n", err.msg);
        return 0;
    }
    int same = got == n && (n == 0 || memcmp(ids, want, n * sizeof(int32_t)) == 0);
    if (!same) {
        print_ids("got ", ids, got);
        print_ids("want", want, n);
    }
    free(ids);
    return same;
}

static void test_byte_map(void)
{
    /* GPT-2's bytes_to_unicode, built the way its Python does. */
    uint32_t map[256];
    int taken[256] = {0};
    for (int b = 0; b < 256; b++)
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) {
            map[b] = (uint32_t)b;
            taken[b] = 1;
        }
    uint32_t next = 256;
    for (int b = 0; b < 256; b++)
        if (!taken[b])
            map[b] = next++;
    for (int b = 0; b < 256; b++) {
        CHECK_EQ_INT(bpe_byte_char((unsigned)b), map[b]);
        CHECK_EQ_INT(bpe_char_byte(map[b]), b);
    }
    CHECK_EQ_INT(bpe_char_byte(0x20), -1);
    CHECK_EQ_INT(bpe_char_byte(0x144), -1);
    CHECK_EQ_INT(sdc_bpe_token_id(qwen, "\xc4\xa0"), 220); /* "Ġ" is the space byte */
}

static void test_special_tokens(void)
{
    CHECK_EQ_INT(sdc_bpe_vocab_size(qwen), 151665);
    CHECK_EQ_INT(sdc_bpe_token_id(qwen, "<|endoftext|>"), 151643);
    CHECK_EQ_INT(sdc_bpe_token_id(qwen, "<|im_start|>"), 151644);
    CHECK_EQ_INT(sdc_bpe_token_id(qwen, "<|im_end|>"), 151645);
    CHECK_EQ_INT(sdc_bpe_token_id(qwen, "<|vision_start|>"), 151652);
    CHECK_EQ_INT(sdc_bpe_token_id(qwen, "<|image_pad|>"), 151655);
    CHECK_EQ_INT(sdc_bpe_token_id(qwen, "<|file_sep|>"), 151664);
    CHECK_EQ_INT(sdc_bpe_token_id(qwen, "<think>"), -1); /* Qwen3 only */
    CHECK_EQ_INT(sdc_bpe_token_id(qwen, "hello"), 14990);
    CHECK_EQ_INT(sdc_bpe_token_id(qwen, "nonexistent token"), -1);
    CHECK(sdc_bpe_is_special(qwen, 151644));
    CHECK(!sdc_bpe_is_special(qwen, 151657)); /* <tool_call> is added, not special */
    CHECK(!sdc_bpe_is_special(qwen, 14990));
    CHECK(!sdc_bpe_is_special(qwen, -1));

    const char *chat = "<|im_start|>user\nhello<|im_end|>";
    const int32_t want[] = {151644, 872, 198, 14990, 151645};
    CHECK(encode_eq(qwen, chat, strlen(chat), want, 5));
    /* Partial tokens are text. */
    const int32_t partial[] = {27, 91, 318, 4906, 91};
    CHECK(encode_eq(qwen, "<|im_start|", 11, partial, 5));

    sdc_error_t err = {0};
    char *text = NULL;
    size_t len = 0;
    CHECK(sdc_bpe_decode(qwen, want, 5, 1, &text, &len, &err) == SDC_OK);
    CHECK(text && strcmp(text, "user\nhello") == 0);
    free(text);
    CHECK(sdc_bpe_decode(qwen, want, 5, 0, &text, &len, &err) == SDC_OK);
    CHECK(text && strcmp(text, chat) == 0 && len == strlen(chat));
    free(text);
}

/* The tiny tokenizer's added tokens use lstrip, rstrip, single_word,
 * normalized and special; its goldens also cover split_special_tokens. */
static void test_added_token_flags(void)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/tiny-bpe-tokenizer", test_data_dir());
    sdc_error_t err = {0};
    sdc_bpe_t *tok = NULL, *split = NULL;
    CHECK_MSG(sdc_bpe_load(dir, &tok, &err) == SDC_OK, "%s", err.msg);
    /* Same files plus tokenizer_config.json asking to split special tokens. */
    const char *sdir = tmp_dir("tiny-split");
    char src[1200], dst[600];
    snprintf(src, sizeof(src), "cp %s/tokenizer.json %s/", dir, sdir);
    CHECK(system(src) == 0);
    snprintf(dst, sizeof(dst), "%s/tokenizer_config.json", sdir);
    CHECK(write_file(dst, "{\"split_special_tokens\": true}") == 0);
    CHECK_MSG(sdc_bpe_load(sdir, &split, &err) == SDC_OK, "%s", err.msg);
    lines_t cases;
    if (!tok || !split || read_lines(data_path("tokenizer_flags.jsonl"), &cases)) {
        CHECK(!"flags tokenizer and goldens available");
        sdc_bpe_free(tok);
        sdc_bpe_free(split);
        return;
    }
    CHECK(cases.n >= 30);
    for (size_t i = 0; i < cases.n; i++) {
        cJSON *o = cJSON_Parse(cases.lines[i]);
        const char *text = cJSON_GetStringValue(cJSON_GetObjectItem(o, "text"));
        int32_t *want, *want_split;
        long n = parse_ids(cJSON_GetObjectItem(o, "ids"), &want);
        long ns = parse_ids(cJSON_GetObjectItem(o, "ids_split_special"), &want_split);
        CHECK_MSG(text && n >= 0 && encode_eq(tok, text, strlen(text), want, (size_t)n),
                  "flags case %zu: %s", i + 1, cases.lines[i]);
        CHECK_MSG(text && ns >= 0 && encode_eq(split, text, strlen(text), want_split, (size_t)ns),
                  "flags case %zu (split_special_tokens): %s", i + 1, cases.lines[i]);
        free(want);
        free(want_split);
        cJSON_Delete(o);
    }
    free_lines(&cases);
    sdc_bpe_free(tok);
    sdc_bpe_free(split);
}

static int hex_bytes(const char *hex, char *out)
{
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (char)v;
    }
    return (int)n;
}

static void test_invalid_utf8(void)
{
    lines_t cases;
    if (read_lines(data_path("tokenizer_invalid_utf8.jsonl"), &cases)) {
        CHECK(!"invalid UTF-8 goldens readable");
        return;
    }
    CHECK(cases.n >= 50);
    size_t ok = 0;
    for (size_t i = 0; i < cases.n; i++) {
        cJSON *o = cJSON_Parse(cases.lines[i]);
        const char *hex = cJSON_GetStringValue(cJSON_GetObjectItem(o, "hex"));
        char bytes[4096];
        int nb = hex ? hex_bytes(hex, bytes) : -1;
        int32_t *want;
        long n = parse_ids(cJSON_GetObjectItem(o, "ids"), &want);
        if (nb >= 0 && n >= 0 && encode_eq(qwen, bytes, (size_t)nb, want, (size_t)n))
            ok++;
        else
            fprintf(stderr, "  invalid UTF-8 case %zu differs: %s\n", i + 1, cases.lines[i]);
        free(want);
        cJSON_Delete(o);
    }
    CHECK_EQ_INT(ok, cases.n);
    free_lines(&cases);

    /* Same ids as the U+FFFD text; the decode is that text. */
    const char bad[] = "a\xff\xc0\x80z";
    const char fixed[] = "a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdz";
    sdc_error_t err = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(sdc_bpe_encode(qwen, bad, sizeof(bad) - 1, &ids, &n, &err) == SDC_OK);
    CHECK(encode_eq(qwen, fixed, sizeof(fixed) - 1, ids, n));
    char *text = NULL;
    size_t len = 0;
    CHECK(sdc_bpe_decode(qwen, ids, n, 0, &text, &len, &err) == SDC_OK);
    CHECK(text && len == sizeof(fixed) - 1 && memcmp(text, fixed, len) == 0);
    free(text);
    free(ids);

    /* Decoding half a character gives U+FFFD, like HF: "ä¸" is the token of
     * the bytes E4 B8, the first two of "中" (E4 B8 AD). */
    int32_t half = sdc_bpe_token_id(qwen, "\xc3\xa4\xc2\xb8");
    CHECK_EQ_INT(half, 3490);
    CHECK(half >= 0);
    CHECK(sdc_bpe_decode(qwen, &half, 1, 0, &text, &len, &err) == SDC_OK);
    CHECK(text && strcmp(text, "\xef\xbf\xbd") == 0);
    free(text);
}

static void test_nul_and_empty(void)
{
    sdc_error_t err = {0};
    int32_t *ids = (int32_t *)1;
    size_t n = 99;
    CHECK(sdc_bpe_encode(qwen, "", 0, &ids, &n, &err) == SDC_OK);
    CHECK(ids == NULL && n == 0);
    CHECK(sdc_bpe_encode(qwen, NULL, 0, &ids, &n, &err) == SDC_OK);
    CHECK(sdc_bpe_encode(qwen, NULL, 3, &ids, &n, &err) == SDC_ERR_INVALID_ARG);
    char *text = NULL;
    size_t len = 5;
    CHECK(sdc_bpe_decode(qwen, NULL, 0, 0, &text, &len, &err) == SDC_OK);
    CHECK(text && text[0] == '\0' && len == 0);
    free(text);

    /* NUL is an ordinary character: byte 0's token "Ā" (188); HF gives
     * [64, 188, 65, 188, 188]. */
    const char s[] = "a\0b\0\0";
    const int32_t want[] = {64, 188, 65, 188, 188};
    CHECK(encode_eq(qwen, s, 5, want, 5));
    CHECK(sdc_bpe_encode(qwen, s, 5, &ids, &n, &err) == SDC_OK);
    CHECK(sdc_bpe_decode(qwen, ids, n, 0, &text, &len, &err) == SDC_OK);
    CHECK(len == 5 && memcmp(text, s, 5) == 0);
    free(text);
    free(ids);

    /* Ids that name no token are errors naming the position. */
    const int32_t bad[] = {64, 151665};
    CHECK(sdc_bpe_decode(qwen, bad, 2, 0, &text, &len, &err) == SDC_ERR_RANGE);
    CHECK(strstr(err.msg, "151665") && strstr(err.msg, "position 1"));
    const int32_t neg[] = {-1};
    CHECK(sdc_bpe_decode(qwen, neg, 1, 0, &text, &len, &err) == SDC_ERR_RANGE);
}

/* One megabyte of a kind of text: encodes within the bound and decodes back. */
static void megabyte_case(const char *label, const char *unit, double limit_s)
{
    size_t ul = strlen(unit), n = (1u << 20) / ul * ul;
    char *s = malloc(n + 1);
    for (size_t i = 0; i < n; i += ul)
        memcpy(s + i, unit, ul);
    s[n] = '\0';
    sdc_error_t err = {0};
    int32_t *ids = NULL;
    size_t nid = 0;
    double t0 = sdc_now();
    sdc_status_t st = sdc_bpe_encode(qwen, s, n, &ids, &nid, &err);
    double dt = sdc_now() - t0;
    CHECK_MSG(st == SDC_OK, "%s: %s", label, err.msg);
    CHECK_MSG(dt < limit_s, "%s: 1 MB took %.2f s (limit %.0f s)", label, dt, limit_s);
    fprintf(stderr, "  1 MB %s: %zu ids in %.3f s\n", label, nid, dt);
    char *back = NULL;
    size_t nback = 0;
    CHECK(sdc_bpe_decode(qwen, ids, nid, 0, &back, &nback, &err) == SDC_OK);
    CHECK_MSG(nback == n && memcmp(back, s, n) == 0, "%s: round trip", label);
    free(back);
    free(ids);
    free(s);
}

static void test_megabyte(void)
{
    /* Generous bounds: sanitizer builds run several times slower. */
    megabyte_case("mixed text",
                  "A cat holding a sign that says \"hello world\", 2024. "
                  "一个身穿唐朝服饰的女子，站在盛开的樱花树下。\n",
                  20.0);
    megabyte_case("one letter run", "a", 20.0);
    megabyte_case("one space run", " ", 20.0);
    megabyte_case("digits", "0123456789", 20.0);
    megabyte_case("newlines and spaces", " \n\t ", 20.0);
}

/* --- bad tokenizer directories ------------------------------------------------ */

static void expect_load_error(const char *name, const char *tokenizer_json,
                              sdc_status_t want, const char *msg_part)
{
    const char *dir = tmp_dir(name);
    char path[600];
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    if (tokenizer_json)
        CHECK(write_file(path, tokenizer_json) == 0);
    sdc_error_t err = {0};
    sdc_bpe_t *tok = (sdc_bpe_t *)1;
    sdc_status_t st = sdc_bpe_load(dir, &tok, &err);
    CHECK_MSG(st == want, "%s: status %s, want %s (%s)", name, sdc_status_str(st),
              sdc_status_str(want), err.msg);
    CHECK(tok == NULL);
    CHECK_MSG(strstr(err.msg, msg_part) != NULL, "%s: message '%s' lacks '%s'", name, err.msg,
              msg_part);
}

/* A valid small tokenizer.json with one part replaced. */
static char *tiny_json(const char *model, const char *pre, const char *added)
{
    static char buf[8192];
    snprintf(buf, sizeof(buf),
             "{\"added_tokens\": [%s], \"normalizer\": {\"type\": \"NFC\"},"
             " \"pre_tokenizer\": %s,"
             " \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
             "\"use_regex\": false},"
             " \"model\": %s}",
             added ? added : "",
             pre ? pre
                 : "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
                   "\"pattern\": {\"Regex\": \"\\\\s+|\\\\S+\"}, \"behavior\": \"Isolated\", "
                   "\"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                   "\"use_regex\": false}]}",
             model ? model
                   : "{\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, "
                     "\"merges\": [[\"a\", \"b\"]]}");
    return buf;
}

static void test_bad_files(void)
{
    sdc_error_t err = {0};
    sdc_bpe_t *tok = (sdc_bpe_t *)1;
    CHECK(sdc_bpe_load("/nonexistent/tokenizer", &tok, &err) == SDC_ERR_NOT_FOUND);
    CHECK(tok == NULL && strstr(err.msg, "/nonexistent/tokenizer"));

    expect_load_error("empty_dir", NULL, SDC_ERR_NOT_FOUND, "no tokenizer.json");
    expect_load_error("broken_json", "{\"model\": {\"type\": \"BPE\",", SDC_ERR_FORMAT,
                      "tokenizer.json: invalid JSON");
    expect_load_error("not_object", "[1, 2]", SDC_ERR_FORMAT, "tokenizer.json");
    expect_load_error("wordpiece",
                      tiny_json("{\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}", NULL, NULL),
                      SDC_ERR_UNSUPPORTED, "'WordPiece' is not supported");
    expect_load_error("unknown_merge_token",
                      tiny_json("{\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                                "\"merges\": [[\"a\", \"zz\"]]}",
                                NULL, NULL),
                      SDC_ERR_FORMAT, "'zz' is not in the vocabulary");
    expect_load_error("merged_token_missing",
                      tiny_json("{\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                                "\"merges\": [\"a b\"]}",
                                NULL, NULL),
                      SDC_ERR_FORMAT, "merged token is not in the vocabulary");
    expect_load_error("bad_merge_shape",
                      tiny_json("{\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]}",
                                NULL, NULL),
                      SDC_ERR_FORMAT, "merge 0 is not a pair");
    expect_load_error("bad_id",
                      tiny_json("{\"type\": \"BPE\", \"vocab\": {\"a\": -3}, \"merges\": []}", NULL,
                                NULL),
                      SDC_ERR_FORMAT, "no valid id");
    expect_load_error("huge_id",
                      tiny_json("{\"type\": \"BPE\", \"vocab\": {\"a\": 4000000000}, "
                                "\"merges\": []}",
                                NULL, NULL),
                      SDC_ERR_FORMAT, "no valid id");
    expect_load_error("dropout",
                      tiny_json("{\"type\": \"BPE\", \"dropout\": 0.1, \"vocab\": {\"a\": 0}, "
                                "\"merges\": []}",
                                NULL, NULL),
                      SDC_ERR_UNSUPPORTED, "dropout");
    expect_load_error("split_removed",
                      tiny_json(NULL,
                                "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
                                "\"pattern\": {\"Regex\": \" \"}, \"behavior\": \"Removed\"}, "
                                "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                                "\"use_regex\": false}]}",
                                NULL),
                      SDC_ERR_UNSUPPORTED, "behavior 'Removed'");
    expect_load_error("bad_regex",
                      tiny_json(NULL,
                                "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
                                "\"pattern\": {\"Regex\": \"(unclosed\"}, \"behavior\": "
                                "\"Isolated\"}, {\"type\": \"ByteLevel\", \"add_prefix_space\": "
                                "false, \"use_regex\": false}]}",
                                NULL),
                      SDC_ERR_FORMAT, "split pattern");
    expect_load_error("metaspace",
                      tiny_json(NULL, "{\"type\": \"Metaspace\"}", NULL), SDC_ERR_UNSUPPORTED,
                      "pre_tokenizer 'Metaspace'");
    expect_load_error("added_no_content",
                      tiny_json(NULL, NULL, "{\"id\": 3, \"special\": true}"), SDC_ERR_FORMAT,
                      "no content");

    /* vocab.json + merges.txt layout. */
    const char *dir = tmp_dir("txt_bad_line");
    char path[600];
    snprintf(path, sizeof(path), "%s/vocab.json", dir);
    write_file(path, "{\"a\": 0, \"b\": 1, \"ab\": 2}");
    snprintf(path, sizeof(path), "%s/merges.txt", dir);
    write_file(path, "#version: 0.2\na b\na b c\n");
    CHECK(sdc_bpe_load(dir, &tok, &err) == SDC_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "merges.txt: line 3"), "%s", err.msg);
    write_file(path, "#version: 0.2\na q\n");
    CHECK(sdc_bpe_load(dir, &tok, &err) == SDC_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "'q' is not in the vocabulary"), "%s", err.msg);
    write_file(path, "#version: 0.2\r\na b\r\n");
    CHECK_MSG(sdc_bpe_load(dir, &tok, &err) == SDC_OK, "%s", err.msg);
    sdc_bpe_free(tok);
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
    write_file(path, "{\"added_tokens_decoder\": ");
    CHECK(sdc_bpe_load(dir, &tok, &err) == SDC_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "tokenizer_config.json: invalid JSON"), "%s", err.msg);
    snprintf(path, sizeof(path), "%s/merges.txt", dir);
    unlink(path);
    CHECK(sdc_bpe_load(dir, &tok, &err) == SDC_ERR_NOT_FOUND);
    CHECK_MSG(strstr(err.msg, "vocab.json + merges.txt"), "%s", err.msg);
}

/* A minimal valid tokenizer.json loads and round-trips; added token ids
 * follow HF's numbering, not the file's. */
static void test_small_tokenizer(void)
{
    const char *dir = tmp_dir("small_ok");
    char path[600];
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    CHECK(write_file(path, tiny_json(NULL, NULL,
                                     "{\"id\": 77, \"content\": \"<x>\", \"special\": true}")) == 0);
    sdc_error_t err = {0};
    sdc_bpe_t *tok = NULL;
    CHECK_MSG(sdc_bpe_load(dir, &tok, &err) == SDC_OK, "%s", err.msg);
    if (!tok)
        return;
    CHECK_EQ_INT(sdc_bpe_token_id(tok, "<x>"), 3);
    CHECK_EQ_INT(sdc_bpe_vocab_size(tok), 4);
    /* Bytes without a token ('c', space) vanish, as in HF. */
    const int32_t want[] = {2, 3, 0, 1};
    CHECK(encode_eq(tok, "abc<x>a b", 9, want, 4));
    sdc_bpe_free(tok);
}

/* --- allocation failures ------------------------------------------------ */

/* Every allocation of the process (sdc, cJSON, PCRE2, utf8proc, stdio) goes
 * through these replacements, which glibc supports; allocation number
 * alloc_fail_at then fails. AddressSanitizer owns malloc itself, so its
 * builds run this case as a no-op. */
#if !defined(__SANITIZE_ADDRESS__)
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);

static long alloc_fail_at = -1; /* -1: none fails */
static long alloc_count;        /* allocations since the counter was reset */
static long alloc_live;         /* blocks allocated and not yet freed */

static int alloc_fails(void)
{
    return alloc_fail_at >= 0 && alloc_count++ == alloc_fail_at;
}

void *malloc(size_t n)
{
    void *p = alloc_fails() ? NULL : __libc_malloc(n);
    alloc_live += p != NULL;
    return p;
}

void *calloc(size_t n, size_t size)
{
    void *p = alloc_fails() ? NULL : __libc_calloc(n, size);
    alloc_live += p != NULL;
    return p;
}

void *realloc(void *p, size_t n)
{
    if (alloc_fails())
        return NULL;
    void *q = __libc_realloc(p, n);
    alloc_live += (q != NULL && p == NULL) - (q == NULL && p != NULL && n == 0);
    return q;
}

void free(void *p)
{
    alloc_live -= p != NULL;
    __libc_free(p);
}

/* Loads dir with each allocation failing in turn, until one load needs
 * fewer allocations than the failure point: every failure must be an error
 * with a message and leak nothing. */
static void load_under_failures(const char *dir, const char *label)
{
    long failures = 0;
    for (long k = 0;; k++) {
        long live0 = alloc_live;
        sdc_error_t err = {0};
        sdc_bpe_t *tok = NULL;
        alloc_count = 0;
        alloc_fail_at = k;
        sdc_status_t st = sdc_bpe_load(dir, &tok, &err);
        alloc_fail_at = -1;
        int done = alloc_count <= k;
        if (st == SDC_OK) {
            sdc_bpe_free(tok); /* a failure the loader can do without (the JIT) */
        } else {
            failures++;
            CHECK_MSG(tok == NULL && err.msg[0], "%s: allocation %ld: no clean error", label, k);
        }
        CHECK_MSG(alloc_live == live0, "%s: allocation %ld failing leaks %ld blocks", label, k,
                  alloc_live - live0);
        if (done) {
            CHECK_MSG(st == SDC_OK, "%s: loads without failures: %s", label, err.msg);
            break;
        }
    }
    fprintf(stderr, "  %s: %ld failing allocations, each a clean error\n", label, failures);
    CHECK(failures >= 20);
}

/* Encodes text with each allocation failing in turn on a fresh tokenizer:
 * an error with no ids, or the right ids; nothing leaks. */
static void encode_under_failures(const char *dir, const char *text, size_t len)
{
    sdc_error_t err = {0};
    sdc_bpe_t *tok = NULL;
    int32_t *want = NULL;
    size_t nwant = 0;
    long live0 = alloc_live, failures = 0;
    if (sdc_bpe_load(dir, &tok, &err) != SDC_OK ||
        sdc_bpe_encode(tok, text, len, &want, &nwant, &err) != SDC_OK) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    sdc_bpe_free(tok);
    for (long k = 0;; k++) {
        tok = NULL;
        if (sdc_bpe_load(dir, &tok, &err) != SDC_OK) {
            CHECK_MSG(0, "%s", err.msg);
            break;
        }
        int32_t *ids = NULL;
        size_t n = 0;
        alloc_count = 0;
        alloc_fail_at = k;
        sdc_status_t st = sdc_bpe_encode(tok, text, len, &ids, &n, &err);
        alloc_fail_at = -1;
        int done = alloc_count <= k;
        if (st == SDC_OK) {
            CHECK_MSG(n == nwant && memcmp(ids, want, n * sizeof(int32_t)) == 0,
                      "allocation %ld failing changed the ids", k);
        } else {
            failures++;
            CHECK_MSG(ids == NULL && n == 0 && err.msg[0], "allocation %ld: no clean error", k);
        }
        free(ids);
        sdc_bpe_free(tok);
        if (done)
            break;
    }
    free(want);
    CHECK_MSG(alloc_live == live0, "encoding under failures leaks %ld blocks", alloc_live - live0);
    fprintf(stderr, "  encode: %ld failing allocations, each a clean error\n", failures);
    CHECK(failures >= 3);
}
#endif

static void test_allocation_failures(void)
{
#if defined(__SANITIZE_ADDRESS__)
    fprintf(stderr, "  allocation failures: not run under AddressSanitizer\n");
#else
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/tiny-bpe-tokenizer", test_data_dir());
    load_under_failures(dir, "tokenizer.json");

    const char *txt = tmp_dir("alloc_txt");
    char path[600];
    snprintf(path, sizeof(path), "%s/vocab.json", txt);
    write_file(path, "{\"a\": 0, \"b\": 1, \"ab\": 2, \"\\u0120\": 3}");
    snprintf(path, sizeof(path), "%s/merges.txt", txt);
    write_file(path, "#version: 0.2\na b\n");
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", txt);
    write_file(path, "{\"added_tokens_decoder\": {\"4\": {\"content\": \"<x>\", "
                     "\"special\": true}, \"5\": {\"content\": \"\u00c5\", "
                     "\"normalized\": true}}}");
    load_under_failures(txt, "vocab.json + merges.txt");

    /* Raw and normalised added tokens, NFC, invalid UTF-8, a long word. */
    char text[600];
    int n = snprintf(text, sizeof(text), "hello <mask> world \xe2\x84\xab A\xcc\x8a [END]  "
                                         "word \xff xx ");
    memset(text + n, 'x', 300);
    encode_under_failures(dir, text, (size_t)n + 300);
#endif
}

int main(void)
{
    snprintf(tmp_root, sizeof(tmp_root), "/tmp/sdc_test_tokenizer_XXXXXX");
    if (!mkdtemp(tmp_root)) {
        perror("mkdtemp");
        return 1;
    }
    sdc_error_t err = {0};
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/" QWEN_DIR_NAME, test_data_dir());
    double t0 = sdc_now();
    if (sdc_bpe_load(dir, &qwen, &err) != SDC_OK) {
        fprintf(stderr, "cannot load %s: %s\n", dir, err.msg);
        printf("FAIL load_qwen\n");
        return 1;
    }
    fprintf(stderr, "  loaded %s in %.3f s\n", dir, sdc_now() - t0);
    RUN(test_byte_map);
    RUN(test_corpus_vocab_merges);
    RUN(test_corpus_tokenizer_json);
    RUN(test_round_trip);
    RUN(test_special_tokens);
    RUN(test_added_token_flags);
    RUN(test_invalid_utf8);
    RUN(test_nul_and_empty);
    RUN(test_megabyte);
    RUN(test_bad_files);
    RUN(test_small_tokenizer);
    RUN(test_allocation_failures);
    sdc_bpe_free(qwen);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0)
        fprintf(stderr, "  could not remove %s\n", tmp_root);
    TEST_EXIT();
}
