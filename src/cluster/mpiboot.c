/*
 * mpiboot.c: MPI bootstrap through dlopen (see mpiboot.h). The MPI
 * functions are declared here with Open MPI's ABI: handles are pointers.
 */
#include "mpiboot.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MPI_SUCCESS_ 0

typedef void *mpi_handle_t;

struct sdc_mpi {
    void *lib;
    int (*init)(int *, char ***);
    int (*comm_rank)(mpi_handle_t, int *);
    int (*comm_size)(mpi_handle_t, int *);
    int (*allgather)(const void *, int, mpi_handle_t, void *, int, mpi_handle_t, mpi_handle_t);
    int (*allgatherv)(const void *, int, mpi_handle_t, void *, const int *, const int *,
                      mpi_handle_t, mpi_handle_t);
    int (*finalize)(void);
    int (*abort_)(mpi_handle_t, int);
    mpi_handle_t comm_world, byte, int_;
    int size;
};

/* Open MPI 4 and 5 keep soname 40; the unversioned name needs the -dev package. */
static const char *const mpi_libs[] = {"libmpi.so.40", "libmpi.so"};

int sdc_mpi_env_rank(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        const char *v = getenv(vars[i]);
        char *end;
        if (!v || !*v)
            continue;
        long r = strtol(v, &end, 10);
        if (*end == '\0' && r >= 0 && r < INT_MAX)
            return (int)r;
    }
    return -1;
}

/* Resolves sym into *slot; the function pointer cast goes through memcpy
 * because ISO C has no conversion between object and function pointers. */
static int sym(sdc_mpi_t *m, const char *name, void *slot, size_t size)
{
    void *p = dlsym(m->lib, name);
    if (!p)
        return -1;
    memcpy(slot, &p, size);
    return 0;
}

static sdc_status_t load(sdc_mpi_t *m, sdc_error_t *err)
{
    const char *why = "";
    for (size_t i = 0; i < sizeof(mpi_libs) / sizeof(mpi_libs[0]) && !m->lib; i++) {
        /* RTLD_GLOBAL: Open MPI's components resolve symbols of libmpi. */
        m->lib = dlopen(mpi_libs[i], RTLD_NOW | RTLD_GLOBAL);
        if (!m->lib)
            why = dlerror();
    }
    if (!m->lib)
        return sdc_error_set(err, SDC_ERR_NOT_FOUND,
                             "MPI bootstrap: cannot load Open MPI's libmpi.so.40 (%s); "
                             "install openmpi-bin or start the processes without --mpi",
                             why ? why : "?");
    m->comm_world = dlsym(m->lib, "ompi_mpi_comm_world");
    m->byte = dlsym(m->lib, "ompi_mpi_byte");
    m->int_ = dlsym(m->lib, "ompi_mpi_int");
    if (!m->comm_world || !m->byte || !m->int_)
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                             "MPI bootstrap: the loaded libmpi is not Open MPI (no "
                             "ompi_mpi_comm_world); only Open MPI is supported");
    if (sym(m, "MPI_Init", &m->init, sizeof(m->init)) ||
        sym(m, "MPI_Comm_rank", &m->comm_rank, sizeof(m->comm_rank)) ||
        sym(m, "MPI_Comm_size", &m->comm_size, sizeof(m->comm_size)) ||
        sym(m, "MPI_Allgather", &m->allgather, sizeof(m->allgather)) ||
        sym(m, "MPI_Allgatherv", &m->allgatherv, sizeof(m->allgatherv)) ||
        sym(m, "MPI_Finalize", &m->finalize, sizeof(m->finalize)) ||
        sym(m, "MPI_Abort", &m->abort_, sizeof(m->abort_)))
        return sdc_error_set(err, SDC_ERR_UNSUPPORTED, "MPI bootstrap: libmpi lacks %s",
                             dlerror());
    return SDC_OK;
}

