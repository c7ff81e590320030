"""The store on a real 3+3 Redis Cluster: scripts on every primary, one slot per script,
WAIT on the slot's primary, and failover."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
import redis
from redis.exceptions import RedisClusterException

from gateway import keyspace
from gateway.embedded_cluster import EmbeddedCluster
from gateway.ledger import Ledger
from gateway.settings import Settings
from gateway.store import DurabilityTimeout, Store, script_names

pytestmark = pytest.mark.cluster

UNIT = "HMP"
SOURCE = "affiliate:hana-card"
FAILOVER_RETRY_S = 20.0  # a promotion takes about two node timeouts (1 s each); room for a slow machine


async def members_on_every_primary(store: Store) -> dict[int, str]:
    """One member id per primary (by port), from partitions whose tags hash to different nodes."""
    await store.redis.initialize()
    found: dict[int, str] = {}
    for partition in range(keyspace.PARTITIONS):
        member_id = keyspace.new_member_id(partition, "00000000c1a5")
        node = store.redis.get_node_from_key(keyspace.member_key(member_id))
        found.setdefault(node.port, member_id)
        if len(found) == 3:
            return found
    raise AssertionError(f"1000 partition tags reached only {sorted(found)}")


def acknowledged_store(settings: Settings, replicas: int, timeout_ms: int = 100) -> Store:
    """A store that WAITs for `replicas` after every movement (a second client of the same cluster)."""
    settings = dataclasses.replace(settings, redis_wait_replicas=replicas, redis_wait_timeout_ms=timeout_ms)
    return Store.from_settings(settings, "", max_connections=8)


def wait_calls(cluster: EmbeddedCluster, port: int) -> int:
    with cluster.client(cluster.node_by_port(port)) as client:
        return int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


def test_cluster_has_three_primaries_each_with_one_replica(cluster: EmbeddedCluster):
    """The embedded cluster is 3 primaries, each with exactly one replica of its own."""
    primaries = cluster.primaries()
    replicas = [cluster.replicas_of(primary) for primary in primaries]
    assert (3, [1, 1, 1]) == (len(primaries), [len(r) for r in replicas])
    assert 6 == len({node.port for node in primaries} | {r[0].port for r in replicas})


async def test_store_sees_the_cluster_and_loads_scripts_on_every_primary(cluster: EmbeddedCluster, cluster_store: Store):
    """Through the cluster settings the store finds 3 primaries and 3 replicas, and every primary holds every script."""
    assert (3, 3) == (len(cluster_store.redis.get_primaries()), len(cluster_store.redis.get_replicas()))
    shas = [cluster_store._scripts[name].sha for name in script_names()]
    for primary in cluster.primaries():
        with cluster.client(primary) as client:
            assert all(client.script_exists(*shas)), f"a script is missing on the primary on port {primary.port}"
    assert await cluster_store.scripts_loaded()


async def test_member_scope_credit_runs_on_every_primary(cluster: EmbeddedCluster, cluster_store: Store):
    """Members of different partitions land on all three primaries, and a credit works on each."""
    ledger = Ledger(cluster_store)
    members = await members_on_every_primary(cluster_store)
    assert {p.port for p in cluster.primaries()} == set(members)
    for port, member_id in members.items():
        await ledger.open_wallet(member_id, UNIT)
        movement = await ledger.credit(member_id, 1200 + port % 7, SOURCE, f"e-{member_id}", UNIT)
        assert (True, 1200 + port % 7) == (movement.applied, movement.available)
        with cluster.client(cluster.node_by_port(port)) as client:
            # The node's own slot number for the key is the client's, and the wallet is on that node.
            assert cluster_store.redis.keyslot(keyspace.member_key(member_id)) == client.execute_command(
                "CLUSTER", "KEYSLOT", keyspace.member_key(member_id))
            assert str(1200 + port % 7) == client.hget(keyspace.member_key(member_id), "available")
            assert 1 == client.xlen(keyspace.journal_key(keyspace.partition_of_member(member_id)))


async def test_a_script_sent_to_a_node_that_no_longer_owns_its_slot_is_sent_again_to_the_owner(
        cluster: EmbeddedCluster, cluster_store: Store):
    """The store's slot map says another primary (as after a failover or a resharding it did not see):
    that node answers MOVED, ran nothing, and the credit is sent to the slot's owner, applied once."""
    ledger = Ledger(cluster_store)
    members = await members_on_every_primary(cluster_store)
    (port, member_id), (wrong_port, _) = list(members.items())[:2]
    await ledger.open_wallet(member_id, UNIT)
    manager = cluster_store.redis.nodes_manager
    slot = cluster_store.redis.keyslot(keyspace.member_key(member_id))
    wrong = next(n for n in manager.nodes_cache.values() if n.port == wrong_port)
    manager.slots_cache[slot] = [wrong]  # what a stale map says
    movement = await ledger.credit(member_id, 500, SOURCE, "e-moved", UNIT)
    assert (True, 500) == (movement.applied, movement.available)
    assert port == manager.get_node_from_slot(slot).port  # the map was read again
    with cluster.client(cluster.node_by_port(port)) as client:
        assert 1 == client.xlen(keyspace.journal_key(keyspace.partition_of_member(member_id)))


