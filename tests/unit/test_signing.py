"""Request signatures (`gateway.signing`): the published examples, tampering, the clock window, headers.

The worked examples and snippets come from docs/signing.md, parsed here, so
the published scheme and the implementation cannot drift apart.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from gateway.signing import (
    HEADER_KEY_ID,
    HEADER_MERCHANT,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    NONCE_REPLAYED,
    NONCE_TTL_S,
    SIGNATURE_HEADERS,
    TIMESTAMP_WINDOW_S,
    SignatureError,
    SignatureHeaders,
    body_sha256,
    canonical_request,
    check_signature,
    parse_signature_headers,
    sign,
    signed_headers,
)

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "signing.md"
SECRET = "pgsk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
OTHER_SECRET = "pgsk_HxwdHh8AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBk"
NOW_S = 1_800_000_000
NONCE = "n0nce-for-unit-tests_01"
BODY = b'{"order_ref":"A-1","amount":1200}'
PATH = "/v1/payments?order_ref=A%2F1&store_id=gs25-gangnam-01"


def _headers(**overrides: object) -> dict[str, str]:
    """Signed headers of the standard test request, with any argument replaced."""
    args: dict[str, object] = dict(
        secret=SECRET, method="POST", raw_path=PATH, body=BODY, merchant_id="gs25",
        key_id="gs25-k1", now_s=NOW_S, nonce=NONCE,
    )
    args.update(overrides)
    return signed_headers(**args)  # type: ignore[arg-type]


def _check(headers: dict[str, str], method: str = "POST", raw_path: str = PATH, body: bytes = BODY,
           secret: str | None = SECRET, now_s: float = NOW_S) -> None:
    check_signature(parse_signature_headers(headers), method, raw_path, body, secret, now_s)


def _code(headers: dict[str, str], **kwargs: object) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        _check(headers, **kwargs)  # type: ignore[arg-type]
    return caught.value


def _parse_error(headers: dict[str, str]) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        parse_signature_headers(headers)
    return caught.value


# The published examples


def _doc_examples() -> list[dict[str, str]]:
    text = DOC_PATH.read_text(encoding="utf-8")
    examples = []
    for section in re.split(r"\n### ", text)[1:]:
        if not section.startswith("Example"):
            continue
        example = {}
        for line in section.splitlines():
            row = re.fullmatch(r"\| ([a-z][a-z ]*[a-z]) \| `([^`]*)` \|", line)
            if row:
                example[row[1]] = row[2]
        for block in re.finditer(r"\*\*(?P<label>[^*]+)\*\*[^\n]*\n\n```[a-z]*\n(?P<content>.*?)\n```", section, re.S):
            example[block["label"].lower()] = block["content"]
        size = re.search(r"\*\*Body\*\*, (\d+) bytes", section)
        example["body bytes"] = size[1] if size else "0"
        examples.append(example)
    return examples


def _doc_snippet(language: str) -> str:
    text = DOC_PATH.read_text(encoding="utf-8")
    section = text.split("\n## Computing it yourself\n", 1)[1]
    return re.search(rf"```{language}\n(.*?)\n```", section, re.S)[1]  # type: ignore[index]


DOC_EXAMPLES = _doc_examples()
POST_EXAMPLE = next(e for e in DOC_EXAMPLES if e["method"] == "POST")


def _doc_body(example: dict[str, str]) -> bytes:
    return example.get("body", "").encode("utf-8")


def test_the_document_has_a_post_and_a_get_with_a_query() -> None:
    """docs/signing.md works through a POST with a body and a GET with a query string, every part shown."""
    assert ["POST", "GET"] == [e["method"] for e in DOC_EXAMPLES]
    parts = {"secret", "merchant id", "key id", "timestamp", "nonce", "method", "path and query",
             "body sha-256", "canonical request", "signature", "request"}
    for example in DOC_EXAMPLES:
        assert set() == parts - set(example)
    assert "?" in DOC_EXAMPLES[1]["path and query"]
    assert "" == _doc_body(DOC_EXAMPLES[1]).decode()


@pytest.mark.parametrize("example", DOC_EXAMPLES, ids=lambda e: e["method"])
def test_each_example_reproduces_body_hash_canonical_string_and_signature(example: dict[str, str]) -> None:
    """The body hash, canonical request and signature in the document follow from its inputs."""
    body = _doc_body(example)
    timestamp = int(example["timestamp"])
    args = (example["method"], example["path and query"], timestamp, example["nonce"],
            example["merchant id"], example["key id"], body)
    assert int(example["body bytes"]) == len(body)
    assert example["body sha-256"] == body_sha256(body)
    assert example["canonical request"] == canonical_request(*args)
    assert example["signature"] == sign(example["secret"], *args)


@pytest.mark.parametrize("example", DOC_EXAMPLES, ids=lambda e: e["method"])
def test_each_example_request_is_what_signed_headers_sends_and_is_accepted(example: dict[str, str]) -> None:
    """The request shown carries exactly signed_headers' five headers, and the verifier accepts it."""
    lines = example["request"].splitlines()
    request_line = f"{example['method']} {example['path and query']} HTTP/1.1"
    assert request_line == lines[0]
    headers = dict(line.split(": ", 1) for line in lines[1:])
    body = _doc_body(example)
    expected = signed_headers(example["secret"], example["method"], example["path and query"], body,
                              example["merchant id"], example["key id"], int(example["timestamp"]), example["nonce"])
    assert expected == {name: headers[name] for name in SIGNATURE_HEADERS}
    parsed = parse_signature_headers(headers)
    check_signature(parsed, example["method"], example["path and query"], body, example["secret"],
                    int(example["timestamp"]))


