"""Partner networks' merchants take our members' codes: the interop API, FX locked per payment."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from gateway.app import MERCHANTS, STORE
from gateway.audit import run_audit
from gateway.settings import CONFIG_DIR_DEFAULT, load_settings
from tests.e2e.conftest import serving


async def partner(gateway, network_id: str = "taishin"):
    terminal = await gateway.terminal(network_id, key=await gateway.app[MERCHANTS].issue_key(network_id))
    terminal.store_id = terminal.terminal_id = "interop"
    return terminal


async def interop_pay(terminal, code: str, amount: int, ref: str, currency: str = "TWD"):
    return await terminal.send("POST", "/v1/interop/payments", {
        "code": code, "amount": amount, "currency": currency, "partner_ref": ref, "merchant_name": "FamilyMart Taipei 101"})


async def test_member_pays_at_familymart_taiwan_at_the_locked_rate(gateway):
    """100 TWD at mid 43.12 with 50 bp spread costs ceil(100 x 43.3356) = 4,334 points, owed to Taishin."""
    taishin, member = await partner(gateway), await gateway.member(points=10_000)
    status, payment, _ = await interop_pay(taishin, member.code(), 100, "TS-FM-0001")
    assert (201, "approved", 4_334, 5_666) == (status, payment["status"], payment["points"], payment["balance_after"])
    assert ("43.3356", True) == (payment["fx"]["rate"], payment["fx"]["quote_id"].startswith("q_"))
    report = await run_audit(gateway.app[STORE])
    assert report.clean and 4_334 == report.totals_by_unit()["HMP"]["partner:taishin"]


async def test_refunds_reuse_the_original_rate(gateway):
    """Refunding 50 of 100 TWD gives back 2,167 points, and the rest gives back exactly the remaining 2,167."""
    taishin, member = await partner(gateway), await gateway.member(points=10_000)
    _, payment, _ = await interop_pay(taishin, member.code(), 100, "TS-FM-0002")
    path = f"/v1/interop/payments/{payment['payment_id']}/refunds"
    _, first, _ = await taishin.send("POST", path, {"amount": 50})
    _, second, _ = await taishin.send("POST", path, {"amount": 50})
    assert (2_167, 2_167, "refunded") == (first["refund"]["points"], second["refund"]["points"], second["payment"]["status"])
    assert 10_000 == await gateway.balance(member)


async def test_cancel_and_lookup_by_partner_ref(gateway):
    """The partner finds its payment by its own reference and cancels it: every point back."""
    taishin, member = await partner(gateway), await gateway.member(points=10_000)
    await interop_pay(taishin, member.code(), 30, "TS-FM-0003")
    status, found, _ = await taishin.send("GET", "/v1/interop/payments?partner_ref=TS-FM-0003")
    _, cancelled, _ = await taishin.send("POST", f"/v1/interop/payments/{found['payment_id']}/cancel", {})
    assert (200, "cancelled", 10_000) == (status, cancelled["status"], await gateway.balance(member))


async def test_reversal_before_the_payment_wins(gateway):
    """A partner that lost our answer reverses by its reference; the late payment then declines."""
    taishin, member = await partner(gateway), await gateway.member(points=10_000)
    _, reversal, _ = await taishin.send("POST", "/v1/interop/reversals", {"partner_ref": "TS-FM-0004"})
    _, late, _ = await interop_pay(taishin, member.code(), 30, "TS-FM-0004")
    assert ("recorded", "reversed", 10_000) == (reversal["outcome"], late["decline"]["code"], await gateway.balance(member))


async def test_partner_pays_in_its_own_currency_only(gateway):
    """Taishin sending KRW is refused: it settles in TWD."""
    taishin, member = await partner(gateway), await gateway.member(points=10_000)
    status, problem, _ = await interop_pay(taishin, member.code(), 100, "TS-FM-0005", currency="KRW")
    assert (422, "currency_mismatch") == (status, problem["code"])


async def test_huge_foreign_amount_is_refused_not_a_crash(gateway):
    """An amount whose points would overflow any limit is 422 amount_above_maximum, never a 500."""
    taishin, member = await partner(gateway), await gateway.member(points=10_000)
    status, problem, _ = await interop_pay(taishin, member.code(), 10**15, "TS-FM-BIG")
    assert (422, "amount_above_maximum") == (status, problem["code"])


async def test_keys_stay_on_their_own_side(gateway):
    """A merchant key cannot call the interop API and a partner key cannot take a terminal sale."""
    gs25, taishin, member = await gateway.terminal(), await partner(gateway), await gateway.member(points=10_000)
    s1, p1, _ = await interop_pay(gs25, member.code(), 100, "X-1")
    taishin.store_id, taishin.terminal_id = "gs25-gangnam-01", "t1"
    s2, p2, _ = await taishin.pay(member.code(), 100)
    assert (403, "forbidden", 403, "forbidden") == (s1, p1["code"], s2, p2["code"])


async def test_partner_merchants_see_only_their_payments(gateway):
    """A GS25 payment is not found through the interop API, and an interop payment not through GS25's."""
    gs25, taishin, member = await gateway.terminal(), await partner(gateway), await gateway.member(points=10_000)
    _, domestic, _ = await gs25.pay(member.code(), 100)
    _, foreign, _ = await interop_pay(taishin, member.code(), 10, "TS-FM-0006")
    s1, _, _ = await taishin.send("GET", f"/v1/interop/payments/{domestic['payment_id']}")
    s2, _, _ = await gs25.send("GET", f"/v1/payments/{foreign['payment_id']}")
    assert (404, 404) == (s1, s2)


