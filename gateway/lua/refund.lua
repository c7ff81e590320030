-- Refund part or all of a payment, on one Redis: the three adjustment steps of
-- lib_pay.lua in one script. On a cluster the store runs refund_claim,
-- refund_move and refund_finish instead, with the same KEYS and ARGV. The
-- member's share of what they paid goes back to them (into the lots it came
-- from), each coupon's share of its discount back to its funder, the sum off
-- the merchant's payable (payment_give_back() and wallet_entry(), in
-- adjustment_steps().refund_move of lib_pay.lua). The full refund restores the coupons. Many
-- refunds per payment, each idempotent. Shares follow the refunded amount pro
-- rata, rounded down, and the last refund takes the remainder, so nothing
-- given back exceeds what was paid.
-- Guarantees: refunds of a payment never add up to more than it paid; only
-- its own merchant refunds it; a refund's id is chosen by its claim, so its
-- retries refund it once; balance, coupons, payment, refund list, journal,
-- the member's event and the refund's mark in the payment's adjustments change
-- together, then the batch and the stored response. A refusal stores nothing
-- but the claim: the same request sent again is judged again.
-- Merchant scope: KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key
--   KEYS[4] terminal batch  KEYS[5] terminal batch log
-- Member scope: KEYS[6..12] the member's wallet (keyspace.wallet_keys)  KEYS[13] payment
--   KEYS[14] payment's refund list  KEYS[15] the payment's adjustments
--   KEYS[16..] the payment's coupons, in the order of its `coupons`
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] merchant id  ARGV[6] payment id  ARGV[7] refund id (a new claim's)  ARGV[8] amount
-- ARGV[9] states a refund is allowed from  ARGV[10] reason  ARGV[11] the refund's name (its idempotency key)
-- Returns {'done', {refund, payment} JSON}, {'replay', the same} or {error code, detail}.
local adjustment = adjustment_steps()
local early, refund_id = adjustment.claim(adjustment.merchant_keys(), ARGV[7])
if early then return early end
local moved = adjustment.refund_move(adjustment.refund_member_keys(6), refund_id)
if moved[1] ~= 'moved' then return moved end
return adjustment.finish(adjustment.merchant_keys(), 'refund', moved[2], moved[3])
