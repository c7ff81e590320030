"""Merchant authentication and isolation through HTTP: signatures, replays, keys, terminals, other merchants."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from gateway import signing
from gateway.app import MERCHANTS, STORE
from gateway.merchants import MerchantError, MerchantRegistry

SALE_PATH = "/v1/payments"


def sale_body(terminal, code: str, amount: int = 1_000, order_ref: str | None = None, **extra) -> bytes:
    return json.dumps({"code": code, "amount": amount, "currency": "KRW", "order_ref": order_ref or "ord-" + secrets.token_hex(6),
                       "store_id": terminal.store_id, "terminal_id": terminal.terminal_id, **extra}).encode()


def idem() -> str:
    return "idem-" + secrets.token_hex(8)


def problem_is_clean(problem, headers, *secret_texts: str) -> None:
    """A problem body: problem+json, a code and detail, the request id of the header, and no secret text."""
    assert headers["content-type"].startswith("application/problem+json")
    assert problem["code"] and problem["detail"]
    assert headers["x-request-id"] == problem["request_id"]
    raw = headers["_raw"].decode()
    for text in secret_texts:
        assert text not in raw


# -- tampering --------------------------------------------------------------


def _tamper_method(t, body, h):
    return "POST", SALE_PATH, body, t.headers("PATCH", SALE_PATH, body, h["Idempotency-Key"])


def _tamper_path(t, body, h):
    return "POST", SALE_PATH, body, t.headers("POST", "/v1/reversals", body, h["Idempotency-Key"])


def _tamper_path_query(t, body, h):
    return "POST", SALE_PATH + "?x=1", body, h


def _tamper_body(t, body, h):
    return "POST", SALE_PATH, body.replace(b'"amount": 1000', b'"amount": 1001'), h


def _tamper_body_whitespace(t, body, h):
    return "POST", SALE_PATH, body + b" ", h


def _tamper_timestamp(t, body, h):
    return "POST", SALE_PATH, body, h | {"X-PG-Timestamp": str(int(h["X-PG-Timestamp"]) - 1)}


def _tamper_nonce(t, body, h):
    return "POST", SALE_PATH, body, h | {"X-PG-Nonce": secrets.token_hex(12)}


def _tamper_signature(t, body, h):
    sig = h["X-PG-Signature"]
    return "POST", SALE_PATH, body, h | {"X-PG-Signature": sig[:-1] + ("0" if sig[-1] != "0" else "1")}


def _tamper_key_id_unknown(t, body, h):
    return "POST", SALE_PATH, body, h | {"X-PG-Key-Id": "gs25-k99"}


def _tamper_merchant(t, body, h):
    return "POST", SALE_PATH, body, h | {"X-PG-Merchant": "cu"}


def _tamper_merchant_unknown(t, body, h):
    return "POST", SALE_PATH, body, h | {"X-PG-Merchant": "nosuchmerchant"}


def _drop_signature(t, body, h):
    return "POST", SALE_PATH, body, {k: v for k, v in h.items() if k != "X-PG-Signature"}


def _drop_nonce(t, body, h):
    return "POST", SALE_PATH, body, {k: v for k, v in h.items() if k != "X-PG-Nonce"}


def _uppercase_signature(t, body, h):
    return "POST", SALE_PATH, body, h | {"X-PG-Signature": h["X-PG-Signature"].upper()}


def _short_nonce(t, body, h):
    return "POST", SALE_PATH, body, h | {"X-PG-Nonce": "short"}


def _timestamp_text(t, body, h):
    return "POST", SALE_PATH, body, h | {"X-PG-Timestamp": "0" + h["X-PG-Timestamp"]}


@pytest.mark.parametrize(("tamper", "code"), [
    (_tamper_method, "bad_signature"),
    (_tamper_path, "bad_signature"),
    (_tamper_path_query, "bad_signature"),
    (_tamper_body, "bad_signature"),
    (_tamper_body_whitespace, "bad_signature"),
    (_tamper_timestamp, "bad_signature"),
    (_tamper_nonce, "bad_signature"),
    (_tamper_signature, "bad_signature"),
    (_tamper_key_id_unknown, "unknown_key"),
    (_tamper_merchant, "unknown_key"),
    (_tamper_merchant_unknown, "unknown_key"),
    (_drop_signature, "signature_missing"),
    (_drop_nonce, "signature_missing"),
    (_uppercase_signature, "signature_missing"),
    (_short_nonce, "signature_missing"),
    (_timestamp_text, "signature_missing"),
], ids=lambda v: getattr(v, "__name__", v))
async def test_tampered_sale_is_refused_and_moves_nothing(gateway, tamper, code):
    """Any signed part of a sale changed after signing is refused 401 with its code, and no point moves."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    member_code = member.code()
    body = json.dumps({"code": member_code, "amount": 1000, "currency": "KRW", "order_ref": "sec-1",
                       "store_id": terminal.store_id, "terminal_id": terminal.terminal_id}).encode()
    signed = terminal.headers("POST", SALE_PATH, body, idem())
    method, path, sent_body, headers = tamper(terminal, body, signed)
    status, problem, response_headers = await terminal.send(method, path, body=sent_body, headers=headers)
    assert (401, code) == (status, problem["code"])
    problem_is_clean(problem, response_headers, member_code, signed["X-PG-Signature"], terminal.secret)
    assert 5_000 == await gateway.balance(member)
    # The untampered request still goes through: a refused forgery burns no nonce.
    status, payment, _ = await terminal.send("POST", SALE_PATH, body=body, headers=signed)
    assert (201, "approved") == (status, payment["status"])


