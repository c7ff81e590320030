"""Coupon campaigns and coupon issuance through HTTP, against real Redis (redemption is the payment's)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import secrets
import time

import pytest

from gateway import keyspace
from gateway.app import COUPONS, MERCHANTS, STORE
from gateway.coupons import CODE_RE, COUPON_FIELDS, CouponService
from gateway.openapi import openapi_document
from gateway.settings import SettingsError
from pos_sdk.scanner import COUPON_RE, classify

DOC_URI = "urn:pointgate:openapi"


# -- helpers -----------------------------------------------------------------------


def rfc3339(offset_s: float) -> str:
    """Now plus `offset_s`, as Seoul local time with its offset (what an operator types)."""
    seoul = dt.timezone(dt.timedelta(hours=9))
    return dt.datetime.fromtimestamp(time.time() + offset_s, seoul).isoformat(timespec="seconds")


def campaign(**changes) -> dict:
    """A GS25 10%-off campaign running from an hour ago for 30 days, with `changes` applied."""
    document = {
        "campaign_id": "gs25-" + secrets.token_hex(4), "title": "GS25 10% off", "issuer": "hana",
        "merchants": ["gs25"], "currency": "KRW", "min_spend": 5000,
        "discount": {"kind": "percent", "percent": 10, "cap": 2000},
        "valid_from": rfc3339(-3600), "valid_until": rfc3339(30 * 86400),
        "per_member_limit": 1, "stackable": False, "claimable": True,
    }
    document.update(changes)
    return document


async def operator(gateway, operator_id: str = "ops"):
    await gateway.app[MERCHANTS].create_merchant(operator_id, "Operations", "KRW", "Asia/Seoul", "00:00", 42, role="operator")
    return await gateway.terminal(operator_id)


async def partner(gateway, partner_id: str = "taishin"):
    return await gateway.terminal(partner_id)


async def enrol(gateway) -> dict:
    async with gateway.session.post(gateway.base_url + "/v1/members", json={}) as response:
        assert 201 == response.status
        return await response.json()


async def as_member(gateway, method: str, path: str, token: str | None, document=None, key: str | None = "auto"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if method == "POST" and key is not None:
        headers["Idempotency-Key"] = "claim-" + secrets.token_hex(8) if key == "auto" else key
    async with gateway.session.request(method, gateway.base_url + path, json=document, headers=headers) as response:
        return response.status, await response.json(content_type=None), dict(response.headers)


async def create(ops, document: dict, key: str | None = None):
    return await ops.send("POST", "/v1/campaigns", document, key)


async def issue(caller, campaign_id: str, member_id: str, key: str | None = None):
    return await caller.send("POST", f"/v1/campaigns/{campaign_id}/coupons", {"member_id": member_id}, key)


async def claim(gateway, member: dict, campaign_id: str, key: str | None = "auto"):
    return await as_member(gateway, "POST", f"/v1/members/{member['member_id']}/coupons", member["token"],
                           {"campaign_id": campaign_id}, key)


async def coupons_of(gateway, member: dict, query: str = ""):
    status, listing, _ = await as_member(gateway, "GET", f"/v1/members/{member['member_id']}/coupons{query}", member["token"])
    assert 200 == status, listing
    return listing["coupons"]


def assert_documented(method: str, path: str, status: int, document) -> None:
    """The response fits the schema /openapi.json gives for it."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    spec = openapi_document()
    (media,) = spec["paths"][path][method]["responses"][str(status)]["content"].values()
    registry = Registry().with_resource(DOC_URI, Resource.from_contents(spec, default_specification=DRAFT202012))
    validator = jsonschema.Draft202012Validator({"$ref": DOC_URI + media["schema"]["$ref"]}, registry=registry)
    assert [] == [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
    schema = spec["components"]["schemas"][media["schema"]["$ref"].rsplit("/", 1)[1]]
    assert set(schema["properties"]) == set(document)  # exactly the documented fields, no more


# -- campaigns ----------------------------------------------------------------------


async def test_config_campaigns_are_there_at_start(gateway):
    """campaigns.toml's three campaigns are listed at start with their terms, funding and source."""
    ops = await operator(gateway)
    status, listing, _ = await ops.send("GET", "/v1/campaigns")
    found = {c["campaign_id"]: c for c in listing["campaigns"]}
    welcome, cu, taishin = found["gs25-welcome"], found["cu-1000"], found["taishin-familymart"]
    assert 200 == status
    assert ({"kind": "percent", "percent": "10", "amount": None, "cap": 2000}, 5000, True, 1, "campaign:gs25-welcome", "config") == (
        welcome["discount"], welcome["min_spend"], welcome["claimable"], welcome["per_member_limit"], welcome["funding"],
        welcome["source"])
    assert ({"kind": "fixed", "percent": None, "amount": 1000, "cap": None}, 3000, True, ["cu"]) == (
        cu["discount"], cu["min_spend"], cu["stackable"], cu["merchants"])
    assert ("taishin", "partner:taishin", "TWD", ["taishin"]) == (
        taishin["issuer"], taishin["funding"], taishin["currency"], taishin["merchants"])
    assert_documented("get", "/v1/campaigns", 200, listing)


async def test_operator_creates_a_campaign_and_a_retry_replays_it(gateway):
    """A new campaign is 201 with its terms in numbers and words; the same key and body replay the same bytes."""
    ops = await operator(gateway)
    document = campaign(discount={"kind": "percent", "percent": "12.5", "cap": 2000})
    s1, created, h1 = await create(ops, document, "camp-key-0001")
    s2, _, h2 = await create(ops, document, "camp-key-0001")
    s3, fetched, _ = await ops.send("GET", f"/v1/campaigns/{document['campaign_id']}")
    assert (201, 201, h1["_raw"], "true") == (s1, s2, h2["_raw"], h2.get("idempotent-replayed"))
    assert ("12.5", "active", "operator", 0) == (created["discount"]["percent"], created["status"], created["source"], fetched["issued"])
    assert "12.5% off (up to 2,000 KRW) when you spend 5,000 KRW or more at GS25" == created["description"]
    assert 200 == s3
    assert_documented("post", "/v1/campaigns", 201, created)
    assert_documented("get", "/v1/campaigns/{campaign_id}", 200, fetched)


async def test_percent_is_stored_as_basis_points(gateway):
    """12.5 % is stored as the integer 1250 in the campaign's JSON, never as a float."""
    ops = await operator(gateway)
    document = campaign(discount={"kind": "percent", "percent": 12.5})
    await create(ops, document)
    stored = json.loads(await gateway.app[STORE].redis.hget(keyspace.CAMPAIGNS_KEY, document["campaign_id"]))
    assert (1250, 0, "percent") == (stored["value"], stored["cap"], stored["kind"])


async def test_same_campaign_id_under_another_key_is_campaign_exists(gateway):
    """A second campaign with a taken id (an operator's or campaigns.toml's) is 409 campaign_exists."""
    ops = await operator(gateway)
    document = campaign()
    await create(ops, document)
    s1, p1, _ = await create(ops, dict(document, title="Another"))
    s2, p2, _ = await create(ops, campaign(campaign_id="gs25-welcome"))
    assert [(409, "campaign_exists")] * 2 == [(s1, p1["code"]), (s2, p2["code"])]


@pytest.mark.parametrize(("changes", "says"), [
    ({"discount": {"kind": "percent", "percent": "12.345"}}, "at most two decimals"),
    ({"discount": {"kind": "percent", "percent": 0}}, "more than 0"),
    ({"discount": {"kind": "percent", "percent": 101}}, "at most 100"),
    ({"discount": {"kind": "percent", "percent": "ten"}}, "decimal"),
    ({"discount": {"kind": "percent"}}, "discount.percent"),
    ({"discount": {"kind": "fixed", "amount": 1000, "cap": 500}}, "for kind percent"),
    ({"discount": {"kind": "fixed", "amount": 0}}, "discount.amount"),
    ({"discount": {"kind": "half"}}, "discount.kind"),
    ({"merchants": ["gs25", "seven-eleven"]}, "'seven-eleven' is not a registered merchant"),
    ({"merchants": ["familymart-tw"]}, "sells in TWD"),
    ({"merchants": ["*", "gs25"]}, "not both"),
    ({"merchants": ["gs25", "gs25"]}, "twice"),
    ({"merchants": []}, "merchants"),
    ({"issuer": "rakuten"}, "issuer must be the home network or a configured partner network (hana, taishin)"),
    ({"valid_until": rfc3339(-7200)}, "must be after valid_from"),
    ({"valid_from": rfc3339(-7200), "valid_until": rfc3339(-3600)}, "has passed"),
    ({"valid_until": "2027-01-01T00:00:00"}, "RFC 3339"),
    ({"valid_until": "next friday"}, "RFC 3339"),
    ({"valid_until": rfc3339(4 * 366 * 86400)}, "at most"),
    ({"per_member_limit": 0}, "per_member_limit"),
    ({"total_limit": 0}, "total_limit"),
    ({"title": " GS25"}, "title"),
    ({"currency": "XYZ"}, "currency"),
    ({"colour": "blue"}, "colour"),
], ids=lambda v: json.dumps(v)[:60] if isinstance(v, dict) else "")
async def test_invalid_campaign_is_invalid_request_and_not_stored(gateway, changes, says):
    """A campaign with bad terms is 422 invalid_request naming what is wrong, and nothing is stored."""
    ops = await operator(gateway)
    document = campaign(**changes)
    status, problem, _ = await create(ops, document)
    fetched, _, _ = await ops.send("GET", f"/v1/campaigns/{document['campaign_id']}")
    assert (422, "invalid_request", 404) == (status, problem["code"], fetched)
    assert says in problem["detail"]


async def test_only_an_operator_creates_campaigns(gateway):
    """A merchant's or an affiliate's key is 403, a member's bearer token 401; no campaign is created."""
    document = campaign()
    terminal, affiliate = await gateway.terminal(), await gateway.terminal("hana-card")
    member = await enrol(gateway)
    s1, p1, _ = await create(terminal, document)
    s2, p2, _ = await create(affiliate, document)
    s3, p3, _ = await as_member(gateway, "POST", "/v1/campaigns", member["token"], document)
    s4, p4, _ = await terminal.send("GET", "/v1/campaigns")
    assert [(403, "forbidden"), (403, "forbidden"), (401, "signature_missing"), (403, "forbidden")] == [
        (s1, p1["code"]), (s2, p2["code"]), (s3, p3["code"]), (s4, p4["code"])]
    assert await gateway.app[STORE].redis.hget(keyspace.CAMPAIGNS_KEY, document["campaign_id"]) is None


async def test_a_bad_campaigns_toml_stops_the_start_naming_the_campaign(gateway, settings):
    """A campaigns.toml entry with an unknown merchant is a SettingsError naming the entry and the merchant."""
    broken = dataclasses.replace(settings, campaigns={"campaign": [dict(
        campaign(campaign_id="bad-one"), merchants=["lawson"])]})
    service = CouponService(gateway.app[STORE], gateway.app[MERCHANTS], broken)
    with pytest.raises(SettingsError, match=r"campaign\[0\] \(bad-one\).*'lawson' is not a registered merchant"):
        service.config_campaigns()


async def test_a_config_campaign_of_a_partner_not_configured_here_is_skipped(gateway, settings):
    """Without taishin in partners.toml, its campaign is not loaded, and the others still are."""
    alone = dataclasses.replace(settings, partners=())
    loaded = CouponService(gateway.app[STORE], gateway.app[MERCHANTS], alone).config_campaigns()
    assert ["gs25-welcome", "cu-1000"] == [c.campaign_id for c in loaded]


# -- issuing --------------------------------------------------------------------------


async def test_operator_issues_a_coupon_the_member_sees(gateway):
    """An issued coupon is 201 with a scannable CP code, and it is in the member's list with its terms."""
    ops, member = await operator(gateway), await enrol(gateway)
    status, coupon, _ = await issue(ops, "gs25-welcome", member["member_id"])
    listed = await coupons_of(gateway, member)
    assert (201, "issued", "GS25 10% off") == (status, coupon["state"], coupon["title"])
    assert CODE_RE.fullmatch(coupon["code"]) and COUPON_RE.fullmatch(coupon["code"])
    scanned = classify("]C0" + coupon["code"] + "\r\n", ("9410",))
    assert ("coupon", coupon["code"]) == (scanned.kind, scanned.value)
    assert [coupon] == listed
    assert "10% off (up to 2,000 KRW) when you spend 5,000 KRW or more at GS25" == coupon["description"]
    assert_documented("post", "/v1/campaigns/{campaign_id}/coupons", 201, coupon)


async def test_stored_coupon_has_exactly_the_contract_fields(gateway):
    """The coupon hash the payment script redeems has exactly the agreed fields, all strings, the terms snapshotted."""
    ops, member = await operator(gateway), await enrol(gateway)
    document = campaign(stackable=True, merchants=["gs25"], min_spend=5000)
    _, created, _ = await create(ops, document)
    _, coupon, _ = await issue(ops, document["campaign_id"], member["member_id"])
    redis = gateway.app[STORE].redis
    member_id, code = member["member_id"], coupon["code"]
    stored = await redis.hgetall(keyspace.coupon_key(keyspace.partition_of_member(member_id), code))
    stored_campaign = json.loads(await redis.hget(keyspace.CAMPAIGNS_KEY, document["campaign_id"]))
    assert sorted(COUPON_FIELDS) == sorted(stored)
    assert {
        "code": code, "campaign_id": document["campaign_id"], "member_id": member_id, "state": "issued",
        "title": "GS25 10% off", "issuer": "hana", "funding": f"campaign:{document['campaign_id']}",
        "merchants": "gs25", "currency": "KRW", "min_spend": "5000", "kind": "percent", "value": "1000", "cap": "2000",
        "valid_from_ms": str(stored_campaign["valid_from_ms"]), "valid_until_ms": str(stored_campaign["valid_until_ms"]),
        "stackable": "1", "issued_ms": stored["issued_ms"], "payment_id": "", "discount": "0", "redeemed_ms": "",
    } == stored
    assert [(code, float(stored["issued_ms"]))] == await redis.zrange(keyspace.member_coupons_key(member_id), 0, -1, withscores=True)
    assert {document["campaign_id"]: "1"} == await redis.hgetall(keyspace.coupon_counts_key(member_id))
    assert abs(int(stored["issued_ms"]) - time.time() * 1000) < 60_000
    assert keyspace.coupon_key(keyspace.partition_of_member(member_id), code).startswith(
        f"pg:{keyspace.partition_tag(keyspace.partition_of_member(member_id))}:coupon:CP")
    assert created["valid_until"].endswith("Z")


async def test_issue_retry_with_the_same_key_gives_the_same_coupon(gateway):
    """The same idempotency key and body replay the first coupon's bytes; the member holds one coupon."""
    ops, member = await operator(gateway), await enrol(gateway)
    document = campaign(per_member_limit=5)
    await create(ops, document)
    s1, first, h1 = await issue(ops, document["campaign_id"], member["member_id"], "issue-key-0001")
    s2, _, h2 = await issue(ops, document["campaign_id"], member["member_id"], "issue-key-0001")
    s3, other, _ = await issue(ops, document["campaign_id"], (await enrol(gateway))["member_id"], "issue-key-0001")
    assert (201, 201, h1["_raw"], "true") == (s1, s2, h2["_raw"], h2.get("idempotent-replayed"))
    assert (422, "idempotency_mismatch") == (s3, other["code"])
    assert [first["code"]] == [c["code"] for c in await coupons_of(gateway, member)]


async def test_issue_to_an_unknown_member_is_member_not_found(gateway):
    """No coupon for a member id that has no wallet: 404, and the campaign's issued count is unchanged."""
    ops = await operator(gateway)
    status, problem, _ = await issue(ops, "gs25-welcome", "m123" + "0" * 12)
    _, fetched, _ = await ops.send("GET", "/v1/campaigns/gs25-welcome")
    assert (404, "member_not_found", 0) == (status, problem["code"], fetched["issued"])


async def test_unknown_campaign_is_campaign_not_found(gateway):
    """Issuing or claiming a campaign that does not exist is 404 campaign_not_found."""
    ops, member = await operator(gateway), await enrol(gateway)
    s1, p1, _ = await issue(ops, "no-such-campaign", member["member_id"])
    s2, p2, _ = await claim(gateway, member, "no-such-campaign")
    assert [(404, "campaign_not_found")] * 2 == [(s1, p1["code"]), (s2, p2["code"])]


async def test_partner_network_issues_only_its_own_campaigns(gateway):
    """Taishin issues its FamilyMart coupon (funded by its clearing account), sees only its campaigns, creates none."""
    taishin, member = await partner(gateway), await enrol(gateway)
    s1, coupon, _ = await issue(taishin, "taishin-familymart", member["member_id"])
    s2, refused, _ = await issue(taishin, "gs25-welcome", member["member_id"])
    s3, listing, _ = await taishin.send("GET", "/v1/campaigns")
    s4, created, _ = await create(taishin, campaign(issuer="taishin"))
    stored = await gateway.app[STORE].redis.hgetall(
        keyspace.coupon_key(keyspace.partition_of_member(member["member_id"]), coupon["code"]))
    assert (201, "taishin", "partner:taishin", "TWD", "fixed", "30") == (
        s1, stored["issuer"], stored["funding"], stored["currency"], stored["kind"], stored["value"])
    assert (404, "campaign_not_found") == (s2, refused["code"])
    assert (200, ["taishin-familymart"]) == (s3, [c["campaign_id"] for c in listing["campaigns"]])
    assert (403, "forbidden") == (s4, created["code"])


async def test_total_limit_is_never_passed_under_concurrent_issues(gateway):
    """12 concurrent issues of a campaign with total_limit 5 to 12 members: exactly 5 coupons, the rest campaign_exhausted."""
    ops = await operator(gateway)
    document = campaign(total_limit=5)
    await create(ops, document)
    members = await asyncio.gather(*(enrol(gateway) for _ in range(12)))
    results = await asyncio.gather(*(issue(ops, document["campaign_id"], m["member_id"]) for m in members))
    _, fetched, _ = await ops.send("GET", f"/v1/campaigns/{document['campaign_id']}")
    outcomes = sorted((s, "" if s == 201 else p["code"]) for s, p, _ in results)
    assert [(201, "")] * 5 + [(409, "campaign_exhausted")] * 7 == outcomes
    assert 5 == fetched["issued"]


# -- members' claims and lists ---------------------------------------------------------


async def test_member_claims_a_claimable_campaign_once(gateway):
    """A claim is 201; a second claim (limit 1) is 409 coupon_limit_reached; a retry of the first replays its coupon."""
    member = await enrol(gateway)
    s1, first, _ = await claim(gateway, member, "gs25-welcome", "claim-key-0001")
    s2, second, _ = await claim(gateway, member, "gs25-welcome")
    s3, again, h3 = await claim(gateway, member, "gs25-welcome", "claim-key-0001")
    assert (201, 409, "coupon_limit_reached") == (s1, s2, second["code"])
    assert (201, first, "true") == (s3, again, h3.get("Idempotent-Replayed"))
    assert [first["code"]] == [c["code"] for c in await coupons_of(gateway, member)]
    assert_documented("post", "/v1/members/{member_id}/coupons", 201, first)


async def test_claim_needs_an_idempotency_key(gateway):
    """A claim without an Idempotency-Key is 400 idempotency_key_missing, and nothing is issued."""
    member = await enrol(gateway)
    status, problem, _ = await claim(gateway, member, "gs25-welcome", key=None)
    assert (400, "idempotency_key_missing", []) == (status, problem["code"], await coupons_of(gateway, member))


async def test_a_campaign_not_claimable_cannot_be_claimed(gateway):
    """cu-1000 is issued by operators only: a member's claim is 409 campaign_not_claimable."""
    member = await enrol(gateway)
    status, problem, _ = await claim(gateway, member, "cu-1000")
    assert (409, "campaign_not_claimable", []) == (status, problem["code"], await coupons_of(gateway, member))


async def test_concurrent_claims_get_exactly_the_per_member_limit(gateway):
    """20 concurrent claims of a campaign with per_member_limit 3: exactly 3 succeed, 17 are coupon_limit_reached."""
    ops, member = await operator(gateway), await enrol(gateway)
    document = campaign(per_member_limit=3)
    await create(ops, document)
    results = await asyncio.gather(*(claim(gateway, member, document["campaign_id"]) for _ in range(20)))
    outcomes = sorted((s, "" if s == 201 else p["code"]) for s, p, _ in results)
    assert [(201, "")] * 3 + [(409, "coupon_limit_reached")] * 17 == outcomes
    assert 3 == len({c["code"] for c in await coupons_of(gateway, member)})
    counts = await gateway.app[STORE].redis.hget(keyspace.coupon_counts_key(member["member_id"]), document["campaign_id"])
    assert "3" == counts


async def test_an_ended_campaign_is_neither_claimed_nor_issued(gateway):
    """After valid_until, a claim and an operator's issue are 409 campaign_ended, and the campaign shows ended."""
    ops, member = await operator(gateway), await enrol(gateway)
    document = campaign(valid_until=rfc3339(3600), per_member_limit=2)
    await create(ops, document)
    await claim(gateway, member, document["campaign_id"])
    service = gateway.app[COUPONS]
    real_now = service.now_ms
    service.now_ms = lambda: real_now() + 2 * 3600 * 1000
    try:
        s1, p1, _ = await claim(gateway, member, document["campaign_id"])
        s2, p2, _ = await issue(ops, document["campaign_id"], member["member_id"])
        _, fetched, _ = await ops.send("GET", f"/v1/campaigns/{document['campaign_id']}")
        states = [c["state"] for c in await coupons_of(gateway, member)]
        expired = await coupons_of(gateway, member, "?state=expired")
    finally:
        service.now_ms = real_now
    assert [(409, "campaign_ended")] * 2 == [(s1, p1["code"]), (s2, p2["code"])]
    assert ("ended", ["expired"], 1) == (fetched["status"], states, len(expired))


async def test_member_sees_and_claims_only_in_their_own_wallet(gateway):
    """Another member's coupons and claims answer 404 as if that member did not exist; each list has only its own."""
    mine, theirs = await enrol(gateway), await enrol(gateway)
    ops = await operator(gateway)
    _, their_coupon, _ = await issue(ops, "gs25-welcome", theirs["member_id"])
    s1, p1, _ = await as_member(gateway, "GET", f"/v1/members/{theirs['member_id']}/coupons", mine["token"])
    s2, p2, _ = await as_member(gateway, "POST", f"/v1/members/{theirs['member_id']}/coupons", mine["token"],
                                {"campaign_id": "gs25-welcome"})
    s3, p3, _ = await as_member(gateway, "GET", f"/v1/members/{mine['member_id']}/coupons", None)
    assert [(404, "member_not_found"), (404, "member_not_found"), (401, "unauthorized")] == [
        (s1, p1["code"]), (s2, p2["code"]), (s3, p3["code"])]
    assert ([], [their_coupon["code"]]) == (await coupons_of(gateway, mine), [c["code"] for c in await coupons_of(gateway, theirs)])


async def test_member_filters_coupons_by_state(gateway):
    """?state=issued lists usable coupons, ?state=redeemed none yet, an unknown state is 422."""
    member, ops = await enrol(gateway), await operator(gateway)
    await issue(ops, "cu-1000", member["member_id"])
    await claim(gateway, member, "gs25-welcome")
    issued, redeemed = await coupons_of(gateway, member, "?state=issued"), await coupons_of(gateway, member, "?state=redeemed")
    status, problem, _ = await as_member(gateway, "GET", f"/v1/members/{member['member_id']}/coupons?state=used", member["token"])
    assert (["gs25-welcome", "cu-1000"], []) == ([c["campaign_id"] for c in issued], redeemed)
    assert (422, "invalid_request") == (status, problem["code"])
    _, listing, _ = await as_member(gateway, "GET", f"/v1/members/{member['member_id']}/coupons", member["token"])
    assert_documented("get", "/v1/members/{member_id}/coupons", 200, listing)


async def test_gateway_operators_add_gives_a_key_that_creates_campaigns(gateway, settings, home_redis, monkeypatch, capsys):
    """`gateway operators add` registers an operator and prints a key that signs a campaign; a merchant's id is refused."""
    from gateway import cli

    for name, value in home_redis.environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POINTGATE_KEYRING_PATH", settings.keyring_path)
    assert 0 == await asyncio.to_thread(cli.main, ["operators", "add", "ops-seoul", "--name", "Seoul operations"])
    printed = dict(line.strip().split(": ", 1) for line in capsys.readouterr().out.splitlines() if line.startswith("  "))
    ops = await gateway.terminal("ops-seoul", key=(printed["key id"], printed["secret"]))
    status, created, _ = await create(ops, campaign())
    assert (201, "operator") == (status, (await gateway.app[MERCHANTS].merchant("ops-seoul")).role)
    assert 1 == await asyncio.to_thread(cli.main, ["operators", "add", "gs25"])
    assert "gs25 is a merchant, not an operator" in capsys.readouterr().err
