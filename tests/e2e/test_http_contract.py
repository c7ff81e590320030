"""The HTTP contract: validation problems, ops routes, metrics, the OpenAPI document against real responses, logs."""

from __future__ import annotations

import json
import logging
import secrets

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from gateway.app import ROUTES
from gateway.openapi import openapi_document

SALE_PATH = "/v1/payments"
DOC_URI = "urn:pointgate:openapi"


def sale(terminal, member_code: str = "941011234567890077743322", /, **changes):
    document = {"code": member_code, "amount": 1_000, "currency": "KRW", "order_ref": "ord-" + secrets.token_hex(6),
                "store_id": terminal.store_id, "terminal_id": terminal.terminal_id}
    for name, value in changes.items():
        if value is _DROP:
            document.pop(name)
        else:
            document[name] = value
    return document


_DROP = object()


# -- validation ---------------------------------------------------------------


@pytest.mark.parametrize("changes", [
    {"colour": "blue"},
    {"amount": "100"},
    {"amount": 0},
    {"amount": -5},
    {"amount": True},
    {"amount": 12.5},
    {"amount": None},
    {"currency": "krw"},
    {"currency": "KRWW"},
    {"order_ref": "POS 0042"},
    {"order_ref": ""},
    {"order_ref": "x" * 65},
    {"code": _DROP},
    {"amount": _DROP},
    {"store_id": _DROP},
    {"code": ""},
    {"code": 941011234567890077743322},
    {"coupon_codes": "WELCOME10"},
    {"coupon_codes": ["a", "b", "c", "d", "e", "f"]},
    {"line_items": [{"name": "milk", "quantity": 0, "unit_amount": 1000}]},
    {"line_items": [{"name": "milk", "quantity": 1, "unit_amount": 1000, "colour": "white"}]},
    {"store_id": "gs25 gangnam"},
], ids=lambda c: ",".join(f"{k}={'DROP' if v is _DROP else v!r}"[:40] for k, v in c.items()))
async def test_invalid_sale_is_invalid_request(gateway, changes):
    """A sale body that does not fit the schema is 422 invalid_request and moves nothing."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    status, problem, headers = await terminal.send("POST", SALE_PATH, sale(terminal, member.code(), **changes))
    assert (422, "invalid_request") == (status, problem["code"])
    assert headers["content-type"].startswith("application/problem+json")
    assert 5_000 == await gateway.balance(member)


@pytest.mark.parametrize("body", [b"{", b'{"amount": 1,}', b"not json", b"\xff\xfe\x00", b'{"code": "\\ud800"}'])
async def test_broken_json_is_invalid_json(gateway, body):
    """A body that is not JSON is 400 invalid_json."""
    terminal = await gateway.terminal()
    status, problem, _ = await terminal.send("POST", SALE_PATH, body=body)
    assert (400, "invalid_json") == (status, problem["code"])


@pytest.mark.parametrize("body", [b"[]", b"1", b'"sale"', b"null"])
async def test_json_that_is_not_an_object_is_invalid_request(gateway, body):
    """JSON that is not an object is 422 invalid_request."""
    terminal = await gateway.terminal()
    status, problem, _ = await terminal.send("POST", SALE_PATH, body=body)
    assert (422, "invalid_request") == (status, problem["code"])


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/jsonp"])
async def test_body_that_is_not_json_media_type_is_415(gateway, content_type):
    """A sale sent as another media type is 415 unsupported_media_type."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    body = json.dumps(sale(terminal, member.code())).encode()
    headers = terminal.headers("POST", SALE_PATH, body, "idem-" + secrets.token_hex(8), **{"Content-Type": content_type})
    status, problem, _ = await terminal.send("POST", SALE_PATH, body=body, headers=headers)
    assert (415, "unsupported_media_type") == (status, problem["code"])
    assert 5_000 == await gateway.balance(member)


