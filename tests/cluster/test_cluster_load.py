"""The load generator on the 3+3 cluster through `gateway serve --workers 2`, with its end-of-run
checks, and a primary killed in the middle of a run with WAIT on: nothing acknowledged is lost.

Two short rounds of simulators/cluster_failover.py, each shared by the tests that read its figures:
one steady (WAIT off, the default), one where the primary of GS25's scope is SIGKILLed while the
sales are sent, with `redis_wait_replicas` 1. `make failover` runs the long version, WAIT on and off.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway import keyspace
from gateway.audit import AuditReport, run_audit
from gateway.embedded_cluster import EmbeddedCluster
from gateway.settings import Settings, load_settings
from gateway.store import Store
from simulators.cluster_failover import (
    FailoverOptions, approvals, cluster_env, cluster_gateway, cluster_round, load_merchants,
)
from simulators.load import FollowUpObservation, GatewayPayment, Observations, SaleObservation

pytestmark = pytest.mark.cluster

SHORT = dict(steady_s=4.0, round_s=8.0, kill_at_s=2.0, rate_per_s=15.0, terminals=4, members=40, deadline_s=8.0,
             progress=False)


@dataclass
class Round:
    figures: dict
    audit: AuditReport
    """`run_audit` right after the round, on a client of the whole cluster."""
    primaries_of_members: set[int]
    """Ports of the primaries that hold the audited members' wallets."""
    wait_calls: int
    """WAIT commands the nodes ran during the round, at least (a restarted node counts from its restart)."""


def wait_calls(cluster: EmbeddedCluster) -> dict[int, int]:
    """WAIT commands each running node has run since it started, by port."""
    calls = {}
    for node in cluster.nodes:
        if node.running:
            with cluster.client(node) as client:
                calls[node.port] = int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
    return calls


def waits_since(before: dict[int, int], after: dict[int, int]) -> int:
    return sum(n - before.get(port, 0) if n >= before.get(port, 0) else n for port, n in after.items())


def cluster_settings_of(cluster: EmbeddedCluster, run_dir: Path) -> Settings:
    return load_settings(env=cluster_env(cluster, run_dir, 0, 500))


async def cluster_store(settings: Settings) -> Store:
    store = Store.from_settings(settings, "", max_connections=16)
    await store.redis.initialize()
    return store


async def one_round(cluster: EmbeddedCluster, run_dir: Path, wait_replicas: int, failover: bool) -> Round:
    cluster.wait_healthy()
    options = FailoverOptions(**SHORT, var_dir=str(run_dir), report_path="")
    settings = cluster_settings_of(cluster, run_dir)
    store = await cluster_store(settings)
    try:
        await store.redis.flushall()
        await store.load_scripts()
        await load_merchants(store, settings)
        waits_before = wait_calls(cluster)
        async with cluster_gateway(cluster, run_dir, wait_replicas, options) as gateway:
            figures = await cluster_round(cluster, gateway, options, run_dir / "round", 1, failover)
        waits = waits_since(waits_before, wait_calls(cluster))
    finally:
        await store.close()
    store = await cluster_store(settings)  # a client that never met the killed primary
    try:
        audit = await run_audit(store)
        members = {account.split(":")[1] for account, _ in audit.balances if account.startswith("member:")}
        ports = {store.redis.get_node_from_key(keyspace.member_key(m)).port for m in members}
    finally:
        await store.close()
    return Round(figures, audit, ports, waits)


@pytest.fixture(scope="module")
async def steady(cluster: EmbeddedCluster, tmp_path_factory: pytest.TempPathFactory) -> Round:
    return await one_round(cluster, tmp_path_factory.mktemp("cluster-steady"), wait_replicas=0, failover=False)


@pytest.fixture(scope="module")
async def failover(cluster: EmbeddedCluster, tmp_path_factory: pytest.TempPathFactory) -> Round:
    return await one_round(cluster, tmp_path_factory.mktemp("cluster-failover"), wait_replicas=1, failover=True)


# -- steady: two workers on the cluster ---------------------------------------------------------


