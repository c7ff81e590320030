"""What a scanner sent, or a cashier typed: a payment code, a coupon, a product, or none.

This module is pure: text in, a `ScanResult` out. A keyboard-wedge or serial
scanner sends the barcode's text with noise around it (an AIM symbology
identifier such as `]C0` in front when the scanner is set up to send one, a
CR or CRLF after it, sometimes a tab), and a cashier who keys in the digits
printed under a barcode groups them with spaces or dashes. `classify` removes
that noise and says what is left.

A terminal checks the payment code's format rules 1-3 (docs/payment-code.md:
24 ASCII digits, Luhn check digit, kind 1) and its issuer prefix here, so a
misread or mistyped code is rejected at the till without a network call. The
gateway applies every rule again. The SDK ships without the gateway, so the
Luhn check is reimplemented here rather than imported from `gateway.codes`;
tests/unit/test_pos_scanner.py holds the two to the same answers.

Cleaning, in order:

1. Leading and trailing whitespace, then CR, LF and tab anywhere.
2. One AIM symbology identifier at the start: `]`, a letter, then a modifier
   character (ISO/IEC 15424), e.g. `]C0` Code 128, `]Q1` QR, `]E0` EAN-13 or
   UPC-A, `]E4` EAN-8. The text after it is stripped of whitespace again.
3. For digits and coupons only, inner spaces and dashes (typed input such as
   `9410 1123 ...` or `9410-1123-...`). Anything else keeps them, and is
   reported as it was cleaned up to that point.

Only ASCII digits make a payment code or a product. Fullwidth `３`,
Arabic-Indic `٣` and other Unicode digits are not converted: a code that
arrives in them did not come from a scanner reading our barcode.

Exceptions::

    PosError (pos_sdk.errors)
     └── ScannerError (also a ValueError)   not a usable payment code; `.reason` says why
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final, Literal

from pos_sdk.errors import PosError

__all__ = [
    "COUPON_RE",
    "SCAN_CHARS_MAX",
    "ScanKind",
    "ScanReason",
    "ScanResult",
    "ScannerError",
    "classify",
    "parse_payment_code",
]

SCAN_CHARS_MAX: Final = 256
"""Longest raw input looked at. A payment code with an AIM identifier, typed
separators and CRLF is under 40 characters; 256 leaves room for any coupon or
retail barcode while keeping a stray QR code (a URL, a vCard) or a stuck key
from flowing into logs and screens."""

CODE_DIGITS: Final = 24
KIND_MEMBER_PAYMENT: Final = "1"

# Pointgate coupon codes: "CP" and 6-16 upper-case ASCII letters and digits.
# This mirrors the coupon format the gateway is to issue; the gateway has no
# coupon campaigns yet (it declines every coupon code as invalid_coupon), so
# when it starts issuing them, its format and this pattern must move together.
# Character classes are spelled out because \w and \d also match non-ASCII.
COUPON_RE: Final = re.compile(r"CP[A-Z0-9]{6,16}")

ScanKind = Literal["payment_code", "coupon", "product", "unknown"]
ScanReason = Literal[
    "empty",            # nothing left after cleaning
    "too_long",         # over SCAN_CHARS_MAX characters
    "not_digits",       # characters other than ASCII digits, and not a coupon
    "wrong_length",     # ASCII digits, but neither 24 nor a valid product barcode
    "bad_check_digit",  # 24 digits failing Luhn: a misread or a typo
    "unsupported_kind",  # 24 digits, valid Luhn, digit 5 is not 1
    "unknown_issuer",   # 24 digits, valid Luhn and kind, prefix not configured here
    "coupon",           # parse_payment_code only: a coupon was scanned
    "product",          # parse_payment_code only: a product barcode was scanned
]

# AIM code characters (and, for EAN/UPC, the modifier) to the symbology names
# this SDK reports. Others are stripped like these but reported as None.
_AIM_SYMBOLOGIES: Final = {
    "C": "code128",
    "Q": "qr",
    "E0": "ean13",  # EAN-13, and UPC-A sent as 13 digits with a leading 0
    "E4": "ean8",
    "d": "datamatrix",
    "A": "code39",
    "I": "itf",
}
_AIM_RE: Final = re.compile(r"\](?P<code>[A-Za-z])(?P<modifier>[0-9A-Za-z])")
_LINE_NOISE: Final = str.maketrans("", "", "\r\n\t")
_TYPED_SEPARATORS: Final = str.maketrans("", "", " -")

# GS1 product barcodes by length: EAN-8, UPC-A, EAN-13.
_PRODUCT_DIGITS: Final = frozenset({8, 12, 13})

_MESSAGES: Final[dict[str, tuple[str, str]]] = {
    # reason: (English, Korean) message for the cashier's screen
    "empty": ("Nothing was scanned. Scan the member's code.", "스캔된 내용이 없습니다. 회원의 코드를 스캔하세요."),
    "too_long": ("This is not a payment code. Scan the member's payment code.", "결제 코드가 아닙니다. 회원의 결제 코드를 스캔하세요."),
    "not_digits": ("This is not a payment code. Scan the member's payment code.", "결제 코드가 아닙니다. 회원의 결제 코드를 스캔하세요."),
    "wrong_length": ("The code is incomplete. Scan again or type all 24 digits.", "코드가 완전하지 않습니다. 다시 스캔하거나 24자리를 모두 입력하세요."),
    "bad_check_digit": ("The code was misread. Scan again.", "코드를 잘못 읽었습니다. 다시 스캔하세요."),
    "unsupported_kind": ("This code cannot pay. Ask the member to show the payment code.", "결제할 수 없는 코드입니다. 결제 코드를 보여 달라고 요청하세요."),
    "unknown_issuer": ("This code is not from a supported wallet.", "지원하지 않는 지갑의 코드입니다."),
    "coupon": ("This is a coupon. Add it to the order, then scan the payment code.", "쿠폰입니다. 주문에 추가한 뒤 결제 코드를 스캔하세요."),
    "product": ("This is a product barcode. Scan the member's payment code.", "상품 바코드입니다. 회원의 결제 코드를 스캔하세요."),
}


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What one scan or typed entry is.

    `value` is the cleaned text (the 24 digits of a payment code, a coupon in
    upper case, the product digits); it is empty for "too_long". `symbology`
    comes from the AIM identifier and is None without one. `reason` is set
    exactly when `kind` is "unknown".
    """

    kind: ScanKind
    value: str
    symbology: str | None = None
    reason: ScanReason | None = None


