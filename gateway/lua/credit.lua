-- Credit points to a member's available balance from an external account
-- (an affiliate's funding, a partner's exchange, ...), optionally as a lot
-- that expires.
-- Guarantees: applied at most once per entry id; the balance change, its
-- journal entry and the member's event are written together or not at all.
-- KEYS[1..7] the member's wallet (keyspace.wallet_keys)
-- ARGV[1] entry id  ARGV[2] amount  ARGV[3] source account  ARGV[4] kind
-- ARGV[5] meta JSON ARGV[6] now (ms) ARGV[7] member id  ARGV[8] unit
-- ARGV[9] expiry (ms) of the credited points ('' for none)
-- Returns {status, stream id, available, held}.
local w = wallet_keys(1)
local dup = already_applied(w.index, ARGV[1], w.member)
if dup then return dup end
local amount = parse_amount(ARGV[2])
if not amount then return {'invalid_amount'} end
local unit = redis.call('HGET', w.member, 'unit')
if not unit then return {'unknown_member'} end
if unit ~= ARGV[8] then return {'unit_mismatch'} end
if ARGV[9] ~= '' and not parse_amount(ARGV[9]) then return {'invalid_expiry'} end

redis.call('HINCRBY', w.member, 'available', ARGV[2])
local data = cjson.decode(ARGV[5])
if ARGV[9] ~= '' then
  lots_add(w, ARGV[7], ARGV[1], ARGV[9], amount)
  data.expires_ms = ARGV[9]
end
local sid = wallet_entry(w, ARGV[7], ARGV[1], ARGV[4], {
  posting(ARGV[3], unit, '-', ARGV[2]),
  posting('member:' .. ARGV[7], unit, '', ARGV[2]),
}, ARGV[5], ARGV[6], amount, 0, data)
lots_expire(w, ARGV[7], ARGV[6])
return balances('ok', sid, w.member)
