"""Request signatures of merchant terminals: PG1-HMAC-SHA256.

This module is pure: no I/O and no clock reads. The server's time comes in as
`now_s` (unix seconds) and the nonce as an argument, so every function here is
a value-in, value-out computation. `docs/signing.md` is the published form of
the scheme, with a worked example the unit tests reproduce from the document.

Every merchant API request carries five headers::

    X-PG-Merchant    merchant id (`gs25`)
    X-PG-Key-Id      signing key id (`gs25-k1`)
    X-PG-Timestamp   unix seconds, decimal integer
    X-PG-Nonce       16-64 characters of A-Z a-z 0-9 _ -, unique per request
    X-PG-Signature   lowercase hex HMAC-SHA256(secret, canonical request)

The canonical request is these eight lines joined by "\\n", with no trailing
newline::

    PG1-HMAC-SHA256
    <timestamp>
    <nonce>
    <METHOD>
    <path and query exactly as on the request line, not re-encoded>
    <merchant id>
    <key id>
    <lowercase hex SHA-256 of the raw body bytes>

The HMAC key is the UTF-8 bytes of the secret string as issued
(`pgsk_` + 43 characters of base64url), not its base64 decoding.

How the server uses it, in this order:

1. `parse_signature_headers(request.headers)`: every header present once and
   well formed.
2. Look up the secret of (merchant id, key id); None if unknown or revoked.
3. `check_signature(parsed, method, raw_path, body, secret, now_s)`.
4. Only then record the nonce (`SET <nonce key> 1 NX EX NONCE_TTL_S`) and,
   if it was already there, refuse the request with
   `SignatureError(NONCE_REPLAYED, ...)`. Recording it after the check means
   an unsigned request can never burn a genuine terminal's nonce.

Exceptions::

    Exception
     └── SignatureError   the request is not signed acceptably; `.code` says why:
                          signature_missing, timestamp_out_of_window,
                          unknown_key, bad_signature, and nonce_replayed
                          (raised by the caller); HTTP 401, the caller's fault
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

SCHEME: Final = "PG1-HMAC-SHA256"
"""First line of every canonical request; a new scheme gets a new name."""

HEADER_MERCHANT: Final = "X-PG-Merchant"
HEADER_KEY_ID: Final = "X-PG-Key-Id"
HEADER_TIMESTAMP: Final = "X-PG-Timestamp"
HEADER_NONCE: Final = "X-PG-Nonce"
HEADER_SIGNATURE: Final = "X-PG-Signature"
SIGNATURE_HEADERS: Final = (HEADER_MERCHANT, HEADER_KEY_ID, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)

TIMESTAMP_WINDOW_S: Final = 300
"""A request is accepted while |server time - timestamp| <= 300 s: terminals
keep time by NTP, and five minutes absorbs a drifting till clock and a slow
store uplink without leaving a captured request usable for long."""

# A request with timestamp T passes the window check from T-300 to T+300, a
# span of 600 s, and it can first arrive at any point of that span. Keeping a
# nonce for 600 s after its first use therefore covers every instant at which
# a replay of the same request could still pass the window: twice the window.
NONCE_TTL_S: Final = 2 * TIMESTAMP_WINDOW_S
NONCE_REPLAYED: Final = "nonce_replayed"
"""The code the caller raises when its Redis check finds the nonce already used
(docs/signing.md publishes it with the codes raised here)."""

SECRET_PREFIX: Final = "pgsk_"
SECRET_BYTES: Final = 32
"""Secrets are `pgsk_` + base64url (no padding) of 32 random bytes: 43 characters."""

MERCHANT_ID_PATTERN: Final = r"[a-z0-9][a-z0-9-]{0,39}"
KEY_ID_PATTERN: Final = r"[a-z0-9][a-z0-9-]{0,39}-k[1-9][0-9]{0,8}"
"""Key ids are `<merchant id>-k<N>`, N counting up from 1."""

_MERCHANT_ID_RE: Final = re.compile(MERCHANT_ID_PATTERN)
_KEY_ID_RE: Final = re.compile(KEY_ID_PATTERN)
# Decimal unix seconds without sign, leading zeros or spaces, so the text a
# terminal signed and str(int(text)) are the same string. Twelve digits reach
# the year 33658; anything longer is not a clock reading.
_TIMESTAMP_RE: Final = re.compile(r"0|[1-9][0-9]{0,11}")
_NONCE_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,64}")
_SIGNATURE_RE: Final = re.compile(r"[0-9a-f]{64}")
_METHOD_RE: Final = re.compile(r"[A-Za-z]{1,16}")

_HEADER_RULES: Final = {
    HEADER_MERCHANT: (_MERCHANT_ID_RE, "a merchant id: 1-40 characters of a-z 0-9 -, starting with a letter or digit"),
    HEADER_KEY_ID: (_KEY_ID_RE, "a key id such as gs25-k1"),
    HEADER_TIMESTAMP: (_TIMESTAMP_RE, "unix seconds as a decimal integer"),
    HEADER_NONCE: (_NONCE_RE, "16-64 characters of A-Z a-z 0-9 _ -"),
    HEADER_SIGNATURE: (_SIGNATURE_RE, "64 lowercase hex digits"),
}


class SignatureError(Exception):
    """The request is not signed acceptably. Nothing about it was recorded.

    `.message` is safe to show on a cashier screen or to log: it never holds
    the secret or the signature. `.server_time_s` is set for
    `timestamp_out_of_window`, so a terminal can see how far off its clock is.
    """

    status: Final = 401
    fault: Final = "caller"

    def __init__(self, code: str, message: str, server_time_s: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.server_time_s = server_time_s

    def __repr__(self) -> str:
        return f"SignatureError({self.code!r}, {self.message!r}, server_time_s={self.server_time_s!r})"


@dataclass(frozen=True, slots=True)
class SignatureHeaders:
    """The five signature headers of one request, each checked for form only."""

    merchant_id: str
    key_id: str
    timestamp_s: int
    nonce: str
    signature: str = field(repr=False)


def body_sha256(body: bytes) -> str:
    """Lowercase hex SHA-256 of the raw body bytes (b"" when there is no body)."""
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    method: str, raw_path: str, timestamp: int, nonce: str, merchant_id: str, key_id: str, body: bytes
) -> str:
    """The eight lines a signature covers, joined by "\\n" with no trailing newline."""
    lines = [SCHEME, str(timestamp), nonce, method.upper(), raw_path, merchant_id, key_id, body_sha256(body)]
    # A line break inside a field would let two different requests share one
    # canonical string; HTTP cannot carry one in these places, so it is a bug.
    for line in lines:
        if "\n" in line or "\r" in line:
            raise ValueError("a signed field contains a line break")
    # A request target is ASCII (RFC 9112 section 3.2); anything else is
    # percent-encoded by the client before it signs and sends.
    if not raw_path.isascii():
        raise ValueError("the path and query must be ASCII, percent-encoded as sent")
    return "\n".join(lines)


def sign(
    secret: str, method: str, raw_path: str, timestamp: int, nonce: str, merchant_id: str, key_id: str, body: bytes
) -> str:
    """Lowercase hex HMAC-SHA256 of the canonical request, keyed by the secret's UTF-8 bytes."""
    message = canonical_request(method, raw_path, timestamp, nonce, merchant_id, key_id, body)
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


