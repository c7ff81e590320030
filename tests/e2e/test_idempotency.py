"""Idempotency through HTTP: replays answer the same bytes, mismatches and missing keys are refused, races move points once."""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest

from gateway.app import TOKENS

SALE_PATH = "/v1/payments"


def idem() -> str:
    return "idem-" + secrets.token_hex(8)


def sale_body(terminal, code: str, amount: int = 1_000, order_ref: str | None = None) -> bytes:
    return json.dumps({"code": code, "amount": amount, "currency": "KRW", "order_ref": order_ref or "ord-" + secrets.token_hex(6),
                       "store_id": terminal.store_id, "terminal_id": terminal.terminal_id}).encode()


async def test_same_key_same_body_replays_the_same_bytes(gateway):
    """A retried sale (same key and body, fresh signature) gets byte-identical body and status, marked replayed."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    body, key = sale_body(terminal, member.code()), idem()
    s1, first, h1 = await terminal.send("POST", SALE_PATH, body=body, idempotency_key=key)
    s2, second, h2 = await terminal.send("POST", SALE_PATH, body=body, idempotency_key=key)
    assert (201, 201) == (s1, s2)
    assert h1["_raw"] == h2["_raw"]
    assert (None, "true") == (h1.get("idempotent-replayed"), h2.get("idempotent-replayed"))
    assert h1["x-request-id"] != h2["x-request-id"]
    assert 4_000 == await gateway.balance(member)


async def test_declined_sale_replays_the_same_decline(gateway):
    """A retried declined sale answers the same decline bytes, even after the member got points in between."""
    terminal, member = await gateway.terminal(), await gateway.member(points=500)
    body, key = sale_body(terminal, member.code()), idem()
    _, first, h1 = await terminal.send("POST", SALE_PATH, body=body, idempotency_key=key)
    await gateway.ledger.credit(member.member_id, 10_000, "affiliate:hana-card", "top-up-" + member.member_id,
                                gateway.app[TOKENS].home.points_unit)
    _, second, h2 = await terminal.send("POST", SALE_PATH, body=body, idempotency_key=key)
    assert ("insufficient_points", h1["_raw"]) == (first["decline"]["code"], h2["_raw"])
    assert 10_500 == await gateway.balance(member)


async def test_replay_after_cancel_still_answers_the_original_sale(gateway):
    """A sale retried after it was cancelled answers the sale as it was (approved), not the current state."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    body, key = sale_body(terminal, member.code()), idem()
    _, payment, h1 = await terminal.send("POST", SALE_PATH, body=body, idempotency_key=key)
    await terminal.send("POST", f"/v1/payments/{payment['payment_id']}/cancel", terminal.here())
    _, replay, h2 = await terminal.send("POST", SALE_PATH, body=body, idempotency_key=key)
    assert (h1["_raw"], "approved") == (h2["_raw"], replay["status"])
    assert 5_000 == await gateway.balance(member)


async def test_same_key_different_body_is_mismatch(gateway):
    """The same key with another amount is 422 idempotency_mismatch and moves nothing more."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    code, key = member.code(), idem()
    body = sale_body(terminal, code, 1_000, order_ref="IDEM-M-1")
    await terminal.send("POST", SALE_PATH, body=body, idempotency_key=key)
    status, problem, headers = await terminal.send("POST", SALE_PATH, body=sale_body(terminal, member.code(), 2_000, order_ref="IDEM-M-2"),
                                                   idempotency_key=key)
    assert (422, "idempotency_mismatch") == (status, problem["code"])
    assert headers["content-type"].startswith("application/problem+json")
    assert 4_000 == await gateway.balance(member)


async def test_same_key_on_another_route_is_mismatch(gateway):
    """A key used for a sale and then for a refund is a mismatch: the key binds method, path and body."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    key = idem()
    _, payment, _ = await terminal.send("POST", SALE_PATH, body=sale_body(terminal, member.code()), idempotency_key=key)
    status, problem, _ = await terminal.send("POST", f"/v1/payments/{payment['payment_id']}/refunds",
                                             {"amount": 100, **terminal.here()}, idempotency_key=key)
    assert (422, "idempotency_mismatch") == (status, problem["code"])
    assert 4_000 == await gateway.balance(member)


async def test_keys_are_per_merchant(gateway):
    """Two merchants using the same key value do not collide."""
    gs25, cu = await gateway.terminal(), await gateway.terminal("cu", "cu-jongno-01", "t1")
    member, key = await gateway.member(points=5_000), idem()
    s1, p1, _ = await gs25.send("POST", SALE_PATH, body=sale_body(gs25, member.code()), idempotency_key=key)
    s2, p2, h2 = await cu.send("POST", SALE_PATH, body=sale_body(cu, member.code()), idempotency_key=key)
    assert (201, 201, "approved", "approved") == (s1, s2, p1["status"], p2["status"])
    assert p1["payment_id"] != p2["payment_id"] and "idempotent-replayed" not in h2
    assert 3_000 == await gateway.balance(member)


