"""A store terminal: a till from config/merchants.toml, scanning phones and taking payments with the POS SDK.

What a cashier's point-of-sale program does, built only on public surfaces:
the POS SDK (`pos_sdk.AsyncPosClient`, its scanner parser and receipts) and
the config files a store is set up from. It does not import the gateway.

- `load_profiles` reads config/merchants.toml into `StoreProfile`s, and
  `load_issuer_prefixes` the accepted issuer prefixes from config/networks.toml.
- `StoreTerminal.scan_image` reads a phone's barcode picture the honest way:
  zxing-cpp decodes it, the text is framed as a keyboard-wedge scanner sends
  it (AIM symbology identifier, text, CR LF), and the SDK's scanner parser
  takes it from there.
- `StoreTerminal.sell`, `refund`, `cancel`, `lookup`, `close_batch`: the SDK
  verbs plus receipts, with the terminal's own batch totals (`BatchTotals`).
  A batch close sends those totals and the SDK journal's movements, so the
  gateway compares records kept independently, totals and movement by movement.
- `run_repl` is the line-based till for a person (`simulators terminal`), and
  `main` its command line.

Pure parts (`StoreProfile` loading, `wedge_text`, `BatchTotals`, the receipt
data, the REPL's command parsing) take everything as arguments; the shell is
the SDK client and the image decoder.

Exceptions::

    TerminalError (also a ValueError)   `code` says what
     ├── ProfileError                   the store, terminal or config file is not usable
     └── UnreadableImage                no payment barcode, or more than one, in the picture

The SDK's own errors (`pos_sdk.PosError`: ScannerError, Declined, ...) pass through unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import os
import re
import secrets
import sys
import time
import tomllib
import warnings
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Sequence, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import zxingcpp
from PIL import Image, UnidentifiedImageError

from pos_sdk import (
    AsyncPosClient, BatchResult, Declined, MovementDifference, Payment, PosConfig, PosError, ReceiptData, Refund,
    Reversed, ReversalQueued, ScannerError, TotalDifference, parse_payment_code, render_receipt,
)
from pos_sdk.receipt import format_amount

__all__ = [
    "BatchTotals",
    "ProfileError",
    "RefundSlip",
    "Sale",
    "StoreProfile",
    "StoreTerminal",
    "TerminalError",
    "UnreadableImage",
    "add_arguments",
    "describe_difference",
    "load_issuer_prefixes",
    "load_profiles",
    "main",
    "run",
    "run_repl",
    "wedge_text",
]

ROOT: Final = Path(__file__).resolve().parents[1]
MERCHANTS_PATH: Final = ROOT / "config" / "merchants.toml"
NETWORKS_PATH: Final = ROOT / "config" / "networks.toml"
DEFAULT_BASE_URL: Final = "http://127.0.0.1:8080"  # `gateway serve` on its default host and port

CONFIG_BYTES_MAX: Final = 1024 * 1024
"""A merchants file of a few thousand stores is well under 1 MiB."""
IMAGE_BYTES_MAX: Final = 8 * 1024 * 1024
"""A phone screenshot is a few hundred KiB; 8 MiB bounds what a stray file can cost."""
IMAGE_PIXELS_MAX: Final = 40_000_000
"""A 4K screenshot is 8.3 Mpx; larger pictures are refused before decoding."""
REPL_LINE_CHARS_MAX: Final = 1024
"""Longer input lines (a stuck key, a pasted file) are refused, not parsed."""
BATCH_MOVEMENTS_MAX: Final = 10_000
"""The gateway's batch close lists at most 10,000 movements (sales, voids and refunds)."""

Language = Literal["ko", "en"]

# AIM symbology identifiers (ISO/IEC 15424) a scanner puts in front of what it
# read, for the symbologies a payment code is shown in.
_AIM_IDS: Final = {zxingcpp.BarcodeFormat.Code128: "]C0", zxingcpp.BarcodeFormat.QRCode: "]Q1"}
_PAYMENT_ID_RE: Final = re.compile(r"^pay_[0-9]{3}[0-9a-f]{16}$")
_CUTOFF_RE: Final = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


