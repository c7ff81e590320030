-- A terminal's sale with a partner network's code, phase one, on one Redis:
-- claim the request and place the payment pending before the partner is
-- asked (outbound_sale_steps().claim and .place of lib_pay.lua in one
-- script). On a cluster the store runs outbound_claim_request.lua and
-- outbound_claim_payment.lua instead, with the same KEYS and ARGV.
-- Guarantees: one pending payment per idempotency key (a retry finds it and
-- resumes it; one that brought another payment id is told to 'resume' with the
-- claim's); an order reference with a live sale cannot start another; a
-- reversal recorded for the order, or for this payment id before its record
-- was placed, makes it decline; nothing moves here.
-- Merchant scope: KEYS[1] nonce  KEYS[2] signing key  KEYS[3] idempotency key  KEYS[4] order reference
-- Member scope (the payment's partition): KEYS[5] payment  KEYS[6] the payment's reversal marker
-- ARGV[1] nonce ttl s  ARGV[2] request hash  ARGV[3] idempotency ttl s  ARGV[4] now ms
-- ARGV[5] payment id  ARGV[6] merchant id  ARGV[7] store id  ARGV[8] terminal id  ARGV[9] order ref
-- ARGV[10] amount  ARGV[11] currency  ARGV[12] business day  ARGV[13] partner account  ARGV[14] unit
-- ARGV[15] slot  ARGV[16] lease ms: how long the claiming request may take before a retry resumes it
-- Returns {'claimed', payment id}, {'claimed_reversed', payment id} (decline it: the order was
-- reversed), {'pending', payment id} (a retry: resume it), {'decided', payment id} (a retry of
-- a request lost after the partner's answer was recorded: only finish it), {'resume', payment
-- id} (an earlier attempt claimed this request under that id: send it again with it),
-- {'replay', response JSON}, or {error code}.
local outbound = outbound_sale_steps()
local early, order_reversed = outbound.claim(outbound.claim_merchant_keys())
if early then return early end
return outbound.place(outbound.claim_member_keys(5), order_reversed)
