"""Exchange rates, quotes, and conversions between currencies and points.

This module is pure: no I/O and no clock reads. The rate table comes in as
parsed TOML (`RateTable.from_toml`), the time as `now_ms` and quote ids from
the caller, so every function here takes values and returns values.

Quotes
------
A `Quote` from `source` to `target` prices `source` in `target`. The
counterparty (our member, or a partner network) receives value in `source`
and pays `rate` units of `target` for each unit of it::

    rate = mid x (1 + spread_bp / 10000)

where `mid` is the market mid-rate in the same direction. That one rule puts
the spread in the network's favour whichever way a pair is used: whoever
converts always pays more than the mid-rate. Worked example (fx.toml has
TWD/KRW at mid 43.12, spread 50 bp): a member of ours pays 1,000 TWD at a
Taiwanese merchant::

    q = quote(table, "TWD", "KRW", "q_1", now_ms)    # q.rate == Decimal("43.3356")
    points_for_payment(1_000, "TWD", q)              # 1000 x 43.3356 = 43,335.6 -> 43,336
    rate_text(q)                                     # "1 TWD = 43.34 KRW"

The same quote, read the other way, says what a number of points is worth in
TWD (`merchant_amount_for_points`, and `exchange_points` for a points
exchange): points / rate, rounded down.

Amounts and rounding
--------------------
Amounts are `int` in minor units of their ISO 4217 currency (exponents in
`gateway.settings.CURRENCIES`); points are `int` in their network's unit,
where one point is 10**-exponent major units of that network's currency (home
HMP: 1 point = 1 KRW, exponent 0). A float, bool or Decimal amount is refused
with TypeError. Arithmetic is `decimal`, and every conversion rounds once, by
a rule named in its docstring, always in the network's favour:

==========================  ==============  =========================================
operation                   rule            why
==========================  ==============  =========================================
points_for_payment          ROUND_CEILING   the network never pays the merchant more
                                            than it took from the member
merchant_amount_for_points  ROUND_FLOOR     the partner never credits more than the
                                            points taken are worth
exchange_points             ROUND_FLOOR     an exchange never creates points
refund_points               ROUND_FLOOR     partial refunds never exceed their share;
                                            the last refund returns the remainder
quote (inverse pair)        ROUND_CEILING   1/mid is rounded to RATE_DIGITS in the
                                            network's favour
rate_text                   ROUND_HALF_UP   display only; no amount is computed from it
==========================  ==============  =========================================

Exceptions::

    ValueError
     └── FxError     a rate table entry, a pair or a value is not allowed;
                     `.code` is stable, `.message` names the bad entry or value
    TypeError        an amount or exponent is not an int (a bug of the caller)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from typing import Any, Final

from gateway.settings import CURRENCIES

__all__ = [
    "AMOUNT_MINOR_MAX",
    "MID_DIGITS_MAX",
    "MID_MAX",
    "MID_MIN",
    "POINTS_EXPONENT_MAX",
    "POINTS_MAX",
    "QUOTE_ID_CHARS_MAX",
    "QUOTE_TTL_MS_DEFAULT",
    "QUOTE_TTL_MS_MAX",
    "RATES_MAX",
    "RATE_DIGITS",
    "SPREAD_BP_MAX",
    "FxError",
    "Quote",
    "Rate",
    "RateTable",
    "exchange_points",
    "merchant_amount_for_points",
    "points_for_payment",
    "quote",
    "rate_text",
    "refund_points",
]

# Far above any single payment, exchange or refund (10^18 KRW is about 700
# trillion USD), and low enough that every intermediate below stays inside
# the Decimal precision (_PREC). Inputs and results are both held to them.
AMOUNT_MINOR_MAX: Final = 10**18
POINTS_MAX: Final = 10**18
# One point as small as a millionth of a currency unit is beyond any scheme.
POINTS_EXPONENT_MAX: Final = 6

SPREAD_BP_MAX: Final = 1000
"""10 %: far above any network's margin, so a larger value is a typo (a percent written as bp)."""
MID_DIGITS_MAX: Final = 12
"""Significant digits of a mid; market feeds publish 4 to 8."""
MID_MIN: Final = Decimal("0.000001")
MID_MAX: Final = Decimal("1000000")
# Every real pair between the currencies we know sits well inside these
# bounds; a mid outside them is a typo, and the bounds keep every converted
# amount inside the Decimal precision.
RATES_MAX: Final = 100
"""Entries in one table: a few per partner currency, so 100 is generous."""
RATE_DIGITS: Final = 18
"""Significant digits of a quoted rate. A direct pair's rate (12-digit mid x
5-digit spread factor) always fits exactly; an inverse pair's 1/mid is
rounded to this many digits in the network's favour."""

