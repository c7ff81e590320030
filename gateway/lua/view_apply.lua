-- Apply one journal entry to the views and acknowledge it, in one step.
-- Guarantees: an entry changes the views at most once (its stream id is
-- recorded as applied in the same step), and it is acknowledged only once
-- applied; a consumer killed before this script leaves the entry pending for
-- another to claim, and one killed after it leaves nothing to do.
-- KEYS[1] journal stream  KEYS[2] applied set  KEYS[3] days set  KEYS[4] stats hash
-- KEYS[5 .. 4+D] the day view hashes  KEYS[5+D .. 4+2D] the day item lists
-- ARGV[1] group  ARGV[2] stream id  ARGV[3] D  ARGV[4 .. 3+D] the days
-- then C, and C triples (day index from 0, field, delta), then I, and I pairs (day index, item JSON)
-- Returns {'ok', 1 if applied now, 0 if it had been}.
local days = tonumber(ARGV[3])
local applied = 0
if redis.call('SADD', KEYS[2], ARGV[2]) == 1 then
  applied = 1
  local at = 4 + days
  local counters = tonumber(ARGV[at])
  for i = 0, counters - 1 do
    local base = at + 1 + i * 3
    redis.call('HINCRBY', KEYS[5 + tonumber(ARGV[base])], ARGV[base + 1], ARGV[base + 2])
  end
  at = at + 1 + counters * 3
  local items = tonumber(ARGV[at])
  for i = 0, items - 1 do
    local base = at + 1 + i * 2
    redis.call('RPUSH', KEYS[5 + days + tonumber(ARGV[base])], ARGV[base + 1])
  end
  for i = 0, days - 1 do redis.call('SADD', KEYS[3], ARGV[4 + i]) end
  redis.call('HINCRBY', KEYS[4], 'applied', 1)
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return {'ok', applied}
