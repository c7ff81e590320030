"""A Taishin member pays at GS25: our gateway asks Taishin (a second pointgate instance,
configured as the Taishin network) through a fault proxy, both services real, both on real Redis."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from gateway import keyspace
from gateway.app import PAYMENTS, STORE
from gateway.audit import run_audit
from simulators.fault_proxy import Fault
from tests.e2e.conftest import Gateway, taishin_member


async def test_taishin_member_pays_at_gs25(networks):
    """1,000 KRW at GS25 with a Taishin code: approved, Taishin debits its member in TSP, we owe GS25 and Taishin owes us."""
    gs25, member = await networks.home.terminal(), await taishin_member(networks, 1_000)
    status, payment, _ = await gs25.pay(member.code(), 1_000)
    assert (201, "approved", 1_000) == (status, payment["status"], payment["points"])
    assert payment["fx"]["rate"]
    taishin_balance = await networks.taishin.balance(member)
    assert 1_000 - 24 == taishin_balance  # ceil(1,000 KRW x 1.005 / 43.12) = 24 TSP
    home = (await run_audit(networks.home.app[STORE])).totals_by_unit()["HMP"]
    assert (-1_000, 1_000) == (home["partner:taishin"], home["merchant:gs25"])


async def test_partner_decline_reaches_the_cashier(networks):
    """A Taishin member without enough points is declined with insufficient_points at GS25."""
    gs25, member = await networks.home.terminal(), await taishin_member(networks, 10)
    _, payment, _ = await gs25.pay(member.code(), 5_000)
    assert ("declined", "insufficient_points") == (payment["status"], payment["decline"]["code"])


async def test_answer_dropped_at_the_partner_is_found_and_approved_once(networks):
    """Taishin approves but its answer is lost: our lookup finds the approval; the member pays once."""
    gs25, member = await networks.home.terminal(), await taishin_member(networks, 1_000)
    networks.proxy.once(Fault.DROP_RESPONSE, method="POST", path_prefix="/v1/interop/payments")
    _, payment, _ = await gs25.pay(member.code(), 1_000)
    assert ("approved", 976) == (payment["status"], await networks.taishin.balance(member))


async def test_partner_down_declines_fast_and_owes_the_reversal(networks):
    """With Taishin down the cashier gets partner_unavailable; the reversal is sent once Taishin is back."""
    gs25, member = await networks.home.terminal(), await taishin_member(networks, 1_000)
    networks.proxy.down = True
    started = time.monotonic()
    _, payment, _ = await gs25.pay(member.code(), 1_000)
    elapsed_s = time.monotonic() - started
    owed = keyspace.partner_reversals_key("taishin")
    assert ("partner_unavailable", True) == (payment["decline"]["code"], elapsed_s < 5)
    assert [payment["payment_id"]] == list(await networks.home.app[STORE].redis.smembers(owed))
    networks.proxy.down = False
    for _ in range(60):
        if not await networks.home.app[STORE].redis.exists(owed):
            break
        await asyncio.sleep(0.1)
    assert 0 == await networks.home.app[STORE].redis.exists(owed)
    assert 1_000 == await networks.taishin.balance(member)


async def test_duplicate_while_the_partner_is_asked_waits(networks):
    """A retry of a sale whose first request is still waiting on the partner gets 409 idempotency_in_progress."""
    gs25, member = await networks.home.terminal(), await taishin_member(networks, 1_000)
    networks.proxy.always(Fault.DELAY, path_prefix="/v1/interop/payments", delay_s=0.5)
    code = member.code()
    first = asyncio.create_task(gs25.pay(code, 1_000, order_ref="DUP-OUT-1", idempotency_key="dup-out-0001"))
    await asyncio.sleep(0.2)
    status, problem, _ = await gs25.pay(code, 1_000, order_ref="DUP-OUT-1", idempotency_key="dup-out-0001")
    _, payment, _ = await first
    assert (409, "idempotency_in_progress", "approved") == (status, problem["code"], payment["status"])
    assert 976 == await networks.taishin.balance(member)


async def test_circuit_opens_and_home_payments_keep_their_speed(networks):
    """After repeated partner failures the circuit opens (no more calls), and a home sale stays fast."""
    gs25 = await networks.home.terminal()
    taishin = [await taishin_member(networks, 1_000) for _ in range(4)]
    home_member = await networks.home.member(points=10_000)
    networks.proxy.down = True
    for member in taishin[:3]:
        await gs25.pay(member.code(), 100)
    refused_before = networks.proxy.stats.connections_refused
    started = time.monotonic()
    _, fast_decline, _ = await gs25.pay(taishin[3].code(), 100)
    decline_s = time.monotonic() - started
    started = time.monotonic()
    _, home_sale, _ = await gs25.pay(home_member.code(), 1_000)
    home_s = time.monotonic() - started
    assert "open" == networks.home.app[PAYMENTS].partners["taishin"].breaker.state
    assert ("partner_unavailable", refused_before) == (fast_decline["decline"]["code"], networks.proxy.stats.connections_refused)
    assert ("approved", True, True) == (home_sale["status"], decline_s < 0.5, home_s < 0.5)


async def test_books_balance_on_both_sides(networks):
    """After approvals, a decline and an outage, both networks' audits are clean."""
    gs25 = await networks.home.terminal()
    for points in (1_000, 10):
        member = await taishin_member(networks, points)
        await gs25.pay(member.code(), 500)
    assert (await run_audit(networks.home.app[STORE])).clean
    assert (await run_audit(networks.taishin.app[STORE])).clean


