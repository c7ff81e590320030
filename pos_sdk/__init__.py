"""pointgate POS SDK: what a point-of-sale vendor embeds to accept pointgate codes.

Signing, idempotency keys kept in a local journal, safe retries, the
unknown-outcome procedure (re-ask, look up, reverse), store-and-forward of
reversals, scanner input and receipts. Depends on nothing in the gateway.
See pos_sdk/README.md.
"""

from pos_sdk.aio import AsyncPosClient
from pos_sdk.client import PosClient
from pos_sdk.config import PosConfig
from pos_sdk.errors import (
    AuthenticationError, Conflict, ConnectError, Declined, ForwardQueued, GatewayError, IdempotencyError,
    NotFound, PaymentNotCompleted, PosError, RequestError, Reversed, ReversalQueued, Timeout, TransportError,
    ValidationError,
)
from pos_sdk.batch import Movement
from pos_sdk.models import (
    AppliedCoupon, BatchResult, Decline, MovementDifference, Payment, Refund, RefundResult, ReversalResult,
    TotalDifference,
)
from pos_sdk.receipt import ReceiptData, render_receipt
from pos_sdk.scanner import ScannerError, ScanResult, classify, parse_payment_code

__all__ = [
    "AsyncPosClient", "PosClient", "PosConfig",
    "PosError", "TransportError", "ConnectError", "Timeout", "ForwardQueued", "GatewayError", "RequestError",
    "ValidationError", "AuthenticationError", "IdempotencyError", "NotFound", "Conflict",
    "PaymentNotCompleted", "Declined", "Reversed", "ReversalQueued",
    "Payment", "AppliedCoupon", "Decline", "Refund", "RefundResult", "ReversalResult", "BatchResult",
    "Movement", "TotalDifference", "MovementDifference",
    "classify", "parse_payment_code", "ScanResult", "ScannerError", "ReceiptData", "render_receipt",
]
