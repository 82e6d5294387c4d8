/*
 * tokenizer_bpe_internal.h: the tokenizer's tables, shared by the loader
 * (tokenizer_bpe_load.c) and the encoder/decoder (tokenizer_bpe.c). Not for
 * other modules: they use tokenizer_bpe.h.
 */
#ifndef SDC_TOKENIZER_BPE_INTERNAL_H
#define SDC_TOKENIZER_BPE_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>
#include <string.h>

#include "tokenizer_bpe.h"

/* Ids index dense arrays; a file claiming a larger id is rejected rather
 * than allowed to make us allocate gigabytes. */
#define BPE_MAX_IDS (1 << 24)

/* HF caches words shorter than 256 bytes, up to 10000 of them; the table
 * here holds up to half its slots and is emptied when full. */
#define BPE_CACHE_SLOTS 32768
#define BPE_CACHE_MAX_ENTRIES (BPE_CACHE_SLOTS / 2)
#define BPE_CACHE_MAX_KEY 255

#define BPE_NO_SPAN UINT32_MAX
#define BPE_EMPTY_KEY UINT64_MAX

typedef struct {
    uint32_t off, len; /* off == BPE_NO_SPAN: absent */
} bpe_span_t;

typedef struct {
    char *content;    /* as in the file */
    size_t len;
    char *match;      /* what is searched for: content, or NFC(content) when normalized */
    size_t match_len;
    int32_t id;
    uint8_t special, lstrip, rstrip, single_word, normalized;
} bpe_added_t;

/* Added tokens searched in one pass (the raw text, or the normalised text):
 * order[first[b] .. first[b + 1]) are the tokens starting with byte b,
 * longest first, so the first that matches is the longest; first[256] is the
 * number of tokens. */
typedef struct {
    uint32_t *order;
    uint32_t first[257];
} bpe_matcher_t;

typedef struct {
    uint64_t key; /* (left id << 32) | right id; BPE_EMPTY_KEY: free slot */
    uint32_t rank;
    int32_t new_id;
} bpe_merge_slot_t;

typedef struct {
    int32_t id;
    int32_t prev, next; /* -1 at the ends */
    uint32_t len;       /* bytes; 0 once merged into its left neighbour */
} bpe_sym_t;

typedef struct {
    uint32_t rank, pos;
    int32_t new_id;
} bpe_heap_t;

typedef struct {
    uint64_t hash;
    uint32_t key_off, key_len; /* key_len 0: free slot (words are never empty) */
    uint32_t ids_off, ids_n;
} bpe_cache_slot_t;

struct sdc_bpe {
    /* Vocabulary, by id (0 .. n_ids - 1). */
    int32_t n_ids;
    char *spell_pool;     /* byte-level spellings of the model's tokens */
    bpe_span_t *spell;    /* [n_ids] */
    uint32_t *vocab_slots; /* spelling hash: id + 1, 0 = free */
    uint32_t vocab_mask;
    char *dec_pool;       /* bytes each id decodes to */
    bpe_span_t *dec;      /* [n_ids] */
    uint8_t *special;     /* [n_ids] */
    int32_t byte_id[256]; /* id of each single byte's token, -1 if none */
    int32_t unk_id;       /* -1: unknown characters are dropped, as HF does */
    int fuse_unk;
    int ignore_merges;

    bpe_merge_slot_t *merges;
    uint64_t merge_mask;

    bpe_added_t *added;
    size_t n_added;
    bpe_matcher_t raw_match;  /* tokens with normalized = false */
    bpe_matcher_t norm_match; /* tokens with normalized = true */
    int split_special; /* tokenizer_config split_special_tokens */
    int nfc;

    pcre2_code *re;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    int jit;

    /* Encoder scratch and word cache (why encode is not reentrant). */
    bpe_sym_t *sym;
    size_t sym_cap;
    bpe_heap_t *heap;
    size_t heap_cap;
    char *spell_buf;
    size_t spell_buf_cap;
    bpe_cache_slot_t *cache;
    size_t cache_n;
    uint8_t *cache_keys;
    size_t cache_keys_len, cache_keys_cap;
    int32_t *cache_ids;
    size_t cache_ids_len, cache_ids_cap;
};

static inline uint64_t bpe_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static inline uint64_t bpe_hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    return bpe_mix64(h ^ w);
}

static inline const bpe_merge_slot_t *bpe_merge_find(const sdc_bpe_t *t, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint64_t i = bpe_mix64(key) & t->merge_mask;
    for (;;) {
        const bpe_merge_slot_t *s = &t->merges[i];
        if (s->key == key)
            return s;
        if (s->key == BPE_EMPTY_KEY)
            return NULL;
        i = (i + 1) & t->merge_mask;
    }
}

/* Id of the model token spelled s[0..n), or -1. */
static inline int32_t bpe_vocab_find(const sdc_bpe_t *t, const char *s, size_t n)
{
    if (!t->vocab_slots)
        return -1;
    uint32_t i = (uint32_t)bpe_hash_bytes(s, n) & t->vocab_mask;
    for (;;) {
        uint32_t v = t->vocab_slots[i];
        if (!v)
            return -1;
        const bpe_span_t *sp = &t->spell[v - 1];
        if (sp->len == n && memcmp(t->spell_pool + sp->off, s, n) == 0)
            return (int32_t)(v - 1);
        i = (i + 1) & t->vocab_mask;
    }
}

/* GPT-2's byte <-> character map (bytes_to_unicode): printable Latin-1 bytes
 * map to themselves, the other 68 to U+0100 onwards. */
static inline uint32_t bpe_byte_char(unsigned b)
{
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE))
        return b;
    unsigned n = 0; /* rank of b among the remapped bytes */
    if (b <= 0x20)
        n = b;
    else if (b == 0x7F)
        n = 33;
    else if (b <= 0xA0)
        n = 34 + (b - 0x80);
    else /* 0xAD */
        n = 67;
    return 0x100 + n;
}

/* Inverse of bpe_byte_char: the byte, or -1 for a character outside the map. */
static inline int bpe_char_byte(uint32_t c)
{
    if ((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))
        return (int)c;
    if (c < 0x100 || c > 0x143)
        return -1;
    unsigned n = c - 0x100;
    if (n <= 32)
        return (int)n;
    if (n == 33)
        return 0x7F;
    if (n <= 66)
        return (int)(0x80 + n - 34);
    return 0xAD;
}

#endif
