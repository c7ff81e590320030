-- Phase one of a two-phase movement: reserve points from the member's
-- available balance into held, pending a post or a void.
-- Guarantees: at most once per entry id and per hold id; never leaves the
-- available balance negative; hold record, balances and journal together.
-- KEYS[1] member hash  KEYS[2] journal stream  KEYS[3] entry index  KEYS[4] hold hash
-- ARGV[1] entry id  ARGV[2] amount  ARGV[3] hold id  ARGV[4] kind
-- ARGV[5] meta JSON ARGV[6] now (ms) ARGV[7] member id  ARGV[8] unit
-- Returns {status, stream id, available, held}.
local dup = already_applied(KEYS[3], ARGV[1], KEYS[1])
if dup then return dup end
local amount = parse_amount(ARGV[2])
if not amount then return {'invalid_amount'} end
local unit = redis.call('HGET', KEYS[1], 'unit')
if not unit then return {'unknown_member'} end
if unit ~= ARGV[8] then return {'unit_mismatch'} end
if redis.call('EXISTS', KEYS[4]) == 1 then return {'hold_exists'} end
if hget_number(KEYS[1], 'available') < amount then
  return balances('insufficient_points', false, KEYS[1])
end

redis.call('HINCRBY', KEYS[1], 'available', '-' .. ARGV[2])
redis.call('HINCRBY', KEYS[1], 'held', ARGV[2])
redis.call('HSET', KEYS[4], 'state', 'pending', 'member_id', ARGV[7], 'amount', ARGV[2],
  'unit', unit, 'entry_id', ARGV[1], 'created_ms', ARGV[6])
local sid = journal_append(KEYS[2], KEYS[3], ARGV[1], ARGV[4], {
  posting('member:' .. ARGV[7], unit, '-', ARGV[2]),
  posting('member:' .. ARGV[7] .. ':held', unit, '', ARGV[2]),
}, ARGV[5], ARGV[6])
return balances('ok', sid, KEYS[1])
