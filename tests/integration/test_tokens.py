"""The token service against a real Redis: enrolment, verification, single use, locks, rotation."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from urllib.parse import parse_qs, urlparse

import pytest
import zxingcpp
from PIL import Image

from gateway import codes, keyspace
from gateway.keyring import Keyring
from gateway.tokens import Outcome, TokenError, TokenService

NOW_S = 1_800_000_000  # a fixed instant: tests pass time in, never read the clock
STEP_S = 30


async def enrolled(tokens: TokenService):
    member_id = await tokens.create_member()
    return await tokens.enrol(member_id)


def phone_code(tokens: TokenService, enrolment, now_s: int = NOW_S, seq: int = 0) -> str:
    """What the phone shows offline from its provisioned secret."""
    return codes.encode_code(tokens.home.prefix, enrolment.slot, seq, enrolment.secret, codes.step_of(now_s, STEP_S))


async def test_enrolment_stores_secret_encrypted(tokens: TokenService, store):
    """The stored secret is AES-GCM ciphertext under the active key, not the secret itself."""
    enrolment = await enrolled(tokens)
    device = await store.redis.hgetall(keyspace.device_key(enrolment.slot))
    assert "k1" == device["key_id"]
    assert enrolment.secret not in base64.b64decode(device["secret"])
    assert enrolment.member_id == device["member_id"]
    assert keyspace.partition_of_member(enrolment.member_id) == keyspace.partition_of_slot(enrolment.slot)


async def test_provisioning_uri_carries_the_secret_once(tokens: TokenService):
    """The otpauth URI has the base32 secret, SHA256, 8 digits, 30 s, and pointgate's slot and prefix."""
    enrolment = await enrolled(tokens)
    uri = urlparse(enrolment.provisioning_uri)
    query = {k: v[0] for k, v in parse_qs(uri.query).items()}
    assert ("otpauth", "totp") == (uri.scheme, uri.netloc)
    padded = query["secret"] + "=" * (-len(query["secret"]) % 8)
    assert enrolment.secret == base64.b32decode(padded)
    assert ("SHA256", "8", "30", str(enrolment.slot), "9410") == (
        query["algorithm"], query["digits"], query["period"], query["pg_slot"], query["pg_issuer"])
    assert "secret" not in repr(enrolment).replace("secret=<redacted>", "")


async def test_provisioning_qr_decodes_to_the_uri(tokens: TokenService):
    """The enrolment QR image scans back to the exact provisioning URI."""
    enrolment = await enrolled(tokens)
    png = enrolment.provisioning_qr_png
    [result] = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert enrolment.provisioning_uri == result.text


async def test_offline_code_verifies_once(tokens: TokenService):
    """A code made on the phone is accepted once and replayed after that."""
    enrolment = await enrolled(tokens)
    code = phone_code(tokens, enrolment)
    first = await tokens.verify(code, NOW_S)
    second = await tokens.verify(code, NOW_S + 1)
    assert (Outcome.OK, enrolment.member_id) == (first.outcome, first.member_id)
    assert (Outcome.REPLAYED, None) == (second.outcome, second.member_id)


@pytest.mark.parametrize("skew_steps", [-1, 1])
async def test_clock_skew_of_one_step_is_accepted(tokens: TokenService, skew_steps: int):
    """A phone one step behind or ahead of the server is accepted."""
    enrolment = await enrolled(tokens)
    code = phone_code(tokens, enrolment, NOW_S + skew_steps * STEP_S)
    assert Outcome.OK == (await tokens.verify(code, NOW_S)).outcome


async def test_stale_code_is_expired_and_not_a_failure(tokens: TokenService, store):
    """A code from two steps ago answers expired and does not count toward the lock."""
    enrolment = await enrolled(tokens)
    code = phone_code(tokens, enrolment, NOW_S - 2 * STEP_S)
    assert Outcome.EXPIRED == (await tokens.verify(code, NOW_S)).outcome
    assert "0" == await store.redis.hget(keyspace.device_key(enrolment.slot), "failures")


