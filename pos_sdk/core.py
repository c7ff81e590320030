"""The SDK's pure core: requests, answers, retries, and the unknown-outcome procedure.

No I/O and no clock reads. An operation is a generator that yields what it
needs done (`HttpRequest` to send, `Sleep` to wait) and receives what
happened (`HttpResponse` or `TransportFailure`); its return value is the
result and its exceptions are the SDK's errors. `AsyncPosClient` and
`PosClient` drive the same generators, one with aiohttp and asyncio, the
other with http.client and time.sleep (h11's sans-I/O shape).

The unknown-outcome procedure of a sale (the closed loop): a sale whose
answer did not arrive is re-sent with the same idempotency key (the gateway
answers with the stored result if it committed) and looked up by its order
reference, with backoff, until `unknown_outcome_deadline_s`; then it is
reversed by order reference. The gateway makes a reversal win: a sale that
arrives after it declines. So every sale ends approved, declined or reversed,
and the points move at most once.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Mapping
from urllib.parse import quote

from pos_sdk import errors
from pos_sdk.config import PosConfig
from pos_sdk.models import Payment, ReversalResult
from pos_sdk.signing import signature_headers


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    """Path and query exactly as signed and sent."""
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    """Lower-case names."""
    body: bytes


@dataclass(frozen=True, slots=True)
class TransportFailure:
    kind: str
    """`connect` (the request was never sent), `timeout` or `disconnected` (it may have arrived)."""
    detail: str


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Action = HttpRequest | Sleep
Reply = HttpResponse | TransportFailure | None
Operation = Generator[Action, Reply, Any]

RETRYABLE_PROBLEMS = frozenset({"idempotency_in_progress", "storage_unavailable", "internal_error"})


@dataclass
class Context:
    """What an operation needs from outside: configuration, time, randomness, and
    the clock offset learnt from the gateway (kept across operations)."""

    config: PosConfig
    now_s: Callable[[], float]
    random: Callable[[], float]
    """Uniform in [0, 1): the jitter source."""
    token_hex: Callable[[int], str] = secrets.token_hex
    clock_offset_s: float = 0.0
    retry_delays_s: list[float] = field(default_factory=list)
    """Every backoff the operations chose, for tests and diagnostics (bounded)."""

    def build(self, method: str, path: str, document: Any = None, idempotency_key: str | None = None,
              request_id: str | None = None) -> HttpRequest:
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode() if document is not None else b""
        c = self.config
        headers = signature_headers(c.secret, method, path, body, c.merchant_id, c.key_id,
                                    int(self.now_s() + self.clock_offset_s), self.token_hex(16))
        headers["Accept"] = "application/json"
        if body:
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        return HttpRequest(method, path, body, headers)

    def backoff_s(self, attempt: int) -> float:
        """Exponential backoff with full jitter (AWS architecture blog): uniform in
        [0, min(max, base * 2^attempt)], so retrying terminals do not stampede."""
        ceiling = min(self.config.retry_delay_s_max, self.config.retry_delay_s_base * 2 ** attempt)
        delay = ceiling * self.random()
        if len(self.retry_delays_s) < 1000:
            self.retry_delays_s.append(delay)
        return delay


# -- answers ------------------------------------------------------------------


def error_from(reply: HttpResponse | TransportFailure) -> errors.PosError:
    """The SDK error of a reply that is not a success."""
    if isinstance(reply, TransportFailure):
        if reply.kind == "connect":
            return errors.ConnectError("gateway_unreachable", f"cannot reach the gateway ({reply.detail})")
        return errors.Timeout("no_answer", f"no answer from the gateway ({reply.kind}: {reply.detail})", sent=True)
    request_id = reply.headers.get("x-request-id")
    try:
        doc = json.loads(reply.body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or "code" not in doc:
        return errors.GatewayError("bad_answer", f"the gateway answered HTTP {reply.status} without a problem body", request_id)
    cls = errors.PROBLEM_CLASSES.get(doc["code"])
    if cls is None:
        cls = errors.GatewayError if reply.status >= 500 else errors.RequestError
    extra = {k: v for k, v in doc.items() if k not in ("code", "detail", "request_id", "status")}
    return cls(doc["code"], str(doc.get("detail") or doc.get("title") or doc["code"]), request_id, status=reply.status, **extra)


def is_retryable(error: errors.PosError) -> bool:
    """Safe to send again with the same idempotency key: the gateway did not
    decide, or it decided and will answer the same again."""
    return isinstance(error, (errors.TransportError, errors.GatewayError)) or error.code in RETRYABLE_PROBLEMS


def server_time_s(error: errors.PosError, reply: HttpResponse) -> float | None:
    """The gateway's clock from a timestamp refusal: its body, else its Date header."""
    if error.code != "timestamp_out_of_window":
        return None
    if isinstance(error.details.get("server_time_s"), int):
        return float(error.details["server_time_s"])
    date = reply.headers.get("date")
    if date:
        from email.utils import parsedate_to_datetime

        try:
            return parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return None
    return None


