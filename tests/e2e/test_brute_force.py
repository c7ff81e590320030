"""Guessing payment codes through the merchant API, at the fastest rate a terminal can send:
the device lockout and the per-terminal and per-merchant limits hold, and the chance that a
guess succeeds is bounded (printed with the test, and stated in the README)."""

from __future__ import annotations

import random

from gateway import codes
from gateway.app import MERCHANTS, SETTINGS

from tests.e2e.test_member_wallet import wallet


def guess(prefix: str, slot: int, rng: random.Random) -> str:
    """A well-formed code (right issuer, kind, Luhn digit) with a random OTP: what a guesser sends."""
    payload = f"{prefix}1{slot:09d}{rng.randrange(10)}{rng.randrange(10**8):08d}"
    return payload + codes.luhn_check_digit(payload)


async def test_guesses_at_a_known_slot_lock_it_and_the_member_unlocks(gateway):
    member, token = await wallet(gateway, 10_000)
    rng = random.Random(1)
    terminal = await gateway.terminal()
    declines = []
    for _ in range(7):
        _, sale, _ = await terminal.pay(guess(member.prefix, member.phone.slot, rng), 1_000)
        declines.append(sale["decline"]["code"])
    assert ["invalid_code"] * 4 + ["locked_device"] * 3 == declines
    _, honest, _ = await (await gateway.terminal(terminal_id="t2")).pay(member.code(), 1_000)
    assert "locked_device" == honest["decline"]["code"]  # locked until the member unlocks in the app
    assert 10_000 == await gateway.balance(member)


async def test_a_terminal_guessing_random_slots_is_stopped_and_locks_nobody(gateway):
    settings = gateway.app[SETTINGS]
    victim, _ = await wallet(gateway, 10_000)
    rng = random.Random(2)
    guesser = await gateway.terminal(terminal_id="t2")
    outcomes = []
    for _ in range(settings.terminal_invalid_codes_per_min + 5):
        slot = rng.randrange(10**9)
        _, sale, _ = await guesser.pay(guess(victim.prefix, slot, rng), 1_000)
        outcomes.append(sale["decline"]["code"])
    limit = settings.terminal_invalid_codes_per_min
    assert ["invalid_code"] * limit + ["too_many_attempts"] * 5 == outcomes
    # Throttled, the guesser cannot even reach the victim's slot: no failure is counted there.
    for _ in range(10):
        _, sale, _ = await guesser.pay(guess(victim.prefix, victim.phone.slot, rng), 1_000)
        assert "too_many_attempts" == sale["decline"]["code"]
    _, honest, _ = await (await gateway.terminal()).pay(victim.code(), 1_000)
    assert "approved" == honest["status"]


async def test_the_merchant_wide_limit_holds_across_its_terminals(gateway, settings):
    import dataclasses

    from tests.e2e.conftest import serving

    async with serving(dataclasses.replace(settings, terminal_invalid_codes_per_min=3,
                                           merchant_invalid_codes_per_min=5)) as running:
        member, _ = await wallet(running, 10_000)
        rng = random.Random(3)
        key = await running.app[MERCHANTS].issue_key("gs25")  # a chain's tills share its key
        tills = [await running.terminal("gs25", store, till, key=key) for store, till in
                 (("gs25-gangnam-01", "t1"), ("gs25-gangnam-01", "t2"), ("gs25-hongdae-02", "t1"))]
        outcomes = []
        for i in range(9):
            _, sale, _ = await tills[i % 3].pay(guess(member.prefix, rng.randrange(10**9), rng), 1_000)
            outcomes.append(sale["decline"]["code"])
        assert 5 == outcomes.count("invalid_code") and 4 == outcomes.count("too_many_attempts")
        # Another merchant is not affected.
        _, elsewhere, _ = await (await running.terminal("cu", "cu-jongno-01", "t1")).pay(member.code(), 1_000)
        assert "approved" == elsewhere["status"]


def test_the_guess_success_bound(gateway):
    """Accepted codes at any moment: 3 time steps (now and one each side) x 10 seqs, out of 10^8
    OTPs; a device locks after `slot_failures_max` wrong ones. Printed for the README."""
    settings = gateway.app[SETTINGS]
    accepted = (2 * settings.code_window_steps + 1) * 10
    per_guess = accepted / 10**8
    per_lock = settings.slot_failures_max * per_guess
    per_terminal_minute = settings.terminal_invalid_codes_per_min * per_guess
    print(f"\nguess success: {per_guess:.1e} per guess; {per_lock:.1e} per device before it locks "
          f"(the member must unlock it); {per_terminal_minute:.1e} per terminal-minute at the limit")
    assert per_guess <= 3e-7 and per_lock <= 1.5e-6
