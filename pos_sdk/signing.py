"""PG1-HMAC-SHA256 request signing, as published in the gateway's docs/signing.md.

The SDK carries its own implementation (it depends on nothing in the
gateway); its tests reproduce the published worked example byte for byte.
"""

from __future__ import annotations

import hashlib
import hmac

SCHEME = "PG1-HMAC-SHA256"


def canonical_request(method: str, raw_path: str, timestamp: int, nonce: str, merchant_id: str, key_id: str, body: bytes) -> str:
    lines = [SCHEME, str(timestamp), nonce, method.upper(), raw_path, merchant_id, key_id, hashlib.sha256(body).hexdigest()]
    if any("\n" in line or "\r" in line for line in lines) or not raw_path.isascii():
        raise ValueError("signed fields must be single-line ASCII (percent-encode the path)")
    return "\n".join(lines)


def signature_headers(secret: str, method: str, raw_path: str, body: bytes, merchant_id: str, key_id: str,
                      timestamp: int, nonce: str) -> dict[str, str]:
    message = canonical_request(method, raw_path, timestamp, nonce, merchant_id, key_id, body)
    return {
        "X-PG-Merchant": merchant_id,
        "X-PG-Key-Id": key_id,
        "X-PG-Timestamp": str(timestamp),
        "X-PG-Nonce": nonce,
        "X-PG-Signature": hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest(),
    }
