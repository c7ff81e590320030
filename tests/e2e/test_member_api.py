"""The member API and affiliate earnings through HTTP, against real Redis."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import secrets

import zxingcpp
from PIL import Image

from gateway import codes, keyspace
from gateway.app import MEMBERS, MERCHANTS, STORE
from gateway.audit import run_audit
from gateway.members import DEVICES_PER_MEMBER_MAX
from tests.e2e.pay_steps import lost_after


async def enrol(gateway) -> dict:
    async with gateway.session.post(gateway.base_url + "/v1/members", json={}) as response:
        assert 201 == response.status
        return await response.json()


async def member_get(gateway, path: str, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with gateway.session.get(gateway.base_url + path, headers=headers) as response:
        body = await response.read()
        return response.status, (await response.json(content_type=None) if response.content_type.endswith("json") else body)


async def affiliate(gateway, affiliate_id: str = "hana-card"):
    return await gateway.terminal(affiliate_id, key=await gateway.app[MERCHANTS].issue_key(affiliate_id))


async def earn(terminal, member_id: str, points: int, ref: str | None = None, key: str | None = None):
    return await terminal.send("POST", "/v1/earnings", {"member_id": member_id, "points": points,
                                                         "affiliate_ref": ref or "ref-" + secrets.token_hex(6)}, key)


async def test_enrolment_gives_a_token_a_device_and_an_empty_wallet(gateway):
    """A new member gets a bearer token and a device secret once, and a zero balance."""
    enrolled = await enrol(gateway)
    status, balance = await member_get(gateway, f"/v1/members/{enrolled['member_id']}", enrolled["token"])
    assert (200, 0, "HMP") == (status, balance["available"], balance["unit"])
    assert enrolled["token"].startswith("pgmt_") and len(enrolled["device"]["secret_b32"]) >= 52


async def test_online_codes_are_what_the_phone_computes(gateway):
    """Three online codes are distinct and equal the phone's offline codes for seq 0, 1, 2."""
    import base64
    import time

    enrolled = await enrol(gateway)
    slot = enrolled["device"]["slot"]
    secret = base64.b32decode(enrolled["device"]["secret_b32"] + "=" * (-len(enrolled["device"]["secret_b32"]) % 8))
    status, listing = await member_get(gateway, f"/v1/members/{enrolled['member_id']}/devices/{slot}/codes?count=3",
                                       enrolled["token"])
    listed = listing["codes"]
    expected = [codes.encode_code("9410", slot, c["seq"], secret, c["step"]) for c in listed]
    assert (200, [0, 1, 2], 3) == (status, [c["seq"] for c in listed], len({c["code"] for c in listed}))
    assert expected == [c["code"] for c in listed]
    assert {c["step"] for c in listed} <= {codes.step_of(int(time.time()), 30), codes.step_of(int(time.time()), 30) - 1}


async def test_code_images_scan_back(gateway):
    """The PNG (Code 128 and QR) of the current code decodes to the same code the JSON lists."""
    enrolled = await enrol(gateway)
    base = f"/v1/members/{enrolled['member_id']}/devices/{enrolled['device']['slot']}"
    _, listing = await member_get(gateway, base + "/codes", enrolled["token"])
    scanned = []
    for query in ("", "?symbology=qr"):
        status, png = await member_get(gateway, base + "/code.png" + query, enrolled["token"])
        assert 200 == status
        scanned += [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]
    status, svg = await member_get(gateway, base + "/code.svg", enrolled["token"])
    assert [listing["codes"][0]["code"]] * 2 == scanned
    assert (200, True) == (status, b"<svg" in svg)


async def test_tokens_reach_only_their_own_wallet(gateway):
    """No token, a malformed one, or another member's token: 401, 401, 404 (as if the member did not exist)."""
    mine, theirs = await enrol(gateway), await enrol(gateway)
    path = f"/v1/members/{theirs['member_id']}"
    outcomes = [(await member_get(gateway, path, token))[0] for token in (None, "pgmt_000_nope", mine["token"])]
    assert [401, 401, 404] == outcomes


async def test_expired_token_is_refused(gateway):
    """A token past its expiry is 401 unauthorized."""
    enrolled = await enrol(gateway)
    service = gateway.app[MEMBERS]
    real_now = service.now_ms
    service.now_ms = lambda: real_now() + 31 * 24 * 3600 * 1000
    try:
        status, problem = await member_get(gateway, f"/v1/members/{enrolled['member_id']}", enrolled["token"])
    finally:
        service.now_ms = real_now
    assert (401, "unauthorized") == (status, problem["code"])


