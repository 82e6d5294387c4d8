-- wrk script: POST /v1/jobs with a fixed body (the bench's "null stages":
-- no worker consumes the queue, so this measures the gateway and Redis).
-- Token from the environment: SDC_BENCH_TOKEN.
wrk.method = "POST"
wrk.body = '{"prompt": "a lighthouse at dusk, oil painting", "size": "1024x1024", "steps": 30, "seed": 7}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("SDC_BENCH_TOKEN")

