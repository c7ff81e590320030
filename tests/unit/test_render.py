"""Barcode rendering (`gateway.render`): every picture scans back to the exact digits.

zxing-cpp is the independent decoder: what it reads from the PNG is what a
terminal's scanner would send.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ElementTree

import pytest
import zxingcpp
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from gateway.codes import encode_code
from gateway.render import code128_png, code128_svg, qr_png

SVG_NS = "{http://www.w3.org/2000/svg}"
# Set C: start, 12 digit pairs and the check symbol at 11 modules each, a
# 13-module stop, and ten quiet modules either side.
CODE128_SET_C_MODULES = 11 * 14 + 13 + 2 * 10

payment_codes = st.builds(
    encode_code,
    st.text(alphabet="0123456789", min_size=4, max_size=4),
    st.integers(min_value=0, max_value=999_999_999),
    st.integers(min_value=0, max_value=9),
    st.binary(min_size=32, max_size=32),
    st.integers(min_value=0, max_value=2**36),
)
LEADING_ZEROS = encode_code("0000", 42, 0, bytes(32), 0)
HOME_CODE = encode_code("9410", 123_456_789, 0, bytes(range(32)), 56_666_666)
# python-barcode 0.16.1 drops a leading "99" from Code 128 (its issue #251);
# gateway.render works around it, and these codes keep it honest.
LEADING_99 = encode_code("9900", 0, 0, bytes(32), 0)
ALL_NINES = encode_code("9999", 999_999_999, 9, bytes(32), 0)
render_settings = settings(max_examples=25, deadline=None)


def _read(png: bytes) -> list[zxingcpp.Barcode]:
    with Image.open(io.BytesIO(png)) as image:
        return zxingcpp.read_barcodes(image)


def _mm(value: str) -> float:
    return float(value.removesuffix("mm"))


@render_settings
@given(payment_codes)
@example(LEADING_ZEROS)
@example(HOME_CODE)
@example(LEADING_99)
@example(ALL_NINES)
@example("273810000015590679396230")  # read twice, once wrongly, when modules were 4.13 px wide
def test_code128_png_scans_back_to_the_exact_digits(code: str) -> None:
    """A Code 128 PNG decodes to the same 24 digits, as Code 128."""
    results = _read(code128_png(code))
    assert [(zxingcpp.BarcodeFormat.Code128, code)] == [(r.format, r.text) for r in results]


@pytest.mark.parametrize("module_width_mm", [0.25, 0.5])
def test_code128_png_scans_at_other_module_widths(module_width_mm: float) -> None:
    """Thinner and wider bars still decode to the same digits."""
    results = _read(code128_png(LEADING_ZEROS, module_width_mm=module_width_mm, height_mm=8.0))
    assert [LEADING_ZEROS] == [r.text for r in results]


@pytest.mark.parametrize("code", [LEADING_99, ALL_NINES])
def test_a_code_starting_with_99_keeps_its_first_two_digits(code: str) -> None:
    """A leading "99" survives rendering in both PNG and SVG (python-barcode issue #251)."""
    assert [code] == [r.text for r in _read(code128_png(code))]
    assert [code] == [r.text for r in _read(_svg_bars_as_png(code128_svg(code)))]


def test_code128_png_is_set_c_width() -> None:
    """The PNG is as wide as a set C symbol: 187 modules of 4 whole pixels (0.35 mm at about 300 dpi)."""
    with Image.open(io.BytesIO(code128_png(HOME_CODE))) as image:
        assert ("PNG", CODE128_SET_C_MODULES * 4) == (
            image.format,
            image.width,
        )


@render_settings
@given(payment_codes)
@example(LEADING_ZEROS)
def test_qr_png_scans_back_to_the_exact_digits(code: str) -> None:
    """A QR PNG decodes to the same 24 digits, as a QR code with error correction M."""
    results = _read(qr_png(code))
    assert [(zxingcpp.BarcodeFormat.QRCode, code, "M")] == [
        (r.format, r.text, r.ec_level) for r in results
    ]


def test_qr_png_of_a_code_is_a_version_1_symbol() -> None:
    """24 digits fit QR version 1 (21 modules) in numeric mode: 29 boxes of 8 px with border."""
    with Image.open(io.BytesIO(qr_png(HOME_CODE))) as image:
        assert ("PNG", ((21 + 2 * 4) * 8, (21 + 2 * 4) * 8)) == (image.format, image.size)


def test_qr_png_carries_arbitrary_text() -> None:
    """qr_png also renders text that is not a code, such as a provisioning URI."""
    uri = "otpauth://hotp/pointgate:123456789?secret=AAAQEAYEAUDAOCAJ&counter=0&digits=8"
    assert [uri] == [r.text for r in _read(qr_png(uri, box_size=4, border=2))]


def _svg_bars_as_png(svg: bytes, px_per_mm: int = 12) -> bytes:
    """Paint the SVG's black rectangles into a PNG, so the SVG itself can be scanned."""
    root = ElementTree.fromstring(svg)
    width = round(_mm(root.attrib["width"]) * px_per_mm)
    height = round(_mm(root.attrib["height"]) * px_per_mm)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    for rect in root.iter(f"{SVG_NS}rect"):
        if "fill:black" not in rect.attrib.get("style", ""):
            continue
        left = _mm(rect.attrib["x"]) * px_per_mm
        top = _mm(rect.attrib["y"]) * px_per_mm
        right = left + _mm(rect.attrib["width"]) * px_per_mm
        bottom = top + _mm(rect.attrib["height"]) * px_per_mm
        draw.rectangle((round(left), round(top), round(right) - 1, round(bottom)), fill=0)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@render_settings
@given(payment_codes)
@example(LEADING_ZEROS)
@example(LEADING_99)
def test_code128_svg_is_an_svg_document_whose_bars_scan(code: str) -> None:
    """The SVG is well-formed XML with an <svg> root, and its bars decode to the digits."""
    svg = code128_svg(code)
    assert b"<svg" in svg
    assert f"{SVG_NS}svg" == ElementTree.fromstring(svg).tag
    results = _read(_svg_bars_as_png(svg))
    assert [(zxingcpp.BarcodeFormat.Code128, code)] == [(r.format, r.text) for r in results]


def test_code128_svg_is_set_c_width_with_grouped_digits_underneath() -> None:
    """The SVG is 187 modules of 0.35 mm wide and prints the digits in groups of four."""
    root = ElementTree.fromstring(code128_svg(HOME_CODE))
    texts = [element.text for element in root.iter(f"{SVG_NS}text")]
    grouped = " ".join(re.findall("....", HOME_CODE))
    assert (f"{CODE128_SET_C_MODULES * 0.35:.3f}mm", [grouped]) == (root.attrib["width"], texts)


@pytest.mark.parametrize("code", ["", "123", "12a4", "١٢٣٤", "12 34"])
def test_code128_refuses_anything_but_an_even_run_of_ascii_digits(code: str) -> None:
    """Only an even number of ASCII digits renders, so the symbol is set C throughout."""
    with pytest.raises(ValueError):
        code128_png(code)
    with pytest.raises(ValueError):
        code128_svg(code)
