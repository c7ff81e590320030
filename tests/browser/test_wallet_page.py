"""The member's web wallet in a browser: the code scans off the screen and pays, and the page keeps up live."""

from __future__ import annotations

import io

import pytest
import zxingcpp
from PIL import Image

from gateway.settings import load_settings
from gateway.web import pages
from pos_sdk import Declined
from tests.browser.conftest import enrolled, phone, signed_in_wallet, till
from tests.e2e.conftest import serving

expect = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed").expect
EN = pages.strings()["en"]
KO = pages.strings()["ko"]


def readings(png: bytes) -> set[tuple[str, str]]:
    with Image.open(io.BytesIO(png)) as image:
        return {(r.format.name, r.text) for r in zxingcpp.read_barcodes(image) if r.valid}


async def test_the_code_on_the_screen_pays_at_a_gs25_till_and_the_page_shows_it_with_a_new_code(web, chromium):
    """Screenshot -> zxing-cpp -> GS25 terminal: approved; the page shows store, amount, points, balance and a fresh code, unreloaded."""
    member = await enrolled(web, 20_000)
    page = await signed_in_wallet(chromium, web, member["token"])
    await page.evaluate("window.notReloaded = true")
    code = await page.get_attribute("#code-card", "data-code")
    screen = await page.screenshot()
    assert {("Code128", code), ("QRCode", code)} == readings(screen)
    assert code.replace(" ", "") == (await page.text_content("#code-digits")).replace(" ", "")

    terminal = await till(web)
    try:
        bars = await page.locator("#barcode").screenshot()
        sale = await terminal.sell(4_500, png=bars)
        assert ("approved", 15_500) == (sale.payment.status, sale.payment.balance_after)
        paid = page.locator("#paid")
        await expect(paid).to_be_visible()
        await expect(page.locator("#paid-store")).to_have_text("GS25 Gangnam Station")
        await expect(page.locator("#paid-amount")).to_have_text("₩4,500")
        await expect(page.locator("#paid-points")).to_have_text("4,500 HMP")
        await expect(page.locator("#paid-balance")).to_have_text("15,500 HMP")
        await expect(paid).to_have_attribute("data-payment-id", sale.payment.payment_id)
        await expect(page.locator("#available")).to_have_text("15,500 HMP")
        await expect(page.locator("#history li").first).to_have_attribute("data-kind", "payment")
        await page.wait_for_function("used => document.getElementById('code-card').dataset.code !== used", arg=code)
        fresh = await page.get_attribute("#code-card", "data-code")
        assert fresh[:14] == code[:14] and fresh != code

        # The fresh code pays too, this time scanned from its QR.
        second = await terminal.sell(1_500, png=await page.locator("#qr").screenshot())
        assert ("approved", 14_000) == (second.payment.status, second.payment.balance_after)
        await expect(page.locator("#paid-balance")).to_have_text("14,000 HMP")
        try:
            await terminal.sell(1_000, png=bars)  # the first picture again: a photographed code
            raise AssertionError("a used code paid twice")
        except Declined as e:
            assert "replayed_code" == e.decline_code
    finally:
        await terminal.close()
    assert True is await page.evaluate("window.notReloaded === true")
    assert [] == page.script_errors
    await page.context.close()


async def test_the_code_counts_down_to_the_end_of_its_step(web, chromium):
    """The countdown shows the seconds left in the code's 30-second step and moves on its own."""
    member = await enrolled(web, 1_000)
    page = await signed_in_wallet(chromium, web, member["token"])
    text = await page.text_content("#countdown-text")
    seconds = int("".join(ch for ch in text if ch.isdigit()))
    assert 0 <= seconds <= 30 and text == EN["wallet.countdown"].format(s=seconds)
    await page.wait_for_function("s => document.getElementById('countdown-text').textContent !== s", arg=text)
    await page.context.close()