def test_the_example_secret_has_the_issued_form() -> None:
    """The document's secret is pgsk_ plus 43 characters of base64url, like an issued one."""
    assert re.fullmatch(r"pgsk_[A-Za-z0-9_-]{43}", POST_EXAMPLE["secret"])
    assert SECRET == POST_EXAMPLE["secret"]


def test_the_python_snippet_prints_the_example_signature() -> None:
    """The document's stand-alone Python snippet prints Example 1's signature."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_doc_snippet("python"), str(DOC_PATH), "exec"), {})
    assert POST_EXAMPLE["signature"] + "\n" == out.getvalue()


@pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("sh") is None, reason="needs sh and openssl")
def test_the_shell_snippet_prints_the_example_signature() -> None:
    """The document's openssl snippet prints Example 1's signature."""
    result = subprocess.run(["sh", "-c", _doc_snippet("sh")], capture_output=True, text=True, timeout=30, check=True)
    assert POST_EXAMPLE["signature"] + "\n" == result.stdout


def test_the_document_states_the_window_and_the_nonce_lifetime() -> None:
    """The document's 300 s window and 600 s nonce memory are the constants the code uses."""
    text = DOC_PATH.read_text(encoding="utf-8")
    assert (300, 600) == (TIMESTAMP_WINDOW_S, NONCE_TTL_S)
    assert "more than 300 s before or after" in text
    assert "for 600 s, twice the window" in text
    assert f"| `{NONCE_REPLAYED}` |" in text


# Signing and verifying


def test_a_signed_request_is_accepted() -> None:
    """A request signed by signed_headers passes check_signature with the same secret and time."""
    _check(_headers())


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    path=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=80),
    body=st.binary(max_size=300),
    nonce=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=16, max_size=64),
    skew_s=st.integers(min_value=-TIMESTAMP_WINDOW_S, max_value=TIMESTAMP_WINDOW_S),
)
def test_any_signed_request_is_accepted_inside_the_window(
    method: str, path: str, body: bytes, nonce: str, skew_s: int
) -> None:
    """Whatever the method, path, body and nonce, a signed request verifies while its clock is in the window."""
    headers = signed_headers(SECRET, method, "/" + path, body, "gs25", "gs25-k1", NOW_S + skew_s, nonce)
    check_signature(parse_signature_headers(headers), method, "/" + path, body, SECRET, NOW_S)


def test_the_method_is_signed_in_upper_case() -> None:
    """A method given in lower case signs the same canonical request as in upper case."""
    assert sign(SECRET, "POST", PATH, NOW_S, NONCE, "gs25", "gs25-k1", BODY) == sign(
        SECRET, "post", PATH, NOW_S, NONCE, "gs25", "gs25-k1", BODY)


def test_a_fractional_clock_signs_its_whole_second() -> None:
    """signed_headers stamps floor(now_s); the verifier floors its own clock the same way."""
    headers = _headers(now_s=NOW_S + 0.999)
    assert str(NOW_S) == headers[HEADER_TIMESTAMP]
    _check(headers, now_s=NOW_S + TIMESTAMP_WINDOW_S + 0.999)