async def test_other_active_key_id_with_first_keys_signature_is_bad_signature(gateway):
    """A request signed with key 1 but naming key 2 (also active) is a bad signature."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    key2, _ = await gateway.app[MERCHANTS].issue_key("gs25")
    body = sale_body(terminal, member.code())
    headers = terminal.headers("POST", SALE_PATH, body, idem()) | {"X-PG-Key-Id": key2}
    status, problem, _ = await terminal.send("POST", SALE_PATH, body=body, headers=headers)
    assert (401, "bad_signature") == (status, problem["code"])
    assert 5_000 == await gateway.balance(member)


async def test_tampered_query_on_lookup_is_refused(gateway):
    """A GET by order reference whose query was changed after signing is a bad signature."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    await terminal.pay(member.code(), 1_000, order_ref="SEC-Q-1")
    await terminal.pay(member.code(), 1_000, order_ref="SEC-Q-2")
    headers = terminal.headers("GET", "/v1/payments?order_ref=SEC-Q-1", b"")
    status, problem, _ = await terminal.send("GET", "/v1/payments?order_ref=SEC-Q-2", headers=headers)
    assert (401, "bad_signature") == (status, problem["code"])
    status, found, _ = await terminal.send("GET", "/v1/payments?order_ref=SEC-Q-1", headers=headers)
    assert (200, "SEC-Q-1") == (status, found["order_ref"])


async def test_tampered_payment_id_on_get_is_refused(gateway):
    """A GET whose payment id in the path was changed after signing is a bad signature."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    _, p1, _ = await terminal.pay(member.code(), 1_000)
    _, p2, _ = await terminal.pay(member.code(), 1_000)
    headers = terminal.headers("GET", f"/v1/payments/{p1['payment_id']}", b"")
    status, problem, _ = await terminal.send("GET", f"/v1/payments/{p2['payment_id']}", headers=headers)
    assert (401, "bad_signature") == (status, problem["code"])


@pytest.mark.parametrize("offset_s", [-301, 301, -3600, 10**6])
async def test_clock_off_by_more_than_the_window_is_refused_with_server_time(gateway, offset_s):
    """A terminal clock more than 300 s off is timestamp_out_of_window, carrying the server's time."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    terminal.clock_offset_s = offset_s
    before = int(time.time())
    status, problem, headers = await terminal.pay(member.code(), 1_000)
    assert (401, "timestamp_out_of_window") == (status, problem["code"])
    assert before <= problem["server_time_s"] <= int(time.time())
    problem_is_clean(problem, headers, terminal.secret)
    assert 5_000 == await gateway.balance(member)


