"""The Redis store: one client, the Lua scripts, and how they are called.

Scripts live as `.lua` files in `gateway/lua/`; each is loaded with the
libraries `lib.lua` and `lib_pay.lua` (the steps of every payment verb)
prepended, so shared checks are written once and every script is still one
atomic step. Calls go through EVALSHA (redis-py reloads a script on
NOSCRIPT, which is safe: the script did not run).

Client-side retries are off. A retry after a lost reply could run a
money-moving script a second time; our scripts are idempotent by entry id,
but the caller (or the terminal, through its idempotency key) is the one who
decides to retry, so the store never does it behind its back. (A re-run sale
would also meet its own nonce and answer `nonce_replayed`: a definite refusal
of a sale that was approved. tests/e2e/test_redis_link.py holds this.)

Redis-py's maintenance notifications (Redis Enterprise and Cloud failover
hints, on by default since redis-py 7) are off: with them on, the pool hands
out a pooled connection without checking whether the server closed it, so
after every Redis restart each idle connection failed one command (a burst
of 503s). With them off a closed connection is reconnected before anything
is sent on it, which cannot run a command twice.

On a Redis Cluster (the `redis_cluster_nodes` setting) the client is a
`redis.asyncio.cluster.RedisCluster` and the Store's interface is the same;
what changes:

- Retries: still none. A connection error, a timeout or CLUSTERDOWN is raised
  at once and never re-sent. MOVED and ASK redirections are followed: a node
  that answers MOVED did not run the command, so following it cannot run a
  script twice. After a connection error the client reads the slot map again
  before its next command; that is how it finds a replica promoted after its
  primary died (the command that met the dead primary has failed, its caller
  retries with its idempotency key).
- Scripts: SCRIPT LOAD and SCRIPT EXISTS go to every primary. A replica
  promoted later may not hold a script; EVALSHA then answers NOSCRIPT, and
  the script is loaded on every primary and sent again (NOSCRIPT ran nothing).
- Keys: every key one script touches must be in one hash slot. redis-py
  refuses a script whose keys span slots before sending it, and a node would
  answer CROSSSLOT. The member-scope scripts (credit, debit, hold,
  hold_finish, expire, ...) carry one partition tag and run on a cluster.
  Every payment verb touches the merchant scope and the member scope: a sale
  (`pay`), a reversal (`reversal`), a cancel (`cancel`), a refund (`refund`),
  and a partner member's sale (`outbound_claim`, then `outbound_finish` once
  the partner answered) and its cancel or refund (`outbound_adjust`). On a
  cluster `run` sends each as its steps (SPLITS: claim and finish in the
  merchant's slot, move in the member's; DESIGN.md 6a, gateway/lua/lib_pay.lua,
  docs/payment-steps.md), one call per step instead of one, with the
  caller's KEYS and ARGV sliced by the declared layout. The caller does not
  know which it got: on one Redis `pay.lua`, `cancel.lua` and the others call
  the same steps in one script. Between two steps a failure leaves a claim
  (or a moved payment) that the next attempt of the request (same
  idempotency key) completes.
  Operations of two scopes that are not on the payment path are written as
  steps by their callers and run as steps everywhere (an affiliate's
  earning: `earn_claim`, `earn_move`, `idem_finish`; a coupon issue); what
  spans slots without needing one step (a merchant and the merchant index,
  a cash-out and the pending set) is written in an order a crash between
  the writes cannot harm (each caller's comments say why).
  `Store.redis` is the cluster client: a caller's own multi-key commands
  must keep to one slot too.
- Scripts go to the primary of their keys' slot on one multiplexed connection
  per primary (ClusterRoutes: the slot map is redis-py's), not through
  redis-py's cluster command path, which cost more CPU than the rest of a
  sale; with TLS they go through redis-py.
- Database 0 only, TCP only (no unix sockets); TLS and the ACL user come
  from settings, not from a URL.

Durability (the `redis_wait_replicas` setting, off by default): Redis answers
a write once its primary has it (and, with `appendfsync always`, once it is on
the primary's disk), before any replica has it. With `wait_replicas` = N the
store sends every script that moves points (MONEY_SCRIPTS) in one pipeline
with `WAIT N timeout` on the same connection (WAIT counts the replicas that
acknowledged the writes of the connection it is sent on; on a cluster, the
primary that owns the script's slot), still one round trip. Fewer than N
acknowledgements raise DurabilityTimeout: the movement IS applied on the
primary and may or may not survive a failover; a retry with the same entry id
or idempotency key finds it applied and waits again. Acknowledged as well
(CLAIM_STEPS), before the move runs: on a cluster a sale's and a reversal's
claim step, everywhere an affiliate's earning's claim, and both steps of a
partner member's sale before the partner is asked (and its one script on one
Redis). Finishes are not (a lost finish is redone by the retry), nor are the
claims of cancels and refunds (their move records itself in the member scope
under the request's name). Off, nothing changes: the script is one EVALSHA.
WAIT does not make Redis strongly consistent (docs/deployment.md).

Exceptions (beside redis-py's own):

    redis.exceptions.RedisError
    └── DurabilityTimeout   applied on the primary; fewer replicas acknowledged it than asked
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Sequence

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (AskError, ClusterDownError, MovedError, NoScriptError, ReadOnlyError, RedisClusterException,
                              RedisError, SlotNotCoveredError, TryAgainError)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.multiplex import Address, Multiplexer, Shared

if TYPE_CHECKING:
    from gateway.settings import Settings

try:
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # redis-py before 7 has no maintenance notifications, nor their pool behaviour
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

LIBRARIES = ("lib", "lib_pay")
"""Prepended to every script, in this order: the shared checks, then the payment steps."""
MONEY_SCRIPTS = frozenset({
    "cancel", "cancel_move", "credit", "debit", "earn_move", "expire", "hold", "hold_finish",
    "outbound_adjust", "outbound_adjust_move", "outbound_finish", "outbound_finish_payment",
    "pay", "pay_move", "refund", "refund_move", "reversal", "reversal_move", "settle",
})
"""The scripts that append a journal entry (move points); with WAIT on, each is acknowledged by replicas."""
CLAIM_STEPS = frozenset({"earn_claim", "pay_claim", "reversal_claim", "outbound_claim", "outbound_claim_request",
                         "outbound_claim_payment"})
"""The steps a move relies on: with WAIT on they are acknowledged too, before the move runs, so a
failover of the merchant's (or affiliate's) primary cannot lose the claim of a payment or earning
that moved (its retry would claim a second id and move the points again). A partner member's sale is asked of the
partner under the payment id its claim holds, and found again by its pending record: losing either
after the partner debited its member would have the retry ask again under a new id. The claims of
cancels and refunds are not among them: their moves record themselves under the request's name in
the payment's scope, so a retry that lost the claim gets the recorded answer, not a second movement."""
CLUSTER_SENDS_MAX = 2
"""Sends of one script on a cluster: the first, and one after MOVED or READONLY (neither ran it)."""
SOCKET_TIMEOUT_DEFAULT_S = 5.0
"""The reply timeout of the scripts' shared connection when the client was made without one."""
ACKNOWLEDGED_ATTEMPTS_MAX = 3
"""Sends of one acknowledged script: the first, one after NOSCRIPT, one after MOVED (neither ran it)."""


