"""Every error the POS SDK raises, in one tree. Each carries the gateway's
stable `code`, a `message` a cashier's screen can show, and the gateway's
`request_id` when the gateway answered.

    PosError
    ├── TransportError            the gateway could not be reached or did not answer
    │   ├── ConnectError          no connection (gateway down, network)
    │   ├── Timeout               connected, but no answer in time
    │   └── ForwardQueued         unreachable, so the request is stored and sent later (`flush_outbox`)
    ├── GatewayError              the gateway failed (5xx) or answered nonsense
    ├── ScannerError              the scanned or typed text is not a payment code (pos_sdk.scanner)
    ├── RequestError              the request was refused; nothing changed
    │   ├── ValidationError       the body or a header is not valid (vendor bug)
    │   ├── AuthenticationError   signature, key, clock or nonce refused
    │   ├── IdempotencyError      the key was used for another request, or is still in progress
    │   ├── NotFound              no such payment for this merchant
    │   └── Conflict              the payment cannot take this action now
    └── PaymentNotCompleted       a sale ended without an approval
        ├── Declined              declined: `decline_code`, `message`, `payment`
        ├── Reversed              no answer in time; the sale was reversed, no points are taken
        └── ReversalQueued        no answer and the gateway is unreachable; the reversal is
                                  stored and sent when it is back (`flush_outbox`)
"""

from __future__ import annotations

from typing import Any


class PosError(Exception):
    """Base of every SDK error."""

    def __init__(self, code: str, message: str, request_id: str | None = None, **details: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.details = details


class TransportError(PosError):
    pass


class ConnectError(TransportError):
    pass


class Timeout(TransportError):
    pass


class ForwardQueued(TransportError):
    pass


class GatewayError(PosError):
    pass


class RequestError(PosError):
    pass


class ValidationError(RequestError):
    pass


class AuthenticationError(RequestError):
    pass


class IdempotencyError(RequestError):
    pass


class NotFound(RequestError):
    pass


class Conflict(RequestError):
    pass


class PaymentNotCompleted(PosError):
    """The sale did not end approved; `payment` is the gateway's record when there is one."""

    def __init__(self, code: str, message: str, request_id: str | None = None, payment: Any = None, **details: Any) -> None:
        super().__init__(code, message, request_id, **details)
        self.payment = payment


class Declined(PaymentNotCompleted):
    @property
    def decline_code(self) -> str:
        return self.code


class Reversed(PaymentNotCompleted):
    pass


class ReversalQueued(PaymentNotCompleted):
    pass


# Problem codes of the merchant API -> the class raised for them.
PROBLEM_CLASSES: dict[str, type[PosError]] = {
    "invalid_json": ValidationError,
    "invalid_request": ValidationError,
    "unsupported_media_type": ValidationError,
    "body_too_large": ValidationError,
    "idempotency_key_missing": ValidationError,
    "amount_above_maximum": ValidationError,
    "currency_mismatch": ValidationError,
    "currency_not_supported": ValidationError,
    "unknown_terminal": AuthenticationError,
    "signature_missing": AuthenticationError,
    "bad_signature": AuthenticationError,
    "timestamp_out_of_window": AuthenticationError,
    "unknown_key": AuthenticationError,
    "nonce_replayed": AuthenticationError,
    "idempotency_mismatch": IdempotencyError,
    "idempotency_in_progress": IdempotencyError,
    "payment_not_found": NotFound,
    "invalid_state": Conflict,
    "cancel_window_closed": Conflict,
    "refund_exceeds_payment": Conflict,
    "order_ref_in_use": Conflict,
    "storage_unavailable": GatewayError,
    "internal_error": GatewayError,
}
