-- A reversal on a cluster, step one (merchant scope): reversal_claim of lib_pay.lua.
-- KEYS[1..6] the merchant scope of reversal.lua  ARGV reversal.lua's
-- Returns {'claimed'}, or reversal.lua's other replies.
local early = reversal_claim(reversal_merchant_keys())
if early then return early end
return {'claimed'}