# -- errors -------------------------------------------------------------------


class TerminalError(ValueError):
    """Base of the terminal's own errors; `code` is stable, `message` is for the cashier."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ProfileError(TerminalError):
    """The store or terminal is not in the config, or the config is not usable."""


class UnreadableImage(TerminalError):
    """The picture holds no payment barcode, or more than one."""


# -- profiles -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreProfile:
    """One terminal of one store, as config/merchants.toml describes it."""

    merchant_id: str
    merchant_name: str
    store_id: str
    store_name: str
    terminal_id: str
    currency: str
    time_zone: str
    receipt_width: int
    business_day_cutoff: str
    """HH:MM local time at which the business day (and the cancel window) ends."""

    @property
    def key(self) -> str:
        return f"{self.store_id}/{self.terminal_id}"


def _read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    source = Path(path)
    try:
        with source.open("rb") as file:
            raw = file.read(CONFIG_BYTES_MAX + 1)
    except OSError as e:
        raise ProfileError("config_unreadable", f"cannot read {source}: {e.strerror}") from e
    if len(raw) > CONFIG_BYTES_MAX:
        raise ProfileError("config_too_large", f"{source} is over {CONFIG_BYTES_MAX} bytes")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ProfileError("config_invalid", f"{source} is not valid TOML: {e}") from e


def load_profiles(path: str | os.PathLike[str] = MERCHANTS_PATH) -> dict[str, StoreProfile]:
    """Every terminal of config/merchants.toml, keyed "<store_id>/<terminal_id>"; "<store_id>" is its first terminal."""
    profiles: dict[str, StoreProfile] = {}
    for merchant in _read_toml(path).get("merchant", []):
        try:
            time_zone = str(merchant["time_zone"])
            ZoneInfo(time_zone)
            cutoff = str(merchant.get("business_day_cutoff", "00:00"))
            if not _CUTOFF_RE.match(cutoff):
                raise ValueError(f"business_day_cutoff {cutoff!r} is not HH:MM")
            for store in merchant.get("store", []):
                for index, terminal_id in enumerate(store["terminals"]):
                    profile = StoreProfile(
                        merchant_id=str(merchant["id"]), merchant_name=str(merchant["name"]),
                        store_id=str(store["id"]), store_name=str(store["name"]), terminal_id=str(terminal_id),
                        currency=str(merchant["currency"]), time_zone=time_zone,
                        receipt_width=int(merchant["receipt_width"]), business_day_cutoff=cutoff,
                    )
                    if profile.key in profiles:
                        raise ValueError(f"terminal {profile.key} is listed twice")
                    profiles[profile.key] = profile
                    if index == 0:
                        profiles[profile.store_id] = profile
        except (KeyError, TypeError, ValueError, ZoneInfoNotFoundError) as e:
            raise ProfileError("config_invalid", f"merchant {merchant.get('id')!r} in {path}: {e}") from e
    return profiles


def load_issuer_prefixes(path: str | os.PathLike[str] = NETWORKS_PATH) -> frozenset[str]:
    """The issuer prefixes of config/networks.toml: the wallets whose codes this terminal sends."""
    prefixes = set()
    for network in _read_toml(path).get("network", []):
        prefix = network.get("prefix")
        if not (isinstance(prefix, str) and len(prefix) == 4 and prefix.isascii() and prefix.isdigit()):
            raise ProfileError("config_invalid", f"network prefix {prefix!r} in {path} is not 4 ASCII digits")
        prefixes.add(prefix)
    if not prefixes:
        raise ProfileError("config_invalid", f"{path} lists no issuer network")
    return frozenset(prefixes)


def profile_for(profiles: dict[str, StoreProfile], store_id: str, terminal_id: str | None = None) -> StoreProfile:
    """The profile of `store_id`'s `terminal_id`, or of its first terminal."""
    key = store_id if terminal_id is None else f"{store_id}/{terminal_id}"
    try:
        return profiles[key]
    except KeyError:
        known = sorted(k for k in profiles if "/" in k)
        raise ProfileError("unknown_terminal", f"no terminal {key} in the config; known: {', '.join(known)}") from None