QUOTE_TTL_MS_DEFAULT: Final = 60_000
# A quote is the network's open currency risk until it expires; card schemes
# and partner FX feeds hold a quoted rate for seconds to minutes.
QUOTE_TTL_MS_MAX: Final = 600_000
QUOTE_ID_CHARS_MAX: Final = 64

# Digits of working precision. The largest product is an amount (19 digits)
# times a rate (18 digits), and the largest quotient's integer part has 31
# digits (10^18 points x 10^6 / a rate of 10^-6), so 50 leaves room.
_PREC: Final = 50
# Exact arithmetic: a rounded result would be a bug in the limits above, so
# it raises instead of passing silently.
_EXACT: Final = Context(prec=_PREC, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])
_DISPLAY: Final = Context(prec=_PREC, rounding=ROUND_HALF_UP, traps=[InvalidOperation, DivisionByZero, Overflow])
_BP_PER_UNIT: Final = 10_000
_MID_TEXT: Final = re.compile(r"[0-9]{1,7}(\.[0-9]{1,12})?")
_QUOTE_ID: Final = re.compile(r"[!-~]+")  # printable ASCII, no spaces
_RATE_KEYS: Final = frozenset({"base", "quote", "mid", "spread_bp"})
# rate_text shows at least 4 significant digits and at least 2 decimal places.
_RATE_TEXT_DIGITS: Final = 4
_RATE_TEXT_PLACES_MIN: Final = 2
_RATE_TEXT_PLACES_MAX: Final = 8


class FxError(ValueError):
    """A rate table entry, a currency pair or a value is not allowed.

    `code` is stable and machine-readable; `message` names the bad entry or
    value. Whose fault it is follows from the code:

    - the operator's (fx.toml is wrong; start-up stops): "bad_table",
      "bad_entry", "unknown_currency", "same_currency", "bad_mid",
      "bad_spread", "duplicate_pair";
    - the caller's (asked for what the table does not hold, or for more than
      a payment allows): "no_rate", "unknown_currency" (from `quote`),
      "currency_mismatch", "out_of_range", "refund_exceeds_payment",
      "bad_quote". The HTTP layer maps these to its own problems, e.g.
      "no_rate" to currency_not_supported.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Rate:
    """One table entry: `mid` units of `quote` per 1 unit of `base`, and the network's spread."""

    base: str
    quote: str
    mid: Decimal
    spread_bp: int

    @property
    def pair(self) -> str:
        return f"{self.base}/{self.quote}"


