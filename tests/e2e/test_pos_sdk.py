"""The POS SDK against a real gateway on real Redis, both clients, with faults in between.

Every test runs with AsyncPosClient and with PosClient (the sync one runs in a
worker thread, as a non-async POS program would, while the gateway serves).
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from pos_sdk import (
    AsyncPosClient, Conflict, Declined, ForwardQueued, NotFound, PosClient, PosConfig, Reversed, ReversalQueued,
)
from gateway.app import MERCHANTS
from pos_sdk.journal import Journal
from simulators.fault_proxy import Fault, FaultProxy


class Sdk:
    """One client of either kind, with awaitable verbs."""

    def __init__(self, kind: str, config: PosConfig) -> None:
        self.kind, self.config = kind, config
        self.client = AsyncPosClient(config) if kind == "async" else PosClient(config)

    def __getattr__(self, verb: str):
        method = getattr(self.client, verb)
        if self.kind == "async" or verb == "outbox":
            return method

        async def threaded(*args, **kwargs):
            return await asyncio.to_thread(method, *args, **kwargs)
        return threaded

    async def close(self) -> None:
        if self.kind == "async":
            await self.client.close()
        else:
            self.client.close()


@pytest.fixture(params=["async", "sync"])
def kind(request) -> str:
    return request.param


@pytest.fixture
async def key(gateway):
    return await gateway.app[MERCHANTS].issue_key("gs25")


@pytest.fixture
async def make_sdk(gateway, key, kind, tmp_path: Path):
    made: list[Sdk] = []

    def make(base_url: str | None = None, journal: str = "journal.sqlite3", **overrides) -> Sdk:
        config = PosConfig(base_url or gateway.base_url, "gs25", "gs25-gangnam-01", "t1", key[0], key[1],
                           journal_path=str(tmp_path / journal), connect_timeout_s=1.0, read_timeout_s=2.0,
                           retry_delay_s_base=0.05, retry_delay_s_max=0.2, **overrides)
        sdk = Sdk(kind, config)
        made.append(sdk)
        return sdk

    yield make
    for sdk in made:
        await sdk.close()


@pytest.fixture
async def proxy(gateway):
    proxy = await FaultProxy("127.0.0.1", gateway.server.port).start()
    yield proxy
    await proxy.close()


def order() -> str:
    return "sdk-" + secrets.token_hex(6)


async def test_pay_cancel_refund_reverse_lookup(gateway, make_sdk):
    """The verbs round-trip through the gateway: pay, get, find, refund, cancel, reverse."""
    sdk, member = make_sdk(), await gateway.member(points=20_000)
    first = await sdk.pay(member.code(), 4_500, order())
    fetched = await sdk.get_payment(first.payment_id)
    found = await sdk.find_by_order_ref(first.order_ref)
    refund = await sdk.refund(first.payment_id, 1_500, "returned")
    second = await sdk.pay(member.code(), 2_000, order())
    cancelled = await sdk.cancel(second.payment_id)
    third = await sdk.pay(member.code(), 1_000, order())
    reversal = await sdk.reverse(third.order_ref)
    assert ("approved", 15_500) == (first.status, first.balance_after)
    assert (first.payment_id, first.payment_id) == (fetched.payment_id, found.payment_id)
    assert ("partially_refunded", 17_000) == (refund.payment.status, refund.refund.balance_after)
    assert ("cancelled", "reversed") == (cancelled.status, reversal.outcome)
    assert 17_000 == await gateway.balance(member)


async def test_declines_and_conflicts_are_typed(gateway, make_sdk):
    """A decline raises Declined with its reason and cashier message; a bad refund raises Conflict; a stranger's id NotFound."""
    sdk, member = make_sdk(), await gateway.member(points=1_000)
    with pytest.raises(Declined) as declined:
        await sdk.pay(member.code(), 5_000, order())
    paid = await sdk.pay(member.code(), 500, order())
    with pytest.raises(Conflict) as conflict:
        await sdk.refund(paid.payment_id, 501)
    with pytest.raises(NotFound):
        await sdk.get_payment("pay_000" + "0" * 16)
    assert ("insufficient_points", True) == (declined.value.decline_code, bool(declined.value.message))
    assert ("refund_exceeds_payment", conflict.value.request_id.startswith("req_")) == (conflict.value.code, True)


async def test_batch_close(gateway, make_sdk):
    """close_batch reports totals and gets matched with the next batch number."""
    sdk, member = make_sdk(), await gateway.member(points=9_000)
    p = await sdk.pay(member.code(), 3_000, order())
    batch = await sdk.close_batch({"sale_count": 1, "sale_amount": 3_000}, payment_ids=[p.payment_id])
    assert (True, 2) == (batch.matched, batch.next_batch_no)


async def test_dropped_answer_after_commit_is_approved_once(gateway, make_sdk, proxy):
    """The gateway commits but the answer is dropped: the SDK resolves it as approved, points moved once."""
    sdk, member = make_sdk(proxy.url), await gateway.member(points=10_000)
    proxy.once(Fault.DROP_RESPONSE, method="POST", path_prefix="/v1/payments")
    payment = await sdk.pay(member.code(), 2_500, order())
    assert ("approved", 7_500) == (payment.status, await gateway.balance(member))


