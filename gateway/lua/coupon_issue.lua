-- Issue one coupon of a campaign to a member, in the member's partition only.
-- Guarantees: the member exists; the member never gets more coupons of the
-- campaign than its per-member limit, however many issues race; one request
-- (its reference key) issues at most one coupon, and its retries get the same
-- code back; the coupon (a snapshot of the campaign's terms, so redeeming it
-- reads only this partition), the member's coupon set and the member's count
-- are written together, or nothing is.
-- KEYS[1] member  KEYS[2] coupon  KEYS[3] member's coupons (sorted set)
-- KEYS[4] member's coupon counts  KEYS[5] request reference
-- ARGV[1] request hash  ARGV[2] reference ttl s  ARGV[3] now ms  ARGV[4] per-member limit
-- ARGV[5] code  ARGV[6] campaign id  ARGV[7] member id  ARGV[8] title  ARGV[9] issuer
-- ARGV[10] funding account  ARGV[11] merchants  ARGV[12] currency  ARGV[13] min spend
-- ARGV[14] kind  ARGV[15] value  ARGV[16] cap  ARGV[17] valid from ms  ARGV[18] valid until ms
-- ARGV[19] stackable ('1' or '0')
-- Returns {'issued', code}, {'replay', code} or {error code[, detail]}: idempotency_mismatch,
-- member_not_found, campaign_ended, coupon_limit_reached (with the member's count), code_in_use,
-- invalid_terms.
local reference = redis.call('HMGET', KEYS[5], 'request_hash', 'code')
if reference[1] then
  if reference[1] ~= ARGV[1] then return {'idempotency_mismatch'} end
  return {'replay', reference[2]}
end
local limit = tonumber(ARGV[4])
if not limit or limit < 1 or limit ~= math.floor(limit) then return {'invalid_terms'} end
if ARGV[14] ~= 'percent' and ARGV[14] ~= 'fixed' then return {'invalid_terms'} end
if ARGV[19] ~= '1' and ARGV[19] ~= '0' then return {'invalid_terms'} end
if not parse_amount(ARGV[15]) then return {'invalid_terms'} end
for _, i in ipairs({13, 16, 17, 18}) do
  if not string.match(ARGV[i], '^[0-9]+$') then return {'invalid_terms'} end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'member_not_found'} end
if tonumber(ARGV[3]) > tonumber(ARGV[18]) then return {'campaign_ended'} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'code_in_use'} end
local count = tonumber(redis.call('HGET', KEYS[4], ARGV[6]) or '0')
if count >= limit then return {'coupon_limit_reached', string.format('%d', count)} end

redis.call('HSET', KEYS[2],
  'code', ARGV[5], 'campaign_id', ARGV[6], 'member_id', ARGV[7], 'state', 'issued',
  'title', ARGV[8], 'issuer', ARGV[9], 'funding', ARGV[10],
  'merchants', ARGV[11], 'currency', ARGV[12], 'min_spend', ARGV[13],
  'kind', ARGV[14], 'value', ARGV[15], 'cap', ARGV[16],
  'valid_from_ms', ARGV[17], 'valid_until_ms', ARGV[18], 'stackable', ARGV[19],
  'issued_ms', ARGV[3], 'payment_id', '', 'discount', '0', 'redeemed_ms', '')
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[5])
redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
redis.call('HSET', KEYS[5], 'request_hash', ARGV[1], 'code', ARGV[5])
redis.call('EXPIRE', KEYS[5], ARGV[2])
return {'issued', ARGV[5]}
