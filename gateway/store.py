"""The Redis store: one client, the Lua scripts, and how they are called.

Scripts live as `.lua` files in `gateway/lua/`; each is loaded with
`lib.lua` prepended, so shared checks are written once and every script is
still one atomic step. Calls go through EVALSHA (redis-py reloads a script on
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
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

try:
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # redis-py before 7 has no maintenance notifications, nor their pool behaviour
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

LIBRARY = "lib"


def script_names() -> tuple[str, ...]:
    """Every `.lua` file in `gateway/lua/` except the library is a script."""
    lua = resources.files("gateway") / "lua"
    return tuple(sorted(p.name[:-4] for p in lua.iterdir() if p.name.endswith(".lua") and p.name != LIBRARY + ".lua"))


def connect(url: str, socket_timeout_s: float, max_connections: int = 64) -> aioredis.Redis:
    """A client for `url` with explicit timeouts, no automatic retries, and closed
    pooled connections replaced before use (see the module docstring)."""
    extra: dict[str, Any] = {}
    if MaintNotificationsConfig is not None:
        extra["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
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


def script_source(name: str) -> str:
    lua = resources.files("gateway") / "lua"
    return (lua / f"{LIBRARY}.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class Store:
    """Runs the named Lua scripts on one Redis client."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._scripts = {name: client.register_script(script_source(name)) for name in script_names()}

    async def load_scripts(self) -> None:
        """Load every script now, so the first payment does not pay for it."""
        for script in self._scripts.values():
            await self.redis.script_load(script.script)

    async def scripts_loaded(self) -> bool:
        shas = [script.sha for script in self._scripts.values()]
        return all(await self.redis.script_exists(*shas))

    async def run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> list[Any]:
        return await self._scripts[name](keys=list(keys), args=list(args))

    async def close(self) -> None:
        await self.redis.aclose()