class DurabilityTimeout(RedisError):
    """A script that moves points was applied on the primary, but fewer replicas than asked
    acknowledged it within the WAIT timeout. Retryable: a retry with the same entry id or
    idempotency key finds it applied and waits for the replicas again."""

    code = "durability_timeout"

    def __init__(self, script: str, replicas_wanted: int, replicas_acknowledged: int, timeout_ms: int,
                 reply: Any) -> None:
        super().__init__(f"{script} was applied on the primary, but {replicas_acknowledged} of {replicas_wanted} "
                         f"replica(s) acknowledged it within {timeout_ms} ms")
        self.script = script
        self.replicas_wanted = replicas_wanted
        self.replicas_acknowledged = replicas_acknowledged
        self.reply = reply


def script_names() -> tuple[str, ...]:
    """Every `.lua` file in `gateway/lua/` except the library is a script."""
    lua = resources.files("gateway") / "lua"
    return tuple(sorted(p.name[:-4] for p in lua.iterdir() if p.name.endswith(".lua") and p.name[:-4] not in LIBRARIES))


@dataclass(frozen=True, slots=True)
class ClusterAccess:
    """How to reach a Redis Cluster: startup nodes (`host:port`), ACL user, password, TLS."""

    nodes: tuple[str, ...]
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    tls: bool = False
    tls_ca_path: str = ""

    @classmethod
    def from_settings(cls, settings: "Settings") -> "ClusterAccess | None":
        """The cluster the settings name, or None for one server (redis_url or the bundled one)."""
        if not settings.redis_cluster_nodes:
            return None
        return cls(settings.redis_cluster_nodes, settings.redis_username, settings.redis_password,
                   settings.redis_tls, settings.redis_tls_ca_path)


