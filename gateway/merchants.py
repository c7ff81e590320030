"""The merchant registry: merchants, their stores and terminals, and their signing keys.

Everything about one merchant lives under its hash tag `{mc:<merchant_id>}`
(`gateway/keyspace.py`), so each step below touches one hash slot. Registering
a merchant, adding a store and adding a terminal are each one Lua script
(`merchant_create.lua`, `merchant_store_add.lua`, `merchant_terminal_add.lua`)
that checks, then writes, in that slot: the same call on one Redis and on a
Redis Cluster. The set of all merchant ids (`keyspace.MERCHANTS_KEY`) is
outside every tag; it is written after the merchant itself and only read by
administration.

Signing keys: a merchant has at most `ACTIVE_KEYS_MAX` (two) active keys, so a
key can be rotated without downtime: issue the second, move the terminals,
revoke the first. Issuing is one Lua script (`merchant_key_issue.lua`) that
counts the active keys and writes the new one atomically. A secret is
`pgsk_` + 43 characters of base64url, stored AES-256-GCM encrypted under the
keyring's active key and bound to its merchant and key id, returned once at
issue and never logged.

Exceptions::

    Exception
     └── MerchantError   an operation was refused, nothing was written; `.code` says why:
                         invalid_merchant, invalid_store, invalid_terminal, invalid_key (400),
                         unknown_merchant, unknown_store, unknown_key (404),
                         too_many_active_keys, too_many_keys, key_issue_contended (409)
"""

from __future__ import annotations

import base64
import functools
import re
import secrets
import time
import zoneinfo
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Final, NamedTuple

from gateway import keyspace
from gateway.clock import wall_ms
from gateway.keyring import Keyring
from gateway.settings import CURRENCIES, Settings
from gateway.settings import Store as MerchantStore
from gateway.signing import KEY_ID_PATTERN, MERCHANT_ID_PATTERN, SECRET_BYTES, SECRET_PREFIX
from gateway.store import Store

ROLES: Final = ("merchant", "affiliate", "partner", "operator")
"""A merchant's keys sign terminal requests, an affiliate's sign earnings, a partner network's sign
its interop calls, an operator's sign administration (coupon campaigns). None can use another
role's routes."""
ACTIVE_KEYS_MAX: Final = 2
"""Two keys overlap during a rotation; a third active key is refused."""
KEYS_ISSUED_MAX: Final = 1000
"""Keys are never deleted and every issue hands the script all of them; 1000
is a rotation a week for nineteen years."""
ISSUE_ATTEMPTS_MAX: Final = 5
"""Attempts when another issue for the same merchant lands in between; two
operators racing settle within one retry."""

# A revoked key stops verifying in every process within KEY_CACHE_TTL_S: each
# process re-reads a key's status from Redis at least that often. The payment
# script checks the key's status again atomically, so a revoked key cannot
# move money even inside those 5 s.
KEY_CACHE_TTL_S: Final = 5
KEY_CACHE_ENTRIES_MAX: Final = 10_000  # thousands of merchants x 2 active keys, ~200 bytes each: ~2 MB

NAME_CHARS_MAX: Final = 100
STORES_PER_MERCHANT_MAX: Final = 50_000  # the largest chains run ~18,000 stores
TERMINALS_PER_STORE_MAX: Final = 100  # a convenience store runs 1-4 tills; a hypermarket under 100
# 58 mm till paper prints 32 columns and 80 mm prints 42-48; the bounds catch
# a typo without refusing any printer in use.
RECEIPT_WIDTH_MIN: Final = 24
RECEIPT_WIDTH_MAX: Final = 80

MERCHANT_ID_RE: Final = re.compile(MERCHANT_ID_PATTERN)
STORE_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
TERMINAL_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
KEY_ID_RE: Final = re.compile(KEY_ID_PATTERN)
CUTOFF_RE: Final = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")

_STATUS_BY_CODE: Final = {
    "invalid_merchant": 400, "invalid_store": 400, "invalid_terminal": 400, "invalid_key": 400,
    "unknown_merchant": 404, "unknown_store": 404, "unknown_key": 404,
    "too_many_active_keys": 409, "too_many_keys": 409, "key_issue_contended": 409,
}


class MerchantError(Exception):
    """A registry operation was refused; nothing was written. The message names what and why."""

    fault: Final = "caller"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = _STATUS_BY_CODE.get(code, 400)


