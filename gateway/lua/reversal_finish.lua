-- A reversal on a cluster, step three (merchant scope): reversal_finish of lib_pay.lua.
-- KEYS[1..6] the merchant scope of reversal.lua
-- ARGV[1..12] reversal.lua's, then the move's reply when it ran: ARGV[13] outcome
-- ARGV[14] payment JSON ('' if none)  ARGV[15] points for the batch
-- Returns {'done', reversal JSON} or {'replay', reversal JSON}.
return reversal_finish(reversal_merchant_keys(), ARGV[REVERSAL_ARGS + 1] or 'recorded',
  ARGV[REVERSAL_ARGS + 2] or '', ARGV[REVERSAL_ARGS + 3] or '0')
