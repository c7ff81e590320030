"""Concurrent duplicates of one request, on every mutating route: exactly one effect.

A retry is the same request again: the same Idempotency-Key and body, and on a signed route
a fresh signature with its own nonce (docs/signing.md), which is what each duplicate here
gets. N of them go out at once (N = 1, 7, 50). Then:

- the request took effect once: the balance, the journal, the stored records show one;
- every answer that is not the retryable 409 idempotency_in_progress is the first answer,
  status and bytes (and on the routes that mark them, exactly one is not marked replayed);
- one more retry, after all of them have finished, gets that same answer.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import pytest

from gateway import keyspace
from gateway.app import STORE
from gateway.audit import run_audit
from gateway.members import DEVICES_PER_MEMBER_MAX

from tests.e2e import test_cashouts
from tests.e2e.conftest import serving
from tests.e2e.test_cashouts import App, books, cash_settings, journal_kinds, member as cash_member
from tests.e2e.test_coupon_campaigns import campaign, coupons_of, create, enrol, issue, operator
from tests.e2e.test_interop_outbound import balance as exchange_balance, credited, enrolled
from tests.e2e.test_member_api import affiliate, earn
from tests.e2e.test_member_wallet import journal_of, wallet

pytestmark = pytest.mark.parametrize("n", [1, 7, 50])

bank = test_cashouts.bank
"""The bank simulator, as the cash-out tests start it (a fixture)."""


@dataclass(frozen=True)
class Reply:
    status: int
    raw: bytes
    replayed: bool | None
    """Whether the answer says Idempotent-Replayed; None on the routes that do not mark replays."""

    @property
    def in_progress(self) -> bool:
        return self.status == 409 and json.loads(self.raw).get("code") == "idempotency_in_progress"


async def signed(sending: Awaitable[tuple[int, Any, dict[str, Any]]]) -> Reply:
    """The reply to a signed request (a Terminal's send, signed afresh with a new nonce each time)."""
    status, _, headers = await sending
    return Reply(status, headers["_raw"], headers.get("idempotent-replayed") == "true")


async def from_the_app(gateway, member_id: str, token: str, path: str, document: Any, key: str) -> Reply:
    """A member app's POST with its bearer token, as the cash-out tests' App sends it."""
    app = App(gateway, member_id, token, [])
    status, _ = await app.call("POST", path, document, key)
    return Reply(status, app.seen[-1], None)


async def duplicates(n: int, send: Callable[[], Awaitable[Reply]], marked: bool = True) -> Reply:
    """`n` copies of one request at once, then one more once they have all finished; the answer."""
    replies = await asyncio.gather(*(send() for _ in range(n)))
    answers = [r for r in replies if not r.in_progress]
    assert answers, "every duplicate was told the request is in progress, and no request ever finished"
    first = next((r for r in answers if not r.replayed), answers[0])
    assert [(first.status, first.raw)] * len(answers) == [(r.status, r.raw) for r in answers]
    if marked:
        assert 1 == sum(1 for r in answers if not r.replayed), "exactly one first answer, the rest replays"
    again = await send()
    assert (first.status, first.raw) == (again.status, again.raw)
    if marked:
        assert again.replayed
    return first


def idem() -> str:
    return "dup-" + secrets.token_hex(8)


# -- the merchant API ----------------------------------------------------------------


async def test_duplicate_sales_make_one_payment(gateway, n):
    """One sale, sent n times at once: one payment, one debit, one journal entry."""
    terminal, member = await gateway.terminal(), await gateway.member(points=100_000)
    code, key = member.code(), idem()
    answer = json.loads((await duplicates(n, lambda: signed(terminal.pay(code, 1_234, "DUP-SALE-1", key)))).raw)
    _, found, _ = await terminal.send("GET", "/v1/payments?order_ref=DUP-SALE-1")
    assert ("approved", answer["payment_id"]) == (answer["status"], found["payment_id"])
    assert 100_000 - 1_234 == await gateway.balance(member)
    assert [f"pay:{answer['payment_id']}"] == (await journal_of(gateway, member.member_id))[1:]


async def test_duplicate_cancels_give_the_points_back_once(gateway, n):
    """One cancel, sent n times at once: the points come back once."""
    terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
    _, payment, _ = await terminal.pay(member.code(), 3_000)
    path, key = f"/v1/payments/{payment['payment_id']}/cancel", idem()
    answer = json.loads((await duplicates(n, lambda: signed(terminal.send("POST", path, terminal.here(), key)))).raw)
    assert ("cancelled", 10_000) == (answer["status"], answer["balance_after"])
    assert 10_000 == await gateway.balance(member)
    assert [f"pay:{payment['payment_id']}", f"cancel:{payment['payment_id']}"] == (
        await journal_of(gateway, member.member_id))[1:]


async def test_duplicate_refunds_refund_once(gateway, n):
    """One partial refund, sent n times at once: one refund on the payment, the points back once."""
    terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
    _, payment, _ = await terminal.pay(member.code(), 5_000)
    path, key = f"/v1/payments/{payment['payment_id']}/refunds", idem()
    document = {"amount": 1_500, "reason": "one item", **terminal.here()}
    answer = json.loads((await duplicates(n, lambda: signed(terminal.send("POST", path, document, key)))).raw)
    _, fetched, _ = await terminal.send("GET", f"/v1/payments/{payment['payment_id']}")
    assert ("partially_refunded", [answer["refund"]["refund_id"]], 1_500) == (
        fetched["status"], [r["refund_id"] for r in fetched["refunds"]], fetched["refunded_amount"])
    assert 6_500 == await gateway.balance(member)
    assert 3 == len(await journal_of(gateway, member.member_id))  # the seed, the sale, one refund


@pytest.mark.parametrize("sale_first", [True, False], ids=["after the sale", "before the sale"])
async def test_duplicate_reversals_reverse_once(gateway, n, sale_first):
    """One reversal, sent n times at once: the points back once; before its sale, the order is marked
    once and the late sale declines."""
    terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
    if sale_first:
        await terminal.pay(member.code(), 2_000, order_ref="DUP-REV-1")
    document, key = {"order_ref": "DUP-REV-1", "reason": "no answer", **terminal.here()}, idem()
    answer = json.loads((await duplicates(n, lambda: signed(terminal.send("POST", "/v1/reversals", document, key)))).raw)
    _, late, _ = await terminal.pay(member.code(), 2_000, order_ref="DUP-REV-1")
    assert ("reversed" if sale_first else "recorded") == answer["outcome"]
    assert ("declined", "reversed") == (late["status"], late["decline"]["code"])
    assert 10_000 == await gateway.balance(member)
    assert (3 if sale_first else 1) == len(await journal_of(gateway, member.member_id))


async def test_duplicate_batch_closes_close_one_batch(gateway, n):
    """One batch close, sent n times at once: the batch closes once, and the next close is the next batch."""
    terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
    _, payment, _ = await terminal.pay(member.code(), 3_000)
    report = {"store_id": terminal.store_id, "sale_count": 1, "sale_amount": 3_000,
              "movements": [{"payment_id": payment["payment_id"], "kind": "sale", "amount": 3_000}]}
    key = idem()
    answer = json.loads((await duplicates(n, lambda: signed(terminal.send("POST", "/v1/terminals/t1/batches", report, key)))).raw)
    _, following, _ = await terminal.send("POST", "/v1/terminals/t1/batches",
                                          {"store_id": terminal.store_id, "sale_count": 0, "sale_amount": 0})
    assert ("matched", 1, 2) == (answer["status"], answer["batch_no"], answer["next_batch_no"])
    assert (2, 0) == (following["batch_no"], following["gateway"]["sale_count"])


# -- affiliates and operators -----------------------------------------------------------


async def test_duplicate_earnings_credit_once(gateway, n):
    """One earning, sent n times at once: the points credited once, the affiliate's budget used once."""
    member, _ = await wallet(gateway)
    card, key = await affiliate(gateway), idem()
    answer = json.loads((await duplicates(n, lambda: signed(earn(card, member.member_id, 500, "DUP-EARN-1", key)))).raw)
    assert (500, 500) == (answer["balance_after"], await gateway.balance(member))
    assert [f"earn:{answer['earning_id']}"] == await journal_of(gateway, member.member_id)
    issued = await gateway.app[STORE].redis.hget(keyspace.affiliate_budget_key("hana-card"), "issued_points")
    assert "500" == issued


async def test_duplicate_campaign_creations_create_one(gateway, n):
    """One new campaign, sent n times at once: created once, and no duplicate is told it exists already."""
    ops = await operator(gateway)
    document, key = campaign(), idem()
    answer = json.loads((await duplicates(n, lambda: signed(create(ops, document, key)))).raw)
    status, fetched, _ = await ops.send("GET", f"/v1/campaigns/{document['campaign_id']}")
    assert (200, document["campaign_id"], 0) == (status, answer["campaign_id"], fetched["issued"])


async def test_duplicate_coupon_issues_issue_one(gateway, n):
    """One coupon issue, sent n times at once (the campaign allows ten each): the member gets one coupon."""
    ops, holder = await operator(gateway), await enrol(gateway)
    document, key = campaign(per_member_limit=10), idem()
    await create(ops, document)
    answer = json.loads((await duplicates(n, lambda: signed(issue(ops, document["campaign_id"], holder["member_id"], key)))).raw)
    _, fetched, _ = await ops.send("GET", f"/v1/campaigns/{document['campaign_id']}")
    assert ([answer["code"]], 1) == ([c["code"] for c in await coupons_of(gateway, holder)], fetched["issued"])


# -- the member app ---------------------------------------------------------------------------


async def test_duplicate_coupon_claims_claim_one(gateway, n):
    """One claim, sent n times at once (the campaign allows five each): one coupon, counted once."""
    ops, holder = await operator(gateway), await enrol(gateway)
    document = campaign(per_member_limit=5)
    await create(ops, document)
    path, key = f"/v1/members/{holder['member_id']}/coupons", idem()
    answer = json.loads((await duplicates(n, lambda: from_the_app(gateway, holder["member_id"], holder["token"], path,
                                                                    {"campaign_id": document["campaign_id"]}, key),
                                          marked=False)).raw)
    _, fetched, _ = await ops.send("GET", f"/v1/campaigns/{document['campaign_id']}")
    counted = await gateway.app[STORE].redis.hget(keyspace.coupon_counts_key(holder["member_id"]), document["campaign_id"])
    assert ([answer["code"]], "1", 1) == ([c["code"] for c in await coupons_of(gateway, holder)], counted, fetched["issued"])


async def test_duplicate_cashouts_pay_the_bank_once(settings, store, bank, n):
    """One cash-out, sent n times at once: the points taken once, the bank paid once."""
    async with serving(cash_settings(settings, bank)) as gateway:
        app = await cash_member(gateway, 10_000)
        account = await app.link()
        path, document, key = f"/v1/members/{app.member_id}/cashouts", {"points": 5_000, "bank_account_id": account["bank_account_id"]}, idem()
        answer = json.loads((await duplicates(n, lambda: from_the_app(gateway, app.member_id, app.token, path, document, key),
                                              marked=False)).raw)
        assert ("paid", (5_000, 0)) == (answer["state"], await app.wallet())
        assert (4_700, 1) == (bank.paid_total, len(bank.transfers))
        assert ["cashout", "cashout_paid"] == await journal_kinds(gateway, app)
        assert {"cashout:bank": 4_700, "fee:cashout": 300, "members_held": 0} == await books(gateway)


async def test_duplicate_exchanges_exchange_once(networks, n):
    """One points exchange to Taishin, sent n times at once: held and sent once, credited there once."""
    minji, wen = await enrolled(networks.home), await enrolled(networks.taishin)
    await credited(networks.home, minji, 20_000)
    path, key = f"/v1/members/{minji['member_id']}/exchanges", idem()
    document = {"partner": networks.partner_id, "partner_member_id": wen["member_id"], "points": 10_000}
    answer = json.loads((await duplicates(n, lambda: from_the_app(networks.home, minji["member_id"], minji["token"], path,
                                                                    document, key), marked=False)).raw)
    assert ("completed", 230) == (answer["state"], answer["received"])
    assert ((10_000, 0), (230, 0)) == (await exchange_balance(networks.home, minji), await exchange_balance(networks.taishin, wen))
    for side in (networks.home, networks.taishin):
        assert (await run_audit(side.app[STORE])).clean


async def test_duplicate_device_enrolments_enrol_one_device(gateway, n):
    """One device enrolment, sent n times at once under one key: the member gets one more device."""
    member, token = await wallet(gateway)
    path, key = f"/v1/members/{member.member_id}/devices", idem()
    answer = json.loads((await duplicates(n, lambda: from_the_app(gateway, member.member_id, token, path, {}, key),
                                          marked=False)).raw)
    assert {member.phone.slot, answer["device"]["slot"]} == {
        int(s) for s in await gateway.app[STORE].redis.smembers(keyspace.member_devices_key(member.member_id))}


async def test_concurrent_enrolments_stay_within_the_device_limit(gateway, n):
    """n enrolments at once (distinct requests) enrol at most DEVICES_PER_MEMBER_MAX devices in all;
    the rest are 409 too_many_devices."""
    member, token = await wallet(gateway)
    app = App(gateway, member.member_id, token, [])
    replies = await asyncio.gather(*(app.call("POST", f"/v1/members/{member.member_id}/devices", {}, idem())
                                     for _ in range(n)))
    enrolled_now = min(n, DEVICES_PER_MEMBER_MAX - 1)
    assert [201] * enrolled_now + [409] * (n - enrolled_now) == sorted(status for status, _ in replies)
    assert 1 + enrolled_now == await gateway.app[STORE].redis.scard(keyspace.member_devices_key(member.member_id))
