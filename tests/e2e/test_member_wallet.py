"""The member's wallet through HTTP, against real Redis: the event stream and
history (one event per movement, in order, also live over server-sent
events), expiring points (first-expiring-first, the expiry job, give-backs
into their lots) and the member's own spending limits."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import secrets
import time

from gateway import keyspace
from gateway.app import MEMBERS, STORE, TOKENS
from gateway.audit import run_audit
from gateway.ledger import expire_due
from gateway.tokens import Enrolment

from tests.e2e.conftest import Member
from tests.e2e.test_member_api import affiliate, enrol


async def wallet(gateway, points: int = 0) -> tuple[Member, str]:
    """A member enrolled through the app (so it has a bearer token), with `points` from an affiliate."""
    enrolled = await enrol(gateway)
    secret_b32 = enrolled["device"]["secret_b32"]
    secret = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    phone = Enrolment(enrolled["member_id"], enrolled["device"]["slot"], secret, enrolled["device"]["provisioning_uri"])
    member = Member(enrolled["member_id"], phone, gateway.app[TOKENS].home.prefix)
    if points:
        await gateway.ledger.credit(member.member_id, points, "affiliate:hana-card", "seed-" + member.member_id, "HMP")
    return member, enrolled["token"]


async def app_call(gateway, method: str, path: str, token: str, document=None):
    headers = {"Authorization": f"Bearer {token}"}
    async with gateway.session.request(method, gateway.base_url + path, json=document, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def journal_of(gateway, member_id: str) -> list[str]:
    """The entry ids of every journal entry that touches the member, in journal order."""
    partition = keyspace.partition_of_member(member_id)
    entries = await gateway.app[STORE].redis.xrange(keyspace.journal_key(partition))
    return [fields["entry"] for _, fields in entries if f'"member:{member_id}' in fields["postings"]]


async def events_of(gateway, member_id: str, token: str) -> list[dict]:
    status, page = await app_call(gateway, "GET", f"/v1/members/{member_id}/events?after=0&limit=100", token)
    assert 200 == status
    return page["events"]


def iso_in(seconds: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)).isoformat()


# -- events and history ------------------------------------------------------


async def test_every_movement_is_one_event_in_journal_order(gateway):
    """Earning, payments, a partial refund, a cancel, a reversal and an exchange-style hold and void:
    the member's stream has exactly one event per journal entry touching the wallet, in the same order,
    and the running balance in the events matches the wallet."""
    member, token = await wallet(gateway, 20_000)
    terminal = await gateway.terminal()
    card = await affiliate(gateway)
    status, _, _ = await card.send("POST", "/v1/earnings", {"member_id": member.member_id, "points": 3_000,
                                                             "affiliate_ref": "cashback-" + secrets.token_hex(4)})
    assert 201 == status
    _, first, _ = await terminal.pay(member.code(), 5_000)
    _, second, _ = await terminal.pay(member.code(), 4_000)
    assert ("approved", "approved") == (first["status"], second["status"])
    status, _, _ = await terminal.send("POST", f"/v1/payments/{first['payment_id']}/refunds",
                                       {"amount": 1_500, "reason": "one item back", **terminal.here()})
    assert 201 == status
    status, _, _ = await terminal.send("POST", f"/v1/payments/{second['payment_id']}/cancel", {**terminal.here()})
    assert 200 == status
    _, third, _ = await terminal.pay(member.code(), 2_000, order_ref="ord-lost-answer")
    status, reversal, _ = await terminal.send("POST", "/v1/reversals", {"order_ref": "ord-lost-answer", **terminal.here()})
    assert (200, "reversed") == (status, reversal["outcome"])
    await gateway.ledger.hold(member.member_id, 1_000, "h-1", "hold:h-1", "HMP", kind="exchange_hold")
    await gateway.ledger.void(member.member_id, "h-1", "void:h-1", kind="exchange_void")

    events = await events_of(gateway, member.member_id, token)
    assert await journal_of(gateway, member.member_id) == [e["entry_id"] for e in events]
    assert ["credit", "earning", "payment", "payment", "refund", "cancel", "payment", "reversal",
            "exchange_hold", "exchange_void"] == [e["kind"] for e in events]
    assert [20_000, 3_000, -5_000, -4_000, 1_500, 4_000, -2_000, 2_000, -1_000, 1_000] == [e["points"] for e in events]
    running = 0
    for event in events:
        running += event["points"]
        assert running == event["available_after"]
    assert running == await gateway.balance(member)
    payment = events[2]["details"]
    assert {"merchant_id": "gs25", "store_id": "gs25-gangnam-01", "amount": 5_000, "currency": "KRW",
            "payment_id": first["payment_id"]}.items() <= payment.items()
    assert payment["merchant_name"] and payment["store_name"]
    assert "hana-card" == events[1]["details"]["affiliate_id"]
    assert (await run_audit(gateway.app[STORE])).clean


async def test_history_pages_newest_first_and_events_resume_from_an_offset(gateway):
    member, token = await wallet(gateway, 10_000)
    terminal = await gateway.terminal()
    for amount in (100, 200, 300, 400):
        await terminal.pay(member.code(), amount)
    path = f"/v1/members/{member.member_id}"
    status, page = await app_call(gateway, "GET", f"{path}/history?limit=2", token)
    assert (200, [-400, -300]) == (status, [e["points"] for e in page["items"]])
    status, page = await app_call(gateway, "GET", f"{path}/history?limit=2&before={page['next_before']}", token)
    assert ([-200, -100], True) == ([e["points"] for e in page["items"]], page["next_before"] is not None)
    status, page = await app_call(gateway, "GET", f"{path}/history?limit=2&before={page['next_before']}", token)
    assert ([10_000], None) == ([e["points"] for e in page["items"]], page["next_before"])

    everything = await events_of(gateway, member.member_id, token)
    status, tail = await app_call(gateway, "GET", f"{path}/events?after={everything[2]['event_id']}", token)
    assert [-300, -400] == [e["points"] for e in tail["events"]]
    assert everything[-1]["event_id"] == tail["last_event_id"]
    status, empty = await app_call(gateway, "GET", f"{path}/events?after={tail['last_event_id']}", token)
    assert (200, [], tail["last_event_id"]) == (status, empty["events"], empty["last_event_id"])
    for bad in ("history?before=yesterday", "history?limit=0", "history?limit=101", "events?after=1-2-3", "events?limit=x"):
        status, problem = await app_call(gateway, "GET", f"{path}/{bad}", token)
        assert (422, "invalid_request") == (status, problem["code"]), bad


async def test_the_live_feed_shows_a_debit_as_it_happens_and_resumes_after_last_event_id(gateway):
    """The member's defence against a stolen code: the debit reaches the open feed within a second."""
    member, token = await wallet(gateway, 10_000)
    terminal = await gateway.terminal()
    url = f"{gateway.base_url}/v1/members/{member.member_id}/events/live"
    async with gateway.session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        assert (200, "text/event-stream") == (response.status, response.content_type)
        started = time.monotonic()
        _, sale, _ = await terminal.pay(member.code(), 2_500)
        frame = await asyncio.wait_for(_next_frame(response), 5)
        assert time.monotonic() - started < 2.5
    event = json.loads(frame["data"])
    assert ("payment", -2_500, sale["payment_id"]) == (frame["event"], event["points"], event["details"]["payment_id"])
    assert frame["id"] == event["event_id"]

    await terminal.pay(member.code(), 1_000)
    headers = {"Authorization": f"Bearer {token}", "Last-Event-ID": frame["id"]}
    async with gateway.session.get(url, headers=headers) as response:
        missed = json.loads((await asyncio.wait_for(_next_frame(response), 5))["data"])
    assert -1_000 == missed["points"]


