"""An open-loop load generator for fixed offered load: `python -m bench.openloop`.

wrk is closed loop (a connection sends its next request only after the
answer), so a slow answer delays the requests behind it and the latency of
those requests is never measured ("coordinated omission"). wrk2 fixes that
but is not packaged by Debian, so this is the fixed-rate generator: request
i is due at t0 + i / rate whatever the answers, and its latency is measured
from that intended time to the last byte of its answer. A stall therefore
shows in every request that was due during it.

It replays the same pre-generated requests as wrk (bench/requests.py record
files), over a pool of keep-alive HTTP/1.1 connections opened before t0: a
due request takes an idle connection or waits in a queue for the next one to
come free, and that wait counts in its latency. The schedule lag (how late
the generator itself sent each request) is reported beside it, so what the
machine's own noise adds is visible. Garbage collection is off while it
runs, so the generator's own pauses do not land on the gateway's numbers.

Prints one line `PGBENCH {json}`: counts (sent, answered_2xx, approved,
answered_other, unanswered), the latency summary in ms, the schedule lag.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from bench.requests import decode_records
from simulators.load import latency_summary

CONNECTIONS_DEFAULT = 64
CONNECT_TIMEOUT_S = 5.0
START_MARGIN_S = 0.1  # after the connections are open, before the first send at the earliest
DRAIN_TIMEOUT_S = 30.0  # after the last send, how long answers may take before they count as unanswered
RESPONSE_HEAD_BYTES_MAX = 16_384  # an answer's status line and headers; aiohttp's are a few hundred bytes
APPROVED = b'"status":"approved"'


@dataclass
class Tally:
    sent: int = 0
    answered_2xx: int = 0
    approved: int = 0
    answered_other: int = 0
    other_statuses: dict[int, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    lags_s: list[float] = field(default_factory=list)
    queue_depth_max: int = 0


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, on_answer: Callable[["Connection", int, bytes], None]) -> None:
        self.on_answer = on_answer
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.intended = 0.0
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def send(self, raw: bytes, intended: float) -> None:
        assert self.transport is not None
        self.intended = intended
        self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            if len(self.buffer) > RESPONSE_HEAD_BYTES_MAX:
                raise ValueError("an answer's headers are larger than any aiohttp sends")
            return
        head = bytes(self.buffer[:head_end]).lower()
        start = head.find(b"\r\ncontent-length:")
        if start < 0:
            raise ValueError("an answer without Content-Length (the servers measured always send it)")
        end = head.find(b"\r\n", start + 2)
        length = int(head[start + 17:end if end >= 0 else len(head)])
        total = head_end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[head_end + 4:total])
        del self.buffer[:total]
        self.on_answer(self, status, body)


async def run(host: str, port: int, records: Sequence[bytes], rate_per_s: float, start_at_s: float,
              connections: int) -> Tally:
    """Send `records` open loop at `rate_per_s` from wall-clock time `start_at_s`."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    idle: list[Connection] = []
    queue: deque[tuple[bytes, float]] = deque()
    outstanding = 0
    drained = loop.create_future()
    finished_sending = False

    def on_answer(conn: Connection, status: int, body: bytes) -> None:
        nonlocal outstanding
        tally.latencies_s.append(loop.time() - conn.intended)
        if 200 <= status < 300:
            tally.answered_2xx += 1
            tally.approved += APPROVED in body
        else:
            tally.answered_other += 1
            tally.other_statuses[status] = tally.other_statuses.get(status, 0) + 1
        outstanding -= 1
        if queue:
            raw, intended = queue.popleft()
            conn.send(raw, intended)
        else:
            idle.append(conn)
        if finished_sending and outstanding == 0 and not drained.done():
            drained.set_result(None)

    for _ in range(connections):
        _, conn = await asyncio.wait_for(loop.create_connection(lambda: Connection(on_answer), host, port),
                                         CONNECT_TIMEOUT_S)
        idle.append(conn)
    # A generator that started late (a slow import on a busy machine) starts its schedule from now,
    # rather than sending the overdue part of it in one burst.
    t0 = loop.time() + max(start_at_s - time.time(), START_MARGIN_S)
    interval = 1.0 / rate_per_s
    i = 0
    while i < len(records):
        due = t0 + i * interval
        now = loop.time()
        if due > now:
            await asyncio.sleep(due - now)
            now = loop.time()
        # Everything already due goes now: a late wake-up sends a burst, as a real crowd of tills would.
        while i < len(records) and t0 + i * interval <= now:
            intended = t0 + i * interval
            tally.lags_s.append(now - intended)
            tally.sent += 1
            outstanding += 1
            if idle:
                idle.pop().send(records[i], intended)
            else:
                queue.append((records[i], intended))
                tally.queue_depth_max = max(tally.queue_depth_max, len(queue))
            i += 1
    finished_sending = True
    if outstanding:
        try:
            await asyncio.wait_for(asyncio.shield(drained), DRAIN_TIMEOUT_S)
        except TimeoutError:
            pass
    for conn in idle:
        if conn.transport is not None:
            conn.transport.close()
    return tally


def report(tally: Tally, rate_per_s: float) -> dict:
    return {
        "rate_per_s": rate_per_s, "sent": tally.sent, "answered_2xx": tally.answered_2xx, "approved": tally.approved,
        "answered_other": tally.answered_other, "unanswered": tally.sent - tally.answered_2xx - tally.answered_other,
        "other_statuses": {str(k): v for k, v in sorted(tally.other_statuses.items())},
        "latency_ms": latency_summary(tally.latencies_s), "schedule_lag_ms": latency_summary(tally.lags_s),
        "queue_depth_max": tally.queue_depth_max,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.openloop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", required=True, help="a record file of bench/requests.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--start-at", type=float, default=0.0, help="unix time of the first send (default: now + 1 s)")
    parser.add_argument("--connections", type=int, default=CONNECTIONS_DEFAULT)
    args = parser.parse_args(argv)
    records = decode_records(Path(args.records).read_bytes())
    gc.collect()
    gc.freeze()
    gc.disable()
    start_at = args.start_at or time.time() + 1.0
    tally = asyncio.run(run(args.host, args.port, records, args.rate, start_at, args.connections))
    print("PGBENCH " + json.dumps(report(tally, args.rate)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