@pytest.mark.parametrize("offset_s", [-295, 295])
async def test_clock_within_the_window_is_accepted(gateway, offset_s):
    """A terminal clock a little under 300 s off is still accepted."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    terminal.clock_offset_s = offset_s
    status, payment, _ = await terminal.pay(member.code(), 1_000)
    assert (201, "approved") == (status, payment["status"])


async def test_unsigned_request_is_signature_missing(gateway):
    """A sale with no signature headers at all is signature_missing and moves nothing."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    body = sale_body(terminal, member.code())
    status, problem, _ = await terminal.send("POST", SALE_PATH, body=body,
                                             headers={"Content-Type": "application/json", "Idempotency-Key": idem()})
    assert (401, "signature_missing") == (status, problem["code"])
    assert 5_000 == await gateway.balance(member)


async def test_duplicated_signature_header_is_signature_missing(gateway):
    """A signature header sent twice (with different values) is refused."""
    from multidict import CIMultiDict

    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    body = sale_body(terminal, member.code())
    signed = terminal.headers("POST", SALE_PATH, body, idem())
    headers = CIMultiDict(signed)
    headers.add("X-PG-Nonce", secrets.token_hex(12))
    status, problem, _ = await terminal.send("POST", SALE_PATH, body=body, headers=headers)
    assert (401, "signature_missing") == (status, problem["code"])
    assert 5_000 == await gateway.balance(member)


# -- replays --------------------------------------------------------------------


async def test_replayed_request_is_nonce_replayed(gateway):
    """The very same signed sale (headers and body) sent twice: the second is 401 nonce_replayed, points move once."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    body = sale_body(terminal, member.code())
    headers = terminal.headers("POST", SALE_PATH, body, idem())
    first, _, _ = await terminal.send("POST", SALE_PATH, body=body, headers=headers)
    second, problem, response_headers = await terminal.send("POST", SALE_PATH, body=body, headers=headers)
    assert (201, 401, "nonce_replayed") == (first, second, problem["code"])
    problem_is_clean(problem, response_headers, headers["X-PG-Signature"], terminal.secret)
    assert 4_000 == await gateway.balance(member)


async def test_replayed_lookup_is_nonce_replayed(gateway):
    """Reads are signed too: the same signed GET twice is refused the second time."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    _, payment, _ = await terminal.pay(member.code(), 1_000)
    path = f"/v1/payments/{payment['payment_id']}"
    headers = terminal.headers("GET", path, b"")
    first, _, _ = await terminal.send("GET", path, headers=headers)
    second, problem, _ = await terminal.send("GET", path, headers=headers)
    assert (200, 401, "nonce_replayed") == (first, second, problem["code"])


async def test_replayed_refund_is_nonce_replayed(gateway):
    """A captured refund sent again is refused, so it refunds once."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    _, payment, _ = await terminal.pay(member.code(), 3_000)
    path = f"/v1/payments/{payment['payment_id']}/refunds"
    body = json.dumps({"amount": 1_000, **terminal.here()}).encode()
    headers = terminal.headers("POST", path, body, idem())
    first, _, _ = await terminal.send("POST", path, body=body, headers=headers)
    second, problem, _ = await terminal.send("POST", path, body=body, headers=headers)
    assert (201, 401, "nonce_replayed") == (first, second, problem["code"])
    assert 3_000 == await gateway.balance(member)


# -- key revocation and rotation --------------------------------------------------


async def test_revoked_key_is_unknown_key(gateway):
    """After the key is revoked, its sales and lookups are 401 unknown_key and move nothing."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    _, payment, _ = await terminal.pay(member.code(), 1_000)
    assert await gateway.app[MERCHANTS].revoke_key("gs25", terminal.key_id)
    status, problem, headers = await terminal.pay(member.code(), 1_000)
    get_status, get_problem, _ = await terminal.send("GET", f"/v1/payments/{payment['payment_id']}")
    assert (401, "unknown_key") == (status, problem["code"])
    assert (401, "unknown_key") == (get_status, get_problem["code"])
    problem_is_clean(problem, headers, terminal.secret)
    assert 4_000 == await gateway.balance(member)


