"""The OpenAPI 3.1 document served at `/openapi.json`.

Request schemas come from the same msgspec types the handlers decode with,
so the document cannot drift from validation; response shapes are declared
here as types too, and the tests validate real responses and every example
against them.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import msgspec

from gateway import payments
from gateway.coupons import CampaignRequest, CouponClaimRequest, CouponIssueRequest
from gateway.member_events import EVENT_ID_RE, PAGE_MAX as EVENTS_PAGE_MAX
from gateway.problems import PROBLEMS


class Decline(msgspec.Struct):
    code: str
    message: str
    message_ko: str


class Payment(msgspec.Struct):
    payment_id: str
    status: payments.State
    decline: Decline | None
    amount: int
    currency: str
    points: int
    balance_after: int | None
    approval_code: str | None
    merchant_id: str
    store_id: str
    terminal_id: str
    order_ref: str
    business_day: str
    refunded_amount: int
    refunded_points: int
    created_at: str
    fx: "Fx | None"
    discount: int
    """The coupons' discount in minor units of the currency; the member paid `amount - discount`."""
    coupons: "list[AppliedCoupon]"


class AppliedCoupon(msgspec.Struct):
    code: str
    title: str
    """The label for the receipt."""
    campaign_id: str
    discount: int
    restored: bool
    """The coupon was given back to the member (cancel, reversal or full refund)."""


class Fx(msgspec.Struct):
    quote_id: str
    rate: str
    """Points per unit of the payment's currency, the spread included, locked for the payment."""


class Refund(msgspec.Struct):
    refund_id: str
    payment_id: str
    amount: int
    points: int
    discount_points: int
    """The coupons' share of the refund, back to whoever funded the discount."""
    balance_after: int | None
    """The member's points after the refund; None when the member belongs to a partner network."""
    reason: str
    created_at: str


class PaymentWithRefunds(Payment):
    refunds: list[Refund]


class RefundResult(msgspec.Struct):
    refund: Refund
    payment: Payment


class ReversalResult(msgspec.Struct):
    order_ref: str
    outcome: str
    payment: Payment | None


class BatchTotals(msgspec.Struct):
    sale_count: int
    sale_amount: int
    void_count: int
    void_amount: int
    refund_count: int
    refund_amount: int


class BatchMatchedCounts(msgspec.Struct):
    """Movements the terminal and the gateway both have, with the same amount, by kind."""

    sale: int
    void: int
    refund: int


class BatchTotalDifference(msgspec.Struct, tag_field="difference", tag="total"):
    """A total the terminal reported differs from the gateway's."""

    field: str
    """`sale_count`, `sale_amount`, `void_count`, `void_amount`, `refund_count` or `refund_amount`."""
    terminal: int
    gateway: int


class _BatchMovementDifference(msgspec.Struct, tag_field="difference", kw_only=True):
    payment_id: str
    kind: Literal["sale", "void", "refund"]
    terminal_amount: int | None
    """None when the terminal does not have the movement (or sent only its payment id)."""
    gateway_amount: int | None
    """None when the gateway's batch does not have the movement."""
    field: Literal["payment"] | None = None
    """Deprecated: only in answers to `payment_ids`, with `missing_on`, as those answers always had."""
    missing_on: Literal["gateway", "terminal"] | None = None


class BatchMissingAtGateway(_BatchMovementDifference, tag="missing_at_gateway"):
    """The terminal has the movement; the gateway's closed batch does not (nor, as far as it can
    tell, an earlier batch of the terminal)."""


class BatchMissingAtTerminal(_BatchMovementDifference, tag="missing_at_terminal"):
    """The gateway's closed batch has the movement; the terminal does not."""


class BatchAmountMismatch(_BatchMovementDifference, tag="amount_mismatch"):
    """Both have a movement of this payment and kind, with different amounts."""


class BatchOtherBatch(_BatchMovementDifference, tag="other_batch"):
    """The terminal has the movement in this batch; the gateway counted it in an earlier one."""

    batch_no: int
    """The earlier batch that has it; `gateway_amount` is its amount there."""


BatchDifference = (BatchTotalDifference | BatchMissingAtGateway | BatchMissingAtTerminal | BatchAmountMismatch
                   | BatchOtherBatch)


class BatchResult(msgspec.Struct):
    batch_no: int
    status: Literal["matched", "mismatched"]
    """`matched` only when there are no differences at all."""
    gateway: BatchTotals
    terminal: BatchTotals
    matched_counts: BatchMatchedCounts
    """Zero for kinds not compared: with `payment_ids` only sales are, with totals alone none."""
    differences: list[BatchDifference]
    """The total fields first, then the movements by payment id, then kind."""
    differences_omitted: int
    """Differences beyond the first 10,000, not listed."""
    next_batch_no: int


class Device(msgspec.Struct):
    slot: int
    secret_b32: str
    issuer_prefix: str
    code_step_s: int
    provisioning_uri: str


class Enrolment(msgspec.Struct):
    member_id: str
    token: str
    token_expires_at: str
    device: Device


class MemberBalance(msgspec.Struct):
    member_id: str
    unit: str
    available: int
    held: int
    expiring: int
    """Of `available`, the points that expire (spent first, earliest first)."""
    next_expiry: "NextExpiry | None"
    settings: "SpendingSettingsView"


class NextExpiry(msgspec.Struct):
    points: int
    expires_at: str


class SpendingSettingsView(msgspec.Struct):
    confirm_over_points: int | None
    """A payment of more points needs the member's approval in the app; None: never."""
    daily_cap_points: int
    daily_cap_max_points: int
    """The wallet's own daily cap; the member's can only be lower."""


class ConfirmationView(msgspec.Struct):
    points: int
    expires_at: str


