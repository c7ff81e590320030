"""Cash-out through HTTP: a real gateway on real Redis, and the bank simulator over real HTTP.

Every scenario checks where the money went on both sides: the member's
wallet, the journal (cashout:bank and fee:cashout), and what the bank paid.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import pytest

from gateway import keyspace
from gateway.app import CASHOUTS, STORE, TOKENS
from gateway.audit import read_journal, run_audit
from gateway.openapi import openapi_document
from gateway.settings import load_settings
from simulators.bank import Bank
from tests.e2e.conftest import Gateway, serving

API_KEY = "bank-test-key-" + "a1b2c3d4e5f6"
MIN_POINTS, FEE_POINTS = 1_000, 300
HANA, ACCOUNT, CLOSED = "081", "1234567890123", "9990001112223"
BANK_TIMEOUT_S, SLOW_DELAY_S = 0.3, 0.6  # the slow bank answers well after the gateway stopped waiting
SETTLE_DEADLINE_S = 5.0


@pytest.fixture
async def bank():
    async with Bank(api_key=API_KEY, closed_accounts=[CLOSED], slow_delay_s=SLOW_DELAY_S) as running:
        yield running


def cash_settings(settings, bank: Bank, **changes: Any):
    """Cash-out to the bank simulator, short bank timeouts and a fast resolver."""
    values = dict(redis_url=settings.redis_url, redis_cluster_nodes=list(settings.redis_cluster_nodes),
                  keyring_path=settings.keyring_path, data_dir=settings.data_dir,
                  bank_url=bank.url, bank_api_key=API_KEY, bank_timeout_s=BANK_TIMEOUT_S, bank_resolve_interval_s=0.05,
                  cashout_min_points=MIN_POINTS, cashout_fee_points=FEE_POINTS)
    return load_settings(env={}, **(values | changes))


@pytest.fixture
async def gateway(settings, store, bank):
    async with serving(cash_settings(settings, bank)) as running:
        yield running


@dataclass
class App:
    """A member's phone app: its token, and the member API calls cash-out needs."""

    gateway: Gateway
    member_id: str
    token: str
    seen: list[bytes]

    async def call(self, method: str, path: str, body: Any = None, key: str | None = None,
                   token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        async with self.gateway.session.request(method, self.gateway.base_url + path, headers=headers,
                                                json=body) as response:
            raw = await response.read()
            self.seen.append(raw)
            return response.status, json.loads(raw) if raw else None

    async def link(self, number: str = ACCOUNT, bank_code: str = HANA, holder: str = "김민지") -> dict[str, Any]:
        status, account = await self.call("POST", f"/v1/members/{self.member_id}/bank-accounts",
                                          {"bank_code": bank_code, "account_number": number, "holder_name": holder})
        assert status in (200, 201), account
        return account

    async def cash_out(self, points: int, bank_account_id: str, key: str | None = None) -> tuple[int, Any]:
        return await self.call("POST", f"/v1/members/{self.member_id}/cashouts",
                               {"points": points, "bank_account_id": bank_account_id}, key or "co-" + secrets.token_hex(8))

    async def cashout(self, cashout_id: str) -> dict[str, Any]:
        status, cashout = await self.call("GET", f"/v1/members/{self.member_id}/cashouts/{cashout_id}")
        assert 200 == status, cashout
        return cashout

    async def settled(self, cashout_id: str) -> dict[str, Any]:
        """The cash-out once the background resolver has brought it out of pending."""
        deadline = time.monotonic() + SETTLE_DEADLINE_S
        while True:
            cashout = await self.cashout(cashout_id)
            if cashout["state"] != "pending" or time.monotonic() > deadline:
                return cashout
            await asyncio.sleep(0.05)

    async def wallet(self) -> tuple[int, int]:
        balance = await self.gateway.ledger.balance(self.member_id)
        return balance.available, balance.held


async def member(gateway: Gateway, points: int = 0) -> App:
    async with gateway.session.post(gateway.base_url + "/v1/members", json={}) as response:
        enrolled = await response.json()
    if points:
        await gateway.ledger.credit(enrolled["member_id"], points, "affiliate:hana-card", "seed-" + enrolled["member_id"],
                                    gateway.app[TOKENS].home.points_unit)
    return App(gateway, enrolled["member_id"], enrolled["token"], [])


async def journal_kinds(gateway: Gateway, app: App) -> list[str]:
    entries = await read_journal(gateway.app[STORE], keyspace.partition_of_member(app.member_id))
    return [e.kind for e in entries if e.kind.startswith("cashout")]


async def books(gateway: Gateway) -> dict[str, int]:
    """The audit is clean; the totals of the accounts cash-out touches."""
    report = await run_audit(gateway.app[STORE])
    assert [] == report.problems
    totals = report.totals_by_unit().get("HMP", {})
    return {k: totals.get(k, 0) for k in ("cashout:bank", "fee:cashout", "members_held")}


# -- the bank answers ---------------------------------------------------------------


async def test_paid_cashout_takes_the_points_once_and_pays_the_bank_points_less_fee(gateway, bank):
    """A completed transfer: the wallet is down by the points, the bank paid points - fee once, the journal says where."""
    app = await member(gateway, 10_000)
    account = await app.link()
    status, cashout = await app.cash_out(5_000, account["bank_account_id"])
    assert (201, "paid", 5_000, FEE_POINTS, 4_700, "KRW") == (
        status, cashout["state"], cashout["points"], cashout["fee_points"], cashout["amount"], cashout["currency"])
    assert (5_000, 0) == await app.wallet()
    assert (4_700, 1) == (bank.paid_to(HANA, ACCOUNT), len(bank.transfers))
    assert {"cashout:bank": 4_700, "fee:cashout": FEE_POINTS, "members_held": 0} == await books(gateway)
    assert ["cashout", "cashout_paid"] == await journal_kinds(gateway, app)


async def test_rejected_transfer_gives_the_points_back(gateway, bank):
    """A closed account: the cash-out fails with the bank's reason, the points are back, the bank paid nothing."""
    app = await member(gateway, 10_000)
    account = await app.link(CLOSED)
    status, cashout = await app.cash_out(5_000, account["bank_account_id"])
    assert (201, "failed", "account_closed") == (status, cashout["state"], cashout["reason"])
    assert (10_000, 0) == await app.wallet()
    assert (0, 0) == (bank.paid_total, (await books(gateway))["cashout:bank"])
    assert ["cashout", "cashout_failed"] == await journal_kinds(gateway, app)


async def test_bank_rejecting_by_its_control_switch_fails_the_cashout(gateway, bank):
    """The bank switched to reject (over its HTTP control) refuses with the reason it was given; nothing is paid."""
    app = await member(gateway, 10_000)
    account = await app.link()
    async with gateway.session.post(bank.url + "/_control", json={"mode": "reject", "times": 1, "reason": "account_frozen"}):
        pass
    _, failed = await app.cash_out(5_000, account["bank_account_id"])
    _, paid = await app.cash_out(2_000, account["bank_account_id"])
    assert ("failed", "account_frozen", "paid") == (failed["state"], failed["reason"], paid["state"])
    assert (8_000, 1_700) == ((await app.wallet())[0], bank.paid_total)


# -- the bank's answer is lost ---------------------------------------------------------


async def test_timeout_then_answer_is_found_by_lookup_and_paid_once(gateway, bank):
    """The bank pays but answers after the gateway's timeout: 202 pending with the points held, then the lookup finds it paid."""
    app = await member(gateway, 10_000)
    account = await app.link()
    bank.set_mode("slow", times=1)
    status, pending = await app.cash_out(5_000, account["bank_account_id"])
    held = await app.wallet()
    paid = await app.settled(pending["cashout_id"])
    assert (202, "pending", (5_000, 5_000)) == (status, pending["state"], held)
    assert ("paid", (5_000, 0)) == (paid["state"], await app.wallet())
    assert (4_700, 1) == (bank.paid_total, bank.requests.count(("POST", pending["cashout_id"])))
    assert ["cashout", "cashout_paid"] == await journal_kinds(gateway, app)


async def test_dropped_request_is_looked_up_then_sent_again_and_paid_once(gateway, bank):
    """The request is lost before the bank records it: the lookup says 404, the same transfer is sent again, paid once."""
    app = await member(gateway, 10_000)
    account = await app.link()
    bank.set_mode("drop", times=1)
    status, pending = await app.cash_out(5_000, account["bank_account_id"])
    paid = await app.settled(pending["cashout_id"])
    cashout_id = pending["cashout_id"]
    assert (202, "paid") == (status, paid["state"])
    assert [("POST", cashout_id), ("GET", cashout_id), ("POST", cashout_id)] == bank.requests[:3]
    assert (4_700, 1, (5_000, 0)) == (bank.paid_total, len(bank.transfers), await app.wallet())


async def test_bank_down_keeps_the_cashout_pending_until_it_is_back(gateway, bank):
    """Bank down (503): pending with the points held for as long as it is down, then paid once when it is back."""
    app = await member(gateway, 10_000)
    account = await app.link()
    bank.set_mode("down")
    status, pending = await app.cash_out(5_000, account["bank_account_id"])
    await asyncio.sleep(0.4)  # several resolver rounds meet the bank down
    still = await app.cashout(pending["cashout_id"])
    held = await app.wallet()
    bank.set_mode("ok")
    paid = await app.settled(pending["cashout_id"])
    assert (202, "pending", (5_000, 5_000)) == (status, still["state"], held)
    assert ("paid", 4_700, (5_000, 0)) == (paid["state"], bank.paid_total, await app.wallet())
    assert ["cashout", "cashout_paid"] == await journal_kinds(gateway, app)


async def test_a_finished_cashout_left_in_the_pending_set_is_taken_out_and_paid_once(gateway, bank):
    """A crash between writing the paid cash-out and updating the pending set: the resolver takes it out of
    the set and asks the bank nothing more."""
    app = await member(gateway, 10_000)
    account = await app.link()
    _, paid = await app.cash_out(5_000, account["bank_account_id"])
    item = f"{app.member_id}/{paid['cashout_id']}"
    await gateway.app[STORE].redis.sadd(keyspace.CASHOUTS_PENDING_KEY, item)
    asked = len(bank.requests)
    await gateway.app[CASHOUTS].resolve_pending()
    listed = await gateway.app[STORE].redis.sismember(keyspace.CASHOUTS_PENDING_KEY, item)
    assert ("paid", 0, asked, 4_700) == (paid["state"], listed, len(bank.requests), bank.paid_total)


async def test_a_retry_of_a_pending_cashout_resolves_it_too(settings, store, bank):
    """With no resolver round due, the member's retry under the same key looks the transfer up and finishes it."""
    async with serving(cash_settings(settings, bank, bank_resolve_interval_s=3600.0)) as gateway:
        app = await member(gateway, 10_000)
        account = await app.link()
        bank.set_mode("slow", times=1)
        _, pending = await app.cash_out(5_000, account["bank_account_id"], key="retry-pending-1")
        meanwhile = await app.cashout(pending["cashout_id"])
        status, again = await app.cash_out(5_000, account["bank_account_id"], key="retry-pending-1")
    assert ("pending", 201, "paid", pending["cashout_id"]) == (meanwhile["state"], status, again["state"], again["cashout_id"])
    assert (4_700, 1) == (bank.paid_total, bank.requests.count(("POST", pending["cashout_id"])))


# -- refused before anything moves ----------------------------------------------------------


async def test_below_minimum_and_insufficient_points_move_nothing(gateway, bank):
    """Below the minimum is 422, more than the balance is 409 (again on retry); nothing is held, listed or paid."""
    app = await member(gateway, 10_000)
    account = await app.link()
    s1, low = await app.cash_out(MIN_POINTS - 1, account["bank_account_id"])
    s2, short = await app.cash_out(10_001, account["bank_account_id"], key="too-much-0001")
    s3, again = await app.cash_out(10_001, account["bank_account_id"], key="too-much-0001")
    _, listing = await app.call("GET", f"/v1/members/{app.member_id}/cashouts")
    assert [(422, "cashout_below_minimum"), (409, "insufficient_points_for_cashout"), (409, "insufficient_points_for_cashout")] == [
        (s1, low["code"]), (s2, short["code"]), (s3, again["code"])]
    assert ((10_000, 0), [], 0, []) == (await app.wallet(), listing["cashouts"], bank.paid_total, bank.requests)
    assert [] == await journal_kinds(gateway, app)


async def test_unknown_bank_account_and_missing_key_are_refused(gateway, bank):
    """An account id the member never linked is 404; a cash-out without Idempotency-Key is 400."""
    app = await member(gateway, 10_000)
    s1, unknown = await app.cash_out(5_000, "ba_0000000000000000")
    s2, keyless = await app.call("POST", f"/v1/members/{app.member_id}/cashouts",
                                 {"points": 5_000, "bank_account_id": "ba_0000000000000000"})
    assert [(404, "bank_account_not_found"), (400, "idempotency_key_missing")] == [(s1, unknown["code"]), (s2, keyless["code"])]
    assert (10_000, 0) == await app.wallet()


async def test_without_a_bank_cashout_is_unavailable(settings, store):
    """A gateway with no bank_url answers 503 bank_unavailable and holds nothing."""
    async with serving(settings) as plain:
        app = await member(plain, 10_000)
        account = await app.link()
        status, problem = await app.cash_out(5_000, account["bank_account_id"])
        assert (503, "bank_unavailable", True) == (status, problem["code"], problem["retryable"])
        assert (10_000, 0) == await app.wallet()


# -- idempotency -------------------------------------------------------------------------


async def test_retry_with_the_same_key_returns_the_same_cashout(gateway, bank):
    """The same key and body again: the same cash-out, the points taken and the bank paid once."""
    app = await member(gateway, 10_000)
    account = await app.link()
    first = await app.cash_out(5_000, account["bank_account_id"], key="same-key-0001")
    second = await app.cash_out(5_000, account["bank_account_id"], key="same-key-0001")
    assert first == second and "paid" == first[1]["state"]
    assert ((5_000, 0), 4_700, 1) == (await app.wallet(), bank.paid_total, len(bank.requests))


async def test_concurrent_duplicates_under_one_key_make_one_cashout(gateway, bank):
    """Ten copies at once: one cash-out; the others see it or are told it is in progress; paid once."""
    app = await member(gateway, 10_000)
    account = await app.link()
    answers = await asyncio.gather(*(app.cash_out(5_000, account["bank_account_id"], key="dup-key-0001") for _ in range(10)))
    final = await app.cash_out(5_000, account["bank_account_id"], key="dup-key-0001")
    ids = {a[1]["cashout_id"] for a in answers if a[0] in (201, 202)}
    codes = {a[1]["code"] for a in answers if a[0] == 409}
    assert {s for s, _ in answers} <= {201, 202, 409} and codes <= {"idempotency_in_progress"}
    assert ({final[1]["cashout_id"]}, "paid") == (ids, final[1]["state"])
    assert ((5_000, 0), 4_700, 1) == (await app.wallet(), bank.paid_total, len(bank.transfers))
    assert ["cashout", "cashout_paid"] == await journal_kinds(gateway, app)


async def test_another_body_under_the_same_key_is_a_mismatch(gateway, bank):
    """Other points or another account under a used key is 422 idempotency_mismatch and moves nothing more."""
    app = await member(gateway, 20_000)
    account, other = await app.link(), await app.link("5550001112223")
    await app.cash_out(5_000, account["bank_account_id"], key="mismatch-0001")
    s1, p1 = await app.cash_out(6_000, account["bank_account_id"], key="mismatch-0001")
    s2, p2 = await app.cash_out(5_000, other["bank_account_id"], key="mismatch-0001")
    assert [(422, "idempotency_mismatch")] * 2 == [(s1, p1["code"]), (s2, p2["code"])]
    assert ((15_000, 0), 4_700) == (await app.wallet(), bank.paid_total)


# -- members and their accounts ----------------------------------------------------------------


async def test_members_reach_only_their_own_cashouts_and_accounts(gateway, bank):
    """Member B on A's routes gets 404 member_not_found; A's account id on B's route is 404; no token is 401."""
    a, b = await member(gateway, 10_000), await member(gateway, 10_000)
    account = await a.link()
    _, cashout = await a.cash_out(5_000, account["bank_account_id"])
    base = f"/v1/members/{a.member_id}"
    attempts = [
        await b.call("GET", base + "/bank-accounts"),
        await b.call("POST", base + "/bank-accounts", {"bank_code": HANA, "account_number": "7770001112223", "holder_name": "B"}),
        await b.call("POST", base + "/cashouts", {"points": 5_000, "bank_account_id": account["bank_account_id"]}, "b-key-0001"),
        await b.call("GET", base + "/cashouts"),
        await b.call("GET", base + f"/cashouts/{cashout['cashout_id']}"),
    ]
    assert [(404, "member_not_found")] * 5 == [(s, d["code"]) for s, d in attempts]
    s, own = await b.cash_out(5_000, account["bank_account_id"])
    assert (404, "bank_account_not_found") == (s, own["code"])
    s, nobody = await a.call("GET", base + "/cashouts", token="pgmt_000_" + "x" * 43)
    assert (401, "unauthorized") == (s, nobody["code"])
    assert ((5_000, 0), (10_000, 0), 4_700) == (await a.wallet(), await b.wallet(), bank.paid_total)


async def test_accounts_list_masked_and_linking_twice_answers_the_first(gateway, bank):
    """Linked accounts show the last four digits only; the same number again is the same account (200)."""
    app = await member(gateway)
    first = await app.link()
    status, again = await app.call("POST", f"/v1/members/{app.member_id}/bank-accounts",
                                   {"bank_code": HANA, "account_number": ACCOUNT, "holder_name": "김민지"})
    _, listing = await app.call("GET", f"/v1/members/{app.member_id}/bank-accounts")
    assert ("*********0123", 200, first) == (first["account_number_masked"], status, again)
    assert [first] == listing["bank_accounts"]


async def test_one_account_linked_five_times_at_once_is_linked_once(gateway, bank):
    """Concurrent links of the same bank account: one creates it (201), the others answer it (200)."""
    app = await member(gateway)
    path, body = f"/v1/members/{app.member_id}/bank-accounts", {"bank_code": HANA, "account_number": ACCOUNT,
                                                                 "holder_name": "김민지"}
    answers = await asyncio.gather(*(app.call("POST", path, body) for _ in range(5)))
    _, listing = await app.call("GET", path)
    assert ([200] * 4 + [201], 1) == (sorted(status for status, _ in answers), len(listing["bank_accounts"]))
    assert {listing["bank_accounts"][0]["bank_account_id"]} == {account["bank_account_id"] for _, account in answers}


async def test_a_member_links_at_most_five_accounts(gateway, bank):
    """The sixth account is 409 too_many_bank_accounts."""
    app = await member(gateway)
    for n in range(5):
        await app.link(f"10000000{n}")
    status, problem = await app.call("POST", f"/v1/members/{app.member_id}/bank-accounts",
                                     {"bank_code": HANA, "account_number": "100000009", "holder_name": "김민지"})
    assert (409, "too_many_bank_accounts") == (status, problem["code"])


async def test_bad_account_details_are_invalid_request(gateway, bank):
    """A bank code that is not three digits, a number with hyphens, an empty holder or an extra field: 422."""
    app = await member(gateway)
    good = {"bank_code": HANA, "account_number": ACCOUNT, "holder_name": "김민지"}
    bad = [dict(good, bank_code="81"), dict(good, account_number="123-456-789"), dict(good, holder_name=""),
           dict(good, colour="blue"), {"bank_code": HANA}]
    answers = [await app.call("POST", f"/v1/members/{app.member_id}/bank-accounts", body) for body in bad]
    assert [(422, "invalid_request")] * 5 == [(s, d["code"]) for s, d in answers]


async def test_list_is_newest_first(gateway, bank):
    """Two cash-outs list newest first, with their states."""
    app = await member(gateway, 20_000)
    account, closed = await app.link(), await app.link(CLOSED)
    _, first = await app.cash_out(5_000, account["bank_account_id"])
    await asyncio.sleep(0.002)
    _, second = await app.cash_out(5_000, closed["bank_account_id"])
    _, listing = await app.call("GET", f"/v1/members/{app.member_id}/cashouts?limit=10")
    assert [(second["cashout_id"], "failed"), (first["cashout_id"], "paid")] == [
        (c["cashout_id"], c["state"]) for c in listing["cashouts"]]


async def test_account_numbers_never_appear_unmasked(gateway, bank, caplog):
    """Neither responses, nor any log line, nor any value stored in Redis carry a full account number."""
    caplog.set_level(logging.DEBUG)
    app = await member(gateway, 30_000)
    account, closed = await app.link(), await app.link(CLOSED)
    await app.call("GET", f"/v1/members/{app.member_id}/bank-accounts")
    await app.cash_out(5_000, account["bank_account_id"])
    await app.cash_out(5_000, closed["bank_account_id"])
    bank.set_mode("drop", times=1)
    _, pending = await app.cash_out(5_000, account["bank_account_id"])
    await app.settled(pending["cashout_id"])
    await app.call("GET", f"/v1/members/{app.member_id}/cashouts")
    redis = gateway.app[STORE].redis
    stored = []
    for key in await redis.keys("pg:*"):
        kind = await redis.type(key)
        if kind == "string":
            stored.append(await redis.get(key))
        elif kind == "hash":
            stored.extend((await redis.hgetall(key)).values())
        elif kind == "stream":
            stored.extend(json.dumps(fields) for _, fields in await redis.xrange(key))
    logs = caplog.text + "".join(r.getMessage() for r in caplog.records)
    everything = b"".join(app.seen).decode() + logs + "".join(stored)
    assert 9_400 == bank.paid_total  # the account really was paid, twice, to the full number
    assert (False, False) == (ACCOUNT in everything, CLOSED in everything)
    assert "*********0123" in everything


async def test_key_rotation_reencrypts_account_numbers(gateway, bank):
    """After a keyring rotation the account numbers are under the new key and a cash-out still pays the right account."""
    app = await member(gateway, 10_000)
    account = await app.link()
    cashouts, keyring = gateway.app[CASHOUTS], gateway.app[TOKENS].keyring
    old = keyring.active
    keyring.rotate()
    changed = await cashouts.reencrypt()
    in_use = await cashouts.keyring_keys_in_use()
    keyring.retire(old)
    _, cashout = await app.cash_out(5_000, account["bank_account_id"])
    assert (1, {keyring.active: 1}, "paid", 4_700) == (changed, in_use, cashout["state"], bank.paid_to(HANA, ACCOUNT))


async def test_responses_fit_the_openapi_document(gateway, bank):
    """A linked account, a paid, a pending and a failed cash-out and a list validate against the documented schemas."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    document = openapi_document()
    registry = Registry().with_resource("urn:doc", Resource.from_contents(document, default_specification=DRAFT202012))

    def check(method: str, path: str, status: int, value: Any) -> list[str]:
        schema = document["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
        validator = jsonschema.Draft202012Validator({"$ref": "urn:doc" + schema["$ref"]}, registry=registry)
        return [e.message for e in validator.iter_errors(value)]

    app = await member(gateway, 20_000)
    base = "/v1/members/{member_id}"
    account, closed = await app.link(), await app.link(CLOSED)
    _, paid = await app.cash_out(5_000, account["bank_account_id"])
    _, failed = await app.cash_out(5_000, closed["bank_account_id"])
    bank.set_mode("down", times=1)
    status, pending = await app.cash_out(5_000, account["bank_account_id"])
    _, listing = await app.call("GET", f"/v1/members/{app.member_id}/cashouts")
    _, accounts = await app.call("GET", f"/v1/members/{app.member_id}/bank-accounts")
    errors = (check("post", base + "/bank-accounts", 201, account) + check("post", base + "/cashouts", 201, paid)
              + check("post", base + "/cashouts", 201, failed) + check("post", base + "/cashouts", status, pending)
              + check("get", base + "/cashouts", 200, listing) + check("get", base + "/bank-accounts", 200, accounts))
    assert ([], 202) == (errors, status)
    assert set(document["components"]["schemas"]["Cashout"]["properties"]) == set(paid)


# -- after all of it ------------------------------------------------------------------


async def test_books_balance_after_every_kind_of_outcome(gateway, bank):
    """Paid, rejected, timed out, dropped and down-then-back cash-outs: audit clean, nothing held, every point accounted for."""
    app = await member(gateway, 50_000)
    account, closed = await app.link(), await app.link(CLOSED)
    await app.cash_out(5_000, account["bank_account_id"])
    await app.cash_out(5_000, closed["bank_account_id"])
    pending = []
    for mode in ("slow", "drop", "down"):
        bank.set_mode(mode, times=1)
        pending.append((await app.cash_out(5_000, account["bank_account_id"]))[1]["cashout_id"])
    states = [(await app.settled(cashout_id))["state"] for cashout_id in pending]
    assert ["paid"] * 3 == states
    assert {"cashout:bank": 4 * 4_700, "fee:cashout": 4 * FEE_POINTS, "members_held": 0} == await books(gateway)
    assert ((30_000, 0), 4 * 4_700) == (await app.wallet(), bank.paid_to(HANA, ACCOUNT))
    assert 0 == await gateway.app[STORE].redis.scard(keyspace.CASHOUTS_PENDING_KEY)


# -- the bank simulator itself -------------------------------------------------------------


async def test_bank_simulator_authenticates_validates_and_is_idempotent(bank):
    """Wrong key 401, bad input 400, same id again the same answer, same id other body 409, unknown id 404."""
    from aiohttp import ClientSession

    transfer = {"transfer_id": "t-1", "amount": 1_000, "currency": "KRW",
                "account": {"bank_code": HANA, "account_number": ACCOUNT, "holder_name": "김민지"}}
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with ClientSession() as session:
        async def post(body, headers=auth):
            async with session.post(bank.url + "/v1/transfers", json=body, headers=headers) as r:
                return r.status, await r.json(content_type=None)

        wrong = await post(transfer, {"Authorization": "Bearer nope"})
        bad = await post(dict(transfer, amount=0))
        first, again = await post(transfer), await post(transfer)
        other = await post(dict(transfer, amount=2_000))
        async with session.get(bank.url + "/v1/transfers/t-unknown", headers=auth) as r:
            unknown = r.status
    assert [401, 400, 201, 201, 409, 404] == [wrong[0], bad[0], first[0], again[0], other[0], unknown]
    assert (first[1], "transfer_id_in_use", 1_000) == (again[1], other[1]["code"], bank.paid_total)
