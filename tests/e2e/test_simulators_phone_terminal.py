"""The phone and store-terminal simulators against a real gateway: enrol, show, scan, pay, reconcile.

The phone uses only the member API and its own reimplementation of the code
format; the terminal uses only the POS SDK and zxing-cpp. The gateway's
internals appear here only to issue signing keys, as an operator would.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import secrets
import stat
import time
from pathlib import Path

import pytest

from gateway.app import MERCHANTS
from pos_sdk import Declined, MovementDifference, ScannerError
from pos_sdk.receipt import display_width
from pos_sdk.signing import signature_headers
from simulators.phone import (
    CodesExhausted, KeychainError, Phone, next_position, offline_code, step_of,
)
from simulators.terminal import (
    StoreTerminal, UnreadableImage, load_issuer_prefixes, load_profiles, run_repl, wedge_text,
)
from simulators.terminal import main as terminal_main

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "payment-code.md"
STEP_S = 30


def _doc_vectors() -> list[dict[str, str]]:
    section = DOC_PATH.read_text(encoding="utf-8").split("\n## Test vectors\n", 1)[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, [cell.strip().strip("`") for cell in line.strip("|").split("|")], strict=True))
            for line in lines[2:]]


DOC_VECTORS = _doc_vectors()


def offline_phone(**overrides) -> Phone:
    """A phone as enrolment would leave it, without a gateway (for the offline behaviours)."""
    values = dict(base_url="http://127.0.0.1:9", member_id="m123000000000001", token="pgmt_123_" + "A" * 43,
                  token_expires_at="2030-01-01T00:00:00.000Z", slot=700_123_001, secret=bytes(range(32)),
                  issuer_prefix="9410", code_step_s=STEP_S)
    return Phone(**(values | overrides))


def line(label: str, value: str, width: int) -> str:
    """A receipt's label/value line as pos_sdk/receipt.py lays it out: value right-aligned to `width` columns."""
    return label + " " * (width - display_width(label) - display_width(value)) + value


async def earn(gateway, member_id: str, points: int) -> dict:
    """Hana Card credits points over the affiliate API, signed like any terminal request."""
    key_id, secret = await gateway.app[MERCHANTS].issue_key("hana-card")
    body = json.dumps({"member_id": member_id, "points": points, "affiliate_ref": "hc-" + secrets.token_hex(6)}).encode()
    headers = signature_headers(secret, "POST", "/v1/earnings", body, "hana-card", key_id, int(time.time()),
                                secrets.token_hex(16))
    headers |= {"Content-Type": "application/json", "Idempotency-Key": "earn-" + secrets.token_hex(8)}
    async with gateway.session.post(gateway.base_url + "/v1/earnings", data=body, headers=headers) as response:
        document = await response.json(content_type=None)
        assert 201 == response.status, document
        return document


@pytest.fixture
async def make_terminal(gateway, tmp_path: Path):
    made: list[StoreTerminal] = []

    async def make(store: str = "gs25-gangnam-01", **kwargs) -> StoreTerminal:
        profile = load_profiles()[store]
        key_id, secret = await gateway.app[MERCHANTS].issue_key(profile.merchant_id)
        terminal = StoreTerminal.open(profile, base_url=gateway.base_url, key_id=key_id, secret=secret,
                                      journal_path=str(tmp_path / f"{profile.store_id}-{profile.terminal_id}.sqlite3"),
                                      connect_timeout_s=1.0, read_timeout_s=5.0, unknown_outcome_deadline_s=2.0,
                                      **kwargs)
        made.append(terminal)
        return terminal

    yield make
    for terminal in made:
        await terminal.close()


@pytest.fixture
async def phone(gateway) -> Phone:
    phone = await Phone.enrol(gateway.base_url)
    await earn(gateway, phone.member_id, 10_000)
    return phone


# -- the published code format --------------------------------------------------


@pytest.mark.parametrize("vector", DOC_VECTORS, ids=[v["code"] for v in DOC_VECTORS])
def test_phone_reproduces_published_vector(vector: dict[str, str]) -> None:
    """The phone's own HOTP-SHA256 + Luhn gives each docs/payment-code.md code from its secret, time, seq and slot."""
    step = step_of(int(vector["unix time (s)"]), STEP_S)
    code = offline_code(vector["issuer"], int(vector["slot"]), step, int(vector["seq"]), bytes.fromhex(vector["secret (hex)"]))
    assert (vector["code"], int(vector["step"])) == (code, step)


def test_published_vectors_were_found() -> None:
    """Nine vectors are read from docs/payment-code.md, so the test above is not empty."""
    assert 9 == len(DOC_VECTORS)


