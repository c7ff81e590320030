"""A member's phone: enrols over the member API and shows payment codes, offline or online.

The phone is what a member's wallet app does, using only the gateway's public
member API (`POST /v1/members`, `GET /v1/members/{id}`, `.../codes`) and the
published code format (docs/payment-code.md). It does not import
`gateway.codes`: a phone app is written by another team from the published
page, so the code computation is reimplemented here, and the tests hold it to
the page's test vectors and to the gateway's own online codes. Only the
picture of a code comes from `gateway.render`, so that there is one renderer
(the phone screen is our simulator, not the vendor SDK).

Shape: the code computation (`hotp_sha256`, `luhn_check_digit`,
`offline_code`) and the choice of the next (step, seq) to show
(`next_position`) are pure and take time as an argument; `Phone` wraps them
with the HTTP calls and the phone's keychain file.

Exceptions::

    PhoneError                 base; `code`, `status`, `request_id`, `fault` ("caller" or "gateway")
     ├── ApiError              the gateway answered with a problem (or nonsense)
     ├── UnreachableError      no answer from the gateway in time
     ├── CodesExhausted        the phone has shown every code it may show until the next step
     └── KeychainError         the saved phone file is unusable or readable by others
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote

import aiohttp

from gateway import render

__all__ = [
    "ApiError",
    "Balance",
    "CodesExhausted",
    "KeychainError",
    "OnlineCode",
    "Phone",
    "PhoneError",
    "UnreachableError",
    "hotp_sha256",
    "luhn_check_digit",
    "next_position",
    "offline_code",
]

CODE_DIGITS: Final = 24
OTP_DIGITS: Final = 8
SEQ_MAX: Final = 9
"""docs/payment-code.md: at most ten codes (seq 0-9) inside one time step."""
LEAD_STEPS_MAX: Final = 1
"""After seq 9 the phone moves on to the next step, which the gateway already
accepts because of its +-1 step skew window; two steps ahead it would not."""
ONLINE_CODES_MAX: Final = 5
"""The member API hands out 1-5 codes per call."""
TIMEOUT_S: Final = 10.0
"""Per call. An enrolment or a code takes milliseconds; 10 s covers a slow mobile network."""
CONNECT_TIMEOUT_S: Final = 3.0
ANSWER_BYTES_MAX: Final = 64 * 1024
"""The largest member API answer is a few hundred bytes; anything much larger is not ours."""
KEYCHAIN_BYTES_MAX: Final = 64 * 1024
KEYCHAIN_FORMAT: Final = 1
_KEYCHAIN_MODE: Final = 0o600

_DIGITS_RE: Final = re.compile(r"[0-9]+")  # ASCII only: \d would also match '٣'
RenderKind = Literal["code128", "qr"]


# -- errors -------------------------------------------------------------------


class PhoneError(Exception):
    """Base of every phone error; says what, whose fault, and the gateway's request id."""

    def __init__(self, code: str, message: str, *, status: int | None = None, request_id: str | None = None,
                 fault: str = "caller") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id
        self.fault = fault


class ApiError(PhoneError):
    """The gateway refused the call (its problem `code`) or answered something that is not the contract."""


class UnreachableError(PhoneError):
    """The gateway could not be reached or did not answer in time."""


class CodesExhausted(PhoneError):
    """Every code the phone may show until the next time step has been shown."""


class KeychainError(PhoneError):
    """The phone's saved file cannot be used."""


# -- the pure core: the code a phone shows ----------------------------------------


def hotp_sha256(secret: bytes, counter: int, digits: int = OTP_DIGITS) -> str:
    """RFC 4226 HOTP with HMAC-SHA256: 8-byte big-endian counter, dynamic truncation, zero padded."""
    mac = hmac.new(secret, counter.to_bytes(8, "big"), hashlib.sha256).digest()
    offset = mac[-1] & 0x0F  # RFC 4226 section 5.3: the low nibble of the last byte
    truncated = int.from_bytes(mac[offset:offset + 4], "big") & 0x7FFF_FFFF
    return str(truncated % 10**digits).zfill(digits)


def luhn_check_digit(digits: str) -> str:
    """The Luhn mod 10 digit to append to `digits` (ASCII digits)."""
    total = 0
    # From the right, the digit next to the future check digit is doubled, then every second one.
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str(-total % 10)


