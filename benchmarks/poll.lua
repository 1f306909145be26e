-- wrk: GET one task, with the API key. Set BENCH_TASK_ID and BENCH_KEY in the environment.
wrk.method = "GET"
wrk.path = "/api/v1/tasks/" .. (os.getenv("BENCH_TASK_ID") or "abcdef123456")
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or ("sk-" .. string.rep("a", 32)))
