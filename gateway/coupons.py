"""Coupon campaigns and the coupons issued under them (redemption is the payment's business).

A *campaign* is a set of discount terms (who funds them, at which merchants,
in which currency, from what spend, how much off, from when until when) and
the limits on handing them out. Campaigns come from `config/campaigns.toml`
(loaded at every start; the file wins for the ids it defines) and from
operators (`POST /v1/campaigns`). They are stored as JSON in one global hash
(`keyspace.CAMPAIGNS_KEY`): they are read when issuing, never when paying.

A *coupon* is one campaign's terms issued to one member: a hash in the
member's partition (`keyspace.coupon_key`) holding a snapshot of the terms
(`COUPON_FIELDS`), so the payment script that redeems it reads only the
member's partition, and a campaign changed later never changes a coupon
already issued. Codes are "CP" + 12 characters of `CODE_ALPHABET` (no 0/O,
1/I: a cashier may key one in), inside the POS scanner's coupon pattern.

Issuing is one Lua script in the member's partition (`coupon_issue.lua`):
the member exists, the member's count of the campaign is below its
per-member limit, then the coupon, the member's coupon set and the count
are written together; a request reference in the same partition makes an
issue request idempotent. The campaign's `total_limit` counter is global, so
it cannot join that script: it is a separate step before it
(`campaign_reserve.lua`, never past the limit), given back when the issue is
refused. A process that dies between the two steps leaves the counter one
too high, so a campaign may under-issue by the issues that died; it never
over-issues.

An operator's or partner's issue and an operator's campaign creation run as
claim (the caller's scope: key, nonce, idempotency key), work, finish (the
stored response), as DESIGN.md 6a describes; a refused request lets its
claim go so that it can be sent again.

Exceptions::

    Exception
     ├── CampaignError   campaign terms are not valid; the message names the field.
     │                   The API answers 422 invalid_request; at start-up it stops the
     │                   gateway as a SettingsError naming the campaign.
     └── Problem         (gateway.problems) an API request was refused, nothing written
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import secrets
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Callable, Final, Literal, Mapping

import msgspec

from gateway import keyspace, payments
from gateway.clock import iso_ms, wall_ms
from gateway.members import Bearer, MemberService
from gateway.merchants import MerchantRegistry
from gateway.payment_service import IDEMPOTENCY_TTL_S, Caller
from gateway.problems import Problem
from gateway.settings import CURRENCIES, Settings, SettingsError
from gateway.signing import NONCE_TTL_S
from gateway.store import Store

log = logging.getLogger("pointgate")

CODE_PREFIX: Final = "CP"
CODE_ALPHABET: Final = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_CHARS: Final = 12
"""32^12 = 2^60 codes: a guessed code names a coupon with odds below 1e-12 even at a billion coupons,
and a code is only good for the member it was issued to."""
CODE_RE: Final = re.compile(rf"{CODE_PREFIX}[{CODE_ALPHABET}]{{{CODE_CHARS}}}")
CODE_ATTEMPTS_MAX: Final = 3  # a fresh random code collides with an existing one with odds below 1e-9

COUPON_FIELDS: Final = (
    "code", "campaign_id", "member_id", "state", "title", "issuer", "funding",
    "merchants", "currency", "min_spend", "kind", "value", "cap",
    "valid_from_ms", "valid_until_ms", "stackable", "issued_ms", "payment_id", "discount", "redeemed_ms",
)
"""Every field of a stored coupon, all strings: the contract with the payment script that redeems it."""
ALL_MERCHANTS: Final = "*"

CAMPAIGN_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,39}$"
CAMPAIGN_ID_RE: Final = re.compile(CAMPAIGN_ID_PATTERN)
MEMBER_ID_PATTERN: Final = r"^m[0-9]{3}[0-9a-f]{12}$"
TITLE_CHARS_MAX: Final = 40  # the receipt label: a 42-column line less the amount
MERCHANTS_PER_CAMPAIGN_MAX: Final = 100  # beyond that a campaign is for every merchant ("*")
PER_MEMBER_LIMIT_MAX: Final = 100
TOTAL_LIMIT_MAX: Final = 10**9
AMOUNT_MAX: Final = 10**15  # as the Lua library's AMOUNT_MAX
BASIS_POINTS_MAX: Final = 10_000  # 100 % off
CAMPAIGN_DAYS_MAX: Final = 3 * 366  # longer than any real promotion; catches a typo in the year
CAMPAIGNS_MAX: Final = 1000
"""Every campaign is listed and kept in one hash; a thousand is years of weekly promotions."""
COUPONS_LISTED_MAX: Final = 100  # a member's newest coupons; more is a screen no one scrolls
REQUEST_LEASE_MS: Final = 10_000  # an issue takes milliseconds; a claim older than this is presumed dead
COUPON_STATES: Final = ("issued", "redeemed", "expired")
"""As a member sees them: stored `issued` coupons past their validity are shown `expired`."""

RFC3339_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})")
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_CAMPAIGN_FIELDS: Final = frozenset({
    "campaign_id", "title", "issuer", "merchants", "currency", "min_spend", "discount", "valid_from",
    "valid_until", "per_member_limit", "total_limit", "stackable", "claimable"})
_DISCOUNT_FIELDS: Final = frozenset({"kind", "percent", "amount", "cap"})


class CampaignError(ValueError):
    """Campaign terms are not valid; the message names the field and what is allowed."""

    fault: Final = "caller"


# -- requests -------------------------------------------------------------------


# Decoded from the JSON text exactly (msgspec reads a number or a string into a Decimal), so 12.5
# never passes through a binary float.
Percent = Annotated[Decimal, msgspec.Meta(
    description='percent off as a decimal string, e.g. "10" or "12.5" (at most two decimals); a JSON number is read exactly too',
    # The string form the document promises msgspec reads (its own schema says only "a string of
    # format decimal", which any string fits); the range and decimals are checked on decoding.
    extra_json_schema={"pattern": r"^[0-9]{1,3}(\.[0-9]{1,2})?$"})]
Minor = Annotated[int, msgspec.Meta(ge=0, le=AMOUNT_MAX, description="minor units of the campaign's currency")]
PositiveMinor = Annotated[int, msgspec.Meta(ge=1, le=AMOUNT_MAX, description="minor units of the campaign's currency")]


class DiscountTerms(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    kind: Literal["percent", "fixed"]
    percent: Percent | None = None
    """For kind percent."""
    amount: PositiveMinor | None = None
    """For kind fixed: minor units off."""
    cap: PositiveMinor | None = None
    """For kind percent: the most it takes off, in minor units; absent: no cap."""


class CampaignRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """An operator's new campaign; every coupon issued under it is a snapshot of these terms."""

    campaign_id: Annotated[str, msgspec.Meta(pattern=CAMPAIGN_ID_PATTERN)]
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=TITLE_CHARS_MAX, description="the receipt label")]
    issuer: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$",
                                        description="the home network's id, or a partner network's that funds it")]
    merchants: Annotated[list[str], msgspec.Meta(min_length=1, max_length=MERCHANTS_PER_CAMPAIGN_MAX,
                                                 description='merchant ids, or ["*"] for every merchant')]
    currency: payments.Currency
    discount: DiscountTerms
    valid_from: Annotated[str, msgspec.Meta(description="RFC 3339, e.g. 2026-12-01T00:00:00+09:00",
                                            extra_json_schema={"format": "date-time"})]
    valid_until: Annotated[str, msgspec.Meta(description="RFC 3339; the campaign ends at this instant",
                                             extra_json_schema={"format": "date-time"})]
    min_spend: Minor = 0
    per_member_limit: Annotated[int, msgspec.Meta(ge=1, le=PER_MEMBER_LIMIT_MAX)] = 1
    total_limit: Annotated[int, msgspec.Meta(ge=1, le=TOTAL_LIMIT_MAX)] | None = None
    stackable: bool = False
    """True: may be combined with other stackable coupons in one sale."""
    claimable: bool = False
    """True: members may claim it themselves in the app."""


class CouponIssueRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    member_id: Annotated[str, msgspec.Meta(pattern=MEMBER_ID_PATTERN)]


class CouponClaimRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    campaign_id: Annotated[str, msgspec.Meta(pattern=CAMPAIGN_ID_PATTERN)]


# -- the pure core ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Campaign:
    campaign_id: str
    title: str
    issuer: str
    merchants: tuple[str, ...]
    currency: str
    min_spend: int
    kind: str
    """percent or fixed"""
    value: int
    """percent: basis points (1000 = 10 %); fixed: minor units off."""
    cap: int
    """The most a percent coupon takes off, minor units; 0: no cap."""
    valid_from_ms: int
    valid_until_ms: int
    per_member_limit: int
    total_limit: int
    """0: no total limit."""
    stackable: bool
    claimable: bool
    source: str = "operator"
    """config or operator"""
    created_by: str = ""
    created_ms: int = 0
    request_hash: str = ""
    """Of the operator's request that created it, so a resumed retry knows it as its own."""

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "merchants": list(self.merchants)}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Campaign:
        doc = json.loads(text)
        return cls(**{**doc, "merchants": tuple(doc["merchants"])})

    def funding(self, home_network_id: str) -> str:
        """The ledger account that pays the discount: the campaign's own budget at home, else the partner's clearing."""
        return f"campaign:{self.campaign_id}" if self.issuer == home_network_id else f"partner:{self.issuer}"

    def status(self, now_ms: int) -> str:
        if now_ms > self.valid_until_ms:  # valid through valid_until, as the payment script reads it
            return "ended"
        return "active" if now_ms >= self.valid_from_ms else "scheduled"


