"""Frozen result models of the merchant API, built from its JSON answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True, slots=True)
class Decline:
    code: str
    message: str
    message_ko: str


@dataclass(frozen=True, slots=True)
class Refund:
    refund_id: str
    payment_id: str
    amount: int
    points: int
    balance_after: int
    reason: str
    created_at: str
    discount_points: int = 0
    """The coupons' share of the refund, back to whoever funded the discount."""

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "Refund":
        return cls(**{name: doc[name] for name in cls.__slots__ if name in doc})


@dataclass(frozen=True, slots=True)
class AppliedCoupon:
    code: str
    title: str
    """The receipt's label for the discount."""
    campaign_id: str
    discount: int
    restored: bool = False
    """Given back to the member (cancel, reversal or full refund)."""

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "AppliedCoupon":
        return cls(**{name: doc[name] for name in cls.__slots__ if name in doc})


@dataclass(frozen=True, slots=True)
class Payment:
    payment_id: str
    status: str
    decline: Decline | None
    amount: int
    currency: str
    points: int
    balance_after: int | None
    approval_code: str | None
    merchant_id: str
    store_id: str
    terminal_id: str
    order_ref: str
    business_day: str
    refunded_amount: int
    refunded_points: int
    created_at: str
    refunds: tuple[Refund, ...] = field(default=())
    fx: Mapping[str, str] | None = None
    """For a cross-border payment: the locked quote id and the rate (points per unit of the currency)."""
    discount: int = 0
    """The coupons' discount; the member paid `amount - discount`."""
    coupons: tuple[AppliedCoupon, ...] = ()

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "Payment":
        values = {name: doc[name] for name in cls.__slots__
                  if name not in ("decline", "refunds", "fx", "discount", "coupons")}
        decline = Decline(**doc["decline"]) if doc.get("decline") else None
        refunds = tuple(Refund.from_json(r) for r in doc.get("refunds", ()))
        coupons = tuple(AppliedCoupon.from_json(c) for c in doc.get("coupons", ()))
        return cls(decline=decline, refunds=refunds, fx=dict(doc["fx"]) if doc.get("fx") else None,
                   discount=doc.get("discount", 0), coupons=coupons, **values)


@dataclass(frozen=True, slots=True)
class RefundResult:
    refund: Refund
    payment: Payment

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "RefundResult":
        return cls(Refund.from_json(doc["refund"]), Payment.from_json(doc["payment"]))


@dataclass(frozen=True, slots=True)
class ReversalResult:
    order_ref: str
    outcome: str
    """`reversed` (points given back), `recorded` (no sale yet: a late one will decline),
    or `nothing_to_reverse` (the sale was declined or already undone)."""
    payment: Payment | None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "ReversalResult":
        payment = Payment.from_json(doc["payment"]) if doc.get("payment") else None
        return cls(doc["order_ref"], doc["outcome"], payment)


@dataclass(frozen=True, slots=True)
class TotalDifference:
    """A batch total the terminal reported differs from the gateway's."""

    field: str
    """`sale_count`, `sale_amount`, `void_count`, `void_amount`, `refund_count` or `refund_amount`."""
    terminal: int
    gateway: int

    @property
    def difference(self) -> str:
        return "total"


@dataclass(frozen=True, slots=True)
class MovementDifference:
    """One movement (a sale, void or refund of a payment) the two records do not agree on."""

    difference: str
    """`missing_at_gateway` (the terminal has it, the gateway's batch does not), `missing_at_terminal`
    (the reverse), `amount_mismatch` (both, with other amounts), or `other_batch` (the gateway
    counted it in the earlier batch `batch_no`: it crossed a close)."""
    payment_id: str
    kind: str
    """`sale`, `void` or `refund`."""
    terminal_amount: int | None
    gateway_amount: int | None
    batch_no: int | None = None
    """For `other_batch`: the batch the gateway counted it in."""


BatchDifference = TotalDifference | MovementDifference


def difference_from_json(doc: Mapping[str, Any]) -> BatchDifference:
    """A difference of the gateway's answer (also the older form: no `difference`, `missing_on`)."""
    tag = doc.get("difference") or ("total" if doc.get("field") != "payment" else
                                     "missing_at_terminal" if doc.get("missing_on") == "terminal" else "missing_at_gateway")
    if tag == "total":
        return TotalDifference(doc["field"], doc["terminal"], doc["gateway"])
    return MovementDifference(tag, doc["payment_id"], doc.get("kind", "sale"), doc.get("terminal_amount"),
                              doc.get("gateway_amount"), doc.get("batch_no"))


@dataclass(frozen=True, slots=True)
class BatchResult:
    batch_no: int
    status: str
    gateway: Mapping[str, int]
    terminal: Mapping[str, int]
    differences: tuple[BatchDifference, ...]
    """The totals that differ first, then the movements by payment id and kind."""
    next_batch_no: int
    matched_counts: Mapping[str, int] = field(default_factory=dict)
    """Movements both records have with the same amount, by kind (`sale`, `void`, `refund`)."""
    differences_omitted: int = 0
    """Differences beyond those listed (the gateway lists at most 10,000)."""

    @property
    def matched(self) -> bool:
        return self.status == "matched"

    @property
    def total_differences(self) -> tuple[TotalDifference, ...]:
        return tuple(d for d in self.differences if isinstance(d, TotalDifference))

    @property
    def movement_differences(self) -> tuple[MovementDifference, ...]:
        return tuple(d for d in self.differences if isinstance(d, MovementDifference))

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "BatchResult":
        return cls(doc["batch_no"], doc["status"], dict(doc["gateway"]), dict(doc["terminal"]),
                   tuple(difference_from_json(d) for d in doc["differences"]), doc["next_batch_no"],
                   dict(doc.get("matched_counts") or {}), int(doc.get("differences_omitted") or 0))
