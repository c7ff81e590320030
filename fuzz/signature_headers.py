"""Fuzz `gateway.signing`'s header parser and verifier: SignatureError, and only SignatureError.

Their docstrings: `parse_signature_headers` raises `SignatureError` signature_missing when a
header is absent, sent more than once or not of its form; `check_signature` accepts the request
or raises `SignatureError`. Headers arrive as aiohttp does them: a multidict of strings, any
case, possibly repeated. A request the fuzzer signs correctly is accepted.

    python -m fuzz.signature_headers [libFuzzer options]
"""

from __future__ import annotations

from multidict import CIMultiDict

from gateway import signing

SECRET = "pgsk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
NOW_S = 1_800_000_000
VALID = {
    signing.HEADER_MERCHANT: "gs25",
    signing.HEADER_KEY_ID: "gs25-k1",
    signing.HEADER_TIMESTAMP: str(NOW_S),
    signing.HEADER_NONCE: "n0nce-for-the-fuzzer_01",
    signing.HEADER_SIGNATURE: "0" * 64,
}
"""Well-formed values, so the fuzzer gets past the form checks as often as it fails them."""
CODES = frozenset({"signature_missing", "timestamp_out_of_window", "unknown_key", "bad_signature"})
VALUE_CHARS_MAX = 80


def check(pairs: list[tuple[str, str]], method: str, raw_path: str, body: bytes, known_key: bool, sign_it: bool) -> None:
    headers = CIMultiDict(pairs)
    if sign_it:
        # What a genuine terminal would send for this request (when its parts can be signed at all).
        try:
            headers = CIMultiDict(signing.signed_headers(SECRET, method, raw_path, body, "gs25", "gs25-k1", NOW_S,
                                                         VALID[signing.HEADER_NONCE]))
        except ValueError:
            sign_it = False
    try:
        parsed = signing.parse_signature_headers(headers)
    except signing.SignatureError as e:
        assert "signature_missing" == e.code and not sign_it, e
        return
    try:
        signing.check_signature(parsed, method, raw_path, body, SECRET if known_key else None, NOW_S)
    except signing.SignatureError as e:
        assert e.code in CODES and not (sign_it and known_key), e
        assert SECRET not in e.message and parsed.signature not in e.message
        return
    assert known_key, "a request with no key was accepted"


def one_input(data: bytes) -> None:
    import atheris

    provider = atheris.FuzzedDataProvider(data)
    names = list(VALID) + ["Content-Type", "x-pg-nonce", "X-PG-SIGNATURE"]
    pairs = []
    for _ in range(provider.ConsumeIntInRange(0, 8)):
        name = names[provider.ConsumeIntInRange(0, len(names) - 1)]
        if provider.ConsumeBool():
            value = VALID.get(name, "application/json")
        else:
            value = provider.ConsumeUnicodeNoSurrogates(VALUE_CHARS_MAX)
        pairs.append((name, value))
    method = provider.ConsumeUnicodeNoSurrogates(8) if provider.ConsumeBool() else "POST"
    raw_path = provider.ConsumeUnicodeNoSurrogates(VALUE_CHARS_MAX) if provider.ConsumeBool() else "/v1/payments"
    body = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 64))
    check(pairs, method, raw_path, body, provider.ConsumeBool(), provider.ConsumeBool())


def main() -> None:
    from fuzz._runner import run

    run(one_input)


if __name__ == "__main__":
    main()
