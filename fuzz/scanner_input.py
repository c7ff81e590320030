"""Fuzz `pos_sdk.scanner`: `classify` never raises for a str, `parse_payment_code` raises only ScannerError.

Their docstrings: `classify` says what a scan is and "never raises for a str";
`parse_payment_code` returns the 24 digits or raises `ScannerError` saying why not. What comes
back as a payment code is 24 ASCII digits with a valid Luhn digit, kind 1 and a known prefix.

    python -m fuzz.scanner_input [libFuzzer options]
"""

from __future__ import annotations

from pos_sdk import scanner

PREFIXES = frozenset({"9410", "8860"})
NOISE = ("", "]C0", "]Q1", "]E0", "\r\n", "\t", " ", "-", "CP")
"""What scanners and cashiers put around a code; the fuzzer splices these in."""
RAW_CHARS_MAX = 300  # past SCAN_CHARS_MAX, so "too_long" is reached


def check(raw: str) -> None:
    result = scanner.classify(raw, PREFIXES)
    assert result.kind in ("payment_code", "coupon", "product", "unknown"), result
    assert (result.reason is not None) == (result.kind == "unknown"), result
    try:
        code = scanner.parse_payment_code(raw, PREFIXES)
    except scanner.ScannerError as e:
        assert result.kind != "payment_code" and e.reason == (result.reason or result.kind), (e.reason, result)
        return
    assert result.kind == "payment_code" and code == result.value
    assert len(code) == scanner.CODE_DIGITS and code.isascii() and code.isdigit() and code[:4] in PREFIXES


def one_input(data: bytes) -> None:
    import atheris

    provider = atheris.FuzzedDataProvider(data)
    parts = []
    while provider.remaining_bytes() and len(parts) < 8:
        choice = provider.ConsumeIntInRange(0, 2)
        if choice == 0:
            parts.append(NOISE[provider.ConsumeIntInRange(0, len(NOISE) - 1)])
        elif choice == 1:
            parts.append("".join(str(d % 10) for d in provider.ConsumeBytes(provider.ConsumeIntInRange(0, 24))))
        else:
            parts.append(provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(0, RAW_CHARS_MAX)))
    check("".join(parts))


def main() -> None:
    from fuzz._runner import run

    run(one_input)


if __name__ == "__main__":
    main()
