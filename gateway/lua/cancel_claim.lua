-- A cancel on a cluster, step one (merchant scope): adjustment_steps().claim
-- of lib_pay.lua.
-- Nothing moves here; the claim is what a retry or a duplicate continues.
-- KEYS[1..5] the merchant scope of cancel.lua  ARGV cancel.lua's
-- Returns {'claimed'}, or cancel.lua's other replies.
local adjustment = adjustment_steps()
local early = adjustment.claim(adjustment.merchant_keys(), '')
if early then return early end
return {'claimed'}
