"""The web wallet's and the operator console's routes over HTTP: sign-in, codes with pictures, the console feed."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import time

import aiohttp
import pytest
import zxingcpp
from multidict import CIMultiDict
from PIL import Image

from gateway.app import MEMBERS, MERCHANTS, STORE
from gateway.web.operator_tokens import OperatorTokens
from tests.e2e.conftest import serving, taishin_member
from tests.e2e.test_serve import start_gateway, stop


async def enrolled(gateway, points: int = 0) -> dict:
    """A member enrolled over the member API (token and all), with `points` credited."""
    enrolment = await gateway.app[MEMBERS].enrol_member()
    if points:
        await gateway.ledger.credit(enrolment["member_id"], points, "affiliate:hana-card", "seed-" + enrolment["member_id"], "HMP")
    return enrolment


async def operator_token(gateway, operator_id: str = "ops", **issue) -> str:
    registry = gateway.app[MERCHANTS]
    if await registry.merchant(operator_id) is None:
        await registry.create_merchant(operator_id, "Operations", "KRW", "Asia/Seoul", "00:00", 42, role="operator")
    token, _ = await OperatorTokens(gateway.app[STORE], registry, **issue).issue(operator_id)
    return token


async def get(gateway, path: str, token: str | None = None, **headers: str) -> tuple[int, object, CIMultiDict]:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with gateway.session.get(gateway.base_url + path, headers=headers) as response:
        raw = await response.read()
        body = json.loads(raw) if "json" in response.content_type else raw
        return response.status, body, CIMultiDict(response.headers)


def decoded(data_url: str) -> set[tuple[str, str]]:
    image = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
    return {(r.format.name, r.text) for r in zxingcpp.read_barcodes(image)}


def svg_as_png(data_url: str) -> str:
    """The Code 128 SVG's bars painted into a PNG data URL (zxing reads pixels, not SVG)."""
    from tests.unit.test_render import _svg_bars_as_png

    png = _svg_bars_as_png(base64.b64decode(data_url.split(",", 1)[1]))
    return "data:image/png;base64," + base64.b64encode(png).decode()


# -- the member's routes ---------------------------------------------------------------


async def test_a_member_token_says_whose_wallet_and_device_it_is(gateway):
    """GET /v1/me answers the token's own member and device slot, and 401 without a member token."""
    member = await enrolled(gateway)
    status, me, _ = await get(gateway, "/v1/me", member["token"])
    assert (200, member["member_id"], member["device"]["slot"]) == (status, me["member_id"], me["slot"])
    for token in (None, "pgmt_000_" + "A" * 43, await operator_token(gateway)):
        status, problem, _ = await get(gateway, "/v1/me", token)
        assert (401, "unauthorized") == (status, problem["code"])


async def test_the_code_card_shows_one_code_as_digits_bars_and_qr(gateway):
    """code.json's digits are the device's current code, and both pictures scan as exactly those digits."""
    member = await enrolled(gateway)
    base = f"/v1/members/{member['member_id']}/devices/{member['device']['slot']}"
    status, card, headers = await get(gateway, base + "/code.json", member["token"])
    _, listing, _ = await get(gateway, base + "/codes", member["token"])
    assert (200, listing["codes"][0]["code"]) == (status, card["code"])
    assert "no-store" == headers["Cache-Control"]
    assert {("QRCode", card["code"])} == decoded(card["qr_png"])
    assert {("Code128", card["code"])} == decoded(svg_as_png(card["code128_svg"]))
    assert card["refresh_at"] > card["server_time"]


async def test_the_code_card_of_another_member_is_no_member_at_all(gateway):
    """A token reaches only its own wallet's codes: another member's look like a wallet that does not exist."""
    mine, theirs = await enrolled(gateway), await enrolled(gateway)
    path = f"/v1/members/{theirs['member_id']}/devices/{theirs['device']['slot']}/code.json"
    status, problem, _ = await get(gateway, path, mine["token"])
    assert (404, "member_not_found") == (status, problem["code"])
    status, problem, _ = await get(gateway, path)
    assert (401, "unauthorized") == (status, problem["code"])


# -- the pages --------------------------------------------------------------------------


async def test_the_wallet_page_is_the_same_for_everyone_and_locks_down_scripts(gateway):
    """/wallet holds no member data, names the claimable campaigns, and forbids inline and foreign scripts."""
    member = await enrolled(gateway, 1_000)
    status, page, headers = await get(gateway, "/wallet")
    html = page.decode()
    assert (200, "text/html; charset=utf-8") == (status, headers["Content-Type"])
    assert "script-src 'self'" in headers["Content-Security-Policy"] and "unsafe" not in headers["Content-Security-Policy"]
    assert ("DENY", "no-referrer") == (headers["X-Frame-Options"], headers["Referrer-Policy"])
    assert 'value="gs25-welcome"' in html
    assert (False, False) == (member["member_id"] in html, member["token"] in html)
    assert '<html lang="ko">' in html and "포인트 지갑" in html


