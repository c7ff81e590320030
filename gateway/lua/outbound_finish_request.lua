-- A partner member's sale on a cluster, step four (merchant scope):
-- outbound_sale_steps().finish of lib_pay.lua: order reference, batch and
-- stored response, once.
-- KEYS[1..4] the merchant scope of outbound_finish.lua
-- ARGV[1..11] outbound_finish.lua's  ARGV[12..16] the move's reply: payment JSON, 'approved' or
-- 'declined', payment id, amount, '1' if it decided the payment
-- Returns {'done', payment JSON}.
local outbound = outbound_sale_steps()
return outbound.finish(outbound.finish_merchant_keys(), ARGV[OUTBOUND_FINISH_ARGS + 1],
  ARGV[OUTBOUND_FINISH_ARGS + 2], ARGV[OUTBOUND_FINISH_ARGS + 3], ARGV[OUTBOUND_FINISH_ARGS + 4],
  ARGV[OUTBOUND_FINISH_ARGS + 5])
