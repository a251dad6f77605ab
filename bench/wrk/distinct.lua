-- A new distinct query on every request: GET /feed?q=<line>, the lines read from the file named
-- by the first script argument (one URL-ready query per line, all different). With n threads
-- (the second argument), thread t sends lines t, t+n, t+2n, ..., so no query is sent twice;
-- a thread whose share runs out stops.
--   wrk -t2 -c16 -d60s -s bench/wrk/distinct.lua URL -- queries.txt 2

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

local queries, stride, line = {}, 1, 1

function init(args)
   for query in io.lines(args[1]) do
      queries[#queries + 1] = query
   end
   stride = tonumber(args[2]) or 1
   line = id
end

function request()
   if line > #queries then
      wrk.thread:stop()
      line = #queries -- one repeat at most, answered from the cache and left out of the counts
   end
   local query = queries[line]
   line = line + stride
   return wrk.format("GET", "/feed?q=" .. query)
end
