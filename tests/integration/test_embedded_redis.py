"""The bundled redis-server: durability across SIGKILL, clear start-up errors, one owner per data dir."""

from __future__ import annotations

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
