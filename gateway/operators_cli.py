"""`gateway operators`: the people and tools that run the gateway through its signed admin API.

    gateway operators add ID [--name N]   register an operator and print its first key's secret, this once only
    gateway operators console-token ID [--hours H]   a sign-in token for the operator console, printed once
    gateway operators revoke-console-tokens ID       end every console token of the operator at once

An operator is a signing principal with role "operator" (gateway/merchants.py
ROLES): its keys sign the campaign routes (`/v1/campaigns...`) and nothing
else. Rotate and revoke its keys like any other:
`gateway merchants issue-key ID`, `gateway merchants revoke-key ID KEY_ID`.

A person at the operator console (`/console`) signs in with a console token
instead (gateway/web/operator_tokens.py): issued here, on the gateway host,
for a registered operator, valid for a shift, stored only as its hash. It
opens the console's read-only routes and nothing else.

A refused operation prints one line to stderr and exits 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from redis.exceptions import RedisError

from gateway.merchants import MerchantError, MerchantRegistry
from gateway.runtime import open_runtime
from gateway.settings import Settings
from gateway.web.operator_tokens import CONSOLE_TOKEN_HOURS_DEFAULT, CONSOLE_TOKEN_HOURS_MAX, OperatorTokens


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    operators = subparsers.add_parser("operators", help="operators of the signed admin API (coupon campaigns)")
    commands = operators.add_subparsers(dest="operators_command", required=True)
    add = commands.add_parser("add", help="register an operator and issue its first signing key")
    add.add_argument("operator_id", help="a-z 0-9 -, e.g. ops-seoul")
    add.add_argument("--name", help="who it is (default: the id)")
    token = commands.add_parser("console-token", help="issue a sign-in token for the operator console")
    token.add_argument("operator_id")
    token.add_argument("--hours", type=int, default=CONSOLE_TOKEN_HOURS_DEFAULT,
                       help=f"how long it works (default {CONSOLE_TOKEN_HOURS_DEFAULT}, at most {CONSOLE_TOKEN_HOURS_MAX})")
    revoke = commands.add_parser("revoke-console-tokens", help="end every console token of the operator")
    revoke.add_argument("operator_id")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.operators_command in ("console-token", "revoke-console-tokens"):
        return await _console_tokens(settings, args)
    try:
        async with open_runtime(settings) as rt:
            registry = MerchantRegistry(rt.store, rt.keyring)
            existing = await registry.merchant(args.operator_id)
            if existing is not None and existing.role != "operator":
                print(f"gateway operators: {args.operator_id} is a {existing.role}, not an operator", file=sys.stderr)
                return 1
            # An operator is no shop: its currency and day are the home network's, like an affiliate's.
            created = await registry.create_merchant(
                args.operator_id, args.name or args.operator_id, settings.home_network.currency,
                settings.member_day_time_zone, "00:00", 42, role="operator")
            key_id, secret = await registry.issue_key(args.operator_id)
    except MerchantError as e:
        print(f"gateway operators: {e.message}", file=sys.stderr)
        return 1
    except RedisError as e:
        print(f"gateway operators: Redis failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"operators: {'registered' if created else 'kept'} {args.operator_id}; issued key {key_id}")
    print(f"  key id: {key_id}")
    print(f"  secret: {secret}")
    print("operators: the secret is shown only this time and cannot be read back; "
          "sign requests with it as docs/signing.md says", file=sys.stderr)
    return 0


async def _console_tokens(settings: Settings, args: argparse.Namespace) -> int:
    try:
        async with open_runtime(settings) as rt:
            tokens = OperatorTokens(rt.store, MerchantRegistry(rt.store, rt.keyring))
            if args.operators_command == "revoke-console-tokens":
                ended = await tokens.revoke_all(args.operator_id)
                print(f"operators: {ended} console token(s) of {args.operator_id} ended")
                return 0
            token, expires_ms = await tokens.issue(args.operator_id, args.hours)
    except ValueError as e:
        print(f"gateway operators: {e}", file=sys.stderr)
        return 1
    except RedisError as e:
        print(f"gateway operators: Redis failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    expires = dt.datetime.fromtimestamp(expires_ms / 1000, dt.timezone.utc).isoformat(timespec="seconds")
    print(f"operators: console token for {args.operator_id}, valid until {expires}")
    print(f"  token: {token}")
    print("operators: the token is shown only this time; paste it into the console's sign-in "
          "(http://<gateway>/console)", file=sys.stderr)
    return 0
