-- Cancel (void) an approved payment on its business day: its points go back
-- to the member and come off the merchant's payable.
-- Guarantees: a payment is cancelled at most once, only by its own merchant,
-- only from the states the payment table allows, only on the same business
-- day; balance, payment state, batch and journal change together.
-- Merchant scope: KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key
--   KEYS[4] terminal batch  KEYS[5] terminal batch log
-- Member scope: KEYS[6] member  KEYS[7] journal  KEYS[8] entry index  KEYS[9] payment
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] merchant id  ARGV[6] payment id  ARGV[7] business day now
-- ARGV[8] states a cancel is allowed from (space separated)
-- Returns {'done', payment JSON}, {'replay', payment JSON} or {error code, detail}.
local early = claim_request(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
if early then return early end
local payment = redis.call('HMGET', KEYS[9], 'merchant_id', 'state', 'business_day', 'points', 'unit', 'member_id', 'amount', 'account')
if payment[1] ~= ARGV[5] then return {'payment_not_found'} end
if not state_in(payment[2], ARGV[8]) then return {'invalid_state', payment[2]} end
if payment[3] ~= ARGV[7] then return {'cancel_window_closed', payment[3]} end

local points, unit, member_id = payment[4], payment[5], payment[6]
redis.call('HINCRBY', KEYS[6], 'available', points)
journal_append(KEYS[7], KEYS[8], 'cancel:' .. ARGV[6], 'cancel', {
  posting(payment[8], unit, '-', points),
  posting('member:' .. member_id, unit, '', points),
}, cjson.encode({payment_id = ARGV[6], merchant_id = ARGV[5]}), ARGV[4])
redis.call('HSET', KEYS[9], 'state', 'cancelled', 'cancelled_ms', ARGV[4],
  'balance_after', redis.call('HGET', KEYS[6], 'available'))
batch_record(KEYS[4], KEYS[5], 'void', ARGV[6], payment[7])
local response = hash_json(KEYS[9])
finish_request(KEYS[3], ARGV[2], response, ARGV[3], ARGV[4])
return {'done', response}
