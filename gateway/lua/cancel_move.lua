-- A cancel on a cluster, step two (member scope): adjustment_steps().cancel_move
-- of lib_pay.lua.
-- Gives the points back at most once per payment and once per request
-- (payment_give_back() and wallet_entry(), in lib_pay.lua).
-- KEYS[1..] the member scope of cancel.lua (its KEYS[6..])  ARGV cancel.lua's
-- Returns {'moved', payment JSON, amount for the batch} or {error code, detail}.
local adjustment = adjustment_steps()
return adjustment.cancel_move(adjustment.cancel_member_keys(1))
