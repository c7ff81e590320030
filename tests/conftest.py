"""Shared fixtures: one real redis-server (the bundled binary) per test session.

Every test gets a flushed database, its own keyring and settings pointing at
that server. Nothing here imitates Redis.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.embedded_redis import EmbeddedRedis
from gateway.keyring import Keyring
from gateway.ledger import Ledger
from gateway.settings import Settings, load_settings
from gateway.store import Store, connect
from gateway.tokens import TokenService


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


OUR_CODE = tuple(str(Path(__file__).resolve().parent.parent / d) for d in ("gateway", "simulators", "pos_sdk", "bench"))
LINGER_S = 1.0
"""How long a task our code started may take to finish after the test's fixtures closed."""


def _ours(task: asyncio.Task) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and code.co_filename.startswith(OUR_CODE)


@pytest.fixture(autouse=True)
async def no_task_left_running():
    """A test whose gateway (or simulator) is not closed fails here, not in a later test its background
    loops would disturb: after the test and its fixtures, no task of our code it started may still run."""
    before = set(asyncio.all_tasks())
    yield
    left = [t for t in asyncio.all_tasks() - before if _ours(t) and not t.done()]
    if left:
        await asyncio.wait(left, timeout=LINGER_S)
    left = [t for t in left if not t.done()]
    assert not left, "still running after the test: " + ", ".join(sorted(t.get_coro().__qualname__ for t in left))


@pytest.fixture
def settings(redis_server: EmbeddedRedis, tmp_path: Path) -> Settings:
    return load_settings(redis_url=redis_server.url, keyring_path=str(tmp_path / "keyring.json"), data_dir=str(tmp_path / "redis"))


@pytest.fixture
async def store(redis_server: EmbeddedRedis):
    store = Store(connect(redis_server.url, socket_timeout_s=5, max_connections=512))
    await store.redis.flushall()
    await store.load_scripts()
    yield store
    await store.close()


@pytest.fixture
def keyring(settings: Settings) -> Keyring:
    return Keyring.load(settings.keyring_path)


@pytest.fixture
def ledger(store: Store) -> Ledger:
    return Ledger(store)


@pytest.fixture
def tokens(store: Store, ledger: Ledger, keyring: Keyring, settings: Settings) -> TokenService:
    return TokenService(store, ledger, keyring, settings)
