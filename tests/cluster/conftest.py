"""Tests about the cluster itself: the embedded 3+3 Redis Cluster (tests/conftest.py `cluster`,
one per session, shared with `--redis=cluster`), replication and failover.

Every test module here is marked `cluster` (`pytest -m cluster` runs them
alone); they run in `make test`'s first pass, whatever `--redis` says, since
each asks for the cluster by name. The same merchant-API files that run on one
Redis also run on the cluster in `make test`'s second pass (`--redis=cluster`,
tests/conftest.py); this folder holds what only a cluster has: sales split
into their steps across two primaries, failures between the steps, a primary
killed mid-traffic, WAIT on the slot's primary.

Each test gets a flushed cluster with every script loaded; a test that kills a
node revives it before it ends, so the next test finds the cluster whole.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.embedded_cluster import EmbeddedCluster
from gateway.settings import Settings, load_settings
from gateway.store import Store


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
