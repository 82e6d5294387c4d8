/*
 * fuzz_safetensors.c: libFuzzer target for the safetensors reader
 * (src/common/safetensors.c). The input is a whole file: it is written to a
 * memfd and opened through /proc/self/fd, so the real entry point runs
 * (length prefix, JSON header, dtypes, shapes, offsets, overlap checks).
 * An accepted file must only describe bytes inside its own mapping, sorted
 * by name and findable: the target checks that and reads every tensor's
 * first and last byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/safetensors.h"

static void check_file(const sdc_st_file_t *f)
{
    for (size_t i = 0; i < f->n_entries; i++) {
        const sdc_st_entry_t *e = &f->entries[i];
        if (e->begin > e->end || e->end > f->map_size - f->data_start)
            abort();
        if (i > 0 && strcmp(f->entries[i - 1].name, e->name) >= 0)
            abort();
        if (sdc_st_find(f, e->name) != e)
            abort();
        sdc_tensor_t t;
        sdc_st_view(f, e, &t);
        size_t n = (size_t)(e->end - e->begin);
        if (n) {
            volatile uint8_t sink = ((const uint8_t *)t.data)[0];
            sink ^= ((const uint8_t *)t.data)[n - 1];
            (void)sink;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz.safetensors", MFD_CLOEXEC);
    if (fd < 0)
        abort();
    for (size_t off = 0; off < size;) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0)
            abort();
        off += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    sdc_st_file_t f;
    sdc_error_t err = {0};
    if (sdc_st_open(&f, path, &err) == SDC_OK) {
        check_file(&f);
        sdc_st_close(&f);
    } else if (!err.msg[0]) {
        abort(); /* every rejection says why */
    }
    close(fd);
    return 0;
}
