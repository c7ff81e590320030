"""A fault-injection HTTP/1.1 proxy between a store terminal and the gateway.

The POS SDK's unknown-outcome procedure has to be tested against the ways a
store's network really fails: a request that never arrives, an answer that
never comes back after the gateway committed, a reset, a slow link, a
duplicated request. `FaultProxy` sits on a loopback port in front of the
gateway and decides, per request on each keep-alive connection, which of
those happens:

    PASS            forward the request, relay the response
    DELAY           wait `delay_s`, then pass
    DROP_REQUEST    read the request, never forward it, close the client connection (FIN)
    DROP_RESPONSE   forward it, read the whole response (the gateway committed), close without relaying
    RESET           read the request, never forward it, reset the client connection (RST)
    RESET_RESPONSE  forward it, read the whole response, reset the client connection (RST) without relaying
    DUPLICATE       forward the same bytes twice, relay the first response, discard the second

It frames messages just enough to act per request: a head up to the blank
line, then a body by Content-Length, chunked transfer coding, or (responses
only) until the upstream closes. It never rewrites a request; it rewrites a
response head only to add `Connection: close` when it is about to end a
connection the upstream would have kept.

`RedisFaultProxy` does the same between the gateway and Redis, at the TCP
level: it frames the client's byte stream as RESP commands (so a rule can
name a command and its first argument, e.g. `EVALSHA <sha of pay.lua>`) and
relays Redis's replies as raw bytes. Per command: PASS, DELAY, DROP_REQUEST
(never forwarded, client connection closed with FIN), RESET (never
forwarded, RST), DROP_RESPONSE and RESET_RESPONSE (forwarded, so Redis runs
it; the connection is cut with FIN or RST when the first reply bytes come
back, which for a client that waits for each reply, as redis-py does outside
pipelines, is after the command ran and before its reply arrived).
DUPLICATE is HTTP-only (re-sending a command needs reply framing).

Shape: the decision (`FaultPlan.decide`, fed the seeded RNG) and the framing
(`parse_head`, `request_framing`, `response_framing`, `parse_resp_length`, ...)
are pure; the asyncio shells (`FaultProxy`, `RedisFaultProxy`) only move bytes.

Errors: `FramingError` (a message the proxy cannot frame) is the only
exception this module raises to callers; I/O errors of either side are
handled by closing that client connection, as a broken network would.

Caveats worth knowing in tests: aiohttp's client retries an idempotent
request (GET, PUT, DELETE, ...) once after a disconnect, and the retry is a
new request that gets its own decision, so a one-shot fault on a GET is
invisible to an aiohttp caller; aim faults at POSTs. `Expect: 100-continue`,
upgrades and CONNECT are not supported.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import struct
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

__all__ = [
    "Decision",
    "Exchange",
    "Fault",
    "FaultPlan",
    "FaultProxy",
    "Framing",
    "FramingError",
    "Head",
    "ProxyStats",
    "Rates",
    "RedisFaultProxy",
    "Rule",
    "parse_head",
    "parse_request_line",
    "parse_resp_length",
    "parse_status_line",
    "request_framing",
    "response_framing",
    "target_path",
    "wants_keep_alive",
    "with_connection_close",
]

# Limits. Each is far above anything the gateway or the SDK sends, so a limit
# that trips means a bug or a hostile peer, never a real sale.
HEAD_BYTES_MAX = 64 * 1024  # the asyncio StreamReader default; aiohttp allows 8190 bytes per line
BODY_BYTES_MAX = 8 * 1024 * 1024  # the gateway's own request limit is far smaller
CHUNK_COUNT_MAX = 100_000  # chunks per chunked body
TRAILER_LINES_MAX = 100  # trailer fields after the last chunk, as aiohttp's max_headers (32) with room
REQUESTS_PER_CONNECTION_MAX = 10_000  # then `Connection: close`, as nginx's keepalive_requests (default 1000) does
RULES_MAX = 10_000  # pending rules; more means a test forgot to clear its plan
LOG_ENTRIES_MAX = 100_000  # a long load run keeps its totals in counters, the log keeps the latest
DELAY_S_MAX = 60.0  # a longer delay is an outage; use `down` for that
RESP_ARGS_MAX = 1024 * 1024  # arguments of one Redis command; the gateway's largest (a script's keys and args) has ~40
RESP_ARG_BYTES_MAX = BODY_BYTES_MAX  # one argument; the largest the gateway sends is a script's source, tens of KB
LOGGED_ARG_CHARS_MAX = 64  # of a command's first argument in the log (enough for a script's SHA1)
REPLY_READ_BYTES = 64 * 1024  # replies are relayed as they come, in reads of at most this

# Timeouts. The idle timeout matches aiohttp's server keep-alive (75 s), which is
# longer than aiohttp's client keep-alive (15 s), so the proxy is never the one
# that closes an idle connection a terminal is about to reuse.
IDLE_TIMEOUT_S = 75.0  # waiting for the next request head on a client connection
READ_TIMEOUT_S = 30.0  # reading a request body, or a whole upstream response
CONNECT_TIMEOUT_S = 5.0  # opening the upstream connection
CLOSE_TIMEOUT_S = 1.0  # waiting for a closed transport to finish flushing

_HEAD_END = b"\r\n\r\n"
_CRLF = b"\r\n"


class FramingError(ValueError):
    """A message the proxy cannot frame: a malformed head, an unsupported framing, or a limit exceeded."""


class Fault(StrEnum):
    PASS = "pass"
    DELAY = "delay"
    DROP_REQUEST = "drop_request"
    DROP_RESPONSE = "drop_response"
    RESET = "reset"
    DUPLICATE = "duplicate"
    RESET_RESPONSE = "reset_response"


# ---------------------------------------------------------------------------
# The decision: pure, fed the RNG by the caller.


def _check_delay(delay_s: float) -> None:
    if not 0.0 <= delay_s <= DELAY_S_MAX:
        raise ValueError(f"delay_s must be between 0 and {DELAY_S_MAX} s, not {delay_s}")


@dataclass(frozen=True)
class Decision:
    """What happens to one request."""

    fault: Fault
    delay_s: float = 0.0


@dataclass
class Rule:
    """Give `fault` to requests matching `method` and `path_prefix` (None matches any).

    `count` is how many matching requests the rule still applies to; None
    means it stands until the plan is cleared.
    """

    fault: Fault
    method: str | None = None
    path_prefix: str | None = None
    count: int | None = 1
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        self.fault = Fault(self.fault)
        if self.method is not None:
            self.method = self.method.upper()
        if self.count is not None and self.count < 1:
            raise ValueError(f"count must be at least 1 (or None for a standing rule), not {self.count}")
        _check_delay(self.delay_s)

    @property
    def standing(self) -> bool:
        return self.count is None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method.upper()) and (
            self.path_prefix is None or path.startswith(self.path_prefix)
        )


@dataclass(frozen=True)
class Rates:
    """Probabilities of each fault for requests no rule matched; the rest pass."""

    delay: float = 0.0
    drop_request: float = 0.0
    drop_response: float = 0.0
    reset: float = 0.0
    duplicate: float = 0.0
    delay_s: float = 0.2
    reset_response: float = 0.0

    def __post_init__(self) -> None:
        rates = self._cumulative_order()
        for fault, rate in rates:
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"the {fault} rate must be between 0 and 1, not {rate}")
        # A small tolerance so that rates such as 0.1 * 10 which sum to 1.0000000000000002 are accepted.
        if sum(rate for _, rate in rates) > 1.0 + 1e-9:
            raise ValueError("the fault rates must sum to at most 1")
        _check_delay(self.delay_s)

    def _cumulative_order(self) -> tuple[tuple[Fault, float], ...]:
        # The order is part of reproducibility: the same seed must map to the same faults.
        return (
            (Fault.DELAY, self.delay),
            (Fault.DROP_REQUEST, self.drop_request),
            (Fault.DROP_RESPONSE, self.drop_response),
            (Fault.RESET, self.reset),
            (Fault.DUPLICATE, self.duplicate),
            # Last, so that a seed draws the same faults as before this rate existed.
            (Fault.RESET_RESPONSE, self.reset_response),
        )

    @property
    def active(self) -> bool:
        return any(rate > 0.0 for _, rate in self._cumulative_order())

    def pick(self, draw: float) -> Decision:
        """The decision for a uniform draw in [0, 1)."""
        threshold = 0.0
        for fault, rate in self._cumulative_order():
            threshold += rate
            if draw < threshold:
                return Decision(fault, self.delay_s if fault is Fault.DELAY else 0.0)
        return Decision(Fault.PASS)


@dataclass
class FaultPlan:
    """What to do with each request, decided in order.

    Counted rules are tried first, oldest first, then standing rules, oldest
    first; the first rule that matches decides and, if counted, is used up
    by one. A request no rule matches draws once from the RNG when any rate
    is set (random mode), and passes otherwise. So a test can set a standing
    rule and still aim a one-shot fault at the next request.
    """

    rules: list[Rule] = field(default_factory=list)
    rates: Rates = field(default_factory=Rates)

    def add(self, rule: Rule) -> None:
        if len(self.rules) >= RULES_MAX:
            raise ValueError(f"a plan holds at most {RULES_MAX} rules; clear it between tests")
        if rule.standing:
            self.rules.append(rule)
        else:
            first_standing = next((i for i, r in enumerate(self.rules) if r.standing), len(self.rules))
            self.rules.insert(first_standing, rule)

    def clear(self) -> None:
        """Forget every rule and rate: every request passes."""
        self.rules.clear()
        self.rates = Rates()

    def decide(self, method: str, path: str, rng: random.Random) -> Decision:
        for index, rule in enumerate(self.rules):
            if rule.matches(method, path):
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count == 0:
                        del self.rules[index]
                return Decision(rule.fault, rule.delay_s if rule.fault is Fault.DELAY else 0.0)
        if self.rates.active:
            return self.rates.pick(rng.random())
        return Decision(Fault.PASS)


@dataclass(frozen=True)
class Exchange:
    """One request as the proxy handled it.

    `upstream_status` is None when the request never reached the gateway or
    no full response came back; `duplicate_status` is the discarded second
    response's status for DUPLICATE.
    """

    method: str
    path: str
    fault: Fault
    upstream_status: int | None
    duplicate_status: int | None = None


@dataclass
class ProxyStats:
    faults: Counter[Fault] = field(default_factory=Counter)
    log: deque[Exchange] = field(default_factory=lambda: deque(maxlen=LOG_ENTRIES_MAX))
    connections_accepted: int = 0
    connections_refused: int = 0  # while `down`
    upstream_failures: int = 0  # the upstream refused, timed out or closed mid-response

    def clear(self) -> None:
        self.faults.clear()
        self.log.clear()
        self.connections_accepted = self.connections_refused = self.upstream_failures = 0


# ---------------------------------------------------------------------------
# Framing: pure functions over bytes.


@dataclass(frozen=True)
class Head:
    start_line: str
    headers: tuple[tuple[str, str], ...]

    def values(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]

    def tokens(self, name: str) -> list[str]:
        """The comma-separated tokens of every `name` field, lower-cased."""
        return [token.strip().lower() for value in self.values(name) for token in value.split(",") if token.strip()]


@dataclass(frozen=True)
class Framing:
    """How a message's body is delimited: "none", "length", "chunked" or "until_close"."""

    kind: str
    length: int = 0


