"""The demo story (`make demo`): pointgate's main job, told step by step.

Starts the gateway (with the bundled Redis on a fresh data dir under
`var/demo/`) on a loopback port, then, through public surfaces only (the
HTTP APIs, the POS SDK and the simulators):

enrols two members' phones, credits points from Hana Card, pays at GS25 by
scanning the phone's barcode image, refunds part of it, cancels another sale,
survives a dropped answer (the SDK resolves it), refuses a replayed code,
closes the terminal's batch; in the app, Minji claims a GS25 coupon and pays
with it, Hana Bank credits points that expire, she cashes points out to her
bank account (the bank simulator) and her history shows every movement; pays
across the border both ways with Taishin
(a second pointgate under Taishin's configuration: our member at FamilyMart
Taiwan, a Taishin member at GS25), runs a short load with faults and its
report, and runs `gateway audit`.

Every step records what was expected and what happened; the summary is
printed and written to `var/demo/summary.json`, and the exit status is 0
only if every step behaved as expected. Barcode images, receipts and the
load report are left in `var/demo/`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.app import MERCHANTS, REDIS_URL, STORE, connect_partners, create_app
from gateway.embedded_redis import free_port
from gateway.settings import load_settings
from pos_sdk import Declined
from gateway.partners import PartnerKeys
from simulators import bank, load, partner
from simulators.fault_proxy import Fault, FaultProxy
from simulators.phone import Phone
from simulators.terminal import StoreTerminal, load_profiles

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
        print(f"[{mark}] {name}\n       expected: {expected}\n       happened: {happened}", flush=True)

    @property
    def passed(self) -> bool:
        return all(step.passed for step in self.steps)


async def tell(story: Story) -> None:
    port, taishin_port = free_port(), free_port()
    the_bank = await bank.Bank(closed_accounts={"110999000000"}).start()
    settings = load_settings(data_dir=str(DEMO_DIR / "redis"), keyring_path=str(DEMO_DIR / "keyring.json"), redis_url="",
                             bank_url=the_bank.url, bank_api_key=the_bank.api_key, bank_resolve_interval_s=0.5)
    settings = dataclasses.replace(settings, partners=tuple(
        dataclasses.replace(p, base_url=f"http://127.0.0.1:{taishin_port}") if p.id == "taishin" else p
        for p in settings.partners))
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base_url = f"http://127.0.0.1:{port}"
    print(f"pointgate demo: gateway at {base_url}, Redis {app[REDIS_URL]}, data in {DEMO_DIR}/\n", flush=True)
    taishin = None
    try:
        registry = app[MERCHANTS]
        await registry.load_config(settings)
        taishin = await partner.start(DEMO_DIR / "taishin", base_url, port=taishin_port)
        await exchange_keys(app, taishin)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            minji, gs25_key = await at_the_store(story, base_url, registry, session)
            await in_the_app(story, base_url, registry, session, gs25_key, minji, the_bank)
            await across_borders(story, base_url, gs25_key, minji, taishin)
            await under_load(story, base_url, app)
        await close_the_day(story, app, taishin)
        await audit(story, app[REDIS_URL], settings.keyring_path)
    finally:
        if taishin is not None:
            await taishin.close()
        await runner.cleanup()
        await the_bank.close()


async def exchange_keys(app, taishin: partner.PartnerNetwork) -> None:
    """Each network issues the other a signing key and stores the one it was given."""
    for_taishin = await app[MERCHANTS].issue_key("taishin")
    await taishin.use_home_key(for_taishin.key_id, for_taishin.secret)
    await PartnerKeys(app[STORE], app[MERCHANTS].keyring).set("taishin", *await taishin.issue_key_for_home())
    await connect_partners(app)


async def across_borders(story: Story, base_url: str, gs25_key, minji: Phone, taishin: partner.PartnerNetwork) -> None:
    before = (await minji.balance()).available
    fm_key = await taishin.app[MERCHANTS].issue_key("familymart-tw")
    familymart = StoreTerminal.open(load_profiles()["fm-taipei-101/t1"], base_url=taishin.url, key_id=fm_key.key_id,
                                    secret=fm_key.secret, journal_path=str(DEMO_DIR / "fm-taipei-101-t1.sqlite3"),
                                    language="en")
    try:
        sale = await familymart.sell(100, png=Phone.render_png(minji.next_code(time.time()), "qr"))
        (DEMO_DIR / "receipt-familymart.txt").write_text(sale.receipt)
    finally:
        await familymart.close()
    spent = before - (await minji.balance()).available
    story.check(
        "Minji pays 100 TWD at FamilyMart Taipei 101 with the same app (Taishin forwards her code to us)",
        "approved; ceil(100 TWD x 43.12 x 1.005) = 4,334 points debited at a locked quote",
        f"{sale.payment.status} at Taishin; {spent:,} points debited here",
        sale.payment.approved and spent == 4_334,
    )

    wen = await Phone.enrol(taishin.url)
    card = await taishin.app[MERCHANTS].issue_key("taishin-card")
    async with aiohttp.ClientSession() as taishin_session:
        await load.credit_member(taishin_session, taishin.url, (card.key_id, card.secret), wen.member_id, 500, "TS-CARD-0001",
                                  affiliate_id="taishin-card")
    gs25 = StoreTerminal.open(load_profiles()["gs25-hongdae-02/t1"], base_url=base_url, key_id=gs25_key.key_id,
                              secret=gs25_key.secret, journal_path=str(DEMO_DIR / "gs25-hongdae-02-t1.sqlite3"))
    try:
        visit = await gs25.sell(1_000, png=Phone.render_png(wen.next_code(time.time())))
        (DEMO_DIR / "receipt-gs25-taishin-member.txt").write_text(visit.receipt)
    finally:
        await gs25.close()
    wen_left = (await wen.balance()).available
    story.check(
        "Wen, a Taishin member, pays 1,000 KRW at GS25 Hongdae with her Taishin code",
        "approved; Taishin debits her ceil(1,000 KRW x 1.005 / 43.12) = 24 TSP",
        f"{visit.payment.status}; Taishin's rate {Decimal(visit.payment.fx['rate']) if visit.payment.fx else 0:.6f} TSP per KRW; "
        f"her Taishin balance {wen_left} TSP",
        visit.payment.approved and wen_left == 476,
    )

    # Minji opens a Taishin account too and moves points both ways at the published rate.
    minji_tw = await Phone.enrol(taishin.url)
    home_before = (await minji.balance()).available
    async with aiohttp.ClientSession() as http:
        out = await _exchange(http, base_url, minji, "taishin", minji_tw.member_id, 3_000, "demo-exchange-1")
        back = await _exchange(http, taishin.url, minji_tw, "hana", minji.member_id, 50, "demo-exchange-2")
    home_after, tw_after = (await minji.balance()).available, (await minji_tw.balance()).available
    story.check(
        "Minji exchanges 3,000 points to her Taishin account, then 50 TSP back",
        "3,000 HMP become floor(3,000 / 43.3356) = 69 TSP; 50 TSP come back at Taishin's rate",
        f"{out['state']}: {out['points']:,} HMP -> {out['received']} TSP at {out['rate']} HMP/TSP; "
        f"{back['state']}: {back['points']} TSP -> {back['received']:,} HMP; "
        f"balances {home_after:,} HMP and {tw_after} TSP",
        out["received"] == 69 and home_after == home_before - 3_000 + back["received"] and tw_after == 69 - 50,
    )


async def at_the_store(story: Story, base_url: str, registry, session: aiohttp.ClientSession):
    """Domestic payments at GS25 Gangnam; returns Minji's phone and GS25's key (its terminals share it)."""
    minji, jun = await Phone.enrol(base_url), await Phone.enrol(base_url)
    minji.save(DEMO_DIR / "phone-minji.json")
    story.check(
        "enrol two members' phones over the member API",
        "two wallets, each phone holding its own secret and token",
        f"members {minji.member_id} (slot {minji.slot}) and {jun.member_id} (slot {jun.slot})",
        minji.member_id != jun.member_id and minji.slot % 1000 == int(minji.member_id[1:4]),
    )

    hana_card = await registry.issue_key("hana-card")
    credits = [await load.credit_member(session, base_url, (hana_card.key_id, hana_card.secret), phone.member_id, points, ref)
               for phone, points, ref in ((minji, 12_000, "CARD-CASHBACK-2026-11-0001"), (jun, 3_000, "CARD-CASHBACK-2026-11-0002"))]
    balances = [(await minji.balance()).available, (await jun.balance()).available]
    story.check(
        "Hana Card credits earned points (signed POST /v1/earnings)",
        "12,000 and 3,000 points",
        f"{balances[0]:,} and {balances[1]:,} points (earnings {credits[0]['earning_id']}, {credits[1]['earning_id']})",
        balances == [12_000, 3_000],
    )

    gs25 = await registry.issue_key("gs25")
    profile = load_profiles()["gs25-gangnam-01/t1"]
    proxy = await FaultProxy("127.0.0.1", int(base_url.rsplit(":", 1)[1])).start()
    terminal = StoreTerminal.open(profile, base_url=proxy.url, key_id=gs25.key_id, secret=gs25.secret,
                                  journal_path=str(DEMO_DIR / "gs25-gangnam-01-t1.sqlite3"), language="ko")
    try:
        code = minji.next_code(time.time())
        png = Phone.render_png(code, "code128")
        (DEMO_DIR / "minji-code128.png").write_bytes(png)
        (DEMO_DIR / "minji-code128.svg").write_bytes(_svg(code))
        sale = await terminal.sell(4_500, png=png)
        (DEMO_DIR / "receipt-sale-1.txt").write_text(sale.receipt)
        story.check(
            "Minji pays 4,500 KRW at GS25 Gangnam; the till scans her phone's Code 128 image",
            "approved, 4,500 points debited, balance 7,500",
            f"{sale.payment.status}, approval {sale.payment.approval_code}, balance {sale.payment.balance_after:,}",
            sale.payment.approved and sale.payment.balance_after == 7_500,
        )

        slip = await terminal.refund(sale.payment.payment_id, 1_500)
        (DEMO_DIR / "receipt-refund-1.txt").write_text(slip.receipt)
        story.check(
            "refund 1,500 KRW of it (one item returned)",
            "partially refunded, balance 9,000",
            f"{slip.payment.status}, balance {slip.refund.balance_after:,}",
            slip.payment.status == "partially_refunded" and slip.refund.balance_after == 9_000,
        )

        qr = Phone.render_png(jun.next_code(time.time()), "qr")
        (DEMO_DIR / "jun-qr.png").write_bytes(qr)
        second = await terminal.sell(2_000, png=qr)
        cancelled = await terminal.cancel(second.payment.payment_id)
        story.check(
            "Jun pays 2,000 KRW by QR, then the cashier cancels the sale",
            "approved with balance 1,000, then cancelled with balance 3,000",
            f"{second.payment.status} with balance {second.payment.balance_after:,}, "
            f"then {cancelled.payment.status} with balance {cancelled.payment.balance_after:,}",
            second.payment.balance_after == 1_000 and cancelled.payment.status == "cancelled"
            and cancelled.payment.balance_after == 3_000,
        )

        proxy.once(Fault.DROP_RESPONSE, method="POST", path_prefix="/v1/payments")
        dropped = await terminal.sell(1_000, png=Phone.render_png(minji.next_code(time.time())))
        story.check(
            "the network drops the gateway's answer to a 1,000 KRW sale",
            "the SDK asks again with the same key: approved once, balance 8,000",
            f"{dropped.payment.status}, balance {dropped.payment.balance_after:,} (proxy: {proxy.stats.faults[Fault.DROP_RESPONSE]} answer dropped)",
            dropped.payment.approved and dropped.payment.balance_after == 8_000 and (await minji.balance()).available == 8_000,
        )

        try:
            await terminal.sell(500, png=png)
            happened, passed = "approved (it should not have been)", False
        except Declined as e:
            happened, passed = f"declined: {e.decline_code} ({e.message})", e.decline_code == "replayed_code"
        story.check("someone scans a photo of Minji's first code", "declined as replayed_code, nothing debited",
                    happened, passed and (await minji.balance()).available == 8_000)

        batch = await terminal.close_batch()
        story.check(
            "the till closes its batch",
            "the till's own totals match the gateway's: 3 sales, 1 void, 1 refund",
            f"batch {batch.batch_no}: {batch.status}; gateway {dict(batch.gateway)}",
            batch.matched and batch.gateway["sale_count"] == 3 and batch.gateway["void_count"] == 1,
        )
    finally:
        await terminal.close()
        await proxy.close()
    return minji, gs25


async def in_the_app(story: Story, base_url: str, registry, session: aiohttp.ClientSession, gs25_key, minji: Phone,
                     the_bank: "bank.Bank") -> None:
    """The member app: a coupon at GS25, points that expire, a cash-out, and the history of it all."""
    coupon = await minji.claim_coupon("gs25-welcome", "demo-claim-1")
    terminal = StoreTerminal.open(load_profiles()["gs25-gangnam-01/t2"], base_url=base_url, key_id=gs25_key.key_id,
                                  secret=gs25_key.secret, journal_path=str(DEMO_DIR / "gs25-gangnam-01-t2.sqlite3"),
                                  language="en")
    try:
        sale = await terminal.sell(6_000, png=Phone.render_png(minji.next_code(time.time())), coupons=(coupon["code"],))
    finally:
        await terminal.close()
    (DEMO_DIR / "receipt-coupon.txt").write_text(sale.receipt)
    story.check(
        "Minji claims the GS25 welcome coupon in the app and pays 6,000 KRW at GS25 Gangnam with it",
        "10% off: 600 KRW discount, 5,400 points debited, balance 2,600; the receipt shows the coupon",
        f"{sale.payment.status}, discount {sale.payment.discount:,} ({coupon['code']}), "
        f"{sale.payment.points:,} points, balance {sale.payment.balance_after:,}",
        sale.payment.approved and sale.payment.discount == 600 and sale.payment.balance_after == 2_600
        and "GS25 10% off" in sale.receipt,
    )

    hana_bank = await registry.issue_key("hana-bank")
    expires = (datetime.now(timezone.utc) + timedelta(days=90)).isoformat(timespec="seconds")
    await load.credit_member(session, base_url, (hana_bank.key_id, hana_bank.secret), minji.member_id, 20_000,
                             "BANK-SALARY-BONUS-2026-12", affiliate_id="hana-bank", expires_at=expires)
    balance = await minji._get(f"/v1/members/{minji.member_id}")
    story.check(
        "Hana Bank credits 20,000 points that expire in 90 days",
        "balance 22,600, of which 20,000 expiring (spent first)",
        f"balance {balance['available']:,}, expiring {balance['expiring']:,} on {balance['next_expiry']['expires_at'][:10]}",
        balance["available"] == 22_600 and balance["expiring"] == 20_000,
    )

    account = await minji.link_bank_account("081", "110123456789", "김민지")
    cashout = await minji.cash_out(10_000, account["bank_account_id"], "demo-cashout-1")
    for _ in range(50):
        if cashout["state"] != "pending":
            break
        await asyncio.sleep(0.1)
        cashout = await minji.cashout(cashout["cashout_id"])
    paid = the_bank.paid_to("081", "110123456789")
    story.check(
        "Minji cashes out 10,000 points to her bank account (the bank simulator)",
        "paid: the bank transfers 9,500 KRW once (500 points fee), balance 12,600",
        f"{cashout['state']} to {account['account_number_masked']}: bank paid {paid:,} KRW, fee {cashout['fee_points']}, "
        f"balance {(await minji.balance()).available:,}",
        cashout["state"] == "paid" and paid == 9_500 and (await minji.balance()).available == 12_600,
    )

    history = await minji.history(limit=10)
    lines = [f"{e['at'][11:19]} {e['kind']:<14} {e['points']:+8,}  {_what(e)}" for e in history]
    (DEMO_DIR / "minji-history.txt").write_text("\n".join(lines) + "\n")
    kinds = [e["kind"] for e in history]
    story.check(
        "Minji's app shows her history, newest first",
        "the cash-out (held, then paid), the earning and the coupon payment, each with its details",
        "; ".join(lines[:5]),
        kinds[:4] == ["cashout_paid", "cashout", "earning", "payment"] and history[3]["details"].get("discount") == 600,
    )


def _what(event: dict) -> str:
    details = event["details"]
    if event["kind"] == "payment":
        off = f", {details['discount']:,} off" if details.get("discount") else ""
        return f"{details.get('store_name', details.get('merchant_id'))} {details['amount']:,} {details['currency']}{off}"
    if event["kind"] == "earning":
        return f"from {details['affiliate_id']}" + (f", expires {details['expires_at'][:10]}" if "expires_at" in details else "")
    if event["kind"].startswith("cashout"):
        return f"cash-out {details.get('cashout_id', '')}" + (f", fee {details['fee']}" if "fee" in details else "")
    return ", ".join(f"{k} {v}" for k, v in details.items() if k in ("payment_id", "partner", "merchant_id"))


async def _exchange(http: aiohttp.ClientSession, base_url: str, phone: Phone, partner_id: str, partner_member_id: str,
                    points: int, key: str) -> dict:
    """The member app's exchange request (member API, bearer token)."""
    async with http.post(f"{base_url}/v1/members/{phone.member_id}/exchanges",
                         json={"partner": partner_id, "partner_member_id": partner_member_id, "points": points},
                         headers={"Authorization": f"Bearer {phone.token}", "Idempotency-Key": key}) as response:
        doc = await response.json()
        if "state" not in doc:
            raise RuntimeError(f"exchange refused: HTTP {response.status} {doc.get('code')}: {doc.get('detail')}")
        return doc


