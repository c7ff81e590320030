"""The terminal's side of a batch close, pure: the movements each finished operation adds to the
open batch, the totals they sum to, and the close's request body.

The gateway counts, per terminal, every approved sale, every void and every refund in the batch
that is open when it happens, and keeps each as a movement (payment id, kind, amount):

| kind | made by | amount |
|---|---|---|
| `sale` | an approved sale | the sale's amount |
| `void` | a cancel | the payment's amount |
| `void` | a reversal that reversed | what was not refunded yet |
| `refund` | a refund | the refund's amount |

The SDK records the same movements in its journal as its operations finish (pos_sdk/journal.py)
and a batch close sends them, so the gateway reconciles the two records one movement at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from pos_sdk.models import Payment, RefundResult, ReversalResult

KINDS = ("sale", "void", "refund")
BATCH_MOVEMENTS_MAX = 10_000
"""The gateway's limit of movements per batch close; a terminal that makes more closes more often."""


@dataclass(frozen=True, slots=True)
class Movement:
    """One sale, void or refund of a payment, as the batch close reports it."""

    payment_id: str
    kind: str
    amount: int

    def to_json(self) -> dict[str, Any]:
        return {"payment_id": self.payment_id, "kind": self.kind, "amount": self.amount}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "Movement":
        if doc["kind"] not in KINDS:
            raise ValueError(f"a movement's kind is one of {', '.join(KINDS)}, not {doc['kind']!r}")
        return cls(str(doc["payment_id"]), doc["kind"], int(doc["amount"]))


def was_approved(payment: Payment) -> bool:
    """Whether the gateway counted a sale for this payment: every payment but a declined one was
    approved once (a later cancel, refund or reversal is a movement of its own)."""
    return payment.status != "declined"


def sale_of(payment: Payment) -> Movement:
    return Movement(payment.payment_id, "sale", payment.amount)


def operation_movements(kind: str, result: Mapping[str, Any]) -> tuple[Payment | None, list[Movement]]:
    """The payment a finished cancel, refund or reversal answered with, and the movement the
    operation itself made (none for a reversal that found nothing to reverse)."""
    if kind == "cancel":
        payment = Payment.from_json(result)
        return payment, [Movement(payment.payment_id, "void", payment.amount)]
    if kind == "refund":
        refunded = RefundResult.from_json(result)
        return refunded.payment, [Movement(refunded.refund.payment_id, "refund", refunded.refund.amount)]
    if kind == "reversal":
        reversal = ReversalResult.from_json(result)
        payment = reversal.payment
        if reversal.outcome != "reversed" or payment is None:
            return payment, []
        return payment, [Movement(payment.payment_id, "void", payment.amount - payment.refunded_amount)]
    return None, []


def totals_of(movements: Iterable[Movement]) -> dict[str, int]:
    """The six batch totals the movements sum to."""
    totals = {f"{kind}_{what}": 0 for kind in KINDS for what in ("count", "amount")}
    for movement in movements:
        totals[f"{movement.kind}_count"] += 1
        totals[f"{movement.kind}_amount"] += movement.amount
    return totals


def close_document(store_id: str, totals: Mapping[str, int] | None, movements: list[Movement],
                   payment_ids: list[str] | None) -> dict[str, Any]:
    """The body of a batch close: the totals (the movements' own when the caller has none) and the
    movements, or the legacy sale payment ids when the caller passes them instead."""
    document: dict[str, Any] = {"store_id": store_id, **(totals if totals is not None else totals_of(movements))}
    if payment_ids is not None:
        document["payment_ids"] = list(payment_ids)
        return document
    if len(movements) > BATCH_MOVEMENTS_MAX:
        raise ValueError(f"{len(movements)} movements in the open batch, more than the {BATCH_MOVEMENTS_MAX} "
                         "one close can carry")
    document["movements"] = [m.to_json() for m in movements]
    return document
