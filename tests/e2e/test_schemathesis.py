"""Schemathesis against /openapi.json: every operation, every check, signed the way a terminal signs.

The gateway runs in a thread of its own (schemathesis sends with `requests`, which blocks), over
the real Redis, with the bank simulator for cash-outs. `PointgateAuth` signs each generated
request exactly as `Terminal.headers` does (docs/signing.md: a fresh nonce and timestamp, over
the bytes and request target that are sent), with the key of the role the route is for, and puts
a member's real bearer token on member routes. Path parameters that name a member, a device or a
payment are pointed at real ones in positive cases, so generated requests get past "not found".

`make test` runs POINTGATE_SCHEMATHESIS_EXAMPLES (default 5) generated examples per operation
on top of the schema's examples and schemathesis's coverage cases; `make soak-api` runs many more.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings as hsettings
from schemathesis.core.parameters import ParameterLocation

from gateway import signing
from gateway.app import MEMBERS, MERCHANTS, TOKENS
from gateway.openapi import _operations, openapi_document
from gateway.settings import load_settings
from gateway.store import ClusterAccess, connect
from gateway.tokens import Enrolment
from gateway.web import WEB_UI
from simulators.bank import Bank
from tests.e2e.conftest import Member, serving

EXAMPLES = int(os.environ.get("POINTGATE_SCHEMATHESIS_EXAMPLES", "5"))
"""Generated examples per operation: a few in `make test`, hundreds in `make soak-api`."""
STARTUP_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 10.0  # a request that takes longer is a hang, and schemathesis reports it

BANK_API_KEY = "schemathesis-bank-" + "0" * 12
STORE_ID, TERMINAL_ID = "gs25-gangnam-01", "t1"
"""The store and terminal the merchant's positive bodies name (merchants.toml)."""

SCHEMA_PROBLEMS = ("invalid_json", "invalid_request", "unsupported_media_type", "idempotency_key_missing")
"""What the gateway answers for a request that breaks the document's own rules (invalid_request
also covers rules the document cannot state, such as a campaign that must end in the future)."""

# A request that fits the document can still break a rule of the business (the store's currency,
# the largest payment, the smallest cash-out, a reused idempotency key): the API answers those 422
# with their own codes, so 422 is an accepted answer to schema-valid data. What the document
# promises is narrower, and `schema_valid_request_passes_validation` below holds it to that.
CONFIG = schemathesis.Config.from_dict({
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422"]}},
})


def _is_event_stream(ctx) -> bool:
    # A live feed is a stream that does not end while its client is connected; a client that
    # reads a response to its end cannot test it. Their auth is in test_authorization_matrix.py.
    responses = ctx.operation.definition.raw.get("responses", {})
    return any("text/event-stream" in (response.get("content") or {}) for response in responses.values())


schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG).exclude(func=_is_event_stream)


# -- credentials and the live gateway ---------------------------------------------


@dataclass
class Credentials:
    keys: dict[str, tuple[str, str]]
    """Role's signing principal id -> (key id, secret)."""
    member_id: str
    token: str
    """The member's bearer token."""
    console_token: str
    """The operator's console token."""
    slot: int
    payment_id: str


SIGNER_BY_PREFIX = (
    ("/v1/interop/", "taishin"),
    ("/v1/earnings", "hana-card"),
    ("/v1/campaigns", "ops"),
    ("/v1/payments", "gs25"),
    ("/v1/reversals", "gs25"),
    ("/v1/terminals/", "gs25"),
)
"""Which principal signs a route: a partner network its interop calls, an affiliate its earnings,
an operator the campaigns and a merchant's terminal the rest."""


