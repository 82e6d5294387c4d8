/*
 * tokenizer_bpe.c: encoding and decoding with a loaded byte-level BPE
 * tokenizer (tables in tokenizer_bpe_internal.h, loading in
 * tokenizer_bpe_load.c). Every step follows HF `tokenizers` (0.2x):
 * AddedVocabulary::extract_and_normalize, the Split pre-tokenizer, ByteLevel,
 * BPE::merge_word / Word::merge_all and the ByteLevel decoder, so ids match
 * it exactly; comments note where that costs something.
 *
 * The BPE runs on raw bytes: the byte-level characters are a bijection of the
 * 256 byte values, so looking up the id of each byte's character once at
 * load time is the same as HF spelling every word out.
 */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "common/utf8.h"
#include "tokenizer_bpe_internal.h"

typedef struct {
    int32_t *v;
    size_t n, cap;
} id_vec_t;

static sdc_status_t ids_reserve(id_vec_t *o, size_t more, sdc_error_t *err)
{
    if (o->n + more <= o->cap)
        return SDC_OK;
    size_t cap = o->cap ? o->cap : 64;
    while (cap < o->n + more)
        cap *= 2;
    int32_t *nv = realloc(o->v, cap * sizeof(*nv));
    if (!nv)
        return sdc_error_set(err, SDC_ERR_NOMEM, "tokenizer: out of memory for %zu ids", cap);
    o->v = nv;
    o->cap = cap;
    return SDC_OK;
}

static sdc_status_t ids_push(id_vec_t *o, int32_t id, sdc_error_t *err)
{
    if (o->n == o->cap) {
        sdc_status_t st = ids_reserve(o, 1, err);
        if (st != SDC_OK)
            return st;
    }
    o->v[o->n++] = id;
    return SDC_OK;
}

static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return p;
    size_t nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    void *np = realloc(p, nc * elem);
    if (np)
        *cap = nc;
    return np;
}

/* --- character classes -------------------------------------------------- */

static int is_white_space(int32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Rust regex's \w (HF checks single_word with it): Alphabetic, marks,
 * decimal digits, connector punctuation, joiners. Alphabetic is approximated
 * by letters, letter numbers and the circled/squared Latin letters. */
static int is_word_char(int32_t c)
{
    if (c < 0x80)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
               c == '_';
    if (c == 0x200C || c == 0x200D || (c >= 0x24B6 && c <= 0x24E9) ||
        (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) ||
        (c >= 0x1F170 && c <= 0x1F189))
        return 1;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return 0;
    }
}

/* Code point ending just before s[end] (end > 0; s is valid UTF-8). */
static int32_t char_before(const char *s, size_t end, size_t *start)
{
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    int32_t cp;
    sdc_utf8_next((const unsigned char *)s + i, end - i, &cp);
    *start = i;
    return cp;
}

/* --- NFC ------------------------------------------------------------------ */

/* Code points that NFC leaves alone whatever surrounds them: canonically
 * stable on their own, combining class 0, and never the second half of a
 * composition (checked against Python's unicodedata, Unicode 14). Text made
 * only of these skips libutf8proc, which is most English, Chinese, Japanese
 * and Korean text and emoji. */
static const struct {
    int32_t lo, hi;
} nfc_inert_ranges[] = {
    {0x0000, 0x02FF},   {0x0400, 0x0482},   {0x2010, 0x2027},   {0x2030, 0x205E},
    {0x2190, 0x2328},   {0x232B, 0x2ADB},   {0x2ADD, 0x2BFF},   {0x3000, 0x3029},
    {0x3030, 0x303F},   {0x3040, 0x3098},   {0x309B, 0x30FF},   {0x3400, 0x4DBF},
    {0x4E00, 0x9FFF},   {0xAC00, 0xD7A3},   {0xFF01, 0xFFEE},   {0x1F300, 0x1FAFF},
};

static int nfc_inert(int32_t c)
{
    size_t lo = 0, hi = sizeof(nfc_inert_ranges) / sizeof(nfc_inert_ranges[0]);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < nfc_inert_ranges[mid].lo)
            hi = mid;
        else if (c > nfc_inert_ranges[mid].hi)
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

