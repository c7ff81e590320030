"""What one script call costs the gateway's process, by the path the store sends it on.

    python -m bench.store_calls [--calls N] [--concurrency C]

Starts the bundled Redis and runs the same cheap script (`device_status` on a
slot no one holds: a few keys, one HGET, a short reply, so Redis's share is
small) N times, C calls in flight at once, on three paths, alternating,
three rounds each, and reports the client CPU per call (`time.process_time`)
and the calls per second of each, with their ratios to redis-py's own path:

- `redis-py`: the registered Script object (`await script(keys, args)`),
  redis-py's pure-Python packing, command wrapper and pool;
- `pool`: Store's EVALSHA packed by hiredis on a pooled connection
  (`Store(multiplexed=False)`, what TLS connections use);
- `multiplexed`: Store's shared connection (gateway/multiplex.py), the path
  one server's sales take.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Awaitable, Callable

from gateway import keyspace
from gateway.embedded_redis import EmbeddedRedis
from gateway.store import Store, connect

ROUNDS = 3
SLOT = 7_000_001
MEMBER = keyspace.new_member_id(7, "00000000beef")
KEYS = [keyspace.device_key(SLOT), "a", "b"]
ARGS = ["unlock", MEMBER, 0, SLOT]


async def measure(call: Callable[[], Awaitable[object]], calls: int, concurrency: int) -> tuple[float, float]:
    """(client CPU us per call, calls per second) of `calls` calls, `concurrency` at once."""
    per_worker = calls // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await call()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = per_worker * concurrency
    return cpu / done * 1e6, done / wall


async def run(url: str, calls: int, concurrency: int) -> dict[str, tuple[float, float]]:
    pooled = Store(connect(url, socket_timeout_s=5, max_connections=concurrency), multiplexed=False)
    shared = Store(connect(url, socket_timeout_s=5, max_connections=concurrency))
    script = pooled._scripts["device_status"]
    paths: dict[str, Callable[[], Awaitable[object]]] = {
        "redis-py": lambda: script(keys=KEYS, args=ARGS),
        "pool": lambda: pooled.run("device_status", KEYS, ARGS),
        "multiplexed": lambda: shared.run("device_status", KEYS, ARGS),
    }
    try:
        await pooled.load_scripts()
        for call in paths.values():
            assert ["unknown_slot"] == await call()
        rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
        for _ in range(ROUNDS):
            for name, call in paths.items():
                rounds[name].append(await measure(call, calls, concurrency))
        return {name: (statistics.median(c for c, _ in r), statistics.median(w for _, w in r)) for name, r in rounds.items()}
    finally:
        await pooled.close()
        await shared.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_calls", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as data_dir, EmbeddedRedis(data_dir) as server:
        results = asyncio.run(run(server.url, args.calls, args.concurrency))
    base_cpu, base_rate = results["redis-py"]
    print(f"| path ({args.concurrency} calls in flight) | client CPU per call (us) | calls/s | CPU vs redis-py | calls/s vs redis-py |")
    print("|---|---:|---:|---:|---:|")
    for name, (cpu, rate) in results.items():
        print(f"| {name} | {cpu:.1f} | {rate:,.0f} | {cpu / base_cpu:.2f} | {rate / base_rate:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