@pytest.mark.parametrize("key", [None, "", "short", "1234567", "has space in it", "a" * 129, "ключ-ключ-ключ"])
async def test_missing_or_malformed_key_is_refused(gateway, key):
    """A write without an Idempotency-Key of 8-128 allowed characters is 400 idempotency_key_missing."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    body = sale_body(terminal, member.code())
    headers = terminal.headers("POST", SALE_PATH, body)
    if key is not None:
        headers["Idempotency-Key"] = key
    status, problem, _ = await terminal.send("POST", SALE_PATH, body=body, headers=headers)
    assert (400, "idempotency_key_missing") == (status, problem["code"])
    assert 5_000 == await gateway.balance(member)


@pytest.mark.parametrize("key", ["12345678", "a" * 128, "POS1:2026-12-01_0042.a"])
async def test_boundary_keys_are_accepted(gateway, key):
    """Keys of 8 and 128 characters of the allowed set are accepted."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    status, payment, _ = await terminal.send("POST", SALE_PATH, body=sale_body(terminal, member.code()), idempotency_key=key)
    assert (201, "approved") == (status, payment["status"])


async def test_key_missing_on_refund_and_cancel(gateway):
    """Refunds and cancels need a key as well."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    _, payment, _ = await terminal.pay(member.code(), 1_000)
    results = []
    for path, doc in ((f"/v1/payments/{payment['payment_id']}/refunds", {"amount": 100, **terminal.here()}),
                      (f"/v1/payments/{payment['payment_id']}/cancel", terminal.here()),
                      ("/v1/reversals", {"order_ref": payment["order_ref"], **terminal.here()}),
                      ("/v1/terminals/t1/batches", {"store_id": terminal.store_id, "sale_count": 0, "sale_amount": 0})):
        body = json.dumps(doc).encode()
        status, problem, _ = await terminal.send("POST", path, body=body, headers=terminal.headers("POST", path, body))
        results.append((status, problem["code"]))
    assert [(400, "idempotency_key_missing")] * 4 == results
    assert 4_000 == await gateway.balance(member)


def _replies_are_one_answer(replies, expected_status: int):
    bodies = {r[2]["_raw"] for r in replies if r[0] == expected_status}
    others = [(r[0], r[1].get("code") if isinstance(r[1], dict) else r[1]) for r in replies if r[0] != expected_status]
    assert 1 == len(bodies), bodies
    assert all(o == (409, "idempotency_in_progress") for o in others), others
    assert 1 == sum(1 for r in replies if r[0] == expected_status and "idempotent-replayed" not in r[2]), "exactly one first answer"
    return json.loads(next(iter(bodies)))


@pytest.mark.slow
async def test_fifty_concurrent_identical_sales_move_points_once(gateway):
    """The same sale sent 50 times at once (each freshly signed) is applied once; answers are one body or in_progress."""
    terminal, member = await gateway.terminal(), await gateway.member(points=100_000)
    body, key = sale_body(terminal, member.code(), 1_234), idem()
    replies = await asyncio.gather(*(terminal.send("POST", SALE_PATH, body=body, idempotency_key=key) for _ in range(50)))
    payment = _replies_are_one_answer(replies, 201)
    assert ("approved", 1_234) == (payment["status"], payment["points"])
    assert 100_000 - 1_234 == await gateway.balance(member)


@pytest.mark.slow
async def test_fifty_concurrent_sales_with_distinct_keys_same_code_approve_once(gateway):
    """Fifty different keys presenting one code at once: one approval, the rest decline, points move once."""
    terminal, member = await gateway.terminal(), await gateway.member(points=100_000)
    code = member.code()
    replies = await asyncio.gather(*(terminal.pay(code, 1_000) for _ in range(50)))
    statuses = sorted(r[1]["status"] for r in replies)
    assert ["approved"] + ["declined"] * 49 == statuses
    assert 99_000 == await gateway.balance(member)


@pytest.mark.slow
async def test_twenty_concurrent_identical_refunds_refund_once(gateway):
    """The same refund sent 20 times at once is applied once; every answer is the same body or in_progress."""
    terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
    _, payment, _ = await terminal.pay(member.code(), 5_000)
    path = f"/v1/payments/{payment['payment_id']}/refunds"
    body, key = json.dumps({"amount": 1_500, **terminal.here()}).encode(), idem()
    replies = await asyncio.gather(*(terminal.send("POST", path, body=body, idempotency_key=key) for _ in range(20)))
    result = _replies_are_one_answer(replies, 201)
    assert ("partially_refunded", 1_500) == (result["payment"]["status"], result["refund"]["amount"])
    assert 6_500 == await gateway.balance(member)
    _, fetched, _ = await terminal.send("GET", f"/v1/payments/{payment['payment_id']}")
    assert [1_500] == [r["amount"] for r in fetched["refunds"]]


@pytest.mark.slow
async def test_concurrent_identical_cancels_and_reversals_apply_once(gateway):
    """The same cancel (and the same reversal) sent 20 times at once gives the points back once."""
    terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
    _, p1, _ = await terminal.pay(member.code(), 3_000)
    _, p2, _ = await terminal.pay(member.code(), 2_000, order_ref="IDEM-RACE-REV")
    cancel_path = f"/v1/payments/{p1['payment_id']}/cancel"
    cancel_body, cancel_key = json.dumps(terminal.here()).encode(), idem()
    reversal_body, reversal_key = json.dumps({"order_ref": "IDEM-RACE-REV", **terminal.here()}).encode(), idem()
    cancels, reversals = await asyncio.gather(
        asyncio.gather(*(terminal.send("POST", cancel_path, body=cancel_body, idempotency_key=cancel_key) for _ in range(20))),
        asyncio.gather(*(terminal.send("POST", "/v1/reversals", body=reversal_body, idempotency_key=reversal_key) for _ in range(20))),
    )
    assert "cancelled" == _replies_are_one_answer(cancels, 200)["status"]
    assert "reversed" == _replies_are_one_answer(reversals, 200)["outcome"]
    assert 10_000 == await gateway.balance(member)


async def test_refund_retried_after_success_returns_same_body(gateway):
    """A refund retried with its key answers the same bytes even after a later refund changed the payment."""
    terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
    _, payment, _ = await terminal.pay(member.code(), 5_000)
    path = f"/v1/payments/{payment['payment_id']}/refunds"
    body, key = json.dumps({"amount": 1_000, **terminal.here()}).encode(), idem()
    s1, _, h1 = await terminal.send("POST", path, body=body, idempotency_key=key)
    await terminal.send("POST", path, {"amount": 500, **terminal.here()})
    s2, _, h2 = await terminal.send("POST", path, body=body, idempotency_key=key)
    assert (201, 201, h1["_raw"], "true") == (s1, s2, h2["_raw"], h2.get("idempotent-replayed"))
    assert 6_500 == await gateway.balance(member)


async def test_cancel_retried_after_success_returns_same_body(gateway):
    """A cancel retried with its key after it succeeded answers the same body, not invalid_state."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    _, payment, _ = await terminal.pay(member.code(), 3_000)
    path = f"/v1/payments/{payment['payment_id']}/cancel"
    body, key = json.dumps(terminal.here()).encode(), idem()
    s1, cancelled, h1 = await terminal.send("POST", path, body=body, idempotency_key=key)
    s2, _, h2 = await terminal.send("POST", path, body=body, idempotency_key=key)
    s3, problem, _ = await terminal.send("POST", path, body=body)
    assert (200, 200, "cancelled") == (s1, s2, cancelled["status"])
    assert (h1["_raw"], "true") == (h2["_raw"], h2.get("idempotent-replayed"))
    assert (409, "invalid_state") == (s3, problem["code"])
    assert 5_000 == await gateway.balance(member)


