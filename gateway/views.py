"""Journal consumers: the merchant-side and network-side views, built exactly once.

The journal (one Redis stream per member partition) is the record; the views
are derived from it by a consumer group (`views`) that every gateway process
joins with a consumer of its own:

    read (XREADGROUP)  ->  apply + acknowledge (one Lua script, view_apply.lua)

Applying and acknowledging are one atomic step in the partition's own hash
slot, and the step skips an entry it has applied before (a set of applied
stream ids), so a consumer killed anywhere neither skips nor double-applies:
an entry read but not applied stays pending and is claimed again
(XAUTOCLAIM) by the next round of any consumer.

A view is a hash per partition and day, `pg:{mPPP}:view:<day>`, of integer
counters (fields below), plus a list of the day's cross-network items for
reconciliation. Settlement sums one day's hash over all partitions.

    m|<merchant>|<store>|<kind>_count|amount|points   kind: sale cancel refund reversal;
                                                       the merchant's business day
    m|<merchant>|<store>|payable                      points owed to the merchant (signed)
    m|<merchant>|<store>|discount|<funder>            coupon discounts funded (points, signed)
    p|<partner>|<flow>_count|points, <flow>_amount|<currency>
                                                       flow: inbound (our members at the partner's
                                                       merchants), inbound_back, outbound (its members
                                                       at ours), outbound_back, exchange_out, exchange_in
    p|<partner>|position                              what we owe the partner, in points (signed)
    a|<account>|<unit>                                every other account's change that day

Business days: a merchant's movements count on the merchant's business day
(its time zone and cut-off); network and account counters on the network day
(`member_day_time_zone`, midnight).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import redis.exceptions

from gateway import codes, keyspace, payments
from gateway.merchants import MerchantRegistry
from gateway.settings import Settings
from gateway.store import Store

log = logging.getLogger("pointgate.views")

GROUP = "views"
READ_COUNT = 200  # entries per partition per read
CLAIM_IDLE_MS = 30_000  # an entry pending this long belongs to a consumer that died
PIPELINE_PARTITIONS_MAX = 50  # partitions whose reads share one pipeline (JournalConsumer._pipelined)
_MERCHANT_KINDS = {"payment": "sale", "partner_payment": "sale", "cancel": "cancel", "refund": "refund",
                   "reversal": "reversal"}


@dataclass(frozen=True, slots=True)
class Entry:
    partition: int
    stream_id: str
    entry_id: str
    kind: str
    postings: tuple[tuple[str, str, int], ...]
    meta: Mapping[str, Any]
    ts_ms: int

    @classmethod
    def parse(cls, partition: int, stream_id: str, fields: Mapping[str, str]) -> "Entry":
        postings = tuple((str(a), str(u), int(n)) for a, u, n in json.loads(fields["postings"]))
        return cls(partition, stream_id, fields["entry"], fields["kind"], postings, json.loads(fields.get("meta") or "{}"),
                   int(fields["ts_ms"]))


@dataclass
class Deltas:
    """What one entry changes: counters by (day, field), and cross-network items by day."""

    counters: dict[tuple[str, str], int] = field(default_factory=dict)
    items: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def add(self, day: str, name: str, amount: int) -> None:
        if amount:
            self.counters[(day, name)] = self.counters.get((day, name), 0) + amount


def deltas(entry: Entry, merchant_day: Callable[[str, int], str], network_day: Callable[[int], str]) -> Deltas:
    """The view changes of one journal entry (pure: the same entry always gives the same deltas)."""
    out = Deltas()
    meta, day = entry.meta, network_day(entry.ts_ms)
    member_paid = any(a.startswith("member:") and not a.endswith(":held") for a, _, _ in entry.postings)
    for account, unit, amount in entry.postings:
        if account.startswith("member:"):
            out.add(day, f"a|{'members_held' if account.endswith(':held') else 'members'}|{unit}", amount)
        else:
            out.add(day, f"a|{account}|{unit}", amount)

    kind = _MERCHANT_KINDS.get(entry.kind)
    account = str(meta.get("account") or "")
    amount = int(meta.get("amount") or 0)
    currency = str(meta.get("currency") or "")
    gives_back = kind in ("cancel", "refund", "reversal")
    # Coupon funders, in a member's payment: the postings that take points besides the member's
    # (a give-back: that receive points besides the member's).
    funders = [(a, n) for a, _, n in entry.postings
               if member_paid and not a.startswith("member:") and (n > 0 if gives_back else n < 0)] if kind else []

    merchant_posting = next(((a, n) for a, _, n in entry.postings if a.startswith("merchant:")), None)
    if kind and merchant_posting is not None:
        merchant_id = merchant_posting[0].split(":", 1)[1]
        where = f"m|{merchant_id}|{meta.get('store_id') or '-'}"
        business_day = merchant_day(merchant_id, entry.ts_ms)
        out.add(business_day, f"{where}|{kind}_count", 1)
        out.add(business_day, f"{where}|{kind}_amount", amount)
        out.add(business_day, f"{where}|{kind}_points", abs(merchant_posting[1]))
        out.add(business_day, f"{where}|payable", merchant_posting[1])
        for funder, points in funders:
            out.add(business_day, f"{where}|discount|{funder}", -points)

    for partner_account in sorted({a for a, _, _ in entry.postings if a.startswith("partner:")}):
        partner = partner_account.split(":", 1)[1]
        signed = [n for a, _, n in entry.postings if a == partner_account]
        out.add(day, f"p|{partner}|position", sum(signed))
        flow = _flow(entry.kind, kind, account == partner_account, member_paid)
        if flow is None:
            continue
        if flow in ("inbound", "outbound_back"):
            points = sum(n for n in signed if n > 0)
        elif flow in ("inbound_back", "outbound"):
            points = -sum(n for n in signed if n < 0)
        else:
            points = abs(sum(signed))
        out.add(day, f"p|{partner}|{flow}_count", 1)
        out.add(day, f"p|{partner}|{flow}_points", points)
        if flow.startswith("inbound"):
            funded = sum(-n for f, n in funders if f == partner_account)
            out.add(day, f"p|{partner}|{flow}_discount_points", abs(funded))
        if currency and amount:
            out.add(day, f"p|{partner}|{flow}_amount|{currency}", amount)
        if flow.startswith(("inbound", "outbound")):
            ours = str(meta.get("payment_id") or "")
            theirs = str((meta.get("order_ref") if flow.startswith("inbound") else meta.get("partner_payment_id")) or "")
            out.items.append((day, {"flow": flow, "payment_id": ours, "partner_payment_id": theirs, "amount": amount,
                                    "currency": currency, "points": points, "entry_id": entry.entry_id,
                                    "partner": partner}))
    return out


def _flow(journal_kind: str, kind: str | None, via_account: bool, member_paid: bool) -> str | None:
    """Which cross-network flow an entry touching a partner's clearing account is."""
    if journal_kind == "exchange_post":
        return "exchange_out"
    if journal_kind == "exchange_in":
        return "exchange_in"
    if journal_kind == "partner_payment":
        return "outbound"  # a partner's member paid at our merchant
    if kind == "sale" and via_account:
        return "inbound"  # our member paid at the partner's merchant
    if kind in ("cancel", "refund", "reversal"):
        if via_account and member_paid:
            return "inbound_back"
        if not member_paid:
            return "outbound_back"
    return None


