"""The operator console: the page, the operator's session, and its live feed.

`GET /v1/ops/console/live` (console token in the Authorization header) is a
server-sent event stream: first every recent sale the processes repeat, then
each sale as it happens (`payment`), and every SUMMARY_INTERVAL_S a
`summary`: sales by outcome and latency percentiles over the last five
minutes, each partner's calls, errors, latency and circuit, journal consumer
lag, and today's settlement. Sales and partners come from every gateway
process over pub/sub (`gateway/web/feed.py`); lag and settlement are read
from Redis (cached a few seconds per process).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import redis.exceptions
from aiohttp import web
from aiohttp_sse import sse_response

from gateway import keyspace, payments
from gateway.web import pages
from gateway.web.feed import ConsoleView
from gateway.web.ui import WEB_UI

log = logging.getLogger("pointgate.console")

SUMMARY_INTERVAL_S = 1.0
"""The tiles and tables refresh once a second; the sales list as each sale comes."""
SUMMARY_SOON_S = 0.1
"""After new sales the next summary comes this soon (many processes' messages make one summary)."""
READ_WAIT_S = 0.25
"""One wait for a pub/sub message; the loop also notices a closed page within this."""
PING_S = 15  # keeps the stream open through proxies that drop idle connections


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def console_page(request: web.Request) -> web.Response:
    ui = request.app[WEB_UI]
    return pages.page("console.html", pages.language(request),
                      {"network_name": pages.escape(ui.settings.home_network.name)})


async def console_session(request: web.Request) -> web.Response:
    """Who the console token belongs to, and until when: what the page shows after sign-in."""
    session = await request.app[WEB_UI].operator_tokens.authenticate(request.headers.get("Authorization"))
    response = web.Response(body=payments.dumps({"operator_id": session.operator_id, "name": session.name,
                                                 "expires_at": _iso(session.expires_ms)}),
                            content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


async def console_live(request: web.Request) -> web.StreamResponse:
    ui = request.app[WEB_UI]
    await ui.operator_tokens.authenticate(request.headers.get("Authorization"))
    ui.open_console()
    pubsub = ui.live_redis.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(keyspace.CONSOLE_CHANNEL)
        view = ConsoleView(ui.now_s)

        def connected() -> bool:
            return request.transport is not None and not request.transport.is_closing()

        async with sse_response(request, ping_interval=PING_S) as stream:
            async def send_sales(message: dict[str, Any]) -> bool:
                fresh = view.take_message(message)
                for item in fresh:
                    await stream.send(json.dumps(item, ensure_ascii=False), event="payment")
                return bool(fresh)

            await send_sales(ui.own_message())
            next_summary_s = 0.0
            while connected() and not ui.events.closing:
                if ui.now_s() >= next_summary_s:
                    await stream.send(json.dumps(await _summary(ui, view), ensure_ascii=False), event="summary")
                    next_summary_s = ui.now_s() + SUMMARY_INTERVAL_S
                message = await pubsub.get_message(timeout=READ_WAIT_S)
                if message is not None and message.get("type") == "message":
                    try:
                        fresh = await send_sales(json.loads(message["data"]))
                    except (ValueError, KeyError, TypeError):
                        log.warning("console feed: a message that is not ours on %s", keyspace.CONSOLE_CHANNEL)
                        continue
                    if fresh:
                        # The message that brought the sales brought its process's counts too: a
                        # decline shows under its reason together with its line, not a second later.
                        next_summary_s = min(next_summary_s, ui.now_s() + SUMMARY_SOON_S)
    finally:
        ui.close_console()
        try:
            await pubsub.aclose()
        except (redis.exceptions.RedisError, OSError):
            pass
    return stream


async def _summary(ui, view: ConsoleView) -> dict[str, Any]:
    document = view.summary()
    try:
        document["journal"] = await ui.journal_status()
        document["settlement"] = await ui.settlement_status()
    except redis.exceptions.RedisError:
        document["journal"], document["settlement"] = None, None  # the tiles say "unavailable"; sales go on
    document["at"] = _iso(ui.now_ms())
    return document
