"""`gateway merchants`: register merchants, stores and terminals, and manage signing keys.

    gateway merchants create ID --name N --currency C --time-zone TZ [--cutoff HH:MM] [--receipt-width W]
    gateway merchants add-store MERCHANT_ID STORE_ID --name N
    gateway merchants add-terminal MERCHANT_ID STORE_ID TERMINAL_ID
    gateway merchants issue-key MERCHANT_ID      prints the new secret, this once only
    gateway merchants revoke-key MERCHANT_ID KEY_ID
    gateway merchants list [MERCHANT_ID]         merchants, stores, terminals, keys (never secrets)
    gateway merchants load-config                create what merchants.toml and affiliates.toml list; no keys

A refused operation prints one line to stderr and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone

from redis.exceptions import RedisError

from gateway.merchants import MerchantError, MerchantRegistry
from gateway.runtime import open_runtime
from gateway.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    merchants = subparsers.add_parser("merchants", help="merchants, stores, terminals and signing keys")
    commands = merchants.add_subparsers(dest="merchants_command", required=True)
    create = commands.add_parser("create", help="register a merchant")
    create.add_argument("merchant_id")
    create.add_argument("--name", required=True)
    create.add_argument("--currency", required=True, help="ISO 4217 code, e.g. KRW")
    create.add_argument("--time-zone", required=True, help="IANA time zone, e.g. Asia/Seoul")
    create.add_argument("--cutoff", default="00:00", help="local HH:MM at which the business day ends (default 00:00)")
    create.add_argument("--receipt-width", type=int, default=42, help="receipt columns (default 42)")
    add_store = commands.add_parser("add-store", help="add a store to a merchant")
    add_store.add_argument("merchant_id")
    add_store.add_argument("store_id")
    add_store.add_argument("--name", required=True)
    add_terminal = commands.add_parser("add-terminal", help="add a terminal to a store")
    add_terminal.add_argument("merchant_id")
    add_terminal.add_argument("store_id")
    add_terminal.add_argument("terminal_id")
    issue = commands.add_parser("issue-key", help="issue a signing key and print its secret once")
    issue.add_argument("merchant_id")
    revoke = commands.add_parser("revoke-key", help="revoke a signing key for good")
    revoke.add_argument("merchant_id")
    revoke.add_argument("key_id")
    listing = commands.add_parser("list", help="merchants with their stores, terminals and keys (no secrets)")
    listing.add_argument("merchant_id", nargs="?")
    commands.add_parser("load-config", help="create the merchants, stores and terminals of merchants.toml")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        async with open_runtime(settings) as rt:
            registry = MerchantRegistry(rt.store, rt.keyring)
            return await _COMMANDS[args.merchants_command](registry, settings, args)
    except MerchantError as e:
        print(f"gateway merchants: {e.message}", file=sys.stderr)
        return 1
    except RedisError as e:
        print(f"gateway merchants: Redis failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


async def _create(registry: MerchantRegistry, settings: Settings, args: argparse.Namespace) -> int:
    created = await registry.create_merchant(
        args.merchant_id, args.name, args.currency, args.time_zone, args.cutoff, args.receipt_width)
    if created:
        print(f"merchants: created {args.merchant_id} ({args.name}, {args.currency}, {args.time_zone})")
    else:
        print(f"merchants: {args.merchant_id} exists already; unchanged")
    return 0


async def _add_store(registry: MerchantRegistry, settings: Settings, args: argparse.Namespace) -> int:
    if await registry.add_store(args.merchant_id, args.store_id, args.name):
        print(f"merchants: store {args.store_id} added to {args.merchant_id}")
    else:
        print(f"merchants: {args.merchant_id} has a store {args.store_id} already; unchanged")
    return 0


async def _add_terminal(registry: MerchantRegistry, settings: Settings, args: argparse.Namespace) -> int:
    if await registry.add_terminal(args.merchant_id, args.store_id, args.terminal_id):
        print(f"merchants: terminal {args.terminal_id} added to {args.merchant_id}/{args.store_id}")
    else:
        print(f"merchants: {args.merchant_id}/{args.store_id} has a terminal {args.terminal_id} already; unchanged")
    return 0


async def _issue_key(registry: MerchantRegistry, settings: Settings, args: argparse.Namespace) -> int:
    key_id, secret = await registry.issue_key(args.merchant_id)
    print(f"merchants: issued key {key_id} for {args.merchant_id}")
    print(f"  key id: {key_id}")
    print(f"  secret: {secret}")
    print("merchants: the secret is shown only this time and cannot be read back; "
          "put it in the terminals' secure storage now (see docs/signing.md)", file=sys.stderr)
    return 0


async def _revoke_key(registry: MerchantRegistry, settings: Settings, args: argparse.Namespace) -> int:
    if await registry.revoke_key(args.merchant_id, args.key_id):
        print(f"merchants: key {args.key_id} of {args.merchant_id} revoked")
    else:
        print(f"merchants: key {args.key_id} of {args.merchant_id} was revoked already; unchanged")
    return 0


async def _list(registry: MerchantRegistry, settings: Settings, args: argparse.Namespace) -> int:
    if args.merchant_id:
        merchant = await registry.merchant(args.merchant_id)
        if merchant is None:
            raise MerchantError("unknown_merchant", f"no merchant {args.merchant_id}")
        merchants: tuple = (merchant,)
    else:
        merchants = await registry.list_merchants(role=None)
    if not merchants:
        print("merchants: none registered (try `gateway merchants load-config`)")
    for m in merchants:
        print(f"{m.id} ({m.role}): {m.name}, {m.currency}, {m.time_zone}, day ends {m.business_day_cutoff}, "
              f"receipt {m.receipt_width} columns, {m.status}")
        for s in await registry.stores(m.id):
            print(f"  store {s.id} ({s.name}): terminals {', '.join(s.terminals) or 'none'}")
        keys = await registry.list_keys(m.id)
        for k in keys:
            when = f"issued {_utc(k.created_ms)}" + (f", revoked {_utc(k.revoked_ms)}" if k.revoked_ms else "")
            print(f"  key {k.key_id}: {k.status} ({when})")
        if not keys:
            print(f"  no signing keys (issue one: gateway merchants issue-key {m.id})")
    return 0


async def _load_config(registry: MerchantRegistry, settings: Settings, args: argparse.Namespace) -> int:
    summary = await registry.load_config(settings)
    print(f"merchants: {len(settings.merchants)} merchant(s) in merchants.toml; created "
          f"{summary.merchants_created} merchant(s), {summary.stores_created} store(s), "
          f"{summary.terminals_added} terminal(s), {summary.principals_created} affiliate(s) and partner network(s)" + ("" if summary.changed else "; nothing changed"))
    return 0


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


_COMMANDS = {
    "create": _create, "add-store": _add_store, "add-terminal": _add_terminal, "issue-key": _issue_key,
    "revoke-key": _revoke_key, "list": _list, "load-config": _load_config,
}
