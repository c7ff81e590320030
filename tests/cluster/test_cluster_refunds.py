"""Cancels and refunds on a real 3+3 Redis Cluster through the HTTP API, and a partner network's
member paying at our merchant: the store runs each as its steps over one slot each (DESIGN.md 6a,
docs/payment-steps.md), the member's partition on another primary than the merchant's, and a
failure between two steps is completed by the terminal's retry with the points moved once."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from pathlib import Path

import pytest

from gateway import codes, keyspace
from gateway.app import STORE
from gateway.audit import run_audit
from gateway.embedded_cluster import EmbeddedCluster
from gateway.settings import Settings
from gateway.store import Store
from simulators import partner as partner_simulator
from tests.cluster import test_cluster_payments
from tests.cluster.test_cluster_payments import (
    assert_audit_clean, member_elsewhere, wait_calls,
)
from tests.e2e.conftest import Gateway, Member, Networks, serving, serving_networks
from tests.e2e.pay_steps import (
    MERCHANT, batch_counts, batch_fields, cancel, held_before, journal_entries, lost_in_steps, one_answer, refund, sale,
    scripts_run,
)
from tests.e2e.test_pay_steps import LEASE_PASSED_MS, assert_both_books_clean, home_position, later

pytestmark = pytest.mark.cluster

gateway = test_cluster_payments.gateway
"""Our gateway served on the cluster, merchants.toml loaded (a fixture)."""
DUPLICATES = 10
HELD_S = 0.3
"""How long a move waits for its duplicates' claims on the cluster (held_before)."""


async def paid(gw: Gateway, points: int, amount: int) -> tuple[Member, object, str]:
    """A member on another primary than the merchant's, the terminal, and the member's approved sale."""
    member = await member_elsewhere(gw, points)
    terminal = await gw.terminal(MERCHANT)
    status, payment, _ = await terminal.pay(member.code(), amount)
    assert (201, "approved") == (status, payment["status"])
    return member, terminal, payment["payment_id"]


def idem() -> str:
    return "idem-" + secrets.token_hex(8)


async def test_a_cancel_on_the_cluster_is_three_steps_and_gives_the_points_back_once(gateway: Gateway):
    """A cancel on the cluster is sent as cancel_claim, cancel_move and cancel_finish; the points come back once,
    one void is in the batch, and its retry replays it."""
    member, terminal, payment_id = await paid(gateway, 10_000, 3_000)
    key = idem()
    with scripts_run(gateway.app[STORE]) as names:
        status, cancelled, _ = await cancel(terminal, payment_id, key)
    again = await cancel(terminal, payment_id, key)
    assert ["cancel_claim", "cancel_move", "cancel_finish"] == names
    assert (200, "cancelled", 10_000, 10_000) == (status, cancelled["status"], cancelled["balance_after"],
                                                  await gateway.balance(member))
    assert (200, "true", ("1", "3000", "1")) == (again[0], again[2].get("idempotent-replayed"),
                                                 await batch_counts(gateway, terminal))
    await assert_audit_clean(gateway)


async def test_a_partial_then_the_last_refund_on_the_cluster_give_back_what_was_paid(gateway: Gateway):
    """1,000 then 2,000 of a 3,000 sale refunded on the cluster: partially refunded, then refunded with all the
    points back; a further refund is refused and moves nothing."""
    member, terminal, payment_id = await paid(gateway, 10_000, 3_000)
    with scripts_run(gateway.app[STORE]) as names:
        first = await refund(terminal, payment_id, 1_000)
    last = await refund(terminal, payment_id, 2_000)
    more = await refund(terminal, payment_id, 1)
    assert ["refund_claim", "refund_move", "refund_finish"] == names
    assert ((201, "partially_refunded", 8_000), (201, "refunded", 10_000)) == (
        (first[0], first[1]["payment"]["status"], first[1]["refund"]["balance_after"]),
        (last[0], last[1]["payment"]["status"], last[1]["refund"]["balance_after"]))
    assert ((409, "invalid_state"), 10_000) == ((more[0], more[1]["code"]), await gateway.balance(member))
    assert ("2", "3000") == await batch_fields(gateway, terminal, "refund_count", "refund_amount")
    await assert_audit_clean(gateway)


@pytest.mark.parametrize("step", ["cancel_claim", "cancel_move", "cancel_finish"])
async def test_a_cancel_lost_after_a_step_on_the_cluster_is_completed_once_by_its_retry(gateway: Gateway, step: str):
    """A cancel whose connection is lost after a step: the retry answers it cancelled, the points came back
    once, one void in the batch."""
    member, terminal, payment_id = await paid(gateway, 10_000, 2_500)
    key = idem()
    await lost_in_steps(gateway.app[STORE], step, cancel(terminal, payment_id, key))
    status, cancelled, _ = await cancel(terminal, payment_id, key)
    assert (200, "cancelled", 10_000) == (status, cancelled["status"], await gateway.balance(member))
    assert [f"pay:{payment_id}", f"cancel:{payment_id}"] == await journal_entries(gateway, member)
    assert "1" == (await batch_counts(gateway, terminal))[2]
    await assert_audit_clean(gateway)


