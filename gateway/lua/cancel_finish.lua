-- A cancel on a cluster, step three (merchant scope): adjustment_steps().finish
-- of lib_pay.lua.
-- KEYS[1..5] the merchant scope of cancel.lua
-- ARGV[1..9] cancel.lua's  ARGV[10] payment JSON  ARGV[11] amount for the batch (the move's reply)
-- Returns {'done', payment JSON} or {'replay', payment JSON}.
local adjustment = adjustment_steps()
return adjustment.finish(adjustment.merchant_keys(), 'void', ARGV[CANCEL_ARGS + 1], ARGV[CANCEL_ARGS + 2])
