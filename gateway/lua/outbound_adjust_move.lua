-- A partner member's cancel or refund on a cluster, step two (member scope):
-- adjustment_steps().outbound_move of lib_pay.lua, once per request (journal_append(), in lib_pay.lua).
-- KEYS[1..5] the member scope of outbound_adjust.lua (its KEYS[6..10])
-- ARGV[1..14] outbound_adjust.lua's  ARGV[15] the claim's refund id
-- Returns {'moved', response JSON, amount for the batch} or {error code, detail}.
local adjustment = adjustment_steps()
return adjustment.outbound_move(adjustment.outbound_member_keys(1), ARGV[OUTBOUND_ADJUST_ARGS + 1])
