"""Members for the benchmark: enrolled the way the gateway enrols them, some of them in bulk.

`enrol_members` goes through the token service and the ledger themselves
(create the wallet, enrol each device, credit points), one call at a time
with some in flight: the small population the benchmark pays with.

`seed_members` makes a large population fast: it runs the very scripts
enrolment runs (`member_create.lua`, then `enrol.lua` with the secret
sealed by the keyring under the same associated data), pipelined a few
thousand at a time instead of one round trip each. The keys, fields and
sets it leaves are therefore exactly those of `TokenService.create_member`
followed by `TokenService.enrol`; the smoke test pays with seeded devices
to prove it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import redis.asyncio as aioredis

from bench.requests import Device
from gateway import codes, keyspace
from gateway.clock import wall_ms
from gateway.keyring import Keyring
from gateway.ledger import Ledger
from gateway.store import script_source
from gateway.tokens import SECRET_BYTES, TokenService, _aad as device_aad, enrol_call

SEED_BATCH_MEMBERS = 2_000  # members per pipeline: 4,000 script calls, a few MB of replies at most
CALLS_IN_FLIGHT = 32  # enrolments and credits in flight at once (the gateway pool holds 256 connections)
CREDIT_SOURCE = "affiliate:hana-card"  # as the tests credit members: an affiliate's funding account


@dataclass(frozen=True)
class Seeded:
    members: int
    devices: int
    seconds: float
    slot_retries: int
    payers: tuple[Device, ...]
    """The devices whose secrets were kept (the first `keep` seeded), to pay with."""


async def enrol_members(tokens: TokenService, count: int, devices_per_member: int, points: int) -> list[Device]:
    """`count` members through the token service, each with its devices and `points` credited."""
    gate = asyncio.Semaphore(CALLS_IN_FLIGHT)

    async def one() -> list[Device]:
        async with gate:
            member_id = await tokens.create_member()
            if points:
                await tokens.ledger.credit(member_id, points, CREDIT_SOURCE, "bench-seed-" + member_id,
                                           tokens.home.points_unit)
            devices = []
            for _ in range(devices_per_member):
                enrolment = await tokens.enrol(member_id)
                devices.append(Device(enrolment.slot, enrolment.secret, member_id))
            return devices

    return [d for devices in await asyncio.gather(*(one() for _ in range(count))) for d in devices]


async def credit_members(ledger: Ledger, member_ids: Sequence[str], points: int, unit: str) -> None:
    gate = asyncio.Semaphore(CALLS_IN_FLIGHT)

    async def one(member_id: str) -> None:
        async with gate:
            await ledger.credit(member_id, points, CREDIT_SOURCE, "bench-seed-" + member_id, unit)

    await asyncio.gather(*(one(m) for m in member_ids))


async def seed_members(
    client: aioredis.Redis, keyring: Keyring, count: int, unit: str, keep: int,
    randbelow: Callable[[int], int] = secrets.randbelow, token_bytes: Callable[[int], bytes] = os.urandom,
) -> Seeded:
    """`count` more members with one device each, by the enrolment scripts, pipelined."""
    create = await client.script_load(script_source("member_create"))
    enrol = await client.script_load(script_source("enrol"))
    started = time.perf_counter()
    made = retries = 0
    kept: list[Device] = []
    pending: list[tuple[str, bool]] = []  # (member id, wallet already created) still without a device
    while made < count:
        batch = pending[:SEED_BATCH_MEMBERS]
        del pending[:len(batch)]
        while len(batch) < min(SEED_BATCH_MEMBERS, count - made):
            partition = randbelow(keyspace.PARTITIONS)
            batch.append((keyspace.new_member_id(partition, token_bytes(6).hex()), False))
        now_ms = wall_ms()
        devices = []
        async with client.pipeline(transaction=False) as pipe:
            for member_id, created in batch:
                partition = keyspace.partition_of_member(member_id)
                member_key = keyspace.member_key(member_id)
                if not created:
                    pipe.evalsha(create, 2, member_key, keyspace.partition_members_key(partition), member_id, unit, now_ms)
                slot = codes.random_slot(partition, randbelow)
                secret = token_bytes(SECRET_BYTES)
                key_id, sealed = keyring.encrypt(secret, device_aad(slot))
                keys, args = enrol_call(slot, member_id, key_id, sealed, now_ms)
                pipe.evalsha(enrol, len(keys), *keys, *args)
                devices.append(Device(slot, secret, member_id))
            replies = iter(await pipe.execute())
        for (member_id, created), device in zip(batch, devices):
            if not created and next(replies)[0] != "ok":
                continue  # a member id drawn twice (1 in 10^8 at a million members): draw another
            reply = next(replies)[0]
            if reply == "slot_taken":
                retries += 1
                pending.append((member_id, True))  # the wallet exists; enrol it a device with another slot
            elif reply != "ok":
                raise RuntimeError(f"enrol.lua refused a seeded device: {reply}")
            else:
                made += 1
                if len(kept) < keep:
                    kept.append(device)
    return Seeded(made, made, time.perf_counter() - started, retries, tuple(kept))
