"""The fault proxy does to each request exactly what its plan says, against a real aiohttp upstream."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import ClientConnectionError, ClientSession, ClientTimeout, TCPConnector, web
from aiohttp.test_utils import TestServer

from simulators import fault_proxy
from simulators.fault_proxy import (
    Exchange,
    Fault,
    FaultPlan,
    FaultProxy,
    FramingError,
    Rates,
    Rule,
    parse_head,
    request_framing,
    response_framing,
    wants_keep_alive,
    with_connection_close,
)

CLIENT_TIMEOUT = ClientTimeout(total=5)


@dataclass
class Tally:
    value: int = 0


TALLY = web.AppKey("tally", Tally)


async def count_up(request: web.Request) -> web.Response:
    tally = request.app[TALLY]
    tally.value += 1
    return web.Response(text=str(tally.value))


async def count_now(request: web.Request) -> web.Response:
    return web.Response(text=str(request.app[TALLY].value))


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


async def chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for part in (b"alpha-", b"beta-", b"gamma"):
        await response.write(part)
    await response.write_eof()
    return response


@dataclass
class Upstream:
    tally: Tally
    port: int

    @property
    def count(self) -> int:
        return self.tally.value


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    app = web.Application()
    app[TALLY] = Tally()
    app.router.add_post("/count", count_up)
    app.router.add_get("/count", count_now)
    app.router.add_post("/echo", echo)
    app.router.add_get("/chunked", chunked)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield Upstream(app[TALLY], server.port)
    await server.close()


@pytest.fixture
async def proxy(upstream: Upstream) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", upstream.port, seed=0) as proxy:
        yield proxy


@pytest.fixture
async def session() -> AsyncIterator[ClientSession]:
    async with ClientSession(timeout=CLIENT_TIMEOUT) as session:
        yield session


async def post_count(session: ClientSession, proxy: FaultProxy) -> int:
    async with session.post(proxy.url + "/count") as response:
        assert response.status == 200
        return int(await response.text())


async def get_count(session: ClientSession, proxy: FaultProxy) -> int:
    async with session.get(proxy.url + "/count") as response:
        assert response.status == 200
        return int(await response.text())


def faults(proxy: FaultProxy) -> list[Fault]:
    return [exchange.fault for exchange in proxy.stats.log]


# -- each fault


async def test_pass_relays_request_body_and_response(proxy: FaultProxy, session: ClientSession) -> None:
    """PASS forwards the request bytes and relays the upstream's response unchanged."""
    async with session.post(proxy.url + "/echo", data=b"scan 123") as response:
        assert (200, b"scan 123") == (response.status, await response.read())
    assert [Exchange("POST", "/echo", Fault.PASS, 200)] == list(proxy.stats.log)


async def test_pass_relays_chunked_response(proxy: FaultProxy, session: ClientSession) -> None:
    """A chunked response is relayed whole, and the connection stays usable."""
    async with session.get(proxy.url + "/chunked") as response:
        assert b"alpha-beta-gamma" == await response.read()
    assert 1 == await post_count(session, proxy)


async def test_delay_holds_request_for_delay_s(proxy: FaultProxy, upstream: Upstream, session: ClientSession) -> None:
    """DELAY forwards the request only after delay_s, then passes it."""
    proxy.once(Fault.DELAY, delay_s=0.3)
    started = time.monotonic()
    assert 1 == await post_count(session, proxy)
    elapsed_s = time.monotonic() - started
    assert 0.3 <= elapsed_s < 1.3
    assert (1, [Fault.DELAY]) == (upstream.count, faults(proxy))


async def test_drop_request_never_reaches_upstream(proxy: FaultProxy, upstream: Upstream, session: ClientSession) -> None:
    """DROP_REQUEST: the client's connection closes and the upstream never sees the request."""
    proxy.once(Fault.DROP_REQUEST)
    with pytest.raises(ClientConnectionError):
        await post_count(session, proxy)
    assert 0 == upstream.count
    assert [Exchange("POST", "/count", Fault.DROP_REQUEST, None)] == list(proxy.stats.log)