def parse_head(raw: bytes) -> Head:
    """Split a head (start line and fields, ending with the blank line) into its parts."""
    if len(raw) > HEAD_BYTES_MAX:
        raise FramingError(f"head longer than {HEAD_BYTES_MAX} bytes")
    lines = raw.decode("latin-1").split("\r\n")
    # A head read up to CRLF CRLF splits into [start, fields..., "", ""].
    while lines and lines[-1] == "":
        lines.pop()
    if not lines or not lines[0]:
        raise FramingError("empty head")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or line[0] in " \t":
            raise FramingError(f"malformed header line {line[:80]!r}")
        headers.append((name, value.strip(" \t")))
    return Head(lines[0], tuple(headers))


def parse_request_line(start_line: str) -> tuple[str, str, str]:
    """(method, target, version) of a request line."""
    parts = start_line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
        raise FramingError(f"malformed request line {start_line[:80]!r}")
    return parts[0], parts[1], parts[2]


def parse_status_line(start_line: str) -> tuple[str, int]:
    """(version, status) of a status line."""
    version, _, rest = start_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise FramingError(f"malformed status line {start_line[:80]!r}")
    return version, int(code)


def target_path(target: str) -> str:
    """The path of a request target, without its query (origin or absolute form)."""
    if target.startswith(("http://", "https://")):
        return urlsplit(target).path or "/"
    return target.partition("?")[0]