@pytest.mark.parametrize("step", ["refund_claim", "refund_move", "refund_finish"])
async def test_a_refund_lost_after_a_step_on_the_cluster_is_completed_once_by_its_retry(gateway: Gateway, step: str):
    """A refund of 700 lost after a step: the retry answers one refund of 700, the one on the payment, given
    back once and counted once."""
    member, terminal, payment_id = await paid(gateway, 10_000, 2_500)
    key = idem()
    await lost_in_steps(gateway.app[STORE], step, refund(terminal, payment_id, 700, key))
    status, refunded, _ = await refund(terminal, payment_id, 700, key)
    _, fetched, _ = await terminal.send("GET", f"/v1/payments/{payment_id}")
    refund_id = refunded["refund"]["refund_id"]
    assert (201, 700, 8_200) == (status, refunded["refund"]["amount"], await gateway.balance(member))
    assert ([refund_id], [f"pay:{payment_id}", f"refund:{refund_id}"]) == (
        [r["refund_id"] for r in fetched["refunds"]], await journal_entries(gateway, member))
    assert ("1", "700") == await batch_fields(gateway, terminal, "refund_count", "refund_amount")
    await assert_audit_clean(gateway)


async def test_concurrent_duplicates_of_a_refund_on_the_cluster_refund_once(gateway: Gateway):
    """Ten duplicates of one refund at once, all past the claim before any moves: one refund, every answer its
    bytes."""
    member, terminal, payment_id = await paid(gateway, 10_000, 3_000)
    key = idem()
    with held_before(gateway.app[STORE], "refund_move", HELD_S):
        refunded = one_answer(await asyncio.gather(*(refund(terminal, payment_id, 500, key) for _ in range(DUPLICATES))))
    _, fetched, _ = await terminal.send("GET", f"/v1/payments/{payment_id}")
    assert ([refunded["refund"]["refund_id"]], 7_500) == ([r["refund_id"] for r in fetched["refunds"]],
                                                          await gateway.balance(member))
    await assert_audit_clean(gateway)


async def test_a_cancel_racing_a_refund_on_the_cluster_lets_one_of_them_move(gateway: Gateway):
    """A cancel and a refund of one payment at once on the cluster: exactly one applies, the other is refused
    invalid_state, and the member's balance shows the one that applied."""
    member, terminal, payment_id = await paid(gateway, 10_000, 3_000)
    cancelled, refunded = await asyncio.gather(cancel(terminal, payment_id), refund(terminal, payment_id, 1_000))
    won = "cancel" if cancelled[0] == 200 else "refund"
    refused = refunded if won == "cancel" else cancelled
    assert ({"cancel": (200, 409), "refund": (409, 201)}[won], "invalid_state") == (
        (cancelled[0], refunded[0]), refused[1]["code"])
    assert {"cancel": 10_000, "refund": 8_000}[won] == await gateway.balance(member)
    await assert_audit_clean(gateway)


async def test_with_wait_a_refund_is_acknowledged_only_after_its_move(cluster: EmbeddedCluster,
                                                                     cluster_settings: Settings, cluster_store: Store):
    """With redis_wait_replicas 1 a refund WAITs once, on the member's primary after its move: its claim and
    its finish are not waited for (a retry that lost either gets the move's recorded answer)."""
    settings = dataclasses.replace(cluster_settings, redis_wait_replicas=1, redis_wait_timeout_ms=1000)
    async with serving(settings) as gw:
        member, terminal, payment_id = await paid(gw, 10_000, 3_000)
        store = gw.app[STORE]
        merchant_port = store.redis.get_node_from_key(keyspace.idempotency_key(MERCHANT, "x")).port
        member_port = store.redis.get_node_from_key(keyspace.member_key(member.member_id)).port
        before = (wait_calls(cluster, merchant_port), wait_calls(cluster, member_port))
        status, _, _ = await refund(terminal, payment_id, 1_000)
        assert (201, before[0], before[1] + 1) == (status, wait_calls(cluster, merchant_port),
                                                   wait_calls(cluster, member_port))


# -- a partner network's member at our merchant, our side on the cluster ------------------------


@pytest.fixture
async def cluster_networks(cluster_settings: Settings, cluster_store: Store, redis_server, tmp_path: Path):
    """Our gateway on the cluster and Taishin (pointgate under Taishin's configuration) on a single Redis,
    keys exchanged."""
    async with serving_networks(cluster_settings, redis_server.url[:-1] + "1", partner_simulator.TAISHIN,
                                tmp_path) as running:
        yield running


