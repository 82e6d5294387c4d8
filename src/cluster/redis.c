/*
 * redis.c: the connection under the cluster's Redis state (see redis.h).
 *
 * Every command goes through one loop, with_retry(): it runs a unit of work
 * on a live connection and, when the connection breaks or the server is still
 * loading, reconnects and runs the unit again after a pause that doubles each
 * time, with jitter so that a cluster's workers do not reconnect in lockstep,
 * until a time budget is spent. Whether a repeated unit is harmless is the
 * caller's business: the schema in jobs.c writes through scripts that check
 * state first.
 *
 * Not a connection pool and not async: each process thread owns one.
 */
#include "redis.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/timer.h"

#define URL_MAX 1024
#define PASSWORD_FILE_MAX 4096
#define SCRIPT_CACHE_MAX 32
#define SHA_LEN 40

struct sdc_redis {
    sdc_redis_url_t url; /* with the password resolved from all sources */
    char prefix[SDC_REDIS_PREFIX_MAX + 1];
    int connect_timeout_ms;
    int command_timeout_ms;
    int backoff_initial_ms;
    int backoff_max_ms;
    int retry_budget_ms;
    redisContext *ctx;   /* NULL while disconnected */
    int timeout_ms;      /* read timeout currently set on ctx */
    int in_unit;         /* inside with_retry: commands must not retry themselves */
    int transient;       /* the last unit failed with a retryable server error */
    int mask_sigpipe;    /* SIGPIPE is not ignored: block it around each round trip */
    uint64_t rng;        /* jitter */
    uint64_t reconnects;
    int n_scripts;
    struct {
        const char *body;
        char sha[SHA_LEN + 1];
    } scripts[SCRIPT_CACHE_MAX];
};

/* ---- URL ------------------------------------------------------------- */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (cap bytes with terminator). */
static sdc_status_t url_decode(const char *s, size_t n, char *out, size_t cap, const char *what,
                               sdc_error_t *err)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            int hi = i + 2 < n ? hex_value(s[i + 1]) : -1;
            int lo = i + 2 < n ? hex_value(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                     "redis URL: bad percent-escape in the %s", what);
            c = (char)(hi * 16 + lo);
            if (c == '\0')
                return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                     "redis URL: %%00 (NUL) in the %s", what);
            i += 2;
        }
        if (o + 1 >= cap)
            return sdc_error_set(err, SDC_ERR_RANGE, "redis URL: the %s is longer than %zu bytes",
                                 what, cap - 1);
        out[o++] = c;
    }
    out[o] = '\0';
    return SDC_OK;
}

/* Decimal digits only, value in lo..hi. */
static int parse_uint(const char *s, size_t n, long lo, long hi, long *out)
{
    if (n == 0 || n > 9)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static sdc_status_t parse_userinfo(const char *s, size_t n, sdc_redis_url_t *u, sdc_error_t *err)
{
    const char *colon = memchr(s, ':', n);
    size_t user_len = colon ? (size_t)(colon - s) : n;
    sdc_status_t st = url_decode(s, user_len, u->user, sizeof(u->user), "user name", err);
    if (st != SDC_OK || !colon)
        return st;
    size_t pass_len = n - user_len - 1;
    if (pass_len == 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "redis URL: empty password after ':'");
    u->has_password = 1;
    return url_decode(colon + 1, pass_len, u->password, sizeof(u->password), "password", err);
}

static int host_char_ok(char c, int v6)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.')
        return 1;
    return v6 ? c == ':' : (c == '-' || c == '_');
}

static sdc_status_t parse_hostport(const char *s, size_t n, sdc_redis_url_t *u, sdc_error_t *err)
{
    const char *host = s, *port = NULL;
    size_t host_len;
    int v6 = n > 0 && s[0] == '[';
    if (v6) {
        const char *close = memchr(s, ']', n);
        if (!close)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG, "redis URL: '[' without ']' in host");
        host = s + 1;
        host_len = (size_t)(close - host);
        size_t after = (size_t)(close + 1 - s);
        if (after < n && s[after] != ':')
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "redis URL: unexpected '%c' after ']'", s[after]);
        if (after < n)
            port = s + after + 1;
    } else {
        const char *colon = memchr(s, ':', n);
        host_len = colon ? (size_t)(colon - s) : n;
        if (colon)
            port = colon + 1;
    }
    if (host_len == 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "redis URL: missing host");
    if (host_len > SDC_REDIS_HOST_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE, "redis URL: host longer than %d bytes",
                             SDC_REDIS_HOST_MAX);
    for (size_t i = 0; i < host_len; i++) {
        if (!host_char_ok(host[i], v6))
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "redis URL: invalid character 0x%02x in host at offset %zu",
                                 (unsigned char)host[i], i);
    }
    memcpy(u->host, host, host_len);
    u->host[host_len] = '\0';
    if (port) {
        long p;
        size_t port_len = (size_t)(s + n - port);
        if (parse_uint(port, port_len, 1, 65535, &p) != 0)
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "redis URL: port '%.*s' is not a number in 1..65535",
                                 (int)(port_len > 16 ? 16 : port_len), port);
        u->port = (int)p;
    }
    return SDC_OK;
}