async def test_reversal_and_batch_close_retried_return_same_body(gateway):
    """Reversals and batch closes retried with their key answer the same bytes and do not run again."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    await terminal.pay(member.code(), 2_000, order_ref="IDEM-REV-1")
    rev_body, rev_key = json.dumps({"order_ref": "IDEM-REV-1", **terminal.here()}).encode(), idem()
    _, _, r1 = await terminal.send("POST", "/v1/reversals", body=rev_body, idempotency_key=rev_key)
    _, _, r2 = await terminal.send("POST", "/v1/reversals", body=rev_body, idempotency_key=rev_key)
    batch_body = json.dumps({"store_id": terminal.store_id, "sale_count": 1, "sale_amount": 2_000, "void_count": 1,
                             "void_amount": 2_000}).encode()
    batch_key = idem()
    _, b1, h1 = await terminal.send("POST", "/v1/terminals/t1/batches", body=batch_body, idempotency_key=batch_key)
    _, _, h2 = await terminal.send("POST", "/v1/terminals/t1/batches", body=batch_body, idempotency_key=batch_key)
    _, next_batch, _ = await terminal.send("POST", "/v1/terminals/t1/batches",
                                           {"store_id": terminal.store_id, "sale_count": 0, "sale_amount": 0})
    assert (r1["_raw"], "true") == (r2["_raw"], r2.get("idempotent-replayed"))
    assert (h1["_raw"], "true") == (h2["_raw"], h2.get("idempotent-replayed"))
    assert (1, 2) == (b1["batch_no"], next_batch["batch_no"])
    assert 5_000 == await gateway.balance(member)


async def test_refused_request_does_not_claim_the_key(gateway):
    """A sale refused before storage (unknown terminal) leaves the key free for the corrected request."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    key = idem()
    wrong = json.loads(sale_body(terminal, member.code())) | {"terminal_id": "t9"}
    status, problem, _ = await terminal.send("POST", SALE_PATH, wrong, idempotency_key=key)
    assert (403, "unknown_terminal") == (status, problem["code"])
    status, payment, _ = await terminal.send("POST", SALE_PATH, body=sale_body(terminal, member.code()), idempotency_key=key)
    assert (201, "approved") == (status, payment["status"])