class MemberEvent(msgspec.Struct):
    event_id: str
    """The stream id (`<ms>-<seq>`); pass it as `after`, `before` or Last-Event-ID."""
    kind: str
    """payment, cancel, refund, reversal, earning, expiry, exchange_hold/_post/_void, exchange_in,
    cashout, cashout_paid, cashout_failed."""
    points: int
    """The signed change to the member's available points."""
    held: int
    """The signed change to the member's held points."""
    available_after: int
    held_after: int
    at: str
    entry_id: str
    """The journal entry this event is the member's view of."""
    details: dict[str, Any]
    """What it was: store and merchant, amount and currency, coupons, FX rate, partner, affiliate, ..."""


class History(msgspec.Struct):
    items: list[MemberEvent]
    """Newest first."""
    next_before: str | None
    """Pass as `before` for the next page; None after the first movement."""


class EventPage(msgspec.Struct):
    events: list[MemberEvent]
    """Oldest first."""
    last_event_id: str


class OnlineCode(msgspec.Struct):
    code: str
    step: int
    seq: int
    refresh_at: str
    expires_at: str


class CodeList(msgspec.Struct):
    codes: list[OnlineCode]


class CodeCard(OnlineCode):
    """The current code with both its pictures, so a page shows digits, bars and QR of one code."""

    server_time: str
    """The gateway's clock when it answered: a page counts down to refresh_at on it, not on its own."""
    code128_svg: str
    """data: URL of the Code 128 picture (image/svg+xml, scalable)."""
    qr_png: str
    """data: URL of the QR picture (image/png)."""


class WhoAmI(msgspec.Struct):
    member_id: str
    slot: int
    """The device the token was issued to: the one whose codes the page shows."""
    code_step_s: int
    unit: str


class ConsoleSession(msgspec.Struct):
    operator_id: str
    name: str
    expires_at: str


class DeviceStatus(msgspec.Struct):
    slot: int
    status: str


class Earning(msgspec.Struct):
    earning_id: str
    member_id: str
    points: int
    balance_after: int
    affiliate_id: str
    affiliate_ref: str
    created_at: str
    expires_at: str | None


class Exchange(msgspec.Struct):
    exchange_id: str
    member_id: str
    partner: str
    partner_member_id: str
    points: int
    received: int
    received_unit: str
    quote_id: str
    rate: str
    state: str
    """pending (the partner's answer is awaited), completed or refused (the points are back)."""
    created_at: str


class ExchangeCredit(msgspec.Struct):
    credit_id: str
    exchange_ref: str
    member_id: str
    points: int
    credited_at: str


class BankAccount(msgspec.Struct):
    bank_account_id: str
    bank_code: str
    account_number_masked: str
    """Only the last four digits; the full number is never returned."""
    holder_name: str
    created_at: str


class BankAccountList(msgspec.Struct):
    bank_accounts: list[BankAccount]


class CashoutAccount(msgspec.Struct):
    bank_account_id: str
    bank_code: str
    account_number_masked: str
    holder_name: str


class Cashout(msgspec.Struct):
    cashout_id: str
    member_id: str
    state: str
    """pending (the bank's answer is awaited, the points are held), paid, or failed (the points are back)."""
    points: int
    """Taken from the wallet."""
    fee_points: int
    amount: int
    """Paid into the bank account: points - fee_points, in minor units of the currency (1 point = 1 KRW)."""
    currency: str
    bank_account: CashoutAccount
    reason: str | None
    """Why it failed: the bank's reason (account_closed, ...) or insufficient_points."""
    created_at: str
    finished_at: str | None
    bank_completed_at: str | None


class CashoutList(msgspec.Struct):
    cashouts: list[Cashout]


class CouponDiscount(msgspec.Struct):
    kind: str
    """percent or fixed"""
    percent: str | None
    """For percent: e.g. "10" or "12.5" (exact, never a float)."""
    amount: int | None
    """For fixed: minor units off."""
    cap: int | None
    """For percent: the most it takes off, minor units; None: no cap."""


class CouponCampaign(msgspec.Struct):
    campaign_id: str
    title: str
    issuer: str
    """The home network's id or a partner network's."""
    funding: str
    """The ledger account that pays the discounts: campaign:<id> at home, partner:<id> for a partner's."""
    merchants: list[str]
    """Merchant ids, or ["*"] for every merchant."""
    currency: str
    min_spend: int
    discount: CouponDiscount
    description: str
    """The terms in words."""
    valid_from: str
    valid_until: str
    per_member_limit: int
    total_limit: int | None
    stackable: bool
    claimable: bool
    status: str
    """scheduled, active or ended."""
    issued: int
    """Coupons issued so far (never fewer than the real count; may be more by issues that died)."""
    source: str
    """config (config/campaigns.toml) or operator."""
    created_at: str | None


class CouponCampaignList(msgspec.Struct):
    campaigns: list[CouponCampaign]


class MemberCoupon(msgspec.Struct):
    code: str
    """CP + 12 characters: what the store scans."""
    campaign_id: str
    title: str
    issuer: str
    state: str
    """issued (usable from valid_from), redeemed, or expired."""
    discount: CouponDiscount
    description: str
    currency: str
    min_spend: int
    merchants: list[str]
    stackable: bool
    valid_from: str
    valid_until: str
    issued_at: str
    redeemed_at: str | None
    payment_id: str | None
    discount_applied: int
    """What it took off the payment it was redeemed in, minor units; 0 until then."""


class MemberCouponList(msgspec.Struct):
    member_id: str
    coupons: list[MemberCoupon]
    """Newest first, at most 100."""


class ProblemDetails(msgspec.Struct):
    type: str
    title: str
    status: int
    code: str
    detail: str
    instance: str
    request_id: str
    retryable: bool
    fault: str