static sdc_status_t parse_db(const char *s, size_t n, sdc_redis_url_t *u, sdc_error_t *err)
{
    long db;
    if (parse_uint(s, n, 0, 999999, &db) != 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "redis URL: database '%.*s' is not a number in 0..999999",
                             (int)(n > 16 ? 16 : n), s);
    u->db = (int)db;
    return SDC_OK;
}

/* Splits "userinfo@" off the front of an authority; returns the rest. */
static sdc_status_t split_userinfo(const char *s, size_t n, sdc_redis_url_t *u, const char **rest,
                                   size_t *rest_len, sdc_error_t *err)
{
    const char *at = NULL;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '@')
            at = s + i; /* the last one: an unencoded '@' belongs to the password */
    *rest = s;
    *rest_len = n;
    if (!at)
        return SDC_OK;
    sdc_status_t st = parse_userinfo(s, (size_t)(at - s), u, err);
    if (st != SDC_OK)
        return st;
    *rest = at + 1;
    *rest_len = n - (size_t)(at + 1 - s);
    return SDC_OK;
}

static sdc_status_t parse_tcp(const char *s, sdc_redis_url_t *u, sdc_error_t *err)
{
    size_t n = strlen(s);
    if (memchr(s, '?', n) || memchr(s, '#', n))
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "redis URL: query or fragment not supported in redis:// URLs");
    const char *slash = memchr(s, '/', n);
    size_t auth_len = slash ? (size_t)(slash - s) : n;
    const char *hp;
    size_t hp_len;
    sdc_status_t st = split_userinfo(s, auth_len, u, &hp, &hp_len, err);
    if (st == SDC_OK)
        st = parse_hostport(hp, hp_len, u, err);
    if (st != SDC_OK || !slash)
        return st;
    size_t db_len = n - auth_len - 1;
    return db_len ? parse_db(slash + 1, db_len, u, err) : SDC_OK;
}

static sdc_status_t parse_unix(const char *s, sdc_redis_url_t *u, sdc_error_t *err)
{
    size_t n = strlen(s);
    const char *slash = memchr(s, '/', n);
    if (!slash)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "redis URL: redis+unix:// needs an absolute socket path "
                             "(redis+unix:///path/to/redis.sock)");
    const char *rest;
    size_t rest_len;
    sdc_status_t st = split_userinfo(s, (size_t)(slash - s), u, &rest, &rest_len, err);
    if (st != SDC_OK)
        return st;
    if (rest_len)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "redis URL: host given in a redis+unix:// URL (use "
                             "redis+unix:///path)");
    u->is_unix = 1;
    const char *q = strchr(slash, '?');
    size_t path_len = q ? (size_t)(q - slash) : strlen(slash);
    if (path_len < 2)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "redis URL: empty socket path");
    if (path_len > SDC_REDIS_PATH_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE,
                             "redis URL: socket path is %zu bytes, over the %d-byte limit of "
                             "unix sockets", path_len, SDC_REDIS_PATH_MAX);
    memcpy(u->path, slash, path_len);
    u->path[path_len] = '\0';
    if (!q)
        return SDC_OK;
    if (strncmp(q, "?db=", 4) != 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "redis URL: the only query parameter is db=N");
    return parse_db(q + 4, strlen(q + 4), u, err);
}

sdc_status_t sdc_redis_url_parse(const char *url, sdc_redis_url_t *out, sdc_error_t *err)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    if (!url || !*url)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "redis URL is empty");
    if (strlen(url) > URL_MAX)
        return sdc_error_set(err, SDC_ERR_RANGE, "redis URL is longer than %d bytes", URL_MAX);
    sdc_status_t st;
    if (strncmp(url, "redis://", 8) == 0) {
        st = parse_tcp(url + 8, out, err);
    } else if (strncmp(url, "redis+unix://", 13) == 0) {
        st = parse_unix(url + 13, out, err);
    } else if (strncmp(url, "rediss://", 9) == 0) {
        st = sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                           "redis URL: rediss:// (TLS) is not supported by this build; use a "
                           "TLS proxy or a private network");
    } else {
        const char *sep = strstr(url, "://");
        int scheme_len = sep && sep - url < 32 ? (int)(sep - url) : 0;
        st = sdc_error_set(err, SDC_ERR_INVALID_ARG,
                           "redis URL: unknown scheme '%.*s' (expected redis://host:port or "
                           "redis+unix:///path)", scheme_len, url);
    }
    if (st != SDC_OK)
        explicit_bzero(out, sizeof(*out));
    return st;
}

/* ---- replies ----------------------------------------------------------- */

const char *sdc_redis_type_name(int type)
{
    switch (type) {
    case REDIS_REPLY_STRING: return "string";
    case REDIS_REPLY_ARRAY: return "array";
    case REDIS_REPLY_INTEGER: return "integer";
    case REDIS_REPLY_NIL: return "nil";
    case REDIS_REPLY_STATUS: return "status";
    case REDIS_REPLY_ERROR: return "error";
    default: return "unknown";
    }
}

