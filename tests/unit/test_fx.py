"""Exchange rates and conversions (`gateway.fx`): the table, quotes, rounding, and value never created.

Golden numbers use the table below, not config/fx.toml, so that an operator
changing a rate cannot change what these tests expect. Exact oracles use
`fractions.Fraction`, an arithmetic independent of the module's Decimal code.
"""

from __future__ import annotations

import math
import tomllib
from decimal import ROUND_CEILING, Context, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.fx import (
    AMOUNT_MINOR_MAX,
    MID_MAX,
    MID_MIN,
    QUOTE_TTL_MS_MAX,
    RATE_DIGITS,
    RATES_MAX,
    FxError,
    Quote,
    Rate,
    RateTable,
    exchange_points,
    merchant_amount_for_points,
    points_for_payment,
    quote,
    rate_text,
    refund_points,
)
from gateway.settings import CURRENCIES

FX_TOML = Path(__file__).resolve().parents[2] / "config" / "fx.toml"
NOW_MS = 1_764_547_200_000  # 2025-12-01T00:00:00Z

TABLE_TOML = """
[[rate]]
base = "TWD"
quote = "KRW"
mid = "43.12"
spread_bp = 50

[[rate]]
base = "THB"
quote = "KRW"
mid = "38.90"
spread_bp = 60

[[rate]]
base = "JPY"
quote = "KRW"
mid = "9.05"
spread_bp = 50

[[rate]]
base = "USD"
quote = "KRW"
mid = "1400"
spread_bp = 50
"""
TABLE = RateTable.from_toml(tomllib.loads(TABLE_TOML))


def twd_krw() -> Quote:
    """The quote a payment in TWD by one of our members uses: TWD priced in KRW points."""
    return quote(TABLE, "TWD", "KRW", "q_twd", NOW_MS)


def krw_twd() -> Quote:
    """The inverse quote: KRW priced in TWD, for a Taishin member paying in Korea."""
    return quote(TABLE, "KRW", "TWD", "q_krw", NOW_MS)


def doc_with(**second: Any) -> dict[str, Any]:
    """A two-entry document whose second entry (rate[1]) has the given keys changed or removed."""
    entry = {"base": "THB", "quote": "KRW", "mid": "38.90", "spread_bp": 60}
    entry.update(second)
    entry = {k: v for k, v in entry.items() if v is not None}
    return {"rate": [{"base": "TWD", "quote": "KRW", "mid": "43.12", "spread_bp": 50}, entry]}


# -- the table -------------------------------------------------------------------


def test_shipped_fx_toml_prices_twd_thb_and_jpy_in_krw():
    """config/fx.toml loads and prices TWD, THB and JPY in KRW."""
    table = RateTable.from_toml(tomllib.loads(FX_TOML.read_text()))
    assert {("TWD", "KRW"), ("THB", "KRW"), ("JPY", "KRW")} <= {(r.base, r.quote) for r in table.rates}


def test_entries_parse_to_exact_decimals():
    """Rate("TWD", "KRW", Decimal("43.12"), 50): the mid string becomes the exact Decimal."""
    assert Rate("TWD", "KRW", Decimal("43.12"), 50) == TABLE.rates[0]


def test_empty_document_is_an_empty_table():
    """() rates: a gateway without fx.toml entries has no cross-currency payments."""
    assert () == RateTable.from_toml({}).rates


def test_spread_bounds_are_inclusive():
    """0 and 1000 bp are both allowed."""
    table = RateTable.from_toml(doc_with(spread_bp=1000))
    assert (50, 1000) == (table.rates[0].spread_bp, table.rates[1].spread_bp)
    assert 0 == RateTable.from_toml(doc_with(spread_bp=0)).rates[1].spread_bp


