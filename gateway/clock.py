"""The wall clock, read in one place.

The pure core never reads it: time is passed in. Shells (stores, services)
take a `now_ms` callable defaulting to `wall_ms`, so tests can pass their own.
"""

from __future__ import annotations

import datetime as dt
import time


def wall_ms() -> int:
    """Unix time in whole milliseconds."""
    return time.time_ns() // 1_000_000


def iso_ms(ms: int) -> str:
    """Unix milliseconds as the APIs write times: RFC 3339 in UTC with milliseconds and a Z."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
