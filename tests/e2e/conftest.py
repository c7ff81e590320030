"""A real gateway (aiohttp app on a loopback port) over the real Redis, and signed terminals."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from gateway import codes, signing
from gateway.app import MERCHANTS, TOKENS, create_app
from gateway.embedded_redis import free_port
from gateway.keyring import Keyring
from gateway.ledger import Ledger
from gateway.merchants import MerchantRegistry
from gateway.partners import PartnerKeys
from gateway.settings import Network, Partner, Settings, load_settings
from gateway.store import Store, connect
from gateway.tokens import Enrolment
from simulators import partner as partner_simulator
from simulators.fault_proxy import FaultProxy


@dataclass
class Terminal:
    """A store terminal that signs every request the way docs/signing.md says."""

    session: ClientSession
    base_url: str
    merchant_id: str
    store_id: str
    terminal_id: str
    key_id: str
    secret: str
    clock_offset_s: float = 0.0
    sent: list[str] = field(default_factory=list)

    def headers(self, method: str, raw_path: str, body: bytes, idempotency_key: str | None = None, **extra: str) -> dict[str, str]:
        headers = signing.signed_headers(self.secret, method, raw_path, body, self.merchant_id, self.key_id,
                                         time.time() + self.clock_offset_s, secrets.token_hex(12))
        if body:
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        headers.update(extra)
        return headers

    async def send(self, method: str, raw_path: str, document: Any = None, idempotency_key: str | None = None,
                   body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        if body is None:
            body = json.dumps(document).encode() if document is not None else b""
        if idempotency_key is None and method == "POST":
            idempotency_key = "idem-" + secrets.token_hex(8)
        sent_headers = headers if headers is not None else self.headers(method, raw_path, body, idempotency_key)
        async with self.session.request(method, self.base_url + raw_path, data=body, headers=sent_headers) as response:
            raw = await response.read()
            document = json.loads(raw) if raw and response.content_type.endswith("json") else raw
            return response.status, document, {k.lower(): v for k, v in response.headers.items()} | {"_raw": raw}

    async def pay(self, code: str, amount: int, order_ref: str | None = None, idempotency_key: str | None = None, **extra: Any):
        sale = {"code": code, "amount": amount, "currency": "KRW", "order_ref": order_ref or "ord-" + secrets.token_hex(6),
                "store_id": self.store_id, "terminal_id": self.terminal_id, **extra}
        return await self.send("POST", "/v1/payments", sale, idempotency_key)

    def here(self) -> dict[str, str]:
        return {"store_id": self.store_id, "terminal_id": self.terminal_id}


@dataclass
class Member:
    member_id: str
    phone: Enrolment
    prefix: str
    seq: int = 0

    def code(self, now_s: float | None = None) -> str:
        """The phone's next offline code (a fresh seq after each use, as the app does)."""
        now_s = time.time() if now_s is None else now_s
        code = codes.encode_code(self.prefix, self.phone.slot, self.seq % 10, self.phone.secret,
                                 codes.step_of(int(now_s), 30) + self.seq // 10)
        self.seq += 1
        return code


class Gateway:
    def __init__(self, app, server: TestServer, session: ClientSession) -> None:
        self.app, self.server, self.session = app, server, session
        self.base_url = str(server.make_url("")).rstrip("/")

    async def terminal(self, merchant_id: str = "gs25", store_id: str = "gs25-gangnam-01", terminal_id: str = "t1",
                       key: tuple[str, str] | None = None) -> Terminal:
        key_id, secret = key or await self.app[MERCHANTS].issue_key(merchant_id)
        return Terminal(self.session, self.base_url, merchant_id, store_id, terminal_id, key_id, secret)

    async def member(self, points: int = 0) -> Member:
        tokens = self.app[TOKENS]
        member_id = await tokens.create_member()
        phone = await tokens.enrol(member_id)
        if points:
            await tokens.ledger.credit(member_id, points, "affiliate:hana-card", "seed-" + member_id, tokens.home.points_unit)
        return Member(member_id, phone, tokens.home.prefix)

    async def balance(self, member: Member) -> int:
        return (await self.app[TOKENS].ledger.balance(member.member_id)).available

    @property
    def ledger(self) -> Ledger:
        return self.app[TOKENS].ledger


@contextlib.asynccontextmanager
async def serving(settings):
    """A gateway app for `settings` on a loopback port, its registry loaded from the configuration."""
    app = create_app(settings)
    server = TestServer(app)
    await server.start_server()
    await app[MERCHANTS].load_config(settings)
    try:
        async with ClientSession() as session:
            yield Gateway(app, server, session)
    finally:
        await server.close()


@pytest.fixture
async def gateway(settings, store):
    async with serving(settings) as running:
        yield running


# -- two networks: ours and a partner (pointgate under the partner's configuration) ----------

FAST = dict(connect_timeout_s=0.5, read_timeout_s=1.0, concurrency_max=4, circuit_failures_max=3, circuit_open_s=1.0)


SIAM = Network("7640", "siam", "Siam Rewards", False, "THB", "SRP")
PARTNERS = {"taishin": partner_simulator.TAISHIN, "siam": SIAM}


@dataclasses.dataclass
class Networks:
    home: Gateway
    taishin: Gateway
    """The partner network (Taishin unless the test is parametrized with another)."""
    proxy: FaultProxy
    partner_id: str


@pytest.fixture(params=["taishin"])
async def networks(request, home_redis, redis_server, store, tmp_path: Path):
    """Our gateway (on our Redis: `--redis` says which) and a partner network (pointgate under the
    partner's configuration, in its own database of the single server: another deployment), keys exchanged."""
    home_settings = load_settings(env={}, **home_redis.settings, keyring_path=str(tmp_path / "home-keyring.json"))
    async with serving_networks(home_settings, redis_server.url[:-1] + "1", PARTNERS[request.param], tmp_path) as running:
        yield running


@contextlib.asynccontextmanager
async def serving_networks(home_settings: Settings, partner_url: str, network: Network, tmp_path: Path):
    """Our gateway under `home_settings` (one Redis or a cluster) and `network`'s gateway on its own Redis
    database at `partner_url` (emptied first), behind a fault proxy, each holding a key the other issued,
    both registries loaded from their configuration."""
    home_port, taishin_port = free_port(), free_port()
    proxy = await FaultProxy("127.0.0.1", taishin_port).start()
    networks_known = home_settings.networks + ((network,) if network.id not in {n.id for n in home_settings.networks} else ())
    home_settings = dataclasses.replace(home_settings, networks=networks_known,
                                        partners=(Partner(network.id, proxy.url, **FAST),))
    taishin_settings = load_settings(partner_simulator.write_config(tmp_path, f"http://127.0.0.1:{home_port}", network),
                                     env={}, redis_url=partner_url, keyring_path=str(tmp_path / "taishin-keyring.json"))
    # Each network issues the other a key, and stores the one it was given.
    home_store, taishin_store = Store.from_settings(home_settings, home_settings.redis_url), Store(connect(partner_url, 5))
    await taishin_store.redis.flushdb()
    for s in (home_store, taishin_store):
        await s.load_scripts()
    home_registry = MerchantRegistry(home_store, Keyring.load(home_settings.keyring_path))
    taishin_registry = MerchantRegistry(taishin_store, Keyring.load(taishin_settings.keyring_path))
    await home_registry.load_config(home_settings)
    await taishin_registry.load_config(taishin_settings)
    for_taishin = await home_registry.issue_key(network.id)
    for_home = await taishin_registry.issue_key("hana")
    await PartnerKeys(home_store, Keyring.load(home_settings.keyring_path)).set(network.id, *for_home)
    await PartnerKeys(taishin_store, Keyring.load(taishin_settings.keyring_path)).set("hana", *for_taishin)
    await home_store.close()
    await taishin_store.close()

    apps = [create_app(home_settings), create_app(taishin_settings)]
    servers = [TestServer(apps[0], port=home_port), TestServer(apps[1], port=taishin_port)]
    for server in servers:
        await server.start_server()
    try:
        async with ClientSession() as session:
            yield Networks(Gateway(apps[0], servers[0], session), Gateway(apps[1], servers[1], session), proxy, network.id)
    finally:
        for server in servers:
            await server.close()
        await proxy.close()


async def taishin_member(networks: Networks, points: int) -> Member:
    return await networks.taishin.member(points=points)
