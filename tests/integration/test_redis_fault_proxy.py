"""The Redis fault proxy does to each command exactly what its plan says, in front of the real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from gateway.store import connect
from simulators.fault_proxy import Exchange, Fault, FramingError, RedisFaultProxy, parse_resp_length


@pytest.fixture
async def proxy(redis_server) -> AsyncIterator[RedisFaultProxy]:
    async with RedisFaultProxy("127.0.0.1", redis_server.port, seed=3) as running:
        yield running


@pytest.fixture
async def direct(redis_server) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_server.url, socket_timeout_s=5)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def through(proxy: RedisFaultProxy) -> AsyncIterator[aioredis.Redis]:
    """The gateway's own kind of client (no retries), through the proxy."""
    client = connect(proxy.url, socket_timeout_s=1)
    yield client
    await client.aclose()


def faults(proxy: RedisFaultProxy, name: str) -> list[Fault]:
    return [e.fault for e in proxy.stats.log if e.method == name]


async def test_pass_relays_commands_and_replies(proxy, through, direct):
    """With no plan, commands reach Redis and their replies come back, in order."""
    await through.set("k", "v")
    got = await through.get("k")
    # The connection's own handshake (HELLO, CLIENT SETINFO) comes first.
    logged = [e for e in proxy.stats.log if e.method in ("SET", "GET")]
    assert ("v", "v", [Exchange("SET", "k", Fault.PASS, None), Exchange("GET", "k", Fault.PASS, None)]) == (
        got, await direct.get("k"), logged)


async def test_reset_never_reaches_redis(proxy, through, direct):
    """RESET: the client's connection is reset and Redis never runs the command."""
    proxy.once(Fault.RESET, "SET")
    with pytest.raises(redis.exceptions.ConnectionError):
        await through.set("k", "v")
    assert (None, [Fault.RESET]) == (await direct.get("k"), faults(proxy, "SET"))


async def test_drop_request_never_reaches_redis(proxy, through, direct):
    """DROP_REQUEST: the connection is closed and Redis never runs the command."""
    proxy.once(Fault.DROP_REQUEST, "INCRBY")
    with pytest.raises(redis.exceptions.ConnectionError):
        await through.incr("n")
    assert None is await direct.get("n")


@pytest.mark.parametrize("fault", [Fault.RESET_RESPONSE, Fault.DROP_RESPONSE])
async def test_response_faults_run_the_command_and_lose_its_reply(proxy, through, direct, fault):
    """RESET_RESPONSE and DROP_RESPONSE: Redis runs the command once; the client gets an error, not the reply."""
    proxy.once(fault, "INCRBY", "n")
    with pytest.raises(redis.exceptions.ConnectionError):
        await through.incr("n")
    assert ("1", 2) == (await direct.get("n"), await through.incr("n"))


async def test_delay_past_the_client_timeout_still_runs_late(proxy, through, direct):
    """DELAY longer than the client's timeout: the client times out, and the command reaches Redis afterwards."""
    proxy.once(Fault.DELAY, "INCRBY", delay_s=1.5)
    started = time.monotonic()
    with pytest.raises(redis.exceptions.TimeoutError):
        await through.incr("n")
    timed_out_s = time.monotonic() - started
    await asyncio.sleep(1.0)
    assert (True, "1") == (0.9 < timed_out_s < 1.4, await direct.get("n"))


async def test_rules_match_the_first_argument(proxy, through, direct):
    """A rule naming a command and its first argument leaves other keys alone."""
    proxy.always(Fault.RESET, "SET", "blocked")
    await through.set("open", "1")
    with pytest.raises(redis.exceptions.ConnectionError):
        await through.set("blocked", "1")
    assert ("1", None) == (await direct.get("open"), await direct.get("blocked"))


async def test_down_cuts_idle_pooled_connections(proxy, through, direct):
    """`down` cuts the pool's idle connection and refuses new ones; `up` again serves."""
    await through.set("k", "1")
    proxy.down = True
    await asyncio.sleep(0.05)
    for _ in range(2):  # the cut connection, then a refused new one
        with pytest.raises(redis.exceptions.ConnectionError):
            await through.set("k", "2")
    proxy.down = False
    await through.set("k", "3")
    assert ("3", True) == (await direct.get("k"), proxy.stats.connections_refused >= 1)


async def test_killed_upstream_closes_the_client_connection(redis_server):
    """A Redis that goes away mid-connection looks, through the proxy, like a closed connection."""
    async with RedisFaultProxy("127.0.0.1", 1) as dead:  # nothing listens on port 1
        client = connect(dead.url, socket_timeout_s=1)
        try:
            with pytest.raises(redis.exceptions.ConnectionError):
                await client.ping()
        finally:
            await client.aclose()
        assert 1 == dead.stats.upstream_failures


def test_duplicate_is_refused():
    """Re-sending a Redis command would need reply framing: DUPLICATE is refused, as a rule and as a rate."""
    proxy = RedisFaultProxy("127.0.0.1", 6379)
    with pytest.raises(ValueError, match="cannot inject duplicate"):
        proxy.once(Fault.DUPLICATE)
    with pytest.raises(ValueError, match="cannot inject duplicate"):
        proxy.set_rates(duplicate=0.1)


def test_resp_lengths_are_checked():
    """`*N` and `$N` lines parse to N; a wrong marker, a non-number or a length past the limit is refused."""
    assert (3, 7) == (parse_resp_length(b"*3\r\n", b"*", 10), parse_resp_length(b"$7\r\n", b"$", 10))
    for line, marker in ((b"$3\r\n", b"*"), (b"*x\r\n", b"*"), (b"*11\r\n", b"*"), (b"*3", b"*")):
        with pytest.raises(FramingError):
            parse_resp_length(line, marker, 10)


async def test_inline_commands_close_the_connection(proxy):
    """A client that does not speak RESP arrays (telnet-style inline commands) is disconnected."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            assert b"" == await reader.read(100)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