@pytest.mark.slow
def test_a_load_run_through_two_workers_passes_every_load_check(steady: Round):
    """Sales, reversals and declining codes from 4 terminals through 2 workers: the load's five checks pass."""
    assert ({"codes_approved_once": True, "sales_resolved": True, "points_conserved": True,
             "approvals_recorded_once": True, "audit_clean": True}, 0) == (
        steady.figures["load_checks"], len(steady.figures["gateway_unplanned_exits"]))


@pytest.mark.slow
def test_with_the_wait_option_off_no_node_runs_wait(steady: Round):
    """WAIT off (the default): the round's sales and reversals are their scripts alone, no WAIT on any node."""
    assert (0, True) == (steady.wait_calls, steady.figures["acknowledged"] > 0)


@pytest.mark.slow
def test_approved_payments_in_the_gateway_equal_the_acknowledged_approvals(steady: Round):
    """The round's approved payments in the gateway are the sales the terminals saw approved, less those they reversed."""
    f = steady.figures
    assert f["acknowledged"] > 0
    assert f["acknowledged"] - f["reversed_after"] == f["approved_in_gateway"]


@pytest.mark.slow
def test_gateway_audit_reads_every_primary_and_every_balance_equals_its_journal(steady: Round):
    """`gateway audit` on the cluster exits 0, and the audit found every member, whose wallets span all three primaries."""
    assert (True, [], SHORT["members"], 3) == (steady.figures["audit_clean"], steady.audit.problems,
                                               steady.audit.members, len(steady.primaries_of_members))


# -- a primary killed mid-run, WAIT on ----------------------------------------------------------


@pytest.mark.slow
def test_with_wait_no_acknowledged_sale_is_lost_when_a_primary_dies(failover: Round):
    """With redis_wait_replicas 1 (the primaries ran WAIT), every sale a terminal saw approved is in the
    cluster after its primary died."""
    f = failover.figures
    assert f["acknowledged"] > 0 and failover.wait_calls > 0
    assert (0, 0, True) == (f["acknowledged_lost"], f["applied_twice"], f["approvals_equal"])


@pytest.mark.slow
def test_the_replica_takes_over_and_the_terminals_ride_out_the_failover(failover: Round):
    """The killed primary's replica is promoted; the terminals met retryable errors meanwhile, retried,
    and every sale still resolved, every load check passed and the audit is clean."""
    f = failover.figures
    assert f["promoted_port"] != f["killed_port"]
    assert f["terminal_errors"] > 0
    assert (True, True, []) == (f["load_passed"], f["audit_clean"], failover.audit.problems)


# -- the approvals count, pure --------------------------------------------------------------------


def observed(*views: GatewayPayment | None, reversed_ids: tuple[str, ...] = ()) -> Observations:
    """Two sales the terminals saw approved (pay_1, pay_2); `views` is what the gateway holds under
    their order references; `reversed_ids` the approvals a terminal then reversed."""
    sales = [SaleObservation(i, "sale", "gs25/s/t1", "gs25", "m", f"c{i}", f"o{i}", 1_000, f"k{i}", "approved", "",
                             f"pay_{i}", 1_000) for i in (1, 2)]
    follow_ups = [FollowUpObservation(9, "reversal", "gs25/s/t1", "gs25", p, "o", "gs25", 0, "k9", "reversed")
                  for p in reversed_ids]
    return Observations(sales=sales, follow_ups=follow_ups,
                        by_order_ref={f"gs25/o{i}": view for i, view in enumerate(views, start=1)})


def payment(payment_id: str, status: str = "approved") -> GatewayPayment:
    return GatewayPayment(payment_id, "gs25", "o", status, 1_000, 0, True)


def test_the_acknowledged_approvals_equal_the_gateways_approved_payments():
    """Two approvals, one then reversed: the gateway holding one approved and one reversed payment is equal."""
    counted = approvals(observed(payment("pay_1"), payment("pay_2", "reversed"), reversed_ids=("pay_2",)))
    assert (2, 1, 1, True) == (counted.acknowledged, counted.reversed_after, counted.approved_in_gateway, counted.equal)


def test_an_acknowledged_approval_missing_from_the_gateway_is_unequal():
    """The gateway holding nothing under one approved sale's order makes the counts differ."""
    counted = approvals(observed(payment("pay_1"), None))
    assert (2, 1, False) == (counted.acknowledged, counted.approved_in_gateway, counted.equal)