async def test_revoked_key_still_cached_cannot_move_points(gateway):
    """A key revoked by another process while this one still caches its secret: the sale is 401 unknown_key."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    await terminal.pay(member.code(), 1_000)  # caches the secret in this process
    registry = gateway.app[MERCHANTS]
    assert (terminal.merchant_id, terminal.key_id) in registry._secrets
    other_process = MerchantRegistry(gateway.app[STORE], registry.keyring)
    assert await other_process.revoke_key("gs25", terminal.key_id)
    assert (terminal.merchant_id, terminal.key_id) in registry._secrets  # still cached here
    sale, problem, _ = await terminal.pay(member.code(), 1_000)
    assert (401, "unknown_key") == (sale, problem["code"])
    assert 4_000 == await gateway.balance(member)


async def test_revoked_key_still_cached_cannot_refund_cancel_or_reverse(gateway):
    """Within the cache window a revoked key cannot refund, cancel or reverse either (every script checks the key)."""
    terminal, member = await gateway.terminal(), await gateway.member(points=9_000)
    _, p1, _ = await terminal.pay(member.code(), 1_000)
    _, p2, _ = await terminal.pay(member.code(), 1_000, order_ref="SEC-REV-1")
    other_process = MerchantRegistry(gateway.app[STORE], gateway.app[MERCHANTS].keyring)
    assert await other_process.revoke_key("gs25", terminal.key_id)
    refund, r, _ = await terminal.send("POST", f"/v1/payments/{p1['payment_id']}/refunds", {"amount": 500, **terminal.here()})
    cancel, c, _ = await terminal.send("POST", f"/v1/payments/{p1['payment_id']}/cancel", terminal.here())
    reverse, v, _ = await terminal.send("POST", "/v1/reversals", {"order_ref": "SEC-REV-1", **terminal.here()})
    assert [(401, "unknown_key")] * 3 == [(refund, r["code"]), (cancel, c["code"]), (reverse, v["code"])]
    assert 7_000 == await gateway.balance(member)


async def test_two_active_keys_both_work_and_a_third_is_refused(gateway):
    """During a rotation both active keys sign valid requests; a third active key cannot be issued."""
    registry = gateway.app[MERCHANTS]
    old = await gateway.terminal()
    new = await gateway.terminal(terminal_id="t2")
    member = await gateway.member(points=10_000)
    s1, p1, _ = await old.pay(member.code(), 1_000)
    s2, p2, _ = await new.pay(member.code(), 1_000)
    assert (201, 201, "approved", "approved") == (s1, s2, p1["status"], p2["status"])
    assert old.key_id != new.key_id
    with pytest.raises(MerchantError) as refused:
        await registry.issue_key("gs25")
    assert "too_many_active_keys" == refused.value.code


async def test_rotation_loses_no_request(gateway):
    """Terminals move from key 1 to key 2 one by one while selling; every sale is approved; then key 1 is revoked."""
    registry = gateway.app[MERCHANTS]
    key1 = await registry.issue_key("gs25")
    tills = [("gs25-gangnam-01", "t1"), ("gs25-gangnam-01", "t2"), ("gs25-hongdae-02", "t1")]
    terminals = [await gateway.terminal("gs25", s, t, key=key1) for s, t in tills]
    member = await gateway.member(points=100_000)
    key2 = await registry.issue_key("gs25")
    statuses = []
    for moving in terminals:
        for terminal in terminals:
            statuses.append((await terminal.pay(member.code(), 100))[0])
        moving.key_id, moving.secret = key2
    assert await registry.revoke_key("gs25", key1[0])
    for terminal in terminals:
        statuses.append((await terminal.pay(member.code(), 100))[0])
    assert [201] * 12 == statuses
    assert 100_000 - 1_200 == await gateway.balance(member)
    stale = await gateway.terminal(key=key1)
    status, problem, _ = await stale.pay(member.code(), 100)
    assert (401, "unknown_key") == (status, problem["code"])


# -- terminals and merchants --------------------------------------------------------


@pytest.mark.parametrize(("store_id", "terminal_id"), [
    ("cu-jongno-01", "t1"),
    ("gs25-hongdae-02", "t2"),
    ("gs25-nowhere-99", "t1"),
])
async def test_terminal_not_of_the_merchant_is_unknown_terminal(gateway, store_id, terminal_id):
    """A GS25-signed sale naming CU's store (or a store or terminal GS25 does not have) is 403 unknown_terminal."""
    terminal, member = await gateway.terminal("gs25", store_id, terminal_id), await gateway.member(points=5_000)
    status, problem, headers = await terminal.pay(member.code(), 1_000)
    assert (403, "unknown_terminal") == (status, problem["code"])
    problem_is_clean(problem, headers, terminal.secret)
    assert 5_000 == await gateway.balance(member)


