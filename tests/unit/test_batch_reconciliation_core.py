"""Batch reconciliation, the pure parts: the gateway's matching and the SDK's batch movements."""

from __future__ import annotations

import msgspec
import pytest

from gateway import payments
from pos_sdk import batch
from pos_sdk.batch import Movement

P1, P2, P3 = "pay_001" + "a" * 16, "pay_002" + "b" * 16, "pay_003" + "c" * 16


def closed(batch_no: int, *movements: tuple[str, str, int]) -> dict:
    """A closed batch as batch_close.lua returns it: totals and its log."""
    document: dict = {"batch_no": str(batch_no), "log": [f"{batch_no}|{k}|{p}|{a}" for p, k, a in movements]}
    for payment_id, kind, amount in movements:
        document[f"{kind}_count"] = document.get(f"{kind}_count", 0) + 1
        document[f"{kind}_amount"] = document.get(f"{kind}_amount", 0) + amount
    return document


def report(*movements: tuple[str, str, int], **fields) -> payments.BatchRequest:
    """The terminal's report: totals that agree with its movements, unless `fields` says otherwise."""
    totals = {f"{kind}_{what}": 0 for kind in payments.MOVEMENT_KINDS for what in ("count", "amount")}
    for _, kind, amount in movements:
        totals[f"{kind}_count"] += 1
        totals[f"{kind}_amount"] += amount
    body = {"store_id": "s1", **totals, "movements": [{"payment_id": p, "kind": k, "amount": a} for p, k, a in movements],
            **fields}
    return msgspec.convert(body, payments.BatchRequest)


def movement_differences(result: dict) -> list[tuple]:
    return [(d["difference"], d["payment_id"], d["kind"], d["terminal_amount"], d["gateway_amount"])
            for d in result["differences"] if d["difference"] != "total"]


def test_two_equal_refunds_match_two_entries():
    """Two refunds of 100 of one payment match the gateway's two refunds of 100."""
    result = payments.batch_comparison(closed(1, (P1, "refund", 100), (P1, "refund", 100)),
                                       report((P1, "refund", 100), (P1, "refund", 100)))
    assert ("matched", [], {"sale": 0, "void": 0, "refund": 2}) == (result["status"], result["differences"],
                                                                   result["matched_counts"])


def test_unequal_refunds_pair_the_equal_ones_first():
    """100 and 200 against 100 and 300: one match and one amount mismatch, not two missing."""
    result = payments.batch_comparison(closed(1, (P1, "refund", 100), (P1, "refund", 300)),
                                       report((P1, "refund", 100), (P1, "refund", 200)))
    assert [("amount_mismatch", P1, "refund", 200, 300)] == movement_differences(result)
    assert 1 == result["matched_counts"]["refund"]


def test_differences_are_ordered_by_payment_id_then_kind():
    """Totals first, then movements by payment id, then kind, whatever order either side listed them in."""
    result = payments.batch_comparison(closed(1, (P2, "sale", 5), (P1, "void", 7), (P1, "sale", 7)),
                                       report((P3, "sale", 1), (P2, "refund", 2)))
    assert [("missing_at_terminal", P1, "sale", None, 7), ("missing_at_terminal", P1, "void", None, 7),
            ("missing_at_gateway", P2, "refund", 2, None), ("missing_at_terminal", P2, "sale", None, 5),
            ("missing_at_gateway", P3, "sale", 1, None)] == movement_differences(result)
    assert {"total"} == {d["difference"] for d in result["differences"][:4]}


def test_earlier_batches_are_looked_up_only_when_something_is_missing_at_the_gateway():
    """Nothing missing at the gateway: no lookup. Something missing: up to ten earlier batches, newest first."""
    missing_at_terminal = payments.earlier_batch_numbers(closed(12, (P1, "sale", 5)), report())
    missing_at_gateway = payments.earlier_batch_numbers(closed(12), report((P1, "sale", 5)))
    first_batch = payments.earlier_batch_numbers(closed(1), report((P1, "sale", 5)))
    assert ([], list(range(11, 1, -1)), []) == (missing_at_terminal, missing_at_gateway, first_batch)


def test_other_batch_prefers_the_same_amount():
    """Of two earlier movements of a payment, the one with the terminal's amount is named."""
    earlier = {3: closed(3, (P1, "refund", 50)), 2: closed(2, (P1, "refund", 70))}
    result = payments.batch_comparison(closed(4), report((P1, "refund", 70)), earlier)
    [difference] = [d for d in result["differences"] if d["difference"] != "total"]
    assert {"difference": "other_batch", "payment_id": P1, "kind": "refund", "terminal_amount": 70,
            "gateway_amount": 70, "batch_no": 2} == difference


def test_movements_and_payment_ids_together_are_refused():
    """A report with both movements and legacy payment ids cannot be reconciled; either alone can."""
    assert ("send movements or payment_ids, not both", "", "") == (
        report((P1, "sale", 5), payment_ids=[P1]).invalid_reason(), report((P1, "sale", 5)).invalid_reason(),
        report(movements=None, payment_ids=[P1]).invalid_reason())


def test_sdk_totals_are_the_movements_sums():
    """The SDK's default totals are what its movements add up to."""
    movements = [Movement(P1, "sale", 500), Movement(P1, "refund", 200), Movement(P2, "sale", 300), Movement(P2, "void", 300)]
    assert {"sale_count": 2, "sale_amount": 800, "void_count": 1, "void_amount": 300, "refund_count": 1,
            "refund_amount": 200} == batch.totals_of(movements)


def test_sdk_refuses_a_batch_over_the_gateway_limit_before_sending():
    """More than 10,000 open movements cannot be one close's body."""
    with pytest.raises(ValueError, match="10000"):
        batch.close_document("s1", None, [Movement(P1, "refund", 1)] * (batch.BATCH_MOVEMENTS_MAX + 1), None)
