"""`gateway` command line: operate the gateway and its books.

    gateway serve [--host H] [--port P] [--workers N]   run the gateway (bundled Redis unless REDIS_URL)
    gateway audit                 replay the journal; exit 1 naming the first discrepancy
    gateway expire-points         expire every lot of points whose date has passed (the server does it every minute)
    gateway consume [--once]      run a journal consumer (the views settlement reads); the server runs one too
    gateway status                the journal consumers' lag, pending entries and the days in the views
    gateway settle --date D [--out DIR]   settle business day D: files under var/settlements/D/, entries once
    gateway recon network OURS THEIRS [--nearby FILE ...]   our network file against a partner's: the exceptions
    gateway keys status           which keys encrypt how many device secrets
    gateway keys rotate           new active key, re-encrypt every secret, no downtime
    gateway keys retire KEY_ID    drop a key no secret uses any more
    gateway merchants create|add-store|add-terminal ...   register merchants, their stores and terminals
    gateway merchants issue-key|revoke-key ...            signing keys; a new secret is printed only once
    gateway merchants list|load-config                    show the registry; create what merchants.toml lists
    gateway operators add ID [--name N]   an operator of the signed admin API (campaigns); prints its key once
    gateway operators console-token ID [--hours H]   sign-in for the operator console (/console); printed once
    gateway partners set-key ID KEY_ID SECRET   the key a partner network issued us (stored encrypted)
    gateway partners list                       partners, their URLs and whether we hold their key
    gateway fx show | set FILE | reset          exchange rates: the current table; replace it at run time
    gateway redis                 run the bundled Redis in the foreground (Ctrl-C stops it)

Settings come from `config/` and `POINTGATE_*` variables (see README).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tomllib
import signal
import sys
from typing import Sequence

from gateway import merchants_cli, operators_cli
from gateway import fx, keyspace
from gateway.audit import run_audit
from gateway.ledger import expire_due
from gateway.settlement import Settlement, SettlementError, reconcile_network
from gateway.views import JournalConsumer
from gateway.cashouts import Cashouts
from gateway.embedded_redis import EmbeddedRedisError
from gateway.keyring import KeyringError
from gateway.merchants import MerchantRegistry
from gateway.partners import PartnerKeys
from gateway.serve import serve
from gateway.runtime import open_runtime, redis_server
from gateway.settings import SettingsError, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="pointgate gateway")
    parser.add_argument("--config-dir", help="directory of gateway.toml, networks.toml, merchants.toml")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the gateway's HTTP APIs")
    serve_parser.add_argument("--host", help="address to listen on (default from gateway.toml)")
    serve_parser.add_argument("--port", type=int, help="port to listen on")
    serve_parser.add_argument("--workers", type=int, help="worker processes sharing the port")
    commands.add_parser("audit", help="replay the journal and prove every balance")
    commands.add_parser("expire-points", help="expire the points whose expiry date has passed, now")
    consume = commands.add_parser("consume", help="run a journal consumer of the views")
    consume.add_argument("--once", action="store_true", help="apply what is there, then stop")
    commands.add_parser("status", help="journal consumer lag and pending entries")
    settle = commands.add_parser("settle", help="settle a closed business day")
    settle.add_argument("--date", required=True, help="YYYY-MM-DD, the merchants' business day")
    settle.add_argument("--out", default="var/settlements", help="directory for the files (default var/settlements)")
    recon = commands.add_parser("recon", help="reconcile settlement files")
    recon_commands = recon.add_subparsers(dest="recon_command", required=True)
    network = recon_commands.add_parser("network", help="our network file against the partner's for the same day")
    network.add_argument("ours")
    network.add_argument("theirs")
    network.add_argument("--nearby", action="append", default=[], help="the partner's file of a neighbouring day")
    keys = commands.add_parser("keys", help="encryption keys of secrets at rest")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    key_commands.add_parser("status", help="key ids and how many secrets each encrypts")
    key_commands.add_parser("rotate", help="make a fresh key active and re-encrypt every secret")
    retire = key_commands.add_parser("retire", help="remove a key that no secret uses")
    retire.add_argument("key_id")
    merchants_cli.add_parser(commands)
    operators_cli.add_parser(commands)
    partners = commands.add_parser("partners", help="partner networks and the keys they issued us")
    partner_commands = partners.add_subparsers(dest="partners_command", required=True)
    set_key = partner_commands.add_parser("set-key", help="store the key a partner network issued us")
    set_key.add_argument("partner_id")
    set_key.add_argument("key_id")
    set_key.add_argument("secret", help="as issued (pgsk_...); or - to read it from standard input")
    partner_commands.add_parser("list", help="configured partner networks")
    fx_parser = commands.add_parser("fx", help="exchange rates")
    fx_commands = fx_parser.add_subparsers(dest="fx_command", required=True)
    fx_commands.add_parser("show", help="the rates in force")
    fx_set = fx_commands.add_parser("set", help="replace the rates at run time from a TOML file like config/fx.toml")
    fx_set.add_argument("file")
    fx_commands.add_parser("reset", help="go back to config/fx.toml")
    commands.add_parser("redis", help="run the bundled Redis in the foreground")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config_dir)
        if args.command == "serve":
            overrides = {k: v for k in ("host", "port", "workers") if (v := getattr(args, k)) is not None}
            return serve(load_settings(args.config_dir, **overrides))
        if args.command == "redis":
            return _run_redis(settings)
        if args.command == "recon":
            return _recon(settings, args)
        return asyncio.run(_COMMANDS[args.command](settings, args))
    except (SettingsError, EmbeddedRedisError, KeyringError) as e:
        print(f"gateway: {e}", file=sys.stderr)
        return 2


async def _consume(settings, args) -> int:
    async with open_runtime(settings) as rt:
        consumer = JournalConsumer(rt.store, settings, MerchantRegistry(rt.store, rt.keyring))
        if args.once:
            print(f"consume: {await consumer.drain():,} journal entries applied")
            return 0
        while True:
            await consumer.run_round()
            await asyncio.sleep(max(settings.views_interval_s, 0.2))


async def _status(settings, args) -> int:
    async with open_runtime(settings) as rt:
        consumer = JournalConsumer(rt.store, settings, MerchantRegistry(rt.store, rt.keyring), name="status")
        lag, pending = await consumer.lag(), await consumer.pending()
    print(f"journal consumers: lag {lag:,} entries (not yet applied), {pending:,} read and not yet acknowledged")
    return 0


async def _settle(settings, args) -> int:
    async with open_runtime(settings) as rt:
        try:
            day = await Settlement(rt.store, settings, MerchantRegistry(rt.store, rt.keyring)).settle_day(args.date, args.out)
        except (SettlementError, ValueError) as e:
            print(f"settle: {e}", file=sys.stderr)
            return 1
    for merchant in day.merchants:
        totals = merchant["totals"]
        print(f"  {merchant['merchant_id']:<16} sales {totals['sales']['count']:>5} {totals['sales']['points']:>12,}  "
              f"payable {totals['payable_points']:>12,}  fee {totals['fee_points']:>9,}  net {totals['net_payable_points']:>12,}")
    for network in day.networks:
        net = ", ".join(f"{amount:+,} {currency}" for currency, amount in network["net"].items()) or "nothing"
        print(f"  network {network['partner']:<8} position {network['position_points']:+,} points; net {net} "
              f"(+: we pay {network['partner']})")
    print(f"settle: {args.date} written to {day.directory}/")
    return 0


def _recon(settings, args) -> int:
    def read(path: str) -> dict:
        with open(path) as file:
            return json.load(file)

    report = reconcile_network(read(args.ours), read(args.theirs), [read(p) for p in args.nearby])
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0 if report["status"] == "matched" else 1


async def _expire_points(settings, args) -> int:
    async with open_runtime(settings) as rt:
        points = await expire_due(rt.store)
    print(f"expire-points: {points:,} points expired")
    return 0


async def _audit(settings, args) -> int:
    async with open_runtime(settings) as rt:
        report = await run_audit(rt.store)
    print(f"audit: {report.entries} journal entries, {report.members} member wallets")
    for unit, totals in sorted(report.totals_by_unit().items()):
        parts = ", ".join(f"{name} {amount:+,}" for name, amount in sorted(totals.items()))
        print(f"  {unit}: {parts}")
    if report.clean:
        print("audit: clean (every balance equals its replay; every unit sums to zero)")
        return 0
    print(f"audit: FAILED with {len(report.problems)} problem(s); first: {report.problems[0]}", file=sys.stderr)
    for problem in report.problems[1:20]:
        print(f"  {problem}", file=sys.stderr)
    return 1


async def _partners(settings, args) -> int:
    async with open_runtime(settings) as rt:
        keys = PartnerKeys(rt.store, rt.keyring)
        if args.partners_command == "set-key":
            if settings.partner(args.partner_id) is None:
                print(f"partners: {args.partner_id} is not in partners.toml", file=sys.stderr)
                return 1
            secret = sys.stdin.readline().strip() if args.secret == "-" else args.secret
            if not secret.startswith("pgsk_"):
                print("partners: the secret is the pgsk_... string the partner issued", file=sys.stderr)
                return 1
            await keys.set(args.partner_id, args.key_id, secret)
            print(f"partners: key {args.key_id} for {args.partner_id} stored encrypted; restart the gateway to use it")
            return 0
        for partner in settings.partners:
            held = await keys.get(partner.id)
            print(f"{partner.id}: {partner.base_url}, timeouts {partner.connect_timeout_s}+{partner.read_timeout_s} s, "
                  f"at most {partner.concurrency_max} at once; our key: {held[0] if held else 'none (gateway partners set-key)'}")
    return 0


async def _fx(settings, args) -> int:
    async with open_runtime(settings) as rt:
        if args.fx_command == "set":
            try:
                with open(args.file, "rb") as f:
                    doc = tomllib.load(f)
                fx.RateTable.from_toml(doc)
            except (OSError, tomllib.TOMLDecodeError) as e:
                print(f"fx: cannot read {args.file}: {e}", file=sys.stderr)
                return 1
            except fx.FxError as e:
                print(f"fx: {e.message}", file=sys.stderr)
                return 1
            await rt.store.redis.set(keyspace.FX_TABLE_KEY, json.dumps(doc))
            print(f"fx: {len(doc.get('rate', []))} rate(s) in force; every gateway uses them within 5 s")
        elif args.fx_command == "reset":
            await rt.store.redis.delete(keyspace.FX_TABLE_KEY)
            print("fx: back to config/fx.toml")
        text = await rt.store.redis.get(keyspace.FX_TABLE_KEY)
        doc = json.loads(text) if text else settings.fx
        source = "set by an operator" if text else "config/fx.toml"
        for rate in fx.RateTable.from_toml(doc or {}).rates:
            print(f"  {rate.base}/{rate.quote}: mid {rate.mid}, spread {rate.spread_bp} bp ({source})")
    return 0


async def _keys(settings, args) -> int:
    async with open_runtime(settings) as rt:
        registry = MerchantRegistry(rt.store, rt.keyring)
        partner_keys = PartnerKeys(rt.store, rt.keyring)
        partner_ids = [p.id for p in settings.partners]
        cashouts = Cashouts(rt.store, rt.tokens, settings)

        async def in_use() -> dict[str, int]:
            counts: dict[str, int] = {}
            for part in (await rt.tokens.keys_in_use(), await registry.keyring_keys_in_use(),
                         await partner_keys.keyring_keys_in_use(partner_ids), await cashouts.keyring_keys_in_use()):
                for k, n in part.items():
                    counts[k] = counts.get(k, 0) + n
            return counts

        if args.keys_command == "rotate":
            old = rt.keyring.active
            devices = await rt.tokens.rotate_keys()
            merchant_keys = await registry.reencrypt_secrets() + await partner_keys.reencrypt(partner_ids)
            accounts = await cashouts.reencrypt()
            print(f"keys: active key {old} -> {rt.keyring.active}; re-encrypted {devices} device secret(s), "
                  f"{merchant_keys} merchant and partner key secret(s) and {accounts} bank account number(s)")
        elif args.keys_command == "retire":
            count = (await in_use()).get(args.key_id, 0)
            if count:
                print(f"keys: {args.key_id} still encrypts {count} secret(s); run `gateway keys rotate` first", file=sys.stderr)
                return 1
            rt.keyring.retire(args.key_id)
            print(f"keys: {args.key_id} retired")
        counts = await in_use()
        for key_id in rt.keyring.key_ids:
            marker = " (active)" if key_id == rt.keyring.active else ""
            print(f"  {key_id}{marker}: {counts.get(key_id, 0)} secret(s)")
    return 0


def _run_redis(settings) -> int:
    if settings.redis_url or settings.redis_cluster_nodes:
        print("gateway: REDIS_URL or redis_cluster_nodes is set; the bundled Redis is not used", file=sys.stderr)
        return 2
    with redis_server(settings) as (url, server):
        if server is None:
            print(f"redis: already running for {settings.data_dir} at {url}")
            return 0
        print(f"redis: serving {settings.data_dir} at {url} (Ctrl-C to stop)", flush=True)
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        signal.sigwait(stop_signals)
    print("redis: stopped")
    return 0


_COMMANDS = {"fx": _fx, "audit": _audit, "expire-points": _expire_points, "consume": _consume, "status": _status,
             "settle": _settle, "keys": _keys, "merchants": merchants_cli.run, "operators": operators_cli.run, "partners": _partners}

if __name__ == "__main__":
    sys.exit(main())
