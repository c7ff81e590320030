"""Terminal batch close as a reconciliation, through HTTP against a real gateway: every planted
difference is found, classified, and nothing else is; the POS SDK and the till simulator send
their journal's movements; the legacy `payment_ids` still work."""

from __future__ import annotations

import io
import json
import secrets
import sqlite3
from pathlib import Path

import pytest

from gateway.app import MERCHANTS
from pos_sdk import AsyncPosClient, MovementDifference, PosConfig, Reversed, TotalDifference, TransportError
from pos_sdk.batch import Movement
from pos_sdk.journal import _SCHEMA, Journal
from simulators.fault_proxy import Fault, FaultProxy
from simulators.terminal import StoreTerminal, load_profiles, run_repl

BATCHES = "/v1/terminals/t1/batches"
KINDS = ("sale", "void", "refund")


def move(payment: dict | str, kind: str, amount: int) -> dict:
    payment_id = payment if isinstance(payment, str) else payment["payment_id"]
    return {"payment_id": payment_id, "kind": kind, "amount": amount}


def report(terminal, movements: list[dict], **extra) -> dict:
    """The terminal's report: its movements, and the totals they add up to."""
    totals = {f"{kind}_{what}": 0 for kind in KINDS for what in ("count", "amount")}
    for m in movements:
        totals[f"{m['kind']}_count"] += 1
        totals[f"{m['kind']}_amount"] += m["amount"]
    return {"store_id": terminal.store_id, **totals, "movements": movements, **extra}


def total(field: str, terminal: int, gateway: int) -> dict:
    return {"difference": "total", "field": field, "terminal": terminal, "gateway": gateway}


def item(difference: str, payment: dict | str, kind: str, terminal_amount: int | None, gateway_amount: int | None,
         **extra) -> dict:
    payment_id = payment if isinstance(payment, str) else payment["payment_id"]
    return {"difference": difference, "payment_id": payment_id, "kind": kind, "terminal_amount": terminal_amount,
            "gateway_amount": gateway_amount, **extra}


def unknown_payment_id() -> str:
    return "pay_000" + secrets.token_hex(8)


async def close(terminal, body: dict, key: str | None = None) -> dict:
    status, batch, _ = await terminal.send("POST", BATCHES, body, idempotency_key=key)
    assert 200 == status, batch
    return batch


async def sales(gateway, terminal, *amounts: int) -> list[dict]:
    member = await gateway.member(points=100_000)
    paid = []
    for amount in amounts:
        _, payment, _ = await terminal.pay(member.code(), amount)
        assert "approved" == payment["status"]
        paid.append(payment)
    return paid


async def refund(terminal, payment: dict, amount: int) -> None:
    status, _, _ = await terminal.send("POST", f"/v1/payments/{payment['payment_id']}/refunds", {"amount": amount, **terminal.here()})
    assert 201 == status


# -- the gateway's reconciliation -------------------------------------------------------


async def test_clean_batch_matches_with_counts_per_kind(gateway):
    """Sales, a cancel and a refund recorded alike on both sides: matched, no differences, counts per kind."""
    terminal = await gateway.terminal()
    p1, p2 = await sales(gateway, terminal, 3_000, 2_000)
    await terminal.send("POST", f"/v1/payments/{p2['payment_id']}/cancel", terminal.here())
    await refund(terminal, p1, 500)
    batch = await close(terminal, report(terminal, [move(p1, "sale", 3_000), move(p2, "sale", 2_000),
                                                    move(p2, "void", 2_000), move(p1, "refund", 500)]))
    assert ("matched", [], {"sale": 2, "void": 1, "refund": 1}, 0) == (
        batch["status"], batch["differences"], batch["matched_counts"], batch["differences_omitted"])


async def test_sale_the_terminal_never_recorded_is_missing_at_terminal(gateway):
    """A sale the gateway counted and the terminal did not: missing_at_terminal with the gateway's amount."""
    terminal = await gateway.terminal()
    kept, lost = await sales(gateway, terminal, 3_000, 1_200)
    batch = await close(terminal, report(terminal, [move(kept, "sale", 3_000)]))
    assert [total("sale_count", 1, 2), total("sale_amount", 3_000, 4_200),
            item("missing_at_terminal", lost, "sale", None, 1_200)] == batch["differences"]
    assert ("mismatched", 1) == (batch["status"], batch["matched_counts"]["sale"])


