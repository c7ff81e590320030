"""`gateway audit`: replay the journal from the start and prove the books.

The pure part (`replay`) takes journal entries and stored state and returns a
report; `run_audit` reads them from Redis. Checks, in this order:

1. every entry's postings are integers and sum to zero per unit (double entry);
2. every entry id appears once per partition, and the entry index matches the
   stream both ways (so a movement cannot be applied twice or hidden);
3. replayed in stream order, no member's available or held points ever go
   below zero;
4. every stored member balance equals its replay, and every member account in
   the journal has a stored wallet;
5. conservation: per unit, all accounts together sum to zero, i.e. the points
   in member wallets and every other account equal the points ever issued.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from gateway import keyspace
from gateway.store import Store

XRANGE_COUNT = 1000  # entries per read: bounded memory per round trip
WALLETS_PER_PIPELINE = 500  # members read per round trip: three reads each, their replies a few hundred KB


@dataclass(frozen=True, slots=True)
class JournalEntry:
    partition: int
    stream_id: str
    entry_id: str
    kind: str
    postings: tuple[tuple[str, str, int], ...]


@dataclass(frozen=True, slots=True)
class StoredWallet:
    member_id: str
    unit: str
    available: int
    held: int
    expiring: int = 0
    lot_points: int = 0
    """The sum of the member's unspent lots of expiring points (must equal `expiring`)."""
    events: tuple[str, ...] | None = None
    """The entry ids of the member's event stream, in order (None: not read)."""


@dataclass
class AuditReport:
    entries: int = 0
    members: int = 0
    problems: list[str] = field(default_factory=list)
    balances: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.problems

    def totals_by_unit(self) -> dict[str, dict[str, int]]:
        """Per unit: points in member wallets, held, and each external account."""
        totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for (account, unit), amount in self.balances.items():
            if account.startswith("member:"):
                totals[unit]["members_held" if account.endswith(":held") else "members_available"] += amount
            else:
                totals[unit][account] += amount
        return {unit: dict(t) for unit, t in totals.items()}


def parse_entry(partition: int, stream_id: str, fields: Mapping[str, str]) -> JournalEntry:
    postings = tuple((str(a), str(u), n) for a, u, n in json.loads(fields["postings"]))
    return JournalEntry(partition, stream_id, fields["entry"], fields["kind"], postings)


def replay(
    entries: Iterable[JournalEntry],
    wallets: Iterable[StoredWallet],
    indexes: Mapping[int, Mapping[str, str]],
) -> AuditReport:
    report = AuditReport()
    problems = report.problems
    balances: dict[tuple[str, str], int] = defaultdict(int)
    seen: dict[int, dict[str, str]] = defaultdict(dict)
    touching: dict[str, list[str]] = defaultdict(list)
    for entry in entries:
        report.entries += 1
        where = f"entry {entry.entry_id} ({entry.stream_id}, partition {entry.partition})"
        sums: dict[str, int] = defaultdict(int)
        for account, unit, amount in entry.postings:
            if type(amount) is not int:
                problems.append(f"{where}: amount {amount!r} is not an integer")
                continue
            sums[unit] += amount
        for unit, total in sums.items():
            if total != 0:
                problems.append(f"{where}: postings in {unit} sum to {total}, not 0")
        for member_id in {a.split(":")[1] for a, _, _ in entry.postings if a.startswith("member:")}:
            touching[member_id].append(entry.entry_id)
        if entry.entry_id in seen[entry.partition]:
            problems.append(f"{where}: entry id already used by {seen[entry.partition][entry.entry_id]}")
        seen[entry.partition][entry.entry_id] = entry.stream_id
        if indexes.get(entry.partition, {}).get(entry.entry_id) != entry.stream_id:
            problems.append(f"{where}: entry index does not point at this entry")
        for account, unit, amount in entry.postings:
            if type(amount) is not int:
                continue
            balances[(account, unit)] += amount
            if account.startswith("member:") and balances[(account, unit)] < 0:
                problems.append(f"{where}: {account} went negative ({balances[(account, unit)]} {unit})")
    for partition, index in indexes.items():
        for entry_id, stream_id in index.items():
            if seen[partition].get(entry_id) != stream_id:
                problems.append(f"entry index of partition {partition} names {entry_id} at {stream_id}, not in the journal")
    wallet_accounts = set()
    for wallet in wallets:
        report.members += 1
        if wallet.expiring != wallet.lot_points or not 0 <= wallet.expiring <= wallet.available:
            problems.append(f"member:{wallet.member_id}: {wallet.expiring} expiring points, lots of {wallet.lot_points}, "
                            f"{wallet.available} available")
        if wallet.events is not None and list(wallet.events) != touching.get(wallet.member_id, []):
            problems.append(f"member:{wallet.member_id}: the event stream is not one event per journal entry, in order")
        for account, stored in ((f"member:{wallet.member_id}", wallet.available), (f"member:{wallet.member_id}:held", wallet.held)):
            wallet_accounts.add((account, wallet.unit))
            replayed = balances.get((account, wallet.unit), 0)
            if stored != replayed:
                problems.append(f"{account}: stored balance {stored} {wallet.unit} but the journal gives {replayed}")
    for (account, unit), amount in balances.items():
        if account.startswith("member:") and (account, unit) not in wallet_accounts and amount != 0:
            problems.append(f"{account}: {amount} {unit} in the journal but no stored wallet")
    unit_totals: dict[str, int] = defaultdict(int)
    for (_, unit), amount in balances.items():
        unit_totals[unit] += amount
    for unit, total in sorted(unit_totals.items()):
        if total != 0:
            problems.append(f"conservation: all {unit} accounts sum to {total}, not 0")
    report.balances = dict(balances)
    return report


