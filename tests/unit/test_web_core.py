"""The web pages' pure parts: the console feed's messages and their merge, strings in two languages, templates."""

from __future__ import annotations

import json
import re

from gateway.payments import DECLINES
from gateway.web import pages
from gateway.web.feed import HEARTBEAT_S, PENDING_MAX, RECENT_MAX, WORKER_STALE_S, ConsoleFeed, ConsoleView


class Clock:
    def __init__(self, now_s: float = 1_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def _answer(payment_id: str, points: int = 2_500) -> bytes:
    return json.dumps({"payment_id": payment_id, "status": "approved", "points": points, "balance_after": 7_500,
                       "code": "must not travel"}).encode()


def test_a_recorded_sale_becomes_a_console_line_without_member_data():
    """A line names store, amount, outcome, points and latency, never the member's balance or code."""
    feed = ConsoleFeed({"gs25": "GS25", "gs25/gs25-gangnam-01": "GS25 Gangnam"}, worker="w1", now_s=Clock())
    feed.record("gs25", "gs25-gangnam-01", "t1", 2_500, "KRW", "approved", 0.0042, _answer("pay_1"))
    [item] = feed.take()
    assert {"id": "w1:1", "at_ms": 1_000_000, "merchant_id": "gs25", "merchant_name": "GS25",
            "store_id": "gs25-gangnam-01", "store_name": "GS25 Gangnam", "terminal_id": "t1", "amount": 2_500,
            "currency": "KRW", "outcome": "approved", "latency_ms": 4.2, "payment_id": "pay_1", "status": "approved",
            "points": 2_500} == item
    assert [] == feed.take()


def test_a_process_publishes_new_sales_at_once_and_otherwise_a_heartbeat_a_second():
    """Nothing new and a heartbeat not yet due: no message; new sales or a due heartbeat: one message."""
    clock = Clock()
    feed = ConsoleFeed(worker="w1", now_s=clock)
    assert feed.message({}) is not None  # the first says the process is there
    assert feed.message({}) is None
    feed.record("cu", "cu-jongno-01", "t1", 1_000, "KRW", "insufficient_points", 0.001, b"{}")
    message = feed.message({"taishin": {"connected": False}})
    assert (["insufficient_points"], {"insufficient_points": 1}) == (
        [i["outcome"] for i in message["items"]], message["sales"]["outcomes"])
    clock.now_s += HEARTBEAT_S
    assert [] == feed.message({})["items"]


def test_a_process_repeats_only_its_last_sales():
    """Every message repeats at most RECENT_MAX recent sales, so a new console starts with a list."""
    feed = ConsoleFeed(worker="w1", now_s=Clock())
    for i in range(RECENT_MAX + 5):
        feed.record("gs25", "s", "t1", 100, "KRW", "approved", 0.001, _answer(f"pay_{i}"))
    message = feed.message({})
    assert (RECENT_MAX + 5, RECENT_MAX, "pay_5") == (len(message["items"]), len(message["recent"]),
                                                     message["recent"][0]["payment_id"])


def test_sales_beyond_what_waits_for_publishing_push_out_the_oldest_and_are_counted():
    """A publisher that fell behind keeps the newest PENDING_MAX sales and counts the ones it dropped."""
    feed = ConsoleFeed(worker="w1", now_s=Clock())
    for i in range(PENDING_MAX + 3):
        feed.record("gs25", "s", "t1", 100 + i, "KRW", "approved", 0.001, b"{}")
    items = feed.take()
    assert (3, PENDING_MAX, 103, 100 + PENDING_MAX + 2) == (feed.dropped, len(items), items[0]["amount"], items[-1]["amount"])
    assert [] == feed.take()


def test_the_console_merges_processes_shows_each_sale_once_and_drops_stopped_ones():
    """Two processes' messages make one picture; a line repeated in `recent` is new only once."""
    clock = Clock()
    one, two = ConsoleFeed(worker="w1", now_s=clock), ConsoleFeed(worker="w2", now_s=clock)
    one.record("gs25", "s", "t1", 100, "KRW", "approved", 0.001, _answer("pay_a"))
    two.record("gs25", "s", "t2", 200, "KRW", "replayed_code", 0.002, b"{}")
    view = ConsoleView(now_s=clock)
    first = view.take_message(one.message({}))
    second = view.take_message(two.message({"taishin": {"connected": True, "circuit": "open", "failures_in_a_row": 5,
                                                        "window": {"outcomes": {"error": 5}, "histogram": []}}}))
    clock.now_s += HEARTBEAT_S
    again = view.take_message(one.message({}, force=True))
    assert (["pay_a"], ["replayed_code"], []) == ([i["payment_id"] for i in first], [i["outcome"] for i in second], again)
    summary = view.summary()
    assert (2, 1, {"replayed_code": 1}) == (summary["workers"], summary["sales"]["ok"], summary["sales"]["by_outcome"])
    assert [("taishin", "open", 5, 1)] == [(p["partner"], p["circuit"], p["errors"], p["circuit_open_workers"])
                                           for p in summary["partners"]]
    clock.now_s += WORKER_STALE_S + 0.1
    view.take_message(one.message({}, force=True))
    assert (1, {}) == (view.summary()["workers"], view.summary()["sales"]["by_outcome"])


def test_every_string_is_in_korean_and_english():
    """Both languages have exactly the same keys, and no string is empty."""
    table = pages.strings()
    assert set(table["ko"]) == set(table["en"])
    assert [] == [k for lang in pages.LANGUAGES for k, v in table[lang].items() if not v.strip()]


def test_every_label_of_both_pages_is_a_string_in_the_table():
    """Each {{t:key}} and data-i18n key in the templates, and each key the scripts ask for, exists."""
    used = set()
    for name in ("wallet.html", "console.html"):
        text = (pages.ROOT / "templates" / name).read_text()
        used |= set(re.findall(r"\{\{t:([a-z0-9_.]+)\}\}", text)) | set(re.findall(r'data-i18n(?:-alt)?="([^"]+)"', text))
    for name in ("common.js", "wallet.js", "console.js"):
        used |= set(re.findall(r'\bt\("([a-z0-9_.]+)"[,)]', (pages.ROOT / "static" / name).read_text()))
    assert set() == used - set(pages.strings()["en"])


def test_every_state_the_scripts_name_by_prefix_has_its_string():
    """Keys the scripts build from a state (a cash-out's, a circuit's, an event's kind) exist for every state."""
    families = {
        "wallet.cashout.": ("paid", "failed", "pending"), "wallet.exchange.": ("completed", "pending", "refused"),
        "wallet.coupon_state.": ("issued", "redeemed", "expired"), "console.circuit.": ("closed", "open", "no_key"),
        "console.yesterday.": ("settled", "due", "nothing"),
        "kind.": ("earning", "payment", "refund", "cancel", "reversal", "expiry", "exchange_hold", "exchange_post",
                  "exchange_void", "exchange_in", "cashout", "cashout_paid", "cashout_failed"),
    }
    assert set() == {p + s for p, states in families.items() for s in states} - set(pages.strings()["en"])


def test_every_decline_code_has_a_console_label():
    """The console names each decline reason the gateway can give, in both languages."""
    assert set() == {f"decline.{code}" for code in DECLINES} - set(pages.strings()["ko"])


def test_a_page_escapes_what_it_is_given_and_keeps_the_strings_block_closed():
    """Strings go in escaped, and the JSON block cannot be ended by a string holding </script>."""
    rendered = pages.render("console.html", "en", {"network_name": pages.escape("<b>Hana</b>")})
    assert "&lt;b&gt;Hana&lt;/b&gt;" in rendered and "<b>Hana</b>" not in rendered
    block = rendered.split('<script type="application/json" id="strings">', 1)[1].split("</script>", 1)[0]
    assert pages.strings() == json.loads(block)
    assert "<title data-i18n=\"console.title\">Operator console</title>" in rendered


def test_the_pages_load_nothing_from_another_origin():
    """No template or style sheet names an http(s) URL: everything comes from the gateway."""
    texts = [(pages.ROOT / "templates" / n).read_text() for n in ("wallet.html", "console.html")]
    texts += [body.decode() for body, _, _ in pages.static_files().values()]
    assert [] == [m for t in texts for m in re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", t)]
    assert [] == [m for t in texts for m in re.findall(r"url\(\s*['\"]?https?:", t)]
