-- Refund part or all of a payment: the member's share of what they paid goes
-- back to them (into the lots it came from), each coupon's share of its
-- discount back to its funder, the sum off the merchant's payable. The full
-- refund restores the coupons. Many refunds per payment, each idempotent.
-- Shares follow the refunded amount pro rata, rounded down, and the last
-- refund takes the remainder, so nothing given back exceeds what was paid.
-- Guarantees: refunds of a payment never add up to more than it paid; only
-- its own merchant refunds it; balance, coupons, payment, refund list, batch,
-- journal and the member's event change together.
-- Merchant scope: KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key
--   KEYS[4] terminal batch  KEYS[5] terminal batch log
-- Member scope: KEYS[6..12] the member's wallet (keyspace.wallet_keys)  KEYS[13] payment
--   KEYS[14] payment's refund list  KEYS[15..] the payment's coupons, in the order of its `coupons`
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] merchant id  ARGV[6] payment id  ARGV[7] refund id  ARGV[8] amount
-- ARGV[9] states a refund is allowed from  ARGV[10] reason
-- Returns {'done', refund JSON}, {'replay', refund JSON} or {error code, detail}.
local early = claim_request(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
if early then return early end
local w = wallet_keys(6)
local payment = redis.call('HMGET', KEYS[13], 'merchant_id', 'state', 'amount', 'refunded_amount',
  'refunded_points', 'refunded_discount_points', 'member_id', 'store_id', 'currency')
if payment[1] ~= ARGV[5] then return {'payment_not_found'} end
if not state_in(payment[2], ARGV[9]) then return {'invalid_state', payment[2]} end
local amount = parse_amount(ARGV[8])
if not amount then return {'invalid_amount'} end
local paid, refunded = tonumber(payment[3]), tonumber(payment[4])
if refunded + amount > paid then return {'refund_exceeds_payment', int_text(paid - refunded)} end

local member_id = payment[7]
local last = refunded + amount == paid
local postings, points, discount_points = payment_give_back(w, KEYS[13], 15, amount, paid, last)
local points_text = int_text(points)
if #postings > 0 then
  wallet_entry(w, member_id, 'refund:' .. ARGV[7], 'refund', postings,
    payment_meta(KEYS[13], ARGV[8], {refund_id = ARGV[7]}), ARGV[4],
    points, 0, {payment_id = ARGV[6], refund_id = ARGV[7], merchant_id = ARGV[5], store_id = payment[8],
      amount = ARGV[8], currency = payment[9], discount_points = int_text(discount_points)})
end
lots_expire(w, member_id, ARGV[4])
local state = 'partially_refunded'
if last then state = 'refunded' end
local balance_after = redis.call('HGET', w.member, 'available')
redis.call('HSET', KEYS[13], 'state', state,
  'refunded_amount', int_text(refunded + amount),
  'refunded_points', int_text(tonumber(payment[5]) + points),
  'refunded_discount_points', int_text(tonumber(payment[6] or '0') + discount_points),
  'balance_after', balance_after)
local refund = cjson.encode({refund_id = ARGV[7], payment_id = ARGV[6], amount = ARGV[8],
  points = points_text, discount_points = int_text(discount_points), reason = ARGV[10],
  created_ms = ARGV[4], balance_after = balance_after})
redis.call('RPUSH', KEYS[14], refund)
batch_record(KEYS[4], KEYS[5], 'refund', ARGV[6], ARGV[8])
local response = cjson.encode({refund = refund, payment = hash_json(KEYS[13])})
finish_request(KEYS[3], ARGV[2], response, ARGV[3], ARGV[4])
return {'done', response}
