-- A refund on a cluster, step one (merchant scope): adjustment_steps().claim
-- of lib_pay.lua.
-- Nothing moves here; the claim holds the refund's id for its retries.
-- KEYS[1..5] the merchant scope of refund.lua  ARGV refund.lua's
-- Returns {'claimed', refund id}, or refund.lua's other replies.
local adjustment = adjustment_steps()
local early, refund_id = adjustment.claim(adjustment.merchant_keys(), ARGV[7])
if early then return early end
return {'claimed', refund_id}
