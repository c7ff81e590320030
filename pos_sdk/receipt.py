"""Plain-text receipts for 32- to 48-column thermal printers, in Korean or English.

This module is pure: a `ReceiptData` in, the receipt's text out. The
terminal sends the text to its printer; encoding it for the printer's code
page (CP949 for Korean) is the transport's job.

Widths are display columns, not characters. Thermal printers with a Korean
font print Hangul and other East Asian wide characters two columns wide, so
`display_width` counts a character of East Asian width W or F as 2. It also
counts the ambiguous class A (`·`, `…`, `※`, Greek, Cyrillic) as 2, because
the KS X 1001 fonts of Korean printers print those double width too; on other
printers such a line comes out a column short, never a column too long.

Layout: every line is padded to exactly `width` columns by that count. A
double-width character that would take the last column and one more moves to
the next line instead (or, in the store name, is cut). The store name is
centred and cut with "..." when too wide. A label/value line has the label on
the left and the value right-aligned; when both do not fit on one line, the
label takes a line of its own and the value is wrapped right-aligned under it,
so no id or amount is ever cut short.

Text from the caller is made printable first: NFC normalisation (decomposed
Hangul jamo become syllables), each run of whitespace and line breaks becomes
one space, and other control and format characters are dropped, so a value
can never start a new line or move the print head.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, get_args

__all__ = [
    "CURRENCY_EXPONENTS",
    "FIELD_CHARS_MAX",
    "ReceiptData",
    "ReceiptStatus",
    "display_width",
    "format_amount",
    "render_receipt",
]

WIDTH_MIN_COLUMNS: Final = 32
WIDTH_MAX_COLUMNS: Final = 48
"""58 mm paper prints 32 columns of the standard font, 80 mm paper 42 or 48."""

FIELD_CHARS_MAX: Final = 256
"""Longest text field, in characters. Gateway ids and order references are at
most 64; a longer field is a caller's bug, not something to print metres of."""

COUPON_DISCOUNTS_MAX: Final = 5
"""A sale carries at most 5 coupon codes (the gateway's sale request limit)."""

CURRENCY_EXPONENTS: Final = {"KRW": 0, "TWD": 0, "JPY": 0, "CNY": 2, "THB": 2, "USD": 2}
"""ISO 4217 minor-unit digits of the currencies a receipt can show; amounts are
integers in minor units. An unlisted currency is refused rather than guessed."""

ReceiptStatus = Literal["approved", "declined", "cancelled", "refunded", "partially_refunded", "reversed"]
Language = Literal["ko", "en"]

_STATUSES: Final = frozenset(get_args(ReceiptStatus))
_ELLIPSIS: Final = "..."  # ASCII: every printer code page has it, and it is never wide
_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"
_WIDE: Final = frozenset({"W", "F", "A"})

_LABELS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "store": "Store",
        "terminal": "Terminal",
        "time": "Time",
        "order_ref": "Order",
        "payment_id": "Payment",
        "status": "Status",
        "amount": "Amount",
        "points_used": "Points used",
        "balance_after": "Points balance",
        "fx_rate": "FX rate",
        "partner_network": "Partner network",
        "approval_code": "Approval code",
        "refund_amount": "Refunded",
        "footer": "Thank you",
    },
    "ko": {
        "store": "매장",
        "terminal": "단말기",
        "time": "일시",
        "order_ref": "주문번호",
        "payment_id": "결제번호",
        "status": "상태",
        "amount": "결제금액",
        "points_used": "사용 포인트",
        "balance_after": "잔여 포인트",
        "fx_rate": "환율",
        "partner_network": "제휴 네트워크",
        "approval_code": "승인번호",
        "refund_amount": "환불금액",
        "footer": "감사합니다",
    },
}

