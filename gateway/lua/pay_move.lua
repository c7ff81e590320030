-- A sale on a cluster, step two (member scope): pay_move of lib_pay.lua.
-- Moves the points at most once per payment id, and appends the payment's
-- journal entry and the member's event (wallet_entry(), in lib_pay.lua).
-- KEYS[1..] the member scope of pay.lua (its KEYS[9..])
-- ARGV[1..30] pay.lua's  ARGV[31] the claim's decline
-- Returns {'moved', payment JSON, 'approved' or 'declined', decline code} or {error code}.
return pay_move(pay_member_keys(1), ARGV[PAY_ARGS + 1])