async def test_drop_response_commits_upstream_but_client_gets_nothing(proxy: FaultProxy, upstream: Upstream,
                                                                       session: ClientSession) -> None:
    """DROP_RESPONSE: the upstream handled the request, the client's connection closes unanswered."""
    proxy.once(Fault.DROP_RESPONSE)
    with pytest.raises(ClientConnectionError):
        await post_count(session, proxy)
    assert 1 == upstream.count
    assert [Exchange("POST", "/count", Fault.DROP_RESPONSE, 200)] == list(proxy.stats.log)


async def test_reset_response_commits_upstream_then_resets_the_client(proxy: FaultProxy, upstream: Upstream) -> None:
    """RESET_RESPONSE: the upstream handled the request, then the client's connection is reset (RST) unanswered."""
    proxy.once(Fault.RESET_RESPONSE)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"POST /count HTTP/1.1\r\nHost: pos\r\nContent-Length: 2\r\n\r\nhi")
        await writer.drain()
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(5):
                await reader.read(1024)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert (1, [Exchange("POST", "/count", Fault.RESET_RESPONSE, 200)]) == (upstream.count, list(proxy.stats.log))


async def test_reset_never_reaches_upstream(proxy: FaultProxy, upstream: Upstream, session: ClientSession) -> None:
    """RESET: the client's connection is reset and the upstream never sees the request."""
    proxy.once(Fault.RESET)
    with pytest.raises(ClientConnectionError):
        await post_count(session, proxy)
    assert 0 == upstream.count
    assert [Exchange("POST", "/count", Fault.RESET, None)] == list(proxy.stats.log)


@pytest.mark.parametrize(("fault", "closed_by"), [(Fault.RESET, "rst"), (Fault.DROP_REQUEST, "fin")])
async def test_reset_sends_rst_and_drop_request_sends_fin(proxy: FaultProxy, fault: Fault, closed_by: str) -> None:
    """RESET closes with RST (the reader sees ECONNRESET); DROP_REQUEST closes with FIN (the reader sees EOF)."""
    proxy.once(fault)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"POST /count HTTP/1.1\r\nHost: pos\r\nContent-Length: 2\r\n\r\nhi")
        await writer.drain()
        try:
            async with asyncio.timeout(5):
                seen = "fin" if await reader.read(1024) == b"" else "data"
        except ConnectionResetError:
            seen = "rst"
        assert closed_by == seen
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_duplicate_sends_twice_and_relays_the_first_answer(proxy: FaultProxy, upstream: Upstream,
                                                                 session: ClientSession) -> None:
    """DUPLICATE: the upstream handles the request twice; the client gets only the first answer."""
    proxy.once(Fault.DUPLICATE)
    assert 1 == await post_count(session, proxy)
    assert 2 == upstream.count
    assert [Exchange("POST", "/count", Fault.DUPLICATE, 200, 200)] == list(proxy.stats.log)


# -- down, rules, random mode, keep-alive


async def test_down_refuses_connections_until_up(proxy: FaultProxy, upstream: Upstream, session: ClientSession) -> None:
    """While down, connections are refused and nothing reaches the upstream; back up, requests pass."""
    proxy.down = True
    with pytest.raises(ClientConnectionError):
        await post_count(session, proxy)
    assert (0, 1) == (upstream.count, proxy.stats.connections_refused)
    proxy.down = False
    assert 1 == await post_count(session, proxy)


async def test_down_cuts_a_pooled_keep_alive_connection(proxy: FaultProxy, upstream: Upstream,
                                                        session: ClientSession) -> None:
    """Going down cuts open connections too, so a pooled connection cannot slip a request through."""
    assert 1 == await post_count(session, proxy)
    proxy.down = True
    await asyncio.sleep(0.05)
    with pytest.raises(ClientConnectionError):
        await post_count(session, proxy)
    assert 1 == upstream.count


