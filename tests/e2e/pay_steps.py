"""What the tests of a sale's and a reversal's steps share (tests/e2e/test_pay_steps.py on one
Redis, tests/cluster/test_cluster_payments.py on the cluster): a lost connection between two
steps, signed requests with a chosen idempotency key, and reads of the batch and the journal."""

from __future__ import annotations

import contextlib

import redis

from gateway import keyspace
from gateway.app import STORE
from gateway.store import Store
from tests.e2e.conftest import Gateway, Member, Terminal

MERCHANT = "gs25"


@contextlib.contextmanager
def lost_after(store: Store, step: str):
    """The next run of the script `step` reaches Redis and runs, and then the connection fails, as
    when the gateway dies between two steps: the terminal gets 503 and nothing after `step` runs."""
    real = store._run_script

    async def run(name, keys, args):
        reply = await real(name, keys, args)
        if name == step:
            store._run_script = real
            raise redis.ConnectionError(f"connection lost after {step}")
        return reply

    store._run_script = run
    try:
        yield
    finally:
        store._run_script = real


@contextlib.contextmanager
def scripts_run(store: Store):
    """The names of the scripts the store sends to Redis while the block runs, in order."""
    real, names = store._run_script, []

    async def run(name, keys, args):
        names.append(name)
        return await real(name, keys, args)

    store._run_script = run
    try:
        yield names
    finally:
        store._run_script = real


async def sale(terminal: Terminal, code: str, amount: int, order_ref: str, key: str):
    return await terminal.send("POST", "/v1/payments", {
        "code": code, "amount": amount, "currency": "KRW", "order_ref": order_ref, **terminal.here()}, key)


async def reversal(terminal: Terminal, order_ref: str, key: str | None = None):
    return await terminal.send("POST", "/v1/reversals", {"order_ref": order_ref, **terminal.here()}, key)


async def batch_counts(gw: Gateway, terminal: Terminal) -> tuple[str | None, str | None, str | None]:
    """The terminal's open batch: sale count, sale amount, void count (None where nothing was counted)."""
    return tuple(await gw.app[STORE].redis.hmget(
        keyspace.batch_key(MERCHANT, terminal.store_id, terminal.terminal_id), "sale_count", "sale_amount", "void_count"))


async def journal_entries(gw: Gateway, member: Member) -> list[str]:
    """The ids of the payment and reversal entries in the member's partition's journal, in order."""
    partition = keyspace.partition_of_member(member.member_id)
    entries = await gw.app[STORE].redis.xrange(keyspace.journal_key(partition))
    return [fields["entry"] for _, fields in entries if fields["entry"].startswith(("pay:", "reversal:"))]
