"""The fuzz harnesses' contracts, run with Hypothesis: each parser raises only what its docstring says.

`make fuzz` runs the same `check` functions (fuzz/*.py) under atheris for minutes; these are the
short runs of `make test`, with inputs shaped like what reaches each parser (digits near 24,
scanner noise, well-formed and broken signature headers, JSON near the request types).
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings, strategies as st

from fuzz import codes_parser, json_requests, scanner_input, signature_headers

EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

digits = st.text(alphabet="0123456789", min_size=0, max_size=30)
code_like = st.one_of(digits, st.text(max_size=codes_parser.CODE_CHARS_MAX),
                      st.builds(lambda d, c, i: d[:i] + c + d[i:], st.text("0123456789", min_size=24, max_size=24),
                                st.characters(), st.integers(0, 24)))


@EXAMPLES
@given(code_like)
def test_the_code_parser_parses_or_raises_code_format_error(text):
    """Any text parses into the fields it spells, or raises CodeFormatError with a documented reason."""
    codes_parser.check(text)


@EXAMPLES
@given(st.lists(st.one_of(st.sampled_from(scanner_input.NOISE), digits, st.text(max_size=40)), max_size=6).map("".join)
       | st.text(min_size=250, max_size=scanner_input.RAW_CHARS_MAX))
def test_the_scanner_classifies_any_text_and_raises_only_scanner_error(raw):
    """classify never raises for a str; parse_payment_code returns a valid code or raises ScannerError."""
    scanner_input.check(raw)


header_names = st.sampled_from(list(signature_headers.VALID)).flatmap(
    lambda name: st.sampled_from([name, name.lower(), name.upper()])) | st.text(max_size=20)
header_values = st.one_of(st.sampled_from(list(signature_headers.VALID.values())), st.text(max_size=signature_headers.VALUE_CHARS_MAX),
                          st.text("0123456789abcdef", min_size=63, max_size=65))


@EXAMPLES
@given(pairs=st.lists(st.tuples(header_names, header_values), max_size=8)
       | st.lists(st.sampled_from(list(signature_headers.VALID.items())), min_size=4, max_size=7),
       method=st.sampled_from(["POST", "GET", "post"]) | st.text(max_size=8),
       raw_path=st.sampled_from(["/v1/payments", "/v1/payments?order_ref=A%2F1"]) | st.text(max_size=40),
       body=st.binary(max_size=64), known_key=st.booleans(), sign_it=st.booleans())
def test_the_signature_headers_parse_and_verify_or_raise_signature_error(pairs, method, raw_path, body, known_key, sign_it):
    """Parsing and verifying any headers for any request raises only SignatureError; a genuine signature passes."""
    signature_headers.check(pairs, method, raw_path, body, known_key, sign_it)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
                           max_leaves=12)
field_names = st.sampled_from(["code", "amount", "currency", "order_ref", "store_id", "terminal_id", "member_id", "points",
                               "reason", "partner_ref", "campaign_id", "discount", "movements", "expires_at"])
request_like = st.dictionaries(field_names, json_values, max_size=8).map(lambda d: json.dumps(d).encode())
bodies = st.one_of(request_like, st.binary(max_size=json_requests.BODY_BYTES_MAX), st.sampled_from(json_requests.SEEDS),
                   request_like.flatmap(lambda b: st.integers(0, len(b)).map(lambda i: b[:i])))


@EXAMPLES
@given(body=bodies, content_type=st.sampled_from(json_requests.CONTENT_TYPES),
       kind=st.sampled_from(json_requests.REQUEST_TYPES), required=st.booleans())
def test_the_json_decoder_returns_the_type_or_raises_a_documented_problem(body, content_type, kind, required):
    """Any body for any request type decodes into that type or is Problem unsupported_media_type, invalid_json or invalid_request."""
    json_requests.check(body, content_type, kind, required)