def parse_resp_length(line: bytes, marker: bytes, limit: int) -> int:
    """The N of a RESP `*N` (argument count) or `$N` (argument length) line, CRLF included."""
    if not line.startswith(marker) or not line.endswith(_CRLF):
        raise FramingError(f"expected a RESP {marker.decode()} line, got {line[:40]!r}")
    digits = line[1:-2]
    if not digits.isdigit():
        raise FramingError(f"malformed RESP length {digits[:20]!r}")
    length = int(digits)
    if length > limit:
        raise FramingError(f"RESP length {length} above the limit of {limit}")
    return length


def _content_length(head: Head) -> int | None:
    values = {token for value in head.values("Content-Length") for token in value.split(",")}
    values = {value.strip() for value in values}
    if not values:
        return None
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise FramingError("conflicting or malformed Content-Length")
    length = int(values.pop())
    if length > BODY_BYTES_MAX:
        raise FramingError(f"body longer than {BODY_BYTES_MAX} bytes")
    return length


def _transfer_framing(head: Head) -> Framing | None:
    codings = head.tokens("Transfer-Encoding")
    if not codings:
        return None
    if codings[-1] != "chunked":
        raise FramingError("a transfer coding other than chunked last")
    return Framing("chunked")


def request_framing(head: Head) -> Framing:
    """How a request's body is delimited (RFC 9112 section 6.3)."""
    chunked = _transfer_framing(head)
    if chunked is not None:
        return chunked
    length = _content_length(head)
    return Framing("length", length) if length else Framing("none")


