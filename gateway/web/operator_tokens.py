"""Operator console tokens: how a person at the operator console signs in.

A console token (`pgct_` + 43 characters of base64url, 256 random bits) is
issued to a registered operator by `gateway operators console-token ID` on the
gateway host, printed once, and stored only as its SHA-256 with its expiry
(`keyspace.console_token_key`). The console page sends it as
`Authorization: Bearer pgct_...` to the operator routes (`/v1/ops/...`); it
opens nothing else: merchants sign their requests, members hold `pgmt_`
tokens, and neither is accepted here, nor a console token there.

A token expires after its hours (default CONSOLE_TOKEN_HOURS_DEFAULT, an
operator's shift), and every token of an operator stops working at once when
the operator's tokens are revoked (`gateway operators revoke-console-tokens
ID`) or the operator is no longer registered as one.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Final

from gateway import keyspace
from gateway.clock import wall_ms
from gateway.merchants import MerchantRegistry
from gateway.problems import Problem
from gateway.store import Store

CONSOLE_TOKEN_HOURS_DEFAULT: Final = 12
"""One shift; the operator asks for a new token at the next."""
CONSOLE_TOKEN_HOURS_MAX: Final = 7 * 24
"""A week at most: a console token is a person's sign-in, not a service credential."""
CONSOLE_TOKENS_PER_OPERATOR_MAX: Final = 100
"""Expired tokens leave the set when the next is issued; 100 live ones is far past any team's need."""
CONSOLE_TOKEN_RE: Final = re.compile(r"^pgct_[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    operator_id: str
    name: str
    expires_ms: int


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class OperatorTokens:
    def __init__(self, store: Store, registry: MerchantRegistry, now_ms: Callable[[], int] = wall_ms,
                 token_bytes: Callable[[int], bytes] = secrets.token_bytes) -> None:
        self.store, self.registry = store, registry
        self.now_ms = now_ms
        self._token_bytes = token_bytes

    async def issue(self, operator_id: str, hours: int = CONSOLE_TOKEN_HOURS_DEFAULT) -> tuple[str, int]:
        """A new console token for a registered operator, and when it expires (epoch ms).
        ValueError names what is wrong (not an operator, hours out of range, too many tokens)."""
        if not 1 <= hours <= CONSOLE_TOKEN_HOURS_MAX:
            raise ValueError(f"hours must be 1 to {CONSOLE_TOKEN_HOURS_MAX}")
        info = await self.registry.merchant(operator_id)
        if info is None or info.role != "operator":
            raise ValueError(f"{operator_id} is not a registered operator (gateway operators add {operator_id})")
        await self._forget_expired(operator_id)
        index = keyspace.console_tokens_key(operator_id)
        if await self.store.redis.scard(index) >= CONSOLE_TOKENS_PER_OPERATOR_MAX:
            raise ValueError(f"{operator_id} has {CONSOLE_TOKENS_PER_OPERATOR_MAX} live console tokens; revoke them first")
        token = "pgct_" + base64.urlsafe_b64encode(self._token_bytes(32)).decode().rstrip("=")
        expires_ms = self.now_ms() + hours * 3600 * 1000
        key = keyspace.console_token_key(_hash(token))
        await self.store.run("console_token_issue", [key, index], [operator_id, expires_ms, _hash(token)])
        return token, expires_ms

    async def _forget_expired(self, operator_id: str) -> None:
        index = keyspace.console_tokens_key(operator_id)
        hashes = list(await self.store.redis.smembers(index))
        if not hashes:
            return
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for token_hash in hashes:
                pipe.exists(keyspace.console_token_key(token_hash))
            alive = await pipe.execute()
        gone = [h for h, a in zip(hashes, alive) if not a]
        if gone:
            await self.store.redis.srem(index, *gone)

    async def revoke_all(self, operator_id: str) -> int:
        """End every console token of the operator; how many were live."""
        index = keyspace.console_tokens_key(operator_id)
        hashes = list(await self.store.redis.smembers(index))
        if not hashes:
            return 0
        # Two commands, each over the console's one slot: the tokens go first, so a crash in between
        # leaves only index entries of deleted tokens (the next issue forgets them). Only the hashes
        # read are taken out of the index: a token issued meanwhile stays listed, for the next revoke.
        live = await self.store.redis.delete(*(keyspace.console_token_key(h) for h in hashes))
        await self.store.redis.srem(index, *hashes)
        return int(live)

    async def authenticate(self, authorization: str | None) -> ConsoleSession:
        """The operator a console token belongs to; 401 operator_unauthorized for anything else."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not CONSOLE_TOKEN_RE.match(token):
            raise Problem("operator_unauthorized", "send Authorization: Bearer <a console token from "
                                                   "`gateway operators console-token`>")
        record: dict[str, Any] = await self.store.redis.hgetall(keyspace.console_token_key(_hash(token)))
        if not record or int(record["expires_ms"]) <= self.now_ms():
            raise Problem("operator_unauthorized", "the console token is unknown, expired or revoked; issue a new one")
        info = await self.registry.merchant(record["operator_id"])
        if info is None or info.role != "operator":
            raise Problem("operator_unauthorized", "the token's operator is no longer registered")
        return ConsoleSession(info.id, info.name, int(record["expires_ms"]))