def connect(url: str, socket_timeout_s: float, max_connections: int = 64,
            cluster: ClusterAccess | None = None) -> aioredis.Redis | RedisCluster:
    """A client for `url`, or for `cluster` when given, with explicit timeouts, no automatic
    retries, and closed pooled connections replaced before use (see the module docstring).
    On a cluster `max_connections` is per node."""
    extra: dict[str, Any] = {}
    if MaintNotificationsConfig is not None:
        extra["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    if cluster is not None:
        return _connect_cluster(cluster, socket_timeout_s, max_connections, extra)
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        max_connections=max_connections,
        **extra,
    )


def _connect_cluster(cluster: ClusterAccess, socket_timeout_s: float, max_connections: int,
                     extra: dict[str, Any]) -> RedisCluster:
    nodes = []
    for node in cluster.nodes:
        host, port = node.rsplit(":", 1)
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": cluster.tls_ca_path or None} if cluster.tls else {}
    return RedisCluster(
        startup_nodes=nodes,
        decode_responses=True,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        # Zero retries: a command that met a connection error or a timeout may have run, so it
        # is never sent again here (redirections, which ran nothing, are still followed).
        retry=Retry(NoBackoff(), 0),
        # Serve the slots whose primaries answer while one shard is down, as the nodes do
        # (cluster-require-full-coverage no in docs/deployment.md).
        require_full_coverage=False,
        max_connections=max_connections,
        username=cluster.username or None,
        password=cluster.password or None,
        **tls,
        **extra,
    )


def script_source(name: str) -> str:
    lua = resources.files("gateway") / "lua"
    return "\n".join((lua / f"{part}.lua").read_text() for part in (*LIBRARIES, name))


MERCHANT, MEMBER = "merchant", "member"


@dataclass(frozen=True, slots=True)
class Step:
    """One script of a split operation: the scope of KEYS it gets, and the reply status that
    hands on to the next step (any other reply is the operation's answer)."""

    script: str
    scope: str
    goes_on: str = ""


@dataclass(frozen=True, slots=True)
class Split:
    """How a script over two scopes runs on a cluster: the caller's KEYS are the merchant scope
    (the first `merchant_keys`) followed by the member scope; every step gets the caller's ARGV
    followed by the previous step's reply less its status. A step over an empty scope is skipped."""

    merchant_keys: int
    steps: tuple[Step, ...]

    def keys_of(self, scope: str, keys: Sequence[str]) -> list[str]:
        return list(keys[:self.merchant_keys] if scope == MERCHANT else keys[self.merchant_keys:])


