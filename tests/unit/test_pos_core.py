"""The POS SDK's pure core: signing, backoff, retry decisions and the unknown-outcome procedure.

Operations are driven here with scripted replies: no network, no event loop.
"""

from __future__ import annotations

import json
import re
from pathlib import Path


import pos_sdk
from pos_sdk import core, errors
from pos_sdk.config import PosConfig
from pos_sdk.signing import canonical_request, signature_headers

DOC = (Path(__file__).resolve().parents[2] / "docs" / "signing.md").read_text()
SECRET = "pgsk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
CONFIG = PosConfig("http://127.0.0.1:8080", "gs25", "gs25-gangnam-01", "t1", "gs25-k1", SECRET,
                   unknown_outcome_deadline_s=10.0, retry_count_max=2)


def blocks_after(heading: str) -> list[str]:
    section = DOC[DOC.index(heading):]
    return re.findall(r"```[a-z]*\n(.*?)\n```", section, re.S)


def test_signature_matches_the_published_worked_example():
    """The SDK's own signing reproduces docs/signing.md example 1 byte for byte."""
    body, _sha, canonical, signature = blocks_after("### Example 1")[:4]
    assert canonical == canonical_request("POST", "/v1/payments", 1800000000, "7f3a9c1e5b2d4f60a8e1c3b5d7f9a2c4",
                                          "gs25", "gs25-k1", body.encode())
    headers = signature_headers(SECRET, "POST", "/v1/payments", body.encode(), "gs25", "gs25-k1",
                                1800000000, "7f3a9c1e5b2d4f60a8e1c3b5d7f9a2c4")
    assert signature.strip() == headers["X-PG-Signature"]


def test_public_api_is_what_init_exports():
    """Everything in pos_sdk.__all__ exists, and the clients are there."""
    assert all(hasattr(pos_sdk, name) for name in pos_sdk.__all__)
    assert {"PosClient", "AsyncPosClient", "PosConfig", "Declined", "Reversed"} <= set(pos_sdk.__all__)


def test_secret_is_not_in_the_config_repr():
    """Printing the configuration never shows the signing secret."""
    assert SECRET not in repr(CONFIG)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def context(clock: Clock | None = None, random_unit: float = 0.5) -> core.Context:
    return core.Context(CONFIG, clock or Clock(), lambda: random_unit, token_hex=lambda n: "ab" * n)


def response(status: int, document: dict, headers: dict | None = None) -> core.HttpResponse:
    return core.HttpResponse(status, {"content-type": "application/json", **(headers or {})}, json.dumps(document).encode())


def payment(status: str = "approved", decline: dict | None = None, **fields) -> dict:
    return {"payment_id": "pay_123abcdefabcdefabcd", "status": status, "decline": decline, "amount": 1200, "currency": "KRW",
            "points": 1200 if status == "approved" else 0, "balance_after": 3800, "approval_code": "123456",
            "merchant_id": "gs25", "store_id": "gs25-gangnam-01", "terminal_id": "t1", "order_ref": "A-1", "business_day": "2027-01-15",
            "refunded_amount": 0, "refunded_points": 0, "created_at": "2027-01-15T08:00:00.000Z", **fields}


def problem(status: int, code: str, **extra) -> core.HttpResponse:
    return response(status, {"code": code, "detail": code, "request_id": "req_1", **extra})


def drive(operation, replies, clock: Clock | None = None):
    """Run an operation against scripted replies; returns (result or exception, actions seen)."""
    actions = []
    reply = None
    replies = list(replies)
    while True:
        try:
            action = operation.send(reply)
        except StopIteration as done:
            return done.value, actions
        except errors.PosError as error:
            return error, actions
        actions.append(action)
        if isinstance(action, core.Sleep):
            if clock is not None:
                clock.now += action.seconds
            reply = None
        else:
            reply = replies.pop(0) if replies else core.TransportFailure("timeout", "scripted")


SALE = core.sale_document(CONFIG, "941011234567890077743322", 1200, "A-1")
TIMEOUT = core.TransportFailure("timeout", "read")


