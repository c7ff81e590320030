"""Coupons redeemed at payment through HTTP, against real Redis: the matrix of
eligible and refused coupons, stacking, give-backs on cancel, refunds and
reversal, races on one coupon, and conservation of points with discounts
(docs/member-wallet.md, "Coupons at payment")."""

from __future__ import annotations

import asyncio

import pytest

from gateway import keyspace
from gateway.app import MERCHANTS, STORE
from gateway.audit import run_audit
from simulators.terminal import StoreTerminal, load_profiles

from tests.e2e.test_coupon_campaigns import campaign, create, issue, operator, rfc3339
from tests.e2e.test_member_wallet import app_call, wallet


@pytest.fixture
async def ops(gateway):
    return await operator(gateway)


async def coupon(gateway, ops, member, **terms) -> str:
    """A coupon of a fresh campaign with `terms`, issued to `member`; its code."""
    document = campaign(**terms)
    status, created, _ = await create(ops, document)
    assert 201 == status, created
    status, issued, _ = await issue(ops, document["campaign_id"], member.member_id)
    assert 201 == status, issued
    return issued["code"]


async def coupon_state(gateway, member, code: str) -> str:
    partition = keyspace.partition_of_member(member.member_id)
    return await gateway.app[STORE].redis.hget(keyspace.coupon_key(partition, code), "state")


async def account_total(gateway, account: str) -> int:
    return (await run_audit(gateway.app[STORE])).balances.get((account, "HMP"), 0)


GS25_10 = dict(merchants=["gs25"], min_spend=5_000, discount={"kind": "percent", "percent": 10, "cap": 2_000})


async def test_an_eligible_coupon_takes_its_discount_in_the_same_step_as_the_debit(gateway, ops):
    member, token = await wallet(gateway, 20_000)
    code = await coupon(gateway, ops, member, campaign_id="gs25-ten", **GS25_10)
    terminal = await gateway.terminal()
    _, sale, _ = await terminal.pay(member.code(), 10_000, coupon_codes=[code])
    assert ("approved", 9_000, 1_000, 11_000) == (sale["status"], sale["points"], sale["discount"], sale["balance_after"])
    assert [{"code": code, "title": "GS25 10% off", "campaign_id": "gs25-ten", "discount": 1_000, "restored": False}] \
        == sale["coupons"]
    assert "redeemed" == await coupon_state(gateway, member, code)
    assert 10_000 == await account_total(gateway, "merchant:gs25")
    assert -1_000 == await account_total(gateway, "campaign:gs25-ten")
    status, history = await app_call(gateway, "GET", f"/v1/members/{member.member_id}/history?limit=1", token)
    assert (-9_000, 1_000, code) == (history["items"][0]["points"], history["items"][0]["details"]["discount"],
                                     history["items"][0]["details"]["coupons"][0]["code"])
    status, listed = await app_call(gateway, "GET", f"/v1/members/{member.member_id}/coupons", token)
    assert ("redeemed", sale["payment_id"]) == (listed["coupons"][0]["state"], listed["coupons"][0]["payment_id"])


async def test_a_percentage_is_capped_and_a_fixed_discount_never_exceeds_the_amount(gateway, ops):
    member, _ = await wallet(gateway, 50_000)
    capped = await coupon(gateway, ops, member, **GS25_10)
    whole = await coupon(gateway, ops, member, merchants=["gs25"], min_spend=0,
                         discount={"kind": "fixed", "amount": 5_000})
    terminal = await gateway.terminal()
    _, big, _ = await terminal.pay(member.code(), 30_000, coupon_codes=[capped])
    _, free, _ = await terminal.pay(member.code(), 3_000, coupon_codes=[whole])
    assert (2_000, 28_000) == (big["discount"], big["points"])
    assert ("approved", 3_000, 0) == (free["status"], free["discount"], free["points"])
    assert 50_000 - 28_000 == await gateway.balance(member)
    status, cancelled, _ = await terminal.send("POST", f"/v1/payments/{free['payment_id']}/cancel", terminal.here())
    assert (200, "cancelled", "issued") == (status, cancelled["status"], await coupon_state(gateway, member, whole))
    assert (await run_audit(gateway.app[STORE])).clean


