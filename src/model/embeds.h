/*
 * embeds.h: the `--embeds` file: precomputed text conditioning as a
 * safetensors file, with the tensor names the diffusers pipeline uses for its
 * arguments:
 *   prompt_embeds [1, n, D] or [n, D]        prompt_embeds_mask [1, n] or [n]
 *   prompt_embeds_2 [1, n2, D2] (optional)   prompt_embeds_mask_2
 *   negative_prompt_embeds ... (optional, same four names with "negative_")
 * Embeddings may be F32, F16 or BF16; masks I64, I32, U8, BOOL or F32 (0/1).
 * A pipeline golden file (tests/data/goldens/pipeline_*.safetensors) is a
 * valid embeds file.
 */
#ifndef SDC_EMBEDS_H
#define SDC_EMBEDS_H

#include <stdint.h>

#include "../common/status.h"
#include "pipeline.h"

typedef struct {
    float *embeds, *embeds_2;
    uint8_t *mask, *mask_2;
    int64_t n, n_2;
    int64_t dim, dim_2;
} sdc_embeds_part_t;

typedef struct {
    sdc_embeds_part_t pos, neg;
    int has_neg;
} sdc_embeds_t;

/* Loads and validates against the expected dims (dim_2 = 0: no ByT5 input
 * expected; a present prompt_embeds_2 is then an error). */
sdc_status_t sdc_embeds_load(sdc_embeds_t *e, const char *path, int64_t dim, int64_t dim_2,
                             sdc_error_t *err);
void sdc_embeds_free(sdc_embeds_t *e);
/* Views as pipeline conditioning. */
void sdc_embeds_cond(const sdc_embeds_part_t *part, sdc_text_cond_t *c);
/* Writes e in the same format (masks as I64, embeddings F32). */
sdc_status_t sdc_embeds_save(const sdc_embeds_t *e, const char *path, sdc_error_t *err);

#endif