@dataclass(frozen=True, slots=True)
class RateTable:
    """Validated rates; each entry also serves its inverse pair (1 / mid, same spread)."""

    rates: tuple[Rate, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.rates, tuple):
            raise FxError("bad_table", f"fx.toml: rates must be a tuple of Rate, not {type(self.rates).__name__}")
        if len(self.rates) > RATES_MAX:
            raise FxError("bad_table", f"fx.toml: at most {RATES_MAX} rates, got {len(self.rates)}")
        seen: dict[frozenset[str], int] = {}
        for i, rate in enumerate(self.rates):
            if not isinstance(rate, Rate):
                raise FxError("bad_entry", f"fx.toml rate[{i}]: expected a Rate, got {type(rate).__name__}")
            where = f"fx.toml rate[{i}] ({rate.pair})"
            _check_entry(rate, where)
            key = frozenset((rate.base, rate.quote))
            if key in seen:
                first = self.rates[seen[key]]
                raise FxError(
                    "duplicate_pair",
                    f"{where}: duplicate of rate[{seen[key]}] ({first.pair}); one entry serves both directions",
                )
            seen[key] = i

    @classmethod
    def from_toml(cls, doc: Mapping[str, Any]) -> RateTable:
        """Build a table from parsed fx.toml; raise FxError naming the first bad entry."""
        if not isinstance(doc, Mapping):
            raise FxError("bad_table", f"fx.toml: expected a table, got {type(doc).__name__}")
        unknown = sorted(set(doc) - {"rate"})
        if unknown:
            raise FxError("bad_table", f"fx.toml: unknown key {unknown[0]!r}; expected only [[rate]] entries")
        entries = doc.get("rate", [])
        if not isinstance(entries, list):
            raise FxError("bad_table", "fx.toml: rate must be an array of tables, written [[rate]]")
        return cls(tuple(_parse_entry(entry, f"fx.toml rate[{i}]") for i, entry in enumerate(entries)))

    def lookup(self, base: str, quote: str) -> Rate:
        """The rate pricing `base` in `quote`, from its entry or the inverse entry.

        An inverse Rate's mid is 1 / mid rounded half-even to RATE_DIGITS
        significant digits, for display; `quote()` computes the inverse from
        the exact table mid instead.
        """
        rate, inverted = self._find(base, quote)
        if not inverted:
            return rate
        return Rate(base, quote, _inverse(rate.mid, ROUND_HALF_EVEN), rate.spread_bp)

    def _find(self, base: str, quote: str) -> tuple[Rate, bool]:
        for rate in self.rates:
            if (rate.base, rate.quote) == (base, quote):
                return rate, False
            if (rate.base, rate.quote) == (quote, base):
                return rate, True
        raise FxError("no_rate", f"no exchange rate between {base} and {quote} in fx.toml")


@dataclass(frozen=True, slots=True)
class Quote:
    """A rate locked for one payment or exchange: `rate` units of `target` per 1 `source`.

    `rate` is all-in (mid x (1 + spread_bp / 10000)) and is what conversions
    use; `mid` is the mid-rate in the same direction, kept for receipts and
    audit. The quote is valid for created_ms <= now_ms < expires_ms.
    """

    quote_id: str
    source: str
    target: str
    rate: Decimal
    mid: Decimal
    spread_bp: int
    created_ms: int
    expires_ms: int

    def __post_init__(self) -> None:
        # A quote read back from storage is checked like one made by quote().
        for currency in (self.source, self.target):
            _check_currency(currency, f"quote {self.quote_id!r}")
        for name in ("rate", "mid"):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
                raise FxError("bad_quote", f"quote {self.quote_id!r}: {name} must be a positive Decimal, got {value!r}")
            if len(value.as_tuple().digits) > RATE_DIGITS:
                raise FxError("bad_quote", f"quote {self.quote_id!r}: {name} has more than {RATE_DIGITS} digits: {value}")
        if type(self.spread_bp) is not int or not 0 <= self.spread_bp <= SPREAD_BP_MAX:
            raise FxError("bad_quote", f"quote {self.quote_id!r}: spread_bp must be 0 to {SPREAD_BP_MAX}, got {self.spread_bp!r}")

    def is_expired(self, now_ms: int) -> bool:
        """True once `now_ms` reaches `expires_ms`: the rate may no longer be used for a new payment."""
        return _int("now_ms", now_ms, 0, 2**63 - 1) >= self.expires_ms


