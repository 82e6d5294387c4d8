/*
 * test_runtime.c: the cluster runtime's pieces that need no processes: node
 * ids, the memory of finished jobs, tensor messages built by the runtime and
 * read back through wire validation (the fields added to sdc.proto
 * included), mask conversion, the job -> engine parameters mapping and its
 * config-only check against the engine's own, the launcher rank and the
 * command line. tests/integration/test_cluster.sh runs the processes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#include "backend/backend.h"
#include "cluster/model_parts.h"
#include "cluster/mpiboot.h"
#include "cluster/rt_internal.h"
#include "common/tensor.h"

static const char cluster_json[] =
    "{\"model\": \"m\", \"pipelines\": [{\"name\": \"p0\", \"stages\": 2}],"
    " \"nodes\": [{\"role\": \"coordinator\"}, {\"role\": \"text-encoder\"},"
    " {\"role\": \"dit-stage\", \"stage\": 0}, {\"role\": \"dit-stage\", \"stage\": 1},"
    " {\"role\": \"vae\"}]}";

static void test_node_ids(void)
{
    static sdc_cluster_t cf;
    sdc_error_t err = {0};
    CHECK(sdc_cluster_parse(&cf, cluster_json, strlen(cluster_json), "test", 4, &err) == SDC_OK);
    char id[SDC_JOB_ID_MAX + 1];
    for (int i = 0; i < cf.n_nodes; i++) {
        sdc_rt_node_id(&cf, i, id);
        CHECK_EQ_INT(sdc_rt_node_index(&cf, id), i);
    }
    sdc_rt_node_id(&cf, 3, id);
    CHECK(strcmp(id, "dit-stage-3") == 0);
    CHECK_EQ_INT(sdc_rt_node_index(&cf, "vae-3"), -1);        /* role of another node */
    CHECK_EQ_INT(sdc_rt_node_index(&cf, "vae-5"), -1);        /* no such node */
    CHECK_EQ_INT(sdc_rt_node_index(&cf, "vae-04"), -1);       /* not the canonical spelling */
    CHECK_EQ_INT(sdc_rt_node_index(&cf, "coordinator-"), -1);
    CHECK_EQ_INT(sdc_rt_node_index(&cf, "coordinator-0x"), -1);
    CHECK_EQ_INT(sdc_rt_node_index(&cf, "probe-0"), -1);
}

static void test_retired(void)
{
    static sdc_rt_retired_t r;
    memset(&r, 0, sizeof(r));
    CHECK_EQ_INT(sdc_rt_retired_attempt(&r, "a"), 0);
    CHECK(sdc_rt_learned_state(&r, 0, "a", 1) == SDC_WIRE_JOB_CURRENT);
    sdc_rt_retire(&r, "a", 2);
    CHECK_EQ_INT(sdc_rt_retired_attempt(&r, "a"), 2);
    CHECK(sdc_rt_learned_state(&r, 0, "a", 1) == SDC_WIRE_JOB_STALE);
    CHECK(sdc_rt_learned_state(&r, 0, "a", 2) == SDC_WIRE_JOB_STALE);
    CHECK(sdc_rt_learned_state(&r, 0, "a", 3) == SDC_WIRE_JOB_CURRENT);
    /* A job held at attempt 3: older attempts stale, newer ones current. */
    CHECK(sdc_rt_learned_state(&r, 3, "b", 2) == SDC_WIRE_JOB_STALE);
    CHECK(sdc_rt_learned_state(&r, 3, "b", 3) == SDC_WIRE_JOB_CURRENT);
    CHECK(sdc_rt_learned_state(&r, 3, "b", 4) == SDC_WIRE_JOB_CURRENT);
    /* The memory is bounded: the oldest entries go first. */
    char id[32];
    for (int i = 0; i < SDC_RT_RETIRED; i++) {
        snprintf(id, sizeof(id), "j%d", i);
        sdc_rt_retire(&r, id, 1);
    }
    CHECK_EQ_INT(sdc_rt_retired_attempt(&r, "a"), 0);
    CHECK_EQ_INT(sdc_rt_retired_attempt(&r, "j0"), 1);
    CHECK_EQ_INT(sdc_rt_retired_attempt(&r, id), 1);
}