@pytest.mark.parametrize(
    ("second", "code", "message"),
    [
        ({"base": "XXX"}, "unknown_currency", r"rate\[1\] \(XXX/KRW\)\.base"),
        ({"quote": "krw"}, "unknown_currency", r"rate\[1\] \(THB/krw\)\.quote"),
        ({"base": "KRW"}, "same_currency", r"rate\[1\] \(KRW/KRW\): base and quote are both KRW"),
        ({"mid": "0"}, "bad_mid", r"rate\[1\] \(THB/KRW\)\.mid: must be positive"),
        ({"mid": "0.000"}, "bad_mid", r"rate\[1\] \(THB/KRW\)\.mid: must be positive"),
        ({"mid": "-38.90"}, "bad_mid", r"rate\[1\] \(THB/KRW\)\.mid: expected a positive decimal string"),
        ({"mid": 38.9}, "bad_mid", r"rate\[1\] \(THB/KRW\)\.mid: .*a TOML float is not exact"),
        ({"mid": 39}, "bad_mid", r"rate\[1\] \(THB/KRW\)\.mid: expected a positive decimal string"),
        ({"mid": "NaN"}, "bad_mid", r"rate\[1\] \(THB/KRW\)\.mid"),
        ({"mid": "3.89e1"}, "bad_mid", r"rate\[1\] \(THB/KRW\)\.mid"),
        ({"mid": "38.901234567891"}, "bad_mid", r"at most 12 significant digits"),
        ({"mid": "0.0000001"}, "bad_mid", r"must be 0\.000001 to 1000000"),
        ({"mid": "1000000.5"}, "bad_mid", r"must be 0\.000001 to 1000000"),
        ({"spread_bp": 1001}, "bad_spread", r"rate\[1\] \(THB/KRW\)\.spread_bp: expected an integer from 0 to 1000"),
        ({"spread_bp": -1}, "bad_spread", r"rate\[1\] \(THB/KRW\)\.spread_bp"),
        ({"spread_bp": True}, "bad_spread", r"rate\[1\] \(THB/KRW\)\.spread_bp"),
        ({"spread_bp": 60.0}, "bad_spread", r"rate\[1\] \(THB/KRW\)\.spread_bp"),
        ({"spread_bp": "60"}, "bad_spread", r"rate\[1\] \(THB/KRW\)\.spread_bp"),
        ({"base": "TWD"}, "duplicate_pair", r"rate\[1\] \(TWD/KRW\): duplicate of rate\[0\] \(TWD/KRW\)"),
        ({"base": "KRW", "quote": "TWD"}, "duplicate_pair", r"rate\[1\] \(KRW/TWD\): duplicate of rate\[0\]"),
        ({"spread_bp": None}, "bad_entry", r"rate\[1\]: missing key 'spread_bp'"),
        ({"note": "x"}, "bad_entry", r"rate\[1\]: unknown key 'note'"),
    ],
)
def test_bad_entry_raises_its_code_and_names_the_entry(second, code, message):
    """FxError with a stable code, and a message naming rate[1] and what is wrong with it."""
    with pytest.raises(FxError, match=message) as caught:
        RateTable.from_toml(doc_with(**second))
    assert code == caught.value.code


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"rate": {"base": "TWD"}}, "rate must be an array of tables"),
        ({"rates": []}, "unknown key 'rates'"),
        ({"rate": ["TWD/KRW"]}, r"rate\[0\]: expected a table"),
    ],
)
def test_bad_document_shape_is_refused(doc, message):
    """FxError naming the shape fx.toml should have."""
    with pytest.raises(FxError, match=message):
        RateTable.from_toml(doc)


def test_table_size_is_limited():
    """bad_table above RATES_MAX entries."""
    with pytest.raises(FxError, match=f"at most {RATES_MAX} rates") as caught:
        RateTable((Rate("TWD", "KRW", Decimal("43.12"), 50),) * (RATES_MAX + 1))
    assert "bad_table" == caught.value.code


def test_lookup_returns_the_entry_for_its_own_pair():
    """The THB/KRW entry itself."""
    assert Rate("THB", "KRW", Decimal("38.90"), 60) == TABLE.lookup("THB", "KRW")


def test_lookup_of_the_inverse_pair_is_one_over_mid_with_the_same_spread():
    """KRW/TWD = 1 / 43.12 (to 18 significant digits), spread still 50 bp."""
    inverse = TABLE.lookup("KRW", "TWD")
    assert ("KRW", "TWD", 50) == (inverse.base, inverse.quote, inverse.spread_bp)
    assert Decimal("0.0231910946196660482") == inverse.mid
    assert abs(Fraction(inverse.mid) * Fraction("43.12") - 1) < Fraction(1, 10**17)


def test_pairs_not_in_the_table_are_not_derived_through_a_third_currency():
    """no_rate for THB/JPY although both are priced in KRW."""
    with pytest.raises(FxError, match="no exchange rate between THB and JPY") as caught:
        TABLE.lookup("THB", "JPY")
    assert "no_rate" == caught.value.code