sdc_status_t sdc_redis_expect(const redisReply *reply, int type, const char *what,
                              sdc_error_t *err)
{
    if (!reply)
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: no reply", what);
    if (reply->type == type)
        return SDC_OK;
    if (reply->type == REDIS_REPLY_ERROR)
        return sdc_error_set(err, SDC_ERR_IO, "%s: expected %s, got error: %.*s", what,
                             sdc_redis_type_name(type), (int)(reply->len > 200 ? 200 : reply->len),
                             reply->str);
    return sdc_error_set(err, SDC_ERR_FORMAT, "%s: expected %s, got %s", what,
                         sdc_redis_type_name(type), sdc_redis_type_name(reply->type));
}

sdc_status_t sdc_redis_expect_array(const redisReply *reply, long n, const char *what,
                                    sdc_error_t *err)
{
    sdc_status_t st = sdc_redis_expect(reply, REDIS_REPLY_ARRAY, what, err);
    if (st != SDC_OK)
        return st;
    if (n >= 0 && reply->elements != (size_t)n)
        return sdc_error_set(err, SDC_ERR_FORMAT, "%s: expected %ld elements, got %zu", what, n,
                             reply->elements);
    return SDC_OK;
}

sdc_status_t sdc_redis_reply_int(const redisReply *reply, const char *what, long long *out,
                                 sdc_error_t *err)
{
    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        *out = reply->integer;
        return SDC_OK;
    }
    if (!reply || reply->type != REDIS_REPLY_STRING)
        return sdc_redis_expect(reply, REDIS_REPLY_INTEGER, what, err);
    const char *s = reply->str;
    size_t n = reply->len, i = 0;
    int neg = n > 0 && s[0] == '-';
    i = (size_t)neg;
    if (i == n || n - i > 19)
        goto bad;
    unsigned long long v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            goto bad;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > (unsigned long long)LLONG_MAX)
        goto bad;
    *out = neg ? -(long long)v : (long long)v;
    return SDC_OK;
bad:
    return sdc_error_set(err, SDC_ERR_FORMAT, "%s: '%.*s' is not an integer", what,
                         (int)(n > 32 ? 32 : n), s);
}

void sdc_redis_reply_free(redisReply *reply)
{
    if (reply)
        freeReplyObject(reply);
}

/* ---- connection ------------------------------------------------------ */

static struct timeval ms_to_tv(int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

static const char *where(const sdc_redis_t *r, char *buf, size_t cap)
{
    if (r->url.is_unix)
        snprintf(buf, cap, "%s", r->url.path);
    else
        snprintf(buf, cap, strchr(r->url.host, ':') ? "[%s]:%d" : "%s:%d", r->url.host,
                 r->url.port);
    return buf;
}

static void drop_connection(sdc_redis_t *r)
{
    if (r->ctx)
        redisFree(r->ctx);
    r->ctx = NULL;
}

/* The command's name (first argument of the RESP array) for messages. */
static const char *cmd_name(const char *cmd, size_t len, char *buf, size_t cap)
{
    const char *p = memchr(cmd, '\n', len);
    p = p ? memchr(p + 1, '\n', len - (size_t)(p + 1 - cmd)) : NULL;
    size_t i = 0;
    if (p)
        for (p++; p < cmd + len && *p != '\r' && i + 1 < cap; p++)
            buf[i++] = *p;
    buf[i] = '\0';
    return i ? buf : "command";
}

static int reply_error_is(const redisReply *rep, const char *code)
{
    size_t n = strlen(code);
    return rep->type == REDIS_REPLY_ERROR && rep->len >= n && memcmp(rep->str, code, n) == 0 &&
           (rep->len == n || rep->str[n] == ' ');
}

/* A write to a socket the server closed raises SIGPIPE, whose default action
 * kills the process. Unless the process ignores it already, it is blocked on
 * this thread around each round trip and a SIGPIPE raised meanwhile is
 * consumed, so the failed write shows up as EPIPE instead. */
static void sigpipe_block(sigset_t *old)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

static void sigpipe_restore(const sigset_t *old)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    if (!sigismember(old, SIGPIPE) && sigpending(&pending) == 0 &&
        sigismember(&pending, SIGPIPE)) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* One formatted command, one reply, no retry. A transport failure drops the
 * connection (its stream position is unknown) and is SDC_ERR_IO. */
static sdc_status_t roundtrip(sdc_redis_t *r, const char *cmd, size_t len, int extra_ms,
                              redisReply **out, sdc_error_t *err)
{
    char name[32], wb[SDC_REDIS_PATH_MAX + 16];
    *out = NULL;
    if (!r->ctx)
        return sdc_error_set(err, SDC_ERR_IO, "redis %s: not connected", where(r, wb, sizeof(wb)));
    int want = r->command_timeout_ms + extra_ms;
    if (want != r->timeout_ms) {
        if (redisSetTimeout(r->ctx, ms_to_tv(want)) != REDIS_OK)
            goto err_drop;
        r->timeout_ms = want;
    }
    void *rep = NULL;
    sigset_t old;
    if (r->mask_sigpipe)
        sigpipe_block(&old);
    int ok = redisAppendFormattedCommand(r->ctx, cmd, len) == REDIS_OK &&
             redisGetReply(r->ctx, &rep) == REDIS_OK && rep;
    if (r->mask_sigpipe)
        sigpipe_restore(&old);
    if (!ok)
        goto err_drop;
    *out = rep;
    return SDC_OK;

err_drop:;
    int timed_out = r->ctx->err == REDIS_ERR_IO && strstr(r->ctx->errstr, "temporarily");
    if (timed_out)
        sdc_error_set(err, SDC_ERR_IO, "redis %s: %s: no reply within %d ms",
                      where(r, wb, sizeof(wb)), cmd_name(cmd, len, name, sizeof(name)), want);
    else
        sdc_error_set(err, SDC_ERR_IO, "redis %s: %s: %s", where(r, wb, sizeof(wb)),
                      cmd_name(cmd, len, name, sizeof(name)),
                      r->ctx->errstr[0] ? r->ctx->errstr : "connection lost");
    drop_connection(r);
    return SDC_ERR_IO;
}

/* A command during the handshake; *rep must then be freed. */
static sdc_status_t handshake_cmd(sdc_redis_t *r, int argc, const char **argv,
                                  redisReply **rep, sdc_error_t *err)
{
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, NULL);
    if (len < 0)
        return sdc_error_set(err, SDC_ERR_NOMEM, "redis: out of memory formatting %s", argv[0]);
    sdc_status_t st = roundtrip(r, cmd, (size_t)len, 0, rep, err);
    redisFreeCommand(cmd);
    return st;
}