@pytest.mark.parametrize(("terms", "amount", "decline"), [
    (dict(merchants=["cu"], min_spend=0, discount={"kind": "fixed", "amount": 1_000}), 10_000, "coupon_not_eligible"),
    (dict(GS25_10), 4_999, "coupon_min_spend"),
    (dict(GS25_10, currency="TWD", merchants=["*"]), 10_000, "coupon_not_eligible"),
])
async def test_a_coupon_outside_its_terms_declines_the_sale_and_stays_unused(gateway, ops, terms, amount, decline):
    member, _ = await wallet(gateway, 20_000)
    code = await coupon(gateway, ops, member, **terms)
    _, sale, _ = await (await gateway.terminal()).pay(member.code(), amount, coupon_codes=[code])
    assert ("declined", decline, 0) == (sale["status"], sale["decline"]["code"], sale["points"])
    assert "쿠폰" in sale["decline"]["message_ko"]
    assert ("issued", 20_000) == (await coupon_state(gateway, member, code), await gateway.balance(member))


async def test_an_expired_coupon_declines(gateway, ops):
    member, _ = await wallet(gateway, 20_000)
    code = await coupon(gateway, ops, member, valid_from=rfc3339(-60), valid_until=rfc3339(1), **GS25_10)
    await asyncio.sleep(2.1)  # valid_until is whole seconds: past it for certain
    _, sale, _ = await (await gateway.terminal()).pay(member.code(), 10_000, coupon_codes=[code])
    assert ("declined", "coupon_expired") == (sale["status"], sale["decline"]["code"])


async def test_a_coupon_is_used_once_and_only_by_its_member(gateway, ops):
    member, _ = await wallet(gateway, 30_000)
    other, _ = await wallet(gateway, 30_000)
    code = await coupon(gateway, ops, member, **GS25_10)
    terminal = await gateway.terminal()
    _, stolen, _ = await terminal.pay(other.code(), 10_000, coupon_codes=[code])
    _, first, _ = await terminal.pay(member.code(), 10_000, coupon_codes=[code])
    _, again, _ = await terminal.pay(member.code(), 10_000, coupon_codes=[code])
    _, unknown, _ = await terminal.pay(member.code(), 10_000, coupon_codes=["CPNOTISSUED22"])
    _, malformed, _ = await terminal.pay(member.code(), 10_000, coupon_codes=["not a coupon"])
    assert ["invalid_coupon", None, "coupon_used", "invalid_coupon", "invalid_coupon"] == [
        (s["decline"] or {}).get("code") for s in (stolen, first, again, unknown, malformed)]
    assert (30_000, 21_000) == (await gateway.balance(other), await gateway.balance(member))


async def test_stackable_coupons_combine_and_a_non_stackable_one_stays_alone(gateway, ops):
    member, _ = await wallet(gateway, 30_000)
    fixed = dict(merchants=["gs25"], min_spend=3_000, discount={"kind": "fixed", "amount": 1_000}, stackable=True)
    first, second = await coupon(gateway, ops, member, **fixed), await coupon(gateway, ops, member, **fixed)
    alone = await coupon(gateway, ops, member, **GS25_10)
    terminal = await gateway.terminal()
    _, refused, _ = await terminal.pay(member.code(), 10_000, coupon_codes=[first, alone])
    assert ("coupons_not_combinable", "issued", "issued") == (
        refused["decline"]["code"], await coupon_state(gateway, member, first), await coupon_state(gateway, member, alone))
    _, twice, _ = await terminal.pay(member.code(), 10_000, coupon_codes=[first, first])
    assert "invalid_coupon" == twice["decline"]["code"]
    _, both, _ = await terminal.pay(member.code(), 10_000, coupon_codes=[first, second])
    assert ("approved", 2_000, 8_000) == (both["status"], both["discount"], both["points"])
    assert [1_000, 1_000] == [c["discount"] for c in both["coupons"]]