# -- scanning -------------------------------------------------------------------


def wedge_text(symbology: str, text: str) -> str:
    """What a keyboard-wedge scanner types for a barcode: AIM identifier, the text, CR LF."""
    return f"{symbology}{text}\r\n"


def decode_image(png: bytes) -> list[tuple[Any, str]]:
    """(format, text) of every barcode zxing-cpp finds in the picture."""
    if len(png) > IMAGE_BYTES_MAX:
        raise UnreadableImage("image_too_large", f"the picture is over {IMAGE_BYTES_MAX} bytes")
    try:
        with warnings.catch_warnings():
            # Pillow only warns about a decompression bomb below twice its limit; refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(png)) as image:
                if image.width * image.height > IMAGE_PIXELS_MAX:
                    raise UnreadableImage("image_too_large", f"the picture is over {IMAGE_PIXELS_MAX} pixels")
                image.load()
                return [(result.format, result.text) for result in zxingcpp.read_barcodes(image) if result.valid]
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise UnreadableImage("image_too_large", f"the picture is too large to decode ({e})") from e
    except (UnidentifiedImageError, OSError) as e:
        raise UnreadableImage("not_an_image", f"the file is not a picture the scanner can read ({e})") from e


# -- batch totals -----------------------------------------------------------------


@dataclass
class BatchTotals:
    """What the terminal itself counted since the last batch close: its own record, not the gateway's."""

    sale_count: int = 0
    sale_amount: int = 0
    void_count: int = 0
    void_amount: int = 0
    refund_count: int = 0
    refund_amount: int = 0
    payment_ids: list[str] = field(default_factory=list)
    """The approved sales of this batch, as the gateway's batch close can list them."""

    def add_sale(self, payment_id: str, amount: int) -> None:
        if self.sale_count + self.void_count + self.refund_count >= BATCH_MOVEMENTS_MAX:
            raise TerminalError("batch_full", f"{BATCH_MOVEMENTS_MAX} movements in one batch: close the batch first")
        self.sale_count += 1
        self.sale_amount += amount
        self.payment_ids.append(payment_id)

    def add_void(self, amount: int) -> None:
        self.void_count += 1
        self.void_amount += amount

    def add_refund(self, amount: int) -> None:
        self.refund_count += 1
        self.refund_amount += amount

    def report(self) -> dict[str, int]:
        """The totals as `close_batch` sends them."""
        return {"sale_count": self.sale_count, "sale_amount": self.sale_amount, "void_count": self.void_count,
                "void_amount": self.void_amount, "refund_count": self.refund_count, "refund_amount": self.refund_amount}


# -- receipts -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sale:
    """A payment and its printed receipt (an approved sale, or one cancelled at the till)."""

    payment: Payment
    receipt: str


@dataclass(frozen=True, slots=True)
class RefundSlip:
    refund: Refund
    payment: Payment
    receipt: str


def _local_time(iso: str, time_zone: str) -> dt.datetime:
    # The gateway writes UTC with a "Z"; fromisoformat in 3.11 reads that too.
    return dt.datetime.fromisoformat(iso).astimezone(ZoneInfo(time_zone))


def receipt_data(profile: StoreProfile, payment: Payment, refund: Refund | None = None) -> ReceiptData:
    """The receipt of a payment in its current state, or of one refund of it."""
    return ReceiptData(
        store_name=profile.store_name, store_id=payment.store_id, terminal_id=payment.terminal_id,
        time=_local_time(refund.created_at if refund else payment.created_at, profile.time_zone),
        order_ref=payment.order_ref, payment_id=payment.payment_id, approval_code=payment.approval_code,
        status=payment.status, amount=payment.amount, currency=payment.currency, points_used=payment.points,  # type: ignore[arg-type]
        balance_after=refund.balance_after if refund else payment.balance_after,
        coupon_discounts=tuple((c.title, c.discount) for c in payment.coupons if not refund),
        refund_amount=refund.amount if refund else None,
        # A cross-border payment: the member's own network debited them at this locked rate.
        fx_rate=f"{_rate_display(payment.fx['rate'])} points per {payment.currency}" if payment.fx else None,
        partner_network="member's home network" if payment.fx else None,
    )