/* AUTH, SELECT and a PING that tells a missing password from a dead server.
 * A refusal here is permanent: retrying will not change the password. */
static sdc_status_t handshake(sdc_redis_t *r, int *permanent, sdc_error_t *err)
{
    char wb[SDC_REDIS_PATH_MAX + 16], dbs[16];
    redisReply *rep = NULL;
    sdc_status_t st;
    const sdc_redis_url_t *u = &r->url;
    if (u->has_password) {
        const char *a3[] = {"AUTH", u->user, u->password};
        const char *a2[] = {"AUTH", u->password};
        st = u->user[0] ? handshake_cmd(r, 3, a3, &rep, err) : handshake_cmd(r, 2, a2, &rep, err);
        if (st != SDC_OK)
            return st;
        if (rep->type != REDIS_REPLY_STATUS) {
            *permanent = 1;
            st = sdc_error_set(err, SDC_ERR_IO, "redis %s: authentication as %s%s%s failed: %.*s",
                               where(r, wb, sizeof(wb)), u->user[0] ? "user '" : "the default user",
                               u->user, u->user[0] ? "'" : "",
                               rep->type == REDIS_REPLY_ERROR ? (int)rep->len : 0,
                               rep->type == REDIS_REPLY_ERROR ? rep->str : "");
            goto out;
        }
        freeReplyObject(rep);
    }
    if (u->db) {
        snprintf(dbs, sizeof(dbs), "%d", u->db);
        const char *a[] = {"SELECT", dbs};
        if ((st = handshake_cmd(r, 2, a, &rep, err)) != SDC_OK)
            return st;
        if (rep->type != REDIS_REPLY_STATUS) {
            *permanent = 1;
            st = sdc_error_set(err, SDC_ERR_IO, "redis %s: SELECT %d failed: %.*s",
                               where(r, wb, sizeof(wb)), u->db,
                               rep->type == REDIS_REPLY_ERROR ? (int)rep->len : 0,
                               rep->type == REDIS_REPLY_ERROR ? rep->str : "");
            goto out;
        }
        freeReplyObject(rep);
    }
    const char *ping[] = {"PING"};
    if ((st = handshake_cmd(r, 1, ping, &rep, err)) != SDC_OK)
        return st;
    if (reply_error_is(rep, "NOAUTH")) {
        *permanent = 1;
        st = sdc_error_set(err, SDC_ERR_IO, "redis %s: the server requires a password; put it in "
                           "a file named by $%s, or in $%s", where(r, wb, sizeof(wb)),
                           SDC_REDIS_ENV_PASSWORD_FILE, SDC_REDIS_ENV_PASSWORD);
    } else if (reply_error_is(rep, "LOADING")) {
        r->transient = 1;
        st = sdc_error_set(err, SDC_ERR_IO, "redis %s: the server is loading its data set",
                           where(r, wb, sizeof(wb)));
    } else if (rep->type != REDIS_REPLY_STATUS) {
        st = sdc_redis_expect(rep, REDIS_REPLY_STATUS, "redis PING", err);
    }
out:
    freeReplyObject(rep);
    return st;
}

