/*
 * mpiboot.h: the MPI half of bootstrap. Under mpirun every rank contributes
 * its UCX worker address and receives everyone's (one MPI_Allgather of the
 * lengths, one MPI_Allgatherv of the bytes); after that the cluster speaks
 * UCX only, and MPI is touched again only by MPI_Finalize at exit.
 *
 * MPI is loaded at run time (dlopen of Open MPI's libmpi.so.40) rather than
 * linked, so the binaries need no MPI to build or to run without mpirun.
 * Open MPI's handles (MPI_COMM_WORLD, MPI_BYTE, MPI_INT) are the addresses
 * of its predefined global objects, which is what is looked up here; other
 * MPI implementations (integer handles) are refused with a clear error.
 *
 * Not here: what the addresses are for (runtime.c) or any use of MPI for
 * data: a dead rank takes the whole Open MPI job down, so fault tolerance
 * lives in the Redis path.
 */
#ifndef SDC_MPIBOOT_H
#define SDC_MPIBOOT_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct sdc_mpi sdc_mpi_t;

/* The rank a launcher gave this process in the environment
 * (OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK), or -1 when not under one. */
int sdc_mpi_env_rank(void);

/* Loads libmpi, runs MPI_Init and reads rank and size. */
sdc_status_t sdc_mpi_init(sdc_mpi_t **out, int *rank, int *size, sdc_error_t *err);

/* Every rank's blob: blobs[i] (malloc'd, lens[i] bytes) is rank i's. Each
 * blob is at most max_len bytes (checked on every rank). Collective. */
sdc_status_t sdc_mpi_allgather_blobs(sdc_mpi_t *m, const void *mine, size_t len, size_t max_len,
                                     uint8_t ***blobs, size_t **lens, sdc_error_t *err);
void sdc_mpi_blobs_free(uint8_t **blobs, size_t *lens, int n);

/* MPI_Finalize. NULL is a no-op. */
void sdc_mpi_finalize(sdc_mpi_t *m);

/* MPI_Abort on MPI_COMM_WORLD: the launcher ends every rank. For a rank
 * that cannot start: waiting in MPI_Finalize for ranks that serve would
 * hang the job. Does not return. */
void sdc_mpi_abort(sdc_mpi_t *m, int code) __attribute__((noreturn));

#endif
