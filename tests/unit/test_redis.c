/* test_redis.c: the Redis state layer against real redis-server processes
 * that this test starts (unix socket + a free TCP port on 127.0.0.1, no
 * persistence) and kills at the end, also when it fails or crashes
 * (PR_SET_PDEATHSIG). No mocks: URL parsing, job params JSON, the job state
 * machine end to end, idempotent completion, dead letters, node registry
 * TTLs, the leader lease, XAUTOCLAIM, passwords, command timeouts and
 * reconnecting to a restarted server. */
#include "cluster/checkpoint.h"
#include "cluster/jobs.h"
#include "cluster/metrics.h"
#include "cluster/redis.h"
#include "cluster/wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/timer.h"
#include "test.h"

/* ---- servers ---------------------------------------------------------------- */

typedef struct {
    pid_t pid;
    char sock[160];
    int port; /* 0: unix socket only */
    const char *const *extra; /* more redis-server arguments, NULL-terminated */
} server_t;

#define MAX_SERVERS 8
static char tmpdir[64];
static server_t *servers[MAX_SERVERS]; /* for the exit handler */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int free_tcp_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* Forks redis-server; with delay_ms > 0 the child waits that long first
 * (a server that comes back while a client is reconnecting). */
static int server_spawn(server_t *s, int delay_ms)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", s->port);
    const char *argv[40] = {"redis-server", "--port", port, "--bind", "127.0.0.1",
                            "--unixsocket", s->sock, "--save", "", "--appendonly", "no",
                            "--loglevel", "warning"};
    int n = 13;
    for (int i = 0; s->extra && s->extra[i] && n < 39; i++)
        argv[n++] = s->extra[i];
    argv[n] = NULL;
    unlink(s->sock);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        if (delay_ms > 0)
            sleep_ms(delay_ms);
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    for (int i = 0; i < MAX_SERVERS; i++) {
        if (servers[i] == s)
            break;
        if (!servers[i]) {
            servers[i] = s;
            break;
        }
    }
    return 0;
}

/* Waits until the server answers on its socket (PONG, or NOAUTH with a
 * password set). */
static int server_wait(server_t *s)
{
    for (int i = 0; i < 500; i++) {
        int status;
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            fprintf(stderr, "  redis-server exited early (status %d)\n", status);
            s->pid = 0;
            return -1;
        }
        redisContext *c = redisConnectUnix(s->sock);
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            int ok = r && (r->type == REDIS_REPLY_STATUS ||
                           (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOAUTH", 6) == 0));
            if (r)
                freeReplyObject(r);
            redisFree(c);
            if (ok)
                return 0;
        } else if (c) {
            redisFree(c);
        }
        sleep_ms(10);
    }
    fprintf(stderr, "  redis-server on %s did not come up\n", s->sock);
    return -1;
}

static int server_start(server_t *s, const char *name, int tcp, const char *const *extra)
{
    snprintf(s->sock, sizeof(s->sock), "%s/%s.sock", tmpdir, name);
    s->port = tcp ? free_tcp_port() : 0;
    s->extra = extra;
    if (tcp && s->port <= 0)
        return -1;
    return server_spawn(s, 0) == 0 ? server_wait(s) : -1;
}

static void server_kill(server_t *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
    }
    s->pid = 0;
}

static void cleanup(void)
{
    for (int i = 0; i < MAX_SERVERS; i++)
        if (servers[i]) {
            server_kill(servers[i]);
            unlink(servers[i]->sock);
        }
    if (tmpdir[0])
        rmdir(tmpdir);
}

