/*
 * fault_be.h: a test backend that forwards to a real one, counts live
 * device bytes (and their peak) and can fail the k-th allocation, for the
 * memory-bound and allocation-failure tests of the model code.
 */
#ifndef SDC_TEST_FAULT_BE_H
#define SDC_TEST_FAULT_BE_H

#include <stddef.h>
#include <string.h>

#include "backend/backend.h"

/* The ops receive &fb->be, which shares the real backend's impl, so every
 * op but alloc and free runs unchanged. */
#define FAULT_MAX_LIVE 1024
typedef struct {
    sdc_backend_t be; /* first: ops cast it back */
    sdc_backend_ops_t ops;
    sdc_backend_t *real;
    long n_allocs, fail_at; /* fail_at < 0: never fail */
    size_t live, peak;
    void *ptr[FAULT_MAX_LIVE];
    size_t size[FAULT_MAX_LIVE];
} fault_be_t;

static void *fault_alloc(sdc_backend_t *be, size_t bytes)
{
    fault_be_t *fb = (fault_be_t *)be;
    if (fb->fail_at >= 0 && fb->n_allocs++ == fb->fail_at) return NULL;
    int slot = -1;
    for (int i = 0; i < FAULT_MAX_LIVE && slot < 0; i++)
        if (!fb->ptr[i]) slot = i;
    if (slot < 0) return NULL;
    void *p = fb->real->ops->alloc(fb->real, bytes);
    if (!p) return NULL;
    fb->ptr[slot] = p;
    fb->size[slot] = bytes;
    fb->live += bytes;
    if (fb->live > fb->peak) fb->peak = fb->live;
    return p;
}

static void fault_free(sdc_backend_t *be, void *p)
{
    fault_be_t *fb = (fault_be_t *)be;
    for (int i = 0; i < FAULT_MAX_LIVE; i++) {
        if (fb->ptr[i] == p) {
            fb->live -= fb->size[i];
            fb->ptr[i] = NULL;
        }
    }
    fb->real->ops->free(fb->real, p);
}

static void fault_init(fault_be_t *fb, sdc_backend_t *real)
{
    memset(fb, 0, sizeof(*fb));
    fb->real = real;
    fb->ops = *real->ops;
    fb->ops.alloc = fault_alloc;
    fb->ops.free = fault_free;
    fb->be = *real;
    fb->be.ops = &fb->ops;
    fb->fail_at = -1;
}

#endif
