"""Calls to partner networks (outbound): our merchant took a partner member's code.

The partner speaks the same interop API we serve (`/v1/interop/...`), signed
with the key it issued us. Each partner has its own timeouts, a concurrency
limit and a circuit breaker, so a slow or failing partner answers fast
declines instead of holding terminals, and never touches home-network sales.

    PartnerError             the partner gave no usable answer (unknown outcome)
    └── PartnerRefused       the partner refused the request itself (4xx other than a decline)
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence
from urllib.parse import quote

import aiohttp

from gateway import keyspace, signing
from gateway.keyring import Keyring
from gateway.settings import Partner
from gateway.store import Store
from gateway.telemetry import RollingWindow


class PartnerError(Exception):
    """No usable answer: the outcome at the partner is unknown."""


class PartnerRefused(PartnerError):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"HTTP {status} {code}")
        self.status, self.code = status, code


@dataclass
class CircuitBreaker:
    """Opens after `failures_max` failures in a row; after `open_s` one trial call may pass."""

    failures_max: int
    open_s: float
    failures: int = 0
    opened_at: float | None = None

    def allows(self, now: float) -> bool:
        return self.opened_at is None or now - self.opened_at >= self.open_s

    def succeeded(self) -> None:
        self.failures, self.opened_at = 0, None

    def failed(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.failures_max:
            self.opened_at = now

    @property
    def state(self) -> str:
        return "closed" if self.opened_at is None else "open"


@dataclass
class PartnerClient:
    partner: Partner
    our_network_id: str
    key_id: str
    secret: str = field(repr=False)
    session: aiohttp.ClientSession
    now: Callable[[], float] = time.monotonic
    breaker: CircuitBreaker = field(init=False)
    slots: asyncio.Semaphore = field(init=False)
    health: RollingWindow = field(init=False)
    """This process's calls to the partner (ok or error, and latency), for the operator console."""

    def __post_init__(self) -> None:
        self.breaker = CircuitBreaker(self.partner.circuit_failures_max, self.partner.circuit_open_s)
        self.slots = asyncio.Semaphore(self.partner.concurrency_max)
        self.health = RollingWindow()

    async def _call(self, method: str, path: str, document: Any, idempotency_key: str | None) -> tuple[int, Any]:
        body = json.dumps(document, separators=(",", ":")).encode() if document is not None else b""
        headers = signing.signed_headers(self.secret, method, path, body, self.our_network_id, self.key_id,
                                         time.time(), secrets.token_hex(16))
        if body:
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        timeout = aiohttp.ClientTimeout(total=self.partner.connect_timeout_s + self.partner.read_timeout_s,
                                        sock_connect=self.partner.connect_timeout_s, sock_read=self.partner.read_timeout_s)
        started = self.now()
        try:
            async with self.session.request(method, self.partner.base_url + path, data=body or None, headers=headers,
                                            timeout=timeout) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            self.breaker.failed(self.now())
            self.health.add(self.now(), "error", (self.now() - started) * 1000)
            raise PartnerError(type(e).__name__) from None
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        if status >= 500 or (isinstance(doc, dict) and doc.get("code") == "idempotency_in_progress"):
            self.breaker.failed(self.now())
            self.health.add(self.now(), "error", (self.now() - started) * 1000)
            raise PartnerError(f"HTTP {status}")
        self.breaker.succeeded()
        self.health.add(self.now(), "ok", (self.now() - started) * 1000)
        return status, doc

    async def authorise(self, payment_id: str, code: str, amount: int, currency: str, merchant_name: str,
                        coupon_codes: Sequence[str] = ()) -> dict[str, Any]:
        """The partner's payment object (approved or declined); PartnerError when unknown.
        The member's coupons go with it: they are the partner's coupons, applied there."""
        document: dict[str, Any] = {"code": code, "amount": amount, "currency": currency, "partner_ref": payment_id,
                                    "merchant_name": merchant_name}
        if coupon_codes:
            document["coupon_codes"] = list(coupon_codes)
        status, doc = await self._call("POST", "/v1/interop/payments", document, "pg-out-" + payment_id)
        if status != 201:
            raise PartnerRefused(status, (doc or {}).get("code", "unknown"))
        return doc

    async def find(self, payment_id: str) -> dict[str, Any] | None:
        """The partner's record of our payment, or None if it never arrived."""
        status, doc = await self._call("GET", "/v1/interop/payments?partner_ref=" + quote(payment_id, safe=""), None, None)
        if status == 404:
            return None
        if status != 200:
            raise PartnerRefused(status, (doc or {}).get("code", "unknown"))
        return doc

    async def cancel(self, partner_payment_id: str, idempotency_key: str) -> dict[str, Any]:
        status, doc = await self._call("POST", f"/v1/interop/payments/{quote(partner_payment_id, safe='')}/cancel",
                                       {}, "pg-cx-" + idempotency_key)
        if status != 200:
            raise PartnerRefused(status, (doc or {}).get("code", "unknown"))
        return doc

    async def refund(self, partner_payment_id: str, amount: int, idempotency_key: str) -> dict[str, Any]:
        status, doc = await self._call("POST", f"/v1/interop/payments/{quote(partner_payment_id, safe='')}/refunds",
                                       {"amount": amount}, "pg-rf-" + idempotency_key)
        if status != 201:
            raise PartnerRefused(status, (doc or {}).get("code", "unknown"))
        return doc

    async def credit_exchange(self, exchange_id: str, member_id: str, points: int) -> dict[str, Any]:
        """Ask the partner to credit its member with points we exchanged; PartnerRefused is definite."""
        status, doc = await self._call("POST", "/v1/interop/exchanges",
                                       {"member_id": member_id, "points": points, "exchange_ref": exchange_id},
                                       "pg-ex-" + exchange_id)
        if status != 201:
            raise PartnerRefused(status, (doc or {}).get("code", "unknown"))
        return doc

    async def find_exchange(self, exchange_id: str) -> dict[str, Any] | None:
        status, doc = await self._call("GET", "/v1/interop/exchanges?exchange_ref=" + quote(exchange_id, safe=""), None, None)
        if status == 404:
            return None
        if status != 200:
            raise PartnerRefused(status, (doc or {}).get("code", "unknown"))
        return doc

    async def reverse(self, payment_id: str) -> dict[str, Any]:
        status, doc = await self._call("POST", "/v1/interop/reversals", {"partner_ref": payment_id, "reason": "no answer"},
                                       "pg-rev-" + payment_id)
        if status != 200:
            raise PartnerRefused(status, (doc or {}).get("code", "unknown"))
        return doc