@dataclass(frozen=True, slots=True)
class MerchantInfo:
    id: str
    name: str
    currency: str
    time_zone: str
    business_day_cutoff: str
    """HH:MM local time at which the business day (and a void's deadline) ends."""
    receipt_width: int
    status: str
    created_ms: int
    role: str = "merchant"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A signing key as listed: never its secret."""

    key_id: str
    status: str
    created_ms: int
    revoked_ms: int | None


class IssuedKey(NamedTuple):
    """Returned once, at issue: the only time the secret leaves the gateway."""

    key_id: str
    secret: str

    def __repr__(self) -> str:
        return f"IssuedKey(key_id={self.key_id!r}, secret=<redacted>)"


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """What `load_config` created; all zero when Redis already matched the configuration."""

    merchants_created: int
    stores_created: int
    terminals_added: int
    principals_created: int = 0
    """Affiliates and partner networks (signing principals that are not merchants)."""

    @property
    def changed(self) -> bool:
        return bool(self.merchants_created or self.stores_created or self.terminals_added or self.principals_created)


@dataclass(frozen=True, slots=True)
class _CachedSecret:
    secret: str = field(repr=False)
    fetched_at_s: float


class MerchantRegistry:
    def __init__(
        self, store: Store, keyring: Keyring,
        now: Callable[[], float] = time.monotonic,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self._now = now
        self._token_bytes = token_bytes
        self._secrets: OrderedDict[tuple[str, str], _CachedSecret] = OrderedDict()

    # -- merchants -------------------------------------------------------------

    async def create_merchant(
        self, merchant_id: str, name: str, currency: str, time_zone: str,
        business_day_cutoff: str, receipt_width: int, role: str = "merchant",
    ) -> bool:
        """Register a merchant (or, with role "affiliate", a signing affiliate); False if the id is taken."""
        _check_merchant(merchant_id, name, currency, time_zone, business_day_cutoff, receipt_width)
        if role not in ROLES:
            raise MerchantError("invalid_merchant", f"role must be one of {', '.join(ROLES)}, got {role!r}")
        reply = await self.store.run("merchant_create", [keyspace.merchant_key(merchant_id)], [
            name, currency, time_zone, business_day_cutoff, receipt_width, role, wall_ms()])
        # The index is outside the merchant's hash slot, so it cannot join the
        # script. Adding it on every call, created or not, repairs an index
        # entry lost to a crash between the two writes.
        await self.store.redis.sadd(keyspace.MERCHANTS_KEY, merchant_id)
        return _created(reply, "merchant_create")

    async def merchant(self, merchant_id: str) -> MerchantInfo | None:
        if not _is_id(MERCHANT_ID_RE, merchant_id):
            return None
        fields = await self.store.redis.hgetall(keyspace.merchant_key(merchant_id))
        if not fields:
            return None
        return MerchantInfo(
            id=merchant_id, name=fields["name"], currency=fields["currency"], time_zone=fields["time_zone"],
            business_day_cutoff=fields["business_day_cutoff"], receipt_width=int(fields["receipt_width"]),
            status=fields["status"], created_ms=int(fields["created_ms"]), role=fields.get("role", "merchant"),
        )

    async def list_merchants(self, role: str | None = "merchant") -> tuple[MerchantInfo, ...]:
        """Every registered merchant (or affiliate, or with None both), by id."""
        found = []
        for merchant_id in sorted(await self.store.redis.smembers(keyspace.MERCHANTS_KEY)):
            info = await self.merchant(merchant_id)
            if info is not None and role in (None, info.role):
                found.append(info)
        return tuple(found)

    # -- stores and terminals --------------------------------------------------

    async def add_store(self, merchant_id: str, store_id: str, name: str) -> bool:
        """Add a store to a merchant; False (and nothing changed) if it has one of that id."""
        _check_id(MERCHANT_ID_RE, merchant_id, "invalid_merchant", "merchant id")
        _check_id(STORE_ID_RE, store_id, "invalid_store", "store id")
        _check_name(name, "invalid_store", "store name")
        reply = await self.store.run("merchant_store_add", [
            keyspace.merchant_key(merchant_id), keyspace.merchant_store_key(merchant_id, store_id),
            keyspace.merchant_stores_key(merchant_id)], [store_id, name, STORES_PER_MERCHANT_MAX, wall_ms()])
        if reply[0] == "unknown_merchant":
            raise MerchantError("unknown_merchant", f"no merchant {merchant_id}")
        if reply[0] == "too_many_stores":
            raise MerchantError("invalid_store", f"merchant {merchant_id} has {STORES_PER_MERCHANT_MAX} stores, the most allowed")
        return _created(reply, "merchant_store_add")

    async def add_terminal(self, merchant_id: str, store_id: str, terminal_id: str) -> bool:
        """Add a terminal to one of the merchant's stores; False if it is there already."""
        _check_id(MERCHANT_ID_RE, merchant_id, "invalid_merchant", "merchant id")
        _check_id(STORE_ID_RE, store_id, "invalid_store", "store id")
        _check_id(TERMINAL_ID_RE, terminal_id, "invalid_terminal", "terminal id")
        reply = await self.store.run("merchant_terminal_add", [
            keyspace.merchant_key(merchant_id), keyspace.merchant_stores_key(merchant_id),
            keyspace.store_terminals_key(merchant_id, store_id)], [store_id, terminal_id, TERMINALS_PER_STORE_MAX])
        if reply[0] == "unknown_merchant":
            raise MerchantError("unknown_merchant", f"no merchant {merchant_id}")
        if reply[0] == "unknown_store":
            raise MerchantError("unknown_store", f"merchant {merchant_id} has no store {store_id}")
        if reply[0] == "too_many_terminals":
            raise MerchantError("invalid_terminal", f"store {store_id} has {TERMINALS_PER_STORE_MAX} terminals, the most allowed")
        return _created(reply, "merchant_terminal_add")

    async def terminal_belongs(self, merchant_id: str, store_id: str, terminal_id: str) -> bool:
        """Is this terminal registered in this store of this merchant (and nowhere else it claims)?"""
        if not (_is_id(MERCHANT_ID_RE, merchant_id) and _is_id(STORE_ID_RE, store_id)
                and _is_id(TERMINAL_ID_RE, terminal_id)):
            return False
        return bool(await self.store.redis.sismember(keyspace.store_terminals_key(merchant_id, store_id), terminal_id))

    async def stores(self, merchant_id: str) -> tuple[MerchantStore, ...]:
        """The merchant's stores with their terminals, by id."""
        await self._require_merchant(merchant_id)
        found = []
        for store_id in sorted(await self.store.redis.smembers(keyspace.merchant_stores_key(merchant_id))):
            name = await self.store.redis.hget(keyspace.merchant_store_key(merchant_id, store_id), "name")
            terminals = await self.store.redis.smembers(keyspace.store_terminals_key(merchant_id, store_id))
            found.append(MerchantStore(store_id, name or "", tuple(sorted(terminals))))
        return tuple(found)

    # -- signing keys ----------------------------------------------------------

    async def issue_key(self, merchant_id: str) -> IssuedKey:
        """Issue a new active signing key; its secret is returned now and never again."""
        _check_id(MERCHANT_ID_RE, merchant_id, "invalid_merchant", "merchant id")
        keys_key = keyspace.signing_keys_key(merchant_id)
        for _ in range(ISSUE_ATTEMPTS_MAX):
            existing = sorted(await self.store.redis.smembers(keys_key), key=_key_number)
            if len(existing) >= KEYS_ISSUED_MAX:
                raise MerchantError("too_many_keys", f"merchant {merchant_id} has been issued {KEYS_ISSUED_MAX} keys, the most allowed")
            key_id = f"{merchant_id}-k{1 + max(map(_key_number, existing), default=0)}"
            secret = SECRET_PREFIX + base64.urlsafe_b64encode(self._token_bytes(SECRET_BYTES)).rstrip(b"=").decode()
            keyring_key_id, sealed = self.keyring.encrypt(secret.encode(), _aad(merchant_id, key_id))
            reply = await self.store.run(
                "merchant_key_issue",
                [keyspace.merchant_key(merchant_id), keys_key, keyspace.signing_key_key(merchant_id, key_id),
                 *(keyspace.signing_key_key(merchant_id, k) for k in existing)],
                [key_id, keyring_key_id, sealed, ACTIVE_KEYS_MAX, wall_ms(), *existing],
            )
            if reply[0] == "ok":
                return IssuedKey(key_id, secret)
            if reply[0] == "unknown_merchant":
                raise MerchantError("unknown_merchant", f"no merchant {merchant_id}")
            if reply[0] == "too_many_active_keys":
                raise MerchantError(
                    "too_many_active_keys",
                    f"merchant {merchant_id} already has {ACTIVE_KEYS_MAX} active keys; "
                    "move its terminals to the newer one and revoke the older first",
                )
            if reply[0] != "stale":
                raise RuntimeError(f"merchant_key_issue replied {reply[0]!r}")  # our bug, not the caller's
            # Another key was issued between our read and the script: read again.
        raise MerchantError("key_issue_contended", f"keys of {merchant_id} kept changing while issuing one; try again")

    async def revoke_key(self, merchant_id: str, key_id: str) -> bool:
        """Revoke a signing key for good; False if it was revoked already."""
        _check_id(MERCHANT_ID_RE, merchant_id, "invalid_merchant", "merchant id")
        _check_key_id(merchant_id, key_id)
        await self._require_merchant(merchant_id)
        key = keyspace.signing_key_key(merchant_id, key_id)
        self._secrets.pop((merchant_id, key_id), None)
        status = await self.store.redis.hget(key, "status")
        if status is None:
            raise MerchantError("unknown_key", f"merchant {merchant_id} has no key {key_id}")
        if status == "revoked":
            return False
        # Keys are never deleted and only the issue script writes 'active' (to a
        # key that did not exist), so nothing can undo this write.
        await self.store.redis.hset(key, mapping={"status": "revoked", "revoked_ms": wall_ms()})
        return True

    async def list_keys(self, merchant_id: str) -> tuple[KeyInfo, ...]:
        """The merchant's keys, oldest first, with their status; never a secret."""
        await self._require_merchant(merchant_id)
        found = []
        for key_id in sorted(await self.store.redis.smembers(keyspace.signing_keys_key(merchant_id)), key=_key_number):
            status, created_ms, revoked_ms = await self.store.redis.hmget(
                keyspace.signing_key_key(merchant_id, key_id), "status", "created_ms", "revoked_ms")
            found.append(KeyInfo(key_id, status, int(created_ms), int(revoked_ms) if revoked_ms else None))
        return tuple(found)

    async def signing_secret(self, merchant_id: str, key_id: str) -> str | None:
        """The secret of an active key, or None for an unknown or revoked one (within KEY_CACHE_TTL_S)."""
        if not (_is_id(MERCHANT_ID_RE, merchant_id) and _is_id(KEY_ID_RE, key_id)):
            return None
        now_s = self._now()
        cached = self._secrets.get((merchant_id, key_id))
        if cached is not None and now_s - cached.fetched_at_s < KEY_CACHE_TTL_S:
            return cached.secret
        status, keyring_key_id, sealed = await self.store.redis.hmget(
            keyspace.signing_key_key(merchant_id, key_id), "status", "keyring_key_id", "secret")
        if status != "active" or sealed is None:
            self._secrets.pop((merchant_id, key_id), None)
            return None
        secret = self.keyring.decrypt(keyring_key_id, sealed, _aad(merchant_id, key_id)).decode()
        self._secrets[(merchant_id, key_id)] = _CachedSecret(secret, now_s)
        self._secrets.move_to_end((merchant_id, key_id))
        while len(self._secrets) > KEY_CACHE_ENTRIES_MAX:
            self._secrets.popitem(last=False)
        return secret

    # -- encryption at rest ----------------------------------------------------

    async def keyring_keys_in_use(self) -> dict[str, int]:
        """How many signing-key secrets (active or revoked) each keyring key encrypts."""
        counts: dict[str, int] = {}
        async for _, _, fields in self._all_keys():
            counts[fields["keyring_key_id"]] = counts.get(fields["keyring_key_id"], 0) + 1
        return counts

    async def reencrypt_secrets(self) -> int:
        """Re-encrypt every signing-key secret not under the keyring's active key (safe to run again)."""
        changed = 0
        async for merchant_id, key_id, fields in self._all_keys():
            if fields["keyring_key_id"] == self.keyring.active:
                continue
            aad = _aad(merchant_id, key_id)
            secret = self.keyring.decrypt(fields["keyring_key_id"], fields["secret"], aad)
            new_keyring_key_id, new_sealed = self.keyring.encrypt(secret, aad)
            # One HSET writes both fields at once, and a key's secret never
            # changes after issue, so a concurrent run can only write another
            # valid encryption of the same secret.
            await self.store.redis.hset(
                keyspace.signing_key_key(merchant_id, key_id),
                mapping={"keyring_key_id": new_keyring_key_id, "secret": new_sealed})
            changed += 1
        return changed

    async def _all_keys(self) -> AsyncIterator[tuple[str, str, dict[str, str]]]:
        for merchant_id in sorted(await self.store.redis.smembers(keyspace.MERCHANTS_KEY)):
            for key_id in sorted(await self.store.redis.smembers(keyspace.signing_keys_key(merchant_id)), key=_key_number):
                fields = await self.store.redis.hgetall(keyspace.signing_key_key(merchant_id, key_id))
                if fields:
                    yield merchant_id, key_id, fields

    # -- configuration ---------------------------------------------------------

    async def load_config(self, settings: Settings) -> LoadSummary:
        """Create every merchant, store and terminal of merchants.toml that is missing; issue no keys.

        Existing entries are left as they are, so running it again changes nothing.
        """
        merchants = stores = terminals = 0
        for m in settings.merchants:
            merchants += await self.create_merchant(
                m.id, m.name, m.currency, m.time_zone, m.business_day_cutoff, m.receipt_width)
            for s in m.stores:
                stores += await self.add_store(m.id, s.id, s.name)
                for terminal_id in s.terminals:
                    terminals += await self.add_terminal(m.id, s.id, terminal_id)
        principals = 0
        for p in settings.partners:
            network = settings.network(p.id)
            assert network is not None, "settings validated every partner against networks.toml"
            principals += await self.create_merchant(
                p.id, network.name, network.currency, settings.member_day_time_zone, "00:00", 42, role="partner")
        for a in settings.affiliates:
            principals += await self.create_merchant(
                a.id, a.name, settings.home_network.currency, settings.member_day_time_zone, "00:00", 42, role="affiliate")
            # The budget follows the configuration; what was issued stays.
            await self.store.redis.hset(keyspace.affiliate_budget_key(a.id), "budget_points", a.budget_points)
        return LoadSummary(merchants, stores, terminals, principals)

    # -- checks ----------------------------------------------------------------

    async def _require_merchant(self, merchant_id: str) -> None:
        _check_id(MERCHANT_ID_RE, merchant_id, "invalid_merchant", "merchant id")
        if not await self.store.redis.exists(keyspace.merchant_key(merchant_id)):
            raise MerchantError("unknown_merchant", f"no merchant {merchant_id}")


