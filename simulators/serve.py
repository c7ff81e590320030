"""`make serve`: the gateway, its bundled Redis and the simulators, kept running for a person.

Starts, on loopback and on a fresh data dir under `var/serve/`:

- the bank simulator (cash-outs are paid) and Taishin, a partner network
  (points exchange, partner health on the console), keys exchanged both ways;
- the gateway on its configured port (8080), with the web wallet and the
  operator console;
- a member, Minji, enrolled over the member API with 50,000 points from Hana
  Card, and an operator `ops` with a console token;
- unless `--quiet`, a second member paying now and then at GS25 Hongdae and
  CU (and once in a while a replayed code), so the console has something to
  show;

and prints the links: the wallet signed in as Minji (the token is in the
URL's fragment, which a browser never sends to a server) and the console
(its token likewise). A till to pay with: `simulators terminal`, whose key is
written to `var/serve/terminal.env` (mode 0600). Ctrl-C stops it all.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

import aiohttp
from aiohttp import web

from gateway.app import MERCHANTS, REDIS_URL, STORE, create_app
from gateway.embedded_redis import free_port
from gateway.settings import load_settings
from gateway.web.operator_tokens import OperatorTokens
from pos_sdk import Declined, PosError
from simulators import bank, load, partner
from simulators.demo import exchange_keys
from simulators.phone import Phone
from simulators.terminal import StoreTerminal, TerminalError, load_profiles

SERVE_DIR = Path("var/serve")
MINJI_POINTS = 50_000
TRAFFIC_INTERVAL_S = (3.0, 7.0)
"""The background shopper pays every few seconds: enough to watch, little enough to read."""
REPLAY_SHARE = 0.15
"""About one attempt in seven shows a code already used, so the console has a decline to show."""
TOP_UP_BELOW_POINTS = 20_000
CU_TILL = "cu-jongno-01/t1"
CONSOLE_TOKEN_HOURS = 24


async def run(port: int, quiet: bool) -> int:
    the_bank = await bank.Bank().start()
    settings = load_settings(data_dir=str(SERVE_DIR / "redis"), keyring_path=str(SERVE_DIR / "keyring.json"), redis_url="",
                             bank_url=the_bank.url, bank_api_key=the_bank.api_key, port=port)
    taishin_port = free_port()
    settings = dataclasses.replace(settings, partners=tuple(
        dataclasses.replace(p, base_url=f"http://127.0.0.1:{taishin_port}") if p.id == "taishin" else p
        for p in settings.partners))
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
    except OSError as e:
        await runner.cleanup()
        await the_bank.close()
        print(f"serve: cannot listen on {settings.host}:{settings.port} ({e.strerror}); is a gateway running? "
              f"Try make serve PORT=8081", file=sys.stderr)
        return 1
    base_url = f"http://{settings.host}:{settings.port}"
    taishin = None
    traffic = None
    try:
        registry = app[MERCHANTS]
        await registry.load_config(settings)
        taishin = await partner.start(SERVE_DIR / "taishin", base_url, port=taishin_port)
        await exchange_keys(app, taishin)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            hana_card = await registry.issue_key("hana-card")
            card = (hana_card.key_id, hana_card.secret)
            minji = await Phone.enrol(base_url)
            await load.credit_member(session, base_url, card, minji.member_id, MINJI_POINTS, "SERVE-MINJI-0001")
            if await registry.merchant("ops") is None:
                await registry.create_merchant("ops", "Operations", settings.home_network.currency,
                                               settings.member_day_time_zone, "00:00", 42, role="operator")
            console_token, _ = await OperatorTokens(app[STORE], registry).issue("ops", CONSOLE_TOKEN_HOURS)
            gs25 = await registry.issue_key("gs25")
            env_file = SERVE_DIR / "terminal.env"
            fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(f"POINTGATE_BASE_URL={base_url}\nPOINTGATE_POS_KEY_ID={gs25.key_id}\n"
                           f"POINTGATE_POS_SECRET={gs25.secret}\n")
            if not quiet:
                cu = await registry.issue_key("cu")
                traffic = asyncio.create_task(shop(base_url, session, card, {"gs25": gs25, "cu": cu}))
            print(f"""
pointgate is serving at {base_url} (Redis {app[REDIS_URL]}, Taishin {taishin.url}, bank {the_bank.url}; data in {SERVE_DIR}/)

  member wallet (Minji, {MINJI_POINTS:,} points; the code changes every {settings.code_step_s} s):
    {base_url}/wallet#token={minji.token}
  operator console (operator ops):
    {base_url}/console#token={console_token}

  pay at a GS25 till, in another shell:
    set -a; . {env_file}; set +a; .venv/bin/simulators terminal --store gs25-gangnam-01 --language en
    total 4500        then type the 24 digits under the wallet's barcode (or: png FILE)

  {"a second member pays every few seconds at GS25 Hongdae and CU (make serve QUIET=1 to stop that)"
   if not quiet else "no background traffic (--quiet)"}
Ctrl-C stops everything.""", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
            print("\nserve: stopping", flush=True)
            if traffic is not None:
                traffic.cancel()
                await asyncio.gather(traffic, return_exceptions=True)
    finally:
        if taishin is not None:
            await taishin.close()
        await runner.cleanup()
        await the_bank.close()
    return 0


async def shop(base_url: str, session: aiohttp.ClientSession, card: tuple[str, str], keys: dict) -> None:
    """Jun pays small amounts at two stores, through the SDK, scanning his phone's pictures."""
    jun = await Phone.enrol(base_url)
    profiles = load_profiles()
    tills = []
    for name in ("gs25-hongdae-02/t1", CU_TILL):
        profile = profiles[name]
        key = keys[profile.merchant_id]
        tills.append(StoreTerminal.open(profile, base_url=base_url, key_id=key.key_id, secret=key.secret,
                                        journal_path=str(SERVE_DIR / f"{name.replace('/', '-')}.sqlite3"), language="en"))
    top_ups = 0
    last_png: bytes | None = None
    try:
        while True:
            await asyncio.sleep(random.uniform(*TRAFFIC_INTERVAL_S))
            try:
                if (await jun.balance()).available < TOP_UP_BELOW_POINTS:
                    top_ups += 1
                    await load.credit_member(session, base_url, card, jun.member_id, 100_000, f"SERVE-JUN-{top_ups:04d}")
                replay = last_png is not None and random.random() < REPLAY_SHARE
                png = last_png if replay else Phone.render_png(jun.next_code(time.time()), random.choice(("code128", "qr")))
                last_png = png
                await random.choice(tills).sell(random.choice((1_200, 2_500, 3_800, 4_500, 6_900)), png=png)
            except Declined:
                pass  # the console shows it under its reason
            except (PosError, TerminalError, aiohttp.ClientError, OSError) as e:
                print(f"serve: background sale failed: {e}", file=sys.stderr, flush=True)
    finally:
        for till in tills:
            await till.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simulators serve", description="the gateway and simulators for a person")
    parser.add_argument("--port", type=int, default=int(os.environ.get("POINTGATE_PORT", "8080")))
    parser.add_argument("--quiet", action="store_true", help="no background shopper")
    args = parser.parse_args(argv)
    shutil.rmtree(SERVE_DIR, ignore_errors=True)
    SERVE_DIR.mkdir(parents=True)
    return asyncio.run(run(args.port, args.quiet))


if __name__ == "__main__":
    sys.exit(main())
