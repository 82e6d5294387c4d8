/*
 * sdc-tokenize: the Qwen2.5 tokenizer on the command line, one input line to
 * one output line, for checking sdc's ids against other tokenizers and for
 * scripts.
 *
 *   sdc-tokenize --tokenizer DIR            text lines -> id lines
 *   sdc-tokenize --tokenizer DIR --jsonl    JSON-string lines -> id lines
 *   sdc-tokenize --tokenizer DIR --decode [--jsonl] [--skip-special]
 *
 * A line that cannot be processed (bad JSON, an id that is not a number or
 * names no token) gives an error on stderr naming its line number and an
 * empty output line, so output stays aligned with input; the other lines
 * are still processed and the exit status is then 1. Exit 2: usage errors.
 * Not a chat templater: no special tokens are added.
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonstr.h"
#include "model/tokenizer_bpe.h"

#define EXIT_USAGE 2

typedef struct {
    const char *dir;
    int jsonl;
    int decode;
    int skip_special;
} tokenize_opts_t;

static void usage(FILE *f)
{
    fprintf(f,
"usage: sdc-tokenize --tokenizer DIR [--jsonl] [--decode [--skip-special]]\n"
"\n"
"Reads lines on stdin and writes one line per input line on stdout.\n"
"Encoding (default): each line is a text (without its newline; a '\\r' before\n"
"it is part of the text) and gives its token ids, separated by spaces. No\n"
"special tokens are added; special tokens written in the text (<|im_start|>)\n"
"are recognised. Invalid UTF-8 is read as U+FFFD, as Python's\n"
"bytes.decode(\"utf-8\", errors=\"replace\").\n"
"\n"
"Options:\n"
"  -t, --tokenizer DIR  directory with tokenizer.json, or vocab.json + merges.txt\n"
"                       (and optionally tokenizer_config.json)\n"
"  -j, --jsonl          each input line is a JSON string (so texts may hold\n"
"                       newlines); with --decode, texts are printed as JSON strings\n"
"  -d, --decode         each input line holds space-separated ids; prints the text\n"
"      --skip-special   with --decode: leave out special tokens (<|im_start|>, ...)\n"
"  -h, --help           this text\n"
"\n"
"A bad line (invalid JSON, a non-numeric id, an id naming no token) is reported\n"
"on stderr with its line number and gives an empty output line; processing goes\n"
"on, and the exit status is 1. Exit status 2: usage error.\n");
}

static int parse_args(int argc, char **argv, tokenize_opts_t *o)
{
    enum { OPT_SKIP_SPECIAL = 256 };
    static const struct option longs[] = {
        {"tokenizer", required_argument, NULL, 't'},
        {"jsonl", no_argument, NULL, 'j'},
        {"decode", no_argument, NULL, 'd'},
        {"skip-special", no_argument, NULL, OPT_SKIP_SPECIAL},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":t:jdh", longs, NULL)) != -1) {
        switch (c) {
        case 't': o->dir = optarg; break;
        case 'j': o->jsonl = 1; break;
        case 'd': o->decode = 1; break;
        case OPT_SKIP_SPECIAL: o->skip_special = 1; break;
        case 'h': usage(stdout); exit(0);
        case ':':
            fprintf(stderr, "sdc-tokenize: %s needs a value\n", argv[optind - 1]);
            return -1;
        default:
            fprintf(stderr, "sdc-tokenize: unknown option '%s'\n", argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sdc-tokenize: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!o->dir) {
        fprintf(stderr, "sdc-tokenize: --tokenizer DIR is required\n");
        return -1;
    }
    if (o->skip_special && !o->decode) {
        fprintf(stderr, "sdc-tokenize: --skip-special only applies to --decode\n");
        return -1;
    }
    return 0;
}

static void print_ids(const int32_t *ids, size_t n)
{
    char buf[16];
    for (size_t i = 0; i < n; i++) {
        int k = snprintf(buf, sizeof(buf), i ? " %d" : "%d", ids[i]);
        fwrite(buf, 1, (size_t)k, stdout);
    }
    putchar('\n');
}

static int encode_line(sdc_bpe_t *tok, const tokenize_opts_t *o, const char *line, size_t len,
                       size_t line_no)
{
    sdc_error_t err = {0};
    char *text = NULL;
    const char *s = line;
    if (o->jsonl) {
        if (sdc_jsonstr_decode(line, len, &text, &len, &err) != SDC_OK) {
            fprintf(stderr, "sdc-tokenize: line %zu: %s\n", line_no, err.msg);
            return -1;
        }
        s = text;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    sdc_status_t st = sdc_bpe_encode(tok, s, len, &ids, &n, &err);
    free(text);
    if (st != SDC_OK) {
        fprintf(stderr, "sdc-tokenize: line %zu: %s\n", line_no, err.msg);
        return -1;
    }
    print_ids(ids, n);
    free(ids);
    return 0;
}

/* Space- or tab-separated decimal ids; *ids is malloc'd. */
static int parse_id_line(const char *line, size_t len, size_t line_no, int32_t **ids,
                         size_t *n)
{
    *ids = malloc((len / 2 + 1) * sizeof(int32_t));
    *n = 0;
    if (!*ids) {
        fprintf(stderr, "sdc-tokenize: line %zu: out of memory\n", line_no);
        return -1;
    }
    size_t i = 0;
    while (i < len) {
        while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
            i++;
        if (i >= len)
            break;
        size_t start = i;
        while (i < len && line[i] != ' ' && line[i] != '\t' && line[i] != '\r')
            i++;
        char word[24];
        size_t wl = i - start;
        long v = -1;
        char *end = NULL;
        if (wl < sizeof(word)) {
            memcpy(word, line + start, wl);
            word[wl] = '\0';
            errno = 0;
            v = strtol(word, &end, 10);
        }
        if (wl >= sizeof(word) || errno || !end || *end || word[0] == '+' || v < 0 ||
            v > INT32_MAX) {
            fprintf(stderr, "sdc-tokenize: line %zu: '%.*s' is not a token id\n", line_no,
                    (int)(wl > 30 ? 30 : wl), line + start);
            free(*ids);
            *ids = NULL;
            return -1;
        }
        (*ids)[(*n)++] = (int32_t)v;
    }
    return 0;
}

