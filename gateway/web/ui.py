"""`WebUi`: what the wallet and console handlers use, wired once by the application factory."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

from gateway import keyspace, payments
from gateway.clock import wall_ms
from gateway.coupons import Campaign
from gateway.member_events import MemberEvents
from gateway.members import MemberService
from gateway.merchants import MerchantRegistry
from gateway.payment_service import PaymentService
from gateway.problems import Problem
from gateway.settings import Settings
from gateway.settlement import merchant_settlement
from gateway.store import Store
from gateway.views import JournalConsumer, day_view
from gateway.web.feed import ConsoleFeed, partner_health
from gateway.web.operator_tokens import OperatorTokens

CONSOLES_MAX = 16
"""Open consoles per process: a handful of people watch a gateway; each holds a Redis connection."""
JOURNAL_STATUS_TTL_S = 2.0
"""Journal lag is read from Redis (a pipeline over every partition) at most this often per process."""
SETTLEMENT_STATUS_TTL_S = 5.0
"""Today's settlement counters (a pipeline over every partition per day) at most this often."""
CAMPAIGNS_TTL_S = 10.0
"""The wallet page lists the claimable campaigns as they were at most this long ago."""


@dataclass
class _Cached:
    value: Any = None
    until_s: float = 0.0


@dataclass
class WebUi:
    store: Store
    settings: Settings
    members: MemberService
    events: MemberEvents
    payments: PaymentService
    registry: MerchantRegistry
    live_redis: Any
    """The live feeds' own Redis client: each open console subscribes through it."""
    now_s: Callable[[], float] = time.time
    now_ms: Callable[[], int] = wall_ms
    feed: ConsoleFeed = field(init=False)
    operator_tokens: OperatorTokens = field(init=False)
    consoles: int = 0
    _journal: _Cached = field(default_factory=_Cached)
    _settlement: _Cached = field(default_factory=_Cached)
    _campaigns: _Cached = field(default_factory=_Cached)

    def __post_init__(self) -> None:
        names = {m.id: m.name for m in self.settings.merchants}
        names |= {f"{m.id}/{s.id}": s.name for m in self.settings.merchants for s in m.stores}
        self.feed = ConsoleFeed(names)
        self.operator_tokens = OperatorTokens(self.store, self.registry)
        self._consumer = JournalConsumer(self.store, self.settings, self.registry, name="console")

    # -- the console feed ----------------------------------------------------------

    def partner_health(self) -> dict[str, dict[str, Any]]:
        return partner_health(self.payments.partners, [p.id for p in self.settings.partners])

    async def publish(self) -> None:
        """One round of the console feed (the application runs it every feed.PUBLISH_INTERVAL_S)."""
        await self.feed.publish(self.store.redis, self.partner_health())

    def own_message(self) -> dict[str, Any]:
        """This process's windows and recent sales, without taking what the publisher has yet to send."""
        now_s = self.now_s()
        return {"worker": self.feed.worker, "at_ms": int(now_s * 1000), "items": [], "recent": list(self.feed.recent),
                "sales": self.feed.sales.snapshot(now_s), "partners": self.partner_health(), "dropped": self.feed.dropped}

    def open_console(self) -> None:
        if self.consoles >= CONSOLES_MAX:
            raise Problem("live_feeds_busy", f"this server has {CONSOLES_MAX} consoles open; reconnect shortly")
        self.consoles += 1

    def close_console(self) -> None:
        self.consoles -= 1

    # -- what the console reads from Redis ----------------------------------------------

    async def journal_status(self) -> dict[str, int]:
        if self._journal.until_s <= self.now_s():
            self._journal = _Cached({"lag": await self._consumer.lag(), "pending": await self._consumer.pending()},
                                    self.now_s() + JOURNAL_STATUS_TTL_S)
        return self._journal.value

    async def settlement_status(self) -> dict[str, Any]:
        if self._settlement.until_s <= self.now_s():
            self._settlement = _Cached(await self._read_settlement(), self.now_s() + SETTLEMENT_STATUS_TTL_S)
        return self._settlement.value

    async def _read_settlement(self) -> dict[str, Any]:
        """Per configured merchant: its business day now, the day so far (from the journal views),
        and whether yesterday is settled; per partner, today's position."""
        now_ms = self.now_ms()
        days: dict[str, tuple[str, str]] = {}
        for merchant in self.settings.merchants:
            today = payments.business_day(now_ms, merchant.time_zone, merchant.business_day_cutoff)
            days[merchant.id] = (today, (dt.date.fromisoformat(today) - dt.timedelta(days=1)).isoformat())
        network_today = payments.business_day(now_ms, self.settings.member_day_time_zone, "00:00")
        views = {day: await day_view(self.store, day) for day in sorted({d for pair in days.values() for d in pair}
                                                                          | {network_today})}
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for merchant in self.settings.merchants:
                pipe.get(keyspace.settlement_report_key(days[merchant.id][1], merchant.id))
            reports = await pipe.execute()
        merchants = []
        for merchant, report in zip(self.settings.merchants, reports):
            today, yesterday = days[merchant.id]
            so_far = merchant_settlement(today, merchant.id, merchant.name, merchant.currency, merchant.fee_bp,
                                         views[today], {s.id: s.name for s in merchant.stores})["totals"]
            if report is not None:
                settled = {"state": "settled", "net_payable_points": json.loads(report)["totals"]["net_payable_points"]}
            elif any(k.startswith(f"m|{merchant.id}|") for k in views[yesterday]):
                settled = {"state": "due", "net_payable_points": None}
            else:
                settled = {"state": "nothing", "net_payable_points": None}
            merchants.append({
                "merchant_id": merchant.id, "merchant_name": merchant.name, "currency": merchant.currency,
                "business_day": today, "cutoff": merchant.business_day_cutoff, "time_zone": merchant.time_zone,
                "sales": so_far["sales"], "refunds": so_far["refunds"], "cancels": so_far["cancels"],
                "payable_points": so_far["payable_points"], "fee_points": so_far["fee_points"],
                "yesterday": {"business_day": yesterday, **settled},
            })
        networks = [{"partner": p.id, "position_points": views[network_today].get(f"p|{p.id}|position", 0)}
                    for p in self.settings.partners]
        return {"network_day": network_today, "merchants": merchants, "networks": networks}

    # -- what the wallet page lists ------------------------------------------------------

    async def claimable_campaigns(self) -> list[Campaign]:
        if self._campaigns.until_s <= self.now_s():
            stored = await self.store.redis.hgetall(keyspace.CAMPAIGNS_KEY)
            now_ms = self.now_ms()
            found = [c for c in (Campaign.from_json(text) for text in stored.values())
                     if c.claimable and c.valid_from_ms <= now_ms < c.valid_until_ms]
            self._campaigns = _Cached(sorted(found, key=lambda c: c.campaign_id), self.now_s() + CAMPAIGNS_TTL_S)
        return self._campaigns.value


WEB_UI = web.AppKey("web_ui", WebUi)