/* NFC of s[0..n) (valid UTF-8). *out is s itself when nothing changes,
 * otherwise *owned (free it). */
static sdc_status_t nfc(const char *s, size_t n, const char **out, size_t *out_n, char **owned,
                        sdc_error_t *err)
{
    *owned = NULL;
    *out = s;
    *out_n = n;
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int32_t cp;
        size_t k = sdc_utf8_next(u + i, n - i, &cp);
        if (!nfc_inert(cp))
            break;
        i += k;
    }
    if (i == n)
        return SDC_OK;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t m =
        utf8proc_map(u, (utf8proc_ssize_t)n, &dst, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (m < 0)
        return sdc_error_set(err, m == UTF8PROC_ERROR_NOMEM ? SDC_ERR_NOMEM : SDC_ERR_INTERNAL,
                             "tokenizer: NFC normalisation failed: %s", utf8proc_errmsg(m));
    *owned = (char *)dst;
    *out = (const char *)dst;
    *out_n = (size_t)m;
    return SDC_OK;
}

/* --- BPE ------------------------------------------------------------------ */

static int heap_less(const bpe_heap_t *a, const bpe_heap_t *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(bpe_heap_t *h, size_t *n, bpe_heap_t x)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&x, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static bpe_heap_t heap_pop(bpe_heap_t *h, size_t *n)
{
    bpe_heap_t top = h[0];
    bpe_heap_t x = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c]))
            c++;
        if (!heap_less(&h[c], &x))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = x;
    return top;
}

static void push_merge(sdc_bpe_t *t, size_t *hn, int32_t a, int32_t b, uint32_t pos)
{
    const bpe_merge_slot_t *m = bpe_merge_find(t, a, b);
    if (m)
        heap_push(t->heap, hn, (bpe_heap_t){m->rank, pos, m->new_id});
}

/* One symbol per byte, as HF's merge_word makes one per byte-level
 * character; bytes without a token become unk, or vanish without one. */
static size_t word_symbols(sdc_bpe_t *t, const unsigned char *w, size_t n)
{
    size_t k = 0;
    int last_unk = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[w[i]];
        if (id < 0) {
            if (t->unk_id < 0)
                continue;
            if (last_unk && t->fuse_unk) {
                t->sym[k - 1].len++;
                continue;
            }
            id = t->unk_id;
        }
        last_unk = id == t->unk_id && t->byte_id[w[i]] < 0;
        t->sym[k] = (bpe_sym_t){id, (int32_t)k - 1, (int32_t)k + 1, 1};
        k++;
    }
    if (k)
        t->sym[k - 1].next = -1;
    return k;
}

/* Word::merge_all: repeatedly merge the lowest-ranked pair, leftmost first,
 * with stale queue entries recognised by the pair no longer giving the
 * queued result. */
static void merge_all(sdc_bpe_t *t, size_t nsym)
{
    bpe_sym_t *s = t->sym;
    size_t hn = 0;
    for (size_t i = 0; i + 1 < nsym; i++)
        push_merge(t, &hn, s[i].id, s[i + 1].id, (uint32_t)i);
    while (hn) {
        bpe_heap_t top = heap_pop(t->heap, &hn);
        bpe_sym_t *cur = &s[top.pos];
        if (cur->len == 0 || cur->next < 0)
            continue;
        bpe_sym_t right = s[cur->next];
        const bpe_merge_slot_t *m = bpe_merge_find(t, cur->id, right.id);
        if (!m || m->new_id != top.new_id)
            continue;
        s[cur->next].len = 0;
        cur->id = top.new_id;
        cur->len += right.len;
        cur->next = right.next;
        if (right.next >= 0)
            s[right.next].prev = (int32_t)top.pos;
        if (cur->prev >= 0)
            push_merge(t, &hn, s[cur->prev].id, cur->id, (uint32_t)cur->prev);
        if (cur->next >= 0)
            push_merge(t, &hn, cur->id, s[cur->next].id, top.pos);
    }
}

