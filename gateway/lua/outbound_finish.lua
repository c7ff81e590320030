-- A terminal's sale with a partner network's code, phase two, on one Redis:
-- the partner's answer (or our reversal at the partner) decides the pending
-- payment (outbound_sale_steps().decide and .finish of lib_pay.lua in one
-- script). On a cluster the store runs outbound_finish_payment.lua and
-- outbound_finish_request.lua instead, with the same KEYS and ARGV.
-- Guarantees: a pending payment is decided once; an approval credits the
-- merchant's payable against the partner's clearing account in one journal
-- entry (journal_append(), in outbound_sale_steps().decide); the
-- batch counts it once; the stored response is what every retry of the
-- terminal gets.
-- Merchant scope: KEYS[1] idempotency key  KEYS[2] order reference  KEYS[3] terminal batch
--   KEYS[4] terminal batch log
-- Member scope (the payment's partition): KEYS[5] payment  KEYS[6] journal  KEYS[7] entry index
-- ARGV[1] 'approved' or 'declined'  ARGV[2] decline code  ARGV[3] approval code
-- ARGV[4] partner's payment id  ARGV[5] partner's points debited  ARGV[6] partner's FX rate
-- ARGV[7] now ms  ARGV[8] idempotency ttl s  ARGV[9] partner's FX quote id
-- ARGV[10] the partner's coupon discount (for the receipt; the partner funds it)  ARGV[11] its coupons JSON
-- Returns {'done', payment JSON} (also when an earlier call decided it).
local outbound = outbound_sale_steps()
local moved = outbound.decide(outbound.finish_member_keys(5))
if moved[1] ~= 'moved' then return moved end
return outbound.finish(outbound.finish_merchant_keys(), moved[2], moved[3], moved[4], moved[5], moved[6])
