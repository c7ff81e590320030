-- Debit points from a member's available balance to an external account
-- (a merchant's payable, ...), earliest-expiring points first.
-- Guarantees: applied at most once per entry id; never leaves the available
-- balance negative; never spends expired points; balance change, journal
-- entry and the member's event are written together.
-- KEYS[1..7] the member's wallet (keyspace.wallet_keys)
-- ARGV[1] entry id  ARGV[2] amount  ARGV[3] destination account  ARGV[4] kind
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
lots_expire(w, ARGV[7], ARGV[6])
if hget_number(w.member, 'available') < amount then
  return balances('insufficient_points', false, w.member)
end

redis.call('HINCRBY', w.member, 'available', '-' .. ARGV[2])
lots_take(w, ARGV[7], amount)
local sid = wallet_entry(w, ARGV[7], ARGV[1], ARGV[4], {
  posting('member:' .. ARGV[7], unit, '-', ARGV[2]),
  posting(ARGV[3], unit, '', ARGV[2]),
}, ARGV[5], ARGV[6], -amount, 0, cjson.decode(ARGV[5]))
return balances('ok', sid, w.member)
