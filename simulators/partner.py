"""`simulators partner`: plays Taishin, a partner network, as a real separate service.

It is pointgate itself under Taishin's configuration (home network 8860 in
TWD with its own members, FamilyMart Taiwan as its merchant, Hana as its
partner), on its own bundled Redis, behind a fault proxy whose switch makes
it slow, down, answer-then-drop, or decline everything. So a partner is
configuration plus keys, and the interop API is tested against the same
code from both sides: Taishin's FamilyMart forwards our members' codes to
us, and our merchants' Taishin codes come to it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from aiohttp import web

from gateway.app import MERCHANTS, STORE, connect_partners, create_app
from gateway.embedded_redis import free_port
from gateway.partners import PartnerKeys
from gateway.settings import CONFIG_DIR_DEFAULT, Network, Settings, load_settings
from simulators.fault_proxy import Fault, FaultProxy

SWITCHES = ("none", "slow", "down", "drop", "decline")
SLOW_DELAY_S = 2.5  # longer than a typical partner read timeout's share of the terminal's deadline


TAISHIN = Network("8860", "taishin", "Taishin Bank Rewards", False, "TWD", "TSP")


def write_config(directory: Path, home_url: str, network: Network = TAISHIN) -> Path:
    """The partner's configuration: it is the home network there, and Hana is its partner."""
    config = directory / "config"
    if config.exists():
        shutil.rmtree(config)
    shutil.copytree(CONFIG_DIR_DEFAULT, config)
    (config / "networks.toml").write_text(
        f"# {network.name}'s view: it is the home network, Hana its partner.\n"
        f'[[network]]\nprefix = "{network.prefix}"\nid = "{network.id}"\nname = "{network.name}"\nhome = true\n'
        f'currency = "{network.currency}"\npoints_unit = "{network.points_unit}"\n\n'
        '[[network]]\nprefix = "9410"\nid = "hana"\nname = "Hana Members"\nhome = false\n'
        'currency = "KRW"\npoints_unit = "HMP"\n')
    (config / "partners.toml").write_text(
        f'[[partner]]\nid = "hana"\nbase_url = "{home_url}"\nconnect_timeout_s = 1\nread_timeout_s = 3\n'
        "concurrency_max = 32\ncircuit_failures_max = 5\ncircuit_open_s = 10\n")
    (config / "affiliates.toml").write_text(f'[[affiliate]]\nid = "{network.id}-card"\nname = "{network.name} Card"\n'
                                            "budget_points = 1000000000\n")
    # The home wallet's campaigns are its own; the partner runs none of its own in the simulator.
    (config / "campaigns.toml").write_text("# The partner network's own coupon campaigns: none in the simulator.\n")
    return config


@dataclass
class PartnerNetwork:
    """A running Taishin: its gateway app, its fault proxy, and how to reach it."""

    settings: Settings
    app: web.Application
    runner: web.AppRunner
    proxy: FaultProxy

    @property
    def url(self) -> str:
        return self.proxy.url

    def switch(self, mode: str) -> None:
        """none, slow, down or drop (answer then drop), at any time while running."""
        if mode not in SWITCHES or mode == "decline":
            raise ValueError("switch to none, slow, down or drop; decline is chosen at start")
        self.proxy.clear()
        self.proxy.down = mode == "down"
        if mode == "slow":
            self.proxy.always(Fault.DELAY, path_prefix="/v1/interop", delay_s=SLOW_DELAY_S)
        elif mode == "drop":
            self.proxy.always(Fault.DROP_RESPONSE, method="POST", path_prefix="/v1/interop/payments")

    async def issue_key_for_home(self) -> tuple[str, str]:
        """The key Taishin issues Hana (Hana stores it with `gateway partners set-key taishin ...`)."""
        issued = await self.app[MERCHANTS].issue_key("hana")
        return issued.key_id, issued.secret

    async def use_home_key(self, key_id: str, secret: str) -> None:
        """The key Hana issued Taishin, for Taishin's calls to Hana (our members' codes at FamilyMart)."""
        await PartnerKeys(self.app[STORE], self.app[MERCHANTS].keyring).set("hana", key_id, secret)
        await connect_partners(self.app)

    async def close(self) -> None:
        await self.proxy.close()
        await self.runner.cleanup()


async def start(directory: Path, home_url: str, port: int = 0, mode: str = "none", decline_all: bool = False) -> PartnerNetwork:
    """Start Taishin; `decline_all` sets its members' daily limit to one point, so every payment declines."""
    directory.mkdir(parents=True, exist_ok=True)
    settings = load_settings(write_config(directory, home_url), env={}, redis_url="",
                             data_dir=str(directory / "redis"), keyring_path=str(directory / "keyring.json"))
    if decline_all:
        settings = dataclasses.replace(settings, member_daily_points_max=1)
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    inner_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", inner_port).start()
    await app[MERCHANTS].load_config(settings)
    proxy = await FaultProxy("127.0.0.1", inner_port).start(port=port)
    network = PartnerNetwork(settings, app, runner, proxy)
    if mode != "decline":
        network.switch(mode)
    return network


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simulators partner", description="play Taishin, a partner network")
    parser.add_argument("--home-url", default="http://127.0.0.1:8080", help="our gateway, as Taishin calls it")
    parser.add_argument("--port", type=int, default=8090, help="where Taishin listens (its fault proxy)")
    parser.add_argument("--dir", default="var/partner/taishin", help="its configuration, keyring and Redis data")
    parser.add_argument("--fault", choices=SWITCHES, default="none", help="slow, down, drop (answer then drop), decline")
    parser.add_argument("--home-key-id", help="the key our gateway issued Taishin (gateway merchants issue-key taishin)")
    parser.add_argument("--home-secret")
    args = parser.parse_args(argv)

    async def run() -> None:
        network = await start(Path(args.dir), args.home_url, args.port, args.fault, decline_all=args.fault == "decline")
        if args.home_key_id and args.home_secret:
            await network.use_home_key(args.home_key_id, args.home_secret)
        key_id, secret = await network.issue_key_for_home()
        print(f"taishin: listening on {network.url} (fault: {args.fault}); home gateway {args.home_url}")
        print(f"taishin: on the home gateway run: gateway partners set-key taishin {key_id} {secret}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await network.close()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