async def test_cancel_and_partial_refund_of_a_partner_members_payment(networks):
    """GS25 refunds 400 of 1,000 KRW then cancels another sale: Taishin's member gets the TSP back at the original rate."""
    gs25, member = await networks.home.terminal(), await taishin_member(networks, 1_000)
    _, first, _ = await gs25.pay(member.code(), 1_000)
    status, refund, _ = await gs25.send("POST", f"/v1/payments/{first['payment_id']}/refunds", {"amount": 400, **gs25.here()})
    assert (201, "partially_refunded", None) == (status, refund["payment"]["status"], refund["refund"]["balance_after"])
    after_refund = await networks.taishin.balance(member)
    _, second, _ = await gs25.pay(member.code(), 1_000)
    status, cancelled, _ = await gs25.send("POST", f"/v1/payments/{second['payment_id']}/cancel", gs25.here())
    assert (200, "cancelled") == (status, cancelled["status"])
    assert (976 + 9, 976 + 9) == (after_refund, await networks.taishin.balance(member))  # floor(24 x 400 / 1000) = 9 back
    home = (await run_audit(networks.home.app[STORE])).totals_by_unit()["HMP"]
    assert (-600, 600) == (home["partner:taishin"], home["merchant:gs25"])
    assert (await run_audit(networks.taishin.app[STORE])).clean


async def enrolled(gateway: Gateway) -> dict:
    async with gateway.session.post(gateway.base_url + "/v1/members", json={}) as response:
        return await response.json()


async def exchange(gateway: Gateway, member: dict, partner_id: str, partner_member_id: str, points: int, key: str):
    async with gateway.session.post(
            f"{gateway.base_url}/v1/members/{member['member_id']}/exchanges",
            json={"partner": partner_id, "partner_member_id": partner_member_id, "points": points},
            headers={"Authorization": f"Bearer {member['token']}", "Idempotency-Key": key}) as response:
        return response.status, await response.json()


async def balance(gateway: Gateway, member: dict) -> tuple[int, int]:
    async with gateway.session.get(f"{gateway.base_url}/v1/members/{member['member_id']}",
                                   headers={"Authorization": f"Bearer {member['token']}"}) as response:
        doc = await response.json()
        return doc["available"], doc["held"]


async def credited(gateway: Gateway, member: dict, points: int) -> None:
    await gateway.ledger.credit(member["member_id"], points, "affiliate:hana-card", "seed-" + member["member_id"],
                                gateway.app[PAYMENTS].home.points_unit)


