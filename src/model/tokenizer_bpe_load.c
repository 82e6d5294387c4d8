/*
 * tokenizer_bpe_load.c: reads a Qwen2-family tokenizer directory into the
 * tables of tokenizer_bpe_internal.h, and rejects, naming the file and the
 * setting, anything the encoder would not reproduce exactly as HF
 * `tokenizers` does.
 *
 * Two layouts, as in HF: tokenizer.json (everything in one file), or
 * vocab.json + merges.txt (Qwen2Tokenizer's files; the normaliser and split
 * pattern are then Qwen2's, which transformers hard-codes for them too).
 * tokenizer_config.json is optional in both.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "common/config.h"
#include "common/utf8.h"
#include "tokenizer_bpe_internal.h"

/* tokenizer.json of large vocabularies reaches tens of MB; nothing real is
 * near this. */
#define TOKENIZER_FILE_MAX (256u << 20)

/* What transformers' Qwen2Tokenizer uses for vocab.json + merges.txt. */
static const char qwen2_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* White_Space, which is what \s means in Oniguruma (HF's regex engine). PCRE2
 * with UCP also counts U+180E, so \s is spelled out before compiling. */
static const char white_space_items[] =
    "\\t\\n\\x0B\\f\\r\\x20\\x85\\xA0\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}";

/* Everything the loader gathers before building the tables. */
typedef struct {
    const char *dir;
    char path[4096]; /* file being read, for messages */
    sdc_json_t tj, vj, cfg;
    int have_tj, have_cfg;
    char *merges_txt;
    size_t merges_txt_len;
    const char *pattern; /* points into tj or at qwen2_pattern */
    int pattern_literal;
    const cJSON *vocab;  /* object: spelling -> id */
    const cJSON *merges; /* tokenizer.json array, or NULL for merges.txt */
    const char *unk_token;
} bpe_loader_t;

static sdc_status_t set_path(bpe_loader_t *L, const char *name, sdc_error_t *err)
{
    int n = snprintf(L->path, sizeof(L->path), "%s/%s", L->dir, name);
    if (n < 0 || (size_t)n >= sizeof(L->path))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "%s: tokenizer directory path too long",
                             L->dir);
    return SDC_OK;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static sdc_status_t read_file(const char *path, char **buf, size_t *len, sdc_error_t *err)
{
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return sdc_error_set(err, errno == ENOENT ? SDC_ERR_NOT_FOUND : SDC_ERR_IO,
                             "%s: cannot open: %s", path, strerror(errno));
    sdc_status_t st = SDC_OK;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        st = sdc_error_set(err, SDC_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto err_close;
    }
    if (sb.st_size < 0 || (unsigned long long)sb.st_size > TOKENIZER_FILE_MAX) {
        st = sdc_error_set(err, SDC_ERR_RANGE, "%s: %lld bytes is larger than the %u MiB limit",
                           path, (long long)sb.st_size, TOKENIZER_FILE_MAX >> 20);
        goto err_close;
    }
    size_t n = (size_t)sb.st_size;
    char *b = malloc(n + 1);
    if (!b) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, n);
        goto err_close;
    }
    if (n && fread(b, 1, n, f) != n) {
        st = sdc_error_set(err, SDC_ERR_IO, "%s: short read", path);
        free(b);
        goto err_close;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
err_close:
    fclose(f);
    return st;
}

static sdc_status_t load_json(bpe_loader_t *L, const char *name, sdc_json_t *doc,
                              sdc_error_t *err)
{
    sdc_status_t st = set_path(L, name, err);
    if (st != SDC_OK)
        return st;
    char *text;
    size_t len;
    st = read_file(L->path, &text, &len, err);
    if (st != SDC_OK)
        return st;
    st = sdc_json_parse(doc, text, len, L->path, err);
    free(text);
    return st;
}

/* --- typed fields -------------------------------------------------------- */

/* Boolean member; absent or null gives def. */
static sdc_status_t get_bool(const bpe_loader_t *L, const cJSON *obj, const char *where,
                             const char *key, int def, int *out, sdc_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return SDC_OK;
    }
    if (!cJSON_IsBool(v))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: %s.%s must be true or false", L->path,
                             where, key);
    *out = cJSON_IsTrue(v);
    return SDC_OK;
}

/* String member; absent or null gives NULL. */
static sdc_status_t get_str(const bpe_loader_t *L, const cJSON *obj, const char *where,
                            const char *key, const char **out, sdc_error_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v))
        return SDC_OK;
    if (!cJSON_IsString(v))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: %s.%s must be a string", L->path, where,
                             key);
    *out = v->valuestring;
    return SDC_OK;
}

static const char *type_of(const cJSON *obj)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

/* A token id as JSON: a whole number in [0, BPE_MAX_IDS). */
static int json_id(const cJSON *v, int32_t *id)
{
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d < BPE_MAX_IDS) || d != (double)(int32_t)d)
        return -1;
    *id = (int32_t)d;
    return 0;
}

/* --- tokenizer.json settings ------------------------------------------- */

