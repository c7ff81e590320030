"""The console feed: every process's sale outcomes, and its windows, for the operator console.

A sale costs one Redis round trip and nothing here adds one. After the sale's
answer is computed the handler calls `ConsoleFeed.record`, which appends a
tuple to an in-process list and counts the outcome in a rolling window (no
I/O, microseconds). Every PUBLISH_INTERVAL_S a background task turns what was
recorded into console items and publishes one message on the Redis pub/sub
channel `keyspace.CONSOLE_CHANNEL`:

    {"worker": ..., "at_ms": ..., "items": [new sale outcomes],
     "recent": [the last RECENT_MAX], "sales": window, "partners": {id: health}}

Pub/sub stores nothing (it never reaches the AOF) and costs nothing when no
console listens, which is right for telemetry: losing a message loses a line
on a screen, never a payment. A message goes out at least every
HEARTBEAT_S even when nothing happened, so a console knows which processes
are alive. `ConsoleView` is the other end, one per open console: it merges the
messages of every process into one picture (`gateway.telemetry`).
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import msgspec

from gateway import keyspace, telemetry

PUBLISH_INTERVAL_S = 0.25
"""How often a process publishes what it recorded: the console shows a sale within a second."""
HEARTBEAT_S = 1.0
"""A process publishes its windows at least this often, sales or not."""
WORKER_STALE_S = 5.0
"""A process not heard from for this long is dropped from the console's picture (it stopped)."""
PENDING_MAX = 10_000
"""Sales recorded between two publishes; at 500 sales/s a publish round sees about 125, so only
a stuck publisher reaches this, and then the oldest are dropped (and counted), never memory."""
RECENT_MAX = 30
"""The last sales each process repeats in every message, so a console that just opened has a list."""
CONSOLE_RECENT_MAX = 100
"""Sales one console keeps (and the page shows) across every process."""


@dataclass
class ConsoleFeed:
    """This process's side: record sales (in memory), publish them (background)."""

    names: Mapping[str, str] = field(default_factory=dict)
    """merchant id -> name, and "merchant/store" -> store name, for the console's lines."""
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}")
    now_s: Callable[[], float] = time.time
    sales: telemetry.RollingWindow = field(default_factory=telemetry.RollingWindow)
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_MAX))
    dropped: int = 0
    _pending: deque[tuple[Any, ...]] = field(default_factory=lambda: deque(maxlen=PENDING_MAX))
    _sequence: int = 0
    _last_published_s: float = 0.0

    def record(self, merchant_id: str, store_id: str, terminal_id: str, amount: int, currency: str, outcome: str,
               latency_s: float, answer_body: bytes) -> None:
        """One sale's outcome (approved or the decline code); the answer is parsed later, off the request."""
        now_s = self.now_s()
        latency_ms = latency_s * 1000
        self.sales.add(now_s, outcome, latency_ms)
        if len(self._pending) == PENDING_MAX:
            self.dropped += 1  # the append below pushes out the oldest (a list's pop(0) moved them all)
        self._pending.append((now_s, merchant_id, store_id, terminal_id, amount, currency, outcome, latency_ms,
                              answer_body))

    def take(self) -> list[dict[str, Any]]:
        """The console items of what was recorded since the last take."""
        pending, self._pending = self._pending, deque(maxlen=PENDING_MAX)
        items = [self._item(*entry) for entry in pending]
        self.recent.extend(items)
        return items

    def _item(self, at_s: float, merchant_id: str, store_id: str, terminal_id: str, amount: int, currency: str,
              outcome: str, latency_ms: float, answer_body: bytes) -> dict[str, Any]:
        self._sequence += 1
        try:
            answer = msgspec.json.decode(answer_body)
        except msgspec.DecodeError:
            answer = {}
        # Only what an operator needs to see a sale go by: never the code, the member or the balance.
        return {
            "id": f"{self.worker}:{self._sequence}", "at_ms": int(at_s * 1000), "merchant_id": merchant_id,
            "merchant_name": self.names.get(merchant_id, merchant_id), "store_id": store_id,
            "store_name": self.names.get(f"{merchant_id}/{store_id}", store_id), "terminal_id": terminal_id,
            "amount": amount, "currency": currency, "outcome": outcome, "latency_ms": round(latency_ms, 2),
            "payment_id": answer.get("payment_id"), "status": answer.get("status"), "points": answer.get("points"),
        }

    def message(self, partners: Mapping[str, Mapping[str, Any]], force: bool = False) -> dict[str, Any] | None:
        """The next message to publish, or None when there is nothing new and no heartbeat is due."""
        now_s = self.now_s()
        items = self.take()
        if not items and not force and now_s - self._last_published_s < HEARTBEAT_S:
            return None
        self._last_published_s = now_s
        return {"worker": self.worker, "at_ms": int(now_s * 1000), "items": items, "recent": list(self.recent),
                "sales": self.sales.snapshot(now_s), "partners": dict(partners), "dropped": self.dropped}

    async def publish(self, redis: Any, partners: Mapping[str, Mapping[str, Any]]) -> None:
        message = self.message(partners)
        if message is not None:
            await redis.publish(keyspace.CONSOLE_CHANNEL, msgspec.json.encode(message))