@pytest.mark.parametrize(
    ("part", "request_as_received"),
    [
        ("method", dict(method="PUT")),
        ("path", dict(raw_path="/v1/refunds?order_ref=A%2F1&store_id=gs25-gangnam-01")),
        ("query", dict(raw_path="/v1/payments?order_ref=A%2F2&store_id=gs25-gangnam-01")),
        ("query order", dict(raw_path="/v1/payments?store_id=gs25-gangnam-01&order_ref=A%2F1")),
        ("query re-encoded", dict(raw_path="/v1/payments?order_ref=A/1&store_id=gs25-gangnam-01")),
        ("body", dict(body=b'{"order_ref":"A-1","amount":9200}')),
        ("body with a trailing newline", dict(body=BODY + b"\n")),
        ("no body", dict(body=b"")),
        ("secret", dict(secret=OTHER_SECRET)),
    ],
)
def test_a_changed_request_is_a_bad_signature(part: str, request_as_received: dict[str, object]) -> None:
    """Changing the method, path, query or body after signing, or verifying with another secret, is bad_signature."""
    assert "bad_signature" == _code(_headers(), **request_as_received).code


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (HEADER_TIMESTAMP, str(NOW_S + 1)),
        (HEADER_NONCE, NONCE[:-1] + "2"),
        (HEADER_KEY_ID, "gs25-k2"),
        (HEADER_MERCHANT, "cu"),
        (HEADER_SIGNATURE, "0" * 64),
    ],
)
def test_a_changed_header_is_a_bad_signature(header: str, value: str) -> None:
    """Changing the timestamp (inside the window), nonce, key id, merchant id or signature is bad_signature."""
    headers = _headers()
    assert value != headers[header]
    headers[header] = value
    assert "bad_signature" == _code(headers).code


def test_a_signature_with_one_flipped_digit_is_bad() -> None:
    """A signature differing from the right one in its last hex digit is bad_signature."""
    headers = _headers()
    last = headers[HEADER_SIGNATURE][-1]
    headers[HEADER_SIGNATURE] = headers[HEADER_SIGNATURE][:-1] + ("0" if last != "0" else "1")
    assert "bad_signature" == _code(headers).code


def test_an_unknown_or_revoked_key_is_unknown_key() -> None:
    """With no secret for the key id (never issued, or revoked), the request is unknown_key, naming the key."""
    error = _code(_headers(), secret=None)
    assert "unknown_key" == error.code
    assert "gs25-k1" in error.message


def test_a_non_ascii_path_is_a_bad_signature() -> None:
    """A request path that is not ASCII can match no signature: bad_signature, not a crash."""
    assert "bad_signature" == _code(_headers(), raw_path="/v1/payments?order_ref=가").code


# The clock window


@pytest.mark.parametrize("skew_s", [-TIMESTAMP_WINDOW_S, -1, 0, 1, TIMESTAMP_WINDOW_S])
def test_a_timestamp_up_to_300_s_off_is_accepted(skew_s: int) -> None:
    """A request stamped up to 300 s before or after the server's clock is accepted."""
    _check(_headers(now_s=NOW_S + skew_s), now_s=NOW_S)


@pytest.mark.parametrize("skew_s", [-TIMESTAMP_WINDOW_S - 1, TIMESTAMP_WINDOW_S + 1, -86_400, 10**9])
def test_a_timestamp_more_than_300_s_off_is_rejected_with_the_server_time(skew_s: int) -> None:
    """A request stamped 301 s or more off is timestamp_out_of_window, carrying the server's time."""
    error = _code(_headers(now_s=NOW_S + skew_s), now_s=NOW_S)
    assert ("timestamp_out_of_window", NOW_S) == (error.code, error.server_time_s)
    assert str(NOW_S) in error.message


def test_the_clock_is_checked_before_the_key() -> None:
    """An out-of-window request with an unknown key is reported as timestamp_out_of_window."""
    assert "timestamp_out_of_window" == _code(_headers(now_s=NOW_S - 301), secret=None).code


def test_only_the_window_error_carries_a_server_time() -> None:
    """bad_signature and unknown_key leave server_time_s unset."""
    assert (None, None) == (_code(_headers(), secret=OTHER_SECRET).server_time_s,
                            _code(_headers(), secret=None).server_time_s)


def test_the_nonce_is_kept_for_twice_the_window() -> None:
    """NONCE_TTL_S covers the 600 s during which a copy of a request could pass the clock check."""
    assert 2 * TIMESTAMP_WINDOW_S == NONCE_TTL_S


# Headers


@pytest.mark.parametrize("header", SIGNATURE_HEADERS)
def test_a_missing_header_is_signature_missing_naming_it(header: str) -> None:
    """Leaving out any of the five headers is signature_missing, and the message names that header."""
    headers = _headers()
    del headers[header]
    error = _parse_error(headers)
    assert "signature_missing" == error.code
    assert header in error.message


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (HEADER_NONCE, "a" * 15),
        (HEADER_NONCE, "a" * 65),
        (HEADER_NONCE, "0123456789abcdef!"),
        (HEADER_NONCE, "0123456789abcdef "),
        (HEADER_NONCE, "0123456789abcdeé"),
        (HEADER_NONCE, ""),
        (HEADER_TIMESTAMP, ""),
        (HEADER_TIMESTAMP, "01800000000"),
        (HEADER_TIMESTAMP, "-1800000000"),
        (HEADER_TIMESTAMP, "+1800000000"),
        (HEADER_TIMESTAMP, "1800000000.5"),
        (HEADER_TIMESTAMP, " 1800000000"),
        (HEADER_TIMESTAMP, "１８００００００００"),
        (HEADER_TIMESTAMP, "1" * 13),
        (HEADER_TIMESTAMP, "1.8e9"),
        (HEADER_SIGNATURE, "A" * 64),
        (HEADER_SIGNATURE, "a" * 63),
        (HEADER_SIGNATURE, "g" * 64),
        (HEADER_MERCHANT, "GS25"),
        (HEADER_MERCHANT, "gs25\nX-Evil: 1"),
        (HEADER_MERCHANT, "-gs25"),
        (HEADER_KEY_ID, "gs25-k0"),
        (HEADER_KEY_ID, "k1"),
    ],
)
def test_a_malformed_header_is_signature_missing_naming_it(header: str, value: str) -> None:
    """A header not of its published form is signature_missing, naming the header."""
    headers = _headers()
    headers[header] = value
    error = _parse_error(headers)
    assert "signature_missing" == error.code
    assert header in error.message


