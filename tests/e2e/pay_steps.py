"""What the tests of the payment verbs' steps share (tests/e2e/test_pay_steps.py on one Redis,
tests/cluster/test_cluster_payments.py and test_cluster_refunds.py on the cluster): a lost
connection between two steps, signed requests with a chosen idempotency key, and reads of the
batch and the journal."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Awaitable, Callable

import redis

from gateway import keyspace
from gateway.app import STORE
from gateway.store import Store
from tests.e2e.conftest import Gateway, Member, Terminal

MERCHANT = "gs25"


@contextlib.contextmanager
def around_scripts(store: Store, around: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]):
    """While the block runs, every script the store sends goes through `around(name, send)`, where
    `send()` is the store's own call of it on the real Redis."""
    real = store._run_script

    async def run(name, keys, args):
        return await around(name, lambda: real(name, keys, args))

    store._run_script = run
    try:
        yield
    finally:
        store._run_script = real


def lost_after(store: Store, step: str):
    """The next run of the script `step` reaches Redis and runs, and then the connection fails, as
    when the gateway dies between two steps: the terminal gets 503 and nothing after `step` runs."""
    lost: list[str] = []

    async def around(name: str, send: Callable[[], Awaitable[Any]]) -> Any:
        reply = await send()
        if name == step and not lost:
            lost.append(name)
            raise redis.ConnectionError(f"connection lost after {step}")
        return reply

    return around_scripts(store, around)


def held_before(store: Store, step: str, delay_s: float):
    """Every run of the script `step` waits `delay_s` first, so that duplicates sent at once have all
    passed the step before it (each finds the others' claim) when the first of them reaches `step`."""

    async def around(name: str, send: Callable[[], Awaitable[Any]]) -> Any:
        if name == step:
            await asyncio.sleep(delay_s)
        return await send()

    return around_scripts(store, around)


@contextlib.contextmanager
def scripts_run(store: Store):
    """The names of the scripts the store sends to Redis while the block runs, in order."""
    names: list[str] = []

    async def around(name: str, send: Callable[[], Awaitable[Any]]) -> Any:
        names.append(name)
        return await send()

    with around_scripts(store, around):
        yield names


async def sale(terminal: Terminal, code: str, amount: int, order_ref: str, key: str):
    return await terminal.send("POST", "/v1/payments", {
        "code": code, "amount": amount, "currency": "KRW", "order_ref": order_ref, **terminal.here()}, key)


async def reversal(terminal: Terminal, order_ref: str, key: str | None = None):
    return await terminal.send("POST", "/v1/reversals", {"order_ref": order_ref, **terminal.here()}, key)


async def cancel(terminal: Terminal, payment_id: str, key: str | None = None):
    return await terminal.send("POST", f"/v1/payments/{payment_id}/cancel", terminal.here(), key)


async def refund(terminal: Terminal, payment_id: str, amount: int, key: str | None = None):
    return await terminal.send("POST", f"/v1/payments/{payment_id}/refunds", {"amount": amount, **terminal.here()}, key)


async def batch_fields(gw: Gateway, terminal: Terminal, *fields: str) -> tuple[str | None, ...]:
    """Fields of the terminal's open batch (None where nothing was counted)."""
    return tuple(await gw.app[STORE].redis.hmget(
        keyspace.batch_key(terminal.merchant_id, terminal.store_id, terminal.terminal_id), *fields))


async def batch_counts(gw: Gateway, terminal: Terminal) -> tuple[str | None, ...]:
    """The terminal's open batch: sale count, sale amount, void count (None where nothing was counted)."""
    return await batch_fields(gw, terminal, "sale_count", "sale_amount", "void_count")


async def journal_entries(gw: Gateway, member: Member) -> list[str]:
    """The ids of the payment, reversal, cancel and refund entries in the member's partition's journal, in order."""
    partition = keyspace.partition_of_member(member.member_id)
    entries = await gw.app[STORE].redis.xrange(keyspace.journal_key(partition))
    return [fields["entry"] for _, fields in entries if fields["entry"].startswith(("pay:", "reversal:", "cancel:", "refund:"))]


@contextlib.contextmanager
def in_steps(store: Store, split: bool = True):
    """Inside the block the store runs the scripts of SPLITS as their steps (or, with `split`
    False, as one script each), as a cluster (one Redis) would."""
    before = store.split_steps
    store.split_steps = split
    try:
        yield
    finally:
        store.split_steps = before


async def lost_in_steps(store: Store, step: str, request: Awaitable[tuple[int, Any, dict[str, str]]]) -> None:
    """Send `request` as steps and lose the connection after `step`: the terminal gets 503, retryable."""
    with in_steps(store), lost_after(store, step):
        status, problem, _ = await request
    assert (503, "storage_unavailable") == (status, problem["code"])


def one_answer(replies: list[tuple[int, Any, dict[str, str]]]) -> Any:
    """Duplicates' replies are one answer: the same status and bytes, exactly one not marked replayed.
    Returns that answer's document."""
    answers = {(status, headers["_raw"]) for status, _, headers in replies}
    assert 1 == len(answers), [(status, document) for status, document, _ in replies]
    assert 1 == sum(1 for _, _, headers in replies if "idempotent-replayed" not in headers), "exactly one first answer"
    return replies[0][1]