# -- quotes ----------------------------------------------------------------------


def test_quote_marks_the_mid_up_by_the_spread():
    """43.3356 = 43.12 x (1 + 50/10000), valid for 60 s from now."""
    q = twd_krw()
    assert Quote("q_twd", "TWD", "KRW", Decimal("43.3356"), Decimal("43.12"), 50, NOW_MS, NOW_MS + 60_000) == q
    assert "43.3356" == str(q.rate)


def test_inverse_quote_rounds_one_over_mid_up_in_the_networks_favour():
    """1.005 / 43.12 rounded up to 18 significant digits, never below the exact all-in rate."""
    q = krw_twd()
    assert Context(prec=RATE_DIGITS, rounding=ROUND_CEILING).divide(Decimal("1.005"), Decimal("43.12")) == q.rate
    assert Fraction(q.rate) > Fraction("1.005") / Fraction("43.12")
    assert (Decimal("0.0231910946196660482"), 50) == (q.mid, q.spread_bp)


def test_quote_rate_prints_without_exponent_or_trailing_zeros():
    """"1407" for USD at 1400 + 50 bp, not "1407.0000" or "1.407E+3"."""
    assert "1407" == str(quote(TABLE, "USD", "KRW", "q_usd", NOW_MS).rate)


def test_quote_expires_at_created_plus_ttl():
    """Live at expires_ms - 1, expired at expires_ms."""
    q = quote(TABLE, "TWD", "KRW", "q_1", NOW_MS, ttl_ms=30_000)
    assert (NOW_MS, NOW_MS + 30_000) == (q.created_ms, q.expires_ms)
    assert (False, True) == (q.is_expired(NOW_MS + 29_999), q.is_expired(NOW_MS + 30_000))


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("TWD", "TWD", "q_1", NOW_MS), "same_currency"),
        (("XXX", "KRW", "q_1", NOW_MS), "unknown_currency"),
        (("THB", "JPY", "q_1", NOW_MS), "no_rate"),
        (("TWD", "KRW", "", NOW_MS), "bad_quote"),
        (("TWD", "KRW", "q 1", NOW_MS), "bad_quote"),
        (("TWD", "KRW", "q" * 65, NOW_MS), "bad_quote"),
        (("TWD", "KRW", "q_1", -1), "out_of_range"),
        (("TWD", "KRW", "q_1", NOW_MS, 0), "out_of_range"),
        (("TWD", "KRW", "q_1", NOW_MS, QUOTE_TTL_MS_MAX + 1), "out_of_range"),
    ],
)
def test_bad_quote_request_raises_its_code(args, code):
    """FxError with the code naming what is wrong."""
    with pytest.raises(FxError) as caught:
        quote(TABLE, *args)
    assert code == caught.value.code


def test_quote_read_back_with_a_float_rate_is_refused():
    """bad_quote: a stored quote rebuilt with a float rate never reaches a conversion."""
    with pytest.raises(FxError, match="rate must be a positive Decimal") as caught:
        Quote("q_1", "TWD", "KRW", 43.3356, Decimal("43.12"), 50, NOW_MS, NOW_MS + 60_000)  # type: ignore[arg-type]
    assert "bad_quote" == caught.value.code


# -- the spread is in the network's favour, both ways ----------------------------------


def test_member_buying_twd_pays_more_points_than_at_mid():
    """43,336 points for 1,000 TWD, against 43,120 at mid."""
    assert (43_336, Decimal("43120.00")) == (points_for_payment(1_000, "TWD", twd_krw()), 1_000 * Decimal("43.12"))


def test_partner_member_buying_krw_pays_more_twd_than_at_mid():
    """234 TSP for 10,000 KRW, against 231.9 at mid (10,000 / 43.12)."""
    assert 234 == points_for_payment(10_000, "KRW", krw_twd())
    assert 234 > Fraction(10_000) / Fraction("43.12")


def test_points_sent_to_a_partner_are_worth_less_than_at_mid():
    """995 TWD for 43,120 points, which are worth 1,000 TWD at mid."""
    assert 995 == merchant_amount_for_points(43_120, twd_krw(), "TWD")