def offline_code(issuer_prefix: str, slot: int, step: int, seq: int, secret: bytes) -> str:
    """The 24 digits a device shows as code `seq` of time `step`: issuer, kind 1, slot, seq, otp, Luhn."""
    if not (len(issuer_prefix) == 4 and _DIGITS_RE.fullmatch(issuer_prefix)):
        raise ValueError(f"issuer prefix must be 4 ASCII digits, not {issuer_prefix!r}")
    if not 0 <= slot <= 999_999_999:
        raise ValueError(f"slot must fit in 9 digits, not {slot}")
    if not 0 <= seq <= SEQ_MAX:
        raise ValueError(f"seq must be 0-{SEQ_MAX}, not {seq}")
    if step < 0:
        raise ValueError(f"step must not be negative, not {step}")
    payload = f"{issuer_prefix}1{slot:09d}{seq}{hotp_sha256(secret, step * 10 + seq)}"
    return payload + luhn_check_digit(payload)


def step_of(now_s: float, code_step_s: int) -> int:
    """The time step containing unix time `now_s` (T0 = 0)."""
    return math.floor(now_s) // code_step_s


def next_position(last_shown: tuple[int, int] | None, now_step: int) -> tuple[int, int]:
    """The (step, seq) of the next code to show, given the last one shown and the current step.

    A new step starts at seq 0; inside a step each code shown moves seq on by
    one; after seq 9 the next step's seq 0 follows. Raises CodesExhausted when
    that would be more than LEAD_STEPS_MAX steps ahead of now.
    """
    if last_shown is None or last_shown[0] < now_step:
        return now_step, 0
    step, seq = last_shown
    position = (step, seq + 1) if seq < SEQ_MAX else (step + 1, 0)
    if position[0] > now_step + LEAD_STEPS_MAX:
        raise CodesExhausted("codes_exhausted", "every code until the next time step has been shown; wait a few seconds")
    return position


def _is_code(text: object) -> bool:
    return isinstance(text, str) and len(text) == CODE_DIGITS and _DIGITS_RE.fullmatch(text) is not None


def _secret_from_b32(text: str) -> bytes:
    # The gateway's otpauth URI strips base32 padding (as authenticator apps
    # expect), so it is put back before decoding.
    try:
        secret = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError) as e:
        raise ValueError("the device secret is not base32") from e
    if not secret:
        raise ValueError("the device secret is empty")
    return secret


def _secret_to_b32(secret: bytes) -> str:
    return base64.b32encode(secret).decode().rstrip("=")


# -- results ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OnlineCode:
    """A code the gateway issued for this device; times are ISO 8601 as the API gives them."""

    code: str
    step: int
    seq: int
    refresh_at: str
    expires_at: str


@dataclass(frozen=True, slots=True)
class Balance:
    member_id: str
    unit: str
    available: int
    held: int


# -- the phone --------------------------------------------------------------------