def parse_campaign(doc: Mapping[str, Any], *, home_network_id: str, partner_ids: frozenset[str],
                   merchant_currencies: Mapping[str, str], source: str = "operator") -> Campaign:
    """Campaign terms from a request or a campaigns.toml table; raise CampaignError naming the field.

    `merchant_currencies` maps every known merchant id to its currency: a
    campaign names only known merchants, and only merchants that sell in the
    campaign's currency (a KRW coupon could never apply at a TWD store).
    """
    unknown = sorted(set(doc) - _CAMPAIGN_FIELDS)
    if unknown:
        raise CampaignError(f"unknown field {unknown[0]!r}; a campaign has {', '.join(sorted(_CAMPAIGN_FIELDS))}")
    campaign_id = _text(doc, "campaign_id")
    if not CAMPAIGN_ID_RE.match(campaign_id):
        raise CampaignError(f"campaign_id must be 1-40 of a-z 0-9 - (starting with a letter or digit), got {campaign_id!r}")
    title = _text(doc, "title")
    if not 1 <= len(title) <= TITLE_CHARS_MAX or title != title.strip() or not title.isprintable():
        raise CampaignError(f"title must be 1-{TITLE_CHARS_MAX} printable characters without leading or "
                            f"trailing spaces (it is printed on the receipt), got {title!r}")
    issuer = _text(doc, "issuer")
    if issuer != home_network_id and issuer not in partner_ids:
        allowed = ", ".join([home_network_id, *sorted(partner_ids)])
        raise CampaignError(f"issuer must be the home network or a configured partner network ({allowed}), got {issuer!r}")
    currency = _text(doc, "currency")
    if currency not in CURRENCIES:
        raise CampaignError(f"currency must be one of {', '.join(sorted(CURRENCIES))}, got {currency!r}")
    merchants = _merchants(doc.get("merchants"), currency, merchant_currencies)
    min_spend = _integer(doc, "min_spend", 0, AMOUNT_MAX, default=0)
    kind, value, cap = _discount(doc.get("discount"), currency)
    valid_from_ms, valid_until_ms = _instant(doc, "valid_from"), _instant(doc, "valid_until")
    if valid_until_ms <= valid_from_ms:
        raise CampaignError(f"valid_until ({doc['valid_until']}) must be after valid_from ({doc['valid_from']})")
    if valid_until_ms - valid_from_ms > CAMPAIGN_DAYS_MAX * 86_400_000:
        raise CampaignError(f"a campaign runs at most {CAMPAIGN_DAYS_MAX} days; check the years of valid_from and valid_until")
    per_member_limit = _integer(doc, "per_member_limit", 1, PER_MEMBER_LIMIT_MAX, default=1)
    total_limit = _integer(doc, "total_limit", 1, TOTAL_LIMIT_MAX, default=None)
    return Campaign(
        campaign_id=campaign_id, title=title, issuer=issuer, merchants=merchants, currency=currency,
        min_spend=min_spend, kind=kind, value=value, cap=cap, valid_from_ms=valid_from_ms,
        valid_until_ms=valid_until_ms, per_member_limit=per_member_limit, total_limit=total_limit or 0,
        stackable=_flag(doc, "stackable"), claimable=_flag(doc, "claimable"), source=source,
    )