async def test_cancel_reversal_and_full_refund_restore_the_coupon_and_the_funders_points(gateway, ops):
    member, _ = await wallet(gateway, 100_000)
    terminal = await gateway.terminal()
    codes = [await coupon(gateway, ops, member, campaign_id=f"gs25-back-{i}", **GS25_10) for i in range(3)]

    _, sale, _ = await terminal.pay(member.code(), 10_000, coupon_codes=[codes[0]])
    status, cancelled, _ = await terminal.send("POST", f"/v1/payments/{sale['payment_id']}/cancel", terminal.here())
    assert (200, True) == (status, cancelled["coupons"][0]["restored"])

    _, sale, _ = await terminal.pay(member.code(), 10_000, order_ref="ord-unanswered", coupon_codes=[codes[1]])
    status, reversal, _ = await terminal.send("POST", "/v1/reversals", {"order_ref": "ord-unanswered", **terminal.here()})
    assert (200, "reversed", True) == (status, reversal["outcome"], reversal["payment"]["coupons"][0]["restored"])

    _, sale, _ = await terminal.pay(member.code(), 10_000, coupon_codes=[codes[2]])
    status, refunded, _ = await terminal.send("POST", f"/v1/payments/{sale['payment_id']}/refunds",
                                              {"amount": 10_000, "reason": "", **terminal.here()})
    assert (201, 9_000, 1_000) == (status, refunded["refund"]["points"], refunded["refund"]["discount_points"])

    assert ["issued"] * 3 == [await coupon_state(gateway, member, c) for c in codes]
    assert 100_000 == await gateway.balance(member)
    for i in range(3):
        assert 0 == await account_total(gateway, f"campaign:gs25-back-{i}")
    assert 0 == await account_total(gateway, "merchant:gs25")
    # Restored means usable again.
    _, reuse, _ = await terminal.pay(member.code(), 10_000, coupon_codes=[codes[0]])
    assert ("approved", 1_000) == (reuse["status"], reuse["discount"])
    assert (await run_audit(gateway.app[STORE])).clean


async def test_partial_refunds_give_back_pro_rata_and_the_last_restores_the_coupon(gateway, ops):
    """A 10,000 sale with a 1,000 coupon: refunds of 3,333, 3,333 and 3,334 give the member
    2,999 + 2,999 + 3,002 and the campaign 333 + 333 + 334, then the coupon is back."""
    member, _ = await wallet(gateway, 20_000)
    code = await coupon(gateway, ops, member, campaign_id="gs25-prorata", **GS25_10)
    terminal = await gateway.terminal()
    _, sale, _ = await terminal.pay(member.code(), 10_000, coupon_codes=[code])
    given = []
    for amount in (3_333, 3_333, 3_334):
        status, result, _ = await terminal.send("POST", f"/v1/payments/{sale['payment_id']}/refunds",
                                                {"amount": amount, "reason": "", **terminal.here()})
        assert 201 == status
        given.append((result["refund"]["points"], result["refund"]["discount_points"]))
        if amount == 3_333:
            assert "redeemed" == await coupon_state(gateway, member, code)
    assert [(2_999, 333), (2_999, 333), (3_002, 334)] == given
    assert ("issued", 20_000) == (await coupon_state(gateway, member, code), await gateway.balance(member))
    assert 0 == await account_total(gateway, "campaign:gs25-prorata")
    assert (await run_audit(gateway.app[STORE])).clean