_STATUS_TEXT: Final[dict[str, dict[str, str]]] = {
    "en": {
        "approved": "APPROVED",
        "declined": "DECLINED",
        "cancelled": "CANCELLED",
        "refunded": "REFUNDED",
        "partially_refunded": "PARTIALLY REFUNDED",
        "reversed": "REVERSED",
    },
    "ko": {
        "approved": "승인",
        "declined": "거절",
        "cancelled": "취소",
        "refunded": "환불",
        "partially_refunded": "부분환불",
        "reversed": "망취소",
    },
}


def _check_text(name: str, value: object, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise ValueError(f"{name} must be str, not {type(value).__name__}")
    if len(value) > FIELD_CHARS_MAX:
        raise ValueError(f"{name} is {len(value)} characters, over {FIELD_CHARS_MAX}")


def _check_amount(name: str, value: object, optional: bool = False) -> None:
    if value is None and optional:
        return
    # bool is an int subclass; True points are a caller's bug.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, not {value!r}")


@dataclass(frozen=True, slots=True)
class ReceiptData:
    """Everything one receipt shows. Amounts are integers in the currency's minor units."""

    store_name: str
    store_id: str
    terminal_id: str
    time: datetime
    """Aware; printed in its own offset, so pass it in the store's time zone."""
    order_ref: str
    payment_id: str
    approval_code: str | None
    status: ReceiptStatus
    amount: int
    currency: str
    points_used: int
    balance_after: int | None
    coupon_discounts: tuple[tuple[str, int], ...] = ()
    fx_rate: str | None = None
    """As the gateway states it, e.g. "1 TWD = 43.12 KRW"."""
    partner_network: str | None = None
    refund_amount: int | None = None
    decline_message: str | None = None

    def __post_init__(self) -> None:
        for name in ("store_name", "store_id", "terminal_id", "order_ref", "payment_id"):
            _check_text(name, getattr(self, name))
        for name in ("approval_code", "fx_rate", "partner_network", "decline_message"):
            _check_text(name, getattr(self, name), optional=True)
        if not isinstance(self.time, datetime) or self.time.utcoffset() is None:
            raise ValueError("time must be an aware datetime (the store's local time)")
        if self.status not in _STATUSES:
            raise ValueError(f"status must be one of {sorted(_STATUSES)}, not {self.status!r}")
        if self.currency not in CURRENCY_EXPONENTS:
            raise ValueError(f"currency must be one of {sorted(CURRENCY_EXPONENTS)}, not {self.currency!r}")
        _check_amount("amount", self.amount)
        _check_amount("points_used", self.points_used)
        _check_amount("balance_after", self.balance_after, optional=True)
        _check_amount("refund_amount", self.refund_amount, optional=True)
        if not isinstance(self.coupon_discounts, tuple) or len(self.coupon_discounts) > COUPON_DISCOUNTS_MAX:
            raise ValueError(f"coupon_discounts must be a tuple of at most {COUPON_DISCOUNTS_MAX} pairs")
        for pair in self.coupon_discounts:
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise ValueError(f"each coupon discount must be a (label, amount) pair, not {pair!r}")
            _check_text("coupon label", pair[0])
            _check_amount("coupon amount", pair[1])


def display_width(text: str) -> int:
    """Columns `text` takes on a thermal printer: 2 for East Asian W, F and A, else 1."""
    return sum(2 if unicodedata.east_asian_width(char) in _WIDE else 1 for char in text)


def format_amount(amount: int, currency: str) -> str:
    """`amount` minor units as the receipt shows them: "4,500 KRW", "12.50 THB"."""
    exponent = CURRENCY_EXPONENTS[currency]
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 10**exponent)
    if exponent == 0:
        return f"{sign}{major:,} {currency}"
    return f"{sign}{major:,}.{minor:0{exponent}d} {currency}"


def _printable(text: str) -> str:
    out = []
    for char in unicodedata.normalize("NFC", text):
        category = unicodedata.category(char)
        if char.isspace() or category in ("Zl", "Zp"):
            out.append(" ")
        elif category[0] != "C":  # Cc, Cf, Cs, Co, Cn: nothing a printer should get
            out.append(char)
    return " ".join(word for word in "".join(out).split(" ") if word)


