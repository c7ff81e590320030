"""`simulators cluster-failover`: the load on a Redis Cluster through two gateway workers, a primary killed mid-run.

A round is one `simulators load` run (open loop, sales and reversals and the
declining kinds of sale: replayed, expired and over-balance codes) from 8
store terminals against `gateway serve --workers 2` on the embedded cluster
(gateway/embedded_cluster.py: 3 primaries, 3 replicas, node timeout 1 s).
The gateway is supervised as the soak supervises it (simulators/soak.py's
`GatewayProcess`). In a failover round, while the sales are being sent, the
primary that holds the first merchant's scope (every GS25 sale's claim and
finish, and a third of the members' moves) is SIGKILLed
(`EmbeddedCluster.kill_primary`); its replica is promoted about two node
timeouts later. Meanwhile the requests that reach that shard answer 503 and
the terminals send them again with their idempotency keys (or reverse the
sale, past their deadline). After every round:

    load checks        the load's five (simulators/load.py), over the terminals' and the gateway's records
    approvals          the round's approved payments in the gateway (status approved, found by order
                       reference) = the sales the terminals saw approved, less those they then reversed
    acknowledged_lost  sales a terminal saw approved whose approved payment record or journal debit is
                       missing from the cluster (soak.find_acknowledged_lost, read from every primary)
    applied_twice      an order debited twice, a payment with two entries of a kind (soak.find_applied_twice)
    audit_clean        `gateway audit` on the cluster exits 0: every member's balance equals its journal
                       replay, every unit sums to zero

`simulators cluster-failover` runs, with the WAIT option on
(`redis_wait_replicas` 1) and off, steady rounds (no failover; alternating
on and off, for the latency WAIT costs, as a ratio) and then one failover
round each, and writes var/cluster/report.json and a table. With WAIT on
no acknowledged sale may be lost; with it off the loss is measured, not
required to be zero (on loopback a replica is rarely more than a
millisecond behind).

The merchants, stores, terminals and affiliates are merchants.toml's and
affiliates.toml's, loaded by the merchant registry (`load_merchants`), the
load's extra terminals added through it, and members get their points
through the earnings API, as on one Redis.

Errors::

    Exception
     └── FailoverError    the cluster or the gateway could not be set up; `main` exits 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Mapping, Sequence

from gateway import keyspace
from gateway.audit import run_audit
from gateway.embedded_cluster import EmbeddedCluster, EmbeddedClusterError
from gateway.embedded_redis import EmbeddedRedis, free_port
from gateway.keyring import Keyring
from gateway.merchants import MerchantRegistry
from gateway.settings import Settings, load_settings
from gateway.store import Store
from simulators import load, soak

__all__ = ["ClusterAdmin", "ClusterGateway", "FailoverError", "FailoverOptions", "approvals",
           "cluster_env", "cluster_gateway", "cluster_round", "main", "load_merchants", "render", "run_failover"]

MIX: tuple[tuple[str, float], ...] = load.DEFAULT_MIX
"""The load's whole mix: sales, reversals, cancels, refunds and the codes that decline."""
APPROVED_STATES = ("approved", "partially_refunded", "refunded", "cancelled")
"""A payment's states after its approval other than reversed (what a cancel or refund leaves; the
load's own checks hold each payment's state against what its terminal saw)."""
GATEWAY_REDIS_TIMEOUT_S = 2  # POINTGATE_REDIS_SOCKET_TIMEOUT_S: a dead node costs a request 2 s at most, not 5
GATEWAY_GRACE_S = 1
ADMIN_CONNECTIONS_MAX = 32  # per node


class FailoverError(Exception):
    """The cluster or the gateway could not be set up; nothing was measured."""