async def test_revoked_device_loses_its_token_and_its_codes(gateway):
    """Revoking a lost phone kills its token, and a code it made declines revoked_device at a store."""
    enrolled = await enrol(gateway)
    member_id, slot = enrolled["member_id"], enrolled["device"]["slot"]
    _, listing = await member_get(gateway, f"/v1/members/{member_id}/devices/{slot}/codes", enrolled["token"])
    async with gateway.session.delete(f"{gateway.base_url}/v1/members/{member_id}/devices/{slot}",
                                      headers={"Authorization": f"Bearer {enrolled['token']}"}) as response:
        assert 200 == response.status
    status, _ = await member_get(gateway, f"/v1/members/{member_id}", enrolled["token"])
    terminal = await gateway.terminal()
    _, payment, _ = await terminal.pay(listing["codes"][0]["code"], 100)
    assert (401, "revoked_device") == (status, payment["decline"]["code"])


async def test_member_unlocks_a_locked_device(gateway):
    """After five wrong codes the member unlocks the device in the app and the next code pays."""
    enrolled = await enrol(gateway)
    member_id, slot = enrolled["member_id"], enrolled["device"]["slot"]
    terminal, hana = await gateway.terminal(), await affiliate(gateway)
    await earn(hana, member_id, 5_000)
    for guess in range(5):
        body = f"94101{slot:09d}0{guess:08d}"
        await terminal.pay(body + codes.luhn_check_digit(body), 100)
    async with gateway.session.post(f"{gateway.base_url}/v1/members/{member_id}/devices/{slot}/unlock",
                                    headers={"Authorization": f"Bearer {enrolled['token']}"}) as response:
        assert 200 == response.status
    _, listing = await member_get(gateway, f"/v1/members/{member_id}/devices/{slot}/codes", enrolled["token"])
    _, payment, _ = await terminal.pay(listing["codes"][0]["code"], 100)
    assert "approved" == payment["status"]


async def test_earning_credits_once_and_names_the_affiliate_in_the_journal(gateway):
    """An earning credits the points, a retry with the same key replays byte for byte, and the journal funds it from the affiliate."""
    enrolled, hana = await enrol(gateway), await affiliate(gateway)
    s1, earning, h1 = await earn(hana, enrolled["member_id"], 12_000, "CASHBACK-1", key="earn-key-0001")
    s2, _, h2 = await earn(hana, enrolled["member_id"], 12_000, "CASHBACK-1", key="earn-key-0001")
    assert (201, 201, 12_000, h1["_raw"]) == (s1, s2, earning["balance_after"], h2["_raw"])
    report = await run_audit(gateway.app[STORE])
    assert report.clean and -12_000 == report.totals_by_unit()["HMP"]["affiliate:hana-card"]


async def test_concurrent_duplicate_earnings_credit_once(gateway):
    """20 copies of one earning at once credit it once."""
    enrolled, hana = await enrol(gateway), await affiliate(gateway)
    results = await asyncio.gather(*(earn(hana, enrolled["member_id"], 500, "DUP-1", key="earn-dup-0001") for _ in range(20)))
    assert {201} == {r[0] for r in results}
    status, balance = await member_get(gateway, f"/v1/members/{enrolled['member_id']}", enrolled["token"])
    assert 500 == balance["available"]


async def test_same_affiliate_reference_under_another_key_is_refused(gateway):
    """An affiliate reference credits once even when sent under a new idempotency key."""
    enrolled, hana = await enrol(gateway), await affiliate(gateway)
    await earn(hana, enrolled["member_id"], 500, "REF-7")
    status, problem, _ = await earn(hana, enrolled["member_id"], 500, "REF-7")
    assert (409, "affiliate_ref_in_use") == (status, problem["code"])


async def test_budget_is_enforced(gateway):
    """An earning beyond the affiliate's remaining budget is refused and credits nothing."""
    enrolled, hana = await enrol(gateway), await affiliate(gateway)
    await gateway.app[STORE].redis.hset(keyspace.affiliate_budget_key("hana-card"), "budget_points", 1_000)
    ok, _, _ = await earn(hana, enrolled["member_id"], 800)
    status, problem, _ = await earn(hana, enrolled["member_id"], 300)
    assert (201, 409, "over_budget", "the affiliate can still issue 200 points") == (ok, status, problem["code"], problem["detail"])