def _rate_display(rate: str) -> str:
    """A locked rate for the receipt: six significant digits (the exact rate stays in the record)."""
    from decimal import Context, Decimal

    return format(Context(prec=6).create_decimal(Decimal(rate)), "f")


# -- the terminal -----------------------------------------------------------------


class StoreTerminal:
    """One till: a store profile, an SDK client, and the till's own batch totals."""

    def __init__(self, profile: StoreProfile, client: AsyncPosClient, issuer_prefixes: Collection[str], *,
                 language: Language = "ko", now_s: Callable[[], float] = time.time,
                 token_hex: Callable[[int], str] = secrets.token_hex) -> None:
        if language not in ("ko", "en"):
            raise ValueError(f"language must be 'ko' or 'en', not {language!r}")
        self.profile = profile
        self.client = client
        self.issuer_prefixes = frozenset(issuer_prefixes)
        self.language: Language = language
        self.totals = BatchTotals()
        self._now_s = now_s
        self._token_hex = token_hex

    @classmethod
    def open(cls, profile: StoreProfile, *, base_url: str, key_id: str, secret: str, journal_path: str,
             issuer_prefixes: Collection[str] | None = None, language: Language = "ko",
             now_s: Callable[[], float] = time.time, token_hex: Callable[[int], str] = secrets.token_hex,
             **config: Any) -> "StoreTerminal":
        """A terminal with its own AsyncPosClient; `config` overrides PosConfig's defaults (timeouts, retries).

        `now_s` and `token_hex` make the terminal's order references; the SDK keeps its own clock.
        """
        pos_config = PosConfig(base_url, profile.merchant_id, profile.store_id, profile.terminal_id, key_id, secret,
                               currency=profile.currency, journal_path=journal_path, **config)
        prefixes = issuer_prefixes if issuer_prefixes is not None else load_issuer_prefixes()
        return cls(profile, AsyncPosClient(pos_config), prefixes, language=language, now_s=now_s, token_hex=token_hex)

    async def close(self) -> None:
        await self.client.close()

    async def __aenter__(self) -> "StoreTerminal":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def new_order_ref(self) -> str:
        """A fresh order reference: store, terminal, local time and 24 random bits."""
        local = dt.datetime.fromtimestamp(self._now_s(), ZoneInfo(self.profile.time_zone))
        return f"{self.profile.store_id}-{self.profile.terminal_id}-{local:%Y%m%d%H%M%S}-{self._token_hex(3)}"

    def receipt(self, payment: Payment, refund: Refund | None = None) -> str:
        return render_receipt(receipt_data(self.profile, payment, refund), self.profile.receipt_width, self.language)

    # -- scanning ---------------------------------------------------------------

    def scan_image(self, png: bytes) -> str:
        """Scan a phone's barcode picture: the 24-digit payment code, or UnreadableImage / ScannerError."""
        found = {(fmt, text) for fmt, text in decode_image(png)}
        if not found:
            raise UnreadableImage("no_barcode", "no barcode found in the picture; show the code again")
        if len(found) > 1:
            # A handheld scanner reads the one symbol it is aimed at; a picture
            # with two readings is not something to guess between.
            raise UnreadableImage("several_barcodes", f"{len(found)} barcodes in the picture; show one code")
        [(fmt, text)] = found
        return parse_payment_code(wedge_text(_AIM_IDS.get(fmt, ""), text), self.issuer_prefixes)

    def read_typed(self, typed: str) -> str:
        """A code the cashier typed, or a scanner's raw line: the 24 digits, or ScannerError."""
        return parse_payment_code(typed, self.issuer_prefixes)

    # -- verbs --------------------------------------------------------------------

    async def sell(self, amount: int, png: bytes | None = None, typed: str | None = None,
                   order_ref: str | None = None, coupons: tuple[str, ...] = ()) -> Sale:
        """Take a payment from a scanned picture or a typed code, with the member's coupon codes;
        the approved sale with its receipt (each coupon's discount on its own line).

        Raises the SDK's Declined, Reversed or ReversalQueued when the sale did
        not end approved, ScannerError or UnreadableImage when there is no code.
        """
        if (png is None) == (typed is None):
            raise ValueError("pass exactly one of png or typed")
        code = self.scan_image(png) if png is not None else self.read_typed(typed)  # type: ignore[arg-type]
        order_ref = order_ref or self.new_order_ref()
        try:
            payment = await self.client.pay(code, amount, order_ref, currency=self.profile.currency,
                                            coupon_codes=tuple(coupons))
        except Reversed as e:
            # A sale that reached the gateway and was reversed counts at the
            # gateway as a sale and a void; one that never arrived counts as nothing.
            if e.payment is not None and e.details.get("outcome") == "reversed":
                self.totals.add_sale(e.payment.payment_id, e.payment.amount)
                self.totals.add_void(e.payment.amount - e.payment.refunded_amount)
            raise
        self.totals.add_sale(payment.payment_id, payment.amount)
        return Sale(payment, self.receipt(payment))

    async def refund(self, payment_id: str, amount: int, reason: str = "") -> RefundSlip:
        """Refund part or all of a payment; the refund receipt."""
        result = await self.client.refund(payment_id, amount, reason)
        self.totals.add_refund(result.refund.amount)
        return RefundSlip(result.refund, result.payment, self.receipt(result.payment, result.refund))

    async def cancel(self, payment_id: str, reason: str = "") -> Sale:
        """Cancel (void) a payment on its business day; the cancelled sale with its receipt."""
        payment = await self.client.cancel(payment_id, reason)
        self.totals.add_void(payment.amount)
        return Sale(payment, self.receipt(payment))

    async def lookup(self, reference: str) -> Payment:
        """A payment by its payment id (`pay_...`) or by its order reference."""
        if _PAYMENT_ID_RE.match(reference):
            return await self.client.get_payment(reference)
        return await self.client.find_by_order_ref(reference)

    async def close_batch(self) -> BatchResult:
        """Close the batch: the gateway reconciles its batch with this till's totals and the SDK
        journal's movements, one by one; both start again."""
        result = await self.client.close_batch(self.totals.report())
        # The gateway has opened the next batch whether or not the totals matched.
        self.totals = BatchTotals()
        return result


