"""The POS SDK's scan classifier (`pos_sdk.scanner`): payment codes, coupons, products.

Valid codes are built here from 23 random digits and a reference Luhn written
independently of both `pos_sdk.scanner` and `gateway.codes`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codes import CodeFormatError, parse_code
from pos_sdk.scanner import (
    SCAN_CHARS_MAX,
    ScannerError,
    ScanResult,
    classify,
    parse_payment_code,
)

ROOT = Path(__file__).resolve().parents[2]
PREFIXES = frozenset({"9410", "8860"})
VALID = "941011234567890077743322"
"""The first test vector of docs/payment-code.md."""

DIGITS = "0123456789"


def reference_luhn_digit(payload: str) -> str:
    """The Luhn check digit of `payload`, written out the textbook way."""
    digits = [int(c) for c in payload]
    # Double every second digit from the right, starting with the rightmost
    # payload digit (the check digit will sit to its right).
    for i in range(len(digits) - 1, -1, -2):
        digits[i] = sum(divmod(digits[i] * 2, 10))
    return str(-sum(digits) % 10)


@st.composite
def payment_codes(draw: st.DrawFn, prefixes: st.SearchStrategy[str] = st.sampled_from(sorted(PREFIXES))) -> str:
    prefix = draw(prefixes)
    rest = draw(st.text(alphabet=DIGITS, min_size=18, max_size=18))
    payload = prefix + "1" + rest
    return payload + reference_luhn_digit(payload)


line_noise = st.sampled_from(["", " ", "  ", "\r", "\n", "\r\n", "\t", " \r\n"])
aim_prefixes = st.sampled_from(["", "]C0", "]Q1"])
separators = st.sampled_from(["", "", "", " ", "-", "  ", " - "])


def _doc_vectors() -> list[str]:
    text = (ROOT / "docs" / "payment-code.md").read_text(encoding="utf-8")
    return re.findall(r"\| `(\d{24})` \|", text)


# Payment codes


def test_reference_luhn_matches_the_published_example() -> None:
    """The reference Luhn digit of 7992739871 is 3, the standard worked example."""
    assert "3" == reference_luhn_digit("7992739871")


@pytest.mark.parametrize("code", [c for c in _doc_vectors() if c[:4] in PREFIXES])
def test_published_vectors_are_payment_codes(code: str) -> None:
    """Every docs/payment-code.md vector with a configured prefix is a payment code."""
    assert ScanResult("payment_code", code) == classify(code, PREFIXES)


def test_published_vectors_were_found() -> None:
    """Nine vectors are read from docs/payment-code.md, so the test above is not empty."""
    assert 9 == len(_doc_vectors())


@given(payment_codes(), line_noise, aim_prefixes, line_noise, line_noise)
def test_scanned_code_with_noise_classifies_back_to_the_code(
    code: str, before: str, aim: str, after: str, suffix: str
) -> None:
    """A code wrapped in an AIM prefix, CR, LF, CRLF, tabs or spaces is that code."""
    result = classify(before + aim + code + after + suffix, PREFIXES)
    assert "payment_code" == result.kind
    assert code == result.value
    assert None is result.reason


@given(payment_codes(), st.lists(separators, min_size=23, max_size=23), line_noise, line_noise)
def test_typed_code_with_spaces_and_dashes_classifies_back_to_the_code(
    code: str, gaps: list[str], before: str, after: str
) -> None:
    """A code typed with spaces or dashes between any of its digits is that code."""
    typed = code[0] + "".join(gap + digit for gap, digit in zip(gaps, code[1:], strict=True))
    assert ScanResult("payment_code", code) == classify(before + typed + after, PREFIXES)


def test_code_typed_in_groups_of_four_is_the_code() -> None:
    """The 24 digits as printed under the barcode, in groups of four, are the code."""
    assert VALID == parse_payment_code("9410 1123 4567 8900 7774 3322", PREFIXES)


@pytest.mark.parametrize(
    "text",
    ["]C0\r\n" + VALID, VALID[:12] + "\r\n" + VALID[12:], "9410\t1123\t4567\t8900\t7774\t3322"],
)
def test_cr_lf_and_tab_inside_the_input_are_dropped(text: str) -> None:
    """A stray CR, LF or tab inside the input (after the AIM prefix, between groups) is dropped."""
    assert VALID == classify(text, PREFIXES).value


@pytest.mark.parametrize(("aim", "symbology"), [("]C0", "code128"), ("]Q1", "qr"), ("]C9", "code128"), ("]Q6", "qr")])
def test_aim_identifier_names_the_symbology(aim: str, symbology: str) -> None:
    """The AIM identifier in front of a code gives its symbology."""
    assert ScanResult("payment_code", VALID, symbology) == classify(aim + VALID + "\r\n", PREFIXES)


@given(payment_codes(), st.integers(min_value=0, max_value=23), st.integers(min_value=1, max_value=9))
def test_any_single_digit_corruption_is_a_bad_check_digit(code: str, position: int, shift: int) -> None:
    """Changing any one digit gives unknown with reason bad_check_digit."""
    digit = str((int(code[position]) + shift) % 10)
    corrupted = code[:position] + digit + code[position + 1 :]
    result = classify(corrupted, PREFIXES)
    assert ("unknown", "bad_check_digit") == (result.kind, result.reason)


@given(payment_codes(st.text(alphabet=DIGITS, min_size=4, max_size=4).filter(lambda p: p not in PREFIXES)))
def test_code_with_a_prefix_not_configured_is_an_unknown_issuer(code: str) -> None:
    """A valid code whose issuer prefix is not configured is unknown_issuer."""
    assert ScanResult("unknown", code, None, "unknown_issuer") == classify(code, PREFIXES)


def test_same_code_is_a_payment_code_where_its_prefix_is_configured() -> None:
    """Taishin's 8860 code is unknown_issuer at a terminal accepting only 9410."""
    code = "886019876543213140290856"
    assert "payment_code" == classify(code, PREFIXES).kind
    assert "unknown_issuer" == classify(code, {"9410"}).reason


