"""`gateway serve`: worker processes share one port and stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

from gateway.embedded_redis import free_port


def test_two_workers_serve_and_stop_on_sigterm(redis_server, tmp_path):
    """Two workers answer /readyz on one port, and SIGTERM ends the gateway with status 0."""
    port = free_port()
    env = dict(os.environ, REDIS_URL=redis_server.url, POINTGATE_KEYRING_PATH=str(tmp_path / "keyring.json"))
    gateway = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", "2"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, answer = time.monotonic() + 30, None
        while time.monotonic() < deadline and answer is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                    answer = (response.status, response.read())
            except OSError:
                time.sleep(0.1)
        gateway.send_signal(signal.SIGTERM)
        status = gateway.wait(30)
    finally:
        if gateway.poll() is None:
            gateway.kill()
    assert (200, b'{"status": "ready", "redis": true}') == answer
    assert 0 == status
