"""Attacks on PG1-HMAC-SHA256 through HTTP, for every kind of signer, and the constant-time compare.

Each attack takes a request that a principal signed correctly and changes one thing: a signed
part after signing, the clock, the nonce's freshness, the key's status, or whose key it is. Each
is refused 401 with its code, and the untouched request is then accepted, so it was the change
that was refused. test_merchant_security.py holds the terminal's own sale cases in depth; here
the same attacks run against a terminal, a partner network, an affiliate and an operator.
"""

from __future__ import annotations

import hmac
import json
import secrets
import statistics
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import pytest

from gateway import signing
from gateway.app import MERCHANTS

from tests.e2e.test_coupon_campaigns import operator


@dataclass
class Signed:
    """One request as its principal would send it, and what a genuine one is answered."""

    method: str
    path: str
    body: bytes
    ok_status: int


async def _sale(gateway, signer) -> Signed:
    member = await gateway.member(points=50_000)
    body = json.dumps({"code": member.code(), "amount": 1_000, "currency": "KRW", "order_ref": "atk-" + secrets.token_hex(4),
                       "store_id": signer.store_id, "terminal_id": signer.terminal_id}).encode()
    return Signed("POST", "/v1/payments", body, 201)


async def _interop_lookup(gateway, signer) -> Signed:
    # No such payment: 404 payment_not_found is the answer a genuine partner gets past authentication.
    return Signed("GET", "/v1/interop/payments?partner_ref=TS-ATK-0001", b"", 404)


async def _earning(gateway, signer) -> Signed:
    member = await gateway.member()
    body = json.dumps({"member_id": member.member_id, "points": 100, "affiliate_ref": "atk-" + secrets.token_hex(4)}).encode()
    return Signed("POST", "/v1/earnings", body, 201)


async def _campaigns(gateway, signer) -> Signed:
    return Signed("GET", "/v1/campaigns", b"", 200)


async def _terminal(gateway):
    return await gateway.terminal("gs25")


async def _partner(gateway):
    return await gateway.terminal("taishin")


async def _affiliate(gateway):
    return await gateway.terminal("hana-card")


SIGNERS: dict[str, tuple[Callable[..., Awaitable], Callable[..., Awaitable[Signed]], str]] = {
    "terminal": (_terminal, _sale, "cu"),
    "partner": (_partner, _interop_lookup, "hana-card"),
    "affiliate": (_affiliate, _earning, "hana-bank"),
    "operator": (operator, _campaigns, "cu"),
}
"""Who signs, the request they make, and another principal whose key they must not be able to use."""


def _flip_last(hex_text: str) -> str:
    return hex_text[:-1] + ("0" if hex_text[-1] != "0" else "1")


def _resign(signer, request: Signed, **changes) -> dict[str, str]:
    """Headers signed by `signer` over `request` with some inputs of the signature changed."""
    inputs = dict(method=request.method, raw_path=request.path, body=request.body, merchant_id=signer.merchant_id,
                  key_id=signer.key_id, now_s=time.time(), nonce=secrets.token_hex(12), secret=signer.secret)
    inputs.update(changes)
    headers = signing.signed_headers(**inputs)
    if request.body:
        headers["Content-Type"] = "application/json"
    return headers


# Each attack: (signer, request, its genuine headers) -> (method, path, body, headers) as sent.
def _tampered_method(s, r, h):
    return r.method, r.path, r.body, _resign(s, r, method="PUT" if r.method == "POST" else "DELETE") | _idem(h)


def _tampered_path(s, r, h):
    return r.method, r.path, r.body, _resign(s, r, raw_path="/v1/reversals") | _idem(h)


def _tampered_query(s, r, h):
    return r.method, r.path + ("&" if "?" in r.path else "?") + "x=1", r.body, h


def _tampered_body(s, r, h):
    return r.method, r.path, r.body + b" ", h


def _tampered_timestamp(s, r, h):
    return r.method, r.path, r.body, h | {signing.HEADER_TIMESTAMP: str(int(h[signing.HEADER_TIMESTAMP]) - 1)}