sdc_status_t sdc_mpi_init(sdc_mpi_t **out, int *rank, int *size, sdc_error_t *err)
{
    *out = NULL;
    sdc_mpi_t *m = calloc(1, sizeof(*m));
    if (!m)
        return sdc_error_set(err, SDC_ERR_NOMEM, "MPI bootstrap: out of memory");
    sdc_status_t st = load(m, err);
    if (st != SDC_OK)
        goto err_close;
    if (m->init(NULL, NULL) != MPI_SUCCESS_) {
        st = sdc_error_set(err, SDC_ERR_IO, "MPI bootstrap: MPI_Init failed");
        goto err_close;
    }
    if (m->comm_rank(m->comm_world, rank) != MPI_SUCCESS_ ||
        m->comm_size(m->comm_world, size) != MPI_SUCCESS_) {
        m->finalize();
        st = sdc_error_set(err, SDC_ERR_IO, "MPI bootstrap: MPI_Comm_rank/size failed");
        goto err_close;
    }
    m->size = *size;
    *out = m;
    return SDC_OK;

err_close:
    if (m->lib)
        dlclose(m->lib);
    free(m);
    return st;
}

void sdc_mpi_blobs_free(uint8_t **blobs, size_t *lens, int n)
{
    for (int i = 0; blobs && i < n; i++)
        free(blobs[i]);
    free(blobs);
    free(lens);
}

sdc_status_t sdc_mpi_allgather_blobs(sdc_mpi_t *m, const void *mine, size_t len, size_t max_len,
                                     uint8_t ***blobs_out, size_t **lens_out, sdc_error_t *err)
{
    const int n = m->size;
    sdc_status_t st = SDC_OK;
    int my_len = len <= max_len ? (int)len : -1;
    int *lens = calloc((size_t)n, sizeof(*lens));
    int *displs = calloc((size_t)n, sizeof(*displs));
    uint8_t *all = NULL, **blobs = NULL;
    size_t *out_lens = NULL;
    if (!lens || !displs) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "MPI bootstrap: out of memory");
        goto out;
    }
    /* Every rank takes part in both collectives even with a bad blob, so
     * that no rank is left waiting: the length -1 tells the others. */
    if (m->allgather(&my_len, 1, m->int_, lens, 1, m->int_, m->comm_world) != MPI_SUCCESS_) {
        st = sdc_error_set(err, SDC_ERR_IO, "MPI bootstrap: MPI_Allgather failed");
        goto out;
    }
    size_t total = 0;
    int bad = -1;
    for (int i = 0; i < n; i++) {
        if (lens[i] < 0 || (size_t)lens[i] > max_len)
            bad = i;
        displs[i] = (int)total;
        total += lens[i] > 0 ? (size_t)lens[i] : 0;
    }
    if (bad >= 0 || total > INT_MAX) {
        st = sdc_error_set(err, SDC_ERR_RANGE,
                           "MPI bootstrap: rank %d has an address of %d bytes (max %zu)", bad,
                           bad >= 0 ? lens[bad] : -1, max_len);
        goto out;
    }
    all = malloc(total ? total : 1);
    if (!all) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "MPI bootstrap: out of memory");
        goto out;
    }
    if (m->allgatherv(mine, my_len, m->byte, all, lens, displs, m->byte, m->comm_world) !=
        MPI_SUCCESS_) {
        st = sdc_error_set(err, SDC_ERR_IO, "MPI bootstrap: MPI_Allgatherv failed");
        goto out;
    }
    blobs = calloc((size_t)n, sizeof(*blobs));
    out_lens = calloc((size_t)n, sizeof(*out_lens));
    if (!blobs || !out_lens) {
        st = sdc_error_set(err, SDC_ERR_NOMEM, "MPI bootstrap: out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        blobs[i] = malloc(lens[i] ? (size_t)lens[i] : 1);
        if (!blobs[i]) {
            st = sdc_error_set(err, SDC_ERR_NOMEM, "MPI bootstrap: out of memory");
            goto out;
        }
        memcpy(blobs[i], all + displs[i], (size_t)lens[i]);
        out_lens[i] = (size_t)lens[i];
    }
    *blobs_out = blobs;
    *lens_out = out_lens;
    blobs = NULL;
    out_lens = NULL;
out:
    sdc_mpi_blobs_free(blobs, out_lens, n);
    free(all);
    free(lens);
    free(displs);
    return st;
}

void sdc_mpi_abort(sdc_mpi_t *m, int code)
{
    m->abort_(m->comm_world, code);
    _exit(code); /* MPI_Abort returns only when the launcher is gone */
}

void sdc_mpi_finalize(sdc_mpi_t *m)
{
    if (!m)
        return;
    m->finalize();
    /* libmpi stays loaded: its atexit handlers and threads may still run. */
    free(m);
}