def response_framing(request_method: str, status: int, head: Head) -> Framing:
    """How a response's body is delimited (RFC 9112 section 6.3)."""
    if request_method.upper() == "HEAD" or 100 <= status < 200 or status in (204, 304):
        return Framing("none")
    chunked = _transfer_framing(head)
    if chunked is not None:
        return chunked
    length = _content_length(head)
    if length is None:
        return Framing("until_close")
    return Framing("length", length) if length else Framing("none")


def wants_keep_alive(version: str, head: Head) -> bool:
    """Whether the sender of this head will keep the connection open after the message."""
    tokens = head.tokens("Connection")
    if version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def with_connection_close(raw_head: bytes) -> bytes:
    """The same response head, saying `Connection: close` instead of any Connection field."""
    lines = raw_head.split(_CRLF)
    while lines and lines[-1] == b"":
        lines.pop()
    kept = [line for line in lines[1:] if line.partition(b":")[0].strip().lower() != b"connection"]
    return _CRLF.join([lines[0], *kept, b"Connection: close"]) + _HEAD_END


# ---------------------------------------------------------------------------
# The asyncio shell.


async def _read_body(reader: asyncio.StreamReader, framing: Framing) -> bytes:
    """The body's bytes exactly as sent (chunked bodies keep their chunk framing)."""
    if framing.kind == "none":
        return b""
    if framing.kind == "length":
        return await reader.readexactly(framing.length)
    if framing.kind == "chunked":
        return await _read_chunked(reader)
    parts: list[bytes] = []
    total = 0
    # Each read returns at least one byte or b"" at EOF, so this ends within the body limit.
    for _ in range(BODY_BYTES_MAX + 1):
        part = await reader.read(64 * 1024)
        if not part:
            return b"".join(parts)
        total += len(part)
        if total > BODY_BYTES_MAX:
            raise FramingError(f"body longer than {BODY_BYTES_MAX} bytes")
        parts.append(part)
    raise FramingError(f"body longer than {BODY_BYTES_MAX} bytes")


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    for _ in range(CHUNK_COUNT_MAX):
        size_line = await reader.readuntil(_CRLF)
        parts.append(size_line)
        size_text = size_line[:-2].split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise FramingError(f"malformed chunk size {size_text[:20]!r}") from None
        total += size
        if size < 0 or total > BODY_BYTES_MAX:
            raise FramingError(f"body longer than {BODY_BYTES_MAX} bytes")
        if size == 0:
            for _ in range(TRAILER_LINES_MAX):
                line = await reader.readuntil(_CRLF)
                parts.append(line)
                if line == _CRLF:
                    return b"".join(parts)
            raise FramingError(f"more than {TRAILER_LINES_MAX} trailer lines")
        data = await reader.readexactly(size + 2)
        if not data.endswith(_CRLF):
            raise FramingError("chunk not followed by CRLF")
        parts.append(data)
    raise FramingError(f"more than {CHUNK_COUNT_MAX} chunks")


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close abruptly: SO_LINGER 0 makes the kernel send RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _close(writer: asyncio.StreamWriter) -> None:
    if not writer.is_closing():
        writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except (OSError, asyncio.IncompleteReadError):
        pass
    except asyncio.CancelledError:
        # Cut short (the proxy is closing or going down): never leave the socket open behind us.
        writer.transport.abort()
        raise


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    raw: bytes
    keep_alive: bool