async def test_the_language_switch_changes_every_label_without_a_reload(web, chromium):
    """한국어 / English: every labelled element shows the chosen language's string, and the choice is kept."""
    member = await enrolled(web, 1_000)
    page = await signed_in_wallet(chromium, web, member["token"])
    for lang, table in (("ko", KO), ("en", EN)):
        await page.click(f"button.lang[data-lang={lang}]")
        labels = await page.eval_on_selector_all("[data-i18n]", "els => els.map(e => [e.dataset.i18n, e.textContent])")
        assert [] == [(key, text) for key, text in labels if text != table[key]]
        assert lang == await page.get_attribute("html", "lang")
        countdown = await page.text_content("#countdown-text")
        assert countdown.startswith(table["wallet.countdown"].split("{s}")[0])
    await page.click("button.lang[data-lang=ko]")
    await page.reload()
    await expect(page.locator("#code-heading")).to_have_text(KO["wallet.pay_heading"])
    await page.context.close()


async def test_the_forms_refuse_bad_input_with_messages_the_member_can_read(web, chromium):
    """Sign-in, coupon, bank account, cash-out and exchange forms show why they refused, in the page's language."""
    page = await phone(chromium)
    await page.goto(web.base_url + "/wallet")
    error = page.locator("#sign-in-error")
    for token, message in (("hello", EN["error.token_format"]), ("pgmt_000_" + "A" * 43, EN["error.unauthorized"])):
        await page.fill("#token", token)
        await page.click("#sign-in-form button[type=submit]")
        await expect(error).to_be_visible()
        await expect(error).to_have_text(message)
    member = await enrolled(web, 3_000)
    await page.fill("#token", member["token"])
    await page.click("#sign-in-form button[type=submit]")
    await expect(page.locator("#wallet")).to_be_visible()

    async def refused(form: str, fields: dict[str, str], message: str) -> None:
        for selector, value in fields.items():
            if await page.locator(selector).evaluate("e => e.tagName") == "SELECT":
                await page.select_option(selector, value)
            else:
                await page.fill(selector, value)
        await page.click(f"#{form}-form button[type=submit]")
        shown = page.locator(f"#{form}-error")
        await expect(shown).to_be_visible()
        await expect(shown).to_have_text(message)

    await refused("claim", {"#claim-campaign": ""}, EN["error.choose_campaign"])
    await refused("link", {"#bank-code": "12", "#account-number": "1234567890", "#holder-name": "Minji"}, EN["error.bank_code"])
    await refused("link", {"#bank-code": "081", "#account-number": "123-456-7890"}, EN["error.account_number"])
    await refused("link", {"#account-number": "1234567890", "#holder-name": "   "}, EN["error.holder_name"])
    await refused("cashout", {"#cashout-points": "abc"}, EN["error.points_whole"])
    await refused("cashout", {"#cashout-points": "0"}, EN["error.points_whole"])
    await refused("cashout", {"#cashout-points": "2000"}, EN["error.choose_account"])
    await refused("exchange", {"#exchange-member": "not valid!", "#exchange-points": "100"}, EN["error.partner_member_id"])
    await refused("exchange", {"#exchange-member": "m108a1b2c3d4e5f6", "#exchange-points": "-5"}, EN["error.points_whole"])

    # Refusals of the gateway's own are shown as the member's language says them.
    await page.fill("#holder-name", "Kim Minji")
    await page.click("#link-form button[type=submit]")
    await expect(page.locator("#link-result")).to_be_visible()
    await expect(page.locator("#cashout-account option")).to_have_count(1)
    await refused("cashout", {"#cashout-points": "500000"}, EN["error.insufficient_points_for_cashout"])
    await page.click("button.lang[data-lang=ko]")
    await refused("cashout", {"#cashout-points": "500000"}, KO["error.insufficient_points_for_cashout"])
    await refused("claim", {"#claim-campaign": ""}, KO["error.choose_campaign"])
    await page.select_option("#claim-campaign", "gs25-welcome")
    await page.click("#claim-form button[type=submit]")
    await expect(page.locator("#claim-result")).to_be_visible()
    await expect(page.locator("#coupons li")).to_have_count(1)
    await refused("claim", {"#claim-campaign": "gs25-welcome"}, KO["error.coupon_limit_reached"])
    await expect(page.locator("#available")).to_have_text("3,000 HMP")  # nothing refused moved a point
    assert [] == page.script_errors
    await page.context.close()