async def test_json_with_charset_is_accepted(gateway):
    """application/json; charset=utf-8 is JSON."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    body = json.dumps(sale(terminal, member.code())).encode()
    headers = terminal.headers("POST", SALE_PATH, body, "idem-" + secrets.token_hex(8),
                               **{"Content-Type": "application/json; charset=utf-8"})
    status, payment, _ = await terminal.send("POST", SALE_PATH, body=body, headers=headers)
    assert (201, "approved") == (status, payment["status"])


async def test_body_over_the_limit_is_413(gateway, settings):
    """A body over body_bytes_max is 413 body_too_large as problem+json."""
    terminal = await gateway.terminal()
    document = sale(terminal, line_items=[])
    body = json.dumps(document).encode()
    body = body[:-1] + b"," + b'"pad":"' + b"x" * (settings.body_bytes_max - len(body)) + b'"}'
    assert len(body) > settings.body_bytes_max
    status, problem, headers = await terminal.send("POST", SALE_PATH, body=body)
    assert (413, "body_too_large") == (status, problem["code"])
    assert headers["content-type"].startswith("application/problem+json")


async def test_body_at_the_limit_is_read(gateway, settings):
    """A body of exactly body_bytes_max bytes is read (and refused for its content, not its size)."""
    terminal = await gateway.terminal()
    body = json.dumps(sale(terminal)).encode()
    body = body[:-1] + b',"pad":"' + b"x" * (settings.body_bytes_max - len(body) - 9) + b'"}'
    assert len(body) == settings.body_bytes_max
    status, problem, _ = await terminal.send("POST", SALE_PATH, body=body)
    assert (422, "invalid_request") == (status, problem["code"])


async def test_unknown_route_is_not_found(gateway):
    """An unknown route is 404 not_found as problem+json, with a request id."""
    terminal = await gateway.terminal()
    status, problem, headers = await terminal.send("GET", "/v2/payments")
    assert (404, "not_found") == (status, problem["code"])
    assert headers["content-type"].startswith("application/problem+json")
    assert headers["x-request-id"] == problem["request_id"]


@pytest.mark.parametrize(("method", "path"), [("DELETE", "/v1/payments"), ("PUT", "/v1/payments/pay_000aaaaaaaaaaaaaaaa"),
                                              ("POST", "/healthz"), ("GET", "/v1/reversals")])
async def test_wrong_method_is_method_not_allowed(gateway, method, path):
    """A route called with a method it does not take is 405 method_not_allowed."""
    terminal = await gateway.terminal()
    status, problem, headers = await terminal.send(method, path, body=b"")
    assert (405, "method_not_allowed") == (status, problem["code"])
    assert headers["content-type"].startswith("application/problem+json")


async def test_amount_above_maximum(gateway, settings):
    """An amount above amount_max_krw is 422 amount_above_maximum; exactly the maximum is allowed."""
    terminal, member = await gateway.terminal(), await gateway.member(points=settings.amount_max_krw + 1)
    status, problem, _ = await terminal.pay(member.code(), settings.amount_max_krw + 1)
    assert (422, "amount_above_maximum") == (status, problem["code"])
    status, payment, _ = await terminal.pay(member.code(), settings.amount_max_krw)
    assert (201, "approved") == (status, payment["status"])


async def test_twd_sale_at_a_krw_store_is_currency_mismatch(gateway):
    """A TWD sale at a GS25 (KRW) store is 422 currency_mismatch."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    status, problem, _ = await terminal.send("POST", SALE_PATH, sale(terminal, member.code(), currency="TWD"))
    assert (422, "currency_mismatch") == (status, problem["code"])
    assert 5_000 == await gateway.balance(member)


async def test_twd_sale_at_a_twd_store_is_not_supported_yet(gateway):
    """A TWD sale at FamilyMart Taiwan is 422 currency_not_supported until exchange rates exist."""
    terminal, member = await gateway.terminal("familymart-tw", "fm-taipei-101", "t1"), await gateway.member(points=5_000)
    status, problem, _ = await terminal.send("POST", SALE_PATH, sale(terminal, member.code(), currency="TWD"))
    assert (422, "currency_not_supported") == (status, problem["code"])


async def test_lookup_without_order_ref_is_invalid_request(gateway):
    """GET /v1/payments without ?order_ref is 422 invalid_request."""
    terminal = await gateway.terminal()
    status, problem, _ = await terminal.send("GET", "/v1/payments")
    assert (422, "invalid_request") == (status, problem["code"])


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=20,
)
_sale_like = st.fixed_dictionaries({}, optional={
    "code": st.one_of(st.text(max_size=70), st.from_regex(r"\A[0-9]{24}\Z"), _json_values),
    "amount": st.one_of(st.integers(min_value=-10, max_value=10**16), _json_values),
    "currency": st.one_of(st.sampled_from(["KRW", "TWD", "USD", "krw"]), _json_values),
    "order_ref": st.one_of(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:/-]{0,70}\Z"), _json_values),
    "store_id": st.one_of(st.sampled_from(["gs25-gangnam-01", "cu-jongno-01", "gs25-hongdae-02"]), _json_values),
    "terminal_id": st.one_of(st.sampled_from(["t1", "t2", "t3"]), _json_values),
    "coupon_codes": st.one_of(st.lists(st.text(max_size=45), max_size=7), _json_values),
    "line_items": st.one_of(st.lists(st.fixed_dictionaries({"name": st.text(max_size=90), "quantity": st.integers(),
                                                            "unit_amount": st.integers()}), max_size=3), _json_values),
})
_bodies = st.one_of(
    _sale_like.map(lambda d: json.dumps(d).encode()),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies)
