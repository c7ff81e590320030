-- A partner member's cancel or refund on a cluster, step one (merchant scope):
-- adjustment_steps().claim of lib_pay.lua. Nothing moves here.
-- KEYS[1..5] the merchant scope of outbound_adjust.lua  ARGV outbound_adjust.lua's
-- Returns {'claimed', refund id}, or outbound_adjust.lua's other replies.
local adjustment = adjustment_steps()
local early, refund_id = adjustment.claim(adjustment.merchant_keys(), ARGV[11])
if early then return early end
return {'claimed', refund_id}