static sdc_status_t check_normalizer(bpe_loader_t *L, sdc_bpe_t *t, const cJSON *n,
                                     sdc_error_t *err)
{
    if (!n || cJSON_IsNull(n))
        return SDC_OK;
    const char *type = type_of(n);
    if (type && strcmp(type, "NFC") == 0) {
        t->nfc = 1;
        return SDC_OK;
    }
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        const cJSON *it;
        cJSON_ArrayForEach(it, items) {
            const char *ty = type_of(it);
            if (!ty || strcmp(ty, "NFC") != 0)
                return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                                     "%s: normalizer '%s' is not supported (only NFC)", L->path,
                                     ty ? ty : "?");
            t->nfc = 1;
        }
        return SDC_OK;
    }
    return sdc_error_set(err, SDC_ERR_UNSUPPORTED, "%s: normalizer '%s' is not supported (only NFC)",
                         L->path, type ? type : "?");
}

static sdc_status_t check_byte_level(bpe_loader_t *L, const cJSON *b, const char *where,
                                     sdc_error_t *err)
{
    const char *type = type_of(b);
    if (!type || strcmp(type, "ByteLevel") != 0)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: %s '%s' is not supported (want ByteLevel)", L->path, where,
                             type ? type : "?");
    int prefix, use_regex;
    sdc_status_t st = get_bool(L, b, where, "add_prefix_space", 1, &prefix, err);
    if (st == SDC_OK)
        st = get_bool(L, b, where, "use_regex", 1, &use_regex, err);
    if (st != SDC_OK)
        return st;
    if (prefix)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: %s.add_prefix_space = true is not supported", L->path, where);
    if (use_regex && strcmp(where, "pre_tokenizer") == 0)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: ByteLevel pre_tokenizer with use_regex = true is not supported "
                             "(Qwen2 splits with a Split pre-tokenizer)",
                             L->path);
    return SDC_OK;
}

static sdc_status_t check_split(bpe_loader_t *L, const cJSON *s, sdc_error_t *err)
{
    const char *behavior;
    int invert;
    sdc_status_t st = get_str(L, s, "Split", "behavior", &behavior, err);
    if (st == SDC_OK)
        st = get_bool(L, s, "Split", "invert", 0, &invert, err);
    if (st != SDC_OK)
        return st;
    if (!behavior || strcmp(behavior, "Isolated") != 0)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: Split behavior '%s' is not supported (only Isolated)", L->path,
                             behavior ? behavior : "(missing)");
    if (invert)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED, "%s: Split invert = true is not supported",
                             L->path);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(s, "pattern");
    const cJSON *re = cJSON_GetObjectItemCaseSensitive(p, "Regex");
    const cJSON *lit = cJSON_GetObjectItemCaseSensitive(p, "String");
    if (cJSON_IsString(re)) {
        L->pattern = re->valuestring;
    } else if (cJSON_IsString(lit)) {
        L->pattern = lit->valuestring;
        L->pattern_literal = 1;
    } else {
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "%s: Split.pattern must be {\"Regex\": ...} or {\"String\": ...}",
                             L->path);
    }
    if (!L->pattern[0])
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: Split.pattern is empty", L->path);
    return SDC_OK;
}

static sdc_status_t check_pre_tokenizer(bpe_loader_t *L, const cJSON *p, sdc_error_t *err)
{
    const char *type = p ? type_of(p) : NULL;
    const cJSON *items = type && strcmp(type, "Sequence") == 0
                             ? cJSON_GetObjectItemCaseSensitive(p, "pretokenizers")
                             : NULL;
    const char *t0 = cJSON_GetArraySize(items) == 2 ? type_of(cJSON_GetArrayItem(items, 0)) : NULL;
    if (!t0 || strcmp(t0, "Split") != 0)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: pre_tokenizer '%s' is not supported (want a Sequence of Split "
                             "and ByteLevel, as Qwen2)",
                             L->path, type ? type : "(missing)");
    sdc_status_t st = check_split(L, cJSON_GetArrayItem(items, 0), err);
    if (st != SDC_OK)
        return st;
    return check_byte_level(L, cJSON_GetArrayItem(items, 1), "pre_tokenizer", err);
}

static sdc_status_t check_model(bpe_loader_t *L, sdc_bpe_t *t, const cJSON *m, sdc_error_t *err)
{
    if (!cJSON_IsObject(m))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: no \"model\" object", L->path);
    const char *type = type_of(m);
    /* Old files leave BPE untagged; merges identify it. */
    if (type ? strcmp(type, "BPE") != 0 : !cJSON_GetObjectItemCaseSensitive(m, "merges"))
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: model type '%s' is not supported (only BPE)", L->path,
                             type ? type : "(missing)");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (dropout && !cJSON_IsNull(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0))
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED, "%s: BPE dropout is not supported",
                             L->path);
    const char *prefix, *suffix;
    int byte_fallback;
    sdc_status_t st = get_str(L, m, "model", "continuing_subword_prefix", &prefix, err);
    if (st == SDC_OK)
        st = get_str(L, m, "model", "end_of_word_suffix", &suffix, err);
    if (st == SDC_OK)
        st = get_bool(L, m, "model", "byte_fallback", 0, &byte_fallback, err);
    if (st == SDC_OK)
        st = get_bool(L, m, "model", "fuse_unk", 0, &t->fuse_unk, err);
    if (st == SDC_OK)
        st = get_bool(L, m, "model", "ignore_merges", 0, &t->ignore_merges, err);
    if (st == SDC_OK)
        st = get_str(L, m, "model", "unk_token", &L->unk_token, err);
    if (st != SDC_OK)
        return st;
    if ((prefix && prefix[0]) || (suffix && suffix[0]))
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "%s: continuing_subword_prefix / end_of_word_suffix are not supported",
                             L->path);
    if (byte_fallback)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED, "%s: byte_fallback is not supported",
                             L->path);
    L->vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab");
    L->merges = cJSON_GetObjectItemCaseSensitive(m, "merges");
    if (!cJSON_IsObject(L->vocab))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: model.vocab must be an object", L->path);
    if (!cJSON_IsArray(L->merges))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: model.merges must be an array", L->path);
    return SDC_OK;
}

