/*
 * runtime.h: one process of an sdc cluster, started by sdc-worker or
 * sdc-coordinator. It reads the cluster file, finds which node it is (--node
 * or the MPI rank), loads what its role needs, bootstraps its UCX peers
 * (through Redis, or MPI_Allgather under mpirun), serves until told to stop
 * and then drains: it finishes the work it holds, deregisters and returns.
 *
 * The roles (role_text.c, role_stage.c, role_vae.c, role_coord.c) run inside
 * this shell; rt_internal.h is their side of it. Tools only see this header.
 */
#ifndef SDC_RUNTIME_H
#define SDC_RUNTIME_H

#include <signal.h>

#include "common/status.h"

typedef struct {
    const char *prog;          /* program name in messages */
    const char *cluster_path;
    int node;                  /* index in the cluster file; -1: the MPI rank */
    int mpi;                   /* 1: --mpi (also chosen when a launcher's rank is set) */
    int coordinator_only;      /* sdc-coordinator: refuse worker nodes */
    int threads;               /* CPU backend threads, 0: all cores */
    int peer_timeout_ms;       /* how long to wait for peers to register */
    int heartbeat_ttl_ms;      /* TTL of sdc:node:<id>, refreshed every second */
    int drain_timeout_ms;      /* bound on finishing held work after a stop */
    int job_timeout_ms;        /* a job without progress for this long is requeued */
    int max_attempts;          /* coordinator: attempts before a job fails */
    int reclaim_ms;            /* coordinator: take over entries idle this long */
    int dead_after_ms;         /* coordinator: a node silent this long is dead; also
                                * the leader lease's TTL */
    int checkpoint_every;      /* last DiT stages: checkpoint every K steps, 0: off */
    int batch;                 /* coordinator: stop the cluster once the queue is empty */
    double synthetic_ms;       /* DiT stages: > 0 replaces the DiT compute by a
                                * sleep of this many ms per sample (benchmarks) */
} sdc_rt_opts_t;

void sdc_rt_opts_default(sdc_rt_opts_t *o);

/* Parses the command line shared by sdc-worker and sdc-coordinator (and
 * applies --log-level). Returns 0 to run, 1 when --help was printed, 2 on a
 * usage error (already reported on stderr). */
int sdc_rt_parse_args(sdc_rt_opts_t *o, int argc, char **argv);

/* Runs the node until *stop becomes nonzero (a signal) or a coordinator
 * sends Shutdown, then drains. SDC_OK after a clean stop. */
sdc_status_t sdc_rt_run(const sdc_rt_opts_t *o, volatile sig_atomic_t *stop, sdc_error_t *err);

#endif
