"""Fuzz the gateway's JSON request decoding: every request type, any bytes, any content type.

`gateway.app.decode_json`'s docstring: it raises Problem unsupported_media_type, invalid_json
or invalid_request, and nothing else; what it returns is an instance of the type asked for.

    python -m fuzz.json_requests [libFuzzer options]
"""

from __future__ import annotations

from gateway.app import EnrolRequest, decode_json
from gateway.openapi import _operations
from gateway.problems import Problem

REQUEST_TYPES = tuple(sorted({op[3] for op in _operations() if op[3] is not None} | {EnrolRequest}, key=lambda t: t.__name__))
"""Every type a handler decodes a body with: the OpenAPI document's request bodies, and enrolment's."""
CONTENT_TYPES = ("application/json", "text/plain", "application/x-www-form-urlencoded", "")
CODES = frozenset({"unsupported_media_type", "invalid_json", "invalid_request"})
SEEDS = (b"{}", b'{"amount": 1}', b'{"code": "941011234567890077743322", "amount": 1200, "currency": "KRW", '
         b'"order_ref": "A-1", "store_id": "s", "terminal_id": "t"}', b"[", b"null")
BODY_BYTES_MAX = 512


def check(body: bytes, content_type: str, kind: type, required: bool) -> None:
    try:
        decoded = decode_json(body, content_type, kind, required)
    except Problem as e:
        assert e.code in CODES, e.code
        return
    assert isinstance(decoded, kind), decoded


def one_input(data: bytes) -> None:
    import atheris

    provider = atheris.FuzzedDataProvider(data)
    kind = REQUEST_TYPES[provider.ConsumeIntInRange(0, len(REQUEST_TYPES) - 1)]
    content_type = CONTENT_TYPES[0] if provider.ConsumeProbability() < 0.9 else \
        CONTENT_TYPES[provider.ConsumeIntInRange(0, len(CONTENT_TYPES) - 1)]
    required = provider.ConsumeBool()
    if provider.ConsumeBool():
        seed = SEEDS[provider.ConsumeIntInRange(0, len(SEEDS) - 1)]
        cut = provider.ConsumeIntInRange(0, len(seed))
        body = seed[:cut] + provider.ConsumeBytes(provider.ConsumeIntInRange(0, 32)) + seed[cut:]
    else:
        body = provider.ConsumeBytes(provider.ConsumeIntInRange(0, BODY_BYTES_MAX))
    check(body, content_type, kind, required)


def main() -> None:
    from fuzz._runner import run

    run(one_input)


if __name__ == "__main__":
    main()