static bpe_cache_slot_t *cache_find(sdc_bpe_t *t, const unsigned char *w, size_t n, uint64_t h)
{
    size_t i = (size_t)h & (BPE_CACHE_SLOTS - 1);
    for (;;) {
        bpe_cache_slot_t *c = &t->cache[i];
        if (!c->key_len ||
            (c->hash == h && c->key_len == n && memcmp(t->cache_keys + c->key_off, w, n) == 0))
            return c;
        i = (i + 1) & (BPE_CACHE_SLOTS - 1);
    }
}

/* Remembers the ids of word w; a full cache starts over rather than evict. */
static void cache_put(sdc_bpe_t *t, const unsigned char *w, size_t n, uint64_t h,
                      const int32_t *ids, size_t nid)
{
    if (t->cache_n >= BPE_CACHE_MAX_ENTRIES) {
        memset(t->cache, 0, BPE_CACHE_SLOTS * sizeof(bpe_cache_slot_t));
        t->cache_n = 0;
        t->cache_keys_len = 0;
        t->cache_ids_len = 0;
    }
    uint8_t *keys = grow(t->cache_keys, &t->cache_keys_cap, t->cache_keys_len + n, 1);
    if (!keys)
        return; /* the cache is an optimisation; without memory, skip it */
    t->cache_keys = keys;
    int32_t *ids_store = grow(t->cache_ids, &t->cache_ids_cap, t->cache_ids_len + nid,
                              sizeof(int32_t));
    if (!ids_store)
        return;
    t->cache_ids = ids_store;
    bpe_cache_slot_t *c = cache_find(t, w, n, h);
    c->hash = h;
    c->key_off = (uint32_t)t->cache_keys_len;
    c->key_len = (uint32_t)n;
    c->ids_off = (uint32_t)t->cache_ids_len;
    c->ids_n = (uint32_t)nid;
    memcpy(t->cache_keys + t->cache_keys_len, w, n);
    memcpy(t->cache_ids + t->cache_ids_len, ids, nid * sizeof(int32_t));
    t->cache_keys_len += n;
    t->cache_ids_len += nid;
    t->cache_n++;
}

/* ignore_merges: a word that is itself a token is taken whole. */
static int32_t whole_word_id(sdc_bpe_t *t, const unsigned char *w, size_t n)
{
    char *buf = grow(t->spell_buf, &t->spell_buf_cap, 2 * n, 1);
    if (!buf)
        return -1;
    t->spell_buf = buf;
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        o += sdc_utf8_put(bpe_byte_char(w[i]), buf + o);
    return bpe_vocab_find(t, buf, o);
}

static sdc_status_t bpe_word(sdc_bpe_t *t, const unsigned char *w, size_t n, id_vec_t *out,
                             sdc_error_t *err)
{
    if (n == 1 && t->byte_id[w[0]] >= 0)
        return ids_push(out, t->byte_id[w[0]], err);
    if (t->ignore_merges) {
        int32_t id = whole_word_id(t, w, n);
        if (id >= 0)
            return ids_push(out, id, err);
    }
    uint64_t h = 0;
    bpe_cache_slot_t *hit = NULL;
    if (n <= BPE_CACHE_MAX_KEY) {
        h = bpe_hash_bytes(w, n);
        hit = cache_find(t, w, n, h);
        if (hit->key_len) {
            sdc_status_t st = ids_reserve(out, hit->ids_n, err);
            if (st != SDC_OK)
                return st;
            memcpy(out->v + out->n, t->cache_ids + hit->ids_off, hit->ids_n * sizeof(int32_t));
            out->n += hit->ids_n;
            return SDC_OK;
        }
    }
    bpe_sym_t *sym = grow(t->sym, &t->sym_cap, n, sizeof(bpe_sym_t));
    if (!sym)
        return sdc_error_set(err, SDC_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte word",
                             n);
    t->sym = sym;
    /* Each merge queues at most two pairs besides the n - 1 initial ones. */
    bpe_heap_t *heap = grow(t->heap, &t->heap_cap, 3 * n, sizeof(bpe_heap_t));
    if (!heap)
        return sdc_error_set(err, SDC_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte word",
                             n);
    t->heap = heap;
    size_t nsym = word_symbols(t, w, n);
    merge_all(t, nsym);
    size_t first = out->n;
    for (int32_t i = nsym ? 0 : -1; i >= 0; i = t->sym[i].next) {
        sdc_status_t st = ids_push(out, t->sym[i].id, err);
        if (st != SDC_OK)
            return st;
    }
    if (n <= BPE_CACHE_MAX_KEY)
        cache_put(t, w, n, h, out->v + first, out->n - first);
    return SDC_OK;
}