async def test_sale_the_gateway_declined_or_never_saw_is_missing_at_gateway(gateway):
    """Sales the terminal thinks it made, one declined at the gateway and one it never saw: missing_at_gateway."""
    terminal = await gateway.terminal()
    [approved] = await sales(gateway, terminal, 1_000)
    poor = await gateway.member(points=100)
    _, declined, _ = await terminal.pay(poor.code(), 5_000)
    never_seen = unknown_payment_id()
    batch = await close(terminal, report(terminal, [move(approved, "sale", 1_000), move(declined, "sale", 5_000),
                                                    move(never_seen, "sale", 700)]))
    assert "declined" == declined["status"]
    assert [total("sale_count", 3, 1), total("sale_amount", 6_700, 1_000)] + sorted(
        [item("missing_at_gateway", declined, "sale", 5_000, None), item("missing_at_gateway", never_seen, "sale", 700, None)],
        key=lambda d: d["payment_id"]) == batch["differences"]


async def test_refund_with_the_wrong_amount_is_an_amount_mismatch(gateway):
    """A refund of 1,500 the terminal recorded as 1,000: amount_mismatch showing both amounts."""
    terminal = await gateway.terminal()
    [p] = await sales(gateway, terminal, 5_000)
    await refund(terminal, p, 1_500)
    batch = await close(terminal, report(terminal, [move(p, "sale", 5_000), move(p, "refund", 1_000)]))
    assert [total("refund_amount", 1_000, 1_500), item("amount_mismatch", p, "refund", 1_000, 1_500)] == batch["differences"]
    assert {"sale": 1, "void": 0, "refund": 0} == batch["matched_counts"]


async def test_two_refunds_of_one_payment_match_one_by_one(gateway):
    """Two refunds of 100 of one payment match two entries; 100 and 200 against 100 and 300 is one match, one mismatch."""
    terminal = await gateway.terminal()
    same, other = await sales(gateway, terminal, 1_000, 1_000)
    for payment, amount in ((same, 100), (same, 100), (other, 100), (other, 300)):
        await refund(terminal, payment, amount)
    batch = await close(terminal, report(terminal, [
        move(same, "sale", 1_000), move(same, "refund", 100), move(same, "refund", 100),
        move(other, "sale", 1_000), move(other, "refund", 100), move(other, "refund", 200)]))
    assert [total("refund_amount", 500, 600), item("amount_mismatch", other, "refund", 200, 300)] == batch["differences"]
    assert {"sale": 2, "void": 0, "refund": 3} == batch["matched_counts"]


async def test_payment_counted_in_the_previous_batch_is_other_batch(gateway):
    """A sale the gateway counted in batch 1 and the terminal reports in batch 2 is other_batch, not missing."""
    terminal = await gateway.terminal()
    [late] = await sales(gateway, terminal, 2_500)
    first = await close(terminal, report(terminal, []))  # the sale's answer came after the terminal closed
    [on_time] = await sales(gateway, terminal, 800)
    second = await close(terminal, report(terminal, [move(late, "sale", 2_500), move(on_time, "sale", 800)]))
    assert [total("sale_count", 0, 1), total("sale_amount", 0, 2_500),
            item("missing_at_terminal", late, "sale", None, 2_500)] == first["differences"]
    assert [total("sale_count", 2, 1), total("sale_amount", 3_300, 800),
            item("other_batch", late, "sale", 2_500, 2_500, batch_no=1)] == second["differences"]
    assert (2, 1) == (second["batch_no"], second["matched_counts"]["sale"])


async def test_replayed_close_gets_the_same_answer_and_closes_nothing_more(gateway):
    """The same close sent again with its key gets the same bytes, marked replayed; the batch after it is empty."""
    terminal = await gateway.terminal()
    [p] = await sales(gateway, terminal, 1_000)
    body = report(terminal, [move(p, "sale", 900)])
    _, first, h1 = await terminal.send("POST", BATCHES, body, idempotency_key="batch-replay-1")
    _, again, h2 = await terminal.send("POST", BATCHES, body, idempotency_key="batch-replay-1")
    following = await close(terminal, report(terminal, []))
    assert (h1["_raw"], "true") == (h2["_raw"], h2.get("idempotent-replayed"))
    assert [total("sale_amount", 900, 1_000), item("amount_mismatch", p, "sale", 900, 1_000)] == again["differences"]
    assert (1, 2, "matched") == (first["batch_no"], following["batch_no"], following["status"])


