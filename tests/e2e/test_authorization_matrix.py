"""Every route against every role: only the allowed cells get through.

The roles: terminal A (GS25), terminal B (CU), a member, another member, an affiliate (Hana
Card), a partner network (Taishin) and an operator. Each row of `MATRIX` is one route of
`gateway.app.ROUTES` (a route without a row fails `test_every_route_has_a_row`), the plausible
request for it (always about terminal A's and the member's things), the cells allowed and what
they are answered. Every other cell is refused the API's way:

- a signed route without a signature (a member's token instead): 401 signature_missing
- a member route without a member token (a signed principal): 401 unauthorized
- a signed route for another role: 403 forbidden
- terminal B on terminal A's payment: 404 payment_not_found, as if there were none; naming A's
  store: 403 unknown_terminal
- another member on the member's wallet: 404 member_not_found, as if there were none
- the operator console's routes without the operator's console token: 401 operator_unauthorized

An allowed cell's answer is a success, or a problem only a caller who got past authentication
can meet (404 payment_not_found for a partner asking about a payment that is not its own).
"""

from __future__ import annotations

import base64
import inspect
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import pytest

from gateway.app import MEMBERS, ROUTES, TOKENS
from gateway.settings import load_settings
from gateway.tokens import Enrolment
from gateway.web import WEB_UI

from tests.e2e.conftest import Member, Terminal, serving
from tests.e2e.test_coupon_campaigns import campaign, operator

ROLES = ("terminal_a", "terminal_b", "member", "other_member", "affiliate", "partner", "operator")
SIGNED_ROLES = ("terminal_a", "terminal_b", "affiliate", "partner", "operator")
MEMBER_ROLES = ("member", "other_member")


@dataclass
class World:
    """What the requests are about: terminal A's payment and the member's wallet, and who calls."""

    signers: dict[str, Terminal]
    tokens: dict[str, str]
    """Each member's bearer token, and the operator's console token."""
    member: Member
    payment: dict[str, Any]
    gateway: Any

    async def payer_code(self) -> str:
        """A code of a new paying member's phone: a phone makes ten codes a step, the matrix many more."""
        return (await self.gateway.member(points=10_000)).code()

    @property
    def m(self) -> str:
        return self.member.member_id

    @property
    def slot(self) -> int:
        return self.member.phone.slot


async def _world(gateway) -> World:
    signers = {
        "terminal_a": await gateway.terminal("gs25", "gs25-gangnam-01", "t1"),
        "terminal_b": await gateway.terminal("cu", "cu-jongno-01", "t1"),
        "affiliate": await gateway.terminal("hana-card"),
        "partner": await gateway.terminal("taishin"),
        "operator": await operator(gateway),
    }
    tokens, members = {}, {}
    for role in MEMBER_ROLES:
        enrolled = await gateway.app[MEMBERS].enrol_member()
        device = enrolled["device"]
        secret = base64.b32decode(device["secret_b32"] + "=" * (-len(device["secret_b32"]) % 8))
        members[role] = Member(enrolled["member_id"], Enrolment(enrolled["member_id"], device["slot"], secret, ""),
                               gateway.app[TOKENS].home.prefix)
        tokens[role] = enrolled["token"]
        await gateway.ledger.credit(enrolled["member_id"], 100_000, "affiliate:hana-card", "seed-" + role, "HMP")
    tokens["operator"], _ = await gateway.app[WEB_UI].operator_tokens.issue(signers["operator"].merchant_id)
    status, payment, _ = await signers["terminal_a"].pay(members["member"].code(), 5_000, order_ref="MATRIX-A-1")
    assert (201, "approved") == (status, payment["status"]), payment
    return World(signers, tokens, members["member"], payment, gateway)


# -- calling a route as a role ----------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    document: Any = None


