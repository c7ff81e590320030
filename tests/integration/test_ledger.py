"""The points ledger against a real Redis: movements, holds, exactly-once, never negative."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway import keyspace
from gateway.audit import run_audit
from gateway.ledger import InsufficientPoints, Ledger, LedgerError, UnknownMember

UNIT = "HMP"
MEMBER = keyspace.new_member_id(123, "00000000abcd")


async def wallet(ledger: Ledger, member_id: str = MEMBER, points: int = 0) -> str:
    await ledger.open_wallet(member_id, UNIT)
    if points:
        await ledger.credit(member_id, points, "affiliate:hana-card", f"seed-{member_id}", UNIT)
    return member_id


async def test_credit_adds_to_available(ledger: Ledger):
    """A credit raises the available balance by exactly its amount."""
    await wallet(ledger)
    movement = await ledger.credit(MEMBER, 5000, "affiliate:hana-card", "e1", UNIT)
    assert (True, 5000, 0) == (movement.applied, movement.available, movement.held)
    assert 5000 == (await ledger.balance(MEMBER)).available


async def test_same_entry_id_applies_once(ledger: Ledger):
    """Replaying a movement's entry id changes nothing and says it was a retry."""
    await wallet(ledger)
    first = await ledger.credit(MEMBER, 700, "affiliate:hana-card", "e1", UNIT)
    again = await ledger.credit(MEMBER, 700, "affiliate:hana-card", "e1", UNIT)
    assert (False, first.stream_id, 700) == (again.applied, again.stream_id, again.available)
    assert 1 == await ledger.store.redis.xlen(keyspace.journal_key(123))


async def test_debit_beyond_balance_is_refused_and_writes_nothing(ledger: Ledger):
    """A debit above the available balance raises InsufficientPoints and leaves no journal entry."""
    await wallet(ledger, points=100)
    with pytest.raises(InsufficientPoints):
        await ledger.debit(MEMBER, 101, "merchant:gs25", "d1", UNIT)
    assert 100 == (await ledger.balance(MEMBER)).available
    assert 1 == await ledger.store.redis.xlen(keyspace.journal_key(123))


async def test_unknown_member_is_refused(ledger: Ledger):
    """Moving points of a member with no wallet raises UnknownMember."""
    with pytest.raises(UnknownMember):
        await ledger.credit(MEMBER, 1, "affiliate:hana-card", "e1", UNIT)


@pytest.mark.parametrize("amount", [0, -5, 10**15 + 1, 1.5, True])
async def test_invalid_amounts_are_refused(ledger: Ledger, amount):
    """Amounts must be integers from 1 to 10^15."""
    await wallet(ledger)
    with pytest.raises(LedgerError) as e:
        await ledger.credit(MEMBER, amount, "affiliate:hana-card", "e1", UNIT)
    assert "invalid_amount" == e.value.code


async def test_unit_mismatch_is_refused(ledger: Ledger):
    """Points of another network's unit cannot enter a home wallet."""
    await wallet(ledger)
    with pytest.raises(LedgerError) as e:
        await ledger.credit(MEMBER, 10, "affiliate:hana-card", "e1", "TSP")
    assert "unit_mismatch" == e.value.code


async def test_hold_counts_against_available(ledger: Ledger):
    """Held points are not available: a debit cannot spend them."""
    await wallet(ledger, points=1000)
    held = await ledger.hold(MEMBER, 800, "h1", "h1-hold", UNIT)
    assert (200, 800) == (held.available, held.held)
    with pytest.raises(InsufficientPoints):
        await ledger.debit(MEMBER, 201, "merchant:gs25", "d1", UNIT)


async def test_post_moves_held_points_out(ledger: Ledger):
    """Posting a hold sends its points to the destination; available stays reduced."""
    await wallet(ledger, points=1000)
    await ledger.hold(MEMBER, 300, "h1", "h1-hold", UNIT)
    posted = await ledger.post(MEMBER, "h1", "cashout:clearing", "h1-post")
    assert (700, 0) == (posted.available, posted.held)


async def test_void_returns_held_points(ledger: Ledger):
    """Voiding a hold returns its points to available."""
    await wallet(ledger, points=1000)
    await ledger.hold(MEMBER, 300, "h1", "h1-hold", UNIT)
    voided = await ledger.void(MEMBER, "h1", "h1-void")
    assert (1000, 0) == (voided.available, voided.held)