async def test_refund_from_a_terminal_not_of_the_merchant_is_refused(gateway):
    """A GS25 refund naming CU's store is 403 and gives nothing back."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    _, payment, _ = await terminal.pay(member.code(), 2_000)
    status, problem, _ = await terminal.send("POST", f"/v1/payments/{payment['payment_id']}/refunds",
                                             {"amount": 500, "store_id": "cu-jongno-01", "terminal_id": "t1"})
    assert (403, "unknown_terminal") == (status, problem["code"])
    assert 3_000 == await gateway.balance(member)


async def _gs25_payment(gateway):
    gs25, cu = await gateway.terminal(), await gateway.terminal("cu", "cu-jongno-01", "t1")
    member = await gateway.member(points=10_000)
    _, payment, _ = await gs25.pay(member.code(), 4_000, order_ref="GS25-SHARED-1")
    assert "approved" == payment["status"]
    return gs25, cu, member, payment


async def test_other_merchant_cannot_get_or_find_a_payment(gateway):
    """CU gets 404 payment_not_found for GS25's payment id and order reference, the same as for no payment."""
    gs25, cu, member, payment = await _gs25_payment(gateway)
    s1, by_id, _ = await cu.send("GET", f"/v1/payments/{payment['payment_id']}")
    s2, by_ref, _ = await cu.send("GET", "/v1/payments?order_ref=GS25-SHARED-1")
    absent = "pay_" + payment["payment_id"][4:7] + secrets.token_hex(8)
    s3, none, _ = await cu.send("GET", f"/v1/payments/{absent}")
    assert (404, 404, 404) == (s1, s2, s3)
    assert ["payment_not_found"] * 3 == [by_id["code"], by_ref["code"], none["code"]]
    assert none["detail"] == by_id["detail"]
    assert payment["payment_id"] not in json.dumps(by_ref)


async def test_other_merchant_cannot_cancel_or_refund(gateway):
    """CU cancelling or refunding GS25's payment is 404 payment_not_found and moves nothing."""
    gs25, cu, member, payment = await _gs25_payment(gateway)
    s1, cancel, _ = await cu.send("POST", f"/v1/payments/{payment['payment_id']}/cancel", cu.here())
    s2, refund, _ = await cu.send("POST", f"/v1/payments/{payment['payment_id']}/refunds", {"amount": 4_000, **cu.here()})
    assert [(404, "payment_not_found")] * 2 == [(s1, cancel["code"]), (s2, refund["code"])]
    assert 6_000 == await gateway.balance(member)
    _, fetched, _ = await gs25.send("GET", f"/v1/payments/{payment['payment_id']}")
    assert ("approved", 0, []) == (fetched["status"], fetched["refunded_amount"], fetched["refunds"])


