-- A new distinct query on every request: GET <prefix><line>, the lines read from the file named
-- by the first script argument (one URL-ready query per line, all different). With n threads
-- (the second argument), thread t sends lines t, t+n, t+2n, ..., so no query is sent twice;
-- a thread whose share runs out stops. The prefix (third argument) is "/feed?q=" unless given:
-- with "/feed?" the lines are whole query strings ("q=a+b&match=concept", "similar=2501.01234").
--   wrk -t2 -c16 -d60s -s bench/wrk/distinct.lua URL -- queries.txt 2 [prefix]

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

local queries, stride, line, prefix = {}, 1, 1, "/feed?q="

function init(args)
   for query in io.lines(args[1]) do
      queries[#queries + 1] = query
   end
   stride = tonumber(args[2]) or 1
   prefix = args[3] or prefix
   line = id
end

function request()
   if line > #queries then
      wrk.thread:stop()
      line = #queries -- one repeat at most, answered from the cache and left out of the counts
   end
   local query = queries[line]
   line = line + stride
   return wrk.format("GET", prefix .. query)
end