async def test_legacy_payment_ids_compare_sales_only(gateway):
    """An old terminal's payment_ids: sales compared by id (old keys kept), voids and refunds not item by item."""
    terminal = await gateway.terminal()
    listed, unlisted = await sales(gateway, terminal, 3_000, 1_000)
    await refund(terminal, listed, 400)
    stranger = unknown_payment_id()
    body = {"store_id": terminal.store_id, "sale_count": 2, "sale_amount": 4_000, "refund_count": 1, "refund_amount": 400,
            "payment_ids": [listed["payment_id"], stranger, listed["payment_id"]]}
    batch = await close(terminal, body)
    legacy = {"field": "payment"}
    assert sorted([item("missing_at_terminal", unlisted, "sale", None, 1_000, **legacy, missing_on="terminal"),
                   item("missing_at_gateway", stranger, "sale", None, None, **legacy, missing_on="gateway")],
                  key=lambda d: d["payment_id"]) == batch["differences"]
    assert {"sale": 1, "void": 0, "refund": 0} == batch["matched_counts"]


async def test_request_limits_are_problems(gateway):
    """10,000 movements close (10,000 differences listed, the rest counted); 10,001, movements with
    payment_ids, or an unknown kind are 422 invalid_request."""
    terminal = await gateway.terminal()
    fake = [move(unknown_payment_id(), "refund", 1) for _ in range(10_001)]
    problems = []
    for body in (report(terminal, fake), report(terminal, fake[:1], payment_ids=[fake[0]["payment_id"]]),
                 dict(report(terminal, []), movements=[dict(fake[0], kind="tip")])):
        status, problem, headers = await terminal.send("POST", BATCHES, body)
        problems.append((status, problem["code"], headers["content-type"]))
    most = await close(terminal, report(terminal, fake[:10_000]))
    assert [(422, "invalid_request", "application/problem+json")] * 3 == problems
    assert [total("refund_count", 10_000, 0), total("refund_amount", 10_000, 0)] == most["differences"][:2]
    assert (10_000, {"missing_at_gateway"}, 2) == (
        len(most["differences"]), {d["difference"] for d in most["differences"][2:]}, most["differences_omitted"])


# -- the POS SDK ------------------------------------------------------------------------


@pytest.fixture
async def sdk_config(gateway, tmp_path: Path):
    key_id, secret = await gateway.app[MERCHANTS].issue_key("gs25")

    def config(base_url: str | None = None, journal: str = "journal.sqlite3", **overrides) -> PosConfig:
        return PosConfig(base_url or gateway.base_url, "gs25", "gs25-gangnam-01", "t1", key_id, secret,
                         journal_path=str(tmp_path / journal), connect_timeout_s=1.0, read_timeout_s=2.0,
                         retry_delay_s_base=0.05, retry_delay_s_max=0.2, **overrides)
    return config


def order() -> str:
    return "rec-" + secrets.token_hex(6)


async def test_sdk_closes_its_journal_movements_matched_then_shows_a_planted_one(gateway, sdk_config):
    """After real sales, a refund, a cancel and a reversal the SDK's close matches; a planted movement then shows."""
    member = await gateway.member(points=50_000)
    async with AsyncPosClient(sdk_config()) as sdk:
        first = await sdk.pay(member.code(), 4_000, order())
        second = await sdk.pay(member.code(), 2_000, order())
        third = await sdk.pay(member.code(), 1_500, order())
        await sdk.refund(first.payment_id, 1_000)
        await sdk.cancel(second.payment_id)
        await sdk.reverse(third.order_ref)
        matched = await sdk.close_batch()
        await sdk.pay(member.code(), 600, order())
        planted = unknown_payment_id()
        sdk.journal.add_movements("planted", [Movement(planted, "sale", 700)], 0.0)
        mismatched = await sdk.close_batch()
    assert (True, {"sale": 3, "void": 2, "refund": 1}) == (matched.matched, dict(matched.matched_counts))
    assert {"sale_count": 3, "sale_amount": 7_500, "void_count": 2, "void_amount": 3_500, "refund_count": 1,
            "refund_amount": 1_000} == dict(matched.terminal)
    assert (TotalDifference("sale_count", 2, 1), TotalDifference("sale_amount", 1_300, 600)) == mismatched.total_differences
    assert (MovementDifference("missing_at_gateway", planted, "sale", 700, None),) == mismatched.movement_differences
    assert (2, 1) == (mismatched.batch_no, mismatched.matched_counts["sale"])


async def test_sdk_records_the_sale_and_void_of_a_sale_it_had_to_reverse(gateway, sdk_config):
    """A sale whose answers were all lost is reversed by the SDK; its close still matches: a sale and its void."""
    member = await gateway.member(points=10_000)
    proxy = await FaultProxy("127.0.0.1", gateway.server.port).start()
    try:
        async with AsyncPosClient(sdk_config(proxy.url, unknown_outcome_deadline_s=0.5)) as sdk:
            proxy.always(Fault.DROP_RESPONSE, path_prefix="/v1/payments")
            with pytest.raises(Reversed) as reversed_:
                await sdk.pay(member.code(), 2_200, order())
            proxy.clear()
            batch = await sdk.close_batch()
    finally:
        await proxy.close()
    assert "reversed" == reversed_.value.details["outcome"]
    assert (True, {"sale": 1, "void": 1, "refund": 0}) == (batch.matched, dict(batch.matched_counts))


