"""`make bench`: how fast the gateway authorises, as ratios to a baseline measured alongside.

The shell of the benchmark: it starts the bundled Redis, enrols the members,
starts `gateway serve` and the baseline (bench/baseline.py), generates real
signed requests for each round (bench/requests.py), drives them with wrk
(bench/wrk/replay.lua) or the open-loop generator (bench/openloop.py), and
after every round checks that the payments the gateway approved are exactly
the answers the load generator counted. The arithmetic and the table are in
bench/report.py.

Phases, in order:

    setup      Redis, merchants, keys, terminals, 1,000 members with their devices and points
    warm-up    every device pays once, so each worker holds every device's secret (not measured)
    max        wrk, closed loop: gateway, baseline, gateway, ... (median of each side, ratio)
    latency    open loop at 50% and 80% of the measured maximum: gateway, then baseline
    workers    gateway with 2 workers against 1, alternating (and the baseline's 2 against 1)
    cluster    the same gateway on the embedded 3-primary Redis Cluster against the one Redis,
               alternating, same worker count; the cluster's own members, tills and audit
    audit      `gateway audit` over everything so far: must be clean
    1M         999,000 more members seeded; each payment from a member never seen before, and
               again from the 1,000 members; open loop at the 1,000-member 50% rate; audit again

Any failed check (a count that differs, a decline, an error answer, an
unclean audit) makes the run exit 1 after writing the report.

    python -m bench                 # the whole benchmark (make bench)
    python -m bench --smoke         # seconds: checks it runs and the counts match (make test)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Sequence

from bench import report as rep
from bench.requests import SEQS_PER_STEP, CodeBook, Device, Sale, Till, encode_records, sale_requests, split_round_robin
from bench.seed import credit_members, enrol_members, seed_members
from bench.servers import Server, baseline_server, cpu_s, gateway_server
from gateway import keyspace
from gateway.audit import run_audit
from gateway.embedded_cluster import EmbeddedCluster
from gateway.embedded_redis import EmbeddedRedis, free_port
from gateway.keyring import Keyring
from gateway.ledger import Ledger
from gateway.merchants import MerchantRegistry
from gateway.settings import load_settings
from gateway.store import Store, connect
from gateway.tokens import TokenService

WRK_INSTALL = "apt-get update && apt-get install -y wrk"
STEP_S = 30  # the gateway's code_step_s; the run checks its settings agree
CODES_AHEAD = 1.5  # a wrk round gets this many times the codes its last round's rate needs
RATE_GUESS_PER_S = 2_000.0  # the first round's expected rate, before anything was measured
WRK_TAIL_S = 2  # wrk runs this long past RUN_S sending /healthz, so every payment is answered before it stops
WRK_TIMEOUT_S = 10  # wrk's own per-request timeout: a slower answer counts as a timeout error
OPENLOOP_LEAD_S = 1.5  # between writing an open-loop round's records and its first intended send
# (a generator that is not ready by then starts later: its codes stay valid for a whole step more)
REDIS_TIMEOUT_S = 30.0  # the benchmark's own Redis client: bulk pipelines take a while
CREDIT_POINTS = 5_000_000  # more than a member spends in a run, under the daily maximum per payment
FSYNC_PROBES = 200  # small appends timed with fdatasync, about a second on this disk
BATCH_READ = 5_000  # order lookups per pipeline when counting a round's approvals
MERCHANT_STORES = (("gs25", "gs25-gangnam-01"), ("cu", "cu-jongno-01"))
TERMINALS_PER_MERCHANT = 50  # each sale comes from one of 100 tills



class BenchError(Exception):
    """The benchmark could not run (a tool missing, a server that did not start)."""


@dataclass(frozen=True)
class Options:
    smoke: bool = False
    workers: int = 1
    rounds: int = 3
    round_s: float = 10.0
    latency_s: float = 15.0
    members: int = 1_000
    devices_per_member: int = 6
    """Each device makes 10 codes per 30 s step, so 6,000 devices supply 2,000 fresh codes a second."""
    big_members: int = 1_000_000
    """0: skip the 1M phase."""
    workers_phase: bool = True
    cluster_phase: bool = True
    """The gateway on the embedded 3-primary cluster against one Redis (wrk rounds only)."""
    connections: int = 32
    wrk_threads: int = 1
    latency_percents: tuple[int, ...] = (50, 80)
    """Offered loads of the latency phase, in percent of the measured maximum."""
    out_dir: str = "var/bench"
    update_readme: bool = False
    use_wrk: bool = True

    def public(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SMOKE = dict(smoke=True, rounds=1, round_s=1.5, latency_s=1.5, members=30, devices_per_member=10, big_members=300,
             workers_phase=False, connections=8, latency_percents=(50,))
SMOKE_RATE_PER_S = 40.0  # the smoke test's open-loop rate: no speed is asserted, only counts


@dataclass
class RoundResult:
    kind: str  # wrk or openloop
    target: str
    rate_per_s: float
    load: dict[str, Any]
    cpu_us_per_request: float = 0.0
    redis_cpu_us_per_request: float = 0.0
    approved_in_gateway: int | None = None
    journal_entries: int | None = None
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Backend:
    """The Redis a gateway round runs on, as the benchmark pays, counts and charges it: the one
    server of setup, or the cluster of the cluster phase (each with its own tills and devices)."""

    name: str
    client: Any
    """The benchmark's own client; a cluster's splits every pipeline by node."""
    tills: list[Till]
    book: CodeBook
    redis_pids: tuple[int, ...]
    """The redis-server processes whose CPU a round is charged (all six nodes of the cluster)."""


class Bench:
    def __init__(self, options: Options, root: Path) -> None:
        self.o = options
        self.root = root
        self.out_dir = root / options.out_dir
        self.run_dir = self.out_dir / "run"
        self.records_dir = self.run_dir / "records"
        self.rounds: list[RoundResult] = []
        self.problems: list[str] = []
        self.facts: dict[str, Any] = {}
        self.servers: list[Server] = []
        self.redis: EmbeddedRedis | None = None
        self.cluster: EmbeddedCluster | None = None
        self.cluster_store: Store | None = None
        self.client: Any = None
        self.rate_guess: dict[str, float] = {}
        """The last measured rate of each server, to size its next round."""
        self._tags = 0

    # -- setup -----------------------------------------------------------------

    async def setup(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.records_dir.mkdir(parents=True)
        self.redis = EmbeddedRedis(self.run_dir / "redis").start()
        self.settings = load_settings(env={}, redis_url=self.redis.url, keyring_path=str(self.run_dir / "keyring.json"))
        if self.settings.code_step_s != STEP_S or self.settings.code_window_steps < 1:
            raise BenchError(f"the benchmark plans codes for {STEP_S} s steps and a window of at least one step")
        self.client = connect(self.redis.url, REDIS_TIMEOUT_S, max_connections=64)
        # AOF rewrites are started between rounds (see rewrite_aof), never inside one, so a fork
        # and its dump never land on a measurement; everything else is config/redis.conf's.
        await self.client.config_set("auto-aof-rewrite-percentage", "0")
        self.facts["redis_version"] = (await self.client.info("server"))["redis_version"]
        self.store = Store(self.client)
        await self.store.load_scripts()
        self.keyring = Keyring.load(self.settings.keyring_path)
        self.ledger = Ledger(self.store)
        self.tokens = TokenService(self.store, self.ledger, self.keyring, self.settings)
        registry = MerchantRegistry(self.store, self.keyring)
        await registry.load_config(self.settings)
        self.tills: list[Till] = []
        for merchant_id, store_id in MERCHANT_STORES:
            key = await registry.issue_key(merchant_id)
            for n in range(1, TERMINALS_PER_MERCHANT + 1):
                await registry.add_terminal(merchant_id, store_id, f"bench{n}")
                self.tills.append(Till(merchant_id, store_id, f"bench{n}", key.key_id, key.secret))
        self.prefix = self.settings.home_network.prefix
        self.unit = self.settings.home_network.points_unit
        started = time.perf_counter()
        used_before = await self.used_memory()
        devices = await enrol_members(self.tokens, self.o.members, self.o.devices_per_member, CREDIT_POINTS)
        self.facts["enrol_s"] = round(time.perf_counter() - started, 2)
        self.facts["small_population_bytes"] = await self.used_memory() - used_before
        self.book = CodeBook(devices)
        self.single = Backend("1 Redis", self.client, self.tills, self.book,
                              (int((await self.client.info("server"))["process_id"]),))
        print(f"bench: {self.o.members:,} members with {len(devices):,} devices enrolled and credited in "
              f"{self.facts['enrol_s']:.1f} s", flush=True)

    async def used_memory(self) -> int:
        return int((await self.client.info("memory"))["used_memory"])

    def redis_cpu_s(self, backend: Backend | None = None) -> float:
        return sum(cpu_s(pid) for pid in (backend or self.single).redis_pids)

    async def rewrite_aof(self, force: bool = False) -> None:
        """Between rounds, rewrite the AOF where Redis would have (it doubled since the last
        rewrite, auto-aof-rewrite-percentage 100), and wait for it: auto rewrites are off for the run."""
        persistence = await self.client.info("persistence")
        if not force and int(persistence["aof_current_size"]) < 2 * max(int(persistence["aof_base_size"]), 1 << 26):
            return
        await self.client.bgrewriteaof()
        while int((await self.client.info("persistence"))["aof_rewrite_in_progress"]):
            await asyncio.sleep(0.2)

    async def start(self, server: Server) -> Server:
        await server.start()
        self.servers.append(server)
        return server

    def stop(self, server: Server) -> None:
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    async def close(self) -> None:
        for server in list(self.servers):
            self.stop(server)
        if self.cluster_store is not None:
            await self.cluster_store.close()
            self.cluster_store = None
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    # -- requests --------------------------------------------------------------

    def tag(self, name: str) -> str:
        self._tags += 1
        return f"{name}{self._tags}-{secrets.token_hex(3)}"

    async def codes_for_window(self, book: CodeBook, count: int, fresh: bool = False) -> list[tuple[Device, int, int]]:
        """`count` codes that stay valid for at least a step from now: steps now and now+1. A count
        beyond what the devices hold for two steps is cut to that (the round runs out early and
        says so, and the next one is sized from the rate it measured)."""
        if fresh:
            # Fewer unused devices than asked for: the round has them all and may run out early
            # (none left is an error, from take_fresh).
            return book.take_fresh(int(time.time()) // STEP_S, min(count, book.fresh_left()) or count)
        count = await self.wait_for_codes(book, count)
        step = int(time.time()) // STEP_S
        first = min(book.capacity(step), count)
        return book.take(step, first) + book.take(step + 1, count - first)

    @staticmethod
    async def wait_for_codes(book: CodeBook, count: int) -> int:
        """Wait until steps now and now+1 hold `count` unused codes, or as many as two steps can;
        returns that count."""
        count = min(count, 2 * len(book) * SEQS_PER_STEP)
        while True:
            step = int(time.time()) // STEP_S
            if book.capacity(step) + book.capacity(step + 1) >= count:
                return count
            wait_s = (step + 1) * STEP_S - time.time() + 0.05
            print(f"bench: waiting {wait_s:.0f} s for the next code step (the devices' codes of this one are used)",
                  flush=True)
            await asyncio.sleep(wait_s)

    def codes_for_schedule(self, book: CodeBook, start_at_s: float, rate_per_s: float, count: int,
                           fresh: bool = False) -> list[tuple[Device, int, int]]:
        """Code i is of the step request i is due in (start_at + i / rate)."""
        plan: list[tuple[Device, int, int]] = []
        i = 0
        while i < count:
            step = int(start_at_s + i / rate_per_s) // STEP_S
            j = i
            while j < count and int(start_at_s + j / rate_per_s) // STEP_S == step:
                j += 1
            if fresh:
                plan += book.take_fresh(step, j - i)
            else:
                # The next step's codes are accepted too (the skew window): they make up a shortfall.
                first = min(book.capacity(step), j - i)
                plan += book.take(step, first) + book.take(step + 1, j - i - first)
            i = j
        return plan

    def sales(self, plan: Sequence[tuple[Device, int, int]], port: int, tag: str,
              tills: Sequence[Till] | None = None) -> list[Sale]:
        return sale_requests(plan, tills or self.tills, self.prefix, f"127.0.0.1:{port}", time.time(), tag,
                             secrets.token_hex, secrets.randbelow)

    # -- counting ----------------------------------------------------------------

    async def journal_length(self, client: Any = None) -> int:
        async with (client or self.client).pipeline(transaction=False) as pipe:
            for partition in range(keyspace.PARTITIONS):
                pipe.xlen(keyspace.journal_key(partition))
            return sum(await pipe.execute())

    async def approved_in_gateway(self, sales: Sequence[Sale], client: Any = None) -> int:
        """How many of these sales the gateway holds as approved payments, found by order reference."""
        client = client or self.client
        approved = 0
        for start in range(0, len(sales), BATCH_READ):
            chunk = sales[start:start + BATCH_READ]
            async with client.pipeline(transaction=False) as pipe:
                for sale in chunk:
                    pipe.hget(keyspace.order_key(sale.merchant_id, sale.order_ref), "payment_id")
                payment_ids = [p for p in await pipe.execute() if p]
            async with client.pipeline(transaction=False) as pipe:
                for payment_id in payment_ids:
                    pipe.hget(keyspace.payment_key(payment_id), "state")
                approved += sum(state == "approved" for state in await pipe.execute())
        return approved

    # -- load ------------------------------------------------------------------

    def write_records(self, name: str, records: Sequence[bytes], parts: int) -> Path:
        prefix = self.records_dir / name
        for i, part in enumerate(split_round_robin(records, parts)):
            Path(f"{prefix}.{i}").write_bytes(encode_records(part))
        return prefix

    async def run_wrk(self, server: Server, prefix: Path, run_s: float, cycle: bool) -> dict[str, Any]:
        script = resources.files("bench") / "wrk" / "replay.lua"
        command = ["wrk", f"-t{self.o.wrk_threads}", f"-c{self.o.connections}", f"-d{math.ceil(run_s) + WRK_TAIL_S}s",
                   f"--timeout={WRK_TIMEOUT_S}s", "-s", str(script), server.url, "--", str(prefix), str(run_s)]
        if cycle:
            command.append("cycle")
        process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.PIPE)
        output = asyncio.ensure_future(process.communicate())
        markers = [Path(f"{prefix}.done.{i}") for i in range(self.o.wrk_threads)]
        while not output.done():
            if not cycle and all(m.exists() for m in markers):
                process.send_signal(signal.SIGINT)  # every record sent and answered: no need to wait for -d
                break
            await asyncio.sleep(0.05)
        out, err = await output
        for line in out.decode().splitlines():
            if line.startswith("PGBENCH "):
                return json.loads(line[len("PGBENCH "):])
        raise BenchError(f"wrk printed no result: {err.decode().strip() or out.decode().strip()}")

    async def run_openloop(self, server: Server, prefix: Path, rate_per_s: float, start_at_s: float) -> dict[str, Any]:
        command = [sys.executable, "-m", "bench.openloop", "--records", f"{prefix}.0", "--port", str(server.port),
                   "--rate", str(rate_per_s), "--start-at", str(start_at_s), "--connections", str(max(64, self.o.connections))]
        process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.PIPE)
        out, err = await process.communicate()
        for line in out.decode().splitlines():
            if line.startswith("PGBENCH "):
                return json.loads(line[len("PGBENCH "):])
        raise BenchError(f"bench.openloop failed: {err.decode().strip()}")

    async def measured(self, server: Server, kind: str, target: str, run, sales: Sequence[Sale] | None,
                       backend: Backend | None = None) -> RoundResult:
        """Run one round, with CPU accounting and (for the gateway) the exact count check."""
        backend = backend or self.single
        journal_before = await self.journal_length(backend.client) if sales is not None else 0
        cpu_before, redis_before = server.cpu_s(), self.redis_cpu_s(backend)
        load = await run()
        cpu_used, redis_used = server.cpu_s() - cpu_before, self.redis_cpu_s(backend) - redis_before
        answered = load["answered_2xx"] + load["answered_other"]
        rate = load["answered_2xx"] / load["span_s"] if kind == "wrk" and load.get("span_s") else load.get("rate_per_s", 0)
        result = RoundResult(kind, target, round(rate, 1), load,
                             round(cpu_used / answered * 1e6, 1) if answered else 0.0,
                             round(redis_used / answered * 1e6, 1) if answered else 0.0)
        if load["answered_other"]:
            result.problems.append(f"{load['answered_other']} answers were not 2xx: {load.get('other_statuses')}")
        if load.get("unanswered"):
            result.problems.append(f"{load['unanswered']} requests got no answer")
        if sales is not None:
            result.approved_in_gateway = await self.approved_in_gateway(sales, backend.client)
            result.journal_entries = await self.journal_length(backend.client) - journal_before
            if not result.approved_in_gateway == result.journal_entries == load["answered_2xx"] == load["approved"]:
                result.problems.append(
                    f"counts differ: the load generator saw {load['answered_2xx']} answered 2xx, {load['approved']} of "
                    f"them approved; the gateway holds {result.approved_in_gateway} approved payments for these orders "
                    f"and its journals grew by {result.journal_entries} entries")
        self.rounds.append(result)
        self.problems += [f"{target} ({kind}): {p}" for p in result.problems]
        line = (f"bench: {target:<28} {kind:<8} {result.rate_per_s:>9,.1f}/s"
                f"  cpu {result.cpu_us_per_request:,.0f} us/request")
        if kind == "openloop":
            lat = load["latency_ms"]
            line += f"  p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} p99.9 {lat['p99_9']:.2f} ms"
        if sales is not None:
            line += f"  approved {result.approved_in_gateway:,}" + ("" if not result.problems else "  FAILED")
        print(line, flush=True)
        return result

    async def gateway_wrk(self, server: Server, target: str, book: CodeBook | None = None, fresh: bool = False,
                          count: int | None = None, run_s: float | None = None,
                          backend: Backend | None = None) -> tuple[RoundResult, list[bytes]]:
        backend = backend or self.single
        book = book or backend.book
        run_s = self.o.round_s if run_s is None else run_s
        rate_guess = self.rate_guess.get(server.name, RATE_GUESS_PER_S)
        count = count or math.ceil(rate_guess * run_s * CODES_AHEAD) + 2 * self.o.connections
        if run_s + WRK_TAIL_S > STEP_S - 2:
            raise BenchError(f"a wrk round of {run_s:g} s outlives its codes (they are good for one step, {STEP_S} s)")
        plan = await self.codes_for_window(book, count, fresh)
        sales = self.sales(plan, server.port, self.tag("w"), backend.tills)
        records = [s.raw for s in sales]
        prefix = self.write_records(self.tag("w"), records, self.o.wrk_threads)
        result = await self.measured(server, "wrk", target, lambda: self.run_wrk(server, prefix, run_s, False), sales,
                                     backend)
        if result.load.get("exhausted"):
            print(f"bench: {target} ran out of its {len(records):,} requests before {run_s:g} s; more next round",
                  flush=True)
        self.rate_guess[server.name] = max(result.rate_per_s, 1.0)  # a round that ran out still measured its rate
        return result, records

    async def warm_up(self, server: Server, target: str, backend: Backend | None = None) -> None:
        """Every device pays once (the book hands codes out round robin), in rounds short enough
        that every code is still inside the gateway's window when it is sent."""
        backend = backend or self.single
        left = len(backend.book)
        while left > 0:
            count = min(left, math.ceil(self.rate_guess.get(server.name, RATE_GUESS_PER_S) * self.o.round_s * CODES_AHEAD))
            await self.gateway_wrk(server, target, count=count, backend=backend)
            left -= count

    async def baseline_wrk(self, server: Server, target: str, records: Sequence[bytes]) -> RoundResult:
        prefix = self.write_records(self.tag("b"), records, self.o.wrk_threads)
        return await self.measured(server, "wrk", target, lambda: self.run_wrk(server, prefix, self.o.round_s, True), None)

    async def gateway_openloop(self, server: Server, target: str, rate_per_s: float, seconds: float,
                               book: CodeBook | None = None, fresh: bool = False) -> tuple[RoundResult, list[bytes]]:
        book = book or self.book
        count = max(1, int(rate_per_s * seconds))
        if not fresh:
            await self.wait_for_codes(book, count)
        start_at = time.time() + OPENLOOP_LEAD_S + count * 50e-6
        plan = self.codes_for_schedule(book, start_at, rate_per_s, count, fresh)
        sales = self.sales(plan, server.port, self.tag("o"))
        records = [s.raw for s in sales]
        prefix = self.write_records(self.tag("o"), records, 1)
        result = await self.measured(server, "openloop", target,
                                     lambda: self.run_openloop(server, prefix, rate_per_s, start_at), sales)
        return result, records

    async def baseline_openloop(self, server: Server, target: str, rate_per_s: float, records: Sequence[bytes]) -> RoundResult:
        prefix = self.write_records(self.tag("b"), records, 1)
        start_at = time.time() + OPENLOOP_LEAD_S
        return await self.measured(server, "openloop", target,
                                   lambda: self.run_openloop(server, prefix, rate_per_s, start_at), None)

    # -- phases ----------------------------------------------------------------

    async def max_throughput(self, gateway: Server, baseline: Server, label: str, book: CodeBook | None = None,
                             fresh: bool = False) -> tuple[list[float], list[float], list[RoundResult]]:
        gateway_rates, baseline_rates, results = [], [], []
        for _ in range(self.o.rounds):
            g, records = await self.gateway_wrk(gateway, f"gateway {label}", book, fresh)
            b = await self.baseline_wrk(baseline, f"baseline {self.o.workers}w", records)
            gateway_rates.append(g.rate_per_s)
            baseline_rates.append(b.rate_per_s)
            results += [g, b]
            await self.rewrite_aof()
        return gateway_rates, baseline_rates, results

    async def run(self) -> dict[str, Any]:
        o = self.o
        started = time.perf_counter()
        machine = machine_facts(self.out_dir)
        await self.setup()
        gateway = await self.start(gateway_server(free_port(), o.workers, self.redis.url, self.run_dir, f"gateway-{o.workers}w"))
        baseline = await self.start(baseline_server(free_port(), o.workers, self.run_dir, f"baseline-{o.workers}w"))
        out: dict[str, Any] = {"smoke": o.smoke, "options": o.public()}
        memory_start = await self.used_memory()
        journal_start = await self.journal_length()

        if o.use_wrk:
            # Warm-up: every device pays once, so the worker holds every secret, as a gateway that has run for a while.
            await self.warm_up(gateway, "warm-up (every device once)")
            g_rates, b_rates, _ = await self.max_throughput(gateway, baseline, f"{o.workers}w, 1,000 members")
            g_cpu = [r.cpu_us_per_request for r in self.rounds[-2 * o.rounds::2]]
            b_cpu = [r.cpu_us_per_request for r in self.rounds[-2 * o.rounds + 1::2]]
            redis_cpu = [r.redis_cpu_us_per_request for r in self.rounds[-2 * o.rounds::2]]
        else:
            # The smoke run without wrk: the same alternation, open loop at a fixed low rate.
            g_rates, b_rates, g_cpu, b_cpu, redis_cpu = [], [], [], [], []
            for _ in range(o.rounds):
                g, records = await self.gateway_openloop(gateway, f"gateway {o.workers}w", SMOKE_RATE_PER_S, o.round_s)
                b = await self.baseline_openloop(baseline, f"baseline {o.workers}w", SMOKE_RATE_PER_S, records)
                g_rates.append(g.load["answered_2xx"] / o.round_s)
                b_rates.append(b.load["answered_2xx"] / o.round_s)
                g_cpu.append(g.cpu_us_per_request)
                b_cpu.append(b.cpu_us_per_request)
                redis_cpu.append(g.redis_cpu_us_per_request)
        out["auth_rps"] = round(rep.median(g_rates), 1)
        out["baseline_rps"] = round(rep.median(b_rates), 1)
        out["auth_ratio"] = rep.ratio(out["auth_rps"], out["baseline_rps"])
        out["auth_rps_rounds"], out["baseline_rps_rounds"] = g_rates, b_rates
        out["gateway_cpu_us_per_auth"] = round(rep.median(g_cpu), 1)
        out["baseline_cpu_us_per_request"] = round(rep.median(b_cpu), 1)
        out["redis_cpu_us_per_auth"] = round(rep.median(redis_cpu), 1)

        # Latency at fixed offered load, open loop, from the intended send time.
        # The smoke's few devices have codes for a slow rate only; it checks counts, not speed.
        max_rate = SMOKE_RATE_PER_S * 2 if o.smoke or not o.use_wrk else out["auth_rps"]
        for percent in (50, 80):
            if percent not in o.latency_percents:
                for name in ("rate_at", "p50_ms_at", "p99_ms_at", "p999_ms_at", "baseline_p99_ms_at"):
                    out[f"{name}_{percent}pct"] = None
                continue
            rate = round(max_rate * percent / 100, 1)
            g, records = await self.gateway_openloop(gateway, f"gateway {o.workers}w at {percent}%", rate, o.latency_s)
            b = await self.baseline_openloop(baseline, f"baseline {o.workers}w at gateway {percent}%", rate, records)
            lat, blat = g.load["latency_ms"], b.load["latency_ms"]
            out[f"rate_at_{percent}pct"] = rate
            out[f"p50_ms_at_{percent}pct"], out[f"p99_ms_at_{percent}pct"] = lat["p50"], lat["p99"]
            out[f"p999_ms_at_{percent}pct"], out[f"max_ms_at_{percent}pct"] = lat["p99_9"], lat["max"]
            out[f"schedule_lag_ms_p99_at_{percent}pct"] = g.load["schedule_lag_ms"]["p99"]
            out[f"baseline_p99_ms_at_{percent}pct"] = blat["p99"]
            out[f"baseline_p999_ms_at_{percent}pct"] = blat["p99_9"]
            await self.rewrite_aof()

        if 50 in o.latency_percents and not o.smoke:
            # Diagnostic, not the production setting: the same 50% round with Redis fsyncing once a
            # second instead of before every reply, to show how much of the latency is the disk's.
            await self.client.config_set("appendfsync", "everysec")
            try:
                g, _ = await self.gateway_openloop(gateway, f"gateway {o.workers}w at 50%, fsync 1/s", out["rate_at_50pct"],
                                                   o.latency_s)
            finally:
                await self.client.config_set("appendfsync", "always")
            lat = g.load["latency_ms"]
            out["p50_ms_at_50pct_fsync_everysec"], out["p99_ms_at_50pct_fsync_everysec"] = lat["p50"], lat["p99"]
            out["p999_ms_at_50pct_fsync_everysec"] = lat["p99_9"]
            await self.rewrite_aof()

        if o.workers_phase and o.use_wrk:
            await self.workers_phase(gateway, baseline, out)

        if o.cluster_phase and o.use_wrk:
            await self.cluster_phase(gateway, out)

        approved = await self.journal_length() - journal_start
        await asyncio.sleep(2.0)  # the journal consumers' views catch up: part of what a payment costs
        out["redis_bytes_per_payment"] = round((await self.used_memory() - memory_start) / max(approved, 1))
        await self.audit(out, "audit_s")

        if o.big_members:
            await self.million(gateway, baseline, out)

        await self.close()
        out["approved_total"] = sum(r.approved_in_gateway or 0 for r in self.rounds)
        out["passed"] = not self.problems
        out["problems"] = self.problems
        out["rounds"] = [r.to_json() for r in self.rounds]
        out["facts"] = self.facts
        out["machine"] = machine | {"load_average_end": round(os.getloadavg()[0], 2)}
        out["versions"] = versions(self.facts["redis_version"])
        out["date"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        out["targets"] = {"auth_ratio_min": 0.5, "auth_ratio_aim": 0.65, "p99_ms_at_50pct_max": 5.0,
                          "p999_ms_at_50pct_max": 10.0, "members_1m_over_1k_min": 0.9}
        out["tools"] = {"max throughput": "wrk (closed loop, bench/wrk/replay.lua)" if o.use_wrk else "bench.openloop",
                        "latency": "bench.openloop (open loop, from the intended send time)"}
        out["duration_s"] = round(time.perf_counter() - started, 1)
        return out

    async def workers_phase(self, gateway1: Server, baseline1: Server, out: dict[str, Any]) -> None:
        """2 workers against 1, alternating rounds of each over the same Redis and devices."""
        gateway2 = await self.start(gateway_server(free_port(), 2, self.redis.url, self.run_dir, "gateway-2w"))
        baseline2 = await self.start(baseline_server(free_port(), 2, self.run_dir, "baseline-2w"))
        await self.warm_up(gateway2, "warm-up 2w (every device once)")
        one, two, b_two = [], [], []
        for _ in range(self.o.rounds):
            g1, records = await self.gateway_wrk(gateway1, "gateway 1w (workers phase)")
            g2, _ = await self.gateway_wrk(gateway2, "gateway 2w")
            b2 = await self.baseline_wrk(baseline2, "baseline 2w", records)
            one.append(g1.rate_per_s)
            two.append(g2.rate_per_s)
            b_two.append(b2.rate_per_s)
            await self.rewrite_aof()
        self.stop(gateway2)
        self.stop(baseline2)
        out["auth_rps_1_worker_workers_phase"] = round(rep.median(one), 1)
        out["auth_rps_2_workers"] = round(rep.median(two), 1)
        out["workers2_over_1"] = rep.ratio(out["auth_rps_2_workers"], out["auth_rps_1_worker_workers_phase"])
        out["baseline_rps_2_workers"] = round(rep.median(b_two), 1)
        out["baseline_workers2_over_1"] = rep.ratio(out["baseline_rps_2_workers"], out["baseline_rps"])

    async def cluster_backend(self) -> tuple[Backend, Any]:
        """The embedded cluster (3 primaries, 3 replicas) with what setup made on the one Redis:
        merchants, tills with their own keys, members with their devices and points; and its settings."""
        self.cluster = EmbeddedCluster(self.run_dir / "cluster").start()
        settings = load_settings(env={}, redis_cluster_nodes=list(self.cluster.startup_nodes),
                                 keyring_path=self.settings.keyring_path)
        store = self.cluster_store = Store.from_settings(settings, "", max_connections=64)
        await store.redis.initialize()  # before anything concurrent (see simulators/cluster_failover.py)
        await store.load_scripts()
        registry = MerchantRegistry(store, self.keyring)
        await registry.load_config(settings)
        tills = []
        for merchant_id, store_id in MERCHANT_STORES:
            key = await registry.issue_key(merchant_id)
            for n in range(1, TERMINALS_PER_MERCHANT + 1):
                await registry.add_terminal(merchant_id, store_id, f"bench{n}")
                tills.append(Till(merchant_id, store_id, f"bench{n}", key.key_id, key.secret))
        started = time.perf_counter()
        tokens = TokenService(store, Ledger(store), self.keyring, settings)
        devices = await enrol_members(tokens, self.o.members, self.o.devices_per_member, CREDIT_POINTS)
        self.facts["cluster_enrol_s"] = round(time.perf_counter() - started, 2)
        pids = []
        for node in self.cluster.nodes:
            with self.cluster.client(node) as client:
                pids.append(int(client.info("server")["process_id"]))
        return Backend("cluster", store.redis, tills, CodeBook(devices), tuple(pids)), settings

    async def cluster_phase(self, gateway1: Server, out: dict[str, Any]) -> None:
        """The gateway with the same workers on the 3-primary cluster against the one Redis,
        alternating rounds. Every node shares this machine with the gateway and wrk, so this is the
        cost of a sale's three round trips (claim, move, finish) and of the cluster client, not
        what more machines would add."""
        o = self.o
        backend, settings = await self.cluster_backend()
        print(f"bench: cluster of {len(self.cluster.nodes)} nodes, {len(backend.book):,} devices enrolled in "
              f"{self.facts['cluster_enrol_s']:.1f} s", flush=True)
        gateway3 = await self.start(gateway_server(free_port(), o.workers, "", self.run_dir, f"gateway-{o.workers}w-cluster",
                                                   cluster_nodes=self.cluster.startup_nodes))
        if not o.smoke:  # the smoke checks counts, not speed: no need to cache every secret first
            await self.warm_up(gateway3, "warm-up cluster (every device once)", backend)
        one, three = [], []
        for _ in range(o.rounds):
            g1, _ = await self.gateway_wrk(gateway1, f"gateway {o.workers}w, 1 Redis")
            g3, _ = await self.gateway_wrk(gateway3, f"gateway {o.workers}w, cluster", backend=backend)
            one += [g1]
            three += [g3]
            await self.rewrite_aof()
        self.stop(gateway3)
        result = await run_audit(self.cluster_store)
        if not result.clean:
            self.problems += [f"cluster audit: {p}" for p in result.problems[:20]]
        print(f"bench: cluster audit of {result.members:,} members and {result.entries:,} journal entries: "
              f"{'clean' if result.clean else 'NOT CLEAN'}", flush=True)
        await self.cluster_store.close()
        self.cluster_store = None
        self.cluster.stop()
        self.cluster = None
        out["auth_rps_1_redis_cluster_phase"] = round(rep.median([r.rate_per_s for r in one]), 1)
        out["auth_rps_cluster3"] = round(rep.median([r.rate_per_s for r in three]), 1)
        out["cluster3_over_1"] = rep.ratio(out["auth_rps_cluster3"], out["auth_rps_1_redis_cluster_phase"])
        for name, rounds in (("1_redis_cluster_phase", one), ("cluster3", three)):
            out[f"gateway_cpu_us_per_auth_{name}"] = round(rep.median([r.cpu_us_per_request for r in rounds]), 1)
            out[f"redis_cpu_us_per_auth_{name}"] = round(rep.median([r.redis_cpu_us_per_request for r in rounds]), 1)
        out["cluster_audit_clean"] = result.clean

    async def audit(self, out: dict[str, Any], name: str) -> None:
        started = time.perf_counter()
        result = await run_audit(self.store)
        out[name] = round(time.perf_counter() - started, 1)
        out["audit_clean"] = out.get("audit_clean", True) and result.clean
        out["audit_entries"] = result.entries
        out["audit_members"] = result.members
        if not result.clean:
            self.problems += [f"audit: {p}" for p in result.problems[:20]]
        print(f"bench: audit of {result.members:,} members and {result.entries:,} journal entries in "
              f"{out[name]:.1f} s: {'clean' if result.clean else 'NOT CLEAN'}", flush=True)

    async def million(self, gateway: Server, baseline: Server, out: dict[str, Any]) -> None:
        """The same measurements with the population grown to `big_members`."""
        o = self.o
        more = o.big_members - o.members
        # Each payment of the new-member rounds is a member's first: size the payers for twice the
        # fastest rate seen so far (a quieter machine later on runs faster).
        rate_guess = 2 * max(self.rate_guess.values(), default=RATE_GUESS_PER_S)
        payers_needed = (o.rounds + 1) * (math.ceil(rate_guess * o.round_s * CODES_AHEAD) + 2 * o.connections) \
            + int(out["rate_at_50pct"] * o.latency_s) + 1
        payers_needed = min(payers_needed, more)
        await self.rewrite_aof()
        memory_before = await self.used_memory()
        print(f"bench: seeding {more:,} more members (one device each) with the enrolment scripts, pipelined", flush=True)
        # Setup, not measured: fsync once a second while seeding (a million fsyncs would take most of
        # an hour on this disk), then back to every write and a rewritten AOF before any round.
        await self.client.config_set("appendfsync", "everysec")
        try:
            seeded = await seed_members(self.client, self.keyring, more, self.unit, keep=payers_needed)
            out["redis_bytes_per_member"] = round((await self.used_memory() - memory_before) / seeded.members)
            out["seed_s"] = round(seeded.seconds, 1)
            out["seed_slot_retries"] = seeded.slot_retries
            started = time.perf_counter()
            await credit_members(self.ledger, sorted({d.member_id for d in seeded.payers}), CREDIT_POINTS, self.unit)
            out["credit_payers_s"] = round(time.perf_counter() - started, 1)
        finally:
            await self.client.config_set("appendfsync", "always")
        await self.rewrite_aof(force=True)
        print(f"bench: seeded {seeded.members:,} members in {seeded.seconds:.0f} s "
              f"({out['redis_bytes_per_member']:,} bytes each); credited {len(seeded.payers):,} payers in "
              f"{out['credit_payers_s']:.0f} s", flush=True)
        await self.rewrite_aof()
        spread = CodeBook(seeded.payers)
        if o.smoke or not o.use_wrk:
            # The smoke run: seeded members pay (their layout is enrolment's), open loop.
            g, _ = await self.gateway_openloop(gateway, f"gateway {o.workers}w, seeded members", SMOKE_RATE_PER_S,
                                               o.round_s, spread, fresh=True)
            out["auth_rps_seeded_members"] = g.load["answered_2xx"] / o.round_s
            await self.audit(out, "audit_s_1m_members")
            return
        cold, hot, base = [], [], []
        new_rounds, hot_rounds = [], []
        for _ in range(o.rounds):
            # A member never seen before: the worker decrypts its device's secret on this payment.
            c, records = await self.gateway_wrk(gateway, f"gateway {o.workers}w, 1M, new member", spread, fresh=True)
            h, _ = await self.gateway_wrk(gateway, f"gateway {o.workers}w, 1M, 1,000 pay")
            b = await self.baseline_wrk(baseline, f"baseline {o.workers}w", records)
            cold.append(c.rate_per_s)
            hot.append(h.rate_per_s)
            new_rounds.append(c)
            hot_rounds.append(h)
            base.append(b.rate_per_s)
            await self.rewrite_aof()
        out["auth_rps_1m_members"] = round(rep.median(cold), 1)
        out["auth_rps_1m_members_hot"] = round(rep.median(hot), 1)
        out["baseline_rps_1m_phase"] = round(rep.median(base), 1)
        out["auth_ratio_1m_members"] = rep.ratio(out["auth_rps_1m_members"], out["baseline_rps_1m_phase"])
        out["auth_ratio_1m_members_hot"] = rep.ratio(out["auth_rps_1m_members_hot"], out["baseline_rps_1m_phase"])
        out["members_1m_over_1k"] = rep.ratio(out["auth_ratio_1m_members"], out["auth_ratio"])
        out["members_1m_hot_over_1k"] = rep.ratio(out["auth_ratio_1m_members_hot"], out["auth_ratio"])
        # Measured in alternating rounds of the same phase: what a device not yet in the worker's
        # cache costs (one more round trip and an AES-GCM decryption), free of the drift between phases.
        out["new_member_over_hot_1m"] = rep.ratio(out["auth_rps_1m_members"], out["auth_rps_1m_members_hot"])
        out["gateway_cpu_us_per_auth_1m_new_member"] = round(rep.median([r.cpu_us_per_request for r in new_rounds]), 1)
        out["gateway_cpu_us_per_auth_1m_hot"] = round(rep.median([r.cpu_us_per_request for r in hot_rounds]), 1)
        g, _ = await self.gateway_openloop(gateway, f"gateway {o.workers}w at 50%, 1M, new member",
                                           out["rate_at_50pct"], o.latency_s, spread, fresh=True)
        out["p50_ms_at_50pct_1m_members"] = g.load["latency_ms"]["p50"]
        out["p99_ms_at_50pct_1m_members"] = g.load["latency_ms"]["p99"]
        out["p999_ms_at_50pct_1m_members"] = g.load["latency_ms"]["p99_9"]
        await self.audit(out, "audit_s_1m_members")


def machine_facts(out_dir: Path) -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory_gib, "kernel": platform.release(),
            "load_average_start": round(os.getloadavg()[0], 2)} | fdatasync_ms(out_dir)