class PointgateAuth(requests.auth.AuthBase):
    """Signs a prepared request the way `Terminal.headers` does, or puts the member's token on it.

    requests calls this after the body and the URL are final, so the signature covers exactly the
    bytes and the request target that go on the wire. A generated case carries a placeholder for
    its credential (the document's security scheme); only a request that has one gets the real
    credential, so the cases schemathesis makes without it go without and must be refused.
    Schemathesis's own probes for ignored auth are sent without this class at all.
    """

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        path = request.path_url
        route = urlsplit(path).path
        bearer = next((token for prefix, token in (("/v1/members/", self.credentials.token), ("/v1/me", self.credentials.token),
                                                   ("/v1/ops/console/", self.credentials.console_token))
                       if route == prefix or route.startswith(prefix)), None)
        if bearer is not None:
            if "Authorization" in request.headers:
                request.headers["Authorization"] = "Bearer " + bearer
            return request
        signer = next((who for prefix, who in SIGNER_BY_PREFIX if route.startswith(prefix)), None)
        if signer is None or signing.HEADER_SIGNATURE not in request.headers:
            return request
        key_id, secret = self.credentials.keys[signer]
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        try:
            headers = signing.signed_headers(secret, request.method, path, body, signer, key_id, time.time(),
                                             secrets.token_hex(12))
        except ValueError:
            return request  # a target no signature can cover (not ASCII): sent as generated, must be refused
        request.headers.update(headers)
        return request


class LiveGateway:
    """The gateway and the bank simulator on loopback ports, served by an event loop in a thread."""

    def __init__(self, settings_of: Any) -> None:
        self.settings_of = settings_of
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.url = ""
        self.credentials: Credentials | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="live-gateway", daemon=True)

    def __enter__(self) -> LiveGateway:
        self._thread.start()
        if not self.ready.wait(STARTUP_TIMEOUT_S):
            raise RuntimeError("the gateway did not start")
        if self.failure is not None:
            raise self.failure
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STARTUP_TIMEOUT_S)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # handed to the test thread
            self.failure = e
            self.ready.set()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with Bank(api_key=BANK_API_KEY) as bank:
            settings = self.settings_of(bank.url)
            redis = connect(settings.redis_url, socket_timeout_s=5, cluster=ClusterAccess.from_settings(settings))
            await redis.flushall()  # what earlier modules left, as the store fixture does per test
            await redis.aclose()
            async with serving(settings) as gateway:
                await self._hold(gateway)

    async def _hold(self, gateway) -> None:
        self.credentials = await _credentials(gateway)
        self.url = gateway.base_url
        self.ready.set()
        assert self._stop is not None
        await self._stop.wait()


async def _credentials(gateway) -> Credentials:
    registry = gateway.app[MERCHANTS]
    await registry.create_merchant("ops", "Operations", "KRW", "Asia/Seoul", "00:00", 42, role="operator")
    keys = {who: tuple(await registry.issue_key(who)) for who in ("gs25", "taishin", "hana-card", "ops")}
    enrolled = await gateway.app[MEMBERS].enrol_member()
    device = enrolled["device"]
    secret = base64.b32decode(device["secret_b32"] + "=" * (-len(device["secret_b32"]) % 8))
    member = Member(enrolled["member_id"], Enrolment(enrolled["member_id"], device["slot"], secret, device["provisioning_uri"]),
                    gateway.app[TOKENS].home.prefix)
    await gateway.ledger.credit(member.member_id, 10_000_000, "affiliate:hana-card", "seed-" + member.member_id, "HMP")
    terminal = await gateway.terminal("gs25", STORE_ID, TERMINAL_ID, key=keys["gs25"])
    status, payment, _ = await terminal.pay(member.code(), 5_000)
    assert (201, "approved") == (status, payment["status"]), payment
    console_token, _ = await gateway.app[WEB_UI].operator_tokens.issue("ops")
    return Credentials(keys, member.member_id, enrolled["token"], console_token, device["slot"], payment["payment_id"])


@pytest.fixture(scope="module")
def live(home_redis, tmp_path_factory):
    root: Path = tmp_path_factory.mktemp("schemathesis")

    def settings_of(bank_url: str):
        return load_settings(env={}, **home_redis.settings, keyring_path=str(root / "keyring.json"),
                             data_dir=str(root / "redis"), bank_url=bank_url, bank_api_key=BANK_API_KEY,
                             settle_interval_s=0.0)

    with LiveGateway(settings_of) as running:
        yield running