def test_exchange_in_either_direction_gives_less_than_at_mid():
    """995 TSP for 43,120 HMP, and 42,905 HMP for 1,000 TSP: both below the mid's 1,000 and 43,120."""
    assert 995 == exchange_points(43_120, twd_krw(), paid_unit_exponent=0, received_unit_exponent=0)
    assert 42_905 == exchange_points(1_000, krw_twd(), paid_unit_exponent=0, received_unit_exponent=0)


def test_zero_spread_converts_at_mid_exactly():
    """43,120 points for 1,000 TWD at mid 43.12 and 0 bp."""
    table = RateTable.from_toml({"rate": [{"base": "TWD", "quote": "KRW", "mid": "43.12", "spread_bp": 0}]})
    assert 43_120 == points_for_payment(1_000, "TWD", quote(table, "TWD", "KRW", "q_0", NOW_MS))


# -- golden examples ---------------------------------------------------------------


def test_1000_twd_at_43_12_plus_50bp_is_43_336_points():
    """43,336 points: 1,000 TWD x 43.12 x 1.0050 = 43,335.6, rounded up (ROUND_CEILING)."""
    assert 43_336 == points_for_payment(1_000, "TWD", twd_krw())


def test_a_whole_product_is_not_rounded_up():
    """433,356 points: 10,000 TWD x 43.3356 = 433,356 exactly, so the ceiling adds nothing."""
    assert 433_356 == points_for_payment(10_000, "TWD", twd_krw())


def test_thb_amounts_are_in_satang():
    """4,832 points: 12,345 satang = 123.45 THB x 38.90 x 1.0060 = 4,831.01823, rounded up."""
    assert 4_832 == points_for_payment(12_345, "THB", quote(TABLE, "THB", "KRW", "q_thb", NOW_MS))


def test_5000_jpy_at_9_05_plus_50bp_is_45_477_points():
    """45,477 points: 5,000 JPY x 9.05 x 1.0050 = 45,476.25, rounded up."""
    assert 45_477 == points_for_payment(5_000, "JPY", quote(TABLE, "JPY", "KRW", "q_jpy", NOW_MS))


def test_points_exponent_scales_the_points_unit():
    """4,333,560 points of 0.01 KRW: 1,000 TWD x 43.3356 x 100."""
    assert 4_333_560 == points_for_payment(1_000, "TWD", twd_krw(), points_exponent=2)


def test_10000_points_credit_230_twd():
    """230 TWD: 10,000 points / 43.3356 = 230.757..., rounded down (ROUND_FLOOR)."""
    assert 230 == merchant_amount_for_points(10_000, twd_krw(), "TWD")


def test_10000_points_credit_25553_satang():
    """25,553 satang: 10,000 points / (38.90 x 1.0060) = 255.5362 THB, rounded down to the satang."""
    assert 25_553 == merchant_amount_for_points(10_000, quote(TABLE, "THB", "KRW", "q_thb", NOW_MS), "THB")


def test_exchange_into_a_finer_points_unit():
    """23,075 centi-TSP: 10,000 HMP / 43.3356 x 100 = 23,075.71, rounded down."""
    assert 23_075 == exchange_points(10_000, twd_krw(), paid_unit_exponent=0, received_unit_exponent=2)


def test_three_refunds_return_exactly_the_points_paid():
    """14,430 + 14,431 + 14,475 = 43,336: refunds of 333, 333 and 334 TWD of a 1,000 TWD payment."""
    first = refund_points(43_336, 1_000, 333, refunded_amount_minor=0)  # floor(43,336 x 333/1,000) = 14,430
    second = refund_points(43_336, 1_000, 333, refunded_amount_minor=333)  # floor(43,336 x 666/1,000) - 14,430
    last = refund_points(43_336, 1_000, 334, refunded_amount_minor=666)  # 43,336 - 28,861
    assert (14_430, 14_431, 14_475) == (first, second, last)


def test_a_full_refund_returns_all_points():
    """43,336 points: refunding the whole 1,000 TWD at once."""
    assert 43_336 == refund_points(43_336, 1_000, 1_000, refunded_amount_minor=0)


@pytest.mark.parametrize(
    ("q", "text"),
    [
        (twd_krw(), "1 TWD = 43.34 KRW"),
        (krw_twd(), "1 KRW = 0.02331 TWD"),
        (quote(TABLE, "THB", "KRW", "q_thb", NOW_MS), "1 THB = 39.13 KRW"),
        (quote(TABLE, "USD", "KRW", "q_usd", NOW_MS), "1 USD = 1,407.00 KRW"),
    ],
)
def test_rate_text_shows_four_significant_digits_and_two_places(q, text):
    """The receipt line for each quote."""
    assert text == rate_text(q)