# -- the interactive till ---------------------------------------------------------

HELP: Final = """\
commands:
  total <amount>              start a sale of <amount> (minor units, e.g. 4500 or 4,500)
  <scanned or typed code>     pay the open sale with it
  png <path>                  pay the open sale by scanning a picture of the code
  clear                       drop the open sale
  refund <payment_id> <amount> [reason]
  cancel <payment_id>         same business day only; otherwise refund
  lookup <order_ref|payment_id>
  batch                       close the batch: reconcile totals and each movement with the gateway
  help                        this text
  quit                        leave"""

_COMMANDS: Final = frozenset({"total", "png", "clear", "refund", "cancel", "lookup", "batch", "help", "quit", "exit"})
_AMOUNT_RE: Final = re.compile(r"^[0-9]{1,3}(,[0-9]{3})*$|^[0-9]+$")


def parse_amount(text: str) -> int | None:
    """A positive whole amount as a cashier types it ("4500", "4,500"), or None."""
    if not _AMOUNT_RE.match(text):
        return None
    amount = int(text.replace(",", ""))
    return amount if amount > 0 else None


@dataclass
class _OpenSale:
    amount: int
    order_ref: str


def _money(amount: int, currency: str) -> str:
    return format_amount(amount, currency)


def _message(error: PosError | TerminalError, language: Language) -> str:
    if language == "ko":
        korean = getattr(error, "message_ko", None) or getattr(error, "details", {}).get("message_ko")
        if korean:
            return str(korean)
    return error.message


