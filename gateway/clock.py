"""The wall clock, read in one place.

The pure core never reads it: time is passed in. Shells (stores, services)
take a `now_ms` callable defaulting to `wall_ms`, so tests can pass their own.
"""

from __future__ import annotations

import time


def wall_ms() -> int:
    """Unix time in whole milliseconds."""
    return time.time_ns() // 1_000_000
