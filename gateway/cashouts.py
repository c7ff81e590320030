"""Cash-out: a member withdraws points as KRW to a linked bank account, at any time.

1 point = 1 KRW. A cash-out of `points` pays the bank account `points - fee`
(`cashout_fee_points`, kept by the wallet in `fee:cashout`); it is two-phase
on the ledger, with the bank as the party that confirms:

1. write the cash-out record (pending) under an id derived from the member and
   the Idempotency-Key, then hold the points (idempotent by entry id);
2. ask the bank for a transfer whose id is the cash-out id (the bank is
   idempotent by transfer id, so asking again never pays twice);
3. completed: post the hold (`cashout:bank` gets the amount, `fee:cashout` the
   fee); rejected: void it (the points are back); no usable answer (timeout,
   connection error, 5xx): keep the hold and the pending state.

A pending cash-out is resolved in the background (and by a retry with the same
key): look the transfer up at the bank; found, take its state; never received
(404), send the same transfer again. Nothing is voided without the bank's
definite answer and the ledger lets a hold end only once, so a cash-out is
never both paid and refunded, and never lost. One process at a time talks to
the bank about a cash-out (a lease in Redis), so duplicates and the resolver
never race each other.

States (`TRANSITIONS`):

    pending -> paid      the bank completed the transfer; the hold is posted
    pending -> failed    the bank rejected it (or the points were not there); the hold, if any, is voided

Linked bank accounts are stored with the account number AES-256-GCM encrypted
under the keyring, bound to the member and the account id; responses and logs
only ever carry the masked number (last four digits).

Exceptions:

    BankError            the bank gave no usable answer: the outcome there is unknown
    └── BankUnreachable  timeout, connection error or 5xx: the bank is not answering now
    BankRefused          the bank refused the request itself (400): it recorded and paid nothing
    IllegalTransition    a cash-out was asked to leave a final state (our bug, never the caller's)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Annotated, Any, AsyncIterator, Callable

import aiohttp
import msgspec

from gateway import keyspace, payments
from gateway.clock import iso_ms, wall_ms
from gateway.ledger import InsufficientPoints, LedgerError
from gateway.members import Bearer, MemberService
from gateway.problems import Problem
from gateway.settings import Settings
from gateway.store import Store
from gateway.tokens import TokenService

log = logging.getLogger("pointgate.cashouts")

BANK_ACCOUNTS_PER_MEMBER_MAX = 5  # like devices: enough for a household's accounts, small enough to scan on every link
CASHOUTS_PAGE_MAX = 100
CASHOUTS_PAGE_DEFAULT = 20
PENDING_PER_ROUND_MAX = 100  # cash-outs the resolver asks the bank about per round; the rest wait for the next
LEASE_MARGIN_S = 10.0  # a lease outlives its bank calls by this much (Redis writes, a slow event loop)
LINK_ATTEMPTS_MAX = 5  # optimistic retries when two links of one member race
CASHOUT_ID_RE = re.compile(r"^co_[0-9a-f]{16}$")
BANK_ACCOUNT_ID_RE = re.compile(r"^ba_[0-9a-f]{16}$")

TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"paid", "failed"}),
    "paid": frozenset(),
    "failed": frozenset(),
}
"""Which state a cash-out may move to from each state; paid and failed are final."""


class BankAccountRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Link a bank account for cash-outs."""

    bank_code: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{3}$", description="Korean bank code: 081 Hana, 004 KB, 088 Shinhan, ...")]
    account_number: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6,20}$", description="digits only, no hyphens")]
    holder_name: Annotated[str, msgspec.Meta(min_length=1, max_length=60, pattern=r"^[^\x00-\x1f\x7f]+$")]


class CashoutRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Withdraw `points` to a linked bank account; it is paid `points - cashout_fee_points` KRW."""

    points: payments.Amount
    bank_account_id: Annotated[str, msgspec.Meta(pattern=BANK_ACCOUNT_ID_RE.pattern)]


# -- pure core ------------------------------------------------------------------------


class IllegalTransition(Exception):
    def __init__(self, cashout_id: str, state: str, to: str) -> None:
        super().__init__(f"cash-out {cashout_id} cannot go from {state} to {to}")


def check_transition(record: dict[str, Any], to: str) -> None:
    if to not in TRANSITIONS[record["state"]]:
        raise IllegalTransition(record["cashout_id"], record["state"], to)


def mask(account_number: str) -> str:
    """Only the last four digits stay visible: `******5678`."""
    return "*" * max(len(account_number) - 4, 0) + account_number[-4:]


def new_cashout_id(member_id: str, idempotency_key: str) -> str:
    """The same member and key always name the same cash-out (and the same bank transfer)."""
    return "co_" + hashlib.sha256(f"{member_id}:{idempotency_key}".encode()).hexdigest()[:16]


def _iso(ms: int | None) -> str | None:
    return None if ms is None else iso_ms(ms)


def _aad(member_id: str, bank_account_id: str) -> str:
    return f"bank-account:{member_id}:{bank_account_id}"


def account_view(account: dict[str, Any]) -> dict[str, Any]:
    return {"bank_account_id": account["bank_account_id"], "bank_code": account["bank_code"],
            "account_number_masked": account["account_number_masked"], "holder_name": account["holder_name"],
            "created_at": _iso(account["created_ms"])}


def cashout_view(record: dict[str, Any]) -> dict[str, Any]:
    """What the member sees: never the account number, never our bookkeeping fields."""
    return {
        "cashout_id": record["cashout_id"], "member_id": record["member_id"], "state": record["state"],
        "points": record["points"], "fee_points": record["fee_points"], "amount": record["amount"],
        "currency": record["currency"],
        "bank_account": {"bank_account_id": record["bank_account_id"], "bank_code": record["bank_code"],
                         "account_number_masked": record["account_number_masked"], "holder_name": record["holder_name"]},
        "reason": record["reason"], "created_at": _iso(record["created_ms"]), "finished_at": _iso(record["finished_ms"]),
        "bank_completed_at": record["bank_completed_at"],
    }


# -- the bank's API -------------------------------------------------------------------


class BankError(Exception):
    """No usable answer: the outcome at the bank is unknown."""


class BankUnreachable(BankError):
    """Timeout, connection error or 5xx: the bank is not answering now."""


class BankRefused(Exception):
    """The bank refused the request itself (400) and recorded nothing."""

    def __init__(self, code: str) -> None:
        super().__init__(f"the bank refused the request: {code}")
        self.code = code


@dataclass(frozen=True, slots=True)
class Transfer:
    transfer_id: str
    state: str
    """completed or rejected: the bank's definite answer."""
    reason: str | None
    completed_at: str | None


class BankClient:
    """The bank's payout API (`POST /v1/transfers`, `GET /v1/transfers/{id}`), bearer-authenticated."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str, timeout_s: float) -> None:
        self.session, self.base_url, self._api_key = session, base_url.rstrip("/"), api_key
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, connect=timeout_s)

    async def submit(self, transfer_id: str, amount: int, currency: str, account: dict[str, str]) -> Transfer:
        body = json.dumps({"transfer_id": transfer_id, "amount": amount, "currency": currency, "account": account},
                          ensure_ascii=False, separators=(",", ":")).encode()
        status, raw = await self._call("POST", "/v1/transfers", body)
        if status in (200, 201):
            return parse_transfer(transfer_id, amount, raw)
        if status == 400:
            raise BankRefused(_problem_code(raw) or "invalid_request")
        raise BankError(f"HTTP {status} {_problem_code(raw) or ''}".rstrip())

    async def find(self, transfer_id: str, amount: int) -> Transfer | None:
        """The transfer as the bank has it, or None if the bank never received it."""
        status, raw = await self._call("GET", f"/v1/transfers/{transfer_id}", None)
        if status == 200:
            return parse_transfer(transfer_id, amount, raw)
        if status == 404:
            return None
        raise BankError(f"HTTP {status} {_problem_code(raw) or ''}".rstrip())

    async def _call(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self.session.request(method, self.base_url + path, data=body, headers=headers,
                                            timeout=self.timeout) as response:
                status, raw = response.status, await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise BankUnreachable(type(e).__name__) from None
        if status >= 500:
            raise BankUnreachable(f"HTTP {status}")
        return status, raw


def _problem_code(raw: bytes) -> str | None:
    try:
        code = json.loads(raw).get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) and re.fullmatch(r"[a-z][a-z0-9_]{0,39}", code) else None


def parse_transfer(transfer_id: str, amount: int, raw: bytes) -> Transfer:
    """The bank's answer about `transfer_id` for `amount`; anything else is BankError (the outcome stays unknown)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        raise BankError("the bank's answer is not JSON") from None
    if not isinstance(doc, dict) or doc.get("transfer_id") != transfer_id or doc.get("state") not in ("completed", "rejected"):
        raise BankError("the bank's answer names another transfer or no known state")
    if doc.get("amount", amount) != amount:
        raise BankError(f"the bank has transfer {transfer_id} for another amount")
    reason = doc.get("reason") if isinstance(doc.get("reason"), str) else None
    if doc["state"] == "rejected" and not reason:
        reason = "rejected_by_bank"
    completed_at = doc.get("completed_at") if isinstance(doc.get("completed_at"), str) else None
    return Transfer(transfer_id, doc["state"], reason[:64] if reason else None, completed_at)


