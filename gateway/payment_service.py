"""The merchant payment operations: sale, lookups, cancel, refund, reversal, batch close.

Each operation prepares everything in Python (code format, OTP match,
limits, ids) and then asks the store to run one Lua script that checks and
writes atomically (`gateway/lua/pay.lua` and friends); on a cluster the store
runs each payment verb as its claim, move and finish steps, which this
module does not see. A sale (ours or a partner member's) whose request an
earlier attempt claimed under another payment id answers 'resume' and is sent
again with that id. Responses are rendered from
what the script stored, so a retry with the same idempotency key gets the
same bytes. Errors are raised as `Problem`; declines are payments.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import msgspec

from gateway import codes, fx, keyspace, payments
from gateway.clock import wall_ms
from gateway.payments import Event, State
from gateway.partners import PartnerClient, PartnerError, PartnerRefused
from gateway.problems import Problem
from gateway.settings import Settings
from gateway.signing import NONCE_TTL_S
from gateway.store import Store
from gateway.tokens import Outcome, TokenService

RATES_CACHE_S = 5.0  # a new rate table reaches every process within 5 s
INTEROP_STORE = "interop"
"""Store and terminal id of payments a partner network sends: its own merchants are its business."""
IDEMPOTENCY_TTL_S = 72 * 3600  # keys are kept at least 48 h (the API promise), plus a day of margin
REVERSAL_RETRIES_MAX = 3  # a sale racing the reversal makes it read the order again, at most this often
APPROVAL_CODE_DIGITS = 6
PAY_PAYMENT_KEY = 17
"""Index in pay.lua's KEYS of the payment's key, followed by its reversal marker's (KEYS[18], KEYS[19])."""
PAY_PAYMENT_ID_ARG = 8
"""Index in pay.lua's ARGV of the payment id (ARGV[9])."""
OUTBOUND_PAYMENT_KEY = 4
"""Index in outbound_claim.lua's KEYS of the payment's key, followed by its reversal marker's (KEYS[5], KEYS[6])."""
OUTBOUND_PAYMENT_ID_ARG = 4
"""Index in outbound_claim.lua's ARGV of the payment id (ARGV[5])."""

