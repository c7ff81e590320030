"""The terminal's local journal (SQLite): idempotency keys, the outbox and the batch's movements.

An operation's idempotency key is written here before its request is sent,
so a terminal that crashes and restarts resumes with the same key and the
gateway applies the operation at most once. The outbox holds requests that
must reach the gateway eventually (reversals, and refunds if the vendor
allows): they are sent in order, with backoff, across restarts.

Each finished operation writes the batch movements it made (pos_sdk/batch.py)
in the same transaction as its result, so a crash cannot keep one and lose the
other. A batch close takes every movement still open into its own request
body when it is recorded, before it is sent: a close resumed after a crash
sends the same movements, and movements made meanwhile wait for the next close.

The file's schema has a version (`PRAGMA user_version`); opening an older file
migrates it in place, one step per version, each in one transaction.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pos_sdk import batch
from pos_sdk.batch import Movement

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
"""Version 0, the tables every journal file has had."""

_MOVEMENTS = ("""
CREATE TABLE movements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,           -- the idempotency key of the operation (or outbox entry) that made it
    payment_id TEXT NOT NULL,
    kind TEXT NOT NULL,             -- sale, void, refund
    amount INTEGER NOT NULL,
    created_s REAL NOT NULL,
    batch_key TEXT,                 -- the batch close that reported it; NULL while its batch is open
    UNIQUE (source, kind)           -- an operation makes at most one movement of each kind
)""", "CREATE INDEX movements_batch ON movements (batch_key)",
              "CREATE INDEX movements_payment ON movements (payment_id, kind)")
"""Version 1: statements, not a script (executescript would commit the migration's transaction)."""


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


def _add_movements(db: sqlite3.Connection) -> None:
    """Version 1: the batch's movements. The movements of the batch still open are rebuilt from
    what the operations finished since the last close recorded, so the first close after the
    upgrade still reconciles in full. (A sale that ended reversed by the unknown-outcome procedure
    is the exception: older files did not keep its payment.)"""
    for statement in _MOVEMENTS:
        db.execute(statement)
    last_close = db.execute("SELECT MAX(updated_s) FROM operations WHERE kind = 'batch' AND state = 'done'").fetchone()[0]
    since_s = last_close if last_close is not None else float("-inf")
    finished: list[tuple[float, str, str, dict[str, Any], Any]] = []
    for key, kind, document, result, updated_s in db.execute(
            "SELECT idempotency_key, kind, document, result, updated_s FROM operations"
            " WHERE state = 'done' AND kind != 'batch' AND updated_s > ?", (since_s,)):
        finished.append((updated_s, key, kind, json.loads(document), json.loads(result or "null")))
    for key, kind, result, created_s in db.execute(
            "SELECT idempotency_key, kind, result, created_s FROM outbox WHERE state = 'sent' AND created_s > ?", (since_s,)):
        finished.append((created_s, key, kind, {}, json.loads(result or "null")))
    sales: set[str] = set()
    for at_s, key, kind, document, result in sorted(finished, key=lambda f: f[0]):
        try:
            if kind == "pay":
                made = [Movement(result["payment_id"], "sale", int(document["amount"]))] if result.get("outcome") == "approved" else []
            else:
                made = batch.operation_movements(kind, result)[1]
        except (AttributeError, KeyError, TypeError, ValueError):
            continue  # not a gateway's answer (a queued refund's marker, say): no movement to report
        for m in made:
            if m.kind == "sale":
                if m.payment_id in sales:
                    continue
                sales.add(m.payment_id)
            db.execute("INSERT OR IGNORE INTO movements (source, payment_id, kind, amount, created_s) VALUES (?, ?, ?, ?, ?)",
                       (key, m.payment_id, m.kind, m.amount, at_s))


_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_add_movements,)
"""_MIGRATIONS[n - 1] brings a file from version n - 1 to version n."""
SCHEMA_VERSION = len(_MIGRATIONS)


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
        self._migrate()

    def _migrate(self) -> None:
        with self._transaction():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ValueError(f"{self.path} is a version {version} journal, newer than this SDK's {SCHEMA_VERSION}; "
                                 "upgrade the SDK rather than lose what the newer one recorded")
            for step in range(version, SCHEMA_VERSION):
                _MIGRATIONS[step](self._db)
            if version != SCHEMA_VERSION:
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One SQLite transaction under the client's lock: all of it is on disk, or none of it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

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

    def finish(self, idempotency_key: str, state: str, result: Any, now_s: float, movements: Iterable[Movement] = ()) -> None:
        """Record an operation's end and, in the same transaction, the batch movements it made."""
        with self._transaction():
            self._db.execute("UPDATE operations SET state = ?, result = ?, updated_s = ? WHERE idempotency_key = ?",
                             (state, json.dumps(result), now_s, idempotency_key))
            self._add_movements(idempotency_key, movements, now_s)

    # -- the batch's movements -------------------------------------------------

    def _add_movements(self, source: str, movements: Iterable[Movement], now_s: float) -> None:
        """Inside a transaction. The same operation finishing twice (a caller's key used again,
        the gateway replaying) adds its movements once."""
        for m in movements:
            self._db.execute(
                "INSERT OR IGNORE INTO movements (source, payment_id, kind, amount, created_s) VALUES (?, ?, ?, ?, ?)",
                (source, m.payment_id, m.kind, m.amount, now_s))

    def add_movements(self, source: str, movements: Iterable[Movement], now_s: float) -> None:
        """Record movements made outside the SDK's own operations, under `source` (one of each kind)."""
        with self._transaction():
            self._add_movements(source, movements, now_s)

    def open_movements(self) -> list[Movement]:
        """The movements of the open batch, oldest first: what the next close reports."""
        with self._lock:
            rows = self._db.execute("SELECT payment_id, kind, amount FROM movements WHERE batch_key IS NULL ORDER BY id").fetchall()
        return [Movement(*row) for row in rows]

    def has_sale(self, payment_id: str) -> bool:
        """Whether a sale movement of the payment is recorded, in the open batch or a closed one."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM movements WHERE payment_id = ? AND kind = 'sale'",
                                    (payment_id,)).fetchone() is not None

    def started_sale(self, order_ref: str) -> bool:
        """Whether this terminal started a sale with this order reference."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM operations WHERE kind = 'pay' AND ref = ?", (order_ref,)).fetchone() is not None

    def begin_batch(self, ref: str, document_for: Callable[[list[Movement]], dict[str, Any]], new_key: str, now_s: float,
                    idempotency_key: str | None = None) -> JournalEntry:
        """Record a batch close before it is sent, taking every open movement into it (the body
        `document_for` makes of them); or find the close to send again: the one with the caller's
        key, else one still pending (a close whose answer never came is finished before another
        starts, or its movements would be reported nowhere)."""
        with self._transaction():
            if idempotency_key is not None:
                row = self._db.execute("SELECT * FROM operations WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
            else:
                row = self._db.execute("SELECT * FROM operations WHERE kind = 'batch' AND ref = ? AND state = 'pending'"
                                       " ORDER BY created_s LIMIT 1", (ref,)).fetchone()
            if row is not None:
                return _entry(row, resumed=True)
            rows = self._db.execute("SELECT id, payment_id, kind, amount FROM movements WHERE batch_key IS NULL ORDER BY id").fetchall()
            document = document_for([Movement(*row[1:]) for row in rows])
            key = idempotency_key or new_key
            self._db.execute("INSERT INTO operations VALUES (?, 'batch', ?, ?, '', 'pending', NULL, ?, ?)",
                             (key, ref, json.dumps(document), now_s, now_s))
            if rows:
                self._db.execute("UPDATE movements SET batch_key = ? WHERE batch_key IS NULL AND id <= ?", (key, rows[-1][0]))
            return JournalEntry(key, "batch", ref, document, "", "pending")

    def fail_batch(self, idempotency_key: str, result: Any, now_s: float) -> None:
        """The gateway refused the close for good, so it closed nothing: its movements are open again."""
        with self._transaction():
            self._db.execute("UPDATE operations SET state = 'failed', result = ?, updated_s = ? WHERE idempotency_key = ?",
                             (json.dumps(result), now_s, idempotency_key))
            self._db.execute("UPDATE movements SET batch_key = NULL WHERE batch_key = ?", (idempotency_key,))

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

    def outbox_sent(self, entry_id: int, result: Any, movements: Iterable[Movement] = (), now_s: float = 0.0) -> None:
        """The entry got through; the batch movements its answer shows are recorded with it."""
        with self._transaction():
            self._db.execute("UPDATE outbox SET state = 'sent', result = ?, attempts = attempts + 1 WHERE id = ?",
                             (json.dumps(result), entry_id))
            [source] = self._db.execute("SELECT idempotency_key FROM outbox WHERE id = ?", (entry_id,)).fetchone()
            self._add_movements(source, movements, now_s)

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
