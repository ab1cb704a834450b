-- wrk script for benches/load/run.sh: round-robin over a file of request paths, one per line
-- (10 000 distinct signed URLs per case), so no server can answer from a one-URL cache.
--
--   wrk -t T -c C -d 5s -s urls.lua http://127.0.0.1:PORT -- PATHS_FILE T
--
-- Every request is formatted once in init(); request() only picks the next one, so wrk spends
-- no more per request than with a single URL. No response() callback: defining one makes wrk
-- parse every response's headers in Lua and can make wrk, not the server, the limit. wrk counts
-- status >= 400 itself (summary.errors.status); the run script checks exact statuses and body
-- sizes with curl before each mode. done() prints one machine-readable RESULT line.

local prepared = {}
local count = 0
local next_index = 0
local thread_counter = 0

function setup(thread)
   -- Runs in the main state once per thread, before init(): give each thread its own start.
   thread:set("thread_id", thread_counter)
   thread_counter = thread_counter + 1
end

function init(args)
   local file = args[1]
   if file == nil then error("urls.lua: pass the paths file after --") end
   for line in io.lines(file) do
      if line ~= "" then
         count = count + 1
         prepared[count] = wrk.format("GET", line)
      end
   end
   if count == 0 then error("urls.lua: no paths in " .. file) end
   local threads = tonumber(args[2]) or 1
   next_index = math.floor((thread_id or 0) * count / threads) % count
end

function request()
   next_index = next_index % count + 1
   return prepared[next_index]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d bytes=%d status_ge_400=%d connect=%d read=%d write=%d timeout=%d p50_us=%d p99_us=%d max_us=%d\n",
      summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.max))
end
