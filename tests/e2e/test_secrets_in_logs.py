"""No secret reaches a log: a whole day's story with every logger at DEBUG, then the text is searched.

The story: a member enrols (bearer token, device secret), fetches online codes and a code image,
pays at a terminal (signed), is refunded, looked up by order reference, credited by an
affiliate, links a bank account and cashes out through the bank simulator; and the failures
that carry secrets in their requests: a wrong signature, a replayed nonce, a code sent in a
field that does not exist, a declined code. Everything every logger wrote (the gateway's access
and error logs, aiohttp's, the bank's) is then searched for each secret value used.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets

import pytest

from gateway.app import MERCHANTS
from simulators.bank import Bank

from tests.e2e.conftest import serving
from tests.e2e.test_cashouts import API_KEY, cash_settings

ACCOUNT_NUMBER = "3021987654321"  # a bank account number of the member's, in full


@pytest.fixture
async def bank():
    async with Bank(api_key=API_KEY) as running:
        yield running


@pytest.fixture
async def gateway(settings, store, bank):
    async with serving(cash_settings(settings, bank)) as running:
        yield running


def _logged_text(records: list[logging.LogRecord], caplog_text: str) -> str:
    """Everything the records hold: the formatted lines, exception text, and every attribute (extras too)."""
    return "\n".join([caplog_text] + [repr(vars(record)) for record in records])


async def test_no_secret_of_a_days_story_is_in_any_log(gateway, caplog):
    """After enrolment, codes, sales, refunds, signed calls and a cash-out, no log holds a secret, token, code, signature or account number."""
    caplog.set_level(logging.DEBUG)
    session, base = gateway.session, gateway.base_url
    secrets_used: dict[str, str] = {"bank API key": API_KEY, "account number": ACCOUNT_NUMBER}

    async with session.post(base + "/v1/members", json={}) as response:
        enrolled = await response.json()
    member_id, token, device = enrolled["member_id"], enrolled["token"], enrolled["device"]
    secrets_used |= {"bearer token": token, "device secret (base32)": device["secret_b32"],
                     "device secret (hex)": base64.b32decode(device["secret_b32"] + "=" * (-len(device["secret_b32"]) % 8)).hex()}
    bearer = {"Authorization": f"Bearer {token}"}
    async with session.get(f"{base}/v1/members/{member_id}/devices/{device['slot']}/codes?count=3", headers=bearer) as response:
        codes = [c["code"] for c in (await response.json())["codes"]]
    async with session.get(f"{base}/v1/members/{member_id}/devices/{device['slot']}/code.png", headers=bearer) as response:
        assert 200 == response.status
    secrets_used |= {f"code {i}": code for i, code in enumerate(codes)}

    card = await gateway.terminal("hana-card", key=await gateway.app[MERCHANTS].issue_key("hana-card"))
    terminal = await gateway.terminal()
    secrets_used |= {"terminal signing secret": terminal.secret, "affiliate signing secret": card.secret}
    status, _, _ = await card.send("POST", "/v1/earnings", {"member_id": member_id, "points": 50_000,
                                                             "affiliate_ref": "logs-" + secrets.token_hex(4)})
    assert 201 == status

    signatures: list[str] = []

    async def signed(method: str, path: str, document=None, headers=None):
        body = json.dumps(document).encode() if document is not None else b""
        sent = headers or terminal.headers(method, path, body, "logs-" + secrets.token_hex(8) if method == "POST" else None)
        signatures.append(sent["X-PG-Signature"])
        return await terminal.send(method, path, body=body, headers=sent)

    sale = {"code": codes[0], "amount": 4_500, "currency": "KRW", "order_ref": "LOGS-1", **terminal.here()}
    status, payment, _ = await signed("POST", "/v1/payments", sale)
    assert (201, "approved") == (status, payment["status"])
    assert 201 == (await signed("POST", f"/v1/payments/{payment['payment_id']}/refunds", {"amount": 500, **terminal.here()}))[0]
    assert 200 == (await signed("GET", f"/v1/payments/{payment['payment_id']}"))[0]
    assert 200 == (await signed("GET", "/v1/payments?order_ref=LOGS-1"))[0]
    # Refusals carry the secrets too: a wrong signature, a replay, a code in an unknown field, a used code.
    forged = terminal.headers("POST", "/v1/payments", b"{}", "logs-forged-1")
    forged["X-PG-Signature"] = secrets.token_hex(32)
    assert 401 == (await signed("POST", "/v1/payments", {"x": 1}, headers=forged))[0]
    replayed = terminal.headers("GET", "/v1/payments?order_ref=LOGS-1", b"")
    assert 200 == (await signed("GET", "/v1/payments?order_ref=LOGS-1", headers=replayed))[0]
    assert 401 == (await signed("GET", "/v1/payments?order_ref=LOGS-1", headers=replayed))[0]
    assert 422 == (await signed("POST", "/v1/payments", sale | {"order_ref": "LOGS-2", "coupon": codes[1]}))[0]
    status, declined, _ = await signed("POST", "/v1/payments", sale | {"order_ref": "LOGS-3"})
    assert (201, "declined") == (status, declined["status"])
    secrets_used |= {f"signature {i}": signature for i, signature in enumerate(signatures)}

    async with session.post(f"{base}/v1/members/{member_id}/bank-accounts", headers=bearer,
                            json={"bank_code": "081", "account_number": ACCOUNT_NUMBER, "holder_name": "Minji Kim"}) as response:
        account = await response.json()
    async with session.post(f"{base}/v1/members/{member_id}/cashouts", headers=bearer | {"Idempotency-Key": "logs-cashout-1"},
                            json={"points": 10_000, "bank_account_id": account["bank_account_id"]}) as response:
        cashout = await response.json()
    assert "paid" == cashout["state"], cashout

    text = _logged_text(caplog.records, caplog.text)
    access_lines = [r for r in caplog.records if r.name == "pointgate.access"]
    assert len(access_lines) >= 14, "the story was logged"  # the search below would pass on an empty log
    found = {what: value for what, value in secrets_used.items() if value and value in text}
    assert {} == found
