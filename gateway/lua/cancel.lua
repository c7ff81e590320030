-- Cancel (void) an approved payment on its business day, on one Redis: the
-- three adjustment steps of lib_pay.lua in one script. On a cluster the store
-- runs cancel_claim, cancel_move and cancel_finish instead, with the same KEYS
-- and ARGV. Its points go back to the member (into the lots they came from),
-- its coupons are restored with their discounts back to their funders, and all
-- of it comes off the merchant's payable (payment_give_back() and
-- wallet_entry(), in adjustment_steps().cancel_move of lib_pay.lua).
-- Guarantees: a payment is cancelled at most once, only by its own merchant,
-- only from the states the payment table allows, only on the same business
-- day; balance, coupons, payment state, journal, the member's event and the
-- cancel's mark in the payment's adjustments change together, then the batch
-- and the stored response. A refusal stores nothing but the claim: the same
-- request sent again is judged again.
-- Merchant scope: KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key
--   KEYS[4] terminal batch  KEYS[5] terminal batch log
-- Member scope: KEYS[6..12] the member's wallet (keyspace.wallet_keys)  KEYS[13] payment
--   KEYS[14] the payment's adjustments  KEYS[15..] the payment's coupons, in the order of its `coupons`
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] merchant id  ARGV[6] payment id  ARGV[7] business day now
-- ARGV[8] states a cancel is allowed from (space separated)
-- ARGV[9] the cancel's name (its idempotency key)
-- Returns {'done', payment JSON}, {'replay', payment JSON} or {error code, detail}.
local adjustment = adjustment_steps()
local early = adjustment.claim(adjustment.merchant_keys(), '')
if early then return early end
local moved = adjustment.cancel_move(adjustment.cancel_member_keys(6))
if moved[1] ~= 'moved' then return moved end
return adjustment.finish(adjustment.merchant_keys(), 'void', moved[2], moved[3])
