"""Sales and reversals on a real 3+3 Redis Cluster through the HTTP API: the store runs them as
their claim, move and finish steps (DESIGN.md 6a), and a failure between two steps is completed by
the terminal's retry or its reversal, with the points moved exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets

import pytest

from gateway import keyspace
from gateway.app import STORE
from gateway.audit import run_audit
from gateway.embedded_cluster import EmbeddedCluster
from gateway.settings import Settings
from gateway.store import Store
from tests.e2e.conftest import Gateway, Member, serving
from tests.e2e.pay_steps import MERCHANT, batch_counts, journal_entries, lost_after, reversal, sale, scripts_run

pytestmark = pytest.mark.cluster

DUPLICATES = 20
MEMBER_DRAWS_MAX = 20  # a random partition lands on another primary than the merchant's 2 times in 3


@pytest.fixture
async def gateway(cluster_settings: Settings, cluster_store: Store):
    """The gateway on the cluster (`cluster_store` flushed it), merchants.toml loaded by its registry."""
    async with serving(cluster_settings) as running:
        yield running


async def member_elsewhere(gw: Gateway, points: int) -> Member:
    """A member whose partition's primary is not the merchant scope's: every sale crosses two nodes."""
    store = gw.app[STORE]
    merchant_node = store.redis.get_node_from_key(keyspace.idempotency_key(MERCHANT, "x")).name
    for _ in range(MEMBER_DRAWS_MAX):
        member = await gw.member(points)
        if store.redis.get_node_from_key(keyspace.member_key(member.member_id)).name != merchant_node:
            return member
    raise AssertionError(f"{MEMBER_DRAWS_MAX} members all landed on the merchant's primary")


async def assert_audit_clean(gw: Gateway) -> None:
    report = await run_audit(gw.app[STORE])
    assert [] == report.problems


async def test_a_sale_is_approved_on_the_cluster(gateway: Gateway):
    """A sale whose merchant and member sit on different primaries is approved and debits the member once."""
    member = await member_elsewhere(gateway, 10_000)
    terminal = await gateway.terminal(MERCHANT)
    status, payment, _ = await terminal.pay(member.code(), 1_500)
    assert (201, "approved", 1_500, 8_500) == (status, payment["status"], payment["points"], payment["balance_after"])
    assert 8_500 == await gateway.balance(member)
    assert ("1", "1500", None) == await batch_counts(gateway, terminal)
    await assert_audit_clean(gateway)


async def test_on_the_cluster_a_sale_and_a_reversal_are_three_steps_each(gateway: Gateway):
    """On the cluster the store sends a sale as claim, move, finish and a reversal of it likewise."""
    member = await member_elsewhere(gateway, 10_000)
    terminal = await gateway.terminal(MERCHANT)
    order_ref = "ord-" + secrets.token_hex(6)
    with scripts_run(gateway.app[STORE]) as names:
        await terminal.pay(member.code(), 1_000, order_ref)
        await reversal(terminal, order_ref)
    assert ["pay_claim", "pay_move", "pay_finish", "reversal_claim", "reversal_move", "reversal_finish"] == names


async def test_a_retry_on_the_cluster_replays_the_same_bytes(gateway: Gateway):
    """A retry with the same idempotency key and body gets the first answer's bytes, marked replayed; points move once."""
    member = await member_elsewhere(gateway, 10_000)
    terminal = await gateway.terminal(MERCHANT)
    code, order_ref, key = member.code(), "ord-" + secrets.token_hex(6), "idem-" + secrets.token_hex(8)
    first = await sale(terminal, code, 2_000, order_ref, key)
    again = await sale(terminal, code, 2_000, order_ref, key)
    assert (201, 201, first[2]["_raw"], "true") == (first[0], again[0], again[2]["_raw"], again[2].get("idempotent-replayed"))
    assert 8_000 == await gateway.balance(member)


async def test_a_sale_over_the_balance_declines_on_the_cluster(gateway: Gateway):
    """A sale above the member's balance declines insufficient_points and moves nothing."""
    member = await member_elsewhere(gateway, 500)
    terminal = await gateway.terminal(MERCHANT)
    status, payment, _ = await terminal.pay(member.code(), 1_000)
    assert (201, "declined", "insufficient_points", 500) == (
        status, payment["status"], payment["decline"]["code"], await gateway.balance(member))
    assert (None, None, None) == await batch_counts(gateway, terminal)


async def test_a_reversal_before_the_sale_makes_it_decline_on_the_cluster(gateway: Gateway):
    """Reversal wins: a reversal of an order reference no sale has reached yet makes the later sale decline."""
    member = await member_elsewhere(gateway, 10_000)
    terminal = await gateway.terminal(MERCHANT)
    order_ref = "ord-" + secrets.token_hex(6)
    status, reversed_, _ = await reversal(terminal, order_ref)
    assert (200, "recorded", None) == (status, reversed_["outcome"], reversed_["payment"])
    status, payment, _ = await terminal.pay(member.code(), 1_000, order_ref)
    assert (201, "declined", "reversed", 10_000) == (
        status, payment["status"], payment["decline"]["code"], await gateway.balance(member))