# -- the service ----------------------------------------------------------------------


class Cashouts:
    """Linked bank accounts and cash-outs of members, and the resolver of pending cash-outs."""

    def __init__(self, store: Store, tokens: TokenService, settings: Settings,
                 now_ms: Callable[[], int] = wall_ms, token_hex: Callable[[int], str] = secrets.token_hex) -> None:
        self.store, self.tokens, self.settings = store, tokens, settings
        self.now_ms, self._token_hex = now_ms, token_hex
        self.bank: BankClient | None = None
        """Set by the app when `bank_url` is configured; None: cash-out is off (bank_unavailable)."""
        self._lease_s = 2 * settings.bank_timeout_s + LEASE_MARGIN_S  # one lookup and one submit per attempt

    # -- bank accounts -------------------------------------------------------------

    async def link_account(self, bearer: Bearer, member_id: str, request: BankAccountRequest) -> tuple[int, dict[str, Any]]:
        """Link an account (201); the same bank and number again answers the existing link (200)."""
        MemberService._own(bearer, member_id)
        key = keyspace.bank_accounts_key(member_id)
        for _ in range(LINK_ATTEMPTS_MAX):
            # Optimistic: the numbers are sealed, so they are compared here, and the script writes only
            # if the accounts read are still all of the member's (else 'stale': read again).
            stored = await self.store.redis.hgetall(key)
            accounts = [json.loads(v) for v in stored.values()]
            for account in accounts:
                if account["bank_code"] == request.bank_code and self._number(member_id, account) == request.account_number:
                    return 200, account_view(account)
            if len(accounts) >= BANK_ACCOUNTS_PER_MEMBER_MAX:
                raise Problem("too_many_bank_accounts",
                              f"a member can link at most {BANK_ACCOUNTS_PER_MEMBER_MAX} bank accounts")
            bank_account_id = "ba_" + self._token_hex(8)
            keyring_key_id, sealed = self.tokens.keyring.encrypt(request.account_number.encode(),
                                                                 _aad(member_id, bank_account_id))
            account = {"bank_account_id": bank_account_id, "bank_code": request.bank_code,
                       "account_number_masked": mask(request.account_number), "holder_name": request.holder_name,
                       "account_number_sealed": sealed, "keyring_key_id": keyring_key_id,
                       "created_ms": self.now_ms()}
            reply = await self.store.run("bank_account_link", [key], [
                bank_account_id, json.dumps(account, ensure_ascii=False), BANK_ACCOUNTS_PER_MEMBER_MAX, *stored])
            if reply[0] == "ok":
                return 201, account_view(account)
            if reply[0] != "stale":
                raise RuntimeError(f"bank_account_link replied {reply[0]!r}")  # our bug: the count was checked above
        raise Problem("idempotency_in_progress", "another link of this member's accounts is being written; try again")

    async def accounts(self, bearer: Bearer, member_id: str) -> dict[str, Any]:
        MemberService._own(bearer, member_id)
        stored = await self.store.redis.hgetall(keyspace.bank_accounts_key(member_id))
        accounts = sorted((json.loads(v) for v in stored.values()), key=lambda a: (a["created_ms"], a["bank_account_id"]))
        return {"bank_accounts": [account_view(a) for a in accounts]}

    async def _account(self, member_id: str, bank_account_id: str) -> dict[str, Any] | None:
        stored = await self.store.redis.hget(keyspace.bank_accounts_key(member_id), bank_account_id)
        return json.loads(stored) if stored else None

    def _number(self, member_id: str, account: dict[str, Any]) -> str:
        return self.tokens.keyring.decrypt(account["keyring_key_id"], account["account_number_sealed"],
                                           _aad(member_id, account["bank_account_id"])).decode()

    async def _all_accounts(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        for partition in range(keyspace.PARTITIONS):
            for member_id in await self.store.redis.smembers(keyspace.partition_members_key(partition)):
                for account_text in (await self.store.redis.hgetall(keyspace.bank_accounts_key(member_id))).values():
                    yield member_id, json.loads(account_text)

    async def keyring_keys_in_use(self) -> dict[str, int]:
        """How many account numbers each keyring key encrypts (a key is retired at zero)."""
        counts: dict[str, int] = {}
        async for _member_id, account in self._all_accounts():
            counts[account["keyring_key_id"]] = counts.get(account["keyring_key_id"], 0) + 1
        return counts

    async def reencrypt(self) -> int:
        """Re-encrypt every account number not under the keyring's active key (safe to run again)."""
        changed = 0
        async for member_id, account in self._all_accounts():
            if account["keyring_key_id"] == self.tokens.keyring.active:
                continue
            number = self._number(member_id, account).encode()
            keyring_key_id, sealed = self.tokens.keyring.encrypt(number, _aad(member_id, account["bank_account_id"]))
            # Only the sealed number changes, and both encryptions are valid, so a plain write is safe.
            account = {**account, "keyring_key_id": keyring_key_id, "account_number_sealed": sealed}
            await self.store.redis.hset(keyspace.bank_accounts_key(member_id), account["bank_account_id"],
                                        json.dumps(account, ensure_ascii=False))
            changed += 1
        return changed

    # -- cash-outs ---------------------------------------------------------------------

    async def create(self, bearer: Bearer, member_id: str, request: CashoutRequest, idempotency_key: str) -> tuple[int, dict[str, Any]]:
        """Start (or replay) a cash-out: 201 once the bank answered (paid or failed), 202 while pending."""
        MemberService._own(bearer, member_id)
        partition = keyspace.partition_of_member(member_id)
        cashout_id = new_cashout_id(member_id, idempotency_key)
        record_key = keyspace.cashout_key(partition, cashout_id)
        stored = await self.store.redis.get(record_key)
        if stored is None:
            record = await self._new_record(member_id, cashout_id, request)
            if not await self.store.redis.set(record_key, json.dumps(record, ensure_ascii=False), nx=True):
                stored = await self.store.redis.get(record_key)
        if stored is not None:
            record = json.loads(stored)
            if (record["points"], record["bank_account_id"]) != (request.points, request.bank_account_id):
                raise Problem("idempotency_mismatch")
        if record["state"] == "pending":
            record = await self._drive(record, from_request=True)
        if record["state"] == "failed" and not record["held"]:
            raise Problem("insufficient_points_for_cashout",
                          f"the cash-out needs {record['points']} available points")
        return (202 if record["state"] == "pending" else 201), cashout_view(record)

    async def _new_record(self, member_id: str, cashout_id: str, request: CashoutRequest) -> dict[str, Any]:
        s = self.settings
        if self.bank is None:
            raise Problem("bank_unavailable", "cash-out is not configured on this gateway")
        if request.points < s.cashout_min_points:
            raise Problem("cashout_below_minimum", f"the minimum cash-out is {s.cashout_min_points} points, "
                                                   f"of which {s.cashout_fee_points} are the transfer fee")
        account = await self._account(member_id, request.bank_account_id)
        if account is None:
            raise Problem("bank_account_not_found")
        now_ms = self.now_ms()
        return {
            "cashout_id": cashout_id, "member_id": member_id, "state": "pending",
            "points": request.points, "fee_points": s.cashout_fee_points, "amount": request.points - s.cashout_fee_points,
            "currency": self.tokens.home.currency, "bank_account_id": account["bank_account_id"],
            "bank_code": account["bank_code"], "account_number_masked": account["account_number_masked"],
            "holder_name": account["holder_name"], "reason": None, "created_ms": now_ms, "finished_ms": None,
            "bank_completed_at": None,
            # Bookkeeping, never shown: whether the points are held, and how many transfers were sent.
            "held": False, "attempts": 0,
        }

    async def get(self, bearer: Bearer, member_id: str, cashout_id: str) -> dict[str, Any]:
        MemberService._own(bearer, member_id)
        if not CASHOUT_ID_RE.match(cashout_id):
            raise Problem("cashout_not_found")
        stored = await self.store.redis.get(keyspace.cashout_key(keyspace.partition_of_member(member_id), cashout_id))
        if stored is None:
            raise Problem("cashout_not_found")
        return cashout_view(json.loads(stored))

    async def list_cashouts(self, bearer: Bearer, member_id: str, limit: int) -> dict[str, Any]:
        """The member's newest `limit` cash-outs, newest first."""
        MemberService._own(bearer, member_id)
        if not 1 <= limit <= CASHOUTS_PAGE_MAX:
            raise Problem("invalid_request", f"limit must be 1 to {CASHOUTS_PAGE_MAX}")
        partition = keyspace.partition_of_member(member_id)
        ids = await self.store.redis.zrevrange(keyspace.member_cashouts_key(member_id), 0, limit - 1)
        stored = await self.store.redis.mget([keyspace.cashout_key(partition, i) for i in ids]) if ids else []
        return {"cashouts": [cashout_view(json.loads(s)) for s in stored if s is not None]}

    # -- talking to the bank -------------------------------------------------------------

    async def _drive(self, record: dict[str, Any], from_request: bool) -> dict[str, Any]:
        """One attempt to bring a pending cash-out to its outcome, under the cash-out's lease.

        A request that finds the lease taken gets idempotency_in_progress; the resolver skips it.
        The resolver (not a request) gets BankUnreachable raised, so it stops its round.
        """
        member_id, cashout_id = record["member_id"], record["cashout_id"]
        partition = keyspace.partition_of_member(member_id)
        record_key = keyspace.cashout_key(partition, cashout_id)
        lease = self.store.redis.lock(keyspace.cashout_lease_key(partition, cashout_id), timeout=self._lease_s,
                                      blocking=False, thread_local=False, raise_on_release_error=False)
        if not await lease.acquire():
            if from_request:
                raise Problem("idempotency_in_progress", "this cash-out is being sent to the bank; ask again in a moment")
            return record
        try:
            record = json.loads(await self.store.redis.get(record_key))
            if record["state"] != "pending":
                return record
            if not record["held"]:
                # Listed before the hold: after a crash between the two, the resolver still finds it
                # (the hold is idempotent by its entry id) and no held point is ever forgotten.
                async with self.store.redis.pipeline(transaction=False) as pipe:
                    pipe.sadd(keyspace.CASHOUTS_PENDING_KEY, f"{member_id}/{cashout_id}")
                    pipe.zadd(keyspace.member_cashouts_key(member_id), {cashout_id: record["created_ms"]})
                    await pipe.execute()
                try:
                    await self.tokens.ledger.hold(member_id, record["points"], cashout_id, "hold:" + cashout_id,
                                                  self.tokens.home.points_unit, kind="cashout",
                                                  meta={"cashout_id": cashout_id, "amount": record["amount"],
                                                        "fee": record["fee_points"]})
                except InsufficientPoints:
                    # Refused at once (the member got the problem): not a cash-out to list.
                    await self.store.redis.zrem(keyspace.member_cashouts_key(member_id), cashout_id)
                    return await self._finish(record_key, record, "failed", reason="insufficient_points")
                record["held"] = True
                await self.store.redis.set(record_key, json.dumps(record, ensure_ascii=False))
            if self.bank is None:
                return record
            try:
                transfer = await self.bank.find(cashout_id, record["amount"]) if record["attempts"] else None
                if transfer is None:
                    # Counted before sending: after a crash mid-call the next attempt looks up first.
                    record["attempts"] += 1
                    await self.store.redis.set(record_key, json.dumps(record, ensure_ascii=False))
                    account = await self._account(member_id, record["bank_account_id"])
                    assert account is not None, "linked accounts are never removed"
                    transfer = await self.bank.submit(cashout_id, record["amount"], record["currency"], {
                        "bank_code": account["bank_code"], "account_number": self._number(member_id, account),
                        "holder_name": account["holder_name"]})
            except BankRefused as e:
                return await self._fail(record_key, record, e.code)
            except BankError as e:
                log.warning("cash-out %s: no usable answer from the bank (%s); it stays pending", cashout_id, e)
                if isinstance(e, BankUnreachable) and not from_request:
                    raise
                return record
            if transfer.state == "completed":
                return await self._pay(record_key, record, transfer)
            return await self._fail(record_key, record, transfer.reason or "rejected_by_bank", transfer.completed_at)
        finally:
            await lease.release()

    async def _pay(self, record_key: str, record: dict[str, Any], transfer: Transfer) -> dict[str, Any]:
        cashout_id, fee = record["cashout_id"], record["fee_points"]
        try:
            await self.tokens.ledger.post(
                record["member_id"], cashout_id, "cashout:bank", "post:" + cashout_id, kind="cashout_paid",
                meta={"cashout_id": cashout_id, "amount": record["amount"], "bank_code": record["bank_code"]},
                fee_account="fee:cashout" if fee else None, fee_points=fee)
        except LedgerError as e:
            if e.code == "hold_voided":
                log.error("cash-out %s: the bank completed a transfer whose hold was voided; reconcile by hand", cashout_id)
            if e.code != "hold_posted":
                raise
        return await self._finish(record_key, record, "paid", bank_completed_at=transfer.completed_at)

    async def _fail(self, record_key: str, record: dict[str, Any], reason: str, completed_at: str | None = None) -> dict[str, Any]:
        cashout_id = record["cashout_id"]
        try:
            await self.tokens.ledger.void(record["member_id"], cashout_id, "void:" + cashout_id, kind="cashout_failed",
                                          meta={"cashout_id": cashout_id, "reason": reason})
        except LedgerError as e:
            if e.code == "hold_posted":
                log.error("cash-out %s: the bank rejected a transfer whose hold was posted; reconcile by hand", cashout_id)
            if e.code != "hold_voided":
                raise
        return await self._finish(record_key, record, "failed", reason=reason, bank_completed_at=completed_at)

    async def _finish(self, record_key: str, record: dict[str, Any], state: str, **changes: Any) -> dict[str, Any]:
        check_transition(record, state)
        record = {**record, **changes, "state": state, "finished_ms": self.now_ms()}
        # The record (member partition) and the pending set (global) are in two slots, so two writes:
        # the record first. A crash in between leaves a final cash-out in the pending set, which the
        # resolver takes out (resolve_pending); the other order could leave a pending one unlisted.
        await self.store.redis.set(record_key, json.dumps(record, ensure_ascii=False))
        await self.store.redis.srem(keyspace.CASHOUTS_PENDING_KEY, f"{record['member_id']}/{record['cashout_id']}")
        return record

    async def resolve_pending(self) -> int:
        """Ask the bank about cash-outs whose answer was lost; returns how many reached paid or failed."""
        if self.bank is None:
            return 0
        settled = 0
        for item in await self.store.redis.srandmember(keyspace.CASHOUTS_PENDING_KEY, PENDING_PER_ROUND_MAX):
            member_id, cashout_id = item.split("/", 1)
            stored = await self.store.redis.get(keyspace.cashout_key(keyspace.partition_of_member(member_id), cashout_id))
            record = json.loads(stored) if stored is not None else None
            if record is None or record["state"] != "pending":
                # Not a cash-out, or one whose finish wrote its record and not this set (_finish).
                await self.store.redis.srem(keyspace.CASHOUTS_PENDING_KEY, item)
                continue
            try:
                record = await self._drive(record, from_request=False)
            except BankUnreachable:
                break  # the bank is not answering; every other cash-out would only wait for the same timeout
            settled += record["state"] != "pending"
        return settled
