"""The points ledger: member wallets, double-entry journal, two-phase holds.

Every movement is one Lua script (`gateway/lua/`) that checks everything,
then changes the member's balances and appends one journal entry to the
partition's stream, deduplicated by the caller's entry id. Only member
balances are stored; every other account (affiliate funding, merchant
payables, partner clearing, ...) exists in the journal and is derived from it.

Accounts are named `member:<id>` (available points), `member:<id>:held`
(pending holds) and `<kind>:<id>` for the rest (`affiliate:hana-card`,
`merchant:gs25`, ...).

Exceptions:

    LedgerError            a movement was refused; `.code` says why
    ├── InsufficientPoints available balance below the amount
    └── UnknownMember      no wallet with that member id
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from gateway import codes, keyspace
from gateway.clock import wall_ms
from gateway.store import Store

ACCOUNT_RE = re.compile(r"^[a-z][a-z0-9_.-]*(:[a-z0-9][a-z0-9_.-]*)+$")
ENTRY_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
AMOUNT_MAX = 10**15  # mirrors lib.lua: exact in the doubles Lua computes with


class LedgerError(Exception):
    """A movement was refused; nothing was written."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(message or code)
        self.code = code


class InsufficientPoints(LedgerError):
    pass


class UnknownMember(LedgerError):
    pass


_ERRORS: dict[str, type[LedgerError]] = {
    "insufficient_points": InsufficientPoints,
    "unknown_member": UnknownMember,
}


@dataclass(frozen=True, slots=True)
class Movement:
    """The result of one movement: `applied` is False when it was a retry of an applied entry."""

    entry_id: str
    stream_id: str
    applied: bool
    available: int
    held: int


@dataclass(frozen=True, slots=True)
class Balance:
    member_id: str
    unit: str
    available: int
    held: int


def check_amount(amount: int) -> str:
    if type(amount) is not int or not 0 < amount <= AMOUNT_MAX:
        raise LedgerError("invalid_amount", f"amount must be an integer from 1 to {AMOUNT_MAX}, got {amount!r}")
    return str(amount)


def check_account(account: str) -> str:
    if not ACCOUNT_RE.match(account) or account.startswith("member:"):
        raise LedgerError("invalid_account", f"not an external account name: {account!r}")
    return account


def check_entry_id(entry_id: str) -> str:
    if not ENTRY_ID_RE.match(entry_id):
        raise LedgerError("invalid_entry_id", f"entry ids are 1-128 characters of A-Z a-z 0-9 _ . : -, got {entry_id!r}")
    return entry_id