# -- the consumer ----------------------------------------------------------------


class JournalConsumer:
    """One process's consumer in the `views` group over every partition's journal."""

    def __init__(self, store: Store, settings: Settings, registry: MerchantRegistry,
                 name: str | None = None) -> None:
        self.store, self.settings, self.registry = store, settings, registry
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self._zones: dict[str, tuple[str, str]] = {m.id: (m.time_zone, m.business_day_cutoff) for m in settings.merchants}
        self._grouped: set[int] = set()

    # -- business days --------------------------------------------------------------

    async def _zone(self, merchant_id: str) -> tuple[str, str]:
        if merchant_id not in self._zones:
            info = await self.registry.merchant(merchant_id)
            self._zones[merchant_id] = ((info.time_zone, info.business_day_cutoff) if info is not None
                                        else (self.settings.member_day_time_zone, "00:00"))
        return self._zones[merchant_id]

    def network_day(self, ts_ms: int) -> str:
        return payments.business_day(ts_ms, self.settings.member_day_time_zone, "00:00")

    # -- rounds ---------------------------------------------------------------------

    async def run_round(self, claim_idle_ms: int = CLAIM_IDLE_MS) -> int:
        """Read what is new in every partition (and what dead consumers left pending), apply it;
        returns how many entries were applied."""
        partitions = await self._partitions()
        applied = 0
        for partition, entries in await self._read(partitions, claim_idle_ms):
            for stream_id, fields in entries:
                if fields is None:  # trimmed away: nothing to apply, only to acknowledge
                    await self.store.redis.xack(keyspace.journal_key(partition), GROUP, stream_id)
                    continue
                applied += await self.apply(Entry.parse(partition, stream_id, fields))
        return applied

    async def drain(self) -> int:
        """Rounds until nothing is left, claiming every pending entry whatever its age
        (applying twice is harmless); what settlement runs first."""
        total = 0
        while True:
            applied = await self.run_round(claim_idle_ms=0)
            total += applied
            if not applied and not await self.lag():
                return total

    async def entry_deltas(self, entry: Entry) -> Deltas:
        """The view changes of an entry, with its merchants' business days looked up."""
        merchant_days = {}
        for account, _, _ in entry.postings:
            if account.startswith("merchant:"):
                merchant_id = account.split(":", 1)[1]
                zone, cutoff = await self._zone(merchant_id)
                merchant_days[merchant_id] = payments.business_day(entry.ts_ms, zone, cutoff)
        return deltas(entry, lambda m, _ts: merchant_days[m], self.network_day)

    async def apply(self, entry: Entry) -> int:
        change = await self.entry_deltas(entry)
        days = sorted({d for d, _ in change.counters} | {d for d, _ in change.items})
        keys = [keyspace.journal_key(entry.partition), keyspace.view_applied_key(entry.partition),
                keyspace.view_days_key(entry.partition), keyspace.view_stats_key(entry.partition)]
        keys += [keyspace.view_key(entry.partition, d) for d in days] + [keyspace.view_items_key(entry.partition, d) for d in days]
        args: list[Any] = [GROUP, entry.stream_id, len(days), *days, len(change.counters)]
        for (day, name), amount in sorted(change.counters.items()):
            args += [days.index(day), name, amount]
        args.append(len(change.items))
        for day, item in change.items:
            args += [days.index(day), json.dumps(item, sort_keys=True, separators=(",", ":"))]
        reply = await self.store.run("view_apply", keys, args)
        return int(reply[1])

    async def lag(self) -> int:
        """Journal entries not yet applied, over all partitions (read plus unread)."""
        partitions = sorted(await self._partitions())
        replies = await self._pipelined(partitions, lambda pipe, partition: (
            pipe.xlen(keyspace.journal_key(partition)), pipe.hget(keyspace.view_stats_key(partition), "applied")))
        return sum(int(length) - int(applied or 0) for length, applied in zip(replies[::2], replies[1::2]))

    async def pending(self) -> int:
        """Entries read by some consumer and not yet acknowledged, over all partitions."""
        replies = await self._pipelined(await self._partitions(),
                                        lambda pipe, partition: pipe.xpending(keyspace.journal_key(partition), GROUP))
        return sum(int(r["pending"]) for r in replies)

    async def _partitions(self) -> list[int]:
        """The partitions that have a journal (and a views group on it)."""
        exists = await self._pipelined(range(codes.PARTITIONS),
                                       lambda pipe, partition: pipe.exists(keyspace.journal_key(partition)))
        present = [p for p, e in enumerate(exists) if e]
        for partition in present:
            if partition not in self._grouped:
                try:
                    await self.store.redis.xgroup_create(keyspace.journal_key(partition), GROUP, id="0")
                except redis.exceptions.ResponseError as e:
                    if "BUSYGROUP" not in str(e):
                        raise
                self._grouped.add(partition)
        return present

    async def _read(self, partitions: Iterable[int], claim_idle_ms: int) -> list[tuple[int, list[Any]]]:
        partitions = list(partitions)
        replies = await self._pipelined(partitions, lambda pipe, partition: (
            pipe.xautoclaim(keyspace.journal_key(partition), GROUP, self.name, claim_idle_ms, "0-0", count=READ_COUNT),
            pipe.xreadgroup(GROUP, self.name, {keyspace.journal_key(partition): ">"}, count=READ_COUNT)))
        found = []
        for partition, claimed, fresh in zip(partitions, replies[::2], replies[1::2]):
            entries = list(claimed[1]) + [e for _stream, batch in (fresh or []) for e in batch]
            if entries:
                found.append((partition, entries))
        return found

    async def _pipelined(self, partitions: Iterable[int], add: Callable[[Any, int], Any]) -> list[Any]:
        """The replies of `add`'s commands for every partition, PIPELINE_PARTITIONS_MAX partitions a
        pipeline: Redis runs a pipeline's commands back to back, so a round over a thousand
        partitions in one would hold every sale waiting behind it."""
        partitions = list(partitions)
        replies: list[Any] = []
        for start in range(0, len(partitions), PIPELINE_PARTITIONS_MAX):
            async with self.store.redis.pipeline(transaction=False) as pipe:
                for partition in partitions[start:start + PIPELINE_PARTITIONS_MAX]:
                    add(pipe, partition)
                replies += await pipe.execute()
        return replies


# -- reading the views -------------------------------------------------------------


async def day_view(store: Store, day: str) -> dict[str, int]:
    """One day's counters summed over every partition."""
    async with store.redis.pipeline(transaction=False) as pipe:
        for partition in range(codes.PARTITIONS):
            pipe.hgetall(keyspace.view_key(partition, day))
        replies = await pipe.execute()
    total: dict[str, int] = {}
    for reply in replies:
        for name, value in reply.items():
            total[name] = total.get(name, 0) + int(value)
    return {k: v for k, v in sorted(total.items()) if v}


async def day_items(store: Store, day: str) -> list[dict[str, Any]]:
    """One day's cross-network items over every partition, in a stable order."""
    async with store.redis.pipeline(transaction=False) as pipe:
        for partition in range(codes.PARTITIONS):
            pipe.lrange(keyspace.view_items_key(partition, day), 0, -1)
        replies = await pipe.execute()
    items = [json.loads(i) for reply in replies for i in reply]
    return sorted(items, key=lambda i: (i["payment_id"], i["entry_id"]))