async def test_exchange_both_ways(networks):
    """10,000 HMP become floor(10,000 / 43.3356) = 230 TSP at Taishin; 100 TSP come back as floor(100 / 0.0233...) HMP."""
    minji, wen = await enrolled(networks.home), await enrolled(networks.taishin)
    await credited(networks.home, minji, 20_000)
    await credited(networks.taishin, wen, 1_000)
    status, out = await exchange(networks.home, minji, "taishin", wen["member_id"], 10_000, "exchange-0001")
    assert (201, "completed", 230) == (status, out["state"], out["received"])
    assert ((10_000, 0), (1_230, 0)) == (await balance(networks.home, minji), await balance(networks.taishin, wen))
    status, back = await exchange(networks.taishin, wen, "hana", minji["member_id"], 100, "exchange-0002")
    assert (201, "completed") == (status, back["state"])
    assert (10_000 + back["received"], 0) == await balance(networks.home, minji)
    assert back["received"] <= 4_312  # never more than 100 TSP at the mid rate (43.12)
    again = await exchange(networks.home, minji, "taishin", wen["member_id"], 10_000, "exchange-0001")
    other = await exchange(networks.home, minji, "taishin", wen["member_id"], 9_000, "exchange-0001")
    assert (201, out) == again  # the same request again changes nothing
    assert (422, "idempotency_mismatch") == (other[0], other[1]["code"])
    for gateway in (networks.home, networks.taishin):
        assert (await run_audit(gateway.app[STORE])).clean


async def test_refused_exchange_leaves_both_sides_unchanged(networks):
    """An exchange to an unknown Taishin member is refused and the held points come back."""
    minji = await enrolled(networks.home)
    await credited(networks.home, minji, 20_000)
    status, record = await exchange(networks.home, minji, "taishin", "m000000000000000", 5_000, "exchange-0003")
    assert (409, "refused", "member_not_found") == (status, record["state"], record["reason"])
    assert (20_000, 0) == await balance(networks.home, minji)


async def test_partner_down_mid_exchange_is_settled_when_it_returns(networks):
    """Taishin down: the exchange stays pending with the points held; once Taishin is back it completes exactly once."""
    minji, wen = await enrolled(networks.home), await enrolled(networks.taishin)
    await credited(networks.home, minji, 20_000)
    networks.proxy.down = True
    status, record = await exchange(networks.home, minji, "taishin", wen["member_id"], 10_000, "exchange-0004")
    assert (202, "pending", (10_000, 10_000)) == (status, record["state"], await balance(networks.home, minji))
    networks.proxy.down = False
    for _ in range(80):
        if (await balance(networks.home, minji))[1] == 0:
            break
        await asyncio.sleep(0.1)
    assert ((10_000, 0), (230, 0)) == (await balance(networks.home, minji), await balance(networks.taishin, wen))


@pytest.mark.parametrize("networks", ["taishin", "siam"], indirect=True)
async def test_every_configured_partner_pays_and_exchanges_the_same_way(networks):
    """Taishin (TWD) and a Thai network (THB) added only in configuration: a sale at GS25 and an exchange both ways."""
    from gateway import fx

    table = fx.RateTable.from_toml(networks.taishin.app[PAYMENTS].settings.fx)
    currency = networks.taishin.app[PAYMENTS].home.currency
    expected = fx.points_for_payment(1_000, "KRW", fx.quote(table, "KRW", currency, "q_test", 0))
    gs25, member = await networks.home.terminal(), await taishin_member(networks, 1_000)
    _, payment, _ = await gs25.pay(member.code(), 1_000)
    assert ("approved", 1_000 - expected) == (payment["status"], await networks.taishin.balance(member))

    ours, theirs = await enrolled(networks.home), await enrolled(networks.taishin)
    await credited(networks.home, ours, 50_000)
    await credited(networks.taishin, theirs, 1_000)
    s1, out = await exchange(networks.home, ours, networks.partner_id, theirs["member_id"], 40_000, "ex-param-1")
    s2, back = await exchange(networks.taishin, theirs, "hana", ours["member_id"], 100, "ex-param-2")
    assert (201, 201) == (s1, s2)
    assert (10_000 + back["received"], 0) == await balance(networks.home, ours)
    assert (1_000 + out["received"] - 100, 0) == await balance(networks.taishin, theirs)
    for gateway in (networks.home, networks.taishin):
        assert (await run_audit(gateway.app[STORE])).clean