def _text(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise CampaignError(f"{key} is required and must be a string, got {value!r}")
    return value


def _flag(doc: Mapping[str, Any], key: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise CampaignError(f"{key} must be true or false, got {value!r}")
    return value


def _integer(doc: Mapping[str, Any], key: str, low: int, high: int, default: int | None) -> int | None:
    value = doc.get(key)
    if value is None:
        return default
    if type(value) is not int or not low <= value <= high:
        raise CampaignError(f"{key} must be a whole number from {low:,} to {high:,}, got {value!r}")
    return value


def _merchants(value: Any, currency: str, merchant_currencies: Mapping[str, str]) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(m, str) for m in value):
        raise CampaignError(f'merchants must be a list of merchant ids, or ["*"] for every merchant, got {value!r}')
    if ALL_MERCHANTS in value:
        if len(value) != 1:
            raise CampaignError('merchants is either ["*"] (every merchant) or a list of merchant ids, not both')
        return (ALL_MERCHANTS,)
    if len(value) > MERCHANTS_PER_CAMPAIGN_MAX:
        raise CampaignError(f'merchants lists at most {MERCHANTS_PER_CAMPAIGN_MAX} ids; use ["*"] for every merchant')
    if len(set(value)) != len(value):
        raise CampaignError(f"merchants lists a merchant twice: {sorted(m for m in value if value.count(m) > 1)[0]!r}")
    for merchant_id in value:
        known = merchant_currencies.get(merchant_id)
        if known is None:
            raise CampaignError(f"merchants: {merchant_id!r} is not a registered merchant")
        if known != currency:
            raise CampaignError(f"merchants: {merchant_id} sells in {known}, not in the campaign's currency {currency}")
    return tuple(value)


def _discount(value: Any, currency: str) -> tuple[str, int, int]:
    if not isinstance(value, Mapping):
        raise CampaignError(f'discount must be {{"kind": "percent", "percent": 10, "cap": ...}} or '
                            f'{{"kind": "fixed", "amount": ...}}, got {value!r}')
    unknown = sorted(set(value) - _DISCOUNT_FIELDS)
    if unknown:
        raise CampaignError(f"discount: unknown field {unknown[0]!r}; it has kind, percent, amount, cap")
    kind = value.get("kind")
    cap = value.get("cap")
    if cap is not None and (type(cap) is not int or not 1 <= cap <= AMOUNT_MAX):
        raise CampaignError(f"discount.cap must be a whole number of minor units of {currency} from 1, or absent "
                            f"for no cap, got {cap!r}")
    if kind == "percent":
        if value.get("amount") is not None:
            raise CampaignError("discount.amount is for kind fixed; a percent discount gives percent (and cap)")
        return "percent", _basis_points(value.get("percent")), cap or 0
    if kind == "fixed":
        if value.get("percent") is not None or cap is not None:
            raise CampaignError("discount.percent and discount.cap are for kind percent; a fixed discount gives amount")
        amount = value.get("amount")
        if type(amount) is not int or not 1 <= amount <= AMOUNT_MAX:
            raise CampaignError(f"discount.amount must be a whole number of minor units of {currency} from 1, got {amount!r}")
        return "fixed", amount, 0
    raise CampaignError(f"discount.kind must be percent or fixed, got {kind!r}")


def _basis_points(percent: Any) -> int:
    """10 -> 1000, "12.5" -> 1250. Never through a float: a TOML or JSON float is refused or read as text."""
    problem = f"discount.percent must be more than 0 and at most 100, with at most two decimals, got {percent!r}"
    if isinstance(percent, bool) or not isinstance(percent, (int, str, Decimal)):
        if isinstance(percent, float):
            problem += ' (write a fraction as a string, e.g. "12.5")'
        raise CampaignError(problem)
    try:
        exact = Decimal(percent) if not isinstance(percent, str) else Decimal(percent.strip())
    except InvalidOperation:
        raise CampaignError(problem) from None
    if not exact.is_finite():
        raise CampaignError(problem)
    basis_points = exact * 100
    if basis_points != basis_points.to_integral_value() or not 1 <= basis_points <= BASIS_POINTS_MAX:
        raise CampaignError(problem)
    return int(basis_points)


def _instant(doc: Mapping[str, Any], key: str) -> int:
    """RFC 3339 text (or a TOML offset date-time) as Unix milliseconds."""
    value = doc.get(key)
    if isinstance(value, str):
        if not RFC3339_RE.fullmatch(value):
            raise CampaignError(f"{key} must be an RFC 3339 time with its offset, e.g. 2026-12-01T00:00:00+09:00, got {value!r}")
        try:
            value = dt.datetime.fromisoformat(value.upper())
        except ValueError:
            raise CampaignError(f"{key} is not a real time: {doc[key]!r}") from None
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise CampaignError(f"{key} must be an RFC 3339 time with its offset, e.g. 2026-12-01T00:00:00+09:00, got {value!r}")
    return (value - _EPOCH) // dt.timedelta(milliseconds=1)


def new_code(randbelow: Callable[[int], int]) -> str:
    return CODE_PREFIX + "".join(CODE_ALPHABET[randbelow(len(CODE_ALPHABET))] for _ in range(CODE_CHARS))




def format_amount(minor: int, currency: str) -> str:
    """2000 KRW -> "2,000 KRW"; 1050 USD -> "10.50 USD"."""
    exponent = CURRENCIES.get(currency, 0)
    if exponent == 0:
        return f"{minor:,} {currency}"
    whole, fraction = divmod(minor, 10**exponent)
    return f"{whole:,}.{fraction:0{exponent}d} {currency}"


def percent_text(basis_points: int) -> str:
    """1000 -> "10", 1250 -> "12.5" (exact: basis points are whole)."""
    return format(Decimal(basis_points) / 100, "f")


def discount_view(kind: str, value: int, cap: int) -> dict[str, Any]:
    return {"kind": kind, "percent": percent_text(value) if kind == "percent" else None,
            "amount": value if kind == "fixed" else None, "cap": cap or None}


def describe(kind: str, value: int, cap: int, min_spend: int, currency: str, where: str) -> str:
    """The terms in words, as the member's app shows them."""
    if kind == "percent":
        words = f"{percent_text(value)}% off" + (f" (up to {format_amount(cap, currency)})" if cap else "")
    else:
        words = f"{format_amount(value, currency)} off"
    if min_spend:
        words += f" when you spend {format_amount(min_spend, currency)} or more"
    return f"{words} at {where}"


def where_text(merchants: tuple[str, ...], names: Mapping[str, str]) -> str:
    if merchants == (ALL_MERCHANTS,):
        return "every partner store"
    listed = [names.get(m, m) for m in merchants]
    return listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]


