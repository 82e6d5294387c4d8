/*
 * sdc-cluster-info: checks a cluster file with the parser every process
 * uses and prints what it describes in a line format that shell scripts
 * (deploy/local.sh) read without a JSON tool. It reads no model and talks to
 * no server.
 */
#include <stdio.h>
#include <string.h>

#include "cluster/clusterfile.h"

#define EXIT_USAGE 2

static void usage(FILE *f)
{
    fprintf(f,
"usage: sdc-cluster-info FILE\n"
"\n"
"Checks a cluster file (docs/cluster-file.md) and prints, one per line:\n"
"  redis URL\n"
"  prefix PREFIX\n"
"  model DIR\n"
"  backend NAME\n"
"  pipelines N\n"
"  pipeline INDEX NAME STAGES\n"
"  nodes N\n"
"  node INDEX ROLE PIPELINE STAGE HOST     (PIPELINE and STAGE -1 unless dit-stage)\n"
"Block ranges are not checked against the model (the model is not read).\n"
"\n"
"Exit status: 0 for a valid file, 1 for an invalid or unreadable one, 2 on a\n"
"usage error.\n");
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "sdc-cluster-info: expected one cluster file (see --help)\n");
        return EXIT_USAGE;
    }
    static sdc_cluster_t c; /* 200 KB: off the stack */
    sdc_error_t err = {0};
    if (sdc_cluster_load(&c, argv[1], 0, &err) != SDC_OK) {
        fprintf(stderr, "sdc-cluster-info: %s\n", err.msg);
        return 1;
    }
    printf("redis %s\nprefix %s\nmodel %s\nbackend %s\npipelines %d\n", c.redis_url, c.prefix,
           c.model, c.backend, c.n_pipelines);
    for (int i = 0; i < c.n_pipelines; i++)
        printf("pipeline %d %s %d\n", i, c.pipelines[i].name, c.pipelines[i].n_stages);
    printf("nodes %d\n", c.n_nodes);
    for (int i = 0; i < c.n_nodes; i++) {
        const sdc_cf_node_t *n = &c.nodes[i];
        printf("node %d %s %d %d %s\n", i, sdc_role_name(n->role), n->pipeline, n->stage,
               n->host);
    }
    return 0;
}
