"""Settlement and reconciliation: a closed business day becomes payable, and the books agree.

`settle_day(date)` (`gateway settle --date YYYY-MM-DD`, and a scheduled run):

1. drains the journal consumers, so the views hold every movement;
2. per merchant with movements on its business day `date` (which must have
   ended in the merchant's time zone): per store and in total, the count,
   amount and points of sales, cancels, refunds and reversals, the coupon
   discounts by funder, the payable (points owed for the day), the fee
   (`fee_bp` of a positive payable, rounded down: in the merchant's favour)
   and the net payable;
3. writes one settlement journal entry per merchant and day moving the
   payable from `merchant:<id>` to `settled:<id>` (the net) and `fee:merchant`
   (the fee), once: its entry id is `settle:<merchant>:<date>`;
4. per partner network, the day's positions both ways at the points and
   amounts the payments used (inbound: our members at the partner's merchants,
   which we owe; outbound: its members at ours, which it owes), the net per
   currency, and every cross-network payment and give-back as an item;
5. writes it all as JSON and CSV under `var/settlements/<date>/`.

A rerun writes the same files and no second entry: the first run's report is
stored, and a rerun whose views differ from it is refused rather than
silently changing a settled day.

`reconcile_network(ours, theirs)` compares our network file with a partner's
(both sides run pointgate): every item is matched, missing on one side, off
by an amount, or on the other side's neighbouring day (timing: crossed the
cut-off).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from gateway import keyspace, payments
from gateway.clock import wall_ms
from gateway.merchants import MerchantRegistry
from gateway.settings import Settings
from gateway.store import Store
from gateway.views import JournalConsumer, day_items, day_view

KINDS = ("sale", "cancel", "refund", "reversal")
FLOWS = ("inbound", "inbound_back", "outbound", "outbound_back", "exchange_out", "exchange_in")
CSV_COLUMNS = ("date", "merchant_id", "store_id", *(f"{k}_{w}" for k in KINDS for w in ("count", "amount", "points")),
               "discounts", "payable_points", "fee_points", "net_payable_points")


class SettlementError(Exception):
    """A day cannot be settled (still open, or its views changed since it was settled)."""


class DayOpen(SettlementError):
    """The business day has not ended yet in the merchant's time zone."""


@dataclass(frozen=True, slots=True)
class DaySettlement:
    date: str
    merchants: tuple[dict[str, Any], ...]
    networks: tuple[dict[str, Any], ...]
    directory: Path

    def summary(self) -> dict[str, Any]:
        return {"date": self.date,
                "merchants": [{k: m["totals"][k] for k in ("payable_points", "fee_points", "net_payable_points")}
                              | {"merchant_id": m["merchant_id"]} for m in self.merchants],
                "networks": [{"partner": n["partner"], "position_points": n["position_points"], "net": n["net"]}
                             for n in self.networks]}


def _store_view(counters: Mapping[str, int], prefix: str) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for kind in KINDS:
        view[kind + "s"] = {w: counters.get(f"{prefix}|{kind}_{w}", 0) for w in ("count", "amount", "points")}
    view["discounts"] = {name.split("|discount|", 1)[1]: v for name, v in counters.items()
                         if name.startswith(prefix + "|discount|")}
    view["payable_points"] = counters.get(f"{prefix}|payable", 0)
    return view


def merchant_settlement(date: str, merchant_id: str, name: str, currency: str, fee_bp: int,
                        counters: Mapping[str, int], store_names: Mapping[str, str]) -> dict[str, Any]:
    """One merchant's day from the summed view counters (pure)."""
    stores = sorted({k.split("|")[2] for k in counters if k.startswith(f"m|{merchant_id}|")})
    rows = []
    for store_id in stores:
        row = {"store_id": store_id, "store_name": store_names.get(store_id, store_id)}
        row |= _store_view(counters, f"m|{merchant_id}|{store_id}")
        rows.append(row)
    totals: dict[str, Any] = {}
    for kind in KINDS:
        totals[kind + "s"] = {w: sum(r[kind + "s"][w] for r in rows) for w in ("count", "amount", "points")}
    discounts: dict[str, int] = defaultdict(int)
    for row in rows:
        for funder, points in row["discounts"].items():
            discounts[funder] += points
    payable = sum(r["payable_points"] for r in rows)
    fee = payable * fee_bp // 10_000 if payable > 0 else 0
    totals |= {"discounts": dict(sorted(discounts.items())), "payable_points": payable, "fee_points": fee,
               "net_payable_points": payable - fee}
    return {"date": date, "merchant_id": merchant_id, "merchant_name": name, "currency": currency, "fee_bp": fee_bp,
            "stores": rows, "totals": totals, "entry_id": f"settle:{merchant_id}:{date}"}


