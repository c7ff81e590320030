"""The payment verbs' steps on one Redis: the states a cluster can leave between two steps (here
reached by running the steps one by one, Store.split_steps) are completed by the next attempt of
the request, through the one-script path (pay.lua, cancel.lua, ...) or the steps again, with the
points moved exactly once; duplicates and rival requests run as steps at once move them once too."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import pytest

from gateway import keyspace
from gateway.app import PAYMENTS, STORE
from gateway.audit import run_audit
from tests.e2e.conftest import Gateway, Networks, taishin_member
from tests.e2e.pay_steps import (
    MERCHANT, batch_counts, batch_fields, cancel, held_before, in_steps, journal_entries, lost_in_steps, one_answer,
    refund, reversal, sale, scripts_run,
)

DUPLICATES = 10
HELD_S = 0.2
"""How long a move waits for its duplicates' claims (held_before): the ten claims take a few ms on one Redis."""
RETRIES = [pytest.param(False, id="retry-one-script"), pytest.param(True, id="retry-in-steps")]


def idem() -> str:
    return "idem-" + secrets.token_hex(8)

pytestmark = pytest.mark.single_redis("drives the one-server composition of the steps (split_steps on one Redis)")


async def lose_sale_after(gw: Gateway, step: str, terminal, code: str, amount: int, order_ref: str, key: str) -> str:
    """Send the sale as steps, lose the connection after `step`, go back to one script; the claimed payment id."""
    store = gw.app[STORE]
    await lost_in_steps(store, step, sale(terminal, code, amount, order_ref, key))
    return (await store.redis.hgetall(keyspace.idempotency_key(MERCHANT, key)))["payment_id"]


async def assert_audit_clean(gw: Gateway) -> None:
    assert [] == (await run_audit(gw.app[STORE])).problems


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


# -- cancel and refund --------------------------------------------------------------------------


async def approved_sale(gw: Gateway, points: int, amount: int):
    """A member with `points`, the terminal, and an approved sale of `amount`."""
    member = await gw.member(points)
    terminal = await gw.terminal(MERCHANT)
    status, payment, _ = await terminal.pay(member.code(), amount)
    assert (201, "approved") == (status, payment["status"])
    return member, terminal, payment["payment_id"]


async def test_on_one_redis_a_cancel_and_a_refund_are_one_script_each(gateway: Gateway):
    """The one-script path on one Redis: a refund sends refund.lua once and a cancel cancel.lua once."""
    _, terminal, refunded_id = await approved_sale(gateway, 5_000, 1_000)
    _, payment, _ = await terminal.pay((await gateway.member(5_000)).code(), 1_000)
    with scripts_run(gateway.app[STORE]) as names:
        refunded = await refund(terminal, refunded_id, 300)
        cancelled = await cancel(terminal, payment["payment_id"])
    assert (201, 200, ["refund", "cancel"]) == (refunded[0], cancelled[0], names)


@pytest.mark.parametrize("retry_in_steps", RETRIES)
@pytest.mark.parametrize("step", ["cancel_claim", "cancel_move", "cancel_finish"])
async def test_a_cancel_lost_after_any_step_is_completed_once_by_its_retry(gateway: Gateway, step: str,
                                                                           retry_in_steps: bool):
    """A cancel whose connection is lost after a step: its retry answers the cancelled payment, the points
    came back once, and the batch holds one void."""
    member, terminal, payment_id = await approved_sale(gateway, 5_000, 1_000)
    key = idem()
    await lost_in_steps(gateway.app[STORE], step, cancel(terminal, payment_id, key))
    with in_steps(gateway.app[STORE], retry_in_steps):
        status, cancelled, _ = await cancel(terminal, payment_id, key)
    assert (200, "cancelled", 5_000, 5_000) == (status, cancelled["status"], cancelled["balance_after"],
                                                await gateway.balance(member))
    assert [f"pay:{payment_id}", f"cancel:{payment_id}"] == await journal_entries(gateway, member)
    assert ("1", "1000", "1") == await batch_counts(gateway, terminal)
    await assert_audit_clean(gateway)


