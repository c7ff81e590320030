"""`simulators load` against a real gateway, and its checks against broken observations.

The runs are short (1-3 s at a low rate) so the file stays within a few
seconds; the checks are pure functions, so each is also handed a hand-made
observation with one thing broken.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest

from gateway import keyspace
from gateway.app import MERCHANTS
from simulators import load
from simulators.load import (
    FollowUpObservation, GatewayPayment, MemberBooks, Observations, Options, RegistryAdmin, SaleObservation,
    TerminalState, expected_state, latency_summary, parse_faults, parse_mix, plan_operations, read_books,
    render_report, run_checks, run_load, terminal_layout,
)

CHECK_NAMES = ("codes_approved_once", "sales_resolved", "points_conserved", "approvals_recorded_once", "audit_clean")


def options(gateway, tmp_path: Path, **overrides) -> Options:
    values = dict(base_url=gateway.base_url, terminals=4, members=6, rate_per_s=10.0, seconds=1.0, seed=7,
                  deadline_s=2.0, progress=False, report_path=str(tmp_path / "report.json"),
                  var_dir=str(tmp_path / "load"))
    values.update(overrides)
    return Options(**values)


@pytest.fixture
def admin(gateway, store) -> RegistryAdmin:
    return RegistryAdmin(gateway.app[MERCHANTS], store)


def failing(results) -> list[str]:
    return [r.name for r in results if not r.passed]


# -- runs against the gateway -----------------------------------------------------


@pytest.mark.slow
async def test_run_through_faults_passes_every_check(gateway, admin, tmp_path):
    """Through dropped answers, resets and delays, every sale resolves and every check passes."""
    faults = (("delay", 0.1), ("drop_response", 0.08), ("reset", 0.06), ("delay_s", 0.1))
    # Faults hit reads too: a lookup whose answer was dropped (and that aiohttp re-sent
    # with the same nonce) must leave the sale unknown, never end it as refused.
    report = await run_load(options(gateway, tmp_path, seconds=3.0, rate_per_s=12.0, members=12, faults=faults), admin)
    injected = report.faults["injected"]
    assert [] == failing(report.checks), render_report(report)
    assert injected.get("drop_response", 0) + injected.get("reset", 0) > 0
    assert report.outcomes["sale"].get("approved", 0) > 0
    assert True is json.loads(Path(report.report_path).read_text())["passed"]


async def test_same_seed_sends_the_same_schedule(gateway, admin, tmp_path):
    """Two runs with one seed send the same planned operations; another seed plans others."""
    first = await run_load(options(gateway, tmp_path), admin)
    second = await run_load(options(gateway, tmp_path, report_path=str(tmp_path / "second.json")), admin)
    assert (first.plan, first.plan_digest) == (second.plan, second.plan_digest)
    assert first.plan != plan_operations(options(gateway, tmp_path, seed=8))
    assert [] == failing(first.checks) + failing(second.checks)


async def test_tampered_balance_fails_conservation_and_audit(gateway, admin, store, tmp_path):
    """Points added to a wallet behind the ledger's back fail the conservation check and the audit."""
    report = await run_load(options(gateway, tmp_path), admin)
    member = report.members[0]
    await store.redis.hincrby(keyspace.member_key(member.member_id), "available", 7)
    results = run_checks(await read_books(report.observations, report.members, admin))
    conserved = next(r for r in results if r.name == "points_conserved")
    assert [] == failing(report.checks)
    assert ["points_conserved", "audit_clean"] == failing(results)
    assert any(member.member_id in v for v in conserved.violations)


async def test_main_runs_an_embedded_gateway(tmp_path, capsys):
    """`simulators load` with no --base-url starts its own gateway, prints the table and exits 0."""
    argv = ["--seconds", "1", "--rate", "6", "--members", "3", "--terminals", "2", "--quiet",
            "--var-dir", str(tmp_path / "load"), "--report", str(tmp_path / "report.json")]
    status = await asyncio.to_thread(load.main, argv)  # main runs its own event loop
    out = capsys.readouterr().out
    assert (0, True) == (status, "verdict: PASSED" in out)
    assert True is json.loads((tmp_path / "report.json").read_text())["passed"]


