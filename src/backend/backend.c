/*
 * backend.c: picks a compute backend by name. Each backend lives in its own
 * file behind backend.h (backend_cpu.c, backend_cuda.cu when the build has
 * CUDA); this file only knows their names and constructors.
 */
#include "backend.h"

#include <string.h>

typedef sdc_status_t (*backend_create_fn)(const sdc_backend_config_t *cfg, sdc_backend_t **out,
                                          sdc_error_t *err);

#ifndef SDC_HAVE_CUDA
static sdc_status_t cuda_unavailable(const sdc_backend_config_t *cfg, sdc_backend_t **out,
                                     sdc_error_t *err)
{
    (void)cfg;
    *out = NULL;
    return sdc_error_set(err, SDC_ERR_UNSUPPORTED,
                         "backend \"cuda\": this build has no CUDA support; use \"cpu\"");
}
#endif

static const struct {
    const char *name;
    backend_create_fn create;
} backends[] = {
    {"cpu", sdc_backend_cpu_create},
#ifdef SDC_HAVE_CUDA
    {"cuda", sdc_backend_cuda_create},
#else
    {"cuda", cuda_unavailable},
#endif
};

sdc_status_t sdc_backend_create(const sdc_backend_config_t *cfg, sdc_backend_t **out,
                                sdc_error_t *err)
{
    const char *name = cfg && cfg->name ? cfg->name : "cpu";

    *out = NULL;
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
        if (strcmp(name, backends[i].name) == 0)
            return backends[i].create(cfg, out, err);
    return sdc_error_set(err, SDC_ERR_INVALID_ARG,
                         "unknown backend \"%s\" (known: \"cpu\", \"cuda\")", name);
}

void sdc_backend_destroy(sdc_backend_t *be)
{
    if (be)
        be->ops->destroy(be);
}