static sdc_wire_limits_t limits(void)
{
    sdc_wire_limits_t l = {
        .max_header = 8000, .max_payload = 1 << 24, .max_samples = 4, .max_tensors = 16,
        .max_tokens = 5000, .max_grid = 64, .max_steps = 1000, .max_blocks = 4, .hidden = 64,
        .patch = 1, .latent_channels = 8, .text_dim = 32, .text_dim_2 = 24,
        .float_dtypes = 1u << SDC_DTYPE_F32,
    };
    return l;
}

/* A two-sample activation message as a stage builds it, through the wire
 * and back. */
static void test_tensor_message(void)
{
    sdc_rt_tb_t tb;
    sdc_error_t err = {0};
    uint8_t *payload = NULL;
    CHECK(sdc_rt_tb_init(&tb, 2, 4, &err) == SDC_OK);
    static const char params[] = "{\"id\":\"j1\",\"embeds\":\"/e\",\"steps\":4}";
    for (uint32_t i = 0; i < 2; i++) {
        Sdc__Sample *s = sdc_rt_tb_sample(&tb);
        CHECK(s != NULL);
        s->job_id = i ? "j2" : "j1";
        s->attempt = 1 + i;
        s->step = i ? 3 : 0;
        s->steps = 4;
        s->pass = SDC__PASS__PASS_COND;
        s->grid_h = 8;
        s->grid_w = 12;
        s->n_img = 96;
        s->n_txt = 10;
        s->timestep = 1000.0f;
        s->n_txt_pad = i ? 4 : 0;
        if (!i) {
            s->params_json = (char *)params;
            s->glyph = 1;
        }
        const int64_t hs[2] = {106, 64}, ts[1] = {64};
        CHECK_EQ_INT(sdc_rt_tb_tensor(&tb, i, "hidden", SDC__DTYPE__DTYPE_F32, 2, hs), 2 * i);
        CHECK_EQ_INT(sdc_rt_tb_tensor(&tb, i, "temb", SDC__DTYPE__DTYPE_F32, 1, ts), 2 * i + 1);
    }
    CHECK(sdc_rt_tb_sample(&tb) == NULL); /* full */
    CHECK(sdc_rt_tb_layout(&tb, &payload, &err) == SDC_OK);
    CHECK(payload != NULL);
    CHECK_EQ_INT(tb.h.payload_bytes, 2 * (106 * 64 * 4 + 64 * 4));
    for (size_t i = 0; payload && i < tb.h.n_tensors; i++) {
        CHECK_EQ_INT(tb.descs[i].offset % SDC_RT_ALIGN, 0);
        memset(payload + tb.descs[i].offset, (int)i + 1, tb.descs[i].nbytes);
    }
    tb.h.checksum_case = SDC__TENSOR_HEADER__CHECKSUM_CRC32C;
    tb.h.crc32c = sdc_wire_crc32c(0, payload, tb.h.payload_bytes);
    Sdc__Envelope env;
    sdc_wire_envelope_init(&env, "dit-stage-2");
    env.msg_case = SDC__ENVELOPE__MSG_TENSOR;
    env.tensor = &tb.h;
    uint8_t hdr[8000];
    size_t hl;
    CHECK(sdc_wire_encode(&env, hdr, sizeof(hdr), &hl, &err) == SDC_OK);
    sdc_wire_limits_t lim = limits();
    sdc_wire_msg_t msg;
    CHECK(sdc_wire_decode(hdr, hl, tb.h.payload_bytes, &lim, NULL, NULL, &msg, &err) == SDC_OK);
    if (msg.env) {
        const Sdc__TensorHeader *h = msg.env->tensor;
        CHECK_EQ_INT(h->n_samples, 2);
        CHECK(strcmp(h->samples[0]->params_json, params) == 0 && h->samples[0]->glyph);
        CHECK(h->samples[1]->params_json[0] == '\0' && !h->samples[1]->glyph);
        CHECK_EQ_INT(h->samples[1]->n_txt_pad, 4);
        CHECK(sdc_wire_check_payload(&msg, payload, tb.h.payload_bytes, &err) == SDC_OK);
        payload[7] ^= 1;
        CHECK(sdc_wire_check_payload(&msg, payload, tb.h.payload_bytes, &err) != SDC_OK);
        CHECK(msg.fault == SDC_WIRE_FAULT_CHECKSUM);
    }
    sdc_wire_msg_free(&msg);
    sdc_ucx_buf_free(payload, tb.h.payload_bytes);
    sdc_rt_tb_free(&tb);
}

