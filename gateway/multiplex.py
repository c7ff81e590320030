"""One connection to one Redis server that every concurrent script call shares (the hot path).

Redis answers the commands of a connection in the order they were sent, so
calls in flight at once can share one connection: each call appends its
packed command to the write buffer and a future to a queue, the buffer goes
out in one write per turn of the event loop, and each reply read completes
the oldest waiting future. Under load that is one write and one read for
many sales instead of a pool checkout, a write, a read and a check-in each.
hiredis packs the commands and parses the replies (as it does under
redis-py); what is written here is only the sharing, which redis-py's
asyncio client does not do (its pipelines are batches one caller builds).

States:

    closed --call--> connecting --connected--> open --lost, timeout--> closed
                         \\---failed: every waiting call gets ConnectionError

Failures, each raised to every call then waiting (a call's command may or
may not have run; the caller's idempotency key decides, as with redis-py):

- the connection is lost or refused: `redis.exceptions.ConnectionError`;
- a reply takes longer than `timeout_s`: `redis.exceptions.TimeoutError`,
  and the connection is closed (a late reply must not complete another
  call's future);
- an error reply is the call's own exception (redis-py's classes, so
  NoScriptError and ResponseError read the same) and the connection goes on.

A call whose caller is cancelled keeps its place in the queue: its reply is
read and dropped, so the connection stays in step without being closed.
The next call after a close connects again. Plain TCP and unix sockets
only; `Multiplexer.for_client` answers None for TLS, and the store then uses
redis-py's pool.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, TypeVar

import hiredis
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")
_INCOMPLETE = object()
"""hiredis's answer when the bytes read so far do not hold a whole reply."""


@dataclass(frozen=True, slots=True)
class Address:
    """Where the server is and how to log in: a TCP host and port or a unix socket path."""

    host: str = ""
    port: int = 0
    path: str = ""
    db: int = 0
    username: str = ""
    password: str = ""


class Shared(Generic[T]):
    """One run of an async step at a time, which every caller that asks meanwhile awaits (opening a
    connection, reading a cluster's slot map); the next ask after it ended starts another. A caller
    that is cancelled leaves the run going for the others."""

    def __init__(self, step: Callable[[], Awaitable[T]]) -> None:
        self._step = step
        self._running: asyncio.Future[T] | None = None

    async def __call__(self) -> T:
        if self._running is None:
            self._running = asyncio.ensure_future(self._step())
        running = self._running
        try:
            return await asyncio.shield(running)
        finally:
            if running.done() and self._running is running:
                self._running = None


class _Link(asyncio.Protocol):
    """One connection: its write buffer, its calls waiting in the order sent, its reply reader.
    A link that failed stays failed; the multiplexer opens a new one for the next call."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.transport: asyncio.Transport | None = None
        self.failed: Exception | None = None
        self._reader = hiredis.Reader(encoding="utf-8", replyError=BaseParser.parse_error, notEnoughData=_INCOMPLETE)
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._outgoing: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self._watchdog: asyncio.TimerHandle | None = None

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        if self.failed is not None:
            future.set_exception(self.failed)
            return future
        self._waiting.append((future, self._loop.time() + self.timeout_s))
        self._outgoing.append(packed)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self.timeout_s, self._check_deadlines)
        return future

    def abort(self, error: Exception) -> None:
        """Close the connection and fail every waiting call with `error`."""
        self._fail(error)
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._outgoing and self.transport is not None and self.failed is None:
            self.transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    def _check_deadlines(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        oldest_deadline = self._waiting[0][1]
        if oldest_deadline <= self._loop.time():
            self.abort(RedisTimeoutError(f"no reply from Redis within {self.timeout_s} s"))
        else:
            self._watchdog = self._loop.call_at(oldest_deadline, self._check_deadlines)

    def _fail(self, error: Exception) -> None:
        if self.failed is None:
            self.failed = error
        self._outgoing.clear()
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Any event loop's stream transport (uvloop's do not subclass asyncio.Transport).
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while self._waiting:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as e:
                self.abort(RedisConnectionError(f"Redis sent an unreadable reply: {e}"))
                return
            if reply is _INCOMPLETE:
                return
            future, _ = self._waiting.popleft()
            if future.done():  # its caller was cancelled; the reply is dropped, the order kept
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"the connection to Redis was lost: {exc or 'closed by the server'}"))


class Multiplexer:
    """Concurrent commands on one connection, replies matched in order (module docstring)."""

    def __init__(self, address: Address, timeout_s: float) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._link: _Link | None = None
        self._opening = Shared(self._open)
        """Concurrent callers share one attempt to open the link."""

    @classmethod
    def for_client(cls, client: aioredis.Redis, timeout_s: float) -> "Multiplexer | None":
        """A multiplexer to the server of a redis-py client, or None when it is not plain TCP or a unix socket."""
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        login = dict(db=int(kwargs.get("db") or 0), username=kwargs.get("username") or "",
                     password=kwargs.get("password") or "")
        if pool.connection_class is Connection:
            return cls(Address(host=kwargs.get("host", "localhost"), port=int(kwargs.get("port", 6379)), **login), timeout_s)
        if pool.connection_class is UnixDomainSocketConnection:
            return cls(Address(path=kwargs["path"], **login), timeout_s)
        return None

    async def call(self, *command: Any) -> Any:
        """Send one command and wait for its reply (or raise what the reply or the connection says)."""
        link = self._link
        if link is None or link.failed is not None:
            link = await self._connect()
        return await link.send(hiredis.pack_command(command))

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.abort(RedisConnectionError("the store was closed"))

    async def _connect(self) -> _Link:
        """The open link, opening one if none is (concurrent callers share one attempt)."""
        self._link = await self._opening()
        return self._link

    async def _open(self) -> _Link:
        loop = asyncio.get_running_loop()
        address = self.address
        link = _Link(self.timeout_s)
        where = address.path or f"{address.host}:{address.port}"
        try:
            if address.path:
                opening = loop.create_unix_connection(lambda: link, address.path)
            else:
                opening = loop.create_connection(lambda: link, address.host, address.port)
            await asyncio.wait_for(opening, self.timeout_s)
        except (OSError, asyncio.TimeoutError) as e:
            raise RedisConnectionError(f"cannot connect to Redis at {where}: {e or 'timed out'}") from None
        login = []
        if address.password:
            credentials = (address.username, address.password) if address.username else (address.password,)
            login.append(("AUTH", *credentials))
        if address.db:
            login.append(("SELECT", address.db))
        for command in login:
            try:
                await link.send(hiredis.pack_command(command))
            except Exception as e:
                link.abort(RedisConnectionError(f"Redis refused the login at {where}: {e}"))
                raise link.failed from None
        return link