@pytest.mark.parametrize("retry_in_steps", RETRIES)
@pytest.mark.parametrize("step", ["refund_claim", "refund_move", "refund_finish"])
async def test_a_partial_refund_lost_after_any_step_is_completed_once_by_its_retry(gateway: Gateway, step: str,
                                                                                   retry_in_steps: bool):
    """400 of a 1,000 sale, the connection lost after a step: the retry answers one refund of 400 (the one
    on the payment), given back once and counted once in the batch."""
    member, terminal, payment_id = await approved_sale(gateway, 5_000, 1_000)
    key = idem()
    await lost_in_steps(gateway.app[STORE], step, refund(terminal, payment_id, 400, key))
    with in_steps(gateway.app[STORE], retry_in_steps):
        status, refunded, _ = await refund(terminal, payment_id, 400, key)
    _, fetched, _ = await terminal.send("GET", f"/v1/payments/{payment_id}")
    refund_id = refunded["refund"]["refund_id"]
    assert (201, 400, "partially_refunded", 4_400) == (status, refunded["refund"]["points"],
                                                      refunded["payment"]["status"], await gateway.balance(member))
    assert [refund_id] == [r["refund_id"] for r in fetched["refunds"]]
    assert [f"pay:{payment_id}", f"refund:{refund_id}"] == await journal_entries(gateway, member)
    assert ("1", "400") == await batch_fields(gateway, terminal, "refund_count", "refund_amount")
    await assert_audit_clean(gateway)


async def test_the_last_refund_lost_after_its_move_takes_the_remainder_once(gateway: Gateway):
    """After 300 of 1,000 were refunded, the refund of the other 700 is lost after its move: its retry answers
    'refunded', the member has all 1,000 back once, and one more refund is refused with nothing left."""
    member, terminal, payment_id = await approved_sale(gateway, 5_000, 1_000)
    assert 201 == (await refund(terminal, payment_id, 300))[0]
    key = idem()
    await lost_in_steps(gateway.app[STORE], "refund_move", refund(terminal, payment_id, 700, key))
    status, refunded, _ = await refund(terminal, payment_id, 700, key)
    assert (201, 700, "refunded", 5_000) == (status, refunded["refund"]["points"], refunded["payment"]["status"],
                                            await gateway.balance(member))
    status, problem, _ = await refund(terminal, payment_id, 1)
    assert (409, "invalid_state") == (status, problem["code"])
    assert ("2", "1000") == await batch_fields(gateway, terminal, "refund_count", "refund_amount")
    await assert_audit_clean(gateway)


async def test_a_refused_refund_is_judged_again_when_sent_again(gateway: Gateway):
    """A refusal is not stored: the same refund sent again is refused with what is left then, and its key
    still names that request (another body under it is a mismatch)."""
    _, terminal, payment_id = await approved_sale(gateway, 5_000, 1_000)
    assert 201 == (await refund(terminal, payment_id, 700))[0]
    key = idem()
    first = await refund(terminal, payment_id, 600, key)
    assert 201 == (await refund(terminal, payment_id, 200))[0]
    again = await refund(terminal, payment_id, 600, key)
    other = await refund(terminal, payment_id, 100, key)
    assert ((409, "at most 300 can still be refunded"), (409, "at most 100 can still be refunded")) == (
        (first[0], first[1]["detail"]), (again[0], again[1]["detail"]))
    assert (422, "idempotency_mismatch") == (other[0], other[1]["code"])


@pytest.mark.parametrize("verb", ["cancel", "refund"])
async def test_duplicates_run_as_steps_at_once_move_the_points_once(gateway: Gateway, verb: str):
    """Ten duplicates of one cancel (or refund of 400) at once, each freshly signed and each step its own call,
    all past the claim before any moves: every one reaches the move, one moves, and all get its answer."""
    member, terminal, payment_id = await approved_sale(gateway, 5_000, 1_000)
    key = idem()
    send = (lambda: cancel(terminal, payment_id, key)) if verb == "cancel" else (lambda: refund(terminal, payment_id, 400, key))
    store = gateway.app[STORE]
    with in_steps(store), held_before(store, f"{verb}_move", HELD_S), scripts_run(store) as names:
        answer = one_answer(await asyncio.gather(*(send() for _ in range(DUPLICATES))))
    assert DUPLICATES == names.count(f"{verb}_move")
    balance = answer["balance_after"] if verb == "cancel" else answer["refund"]["balance_after"]
    assert ({"cancel": 5_000, "refund": 4_400}[verb], balance) == (await gateway.balance(member), balance)
    assert 2 == len(await journal_entries(gateway, member))
    assert (None if verb == "refund" else "1", "1" if verb == "refund" else None) == await batch_fields(
        gateway, terminal, "void_count", "refund_count")
    await assert_audit_clean(gateway)


