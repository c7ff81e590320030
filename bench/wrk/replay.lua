-- Replays pre-generated requests (bench/requests.py) and counts their answers.
--
-- wrk -s replay.lua URL -- RECORDS_PREFIX RUN_S [cycle]
--   thread i (0-based) reads RECORDS_PREFIX.<i>: records `L<length>\n<bytes>`.
--
-- For RUN_S seconds from its first request a thread sends its records in
-- order, each once (with `cycle`, over and over: the baseline, which
-- checks nothing, replays a gateway round's records). After that, or when
-- its records run out, it sends only GET /healthz until wrk's -d ends, so
-- the requests wrk abandons at the end (wrk drops what is in flight) are
-- never payments: every payment sent was answered, and the gateway's count
-- of approved payments can be compared with ours exactly. Payments answer
-- 201 and /healthz 200, so an answer is told apart by its status alone.
-- When a thread's records have run out and every one was answered it
-- creates RECORDS_PREFIX.done.<i>, so the caller can stop wrk (SIGINT)
-- instead of waiting for -d.
--
-- At the end one line `PGBENCH {json}` holds the totals of all threads:
-- sent, answered_2xx (201), approved (body says "status":"approved"),
-- answered_other (any other status but 200), the span from the first
-- payment sent to the last payment answered (clock_gettime, CLOCK_MONOTONIC),
-- and whether a thread ran out of records before RUN_S.

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } pg_timespec;
int clock_gettime(int clk_id, pg_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("pg_timespec")
local function now_s()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

local records = {}
local next_record = 1
local run_s = 0
local started_at = nil
local stop_at = nil
local health = nil
local verified = false
local cycle = false
local marked = false
local done_path = nil

function init(args)
  local prefix = args[1]
  run_s = tonumber(args[2])
  cycle = args[3] == "cycle"
  done_path = prefix .. ".done." .. thread_index
  local file = assert(io.open(prefix .. "." .. thread_index, "rb"))
  local data = file:read("*a")
  file:close()
  local pos = 1
  while pos <= #data do
    local newline = string.find(data, "\n", pos, true)
    local length = tonumber(string.sub(data, pos + 1, newline - 1))
    records[#records + 1] = string.sub(data, newline + 1, newline + length)
    pos = newline + length + 1
  end
  health = wrk.format("GET", "/healthz")
  sent, answered_2xx, approved, answered_other, exhausted = 0, 0, 0, 0, 0
  first_sent_s, last_answered_s = 0, 0
  statuses = ""
end

function request()
  if not verified then
    -- wrk calls request() once in thread 0 before connecting, to look at its shape
    -- (script_verify_request): that call gets /healthz, so no payment is lost to it.
    verified = true
    if thread_index == 0 then return health end
  end
  local t = now_s()
  if started_at == nil then
    started_at = t
    stop_at = t + run_s
    first_sent_s = t
  end
  if cycle and next_record > #records then next_record = 1 end
  if t < stop_at and next_record <= #records then
    local raw = records[next_record]
    next_record = next_record + 1
    sent = sent + 1
    return raw
  end
  if next_record > #records and t < stop_at then exhausted = 1 end
  return health
end

function response(status, headers, body)
  if status == 201 then
    answered_2xx = answered_2xx + 1
    last_answered_s = now_s()
    if string.find(body, '"status":"approved"', 1, true) then approved = approved + 1 end
  elseif status ~= 200 then
    answered_other = answered_other + 1
    if #statuses < 200 then statuses = statuses .. status .. " " end
  end
  if not cycle and not marked and next_record > #records and answered_2xx + answered_other == sent then
    marked = true
    local file = io.open(done_path, "w")
    if file then file:close() end
  end
end

function done(summary, latency, requests)
  local totals = {sent = 0, answered_2xx = 0, approved = 0, answered_other = 0, exhausted = 0}
  local first, last = nil, 0
  local seen = ""
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do totals[name] = totals[name] + thread:get(name) end
    local f = thread:get("first_sent_s")
    if f > 0 and (first == nil or f < first) then first = f end
    local l = thread:get("last_answered_s")
    if l > last then last = l end
    seen = seen .. thread:get("statuses")
  end
  local span = 0
  if first ~= nil and last > first then span = last - first end
  io.write(string.format(
    'PGBENCH {"sent":%d,"answered_2xx":%d,"approved":%d,"answered_other":%d,"exhausted":%d,' ..
    '"span_s":%.6f,"wrk_requests":%d,"errors_connect":%d,"errors_read":%d,"errors_write":%d,' ..
    '"errors_timeout":%d,"other_statuses":"%s"}\n',
    totals.sent, totals.answered_2xx, totals.approved, totals.answered_other, totals.exhausted, span,
    summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, seen))
end