# -- which code the phone shows next ----------------------------------------------


def test_codes_within_a_step_advance_seq() -> None:
    """Inside one step each code shown takes the next seq, starting at 0."""
    phone, now_s = offline_phone(), 1_700_000_000
    shown = [phone.next_code(now_s + i) for i in range(3)]
    assert [phone.code_at(56_666_666, seq) for seq in (0, 1, 2)] == shown


def test_a_new_step_restarts_at_seq_zero() -> None:
    """After the step ends, the next code is seq 0 of the new step."""
    assert (56_666_667, 0) == next_position((56_666_666, 4), 56_666_667)


def test_after_seq_nine_the_next_step_follows() -> None:
    """The eleventh code in one step is seq 0 of the next step, which the gateway's window accepts."""
    assert (56_666_667, 0) == next_position((56_666_666, 9), 56_666_666)


def test_more_than_one_step_ahead_is_refused() -> None:
    """Twenty codes in one step exhaust this step and the next: the phone says wait."""
    with pytest.raises(CodesExhausted):
        next_position((56_666_667, 9), 56_666_666)


# -- the phone's keychain -----------------------------------------------------------


def test_save_and_load_round_trip_with_owner_only_permissions(tmp_path: Path) -> None:
    """save writes a 0600 JSON file holding the secret in base32; load gives the same phone, seq position included."""
    phone = offline_phone()
    phone.next_code(1_700_000_000)
    path = tmp_path / "phone.json"
    phone.save(path)
    loaded = Phone.load(path)
    assert 0o600 == stat.S_IMODE(path.stat().st_mode)
    assert phone == loaded
    assert "AAAQEAYEAUDAOCAJBIFQYDIOB4IBCEQTCQKRMFYYDENBWHA5DYPQ" == json.loads(path.read_text())["secret_b32"]
    assert phone.code_at(56_666_666, 1) == loaded.next_code(1_700_000_001)


def test_load_refuses_a_file_others_can_read(tmp_path: Path) -> None:
    """A keychain file readable by group or others is refused, as ssh refuses such keys."""
    path = tmp_path / "phone.json"
    offline_phone().save(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeychainError) as refused:
        Phone.load(path)
    assert "keychain_too_open" == refused.value.code


# -- store profiles and scanning ------------------------------------------------------


def test_profiles_are_keyed_by_terminal_and_by_store() -> None:
    """"<store>/<terminal>" names each terminal, "<store>" its first; each carries its merchant's settings."""
    profiles = load_profiles()
    assert profiles["gs25-gangnam-01/t1"] == profiles["gs25-gangnam-01"]
    assert ("t2", "gs25", "KRW", 42) == (profiles["gs25-gangnam-01/t2"].terminal_id, profiles["gs25-gangnam-01/t2"].merchant_id,
                                         profiles["gs25-gangnam-01/t2"].currency, profiles["gs25-gangnam-01/t2"].receipt_width)
    assert (32, "Asia/Taipei", "TWD") == (profiles["cu-jongno-01"].receipt_width, profiles["fm-taipei-101"].time_zone,
                                          profiles["fm-taipei-101"].currency)


def test_wedge_text_frames_a_reading_as_a_scanner_types_it() -> None:
    """A keyboard-wedge scanner sends the AIM identifier, the text and CR LF."""
    assert "]C0941011234567890077743322\r\n" == wedge_text("]C0", "941011234567890077743322")


@pytest.mark.parametrize("kind", ["code128", "qr"])
async def test_scan_refuses_a_code_of_an_unconfigured_issuer(gateway, make_terminal, kind: str) -> None:
    """A well-formed code whose prefix is not in networks.toml is refused at the till, before any request."""
    terminal = await make_terminal()
    stranger = offline_phone(issuer_prefix="1234").next_code(time.time())
    with pytest.raises(ScannerError) as refused:
        terminal.scan_image(Phone.render_png(stranger, kind))
    assert ("unknown_issuer", {"9410", "8860"}) == (refused.value.reason, set(load_issuer_prefixes()))


async def test_scan_refuses_a_picture_without_a_barcode(gateway, make_terminal) -> None:
    """A picture with no barcode in it is UnreadableImage, not a guess."""
    from PIL import Image

    blank = io.BytesIO()
    Image.new("L", (200, 100), 255).save(blank, format="PNG")
    terminal = await make_terminal()
    with pytest.raises(UnreadableImage) as refused:
        terminal.scan_image(blank.getvalue())
    assert "no_barcode" == refused.value.code


# -- over HTTP: phone, member API, terminal, gateway -------------------------------------