async def _send(world: World, role: str, call: Call, kind: str) -> tuple[int, str | None]:
    """The status and problem code of `call` sent with the role's credentials (a live feed is not read).

    A signed principal signs; a member, and the operator on the console's routes, send a bearer token.
    """
    body = json.dumps(call.document).encode() if call.document is not None else b""
    idempotency_key = "mx-" + secrets.token_hex(8) if call.method in ("POST", "PUT") else None
    if role in SIGNED_ROLES and not (kind == CONSOLE and role == "operator"):
        headers = world.signers[role].headers(call.method, call.path, body, idempotency_key)
    else:
        headers = {"Authorization": "Bearer " + world.tokens[role]}
        if body:
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
    gateway = world.gateway
    async with gateway.session.request(call.method, gateway.base_url + call.path, data=body, headers=headers) as response:
        if response.content_type == "text/event-stream":
            return response.status, None
        raw = await response.read()
        code = json.loads(raw).get("code") if response.content_type == "application/problem+json" else None
        return response.status, code


# -- the matrix -------------------------------------------------------------------


Expected = int | tuple[int, str]
"""A status (a success) or (status, problem code)."""

PUBLIC, MERCHANT, MEMBER, AFFILIATE, PARTNER, OPERATOR, CAMPAIGNS, CONSOLE = (
    "public", "merchant", "member", "affiliate", "partner", "operator", "campaigns", "console")

REFUSED_BY_KIND: dict[str, dict[str, Expected]] = {
    PUBLIC: {},
    MERCHANT: {"member": (401, "signature_missing"), "other_member": (401, "signature_missing"),
               "affiliate": (403, "forbidden"), "partner": (403, "forbidden"), "operator": (403, "forbidden")},
    MEMBER: {role: (401, "unauthorized") for role in SIGNED_ROLES} | {"other_member": (404, "member_not_found")},
    AFFILIATE: {"member": (401, "signature_missing"), "other_member": (401, "signature_missing"),
                "terminal_a": (403, "forbidden"), "terminal_b": (403, "forbidden"), "partner": (403, "forbidden"),
                "operator": (403, "forbidden")},
    PARTNER: {"member": (401, "signature_missing"), "other_member": (401, "signature_missing"),
              "terminal_a": (403, "forbidden"), "terminal_b": (403, "forbidden"), "affiliate": (403, "forbidden"),
              "operator": (403, "forbidden")},
    OPERATOR: {"member": (401, "signature_missing"), "other_member": (401, "signature_missing"),
               "terminal_a": (403, "forbidden"), "terminal_b": (403, "forbidden"), "affiliate": (403, "forbidden"),
               "partner": (403, "forbidden")},
    CAMPAIGNS: {"member": (401, "signature_missing"), "other_member": (401, "signature_missing"),
                "terminal_a": (403, "forbidden"), "terminal_b": (403, "forbidden"), "affiliate": (403, "forbidden")},
    CONSOLE: {role: (401, "operator_unauthorized") for role in ROLES if role != "operator"},
}
"""How each kind of route refuses the roles it is not for."""


@dataclass(frozen=True)
class Row:
    kind: str
    call: Callable[[World, str], Call | Awaitable[Call]]
    """The request the role sends (made anew for each role)."""
    allowed: dict[str, Expected | tuple[Expected, ...]]
    """Role -> its answer (or one of several). Roles not listed are refused as REFUSED_BY_KIND says."""
    refused: dict[str, Expected] = field(default_factory=dict)
    """Refusals particular to this route (terminal B on terminal A's things)."""

    def expected(self) -> dict[str, Expected | tuple[Expected, ...]]:
        return REFUSED_BY_KIND[self.kind] | self.refused | self.allowed


async def _fresh_payment(w: World) -> dict[str, Any]:
    """A new approved sale of terminal A's, for a call that changes it (cancel, refund, reversal)."""
    status, payment, _ = await w.signers["terminal_a"].pay(await w.payer_code(), 1_000)
    assert (201, "approved") == (status, payment["status"]), payment
    return payment


async def _cancel(w: World, role: str) -> Call:
    return Call("POST", f"/v1/payments/{(await _fresh_payment(w))['payment_id']}/cancel", _here(w, role))


