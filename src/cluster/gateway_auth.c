/*
 * gateway_auth.c: bearer tokens and per-token rate limits (see
 * gateway_auth.h).
 */
#include "gateway_auth.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TOKEN_FILE_MAX (8u << 20)

typedef struct {
    char *token;
    size_t len;
    double level, last; /* bucket: requests available, time of the last refill */
} entry_t;

struct sdc_gw_auth {
    entry_t *e;
    size_t n;       /* tokens; 0 with open = 1 */
    int open;       /* no authentication: one shared bucket in e[0] */
    sdc_gw_rate_t rate;
    pthread_mutex_t mu; /* buckets */
};

static sdc_status_t alloc_auth(const sdc_gw_rate_t *rate, size_t n, sdc_gw_auth_t **out,
                               sdc_error_t *err)
{
    if (rate->rate < 0 || !isfinite(rate->rate) || (rate->rate > 0 && !(rate->burst >= 1)) ||
        !isfinite(rate->burst))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "rate limit: rate must be >= 0 and burst >= 1");
    sdc_gw_auth_t *a = calloc(1, sizeof(*a));
    if (!a || !(a->e = calloc(n ? n : 1, sizeof(*a->e)))) {
        free(a);
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory for tokens");
    }
    pthread_mutex_init(&a->mu, NULL);
    a->rate = *rate;
    for (size_t i = 0; i < (n ? n : 1); i++)
        a->e[i].level = rate->burst;
    *out = a;
    return SDC_OK;
}

sdc_status_t sdc_gw_auth_open(const sdc_gw_rate_t *rate, sdc_gw_auth_t **out, sdc_error_t *err)
{
    sdc_status_t st = alloc_auth(rate, 1, out, err);
    if (st == SDC_OK)
        (*out)->open = 1;
    return st;
}

void sdc_gw_auth_free(sdc_gw_auth_t *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++) {
        /* Tokens are secrets: do not leave them in freed memory. */
        explicit_bzero(a->e[i].token, a->e[i].len);
        free(a->e[i].token);
    }
    free(a->e);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

static sdc_status_t read_file(const char *path, char **text, size_t *len, sdc_error_t *err)
{
    struct stat sb;
    FILE *f = fopen(path, "rb");
    if (!f)
        return sdc_error_set(err, SDC_ERR_IO, "token file %s: %s", path, strerror(errno));
    sdc_status_t st = SDC_OK;
    if (fstat(fileno(f), &sb) != 0) {
        st = sdc_error_set(err, SDC_ERR_IO, "token file %s: %s", path, strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
        st = sdc_error_set(err, SDC_ERR_INVALID_ARG, "token file %s is not a regular file", path);
    } else if (sb.st_mode & S_IROTH) {
        st = sdc_error_set(err, SDC_ERR_INVALID_ARG,
                           "token file %s is readable by every user (chmod o-r it)", path);
    } else if ((size_t)sb.st_size > TOKEN_FILE_MAX) {
        st = sdc_error_set(err, SDC_ERR_RANGE, "token file %s is over %u bytes", path,
                           TOKEN_FILE_MAX);
    } else if (!(*text = malloc((size_t)sb.st_size + 1))) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "out of memory reading %s", path);
    } else {
        *len = fread(*text, 1, (size_t)sb.st_size, f);
        if (*len != (size_t)sb.st_size) {
            free(*text);
            st = sdc_error_set(err, SDC_ERR_IO, "token file %s: short read", path);
        } else {
            (*text)[*len] = '\0';
        }
    }
    fclose(f);
    return st;
}

