/*
 * rt_jobs.h: jobs.h and clusterfile.h in one translation unit. Both headers
 * spell their role enumerators SDC_ROLE_*, so including both is a
 * redeclaration error; here jobs.h's (the node registry's) are renamed to
 * SDC_NODE_ROLE_*, the name its type sdc_node_role_t suggests. The runtime
 * includes this header, never jobs.h directly. Once jobs.h renames its
 * enumerators itself the #defines below match nothing and this header
 * reduces to the two includes.
 */
#ifndef SDC_RT_JOBS_H
#define SDC_RT_JOBS_H

#define SDC_ROLE_COORDINATOR SDC_NODE_ROLE_COORDINATOR
#define SDC_ROLE_TEXT_ENCODER SDC_NODE_ROLE_TEXT_ENCODER
#define SDC_ROLE_DIT_STAGE SDC_NODE_ROLE_DIT_STAGE
#define SDC_ROLE_VAE SDC_NODE_ROLE_VAE
#define SDC_ROLE_REFINER SDC_NODE_ROLE_REFINER
#define SDC_ROLE_GATEWAY SDC_NODE_ROLE_GATEWAY
#define SDC_ROLE_COUNT SDC_NODE_ROLE_COUNT
#include "cluster/jobs.h"
#undef SDC_ROLE_COORDINATOR
#undef SDC_ROLE_TEXT_ENCODER
#undef SDC_ROLE_DIT_STAGE
#undef SDC_ROLE_VAE
#undef SDC_ROLE_REFINER
#undef SDC_ROLE_GATEWAY
#undef SDC_ROLE_COUNT

#include "cluster/clusterfile.h"

/* The registry's role of a cluster-file role: the same numbering. */
_Static_assert((int)SDC_NODE_ROLE_COORDINATOR == (int)SDC_ROLE_COORDINATOR &&
                   (int)SDC_NODE_ROLE_TEXT_ENCODER == (int)SDC_ROLE_TEXT_ENCODER &&
                   (int)SDC_NODE_ROLE_DIT_STAGE == (int)SDC_ROLE_DIT_STAGE &&
                   (int)SDC_NODE_ROLE_VAE == (int)SDC_ROLE_VAE &&
                   (int)SDC_NODE_ROLE_REFINER == (int)SDC_ROLE_REFINER,
               "jobs.h and clusterfile.h must number the roles alike");

static inline sdc_node_role_t sdc_rt_node_role(sdc_role_t r)
{
    return (sdc_node_role_t)r;
}

#endif