async def test_a_reversal_after_the_sale_gives_the_points_back_on_the_cluster(gateway: Gateway):
    """A reversal of an approved sale gives its points back once, and a retry of the reversal replays it."""
    member = await member_elsewhere(gateway, 10_000)
    terminal = await gateway.terminal(MERCHANT)
    order_ref, key = "ord-" + secrets.token_hex(6), "rev-" + secrets.token_hex(8)
    await terminal.pay(member.code(), 3_000, order_ref)
    status, reversed_, _ = await reversal(terminal, order_ref, key)
    again = await reversal(terminal, order_ref, key)
    assert (200, "reversed", "reversed", 10_000) == (
        status, reversed_["outcome"], reversed_["payment"]["status"], await gateway.balance(member))
    assert (200, "true", "1") == (again[0], again[2].get("idempotent-replayed"), (await batch_counts(gateway, terminal))[2])
    await assert_audit_clean(gateway)


async def test_concurrent_duplicates_of_a_sale_on_the_cluster_move_the_points_once(gateway: Gateway):
    """Twenty duplicates of one sale at once, each freshly signed: one answer is first, every other
    is its bytes replayed (or a retryable 409), and the points move once."""
    member = await member_elsewhere(gateway, 10_000)
    terminal = await gateway.terminal(MERCHANT)
    code, order_ref, key = member.code(), "ord-" + secrets.token_hex(6), "idem-" + secrets.token_hex(8)
    replies = await asyncio.gather(*(sale(terminal, code, 900, order_ref, key) for _ in range(DUPLICATES)))
    answered = [(status, headers["_raw"], headers.get("idempotent-replayed")) for status, document, headers in replies
                if not (status == 409 and document["code"] == "idempotency_in_progress")]
    assert 1 == len([a for a in answered if a[2] is None]), [(status, document.get("code")) for status, document, _ in replies]
    assert {(201, answered[0][1])} == {(status, raw) for status, raw, _ in answered}
    assert (9_100, ("1", "900", None)) == (await gateway.balance(member), await batch_counts(gateway, terminal))
    assert 1 == len(await journal_entries(gateway, member))
    await assert_audit_clean(gateway)


def wait_calls(cluster: EmbeddedCluster, port: int) -> int:
    with cluster.client(cluster.node_by_port(port)) as client:
        return int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


async def test_with_wait_the_claim_and_the_move_are_acknowledged_on_their_own_primaries(
        cluster: EmbeddedCluster, cluster_settings: Settings, cluster_store: Store):
    """With redis_wait_replicas 1 a sale WAITs twice: after its claim on the merchant's primary, after its
    move on the member's (the finish is redone by a retry, so it is not waited for)."""
    settings = dataclasses.replace(cluster_settings, redis_wait_replicas=1, redis_wait_timeout_ms=1000)
    async with serving(settings) as gw:
        member = await member_elsewhere(gw, 10_000)
        terminal = await gw.terminal(MERCHANT)
        store = gw.app[STORE]
        merchant_port = store.redis.get_node_from_key(keyspace.idempotency_key(MERCHANT, "x")).port
        member_port = store.redis.get_node_from_key(keyspace.member_key(member.member_id)).port
        before = (wait_calls(cluster, merchant_port), wait_calls(cluster, member_port))
        status, payment, _ = await terminal.pay(member.code(), 600)
        assert (201, "approved") == (status, payment["status"])
        assert (before[0] + 1, before[1] + 1) == (wait_calls(cluster, merchant_port), wait_calls(cluster, member_port))


# -- a failure between two steps ---------------------------------------------------------------


async def test_a_retry_after_only_the_claim_moves_the_points_once(gateway: Gateway):
    """The claim ran and the gateway died: the terminal's retry moves the payment under the claimed
    payment id, once, and records it once in the batch."""
    member = await member_elsewhere(gateway, 10_000)
    terminal = await gateway.terminal(MERCHANT)
    code, order_ref, key = member.code(), "ord-" + secrets.token_hex(6), "idem-" + secrets.token_hex(8)
    with lost_after(gateway.app[STORE], "pay_claim"):
        lost = await sale(terminal, code, 1_200, order_ref, key)
    assert (503, "storage_unavailable", 10_000) == (lost[0], lost[1]["code"], await gateway.balance(member))
    claimed = await gateway.app[STORE].redis.hgetall(keyspace.idempotency_key(MERCHANT, key))

    status, payment, _ = await sale(terminal, code, 1_200, order_ref, key)
    assert (201, "approved", claimed["payment_id"], 8_800) == (
        status, payment["status"], payment["payment_id"], await gateway.balance(member))
    again = await sale(terminal, code, 1_200, order_ref, key)
    assert (201, payment["payment_id"], "true") == (again[0], again[1]["payment_id"], again[2].get("idempotent-replayed"))
    assert [f"pay:{payment['payment_id']}"] == await journal_entries(gateway, member)
    assert ("1", "1200", None) == await batch_counts(gateway, terminal)
    await assert_audit_clean(gateway)


