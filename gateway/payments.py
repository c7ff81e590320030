"""Payments, the pure part: states and transitions, declines, request bodies, views.

No I/O and no clock reads. The store's Lua scripts enforce the same table:
each script receives the states its event is allowed from, computed here.

Every payment ends approved, declined, cancelled, reversed or (partly)
refunded:

    (new) --sale--> approved | declined
    approved --cancel--> cancelled           (same business day)
    approved | partially_refunded --refund--> partially_refunded | refunded
    approved | partially_refunded --reversal--> reversed
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
from collections import Counter, defaultdict
from enum import StrEnum
from typing import Annotated, Any, Literal, Mapping
from zoneinfo import ZoneInfo

import msgspec

from gateway.tokens import Outcome


class State(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    REVERSED = "reversed"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


class Event(StrEnum):
    CANCEL = "cancel"
    REFUND = "refund"
    REFUND_ALL = "refund_all"
    REVERSAL = "reversal"


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.APPROVED, Event.CANCEL): State.CANCELLED,
    (State.APPROVED, Event.REFUND): State.PARTIALLY_REFUNDED,
    (State.APPROVED, Event.REFUND_ALL): State.REFUNDED,
    (State.PARTIALLY_REFUNDED, Event.REFUND): State.PARTIALLY_REFUNDED,
    (State.PARTIALLY_REFUNDED, Event.REFUND_ALL): State.REFUNDED,
    (State.APPROVED, Event.REVERSAL): State.REVERSED,
    (State.PARTIALLY_REFUNDED, Event.REVERSAL): State.REVERSED,
}
FINAL_STATES = frozenset(State) - {s for s, _ in TRANSITIONS}


class IllegalTransition(Exception):
    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"a {state} payment cannot take a {event}")
        self.state, self.event = state, event


def next_state(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None


def allowed_from(*events: Event) -> str:
    """The states an event may start from, space separated, for a Lua script."""
    return " ".join(sorted({s for (s, e) in TRANSITIONS if e in events}))


# -- declines ---------------------------------------------------------------

DECLINES: dict[str, tuple[str, str]] = {
    # code: (English, Korean) message for the cashier's screen
    "insufficient_points": ("Not enough points. Ask for another payment method.", "포인트가 부족합니다. 다른 결제 수단을 요청하세요."),
    "expired_code": ("Code expired. Ask the member to refresh the code.", "만료된 코드입니다. 코드를 새로 고쳐 달라고 요청하세요."),
    "replayed_code": ("Code already used. Ask the member for a new code.", "이미 사용된 코드입니다. 새 코드를 요청하세요."),
    "invalid_code": ("Invalid code. Ask the member to show the code again.", "유효하지 않은 코드입니다. 코드를 다시 보여 달라고 요청하세요."),
    "unreadable_code": ("Code could not be read. Scan again.", "코드를 읽을 수 없습니다. 다시 스캔하세요."),
    "locked_device": ("This phone is locked after failed attempts. The member can unlock it in the app.", "여러 번 실패하여 잠긴 기기입니다. 앱에서 잠금을 해제하세요."),
    "revoked_device": ("This phone is no longer registered for payments.", "결제가 해지된 기기입니다."),
    "limit_exceeded": ("Over the member's daily limit.", "회원의 일일 한도를 초과했습니다."),
    "unknown_issuer": ("This code is not from a supported wallet.", "지원하지 않는 지갑의 코드입니다."),
    "unsupported_issuer": ("Payments from this wallet are not accepted here yet.", "이 지갑의 결제는 아직 지원되지 않습니다."),
    "reversed": ("This order was reversed. Start a new order.", "취소(망취소)된 주문입니다. 새 주문으로 진행하세요."),
    "partner_unavailable": ("The member's wallet did not answer. No points were taken; use another payment method.", "회원의 지갑이 응답하지 않습니다. 포인트는 차감되지 않았습니다. 다른 결제 수단을 이용하세요."),
    "partner_busy": ("The member's wallet is busy. Try again in a moment.", "회원의 지갑이 혼잡합니다. 잠시 후 다시 시도하세요."),
    "invalid_coupon": ("Coupon not valid here. Remove it and try again.", "사용할 수 없는 쿠폰입니다. 쿠폰을 빼고 다시 시도하세요."),
    "coupon_used": ("This coupon was already used. Remove it and try again.", "이미 사용된 쿠폰입니다. 쿠폰을 빼고 다시 시도하세요."),
    "coupon_expired": ("This coupon is not valid today. Remove it and try again.", "사용 기간이 아닌 쿠폰입니다. 쿠폰을 빼고 다시 시도하세요."),
    "coupon_not_eligible": ("This coupon cannot be used at this store. Remove it and try again.", "이 매장에서 사용할 수 없는 쿠폰입니다. 쿠폰을 빼고 다시 시도하세요."),
    "coupon_min_spend": ("The order is below this coupon's minimum spend.", "쿠폰의 최소 결제 금액에 미달합니다."),
    "coupons_not_combinable": ("These coupons cannot be used together. Keep one and try again.", "함께 사용할 수 없는 쿠폰입니다. 하나만 사용하세요."),
    "too_many_attempts": ("Too many invalid codes at this till. Wait a minute, then ask for a new code.",
                          "이 단말기에서 잘못된 코드가 너무 많습니다. 1분 후 새 코드를 요청하세요."),
    "confirmation_required": ("Over the member's limit without confirmation. Ask them to approve it in the app, then scan a new code.",
                              "확인 없이 결제할 수 있는 금액을 넘었습니다. 앱에서 승인한 뒤 새 코드를 스캔하세요."),
}

COUPON_CODE_RE = re.compile(r"^CP[A-Z0-9]{6,16}$")
"""Coupon codes as the gateway issues them (pos_sdk/scanner.py recognises the same form)."""

_OUTCOME_DECLINES = {
    Outcome.MALFORMED: "unreadable_code",
    Outcome.BAD_CHECK_DIGIT: "unreadable_code",
    Outcome.UNSUPPORTED_KIND: "unreadable_code",
    Outcome.UNKNOWN_ISSUER: "unknown_issuer",
    Outcome.UNSUPPORTED_ISSUER: "unsupported_issuer",
    # An unknown slot and a wrong OTP decline alike: the answer never tells a
    # guesser whether a slot exists.
    Outcome.UNKNOWN_SLOT: "invalid_code",
    Outcome.WRONG_OTP: "invalid_code",
    Outcome.REVOKED: "revoked_device",
    Outcome.LOCKED: "locked_device",
    Outcome.EXPIRED: "expired_code",
    Outcome.REPLAYED: "replayed_code",
}


def decline_for(outcome: str) -> str:
    """The merchant-facing decline code of a storage or verification outcome."""
    if outcome in DECLINES:
        return outcome
    return _OUTCOME_DECLINES[Outcome(outcome)]


# -- request bodies ---------------------------------------------------------

Id = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="1-64 of A-Z a-z 0-9 _ . -")]
OrderRef = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$", description="the terminal's own order reference")]
Amount = Annotated[int, msgspec.Meta(gt=0, le=10**15, description="minor units of the currency (KRW and TWD have none)")]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217")]


class LineItem(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=80)]
    quantity: Annotated[int, msgspec.Meta(gt=0, le=10_000)]
    unit_amount: Annotated[int, msgspec.Meta(ge=0, le=10**12)]
    sku: Annotated[str, msgspec.Meta(max_length=40)] = ""


class SaleRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64, description="the scanned 24-digit payment code")]
    amount: Amount
    currency: Currency
    order_ref: OrderRef
    store_id: Id
    terminal_id: Id
    coupon_codes: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=40)]], msgspec.Meta(max_length=5)] = []
    line_items: Annotated[list[LineItem], msgspec.Meta(max_length=200)] = []


class InteropSaleRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A partner network's merchant scanned one of our members' codes."""

    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64, description="the scanned 24-digit payment code")]
    amount: Amount
    currency: Currency
    partner_ref: OrderRef
    merchant_name: Annotated[str, msgspec.Meta(min_length=1, max_length=80)]
    coupon_codes: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=40)]], msgspec.Meta(max_length=5)] = []
    """Our coupons the member showed at the partner's merchant (a partner's own coupons stay at the partner)."""


class InteropActionRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    reason: Annotated[str, msgspec.Meta(max_length=200)] = ""


class InteropRefundRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    amount: Amount
    reason: Annotated[str, msgspec.Meta(max_length=200)] = ""


class InteropReversalRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    partner_ref: OrderRef
    reason: Annotated[str, msgspec.Meta(max_length=200)] = ""


class CancelRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    store_id: Id
    terminal_id: Id
    reason: Annotated[str, msgspec.Meta(max_length=200)] = ""


class RefundRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    amount: Amount
    store_id: Id
    terminal_id: Id
    reason: Annotated[str, msgspec.Meta(max_length=200)] = ""


class ReversalRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    order_ref: OrderRef
    store_id: Id
    terminal_id: Id
    reason: Annotated[str, msgspec.Meta(max_length=200)] = ""


MOVEMENT_KINDS = ("sale", "void", "refund")
"""What a terminal's batch counts: approved sales, voids (cancels and reversals) and refunds."""
BATCH_MOVEMENTS_MAX = 10_000
"""Movements (or legacy payment ids) one batch close lists: a busy till makes a few thousand a day."""
BATCH_BODY_BYTES_MAX = 1 << 20
"""The batch close's own body limit: 10,000 movements are about 800 KB of JSON, far above the
64 KiB the other requests get, and 1 MiB is the largest `body_bytes_max` allowed anyway."""
BATCH_LOOKBACK_MAX = 10
"""Earlier closed batches of the terminal a movement missing at the gateway is looked up in. A
late movement crosses into the neighbouring batch; ten covers a till closed at every shift for days."""
BATCH_DIFFERENCES_MAX = 10_000
"""Differences one answer lists; `differences_omitted` counts the rest. The terminal's side is
bounded by BATCH_MOVEMENTS_MAX, the gateway's side of a batch left open for weeks is not."""


