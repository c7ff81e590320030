"""The member's own view of their wallet: one event per movement, in order.

Every script that moves a member's points appends, in the same atomic step
as the journal entry, one event to the member's stream
(`keyspace.member_events_key`): what happened (`kind`), the signed change to
available and held points, the balances after, and the details a member
recognises (store, amount, coupons, FX rate, partner, affiliate). The app
reads it three ways:

- history: newest first, a page at a time (`before` the last event seen);
- events: oldest first from an offset (`after`), for catching up;
- live: the same as server-sent events, so a debit made with a stolen code
  shows on the member's phone at once.

Event ids are the stream's ids (`<ms>-<seq>`); they only ever increase.
"""

from __future__ import annotations

import json
import re
from typing import Any, AsyncIterator, Callable

from gateway.clock import iso_ms
from gateway import keyspace
from gateway.problems import Problem
from gateway.settings import Settings
from gateway.store import Store

EVENT_ID_RE = re.compile(r"^(0|[0-9]{1,20}-[0-9]{1,20})$")
PAGE_MAX = 100
LIVE_BLOCK_MS = 2_000  # one blocking read at a time, well inside the Redis socket timeout

_INT_DETAILS = ("amount", "discount", "discount_points", "points", "fee", "received")




class MemberEvents:
    """`live` reads through its own Redis client (`live_redis`), so open feeds, each holding a
    connection while it waits, can never take the connections payments need; at most
    `live_feeds_max` are open per process, the next gets live_feeds_busy (retry later)."""

    def __init__(self, store: Store, settings: Settings, live_redis: Any = None) -> None:
        self.store = store
        self.live_redis = live_redis if live_redis is not None else store.redis
        self.live_feeds_max = settings.live_feeds_max
        self.live_feeds = 0
        self.closing = False
        """Set at shutdown: open feeds end, so a graceful stop does not wait on them."""
        self._names = {m.id: m.name for m in settings.merchants}
        self._stores = {(m.id, s.id): s.name for m in settings.merchants for s in m.stores}

    def view(self, event_id: str, fields: dict[str, str]) -> dict[str, Any]:
        """The API's event object from a stream entry."""
        details: dict[str, Any] = json.loads(fields.get("data") or "{}")
        details.pop("member_id", None)
        for name in _INT_DETAILS:
            if isinstance(details.get(name), str) and details[name].lstrip("-").isdigit():
                details[name] = int(details[name])
        for coupon in details.get("coupons") or []:
            coupon["discount"] = int(coupon["discount"])
            coupon.pop("funding", None)
            coupon.pop("discount_points", None)
        if details.get("fx_rate") == "":
            details.pop("fx_rate")
        account = details.pop("account", "")
        if account.startswith("partner:"):
            details["partner"] = account.split(":", 1)[1]
        merchant_id = details.get("merchant_id")
        if merchant_id in self._names:
            details["merchant_name"] = self._names[merchant_id]
            if (merchant_id, details.get("store_id")) in self._stores:
                details["store_name"] = self._stores[(merchant_id, details["store_id"])]
        if "expires_ms" in details:
            details["expires_at"] = iso_ms(int(details.pop("expires_ms")))
        return {
            "event_id": event_id,
            "kind": fields["kind"],
            "points": int(fields["points"]),
            "held": int(fields["held"]),
            "available_after": int(fields["available_after"]),
            "held_after": int(fields["held_after"]),
            "at": iso_ms(int(fields["ts_ms"])),
            "entry_id": fields["entry"],
            "details": details,
        }

    async def history(self, member_id: str, limit: int, before: str | None) -> dict[str, Any]:
        """Newest first; `next_before` pages on, None at the first movement."""
        _check_limit(limit)
        high = "+" if before is None else "(" + check_event_id(before)
        entries = await self.store.redis.xrevrange(keyspace.member_events_key(member_id), high, "-", count=limit + 1)
        items = [self.view(i, f) for i, f in entries[:limit]]
        return {"items": items, "next_before": items[-1]["event_id"] if len(entries) > limit else None}

    async def since(self, member_id: str, after: str, limit: int) -> dict[str, Any]:
        """Oldest first, strictly after `after` ('0' for the beginning)."""
        _check_limit(limit)
        entries = await self.store.redis.xrange(keyspace.member_events_key(member_id), "(" + check_event_id(after), "+",
                                                count=limit)
        events = [self.view(i, f) for i, f in entries]
        return {"events": events, "last_event_id": events[-1]["event_id"] if events else after}

    def open_feed(self) -> None:
        """Count a live feed in, or refuse it when the process has as many as it allows."""
        if self.live_feeds >= self.live_feeds_max:
            raise Problem("live_feeds_busy", f"this server has {self.live_feeds_max} live feeds open; reconnect shortly")
        self.live_feeds += 1

    def close_feed(self) -> None:
        self.live_feeds -= 1

    async def live(self, member_id: str, after: str, wanted: Callable[[], bool]) -> AsyncIterator[dict[str, Any]]:
        """Every event after `after`, then each new one as it happens, while `wanted()` (the client
        is connected) and the server is not closing; it notices within one LIVE_BLOCK_MS."""
        key, last = keyspace.member_events_key(member_id), check_event_id(after)
        while wanted() and not self.closing:
            reply = await self.live_redis.xread({key: last}, count=PAGE_MAX, block=LIVE_BLOCK_MS)
            for _stream, entries in reply or []:
                for event_id, fields in entries:
                    last = event_id
                    yield self.view(event_id, fields)


STREAM_ID_PART_MAX = 2**64 - 1
"""Redis stream ids are two unsigned 64-bit numbers; Redis refuses a bigger one with an error."""


def check_event_id(text: str) -> str:
    """`text` if it is an event id this API can page from, else Problem invalid_request.

    Twenty digits can exceed what Redis takes, and a page strictly after the very last possible
    id has no start, so both are refused here rather than by Redis (which would be a 500).
    """
    if not EVENT_ID_RE.match(text):
        raise Problem("invalid_request", "an event id looks like 1764558855123-0 (or 0 for the beginning)")
    ms, _, seq = text.partition("-")
    if int(ms) >= STREAM_ID_PART_MAX or int(seq or 0) > STREAM_ID_PART_MAX:
        raise Problem("invalid_request", "no event has an id that large")
    return text


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= PAGE_MAX:
        raise Problem("invalid_request", f"limit must be 1 to {PAGE_MAX}")
