"""Pictures of payment codes: Code 128 (PNG, SVG) and QR (PNG), as bytes.

Rendering is for the member API's "issue a code online" reply and for the
phone simulator. It is never on the verification path: a terminal sends the
digits it scanned, and the gateway only ever parses digits (`gateway.codes`).
Nothing here touches the file system; every function returns the image bytes.
"""

from __future__ import annotations

import io
import re
from typing import Final

import qrcode
from barcode import Code128
from barcode.writer import ImageWriter, SVGWriter
from qrcode.constants import ERROR_CORRECT_M

# ISO/IEC 15417 asks for a quiet zone of at least ten modules either side of a
# Code 128 symbol; python-barcode's own default (2.54 mm) is less than that at
# the module widths a phone screen needs.
_QUIET_ZONE_MODULES: Final = 10
# Resolution of the PNG output: about 300 dpi, adjusted so that one module is a
# whole number of pixels. A module of 4.13 px gets rounded unevenly across the
# symbol, and a decoder then found a second, wrong reading with a valid Code 128
# checksum (the Luhn digit refuses it, but it must not be printed at all).
_PNG_DPI_NOMINAL: Final = 300
_DIGIT_GROUP: Final = 4
# Code 128 symbol values (ISO/IEC 15417): start symbols, and the switches
# from set C to sets A and B.
_START_A: Final = 103
_START_B: Final = 104
_START_C: Final = 105
_SWITCH_TO_B: Final = 100
_SWITCH_TO_A: Final = 101
# Font sizing for the digits under the bars: DejaVu Sans Mono (python-barcode's
# bundled font) advances 0.602 em per character, and the text is kept within
# 90% of the bar width so it never runs into the quiet zone or off the image.
_FONT_ADVANCE_EM: Final = 0.602
_FONT_PT_MAX: Final = 10.0
_TEXT_WIDTH_SHARE: Final = 0.9
_MM_PER_PT: Final = 25.4 / 72


class _Code128(Code128):
    """python-barcode's Code 128 without its leading-"99" bug.

    python-barcode 0.16.1 and earlier drop a leading "99" digit pair: in set C
    the pair "99" is symbol 99, which `_try_to_optimize` mistakes for a switch
    to set C right after the start symbol and folds away, so "9941..." scans
    as "41...". Issuer prefixes are configuration and may start with 99, so
    the fold is limited to real switches to set A or B, as upstream fixed it
    (python-barcode issue #251, pull request #263, not yet released).
    """

    def _try_to_optimize(self, encoded: list[int]) -> list[int]:
        if encoded[0] == _START_C and encoded[1] in (_SWITCH_TO_A, _SWITCH_TO_B):
            encoded[:2] = [_START_A if encoded[1] == _SWITCH_TO_A else _START_B]
        return encoded


def _check_digits(code: str) -> None:
    # An even run of ASCII digits is what lets Code 128 use set C (two digits
    # per symbol) from start to stop, which halves the width of the barcode.
    if not (code.isascii() and code.isdigit() and len(code) % 2 == 0):
        raise ValueError("a barcode needs an even number of ASCII digits")


def _human_readable(code: str) -> str:
    # The digits are printed under the bars, in groups of four, because a
    # cashier keys them in when the scanner fails; the Luhn digit catches the
    # typos. Scanners never need the text: it sits outside the symbol.
    return " ".join(code[i : i + _DIGIT_GROUP] for i in range(0, len(code), _DIGIT_GROUP))


def _code128_options(code: str, module_width_mm: float, height_mm: float) -> dict[str, object]:
    # Set C: start, one symbol per digit pair, check symbol (11 modules each),
    # then the 13-module stop pattern.
    bar_modules = 11 * (len(code) // 2 + 2) + 13
    text_chars = len(_human_readable(code))
    text_width_mm_max = _TEXT_WIDTH_SHARE * bar_modules * module_width_mm
    font_pt = min(_FONT_PT_MAX, text_width_mm_max / (text_chars * _FONT_ADVANCE_EM * _MM_PER_PT))
    return {
        "module_width": module_width_mm,
        "module_height": height_mm,
        "quiet_zone": _QUIET_ZONE_MODULES * module_width_mm,
        "font_size": round(font_pt, 1),
        "write_text": True,
    }


def code128_png(code: str, *, module_width_mm: float = 0.35, height_mm: float = 15.0) -> bytes:
    """Code 128 (set C) of `code` as a PNG, digits printed underneath."""
    _check_digits(code)
    buffer = io.BytesIO()
    # Greyscale, not RGB: about half the bytes, and the text stays anti-aliased.
    module_px = max(1, round(module_width_mm * _PNG_DPI_NOMINAL / 25.4))
    dpi = module_px * 25.4 / module_width_mm * (1 + 1e-9)  # never a hair under: the writer truncates
    symbol = _Code128(code, writer=ImageWriter(format="PNG", mode="L", dpi=dpi))
    options = _code128_options(code, module_width_mm, height_mm)
    symbol.write(buffer, options, _human_readable(code))
    return buffer.getvalue()


def code128_svg(code: str) -> bytes:
    """Code 128 (set C) of `code` as an SVG document, digits printed underneath.

    The document is its printed size (millimetres) and scales: it has a viewBox
    in millimetres, so a page can show it as wide as the screen with sharp bars."""
    _check_digits(code)
    buffer = io.BytesIO()
    symbol = _Code128(code, writer=SVGWriter())
    symbol.write(buffer, _code128_options(code, 0.35, 15.0), _human_readable(code))
    return _scalable(buffer.getvalue())


_MM_ATTRIBUTE_RE: Final = re.compile(rb' (x|y|width|height)="([0-9.]+)mm"')
_SVG_ROOT_RE: Final = re.compile(rb'<svg ([^>]*)width="([0-9.]+)mm" height="([0-9.]+)mm">')
_FONT_PT_RE: Final = re.compile(rb"font-size:([0-9.]+)pt")


def _scalable(svg: bytes) -> bytes:
    # python-barcode writes every length in mm and no viewBox, so browsers draw it at its
    # intrinsic size whatever size it is given. Lengths in user units (1 unit = 1 mm) under a
    # viewBox of the same millimetres draw the same picture, and it scales.
    root = _SVG_ROOT_RE.search(svg)
    if root is None:
        raise AssertionError("python-barcode's SVG root has width and height in mm")
    width, height = root[2], root[3]
    body = _MM_ATTRIBUTE_RE.sub(rb' \1="\2"', svg[root.end():])
    body = _FONT_PT_RE.sub(lambda m: b"font-size:%.3fpx" % (float(m[1]) * _MM_PER_PT), body)
    head = b'<svg %swidth="%smm" height="%smm" viewBox="0 0 %s %s">' % (root[1], width, height, width, height)
    return svg[:root.start()] + head + body


def qr_png(text: str, *, box_size: int = 8, border: int = 4) -> bytes:
    """QR code of `text` (error correction M) as a PNG.

    A 24-digit code goes in numeric mode and fits a version 1 symbol (21x21).
    """
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=box_size, border=border)
    qr.add_data(text)
    qr.make(fit=True)
    buffer = io.BytesIO()
    qr.make_image().save(buffer, format="PNG")
    return buffer.getvalue()