def _check_merchant(
    merchant_id: str, name: str, currency: str, time_zone: str, business_day_cutoff: str, receipt_width: int
) -> None:
    _check_id(MERCHANT_ID_RE, merchant_id, "invalid_merchant", "merchant id")
    _check_name(name, "invalid_merchant", "merchant name")
    if currency not in CURRENCIES:
        raise MerchantError("invalid_merchant", f"currency must be one of {', '.join(sorted(CURRENCIES))}, got {currency!r}")
    if not isinstance(time_zone, str) or time_zone not in _time_zones():
        raise MerchantError("invalid_merchant", f"time zone must be an IANA name such as Asia/Seoul, got {time_zone!r}")
    if not isinstance(business_day_cutoff, str) or not CUTOFF_RE.fullmatch(business_day_cutoff):
        raise MerchantError("invalid_merchant", f"business day cutoff must be HH:MM (00:00-23:59), got {business_day_cutoff!r}")
    if type(receipt_width) is not int or not RECEIPT_WIDTH_MIN <= receipt_width <= RECEIPT_WIDTH_MAX:
        raise MerchantError(
            "invalid_merchant",
            f"receipt width must be {RECEIPT_WIDTH_MIN}-{RECEIPT_WIDTH_MAX} columns, got {receipt_width!r}")