async def test_two_sales_racing_for_one_coupon_discount_once(gateway, ops):
    member, _ = await wallet(gateway, 100_000)
    code = await coupon(gateway, ops, member, **GS25_10)
    terminals = [await gateway.terminal(terminal_id=t) for t in ("t1", "t2")]
    sales = await asyncio.gather(*(t.pay(member.code(), 10_000, coupon_codes=[code]) for t in terminals * 4))
    outcomes = sorted((s[1]["decline"] or {}).get("code", "approved") for s in sales)
    assert ["approved"] + ["coupon_used"] * 7 == outcomes
    assert 100_000 - 9_000 == await gateway.balance(member)
    assert (await run_audit(gateway.app[STORE])).clean


async def test_conservation_holds_with_discounts_under_mixed_traffic(gateway, ops):
    """Many members, coupons, payments, partial refunds and cancels: every unit sums to zero,
    members + merchant + campaigns + affiliate balance, and the events match the journal."""
    terminal = await gateway.terminal()
    members = [(await wallet(gateway, 50_000))[0] for _ in range(6)]
    campaign_ids, merchant_due, members_paid = [], 0, 0
    for i, member in enumerate(members):
        terms = dict(GS25_10, campaign_id=f"gs25-mix-{i}")
        campaign_ids.append(terms["campaign_id"])
        code = await coupon(gateway, ops, member, **terms)
        _, sale, _ = await terminal.pay(member.code(), 7_000 + 1_111 * i, coupon_codes=[code])
        assert "approved" == sale["status"]
        merchant_due += sale["amount"]
        members_paid += sale["points"]
        if i % 3 == 0:
            _, cancelled, _ = await terminal.send("POST", f"/v1/payments/{sale['payment_id']}/cancel", terminal.here())
            merchant_due -= sale["amount"]
            members_paid -= sale["points"]
        elif i % 3 == 1:
            _, refunded, _ = await terminal.send("POST", f"/v1/payments/{sale['payment_id']}/refunds",
                                                 {"amount": 2_345, "reason": "", **terminal.here()})
            merchant_due -= refunded["refund"]["points"] + refunded["refund"]["discount_points"]
            members_paid -= refunded["refund"]["points"]
    report = await run_audit(gateway.app[STORE])
    assert report.clean, report.problems[:3]
    totals = report.totals_by_unit()["HMP"]
    assert 0 == sum(totals.values())
    discounts = -sum(totals.get(f"campaign:{c}", 0) for c in campaign_ids)
    assert merchant_due == totals["merchant:gs25"] == members_paid + discounts
    assert 6 * 50_000 - members_paid == totals["members_available"]


async def test_the_receipt_shows_each_discount(gateway, ops):
    member, _ = await wallet(gateway, 20_000)
    code = await coupon(gateway, ops, member, title="GS25 10% off", **GS25_10)
    key = await gateway.app[MERCHANTS].issue_key("gs25")
    till = StoreTerminal.open(load_profiles()["gs25-gangnam-01/t1"], base_url=gateway.base_url, key_id=key.key_id,
                              secret=key.secret, journal_path=":memory:", language="en")
    try:
        sale = await till.sell(10_000, typed=member.code(), coupons=(code,))
    finally:
        await till.close()
    assert 1_000 == sale.payment.discount
    line = next(line for line in sale.receipt.splitlines() if line.startswith("GS25 10% off"))
    assert line.rstrip().endswith("-1,000 KRW")
    assert any(line.rstrip().endswith("9,000") for line in sale.receipt.splitlines())


async def test_a_declined_sale_with_a_coupon_and_too_few_points_leaves_everything(gateway, ops):
    member, _ = await wallet(gateway, 1_000)
    code = await coupon(gateway, ops, member, **GS25_10)
    _, sale, _ = await (await gateway.terminal()).pay(member.code(), 10_000, coupon_codes=[code])
    assert ("declined", "insufficient_points") == (sale["status"], sale["decline"]["code"])
    assert ("issued", 1_000) == (await coupon_state(gateway, member, code), await gateway.balance(member))
