"""A real Redis Cluster for the session: 3 primaries, 3 replicas, the bundled binaries.

Every test module here is marked `cluster` (`pytest -m cluster` runs them
alone); they also run in `make test`. Each test gets a flushed cluster with
every script loaded; a test that kills a node revives it before it ends, so
the next test finds the cluster whole.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.embedded_cluster import EmbeddedCluster
from gateway.settings import Settings, load_settings
from gateway.store import Store


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with EmbeddedCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture
def cluster_settings(cluster: EmbeddedCluster, tmp_path: Path) -> Settings:
    """Settings that name the cluster (and nothing from the environment)."""
    return load_settings(env={}, redis_cluster_nodes=list(cluster.startup_nodes),
                         keyring_path=str(tmp_path / "keyring.json"), data_dir=str(tmp_path / "redis"))


@pytest.fixture
async def cluster_store(cluster: EmbeddedCluster, cluster_settings: Settings):
    cluster.wait_healthy()
    store = Store.from_settings(cluster_settings, "", max_connections=32)
    await store.redis.flushall()
    await store.load_scripts()
    yield store
    await store.close()