static sdc_status_t read_tokenizer_json(bpe_loader_t *L, sdc_bpe_t *t, sdc_error_t *err)
{
    sdc_status_t st = load_json(L, "tokenizer.json", &L->tj, err);
    if (st != SDC_OK)
        return st;
    L->have_tj = 1;
    const cJSON *root = L->tj.root;
    st = check_model(L, t, cJSON_GetObjectItemCaseSensitive(root, "model"), err);
    if (st == SDC_OK)
        st = check_normalizer(L, t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), err);
    if (st == SDC_OK)
        st = check_pre_tokenizer(L, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), err);
    if (st == SDC_OK) {
        const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
        st = dec && !cJSON_IsNull(dec) ? check_byte_level(L, dec, "decoder", err)
                                       : sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                                                       "%s: no decoder (want ByteLevel)", L->path);
    }
    return st;
}

static sdc_status_t read_vocab_merges(bpe_loader_t *L, sdc_bpe_t *t, sdc_error_t *err)
{
    sdc_status_t st = load_json(L, "vocab.json", &L->vj, err);
    if (st != SDC_OK)
        return st;
    L->vocab = L->vj.root;
    st = set_path(L, "merges.txt", err);
    if (st == SDC_OK)
        st = read_file(L->path, &L->merges_txt, &L->merges_txt_len, err);
    t->nfc = 1;
    L->pattern = qwen2_pattern;
    return st;
}

/* --- added tokens ------------------------------------------------------- */

/* Reads an added token's content and flags. id < 0 asks for HF's
 * assignment (tokenizer.json): the model's id when the content is in the
 * vocabulary, else the next id after it, whatever id the file states. */
static sdc_status_t add_token(bpe_loader_t *L, sdc_bpe_t *t, const cJSON *o, int32_t id,
                              size_t *cap, int32_t *next_id, sdc_error_t *err)
{
    const char *content;
    int special, lstrip, rstrip, single_word, normalized;
    sdc_status_t st = get_str(L, o, "added token", "content", &content, err);
    if (st == SDC_OK && !content)
        st = sdc_error_set(err, SDC_ERR_FORMAT, "%s: an added token has no content", L->path);
    if (st == SDC_OK)
        st = get_bool(L, o, "added token", "special", 0, &special, err);
    if (st == SDC_OK)
        st = get_bool(L, o, "added token", "lstrip", 0, &lstrip, err);
    if (st == SDC_OK)
        st = get_bool(L, o, "added token", "rstrip", 0, &rstrip, err);
    if (st == SDC_OK)
        st = get_bool(L, o, "added token", "single_word", 0, &single_word, err);
    /* HF: special tokens are not normalised unless asked. */
    if (st == SDC_OK)
        st = get_bool(L, o, "added token", "normalized", !special, &normalized, err);
    if (st != SDC_OK)
        return st;
    /* HF ignores empty added tokens. */
    if (!content[0])
        return SDC_OK;
    size_t len = strlen(content);
    if (sdc_utf8_valid_len(content, len) != len)
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: added token '%.40s' is not valid UTF-8",
                             L->path, content);
    bpe_added_t *a = NULL;
    for (size_t i = 0; i < t->n_added && !a; i++) {
        if (strcmp(t->added[i].content, content) == 0)
            a = &t->added[i]; /* a repeated content keeps its id, takes the new flags */
        else if (id >= 0 && t->added[i].id == id)
            return sdc_error_set(err, SDC_ERR_FORMAT, "%s: id %d is both '%.40s' and '%.40s'",
                                 L->path, id, t->added[i].content, content);
    }
    if (!a) {
        if (id < 0) {
            id = bpe_vocab_find(t, content, len);
            if (id < 0) {
                if (*next_id >= BPE_MAX_IDS)
                    return sdc_error_set(err, SDC_ERR_RANGE, "%s: more than %d ids", L->path,
                                         BPE_MAX_IDS);
                id = (*next_id)++;
            }
        }
        if (t->n_added == *cap) {
            size_t nc = *cap ? *cap * 2 : 32;
            bpe_added_t *na = realloc(t->added, nc * sizeof(*na));
            if (!na)
                return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", L->path);
            t->added = na;
            *cap = nc;
        }
        a = &t->added[t->n_added];
        memset(a, 0, sizeof(*a));
        a->content = malloc(len + 1);
        if (!a->content)
            return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", L->path);
        memcpy(a->content, content, len + 1);
        a->len = len;
        a->id = id;
        t->n_added++;
    }
    a->special = (uint8_t)special;
    a->lstrip = (uint8_t)lstrip;
    a->rstrip = (uint8_t)rstrip;
    a->single_word = (uint8_t)single_word;
    a->normalized = (uint8_t)normalized;
    return SDC_OK;
}

