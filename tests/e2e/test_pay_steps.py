"""A sale's and a reversal's steps on one Redis: the states a cluster can leave between two steps
(here reached by running the steps one by one) are completed by the one-script path, pay.lua and
reversal.lua, with the points moved exactly once."""

from __future__ import annotations

import secrets

import pytest

from gateway import keyspace
from gateway.app import STORE
from gateway.audit import run_audit
from tests.e2e.conftest import Gateway
from tests.e2e.pay_steps import MERCHANT, batch_counts, journal_entries, lost_after, reversal, sale, scripts_run

pytestmark = pytest.mark.single_redis("drives the one-server composition of the steps (split_steps on one Redis)")


async def lose_sale_after(gw: Gateway, step: str, terminal, code: str, amount: int, order_ref: str, key: str) -> str:
    """Send the sale as steps, lose the connection after `step`, go back to one script; the claimed payment id."""
    store = gw.app[STORE]
    store.split_steps = True
    try:
        with lost_after(store, step):
            status, problem, _ = await sale(terminal, code, amount, order_ref, key)
    finally:
        store.split_steps = False
    assert (503, "storage_unavailable") == (status, problem["code"])
    return (await store.redis.hgetall(keyspace.idempotency_key(MERCHANT, key)))["payment_id"]


async def test_on_one_redis_a_sale_and_a_reversal_are_one_script_each(gateway: Gateway):
    """The hot path on one Redis: a sale sends pay.lua once and a reversal reversal.lua once, one round trip each."""
    member = await gateway.member(5_000)
    terminal = await gateway.terminal(MERCHANT)
    order_ref = "ord-" + secrets.token_hex(6)
    with scripts_run(gateway.app[STORE]) as names:
        status, _, _ = await terminal.pay(member.code(), 1_000, order_ref)
        reversed_status, _, _ = await reversal(terminal, order_ref)
    assert (201, 200, ["pay", "reversal"]) == (status, reversed_status, names)


async def test_one_script_completes_a_sale_left_after_its_claim(gateway: Gateway):
    """pay.lua finds the claim, answers 'resume', and the service's second call moves the claimed payment once."""
    member = await gateway.member(5_000)
    terminal = await gateway.terminal(MERCHANT)
    code, order_ref, key = member.code(), "ord-" + secrets.token_hex(6), "idem-" + secrets.token_hex(8)
    payment_id = await lose_sale_after(gateway, "pay_claim", terminal, code, 1_000, order_ref, key)
    assert 5_000 == await gateway.balance(member)

    status, payment, _ = await sale(terminal, code, 1_000, order_ref, key)
    assert (201, payment_id, "approved", 4_000) == (status, payment["payment_id"], payment["status"],
                                                    await gateway.balance(member))
    assert [f"pay:{payment_id}"] == await journal_entries(gateway, member)
    assert ("1", "1000", None) == await batch_counts(gateway, terminal)
    assert [] == (await run_audit(gateway.app[STORE])).problems


async def test_one_script_finishes_a_sale_left_after_its_move(gateway: Gateway):
    """pay.lua finds the moved payment record and only finishes: no second debit, one batch entry."""
    member = await gateway.member(5_000)
    terminal = await gateway.terminal(MERCHANT)
    code, order_ref, key = member.code(), "ord-" + secrets.token_hex(6), "idem-" + secrets.token_hex(8)
    payment_id = await lose_sale_after(gateway, "pay_move", terminal, code, 1_000, order_ref, key)
    assert 4_000 == await gateway.balance(member)

    status, payment, _ = await sale(terminal, code, 1_000, order_ref, key)
    assert (201, payment_id, "approved", 4_000) == (status, payment["payment_id"], payment["status"],
                                                    await gateway.balance(member))
    assert ("1", "1000", None) == await batch_counts(gateway, terminal)
    assert [f"pay:{payment_id}"] == await journal_entries(gateway, member)


async def test_a_reversal_of_a_claim_on_one_redis_makes_the_retry_decline(gateway: Gateway):
    """reversal.lua marks a claim-only sale's payment id; the sale's retry declines 'reversed', nothing moves."""
    member = await gateway.member(5_000)
    terminal = await gateway.terminal(MERCHANT)
    code, order_ref, key = member.code(), "ord-" + secrets.token_hex(6), "idem-" + secrets.token_hex(8)
    payment_id = await lose_sale_after(gateway, "pay_claim", terminal, code, 1_000, order_ref, key)

    status, reversed_, _ = await reversal(terminal, order_ref)
    assert (200, "recorded", None) == (status, reversed_["outcome"], reversed_["payment"])
    status, payment, _ = await sale(terminal, code, 1_000, order_ref, key)
    assert (201, payment_id, "declined", "reversed", 5_000) == (
        status, payment["payment_id"], payment["status"], payment["decline"]["code"], await gateway.balance(member))
    assert [] == await journal_entries(gateway, member)
    assert (None, None, None) == await batch_counts(gateway, terminal)