async def test_next_seq_in_same_step_is_a_fresh_code(tokens: TokenService):
    """After a use, the phone's next seq in the same step is accepted."""
    enrolment = await enrolled(tokens)
    results = [await tokens.verify(phone_code(tokens, enrolment, seq=seq), NOW_S) for seq in range(10)]
    assert [Outcome.OK] * 10 == [r.outcome for r in results]


def wrong_code(tokens: TokenService, slot: int, guess: int) -> str:
    body = f"{tokens.home.prefix}1{slot:09d}0{guess:08d}"
    return body + codes.luhn_check_digit(body)


async def test_device_locks_after_failures_max(tokens: TokenService):
    """The fifth wrong code locks the device; then even the right code is refused until unlock."""
    enrolment = await enrolled(tokens)
    right = phone_code(tokens, enrolment)
    outcomes = [(await tokens.verify(wrong_code(tokens, enrolment.slot, g), NOW_S)).outcome for g in range(5)]
    assert [Outcome.WRONG_OTP] * 4 + [Outcome.LOCKED] == outcomes
    assert Outcome.LOCKED == (await tokens.verify(right, NOW_S)).outcome
    await tokens.unlock(enrolment.member_id, enrolment.slot)
    assert Outcome.OK == (await tokens.verify(right, NOW_S)).outcome


async def test_success_resets_failure_count(tokens: TokenService):
    """Wrong codes followed by a right one start the count again."""
    enrolment = await enrolled(tokens)
    for g in range(4):
        await tokens.verify(wrong_code(tokens, enrolment.slot, g), NOW_S)
    assert Outcome.OK == (await tokens.verify(phone_code(tokens, enrolment), NOW_S)).outcome
    outcomes = [(await tokens.verify(wrong_code(tokens, enrolment.slot, g), NOW_S)).outcome for g in range(4)]
    assert [Outcome.WRONG_OTP] * 4 == outcomes


async def test_revoked_device_accepts_nothing(tokens: TokenService):
    """A revoked device's valid code is refused as revoked, for good."""
    enrolment = await enrolled(tokens)
    await tokens.revoke(enrolment.member_id, enrolment.slot)
    assert Outcome.REVOKED == (await tokens.verify(phone_code(tokens, enrolment), NOW_S)).outcome
    with pytest.raises(TokenError) as e:
        await tokens.unlock(enrolment.member_id, enrolment.slot)
    assert "revoked" == e.value.code


async def test_another_members_device_looks_unknown(tokens: TokenService):
    """Revoking someone else's slot answers as if the slot did not exist."""
    mine, theirs = await enrolled(tokens), await enrolled(tokens)
    with pytest.raises(TokenError) as e:
        await tokens.revoke(mine.member_id, theirs.slot)
    assert "unknown_slot" == e.value.code


async def test_format_outcomes_need_no_storage(tokens: TokenService):
    """Malformed, bad check digit, unknown and partner issuers are told apart before any lookup."""
    enrolment = await enrolled(tokens)
    good = phone_code(tokens, enrolment)
    flipped = good[:-1] + str((int(good[-1]) + 1) % 10)
    body_unknown = "1234" + good[4:23]
    body_partner = "8860" + good[4:23]
    cases = {
        "12345": Outcome.MALFORMED,
        flipped: Outcome.BAD_CHECK_DIGIT,
        body_unknown + codes.luhn_check_digit(body_unknown): Outcome.UNKNOWN_ISSUER,
        body_partner + codes.luhn_check_digit(body_partner): Outcome.UNSUPPORTED_ISSUER,
    }
    assert list(cases.values()) == [(await tokens.verify(text, NOW_S)).outcome for text in cases]


async def test_unknown_slot(tokens: TokenService):
    """A well-formed home code for a slot nobody enrolled answers unknown_slot."""
    body = f"{tokens.home.prefix}1{123456789:09d}012345678"
    assert Outcome.UNKNOWN_SLOT == (await tokens.verify(body + codes.luhn_check_digit(body), NOW_S)).outcome