async def _next_frame(response) -> dict[str, str]:
    frame: dict[str, str] = {}
    while True:
        line = (await response.content.readline()).decode().rstrip("\r\n")
        if not line:
            if "data" in frame:
                return frame
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        frame[name] = value.lstrip(" ")


async def test_a_member_reaches_only_their_own_events_history_and_settings(gateway):
    alice, alice_token = await wallet(gateway, 1_000)
    bob, bob_token = await wallet(gateway, 1_000)
    for method, path, document in (("GET", "history", None), ("GET", "events", None), ("GET", "events/live", None),
                                   ("PUT", "settings", {"daily_cap_points": 1}),
                                   ("POST", "confirmations", {"points": 10})):
        status, problem = await app_call(gateway, method, f"/v1/members/{alice.member_id}/{path}", bob_token, document)
        assert (404, "member_not_found") == (status, problem["code"]), path
        status, problem = await app_call(gateway, method, f"/v1/members/{alice.member_id}/{path}", "pgmt_000_" + "x" * 43,
                                         document)
        assert 401 == status, path
    status, mine = await app_call(gateway, "GET", f"/v1/members/{alice.member_id}/history", alice_token)
    assert (200, [1_000]) == (status, [e["points"] for e in mine["items"]])
    status, settings = await app_call(gateway, "GET", f"/v1/members/{alice.member_id}", alice_token)
    assert None is settings["settings"]["confirm_over_points"]


# -- expiring points -----------------------------------------------------------