@functools.cache
def _time_zones() -> frozenset[str]:
    # 'localtime' would follow whichever machine runs the gateway, and
    # 'Factory' is tzdata's placeholder for "not configured"; neither is a
    # place a store can be.
    return frozenset(zoneinfo.available_timezones() - {"localtime", "Factory"})


def _is_id(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _check_id(pattern: re.Pattern[str], value: object, code: str, what: str) -> None:
    if not _is_id(pattern, value):
        raise MerchantError(code, f"{what} must match {pattern.pattern}, got {value!r}")


def _check_key_id(merchant_id: str, key_id: str) -> None:
    if not _is_id(KEY_ID_RE, key_id) or key_id.rsplit("-k", 1)[0] != merchant_id:
        raise MerchantError("invalid_key", f"key id must look like {merchant_id}-k1, got {key_id!r}")


def _check_name(name: object, code: str, what: str) -> None:
    if (not isinstance(name, str) or not name or name != name.strip()
            or len(name) > NAME_CHARS_MAX or not name.isprintable()):
        raise MerchantError(code, f"{what} must be 1-{NAME_CHARS_MAX} printable characters without "
                                  f"leading or trailing spaces, got {name!r}")


def _created(reply: list, script: str) -> bool:
    """True for a script's 'ok', False for its 'duplicate' (the entry was there already)."""
    if reply[0] not in ("ok", "duplicate"):
        raise RuntimeError(f"{script} replied {reply[0]!r}")  # our bug, not the caller's
    return reply[0] == "ok"


def _key_number(key_id: str) -> int:
    return int(key_id.rsplit("-k", 1)[1])


def _aad(merchant_id: str, key_id: str) -> str:
    return f"pointgate:merchant-key:{merchant_id}:{key_id}"