@pytest.mark.parametrize("kind", "023456789")
def test_code_of_another_kind_is_unsupported(kind: str) -> None:
    """A Luhn-valid code whose digit 5 is not 1 is unsupported_kind."""
    payload = "9410" + kind + VALID[5:23]
    code = payload + reference_luhn_digit(payload)
    assert ScanResult("unknown", code, None, "unsupported_kind") == classify(code, PREFIXES)


@pytest.mark.parametrize("text", [VALID[:-1], VALID + "0", VALID[:20]])
def test_digits_of_the_wrong_length_are_wrong_length(text: str) -> None:
    """23, 25 or 20 ASCII digits that are no product are unknown with wrong_length."""
    assert ScanResult("unknown", text, None, "wrong_length") == classify(text, PREFIXES)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("".join(chr(0xFF10 + int(c)) for c in VALID), id="fullwidth"),
        pytest.param("".join(chr(0x0660 + int(c)) for c in VALID), id="arabic-indic"),
        pytest.param(VALID[:10] + "\u00b3" + VALID[11:], id="superscript"),
        pytest.param(VALID[:10] + "_" + VALID[11:], id="underscore"),
        pytest.param(VALID[:10] + "\u3000" + VALID[11:], id="ideographic-space"),
    ],
)
def test_code_with_other_than_ascii_digits_is_not_a_payment_code(text: str) -> None:
    """Unicode digits or other separators are not converted: unknown with not_digits."""
    result = classify(text, PREFIXES)
    assert ("unknown", "not_digits") == (result.kind, result.reason)


@given(st.text(alphabet=DIGITS, min_size=24, max_size=24))
def test_scanner_agrees_with_the_gateway_parser_on_any_24_digits(text: str) -> None:
    """For any 24 digits the terminal's verdict is the gateway's format check plus the prefix."""
    try:
        parse_code(text)
        gateway_reason = "unknown_issuer" if text[:4] not in PREFIXES else None
    except CodeFormatError as error:
        gateway_reason = error.reason
    assert gateway_reason == classify(text, PREFIXES).reason


# Products and coupons


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("8801043015561", id="ean13-korea"),
        pytest.param("4006381333931", id="ean13"),
        pytest.param("036000291452", id="upc-a"),
        pytest.param("96385074", id="ean8"),
    ],
)
def test_retail_barcodes_are_products(text: str) -> None:
    """EAN-13, UPC-A and EAN-8 numbers with a valid GS1 check digit are products."""
    assert ScanResult("product", text) == classify(text, PREFIXES)


def test_ean13_with_aim_identifier_is_an_ean13_product() -> None:
    """]E0 in front of an EAN-13 names the symbology ean13."""
    assert ScanResult("product", "8801043015561", "ean13") == classify("]E08801043015561\r", PREFIXES)


@pytest.mark.parametrize("text", ["8801043015562", "036000291453", "96385075"])
def test_retail_barcode_with_a_bad_check_digit_is_not_a_product(text: str) -> None:
    """A product-length number failing the GS1 check is unknown, not a product."""
    assert ScanResult("unknown", text, None, "wrong_length") == classify(text, PREFIXES)