def quote(
    table: RateTable,
    source: str,
    target: str,
    quote_id: str,
    now_ms: int,
    ttl_ms: int = QUOTE_TTL_MS_DEFAULT,
) -> Quote:
    """Lock the all-in rate pricing `source` in `target` for `ttl_ms`.

    The counterparty receives `source` and pays in `target`, so the rate is
    the mid-rate marked up by the spread: mid x (1 + spread_bp / 10000). For
    an inverse pair the mid is 1 / table mid; that division is rounded
    ROUND_CEILING to RATE_DIGITS significant digits, in the network's favour.
    """
    _check_currency(source, "quote source")
    _check_currency(target, "quote target")
    if source == target:
        raise FxError("same_currency", f"a quote needs two currencies, got {source} twice")
    if not isinstance(quote_id, str) or len(quote_id) > QUOTE_ID_CHARS_MAX or not _QUOTE_ID.fullmatch(quote_id):
        raise FxError("bad_quote", f"quote_id must be 1-{QUOTE_ID_CHARS_MAX} printable ASCII characters, got {quote_id!r}")
    _int("now_ms", now_ms, 0, 2**63 - 1)
    _int("ttl_ms", ttl_ms, 1, QUOTE_TTL_MS_MAX)
    entry, inverted = table._find(source, target)
    factor = _spread_factor(entry.spread_bp)
    if inverted:
        mid = _inverse(entry.mid, ROUND_HALF_EVEN)
        rate = Context(prec=RATE_DIGITS, rounding=ROUND_CEILING).divide(factor, entry.mid)
    else:
        mid = entry.mid
        rate = _EXACT.multiply(entry.mid, factor)
    return Quote(quote_id, source, target, _plain(rate), _plain(mid), entry.spread_bp, now_ms, now_ms + ttl_ms)


def points_for_payment(amount_minor: int, currency: str, quote: Quote, points_exponent: int = 0) -> int:
    """Points to debit from our member for a payment of `amount_minor` in `currency`.

    `currency` is the quote's source (the merchant's currency) and the points
    are in the quote's target currency. points = amount x rate, rounded
    ROUND_CEILING: the network never pays the merchant more than it took
    from the member.
    """
    _int("amount_minor", amount_minor, 0, AMOUNT_MINOR_MAX)
    _int("points_exponent", points_exponent, 0, POINTS_EXPONENT_MAX)
    _check_source(quote, currency)
    value = Decimal(amount_minor).scaleb(points_exponent - CURRENCIES[currency], _EXACT)
    points = int(_EXACT.multiply(value, quote.rate).to_integral_value(rounding=ROUND_CEILING))
    return _result("points", points, POINTS_MAX)


def merchant_amount_for_points(points: int, quote: Quote, currency: str, points_exponent: int = 0) -> int:
    """Minor units of `currency` a partner credits for `points` of ours (a transfer to the partner).

    `currency` is the quote's source and the points are in the quote's
    target currency. amount = points / rate, rounded ROUND_FLOOR: the partner
    never credits more than the points are worth. At the quote a payment
    used, the points it cost are worth at least the amount paid.
    """
    _int("points", points, 0, POINTS_MAX)
    _int("points_exponent", points_exponent, 0, POINTS_EXPONENT_MAX)
    _check_source(quote, currency)
    value = Decimal(points).scaleb(CURRENCIES[currency] - points_exponent, _EXACT)
    return _result("amount_minor", _divide_to_int(value, quote.rate, ROUND_FLOOR), AMOUNT_MINOR_MAX)