class BatchMovement(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One movement of the open batch as the terminal recorded it. A refund is known by its
    payment and amount (not every terminal keeps refund ids): two refunds are two movements."""

    payment_id: Annotated[str, msgspec.Meta(pattern=r"^pay_[0-9]{3}[0-9a-f]{16}$", description="the payment")]
    kind: Literal["sale", "void", "refund"]
    amount: Annotated[int, msgspec.Meta(ge=0, le=10**15, description=(
        "minor units: the sale's amount, a cancel's amount, what a reversal gave back (the amount less"
        " its refunds), or the refund's amount"))]


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The terminal's own record of its open batch: totals and, item by item, its movements."""

    store_id: Id
    sale_count: Annotated[int, msgspec.Meta(ge=0)]
    sale_amount: Annotated[int, msgspec.Meta(ge=0)]
    void_count: Annotated[int, msgspec.Meta(ge=0)] = 0
    void_amount: Annotated[int, msgspec.Meta(ge=0)] = 0
    refund_count: Annotated[int, msgspec.Meta(ge=0)] = 0
    refund_amount: Annotated[int, msgspec.Meta(ge=0)] = 0
    movements: Annotated[list[BatchMovement], msgspec.Meta(
        max_length=BATCH_MOVEMENTS_MAX,
        description="every sale, void and refund the terminal made since its last close, reconciled one by one")] | None = None
    payment_ids: Annotated[list[str], msgspec.Meta(
        max_length=BATCH_MOVEMENTS_MAX, extra_json_schema={"deprecated": True},
        description="deprecated, send movements: the approved sales' payment ids (only sales are compared)")] | None = None

    def invalid_reason(self) -> str:
        """Why the request cannot be reconciled although it fits its schema ('' if it can); the
        caller answers invalid_request before closing anything."""
        if self.movements is not None and self.payment_ids is not None:
            return "send movements or payment_ids, not both"
        return ""


# -- business days ----------------------------------------------------------


def business_day(now_ms: int, time_zone: str, cutoff: str) -> str:
    """The merchant's business day at `now_ms`: the local date, moved back one
    day before the cut-off time (a 04:00 cut-off puts 02:00 sales on yesterday)."""
    # Cut-offs are HH:MM and today's zones are whole minutes off UTC, so the day can only change
    # on a minute boundary: one computation a minute serves every sale in it (a sale asks twice).
    day, exact = _business_day_of_minute(now_ms // 60_000, time_zone, cutoff)
    return day if exact else _business_day(now_ms / 1000, time_zone, cutoff)[0]


@functools.lru_cache(maxsize=1024)
def _business_day_of_minute(minute: int, time_zone: str, cutoff: str) -> tuple[str, bool]:
    return _business_day(minute * 60, time_zone, cutoff)


def _business_day(now_s: float, time_zone: str, cutoff: str) -> tuple[str, bool]:
    """The business day, and whether it holds for the whole minute (False in a zone with an
    offset of odd seconds, like the local mean times of before 1900)."""
    local = dt.datetime.fromtimestamp(now_s, ZoneInfo(time_zone))
    hours, minutes = (int(part) for part in cutoff.split(":"))
    whole_minutes = local.utcoffset() is None or local.utcoffset().seconds % 60 == 0
    if (local.hour, local.minute) < (hours, minutes):
        local -= dt.timedelta(days=1)
    return local.date().isoformat(), whole_minutes


def request_hash(method: str, path: str, body: bytes) -> str:
    """What an idempotency key is bound to: the same key with another body is a mismatch."""
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


PAYMENT_ID_RE = re.compile(r"^pay_[0-9]{3}[0-9a-f]{16}$")


Movement = tuple[str, str, int | None]
"""(payment id, kind, amount) of one movement; the amount is None for a legacy payment id the
gateway does not know (the terminal never says how much)."""


def batch_movements(batch: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """The movements of a closed batch, from its log of `batch_no|kind|payment_id|amount` lines."""
    movements = []
    for line in batch.get("log") or []:
        _, kind, payment_id, amount = line.split("|")
        movements.append((payment_id, kind, int(amount)))
    return movements


def _compared(closed: Mapping[str, Any], reported: BatchRequest) -> tuple[list[Movement], list[Movement]]:
    """The terminal's and the gateway's movements that this close compares item by item."""
    gateway: list[Movement] = list(batch_movements(closed))
    if reported.movements is not None:
        return [(m.payment_id, m.kind, m.amount) for m in reported.movements], gateway
    if reported.payment_ids is not None:
        # Legacy: sale ids without amounts, so only sales are compared, by presence. A listed
        # sale takes the gateway's amount; an id listed twice counts once, as it always did.
        sales = {payment_id: amount for payment_id, kind, amount in gateway if kind == "sale"}
        return ([(p, "sale", sales.get(p)) for p in sorted(set(reported.payment_ids))],
                [m for m in gateway if m[1] == "sale"])
    return [], []  # totals only


def _match(terminal: list[Movement], gateway: list[Movement]) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Exact multiset matching per payment and kind. Equal amounts pair first; what is left pairs
    in ascending order as amount mismatches; the rest is missing on one side. Sorted by payment
    id, then kind."""
    matched = dict.fromkeys(MOVEMENT_KINDS, 0)
    mine: dict[tuple[str, str], list[int | None]] = defaultdict(list)
    theirs: dict[tuple[str, str], list[int | None]] = defaultdict(list)
    for payment_id, kind, amount in terminal:
        mine[(payment_id, kind)].append(amount)
    for payment_id, kind, amount in gateway:
        theirs[(payment_id, kind)].append(amount)
    differences: list[dict[str, Any]] = []

    def add(difference: str, key: tuple[str, str], terminal_amount: int | None, gateway_amount: int | None) -> None:
        differences.append({"difference": difference, "payment_id": key[0], "kind": key[1],
                            "terminal_amount": terminal_amount, "gateway_amount": gateway_amount})

    for key in sorted(set(mine) | set(theirs)):
        t, g = Counter(mine.get(key, ())), Counter(theirs.get(key, ()))
        both = t & g
        matched[key[1]] = matched.get(key[1], 0) + sum(both.values())
        t_left = sorted((t - both).elements(), key=lambda a: (a is None, a or 0))
        g_left = sorted((g - both).elements(), key=lambda a: (a is None, a or 0))
        pairs = min(len(t_left), len(g_left))
        for t_amount, g_amount in zip(t_left[:pairs], g_left[:pairs]):
            add("amount_mismatch", key, t_amount, g_amount)
        for t_amount in t_left[pairs:]:
            add("missing_at_gateway", key, t_amount, None)
        for g_amount in g_left[pairs:]:
            add("missing_at_terminal", key, None, g_amount)
    return matched, differences


def earlier_batch_numbers(closed: Mapping[str, Any], reported: BatchRequest) -> list[int]:
    """The earlier batches to look movements up in: none unless one is missing at the gateway."""
    _, differences = _match(*_compared(closed, reported))
    if not any(d["difference"] == "missing_at_gateway" for d in differences):
        return []
    batch_no = int(closed["batch_no"])
    return list(range(batch_no - 1, max(0, batch_no - 1 - BATCH_LOOKBACK_MAX), -1))


def _other_batches(differences: list[dict[str, Any]], earlier: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A movement missing at the gateway that an earlier batch of the terminal counted is
    `other_batch` (it crossed a close): the same amount first, newest batch first, then any amount."""
    counted: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for batch_no in sorted(earlier, reverse=True):
        for payment_id, kind, amount in batch_movements(earlier[batch_no]):
            counted[(payment_id, kind)].append((batch_no, amount))
    found: dict[int, tuple[int, int]] = {}
    for exact in (True, False):
        for i, d in enumerate(differences):
            if d["difference"] != "missing_at_gateway" or i in found:
                continue
            candidates = counted.get((d["payment_id"], d["kind"]), [])
            pick = next((c for c in candidates if not exact or c[1] == d["terminal_amount"]), None)
            if pick is not None:
                candidates.remove(pick)
                found[i] = pick
    return [dict(d, difference="other_batch", gateway_amount=found[i][1], batch_no=found[i][0]) if i in found else d
            for i, d in enumerate(differences)]


def batch_comparison(closed: Mapping[str, Any], reported: BatchRequest,
                     earlier: Mapping[int, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Reconcile a closed batch (as batch_close.lua returns it) with the terminal's report: the
    totals, and the movements item by item. `earlier` holds the terminal's closed batches by
    number (those earlier_batch_numbers names), to tell a crossed movement from a missing one."""
    gateway = {f"{kind}_{what}": int(closed.get(f"{kind}_{what}", 0))
               for kind in MOVEMENT_KINDS for what in ("count", "amount")}
    terminal = {name: getattr(reported, name) for name in gateway}
    differences: list[dict[str, Any]] = [
        {"difference": "total", "field": name, "terminal": terminal[name], "gateway": gateway[name]}
        for name in gateway if terminal[name] != gateway[name]
    ]
    matched, movements = _match(*_compared(closed, reported))
    if earlier:
        movements = _other_batches(movements, earlier)
    if reported.payment_ids is not None:
        # The keys answers to payment_ids always had, kept for the terminals that read them.
        movements = [dict(d, field="payment", missing_on="terminal" if d["difference"] == "missing_at_terminal" else "gateway")
                     for d in movements]
    differences += movements
    batch_no = int(closed["batch_no"])
    return {
        "batch_no": batch_no,
        "status": "matched" if not differences else "mismatched",
        "gateway": gateway,
        "terminal": terminal,
        "matched_counts": matched,
        "differences": differences[:BATCH_DIFFERENCES_MAX],
        "differences_omitted": max(0, len(differences) - BATCH_DIFFERENCES_MAX),
        "next_batch_no": batch_no + 1,
    }


# -- views ------------------------------------------------------------------

_INT_FIELDS = ("amount", "points", "refunded_amount", "refunded_points", "balance_after", "created_ms")
PAYMENT_FIELDS = (
    "payment_id", "status", "decline", "amount", "currency", "points", "balance_after", "approval_code",
    "merchant_id", "store_id", "terminal_id", "order_ref", "business_day", "refunded_amount", "refunded_points",
    "created_at", "fx", "discount", "coupons",
)


def payment_view(record: Mapping[str, str]) -> dict[str, Any]:
    """The API's payment object from a stored record (all strings), in a fixed field order."""
    ints = {k: int(record[k]) if record.get(k) not in (None, "") else None for k in _INT_FIELDS}
    decline = decline_for(record["decline_code"]) if record.get("decline_code") else ""
    created = dt.datetime.fromtimestamp(ints["created_ms"] / 1000, dt.timezone.utc)
    view: dict[str, Any] = {
        "payment_id": record["payment_id"],
        "status": record["state"],
        "decline": {"code": decline, "message": DECLINES[decline][0], "message_ko": DECLINES[decline][1]} if decline else None,
        "amount": ints["amount"],
        "currency": record["currency"],
        "points": ints["points"],
        "balance_after": ints["balance_after"],
        "approval_code": record.get("approval_code") or None,
        "merchant_id": record["merchant_id"],
        "store_id": record["store_id"],
        "terminal_id": record["terminal_id"],
        "order_ref": record["order_ref"],
        "business_day": record["business_day"],
        "refunded_amount": ints["refunded_amount"],
        "refunded_points": ints["refunded_points"],
        "created_at": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "fx": {"quote_id": record["quote_id"], "rate": record["fx_rate"]} if record.get("quote_id") else None,
        "discount": int(record.get("discount") or 0),
        "coupons": [{"code": c["code"], "title": c["title"], "campaign_id": c["campaign_id"], "discount": int(c["discount"]),
                     "restored": bool(c.get("restored"))}
                    for c in json.loads(record.get("coupons") or record.get("partner_coupons") or "[]")],
    }
    assert tuple(view) == PAYMENT_FIELDS
    return view


def refund_view(refund: Mapping[str, str]) -> dict[str, Any]:
    return {
        "refund_id": refund["refund_id"],
        "payment_id": refund["payment_id"],
        "amount": int(refund["amount"]),
        "points": int(refund["points"]),
        "discount_points": int(refund.get("discount_points") or 0),
        "balance_after": int(refund["balance_after"]) if refund.get("balance_after") not in (None, "") else None,
        "reason": refund["reason"],
        "created_at": dt.datetime.fromtimestamp(int(refund["created_ms"]) / 1000, dt.timezone.utc)
        .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def dumps(document: Any) -> bytes:
    """The one JSON encoding of every response body: compact, key order as built, UTF-8."""
    # msgspec writes the same bytes as json.dumps(ensure_ascii=False, separators=(",", ":")) for
    # these documents (floats aside: 1e-7 for 1e-07) at a sixth of the cost, on every payment answer.
    return msgspec.json.encode(document)
