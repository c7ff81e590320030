"""The member's web wallet and the operator's live console, served by the gateway.

    /wallet                      the member's wallet (mobile layout): codes, payments live, balance,
                                 history, coupons, cash-out, points exchange; Korean and English
    /console                     the operator console: sales live, declines by reason, latency,
                                 partners, journal lag, today's settlement
    /static/{name}               their scripts and style sheet (ours; nothing from another origin)
    /v1/me                       who a member token belongs to (member id, device slot)
    /v1/members/{id}/devices/{slot}/code.json   the current code with its Code 128 and QR pictures
    /v1/ops/console/session      who a console token belongs to
    /v1/ops/console/live         the console's server-sent events

Modules: `pages` (templates, strings, static files, headers), `wallet` and
`console` (handlers), `feed` (the sale outcomes every process publishes for
the console), `operator_tokens` (console sign-in), `ui` (`WebUi`, what the
handlers use). docs/web.md has the design, the sign-in and what is safe.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

from gateway.web import console, pages, wallet
from gateway.web.feed import PUBLISH_INTERVAL_S
from gateway.web.ui import WEB_UI, WebUi

__all__ = ["PUBLISH_INTERVAL_S", "WEB_ROUTES", "WEB_UI", "WebUi"]

WEB_ROUTES: tuple[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]], ...] = (
    ("GET", "/wallet", wallet.wallet_page),
    ("GET", "/console", console.console_page),
    ("GET", "/static/{name}", pages.static_file),
    ("GET", "/v1/me", wallet.whoami),
    ("GET", "/v1/members/{member_id}/devices/{slot}/code.json", wallet.code_card),
    ("GET", "/v1/ops/console/session", console.console_session),
    ("GET", "/v1/ops/console/live", console.console_live),
)