@dataclass(frozen=True)
class FailoverOptions:
    """Defaults: `simulators cluster-failover` (`make failover`), about two and a half minutes on a 2-core machine."""

    round_s: float = 20.0
    """Seconds of sending in a failover round."""
    kill_at_s: float = 5.0
    """When the primary is killed, seconds after the round's first operation."""
    steady_s: float = 8.0
    """Seconds of sending in a steady round (no failover)."""
    steady_rounds: int = 2
    """Steady rounds per WAIT setting, alternating off and on; the WAIT cost is the ratio of their medians."""
    rate_per_s: float = 30.0
    terminals: int = 8
    members: int = 100  # 30/s for 20 s is about 10 codes a member: one 30 s step's worth
    workers: int = 2
    deadline_s: float = 10.0
    """The terminals' unknown-outcome deadline: well past a failover (2-3 s here), so sales ride it out."""
    wait_timeout_ms: int = 500
    seed: int = 1
    var_dir: str = "var/cluster"
    report_path: str = "var/cluster/report.json"
    config_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        checks = (
            (0 < self.kill_at_s < self.round_s, "the kill must fall inside the failover round"),
            (self.steady_s > 0 and self.steady_rounds >= 1, "steady rounds: at least one, of positive length"),
            (1 <= self.workers <= 16, "workers must be 1-16"),
            (1 <= self.wait_timeout_ms < GATEWAY_REDIS_TIMEOUT_S * 1000,
             f"wait_timeout_ms must be 1-{GATEWAY_REDIS_TIMEOUT_S * 1000 - 1} (below the gateway's Redis timeout)"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.load_options(Path(self.var_dir), "http://127.0.0.1:1", self.round_s, 0)  # the load's own validation

    def load_options(self, round_dir: Path, base_url: str, seconds: float, round_no: int) -> load.Options:
        return load.Options(
            base_url=base_url, config_dir=self.config_dir, terminals=self.terminals, members=self.members,
            rate_per_s=self.rate_per_s, seconds=seconds, mix=MIX, seed=self.seed * 1000 + round_no,
            deadline_s=self.deadline_s, progress=False, report_path=str(round_dir / "load-report.json"),
            var_dir=str(round_dir))

    def public(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"mix": dict(MIX)}


async def load_merchants(store: Store, settings: Settings) -> None:
    """merchants.toml's merchants, stores and terminals and affiliates.toml's affiliates, by the registry."""
    await MerchantRegistry(store, Keyring.load(settings.keyring_path)).load_config(settings)


class ClusterAdmin:
    """The load's `Admin` on the cluster: signing keys and terminals through the merchant registry,
    the audit over every primary.

    Each call opens a client of its own: a client that met the killed primary has failed its
    command (the store never retries) and would fail the next until it read the slot map again; a
    fresh one reads it first."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @contextlib.asynccontextmanager
    async def _store(self) -> AsyncIterator[Store]:
        store = Store.from_settings(self.settings, "", max_connections=ADMIN_CONNECTIONS_MAX)
        try:
            yield store
        finally:
            await store.close()

    def _registry(self, store: Store) -> MerchantRegistry:
        return MerchantRegistry(store, Keyring.load(self.settings.keyring_path, create=False))

    async def issue_key(self, merchant_id: str) -> tuple[str, str]:
        async with self._store() as store:
            issued = await self._registry(store).issue_key(merchant_id)
            return issued.key_id, issued.secret

    async def revoke_key(self, merchant_id: str, key_id: str) -> None:
        async with self._store() as store:
            await self._registry(store).revoke_key(merchant_id, key_id)

    async def add_terminal(self, merchant_id: str, store_id: str, terminal_id: str) -> None:
        async with self._store() as store:
            await self._registry(store).add_terminal(merchant_id, store_id, terminal_id)

    async def audit(self) -> load.AuditSnapshot:
        async with self._store() as store:
            report = await run_audit(store)
        return load.AuditSnapshot(report.totals_by_unit(), tuple(report.problems), report.entries)

    async def books(self, obs: load.Observations) -> soak.Books:
        async with self._store() as store:
            return await soak.read_books_with(store.redis, obs)

    async def close(self) -> None:
        pass  # every call closed its own client


# ---------------------------------------------------------------------------
# The gateway on the cluster, and one round.


@dataclass
class ClusterGateway:
    """`gateway serve` on the cluster, and the environment and settings it runs with."""

    process: soak.GatewayProcess
    env: dict[str, str]
    settings: Settings
    wait_replicas: int

    @property
    def url(self) -> str:
        return self.process.url


def cluster_env(cluster: EmbeddedCluster, run_dir: Path, wait_replicas: int, wait_timeout_ms: int) -> dict[str, str]:
    """The environment of the gateway and `gateway audit`: the cluster's nodes, never REDIS_URL."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return env | {
        "POINTGATE_REDIS_CLUSTER_NODES": ",".join(cluster.startup_nodes),
        "POINTGATE_REDIS_WAIT_REPLICAS": str(wait_replicas),
        "POINTGATE_REDIS_WAIT_TIMEOUT_MS": str(wait_timeout_ms),
        "POINTGATE_REDIS_SOCKET_TIMEOUT_S": str(GATEWAY_REDIS_TIMEOUT_S),
        "POINTGATE_SHUTDOWN_GRACE_S": str(GATEWAY_GRACE_S),
        "POINTGATE_KEYRING_PATH": str(run_dir / "keyring.json"),
        "POINTGATE_DATA_DIR": str(run_dir / "redis"),
        "POINTGATE_SETTLEMENTS_DIR": str(run_dir / "settlements"),
    }


@contextlib.asynccontextmanager
async def cluster_gateway(cluster: EmbeddedCluster, run_dir: Path, wait_replicas: int, options: FailoverOptions,
                          name: str = "gateway") -> AsyncIterator[ClusterGateway]:
    """`gateway serve --workers N` on the cluster with WAIT `wait_replicas`, supervised, until left.
    The cluster must hold the merchants already (`load_merchants`)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = cluster_env(cluster, run_dir, wait_replicas, options.wait_timeout_ms)
    settings = load_settings(options.config_dir, env=env)
    Keyring.load(settings.keyring_path)  # created here, before the gateway and the harness both read it
    process = soak.GatewayProcess(free_port(), options.workers, env, run_dir / f"{name}.log", options.config_dir)
    process.start()
    try:
        await process.wait_ready()
        yield ClusterGateway(process, env, settings, wait_replicas)
    finally:
        await process.stop()


def merchant_primary(cluster: EmbeddedCluster, merchant_id: str) -> EmbeddedRedis:
    """The primary that owns the merchant's scope (its hash tag's slot) now."""
    key = keyspace.merchant_key(merchant_id)
    with cluster.client(cluster.primaries()[0]) as client:
        slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
        for low, high, owner, *_replicas in client.execute_command("CLUSTER", "SLOTS"):
            if int(low) <= slot <= int(high):
                return cluster.node_by_port(int(owner[1]))
    raise FailoverError(f"no primary owns slot {slot} ({key})")


async def revive(cluster: EmbeddedCluster, node: EmbeddedRedis) -> None:
    """Start a killed node again and wait until the cluster is whole. Spawned on the event loop's
    thread: a child's parent-death signal follows the thread that spawned it (EmbeddedRedis.launch)."""
    node.launch()
    await asyncio.to_thread(cluster.revive, node)