def _claim_move_finish(operation: str, merchant_keys: int) -> Split:
    """The split of most payment verbs: `<operation>_claim`, `_move` and `_finish`."""
    return Split(merchant_keys, (Step(f"{operation}_claim", MERCHANT, "claimed"), Step(f"{operation}_move", MEMBER, "moved"),
                                 Step(f"{operation}_finish", MERCHANT)))


SPLITS = {
    "pay": _claim_move_finish("pay", 8),
    "reversal": _claim_move_finish("reversal", 6),
    "cancel": _claim_move_finish("cancel", 5),
    "refund": _claim_move_finish("refund", 5),
    "outbound_adjust": _claim_move_finish("outbound_adjust", 5),
    # A partner member's sale: claimed and placed pending before the partner is asked, then
    # decided by its answer (the payment first, then the request's order, batch and response).
    "outbound_claim": Split(4, (Step("outbound_claim_request", MERCHANT, "claimed"), Step("outbound_claim_payment", MEMBER))),
    "outbound_finish": Split(4, (Step("outbound_finish_payment", MEMBER, "moved"), Step("outbound_finish_request", MERCHANT))),
}
"""The scripts that run as steps on a cluster (DESIGN.md 6a; gateway/lua/lib_pay.lua). On one
Redis each still runs as its one script, which calls the same steps in one round trip."""


class ClusterRoutes:
    """Script calls on a cluster, each sent to the primary of its keys' slot on that node's one
    multiplexed connection (gateway/multiplex.py), by redis-py's slot map. redis-py's own cluster
    command path costs a sale (three calls there) more CPU than the rest of the sale.

    The policy is the client's (module docstring): nothing that may have run is sent again. MOVED
    and READONLY (the slot's primary changed: a failover, a resharding) ran nothing: the map is read
    again and the call sent once more. A connection error, a timeout, CLUSTERDOWN or TRYAGAIN is
    raised, and the map read again before the next call. ASK (a slot half-way through a
    resharding) is left to redis-py, which sends ASKING first. Keys of two slots are refused
    before anything is sent, as redis-py refuses them."""

    def __init__(self, client: RedisCluster, timeout_s: float) -> None:
        self.client = client
        self.timeout_s = timeout_s
        kwargs = client.connection_kwargs
        self._login = (kwargs.get("username") or "", kwargs.get("password") or "")
        self._by_node: dict[str, Multiplexer] = {}
        self._map_read = False
        self._started = False
        self._read_map = Shared(self._read_map_now)
        """Read the slot map, once for every call waiting on it (after a failover all of them are)."""

    @classmethod
    def for_client(cls, client: RedisCluster, timeout_s: float) -> "ClusterRoutes | None":
        """Routes for a cluster client, or None when its nodes take TLS (redis-py's path then)."""
        return cls(client, timeout_s) if client.connection_kwargs.get("connection_class") is Connection else None

    async def call(self, keys: Sequence[str], command: tuple[Any, ...]) -> Any:
        slots = {self.client.keyslot(key) for key in keys}
        if len(slots) != 1:
            raise RedisClusterException(f"{command[0]} - all keys must map to the same key slot")
        slot = slots.pop()
        for send in range(1, CLUSTER_SENDS_MAX + 1):
            if not self._map_read:
                await self._read_map()
            try:
                node = self.client.nodes_manager.get_node_from_slot(slot)
            except SlotNotCoveredError:
                self._map_read = False
                raise ClusterDownError(f"no primary serves slot {slot}") from None
            try:
                return await self._multiplexer(node.host, node.port).call(*command)
            except (MovedError, ReadOnlyError):
                self._map_read = False
                if send == CLUSTER_SENDS_MAX:
                    raise
            except AskError:
                return await self.client.execute_command(*command)
            except (RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError):
                self._map_read = False
                raise
        raise AssertionError("unreachable: the last send returns or raises")

    async def close(self) -> None:
        for multiplexer in self._by_node.values():
            await multiplexer.close()
        self._by_node.clear()

    def _multiplexer(self, host: str, port: int) -> Multiplexer:
        name = f"{host}:{port}"
        if name not in self._by_node:
            username, password = self._login
            self._by_node[name] = Multiplexer(Address(host=host, port=port, username=username, password=password),
                                              self.timeout_s)
        return self._by_node[name]

    async def _read_map_now(self) -> None:
        if not self._started:  # the client's own start-up reads the first map (nothing if it has started)
            await self.client.initialize()
            self._started = True
        else:
            await self.client.nodes_manager.initialize()
        self._map_read = True


