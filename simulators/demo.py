"""The demo story (`make demo`): pointgate's main job, told step by step.

Starts the bundled Redis on a fresh data dir under `var/demo/` and the
gateway on a loopback port, then: enrols a member's phone, credits points
from an affiliate, shows the phone's current code (printed, and as Code 128 /
QR images), verifies a code once (accepted) and again (refused as replayed),
pays at GS25 by scanning the phone's barcode image, refunds part of it,
cancels another sale, and runs `gateway audit`.

Every step records what was expected and what happened; the summary is
printed and written to `var/demo/summary.json`, and the exit status is 0
only if every step behaved as expected.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import zxingcpp
from PIL import Image

import datetime as dt
from zoneinfo import ZoneInfo

from aiohttp import web

from gateway import codes, render
from gateway.app import MERCHANTS, create_app
from gateway.embedded_redis import free_port
from gateway.runtime import open_runtime
from gateway.settings import load_settings
from gateway.tokens import Outcome
from pos_sdk import AsyncPosClient, Declined, PosConfig, ReceiptData, parse_payment_code, render_receipt

DEMO_DIR = Path("var/demo")


@dataclass
class Step:
    name: str
    expected: str
    happened: str
    passed: bool


class Story:
    def __init__(self) -> None:
        self.steps: list[Step] = []

    def check(self, name: str, expected: str, happened: str, passed: bool) -> None:
        self.steps.append(Step(name, expected, happened, passed))
        mark = "ok  " if passed else "FAIL"
        print(f"[{mark}] {name}\n       expected: {expected}\n       happened: {happened}")

    @property
    def passed(self) -> bool:
        return all(step.passed for step in self.steps)


async def tell(story: Story) -> None:
    settings = load_settings(
        data_dir=str(DEMO_DIR / "redis"), keyring_path=str(DEMO_DIR / "keyring.json"), redis_url=""
    )
    async with open_runtime(settings) as rt:
        print(f"pointgate demo: bundled Redis at {rt.redis_url}, data in {DEMO_DIR}/redis\n")
        member_id = await rt.tokens.create_member()
        phone = await rt.tokens.enrol(member_id)
        story.check(
            "enrol a member's phone",
            "a device slot in the member's partition and an otpauth:// provisioning URI",
            f"member {member_id}, slot {phone.slot}, URI {phone.provisioning_uri.split('?')[0]}?...",
            phone.provisioning_uri.startswith("otpauth://") and phone.slot % 1000 == int(member_id[1:4]),
        )
        (DEMO_DIR / "provisioning-qr.png").write_bytes(phone.provisioning_qr_png)

        credit = await rt.ledger.credit(
            member_id, 12_000, "affiliate:hana-card", "demo-earning-1", rt.tokens.home.points_unit,
            kind="earning", meta={"affiliate": "hana-card", "reason": "card spend cashback"},
        )
        story.check(
            "Hana Card credits 12,000 points",
            "available balance 12,000",
            f"available balance {credit.available:,}",
            credit.available == 12_000,
        )

        now_s = int(time.time())
        step = codes.step_of(now_s, settings.code_step_s)
        code = codes.encode_code(rt.tokens.home.prefix, phone.slot, 0, phone.secret, step)
        online = await rt.tokens.issue_code(phone.slot, now_s)
        png, svg, qr = render.code128_png(code), render.code128_svg(code), render.qr_png(code)
        (DEMO_DIR / "code128.png").write_bytes(png)
        (DEMO_DIR / "code128.svg").write_bytes(svg)
        (DEMO_DIR / "qr.png").write_bytes(qr)
        scanned = {r.text for image in (png, qr) for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(image)))}
        story.check(
            "the phone shows its current code",
            "the offline code equals the server's online code, and both images scan back to it",
            f"{code} (refresh at {online.refresh_at_s - now_s} s, accepted for {online.expires_at_s - now_s} s); "
            f"images scan as {sorted(scanned)}",
            online.code == code and scanned == {code},
        )

        first = await rt.tokens.verify(code, now_s)
        story.check(
            "a store verifies the code",
            "accepted, naming the member",
            f"{first.outcome.value}, member {first.member_id}",
            first.outcome is Outcome.OK and first.member_id == member_id,
        )
        again = await rt.tokens.verify(code, now_s)
        story.check(
            "the same code is presented again (a photographed screen)",
            "refused as replayed",
            again.outcome.value,
            again.outcome is Outcome.REPLAYED,
        )

        await at_the_store(story, rt, settings, phone, member_id)

        env = dict(os.environ, REDIS_URL=rt.redis_url, POINTGATE_KEYRING_PATH=settings.keyring_path)
        audit = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "audit"], env=env, capture_output=True, text=True, timeout=120
        )
        output = (audit.stdout + audit.stderr).strip()
        story.check(
            "gateway audit replays the journal",
            "clean, exit status 0",
            f"exit status {audit.returncode}: {output.splitlines()[-1] if output else 'no output'}",
            audit.returncode == 0 and "clean" in output,
        )


def scan(png: bytes) -> str:
    """What the store's scanner reads from the phone's screen, as the POS parses it."""
    [result] = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    return parse_payment_code(result.text, {"9410", "8860"})


async def at_the_store(story: Story, rt, settings, phone, member_id: str) -> None:
    app = create_app(dataclasses.replace(settings, redis_url=rt.redis_url))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await app[MERCHANTS].load_config(settings)
        key_id, secret = await app[MERCHANTS].issue_key("gs25")
        config = PosConfig(f"http://127.0.0.1:{port}", "gs25", "gs25-gangnam-01", "t1", key_id, secret,
                           journal_path=str(DEMO_DIR / "gs25-t1-journal.sqlite3"))
        async with AsyncPosClient(config) as terminal:
            await sales(story, rt, settings, phone, terminal)
    finally:
        await runner.cleanup()


async def sales(story: Story, rt, settings, phone, terminal: AsyncPosClient) -> None:
    step = codes.step_of(int(time.time()), settings.code_step_s)
    shown = codes.encode_code(rt.tokens.home.prefix, phone.slot, 1, phone.secret, step)
    (DEMO_DIR / "sale-1-code128.png").write_bytes(render.code128_png(shown))
    scanned = scan((DEMO_DIR / "sale-1-code128.png").read_bytes())
    sale = await terminal.pay(scanned, 4_500, "GS25-DEMO-0001")
    story.check(
        "pay 4,500 KRW at GS25 Gangnam by scanning the phone's Code 128",
        "approved, 4,500 points debited, balance 7,500",
        f"{sale.status}, approval {sale.approval_code}, {sale.points} points, balance {sale.balance_after}",
        sale.status == "approved" and sale.balance_after == 7_500,
    )
    receipt = render_receipt(ReceiptData(
        store_name="GS25 강남역점", store_id=sale.store_id, terminal_id=sale.terminal_id,
        time=dt.datetime.fromisoformat(sale.created_at.replace("Z", "+00:00")).astimezone(ZoneInfo("Asia/Seoul")),
        order_ref=sale.order_ref, payment_id=sale.payment_id, approval_code=sale.approval_code, status=sale.status,
        amount=sale.amount, currency=sale.currency, points_used=sale.points, balance_after=sale.balance_after,
    ), width=42, language="ko")
    (DEMO_DIR / "receipt-sale-1.txt").write_text(receipt)
    refund = await terminal.refund(sale.payment_id, 1_500, "one item returned")
    story.check(
        "refund 1,500 KRW of it (one item returned)",
        "partially refunded, balance 9,000",
        f"{refund.payment.status}, balance {refund.refund.balance_after}",
        refund.payment.status == "partially_refunded" and refund.refund.balance_after == 9_000,
    )
    shown = codes.encode_code(rt.tokens.home.prefix, phone.slot, 2, phone.secret, step)
    qr = render.qr_png(shown)
    (DEMO_DIR / "sale-2-qr.png").write_bytes(qr)
    second = await terminal.pay(scan(qr), 2_000, "GS25-DEMO-0002")
    cancelled = await terminal.cancel(second.payment_id)
    story.check(
        "a second sale of 2,000 KRW (QR scan), cancelled at the till",
        "approved with balance 7,000, then cancelled with balance 9,000",
        f"{second.status} with balance {second.balance_after}, then {cancelled.status} with balance {cancelled.balance_after}",
        second.balance_after == 7_000 and cancelled.status == "cancelled" and cancelled.balance_after == 9_000,
    )
    try:
        replay = await terminal.pay(scanned, 1_000, "GS25-DEMO-0003")
        happened, passed = f"{replay.status} (it should not have been)", False
    except Declined as e:
        happened, passed = f"declined: {e.decline_code} ({e.message})", e.decline_code == "replayed_code"
    story.check("the first code is scanned again for a new order", "declined as replayed_code, nothing debited",
                happened, passed)


def main() -> int:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    story = Story()
    asyncio.run(tell(story))
    summary = {"passed": story.passed, "steps": [asdict(s) for s in story.steps]}
    (DEMO_DIR / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    passed = sum(s.passed for s in story.steps)
    print(f"\n{passed} of {len(story.steps)} steps behaved as expected; images and summary in {DEMO_DIR}/")
    return 0 if story.passed else 1


if __name__ == "__main__":
    sys.exit(main())
