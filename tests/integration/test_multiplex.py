"""The scripts' shared connection (gateway/multiplex.py) against a real Redis: replies matched to
their calls in order under concurrency, errors, cancellations, lost connections and timeouts."""

from __future__ import annotations

import asyncio

import pytest
import redis

from gateway.multiplex import Address, Multiplexer
from gateway.store import connect


def address_of(redis_server, db: int = 0) -> Address:
    host, port = redis_server.url.removeprefix("redis://").split("/")[0].split(":")
    return Address(host=host, port=int(port), db=db)


@pytest.fixture
async def multiplexer(redis_server, store):
    shared = Multiplexer(address_of(redis_server), timeout_s=2)
    yield shared
    await shared.close()


async def test_concurrent_calls_each_get_their_own_reply(multiplexer: Multiplexer):
    replies = await asyncio.gather(*(multiplexer.call("ECHO", f"call-{i}") for i in range(500)))
    assert replies == [f"call-{i}" for i in range(500)]


async def test_calls_in_flight_together_share_one_connection(multiplexer: Multiplexer, store):
    clients_before = len(await store.redis.client_list())
    await asyncio.gather(*(multiplexer.call("INCR", "counter") for _ in range(200)))
    assert ("200", clients_before + 1) == (await store.redis.get("counter"), len(await store.redis.client_list()))


async def test_an_error_reply_is_raised_as_redis_py_raises_it_and_the_next_call_works(multiplexer: Multiplexer):
    with pytest.raises(redis.exceptions.NoScriptError):
        await multiplexer.call("EVALSHA", "0" * 40, 0)
    with pytest.raises(redis.exceptions.ResponseError, match="wrong number of arguments"):
        await multiplexer.call("GET")
    assert "PONG" == await multiplexer.call("PING")


async def test_a_cancelled_call_keeps_its_place_and_later_replies_stay_in_step(multiplexer: Multiplexer, store):
    await multiplexer.call("PING")  # connected, so the next call is queued at once
    slow = asyncio.ensure_future(multiplexer.call("EVAL", "redis.call('SET', 'k', 'ran') return 'slow'", 0))
    fast = asyncio.ensure_future(multiplexer.call("ECHO", "fast"))
    await asyncio.sleep(0)
    slow.cancel()
    assert "fast" == await fast
    assert "after" == await multiplexer.call("ECHO", "after")
    assert "ran" == await store.redis.get("k")  # the cancelled call was sent; cancelling does not unsend it


async def test_a_lost_connection_fails_the_calls_waiting_and_the_next_call_reconnects(multiplexer: Multiplexer, store):
    await multiplexer.call("CLIENT", "SETNAME", "doomed")
    waiting = asyncio.ensure_future(multiplexer.call("BLPOP", "never", 0))
    await asyncio.sleep(0.05)
    await store.redis.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
    with pytest.raises(redis.exceptions.ConnectionError):
        await waiting
    assert "PONG" == await multiplexer.call("PING")


async def test_a_reply_slower_than_the_timeout_fails_and_is_never_read_as_another_calls(redis_server, store):
    impatient = Multiplexer(address_of(redis_server), timeout_s=0.2)
    try:
        await impatient.call("PING")
        slow = asyncio.ensure_future(impatient.call("EVAL", "local t = redis.call('TIME') "
                                                            "while true do local n = redis.call('TIME') "
                                                            "if (n[1] - t[1]) * 1e6 + n[2] - t[2] > 400000 then break end end "
                                                            "return 'late'", 0))
        with pytest.raises(redis.exceptions.TimeoutError):
            await slow
        await store.redis.ping()  # answered once the script is done, its late reply on the closed connection
        assert "next" == await impatient.call("ECHO", "next")
    finally:
        await impatient.close()


async def test_a_database_other_than_0_is_selected_on_connect(redis_server, store):
    in_db_2 = Multiplexer(address_of(redis_server, db=2), timeout_s=2)
    other = connect(redis_server.url[:-1] + "2", socket_timeout_s=2)
    try:
        await in_db_2.call("SET", "where", "db2")
        assert ("db2", None) == (await other.get("where"), await store.redis.get("where"))
    finally:
        await in_db_2.close()
        await other.flushdb()
        await other.aclose()


async def test_no_server_is_a_connection_error(unused_tcp_port: int):
    nowhere = Multiplexer(Address(host="127.0.0.1", port=unused_tcp_port), timeout_s=1)
    with pytest.raises(redis.exceptions.ConnectionError, match="cannot connect"):
        await nowhere.call("PING")


async def test_after_close_a_call_opens_a_new_connection(multiplexer: Multiplexer):
    await multiplexer.call("PING")
    await multiplexer.close()
    assert "PONG" == await multiplexer.call("PING")