class Store:
    """Runs the named Lua scripts on one Redis client (a single server's or a cluster's).

    With `wait_replicas` > 0 every script of MONEY_SCRIPTS is followed by
    `WAIT wait_replicas wait_timeout_ms` on its connection (module docstring).
    """

    def __init__(self, client: aioredis.Redis | RedisCluster, wait_replicas: int = 0, wait_timeout_ms: int = 100,
                 multiplexed: bool = True) -> None:
        if wait_replicas < 0 or (wait_replicas and wait_timeout_ms < 1):
            # WAIT with timeout 0 blocks until enough replicas answer, however long that is.
            raise ValueError(f"wait_replicas must be >= 0 and wait_timeout_ms >= 1, got {wait_replicas}, {wait_timeout_ms}")
        self.redis = client
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.cluster = isinstance(client, RedisCluster)
        self.split_steps = self.cluster
        """Whether `run` sends the scripts of SPLITS as their steps: on a cluster it must; on one
        server only a test sets it, to reach the states between the steps that a cluster can leave."""
        self._scripts = {name: client.register_script(script_source(name)) for name in script_names()}
        timeout_s = (client.connection_kwargs if self.cluster else client.connection_pool.connection_kwargs).get(
            "socket_timeout") or SOCKET_TIMEOUT_DEFAULT_S
        self._multiplexer = Multiplexer.for_client(client, timeout_s) if multiplexed and not self.cluster else None
        """The scripts' one shared connection on one server (gateway/multiplex.py), if it can reach it
        (`multiplexed=False`, as in bench/store_calls.py, keeps the pool)."""
        self._routes = ClusterRoutes.for_client(client, timeout_s) if multiplexed and self.cluster else None
        """On a cluster, the scripts' connections to its primaries, if they take no TLS."""

    @classmethod
    def from_settings(cls, settings: "Settings", url: str, max_connections: int = 64) -> "Store":
        """A store on the cluster the settings name, else on `url`, with their WAIT option."""
        client = connect(url, settings.redis_socket_timeout_s, max_connections, ClusterAccess.from_settings(settings))
        return cls(client, settings.redis_wait_replicas, settings.redis_wait_timeout_ms)

    async def load_scripts(self) -> None:
        """Load every script now, so the first payment does not pay for it. One SCRIPT EXISTS asks
        which are missing (on a cluster, missing on any primary), and only those are sent: a gateway
        starting beside others, or after a restart of itself only, sends none."""
        scripts = list(self._scripts.values())
        loaded = await self.redis.script_exists(*(script.sha for script in scripts))
        for script, present in zip(scripts, loaded):
            if not present:
                await self.redis.script_load(script.script)

    async def scripts_loaded(self) -> bool:
        shas = [script.sha for script in self._scripts.values()]
        return all(await self.redis.script_exists(*shas))

    async def run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> list[Any]:
        """Run the script `name`; on a cluster, a script of SPLITS runs as its steps."""
        split = SPLITS.get(name) if self.split_steps else None
        if split is not None:
            return await self._run_split(split, keys, args)
        return await self._run_script(name, keys, args)

    async def command(self, *command: Any) -> Any:
        """One plain command of the request path (a sale's device lookup), on the scripts' shared
        connection where there is one, else on the client; the reply as the client would give it."""
        if self._multiplexer is not None:
            return await self._multiplexer.call(*command)
        return await self.redis.execute_command(*command)

    async def _run_split(self, split: Split, keys: Sequence[str], args: Sequence[Any]) -> list[Any]:
        """The steps one after the other, each one atomic in its own slot. A failure between two
        steps leaves a state the next attempt of the same request completes (lib_pay.lua)."""
        handed: list[Any] = []
        for step in split.steps:
            step_keys = split.keys_of(step.scope, keys)
            if not step_keys:
                continue
            reply = await self._run_script(step.script, step_keys, [*args, *handed])
            if not step.goes_on or not isinstance(reply, list) or reply[0] != step.goes_on:
                return reply
            handed = list(reply[1:])
        raise AssertionError("unreachable: the last step of a split answers")

    async def _run_script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> list[Any]:
        if self.wait_replicas and (name in MONEY_SCRIPTS or name in CLAIM_STEPS):
            return await self._run_acknowledged(name, keys, args)
        if self.cluster and self._routes is None:
            return await self._scripts[name](keys=list(keys), args=list(args))
        script = self._scripts[name]
        try:
            return await self._evalsha(script.sha, keys, args)
        except NoScriptError:  # ran nothing (Redis lost its scripts: a restart, SCRIPT FLUSH): load it, send again
            await self.redis.script_load(script.script)
            return await self._evalsha(script.sha, keys, args)

    async def _evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA on one server, packed by hiredis: the command redis-py would send, byte for byte,
        at a fraction of the client CPU of its command path (pure-Python packing, the retry wrapper,
        response callbacks). Sent on the multiplexed connection that concurrent calls share (on a
        cluster, the slot's primary's: ClusterRoutes), or (TLS) on a pooled connection. Errors are
        redis-py's own classes either way."""
        if self._multiplexer is not None:
            return await self._multiplexer.call("EVALSHA", sha, len(keys), *keys, *args)
        if self._routes is not None:
            return await self._routes.call(keys, ("EVALSHA", sha, len(keys), *keys, *args))
        pool = self.redis.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *args)), False)
            return await connection.read_response()
        finally:
            await pool.release(connection)

    async def _run_acknowledged(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> list[Any]:
        """EVALSHA and WAIT in one pipeline on one connection: WAIT counts the replicas that hold
        this connection's writes, so it must follow the script on the same connection (and, on a
        cluster, the same node: both are sent to the slot's primary, with redirections off so
        neither is re-sent elsewhere)."""
        script = self._scripts[name]
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        wait = ("WAIT", self.wait_replicas, self.wait_timeout_ms)
        for attempt in range(1, ACKNOWLEDGED_ATTEMPTS_MAX + 1):
            async with self.redis.pipeline(transaction=False) as pipe:
                if self.cluster:
                    node = self.redis.get_node_from_key(keys[0])
                    pipe.execute_command(*command, target_nodes=node)
                    pipe.execute_command(*wait, target_nodes=node)
                    reply, acknowledged = await pipe.execute(raise_on_error=False, allow_redirections=False)
                else:
                    pipe.execute_command(*command)
                    pipe.execute_command(*wait)
                    reply, acknowledged = await pipe.execute(raise_on_error=False)
            if attempt < ACKNOWLEDGED_ATTEMPTS_MAX and isinstance(reply, NoScriptError):
                await self.redis.script_load(script.script)  # on a cluster, on every primary
                continue
            if attempt < ACKNOWLEDGED_ATTEMPTS_MAX and self.cluster and isinstance(reply, MovedError):
                await self.redis.nodes_manager.initialize()  # the slot moved (a failover): read the map again
                continue
            if isinstance(reply, Exception):
                raise reply
            if isinstance(acknowledged, Exception):
                raise acknowledged
            if acknowledged < self.wait_replicas:
                raise DurabilityTimeout(name, self.wait_replicas, acknowledged, self.wait_timeout_ms, reply)
            return reply
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def close(self) -> None:
        if self._multiplexer is not None:
            await self._multiplexer.close()
        if self._routes is not None:
            await self._routes.close()
        await self.redis.aclose()
