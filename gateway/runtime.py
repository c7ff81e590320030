"""The composition root outside the HTTP server: Redis, keyring, ledger, tokens.

`open_runtime(settings)` is what `gateway` CLI commands and the demo use; the
aiohttp application wires the same pieces, one `cleanup_ctx` each.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from gateway.embedded_redis import EmbeddedRedis, attach_or_start
from gateway.keyring import Keyring
from gateway.ledger import Ledger
from gateway.settings import Settings
from gateway.store import Store
from gateway.tokens import TokenService


@dataclass
class Runtime:
    settings: Settings
    store: Store
    ledger: Ledger
    tokens: TokenService
    keyring: Keyring
    embedded: EmbeddedRedis | None
    redis_url: str


@contextlib.contextmanager
def redis_server(settings: Settings):
    """Yield the Redis URL to use: REDIS_URL if configured, else the bundled server's; with
    redis_cluster_nodes, an empty URL (the store connects to the cluster) and no bundled server."""
    if settings.redis_cluster_nodes:
        yield "", None
        return
    if settings.redis_url:
        yield settings.redis_url, None
        return
    url, server = attach_or_start(Path(settings.data_dir), settings.redis_port, settings.redis_start_timeout_s)
    try:
        yield url, server
    finally:
        if server is not None:
            server.stop()


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    with redis_server(settings) as (url, server):
        store = Store.from_settings(settings, url)
        try:
            await store.load_scripts()
            keyring = Keyring.load(settings.keyring_path)
            ledger = Ledger(store)
            tokens = TokenService(store, ledger, keyring, settings)
            yield Runtime(settings, store, ledger, tokens, keyring, server, url)
        finally:
            await store.close()