class ScannerError(PosError, ValueError):
    """The input is not a payment code this terminal can send.

    `reason` (also `code`) is one of `ScanReason`; `message` and `message_ko`
    are for the cashier's screen; `result` is the full classification.
    """

    def __init__(self, result: ScanResult, reason: ScanReason) -> None:
        message, message_ko = _MESSAGES[reason]
        super().__init__(reason, message)
        self.reason: ScanReason = reason
        self.message_ko = message_ko
        self.result = result


def _is_ascii_digits(text: str) -> bool:
    # str.isdigit() alone accepts '٣', '３' and '²'; isascii() limits it to 0-9.
    return text.isascii() and text.isdigit()


def _luhn_valid(digits: str) -> bool:
    # Counting from the right, the check digit itself is not doubled, the
    # next one is, then every second one after it.
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _gs1_valid(digits: str) -> bool:
    # GS1 mod 10: counting from the right, the check digit weighs 1, then the
    # weights alternate 3, 1, 3, ... whatever the barcode's length.
    total = sum((ord(char) - 48) * (1 if position % 2 == 0 else 3)
                for position, char in enumerate(reversed(digits)))
    return total % 10 == 0


def _strip_aim(text: str) -> tuple[str, str | None]:
    match = _AIM_RE.match(text)
    if match is None:
        return text, None
    code, modifier = match["code"], match["modifier"]
    # EAN/UPC are named by code and modifier (]E0, ]E4), the others by code.
    symbology = _AIM_SYMBOLOGIES.get(code + modifier, _AIM_SYMBOLOGIES.get(code))
    return text[match.end():].strip(), symbology


def _classify_digits(digits: str, issuer_prefixes: Collection[str], symbology: str | None) -> ScanResult:
    if len(digits) == CODE_DIGITS:
        # The order of docs/payment-code.md: Luhn, then kind; the issuer
        # prefix is routing and comes last.
        if not _luhn_valid(digits):
            return ScanResult("unknown", digits, symbology, "bad_check_digit")
        if digits[4] != KIND_MEMBER_PAYMENT:
            return ScanResult("unknown", digits, symbology, "unsupported_kind")
        if digits[:4] not in issuer_prefixes:
            return ScanResult("unknown", digits, symbology, "unknown_issuer")
        return ScanResult("payment_code", digits, symbology)
    if len(digits) in _PRODUCT_DIGITS and _gs1_valid(digits):
        return ScanResult("product", digits, symbology)
    return ScanResult("unknown", digits, symbology, "wrong_length")


def classify(raw: str, issuer_prefixes: Collection[str]) -> ScanResult:
    """Say what a scan or typed entry is; never raises for a str.

    `issuer_prefixes` are the 4-digit issuer prefixes this terminal accepts
    (config/networks.toml), e.g. {"9410", "8860"}.
    """
    if not isinstance(raw, str):
        raise TypeError(f"raw must be str, not {type(raw).__name__}")
    if isinstance(issuer_prefixes, str):
        # "1088" in "94108860" is True: a bare string is a caller's bug.
        raise TypeError("issuer_prefixes must be a collection of prefixes, not one string")
    if len(raw) > SCAN_CHARS_MAX:
        return ScanResult("unknown", "", None, "too_long")
    text = raw.strip().translate(_LINE_NOISE)
    text, symbology = _strip_aim(text)
    compact = text.translate(_TYPED_SEPARATORS)
    if not compact:
        return ScanResult("unknown", "", symbology, "empty")
    if _is_ascii_digits(compact):
        return _classify_digits(compact, issuer_prefixes, symbology)
    # isascii() first: str.upper() maps 'ı' to 'I' and 'ſ' to 'S'.
    if compact.isascii() and COUPON_RE.fullmatch(compact.upper()):
        return ScanResult("coupon", compact.upper(), symbology)
    return ScanResult("unknown", text, symbology, "not_digits")


def parse_payment_code(raw: str, issuer_prefixes: Collection[str]) -> str:
    """The 24 digits of the payment code in `raw`, or `ScannerError` saying why not."""
    result = classify(raw, issuer_prefixes)
    if result.kind == "payment_code":
        return result.value
    if result.kind in ("coupon", "product"):
        raise ScannerError(result, result.kind)
    assert result.reason is not None, result  # classify sets a reason on every unknown
    raise ScannerError(result, result.reason)