async def test_a_cancel_racing_a_refund_lets_exactly_one_of_them_move(gateway: Gateway):
    """A cancel and a refund of one payment at once, as steps: one applies, the other is refused
    invalid_state, and the balance shows only the one that applied."""
    member, terminal, payment_id = await approved_sale(gateway, 5_000, 1_000)
    with in_steps(gateway.app[STORE]):
        cancelled, refunded = await asyncio.gather(cancel(terminal, payment_id), refund(terminal, payment_id, 400))
    outcomes = {cancelled[0], refunded[0]}
    expected = 5_000 if cancelled[0] == 200 else 4_400
    refused = refunded if cancelled[0] == 200 else cancelled
    assert ({200, 409} if cancelled[0] == 200 else {201, 409}, "invalid_state", expected) == (
        outcomes, refused[1]["code"], await gateway.balance(member))
    assert 2 == len(await journal_entries(gateway, member))
    await assert_audit_clean(gateway)


async def test_two_refunds_at_once_never_give_back_more_than_was_paid(gateway: Gateway):
    """Refunds of 600 and 600 of a 1,000 sale at once, as steps: one applies and the other is refused,
    400 left."""
    member, terminal, payment_id = await approved_sale(gateway, 5_000, 1_000)
    with in_steps(gateway.app[STORE]):
        replies = await asyncio.gather(refund(terminal, payment_id, 600), refund(terminal, payment_id, 600))
    assert [(201, None), (409, "at most 400 can still be refunded")] == sorted(
        (status, document.get("detail")) for status, document, _ in replies)
    assert 4_600 == await gateway.balance(member)
    await assert_audit_clean(gateway)


# -- a partner network's member at our merchant -------------------------------------------------

LEASE_PASSED_MS = 60_000
"""Later than any outbound sale's lease (three partner calls and a margin, payment_service._lease_ms)."""


@contextlib.contextmanager
def later(networks: Networks, by_ms: int):
    """Our gateway's clock runs `by_ms` ahead inside the block (a retry that comes after a lease ran out)."""
    service = networks.home.app[PAYMENTS]
    real = service.now_ms
    service.now_ms = lambda: real() + by_ms
    try:
        yield
    finally:
        service.now_ms = real


def home_position(totals: dict[str, dict[str, int]]) -> tuple[int, int]:
    """What Taishin owes us and what we owe GS25, from our audit's totals."""
    home = totals.get("HMP", {})
    return home.get("partner:taishin", 0), home.get("merchant:gs25", 0)


async def assert_both_books_clean(networks: Networks) -> None:
    assert ([], []) == ((await run_audit(networks.home.app[STORE])).problems,
                        (await run_audit(networks.taishin.app[STORE])).problems)


@pytest.mark.parametrize("step, outcome, taishin_after", [
    ("outbound_claim_request", "approved", 976),  # no record yet: the retry asks the partner itself
    ("outbound_claim_payment", "partner_unavailable", 1_000),  # pending, never asked: looked up, reversed, declined
    ("outbound_finish_payment", "approved", 976),  # decided, not finished: finished without asking again
    ("outbound_finish_request", "approved", 976),  # finished: replayed
])
async def test_a_partner_members_sale_lost_after_any_step_is_settled_once_by_its_retry(
        networks: Networks, step: str, outcome: str, taishin_after: int):
    """A Taishin member's 1,000 KRW sale at GS25 whose connection is lost after a step: the retry (after the
    first attempt's lease) gets a definite answer, Taishin's member paid at most once, and both books agree."""
    gs25, member = await networks.home.terminal(), await taishin_member(networks, 1_000)
    code, order_ref, key = member.code(), "ord-" + secrets.token_hex(6), idem()
    await lost_in_steps(networks.home.app[STORE], step, sale(gs25, code, 1_000, order_ref, key))
    with later(networks, LEASE_PASSED_MS):
        status, payment, _ = await sale(gs25, code, 1_000, order_ref, key)
    approved = outcome == "approved"
    assert (201, outcome, taishin_after) == (status, payment["status"] if approved else payment["decline"]["code"],
                                             await networks.taishin.balance(member))
    assert ((-1_000, 1_000) if approved else (0, 0)) == home_position(
        (await run_audit(networks.home.app[STORE])).totals_by_unit())
    assert ("1" if approved else None) == (await batch_counts(networks.home, gs25))[0]
    await assert_both_books_clean(networks)