def test_backoff_is_exponential_with_full_jitter_and_capped():
    """Delays are uniform up to min(max, base * 2^attempt): 0.1, 0.2, 0.4, then capped at 1.0 with jitter 0.5."""
    ctx = context(random_unit=0.5)
    assert [0.1, 0.2, 0.4, 0.8, 1.0, 1.0] == [ctx.backoff_s(a) for a in range(6)]


def test_approved_sale_returns_the_payment():
    """A 201 approved answer is the result, after exactly one request."""
    result, actions = drive(core.pay(context(), SALE, "k1", "r1"), [response(201, payment())])
    assert ("approved", 1) == (result.status, len(actions))


def test_declined_sale_raises_declined_with_the_cashier_message():
    """A declined answer raises Declined carrying the code and both messages."""
    decline = {"code": "insufficient_points", "message": "Not enough points.", "message_ko": "포인트가 부족합니다."}
    result, _ = drive(core.pay(context(), SALE, "k1", "r1"), [response(201, payment("declined", decline))])
    assert isinstance(result, errors.Declined)
    assert ("insufficient_points", "Not enough points.", "포인트가 부족합니다.") == (
        result.decline_code, result.message, result.details["message_ko"])


def test_validation_error_is_not_retried():
    """A 422 is definite: raised at once, nothing sent again."""
    result, actions = drive(core.pay(context(), SALE, "k1", "r1"), [problem(422, "invalid_request")])
    assert (errors.ValidationError, 1) == (type(result), len(actions))


def test_lost_answer_is_resolved_by_lookup():
    """A timeout, then the lookup by order reference finds the approved sale: approved, no second sale."""
    result, actions = drive(core.pay(context(), SALE, "k1", "r1"), [TIMEOUT, response(200, payment(refunds=[]))])
    sent = [(a.method, a.path) for a in actions if isinstance(a, core.HttpRequest)]
    assert ("approved", [("POST", "/v1/payments"), ("GET", "/v1/payments?order_ref=A-1")]) == (result.status, sent)


def test_sale_not_arrived_is_sent_again_with_the_same_key():
    """Timeout, lookup 404, then the same idempotency key is sent again and approved."""
    result, actions = drive(core.pay(context(), SALE, "k1", "r1"),
                            [TIMEOUT, problem(404, "payment_not_found"), response(201, payment())])
    posts = [a for a in actions if isinstance(a, core.HttpRequest) and a.method == "POST"]
    assert ("approved", ["k1", "k1"]) == (result.status, [p.headers["Idempotency-Key"] for p in posts])


def test_no_answer_until_the_deadline_reverses():
    """With no answer until the deadline, the sale is reversed by order reference and Reversed says so."""
    clock = Clock()
    replies = [TIMEOUT] * 40 + [response(200, {"order_ref": "A-1", "outcome": "recorded", "payment": None})]
    operation = core.pay(context(clock), SALE, "k1", "r1")
    # Let the sale fail until the deadline, then answer the reversal.
    actions, reply = [], None
    while True:
        try:
            action = operation.send(reply)
        except errors.PosError as error:
            result = error
            break
        actions.append(action)
        if isinstance(action, core.Sleep):
            clock.now += action.seconds
            reply = None
        elif action.path == "/v1/reversals":
            reply = replies[-1]
        else:
            reply = TIMEOUT
    assert isinstance(result, errors.Reversed)
    assert ("recorded", "r1") == (result.details["outcome"], actions[-1].headers["Idempotency-Key"])
    assert clock.now >= 1_800_000_010.0


def test_unreachable_reversal_is_queued():
    """If even the reversal cannot get through, ReversalQueued carries the request to store and forward."""
    clock = Clock()
    result, _ = drive(core.pay(context(clock), SALE, "k1", "r1"), [core.TransportFailure("connect", "refused")] * 200, clock)
    assert isinstance(result, errors.ReversalQueued)
    method, path, document, key = result.details["reversal"]
    assert ("POST", "/v1/reversals", "A-1", "r1") == (method, path, document["order_ref"], key)


def test_in_progress_is_retried():
    """`idempotency_in_progress` is safe to retry: the call backs off and asks again."""
    result, actions = drive(core.call(context(), "POST", "/v1/payments", SALE, "k1"),
                            [problem(409, "idempotency_in_progress"), response(201, payment())])
    assert ([core.HttpRequest, core.Sleep, core.HttpRequest], "approved") == ([type(a) for a in actions], result["status"])