async def test_no_page_shows_another_members_data(web, chromium):
    """Two phones: one member's payment and identity never reach the other's page, and the page cannot be pointed at them."""
    minji, jun = await enrolled(web, 10_000), await enrolled(web, 10_000)
    minji_page = await signed_in_wallet(chromium, web, minji["token"])
    jun_page = await signed_in_wallet(chromium, web, jun["token"])
    terminal = await till(web)
    try:
        sale = await terminal.sell(3_333, png=await jun_page.locator("#barcode").screenshot())
    finally:
        await terminal.close()
    await expect(jun_page.locator("#paid")).to_be_visible()
    await minji_page.wait_for_timeout(1_500)  # well past the time Jun's page took
    await expect(minji_page.locator("#paid")).to_be_hidden()
    minji_html = await minji_page.content()
    for secret in (jun["member_id"], jun["token"], sale.payment.payment_id, "3,333", str(jun["device"]["slot"])):
        assert secret not in minji_html
    await expect(minji_page.locator("#available")).to_have_text("10,000 HMP")
    # Minji's token cannot read Jun's wallet, whatever the page is made to ask.
    answer = await minji_page.evaluate(
        """async ([id, slot]) => {
             const token = sessionStorage.getItem("pg.wallet.token");
             const r = await fetch(`/v1/members/${id}/devices/${slot}/code.json`, {headers: {Authorization: "Bearer " + token}});
             return [r.status, (await r.json()).code];
           }""", [jun["member_id"], jun["device"]["slot"]])
    assert [404, "member_not_found"] == answer
    # Each phone keeps its own token; signing out leaves nothing of the wallet on the page.
    assert jun["token"] == await jun_page.evaluate("sessionStorage.getItem('pg.wallet.token')")
    await minji_page.click("#sign-out")
    await expect(minji_page.locator("#sign-in")).to_be_visible()
    after = await minji_page.content()
    assert (False, False, None) == (minji["member_id"] in after, minji["token"] in after,
                                    await minji_page.evaluate("sessionStorage.getItem('pg.wallet.token')"))
    requests = []
    minji_page.on("request", lambda r: requests.append(r.url))
    await minji_page.reload()
    assert [] == [url for url in requests if minji["token"] in url or "token=" in url]
    for page in (minji_page, jun_page):
        assert [] == page.script_errors
        await page.context.close()


async def test_a_link_with_the_token_in_its_fragment_signs_in_and_forgets_the_fragment(web, chromium):
    """`make serve`'s link: the fragment never reaches the server, and the address bar drops it at once."""
    member = await enrolled(web, 1_000)
    page = await phone(chromium)
    sent = []
    page.on("request", lambda r: sent.append(r.url))
    await page.goto(f"{web.base_url}/wallet#token={member['token']}")
    await page.wait_for_selector("#code-card[data-code]")
    assert web.base_url + "/wallet" == page.url
    assert [] == [url for url in sent if member["token"] in url]
    assert member["member_id"] == await page.get_attribute("body", "data-member")
    await page.context.close()


async def test_the_page_shows_a_new_code_when_the_step_ends(home_redis, store, tmp_path, chromium):
    """Without any payment the code changes as its step ends (a 10-second step here, 30 in production)."""
    settings = load_settings(env={}, **home_redis.settings, keyring_path=str(tmp_path / "keyring.json"),
                             data_dir=str(tmp_path / "redis"), code_step_s=10)
    async with serving(settings) as gateway:
        member = await enrolled(gateway, 1_000)
        page = await signed_in_wallet(chromium, gateway, member["token"])
        first = await page.get_attribute("#code-card", "data-code")
        await page.wait_for_function("used => document.getElementById('code-card').dataset.code !== used", arg=first,
                                     timeout=12_000)
        second = await page.get_attribute("#code-card", "data-code")
        countdown = int("".join(ch for ch in await page.text_content("#countdown-text") if ch.isdigit()))
        assert (first[:15], True) == (second[:15], first != second)  # same device and seq 0, the next step's code
        assert 8 <= countdown <= 10
        assert [] == page.script_errors
        await page.context.close()