def exchange_points(points: int, quote: Quote, *, paid_unit_exponent: int, received_unit_exponent: int) -> int:
    """Points a member receives in the quote's source network for `points` paid in its target network.

    The member pays `points` (one point = 10**-paid_unit_exponent units of
    quote.target) and receives points of 10**-received_unit_exponent units of
    quote.source: points / rate, rounded ROUND_FLOOR, so an exchange never
    creates points. Exchanging HMP (KRW) for TSP (TWD) uses
    quote(table, "TWD", "KRW", ...), the same quote as a payment in TWD.
    """
    _int("points", points, 0, POINTS_MAX)
    _int("paid_unit_exponent", paid_unit_exponent, 0, POINTS_EXPONENT_MAX)
    _int("received_unit_exponent", received_unit_exponent, 0, POINTS_EXPONENT_MAX)
    value = Decimal(points).scaleb(received_unit_exponent - paid_unit_exponent, _EXACT)
    return _result("points", _divide_to_int(value, quote.rate, ROUND_FLOOR), POINTS_MAX)


def refund_points(
    original_points: int,
    original_amount_minor: int,
    refund_amount_minor: int,
    *,
    refunded_amount_minor: int,
) -> int:
    """Points to return for refunding `refund_amount_minor` of a payment, pro rata at its original rate.

    No new quote: the member gets back their share of the points the payment
    cost, whatever the rate is today. `refunded_amount_minor` is what earlier
    refunds of the same payment already returned. The points returned so far
    are always original_points x refunded / original_amount rounded
    ROUND_FLOOR, and this refund returns the step from the old total to the
    new one. So partial refunds never exceed their share, their sum never
    exceeds the original points, and the refund that completes the amount
    returns exactly the remainder.
    """
    _int("original_points", original_points, 0, POINTS_MAX)
    _int("original_amount_minor", original_amount_minor, 1, AMOUNT_MINOR_MAX)
    _int("refund_amount_minor", refund_amount_minor, 1, AMOUNT_MINOR_MAX)
    _int("refunded_amount_minor", refunded_amount_minor, 0, AMOUNT_MINOR_MAX)
    if refunded_amount_minor + refund_amount_minor > original_amount_minor:
        raise FxError(
            "refund_exceeds_payment",
            f"refunding {refund_amount_minor} after {refunded_amount_minor} exceeds the payment of {original_amount_minor}",
        )
    whole = Decimal(original_amount_minor)
    before = _divide_to_int(Decimal(original_points * refunded_amount_minor), whole, ROUND_FLOOR)
    after = _divide_to_int(Decimal(original_points * (refunded_amount_minor + refund_amount_minor)), whole, ROUND_FLOOR)
    # The money invariant, checked in a way python -O cannot strip.
    if not 0 <= before <= after <= original_points:
        raise ArithmeticError(f"refund_points broke its invariant: 0 <= {before} <= {after} <= {original_points}")
    return after - before


def rate_text(quote: Quote) -> str:
    """The quote's rate for a receipt, e.g. "1 TWD = 43.34 KRW".

    Shown with at least 2 decimal places and 4 significant digits, rounded
    ROUND_HALF_UP. Display only: no amount is computed from this text.
    """
    places = -quote.rate.adjusted() + _RATE_TEXT_DIGITS - 1
    places = min(_RATE_TEXT_PLACES_MAX, max(_RATE_TEXT_PLACES_MIN, places))
    shown = quote.rate.quantize(Decimal(1).scaleb(-places), context=_DISPLAY)
    return f"1 {quote.source} = {shown:,f} {quote.target}"


# -- helpers -------------------------------------------------------------------


def _int(name: str, value: object, low: int, high: int) -> int:
    # bool is an int subclass, and a float or Decimal amount means a rounding
    # already happened somewhere it should not have; refuse them all.
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise FxError("out_of_range", f"{name} must be {low} to {high}, got {value}")
    return value


def _result(name: str, value: int, high: int) -> int:
    if value > high:
        raise FxError("out_of_range", f"the converted {name} would be {value}, above the maximum {high}")
    return value


def _check_currency(currency: object, where: str) -> None:
    if not isinstance(currency, str) or currency not in CURRENCIES:
        raise FxError("unknown_currency", f"{where}: expected one of {sorted(CURRENCIES)}, got {currency!r}")


