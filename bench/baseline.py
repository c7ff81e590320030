"""The baseline: the fastest a Python process of this machine answers the same POST.

A minimal aiohttp app, run exactly as `gateway serve` runs its workers (the
same aiohttp, the default asyncio event loop, `web.run_app` bound with
SO_REUSEPORT, no access log, N worker processes): it reads the sale request's
body and answers 201 with a small JSON body, doing nothing else. Whatever
the gateway does beyond that (signature, code, Redis, JSON, logging) is what
the ratio `auth_rps / baseline_rps` measures, on the same cores at the same
moment, so a noisy machine moves both numbers together.

    python -m bench.baseline --port 8099 --workers 1
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import Sequence

from aiohttp import web

from gateway.embedded_redis import die_with_parent

ANSWER = b'{"status":"approved"}'
WORKER_ENV = "PGBENCH_BASELINE_WORKER"
WAIT_POLL_S = 0.1


async def sale(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, status=201, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/payments", sale)
    app.router.add_get("/healthz", healthz)
    return app


def run_worker(host: str, port: int) -> None:
    web.run_app(create_app(), host=host, port=port, reuse_port=True, access_log=None, print=None)


def serve(host: str, port: int, workers: int) -> int:
    """Run `workers` processes on one port until SIGTERM; returns the exit status."""
    env = dict(os.environ, **{WORKER_ENV: "1"})
    command = [sys.executable, "-m", "bench.baseline", "--host", host, "--port", str(port)]
    children = [subprocess.Popen(command, env=env, preexec_fn=die_with_parent) for _ in range(workers)]

    def stop(_signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while any(child.poll() is None for child in children):
        time.sleep(WAIT_POLL_S)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if os.environ.get(WORKER_ENV):
        run_worker(args.host, args.port)
        return 0
    return serve(args.host, args.port, args.workers)


if __name__ == "__main__":
    sys.exit(main())
