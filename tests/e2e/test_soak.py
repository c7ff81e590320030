"""`simulators soak`, short: crashes and network faults under load, and the books proved after.

Two short soaks, each shared by the tests that read its figures: one where
Redis is SIGKILLed and restarted on its data dir and port and the gateway
(`gateway serve --workers 2`) loses a worker and then the whole server, with
no network faults, so that anything lost is the crashes' doing; one with
faults on both links (terminal-gateway and gateway-Redis) and cuts of the
Redis link, and no kills but the one after the round. Then the ledger
checks, which are pure, are each handed a ledger broken in one way.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from simulators import load, soak
from simulators.load import FollowUpObservation, Observations, SaleObservation
from simulators.soak import Books, JournalRecord, SoakOptions, StoredPayment, run_soak

pytestmark = pytest.mark.slow

SHORT = dict(rounds=1, rate_per_s=10.0, terminals=4, members=12, progress=False)


def crash_options(where: Path) -> SoakOptions:
    """Three Redis kills, a worker kill and a server kill in one 10 s round; no network faults."""
    return SoakOptions(**SHORT, round_s=10.0, redis_kills=3, worker_kills=1, server_kills=1, redis_cuts=0,
                       terminal_faults=(), redis_faults=(), deadline_s=3.0, seed=11, var_dir=str(where),
                       report_path=str(where / "report.json"))


def network_options(where: Path) -> SoakOptions:
    """Faults on both links and two cuts of the Redis link in one 6 s round; no kills until the round ends."""
    redis_faults = (("delay", 0.02), ("drop_request", 0.01), ("drop_response", 0.01), ("reset", 0.01),
                    ("reset_response", 0.04), ("delay_s", 2.5))
    return SoakOptions(**SHORT, round_s=6.0, redis_kills=0, worker_kills=0, server_kills=0, redis_cuts=2,
                       terminal_faults=load.FAULTS_ON, redis_faults=redis_faults, seed=12, var_dir=str(where),
                       report_path=str(where / "report.json"))


@pytest.fixture(scope="module")
async def soaks(tmp_path_factory) -> tuple[dict, dict]:
    """Both soaks at once: each has its own Redis, gateway and ports, and most of a soak is waiting."""
    return tuple(await asyncio.gather(run_soak(crash_options(tmp_path_factory.mktemp("soak-crashes"))),
                                      run_soak(network_options(tmp_path_factory.mktemp("soak-network")))))


@pytest.fixture(scope="module")
def crashes(soaks) -> dict:
    return soaks[0]


@pytest.fixture(scope="module")
def network(soaks) -> dict:
    return soaks[1]


def clean_figures(report: dict) -> dict:
    return {k: report[k] for k in ("acknowledged_lost", "follow_ups_lost", "applied_twice", "unresolved",
                                   "outbox_left", "audit_clean", "passed")}


CLEAN = {"acknowledged_lost": 0, "follow_ups_lost": 0, "applied_twice": 0, "unresolved": 0, "outbox_left": 0,
         "audit_clean": True, "passed": True}


# -- crashes --------------------------------------------------------------------


def test_redis_kills_lose_no_acknowledged_payment(crashes):
    """Redis SIGKILLed three times during the load and once after it: every approval a terminal saw is in Redis."""
    assert (4, True) == (crashes["redis_kills"], crashes["acknowledged"] > 0)
    assert (0, 0) == (crashes["acknowledged_lost"], crashes["follow_ups_lost"]), crashes["rounds"][0]["violations"]


def test_gateway_kills_leave_no_payment_unresolved_or_doubled(crashes):
    """A worker and the whole gateway SIGKILLed: every sale ends final, nothing is applied twice, no outbox is left."""
    assert (1, 1) == (crashes["worker_kills"], crashes["server_kills"])
    assert (0, 0, 0) == (crashes["unresolved"], crashes["applied_twice"], crashes["outbox_left"]), \
        crashes["rounds"][0]["violations"]


def test_crash_soak_passes_every_load_check_and_the_audit(crashes):
    """After the crashes the load's five checks pass and `gateway audit` is clean on the recovered data."""
    checks = crashes["rounds"][0]["load_checks"]
    assert (CLEAN, [True] * 5) == (clean_figures(crashes), list(checks.values())), crashes["rounds"][0]["violations"]


def test_report_has_every_figure(crashes, tmp_path_factory):
    """The report on disk carries every figure the soak promises, with the machine it ran on."""
    report = json.loads(Path(crashes["options"]["report_path"]).read_text())
    promised = {"redis_kills", "gateway_kills", "network_faults", "requests", "acknowledged", "acknowledged_lost",
                "applied_twice", "unresolved", "audit_clean"}
    assert (set(), True, report["requests"]) == (promised - set(report), report["machine"]["cpus"] > 0,
                                                 crashes["requests"])


# -- network faults ---------------------------------------------------------------


def test_network_faults_on_both_links_move_no_points_twice(network):
    """Through dropped, reset and delayed requests, and lost Redis replies, nothing is lost, doubled or left open."""
    links = network["network_faults_by_link"]
    assert (True, True, 2) == (sum(links["terminal_gateway"].values()) > 0, sum(links["gateway_redis"].values()) > 0,
                               links["gateway_redis_cuts"])
    assert CLEAN == clean_figures(network), network["rounds"][0]["violations"]