@dataclass(frozen=True)
class _Response:
    status: int
    raw_head: bytes
    body: bytes
    keep_alive: bool


class _UpstreamFailed(Exception):
    """The upstream refused, timed out, closed mid-response or sent what the proxy cannot frame."""


class _Upstream:
    """The one upstream connection that belongs to one client connection, opened when first needed."""

    def __init__(self, host: str, port: int, connect_timeout_s: float, read_timeout_s: float) -> None:
        self.host, self.port = host, port
        self.connect_timeout_s, self.read_timeout_s = connect_timeout_s, read_timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def _usable(self) -> bool:
        return (self.reader is not None and self.writer is not None
                and not self.reader.at_eof() and not self.writer.is_closing())

    async def round_trip(self, request: _Request) -> _Response:
        try:
            if not self._usable():
                await self.close()
                async with asyncio.timeout(self.connect_timeout_s):
                    self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=HEAD_BYTES_MAX)
            assert self.reader is not None and self.writer is not None
            self.writer.write(request.raw)
            async with asyncio.timeout(self.read_timeout_s):
                await self.writer.drain()
                raw_head = await self.reader.readuntil(_HEAD_END)
                head = parse_head(raw_head)
                version, status = parse_status_line(head.start_line)
                framing = response_framing(request.method, status, head)
                body = await _read_body(self.reader, framing)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, FramingError) as error:
            await self.close()
            raise _UpstreamFailed(str(error)) from error
        keep_alive = framing.kind != "until_close" and wants_keep_alive(version, head)
        if not (keep_alive and request.keep_alive):
            await self.close()
        return _Response(status, raw_head, body, keep_alive)

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            await _close(writer)