@pytest.mark.parametrize("nonce", ["a" * 16, "Z" * 64, "0123456789_-abcDEF"])
def test_nonces_of_16_to_64_allowed_characters_are_accepted(nonce: str) -> None:
    """Nonces at both length limits, using every allowed character class, verify."""
    _check(_headers(nonce=nonce))


@pytest.mark.parametrize("spell", [str.lower, str.upper, lambda name: name.swapcase()])
def test_header_names_are_case_insensitive(spell) -> None:
    """The five headers are found in a plain dict whatever the case of their names."""
    headers = {spell(name): value for name, value in _headers().items()}
    assert parse_signature_headers(_headers()) == parse_signature_headers(headers)
    _check(headers)


def test_an_aiohttp_multidict_is_read_like_a_dict() -> None:
    """aiohttp's CIMultiDict of request headers, other headers included, parses to the same result."""
    headers = CIMultiDict(_headers())
    headers.add("Content-Type", "application/json")
    assert parse_signature_headers(_headers()) == parse_signature_headers(headers)


def test_a_header_sent_twice_is_refused() -> None:
    """Two nonces on one request, even differing only in name case, are signature_missing naming the header."""
    headers = _headers()
    headers[HEADER_NONCE.lower()] = "another-nonce-0123456789"
    error = _parse_error(headers)
    assert "signature_missing" == error.code
    assert HEADER_NONCE in error.message
    multi = CIMultiDict(_headers())
    multi.add(HEADER_SIGNATURE, "0" * 64)
    assert "signature_missing" == _parse_error(multi).code  # type: ignore[arg-type]


def test_parsed_headers_hold_their_values() -> None:
    """parse_signature_headers returns the merchant, key id, integer timestamp, nonce and signature."""
    headers = _headers()
    assert SignatureHeaders("gs25", "gs25-k1", NOW_S, NONCE, headers[HEADER_SIGNATURE]) == parse_signature_headers(headers)


# Errors are safe to show


def test_no_error_message_or_repr_shows_the_secret_or_the_signature() -> None:
    """Messages and reprs of every rejection, and of the parsed headers, hold neither secret nor signature."""
    headers = _headers()
    signature = headers[HEADER_SIGNATURE]
    errors = [
        _code(headers, body=b"tampered"),
        _code(headers, secret=None),
        _code(headers, now_s=NOW_S + 10_000),
        _parse_error({**headers, HEADER_SIGNATURE: signature.upper()}),
        _parse_error({**headers, HEADER_NONCE: "!"}),
    ]
    shown = [text for e in errors for text in (e.message, str(e), repr(e))]
    shown.append(repr(parse_signature_headers(headers)))
    assert [] == [text for text in shown if SECRET in text or signature in text or signature.upper() in text]


def test_a_signature_error_is_a_401_and_the_callers_fault() -> None:
    """Every SignatureError maps to HTTP 401 and blames the caller."""
    error = _code(_headers(), secret=None)
    assert (401, "caller") == (error.status, error.fault)


# Guards against our own mistakes


@pytest.mark.parametrize("field", ["nonce", "raw_path", "key_id"])
def test_a_line_break_in_a_signed_field_is_refused(field: str) -> None:
    """canonical_request refuses a field with a line break, which would make canonical strings ambiguous."""
    args = dict(method="POST", raw_path=PATH, timestamp=NOW_S, nonce=NONCE, merchant_id="gs25", key_id="gs25-k1", body=BODY)
    args[field] = str(args[field]) + "\nPOST"
    with pytest.raises(ValueError):
        canonical_request(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "overrides",
    [dict(nonce="short"), dict(merchant_id="GS25"), dict(key_id="gs25"), dict(method="PO ST")],
)
def test_signed_headers_refuses_what_the_gateway_would_reject(overrides: dict[str, str]) -> None:
    """A client signing with a malformed nonce, merchant id, key id or method gets a ValueError at once."""
    with pytest.raises(ValueError):
        _headers(**overrides)