def campaign_view(campaign: Campaign, home_network_id: str, names: Mapping[str, str], issued: int, now_ms: int) -> dict[str, Any]:
    return {
        "campaign_id": campaign.campaign_id, "title": campaign.title, "issuer": campaign.issuer,
        "funding": campaign.funding(home_network_id), "merchants": list(campaign.merchants),
        "currency": campaign.currency, "min_spend": campaign.min_spend,
        "discount": discount_view(campaign.kind, campaign.value, campaign.cap),
        "description": describe(campaign.kind, campaign.value, campaign.cap, campaign.min_spend, campaign.currency,
                                where_text(campaign.merchants, names)),
        "valid_from": iso_ms(campaign.valid_from_ms), "valid_until": iso_ms(campaign.valid_until_ms),
        "per_member_limit": campaign.per_member_limit, "total_limit": campaign.total_limit or None,
        "stackable": campaign.stackable, "claimable": campaign.claimable, "status": campaign.status(now_ms),
        "issued": issued, "source": campaign.source,
        "created_at": iso_ms(campaign.created_ms) if campaign.created_ms else None,
    }


def coupon_state(fields: Mapping[str, str], now_ms: int) -> str:
    if fields["state"] == "issued" and now_ms > int(fields["valid_until_ms"]):
        return "expired"
    return fields["state"]


def coupon_view(fields: Mapping[str, str], names: Mapping[str, str], now_ms: int) -> dict[str, Any]:
    """A stored coupon as its member sees it: the terms in numbers and in words."""
    merchants = tuple(fields["merchants"].split())
    kind, value, cap, min_spend = fields["kind"], int(fields["value"]), int(fields["cap"]), int(fields["min_spend"])
    return {
        "code": fields["code"], "campaign_id": fields["campaign_id"], "title": fields["title"],
        "issuer": fields["issuer"], "state": coupon_state(fields, now_ms),
        "discount": discount_view(kind, value, cap),
        "description": describe(kind, value, cap, min_spend, fields["currency"], where_text(merchants, names)),
        "currency": fields["currency"], "min_spend": min_spend, "merchants": list(merchants),
        "stackable": fields["stackable"] == "1",
        "valid_from": iso_ms(int(fields["valid_from_ms"])), "valid_until": iso_ms(int(fields["valid_until_ms"])),
        "issued_at": iso_ms(int(fields["issued_ms"])),
        "redeemed_at": iso_ms(int(fields["redeemed_ms"])) if fields["redeemed_ms"] else None,
        "payment_id": fields["payment_id"] or None, "discount_applied": int(fields["discount"] or 0),
    }


# -- the service ----------------------------------------------------------------------


_ISSUE_PROBLEMS: Final = {
    "member_not_found": None,
    "campaign_ended": "the campaign has ended; no more coupons are issued under it",
    "idempotency_mismatch": None,
}


