-- wrk script of keygate's load benchmark (run by the `loadbench` orchestrator).
-- Usage: wrk ... -s keys.lua http://127.0.0.1:PORT/hello -- KEYS_FILE
-- Every request carries one key in `x-api-key`, cycling through the keys in KEYS_FILE (one per
-- line). Requests are formatted once, in init, so the client's per-request cost is a table index.
-- `done` prints one machine-readable line for the orchestrator.

local requests = {}
local next_index = 0

function init(args)
  local path = args[1]
  if path == nil then error("keys.lua: give the keys file after --") end
  for line in io.lines(path) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("GET", wrk.path, { ["x-api-key"] = line })
    end
  end
  if #requests == 0 then error("keys.lua: no keys in " .. path) end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end

function done(summary, latency, _)
  io.write(string.format(
    "LOADBENCH requests=%d duration_us=%d p50_us=%d p99_us=%d status_errors=%d " ..
    "connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout))
end