async def under_load(story: Story, base_url: str, app) -> None:
    options = load.Options(
        base_url=base_url, terminals=4, members=12, rate_per_s=25.0, seconds=4.0, seed=7,
        faults=(("delay", 0.05), ("drop_response", 0.03), ("reset", 0.02)),
        report_path=str(DEMO_DIR / "load-report.json"), var_dir=str(DEMO_DIR / "load"), progress=False,
    )
    report = await load.run_load(options, load.RegistryAdmin(app[MERCHANTS], app[STORE]))
    latency = report.latency_ms.get("all", {})
    story.check(
        "a short load run with faults (delays, dropped answers, resets)",
        "every check passes: codes approved once, nothing unresolved, points conserved, audit clean",
        f"{sum(sum(v.values()) for v in report.outcomes.values())} operations, "
        f"{report.throughput_per_s:.1f}/s, p50 {latency.get('p50', 0):.1f} ms, p99 {latency.get('p99', 0):.1f} ms; "
        + ", ".join(f"{c.name} {'ok' if c.passed else 'FAILED'}" for c in report.checks),
        report.passed,
    )
    print(load.render_report(report), flush=True)


async def close_the_day(story: Story, app, taishin: partner.PartnerNetwork) -> None:
    """Both networks settle the business day (as if after its cut-off: the demo does not wait for
    midnight), and the two sides' network files are reconciled."""
    from gateway.app import SETTINGS
    from gateway.clock import wall_ms
    from gateway.payments import business_day
    from gateway.settlement import Settlement, reconcile_network

    day = business_day(wall_ms(), app[SETTINGS].member_day_time_zone, "00:00")
    tomorrow = lambda: wall_ms() + 86_400_000  # noqa: E731  the clock after the day's cut-off
    home = await Settlement(app[STORE], app[SETTINGS], app[MERCHANTS], now_ms=tomorrow).settle_day(day, DEMO_DIR / "settlements")
    again = await Settlement(app[STORE], app[SETTINGS], app[MERCHANTS], now_ms=tomorrow).settle_day(day, DEMO_DIR / "settlements")
    theirs = await Settlement(taishin.app[STORE], taishin.settings, taishin.app[MERCHANTS],
                              now_ms=tomorrow).settle_day(day, DEMO_DIR / "taishin-settlements")
    print(f"\nsettlement of {day} (files in {home.directory}/):")
    for merchant in home.merchants:
        t = merchant["totals"]
        print(f"  {merchant['merchant_name']:<18} sales {t['sales']['count']:>3} {t['sales']['points']:>9,}  "
              f"given back {t['refunds']['points'] + t['cancels']['points'] + t['reversals']['points']:>8,}  "
              f"payable {t['payable_points']:>9,}  fee {t['fee_points']:>6,}  net {t['net_payable_points']:>9,} KRW"
              + (f"  coupons {t['discounts']}" if t["discounts"] else ""))
    [ours] = [n for n in home.networks if n["partner"] == "taishin"]
    [mirror] = [n for n in theirs.networks if n["partner"] == "hana"]
    recon = reconcile_network(ours, mirror)
    net = ", ".join(f"{'we pay' if v > 0 else 'Taishin pays'} {abs(v):,} {c}" for c, v in ours["net"].items())
    print(f"  network Taishin: inbound {ours['inbound']['count']} ({ours['inbound']['amounts']}), "
          f"outbound {ours['outbound']['count']} ({ours['outbound']['amounts']}); net: {net}; "
          f"reconciled with Taishin's file: {recon['status']} ({recon['matched']} items)\n", flush=True)
    gs25 = next((m for m in home.merchants if m["merchant_id"] == "gs25"), None)
    story.check(
        "the day closes: settlement files for every merchant, the network net position, and Taishin's side",
        "files written; a rerun is identical; each merchant's net plus fee equals its payable; "
        "our Taishin file reconciles with Taishin's with no exceptions",
        f"{len(home.merchants)} merchants (GS25 net {gs25['totals']['net_payable_points'] if gs25 else 0:,} KRW); "
        f"network net {net}; reconciliation {recon['status']} with {len(recon['exceptions'])} exceptions",
        again.summary() == home.summary() and recon["status"] == "matched"
        and all(m["totals"]["net_payable_points"] + m["totals"]["fee_points"] == m["totals"]["payable_points"]
                for m in home.merchants) and (home.directory / "summary.json").exists(),
    )


async def audit(story: Story, redis_url: str, keyring_path: str) -> None:
    env = dict(os.environ, REDIS_URL=redis_url, POINTGATE_KEYRING_PATH=keyring_path)
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway.cli", "audit"], env=env, capture_output=True, text=True, timeout=120)
    output = (result.stdout + result.stderr).strip()
    story.check(
        "gateway audit replays the journal",
        "clean, exit status 0",
        f"exit status {result.returncode}: {output.splitlines()[-1] if output else 'no output'}",
        result.returncode == 0 and "clean" in output,
    )


def _svg(code: str) -> bytes:
    from gateway import render

    return render.code128_svg(code)


def main() -> int:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    story = Story()
    try:
        asyncio.run(tell(story))
    except Exception as e:  # a step that crashed is a failed step, reported like the others
        story.check("the story runs to its end", "no error", f"{type(e).__name__}: {e}", False)
    summary = {"passed": story.passed, "steps": [asdict(s) for s in story.steps]}
    (DEMO_DIR / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    passed = sum(s.passed for s in story.steps)
    print(f"\n{passed} of {len(story.steps)} steps behaved as expected; images, receipts and reports in {DEMO_DIR}/")
    return 0 if story.passed else 1


if __name__ == "__main__":
    sys.exit(main())