async def _refund(w: World, role: str) -> Call:
    return Call("POST", f"/v1/payments/{(await _fresh_payment(w))['payment_id']}/refunds", {"amount": 500, **_here(w, role)})


async def _reversal(w: World, role: str) -> Call:
    return Call("POST", "/v1/reversals", {"order_ref": (await _fresh_payment(w))["order_ref"], **_here(w, role)})


async def _spare_device(w: World, role: str) -> Call:
    """The member revokes a second device of theirs, so their own token keeps working; anyone else
    tries the member's own device (and, refused, leaves it alone)."""
    if role != "member":
        return Call("DELETE", f"/v1/members/{w.m}/devices/{w.slot}")
    answer, _ = await w.gateway.app[MEMBERS].enrol_device(_bearer_of(w), w.m, "mx-" + secrets.token_hex(8), "")
    return Call("DELETE", f"/v1/members/{w.m}/devices/{json.loads(answer)['device']['slot']}")


def _bearer_of(w: World):
    from gateway.members import Bearer

    return Bearer(w.m, w.slot)


def _here(w: World, role: str) -> dict[str, str]:
    """The store and terminal a terminal names: its own (anyone else names terminal A's)."""
    signer = w.signers.get(role) if role in ("terminal_a", "terminal_b") else None
    return {"store_id": signer.store_id, "terminal_id": signer.terminal_id} if signer else dict(A_STORE)


async def _sale(w: World, role: str) -> Call:
    return Call("POST", "/v1/payments", {"code": await w.payer_code(), "amount": 1_000, "currency": "KRW",
                                         "order_ref": "mx-" + secrets.token_hex(4), **_here(w, role)})


async def _interop_sale(w: World, role: str) -> Call:
    return Call("POST", "/v1/interop/payments", {"code": await w.payer_code(), "amount": 100, "currency": "TWD",
                                                 "partner_ref": "TS-MX-" + secrets.token_hex(4), "merchant_name": "FamilyMart"})


def _batch(w: World, role: str) -> Call:
    here = _here(w, role)
    return Call("POST", f"/v1/terminals/{here['terminal_id']}/batches", {"store_id": here["store_id"], "sale_count": 0,
                                                                          "sale_amount": 0})


def _get(path: Callable[[World], str]) -> Callable[[World, str], Call]:
    return lambda w, role: Call("GET", path(w))


def _post(path: Callable[[World], str], document: Callable[[World], Any] = lambda w: {}) -> Callable[[World, str], Call]:
    return lambda w, role: Call("POST", path(w), document(w))


A_STORE = {"store_id": "gs25-gangnam-01", "terminal_id": "t1"}
NOT_ITS_PAYMENT = {"terminal_b": (404, "payment_not_found")}
EVERYONE = {role: 200 for role in ROLES}
A_AND_B = {"terminal_a": 200, "terminal_b": 200}


def _static_name() -> str:
    from gateway.web.pages import static_files

    return next(iter(sorted(static_files())), "none.js")


def _static_expected() -> Expected:
    return 200 if _static_name() != "none.js" else (404, "not_found")


