"""`simulators load`: open-loop load on the payment path, with proofs at the end.

Store terminals (one `AsyncPosClient` each, with its own journal) at the GS25
and CU stores of merchants.toml take payments from members enrolled over the
member API and credited over the earnings API. Operations are sent at fixed
intended times whatever the answers (open loop): a slow gateway cannot slow
the offered load down, and latency is measured from the intended send time,
so queueing shows up in the numbers instead of hiding in a late send
("coordinated omission", Gil Tene). The mix adds refunds, cancels, reversals,
replayed and expired codes, another merchant's payments and sales beyond the
balance. With faults set, the terminals reach the gateway through a
`FaultProxy` that drops, resets, delays and duplicates their requests.

At the end the faults are turned off, every terminal resumes its unfinished
operations and flushes its outbox, and five checks run over what was
observed; any violation fails the run:

    codes_approved_once       no code approved twice; no replayed, expired or over-balance code approved
    sales_resolved            every sale ended approved, declined, reversed or reversal-queued, the
                              gateway agrees the unpaid ones took nothing, every outbox is empty
    points_conserved          credits = members' balances + merchants' net payables, in total, per
                              member and per merchant, against the journal's totals
    approvals_recorded_once   each approval a terminal saw is in the gateway once, under its order
                              reference, in the state the terminals' follow-ups imply
    audit_clean               `gateway audit` finds nothing

The checks assume the run is the only traffic of its merchants and members
while it lasts (a shared gateway's other sales would move the payables).
The report also counts the terminals' HTTP attempts and the errors among them
(`attempts`): what the SDK's retries kept from the outcomes, a Redis
failover's 503s for one (simulators/cluster_failover.py).

Shape: the plan (`plan_operations`), the checks (`check_*`, pure functions over
`Observations`, so a test can hand them a broken observation) and the report's
arithmetic are pure. Members are `simulators.phone.Phone`s: enrolled over the
member API, showing offline codes computed from the published code format.
`run_load` is the shell: setup, the scheduler, the end phase and the reading
of the books. Traffic uses only public surfaces (HTTP and pos_sdk). Setup
(signing keys, terminals) and the audit go through an `Admin`: in-process
(`RegistryAdmin`, for the embedded gateway and tests) or the `gateway` command
line on REDIS_URL (`CliAdmin`).

Errors::

    Exception
     └── LoadError    the run could not be set up (options, enrolment, earnings); `main` exits 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import secrets
import shutil
import sys
import time
import tomllib
import traceback
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncContextManager, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Protocol, Sequence
from urllib.parse import urlsplit

import aiohttp

from pos_sdk import (
    AsyncPosClient, Declined, ForwardQueued, NotFound, Payment, PosConfig, PosError, RequestError, Reversed,
    ReversalQueued,
)
from pos_sdk import core as sdk_core
from pos_sdk.journal import Journal, OutboxEntry
from pos_sdk.signing import signature_headers
from simulators.fault_proxy import Fault, FaultProxy, Rates
from simulators.phone import CodesExhausted, Phone, PhoneError

__all__ = [
    "Admin", "AttemptLog", "AuditSnapshot", "CheckResult", "CliAdmin", "FollowUpObservation", "GatewayPayment",
    "LoadError", "LoadMember", "MemberBooks", "Observations", "Options", "PlannedOp", "RegistryAdmin", "Report",
    "Credit", "SaleObservation", "TerminalState", "check_approvals_recorded_once", "check_audit_clean",
    "check_codes_approved_once", "check_points_conserved", "check_sales_resolved", "expected_state",
    "latency_summary", "main", "net_points", "parse_faults", "parse_mix", "plan_operations",
    "read_books", "render_report", "run_checks", "run_from_args", "run_load", "terminal_layout",
]

KINDS = ("sale", "refund", "cancel", "reversal", "replay", "expired", "wrong_merchant", "insufficient")
CODE_KINDS = frozenset({"sale", "replay", "expired", "insufficient"})
"""Operations that present a code at a till; the rest act on an earlier approved sale."""
DEFAULT_MIX: tuple[tuple[str, float], ...] = (
    ("sale", 60), ("refund", 8), ("cancel", 6), ("reversal", 4),
    ("replay", 6), ("expired", 6), ("wrong_merchant", 4), ("insufficient", 6),
)
FAULT_NAMES = ("delay", "drop_request", "drop_response", "reset", "duplicate", "delay_s")
FAULTS_ON: tuple[tuple[str, float], ...] = (
    ("delay", 0.05), ("drop_request", 0.01), ("drop_response", 0.02), ("reset", 0.01), ("duplicate", 0.01),
)
"""`--faults on`: a bad shop network, about one request in ten disturbed."""
MERCHANT_IDS = ("gs25", "cu")
AFFILIATE_ID = "hana-card"
EARNINGS_PATH = "/v1/earnings"

# Limits. The plan and the observations are held in memory (a few hundred
# bytes an operation), so a run is bounded to what a laptop holds comfortably.
OPERATIONS_MAX = 1_000_000
TERMINALS_MAX = 200  # merchants.toml allows 100 terminals per store; the load adds its own
MEMBERS_MAX = 100_000
RATE_PER_S_MAX = 10_000.0
AMOUNT_MAX = 2_000_000  # the gateway's default amount_max_krw: a larger sale is refused, not declined
SETUP_CONCURRENCY = 16  # enrolments and credits in flight during setup
CHECK_CONCURRENCY = 16  # lookups in flight while reading the books
SETUP_ATTEMPTS_MAX = 3  # an earning with no answer is sent again with its idempotency key
LOOKUP_ATTEMPTS_MAX = 3
VIOLATIONS_LISTED_MAX = 20  # per check in the report; the count is always complete
ERRORS_PRINTED_MAX = 5  # tracebacks of unexpected exceptions printed during a run
FLUSH_TIMEOUT_S = 20.0  # per terminal, for the outbox to drain once faults are off
HTTP_TIMEOUT_S = 10.0  # setup and book-reading requests go straight to the gateway
CLI_TIMEOUT_S = 60.0  # one `gateway merchants ...` command
START_DELAY_S = 0.2  # between the end of setup and the first intended send time
RUNS_KEPT = 5  # run directories (journals, embedded Redis data) kept under var_dir/runs, newest first
PROGRESS_EVERY_S = 1.0  # plain progress lines; the rich display refreshes four times as often

# Payment codes come from the phone simulator (simulators/phone.py).
SEQS_PER_STEP = 10  # a phone shows at most ten codes (seq 0-9) per time step
EXPIRED_STEPS_BACK = 3  # past the gateway's skew window (1 step), well inside its lookback (20 steps)
EXPIRED_STEPS_SPAN = 3  # expired codes cycle over 3 steps (30 codes); the gateway burns none of them
# A replayed code must still be inside the skew window to be answered "replayed": an older
# one is "expired", and one past the lookback would count as a wrong guess towards the lock.
REPLAY_AGE_S_MAX = 20.0
SHOWN_KEPT = 10_000  # recent approvals a replay may pick from


class LoadError(Exception):
    """The run could not be set up; nothing was measured."""


# ---------------------------------------------------------------------------
# Options.


@dataclass(frozen=True)
class Options:
    """Everything a run depends on. Defaults fit a 2-core machine running the gateway too."""

    base_url: str | None = None
    """The gateway; None starts an embedded one (bundled Redis, fresh data under the run's dir)."""
    redis_url: str | None = None
    """The gateway's Redis, for the end-of-run audit of an external gateway (default: REDIS_URL)."""
    config_dir: str | None = None
    """Where merchants.toml is (default: the gateway's config/)."""
    terminals: int = 8
    members: int = 120  # enough phones that a 60 s run at 40/s never runs out of codes or points
    rate_per_s: float = 40.0
    seconds: float = 10.0
    requests: int | None = None
    """When set, the run is this many operations at `rate_per_s` and `seconds` is ignored."""
    mix: tuple[tuple[str, float], ...] = DEFAULT_MIX
    faults: tuple[tuple[str, float], ...] = ()
    """Proxy rates (`FaultProxy.set_rates` names); empty: no proxy, terminals talk to the gateway."""
    fault_reads: bool = True
    """Faults hit GETs too. aiohttp re-sends a GET whose answer was dropped, byte for byte (same
    nonce), which the gateway refuses as replayed; False aims the faults at writes only."""
    seed: int = 1
    report_path: str = "var/load/report.json"
    var_dir: str = "var/load"
    merchants: tuple[str, ...] = MERCHANT_IDS
    credit_points_min: int = 100_000
    credit_points_max: int = 200_000
    sale_amount_min: int = 500
    sale_amount_max: int = 9_000
    insufficient_amount: int = 1_500_000
    """Above any member's credit, so such a sale can only decline."""
    connect_timeout_s: float = 1.0
    read_timeout_s: float = 2.0
    deadline_s: float = 5.0
    """The terminals' unknown_outcome_deadline_s: re-ask this long, then reverse."""
    retry_delay_s_base: float = 0.05
    retry_delay_s_max: float = 0.5
    """The terminals' backoff; brisker than the SDK's defaults (0.2 s, 2 s) so short runs resolve quickly."""
    drain_timeout_s: float = 30.0
    """After the last send, how long operations may take to finish before they are cancelled."""
    in_flight_max: int = 1000
    """Operations in flight at once; beyond it an operation is shed (counted, never sent)."""
    progress: bool = True
    keys: Mapping[str, tuple[str, str]] | None = field(default=None, repr=False, compare=False)
    """Pre-issued signing keys by merchant id (and the affiliate's); None: issue and revoke them."""

    def __post_init__(self) -> None:
        checks = (
            (1 <= self.terminals <= TERMINALS_MAX, f"terminals must be 1-{TERMINALS_MAX}"),
            (1 <= self.members <= MEMBERS_MAX, f"members must be 1-{MEMBERS_MAX}"),
            (0 < self.rate_per_s <= RATE_PER_S_MAX, f"rate must be above 0 and at most {RATE_PER_S_MAX:g}/s"),
            (self.seconds > 0, "seconds must be positive"),
            (self.requests is None or 1 <= self.requests <= OPERATIONS_MAX, f"requests must be 1-{OPERATIONS_MAX}"),
            (1 <= operation_count(self) <= OPERATIONS_MAX, f"a run is at most {OPERATIONS_MAX} operations"),
            (0 < self.credit_points_min <= self.credit_points_max, "credit points: 0 < min <= max"),
            (0 < self.sale_amount_min <= self.sale_amount_max < self.credit_points_min,
             "sale amounts: 0 < min <= max < the smallest credit"),
            (self.sale_amount_min % 100 == 0 and self.sale_amount_max % 100 == 0, "sale amounts are whole hundreds"),
            (self.credit_points_max < self.insufficient_amount <= AMOUNT_MAX,
             f"the over-balance amount must exceed the largest credit and be at most {AMOUNT_MAX}"),
            (min(self.connect_timeout_s, self.read_timeout_s, self.deadline_s, self.drain_timeout_s) > 0,
             "timeouts must be positive"),
            (0 < self.retry_delay_s_base <= self.retry_delay_s_max, "retry delays: 0 < base <= max"),
            (self.in_flight_max >= 1, "in_flight_max must be at least 1"),
            (len(self.merchants) >= 1 and len(set(self.merchants)) == len(self.merchants), "merchants must be distinct"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        _check_mix(dict(self.mix))
        _check_faults(dict(self.faults))

    def public(self) -> dict[str, Any]:
        """The options as the report shows them (never a key)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "keys"}
        values["mix"] = dict(self.mix)
        values["faults"] = dict(self.faults)
        values["merchants"] = list(self.merchants)
        return values


def operation_count(options: Options) -> int:
    if options.requests is not None:
        return options.requests
    return max(1, round(options.rate_per_s * options.seconds))


def parse_pairs(text: str, names: Sequence[str], what: str) -> dict[str, float]:
    """`name=number,name=number` with each name one of `names`; `what` names them in errors."""
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, equals, value = (t.strip() for t in part.partition("="))
        if name not in names or not equals:
            raise ValueError(f"{what} entries are NAME=NUMBER with NAME one of {', '.join(names)}; got {part!r}")
        try:
            values[name] = float(value)
        except ValueError:
            raise ValueError(f"{what} {name} must be a number, got {value!r}") from None
    return values


def _check_mix(weights: Mapping[str, float]) -> None:
    for name, weight in weights.items():
        if name not in KINDS:
            raise ValueError(f"the mix has no kind {name!r}; kinds are {', '.join(KINDS)}")
        if not 0 <= weight < math.inf:
            raise ValueError(f"mix weight of {name} must be zero or more, got {weight!r}")
    if sum(weights.values()) <= 0:
        raise ValueError("the mix needs at least one positive weight")


def _check_faults(rates: Mapping[str, float]) -> None:
    unknown = set(rates) - set(FAULT_NAMES)
    if unknown:
        raise ValueError(f"no fault {sorted(unknown)[0]!r}; faults are {', '.join(FAULT_NAMES)}")
    Rates(**rates)  # the proxy's own validation: each rate 0-1, their sum at most 1, delay_s bounded


def parse_mix(text: str) -> tuple[tuple[str, float], ...]:
    """`sale=60,refund=8,...`: the weights of the listed kinds; unlisted kinds get none."""
    weights = parse_pairs(text, KINDS, "mix")
    _check_mix(weights)
    return tuple((kind, weights[kind]) for kind in KINDS if kind in weights)


def parse_faults(text: str) -> tuple[tuple[str, float], ...]:
    """`drop_response=0.02,reset=0.01,delay=0.05,delay_s=0.2`, `on` (FAULTS_ON) or `off`/empty."""
    text = text.strip()
    if text in ("", "off", "none"):
        return ()
    if text == "on":
        return FAULTS_ON
    rates = parse_pairs(text, FAULT_NAMES, "fault")
    _check_faults(rates)
    return tuple((name, rates[name]) for name in FAULT_NAMES if name in rates)


# ---------------------------------------------------------------------------
# The plan: pure, a function of the options alone.


@dataclass(frozen=True, slots=True)
class PlannedOp:
    """One operation of the schedule. Targets of follow-ups are chosen when it runs, by `pick`."""

    index: int
    at_s: float
    """Intended send time, seconds after the run's start."""
    kind: str
    terminal: int
    member: int
    """Index of the member whose phone shows the code (sale, expired, insufficient); -1 otherwise."""
    amount: int
    pick: float
    """Uniform in [0, 1): which earlier sale (or shown code) a follow-up or replay takes."""
    fraction: float
    """Share of the payment a refund gives back; 0 for other kinds."""


def plan_operations(options: Options) -> tuple[PlannedOp, ...]:
    """The schedule: kinds by the mix, terminals at random, members in a shuffled round robin.

    The round robin spreads each member's codes evenly over time, since a
    phone has only ten codes per 30 s step (plus the next step's ten).
    """
    rng = random.Random(f"pointgate-load:{options.seed}:plan")
    kinds = [kind for kind, weight in options.mix if weight > 0]
    weights = [weight for _, weight in options.mix if weight > 0]
    order = list(range(options.members))
    rng.shuffle(order)
    cursor = 0
    hundreds = (options.sale_amount_min // 100, options.sale_amount_max // 100)
    ops = []
    for index in range(operation_count(options)):
        kind = rng.choices(kinds, weights)[0]
        terminal = rng.randrange(options.terminals)
        member = -1
        if kind in ("sale", "expired", "insufficient"):
            member = order[cursor % len(order)]
            cursor += 1
        amount = rng.randint(*hundreds) * 100
        if kind == "insufficient":
            amount = options.insufficient_amount
        elif kind not in CODE_KINDS:
            amount = 0
        pick = rng.random()
        fraction = rng.choice((0.25, 0.5, 1.0)) if kind == "refund" else 0.0
        ops.append(PlannedOp(index, round(index / options.rate_per_s, 6), kind, terminal, member, amount, pick, fraction))
    return tuple(ops)


def plan_credits(options: Options) -> tuple[int, ...]:
    """The points each member is credited with, in whole thousands."""
    rng = random.Random(f"pointgate-load:{options.seed}:credits")
    low, high = -(-options.credit_points_min // 1000), options.credit_points_max // 1000
    if low > high:
        return tuple(options.credit_points_min for _ in range(options.members))
    return tuple(rng.randint(low, high) * 1000 for _ in range(options.members))


def plan_digest(plan: Sequence[PlannedOp]) -> str:
    return hashlib.sha256(json.dumps([dataclasses.astuple(op) for op in plan]).encode()).hexdigest()


def plan_warnings(options: Options) -> list[str]:
    """What the options make likely to go wrong, said before the run."""
    warnings = []
    shares = dict(options.mix)
    code_share = sum(shares.get(k, 0) for k in ("sale", "insufficient")) / sum(shares.values())
    per_member_per_s = options.rate_per_s * code_share / options.members
    duration_s = operation_count(options) / options.rate_per_s
    # A phone has ten codes per 30 s step in the long run (twenty in one step at most).
    if duration_s > 30 and per_member_per_s > SEQS_PER_STEP / 30:
        needed = math.ceil(options.rate_per_s * code_share * 30 / SEQS_PER_STEP)
        warnings.append(f"{options.members} members cannot show codes that fast for long; "
                        f"some sales will be skipped (no_code). Use --members {needed} or more.")
    sales_per_member = operation_count(options) * shares.get("sale", 0) / sum(shares.values()) / options.members
    spend = sales_per_member * (options.sale_amount_min + options.sale_amount_max) / 2
    if spend > options.credit_points_min:
        warnings.append(f"members spend about {spend:,.0f} points each but some are credited only "
                        f"{options.credit_points_min:,}; expect insufficient_points declines on plain sales.")
    return warnings


def terminal_layout(merchants_doc: Mapping[str, Any], merchant_ids: Sequence[str], count: int) -> list[tuple[str, str, str]]:
    """(merchant, store, terminal) of each load terminal: merchants in turn, their stores in turn,
    the configured terminal ids first, then `ld1`, `ld2`, ... which the setup registers."""
    stores: dict[str, list[tuple[str, list[str]]]] = {}
    for merchant in merchants_doc.get("merchant", []):
        if merchant.get("id") in merchant_ids:
            stores[merchant["id"]] = [(s["id"], list(s.get("terminals", []))) for s in merchant.get("store", [])]
    for merchant_id in merchant_ids:
        if not stores.get(merchant_id):
            raise LoadError(f"merchants.toml has no store of {merchant_id}")
    used: Counter[tuple[str, str]] = Counter()
    layout = []
    for i in range(count):
        merchant_id = merchant_ids[i % len(merchant_ids)]
        choices = stores[merchant_id]
        store_id, configured = choices[(i // len(merchant_ids)) % len(choices)]
        n = used[(merchant_id, store_id)]
        used[(merchant_id, store_id)] += 1
        layout.append((merchant_id, store_id, configured[n] if n < len(configured) else f"ld{n + 1 - len(configured)}"))
    return layout


# ---------------------------------------------------------------------------
# Observations: what the terminals saw and what the books say.


@dataclass
class SaleObservation:
    """One code presented at a till, and how the sale ended as the terminal saw it."""

    index: int
    kind: str
    terminal: str
    merchant_id: str
    member_id: str
    code: str
    order_ref: str
    amount: int
    idempotency_key: str = ""
    outcome: str = "in_flight"
    """approved, declined, reversed, reversal_queued; refused (the gateway refused the request),
    error (an unexpected failure), in_flight / abandoned (never finished)."""
    detail: str = ""
    payment_id: str | None = None
    points: int = 0


@dataclass
class FollowUpObservation:
    """A refund, cancel, reversal or wrong-merchant attempt on an earlier approved sale."""

    index: int
    kind: str
    terminal: str
    merchant_id: str
    payment_id: str
    order_ref: str
    payment_merchant_id: str
    amount: int
    idempotency_key: str = ""
    outcome: str = "in_flight"
    """refunded, cancelled, reversed, recorded, nothing_to_reverse, not_found, refused (definite);
    queued, unknown, error, in_flight (not known)."""
    detail: str = ""


FOLLOW_UP_UNKNOWN = frozenset({"queued", "unknown", "error", "in_flight", "abandoned"})
RESOLVED_SALES = frozenset({"approved", "declined", "reversed", "reversal_queued"})


@dataclass(frozen=True)
class TerminalState:
    terminal: str
    outbox_queued: int
    outbox_dead: int
    unfinished: int


@dataclass(frozen=True)
class GatewayPayment:
    """A payment as the gateway's public GET shows it."""

    payment_id: str
    merchant_id: str
    order_ref: str
    status: str
    points: int
    refunded_points: int
    approved: bool
    """It carries an approval code: it was approved, whatever happened to it since."""

    @classmethod
    def from_payment(cls, payment: Payment) -> "GatewayPayment":
        return cls(payment.payment_id, payment.merchant_id, payment.order_ref, payment.status, payment.points,
                   payment.refunded_points, payment.approval_code is not None)


@dataclass(frozen=True)
class MemberBooks:
    member_id: str
    credited: int
    available: int
    held: int


@dataclass
class Observations:
    sales: list[SaleObservation] = field(default_factory=list)
    follow_ups: list[FollowUpObservation] = field(default_factory=list)
    terminals: list[TerminalState] = field(default_factory=list)
    by_order_ref: dict[str, GatewayPayment | None] = field(default_factory=dict)
    """`merchant/order_ref` of every sale sent -> what the gateway finds under it (None: nothing)."""
    by_payment_id: dict[str, GatewayPayment | None] = field(default_factory=dict)
    """Every payment id a terminal saw approved -> the gateway's GET of it (None: not found)."""
    lookup_errors: list[str] = field(default_factory=list)
    members: list[MemberBooks] = field(default_factory=list)
    unit: str = ""
    """The members' points unit; the audit totals below are of this unit."""
    audit_before: dict[str, int] = field(default_factory=dict)
    """The points unit's accounts as `gateway audit` totals them, before setup."""
    audit_after: dict[str, int] | None = None
    audit_problems: list[str] = field(default_factory=list)


def order_key(merchant_id: str, order_ref: str) -> str:
    return f"{merchant_id}/{order_ref}"


# ---------------------------------------------------------------------------
# The checks: pure functions of the observations.


@dataclass(frozen=True)
class CheckResult:
    name: str
    violations: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.violations


def net_points(view: GatewayPayment | None) -> int:
    """Points a payment moved from its member to its merchant, as it stands now."""
    if view is None or not view.approved or view.status in ("declined", "cancelled", "reversed"):
        return 0
    return view.points - view.refunded_points


def expected_state(points: int, follow_ups: Iterable[FollowUpObservation]) -> tuple[str, int] | None:
    """(status, refunded points) an approved payment should have after its own merchant's
    follow-ups as the terminals saw them end; None when one's outcome is not known."""
    state, refunded = "approved", 0
    for f in follow_ups:
        if f.kind == "wrong_merchant":
            continue
        if f.outcome in FOLLOW_UP_UNKNOWN:
            return None
        if f.kind == "cancel" and f.outcome == "cancelled":
            state = "cancelled"
        elif f.kind == "reversal" and f.outcome == "reversed":
            state = "reversed"
        elif f.kind == "refund" and f.outcome == "refunded":
            refunded += f.amount
    if state == "approved" and refunded:
        state = "refunded" if refunded >= points else "partially_refunded"
    return state, refunded


def check_codes_approved_once(obs: Observations) -> CheckResult:
    """Each code approved at most once (by the terminals' and the gateway's account);
    a replayed, expired or over-balance code never."""
    violations = []
    approvals: dict[str, set[str]] = defaultdict(set)
    for s in obs.sales:
        view = obs.by_order_ref.get(order_key(s.merchant_id, s.order_ref))
        approved_here = s.outcome == "approved" or (view is not None and view.approved)
        if s.outcome == "approved" and s.payment_id:
            approvals[s.code].add(s.payment_id)
        if view is not None and view.approved:
            approvals[s.code].add(view.payment_id)
        if approved_here and s.kind in ("replay", "expired", "insufficient"):
            violations.append(f"{s.kind} sale {s.order_ref} at {s.terminal} was approved")
    for code, payment_ids in sorted(approvals.items()):
        if len(payment_ids) > 1:
            violations.append(f"code {code} approved {len(payment_ids)} times: {', '.join(sorted(payment_ids))}")
    return CheckResult("codes_approved_once", tuple(violations))


def check_sales_resolved(obs: Observations) -> CheckResult:
    """Every sale ended approved, declined, reversed or reversal-queued; the unpaid ones took
    nothing at the gateway; every outbox flushed empty and no operation is left pending."""
    violations = []
    for s in obs.sales:
        if s.outcome not in RESOLVED_SALES:
            view = obs.by_order_ref.get(order_key(s.merchant_id, s.order_ref))
            held = f"{view.payment_id} {view.status}" if view is not None else "nothing"
            detail = f" ({s.detail})" if s.detail else ""
            violations.append(f"sale {s.order_ref} at {s.terminal} ended {s.outcome}{detail}; the gateway holds {held}")
            continue
        if s.outcome != "approved":
            key = order_key(s.merchant_id, s.order_ref)
            if key not in obs.by_order_ref:
                violations.append(f"sale {s.order_ref} ({s.outcome}) was not looked up at the gateway")
                continue
            view = obs.by_order_ref[key]
            if view is not None and view.status not in ("declined", "reversed"):
                violations.append(f"sale {s.order_ref} ended {s.outcome} at {s.terminal} but the gateway holds "
                                  f"{view.payment_id} {view.status}")
    for t in obs.terminals:
        for what, count in (("queued in the outbox", t.outbox_queued), ("dead in the outbox", t.outbox_dead),
                            ("unfinished in the journal", t.unfinished)):
            if count:
                violations.append(f"{t.terminal}: {count} operation(s) {what}")
    violations += [f"lookup failed: {e}" for e in obs.lookup_errors]
    return CheckResult("sales_resolved", tuple(violations))


def check_points_conserved(obs: Observations) -> CheckResult:
    """Credits = members' balances + merchants' net payables, in total and per member and
    merchant; the journal's merchant accounts moved by what the payments say."""
    violations = []
    credited = sum(m.credited for m in obs.members)
    balances = sum(m.available + m.held for m in obs.members)
    views: dict[str, tuple[GatewayPayment, SaleObservation]] = {}
    for s in obs.sales:
        view = obs.by_order_ref.get(order_key(s.merchant_id, s.order_ref))
        if view is not None:
            views.setdefault(view.payment_id, (view, s))
    net_by_member: Counter[str] = Counter()
    net_by_merchant: Counter[str] = Counter()
    for view, sale in views.values():
        net_by_member[sale.member_id] += net_points(view)
        net_by_merchant[view.merchant_id] += net_points(view)
    for m in obs.members:
        expected = m.credited - net_by_member[m.member_id]
        if m.available + m.held != expected:
            violations.append(f"member {m.member_id}: balance {m.available + m.held} but credits {m.credited} "
                              f"less payments {net_by_member[m.member_id]} give {expected}")
    if obs.audit_after is None:
        violations.append("the audit's totals are missing")
        return CheckResult("points_conserved", tuple(violations))
    accounts = set(obs.audit_before) | set(obs.audit_after)
    delta = {a: obs.audit_after.get(a, 0) - obs.audit_before.get(a, 0) for a in accounts}
    payables = sum(d for a, d in delta.items() if a.startswith("merchant:"))
    if credited != balances + payables:
        violations.append(f"credits {credited} != members' balances {balances} + merchants' payables {payables} "
                          f"(off by {credited - balances - payables})")
    merchant_accounts = {a.removeprefix("merchant:") for a in delta if a.startswith("merchant:")}
    merchants = {s.merchant_id for s in obs.sales} | merchant_accounts
    for merchant_id in sorted(merchants):
        moved = delta.get(f"merchant:{merchant_id}", 0)
        if moved != net_by_merchant[merchant_id]:
            violations.append(f"merchant:{merchant_id} moved {moved} in the journal but its payments net "
                              f"{net_by_merchant[merchant_id]}")
    members_moved = delta.get("members_available", 0) + delta.get("members_held", 0)
    if members_moved != balances:
        violations.append(f"member wallets moved {members_moved} in the journal but the members hold {balances}")
    funding = sum(d for a, d in delta.items()
                  if not a.startswith("merchant:") and a not in ("members_available", "members_held"))
    if funding != -credited:
        violations.append(f"the funding accounts moved {funding} in the journal, not -{credited} for the credits")
    return CheckResult("points_conserved", tuple(violations))


def check_approvals_recorded_once(obs: Observations) -> CheckResult:
    """Each approval a terminal saw is one gateway payment, found under its order reference,
    in the state its follow-ups imply; no two approvals share a payment or an order reference."""
    violations = []
    approved = [s for s in obs.sales if s.outcome == "approved"]
    keys = (("payment", lambda s: s.payment_id or ""), ("order reference", lambda s: order_key(s.merchant_id, s.order_ref)))
    for what, keyed in keys:
        groups: dict[str, list[SaleObservation]] = defaultdict(list)
        for s in approved:
            groups[keyed(s)].append(s)
        for key, group in sorted(groups.items()):
            if len(group) > 1:
                violations.append(f"{len(group)} approvals share the {what} {key}: "
                                  f"{', '.join(f'{s.order_ref}@{s.terminal}' for s in group)}")
    follow_ups: dict[str, list[FollowUpObservation]] = defaultdict(list)
    for f in obs.follow_ups:
        follow_ups[f.payment_id].append(f)
        if f.kind == "wrong_merchant" and f.outcome not in ("not_found", *FOLLOW_UP_UNKNOWN):
            violations.append(f"{f.terminal} ({f.merchant_id}) acted on {f.payment_merchant_id}'s payment "
                              f"{f.payment_id}: {f.outcome}")
    for s in approved:
        view = obs.by_payment_id.get(s.payment_id or "")
        if view is None:
            violations.append(f"approval {s.payment_id} ({s.order_ref} at {s.terminal}) is not in the gateway")
            continue
        if (view.merchant_id, view.order_ref) != (s.merchant_id, s.order_ref):
            violations.append(f"approval {s.payment_id} is {view.merchant_id}/{view.order_ref} at the gateway, "
                              f"not {s.merchant_id}/{s.order_ref}")
        found = obs.by_order_ref.get(order_key(s.merchant_id, s.order_ref))
        if found is None or found.payment_id != s.payment_id:
            violations.append(f"order {s.order_ref} resolves to {found.payment_id if found else 'nothing'}, "
                              f"not the approval {s.payment_id}")
        expected = expected_state(s.points, follow_ups[s.payment_id or ""])
        if expected is None:
            continue
        status, refunded = expected
        if view.status != status or (status in ("partially_refunded", "refunded") and view.refunded_points != refunded):
            violations.append(f"payment {s.payment_id} is {view.status} (refunded {view.refunded_points}) but the "
                              f"terminals' follow-ups make it {status} (refunded {refunded})")
    return CheckResult("approvals_recorded_once", tuple(violations))


def check_audit_clean(obs: Observations) -> CheckResult:
    """`gateway audit` replays the journal and finds no problem."""
    if obs.audit_after is None:
        return CheckResult("audit_clean", ("the audit did not run",))
    return CheckResult("audit_clean", tuple(obs.audit_problems))


CHECKS = (check_codes_approved_once, check_sales_resolved, check_points_conserved,
          check_approvals_recorded_once, check_audit_clean)


def run_checks(obs: Observations) -> tuple[CheckResult, ...]:
    return tuple(check(obs) for check in CHECKS)


# ---------------------------------------------------------------------------
# The report.


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ascending values (0 for none)."""
    if not sorted_values:
        return 0.0
    # Rounded first: 99.9 / 100 * 1000 is 999.0000000000001 in binary floating point.
    rank = max(1, math.ceil(round(p * len(sorted_values) / 100, 9)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(values_s: Iterable[float]) -> dict[str, float]:
    """count, p50, p90, p99, p99.9 and max, in milliseconds."""
    ordered = sorted(values_s)
    summary: dict[str, float] = {"count": len(ordered)}
    for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p99_9", 99.9)):
        summary[name] = round(percentile(ordered, p) * 1000, 2)
    summary["max"] = round((ordered[-1] if ordered else 0.0) * 1000, 2)
    return summary


def outcome_label(outcome: str, detail: str) -> str:
    if detail and outcome in ("declined", "refused", "error", "unknown"):
        return f"{outcome}:{detail}"
    return outcome


@dataclass
class AttemptLog:
    """What the terminals' HTTP attempts met, retries included. A terminal's outcome hides the
    retries it took to get there (a Redis failover's 503s, say); this keeps them."""

    total: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    """Answers other than 2xx as `STATUS code`, transport failures as `transport KIND`."""
    retryable: int = 0
    """Of the errors, those the SDK sends again with the same idempotency key (pos_sdk.core.is_retryable)."""
    first_retryable_at: float | None = None
    last_retryable_at: float | None = None
    """Event-loop times of the first and the last retryable error."""

    def note(self, reply: sdk_core.HttpResponse | sdk_core.TransportFailure, at: float) -> None:
        self.total += 1
        if isinstance(reply, sdk_core.HttpResponse) and 200 <= reply.status < 300:
            return
        error = sdk_core.error_from(reply)
        label = f"{reply.status} {error.code}" if isinstance(reply, sdk_core.HttpResponse) else f"transport {reply.kind}"
        self.errors[label] += 1
        if sdk_core.is_retryable(error):
            self.retryable += 1
            self.first_retryable_at = at if self.first_retryable_at is None else self.first_retryable_at
            self.last_retryable_at = at

    def to_json(self, t0: float) -> dict[str, Any]:
        """Times in seconds from the run's first intended send."""
        def since(at: float | None) -> float | None:
            return None if at is None else round(at - t0, 3)

        return {"total": self.total, "retryable": self.retryable, "errors": dict(sorted(self.errors.items())),
                "first_retryable_s": since(self.first_retryable_at), "last_retryable_s": since(self.last_retryable_at)}


@dataclass
class Report:
    options: dict[str, Any]
    plan: tuple[PlannedOp, ...]
    plan_digest: str
    base_url: str
    embedded: bool
    started_at: str
    duration_s: float
    outcomes: dict[str, dict[str, int]]
    """Operation kind -> final outcome -> count (skipped operations included)."""
    offered_per_s: float
    throughput_per_s: float
    latency_ms: dict[str, dict[str, float]]
    """"all" and each kind, from the intended send time to the answer."""
    schedule_lag_ms_max: float
    faults: dict[str, Any]
    checks: tuple[CheckResult, ...]
    report_path: str = ""
    warnings: list[str] = field(default_factory=list)
    observations: Observations | None = field(default=None, repr=False)
    members: list["LoadMember"] = field(default_factory=list, repr=False)
    """The enrolled members (their phones hold the tokens), for reading the books again."""
    attempts: AttemptLog = field(default_factory=AttemptLog)
    """Every HTTP attempt of the terminals, retries and the end phase included."""
    t0: float = 0.0
    """Event-loop time of the first intended send."""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "options": self.options,
            "plan": {"operations": len(self.plan), "digest": self.plan_digest},
            "base_url": self.base_url,
            "embedded": self.embedded,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "outcomes": self.outcomes,
            "offered_per_s": self.offered_per_s,
            "throughput_per_s": self.throughput_per_s,
            "latency_ms": self.latency_ms,
            "schedule_lag_ms_max": self.schedule_lag_ms_max,
            "faults": self.faults,
            "attempts": self.attempts.to_json(self.t0),
            "checks": [{"name": c.name, "passed": c.passed, "violation_count": len(c.violations),
                        "violations": list(c.violations[:VIOLATIONS_LISTED_MAX])} for c in self.checks],
            "warnings": self.warnings,
        }


def render_report(report: Report) -> str:
    """The end-of-run table, plain text."""
    o = report.options
    faults = ", ".join(f"{k}={v}" for k, v in o["faults"].items()) or "off"
    if o["faults"] and not o["fault_reads"]:
        faults += " (writes only)"
    lines = [
        f"pointgate load: {len(report.plan)} operations at {o['rate_per_s']:g}/s, {o['terminals']} terminals, "
        f"{o['members']} members, seed {o['seed']}, faults {faults}",
        f"gateway {report.base_url}{' (embedded, sharing this process)' if report.embedded else ''}",
        "",
        f"{'operation':<16}{'outcome':<36}{'count':>8}",
    ]
    for kind in KINDS:
        for label, count in sorted(report.outcomes.get(kind, {}).items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"{kind:<16}{label:<36}{count:>8}")
    lines += [
        "",
        f"throughput      {report.throughput_per_s:.1f} operations/s (offered {report.offered_per_s:.1f}/s) "
        f"over {report.duration_s:.1f} s; schedule lag max {report.schedule_lag_ms_max:.1f} ms",
        f"{'latency ms':<16}{'count':>7}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}{'max':>9}   (from intended send)",
    ]
    for name, s in report.latency_ms.items():
        lines.append(f"  {name:<14}{int(s['count']):>7}{s['p50']:>9.1f}{s['p90']:>9.1f}{s['p99']:>9.1f}"
                     f"{s['p99_9']:>9.1f}{s['max']:>9.1f}")
    errors = ", ".join(f"{label} {n}" for label, n in sorted(report.attempts.errors.items(), key=lambda kv: -kv[1]))
    lines.append(f"attempts        {report.attempts.total} HTTP requests by the terminals, {report.attempts.retryable} "
                 f"retryable errors{f'; not 2xx: {errors}' if errors else ''}")
    injected = report.faults.get("injected", {})
    if injected:
        lines.append("faults          " + ", ".join(f"{k} {v}" for k, v in sorted(injected.items())) +
                     f"; upstream failures {report.faults.get('upstream_failures', 0)}")
    lines += ["", "checks"]
    for c in report.checks:
        if c.passed:
            lines.append(f"  [ok  ] {c.name}")
        else:
            lines.append(f"  [FAIL] {c.name}: {len(c.violations)} violation(s)")
            lines += [f"           {v}" for v in c.violations[:5]]
    lines += [f"warning: {w}" for w in report.warnings]
    where = f"; report {report.report_path}" if report.report_path else ""
    lines.append(f"verdict: {'PASSED' if report.passed else 'FAILED'}{where}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Setup and audit: in-process or through the gateway command line.


@dataclass(frozen=True)
class AuditSnapshot:
    totals: Mapping[str, Mapping[str, int]]
    """Per points unit: `members_available`, `members_held` and each external account."""
    problems: tuple[str, ...]
    entries: int


class Admin(Protocol):
    """The privileged side of a run: keys and terminals for setup, the audit for the checks."""

    async def issue_key(self, merchant_id: str) -> tuple[str, str]: ...
    async def revoke_key(self, merchant_id: str, key_id: str) -> None: ...
    async def add_terminal(self, merchant_id: str, store_id: str, terminal_id: str) -> None: ...
    async def audit(self) -> AuditSnapshot: ...
    async def close(self) -> None: ...


def _snapshot(report: Any) -> AuditSnapshot:
    return AuditSnapshot(report.totals_by_unit(), tuple(report.problems), report.entries)


class RegistryAdmin:
    """In-process: a gateway's MerchantRegistry (`app[MERCHANTS]`) and Store (`app[STORE]`)."""

    def __init__(self, registry: Any, store: Any) -> None:
        self.registry, self.store = registry, store

    async def issue_key(self, merchant_id: str) -> tuple[str, str]:
        issued = await self.registry.issue_key(merchant_id)
        return issued.key_id, issued.secret

    async def revoke_key(self, merchant_id: str, key_id: str) -> None:
        await self.registry.revoke_key(merchant_id, key_id)

    async def add_terminal(self, merchant_id: str, store_id: str, terminal_id: str) -> None:
        await self.registry.add_terminal(merchant_id, store_id, terminal_id)

    async def audit(self) -> AuditSnapshot:
        from gateway.audit import run_audit

        return _snapshot(await run_audit(self.store))

    async def close(self) -> None:
        pass


class CliAdmin:
    """`gateway merchants ...` as subprocesses on REDIS_URL; the audit with gateway.audit on the same Redis.

    The commands read the keyring from the gateway's settings (`POINTGATE_KEYRING_PATH`, by
    default var/keyring.json), so run the load from the gateway's directory or set it.
    """

    def __init__(self, redis_url: str, config_dir: str | None = None) -> None:
        self.redis_url, self.config_dir = redis_url, config_dir

    async def _cli(self, *args: str) -> str:
        config = ["--config-dir", self.config_dir] if self.config_dir else []
        command = [sys.executable, "-m", "gateway.cli", *config, *args]
        process = await asyncio.create_subprocess_exec(
            *command, env={**os.environ, "REDIS_URL": self.redis_url},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            raise LoadError(f"`gateway {' '.join(args[:2])}` took more than {CLI_TIMEOUT_S:g} s") from None
        if process.returncode != 0:
            raise LoadError(f"`gateway {' '.join(args[:3])}` failed: {err.decode(errors='replace').strip()}")
        return out.decode()

    async def issue_key(self, merchant_id: str) -> tuple[str, str]:
        fields = {}
        for line in (await self._cli("merchants", "issue-key", merchant_id)).splitlines():
            name, _, value = line.strip().partition(": ")
            fields[name] = value.strip()
        if "key id" not in fields or "secret" not in fields:
            raise LoadError(f"`gateway merchants issue-key {merchant_id}` printed no key")
        return fields["key id"], fields["secret"]

    async def revoke_key(self, merchant_id: str, key_id: str) -> None:
        await self._cli("merchants", "revoke-key", merchant_id, key_id)

    async def add_terminal(self, merchant_id: str, store_id: str, terminal_id: str) -> None:
        await self._cli("merchants", "add-terminal", merchant_id, store_id, terminal_id)

    async def audit(self) -> AuditSnapshot:
        from gateway.audit import run_audit
        from gateway.store import Store, connect

        store = Store(connect(self.redis_url, socket_timeout_s=HTTP_TIMEOUT_S))
        try:
            return _snapshot(await run_audit(store))
        finally:
            await store.close()

    async def close(self) -> None:
        pass


@contextlib.asynccontextmanager
async def embedded_gateway(run_dir: Path, config_dir: str | None) -> AsyncIterator[tuple[str, Admin]]:
    """The gateway app on a loopback port over a fresh bundled Redis in `run_dir`."""
    from aiohttp import web

    from gateway.app import MERCHANTS, STORE, create_app
    from gateway.settings import load_settings

    settings = load_settings(config_dir, data_dir=str(run_dir / "redis"), keyring_path=str(run_dir / "keyring.json"),
                             redis_url="")
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        await app[MERCHANTS].load_config(settings)
        yield f"http://127.0.0.1:{port}", RegistryAdmin(app[MERCHANTS], app[STORE])
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------
# Members over the member and earnings APIs.


@dataclass
class LoadMember:
    """An enrolled member: its phone (simulators/phone.py) and the points it was credited."""

    index: int
    phone: Phone
    credited: int
    expired_shown: int = 0

    @property
    def member_id(self) -> str:
        return self.phone.member_id

    def fresh_code(self, now_s: float) -> str | None:
        """The phone's next code, or None when it has shown all it may until the next step."""
        try:
            return self.phone.next_code(now_s)
        except CodesExhausted:
            return None

    def expired_code(self, now_s: float) -> str:
        """A code of a step the gateway no longer accepts but still recognises: it answers expired."""
        back = EXPIRED_STEPS_BACK + (self.expired_shown // SEQS_PER_STEP) % EXPIRED_STEPS_SPAN
        step = int(now_s // self.phone.code_step_s) - back
        seq = self.expired_shown % SEQS_PER_STEP
        self.expired_shown += 1
        return self.phone.code_at(step, seq)


async def _read_json(response: aiohttp.ClientResponse) -> Any:
    raw = await response.read()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return {"detail": raw[:200].decode(errors="replace")}


async def credit_member(session: aiohttp.ClientSession, base_url: str, key: tuple[str, str], member_id: str,
                        points: int, affiliate_ref: str, affiliate_id: str = AFFILIATE_ID,
                        expires_at: str | None = None) -> dict[str, Any]:
    """POST /v1/earnings signed as the affiliate (points that expire with `expires_at`);
    an unanswered attempt is sent again with its key."""
    earning: dict[str, Any] = {"member_id": member_id, "points": points, "affiliate_ref": affiliate_ref}
    if expires_at is not None:
        earning["expires_at"] = expires_at
    body = json.dumps(earning, separators=(",", ":")).encode()
    idempotency_key = "ld-earn-" + affiliate_ref
    problem: Any = None
    for attempt in range(SETUP_ATTEMPTS_MAX):
        headers = signature_headers(key[1], "POST", EARNINGS_PATH, body, affiliate_id, key[0], int(time.time()),
                                    secrets.token_hex(16))
        headers |= {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        try:
            async with session.post(base_url + EARNINGS_PATH, data=body, headers=headers) as response:
                doc = await _read_json(response)
                if response.status == 201:
                    return doc
                problem = f"HTTP {response.status}: {doc}"
                if response.status < 500 and not (isinstance(doc, dict) and doc.get("code") == "idempotency_in_progress"):
                    break
        except (aiohttp.ClientError, TimeoutError) as e:
            problem = f"{type(e).__name__}: {e}"
        await asyncio.sleep(0.1 * (attempt + 1))
    raise LoadError(f"crediting {member_id} with {points} points failed: {problem}")


Credit = Callable[[str, int, str], Awaitable[int]]
"""How a member gets its points: (member id, points, the affiliate's reference) -> points credited."""


def earnings_credit(session: aiohttp.ClientSession, base_url: str, affiliate_key: tuple[str, str]) -> Credit:
    """Credit over the earnings API, signed as the affiliate (the way members get points)."""
    async def credit(member_id: str, points: int, affiliate_ref: str) -> int:
        return int((await credit_member(session, base_url, affiliate_key, member_id, points, affiliate_ref))["points"])

    return credit


async def _new_member(base_url: str, index: int, points: int, credit: Credit, tag: str) -> LoadMember:
    try:
        # Not retried: a retried enrolment could open a second wallet.
        phone = await Phone.enrol(base_url, timeout_s=HTTP_TIMEOUT_S)
    except PhoneError as e:
        raise LoadError(f"enrolling member {index} failed: {e}") from None
    return LoadMember(index, phone, await credit(phone.member_id, points, f"LD{tag}-{index:05d}"))


async def read_books(obs: Observations, members: Sequence[LoadMember], admin: Admin) -> Observations:
    """A copy of `obs` with the members' balances (member API) and the audit as they are now."""
    gate = asyncio.Semaphore(CHECK_CONCURRENCY)

    async def one(member: LoadMember) -> tuple[MemberBooks, str]:
        async with gate:
            try:
                balance = await member.phone.balance()
            except PhoneError as e:
                raise LoadError(f"reading the balance of {member.member_id} failed: {e}") from None
        return MemberBooks(member.member_id, member.credited, balance.available, balance.held), balance.unit

    read = await asyncio.gather(*(one(m) for m in members))
    units = {unit for _, unit in read}
    if len(units) > 1:
        raise LoadError(f"the members hold points in several units: {sorted(units)}")
    unit = units.pop() if units else obs.unit
    audit = await admin.audit()
    return dataclasses.replace(obs, members=[books for books, _ in read], unit=unit,
                               audit_after=_unit_totals(audit, unit), audit_problems=list(audit.problems))


def _unit_totals(snapshot: AuditSnapshot, unit: str) -> dict[str, int]:
    return dict(snapshot.totals.get(unit, {}))


# ---------------------------------------------------------------------------
# The shell: terminals, the open-loop scheduler, the end phase.


class _LoggedPosClient(AsyncPosClient):
    """The SDK's asyncio client, noting every HTTP attempt's reply in an AttemptLog."""

    def __init__(self, config: PosConfig, attempts: AttemptLog) -> None:
        super().__init__(config)
        self._attempts = attempts

    async def _perform(self, request: sdk_core.HttpRequest) -> sdk_core.HttpResponse | sdk_core.TransportFailure:
        reply = await super()._perform(request)
        self._attempts.note(reply, asyncio.get_running_loop().time())
        return reply


@dataclass
class LoadTerminal:
    index: int
    merchant_id: str
    store_id: str
    terminal_id: str
    client: AsyncPosClient

    @property
    def label(self) -> str:
        return f"{self.merchant_id}/{self.store_id}/{self.terminal_id}"


class _Run:
    """The state of one run while it goes: pools of approved sales, observations, latencies."""

    def __init__(self, options: Options, members: list[LoadMember], terminals: list[LoadTerminal], tag: str) -> None:
        self.options, self.members, self.terminals, self.tag = options, members, terminals, tag
        self.obs = Observations()
        self.open: dict[str, list[SaleObservation]] = defaultdict(list)  # approved, no follow-up yet
        self.approved: dict[str, list[SaleObservation]] = defaultdict(list)  # every approval, per merchant
        self.shown: deque[tuple[float, SaleObservation]] = deque(maxlen=SHOWN_KEPT)  # (when, approved sale)
        self.sale_by_key: dict[str, SaleObservation] = {}
        self.sale_by_order: dict[str, SaleObservation] = {}
        self.follow_up_by_key: dict[str, FollowUpObservation] = {}
        self.latencies_s: dict[str, list[float]] = defaultdict(list)
        self.skipped: Counter[tuple[str, str]] = Counter()
        self.live: Counter[str] = Counter()
        self.lag_s_max = 0.0
        self.dispatched = self.done = 0
        self.t0 = 0.0
        self.last_done = 0.0
        self.errors_printed = 0

    # -- operations

    async def execute(self, op: PlannedOp, intended: float) -> None:
        loop = asyncio.get_running_loop()
        self.lag_s_max = max(self.lag_s_max, loop.time() - intended)
        sent = False
        label = "skipped"
        try:
            if op.kind in CODE_KINDS:
                sent, label = await self._sale(op)
            else:
                sent, label = await self._follow_up(op)
        finally:
            now = loop.time()
            self.done += 1
            self.live[label] += 1
            if sent:
                self.latencies_s[op.kind].append(now - intended)
                self.last_done = max(self.last_done, now)

    async def _sale(self, op: PlannedOp) -> tuple[bool, str]:
        terminal = self.terminals[op.terminal]
        if op.kind == "replay":
            while self.shown and self.shown[0][0] < time.time() - REPLAY_AGE_S_MAX:
                self.shown.popleft()
            if not self.shown:
                self.skipped[(op.kind, "skipped:no_recent_code")] += 1
                return False, "skipped"
            earlier = self.shown[int(op.pick * len(self.shown))][1]
            code, member_id = earlier.code, earlier.member_id
        else:
            member = self.members[op.member]
            code = member.expired_code(time.time()) if op.kind == "expired" else member.fresh_code(time.time())
            member_id = member.member_id
            if code is None:
                self.skipped[(op.kind, "skipped:no_code")] += 1
                return False, "skipped"
        sale = SaleObservation(op.index, op.kind, terminal.label, terminal.merchant_id, member_id, code,
                               f"LD{self.tag}-{op.index:07d}", op.amount, f"ld{self.tag}-{op.index}-sale")
        self.obs.sales.append(sale)
        self.sale_by_key[sale.idempotency_key] = sale
        self.sale_by_order[sale.order_ref] = sale
        try:
            result: Any = await terminal.client.pay(code, op.amount, sale.order_ref, idempotency_key=sale.idempotency_key)
        except asyncio.CancelledError:
            sale.outcome = "abandoned"
            raise
        except Exception as e:  # the SDK's errors, and bugs, which the checks then report
            result = e
        self._settle_sale(sale, result)
        return True, sale.outcome

    def _settle_sale(self, sale: SaleObservation, result: Any) -> None:
        if isinstance(result, Payment):
            sale.outcome, sale.payment_id, sale.points = "approved", result.payment_id, result.points
            self.open[sale.merchant_id].append(sale)
            self.approved[sale.merchant_id].append(sale)
            self.shown.append((time.time(), sale))
        elif isinstance(result, Declined):
            sale.outcome, sale.detail = "declined", result.decline_code
            sale.payment_id = result.payment.payment_id if result.payment is not None else None
        elif isinstance(result, ReversalQueued):
            sale.outcome = "reversal_queued"
        elif isinstance(result, Reversed):
            sale.outcome, sale.detail = "reversed", str(result.details.get("outcome", ""))
        elif isinstance(result, RequestError):
            sale.outcome, sale.detail = "refused", result.code
        elif isinstance(result, PosError):
            sale.outcome, sale.detail = "error", result.code
        else:
            sale.outcome, sale.detail = "error", type(result).__name__
            self._print_error(result)

    def _print_error(self, error: BaseException) -> None:
        if self.errors_printed < ERRORS_PRINTED_MAX:
            self.errors_printed += 1
            print("load: unexpected error:\n" + "".join(traceback.format_exception(error)), file=sys.stderr)

    def _target(self, op: PlannedOp, terminal: LoadTerminal) -> SaleObservation | None:
        if op.kind == "wrong_merchant":
            others = [m for m in sorted(self.approved) if m != terminal.merchant_id and self.approved[m]]
            if not others:
                return None
            # The whole part of the scaled pick chooses the merchant, the fraction its payment.
            scaled = op.pick * len(others)
            pool = self.approved[others[int(scaled)]]
            return pool[int((scaled % 1) * len(pool))]
        pool = self.open[terminal.merchant_id]
        if not pool:
            return None
        # One follow-up per payment: taken out of the pool (swap with the last, O(1)).
        i = int(op.pick * len(pool))
        pool[i], pool[-1] = pool[-1], pool[i]
        return pool.pop()

    async def _follow_up(self, op: PlannedOp) -> tuple[bool, str]:
        terminal = self.terminals[op.terminal]
        target = self._target(op, terminal)
        if target is None or target.payment_id is None:
            self.skipped[(op.kind, "skipped:no_payment_yet")] += 1
            return False, "skipped"
        amount = {"refund": max(1, int(target.points * op.fraction)), "wrong_merchant": 100}.get(op.kind, 0)
        f = FollowUpObservation(op.index, op.kind, terminal.label, terminal.merchant_id, target.payment_id,
                                target.order_ref, target.merchant_id, amount, f"ld{self.tag}-{op.index}-{op.kind}")
        self.obs.follow_ups.append(f)
        self.follow_up_by_key[f.idempotency_key] = f
        client, key = terminal.client, f.idempotency_key
        try:
            if op.kind in ("refund", "wrong_merchant"):
                result: Any = await client.refund(f.payment_id, amount, f"load {op.kind}", idempotency_key=key)
            elif op.kind == "cancel":
                result = await client.cancel(f.payment_id, "load cancel", idempotency_key=key)
            else:
                result = await client.reverse(f.order_ref, "load reversal", idempotency_key=key)
        except asyncio.CancelledError:
            f.outcome = "abandoned"
            raise
        except Exception as e:
            result = e
        self._settle_follow_up(f, result)
        return True, f.outcome

    def _settle_follow_up(self, f: FollowUpObservation, result: Any) -> None:
        if isinstance(result, ForwardQueued):
            f.outcome = "queued"
        elif isinstance(result, NotFound):
            f.outcome = "not_found"
        elif isinstance(result, RequestError):
            f.outcome, f.detail = "refused", result.code
        elif isinstance(result, PosError):
            f.outcome, f.detail = "unknown", result.code  # still pending in the journal: `resume` finishes it
        elif isinstance(result, BaseException):
            f.outcome, f.detail = "error", type(result).__name__
            self._print_error(result)
        elif f.kind in ("refund", "wrong_merchant"):
            f.outcome = "refunded"
        elif f.kind == "cancel":
            f.outcome = "cancelled"
        else:
            outcome = result.outcome if hasattr(result, "outcome") else result.get("outcome")
            f.outcome = str(outcome)

    # -- the open loop

    async def drive(self, plan: Sequence[PlannedOp], progress: "_Progress | None") -> None:
        loop = asyncio.get_running_loop()
        in_flight: set[asyncio.Task[None]] = set()
        self.t0 = loop.time() + START_DELAY_S
        ticker = asyncio.create_task(self._tick(progress, len(plan), in_flight)) if progress else None
        try:
            for op in plan:
                intended = self.t0 + op.at_s
                delay = intended - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.dispatched += 1
                if len(in_flight) >= self.options.in_flight_max:
                    self.skipped[(op.kind, "shed:in_flight_max")] += 1
                    self.done += 1
                    continue
                task = asyncio.create_task(self.execute(op, intended))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                _, pending = await asyncio.wait(set(in_flight), timeout=self.options.drain_timeout_s)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            if ticker is not None and progress is not None:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
                progress.update(self._snapshot(len(plan), in_flight))
                progress.stop()

    def _snapshot(self, planned: int, in_flight: set[asyncio.Task[None]]) -> dict[str, Any]:
        latencies = sorted(v for values in self.latencies_s.values() for v in values)
        return {
            "elapsed_s": max(0.0, asyncio.get_running_loop().time() - self.t0), "planned": planned,
            "dispatched": self.dispatched, "done": self.done, "in_flight": len(in_flight),
            "outcomes": dict(self.live), "p99_ms": percentile(latencies, 99) * 1000,
        }

    async def _tick(self, progress: "_Progress", planned: int, in_flight: set[asyncio.Task[None]]) -> None:
        while True:
            progress.update(self._snapshot(planned, in_flight))
            await asyncio.sleep(progress.every_s)

    # -- the end phase

    async def finish_terminal(self, terminal: LoadTerminal) -> TerminalState:
        """Faults are off: resume every unfinished operation, then flush the outbox until it is empty."""
        client = terminal.client
        for key, result in await client.resume():
            if key in self.sale_by_key:
                self._settle_sale(self.sale_by_key[key], result)
            elif key in self.follow_up_by_key:
                self._settle_follow_up(self.follow_up_by_key[key], result)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_TIMEOUT_S
        while client.outbox() and loop.time() < deadline:
            for entry, doc in await client.flush_outbox():
                self._apply_flushed(entry, doc)
            if client.outbox():
                await asyncio.sleep(0.1)
        journal = client.journal
        return TerminalState(terminal.label, len(journal.outbox()), len(journal.outbox(("dead",))),
                             len(journal.unfinished()))

    def _apply_flushed(self, entry: OutboxEntry, doc: Any) -> None:
        outcome = str(doc.get("outcome", "")) if isinstance(doc, dict) else ""
        f = self.follow_up_by_key.get(entry.idempotency_key)
        if f is not None:
            f.outcome = outcome if f.kind == "reversal" else "refunded"
            return
        # A sale's own reversal, queued by the SDK under its own key: note what it did.
        sale = self.sale_by_order.get(str(entry.document.get("order_ref", "")))
        if sale is not None and sale.outcome == "reversal_queued":
            sale.detail = f"reversal {outcome}"

    async def read_gateway(self, checkers: Mapping[str, AsyncPosClient]) -> None:
        """Look up every sale by its order reference and every approval by its payment id."""
        gate = asyncio.Semaphore(CHECK_CONCURRENCY)

        async def lookup(what: str, call: Any) -> tuple[bool, GatewayPayment | None]:
            problem = ""
            for _ in range(LOOKUP_ATTEMPTS_MAX):
                async with gate:
                    try:
                        return True, GatewayPayment.from_payment(await call())
                    except NotFound:
                        return True, None
                    except PosError as e:
                        problem = e.code
            self.obs.lookup_errors.append(f"{what}: {problem}")
            return False, None

        async def by_order(s: SaleObservation) -> None:
            ok, view = await lookup(f"order {s.order_ref}", lambda: checkers[s.merchant_id].find_by_order_ref(s.order_ref))
            if ok:
                self.obs.by_order_ref[order_key(s.merchant_id, s.order_ref)] = view

        async def by_id(s: SaleObservation) -> None:
            assert s.payment_id is not None
            ok, view = await lookup(f"payment {s.payment_id}", lambda: checkers[s.merchant_id].get_payment(s.payment_id))
            if ok:
                self.obs.by_payment_id[s.payment_id] = view

        await asyncio.gather(*(by_order(s) for s in self.obs.sales),
                             *(by_id(s) for s in self.obs.sales if s.outcome == "approved" and s.payment_id))

    def outcomes(self) -> dict[str, dict[str, int]]:
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for s in self.obs.sales:
            counts[s.kind][outcome_label(s.outcome, s.detail)] += 1
        for f in self.obs.follow_ups:
            counts[f.kind][outcome_label(f.outcome, f.detail)] += 1
        for (kind, label), n in self.skipped.items():
            counts[kind][label] += n
        return {kind: dict(counts[kind]) for kind in KINDS if kind in counts}


# ---------------------------------------------------------------------------
# Live progress: rich when it is installed, plain lines otherwise.


class _Progress(Protocol):
    every_s: float

    def update(self, snapshot: Mapping[str, Any]) -> None: ...
    def stop(self) -> None: ...


class _PlainProgress:
    every_s = PROGRESS_EVERY_S

    def update(self, s: Mapping[str, Any]) -> None:
        top = ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items(), key=lambda kv: -kv[1])[:4])
        print(f"load: {s['elapsed_s']:5.1f} s  sent {s['dispatched']}/{s['planned']}  done {s['done']}  "
              f"in flight {s['in_flight']}  p99 {s['p99_ms']:.1f} ms  {top}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        pass


class _RichProgress:
    every_s = PROGRESS_EVERY_S / 4

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self._live = Live(console=Console(stderr=True), auto_refresh=False, transient=False)
        self._live.start()

    def update(self, s: Mapping[str, Any]) -> None:
        from rich.table import Table

        table = Table(title=f"pointgate load  {s['elapsed_s']:.1f} s", show_header=True)
        for column in ("sent", "done", "in flight", "p99 ms"):
            table.add_column(column, justify="right")
        table.add_column("outcomes")
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items(), key=lambda kv: -kv[1]))
        table.add_row(f"{s['dispatched']}/{s['planned']}", str(s["done"]), str(s["in_flight"]),
                      f"{s['p99_ms']:.1f}", outcomes)
        self._live.update(table, refresh=True)

    def stop(self) -> None:
        self._live.stop()


def _progress(enabled: bool) -> _Progress | None:
    """Rich's live table on a terminal; plain lines when stderr is a file or pipe, or rich is missing."""
    if not enabled:
        return None
    if sys.stderr.isatty():
        try:
            return _RichProgress()
        except ImportError:
            pass
    return _PlainProgress()


# ---------------------------------------------------------------------------
# run_load and the command line.


RUN_DIR_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-s-?[0-9]+-[0-9a-f]{6}$")


def _prune_runs(runs_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` run directories (only ones this module named)."""
    if not runs_dir.is_dir():
        return
    ours = sorted(p for p in runs_dir.iterdir() if p.is_dir() and RUN_DIR_RE.match(p.name))
    for old in ours[:max(0, len(ours) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def _merchants_doc(config_dir: str | None) -> dict[str, Any]:
    default = Path(__file__).resolve().parent.parent / "config"  # as gateway.settings finds it
    directory = Path(config_dir or os.environ.get("POINTGATE_CONFIG_DIR") or default)
    try:
        with (directory / "merchants.toml").open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise LoadError(f"cannot read {directory / 'merchants.toml'}: {e}") from None


async def run_load(options: Options, admin: Admin | None = None, *,
                   around_drive: Callable[[], AsyncContextManager[Any]] | None = None,
                   credit: Credit | None = None) -> Report:
    """Set up, run the plan open loop, finish, read the books and check them.

    With `options.base_url` None an embedded gateway is started and `admin` is
    its own; otherwise `admin` (default: `CliAdmin` on `options.redis_url` or
    REDIS_URL) issues the keys, registers the terminals and audits.
    `around_drive` is entered just before the first operation is sent and left
    once the last has finished, before the faults are turned off and the end
    phase begins (simulators/soak.py crashes the gateway and Redis inside it).
    `credit` gives each member its points (default: the earnings API, as the
    affiliate; simulators/cluster_failover.py passes its own).
    """
    plan = plan_operations(options)
    tag = secrets.token_hex(3)
    started = time.gmtime()
    run_dir = Path(options.var_dir) / "runs" / f"{time.strftime('%Y%m%dT%H%M%SZ', started)}-s{options.seed}-{tag}"
    _prune_runs(run_dir.parent, RUNS_KEPT - 1)
    merchants_doc = _merchants_doc(options.config_dir)
    layout = terminal_layout(merchants_doc, options.merchants, options.terminals)
    currency = {m["id"]: m.get("currency", "KRW") for m in merchants_doc.get("merchant", [])}
    warnings = plan_warnings(options)
    for warning in warnings:
        print(f"load: warning: {warning}", file=sys.stderr)
    async with contextlib.AsyncExitStack() as stack:
        if options.base_url is None:
            base_url, admin = await stack.enter_async_context(embedded_gateway(run_dir, options.config_dir))
        else:
            base_url = options.base_url.rstrip("/")
            if admin is None:
                redis_url = options.redis_url or os.environ.get("REDIS_URL", "")
                if not redis_url:
                    raise LoadError("an external gateway needs --redis-url (or REDIS_URL) for the end-of-run audit")
                admin = CliAdmin(redis_url, options.config_dir)
                stack.push_async_callback(admin.close)
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S, sock_connect=options.connect_timeout_s)
        session = await stack.enter_async_context(aiohttp.ClientSession(timeout=timeout))
        audit_before = await admin.audit()

        keys = dict(options.keys or {})
        for merchant_id in (*options.merchants, AFFILIATE_ID):
            if merchant_id not in keys:
                keys[merchant_id] = await admin.issue_key(merchant_id)
                stack.push_async_callback(admin.revoke_key, merchant_id, keys[merchant_id][0])
        configured = {(m["id"], st["id"], t) for m in merchants_doc.get("merchant", [])
                      for st in m.get("store", []) for t in st.get("terminals", [])}
        for merchant_id, store_id, terminal_id in sorted(set(layout) - configured):
            await admin.add_terminal(merchant_id, store_id, terminal_id)

        gate = asyncio.Semaphore(SETUP_CONCURRENCY)
        credit = credit or earnings_credit(session, base_url, keys[AFFILIATE_ID])

        async def new_member(index: int, points: int) -> LoadMember:
            async with gate:
                return await _new_member(base_url, index, points, credit, tag)

        members = list(await asyncio.gather(*(new_member(i, p) for i, p in enumerate(plan_credits(options)))))

        proxy = None
        terminal_url = base_url
        if options.faults:
            upstream = urlsplit(base_url)
            proxy = await FaultProxy(upstream.hostname or "127.0.0.1", upstream.port or 80, seed=options.seed).start()
            stack.push_async_callback(proxy.close)
            proxy.set_rates(**dict(options.faults))
            if not options.fault_reads:
                proxy.always(Fault.PASS, method="GET")  # standing rules are tried before the rates
            terminal_url = proxy.url

        terminals = []
        attempts = AttemptLog()
        for index, (merchant_id, store_id, terminal_id) in enumerate(layout):
            key_id, secret = keys[merchant_id]
            config = PosConfig(
                terminal_url, merchant_id, store_id, terminal_id, key_id, secret, currency=currency.get(merchant_id, "KRW"),
                connect_timeout_s=options.connect_timeout_s, read_timeout_s=options.read_timeout_s,
                retry_count_max=2, retry_delay_s_base=options.retry_delay_s_base,
                retry_delay_s_max=options.retry_delay_s_max,
                unknown_outcome_deadline_s=options.deadline_s,
                journal_path=str(run_dir / "journals" / f"{index:03d}-{merchant_id}-{store_id}-{terminal_id}.sqlite3"))
            terminals.append(LoadTerminal(index, merchant_id, store_id, terminal_id, _LoggedPosClient(config, attempts)))
            stack.push_async_callback(terminals[-1].client.close)
        checkers = {}
        for merchant_id in options.merchants:
            first = next(t for t in terminals if t.merchant_id == merchant_id) if any(
                t.merchant_id == merchant_id for t in terminals) else None
            if first is None:
                continue
            config = dataclasses.replace(first.client.config, base_url=base_url, journal_path=":memory:")
            checkers[merchant_id] = AsyncPosClient(config, journal=Journal(":memory:"))
            stack.push_async_callback(checkers[merchant_id].close)

        run = _Run(options, members, terminals, tag)
        async with around_drive() if around_drive is not None else contextlib.nullcontext():
            await run.drive(plan, _progress(options.progress))
        if proxy is not None:
            proxy.clear()  # faults off for the end phase: what is left must now get through
        run.obs.terminals = list(await asyncio.gather(*(run.finish_terminal(t) for t in terminals)))
        await run.read_gateway(checkers)
        obs = await read_books(run.obs, members, admin)
        obs.audit_before = _unit_totals(audit_before, obs.unit)
        checks = run_checks(obs)
        completed = sum(len(v) for v in run.latencies_s.values())
        span_s = max(run.last_done - run.t0, plan[-1].at_s if plan else 0.0, 1e-9)
        all_latencies = [v for values in run.latencies_s.values() for v in values]
        faults: dict[str, Any] = {}
        if proxy is not None:
            faults = {"injected": {str(k): v for k, v in proxy.stats.faults.items()},
                      "upstream_failures": proxy.stats.upstream_failures,
                      "connections_accepted": proxy.stats.connections_accepted}
        report = Report(
            options=options.public(), plan=plan, plan_digest=plan_digest(plan), base_url=base_url,
            embedded=options.base_url is None, started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", started),
            duration_s=round(span_s, 3), outcomes=run.outcomes(),
            offered_per_s=round(options.rate_per_s, 3), throughput_per_s=round(completed / span_s, 2),
            latency_ms={"all": latency_summary(all_latencies),
                        **{k: latency_summary(run.latencies_s[k]) for k in KINDS if run.latencies_s.get(k)}},
            schedule_lag_ms_max=round(run.lag_s_max * 1000, 2), faults=faults, checks=checks,
            warnings=warnings, observations=obs, members=members, attempts=attempts, t0=run.t0)
    if options.report_path:
        path = Path(options.report_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
        report.report_path = str(path)
    return report


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    d = Options()
    parser = parser or argparse.ArgumentParser(prog="simulators load", description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="the gateway (default: start an embedded one)")
    parser.add_argument("--redis-url", help="the gateway's Redis, for the audit (default: REDIS_URL)")
    parser.add_argument("--config-dir", help="where merchants.toml is (default: config/)")
    parser.add_argument("--terminals", type=int, default=d.terminals, help=f"store terminals (default {d.terminals})")
    parser.add_argument("--members", type=int, default=d.members, help=f"enrolled members (default {d.members})")
    parser.add_argument("--rate", type=float, default=d.rate_per_s,
                        help=f"operations per second, open loop (default {d.rate_per_s:g})")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, default=d.seconds, help=f"length of the run (default {d.seconds:g})")
    length.add_argument("--requests", type=int, help="number of operations instead of --seconds")
    parser.add_argument("--mix", default=",".join(f"{k}={w:g}" for k, w in d.mix),
                        help="weights, KIND=W,...; kinds: " + ", ".join(KINDS) + " (default %(default)s)")
    parser.add_argument("--faults", default="off",
                        help="proxy rates NAME=RATE,... of " + ", ".join(FAULT_NAMES) + "; 'on' for "
                        + ",".join(f"{k}={v:g}" for k, v in FAULTS_ON) + " (default off)")
    parser.add_argument("--no-fault-reads", action="store_true",
                        help="aim faults at writes only (aiohttp re-sends a GET whose answer was dropped, same nonce)")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"schedule, choices and faults (default {d.seed})")
    parser.add_argument("--report", default=d.report_path, help="JSON report path (default %(default)s)")
    parser.add_argument("--var-dir", default=d.var_dir,
                        help="journals and the embedded gateway's data (default %(default)s)")
    parser.add_argument("--deadline-s", type=float, default=d.deadline_s,
                        help=f"terminals' unknown-outcome deadline before reversing (default {d.deadline_s:g})")
    parser.add_argument("--quiet", action="store_true", help="no live progress")
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(
        base_url=args.base_url, redis_url=args.redis_url, config_dir=args.config_dir, terminals=args.terminals,
        members=args.members, rate_per_s=args.rate, seconds=args.seconds, requests=args.requests,
        mix=parse_mix(args.mix), faults=parse_faults(args.faults), fault_reads=not args.no_fault_reads,
        seed=args.seed, report_path=args.report, var_dir=args.var_dir, deadline_s=args.deadline_s,
        progress=not args.quiet,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`simulators load ...`: 0 when every check passed, 1 when one failed, 2 when the run could not start."""
    return run_from_args(build_parser().parse_args(argv))


def run_from_args(args: argparse.Namespace) -> int:
    """`main` for a parser that `build_parser` filled in (e.g. a `simulators` subcommand)."""
    try:
        options = options_from_args(args)
    except ValueError as e:
        print(f"simulators load: {e}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(run_load(options))
    except LoadError as e:
        print(f"simulators load: {e}", file=sys.stderr)
        return 2
    print(render_report(report))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