async def test_enrolled_phone_starts_with_the_affiliate_credit(gateway, phone: Phone) -> None:
    """After enrolment and a 10,000-point earning, the member API shows 10,000 available, none held."""
    balance = await phone.balance()
    assert (phone.member_id, 10_000, 0, "HMP") == (balance.member_id, balance.available, balance.held, balance.unit)


@pytest.mark.parametrize("kind", ["code128", "qr"])
async def test_scanned_phone_screen_pays(gateway, make_terminal, phone: Phone, kind: str) -> None:
    """Phone PNG -> zxing-cpp -> scanner parser -> SDK -> gateway: approved, and the phone's balance agrees."""
    terminal = await make_terminal()
    sale = await terminal.sell(4_500, png=phone.render_png(phone.next_code(time.time()), kind))
    balance = await phone.balance()
    assert ("approved", 5_500, 5_500) == (sale.payment.status, sale.payment.balance_after, balance.available)
    assert line("결제금액", "4,500 KRW", 42) in sale.receipt.splitlines()


async def test_offline_codes_equal_the_gateways_online_codes(gateway, phone: Phone) -> None:
    """For each (step, seq) the gateway issues, the phone computes the same 24 digits offline."""
    online = await phone.online_codes(5)
    assert 5 == len({(c.step, c.seq) for c in online})
    assert [(c.step, c.seq, phone.code_at(c.step, c.seq)) for c in online] == [(c.step, c.seq, c.code) for c in online]


async def test_first_offline_code_is_the_gateways_first_online_code(gateway, phone: Phone) -> None:
    """A fresh device's next offline code is the first code the gateway would issue for it."""
    now_s = time.time()
    if now_s % STEP_S > STEP_S - 2:  # keep both in one step
        await asyncio.sleep(STEP_S - now_s % STEP_S + 0.1)
        now_s = time.time()
    offline = phone.next_code(now_s)
    [online] = await phone.online_codes(1)
    assert online.code == offline


async def test_a_used_code_is_not_issued_online_again(gateway, make_terminal, phone: Phone) -> None:
    """Once the phone's offline code paid, the gateway's online codes skip its (step, seq)."""
    terminal = await make_terminal()
    code = phone.next_code(time.time())
    await terminal.sell(1_000, typed=code)
    online = await phone.online_codes(5)
    assert code not in {c.code for c in online}


async def test_saved_phone_keeps_working_after_load(gateway, phone: Phone, tmp_path: Path) -> None:
    """A phone loaded from its keychain file still authenticates to the member API."""
    phone.save(tmp_path / "phone.json")
    loaded = Phone.load(tmp_path / "phone.json")
    assert 10_000 == (await loaded.balance()).available


async def test_batch_close_compares_two_independent_records(gateway, make_terminal, phone: Phone) -> None:
    """A sale the terminal did not make itself (another program on its terminal id) shows up as a mismatch."""
    terminal = await make_terminal()
    await terminal.sell(2_000, typed=phone.next_code(time.time()))
    other = await gateway.terminal(key=await gateway.app[MERCHANTS].issue_key("gs25"))
    status, foreign, _ = await other.pay(phone.next_code(time.time()), 1_000)
    batch = await terminal.close_batch()
    assert (201, "approved") == (status, foreign["status"])
    assert ("mismatched", {"sale_count": 2, "sale_amount": 3_000}) == (
        batch.status, {k: batch.gateway[k] for k in ("sale_count", "sale_amount")})
    assert (MovementDifference("missing_at_terminal", foreign["payment_id"], "sale", None, 1_000),) == batch.movement_differences
    assert {"sale_count": 1, "sale_amount": 2_000} == {k: batch.terminal[k] for k in ("sale_count", "sale_amount")}
    assert {"sale": 1, "void": 0, "refund": 0} == batch.matched_counts


# -- the interactive till -----------------------------------------------------------------