def call(ctx: Context, method: str, path: str, document: Any = None, idempotency_key: str | None = None,
         retries: bool = True) -> Operation:
    """One API call: signed afresh each attempt (new nonce), the same idempotency
    key every attempt, bounded retries where safe, one clock correction."""
    attempt = 0
    corrected = False
    while True:
        reply = yield ctx.build(method, path, document, idempotency_key)
        if isinstance(reply, HttpResponse) and 200 <= reply.status < 300:
            return json.loads(reply.body) if reply.body else None
        assert reply is not None, "a request is answered by a response or a failure"
        error = error_from(reply)
        if isinstance(reply, HttpResponse) and not corrected:
            gateway_now = server_time_s(error, reply)
            if gateway_now is not None:
                # The terminal's clock is off: sign again once with the gateway's time.
                ctx.clock_offset_s = gateway_now - ctx.now_s()
                corrected = True
                continue
        # aiohttp itself re-sends a GET whose kept-alive connection dropped, with
        # the same signature and nonce; the gateway then refuses the copy as a
        # replay. A read changes nothing, so sign it afresh and ask again.
        replayed_read = method == "GET" and error.code == "nonce_replayed"
        if (retries or replayed_read) and (is_retryable(error) or replayed_read) and attempt < ctx.config.retry_count_max:
            yield Sleep(ctx.backoff_s(attempt))
            attempt += 1
            continue
        raise error


# -- operations ----------------------------------------------------------------


def sale_document(config: PosConfig, code: str, amount: int, order_ref: str, currency: str | None = None,
                  coupon_codes: tuple[str, ...] = (), line_items: tuple[Mapping[str, Any], ...] = ()) -> dict[str, Any]:
    document: dict[str, Any] = {"code": code, "amount": amount, "currency": currency or config.currency,
                                "order_ref": order_ref, "store_id": config.store_id, "terminal_id": config.terminal_id}
    if coupon_codes:
        document["coupon_codes"] = list(coupon_codes)
    if line_items:
        document["line_items"] = [dict(item) for item in line_items]
    return document


def settle_sale(doc: Mapping[str, Any]) -> Payment:
    """Approved: the payment. Declined: raise Declined with the cashier message."""
    payment = Payment.from_json(doc)
    if payment.approved:
        return payment
    if payment.decline is not None:
        raise errors.Declined(payment.decline.code, payment.decline.message, payment=payment,
                              message_ko=payment.decline.message_ko)
    raise errors.Reversed(payment.status, f"the sale is {payment.status}; no points are taken", payment=payment)


def pay(ctx: Context, document: Mapping[str, Any], idempotency_key: str, reversal_key: str) -> Operation:
    """A sale with the unknown-outcome procedure; returns the approved Payment or raises."""
    deadline_s = ctx.now_s() + ctx.config.unknown_outcome_deadline_s
    order_ref = document["order_ref"]
    lookup_path = "/v1/payments?order_ref=" + quote(order_ref, safe="")
    round_no = 0
    while True:
        try:
            return settle_sale((yield from call(ctx, "POST", "/v1/payments", document, idempotency_key, retries=False)))
        except errors.PosError as error:
            if not is_retryable(error):
                if round_no == 0:
                    raise  # the first answer was definite: nothing changed
                # A refusal of a re-sent sale does not say whether the first
                # one committed; only the reversal can close the loop now.
                break
        # No definite answer. Has the sale arrived under its order reference?
        try:
            return settle_sale((yield from call(ctx, "GET", lookup_path, retries=False)))
        except errors.PosError:
            pass  # not found (not arrived, or still in flight), or no answer: ask again with the same key
        remaining_s = deadline_s - ctx.now_s()
        if remaining_s <= 0:
            break
        yield Sleep(min(ctx.backoff_s(round_no), remaining_s))
        round_no += 1
    return (yield from reverse_unknown_sale(ctx, order_ref, reversal_key))


def reversal_document(config: PosConfig, order_ref: str, reason: str) -> dict[str, Any]:
    return {"order_ref": order_ref, "store_id": config.store_id, "terminal_id": config.terminal_id, "reason": reason}


def reverse_unknown_sale(ctx: Context, order_ref: str, reversal_key: str) -> Operation:
    """The last step of the closed loop: reverse by order reference, and say what that means."""
    document = reversal_document(ctx.config, order_ref, "no answer to the sale")
    try:
        doc = yield from call(ctx, "POST", "/v1/reversals", document, reversal_key)
    except errors.PosError as error:
        if not is_retryable(error):
            raise
        raise errors.ReversalQueued(
            "reversal_queued", "No answer from the gateway. The sale is cancelled and no points are taken; "
            "the reversal will be sent when the gateway is back.", order_ref=order_ref,
            reversal=("POST", "/v1/reversals", document, reversal_key)) from error
    result = ReversalResult.from_json(doc)
    if result.outcome == "nothing_to_reverse" and result.payment is not None and result.payment.decline is not None:
        settle_sale(doc["payment"])  # it was declined: raise Declined with its reason
    message = {
        "reversed": "The sale got no answer in time and was reversed: the points were returned.",
        "recorded": "The sale got no answer in time and was reversed: no points were taken.",
    }.get(result.outcome, "The sale got no answer in time and was reversed.")
    raise errors.Reversed("reversed", message, payment=result.payment, outcome=result.outcome, order_ref=order_ref)
