/*
 * rt_heart.c: the node's heartbeat, on a thread of its own with its own
 * Redis connection. The coordinator declares a node dead when its
 * heartbeat stops for --dead-after (3 s by default), and one DiT block, a
 * VAE decode or an LLM encode of a real model can run longer than that
 * without returning to the main loop: liveness must not depend on it. The
 * thread only rewrites node:<id> (the role's load and the draining flag
 * come from the main loop through sdc_rt_heart_set); it touches nothing
 * else of the process.
 */
#include "rt_internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

#define HEART_EVERY_MS 1000

struct sdc_rt_heart {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, kick;
    sdc_node_t node; /* address borrowed from the UCX worker */
    int64_t ttl_ms;
    sdc_redis_t *redis;
};

static void *beat(void *arg)
{
    sdc_rt_heart_t *h = arg;
    pthread_mutex_lock(&h->mu);
    while (!h->stop) {
        sdc_node_t n = h->node;
        pthread_mutex_unlock(&h->mu);
        sdc_error_t err = {0};
        if (sdc_node_register(h->redis, &n, h->ttl_ms, &err) != SDC_OK)
            SDC_WARN("%s: heartbeat: %s", n.id, err.msg);
        pthread_mutex_lock(&h->mu);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += HEART_EVERY_MS / 1000;
        until.tv_nsec += (long)(HEART_EVERY_MS % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!h->stop && !h->kick &&
               pthread_cond_timedwait(&h->cv, &h->mu, &until) != ETIMEDOUT)
            ;
        h->kick = 0;
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

sdc_status_t sdc_rt_heart_start(sdc_rt_heart_t **out, const sdc_redis_opts_t *ro,
                                const sdc_node_t *n, int64_t ttl_ms, sdc_error_t *err)
{
    sdc_rt_heart_t *h = calloc(1, sizeof(*h));
    if (!h)
        return sdc_error_set(err, SDC_ERR_NOMEM, "out of memory");
    h->node = *n;
    h->ttl_ms = ttl_ms;
    sdc_status_t st = sdc_redis_open(&h->redis, ro, err);
    if (st != SDC_OK)
        goto err_free;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    /* SIGTERM and SIGINT belong to the main thread, which drains: the
     * thread starts with every signal blocked. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&h->thread, NULL, beat, h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        st = sdc_error_set(err, SDC_ERR_IO, "cannot start the heartbeat thread");
        goto err_close;
    }
    *out = h;
    return SDC_OK;

err_close:
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    sdc_redis_close(h->redis);
err_free:
    free(h);
    return st;
}

void sdc_rt_heart_set(sdc_rt_heart_t *h, double load, int draining)
{
    pthread_mutex_lock(&h->mu);
    h->node.load = load;
    if (draining != h->node.draining) {
        h->node.draining = draining;
        h->kick = 1; /* the coordinator should stop sending work at once */
        pthread_cond_signal(&h->cv);
    }
    pthread_mutex_unlock(&h->mu);
}

void sdc_rt_heart_stop(sdc_rt_heart_t *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stop = 1;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    sdc_redis_close(h->redis);
    free(h);
}
