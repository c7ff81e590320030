"""The gateway behind a faulty link to Redis: a lost reply never moves points twice.

The gateway reaches the real Redis through `RedisFaultProxy`. The decisive
fault is RESET_RESPONSE on the money-moving script: Redis runs it (points
move, the response is stored under the idempotency key) and the connection
is reset before the reply reaches the gateway. gateway/store.py turns the
Redis client's retries off, so the script is sent once per HTTP attempt: the
terminal is told to retry (503 `storage_unavailable`, retryable), and its
retry with the same idempotency key gets the stored original. A client
retry would instead run the script a second time, which its nonce check
answers `nonce_replayed`: a definite refusal of a sale that was approved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator

import pytest

from gateway import keyspace
from gateway.store import script_source
from pos_sdk import AsyncPosClient, PosConfig
from simulators.fault_proxy import Fault, RedisFaultProxy
from tests.e2e.conftest import Gateway, serving

pytestmark = pytest.mark.single_redis("the fault proxy stands in front of the one server")


def script_sha(name: str) -> str:
    """The SHA1 the store calls a script by (EVALSHA)."""
    return hashlib.sha1(script_source(name).encode()).hexdigest()


@dataclasses.dataclass
class Linked:
    gateway: Gateway
    proxy: RedisFaultProxy


@pytest.fixture
async def linked(redis_server, store, settings) -> AsyncIterator[Linked]:
    """A gateway whose only way to Redis is through the fault proxy."""
    async with RedisFaultProxy("127.0.0.1", redis_server.port, seed=5) as proxy:
        async with serving(dataclasses.replace(settings, redis_url=proxy.url)) as gateway:
            yield Linked(gateway, proxy)


def script_calls(proxy: RedisFaultProxy, name: str) -> list[Fault]:
    """What the proxy did to each call of the named script that it saw."""
    sha = script_sha(name)
    return [e.fault for e in proxy.stats.log if e.method == "EVALSHA" and e.path == sha]


async def journal_kinds(store, member_id: str, payment_id: str) -> list[str]:
    """The kinds of the journal entries of one payment, in order."""
    entries = await store.redis.xrange(keyspace.journal_key(keyspace.partition_of_member(member_id)))
    return [fields["kind"] for _, fields in entries if json.loads(fields["meta"]).get("payment_id") == payment_id]


async def test_lost_reply_of_the_sale_script_is_retryable_and_the_retry_gets_the_original(linked, store):
    """The sale script ran but its reply was reset: 503 retryable, then the same key replays the approval once."""
    gateway, proxy = linked.gateway, linked.proxy
    terminal = await gateway.terminal()
    member = await gateway.member(points=5_000)
    code = member.code()
    proxy.once(Fault.RESET_RESPONSE, "EVALSHA", script_sha("pay"))

    first = await terminal.pay(code, 1_200, order_ref="link-1", idempotency_key="link-sale-0001")
    second = await terminal.pay(code, 1_200, order_ref="link-1", idempotency_key="link-sale-0001")

    status, problem, _ = first
    assert (503, "storage_unavailable", True) == (status, problem["code"], problem["retryable"])
    status, payment, headers = second
    assert (201, "approved", 3_800, "true") == (status, payment["status"], payment["balance_after"],
                                                headers.get("idempotent-replayed"))
    # One script run per HTTP attempt: the client never re-sent the script behind the gateway's back.
    assert [Fault.RESET_RESPONSE, Fault.PASS] == script_calls(proxy, "pay")
    assert 3_800 == await gateway.balance(member)
    assert ["payment"] == await journal_kinds(store, member.member_id, payment["payment_id"])


async def test_sdk_resolves_a_sale_whose_script_reply_was_lost(linked, store, tmp_path):
    """Through the SDK, a sale whose script reply was reset ends approved, with the points taken once."""
    gateway, proxy = linked.gateway, linked.proxy
    terminal = await gateway.terminal()
    member = await gateway.member(points=5_000)
    config = PosConfig(gateway.base_url, "gs25", terminal.store_id, terminal.terminal_id, terminal.key_id,
                       terminal.secret, read_timeout_s=5, retry_delay_s_base=0.05,
                       unknown_outcome_deadline_s=5, journal_path=str(tmp_path / "pos.sqlite3"))
    proxy.once(Fault.RESET_RESPONSE, "EVALSHA", script_sha("pay"))
    async with AsyncPosClient(config) as pos:
        payment = await pos.pay(member.code(), 1_200, "link-2")
        unfinished = pos.journal.unfinished()
    assert ("approved", 1_200, 3_800, []) == (payment.status, payment.points, await gateway.balance(member), unfinished)
    assert Fault.RESET_RESPONSE == script_calls(proxy, "pay")[0]
    assert ["payment"] == await journal_kinds(store, member.member_id, payment.payment_id)


async def test_lost_reply_of_the_refund_script_refunds_once(linked, store):
    """A refund whose script reply was reset is retryable, and its retry gets the same refund: refunded once."""
    gateway, proxy = linked.gateway, linked.proxy
    terminal = await gateway.terminal()
    member = await gateway.member(points=5_000)
    _, payment, _ = await terminal.pay(member.code(), 2_000, order_ref="link-3")
    path = f"/v1/payments/{payment['payment_id']}/refunds"
    refund = {"amount": 500, "reason": "returned", **terminal.here()}
    proxy.once(Fault.RESET_RESPONSE, "EVALSHA", script_sha("refund"))

    first = await terminal.send("POST", path, refund, idempotency_key="link-refund-0001")
    second = await terminal.send("POST", path, refund, idempotency_key="link-refund-0001")

    assert (503, True) == (first[0], first[1]["retryable"])
    assert (201, "true") == (second[0], second[2].get("idempotent-replayed"))
    assert 3_500 == await gateway.balance(member)
    assert ["payment", "refund"] == await journal_kinds(store, member.member_id, payment["payment_id"])


async def test_readiness_reloads_scripts_that_redis_lost(gateway, store):
    """After Redis loses its script cache (a Redis 7 restart or failover, SCRIPT FLUSH), /readyz loads them again and is 200."""
    await store.redis.script_flush()
    async with gateway.session.get(gateway.base_url + "/readyz") as response:
        answer = (response.status, await response.json())
    assert ((200, {"status": "ready", "redis": True}), True) == (answer, await store.scripts_loaded())
