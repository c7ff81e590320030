-- A partner member's cancel or refund on a cluster, step three (merchant scope):
-- adjustment_steps().finish of lib_pay.lua.
-- KEYS[1..5] the merchant scope of outbound_adjust.lua
-- ARGV[1..14] outbound_adjust.lua's  ARGV[15] response JSON  ARGV[16] amount for the batch (the move's reply)
-- Returns {'done', JSON} or {'replay', JSON}.
local adjustment = adjustment_steps()
return adjustment.finish(adjustment.merchant_keys(), ARGV[7] == 'cancel' and 'void' or 'refund',
  ARGV[OUTBOUND_ADJUST_ARGS + 1], ARGV[OUTBOUND_ADJUST_ARGS + 2])