async def test_a_script_over_two_partitions_is_refused(cluster_store: Store):
    """A script whose keys are in two hash slots is refused before it runs (why payments must be split)."""
    ledger = Ledger(cluster_store)
    members = list((await members_on_every_primary(cluster_store)).values())
    await ledger.open_wallet(members[0], UNIT)
    keys = keyspace.wallet_keys(members[0])[:-1] + [keyspace.wallet_keys(members[1])[-1]]
    with pytest.raises(RedisClusterException, match="same key slot"):
        await cluster_store.run("credit", keys, ["e1", "5", SOURCE, "credit", "{}", 1, members[0], UNIT, ""])
    assert 0 == (await ledger.balance(members[0])).available


async def test_scripts_come_back_after_the_script_cache_is_flushed(cluster: EmbeddedCluster, cluster_store: Store):
    """After SCRIPT FLUSH on every primary (a promoted replica without scripts), a credit loads its script and runs."""
    members = await members_on_every_primary(cluster_store)
    for primary in cluster.primaries():
        with cluster.client(primary) as client:
            client.script_flush()
    member_id = next(iter(members.values()))
    ledger = Ledger(cluster_store)
    await ledger.open_wallet(member_id, UNIT)
    assert 40 == (await ledger.credit(member_id, 40, SOURCE, "e1", UNIT)).available


async def test_without_the_wait_option_no_wait_is_sent(cluster: EmbeddedCluster, cluster_store: Store):
    """With redis_wait_replicas 0 a credit is the script alone: its primary counts no WAIT."""
    ledger = Ledger(cluster_store)
    port, member_id = next(iter((await members_on_every_primary(cluster_store)).items()))
    await ledger.open_wallet(member_id, UNIT)
    before = wait_calls(cluster, port)
    await ledger.credit(member_id, 10, SOURCE, "e1", UNIT)
    assert before == wait_calls(cluster, port)


async def test_wait_for_one_replica_succeeds_on_the_slots_primary(cluster: EmbeddedCluster, cluster_settings: Settings,
                                                                 cluster_store: Store):
    """WAIT 1 after a credit runs on the primary that owns the member's slot, and then its replica holds the credit."""
    store = acknowledged_store(cluster_settings, replicas=1, timeout_ms=1000)
    try:
        ledger = Ledger(store)
        for port, member_id in (await members_on_every_primary(store)).items():
            await ledger.open_wallet(member_id, UNIT)
            before = wait_calls(cluster, port)
            movement = await ledger.credit(member_id, 300, SOURCE, "e1", UNIT)
            assert (True, 300, before + 1) == (movement.applied, movement.available, wait_calls(cluster, port))
            replica = cluster.replicas_of(cluster.node_by_port(port))[0]
            with redis.Redis(port=replica.port, decode_responses=True, single_connection_client=True,
                             socket_timeout=1) as client:
                client.execute_command("READONLY")
                assert "300" == client.hget(keyspace.member_key(member_id), "available")
    finally:
        await store.close()


