-- wrk script for bench/serve.py: POSTs JSON bodies read from a file (one per line), round robin from a random
-- start per thread, and prints one machine-readable summary line at the end.
--   wrk -t1 -c64 -d8s -s bench/wrk/post.lua http://127.0.0.1:PORT -- /sentiment bodies.jsonl
local bodies = {}
local target = "/"
local counter = 0

function init(args)
  target = args[1]
  for line in io.lines(args[2]) do
    bodies[#bodies + 1] = line
  end
  counter = math.random(#bodies)
end

function request()
  counter = counter % #bodies + 1
  return wrk.format("POST", target, { ["Content-Type"] = "application/json" }, bodies[counter])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "socket_errors": %d, "status_errors": %d, '
      .. '"p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)
  ))
end