async def test_down_cuts_idle_connections_at_once(proxy: FaultProxy) -> None:
    """Going down closes an idle keep-alive connection straight away, without waiting for its next request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET /count HTTP/1.1\r\nHost: pos\r\n\r\n")
        async with asyncio.timeout(5):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            await reader.readexactly(1)
            proxy.down = True
            try:
                rest = await reader.read(1024)
            except ConnectionResetError:
                rest = b""
        assert b"" == rest
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_rules_match_by_method_and_path_prefix(proxy: FaultProxy, upstream: Upstream,
                                                     session: ClientSession) -> None:
    """A rule applies only to requests of its method whose path starts with its prefix."""
    proxy.once(Fault.DROP_REQUEST, method="post", path_prefix="/cou")
    assert 0 == await get_count(session, proxy)
    async with session.post(proxy.url + "/echo", data=b"x") as response:
        assert b"x" == await response.read()
    with pytest.raises(ClientConnectionError):
        await post_count(session, proxy)
    assert 1 == await post_count(session, proxy)
    assert [Fault.PASS, Fault.PASS, Fault.DROP_REQUEST, Fault.PASS] == faults(proxy)
    assert 1 == upstream.count


async def test_always_applies_until_clear(proxy: FaultProxy, upstream: Upstream, session: ClientSession) -> None:
    """A standing rule applies to every matching request until the plan is cleared."""
    proxy.always(Fault.DUPLICATE, "POST", "/count")
    assert 1 == await post_count(session, proxy)
    assert 3 == await post_count(session, proxy)
    proxy.clear()
    assert 5 == await post_count(session, proxy)
    assert [Fault.DUPLICATE, Fault.DUPLICATE, Fault.PASS] == faults(proxy)


RANDOM_RATES = dict(delay=0.1, drop_request=0.15, drop_response=0.15, reset=0.15, duplicate=0.15, delay_s=0.01)
UPSTREAM_COMMITS = {Fault.PASS: 1, Fault.DELAY: 1, Fault.DROP_RESPONSE: 1, Fault.DUPLICATE: 2,
                    Fault.DROP_REQUEST: 0, Fault.RESET: 0}


async def run_random(upstream: Upstream, seed: int, request_count: int = 30) -> list[Fault]:
    async with FaultProxy("127.0.0.1", upstream.port, seed=seed) as proxy, \
            ClientSession(timeout=CLIENT_TIMEOUT) as session:
        proxy.set_rates(**RANDOM_RATES)
        for _ in range(request_count):
            with contextlib.suppress(ClientConnectionError):
                await post_count(session, proxy)
        return faults(proxy)


async def test_random_mode_is_reproducible_from_the_seed(upstream: Upstream) -> None:
    """The same seed gives the same sequence of faults, the plan's own; another seed gives another."""
    first = await run_random(upstream, seed=7)
    assert sum(UPSTREAM_COMMITS[fault] for fault in first) == upstream.count
    second = await run_random(upstream, seed=7)
    other = await run_random(upstream, seed=8)
    plan, rng = FaultPlan(rates=Rates(**RANDOM_RATES)), random.Random(7)
    assert [plan.decide("POST", "/count", rng).fault for _ in range(30)] == first
    assert first == second
    assert first != other
    assert len(set(first)) >= 4


async def test_keep_alive_requests_each_get_their_own_decision(proxy: FaultProxy, upstream: Upstream) -> None:
    """Requests on one keep-alive connection are decided one by one, and the connection survives them."""
    proxy.once(Fault.DELAY, "POST", delay_s=0.05)
    proxy.once(Fault.DUPLICATE, "POST")
    async with ClientSession(connector=TCPConnector(limit=1), timeout=CLIENT_TIMEOUT) as session:
        seen = [await get_count(session, proxy), await post_count(session, proxy), await post_count(session, proxy),
                await get_count(session, proxy), await post_count(session, proxy), await get_count(session, proxy)]
    assert [0, 1, 2, 3, 4, 4] == seen
    assert [Fault.PASS, Fault.DELAY, Fault.DUPLICATE, Fault.PASS, Fault.PASS, Fault.PASS] == faults(proxy)
    assert 1 == proxy.stats.connections_accepted


