"""`gateway serve`: N worker processes sharing one port, over one Redis.

The parent starts the bundled Redis (unless REDIS_URL is set), loads
`merchants.toml` into the merchant registry, then starts the workers with
REDIS_URL pointing at it. Each worker is a plain aiohttp server bound with
SO_REUSEPORT, so the kernel spreads connections over them; nothing in a
worker's memory is needed for correctness. One more process runs the
background jobs (journal consumer, settlement, expiry, owed reversals,
pending cash-outs) and serves nothing: a consumer round in a serving worker
held up the requests behind it. Any of them exiting stops the rest.

SIGTERM or Ctrl-C: the parent forwards SIGTERM to every worker; aiohttp
stops accepting, lets in-flight requests finish (up to `shutdown_grace_s`),
and exits; then the parent stops Redis, which fsyncs its AOF.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Sequence

from aiohttp import web
from aiohttp.web_runner import GracefulExit

from gateway.embedded_redis import die_with_parent
from gateway.merchants import MerchantRegistry
from gateway.runtime import open_runtime, redis_server
from gateway.settings import Settings, load_settings

WORKER_ENV = "POINTGATE_WORKER"
SERVING, JOBS = "serve", "jobs"
"""A worker's role (WORKER_ENV): serving requests on the shared port, or running the background jobs."""
STOP_MARGIN_S = 2.0  # beyond the grace period, before a stuck worker is killed
WAIT_POLL_S = 0.1
JOBS_NICENESS = 10
"""Added to the jobs process's niceness: the serving workers come first for the CPU (run_jobs)."""


async def _load_merchants(settings: Settings) -> None:
    async with open_runtime(settings) as rt:
        await MerchantRegistry(rt.store, rt.keyring).load_config(settings)


def serve(settings: Settings) -> int:
    """Run the gateway until SIGTERM or Ctrl-C; returns the exit status."""
    with redis_server(settings) as (url, _server):
        worker_settings = load_settings(redis_url=url, host=settings.host, port=settings.port, workers=settings.workers)
        asyncio.run(_load_merchants(worker_settings))
        env = dict(os.environ, REDIS_URL=url, POINTGATE_HOST=settings.host, POINTGATE_PORT=str(settings.port))
        workers = [
            # A worker gets SIGTERM if the parent dies, so no orphan keeps serving the port.
            subprocess.Popen([sys.executable, "-m", "gateway.serve"], env=dict(env, **{WORKER_ENV: role}),
                             preexec_fn=die_with_parent)
            for role in [SERVING] * settings.workers + [JOBS]
        ]
        redis_at = url or "Cluster " + ",".join(settings.redis_cluster_nodes)
        print(f"gateway: {settings.workers} worker(s) on http://{settings.host}:{settings.port} and one for the "
              f"background jobs, Redis {redis_at}", flush=True)
        kill_at: float | None = None

        def stop(signum: int, _frame: object) -> None:
            nonlocal kill_at
            if kill_at is None:
                # In-flight requests get the grace period; a worker still stuck after it is killed,
                # so the gateway always stops and its supervisor can start it again.
                kill_at = time.monotonic() + settings.shutdown_grace_s + STOP_MARGIN_S
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        status = 0
        while any(worker.poll() is None for worker in workers):
            time.sleep(WAIT_POLL_S)
            for worker in workers:
                code = worker.poll()
                if code is not None and code != 0 and kill_at is None:
                    # One worker died on its own: stop the rest, so a supervisor restarts the whole gateway.
                    status = code if code > 0 else 1
                    stop(signal.SIGTERM, None)
            if kill_at is not None and time.monotonic() > kill_at:
                for worker in workers:
                    if worker.poll() is None:
                        worker.kill()
        return status


def run_jobs() -> None:
    """The background jobs (gateway.app.create_app's `jobs`) in a process that serves nothing, so
    a job round never holds up a request; SIGTERM ends the round in progress and the process.
    It runs at a lower CPU priority (JOBS_NICENESS): where the workers and the jobs share cores,
    a burst of journal entries to apply waits for the sales instead of the sales for it."""
    settings = load_settings()
    _log_messages_only()
    os.nice(JOBS_NICENESS)
    asyncio.run(_jobs(settings))


def _log_messages_only() -> None:
    """Log records of their message alone, as the access log writes them (one JSON line a request),
    without the caller's file and line, thread and process that no line shows (logging HOWTO,
    "Optimization": half the cost of a record)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # type: ignore[attr-defined]  # the HOWTO's way to skip the caller lookup


async def _jobs(settings: Settings) -> None:
    from gateway.app import create_app

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(create_app(settings, jobs=True, serving=False), handle_signals=False)
    await runner.setup()  # the app's start-up: Redis, the services, and the jobs' loops
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run_worker() -> None:
    settings = load_settings()
    _log_messages_only()
    # Until the app has started there is nothing in flight, so SIGTERM ends the worker at
    # once (cancelling a half-done start-up can leave a Redis connection waiting for ever).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: os._exit(0))
    web.run_app(
        _worker_app(settings), host=settings.host, port=settings.port, reuse_port=True,
        shutdown_timeout=settings.shutdown_grace_s, access_log=None, print=None, handle_signals=False,
    )


async def _worker_app(settings: Settings) -> web.Application:
    from gateway.app import create_app

    app = create_app(settings, jobs=False)  # the jobs process runs them (run_jobs)
    app.on_startup.append(_graceful_from_now)
    app.on_startup.append(_freeze_heap)
    return app


async def _freeze_heap(app: web.Application) -> None:
    """Started: what start-up made (modules, the app, its pools) lives as long as the worker, so
    the garbage collector stops scanning it. A full collection of it stopped the worker for 50-70
    ms every few seconds under load (make bench, p99.9); the collector still runs for what
    requests allocate."""
    gc.collect()
    gc.freeze()


async def _graceful_from_now(app: web.Application) -> None:
    """Started: from now on SIGTERM and SIGINT stop accepting and let in-flight requests finish."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _raise_graceful_exit)


def _raise_graceful_exit() -> None:
    raise GracefulExit()


def main(argv: Sequence[str] | None = None) -> None:
    role = os.environ.get(WORKER_ENV)
    if role == JOBS:
        run_jobs()
    elif role:
        run_worker()


if __name__ == "__main__":
    main()
