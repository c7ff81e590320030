-- A partner member's sale on a cluster, step three (member scope):
-- outbound_sale_steps().decide of lib_pay.lua: decides the pending payment
-- once (journal_append(), in lib_pay.lua).
-- KEYS[1..3] the member scope of outbound_finish.lua (its KEYS[5..7])  ARGV outbound_finish.lua's
-- Returns {'moved', payment JSON, 'approved' or 'declined', payment id, amount, '1' if decided now}.
local outbound = outbound_sale_steps()
return outbound.decide(outbound.finish_member_keys(1))