@dataclass
class Phone:
    """One enrolled device of one member, as the wallet app holds it."""

    base_url: str
    member_id: str
    token: str = field(repr=False)
    token_expires_at: str
    slot: int
    secret: bytes = field(repr=False)
    issuer_prefix: str
    code_step_s: int
    last_shown: tuple[int, int] | None = None
    """(step, seq) of the last offline code shown, so a restarted app never shows one twice."""
    timeout_s: float = TIMEOUT_S

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if not self.code_step_s > 0:
            raise ValueError(f"code_step_s must be positive, not {self.code_step_s}")
        offline_code(self.issuer_prefix, self.slot, 0, 0, self.secret)  # checks prefix and slot

    # -- enrolment ------------------------------------------------------------

    @classmethod
    async def enrol(cls, base_url: str, *, timeout_s: float = TIMEOUT_S) -> "Phone":
        """Open a wallet and enrol this phone as its first device (`POST /v1/members`)."""
        base = base_url.rstrip("/")
        doc = await _call("POST", base + "/v1/members", None, b"{}", timeout_s, expected=201)
        try:
            device = doc["device"]
            return cls(
                base_url=base, member_id=str(doc["member_id"]), token=str(doc["token"]),
                token_expires_at=str(doc["token_expires_at"]), slot=int(device["slot"]),
                secret=_secret_from_b32(str(device["secret_b32"])), issuer_prefix=str(device["issuer_prefix"]),
                code_step_s=int(device["code_step_s"]), timeout_s=timeout_s,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ApiError("bad_answer", f"the enrolment answer is not the member API contract ({e})",
                           status=201, fault="gateway") from e

    # -- offline codes --------------------------------------------------------

    def code_at(self, step: int, seq: int) -> str:
        """The code this device shows as `seq` of `step` (no state changes)."""
        return offline_code(self.issuer_prefix, self.slot, step, seq, self.secret)

    def next_code(self, now_s: float) -> str:
        """The next code to show at unix time `now_s`; each call shows a fresh one."""
        position = next_position(self.last_shown, step_of(now_s, self.code_step_s))
        self.last_shown = position
        return self.code_at(*position)

    @staticmethod
    def render_png(code: str, kind: RenderKind = "code128") -> bytes:
        """The code as the phone's screen shows it: a Code 128 or a QR PNG."""
        if not _is_code(code):
            raise ValueError("a payment code is exactly 24 ASCII digits")
        if kind == "code128":
            return render.code128_png(code)
        if kind == "qr":
            return render.qr_png(code)
        raise ValueError(f"kind must be 'code128' or 'qr', not {kind!r}")

    # -- member API -----------------------------------------------------------

    async def online_codes(self, count: int = 1) -> list[OnlineCode]:
        """Codes issued by the gateway for this device (`GET .../devices/{slot}/codes`)."""
        if not (isinstance(count, int) and 1 <= count <= ONLINE_CODES_MAX):
            raise ValueError(f"count must be 1-{ONLINE_CODES_MAX}, not {count!r}")
        path = f"/v1/members/{quote(self.member_id, safe='')}/devices/{self.slot}/codes?count={count}"
        doc = await self._get(path)
        try:
            issued = [OnlineCode(str(c["code"]), int(c["step"]), int(c["seq"]), str(c["refresh_at"]), str(c["expires_at"]))
                      for c in doc["codes"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ApiError("bad_answer", f"the codes answer is not the member API contract ({e})", fault="gateway") from e
        if not (1 <= len(issued) <= count and all(_is_code(c.code) for c in issued)):
            raise ApiError("bad_answer", "the gateway returned codes that are not 1-count 24-digit codes", fault="gateway")
        return issued

    async def balance(self) -> Balance:
        """The member's points (`GET /v1/members/{member_id}`)."""
        doc = await self._get(f"/v1/members/{quote(self.member_id, safe='')}")
        try:
            return Balance(str(doc["member_id"]), str(doc["unit"]), int(doc["available"]), int(doc["held"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ApiError("bad_answer", f"the member answer is not the member API contract ({e})", fault="gateway") from e

    # -- the rest of the app: coupons, history, cash-out ------------------------

    async def claim_coupon(self, campaign_id: str, idempotency_key: str) -> Mapping[str, Any]:
        """Claim a coupon of a claimable campaign (`POST .../coupons`); the coupon, code included."""
        return await self._post("/coupons", {"campaign_id": campaign_id}, idempotency_key, expected=(201,))

    async def coupons(self) -> list[Mapping[str, Any]]:
        """The member's coupons, newest first."""
        return list((await self._get(f"/v1/members/{quote(self.member_id, safe='')}/coupons"))["coupons"])

    async def history(self, limit: int = 20) -> list[Mapping[str, Any]]:
        """The wallet's movements, newest first (`GET .../history`)."""
        return list((await self._get(f"/v1/members/{quote(self.member_id, safe='')}/history?limit={limit}"))["items"])

    async def link_bank_account(self, bank_code: str, account_number: str, holder_name: str) -> Mapping[str, Any]:
        """Link an account for cash-outs; the gateway keeps the number encrypted and shows it masked."""
        return await self._post("/bank-accounts", {"bank_code": bank_code, "account_number": account_number,
                                                   "holder_name": holder_name}, None, expected=(200, 201))

    async def cash_out(self, points: int, bank_account_id: str, idempotency_key: str) -> Mapping[str, Any]:
        """Cash points out to a linked account: the cash-out, paid or failed (201) or pending (202)."""
        return await self._post("/cashouts", {"points": points, "bank_account_id": bank_account_id}, idempotency_key,
                                expected=(201, 202))

    async def cashout(self, cashout_id: str) -> Mapping[str, Any]:
        return await self._get(f"/v1/members/{quote(self.member_id, safe='')}/cashouts/{quote(cashout_id, safe='')}")

    async def _get(self, path: str) -> Mapping[str, Any]:
        return await _call("GET", self.base_url + path, self.token, b"", self.timeout_s, expected=200)

    async def _post(self, under_member: str, document: Mapping[str, Any], idempotency_key: str | None, *,
                    expected: tuple[int, ...]) -> Mapping[str, Any]:
        path = f"/v1/members/{quote(self.member_id, safe='')}{under_member}"
        return await _call("POST", self.base_url + path, self.token, json.dumps(document).encode(), self.timeout_s,
                           expected=expected, idempotency_key=idempotency_key)

    # -- keychain -------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the phone to a JSON file readable only by its owner (0600), atomically."""
        target = Path(path)
        document = {
            "format": KEYCHAIN_FORMAT, "base_url": self.base_url, "member_id": self.member_id,
            "token": self.token, "token_expires_at": self.token_expires_at, "slot": self.slot,
            "secret_b32": _secret_to_b32(self.secret), "issuer_prefix": self.issuer_prefix,
            "code_step_s": self.code_step_s, "last_shown": list(self.last_shown) if self.last_shown else None,
        }
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        # The file is created 0600 so the secret is never readable by others, not even
        # for the moment between writing and a chmod; fchmod then undoes any umask.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _KEYCHAIN_MODE)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                os.fchmod(file.fileno(), _KEYCHAIN_MODE)
                json.dump(document, file, indent=2)
                file.write("\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Phone":
        """Read a phone written by `save`; refuses a file others can read, as ssh does with keys."""
        source = Path(path)
        try:
            mode = source.stat().st_mode
            if stat.S_IMODE(mode) & 0o077:
                raise KeychainError("keychain_too_open",
                                    f"{source} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it")
            with source.open("rb") as file:
                raw = file.read(KEYCHAIN_BYTES_MAX + 1)
        except OSError as e:
            raise KeychainError("keychain_unreadable", f"cannot read {source}: {e.strerror}") from e
        if len(raw) > KEYCHAIN_BYTES_MAX:
            raise KeychainError("keychain_too_large", f"{source} is over {KEYCHAIN_BYTES_MAX} bytes")
        try:
            doc = json.loads(raw)
            if doc.get("format") != KEYCHAIN_FORMAT:
                raise ValueError(f"format {doc.get('format')!r} is not {KEYCHAIN_FORMAT}")
            last = doc.get("last_shown")
            return cls(
                base_url=str(doc["base_url"]), member_id=str(doc["member_id"]), token=str(doc["token"]),
                token_expires_at=str(doc["token_expires_at"]), slot=int(doc["slot"]),
                secret=_secret_from_b32(str(doc["secret_b32"])), issuer_prefix=str(doc["issuer_prefix"]),
                code_step_s=int(doc["code_step_s"]),
                last_shown=(int(last[0]), int(last[1])) if last is not None else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise KeychainError("keychain_invalid", f"{source} is not a saved phone ({e})") from e


# -- HTTP ---------------------------------------------------------------------------


async def _call(method: str, url: str, token: str | None, body: bytes, timeout_s: float, *,
                expected: int | tuple[int, ...], idempotency_key: str | None = None) -> Mapping[str, Any]:
    """One member API call; returns the JSON object of an expected status or raises."""
    expected = (expected,) if isinstance(expected, int) else expected
    headers = {"Accept": "application/json"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    if body:
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(CONNECT_TIMEOUT_S, timeout_s))
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.request(method, url, data=body or None, headers=headers) as response:
                raw = await response.content.read(ANSWER_BYTES_MAX + 1)
                status, request_id = response.status, response.headers.get("X-Request-Id")
    except (aiohttp.ClientError, TimeoutError) as e:
        raise UnreachableError("gateway_unreachable", f"no answer from {url} ({type(e).__name__})",
                               fault="gateway") from e
    if len(raw) > ANSWER_BYTES_MAX:
        raise ApiError("bad_answer", f"the answer is over {ANSWER_BYTES_MAX} bytes", status=status,
                       request_id=request_id, fault="gateway")
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        doc = None
    if status not in expected:
        if isinstance(doc, dict) and "code" in doc:
            raise ApiError(str(doc["code"]), str(doc.get("detail") or doc.get("title") or doc["code"]), status=status,
                           request_id=str(doc.get("request_id") or request_id or "") or None,
                           fault=str(doc.get("fault") or ("gateway" if status >= 500 else "caller")))
        raise ApiError("bad_answer", f"HTTP {status} without a problem body", status=status, request_id=request_id,
                       fault="gateway")
    if not isinstance(doc, dict):
        raise ApiError("bad_answer", f"HTTP {status} without a JSON object", status=status, request_id=request_id,
                       fault="gateway")
    return doc
