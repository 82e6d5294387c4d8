/*
 * test_clusterfile.c: cluster file parsing, "even" splits, explicit block
 * ranges, and every kind of mistake an operator can make in the file.
 */
#include <string.h>

#include "test.h"

#include "cluster/clusterfile.h"

static const char *good =
    "{\"redis\": \"redis://127.0.0.1:7000\", \"model\": \"m\", \"micro_batch\": 3,"
    " \"pipelines\": [{\"name\": \"a\", \"stages\": 2},"
    "                 {\"name\": \"b\", \"stages\": 3, \"blocks\": [[0,1],[1,3],[3,4]],"
    "                  \"sizes\": [\"64x64\", \"96x64\"]}],"
    " \"nodes\": [{\"role\": \"coordinator\"}, {\"role\": \"text-encoder\"},"
    "            {\"role\": \"dit-stage\", \"pipeline\": \"a\", \"stage\": 0},"
    "            {\"role\": \"dit-stage\", \"pipeline\": \"a\", \"stage\": 1},"
    "            {\"role\": \"dit-stage\", \"pipeline\": \"b\", \"stage\": 0},"
    "            {\"role\": \"dit-stage\", \"pipeline\": \"b\", \"stage\": 1},"
    "            {\"role\": \"dit-stage\", \"pipeline\": \"b\", \"stage\": 2, \"host\": \"gpu3\"},"
    "            {\"role\": \"vae\"}]}";

static void test_good_file(void)
{
    sdc_cluster_t c;
    sdc_error_t err = {0};
    CHECK(sdc_cluster_parse(&c, good, strlen(good), "good.json", 4, &err) == SDC_OK);
    CHECK(strcmp(c.redis_url, "redis://127.0.0.1:7000") == 0);
    CHECK(strcmp(c.prefix, "sdc:") == 0);
    CHECK_EQ_INT(c.micro_batch, 3);
    CHECK_EQ_INT(c.max_inflight, 8); /* 2 x 3 stages + 2 */
    CHECK_EQ_INT(c.max_image_bytes, 16 << 20);
    CHECK_EQ_INT(c.n_pipelines, 2);
    CHECK_EQ_INT(c.pipelines[0].block_begin[1], 2);
    CHECK_EQ_INT(c.pipelines[0].block_end[1], 4);
    CHECK_EQ_INT(c.pipelines[1].block_end[1], 3);
    CHECK_EQ_INT(c.pipelines[1].n_sizes, 2);
    CHECK_EQ_INT(c.pipelines[1].sizes[1][0], 96);
    CHECK_EQ_INT(c.n_nodes, 8);
    CHECK(strcmp(c.nodes[6].host, "gpu3") == 0);
    CHECK_EQ_INT(sdc_cluster_find_node(&c, SDC_ROLE_DIT_STAGE, 1, 2), 6);
    CHECK_EQ_INT(sdc_cluster_find_node(&c, SDC_ROLE_VAE, -1, -1), 7);
    CHECK_EQ_INT(sdc_cluster_find_node(&c, SDC_ROLE_DIT_STAGE, 0, 5), -1);
}

static void test_split_even(void)
{
    int b[4], e[4];
    sdc_cluster_split_even(60, 4, b, e);
    CHECK(b[0] == 0 && e[0] == 15 && b[3] == 45 && e[3] == 60);
    sdc_cluster_split_even(7, 3, b, e);
    CHECK(e[0] == 3 && e[1] == 5 && e[2] == 7);
    sdc_cluster_split_even(4, 4, b, e);
    for (int i = 0; i < 4; i++) CHECK(e[i] - b[i] == 1);
}

static void test_deferred_resolve(void)
{
    sdc_cluster_t c;
    sdc_error_t err = {0};
    CHECK(sdc_cluster_parse(&c, good, strlen(good), "good.json", 0, &err) == SDC_OK);
    CHECK(sdc_cluster_resolve(&c, 60, &err) == SDC_ERR_RANGE); /* b's ranges end at 4 */
    CHECK(strstr(err.msg, "'b'") != NULL);
}

/* Each broken file must fail with a message containing `want`. */
static void expect_error(const char *text, int blocks, const char *want)
{
    sdc_cluster_t c;
    sdc_error_t err = {0};
    sdc_status_t st = sdc_cluster_parse(&c, text, strlen(text), "bad.json", blocks, &err);
    CHECK_MSG(st != SDC_OK, "accepted: %s", text);
    CHECK_MSG(strstr(err.msg, want) != NULL, "message '%s' lacks '%s'", err.msg, want);
}

#define NODES3                                                                           \
    "\"nodes\": [{\"role\": \"coordinator\"}, {\"role\": \"text-encoder\"}, {\"role\": \"vae\"}," \
    " {\"role\": \"dit-stage\", \"stage\": 0}]"
#define NODES3_REFINER                                                                   \
    "\"nodes\": [{\"role\": \"coordinator\"}, {\"role\": \"text-encoder\"}, {\"role\": \"vae\"}," \
    " {\"role\": \"dit-stage\", \"stage\": 0}, {\"role\": \"refiner\"}]"