async def test_arbitrary_signed_bodies_never_get_a_5xx(gateway, body):
    """Whatever JSON value or bytes a signed sale carries, the answer is never a 5xx."""
    terminal = gateway.__dict__.setdefault("_fuzz_terminal", None) or await gateway.terminal()
    gateway.__dict__["_fuzz_terminal"] = terminal
    status, document, headers = await terminal.send("POST", SALE_PATH, body=body)
    assert status < 500, (status, document)
    if status >= 400:
        assert headers["content-type"].startswith("application/problem+json")


# -- ops routes ------------------------------------------------------------------


async def _get(gateway, path: str):
    async with gateway.session.get(gateway.base_url + path) as response:
        return response.status, await response.read(), response.headers


async def test_healthz_and_readyz(gateway):
    """/healthz is 200; /readyz is 200 with redis true."""
    hs, hbody, _ = await _get(gateway, "/healthz")
    rs, rbody, _ = await _get(gateway, "/readyz")
    assert (200, "ok") == (hs, json.loads(hbody)["status"])
    assert (200, True, "ready") == (rs, json.loads(rbody)["redis"], json.loads(rbody)["status"])


async def test_metrics_after_a_sale_and_a_decline(gateway):
    """/metrics counts requests, times authorisations and counts declines by reason."""
    terminal, member = await gateway.terminal(), await gateway.member(points=1_000)
    await terminal.pay(member.code(), 500)
    await terminal.pay(member.code(), 5_000)
    status, body, headers = await _get(gateway, "/metrics")
    text = body.decode()
    assert 200 == status and headers["Content-Type"].startswith("text/plain")
    assert "pointgate_requests_total{" in text
    assert "pointgate_authorisation_duration_seconds_count 2.0" in text
    assert 'pointgate_declines_total{reason="insufficient_points"} 1.0' in text
    assert 'outcome="approved"' in text and 'status="201"' in text


# -- OpenAPI ---------------------------------------------------------------------


def _validator(schema):
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    document = openapi_document()
    registry = Registry().with_resource(DOC_URI, Resource.from_contents(document, default_specification=DRAFT202012))
    if "$ref" in schema and schema["$ref"].startswith("#"):
        schema = {"$ref": DOC_URI + schema["$ref"]}
    cls = jsonschema.validators.validator_for({"$schema": "https://json-schema.org/draft/2020-12/schema"})
    cls.check_schema(schema)
    return cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER)


def _response_schema(method: str, path: str, status: int):
    response = openapi_document()["paths"][path][method.lower()]["responses"][str(status)]
    (media,) = response["content"].values()
    return media["schema"]