_APPROVED = {
    "payment_id": "pay_62275aed6dc14cb0a1", "status": "approved", "decline": None, "amount": 4500,
    "currency": "KRW", "points": 4500, "balance_after": 7500, "approval_code": "042117",
    "merchant_id": "gs25", "store_id": "gs25-gangnam-01", "terminal_id": "t1", "order_ref": "POS1-20261201-0042",
    "business_day": "2026-12-01", "refunded_amount": 0, "refunded_points": 0, "created_at": "2026-12-01T03:14:15.926Z",
    "fx": None,
    "discount": 0,
    "coupons": [],
}
_INTEROP = dict(_APPROVED, amount=100, currency="TWD", points=4334, merchant_id="taishin", store_id="interop",
                terminal_id="interop", order_ref="TS-FM-20261201-0007", fx={"quote_id": "q_9c1e5b2d4f60a8e1", "rate": "43.3356"})
_DECLINED = dict(_APPROVED, status="declined", points=0, balance_after=None, approval_code=None, decline={
    "code": "insufficient_points", "message": payments.DECLINES["insufficient_points"][0],
    "message_ko": payments.DECLINES["insufficient_points"][1]})
_REFUND = {"refund_id": "rf_5c0f2a9d11e4b7a3", "payment_id": _APPROVED["payment_id"], "amount": 1500, "points": 1500,
           "discount_points": 0, "balance_after": 9000, "reason": "one item returned", "created_at": "2026-12-01T03:20:00.000Z"}
_TOTALS = {"sale_count": 12, "sale_amount": 54000, "void_count": 1, "void_amount": 3000, "refund_count": 0, "refund_amount": 0}
# Batch 4: the terminal missed a sale (pay_108...), recorded a refund of 1,000 the gateway made for 1,500, and
# counted a sale (pay_441...) that the gateway had counted in batch 3 (it crossed the close).
_BATCH_MISMATCHED = {
    "batch_no": 4, "status": "mismatched",
    "gateway": {"sale_count": 2, "sale_amount": 8000, "void_count": 0, "void_amount": 0, "refund_count": 1, "refund_amount": 1500},
    "terminal": {"sale_count": 2, "sale_amount": 7000, "void_count": 0, "void_amount": 0, "refund_count": 1, "refund_amount": 1000},
    "matched_counts": {"sale": 1, "void": 0, "refund": 0},
    "differences": [
        {"difference": "total", "field": "sale_amount", "terminal": 7000, "gateway": 8000},
        {"difference": "total", "field": "refund_amount", "terminal": 1000, "gateway": 1500},
        {"difference": "missing_at_terminal", "payment_id": "pay_1083e9b04c7d2a61f58", "kind": "sale",
         "terminal_amount": None, "gateway_amount": 3000},
        {"difference": "other_batch", "payment_id": "pay_4410d2c6e8a1f3b5079", "kind": "sale",
         "terminal_amount": 2000, "gateway_amount": 2000, "batch_no": 3},
        {"difference": "amount_mismatch", "payment_id": "pay_62217c1a9e0f3b2d4a5", "kind": "refund",
         "terminal_amount": 1000, "gateway_amount": 1500},
    ],
    "differences_omitted": 0, "next_batch_no": 5,
}

# Query parameters, as strict as the handlers that read them.
_REF = msgspec.json.schema(payments.OrderRef)
"""An order, partner or exchange reference: what the sale or exchange was stored under."""
_EVENT_ID = {"type": "string", "pattern": EVENT_ID_RE.pattern, "description": "an event id such as 1764558855123-0, or 0"}
_LIVE_AFTER = {"type": "string", "pattern": EVENT_ID_RE.pattern.replace("^(", r"^(\$|"),
               "description": "an event id, 0 for the beginning, or $ (the default) for what happens from now on"}
_EVENTS_LIMIT = {"type": "integer", "minimum": 1, "maximum": EVENTS_PAGE_MAX}

SIGNED = [{"pointgateSignature": []}]
BEARER = [{"memberToken": []}]
CONSOLE = [{"consoleToken": []}]
_DEVICE = {"slot": 120455622, "secret_b32": "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA", "issuer_prefix": "9410",
           "code_step_s": 30, "provisioning_uri": "otpauth://totp/pointgate:120455622?secret=...&pg_slot=120455622"}
_ENROLMENT = {"member_id": "m62275aed6dc14cb", "token": "pgmt_622_" + "A" * 43,
              "token_expires_at": "2026-12-31T03:14:15.926Z", "device": _DEVICE}
_CODE = {"code": "941011204556220379817093", "step": 59_999_999, "seq": 0,
         "refresh_at": "2026-12-01T03:14:30.000Z", "expires_at": "2026-12-01T03:15:00.000Z"}
_EXCHANGE = {"exchange_id": "ex_3f9a1c0d5e7b2a46", "member_id": "m62275aed6dc14cb", "partner": "taishin",
             "partner_member_id": "m108a1b2c3d4e5f6", "points": 10000, "received": 230, "received_unit": "TSP",
             "quote_id": "q_9c1e5b2d4f60a8e1", "rate": "43.3356", "state": "completed", "created_at": "2026-12-01T03:14:15.926Z"}
_CREDIT = {"credit_id": "xin_ex_3f9a1c0d5e7b2a46", "exchange_ref": "ex_3f9a1c0d5e7b2a46", "member_id": "m62275aed6dc14cb",
           "points": 230, "credited_at": "2026-12-01T03:14:16.100Z"}
_EARNING = {"earning_id": "earn_5c0f2a9d11e4b7a3", "member_id": "m62275aed6dc14cb", "points": 12000, "balance_after": 12000,
            "affiliate_id": "hana-card", "affiliate_ref": "CARD-2026-11-CASHBACK-0001", "created_at": "2026-12-01T03:14:15.926Z",
            "expires_at": "2027-12-31T14:59:59.000Z"}
