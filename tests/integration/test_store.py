"""The store's script calls against a real Redis: the multiplexed EVALSHA path behaves as redis-py's."""

from __future__ import annotations

import asyncio

import pytest
import redis

from gateway import keyspace
from gateway.ledger import Ledger
from gateway.store import Store, connect

MEMBER = keyspace.new_member_id(7, "00000000beef")


def store_url(store: Store) -> str:
    kwargs = store.redis.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}"


async def test_a_script_redis_lost_is_loaded_and_run_once(store: Store, ledger: Ledger):
    """After SCRIPT FLUSH (a restart or failover of Redis 7+), the next call loads the script and runs it, once."""
    await ledger.open_wallet(MEMBER, "HMP")
    await store.redis.script_flush()
    movement = await ledger.credit(MEMBER, 1_000, "affiliate:hana-card", "after-flush", "HMP")
    assert (True, 1_000, 1) == (movement.applied, (await ledger.balance(MEMBER)).available,
                                await store.redis.xlen(keyspace.journal_key(7)))


async def test_loading_the_scripts_sends_only_the_missing_ones(store: Store):
    """load_scripts asks which scripts Redis lacks and loads those: all after SCRIPT FLUSH, none when all are there."""
    await store.redis.script_flush()
    await store.load_scripts()
    loaded = await store.scripts_loaded()
    await store.redis.config_resetstat()
    await store.load_scripts()
    stats = await store.redis.info("commandstats")
    assert (True, 1) == (loaded, stats["cmdstat_script"]["calls"])  # the one SCRIPT EXISTS


@pytest.mark.single_redis("reads the single-server client's connection pool")
async def test_an_error_reply_leaves_the_connection_usable(store: Store):
    """A script's error reply is raised as redis-py raises it, and the connection answers the next call."""
    lonely = Store(connect(store_url(store), socket_timeout_s=5,
                           max_connections=1))
    try:
        with pytest.raises(redis.exceptions.ResponseError):
            await lonely.run("credit", ["not", "enough", "keys"], [])
        assert await lonely.run("device_status", [keyspace.device_key(7_000_001), "a", "b"], ["unlock", MEMBER, 0, 7_000_001]) \
            == ["unknown_slot"]
    finally:
        await lonely.close()


@pytest.mark.single_redis("blocks the one server with DEBUG SLEEP and reads its client's connection pool")
async def test_a_timeout_closes_the_connection(redis_server, store: Store):
    """A reply slower than the socket timeout: TimeoutError, the connection is dropped (its late reply
    can never be read as another call's)."""
    slow = Store(connect(redis_server.url, socket_timeout_s=0.2))
    try:
        await slow.load_scripts()
        busy = asyncio.create_task(store.redis.execute_command("DEBUG", "SLEEP", "0.5"))
        await asyncio.sleep(0.05)
        with pytest.raises(redis.exceptions.TimeoutError):
            await slow.run("credit", [keyspace.member_key(MEMBER)] * 6, [])
        await busy
        assert ["unknown_slot"] == await slow.run("device_status", [keyspace.device_key(7_000_001), "a", "b"],
                                                  ["unlock", MEMBER, 0, 7_000_001])
    finally:
        await slow.close()