@pytest.mark.parametrize(("query", "accept", "lang", "title"), [
    ("?lang=en", "", "en", "Points wallet"),
    ("", "en-GB,en;q=0.9", "en", "Points wallet"),
    ("", "ko-KR,ko;q=0.9,en;q=0.5", "ko", "포인트 지갑"),
    ("?lang=ko", "en", "ko", "포인트 지갑"),
])
async def test_the_page_language_comes_from_the_query_then_the_browser(gateway, query, accept, lang, title):
    """?lang= wins, then the browser's first preference of Korean and English."""
    status, page, _ = await get(gateway, "/wallet" + query, **({"Accept-Language": accept} if accept else {}))
    assert (200, True, True) == (status, f'<html lang="{lang}">' in page.decode(), f">{title}<" in page.decode())


async def test_static_files_revalidate_by_etag_and_unknown_ones_are_problems(gateway):
    """The scripts and the style sheet come from the gateway with an ETag; another name is 404 not_found."""
    status, body, headers = await get(gateway, "/static/wallet.js")
    assert (200, "text/javascript; charset=utf-8") == (status, headers["Content-Type"])
    status, _, _ = await get(gateway, "/static/wallet.js", **{"If-None-Match": headers["ETag"]})
    assert 304 == status
    for name in ("nope.js", "..%2Fapp.py", "strings.json"):
        status, problem, _ = await get(gateway, "/static/" + name)
        assert (404, "not_found") == (status, problem["code"]), name


# -- the operator console ---------------------------------------------------------------


async def test_a_console_token_opens_the_console_and_nothing_else_does(gateway):
    """Only an operator's console token signs in: no member token, no unknown token, no merchant signature."""
    token = await operator_token(gateway)
    status, session, _ = await get(gateway, "/v1/ops/console/session", token)
    assert (200, "ops") == (status, session["operator_id"])
    member = await enrolled(gateway)
    terminal = await gateway.terminal()
    signed = terminal.headers("GET", "/v1/ops/console/session", b"")
    for headers in ({"Authorization": f"Bearer {member['token']}"}, {"Authorization": "Bearer pgct_" + "A" * 43},
                    signed, {}):
        async with gateway.session.get(gateway.base_url + "/v1/ops/console/session", headers=headers) as response:
            assert (401, "operator_unauthorized") == (response.status, (await response.json())["code"])
    status, problem, _ = await get(gateway, "/v1/members/" + member["member_id"], token)
    assert (401, "unauthorized") == (status, problem["code"])


async def test_console_tokens_expire_end_when_revoked_and_belong_to_operators_only(gateway):
    """An expired token, a revoked one and one whose operator left are refused; merchants get none."""
    expired = await operator_token(gateway, now_ms=lambda: int(time.time() * 1000) - 13 * 3600 * 1000)
    revoked = await operator_token(gateway, "ops-2")
    tokens = OperatorTokens(gateway.app[STORE], gateway.app[MERCHANTS])
    assert 1 == await tokens.revoke_all("ops-2")
    for token in (expired, revoked):
        status, problem, _ = await get(gateway, "/v1/ops/console/session", token)
        assert (401, "operator_unauthorized") == (status, problem["code"])
    with pytest.raises(ValueError, match="not a registered operator"):
        await tokens.issue("gs25")
    with pytest.raises(ValueError, match="hours"):
        await tokens.issue("ops", hours=24 * 8)


async def _frames(response):
    """(event, data) of each server-sent event, as they come."""
    event, data = "message", []
    while True:
        line = (await response.content.readline()).decode()
        if not line:
            return
        line = line.rstrip("\r\n")
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            if name == "event":
                event = value.strip()
            elif name == "data":
                data.append(value.lstrip(" "))


async def _until(frames, wanted, timeout_s: float):
    async def find():
        async for event, data in frames:
            if wanted(event, data):
                return data
    return await asyncio.wait_for(find(), timeout_s)


