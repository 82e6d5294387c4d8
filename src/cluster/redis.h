/*
 * redis.h: one synchronous connection to the Redis server that holds the
 * cluster's state. It parses the server URL, authenticates with a password
 * read from a file or the environment (never from argv), applies connect and
 * command timeouts, reconnects with bounded, jittered exponential backoff when
 * the server goes away, and checks the type of every reply before anyone
 * reads it.
 *
 * Not the schema: which keys exist and what they hold is cluster/jobs.h.
 * Not thread-safe: one sdc_redis_t per thread.
 */
#ifndef SDC_CLUSTER_REDIS_H
#define SDC_CLUSTER_REDIS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

struct redisReply;
typedef struct sdc_redis sdc_redis_t;

#define SDC_REDIS_DEFAULT_URL "redis://127.0.0.1:6379"
#define SDC_REDIS_DEFAULT_PREFIX "sdc:"
#define SDC_REDIS_HOST_MAX 255
#define SDC_REDIS_PATH_MAX 107 /* sun_path less its terminator */
#define SDC_REDIS_CRED_MAX 255
#define SDC_REDIS_PREFIX_MAX 64
#define SDC_REDIS_KEY_MAX 512

/* Environment variables holding the password (one of them, not both). */
#define SDC_REDIS_ENV_PASSWORD "SDC_REDIS_PASSWORD"
#define SDC_REDIS_ENV_PASSWORD_FILE "SDC_REDIS_PASSWORD_FILE"

typedef struct {
    int is_unix;                          /* 1: path is a unix socket */
    char host[SDC_REDIS_HOST_MAX + 1];    /* name, IPv4, or IPv6 without brackets */
    int port;                             /* 1..65535, default 6379 */
    char path[SDC_REDIS_PATH_MAX + 1];
    int db;                               /* SELECT index, default 0 */
    char user[SDC_REDIS_CRED_MAX + 1];    /* ACL user, "" for the default user */
    char password[SDC_REDIS_CRED_MAX + 1];
    int has_password;                     /* the URL carried a password */
} sdc_redis_url_t;

/* Parses redis://[user[:password]@]host[:port][/db] (host may be [v6addr])
 * and redis+unix://[user[:password]@]/path[?db=N]. User and password may be
 * percent-encoded. rediss:// (TLS) is SDC_ERR_UNSUPPORTED; anything else
 * malformed is SDC_ERR_INVALID_ARG naming the part at fault. Error messages
 * never repeat the password. */
sdc_status_t sdc_redis_url_parse(const char *url, sdc_redis_url_t *out, sdc_error_t *err);

typedef struct {
    const char *url;           /* NULL: SDC_REDIS_DEFAULT_URL */
    const char *prefix;        /* NULL: "sdc:" */
    /* Password sources, first match wins; naming two of the last three is an
     * error. password_file here, else $SDC_REDIS_PASSWORD_FILE, else
     * $SDC_REDIS_PASSWORD, else the URL's password. */
    const char *password_file;
    int connect_timeout_ms;    /* 0: 2000 */
    int command_timeout_ms;    /* 0: 5000 */
    int backoff_initial_ms;    /* 0: 50; first pause before a reconnect */
    int backoff_max_ms;        /* 0: 2000; pauses double up to this */
    int retry_budget_ms;       /* 0: 15000; give up reconnecting after this long */
} sdc_redis_opts_t;

/* Connects (one attempt, no backoff: a wrong URL or password should fail
 * fast), authenticates, selects the database and checks the server answers.
 * Later commands reconnect as needed. */
sdc_status_t sdc_redis_open(sdc_redis_t **out, const sdc_redis_opts_t *opts, sdc_error_t *err);
void sdc_redis_close(sdc_redis_t *r);

const char *sdc_redis_prefix(const sdc_redis_t *r);
/* How many times the connection was re-established after a loss. */
uint64_t sdc_redis_reconnects(const sdc_redis_t *r);

