"""The aiohttp application: `create_app(settings)` wires everything.

Resources are `cleanup_ctx` entries (Redis, the services); middlewares give
every request an id, turn every error into problem+json, and write one
structured log line and the metrics. Merchant routes verify the request
signature before anything else and answer only about the caller's own
payments.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from typing import Any, Awaitable, Callable

import msgspec
import aiohttp
import redis.exceptions
from aiohttp import web
from aiohttp_sse import sse_response

from gateway import payments, render, signing
from gateway.cashouts import BankAccountRequest, BankClient, CASHOUTS_PAGE_DEFAULT, CashoutRequest, Cashouts
from gateway.coupons import CampaignRequest, CouponClaimRequest, CouponIssueRequest, CouponService
from gateway.keyring import Keyring
from gateway.ledger import Ledger, expire_due
from gateway.settlement import Settlement, settle_yesterday
from gateway.views import JournalConsumer
from gateway.web import PUBLISH_INTERVAL_S as CONSOLE_PUBLISH_INTERVAL_S, WEB_ROUTES, WEB_UI, WebUi
from gateway.member_events import MemberEvents, check_event_id
from gateway.members import (Bearer, Confirmation, EarningRequest, Exchanges, ExchangeRequest, InboundExchangeRequest,
                             MemberService, SpendingSettings)
from gateway.merchants import MerchantRegistry
from gateway.partners import PartnerClient, PartnerKeys
from gateway.metrics import Metrics
from gateway.openapi import openapi_document
from gateway.payment_service import INTEROP_STORE, Answer, Caller, PaymentService
from gateway.problems import Problem
from gateway.runtime import redis_server
from gateway.settings import Settings
from gateway.store import ClusterAccess, DurabilityTimeout, Store, connect
from gateway.tokens import TokenService

log = logging.getLogger("pointgate.access")

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
PAYMENTS = web.AppKey("payments", PaymentService)
MERCHANTS = web.AppKey("merchants", MerchantRegistry)
TOKENS = web.AppKey("tokens", TokenService)
METRICS = web.AppKey("metrics", Metrics)
MEMBERS = web.AppKey("members", MemberService)
EXCHANGES = web.AppKey("exchanges", Exchanges)
COUPONS = web.AppKey("coupons", CouponService)
EVENTS = web.AppKey("member_events", MemberEvents)
LIVE_PING_S = 15  # keeps the member's live feed open through proxies that drop idle connections
CASHOUTS = web.AppKey("cashouts", Cashouts)

class EnrolRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Enrolment takes no fields yet; unknown ones are refused like everywhere else."""