def partner_health(clients: Mapping[str, Any], configured: Iterable[str]) -> dict[str, dict[str, Any]]:
    """This process's view of each configured partner: its call window and circuit breaker."""
    found: dict[str, dict[str, Any]] = {}
    for partner_id in configured:
        client = clients.get(partner_id)
        if client is None:
            found[partner_id] = {"connected": False}
            continue
        found[partner_id] = {"connected": True, "window": client.health.snapshot(client.now()),
                             "circuit": client.breaker.state, "failures_in_a_row": client.breaker.failures}
    return found


class ConsoleView:
    """One console's picture of the whole gateway, merged from every process's messages."""

    def __init__(self, now_s: Callable[[], float] = time.time) -> None:
        self.now_s = now_s
        self.workers: dict[str, dict[str, Any]] = {}
        self.recent: list[dict[str, Any]] = []
        self._seen: set[str] = set()

    def take_message(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Merge one process's message; returns the sales the console had not seen, oldest first."""
        worker = str(message["worker"])
        self.workers[worker] = {"at_s": self.now_s(), "sales": message.get("sales", {}),
                                "partners": message.get("partners", {}), "dropped": message.get("dropped", 0)}
        fresh = []
        for item in [*message.get("recent", ()), *message.get("items", ())]:
            if item["id"] not in self._seen:
                self._seen.add(item["id"])
                fresh.append(item)
        fresh.sort(key=lambda i: i["at_ms"])
        self.recent = sorted(self.recent + fresh, key=lambda i: i["at_ms"])[-CONSOLE_RECENT_MAX:]
        if len(self._seen) > 20 * CONSOLE_RECENT_MAX:
            self._seen = {i["id"] for i in self.recent} | {i["id"] for i in fresh}
        return fresh

    def live_workers(self) -> dict[str, dict[str, Any]]:
        now_s = self.now_s()
        self.workers = {w: s for w, s in self.workers.items() if now_s - s["at_s"] <= WORKER_STALE_S}
        return self.workers

    def summary(self) -> dict[str, Any]:
        """Sales by outcome and latency percentiles, and each partner's health, over every live process."""
        workers = self.live_workers()
        sales = telemetry.summary(telemetry.merge_windows(w["sales"] for w in workers.values()))
        partner_ids = sorted({p for w in workers.values() for p in w["partners"]})
        partners = []
        for partner_id in partner_ids:
            views = [w["partners"][partner_id] for w in workers.values() if partner_id in w["partners"]]
            connected = [v for v in views if v.get("connected")]
            window = telemetry.summary(telemetry.merge_windows(v["window"] for v in connected),
                                       ok_outcomes=frozenset({"ok"}))
            open_count = sum(1 for v in connected if v.get("circuit") == "open")
            partners.append({
                "partner": partner_id, "connected": bool(connected), "calls": window["total"],
                "errors": window["failed"], "latency_ms": window["latency_ms"],
                "circuit": "open" if open_count else ("closed" if connected else "no_key"),
                "circuit_open_workers": open_count, "workers": len(connected),
            })
        return {"workers": len(workers), "sales": sales, "partners": partners,
                "dropped": sum(int(w.get("dropped", 0)) for w in workers.values())}