static void test_errors(void)
{
    expect_error("{", 4, "bad.json");
    expect_error("[]", 4, "bad.json");
    expect_error("{\"model\": \"m\", \"pipelines\": [{}], " NODES3 ", \"colour\": 1}", 4,
                 "unknown key 'colour'");
    expect_error("{\"pipelines\": [{}], " NODES3 "}", 4, "model is required");
    expect_error("{\"model\": 5, \"pipelines\": [{}], " NODES3 "}", 4, "model must be a string");
    expect_error("{\"model\": \"m\", \"pipelines\": [], " NODES3 "}", 4, "'pipelines'");
    expect_error("{\"model\": \"m\", \"pipelines\": [{\"stages\": 0}], " NODES3 "}", 4,
                 "stages must be an integer");
    expect_error("{\"model\": \"m\", \"pipelines\": [{\"stages\": 2.5}], " NODES3 "}", 4,
                 "stages must be an integer");
    expect_error("{\"model\": \"m\", \"pipelines\": [{\"stages\": 2}], " NODES3 "}", 4,
                 "stage 1 has 0 nodes");
    expect_error("{\"model\": \"m\", \"pipelines\": [{\"name\": \"x\"}, {\"name\": \"x\"}], " NODES3
                 "}",
                 4, "used twice");
    expect_error("{\"model\": \"m\", \"pipelines\": [{\"blocks\": \"odd\"}], " NODES3 "}", 4,
                 "blocks must be");
    expect_error("{\"model\": \"m\", \"pipelines\": [{\"stages\": 2, \"blocks\": [[0,2]]}], " NODES3
                 "}",
                 4, "1 ranges for 2 stages");
    expect_error("{\"model\": \"m\", \"pipelines\": [{\"blocks\": [[1,4]]}], " NODES3 "}", 4,
                 "contiguous");
    expect_error("{\"model\": \"m\", \"pipelines\": [{\"blocks\": [[0,3]]}], " NODES3 "}", 4,
                 "end at 3");
    expect_error("{\"model\": \"m\", \"pipelines\": [{\"sizes\": [\"64by64\"]}], " NODES3 "}", 4,
                 "WxH");
    expect_error("{\"model\": \"m\", \"pipelines\": [{\"stages\": 5}], \"nodes\": []}", 4, "'nodes'");
    expect_error("{\"model\": \"m\", \"pipelines\": [{}], \"nodes\": [{\"role\": \"painter\"}]}", 4,
                 "'painter'");
    expect_error("{\"model\": \"m\", \"pipelines\": [{}], \"nodes\": [{\"role\": \"vae\", "
                 "\"stage\": 0}]}",
                 4, "only dit-stage");
    expect_error("{\"model\": \"m\", \"pipelines\": [{}], \"nodes\": [{\"role\": \"dit-stage\", "
                 "\"pipeline\": \"zz\", \"stage\": 0}]}",
                 4, "'zz' is not defined");
    expect_error("{\"model\": \"m\", \"pipelines\": [{}], \"nodes\": [{\"role\": \"coordinator\"}, "
                 "{\"role\": \"text-encoder\"}, {\"role\": \"dit-stage\", \"stage\": 0}]}",
                 4, "no vae node");
    expect_error("{\"model\": \"m\", \"pipelines\": [{\"stages\": 5}], " NODES3 "}", 4,
                 "stage 1 has 0 nodes");
    expect_error("{\"model\": \"m\", \"max_image_bytes\": 0, \"pipelines\": [{}], " NODES3 "}", 4,
                 "max_image_bytes must be an integer in 1..536870912");
    expect_error("{\"model\": \"m\", \"max_image_bytes\": \"16M\", \"pipelines\": [{}], " NODES3
                 "}", 4, "max_image_bytes must be an integer");
    expect_error("{\"model\": \"m\", \"pipelines\": [{}], " NODES3_REFINER "}", 4,
                 "refiner nodes need 'refiner_model'");
    expect_error("{\"model\": \"m\", \"refiner_model\": \"r\", \"pipelines\": [{}], " NODES3 "}",
                 4, "'refiner_model' is set but no node has role refiner");
}

/* Refiner nodes are optional; with them the file names the refiner model. */
static void test_refiner_nodes(void)
{
    const char *f = "{\"model\": \"m\", \"refiner_model\": \"/r\", \"pipelines\": [{}], "
                    NODES3_REFINER "}";
    sdc_cluster_t c;
    sdc_error_t err = {0};
    CHECK(sdc_cluster_parse(&c, f, strlen(f), "r.json", 4, &err) == SDC_OK);
    CHECK(strcmp(c.refiner_model, "/r") == 0);
    CHECK_EQ_INT(sdc_cluster_find_node(&c, SDC_ROLE_REFINER, -1, -1), 4);
    CHECK(strcmp(sdc_role_name(SDC_ROLE_REFINER), "refiner") == 0);
    CHECK_EQ_INT(sdc_role_parse("refiner"), SDC_ROLE_REFINER);
    CHECK(sdc_cluster_parse(&c, good, strlen(good), "good.json", 4, &err) == SDC_OK);
    CHECK(c.refiner_model[0] == '\0');
}

static void test_missing_file(void)
{
    sdc_cluster_t c;
    sdc_error_t err = {0};
    CHECK(sdc_cluster_load(&c, "/nonexistent/cluster.json", 4, &err) == SDC_ERR_IO);
    CHECK(strstr(err.msg, "/nonexistent/cluster.json") != NULL);
}

int main(void)
{
    RUN(test_good_file);
    RUN(test_split_even);
    RUN(test_deferred_resolve);
    RUN(test_errors);
    RUN(test_missing_file);
    RUN(test_refiner_nodes);
    TEST_EXIT();
}
