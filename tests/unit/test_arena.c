/* test_arena.c: alignment, non-overlap, growth into new blocks, reset
 * reuse, and rejection of sizes that would overflow. */
#include "common/arena.h"

#include <stddef.h>
#include <stdint.h>

#include "test.h"

static void test_alignment_and_disjoint(void)
{
    sdc_arena_t a;
    sdc_arena_init(&a, 4096);
    static const size_t sizes[] = {1, 3, 64, 65, 100, 7, 128, 0, 2000};
    uint8_t *ptrs[9];
    for (int i = 0; i < 9; i++) {
        ptrs[i] = sdc_arena_alloc(&a, sizes[i]);
        CHECK(ptrs[i] != NULL);
        CHECK_EQ_INT((uintptr_t)ptrs[i] % 64, 0);
        memset(ptrs[i], i + 1, sizes[i] ? sizes[i] : 1);
    }
    /* Nothing written later clobbered an earlier allocation. */
    for (int i = 0; i < 9; i++)
        for (size_t j = 0; j < (sizes[i] ? sizes[i] : 1); j++)
            CHECK(ptrs[i][j] == i + 1);
    /* Zero-byte requests get distinct pointers. */
    CHECK(ptrs[7] != ptrs[8] && ptrs[7] != ptrs[6]);
    /* Sizes are rounded to 64: 1+3+64+65+100+7+128+0+2000 -> 64 x (1+1+1+2+2+1+2+1+32) */
    CHECK_EQ_INT(a.used_total, 64 * 43);
    CHECK_EQ_INT(a.high_water, 64 * 43);
    sdc_arena_destroy(&a);
    CHECK(a.head == NULL);
}

static void test_growth_and_reset(void)
{
    sdc_arena_t a;
    sdc_arena_init(&a, 1024);
    CHECK_EQ_INT(a.block_size, 1024);
    /* 10 x 320 bytes need several 1 KiB blocks; one request is larger
     * than a block and gets a block of its own. */
    uint8_t *p[11];
    for (int i = 0; i < 10; i++) {
        p[i] = sdc_arena_alloc(&a, 300);
        CHECK(p[i] != NULL);
        memset(p[i], 0xA0 + i, 300);
    }
    p[10] = sdc_arena_alloc(&a, 5000);
    CHECK(p[10] != NULL);
    memset(p[10], 0x55, 5000);
    for (int i = 0; i < 10; i++)
        CHECK(p[i][0] == 0xA0 + i && p[i][299] == 0xA0 + i);
    const size_t cycle = 10 * 320 + 5056;
    CHECK_EQ_INT(a.used_total, cycle);

    sdc_arena_reset(&a);
    CHECK_EQ_INT(a.used_total, 0);
    CHECK_EQ_INT(a.high_water, cycle);
    CHECK(a.head != NULL);

    /* The same cycle again now fits one block: the allocations are
     * consecutive. */
    uint8_t *first = sdc_arena_alloc(&a, 300);
    uint8_t *prev = first;
    for (int i = 1; i < 10; i++) {
        uint8_t *q = sdc_arena_alloc(&a, 300);
        CHECK(q == prev + 320);
        prev = q;
    }
    uint8_t *last = sdc_arena_alloc(&a, 5000);
    CHECK(last == prev + 320);
    memset(first, 1, cycle); /* the whole span is ours */
    CHECK_EQ_INT(a.used_total, cycle);

    /* A smaller cycle after reset reuses the block from its start. */
    sdc_arena_reset(&a);
    CHECK(sdc_arena_alloc(&a, 10) == first);
    CHECK_EQ_INT(a.high_water, cycle);
    sdc_arena_destroy(&a);
}

static void test_default_block_and_helpers(void)
{
    sdc_arena_t a;
    sdc_arena_init(&a, 0);
    CHECK_EQ_INT(a.block_size, 1u << 20);
    int *z = sdc_arena_calloc(&a, 100, sizeof(int));
    CHECK(z != NULL);
    int sum = 0;
    for (int i = 0; i < 100; i++)
        sum += z[i];
    CHECK_EQ_INT(sum, 0);
    CHECK(sdc_arena_calloc(&a, 0, 8) != NULL);
    char *s = sdc_arena_strdup(&a, "transformer_blocks.0.attn");
    CHECK(s && strcmp(s, "transformer_blocks.0.attn") == 0);
    CHECK_EQ_INT((uintptr_t)s % 64, 0);
    char *e = sdc_arena_strdup(&a, "");
    CHECK(e && e[0] == '\0');
    /* Reset on an arena that never allocated, and after destroy. */
    sdc_arena_t b;
    sdc_arena_init(&b, 128);
    sdc_arena_reset(&b);
    CHECK(b.head == NULL && b.used_total == 0);
    sdc_arena_destroy(&b);
    sdc_arena_destroy(&a);
}

static void test_overflow_sizes(void)
{
    sdc_arena_t a;
    sdc_arena_init(&a, 256);
    CHECK(sdc_arena_alloc(&a, SIZE_MAX) == NULL);
    CHECK(sdc_arena_alloc(&a, SIZE_MAX - 10) == NULL);
    CHECK(sdc_arena_alloc(&a, SIZE_MAX - 63) == NULL);
    /* Rounding up would not wrap, but no object may exceed PTRDIFF_MAX. */
    CHECK(sdc_arena_alloc(&a, SIZE_MAX - 127) == NULL);
    CHECK(sdc_arena_alloc(&a, (size_t)PTRDIFF_MAX) == NULL);
    CHECK(sdc_arena_alloc(&a, (size_t)PTRDIFF_MAX - 63) == NULL);
    CHECK(sdc_arena_calloc(&a, SIZE_MAX / 2, 4) == NULL);
    CHECK(sdc_arena_calloc(&a, (SIZE_MAX >> 3) + 1, 8) == NULL);
    CHECK_EQ_INT(a.used_total, 0);
    /* Failures leave the arena usable. */
    void *p = sdc_arena_alloc(&a, 10);
    CHECK(p != NULL);
    CHECK_EQ_INT(a.used_total, 64);
    sdc_arena_destroy(&a);
}

int main(void)
{
    RUN(test_alignment_and_disjoint);
    RUN(test_growth_and_reset);
    RUN(test_default_block_and_helpers);
    RUN(test_overflow_sizes);
    TEST_EXIT();
}