REQUEST_ID = web.RequestKey("request_id", str)
OUTCOME = web.RequestKey("outcome", str)
MERCHANT_ID = web.RequestKey("merchant_id", str)

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
IDEMPOTENCY_KEY_RE = re.compile(r"^[A-Za-z0-9_.:-]{8,128}$")
TERMINAL_CACHE_TTL_S = 5.0  # a removed terminal is refused by every process within 5 s

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- middlewares --------------------------------------------------------------


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, problem+json for every error, one access log line, metrics."""
    started = time.perf_counter()
    offered = request.headers.get("X-Request-Id", "")
    request_id = offered if REQUEST_ID_RE.match(offered) else "req_" + secrets.token_hex(8)
    request[REQUEST_ID] = request_id
    request[OUTCOME] = ""
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        try:
            response = await handler(request)
        except web.HTTPRequestEntityTooLarge:
            raise Problem("body_too_large", f"the body limit is {request.app[SETTINGS].body_bytes_max} bytes")
        except web.HTTPNotFound:
            raise Problem("not_found", f"no route {request.path}")
        except web.HTTPMethodNotAllowed as e:
            # RFC 9110 section 15.5.6: a 405 lists the methods the route does take.
            raise Problem("method_not_allowed", f"{request.method} is not allowed on {request.path}",
                          headers={"Allow": ", ".join(sorted(e.allowed_methods))})
        except DurabilityTimeout as e:
            raise Problem("durability_timeout", str(e))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError,
                redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError):
            # Nothing answered, or a cluster refused before running anything (CLUSTERDOWN, TRYAGAIN).
            raise Problem("storage_unavailable")
    except Problem as problem:
        response = problem.response(request_id, request.path)
        request[OUTCOME] = problem.code
    except Exception:
        logging.getLogger("pointgate").exception("unhandled error in %s %s (request %s)", request.method, route, request_id)
        response = Problem("internal_error").response(request_id, request.path)
        request[OUTCOME] = "internal_error"
    response.headers["X-Request-Id"] = request_id
    elapsed_s = time.perf_counter() - started
    request.app[METRICS].observe(route, request.method, response.status, request[OUTCOME], elapsed_s)
    log.info(msgspec.json.encode({
        "request_id": request_id, "method": request.method, "route": route, "status": response.status,
        "outcome": request[OUTCOME], "merchant_id": request.get(MERCHANT_ID, ""),
        "duration_ms": round(elapsed_s * 1000, 2),
    }).decode())
    return response


# -- merchant authentication ---------------------------------------------------


class TerminalCache:
    """Merchants and which (merchant, store, terminal) exist, remembered for a few
    seconds per process, so a sale needs no registry round trip."""

    def __init__(self, registry: MerchantRegistry, now: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.now = now
        self._seen: dict[tuple[str, str, str], tuple[bool, float]] = {}
        self._merchants: dict[str, tuple[Any, float]] = {}

    async def merchant(self, merchant_id: str) -> Any:
        hit = self._merchants.get(merchant_id)
        if hit and hit[1] > self.now():
            return hit[0]
        info = await self.registry.merchant(merchant_id)
        if len(self._merchants) > 10_000:
            self._merchants.clear()
        self._merchants[merchant_id] = (info, self.now() + TERMINAL_CACHE_TTL_S)
        return info

    async def belongs(self, merchant_id: str, store_id: str, terminal_id: str) -> bool:
        key = (merchant_id, store_id, terminal_id)
        hit = self._seen.get(key)
        if hit and hit[1] > self.now():
            return hit[0]
        belongs = await self.registry.terminal_belongs(merchant_id, store_id, terminal_id)
        if len(self._seen) > 100_000:
            self._seen.clear()
        self._seen[key] = (belongs, self.now() + TERMINAL_CACHE_TTL_S)
        return belongs


TERMINALS = web.AppKey("terminals", TerminalCache)


async def authenticate(request: web.Request, body: bytes, role: str | tuple[str, ...] = "merchant") -> Caller:
    """Verify the signature of a merchant (or another role, or one of several); raise Problem naming what is wrong."""
    try:
        parsed = signing.parse_signature_headers(request.headers)
        secret = await request.app[MERCHANTS].signing_secret(parsed.merchant_id, parsed.key_id)
        signing.check_signature(parsed, request.method, request.raw_path, body, secret, int(time.time()))
    except signing.SignatureError as e:
        extra = {"server_time_s": e.server_time_s} if e.server_time_s is not None else {}
        raise Problem(e.code, e.message, **extra) from None
    merchant = await request.app[TERMINALS].merchant(parsed.merchant_id)
    if merchant is None:
        raise Problem("unknown_key")
    roles = (role,) if isinstance(role, str) else role
    if merchant.role not in roles:
        raise Problem("forbidden", f"{parsed.merchant_id} is a {merchant.role}; this route is for a {' or '.join(roles)}")
    request[MERCHANT_ID] = parsed.merchant_id
    return Caller(parsed.merchant_id, parsed.key_id, parsed.nonce, merchant.currency, merchant.time_zone, merchant.business_day_cutoff)


def decode_json(body: bytes, content_type: str, kind: type[Any], required: bool = True) -> Any:
    """The request body as a `kind`, decoded strictly (unknown fields and wrong types refused).

    An empty body is `{}` only where the body is optional (`required=False`): a PUT or POST the
    document says takes a body must send one, so a client that lost it cannot reset, say, the
    member's limits to their defaults. Raises Problem `unsupported_media_type` (a body that is not
    application/json), `invalid_json` (not JSON, or not UTF-8) or `invalid_request` (JSON that
    does not fit `kind`, or no body where one is required), and nothing else.
    """
    if body and content_type != "application/json":
        raise Problem("unsupported_media_type", f"got {content_type}")
    if not body and required:
        raise Problem("invalid_request", "send the request as a JSON object in the body")
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as e:
        raise Problem("invalid_request", str(e)) from None
    except msgspec.DecodeError as e:
        raise Problem("invalid_json", str(e)) from None


def decode(body: bytes, kind: type[Any], request: web.Request, required: bool = True) -> Any:
    return decode_json(body, request.content_type, kind, required)


def idempotency_key(request: web.Request) -> str:
    key = request.headers.get("Idempotency-Key", "")
    if not IDEMPOTENCY_KEY_RE.match(key):
        raise Problem("idempotency_key_missing", "send an Idempotency-Key of 8-128 characters of A-Z a-z 0-9 _ . : -")
    return key


async def check_terminal(request: web.Request, caller: Caller, store_id: str, terminal_id: str) -> None:
    if not await request.app[TERMINALS].belongs(caller.merchant_id, store_id, terminal_id):
        raise Problem("unknown_terminal", f"store {store_id!r} terminal {terminal_id!r} is not registered for {caller.merchant_id}")


def respond(request: web.Request, answer: Answer) -> web.Response:
    request[OUTCOME] = answer.outcome
    response = web.Response(body=answer.body, status=answer.status, content_type="application/json")
    if answer.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


async def signed_write(request: web.Request, kind: type[Any], role: str | tuple[str, ...] = "merchant") -> tuple[Caller, Any, str, str, bytes]:
    body = await request.read()
    caller = await authenticate(request, body, role)
    key = idempotency_key(request)
    parsed = decode(body, kind, request)
    return caller, parsed, key, payments.request_hash(request.method, request.raw_path, body), body


async def signed_read(request: web.Request, role: str | tuple[str, ...] = "merchant") -> Caller:
    """A signed read: authenticated, and its nonce burned (writes burn theirs in their script)."""
    caller = await authenticate(request, await request.read(), role)
    await request.app[PAYMENTS].burn_nonce(caller)
    return caller


QUERY_NUMBER_DIGITS_MAX = 9
"""Counts and page sizes are far below 10**9; a longer number is refused before int() reads it
(int() refuses more than 4,300 digits with an error of its own)."""


def _whole_number(request: web.Request, name: str, default: int) -> int:
    """A count or page size from the query (its range is the service's to check)."""
    text = request.query.get(name, str(default))
    # isdigit() alone accepts '²', which int() refuses, and '٣', which it reads as 3.
    if not (text.isascii() and text.isdigit() and len(text) <= QUERY_NUMBER_DIGITS_MAX):
        raise Problem("invalid_request", f"{name} must be a whole number")
    return int(text)


def required_query(request: web.Request, name: str, what: str) -> str:
    value = request.query.get(name, "")
    if not value:
        raise Problem("invalid_request", f"give ?{name}=<{what}>")
    return value


# -- handlers -------------------------------------------------------------------


async def create_payment(request: web.Request) -> web.Response:
    caller, sale, key, digest, _ = await signed_write(request, payments.SaleRequest)
    await check_terminal(request, caller, sale.store_id, sale.terminal_id)
    started = time.perf_counter()
    answer = await request.app[PAYMENTS].sale(caller, sale, key, digest)
    elapsed_s = time.perf_counter() - started
    request.app[METRICS].authorisation(elapsed_s, answer.outcome)
    # In memory only; the operator console's feed publishes it in the background (gateway/web/feed.py).
    request.app[WEB_UI].feed.record(caller.merchant_id, sale.store_id, sale.terminal_id, sale.amount, sale.currency,
                                    answer.outcome, elapsed_s, answer.body)
    return respond(request, answer)


async def get_payment(request: web.Request) -> web.Response:
    caller = await signed_read(request)
    return respond(request, await request.app[PAYMENTS].get(caller, request.match_info["payment_id"]))


async def find_payment(request: web.Request) -> web.Response:
    order_ref = required_query(request, "order_ref", "the terminal's order reference")
    caller = await signed_read(request)
    return respond(request, await request.app[PAYMENTS].find_by_order_ref(caller, order_ref))


async def cancel_payment(request: web.Request) -> web.Response:
    caller, body, key, digest, _ = await signed_write(request, payments.CancelRequest)
    await check_terminal(request, caller, body.store_id, body.terminal_id)
    return respond(request, await request.app[PAYMENTS].cancel(caller, request.match_info["payment_id"], body, key, digest))


async def refund_payment(request: web.Request) -> web.Response:
    caller, body, key, digest, _ = await signed_write(request, payments.RefundRequest)
    await check_terminal(request, caller, body.store_id, body.terminal_id)
    return respond(request, await request.app[PAYMENTS].refund(caller, request.match_info["payment_id"], body, key, digest))


async def create_reversal(request: web.Request) -> web.Response:
    caller, body, key, digest, _ = await signed_write(request, payments.ReversalRequest)
    await check_terminal(request, caller, body.store_id, body.terminal_id)
    return respond(request, await request.app[PAYMENTS].reverse(caller, body, key, digest))


async def close_batch(request: web.Request) -> web.Response:
    # A batch close lists up to 10,000 movements, so its body has a limit of its own.
    limit = max(payments.BATCH_BODY_BYTES_MAX, request.app[SETTINGS].body_bytes_max)
    roomy = request.clone(client_max_size=limit)
    try:
        caller, body, key, digest, _ = await signed_write(roomy, payments.BatchRequest)
    except web.HTTPRequestEntityTooLarge:
        raise Problem("body_too_large", f"the batch close body limit is {limit} bytes") from None
    finally:
        request.update(roomy)  # what authentication noted (the merchant) is for the access log
    terminal_id = request.match_info["terminal_id"]
    await check_terminal(request, caller, body.store_id, terminal_id)
    return respond(request, await request.app[PAYMENTS].close_batch(caller, terminal_id, body, key, digest))


# -- member and affiliate handlers ---------------------------------------------


SLOT_RE = re.compile(r"^[1-9][0-9]{8}$")


def _slot(request: web.Request) -> int:
    text = request.match_info["slot"]
    if not SLOT_RE.match(text):
        raise Problem("device_not_found")
    return int(text)


def _json(document: Any, status: int = 200) -> web.Response:
    return web.Response(body=payments.dumps(document), status=status, content_type="application/json")


async def _bearer(request: web.Request) -> Bearer:
    return await request.app[MEMBERS].authenticate(request.headers.get("Authorization"))


async def enrol_member(request: web.Request) -> web.Response:
    decode(await request.read(), EnrolRequest, request, required=False)
    return _json(await request.app[MEMBERS].enrol_member(), 201)


async def get_member(request: web.Request) -> web.Response:
    bearer = await _bearer(request)
    return _json(await request.app[MEMBERS].balance(bearer, request.match_info["member_id"]))


async def enrol_device(request: web.Request) -> web.Response:
    bearer = await _bearer(request)
    body = await request.read()
    key = idempotency_key(request)
    decode(body, EnrolRequest, request, required=False)
    answer, replayed = await request.app[MEMBERS].enrol_device(bearer, request.match_info["member_id"], key,
                                                               payments.request_hash(request.method, request.raw_path, body))
    return respond(request, Answer(201, answer, replayed))


async def revoke_device(request: web.Request) -> web.Response:
    bearer = await _bearer(request)
    await request.app[MEMBERS].revoke_device(bearer, request.match_info["member_id"], _slot(request))
    return _json({"slot": _slot(request), "status": "revoked"})


async def unlock_device(request: web.Request) -> web.Response:
    bearer = await _bearer(request)
    await request.app[MEMBERS].unlock_device(bearer, request.match_info["member_id"], _slot(request))
    return _json({"slot": _slot(request), "status": "active"})


async def member_codes(request: web.Request) -> web.Response:
    bearer = await _bearer(request)
    count = _whole_number(request, "count", 1)
    return _json(await request.app[MEMBERS].codes(bearer, request.match_info["member_id"], _slot(request), count))


async def member_code_image(request: web.Request) -> web.Response:
    """The current code as the phone screen shows it: Code 128 or QR, PNG or SVG."""
    bearer = await _bearer(request)
    symbology = request.query.get("symbology", "code128")
    image_format = request.path.rsplit(".", 1)[1]
    if symbology not in ("code128", "qr") or (image_format == "svg" and symbology != "code128"):
        raise Problem("invalid_request", "symbology is code128 (png or svg) or qr (png)")
    listing = await request.app[MEMBERS].codes(bearer, request.match_info["member_id"], _slot(request), 1)
    code = listing["codes"][0]["code"]
    if image_format == "svg":
        body, content_type = render.code128_svg(code), "image/svg+xml"
    else:
        body, content_type = (render.qr_png(code) if symbology == "qr" else render.code128_png(code)), "image/png"
    response = web.Response(body=body, content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-PG-Code-Expires-At"] = listing["codes"][0]["expires_at"]
    return response


async def create_earning(request: web.Request) -> web.Response:
    caller, earning, key, digest, _ = await signed_write(request, EarningRequest, role="affiliate")
    body, replayed = await request.app[MEMBERS].earn(caller, earning, key, digest)
    return respond(request, Answer(201, body, replayed, "earned"))


# -- interop: partner networks' calls ---------------------------------------------


INTEROP_PLACE = {"store_id": INTEROP_STORE, "terminal_id": INTEROP_STORE}


async def interop_create_payment(request: web.Request) -> web.Response:
    caller, sale, key, digest, _ = await signed_write(request, payments.InteropSaleRequest, role="partner")
    return respond(request, await request.app[PAYMENTS].interop_sale(caller, sale, key, digest))


async def interop_get_payment(request: web.Request) -> web.Response:
    caller = await signed_read(request, role="partner")
    return respond(request, await request.app[PAYMENTS].get(caller, request.match_info["payment_id"]))


async def interop_find_payment(request: web.Request) -> web.Response:
    partner_ref = required_query(request, "partner_ref", "your payment reference")
    caller = await signed_read(request, role="partner")
    return respond(request, await request.app[PAYMENTS].find_by_order_ref(caller, partner_ref))


async def interop_cancel(request: web.Request) -> web.Response:
    caller, body, key, digest, _ = await signed_write(request, payments.InteropActionRequest, role="partner")
    cancel = payments.CancelRequest(reason=body.reason, **INTEROP_PLACE)
    return respond(request, await request.app[PAYMENTS].cancel(caller, request.match_info["payment_id"], cancel, key, digest))


async def interop_refund(request: web.Request) -> web.Response:
    caller, body, key, digest, _ = await signed_write(request, payments.InteropRefundRequest, role="partner")
    refund = payments.RefundRequest(amount=body.amount, reason=body.reason, **INTEROP_PLACE)
    return respond(request, await request.app[PAYMENTS].refund(caller, request.match_info["payment_id"], refund, key, digest))


async def interop_reversal(request: web.Request) -> web.Response:
    caller, body, key, digest, _ = await signed_write(request, payments.InteropReversalRequest, role="partner")
    reversal = payments.ReversalRequest(order_ref=body.partner_ref, reason=body.reason, **INTEROP_PLACE)
    return respond(request, await request.app[PAYMENTS].reverse(caller, reversal, key, digest))



async def create_exchange(request: web.Request) -> web.Response:
    bearer = await _bearer(request)
    body = decode(await request.read(), ExchangeRequest, request)
    status, record = await request.app[EXCHANGES].send(bearer, request.match_info["member_id"], body, idempotency_key(request))
    request[OUTCOME] = record["state"]
    return _json(record, status)


async def get_exchange(request: web.Request) -> web.Response:
    bearer = await _bearer(request)
    return _json(await request.app[EXCHANGES].get(bearer, request.match_info["member_id"], request.match_info["exchange_id"]))


async def _own_wallet(request: web.Request) -> str:
    bearer = await _bearer(request)
    member_id = request.match_info["member_id"]
    request.app[MEMBERS]._own(bearer, member_id)
    return member_id


def _limit(request: web.Request, default: int) -> int:
    return _whole_number(request, "limit", default)


async def member_history(request: web.Request) -> web.Response:
    member_id = await _own_wallet(request)
    return _json(await request.app[EVENTS].history(member_id, _limit(request, 20), request.query.get("before")))


async def member_events(request: web.Request) -> web.Response:
    member_id = await _own_wallet(request)
    return _json(await request.app[EVENTS].since(member_id, request.query.get("after", "0"), _limit(request, 100)))


async def member_events_live(request: web.Request) -> web.StreamResponse:
    """Server-sent events: every event after Last-Event-ID (or ?after=), then each as it happens."""
    member_id = await _own_wallet(request)
    after = request.headers.get("Last-Event-ID") or request.query.get("after", "$")
    events = request.app[EVENTS]
    if after == "$":
        latest = await events.history(member_id, 1, None)
        after = latest["items"][0]["event_id"] if latest["items"] else "0"
    check_event_id(after)  # a bad offset is a problem+json answer, before the stream starts
    events.open_feed()
    try:
        async with sse_response(request, ping_interval=LIVE_PING_S) as stream:
            def connected() -> bool:
                return request.transport is not None and not request.transport.is_closing()

            async for event in events.live(member_id, after, connected):
                await stream.send(json.dumps(event, ensure_ascii=False), id=event["event_id"], event=event["kind"])
    finally:
        events.close_feed()
    return stream


async def put_member_settings(request: web.Request) -> web.Response:
    bearer = await _bearer(request)
    body = decode(await request.read(), SpendingSettings, request)
    return _json(await request.app[MEMBERS].update_settings(bearer, request.match_info["member_id"], body))


async def create_confirmation(request: web.Request) -> web.Response:
    bearer = await _bearer(request)
    body = decode(await request.read(), Confirmation, request)
    return _json(await request.app[MEMBERS].confirm(bearer, request.match_info["member_id"], body), 201)


async def link_bank_account(request: web.Request) -> web.Response:
    bearer = await _bearer(request)
    body = decode(await request.read(), BankAccountRequest, request)
    status, account = await request.app[CASHOUTS].link_account(bearer, request.match_info["member_id"], body)
    return _json(account, status)


async def list_bank_accounts(request: web.Request) -> web.Response:
    bearer = await _bearer(request)
    return _json(await request.app[CASHOUTS].accounts(bearer, request.match_info["member_id"]))


async def create_cashout(request: web.Request) -> web.Response:
    bearer = await _bearer(request)
    key = idempotency_key(request)
    body = decode(await request.read(), CashoutRequest, request)
    status, cashout = await request.app[CASHOUTS].create(bearer, request.match_info["member_id"], body, key)
    request[OUTCOME] = cashout["state"]
    return _json(cashout, status)


async def get_cashout(request: web.Request) -> web.Response:
    bearer = await _bearer(request)
    return _json(await request.app[CASHOUTS].get(bearer, request.match_info["member_id"], request.match_info["cashout_id"]))


async def list_cashouts(request: web.Request) -> web.Response:
    bearer = await _bearer(request)
    limit = _limit(request, CASHOUTS_PAGE_DEFAULT)
    return _json(await request.app[CASHOUTS].list_cashouts(bearer, request.match_info["member_id"], limit))


async def interop_receive_exchange(request: web.Request) -> web.Response:
    caller, body, _key, _digest, _ = await signed_write(request, InboundExchangeRequest, role="partner")
    await request.app[PAYMENTS].burn_nonce(caller)
    return _json(await request.app[EXCHANGES].receive(caller, body), 201)


async def interop_find_exchange(request: web.Request) -> web.Response:
    exchange_ref = required_query(request, "exchange_ref", "your exchange reference")
    caller = await signed_read(request, role="partner")
    return _json(await request.app[EXCHANGES].find_received(caller, exchange_ref))


# -- coupon campaigns (operators, partner networks) and members' coupons ------------


CAMPAIGN_ROLES = ("operator", "partner")
"""An operator runs every campaign; a partner network sees and issues only its own."""


async def _role(request: web.Request, caller: Caller) -> str:
    return (await request.app[TERMINALS].merchant(caller.merchant_id)).role


async def create_campaign(request: web.Request) -> web.Response:
    caller, body, key, digest, _ = await signed_write(request, CampaignRequest, role="operator")
    answer, replayed = await request.app[COUPONS].create(caller, body, key, digest)
    return respond(request, Answer(201, answer, replayed, "created"))


async def list_campaigns(request: web.Request) -> web.Response:
    caller = await signed_read(request, role=CAMPAIGN_ROLES)
    return _json(await request.app[COUPONS].list(caller, await _role(request, caller)))


async def get_campaign(request: web.Request) -> web.Response:
    caller = await signed_read(request, role=CAMPAIGN_ROLES)
    return _json(await request.app[COUPONS].get(caller, await _role(request, caller), request.match_info["campaign_id"]))


async def issue_coupon(request: web.Request) -> web.Response:
    caller, body, key, digest, _ = await signed_write(request, CouponIssueRequest, role=CAMPAIGN_ROLES)
    answer, replayed = await request.app[COUPONS].issue(
        caller, await _role(request, caller), request.match_info["campaign_id"], body, key, digest)
    return respond(request, Answer(201, answer, replayed, "issued"))


async def member_coupons(request: web.Request) -> web.Response:
    bearer = await _bearer(request)
    return _json(await request.app[COUPONS].member_coupons(bearer, request.match_info["member_id"], request.query.get("state")))


async def claim_coupon(request: web.Request) -> web.Response:
    bearer = await _bearer(request)
    key = idempotency_key(request)
    raw = await request.read()
    body = decode(raw, CouponClaimRequest, request)
    answer, replayed = await request.app[COUPONS].claim(
        bearer, request.match_info["member_id"], body, key, payments.request_hash(request.method, request.raw_path, raw))
    return respond(request, Answer(201, answer, replayed, "claimed"))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when Redis answers and holds every script. A Redis that lost its script cache (a
    restart or failover on Redis 7+, which no longer keeps SCRIPT LOAD in the AOF nor sends it to
    replicas; SCRIPT FLUSH) gets them loaded again here, so it never leaves a gateway out of rotation."""
    store = request.app[STORE]
    try:
        ready = bool(await store.redis.ping())
        if ready and not await store.scripts_loaded():
            await store.load_scripts()  # loading runs nothing, so it is safe at any time
            ready = await store.scripts_loaded()
    except redis.exceptions.RedisError:
        ready = False
    return web.json_response({"status": "ready" if ready else "not_ready", "redis": ready}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """This process's metrics, and the journal consumers' lag (read from Redis at each scrape)."""
    try:
        consumer = request.app[CONSUMER]
        request.app[METRICS].journal_lag.set(await consumer.lag())
        request.app[METRICS].journal_pending.set(await consumer.pending())
    except redis.exceptions.RedisError:
        pass  # the scrape still answers; the gauges keep their last values
    body, content_type = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", "/v1/payments", create_payment),
    ("GET", "/v1/payments", find_payment),
    ("GET", "/v1/payments/{payment_id}", get_payment),
    ("POST", "/v1/payments/{payment_id}/cancel", cancel_payment),
    ("POST", "/v1/payments/{payment_id}/refunds", refund_payment),
    ("POST", "/v1/reversals", create_reversal),
    ("POST", "/v1/terminals/{terminal_id}/batches", close_batch),
    ("POST", "/v1/members", enrol_member),
    ("GET", "/v1/members/{member_id}", get_member),
    ("POST", "/v1/members/{member_id}/devices", enrol_device),
    ("DELETE", "/v1/members/{member_id}/devices/{slot}", revoke_device),
    ("POST", "/v1/members/{member_id}/devices/{slot}/unlock", unlock_device),
    ("GET", "/v1/members/{member_id}/devices/{slot}/codes", member_codes),
    ("GET", "/v1/members/{member_id}/devices/{slot}/code.png", member_code_image),
    ("GET", "/v1/members/{member_id}/devices/{slot}/code.svg", member_code_image),
    ("POST", "/v1/earnings", create_earning),
    ("POST", "/v1/interop/payments", interop_create_payment),
    ("GET", "/v1/interop/payments", interop_find_payment),
    ("GET", "/v1/interop/payments/{payment_id}", interop_get_payment),
    ("POST", "/v1/interop/payments/{payment_id}/cancel", interop_cancel),
    ("POST", "/v1/interop/payments/{payment_id}/refunds", interop_refund),
    ("POST", "/v1/interop/reversals", interop_reversal),
    ("POST", "/v1/interop/exchanges", interop_receive_exchange),
    ("GET", "/v1/interop/exchanges", interop_find_exchange),
    ("POST", "/v1/members/{member_id}/exchanges", create_exchange),
    ("GET", "/v1/members/{member_id}/exchanges/{exchange_id}", get_exchange),
    ("GET", "/v1/members/{member_id}/history", member_history),
    ("GET", "/v1/members/{member_id}/events", member_events),
    ("GET", "/v1/members/{member_id}/events/live", member_events_live),
    ("PUT", "/v1/members/{member_id}/settings", put_member_settings),
    ("POST", "/v1/members/{member_id}/confirmations", create_confirmation),
    ("POST", "/v1/members/{member_id}/bank-accounts", link_bank_account),
    ("GET", "/v1/members/{member_id}/bank-accounts", list_bank_accounts),
    ("POST", "/v1/members/{member_id}/cashouts", create_cashout),
    ("GET", "/v1/members/{member_id}/cashouts", list_cashouts),
    ("GET", "/v1/members/{member_id}/cashouts/{cashout_id}", get_cashout),
    ("POST", "/v1/campaigns", create_campaign),
    ("GET", "/v1/campaigns", list_campaigns),
    ("GET", "/v1/campaigns/{campaign_id}", get_campaign),
    ("POST", "/v1/campaigns/{campaign_id}/coupons", issue_coupon),
    ("GET", "/v1/members/{member_id}/coupons", member_coupons),
    ("POST", "/v1/members/{member_id}/coupons", claim_coupon),
    ("GET", "/healthz", healthz),
    ("GET", "/readyz", readyz),
    ("GET", "/metrics", metrics),
    ("GET", "/openapi.json", openapi),
) + WEB_ROUTES  # the member's web wallet and the operator console (gateway/web)


# -- composition --------------------------------------------------------------


def create_app(settings: Settings, jobs: bool = True, serving: bool = True) -> web.Application:
    """The gateway. `jobs`: whether this process also runs the background jobs (the journal
    consumer, scheduled settlement, points expiry, owed partner reversals and exchanges, pending
    cash-outs). `gateway serve` runs them in a process of their own (`serving` False: it answers
    no request, so it publishes nothing to the operator console), so no serving worker stops
    answering while a job round works through a second's journal entries."""
    app = web.Application(middlewares=[request_context], client_max_size=settings.body_bytes_max)
    app[SETTINGS] = settings
    app[JOBS] = jobs
    app[SERVING] = serving
    app[METRICS] = Metrics()
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.on_shutdown.append(_close_live_feeds)
    app.cleanup_ctx.extend([_redis_server, _store, _services, _journal_consumer, _scheduled_settlement, _points_expiry, _partner_clients, _bank, _web_ui])
    return app


REDIS_URL = web.AppKey("redis_url", str)
JOBS = web.AppKey("jobs", bool)
SERVING = web.AppKey("serving", bool)


async def _close_live_feeds(app: web.Application) -> None:
    """Shutdown: the members' live feeds end (their apps reconnect to another process)."""
    if EVENTS in app:
        app[EVENTS].closing = True


async def _redis_server(app: web.Application):
    """REDIS_URL if configured, else the bundled server (started, or the one already serving data_dir)."""
    with redis_server(app[SETTINGS]) as (url, _server):
        app[REDIS_URL] = url
        yield


async def _store(app: web.Application):
    """The Redis connection pool with every script loaded, and a second pool for the members'
    live feeds (each waits on a connection of its own); closed at shutdown."""
    settings = app[SETTINGS]
    store = Store.from_settings(settings, app[REDIS_URL], max_connections=256)
    await store.load_scripts()
    app[STORE] = store
    app[LIVE_REDIS] = connect(app[REDIS_URL], settings.redis_socket_timeout_s, max_connections=settings.live_feeds_max,
                              cluster=ClusterAccess.from_settings(settings))
    # A cluster client reads the slot map here: its pub/sub (the operator console's feed) picks a
    # node from the map without reading it first. A single server's client has nothing to read.
    await app[LIVE_REDIS].initialize()
    yield
    await app[LIVE_REDIS].aclose()
    await store.close()


LIVE_REDIS = web.AppKey("live_redis", object)


async def _services(app: web.Application):
    """The services over the store; they hold no resource of their own."""
    settings, store = app[SETTINGS], app[STORE]
    keyring = Keyring.load(settings.keyring_path)
    tokens = TokenService(store, Ledger(store), keyring, settings)
    registry = MerchantRegistry(store, keyring)
    app[TOKENS], app[MERCHANTS] = tokens, registry
    app[TERMINALS] = TerminalCache(registry)
    app[PAYMENTS] = PaymentService(store, tokens, settings)
    app[MEMBERS] = MemberService(store, tokens, settings)
    app[EXCHANGES] = Exchanges(store, tokens, settings, app[PAYMENTS])
    app[COUPONS] = CouponService(store, registry, settings)
    await app[COUPONS].load_config()  # campaigns.toml's campaigns; a bad one stops the start with its name
    app[EVENTS] = MemberEvents(store, settings, app[LIVE_REDIS])
    app[CASHOUTS] = Cashouts(store, tokens, settings)
    yield


@contextlib.asynccontextmanager
async def every(interval_s: float, work: Callable[[], Awaitable[Any]], what: str):
    """Run `work` every `interval_s` in the background while the block runs; a failed round is
    logged and the next one tries again. Stopping is by a flag as well as by cancelling, since a
    cancellation that lands inside a client's timeout can come back as a TimeoutError."""
    stop = asyncio.Event()

    async def rounds() -> None:
        while not stop.is_set():
            await asyncio.sleep(interval_s)
            if stop.is_set():
                return
            try:
                await work()
            except redis.exceptions.RedisError:
                logging.getLogger("pointgate").warning("%s: Redis unavailable; retrying", what)
            except Exception:
                logging.getLogger("pointgate").exception("%s: a round failed; retrying", what)

    task = asyncio.create_task(rounds())
    collected = False
    try:
        yield
    except GeneratorExit:
        collected = True  # an app nobody closed, garbage-collected: nothing may be awaited now
        raise
    finally:
        stop.set()
        task.cancel()
        if not collected:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def job(app: web.Application, interval_s: float, work: Callable[[], Awaitable[Any]], what: str):
    """A background job of the gateway's: `every` round, in the process that runs the jobs
    (create_app's `jobs`); an interval of 0 turns it off."""
    if not app[JOBS] or not interval_s:
        yield
        return
    async with every(interval_s, work, what):
        yield


async def _journal_consumer(app: web.Application):
    """This process's consumer of the journals: the views settlement reads (see gateway/views.py)."""
    interval_s = app[SETTINGS].views_interval_s
    consumer = JournalConsumer(app[STORE], app[SETTINGS], app[MERCHANTS])
    app[CONSUMER] = consumer
    async with job(app, interval_s, consumer.run_round, "journal consumer"):
        yield


CONSUMER = web.AppKey("journal_consumer", JournalConsumer)


async def _scheduled_settlement(app: web.Application):
    """Yesterday is settled as soon as each merchant's business day has ended (see gateway/settlement.py)."""
    settings = app[SETTINGS]
    service = Settlement(app[STORE], settings, app[MERCHANTS], app[CONSUMER])
    async with job(app, settings.settle_interval_s, lambda: settle_yesterday(service, settings.settlements_dir),
                   "scheduled settlement"):
        yield


async def _points_expiry(app: web.Application):
    """The scheduled expiry job: each lot expires once, whichever process that runs jobs gets there first."""
    store = app[STORE]
    async with job(app, app[SETTINGS].points_expiry_interval_s, lambda: expire_due(store), "points expiry"):
        yield


OWED_REVERSALS_INTERVAL_S = 2.0  # how soon a partner that is back gets the reversals it is owed


PARTNER_SESSION = web.AppKey("partner_session", aiohttp.ClientSession)


async def connect_partners(app: web.Application) -> None:
    """A client for every configured partner whose key we hold (again after `gateway partners set-key`)."""
    settings, service = app[SETTINGS], app[PAYMENTS]
    keys = PartnerKeys(app[STORE], app[TOKENS].keyring)
    for partner in settings.partners:
        key = await keys.get(partner.id)
        if key is not None:
            service.partners[partner.id] = PartnerClient(partner, settings.home_network.id, key[0], key[1],
                                                         app[PARTNER_SESSION])


async def _partner_clients(app: web.Application):
    """One HTTP session for all partner calls, a client per partner we hold a key for,
    and the background task that sends the reversals partners are owed."""
    service = app[PAYMENTS]
    session = aiohttp.ClientSession()
    app[PARTNER_SESSION] = session
    await connect_partners(app)

    async def send_owed() -> None:
        await service.send_owed_reversals()
        await app[EXCHANGES].resolve_pending()

    async with job(app, OWED_REVERSALS_INTERVAL_S, send_owed, "owed partner reversals"):
        yield
    await session.close()


async def _bank(app: web.Application):
    """One HTTP session for the bank, and the task that resolves cash-outs whose answer was lost.
    Without `bank_url` there is neither, and cash-outs answer bank_unavailable."""
    settings, cashouts = app[SETTINGS], app[CASHOUTS]
    if not settings.bank_url:
        yield
        return
    session = aiohttp.ClientSession()
    cashouts.bank = BankClient(session, settings.bank_url, settings.bank_api_key, settings.bank_timeout_s)
    async with job(app, settings.bank_resolve_interval_s, cashouts.resolve_pending, "pending cash-outs"):
        yield
    cashouts.bank = None
    await session.close()


async def _web_ui(app: web.Application):
    """The web wallet and operator console (gateway/web), and the console feed's publisher."""
    ui = WebUi(app[STORE], app[SETTINGS], app[MEMBERS], app[EVENTS], app[PAYMENTS], app[MERCHANTS], app[LIVE_REDIS])
    app[WEB_UI] = ui
    if not app[SERVING]:
        yield
        return
    async with every(CONSOLE_PUBLISH_INTERVAL_S, ui.publish, "console feed"):
        yield