_BANK_ACCOUNT = {"bank_account_id": "ba_7d1e0c9b2a4f6e38", "bank_code": "081", "account_number_masked": "********5678",
                 "holder_name": "김민지", "created_at": "2026-12-01T03:10:00.000Z"}
_CASHOUT = {"cashout_id": "co_4b8e2f1a9c0d7e65", "member_id": "m62275aed6dc14cb", "state": "paid", "points": 20000,
            "fee_points": 500, "amount": 19500, "currency": "KRW",
            "bank_account": {k: _BANK_ACCOUNT[k] for k in ("bank_account_id", "bank_code", "account_number_masked", "holder_name")},
            "reason": None, "created_at": "2026-12-01T03:14:15.926Z", "finished_at": "2026-12-01T03:14:16.210Z",
            "bank_completed_at": "2026-12-01T03:14:16.180Z"}
_CASHOUT_PENDING = dict(_CASHOUT, state="pending", finished_at=None, bank_completed_at=None)
_CASHOUT_FAILED = dict(_CASHOUT, state="failed", reason="account_closed")
MERCHANT_HEADERS = [
    {"name": "Idempotency-Key", "in": "header", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{8,128}$"},
     "description": "one per operation; a retry sends the same key and body and gets the same response"},
    {"name": "X-Request-Id", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "echoed back when it is 1-64 characters of A-Z a-z 0-9 _ . : -; otherwise, or when absent, the "
                    "gateway makes one (a request is never refused for its request id)"},
]

# (method, path, summary, request type, success status, response type, example, problem codes)
_EVENT = {"event_id": "1764558855123-0", "kind": "payment", "points": -4500, "held": 0, "available_after": 7500, "held_after": 0,
        "at": "2026-12-01T03:14:15.123Z", "entry_id": "pay:pay_62217c1a9e0f3b2d4a5",
        "details": {"payment_id": "pay_62217c1a9e0f3b2d4a5", "merchant_id": "gs25", "merchant_name": "GS25",
                    "store_id": "gs25-gangnam-01", "store_name": "GS25 Gangnam", "amount": 5000, "currency": "KRW",
                    "discount": 500, "coupons": [{"code": "CPK7M2Q9XW4HNP", "campaign_id": "gs25-welcome",
                                                  "title": "GS25 10% off", "discount": 500}]}}

_COUPON_DISCOUNT = {"kind": "percent", "percent": "10", "amount": None, "cap": 2000}
_CAMPAIGN = {"campaign_id": "gs25-welcome", "title": "GS25 10% off", "issuer": "hana", "funding": "campaign:gs25-welcome",
             "merchants": ["gs25"], "currency": "KRW", "min_spend": 5000, "discount": _COUPON_DISCOUNT,
             "description": "10% off (up to 2,000 KRW) when you spend 5,000 KRW or more at GS25",
             "valid_from": "2026-10-31T15:00:00.000Z", "valid_until": "2027-12-31T14:59:59.000Z", "per_member_limit": 1,
             "total_limit": None, "stackable": False, "claimable": True, "status": "active", "issued": 0,
             "source": "operator", "created_at": "2026-12-01T03:14:15.926Z"}
_MEMBER_COUPON = {"code": "CP7KQ2MZ9XW4HT", "campaign_id": "gs25-welcome", "title": "GS25 10% off", "issuer": "hana",
                  "state": "issued", "discount": _COUPON_DISCOUNT, "description": _CAMPAIGN["description"],
                  "currency": "KRW", "min_spend": 5000, "merchants": ["gs25"], "stackable": False,
                  "valid_from": "2026-10-31T15:00:00.000Z", "valid_until": "2027-12-31T14:59:59.000Z",
                  "issued_at": "2026-12-01T03:14:15.926Z", "redeemed_at": None, "payment_id": None, "discount_applied": 0}
_CAMPAIGN_ISSUE_PROBLEMS = ("campaign_not_found", "campaign_ended", "campaign_exhausted", "coupon_limit_reached",
                            "member_not_found")