static void test_mask_copy(void)
{
    const int64_t i64[4] = {1, 1, 0, 1};
    const int32_t i32[4] = {0, 1, 1, 0}, bad[4] = {0, 2, 1, 0};
    const uint8_t u8[4] = {1, 0, 0, 0};
    int64_t shape[1] = {4};
    Sdc__TensorDesc t;
    sdc__tensor_desc__init(&t);
    t.name = "prompt_embeds_mask";
    t.shape = shape;
    t.n_shape = 1;
    sdc_rt_msg_t m;
    memset(&m, 0, sizeof(m));
    uint8_t out[4];
    sdc_error_t err = {0};
    t.dtype = SDC__DTYPE__DTYPE_I64;
    m.payload = (uint8_t *)i64;
    CHECK(sdc_rt_mask_copy(&m, &t, out, &err) == SDC_OK && memcmp(out, "\1\1\0\1", 4) == 0);
    t.dtype = SDC__DTYPE__DTYPE_I32;
    m.payload = (uint8_t *)i32;
    CHECK(sdc_rt_mask_copy(&m, &t, out, &err) == SDC_OK && memcmp(out, "\0\1\1\0", 4) == 0);
    t.dtype = SDC__DTYPE__DTYPE_U8;
    m.payload = (uint8_t *)u8;
    CHECK(sdc_rt_mask_copy(&m, &t, out, &err) == SDC_OK && memcmp(out, "\1\0\0\0", 4) == 0);
    t.dtype = SDC__DTYPE__DTYPE_I32;
    m.payload = (uint8_t *)bad;
    CHECK(sdc_rt_mask_copy(&m, &t, out, &err) == SDC_ERR_FORMAT);
    CHECK(strstr(err.msg, "prompt_embeds_mask'[1] is 2") != NULL);
}

static sdc_backend_t *cpu(void)
{
    sdc_backend_config_t bc = {.name = "cpu", .n_threads = 1};
    sdc_backend_t *be = NULL;
    sdc_error_t err = {0};
    CHECK(sdc_backend_create(&bc, &be, &err) == SDC_OK);
    return be;
}

/* The coordinator's config-only check agrees with the engine's, message
 * included, over sizes, steps and guidance. */
static void test_check_params(void)
{
    const char *models[] = {"tiny-hunyuanimage", "tiny-hunyuanimage-distilled"};
    sdc_backend_t *be = cpu();
    for (size_t k = 0; be && k < 2; k++) {
        char dir[1024];
        snprintf(dir, sizeof(dir), "%s/%s", test_data_dir(), models[k]);
        sdc_pipeline_t *p = NULL;
        sdc_error_t err = {0};
        CHECK(sdc_pipeline_open(&p, be, dir, &err) == SDC_OK);
        if (!p)
            continue;
        const sdc_dit_config_t *dc = sdc_dit_config(p->dit);
        const sdc_vae_config_t *vc = sdc_vae_config(p->vae);
        const int sides[] = {0, -8, 8, 60, 64, 96, 8192, 8200};
        const int steps[] = {0, 1, 1000, 1001};
        const double guid[] = {0.0, 3.25, 999.0, 1000.0};
        int n = 0, mismatches = 0;
        for (int a = 0; a < 8; a++)
            for (int b = 0; b < 8; b += 3)
                for (int s = 0; s < 4; s++)
                    for (int g = 0; g < 4; g++) {
                        sdc_gen_params_t gp;
                        sdc_gen_params_default(&gp);
                        gp.width = sides[a];
                        gp.height = sides[b];
                        gp.steps = steps[s];
                        gp.distilled_guidance_scale = guid[g];
                        sdc_error_t e1 = {0}, e2 = {0};
                        sdc_status_t s1 = sdc_pipeline_check_params(p, &gp, &e1);
                        sdc_status_t s2 = sdc_parts_check_params(dc, vc, &gp, &e2);
                        mismatches += s1 != s2 || strcmp(e1.msg, e2.msg) != 0;
                        n++;
                    }
        CHECK_MSG(mismatches == 0, "%s: %d of %d parameter sets judged differently", models[k],
                  mismatches, n);
        CHECK_EQ_INT(sdc_parts_default_side(vc), 64 * vc->spatial_compression_ratio);
        sdc_pipeline_free(p);
    }
    if (be)
        sdc_backend_destroy(be);
}

/* Guidance like sdc-generate --guidance: the guiders' scale, or the
 * distilled scale of a guidance-embedding model. */