def _assert_valid(method: str, path: str, status: int, document) -> None:
    errors = list(_validator(_response_schema(method, path, status)).iter_errors(document))
    assert [] == [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


async def test_openapi_document_lists_every_route(gateway):
    """/openapi.json is OpenAPI 3.1.0 and has every route of the app with its method."""
    status, body, _ = await _get(gateway, "/openapi.json")
    document = json.loads(body)
    assert (200, "3.1.0") == (status, document["openapi"])
    missing = [(m, p) for m, p, _ in ROUTES if m.lower() not in document["paths"].get(p, {})]
    assert [] == missing
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert documented == {(m, p) for m, p, _ in ROUTES}
    assert document == json.loads(json.dumps(openapi_document()))


def _examples():
    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                for media_type, media in response.get("content", {}).items():
                    for name, example in media.get("examples", {}).items():
                        yield pytest.param(method, path, status, media["schema"], example["value"],
                                           id=f"{method} {path} {status} {name}")


@pytest.mark.parametrize(("method", "path", "status", "schema", "value"), list(_examples()))
def test_every_documented_example_validates(method, path, status, schema, value):
    """Each example in the document validates against the schema it illustrates."""
    errors = list(_validator(schema).iter_errors(value))
    assert [] == [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def test_problem_examples_match_their_status():
    """Each problem example sits under the status its code has."""
    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                for media in response.get("content", {}).values():
                    for example in media.get("examples", {}).values():
                        if "code" in example["value"] and "status" in example["value"]:
                            assert int(status) == example["value"]["status"], (method, path, example["value"]["code"])


def test_request_schemas_accept_a_real_request_and_refuse_unknown_fields():
    """The documented SaleRequest schema accepts a real sale and refuses an unknown field, like the handler."""
    schema = openapi_document()["paths"]["/v1/payments"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    good = {"code": "941011234567890077743322", "amount": 1200, "currency": "KRW", "order_ref": "A-1001",
            "store_id": "gs25-gangnam-01", "terminal_id": "t1"}
    assert [] == list(_validator(schema).iter_errors(good))
    assert [] != list(_validator(schema).iter_errors(good | {"colour": "blue"}))
    assert [] != list(_validator(schema).iter_errors(good | {"amount": 0}))


async def test_real_responses_validate_against_their_schemas(gateway):
    """Real approved and declined sales, a GET, a refund, a reversal, a batch close and a problem fit the document."""
    terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
    s1, approved, _ = await terminal.pay(member.code(), 4_000, order_ref="OAS-1")
    s2, declined, _ = await terminal.pay(member.code(), 50_000)
    s3, refund, _ = await terminal.send("POST", f"/v1/payments/{approved['payment_id']}/refunds", {"amount": 1_000, **terminal.here()})
    s4, fetched, _ = await terminal.send("GET", f"/v1/payments/{approved['payment_id']}")
    s5, found, _ = await terminal.send("GET", "/v1/payments?order_ref=OAS-1")
    s6, cancelled_sale, _ = await terminal.pay(member.code(), 500)
    s7, cancelled, _ = await terminal.send("POST", f"/v1/payments/{cancelled_sale['payment_id']}/cancel", terminal.here())
    s8, reversal, _ = await terminal.send("POST", "/v1/reversals", {"order_ref": "OAS-1", **terminal.here()})
    s9, early, _ = await terminal.send("POST", "/v1/reversals", {"order_ref": "OAS-NEVER", **terminal.here()})
    s10, batch, _ = await terminal.send("POST", "/v1/terminals/t1/batches", {"store_id": terminal.store_id, "sale_count": 3, "sale_amount": 1})
    s11, problem, _ = await terminal.send("POST", f"/v1/payments/{approved['payment_id']}/refunds", {"amount": 1, **terminal.here()})
    terminal.clock_offset_s = -1000
    s12, clock, _ = await terminal.pay(member.code(), 1)
    assert (201, 201, 201, 200, 200, 201, 200, 200, 200, 200, 409, 401) == (s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12)
    _assert_valid("post", "/v1/payments", 201, approved)
    _assert_valid("post", "/v1/payments", 201, declined)
    _assert_valid("post", "/v1/payments/{payment_id}/refunds", 201, refund)
    _assert_valid("get", "/v1/payments/{payment_id}", 200, fetched)
    _assert_valid("get", "/v1/payments", 200, found)
    _assert_valid("post", "/v1/payments/{payment_id}/cancel", 200, cancelled)
    _assert_valid("post", "/v1/reversals", 200, reversal)
    _assert_valid("post", "/v1/reversals", 200, early)
    _assert_valid("post", "/v1/terminals/{terminal_id}/batches", 200, batch)
    _assert_valid("post", "/v1/payments/{payment_id}/refunds", 409, problem)
    _assert_valid("post", "/v1/payments", 401, clock)


async def test_real_responses_have_exactly_the_documented_fields(gateway):
    """A real payment has exactly the documented Payment fields, no more, no fewer."""
    terminal, member = await gateway.terminal(), await gateway.member(points=10_000)
    _, approved, _ = await terminal.pay(member.code(), 1_000)
    _, fetched, _ = await terminal.send("GET", f"/v1/payments/{approved['payment_id']}")
    schemas = openapi_document()["components"]["schemas"]
    assert set(schemas["Payment"]["properties"]) == set(approved)
    assert set(schemas["PaymentWithRefunds"]["properties"]) == set(fetched)
    assert set(schemas["Payment"]["required"]) == set(approved)


# -- access log ---------------------------------------------------------------------


async def test_access_log_has_one_line_per_request_without_secrets(gateway, caplog):
    """A sale writes one access line with request id and status, never the code or the signature."""
    terminal, member = await gateway.terminal(), await gateway.member(points=5_000)
    code = member.code()
    body = json.dumps(sale(terminal, code)).encode()
    headers = terminal.headers("POST", SALE_PATH, body, "idem-" + secrets.token_hex(8))
    caplog.set_level(logging.INFO, logger="pointgate.access")
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    status, payment, response_headers = await terminal.send("POST", SALE_PATH, body=body, headers=headers)
    again, problem, again_headers = await terminal.send("POST", SALE_PATH, body=body, headers=headers)
    lines = [r for r in caplog.records if r.name == "pointgate.access"]
    assert (201, 401, 2) == (status, again, len(lines))
    first, second = (json.loads(r.getMessage()) for r in lines)
    assert (response_headers["x-request-id"], 201, "approved", "gs25") == (first["request_id"], first["status"], first["outcome"], first["merchant_id"])
    assert (again_headers["x-request-id"], 401, "nonce_replayed") == (second["request_id"], second["status"], second["outcome"])
    everything = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert code not in everything
    assert headers["X-PG-Signature"] not in everything
    assert terminal.secret not in everything