/* One connection attempt; on failure r->ctx stays NULL. */
static sdc_status_t connect_once(sdc_redis_t *r, int *permanent, sdc_error_t *err)
{
    char wb[SDC_REDIS_PATH_MAX + 16];
    *permanent = 0;
    struct timeval tv = ms_to_tv(r->connect_timeout_ms);
    redisContext *c = r->url.is_unix ? redisConnectUnixWithTimeout(r->url.path, tv)
                                     : redisConnectWithTimeout(r->url.host, r->url.port, tv);
    if (!c)
        return sdc_error_set(err, SDC_ERR_NOMEM, "redis: out of memory allocating a context");
    if (c->err) {
        sdc_error_set(err, SDC_ERR_IO, "redis %s: connect: %s", where(r, wb, sizeof(wb)),
                      c->errstr);
        redisFree(c);
        return SDC_ERR_IO;
    }
    if (!r->url.is_unix)
        redisEnableKeepAlive(c);
    r->ctx = c;
    r->timeout_ms = -1; /* roundtrip sets the command timeout */
    sdc_status_t st = handshake(r, permanent, err);
    if (st != SDC_OK)
        drop_connection(r);
    return st;
}

/* ---- retry loop -------------------------------------------------------- */

static uint64_t rng_next(sdc_redis_t *r)
{
    uint64_t z = (r->rng += 0x9E3779B97F4A7C15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Runs fn on a live connection; see the file comment. */
static sdc_status_t with_retry(sdc_redis_t *r, sdc_redis_unit_fn fn, void *ctx, sdc_error_t *err)
{
    double start = sdc_now();
    int delay = r->backoff_initial_ms;
    int tries = 0;
    for (;;) {
        sdc_status_t st;
        int permanent = 0;
        int was_down = !r->ctx;
        r->transient = 0;
        tries++;
        if (!r->ctx) {
            st = connect_once(r, &permanent, err);
            if (st == SDC_OK && was_down) {
                r->reconnects++;
                SDC_INFO("redis: reconnected after %d attempt(s)", tries);
            }
        }
        if (r->ctx) {
            r->in_unit = 1;
            st = fn(r, ctx, err);
            r->in_unit = 0;
            if (st == SDC_OK)
                return SDC_OK;
        }
        if (permanent || (r->ctx && !r->transient))
            return st;
        /* The first retry of a connection that just broke goes straight away
         * (an idle connection closed by the server comes back at once); later
         * ones wait, half the pause fixed and half random. */
        if (tries == 1 && !was_down && !r->transient)
            continue;
        int pause = delay / 2 + (int)(rng_next(r) % (uint64_t)(delay / 2 + 1));
        double elapsed_ms = (sdc_now() - start) * 1e3;
        if (elapsed_ms + pause > r->retry_budget_ms) {
            sdc_error_wrap(err, "redis: gave up after %d attempts in %.1f s", tries,
                           elapsed_ms / 1e3);
            return st;
        }
        SDC_WARN("redis: %s; retrying in %d ms", err ? err->msg : "connection lost", pause);
        sleep_ms(pause);
        delay = delay >= r->backoff_max_ms / 2 ? r->backoff_max_ms : delay * 2;
    }
}

sdc_status_t sdc_redis_retry(sdc_redis_t *r, sdc_redis_unit_fn fn, void *ctx, sdc_error_t *err)
{
    if (r->in_unit)
        return fn(r, ctx, err);
    return with_retry(r, fn, ctx, err);
}

typedef struct {
    const char *cmd;
    size_t len;
    int extra_ms;
    int keep_error;
    redisReply **reply;
} one_cmd_t;

static sdc_status_t one_cmd_fn(sdc_redis_t *r, void *vctx, sdc_error_t *err)
{
    one_cmd_t *c = vctx;
    char name[32], wb[SDC_REDIS_PATH_MAX + 16];
    redisReply *rep;
    sdc_status_t st = roundtrip(r, c->cmd, c->len, c->extra_ms, &rep, err);
    if (st != SDC_OK)
        return st;
    if (rep->type == REDIS_REPLY_ERROR && reply_error_is(rep, "LOADING")) {
        r->transient = 1;
        st = sdc_error_set(err, SDC_ERR_IO, "redis %s: the server is loading its data set",
                           where(r, wb, sizeof(wb)));
        freeReplyObject(rep);
        return st;
    }
    if (rep->type == REDIS_REPLY_ERROR && !c->keep_error) {
        sdc_status_t code = reply_error_is(rep, "WRONGTYPE") ? SDC_ERR_FORMAT : SDC_ERR_IO;
        if (reply_error_is(rep, "NOAUTH"))
            st = sdc_error_set(err, code, "redis %s: %s: the server requires a password; put "
                               "it in a file named by $%s, or in $%s", where(r, wb, sizeof(wb)),
                               cmd_name(c->cmd, c->len, name, sizeof(name)),
                               SDC_REDIS_ENV_PASSWORD_FILE, SDC_REDIS_ENV_PASSWORD);
        else
            st = sdc_error_set(err, code, "redis %s: %s: %.*s", where(r, wb, sizeof(wb)),
                               cmd_name(c->cmd, c->len, name, sizeof(name)),
                               (int)(rep->len > 300 ? 300 : rep->len), rep->str);
        freeReplyObject(rep);
        return st;
    }
    *c->reply = rep;
    return SDC_OK;
}

static sdc_status_t run_formatted(sdc_redis_t *r, const char *cmd, size_t len, int extra_ms,
                                  int keep_error, redisReply **reply, sdc_error_t *err)
{
    one_cmd_t c = {cmd, len, extra_ms, keep_error, reply};
    *reply = NULL;
    return sdc_redis_retry(r, one_cmd_fn, &c, err);
}

static sdc_status_t run_va(sdc_redis_t *r, int extra_ms, int keep_error, redisReply **reply,
                           sdc_error_t *err, const char *fmt, va_list ap)
{
    char *cmd = NULL;
    *reply = NULL;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    if (len < 0)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "redis: cannot format command '%.40s'",
                             fmt);
    sdc_status_t st = run_formatted(r, cmd, (size_t)len, extra_ms, keep_error, reply, err);
    redisFreeCommand(cmd);
    return st;
}

sdc_status_t sdc_redis_vcommand(sdc_redis_t *r, redisReply **reply, sdc_error_t *err,
                                const char *fmt, va_list ap)
{
    return run_va(r, 0, 0, reply, err, fmt, ap);
}

sdc_status_t sdc_redis_command(sdc_redis_t *r, redisReply **reply, sdc_error_t *err,
                               const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sdc_status_t st = run_va(r, 0, 0, reply, err, fmt, ap);
    va_end(ap);
    return st;
}

sdc_status_t sdc_redis_command_blocking(sdc_redis_t *r, int block_ms, redisReply **reply,
                                        sdc_error_t *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sdc_status_t st = run_va(r, block_ms > 0 ? block_ms : 0, 0, reply, err, fmt, ap);
    va_end(ap);
    return st;
}

sdc_status_t sdc_redis_command_or_error(sdc_redis_t *r, redisReply **reply, sdc_error_t *err,
                                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sdc_status_t st = run_va(r, 0, 1, reply, err, fmt, ap);
    va_end(ap);
    return st;
}

sdc_status_t sdc_redis_command_argv(sdc_redis_t *r, int argc, const char **argv,
                                    const size_t *argvlen, redisReply **reply, sdc_error_t *err)
{
    char *cmd = NULL;
    *reply = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0)
        return sdc_error_set(err, SDC_ERR_NOMEM, "redis: out of memory formatting a command");
    sdc_status_t st = run_formatted(r, cmd, (size_t)len, 0, 0, reply, err);
    redisFreeCommand(cmd);
    return st;
}