class CouponService:
    def __init__(self, store: Store, registry: MerchantRegistry, settings: Settings,
                 now_ms: Callable[[], int] = wall_ms, randbelow: Callable[[int], int] = secrets.randbelow) -> None:
        self.store, self.registry, self.settings = store, registry, settings
        self.home_id = settings.home_network.id
        self.partner_ids = frozenset(p.id for p in settings.partners)
        self.now_ms = now_ms
        self._randbelow = randbelow

    # -- campaigns ---------------------------------------------------------------

    def config_campaigns(self) -> tuple[Campaign, ...]:
        """campaigns.toml's campaigns, validated against merchants.toml; SettingsError names a bad one."""
        currencies = {m.id: m.currency for m in self.settings.merchants} | self._partner_currencies()
        found: list[Campaign] = []
        tables = (self.settings.campaigns or {}).get("campaign", [])
        if not isinstance(tables, list):
            raise SettingsError("campaigns.toml: campaigns are [[campaign]] tables")
        for i, table in enumerate(tables):
            where = f"campaigns.toml campaign[{i}]" + (f" ({table['campaign_id']})" if isinstance(table, dict) and
                                                       isinstance(table.get("campaign_id"), str) else "")
            if not isinstance(table, dict):
                raise SettingsError(f"{where}: must be a table")
            issuer = table.get("issuer")
            if isinstance(issuer, str) and CAMPAIGN_ID_RE.match(issuer) and issuer != self.home_id \
                    and issuer not in self.partner_ids:
                # A partner's campaign applies only where that partner is configured: the same
                # campaigns.toml serves gateways with other partner lists (and the partner's own view).
                log.warning("%s: not loaded; its issuer %s is not the home network or a partner in partners.toml",
                            where, issuer)
                continue
            try:
                campaign = parse_campaign(table, home_network_id=self.home_id, partner_ids=self.partner_ids,
                                          merchant_currencies=currencies, source="config")
            except CampaignError as e:
                raise SettingsError(f"{where}: {e}") from None
            if any(c.campaign_id == campaign.campaign_id for c in found):
                raise SettingsError(f"{where}: campaign_id {campaign.campaign_id} is defined twice")
            found.append(campaign)
        if len(found) > CAMPAIGNS_MAX:
            raise SettingsError(f"campaigns.toml: at most {CAMPAIGNS_MAX} campaigns")
        return tuple(found)

    async def load_config(self) -> int:
        """Write campaigns.toml's campaigns (the file wins for its ids); safe to run on every start."""
        campaigns = self.config_campaigns()
        if campaigns:
            await self.store.redis.hset(keyspace.CAMPAIGNS_KEY, mapping={c.campaign_id: c.to_json() for c in campaigns})
        return len(campaigns)

    async def create(self, caller: Caller, request: CampaignRequest, idempotency_key: str,
                     request_hash: str) -> tuple[bytes, bool]:
        """An operator's new campaign, once per idempotency key; its id must be new."""
        try:
            campaign = parse_campaign(msgspec.to_builtins(request), home_network_id=self.home_id,
                                      partner_ids=self.partner_ids, merchant_currencies=await self._merchant_currencies())
        except CampaignError as e:
            raise Problem("invalid_request", str(e)) from None
        now_ms = self.now_ms()
        if campaign.valid_until_ms <= now_ms:
            raise Problem("invalid_request", f"valid_until ({request.valid_until}) has passed; a new campaign must end in the future")
        campaign = Campaign(**{**asdict(campaign), "created_by": caller.merchant_id, "created_ms": now_ms,
                               "request_hash": request_hash})
        claim = await self._claim(caller, idempotency_key, request_hash)
        if claim[0] == "replay":
            return claim[1].encode(), True
        try:
            stored = await self._store_campaign(campaign)
        except Problem:
            await self._release(caller, idempotency_key, request_hash)
            raise
        body = payments.dumps(campaign_view(stored, self.home_id, await self._names(stored.merchants), 0, now_ms))
        return await self._finish(caller, idempotency_key, request_hash, body)

    async def _store_campaign(self, campaign: Campaign) -> Campaign:
        if await self.store.redis.hlen(keyspace.CAMPAIGNS_KEY) >= CAMPAIGNS_MAX:
            raise Problem("too_many_campaigns", f"the gateway keeps at most {CAMPAIGNS_MAX} campaigns")
        if await self.store.redis.hsetnx(keyspace.CAMPAIGNS_KEY, campaign.campaign_id, campaign.to_json()):
            return campaign
        existing = await self.campaign(campaign.campaign_id)
        # A retry that resumes a request which stored its campaign and died before finishing.
        if existing is not None and (existing.created_by, existing.request_hash) == (campaign.created_by, campaign.request_hash):
            return existing
        raise Problem("campaign_exists", f"a campaign {campaign.campaign_id} exists already; choose another id")

    async def campaign(self, campaign_id: str) -> Campaign | None:
        if not CAMPAIGN_ID_RE.match(campaign_id):
            return None
        text = await self.store.redis.hget(keyspace.CAMPAIGNS_KEY, campaign_id)
        return Campaign.from_json(text) if text else None

    async def _visible_campaign(self, caller: Caller, role: str, campaign_id: str) -> Campaign:
        """The campaign if the caller may see it: an operator sees all, a partner network only its own."""
        campaign = await self.campaign(campaign_id)
        if campaign is None or (role != "operator" and campaign.issuer != caller.merchant_id):
            raise Problem("campaign_not_found", f"no campaign {campaign_id}")
        return campaign

    async def get(self, caller: Caller, role: str, campaign_id: str) -> dict[str, Any]:
        campaign = await self._visible_campaign(caller, role, campaign_id)
        issued = await self.store.redis.hget(keyspace.CAMPAIGN_ISSUED_KEY, campaign_id)
        return campaign_view(campaign, self.home_id, await self._names(campaign.merchants), int(issued or 0), self.now_ms())

    async def list(self, caller: Caller, role: str) -> dict[str, Any]:
        stored = await self.store.redis.hgetall(keyspace.CAMPAIGNS_KEY)
        issued = await self.store.redis.hgetall(keyspace.CAMPAIGN_ISSUED_KEY)
        now_ms = self.now_ms()
        views = []
        for campaign_id in sorted(stored):
            campaign = Campaign.from_json(stored[campaign_id])
            if role == "operator" or campaign.issuer == caller.merchant_id:
                views.append(campaign_view(campaign, self.home_id, await self._names(campaign.merchants),
                                           int(issued.get(campaign_id, 0)), now_ms))
        return {"campaigns": views}

    # -- issuing -------------------------------------------------------------------

    async def issue(self, caller: Caller, role: str, campaign_id: str, request: CouponIssueRequest,
                    idempotency_key: str, request_hash: str) -> tuple[bytes, bool]:
        """An operator (any campaign) or a partner network (its own) gives a member one coupon."""
        claim = await self._claim(caller, idempotency_key, request_hash)
        if claim[0] == "replay":
            return claim[1].encode(), True
        try:
            campaign = await self._visible_campaign(caller, role, campaign_id)
            code, _ = await self._issue(campaign, request.member_id, f"signed:{caller.merchant_id}",
                                        idempotency_key, request_hash)
        except Problem:
            await self._release(caller, idempotency_key, request_hash)
            raise
        body = payments.dumps(await self._coupon(request.member_id, code))
        return await self._finish(caller, idempotency_key, request_hash, body)

    async def claim(self, bearer: Bearer, member_id: str, request: CouponClaimRequest, idempotency_key: str,
                    request_hash: str) -> tuple[bytes, bool]:
        """A member claims a claimable campaign's coupon in the app, once per idempotency key."""
        MemberService._own(bearer, member_id)
        campaign = await self.campaign(request.campaign_id)
        if campaign is None:
            raise Problem("campaign_not_found", f"no campaign {request.campaign_id}")
        if not campaign.claimable:
            raise Problem("campaign_not_claimable")
        code, replayed = await self._issue(campaign, member_id, "member", idempotency_key, request_hash)
        return payments.dumps(await self._coupon(member_id, code)), replayed

    async def _issue(self, campaign: Campaign, member_id: str, requester: str, idempotency_key: str,
                     request_hash: str) -> tuple[str, bool]:
        """Reserve against the total, then issue in the member's partition.

        Returns the coupon's code and whether the request was a retry (then the code is the first try's).
        """
        now_ms = self.now_ms()
        request_key = keyspace.coupon_request_key(member_id, requester, idempotency_key)
        # A retry of a request that issued its coupon gets it back even after the campaign
        # ended or ran out, so only a first try is checked and reserves one of the total.
        reserved = not await self.store.redis.exists(request_key)
        if reserved:
            if campaign.status(now_ms) == "ended":
                raise Problem("campaign_ended", f"{campaign.campaign_id} ended at {iso_ms(campaign.valid_until_ms)}")
            reply = await self.store.run("campaign_reserve", [keyspace.CAMPAIGN_ISSUED_KEY],
                                         [campaign.campaign_id, campaign.total_limit])
            if reply[0] == "campaign_exhausted":
                raise Problem("campaign_exhausted",
                              f"all {campaign.total_limit:,} coupons of {campaign.campaign_id} have been given out")
        partition = keyspace.partition_of_member(member_id)
        keys = [keyspace.member_key(member_id), "", keyspace.member_coupons_key(member_id),
                keyspace.coupon_counts_key(member_id), request_key]
        terms = [campaign.campaign_id, member_id, campaign.title, campaign.issuer, campaign.funding(self.home_id),
                 " ".join(campaign.merchants), campaign.currency, campaign.min_spend, campaign.kind, campaign.value,
                 campaign.cap, campaign.valid_from_ms, campaign.valid_until_ms, "1" if campaign.stackable else "0"]
        # An error here leaves the reservation taken: the coupon may have been issued, and a
        # counter too high only under-issues.
        for _ in range(CODE_ATTEMPTS_MAX):
            code = new_code(self._randbelow)
            keys[1] = keyspace.coupon_key(partition, code)
            reply = await self.store.run("coupon_issue", keys, [
                request_hash, IDEMPOTENCY_TTL_S, now_ms, campaign.per_member_limit, code, *terms])
            if reply[0] != "code_in_use":
                break
        else:
            raise RuntimeError(f"{CODE_ATTEMPTS_MAX} random coupon codes in a row were taken")  # a broken random source
        if reply[0] == "issued":
            return code, False
        if reserved:  # refused, or a concurrent duplicate issued it: give the reservation back
            await self.store.redis.hincrby(keyspace.CAMPAIGN_ISSUED_KEY, campaign.campaign_id, -1)
        if reply[0] == "replay":
            return reply[1], True
        if reply[0] == "coupon_limit_reached":
            raise Problem("coupon_limit_reached", f"this member has {reply[1]} coupon(s) of {campaign.campaign_id}, "
                                                  f"the most one member may have")
        if reply[0] in _ISSUE_PROBLEMS:
            raise Problem(reply[0], _ISSUE_PROBLEMS[reply[0]])
        raise RuntimeError(f"coupon_issue replied {reply[0]!r}")  # our bug: the terms were validated

    # -- the member's coupons ----------------------------------------------------------

    async def member_coupons(self, bearer: Bearer, member_id: str, state: str | None) -> dict[str, Any]:
        """The member's newest coupons (at most COUPONS_LISTED_MAX), optionally of one state."""
        MemberService._own(bearer, member_id)
        if state is not None and state not in COUPON_STATES:
            raise Problem("invalid_request", f"state is one of {', '.join(COUPON_STATES)}")
        partition = keyspace.partition_of_member(member_id)
        codes = await self.store.redis.zrevrange(keyspace.member_coupons_key(member_id), 0, COUPONS_LISTED_MAX - 1)
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for code in codes:
                pipe.hgetall(keyspace.coupon_key(partition, code))
            stored = await pipe.execute()
        now_ms = self.now_ms()
        names = await self._names(tuple(m for fields in stored if fields for m in fields["merchants"].split()))
        views = [coupon_view(fields, names, now_ms) for fields in stored if fields]
        return {"member_id": member_id, "coupons": [v for v in views if state is None or v["state"] == state]}

    async def _coupon(self, member_id: str, code: str) -> dict[str, Any]:
        fields = await self.store.redis.hgetall(keyspace.coupon_key(keyspace.partition_of_member(member_id), code))
        return coupon_view(fields, await self._names(tuple(fields["merchants"].split())), self.now_ms())

    # -- helpers ---------------------------------------------------------------------------

    async def _merchant_currencies(self) -> dict[str, str]:
        """Every merchant a campaign may name: merchants.toml's and the registry's (role merchant)."""
        known = {m.id: m.currency for m in self.settings.merchants}
        known.update({m.id: m.currency for m in await self.registry.list_merchants()})
        return known | self._partner_currencies()

    def _partner_currencies(self) -> dict[str, str]:
        """A partner network id names every merchant of that network (our member pays there through
        the interop API, and the payment's merchant is the partner)."""
        return {p.id: network.currency for p in self.settings.partners
                if (network := self.settings.network(p.id)) is not None}

    async def _names(self, merchant_ids: tuple[str, ...]) -> dict[str, str]:
        names = {m.id: m.name for m in self.settings.merchants} | {n.id: n.name for n in self.settings.networks}
        for merchant_id in set(merchant_ids) - set(names) - {ALL_MERCHANTS}:
            info = await self.registry.merchant(merchant_id)
            names[merchant_id] = info.name if info is not None else merchant_id
        return names

    async def _claim(self, caller: Caller, idempotency_key: str, request_hash: str) -> list[Any]:
        reply = await self.store.run("campaign_request_claim", [
            keyspace.nonce_key(caller.merchant_id, caller.nonce),
            keyspace.signing_key_key(caller.merchant_id, caller.key_id),
            keyspace.idempotency_key(caller.merchant_id, idempotency_key),
        ], [NONCE_TTL_S, request_hash, IDEMPOTENCY_TTL_S, self.now_ms(), REQUEST_LEASE_MS])
        if reply[0] not in ("claimed", "resumed", "replay"):
            raise Problem(reply[0])
        return reply

    async def _release(self, caller: Caller, idempotency_key: str, request_hash: str) -> None:
        await self.store.run("campaign_request_release",
                             [keyspace.idempotency_key(caller.merchant_id, idempotency_key)], [request_hash])

    async def _finish(self, caller: Caller, idempotency_key: str, request_hash: str, body: bytes) -> tuple[bytes, bool]:
        reply = await self.store.run("idem_finish", [keyspace.idempotency_key(caller.merchant_id, idempotency_key)],
                                     [request_hash, body.decode(), IDEMPOTENCY_TTL_S, self.now_ms()])
        if reply[0] not in ("done", "replay"):
            raise Problem(reply[0])
        return reply[1].encode(), reply[0] == "replay"
