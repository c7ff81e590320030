"""The token service: device enrolment, code verification, online issuance.

A device (a *slot*) has a 32-byte secret, stored AES-256-GCM encrypted under
the keyring's active key, bound to its slot. The phone makes codes offline
from the provisioned secret; the server can make the same codes online. The
verifier (`verify`) checks the OTP in Python and applies the decision in one
Lua script (`verify.lua`): single use per (slot, step, seq), throttling and
lock, revocation. Outcomes name what went wrong without saying whose device a
slot is.

Decrypted secrets are cached per process: a slot's secret never changes, and
revocation and locks are checked inside the script, so a cached secret can
never approve a revoked or locked device.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable
from urllib.parse import urlencode

import pyotp

from gateway import codes, keyspace, render
from gateway.clock import wall_ms
from gateway.keyring import Keyring
from gateway.ledger import Ledger
from gateway.settings import Settings
from gateway.store import Store

SECRET_BYTES = 32
SECRET_CACHE_ENTRIES_MAX = 200_000  # ~100 bytes each: ~20 MB per process
SLOT_DRAWS_MAX = 20  # a partition holds 10^6 slots; 20 collisions in a row means it is nearly full


class Outcome(StrEnum):
    """Result of verifying one presented code. Only OK lets a payment proceed."""

    OK = "ok"
    MALFORMED = "malformed"
    BAD_CHECK_DIGIT = "bad_check_digit"
    UNSUPPORTED_KIND = "unsupported_kind"
    UNKNOWN_ISSUER = "unknown_issuer"
    UNSUPPORTED_ISSUER = "unsupported_issuer"
    UNKNOWN_SLOT = "unknown_slot"
    REVOKED = "revoked"
    LOCKED = "locked"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    WRONG_OTP = "wrong_otp"


class TokenError(Exception):
    """A device operation was refused; `.code` says why."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class Verification:
    outcome: Outcome
    member_id: str | None = None
    slot: int | None = None
    step: int | None = None
    seq: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


@dataclass(frozen=True, slots=True)
class Enrolment:
    """Returned once, at enrolment: the only time the secret leaves the server."""

    member_id: str
    slot: int
    secret: bytes
    provisioning_uri: str

    @property
    def provisioning_qr_png(self) -> bytes:
        """The provisioning URI as a QR image, for a phone that enrols by scanning."""
        return render.qr_png(self.provisioning_uri)

    def __repr__(self) -> str:
        return f"Enrolment(member_id={self.member_id!r}, slot={self.slot}, secret=<redacted>)"


@dataclass(frozen=True)
class Grant:
    """What a member's own enrolment writes in the same step as its device (enrol.lua): the bearer
    token, the device limit and, under an Idempotency-Key, the record of the whole answer."""

    token_hash: str
    token_expires_ms: int
    devices_max: int
    answer: Callable[[Enrolment], bytes]
    """The answer the member gets for the device (it holds the secret and the token: stored sealed)."""
    record_key: str = ""
    """The idempotency record (keyspace.device_enrolment_key); "" when the request has no key."""
    request_hash: str = ""
    record_ttl_s: int = 0


@dataclass(frozen=True)
class Replay:
    """The enrolment under this Idempotency-Key was made before: its answer, as first given."""

    answer: bytes


def enrol_call(slot: int, member_id: str, key_id: str, sealed: str, now_ms: int, grant: Grant | None = None,
               sealed_answer: tuple[str, str] = ("", "")) -> tuple[list[str], list[Any]]:
    """enrol.lua's keys and arguments (the seeding in bench/ pipelines the same call)."""
    partition = keyspace.partition_of_member(member_id)
    token_hash = grant.token_hash if grant else ""
    record_key = grant.record_key if grant else ""
    keys = [keyspace.device_key(slot), keyspace.member_devices_key(member_id), keyspace.partition_slots_key(partition),
            keyspace.member_key(member_id), keyspace.member_active_devices_key(member_id),
            keyspace.member_token_key(partition, token_hash or "-"),
            record_key or keyspace.device_enrolment_key(member_id, "-")]
    args = [slot, member_id, key_id, sealed, now_ms, grant.devices_max if grant else 0, token_hash,
            grant.token_expires_ms if grant else 0, grant.request_hash if record_key else "", *sealed_answer,
            grant.record_ttl_s if grant else 0]
    return keys, args


@dataclass(frozen=True, slots=True)
class IssuedCode:
    code: str
    slot: int
    step: int
    seq: int
    refresh_at_s: int
    """When the phone should show the next code (the end of the code's step)."""
    expires_at_s: int
    """When the verifier stops accepting it (the end of the skew window)."""


