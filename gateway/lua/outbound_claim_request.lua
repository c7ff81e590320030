-- A partner member's sale on a cluster, step one (merchant scope):
-- outbound_sale_steps().claim of lib_pay.lua. Nothing moves here.
-- KEYS[1..4] the merchant scope of outbound_claim.lua  ARGV outbound_claim.lua's
-- Returns {'claimed', 'reversed' or ''}, or outbound_claim.lua's other replies.
local outbound = outbound_sale_steps()
local early, order_reversed = outbound.claim(outbound.claim_merchant_keys())
if early then return early end
return {'claimed', order_reversed}
