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
class BatchResult:
    batch_no: int
    status: str
    gateway: Mapping[str, int]
    terminal: Mapping[str, int]
    differences: tuple[Mapping[str, Any], ...]
    next_batch_no: int

    @property
    def matched(self) -> bool:
        return self.status == "matched"

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "BatchResult":
        return cls(doc["batch_no"], doc["status"], dict(doc["gateway"]), dict(doc["terminal"]),
                   tuple(doc["differences"]), doc["next_batch_no"])
