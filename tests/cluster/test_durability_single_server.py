"""The WAIT option on one Redis without replicas (the session's server): every acknowledged
movement times out, is applied, and the HTTP API says so with a retryable 503."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.app import STORE
from gateway.ledger import Ledger
from gateway.settings import Settings
from gateway.store import DurabilityTimeout, Store
from tests.e2e.conftest import serving

pytestmark = [pytest.mark.cluster,
              pytest.mark.single_redis("WAIT on a server without replicas; every cluster primary has one")]

UNIT = "HMP"
MEMBER = "m123" + "00000000beef"


async def test_wait_without_replicas_raises_with_the_movement_applied(store: Store):
    """With WAIT 1 on a server with no replica, a credit raises DurabilityTimeout, 0 acknowledged, and is applied."""
    acknowledged = Store(store.redis, wait_replicas=1, wait_timeout_ms=20)
    ledger = Ledger(acknowledged)
    await ledger.open_wallet(MEMBER, UNIT)  # member_create moves no points: no WAIT
    with pytest.raises(DurabilityTimeout) as timed_out:
        await ledger.credit(MEMBER, 900, "affiliate:hana-card", "e1", UNIT)
    assert ("credit", 1, 0, "ok") == (timed_out.value.script, timed_out.value.replicas_wanted,
                                      timed_out.value.replicas_acknowledged, timed_out.value.reply[0])
    assert 900 == (await ledger.balance(MEMBER)).available


async def test_acknowledged_script_is_loaded_again_after_noscript(store: Store):
    """After SCRIPT FLUSH the pipelined EVALSHA meets NOSCRIPT, loads the script and runs it once."""
    acknowledged = Store(store.redis, wait_replicas=1, wait_timeout_ms=20)
    ledger = Ledger(acknowledged)
    await ledger.open_wallet(MEMBER, UNIT)
    await store.redis.script_flush()
    with pytest.raises(DurabilityTimeout) as timed_out:
        await ledger.credit(MEMBER, 35, "affiliate:hana-card", "e1", UNIT)
    assert ("ok", 35) == (timed_out.value.reply[0], (await ledger.balance(MEMBER)).available)


async def test_wait_option_off_sends_no_wait(store: Store):
    """With the option off a movement is one EVALSHA: the server counts no WAIT."""
    ledger = Ledger(store)
    await ledger.open_wallet(MEMBER, UNIT)
    before = (await store.redis.info("commandstats")).get("cmdstat_wait", {}).get("calls", 0)
    await ledger.credit(MEMBER, 35, "affiliate:hana-card", "e1", UNIT)
    assert before == (await store.redis.info("commandstats")).get("cmdstat_wait", {}).get("calls", 0)


async def test_sale_without_replica_acknowledgement_is_a_retryable_503_and_applied_once(settings: Settings, store: Store):
    """A sale the replicas did not acknowledge answers 503 durability_timeout (retryable); the retry with the
    same idempotency key, once replicas answer, gets the same approved payment, debited once."""
    async with serving(dataclasses.replace(settings, redis_wait_replicas=1, redis_wait_timeout_ms=20)) as gateway:
        gateway.app[STORE].wait_replicas = 0  # seed the wallet without WAIT
        terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
        gateway.app[STORE].wait_replicas = 1
        code = member.code()
        status, problem, _ = await terminal.pay(code, 2_500, order_ref="POS1-0001", idempotency_key="idem-wait-1")
        assert (503, "durability_timeout", True, "gateway") == (status, problem["code"], problem["retryable"], problem["fault"])
        assert 7_500 == await gateway.balance(member)
        gateway.app[STORE].wait_replicas = 0  # the replicas have caught up
        status, payment, _ = await terminal.pay(code, 2_500, order_ref="POS1-0001", idempotency_key="idem-wait-1")
        assert (201, "approved", 7_500) == (status, payment["status"], payment["balance_after"])
        assert 7_500 == await gateway.balance(member)