/* tokenizer.json layout: its added_tokens, numbered as HF numbers them.
 * vocab.json layout: tokenizer_config.json's added_tokens_decoder, whose keys
 * are the ids (as transformers reads them). */
static sdc_status_t read_added_tokens(bpe_loader_t *L, sdc_bpe_t *t, int32_t vocab_count,
                                      sdc_error_t *err)
{
    size_t cap = 0;
    int32_t next_id = vocab_count;
    sdc_status_t st;
    if (L->have_tj) {
        st = set_path(L, "tokenizer.json", err);
        if (st != SDC_OK)
            return st;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(L->tj.root, "added_tokens");
        if (arr && !cJSON_IsNull(arr) && !cJSON_IsArray(arr))
            return sdc_error_set(err, SDC_ERR_FORMAT, "%s: added_tokens must be an array",
                                 L->path);
        const cJSON *o;
        cJSON_ArrayForEach(o, arr) {
            if (!cJSON_IsObject(o))
                return sdc_error_set(err, SDC_ERR_FORMAT,
                                     "%s: added_tokens entries must be objects", L->path);
            st = add_token(L, t, o, -1, &cap, &next_id, err);
            if (st != SDC_OK)
                return st;
        }
    }
    if (!L->have_cfg)
        return SDC_OK;
    st = set_path(L, "tokenizer_config.json", err);
    if (st != SDC_OK)
        return st;
    st = get_bool(L, L->cfg.root, "tokenizer_config", "split_special_tokens", 0,
                  &t->split_special, err);
    if (st != SDC_OK || L->have_tj)
        return st;
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(L->cfg.root, "added_tokens_decoder");
    if (dec && !cJSON_IsNull(dec) && !cJSON_IsObject(dec))
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: added_tokens_decoder must be an object",
                             L->path);
    const cJSON *o;
    cJSON_ArrayForEach(o, dec) {
        char *end;
        errno = 0;
        long id = strtol(o->string, &end, 10);
        if (errno || end == o->string || *end || id < 0 || id >= BPE_MAX_IDS)
            return sdc_error_set(err, SDC_ERR_FORMAT,
                                 "%s: added_tokens_decoder key '%.20s' is not a token id (0 .. %d)",
                                 L->path, o->string, BPE_MAX_IDS - 1);
        st = add_token(L, t, o, (int32_t)id, &cap, &next_id, err);
        if (st != SDC_OK)
            return st;
    }
    return SDC_OK;
}

/* NFC form of a normalized added token, which is what HF searches for. */
static sdc_status_t normalize_added(sdc_bpe_t *t, sdc_error_t *err)
{
    for (size_t i = 0; i < t->n_added; i++) {
        bpe_added_t *a = &t->added[i];
        a->match = a->content;
        a->match_len = a->len;
        if (!a->normalized || !t->nfc)
            continue;
        utf8proc_uint8_t *dst = NULL;
        utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)a->content,
                                          (utf8proc_ssize_t)a->len, &dst,
                                          UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (n < 0)
            return sdc_error_set(err, SDC_ERR_FORMAT, "added token %d: NFC failed: %s", a->id,
                                 utf8proc_errmsg(n));
        a->match = (char *)dst;
        a->match_len = (size_t)n;
    }
    return SDC_OK;
}

/* Matcher order: by first byte, then longest first (ties by id, so the
 * order does not depend on the file's). */
static int added_before(const bpe_added_t *a, const bpe_added_t *b)
{
    unsigned char fa = (unsigned char)a->match[0], fb = (unsigned char)b->match[0];
    if (fa != fb)
        return fa < fb;
    if (a->match_len != b->match_len)
        return a->match_len > b->match_len;
    return a->id < b->id;
}

static sdc_status_t build_matcher(sdc_bpe_t *t, bpe_matcher_t *m, int normalized,
                                  sdc_error_t *err)
{
    size_t n = 0;
    m->order = malloc((t->n_added ? t->n_added : 1) * sizeof(uint32_t));
    if (!m->order)
        return sdc_error_set(err, SDC_ERR_NOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].normalized == normalized && t->added[i].match_len)
            m->order[n++] = (uint32_t)i;
    /* Insertion sort: added tokens number tens, rarely thousands, and
     * qsort has no context argument to compare through t->added. */
    for (size_t i = 1; i < n; i++) {
        uint32_t x = m->order[i];
        size_t j = i;
        while (j > 0 && added_before(&t->added[x], &t->added[m->order[j - 1]])) {
            m->order[j] = m->order[j - 1];
            j--;
        }
        m->order[j] = x;
    }
    size_t j = 0;
    for (unsigned b = 0; b <= 256; b++) {
        while (b < 256 && j < n && (unsigned char)t->added[m->order[j]].match[0] < b)
            j++;
        m->first[b] = (uint32_t)(b < 256 ? j : n);
    }
    return SDC_OK;
}

/* --- vocabulary and merges --------------------------------------------- */

/* Sizes the per-id tables for the model vocabulary; *count gets its number
 * of entries (where HF starts numbering added tokens). */
