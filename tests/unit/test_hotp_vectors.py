"""HOTP and TOTP (`gateway.codes.hotp`, `totp`) against the RFC test vectors and pyotp.

Expected values are copied from RFC 4226 Appendix D and RFC 6238 Appendix B.
pyotp serves as a second, independent implementation for inputs the RFCs do
not cover (SHA-256, 8 digits, 32-byte secrets: what payment codes use).
"""

from __future__ import annotations

import base64
import hashlib

import pyotp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codes import hotp, totp

RFC4226_SECRET = b"12345678901234567890"
RFC4226_HOTP = [
    "755224", "287082", "359152", "969429", "338314",
    "254676", "287922", "162583", "399871", "520489",
]  # fmt: skip

# RFC 6238 Appendix B uses a seed as long as each digest's output.
RFC6238_SEEDS = {
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
RFC6238_TOTP = [
    (59, "sha1", "94287082"),
    (59, "sha256", "46119246"),
    (59, "sha512", "90693936"),
    (1111111109, "sha1", "07081804"),
    (1111111109, "sha256", "68084774"),
    (1111111109, "sha512", "25091201"),
    (1111111111, "sha1", "14050471"),
    (1111111111, "sha256", "67062674"),
    (1111111111, "sha512", "99943326"),
    (1234567890, "sha1", "89005924"),
    (1234567890, "sha256", "91819424"),
    (1234567890, "sha512", "93441116"),
    (2000000000, "sha1", "69279037"),
    (2000000000, "sha256", "90698825"),
    (2000000000, "sha512", "38618901"),
    (20000000000, "sha1", "65353130"),
    (20000000000, "sha256", "77737706"),
    (20000000000, "sha512", "47863826"),
]
# RFC 6238 Appendix B also lists T, the counter each time maps to.
RFC6238_STEPS = {
    59: 0x1,
    1111111109: 0x23523EC,
    1111111111: 0x23523ED,
    1234567890: 0x273EF07,
    2000000000: 0x3F940AA,
    20000000000: 0x27BC86AA,
}


@pytest.mark.parametrize(("counter", "expected"), list(enumerate(RFC4226_HOTP)))
def test_hotp_matches_rfc4226_appendix_d(counter: int, expected: str) -> None:
    """HOTP-SHA1 with 6 digits gives the RFC 4226 value for counters 0-9."""
    assert expected == hotp(RFC4226_SECRET, counter, digits=6, digest="sha1")


@pytest.mark.parametrize(("now_s", "digest", "expected"), RFC6238_TOTP)
def test_totp_matches_rfc6238_appendix_b(now_s: int, digest: str, expected: str) -> None:
    """TOTP with 8 digits and a 30 s step gives the RFC 6238 value for each time and digest."""
    assert expected == totp(RFC6238_SEEDS[digest], now_s, step_s=30, digits=8, digest=digest)


@pytest.mark.parametrize(("now_s", "digest", "expected"), RFC6238_TOTP)
def test_hotp_at_the_rfc6238_counter_equals_the_totp(
    now_s: int, digest: str, expected: str
) -> None:
    """The RFC 6238 values are HOTP at the counter T the RFC lists for each time."""
    assert expected == hotp(RFC6238_SEEDS[digest], RFC6238_STEPS[now_s], 8, digest)


def test_short_otps_keep_their_leading_zeros() -> None:
    """An OTP below 10^7 is zero padded to 8 digits, as the RFC 6238 value 07081804 is."""
    assert "07081804" == totp(RFC6238_SEEDS["sha1"], 1111111109, digits=8, digest="sha1")


@given(
    # pyotp refuses secrets shorter than 112 bits, so the comparison starts at 16 bytes.
    st.binary(min_size=16, max_size=64),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.sampled_from(["sha1", "sha256", "sha512"]),
    st.integers(min_value=6, max_value=10),
)
def test_hotp_agrees_with_pyotp(secret: bytes, counter: int, digest: str, digits: int) -> None:
    """For any secret, counter, digest and length, hotp gives what pyotp gives."""
    reference = pyotp.HOTP(
        base64.b32encode(secret).decode(), digits=digits, digest=getattr(hashlib, digest)
    )
    assert reference.at(counter) == hotp(secret, counter, digits, digest)


def test_defaults_are_eight_digit_sha256() -> None:
    """hotp and totp default to 8 digits of HMAC-SHA256, the payment code's OTP."""
    seed = RFC6238_SEEDS["sha256"]
    assert "46119246" == totp(seed, 59)
    assert "46119246" == hotp(seed, 1)


@pytest.mark.parametrize("digest", ["md5", "SHA256", "sha3_256", ""])
def test_hotp_refuses_digests_rfc6238_does_not_name(digest: str) -> None:
    """Only sha1, sha256 and sha512 are accepted."""
    with pytest.raises(ValueError):
        hotp(RFC4226_SECRET, 0, 8, digest)


@pytest.mark.parametrize("digits", [0, 5, 11])
def test_hotp_refuses_lengths_outside_6_to_10(digits: int) -> None:
    """Fewer than 6 digits is guessable and more than 10 exceeds the 31-bit truncation."""
    with pytest.raises(ValueError):
        hotp(RFC4226_SECRET, 0, digits, "sha1")


@pytest.mark.parametrize("counter", [-1, 2**64])
def test_hotp_refuses_counters_outside_eight_bytes(counter: int) -> None:
    """The counter must fit the 8-byte unsigned field RFC 4226 defines."""
    with pytest.raises(ValueError):
        hotp(RFC4226_SECRET, counter, 6, "sha1")