async def test_unknown_member_earning_is_refused(gateway):
    """Crediting a member that does not exist is 404 member_not_found."""
    hana = await affiliate(gateway)
    status, problem, _ = await earn(hana, "m000000000000000", 100)
    assert (404, "member_not_found") == (status, problem["code"])


async def test_an_earning_refused_for_an_unknown_member_gives_back_its_budget_and_reference(gateway):
    """After member_not_found the affiliate's issued points are as before and its reference credits a real member."""
    enrolled, hana = await enrol(gateway), await affiliate(gateway)
    budget_key = keyspace.affiliate_budget_key("hana-card")
    before = int(await gateway.app[STORE].redis.hget(budget_key, "issued_points") or 0)
    refused, _, _ = await earn(hana, "m000000000000000", 100, "REF-TYPO")
    after = int(await gateway.app[STORE].redis.hget(budget_key, "issued_points") or 0)
    status, earning, _ = await earn(hana, enrolled["member_id"], 100, "REF-TYPO")
    assert (404, before, 201, 100) == (refused, after, status, earning["balance_after"])


async def test_an_earning_lost_after_its_claim_is_credited_once_by_its_retry(gateway):
    """The claim ran and the answer was lost: the retry credits once, under the claimed earning id."""
    enrolled, hana = await enrol(gateway), await affiliate(gateway)
    with lost_after(gateway.app[STORE], "earn_claim"):
        lost, _, _ = await earn(hana, enrolled["member_id"], 700, "LOST-1", key="earn-lost-0001")
    claimed = await gateway.app[STORE].redis.hget(keyspace.idempotency_key("hana-card", "earn-lost-0001"), "earning_id")
    status, earning, _ = await earn(hana, enrolled["member_id"], 700, "LOST-1", key="earn-lost-0001")
    assert (503, 201, claimed, 700) == (lost, status, earning["earning_id"], earning["balance_after"])
    assert [f"earn:{claimed}"] == await earnings_of(gateway, enrolled["member_id"])


async def test_an_earning_lost_after_its_credit_answers_the_credit_and_credits_nothing_more(gateway):
    """The credit ran and the answer was lost: the retry answers that credit, and its replay the same bytes."""
    enrolled, hana = await enrol(gateway), await affiliate(gateway)
    with lost_after(gateway.app[STORE], "earn_move"):
        lost, _, _ = await earn(hana, enrolled["member_id"], 900, "LOST-2", key="earn-lost-0002")
    status, earning, first = await earn(hana, enrolled["member_id"], 900, "LOST-2", key="earn-lost-0002")
    _, _, again = await earn(hana, enrolled["member_id"], 900, "LOST-2", key="earn-lost-0002")
    assert (503, 201, 900, first["_raw"]) == (lost, status, earning["balance_after"], again["_raw"])
    assert [f"earn:{earning['earning_id']}"] == await earnings_of(gateway, enrolled["member_id"])
    assert (await run_audit(gateway.app[STORE])).clean


async def earnings_of(gateway, member_id: str) -> list[str]:
    """The earning entries in the member's partition's journal, in order."""
    entries = await gateway.app[STORE].redis.xrange(keyspace.journal_key(keyspace.partition_of_member(member_id)))
    return [fields["entry"] for _, fields in entries if fields["entry"].startswith("earn:")]


async def test_keys_only_work_on_their_own_routes(gateway):
    """A merchant key cannot credit points, and an affiliate key cannot take a payment: 403 forbidden."""
    enrolled = await enrol(gateway)
    gs25, hana = await gateway.terminal(), await affiliate(gateway)
    s1, p1, _ = await earn(gs25, enrolled["member_id"], 100)
    s2, p2, _ = await hana.pay("9" * 24, 100)
    assert (403, "forbidden", 403, "forbidden") == (s1, p1["code"], s2, p2["code"])


async def enrol_device(gateway, enrolled: dict, key: str | None, body: bytes = b"{}"):
    """(status, raw answer, headers) of the member's app enrolling another device."""
    headers = {"Authorization": f"Bearer {enrolled['token']}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with gateway.session.post(f"{gateway.base_url}/v1/members/{enrolled['member_id']}/devices", data=body,
                                    headers=headers) as response:
        return response.status, await response.read(), response.headers


