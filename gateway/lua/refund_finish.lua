-- A refund on a cluster, step three (merchant scope): adjustment_steps().finish
-- of lib_pay.lua.
-- KEYS[1..5] the merchant scope of refund.lua
-- ARGV[1..11] refund.lua's  ARGV[12] {refund, payment} JSON  ARGV[13] amount for the batch (the move's reply)
-- Returns {'done', {refund, payment} JSON} or {'replay', the same}.
local adjustment = adjustment_steps()
return adjustment.finish(adjustment.merchant_keys(), 'refund', ARGV[REFUND_ARGS + 1], ARGV[REFUND_ARGS + 2])