def _tampered_nonce(s, r, h):
    return r.method, r.path, r.body, h | {signing.HEADER_NONCE: secrets.token_hex(12)}


def _last_digit_of_signature(s, r, h):
    return r.method, r.path, r.body, h | {signing.HEADER_SIGNATURE: _flip_last(h[signing.HEADER_SIGNATURE])}


def _first_digit_of_signature(s, r, h):
    sig = h[signing.HEADER_SIGNATURE]
    return r.method, r.path, r.body, h | {signing.HEADER_SIGNATURE: ("0" if sig[0] != "0" else "1") + sig[1:]}


def _expired(s, r, h):
    return r.method, r.path, r.body, _resign(s, r, now_s=time.time() - signing.TIMESTAMP_WINDOW_S - 1) | _idem(h)


def _from_the_future(s, r, h):
    return r.method, r.path, r.body, _resign(s, r, now_s=time.time() + signing.TIMESTAMP_WINDOW_S + 1) | _idem(h)


def _idem(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k == "Idempotency-Key"}


@pytest.mark.parametrize(("attack", "code"), [
    (_tampered_method, "bad_signature"),
    (_tampered_path, "bad_signature"),
    (_tampered_query, "bad_signature"),
    (_tampered_body, "bad_signature"),
    (_tampered_timestamp, "bad_signature"),
    (_tampered_nonce, "bad_signature"),
    (_last_digit_of_signature, "bad_signature"),
    (_first_digit_of_signature, "bad_signature"),
    (_expired, "timestamp_out_of_window"),
    (_from_the_future, "timestamp_out_of_window"),
], ids=lambda v: getattr(v, "__name__", v).lstrip("_"))
@pytest.mark.parametrize("who", list(SIGNERS))
async def test_a_changed_or_stale_request_is_refused_and_the_genuine_one_is_not(gateway, who, attack, code):
    """A request changed after signing, or signed more than 300 s before or after now, is 401 with its code."""
    make_signer, make_request, _ = SIGNERS[who]
    signer = await make_signer(gateway)
    request = await make_request(gateway, signer)
    genuine = signer.headers(request.method, request.path, request.body,
                             "atk-" + secrets.token_hex(8) if request.method == "POST" else None)
    method, path, body, headers = attack(signer, request, genuine)
    status, problem, _ = await signer.send(method, path, body=body, headers=headers)
    assert (401, code) == (status, problem["code"])
    status, answer, _ = await signer.send(request.method, request.path, body=request.body, headers=genuine)
    assert request.ok_status == status, answer


@pytest.mark.parametrize("who", list(SIGNERS))
async def test_a_replayed_request_is_refused_once_it_was_accepted(gateway, who):
    """The very same signed request sent twice: the first is answered, the second is 401 nonce_replayed."""
    make_signer, make_request, _ = SIGNERS[who]
    signer = await make_signer(gateway)
    request = await make_request(gateway, signer)
    headers = signer.headers(request.method, request.path, request.body,
                             "atk-" + secrets.token_hex(8) if request.method == "POST" else None)
    first, _, _ = await signer.send(request.method, request.path, body=request.body, headers=headers)
    second, problem, _ = await signer.send(request.method, request.path, body=request.body, headers=headers)
    assert (request.ok_status, 401, "nonce_replayed") == (first, second, problem["code"])


@pytest.mark.parametrize("who", list(SIGNERS))
async def test_a_revoked_key_is_refused(gateway, who):
    """After its key is revoked, a principal's correctly signed request is 401 unknown_key."""
    make_signer, make_request, _ = SIGNERS[who]
    signer = await make_signer(gateway)
    request = await make_request(gateway, signer)
    assert await gateway.app[MERCHANTS].revoke_key(signer.merchant_id, signer.key_id)
    status, problem, _ = await signer.send(request.method, request.path, body=request.body)
    assert (401, "unknown_key") == (status, problem["code"])