/* --- pre-tokenizer ---------------------------------------------------------- */

/* Split with behaviour Isolated: every regex match is a word, and so is every
 * gap between matches; ByteLevel(use_regex=false) then only maps bytes. */
static sdc_status_t split_words(sdc_bpe_t *t, const char *s, size_t n, id_vec_t *out,
                                sdc_error_t *err)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t pos = 0, prev = 0;
    sdc_status_t st;
    while (pos < n) {
        int rc = t->jit ? pcre2_jit_match(t->re, u, n, pos, 0, t->md, t->mctx)
                        : pcre2_match(t->re, u, n, pos, PCRE2_NO_UTF_CHECK, t->md, t->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof(msg));
            return sdc_error_set(err, SDC_ERR_INTERNAL,
                                 "tokenizer: split pattern failed at byte %zu: %s", pos,
                                 (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) {
            /* An empty match splits nothing; step over one character. */
            if (ms >= n)
                break;
            int32_t cp;
            pos = ms + sdc_utf8_next(u + ms, n - ms, &cp);
            continue;
        }
        if (ms > prev && (st = bpe_word(t, u + prev, ms - prev, out, err)) != SDC_OK)
            return st;
        if ((st = bpe_word(t, u + ms, me - ms, out, err)) != SDC_OK)
            return st;
        prev = pos = me;
    }
    if (prev < n)
        return bpe_word(t, u + prev, n - prev, out, err);
    return SDC_OK;
}

/* --- added tokens ----------------------------------------------------------- */

typedef sdc_status_t (*span_fn)(sdc_bpe_t *t, const char *s, size_t n, id_vec_t *out,
                                sdc_error_t *err);

static int single_word_ok(const char *s, size_t n, size_t start, size_t stop)
{
    size_t at;
    if (start > 0 && is_word_char(char_before(s, start, &at)))
        return 0;
    if (stop < n) {
        int32_t cp;
        sdc_utf8_next((const unsigned char *)s + stop, n - stop, &cp);
        if (is_word_char(cp))
            return 0;
    }
    return 1;
}

/* Finds the leftmost, then longest, token of m in s at or after pos. */
static const bpe_added_t *find_added(const sdc_bpe_t *t, const bpe_matcher_t *m, const char *s,
                                     size_t n, size_t pos, size_t *at)
{
    for (size_t i = pos; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        for (uint32_t k = m->first[b]; k < m->first[b + 1]; k++) {
            const bpe_added_t *a = &t->added[m->order[k]];
            if (a->match_len <= n - i && memcmp(s + i, a->match, a->match_len) == 0) {
                *at = i;
                return a;
            }
        }
    }
    return NULL;
}

/* AddedVocabulary::find_matches: cut the added tokens out of s and hand the
 * spans between them to rest. A match that is then discarded (special tokens
 * when split_special_tokens is set, single_word tokens inside a word) still
 * consumes its bytes, as HF's non-overlapping trie search does. */
static sdc_status_t split_added(sdc_bpe_t *t, const bpe_matcher_t *m, const char *s, size_t n,
                                span_fn rest, id_vec_t *out, sdc_error_t *err)
{
    if (!m->first[256])
        return rest(t, s, n, out, err);
    size_t done = 0, pos = 0, start;
    sdc_status_t st;
    const bpe_added_t *a;
    while (pos < n && (a = find_added(t, m, s, n, pos, &start)) != NULL) {
        size_t stop = start + a->match_len;
        pos = stop;
        if (t->split_special && a->special)
            continue;
        if (a->single_word && !single_word_ok(s, n, start, stop))
            continue;
        if (a->lstrip) {
            size_t ws = start, at;
            while (ws > 0 && is_white_space(char_before(s, ws, &at)))
                ws = at;
            start = ws > done ? ws : done;
        }
        if (a->rstrip) {
            while (stop < n) {
                int32_t cp;
                size_t k = sdc_utf8_next((const unsigned char *)s + stop, n - stop, &cp);
                if (!is_white_space(cp))
                    break;
                stop += k;
            }
        }
        if (done < start && (st = rest(t, s + done, start - done, out, err)) != SDC_OK)
            return st;
        if ((st = ids_push(out, a->id, err)) != SDC_OK)
            return st;
        done = stop;
    }
    if (done < n)
        return rest(t, s + done, n - done, out, err);
    return SDC_OK;
}

