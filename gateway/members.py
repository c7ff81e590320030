"""The member side: enrolment with bearer tokens, balance, online codes, devices,
and affiliates' earnings.

A member's phone gets a bearer token at enrolment (`pgmt_<partition>_<random>`),
shown once and stored only as its SHA-256, one token per device, expiring
after `TOKEN_TTL_S` and revoked with its device. A token reaches only its own
member's wallet.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Annotated, Any, Callable

import msgspec

from gateway import keyspace, payments
from gateway.clock import iso_ms, wall_ms
from gateway.payment_service import IDEMPOTENCY_TTL_S, Caller
from gateway.problems import Problem
from gateway.settings import Settings
from gateway.signing import NONCE_TTL_S
from gateway.store import Store
from gateway.tokens import Enrolment, Grant, Replay, TokenError, TokenService

TOKEN_TTL_S = 30 * 24 * 3600  # a month, like a banking app's session; the app re-enrols after it
TOKEN_RE = re.compile(r"^pgmt_([0-9]{3})_[A-Za-z0-9_-]{43}$")
MEMBER_ID_RE = re.compile(r"^m[0-9]{3}[0-9a-f]{12}$")
CODES_PER_FETCH_MAX = 5  # Alipay+ multi-code fetch hands out a few; more would only widen a stolen phone's reach
DEVICES_PER_MEMBER_MAX = 5
EXCHANGE_LEASE_MS = 30_000
"""How long one attempt of an exchange may ask the partner before a duplicate may ask in its place
(beyond the partner client's timeouts; a crashed attempt's duplicates wait this long, then go on)."""


class ExchangeRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Send points to the member's account at a partner network, at the published rate."""

    partner: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]
    partner_member_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    points: payments.Amount


class InboundExchangeRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A partner network credits one of our members with points its member exchanged."""

    member_id: Annotated[str, msgspec.Meta(pattern=MEMBER_ID_RE.pattern)]
    points: payments.Amount
    exchange_ref: payments.OrderRef


class EarningRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    member_id: Annotated[str, msgspec.Meta(pattern=MEMBER_ID_RE.pattern)]
    points: payments.Amount
    affiliate_ref: payments.OrderRef
    # msgspec reads a time without an offset too, so its schema claims no format; expiry_ms
    # refuses those, which is RFC 3339's date-time exactly.
    expires_at: Annotated[dt.datetime, msgspec.Meta(extra_json_schema={"format": "date-time"})] | None = None
    """When these points expire (RFC 3339 with an offset); they are spent before points that do not."""


EXPIRY_HORIZON_MS = 10 * 366 * 24 * 3600 * 1000  # an expiry more than ten years out is a typo, not a promise


def expiry_ms(expires_at: dt.datetime | None, now_ms: int) -> str:
    """The Lua argument for an optional expiry: '' for none, else epoch ms in the future."""
    if expires_at is None:
        return ""
    if expires_at.tzinfo is None:
        raise Problem("invalid_request", "expires_at needs a UTC offset, e.g. 2027-06-30T23:59:59+09:00")
    ms = int(expires_at.timestamp() * 1000)
    if not now_ms < ms <= now_ms + EXPIRY_HORIZON_MS:
        raise Problem("invalid_request", "expires_at must be in the future and at most ten years away")
    return str(ms)


class SpendingSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    confirm_over_points: Annotated[int, msgspec.Meta(ge=0, le=10**12)] | None = None
    """A payment of more points than this needs the member's approval in the app; None: never."""
    daily_cap_points: Annotated[int, msgspec.Meta(ge=0, le=10**12)] | None = None
    """At most this many points a day (the wallet's own cap if None or higher)."""