async def taishin_member_elsewhere(networks: Networks, points: int) -> Member:
    """A Taishin member whose code's partition (where our record of its payment lives) is on another primary
    than the merchant scope's."""
    store = networks.home.app[STORE]
    merchant_node = store.redis.get_node_from_key(keyspace.idempotency_key(MERCHANT, "x")).name
    for _ in range(test_cluster_payments.MEMBER_DRAWS_MAX):
        member = await networks.taishin.member(points)
        tag = keyspace.partition_tag(codes.partition_of_slot(member.phone.slot))
        if store.redis.get_node_from_key(f"{tag}:x").name != merchant_node:
            return member
    raise AssertionError(f"{test_cluster_payments.MEMBER_DRAWS_MAX} members all landed on the merchant's primary")


async def test_a_partner_members_sale_refund_and_cancel_on_the_cluster(cluster_networks: Networks):
    """A Taishin member pays 1,000 KRW at GS25 twice (each sale claimed, placed, then decided: four steps), GS25
    refunds 400 of the first and cancels the second: Taishin's member has 24 - 9 = 15 TSP taken in the end, and
    Taishin owes us, and we owe GS25, 600."""
    networks = cluster_networks
    gs25, member = await networks.home.terminal(), await taishin_member_elsewhere(networks, 1_000)
    with scripts_run(networks.home.app[STORE]) as names:
        status, first, _ = await gs25.pay(member.code(), 1_000)
    assert ["outbound_claim_request", "outbound_claim_payment", "outbound_finish_payment",
            "outbound_finish_request"] == names
    refunded = await refund(gs25, first["payment_id"], 400)
    _, second, _ = await gs25.pay(member.code(), 1_000)
    cancelled = await cancel(gs25, second["payment_id"])
    assert ((201, "approved"), (201, "partially_refunded"), (200, "cancelled")) == (
        (status, first["status"]), (refunded[0], refunded[1]["payment"]["status"]),
        (cancelled[0], cancelled[1]["status"]))
    assert 976 + 9 == await networks.taishin.balance(member)
    assert (-600, 600) == home_position((await run_audit(networks.home.app[STORE])).totals_by_unit())
    await assert_both_books_clean(networks)


async def test_a_partner_members_sale_lost_after_its_decision_on_the_cluster_is_finished_by_its_retry(
        cluster_networks: Networks):
    """Taishin approved and our payment was decided, then the connection was lost before the finish: the retry
    (after the lease) finishes it approved without asking Taishin again; its member paid once, one sale in the batch."""
    networks = cluster_networks
    gs25, member = await networks.home.terminal(), await taishin_member_elsewhere(networks, 1_000)
    code, order_ref, key = member.code(), "ord-" + secrets.token_hex(6), idem()
    await lost_in_steps(networks.home.app[STORE], "outbound_finish_payment", sale(gs25, code, 1_000, order_ref, key))
    assert [("POST", "/v1/interop/payments")] == [(e.method, e.path) for e in networks.proxy.stats.log]
    networks.proxy.stats.clear()
    with later(networks, LEASE_PASSED_MS):
        status, payment, _ = await sale(gs25, code, 1_000, order_ref, key)
    assert (201, "approved", 976) == (status, payment["status"], await networks.taishin.balance(member))
    assert [] == [(e.method, e.path) for e in networks.proxy.stats.log]  # Taishin was not asked again
    assert ("1", "1000") == (await batch_counts(networks.home, gs25))[:2]
    await assert_both_books_clean(networks)


async def test_a_partner_members_refund_lost_after_its_move_on_the_cluster_is_completed_once(
        cluster_networks: Networks):
    """A refund of 400 of a Taishin member's sale, lost after its move on our books: the retry answers that
    refund without asking Taishin again, and both sides moved it once."""
    networks = cluster_networks
    gs25, member = await networks.home.terminal(), await taishin_member_elsewhere(networks, 1_000)
    _, payment, _ = await gs25.pay(member.code(), 1_000)
    key = idem()
    await lost_in_steps(networks.home.app[STORE], "outbound_adjust_move", refund(gs25, payment["payment_id"], 400, key))
    status, refunded, _ = await refund(gs25, payment["payment_id"], 400, key)
    assert (201, "partially_refunded", 976 + 9) == (status, refunded["payment"]["status"],
                                                   await networks.taishin.balance(member))
    assert (-600, 600) == home_position((await run_audit(networks.home.app[STORE])).totals_by_unit())
    assert ("1", "400") == await batch_fields(networks.home, gs25, "refund_count", "refund_amount")
    await assert_both_books_clean(networks)
