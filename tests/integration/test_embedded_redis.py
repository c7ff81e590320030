"""The bundled redis-server: durability across SIGKILL, clear start-up errors, one owner per data dir."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from gateway import keyspace
from gateway.audit import run_audit
from gateway.embedded_redis import EmbeddedRedis, EmbeddedRedisError, attach_or_start
from gateway.ledger import Ledger
from gateway.store import Store, connect

MEMBER = keyspace.new_member_id(7, "0000000000aa")


async def test_acknowledged_debit_survives_sigkill(tmp_path: Path):
    """A debit acknowledged just before Redis is SIGKILLed is still there after restart."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        store = Store(connect(server.url, socket_timeout_s=5))
        ledger = Ledger(store)
        await ledger.open_wallet(MEMBER, "HMP")
        await ledger.credit(MEMBER, 10_000, "affiliate:hana-card", "c1", "HMP")
        acknowledged = await ledger.debit(MEMBER, 2_500, "merchant:gs25", "d1", "HMP")
        await store.close()
        server.kill()

        server.start()
        store = Store(connect(server.url, socket_timeout_s=5))
        await store.load_scripts()
        balance = await Ledger(store).balance(MEMBER)
        report = await run_audit(store)
        await store.close()
    finally:
        server.stop()
    assert (7_500, 7_500) == (acknowledged.available, balance.available)
    assert report.clean and 2 == report.entries


async def test_restarts_on_its_port_after_sigkill_with_clients_connected(tmp_path: Path):
    """Killed while clients are connected, the server starts again at once on the same port.

    Its side of those connections sits in TIME_WAIT for a minute, which must not
    count as the port being in use.
    """
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        store = Store(connect(server.url, socket_timeout_s=5))
        ledger = Ledger(store)
        await ledger.open_wallet(MEMBER, "HMP")
        await ledger.credit(MEMBER, 10_000, "affiliate:hana-card", "c1", "HMP")
        port = server.port
        server.kill()  # the client's connection is still open
        await store.close()

        server.start()
        store = Store(connect(server.url, socket_timeout_s=5))
        balance = await Ledger(store).balance(MEMBER)
        await store.close()
    finally:
        server.stop()
    assert (port, 10_000) == (server.port, balance.available)


async def test_pooled_connections_closed_by_a_restart_are_replaced_before_use(tmp_path: Path):
    """After Redis restarts, the store's idle pooled connections are reconnected, so no command fails.

    redis-py's maintenance notifications (on by default) skip that check; the store turns them off.
    """
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        client = connect(server.url, socket_timeout_s=5)
        await asyncio.gather(*(client.ping() for _ in range(5)))  # five connections in the pool
        server.kill()
        server.start()
        await asyncio.sleep(0.1)  # the dead server's FINs have arrived
        results = await asyncio.gather(*(client.incr("n") for _ in range(8)), return_exceptions=True)
        stored = await client.get("n")
        await client.aclose()
    finally:
        server.stop()
    assert ([], "8") == ([r for r in results if isinstance(r, Exception)], stored)


def test_port_in_use_is_a_clear_error(tmp_path: Path):
    """Asking for a port something else holds fails at once, naming the port."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(EmbeddedRedisError, match=f"port {port} .* already in use"):
            EmbeddedRedis(tmp_path / "redis", port=port).start()


def test_unusable_data_dir_is_a_clear_error(tmp_path: Path):
    """A data dir that cannot be created fails with a message naming it."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(EmbeddedRedisError, match="cannot create the Redis data dir"):
        EmbeddedRedis(blocker / "redis").start()


def test_second_process_attaches_instead_of_starting(tmp_path: Path):
    """Two starters on one data dir share one server, so two servers never write one AOF."""
    url, owner = attach_or_start(tmp_path / "redis")
    try:
        again_url, again = attach_or_start(tmp_path / "redis")
        assert (url, None) == (again_url, again)
    finally:
        assert owner is not None
        owner.stop()
    assert not owner.running


def test_aof_always_is_configured(redis_server: EmbeddedRedis):
    """The bundled server runs with appendonly yes and appendfsync always."""
    import redis

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert ("yes", "always") == (client.config_get("appendonly")["appendonly"], client.config_get("appendfsync")["appendfsync"])
    finally:
        client.close()
