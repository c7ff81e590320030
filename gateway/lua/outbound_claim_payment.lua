-- A partner member's sale on a cluster, step two (member scope):
-- outbound_sale_steps().place of lib_pay.lua: the pending payment record, once.
-- KEYS[1..2] the member scope of outbound_claim.lua (its KEYS[5..6])
-- ARGV[1..16] outbound_claim.lua's  ARGV[17] 'reversed' if step one found the order reversed, else ''
-- Returns outbound_claim.lua's 'claimed', 'claimed_reversed', 'pending' or 'decided' reply.
local outbound = outbound_sale_steps()
return outbound.place(outbound.claim_member_keys(1), ARGV[OUTBOUND_CLAIM_ARGS + 1])