static void on_signal(int sig)
{
    cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* ---- helpers ---------------------------------------------------------------- */

static server_t main_srv;

static char url_buf[256];
static const char *unix_url(const server_t *s)
{
    snprintf(url_buf, sizeof(url_buf), "redis+unix://%s", s->sock);
    return url_buf;
}

static sdc_redis_t *open_prefixed(const char *url, const char *prefix)
{
    sdc_redis_opts_t o = {.url = url, .prefix = prefix, .retry_budget_ms = 3000};
    sdc_redis_t *r = NULL;
    sdc_error_t err = {0};
    if (sdc_redis_open(&r, &o, &err) != SDC_OK)
        fprintf(stderr, "  open %s: %s\n", url, err.msg);
    return r;
}

static sdc_redis_t *open_main(void)
{
    return open_prefixed(unix_url(&main_srv), NULL);
}

/* Runs a command and returns its reply (NULL with a message on failure). */
static redisReply *cmd(sdc_redis_t *r, const char *fmt, ...)
{
    va_list ap;
    redisReply *rep = NULL;
    sdc_error_t err = {0};
    va_start(ap, fmt);
    sdc_status_t st = sdc_redis_vcommand(r, &rep, &err, fmt, ap);
    va_end(ap);
    if (st != SDC_OK)
        fprintf(stderr, "  command '%s': %s\n", fmt, err.msg);
    return rep;
}

static long long cmd_int(sdc_redis_t *r, const char *fmt, const char *a1, const char *a2)
{
    redisReply *rep = cmd(r, fmt, a1, a2);
    long long v = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -999;
    sdc_redis_reply_free(rep);
    return v;
}

static void flush(sdc_redis_t *r)
{
    sdc_redis_reply_free(cmd(r, "FLUSHALL"));
}

static void params_set(sdc_job_params_t *p, const char *id, const char *prompt, int steps)
{
    sdc_job_params_init(p);
    snprintf(p->id, sizeof(p->id), "%s", id);
    p->prompt = strdup(prompt);
    p->steps = steps;
    p->width = 64;
    p->height = 96;
    p->seed = 42;
}

static int setup_queue(sdc_jobs_t *q, sdc_redis_t *r)
{
    sdc_error_t err = {0};
    sdc_jobs_opts_t o = {.events_maxlen = 100};
    if (sdc_jobs_init(q, r, &o, &err) != SDC_OK || sdc_jobs_group_create(q, &err) != SDC_OK) {
        fprintf(stderr, "  queue setup: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int submit(sdc_jobs_t *q, const char *id, int steps)
{
    sdc_job_params_t p;
    sdc_error_t err = {0};
    params_set(&p, id, "a cat holding a sign that says \"hello\"", steps);
    sdc_status_t st = sdc_job_submit(q, &p, NULL, &err);
    sdc_job_params_free(&p);
    if (st != SDC_OK)
        fprintf(stderr, "  submit %s: %s\n", id, err.msg);
    return st == SDC_OK ? 0 : -1;
}

/* Claims exactly one new entry for consumer into e; -1 otherwise. */
static int claim_one(sdc_jobs_t *q, const char *consumer, sdc_job_entry_t *e)
{
    sdc_job_entry_t *es = NULL;
    size_t n = 0;
    sdc_error_t err = {0};
    if (sdc_job_claim(q, consumer, 10, 100, 0, &es, &n, &err) != SDC_OK) {
        fprintf(stderr, "  claim: %s\n", err.msg);
        return -1;
    }
    if (n != 1) {
        fprintf(stderr, "  claim: %zu entries, wanted 1\n", n);
        sdc_job_entries_free(es, n);
        return -1;
    }
    *e = es[0];
    free(es);
    return 0;
}

/* How many events of job id have state `state` (all when NULL). */
static int count_events(sdc_redis_t *r, const char *id, const char *state)
{
    redisReply *rep = cmd(r, "XRANGE sdc:job:%s:events - +", id);
    int count = 0;
    for (size_t i = 0; rep && rep->type == REDIS_REPLY_ARRAY && i < rep->elements; i++) {
        const redisReply *f = rep->element[i]->element[1];
        for (size_t j = 0; j + 1 < f->elements; j += 2)
            if (strcmp(f->element[j]->str, "state") == 0 &&
                (!state || strcmp(f->element[j + 1]->str, state) == 0))
                count++;
    }
    sdc_redis_reply_free(rep);
    return count;
}

static int msg_has(const sdc_error_t *err, const char *needle)
{
    if (strstr(err->msg, needle))
        return 1;
    fprintf(stderr, "  message '%s' lacks '%s'\n", err->msg, needle);
    return 0;
}

/* ---- URL -------------------------------------------------------------------- */

static void test_url_good(void)
{
    sdc_redis_url_t u;
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_redis_url_parse("redis://localhost", &u, &err), SDC_OK);
    CHECK(!u.is_unix && strcmp(u.host, "localhost") == 0 && u.port == 6379 && u.db == 0);
    CHECK(!u.has_password && u.user[0] == '\0');

    CHECK_EQ_INT(sdc_redis_url_parse("redis://10.0.0.7:7000/3", &u, &err), SDC_OK);
    CHECK(strcmp(u.host, "10.0.0.7") == 0 && u.port == 7000 && u.db == 3);

    CHECK_EQ_INT(sdc_redis_url_parse("redis://alice:p%40ss%3Aw0rd@redis-1.internal:6380/", &u,
                                     &err), SDC_OK);
    CHECK(strcmp(u.user, "alice") == 0 && strcmp(u.password, "p@ss:w0rd") == 0);
    CHECK(u.has_password && strcmp(u.host, "redis-1.internal") == 0 && u.port == 6380);

    CHECK_EQ_INT(sdc_redis_url_parse("redis://:only-pass@h", &u, &err), SDC_OK);
    CHECK(u.user[0] == '\0' && strcmp(u.password, "only-pass") == 0);

    CHECK_EQ_INT(sdc_redis_url_parse("redis://[::1]:6390/15", &u, &err), SDC_OK);
    CHECK(strcmp(u.host, "::1") == 0 && u.port == 6390 && u.db == 15);

    CHECK_EQ_INT(sdc_redis_url_parse("redis+unix:///run/redis/redis.sock", &u, &err), SDC_OK);
    CHECK(u.is_unix && strcmp(u.path, "/run/redis/redis.sock") == 0 && u.db == 0);

    CHECK_EQ_INT(sdc_redis_url_parse("redis+unix://bob@/tmp/r.sock?db=2", &u, &err), SDC_OK);
    CHECK(u.is_unix && strcmp(u.path, "/tmp/r.sock") == 0 && u.db == 2);
    CHECK(strcmp(u.user, "bob") == 0 && !u.has_password);
}

static void test_url_bad(void)
{
    static const struct {
        const char *url;
        sdc_status_t code;
        const char *needle;
    } cases[] = {
        {"", SDC_ERR_INVALID_ARG, "empty"},
        {"http://host:6379", SDC_ERR_INVALID_ARG, "unknown scheme 'http'"},
        {"localhost:6379", SDC_ERR_INVALID_ARG, "unknown scheme"},
        {"rediss://host", SDC_ERR_UNSUPPORTED, "TLS"},
        {"redis://", SDC_ERR_INVALID_ARG, "missing host"},
        {"redis://:6379", SDC_ERR_INVALID_ARG, "missing host"},
        {"redis://host:0", SDC_ERR_INVALID_ARG, "port '0'"},
        {"redis://host:65536", SDC_ERR_INVALID_ARG, "port '65536'"},
        {"redis://host:63x9", SDC_ERR_INVALID_ARG, "port '63x9'"},
        {"redis://host:", SDC_ERR_INVALID_ARG, "port ''"},
        {"redis://host/db1", SDC_ERR_INVALID_ARG, "database 'db1'"},
        {"redis://host/-1", SDC_ERR_INVALID_ARG, "database"},
        {"redis://host/1/2", SDC_ERR_INVALID_ARG, "database"},
        {"redis://ho st", SDC_ERR_INVALID_ARG, "invalid character 0x20"},
        {"redis://[::1", SDC_ERR_INVALID_ARG, "'[' without ']'"},
        {"redis://[::1]x", SDC_ERR_INVALID_ARG, "after ']'"},
        {"redis://host?db=1", SDC_ERR_INVALID_ARG, "query"},
        {"redis://u:p%4@host", SDC_ERR_INVALID_ARG, "percent-escape in the password"},
        {"redis://u:p%00@host", SDC_ERR_INVALID_ARG, "NUL"},
        {"redis://u:@host", SDC_ERR_INVALID_ARG, "empty password"},
        {"redis+unix://", SDC_ERR_INVALID_ARG, "absolute socket path"},
        {"redis+unix://host/tmp/x.sock", SDC_ERR_INVALID_ARG, "host given"},
        {"redis+unix:///tmp/x.sock?timeout=3", SDC_ERR_INVALID_ARG, "db=N"},
        {"redis+unix:///tmp/x.sock?db=x", SDC_ERR_INVALID_ARG, "database 'x'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sdc_redis_url_t u;
        sdc_error_t err = {0};
        sdc_status_t st = sdc_redis_url_parse(cases[i].url, &u, &err);
        CHECK_MSG(st == cases[i].code, "'%s': status %d, want %d (%s)", cases[i].url, st,
                  cases[i].code, err.msg);
        CHECK_MSG(strstr(err.msg, cases[i].needle), "'%s': message '%s' lacks '%s'",
                  cases[i].url, err.msg, cases[i].needle);
    }
    char long_path[200] = "redis+unix:///";
    memset(long_path + 14, 'a', 150);
    long_path[164] = '\0';
    sdc_redis_url_t u;
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_redis_url_parse(long_path, &u, &err), SDC_ERR_RANGE);
    /* The password never shows up in a message. */
    CHECK_EQ_INT(sdc_redis_url_parse("redis://u:hunter2@ho$t", &u, &err), SDC_ERR_INVALID_ARG);
    CHECK(!strstr(err.msg, "hunter2"));
    CHECK_EQ_INT(sdc_redis_url_parse("redis://u:hunter2@host:99999", &u, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK(!strstr(err.msg, "hunter2"));
}

/* ---- job params --------------------------------------------------------------- */

static void test_params_roundtrip(void)
{
    sdc_job_params_t p, q;
    sdc_error_t err = {0};
    const char *in = "{\"id\":\"job-1\",\"prompt\":\"\xe4\xb8\x80\xe5\x8f\xaa\xe7\x8c\xab "
                     "\\\"quoted\\\"\\n\",\"negative_prompt\":\"blurry\",\"width\":1024,"
                     "\"height\":768,\"steps\":30,\"seed\":\"18446744073709551615\","
                     "\"guidance\":3.25,\"trim_text\":false}";
    CHECK_EQ_INT(sdc_job_params_parse(&p, in, strlen(in), &err), SDC_OK);
    CHECK(strcmp(p.id, "job-1") == 0);
    CHECK(p.prompt && strcmp(p.prompt, "\xe4\xb8\x80\xe5\x8f\xaa\xe7\x8c\xab \"quoted\"\n") == 0);
    CHECK(p.negative_prompt && strcmp(p.negative_prompt, "blurry") == 0);
    CHECK(!p.embeds);
    CHECK(p.width == 1024 && p.height == 768 && p.steps == 30);
    CHECK(p.seed == UINT64_MAX);
    CHECK(p.has_guidance && p.guidance == 3.25);
    CHECK(p.trim_text == 0);

    char *json = NULL;
    size_t len = 0;
    CHECK_EQ_INT(sdc_job_params_to_json(&p, &json, &len, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_params_parse(&q, json, len, &err), SDC_OK);
    CHECK(strcmp(q.id, p.id) == 0 && strcmp(q.prompt, p.prompt) == 0);
    CHECK(strcmp(q.negative_prompt, p.negative_prompt) == 0);
    CHECK(q.width == p.width && q.height == p.height && q.steps == p.steps);
    CHECK(q.seed == p.seed && q.has_guidance && q.guidance == p.guidance);
    CHECK(q.trim_text == p.trim_text);
    char *json2 = NULL;
    size_t len2 = 0;
    CHECK_EQ_INT(sdc_job_params_to_json(&q, &json2, &len2, &err), SDC_OK);
    CHECK(len == len2 && json2 && memcmp(json, json2, len) == 0); /* canonical */
    free(json);
    free(json2);
    sdc_job_params_free(&q);
    sdc_job_params_free(&p);

    /* Defaults, embeds, small seed written as a number. */
    const char *in2 = "{\"id\":\"j2\",\"embeds\":\"/shared/emb/j2.safetensors\",\"seed\":7,"
                      "\"negative_prompt\":null}";
    CHECK_EQ_INT(sdc_job_params_parse(&p, in2, strlen(in2), &err), SDC_OK);
    CHECK(p.embeds && strcmp(p.embeds, "/shared/emb/j2.safetensors") == 0 && !p.prompt);
    CHECK(p.width == 0 && p.height == 0 && p.steps == SDC_JOB_STEPS_DEFAULT);
    CHECK(p.seed == 7 && !p.has_guidance && p.trim_text == 1 && !p.negative_prompt);
    CHECK_EQ_INT(sdc_job_params_to_json(&p, &json, &len, &err), SDC_OK);
    CHECK_MSG(strcmp(json, "{\"id\":\"j2\",\"embeds\":\"/shared/emb/j2.safetensors\","
                           "\"steps\":50,\"seed\":7,\"trim_text\":true}") == 0, "%s", json);
    free(json);
    sdc_job_params_free(&p);

    char id[SDC_JOB_ID_MAX + 1], id2[SDC_JOB_ID_MAX + 1];
    CHECK_EQ_INT(sdc_job_id_new(id, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_id_new(id2, &err), SDC_OK);
    CHECK(strlen(id) == 32 && strcmp(id, id2) != 0);
    CHECK_EQ_INT(sdc_job_id_check(id, "id", &err), SDC_OK);
}

static void test_params_malformed(void)
{
    static const struct {
        const char *json;
        sdc_status_t code;
        const char *needle;
    } cases[] = {
        {"{\"id\":\"a\",\"prompt\":\"x\"", SDC_ERR_FORMAT, "invalid JSON"},
        {"{\"id\":\"a\",\"prompt\":\"x\"} {}", SDC_ERR_FORMAT, "unexpected data"},
        {"[1,2]", SDC_ERR_FORMAT, "not an object"},
        {"", SDC_ERR_FORMAT, "invalid JSON"},
        {"{\"prompt\":\"x\"}", SDC_ERR_FORMAT, "missing 'id'"},
        {"{\"id\":7,\"prompt\":\"x\"}", SDC_ERR_FORMAT, "'id' must be a string, got a number"},
        {"{\"id\":\"a:b\",\"prompt\":\"x\"}", SDC_ERR_INVALID_ARG, "0x3a"},
        {"{\"id\":\"\",\"prompt\":\"x\"}", SDC_ERR_INVALID_ARG, "empty"},
        {"{\"id\":\"a\"}", SDC_ERR_INVALID_ARG, "exactly one of 'prompt' and 'embeds'"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"embeds\":\"/e\"}", SDC_ERR_INVALID_ARG, "exactly one"},
        {"{\"id\":\"a\",\"embeds\":\"/e\",\"negative_prompt\":\"n\"}", SDC_ERR_INVALID_ARG,
         "'negative_prompt' goes with 'prompt'"},
        {"{\"id\":\"a\",\"prompt\":42}", SDC_ERR_FORMAT, "'prompt' must be a string, got a number"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"steps\":\"20\"}", SDC_ERR_FORMAT,
         "'steps' must be an integer, got a string"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"steps\":20.5}", SDC_ERR_RANGE,
         "'steps' must be an integer"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"steps\":0}", SDC_ERR_RANGE, "1..10000, got 0"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"steps\":1e400}", SDC_ERR_RANGE, "'steps'"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"width\":99999999999999999999}", SDC_ERR_RANGE,
         "'width' must be an integer in 1..8192"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"width\":-64}", SDC_ERR_RANGE, "got -64"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"height\":8193}", SDC_ERR_RANGE, "'height'"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"width\":0}", SDC_ERR_RANGE, "got 0"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"seed\":-1}", SDC_ERR_RANGE, "'seed'"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"seed\":1e19}", SDC_ERR_RANGE, "decimal string"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"seed\":\"18446744073709551616\"}", SDC_ERR_RANGE,
         "larger than 2^64-1"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"seed\":\"0x10\"}", SDC_ERR_FORMAT, "not a decimal"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"seed\":true}", SDC_ERR_FORMAT, "got a boolean"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"guidance\":-0.5}", SDC_ERR_RANGE, "'guidance'"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"guidance\":[3]}", SDC_ERR_FORMAT, "got an array"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"trim_text\":1}", SDC_ERR_FORMAT,
         "'trim_text' must be a boolean"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"stesp\":20}", SDC_ERR_FORMAT, "unknown field 'stesp'"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"steps\":20,\"steps\":30}", SDC_ERR_FORMAT,
         "'steps' appears twice"},
        {"{\"id\":\"a\",\"prompt\":\"bad \xff byte\"}", SDC_ERR_FORMAT,
         "'prompt' is not valid UTF-8 (bad byte 0xff at offset 4)"},
        {"{\"id\":\"a\",\"prompt\":\"over\xc0\xaflong\"}", SDC_ERR_FORMAT, "not valid UTF-8"},
        {"{\"id\":\"a\",\"prompt\":\"cut \xe4\xb8\"}", SDC_ERR_FORMAT, "not valid UTF-8"},
        {"{\"id\":\"a\",\"prompt\":\"nul \\u0000 inside\"}", SDC_ERR_FORMAT, "\\u0000"},
        {"{\"id\":\"a\",\"prompt\":\"lone \\ud800\"}", SDC_ERR_FORMAT, "invalid JSON"},
        {"{\"id\":\"a\",\"embeds\":\"/e\\n\"}", SDC_ERR_FORMAT, "control byte 0x0a"},
        {"{\"id\":\"a\",\"embeds\":\"\"}", SDC_ERR_RANGE, "'embeds' is 0 bytes"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sdc_job_params_t p;
        sdc_error_t err = {0};
        sdc_status_t st = sdc_job_params_parse(&p, cases[i].json, strlen(cases[i].json), &err);
        CHECK_MSG(st == cases[i].code, "case %zu %s: status %d want %d (%s)", i, cases[i].json,
                  st, cases[i].code, err.msg);
        CHECK_MSG(strstr(err.msg, cases[i].needle), "case %zu: message '%s' lacks '%s'", i,
                  err.msg, cases[i].needle);
        CHECK(p.prompt == NULL && p.embeds == NULL); /* nothing leaks on failure */
    }
    /* An escaped backslash before u0000 is text, not a NUL. */
    const char *ok = "{\"id\":\"a\",\"prompt\":\"\\\\u0000\"}";
    sdc_job_params_t p;
    sdc_error_t err = {0};
    CHECK_EQ_INT(sdc_job_params_parse(&p, ok, strlen(ok), &err), SDC_OK);
    CHECK(p.prompt && strcmp(p.prompt, "\\u0000") == 0);
    sdc_job_params_free(&p);
    /* A raw NUL byte inside the text and oversized input. */
    const char nul[] = "{\"id\":\"a\",\"prompt\":\"x\0y\"}";
    CHECK_EQ_INT(sdc_job_params_parse(&p, nul, sizeof(nul) - 1, &err), SDC_ERR_FORMAT);
    CHECK(msg_has(&err, "NUL byte at offset 21"));
    size_t big = SDC_JOB_PROMPT_MAX + 64;
    char *huge = malloc(big + 64);
    int n = snprintf(huge, 64, "{\"id\":\"a\",\"prompt\":\"");
    memset(huge + n, 'x', SDC_JOB_PROMPT_MAX + 1);
    strcpy(huge + n + SDC_JOB_PROMPT_MAX + 1, "\"}");
    CHECK_EQ_INT(sdc_job_params_parse(&p, huge, strlen(huge), &err), SDC_ERR_RANGE);
    CHECK(msg_has(&err, "'prompt' is 32769 bytes"));
    free(huge);
    CHECK_EQ_INT(sdc_job_params_parse(&p, "{}", SDC_JOB_PARAMS_JSON_MAX + 1, &err), SDC_ERR_RANGE);
}

/* Image-to-image parameters: the image by size and CRC-32C, strength,
 * refine, and the steps strength leaves. */
static void test_params_image(void)
{
    sdc_job_params_t p;
    sdc_error_t err = {0};
    const char *in = "{\"id\":\"i\",\"embeds\":\"/e\",\"width\":96,\"height\":64,\"steps\":4,"
                     "\"init_image\":{\"crc32c\":\"0a1b2c3d\",\"bytes\":12515},\"strength\":0.6}";
    CHECK_EQ_INT(sdc_job_params_parse(&p, in, strlen(in), &err), SDC_OK);
    CHECK(p.image_bytes == 12515 && p.image_crc32c == 0x0a1b2c3du && p.has_strength);
    CHECK(p.strength == 0.6 && !p.refine);
    CHECK_EQ_INT(sdc_job_params_run_steps(&p), 3); /* int(4 - 2.4) = 1: steps 1..3 run */
    char *json = NULL;
    size_t len = 0;
    CHECK_EQ_INT(sdc_job_params_to_json(&p, &json, &len, &err), SDC_OK);
    CHECK_MSG(json && strcmp(json, "{\"id\":\"i\",\"embeds\":\"/e\",\"width\":96,\"height\":64,"
                           "\"steps\":4,\"seed\":0,\"trim_text\":true,\"init_image\":{\"bytes\":"
                           "12515,\"crc32c\":\"0a1b2c3d\"},\"strength\":0.6}") == 0, "%s", json);
    free(json);
    p.strength = 0.2;
    CHECK_EQ_INT(sdc_job_params_run_steps(&p), 1);
    p.strength = 1;
    CHECK_EQ_INT(sdc_job_params_run_steps(&p), 4);
    sdc_job_params_free(&p);
    /* Strength defaults to sdc-generate's; refine is written only when set,
     * with the refiner's fields (defaults sdc-generate's, the seed only
     * when given). */
    const char *in2 = "{\"id\":\"i\",\"embeds\":\"/e\",\"width\":64,\"height\":64,\"steps\":10,"
                      "\"init_image\":{\"bytes\":1,\"crc32c\":\"ffffffff\"},\"refine\":true,"
                      "\"refiner_embeds\":\"/r\"}";
    CHECK_EQ_INT(sdc_job_params_parse(&p, in2, strlen(in2), &err), SDC_OK);
    CHECK(p.strength == SDC_JOB_STRENGTH_DEFAULT && !p.has_strength && p.refine == 1);
    CHECK(p.refine_steps == 4 && p.refine_guidance == 3.25 && p.refine_strength == 0.25);
    CHECK(sdc_job_params_refine_seed(&p) == p.seed && !p.has_refine_seed);
    CHECK_EQ_INT(sdc_job_params_run_steps(&p), 6);
    json = NULL;
    CHECK_EQ_INT(sdc_job_params_to_json(&p, &json, &len, &err), SDC_OK);
    CHECK_MSG(json && strstr(json, "\"strength\":0.6,\"refine\":true,\"refiner_embeds\":\"/r\","
                             "\"refine_steps\":4,\"refine_guidance\":3.25,"
                             "\"refine_strength\":0.25}"), "%s", json);
    free(json);
    sdc_job_params_free(&p);
    const char *in3 = "{\"id\":\"r\",\"prompt\":\"x\",\"seed\":5,\"refine\":true,"
                      "\"refiner_embeds\":\"/r\",\"refine_steps\":2,\"refine_guidance\":5,"
                      "\"refine_strength\":0.5,\"refine_seed\":\"18446744073709551615\"}";
    CHECK_EQ_INT(sdc_job_params_parse(&p, in3, strlen(in3), &err), SDC_OK);
    CHECK(p.refine_steps == 2 && p.refine_guidance == 5 && p.refine_strength == 0.5);
    CHECK(sdc_job_params_refine_seed(&p) == UINT64_MAX);
    json = NULL;
    CHECK_EQ_INT(sdc_job_params_to_json(&p, &json, &len, &err), SDC_OK);
    CHECK_MSG(json && strstr(json, "\"refine_seed\":\"18446744073709551615\"}"), "%s", json);
    free(json);
    sdc_job_params_free(&p);
    const char *plain = "{\"id\":\"t\",\"prompt\":\"x\",\"steps\":7}";
    CHECK_EQ_INT(sdc_job_params_parse(&p, plain, strlen(plain), &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_params_run_steps(&p), 7);
    sdc_job_params_free(&p);

#define IMG "\"init_image\":{\"bytes\":10,\"crc32c\":\"00000000\"}"
#define SIZE "\"width\":64,\"height\":64"
    static const struct {
        const char *json;
        sdc_status_t code;
        const char *needle;
    } cases[] = {
        {"{\"id\":\"a\",\"prompt\":\"x\",\"strength\":0.5}", SDC_ERR_INVALID_ARG,
         "'strength' goes with 'init_image'"},
        {"{\"id\":\"a\",\"prompt\":\"x\"," SIZE "," IMG ",\"strength\":1.5}", SDC_ERR_RANGE,
         "'strength' must be in 0..1, got 1.5"},
        {"{\"id\":\"a\",\"prompt\":\"x\"," SIZE "," IMG ",\"strength\":-0.1}", SDC_ERR_RANGE,
         "'strength' must be in 0..1"},
        {"{\"id\":\"a\",\"prompt\":\"x\"," SIZE "," IMG ",\"strength\":\"0.5\"}", SDC_ERR_FORMAT,
         "'strength' must be a number, got a string"},
        {"{\"id\":\"a\",\"prompt\":\"x\"," SIZE "," IMG ",\"strength\":0}", SDC_ERR_RANGE,
         "'strength' 0 runs none of the 50 steps"},
        {"{\"id\":\"a\",\"prompt\":\"x\"," IMG "}", SDC_ERR_INVALID_ARG,
         "states its 'width' and 'height'"},
        {"{\"id\":\"a\",\"prompt\":\"x\"," SIZE ",\"init_image\":\"cat.png\"}", SDC_ERR_FORMAT,
         "'init_image' must be an object"},
        {"{\"id\":\"a\",\"prompt\":\"x\"," SIZE ",\"init_image\":{\"bytes\":10}}", SDC_ERR_FORMAT,
         "'init_image' lacks 'crc32c'"},
        {"{\"id\":\"a\",\"prompt\":\"x\"," SIZE ",\"init_image\":{\"bytes\":0,\"crc32c\":\"00000000\"}}",
         SDC_ERR_RANGE, "'init_image.bytes' must be an integer in 1.."},
        {"{\"id\":\"a\",\"prompt\":\"x\"," SIZE ",\"init_image\":{\"bytes\":1e12,\"crc32c\":\"00000000\"}}",
         SDC_ERR_RANGE, "'init_image.bytes'"},
        {"{\"id\":\"a\",\"prompt\":\"x\"," SIZE ",\"init_image\":{\"bytes\":9,\"crc32c\":\"0000000G\"}}",
         SDC_ERR_FORMAT, "8 lowercase hex digits"},
        {"{\"id\":\"a\",\"prompt\":\"x\"," SIZE ",\"init_image\":{\"bytes\":9,\"crc32c\":7}}",
         SDC_ERR_FORMAT, "8 lowercase hex digits"},
        {"{\"id\":\"a\",\"prompt\":\"x\"," SIZE ",\"init_image\":{\"bytes\":9,\"crc32c\":\"00000000\","
         "\"path\":\"/x\"}}", SDC_ERR_FORMAT, "unknown field 'init_image.path'"},
        {"{\"id\":\"a\",\"prompt\":\"x\"," SIZE ",\"init_image\":{\"bytes\":9,\"bytes\":9,"
         "\"crc32c\":\"00000000\"}}", SDC_ERR_FORMAT, "'init_image.bytes' appears twice"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"refine\":\"yes\"}", SDC_ERR_FORMAT,
         "'refine' must be a boolean"},
        {"{\"id\":\"a\",\"embeds\":\"/e\",\"refine\":true}", SDC_ERR_INVALID_ARG,
         "'refine' needs 'refiner_embeds' or a 'prompt'"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"refine_steps\":2}", SDC_ERR_INVALID_ARG,
         "'refine_steps' goes with 'refine': true"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"refiner_embeds\":\"/r\"}", SDC_ERR_INVALID_ARG,
         "'refiner_embeds' goes with 'refine': true"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"refine\":true,\"refiner_embeds\":\"/r\","
         "\"refine_steps\":0}", SDC_ERR_RANGE, "'refine_steps' must be an integer in 1..1000"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"refine\":true,\"refiner_embeds\":\"/r\","
         "\"refine_guidance\":0}", SDC_ERR_RANGE, "'refine_guidance' 0 must be above 0"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"refine\":true,\"refiner_embeds\":\"/r\","
         "\"refine_strength\":-1}", SDC_ERR_RANGE, "'refine_strength' must be in 0..1"},
        {"{\"id\":\"a\",\"prompt\":\"x\",\"refine\":true,\"refiner_embeds\":\"/r\","
         "\"refine_seed\":\"x\"}", SDC_ERR_FORMAT, "'refine_seed' string"},
    };
#undef IMG
#undef SIZE
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sdc_status_t st = sdc_job_params_parse(&p, cases[i].json, strlen(cases[i].json), &err);
        CHECK_MSG(st == cases[i].code, "case %zu %s: status %d want %d (%s)", i, cases[i].json,
                  st, cases[i].code, err.msg);
        CHECK_MSG(strstr(err.msg, cases[i].needle), "case %zu: message '%s' lacks '%s'", i,
                  err.msg, cases[i].needle);
    }
    /* Filled in code: the same checks. */
    sdc_job_params_init(&p);
    snprintf(p.id, sizeof(p.id), "c");
    p.prompt = strdup("x");
    p.has_strength = 1;
    CHECK_EQ_INT(sdc_job_params_validate(&p, &err), SDC_ERR_INVALID_ARG);
    p.image_bytes = 5;
    p.width = p.height = 64;
    p.strength = NAN;
    CHECK_EQ_INT(sdc_job_params_validate(&p, &err), SDC_ERR_RANGE);
    p.strength = 0.5;
    CHECK_EQ_INT(sdc_job_params_validate(&p, &err), SDC_OK);
    p.refine = 2;
    CHECK_EQ_INT(sdc_job_params_validate(&p, &err), SDC_ERR_INVALID_ARG);
    sdc_job_params_free(&p);
}

/* The whole file in memory (tests/data). */
static uint8_t *read_data(const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/goldens/%s", test_data_dir(), name);
    FILE *f = fopen(path, "rb");
    uint8_t *buf = f ? malloc(1 << 20) : NULL;
    *len = buf ? fread(buf, 1, 1 << 20, f) : 0;
    if (f)
        fclose(f);
    return buf;
}

/* The PNG signature and an IHDR claiming 100000 x 100000 RGB8, nothing else. */
static const uint8_t huge_png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13,
                                   'I', 'H', 'D', 'R', 0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0,
                                   8, 2, 0, 0, 0, 0x27, 0x30, 0x9c, 0x9f};

static void test_image_check(void)
{
    sdc_error_t err = {0};
    sdc_job_image_t img;
    size_t len = 0;
    uint8_t *png = read_data("img2img_init_64x96.png", &len);
    CHECK(png && len == 12515);
    if (!png)
        return;
    CHECK_EQ_INT(sdc_job_image_check(png, len, 0, &img, &err), SDC_OK);
    CHECK(img.width == 96 && img.height == 64 && img.len == len && img.data == png);
    CHECK(img.crc32c == sdc_wire_crc32c(0, png, len));
    CHECK_EQ_INT(sdc_job_image_check(png, len, len - 1, &img, &err), SDC_ERR_RANGE);
    CHECK(msg_has(&err, "12515 bytes, over the limit of 12514 bytes"));
    CHECK_EQ_INT(sdc_job_image_check(png, 2000, 0, &img, &err), SDC_ERR_FORMAT);
    CHECK(msg_has(&err, "truncated"));
    CHECK_EQ_INT(sdc_job_image_check((const uint8_t *)"GIF89a....", 10, 0, &img, &err),
                 SDC_ERR_FORMAT);
    CHECK(msg_has(&err, "not a PNG or JPEG"));
    CHECK_EQ_INT(sdc_job_image_check(png, 0, 0, &img, &err), SDC_ERR_FORMAT);
    CHECK(msg_has(&err, "empty"));
    CHECK_EQ_INT(sdc_job_image_check(huge_png, sizeof(huge_png), 0, &img, &err), SDC_ERR_RANGE);
    CHECK(msg_has(&err, "100000 x 100000 pixels exceeds"));
    size_t jlen = 0;
    uint8_t *jpg = read_data("image_rgb.jpg", &jlen);
    CHECK(jpg && sdc_job_image_check(jpg, jlen, 0, &img, &err) == SDC_OK);
    CHECK(img.width == 40 && img.height == 24);
    free(jpg);

    /* The job's size follows the image, or must equal it. */
    sdc_job_params_t p;
    params_set(&p, "img", "x", 4);
    CHECK_EQ_INT(sdc_job_image_check(png, len, 0, &img, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_params_set_image(&p, &img, &err), SDC_ERR_INVALID_ARG);
    CHECK(msg_has(&err, "input image is 96x64 but the job's size is 64x96"));
    p.width = p.height = 0;
    CHECK_EQ_INT(sdc_job_params_set_image(&p, &img, &err), SDC_OK);
    CHECK(p.width == 96 && p.height == 64 && p.image_bytes == len && p.image_crc32c == img.crc32c);
    sdc_job_params_free(&p);
    free(png);
}

static void test_state_table(void)
{
    CHECK(sdc_job_transition_allowed(SDC_JOB_QUEUED, SDC_JOB_ENCODING));
    CHECK(sdc_job_transition_allowed(SDC_JOB_ENCODING, SDC_JOB_DENOISING));
    CHECK(sdc_job_transition_allowed(SDC_JOB_DENOISING, SDC_JOB_DENOISING));
    CHECK(sdc_job_transition_allowed(SDC_JOB_DENOISING, SDC_JOB_DECODING));
    CHECK(sdc_job_transition_allowed(SDC_JOB_DECODING, SDC_JOB_DONE));
    CHECK(sdc_job_transition_allowed(SDC_JOB_DECODING, SDC_JOB_QUEUED));
    CHECK(sdc_job_transition_allowed(SDC_JOB_QUEUED, SDC_JOB_FAILED));
    CHECK(!sdc_job_transition_allowed(SDC_JOB_QUEUED, SDC_JOB_DONE));
    CHECK(!sdc_job_transition_allowed(SDC_JOB_QUEUED, SDC_JOB_DENOISING));
    CHECK(!sdc_job_transition_allowed(SDC_JOB_DONE, SDC_JOB_QUEUED));
    CHECK(!sdc_job_transition_allowed(SDC_JOB_DONE, SDC_JOB_FAILED));
    CHECK(!sdc_job_transition_allowed(SDC_JOB_FAILED, SDC_JOB_QUEUED));
    CHECK(!sdc_job_transition_allowed(SDC_JOB_DECODING, SDC_JOB_DENOISING));
    CHECK(sdc_job_transition_allowed(SDC_JOB_DECODING, SDC_JOB_REFINING));
    CHECK(sdc_job_transition_allowed(SDC_JOB_REFINING, SDC_JOB_DONE));
    CHECK(sdc_job_transition_allowed(SDC_JOB_REFINING, SDC_JOB_QUEUED));
    CHECK(sdc_job_transition_allowed(SDC_JOB_REFINING, SDC_JOB_FAILED));
    CHECK(!sdc_job_transition_allowed(SDC_JOB_DENOISING, SDC_JOB_REFINING));
    CHECK(!sdc_job_transition_allowed(SDC_JOB_REFINING, SDC_JOB_DECODING));
    CHECK_EQ_INT(sdc_job_state_parse("refining", 8), SDC_JOB_REFINING);
    CHECK_EQ_INT(sdc_job_state_parse("denoising", 9), SDC_JOB_DENOISING);
    CHECK_EQ_INT(sdc_job_state_parse("denois", 6), -1);
    CHECK(strcmp(sdc_job_state_name(SDC_JOB_FAILED), "failed") == 0);
    /* Cancelled: reachable from every state before the end, and final. */
    for (int s = SDC_JOB_QUEUED; s <= SDC_JOB_DECODING; s++)
        CHECK(sdc_job_transition_allowed((sdc_job_state_t)s, SDC_JOB_CANCELLED));
    for (int s = 0; s < SDC_JOB_STATE_COUNT; s++)
        CHECK(!sdc_job_transition_allowed(SDC_JOB_CANCELLED, (sdc_job_state_t)s));
    CHECK(!sdc_job_transition_allowed(SDC_JOB_DONE, SDC_JOB_CANCELLED));
    CHECK(!sdc_job_transition_allowed(SDC_JOB_FAILED, SDC_JOB_CANCELLED));
    CHECK(sdc_job_state_final(SDC_JOB_DONE) && sdc_job_state_final(SDC_JOB_FAILED) &&
          sdc_job_state_final(SDC_JOB_CANCELLED));
    CHECK(!sdc_job_state_final(SDC_JOB_QUEUED) && !sdc_job_state_final(SDC_JOB_DECODING));
    CHECK_EQ_INT(sdc_job_state_parse("cancelled", 9), SDC_JOB_CANCELLED);
}

/* ---- server-backed ------------------------------------------------------------- */

static void test_connect_and_prefix(void)
{
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/2", main_srv.port);
    sdc_redis_t *tcp = open_prefixed(url, "test-pfx:");
    sdc_redis_t *ux = open_main();
    CHECK(tcp && ux);
    if (!tcp || !ux)
        goto out;
    flush(ux);
    sdc_jobs_t q;
    CHECK_EQ_INT(setup_queue(&q, tcp), 0);
    CHECK_EQ_INT(submit(&q, "pfx-job", 4), 0);
    /* db 2 with the custom prefix; db 0 (the unix client) sees nothing. */
    CHECK_EQ_INT(cmd_int(tcp, "EXISTS %s", "test-pfx:job:pfx-job", NULL), 1);
    CHECK_EQ_INT(cmd_int(tcp, "XLEN %s", "test-pfx:jobs", NULL), 1);
    CHECK_EQ_INT(cmd_int(ux, "EXISTS %s", "test-pfx:job:pfx-job", NULL), 0);
    CHECK_EQ_INT(cmd_int(ux, "DBSIZE", NULL, NULL), 0);
    flush(tcp);

    /* Nothing listens: a fast, clear failure. */
    sdc_redis_t *r = NULL;
    sdc_error_t err = {0};
    sdc_redis_opts_t o = {.url = "redis+unix:///nonexistent/redis.sock"};
    CHECK_EQ_INT(sdc_redis_open(&r, &o, &err), SDC_ERR_IO);
    CHECK(msg_has(&err, "/nonexistent/redis.sock: connect"));
    o.url = "redis://127.0.0.1:6379";
    o.prefix = "bad prefix";
    CHECK_EQ_INT(sdc_redis_open(&r, &o, &err), SDC_ERR_INVALID_ARG);
    CHECK(msg_has(&err, "0x20"));

    char key[32];
    CHECK_EQ_INT(sdc_redis_key(ux, key, sizeof(key), &err, "job:%s", "abc"), SDC_OK);
    CHECK(strcmp(key, "sdc:job:abc") == 0);
    CHECK_EQ_INT(sdc_redis_key(ux, key, 8, &err, "job:%s", "abc"), SDC_ERR_RANGE);
out:
    sdc_redis_close(tcp);
    sdc_redis_close(ux);
}

static void test_reply_types(void)
{
    sdc_redis_t *r = open_main();
    CHECK(r);
    if (!r)
        return;
    flush(r);
    sdc_jobs_t q;
    sdc_error_t err = {0};
    CHECK_EQ_INT(setup_queue(&q, r), 0);
    redisReply *rep = cmd(r, "SET %s %s", "k", "text");
    CHECK(rep && rep->type == REDIS_REPLY_STATUS);
    sdc_redis_reply_free(rep);
    rep = cmd(r, "GET %s", "k");
    long long v;
    CHECK_EQ_INT(sdc_redis_expect(rep, REDIS_REPLY_INTEGER, "GET k", &err), SDC_ERR_FORMAT);
    CHECK(msg_has(&err, "GET k: expected integer, got string"));
    CHECK_EQ_INT(sdc_redis_reply_int(rep, "GET k", &v, &err), SDC_ERR_FORMAT);
    CHECK(msg_has(&err, "'text' is not an integer"));
    CHECK_EQ_INT(sdc_redis_expect_array(rep, 2, "GET k", &err), SDC_ERR_FORMAT);
    CHECK_EQ_INT(sdc_redis_expect(NULL, REDIS_REPLY_STRING, "none", &err), SDC_ERR_FORMAT);
    sdc_redis_reply_free(rep);

    /* A server error reply is an error with the server's words. */
    CHECK_EQ_INT(sdc_redis_command(r, &rep, &err, "HGET %s f", "k"), SDC_ERR_FORMAT);
    CHECK(rep == NULL && msg_has(&err, "WRONGTYPE"));
    CHECK_EQ_INT(sdc_redis_command(r, &rep, &err, "NOSUCHCOMMAND"), SDC_ERR_IO);
    CHECK(msg_has(&err, "unknown command"));

    /* Keys of the wrong type or with garbage are errors, never crashes. */
    sdc_redis_reply_free(cmd(r, "SET sdc:job:wrong %s", "not a hash"));
    sdc_job_status_t s;
    CHECK_EQ_INT(sdc_job_get(&q, "wrong", &s, &err), SDC_ERR_FORMAT);
    CHECK(msg_has(&err, "WRONGTYPE"));
    sdc_job_outcome_t oc;
    CHECK_EQ_INT(sdc_job_advance(&q, "wrong", 1, SDC_JOB_DENOISING, 0, &oc, &err), SDC_ERR_IO);
    CHECK(msg_has(&err, "job wrong: advance: redis") && msg_has(&err, "WRONGTYPE"));
    sdc_redis_reply_free(cmd(r, "HSET sdc:job:garbage state %s attempt %s", "sleeping", "1"));
    CHECK_EQ_INT(sdc_job_get(&q, "garbage", &s, &err), SDC_ERR_FORMAT);
    CHECK(msg_has(&err, "unknown state 'sleeping'"));
    sdc_redis_reply_free(cmd(r, "HSET sdc:job:garbage2 state %s attempt %s", "queued", "one"));
    CHECK_EQ_INT(sdc_job_get(&q, "garbage2", &s, &err), SDC_ERR_FORMAT);
    CHECK(msg_has(&err, "'one' is not an integer"));
    CHECK_EQ_INT(sdc_job_get(&q, "absent", &s, &err), SDC_ERR_NOT_FOUND);
    sdc_job_params_t p;
    sdc_redis_reply_free(cmd(r, "HSET sdc:job:badparams state queued attempt 1 params %s",
                             "{\"id\":\"badparams\",\"prompt\":3}"));
    CHECK_EQ_INT(sdc_job_get_params(&q, "badparams", &p, &err), SDC_ERR_FORMAT);
    CHECK(msg_has(&err, "job badparams: stored params: job params: 'prompt' must be a string"));
    sdc_redis_reply_free(cmd(r, "SET sdc:leader %b", "a\0b", (size_t)3));
    char leader[SDC_JOB_ID_MAX + 1];
    int present;
    CHECK_EQ_INT(sdc_leader_get(r, leader, &present, &err), SDC_ERR_FORMAT);
    sdc_redis_close(r);
}

static const unsigned char png1[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 0x0d,
                                     'I', 'H', 'D', 'R', 0, 1, 2, 3};
static const unsigned char png2[] = {0x89, 'P', 'N', 'G', 0, 'o', 't', 'h', 'e', 'r'};

static void test_round_trip(void)
{
    sdc_redis_t *r = open_main();
    CHECK(r);
    if (!r)
        return;
    flush(r);
    sdc_jobs_t q;
    sdc_error_t err = {0};
    sdc_job_outcome_t oc;
    CHECK_EQ_INT(setup_queue(&q, r), 0);
    CHECK_EQ_INT(sdc_jobs_group_create(&q, &err), SDC_OK); /* idempotent */

    sdc_job_params_t p;
    params_set(&p, "rt-1", "a red fox in snow", 3);
    int existed = -1;
    CHECK_EQ_INT(sdc_job_submit(&q, &p, &existed, &err), SDC_OK);
    CHECK_EQ_INT(existed, 0);
    CHECK_EQ_INT(sdc_job_submit(&q, &p, &existed, &err), SDC_OK); /* a retried submit */
    CHECK_EQ_INT(existed, 1);
    p.steps = 4;
    CHECK_EQ_INT(sdc_job_submit(&q, &p, &existed, &err), SDC_ERR_INVALID_ARG);
    CHECK(msg_has(&err, "exists with other params"));
    p.steps = 3;
    sdc_queue_depth_t d;
    CHECK_EQ_INT(sdc_jobs_depth(&q, &d, &err), SDC_OK);
    CHECK(d.length == 1 && d.pending == 0 && d.waiting == 1);

    sdc_job_status_t s;
    CHECK_EQ_INT(sdc_job_get(&q, "rt-1", &s, &err), SDC_OK);
    CHECK(s.state == SDC_JOB_QUEUED && s.attempt == 1 && s.steps == 3 && s.step == 0);
    CHECK(s.created_ms > 1600000000000LL && s.pipeline == -1 && !s.has_result);

    sdc_job_entry_t e;
    CHECK_EQ_INT(claim_one(&q, "coord-a", &e), 0);
    CHECK(strcmp(e.job_id, "rt-1") == 0 && e.attempt == 1 && e.problem[0] == '\0');
    sdc_job_params_t got;
    CHECK_EQ_INT(sdc_job_params_parse(&got, e.params_json, e.params_len, &err), SDC_OK);
    CHECK(strcmp(got.prompt, "a red fox in snow") == 0 && got.seed == 42 && got.height == 96);
    sdc_job_params_free(&got);
    CHECK_EQ_INT(sdc_job_get_params(&q, "rt-1", &got, &err), SDC_OK);
    CHECK(got.steps == 3 && got.width == 64);
    sdc_job_params_free(&got);
    CHECK_EQ_INT(sdc_jobs_depth(&q, &d, &err), SDC_OK);
    CHECK(d.length == 1 && d.pending == 1 && d.waiting == 0);

    /* Nothing more to claim: returns empty after the block time. */
    sdc_job_entry_t *none = NULL;
    size_t n = 9;
    double t0 = sdc_now();
    CHECK_EQ_INT(sdc_job_claim(&q, "coord-a", 5, 150, 0, &none, &n, &err), SDC_OK);
    CHECK(n == 0 && none == NULL);
    CHECK(sdc_now() - t0 >= 0.14);

    CHECK_EQ_INT(sdc_job_start(&q, "rt-1", 1, e.entry_id, "coord-a", 2, &oc, &err), SDC_OK);
    CHECK_EQ_INT(oc, SDC_JOB_APPLIED);
    CHECK_EQ_INT(sdc_job_start(&q, "rt-1", 1, e.entry_id, "coord-a", 2, &oc, &err), SDC_OK);
    CHECK_EQ_INT(oc, SDC_JOB_UNCHANGED);
    for (int k = 0; k <= 3; k++) {
        CHECK_EQ_INT(sdc_job_advance(&q, "rt-1", 1, SDC_JOB_DENOISING, k, &oc, &err), SDC_OK);
        CHECK_EQ_INT(oc, SDC_JOB_APPLIED);
    }
    CHECK_EQ_INT(sdc_job_advance(&q, "rt-1", 1, SDC_JOB_DENOISING, 3, &oc, &err), SDC_OK);
    CHECK_EQ_INT(oc, SDC_JOB_UNCHANGED);
    CHECK_EQ_INT(sdc_job_get(&q, "rt-1", &s, &err), SDC_OK);
    CHECK(s.state == SDC_JOB_DENOISING && s.step == 3 && s.pipeline == 2);
    CHECK(strcmp(s.owner, "coord-a") == 0 && strcmp(s.entry_id, e.entry_id) == 0);
    CHECK_EQ_INT(sdc_job_advance(&q, "rt-1", 1, SDC_JOB_DECODING, 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_complete(&q, "rt-1", 1, png1, sizeof(png1), &oc, &err), SDC_OK);
    CHECK_EQ_INT(oc, SDC_JOB_APPLIED);

    CHECK_EQ_INT(sdc_job_get(&q, "rt-1", &s, &err), SDC_OK);
    CHECK(s.state == SDC_JOB_DONE && s.has_result && s.step == 3);
    /* Each state's entry time, in order; never-entered states stay 0. */
    CHECK(s.state_ms[SDC_JOB_QUEUED] == s.created_ms);
    CHECK(s.state_ms[SDC_JOB_ENCODING] > 0 && s.state_ms[SDC_JOB_ENCODING] <= s.state_ms[SDC_JOB_DENOISING]);
    CHECK(s.state_ms[SDC_JOB_DENOISING] <= s.state_ms[SDC_JOB_DECODING]);
    CHECK(s.state_ms[SDC_JOB_DECODING] <= s.state_ms[SDC_JOB_DONE]);
    CHECK(s.state_ms[SDC_JOB_DONE] == s.updated_ms && s.state_ms[SDC_JOB_FAILED] == 0);
    unsigned char *png = NULL;
    size_t len = 0;
    CHECK_EQ_INT(sdc_job_result_get(&q, "rt-1", &png, &len, &err), SDC_OK);
    CHECK(len == sizeof(png1) && png && memcmp(png, png1, len) == 0);
    free(png);
    CHECK_EQ_INT(sdc_jobs_depth(&q, &d, &err), SDC_OK);
    CHECK(d.length == 0 && d.pending == 0 && d.waiting == 0);
    /* queued, encoding, 4 denoising steps, decoding, done. */
    CHECK_EQ_INT(count_events(r, "rt-1", NULL), 8);
    CHECK_EQ_INT(count_events(r, "rt-1", "denoising"), 4);
    long long ttl = cmd_int(r, "PTTL %s", "sdc:result:rt-1", NULL);
    CHECK(ttl > 23 * 3600 * 1000LL && ttl <= 24 * 3600 * 1000LL);
    ttl = cmd_int(r, "PTTL %s", "sdc:job:rt-1", NULL);
    CHECK(ttl > 6 * 24 * 3600 * 1000LL);
    CHECK(cmd_int(r, "PTTL %s", "sdc:job:rt-1:events", NULL) > 0);
    CHECK_EQ_INT(sdc_job_result_get(&q, "nope", &png, &len, &err), SDC_ERR_NOT_FOUND);

    free(e.params_json);
    sdc_job_params_free(&p);
    sdc_redis_close(r);
}

static void test_invalid_transitions(void)
{
    sdc_redis_t *r = open_main();
    CHECK(r);
    if (!r)
        return;
    flush(r);
    sdc_jobs_t q;
    sdc_error_t err = {0};
    sdc_job_outcome_t oc;
    CHECK_EQ_INT(setup_queue(&q, r), 0);
    CHECK_EQ_INT(submit(&q, "bad-1", 5), 0);
    sdc_job_entry_t e;
    CHECK_EQ_INT(claim_one(&q, "coord-a", &e), 0);

    CHECK_EQ_INT(sdc_job_complete(&q, "bad-1", 1, png1, sizeof(png1), &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_BAD_STATE);
    CHECK(msg_has(&err, "job bad-1: cannot complete: the job is queued (attempt 1)"));
    CHECK_EQ_INT(sdc_job_advance(&q, "bad-1", 1, SDC_JOB_DECODING, 0, &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_BAD_STATE);
    CHECK_EQ_INT(sdc_job_advance(&q, "bad-1", 1, SDC_JOB_DENOISING, 0, &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_job_advance(&q, "bad-1", 1, SDC_JOB_DONE, 0, &oc, &err), SDC_ERR_INVALID_ARG);
    CHECK(msg_has(&err, "not done"));
    CHECK_EQ_INT(sdc_job_requeue(&q, "bad-1", 1, 3, "x", NULL, &oc, &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_BAD_STATE);
    CHECK_EQ_INT(sdc_job_start(&q, "bad-1", 2, e.entry_id, "coord-a", 0, &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_STALE_ATTEMPT);
    CHECK(msg_has(&err, "cannot start attempt 2: the job is at attempt 1 (state queued)"));
    CHECK_EQ_INT(sdc_job_start(&q, "missing", 1, e.entry_id, "coord-a", 0, &oc, &err),
                 SDC_ERR_NOT_FOUND);
    CHECK_EQ_INT(oc, SDC_JOB_NO_JOB);
    CHECK_EQ_INT(sdc_job_start(&q, "bad-1", 1, "not-an-id", "coord-a", 0, &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_job_start(&q, "bad 1", 1, e.entry_id, "coord-a", 0, &oc, &err),
                 SDC_ERR_INVALID_ARG);

    CHECK_EQ_INT(sdc_job_start(&q, "bad-1", 1, e.entry_id, "coord-a", 0, &oc, &err), SDC_OK);
    /* Another coordinator starting the same job is refused. */
    CHECK_EQ_INT(sdc_job_start(&q, "bad-1", 1, e.entry_id, "coord-b", 0, &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_BAD_STATE);
    CHECK_EQ_INT(sdc_job_advance(&q, "bad-1", 1, SDC_JOB_DENOISING, 2, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_advance(&q, "bad-1", 1, SDC_JOB_DENOISING, 1, &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_BAD_STEP);
    CHECK(msg_has(&err, "at step 2"));
    CHECK_EQ_INT(sdc_job_advance(&q, "bad-1", 1, SDC_JOB_DENOISING, 6, &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_BAD_STEP);
    CHECK_EQ_INT(sdc_job_advance(&q, "bad-1", 1, SDC_JOB_DENOISING, -1, &oc, &err), SDC_ERR_RANGE);
    CHECK_EQ_INT(sdc_job_complete(&q, "bad-1", 1, png1, sizeof(png1), &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_job_complete(&q, "bad-1", 1, png1, 0, &oc, &err), SDC_ERR_RANGE);
    CHECK_EQ_INT(sdc_job_fail(&q, "bad-1", 1, "", &oc, &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_job_fail(&q, "bad-1", 1, "oom on stage 2", &oc, &err), SDC_OK);
    /* Terminal: nothing moves a failed job. */
    CHECK_EQ_INT(sdc_job_fail(&q, "bad-1", 1, "again", &oc, &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_job_advance(&q, "bad-1", 1, SDC_JOB_DECODING, 0, &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_job_requeue(&q, "bad-1", 1, 3, "x", NULL, &oc, &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_BAD_STATE);
    sdc_job_status_t s;
    CHECK_EQ_INT(sdc_job_get(&q, "bad-1", &s, &err), SDC_OK);
    CHECK(s.state == SDC_JOB_FAILED && strcmp(s.error, "oom on stage 2") == 0);
    CHECK_EQ_INT(count_events(r, "bad-1", "failed"), 1);
    CHECK_EQ_INT(cmd_int(r, "XLEN %s", "sdc:dead", NULL), 1);
    free(e.params_json);
    sdc_redis_close(r);
}

/* A client's cancel: from queued and from running states; final after it;
 * the running attempt's stream entry acked; nothing a worker does
 * afterwards overwrites it. */
static void test_cancel(void)
{
    sdc_redis_t *r = open_main();
    CHECK(r);
    if (!r)
        return;
    flush(r);
    sdc_jobs_t q;
    sdc_error_t err = {0};
    sdc_job_outcome_t oc;
    sdc_job_state_t now;
    sdc_job_status_t s;
    CHECK_EQ_INT(setup_queue(&q, r), 0);

    /* Queued: cancelled; the coordinator later finds the entry final. */
    CHECK_EQ_INT(submit(&q, "cq", 4), 0);
    CHECK_EQ_INT(sdc_job_cancel(&q, "cq", &now, &oc, &err), SDC_OK);
    CHECK_EQ_INT(oc, SDC_JOB_APPLIED);
    CHECK_EQ_INT(now, SDC_JOB_CANCELLED);
    CHECK_EQ_INT(sdc_job_cancel(&q, "cq", &now, &oc, &err), SDC_OK);
    CHECK_EQ_INT(oc, SDC_JOB_UNCHANGED);
    sdc_job_entry_t e;
    CHECK_EQ_INT(claim_one(&q, "coord-a", &e), 0);
    CHECK_EQ_INT(sdc_job_start(&q, "cq", 1, e.entry_id, "coord-a", 0, &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_BAD_STATE);
    CHECK(msg_has(&err, "the job is cancelled"));
    free(e.params_json);
    CHECK_EQ_INT(sdc_job_get(&q, "cq", &s, &err), SDC_OK);
    CHECK(s.state == SDC_JOB_CANCELLED && s.state_ms[SDC_JOB_CANCELLED] > 0 &&
          s.state_ms[SDC_JOB_QUEUED] > 0 && s.state_ms[SDC_JOB_ENCODING] == 0);
    CHECK_EQ_INT(count_events(r, "cq", "cancelled"), 1);
    CHECK(cmd_int(r, "PTTL %s", "sdc:job:cq", NULL) > 0);

    /* Denoising: the entry is acked at once; every later write is refused. */
    CHECK_EQ_INT(submit(&q, "cr", 4), 0);
    CHECK_EQ_INT(claim_one(&q, "coord-a", &e), 0);
    CHECK_EQ_INT(sdc_job_start(&q, "cr", 1, e.entry_id, "coord-a", 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_advance(&q, "cr", 1, SDC_JOB_DENOISING, 1, &oc, &err), SDC_OK);
    sdc_queue_depth_t d;
    CHECK_EQ_INT(sdc_jobs_depth(&q, &d, &err), SDC_OK);
    CHECK_EQ_INT(d.pending, 2); /* cq's entry was claimed above and never acked */
    CHECK_EQ_INT(sdc_job_cancel(&q, "cr", &now, &oc, &err), SDC_OK);
    CHECK_EQ_INT(oc, SDC_JOB_APPLIED);
    CHECK_EQ_INT(sdc_jobs_depth(&q, &d, &err), SDC_OK);
    CHECK_EQ_INT(d.pending, 1);
    CHECK_EQ_INT(sdc_job_advance(&q, "cr", 1, SDC_JOB_DENOISING, 2, &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_BAD_STATE);
    CHECK_EQ_INT(sdc_job_advance(&q, "cr", 1, SDC_JOB_DECODING, 0, &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_job_complete(&q, "cr", 1, png1, sizeof(png1), &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_job_fail(&q, "cr", 1, "late failure", &oc, &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_job_requeue(&q, "cr", 1, 3, "late requeue", NULL, &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_BAD_STATE);
    CHECK_EQ_INT(sdc_job_get(&q, "cr", &s, &err), SDC_OK);
    CHECK(s.state == SDC_JOB_CANCELLED && s.step == 1 && !s.has_result && s.error[0] == 0);
    CHECK_EQ_INT(cmd_int(r, "EXISTS %s", "sdc:result:cr", NULL), 0);
    free(e.params_json);

    /* Done and failed jobs stay what they are; an unknown job is not found. */
    CHECK_EQ_INT(submit(&q, "cd", 1), 0);
    CHECK_EQ_INT(claim_one(&q, "coord-a", &e), 0);
    CHECK_EQ_INT(sdc_job_start(&q, "cd", 1, e.entry_id, "coord-a", 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_advance(&q, "cd", 1, SDC_JOB_DENOISING, 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_advance(&q, "cd", 1, SDC_JOB_DECODING, 1, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_complete(&q, "cd", 1, png1, sizeof(png1), &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_cancel(&q, "cd", &now, &oc, &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_BAD_STATE);
    CHECK(msg_has(&err, "the job is done"));
    CHECK_EQ_INT(sdc_job_get(&q, "cd", &s, &err), SDC_OK);
    CHECK(s.state == SDC_JOB_DONE && s.has_result);
    free(e.params_json);
    CHECK_EQ_INT(sdc_job_cancel(&q, "nope", &now, &oc, &err), SDC_ERR_NOT_FOUND);
    CHECK_EQ_INT(oc, SDC_JOB_NO_JOB);
    CHECK_EQ_INT(sdc_job_cancel(&q, "bad id", &now, &oc, &err), SDC_ERR_INVALID_ARG);
    sdc_redis_close(r);
}

/* A node's counters survive the trip through Redis exactly; the hash
 * expires with the TTL; garbage in it is an error naming the field. */
static void test_metrics(void)
{
    sdc_redis_t *r = open_main();
    CHECK(r);
    if (!r)
        return;
    flush(r);
    sdc_error_t err = {0};
    sdc_metrics_t m;
    memset(&m, 0, sizeof(m));
    m.bytes_sent = 123456789012ull;
    m.bytes_received = 7;
    m.jobs_failed = 2;
    m.jobs_requeued = 3;
    m.jobs_tracked = 5;
    m.busy_s = 1.5;
    m.busy_ratio = 0.25;
    sdc_hist_observe(&m.hist[SDC_HIST_STEP], SDC_HIST_STEP, 0.003);
    sdc_hist_observe(&m.hist[SDC_HIST_STEP], SDC_HIST_STEP, 0.005); /* on a bound: that bucket */
    sdc_hist_observe(&m.hist[SDC_HIST_STEP], SDC_HIST_STEP, 1e6);   /* +Inf */
    sdc_hist_observe(&m.hist[SDC_HIST_JOB], SDC_HIST_JOB, -1);      /* ignored */
    CHECK_EQ_INT(m.hist[SDC_HIST_STEP].bucket[2], 2);
    CHECK_EQ_INT(m.hist[SDC_HIST_STEP].bucket[SDC_METRICS_BUCKETS], 1);
    CHECK_EQ_INT(m.hist[SDC_HIST_JOB].count, 0);
    sdc_metrics_source_t src = {"dit-stage-2", "dit-stage", 0, 1, 3};
    CHECK_EQ_INT(sdc_metrics_publish(r, &src, &m, 10000, &err), SDC_OK);
    sdc_node_metrics_t got;
    int found = 0;
    CHECK_EQ_INT(sdc_metrics_read(r, "dit-stage-2", &got, &found, &err), SDC_OK);
    CHECK(found);
    CHECK(strcmp(got.role, "dit-stage") == 0 && got.pipeline == 0 && got.stage == 1 &&
          got.stages == 3);
    CHECK(got.m.bytes_sent == 123456789012ull && got.m.bytes_received == 7 &&
          got.m.jobs_failed == 2 && got.m.jobs_requeued == 3 && got.m.jobs_tracked == 5);
    CHECK(got.m.busy_s == 1.5 && got.m.busy_ratio == 0.25);
    CHECK(memcmp(got.m.hist[SDC_HIST_STEP].bucket, m.hist[SDC_HIST_STEP].bucket,
                 sizeof(m.hist[0].bucket)) == 0);
    CHECK(got.m.hist[SDC_HIST_STEP].count == 3 &&
          fabs(got.m.hist[SDC_HIST_STEP].sum - (0.008 + 1e6)) < 1e-3);
    long long ttl = cmd_int(r, "PTTL %s", "sdc:metrics:dit-stage-2", NULL);
    CHECK(ttl > 0 && ttl <= 10000);
    CHECK_EQ_INT(sdc_metrics_read(r, "vae-9", &got, &found, &err), SDC_OK);
    CHECK(!found);
    sdc_redis_reply_free(cmd(r, "HSET sdc:metrics:dit-stage-2 step_latency_seconds %s", "1 2 x"));
    CHECK_EQ_INT(sdc_metrics_read(r, "dit-stage-2", &got, &found, &err), SDC_ERR_FORMAT);
    CHECK(msg_has(&err, "step_latency_seconds"));
    sdc_redis_reply_free(cmd(r, "HSET sdc:metrics:dit-stage-2 step_latency_seconds %s bytes_sent -4",
                             "0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"));
    CHECK_EQ_INT(sdc_metrics_read(r, "dit-stage-2", &got, &found, &err), SDC_ERR_FORMAT);
    CHECK(msg_has(&err, "bytes_sent"));
    sdc_redis_close(r);
}

static void test_double_completion(void)
{
    sdc_redis_t *r = open_main(), *r2 = open_main();
    CHECK(r && r2);
    if (!r || !r2)
        goto out;
    flush(r);
    sdc_jobs_t q, q2;
    sdc_error_t err = {0};
    sdc_job_outcome_t oc;
    CHECK_EQ_INT(setup_queue(&q, r), 0);
    CHECK_EQ_INT(setup_queue(&q2, r2), 0);
    CHECK_EQ_INT(submit(&q, "dbl", 1), 0);
    sdc_job_entry_t e;
    CHECK_EQ_INT(claim_one(&q, "coord-a", &e), 0);
    CHECK_EQ_INT(sdc_job_start(&q, "dbl", 1, e.entry_id, "coord-a", 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_advance(&q, "dbl", 1, SDC_JOB_DENOISING, 1, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_advance(&q, "dbl", 1, SDC_JOB_DECODING, 0, &oc, &err), SDC_OK);
    /* Two VAE nodes finish the same attempt; the second is refused. */
    CHECK_EQ_INT(sdc_job_complete(&q, "dbl", 1, png1, sizeof(png1), &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_complete(&q2, "dbl", 1, png2, sizeof(png2), &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_BAD_STATE);
    CHECK(msg_has(&err, "the job is done"));
    CHECK_EQ_INT(sdc_job_complete(&q, "dbl", 1, png1, sizeof(png1), &oc, &err),
                 SDC_ERR_INVALID_ARG);
    unsigned char *png = NULL;
    size_t len = 0;
    CHECK_EQ_INT(sdc_job_result_get(&q, "dbl", &png, &len, &err), SDC_OK);
    CHECK(len == sizeof(png1) && png && memcmp(png, png1, len) == 0);
    free(png);
    CHECK_EQ_INT(count_events(r, "dbl", "done"), 1);
    free(e.params_json);

    /* Six processes complete the same attempt at once: one wins, its bytes
     * are the result, and there is one done event. */
    enum { N = 6 };
    pid_t pids[N];
    CHECK_EQ_INT(submit(&q, "race", 1), 0);
    CHECK_EQ_INT(claim_one(&q, "coord-a", &e), 0);
    CHECK_EQ_INT(sdc_job_start(&q, "race", 1, e.entry_id, "coord-a", 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_advance(&q, "race", 1, SDC_JOB_DENOISING, 1, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_advance(&q, "race", 1, SDC_JOB_DECODING, 0, &oc, &err), SDC_OK);
    /* The racers complete from refining (a refiner node's completion). */
    CHECK_EQ_INT(sdc_job_advance(&q, "race", 1, SDC_JOB_REFINING, 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_advance(&q, "race", 1, SDC_JOB_REFINING, 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(oc, SDC_JOB_UNCHANGED);
    CHECK_EQ_INT(sdc_job_advance(&q, "race", 1, SDC_JOB_DENOISING, 1, &oc, &err),
                 SDC_ERR_INVALID_ARG);
    free(e.params_json);
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            sdc_redis_close(r);
            sdc_redis_close(r2);
            sdc_redis_t *rc = open_main();
            sdc_jobs_t qc;
            unsigned char bytes[4] = {'P', 'N', 'G', (unsigned char)i};
            if (!rc || sdc_jobs_init(&qc, rc, NULL, NULL) != SDC_OK)
                _exit(2);
            sdc_status_t st = sdc_job_complete(&qc, "race", 1, bytes, sizeof(bytes), &oc, NULL);
            sdc_redis_close(rc);
            _exit(st == SDC_OK ? 0 : oc == SDC_JOB_BAD_STATE ? 1 : 2);
        }
    }
    int winner = -1, winners = 0, errors = 0;
    for (int i = 0; i < N; i++) {
        int status = 0;
        waitpid(pids[i], &status, 0);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            winners++, winner = i;
        errors += !WIFEXITED(status) || WEXITSTATUS(status) > 1;
    }
    CHECK_EQ_INT(winners, 1);
    CHECK_EQ_INT(errors, 0);
    CHECK_EQ_INT(sdc_job_result_get(&q, "race", &png, &len, &err), SDC_OK);
    CHECK(len == 4 && png && png[3] == (unsigned char)winner);
    free(png);
    CHECK_EQ_INT(count_events(r, "race", "done"), 1);

    /* A stale attempt: requeued meanwhile, the old worker's result is refused
     * and writes nothing. */
    CHECK_EQ_INT(submit(&q, "stale", 2), 0);
    CHECK_EQ_INT(claim_one(&q, "coord-a", &e), 0);
    CHECK_EQ_INT(sdc_job_start(&q, "stale", 1, e.entry_id, "coord-a", 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_advance(&q, "stale", 1, SDC_JOB_DENOISING, 0, &oc, &err), SDC_OK);
    sdc_job_state_t now;
    CHECK_EQ_INT(sdc_job_requeue(&q, "stale", 1, 3, "stage 1 heartbeat lost", &now, &oc, &err),
                 SDC_OK);
    CHECK(now == SDC_JOB_QUEUED && oc == SDC_JOB_APPLIED);
    CHECK_EQ_INT(sdc_job_advance(&q2, "stale", 1, SDC_JOB_DECODING, 0, &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_STALE_ATTEMPT);
    CHECK_EQ_INT(sdc_job_complete(&q2, "stale", 1, png2, sizeof(png2), &oc, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_STALE_ATTEMPT);
    CHECK(msg_has(&err, "the job is at attempt 2 (state queued)"));
    CHECK_EQ_INT(cmd_int(r, "EXISTS %s", "sdc:result:stale", NULL), 0);
    free(e.params_json);
out:
    sdc_redis_close(r);
    sdc_redis_close(r2);
}

static void test_requeue_and_dead_letter(void)
{
    sdc_redis_t *r = open_main();
    CHECK(r);
    if (!r)
        return;
    flush(r);
    sdc_jobs_t q;
    sdc_error_t err = {0};
    sdc_job_outcome_t oc;
    sdc_job_state_t now;
    CHECK_EQ_INT(setup_queue(&q, r), 0);
    CHECK_EQ_INT(submit(&q, "rq", 2), 0);

    sdc_job_entry_t e1, e2, e3;
    CHECK_EQ_INT(claim_one(&q, "coord-a", &e1), 0);
    CHECK_EQ_INT(sdc_job_start(&q, "rq", 1, e1.entry_id, "coord-a", 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_requeue(&q, "rq", 1, 2, "vae node died", &now, &oc, &err), SDC_OK);
    CHECK_EQ_INT(now, SDC_JOB_QUEUED);
    /* The old entry is acked and gone, a new one carries attempt 2. */
    CHECK_EQ_INT(cmd_int(r, "XLEN %s", "sdc:jobs", NULL), 1);
    sdc_queue_depth_t d;
    CHECK_EQ_INT(sdc_jobs_depth(&q, &d, &err), SDC_OK);
    CHECK(d.pending == 0 && d.waiting == 1);
    CHECK_EQ_INT(claim_one(&q, "coord-b", &e2), 0);
    CHECK(e2.attempt == 2 && strcmp(e2.job_id, "rq") == 0 && strcmp(e2.entry_id, e1.entry_id));
    CHECK(e2.params_len == e1.params_len && memcmp(e2.params_json, e1.params_json,
                                                   e1.params_len) == 0);
    sdc_job_status_t s;
    CHECK_EQ_INT(sdc_job_get(&q, "rq", &s, &err), SDC_OK);
    CHECK(s.state == SDC_JOB_QUEUED && s.attempt == 2 && strcmp(s.error, "vae node died") == 0);
    CHECK_EQ_INT(sdc_job_start(&q, "rq", 2, e2.entry_id, "coord-b", 1, &oc, &err), SDC_OK);
    /* Attempts exhausted: requeue turns into failed + dead letter. */
    CHECK_EQ_INT(sdc_job_requeue(&q, "rq", 2, 2, "vae node died again", &now, &oc, &err),
                 SDC_OK);
    CHECK_EQ_INT(now, SDC_JOB_FAILED);
    CHECK_EQ_INT(sdc_job_get(&q, "rq", &s, &err), SDC_OK);
    CHECK(s.state == SDC_JOB_FAILED && strcmp(s.error, "attempt 2 of 2: vae node died again") == 0);
    CHECK_EQ_INT(sdc_jobs_depth(&q, &d, &err), SDC_OK);
    CHECK(d.length == 0 && d.pending == 0);
    redisReply *rep = cmd(r, "XRANGE sdc:dead - +");
    CHECK(rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 1);
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 1) {
        const redisReply *f = rep->element[0]->element[1];
        CHECK(f->elements == 10);
        CHECK(strcmp(f->element[0]->str, "job") == 0 && strcmp(f->element[1]->str, "rq") == 0);
        CHECK(strcmp(f->element[3]->str, "2") == 0);
        CHECK(strcmp(f->element[5]->str, e2.entry_id) == 0);
        CHECK(strcmp(f->element[7]->str, "attempt 2 of 2: vae node died again") == 0);
    }
    sdc_redis_reply_free(rep);

    /* A malformed entry (no params) comes with a problem and is rejected once. */
    sdc_redis_reply_free(cmd(r, "XADD sdc:jobs * id %s attempt 1", "broken"));
    sdc_redis_reply_free(cmd(r, "XADD sdc:jobs * id %s attempt x params {}", "broken2"));
    sdc_job_entry_t *es = NULL;
    size_t n = 0;
    CHECK_EQ_INT(sdc_job_claim(&q, "coord-a", 10, 0, 0, &es, &n, &err), SDC_OK);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        CHECK(strcmp(es[0].problem, "missing field 'params'") == 0);
        CHECK(strcmp(es[0].job_id, "broken") == 0 && es[0].params_json == NULL);
        CHECK(strcmp(es[1].problem, "bad attempt") == 0);
        for (size_t i = 0; i < n; i++)
            CHECK_EQ_INT(sdc_job_reject_entry(&q, es[i].entry_id, es[i].job_id, es[i].problem,
                                              &err), SDC_OK);
        CHECK_EQ_INT(sdc_job_reject_entry(&q, es[0].entry_id, es[0].job_id, es[0].problem, &err),
                     SDC_OK);
    }
    sdc_job_entries_free(es, n);
    CHECK_EQ_INT(cmd_int(r, "XLEN %s", "sdc:dead", NULL), 3);
    CHECK_EQ_INT(sdc_jobs_depth(&q, &d, &err), SDC_OK);
    CHECK(d.length == 0 && d.pending == 0);

    /* An explicit fail from queued (bad params found by the coordinator). */
    CHECK_EQ_INT(submit(&q, "rq3", 2), 0);
    CHECK_EQ_INT(claim_one(&q, "coord-a", &e3), 0);
    CHECK_EQ_INT(sdc_job_fail(&q, "rq3", 1, "size not supported by any pipeline", &oc, &err),
                 SDC_OK);
    CHECK_EQ_INT(cmd_int(r, "XLEN %s", "sdc:dead", NULL), 4);
    CHECK_EQ_INT(sdc_jobs_depth(&q, &d, &err), SDC_OK);
    CHECK(d.length == 1 && d.pending == 1); /* never started: the claimer acks its entry */
    CHECK_EQ_INT(sdc_job_ack(&q, e3.entry_id, &err), SDC_OK);
    CHECK_EQ_INT(sdc_jobs_depth(&q, &d, &err), SDC_OK);
    CHECK(d.length == 0 && d.pending == 0);
    CHECK_EQ_INT(sdc_job_ack(&q, "garbage", &err), SDC_ERR_INVALID_ARG);
    free(e1.params_json);
    free(e2.params_json);
    free(e3.params_json);
    sdc_redis_close(r);
}

/* An image job in Redis: the image beside the hash, retried submits,
 * loading where it is used (every way it can be wrong) and its retention. */
static void test_image_jobs(void)
{
    sdc_redis_t *r = open_main();
    CHECK(r);
    if (!r)
        return;
    flush(r);
    sdc_jobs_t q;
    sdc_error_t err = {0};
    sdc_job_outcome_t oc;
    size_t len = 0;
    uint8_t *png = read_data("img2img_init_64x96.png", &len);
    CHECK_EQ_INT(setup_queue(&q, r), 0);
    CHECK(q.max_image_bytes == SDC_JOB_IMAGE_DEFAULT_CAP);
    sdc_job_image_t img;
    sdc_job_params_t p, plain;
    params_set(&p, "im-1", "x", 10);
    p.width = p.height = 0;
    params_set(&plain, "im-1", "x", 10);
    CHECK_EQ_INT(sdc_job_image_check(png, len, 0, &img, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_params_set_image(&p, &img, &err), SDC_OK);
    p.strength = 0.5;
    p.has_strength = 1;
    /* The image and the params must agree. */
    CHECK_EQ_INT(sdc_job_submit(&q, &p, NULL, &err), SDC_ERR_INVALID_ARG);
    CHECK(msg_has(&err, "'init_image' without the image"));
    CHECK_EQ_INT(sdc_job_submit_image(&q, &plain, &img, NULL, &err), SDC_ERR_INVALID_ARG);
    CHECK(msg_has(&err, "an image without 'init_image'"));
    int existed = -1;
    CHECK_EQ_INT(sdc_job_submit_image(&q, &p, &img, &existed, &err), SDC_OK);
    CHECK_EQ_INT(existed, 0);
    CHECK_EQ_INT(cmd_int(r, "STRLEN %s", "sdc:job:im-1:image", NULL), (long long)len);
    CHECK_EQ_INT(cmd_int(r, "PTTL %s", "sdc:job:im-1:image", NULL), -1);
    sdc_job_status_t s;
    CHECK_EQ_INT(sdc_job_get(&q, "im-1", &s, &err), SDC_OK);
    CHECK(s.steps == 5); /* strength 0.5 of 10 */
    CHECK_EQ_INT(sdc_job_submit_image(&q, &p, &img, &existed, &err), SDC_OK);
    CHECK_EQ_INT(existed, 1);

    /* Loaded where it is used: decoded, the size checked. */
    uint8_t *rgb = NULL;
    CHECK_EQ_INT(sdc_job_image_load(&q, &p, &rgb, &err), SDC_OK);
    CHECK(rgb != NULL);
    free(rgb);
    sdc_job_params_t other = p;
    other.width = 64;
    CHECK_EQ_INT(sdc_job_image_load(&q, &other, &rgb, &err), SDC_ERR_INVALID_ARG);
    CHECK(msg_has(&err, "job im-1: its input image is 96x64 but the job's size is 64x64"));
    CHECK(rgb == NULL);
    sdc_jobs_t small;
    sdc_jobs_opts_t so = {.max_image_bytes = 1000};
    CHECK_EQ_INT(sdc_jobs_init(&small, r, &so, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_image_load(&small, &p, &rgb, &err), SDC_ERR_RANGE);
    CHECK(msg_has(&err, "over this cluster's limit of 1000 bytes"));
    CHECK_EQ_INT(sdc_job_submit_image(&small, &p, &img, NULL, &err), SDC_ERR_RANGE);
    /* Replaced behind the job's back: a retried submit is another job, and
     * the image no longer loads. */
    sdc_redis_reply_free(cmd(r, "SET sdc:job:im-1:image %s", "not a png"));
    CHECK_EQ_INT(sdc_job_submit_image(&q, &p, &img, &existed, &err), SDC_ERR_INVALID_ARG);
    CHECK(msg_has(&err, "exists with another input image"));
    CHECK_EQ_INT(sdc_job_image_load(&q, &p, &rgb, &err), SDC_ERR_FORMAT);
    CHECK(msg_has(&err, "stored input image (9 bytes"));
    /* The right size and checksum, but not an image the cluster decodes. */
    sdc_redis_reply_free(cmd(r, "SET sdc:job:im-1:image %b", huge_png, sizeof(huge_png)));
    other = p;
    other.image_bytes = sizeof(huge_png);
    other.image_crc32c = sdc_wire_crc32c(0, huge_png, sizeof(huge_png));
    CHECK_EQ_INT(sdc_job_image_load(&q, &other, &rgb, &err), SDC_ERR_RANGE);
    CHECK(msg_has(&err, "its input image: PNG decoding: 100000 x 100000 pixels exceeds"));
    sdc_redis_reply_free(cmd(r, "DEL sdc:job:im-1:image"));
    CHECK_EQ_INT(sdc_job_image_load(&q, &p, &rgb, &err), SDC_ERR_NOT_FOUND);
    CHECK(msg_has(&err, "(sdc:job:im-1:image) is not in Redis"));
    CHECK_EQ_INT(sdc_job_image_load(&q, &plain, &rgb, &err), SDC_ERR_INVALID_ARG);

    /* Requeue leaves the image; done and failed give it the job's retention. */
    sdc_job_entry_t e;
    CHECK_EQ_INT(claim_one(&q, "coord-a", &e), 0);
    CHECK_EQ_INT(sdc_job_start(&q, "im-1", 1, e.entry_id, "coord-a", 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_requeue(&q, "im-1", 1, 3, "lost", NULL, &oc, &err), SDC_OK);
    sdc_redis_reply_free(cmd(r, "SET sdc:job:im-1:image %b", png, len));
    CHECK_EQ_INT(cmd_int(r, "PTTL %s", "sdc:job:im-1:image", NULL), -1);
    free(e.params_json);
    CHECK_EQ_INT(claim_one(&q, "coord-a", &e), 0);
    CHECK(e.attempt == 2);
    CHECK_EQ_INT(sdc_job_fail(&q, "im-1", 2, "bad image", &oc, &err), SDC_OK);
    long long ttl = cmd_int(r, "PTTL %s", "sdc:job:im-1:image", NULL);
    CHECK(ttl > 6 * 24 * 3600 * 1000LL && ttl <= cmd_int(r, "PTTL %s", "sdc:job:im-1", NULL) + 1000);
    free(e.params_json);

    sdc_job_params_free(&p);
    params_set(&p, "im-2", "x", 4);
    p.width = p.height = 0;
    CHECK_EQ_INT(sdc_job_params_set_image(&p, &img, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_submit_image(&q, &p, &img, NULL, &err), SDC_OK);
    CHECK_EQ_INT(claim_one(&q, "coord-a", &e), 0);
    CHECK_EQ_INT(sdc_job_start(&q, "im-2", 1, e.entry_id, "coord-a", 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_advance(&q, "im-2", 1, SDC_JOB_DENOISING, 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_advance(&q, "im-2", 1, SDC_JOB_DECODING, 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_complete(&q, "im-2", 1, png, len, &oc, &err), SDC_OK);
    CHECK(cmd_int(r, "PTTL %s", "sdc:job:im-2:image", NULL) > 6 * 24 * 3600 * 1000LL);
    free(e.params_json);
    sdc_job_params_free(&p);
    sdc_job_params_free(&plain);
    free(png);
    sdc_redis_close(r);
}

/* Holders name the current attempt only; a reattempt leaves any state but
 * done and failed, queued included. */
static void test_holders_and_reattempt(void)
{
    sdc_redis_t *r = open_main();
    CHECK(r);
    if (!r)
        return;
    flush(r);
    sdc_jobs_t q;
    sdc_error_t err = {0};
    sdc_job_outcome_t oc;
    sdc_job_status_t s;
    sdc_job_entry_t e1, *es = NULL;
    size_t n = 0;
    int stored = -1;
    CHECK_EQ_INT(setup_queue(&q, r), 0);
    CHECK_EQ_INT(submit(&q, "h", 3), 0);
    CHECK_EQ_INT(claim_one(&q, "coord-a", &e1), 0);
    CHECK_EQ_INT(sdc_job_start(&q, "h", 1, e1.entry_id, "coord-a", 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_set_holder(&q, "h", 1, SDC_JOB_DECODING, "vae-2", &stored, &err), SDC_OK);
    CHECK_EQ_INT(stored, 0); /* not decoding */
    CHECK_EQ_INT(sdc_job_set_holder(&q, "h", 1, SDC_JOB_ENCODING, "text-encoder-1", &stored, &err),
                 SDC_OK);
    CHECK_EQ_INT(stored, 1);
    CHECK_EQ_INT(sdc_job_set_holder(&q, "h", 2, SDC_JOB_ENCODING, "text-encoder-1", &stored, &err),
                 SDC_OK);
    CHECK_EQ_INT(stored, 0); /* another attempt */
    CHECK_EQ_INT(sdc_job_set_holder(&q, "h", 1, SDC_JOB_DENOISING, "x", &stored, &err),
                 SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_job_get(&q, "h", &s, &err), SDC_OK);
    CHECK(strcmp(s.encoder, "text-encoder-1") == 0 && s.decoder[0] == '\0');
    CHECK_EQ_INT(sdc_job_advance(&q, "h", 1, SDC_JOB_DENOISING, 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_advance(&q, "h", 1, SDC_JOB_DECODING, 3, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_set_holder(&q, "h", 1, SDC_JOB_DECODING, "vae-2", &stored, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_get(&q, "h", &s, &err), SDC_OK);
    CHECK(stored == 1 && strcmp(s.decoder, "vae-2") == 0);

    /* From decoding: attempt 2, the old entry acked, the holders forgotten. */
    CHECK_EQ_INT(sdc_job_reattempt(&q, "h", 1, "the Redis server restarted", &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_get(&q, "h", &s, &err), SDC_OK);
    CHECK(s.state == SDC_JOB_QUEUED && s.attempt == 2 && !s.encoder[0] && !s.decoder[0]);
    CHECK_EQ_INT(cmd_int(r, "XLEN %s", "sdc:jobs", NULL), 1);
    /* From queued (requeue refuses that): attempt 3, a new entry; the
     * attempt-2 entry stays for its claimer to ack as stale. */
    CHECK_EQ_INT(sdc_job_requeue(&q, "h", 2, 10, "x", NULL, &oc, &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_job_reattempt(&q, "h", 2, "the Redis server restarted", &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_get(&q, "h", &s, &err), SDC_OK);
    CHECK(s.state == SDC_JOB_QUEUED && s.attempt == 3);
    CHECK_EQ_INT(cmd_int(r, "XLEN %s", "sdc:jobs", NULL), 2);
    CHECK_EQ_INT(sdc_job_reattempt(&q, "h", 2, "again", &oc, &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_STALE_ATTEMPT);
    /* Not counted against max attempts; done stays done. */
    CHECK_EQ_INT(sdc_job_claim(&q, "coord-a", 10, 0, 0, &es, &n, &err), SDC_OK);
    CHECK_EQ_INT(n, 2);
    if (n != 2) {
        sdc_job_entries_free(es, n);
        free(e1.params_json);
        sdc_redis_close(r);
        return;
    }
    CHECK(es[0].attempt == 2 && es[1].attempt == 3);
    CHECK_EQ_INT(sdc_job_ack(&q, es[0].entry_id, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_start(&q, "h", 3, es[1].entry_id, "coord-a", 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_advance(&q, "h", 3, SDC_JOB_DENOISING, 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_advance(&q, "h", 3, SDC_JOB_DECODING, 3, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_complete(&q, "h", 3, (const unsigned char *)"png", 3, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_job_reattempt(&q, "h", 3, "late", &oc, &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(oc, SDC_JOB_BAD_STATE);
    CHECK_EQ_INT(sdc_job_get(&q, "h", &s, &err), SDC_OK);
    CHECK(s.state == SDC_JOB_DONE && s.attempt == 3);
    CHECK_EQ_INT(cmd_int(r, "XLEN %s", "sdc:jobs", NULL), 0);
    sdc_job_entries_free(es, n);
    free(e1.params_json);
    sdc_redis_close(r);
}

/* ckpt:<id> is written only while the job is denoising at the writer's
 * attempt. */
static void test_checkpoint_store(void)
{
    sdc_redis_t *r = open_main();
    CHECK(r);
    if (!r)
        return;
    flush(r);
    sdc_jobs_t q;
    sdc_error_t err = {0};
    sdc_job_outcome_t oc;
    sdc_job_entry_t e;
    const uint8_t blob[] = {'S', 'D', 'C', 'K', 0, 1, 2, 0xff};
    uint8_t *got = NULL;
    size_t len = 0;
    int stored = -1;
    CHECK_EQ_INT(setup_queue(&q, r), 0);
    CHECK_EQ_INT(submit(&q, "k", 8), 0);
    CHECK_EQ_INT(sdc_ckpt_get(r, "k", &got, &len, &err), SDC_ERR_NOT_FOUND);
    CHECK_EQ_INT(claim_one(&q, "coord-a", &e), 0);
    CHECK_EQ_INT(sdc_job_start(&q, "k", 1, e.entry_id, "coord-a", 0, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_ckpt_put(r, "k", 1, blob, sizeof(blob), &stored, &err), SDC_OK);
    CHECK_EQ_INT(stored, 0); /* encoding */
    CHECK_EQ_INT(sdc_job_advance(&q, "k", 1, SDC_JOB_DENOISING, 2, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_ckpt_put(r, "k", 2, blob, sizeof(blob), &stored, &err), SDC_OK);
    CHECK_EQ_INT(stored, 0); /* another attempt */
    CHECK_EQ_INT(sdc_ckpt_put(r, "k", 1, blob, sizeof(blob), &stored, &err), SDC_OK);
    CHECK_EQ_INT(stored, 1);
    CHECK_EQ_INT(sdc_ckpt_get(r, "k", &got, &len, &err), SDC_OK);
    CHECK(len == sizeof(blob) && got && memcmp(got, blob, len) == 0);
    free(got);
    long long ttl = cmd_int(r, "PTTL %s", "sdc:ckpt:k", NULL);
    CHECK(ttl > 0 && ttl <= SDC_CKPT_TTL_MS);
    /* Requeued: the old attempt's stage can no longer write. */
    CHECK_EQ_INT(sdc_job_requeue(&q, "k", 1, 3, "stage died", NULL, &oc, &err), SDC_OK);
    CHECK_EQ_INT(sdc_ckpt_put(r, "k", 1, blob, 4, &stored, &err), SDC_OK);
    CHECK_EQ_INT(stored, 0);
    CHECK_EQ_INT(sdc_ckpt_get(r, "k", &got, &len, &err), SDC_OK);
    CHECK_EQ_INT(len, sizeof(blob));
    free(got);
    CHECK_EQ_INT(sdc_ckpt_delete(r, "k", &err), SDC_OK);
    CHECK_EQ_INT(sdc_ckpt_get(r, "k", &got, &len, &err), SDC_ERR_NOT_FOUND);
    CHECK_EQ_INT(sdc_ckpt_put(r, "bad id!", 1, blob, 4, &stored, &err), SDC_ERR_INVALID_ARG);
    free(e.params_json);
    sdc_redis_close(r);
}

static void test_node_registry(void)
{
    sdc_redis_t *r = open_main();
    CHECK(r);
    if (!r)
        return;
    flush(r);
    sdc_error_t err = {0};
    const unsigned char addr[] = {0x00, 0xff, 0x10, 0x00, 'u', 'c', 'x', 0x00, 0x7f};
    sdc_node_t a = {.id = "stage-0", .role = SDC_ROLE_DIT_STAGE, .address = (unsigned char *)addr,
                    .address_len = sizeof(addr), .pipeline = 1, .stage = 0, .load = 0.75};
    sdc_node_t b = {.id = "vae-3", .role = SDC_ROLE_VAE, .pipeline = -1, .stage = -1, .load = 2,
                    .draining = 1};
    sdc_node_t c = {.id = "short-lived", .role = SDC_ROLE_TEXT_ENCODER, .pipeline = -1,
                    .stage = -1};
    CHECK_EQ_INT(sdc_node_register(r, &a, 10000, &err), SDC_OK);
    CHECK_EQ_INT(sdc_node_register(r, &b, 10000, &err), SDC_OK);
    CHECK_EQ_INT(sdc_node_register(r, &c, 150, &err), SDC_OK);
    CHECK_EQ_INT(sdc_node_register(r, &a, 10000, &err), SDC_OK); /* heartbeat */
    /* A malformed registration is skipped, not fatal. */
    sdc_redis_reply_free(cmd(r, "HSET sdc:node:bogus role %s address %s", "wizard", "x"));
    sdc_redis_reply_free(cmd(r, "SET sdc:node:notahash %s", "x"));
    sdc_node_t bad = a;
    bad.load = NAN;
    CHECK_EQ_INT(sdc_node_register(r, &bad, 1000, &err), SDC_ERR_RANGE);
    bad = a;
    snprintf(bad.id, sizeof(bad.id), "has:colon");
    CHECK_EQ_INT(sdc_node_register(r, &bad, 1000, &err), SDC_ERR_INVALID_ARG);
    CHECK_EQ_INT(sdc_node_register(r, &a, 0, &err), SDC_ERR_RANGE);

    sdc_node_t *nodes = NULL;
    size_t n = 0;
    CHECK_EQ_INT(sdc_node_list(r, &nodes, &n, &err), SDC_OK);
    CHECK_EQ_INT(n, 3);
    int seen_a = 0, seen_b = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(nodes[i].id, "stage-0") == 0) {
            seen_a = 1;
            CHECK(nodes[i].role == SDC_ROLE_DIT_STAGE && nodes[i].pipeline == 1);
            CHECK(nodes[i].stage == 0 && nodes[i].load == 0.75);
            CHECK(nodes[i].address_len == sizeof(addr) &&
                  memcmp(nodes[i].address, addr, sizeof(addr)) == 0);
            CHECK(nodes[i].heartbeat_ms > 1600000000000LL);
            CHECK(!nodes[i].draining);
        } else if (strcmp(nodes[i].id, "vae-3") == 0) {
            seen_b = 1;
            CHECK(nodes[i].role == SDC_ROLE_VAE && nodes[i].address_len == 0);
            CHECK(nodes[i].pipeline == -1 && nodes[i].load == 2 && nodes[i].draining);
        }
    }
    CHECK(seen_a && seen_b);
    sdc_nodes_free(nodes, n);
    long long ttl = cmd_int(r, "PTTL %s", "sdc:node:stage-0", NULL);
    CHECK(ttl > 9000 && ttl <= 10000);

    sleep_ms(300); /* short-lived's heartbeat lapses */
    CHECK_EQ_INT(sdc_node_list(r, &nodes, &n, &err), SDC_OK);
    CHECK_EQ_INT(n, 2);
    for (size_t i = 0; i < n; i++)
        CHECK(strcmp(nodes[i].id, "short-lived") != 0);
    sdc_nodes_free(nodes, n);
    CHECK_EQ_INT(sdc_node_remove(r, "vae-3", &err), SDC_OK);
    CHECK_EQ_INT(sdc_node_list(r, &nodes, &n, &err), SDC_OK);
    CHECK(n == 1 && strcmp(nodes[0].id, "stage-0") == 0);
    sdc_nodes_free(nodes, n);
    sdc_redis_close(r);
}

static void test_leader_lease(void)
{
    sdc_redis_t *ra = open_main(), *rb = open_main();
    CHECK(ra && rb);
    if (!ra || !rb)
        goto out;
    flush(ra);
    sdc_error_t err = {0};
    int a = -1, b = -1, present;
    char holder[SDC_JOB_ID_MAX + 1];
    CHECK_EQ_INT(sdc_leader_get(ra, holder, &present, &err), SDC_OK);
    CHECK(!present);
    CHECK_EQ_INT(sdc_leader_acquire(ra, "coord-a", 250, &a, &err), SDC_OK);
    CHECK_EQ_INT(sdc_leader_acquire(rb, "coord-b", 250, &b, &err), SDC_OK);
    CHECK(a == 1 && b == 0);
    CHECK_EQ_INT(sdc_leader_get(rb, holder, &present, &err), SDC_OK);
    CHECK(present && strcmp(holder, "coord-a") == 0);
    CHECK_EQ_INT(sdc_leader_renew(rb, "coord-b", 250, &b, &err), SDC_OK);
    CHECK_EQ_INT(b, 0);
    CHECK_EQ_INT(sdc_leader_release(rb, "coord-b", &b, &err), SDC_OK);
    CHECK_EQ_INT(b, 0);
    CHECK_EQ_INT(sdc_leader_renew(ra, "coord-a", 250, &a, &err), SDC_OK);
    CHECK_EQ_INT(a, 1);
    CHECK_EQ_INT(sdc_leader_acquire(ra, "coord-a", 250, &a, &err), SDC_OK); /* still ours */
    CHECK_EQ_INT(a, 1);
    /* coord-a stops renewing: the lease lapses and coord-b takes over. */
    sleep_ms(350);
    CHECK_EQ_INT(sdc_leader_acquire(rb, "coord-b", 5000, &b, &err), SDC_OK);
    CHECK_EQ_INT(b, 1);
    CHECK_EQ_INT(sdc_leader_renew(ra, "coord-a", 250, &a, &err), SDC_OK);
    CHECK_EQ_INT(a, 0);
    CHECK_EQ_INT(sdc_leader_acquire(ra, "coord-a", 250, &a, &err), SDC_OK);
    CHECK_EQ_INT(a, 0);
    CHECK_EQ_INT(sdc_leader_release(rb, "coord-b", &b, &err), SDC_OK);
    CHECK_EQ_INT(b, 1);
    CHECK_EQ_INT(sdc_leader_acquire(ra, "coord-a", 250, &a, &err), SDC_OK);
    CHECK_EQ_INT(a, 1);
    CHECK_EQ_INT(sdc_leader_acquire(ra, "coord-a", 0, &a, &err), SDC_ERR_RANGE);
    CHECK_EQ_INT(sdc_leader_acquire(ra, "", 100, &a, &err), SDC_ERR_INVALID_ARG);

    /* Many contenders at once, each on its own connection: exactly one wins. */
    enum { N = 6 };
    pid_t pids[N];
    sdc_redis_reply_free(cmd(ra, "DEL sdc:leader"));
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            sdc_redis_close(ra); /* the parent's; each racer has its own connection */
            sdc_redis_close(rb);
            sdc_redis_t *r = open_main();
            char id[24];
            int won = 0;
            snprintf(id, sizeof(id), "racer-%d", i);
            if (!r || sdc_leader_acquire(r, id, 5000, &won, NULL) != SDC_OK)
                _exit(2);
            sdc_redis_close(r);
            _exit(won ? 0 : 1);
        }
    }
    int winners = 0, errors = 0;
    for (int i = 0; i < N; i++) {
        int status = 0;
        waitpid(pids[i], &status, 0);
        winners += WIFEXITED(status) && WEXITSTATUS(status) == 0;
        errors += !WIFEXITED(status) || WEXITSTATUS(status) > 1;
    }
    CHECK_EQ_INT(winners, 1);
    CHECK_EQ_INT(errors, 0);
out:
    sdc_redis_close(ra);
    sdc_redis_close(rb);
}

static void test_reclaim(void)
{
    sdc_redis_t *r = open_main();
    CHECK(r);
    if (!r)
        return;
    flush(r);
    sdc_jobs_t q;
    sdc_error_t err = {0};
    CHECK_EQ_INT(setup_queue(&q, r), 0);
    CHECK_EQ_INT(submit(&q, "orphan", 2), 0);
    CHECK_EQ_INT(submit(&q, "other", 2), 0);
    sdc_job_entry_t *es = NULL, e;
    size_t n = 0;
    /* coord-dead takes one entry and dies without acking it. */
    CHECK_EQ_INT(sdc_job_claim(&q, "coord-dead", 1, 0, 0, &es, &n, &err), SDC_OK);
    CHECK(n == 1 && strcmp(es[0].job_id, "orphan") == 0);
    e = es[0];
    free(es);
    CHECK_EQ_INT(sdc_job_reclaim(&q, "coord-live", 10000, 10, &es, &n, &err), SDC_OK);
    CHECK_EQ_INT(n, 0); /* not idle long enough yet */
    sdc_job_entries_free(es, n);
    sleep_ms(150);
    CHECK_EQ_INT(sdc_job_reclaim(&q, "coord-live", 100, 10, &es, &n, &err), SDC_OK);
    CHECK_EQ_INT(n, 1);
    if (n == 1) {
        CHECK(strcmp(es[0].entry_id, e.entry_id) == 0 && strcmp(es[0].job_id, "orphan") == 0);
        CHECK(es[0].attempt == 1 && es[0].params_len == e.params_len);
    }
    sdc_job_entries_free(es, n);
    /* It now belongs to coord-live: coord-dead's pending list is empty. */
    CHECK_EQ_INT(sdc_job_claim(&q, "coord-dead", 10, 0, 1, &es, &n, &err), SDC_OK);
    CHECK_EQ_INT(n, 0);
    sdc_job_entries_free(es, n);
    CHECK_EQ_INT(sdc_job_claim(&q, "coord-live", 10, 0, 1, &es, &n, &err), SDC_OK);
    CHECK(n == 1 && strcmp(es[0].job_id, "orphan") == 0);
    sdc_job_entries_free(es, n);
    CHECK_EQ_INT(sdc_job_start(&q, "orphan", 1, e.entry_id, "coord-live", 0, NULL, &err), SDC_OK);
    free(e.params_json);
    CHECK_EQ_INT(sdc_job_reclaim(&q, "bad name", 100, 10, &es, &n, &err), SDC_ERR_INVALID_ARG);
    sdc_redis_close(r);
}

static void test_auth(void)
{
    static const char *const extra[] = {"--requirepass", "s3cret-pw", "--user", "alice", "on",
                                        ">alice-pw", "~*", "&*", "+@all", NULL};
    static server_t auth_srv;
    char url[220], file[200];
    sdc_redis_t *r = NULL;
    sdc_error_t err = {0};
    if (server_start(&auth_srv, "auth", 0, extra) != 0) {
        CHECK(0);
        return;
    }
    snprintf(url, sizeof(url), "redis+unix://%s", auth_srv.sock);
    sdc_redis_opts_t o = {.url = url};

    CHECK_EQ_INT(sdc_redis_open(&r, &o, &err), SDC_ERR_IO);
    CHECK(msg_has(&err, "requires a password") && msg_has(&err, "SDC_REDIS_PASSWORD_FILE"));

    setenv("SDC_REDIS_PASSWORD", "wrong-pw", 1);
    CHECK_EQ_INT(sdc_redis_open(&r, &o, &err), SDC_ERR_IO);
    CHECK(msg_has(&err, "authentication as the default user failed") && msg_has(&err, "WRONGPASS"));
    CHECK(!strstr(err.msg, "wrong-pw"));

    setenv("SDC_REDIS_PASSWORD", "s3cret-pw", 1);
    CHECK_EQ_INT(sdc_redis_open(&r, &o, &err), SDC_OK);
    if (r) {
        redisReply *rep = cmd(r, "SET %s %s", "authed", "yes");
        CHECK(rep && rep->type == REDIS_REPLY_STATUS);
        sdc_redis_reply_free(rep);
        sdc_redis_close(r);
        r = NULL;
    }

    snprintf(file, sizeof(file), "%s/pw", tmpdir);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("s3cret-pw\n", f);
        fclose(f);
    }
    setenv("SDC_REDIS_PASSWORD_FILE", file, 1);
    CHECK_EQ_INT(sdc_redis_open(&r, &o, &err), SDC_ERR_INVALID_ARG); /* both set */
    CHECK(msg_has(&err, "set only one"));
    unsetenv("SDC_REDIS_PASSWORD");
    CHECK_EQ_INT(sdc_redis_open(&r, &o, &err), SDC_OK);
    sdc_redis_close(r);
    r = NULL;

    /* ACL user from the URL, password from the file option. */
    char pwfile[200];
    snprintf(pwfile, sizeof(pwfile), "%s/alice-pw", tmpdir);
    f = fopen(pwfile, "w");
    if (f) {
        fputs("alice-pw\r\n", f);
        fclose(f);
    }
    unsetenv("SDC_REDIS_PASSWORD_FILE");
    snprintf(url, sizeof(url), "redis+unix://alice@%s", auth_srv.sock);
    o.password_file = pwfile;
    CHECK_EQ_INT(sdc_redis_open(&r, &o, &err), SDC_OK);
    if (r) {
        redisReply *rep = cmd(r, "ACL WHOAMI");
        CHECK(rep && rep->type == REDIS_REPLY_STRING && strcmp(rep->str, "alice") == 0);
        sdc_redis_reply_free(rep);
        sdc_redis_close(r);
        r = NULL;
    }
    o.password_file = NULL;
    CHECK_EQ_INT(sdc_redis_open(&r, &o, &err), SDC_ERR_IO); /* alice without a password */
    snprintf(url, sizeof(url), "redis+unix://alice:bad@%s", auth_srv.sock);
    CHECK_EQ_INT(sdc_redis_open(&r, &o, &err), SDC_ERR_IO);
    CHECK(msg_has(&err, "as user 'alice' failed"));
    snprintf(url, sizeof(url), "redis+unix://alice:alice-pw@%s", auth_srv.sock);
    CHECK_EQ_INT(sdc_redis_open(&r, &o, &err), SDC_OK);
    sdc_redis_close(r);
    r = NULL;

    /* Missing, empty and multi-line password files. */
    snprintf(url, sizeof(url), "redis+unix://%s", auth_srv.sock);
    o.password_file = "/nonexistent/pw";
    CHECK_EQ_INT(sdc_redis_open(&r, &o, &err), SDC_ERR_NOT_FOUND);
    CHECK(msg_has(&err, "redis password file /nonexistent/pw"));
    f = fopen(pwfile, "w");
    if (f)
        fclose(f);
    o.password_file = pwfile;
    CHECK_EQ_INT(sdc_redis_open(&r, &o, &err), SDC_ERR_INVALID_ARG);
    CHECK(msg_has(&err, "is empty"));
    f = fopen(pwfile, "w");
    if (f) {
        fputs("line1\nline2\n", f);
        fclose(f);
    }
    CHECK_EQ_INT(sdc_redis_open(&r, &o, &err), SDC_ERR_INVALID_ARG);
    CHECK(msg_has(&err, "one line"));
    unlink(pwfile);
    unlink(file);
    server_kill(&auth_srv);
}

static void test_reconnect(void)
{
    static server_t srv;
    sdc_error_t err = {0};
    sdc_redis_t *r = NULL, *quick = NULL;
    if (server_start(&srv, "restart", 0, NULL) != 0) {
        CHECK(0);
        return;
    }
    char url[220];
    snprintf(url, sizeof(url), "redis+unix://%s", srv.sock);
    sdc_redis_opts_t o = {.url = url, .backoff_initial_ms = 20, .backoff_max_ms = 200,
                          .retry_budget_ms = 5000};
    CHECK_EQ_INT(sdc_redis_open(&r, &o, &err), SDC_OK);
    o.retry_budget_ms = 400;
    CHECK_EQ_INT(sdc_redis_open(&quick, &o, &err), SDC_OK);
    if (!r || !quick)
        goto out;
    sdc_jobs_t q;
    CHECK_EQ_INT(setup_queue(&q, r), 0);
    CHECK_EQ_INT(submit(&q, "before", 2), 0);
    int lead;
    CHECK_EQ_INT(sdc_leader_acquire(r, "coord-a", 60000, &lead, &err), SDC_OK); /* loads a script */
    CHECK_EQ_INT(sdc_leader_renew(r, "coord-a", 60000, &lead, &err), SDC_OK);

    /* The server dies and comes back 500 ms later, empty. */
    server_kill(&srv);
    CHECK_EQ_INT(server_spawn(&srv, 500), 0);
    double t0 = sdc_now();
    CHECK_EQ_INT(setup_queue(&q, r), 0);
    double waited = sdc_now() - t0;
    CHECK_MSG(waited > 0.3 && waited < 3.0, "reconnect took %.2f s", waited);
    CHECK(sdc_redis_reconnects(r) >= 1);
    CHECK_EQ_INT(submit(&q, "after", 2), 0);
    sdc_job_entry_t e;
    CHECK_EQ_INT(claim_one(&q, "coord-a", &e), 0);
    CHECK(strcmp(e.job_id, "after") == 0);
    free(e.params_json);
    /* Scripts were lost with the server: EVALSHA reloads them. */
    CHECK_EQ_INT(sdc_leader_acquire(r, "coord-a", 60000, &lead, &err), SDC_OK);
    CHECK_EQ_INT(lead, 1);
    CHECK_EQ_INT(sdc_leader_renew(r, "coord-a", 60000, &lead, &err), SDC_OK);
    CHECK_EQ_INT(lead, 1);
    /* The other client reconnects too, on its next command. */
    redisReply *rep = cmd(quick, "PING");
    CHECK(rep && rep->type == REDIS_REPLY_STATUS);
    sdc_redis_reply_free(rep);

    /* A stopped server: no reply within the command timeout, and the client
     * gives up within its budget, then recovers once the server runs again. */
    sdc_redis_opts_t so = {.url = url, .command_timeout_ms = 150, .connect_timeout_ms = 150,
                           .backoff_initial_ms = 20, .retry_budget_ms = 300};
    sdc_redis_t *slow = NULL;
    CHECK_EQ_INT(sdc_redis_open(&slow, &so, &err), SDC_OK);
    if (slow) {
        kill(srv.pid, SIGSTOP);
        t0 = sdc_now();
        CHECK_EQ_INT(sdc_redis_command(slow, &rep, &err, "PING"), SDC_ERR_IO);
        waited = sdc_now() - t0;
        CHECK(msg_has(&err, "no reply within 150 ms") && msg_has(&err, "gave up after"));
        CHECK_MSG(waited >= 0.14 && waited < 1.5, "timed out after %.2f s", waited);
        kill(srv.pid, SIGCONT);
        rep = cmd(slow, "PING");
        CHECK(rep && rep->type == REDIS_REPLY_STATUS);
        sdc_redis_reply_free(rep);
        sdc_redis_close(slow);
    }

    /* Gone for good: bounded failure with a clear message. */
    server_kill(&srv);
    t0 = sdc_now();
    CHECK_EQ_INT(sdc_redis_command(quick, &rep, &err, "PING"), SDC_ERR_IO);
    waited = sdc_now() - t0;
    CHECK(msg_has(&err, "gave up after") && msg_has(&err, "connect"));
    CHECK_MSG(waited < 1.0, "gave up after %.2f s", waited);
out:
    sdc_redis_close(r);
    sdc_redis_close(quick);
    server_kill(&srv);
}

int main(void)
{
    unsetenv("SDC_REDIS_PASSWORD");
    unsetenv("SDC_REDIS_PASSWORD_FILE");
    sdc_log_set_level(SDC_LOG_ERROR);
    RUN(test_url_good);
    RUN(test_url_bad);
    RUN(test_params_roundtrip);
    RUN(test_params_malformed);
    RUN(test_params_image);
    RUN(test_image_check);
    RUN(test_state_table);

    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sdc-redis-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("FAIL redis_server (mkdtemp: %s)\n", strerror(errno));
        return 1;
    }
    atexit(cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (server_start(&main_srv, "main", 1, NULL) != 0) {
        printf("FAIL redis_server (could not start redis-server; is it installed?)\n");
        return 1;
    }
    RUN(test_connect_and_prefix);
    RUN(test_reply_types);
    RUN(test_round_trip);
    RUN(test_invalid_transitions);
    RUN(test_cancel);
    RUN(test_metrics);
    RUN(test_double_completion);
    RUN(test_requeue_and_dead_letter);
    RUN(test_image_jobs);
    RUN(test_holders_and_reattempt);
    RUN(test_checkpoint_store);
    RUN(test_node_registry);
    RUN(test_leader_lease);
    RUN(test_reclaim);
    RUN(test_auth);
    RUN(test_reconnect);
    TEST_EXIT();
}