async def test_expiring_points_are_spent_first_earliest_first_and_the_job_expires_the_rest(gateway):
    member, token = await wallet(gateway, 1_000)  # 1,000 points that never expire
    card = await affiliate(gateway)
    for points, seconds in ((2_000, 3600), (500, 1.5)):
        status, earning, _ = await card.send("POST", "/v1/earnings", {
            "member_id": member.member_id, "points": points, "affiliate_ref": "promo-" + secrets.token_hex(4),
            "expires_at": iso_in(seconds)})
        assert (201, True) == (status, earning["expires_at"] is not None)
    status, balance = await app_call(gateway, "GET", f"/v1/members/{member.member_id}", token)
    assert (3_500, 2_500, 500) == (balance["available"], balance["expiring"], balance["next_expiry"]["points"])

    terminal = await gateway.terminal()
    _, sale, _ = await terminal.pay(member.code(), 700)  # 500 soonest, then 200 of the hour-long lot
    assert "approved" == sale["status"]
    status, balance = await app_call(gateway, "GET", f"/v1/members/{member.member_id}", token)
    assert (2_800, 1_800, 1_800) == (balance["available"], balance["expiring"], balance["next_expiry"]["points"])

    # The sale is cancelled after the 500's expiry: they come back and expire at once.
    await asyncio.sleep(1.6)
    status, cancelled, _ = await terminal.send("POST", f"/v1/payments/{sale['payment_id']}/cancel", {**terminal.here()})
    assert 200 == status
    status, balance = await app_call(gateway, "GET", f"/v1/members/{member.member_id}", token)
    assert (3_000, 2_000) == (balance["available"], balance["expiring"])
    kinds = [(e["kind"], e["points"]) for e in await events_of(gateway, member.member_id, token)]
    assert [("cancel", 700), ("expiry", -500)] == kinds[-2:]
    assert 0 == await expire_due(gateway.app[STORE])  # nothing left that is due
    assert (await run_audit(gateway.app[STORE])).clean


async def test_the_expiry_job_expires_each_lot_once_even_when_run_concurrently(gateway):
    members = [(await wallet(gateway, 100))[0] for _ in range(4)]
    card = await affiliate(gateway)
    for member in members:
        await card.send("POST", "/v1/earnings", {"member_id": member.member_id, "points": 250,
                                                 "affiliate_ref": "short-" + secrets.token_hex(4), "expires_at": iso_in(1)})
    await asyncio.sleep(1.2)
    store = gateway.app[STORE]
    expired = await asyncio.gather(*(expire_due(store) for _ in range(5)))
    assert 4 * 250 == sum(expired)
    assert [100] * 4 == [await gateway.balance(m) for m in members]
    assert (await run_audit(store)).clean
    totals = (await run_audit(store)).totals_by_unit()["HMP"]
    assert totals.get("expired:points", 0) >= 1_000


async def test_an_expired_lot_cannot_be_spent_even_before_the_job_runs(gateway):
    member, _ = await wallet(gateway)
    card = await affiliate(gateway)
    await card.send("POST", "/v1/earnings", {"member_id": member.member_id, "points": 800,
                                             "affiliate_ref": "flash-" + secrets.token_hex(4), "expires_at": iso_in(1)})
    await asyncio.sleep(1.2)
    _, sale, _ = await (await gateway.terminal()).pay(member.code(), 500)
    assert ("declined", "insufficient_points") == (sale["status"], sale["decline"]["code"])
    assert 0 == await gateway.balance(member)


async def test_a_bad_expiry_is_refused_and_nothing_is_credited(gateway):
    member, _ = await wallet(gateway)
    card = await affiliate(gateway)
    for expires_at in (iso_in(-60), iso_in(11 * 366 * 86400), "2027-01-01T00:00:00", "soon"):
        status, problem, _ = await card.send("POST", "/v1/earnings", {
            "member_id": member.member_id, "points": 10, "affiliate_ref": "bad-" + secrets.token_hex(4),
            "expires_at": expires_at})
        assert (422, "invalid_request") == (status, problem["code"]), expires_at
    assert 0 == await gateway.balance(member)