async def test_repl_session_sells_refunds_looks_up_and_closes_matched(gateway, make_terminal, phone: Phone) -> None:
    """total, typed code, refund, lookup, batch, quit: receipts as expected and the batch matched."""
    terminal = await make_terminal(now_s=lambda: 1_800_000_000.0, token_hex=lambda n: "c0ffee")
    order_ref = terminal.new_order_ref()
    output = io.StringIO()

    def cashier():
        yield "total 4,500"
        code = phone.next_code(time.time())
        yield " ".join(code[i:i + 4] for i in range(0, 24, 4))  # typed as printed under the bars
        [payment_id] = terminal.totals.payment_ids
        yield f"refund {payment_id} 1500 one item returned"
        yield f"lookup {order_ref}"
        yield "batch"
        yield "quit"

    status = await run_repl(terminal, cashier(), output)
    text = output.getvalue()
    lines = text.splitlines()
    assert 0 == status
    assert "gs25-gangnam-01-t1-20270115170000-c0ffee" == order_ref
    assert line("상태", "승인", 42) in lines
    assert line("결제금액", "4,500 KRW", 42) in lines
    assert line("잔여 포인트", "5,500", 42) in lines
    assert line("상태", "부분환불", 42) in lines
    assert line("환불금액", "1,500 KRW", 42) in lines
    assert line("잔여 포인트", "7,000", 42) in lines
    assert re.search(rf"payment pay_\w+  order {order_ref}\n  status partially_refunded  amount 4,500 KRW", text)
    assert "batch 1: matched (1 sales 4,500 KRW, 0 voids 0 KRW, 1 refunds 1,500 KRW); next batch 2" in lines
    assert 7_000 == (await phone.balance()).available
    assert text.endswith("bye\n")


async def test_repl_decline_keeps_the_sale_open_for_a_fresh_code(gateway, make_terminal, tmp_path: Path) -> None:
    """A declined code leaves the sale open; a scanned picture then pays it, and the receipt is in English."""
    terminal = await make_terminal(language="en")
    phone = await Phone.enrol(gateway.base_url)
    await earn(gateway, phone.member_id, 3_000)
    used = phone.next_code(time.time())
    await terminal.sell(1_000, typed=used)
    picture = tmp_path / "screen.png"
    picture.write_bytes(phone.render_png(phone.next_code(time.time()), "qr"))
    output = io.StringIO()

    await run_repl(terminal, ["total 2000", "]C0" + used, f"png {picture}", "batch"], output)
    lines = output.getvalue().splitlines()
    assert any(l.startswith("DECLINED (replayed_code)") for l in lines)
    assert line("Status", "APPROVED", 42) in lines
    assert line("Points balance", "0", 42) in lines
    assert any(l.startswith("batch 1: matched (2 sales 3,000 KRW") for l in lines)


async def test_repl_asks_for_a_total_before_a_code(gateway, make_terminal) -> None:
    """A code scanned with no open sale pays nothing and tells the cashier to enter the total first."""
    terminal = await make_terminal()
    code = offline_phone().next_code(time.time())
    output = io.StringIO()
    await run_repl(terminal, [code, "quit"], output)
    assert "no open sale: enter `total <amount>` first" in output.getvalue()
    assert [] == terminal.totals.payment_ids


async def test_declined_sale_is_typed_and_counted_nowhere(gateway, make_terminal, phone: Phone) -> None:
    """A sale above the balance raises Declined(insufficient_points) and leaves the terminal's totals empty."""
    terminal = await make_terminal()
    with pytest.raises(Declined) as declined:
        await terminal.sell(50_000, typed=phone.next_code(time.time()))
    assert ("insufficient_points", 0, 10_000) == (
        declined.value.decline_code, terminal.totals.sale_count, (await phone.balance()).available)


async def test_command_line_takes_the_key_from_the_environment(gateway, monkeypatch, tmp_path: Path) -> None:
    """`simulators terminal --store ...` with POINTGATE_POS_KEY_ID/SECRET set runs the till against the gateway."""
    key_id, secret = await gateway.app[MERCHANTS].issue_key("gs25")
    monkeypatch.setenv("POINTGATE_POS_KEY_ID", key_id)
    monkeypatch.setenv("POINTGATE_POS_SECRET", secret)
    output = io.StringIO()
    argv = ["--store", "gs25-hongdae-02", "--base-url", gateway.base_url, "--journal", str(tmp_path / "j.sqlite3")]
    # main runs its own event loop, as the installed command does, so it goes in a worker thread.
    status = await asyncio.to_thread(terminal_main, argv, stdin=io.StringIO("batch\nquit\n"), stdout=output)
    assert (0, True) == (status, "batch 1: matched (0 sales 0 KRW, 0 voids 0 KRW, 0 refunds 0 KRW); next batch 2"
                         in output.getvalue().splitlines())
    assert "GS25 Hongdae (gs25-hongdae-02/t1)" in output.getvalue()


def test_command_line_without_a_key_exits_2(monkeypatch, capsys) -> None:
    """Without a signing key the command says how to get one and exits with status 2."""
    monkeypatch.delenv("POINTGATE_POS_KEY_ID", raising=False)
    monkeypatch.delenv("POINTGATE_POS_SECRET", raising=False)
    assert 2 == terminal_main(["--store", "gs25-gangnam-01"], stdin=io.StringIO(""), stdout=io.StringIO())
    assert "issue-key" in capsys.readouterr().err
