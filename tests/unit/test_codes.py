"""Payment code v1 (`gateway.codes`): Luhn, the 24-digit format, verification, slots.

The test vectors come from docs/payment-code.md, parsed here, so the published
format and the implementation cannot drift apart.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codes import (
    CODE_DIGITS,
    KIND_MEMBER_PAYMENT,
    LOOKBACK_STEPS_MAX,
    PARTITIONS,
    SLOT_MAX,
    SLOT_MIN,
    WINDOW_STEPS_MAX,
    CodeFormatError,
    PaymentCode,
    code_counter,
    encode_code,
    hotp,
    luhn_check_digit,
    luhn_valid,
    match_step,
    parse_code,
    partition_of_slot,
    random_slot,
    step_expiry_s,
    step_of,
)

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "payment-code.md"
STEP_S = 30
WINDOW_STEPS = 1
LOOKBACK_STEPS = 20
SECRET = bytes(range(32))
NOW_S = 1_700_000_000
NOW_STEP = NOW_S // STEP_S

issuers = st.text(alphabet="0123456789", min_size=4, max_size=4)
slots = st.integers(min_value=0, max_value=999_999_999)
seqs = st.integers(min_value=0, max_value=9)
device_secrets = st.binary(min_size=1, max_size=64)
steps = st.integers(min_value=0, max_value=2**40)
valid_codes = st.builds(encode_code, issuers, slots, seqs, device_secrets, steps)


def _reason(text: object) -> str:
    with pytest.raises(CodeFormatError) as caught:
        parse_code(text)  # type: ignore[arg-type]
    return caught.value.reason


def _code_at(step: int, seq: int = 0, secret: bytes = SECRET) -> PaymentCode:
    return parse_code(encode_code("9410", 123_456_789, seq, secret, step))


# Luhn


@pytest.mark.parametrize(
    ("payload", "check"),
    [("7992739871", "3"), ("411111111111111", "1"), ("0", "0"), ("1", "8"), ("9", "1")],
)
def test_luhn_check_digit_matches_published_examples(payload: str, check: str) -> None:
    """The Luhn digit of a payload is the one the standard examples give."""
    assert check == luhn_check_digit(payload)
    assert luhn_valid(payload + check)


@pytest.mark.parametrize("code", ["79927398710", "79927398714", "4111111111111112"])
def test_luhn_valid_rejects_a_wrong_check_digit(code: str) -> None:
    """A number whose last digit is not its Luhn digit is invalid."""
    assert False is luhn_valid(code)


@pytest.mark.parametrize(
    "code", ["", "7", "7992739871３", "٧٩٩٢٧٣٩٨٧١٣", " 79927398713", "7992-7398713"]
)
def test_luhn_valid_rejects_what_is_not_ascii_digits(code: str) -> None:
    """Luhn validity needs at least two ASCII digits and nothing else."""
    assert False is luhn_valid(code)


@pytest.mark.parametrize("digits", ["", "12a", "١٢٣"])
def test_luhn_check_digit_refuses_non_digits(digits: str) -> None:
    """Computing a Luhn digit over anything but ASCII digits is a ValueError."""
    with pytest.raises(ValueError):
        luhn_check_digit(digits)


# Encoding and parsing


@given(issuers, slots, seqs, device_secrets, steps)
def test_encode_then_parse_gives_back_every_field(
    issuer: str, slot: int, seq: int, secret: bytes, step: int
) -> None:
    """Parsing an encoded code yields its issuer, kind, slot, seq and HOTP."""
    text = encode_code(issuer, slot, seq, secret, step)
    expected = PaymentCode(
        issuer=issuer,
        kind=KIND_MEMBER_PAYMENT,
        slot=slot,
        seq=seq,
        otp=hotp(secret, step * 10 + seq, 8, "sha256"),
    )
    assert expected == parse_code(text)
    assert text == parse_code(text).text


@given(issuers, slots, seqs, device_secrets, steps)
def test_encoded_code_lays_out_the_fields_in_order(
    issuer: str, slot: int, seq: int, secret: bytes, step: int
) -> None:
    """The 24 digits are issuer, kind 1, zero-padded slot, seq, otp, Luhn digit."""
    text = encode_code(issuer, slot, seq, secret, step)
    otp = hotp(secret, step * 10 + seq, 8, "sha256")
    payload = f"{issuer}1{slot:09d}{seq}{otp}"
    assert payload + luhn_check_digit(payload) == text
    assert CODE_DIGITS == len(text)


def test_code_counter_is_step_times_ten_plus_seq() -> None:
    """The HOTP counter of (step, seq) is step * 10 + seq."""
    assert 567 == code_counter(56, 7)
    assert 0 == code_counter(0, 0)


@pytest.mark.parametrize(("step", "seq"), [(0, -1), (0, 10), (-1, 0)])
def test_code_counter_refuses_out_of_range_inputs(step: int, seq: int) -> None:
    """A seq outside 0-9 or a negative step has no counter."""
    with pytest.raises(ValueError):
        code_counter(step, seq)


@pytest.mark.parametrize(
    ("issuer", "slot", "seq"),
    [("941", 1, 0), ("94100", 1, 0), ("94a0", 1, 0), ("9410", 10**9, 0), ("9410", -1, 0),
     ("9410", 1, 10)],
)
def test_encode_code_refuses_fields_that_do_not_fit(issuer: str, slot: int, seq: int) -> None:
    """An issuer other than 4 digits, a slot over 9 digits or a seq over 9 is refused."""
    with pytest.raises(ValueError):
        encode_code(issuer, slot, seq, SECRET, NOW_STEP)


@given(valid_codes, st.data())
def test_every_single_digit_substitution_fails_the_check_digit(
    text: str, data: st.DataObject
) -> None:
    """Changing any one digit of a valid code makes it fail with bad_check_digit."""
    position = data.draw(st.integers(min_value=0, max_value=CODE_DIGITS - 1))
    for digit in "0123456789":
        if digit != text[position]:
            changed = text[:position] + digit + text[position + 1 :]
            assert "bad_check_digit" == _reason(changed)


@given(valid_codes, st.integers(min_value=0, max_value=CODE_DIGITS - 2))
def test_adjacent_swaps_fail_the_check_digit_except_09(text: str, position: int) -> None:
    """Swapping two different adjacent digits is caught, except the 09/90 pair Luhn misses."""
    first, second = text[position], text[position + 1]
    if first == second or {first, second} == {"0", "9"}:
        return
    swapped = text[:position] + second + first + text[position + 2 :]
    assert "bad_check_digit" == _reason(swapped)


VALID = encode_code("9410", 123_456_789, 0, SECRET, NOW_STEP)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(VALID[:-1], id="23-digits"),
        pytest.param(VALID + "0", id="25-digits"),
        pytest.param(" " + VALID[1:], id="leading-space"),
        pytest.param(VALID[:12] + " " + VALID[13:], id="inner-space"),
        pytest.param(VALID + "\n", id="trailing-newline"),
        pytest.param(VALID[:23] + "\n", id="newline-for-digit"),
        pytest.param(VALID[:4] + "-" + VALID[5:], id="dash"),
        pytest.param(VALID[:4] + "_" + VALID[5:], id="underscore"),
        pytest.param("+" + VALID[1:], id="plus-sign"),
        pytest.param(VALID[:10] + "\u0663" + VALID[11:], id="arabic-indic-digit"),
        pytest.param(VALID[:10] + "\uff13" + VALID[11:], id="fullwidth-digit"),
        pytest.param(VALID[:10] + "\u00b3" + VALID[11:], id="superscript-digit"),
        pytest.param("".join(chr(0xFF10 + int(c)) for c in VALID), id="all-fullwidth"),
        pytest.param("".join(chr(0x0660 + int(c)) for c in VALID), id="all-arabic-indic"),
    ],
)
def test_anything_but_24_ascii_digits_is_malformed(text: str) -> None:
    """Wrong length, spaces, signs and non-ASCII digits are all rejected as malformed."""
    assert "malformed" == _reason(text)


def test_non_ascii_digits_are_malformed_even_when_their_values_pass_luhn() -> None:
    """A fullwidth copy of a valid code is malformed, not a valid code or a check-digit error."""
    fullwidth = VALID[:15] + chr(0xFF10 + int(VALID[15])) + VALID[16:]
    assert luhn_check_digit(VALID[:23]) == VALID[23]
    assert "malformed" == _reason(fullwidth)


@pytest.mark.parametrize("value", [int(VALID), VALID.encode(), None, [VALID]])
def test_values_that_are_not_strings_are_malformed(value: object) -> None:
    """A JSON number, bytes or null in place of the code is malformed."""
    assert "malformed" == _reason(value)


@given(st.text(max_size=30).filter(lambda t: not (t.isascii() and t.isdigit() and len(t) == 24)))
def test_any_text_that_is_not_24_ascii_digits_is_malformed(text: str) -> None:
    """Any string other than exactly 24 ASCII digits is malformed."""
    assert "malformed" == _reason(text)


@pytest.mark.parametrize("kind", [0, 2, 3, 4, 5, 6, 7, 8, 9])
def test_a_code_of_another_kind_is_unsupported(kind: int) -> None:
    """A well-formed code whose fifth digit is not 1 is unsupported_kind."""
    text = encode_code("9410", 123_456_789, 0, SECRET, NOW_STEP, kind=kind)
    assert luhn_valid(text)
    assert "unsupported_kind" == _reason(text)


def test_the_check_digit_is_checked_before_the_kind() -> None:
    """A code with both a wrong kind and a wrong check digit reports bad_check_digit."""
    text = encode_code("9410", 123_456_789, 0, SECRET, NOW_STEP, kind=2)
    broken = text[:23] + str((int(text[23]) + 1) % 10)
    assert "bad_check_digit" == _reason(broken)


def test_code_format_error_is_a_value_error_with_its_reason_as_message() -> None:
    """CodeFormatError subclasses ValueError and carries the reason as text too."""
    with pytest.raises(ValueError, match="^malformed$") as caught:
        parse_code("123")
    assert isinstance(caught.value, CodeFormatError)
    assert "malformed" == caught.value.reason


def test_consecutive_counters_give_distinct_codes_and_otps() -> None:
    """Over 2000 consecutive (step, seq) pairs of one secret, no code or otp repeats."""
    pairs = [(step, seq) for step in range(NOW_STEP, NOW_STEP + 200) for seq in range(10)]
    texts = [encode_code("9410", 123_456_789, seq, SECRET, step) for step, seq in pairs]
    assert 2000 == len(set(texts))
    assert 2000 == len({parse_code(text).otp for text in texts})


# Time steps


@pytest.mark.parametrize(
    ("now_s", "step"), [(0, 0), (29, 0), (30, 1), (59, 1), (60, 2), (1_700_000_000, 56_666_666)]
)
def test_step_of_is_the_floor_of_seconds_over_step(now_s: int, step: int) -> None:
    """step_of(now_s, 30) is floor(now_s / 30)."""
    assert step == step_of(now_s, STEP_S)


@given(st.integers(min_value=0, max_value=2**40), st.integers(min_value=1, max_value=300))
def test_a_step_expires_at_the_first_second_of_the_next(step: int, step_s: int) -> None:
    """step_expiry_s is the first second that no longer belongs to the step."""
    expiry_s = step_expiry_s(step, step_s)
    assert step == step_of(expiry_s - 1, step_s)
    assert step + 1 == step_of(expiry_s, step_s)


def test_step_length_must_be_positive() -> None:
    """A zero step length is refused, not divided by."""
    with pytest.raises(ValueError):
        step_of(NOW_S, 0)
    with pytest.raises(ValueError):
        step_expiry_s(NOW_STEP, 0)


# Verification


def _match(
    code: PaymentCode,
    now_s: int = NOW_S,
    secret: bytes = SECRET,
    window_steps: int = WINDOW_STEPS,
    lookback_steps: int = LOOKBACK_STEPS,
) -> tuple[str, int | None]:
    return match_step(code, secret, now_s, STEP_S, window_steps, lookback_steps)


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_codes_inside_the_window_are_ok_with_their_step(offset: int) -> None:
    """A code of now-1, now or now+1 is ok and names its own step."""
    assert ("ok", NOW_STEP + offset) == _match(_code_at(NOW_STEP + offset))


def test_a_code_two_steps_ahead_is_wrong() -> None:
    """A code from beyond the window in the future is wrong_otp, not ok or expired."""
    assert ("wrong_otp", None) == _match(_code_at(NOW_STEP + 2))


def test_a_code_just_before_the_window_is_expired() -> None:
    """A code of now-2 is expired and names its step."""
    assert ("expired", NOW_STEP - 2) == _match(_code_at(NOW_STEP - 2))


def test_the_oldest_step_of_the_lookback_is_still_expired() -> None:
    """A code of now-1-lookback is expired; one step older is wrong_otp."""
    oldest = NOW_STEP - WINDOW_STEPS - LOOKBACK_STEPS
    assert ("expired", oldest) == _match(_code_at(oldest))
    assert ("wrong_otp", None) == _match(_code_at(oldest - 1))


def test_a_code_stays_ok_until_the_end_of_the_step_after_next() -> None:
    """A code of step s is ok up to the last second of s+1 and expired from then on."""
    code = _code_at(NOW_STEP)
    last_ok_s = step_expiry_s(NOW_STEP + 1, STEP_S) - 1
    assert ("ok", NOW_STEP) == _match(code, now_s=last_ok_s)
    assert ("expired", NOW_STEP) == _match(code, now_s=last_ok_s + 1)


def test_a_code_is_ok_from_the_step_before_its_own() -> None:
    """A code of step s is ok from the first second of s-1 (phone clock ahead), not before."""
    code = _code_at(NOW_STEP)
    first_ok_s = step_expiry_s(NOW_STEP - 2, STEP_S)
    assert ("ok", NOW_STEP) == _match(code, now_s=first_ok_s)
    assert ("wrong_otp", None) == _match(code, now_s=first_ok_s - 1)


def test_a_zero_window_accepts_only_the_current_step() -> None:
    """With window_steps 0 the current step is ok and the previous one expired."""
    assert ("ok", NOW_STEP) == _match(_code_at(NOW_STEP), window_steps=0)
    assert ("expired", NOW_STEP - 1) == _match(_code_at(NOW_STEP - 1), window_steps=0)
    assert ("wrong_otp", None) == _match(_code_at(NOW_STEP + 1), window_steps=0)


def test_without_lookback_an_old_code_is_wrong() -> None:
    """With lookback_steps 0 a code just before the window is wrong_otp."""
    assert ("wrong_otp", None) == _match(_code_at(NOW_STEP - 2), lookback_steps=0)


def test_a_code_made_with_another_secret_is_wrong() -> None:
    """A code from a different device secret never matches."""
    other = bytes(range(1, 33))
    assert ("wrong_otp", None) == _match(_code_at(NOW_STEP, secret=other))


def test_the_seq_digit_is_part_of_what_the_otp_proves() -> None:
    """The otp of seq 3 shown with seq 4 does not match."""
    genuine = _code_at(NOW_STEP, seq=3)
    relabelled = PaymentCode(genuine.issuer, genuine.kind, genuine.slot, 4, genuine.otp)
    assert ("ok", NOW_STEP) == _match(genuine)
    assert ("wrong_otp", None) == _match(relabelled)


@pytest.mark.parametrize("position", range(8))
def test_every_otp_digit_must_match(position: int) -> None:
    """An otp that differs from the genuine one in any single digit is wrong_otp."""
    genuine = _code_at(NOW_STEP)
    digit = str((int(genuine.otp[position]) + 1) % 10)
    otp = genuine.otp[:position] + digit + genuine.otp[position + 1 :]
    altered = PaymentCode(genuine.issuer, genuine.kind, genuine.slot, genuine.seq, otp)
    assert ("wrong_otp", None) == _match(altered)


def test_steps_before_the_epoch_are_never_tried() -> None:
    """At unix time 0 a step-0 code is ok and the window does not reach step -1."""
    assert ("ok", 0) == _match(_code_at(0), now_s=0)
    assert ("ok", 1) == _match(_code_at(1), now_s=0)


@pytest.mark.parametrize(
    ("window_steps", "lookback_steps"),
    [(-1, 0), (WINDOW_STEPS_MAX + 1, 0), (1, -1), (1, LOOKBACK_STEPS_MAX + 1)],
)
def test_window_and_lookback_are_bounded(window_steps: int, lookback_steps: int) -> None:
    """A negative or oversized window or lookback is refused."""
    with pytest.raises(ValueError):
        _match(_code_at(NOW_STEP), window_steps=window_steps, lookback_steps=lookback_steps)


@given(
    device_secrets,
    st.integers(min_value=1000, max_value=2**40),
    seqs,
    st.integers(min_value=-(WINDOW_STEPS + LOOKBACK_STEPS + 3), max_value=WINDOW_STEPS + 3),
    st.integers(min_value=0, max_value=STEP_S - 1),
)
def test_match_result_depends_only_on_the_step_distance(
    secret: bytes, now_step: int, seq: int, offset: int, second: int
) -> None:
    """Within the window a code is ok, in the lookback expired, elsewhere wrong."""
    code = _code_at(now_step + offset, seq=seq, secret=secret)
    result = _match(code, now_s=now_step * STEP_S + second, secret=secret)
    if -WINDOW_STEPS <= offset <= WINDOW_STEPS:
        assert ("ok", now_step + offset) == result
    elif -WINDOW_STEPS - LOOKBACK_STEPS <= offset < -WINDOW_STEPS:
        assert ("expired", now_step + offset) == result
    else:
        assert ("wrong_otp", None) == result


# Slots and partitions


@given(st.integers(min_value=0, max_value=PARTITIONS - 1), st.randoms(use_true_random=False))
def test_random_slot_has_nine_digits_and_the_partition(partition: int, rng: random.Random) -> None:
    """A random slot is 9 digits without a leading zero and ends in its partition."""
    slot = random_slot(partition, rng.randrange)
    assert 9 == len(str(slot))
    assert partition == partition_of_slot(slot)
    assert partition == slot % 1000


@pytest.mark.parametrize("partition", [0, 7, 999])
def test_random_slot_spans_the_whole_nine_digit_range(partition: int) -> None:
    """The smallest and largest random draws give the first and last 9-digit slots."""
    assert SLOT_MIN + partition == random_slot(partition, lambda n: 0)
    assert SLOT_MAX - 999 + partition == random_slot(partition, lambda n: n - 1)


def test_random_slot_draws_from_all_900000_slots_of_a_partition() -> None:
    """random_slot asks its randomness for one of 900,000 values and uses it."""
    asked: list[int] = []

    def randbelow(n: int) -> int:
        asked.append(n)
        return 123_456

    assert 223_456_042 == random_slot(42, randbelow)
    assert [900_000] == asked


@pytest.mark.parametrize("partition", [-1, PARTITIONS])
def test_random_slot_refuses_a_partition_out_of_range(partition: int) -> None:
    """Partitions are 0-999."""
    with pytest.raises(ValueError):
        random_slot(partition, lambda n: 0)


def test_random_slot_refuses_randomness_out_of_range() -> None:
    """A randbelow that returns more than asked for is caught, not turned into a 10-digit slot."""
    with pytest.raises(ValueError):
        random_slot(0, lambda n: n)


def test_partition_of_slot_is_its_last_three_digits() -> None:
    """partition_of_slot reads the last three digits of the slot."""
    assert 789 == partition_of_slot(123_456_789)
    assert 0 == partition_of_slot(100_000_000)
    assert 42 == partition_of_slot(42)


# The published test vectors


def _doc_vectors() -> list[dict[str, str]]:
    text = DOC_PATH.read_text(encoding="utf-8")
    section = text.split("\n## Test vectors\n", 1)[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


DOC_VECTORS = _doc_vectors()


def test_the_document_publishes_at_least_eight_vectors() -> None:
    """docs/payment-code.md has at least 8 test vectors with every column filled."""
    assert len(DOC_VECTORS) >= 8
    columns = {"secret (hex)", "unix time (s)", "step", "seq", "issuer", "slot", "otp", "code"}
    for row in DOC_VECTORS:
        assert columns == set(row)
        assert re.fullmatch(r"[0-9]{24}", row["code"])


def test_the_vectors_include_the_two_named_secrets() -> None:
    """The vectors cover the 0x00..0x1f secret and the RFC 6238 SHA-256 ASCII seed."""
    secrets_used = {bytes.fromhex(row["secret (hex)"]) for row in DOC_VECTORS}
    assert bytes(range(32)) in secrets_used
    assert b"12345678901234567890123456789012" in secrets_used


@pytest.mark.parametrize("row", DOC_VECTORS, ids=lambda row: row["code"])
def test_each_published_vector_is_reproduced(row: dict[str, str]) -> None:
    """Each row's step, otp and 24-digit code follow from its secret, time, seq, issuer, slot."""
    secret = bytes.fromhex(row["secret (hex)"])
    now_s = int(row["unix time (s)"])
    seq = int(row["seq"])
    step = step_of(now_s, STEP_S)
    assert int(row["step"]) == step
    assert row["code"] == encode_code(row["issuer"], int(row["slot"]), seq, secret, step)
    parsed = parse_code(row["code"])
    assert row["otp"] == parsed.otp
    assert (row["issuer"], int(row["slot"]), seq) == (parsed.issuer, parsed.slot, parsed.seq)
    assert ("ok", step) == match_step(parsed, secret, now_s, STEP_S, WINDOW_STEPS, LOOKBACK_STEPS)