async def test_slow_partner_ends_reversed_and_home_sales_stay_fast(networks):
    """Taishin answering slower than its timeout: the sale ends partner_unavailable within the deadline,
    a home sale at the same moment stays fast, and the owed reversal lands once Taishin is quick again."""
    gs25, member = await networks.home.terminal(), await taishin_member(networks, 1_000)
    home_member = await networks.home.member(points=10_000)
    networks.proxy.always(Fault.DELAY, path_prefix="/v1/interop", delay_s=1.5)
    started = time.monotonic()
    slow = asyncio.create_task(gs25.pay(member.code(), 1_000))
    await asyncio.sleep(0.2)
    home_started = time.monotonic()
    _, home_sale, _ = await gs25.pay(home_member.code(), 1_000)
    home_s = time.monotonic() - home_started
    _, declined, _ = await slow
    slow_s = time.monotonic() - started
    assert ("approved", True) == (home_sale["status"], home_s < 0.5)
    assert ("partner_unavailable", True) == (declined["decline"]["code"], slow_s < 10)
    networks.proxy.clear()
    owed = keyspace.partner_reversals_key("taishin")
    for _ in range(80):
        if not await networks.home.app[STORE].redis.exists(owed):
            break
        await asyncio.sleep(0.1)
    assert (0, 1_000) == (await networks.home.app[STORE].redis.exists(owed), await networks.taishin.balance(member))


async def test_terminal_reversal_of_a_partner_members_payment_goes_to_the_partner_first(networks):
    """GS25 never saw the answer and reverses by its order reference: Taishin gives its member the
    points back, then our books move the amount off GS25's payable; a retry changes nothing."""
    gs25, member = await networks.home.terminal(), await taishin_member(networks, 1_000)
    _, payment, _ = await gs25.pay(member.code(), 1_000, order_ref="ord-no-answer")
    assert "approved" == payment["status"]
    for _ in range(2):
        status, reversal, _ = await gs25.send("POST", "/v1/reversals", {"order_ref": "ord-no-answer", **gs25.here()},
                                              idempotency_key="rev-no-answer")
        assert (200, "reversed", "reversed") == (status, reversal["outcome"], reversal["payment"]["status"])
    assert 1_000 == await networks.taishin.balance(member)
    home = (await run_audit(networks.home.app[STORE])).totals_by_unit()["HMP"]
    assert (0, 0) == (home.get("partner:taishin", 0), home.get("merchant:gs25", 0))
    assert (await run_audit(networks.home.app[STORE])).clean
    assert (await run_audit(networks.taishin.app[STORE])).clean


async def test_our_member_uses_a_partners_coupon_at_the_partners_store(networks):
    """Taishin's campaign (NT$30 off at its merchants, funded by Taishin): our member shows the coupon
    with the code at FamilyMart; the discount is applied in our sale step and Taishin is owed less."""
    from tests.e2e.test_coupon_campaigns import issue

    member = await networks.home.member(points=50_000)
    taishin_on_home = await networks.home.terminal("taishin")
    status, coupon, _ = await issue(taishin_on_home, "taishin-familymart", member.member_id)
    assert (201, "taishin") == (status, coupon["issuer"])
    familymart = await networks.taishin.terminal("familymart-tw", "fm-taipei-101", "t1")
    status, sale, _ = await familymart.pay(member.code(), 300, currency="TWD", coupon_codes=[coupon["code"]])
    assert (201, "approved", 30) == (status, sale["status"], sale["discount"])
    assert ["FamilyMart NT$30 off"] == [c["title"] for c in sale["coupons"]]
    paid = 50_000 - await networks.home.balance(member)
    journal = await networks.home.app[STORE].redis.xrange(keyspace.journal_key(keyspace.partition_of_member(member.member_id)))
    [postings] = [json.loads(f["postings"]) for _, f in journal if f["kind"] == "payment"]
    [gross] = [n for account, _, n in postings if account == "partner:taishin" and n > 0]  # 300 TWD in points
    assert sorted([["member:" + member.member_id, "HMP", -paid], ["partner:taishin", "HMP", -(gross * 30 // 300)],
                   ["partner:taishin", "HMP", gross]]) == sorted(postings)
    assert paid == gross - gross * 30 // 300  # Taishin funds its NT$30, so it is owed that much less
    assert (await run_audit(networks.home.app[STORE])).clean
    assert (await run_audit(networks.taishin.app[STORE])).clean