def _check_source(quote: Quote, currency: str) -> None:
    if currency != quote.source:
        raise FxError("currency_mismatch", f"quote {quote.quote_id} prices {quote.source}, not {currency}")


def _check_entry(rate: Rate, where: str) -> None:
    _check_currency(rate.base, f"{where}.base")
    _check_currency(rate.quote, f"{where}.quote")
    if rate.base == rate.quote:
        raise FxError("same_currency", f"{where}: base and quote are both {rate.base}")
    mid = rate.mid
    if not isinstance(mid, Decimal) or not mid.is_finite() or mid <= 0:
        raise FxError("bad_mid", f"{where}.mid: must be positive, got {mid!r}")
    if len(mid.normalize().as_tuple().digits) > MID_DIGITS_MAX:
        raise FxError("bad_mid", f"{where}.mid: at most {MID_DIGITS_MAX} significant digits, got {mid}")
    if not MID_MIN <= mid <= MID_MAX:
        raise FxError("bad_mid", f"{where}.mid: must be {MID_MIN} to {MID_MAX}, got {mid}")
    spread = rate.spread_bp
    if type(spread) is not int or not 0 <= spread <= SPREAD_BP_MAX:
        raise FxError("bad_spread", f"{where}.spread_bp: expected an integer from 0 to {SPREAD_BP_MAX}, got {spread!r}")


def _parse_entry(entry: object, where: str) -> Rate:
    if not isinstance(entry, Mapping):
        raise FxError("bad_entry", f"{where}: expected a table, got {type(entry).__name__}")
    missing = sorted(_RATE_KEYS - set(entry))
    if missing:
        raise FxError("bad_entry", f"{where}: missing key {missing[0]!r}")
    unknown = sorted(set(entry) - _RATE_KEYS)
    if unknown:
        raise FxError("bad_entry", f"{where}: unknown key {unknown[0]!r}")
    where = f"{where} ({entry['base']}/{entry['quote']})"
    mid_text = entry["mid"]
    if not isinstance(mid_text, str) or not _MID_TEXT.fullmatch(mid_text):
        hint = " (write it as a string, mid = \"43.12\": a TOML float is not exact)" if isinstance(mid_text, float) else ""
        raise FxError("bad_mid", f"{where}.mid: expected a positive decimal string like \"43.12\", got {mid_text!r}{hint}")
    return Rate(entry["base"], entry["quote"], Decimal(mid_text), entry["spread_bp"])


def _spread_factor(spread_bp: int) -> Decimal:
    """1 + spread_bp / 10000, exactly."""
    return Decimal(_BP_PER_UNIT + spread_bp).scaleb(-4, _EXACT)


def _inverse(mid: Decimal, rounding: str) -> Decimal:
    return Context(prec=RATE_DIGITS, rounding=rounding).divide(Decimal(1), mid)


def _divide_to_int(numerator: Decimal, denominator: Decimal, rounding: str) -> int:
    # The division rounds to _PREC digits in the same direction as the final
    # rounding to an integer. Two roundings in one direction give the same
    # result as one, as long as the integer part fits in _PREC digits (the
    # limits above make sure it does), so the result is exactly
    # floor (or ceiling) of numerator / denominator: no double-rounding error.
    exact = Context(prec=_PREC, rounding=rounding, traps=[InvalidOperation, DivisionByZero, Overflow])
    return int(exact.divide(numerator, denominator).to_integral_value(rounding=rounding))


def _plain(value: Decimal) -> Decimal:
    """`value` without trailing zeros, never in exponent form (43.335600 -> 43.3356, 1.4E+3 -> 1400)."""
    value = value.normalize(_EXACT)
    if value.as_tuple().exponent > 0:  # type: ignore[operator]
        value = value.quantize(Decimal(1), context=_EXACT)
    return value
