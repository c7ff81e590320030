-- An affiliate credits earned points to a member's wallet.
-- Guarantees: credited at most once per idempotency key and per affiliate
-- reference; an affiliate never issues more than its budget; the credit,
-- the budget use and the journal entry (naming the affiliate that funds the
-- points) are written together.
-- Affiliate scope: KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key
--   KEYS[4] budget  KEYS[5] affiliate reference
-- Member scope: KEYS[6..12] the member's wallet (keyspace.wallet_keys)
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] affiliate id  ARGV[6] member id  ARGV[7] points  ARGV[8] unit
-- ARGV[9] earning id  ARGV[10] affiliate reference  ARGV[11] expiry ms of the points ('' for none)
-- Returns {'done', earning JSON}, {'replay', earning JSON} or {error code, detail}.
local w = wallet_keys(6)
local early = claim_request(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
if early then return early end
local points = parse_amount(ARGV[7])
if not points then return {'invalid_amount'} end
local existing = redis.call('GET', KEYS[5])
if existing then return {'affiliate_ref_in_use', existing} end
local unit = redis.call('HGET', w.member, 'unit')
if not unit then return {'member_not_found'} end
if unit ~= ARGV[8] then return {'member_not_found'} end
local budget = redis.call('HMGET', KEYS[4], 'budget_points', 'issued_points')
local issued = tonumber(budget[2] or '0')
if issued + points > tonumber(budget[1] or '0') then
  return {'over_budget', string.format('%d', tonumber(budget[1] or '0') - issued)}
end

redis.call('HINCRBY', w.member, 'available', ARGV[7])
redis.call('HINCRBY', KEYS[4], 'issued_points', ARGV[7])
redis.call('SET', KEYS[5], ARGV[9])
local details = {earning_id = ARGV[9], affiliate_id = ARGV[5], affiliate_ref = ARGV[10]}
if ARGV[11] ~= '' then
  lots_add(w, ARGV[6], 'earn:' .. ARGV[9], ARGV[11], points)
  details.expires_ms = ARGV[11]
end
wallet_entry(w, ARGV[6], 'earn:' .. ARGV[9], 'earning', {
  posting('affiliate:' .. ARGV[5], unit, '-', ARGV[7]),
  posting('member:' .. ARGV[6], unit, '', ARGV[7]),
}, cjson.encode(details), ARGV[4], points, 0, details)
local response = cjson.encode({earning_id = ARGV[9], member_id = ARGV[6], points = ARGV[7],
  balance_after = redis.call('HGET', w.member, 'available'), affiliate_id = ARGV[5],
  affiliate_ref = ARGV[10], created_ms = ARGV[4], expires_ms = ARGV[11]})
finish_request(KEYS[3], ARGV[2], response, ARGV[3], ARGV[4])
return {'done', response}