def describe_difference(difference: TotalDifference | MovementDifference, currency: str) -> str:
    """One line for the cashier (or the back office) per difference of a batch close."""
    if isinstance(difference, TotalDifference):
        shown = (lambda n: _money(n, currency)) if difference.field.endswith("_amount") else (lambda n: f"{n:,}")
        return f"{difference.field}: terminal {shown(difference.terminal)}, gateway {shown(difference.gateway)}"
    d = difference

    def money(amount: int | None) -> str:
        return "-" if amount is None else _money(amount, currency)

    what = f"{d.kind} {d.payment_id}"
    if d.difference == "missing_at_gateway":
        return f"missing at the gateway: {what} {money(d.terminal_amount)}"
    if d.difference == "missing_at_terminal":
        return f"missing at the terminal: {what} {money(d.gateway_amount)}"
    if d.difference == "amount_mismatch":
        return f"amount mismatch: {what} terminal {money(d.terminal_amount)}, gateway {money(d.gateway_amount)}"
    if d.difference == "other_batch":
        return f"in batch {d.batch_no} at the gateway: {what} {money(d.gateway_amount)}"
    return f"{d.difference}: {what} terminal {money(d.terminal_amount)}, gateway {money(d.gateway_amount)}"


def _describe(payment: Payment) -> list[str]:
    lines = [
        f"payment {payment.payment_id}  order {payment.order_ref}",
        f"  status {payment.status}  amount {_money(payment.amount, payment.currency)}  points {payment.points:,}"
        f"  refunded {_money(payment.refunded_amount, payment.currency)}",
        f"  store {payment.store_id}/{payment.terminal_id}  business day {payment.business_day}  at {payment.created_at}",
    ]
    lines += [f"  refund {r.refund_id}: {_money(r.amount, payment.currency)} at {r.created_at}" for r in payment.refunds]
    return lines