def test_retries_are_bounded():
    """A gateway that keeps failing is asked retry_count_max + 1 times, then GatewayError is raised."""
    result, actions = drive(core.call(context(), "GET", "/v1/payments/x"), [problem(503, "storage_unavailable")] * 10)
    assert (errors.GatewayError, 3) == (type(result), sum(isinstance(a, core.HttpRequest) for a in actions))


def test_clock_skew_is_corrected_once():
    """A timestamp refusal with the gateway's time is signed again once with the corrected clock."""
    ctx = context()
    result, actions = drive(core.call(ctx, "POST", "/v1/payments", SALE, "k1"),
                            [problem(401, "timestamp_out_of_window", server_time_s=1_800_000_900), response(201, payment())])
    assert ("approved", 900.0) == (result["status"], ctx.clock_offset_s)
    assert "1800000900" == actions[1].headers["X-PG-Timestamp"]


def test_clock_skew_from_date_header():
    """Without server_time_s in the body, the Date header gives the gateway's clock."""
    ctx = context()
    date = {"date": "Fri, 15 Jan 2027 08:15:00 GMT"}
    drive(core.call(ctx, "GET", "/v1/payments/x"),
          [core.HttpResponse(401, date, json.dumps({"code": "timestamp_out_of_window"}).encode()), response(200, payment())])
    assert 900.0 == ctx.clock_offset_s  # 1800000000 is 2027-01-15 08:00:00 UTC


def test_second_skew_refusal_is_raised():
    """A clock that is still refused after one correction is an AuthenticationError, not a loop."""
    result, _ = drive(core.call(context(), "GET", "/v1/payments/x"),
                      [problem(401, "timestamp_out_of_window", server_time_s=1_800_000_900)] * 3)
    assert (errors.AuthenticationError, "timestamp_out_of_window") == (type(result), result.code)


def test_sdk_depends_on_nothing_in_the_gateway():
    """Importing the whole SDK loads no gateway module (vendors ship it alone)."""
    import subprocess
    import sys

    probe = "import sys, pos_sdk, pos_sdk.scanner, pos_sdk.receipt; print(sorted(m for m in sys.modules if m.split('.')[0] == 'gateway'))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert ("[]", 0) == (result.stdout.strip(), result.returncode)


def test_replayed_read_is_signed_again():
    """A GET refused as nonce_replayed (a transport re-sent it) is signed afresh and asked again."""
    result, actions = drive(core.call(context(), "GET", "/v1/payments/x", retries=False),
                            [problem(401, "nonce_replayed"), response(200, payment())])
    assert ("approved", 2) == (result["status"], sum(isinstance(a, core.HttpRequest) for a in actions))


def test_replayed_write_is_not_retried():
    """A POST refused as nonce_replayed is raised: writes are never re-sent by the transport."""
    result, actions = drive(core.call(context(), "POST", "/v1/payments", SALE, "k1"), [problem(401, "nonce_replayed")] * 3)
    assert (errors.AuthenticationError, 1) == (type(result), sum(isinstance(a, core.HttpRequest) for a in actions))


def test_refused_resend_after_an_unknown_outcome_goes_to_the_reversal():
    """After a lost answer, a refusal of the re-sent sale is not 'nothing changed': the SDK reverses."""
    reversal = response(200, {"order_ref": "A-1", "outcome": "reversed", "payment": payment(status="reversed")})
    result, actions = drive(core.pay(context(), SALE, "k1", "r1"),
                            [TIMEOUT, problem(401, "unknown_key"), problem(401, "unknown_key"), reversal])
    sent = [(a.method, a.path) for a in actions if isinstance(a, core.HttpRequest)]
    assert (errors.Reversed, ("POST", "/v1/reversals")) == (type(result), sent[-1])


def test_failed_lookup_keeps_the_sale_unknown():
    """A lookup that fails for any reason other than not-found does not end the sale; the same key is sent again."""
    result, _ = drive(core.pay(context(), SALE, "k1", "r1"),
                      [TIMEOUT, problem(401, "nonce_replayed"), problem(401, "nonce_replayed"), response(201, payment())])
    assert "approved" == result.status