static void test_job_params(void)
{
    sdc_pipeline_t base, jp;
    sdc_dit_config_t dc;
    sdc_gen_params_t gp;
    sdc_job_params_t p;
    memset(&base, 0, sizeof(base));
    memset(&dc, 0, sizeof(dc));
    base.guider.kind = SDC_GUIDER_CFG;
    base.guider.guidance_scale = 3.5;
    base.ocr_guider.kind = SDC_GUIDER_NONE;
    sdc_job_params_init(&p);
    p.width = 96;
    p.height = 64;
    p.steps = 7;
    p.seed = 123456789012345ull;
    p.trim_text = 0;
    sdc_parts_job(&base, &dc, &p, &jp, &gp);
    CHECK(gp.width == 96 && gp.height == 64 && gp.steps == 7 && gp.seed == p.seed &&
          gp.trim_text == 0 && gp.distilled_guidance_scale == 3.25);
    CHECK(jp.guider.guidance_scale == 3.5);
    p.has_guidance = 1;
    p.guidance = 1.0;
    sdc_parts_job(&base, &dc, &p, &jp, &gp);
    CHECK(jp.guider.guidance_scale == 1.0 && base.guider.guidance_scale == 3.5);
    CHECK(jp.ocr_guider.kind == SDC_GUIDER_NONE && jp.ocr_guider.guidance_scale == 0.0);
    CHECK(gp.distilled_guidance_scale == 3.25);
    dc.guidance_embeds = 1;
    sdc_parts_job(&base, &dc, &p, &jp, &gp);
    CHECK(jp.guider.guidance_scale == 3.5 && gp.distilled_guidance_scale == 1.0);
}

static void test_env_rank(void)
{
    unsetenv("OMPI_COMM_WORLD_RANK");
    unsetenv("PMIX_RANK");
    unsetenv("PMI_RANK");
    CHECK_EQ_INT(sdc_mpi_env_rank(), -1);
    setenv("PMI_RANK", "3", 1);
    CHECK_EQ_INT(sdc_mpi_env_rank(), 3);
    setenv("OMPI_COMM_WORLD_RANK", "7", 1);
    CHECK_EQ_INT(sdc_mpi_env_rank(), 7);
    setenv("OMPI_COMM_WORLD_RANK", "x", 1);
    CHECK_EQ_INT(sdc_mpi_env_rank(), 3);
    setenv("PMI_RANK", "-2", 1);
    CHECK_EQ_INT(sdc_mpi_env_rank(), -1);
    unsetenv("OMPI_COMM_WORLD_RANK");
    unsetenv("PMI_RANK");
}

static int parse(sdc_rt_opts_t *o, const char *line)
{
    char buf[512], *argv[32];
    int argc = 0;
    snprintf(buf, sizeof(buf), "%s", line);
    for (char *t = strtok(buf, " "); t && argc < 31; t = strtok(NULL, " "))
        argv[argc++] = t;
    argv[argc] = NULL;
    sdc_rt_opts_default(o);
    o->prog = "test_runtime";
    return sdc_rt_parse_args(o, argc, argv);
}

static void test_cli(void)
{
    sdc_rt_opts_t o;
    CHECK_EQ_INT(parse(&o, "w --cluster c.json"), 0);
    CHECK(o.node == -1 && !o.mpi && o.heartbeat_ttl_ms == 5000 && o.max_attempts == 3);
    CHECK_EQ_INT(parse(&o, "w -c c.json -n 4 --mpi --job-timeout 2.5 --batch -t 2"), 0);
    CHECK(o.node == 4 && o.mpi && o.job_timeout_ms == 2500 && o.batch && o.threads == 2);
    CHECK_EQ_INT(parse(&o, "w --node 1"), 2);                      /* no --cluster */
    CHECK_EQ_INT(parse(&o, "w -c c.json --node -1"), 2);
    CHECK_EQ_INT(parse(&o, "w -c c.json --heartbeat-ttl 1"), 2);   /* below 2 s */
    CHECK_EQ_INT(parse(&o, "w -c c.json --job-timeout nan"), 2);
    CHECK_EQ_INT(parse(&o, "w -c c.json --frob"), 2);
    CHECK_EQ_INT(parse(&o, "w -c c.json extra"), 2);
    CHECK_EQ_INT(parse(&o, "w -c"), 2);
}

int main(void)
{
    RUN(test_node_ids);
    RUN(test_retired);
    RUN(test_tensor_message);
    RUN(test_mask_copy);
    RUN(test_check_params);
    RUN(test_job_params);
    RUN(test_env_rank);
    RUN(test_cli);
    TEST_EXIT();
}
