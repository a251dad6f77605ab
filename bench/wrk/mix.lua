-- A realistic mix of feed-reader traffic, each request drawn at random:
--   POPULAR %  a handful of popular feeds (the readers of one instance share subscriptions)
--   CONDITIONAL %  the same feeds revalidated with their current ETag (answered 304)
--   the rest   a new query never asked before (a new subscription, or someone trying queries)
-- Arguments: popular.tsv (path TAB etag per line), new-queries.txt (one URL-ready query per
-- line), thread count, POPULAR percent, CONDITIONAL percent.
--   wrk -t2 -c16 -d30s -s bench/wrk/mix.lua URL -- popular.tsv new.txt 2 60 25

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

local popular, new_queries = {}, {}
local stride, line, popular_share, conditional_share = 1, 1, 60, 25

function init(args)
   for entry in io.lines(args[1]) do
      local path, etag = entry:match("^([^\t]+)\t(.*)$")
      popular[#popular + 1] = { path = path, etag = etag }
   end
   for query in io.lines(args[2]) do
      new_queries[#new_queries + 1] = query
   end
   stride = tonumber(args[3]) or 1
   popular_share = tonumber(args[4]) or popular_share
   conditional_share = tonumber(args[5]) or conditional_share
   line = id
   math.randomseed(id * 7919 + os.time())
end

function request()
   local draw = math.random(100)
   -- Popular feeds are not equally popular: the first ones are asked most (Zipf-like).
   local feed = popular[math.min(#popular, math.floor((#popular + 1) ^ math.random()))]
   if draw <= popular_share then
      return wrk.format("GET", feed.path)
   elseif draw <= popular_share + conditional_share then
      local headers = { ["If-None-Match"] = feed.etag }
      for name, value in pairs(wrk.headers) do
         headers[name] = value -- keep -H headers (Accept-Encoding)
      end
      return wrk.format("GET", feed.path, headers)
   end
   local query = new_queries[math.min(line, #new_queries)]
   line = line + stride
   return wrk.format("GET", "/feed?q=" .. query)
end
