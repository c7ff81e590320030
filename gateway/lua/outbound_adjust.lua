-- Cancel or refund a payment made by a partner network's member, after the
-- partner has given its member the points back, on one Redis: the three
-- adjustment steps of lib_pay.lua in one script. On a cluster the store runs
-- outbound_adjust_claim, outbound_adjust_move and outbound_adjust_finish
-- instead, with the same KEYS and ARGV. Our side moves the amount off the
-- merchant's payable and back onto the partner's clearing account
-- (journal_append(), in adjustment_steps().outbound_move of lib_pay.lua).
-- Guarantees: once per idempotency key; never more than was paid; only the
-- payment's own merchant; a cancel only on the payment's business day. A
-- refusal stores nothing but the claim.
-- Merchant scope: KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key  KEYS[4] terminal batch
--   KEYS[5] terminal batch log
-- Member scope (the payment's partition): KEYS[6] payment  KEYS[7] journal  KEYS[8] entry index
--   KEYS[9] payment's refund list  KEYS[10] the payment's adjustments
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] merchant id  ARGV[6] payment id  ARGV[7] 'cancel' or 'refund'  ARGV[8] amount (refund)
-- ARGV[9] allowed states  ARGV[10] business day now  ARGV[11] refund id (a new claim's)  ARGV[12] reason
-- ARGV[13] partner's points returned to its member  ARGV[14] the request's name (its idempotency key)
-- Returns {'done', JSON}, {'replay', JSON} or {error code, detail}.
local adjustment = adjustment_steps()
local early, refund_id = adjustment.claim(adjustment.merchant_keys(), ARGV[11])
if early then return early end
local moved = adjustment.outbound_move(adjustment.outbound_member_keys(6), refund_id)
if moved[1] ~= 'moved' then return moved end
return adjustment.finish(adjustment.merchant_keys(), ARGV[7] == 'cancel' and 'void' or 'refund', moved[2], moved[3])