async def test_sdk_close_without_an_answer_is_sent_again_before_the_next(gateway, sdk_config):
    """A close whose answers were lost is sent again with its movements by the next close_batch; a sale made
    meanwhile goes to the close after it."""
    member = await gateway.member(points=10_000)
    proxy = await FaultProxy("127.0.0.1", gateway.server.port).start()
    try:
        async with AsyncPosClient(sdk_config(proxy.url)) as sdk:
            await sdk.pay(member.code(), 1_000, order())
            proxy.always(Fault.DROP_RESPONSE, method="POST", path_prefix="/v1/terminals")
            with pytest.raises(TransportError):
                await sdk.close_batch()
            proxy.clear()
            await sdk.pay(member.code(), 400, order())
            resent = await sdk.close_batch()
            following = await sdk.close_batch()
    finally:
        await proxy.close()
    assert (1, True, 1_000) == (resent.batch_no, resent.matched, resent.terminal["sale_amount"])
    assert (2, True, 400) == (following.batch_no, following.matched, following.terminal["sale_amount"])


async def test_sdk_migrates_an_older_journal_and_its_close_still_matches(gateway, sdk_config, tmp_path: Path):
    """A version 0 journal (no movements) is migrated on opening; what it finished since its last close is reported."""
    member = await gateway.member(points=10_000)
    async with AsyncPosClient(sdk_config(journal="new.sqlite3")) as sdk:
        paid = await sdk.pay(member.code(), 3_000, order())
        await sdk.refund(paid.payment_id, 700)
    with sqlite3.connect(tmp_path / "new.sqlite3") as new:
        operations = new.execute("SELECT * FROM operations").fetchall()
    old = sqlite3.connect(tmp_path / "old.sqlite3")
    old.executescript(_SCHEMA)
    old.executemany("INSERT INTO operations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", operations)
    old.commit()
    old.close()
    journal = Journal(tmp_path / "old.sqlite3")
    version = journal._db.execute("PRAGMA user_version").fetchone()[0]
    async with AsyncPosClient(sdk_config(journal="old.sqlite3"), journal=journal) as sdk:
        batch = await sdk.close_batch()
    assert [Movement(paid.payment_id, "sale", 3_000), Movement(paid.payment_id, "refund", 700)] == movements_sent(
        tmp_path / "old.sqlite3")
    assert (1, True, {"sale": 1, "void": 0, "refund": 1}) == (version, batch.matched, dict(batch.matched_counts))


def movements_sent(path: Path) -> list[Movement]:
    """The movements the journal's last batch close sent."""
    with sqlite3.connect(path) as db:
        [document] = db.execute("SELECT document FROM operations WHERE kind = 'batch' ORDER BY created_s DESC LIMIT 1").fetchone()
    return [Movement.from_json(m) for m in json.loads(document)["movements"]]


async def test_repl_batch_prints_each_difference(gateway, tmp_path: Path):
    """The till's `batch` prints a sale another program made on its terminal id as missing at the terminal."""
    profile = load_profiles()["gs25-gangnam-01"]
    key_id, secret = await gateway.app[MERCHANTS].issue_key("gs25")
    member = await gateway.member(points=10_000)
    till = StoreTerminal.open(profile, base_url=gateway.base_url, key_id=key_id, secret=secret,
                              journal_path=str(tmp_path / "till.sqlite3"), connect_timeout_s=1.0, read_timeout_s=5.0)
    try:
        await till.sell(2_000, typed=member.code())
        other = await gateway.terminal(key=await gateway.app[MERCHANTS].issue_key("gs25"))
        _, foreign, _ = await other.pay(member.code(), 1_000)
        output = io.StringIO()
        await run_repl(till, ["batch", "quit"], output)
    finally:
        await till.close()
    lines = output.getvalue().splitlines()
    assert "batch 1: mismatched (1 sales 2,000 KRW, 0 voids 0 KRW, 0 refunds 0 KRW); next batch 2" in lines
    assert "  matched 1 sales, 0 voids, 0 refunds" in lines
    assert f"  missing at the terminal: sale {foreign['payment_id']} 1,000 KRW" in lines
    assert "  sale_amount: terminal 2,000 KRW, gateway 3,000 KRW" in lines
