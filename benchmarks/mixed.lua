-- wrk: a steady mix of one submit to four polls of recently created tasks, counting bad answers.
-- Set BENCH_KEY in the environment (an account with enough credits).
local key = os.getenv("BENCH_KEY") or ("sk-" .. string.rep("a", 32))
local body = '{"model_id": "gpt-image-2", "prompt": "a soak test, a serene zen garden"}'
local post_headers = { ["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json" }
local get_headers = { ["Authorization"] = "Bearer " .. key }
local ids = {}
local created = 0
local count = 0
bad = 0

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function request()
  count = count + 1
  if count % 5 == 1 or #ids == 0 then
    return wrk.format("POST", "/api/v1/tasks/create", post_headers, body)
  end
  return wrk.format("GET", "/api/v1/tasks/" .. ids[math.random(#ids)], get_headers)
end

function response(status, headers, text)
  if status ~= 200 or not string.find(text, '"code":200', 1, true) then
    bad = bad + 1
  end
  if string.find(text, '"request_id"', 1, true) then
    local id = string.match(text, '"task_id":"([a-z0-9]+)"')
    if id then
      created = created + 1
      ids[((created - 1) % 100) + 1] = id -- the newest hundred: never old enough to be dropped
    end
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("bad")
  end
  io.write(string.format("bad answers: %d\n", total))
end