/* ---- scripts ------------------------------------------------------------ */

typedef struct {
    const sdc_redis_script_t *s;
    int nkeys;
    const char **keys;
    const size_t *keys_len;
    int nargs;
    const char **args;
    const size_t *args_len;
    redisReply **reply;
} eval_t;

static sdc_status_t script_load(sdc_redis_t *r, const sdc_redis_script_t *s, char *sha,
                                sdc_error_t *err)
{
    redisReply *rep;
    sdc_status_t st = sdc_redis_command(r, &rep, err, "SCRIPT LOAD %s", s->body);
    if (st != SDC_OK) {
        sdc_error_wrap(err, "loading script %s", s->name);
        return st;
    }
    st = sdc_redis_expect(rep, REDIS_REPLY_STRING, "SCRIPT LOAD", err);
    if (st == SDC_OK && rep->len != SHA_LEN)
        st = sdc_error_set(err, SDC_ERR_FORMAT, "SCRIPT LOAD %s: a %zu-byte SHA1", s->name,
                           rep->len);
    if (st == SDC_OK)
        memcpy(sha, rep->str, SHA_LEN + 1);
    freeReplyObject(rep);
    return st;
}

/* The cached SHA1 slot of s, loading the script when it has none. */
static sdc_status_t script_sha(sdc_redis_t *r, const sdc_redis_script_t *s, int reload,
                               const char **sha, sdc_error_t *err)
{
    int i = 0;
    while (i < r->n_scripts && r->scripts[i].body != s->body)
        i++;
    if (i == r->n_scripts) {
        if (i == SCRIPT_CACHE_MAX)
            return sdc_error_set(err, SDC_ERR_INTERNAL, "redis: more than %d scripts",
                                 SCRIPT_CACHE_MAX);
        r->scripts[i].body = s->body;
        r->scripts[i].sha[0] = '\0';
        r->n_scripts++;
    }
    if (reload || !r->scripts[i].sha[0]) {
        sdc_status_t st = script_load(r, s, r->scripts[i].sha, err);
        if (st != SDC_OK)
            return st;
    }
    *sha = r->scripts[i].sha;
    return SDC_OK;
}

