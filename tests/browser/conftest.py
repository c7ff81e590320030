"""Browser tests: the web wallet and the operator console in headless Chromium, driven by Playwright.

The browser is Debian's `chromium` (Playwright for Python launches it as its
executable; nothing is downloaded). `.ci/run` installs it when it is missing,
so CI always runs these. On a machine without it every test here is skipped,
and the end of the run says so in one line naming what to install.

`POINTGATE_CHROMIUM=/path/to/chromium` picks another Chromium;
`POINTGATE_REQUIRE_BROWSER=1` (set by `.ci/run`) makes a missing browser an
error instead of a skip.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from gateway.app import MEMBERS, MERCHANTS, STORE
from gateway.settings import load_settings
from gateway.web.operator_tokens import OperatorTokens
from simulators.bank import Bank
from simulators.terminal import StoreTerminal, load_profiles
from tests.e2e.conftest import serving

HERE = Path(__file__).resolve().parent
CHROMIUM_NAMES = ("chromium", "chromium-browser")
# As root (CI) Chromium needs --no-sandbox, which Playwright adds; the rest keep it off the network:
# this machine has no route out, and Chromium's background services would only time out.
CHROMIUM_ARGS = ["--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-default-apps", "--disable-extensions"]
BANK_API_KEY = "browser-tests-bank-" + "0" * 12
PAGE_TIMEOUT_MS = 5_000
"""Every wait in these tests: a page that needs longer than this to show something is broken."""


def find_browser() -> tuple[str | None, str]:
    """(Chromium's path, "") or (None, why these tests cannot run)."""
    if importlib.util.find_spec("playwright") is None:
        return None, "Playwright for Python is not installed (pip install -e '.[test]')"
    chosen = os.environ.get("POINTGATE_CHROMIUM")
    if chosen:
        return (chosen, "") if os.access(chosen, os.X_OK) else (None, f"POINTGATE_CHROMIUM={chosen} is not executable")
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found, ""
    return None, "no Chromium found: apt-get install chromium (or set POINTGATE_CHROMIUM)"


BROWSER, WHY_NOT = find_browser()


def pytest_collection_modifyitems(config, items):
    if BROWSER:
        return
    if os.environ.get("POINTGATE_REQUIRE_BROWSER") == "1":  # .ci/run: CI must run these, never skip them
        raise pytest.UsageError(f"POINTGATE_REQUIRE_BROWSER=1 but the browser tests cannot run: {WHY_NOT}")
    skip = pytest.mark.skip(reason=f"browser tests skipped: {WHY_NOT}")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if not BROWSER:
        terminalreporter.write_sep("!", f"BROWSER TESTS SKIPPED: {WHY_NOT}", yellow=True, bold=True)


@pytest.fixture(scope="session")
async def chromium():
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=BROWSER, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def web(home_redis, store, tmp_path):
    """A gateway with the bank simulator behind it (cash-outs work), over the real Redis."""
    async with Bank(api_key=BANK_API_KEY) as bank:
        settings = load_settings(env={}, **home_redis.settings, keyring_path=str(tmp_path / "keyring.json"),
                                 data_dir=str(tmp_path / "redis"), bank_url=bank.url, bank_api_key=BANK_API_KEY)
        async with serving(settings) as gateway:
            gateway.tmp_path = tmp_path
            yield gateway


async def enrolled(gateway, points: int) -> dict:
    """A member enrolled over the member API (token and all), with `points` from Hana Card."""
    enrolment = await gateway.app[MEMBERS].enrol_member()
    await gateway.ledger.credit(enrolment["member_id"], points, "affiliate:hana-card", "seed-" + enrolment["member_id"], "HMP")
    return enrolment


async def console_token(gateway) -> str:
    registry = gateway.app[MERCHANTS]
    await registry.create_merchant("ops", "Operations", "KRW", "Asia/Seoul", "00:00", 42, role="operator")
    token, _ = await OperatorTokens(gateway.app[STORE], registry).issue("ops")
    return token


async def till(gateway, store: str = "gs25-gangnam-01/t1") -> StoreTerminal:
    """A simulated store terminal (the POS SDK, zxing-cpp for scanning) with a fresh key of its merchant."""
    profile = load_profiles()[store]
    key = await gateway.app[MERCHANTS].issue_key(profile.merchant_id)
    return StoreTerminal.open(profile, base_url=gateway.base_url, key_id=key.key_id, secret=key.secret,
                              journal_path=str(gateway.tmp_path / f"{profile.store_id}-{profile.terminal_id}.sqlite3"),
                              language="en")


async def phone(chromium, locale: str = "en-GB"):
    """A phone-sized browser tab of its own (its own sessionStorage, like another phone)."""
    context = await chromium.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=3, is_mobile=True,
                                         has_touch=True, locale=locale)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.script_errors = errors
    return page


async def signed_in_wallet(chromium, gateway, token: str, locale: str = "en-GB"):
    """The wallet page, signed in through its form; returns once the first code shows."""
    page = await phone(chromium, locale)
    await page.goto(gateway.base_url + "/wallet")
    await page.fill("#token", token)
    await page.click("#sign-in-form button[type=submit]")
    await page.wait_for_selector("#code-card[data-code]")
    return page
