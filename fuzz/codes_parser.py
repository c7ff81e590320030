"""Fuzz `gateway.codes.parse_code`: any text either parses into the fields it spells, or is CodeFormatError.

Its docstring: it splits a code into its fields or raises `CodeFormatError`, checking 24 ASCII
digits first, then the Luhn digit, then the kind.

    python -m fuzz.codes_parser [libFuzzer options, e.g. -max_total_time=60 var/fuzz/codes_parser]
"""

from __future__ import annotations

from gateway import codes

CODE_CHARS_MAX = 64  # well past 24: long, short and exactly-24 inputs all come up


def check(text: str) -> None:
    try:
        parsed = codes.parse_code(text)
    except codes.CodeFormatError as e:
        assert e.reason in ("malformed", "bad_check_digit", "unsupported_kind"), e.reason
        return
    # Only 24 ASCII digits with a valid check digit and kind 1 parse, and they parse into themselves.
    assert parsed.text == text, (parsed, text)
    assert parsed.kind == codes.KIND_MEMBER_PAYMENT


def one_input(data: bytes) -> None:
    import atheris

    provider = atheris.FuzzedDataProvider(data)
    if provider.ConsumeBool():
        # Mostly digits, so the Luhn and kind checks are reached and not just the format check.
        check("".join(str(d % 10) for d in provider.ConsumeBytes(provider.ConsumeIntInRange(0, CODE_CHARS_MAX))))
    else:
        check(provider.ConsumeUnicodeNoSurrogates(CODE_CHARS_MAX))


def main() -> None:
    from fuzz._runner import run

    run(one_input)


if __name__ == "__main__":
    main()
