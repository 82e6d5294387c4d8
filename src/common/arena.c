/*
 * arena.c: a chained bump allocator for per-operation scratch memory.
 * Allocations are 64-byte aligned and never move; nothing is freed one by
 * one. After a reset the arena keeps a single block big enough for the
 * previous cycle, so a steady workload stops calling malloc after its first
 * cycle.
 */
#include "arena.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 64
#define ARENA_DEFAULT_BLOCK (1u << 20)

struct sdc_arena_block {
    sdc_arena_block_t *next; /* older block */
    size_t size;             /* usable bytes after the header */
    size_t used;
};

/* The header is padded to a whole alignment unit so block data starts
 * aligned. */
#define BLOCK_HEADER \
    ((sizeof(sdc_arena_block_t) + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1))

static uint8_t *block_data(sdc_arena_block_t *b)
{
    return (uint8_t *)b + BLOCK_HEADER;
}

static sdc_arena_block_t *block_new(size_t size)
{
    if (size > PTRDIFF_MAX - BLOCK_HEADER)
        return NULL;
    void *p = NULL;
    if (posix_memalign(&p, ARENA_ALIGN, BLOCK_HEADER + size) != 0)
        return NULL;
    sdc_arena_block_t *b = p;
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

static void blocks_free(sdc_arena_block_t *b)
{
    while (b) {
        sdc_arena_block_t *next = b->next;
        free(b);
        b = next;
    }
}

void sdc_arena_init(sdc_arena_t *a, size_t block_size)
{
    memset(a, 0, sizeof(*a));
    a->block_size = block_size ? block_size : ARENA_DEFAULT_BLOCK;
}

void *sdc_arena_alloc(sdc_arena_t *a, size_t bytes)
{
    /* Zero-byte requests still get a distinct pointer. */
    if (bytes == 0)
        bytes = 1;
    /* No object may exceed PTRDIFF_MAX (pointer differences inside it must
     * be representable); this also keeps the rounding below from wrapping. */
    if (bytes > PTRDIFF_MAX - (ARENA_ALIGN - 1))
        return NULL;
    size_t need = (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);

    sdc_arena_block_t *b = a->head;
    if (!b || b->size - b->used < need) {
        b = block_new(need > a->block_size ? need : a->block_size);
        if (!b)
            return NULL;
        b->next = a->head;
        a->head = b;
    }
    void *p = block_data(b) + b->used;
    b->used += need;
    a->used_total += need;
    if (a->used_total > a->high_water)
        a->high_water = a->used_total;
    return p;
}

void *sdc_arena_calloc(sdc_arena_t *a, size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size)
        return NULL;
    void *p = sdc_arena_alloc(a, count * size);
    if (p)
        memset(p, 0, count * size);
    return p;
}

char *sdc_arena_strdup(sdc_arena_t *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = sdc_arena_alloc(a, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

void sdc_arena_reset(sdc_arena_t *a)
{
    sdc_arena_block_t *b = a->head;
    if (b && b->next) {
        /* The cycle overflowed into several blocks: replace them by one that
         * holds everything it used. If that allocation fails, the next
         * alloc simply starts a fresh chain. */
        size_t want = a->used_total > a->block_size ? a->used_total : a->block_size;
        blocks_free(b);
        b = block_new(want);
    }
    if (b)
        b->used = 0;
    a->head = b;
    a->used_total = 0;
}

void sdc_arena_destroy(sdc_arena_t *a)
{
    blocks_free(a->head);
    memset(a, 0, sizeof(*a));
}
