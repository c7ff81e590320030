-- Phase one of a two-phase movement: reserve points from the member's
-- available balance into held, pending a post or a void. The hold takes the
-- earliest-expiring points first and remembers which, so a void puts them
-- back where they came from.
-- Guarantees: at most once per entry id and per hold id; never leaves the
-- available balance negative; never holds expired points; hold record,
-- balances, journal entry and the member's event together.
-- KEYS[1..7] the member's wallet (keyspace.wallet_keys)  KEYS[8] hold hash
-- ARGV[1] entry id  ARGV[2] amount  ARGV[3] hold id  ARGV[4] kind
-- ARGV[5] meta JSON ARGV[6] now (ms) ARGV[7] member id  ARGV[8] unit
-- Returns {status, stream id, available, held}.
local w = wallet_keys(1)
local dup = already_applied(w.index, ARGV[1], w.member)
if dup then return dup end
local amount = parse_amount(ARGV[2])
if not amount then return {'invalid_amount'} end
local unit = redis.call('HGET', w.member, 'unit')
if not unit then return {'unknown_member'} end
if unit ~= ARGV[8] then return {'unit_mismatch'} end
if redis.call('EXISTS', KEYS[8]) == 1 then return {'hold_exists'} end
lots_expire(w, ARGV[7], ARGV[6])
if hget_number(w.member, 'available') < amount then
  return balances('insufficient_points', false, w.member)
end

redis.call('HINCRBY', w.member, 'available', '-' .. ARGV[2])
redis.call('HINCRBY', w.member, 'held', ARGV[2])
redis.call('HSET', KEYS[8], 'state', 'pending', 'member_id', ARGV[7], 'amount', ARGV[2],
  'unit', unit, 'entry_id', ARGV[1], 'created_ms', ARGV[6], 'lots', lots_take(w, ARGV[7], amount))
local sid = wallet_entry(w, ARGV[7], ARGV[1], ARGV[4], {
  posting('member:' .. ARGV[7], unit, '-', ARGV[2]),
  posting('member:' .. ARGV[7] .. ':held', unit, '', ARGV[2]),
}, ARGV[5], ARGV[6], -amount, amount, cjson.decode(ARGV[5]))
return balances('ok', sid, w.member)