static int decode_line(const sdc_bpe_t *tok, const tokenize_opts_t *o, const char *line,
                       size_t len, size_t line_no)
{
    int32_t *ids;
    size_t n;
    if (parse_id_line(line, len, line_no, &ids, &n) < 0)
        return -1;
    sdc_error_t err = {0};
    char *text = NULL;
    size_t tlen = 0;
    sdc_status_t st = sdc_bpe_decode(tok, ids, n, o->skip_special, &text, &tlen, &err);
    free(ids);
    if (st != SDC_OK) {
        fprintf(stderr, "sdc-tokenize: line %zu: %s\n", line_no, err.msg);
        return -1;
    }
    if (o->jsonl)
        sdc_jsonstr_write(stdout, text, tlen);
    else
        fwrite(text, 1, tlen, stdout);
    putchar('\n');
    free(text);
    return 0;
}

int main(int argc, char **argv)
{
    tokenize_opts_t o;
    if (parse_args(argc, argv, &o) < 0) {
        fprintf(stderr, "(sdc-tokenize --help for usage)\n");
        return EXIT_USAGE;
    }
    sdc_error_t err = {0};
    sdc_bpe_t *tok = NULL;
    if (sdc_bpe_load(o.dir, &tok, &err) != SDC_OK) {
        fprintf(stderr, "sdc-tokenize: %s\n", err.msg);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0, line_no = 0, failed = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        line_no++;
        size_t len = (size_t)n;
        if (len && line[len - 1] == '\n')
            len--;
        int rc = o.decode ? decode_line(tok, &o, line, len, line_no)
                          : encode_line(tok, &o, line, len, line_no);
        if (rc < 0) {
            failed++;
            putchar('\n');
        }
    }
    free(line);
    sdc_bpe_free(tok);
    if (ferror(stdin)) {
        fprintf(stderr, "sdc-tokenize: error reading stdin\n");
        return 1;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "sdc-tokenize: error writing stdout\n");
        return 1;
    }
    if (failed) {
        fprintf(stderr, "sdc-tokenize: %zu of %zu lines failed\n", failed, line_no);
        return 1;
    }
    return 0;
}