async def test_hold_finishes_exactly_once(ledger: Ledger):
    """A posted hold cannot be voided, nor posted again under a new entry id."""
    await wallet(ledger, points=1000)
    await ledger.hold(MEMBER, 300, "h1", "h1-hold", UNIT)
    await ledger.post(MEMBER, "h1", "cashout:clearing", "h1-post")
    with pytest.raises(LedgerError) as voided:
        await ledger.void(MEMBER, "h1", "h1-void")
    with pytest.raises(LedgerError) as reposted:
        await ledger.post(MEMBER, "h1", "cashout:clearing", "h1-post-2")
    assert ("hold_posted", "hold_posted") == (voided.value.code, reposted.value.code)
    assert (700, 0) == ((b := await ledger.balance(MEMBER)).available, b.held)


async def test_concurrent_posts_and_voids_finish_once(ledger: Ledger):
    """Racing posts and voids of one hold: exactly one wins and the books stay whole."""
    await wallet(ledger, points=1000)
    await ledger.hold(MEMBER, 400, "h1", "h1-hold", UNIT)

    async def finish(i: int):
        try:
            if i % 2:
                return await ledger.post(MEMBER, "h1", "cashout:clearing", f"post-{i}")
            return await ledger.void(MEMBER, "h1", f"void-{i}")
        except LedgerError:
            return None

    results = [r for r in await asyncio.gather(*(finish(i) for i in range(50))) if r is not None]
    assert 1 == len(results)
    assert (await run_audit(ledger.store)).clean


async def test_concurrent_debits_never_overdraw(ledger: Ledger):
    """200 concurrent debits that together exceed the balance leave it at zero or above, agreeing with the journal."""
    await wallet(ledger, points=10_000)

    async def spend(i: int) -> int:
        try:
            await ledger.debit(MEMBER, 130, "merchant:gs25", f"d{i}", UNIT)
            return 130
        except InsufficientPoints:
            return 0

    spent = sum(await asyncio.gather(*(spend(i) for i in range(200))))
    balance = await ledger.balance(MEMBER)
    assert 10_000 - 130 * 76 == balance.available  # 76 debits fit in 10,000
    assert 10_000 == spent + balance.available
    report = await run_audit(ledger.store)
    assert report.clean, report.problems
    assert -10_000 == report.balances[("affiliate:hana-card", UNIT)]


async def test_audit_clean_after_random_workload(ledger: Ledger):
    """A randomized mix of credits, debits, holds, posts and voids audits clean."""
    rng = random.Random(7)
    members = [await wallet(ledger, keyspace.new_member_id(rng.randrange(1000), f"{i:012x}")) for i in range(8)]
    pending: list[tuple[str, str]] = []
    for i in range(400):
        member = rng.choice(members)
        op = rng.choice(["credit", "credit", "debit", "hold", "finish"])
        try:
            if op == "credit":
                await ledger.credit(member, rng.randint(1, 5000), "affiliate:hana-card", f"c{i}", UNIT)
            elif op == "debit":
                await ledger.debit(member, rng.randint(1, 3000), rng.choice(["merchant:gs25", "merchant:cu"]), f"d{i}", UNIT)
            elif op == "hold":
                await ledger.hold(member, rng.randint(1, 2000), f"h{i}", f"h{i}", UNIT)
                pending.append((member, f"h{i}"))
            elif pending:
                m, hold_id = pending.pop(rng.randrange(len(pending)))
                if rng.random() < 0.5:
                    await ledger.post(m, hold_id, "cashout:clearing", f"{hold_id}-post")
                else:
                    await ledger.void(m, hold_id, f"{hold_id}-void")
        except InsufficientPoints:
            pass
    report = await run_audit(ledger.store)
    assert report.clean, report.problems
    assert 8 == report.members


async def test_audit_names_a_tampered_balance(ledger: Ledger):
    """Changing a stored balance behind the ledger's back makes the audit fail and name the account."""
    await wallet(ledger, points=500)
    await ledger.store.redis.hincrby(keyspace.member_key(MEMBER), "available", 1)
    report = await run_audit(ledger.store)
    assert not report.clean
    assert f"member:{MEMBER}: stored balance 501 HMP but the journal gives 500" == report.problems[0]


async def test_audit_catches_an_unbalanced_entry(ledger: Ledger):
    """A journal entry whose postings do not sum to zero fails the audit."""
    await wallet(ledger, points=500)
    journal = keyspace.journal_key(123)
    sid = await ledger.store.redis.xadd(journal, {
        "entry": "forged", "kind": "credit", "meta": "{}", "ts_ms": "0",
        "postings": f'[["affiliate:x","{UNIT}",-1],["member:{MEMBER}","{UNIT}",2]]',
    })
    await ledger.store.redis.hset(keyspace.entry_index_key(123), "forged", sid)
    report = await run_audit(ledger.store)
    assert any("sum to 1, not 0" in p for p in report.problems)