async def devices_of(gateway, member_id: str) -> set[int]:
    return {int(s) for s in await gateway.app[STORE].redis.smembers(keyspace.member_devices_key(member_id))}


async def test_a_retried_device_enrolment_gets_the_same_device_back(gateway):
    """The answer to an enrolment was lost and the app sends it again: the same device, secret and
    token, marked as a replay, one device more in all; the token and the secret both work."""
    enrolled = await enrol(gateway)
    key = "enrol-" + secrets.token_hex(8)
    first = await enrol_device(gateway, enrolled, key)
    again = await enrol_device(gateway, enrolled, key)
    assert (201, 201, first[1]) == (first[0], again[0], again[1])
    assert (None, "true") == (first[2].get("Idempotent-Replayed"), again[2].get("Idempotent-Replayed"))
    device = json.loads(first[1])
    assert {enrolled["device"]["slot"], device["device"]["slot"]} == await devices_of(gateway, enrolled["member_id"])
    status, listing = await member_get(gateway, f"/v1/members/{enrolled['member_id']}/devices/{device['device']['slot']}/codes",
                                       device["token"])
    secret = base64.b32decode(device["device"]["secret_b32"] + "=" * (-len(device["device"]["secret_b32"]) % 8))
    shown = listing["codes"][0]
    assert (200, codes.encode_code("9410", device["device"]["slot"], shown["seq"], secret, shown["step"])) == (status, shown["code"])


async def test_the_stored_enrolment_answer_is_encrypted(gateway):
    """The record a retry is answered from holds neither the device's secret nor its token."""
    enrolled = await enrol(gateway)
    key = "enrol-" + secrets.token_hex(8)
    _, raw, _ = await enrol_device(gateway, enrolled, key)
    device = json.loads(raw)
    record = await gateway.app[STORE].redis.hgetall(keyspace.device_enrolment_key(enrolled["member_id"], key))
    stored = json.dumps(record)
    assert record["answer"] and device["device"]["secret_b32"] not in stored and device["token"] not in stored
    assert 0 < await gateway.app[STORE].redis.ttl(keyspace.device_enrolment_key(enrolled["member_id"], key))


async def test_device_enrolment_needs_a_key_and_one_request_per_key(gateway):
    """No Idempotency-Key: refused, nothing enrolled; the key of another request: refused."""
    enrolled = await enrol(gateway)
    status, raw, _ = await enrol_device(gateway, enrolled, None)
    assert (400, "idempotency_key_missing") == (status, json.loads(raw)["code"])
    key = "enrol-" + secrets.token_hex(8)
    assert 201 == (await enrol_device(gateway, enrolled, key))[0]
    status, raw, _ = await enrol_device(gateway, enrolled, key, b'{"name": "tablet"}')
    assert (422, "invalid_request") == (status, json.loads(raw)["code"])  # no field is taken (nor is its key used up)
    status, raw, _ = await enrol_device(gateway, enrolled, key, b"{ }")
    assert (422, "idempotency_mismatch") == (status, json.loads(raw)["code"])
    assert 2 == len(await devices_of(gateway, enrolled["member_id"]))


async def test_a_revoked_device_frees_its_place_under_the_limit(gateway):
    """Five devices is the limit; revoking one lets the member enrol another; revoking twice is fine."""
    enrolled = await enrol(gateway)
    for _ in range(DEVICES_PER_MEMBER_MAX - 1):
        assert 201 == (await enrol_device(gateway, enrolled, "enrol-" + secrets.token_hex(8)))[0]
    status, raw, _ = await enrol_device(gateway, enrolled, "enrol-" + secrets.token_hex(8))
    assert (409, "too_many_devices") == (status, json.loads(raw)["code"])
    lost = sorted(await devices_of(gateway, enrolled["member_id"]) - {enrolled["device"]["slot"]})[0]
    for _ in range(2):
        async with gateway.session.delete(f"{gateway.base_url}/v1/members/{enrolled['member_id']}/devices/{lost}",
                                          headers={"Authorization": f"Bearer {enrolled['token']}"}) as response:
            assert (200, "revoked") == (response.status, (await response.json())["status"])
    assert 201 == (await enrol_device(gateway, enrolled, "enrol-" + secrets.token_hex(8)))[0]
    assert DEVICES_PER_MEMBER_MAX + 1 == len(await devices_of(gateway, enrolled["member_id"]))