async def test_a_partial_refund_gives_back_points_without_expiry_first(gateway):
    member, token = await wallet(gateway, 300)
    card = await affiliate(gateway)
    await card.send("POST", "/v1/earnings", {"member_id": member.member_id, "points": 700,
                                             "affiliate_ref": "lot-" + secrets.token_hex(4), "expires_at": iso_in(3600)})
    terminal = await gateway.terminal()
    _, sale, _ = await terminal.pay(member.code(), 1_000)  # 700 from the lot, 300 without expiry
    status, _, _ = await terminal.send("POST", f"/v1/payments/{sale['payment_id']}/refunds",
                                       {"amount": 400, "reason": "", **terminal.here()})
    assert 201 == status
    status, balance = await app_call(gateway, "GET", f"/v1/members/{member.member_id}", token)
    assert (400, 100) == (balance["available"], balance["expiring"])  # 300 without expiry, then 100 into the lot
    status, _, _ = await terminal.send("POST", f"/v1/payments/{sale['payment_id']}/refunds",
                                       {"amount": 600, "reason": "", **terminal.here()})
    status, balance = await app_call(gateway, "GET", f"/v1/members/{member.member_id}", token)
    assert (1_000, 700) == (balance["available"], balance["expiring"])
    assert (await run_audit(gateway.app[STORE])).clean


# -- the member's own limits -------------------------------------------------------


async def test_above_the_confirmation_threshold_a_payment_needs_the_members_approval_once(gateway):
    member, token = await wallet(gateway, 100_000)
    terminal = await gateway.terminal()
    status, settings = await app_call(gateway, "PUT", f"/v1/members/{member.member_id}/settings", token,
                                      {"confirm_over_points": 30_000})
    assert (200, 30_000) == (status, settings["confirm_over_points"])
    _, small, _ = await terminal.pay(member.code(), 30_000)
    _, big, _ = await terminal.pay(member.code(), 45_000)
    assert ("approved", "confirmation_required") == (small["status"], big["decline"]["code"])
    assert "app" in big["decline"]["message"]

    status, approval = await app_call(gateway, "POST", f"/v1/members/{member.member_id}/confirmations", token,
                                      {"points": 50_000})
    assert 201 == status
    _, approved, _ = await terminal.pay(member.code(), 45_000)
    _, again, _ = await terminal.pay(member.code(), 45_000)
    assert ("approved", "confirmation_required") == (approved["status"], again["decline"]["code"])
    assert 100_000 - 30_000 - 45_000 == await gateway.balance(member)


async def test_the_members_daily_cap_declines_beyond_it_and_cannot_exceed_the_wallets(gateway):
    member, token = await wallet(gateway, 100_000)
    terminal = await gateway.terminal()
    status, settings = await app_call(gateway, "PUT", f"/v1/members/{member.member_id}/settings", token,
                                      {"daily_cap_points": 10_000})
    assert (200, 10_000) == (status, settings["daily_cap_points"])
    _, first, _ = await terminal.pay(member.code(), 8_000)
    _, second, _ = await terminal.pay(member.code(), 3_000)
    assert ("approved", "limit_exceeded") == (first["status"], second["decline"]["code"])
    maximum = gateway.app[MEMBERS].settings.member_daily_points_max
    status, problem = await app_call(gateway, "PUT", f"/v1/members/{member.member_id}/settings", token,
                                     {"daily_cap_points": maximum + 1})
    assert (422, "invalid_request") == (status, problem["code"])
    status, settings = await app_call(gateway, "PUT", f"/v1/members/{member.member_id}/settings", token, {})
    assert (200, maximum, None) == (status, settings["daily_cap_points"], settings["confirm_over_points"])
    _, third, _ = await terminal.pay(member.code(), 3_000)
    assert "approved" == third["status"]


async def test_live_feeds_beyond_the_cap_are_refused_and_payments_keep_their_connections(settings, store):
    """Two feeds allowed: the third is 503 live_feeds_busy; with both open a sale still goes through
    (the feeds wait on their own Redis connections), and closing one lets a new one in."""
    import dataclasses

    from tests.e2e.conftest import serving

    async with serving(dataclasses.replace(settings, live_feeds_max=2)) as gateway:
        member, token = await wallet(gateway, 10_000)
        url = f"{gateway.base_url}/v1/members/{member.member_id}/events/live"
        headers = {"Authorization": f"Bearer {token}"}
        first = await gateway.session.get(url, headers=headers)
        second = await gateway.session.get(url, headers=headers)
        async with gateway.session.get(url, headers=headers) as third:
            assert (503, "live_feeds_busy") == (third.status, (await third.json(content_type=None))["code"])
        _, sale, _ = await (await gateway.terminal()).pay(member.code(), 1_000)
        assert "approved" == sale["status"]
        assert -1_000 == json.loads((await asyncio.wait_for(_next_frame(first), 5))["data"])["points"]
        first.close()
        for _ in range(30):  # the server notices the hang-up within one blocking read
            async with gateway.session.get(url, headers=headers) as again:
                if again.status == 200:
                    break
            await asyncio.sleep(0.1)
        assert 200 == again.status
        second.close()