def signed_headers(
    secret: str, method: str, raw_path: str, body: bytes, merchant_id: str, key_id: str, now_s: float, nonce: str
) -> dict[str, str]:
    """The five headers a terminal sends with a request it makes at `now_s`."""
    for name, value in ((HEADER_MERCHANT, merchant_id), (HEADER_KEY_ID, key_id), (HEADER_NONCE, nonce)):
        pattern, expected = _HEADER_RULES[name]
        if not pattern.fullmatch(value):
            raise ValueError(f"{name} must be {expected}")
    if not _METHOD_RE.fullmatch(method):
        raise ValueError("method must be an HTTP method name such as POST")
    timestamp = math.floor(now_s)
    return {
        HEADER_MERCHANT: merchant_id,
        HEADER_KEY_ID: key_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign(secret, method, raw_path, timestamp, nonce, merchant_id, key_id, body),
    }


def parse_signature_headers(headers: Mapping[str, str]) -> SignatureHeaders:
    """Pick the five signature headers out of a request's headers, whatever their case.

    Raises SignatureError `signature_missing`, naming the header, when one is
    absent, sent more than once, or not of its form.
    """
    wanted = {name.lower(): name for name in SIGNATURE_HEADERS}
    found: dict[str, str] = {}
    # items() rather than get(): a multidict yields every copy of a repeated
    # header, and two different nonces or signatures on one request must not
    # let the server pick the one it likes.
    for raw_name, value in headers.items():
        name = wanted.get(raw_name.lower())
        if name is None:
            continue
        if name in found:
            raise SignatureError("signature_missing", f"{name} header is sent more than once")
        found[name] = value
    for name in SIGNATURE_HEADERS:
        if name not in found:
            raise SignatureError("signature_missing", f"{name} header is missing")
        pattern, expected = _HEADER_RULES[name]
        if not isinstance(found[name], str) or not pattern.fullmatch(found[name]):
            raise SignatureError("signature_missing", f"{name} header is malformed: expected {expected}")
    return SignatureHeaders(
        merchant_id=found[HEADER_MERCHANT],
        key_id=found[HEADER_KEY_ID],
        timestamp_s=int(found[HEADER_TIMESTAMP]),
        nonce=found[HEADER_NONCE],
        signature=found[HEADER_SIGNATURE],
    )


def check_signature(
    parsed: SignatureHeaders, method: str, raw_path: str, body: bytes, secret: str | None, now_s: float
) -> None:
    """Accept the request or raise SignatureError; `secret` is None for an unknown or revoked key.

    The nonce is not checked here: the caller records it after this passes.
    """
    server_time_s = math.floor(now_s)
    skew_s = parsed.timestamp_s - server_time_s
    if abs(skew_s) > TIMESTAMP_WINDOW_S:
        raise SignatureError(
            "timestamp_out_of_window",
            f"request timestamp {parsed.timestamp_s} is {abs(skew_s)} s "
            f"{'ahead of' if skew_s > 0 else 'behind'} server time {server_time_s}; "
            f"at most {TIMESTAMP_WINDOW_S} s is allowed: correct the terminal clock",
            server_time_s=server_time_s,
        )
    if secret is None:
        raise SignatureError(
            "unknown_key", f"key {parsed.key_id} is not an active signing key of merchant {parsed.merchant_id}"
        )
    try:
        expected = sign(
            secret, method, raw_path, parsed.timestamp_s, parsed.nonce, parsed.merchant_id, parsed.key_id, body
        )
    except ValueError:
        raise SignatureError("bad_signature", "the request path is not ASCII, so no signature can match it") from None
    if not hmac.compare_digest(expected, parsed.signature):
        raise SignatureError(
            "bad_signature",
            "signature does not match the request: check the secret, the key id, "
            "and that the path, query and body are signed exactly as sent",
        )
