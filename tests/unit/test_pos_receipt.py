"""Thermal-printer receipts (`pos_sdk.receipt`): widths, amounts, optional lines, the format."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import unicodedata
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pos_sdk.receipt import (
    FIELD_CHARS_MAX,
    ReceiptData,
    display_width,
    format_amount,
    render_receipt,
)

ROOT = Path(__file__).resolve().parents[2]
KST = timezone(timedelta(hours=9), "KST")
STATUSES = ["approved", "declined", "cancelled", "refunded", "partially_refunded", "reversed"]

APPROVED = ReceiptData(
    store_name="GS25 Gangnam Station",
    store_id="gs25-gangnam-01",
    terminal_id="t1",
    time=datetime(2025, 3, 14, 15, 9, 26, tzinfo=KST),
    order_ref="A-1001",
    payment_id="pay_7Q2M9X4K1B",
    approval_code="483920",
    status="approved",
    amount=4_500,
    currency="KRW",
    points_used=4_000,
    balance_after=12_340,
    coupon_discounts=(("WELCOME10", 500),),
)


def columns(text: str) -> int:
    """Printer columns, counted independently of the module under test.

    East Asian wide (W) and fullwidth (F) characters take two columns; the
    module also gives ambiguous (A) ones two, so this counts them as two as
    well, which is the stricter bound.
    """
    return sum(2 if unicodedata.east_asian_width(c) in "WFA" else 1 for c in text)


def lines_of(receipt: str) -> list[str]:
    assert receipt.endswith("\n")
    return receipt[:-1].split("\n")


hangul = st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3)
ascii_printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
# Printable text without ambiguous-width characters: both width rules agree on it.
narrow_or_wide = st.text(st.one_of(hangul, ascii_printable, st.sampled_from("中文字ｱＡ")), max_size=80)
any_text = st.one_of(st.text(max_size=FIELD_CHARS_MAX), st.text(st.one_of(hangul, ascii_printable), max_size=FIELD_CHARS_MAX))
amounts = st.integers(min_value=0, max_value=10**15)


def receipts(text: st.SearchStrategy[str]) -> st.SearchStrategy[ReceiptData]:
    optional_text = st.none() | text
    return st.builds(
        ReceiptData,
        store_name=text,
        store_id=text,
        terminal_id=text,
        time=st.datetimes(timezones=st.just(KST)),
        order_ref=text,
        payment_id=text,
        approval_code=optional_text,
        status=st.sampled_from(STATUSES),
        amount=amounts,
        currency=st.sampled_from(["KRW", "TWD", "JPY", "CNY", "THB", "USD"]),
        points_used=amounts,
        balance_after=st.none() | amounts,
        coupon_discounts=st.lists(st.tuples(text, amounts), max_size=5).map(tuple),
        fx_rate=optional_text,
        partner_network=optional_text,
        refund_amount=st.none() | amounts,
        decline_message=optional_text,
    )


# Widths


@given(receipts(any_text), st.sampled_from([32, 42]), st.sampled_from(["ko", "en"]))
def test_no_line_is_wider_than_the_paper(data: ReceiptData, width: int, language: str) -> None:
    """Every line takes at most `width` columns, whatever the text (Hangul, long, controls)."""
    for line in lines_of(render_receipt(data, width, language)):
        assert columns(line) <= width, line


@given(receipts(narrow_or_wide), st.integers(min_value=32, max_value=48), st.sampled_from(["ko", "en"]))
def test_every_line_is_padded_to_exactly_the_width(data: ReceiptData, width: int, language: str) -> None:
    """Every line is exactly `width` columns, from 32 to 48, in Korean and English."""
    assert {width} == {columns(line) for line in lines_of(render_receipt(data, width, language))}


@given(receipts(any_text), st.sampled_from(["ko", "en"]))
def test_receipt_holds_no_control_characters(data: ReceiptData, language: str) -> None:
    """Nothing but the line breaks between rows is a control or format character."""
    for line in lines_of(render_receipt(data, 42, language)):
        assert [] == [c for c in line if unicodedata.category(c)[0] == "C"]


def test_display_width_counts_hangul_as_two_columns() -> None:
    """"GS25 강남" takes 9 columns: five narrow characters and two wide syllables."""
    assert 9 == display_width("GS25 강남")


def test_long_store_name_is_cut_with_an_ellipsis() -> None:
    """A store name wider than the paper is cut to fit and ends in "..."."""
    data = dataclasses.replace(APPROVED, store_name="지에스25 강남역 지하쇼핑센터 1번 출구 앞 편의점")
    first = lines_of(render_receipt(data, 32, "ko"))[0]
    assert "지에스25 강남역 지하쇼핑센터..." == first.strip()
    assert 32 == columns(first)


def test_short_store_name_is_centred() -> None:
    """A short store name has the spare columns split either side of it."""
    data = dataclasses.replace(APPROVED, store_name="CU 종로")
    assert " " * 12 + "CU 종로" + " " * 13 == lines_of(render_receipt(data, 32, "en"))[0]


def test_line_break_in_the_store_name_does_not_start_a_line() -> None:
    """A store name with CR, LF and tabs prints on one line with single spaces."""
    data = dataclasses.replace(APPROVED, store_name="GS25\r\nGangnam\t\tStation")
    assert lines_of(render_receipt(APPROVED, 42, "en")) == lines_of(render_receipt(data, 42, "en"))


def test_value_too_long_for_one_line_is_wrapped_not_cut() -> None:
    """A payment id wider than the paper goes under its label, whole, right-aligned."""
    payment_id = "pay_" + "7Q2M9X4K1B" * 4
    lines = lines_of(render_receipt(dataclasses.replace(APPROVED, payment_id=payment_id), 32, "en"))
    start = lines.index("Payment".ljust(32))
    assert payment_id[:32] == lines[start + 1]
    assert payment_id[32:].rjust(32) == lines[start + 2]


# Amounts


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (4_500, "KRW", "4,500 KRW"),
        (1_250, "THB", "12.50 THB"),
        (1_234_567, "TWD", "1,234,567 TWD"),
        (0, "JPY", "0 JPY"),
        (5, "USD", "0.05 USD"),
        (100_000_000, "CNY", "1,000,000.00 CNY"),
        (-500, "KRW", "-500 KRW"),
    ],
)
def test_amounts_use_thousands_separators_and_the_currency_minor_digits(amount: int, currency: str, text: str) -> None:
    """Minor units print with separators, no decimals for KRW/TWD/JPY and two for THB/USD/CNY."""
    assert text == format_amount(amount, currency)


def test_receipt_amount_line_shows_thb_with_two_decimals() -> None:
    """A 1250-satang THB sale prints its amount as 12.50 THB."""
    data = dataclasses.replace(APPROVED, amount=1_250, currency="THB", coupon_discounts=())
    assert "Amount" + " " * 27 + "12.50 THB" in lines_of(render_receipt(data, 42, "en"))


def test_each_coupon_discount_has_its_own_line() -> None:
    """Every coupon prints its label and its discount as a negative amount."""
    data = dataclasses.replace(APPROVED, coupon_discounts=(("WELCOME10", 500), ("봄맞이 할인", 1_200)))
    lines = lines_of(render_receipt(data, 32, "ko"))
    assert "WELCOME10".ljust(24) + "-500 KRW" in lines
    assert "봄맞이 할인" + " " * 11 + "-1,200 KRW" in lines  # 11 + 11 + 10 columns


# Optional lines


def test_fx_rate_and_partner_network_are_absent_when_not_given() -> None:
    """A home-network sale prints no FX rate or partner network line."""
    text = render_receipt(APPROVED, 42, "en")
    assert ("FX rate" in text, "Partner network" in text) == (False, False)


def test_fx_rate_and_partner_network_are_printed_when_given() -> None:
    """A partner sale prints its FX rate and partner network."""
    data = dataclasses.replace(APPROVED, fx_rate="1 TWD = 43.12 KRW", partner_network="Taishin Bank Rewards")
    lines = lines_of(render_receipt(data, 42, "en"))
    assert "FX rate" + " " * 18 + "1 TWD = 43.12 KRW" in lines
    assert "Partner network" + " " * 7 + "Taishin Bank Rewards" in lines


def test_refund_amount_is_printed_when_given() -> None:
    """A partly refunded payment prints the refunded amount."""
    data = dataclasses.replace(APPROVED, status="partially_refunded", refund_amount=1_500)
    lines = lines_of(render_receipt(data, 42, "en"))
    assert "Status" + " " * 18 + "PARTIALLY REFUNDED" in lines
    assert "Refunded" + " " * 25 + "1,500 KRW" in lines


def test_declined_receipt_prints_the_decline_message_wrapped() -> None:
    """A declined sale prints its decline message at word boundaries, without an approval code."""
    data = dataclasses.replace(
        APPROVED, status="declined", approval_code=None, balance_after=None, coupon_discounts=(),
        decline_message="Not enough points. Ask for another payment method.",
    )
    lines = lines_of(render_receipt(data, 32, "en"))
    assert ["Not enough points. Ask for".ljust(32), "another payment method.".ljust(32)] == lines[9:11]
    assert not any(line.startswith(("Approval code", "Points balance")) for line in lines)


@pytest.mark.parametrize(
    ("status", "korean"),
    [("approved", "승인"), ("declined", "거절"), ("cancelled", "취소"), ("refunded", "환불"),
     ("partially_refunded", "부분환불"), ("reversed", "망취소")],
)
def test_korean_receipt_names_the_status_in_korean(status: str, korean: str) -> None:
    """The ko status line gives the status in Korean."""
    lines = lines_of(render_receipt(dataclasses.replace(APPROVED, status=status), 32, "ko"))
    assert "상태" + " " * (28 - display_width(korean)) + korean in lines


# The format


def test_golden_approved_krw_receipt_in_english_at_42_columns() -> None:
    """An approved KRW sale with one coupon prints exactly this at 42 columns in English."""
    expected = [
        "           GS25 Gangnam Station           ",
        "------------------------------------------",
        "Store                      gs25-gangnam-01",
        "Terminal                                t1",
        "Time                   2025-03-14 15:09:26",
        "Order                               A-1001",
        "Payment                     pay_7Q2M9X4K1B",
        "------------------------------------------",
        "Status                            APPROVED",
        "Amount                           4,500 KRW",
        "WELCOME10                         -500 KRW",
        "Points used                          4,000",
        "Points balance                      12,340",
        "Approval code                       483920",
        "------------------------------------------",
        "                Thank you                 ",
    ]
    assert "\n".join(expected) + "\n" == render_receipt(APPROVED, 42, "en")


def test_time_is_printed_as_given_not_converted() -> None:
    """The time prints in its own offset: 06:09:26 UTC stays 06:09:26."""
    data = dataclasses.replace(APPROVED, time=datetime(2025, 3, 14, 6, 9, 26, tzinfo=timezone.utc))
    assert "Time" + " " * 19 + "2025-03-14 06:09:26" in lines_of(render_receipt(data, 42, "en"))


# Refusals


@pytest.mark.parametrize("width", [31, 49, 0, 80])
def test_width_outside_32_to_48_is_refused(width: int) -> None:
    """Only 32 to 48 columns are printable widths."""
    with pytest.raises(ValueError):
        render_receipt(APPROVED, width, "en")


def test_unknown_language_is_refused() -> None:
    """Only ko and en receipts exist."""
    with pytest.raises(ValueError):
        render_receipt(APPROVED, 42, "ja")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"time": datetime(2025, 3, 14, 15, 9, 26)}, id="naive-time"),
        pytest.param({"currency": "EUR"}, id="unlisted-currency"),
        pytest.param({"status": "pending"}, id="unknown-status"),
        pytest.param({"amount": -1}, id="negative-amount"),
        pytest.param({"points_used": True}, id="bool-points"),
        pytest.param({"store_name": "x" * (FIELD_CHARS_MAX + 1)}, id="field-too-long"),
        pytest.param({"coupon_discounts": (("A", 1),) * 6}, id="six-coupons"),
        pytest.param({"coupon_discounts": (("A", -1),)}, id="negative-coupon"),
    ],
)
def test_receipt_data_refuses_what_it_cannot_print(change: dict) -> None:
    """Receipt data with a naive time, unknown currency or status, or bad amounts is a ValueError."""
    with pytest.raises(ValueError):
        dataclasses.replace(APPROVED, **change)


def test_receipt_imports_nothing_from_the_gateway() -> None:
    """Importing pos_sdk.receipt loads no gateway module: the SDK ships without it."""
    probe = "import sys, pos_sdk.receipt; print(sorted(m for m in sys.modules if m.split('.')[0] == 'gateway'))"
    output = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    assert "[]" == output.stdout.strip()