async def test_sale_that_never_arrives_ends_reversed(gateway, make_sdk, proxy):
    """Every sale request is lost before the gateway: at the deadline the SDK reverses; no points move."""
    sdk, member = make_sdk(proxy.url, unknown_outcome_deadline_s=1.0), await gateway.member(points=10_000)
    proxy.always(Fault.DROP_REQUEST, method="POST", path_prefix="/v1/payments")
    ref = order()
    with pytest.raises(Reversed) as reversed_:
        await sdk.pay(member.code(), 2_500, ref)
    proxy.clear()
    assert ("recorded", None) == (reversed_.value.details["outcome"], reversed_.value.payment)
    assert 10_000 == await gateway.balance(member)
    with pytest.raises(Declined) as again:  # reversal wins: the same order can never be paid later
        await sdk.pay(member.code(), 2_500, ref, idempotency_key="late-" + secrets.token_hex(6))
    assert "reversed" == again.value.decline_code


async def test_reversal_queued_while_gateway_down_is_applied_once_after_restart(gateway, make_sdk, proxy):
    """Gateway unreachable: the sale ends ReversalQueued; after an SDK restart the queued reversal is sent once."""
    sdk, member = make_sdk(proxy.url, unknown_outcome_deadline_s=0.5), await gateway.member(points=10_000)
    proxy.down = True
    ref = order()
    with pytest.raises(ReversalQueued):
        await sdk.pay(member.code(), 2_500, ref)
    assert [("reversal", ref)] == [(e.kind, e.document["order_ref"]) for e in sdk.outbox()]
    await sdk.close()

    proxy.down = False
    restarted = make_sdk(proxy.url)
    sent = await restarted.flush_outbox()
    again = await restarted.flush_outbox()
    assert (["recorded"], [], []) == ([doc["outcome"] for _, doc in sent], again, restarted.outbox())
    with pytest.raises(Declined) as late:
        await restarted.pay(member.code(), 2_500, ref)
    assert ("reversed", 10_000) == (late.value.decline_code, await gateway.balance(member))


async def test_direct_reversal_is_stored_and_forwarded(gateway, make_sdk, proxy):
    """reverse() with the gateway down raises ForwardQueued; flushing later reverses the sale once."""
    sdk, member = make_sdk(proxy.url), await gateway.member(points=10_000)
    paid = await sdk.pay(member.code(), 4_000, order())
    proxy.down = True
    with pytest.raises(ForwardQueued):
        await sdk.reverse(paid.order_ref)
    proxy.down = False
    [(entry, doc)] = await sdk.flush_outbox()
    assert ("reversed", 10_000) == (doc["outcome"], await gateway.balance(member))


async def test_crash_before_the_answer_resumes_with_the_same_key(gateway, make_sdk, kind, tmp_path):
    """A terminal that crashed right after sending resumes with the journaled key: one payment, points moved once."""
    sdk, member = make_sdk(), await gateway.member(points=10_000)
    operation = sdk.client._pay(member.code(), 3_000, order(), None, (), (), None)
    request = operation.send(None)  # journaled, signed, about to go out
    if kind == "async":
        await sdk.client._perform(request)  # it reaches the gateway; then the terminal dies
    else:
        await asyncio.to_thread(sdk.client._perform, request)
    operation.close()
    await sdk.close()

    restarted = make_sdk()
    [(key, payment)] = await restarted.resume()
    assert (request.headers["Idempotency-Key"], "approved") == (key, payment.status)
    assert 7_000 == await gateway.balance(member)
    assert [] == await restarted.resume()


async def test_skewed_terminal_clock_is_corrected(gateway, key, kind, tmp_path):
    """A terminal clock 20 minutes fast is corrected from the gateway's answer and the sale goes through."""
    import time

    member = await gateway.member(points=5_000)
    config = PosConfig(gateway.base_url, "gs25", "gs25-gangnam-01", "t1", key[0], key[1], journal_path=str(tmp_path / "j.sqlite3"))
    client_kind = AsyncPosClient if kind == "async" else PosClient
    client = client_kind(config, now_s=lambda: time.time() + 1_200)
    try:
        if kind == "async":
            payment = await client.pay(member.code(), 1_000, order())
        else:
            payment = await asyncio.to_thread(client.pay, member.code(), 1_000, order())
    finally:
        await client.close() if kind == "async" else client.close()
    assert "approved" == payment.status
    assert -1_200 == round(client.ctx.clock_offset_s, -1)


def test_journal_resumes_a_sale_by_order_ref(tmp_path):
    """Beginning the same sale twice (a restart before any answer) gives the same idempotency key."""
    journal = Journal(tmp_path / "j.sqlite3")
    first = journal.begin("pay", "A-1", {"amount": 1}, "k1", "r1", 0.0)
    second = Journal(tmp_path / "j.sqlite3").begin("pay", "A-1", {"amount": 1}, "k2", "r2", 1.0)
    assert ("k1", "r1", True) == (second.idempotency_key, second.reversal_key, second.resumed)
    assert "k1" == first.idempotency_key
