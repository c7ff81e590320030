"""Errors of the HTTP APIs as RFC 9457 problem details, with stable codes.

Every error a caller can meet is in `PROBLEMS`: its HTTP status, whose fault
it is, whether a retry with the same idempotency key can succeed, and a
message a cashier's screen can show. Handlers raise `Problem(code, detail)`;
the error middleware renders it as `application/problem+json`. The OpenAPI
document lists the same catalogue.

    Problem            a request failed; nothing was changed
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.payments import dumps

PROBLEM_TYPE_BASE = "https://pointgate.dev/problems/"
CONTENT_TYPE = "application/problem+json"


@dataclass(frozen=True, slots=True)
class ProblemKind:
    status: int
    title: str
    fault: str  # "caller" or "gateway"
    retryable: bool


PROBLEMS: dict[str, ProblemKind] = {
    "invalid_json": ProblemKind(400, "The body is not valid JSON. Contact the POS vendor.", "caller", False),
    "invalid_request": ProblemKind(422, "The request is not valid. Contact the POS vendor.", "caller", False),
    "unsupported_media_type": ProblemKind(415, "Send the body as application/json.", "caller", False),
    "body_too_large": ProblemKind(413, "The request is too large.", "caller", False),
    "idempotency_key_missing": ProblemKind(400, "The request has no valid Idempotency-Key.", "caller", False),
    "idempotency_mismatch": ProblemKind(422, "This idempotency key was used for a different request.", "caller", False),
    "idempotency_in_progress": ProblemKind(409, "The same request is still being processed. Try again.", "caller", True),
    "signature_missing": ProblemKind(401, "The request is not signed. Check the terminal's key settings.", "caller", False),
    "bad_signature": ProblemKind(401, "The request signature is wrong. Check the terminal's key.", "caller", False),
    "timestamp_out_of_window": ProblemKind(401, "The terminal's clock is wrong. Correct the time and retry.", "caller", False),
    "unknown_key": ProblemKind(401, "The terminal's key is unknown or revoked.", "caller", False),
    "nonce_replayed": ProblemKind(401, "This request was already received.", "caller", False),
    "unknown_terminal": ProblemKind(403, "This store or terminal is not registered for the merchant.", "caller", False),
    "amount_above_maximum": ProblemKind(422, "The amount is above the maximum for one payment.", "caller", False),
    "currency_mismatch": ProblemKind(422, "The currency is not the store's currency.", "caller", False),
    "currency_not_supported": ProblemKind(422, "Point payments in this currency are not available yet.", "caller", False),
    "order_ref_in_use": ProblemKind(409, "This order reference already has a payment. Use a new order.", "caller", False),
    "payment_not_found": ProblemKind(404, "No such payment for this merchant.", "caller", False),
    "invalid_state": ProblemKind(409, "The payment cannot take this action in its current state.", "caller", False),
    "cancel_window_closed": ProblemKind(409, "Cancels are for the same business day. Make a refund instead.", "caller", False),
    "refund_exceeds_payment": ProblemKind(409, "The refund is more than what is left of the payment.", "caller", False),
    "unauthorized": ProblemKind(401, "Sign in to the wallet again.", "caller", False),
    "forbidden": ProblemKind(403, "This key may not use this route.", "caller", False),
    "member_not_found": ProblemKind(404, "No such member.", "caller", False),
    "device_not_found": ProblemKind(404, "No such device for this member.", "caller", False),
    "device_unavailable": ProblemKind(409, "This device cannot show codes now.", "caller", False),
    "too_many_devices": ProblemKind(409, "Too many devices; remove one first.", "caller", False),
    "over_budget": ProblemKind(409, "The affiliate's points budget is used up.", "caller", False),
    "affiliate_ref_in_use": ProblemKind(409, "This affiliate reference was already credited.", "caller", False),
    "exchange_unavailable": ProblemKind(409, "Exchanges with this network are not available now.", "caller", False),
    "insufficient_points_for_exchange": ProblemKind(409, "Not enough points for this exchange.", "caller", False),
    "exchange_not_found": ProblemKind(404, "No such exchange.", "caller", False),
    "campaign_not_found": ProblemKind(404, "No such coupon campaign.", "caller", False),
    "campaign_exists": ProblemKind(409, "A campaign with this id exists already. Choose another id.", "caller", False),
    "too_many_campaigns": ProblemKind(409, "The gateway holds the most campaigns it allows.", "caller", False),
    "campaign_ended": ProblemKind(409, "This coupon campaign has ended.", "caller", False),
    "campaign_not_claimable": ProblemKind(409, "This coupon cannot be claimed in the app.", "caller", False),
    "campaign_exhausted": ProblemKind(409, "All coupons of this campaign have been given out.", "caller", False),
    "coupon_limit_reached": ProblemKind(409, "You already have as many of this coupon as one member may.", "caller", False),
    "cashout_below_minimum": ProblemKind(422, "The cash-out is below the minimum amount.", "caller", False),
    "insufficient_points_for_cashout": ProblemKind(409, "Not enough points for this cash-out.", "caller", False),
    "bank_account_not_found": ProblemKind(404, "No such bank account for this member.", "caller", False),
    "too_many_bank_accounts": ProblemKind(409, "Too many linked bank accounts.", "caller", False),
    "cashout_not_found": ProblemKind(404, "No such cash-out.", "caller", False),
    "bank_unavailable": ProblemKind(503, "Cash-out to a bank account is not available now. Try again later.", "gateway", True),
    "not_found": ProblemKind(404, "No such route.", "caller", False),
    "method_not_allowed": ProblemKind(405, "This route does not take this method.", "caller", False),
    "storage_unavailable": ProblemKind(503, "The gateway is briefly unavailable. Retry with the same key.", "gateway", True),
    # Applied on the Redis primary but not yet acknowledged by the replicas that redis_wait_replicas asks for
    # (gateway.store.DurabilityTimeout); the retry with the same key returns the applied outcome.
    "durability_timeout": ProblemKind(503, "The gateway could not confirm the change is safely stored. Retry with the same key.",
                                      "gateway", True),
    "live_feeds_busy": ProblemKind(503, "Live updates are busy. The app reconnects shortly.", "gateway", True),
    "operator_unauthorized": ProblemKind(401, "Sign in to the operator console again.", "caller", False),
    "internal_error": ProblemKind(500, "The gateway failed. Retry with the same key; the payment is never applied twice.", "gateway", True),
}


class Problem(Exception):
    """A request failed with one of PROBLEMS; nothing was changed.

    `headers` go on the response as they are (405's `Allow`, which RFC 9110 requires); `extra`
    keyword arguments become members of the problem document.
    """

    def __init__(self, code: str, detail: str | None = None, *, headers: Mapping[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(code)
        if code not in PROBLEMS:
            raise ValueError(f"unknown problem code {code!r}")
        self.code = code
        self.kind = PROBLEMS[code]
        self.detail = detail or self.kind.title
        self.headers = dict(headers or {})
        self.extra = extra

    def document(self, request_id: str, instance: str) -> dict[str, Any]:
        return {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.kind.title,
            "status": self.kind.status,
            "code": self.code,
            "detail": self.detail,
            "instance": instance,
            "request_id": request_id,
            "retryable": self.kind.retryable,
            "fault": self.kind.fault,
            **self.extra,
        }

    def response(self, request_id: str, instance: str) -> web.Response:
        return web.Response(
            body=dumps(self.document(request_id, instance)),
            status=self.kind.status,
            content_type=CONTENT_TYPE,
            headers=self.headers,
        )
