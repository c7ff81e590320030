-- A sale on a cluster, step one (merchant scope): pay_claim of lib_pay.lua.
-- Nothing moves here; the claim is what a retry or a reversal finds.
-- KEYS[1..8] the merchant scope of pay.lua  ARGV pay.lua's
-- Returns {'claimed', decline ('' if none yet)}, or pay.lua's other replies.
local early, decline = pay_claim(pay_merchant_keys())
if early then return early end
return {'claimed', decline}
