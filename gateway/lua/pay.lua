-- A sale on one Redis: the three steps of lib_pay.lua in one script, one
-- round trip (the hot path). On a cluster the store runs pay_claim,
-- pay_move and pay_finish instead, with the same KEYS and ARGV.
-- Guarantees: the points move at most once per idempotency key and per code;
-- a declined sale moves nothing and redeems no coupon; a reversal recorded
-- for the order reference before the sale arrives makes it decline ('reversal
-- wins'), and so does a reversal that found only the sale's claim; the
-- member's available balance never goes negative; expired points are never
-- spent; a coupon is redeemed at most once, only by its member, only inside
-- its terms, in the same step as the debit. The move appends the payment's
-- journal entry and the member's event (wallet_entry(), in pay_move of lib_pay.lua).
-- Merchant scope: KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key
--   KEYS[4] order reference  KEYS[5] terminal batch  KEYS[6] terminal batch log
--   KEYS[7] the terminal's invalid-code counter for the window  KEYS[8] the merchant's
-- Member scope: KEYS[9] device  KEYS[10] used codes  KEYS[11..17] the member's
--   wallet (keyspace.wallet_keys)  KEYS[18] payment  KEYS[19] the payment's reversal marker
--   KEYS[20..] coupons offered
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] OTP outcome  ARGV[6] code counter  ARGV[7] failures max  ARGV[8] oldest counter
-- ARGV[9] payment id  ARGV[10] member id ('' if unknown)  ARGV[11] amount
-- ARGV[12] currency  ARGV[13] points for the whole amount  ARGV[14] points unit
-- ARGV[15] merchant id  ARGV[16] store id  ARGV[17] terminal id  ARGV[18] order ref
-- ARGV[19] approval code  ARGV[20] business day  ARGV[21] member daily points max
-- ARGV[22] calendar day  ARGV[23] decline decided before storage ('' if none)  ARGV[24] slot
-- ARGV[25] account the points go to (merchant:<id>, or partner:<id> for a partner's merchant)
-- ARGV[26] FX quote id ('' for a home-currency sale)  ARGV[27] FX rate applied ('' likewise)
-- ARGV[28] the coupon codes of KEYS[20..], space separated
-- ARGV[29] invalid codes a terminal may send per minute  ARGV[30] the same for the whole merchant
-- Returns {'done', response JSON} or {'replay', response JSON}, {'resume', payment id}
-- (an earlier attempt claimed this request under that id: send it again with it), or {error code}.
local early, decline = pay_claim(pay_merchant_keys())
if early then return early end
local moved = pay_move(pay_member_keys(9), decline)
if moved[1] ~= 'moved' then return moved end
return pay_finish(pay_merchant_keys(), moved[2], moved[3], moved[4])