@dataclass(frozen=True)
class Approvals:
    acknowledged: int
    """Sales the terminals saw approved."""
    reversed_after: int
    """Of those, reversed by a terminal's reversal follow-up that it saw done."""
    approved_in_gateway: int
    """Distinct payments in the gateway approved (and maybe since cancelled or refunded, APPROVED_STATES),
    found by the round's order references."""

    @property
    def equal(self) -> bool:
        return self.approved_in_gateway == self.acknowledged - self.reversed_after


def approvals(obs: load.Observations) -> Approvals:
    """The acknowledged approvals against the gateway's approved payments (pure)."""
    acknowledged = {s.payment_id for s in obs.sales if s.outcome == "approved"}
    reversed_after = {f.payment_id for f in obs.follow_ups
                      if f.kind == "reversal" and f.outcome == "reversed" and f.payment_id in acknowledged}
    in_gateway = {v.payment_id for v in obs.by_order_ref.values() if v is not None and v.status in APPROVED_STATES}
    return Approvals(len(acknowledged), len(reversed_after), len(in_gateway))


async def cluster_round(cluster: EmbeddedCluster, gateway: ClusterGateway, options: FailoverOptions, round_dir: Path,
                        round_no: int, failover: bool, say: Any = None) -> dict[str, Any]:
    """One load run through `gateway`; with `failover`, the first merchant's primary is killed at
    `kill_at_s` and revived once the books are read. Returns the round's figures."""
    say = say or (lambda line: None)
    seconds = options.round_s if failover else options.steady_s
    load_options = options.load_options(round_dir, gateway.url, seconds, round_no)
    admin = ClusterAdmin(gateway.settings)
    loop = asyncio.get_running_loop()
    struck: dict[str, Any] = {}

    async def strike() -> None:
        await asyncio.sleep(load.START_DELAY_S + options.kill_at_s)
        victim = merchant_primary(cluster, load_options.merchants[0])
        struck["node"], struck["at"] = victim, loop.time()
        promoted = await asyncio.to_thread(cluster.kill_primary, victim)
        struck["promoted_at"], struck["promoted_port"] = loop.time(), promoted.port
        # Its supervisor starts the crashed node again at once; it rejoins as the promoted node's
        # replica. Until then that shard has no replica, so with WAIT on its movements time out.
        await revive(cluster, victim)
        struck["revived_at"] = loop.time()

    @contextlib.asynccontextmanager
    async def around_drive() -> AsyncIterator[None]:
        task = asyncio.create_task(strike()) if failover else None
        try:
            yield
        finally:
            if task is not None:
                await task  # a failover still in progress is waited for: the end phase needs the cluster whole

    say(f"round {round_no}: {seconds:g} s at {options.rate_per_s:g}/s, WAIT {gateway.wait_replicas}"
        + (f", primary killed at {options.kill_at_s:g} s" if failover else ""))
    started = time.monotonic()
    try:
        report = await load.run_load(load_options, admin, around_drive=around_drive)
        obs = report.observations
        assert obs is not None
        books = await admin.books(obs)
        audit_clean, audit_line = await soak.gateway_audit_with(gateway.env, options.config_dir)
    finally:
        await admin.close()
        if "node" in struck and "revived_at" not in struck:
            await revive(cluster, struck["node"])  # the strike failed half way: leave the cluster whole
    counted = approvals(obs)
    lost = soak.find_acknowledged_lost(obs, books)
    twice = soak.find_applied_twice(obs, books)
    attempts = report.attempts
    figures: dict[str, Any] = {
        "round": round_no,
        "wait_replicas": gateway.wait_replicas,
        "failover": failover,
        "requests": int(report.latency_ms["all"]["count"]),
        "acknowledged": counted.acknowledged,
        "reversed_after": counted.reversed_after,
        "approved_in_gateway": counted.approved_in_gateway,
        "approvals_equal": counted.equal,
        "acknowledged_lost": len(lost),
        "applied_twice": len(twice),
        "audit_clean": audit_clean,
        "audit": audit_line,
        "load_checks": {c.name: c.passed for c in report.checks},
        "load_passed": report.passed,
        "terminal_attempts": attempts.total,
        "terminal_errors": attempts.retryable,
        "terminal_errors_by_kind": dict(sorted(attempts.errors.items())),
        "sale_outcomes": dict(report.outcomes.get("sale", {})),
        "latency_ms": report.latency_ms.get("sale", report.latency_ms["all"]),
        "throughput_per_s": report.throughput_per_s,
        "duration_s": round(time.monotonic() - started, 1),
        "violations": ([f"lost: {v}" for v in lost] + [f"applied twice: {v}" for v in twice]
                       + [f"{c.name}: {v}" for c in report.checks for v in c.violations])[:soak.VIOLATIONS_LISTED_MAX],
        "gateway_unplanned_exits": list(gateway.process.unplanned_exits),
    }
    if failover:
        promoted_s = struck["promoted_at"] - struck["at"]
        last = attempts.last_retryable_at
        figures |= {
            "killed_port": struck["node"].port,
            "promoted_port": struck["promoted_port"],
            "failover_s": round(promoted_s, 2),
            "replica_back_s": round(struck["revived_at"] - struck["at"], 2),
            "terminal_errors_until_s": None if last is None else round(last - struck["at"], 2),
        }
    figures["passed"] = (report.passed and counted.equal and not lost and not twice and audit_clean)
    say(f"round {round_no}: {figures['requests']} requests, {counted.acknowledged} acknowledged, lost {len(lost)}, "
        f"{attempts.retryable} retryable errors seen by the terminals"
        + (f", failover {figures['failover_s']:.1f} s" if failover else "")
        + f"; checks {'passed' if figures['passed'] else 'FAILED'} ({figures['duration_s']:.0f} s)")
    return figures