async def test_a_retry_after_the_claim_and_the_move_finishes_without_moving_again(gateway: Gateway):
    """The claim and the move ran and the gateway died before the finish: the retry answers the moved
    payment, debits nothing more and records the sale in the batch once."""
    member = await member_elsewhere(gateway, 10_000)
    terminal = await gateway.terminal(MERCHANT)
    code, order_ref, key = member.code(), "ord-" + secrets.token_hex(6), "idem-" + secrets.token_hex(8)
    with lost_after(gateway.app[STORE], "pay_move"):
        lost = await sale(terminal, code, 700, order_ref, key)
    assert (503, 9_300, (None, None, None)) == (lost[0], await gateway.balance(member), await batch_counts(gateway, terminal))

    status, payment, _ = await sale(terminal, code, 700, order_ref, key)
    assert (201, "approved", 9_300, 9_300) == (status, payment["status"], payment["balance_after"], await gateway.balance(member))
    assert [f"pay:{payment['payment_id']}"] == await journal_entries(gateway, member)
    assert ("1", "700", None) == await batch_counts(gateway, terminal)
    await assert_audit_clean(gateway)


async def test_a_reversal_after_only_the_claim_stops_the_move_for_ever(gateway: Gateway):
    """A reversal that finds only the sale's claim marks its payment id in the member's scope: the sale's
    retry then declines 'reversed' and the points never move."""
    member = await member_elsewhere(gateway, 10_000)
    terminal = await gateway.terminal(MERCHANT)
    code, order_ref, key = member.code(), "ord-" + secrets.token_hex(6), "idem-" + secrets.token_hex(8)
    with lost_after(gateway.app[STORE], "pay_claim"):
        await sale(terminal, code, 1_000, order_ref, key)
    payment_id = (await gateway.app[STORE].redis.hgetall(keyspace.idempotency_key(MERCHANT, key)))["payment_id"]

    status, reversed_, _ = await reversal(terminal, order_ref)
    assert (200, "recorded", None) == (status, reversed_["outcome"], reversed_["payment"])
    assert "recorded" == await gateway.app[STORE].redis.hget(keyspace.reversal_marker_key(payment_id), "outcome")
    status, payment, _ = await sale(terminal, code, 1_000, order_ref, key)
    assert (201, payment_id, "declined", "reversed", 10_000) == (
        status, payment["payment_id"], payment["status"], payment["decline"]["code"], await gateway.balance(member))
    assert [] == await journal_entries(gateway, member)
    assert (None, None, None) == await batch_counts(gateway, terminal)
    await assert_audit_clean(gateway)


async def test_a_reversal_after_the_move_gives_back_and_the_retry_answers_the_reversed_payment(gateway: Gateway):
    """The claim and the move ran, then the terminal reversed: the points come back once, and the sale's
    retry answers the payment as it now is (reversed), without moving anything."""
    member = await member_elsewhere(gateway, 10_000)
    terminal = await gateway.terminal(MERCHANT)
    code, order_ref, key = member.code(), "ord-" + secrets.token_hex(6), "idem-" + secrets.token_hex(8)
    with lost_after(gateway.app[STORE], "pay_move"):
        await sale(terminal, code, 2_500, order_ref, key)
    assert 7_500 == await gateway.balance(member)

    status, reversed_, _ = await reversal(terminal, order_ref)
    assert (200, "reversed", 10_000) == (status, reversed_["outcome"], await gateway.balance(member))
    status, payment, _ = await sale(terminal, code, 2_500, order_ref, key)
    assert (201, "reversed", 10_000) == (status, payment["status"], await gateway.balance(member))
    payment_id = payment["payment_id"]
    assert [f"pay:{payment_id}", f"reversal:{payment_id}"] == await journal_entries(gateway, member)
    assert ("1", "2500", "1") == await batch_counts(gateway, terminal)
    await assert_audit_clean(gateway)


async def test_a_reversal_lost_after_its_claim_is_completed_by_its_retry(gateway: Gateway):
    """A reversal whose claim ran and whose answer was lost: its retry gives the points back once."""
    member = await member_elsewhere(gateway, 10_000)
    terminal = await gateway.terminal(MERCHANT)
    order_ref, key = "ord-" + secrets.token_hex(6), "rev-" + secrets.token_hex(8)
    await terminal.pay(member.code(), 4_000, order_ref)
    with lost_after(gateway.app[STORE], "reversal_claim"):
        lost = await reversal(terminal, order_ref, key)
    assert (503, 6_000) == (lost[0], await gateway.balance(member))
    status, reversed_, _ = await reversal(terminal, order_ref, key)
    assert (200, "reversed", 10_000) == (status, reversed_["outcome"], await gateway.balance(member))
    assert "1" == (await batch_counts(gateway, terminal))[2]
    await assert_audit_clean(gateway)
