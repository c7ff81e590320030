-- An affiliate's earning, step 2 of 3, in the member's scope: credit the
-- member (earn_claim.lua reserved the points against the budget).
-- Guarantees: an earning id credits at most once, and every attempt of it
-- gets the answer its credit wrote; the credit, its lot (for points that
-- expire), the journal entry naming the affiliate that funds the points and
-- the member's event are written together.
-- KEYS[1..7] the member's wallet (keyspace.wallet_keys)  KEYS[8] the earning's answer
-- ARGV[1] affiliate id  ARGV[2] member id  ARGV[3] points  ARGV[4] unit  ARGV[5] earning id
-- ARGV[6] affiliate reference  ARGV[7] expiry ms of the points ('' for none)  ARGV[8] now ms
-- ARGV[9] how long the answer is kept, s (the idempotency retention)
-- Returns {'moved', earning JSON} or {error code}.
local w = wallet_keys(1)
local entry_id = 'earn:' .. ARGV[5]
local answered = redis.call('GET', KEYS[8])
if answered then return {'moved', answered} end
-- Applied but its answer gone: the answer outlives the idempotency key that
-- names this earning id, so no attempt can get here. Refused, never twice.
if redis.call('HEXISTS', w.index, entry_id) == 1 then return {'duplicate'} end
local points = parse_amount(ARGV[3])
if not points then return {'invalid_amount'} end
local unit = redis.call('HGET', w.member, 'unit')
if not unit or unit ~= ARGV[4] then return {'member_not_found'} end

redis.call('HINCRBY', w.member, 'available', ARGV[3])
local details = {earning_id = ARGV[5], affiliate_id = ARGV[1], affiliate_ref = ARGV[6]}
if ARGV[7] ~= '' then
  lots_add(w, ARGV[2], entry_id, ARGV[7], points)
  details.expires_ms = ARGV[7]
end
wallet_entry(w, ARGV[2], entry_id, 'earning', {
  posting('affiliate:' .. ARGV[1], unit, '-', ARGV[3]),
  posting('member:' .. ARGV[2], unit, '', ARGV[3]),
}, cjson.encode(details), ARGV[8], points, 0, details)
local response = cjson.encode({earning_id = ARGV[5], member_id = ARGV[2], points = ARGV[3],
  balance_after = redis.call('HGET', w.member, 'available'), affiliate_id = ARGV[1],
  affiliate_ref = ARGV[6], created_ms = ARGV[8], expires_ms = ARGV[7]})
redis.call('SET', KEYS[8], response, 'EX', ARGV[9])
return {'moved', response}