static sdc_status_t eval_fn(sdc_redis_t *r, void *vctx, sdc_error_t *err)
{
    eval_t *e = vctx;
    int argc = 3 + e->nkeys + e->nargs;
    const char **argv = malloc((size_t)argc * sizeof(*argv));
    size_t *lens = malloc((size_t)argc * sizeof(*lens));
    char nk[16];
    sdc_status_t st = SDC_OK;
    if (!argv || !lens) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "redis: out of memory running %s", e->s->name);
        goto out;
    }
    snprintf(nk, sizeof(nk), "%d", e->nkeys);
    for (int reload = 0; reload < 2; reload++) {
        const char *sha = NULL;
        if ((st = script_sha(r, e->s, reload, &sha, err)) != SDC_OK)
            goto out;
        argv[0] = "EVALSHA", lens[0] = 7;
        argv[1] = sha, lens[1] = SHA_LEN;
        argv[2] = nk, lens[2] = strlen(nk);
        for (int i = 0; i < e->nkeys; i++)
            argv[3 + i] = e->keys[i], lens[3 + i] = e->keys_len[i];
        for (int i = 0; i < e->nargs; i++)
            argv[3 + e->nkeys + i] = e->args[i], lens[3 + e->nkeys + i] = e->args_len[i];
        char *cmd = NULL;
        int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
        if (len < 0) {
            st = sdc_error_set(err, SDC_ERR_NOMEM, "redis: out of memory formatting %s",
                               e->s->name);
            goto out;
        }
        redisReply *rep = NULL;
        one_cmd_t c = {cmd, (size_t)len, 0, 1, &rep};
        st = one_cmd_fn(r, &c, err);
        redisFreeCommand(cmd);
        if (st != SDC_OK)
            goto out;
        if (reply_error_is(rep, "NOSCRIPT") && !reload) {
            freeReplyObject(rep); /* the server restarted or flushed its scripts */
            continue;
        }
        if (rep->type == REDIS_REPLY_ERROR) {
            st = sdc_error_set(err, SDC_ERR_IO, "redis: script %s: %.*s", e->s->name,
                               (int)(rep->len > 300 ? 300 : rep->len), rep->str);
            freeReplyObject(rep);
            goto out;
        }
        *e->reply = rep;
        break;
    }
out:
    free(argv);
    free(lens);
    return st;
}

sdc_status_t sdc_redis_eval(sdc_redis_t *r, const sdc_redis_script_t *s, int nkeys,
                            const char **keys, const size_t *keys_len, int nargs,
                            const char **args, const size_t *args_len, redisReply **reply,
                            sdc_error_t *err)
{
    eval_t e = {s, nkeys, keys, keys_len, nargs, args, args_len, reply};
    *reply = NULL;
    return sdc_redis_retry(r, eval_fn, &e, err);
}

/* ---- open / close ----------------------------------------------------- */

static sdc_status_t read_password_file(const char *path, char *out, size_t cap,
                                       sdc_error_t *err)
{
    char buf[PASSWORD_FILE_MAX + 1];
    sdc_status_t st = SDC_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sdc_error_set(err, errno == ENOENT ? SDC_ERR_NOT_FOUND : SDC_ERR_IO,
                             "redis password file %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = sdc_error_set(err, SDC_ERR_IO, "redis password file %s: not a regular file", path);
        goto out;
    }
    size_t n = 0;
    for (;;) {
        ssize_t got = read(fd, buf + n, sizeof(buf) - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            st = sdc_error_set(err, SDC_ERR_IO, "redis password file %s: read: %s", path,
                               strerror(errno));
            goto out;
        }
        if (got == 0)
            break;
        n += (size_t)got;
        if (n == sizeof(buf)) {
            st = sdc_error_set(err, SDC_ERR_RANGE, "redis password file %s: over %d bytes",
                               path, PASSWORD_FILE_MAX);
            goto out;
        }
    }
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n == 0) {
        st = sdc_error_set(err, SDC_ERR_INVALID_ARG, "redis password file %s is empty", path);
    } else if (memchr(buf, '\n', n) || memchr(buf, '\r', n) || memchr(buf, '\0', n)) {
        st = sdc_error_set(err, SDC_ERR_INVALID_ARG, "redis password file %s: the password "
                           "must be one line without NUL bytes", path);
    } else if (n >= cap) {
        st = sdc_error_set(err, SDC_ERR_RANGE, "redis password file %s: password longer than "
                           "%zu bytes", path, cap - 1);
    } else {
        memcpy(out, buf, n);
        out[n] = '\0';
    }
out:
    explicit_bzero(buf, sizeof(buf));
    close(fd);
    return st;
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static sdc_status_t resolve_password(sdc_redis_url_t *u, const char *file, sdc_error_t *err)
{
    if (file) {
        u->has_password = 1;
        return read_password_file(file, u->password, sizeof(u->password), err);
    }
    const char *env_file = env_nonempty(SDC_REDIS_ENV_PASSWORD_FILE);
    const char *env_pass = env_nonempty(SDC_REDIS_ENV_PASSWORD);
    const char *srcs[3];
    int n = 0;
    if (env_file) srcs[n++] = "$" SDC_REDIS_ENV_PASSWORD_FILE;
    if (env_pass) srcs[n++] = "$" SDC_REDIS_ENV_PASSWORD;
    if (u->has_password) srcs[n++] = "the URL";
    if (n > 1)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                             "redis password given by both %s and %s: set only one", srcs[0],
                             srcs[1]);
    if (env_file) {
        u->has_password = 1;
        return read_password_file(env_file, u->password, sizeof(u->password), err);
    }
    if (env_pass) {
        if (strlen(env_pass) >= sizeof(u->password))
            return sdc_error_set(err, SDC_ERR_RANGE, "$%s: password longer than %zu bytes",
                                 SDC_REDIS_ENV_PASSWORD, sizeof(u->password) - 1);
        u->has_password = 1;
        strcpy(u->password, env_pass);
    }
    return SDC_OK;
}