# -- the test ---------------------------------------------------------------------


REAL_PATH_PARAMETERS = ("member_id", "slot", "payment_id")


def aim_at_real_resources(case, credentials: Credentials) -> None:
    """In the positive parts of a case, name the real member, device, payment, store and terminal.

    Only values the schema allows are swapped for other allowed values, so a positive part stays
    positive and a negative part is left as generated.
    """
    meta = case.meta
    if meta is None:
        return
    real = {"member_id": credentials.member_id, "slot": str(credentials.slot), "payment_id": credentials.payment_id}
    if not meta.is_negative_at(ParameterLocation.PATH):
        for name in REAL_PATH_PARAMETERS:
            if name in (case.path_parameters or {}):
                case.path_parameters[name] = real[name]
    if not meta.is_negative_at(ParameterLocation.BODY) and isinstance(case.body, dict):
        if "store_id" in case.body:
            case.body["store_id"] = STORE_ID
        if "terminal_id" in case.body:
            case.body["terminal_id"] = TERMINAL_ID
        if "member_id" in case.body:
            case.body["member_id"] = credentials.member_id
    if not meta.is_negative_at(ParameterLocation.HEADER) and isinstance(case.headers, dict) \
            and "Idempotency-Key" in case.headers:
        # Hypothesis likes to draw the same few keys; a fresh one per request reaches the operation
        # instead of answering idempotency_mismatch for every body after the first.
        case.headers["Idempotency-Key"] = "st-" + secrets.token_hex(12)


REQUEST_TYPES = {(op[0].upper(), op[1]): op[3] for op in _operations() if op[3] is not None}
"""The msgspec type each operation's handler decodes its body with (the document's own source)."""


def _problem_code(response) -> str | None:
    if not response.headers.get("content-type", [""])[0].startswith("application/problem+json"):
        return None
    return response.json().get("code")


def _integers_as_literals(sent: bytes | str) -> bytes:
    """The body with 580.0 written 580.

    JSON Schema counts 580.0 as an integer; the gateway takes integers only as integer literals
    (no floats anywhere, DESIGN.md 4), and the document says so. That one difference no schema
    can state is the only one tolerated here.
    """
    def number(text: str) -> int | float:
        exact = Decimal(text)
        return int(exact) if exact == exact.to_integral_value() else float(text)

    return json.dumps(json.loads(sent, parse_float=number)).encode()


@schemathesis.check
def schema_valid_request_passes_validation(ctx, response, case) -> bool | None:
    """What the document allows, the gateway's validation allows: the document is as strict as the handlers.

    A body generated to fit the document decodes with the handler's own msgspec type; a request
    is never refused as unreadable; and an operation without a body, whose every rule is in its
    parameters' schemas, never answers invalid_request to parameters that fit them.
    """
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    request_type = REQUEST_TYPES.get((case.method.upper(), case.path))
    sent = response.request.body
    if request_type is not None and sent:
        try:
            msgspec.json.decode(_integers_as_literals(sent), type=request_type)
        except msgspec.ValidationError as e:
            raise AssertionError(f"the document allows a body that {request_type.__name__} refuses: {e}") from None
    code = _problem_code(response)
    if code in SCHEMA_PROBLEMS and (code != "invalid_request" or request_type is None):
        raise AssertionError(f"a request that fits the document was refused as {code}: {response.json()['detail']}")
    return True


@schema.parametrize()
@hsettings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_api_conforms_to_its_openapi_document(case, live):
    """Every generated request, valid or not, gets a documented answer that matches the schema, and never a 5xx."""
    assert live.credentials is not None
    aim_at_real_resources(case, live.credentials)
    case.call_and_validate(base_url=live.url, auth=PointgateAuth(live.credentials), timeout=REQUEST_TIMEOUT_S,
                          additional_checks=[schema_valid_request_passes_validation])