MATRIX: dict[tuple[str, str], Row] = {
    # merchants' terminals: each its own sales, batches and reversals; terminal A's payments only A
    ("POST", "/v1/payments"): Row(MERCHANT, _sale, {"terminal_a": 201, "terminal_b": 201}),
    ("GET", "/v1/payments"): Row(MERCHANT, _get(lambda w: f"/v1/payments?order_ref={w.payment['order_ref']}"),
                                 {"terminal_a": 200}, NOT_ITS_PAYMENT),
    ("GET", "/v1/payments/{payment_id}"): Row(MERCHANT, _get(lambda w: f"/v1/payments/{w.payment['payment_id']}"),
                                              {"terminal_a": 200}, NOT_ITS_PAYMENT),
    ("POST", "/v1/payments/{payment_id}/cancel"): Row(MERCHANT, _cancel, {"terminal_a": 200}, NOT_ITS_PAYMENT),
    ("POST", "/v1/payments/{payment_id}/refunds"): Row(MERCHANT, _refund, {"terminal_a": 201}, NOT_ITS_PAYMENT),
    # Terminal B's reversal of A's order reference only records one in B's own namespace (200 recorded).
    ("POST", "/v1/reversals"): Row(MERCHANT, _reversal, A_AND_B),
    ("POST", "/v1/terminals/{terminal_id}/batches"): Row(MERCHANT, _batch, A_AND_B),
    # members (the app): only the member's own wallet
    ("POST", "/v1/members"): Row(PUBLIC, _post(lambda w: "/v1/members"), {role: 201 for role in ROLES}),
    ("GET", "/v1/members/{member_id}"): Row(MEMBER, _get(lambda w: f"/v1/members/{w.m}"), {"member": 200}),
    ("POST", "/v1/members/{member_id}/devices"): Row(MEMBER, _post(lambda w: f"/v1/members/{w.m}/devices"), {"member": 201}),
    ("DELETE", "/v1/members/{member_id}/devices/{slot}"): Row(MEMBER, _spare_device, {"member": 200}),
    ("POST", "/v1/members/{member_id}/devices/{slot}/unlock"): Row(
        MEMBER, _post(lambda w: f"/v1/members/{w.m}/devices/{w.slot}/unlock"), {"member": (200, (409, "device_unavailable"))}),
    ("GET", "/v1/members/{member_id}/devices/{slot}/codes"): Row(
        MEMBER, _get(lambda w: f"/v1/members/{w.m}/devices/{w.slot}/codes"), {"member": 200}),
    ("GET", "/v1/members/{member_id}/devices/{slot}/code.png"): Row(
        MEMBER, _get(lambda w: f"/v1/members/{w.m}/devices/{w.slot}/code.png"), {"member": 200}),
    ("GET", "/v1/members/{member_id}/devices/{slot}/code.svg"): Row(
        MEMBER, _get(lambda w: f"/v1/members/{w.m}/devices/{w.slot}/code.svg"), {"member": 200}),
    ("GET", "/v1/members/{member_id}/devices/{slot}/code.json"): Row(
        MEMBER, _get(lambda w: f"/v1/members/{w.m}/devices/{w.slot}/code.json"), {"member": 200}),
    ("POST", "/v1/members/{member_id}/exchanges"): Row(
        MEMBER, _post(lambda w: f"/v1/members/{w.m}/exchanges",
                      lambda w: {"partner": "taishin", "partner_member_id": "m1", "points": 10_000}),
        {"member": (201, (409, "exchange_unavailable"))}),
    ("GET", "/v1/members/{member_id}/exchanges/{exchange_id}"): Row(
        MEMBER, _get(lambda w: f"/v1/members/{w.m}/exchanges/ex_0000000000000000"), {"member": (404, "exchange_not_found")}),
    ("GET", "/v1/members/{member_id}/history"): Row(MEMBER, _get(lambda w: f"/v1/members/{w.m}/history"), {"member": 200}),
    ("GET", "/v1/members/{member_id}/events"): Row(MEMBER, _get(lambda w: f"/v1/members/{w.m}/events"), {"member": 200}),
    ("GET", "/v1/members/{member_id}/events/live"): Row(MEMBER, _get(lambda w: f"/v1/members/{w.m}/events/live"),
                                                        {"member": 200}),
    ("PUT", "/v1/members/{member_id}/settings"): Row(
        MEMBER, lambda w, role: Call("PUT", f"/v1/members/{w.m}/settings", {"daily_cap_points": 500_000}), {"member": 200}),
    ("POST", "/v1/members/{member_id}/confirmations"): Row(
        MEMBER, _post(lambda w: f"/v1/members/{w.m}/confirmations", lambda w: {"points": 1_000}), {"member": 201}),
    ("POST", "/v1/members/{member_id}/bank-accounts"): Row(
        MEMBER, _post(lambda w: f"/v1/members/{w.m}/bank-accounts",
                      lambda w: {"bank_code": "081", "account_number": "1234567890", "holder_name": "Minji Kim"}),
        {"member": 201}),
    ("GET", "/v1/members/{member_id}/bank-accounts"): Row(MEMBER, _get(lambda w: f"/v1/members/{w.m}/bank-accounts"),
                                                          {"member": 200}),
    ("POST", "/v1/members/{member_id}/cashouts"): Row(
        MEMBER, _post(lambda w: f"/v1/members/{w.m}/cashouts", lambda w: {"points": 10_000, "bank_account_id": "ba_0000000000000000"}),
        {"member": ((404, "bank_account_not_found"), (503, "bank_unavailable"))}),
    ("GET", "/v1/members/{member_id}/cashouts"): Row(MEMBER, _get(lambda w: f"/v1/members/{w.m}/cashouts"), {"member": 200}),
    ("GET", "/v1/members/{member_id}/cashouts/{cashout_id}"): Row(
        MEMBER, _get(lambda w: f"/v1/members/{w.m}/cashouts/co_0000000000000000"), {"member": (404, "cashout_not_found")}),
    ("GET", "/v1/members/{member_id}/coupons"): Row(MEMBER, _get(lambda w: f"/v1/members/{w.m}/coupons"), {"member": 200}),
    ("POST", "/v1/members/{member_id}/coupons"): Row(
        MEMBER, _post(lambda w: f"/v1/members/{w.m}/coupons", lambda w: {"campaign_id": "gs25-welcome"}), {"member": 201}),
    # Who a token belongs to: every member learns their own identity, and nobody else's.
    ("GET", "/v1/me"): Row(MEMBER, _get(lambda w: "/v1/me"), {"member": 200, "other_member": 200}),
    # affiliates
    ("POST", "/v1/earnings"): Row(
        AFFILIATE, _post(lambda w: "/v1/earnings",
                         lambda w: {"member_id": w.m, "points": 100, "affiliate_ref": "mx-" + secrets.token_hex(4)}),
        {"affiliate": 201}),
    # partner networks: their own interop payments (terminal A's are not theirs)
    ("POST", "/v1/interop/payments"): Row(PARTNER, _interop_sale, {"partner": 201}),
    ("GET", "/v1/interop/payments"): Row(PARTNER, _get(lambda w: f"/v1/interop/payments?partner_ref={w.payment['order_ref']}"),
                                         {"partner": (404, "payment_not_found")}),
    ("GET", "/v1/interop/payments/{payment_id}"): Row(
        PARTNER, _get(lambda w: f"/v1/interop/payments/{w.payment['payment_id']}"), {"partner": (404, "payment_not_found")}),
    ("POST", "/v1/interop/payments/{payment_id}/cancel"): Row(
        PARTNER, _post(lambda w: f"/v1/interop/payments/{w.payment['payment_id']}/cancel"),
        {"partner": (404, "payment_not_found")}),
    ("POST", "/v1/interop/payments/{payment_id}/refunds"): Row(
        PARTNER, _post(lambda w: f"/v1/interop/payments/{w.payment['payment_id']}/refunds", lambda w: {"amount": 100}),
        {"partner": (404, "payment_not_found")}),
    ("POST", "/v1/interop/reversals"): Row(
        PARTNER, _post(lambda w: "/v1/interop/reversals", lambda w: {"partner_ref": "TS-MX-NONE"}), {"partner": 200}),
    ("POST", "/v1/interop/exchanges"): Row(
        PARTNER, _post(lambda w: "/v1/interop/exchanges",
                       lambda w: {"member_id": w.m, "points": 100, "exchange_ref": "TS-EX-" + secrets.token_hex(4)}),
        {"partner": 201}),
    ("GET", "/v1/interop/exchanges"): Row(PARTNER, _get(lambda w: "/v1/interop/exchanges?exchange_ref=TS-EX-NONE"),
                                          {"partner": (404, "exchange_not_found")}),
    # coupon campaigns: an operator runs every campaign, a partner network its own
    ("POST", "/v1/campaigns"): Row(OPERATOR, _post(lambda w: "/v1/campaigns", lambda w: campaign()), {"operator": 201}),
    ("GET", "/v1/campaigns"): Row(CAMPAIGNS, _get(lambda w: "/v1/campaigns"), {"operator": 200, "partner": 200}),
    ("GET", "/v1/campaigns/{campaign_id}"): Row(CAMPAIGNS, _get(lambda w: "/v1/campaigns/taishin-familymart"),
                                                {"operator": 200, "partner": 200}),
    ("POST", "/v1/campaigns/{campaign_id}/coupons"): Row(
        CAMPAIGNS, _post(lambda w: "/v1/campaigns/taishin-familymart/coupons", lambda w: {"member_id": w.m}),
        {"operator": 201, "partner": 201}),
    # operations and the pages
    ("GET", "/healthz"): Row(PUBLIC, _get(lambda w: "/healthz"), EVERYONE),
    ("GET", "/readyz"): Row(PUBLIC, _get(lambda w: "/readyz"), EVERYONE),
    ("GET", "/metrics"): Row(PUBLIC, _get(lambda w: "/metrics"), EVERYONE),
    ("GET", "/openapi.json"): Row(PUBLIC, _get(lambda w: "/openapi.json"), EVERYONE),
    ("GET", "/wallet"): Row(PUBLIC, _get(lambda w: "/wallet"), EVERYONE),
    ("GET", "/console"): Row(PUBLIC, _get(lambda w: "/console"), EVERYONE),
    ("GET", "/static/{name}"): Row(PUBLIC, _get(lambda w: f"/static/{_static_name()}"),
                                   {role: _static_expected() for role in ROLES}),
    # The operator console: the operator signs in with its console token; nobody else holds one.
    ("GET", "/v1/ops/console/session"): Row(CONSOLE, _get(lambda w: "/v1/ops/console/session"), {"operator": 200}),
    ("GET", "/v1/ops/console/live"): Row(CONSOLE, _get(lambda w: "/v1/ops/console/live"), {"operator": 200}),
}