async def test_a_reversal_of_a_partner_members_claim_makes_its_retry_decline(networks: Networks):
    """The sale's claim ran but not its pending record: a reversal marks the payment id, and the sale's retry
    declines 'reversed' without asking Taishin."""
    gs25, member = await networks.home.terminal(), await taishin_member(networks, 1_000)
    code, order_ref, key = member.code(), "ord-" + secrets.token_hex(6), idem()
    await lost_in_steps(networks.home.app[STORE], "outbound_claim_request", sale(gs25, code, 1_000, order_ref, key))
    status, reversed_, _ = await reversal(gs25, order_ref)
    assert (200, "recorded") == (status, reversed_["outcome"])
    with later(networks, LEASE_PASSED_MS):
        status, payment, _ = await sale(gs25, code, 1_000, order_ref, key)
    assert (201, "reversed", 1_000) == (status, payment["decline"]["code"], await networks.taishin.balance(member))


@pytest.mark.parametrize("step", ["outbound_adjust_claim", "outbound_adjust_move", "outbound_adjust_finish"])
async def test_a_partner_members_refund_lost_after_any_step_is_completed_once_by_its_retry(networks: Networks,
                                                                                          step: str):
    """A refund of 400 of a Taishin member's 1,000 KRW sale, lost after a step: the retry answers one refund,
    Taishin's member got floor(24 x 400 / 1,000) = 9 TSP back once, and our books moved 400 back once."""
    gs25, member = await networks.home.terminal(), await taishin_member(networks, 1_000)
    _, payment, _ = await gs25.pay(member.code(), 1_000)
    payment_id, key = payment["payment_id"], idem()
    await lost_in_steps(networks.home.app[STORE], step, refund(gs25, payment_id, 400, key))
    status, refunded, _ = await refund(gs25, payment_id, 400, key)
    _, fetched, _ = await gs25.send("GET", f"/v1/payments/{payment_id}")
    assert (201, "partially_refunded", 976 + 9) == (status, refunded["payment"]["status"],
                                                   await networks.taishin.balance(member))
    assert [refunded["refund"]["refund_id"]] == [r["refund_id"] for r in fetched["refunds"]]
    assert (-600, 600) == home_position((await run_audit(networks.home.app[STORE])).totals_by_unit())
    assert ("1", "400") == await batch_fields(networks.home, gs25, "refund_count", "refund_amount")
    await assert_both_books_clean(networks)


@pytest.mark.parametrize("step", ["outbound_adjust_claim", "outbound_adjust_move", "outbound_adjust_finish"])
async def test_a_partner_members_cancel_lost_after_any_step_is_completed_once_by_its_retry(networks: Networks,
                                                                                          step: str):
    """A cancel of a Taishin member's sale lost after a step: the retry answers 'cancelled' (not invalid_state,
    though the payment no longer allows a cancel), Taishin's member has all 24 TSP back, and our books moved the
    1,000 back once (one void in the batch)."""
    gs25, member = await networks.home.terminal(), await taishin_member(networks, 1_000)
    _, payment, _ = await gs25.pay(member.code(), 1_000)
    key = idem()
    await lost_in_steps(networks.home.app[STORE], step, cancel(gs25, payment["payment_id"], key))
    status, cancelled, _ = await cancel(gs25, payment["payment_id"], key)
    assert (200, "cancelled", 1_000) == (status, cancelled["status"], await networks.taishin.balance(member))
    assert (0, 0) == home_position((await run_audit(networks.home.app[STORE])).totals_by_unit())
    assert "1" == (await batch_counts(networks.home, gs25))[2]
    await assert_both_books_clean(networks)


async def test_duplicates_of_a_partner_members_refund_run_as_steps_refund_once(networks: Networks):
    """Five duplicates of one refund of a Taishin member's sale at once, as steps: one refund on our books and
    one at Taishin, every answer the first's bytes."""
    gs25, member = await networks.home.terminal(), await taishin_member(networks, 1_000)
    _, payment, _ = await gs25.pay(member.code(), 1_000)
    key = idem()
    store = networks.home.app[STORE]
    with in_steps(store), held_before(store, "outbound_adjust_move", HELD_S):
        replies = await asyncio.gather(*(refund(gs25, payment["payment_id"], 400, key) for _ in range(5)))
    refunded = one_answer(replies)
    assert (201, 400) == (replies[0][0], refunded["refund"]["amount"])
    assert (976 + 9, (-600, 600)) == (await networks.taishin.balance(member),
                                      home_position((await run_audit(networks.home.app[STORE])).totals_by_unit()))
    await assert_both_books_clean(networks)
