-- A sale on a cluster, step three (merchant scope): pay_finish of lib_pay.lua.
-- KEYS[1..8] the merchant scope of pay.lua
-- ARGV[1..30] pay.lua's  ARGV[31] payment JSON  ARGV[32] 'approved' or 'declined'
-- ARGV[33] decline code (the move's reply)
-- Returns {'done', response JSON} or {'replay', response JSON}.
return pay_finish(pay_merchant_keys(), ARGV[PAY_ARGS + 1], ARGV[PAY_ARGS + 2], ARGV[PAY_ARGS + 3])
