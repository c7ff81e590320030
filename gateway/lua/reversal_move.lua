-- A reversal on a cluster, step two (member scope; skipped when the order
-- has no payment id): reversal_move of lib_pay.lua. Points go back at most
-- once per payment (wallet_give_back() and journal_append(), in lib_pay.lua).
-- KEYS[1..] the member scope of reversal.lua (its KEYS[7..])  ARGV reversal.lua's
-- Returns {'moved', outcome, payment JSON ('' if none), points for the batch} or {'retry'}.
return reversal_move(reversal_member_keys(1))