static sdc_status_t alloc_tables(bpe_loader_t *L, sdc_bpe_t *t, int32_t *count,
                                 sdc_error_t *err)
{
    int32_t max_id = -1;
    size_t n_vocab = 0, pool = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, L->vocab) {
        int32_t id;
        if (json_id(v, &id) < 0)
            return sdc_error_set(err, SDC_ERR_FORMAT,
                                 "%s: vocab entry '%.40s' has no valid id (0 .. %d)", L->path,
                                 v->string, BPE_MAX_IDS - 1);
        if (id > max_id)
            max_id = id;
        n_vocab++;
        pool += strlen(v->string);
    }
    if (!n_vocab)
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: the vocabulary is empty", L->path);
    if (pool >= BPE_NO_SPAN)
        return sdc_error_set(err, SDC_ERR_RANGE, "%s: vocabulary text too large", L->path);
    *count = (int32_t)n_vocab;
    t->n_ids = max_id + 1;
    uint32_t slots = 1;
    while (slots < 2 * n_vocab)
        slots <<= 1;
    t->vocab_mask = slots - 1;
    t->spell_pool = malloc(pool + 1);
    t->spell = malloc((size_t)t->n_ids * sizeof(bpe_span_t));
    t->vocab_slots = calloc(slots, sizeof(uint32_t));
    if (!t->spell_pool || !t->spell || !t->vocab_slots)
        return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory for %d ids", L->path,
                             t->n_ids);
    for (int32_t i = 0; i < t->n_ids; i++) {
        t->spell[i].off = BPE_NO_SPAN;
        t->spell[i].len = 0;
    }
    return SDC_OK;
}

/* Widens the per-id tables to cover the added tokens. */
static sdc_status_t cover_added(sdc_bpe_t *t, sdc_error_t *err)
{
    int32_t n = t->n_ids;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id >= n)
            n = t->added[i].id + 1;
    bpe_span_t *sp = realloc(t->spell, (size_t)n * sizeof(bpe_span_t));
    if (!sp)
        return sdc_error_set(err, SDC_ERR_NOMEM, "tokenizer: out of memory for %d ids", n);
    t->spell = sp;
    for (int32_t i = t->n_ids; i < n; i++) {
        sp[i].off = BPE_NO_SPAN;
        sp[i].len = 0;
    }
    t->n_ids = n;
    t->special = calloc((size_t)n, 1);
    t->dec = malloc((size_t)n * sizeof(bpe_span_t));
    if (!t->special || !t->dec)
        return sdc_error_set(err, SDC_ERR_NOMEM, "tokenizer: out of memory for %d ids", n);
    return SDC_OK;
}

static sdc_status_t fill_vocab(bpe_loader_t *L, sdc_bpe_t *t, sdc_error_t *err)
{
    size_t off = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, L->vocab) {
        int32_t id = (int32_t)v->valuedouble;
        size_t len = strlen(v->string);
        if (t->spell[id].off != BPE_NO_SPAN)
            return sdc_error_set(err, SDC_ERR_FORMAT,
                                 "%s: vocab id %d is given to both '%.40s' and '%.40s'", L->path,
                                 id, t->spell_pool + t->spell[id].off, v->string);
        if (bpe_vocab_find(t, v->string, len) >= 0)
            return sdc_error_set(err, SDC_ERR_FORMAT, "%s: vocab entry '%.40s' appears twice",
                                 L->path, v->string);
        memcpy(t->spell_pool + off, v->string, len + 1);
        t->spell[id].off = (uint32_t)off;
        t->spell[id].len = (uint32_t)len;
        off += len;
        uint32_t i = (uint32_t)bpe_hash_bytes(v->string, len) & t->vocab_mask;
        while (t->vocab_slots[i])
            i = (i + 1) & t->vocab_mask;
        t->vocab_slots[i] = (uint32_t)id + 1;
    }
    for (unsigned b = 0; b < 256; b++) {
        char c[4];
        size_t n = sdc_utf8_put(bpe_byte_char(b), c);
        t->byte_id[b] = bpe_vocab_find(t, c, n);
    }
    t->unk_id = -1;
    if (L->unk_token) {
        t->unk_id = bpe_vocab_find(t, L->unk_token, strlen(L->unk_token));
        if (t->unk_id < 0)
            return sdc_error_set(err, SDC_ERR_FORMAT, "%s: unk_token '%.40s' is not in the vocabulary",
                                 L->path, L->unk_token);
    }
    return SDC_OK;
}

static sdc_status_t add_merge(bpe_loader_t *L, sdc_bpe_t *t, const char *a, size_t alen,
                              const char *b, size_t blen, uint32_t rank, const char *what,
                              size_t where, char **cat, size_t *cat_cap, sdc_error_t *err)
{
    int32_t ia = bpe_vocab_find(t, a, alen);
    int32_t ib = bpe_vocab_find(t, b, blen);
    if (ia < 0 || ib < 0) {
        const char *bad = ia < 0 ? a : b;
        size_t bad_len = ia < 0 ? alen : blen;
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "%s: %s %zu ('%.*s %.*s'): '%.*s' is not in the vocabulary", L->path,
                             what, where, (int)(alen > 40 ? 40 : alen), a,
                             (int)(blen > 40 ? 40 : blen), b, (int)(bad_len > 40 ? 40 : bad_len),
                             bad);
    }
    if (alen + blen > *cat_cap) {
        size_t nc = (alen + blen) * 2;
        char *nb = realloc(*cat, nc);
        if (!nb)
            return sdc_error_set(err, SDC_ERR_NOMEM, "%s: out of memory", L->path);
        *cat = nb;
        *cat_cap = nc;
    }
    memcpy(*cat, a, alen);
    memcpy(*cat + alen, b, blen);
    int32_t inew = bpe_vocab_find(t, *cat, alen + blen);
    if (inew < 0)
        return sdc_error_set(err, SDC_ERR_FORMAT,
                             "%s: %s %zu ('%.*s %.*s'): the merged token is not in the vocabulary",
                             L->path, what, where, (int)(alen > 40 ? 40 : alen), a,
                             (int)(blen > 40 ? 40 : blen), b);
    uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
    uint64_t i = bpe_mix64(key) & t->merge_mask;
    while (t->merges[i].key != BPE_EMPTY_KEY && t->merges[i].key != key)
        i = (i + 1) & t->merge_mask;
    /* A repeated pair keeps its last rank, as HF's map does. */
    t->merges[i].key = key;
    t->merges[i].rank = rank;
    t->merges[i].new_id = inew;
    return SDC_OK;
}