def _cut(text: str, columns: int) -> tuple[str, str]:
    """Split `text` into a head of at most `columns` columns and the rest."""
    used = 0
    for index, char in enumerate(text):
        used += display_width(char)
        if used > columns:
            return text[:index], text[index:]
    return text, ""


def _wrap(text: str, width: int) -> list[str]:
    """Break `text` into lines of at most `width` columns, at spaces where it can."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        if not word:
            continue
        candidate = f"{line} {word}" if line else word
        if display_width(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        # A word wider than the line (an id, a URL) is broken where it must be.
        while display_width(word) > width:
            head, word = _cut(word, width)
            lines.append(head)
        line = word
    if line:
        lines.append(line)
    return lines or [""]


def _left(text: str, width: int) -> str:
    return text + " " * (width - display_width(text))


def _right(text: str, width: int) -> str:
    return " " * (width - display_width(text)) + text


def _centre(text: str, width: int) -> str:
    if display_width(text) > width:
        head, _ = _cut(text, width - display_width(_ELLIPSIS))
        text = head.rstrip() + _ELLIPSIS
    spare = width - display_width(text)
    return " " * (spare // 2) + text + " " * (spare - spare // 2)


def _pair(label: str, value: str, width: int) -> list[str]:
    label, value = _printable(label), _printable(value)
    if display_width(label) + 1 + display_width(value) <= width:
        return [label + " " * (width - display_width(label) - display_width(value)) + value]
    return [_left(line, width) for line in _wrap(label, width)] + [
        _right(line, width) for line in _wrap(value, width)
    ]


def render_receipt(data: ReceiptData, width: int = 42, language: Language = "ko") -> str:
    """The receipt as text: one line per row, each `width` columns, ending in a newline."""
    if not isinstance(width, int) or isinstance(width, bool) or not WIDTH_MIN_COLUMNS <= width <= WIDTH_MAX_COLUMNS:
        raise ValueError(f"width must be {WIDTH_MIN_COLUMNS}-{WIDTH_MAX_COLUMNS} columns, not {width!r}")
    if language not in _LABELS:
        raise ValueError(f"language must be one of {sorted(_LABELS)}, not {language!r}")
    labels = _LABELS[language]
    rule = "-" * width

    def money(amount: int) -> str:
        return format_amount(amount, data.currency)

    lines = [_centre(_printable(data.store_name), width), rule]
    lines += _pair(labels["store"], data.store_id, width)
    lines += _pair(labels["terminal"], data.terminal_id, width)
    lines += _pair(labels["time"], data.time.strftime(_TIME_FORMAT), width)
    lines += _pair(labels["order_ref"], data.order_ref, width)
    lines += _pair(labels["payment_id"], data.payment_id, width)
    lines.append(rule)
    lines += _pair(labels["status"], _STATUS_TEXT[language][data.status], width)
    if data.decline_message is not None:
        lines += [_left(line, width) for line in _wrap(_printable(data.decline_message), width)]
    lines += _pair(labels["amount"], money(data.amount), width)
    for label, discount in data.coupon_discounts:
        lines += _pair(label, money(-discount), width)
    lines += _pair(labels["points_used"], f"{data.points_used:,}", width)
    if data.balance_after is not None:
        lines += _pair(labels["balance_after"], f"{data.balance_after:,}", width)
    if data.fx_rate is not None:
        lines += _pair(labels["fx_rate"], data.fx_rate, width)
    if data.partner_network is not None:
        lines += _pair(labels["partner_network"], data.partner_network, width)
    if data.approval_code is not None:
        lines += _pair(labels["approval_code"], data.approval_code, width)
    if data.refund_amount is not None:
        lines += _pair(labels["refund_amount"], money(data.refund_amount), width)
    lines += [rule, _centre(labels["footer"], width)]
    return "\n".join(lines) + "\n"
