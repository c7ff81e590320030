"""A model-based test: Hypothesis drives the real gateway over HTTP, on real Redis, with
random sequences of member enrolments, earnings, sales (at GS25 and at CU, with and without
a coupon), cancels, partial and full refunds, reversals by order reference (also before the
sale arrives: "reversal wins"), replayed codes, coupons claimed and issued, retries under the
same idempotency key and the same key with another body, and compares the gateway with a
plain Python model: every answer as it comes; after every step each member's balance (never
negative); every ten steps and at the end of each run every payment's state, refunds (never
more than it paid) and every coupon's state; and at the end of each run the audit of the
whole journal, which must be clean, with each account moved by exactly what the model says
(members, affiliate, merchants, coupon funders) and the points conserved.

How a synchronous state machine drives the asynchronous gateway: Hypothesis calls the
rules synchronously, and the test's own event loop (the session loop of pytest-asyncio)
cannot be blocked and re-entered from inside a test. So the gateway does not run on it:
`LoopThread` starts a fresh event loop in a thread of its own, the gateway (the same
`serving(settings)` every e2e test uses: aiohttp app, journal consumer, HTTP client
session) is entered on that loop, and each rule submits its coroutine with
`asyncio.run_coroutine_threadsafe` and waits for the result with a timeout. Everything
asynchronous (the server, its Redis pools, the client session, the signed terminals)
is created, used and closed on that one loop, so no object ever crosses loops; the
test thread only ever holds plain results. The thread is stopped and joined, and its
loop closed, when the test ends. One gateway serves all the runs of the test; each run
(a fresh machine) enrols its own members and uses its own order references and keys, and
compares the audit's account totals with those the previous clean run ended with.

Preconditions depend on the model only, never on the clock (Hypothesis replays a run by
its choices, and a precondition that changed with the time would make the replay differ):
a phone is allowed twenty codes a run, which this step's and the next one's always hold.

Size: POINTGATE_MODEL_EXAMPLES runs (default 15) of at most POINTGATE_MODEL_STEPS steps
(default 50) each, about ten seconds in `make test`; a soak sets both higher.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine

import pytest
from hypothesis import HealthCheck, Phase, settings as hsettings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from gateway import codes, payments
from gateway.app import STORE
from gateway.audit import run_audit

from tests.e2e.conftest import Member, Terminal, serving
from tests.e2e.test_coupon_campaigns import claim, issue, operator
from tests.e2e.test_member_api import affiliate, earn
from tests.e2e.test_member_wallet import app_call, wallet

MODEL_EXAMPLES = int(os.environ.get("POINTGATE_MODEL_EXAMPLES", "15"))
MODEL_STEPS = int(os.environ.get("POINTGATE_MODEL_STEPS", "50"))
STEP_TIMEOUT_S = 30.0
"""The longest one rule's HTTP calls may take; a gateway that hangs fails the step, not the suite."""
FULL_CHECK_EVERY_STEPS = 10
"""Payments and coupons are checked this often and at the end, the audit at the end; balances after every step."""
CODES_PER_RUN_MAX = 20
"""Codes one member's phone makes in a run: the ten seqs of this step and of the next."""
MEMBERS_MAX = max(4, MODEL_STEPS // 15)
"""Members one run enrols at most: enough to mix wallets, few enough that each sees several movements."""
MERCHANTS = {"gs25": ("gs25-gangnam-01", "t1"), "cu": ("cu-jongno-01", "t1")}
CAMPAIGNS = {
    # campaign id: (issued by, merchant, minimum spend, the discount of an amount); as in config/campaigns.toml
    "gs25-welcome": ("claim", "gs25", 5_000, lambda amount: min(amount * 1_000 // 10_000, 2_000)),
    "cu-1000": ("operator", "cu", 3_000, lambda amount: min(1_000, amount)),
}
GIVING_BACK = ("approved", "partially_refunded")
"""The states a reversal gives points back from (payments.TRANSITIONS)."""

amounts = st.integers(min_value=1, max_value=12_000)
"""Sale amounts: a convenience store's, around both coupons' minimum spends."""
indexes = st.integers(min_value=0, max_value=1_000)
merchants = st.sampled_from(sorted(MERCHANTS))
by = st.sampled_from(["its merchant"] * 3 + ["another merchant"])
kinds = st.sampled_from(["sale", "cancel", "refund", "reversal", "earning", "coupon"])
"""The requests the gateway stores an answer for, by the kind `Sent` records."""


def recent(items: list[Any], which: int) -> Any:
    """The `which`-th most recent item (cyclically): Hypothesis shrinks `which` towards 0, the latest,
    and a step on what was just made is where sequences (sale, refund, refund, reversal) grow."""
    return items[-1 - which % len(items)]


# -- the event loop the gateway runs on -------------------------------------------


class LoopThread:
    """An event loop running in a thread of its own; `run` hands it a coroutine and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name="model-gateway-loop", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout_s: float = STEP_TIMEOUT_S) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(STEP_TIMEOUT_S)
        assert not self.thread.is_alive(), "the gateway's event loop did not stop"


@dataclass
class World:
    """What every run shares: the gateway on its loop, a terminal per merchant, an affiliate, an operator."""

    loop: LoopThread
    gateway: Any
    terminals: dict[str, Terminal]
    card: Terminal
    ops: Terminal
    settings: Any
    totals: dict[str, int] | None = None
    """The audit's account totals at the end of the last run that ended cleanly: the next run's baseline."""

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run(coroutine)


@pytest.fixture
def world(settings, store):
    """A gateway serving on its own event loop in a background thread (see the module docstring)."""
    loop = LoopThread()
    stack = contextlib.AsyncExitStack()
    try:
        gateway = loop.run(stack.enter_async_context(serving(settings)))

        async def parties():
            terminals = {m: await gateway.terminal(m, *place) for m, place in MERCHANTS.items()}
            return terminals, await affiliate(gateway), await operator(gateway)

        terminals, card, ops = loop.run(parties())
        yield World(loop, gateway, terminals, card, ops, settings)
    finally:
        loop.run(stack.aclose())
        loop.close()


# -- the model ----------------------------------------------------------------------


@dataclass
class Wallet:
    member: Member
    token: str
    balance: int = 0
    spent_by_day: dict[str, int] = field(default_factory=dict)
    made: set[tuple[int, int]] = field(default_factory=set)
    """(step, seq) of every code the phone has shown."""
    burned: list[tuple[str, int]] = field(default_factory=list)
    """(code, step) of the codes the gateway verified (approved or declined after the check)."""


@dataclass
class Coupon:
    code: str
    campaign_id: str
    wallet: Wallet
    redeemed_by: str | None = None


@dataclass
class Sale:
    payment_id: str
    merchant: str
    wallet: Wallet
    amount: int
    order_ref: str
    state: str
    points: int = 0
    discount: int = 0
    coupon: Coupon | None = None
    refunded_amount: int = 0
    refunded_points: int = 0
    """Points the refunds gave back (the payment's `refunded_points`; a cancel or reversal is not a refund)."""
    returned_points: int = 0
    """Points given back to the member by refunds, a cancel or a reversal."""
    returned_discount: int = 0
    """Discount points given back to the coupon's funder."""
    business_day: str = ""

    @property
    def merchant_holds(self) -> int:
        """What the merchant's payable still holds of this payment."""
        return self.points + self.discount - self.returned_points - self.returned_discount


@dataclass
class Order:
    merchant: str
    order_ref: str
    payment_id: str | None = None
    declined: bool = False
    reversed: bool = False


@dataclass
class Sent:
    """A request whose answer the gateway stored under its idempotency key."""

    kind: str
    caller: Terminal
    path: str
    document: dict[str, Any]
    key: str
    status: int
    raw: bytes


def _noting_failure(method: Callable[..., Any]) -> Callable[..., Any]:
    """A step that raised leaves the model behind the gateway: the end-of-run checks are skipped then,
    so the report shows the step's own failure."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self.failed = True
            raise
    return wrapper


class GatewayModel(RuleBasedStateMachine):
    world: World

    def __init__(self) -> None:
        super().__init__()
        self.wallets: list[Wallet] = []
        self.sales: dict[str, Sale] = {}
        self.orders: dict[tuple[str, str], Order] = {}
        self.coupons: list[Coupon] = []
        self.sent: list[Sent] = []
        self.earned = 0
        self.steps = 0
        self.failed = False
        # The audit reads every partition (about half a second), so a run starts from the totals
        # the last clean run ended with; after a failed run (or the first) it takes its own.
        self.baseline = self.world.totals if self.world.totals is not None else self._totals()
        self.world.totals = None

    # -- plumbing ------------------------------------------------------------------

    def run(self, coroutine):
        return self.world.run(coroutine)

    def gather(self, coroutines) -> list[Any]:
        """Reads at once: they change nothing, so their order does not matter."""
        async def every(coroutines):
            return await asyncio.gather(*coroutines)
        return self.run(every(list(coroutines)))

    @property
    def gateway(self):
        return self.world.gateway

    def send(self, kind: str, caller: Terminal, path: str, document: dict[str, Any], key: str | None = None,
             keep: bool = True) -> tuple[int, Any, dict[str, Any]]:
        """One signed POST with a fresh nonce; a stored answer (2xx) is kept for replays."""
        key = key or "mdl-" + secrets.token_hex(8)
        body = json.dumps(document).encode()
        status, answer, headers = self.run(caller.send("POST", path, body=body, idempotency_key=key))
        if keep and 200 <= status < 300:
            self.sent.append(Sent(kind, caller, path, document, key, status, headers["_raw"]))
        return status, answer, headers

    def _totals(self) -> dict[str, int]:
        report = self.run(run_audit(self.gateway.app[STORE]))
        assert report.clean, report.problems
        return dict(report.totals_by_unit().get("HMP", {}))

    def fresh_code(self, w: Wallet) -> tuple[str, int]:
        """The phone's next unused code for this step or the next one (both verify for 30 s or more)."""
        now_step = codes.step_of(int(time.time()), self.world.settings.code_step_s)
        step, seq = next((step, seq) for step in (now_step, now_step + 1) for seq in range(10) if (step, seq) not in w.made)
        w.made.add((step, seq))
        phone = w.member.phone
        return codes.encode_code(w.member.prefix, phone.slot, seq, phone.secret, step), step

    def payers(self) -> list[Wallet]:
        """The members whose phone still has a fresh code for certain. Counted, not read off the clock:
        preconditions must not depend on the time, or Hypothesis cannot replay a run. The window
        (this step and the next) has CODES_PER_RUN_MAX codes, and those in use are among those made."""
        return [w for w in self.wallets if len(w.made) < CODES_PER_RUN_MAX]

    def replayable(self) -> list[tuple[Wallet, str]]:
        """Burned codes of this step or later: inside the verification window for as long as a request takes."""
        now_step = codes.step_of(int(time.time()), self.world.settings.code_step_s)
        return [(w, code) for w in self.wallets for code, step in w.burned if step >= now_step]

    def today(self, merchant: str) -> str:
        m = next(m for m in self.world.settings.merchants if m.id == merchant)
        return payments.business_day(int(time.time() * 1000), m.time_zone, m.business_day_cutoff)

    # -- the model's sale ----------------------------------------------------------

    def sale(self, w: Wallet, merchant: str, amount: int, order_ref: str, coupon: Coupon | None = None,
             code: tuple[str, int] | None = None) -> None:
        """Send a sale and check its answer against what the model expects, then apply it."""
        code_text, step = code or self.fresh_code(w)
        store_id, terminal_id = MERCHANTS[merchant]
        document = {"code": code_text, "amount": amount, "currency": "KRW", "order_ref": order_ref,
                    "store_id": store_id, "terminal_id": terminal_id}
        if coupon is not None:
            document["coupon_codes"] = [coupon.code]
        status, answer, _ = self.send("sale", self.world.terminals[merchant], "/v1/payments", document)

        order = self.orders.get((merchant, order_ref))
        if order is not None and order.payment_id and not order.declined and not order.reversed:
            assert (409, "order_ref_in_use") == (status, answer["code"])
            return
        assert 201 == status, answer
        replayed = code is not None
        decline, points, discount = self._decide(w, merchant, amount, order, coupon, replayed)
        if decline != "reversed" and not replayed:
            w.burned.append((code_text, step))  # verified, so burned, whatever the outcome after
        sale = Sale(answer["payment_id"], merchant, w, amount, order_ref, "declined" if decline else "approved",
                    business_day=answer["business_day"])
        if decline:
            assert ("declined", decline, 0, None) == (
                answer["status"], answer["decline"]["code"], answer["points"], answer["balance_after"])
        else:
            w.balance -= points
            day = payments.business_day(int(time.time() * 1000), self.world.settings.member_day_time_zone, "00:00")
            w.spent_by_day[day] = w.spent_by_day.get(day, 0) + points
            sale.points, sale.discount = points, discount
            if coupon is not None:
                coupon.redeemed_by, sale.coupon = sale.payment_id, coupon
            assert ("approved", points, w.balance, discount) == (
                answer["status"], answer["points"], answer["balance_after"], answer["discount"])
        self.sales[sale.payment_id] = sale
        order = self.orders.setdefault((merchant, order_ref), Order(merchant, order_ref))
        if order.payment_id is None or order.declined:
            order.payment_id, order.declined = sale.payment_id, bool(decline)

    def _decide(self, w: Wallet, merchant: str, amount: int, order: Order | None, coupon: Coupon | None,
                replayed: bool) -> tuple[str, int, int]:
        """(decline code or '', points the member pays, discount), in pay.lua's order of checks."""
        if order is not None and order.reversed:
            return "reversed", 0, 0
        if replayed:
            return "replayed_code", 0, 0
        discount = 0
        if coupon is not None:
            _, where, min_spend, off = CAMPAIGNS[coupon.campaign_id]
            if coupon.wallet is not w:
                return "invalid_coupon", 0, 0
            if coupon.redeemed_by is not None:
                return "coupon_used", 0, 0
            if merchant != where:
                return "coupon_not_eligible", 0, 0
            if amount < min_spend:
                return "coupon_min_spend", 0, 0
            discount = off(amount)
        points = amount - discount
        day = payments.business_day(int(time.time() * 1000), self.world.settings.member_day_time_zone, "00:00")
        if w.spent_by_day.get(day, 0) + points > self.world.settings.member_daily_points_max:
            return "limit_exceeded", 0, 0
        if points > w.balance:
            return "insufficient_points", 0, 0
        return "", points, discount

    def give_back(self, sale: Sale, amount: int, refund: bool = False) -> tuple[int, int]:
        """Points back to the member and discount back to the funder for `amount` of the sale
        (lib.lua payment_give_back: a refund pro rata rounded down; the last refund, a cancel and a
        reversal take what is left, and restore the coupon)."""
        last = not refund or sale.refunded_amount + amount == sale.amount
        member_back = sale.points - sale.returned_points if last else sale.points * amount // sale.amount
        discount_back = sale.discount - sale.returned_discount if last else sale.discount * amount // sale.amount
        sale.returned_points += member_back
        sale.returned_discount += discount_back
        if refund:
            sale.refunded_points += member_back
        sale.wallet.balance += member_back
        if last and sale.coupon is not None and sale.coupon.redeemed_by == sale.payment_id:
            sale.coupon.redeemed_by = None
        return member_back, discount_back

    def pick_sale(self, which: int, live: bool, discounted: bool = False) -> Sale:
        """A sale points can still go back from (if there is one and `live`; one with a coupon's discount
        if there is one and `discounted`: its pro rata shares are where rounding lives), else any sale."""
        candidates = list(self.sales.values())
        for wanted, keep in ((live, lambda s: s.state in GIVING_BACK), (discounted, lambda s: s.discount > 0)):
            if wanted:
                candidates = [s for s in candidates if keep(s)] or candidates
        return recent(candidates, which)

    # -- rules ---------------------------------------------------------------------

    @initialize(points=st.integers(min_value=1_000, max_value=50_000))
    @_noting_failure
    def first_member(self, points):
        self.enrol(points)

    @precondition(lambda self: len(self.wallets) < MEMBERS_MAX)
    @rule(points=st.integers(min_value=1_000, max_value=50_000))
    @_noting_failure
    def enrol(self, points):
        """A member enrols a phone in the app (a wallet with no points), and Hana Card credits a welcome bonus."""
        member, token = self.run(wallet(self.gateway))
        self.wallets.append(Wallet(member, token))
        self.earn(len(self.wallets) - 1, points)

    @rule(who=indexes, points=st.integers(min_value=1, max_value=30_000))
    @_noting_failure
    def earn(self, who, points):
        """Hana Card credits points."""
        w = self.wallets[who % len(self.wallets)]
        key = "mdl-" + secrets.token_hex(8)
        status, answer, headers = self.run(earn(self.world.card, w.member.member_id, points, key=key))
        assert 201 == status, answer
        w.balance += points
        self.earned += points
        assert (points, w.balance) == (answer["points"], answer["balance_after"])
        document = {"member_id": w.member.member_id, "points": points, "affiliate_ref": answer["affiliate_ref"]}
        self.sent.append(Sent("earning", self.world.card, "/v1/earnings", document, key, status, headers["_raw"]))

    @precondition(lambda self: self.payers())
    @rule(who=indexes, merchant=merchants, amount=amounts, with_coupon=st.booleans())
    @_noting_failure
    def pay(self, who, merchant, amount, with_coupon):
        """A sale with a fresh code under a new order reference, with the member's unused coupon
        for that merchant if asked and there is one (and then above its minimum spend)."""
        payers = self.payers()
        w = payers[who % len(payers)]
        coupons = [c for c in self.coupons if c.wallet is w and c.redeemed_by is None and CAMPAIGNS[c.campaign_id][1] == merchant]
        coupon = coupons[0] if with_coupon and coupons else None
        if coupon is not None:
            amount += CAMPAIGNS[coupon.campaign_id][2]  # a basket above the coupon's minimum spend
        self.sale(w, merchant, amount, "mdl-" + secrets.token_hex(6), coupon)

    @precondition(lambda self: any(c.wallet in self.payers() for c in self.coupons))
    @rule(which=indexes, at=by, amount=amounts)
    @_noting_failure
    def pay_with_coupon(self, which, at, amount):
        """A sale with one of the member's coupons (perhaps used already, below its minimum spend, or
        at a merchant it is not for)."""
        payers = self.payers()
        usable = [c for c in self.coupons if c.wallet in payers]
        coupon = recent(usable, which)
        merchant = CAMPAIGNS[coupon.campaign_id][1]
        if at == "another merchant":
            merchant = next(m for m in MERCHANTS if m != merchant)
        self.sale(coupon.wallet, merchant, amount, "mdl-" + secrets.token_hex(6), coupon)

    @precondition(lambda self: self.orders and self.payers())
    @rule(which=indexes, reversed_only=st.booleans(), who=indexes, amount=amounts)
    @_noting_failure
    def pay_again_for_order(self, which, reversed_only, who, amount):
        """A sale under an order reference seen before: after its reversal ('reversal wins': it
        declines and moves nothing), after a decline (the cashier tries again) or after an approval
        (the reference is in use)."""
        orders = [o for o in self.orders.values() if o.reversed or not reversed_only] or list(self.orders.values())
        order = recent(orders, which)
        payers = self.payers()
        self.sale(payers[who % len(payers)], order.merchant, amount, order.order_ref)

    @precondition(lambda self: any(w.burned for w in self.wallets))
    @rule(which=indexes, merchant=merchants, amount=amounts)
    @_noting_failure
    def replay_code(self, which, merchant, amount):
        """A used code presented again (a photographed screen), in a new order: replayed_code, nothing moves.
        (In a run longer than a code step the older codes have expired; then there may be none to replay.)"""
        replayable = self.replayable()
        if replayable:
            w, code = recent(replayable, which)
            self.sale(w, merchant, amount, "mdl-" + secrets.token_hex(6), code=(code, 0))

    @precondition(lambda self: self.sales)
    @rule(which=indexes, live=st.booleans(), sent_by=by)
    @_noting_failure
    def cancel(self, which, live, sent_by):
        """The cashier voids a sale (or another merchant tries to: it is not theirs to see)."""
        sale = self.pick_sale(which, live)
        foreign = sent_by == "another merchant"
        merchant = next(m for m in MERCHANTS if m != sale.merchant) if foreign else sale.merchant
        store_id, terminal_id = MERCHANTS[merchant]
        status, answer, _ = self.send("cancel", self.world.terminals[merchant], f"/v1/payments/{sale.payment_id}/cancel",
                                      {"store_id": store_id, "terminal_id": terminal_id, "reason": "void"})
        if foreign:
            assert (404, "payment_not_found") == (status, answer["code"])
        elif sale.state != "approved":
            assert (409, "invalid_state") == (status, answer["code"])
        elif sale.business_day != self.today(sale.merchant):
            assert (409, "cancel_window_closed") == (status, answer["code"])
        else:
            self.give_back(sale, sale.amount)
            sale.state = "cancelled"
            assert (200, "cancelled", sale.wallet.balance) == (status, answer["status"], answer["balance_after"])

    @precondition(lambda self: self.sales)
    @rule(which=indexes, live=st.booleans(), discounted=st.booleans(), amount=amounts, everything_left=st.booleans())
    @_noting_failure
    def refund(self, which, live, discounted, amount, everything_left):
        """A refund of part of a sale, or of all that is left of it, or of more than that."""
        sale = self.pick_sale(which, live, discounted)
        left = sale.amount - sale.refunded_amount
        if everything_left and left > 0:
            amount = left
        store_id, terminal_id = MERCHANTS[sale.merchant]
        status, answer, _ = self.send("refund", self.world.terminals[sale.merchant], f"/v1/payments/{sale.payment_id}/refunds",
                                      {"amount": amount, "store_id": store_id, "terminal_id": terminal_id, "reason": "returned"})
        if sale.state not in GIVING_BACK:
            assert (409, "invalid_state") == (status, answer["code"])
        elif amount > left:
            assert (409, "refund_exceeds_payment", f"at most {left} can still be refunded") == (
                status, answer["code"], answer["detail"])
        else:
            member_back, discount_back = self.give_back(sale, amount, refund=True)
            sale.refunded_amount += amount
            sale.state = "refunded" if sale.refunded_amount == sale.amount else "partially_refunded"
            assert 201 == status, answer
            assert (amount, member_back, discount_back, sale.wallet.balance) == (
                answer["refund"]["amount"], answer["refund"]["points"], answer["refund"]["discount_points"],
                answer["refund"]["balance_after"])
            assert (sale.state, sale.refunded_amount, sale.refunded_points) == (
                answer["payment"]["status"], answer["payment"]["refunded_amount"], answer["payment"]["refunded_points"])

    @rule(which=indexes, of=st.sampled_from(["an order sent"] * 3 + ["an order not sent yet"]), merchant=merchants)
    @_noting_failure
    def reverse(self, which, of, merchant):
        """The terminal got no answer and reverses by its own order reference; or the reversal
        overtakes its sale: the order is marked, and the sale, when it comes, declines."""
        if of == "an order sent" and self.orders:
            order = recent(list(self.orders.values()), which)
        else:
            order = Order(merchant, "mdl-" + secrets.token_hex(6))
            self.orders[(merchant, order.order_ref)] = order
        self.reversal(order)

    def reversal(self, order: Order) -> None:
        store_id, terminal_id = MERCHANTS[order.merchant]
        status, answer, _ = self.send("reversal", self.world.terminals[order.merchant], "/v1/reversals",
                                      {"order_ref": order.order_ref, "store_id": store_id, "terminal_id": terminal_id,
                                       "reason": "no answer"})
        assert 200 == status, answer
        order.reversed = True
        if order.payment_id is None:
            assert ("recorded", None) == (answer["outcome"], answer["payment"])
            return
        sale = self.sales[order.payment_id]
        if sale.state in GIVING_BACK:
            self.give_back(sale, sale.amount - sale.refunded_amount)
            sale.state = "reversed"
            assert ("reversed", sale.wallet.balance) == (answer["outcome"], answer["payment"]["balance_after"])
        else:
            assert "nothing_to_reverse" == answer["outcome"]
        assert (sale.payment_id, sale.state) == (answer["payment"]["payment_id"], answer["payment"]["status"])

    @precondition(lambda self: self.wallets)
    @rule(who=indexes, campaign_id=st.sampled_from(sorted(CAMPAIGNS)))
    @_noting_failure
    def get_coupon(self, who, campaign_id):
        """The member claims GS25's welcome coupon in the app (one each), or an operator issues CU's (three each)."""
        w = self.wallets[who % len(self.wallets)]
        held = sum(1 for c in self.coupons if c.wallet is w and c.campaign_id == campaign_id)
        key = "mdl-" + secrets.token_hex(8)
        if CAMPAIGNS[campaign_id][0] == "claim":
            status, answer, _ = self.run(claim(self.gateway, {"member_id": w.member.member_id, "token": w.token},
                                               campaign_id, key))
            limit = 1
        else:
            status, answer, headers = self.run(issue(self.world.ops, campaign_id, w.member.member_id, key))
            limit = 3
            if status == 201:
                self.sent.append(Sent("coupon", self.world.ops, f"/v1/campaigns/{campaign_id}/coupons",
                                      {"member_id": w.member.member_id}, key, status, headers["_raw"]))
        if held >= limit:
            assert (409, "coupon_limit_reached") == (status, answer["code"])
            return
        assert (201, "issued", campaign_id) == (status, answer["state"], answer["campaign_id"])
        self.coupons.append(Coupon(answer["code"], campaign_id, w))

    def pick_sent(self, kind: str, which: int) -> Sent:
        """A stored request of that kind if there is one, else any."""
        candidates = [s for s in self.sent if s.kind == kind] or self.sent
        return recent(candidates, which)

    @precondition(lambda self: self.sent)
    @rule(kind=kinds, which=indexes)
    @_noting_failure
    def retry(self, kind, which):
        """A request sent again with its idempotency key and body (freshly signed): the same status and
        bytes, marked replayed, and nothing moves again."""
        sent = self.pick_sent(kind, which)
        status, _, headers = self.send(sent.kind, sent.caller, sent.path, sent.document, sent.key, keep=False)
        assert (sent.status, sent.raw, "true") == (status, headers["_raw"], headers.get("idempotent-replayed"))

    @precondition(lambda self: self.sent)
    @rule(kind=kinds, which=indexes)
    @_noting_failure
    def reuse_key_for_another_body(self, kind, which):
        """The same idempotency key with another body is refused, and nothing moves."""
        sent = self.pick_sent(kind, which)
        changed = dict(sent.document)
        if "amount" in changed:
            changed["amount"] += 1
        elif "points" in changed:
            changed["points"] += 1
        elif "reason" in changed:
            changed["reason"] += " again"
        else:  # a coupon issue, now for another member
            changed["member_id"] = "m" + "0" * 15
        status, answer, _ = self.send(sent.kind, sent.caller, sent.path, changed, sent.key, keep=False)
        assert (422, "idempotency_mismatch") == (status, answer["code"])

    # -- invariants ------------------------------------------------------------------

    @invariant()
    @_noting_failure
    def balances_are_the_models(self):
        """After every step each member's wallet is what the model says, and never negative."""
        self.steps += 1
        answers = self.gather(app_call(self.gateway, "GET", f"/v1/members/{w.member.member_id}", w.token) for w in self.wallets)
        for w, (status, balance) in zip(self.wallets, answers):
            assert (200, w.balance, 0) == (status, balance["available"], balance["held"])
            assert balance["available"] >= 0
        if self.steps % FULL_CHECK_EVERY_STEPS == 0:
            self.check_payments_and_coupons()

    def check_payments_and_coupons(self) -> None:
        """Every payment's state, amounts and refunds, and every coupon's state, as the gateway shows them."""
        sales = list(self.sales.values())
        fetched_all = self.gather(self.world.terminals[s.merchant].send("GET", f"/v1/payments/{s.payment_id}") for s in sales)
        for sale, (status, fetched, _) in zip(sales, fetched_all):
            assert 200 == status, fetched
            assert (sale.state, sale.amount, sale.refunded_amount, sale.refunded_points, sale.points, sale.discount) == (
                fetched["status"], fetched["amount"], fetched["refunded_amount"], fetched["refunded_points"],
                fetched["points"], fetched["discount"])
            assert sale.refunded_amount == sum(r["amount"] for r in fetched["refunds"]) <= sale.amount
            assert sale.refunded_points == sum(r["points"] for r in fetched["refunds"]) <= sale.points
        listings = self.gather(app_call(self.gateway, "GET", f"/v1/members/{w.member.member_id}/coupons", w.token)
                               for w in self.wallets)
        for w, (status, listing) in zip(self.wallets, listings):
            expected = {c.code: "issued" if c.redeemed_by is None else "redeemed" for c in self.coupons if c.wallet is w}
            assert (200, expected) == (status, {c["code"]: c["state"] for c in listing["coupons"]})

    def check_the_books(self) -> dict[str, int]:
        """The audit of the whole journal is clean, and each account moved by what the model says."""
        totals = self._totals()
        moved = {account: totals.get(account, 0) - self.baseline.get(account, 0) for account in set(totals) | set(self.baseline)}
        merchants_and_settled = sum(v for a, v in moved.items()
                                    if a.split(":")[0] in ("merchant", "settled") or a == "fee:merchant")
        assert sum(w.balance for w in self.wallets) == moved.get("members_available", 0)
        assert 0 == moved.get("members_held", 0)
        assert -self.earned == moved.get("affiliate:hana-card", 0)
        assert sum(s.merchant_holds for s in self.sales.values()) == merchants_and_settled
        for campaign_id in CAMPAIGNS:
            funded = sum(s.discount - s.returned_discount for s in self.sales.values()
                         if s.coupon is not None and s.coupon.campaign_id == campaign_id)
            assert -funded == moved.get(f"campaign:{campaign_id}", 0)
        assert 0 == sum(moved.values())  # conservation: no point made or lost
        return totals

    def teardown(self) -> None:
        if not self.failed:
            self.check_payments_and_coupons()
            self.world.totals = self.check_the_books()


@pytest.mark.slow
def test_the_gateway_behaves_like_the_model(world):
    """Random sequences of wallet, payment and coupon operations leave every balance, payment, coupon
    and account exactly where the model says, and the journal audit clean."""
    GatewayModel.world = world
    run_state_machine_as_test(GatewayModel, settings=hsettings(
        max_examples=MODEL_EXAMPLES, stateful_step_count=MODEL_STEPS, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        # No explain phase: it reruns the failing example many times over and adds little to a stateful report.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]))