class TokenService:
    def __init__(
        self, store: Store, ledger: Ledger, keyring: Keyring, settings: Settings,
        randbelow: Callable[[int], int] = secrets.randbelow,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.keyring = keyring
        self.settings = settings
        self.home = settings.home_network
        self._randbelow = randbelow
        self._token_bytes = token_bytes
        self._devices: OrderedDict[int, tuple[bytes, str]] = OrderedDict()

    # -- members and devices -------------------------------------------------

    async def create_member(self) -> str:
        """Open a wallet in a random partition and return its member id."""
        for _ in range(SLOT_DRAWS_MAX):
            member_id = keyspace.new_member_id(self._randbelow(keyspace.PARTITIONS), self._token_bytes(6).hex())
            if await self.ledger.open_wallet(member_id, self.home.points_unit):
                return member_id
        raise TokenError("member_id_exhausted")

    async def enrol(self, member_id: str, grant: Grant | None = None) -> Enrolment | Replay:
        """Enrol a new device for the member: fresh secret, fresh slot in the member's partition;
        with a grant, its token and record too, in the same step (a Replay when the grant's record
        already holds an answer)."""
        partition = keyspace.partition_of_member(member_id)
        secret = self._token_bytes(SECRET_BYTES)
        for _ in range(SLOT_DRAWS_MAX):
            slot = codes.random_slot(partition, self._randbelow)
            enrolment = Enrolment(member_id, slot, secret, self.provisioning_uri(slot, secret))
            key_id, sealed = self.keyring.encrypt(secret, _aad(slot))
            sealed_answer = ("", "")
            if grant is not None and grant.record_key:
                sealed_answer = self.keyring.encrypt(grant.answer(enrolment), grant.record_key)
            reply = await self.store.run("enrol", *enrol_call(slot, member_id, key_id, sealed, wall_ms(), grant, sealed_answer))
            if reply[0] == "ok":
                self._remember(slot, secret, member_id)
                return enrolment
            if reply[0] == "replay":
                assert grant is not None
                return Replay(self.keyring.decrypt(reply[1], reply[2], grant.record_key))
            if reply[0] != "slot_taken":
                raise TokenError(reply[0])
        raise TokenError("partition_full")

    def provisioning_uri(self, slot: int, secret: bytes) -> str:
        """An otpauth:// URI with pointgate's code parameters added (issuer prefix, slot, format)."""
        uri = pyotp.TOTP(
            base64.b32encode(secret).decode().rstrip("="),
            digits=codes.OTP_DIGITS, digest=hashlib.sha256, interval=self.settings.code_step_s,
        ).provisioning_uri(name=str(slot), issuer_name="pointgate")
        extra = {"pg_format": "1", "pg_issuer": self.home.prefix, "pg_slot": str(slot),
                 "period": str(self.settings.code_step_s)}
        return uri + "&" + urlencode(extra)

    async def revoke(self, member_id: str, slot: int) -> None:
        """The member's phone is lost: the device accepts no code from now on, on every gateway."""
        await self._set_status(member_id, slot, "revoke")

    async def unlock(self, member_id: str, slot: int) -> None:
        """The member unlocks a device locked by failed code attempts."""
        await self._set_status(member_id, slot, "unlock")

    async def _set_status(self, member_id: str, slot: int, operation: str) -> None:
        if keyspace.partition_of_slot(slot) != keyspace.partition_of_member(member_id):
            raise TokenError("unknown_slot")  # not the member's: its devices are all in its partition
        # A device's token_hash is written once, with the device: reading it first is not a race.
        token_hash = await self.store.redis.hget(keyspace.device_key(slot), "token_hash")
        token_key = keyspace.member_token_key(keyspace.partition_of_slot(slot), token_hash or "-")
        reply = await self.store.run("device_status",
                                     [keyspace.device_key(slot), keyspace.member_active_devices_key(member_id), token_key],
                                     [operation, member_id, wall_ms(), slot])
        if reply[0] != "ok":
            raise TokenError(reply[0])

    # -- secrets -------------------------------------------------------------

    def _remember(self, slot: int, secret: bytes, member_id: str) -> None:
        self._devices[slot] = (secret, member_id)
        self._devices.move_to_end(slot)
        while len(self._devices) > SECRET_CACHE_ENTRIES_MAX:
            self._devices.popitem(last=False)

    async def device(self, slot: int) -> tuple[bytes, str] | None:
        """(secret, member id) of an enrolled slot, from the cache or decrypted from storage.

        Neither ever changes for a slot, so the cache needs no invalidation;
        the slot's status is checked by the scripts, never from here.
        """
        cached = self._devices.get(slot)
        if cached is not None:
            return cached
        key_id, sealed, member_id = await self.store.command("HMGET", keyspace.device_key(slot), "key_id", "secret", "member_id")
        if sealed is None:
            return None
        secret = self.keyring.decrypt(key_id, sealed, _aad(slot))
        self._remember(slot, secret, member_id)
        return secret, member_id

    # -- codes ---------------------------------------------------------------

    def check_format(self, text: str) -> codes.PaymentCode | Outcome:
        """Everything that needs no storage: format, Luhn, kind, issuer prefix."""
        try:
            code = codes.parse_code(text)
        except codes.CodeFormatError as e:
            return Outcome(e.reason)
        if code.issuer != self.home.prefix:
            known = self.settings.network_by_prefix(code.issuer)
            return Outcome.UNSUPPORTED_ISSUER if known else Outcome.UNKNOWN_ISSUER
        return code

    async def verify(self, text: str, now_s: int) -> Verification:
        """Verify a presented code and burn it; the first matching verification wins."""
        code = self.check_format(text)
        if isinstance(code, Outcome):
            return Verification(code)
        device = await self.device(code.slot)
        if device is None:
            return Verification(Outcome.UNKNOWN_SLOT, slot=code.slot)
        args = self.verify_args(code, device[0], now_s)
        reply = await self.store.run("verify", [keyspace.device_key(code.slot), keyspace.used_codes_key(code.slot)], args)
        step = None if args[0] == "wrong_otp" else int(args[1]) // 10
        return Verification(Outcome(reply[0]), reply[1] or None, code.slot, step, code.seq)

    def verify_args(self, code: codes.PaymentCode, secret: bytes, now_s: int) -> list[object]:
        """The arguments of `verify_code` in lib.lua: OTP outcome, counter, failures max, oldest counter."""
        s = self.settings
        otp_outcome, step = codes.match_step(code, secret, now_s, s.code_step_s, s.code_window_steps, s.code_lookback_steps)
        counter = codes.code_counter(step, code.seq) if step is not None else 0
        oldest = codes.code_counter(max(0, codes.step_of(now_s, s.code_step_s) - s.code_window_steps), 0)
        return [str(otp_outcome), counter, s.slot_failures_max, oldest]

    async def issue_code(self, slot: int, now_s: int) -> IssuedCode:
        """The code a device should show now: the current step's lowest unused seq."""
        return (await self.issue_codes(slot, now_s, 1))[0]

    async def issue_codes(self, slot: int, now_s: int, count: int) -> list[IssuedCode]:
        """The next `count` unused codes: the current step's free seqs, lowest first,
        then the next step's (already accepted thanks to the skew window)."""
        status = await self.store.redis.hget(keyspace.device_key(slot), "status")
        if status is None:
            raise TokenError("unknown_slot")
        if status != "active":
            raise TokenError(status)
        device = await self.device(slot)
        assert device is not None, "the device hash exists, so its secret does"
        s = self.settings
        step = codes.step_of(now_s, s.code_step_s)
        used = await self.store.redis.zrangebyscore(
            keyspace.used_codes_key(slot), codes.code_counter(step, 0), codes.code_counter(step + 1, codes.SEQ_MAX))
        used_counters = {int(c) for c in used}
        free = [(st, seq) for st in (step, step + 1) for seq in range(codes.SEQ_MAX + 1)
                if codes.code_counter(st, seq) not in used_counters]
        return [
            IssuedCode(
                code=codes.encode_code(self.home.prefix, slot, seq, device[0], st),
                slot=slot, step=st, seq=seq,
                refresh_at_s=codes.step_expiry_s(st, s.code_step_s),
                expires_at_s=codes.step_expiry_s(st + s.code_window_steps, s.code_step_s),
            )
            for st, seq in free[:count]
        ]

    # -- key rotation --------------------------------------------------------

    async def rotate_keys(self) -> int:
        """Make a fresh key active and re-encrypt every device secret under it.

        Verification goes on throughout: every process can still decrypt with
        the old key (and reloads the keyring when it meets a new key id).
        Returns the number of secrets re-encrypted.
        """
        self.keyring.rotate()
        return await self.reencrypt()

    async def reencrypt(self) -> int:
        """Re-encrypt every secret not yet under the active key (safe to run again)."""
        changed = 0
        for partition in range(keyspace.PARTITIONS):
            for slot_text in await self.store.redis.smembers(keyspace.partition_slots_key(partition)):
                slot = int(slot_text)
                key_id, sealed = await self.store.redis.hmget(keyspace.device_key(slot), "key_id", "secret")
                if sealed is None or key_id == self.keyring.active:
                    continue
                secret = self.keyring.decrypt(key_id, sealed, _aad(slot))
                new_key_id, new_sealed = self.keyring.encrypt(secret, _aad(slot))
                reply = await self.store.run("rekey", [keyspace.device_key(slot)], [sealed, new_key_id, new_sealed])
                changed += reply[0] == "ok"
        return changed

    async def keys_in_use(self) -> dict[str, int]:
        """How many device secrets each key id encrypts (a key is retired at zero)."""
        counts: dict[str, int] = {}
        for partition in range(keyspace.PARTITIONS):
            for slot_text in await self.store.redis.smembers(keyspace.partition_slots_key(partition)):
                key_id = await self.store.redis.hget(keyspace.device_key(int(slot_text)), "key_id")
                if key_id is not None:
                    counts[key_id] = counts.get(key_id, 0) + 1
        return counts


def _aad(slot: int) -> str:
    return f"pointgate:device:{slot}"
