"""Journal consumers against real Redis: the views equal a from-scratch rebuild
of the journal after consumers are killed at any point (in-process between
read and apply, and `gateway consume` processes SIGKILLed at random)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import subprocess
import sys

import pytest

from gateway import codes, keyspace
from gateway.app import MERCHANTS, REDIS_URL, SETTINGS, STORE
from gateway.views import GROUP, Entry, JournalConsumer, day_view

from tests.e2e.conftest import serving
from tests.e2e.test_member_wallet import wallet


@pytest.fixture
async def gateway(settings, store):
    """A gateway whose own processes consume nothing: the tests run the consumers."""
    async with serving(dataclasses.replace(settings, views_interval_s=0)) as running:
        yield running


async def traffic(gateway, members: int = 8, sales_each: int = 6) -> None:
    """A mix of sales, partial refunds, cancels and reversals at two merchants."""
    rng = random.Random(7)
    gs25, cu = await gateway.terminal(), await gateway.terminal("cu", "cu-jongno-01", "t1")
    for _ in range(members):
        member, _ = await wallet(gateway, 500_000)
        for i in range(sales_each):
            terminal = rng.choice((gs25, cu))
            _, sale, _ = await terminal.pay(member.code(), rng.randint(1, 30) * 100, order_ref=f"o-{rng.getrandbits(40):x}")
            roll = rng.random()
            if roll < 0.2:
                await terminal.send("POST", f"/v1/payments/{sale['payment_id']}/cancel", terminal.here())
            elif roll < 0.4:
                await terminal.send("POST", f"/v1/payments/{sale['payment_id']}/refunds",
                                    {"amount": max(1, sale["amount"] // 3), "reason": "", **terminal.here()})
            elif roll < 0.5:
                await terminal.send("POST", "/v1/reversals", {"order_ref": sale["order_ref"], **terminal.here()})


async def rebuilt(gateway) -> dict[str, dict[str, int]]:
    """Every day's counters computed straight from the journals, without the consumer."""
    consumer = JournalConsumer(gateway.app[STORE], gateway.app[SETTINGS], gateway.app[MERCHANTS])
    store, views = gateway.app[STORE], {}
    for partition in range(codes.PARTITIONS):
        for stream_id, fields in await store.redis.xrange(keyspace.journal_key(partition)):
            entry = Entry.parse(partition, stream_id, fields)
            for (day, name), amount in (await consumer.entry_deltas(entry)).counters.items():
                views.setdefault(day, {})
                views[day][name] = views[day].get(name, 0) + amount
    return {day: {k: v for k, v in sorted(c.items()) if v} for day, c in views.items()}


async def consumed(gateway, days) -> dict[str, dict[str, int]]:
    return {day: await day_view(gateway.app[STORE], day) for day in days}


async def test_views_equal_a_rebuild_after_consumers_die_between_read_and_apply(gateway):
    await traffic(gateway)
    store = gateway.app[STORE]
    rng = random.Random(11)
    # Consumers that read a batch, apply part of it, and die (their reads stay pending).
    for attempt in range(6):
        doomed = JournalConsumer(store, gateway.app[SETTINGS], gateway.app[MERCHANTS], name=f"doomed-{attempt}")
        for partition, entries in await doomed._read(await doomed._partitions(), claim_idle_ms=60_000):
            for stream_id, fields in entries[: rng.randint(0, len(entries))]:
                await doomed.apply(Entry.parse(partition, stream_id, fields))
    survivor = JournalConsumer(store, gateway.app[SETTINGS], gateway.app[MERCHANTS], name="survivor")
    assert await survivor.lag() > 0
    await survivor.drain()
    assert 0 == await survivor.lag()
    expected = await rebuilt(gateway)
    assert expected and expected == await consumed(gateway, expected)
    # Nothing is pending any more, and applying everything again changes nothing.
    for partition in await survivor._partitions():
        assert 0 == (await store.redis.xpending(keyspace.journal_key(partition), GROUP))["pending"]
        for stream_id, fields in await store.redis.xrange(keyspace.journal_key(partition)):
            assert 0 == await survivor.apply(Entry.parse(partition, stream_id, fields))
    assert expected == await consumed(gateway, expected)


async def test_views_equal_a_rebuild_after_consumer_processes_are_killed_at_random(gateway, tmp_path):
    await traffic(gateway, members=10, sales_each=8)
    env = dict(os.environ, REDIS_URL=gateway.app[REDIS_URL], POINTGATE_KEYRING_PATH=gateway.app[SETTINGS].keyring_path)
    rng = random.Random(5)
    counter = JournalConsumer(gateway.app[STORE], gateway.app[SETTINGS], gateway.app[MERCHANTS], name="counter")
    before = await counter.lag()
    kills = 0
    while kills < 8 and await counter.lag():
        process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "consume"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lag = await counter.lag()
        for _ in range(300):  # once it is applying (start-up takes a while on a busy machine) ...
            if await counter.lag() < lag:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(rng.uniform(0, 0.05))  # ... kill it at a random moment
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
    assert await counter.lag() < before  # the killed processes did part of the work
    finisher = JournalConsumer(gateway.app[STORE], gateway.app[SETTINGS], gateway.app[MERCHANTS], name="finisher")
    await finisher.drain()
    expected = await rebuilt(gateway)
    assert expected == await consumed(gateway, expected)


async def test_lag_counts_what_is_not_applied_yet(gateway):
    member, _ = await wallet(gateway, 10_000)
    terminal = await gateway.terminal()
    consumer = JournalConsumer(gateway.app[STORE], gateway.app[SETTINGS], gateway.app[MERCHANTS], name="lagging")
    await consumer.drain()
    assert 0 == await consumer.lag()
    for _ in range(3):
        await terminal.pay(member.code(), 1_000)
    assert 3 == await consumer.lag()
    assert 3 == await consumer.run_round()
    assert 0 == await consumer.lag()