# ---------------------------------------------------------------------------
# The command: both WAIT settings, the report, the table.


def _median(rounds: Sequence[Mapping[str, Any]], name: str) -> float:
    return float(statistics.median(r["latency_ms"][name] for r in rounds))


def summarise(steady: Mapping[int, Sequence[Mapping[str, Any]]], failover: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Per WAIT setting the failover round's figures and the steady rounds' latency; the cost of WAIT
    as ratios of the steady rounds' medians (pure)."""
    out: dict[str, Any] = {}
    for wait, name in ((1, "wait_on"), (0, "wait_off")):
        f = failover[wait]
        out[name] = {key: f[key] for key in (
            "acknowledged", "acknowledged_lost", "applied_twice", "approvals_equal", "audit_clean", "load_passed",
            "requests", "failover_s", "replica_back_s", "terminal_errors", "terminal_errors_until_s", "terminal_errors_by_kind",
            "sale_outcomes")}
        out[name] |= {"sale_p50_ms_steady": _median(steady[wait], "p50"), "sale_p99_ms_steady": _median(steady[wait], "p99"),
                      "sale_p99_ms_failover": f["latency_ms"]["p99"], "sale_max_ms_failover": f["latency_ms"]["max"]}
    for p in ("p50", "p99"):
        off = out["wait_off"][f"sale_{p}_ms_steady"]
        out[f"wait_cost_{p}_ratio"] = round(out["wait_on"][f"sale_{p}_ms_steady"] / off, 3) if off else None
    # With WAIT on nothing acknowledged may be lost and every check passes; off, the loss is measured.
    out["passed"] = (failover[1]["passed"] and all(r["passed"] for rounds in steady.values() for r in rounds)
                     and not failover[0]["applied_twice"])
    return out


async def run_failover(options: FailoverOptions) -> dict[str, Any]:
    """Start a cluster, run the steady and the failover rounds with WAIT on and off; the report
    (also written to `options.report_path`)."""
    started_at, started, load_average = time.gmtime(), time.monotonic(), os.getloadavg()[0]
    run_dir = Path(options.var_dir) / "runs" / time.strftime("%Y%m%dT%H%M%SZ", started_at)
    soak._prune_runs(run_dir.parent, soak.RUNS_KEPT - 1)

    def say(line: str) -> None:
        if options.progress:
            print(f"cluster-failover: {line}", file=sys.stderr, flush=True)

    try:
        cluster = EmbeddedCluster(run_dir / "cluster").start()
    except EmbeddedClusterError as e:
        raise FailoverError(f"the embedded cluster did not start: {e}") from None
    steady: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    failover: dict[int, dict[str, Any]] = {}
    try:
        say(f"cluster of {len(cluster.nodes)} nodes on {', '.join(cluster.startup_nodes)}")
        async with contextlib.AsyncExitStack() as stack:
            settings = load_settings(options.config_dir, env=cluster_env(cluster, run_dir, 0, options.wait_timeout_ms))
            setup = Store.from_settings(settings, "", max_connections=ADMIN_CONNECTIONS_MAX)
            stack.push_async_callback(setup.close)
            await setup.redis.flushall()
            await setup.load_scripts()
            await load_merchants(setup, settings)
            round_no = 0
            async with contextlib.AsyncExitStack() as both:
                # Two gateways at once on the same cluster and keyring, WAIT off and on, so that their
                # steady rounds alternate and the machine's drift falls on both alike.
                gateways = {wait: await both.enter_async_context(
                    cluster_gateway(cluster, run_dir, wait, options, name=f"gateway-wait{wait}")) for wait in (0, 1)}
                for _ in range(options.steady_rounds):
                    for wait in (0, 1):
                        round_no += 1
                        steady[wait].append(await cluster_round(cluster, gateways[wait], options,
                                                                run_dir / f"round-{round_no:02d}", round_no, False, say))
            for wait in (1, 0):
                # A gateway of its own for each failover: one that sat idle through another's failover
                # holds pooled connections to the killed node, and redis-py's cluster client hands a
                # free connection out unchecked, so each fails one request (a 503) on its first use.
                round_no += 1
                async with cluster_gateway(cluster, run_dir, wait, options, name=f"gateway-wait{wait}-failover") as gateway:
                    failover[wait] = await cluster_round(cluster, gateway, options, run_dir / f"round-{round_no:02d}",
                                                         round_no, True, say)
    except soak.SoakError as e:
        raise FailoverError(str(e)) from None
    finally:
        cluster.stop()
    report: dict[str, Any] = {
        **summarise(steady, failover),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", started_at),
        "duration_s": round(time.monotonic() - started, 1),
        "machine": soak.machine() | {"load_average_start": round(load_average, 2),
                                     "load_average_end": round(os.getloadavg()[0], 2)},
        "cluster": {"primaries": cluster.primaries_count, "replicas_per_primary": cluster.replicas_per_primary,
                    "node_timeout_ms": cluster.node_timeout_ms},
        "options": options.public(),
        "run_dir": str(run_dir),
        "steady_rounds": {f"wait_{'on' if w else 'off'}": rounds for w, rounds in steady.items()},
        "failover_rounds": {f"wait_{'on' if w else 'off'}": r for w, r in failover.items()},
    }
    if options.report_path:
        path = Path(options.report_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def render(report: Mapping[str, Any]) -> str:
    m, o = report["machine"], report["options"]
    on, off = report["wait_on"], report["wait_off"]

    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "NO"
        return "-" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:g}"

    rows = (
        ("acknowledged sales (failover round)", "acknowledged"),
        ("acknowledged_lost", "acknowledged_lost"),
        ("applied_twice", "applied_twice"),
        ("approved in gateway = acknowledged", "approvals_equal"),
        ("load checks passed", "load_passed"),
        ("gateway audit clean", "audit_clean"),
        ("failover: kill to promoted replica (s)", "failover_s"),
        ("kill to the restarted node in sync (s)", "replica_back_s"),
        ("retryable errors seen by terminals", "terminal_errors"),
        ("last of them, after the kill (s)", "terminal_errors_until_s"),
        ("sale p99 / max in the failover round (ms)", ("sale_p99_ms_failover", "sale_max_ms_failover")),
        ("sale p50 / p99, steady rounds' medians (ms)", ("sale_p50_ms_steady", "sale_p99_ms_steady")),
    )
    lines = [
        f"pointgate cluster failover: {report['cluster']['primaries']} primaries + {report['cluster']['primaries']} "
        f"replicas (node timeout {report['cluster']['node_timeout_ms']} ms), gateway serve --workers {o['workers']}, "
        f"{o['terminals']} terminals at {o['rate_per_s']:g}/s; started {report['started_at']} on {m['hostname']} "
        f"({m['cpus']} CPUs, {m['cpu_model'] or 'unknown CPU'}, Redis {m['redis']}, load average "
        f"{m['load_average_start']:g} at the start), {report['duration_s']:.0f} s",
        "",
        f"| {'measure':<44} | {'WAIT on':>13} | {'WAIT off':>13} |",
        f"|{'-' * 46}|{'-' * 14}:|{'-' * 14}:|",
    ]
    for label, key in rows:
        if isinstance(key, tuple):
            values = [f"{r[key[0]]:,.0f} / {r[key[1]]:,.0f}" for r in (on, off)]
        else:
            values = [cell(r[key]) for r in (on, off)]
        lines.append(f"| {label:<44} | {values[0]:>13} | {values[1]:>13} |")
    errors = {name: ", ".join(f"{k} {v}" for k, v in r["terminal_errors_by_kind"].items()) or "none"
              for name, r in (("on", on), ("off", off))}
    outcomes = {name: ", ".join(f"{k} {v}" for k, v in r["sale_outcomes"].items())
                for name, r in (("on", on), ("off", off))}
    lines += [
        "",
        f"cost of WAIT (steady rounds, medians): sale p50 x{cell(report['wait_cost_p50_ratio'])}, "
        f"p99 x{cell(report['wait_cost_p99_ratio'])}",
        f"failover round, WAIT on: sales {outcomes['on']}; errors {errors['on']}",
        f"failover round, WAIT off: sales {outcomes['off']}; errors {errors['off']}",
        f"verdict: {'PASSED' if report['passed'] else 'FAILED'}; report {o['report_path']}",
    ]
    return "\n".join(lines)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    d = FailoverOptions()
    parser = parser or argparse.ArgumentParser(prog="simulators cluster-failover", description=__doc__.splitlines()[0])
    parser.add_argument("--round-s", type=float, default=d.round_s, help=f"seconds of a failover round (default {d.round_s:g})")
    parser.add_argument("--kill-at-s", type=float, default=d.kill_at_s,
                        help=f"when the primary is killed in it (default {d.kill_at_s:g})")
    parser.add_argument("--steady-s", type=float, default=d.steady_s, help=f"seconds of a steady round (default {d.steady_s:g})")
    parser.add_argument("--steady-rounds", type=int, default=d.steady_rounds,
                        help=f"steady rounds per WAIT setting (default {d.steady_rounds})")
    parser.add_argument("--rate", type=float, default=d.rate_per_s, help=f"operations per second (default {d.rate_per_s:g})")
    parser.add_argument("--terminals", type=int, default=d.terminals, help=f"store terminals (default {d.terminals})")
    parser.add_argument("--members", type=int, default=d.members, help=f"members per round (default {d.members})")
    parser.add_argument("--workers", type=int, default=d.workers, help=f"gateway workers (default {d.workers})")
    soak.add_run_arguments(parser, d, "schedules", "cluster data, gateway logs, journals")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`simulators cluster-failover ...`: 0 when WAIT on lost nothing and every check passed, 1 when
    not, 2 when the cluster or the gateway could not be set up."""
    args = build_parser().parse_args(argv)
    return soak.run_main("simulators cluster-failover", lambda: FailoverOptions(
        round_s=args.round_s, kill_at_s=args.kill_at_s, steady_s=args.steady_s, steady_rounds=args.steady_rounds,
        rate_per_s=args.rate, terminals=args.terminals, members=args.members, workers=args.workers,
        deadline_s=args.deadline_s, seed=args.seed, var_dir=args.var_dir, report_path=args.report,
        config_dir=args.config_dir, progress=not args.quiet), run_failover, render, (FailoverError, load.LoadError))


if __name__ == "__main__":
    sys.exit(main())