@pytest.mark.parametrize("who", list(SIGNERS))
async def test_another_principals_key_is_refused(gateway, who):
    """Another principal's key signs for nobody else: its key id under one's own name is unknown_key,
    its secret under one's own key id is bad_signature."""
    make_signer, make_request, other_id = SIGNERS[who]
    signer = await make_signer(gateway)
    request = await make_request(gateway, signer)
    other = await gateway.terminal(other_id)
    with_their_key_id = _resign(other, request, merchant_id=signer.merchant_id, key_id=other.key_id) | _idem_for(request)
    with_their_secret = _resign(signer, request, secret=other.secret) | _idem_for(request)
    s1, p1, _ = await signer.send(request.method, request.path, body=request.body, headers=with_their_key_id)
    s2, p2, _ = await signer.send(request.method, request.path, body=request.body, headers=with_their_secret)
    assert [(401, "unknown_key"), (401, "bad_signature")] == [(s1, p1["code"]), (s2, p2["code"])]
    status, _, _ = await signer.send(request.method, request.path, body=request.body)
    assert request.ok_status == status


def _idem_for(request: Signed) -> dict[str, str]:
    return {"Idempotency-Key": "atk-" + secrets.token_hex(8)} if request.method == "POST" else {}


# -- the compare is constant-time -------------------------------------------------

SECRET = "pgsk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
NOW_S = 1_800_000_000
TIMING_ROUNDS = 121
TIMING_CALLS_PER_ROUND = 300
"""Each round times both kinds back to back (about 3 ms each), so both meet the same load; the
median of the rounds' ratios shrugs off a noisy neighbour on a busy 2-core machine."""
TIMING_RATIO_MAX = 1.10
"""Generous: the median ratio wanders by about 2 % under load. A compare that stopped at the
first differing digit would make the all-but-last case slower by 63 character compares; the
test that the compare is hmac.compare_digest is the one that catches a leak that small."""


def _parsed(signature: str) -> signing.SignatureHeaders:
    return signing.SignatureHeaders("gs25", "gs25-k1", NOW_S, "n0nce-for-timing_01", signature)


def _right_signature() -> str:
    return signing.sign(SECRET, "POST", "/v1/payments", NOW_S, "n0nce-for-timing_01", "gs25", "gs25-k1", b"{}")


def _wrong_everywhere(right: str) -> str:
    return "".join("0" if c != "0" else "1" for c in right)


def test_the_signature_is_compared_with_hmac_compare_digest(monkeypatch):
    """check_signature compares the whole expected signature with the sent one through hmac.compare_digest."""
    seen: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signing.hmac, "compare_digest", spy)
    right = _right_signature()
    sent = _flip_last(right)
    with pytest.raises(signing.SignatureError):
        signing.check_signature(_parsed(sent), "POST", "/v1/payments", b"{}", SECRET, NOW_S)
    assert [(right, sent)] == seen


def test_verification_takes_as_long_whether_no_digit_or_all_but_the_last_match():
    """Refusing a signature that matches in no digit takes as long as one that matches in all but the last."""
    right = _right_signature()
    none_match, all_but_last = _parsed(_wrong_everywhere(right)), _parsed(_flip_last(right))

    def round_s(parsed) -> float:
        started = time.perf_counter()
        for _ in range(TIMING_CALLS_PER_ROUND):
            try:
                signing.check_signature(parsed, "POST", "/v1/payments", b"{}", SECRET, NOW_S)
            except signing.SignatureError:
                pass
        return time.perf_counter() - started

    ratios = []
    for i in range(TIMING_ROUNDS):
        if i % 2:  # alternate which goes first, so warming up favours neither
            none_s = round_s(none_match)
            last_s = round_s(all_but_last)
        else:
            last_s = round_s(all_but_last)
            none_s = round_s(none_match)
        ratios.append(last_s / none_s)
    ratio = statistics.median(ratios)
    assert 1 / TIMING_RATIO_MAX <= ratio <= TIMING_RATIO_MAX, f"all-but-last / none-match = {ratio:.3f}"
