-- A refund on a cluster, step two (member scope): adjustment_steps().refund_move
-- of lib_pay.lua.
-- Gives back at most what the payment still holds, once per request
-- (payment_give_back() and wallet_entry(), in lib_pay.lua).
-- KEYS[1..] the member scope of refund.lua (its KEYS[6..])
-- ARGV[1..11] refund.lua's  ARGV[12] the claim's refund id
-- Returns {'moved', {refund, payment} JSON, amount for the batch} or {error code, detail}.
local adjustment = adjustment_steps()
return adjustment.refund_move(adjustment.refund_member_keys(1), ARGV[REFUND_ARGS + 1])