OPERATIONS: tuple[tuple[str, str, str, type | None, int, type, Any, tuple[str, ...]], ...] = (
    ("post", "/v1/payments", "Sale: authorise a scanned code and debit points", payments.SaleRequest, 201, Payment,
     {"approved": _APPROVED, "declined": _DECLINED},
     ("invalid_json", "invalid_request", "unsupported_media_type", "body_too_large", "idempotency_key_missing",
      "idempotency_mismatch", "idempotency_in_progress", "amount_above_maximum", "currency_mismatch",
      "currency_not_supported", "order_ref_in_use", "unknown_terminal")),
    ("get", "/v1/payments", "Find a payment by the terminal's order reference", None, 200, PaymentWithRefunds,
     {"found": dict(_APPROVED, refunds=[])}, ("invalid_request", "payment_not_found")),
    ("get", "/v1/payments/{payment_id}", "Get one payment with its refunds", None, 200, PaymentWithRefunds,
     {"refunded_in_part": dict(_APPROVED, status="partially_refunded", refunded_amount=1500, refunded_points=1500, refunds=[_REFUND])},
     ("payment_not_found",)),
    ("post", "/v1/payments/{payment_id}/cancel", "Cancel (void) a payment on its business day", payments.CancelRequest, 200, Payment,
     {"cancelled": dict(_APPROVED, status="cancelled", balance_after=12000)},
     ("invalid_request", "idempotency_key_missing", "idempotency_mismatch", "payment_not_found", "invalid_state",
      "cancel_window_closed", "unknown_terminal")),
    ("post", "/v1/payments/{payment_id}/refunds", "Refund part or all of a payment", payments.RefundRequest, 201, RefundResult,
     {"partial": {"refund": _REFUND, "payment": dict(_APPROVED, status="partially_refunded", refunded_amount=1500,
                                                     refunded_points=1500, balance_after=9000)}},
     ("invalid_request", "idempotency_key_missing", "idempotency_mismatch", "payment_not_found", "invalid_state",
      "refund_exceeds_payment", "unknown_terminal")),
    ("post", "/v1/reversals", "Reverse by order reference when the sale's answer never arrived", payments.ReversalRequest,
     200, ReversalResult,
     {"reversed": {"order_ref": "POS1-20261201-0042", "outcome": "reversed", "payment": dict(_APPROVED, status="reversed", balance_after=12000)},
      "before_the_sale": {"order_ref": "POS1-20261201-0043", "outcome": "recorded", "payment": None}},
     ("invalid_request", "idempotency_key_missing", "idempotency_mismatch", "idempotency_in_progress", "unknown_terminal")),
    ("post", "/v1/terminals/{terminal_id}/batches", "Close the terminal's batch and reconcile it, totals and movement by movement",
     payments.BatchRequest, 200, BatchResult,
     {"matched": {"batch_no": 3, "status": "matched", "gateway": _TOTALS, "terminal": _TOTALS,
                  "matched_counts": {"sale": 12, "void": 1, "refund": 0}, "differences": [], "differences_omitted": 0,
                  "next_batch_no": 4},
      "mismatched": _BATCH_MISMATCHED},
     ("invalid_json", "invalid_request", "body_too_large", "idempotency_key_missing", "idempotency_mismatch",
      "unknown_terminal")),
    ("post", "/v1/interop/payments", "A partner network's merchant takes one of our members' codes", "InteropSaleRequest",
     201, Payment, {"approved": _INTEROP},
     ("invalid_json", "invalid_request", "idempotency_key_missing", "idempotency_mismatch", "idempotency_in_progress",
      "forbidden", "currency_mismatch", "currency_not_supported", "amount_above_maximum", "order_ref_in_use")),
    ("get", "/v1/interop/payments", "Find an interop payment by the partner's reference", None, 200, PaymentWithRefunds,
     {"found": dict(_INTEROP, refunds=[])}, ("invalid_request", "forbidden", "payment_not_found")),
    ("get", "/v1/interop/payments/{payment_id}", "Get one interop payment", None, 200, PaymentWithRefunds,
     {"found": dict(_INTEROP, refunds=[])}, ("forbidden", "payment_not_found")),
    ("post", "/v1/interop/payments/{payment_id}/cancel", "Cancel an interop payment (all points back)",
     "InteropActionRequest", 200, Payment, {"cancelled": dict(_INTEROP, status="cancelled")},
     ("invalid_request", "idempotency_key_missing", "idempotency_mismatch", "forbidden", "payment_not_found",
      "invalid_state", "cancel_window_closed")),
    ("post", "/v1/interop/payments/{payment_id}/refunds", "Refund part of an interop payment at its original rate",
     "InteropRefundRequest", 201, RefundResult,
     {"partial": {"refund": dict(_REFUND, amount=50, points=2167), "payment": dict(_INTEROP, status="partially_refunded",
                                                                                  refunded_amount=50, refunded_points=2167)}},
     ("invalid_request", "idempotency_key_missing", "idempotency_mismatch", "forbidden", "payment_not_found",
      "invalid_state", "refund_exceeds_payment")),
    ("post", "/v1/interop/reversals", "Reverse by the partner's reference when our answer never arrived",
     "InteropReversalRequest", 200, ReversalResult,
     {"reversed": {"order_ref": "TS-FM-20261201-0007", "outcome": "reversed", "payment": dict(_INTEROP, status="reversed")}},
     ("invalid_request", "idempotency_key_missing", "idempotency_mismatch", "idempotency_in_progress", "forbidden")),
    ("post", "/v1/interop/exchanges", "A partner credits one of our members with points its member exchanged",
     "InboundExchangeRequest", 201, ExchangeCredit, {"credited": _CREDIT},
     ("invalid_json", "invalid_request", "forbidden", "member_not_found")),
    ("get", "/v1/interop/exchanges", "A partner looks up its exchange credit by its reference", None, 200,
     ExchangeCredit, {"found": _CREDIT}, ("invalid_request", "forbidden", "exchange_not_found")),
    ("post", "/v1/members/{member_id}/exchanges", "Exchange points to the member's account at a partner network",
     "ExchangeRequest", 201, Exchange, {"completed": _EXCHANGE},
     ("invalid_json", "invalid_request", "idempotency_key_missing", "member_not_found", "exchange_unavailable",
      "insufficient_points_for_exchange")),
    ("get", "/v1/members/{member_id}/exchanges/{exchange_id}", "One exchange (poll a pending one)", None, 200, Exchange,
     {"pending": dict(_EXCHANGE, state="pending")}, ("member_not_found", "exchange_not_found")),
    ("post", "/v1/members/{member_id}/bank-accounts", "Link a bank account for cash-outs (the number is stored encrypted)",
     "BankAccountRequest", 201, BankAccount, {"linked": _BANK_ACCOUNT},
     ("invalid_json", "invalid_request", "unsupported_media_type", "member_not_found", "too_many_bank_accounts",
      "idempotency_in_progress")),
    ("get", "/v1/members/{member_id}/bank-accounts", "The member's linked bank accounts (numbers masked)", None, 200,
     BankAccountList, {"one": {"bank_accounts": [_BANK_ACCOUNT]}}, ("member_not_found",)),
    ("post", "/v1/members/{member_id}/cashouts", "Cash points out to a linked bank account (1 point = 1 KRW, less the fee)",
     "CashoutRequest", 201, Cashout, {"paid": _CASHOUT, "failed": _CASHOUT_FAILED},
     ("invalid_json", "invalid_request", "unsupported_media_type", "idempotency_key_missing", "idempotency_mismatch",
      "idempotency_in_progress", "member_not_found", "bank_account_not_found", "cashout_below_minimum",
      "insufficient_points_for_cashout", "bank_unavailable")),
    ("get", "/v1/members/{member_id}/cashouts", "The member's cash-outs, newest first (?limit=1-100, default 20)", None, 200,
     CashoutList, {"two": {"cashouts": [_CASHOUT_PENDING, _CASHOUT]}}, ("invalid_request", "member_not_found")),
    ("get", "/v1/members/{member_id}/cashouts/{cashout_id}", "One cash-out (poll a pending one)", None, 200, Cashout,
     {"pending": _CASHOUT_PENDING}, ("member_not_found", "cashout_not_found")),
    ("post", "/v1/members", "Enrol a member and their first device (secret and token shown once)", None, 201, Enrolment,
     {"enrolled": _ENROLMENT}, ("invalid_request", "invalid_json")),
    ("get", "/v1/members/{member_id}", "The member's balance", None, 200, MemberBalance,
     {"balance": {"member_id": "m62275aed6dc14cb", "unit": "HMP", "available": 7500, "held": 0, "expiring": 2000,
                  "next_expiry": {"points": 2000, "expires_at": "2026-12-31T14:59:59.000Z"},
                  "settings": {"confirm_over_points": 50000, "daily_cap_points": 300000, "daily_cap_max_points": 3000000}}},
     ("member_not_found",)),
    ("get", "/v1/members/{member_id}/history", "Every movement of the wallet, newest first, a page at a time", None, 200,
     History, {"page": {"items": [_EVENT], "next_before": "1764558855123-0"}}, ("member_not_found", "invalid_request")),
    ("get", "/v1/members/{member_id}/events", "The wallet's events after an offset, oldest first", None, 200,
     EventPage, {"page": {"events": [_EVENT], "last_event_id": "1764558855123-0"}}, ("member_not_found", "invalid_request")),
    ("get", "/v1/members/{member_id}/events/live", "Server-sent events: each movement of the wallet as it happens",
     None, 200, None, {}, ("member_not_found", "invalid_request", "live_feeds_busy")),
    ("put", "/v1/members/{member_id}/settings", "The member's spending limits (confirmation threshold, daily cap)",
     "SpendingSettings", 200, SpendingSettingsView,
     {"set": {"confirm_over_points": 50000, "daily_cap_points": 300000, "daily_cap_max_points": 3000000}},
     ("invalid_json", "invalid_request", "unsupported_media_type", "member_not_found")),
    ("post", "/v1/members/{member_id}/confirmations", "Approve one payment above the confirmation threshold",
     "Confirmation", 201, ConfirmationView, {"approved": {"points": 80000, "expires_at": "2026-12-01T03:16:15.123Z"}},
     ("invalid_json", "invalid_request", "unsupported_media_type", "member_not_found")),
    ("post", "/v1/members/{member_id}/devices", "Enrol another device (one per Idempotency-Key: a retry gets the same device back)", None, 201, Enrolment,
     {"enrolled": _ENROLMENT}, ("invalid_json", "invalid_request", "idempotency_key_missing", "idempotency_mismatch",
                                "member_not_found", "too_many_devices")),
    ("delete", "/v1/members/{member_id}/devices/{slot}", "Revoke a device (lost phone) and its token", None, 200,
     DeviceStatus, {"revoked": {"slot": 120455622, "status": "revoked"}}, ("member_not_found", "device_not_found")),
    ("post", "/v1/members/{member_id}/devices/{slot}/unlock", "Unlock a device locked by wrong codes", None, 200,
     DeviceStatus, {"unlocked": {"slot": 120455622, "status": "active"}},
     ("member_not_found", "device_not_found", "device_unavailable")),
    ("get", "/v1/members/{member_id}/devices/{slot}/codes", "The device's next payment codes (count 1-5)", None, 200,
     CodeList, {"one": {"codes": [_CODE]}}, ("invalid_request", "member_not_found", "device_not_found", "device_unavailable")),
    ("get", "/v1/members/{member_id}/devices/{slot}/code.png", "The current code as Code 128 or QR (?symbology=qr)",
     None, 200, None, {}, ("invalid_request", "member_not_found", "device_not_found", "device_unavailable")),
    ("get", "/v1/members/{member_id}/devices/{slot}/code.svg", "The current code as Code 128 SVG",
     None, 200, None, {}, ("invalid_request", "member_not_found", "device_not_found", "device_unavailable")),
    ("post", "/v1/earnings", "An affiliate credits earned points to a member", "EarningRequest", 201, Earning,
     {"credited": _EARNING},
     ("invalid_json", "invalid_request", "idempotency_key_missing", "idempotency_mismatch", "forbidden",
      "member_not_found", "over_budget", "affiliate_ref_in_use")),
    ("post", "/v1/campaigns", "An operator creates a coupon campaign", CampaignRequest, 201, CouponCampaign,
     {"created": _CAMPAIGN},
     ("invalid_json", "invalid_request", "unsupported_media_type", "idempotency_key_missing", "idempotency_mismatch",
      "idempotency_in_progress", "forbidden", "campaign_exists", "too_many_campaigns")),
    ("get", "/v1/campaigns", "Coupon campaigns: an operator sees all, a partner network its own", None, 200,
     CouponCampaignList, {"listed": {"campaigns": [_CAMPAIGN]}}, ("forbidden",)),
    ("get", "/v1/campaigns/{campaign_id}", "One coupon campaign and how many coupons it issued", None, 200,
     CouponCampaign, {"found": dict(_CAMPAIGN, issued=1204)}, ("forbidden", "campaign_not_found")),
    ("post", "/v1/campaigns/{campaign_id}/coupons", "Issue one coupon of the campaign to a member (an operator, "
     "or the partner network that issues the campaign)", CouponIssueRequest, 201, MemberCoupon, {"issued": _MEMBER_COUPON},
     ("invalid_json", "invalid_request", "unsupported_media_type", "idempotency_key_missing", "idempotency_mismatch",
      "idempotency_in_progress", "forbidden", *_CAMPAIGN_ISSUE_PROBLEMS)),
    ("get", "/v1/members/{member_id}/coupons", "The member's coupons, newest first (?state=issued|redeemed|expired)",
     None, 200, MemberCouponList, {"listed": {"member_id": "m62275aed6dc14cb", "coupons": [_MEMBER_COUPON]}},
     ("invalid_request", "member_not_found")),
    ("post", "/v1/members/{member_id}/coupons", "The member claims a coupon of a claimable campaign",
     CouponClaimRequest, 201, MemberCoupon, {"claimed": _MEMBER_COUPON},
     ("invalid_json", "invalid_request", "unsupported_media_type", "idempotency_key_missing", "idempotency_mismatch",
      "campaign_not_claimable", *_CAMPAIGN_ISSUE_PROBLEMS)),
    ("get", "/v1/me", "Who the member token belongs to: member id and device slot (the web wallet's sign-in)", None,
     200, WhoAmI, {"me": {"member_id": "m62275aed6dc14cb", "slot": 120455622, "code_step_s": 30, "unit": "HMP"}}, ()),
    ("get", "/v1/members/{member_id}/devices/{slot}/code.json", "The current code with its Code 128 and QR pictures "
     "as data: URLs", None, 200, CodeCard,
     {"card": dict(_CODE, server_time="2026-12-01T03:14:07.120Z", code128_svg="data:image/svg+xml;base64,PHN2Zz4=",
                   qr_png="data:image/png;base64,iVBORw0KGgo=")},
     ("member_not_found", "device_not_found", "device_unavailable")),
    ("get", "/v1/ops/console/session", "Who the operator console token belongs to, and until when", None, 200,
     ConsoleSession, {"session": {"operator_id": "ops", "name": "Operations", "expires_at": "2026-12-01T15:14:15.926Z"}},
     ()),
    ("get", "/v1/ops/console/live", "Server-sent events for the operator console: each sale (payment) and a summary "
     "every second (docs/web.md)", None, 200, None, {}, ("live_feeds_busy",)),
)
MEMBER_PROBLEMS = ("unauthorized", "storage_unavailable", "durability_timeout", "internal_error")
OTHER_SUCCESS: dict[tuple[str, str], dict[int, tuple[str, dict[str, Any]]]] = {
    ("post", "/v1/members/{member_id}/bank-accounts"): {
        200: ("The same bank and account number were already linked: the existing account", {"existing": _BANK_ACCOUNT})},
    ("post", "/v1/members/{member_id}/cashouts"): {
        202: ("Pending: the bank's answer is awaited and the points are held; poll the cash-out", {"pending": _CASHOUT_PENDING})},
}
"""Success statuses besides an operation's main one, with the same response type."""
OPS_ROUTES = (
    ("/healthz", "Liveness: the process answers"),
    ("/readyz", "Readiness: Redis reachable and scripts loaded"),
    ("/metrics", "Prometheus metrics of this process"),
    ("/openapi.json", "This document"),
)
WEB_PAGES = (
    ("/wallet", "The member's web wallet (HTML; sign in with the member token)"),
    ("/console", "The operator console (HTML; sign in with a console token)"),
)
CONSOLE_PROBLEMS = ("operator_unauthorized", "storage_unavailable", "internal_error")
AUTH_PROBLEMS = ("signature_missing", "bad_signature", "timestamp_out_of_window", "unknown_key", "nonce_replayed",
                 "storage_unavailable", "durability_timeout", "internal_error")


