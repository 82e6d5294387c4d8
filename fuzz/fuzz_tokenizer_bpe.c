/*
 * fuzz_tokenizer_bpe.c: libFuzzer target for the Qwen2 byte-level BPE
 * tokenizer (src/model/tokenizer_bpe*.c) with the real Qwen2.5 vocabulary
 * and merges (tests/data/qwen2.5-tokenizer, or $SDC_FUZZ_TOKENIZER). The
 * input is prompt bytes, invalid UTF-8 and NULs included. Checked:
 * encoding never fails on any bytes, every id is in the vocabulary, decoding
 * gives valid UTF-8, and printable ASCII without '<' (no added tokens,
 * unchanged by NFC) decodes back to itself byte for byte.
 *
 * One tokenizer serves every input, as in a server: its word cache carries
 * state from one input to the next.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"
#include "model/tokenizer_bpe.h"

#define DEFAULT_DIR "tests/data/qwen2.5-tokenizer"

static sdc_bpe_t *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("SDC_FUZZ_TOKENIZER");
    sdc_error_t err = {0};
    if (sdc_bpe_load(dir && *dir ? dir : DEFAULT_DIR, &tok, &err) != SDC_OK) {
        fprintf(stderr, "fuzz_tokenizer_bpe: %s (run from the repository root, or set "
                        "SDC_FUZZ_TOKENIZER)\n", err.msg);
        exit(1);
    }
    return 0;
}

static int plain_ascii(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e || s[i] == '<')
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int32_t *ids = NULL;
    size_t n = 0;
    sdc_error_t err = {0};
    if (sdc_bpe_encode(tok, (const char *)data, size, &ids, &n, &err) != SDC_OK) {
        fprintf(stderr, "encode failed: %s\n", err.msg);
        abort();
    }
    int32_t vocab = sdc_bpe_vocab_size(tok);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            abort();
    char *text = NULL;
    size_t len = 0;
    if (sdc_bpe_decode(tok, ids, n, 0, &text, &len, &err) != SDC_OK) {
        fprintf(stderr, "decode failed: %s\n", err.msg);
        abort();
    }
    if (sdc_utf8_valid_len(text, len) != len || text[len] != '\0')
        abort();
    if (plain_ascii(data, size) && (len != size || memcmp(text, data, size) != 0))
        abort();
    free(text);
    free(ids);
    return 0;
}
