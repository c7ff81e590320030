"""Payment code v1: the 24-digit number a member's phone shows as a barcode.

This module is pure: no I/O and no clock reads. Time comes in as `now_s`
(unix seconds) and randomness as a `randbelow` function, so every function
here is a value-in, value-out computation that tests can pin down exactly.

It holds:

- Luhn mod 10 (`luhn_check_digit`, `luhn_valid`), the check digit a terminal
  uses to reject a misread or mistyped code without a network call.
- HOTP (RFC 4226) and TOTP (RFC 6238), computed with `hmac` directly because
  the verifier runs several of them per authorisation.
- The code format (`PaymentCode`, `encode_code`, `parse_code`) and its
  verification against a device secret (`match_step`).
- Device slots and storage partitions (`random_slot`, `partition_of_slot`).

Layout, digits 1-24 (docs/payment-code.md is the published form)::

    issuer(4) kind(1) slot(9) seq(1) otp(8) check(1)

Exceptions::

    ValueError
     └── CodeFormatError   the text is not a v1 payment code; `.reason` says why
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

CODE_DIGITS: Final = 24
ISSUER_DIGITS: Final = 4
SLOT_DIGITS: Final = 9
OTP_DIGITS: Final = 8
KIND_MEMBER_PAYMENT: Final = 1
SEQ_MAX: Final = 9
"""A phone may show at most ten codes (seq 0-9) inside one time step."""

PARTITIONS: Final = 1000
"""Storage partitions (Redis hash tags); the last three slot digits name one."""
SLOT_MIN: Final = 100_000_000
SLOT_MAX: Final = 999_999_999
"""Random slots have no leading zero, so they print and log as 9 digits."""

# Each verification costs one HMAC per step it tries, and a wrong guess tries
# them all, so the window and lookback are bounded. settings.py enforces the
# same bounds on code_window_steps and code_lookback_steps at start-up; the
# core checks again because it cannot know which path its caller came by.
WINDOW_STEPS_MAX: Final = 3
LOOKBACK_STEPS_MAX: Final = 240

DIGESTS: Final = frozenset({"sha1", "sha256", "sha512"})
"""HMAC digests RFC 6238 names; payment codes use sha256."""
CODE_DIGEST: Final = "sha256"

# RFC 4226 section 5.3: dynamic truncation yields a 31-bit integer, so at most
# 10 decimal digits carry information; fewer than 6 is too easy to guess.
_HOTP_DIGITS_MIN: Final = 6
_HOTP_DIGITS_MAX: Final = 10
# RFC 4226 section 5.2: the counter is an 8-byte big-endian integer.
_COUNTER_MAX: Final = 2**64 - 1

# Field positions inside the 24 digits.
_ISSUER: Final = slice(0, 4)
_KIND: Final = 4
_SLOT: Final = slice(5, 14)
_SEQ: Final = 14
_OTP: Final = slice(15, 23)
_PAYLOAD: Final = slice(0, 23)
_CHECK: Final = 23

CodeFormatReason = Literal["malformed", "bad_check_digit", "unsupported_kind"]
MatchResult = Literal["ok", "expired", "wrong_otp"]


class CodeFormatError(ValueError):
    """The text is not a v1 payment code.

    `reason` is stable and machine-readable: "malformed" (not exactly 24 ASCII
    digits), "bad_check_digit" (Luhn fails: a misread or mistyped code) or
    "unsupported_kind" (digit 5 is not 1).
    """

    def __init__(self, reason: CodeFormatReason) -> None:
        super().__init__(reason)
        self.reason: CodeFormatReason = reason


def _is_ascii_digits(text: object) -> bool:
    # str.isdigit() alone accepts '٣', '３' and '²'; isascii() limits it to 0-9.
    return isinstance(text, str) and text.isascii() and text.isdigit()


def luhn_check_digit(digits: str) -> str:
    """Return the Luhn mod 10 check digit to append to `digits`."""
    if not _is_ascii_digits(digits):
        raise ValueError("Luhn input must be a non-empty string of ASCII digits")
    total = 0
    # Counting from the right, the digit next to the (future) check digit is
    # doubled, then every second one after it.
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def luhn_valid(code: str) -> bool:
    """Whether `code` is ASCII digits whose last digit is the Luhn check of the rest."""
    if not _is_ascii_digits(code) or len(code) < 2:
        return False
    return luhn_check_digit(code[:-1]) == code[-1]


def hotp(secret: bytes, counter: int, digits: int = 8, digest: str = "sha256") -> str:
    """RFC 4226 HOTP: HMAC over the 8-byte counter, dynamic truncation, zero padded."""
    if digest not in DIGESTS:
        raise ValueError(f"digest must be one of {sorted(DIGESTS)}, not {digest!r}")
    if not _HOTP_DIGITS_MIN <= digits <= _HOTP_DIGITS_MAX:
        raise ValueError(f"digits must be {_HOTP_DIGITS_MIN}-{_HOTP_DIGITS_MAX}, not {digits}")
    if not 0 <= counter <= _COUNTER_MAX:
        raise ValueError(f"counter must fit in 8 unsigned bytes, not {counter}")
    mac = hmac.digest(secret, counter.to_bytes(8, "big"), digest)
    offset = mac[-1] & 0x0F
    truncated = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFF_FFFF
    return str(truncated % 10**digits).zfill(digits)


def totp(
    secret: bytes, now_s: int, step_s: int = 30, digits: int = 8, digest: str = "sha256"
) -> str:
    """RFC 6238 TOTP with T0 = 0: HOTP over the counter floor(now_s / step_s)."""
    return hotp(secret, step_of(now_s, step_s), digits, digest)


def step_of(now_s: int, step_s: int) -> int:
    """The time step that contains unix second `now_s`."""
    if step_s <= 0:
        raise ValueError(f"step_s must be positive, not {step_s}")
    return now_s // step_s


def step_expiry_s(step: int, step_s: int) -> int:
    """The unix second at which a code of `step` stops being the current one."""
    if step_s <= 0:
        raise ValueError(f"step_s must be positive, not {step_s}")
    return (step + 1) * step_s


def code_counter(step: int, seq: int) -> int:
    """The HOTP counter of code `seq` in time step `step`: step * 10 + seq."""
    if not 0 <= seq <= SEQ_MAX:
        raise ValueError(f"seq must be 0-{SEQ_MAX}, not {seq}")
    if step < 0:
        raise ValueError(f"step must not be negative, not {step}")
    return step * 10 + seq


@dataclass(frozen=True, slots=True)
class PaymentCode:
    """The fields of one payment code; `text` is its 24-digit form."""

    issuer: str
    kind: int
    slot: int
    seq: int
    otp: str

    def __post_init__(self) -> None:
        if not (_is_ascii_digits(self.issuer) and len(self.issuer) == ISSUER_DIGITS):
            raise ValueError(f"issuer must be {ISSUER_DIGITS} ASCII digits, not {self.issuer!r}")
        if not 0 <= self.kind <= 9:
            raise ValueError(f"kind must be one digit, not {self.kind}")
        if not 0 <= self.slot < 10**SLOT_DIGITS:
            raise ValueError(f"slot must fit in {SLOT_DIGITS} digits, not {self.slot}")
        if not 0 <= self.seq <= SEQ_MAX:
            raise ValueError(f"seq must be 0-{SEQ_MAX}, not {self.seq}")
        if not (_is_ascii_digits(self.otp) and len(self.otp) == OTP_DIGITS):
            raise ValueError(f"otp must be {OTP_DIGITS} ASCII digits, not {self.otp!r}")

    @property
    def text(self) -> str:
        """The full 24 digits, Luhn check digit included."""
        payload = f"{self.issuer}{self.kind}{self.slot:0{SLOT_DIGITS}d}{self.seq}{self.otp}"
        return payload + luhn_check_digit(payload)


def encode_code(
    issuer: str,
    slot: int,
    seq: int,
    secret: bytes,
    step: int,
    kind: int = KIND_MEMBER_PAYMENT,
) -> str:
    """Build the 24-digit code a device with `secret` shows as code `seq` of `step`."""
    otp = hotp(secret, code_counter(step, seq), OTP_DIGITS, CODE_DIGEST)
    return PaymentCode(issuer=issuer, kind=kind, slot=slot, seq=seq, otp=otp).text


def parse_code(text: str) -> PaymentCode:
    """Split a scanned or typed code into its fields, or raise `CodeFormatError`.

    The checks run in a fixed order: 24 ASCII digits first (nothing else is
    looked at before that holds), then the Luhn digit, then the kind.
    """
    if not (_is_ascii_digits(text) and len(text) == CODE_DIGITS):
        raise CodeFormatError("malformed")
    if luhn_check_digit(text[_PAYLOAD]) != text[_CHECK]:
        raise CodeFormatError("bad_check_digit")
    kind = int(text[_KIND])
    if kind != KIND_MEMBER_PAYMENT:
        raise CodeFormatError("unsupported_kind")
    return PaymentCode(
        issuer=text[_ISSUER],
        kind=kind,
        slot=int(text[_SLOT]),
        seq=int(text[_SEQ]),
        otp=text[_OTP],
    )


def _otp_matches(code: PaymentCode, secret: bytes, step: int) -> bool:
    expected = hotp(secret, code_counter(step, code.seq), OTP_DIGITS, CODE_DIGEST)
    return hmac.compare_digest(expected, code.otp)


def match_step(
    code: PaymentCode,
    secret: bytes,
    now_s: int,
    step_s: int,
    window_steps: int,
    lookback_steps: int,
) -> tuple[MatchResult, int | None]:
    """Find the time step whose OTP the code carries.

    Returns ("ok", step) when the code matches a step within `window_steps`
    of now (clock skew between phone and gateway), trying the current step
    first, then -1, +1, -2, +2 and so on. Returns ("expired", step) when it
    matches one of the `lookback_steps` steps just before the window, and
    ("wrong_otp", None) otherwise.

    Expired is told apart from wrong because only the device secret can
    produce a code that matches an older step: a stale screen (an app left
    open, a screenshot) proves the secret and is not a guess, so the caller
    declines it without counting it towards the slot's failed-guess lock.
    A wrong OTP may be a guess and is counted. A guesser gains nothing from
    the lookback: an expired result never approves, and a random guess lands
    in it with only lookback_steps x 1e-8 chance, so it is nearly always
    counted.
    """
    if not 0 <= window_steps <= WINDOW_STEPS_MAX:
        raise ValueError(f"window_steps must be 0-{WINDOW_STEPS_MAX}, not {window_steps}")
    if not 0 <= lookback_steps <= LOOKBACK_STEPS_MAX:
        raise ValueError(f"lookback_steps must be 0-{LOOKBACK_STEPS_MAX}, not {lookback_steps}")
    now_step = step_of(now_s, step_s)
    offsets = [0]
    for distance in range(1, window_steps + 1):
        offsets += [-distance, distance]
    for offset in offsets:
        step = now_step + offset
        if step >= 0 and _otp_matches(code, secret, step):
            return "ok", step
    # Newest first: a stale screen is usually a step or two old, so this finds
    # it after few HMACs.
    newest_expired = now_step - window_steps - 1
    for step in range(newest_expired, newest_expired - lookback_steps, -1):
        if step >= 0 and _otp_matches(code, secret, step):
            return "expired", step
    return "wrong_otp", None


def partition_of_slot(slot: int) -> int:
    """The storage partition (hash tag) of a slot: its last three digits."""
    return slot % PARTITIONS


def random_slot(partition: int, randbelow: Callable[[int], int]) -> int:
    """Draw a 9-digit slot id whose last three digits are `partition`.

    The slot is random (pass `secrets.randbelow`), never derived from member
    data, so a code reveals nothing about who shows it. All of one member's
    devices get the member's partition, so the code alone names the member's
    storage scope (the Redis hash tag) without a lookup. The caller checks the
    new slot is not already taken; with 900,000 slots per partition a clash
    is rare but possible.
    """
    if not 0 <= partition < PARTITIONS:
        raise ValueError(f"partition must be 0-{PARTITIONS - 1}, not {partition}")
    high_count = (SLOT_MAX + 1 - SLOT_MIN) // PARTITIONS
    high = SLOT_MIN // PARTITIONS + randbelow(high_count)
    slot = high * PARTITIONS + partition
    if not SLOT_MIN <= slot <= SLOT_MAX:
        raise ValueError(f"randbelow({high_count}) returned a value out of range")
    return slot
