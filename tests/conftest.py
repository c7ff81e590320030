"""Shared fixtures: a real Redis per test session, one server or a cluster.

Our network's data lives where `--redis` says (`home_redis`):

- `--redis=single` (the default): one redis-server, the bundled binary.
- `--redis=cluster`: an embedded Redis Cluster of 3 primaries with a replica
  each (`gateway/embedded_cluster.py`), so the same test files prove the same
  behaviour on a cluster. A partner network (tests/e2e/conftest.py
  `networks`) is another deployment and stays on the single server. Tests
  that need the one server itself (they restart it, SELECT another database,
  or drive the single-server composition of a script) are marked
  `single_redis("why")` and skipped on the cluster with that reason.

Every test gets a flushed database (every primary's, on the cluster), its
own keyring and settings pointing at our Redis. Nothing here imitates Redis.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from gateway.embedded_cluster import EmbeddedCluster
from gateway.embedded_redis import EmbeddedRedis
from gateway.keyring import Keyring
from gateway.ledger import Ledger
from gateway.settings import Settings, load_settings
from gateway.store import ClusterAccess, Store, connect
from gateway.tokens import TokenService

REDIS_CHOICES = ("single", "cluster")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--redis", choices=REDIS_CHOICES, default="single",
                     help="where the shared fixtures keep our network's data: one embedded redis-server "
                          "(single, the default) or an embedded 3-primary, 3-replica Redis Cluster (cluster)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the cluster, a test that needs the one server is skipped with its marker's reason."""
    if config.getoption("--redis") != "cluster":
        return
    for item in items:
        marker = item.get_closest_marker("single_redis")
        if marker is not None:
            why = marker.args[0] if marker.args else "needs one Redis server"
            item.add_marker(pytest.mark.skip(reason=f"single Redis only: {why}"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """An embedded 3+3 Redis Cluster, started when a test first asks for it."""
    with EmbeddedCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@dataclass(frozen=True, slots=True)
class HomeRedis:
    """Where our network keeps its data in this run: one server's URL, or a cluster's startup nodes."""

    url: str
    cluster_nodes: tuple[str, ...] = ()

    @property
    def settings(self) -> dict[str, Any]:
        """The keyword arguments of `load_settings` that name it."""
        if self.cluster_nodes:
            return {"redis_cluster_nodes": list(self.cluster_nodes)}
        return {"redis_url": self.url}

    @property
    def environment(self) -> dict[str, str]:
        """The environment variables that name it (for the `gateway` command)."""
        if self.cluster_nodes:
            return {"POINTGATE_REDIS_CLUSTER_NODES": ",".join(self.cluster_nodes)}
        return {"REDIS_URL": self.url}

    def client(self, max_connections: int = 64) -> aioredis.Redis | RedisCluster:
        """A client of it (on a cluster, `max_connections` per node); the caller closes it."""
        cluster = ClusterAccess(self.cluster_nodes) if self.cluster_nodes else None
        return connect(self.url, socket_timeout_s=5, max_connections=max_connections, cluster=cluster)


@pytest.fixture(scope="session")
def home_redis(request: pytest.FixtureRequest) -> HomeRedis:
    if request.config.getoption("--redis") == "cluster":
        return HomeRedis("", request.getfixturevalue("cluster").startup_nodes)
    return HomeRedis(request.getfixturevalue("redis_server").url)


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
def settings(home_redis: HomeRedis, tmp_path: Path) -> Settings:
    return load_settings(**home_redis.settings, keyring_path=str(tmp_path / "keyring.json"), data_dir=str(tmp_path / "redis"))


@pytest.fixture
async def store(home_redis: HomeRedis):
    store = Store(home_redis.client(max_connections=512))
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