static sdc_status_t alloc_merges(sdc_bpe_t *t, size_t n, sdc_error_t *err)
{
    uint64_t slots = 1;
    while (slots < 2 * (uint64_t)n + 2)
        slots <<= 1;
    t->merge_mask = slots - 1;
    t->merges = malloc(slots * sizeof(bpe_merge_slot_t));
    if (!t->merges)
        return sdc_error_set(err, SDC_ERR_NOMEM, "tokenizer: out of memory for %zu merges", n);
    for (uint64_t i = 0; i < slots; i++)
        t->merges[i].key = BPE_EMPTY_KEY;
    return SDC_OK;
}

static sdc_status_t fill_merges_json(bpe_loader_t *L, sdc_bpe_t *t, sdc_error_t *err)
{
    size_t n = (size_t)cJSON_GetArraySize(L->merges);
    sdc_status_t st = alloc_merges(t, n, err);
    if (st != SDC_OK)
        return st;
    char *cat = NULL;
    size_t cat_cap = 0, idx = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, L->merges) {
        const char *a = NULL, *b = NULL;
        size_t alen = 0, blen = 0;
        if (cJSON_IsString(m)) {
            /* Older files write "a b". */
            const char *sp = strchr(m->valuestring, ' ');
            if (sp && !strchr(sp + 1, ' ')) {
                a = m->valuestring;
                alen = (size_t)(sp - a);
                b = sp + 1;
                blen = strlen(b);
            }
        } else if (cJSON_GetArraySize(m) == 2 && cJSON_IsString(cJSON_GetArrayItem(m, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 1))) {
            a = cJSON_GetArrayItem(m, 0)->valuestring;
            b = cJSON_GetArrayItem(m, 1)->valuestring;
            alen = strlen(a);
            blen = strlen(b);
        }
        if (!a) {
            st = sdc_error_set(err, SDC_ERR_FORMAT,
                               "%s: merge %zu is not a pair of tokens (\"a b\" or [\"a\", \"b\"])",
                               L->path, idx);
            break;
        }
        st = add_merge(L, t, a, alen, b, blen, (uint32_t)idx, "merge", idx, &cat, &cat_cap, err);
        if (st != SDC_OK)
            break;
        idx++;
    }
    free(cat);
    return st;
}

static sdc_status_t fill_merges_txt(bpe_loader_t *L, sdc_bpe_t *t, sdc_error_t *err)
{
    sdc_status_t st = set_path(L, "merges.txt", err);
    if (st != SDC_OK)
        return st;
    char *s = L->merges_txt;
    size_t len = L->merges_txt_len, lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += s[i] == '\n';
    st = alloc_merges(t, lines, err);
    if (st != SDC_OK)
        return st;
    char *cat = NULL;
    size_t cat_cap = 0, pos = 0, line_no = 0;
    uint32_t rank = 0;
    while (pos < len) {
        char *line = s + pos;
        char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos += n + (nl != NULL);
        line_no++;
        if (n && line[n - 1] == '\r')
            n--;
        if (!n || (n >= 8 && memcmp(line, "#version", 8) == 0))
            continue;
        char *sp = memchr(line, ' ', n);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - line)) || sp == line ||
            sp + 1 == line + n) {
            st = sdc_error_set(err, SDC_ERR_FORMAT,
                               "%s: line %zu: expected two tokens separated by one space",
                               L->path, line_no);
            break;
        }
        if (memchr(line, '\0', n)) {
            st = sdc_error_set(err, SDC_ERR_FORMAT, "%s: line %zu: NUL byte", L->path, line_no);
            break;
        }
        st = add_merge(L, t, line, (size_t)(sp - line), sp + 1, n - (size_t)(sp + 1 - line),
                       rank++, "line", line_no, &cat, &cat_cap, err);
        if (st != SDC_OK)
            break;
    }
    free(cat);
    return st;
}

/* Bytes each id decodes to, as HF's ByteLevel decoder: a token whose every
 * character is in the byte map gives those bytes, any other its UTF-8. */
