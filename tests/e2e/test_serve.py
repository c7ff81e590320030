"""`gateway serve`: worker processes share one port, and SIGTERM lets in-flight sales finish."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gateway import codes, keyspace, signing, views
from gateway.embedded_redis import free_port
from gateway.keyring import Keyring
from gateway.ledger import Ledger
from gateway.merchants import MerchantRegistry
from gateway.settings import load_settings
from gateway.tokens import TokenService

pytestmark = pytest.mark.single_redis("starts `gateway serve` workers on the one server's URL")


def start_gateway(redis_url: str, keyring_path: Path, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, REDIS_URL=redis_url, POINTGATE_KEYRING_PATH=str(keyring_path))
    gateway = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", str(workers)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return gateway, port
        except OSError:
            time.sleep(0.1)
    gateway.kill()
    gateway.wait()
    raise AssertionError("gateway serve did not become ready within 30 s")


def stop(gateway: subprocess.Popen) -> int:
    if gateway.poll() is None:
        gateway.send_signal(signal.SIGTERM)
    try:
        return gateway.wait(30)
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()  # reaped here, not by the garbage collector in some later test


async def test_two_workers_serve_and_stop_on_sigterm(redis_server, store, tmp_path):
    """Two workers answer /readyz on one port, and SIGTERM ends the gateway with status 0."""
    gateway, port = start_gateway(redis_server.url, tmp_path / "keyring.json", workers=2)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            answer = (response.status, json.loads(response.read()))
    finally:
        status = stop(gateway)
    assert ((200, {"status": "ready", "redis": True}), 0) == (answer, status)


async def test_sigterm_lets_an_in_flight_sale_finish(redis_server, store, tmp_path):
    """A sale still waiting on Redis when SIGTERM comes is answered and applied; then the gateway exits 0."""
    keyring_path = tmp_path / "keyring.json"
    gateway, port = start_gateway(redis_server.url, keyring_path, workers=1)
    try:
        keyring = Keyring.load(keyring_path, create=False)
        key_id, secret = await MerchantRegistry(store, keyring).issue_key("gs25")
        tokens = TokenService(store, Ledger(store), keyring, load_settings())
        member_id = await tokens.create_member()
        phone = await tokens.enrol(member_id)
        await tokens.ledger.credit(member_id, 5_000, "affiliate:hana-card", "seed", "HMP")
        code = codes.encode_code("9410", phone.slot, 0, phone.secret, codes.step_of(int(time.time()), 30))
        body = json.dumps({"code": code, "amount": 1_200, "currency": "KRW", "order_ref": "inflight-1",
                           "store_id": "gs25-gangnam-01", "terminal_id": "t1"}).encode()
        headers = signing.signed_headers(secret, "POST", "/v1/payments", body, "gs25", key_id, time.time(), secrets.token_hex(12))
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # Redis holds every command for 1.5 s, so the sale is in the middle of its
        # script call when the gateway is told to stop.
        await store.redis.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        writer.write(f"POST /v1/payments HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Idempotency-Key: inflight-0001\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body)
        await writer.drain()
        await asyncio.sleep(0.4)
        gateway.send_signal(signal.SIGTERM)
        response = await asyncio.wait_for(reader.read(), timeout=15)
        writer.close()
    finally:
        status = stop(gateway)
    assert response, "no response"
    status_line, _, rest = response.partition(b"\r\n")
    payment = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert (b"HTTP/1.1 201 Created", "approved", 3_800) == (status_line, payment["status"], payment["balance_after"])
    assert 3_800 == (await tokens.ledger.balance(member_id)).available
    assert 0 == status


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _listens(pid: int, port: int) -> bool:
    """Whether the process holds a socket listening on `port` (from /proc/net/tcp, state 0A)."""
    listening = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            listening.add(f"socket:[{fields[9]}]")
    return any(os.readlink(fd) in listening for fd in Path(f"/proc/{pid}/fd").iterdir())


async def test_the_background_jobs_run_in_one_process_that_serves_nothing(redis_server, store, tmp_path):
    """Two serving workers and one jobs process: the journal's only consumer is the process that
    does not listen on the port (a job round never holds up a request)."""
    gateway, port = start_gateway(redis_server.url, tmp_path / "keyring.json", workers=2)
    try:
        keyring = Keyring.load(tmp_path / "keyring.json", create=False)
        tokens = TokenService(store, Ledger(store), keyring, load_settings())
        member_id = await tokens.create_member()
        await tokens.ledger.credit(member_id, 5_000, "affiliate:hana-card", "seed", "HMP")  # a journal entry to consume
        journal = keyspace.journal_key(keyspace.partition_of_member(member_id))
        deadline = time.monotonic() + 20
        consumers: list[dict] = []
        while time.monotonic() < deadline and not consumers:
            await asyncio.sleep(0.2)
            if await store.redis.xinfo_groups(journal):
                consumers = await store.redis.xinfo_consumers(journal, views.GROUP)
        await asyncio.sleep(3 * load_settings().views_interval_s)  # long enough for any other consumer to read too
        consumers = await store.redis.xinfo_consumers(journal, views.GROUP)
        roles = {pid: _listens(pid, port) for pid in _children(gateway.pid)}
    finally:
        status = stop(gateway)
    jobs = [pid for pid, listening in roles.items() if not listening]
    assert (3, 1, 0) == (len(roles), len(jobs), status)
    assert [f"{socket.gethostname()}-{jobs[0]}"] == [c["name"] for c in consumers]
