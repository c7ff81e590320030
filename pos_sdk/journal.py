"""The terminal's local journal (SQLite): idempotency keys and the outbox.

An operation's idempotency key is written here before its request is sent,
so a terminal that crashes and restarts resumes with the same key and the
gateway applies the operation at most once. The outbox holds requests that
must reach the gateway eventually (reversals, and refunds if the vendor
allows): they are sent in order, with backoff, across restarts.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTBOX_ATTEMPTS_MAX = 1000  # at the backoff ceiling this is days of retrying; then the entry needs a person

_SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    idempotency_key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    document TEXT NOT NULL,
    reversal_key TEXT NOT NULL,
    state TEXT NOT NULL,            -- pending, done, failed
    result TEXT,
    created_s REAL NOT NULL,
    updated_s REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS operations_open ON operations (kind, ref, state);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    document TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,            -- queued, sent, dead
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_s REAL NOT NULL,
    last_error TEXT,
    result TEXT,
    created_s REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    idempotency_key: str
    kind: str
    ref: str
    document: dict[str, Any]
    reversal_key: str
    state: str
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: int
    kind: str
    method: str
    path: str
    document: dict[str, Any]
    idempotency_key: str
    state: str
    attempts: int
    next_attempt_s: float
    last_error: str | None


class Journal:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # One connection, used by one client; the lock makes the sync client safe from threads.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an entry is on disk before its request leaves
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    # -- operations ------------------------------------------------------------

    def begin(self, kind: str, ref: str, document: dict[str, Any], new_key: str, new_reversal_key: str,
              now_s: float, idempotency_key: str | None = None) -> JournalEntry:
        """Record an operation before it is sent, or find the unfinished one to resume.

        A sale is resumed by its order reference with the same document; any
        other operation by the caller's idempotency key.
        """
        # Key order is kept: a resumed request must send the very same body bytes,
        # or the gateway would see another request under the same key.
        text = json.dumps(document)
        with self._lock:
            if idempotency_key is not None:
                row = self._db.execute("SELECT * FROM operations WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
            else:
                row = self._db.execute(
                    "SELECT * FROM operations WHERE kind = ? AND ref = ? AND state = 'pending' AND document = ?",
                    (kind, ref, text)).fetchone() if kind == "pay" else None
            if row is not None:
                return _entry(row, resumed=True)
            key = idempotency_key or new_key
            self._db.execute(
                "INSERT INTO operations VALUES (?, ?, ?, ?, ?, 'pending', NULL, ?, ?)",
                (key, kind, ref, text, new_reversal_key, now_s, now_s))
            return JournalEntry(key, kind, ref, document, new_reversal_key, "pending")

    def finish(self, idempotency_key: str, state: str, result: Any, now_s: float) -> None:
        with self._lock:
            self._db.execute("UPDATE operations SET state = ?, result = ?, updated_s = ? WHERE idempotency_key = ?",
                             (state, json.dumps(result), now_s, idempotency_key))

    def unfinished(self) -> list[JournalEntry]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM operations WHERE state = 'pending' ORDER BY created_s").fetchall()
        return [_entry(row, resumed=True) for row in rows]

    # -- outbox ----------------------------------------------------------------

    def enqueue(self, kind: str, method: str, path: str, document: dict[str, Any], idempotency_key: str, now_s: float) -> int:
        """Queue a request for forwarding; queuing the same idempotency key twice keeps one entry."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO outbox (kind, method, path, document, idempotency_key, state, next_attempt_s, created_s)"
                " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
                (kind, method, path, json.dumps(document), idempotency_key, now_s, now_s))
            return self._db.execute("SELECT id FROM outbox WHERE idempotency_key = ?", (idempotency_key,)).fetchone()[0]

    def outbox(self, states: tuple[str, ...] = ("queued",)) -> list[OutboxEntry]:
        """Entries in the order they were queued."""
        marks = ",".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, kind, method, path, document, idempotency_key, state, attempts, next_attempt_s, last_error"
                f" FROM outbox WHERE state IN ({marks}) ORDER BY id", states).fetchall()
        return [OutboxEntry(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8], r[9]) for r in rows]

    def outbox_sent(self, entry_id: int, result: Any) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET state = 'sent', result = ?, attempts = attempts + 1 WHERE id = ?",
                             (json.dumps(result), entry_id))

    def outbox_retry(self, entry_id: int, error: str, next_attempt_s: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_s = ?,"
                " state = CASE WHEN attempts + 1 >= ? THEN 'dead' ELSE state END WHERE id = ?",
                (error, next_attempt_s, OUTBOX_ATTEMPTS_MAX, entry_id))

    def outbox_dead(self, entry_id: int, error: str) -> None:
        """The gateway refused it for good (a 4xx): keep it for a person to look at."""
        with self._lock:
            self._db.execute("UPDATE outbox SET state = 'dead', last_error = ?, attempts = attempts + 1 WHERE id = ?",
                             (error, entry_id))


def _entry(row: tuple, resumed: bool) -> JournalEntry:
    return JournalEntry(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], resumed)