static sdc_status_t build_decoder(sdc_bpe_t *t, sdc_error_t *err)
{
    size_t total = 0;
    for (int32_t id = 0; id < t->n_ids; id++)
        total += t->spell[id].len;
    for (size_t i = 0; i < t->n_added; i++)
        total += t->added[i].len;
    if (total >= BPE_NO_SPAN)
        return sdc_error_set(err, SDC_ERR_RANGE, "tokenizer: vocabulary text too large");
    t->dec_pool = malloc(total + 1);
    if (!t->dec_pool)
        return sdc_error_set(err, SDC_ERR_NOMEM, "tokenizer: out of memory");
    for (int32_t id = 0; id < t->n_ids; id++)
        t->dec[id].off = BPE_NO_SPAN;
    size_t off = 0;
    /* Added tokens first: HF looks an id up among them before the model. */
    for (int pass = 0; pass < 2; pass++) {
        size_t count = pass == 0 ? t->n_added : (size_t)t->n_ids;
        for (size_t k = 0; k < count; k++) {
            int32_t id;
            const char *s;
            size_t n;
            if (pass == 0) {
                id = t->added[k].id;
                s = t->added[k].content;
                n = t->added[k].len;
            } else {
                id = (int32_t)k;
                if (t->spell[id].off == BPE_NO_SPAN)
                    continue;
                s = t->spell_pool + t->spell[id].off;
                n = t->spell[id].len;
            }
            if (t->dec[id].off != BPE_NO_SPAN)
                continue;
            size_t start = off, i = 0;
            int mapped = 1;
            while (i < n) {
                int32_t cp;
                i += sdc_utf8_next((const unsigned char *)s + i, n - i, &cp);
                int b = cp < 0 ? -1 : bpe_char_byte((uint32_t)cp);
                if (b < 0) {
                    mapped = 0;
                    break;
                }
                t->dec_pool[off++] = (char)b;
            }
            if (!mapped) {
                off = start;
                memcpy(t->dec_pool + off, s, n);
                off += n;
            }
            t->dec[id].off = (uint32_t)start;
            t->dec[id].len = (uint32_t)(off - start);
        }
    }
    /* HF skips an id when its token's text is a special token's content. */
    for (size_t i = 0; i < t->n_added; i++) {
        if (!t->added[i].special)
            continue;
        t->special[t->added[i].id] = 1;
        int32_t same = bpe_vocab_find(t, t->added[i].content, t->added[i].len);
        if (same >= 0)
            t->special[same] = 1;
    }
    return SDC_OK;
}

/* --- pre-tokenizer regex ------------------------------------------------ */

/* Copies pattern with \s and \S replaced by White_Space classes (see
 * white_space_items). Inside a class only \s can be spelled out; \S there
 * keeps PCRE2's meaning. */
static char *translate_pattern(const char *p)
{
    size_t items = sizeof(white_space_items) - 1;
    size_t n = strlen(p), cap = n * (items + 4) + 1;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t o = 0;
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char e = p[i + 1];
            i++;
            if (e == 's' || (e == 'S' && !in_class)) {
                if (!in_class) {
                    out[o++] = '[';
                    if (e == 'S')
                        out[o++] = '^';
                }
                memcpy(out + o, white_space_items, items);
                o += items;
                if (!in_class)
                    out[o++] = ']';
            } else {
                out[o++] = '\\';
                out[o++] = e;
            }
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            out[o++] = c;
            /* A ']' right after '[' or '[^' is a literal. */
            if (i + 1 < n && p[i + 1] == '^')
                out[o++] = p[++i];
            if (i + 1 < n && p[i + 1] == ']')
                out[o++] = p[++i];
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && p[i + 1] == ':') {
            const char *end = strstr(p + i + 2, ":]");
            if (end) {
                size_t k = (size_t)(end + 2 - (p + i));
                memcpy(out + o, p + i, k);
                o += k;
                i += k - 1;
                continue;
            }
        }
        if (in_class && c == ']')
            in_class = 0;
        out[o++] = c;
    }
    out[o] = '\0';
    return out;
}

static sdc_status_t compile_regex(bpe_loader_t *L, sdc_bpe_t *t, sdc_error_t *err)
{
    char *pat = L->pattern_literal ? NULL : translate_pattern(L->pattern);
    if (!L->pattern_literal && !pat)
        return sdc_error_set(err, SDC_ERR_NOMEM, "tokenizer: out of memory");
    const char *use = pat ? pat : L->pattern;
    int code;
    PCRE2_SIZE at;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (L->pattern_literal ? PCRE2_LITERAL : 0);
    t->re = pcre2_compile((PCRE2_SPTR)use, PCRE2_ZERO_TERMINATED, opts, &code, &at, NULL);
    free(pat);
    if (!t->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof(msg));
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: split pattern: %s (at offset %zu)",
                             L->path, (const char *)msg, (size_t)at);
    }
    t->jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
    t->md = pcre2_match_data_create_from_pattern(t->re, NULL);
    t->mctx = pcre2_match_context_create(NULL);
    if (!t->md || !t->mctx)
        return sdc_error_set(err, SDC_ERR_NOMEM, "tokenizer: out of memory");
    if (t->jit) {
        /* Long runs of one class backtrack in the JIT's stack; 32 KB (the
         * default) is too small for megabyte inputs. */
        t->jit_stack = pcre2_jit_stack_create(64 << 10, 64 << 20, NULL);
        if (!t->jit_stack)
            return sdc_error_set(err, SDC_ERR_NOMEM, "tokenizer: out of memory");
        pcre2_jit_stack_assign(t->mctx, NULL, t->jit_stack);
    }
    return SDC_OK;
}

/* --- entry points ------------------------------------------------------ */

