"""The benchmark's pre-generated requests are real authorisations, and its arithmetic holds."""

from __future__ import annotations

import json
import random

import pytest
from multidict import CIMultiDict

from bench import report
from bench.requests import (CodeBook, CodesExhausted, Device, Till, decode_records, encode_records, sale_requests,
                            split_round_robin)
from gateway import codes, signing

NOW_S = 1_800_000_000
STEP = NOW_S // 30
TILL = Till("gs25", "gs25-gangnam-01", "bench1", "gs25-k1", "pgsk_" + "A" * 43)


def devices(count: int) -> list[Device]:
    return [Device(100_000_000 + 1_000 * i + 7, bytes([i]) * 32, f"m007{i:012x}") for i in range(count)]


def requests_for(plan, tills=(TILL,)):
    rng = random.Random(1)
    return sale_requests(plan, list(tills), "9410", "127.0.0.1:8080", NOW_S, "t1",
                         lambda n: rng.randbytes(n).hex(), rng.randrange)


def split(raw: bytes) -> tuple[str, CIMultiDict, bytes]:
    head, body = raw.split(b"\r\n\r\n", 1)
    request_line, *lines = head.decode().split("\r\n")
    return request_line, CIMultiDict(line.split(": ", 1) for line in lines), body


def test_codebook_never_hands_out_a_code_twice():
    """Every (slot, step, seq) the book hands out, over several takes and steps, is distinct."""
    book = CodeBook(devices(3))
    taken = book.take(STEP, 25) + book.take(STEP, 5) + book.take(STEP + 1, 30)
    assert len(taken) == len({(d.slot, step, seq) for d, step, seq in taken}) == 60


def test_codebook_refuses_more_codes_than_a_step_has():
    """Three devices make 30 codes a step; the 31st of that step is refused."""
    book = CodeBook(devices(3))
    book.take(STEP, 30)
    assert book.capacity(STEP) == 0
    with pytest.raises(CodesExhausted):
        book.take(STEP, 1)


def test_codebook_never_goes_back_to_an_older_step():
    """After a device showed a code of step s+1, it has no code of step s left."""
    book = CodeBook(devices(1))
    book.take(STEP + 1, 1)
    assert book.capacity(STEP) == 0


def test_take_fresh_uses_each_device_once():
    """Fresh codes come one per device that never showed a code."""
    book = CodeBook(devices(4))
    book.take(STEP, 1)
    fresh = book.take_fresh(STEP, 3)
    assert [seq for _, _, seq in fresh] == [0, 0, 0]
    assert len({d.slot for d, _, _ in fresh}) == 3
    with pytest.raises(CodesExhausted):
        book.take_fresh(STEP, 1)


def test_a_sale_request_is_signed_over_its_exact_bytes():
    """The signature of each pre-generated request verifies as the gateway checks it."""
    [sale] = requests_for(CodeBook(devices(1)).take(STEP, 1))
    request_line, headers, body = split(sale.raw)
    assert request_line == "POST /v1/payments HTTP/1.1"
    assert int(headers["Content-Length"]) == len(body)
    parsed = signing.parse_signature_headers(headers)
    signing.check_signature(parsed, "POST", "/v1/payments", body, TILL.secret, NOW_S)
    assert headers["Idempotency-Key"] == sale.idempotency_key


def test_a_sale_request_carries_a_valid_code_of_its_device():
    """The code in the body verifies against the device's secret for the planned step."""
    device = devices(1)[0]
    [sale] = requests_for(CodeBook([device]).take(STEP, 1))
    document = json.loads(split(sale.raw)[2])
    code = codes.parse_code(document["code"])
    assert (code.slot, code.seq) == (device.slot, sale.seq)
    assert codes.match_step(code, device.secret, NOW_S, 30, 1, 20) == ("ok", STEP)
    assert document["order_ref"] == sale.order_ref and document["amount"] == sale.amount


def test_requests_are_unique_in_nonce_key_and_order():
    """No two requests share a nonce, an idempotency key or an order reference."""
    sales = requests_for(CodeBook(devices(5)).take(STEP, 50))
    nonces = {split(s.raw)[1]["X-PG-Nonce"] for s in sales}
    assert len(nonces) == len({s.idempotency_key for s in sales}) == len({s.order_ref for s in sales}) == 50


def test_records_round_trip():
    """The record file wrk and the open-loop generator read gives back the same requests."""
    raw = [b"POST / HTTP/1.1\r\n\r\n", b"", b"L12\nnot a header"]
    assert decode_records(encode_records(raw)) == raw


def test_round_robin_split():
    assert split_round_robin([b"a", b"b", b"c"], 2) == [[b"a", b"c"], [b"b"]]


def test_readme_block_is_replaced_between_the_markers():
    """Only the text between the bench markers changes."""
    readme = f"intro\n{report.README_BEGIN}\nold table\n{report.README_END}\nrest\n"
    assert report.replace_readme_block(readme, "new") == f"intro\n{report.README_BEGIN}\nnew\n{report.README_END}\nrest\n"


def test_ratio_of_medians():
    """Each side is the median of its rounds; the ratio is of the medians."""
    assert report.ratio(report.median([500, 100, 520]), report.median([1000, 1010, 300])) == 0.5
