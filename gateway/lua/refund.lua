-- Refund part or all of a payment: points go back to the member and come
-- off the merchant's payable. Many refunds per payment, each idempotent.
-- Guarantees: refunds of a payment never add up to more than it paid; only
-- its own merchant refunds it; balance, payment, refund list, batch and
-- journal change together.
-- Merchant scope: KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key
--   KEYS[4] terminal batch  KEYS[5] terminal batch log
-- Member scope: KEYS[6] member  KEYS[7] journal  KEYS[8] entry index  KEYS[9] payment
--   KEYS[10] payment's refund list
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] merchant id  ARGV[6] payment id  ARGV[7] refund id  ARGV[8] amount
-- ARGV[9] states a refund is allowed from  ARGV[10] reason
-- Returns {'done', refund JSON}, {'replay', refund JSON} or {error code, detail}.
local early = claim_request(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
if early then return early end
local payment = redis.call('HMGET', KEYS[9], 'merchant_id', 'state', 'amount', 'points',
  'refunded_amount', 'refunded_points', 'unit', 'member_id', 'account')
if payment[1] ~= ARGV[5] then return {'payment_not_found'} end
if not state_in(payment[2], ARGV[9]) then return {'invalid_state', payment[2]} end
local amount = parse_amount(ARGV[8])
if not amount then return {'invalid_amount'} end
local paid, paid_points = tonumber(payment[3]), tonumber(payment[4])
local refunded, refunded_points = tonumber(payment[5]), tonumber(payment[6])
if refunded + amount > paid then return {'refund_exceeds_payment', tostring(paid - refunded)} end

-- Points follow the amount pro rata, rounded down, and the last refund takes
-- the remainder, so the points refunded never exceed the points paid.
local points
if refunded + amount == paid then
  points = paid_points - refunded_points
else
  points = math.floor(paid_points * amount / paid)
end
local points_text = string.format('%d', points)
local unit, member_id = payment[7], payment[8]
if points > 0 then
  redis.call('HINCRBY', KEYS[6], 'available', points_text)
  journal_append(KEYS[7], KEYS[8], 'refund:' .. ARGV[7], 'refund', {
    posting(payment[9], unit, '-', points_text),
    posting('member:' .. member_id, unit, '', points_text),
  }, cjson.encode({payment_id = ARGV[6], refund_id = ARGV[7], merchant_id = ARGV[5], amount = ARGV[8]}), ARGV[4])
end
local state = 'partially_refunded'
if refunded + amount == paid then state = 'refunded' end
local balance_after = redis.call('HGET', KEYS[6], 'available')
redis.call('HSET', KEYS[9], 'state', state,
  'refunded_amount', string.format('%d', refunded + amount),
  'refunded_points', string.format('%d', refunded_points + points), 'balance_after', balance_after)
local refund = cjson.encode({refund_id = ARGV[7], payment_id = ARGV[6], amount = ARGV[8],
  points = points_text, reason = ARGV[10], created_ms = ARGV[4], balance_after = balance_after})
redis.call('RPUSH', KEYS[10], refund)
batch_record(KEYS[4], KEYS[5], 'refund', ARGV[6], ARGV[8])
local response = cjson.encode({refund = refund, payment = hash_json(KEYS[9])})
finish_request(KEYS[3], ARGV[2], response, ARGV[3], ARGV[4])
return {'done', response}