_SCRIPT_PROBLEMS = {
    "unknown_key", "nonce_replayed", "idempotency_mismatch", "idempotency_in_progress",
    "order_ref_in_use", "payment_not_found", "invalid_state", "cancel_window_closed", "refund_exceeds_payment",
}


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated merchant request: who signed it and with which nonce."""

    merchant_id: str
    key_id: str
    nonce: str
    currency: str
    time_zone: str
    business_day_cutoff: str


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    replayed: bool = False
    outcome: str = ""  # approved, or the decline code (for metrics and the access log)


def _no_member_id(partition: int) -> str:
    """A member id of the right partition for a script that will not touch its wallet.

    Scripts declare every key they may touch (Redis Cluster routes on them);
    a sale declined before any member was known, or a reversal of such a
    sale, still passes the wallet keys of the member's partition so the key
    list keeps its shape.
    """
    return keyspace.new_member_id(partition, "0" * 12)


class PaymentService:
    def __init__(
        self, store: Store, tokens: TokenService, settings: Settings,
        now_ms: Callable[[], int] = wall_ms, token_hex: Callable[[int], str] = secrets.token_hex,
        randbelow: Callable[[int], int] = secrets.randbelow,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.settings = settings
        self.home = settings.home_network
        self.configured_rates = fx.RateTable.from_toml(settings.fx or {})
        self._rates: tuple[fx.RateTable, float] | None = None
        self.partners: dict[str, PartnerClient] = {}
        """Outbound clients by partner network id, set up by the app with the keys partners issued us."""
        self.now_ms = now_ms
        self._token_hex = token_hex
        self._randbelow = randbelow

    def _claim_keys(self, caller: Caller, idempotency_key: str) -> list[str]:
        return [
            keyspace.nonce_key(caller.merchant_id, caller.nonce),
            keyspace.signing_key_key(caller.merchant_id, caller.key_id),
            keyspace.idempotency_key(caller.merchant_id, idempotency_key),
        ]

    def _batch_keys(self, caller: Caller, store_id: str, terminal_id: str) -> list[str]:
        return [
            keyspace.batch_key(caller.merchant_id, store_id, terminal_id),
            keyspace.batch_log_key(caller.merchant_id, store_id, terminal_id),
        ]

    # -- sale ------------------------------------------------------------------

    async def sale(self, caller: Caller, sale: payments.SaleRequest, idempotency_key: str, request_hash: str) -> Answer:
        """A terminal's sale in the home currency: 1 point per minor unit; a partner
        network's code goes to that partner."""
        checked = self.tokens.check_format(sale.code)
        if checked is Outcome.UNSUPPORTED_ISSUER:
            network = self.settings.network_by_prefix(sale.code[:4])
            if network is not None and network.id in self.partners:
                return await self.outbound_sale(caller, sale, idempotency_key, request_hash, self.partners[network.id])
        if sale.currency != caller.currency:
            raise Problem("currency_mismatch", f"this store takes {caller.currency}, not {sale.currency}")
        if sale.currency != self.home.currency:
            raise Problem("currency_not_supported", f"point payments in {sale.currency} need an exchange rate, not available yet")
        if sale.amount > self.settings.amount_max_krw:
            raise Problem("amount_above_maximum", f"the maximum for one payment is {self.settings.amount_max_krw:,} {sale.currency}")
        return await self._authorise(
            caller, sale.code, sale.amount, sale.currency, sale.amount, sale.order_ref, sale.store_id, sale.terminal_id,
            "", f"merchant:{caller.merchant_id}", None, idempotency_key, request_hash, checked=checked,
            coupon_codes=sale.coupon_codes)

    async def interop_sale(self, caller: Caller, sale: payments.InteropSaleRequest, idempotency_key: str,
                           request_hash: str) -> Answer:
        """A partner network's merchant takes our member's code: the amount in the partner's
        currency becomes points at a quote locked for this payment."""
        if sale.currency != caller.currency:
            raise Problem("currency_mismatch", f"{caller.merchant_id} settles in {caller.currency}, not {sale.currency}")
        now_ms = self.now_ms()
        try:
            quote = fx.quote(await self.rates(), sale.currency, self.home.currency, "q_" + self._token_hex(8), now_ms)
        except fx.FxError as e:
            raise Problem("currency_not_supported", e.message) from None
        try:
            points = fx.points_for_payment(sale.amount, sale.currency, quote)
        except fx.FxError:
            points = self.settings.amount_max_krw + 1  # beyond any limit: refused just below
        if points > self.settings.amount_max_krw:
            raise Problem("amount_above_maximum", f"the maximum for one payment is {self.settings.amount_max_krw:,} points")
        return await self._authorise(
            caller, sale.code, sale.amount, sale.currency, points, sale.partner_ref, INTEROP_STORE, INTEROP_STORE, "",
            f"partner:{caller.merchant_id}", quote, idempotency_key, request_hash, now_ms, coupon_codes=sale.coupon_codes)

    async def rates(self) -> fx.RateTable:
        """The operator's current rates (`gateway fx set`), re-read at most every RATES_CACHE_S;
        fx.toml's until an operator sets any. A quote keeps the rate it was made with."""
        now = time.monotonic()
        if self._rates is not None and now - self._rates[1] < RATES_CACHE_S:
            return self._rates[0]
        text = await self.store.redis.get(keyspace.FX_TABLE_KEY)
        table = self.configured_rates if text is None else fx.RateTable.from_toml(json.loads(text))
        self._rates = (table, now)
        return table

    async def _authorise(self, caller: Caller, code_text: str, amount: int, currency: str, points: int, order_ref: str,
                         store_id: str, terminal_id: str, decline: str, account: str, quote: "fx.Quote | None",
                         idempotency_key: str, request_hash: str, now_ms: int | None = None,
                         checked: "codes.PaymentCode | Outcome | None" = None,
                         coupon_codes: Sequence[str] = ()) -> Answer:
        """Verify the code, apply the coupons and debit `points` (less the discount) to `account`,
        in one script call."""
        if not all(payments.COUPON_CODE_RE.match(c) for c in coupon_codes) or len(set(coupon_codes)) < len(coupon_codes):
            decline, coupon_codes = decline or "invalid_coupon", ()
        now_ms = self.now_ms() if now_ms is None else now_ms
        member_id = ""
        slot = 0
        verify_args: list[Any] = ["wrong_otp", 0, self.settings.slot_failures_max, 0]
        code = self.tokens.check_format(code_text) if checked is None else checked
        if isinstance(code, Outcome):
            decline = payments.decline_for(code)
        else:
            slot = code.slot
            device = await self.tokens.device(code.slot)
            if device is None:
                decline = payments.decline_for(Outcome.UNKNOWN_SLOT)
            else:
                member_id = device[1]
                verify_args = self.tokens.verify_args(code, device[0], now_ms // 1000)
        partition = keyspace.partition_of_member(member_id) if member_id else codes.partition_of_slot(slot)
        payment_id = keyspace.new_payment_id(partition, self._token_hex(8))
        approval_code = f"{self._randbelow(10**APPROVAL_CODE_DIGITS):0{APPROVAL_CODE_DIGITS}d}"
        keys = self._claim_keys(caller, idempotency_key) + [
            keyspace.order_key(caller.merchant_id, order_ref),
            *self._batch_keys(caller, store_id, terminal_id),
            *keyspace.guess_counter_keys(caller.merchant_id, store_id, terminal_id, now_ms // 60_000),
            # The member scope from here (pay.lua's header; on a cluster its own step).
            keyspace.device_key(slot), keyspace.used_codes_key(slot),
            *keyspace.wallet_keys(member_id or _no_member_id(partition)),
            keyspace.payment_key(payment_id), keyspace.reversal_marker_key(payment_id),
            *(keyspace.coupon_key(partition, code) for code in coupon_codes),
        ]
        args = [
            NONCE_TTL_S, request_hash, IDEMPOTENCY_TTL_S, now_ms,
            *verify_args,
            payment_id, member_id, amount, currency, points, self.home.points_unit,
            caller.merchant_id, store_id, terminal_id, order_ref, approval_code,
            payments.business_day(now_ms, caller.time_zone, caller.business_day_cutoff),
            self.settings.member_daily_points_max, payments.business_day(now_ms, self.settings.member_day_time_zone, "00:00"),
            decline, slot, account, quote.quote_id if quote else "", str(quote.rate) if quote else "",
            " ".join(coupon_codes),
            self.settings.terminal_invalid_codes_per_min, self.settings.merchant_invalid_codes_per_min,
        ]
        reply = await self._run_resumed("pay", keys, args, PAY_PAYMENT_KEY, PAY_PAYMENT_ID_ARG, partition)
        record = self._record(reply)
        view = payments.payment_view(record)
        outcome = view["status"] if view["decline"] is None else view["decline"]["code"]
        return Answer(201, payments.dumps(view), reply[0] == "replay", outcome)

    async def _run_resumed(self, script: str, keys: list[str], args: list[Any], payment_key_at: int, payment_id_at: int,
                           partition: int) -> list[Any]:
        """Run a sale's script; when it answers 'resume', an earlier attempt of this request claimed it
        under its own payment id and did not finish (a failure between the steps): send it again with
        that id, whose payment key and reversal marker sit at `payment_key_at`, to complete that
        payment, never to start another."""
        reply = await self.store.run(script, keys, args)
        if reply[0] != "resume":
            return reply
        payment_id = reply[1]
        if keyspace.partition_of_payment(payment_id) != partition:
            raise RuntimeError(f"claimed payment {payment_id} is outside partition {partition}")
        keys[payment_key_at:payment_key_at + 2] = [keyspace.payment_key(payment_id), keyspace.reversal_marker_key(payment_id)]
        args[payment_id_at] = payment_id
        return await self.store.run(script, keys, args)

    # -- outbound: a partner network's member at our merchant ---------------------

    async def outbound_sale(self, caller: Caller, sale: payments.SaleRequest, idempotency_key: str,
                            request_hash: str, client: PartnerClient) -> Answer:
        """Place the payment pending, ask the partner, and decide it: approved or declined,
        with a status lookup and then a reversal at the partner when its answer is lost."""
        if sale.currency != caller.currency:
            raise Problem("currency_mismatch", f"this store takes {caller.currency}, not {sale.currency}")
        if sale.amount > self.settings.amount_max_krw:
            raise Problem("amount_above_maximum", f"the maximum for one payment is {self.settings.amount_max_krw:,} {sale.currency}")
        now_ms = self.now_ms()
        slot = int(sale.code[5:14])
        partition = codes.partition_of_slot(slot)
        payment_id = keyspace.new_payment_id(partition, self._token_hex(8))
        keys = self._claim_keys(caller, idempotency_key) + [
            keyspace.order_key(caller.merchant_id, sale.order_ref),
            # The member scope from here (outbound_claim.lua's header; on a cluster its own step).
            keyspace.payment_key(payment_id), keyspace.reversal_marker_key(payment_id),
        ]
        args = [NONCE_TTL_S, request_hash, IDEMPOTENCY_TTL_S, now_ms, payment_id, caller.merchant_id, sale.store_id,
                sale.terminal_id, sale.order_ref, sale.amount, sale.currency,
                payments.business_day(now_ms, caller.time_zone, caller.business_day_cutoff),
                f"partner:{client.partner.id}", self.home.points_unit, slot, _lease_ms(client)]
        reply = await self._run_resumed("outbound_claim", keys, args, OUTBOUND_PAYMENT_KEY, OUTBOUND_PAYMENT_ID_ARG, partition)
        if reply[0] == "replay":
            return self._answer(reply)
        if reply[0] not in ("claimed", "claimed_reversed", "pending", "decided"):
            self._record(reply)
        payment_id = reply[1]
        finish = self._outbound_finisher(caller, sale, idempotency_key, payment_id)
        if reply[0] == "claimed_reversed":
            return await finish("declined", "reversed")
        if reply[0] == "decided":
            # An earlier attempt recorded the partner's answer and was lost before it finished: finish
            # with what it recorded, never asking the partner again (a failed lookup would reverse an
            # approval our books keep). The payment is no longer pending, so this decision is not used.
            return await finish("declined", "partner_unavailable")
        fresh = reply[0] == "claimed"
        if fresh and not client.breaker.allows(client.now()):
            return await finish("declined", "partner_unavailable")  # never sent: nothing to undo
        if fresh and client.slots.locked():
            return await finish("declined", "partner_busy")
        async with client.slots:
            if fresh:
                try:
                    return await finish(*_partner_decision(await client.authorise(
                        payment_id, sale.code, sale.amount, sale.currency, caller.merchant_id, sale.coupon_codes)))
                except PartnerRefused:
                    return await finish("declined", "unsupported_issuer")
                except PartnerError:
                    pass  # unknown: ask, then reverse
            try:
                found = await client.find(payment_id)
                if found is not None and found["status"] in ("approved", "declined"):
                    return await finish(*_partner_decision(found))
            except PartnerError:
                pass
            try:
                await client.reverse(payment_id)
            except PartnerError:
                # The partner is unreachable: owe it the reversal (sent in the background) and
                # decline now; the partner's reversal-wins rule keeps both sides whole.
                await self.store.redis.sadd(keyspace.partner_reversals_key(client.partner.id), payment_id)
            return await finish("declined", "partner_unavailable")

    def _outbound_finisher(self, caller: Caller, sale: payments.SaleRequest, idempotency_key: str, payment_id: str):
        partition = keyspace.partition_of_payment(payment_id)
        keys = [keyspace.idempotency_key(caller.merchant_id, idempotency_key),
                keyspace.order_key(caller.merchant_id, sale.order_ref),
                *self._batch_keys(caller, sale.store_id, sale.terminal_id), keyspace.payment_key(payment_id),
                keyspace.journal_key(partition), keyspace.entry_index_key(partition)]

        async def finish(outcome: str, decline: str = "", partner: dict[str, Any] | None = None) -> Answer:
            fx_doc = (partner or {}).get("fx") or {}
            approval = f"{self._randbelow(10**APPROVAL_CODE_DIGITS):0{APPROVAL_CODE_DIGITS}d}"
            reply = await self.store.run("outbound_finish", keys, [
                outcome, decline, approval, (partner or {}).get("payment_id", ""), (partner or {}).get("points", 0),
                fx_doc.get("rate", ""), self.now_ms(), IDEMPOTENCY_TTL_S, fx_doc.get("quote_id", ""),
                int((partner or {}).get("discount") or 0), _partner_coupons(partner)])
            return self._answer(reply)

        return finish

    def _answer(self, reply: list[Any]) -> Answer:
        view = payments.payment_view(self._record(reply))
        outcome = view["status"] if view["decline"] is None else view["decline"]["code"]
        return Answer(201, payments.dumps(view), reply[0] == "replay", outcome)

    async def send_owed_reversals(self) -> int:
        """Send the reversals partners are owed (their answers were lost); returns how many landed."""
        sent = 0
        for partner_id, client in self.partners.items():
            for payment_id in await self.store.redis.smembers(keyspace.partner_reversals_key(partner_id)):
                try:
                    await client.reverse(payment_id)
                except PartnerError:
                    break  # still unreachable: try again next round
                await self.store.redis.srem(keyspace.partner_reversals_key(partner_id), payment_id)
                sent += 1
        return sent

    def _record(self, reply: list[Any]) -> dict[str, str]:
        status = reply[0]
        if status in ("done", "replay"):
            return msgspec.json.decode(reply[1])  # a third of json.loads' cost, on every payment answer
        if status in _SCRIPT_PROBLEMS:
            detail = {"invalid_state": f"the payment is {reply[1] if len(reply) > 1 else 'final'}",
                      "refund_exceeds_payment": f"at most {reply[1] if len(reply) > 1 else 0} can still be refunded",
                      "cancel_window_closed": f"the payment's business day was {reply[1] if len(reply) > 1 else ''}"}
            raise Problem(status, detail.get(status))
        raise RuntimeError(f"unexpected script reply {status!r}")

    # -- lookups ---------------------------------------------------------------

    async def get(self, caller: Caller, payment_id: str) -> Answer:
        record = await self._own_payment(caller, payment_id)
        view = payments.payment_view(record)
        refunds = await self.store.redis.lrange(keyspace.refunds_key(payment_id), 0, -1)
        view["refunds"] = [payments.refund_view(json.loads(r)) for r in refunds]
        return Answer(200, payments.dumps(view))

    async def find_by_order_ref(self, caller: Caller, order_ref: str) -> Answer:
        payment_id = await self.store.redis.hget(keyspace.order_key(caller.merchant_id, order_ref), "payment_id")
        if payment_id is None:
            raise Problem("payment_not_found", f"no payment has order reference {order_ref!r}")
        return await self.get(caller, payment_id)

    async def _own_payment(self, caller: Caller, payment_id: str) -> dict[str, str]:
        """The payment's record if it is this merchant's; another merchant's looks like none."""
        if not payments.PAYMENT_ID_RE.match(payment_id):
            raise Problem("payment_not_found", "payment ids look like pay_ followed by 19 characters")
        record = await self.store.redis.hgetall(keyspace.payment_key(payment_id))
        if not record or record["merchant_id"] != caller.merchant_id:
            raise Problem("payment_not_found")
        return record

    async def burn_nonce(self, caller: Caller) -> None:
        """Reads are signed too; their nonce is burned here (writes burn it in their script)."""
        # The key's status is read from storage, not the per-process cache, so a
        # revoked key reads nothing either, on every process at once.
        reply = await self.store.run("nonce_burn", [keyspace.signing_key_key(caller.merchant_id, caller.key_id),
                                                    keyspace.nonce_key(caller.merchant_id, caller.nonce)], [NONCE_TTL_S])
        if reply[0] != "ok":
            raise Problem(reply[0])  # unknown_key or nonce_replayed

    # -- cancel and refund -----------------------------------------------------

    async def cancel(self, caller: Caller, payment_id: str, body: payments.CancelRequest, idempotency_key: str, request_hash: str) -> Answer:
        record = await self._own_payment(caller, payment_id)
        if _is_outbound(record):
            return await self._outbound_adjust(caller, record, "cancel", 0, body.reason, body.store_id, body.terminal_id,
                                               idempotency_key, request_hash)
        partition = keyspace.partition_of_payment(payment_id)
        now_ms = self.now_ms()
        keys = self._claim_keys(caller, idempotency_key) + self._batch_keys(caller, body.store_id, body.terminal_id) + [
            # The member scope from here (cancel.lua's header; on a cluster its own step).
            *_wallet_keys(record, partition), keyspace.payment_key(payment_id), keyspace.adjustments_key(payment_id),
            *_coupon_keys(record, partition),
        ]
        args = [
            NONCE_TTL_S, request_hash, IDEMPOTENCY_TTL_S, now_ms, caller.merchant_id, payment_id,
            payments.business_day(now_ms, caller.time_zone, caller.business_day_cutoff),
            payments.allowed_from(Event.CANCEL), keyspace.idempotency_key(caller.merchant_id, idempotency_key),
        ]
        reply = await self._run_for_member(record, "cancel", keys, args)
        return Answer(200, payments.dumps(payments.payment_view(self._record(reply))), reply[0] == "replay", State.CANCELLED)

    async def refund(self, caller: Caller, payment_id: str, body: payments.RefundRequest, idempotency_key: str, request_hash: str) -> Answer:
        record = await self._own_payment(caller, payment_id)
        if _is_outbound(record):
            return await self._outbound_adjust(caller, record, "refund", body.amount, body.reason, body.store_id,
                                               body.terminal_id, idempotency_key, request_hash)
        partition = keyspace.partition_of_payment(payment_id)
        refund_id = "rf_" + self._token_hex(8)
        keys = self._claim_keys(caller, idempotency_key) + self._batch_keys(caller, body.store_id, body.terminal_id) + [
            # The member scope from here (refund.lua's header; on a cluster its own step).
            *_wallet_keys(record, partition), keyspace.payment_key(payment_id), keyspace.refunds_key(payment_id),
            keyspace.adjustments_key(payment_id), *_coupon_keys(record, partition),
        ]
        args = [
            NONCE_TTL_S, request_hash, IDEMPOTENCY_TTL_S, self.now_ms(), caller.merchant_id, payment_id,
            refund_id, body.amount, payments.allowed_from(Event.REFUND, Event.REFUND_ALL), body.reason,
            keyspace.idempotency_key(caller.merchant_id, idempotency_key),
        ]
        reply = await self._run_for_member(record, "refund", keys, args)
        result = self._record(reply)
        view = {"refund": payments.refund_view(json.loads(result["refund"])),
                "payment": payments.payment_view(json.loads(result["payment"]))}
        return Answer(201, payments.dumps(view), reply[0] == "replay", "refunded")

    async def _outbound_adjust(self, caller: Caller, record: dict[str, str], kind: str, amount: int, reason: str,
                               store_id: str, terminal_id: str, idempotency_key: str, request_hash: str) -> Answer:
        """Cancel or refund a partner member's payment: the partner gives its member the
        points back first (idempotent, keyed by our request), then our books follow. A retry of
        a request whose books already followed (its answer lost, or stored) goes to our books
        alone, which answer what it did: the payment's state then no longer allows it."""
        allowed = payments.allowed_from(Event.CANCEL) if kind == "cancel" else payments.allowed_from(Event.REFUND, Event.REFUND_ALL)
        payment_id = record["payment_id"]
        request_name = keyspace.idempotency_key(caller.merchant_id, idempotency_key)
        partner_points = 0
        if not await self._adjusted_before(payment_id, request_name, request_hash):
            partner_points = await self._adjust_at_partner(record, kind, amount, allowed, idempotency_key)
        partition = keyspace.partition_of_payment(payment_id)
        now_ms = self.now_ms()
        keys = self._claim_keys(caller, idempotency_key) + self._batch_keys(caller, store_id, terminal_id) + [
            # The member scope (the payment's partition) from here; on a cluster its own step.
            keyspace.payment_key(payment_id), keyspace.journal_key(partition), keyspace.entry_index_key(partition),
            keyspace.refunds_key(payment_id), keyspace.adjustments_key(payment_id)]
        reply = await self.store.run("outbound_adjust", keys, [
            NONCE_TTL_S, request_hash, IDEMPOTENCY_TTL_S, now_ms, caller.merchant_id, payment_id, kind, amount, allowed,
            payments.business_day(now_ms, caller.time_zone, caller.business_day_cutoff), "rf_" + self._token_hex(8),
            reason, partner_points, request_name])
        result = self._record(reply)
        if kind == "cancel":
            return Answer(200, payments.dumps(payments.payment_view(result)), reply[0] == "replay", State.CANCELLED)
        view = {"refund": payments.refund_view(json.loads(result["refund"])),
                "payment": payments.payment_view(json.loads(result["payment"]))}
        return Answer(201, payments.dumps(view), reply[0] == "replay", "refunded")

    async def _adjusted_before(self, payment_id: str, request_name: str, request_hash: str) -> bool:
        """Whether this cancel or refund already moved the payment on our books: an earlier attempt's
        move keeps what it did under the request's name (lib_pay.lua, adjustment_steps())."""
        stored = await self.store.redis.hget(keyspace.adjustments_key(payment_id), request_name)
        return stored is not None and json.loads(stored)[0] == request_hash

    async def _adjust_at_partner(self, record: dict[str, str], kind: str, amount: int, allowed: str,
                                 idempotency_key: str) -> int:
        """The partner gives its member the points back (idempotent, keyed by our request); returns
        the partner's points returned."""
        partner_id = record["account"].split(":", 1)[1]
        client = self.partners.get(partner_id)
        if record["state"] not in allowed.split():
            raise Problem("invalid_state", f"the payment is {record['state']}")
        if client is None:
            raise Problem("storage_unavailable", f"no connection to {partner_id} is configured; retry later")
        try:
            if kind == "cancel":
                answer = await client.cancel(record["partner_payment_id"], idempotency_key)
                partner_points = answer.get("points", 0)
            else:
                answer = await client.refund(record["partner_payment_id"], amount, idempotency_key)
                partner_points = answer["refund"]["points"]
        except PartnerRefused as e:
            problem = e.code if e.code in ("invalid_state", "cancel_window_closed", "refund_exceeds_payment") else "invalid_state"
            raise Problem(problem, f"{partner_id} refused: {e.code}") from None
        except PartnerError:
            raise Problem("storage_unavailable", f"{partner_id} did not answer; retry with the same key") from None
        return partner_points

    async def _run_for_member(self, record: dict[str, str], script: str, keys: list[str], args: list[Any]) -> list[Any]:
        if not record.get("member_id"):
            # Only approved payments have a member; a declined one has nothing to give back.
            raise Problem("invalid_state", f"the payment is {record['state']}")
        return await self.store.run(script, keys, args)

    # -- reversal --------------------------------------------------------------

    async def reverse(self, caller: Caller, body: payments.ReversalRequest, idempotency_key: str, request_hash: str) -> Answer:
        order_key = keyspace.order_key(caller.merchant_id, body.order_ref)
        for _ in range(REVERSAL_RETRIES_MAX):
            payment_id = await self.store.redis.hget(order_key, "payment_id") or ""
            keys = self._claim_keys(caller, idempotency_key) + [order_key] + self._batch_keys(caller, body.store_id, body.terminal_id)
            record: dict[str, str] = {}
            if payment_id:
                partition = keyspace.partition_of_payment(payment_id)
                record = await self.store.redis.hgetall(keyspace.payment_key(payment_id))
                keys += [*_wallet_keys(record, partition), keyspace.payment_key(payment_id),
                         keyspace.reversal_marker_key(payment_id), *_coupon_keys(record, partition)]
                if _is_outbound(record) and record.get("state") in payments.allowed_from(Event.REVERSAL).split():
                    await self._reverse_at_partner(record)
            args = [
                NONCE_TTL_S, request_hash, IDEMPOTENCY_TTL_S, self.now_ms(), caller.merchant_id, body.order_ref,
                payment_id, payments.allowed_from(Event.REVERSAL), body.store_id, body.terminal_id,
                keyspace.idempotency_key(caller.merchant_id, idempotency_key), "1" if record else "",
            ]
            reply = await self.store.run("reversal", keys, args)
            if reply[0] != "retry":
                break
        else:
            raise Problem("idempotency_in_progress", "the order is changing; retry the reversal with the same key")
        result = self._record(reply)
        view = {
            "order_ref": result["order_ref"],
            "outcome": result["outcome"],
            "payment": payments.payment_view(json.loads(result["payment"])) if result["payment"] else None,
        }
        return Answer(200, payments.dumps(view), reply[0] == "replay", result["outcome"])

    async def _reverse_at_partner(self, record: dict[str, str]) -> None:
        """A partner member's approved payment is reversed at the partner first (its member gets the
        points back; idempotent by our payment id); our books follow in the reversal script."""
        partner_id = record["account"].split(":", 1)[1]
        client = self.partners.get(partner_id)
        if client is None:
            raise Problem("storage_unavailable", f"no connection to {partner_id} is configured; retry later")
        try:
            await client.reverse(record["payment_id"])
        except PartnerRefused as e:
            raise Problem("invalid_state", f"{partner_id} refused the reversal: {e.code}") from None
        except PartnerError:
            raise Problem("storage_unavailable", f"{partner_id} did not answer; retry with the same key") from None

    # -- batch close -----------------------------------------------------------

    async def close_batch(self, caller: Caller, terminal_id: str, body: payments.BatchRequest, idempotency_key: str, request_hash: str) -> Answer:
        if reason := body.invalid_reason():
            raise Problem("invalid_request", reason)
        keys = self._claim_keys(caller, idempotency_key) + self._batch_keys(caller, body.store_id, terminal_id) + [
            keyspace.closed_batches_key(caller.merchant_id, body.store_id, terminal_id),
        ]
        now_ms = self.now_ms()
        reply = await self.store.run("batch_close", keys, [NONCE_TTL_S, request_hash, IDEMPOTENCY_TTL_S, now_ms])
        if reply[0] == "closed":
            closed = json.loads(reply[1])
            # Closed batches never change, so a retry that gets here again answers the same.
            wanted = payments.earlier_batch_numbers(closed, body)
            earlier = {}
            if wanted:
                found = await self.store.redis.hmget(keys[5], [str(n) for n in wanted])
                earlier = {n: json.loads(text) for n, text in zip(wanted, found) if text}
            response = payments.dumps(payments.batch_comparison(closed, body, earlier))
            reply = await self.store.run(
                "idem_finish", [keys[2]], [request_hash, response.decode(), IDEMPOTENCY_TTL_S, now_ms]
            )
        if reply[0] not in ("done", "replay"):
            self._record(reply)
        return Answer(200, reply[1].encode(), reply[0] == "replay", "batch_closed")


def _lease_ms(client: PartnerClient) -> int:
    """The longest an outbound sale can take: three partner calls (sale, lookup, reversal), plus a margin."""
    return int(3 * (client.partner.connect_timeout_s + client.partner.read_timeout_s) * 1000) + 1000


def _wallet_keys(record: dict[str, str], partition: int) -> list[str]:
    """The wallet keys of the payment's member (of its partition, for a payment without one)."""
    return keyspace.wallet_keys(record.get("member_id") or _no_member_id(partition))


def _coupon_keys(record: dict[str, str], partition: int) -> list[str]:
    """The keys of the coupons a payment redeemed, in the order of its record's `coupons`."""
    return [keyspace.coupon_key(partition, c["code"]) for c in json.loads(record.get("coupons") or "[]")]


def _is_outbound(record: dict[str, str]) -> bool:
    """A payment by a partner network's member at our merchant (no member of ours in it)."""
    return not record.get("member_id") and record.get("account", "").startswith("partner:")


def _partner_coupons(partner: dict[str, Any] | None) -> str:
    """The coupons a partner applied to its member's payment, as the payment record keeps them."""
    coupons = [{"code": str(c["code"]), "title": str(c["title"]), "campaign_id": str(c["campaign_id"]),
                "discount": str(int(c["discount"]))} for c in (partner or {}).get("coupons") or []]
    return json.dumps(coupons) if coupons else "[]"


def _partner_decision(partner: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Our outcome from the partner's payment object: its approval, or its decline code."""
    if partner.get("status") == "approved":
        return "approved", "", partner
    code = (partner.get("decline") or {}).get("code", "")
    return "declined", code if code in payments.DECLINES else "unsupported_issuer", partner
