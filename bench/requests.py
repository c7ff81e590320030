"""Pre-generated benchmark requests: real, signed sale requests as raw HTTP bytes.

Pure: no I/O and no clock reads. The time (`now_s`) and the randomness
(`token_hex`, `randbelow`) come in as arguments, so a test can pin every byte.

Every request is a real authorisation: a valid unused code of an enrolled
device (HOTP over step * 10 + seq, exactly as the phone makes it), a
PG1-HMAC-SHA256 signature over the exact body bytes, a fresh nonce and
idempotency key, and an order reference never used before. The load
generators (wrk, `bench.openloop`) only replay the bytes, so they spend no
CPU on crypto while measuring.

A code is single use per (slot, step, seq) and the gateway accepts steps
now-1..now+1, so the `CodeBook` hands out each (slot, step, seq) once, for
the step its request will be sent in (or the next one), never again.

Record file (what `bench/wrk/replay.lua` reads): for each request, `L`, its
length in bytes in decimal, a line feed, then the request bytes.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from gateway import codes, signing

SALE_PATH = "/v1/payments"
AMOUNTS_KRW = tuple(range(100, 1001, 100))
"""Small sales, so one member's balance and daily limit last a whole benchmark."""
SEQS_PER_STEP = codes.SEQ_MAX + 1


@dataclass(frozen=True, slots=True)
class Device:
    """An enrolled device whose secret the benchmark knows (it enrolled it)."""

    slot: int
    secret: bytes = field(repr=False)
    member_id: str


@dataclass(frozen=True, slots=True)
class Till:
    """A registered terminal and the signing key its merchant's requests use."""

    merchant_id: str
    store_id: str
    terminal_id: str
    key_id: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Sale:
    merchant_id: str
    order_ref: str
    idempotency_key: str
    slot: int
    step: int
    seq: int
    amount: int
    raw: bytes = field(repr=False)
    """The whole HTTP/1.1 request, headers and body, exactly as sent."""


class CodesExhausted(Exception):
    """The devices have no unused code left for the steps asked for."""


class CodeBook:
    """Hands out each (slot, step, seq) at most once, spreading consecutive codes over devices.

    A device's codes are used in counter order (step * 10 + seq), so a device
    can serve one step and later a newer one, never an older counter again.
    """

    def __init__(self, devices: Iterable[Device]) -> None:
        self._devices = deque(devices)
        self._next_counter: dict[int, int] = {d.slot: 0 for d in self._devices}

    def __len__(self) -> int:
        return len(self._devices)

    def capacity(self, step: int) -> int:
        """How many codes of `step` are still unused."""
        top = (step + 1) * SEQS_PER_STEP
        return sum(max(0, top - max(n, step * SEQS_PER_STEP)) for n in self._next_counter.values())

    def take(self, step: int, count: int) -> list[tuple[Device, int, int]]:
        """`count` codes of `step` as (device, step, seq), round robin over the devices."""
        taken: list[tuple[Device, int, int]] = []
        misses = 0
        while len(taken) < count:
            if misses >= len(self._devices):
                raise CodesExhausted(f"no unused code of step {step} left after {len(taken)} of {count}")
            device = self._devices[0]
            self._devices.rotate(-1)
            counter = max(self._next_counter[device.slot], step * SEQS_PER_STEP)
            if counter >= (step + 1) * SEQS_PER_STEP:
                misses += 1
                continue
            misses = 0
            self._next_counter[device.slot] = counter + 1
            taken.append((device, step, counter - step * SEQS_PER_STEP))
        return taken

    def fresh_left(self) -> int:
        """How many devices have shown no code yet."""
        return sum(n == 0 for n in self._next_counter.values())

    def take_fresh(self, step: int, count: int) -> list[tuple[Device, int, int]]:
        """`count` codes of `step`, each from a device that has shown no code yet (one code per device)."""
        taken: list[tuple[Device, int, int]] = []
        for _ in range(len(self._devices)):
            if len(taken) == count:
                break
            device = self._devices.popleft()
            if self._next_counter[device.slot] == 0:
                self._next_counter[device.slot] = step * SEQS_PER_STEP + 1
                taken.append((device, step, 0))
            self._devices.append(device)
        if len(taken) < count:
            raise CodesExhausted(f"only {len(taken)} of {count} devices have shown no code yet")
        return taken


def sale_body(code: str, amount: int, order_ref: str, till: Till) -> bytes:
    """The sale body as a terminal sends it (compact JSON, the order of docs/signing.md)."""
    return json.dumps({
        "order_ref": order_ref, "store_id": till.store_id, "terminal_id": till.terminal_id,
        "code": code, "amount": amount, "currency": "KRW",
    }, separators=(",", ":")).encode()


def http_request(method: str, raw_path: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {raw_path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def sale_requests(
    plan: Sequence[tuple[Device, int, int]], tills: Sequence[Till], issuer_prefix: str, host: str, now_s: float,
    tag: str, token_hex: Callable[[int], str], randbelow: Callable[[int], int],
) -> list[Sale]:
    """One signed sale per planned code; request i goes to till i mod len(tills).

    `tag` makes order references and idempotency keys unique to this round.
    """
    sales = []
    for i, (device, step, seq) in enumerate(plan):
        till = tills[i % len(tills)]
        code = codes.encode_code(issuer_prefix, device.slot, seq, device.secret, step)
        amount = AMOUNTS_KRW[randbelow(len(AMOUNTS_KRW))]
        order_ref = f"bench-{tag}-{i}"
        idempotency_key = f"bench-{tag}-{i}-{token_hex(4)}"
        body = sale_body(code, amount, order_ref, till)
        headers = signing.signed_headers(till.secret, "POST", SALE_PATH, body, till.merchant_id, till.key_id,
                                         now_s, token_hex(16))
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key, **headers}
        sales.append(Sale(till.merchant_id, order_ref, idempotency_key, device.slot, step, seq, amount,
                          http_request("POST", SALE_PATH, host, headers, body)))
    return sales


def encode_records(requests: Iterable[bytes]) -> bytes:
    """The record file bench/wrk/replay.lua reads: `L<length>\\n<bytes>` per request."""
    return b"".join(b"L%d\n%s" % (len(raw), raw) for raw in requests)


def decode_records(data: bytes) -> list[bytes]:
    """The inverse of `encode_records` (the Python load generator reads the same files)."""
    records, pos = [], 0
    while pos < len(data):
        newline = data.index(b"\n", pos)
        if data[pos:pos + 1] != b"L":
            raise ValueError(f"not a record at byte {pos}")
        length = int(data[pos + 1:newline])
        records.append(data[newline + 1:newline + 1 + length])
        pos = newline + 1 + length
    return records


def split_round_robin(items: Sequence[bytes], parts: int) -> list[list[bytes]]:
    """Item i goes to part i mod `parts` (one record file per wrk thread)."""
    return [list(items[p::parts]) for p in range(parts)]