@pytest.mark.parametrize(
    ("text", "coupon"),
    [
        ("CP12AB34", "CP12AB34"),
        ("cpwelcome10", "CPWELCOME10"),
        (" CP-SPRING-2025\r\n", "CPSPRING2025"),
        ("CP" + "Z" * 16, "CP" + "Z" * 16),
    ],
)
def test_coupon_codes_are_coupons_in_upper_case(text: str, coupon: str) -> None:
    """CP and 6-16 letters or digits, any case, dashes aside, is that coupon upper-cased."""
    assert ScanResult("coupon", coupon) == classify(text, PREFIXES)


@pytest.mark.parametrize("text", ["CP12345", "CP" + "Z" * 17, "WELCOME10", "CP12_345", "CP\u0131\u0131\u0131\u0131\u0131\u0131"])
def test_what_is_not_the_coupon_format_is_not_a_coupon(text: str) -> None:
    """Too short, too long, no CP, an underscore or a dotless ı is unknown."""
    assert "unknown" == classify(text, PREFIXES).kind


# Garbage


@pytest.mark.parametrize("text", ["", "   ", "\r\n", "]C0", " ]Q1 \r\n", "-- -"])
def test_nothing_but_noise_is_empty(text: str) -> None:
    """Input that is only whitespace, separators or an AIM identifier is unknown empty."""
    result = classify(text, PREFIXES)
    assert ("unknown", "empty", "") == (result.kind, result.reason, result.value)


def test_input_over_the_limit_is_too_long() -> None:
    """More than SCAN_CHARS_MAX characters is unknown too_long, even if it holds a code."""
    text = VALID + " " * (SCAN_CHARS_MAX - len(VALID) + 1)
    assert ScanResult("unknown", "", None, "too_long") == classify(text, PREFIXES)
    assert "payment_code" == classify(text[:-1], PREFIXES).kind


def test_huge_input_is_too_long() -> None:
    """A megabyte of digits is unknown too_long."""
    assert "too_long" == classify("9" * 1_000_000, PREFIXES).reason


@given(st.text(max_size=SCAN_CHARS_MAX + 20))
def test_classify_never_raises_and_only_24_ascii_digits_pay(text: str) -> None:
    """Any text classifies without raising; a payment code is always 24 ASCII digits."""
    result = classify(text, PREFIXES)
    assert result.kind in ("payment_code", "coupon", "product", "unknown")
    assert (result.reason is not None) == (result.kind == "unknown")
    if result.kind == "payment_code":
        assert re.fullmatch(r"[0-9]{24}", result.value, re.ASCII)


def test_bare_string_of_prefixes_is_refused() -> None:
    """Passing one string as the prefix collection is a TypeError, not a substring match."""
    with pytest.raises(TypeError):
        classify(VALID, "94108860")


# parse_payment_code


def test_parse_payment_code_returns_the_24_digits() -> None:
    """A scanned code parses to its 24 digits."""
    assert VALID == parse_payment_code("]C0" + VALID + "\r\n", PREFIXES)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (VALID[:-1] + "3", "bad_check_digit"),
        ("000110000000420033563062", "unknown_issuer"),
        ("941021234567890077743320", "unsupported_kind"),
        (VALID[:-1], "wrong_length"),
        ("CPWELCOME10", "coupon"),
        ("8801043015561", "product"),
        ("", "empty"),
        ("x" * 300, "too_long"),
        ("hello", "not_digits"),
    ],
)
def test_parse_payment_code_raises_with_the_reason_and_messages(text: str, reason: str) -> None:
    """What is not a payment code raises ScannerError with its reason and two cashier messages."""
    with pytest.raises(ScannerError) as caught:
        parse_payment_code(text, PREFIXES)
    assert reason == caught.value.reason
    assert reason == caught.value.code
    assert caught.value.message and caught.value.message.isascii()
    assert re.search("[가-힣]", caught.value.message_ko)


def test_scanner_error_is_a_value_error() -> None:
    """ScannerError is a ValueError, so callers that catch ValueError see it."""
    with pytest.raises(ValueError):
        parse_payment_code("nope", PREFIXES)


def test_scanner_imports_nothing_from_the_gateway() -> None:
    """Importing pos_sdk.scanner loads no gateway module: the SDK ships without it."""
    probe = "import sys, pos_sdk.scanner; print(sorted(m for m in sys.modules if m.split('.')[0] == 'gateway'))"
    output = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    assert "[]" == output.stdout.strip()