static sdc_status_t load(bpe_loader_t *L, sdc_bpe_t *t, sdc_error_t *err)
{
    struct stat sb;
    if (stat(L->dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return sdc_error_set(err, SDC_ERR_NOT_FOUND, "%s: tokenizer directory not found",
                             L->dir);
    sdc_status_t st = set_path(L, "tokenizer.json", err);
    if (st != SDC_OK)
        return st;
    if (file_exists(L->path)) {
        st = read_tokenizer_json(L, t, err);
    } else {
        char merges[sizeof(L->path)];
        st = set_path(L, "merges.txt", err);
        if (st != SDC_OK)
            return st;
        memcpy(merges, L->path, sizeof(merges));
        st = set_path(L, "vocab.json", err);
        if (st != SDC_OK)
            return st;
        if (!file_exists(L->path) || !file_exists(merges))
            return sdc_error_set(err, SDC_ERR_NOT_FOUND,
                                 "%s: no tokenizer.json, and no vocab.json + merges.txt", L->dir);
        st = read_vocab_merges(L, t, err);
    }
    if (st != SDC_OK)
        return st;
    st = set_path(L, "tokenizer_config.json", err);
    if (st == SDC_OK && file_exists(L->path)) {
        st = load_json(L, "tokenizer_config.json", &L->cfg, err);
        L->have_cfg = st == SDC_OK;
    }
    int32_t vocab_count = 0;
    if (st == SDC_OK)
        st = set_path(L, L->have_tj ? "tokenizer.json" : "vocab.json", err);
    if (st == SDC_OK)
        st = alloc_tables(L, t, &vocab_count, err);
    if (st == SDC_OK)
        st = fill_vocab(L, t, err);
    if (st == SDC_OK)
        st = read_added_tokens(L, t, vocab_count, err);
    if (st == SDC_OK)
        st = cover_added(t, err);
    if (st == SDC_OK)
        st = set_path(L, L->have_tj ? "tokenizer.json" : "merges.txt", err);
    if (st == SDC_OK)
        st = L->merges ? fill_merges_json(L, t, err) : fill_merges_txt(L, t, err);
    if (st == SDC_OK)
        st = build_decoder(t, err);
    if (st == SDC_OK)
        st = normalize_added(t, err);
    if (st == SDC_OK)
        st = build_matcher(t, &t->raw_match, 0, err);
    if (st == SDC_OK)
        st = build_matcher(t, &t->norm_match, 1, err);
    if (st == SDC_OK)
        st = set_path(L, L->have_tj ? "tokenizer.json" : "vocab.json", err);
    if (st == SDC_OK)
        st = compile_regex(L, t, err);
    if (st == SDC_OK) {
        t->cache = calloc(BPE_CACHE_SLOTS, sizeof(bpe_cache_slot_t));
        if (!t->cache)
            st = sdc_error_set(err, SDC_ERR_NOMEM, "tokenizer: out of memory");
    }
    return st;
}

sdc_status_t sdc_bpe_load(const char *dir, sdc_bpe_t **out, sdc_error_t *err)
{
    if (!out || !dir)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "sdc_bpe_load: NULL argument");
    *out = NULL;
    bpe_loader_t *L = calloc(1, sizeof(*L));
    sdc_bpe_t *t = calloc(1, sizeof(*t));
    sdc_status_t st;
    if (!L || !t) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "tokenizer: out of memory");
        goto err_free;
    }
    L->dir = dir;
    st = load(L, t, err);
    if (st != SDC_OK)
        goto err_free;
    sdc_json_free(&L->tj);
    sdc_json_free(&L->vj);
    sdc_json_free(&L->cfg);
    free(L->merges_txt);
    free(L);
    *out = t;
    return SDC_OK;

err_free:
    if (L) {
        sdc_json_free(&L->tj);
        sdc_json_free(&L->vj);
        sdc_json_free(&L->cfg);
        free(L->merges_txt);
    }
    free(L);
    sdc_bpe_free(t);
    return st;
}

void sdc_bpe_free(sdc_bpe_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_added; i++) {
        if (t->added[i].match != t->added[i].content)
            free(t->added[i].match);
        free(t->added[i].content);
    }
    free(t->added);
    free(t->raw_match.order);
    free(t->norm_match.order);
    free(t->spell_pool);
    free(t->spell);
    free(t->vocab_slots);
    free(t->dec_pool);
    free(t->dec);
    free(t->special);
    free(t->merges);
    pcre2_match_data_free(t->md);
    pcre2_match_context_free(t->mctx);
    pcre2_jit_stack_free(t->jit_stack);
    pcre2_code_free(t->re);
    free(t->sym);
    free(t->heap);
    free(t->spell_buf);
    free(t->cache);
    free(t->cache_keys);
    free(t->cache_ids);
    free(t);
}

int32_t sdc_bpe_token_id(const sdc_bpe_t *t, const char *token)
{
    if (!t || !token)
        return -1;
    size_t n = strlen(token);
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && memcmp(t->added[i].content, token, n) == 0)
            return t->added[i].id;
    return bpe_vocab_find(t, token, n);
}

int32_t sdc_bpe_vocab_size(const sdc_bpe_t *t)
{
    return t ? t->n_ids : 0;
}

int sdc_bpe_is_special(const sdc_bpe_t *t, int32_t id)
{
    return t && id >= 0 && id < t->n_ids && t->special[id];
}