# -- the checks against broken observations ----------------------------------------

A, B = "m001aaaaaaaaaaaa", "m002bbbbbbbbbbbb"
GS25, CU = "gs25/gs25-gangnam-01/t1", "cu/cu-jongno-01/t1"


def clean() -> Observations:
    """Two members, four sales (one refunded in part, one cancelled, a refused replay, one reversed)."""
    p1 = GatewayPayment("pay_1", "gs25", "o1", "partially_refunded", 3_000, 1_000, True)
    p2 = GatewayPayment("pay_2", "cu", "o2", "cancelled", 2_000, 0, True)
    p3 = GatewayPayment("pay_3", "gs25", "o3", "declined", 1_000, 0, False)
    p4 = GatewayPayment("pay_4", "gs25", "o4", "reversed", 500, 0, True)
    return Observations(
        sales=[
            SaleObservation(0, "sale", GS25, "gs25", A, "c1", "o1", 3_000, "k0", "approved", "", "pay_1", 3_000),
            SaleObservation(1, "sale", CU, "cu", B, "c2", "o2", 2_000, "k1", "approved", "", "pay_2", 2_000),
            SaleObservation(2, "replay", GS25, "gs25", B, "c2", "o3", 1_000, "k2", "declined", "replayed_code", "pay_3"),
            SaleObservation(3, "sale", GS25, "gs25", A, "c4", "o4", 500, "k3", "reversed", "reversed"),
        ],
        follow_ups=[
            FollowUpObservation(4, "refund", GS25, "gs25", "pay_1", "o1", "gs25", 1_000, "k4", "refunded"),
            FollowUpObservation(5, "cancel", CU, "cu", "pay_2", "o2", "cu", 0, "k5", "cancelled"),
            FollowUpObservation(6, "wrong_merchant", CU, "cu", "pay_1", "o1", "gs25", 100, "k6", "not_found"),
        ],
        terminals=[TerminalState(GS25, 0, 0, 0), TerminalState(CU, 0, 0, 0)],
        by_order_ref={"gs25/o1": p1, "cu/o2": p2, "gs25/o3": p3, "gs25/o4": p4},
        by_payment_id={"pay_1": p1, "pay_2": p2},
        members=[MemberBooks(A, 10_000, 8_000, 0), MemberBooks(B, 5_000, 5_000, 0)],
        unit="HMP",
        audit_before={"affiliate:hana-card": -1_000, "merchant:gs25": 1_000},
        audit_after={"members_available": 13_000, "members_held": 0, "merchant:gs25": 3_000, "merchant:cu": 0,
                     "affiliate:hana-card": -16_000},
    )


def test_clean_observations_pass_every_check():
    """The hand-made observation the tests below break passes as it is."""
    assert (CHECK_NAMES, []) == (tuple(r.name for r in run_checks(clean())), failing(run_checks(clean())))


def test_code_approved_twice_fails():
    """A code approved in two payments fails codes_approved_once."""
    obs = clean()
    obs.sales.append(SaleObservation(7, "sale", GS25, "gs25", A, "c1", "o5", 100, "k7", "approved", "", "pay_5", 100))
    result = load.check_codes_approved_once(obs)
    assert (False, 1) == (result.passed, len(result.violations))
    assert "c1" in result.violations[0]


def test_replayed_code_approved_fails():
    """A replayed code the gateway approved fails codes_approved_once, whatever the terminal saw."""
    obs = clean()
    obs.by_order_ref["gs25/o3"] = GatewayPayment("pay_3", "gs25", "o3", "approved", 1_000, 0, True)
    assert False is load.check_codes_approved_once(obs).passed


def test_duplicated_approval_fails():
    """One approval reported for two sales fails approvals_recorded_once."""
    obs = clean()
    obs.sales.append(dataclasses.replace(obs.sales[0], index=7, order_ref="o5", code="c5"))
    result = load.check_approvals_recorded_once(obs)
    assert False is result.passed
    assert any("share the payment pay_1" in v for v in result.violations)


