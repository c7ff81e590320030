"""The operator console in a browser: a payment shows within a second, a decline under its reason, live."""

from __future__ import annotations

import time

import pytest

from gateway.web import pages
from pos_sdk import Declined
from tests.browser.conftest import PAGE_TIMEOUT_MS, console_token, enrolled, signed_in_wallet, till

expect = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed").expect
EN = pages.strings()["en"]


async def console(chromium, gateway, token: str):
    context = await chromium.new_context(viewport={"width": 1400, "height": 900}, locale="en-GB")
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.script_errors = errors
    await page.goto(gateway.base_url + "/console")
    await page.fill("#token", token)
    await page.click("#sign-in-form button[type=submit]")
    await expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    await expect(page.locator("#who")).to_contain_text("Operations (ops)")
    return page


async def test_the_console_shows_a_payment_within_a_second_and_a_decline_under_its_reason(web, chromium):
    """Paid at GS25 with the code on the wallet page: the console's list has it within a second; a replay counts as replayed_code."""
    page = await console(chromium, web, await console_token(web))
    await page.evaluate("window.notReloaded = true")
    member = await enrolled(web, 10_000)
    wallet = await signed_in_wallet(chromium, web, member["token"])
    terminal = await till(web)
    try:
        bars = await wallet.locator("#barcode").screenshot()
        sale = await terminal.sell(4_500, png=bars)
        answered = time.monotonic()
        row = page.locator(f'#payments tr[data-payment-id="{sale.payment.payment_id}"]')
        await row.wait_for(timeout=1_000)
        assert time.monotonic() - answered < 1.0
        await expect(row).to_contain_text("GS25 Gangnam Station")
        await expect(row).to_contain_text("₩4,500")
        await expect(row.locator(".badge")).to_have_text(EN["console.outcome.approved"])
        await expect(page.locator("#approved")).to_have_text("1")

        try:
            await terminal.sell(4_500, png=bars)
            raise AssertionError("a used code paid twice")
        except Declined as e:
            assert "replayed_code" == e.decline_code
    finally:
        await terminal.close()
    reason = page.locator('#declines tr[data-reason="replayed_code"]')
    await expect(reason).to_be_visible(timeout=2_000)
    await expect(reason).to_contain_text(EN["decline.replayed_code"])
    await expect(reason.locator("td.num")).to_have_text("1")
    await expect(page.locator('#payments tr[data-outcome="replayed_code"]')).to_have_count(1)
    await expect(page.locator("#declined")).to_have_text("1")
    await expect(page.locator("#p50")).not_to_have_text("–")
    await expect(page.locator("#lag")).to_contain_text(EN["console.journal_lag_unit"])
    # No key was exchanged with Taishin here (tests/e2e/test_web_api.py opens its circuit for real).
    await expect(page.locator('#partners tr[data-partner="taishin"]')).to_have_attribute("data-circuit", "no_key")
    await expect(page.locator('#settlement tr[data-merchant="gs25"]')).to_contain_text("₩4,500")
    assert True is await page.evaluate("window.notReloaded === true")
    assert [] == page.script_errors + wallet.script_errors
    await wallet.context.close()
    await page.context.close()


async def test_the_console_refuses_anything_but_a_console_token(web, chromium):
    """A member's token, or a made-up one, does not open the console; the page says why."""
    member = await enrolled(web, 1_000)
    context = await chromium.new_context(locale="en-GB")
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = await context.new_page()
    await page.goto(web.base_url + "/console")
    for token, message in ((member["token"], EN["error.console_token_format"]),
                           ("pgct_" + "A" * 43, EN["error.operator_unauthorized"])):
        await page.fill("#token", token)
        await page.click("#sign-in-form button[type=submit]")
        await expect(page.locator("#sign-in-error")).to_have_text(message)
    await expect(page.locator("#console")).to_be_hidden()
    await context.close()