def test_rate_text_rounds_half_up():
    """"43.13" for a rate of exactly 43.125 (half-even would show 43.12)."""
    table = RateTable.from_toml({"rate": [{"base": "TWD", "quote": "KRW", "mid": "43.125", "spread_bp": 0}]})
    assert "1 TWD = 43.13 KRW" == rate_text(quote(table, "TWD", "KRW", "q_1", NOW_MS))


# -- refused inputs ----------------------------------------------------------------


@pytest.mark.parametrize("amount", [1_000.0, True, Decimal("1000"), "1000"])
def test_payment_amount_must_be_an_int(amount):
    """TypeError for a float, bool, Decimal or str amount."""
    with pytest.raises(TypeError, match="amount_minor must be an int"):
        points_for_payment(amount, "TWD", twd_krw())


@pytest.mark.parametrize(
    "call",
    [
        lambda: merchant_amount_for_points(10.0, twd_krw(), "TWD"),
        lambda: exchange_points(10, twd_krw(), paid_unit_exponent=False, received_unit_exponent=0),
        lambda: refund_points(43_336, 1_000, 333.0, refunded_amount_minor=0),
        lambda: points_for_payment(1_000, "TWD", twd_krw(), points_exponent=Decimal(0)),
    ],
)
def test_every_conversion_refuses_non_int_numbers(call):
    """TypeError from each conversion given a float, bool or Decimal."""
    with pytest.raises(TypeError, match="must be an int"):
        call()


@pytest.mark.parametrize("amount", [-1, AMOUNT_MINOR_MAX + 1])
def test_payment_amount_out_of_range_is_refused(amount):
    """out_of_range below 0 and above AMOUNT_MINOR_MAX."""
    with pytest.raises(FxError) as caught:
        points_for_payment(amount, "TWD", twd_krw())
    assert "out_of_range" == caught.value.code


def test_a_result_above_the_limit_is_refused():
    """out_of_range: AMOUNT_MINOR_MAX TWD is more than POINTS_MAX points."""
    with pytest.raises(FxError, match="the converted points would be") as caught:
        points_for_payment(AMOUNT_MINOR_MAX, "TWD", twd_krw())
    assert "out_of_range" == caught.value.code


def test_a_quote_for_another_currency_is_refused():
    """currency_mismatch: a TWD quote cannot price a THB amount."""
    with pytest.raises(FxError, match="prices TWD, not THB") as caught:
        points_for_payment(1_000, "THB", twd_krw())
    assert "currency_mismatch" == caught.value.code


@pytest.mark.parametrize(
    ("refund", "refunded", "code"),
    [(1, 1_000, "refund_exceeds_payment"), (668, 333, "refund_exceeds_payment"), (0, 0, "out_of_range")],
)
def test_refund_beyond_the_payment_or_of_nothing_is_refused(refund, refunded, code):
    """FxError for refunding more than is left of the payment, or nothing."""
    with pytest.raises(FxError) as caught:
        refund_points(43_336, 1_000, refund, refunded_amount_minor=refunded)
    assert code == caught.value.code


# -- properties ------------------------------------------------------------------

CURRENCY_NAMES = sorted(CURRENCIES)


@st.composite
def mids(draw: st.DrawFn) -> Decimal:
    """Any mid fx.toml accepts: up to 12 significant digits, MID_MIN to MID_MAX."""
    places = draw(st.integers(0, 12))
    low = 10 ** max(0, places - 6)
    high = min(10**12 - 1, 10 ** (6 + places))
    mid = Decimal(draw(st.integers(low, high))).scaleb(-places)
    assert MID_MIN <= mid <= MID_MAX  # a bug in this strategy, not in the module
    return mid


@st.composite
def tables(draw: st.DrawFn) -> tuple[RateTable, str, str, Fraction]:
    """A one-entry table (written either way round), a pair it prices, and the pair's exact all-in rate."""
    source, target = draw(st.lists(st.sampled_from(CURRENCY_NAMES), min_size=2, max_size=2, unique=True))
    mid = draw(mids())
    spread_bp = draw(st.integers(0, 1000))
    inverted = draw(st.booleans())
    base, quoted = (target, source) if inverted else (source, target)
    doc = {"rate": [{"base": base, "quote": quoted, "mid": format(mid, "f"), "spread_bp": spread_bp}]}
    exact_mid = 1 / Fraction(mid) if inverted else Fraction(mid)
    return RateTable.from_toml(doc), source, target, exact_mid * (1 + Fraction(spread_bp, 10_000))


