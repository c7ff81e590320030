"""Network net settlement with a partner and reconciliation of the two sides' files:
both networks run pointgate (the partner under Taishin's configuration), each settles
the day, the positions mirror each other, and every planted difference is found."""

from __future__ import annotations

import copy

from gateway.app import MERCHANTS, SETTINGS, STORE
from gateway.clock import wall_ms
from gateway.settlement import Settlement, reconcile_network

from tests.e2e.conftest import taishin_member

DAY_MS = 86_400_000


def settlement(gateway) -> Settlement:
    return Settlement(gateway.app[STORE], gateway.app[SETTINGS], gateway.app[MERCHANTS],
                      now_ms=lambda: wall_ms() + DAY_MS)


async def a_day_across_the_border(networks) -> None:
    """Our member pays 300 and 120 TWD at FamilyMart (Taishin's merchant), 120 refunded by 20; a Taishin
    member pays 1,000 and 2,000 KRW at GS25, the 2,000 cancelled."""
    member = await networks.home.member(points=100_000)
    familymart = await networks.taishin.terminal("familymart-tw", "fm-taipei-101", "t1")
    _, first, _ = await familymart.pay(member.code(), 300, currency="TWD")
    _, second, _ = await familymart.pay(member.code(), 120, currency="TWD")
    status, _, _ = await familymart.send("POST", f"/v1/payments/{second['payment_id']}/refunds",
                                         {"amount": 20, **familymart.here()})
    assert ("approved", "approved", 201) == (first["status"], second["status"], status)
    visitor = await taishin_member(networks, 10_000)
    gs25 = await networks.home.terminal()
    await gs25.pay(visitor.code(), 1_000)
    _, cancelled, _ = await gs25.pay(visitor.code(), 2_000)
    status, _, _ = await gs25.send("POST", f"/v1/payments/{cancelled['payment_id']}/cancel", gs25.here())
    assert 200 == status


async def test_each_side_settles_the_day_and_the_positions_mirror(networks, tmp_path):
    await a_day_across_the_border(networks)
    day = _network_day(networks)
    ours = (await settlement(networks.home).settle_day(day, tmp_path / "home")).networks
    theirs = (await settlement(networks.taishin).settle_day(day, tmp_path / "taishin")).networks
    [home_view] = [n for n in ours if n["partner"] == "taishin"]
    [taishin_view] = [n for n in theirs if n["partner"] == "hana"]
    assert (2, {"TWD": 420}, 1, {"TWD": 20}) == (
        home_view["inbound"]["count"], home_view["inbound"]["amounts"],
        home_view["inbound_back"]["count"], home_view["inbound_back"]["amounts"])
    assert (2, {"KRW": 3_000}, 1, {"KRW": 2_000}) == (
        home_view["outbound"]["count"], home_view["outbound"]["amounts"],
        home_view["outbound_back"]["count"], home_view["outbound_back"]["amounts"])
    # Each side's inbound is the other's outbound, to the unit of currency.
    for flow, mirrored in (("inbound", "outbound"), ("inbound_back", "outbound_back")):
        assert (home_view[flow]["count"], home_view[flow]["amounts"]) == (
            taishin_view[mirrored]["count"], taishin_view[mirrored]["amounts"])
        assert (home_view[mirrored]["count"], home_view[mirrored]["amounts"]) == (
            taishin_view[flow]["count"], taishin_view[flow]["amounts"])
    assert {"TWD": 400, "KRW": -1_000} == home_view["net"]
    assert {"TWD": -400, "KRW": 1_000} == taishin_view["net"]
    assert (tmp_path / "home" / day / "network-taishin.json").exists()

    report = reconcile_network(home_view, taishin_view)
    assert ("matched", 6, []) == (report["status"], report["matched"], report["exceptions"])


async def test_reconciliation_finds_each_planted_difference_and_nothing_else(networks, tmp_path):
    await a_day_across_the_border(networks)
    day = _network_day(networks)
    [ours] = [n for n in (await settlement(networks.home).settle_day(day, tmp_path / "h")).networks if n["partner"] == "taishin"]
    [theirs] = [n for n in (await settlement(networks.taishin).settle_day(day, tmp_path / "t")).networks
                if n["partner"] == "hana"]
    planted = copy.deepcopy(theirs)
    items = planted["items"]
    dropped = items.pop(0)                               # the partner never recorded one of ours
    items[0] = dict(items[0], amount=items[0]["amount"] + 1)  # off by one unit
    moved = items.pop(1)                                 # the partner put it on the next day (cut-off)
    items.append(dict(dropped, payment_id="tw-ghost", partner_payment_id="pay_999ffffffffffffffff"))  # only theirs
    next_day = {"date": "next", "items": [moved]}

    report = reconcile_network(ours, planted, [next_day])
    kinds = sorted((e["kind"], e["payment_id"] if e["kind"] != "missing_at_home" else e["partner_payment_id"])
                   for e in report["exceptions"])
    mirrored = {"outbound": "inbound", "outbound_back": "inbound_back", "inbound": "outbound", "inbound_back": "outbound_back"}

    def ours_id(item):  # their item's id on our side
        return item["partner_payment_id"]

    assert sorted([("missing_at_partner", ours_id(dropped)), ("amount_mismatch", ours_id(items[0])),
                   ("timing", ours_id(moved)), ("missing_at_home", "tw-ghost")]) == kinds
    assert 6 - 3 == report["matched"]
    timing = next(e for e in report["exceptions"] if e["kind"] == "timing")
    assert ("next", mirrored[moved["flow"]]) == (timing["partner_date"], timing["flow"])


def _network_day(networks) -> str:
    from gateway import payments

    return payments.business_day(wall_ms(), networks.home.app[SETTINGS].member_day_time_zone, "00:00")