static sdc_status_t check_prefix(const char *p, sdc_error_t *err)
{
    size_t n = strlen(p);
    if (n == 0 || n > SDC_REDIS_PREFIX_MAX)
        return sdc_error_set(err, SDC_ERR_INVALID_ARG, "redis key prefix must be 1..%d bytes",
                             SDC_REDIS_PREFIX_MAX);
    for (size_t i = 0; i < n; i++)
        if (p[i] <= ' ' || p[i] > '~')
            return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                                 "redis key prefix: byte 0x%02x at offset %zu is not printable "
                                 "ASCII", (unsigned char)p[i], i);
    return SDC_OK;
}

static int opt_ms(int v, int def, int lo, int hi)
{
    return v == 0 ? def : (v < lo ? lo : v > hi ? hi : v);
}

sdc_status_t sdc_redis_open(sdc_redis_t **out, const sdc_redis_opts_t *opts, sdc_error_t *err)
{
    static const sdc_redis_opts_t defaults = {0};
    sdc_status_t st;
    *out = NULL;
    if (!opts)
        opts = &defaults;
    const char *prefix = opts->prefix ? opts->prefix : SDC_REDIS_DEFAULT_PREFIX;
    if ((st = check_prefix(prefix, err)) != SDC_OK)
        return st;
    sdc_redis_t *r = calloc(1, sizeof(*r));
    if (!r)
        return sdc_error_set(err, SDC_ERR_NOMEM, "redis: out of memory");
    if ((st = sdc_redis_url_parse(opts->url ? opts->url : SDC_REDIS_DEFAULT_URL, &r->url, err)))
        goto err_free;
    if (r->url.has_password && !opts->password_file && !env_nonempty(SDC_REDIS_ENV_PASSWORD) &&
        !env_nonempty(SDC_REDIS_ENV_PASSWORD_FILE))
        SDC_WARN("redis: the URL carries a password; a URL given on a command line is visible "
                 "to every local user, prefer $%s", SDC_REDIS_ENV_PASSWORD_FILE);
    if ((st = resolve_password(&r->url, opts->password_file, err)) != SDC_OK)
        goto err_free;
    strcpy(r->prefix, prefix);
    r->connect_timeout_ms = opt_ms(opts->connect_timeout_ms, 2000, 10, 600000);
    r->command_timeout_ms = opt_ms(opts->command_timeout_ms, 5000, 10, 600000);
    r->backoff_initial_ms = opt_ms(opts->backoff_initial_ms, 50, 1, 60000);
    r->backoff_max_ms = opt_ms(opts->backoff_max_ms, 2000, r->backoff_initial_ms, 600000);
    r->retry_budget_ms = opt_ms(opts->retry_budget_ms, 15000, 1, 3600000);
    struct sigaction sa;
    r->mask_sigpipe = sigaction(SIGPIPE, NULL, &sa) != 0 || sa.sa_handler != SIG_IGN;
    if (getrandom(&r->rng, sizeof(r->rng), GRND_NONBLOCK) != (ssize_t)sizeof(r->rng))
        r->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    int permanent;
    if ((st = connect_once(r, &permanent, err)) != SDC_OK)
        goto err_free;
    *out = r;
    return SDC_OK;

err_free:
    explicit_bzero(&r->url, sizeof(r->url));
    free(r);
    return st;
}

void sdc_redis_close(sdc_redis_t *r)
{
    if (!r)
        return;
    drop_connection(r);
    explicit_bzero(&r->url, sizeof(r->url));
    free(r);
}

const char *sdc_redis_prefix(const sdc_redis_t *r)
{
    return r->prefix;
}

uint64_t sdc_redis_reconnects(const sdc_redis_t *r)
{
    return r->reconnects;
}

sdc_status_t sdc_redis_key(const sdc_redis_t *r, char *buf, size_t cap, sdc_error_t *err,
                           const char *fmt, ...)
{
    size_t plen = strlen(r->prefix);
    if (plen >= cap)
        return sdc_error_set(err, SDC_ERR_RANGE, "redis key: buffer of %zu bytes too small", cap);
    memcpy(buf, r->prefix, plen);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + plen, cap - plen, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap - plen)
        return sdc_error_set(err, SDC_ERR_RANGE, "redis key '%s...' longer than %zu bytes",
                             r->prefix, cap - 1);
    return SDC_OK;
}