@st.composite
def quotes(draw: st.DrawFn) -> tuple[Quote, Fraction]:
    """A quote from a generated table, and its exact all-in rate."""
    table, source, target, exact = draw(tables())
    return quote(table, source, target, "q_prop", NOW_MS), exact


@given(quotes())
def test_quoted_rate_is_never_below_the_exact_all_in_rate(quote_and_exact):
    """rate >= mid x (1 + spread), and above it by less than one unit in the 18th digit."""
    q, exact = quote_and_exact
    assert Fraction(q.rate) >= exact
    assert Fraction(q.rate) - exact < exact / 10 ** (RATE_DIGITS - 1)


@given(quotes(), st.integers(0, 10**9), st.integers(0, 2))
def test_paying_then_valuing_the_points_never_creates_value(quote_and_exact, amount, points_exponent):
    """The points a payment of A costs are worth at least A at the same quote."""
    q, _ = quote_and_exact
    points = points_for_payment(amount, q.source, q, points_exponent)
    assert amount <= merchant_amount_for_points(points, q, q.source, points_exponent)


@given(quotes(), st.integers(0, 10**9), st.integers(0, 2))
def test_points_for_payment_is_the_exact_ceiling(quote_and_exact, amount, points_exponent):
    """ceil(A x rate), computed with Fraction, and never less than A at the exact all-in rate."""
    q, exact = quote_and_exact
    scaled = Fraction(amount) * Fraction(10) ** (points_exponent - CURRENCIES[q.source])
    points = points_for_payment(amount, q.source, q, points_exponent)
    assert math.ceil(scaled * Fraction(q.rate)) == points
    assert points >= scaled * exact


@given(quotes(), st.integers(0, 10**9), st.integers(0, 2), st.integers(0, 2))
def test_exchange_points_is_the_exact_floor(quote_and_exact, points, paid_exponent, received_exponent):
    """floor(P / rate), computed with Fraction: no double-rounding error."""
    q, _ = quote_and_exact
    expected = math.floor(Fraction(points) * Fraction(10) ** (received_exponent - paid_exponent) / Fraction(q.rate))
    assert expected == exchange_points(
        points, q, paid_unit_exponent=paid_exponent, received_unit_exponent=received_exponent
    )


@given(tables(), st.integers(0, 10**9), st.integers(0, 2), st.integers(0, 2))
def test_exchange_and_back_never_yields_more_than_the_start(table_pair, points, start_exponent, other_exponent):
    """Exchanging P points into the other network and back, at the same table, returns at most P."""
    table, other, start, _ = table_pair
    # The member pays `start` points and receives `other`: the quote prices `other` in `start`.
    there = quote(table, other, start, "q_there", NOW_MS)
    back = quote(table, start, other, "q_back", NOW_MS)
    received = exchange_points(points, there, paid_unit_exponent=start_exponent, received_unit_exponent=other_exponent)
    returned = exchange_points(received, back, paid_unit_exponent=other_exponent, received_unit_exponent=start_exponent)
    assert returned <= points


@st.composite
def refund_plans(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    """Original points, original amount, and a split of the amount into partial refunds."""
    points = draw(st.integers(0, 10**9))
    amount = draw(st.integers(1, 10**9))
    cuts = sorted(draw(st.lists(st.integers(1, amount - 1), unique=True, max_size=20))) if amount > 1 else []
    bounds = [0, *cuts, amount]
    return points, amount, [b - a for a, b in zip(bounds, bounds[1:])]


@given(refund_plans())
def test_partial_refunds_never_exceed_and_all_of_them_equal_the_points_paid(plan):
    """Every running total <= the original points, each refund <= its share rounded up, and all of them = the original."""
    points, amount, parts = plan
    refunded_amount = refunded_points = 0
    for part in parts:
        step = refund_points(points, amount, part, refunded_amount_minor=refunded_amount)
        assert 0 <= step <= math.ceil(Fraction(points * part, amount))
        refunded_amount += part
        refunded_points += step
        assert refunded_points <= points
    assert points == refunded_points
