/*
 * arena.h: a bump allocator for scratch memory whose lifetime is one
 * operation (a forward pass, a request). Reset rewinds it; nothing is freed
 * individually. Blocks are chained, so it never moves live allocations.
 */
#ifndef SDC_ARENA_H
#define SDC_ARENA_H

#include <stddef.h>

typedef struct sdc_arena_block sdc_arena_block_t;

typedef struct {
    sdc_arena_block_t *head;  /* current block */
    size_t block_size;        /* default size of new blocks */
    size_t used_total;        /* bytes handed out since the last reset */
    size_t high_water;        /* max of used_total over the arena's life */
} sdc_arena_t;

void sdc_arena_init(sdc_arena_t *a, size_t block_size);
/* 64-byte aligned; NULL when out of memory or when bytes overflows. */
void *sdc_arena_alloc(sdc_arena_t *a, size_t bytes);
void *sdc_arena_calloc(sdc_arena_t *a, size_t count, size_t size);
char *sdc_arena_strdup(sdc_arena_t *a, const char *s);
/* Rewinds to empty, keeping one block for reuse (grown to hold everything
 * the last cycle used, so a repeated workload stops allocating). */
void sdc_arena_reset(sdc_arena_t *a);
void sdc_arena_destroy(sdc_arena_t *a);

#endif