async def test_connection_closes_politely_after_its_request_limit(proxy: FaultProxy, session: ClientSession,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """After its last allowed request a connection is closed with `Connection: close`, and the client reconnects."""
    monkeypatch.setattr(fault_proxy, "REQUESTS_PER_CONNECTION_MAX", 2)
    async with session.post(proxy.url + "/count") as response:
        assert response.headers.get("Connection") is None
    async with session.post(proxy.url + "/count") as response:
        assert "close" == response.headers.get("Connection")
    assert 3 == await post_count(session, proxy)
    assert 2 == proxy.stats.connections_accepted


async def test_unreachable_upstream_closes_the_client_connection(session: ClientSession) -> None:
    """When the upstream refuses, the client's connection closes and the failure is counted."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with FaultProxy("127.0.0.1", closed_port, connect_timeout_s=1) as proxy:
        with pytest.raises(ClientConnectionError):
            await post_count(session, proxy)
        assert (1, [Exchange("POST", "/count", Fault.PASS, None)]) == (proxy.stats.upstream_failures,
                                                                       list(proxy.stats.log))


async def test_listens_on_loopback_only(upstream: Upstream) -> None:
    """The proxy refuses to listen anywhere but loopback."""
    with pytest.raises(ValueError, match="loopback"):
        await FaultProxy("127.0.0.1", upstream.port).start(host="0.0.0.0")


# -- the pure core


def test_counted_rules_come_before_standing_rules() -> None:
    """A one-shot rule added after a standing rule still decides the next matching request."""
    plan, rng = FaultPlan(), random.Random(0)
    plan.add(Rule(Fault.DELAY, count=None, delay_s=0.1))
    plan.add(Rule(Fault.RESET, "POST"))
    plan.add(Rule(Fault.DUPLICATE, "POST", count=2))
    decided = [plan.decide("POST", "/v1/payments", rng).fault for _ in range(5)]
    assert [Fault.RESET, Fault.DUPLICATE, Fault.DUPLICATE, Fault.DELAY, Fault.DELAY] == decided


def test_delay_decision_carries_its_delay() -> None:
    """A DELAY decision carries the rule's delay_s; other faults carry none."""
    plan, rng = FaultPlan(), random.Random(0)
    plan.add(Rule(Fault.DELAY, delay_s=0.25))
    assert 0.25 == plan.decide("GET", "/", rng).delay_s
    assert fault_proxy.Decision(Fault.PASS) == plan.decide("GET", "/", rng)


@pytest.mark.parametrize("rates", [dict(reset=1.5), dict(delay=-0.1), dict(reset=0.6, duplicate=0.6), dict(delay_s=61)])
def test_rates_out_of_range_are_refused(rates: dict[str, float]) -> None:
    """Rates outside [0, 1], rates summing above 1 and over-long delays are refused."""
    with pytest.raises(ValueError):
        Rates(**rates)


def test_rates_pick_by_cumulative_probability() -> None:
    """A draw maps to faults in a fixed order of cumulative probability, the rest passing."""
    rates = Rates(delay=0.1, reset=0.2, delay_s=0.5)
    assert [Fault.DELAY, Fault.RESET, Fault.RESET, Fault.PASS] == [rates.pick(draw).fault for draw in (0.05, 0.1, 0.29, 0.31)]
    assert 0.5 == rates.pick(0.0).delay_s


def test_framing_follows_rfc_9112() -> None:
    """Bodies are delimited by chunked coding, then Content-Length, then (responses) the close."""
    chunked = parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n")
    sized = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n")
    bare = parse_head(b"HTTP/1.1 200 OK\r\n\r\n")
    assert "chunked" == request_framing(chunked).kind
    assert fault_proxy.Framing("length", 12) == response_framing("GET", 200, sized)
    assert "none" == response_framing("HEAD", 200, sized).kind
    assert "none" == response_framing("GET", 204, bare).kind
    assert "until_close" == response_framing("GET", 200, bare).kind
    with pytest.raises(FramingError):
        request_framing(parse_head(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"))


def test_keep_alive_defaults_differ_by_version() -> None:
    """HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes unless told to keep it."""
    plain = parse_head(b"HTTP/1.1 200 OK\r\n\r\n")
    closing = parse_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    keeping = parse_head(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n")
    assert [True, False, False, True] == [wants_keep_alive("HTTP/1.1", plain), wants_keep_alive("HTTP/1.1", closing),
                                          wants_keep_alive("HTTP/1.0", plain), wants_keep_alive("HTTP/1.0", keeping)]


def test_with_connection_close_replaces_the_connection_field() -> None:
    """The rewritten head says `Connection: close` once and keeps every other field."""
    head = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n"
    assert b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n" == with_connection_close(head)


def test_malformed_heads_are_refused() -> None:
    """Folded lines, whitespace before the colon and lines without a colon are framing errors."""
    for raw in (b"GET / HTTP/1.1\r\n folded\r\n\r\n", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", b"GET / HTTP/1.1\r\nnocolon\r\n\r\n"):
        with pytest.raises(FramingError):
            parse_head(raw)