/* Writes prefix + formatted suffix into buf; SDC_ERR_RANGE when it does not fit. */
sdc_status_t sdc_redis_key(const sdc_redis_t *r, char *buf, size_t cap, sdc_error_t *err,
                           const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Sends one hiredis-format command (%s for C strings, %b with a size_t for
 * blobs) and waits for its reply. A lost connection is re-established with
 * backoff and the command sent again, so commands sent this way must be safe
 * to repeat. On SDC_OK *reply is a non-error reply for the caller to free with
 * sdc_redis_reply_free; a server error reply is SDC_ERR_IO with the server's
 * message, an unreachable server SDC_ERR_IO after the retry budget. */
sdc_status_t sdc_redis_command(sdc_redis_t *r, struct redisReply **reply, sdc_error_t *err,
                               const char *fmt, ...);
sdc_status_t sdc_redis_vcommand(sdc_redis_t *r, struct redisReply **reply, sdc_error_t *err,
                                const char *fmt, va_list ap);
/* Same, from an argument vector (every argument binary-safe). */
sdc_status_t sdc_redis_command_argv(sdc_redis_t *r, int argc, const char **argv,
                                    const size_t *argvlen, struct redisReply **reply,
                                    sdc_error_t *err);
/* A blocking command (XREADGROUP BLOCK ms, ...): the read timeout is raised
 * by block_ms while it runs. */
sdc_status_t sdc_redis_command_blocking(sdc_redis_t *r, int block_ms, struct redisReply **reply,
                                        sdc_error_t *err, const char *fmt, ...);
/* Like sdc_redis_command, but a server error reply is handed back as a reply
 * of type REDIS_REPLY_ERROR with SDC_OK, for callers that expect one
 * (BUSYGROUP, ...). */
sdc_status_t sdc_redis_command_or_error(sdc_redis_t *r, struct redisReply **reply,
                                        sdc_error_t *err, const char *fmt, ...);

/* A Lua script, run with EVALSHA (loaded on first use and again after
 * NOSCRIPT, e.g. when the server restarted). Scripts are static: the
 * connection caches their SHA1 by body pointer. */
typedef struct {
    const char *name; /* for error messages */
    const char *body;
} sdc_redis_script_t;

/* Runs s with keys and args (binary-safe, lengths in *_len) and returns its
 * reply. Like every command it may be sent again after a reconnect: a script
 * must be safe to repeat (check state before writing). */
sdc_status_t sdc_redis_eval(sdc_redis_t *r, const sdc_redis_script_t *s, int nkeys,
                            const char **keys, const size_t *keys_len, int nargs,
                            const char **args, const size_t *args_len, struct redisReply **reply,
                            sdc_error_t *err);

/* Runs fn with a live connection. When fn fails because the connection broke,
 * reconnects with backoff and runs fn again from the start: for sequences
 * that are only correct on one connection (WATCH ... MULTI ... EXEC). Inside
 * fn, commands do not reconnect themselves; fn must be safe to repeat. */
typedef sdc_status_t (*sdc_redis_unit_fn)(sdc_redis_t *r, void *ctx, sdc_error_t *err);
sdc_status_t sdc_redis_retry(sdc_redis_t *r, sdc_redis_unit_fn fn, void *ctx, sdc_error_t *err);

void sdc_redis_reply_free(struct redisReply *reply);

/* "string", "array", "integer", "nil", "status", "error". */
const char *sdc_redis_type_name(int type);
/* SDC_ERR_FORMAT "<what>: expected <type>, got <type>" unless reply has type. */
sdc_status_t sdc_redis_expect(const struct redisReply *reply, int type, const char *what,
                              sdc_error_t *err);
/* An integer reply, or a bulk string holding a decimal integer (HGET). */
sdc_status_t sdc_redis_reply_int(const struct redisReply *reply, const char *what, long long *out,
                                 sdc_error_t *err);
/* An array reply with exactly n elements (n < 0: any length). */
sdc_status_t sdc_redis_expect_array(const struct redisReply *reply, long n, const char *what,
                                    sdc_error_t *err);

#endif