@pytest.fixture
async def thai_gateway(home_redis, store, tmp_path: Path):
    """The same gateway with a Thai partner added in configuration only."""
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR_DEFAULT, config)
    with (config / "networks.toml").open("a") as f:
        f.write('\n[[network]]\nprefix = "7640"\nid = "siam"\nname = "Siam Rewards"\nhome = false\n'
                'currency = "THB"\npoints_unit = "SRP"\n')
    with (config / "partners.toml").open("a") as f:
        f.write('\n[[partner]]\nid = "siam"\nbase_url = "http://127.0.0.1:8091"\nconnect_timeout_s = 2\n'
                'read_timeout_s = 3\nconcurrency_max = 8\ncircuit_failures_max = 5\ncircuit_open_s = 10\n')
    settings = load_settings(config, env={}, **home_redis.settings, keyring_path=str(tmp_path / "keyring.json"))
    async with serving(settings) as running:
        yield running


async def test_a_partner_added_in_configuration_only_works(thai_gateway):
    """A Thai network in THB, added only to networks.toml and partners.toml, takes our member's code."""
    siam, member = await partner(thai_gateway, "siam"), await thai_gateway.member(points=10_000)
    status, payment, _ = await interop_pay(siam, member.code(), 10_000, "SIAM-0001", currency="THB")
    # 100.00 THB at mid 38.90 with 60 bp: ceil(100 x 39.1334) = 3,914 points.
    assert (201, "approved", 3_914) == (status, payment["status"], payment["points"])


async def test_operator_replaces_rates_at_run_time(gateway, home_redis, tmp_path, monkeypatch, capsys):
    """`gateway fx set` changes the rate of the next payment; a payment already made keeps its rate for refunds."""
    from gateway import cli
    from gateway.app import PAYMENTS

    taishin, member = await partner(gateway), await gateway.member(points=20_000)
    _, before, _ = await interop_pay(taishin, member.code(), 100, "TS-FX-1")
    (tmp_path / "fx.toml").write_text('[[rate]]\nbase = "TWD"\nquote = "KRW"\nmid = "50"\nspread_bp = 0\n')
    for name, value in home_redis.environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POINTGATE_KEYRING_PATH", str(tmp_path / "cli-keyring.json"))
    assert 0 == await asyncio.to_thread(cli.main, ["fx", "set", str(tmp_path / "fx.toml")])
    gateway.app[PAYMENTS]._rates = None  # this process's 5 s cache, skipped rather than waited for
    _, after, _ = await interop_pay(taishin, member.code(), 100, "TS-FX-2")
    _, refund, _ = await taishin.send("POST", f"/v1/interop/payments/{before['payment_id']}/refunds", {"amount": 100})
    assert (4_334, 5_000, "50", 4_334) == (before["points"], after["points"], after["fx"]["rate"], refund["refund"]["points"])
    assert "TWD/KRW: mid 50, spread 0 bp (set by an operator)" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rate]]\nbase = "TWD"\nquote = "KRW"\nmid = "-1"\nspread_bp = 0\n')
    assert 1 == await asyncio.to_thread(cli.main, ["fx", "set", str(bad)])
