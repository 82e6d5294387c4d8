/*
 * sdc-coordinator: a coordinator node of an sdc cluster (nodes[--node] of
 * the cluster file, or the MPI rank under mpirun): leader election through
 * a Redis lease, admission control and placement of queued jobs onto
 * pipelines, failure detection and requeueing. The logic lives in
 * src/cluster/role_coord.c; sdc-worker runs the same code on a coordinator
 * node.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cluster/runtime.h"
#include "common/log.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

int main(int argc, char **argv)
{
    sdc_rt_opts_t o;
    sdc_rt_opts_default(&o);
    o.prog = "sdc-coordinator";
    o.coordinator_only = 1;
    sdc_log_set_level(SDC_LOG_INFO);
    sdc_log_init_from_env();
    int rc = sdc_rt_parse_args(&o, argc, argv);
    if (rc)
        return rc == 1 ? 0 : 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sdc_error_t err = {0};
    if (sdc_rt_run(&o, &stop_requested, &err) != SDC_OK) {
        fprintf(stderr, "%s: error: %s\n", o.prog, err.msg[0] ? err.msg : sdc_status_str(err.code));
        return 1;
    }
    return 0;
}