async def test_200_concurrent_verifications_one_success(tokens: TokenService, store, settings, keyring):
    """200 concurrent verifications of one code, from 4 gateway processes' worth of services, give one success."""
    enrolment = await enrolled(tokens)
    code = phone_code(tokens, enrolment)
    services = [TokenService(store, tokens.ledger, Keyring.load(settings.keyring_path), settings) for _ in range(4)]
    results = await asyncio.gather(*(services[i % 4].verify(code, NOW_S) for i in range(200)))
    outcomes = [r.outcome for r in results]
    assert (1, 199) == (outcomes.count(Outcome.OK), outcomes.count(Outcome.REPLAYED))


async def test_online_code_is_what_the_phone_would_show(tokens: TokenService):
    """The server's online code equals the phone's offline code for the same step and seq, and expires with the window."""
    enrolment = await enrolled(tokens)
    issued = await tokens.issue_code(enrolment.slot, NOW_S)
    step = codes.step_of(NOW_S, STEP_S)
    assert (phone_code(tokens, enrolment), 0, step) == (issued.code, issued.seq, issued.step)
    assert ((step + 1) * STEP_S, (step + 2) * STEP_S) == (issued.refresh_at_s, issued.expires_at_s)


async def test_online_issuance_skips_used_seqs(tokens: TokenService):
    """After a code is used, the next online code of the same step has the next seq and verifies."""
    enrolment = await enrolled(tokens)
    first = await tokens.issue_code(enrolment.slot, NOW_S)
    await tokens.verify(first.code, NOW_S)
    second = await tokens.issue_code(enrolment.slot, NOW_S)
    assert 1 == second.seq
    assert Outcome.OK == (await tokens.verify(second.code, NOW_S)).outcome


async def test_online_issuance_moves_to_next_step_when_seqs_run_out(tokens: TokenService):
    """With all ten seqs of the step used, the next step's first code is issued and accepted now."""
    enrolment = await enrolled(tokens)
    for _ in range(10):
        await tokens.verify((await tokens.issue_code(enrolment.slot, NOW_S)).code, NOW_S)
    issued = await tokens.issue_code(enrolment.slot, NOW_S)
    assert (codes.step_of(NOW_S, STEP_S) + 1, 0) == (issued.step, issued.seq)
    assert Outcome.OK == (await tokens.verify(issued.code, NOW_S)).outcome


async def test_key_rotation_keeps_every_device_verifying(tokens: TokenService, store, settings):
    """After rotation every secret is under the new key, and a process that cached nothing still verifies."""
    devices = [await enrolled(tokens) for _ in range(5)]
    rotated = await tokens.rotate_keys()
    assert 5 == rotated
    assert {"k2": 5} == await tokens.keys_in_use()
    fresh = TokenService(store, tokens.ledger, Keyring.load(settings.keyring_path), settings)
    outcomes = [(await fresh.verify(phone_code(tokens, d), NOW_S)).outcome for d in devices]
    assert [Outcome.OK] * 5 == outcomes


async def test_process_with_stale_keyring_reloads_on_new_key(tokens: TokenService, store, settings):
    """A process that loaded the keyring before a rotation still decrypts secrets re-encrypted after it."""
    stale = TokenService(store, tokens.ledger, Keyring.load(settings.keyring_path), settings)
    device = await enrolled(tokens)
    await tokens.rotate_keys()
    assert Outcome.OK == (await stale.verify(phone_code(tokens, device), NOW_S)).outcome


async def test_verification_uses_real_clock_when_given(tokens: TokenService):
    """With the wall clock passed in, the phone's current code verifies (no hidden time source)."""
    enrolment = await enrolled(tokens)
    now_s = int(time.time())
    assert Outcome.OK == (await tokens.verify(phone_code(tokens, enrolment, now_s), now_s)).outcome