def fdatasync_ms(directory: Path, count: int = FSYNC_PROBES) -> dict[str, float]:
    """How long this disk takes to make a small append durable: what Redis waits for before every
    reply with `appendfsync always`, so a floor under every authorisation's latency."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fsync-probe"
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(count):
            os.write(fd, b"x" * 300)
            started = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return {"disk_fdatasync_ms_p50": round(times[len(times) // 2] * 1000, 2),
            "disk_fdatasync_ms_p99": round(times[int(len(times) * 0.99)] * 1000, 2)}


def versions(redis_version: str) -> dict[str, str]:
    wrk = ""
    if shutil.which("wrk"):
        probe = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        wrk = (probe.stdout + probe.stderr).split("[")[0].strip()
    return {"python": platform.python_version(), "aiohttp": metadata.version("aiohttp"),
            "redis_py": metadata.version("redis"), "hiredis": metadata.version("hiredis"),
            "redis_server": redis_version, "wrk": wrk,
            "event_loop": f"asyncio's default ({type(asyncio.get_running_loop()).__name__}), as gateway serve runs"}


async def run_bench(options: Options, root: Path) -> dict[str, Any]:
    bench = Bench(options, root)
    try:
        return await bench.run()
    finally:
        await bench.close()


def write_outputs(out: dict[str, Any], options: Options, root: Path) -> str:
    out_dir = root / options.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(out, indent=2) + "\n")
    table = rep.render_table(out)
    (out_dir / "table.md").write_text(table + "\n")
    if options.update_readme and not options.smoke:
        readme = root / "README.md"
        readme.write_text(rep.replace_readme_block(readme.read_text(), table))
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds: it runs and the counts match")
    parser.add_argument("--workers", type=int, default=1, help="gateway and baseline workers (default 1)")
    parser.add_argument("--rounds", type=int, help="rounds of each side per measurement (default 3)")
    parser.add_argument("--round-s", type=float, help="seconds of one wrk round (default 10)")
    parser.add_argument("--latency-s", type=float, help="seconds of one open-loop round (default 15)")
    parser.add_argument("--big-members", type=int, help="members of the scaling phase; 0 skips it (default 1,000,000)")
    parser.add_argument("--no-workers-phase", action="store_true", help="skip 2 workers against 1")
    parser.add_argument("--no-cluster-phase", action="store_true", help="skip the 3-primary cluster against one Redis")
    parser.add_argument("--no-wrk", action="store_true", help="load with bench.openloop only (what --smoke does without wrk)")
    parser.add_argument("--update-readme", action="store_true", help="put the table between the README's bench markers")
    parser.add_argument("--out-dir", default="var/bench")
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    values: dict[str, Any] = dict(SMOKE) if args.smoke else {}
    for name in ("rounds", "round_s", "latency_s", "big_members"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    values["workers"] = args.workers
    values["out_dir"] = args.out_dir
    values["update_readme"] = args.update_readme
    if args.no_workers_phase:
        values["workers_phase"] = False
    if args.no_cluster_phase:
        values["cluster_phase"] = False
    if args.no_wrk or (args.smoke and not shutil.which("wrk")):
        values["use_wrk"] = False
    return Options(**values)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = options_from_args(args)
    if options.use_wrk and not shutil.which("wrk"):
        print(f"bench: wrk is not installed; it is a Debian package: {WRK_INSTALL}", file=sys.stderr)
        return 2
    root = Path.cwd()
    try:
        out = asyncio.run(run_bench(options, root))
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    table = write_outputs(out, options, root)
    print("\n" + table)
    for problem in out["problems"]:
        print(f"bench: FAILED: {problem}", file=sys.stderr)
    print(f"bench: report {Path(options.out_dir) / 'report.json'}; {'passed' if out['passed'] else 'FAILED'}")
    return 0 if out["passed"] else 1