def _problem_example(code: str) -> dict[str, Any]:
    kind = PROBLEMS[code]
    return {"type": f"https://pointgate.dev/problems/{code}", "title": kind.title, "status": kind.status, "code": code,
            "detail": kind.title, "instance": "/v1/payments", "request_id": "req_9f2c4e1a7b3d5f60",
            "retryable": kind.retryable, "fault": kind.fault}


def _security(method: str, path: str) -> tuple[list[dict[str, list[str]]], tuple[str, ...]]:
    if path == "/v1/members" and method == "post":
        return [], ("storage_unavailable", "internal_error")
    if path.startswith("/v1/members") or path == "/v1/me":
        return BEARER, MEMBER_PROBLEMS
    if path.startswith("/v1/ops/"):
        return CONSOLE, CONSOLE_PROBLEMS
    return SIGNED, AUTH_PROBLEMS


def _operations() -> list[tuple]:
    from gateway.members import EarningRequest

    from gateway.members import Confirmation, ExchangeRequest, InboundExchangeRequest, SpendingSettings
    from gateway.cashouts import BankAccountRequest, CashoutRequest

    named = {"EarningRequest": EarningRequest, "ExchangeRequest": ExchangeRequest,
             "SpendingSettings": SpendingSettings, "Confirmation": Confirmation,
             "BankAccountRequest": BankAccountRequest, "CashoutRequest": CashoutRequest,
             "InboundExchangeRequest": InboundExchangeRequest, "InteropSaleRequest": payments.InteropSaleRequest,
             "InteropActionRequest": payments.InteropActionRequest, "InteropRefundRequest": payments.InteropRefundRequest,
             "InteropReversalRequest": payments.InteropReversalRequest}
    return [op[:3] + (named.get(op[3], op[3]) if isinstance(op[3], str) else op[3],) + op[4:] for op in OPERATIONS]


