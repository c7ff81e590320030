"""`simulators soak`: the load generator while Redis, the gateway and the network fail, then the books proved.

One soak is a number of rounds over the same Redis (one data dir, one port,
AOF with `appendfsync always`) and the same `gateway serve --workers N`, run
as a subprocess that the soak supervises: whenever it exits it is started
again. The gateway reaches Redis only through a `RedisFaultProxy`; the
terminals reach the gateway only through a `FaultProxy`. Each round is one
`simulators load` run (open loop, its own five checks), and while its
operations are being sent a seeded chaos schedule strikes at random moments:

    redis_kill     SIGKILL redis-server, leave it dead a moment, start it again on its data dir and port
    worker_kill    SIGKILL one gateway worker; `gateway serve` then stops the others and exits, and is restarted
    server_kill    SIGKILL the whole gateway (its process group: parent and workers); it is restarted
    redis_cut      the gateway-Redis link goes down a moment (every connection cut, new ones refused)

All round long both links also inject faults at random: delays, dropped
requests and answers, resets and duplicates between terminal and gateway;
delays (past the gateway's Redis timeout, so the command arrives late),
dropped commands, lost replies (the script ran, its reply never came) and
resets between gateway and Redis. When the schedule ends every component is
brought back, the load's end phase resumes every terminal's unfinished
operations and flushes its outbox, then Redis is SIGKILLed once more and
restarted, and the books are read from what it recovered. Per round and in
total (`var/reliability/report.json`):

    redis_kills, gateway_kills (worker_kills + server_kills), network_faults
                          what was done to it (network_faults: both links' injected faults and the cuts)
    requests              operations the terminals sent (sales, refunds, cancels, reversals, ...)
    acknowledged          sales a terminal saw approved
    acknowledged_lost     of those, absent from Redis after the round: no payment record with its
                          approval, or no journal entry debiting it
    follow_ups_acknowledged, follow_ups_lost
                          refunds, cancels and reversals a terminal saw done; those whose effect is absent
    applied_twice         journal entries beyond one per sale (order reference), one payment entry,
                          cancel or reversal per payment, and one refund entry per refund request sent
    unresolved            sales the SDK did not bring to approved, declined or reversed (a queued
                          reversal counts once it was delivered) and follow-ups whose outcome stayed unknown
    audit_clean           `gateway audit` (the command, on the recovered data) exits 0
    passed                all of the above zero or clean, and every load check of every round passed

Shape: the chaos schedule (`plan_chaos`) and the ledger checks (`find_*`, pure
functions over the load's `Observations` and the `Books` read from Redis) are
pure, so a test can hand them a broken ledger; `run_soak` is the shell.

Errors::

    Exception
     └── SoakError    a component did not come back in time (a hang) or the run could not start; `main` exits 2
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence

import aiohttp

from gateway import keyspace
from gateway.embedded_redis import EmbeddedRedis, EmbeddedRedisError, die_with_parent, free_port, redis_server_binary
from simulators import load
from simulators.fault_proxy import Fault, RedisFaultProxy, Rates

__all__ = [
    "Books", "ChaosEvent", "JournalRecord", "SoakError", "SoakOptions", "StoredPayment", "find_acknowledged_lost",
    "find_applied_twice", "find_follow_ups_lost", "find_unresolved", "main", "parse_redis_faults", "plan_chaos",
    "read_books", "run_soak",
]

CHAOS_KINDS = ("redis_kill", "worker_kill", "server_kill", "redis_cut")
REDIS_FAULT_NAMES = ("delay", "drop_request", "drop_response", "reset", "reset_response", "delay_s")
REDIS_FAULTS_ON: tuple[tuple[str, float], ...] = (
    ("delay", 0.003), ("drop_request", 0.001), ("drop_response", 0.001), ("reset", 0.001),
    ("reset_response", 0.004), ("delay_s", 2.5),
)
"""About one Redis command in a hundred disturbed, lost replies most often. delay_s is above the
gateway's Redis timeout (GATEWAY_REDIS_TIMEOUT_S): the gateway gives up, and the command still
reaches Redis late. A sale is one or two commands, so about one sale in seventy is hit."""
TERMINAL_RETRY_DELAY_S = (0.2, 2.0)
"""The terminals back off as the SDK does by default (PosConfig): hundreds of terminals retrying
every quarter second while the gateway restarts would starve a small machine of CPU."""

# The gateway as the soak runs it.
GATEWAY_REDIS_TIMEOUT_S = 2  # POINTGATE_REDIS_SOCKET_TIMEOUT_S: a dead link costs a terminal 2 s, not 5
GATEWAY_GRACE_S = 1  # POINTGATE_SHUTDOWN_GRACE_S: the other workers' drain after one is killed
GATEWAY_READY_TIMEOUT_S = 60.0  # a gateway that is not back within this is a hang: the soak stops
REDIS_READY_TIMEOUT_S = 60.0  # replaying the AOF of a long soak takes a second or two
SUPERVISE_POLL_S = 0.05
RESPAWN_DELAY_S = 0.2  # between an exit and the next start, so a start-up that keeps failing does not spin
READY_POLL_S = 0.1
LISTEN_POLL_S = 0.5  # between reads of /proc/net/tcp while the last workers start
READY_PROBE_TIMEOUT_S = 5.0  # the soak's own loop is busy with hundreds of terminals; a ready gateway answers in ms
HTTP_TIMEOUT_S = 5.0
AUDIT_TIMEOUT_S = 120.0

# The schedule.
CHAOS_START_S = 0.5  # after the first operation, so every round starts with some traffic
CHAOS_QUIET_TAIL_S = 1.0  # nothing strikes in the last second of sending
DOWNTIME_S_MIN = 0.1

# Limits.
ROUNDS_MAX = 1000
EVENTS_PER_ROUND_MAX = 100
VIOLATIONS_LISTED_MAX = 20  # per round in the report; the counts are always complete
RUNS_KEPT = 3  # soak run directories kept under var_dir/runs (each holds a Redis AOF and gateway log)
XRANGE_COUNT = 1000
PIPELINE_BATCH = 500


class SoakError(Exception):
    """A component did not come back in time, or the soak could not be set up."""


# ---------------------------------------------------------------------------
# Options and the chaos schedule (pure).


@dataclass(frozen=True)
class SoakOptions:
    """Defaults: `make soak`, about eight minutes on a 2-core machine."""

    rounds: int = 5
    round_s: float = 60.0
    """Seconds of sending per round (the load's `seconds`)."""
    rate_per_s: float = 30.0
    terminals: int = 8
    members: int = 100  # enough phones for 30/s for a minute: a phone shows ten codes per 30 s step
    workers: int = 2
    redis_kills: int = 3
    """Per round, at random moments, besides the kill after each round."""
    worker_kills: int = 1
    server_kills: int = 1
    redis_cuts: int = 2
    downtime_s_max: float = 1.5
    """How long Redis stays dead, or the link down, at most (uniform from 0.1 s)."""
    terminal_faults: tuple[tuple[str, float], ...] = load.FAULTS_ON
    redis_faults: tuple[tuple[str, float], ...] = REDIS_FAULTS_ON
    deadline_s: float = 8.0
    """The terminals' unknown_outcome_deadline_s. A gateway restart takes 3-8 s here (three Python
    processes importing on two cores), so some sales ride it out and some are reversed."""
    seed: int = 1
    var_dir: str = "var/reliability"
    report_path: str = "var/reliability/report.json"
    config_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        events = self.redis_kills + self.worker_kills + self.server_kills + self.redis_cuts
        checks = (
            (1 <= self.rounds <= ROUNDS_MAX, f"rounds must be 1-{ROUNDS_MAX}"),
            (self.round_s >= CHAOS_START_S + CHAOS_QUIET_TAIL_S + 1, "a round must last at least 2.5 s"),
            (min(self.redis_kills, self.worker_kills, self.server_kills, self.redis_cuts) >= 0,
             "event counts must be zero or more"),
            (events <= EVENTS_PER_ROUND_MAX, f"at most {EVENTS_PER_ROUND_MAX} events per round"),
            (1 <= self.workers <= 16, "workers must be 1-16"),
            (DOWNTIME_S_MIN <= self.downtime_s_max <= 30, f"downtime_s_max must be {DOWNTIME_S_MIN}-30 s"),
            (self.deadline_s > 0, "deadline_s must be positive"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        _check_redis_faults(dict(self.redis_faults))
        # The load's own validation of its part (terminals, members, rate, terminal faults).
        self.load_options(0, Path(self.var_dir))

    def load_options(self, round_no: int, round_dir: Path, base_url: str = "http://127.0.0.1:1") -> load.Options:
        return load.Options(
            base_url=base_url, config_dir=self.config_dir, terminals=self.terminals, members=self.members,
            rate_per_s=self.rate_per_s, seconds=self.round_s, faults=self.terminal_faults,
            seed=self.seed * 1000 + round_no, deadline_s=self.deadline_s, progress=False,
            report_path=str(round_dir / "load-report.json"), var_dir=str(round_dir),
            retry_delay_s_base=TERMINAL_RETRY_DELAY_S[0], retry_delay_s_max=TERMINAL_RETRY_DELAY_S[1])

    def public(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["terminal_faults"] = dict(self.terminal_faults)
        values["redis_faults"] = dict(self.redis_faults)
        return values


def _check_redis_faults(rates: Mapping[str, float]) -> None:
    unknown = set(rates) - set(REDIS_FAULT_NAMES)
    if unknown:
        raise ValueError(f"no Redis fault {sorted(unknown)[0]!r}; they are {', '.join(REDIS_FAULT_NAMES)}")
    Rates(**rates)  # each 0-1, their sum at most 1, delay_s bounded


def parse_redis_faults(text: str) -> tuple[tuple[str, float], ...]:
    """`reset_response=0.01,delay=0.02,delay_s=1.5`, `on` (REDIS_FAULTS_ON) or `off`."""
    text = text.strip()
    if text in ("", "off", "none"):
        return ()
    if text == "on":
        return REDIS_FAULTS_ON
    rates = load.parse_pairs(text, REDIS_FAULT_NAMES, "Redis fault")
    _check_redis_faults(rates)
    return tuple((name, rates[name]) for name in REDIS_FAULT_NAMES if name in rates)


@dataclass(frozen=True, slots=True)
class ChaosEvent:
    at_s: float
    """Seconds after the round's first operation; an event whose time has passed (the one before
    took long to recover from) strikes at once."""
    kind: str
    downtime_s: float
    """redis_kill: how long Redis stays dead; redis_cut: how long the link is down; else 0."""
    pick: float
    """Uniform in [0, 1): which worker a worker_kill takes."""


def plan_chaos(options: SoakOptions, round_no: int) -> tuple[ChaosEvent, ...]:
    """The round's events, at uniform random times inside the sending window, in time order."""
    rng = random.Random(f"pointgate-soak:{options.seed}:{round_no}:chaos")
    kinds = (["redis_kill"] * options.redis_kills + ["worker_kill"] * options.worker_kills
             + ["server_kill"] * options.server_kills + ["redis_cut"] * options.redis_cuts)
    rng.shuffle(kinds)
    window = (CHAOS_START_S, options.round_s - CHAOS_QUIET_TAIL_S)
    times = sorted(round(rng.uniform(*window), 3) for _ in kinds)
    events = []
    for at_s, kind in zip(times, kinds):
        downtime_s = round(rng.uniform(DOWNTIME_S_MIN, options.downtime_s_max), 3) if kind in ("redis_kill", "redis_cut") else 0.0
        events.append(ChaosEvent(at_s, kind, downtime_s, rng.random()))
    return tuple(events)


# ---------------------------------------------------------------------------
# The books as Redis holds them, and the checks over them (pure).


@dataclass(frozen=True, slots=True)
class StoredPayment:
    payment_id: str
    merchant_id: str
    order_ref: str
    state: str
    approved: bool
    """It carries an approval code: it was approved, whatever happened to it since."""
    points: int
    refunded_amount: int


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One journal entry that names a payment (payment, refund, cancel, reversal)."""

    entry_id: str
    kind: str
    payment_id: str
    merchant_id: str
    order_ref: str


@dataclass
class Books:
    payments: dict[str, StoredPayment] = field(default_factory=dict)
    """Every payment a terminal saw, or that an order reference of the round names, by id."""
    entries: list[JournalRecord] = field(default_factory=list)
    """The journal entries of those payments."""


def _entry_counts(books: Books) -> Counter[tuple[str, str]]:
    return Counter((e.payment_id, e.kind) for e in books.entries)


def find_acknowledged_lost(obs: load.Observations, books: Books) -> list[str]:
    """Approved sales with no approved payment record under their order, or no journal entry debiting them."""
    counts = _entry_counts(books)
    lost = []
    for s in obs.sales:
        if s.outcome != "approved":
            continue
        stored = books.payments.get(s.payment_id or "")
        if stored is None or not stored.approved:
            lost.append(f"approval {s.payment_id} ({s.order_ref} at {s.terminal}) has no approved payment in Redis")
        elif (stored.merchant_id, stored.order_ref, stored.points) != (s.merchant_id, s.order_ref, s.points):
            lost.append(f"approval {s.payment_id} is {stored.merchant_id}/{stored.order_ref} for {stored.points} in "
                        f"Redis, not {s.merchant_id}/{s.order_ref} for {s.points}")
        elif counts[(stored.payment_id, "payment")] == 0:
            lost.append(f"approval {s.payment_id} ({s.order_ref}) has no journal entry")
    return lost


def acknowledged_follow_ups(obs: load.Observations) -> list[load.FollowUpObservation]:
    """Refunds, cancels and reversals of a payment that a terminal saw done."""
    done = {"refund": "refunded", "cancel": "cancelled", "reversal": "reversed"}
    return [f for f in obs.follow_ups if done.get(f.kind) == f.outcome]


def find_follow_ups_lost(obs: load.Observations, books: Books) -> list[str]:
    """Acknowledged refunds, cancels and reversals whose effect is not in the payment or the journal."""
    counts = _entry_counts(books)
    lost = []
    for f in acknowledged_follow_ups(obs):
        stored = books.payments.get(f.payment_id)
        if stored is None:
            lost.append(f"{f.kind} of {f.payment_id} at {f.terminal}: no such payment in Redis")
        elif f.kind == "refund" and (stored.refunded_amount < f.amount or counts[(f.payment_id, "refund")] == 0):
            lost.append(f"refund of {f.amount} on {f.payment_id}: Redis has refunded {stored.refunded_amount} "
                        f"in {counts[(f.payment_id, 'refund')]} entries")
        elif f.kind == "cancel" and (stored.state != "cancelled" or counts[(f.payment_id, "cancel")] == 0):
            lost.append(f"cancel of {f.payment_id}: Redis has it {stored.state}")
        elif f.kind == "reversal" and (stored.state != "reversed" or counts[(f.payment_id, "reversal")] == 0):
            lost.append(f"reversal of {f.payment_id}: Redis has it {stored.state}")
    return lost


def find_applied_twice(obs: load.Observations, books: Books) -> list[str]:
    """More than one debit per sale or payment, more than one cancel or reversal per payment, or more
    refund entries on a payment than refund requests were sent for it."""
    violations = []
    sales = Counter((e.merchant_id, e.order_ref) for e in books.entries if e.kind == "payment")
    for (merchant_id, order_ref), n in sorted(sales.items()):
        if n > 1:
            violations.append(f"order {merchant_id}/{order_ref} was debited {n} times")
    refunds_sent = Counter(f.payment_id for f in obs.follow_ups if f.kind == "refund")
    for (payment_id, kind), n in sorted(_entry_counts(books).items()):
        allowed = refunds_sent[payment_id] if kind == "refund" else 1
        if n > allowed:
            violations.append(f"payment {payment_id} has {n} {kind} entries (at most {allowed} requested)")
    return violations


def find_unresolved(obs: load.Observations) -> list[str]:
    """Sales not approved, declined or reversed (a queued reversal counts once delivered), and
    follow-ups whose outcome is still unknown."""
    unresolved = []
    for s in obs.sales:
        delivered = s.outcome == "reversal_queued" and s.detail.startswith("reversal ")
        if s.outcome not in ("approved", "declined", "reversed") and not delivered:
            unresolved.append(f"sale {s.order_ref} at {s.terminal} ended {s.outcome}{f' ({s.detail})' if s.detail else ''}")
    for f in obs.follow_ups:
        if f.outcome in load.FOLLOW_UP_UNKNOWN:
            unresolved.append(f"{f.kind} {f.idempotency_key} at {f.terminal} ended {f.outcome}")
    return unresolved


async def read_books(redis_url: str, obs: load.Observations) -> Books:
    """The payments and journal entries of the round's sales, read straight from Redis."""
    from gateway.store import connect

    client = connect(redis_url, socket_timeout_s=HTTP_TIMEOUT_S)
    try:
        return await read_books_with(client, obs)
    finally:
        await client.aclose()


async def read_books_with(client: Any, obs: load.Observations) -> Books:
    """`read_books` on an open client: one server's, or a cluster's (which splits each pipeline
    by node, so the books are read from every primary)."""
    books = Books()
    payment_ids = {s.payment_id for s in obs.sales if s.payment_id} | {f.payment_id for f in obs.follow_ups}
    orders = [(s.merchant_id, s.order_ref) for s in obs.sales]
    for batch in _batches(orders, PIPELINE_BATCH):
        async with client.pipeline(transaction=False) as pipe:
            for merchant_id, order_ref in batch:
                pipe.hget(keyspace.order_key(merchant_id, order_ref), "payment_id")
            payment_ids |= {pid for pid in await pipe.execute() if pid}
    ordered = sorted(payment_ids)
    for batch in _batches(ordered, PIPELINE_BATCH):
        async with client.pipeline(transaction=False) as pipe:
            for payment_id in batch:
                pipe.hgetall(keyspace.payment_key(payment_id))
            for payment_id, record in zip(batch, await pipe.execute()):
                if record:
                    books.payments[payment_id] = StoredPayment(
                        payment_id, record.get("merchant_id", ""), record.get("order_ref", ""),
                        record.get("state", ""), bool(record.get("approval_code")), int(record.get("points") or 0),
                        int(record.get("refunded_amount") or 0))
    order_set = set(orders)
    for partition in sorted({keyspace.partition_of_payment(p) for p in payment_ids}):
        async for fields in _journal(client, partition):
            meta = json.loads(fields.get("meta") or "{}")
            payment_id = str(meta.get("payment_id") or "")
            order = (str(meta.get("merchant_id") or ""), str(meta.get("order_ref") or ""))
            if payment_id in payment_ids or order in order_set:
                books.entries.append(JournalRecord(fields["entry"], fields["kind"], payment_id, *order))
    return books


async def _journal(client: Any, partition: int) -> AsyncIterator[Mapping[str, str]]:
    key = keyspace.journal_key(partition)
    start = "-"
    while True:
        chunk = await client.xrange(key, start, "+", count=XRANGE_COUNT)
        for _, fields in chunk:
            yield fields
        if len(chunk) < XRANGE_COUNT:
            return
        start = "(" + chunk[-1][0]


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# ---------------------------------------------------------------------------
# The shell: Redis, the gateway under supervision, the two proxies, the chaos.


class GatewayProcess:
    """`gateway serve --workers N` as a child process, started again whenever it exits."""

    def __init__(self, port: int, workers: int, env: Mapping[str, str], log_path: Path, config_dir: str | None) -> None:
        self.port, self.workers, self.env, self.log_path, self.config_dir = port, workers, dict(env), log_path, config_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exits_expected = 0
        self.unplanned_exits: list[int] = []
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> None:
        config = ["--config-dir", self.config_dir] if self.config_dir else []
        with open(self.log_path, "ab") as log:
            # Its own process group, so a server kill takes the parent and its workers at once;
            # SIGTERM when the soak dies, so no gateway outlives it.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", *config, "serve", "--port", str(self.port),
                 "--workers", str(self.workers)],
                env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent)
        self.starts += 1

    def start(self) -> None:
        """Start it and supervise it from now on (call from the event loop's thread)."""
        self._spawn()
        self._supervisor = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_POLL_S)
            assert self.process is not None
            code = self.process.poll()
            if code is None:
                continue
            if self.exits_expected:
                self.exits_expected -= 1
            else:
                self.unplanned_exits.append(code)
            await asyncio.sleep(RESPAWN_DELAY_S)
            self._spawn()

    def worker_pids(self) -> list[int]:
        if self.process is None or self.process.poll() is not None:
            return []
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in children.split()]

    def kill_worker(self, pick: float) -> bool:
        pids = self.worker_pids()
        if not pids:
            return False
        self.exits_expected += 1  # the parent stops the rest and exits when one worker dies
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[int(pick * len(pids))], signal.SIGKILL)
        return True

    def kill_server(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            return False
        self.exits_expected += 1
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return True

    async def wait_restarted(self, starts_before: int, timeout_s: float = GATEWAY_READY_TIMEOUT_S) -> None:
        """Wait until the supervisor has started a new gateway since `starts_before`, and it is ready."""
        deadline = time.monotonic() + timeout_s
        while self.starts <= starts_before:
            if time.monotonic() > deadline:
                raise SoakError(f"gateway serve did not exit and restart within {timeout_s:g} s of being killed")
            await asyncio.sleep(SUPERVISE_POLL_S)
        await self.wait_ready(max(1.0, deadline - time.monotonic()))

    def listening_workers(self) -> int:
        """Workers that have bound the port, i.e. finished starting (aiohttp binds after start-up)."""
        listening = _listening_inodes(self.port)
        count = 0
        for pid in self.worker_pids():
            with contextlib.suppress(OSError):
                fds = Path(f"/proc/{pid}/fd")
                if any(os.readlink(fd) in listening for fd in fds.iterdir()):
                    count += 1
        return count

    async def wait_ready(self, timeout_s: float = GATEWAY_READY_TIMEOUT_S) -> None:
        """Every worker started and listening, and /readyz answers 200 (Redis reachable, scripts loaded)."""
        deadline = time.monotonic() + timeout_s
        timeout = aiohttp.ClientTimeout(total=READY_PROBE_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                try:
                    async with session.get(self.url + "/readyz") as response:
                        answered = response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    answered = False
                # /proc/net/tcp lists every socket, TIME_WAIT too: tens of milliseconds to read
                # after a retry storm, so it is read on a thread, and only once /readyz answers.
                if answered and await asyncio.to_thread(self.listening_workers) >= self.workers:
                    return
                await asyncio.sleep(READY_POLL_S if not answered else LISTEN_POLL_S)
        raise SoakError(f"the gateway was not ready within {timeout_s:g} s (log: {self.log_path})")

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.process.wait), GATEWAY_GRACE_S + 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await asyncio.to_thread(self.process.wait)


def _listening_inodes(port: int) -> set[str]:
    """`socket:[inode]` of every IPv4 socket listening on `port` (from /proc/net/tcp)."""
    found = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(f"socket:[{fields[9]}]")
    return found


@dataclass
class _Counts:
    redis_kills: int = 0
    worker_kills: int = 0
    server_kills: int = 0
    redis_cuts: int = 0
    recovery_s_max: float = 0.0
    """The longest time from a strike to the component being back (Redis answering, the gateway ready)."""


class _LoopThread:
    """An event loop on a thread of its own, for the Redis fault proxy.

    The gateway's every Redis round trip passes through that proxy. On the load
    generator's loop it would wait behind hundreds of terminals retrying while
    the gateway restarts (seconds on two cores), and the gateway's Redis timeout
    would then measure the harness. On its own thread a relay waits at most for
    the interpreter's thread switch (5 ms).
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="redis-fault-proxy", daemon=True)
        self.thread.start()

    async def run(self, coroutine: Awaitable[Any]) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))  # type: ignore[arg-type]

    async def call(self, function: Callable[[], Any]) -> Any:
        """`function()` on the loop's thread (the proxy's state belongs to it); its result."""
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def call_there() -> None:
            try:
                done.set_result(function())
            except BaseException as e:  # handed back to the caller
                done.set_exception(e)

        self.loop.call_soon_threadsafe(call_there)
        return await asyncio.wrap_future(done)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class _Soak:
    """The components of one soak and how to strike them."""

    def __init__(self, options: SoakOptions, run_dir: Path) -> None:
        self.options, self.run_dir = options, run_dir
        self.redis = EmbeddedRedis(run_dir / "redis", start_timeout_s=REDIS_READY_TIMEOUT_S)
        self.redis_proxy: RedisFaultProxy | None = None
        self.link_thread: _LoopThread | None = None
        self.gateway: GatewayProcess | None = None
        self.keyring_path = run_dir / "keyring.json"
        self.redis_rates: dict[str, float] = {}
        """The random faults of the gateway-Redis link while a round's load is sent."""

    @property
    def direct_url(self) -> str:
        """Redis itself, not through the faulty link: for setup, the books and the audit."""
        return self.redis.url

    async def start(self) -> None:
        self.redis.launch()  # on the loop's thread: see EmbeddedRedis.launch
        await asyncio.to_thread(self.redis.wait_ready)
        self.link_thread = _LoopThread()
        self.redis_proxy = await self.link_thread.run(
            RedisFaultProxy("127.0.0.1", self.redis.port, seed=self.options.seed).start())
        env = dict(os.environ, REDIS_URL=self.redis_proxy.url, POINTGATE_KEYRING_PATH=str(self.keyring_path),
                   POINTGATE_REDIS_SOCKET_TIMEOUT_S=str(GATEWAY_REDIS_TIMEOUT_S),
                   POINTGATE_SHUTDOWN_GRACE_S=str(GATEWAY_GRACE_S),
                   POINTGATE_SETTLEMENTS_DIR=str(self.run_dir / "settlements"))
        self.gateway = GatewayProcess(free_port(), self.options.workers, env, self.run_dir / "gateway.log",
                                      self.options.config_dir)
        self.gateway.start()
        await self.gateway.wait_ready()

    async def close(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
        if self.link_thread is not None:
            if self.redis_proxy is not None:
                await self.link_thread.run(self.redis_proxy.close())
            self.link_thread.stop()
        self.redis.stop()

    async def link(self, change: Callable[[RedisFaultProxy], Any]) -> Any:
        """Change or read the gateway-Redis link, on its own thread."""
        assert self.link_thread is not None and self.redis_proxy is not None
        proxy = self.redis_proxy
        return await self.link_thread.call(lambda: change(proxy))

    async def link_down(self, down: bool) -> None:
        def set_down(proxy: RedisFaultProxy) -> None:
            proxy.down = down

        await self.link(set_down)

    async def link_faults(self) -> Counter[Fault]:
        return await self.link(lambda proxy: Counter(proxy.stats.faults))

    # -- strikes

    async def kill_redis(self, downtime_s: float, counts: _Counts) -> None:
        self.redis.kill()
        counts.redis_kills += 1
        struck = time.monotonic()
        await asyncio.sleep(downtime_s)
        await self._redis_up()
        counts.recovery_s_max = max(counts.recovery_s_max, time.monotonic() - struck - downtime_s)

    async def _redis_up(self) -> None:
        if not self.redis.running:
            try:
                self.redis.launch()
            except EmbeddedRedisError as e:
                raise SoakError(f"Redis could not be started again: {e}") from None
        try:
            await asyncio.to_thread(self.redis.wait_ready)
        except EmbeddedRedisError as e:
            raise SoakError(f"Redis did not come back: {e}") from None

    async def strike(self, event: ChaosEvent, counts: _Counts) -> None:
        assert self.gateway is not None and self.redis_proxy is not None
        if event.kind == "redis_kill":
            await self.kill_redis(event.downtime_s, counts)
            return
        if event.kind == "redis_cut":
            await self.link_down(True)
            counts.redis_cuts += 1
            try:
                await asyncio.sleep(event.downtime_s)
            finally:
                await self.link_down(False)
            return
        starts = self.gateway.starts
        struck = time.monotonic()
        if event.kind == "worker_kill" and self.gateway.kill_worker(event.pick):
            counts.worker_kills += 1
        elif event.kind == "server_kill" and self.gateway.kill_server():
            counts.server_kills += 1
        else:
            return
        # A gateway process stops when its start-up meets a Redis error, and the supervisor starts
        # it again; random link faults during the restart would measure those retries, not
        # payments, so they pause until it is back (the kills and cuts still meet start-ups).
        await self.link(lambda proxy: proxy.set_rates())
        try:
            await self.gateway.wait_restarted(starts)
        finally:
            rates = dict(self.redis_rates)
            await self.link(lambda proxy: proxy.set_rates(**rates))
        counts.recovery_s_max = max(counts.recovery_s_max, time.monotonic() - struck)

    async def all_up(self) -> None:
        """Every component back: Redis answering, the link up without faults, the gateway ready."""
        assert self.gateway is not None and self.redis_proxy is not None
        self.redis_rates = {}
        await self.link(lambda proxy: proxy.clear())
        await self.link_down(False)
        await self._redis_up()
        await self.gateway.wait_ready()

    async def chaos(self, events: Sequence[ChaosEvent], counts: _Counts, say: Any) -> None:
        """Strike each event at its time (at once if the one before took longer to recover from)."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for event in events:
            delay = t0 + event.at_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            # Each strike hits a whole system: a gateway still restarting from an unplanned exit
            # (a start-up that met the last strike) is waited for first.
            assert self.gateway is not None
            await self.gateway.wait_ready()
            started = loop.time()
            await self.strike(event, counts)
            down = f" for {event.downtime_s:.1f} s" if event.downtime_s else ""
            say(f"{started - t0:6.1f} s  {event.kind}{down}, back after {loop.time() - started:.1f} s")


class _DirectAdmin:
    """The load's setup and audit straight on Redis (not through the faulty link), a fresh
    connection each call, so a Redis restart in between costs nothing."""

    def __init__(self, redis_url: str, keyring_path: Path) -> None:
        self.redis_url, self.keyring_path = redis_url, keyring_path

    @contextlib.asynccontextmanager
    async def _registry(self) -> AsyncIterator[Any]:
        from gateway.keyring import Keyring
        from gateway.merchants import MerchantRegistry
        from gateway.store import Store, connect

        store = Store(connect(self.redis_url, socket_timeout_s=HTTP_TIMEOUT_S))
        try:
            yield MerchantRegistry(store, Keyring.load(str(self.keyring_path), create=False)), store
        finally:
            await store.close()

    async def issue_key(self, merchant_id: str) -> tuple[str, str]:
        async with self._registry() as (registry, _):
            issued = await registry.issue_key(merchant_id)
            return issued.key_id, issued.secret

    async def revoke_key(self, merchant_id: str, key_id: str) -> None:
        async with self._registry() as (registry, _):
            await registry.revoke_key(merchant_id, key_id)

    async def add_terminal(self, merchant_id: str, store_id: str, terminal_id: str) -> None:
        async with self._registry() as (registry, _):
            await registry.add_terminal(merchant_id, store_id, terminal_id)

    async def audit(self) -> load.AuditSnapshot:
        from gateway.audit import run_audit

        async with self._registry() as (_, store):
            report = await run_audit(store)
            return load.AuditSnapshot(report.totals_by_unit(), tuple(report.problems), report.entries)

    async def close(self) -> None:
        pass


async def gateway_audit(redis_url: str, keyring_path: Path, config_dir: str | None) -> tuple[bool, str]:
    """`gateway audit` as an operator runs it: (exit status 0, its last line)."""
    return await gateway_audit_with({**os.environ, "REDIS_URL": redis_url, "POINTGATE_KEYRING_PATH": str(keyring_path)},
                                    config_dir)


async def gateway_audit_with(env: Mapping[str, str], config_dir: str | None) -> tuple[bool, str]:
    """`gateway audit` with the environment `env` names Redis in (a cluster's nodes, say)."""
    config = ["--config-dir", config_dir] if config_dir else []
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *config, "audit", env=dict(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), AUDIT_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise SoakError(f"`gateway audit` took more than {AUDIT_TIMEOUT_S:g} s") from None
    lines = out.decode(errors="replace").strip().splitlines()
    return process.returncode == 0, lines[-1] if lines else ""


# ---------------------------------------------------------------------------
# Rounds, figures, the report.


FIGURES = ("redis_kills", "gateway_kills", "worker_kills", "server_kills", "redis_cuts", "network_faults",
           "requests", "acknowledged", "acknowledged_lost", "follow_ups_acknowledged", "follow_ups_lost",
           "applied_twice", "unresolved", "outbox_left")
"""The integer figures of a round, summed over rounds for the soak."""


def _injected(faults: Mapping[Any, int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(faults.items(), key=lambda kv: str(kv[0])) if str(k) != Fault.PASS and v}


async def _round(soak: _Soak, options: SoakOptions, round_no: int, say: Any) -> dict[str, Any]:
    assert soak.gateway is not None and soak.redis_proxy is not None
    round_dir = soak.run_dir / f"round-{round_no:02d}"
    events = plan_chaos(options, round_no)
    counts = _Counts()
    redis_faults_before = await soak.link_faults()
    starts_before, unplanned_before = soak.gateway.starts, len(soak.gateway.unplanned_exits)

    @contextlib.asynccontextmanager
    async def around_drive() -> AsyncIterator[None]:
        soak.redis_rates = rates = dict(options.redis_faults)
        await soak.link(lambda proxy: proxy.set_rates(**rates))
        chaos = asyncio.create_task(soak.chaos(events, counts, say))
        try:
            yield
            # The sending is over; a strike still recovering is waited for, not cut short.
            await chaos
        finally:
            chaos.cancel()
            await asyncio.gather(chaos, return_exceptions=True)
            await soak.all_up()

    say(f"round {round_no}: {options.round_s:g} s at {options.rate_per_s:g}/s, "
        f"{', '.join(f'{e.kind}@{e.at_s:.1f}' for e in events) or 'no strikes'}")
    started = time.monotonic()
    report = await load.run_load(options.load_options(round_no, round_dir, soak.gateway.url),
                                 _DirectAdmin(soak.direct_url, soak.keyring_path), around_drive=around_drive)
    # Every acknowledged write must be on disk: crash Redis once more and read what it recovers.
    await soak.kill_redis(0.0, counts)
    await soak.gateway.wait_ready()
    obs = report.observations
    assert obs is not None
    books = await read_books(soak.direct_url, obs)
    audit_clean, audit_line = await gateway_audit(soak.direct_url, soak.keyring_path, options.config_dir)

    lost = find_acknowledged_lost(obs, books)
    follow_ups_lost = find_follow_ups_lost(obs, books)
    twice = find_applied_twice(obs, books)
    unresolved = find_unresolved(obs)
    outbox_left = sum(t.outbox_queued + t.outbox_dead + t.unfinished for t in obs.terminals)
    terminal_link = _injected(report.faults.get("injected", {}))
    redis_link = _injected(await soak.link_faults() - redis_faults_before)
    failed_checks = [c for c in report.checks if not c.passed]
    violations = ([f"lost: {v}" for v in lost + follow_ups_lost] + [f"applied twice: {v}" for v in twice]
                  + [f"unresolved: {v}" for v in unresolved]
                  + [f"{c.name}: {v}" for c in failed_checks for v in c.violations]
                  + ([] if audit_clean else [f"gateway audit: {audit_line}"]))
    figures: dict[str, Any] = {
        "round": round_no,
        "redis_kills": counts.redis_kills,
        "gateway_kills": counts.worker_kills + counts.server_kills,
        "worker_kills": counts.worker_kills,
        "server_kills": counts.server_kills,
        "redis_cuts": counts.redis_cuts,
        "network_faults": sum(terminal_link.values()) + sum(redis_link.values()) + counts.redis_cuts,
        "requests": int(report.latency_ms["all"]["count"]),
        "acknowledged": sum(1 for s in obs.sales if s.outcome == "approved"),
        "acknowledged_lost": len(lost),
        "follow_ups_acknowledged": len(acknowledged_follow_ups(obs)),
        "follow_ups_lost": len(follow_ups_lost),
        "applied_twice": len(twice),
        "unresolved": len(unresolved),
        "outbox_left": outbox_left,
        "audit_clean": audit_clean and not any(c.name == "audit_clean" for c in failed_checks),
        "load_checks": {c.name: c.passed for c in report.checks},
        "passed": not violations and outbox_left == 0,
        "network_faults_by_link": {"terminal_gateway": terminal_link, "gateway_redis": redis_link,
                                   "gateway_redis_cuts": counts.redis_cuts},
        "http_requests": sum(report.faults.get("injected", {}).values()),
        "sale_outcomes": dict(report.outcomes.get("sale", {})),
        "gateway_starts": soak.gateway.starts - starts_before,
        "gateway_unplanned_exits": soak.gateway.unplanned_exits[unplanned_before:],
        "recovery_s_max": round(counts.recovery_s_max, 2),
        "duration_s": round(time.monotonic() - started, 1),
        "latency_ms": report.latency_ms["all"],
        "journal_entries_checked": len(books.entries),
        "audit": audit_line,
        "violation_count": len(violations),
        "violations": violations[:VIOLATIONS_LISTED_MAX],
    }
    say(f"round {round_no}: {figures['requests']} requests, {figures['acknowledged']} acknowledged, "
        f"lost {figures['acknowledged_lost']}, twice {figures['applied_twice']}, unresolved {figures['unresolved']}, "
        f"audit {'clean' if figures['audit_clean'] else 'FAILED'}; {figures['redis_kills']} Redis kills, "
        f"{figures['gateway_kills']} gateway kills, {figures['network_faults']} network faults "
        f"({figures['duration_s']:.0f} s)")
    return figures


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    memory_gib = 0.0
    with contextlib.suppress(OSError, ValueError, StopIteration):
        kib = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        memory_gib = round(int(kib.split()[1]) / 1024 / 1024, 1)
    redis_version = ""
    with contextlib.suppress(OSError, EmbeddedRedisError, subprocess.SubprocessError):
        out = subprocess.run([str(redis_server_binary()), "--version"], capture_output=True, text=True, timeout=10).stdout
        redis_version = out.split()[2].removeprefix("v=") if len(out.split()) > 2 else out.strip()
    return {"hostname": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(), "cpu_model": cpu,
            "memory_gib": memory_gib, "python": platform.python_version(), "redis": redis_version}


def summarise(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {name: sum(int(r[name]) for r in rounds) for name in FIGURES}
    totals["audit_clean"] = all(r["audit_clean"] for r in rounds)
    totals["passed"] = all(r["passed"] for r in rounds)
    by_link: dict[str, Counter[str]] = {"terminal_gateway": Counter(), "gateway_redis": Counter()}
    for r in rounds:
        for link in by_link:
            by_link[link].update(r["network_faults_by_link"][link])
    totals["network_faults_by_link"] = {**{k: dict(sorted(v.items())) for k, v in by_link.items()},
                                        "gateway_redis_cuts": totals["redis_cuts"]}
    totals["http_requests"] = sum(r["http_requests"] for r in rounds)
    totals["gateway_unplanned_exits"] = sum(len(r["gateway_unplanned_exits"]) for r in rounds)
    totals["recovery_s_max"] = max((r["recovery_s_max"] for r in rounds), default=0.0)
    return totals


RUN_DIR_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-s-?[0-9]+$")


def _prune_runs(runs_dir: Path, keep: int) -> None:
    if not runs_dir.is_dir():
        return
    ours = sorted(p for p in runs_dir.iterdir() if p.is_dir() and RUN_DIR_RE.match(p.name))
    for old in ours[:max(0, len(ours) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


async def run_soak(options: SoakOptions) -> dict[str, Any]:
    """Run every round and return the report (also written to `options.report_path`)."""
    started_at = time.gmtime()
    started = time.monotonic()
    run_dir = Path(options.var_dir) / "runs" / f"{time.strftime('%Y%m%dT%H%M%SZ', started_at)}-s{options.seed}"
    _prune_runs(run_dir.parent, RUNS_KEPT - 1)
    run_dir.mkdir(parents=True, exist_ok=True)

    def say(line: str) -> None:
        if options.progress:
            print(f"soak: {line}", file=sys.stderr, flush=True)

    soak = _Soak(options, run_dir)
    rounds = []
    try:
        await soak.start()
        say(f"Redis {soak.direct_url} (data {soak.redis.data_dir}), gateway {soak.gateway.url if soak.gateway else ''} "
            f"with {options.workers} workers")
        for round_no in range(1, options.rounds + 1):
            rounds.append(await _round(soak, options, round_no, say))
    finally:
        await soak.close()
    report: dict[str, Any] = {
        **summarise(rounds),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", started_at),
        "duration_s": round(time.monotonic() - started, 1),
        "machine": machine(),
        "options": options.public(),
        "run_dir": str(run_dir),
        "rounds": rounds,
    }
    if options.report_path:
        path = Path(options.report_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def render(report: Mapping[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"pointgate soak: {len(report['rounds'])} rounds, {report['duration_s']:.0f} s, started {report['started_at']} "
        f"on {m['hostname']} ({m['cpus']} CPUs, {m['cpu_model'] or 'unknown CPU'}, Redis {m['redis']})",
        f"  redis_kills {report['redis_kills']}, gateway_kills {report['gateway_kills']} "
        f"({report['worker_kills']} workers, {report['server_kills']} whole servers), "
        f"network_faults {report['network_faults']} (Redis link cuts {report['redis_cuts']})",
        f"  requests {report['requests']}, acknowledged {report['acknowledged']} "
        f"(+{report['follow_ups_acknowledged']} refunds, cancels, reversals)",
        f"  acknowledged_lost {report['acknowledged_lost']}, follow_ups_lost {report['follow_ups_lost']}, "
        f"applied_twice {report['applied_twice']}, unresolved {report['unresolved']}, "
        f"outbox_left {report['outbox_left']}, audit_clean {str(report['audit_clean']).lower()}",
    ]
    for r in report["rounds"]:
        for v in r["violations"][:5]:
            lines.append(f"  round {r['round']}: {v}")
    lines.append(f"verdict: {'PASSED' if report['passed'] else 'FAILED'}; report {report['options']['report_path']}")
    return "\n".join(lines)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    d = SoakOptions()
    parser = parser or argparse.ArgumentParser(prog="simulators soak", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=d.rounds, help=f"rounds (default {d.rounds})")
    parser.add_argument("--round-s", type=float, default=d.round_s, help=f"seconds of load per round (default {d.round_s:g})")
    parser.add_argument("--rate", type=float, default=d.rate_per_s, help=f"operations per second (default {d.rate_per_s:g})")
    parser.add_argument("--terminals", type=int, default=d.terminals, help=f"store terminals (default {d.terminals})")
    parser.add_argument("--members", type=int, default=d.members, help=f"members per round (default {d.members})")
    parser.add_argument("--workers", type=int, default=d.workers, help=f"gateway workers (default {d.workers})")
    for name in ("redis_kills", "worker_kills", "server_kills", "redis_cuts"):
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=int, default=getattr(d, name), help=f"per round (default {getattr(d, name)})")
    parser.add_argument("--terminal-faults", default="on",
                        help="terminal-gateway link, as `simulators load --faults` (default on)")
    parser.add_argument("--redis-faults", default="on",
                        help="gateway-Redis link, NAME=RATE,... of " + ", ".join(REDIS_FAULT_NAMES) + "; 'on' for "
                        + ",".join(f"{k}={v:g}" for k, v in REDIS_FAULTS_ON) + " (default on)")
    add_run_arguments(parser, d, "schedules and faults", "Redis data, gateway log, journals")
    return parser


def add_run_arguments(parser: argparse.ArgumentParser, defaults: Any, seeds: str, var_dir: str) -> None:
    """The options every supervised run takes: the terminals' deadline, the seed, where its data and
    report go, the configuration, progress (`defaults` has the matching fields)."""
    parser.add_argument("--deadline-s", type=float, default=defaults.deadline_s,
                        help=f"terminals' unknown-outcome deadline (default {defaults.deadline_s:g})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"{seeds} (default {defaults.seed})")
    parser.add_argument("--var-dir", default=defaults.var_dir, help=f"{var_dir} (default %(default)s)")
    parser.add_argument("--report", default=defaults.report_path, help="JSON report path (default %(default)s)")
    parser.add_argument("--config-dir", help="where merchants.toml is (default: config/)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run_main(prog: str, options: Callable[[], Any], run: Callable[[Any], Awaitable[Mapping[str, Any]]],
             render_report: Callable[[Mapping[str, Any]], str], errors: tuple[type[Exception], ...]) -> int:
    """Build the options, run, print the table: 0 when the report passed, 1 when not, 2 when the
    options were wrong or the run could not start (one of `errors`)."""
    try:
        built = options()
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(run(built))
    except errors as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    print(render_report(report))
    return 0 if report["passed"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    """`simulators soak ...`: 0 when every figure is clean, 1 when one is not, 2 when the soak could not run."""
    args = build_parser().parse_args(argv)
    return run_main("simulators soak", lambda: SoakOptions(
        rounds=args.rounds, round_s=args.round_s, rate_per_s=args.rate, terminals=args.terminals,
        members=args.members, workers=args.workers, redis_kills=args.redis_kills, worker_kills=args.worker_kills,
        server_kills=args.server_kills, redis_cuts=args.redis_cuts,
        terminal_faults=load.parse_faults(args.terminal_faults), redis_faults=parse_redis_faults(args.redis_faults),
        deadline_s=args.deadline_s, seed=args.seed, var_dir=args.var_dir, report_path=args.report,
        config_dir=args.config_dir, progress=not args.quiet), run_soak, render, (SoakError, load.LoadError))


if __name__ == "__main__":
    sys.exit(main())