/* A span without raw added tokens: normalise, then look for the tokens that
 * match normalised text, then split into words. */
static sdc_status_t encode_span(sdc_bpe_t *t, const char *s, size_t n, id_vec_t *out,
                                sdc_error_t *err)
{
    const char *norm = s;
    size_t norm_n = n;
    char *owned = NULL;
    if (t->nfc) {
        sdc_status_t st = nfc(s, n, &norm, &norm_n, &owned, err);
        if (st != SDC_OK)
            return st;
    }
    sdc_status_t st = split_added(t, &t->norm_match, norm, norm_n, split_words, out, err);
    free(owned);
    return st;
}

sdc_status_t sdc_bpe_encode(sdc_bpe_t *t, const char *text, size_t len, int32_t **ids,
                            size_t *n, sdc_error_t *err)
{
    if (!t || !ids || !n || (!text && len))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "sdc_bpe_encode: NULL argument");
    *ids = NULL;
    *n = 0;
    if (!len)
        return SDC_OK;
    char *repaired = NULL;
    if (sdc_utf8_valid_len(text, len) != len) {
        sdc_status_t st = sdc_utf8_repair(text, len, &repaired, &len, err);
        if (st != SDC_OK)
            return st;
        text = repaired;
    }
    id_vec_t out = {0};
    /* Words average three to four bytes; start near the final size. */
    sdc_status_t st = ids_reserve(&out, len / 3 + 16, err);
    if (st == SDC_OK)
        st = split_added(t, &t->raw_match, text, len, encode_span, &out, err);
    free(repaired);
    if (st != SDC_OK) {
        free(out.v);
        return st;
    }
    if (!out.n) {
        free(out.v);
        return SDC_OK;
    }
    *ids = out.v;
    *n = out.n;
    return SDC_OK;
}

/* --- decoding ---------------------------------------------------------------- */

sdc_status_t sdc_bpe_decode(const sdc_bpe_t *t, const int32_t *ids, size_t n, int skip_special,
                            char **text, size_t *len, sdc_error_t *err)
{
    if (!t || !text || !len || (!ids && n))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "sdc_bpe_decode: NULL argument");
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || t->dec[id].off == BPE_NO_SPAN)
            return sdc_error_set(err, SDC_ERR_RANGE,
                                 "decode: id %d at position %zu is not a token (ids are 0 .. %d)",
                                 id, i, t->n_ids - 1);
        if (!(skip_special && t->special[id]))
            total += t->dec[id].len;
    }
    char *buf = malloc(total + 1);
    if (!buf)
        return sdc_error_set(err, SDC_ERR_NOMEM, "decode: out of memory for %zu bytes", total);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (skip_special && t->special[id])
            continue;
        memcpy(buf + o, t->dec_pool + t->dec[id].off, t->dec[id].len);
        o += t->dec[id].len;
    }
    buf[o] = '\0';
    /* Ids can end mid-character (a prefix of a longer text); HF replaces
     * such bytes with U+FFFD (String::from_utf8_lossy). */
    if (sdc_utf8_valid_len(buf, o) != o) {
        char *fixed;
        size_t fixed_len;
        sdc_status_t st = sdc_utf8_repair(buf, o, &fixed, &fixed_len, err);
        free(buf);
        if (st != SDC_OK)
            return st;
        buf = fixed;
        o = fixed_len;
    }
    *text = buf;
    *len = o;
    return SDC_OK;
}