/* 1 when line[0..n) is a usable token. */
static int token_ok(const char *line, size_t n)
{
    if (n < SDC_GW_TOKEN_MIN || n > SDC_GW_TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (line[i] <= ' ' || line[i] > '~')
            return 0;
    return 1;
}

static sdc_status_t add_tokens(sdc_gw_auth_t *a, const char *path, const char *text, size_t len,
                               sdc_error_t *err)
{
    size_t lineno = 0;
    for (size_t o = 0; o < len;) {
        const char *nl = memchr(text + o, '\n', len - o);
        size_t end = nl ? (size_t)(nl - text) : len, n = end - o;
        const char *line = text + o;
        o = end + 1;
        lineno++;
        if (n && line[n - 1] == '\r')
            n--;
        if (n == 0 || line[0] == '#')
            continue;
        if (!token_ok(line, n))
            return sdc_error_set(err, SDC_ERR_FORMAT,
                                 "token file %s, line %zu: a token is %d..%d printable ASCII "
                                 "characters without spaces", path, lineno, SDC_GW_TOKEN_MIN,
                                 SDC_GW_TOKEN_MAX);
        entry_t *e = &a->e[a->n];
        if (!(e->token = malloc(n)))
            return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory for tokens");
        memcpy(e->token, line, n);
        e->len = n;
        a->n++;
    }
    if (a->n == 0)
        return sdc_error_set(err, SDC_ERR_FORMAT, "token file %s holds no token", path);
    return SDC_OK;
}

sdc_status_t sdc_gw_auth_load(const char *path, const sdc_gw_rate_t *rate, sdc_gw_auth_t **out,
                              sdc_error_t *err)
{
    char *text = NULL;
    size_t len = 0, lines = 1;
    sdc_gw_auth_t *a = NULL;
    sdc_status_t st = read_file(path, &text, &len, err);
    if (st != SDC_OK)
        return st;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    if (lines > SDC_GW_TOKENS_MAX + 1000)
        st = sdc_error_set(err, SDC_ERR_RANGE, "token file %s: more than %d lines", path,
                           SDC_GW_TOKENS_MAX + 1000);
    if (st == SDC_OK)
        st = alloc_auth(rate, lines, &a, err);
    if (st == SDC_OK)
        st = add_tokens(a, path, text, len, err);
    if (st == SDC_OK && a->n > SDC_GW_TOKENS_MAX)
        st = sdc_error_set(err, SDC_ERR_RANGE, "token file %s: more than %d tokens", path,
                           SDC_GW_TOKENS_MAX);
    explicit_bzero(text, len);
    free(text);
    if (st != SDC_OK) {
        sdc_gw_auth_free(a);
        return st;
    }
    *out = a;
    return SDC_OK;
}

size_t sdc_gw_auth_count(const sdc_gw_auth_t *a)
{
    return a->n;
}

/* 0 when a[0..an) equals b[0..bn); time depends on bn only. */
static unsigned ct_differs(const char *a, size_t an, const char *b, size_t bn)
{
    unsigned diff = an != bn;
    for (size_t i = 0; i < bn; i++)
        diff |= (unsigned)(unsigned char)(b[i] ^ (an ? a[i % an] : 0));
    return diff;
}

long sdc_gw_auth_check(const sdc_gw_auth_t *a, const char *header)
{
    static const char scheme[] = "Bearer ";
    if (a->open)
        return 0;
    if (!header || strncasecmp(header, scheme, sizeof(scheme) - 1) != 0)
        return -1;
    const char *tok = header + sizeof(scheme) - 1;
    while (*tok == ' ')
        tok++;
    size_t n = strnlen(tok, SDC_GW_TOKEN_MAX + 1);
    while (n && tok[n - 1] == ' ')
        n--;
    if (n == 0 || n > SDC_GW_TOKEN_MAX)
        return -1;
    long found = -1;
    for (size_t i = 0; i < a->n; i++) {
        unsigned d = ct_differs(tok, n, a->e[i].token, a->e[i].len);
        /* Branch-free select: no early exit on the first match. */
        long mask = -(long)(d == 0);
        found = (found & ~mask) | ((long)i & mask);
    }
    return found;
}

int sdc_gw_rate_take(sdc_gw_auth_t *a, long token, double now, int *retry_after_s)
{
    *retry_after_s = 0;
    if (a->rate.rate <= 0)
        return 1;
    size_t n = a->open ? 1 : a->n;
    if (token < 0 || (size_t)token >= n)
        return 0;
    pthread_mutex_lock(&a->mu);
    entry_t *e = &a->e[token];
    if (e->last > 0 && now > e->last)
        e->level = fmin(a->rate.burst, e->level + (now - e->last) * a->rate.rate);
    e->last = now;
    int ok = e->level >= 1;
    if (ok)
        e->level -= 1;
    else
        *retry_after_s = (int)ceil((1 - e->level) / a->rate.rate);
    pthread_mutex_unlock(&a->mu);
    if (!ok && *retry_after_s < 1)
        *retry_after_s = 1;
    return ok;
}