class _Proxy:
    """What both proxies share: the loopback listener, the plan, `down`, the stats."""

    unsupported: frozenset[Fault] = frozenset()
    """Faults this proxy cannot inject; a rule or rate asking for one is refused."""

    def __init__(self, upstream_host: str, upstream_port: int, *, seed: int = 0, plan: FaultPlan | None = None,
                 idle_timeout_s: float = IDLE_TIMEOUT_S, read_timeout_s: float = READ_TIMEOUT_S,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.plan = plan if plan is not None else FaultPlan()
        self.stats = ProxyStats()
        self.idle_timeout_s, self.read_timeout_s, self.connect_timeout_s = idle_timeout_s, read_timeout_s, connect_timeout_s
        self._rng = random.Random(seed)
        self._down = False
        self._closing = False
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    # -- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Self:
        # A tool that drops and duplicates payments must never face a real network.
        if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the fault proxy listens on loopback only, not {host}")
        if self._server is not None:
            raise RuntimeError("the fault proxy is already started")
        self._server = await asyncio.start_server(self._serve, host, port, limit=HEAD_BYTES_MAX)
        return self

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fault proxy is not started")
        return self._server.sockets[0].getsockname()[1]

    @property
    def down(self) -> bool:
        """While True the upstream looks unreachable: new connections are reset at once.

        Setting it also cuts every open connection, idle or mid-exchange, so a
        terminal's pooled keep-alive connection cannot slip through; a request
        already forwarded when the cut comes has an unknown outcome, as in life.
        """
        return self._down

    @down.setter
    def down(self, value: bool) -> None:
        self._down = bool(value)
        if self._down:
            for task in list(self._connections):
                task.cancel()

    # -- the plan

    def once(self, fault: Fault, method: str | None = None, path_prefix: str | None = None, delay_s: float = 0.0) -> None:
        """The next matching request gets `fault`, once."""
        self.times(1, fault, method, path_prefix, delay_s)

    def times(self, count: int, fault: Fault, method: str | None = None, path_prefix: str | None = None,
              delay_s: float = 0.0) -> None:
        """The next `count` matching requests get `fault`."""
        self._check_supported(fault)
        self.plan.add(Rule(fault, method, path_prefix, count, delay_s))

    def always(self, fault: Fault, method: str | None = None, path_prefix: str | None = None, delay_s: float = 0.0) -> None:
        """Every matching request gets `fault` until `clear()` (counted rules are tried first)."""
        self._check_supported(fault)
        self.plan.add(Rule(fault, method, path_prefix, None, delay_s))

    def clear(self) -> None:
        """Forget every rule and rate; the RNG and the stats carry on."""
        self.plan.clear()

    def set_rates(self, *, delay: float = 0.0, drop_request: float = 0.0, drop_response: float = 0.0,
                  reset: float = 0.0, duplicate: float = 0.0, delay_s: float = 0.2, reset_response: float = 0.0) -> None:
        """Random mode: requests no rule matches get each fault with these probabilities, from the seeded RNG.

        The same seed gives the same sequence of decisions; which request gets
        which decision follows the order in which requests finish arriving.
        """
        rates = Rates(delay, drop_request, drop_response, reset, duplicate, delay_s, reset_response)
        for fault, rate in rates._cumulative_order():
            if rate > 0:
                self._check_supported(fault)
        self.plan.rates = rates

    def _check_supported(self, fault: Fault) -> None:
        if Fault(fault) in self.unsupported:
            raise ValueError(f"{type(self).__name__} cannot inject {Fault(fault)}")

    # -- the shell

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The proxy cuts connections (`down`, `close`) by cancelling their tasks, and the
        # cancellation ends here: asyncio's start_server (3.11) calls `task.exception()` on
        # the handler's task when it finishes, which raises and logs for a cancelled task.
        task = asyncio.current_task()
        assert task is not None
        if self._down or self._closing:
            self.stats.connections_refused += 1
            _reset(writer)
            await _close(writer)
            return
        self.stats.connections_accepted += 1
        self._connections.add(task)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await self._serve_connection(reader, writer)
        finally:
            self._connections.discard(task)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One admitted client connection, until it ends (`_serve` counts and tracks it)."""
        raise NotImplementedError


class FaultProxy(_Proxy):
    """A loopback HTTP/1.1 proxy in front of `upstream_host:upstream_port` that injects faults per request.

        async with FaultProxy("127.0.0.1", gateway_port, seed=1) as proxy:
            proxy.once(Fault.DROP_RESPONSE, "POST", "/v1/payments")
            ...  # point the terminal at proxy.url
    """

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = _Upstream(self.upstream_host, self.upstream_port, self.connect_timeout_s, self.read_timeout_s)
        try:
            for served in range(REQUESTS_PER_CONNECTION_MAX):
                request = await self._read_request(reader)
                if request is None:
                    return
                if self._down:
                    _reset(writer)
                    return
                decision = self.plan.decide(request.method, request.path, self._rng)
                last = served == REQUESTS_PER_CONNECTION_MAX - 1
                if not await self._exchange(request, decision, writer, upstream, last):
                    return
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, FramingError):
            # The client went away, stalled, or sent what the proxy cannot frame: drop the connection.
            pass
        finally:
            # Start closing the client side before any await, so a cancellation
            # arriving during the upstream's close cannot leave it open.
            if not writer.is_closing():
                writer.close()
            await upstream.close()
            await _close(writer)

    async def _read_request(self, reader: asyncio.StreamReader) -> _Request | None:
        """The next whole request, or None when the client closed between requests."""
        try:
            async with asyncio.timeout(self.idle_timeout_s):
                raw_head = await reader.readuntil(_HEAD_END)
        except asyncio.IncompleteReadError as error:
            if error.partial.strip():
                raise
            return None
        except TimeoutError:
            return None
        # RFC 9112 section 2.2: ignore empty lines before a request line.
        raw_head = raw_head.lstrip(_CRLF)
        head = parse_head(raw_head)
        method, target, version = parse_request_line(head.start_line)
        async with asyncio.timeout(self.read_timeout_s):
            body = await _read_body(reader, request_framing(head))
        return _Request(method, target_path(target), raw_head + body, wants_keep_alive(version, head))

    async def _exchange(self, request: _Request, decision: Decision, writer: asyncio.StreamWriter,
                        upstream: _Upstream, last: bool) -> bool:
        """Handle one request as decided; True when the client connection carries on."""
        fault = decision.fault
        self.stats.faults[fault] += 1
        if fault in (Fault.RESET, Fault.DROP_REQUEST):
            self._record(request, fault, None)
            if fault is Fault.RESET:
                _reset(writer)
            return False
        if fault is Fault.DELAY:
            await asyncio.sleep(decision.delay_s)
        try:
            response = await upstream.round_trip(request)
        except _UpstreamFailed:
            self.stats.upstream_failures += 1
            self._record(request, fault, None)
            return False
        duplicate_status = None
        if fault is Fault.DUPLICATE:
            # The copy goes before the first response is relayed, so that by the time the
            # terminal sees an answer the gateway has seen both copies.
            try:
                duplicate_status = (await upstream.round_trip(request)).status
            except _UpstreamFailed:
                self.stats.upstream_failures += 1
        self._record(request, fault, response.status, duplicate_status)
        if fault is Fault.RESET_RESPONSE:
            _reset(writer)
            return False
        if fault is Fault.DROP_RESPONSE:
            return False
        keep_alive = request.keep_alive and response.keep_alive and not last
        raw_head = response.raw_head
        if response.keep_alive and not keep_alive:
            raw_head = with_connection_close(raw_head)
        writer.write(raw_head + response.body)
        async with asyncio.timeout(self.read_timeout_s):
            await writer.drain()
        return keep_alive

    def _record(self, request: _Request, fault: Fault, status: int | None, duplicate_status: int | None = None) -> None:
        self.stats.log.append(Exchange(request.method, request.path, fault, status, duplicate_status))


class RedisFaultProxy(_Proxy):
    """A loopback TCP proxy in front of a Redis server that injects faults per command.

        async with RedisFaultProxy("127.0.0.1", redis_port, seed=1) as proxy:
            proxy.once(Fault.RESET_RESPONSE, "EVALSHA", pay_sha)  # the script runs, its reply is lost
            ...  # point the gateway at proxy.url

    Rules match the command name as `method` and its first argument as
    `path_prefix`. The log records each command as an `Exchange` whose
    `upstream_status` is None (replies are relayed as bytes, not framed).
    Idle client connections are never timed out (redis-server's own default,
    `timeout 0`), so a connection pool's idle connections stay usable.
    """

    unsupported = frozenset({Fault.DUPLICATE})

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        pumps: list[asyncio.Task[bool]] = []
        try:
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    upstream_reader, upstream = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            except (OSError, TimeoutError):
                self.stats.upstream_failures += 1
                return  # the client sees its connection closed, as through any proxy
            cut: list[Fault] = []  # the response fault armed on this connection, if any
            commands = asyncio.create_task(self._relay_commands(reader, writer, upstream, cut))
            replies = asyncio.create_task(self._relay_replies(upstream_reader, writer, cut))
            pumps = [commands, replies]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            if commands.done() and not replies.done() and commands.result():
                # The client hung up between commands: Redis still answers (and runs) what it
                # was sent, then sees the half-close and closes its side, which ends the relay.
                with contextlib.suppress(OSError):
                    upstream.write_eof()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.read_timeout_s):
                        await asyncio.wait({replies})
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            if not writer.is_closing():
                writer.close()
            if upstream is not None:
                await _close(upstream)
            await _close(writer)

    async def _relay_commands(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                              upstream: asyncio.StreamWriter, cut: list[Fault]) -> bool:
        """Forward the client's commands as decided; True when the client hung up between commands."""
        try:
            while True:
                command = await self._read_command(reader)
                if command is None:
                    return True
                raw, name, first = command
                if self._down:
                    _reset(writer)
                    return False
                decision = self.plan.decide(name, first, self._rng)
                fault = decision.fault
                self.stats.faults[fault] += 1
                self.stats.log.append(Exchange(name, first, fault, None))
                if fault is Fault.RESET:
                    _reset(writer)
                    return False
                if fault is Fault.DROP_REQUEST:
                    return False
                if fault is Fault.DELAY:
                    # The command goes on after the delay even if the client gave up meanwhile:
                    # a late packet still reaches the server, and that case is the point.
                    await asyncio.sleep(decision.delay_s)
                if fault in (Fault.DROP_RESPONSE, Fault.RESET_RESPONSE):
                    cut.append(fault)
                upstream.write(raw)
                async with asyncio.timeout(self.read_timeout_s):
                    await upstream.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, FramingError):
            return False

    async def _relay_replies(self, upstream: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             cut: list[Fault]) -> bool:
        """Relay Redis's bytes until it closes, or cut the client at the first reply after a response fault."""
        try:
            while True:
                data = await upstream.read(REPLY_READ_BYTES)
                if not data:
                    return False
                if cut:
                    if cut[0] is Fault.RESET_RESPONSE:
                        _reset(writer)
                    return False
                writer.write(data)
                async with asyncio.timeout(self.read_timeout_s):
                    await writer.drain()
        except (OSError, TimeoutError):
            return False

    async def _read_command(self, reader: asyncio.StreamReader) -> tuple[bytes, str, str] | None:
        """The next whole command (raw bytes, upper-cased name, first argument), or None at EOF."""
        try:
            first_line = await reader.readuntil(_CRLF)  # no idle timeout: see the class docstring
        except asyncio.IncompleteReadError as error:
            if error.partial:
                raise
            return None
        count = parse_resp_length(first_line, b"*", RESP_ARGS_MAX)
        parts = [first_line]
        shown: list[str] = []
        async with asyncio.timeout(self.read_timeout_s):
            for index in range(count):
                line = await reader.readuntil(_CRLF)
                length = parse_resp_length(line, b"$", RESP_ARG_BYTES_MAX)
                data = await reader.readexactly(length + 2)
                if not data.endswith(_CRLF):
                    raise FramingError("a RESP argument not followed by CRLF")
                parts += [line, data]
                if index < 2:
                    shown.append(data[:min(length, LOGGED_ARG_CHARS_MAX)].decode("latin-1"))
        name = shown[0].upper() if shown else ""
        return b"".join(parts), name, shown[1] if len(shown) > 1 else ""
