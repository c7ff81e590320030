"""The processes a benchmark measures: `gateway serve` and the baseline, started and stopped.

Each runs as its own process tree (a parent and its workers) with its output
in a log file; its CPU time is read from /proc, workers included, so a
round can say how much CPU one request cost each side whatever else the
machine was doing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import aiohttp

from gateway.embedded_redis import die_with_parent

READY_TIMEOUT_S = 60.0  # a cold start of a worker imports aiohttp, redis-py and loads every script
READY_POLL_S = 0.1
STOP_TIMEOUT_S = 15.0  # beyond the gateway's own shutdown grace (10 s)
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@dataclass
class Server:
    """One server process tree listening on `port`."""

    name: str
    command: Sequence[str]
    port: int
    env: dict[str, str]
    log_path: Path
    ready_path: str = "/healthz"
    process: subprocess.Popen | None = field(default=None, repr=False)

    async def start(self) -> "Server":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(list(self.command), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with status {self.process.returncode}; see {self.log_path}")
                try:
                    async with session.get(f"http://127.0.0.1:{self.port}{self.ready_path}") as response:
                        if response.status == 200:
                            return self
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                await asyncio.sleep(READY_POLL_S)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {self.ready_path} within {READY_TIMEOUT_S:g} s; see {self.log_path}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The parent and its workers (the workers do the serving)."""
        if self.process is None:
            return []
        return [self.process.pid, *children(self.process.pid)]

    def cpu_s(self) -> float:
        return sum(cpu_s(pid) for pid in self.pids())

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                for pid in children(self.process.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.process.kill()
                self.process.wait()
        self.process = None


def gateway_server(port: int, workers: int, redis_url: str, run_dir: Path, name: str,
                   cluster_nodes: Sequence[str] = ()) -> Server:
    """`gateway serve` on `port` over the benchmark's Redis (or, with `cluster_nodes`, its cluster),
    keyring and directories."""
    env = dict(os.environ, REDIS_URL=redis_url, POINTGATE_PORT=str(port), POINTGATE_HOST="127.0.0.1",
               POINTGATE_WORKERS=str(workers), POINTGATE_KEYRING_PATH=str(run_dir / "keyring.json"),
               POINTGATE_DATA_DIR=str(run_dir / "redis"), POINTGATE_SETTLEMENTS_DIR=str(run_dir / "settlements"))
    if cluster_nodes:
        del env["REDIS_URL"]
        env["POINTGATE_REDIS_CLUSTER_NODES"] = ",".join(cluster_nodes)
    return Server(name, [sys.executable, "-m", "gateway.cli", "serve"], port, env, run_dir / f"{name}.log", "/readyz")


def baseline_server(port: int, workers: int, run_dir: Path, name: str) -> Server:
    command = [sys.executable, "-m", "bench.baseline", "--port", str(port), "--workers", str(workers)]
    return Server(name, command, port, dict(os.environ), run_dir / f"{name}.log")