def test_every_route_has_a_row():
    """The matrix has exactly one row per route of the app, so a new route cannot go untested."""
    assert sorted((method, path) for method, path, _ in ROUTES) == sorted(MATRIX)


def _matches(answer: tuple[int, str | None], expected: Expected | tuple[Expected, ...]) -> bool:
    options = expected if isinstance(expected, tuple) and not isinstance(expected[1], str) else (expected,)
    for option in options:
        if isinstance(option, int) and answer[0] == option and 200 <= option < 300:
            return True
        if isinstance(option, tuple) and answer == option:
            return True
    return False


@pytest.fixture(scope="module")
async def world(home_redis, tmp_path_factory):
    """One gateway and its world for the whole matrix: rows that change things make their own."""
    root = tmp_path_factory.mktemp("matrix")
    settings = load_settings(env={}, **home_redis.settings, keyring_path=str(root / "keyring.json"),
                             data_dir=str(root / "redis"))
    redis = home_redis.client()
    await redis.flushall()  # what earlier modules left, as the store fixture does per test
    await redis.aclose()
    async with serving(settings) as gateway:
        yield await _world(gateway)


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
async def test_only_the_allowed_roles_get_through(world, route):
    """Each role calling the route gets its cell's answer: the allowed roles succeed, the others are refused."""
    row = MATRIX[route]
    expected = row.expected()
    answers = {}
    # The refused roles first: they meet the state as it was, untouched by an allowed call.
    for role in sorted(ROLES, key=lambda role: role in row.allowed):
        call = row.call(world, role)
        answers[role] = await _send(world, role, await call if inspect.isawaitable(call) else call, row.kind)
    wrong = {role: (answers[role], expected[role]) for role in ROLES if not _matches(answers[role], expected[role])}
    assert {} == wrong, "role: (answer, expected)"