SETTLEMENT_PARTITION = -1  # the settlement journal, audited with the partitions' journals


async def read_journal(store: Store, partition: int) -> list[JournalEntry]:
    key = keyspace.SETTLEMENT_JOURNAL_KEY if partition == SETTLEMENT_PARTITION else keyspace.journal_key(partition)
    entries: list[JournalEntry] = []
    start = "-"
    while True:
        batch = await store.redis.xrange(key, min=start, max="+", count=XRANGE_COUNT)
        entries.extend(parse_entry(partition, sid, fields) for sid, fields in batch)
        if len(batch) < XRANGE_COUNT:
            return entries
        start = "(" + batch[-1][0]


async def run_audit(store: Store) -> AuditReport:
    """Read every partition's journal, entry index and wallets, and replay them."""
    entries: list[JournalEntry] = []
    wallets: list[StoredWallet] = []
    indexes: dict[int, dict[str, str]] = {}
    # Which partitions hold anything, in one round trip rather than two per partition.
    async with store.redis.pipeline(transaction=False) as pipe:
        for partition in range(keyspace.PARTITIONS):
            pipe.scard(keyspace.partition_members_key(partition))
            pipe.exists(keyspace.journal_key(partition))
        occupied = await pipe.execute()
    for partition in range(keyspace.PARTITIONS):
        if not occupied[2 * partition] and not occupied[2 * partition + 1]:
            continue
        members = await store.redis.smembers(keyspace.partition_members_key(partition))
        entries.extend(await read_journal(store, partition))
        indexes[partition] = await store.redis.hgetall(keyspace.entry_index_key(partition))
        ordered = sorted(members)
        # Pipelined, a chunk of members per round trip: one round trip per read made a million
        # members take most of an hour (make bench measures it with 1,000,000).
        for start in range(0, len(ordered), WALLETS_PER_PIPELINE):
            chunk = ordered[start:start + WALLETS_PER_PIPELINE]
            async with store.redis.pipeline(transaction=False) as pipe:
                for member_id in chunk:
                    pipe.hmget(keyspace.member_key(member_id), "unit", "available", "held", "expiring")
                    pipe.hvals(keyspace.member_lot_points_key(member_id))
                    pipe.xrange(keyspace.member_events_key(member_id))
                replies = await pipe.execute()
            for i, member_id in enumerate(chunk):
                (unit, available, held, expiring), lots, events = replies[3 * i:3 * i + 3]
                if unit is None:
                    continue
                wallets.append(StoredWallet(member_id, unit, int(available), int(held), int(expiring or 0),
                                            sum(map(int, lots)), tuple(fields["entry"] for _, fields in events)))
    if await store.redis.exists(keyspace.SETTLEMENT_JOURNAL_KEY):
        entries.extend(await read_journal(store, SETTLEMENT_PARTITION))
        indexes[SETTLEMENT_PARTITION] = await store.redis.hgetall(keyspace.SETTLEMENT_ENTRIES_KEY)
    return replay(entries, wallets, indexes)
