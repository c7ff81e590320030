"""Settlement of business days through the public surfaces and real Redis: a known
day settles to the point, a rerun is identical, a late movement is refused, cut-offs
follow each merchant's time zone, and the merchants' side adds up to the members'."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest

from gateway import keyspace, payments
from gateway.app import MERCHANTS, SETTINGS, STORE
from gateway.audit import run_audit
from gateway.clock import wall_ms
from gateway.settlement import Settlement, SettlementError, merchant_csv

from tests.e2e.conftest import serving
from tests.e2e.test_coupon_campaigns import campaign, create, issue, operator
from tests.e2e.test_member_wallet import wallet

DAY_MS = 86_400_000


@pytest.fixture
async def gateway(settings, store):
    async with serving(dataclasses.replace(settings, views_interval_s=0)) as running:
        yield running


def today(time_zone: str = "Asia/Seoul", cutoff: str = "00:00") -> str:
    return payments.business_day(wall_ms(), time_zone, cutoff)


def settlement(gateway, days_later: int = 1) -> Settlement:
    """The settlement service, run as if `days_later` days from now (the day to settle has ended)."""
    return Settlement(gateway.app[STORE], gateway.app[SETTINGS], gateway.app[MERCHANTS],
                      now_ms=lambda: wall_ms() + days_later * DAY_MS)


async def a_known_day(gateway) -> dict:
    """GS25 Gangnam: 10,000 with a 10% coupon, 4,000 refunded 1,000, 3,000 cancelled, 2,000 reversed;
    CU Jongno: 5,000 and 2,500. Returns the points the members paid, net."""
    ops = await operator(gateway)
    member, _ = await wallet(gateway, 100_000)
    document = campaign(campaign_id="gs25-settle", merchants=["gs25"], min_spend=5_000,
                        discount={"kind": "percent", "percent": 10, "cap": 2_000})
    await create(ops, document)
    _, coupon, _ = await issue(ops, "gs25-settle", member.member_id)
    gs25, cu = await gateway.terminal(), await gateway.terminal("cu", "cu-jongno-01", "t1")
    _, with_coupon, _ = await gs25.pay(member.code(), 10_000, coupon_codes=[coupon["code"]])
    _, refunded, _ = await gs25.pay(member.code(), 4_000)
    await gs25.send("POST", f"/v1/payments/{refunded['payment_id']}/refunds", {"amount": 1_000, "reason": "", **gs25.here()})
    _, cancelled, _ = await gs25.pay(member.code(), 3_000)
    await gs25.send("POST", f"/v1/payments/{cancelled['payment_id']}/cancel", gs25.here())
    await gs25.pay(member.code(), 2_000, order_ref="ord-reversed")
    await gs25.send("POST", "/v1/reversals", {"order_ref": "ord-reversed", **gs25.here()})
    await cu.pay(member.code(), 5_000)
    await cu.pay(member.code(), 2_500)
    assert 1_000 == with_coupon["discount"]
    return {"member": member, "paid": 100_000 - await gateway.balance(member)}


async def test_a_known_day_settles_to_the_point_and_a_rerun_is_identical(gateway, tmp_path):
    day = await a_known_day(gateway)
    result = await settlement(gateway).settle_day(today(), tmp_path)
    gs25 = next(m for m in result.merchants if m["merchant_id"] == "gs25")
    cu = next(m for m in result.merchants if m["merchant_id"] == "cu")
    totals = gs25["totals"]
    assert {"count": 4, "amount": 19_000, "points": 19_000} == totals["sales"]
    assert ({"count": 1, "amount": 1_000, "points": 1_000}, {"count": 1, "amount": 3_000, "points": 3_000},
            {"count": 1, "amount": 2_000, "points": 2_000}) == (totals["refunds"], totals["cancels"], totals["reversals"])
    assert {"campaign:gs25-settle": 1_000} == totals["discounts"]
    assert (13_000, 13_000 * 150 // 10_000, 13_000 - 195) == (
        totals["payable_points"], totals["fee_points"], totals["net_payable_points"])
    assert ["gs25-gangnam-01"] == [s["store_id"] for s in gs25["stores"]]
    assert (7_500, 90, 7_410) == (cu["totals"]["payable_points"], cu["totals"]["fee_points"],
                                   cu["totals"]["net_payable_points"])
    # Merchants' net plus fees is what members paid plus what coupons funded.
    assert sum(m["totals"]["net_payable_points"] + m["totals"]["fee_points"] for m in result.merchants) \
        == day["paid"] + 1_000

    files = {p.name: p.read_bytes() for p in (tmp_path / today()).iterdir()}
    assert {"gs25.json", "gs25.csv", "cu.json", "cu.csv", "summary.json"} <= set(files)
    assert "TOTAL" in files["gs25.csv"].decode() and merchant_csv(gs25).encode() == files["gs25.csv"]
    journal = keyspace.SETTLEMENT_JOURNAL_KEY
    entries = await gateway.app[STORE].redis.xlen(journal)
    again = await settlement(gateway).settle_day(today(), tmp_path)
    assert files == {p.name: p.read_bytes() for p in (tmp_path / today()).iterdir()}
    assert (entries, 2) == (await gateway.app[STORE].redis.xlen(journal), entries)
    assert again.summary() == result.summary()

    report = await run_audit(gateway.app[STORE])
    assert report.clean, report.problems[:3]
    balances = report.totals_by_unit()["HMP"]
    assert (0, 13_000 - 195, 195 + 90) == (balances.get("merchant:gs25", 0), balances["settled:gs25"],
                                            balances["fee:merchant"])


async def test_an_open_day_is_not_settled_and_a_late_movement_is_refused(gateway, tmp_path):
    member, _ = await wallet(gateway, 10_000)
    terminal = await gateway.terminal()
    await terminal.pay(member.code(), 1_000)
    with pytest.raises(SettlementError, match="has not ended"):
        await settlement(gateway, days_later=0).settle_day(today(), tmp_path)
    await settlement(gateway).settle_day(today(), tmp_path)
    await terminal.pay(member.code(), 500)  # still the same business day: after it was settled
    with pytest.raises(SettlementError, match="changed since"):
        await settlement(gateway).settle_day(today(), tmp_path)


async def test_a_payment_near_the_cut_off_lands_on_each_merchants_own_business_day(gateway, tmp_path):
    """Two merchants in other time zones whose cut-offs are just after and just before now:
    the same moment is yesterday's business day for one and today's for the other."""
    registry, now = gateway.app[MERCHANTS], dt.datetime.now(dt.timezone.utc)
    zones = {"late-mart": ("America/New_York", 3), "early-mart": ("Asia/Tokyo", -3)}
    expected = {}
    for merchant_id, (zone, minutes) in zones.items():
        local = now.astimezone(ZoneInfo(zone)) + dt.timedelta(minutes=minutes)
        if local.date() != now.astimezone(ZoneInfo(zone)).date():
            pytest.skip("too close to local midnight to place a cut-off on either side")
        cutoff = local.strftime("%H:%M")
        await registry.create_merchant(merchant_id, merchant_id, "KRW", zone, cutoff, 42)
        await registry.add_store(merchant_id, "s1", "Store 1")
        await registry.add_terminal(merchant_id, "s1", "t1")
        expected[merchant_id] = payments.business_day(wall_ms(), zone, cutoff)
    local_today = {m: now.astimezone(ZoneInfo(z)).date().isoformat() for m, (z, _) in zones.items()}
    assert expected["late-mart"] < local_today["late-mart"] and expected["early-mart"] == local_today["early-mart"]
    member, _ = await wallet(gateway, 10_000)
    for merchant_id in zones:
        _, sale, _ = await (await gateway.terminal(merchant_id, "s1", "t1")).pay(member.code(), 1_000)
        assert expected[merchant_id] == sale["business_day"]
    service = settlement(gateway, days_later=2)
    for merchant_id, day in expected.items():
        settled = await service.settle_day(day, tmp_path)
        [mine] = [m for m in settled.merchants if m["merchant_id"] == merchant_id]
        assert 1 == mine["totals"]["sales"]["count"]
        other = next(m for m in zones if m != merchant_id)
        if expected[other] != day:
            assert other not in [m["merchant_id"] for m in settled.merchants]


async def test_gateway_settle_and_status_commands(gateway, home_redis, tmp_path):
    """The operator's commands: `gateway status` shows the lag, `gateway settle` writes the files."""
    import asyncio
    import os
    import subprocess
    import sys

    member, _ = await wallet(gateway, 10_000)
    await (await gateway.terminal()).pay(member.code(), 1_000)
    env = dict(os.environ, **home_redis.environment, POINTGATE_KEYRING_PATH=gateway.app[SETTINGS].keyring_path)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    status = await asyncio.to_thread(run, "status")
    assert 0 == status.returncode and "lag 2 entries" in status.stdout  # the seed credit and the sale
    yesterday = (dt.date.fromisoformat(today()) - dt.timedelta(days=1)).isoformat()
    settled = await asyncio.to_thread(run, "settle", "--date", yesterday, "--out", str(tmp_path))
    assert 0 == settled.returncode, settled.stderr
    refused = await asyncio.to_thread(run, "settle", "--date", today(), "--out", str(tmp_path))
    assert (1, "has not ended") == (refused.returncode, "has not ended" if "has not ended" in refused.stderr else refused.stderr)
    summary = json.loads((tmp_path / yesterday / "summary.json").read_text())
    assert {"date": yesterday, "merchants": [], "networks": []} == summary


async def test_the_scheduled_run_settles_yesterday_and_leaves_open_days_for_later(gateway, tmp_path):
    from gateway.settlement import settle_yesterday

    member, _ = await wallet(gateway, 10_000)
    await (await gateway.terminal()).pay(member.code(), 1_000)
    still_open = await settlement(gateway, days_later=0).settle_day(today(), tmp_path, skip_open=True)
    assert () == still_open.merchants
    assert None is await gateway.app[STORE].redis.get(keyspace.settlement_report_key(today(), "gs25"))
    next_morning = await settle_yesterday(settlement(gateway), tmp_path)
    assert (today(), ["gs25"]) == (next_morning.date, [m["merchant_id"] for m in next_morning.merchants])