async def test_the_console_feed_shows_a_sale_within_a_second_and_a_decline_under_its_reason(gateway):
    """An approved sale reaches the console's stream within a second; a replayed code counts under replayed_code."""
    token = await operator_token(gateway)
    member = await gateway.member(points=10_000)
    terminal = await gateway.terminal()
    code = member.code()
    headers = {"Authorization": f"Bearer {token}"}
    async with gateway.session.get(gateway.base_url + "/v1/ops/console/live", headers=headers) as response:
        assert (200, "text/event-stream") == (response.status, response.content_type)
        frames = _frames(response)
        await _until(frames, lambda e, d: e == "summary", 5)
        _, sale, _ = await terminal.pay(code, 2_500)
        answered = time.monotonic()
        line = await _until(frames, lambda e, d: e == "payment" and d["payment_id"] == sale["payment_id"], 5)
        assert time.monotonic() - answered < 1.0
        assert ("approved", 2_500, "GS25 Gangnam Station", 2_500) == (line["outcome"], line["amount"], line["store_name"],
                                                               line["points"])
        _, declined, _ = await terminal.pay(code, 2_500)
        assert "replayed_code" == declined["decline"]["code"]
        summary = await _until(frames, lambda e, d: e == "summary" and "replayed_code" in d["sales"]["by_outcome"], 3)
    assert ({"replayed_code": 1}, 1, 2) == (summary["sales"]["by_outcome"], summary["sales"]["ok"], summary["sales"]["total"])
    assert summary["sales"]["latency_ms"]["p99"] is not None
    assert {"lag", "pending"} == set(summary["journal"])
    gs25 = next(m for m in summary["settlement"]["merchants"] if m["merchant_id"] == "gs25")
    assert "nothing" == gs25["yesterday"]["state"]
    assert ["taishin"] == [p["partner"] for p in summary["partners"]]


async def test_the_console_sees_every_gateway_process_sales(settings, store):
    """Two gateway processes on one Redis: a console on one shows the other's sales and counts both processes."""
    async with serving(settings) as first, serving(settings) as second:
        token = await operator_token(first)
        member = await second.member(points=10_000)
        terminal = await second.terminal()
        headers = {"Authorization": f"Bearer {token}"}
        async with first.session.get(first.base_url + "/v1/ops/console/live", headers=headers) as response:
            frames = _frames(response)
            _, sale, _ = await terminal.pay(member.code(), 1_000)
            await _until(frames, lambda e, d: e == "payment" and d["payment_id"] == sale["payment_id"], 3)
            summary = await _until(frames, lambda e, d: e == "summary" and d["workers"] == 2, 3)
    assert (1, 1) == (summary["sales"]["ok"], summary["sales"]["total"])


@pytest.mark.slow
@pytest.mark.single_redis("starts `gateway serve` workers on the one server's URL")
async def test_gateway_serve_workers_all_report_to_the_console_and_the_cli_issues_tokens(redis_server, store, tmp_path):
    """`gateway serve --workers 2`: the console counts both workers; `gateway operators console-token` signs in."""
    keyring = tmp_path / "keyring.json"
    env = dict(os.environ, REDIS_URL=redis_server.url, POINTGATE_KEYRING_PATH=str(keyring))
    cli = [sys.executable, "-m", "gateway.cli", "operators"]
    for command in (["add", "ops"], ["console-token", "ops", "--hours", "1"]):
        done = subprocess.run(cli + command, env=env, capture_output=True, text=True, timeout=60)
        assert 0 == done.returncode, done.stderr
    token = next(line.split()[-1] for line in done.stdout.splitlines() if "token:" in line)
    gateway, port = start_gateway(redis_server.url, keyring, workers=2)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/v1/ops/console/live",
                                   headers={"Authorization": f"Bearer {token}"}) as response:
                summary = await _until(_frames(response), lambda e, d: e == "summary" and d["workers"] == 2, 10)
        assert 2 == summary["workers"]
        done = subprocess.run(cli + ["revoke-console-tokens", "ops"], env=env, capture_output=True, text=True, timeout=60)
        assert (0, "1 console token(s)") == (done.returncode, done.stdout.split(" of ")[0].split(": ")[1])
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/v1/ops/console/session",
                                   headers={"Authorization": f"Bearer {token}"}) as response:
                assert 401 == response.status
    finally:
        assert 0 == stop(gateway)


async def test_the_console_shows_a_partner_going_down_and_its_circuit_opening(networks):
    """Taishin answers, then goes down: the console counts its calls and errors and shows the circuit open."""
    home = networks.home
    token = await operator_token(home)
    gs25, member = await home.terminal(), await taishin_member(networks, 10_000)
    _, first, _ = await gs25.pay(member.code(), 1_000)
    assert "approved" == first["status"]
    networks.proxy.down = True
    for _ in range(3):  # FAST: the circuit opens after three failures in a row
        _, payment, _ = await gs25.pay(member.code(), 1_000)
        assert "partner_unavailable" == payment["decline"]["code"]
    async with home.session.get(home.base_url + "/v1/ops/console/live",
                                headers={"Authorization": f"Bearer {token}"}) as response:
        summary = await _until(_frames(response), lambda e, d: e == "summary" and d["partners"], 3)
    networks.proxy.down = False
    [taishin] = summary["partners"]
    assert ("taishin", "open", True) == (taishin["partner"], taishin["circuit"], taishin["errors"] >= 3)
    assert taishin["calls"] > taishin["errors"] and taishin["latency_ms"]["p99"] is not None
    assert {"approved": 1, "partner_unavailable": 3} == {"approved": summary["sales"]["ok"], **summary["sales"]["by_outcome"]}