@functools.cache
def openapi_document() -> dict[str, Any]:
    operations = _operations()
    types = [t for op in operations for t in (op[3], op[5]) if t is not None] + [ProblemDetails]
    _, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    for op in operations:
        if op[3] is not None:
            components[op[3].__name__]["additionalProperties"] = False
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, request_type, status, response_type, examples, problems in operations:
        security, auth_problems = _security(method, path)
        codes = sorted(set(problems) | set(auth_problems))
        by_status: dict[int, list[str]] = {}
        for code in codes:
            by_status.setdefault(PROBLEMS[code].status, []).append(code)
        if response_type is None:
            media = "image/svg+xml" if path.endswith(".svg") else "text/event-stream" if path.endswith("/live") else "image/png"
            success = {media: {"schema": {"type": "string", "contentMediaType": media}}}
        else:
            success = {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{response_type.__name__}"},
                "examples": {name: {"value": value} for name, value in examples.items()}}}
        responses: dict[str, Any] = {str(status): {"description": summary, "content": success}}
        for other_status, (description, other_examples) in OTHER_SUCCESS.get((method, path), {}).items():
            responses[str(other_status)] = {"description": description, "content": {"application/json": {
                "schema": success["application/json"]["schema"],
                "examples": {name: {"value": value} for name, value in other_examples.items()}}}}
        for problem_status, problem_codes in sorted(by_status.items()):
            responses[str(problem_status)] = {
                "description": "problem: " + ", ".join(problem_codes),
                "content": {"application/problem+json": {
                    "schema": {"$ref": "#/components/schemas/ProblemDetails"},
                    "examples": {code: {"value": _problem_example(code)} for code in problem_codes}}},
            }
        signed = security is SIGNED
        headers = [p for p in MERCHANT_HEADERS if (signed and method == "post") or p["name"] != "Idempotency-Key"]
        operation: dict[str, Any] = {"summary": summary, "security": security, "responses": responses, "parameters": headers}
        operation["parameters"] += [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                                    for name in _path_params(path)]
        if path.endswith("/codes"):
            operation["parameters"].append({"name": "count", "in": "query", "required": False,
                                            "schema": {"type": "integer", "minimum": 1, "maximum": 5}})
        if path.endswith(".png"):
            operation["parameters"].append({"name": "symbology", "in": "query", "required": False,
                                            "schema": {"enum": ["code128", "qr"]}})
        if path == "/v1/interop/exchanges" and method == "get":
            operation["parameters"].append({"name": "exchange_ref", "in": "query", "required": True, "schema": _REF})
        if path.endswith(("/exchanges", "/cashouts", "/devices")) and path.startswith("/v1/members") and method == "post":
            operation["parameters"].append(MERCHANT_HEADERS[0])
        if path == "/v1/members/{member_id}/coupons":
            if method == "post":
                operation["parameters"].append(MERCHANT_HEADERS[0])
            else:
                operation["parameters"].append({"name": "state", "in": "query", "required": False,
                                                "schema": {"enum": ["issued", "redeemed", "expired"]}})
        if path == "/v1/interop/payments" and method == "get":
            operation["parameters"].append({"name": "partner_ref", "in": "query", "required": True, "schema": _REF})
        for name, where, schema in (("before", "/history", _EVENT_ID), ("limit", "/history", _EVENTS_LIMIT),
                                    ("after", "/events", _EVENT_ID), ("limit", "/events", _EVENTS_LIMIT),
                                    ("after", "/events/live", _LIVE_AFTER)):
            if path.startswith("/v1/members") and path.endswith(where):
                operation["parameters"].append({"name": name, "in": "query", "required": False, "schema": schema})
        if path.endswith("/cashouts") and method == "get":
            operation["parameters"].append({"name": "limit", "in": "query", "required": False,
                                            "schema": {"type": "integer", "minimum": 1, "maximum": 100}})
        if path == "/v1/payments" and method == "get":
            operation["parameters"].append({"name": "order_ref", "in": "query", "required": True, "schema": _REF})
        if request_type is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{request_type.__name__}"}}}}
        paths.setdefault(path, {})[method] = operation
    for path, summary in OPS_ROUTES:
        paths[path] = {"get": {"summary": summary, "responses": {"200": {"description": summary}}}}
    for path, summary in WEB_PAGES:
        paths[path] = {"get": {"summary": summary, "parameters": [
            {"name": "lang", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "ko or en; without it, or with any other value, the browser's preferred of the two, "
                            "else Korean (a page is never refused for its language)"}],
            "responses": {"200": {"description": summary, "content": {"text/html": {"schema": {"type": "string"}}}}}}}
    paths["/static/{name}"] = {"get": {
        "summary": "A script or style sheet of the web pages",
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "the file", "content": {media: {"schema": {"type": "string"}}
                                                           for media in ("text/javascript", "text/css")}},
            "404": {"description": "problem: not_found", "content": {"application/problem+json": {
                "schema": {"$ref": "#/components/schemas/ProblemDetails"},
                "examples": {"not_found": {"value": _problem_example("not_found")}}}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "pointgate API (merchants, members, affiliates)", "version": "1",
                 "description": "Signed with HMAC-SHA256 (see docs/signing.md). Declined sales are payments "
                                "with status declined and a decline code; errors are RFC 9457 problem+json. "
                                "Integers are JSON integer literals (4500, never 4500.0): no amount is ever a float."},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"pointgateSignature": {
                "type": "apiKey", "in": "header", "name": "X-PG-Signature",
                "description": "with X-PG-Merchant, X-PG-Key-Id, X-PG-Timestamp and X-PG-Nonce; see docs/signing.md"},
                "memberToken": {"type": "http", "scheme": "bearer",
                                "description": "the token a device got at enrolment (pgmt_...)"},
                "consoleToken": {"type": "http", "scheme": "bearer",
                                 "description": "an operator console token (pgct_...) from `gateway operators console-token`"}},
        },
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