async def test_other_merchant_reversal_by_order_ref_does_not_touch_the_payment(gateway):
    """CU reversing GS25's order reference only records a reversal in CU's own namespace."""
    gs25, cu, member, payment = await _gs25_payment(gateway)
    status, reversal, _ = await cu.send("POST", "/v1/reversals", {"order_ref": "GS25-SHARED-1", **cu.here()})
    assert (200, "recorded", None) == (status, reversal["outcome"], reversal["payment"])
    assert 6_000 == await gateway.balance(member)
    _, fetched, _ = await gs25.send("GET", f"/v1/payments/{payment['payment_id']}")
    assert "approved" == fetched["status"]
    # GS25 can still reverse its own order.
    _, own, _ = await gs25.send("POST", "/v1/reversals", {"order_ref": "GS25-SHARED-1", **gs25.here()})
    assert ("reversed", 10_000) == (own["outcome"], await gateway.balance(member))


async def test_other_merchant_batch_does_not_see_the_payment(gateway):
    """CU's batch close counts nothing of GS25's sales."""
    gs25, cu, member, payment = await _gs25_payment(gateway)
    _, batch, _ = await cu.send("POST", "/v1/terminals/t1/batches", {"store_id": "cu-jongno-01", "sale_count": 0, "sale_amount": 0})
    assert ("matched", 0) == (batch["status"], batch["gateway"]["sale_count"])


# -- problem bodies -------------------------------------------------------------------


async def test_problem_bodies_echo_the_request_id_and_hide_secrets(gateway):
    """Every problem is problem+json with code, detail and the request id of the X-Request-Id header; no code digits or secrets."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    code = member.code()
    body = sale_body(terminal, code, wrong_field=code)
    headers = terminal.headers("POST", SALE_PATH, body, idem(), **{"X-Request-Id": "pos-till-7.42"})
    status, problem, response_headers = await terminal.send("POST", SALE_PATH, body=body, headers=headers)
    assert (422, "invalid_request", "pos-till-7.42") == (status, problem["code"], problem["request_id"])
    problem_is_clean(problem, response_headers, code, headers["X-PG-Signature"], terminal.secret)
    bad = headers | {"X-PG-Signature": "0" * 64, "X-Request-Id": "has spaces in it"}
    status, problem, response_headers = await terminal.send("POST", SALE_PATH, body=body, headers=bad)
    assert (401, "bad_signature") == (status, problem["code"])
    assert problem["request_id"].startswith("req_")
    problem_is_clean(problem, response_headers, code, headers["X-PG-Signature"], terminal.secret)


async def test_problem_for_an_oversized_code_does_not_echo_it(gateway):
    """A code too long for the schema is refused without repeating the digits."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    code = member.code() * 3
    status, problem, headers = await terminal.pay(code, 1_000)
    assert (422, "invalid_request") == (status, problem["code"])
    problem_is_clean(problem, headers, code, code[:24], terminal.secret)


async def test_signature_problems_never_include_the_secret_or_signature(gateway):
    """The messages of every signature failure name what is wrong, never the secret or the signature."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    code = member.code()
    body = sale_body(terminal, code)
    signed = terminal.headers("POST", SALE_PATH, body, idem())
    expected = signing.sign(terminal.secret, "POST", SALE_PATH, int(signed["X-PG-Timestamp"]), signed["X-PG-Nonce"],
                            "gs25", terminal.key_id, body + b"x")
    for headers, sent in ((signed, body + b"x"), (signed | {"X-PG-Key-Id": "gs25-k77"}, body)):
        status, problem, response_headers = await terminal.send("POST", SALE_PATH, body=sent, headers=headers)
        assert 401 == status
        problem_is_clean(problem, response_headers, code, signed["X-PG-Signature"], expected, terminal.secret)
