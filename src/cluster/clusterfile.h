/*
 * clusterfile.h: the cluster file, a JSON document that names the Redis
 * server, the model, the pipelines (how many DiT stages each, which block
 * range each stage holds), the refiner model when the cluster refines, and
 * the nodes (one process each, its role and
 * place). Under mpirun, rank i runs nodes[i]; started without MPI, a worker
 * is told its node index (or role + pipeline + stage) on its command line.
 * docs/cluster-file.md documents the format; deploy/ has examples.
 */
#ifndef SDC_CLUSTERFILE_H
#define SDC_CLUSTERFILE_H

#include <stdint.h>

#include "../common/status.h"

#define SDC_CF_MAX_PIPELINES 64
#define SDC_CF_MAX_STAGES 64
#define SDC_CF_MAX_NODES 1024
#define SDC_CF_MAX_SIZES 16
/* Input images of image-to-image jobs (= jobs.h's SDC_JOB_IMAGE_DEFAULT_CAP
 * and SDC_JOB_IMAGE_MAX). */
#define SDC_CF_IMAGE_BYTES_DEFAULT (16 << 20)
#define SDC_CF_IMAGE_BYTES_MAX (512 << 20)

typedef enum {
    SDC_ROLE_COORDINATOR = 0,
    SDC_ROLE_TEXT_ENCODER,
    SDC_ROLE_DIT_STAGE,
    SDC_ROLE_VAE,
    SDC_ROLE_REFINER,
    SDC_ROLE_COUNT
} sdc_role_t;

/* "coordinator", "text-encoder", "dit-stage", "vae", "refiner". */
const char *sdc_role_name(sdc_role_t r);
/* Returns -1 for an unknown name. */
int sdc_role_parse(const char *name);

typedef struct {
    char name[64];
    int n_stages;
    int block_begin[SDC_CF_MAX_STAGES]; /* resolved: stage s holds [begin, end) */
    int block_end[SDC_CF_MAX_STAGES];
    int split_even;                      /* 1 when the file said "even" */
    int n_sizes;                         /* 0: any resolution */
    int sizes[SDC_CF_MAX_SIZES][2];      /* width, height */
} sdc_cf_pipeline_t;

typedef struct {
    sdc_role_t role;
    char host[128];  /* informational under MPI; "localhost" by default */
    int pipeline;    /* index into pipelines, dit-stage only (-1 otherwise) */
    int stage;       /* dit-stage only (-1 otherwise) */
} sdc_cf_node_t;

typedef struct {
    char redis_url[512];
    char prefix[64];
    char model[1024];
    char refiner_model[1024]; /* "" unless the cluster has refiner nodes */
    char backend[16];
    int micro_batch;   /* max samples per stage message (default 4) */
    int max_inflight;  /* per pipeline admission bound in jobs (default 2 x stages + 2) */
    int max_image_bytes; /* largest input image a job may carry (default 16 MiB) */
    int n_pipelines;
    sdc_cf_pipeline_t pipelines[SDC_CF_MAX_PIPELINES];
    int n_nodes;
    sdc_cf_node_t nodes[SDC_CF_MAX_NODES];
} sdc_cluster_t;

/* Parses and validates a cluster file. total_blocks > 0 resolves "even"
 * splits and checks explicit ranges (contiguous, covering [0, total)); 0
 * defers that to sdc_cluster_resolve (when the model is not loaded yet). */
sdc_status_t sdc_cluster_load(sdc_cluster_t *c, const char *path, int total_blocks,
                              sdc_error_t *err);
sdc_status_t sdc_cluster_parse(sdc_cluster_t *c, const char *text, size_t len, const char *label,
                               int total_blocks, sdc_error_t *err);
/* Resolves/validates the block ranges against the model's block count. */
sdc_status_t sdc_cluster_resolve(sdc_cluster_t *c, int total_blocks, sdc_error_t *err);

/* Splits n blocks into s contiguous ranges, sizes differing by at most one
 * (the first n % s ranges get the extra block). */
void sdc_cluster_split_even(int n_blocks, int n_stages, int *begin, int *end);

/* Index of the node running (pipeline, stage) for dit-stage, or the first
 * node of the role otherwise; -1 when absent. */
int sdc_cluster_find_node(const sdc_cluster_t *c, sdc_role_t role, int pipeline, int stage);

#endif