class PartnerKeys:
    """The keys partners issued us, encrypted at rest like every other secret."""

    def __init__(self, store: Store, keyring: Keyring) -> None:
        self.store, self.keyring = store, keyring

    async def set(self, partner_id: str, key_id: str, secret: str) -> None:
        keyring_key_id, sealed = self.keyring.encrypt(secret.encode(), _aad(partner_id))
        await self.store.redis.hset(keyspace.partner_key_key(partner_id),
                                    mapping={"key_id": key_id, "secret": sealed, "keyring_key_id": keyring_key_id})

    async def get(self, partner_id: str) -> tuple[str, str] | None:
        record = await self.store.redis.hgetall(keyspace.partner_key_key(partner_id))
        if not record:
            return None
        return record["key_id"], self.keyring.decrypt(record["keyring_key_id"], record["secret"], _aad(partner_id)).decode()


    async def reencrypt(self, partner_ids: list[str]) -> int:
        """Re-encrypt every stored partner key under the keyring's active key (after a rotation)."""
        changed = 0
        for partner_id in partner_ids:
            key = await self.get(partner_id)
            record = await self.store.redis.hgetall(keyspace.partner_key_key(partner_id))
            if key is not None and record["keyring_key_id"] != self.keyring.active:
                await self.set(partner_id, *key)
                changed += 1
        return changed

    async def keyring_keys_in_use(self, partner_ids: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for partner_id in partner_ids:
            keyring_key_id = await self.store.redis.hget(keyspace.partner_key_key(partner_id), "keyring_key_id")
            if keyring_key_id is not None:
                counts[keyring_key_id] = counts.get(keyring_key_id, 0) + 1
        return counts


def _aad(partner_id: str) -> str:
    return f"pointgate:partner-key:{partner_id}"
