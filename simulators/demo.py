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

import secrets

from aiohttp import ClientSession, ClientTimeout, web

from gateway import codes, render, signing
from gateway.app import MERCHANTS, create_app
from gateway.embedded_redis import free_port
from gateway.runtime import open_runtime
from gateway.settings import load_settings
from gateway.tokens import Outcome

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


class SignedTerminal:
    """A GS25 terminal speaking the merchant API, signing as docs/signing.md says."""

    def __init__(self, session: ClientSession, base_url: str, key_id: str, secret: str) -> None:
        self.session, self.base_url, self.key_id, self.secret = session, base_url, key_id, secret
        self.place = {"store_id": "gs25-gangnam-01", "terminal_id": "t1"}

    async def post(self, path: str, document: dict) -> tuple[int, dict]:
        body = json.dumps(document).encode()
        headers = signing.signed_headers(self.secret, "POST", path, body, "gs25", self.key_id, time.time(), secrets.token_hex(12))
        headers |= {"Content-Type": "application/json", "Idempotency-Key": "demo-" + secrets.token_hex(8)}
        async with self.session.post(self.base_url + path, data=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)


def scan(png: bytes) -> str:
    """What the store's scanner reads from the phone's screen."""
    [result] = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    return result.text


async def at_the_store(story: Story, rt, settings, phone, member_id: str) -> None:
    app = create_app(dataclasses.replace(settings, redis_url=rt.redis_url))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await app[MERCHANTS].load_config(settings)
        key_id, secret = await app[MERCHANTS].issue_key("gs25")
        async with ClientSession(timeout=ClientTimeout(total=10)) as session:
            terminal = SignedTerminal(session, f"http://127.0.0.1:{port}", key_id, secret)
            step = codes.step_of(int(time.time()), settings.code_step_s)
            shown = codes.encode_code(rt.tokens.home.prefix, phone.slot, 1, phone.secret, step)
            (DEMO_DIR / "sale-1-code128.png").write_bytes(render.code128_png(shown))
            scanned = scan((DEMO_DIR / "sale-1-code128.png").read_bytes())
            status, sale = await terminal.post("/v1/payments", {
                "code": scanned, "amount": 4_500, "currency": "KRW", "order_ref": "GS25-DEMO-0001", **terminal.place})
            story.check(
                "pay 4,500 KRW at GS25 Gangnam by scanning the phone's Code 128",
                "approved, 4,500 points debited, balance 7,500",
                f"HTTP {status}, {sale.get('status')}, approval {sale.get('approval_code')}, "
                f"{sale.get('points')} points, balance {sale.get('balance_after')}",
                status == 201 and sale.get("status") == "approved" and sale.get("balance_after") == 7_500,
            )
            status, refund = await terminal.post(f"/v1/payments/{sale.get('payment_id')}/refunds", {"amount": 1_500, **terminal.place})
            story.check(
                "refund 1,500 KRW of it (one item returned)",
                "partially refunded, balance 9,000",
                f"HTTP {status}, {refund.get('payment', {}).get('status')}, balance {refund.get('refund', {}).get('balance_after')}",
                status == 201 and refund["refund"]["balance_after"] == 9_000,
            )
            shown = codes.encode_code(rt.tokens.home.prefix, phone.slot, 2, phone.secret, step)
            qr = render.qr_png(shown)
            (DEMO_DIR / "sale-2-qr.png").write_bytes(qr)
            status, second = await terminal.post("/v1/payments", {
                "code": scan(qr), "amount": 2_000, "currency": "KRW", "order_ref": "GS25-DEMO-0002", **terminal.place})
            status_c, cancelled = await terminal.post(f"/v1/payments/{second.get('payment_id')}/cancel", terminal.place)
            story.check(
                "a second sale of 2,000 KRW (QR scan), cancelled at the till",
                "approved with balance 7,000, then cancelled with balance 9,000",
                f"{second.get('status')} with balance {second.get('balance_after')}, "
                f"then HTTP {status_c} {cancelled.get('status')} with balance {cancelled.get('balance_after')}",
                second.get("balance_after") == 7_000 and cancelled.get("status") == "cancelled"
                and cancelled.get("balance_after") == 9_000,
            )
            status, replay = await terminal.post("/v1/payments", {
                "code": scanned, "amount": 1_000, "currency": "KRW", "order_ref": "GS25-DEMO-0003", **terminal.place})
            story.check(
                "the first code is scanned again for a new order",
                "declined as replayed_code, nothing debited",
                f"{replay.get('status')}: {(replay.get('decline') or {}).get('code')} "
                f"({(replay.get('decline') or {}).get('message')})",
                replay.get("status") == "declined" and replay["decline"]["code"] == "replayed_code",
            )
    finally:
        await runner.cleanup()


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