def test_lost_redis_replies_were_injected(network):
    """The round reset the gateway's Redis connection after a command had run, more than once."""
    assert network["network_faults_by_link"]["gateway_redis"].get("reset_response", 0) >= 2


# -- the ledger checks against broken books -----------------------------------------


def observed() -> Observations:
    """One approved sale refunded in part, one cancelled, one reversed by the terminal, one declined."""
    return Observations(
        sales=[
            SaleObservation(0, "sale", "gs25/s/t1", "gs25", "m1", "c1", "o1", 3_000, "k0", "approved", "", "pay_1", 3_000),
            SaleObservation(1, "sale", "gs25/s/t1", "gs25", "m1", "c2", "o2", 2_000, "k1", "approved", "", "pay_2", 2_000),
            SaleObservation(2, "sale", "gs25/s/t1", "gs25", "m1", "c3", "o3", 1_000, "k2", "reversal_queued",
                            "reversal recorded"),
            SaleObservation(3, "sale", "gs25/s/t1", "gs25", "m1", "c4", "o4", 900, "k3", "declined", "replayed_code",
                            "pay_4"),
        ],
        follow_ups=[
            FollowUpObservation(4, "refund", "gs25/s/t1", "gs25", "pay_1", "o1", "gs25", 1_000, "k4", "refunded"),
            FollowUpObservation(5, "cancel", "gs25/s/t1", "gs25", "pay_2", "o2", "gs25", 0, "k5", "cancelled"),
        ])


def books() -> Books:
    return Books(
        payments={
            "pay_1": StoredPayment("pay_1", "gs25", "o1", "partially_refunded", True, 3_000, 1_000),
            "pay_2": StoredPayment("pay_2", "gs25", "o2", "cancelled", True, 2_000, 0),
            "pay_4": StoredPayment("pay_4", "gs25", "o4", "declined", False, 0, 0),
        },
        entries=[
            JournalRecord("pay:pay_1", "payment", "pay_1", "gs25", "o1"),
            JournalRecord("refund:r1", "refund", "pay_1", "gs25", "o1"),
            JournalRecord("pay:pay_2", "payment", "pay_2", "gs25", "o2"),
            JournalRecord("cancel:pay_2", "cancel", "pay_2", "gs25", "o2"),
        ])


def test_clean_books_pass_every_ledger_check():
    """The hand-made books the tests below break pass as they are."""
    obs = observed()
    assert ([], [], [], []) == (soak.find_acknowledged_lost(obs, books()), soak.find_follow_ups_lost(obs, books()),
                                soak.find_applied_twice(obs, books()), soak.find_unresolved(obs))


def test_approval_without_payment_record_is_lost():
    """An approval a terminal saw whose payment Redis does not hold counts as lost."""
    broken = books()
    del broken.payments["pay_1"]
    assert 1 == len(soak.find_acknowledged_lost(observed(), broken))


def test_approval_without_journal_entry_is_lost():
    """An approved payment record with no journal entry debiting it counts as lost."""
    broken = books()
    broken.entries = [e for e in broken.entries if e.entry_id != "pay:pay_2"]
    assert ["approval pay_2 (o2) has no journal entry"] == soak.find_acknowledged_lost(observed(), broken)


def test_refund_missing_from_redis_is_a_lost_follow_up():
    """A refund the terminal saw done but Redis does not show counts as a lost follow-up."""
    broken = books()
    broken.payments["pay_1"] = StoredPayment("pay_1", "gs25", "o1", "approved", True, 3_000, 0)
    assert 1 == len(soak.find_follow_ups_lost(observed(), broken))


def test_second_debit_of_one_order_is_applied_twice():
    """Two payment entries for one order reference (two payments) count as applied twice."""
    broken = books()
    broken.entries.append(JournalRecord("pay:pay_9", "payment", "pay_9", "gs25", "o1"))
    assert ["order gs25/o1 was debited 2 times"] == soak.find_applied_twice(observed(), broken)


def test_refund_entries_beyond_the_requests_are_applied_twice():
    """A payment with more refund entries than refund requests sent for it counts as applied twice."""
    broken = books()
    broken.entries.append(JournalRecord("refund:r2", "refund", "pay_1", "gs25", "o1"))
    assert 1 == len(soak.find_applied_twice(observed(), broken))


def test_sale_left_in_flight_or_with_its_reversal_undelivered_is_unresolved():
    """A sale still in flight, and one whose queued reversal never reached the gateway, are unresolved."""
    obs = observed()
    obs.sales[2].detail = ""
    obs.sales.append(SaleObservation(6, "sale", "gs25/s/t1", "gs25", "m1", "c6", "o6", 500, "k6", "in_flight"))
    assert 2 == len(soak.find_unresolved(obs))


def test_chaos_schedule_is_reproducible_from_the_seed():
    """One seed plans the same strikes at the same times inside the sending window; another seed others."""
    options = SoakOptions(**SHORT, round_s=10.0, redis_kills=3, worker_kills=1, server_kills=1, redis_cuts=2)
    first, again = soak.plan_chaos(options, 1), soak.plan_chaos(options, 1)
    kinds = sorted(e.kind for e in first)
    assert (first, 7) == (again, len(first))
    assert ["redis_cut"] * 2 + ["redis_kill"] * 3 + ["server_kill", "worker_kill"] == kinds
    assert all(soak.CHAOS_START_S <= e.at_s <= 10.0 - soak.CHAOS_QUIET_TAIL_S for e in first)
    assert first != soak.plan_chaos(options, 2)