async def run_repl(terminal: StoreTerminal, input_lines: Iterable[str], output: TextIO, *, echo: bool = True) -> int:
    """The till, one line at a time: read commands and codes from `input_lines`, write to `output`.

    With `echo` each line read is written after its prompt, so the output of
    a scripted session (or piped input) reads as a transcript; a terminal
    (TTY) shows what was typed by itself, so `main` turns it off there.
    Returns the exit status (0). Gateway refusals, declines and misreads are
    shown to the cashier and the till carries on; only our own bugs escape.
    """
    profile = terminal.profile
    currency = profile.currency

    def say(*lines: str) -> None:
        for line in lines:
            output.write(line + "\n")
        output.flush()

    def prompt(open_sale: _OpenSale | None) -> None:
        if open_sale is None:
            output.write("total> ")
        else:
            output.write(f"pay {_money(open_sale.amount, currency)}> ")
        output.flush()

    async def pay(open_sale: _OpenSale, png: bytes | None = None, typed: str | None = None) -> bool:
        """True when the open sale is finished (approved, or beyond retrying with this order ref)."""
        try:
            sale = await terminal.sell(open_sale.amount, png=png, typed=typed, order_ref=open_sale.order_ref)
        except ScannerError as e:
            say(f"not a payment code ({e.reason}): {_message(e, terminal.language)}")
            return False
        except UnreadableImage as e:
            say(f"cannot scan ({e.code}): {e.message}")
            return False
        except Declined as e:
            # Nothing was taken; the same order may be paid with a fresh code.
            say(f"DECLINED ({e.decline_code}): {_message(e, terminal.language)}",
                "nothing was taken; scan a fresh code, or `clear` the sale")
            return False
        except (Reversed, ReversalQueued) as e:
            say(f"NOT PAID ({e.code}): {e.message}", "take another payment method; the sale is closed")
            return True
        except PosError as e:
            say(f"error ({e.code}): {e.message}")
            return False
        say(f"APPROVED {sale.payment.payment_id}  approval {sale.payment.approval_code}", sale.receipt.rstrip("\n"))
        return True

    async def command(verb: str, args: list[str], open_sale: _OpenSale | None) -> _OpenSale | None:
        if verb == "help":
            say(HELP)
        elif verb == "total":
            amount = parse_amount(args[0]) if len(args) == 1 else None
            if amount is None:
                say("usage: total <amount>, a positive whole number of minor units")
            else:
                open_sale = _OpenSale(amount, terminal.new_order_ref())
                say(f"sale {open_sale.order_ref}: {_money(amount, currency)}; scan the member's code")
        elif verb == "clear":
            say("sale dropped" if open_sale else "no open sale")
            open_sale = None
        elif verb == "png":
            if open_sale is None:
                say("no open sale: enter `total <amount>` first")
            elif len(args) != 1:
                say("usage: png <path>")
            else:
                try:
                    with open(args[0], "rb") as file:
                        png = file.read(IMAGE_BYTES_MAX + 1)
                except OSError as e:
                    say(f"cannot read {args[0]}: {e.strerror}")
                else:
                    if await pay(open_sale, png=png):
                        open_sale = None
        elif verb == "refund":
            amount = parse_amount(args[1]) if len(args) >= 2 else None
            if amount is None:
                say("usage: refund <payment_id> <amount> [reason]")
            else:
                slip = await terminal.refund(args[0], amount, " ".join(args[2:]))
                say(f"REFUNDED {_money(slip.refund.amount, slip.payment.currency)} of {slip.payment.payment_id}"
                    f" ({slip.refund.refund_id})", slip.receipt.rstrip("\n"))
        elif verb == "cancel":
            if len(args) != 1:
                say("usage: cancel <payment_id>")
            else:
                cancelled = await terminal.cancel(args[0])
                say(f"CANCELLED {cancelled.payment.payment_id}", cancelled.receipt.rstrip("\n"))
        elif verb == "lookup":
            if len(args) != 1:
                say("usage: lookup <order_ref|payment_id>")
            else:
                say(*_describe(await terminal.lookup(args[0])))
        elif verb == "batch":
            reported = terminal.totals.report()
            result = await terminal.close_batch()
            say(f"batch {result.batch_no}: {result.status}"
                f" ({reported['sale_count']} sales {_money(reported['sale_amount'], currency)},"
                f" {reported['void_count']} voids {_money(reported['void_amount'], currency)},"
                f" {reported['refund_count']} refunds {_money(reported['refund_amount'], currency)});"
                f" next batch {result.next_batch_no}")
            if result.matched_counts:
                counts = result.matched_counts
                say(f"  matched {counts.get('sale', 0)} sales, {counts.get('void', 0)} voids,"
                    f" {counts.get('refund', 0)} refunds")
            for difference in result.differences:
                say("  " + describe_difference(difference, currency))
            if result.differences_omitted:
                say(f"  ... and {result.differences_omitted:,} more differences")
        return open_sale

    say(f"pointgate terminal: {profile.store_name} ({profile.key}), {currency}. `help` lists the commands.")
    open_sale: _OpenSale | None = None
    prompt(open_sale)
    for raw in input_lines:
        line = raw.rstrip("\r\n")
        words = line.split()
        if echo:
            say(line[:REPL_LINE_CHARS_MAX])
        if len(line) > REPL_LINE_CHARS_MAX:
            say(f"the line is over {REPL_LINE_CHARS_MAX} characters; ignored")
        elif not words:
            pass
        elif words[0].lower() in ("quit", "exit"):
            break
        elif words[0].lower() in _COMMANDS:
            try:
                open_sale = await command(words[0].lower(), words[1:], open_sale)
            except (PosError, TerminalError) as e:
                say(f"error ({e.code}): {_message(e, terminal.language)}")
        elif open_sale is None:
            say("no open sale: enter `total <amount>` first (`help` lists the commands)")
        elif await pay(open_sale, typed=line):
            open_sale = None
        prompt(open_sale)
    else:
        output.write("\n")  # end of input: leave the prompt's line
    if open_sale is not None:
        say(f"the open sale {open_sale.order_ref} ({_money(open_sale.amount, currency)}) was not paid")
    say("bye")
    return 0