class Confirmation(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    points: payments.Amount
    """Approve one payment of up to this many points."""


CONFIRMATION_TTL_S = 120  # long enough to show a new code to the cashier, short enough to be one payment


@dataclass(frozen=True, slots=True)
class Bearer:
    member_id: str
    slot: int




def _enrolment_problem(code: str) -> Problem:
    if code == "too_many_devices":
        return Problem("too_many_devices", f"a member can have at most {DEVICES_PER_MEMBER_MAX} devices; revoke one first")
    if code == "idempotency_mismatch":
        return Problem("idempotency_mismatch")
    if code == "unknown_member":
        return Problem("member_not_found")
    raise TokenError(code)  # the partition has no free slot left: an operator's problem, not the member's


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class MemberService:
    def __init__(self, store: Store, tokens: TokenService, settings: Settings,
                 now_ms: Callable[[], int] = wall_ms, token_hex: Callable[[int], str] = secrets.token_hex) -> None:
        self.store = store
        self.tokens = tokens
        self.settings = settings
        self.now_ms = now_ms
        self._token_hex = token_hex

    # -- enrolment and tokens ----------------------------------------------------

    async def enrol_member(self) -> dict[str, Any]:
        """A new wallet with its first device; the secret and the token are in this answer only."""
        member_id = await self.tokens.create_member()
        answer, _ = await self._enrol(member_id)
        return json.loads(answer)

    async def enrol_device(self, bearer: Bearer, member_id: str, idempotency_key: str, request_hash: str) -> tuple[bytes, bool]:
        """(answer, replayed): another device of the member's, one per Idempotency-Key; a retry gets
        the first answer again, the same device, secret and token."""
        self._own(bearer, member_id)
        return await self._enrol(member_id, keyspace.device_enrolment_key(member_id, idempotency_key), request_hash)

    async def _enrol(self, member_id: str, record_key: str = "", request_hash: str = "") -> tuple[bytes, bool]:
        partition = keyspace.partition_of_member(member_id)
        token = f"pgmt_{partition:03d}_" + base64.urlsafe_b64encode(bytes.fromhex(self._token_hex(32))).decode().rstrip("=")
        expires_ms = self.now_ms() + TOKEN_TTL_S * 1000

        def answer(enrolment: Enrolment) -> bytes:
            return payments.dumps({
                "member_id": member_id,
                "token": token,
                "token_expires_at": iso_ms(expires_ms),
                "device": {
                    "slot": enrolment.slot,
                    "secret_b32": base64.b32encode(enrolment.secret).decode().rstrip("="),
                    "issuer_prefix": self.tokens.home.prefix,
                    "code_step_s": self.settings.code_step_s,
                    "provisioning_uri": enrolment.provisioning_uri,
                },
            })

        grant = Grant(_token_hash(token), expires_ms, DEVICES_PER_MEMBER_MAX, answer, record_key, request_hash,
                      IDEMPOTENCY_TTL_S)
        try:
            enrolled = await self.tokens.enrol(member_id, grant)
        except TokenError as e:
            raise _enrolment_problem(e.code) from None
        if isinstance(enrolled, Replay):
            return enrolled.answer, True
        return answer(enrolled), False

    async def authenticate(self, authorization: str | None) -> Bearer:
        """The member and device a bearer token belongs to; 401 for anything else."""
        scheme, _, token = (authorization or "").partition(" ")
        match = TOKEN_RE.match(token) if scheme.lower() == "bearer" else None
        if match is None:
            raise Problem("unauthorized", "send Authorization: Bearer <the token from enrolment>")
        record = await self.store.redis.hgetall(keyspace.member_token_key(int(match[1]), _token_hash(token)))
        if not record or record["status"] != "active" or int(record["expires_ms"]) <= self.now_ms():
            raise Problem("unauthorized", "the token is unknown, expired or revoked; enrol the device again")
        return Bearer(record["member_id"], int(record["slot"]))

    @staticmethod
    def _own(bearer: Bearer, member_id: str) -> None:
        # Another member's wallet answers exactly like one that does not exist.
        if bearer.member_id != member_id:
            raise Problem("member_not_found")

    async def _own_device(self, bearer: Bearer, member_id: str, slot: int) -> None:
        self._own(bearer, member_id)
        if not await self.store.redis.sismember(keyspace.member_devices_key(member_id), slot):
            raise Problem("device_not_found")

    # -- wallet ----------------------------------------------------------------

    async def balance(self, bearer: Bearer, member_id: str) -> dict[str, Any]:
        self._own(bearer, member_id)
        balance = await self.tokens.ledger.balance(member_id)
        async with self.store.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keyspace.member_key(member_id), "expiring", "confirm_over", "daily_cap")
            pipe.zrange(keyspace.member_lots_key(member_id), 0, 0, withscores=True)
            (expiring, confirm_over, daily_cap), first_lot = await pipe.execute()
        next_expiry = None
        if first_lot:
            lot, expires_ms = first_lot[0]
            points = await self.store.redis.hget(keyspace.member_lot_points_key(member_id), lot)
            next_expiry = {"points": int(points or 0), "expires_at": iso_ms(int(expires_ms))}
        return {"member_id": member_id, "unit": balance.unit, "available": balance.available, "held": balance.held,
                "expiring": int(expiring or 0), "next_expiry": next_expiry,
                "settings": self._settings_view(confirm_over, daily_cap)}

    # -- spending settings -------------------------------------------------------

    def _settings_view(self, confirm_over: str | None, daily_cap: str | None) -> dict[str, Any]:
        return {"confirm_over_points": None if confirm_over is None else int(confirm_over),
                "daily_cap_points": int(daily_cap) if daily_cap is not None else self.settings.member_daily_points_max,
                "daily_cap_max_points": self.settings.member_daily_points_max}

    async def update_settings(self, bearer: Bearer, member_id: str, request: SpendingSettings) -> dict[str, Any]:
        """The member's own limits: above `confirm_over_points` a payment waits for the member's
        approval in the app; `daily_cap_points` caps a day's spending below the wallet's own cap."""
        self._own(bearer, member_id)
        cap_max = self.settings.member_daily_points_max
        if request.daily_cap_points is not None and request.daily_cap_points > cap_max:
            raise Problem("invalid_request", f"the daily cap can be at most {cap_max:,} points")
        _, confirm_over, daily_cap = await self.store.run("member_settings", [keyspace.member_key(member_id)], [
            "" if request.confirm_over_points is None else request.confirm_over_points,
            "" if request.daily_cap_points is None else request.daily_cap_points])
        return self._settings_view(confirm_over, daily_cap)

    async def confirm(self, bearer: Bearer, member_id: str, request: Confirmation) -> dict[str, Any]:
        """The member approves one payment of up to `points` above their confirmation threshold,
        for the next CONFIRMATION_TTL_S; the first such payment uses it up."""
        self._own(bearer, member_id)
        until_ms = self.now_ms() + CONFIRMATION_TTL_S * 1000
        await self.store.redis.hset(keyspace.member_key(member_id),
                                    mapping={"confirmed_points": request.points, "confirmed_until_ms": until_ms})
        return {"points": request.points, "expires_at": iso_ms(until_ms)}

    async def codes(self, bearer: Bearer, member_id: str, slot: int, count: int) -> dict[str, Any]:
        await self._own_device(bearer, member_id, slot)
        if not 1 <= count <= CODES_PER_FETCH_MAX:
            raise Problem("invalid_request", f"count must be 1 to {CODES_PER_FETCH_MAX}")
        try:
            issued = await self.tokens.issue_codes(slot, self.now_ms() // 1000, count)
        except TokenError as e:
            raise Problem("device_unavailable", f"the device is {e.code}; unlock it in the app or enrol again") from None
        return {"codes": [{"code": c.code, "step": c.step, "seq": c.seq, "refresh_at": iso_ms(c.refresh_at_s * 1000),
                           "expires_at": iso_ms(c.expires_at_s * 1000)} for c in issued]}

    async def revoke_device(self, bearer: Bearer, member_id: str, slot: int) -> None:
        """The device and its token end together (device_status.lua); revoking it again changes nothing."""
        await self._own_device(bearer, member_id, slot)
        try:
            await self.tokens.revoke(member_id, slot)
        except TokenError as e:
            if e.code != "revoked":
                raise Problem("device_not_found") from None

    async def unlock_device(self, bearer: Bearer, member_id: str, slot: int) -> None:
        await self._own_device(bearer, member_id, slot)
        try:
            await self.tokens.unlock(member_id, slot)
        except TokenError as e:
            raise Problem("device_unavailable", f"the device is {e.code}") from None

    # -- earnings --------------------------------------------------------------

    async def earn(self, caller: Caller, earning: EarningRequest, idempotency_key: str, request_hash: str) -> tuple[bytes, bool]:
        """Credit an affiliate's points to a member, once per key and per affiliate reference.

        Three steps, each in one hash slot (on one Redis and on a cluster alike): claim and reserve
        the budget in the affiliate's scope, credit in the member's, store the answer in the
        affiliate's. A request left between two steps is completed by its next attempt (or a
        concurrent duplicate): the claim keeps the earning id, and the credit is idempotent by it."""
        idem_key = keyspace.idempotency_key(caller.merchant_id, idempotency_key)
        budget_key = keyspace.affiliate_budget_key(caller.merchant_id)
        ref_key = keyspace.earning_key(caller.merchant_id, earning.affiliate_ref)
        now_ms = self.now_ms()
        reply = await self.store.run("earn_claim", [
            keyspace.nonce_key(caller.merchant_id, caller.nonce),
            keyspace.signing_key_key(caller.merchant_id, caller.key_id), idem_key, budget_key, ref_key,
        ], [NONCE_TTL_S, request_hash, IDEMPOTENCY_TTL_S, now_ms, earning.points, "earn_" + self._token_hex(8)])
        if reply[0] == "claimed":
            earning_id = reply[1]
            reply = await self.store.run("earn_move", [
                *keyspace.wallet_keys(earning.member_id), keyspace.earning_answer_key(earning.member_id, earning_id),
            ], [caller.merchant_id, earning.member_id, earning.points, self.tokens.home.points_unit, earning_id,
                earning.affiliate_ref, expiry_ms(earning.expires_at, now_ms), now_ms, IDEMPOTENCY_TTL_S])
            if reply[0] == "member_not_found":
                # Members are never removed, so every attempt of this earning is refused alike:
                # the reservation goes back and the request may be sent again.
                await self.store.run("earn_release", [idem_key, budget_key, ref_key],
                                     [request_hash, earning_id, earning.points])
            elif reply[0] != "moved":
                raise RuntimeError(f"earn_move replied {reply[0]!r}")  # our bug: the claim checked the amount
            else:
                reply = await self.store.run("idem_finish", [idem_key],
                                             [request_hash, reply[1], IDEMPOTENCY_TTL_S, now_ms])
        if reply[0] not in ("done", "replay"):
            detail = {"over_budget": f"the affiliate can still issue {reply[1] if len(reply) > 1 else 0} points",
                      "affiliate_ref_in_use": f"this reference was credited as {reply[1] if len(reply) > 1 else ''}"}
            raise Problem(reply[0], detail.get(reply[0]))
        record = json.loads(reply[1])
        view = {"earning_id": record["earning_id"], "member_id": record["member_id"], "points": int(record["points"]),
                "balance_after": int(record["balance_after"]), "affiliate_id": record["affiliate_id"],
                "affiliate_ref": record["affiliate_ref"], "created_at": iso_ms(int(record["created_ms"])),
                "expires_at": iso_ms(int(record["expires_ms"])) if record.get("expires_ms") else None}
        return payments.dumps(view), reply[0] == "replay"


# -- points exchange ------------------------------------------------------------


class Exchanges:
    """Points exchange with partner networks, both ways, two-phase on our side.

    Out (our member -> partner): hold the points, ask the partner to credit its
    member, post the hold to the partner's clearing account on success, void it
    on a definite refusal. An unknown outcome keeps the hold and is resolved in
    the background (lookup, then the same idempotent credit again), so the
    points are never both debited here and missing there.
    In (partner -> our member): credit once per exchange reference.
    """

    def __init__(self, store: Store, tokens: TokenService, settings: Settings, payments_service: Any,
                 now_ms: Callable[[], int] = wall_ms, token_hex: Callable[[int], str] = secrets.token_hex) -> None:
        self.store, self.tokens, self.settings = store, tokens, settings
        self.payments = payments_service
        self.now_ms, self._token_hex = now_ms, token_hex

    async def send(self, bearer: Bearer, member_id: str, request: ExchangeRequest, idempotency_key: str) -> tuple[int, dict[str, Any]]:
        MemberService._own(bearer, member_id)
        from gateway import fx
        from gateway.ledger import InsufficientPoints, LedgerError
        from gateway.partners import PartnerError, PartnerRefused

        client = self.payments.partners.get(request.partner)
        network = self.settings.network(request.partner)
        if client is None or network is None:
            raise Problem("exchange_unavailable", f"exchanges with {request.partner} are not available")
        partition = keyspace.partition_of_member(member_id)
        exchange_id = "ex_" + hashlib.sha256(f"{member_id}:{idempotency_key}".encode()).hexdigest()[:16]
        record_key = keyspace.exchange_key(partition, exchange_id)
        stored = await self.store.redis.get(record_key)
        if stored is not None:
            record = json.loads(stored)
            if (record["partner"], record["partner_member_id"], record["points"]) != (
                    request.partner, request.partner_member_id, request.points):
                raise Problem("idempotency_mismatch")
            if record["state"] != "pending":
                return (201 if record["state"] == "completed" else 409), record
        else:
            now_ms = self.now_ms()
            quote = fx.quote(await self.payments.rates(), network.currency, self.tokens.home.currency,
                             "q_" + self._token_hex(8), now_ms)
            received = fx.exchange_points(request.points, quote, paid_unit_exponent=0, received_unit_exponent=0)
            if received <= 0:
                raise Problem("invalid_request", "too few points to exchange for one partner point")
            record = {"exchange_id": exchange_id, "member_id": member_id, "partner": request.partner,
                      "partner_member_id": request.partner_member_id, "points": request.points, "received": received,
                      "received_unit": network.points_unit, "quote_id": quote.quote_id, "rate": str(quote.rate),
                      "state": "pending", "created_at": iso_ms(now_ms)}
            if not await self.store.redis.set(record_key, json.dumps(record), nx=True):
                record = json.loads(await self.store.redis.get(record_key))
        # Hold on every attempt of a pending exchange: a crash between writing the record and
        # holding must not let the partner credit points that were never taken here. The hold
        # is idempotent by its entry id.
        try:
            await self.tokens.ledger.hold(member_id, record["points"], exchange_id, "hold:" + exchange_id,
                                          self.tokens.home.points_unit, kind="exchange_hold",
                                          meta={"partner": request.partner, "exchange_id": exchange_id})
        except InsufficientPoints:
            await self._finish(record_key, record, "refused", reason="insufficient_points")
            raise Problem("insufficient_points_for_exchange") from None
        except LedgerError as e:
            if e.code != "hold_exists":
                raise
        # One attempt at a time asks the partner: a duplicate sent meanwhile is told to ask again (409
        # idempotency_in_progress) and then gets the outcome, not a snapshot taken half-way.
        lease_key = keyspace.exchange_lease_key(partition, exchange_id)
        if not await self.store.redis.set(lease_key, "1", nx=True, px=EXCHANGE_LEASE_MS):
            raise Problem("idempotency_in_progress", "this exchange is being sent to the partner; ask again in a moment")
        try:
            record = json.loads(await self.store.redis.get(record_key))
            if record["state"] != "pending":  # an attempt that held the lease before this one finished it
                return (201 if record["state"] == "completed" else 409), record
            try:
                answer = await client.credit_exchange(exchange_id, record["partner_member_id"], record["received"])
            except PartnerRefused as e:
                await self.tokens.ledger.void(member_id, exchange_id, "void:" + exchange_id, kind="exchange_void")
                record = await self._finish(record_key, record, "refused", reason=e.code)
                return 409, record
            except PartnerError:
                await self.store.redis.sadd(keyspace.partner_exchanges_key(request.partner), f"{member_id}/{exchange_id}")
                return 202, record
            return 201, await self._complete(record_key, record, answer)
        finally:
            await self.store.redis.delete(lease_key)

    async def _complete(self, record_key: str, record: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        from gateway.ledger import LedgerError

        try:
            await self.tokens.ledger.post(record["member_id"], record["exchange_id"], f"partner:{record['partner']}",
                                          "post:" + record["exchange_id"], kind="exchange_post",
                                          meta={"partner": record["partner"], "received": record["received"]})
        except LedgerError as e:
            if e.code != "hold_posted":
                raise
        return await self._finish(record_key, record, "completed", partner_credit=answer.get("credit_id", ""))

    async def _finish(self, record_key: str, record: dict[str, Any], state: str, **extra: Any) -> dict[str, Any]:
        record = {**record, "state": state, **extra}
        await self.store.redis.set(record_key, json.dumps(record))
        return record

    async def resolve_pending(self) -> int:
        """Settle exchanges whose answer was lost: ask the partner, credit again (idempotent), then post."""
        from gateway.partners import PartnerError, PartnerRefused

        settled = 0
        for partner_id, client in self.payments.partners.items():
            for item in await self.store.redis.smembers(keyspace.partner_exchanges_key(partner_id)):
                member_id, exchange_id = item.split("/", 1)
                record_key = keyspace.exchange_key(keyspace.partition_of_member(member_id), exchange_id)
                record = json.loads(await self.store.redis.get(record_key))
                try:
                    answer = await client.find_exchange(exchange_id) or await client.credit_exchange(
                        exchange_id, record["partner_member_id"], record["received"])
                except PartnerRefused as e:
                    await self.tokens.ledger.void(member_id, exchange_id, "void:" + exchange_id, kind="exchange_void")
                    await self._finish(record_key, record, "refused", reason=e.code)
                except PartnerError:
                    break
                else:
                    await self._complete(record_key, record, answer)
                await self.store.redis.srem(keyspace.partner_exchanges_key(partner_id), item)
                settled += 1
        return settled

    async def receive(self, caller: Any, request: InboundExchangeRequest) -> dict[str, Any]:
        """A partner credits our member; once per exchange reference, the same answer every time."""
        from gateway.ledger import UnknownMember

        key = keyspace.inbound_exchange_key(caller.merchant_id, request.exchange_ref)
        stored = await self.store.redis.get(key)
        if stored is not None:
            return json.loads(stored)
        try:
            await self.tokens.ledger.credit(
                request.member_id, request.points, f"partner:{caller.merchant_id}",
                f"xin:{caller.merchant_id}:{request.exchange_ref}", self.tokens.home.points_unit,
                kind="exchange_in", meta={"partner": caller.merchant_id, "exchange_ref": request.exchange_ref})
        except UnknownMember:
            raise Problem("member_not_found") from None
        answer = {"credit_id": f"xin_{request.exchange_ref}", "exchange_ref": request.exchange_ref,
                  "member_id": request.member_id, "points": request.points, "credited_at": iso_ms(self.now_ms())}
        if not await self.store.redis.set(key, json.dumps(answer), nx=True):
            return json.loads(await self.store.redis.get(key))
        return answer

    async def get(self, bearer: Bearer, member_id: str, exchange_id: str) -> dict[str, Any]:
        MemberService._own(bearer, member_id)
        if not re.fullmatch(r"ex_[0-9a-f]{16}", exchange_id):
            raise Problem("exchange_not_found")
        stored = await self.store.redis.get(keyspace.exchange_key(keyspace.partition_of_member(member_id), exchange_id))
        if stored is None:
            raise Problem("exchange_not_found")
        return json.loads(stored)

    async def find_received(self, caller: Any, exchange_ref: str) -> dict[str, Any]:
        stored = await self.store.redis.get(keyspace.inbound_exchange_key(caller.merchant_id, exchange_ref))
        if stored is None:
            raise Problem("exchange_not_found")
        return json.loads(stored)
