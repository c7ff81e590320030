-- Reverse by the terminal's own order reference, for a sale whose answer
-- never arrived, on one Redis: the three reversal steps of lib_pay.lua in
-- one script. On a cluster the store runs reversal_claim, reversal_move and
-- reversal_finish instead, with the same KEYS and ARGV.
-- Marks the order reference reversed, so a sale arriving later with it
-- declines ('reversal wins'); gives back whatever the payment still holds
-- (all of it, less any refunds) and restores its coupons; a sale that has
-- only its claim is marked in the member scope so it can never move.
-- Guarantees: the caller read the order's payment id before; if a sale
-- slipped in since, the script answers 'retry' and changes nothing. Points
-- go back at most once per payment (wallet_give_back() and journal_append(),
-- in reversal_move of lib_pay.lua).
-- Merchant scope: KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key
--   KEYS[4] order reference  KEYS[5] terminal batch  KEYS[6] terminal batch log
-- Member scope (only when the order has a payment id): KEYS[7..13] the member's wallet
--   (keyspace.wallet_keys)  KEYS[14] payment  KEYS[15] its reversal marker
--   KEYS[16..] the payment's coupons, in the order of its `coupons`
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] merchant id  ARGV[6] order ref  ARGV[7] payment id read before ('' if none)
-- ARGV[8] states a reversal gives points back from  ARGV[9] store id  ARGV[10] terminal id
-- ARGV[11] the reversal's name (its idempotency key)  ARGV[12] '1' if the caller read a payment record
-- Returns {'done', reversal JSON}, {'replay', reversal JSON}, {'retry'} or {error code}.
local early = reversal_claim(reversal_merchant_keys())
if early then return early end
local outcome, payment_json, batch_amount = 'recorded', '', '0'
if ARGV[7] ~= '' then
  local moved = reversal_move(reversal_member_keys(7))
  if moved[1] ~= 'moved' then return moved end
  outcome, payment_json, batch_amount = moved[2], moved[3], moved[4]
end
return reversal_finish(reversal_merchant_keys(), outcome, payment_json, batch_amount)
