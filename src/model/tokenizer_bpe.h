/*
 * tokenizer_bpe.h: the byte-level BPE tokenizer of the Qwen2 / Qwen2.5 family
 * (the text encoder of HunyuanImage-2.1 is Qwen2.5-VL), giving the same ids
 * as HF `tokenizers` on the same files with add_special_tokens=False.
 *
 * A tokenizer directory holds either tokenizer.json (what the `tokenizers`
 * library reads) or vocab.json + merges.txt (what HF's Qwen2Tokenizer reads;
 * the normaliser and split pattern are then the Qwen2 ones), and optionally
 * tokenizer_config.json, whose added_tokens_decoder adds tokens and whose
 * split_special_tokens disables matching special tokens in text.
 *
 * Encoding, as HF does it:
 *   1. invalid UTF-8: each maximal ill-formed subpart becomes U+FFFD, so the
 *      ids equal those of text.decode("utf-8", errors="replace") in Python
 *      (HF itself only accepts str, which cannot hold invalid bytes);
 *   2. added tokens (<|im_start|>, ...) are cut out first, leftmost-longest,
 *      honouring their lstrip / rstrip / single_word / normalized flags;
 *   3. each remaining span is NFC-normalised, split by the pre-tokenizer
 *      regex (Split, behaviour "Isolated": matches and the gaps between them
 *      are pieces), mapped to GPT-2 byte characters, and BPE-merged by rank.
 * NUL bytes are ordinary characters. No special tokens are added.
 *
 * Decoding maps ids back to bytes (the ByteLevel decoder) and replaces
 * invalid UTF-8 the same way.
 *
 * Not supported (the loader says so): other model types (WordPiece, Unigram),
 * BPE dropout, byte_fallback, subword prefixes/suffixes, normalisers other
 * than NFC, and pre-tokenizers other than Split + ByteLevel(use_regex=false).
 * Truncation and padding settings in tokenizer.json are ignored.
 *
 * Thread safety: sdc_bpe_encode uses a per-tokenizer word cache and scratch
 * buffers, so one tokenizer must not encode from two threads at once;
 * decoding and lookups only read.
 */
#ifndef SDC_TOKENIZER_BPE_H
#define SDC_TOKENIZER_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct sdc_bpe sdc_bpe_t;

/* Loads the tokenizer in directory dir (see above). Errors name the file and
 * what is wrong: SDC_ERR_NOT_FOUND (no tokenizer files), SDC_ERR_FORMAT
 * (broken JSON, a merge naming an unknown token, ...), SDC_ERR_UNSUPPORTED
 * (a model type or option this tokenizer does not implement). */
sdc_status_t sdc_bpe_load(const char *dir, sdc_bpe_t **out, sdc_error_t *err);
void sdc_bpe_free(sdc_bpe_t *tok);

/* Tokenizes text[0..len) (text may be NULL when len is 0). *ids is malloc'd
 * (free it; NULL when *n is 0). */
sdc_status_t sdc_bpe_encode(sdc_bpe_t *tok, const char *text, size_t len, int32_t **ids,
                            size_t *n, sdc_error_t *err);

/* Text of ids[0..n): malloc'd, NUL-terminated, valid UTF-8 (*len excludes
 * the terminator). With skip_special, special added tokens are left out, as
 * HF's decode(skip_special_tokens=True). An id that names no token is an
 * error (SDC_ERR_RANGE naming its position), where HF would drop it. */
sdc_status_t sdc_bpe_decode(const sdc_bpe_t *tok, const int32_t *ids, size_t n, int skip_special,
                            char **text, size_t *len, sdc_error_t *err);

/* Id of a token given as its text: an added token's content
 * ("<|im_start|>") or a vocabulary entry's byte-level spelling ("Ġthe").
 * -1 when there is none. */
int32_t sdc_bpe_token_id(const sdc_bpe_t *tok, const char *token);

/* One past the largest id (model vocabulary and added tokens). */
int32_t sdc_bpe_vocab_size(const sdc_bpe_t *tok);

/* Whether id is an added token marked special. */
int sdc_bpe_is_special(const sdc_bpe_t *tok, int32_t id);

#endif