async def test_waiting_for_more_replicas_than_exist_raises_durability_timeout(cluster_settings: Settings,
                                                                              cluster_store: Store):
    """Asking for 2 replicas of a primary that has 1 raises DurabilityTimeout, with the credit applied;
    a retry of the same entry finds it applied and waits again."""
    store = acknowledged_store(cluster_settings, replicas=2, timeout_ms=50)
    try:
        ledger = Ledger(store)
        member_id = next(iter((await members_on_every_primary(store)).values()))
        await ledger.open_wallet(member_id, UNIT)
        with pytest.raises(DurabilityTimeout) as first:
            await ledger.credit(member_id, 500, SOURCE, "e1", UNIT)
        assert ("credit", 2, 1, "ok") == (first.value.script, first.value.replicas_wanted,
                                          first.value.replicas_acknowledged, first.value.reply[0])
        assert 500 == (await ledger.balance(member_id)).available
        with pytest.raises(DurabilityTimeout) as again:
            await ledger.credit(member_id, 500, SOURCE, "e1", UNIT)
        assert ("duplicate", 500) == (again.value.reply[0], (await ledger.balance(member_id)).available)
    finally:
        await store.close()


async def test_a_sleeping_replica_makes_the_wait_time_out(cluster: EmbeddedCluster, cluster_settings: Settings,
                                                          cluster_store: Store):
    """While the only replica sleeps (DEBUG SLEEP), WAIT 1 times out with 0 acknowledgements; once it is back,
    the retry of the same entry is acknowledged."""
    store = acknowledged_store(cluster_settings, replicas=1, timeout_ms=100)
    try:
        ledger = Ledger(store)
        port, member_id = next(iter((await members_on_every_primary(store)).items()))
        await ledger.open_wallet(member_id, UNIT)
        replica = cluster.replicas_of(cluster.node_by_port(port))[0]

        def sleep_replica() -> None:
            with redis.Redis(port=replica.port, socket_timeout=5) as client:
                client.execute_command("DEBUG", "SLEEP", "0.8")

        sleeping = asyncio.get_running_loop().run_in_executor(None, sleep_replica)
        await asyncio.sleep(0.25)  # the replica is inside DEBUG SLEEP now (room for a busy machine)
        with pytest.raises(DurabilityTimeout) as timed_out:
            await ledger.credit(member_id, 70, SOURCE, "e1", UNIT)
        assert (0, "ok") == (timed_out.value.replicas_acknowledged, timed_out.value.reply[0])
        await sleeping
        movement = await ledger.credit(member_id, 70, SOURCE, "e1", UNIT)
        assert (False, 70) == (movement.applied, movement.available)
    finally:
        await store.close()


async def test_after_a_primary_dies_its_replica_serves_the_acknowledged_credit(
        cluster: EmbeddedCluster, cluster_settings: Settings, cluster_store: Store):
    """Kill the primary of a member's slot: its replica is promoted, the credit WAIT-acknowledged before the
    kill is there, and once the client has re-read the slot map the store keeps moving points."""
    store = acknowledged_store(cluster_settings, replicas=1, timeout_ms=1000)
    plain = Store.from_settings(cluster_settings, "", max_connections=8)
    killed = None
    try:
        ledger = Ledger(store)
        port, member_id = next(iter((await members_on_every_primary(store)).items()))
        await ledger.open_wallet(member_id, UNIT)
        await ledger.credit(member_id, 1000, SOURCE, "before", UNIT)
        plain_ledger = Ledger(plain)
        assert 1000 == (await plain_ledger.balance(member_id)).available  # its slot map names the old primary
        killed = cluster.node_by_port(port)
        promoted = cluster.kill_primary(killed)

        # The first command meets the dead primary and fails (the store never retries); a caller retries
        # with the same entry id until the client has read the new slot map.
        deadline, errors = time.monotonic() + FAILOVER_RETRY_S, []
        while True:
            try:
                movement = await plain_ledger.credit(member_id, 1, SOURCE, "after", UNIT)
                break
            except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterDownError) as e:
                errors.append(type(e).__name__)
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        assert (True, 1001) == (movement.applied, movement.available)
        assert promoted.port == plain.redis.get_node_from_key(keyspace.member_key(member_id)).port
        assert errors, "the dead primary should have failed at least one command"
    finally:
        await store.close()
        await plain.close()
        if killed is not None:
            cluster.revive(killed)
