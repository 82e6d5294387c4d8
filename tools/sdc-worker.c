/*
 * sdc-worker: one node of an sdc cluster: a text encoder, a DiT stage or a
 * VAE decoder, as the cluster file's nodes[--node] (or, under mpirun, the
 * MPI rank) says; a coordinator node runs the coordinator, so one mpirun
 * command line can start a whole cluster. src/cluster/runtime.h has the
 * process, src/cluster/role_*.c the roles.
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
    o.prog = "sdc-worker";
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
