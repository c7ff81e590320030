"""The SDK's configuration: everything explicit, every default visible."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class PosConfig:
    base_url: str
    """The gateway, e.g. `https://pay.example.com` (no trailing path)."""
    merchant_id: str
    store_id: str
    terminal_id: str
    key_id: str
    secret: str = field(repr=False)
    """The merchant signing secret (`pgsk_...`), exactly as issued. Never logged."""
    currency: str = "KRW"
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    """Per attempt. An authorisation takes milliseconds; 10 s covers a slow network."""
    retry_count_max: int = 3
    """Retries of one request after the first attempt, where a retry is safe."""
    retry_delay_s_base: float = 0.2
    retry_delay_s_max: float = 2.0
    unknown_outcome_deadline_s: float = 30.0
    """How long a sale with no definite answer is re-asked before it is reversed.
    The cashier has an answer within this plus one reversal round."""
    journal_path: str = "pointgate-pos.sqlite3"
    """The terminal's local journal (idempotency keys, outbox). Keep it on persistent storage."""
    forward_refunds: bool = False
    """Also store-and-forward refunds that cannot reach the gateway (reversals always are)."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"base_url must be http(s)://host[:port], got {self.base_url!r}")
        for name in ("merchant_id", "store_id", "terminal_id", "key_id"):
            if not _ID_RE.match(getattr(self, name)):
                raise ValueError(f"{name} must be 1-64 of A-Z a-z 0-9 _ . -, got {getattr(self, name)!r}")
        if not self.secret.startswith("pgsk_"):
            raise ValueError("secret must be the pgsk_... string issued by the gateway")
        for name in ("connect_timeout_s", "read_timeout_s", "unknown_outcome_deadline_s", "retry_delay_s_base", "retry_delay_s_max"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if not 0 <= self.retry_count_max <= 10:
            raise ValueError("retry_count_max must be 0-10")

    @property
    def base(self) -> str:
        return self.base_url.rstrip("/")