def test_approval_missing_at_the_gateway_fails():
    """An approval the gateway has no payment for fails approvals_recorded_once."""
    obs = clean()
    obs.by_payment_id["pay_2"] = None
    assert ["approvals_recorded_once"] == failing(run_checks(obs))


def test_follow_up_the_gateway_did_not_apply_fails():
    """A refund the terminal saw succeed but the gateway does not show fails approvals_recorded_once."""
    obs = clean()
    obs.follow_ups[0].amount = 500
    result = load.check_approvals_recorded_once(obs)
    assert (False, True) == (result.passed, "pay_1" in result.violations[0])


def test_wrong_merchant_refund_that_succeeded_fails():
    """Another merchant's terminal refunding a payment fails approvals_recorded_once."""
    obs = clean()
    obs.follow_ups[2].outcome = "refunded"
    assert False is load.check_approvals_recorded_once(obs).passed


@pytest.mark.parametrize("outcome", ["error", "refused", "in_flight", "abandoned"])
def test_unresolved_sale_fails(outcome):
    """A sale that ended neither approved, declined, reversed nor reversal-queued fails sales_resolved."""
    obs = clean()
    obs.sales[3].outcome = outcome
    assert ["sales_resolved"] == failing(run_checks(obs))


def test_unpaid_sale_approved_at_the_gateway_fails():
    """A sale the terminal saw reversed but the gateway holds approved fails sales_resolved."""
    obs = clean()
    obs.by_order_ref["gs25/o4"] = GatewayPayment("pay_4", "gs25", "o4", "approved", 500, 0, True)
    result = load.check_sales_resolved(obs)
    assert (False, True) == (result.passed, "pay_4 approved" in result.violations[0])


@pytest.mark.parametrize("state", [TerminalState(GS25, 1, 0, 0), TerminalState(GS25, 0, 1, 0), TerminalState(GS25, 0, 0, 1)])
def test_outbox_or_journal_left_over_fails(state):
    """A reversal still queued, a dead outbox entry or an unfinished operation fails sales_resolved."""
    obs = clean()
    obs.terminals[0] = state
    assert ["sales_resolved"] == failing(run_checks(obs))


def test_tampered_member_balance_fails_conservation():
    """A member holding one point more than credits less payments fails points_conserved."""
    obs = clean()
    obs.members[0] = MemberBooks(A, 10_000, 8_001, 0)
    result = load.check_points_conserved(obs)
    assert (False, True) == (result.passed, any(A in v for v in result.violations))


def test_merchant_payable_off_fails_conservation():
    """A merchant account that moved other than its payments net fails points_conserved."""
    obs = clean()
    assert obs.audit_after is not None
    obs.audit_after |= {"merchant:gs25": 3_001, "affiliate:hana-card": -16_001}
    assert ["points_conserved"] == failing(run_checks(obs))


def test_audit_problem_fails_audit_clean():
    """Any problem `gateway audit` finds fails audit_clean; a missing audit too."""
    with_problem = dataclasses.replace(clean(), audit_problems=["member:m001: stored balance 1 but the journal gives 0"])
    missing = dataclasses.replace(clean(), audit_after=None)
    assert ["audit_clean"] == failing(run_checks(with_problem))
    assert False is load.check_audit_clean(missing).passed


# -- the pure parts ------------------------------------------------------------------


@pytest.mark.parametrize(("kinds_outcomes", "expected"), [
    ((), ("approved", 0)),
    ((("refund", "refunded", 400),), ("partially_refunded", 400)),
    ((("refund", "refunded", 400), ("refund", "refunded", 600)), ("refunded", 1_000)),
    ((("cancel", "cancelled", 0),), ("cancelled", 0)),
    ((("reversal", "reversed", 0),), ("reversed", 0)),
    ((("refund", "refused", 400),), ("approved", 0)),
    ((("refund", "unknown", 400),), None),
])
def test_expected_state_follows_the_follow_ups(kinds_outcomes, expected):
    """A 1,000-point payment's expected state after its follow-ups; None while one is unknown."""
    follow_ups = [FollowUpObservation(i, k, GS25, "gs25", "pay_1", "o1", "gs25", n, f"k{i}", o)
                  for i, (k, o, n) in enumerate(kinds_outcomes)]
    assert expected == expected_state(1_000, follow_ups)


