-- wrk: POST a create request, with the API key. Set BENCH_KEY in the environment.
wrk.method = "POST"
wrk.path = "/api/v1/tasks/create"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or ("sk-" .. string.rep("a", 32)))
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model_id": "gpt-image-2", "prompt": "a serene zen garden at sunrise", "aspect_ratio": "16:9"}'