class Ledger:
    def __init__(self, store: Store, now_ms: Callable[[], int] = wall_ms) -> None:
        self.store = store
        self.now_ms = now_ms

    async def open_wallet(self, member_id: str, unit: str) -> bool:
        """Create the member's wallet at zero; False if it already existed."""
        partition = keyspace.partition_of_member(member_id)
        reply = await self.store.run(
            "member_create",
            [keyspace.member_key(member_id), keyspace.partition_members_key(partition)],
            [member_id, unit, self.now_ms()],
        )
        return reply[0] == "ok"

    async def balance(self, member_id: str) -> Balance:
        values = await self.store.redis.hmget(keyspace.member_key(member_id), "unit", "available", "held")
        if values[0] is None:
            raise UnknownMember("unknown_member")
        return Balance(member_id, values[0], int(values[1]), int(values[2]))

    async def credit(
        self, member_id: str, amount: int, source: str, entry_id: str, unit: str,
        kind: str = "credit", meta: Mapping[str, Any] | None = None, expires_ms: int | None = None,
    ) -> Movement:
        """Move `amount` from the external account `source` into the member's available points;
        with `expires_ms`, as a lot of points that expires then (spent before points that do not)."""
        if expires_ms is not None and not self.now_ms() < expires_ms <= AMOUNT_MAX:
            raise LedgerError("invalid_expiry", f"points must expire in the future, not at {expires_ms!r} ms")
        return await self._move("credit", member_id, entry_id, [check_amount(amount), check_account(source)], unit, kind, meta,
                                extra_args=["" if expires_ms is None else str(expires_ms)])

    async def debit(
        self, member_id: str, amount: int, destination: str, entry_id: str, unit: str,
        kind: str = "debit", meta: Mapping[str, Any] | None = None,
    ) -> Movement:
        """Move `amount` of the member's available points to the external account `destination`."""
        return await self._move("debit", member_id, entry_id, [check_amount(amount), check_account(destination)], unit, kind, meta)

    async def hold(
        self, member_id: str, amount: int, hold_id: str, entry_id: str, unit: str,
        kind: str = "hold", meta: Mapping[str, Any] | None = None,
    ) -> Movement:
        """Reserve `amount` of available points as held, pending `post` or `void`."""
        partition = keyspace.partition_of_member(member_id)
        return await self._move(
            "hold", member_id, entry_id, [check_amount(amount), check_entry_id(hold_id)], unit, kind, meta,
            extra_keys=[keyspace.hold_key(partition, hold_id)],
        )

    async def post(
        self, member_id: str, hold_id: str, destination: str, entry_id: str,
        kind: str = "post", meta: Mapping[str, Any] | None = None,
        fee_account: str | None = None, fee_points: int = 0,
    ) -> Movement:
        """Complete a pending hold: its points go to `destination`, less `fee_points` to `fee_account`."""
        if type(fee_points) is not int or fee_points < 0 or (fee_points and fee_account is None):
            raise LedgerError("invalid_fee", f"a fee is a non-negative integer with a fee account, got {fee_points!r}")
        fee = [check_account(fee_account) if fee_account else "", str(fee_points)]
        return await self._finish(member_id, hold_id, "post", check_account(destination), entry_id, kind, meta, fee)

    async def void(
        self, member_id: str, hold_id: str, entry_id: str,
        kind: str = "void", meta: Mapping[str, Any] | None = None,
    ) -> Movement:
        """Cancel a pending hold: its points return to the member's available balance."""
        return await self._finish(member_id, hold_id, "void", "", entry_id, kind, meta, ["", "0"])

    async def _finish(
        self, member_id: str, hold_id: str, operation: str, destination: str, entry_id: str,
        kind: str, meta: Mapping[str, Any] | None, fee: list[str],
    ) -> Movement:
        partition = keyspace.partition_of_member(member_id)
        check_entry_id(entry_id)
        reply = await self.store.run(
            "hold_finish",
            [*keyspace.wallet_keys(member_id), keyspace.hold_key(partition, check_entry_id(hold_id))],
            [entry_id, operation, destination, kind, _meta_json(meta), self.now_ms(), member_id, *fee],
        )
        return _movement(entry_id, reply)

    async def _move(
        self, script: str, member_id: str, entry_id: str, middle: list[str], unit: str,
        kind: str, meta: Mapping[str, Any] | None, extra_keys: list[str] | None = None,
        extra_args: list[str] | None = None,
    ) -> Movement:
        check_entry_id(entry_id)
        reply = await self.store.run(
            script,
            keyspace.wallet_keys(member_id) + (extra_keys or []),
            [entry_id, *middle, kind, _meta_json(meta), self.now_ms(), member_id, unit, *(extra_args or [])],
        )
        return _movement(entry_id, reply)


EXPIRY_BATCH = 500  # due lots read per partition per pass


async def expire_due(store: Store, now_ms: int | None = None) -> int:
    """The scheduled expiry job: expire every lot whose time has come, in every partition.

    Safe to run from many processes at once: each member's expiry is one
    script that expires a lot's remaining points at most once. Returns the
    points expired."""
    now_ms = wall_ms() if now_ms is None else now_ms
    expired = 0
    partitions = range(codes.PARTITIONS)
    while True:
        async with store.redis.pipeline(transaction=False) as pipe:
            for partition in partitions:
                pipe.zrangebyscore(keyspace.lots_due_key(partition), "-inf", now_ms, start=0, num=EXPIRY_BATCH)
            due = await pipe.execute()
        members = {item.split(" ", 1)[0] for items in due for item in items}
        this_pass = 0
        for member_id in sorted(members):
            reply = await store.run("expire", keyspace.wallet_keys(member_id), [member_id, now_ms])
            this_pass += int(reply[1])
        expired += this_pass
        partitions = [p for p, items in zip(partitions, due) if len(items) == EXPIRY_BATCH]
        if not partitions or not this_pass:
            return expired


def _meta_json(meta: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(meta or {}), separators=(",", ":"), sort_keys=True)


def _movement(entry_id: str, reply: list[Any]) -> Movement:
    status = reply[0]
    if status in ("ok", "duplicate"):
        return Movement(entry_id, reply[1], status == "ok", int(reply[2]), int(reply[3]))
    raise _ERRORS.get(status, LedgerError)(status)