# -- command line -------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `simulators terminal` options, for a subcommand parser."""
    parser.add_argument("--store", required=True, help="store id from config/merchants.toml, e.g. gs25-gangnam-01")
    parser.add_argument("--terminal", help="terminal id (default: the store's first terminal)")
    parser.add_argument("--base-url", default=os.environ.get("POINTGATE_BASE_URL", DEFAULT_BASE_URL),
                        help=f"the gateway (default $POINTGATE_BASE_URL or {DEFAULT_BASE_URL})")
    parser.add_argument("--key-id", default=None, help="signing key id (default $POINTGATE_POS_KEY_ID)")
    parser.add_argument("--secret", default=None,
                        help="signing secret pgsk_... (default $POINTGATE_POS_SECRET; prefer the variable: "
                             "arguments are visible to other users in the process list)")
    parser.add_argument("--language", choices=("ko", "en"), default="ko", help="receipt and message language")
    parser.add_argument("--journal", help="the SDK's journal file (default var/pos/<store>-<terminal>.sqlite3)")
    parser.add_argument("--merchants", default=str(MERCHANTS_PATH), help="merchants.toml to read stores from")
    parser.add_argument("--networks", default=str(NETWORKS_PATH), help="networks.toml to read issuer prefixes from")


def run(args: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Run the interactive till for parsed `add_arguments` options; the exit status."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    key_id = args.key_id or os.environ.get("POINTGATE_POS_KEY_ID")
    secret = args.secret or os.environ.get("POINTGATE_POS_SECRET")
    if not key_id or not secret:
        print("terminal: a signing key is needed: --key-id/--secret or POINTGATE_POS_KEY_ID/POINTGATE_POS_SECRET "
              "(issue one with `gateway merchants issue-key <merchant>`)", file=sys.stderr)
        return 2
    try:
        profile = profile_for(load_profiles(args.merchants), args.store, args.terminal)
        prefixes = load_issuer_prefixes(args.networks)
    except ProfileError as e:
        print(f"terminal: {e.message}", file=sys.stderr)
        return 2
    journal = Path(args.journal or ROOT / "var" / "pos" / f"{profile.store_id}-{profile.terminal_id}.sqlite3")
    journal.parent.mkdir(parents=True, exist_ok=True)
    try:
        terminal = StoreTerminal.open(profile, base_url=args.base_url, key_id=key_id, secret=secret,
                                      journal_path=str(journal), issuer_prefixes=prefixes, language=args.language)
    except ValueError as e:  # PosConfig refuses a bad URL, key id or secret
        print(f"terminal: {e}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(terminal, stdin, stdout))


async def _serve(terminal: StoreTerminal, stdin: TextIO, stdout: TextIO) -> int:
    async with terminal:
        # README section 5: forward what a previous run could not deliver, first.
        try:
            sent = await terminal.client.flush_outbox()
        except PosError as e:
            stdout.write(f"outbox: not flushed ({e.code}: {e.message})\n")
        else:
            if sent:
                stdout.write(f"outbox: {len(sent)} stored request(s) forwarded\n")
        return await run_repl(terminal, stdin, stdout, echo=not stdin.isatty())


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """`simulators terminal ...` as a program of its own; the exit status."""
    parser = argparse.ArgumentParser(prog="simulators terminal", description="an interactive store terminal")
    add_arguments(parser)
    return run(parser.parse_args(argv), stdin, stdout)


if __name__ == "__main__":
    sys.exit(main())
