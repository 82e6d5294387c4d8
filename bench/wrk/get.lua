-- wrk script: GET /v1/jobs/{id} of one queued job (SDC_BENCH_JOB), with the
-- token from SDC_BENCH_TOKEN.
wrk.method = "GET"
wrk.path = "/v1/jobs/" .. os.getenv("SDC_BENCH_JOB")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("SDC_BENCH_TOKEN")