def network_settlement(date: str, partner: str, counters: Mapping[str, int],
                       items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One partner network's day, both ways (pure). `net`: per currency, what we pay the partner
    (negative: what it pays us): its merchants' sales to our members less give-backs, minus our
    merchants' sales to its members less give-backs, at the amounts the payments carried.
    `coupon_funding_points`: the discounts the partner's coupons gave our members, net of
    give-backs, which it owes us on top (in points, as the payments took them)."""
    prefix = f"p|{partner}|"
    flows: dict[str, Any] = {}
    for flow in FLOWS:
        amounts = {name.rsplit("|", 1)[1]: v for name, v in counters.items() if name.startswith(f"{prefix}{flow}_amount|")}
        flows[flow] = {"count": counters.get(f"{prefix}{flow}_count", 0), "points": counters.get(f"{prefix}{flow}_points", 0),
                       "amounts": dict(sorted(amounts.items()))}
        if flow.startswith("inbound"):
            flows[flow]["discount_points"] = counters.get(f"{prefix}{flow}_discount_points", 0)
    net: dict[str, int] = defaultdict(int)
    for sign, flow in ((1, "inbound"), (-1, "inbound_back"), (-1, "outbound"), (1, "outbound_back")):
        for currency, amount in flows[flow]["amounts"].items():
            net[currency] += sign * amount
    return {"date": date, "partner": partner, **flows, "position_points": counters.get(f"{prefix}position", 0),
            "coupon_funding_points": flows["inbound"]["discount_points"] - flows["inbound_back"]["discount_points"],
            "net": dict(sorted(net.items())),
            "items": [dict(i) for i in items if i.get("partner") == partner]}


def merchant_csv(settlement: Mapping[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in [*settlement["stores"], {"store_id": "TOTAL", **settlement["totals"]}]:
        fee = settlement["totals"]["fee_points"] if row["store_id"] == "TOTAL" else ""
        net = settlement["totals"]["net_payable_points"] if row["store_id"] == "TOTAL" else ""
        writer.writerow([settlement["date"], settlement["merchant_id"], row["store_id"],
                         *(row[k + "s"][w] for k in KINDS for w in ("count", "amount", "points")),
                         ";".join(f"{f}={p}" for f, p in sorted(row["discounts"].items())),
                         row["payable_points"], fee, net])
    return buffer.getvalue()


class Settlement:
    def __init__(self, store: Store, settings: Settings, registry: MerchantRegistry,
                 consumer: JournalConsumer | None = None, now_ms=wall_ms) -> None:
        self.store, self.settings, self.registry = store, settings, registry
        self.consumer = consumer or JournalConsumer(store, settings, registry)
        self.now_ms = now_ms

    async def settle_day(self, date: str, out_dir: Path | str = "var/settlements",
                         skip_open: bool = False) -> DaySettlement:
        """Settle business day `date`; SettlementError if it is still open for a merchant with
        movements (with `skip_open`, that merchant is left for a later run instead)."""
        dt.date.fromisoformat(date)  # a real date, or ValueError
        await self.consumer.drain()
        counters = await day_view(self.store, date)
        merchants = []
        for merchant_id in sorted({k.split("|")[1] for k in counters if k.startswith("m|")}):
            try:
                merchants.append(await self._settle_merchant(date, merchant_id, counters))
            except DayOpen:
                if not skip_open:
                    raise
        items = await day_items(self.store, date)
        partners = sorted({k.split("|")[1] for k in counters if k.startswith("p|")})
        networks = tuple(network_settlement(date, p, counters, items) for p in partners)
        directory = Path(out_dir) / date
        directory.mkdir(parents=True, exist_ok=True)
        for settlement in merchants:
            _write(directory / f"{settlement['merchant_id']}.json", _json(settlement))
            _write(directory / f"{settlement['merchant_id']}.csv", merchant_csv(settlement))
        for network in networks:
            _write(directory / f"network-{network['partner']}.json", _json(network))
        result = DaySettlement(date, tuple(merchants), networks, directory)
        _write(directory / "summary.json", _json(result.summary()))
        return result

    async def _settle_merchant(self, date: str, merchant_id: str, counters: Mapping[str, int]) -> dict[str, Any]:
        configured = next((m for m in self.settings.merchants if m.id == merchant_id), None)
        info = await self.registry.merchant(merchant_id)
        time_zone = configured.time_zone if configured else info.time_zone if info else self.settings.member_day_time_zone
        cutoff = configured.business_day_cutoff if configured else info.business_day_cutoff if info else "00:00"
        if payments.business_day(self.now_ms(), time_zone, cutoff) <= date:
            raise DayOpen(f"{merchant_id}'s business day {date} has not ended yet ({time_zone}, cut-off {cutoff})")
        settlement = merchant_settlement(
            date, merchant_id, configured.name if configured else info.name if info else merchant_id,
            configured.currency if configured else info.currency if info else self.settings.home_network.currency,
            configured.fee_bp if configured else 0, counters,
            {s.id: s.name for s in configured.stores} if configured else {})
        report_key = keyspace.settlement_report_key(date, merchant_id)
        stored = await self.store.redis.get(report_key)
        if stored is not None:
            if json.loads(stored) != settlement:
                raise SettlementError(f"{merchant_id}'s {date} was settled and its movements have changed since; "
                                      "reconcile before settling again")
            return settlement
        totals, unit = settlement["totals"], self.settings.home_network.points_unit
        payable, fee = totals["payable_points"], totals["fee_points"]
        await self.store.run("settle", [keyspace.SETTLEMENT_JOURNAL_KEY, keyspace.SETTLEMENT_ENTRIES_KEY, report_key], [
            settlement["entry_id"], merchant_id, unit, payable, fee, _json(settlement), self.now_ms()])
        return settlement


async def settle_yesterday(settlement: "Settlement", out_dir: Path | str) -> DaySettlement:
    """The scheduled run: yesterday (the network's day), every merchant whose day has ended."""
    today = payments.business_day(settlement.now_ms(), settlement.settings.member_day_time_zone, "00:00")
    yesterday = (dt.date.fromisoformat(today) - dt.timedelta(days=1)).isoformat()
    return await settlement.settle_day(yesterday, out_dir, skip_open=True)


def reconcile_network(ours: Mapping[str, Any], theirs: Mapping[str, Any],
                      theirs_nearby: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Our network file for a day against the partner's for the same day (and, to tell timing
    from missing, its files of the neighbouring days). Each of our items pairs with theirs by the
    two payment ids and the mirrored flow; several give-backs of one payment pair by amount first."""
    mirror = {"inbound": "outbound", "inbound_back": "outbound_back", "outbound": "inbound", "outbound_back": "inbound_back"}

    def key(item: Mapping[str, Any], from_partner: bool) -> tuple[str, str, str]:
        if from_partner:
            return mirror[item["flow"]], item["partner_payment_id"], item["payment_id"]
        return item["flow"], item["payment_id"], item["partner_payment_id"]

    theirs_by_key: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for item in theirs.get("items", []):
        theirs_by_key[key(item, True)].append(item)
    nearby = {key(i, True): n.get("date") for n in theirs_nearby for i in n.get("items", [])}
    exceptions, matched = [], 0
    ours_by_key: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for item in ours.get("items", []):
        ours_by_key[key(item, False)].append(item)
    for k in sorted(set(ours_by_key) | set(theirs_by_key)):
        mine, other = list(ours_by_key.get(k, [])), list(theirs_by_key.get(k, []))
        for item in list(mine):  # exact matches first
            twin = next((o for o in other if (o["amount"], o["currency"]) == (item["amount"], item["currency"])), None)
            if twin is not None:
                mine.remove(item)
                other.remove(twin)
                matched += 1
        while mine and other:
            a, b = mine.pop(0), other.pop(0)
            exceptions.append({"kind": "amount_mismatch", "flow": k[0], "payment_id": k[1], "partner_payment_id": k[2],
                               "ours": {"amount": a["amount"], "currency": a["currency"]},
                               "theirs": {"amount": b["amount"], "currency": b["currency"]}})
        for item in mine:
            where = nearby.get(k)
            exceptions.append({"kind": "timing" if where else "missing_at_partner", "flow": k[0], "payment_id": k[1],
                               "partner_payment_id": k[2], "amount": item["amount"], "currency": item["currency"],
                               **({"partner_date": where} if where else {})})
        for item in other:
            exceptions.append({"kind": "missing_at_home", "flow": k[0], "payment_id": k[1], "partner_payment_id": k[2],
                               "amount": item["amount"], "currency": item["currency"]})
    return {"date": ours.get("date"), "partner": ours.get("partner"), "matched": matched, "exceptions": exceptions,
            "status": "matched" if not exceptions else "exceptions"}


def _json(document: Any) -> str:
    return json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def _write(path: Path, text: str) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)