def test_latency_summary_is_nearest_rank():
    """Percentiles are nearest-rank, in milliseconds."""
    summary = latency_summary(ms / 1000 for ms in range(1, 1001))
    assert {"count": 1000, "p50": 500.0, "p90": 900.0, "p99": 990.0, "p99_9": 999.0, "max": 1000.0} == summary


def test_plan_is_a_function_of_the_options():
    """The same options plan the same operations at 1/rate intervals; the mix decides the kinds."""
    first = Options(seconds=2, rate_per_s=20, seed=3, mix=(("sale", 1), ("refund", 1)), progress=False)
    plan = plan_operations(first)
    assert plan == plan_operations(dataclasses.replace(first))
    assert ([i / 20 for i in range(40)], {"sale", "refund"}) == ([op.at_s for op in plan], {op.kind for op in plan})


def test_terminal_layout_alternates_merchants_and_fills_configured_ids_first():
    """Terminals alternate GS25 and CU, take configured ids first, then ld1, ld2, ..."""
    doc = {"merchant": [
        {"id": "gs25", "store": [{"id": "gs25-a", "terminals": ["t1"]}, {"id": "gs25-b", "terminals": []}]},
        {"id": "cu", "store": [{"id": "cu-a", "terminals": ["t1"]}]},
        {"id": "familymart-tw", "store": [{"id": "fm", "terminals": ["t1"]}]},
    ]}
    assert [("gs25", "gs25-a", "t1"), ("cu", "cu-a", "t1"), ("gs25", "gs25-b", "ld1"), ("cu", "cu-a", "ld1"),
            ("gs25", "gs25-a", "ld1")] == terminal_layout(doc, ("gs25", "cu"), 5)


@pytest.mark.parametrize("text", ["sale", "sale=-1", "bogus=1", "sale=0", "sale=x"])
def test_bad_mix_is_refused(text):
    """A mix entry that is not KIND=WEIGHT>=0, or a mix with nothing to do, is refused."""
    with pytest.raises(ValueError):
        parse_mix(text)


@pytest.mark.parametrize("text", ["drop_response", "reset=2", "drop_response=0.6,reset=0.6", "teleport=0.1"])
def test_bad_faults_are_refused(text):
    """A fault that is not NAME=RATE, out of 0-1, or summing above 1 is refused."""
    with pytest.raises(ValueError):
        parse_faults(text)


def test_faults_on_and_off():
    """`on` is the preset, `off` and empty mean no proxy, rates keep the proxy's order."""
    assert (load.FAULTS_ON, (), (("drop_response", 0.1), ("delay_s", 0.3))) == (
        parse_faults("on"), parse_faults("off"), parse_faults("delay_s=0.3,drop_response=0.1"))


def test_attempt_log_counts_what_the_sdk_retries_and_when():
    """A 503 and a transport failure are retryable errors, timed; a 404 is an error the SDK does not
    retry; a 2xx counts as an attempt only."""
    from pos_sdk.core import HttpResponse, TransportFailure

    def problem(status: int, code: str) -> HttpResponse:
        return HttpResponse(status, {}, json.dumps({"code": code, "detail": code}).encode())

    attempts = load.AttemptLog()
    attempts.note(HttpResponse(201, {}, b"{}"), 1.0)
    attempts.note(problem(503, "storage_unavailable"), 2.0)
    attempts.note(problem(404, "payment_not_found"), 3.0)
    attempts.note(TransportFailure("connect", "refused"), 4.5)
    assert (4, 2, {"503 storage_unavailable": 1, "404 payment_not_found": 1, "transport connect": 1}) == (
        attempts.total, attempts.retryable, dict(attempts.errors))
    assert (1.0, 3.5) == (attempts.to_json(1.0)["first_retryable_s"], attempts.to_json(1.0)["last_retryable_s"])
