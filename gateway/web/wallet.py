"""The member's web wallet: the page, who a token is, and the current code with its pictures.

The page (`GET /wallet`) holds no member data: it is the same for everyone,
with the public lists a form needs (claimable campaigns, partner networks).
Everything about the member comes from the member API with the bearer token,
which the page keeps in sessionStorage (gone when the tab closes) and sends
only in the Authorization header: never in a URL, so it never lands in a log,
and never in a cookie, so no other site can make the browser send it. The
live feed is read with fetch() streaming for the same reason (EventSource
cannot send a header).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re

from aiohttp import web

from gateway import payments, render
from gateway.problems import Problem
from gateway.web import pages
from gateway.web.ui import WEB_UI

SLOT_RE = re.compile(r"^[1-9][0-9]{8}$")
QR_BOX_PX = 10
"""A version 1 QR (21 modules and a 4-module border) is 290 px: sharp when the page scales it by
whole pixels, and large enough to scan from a phone held up to a scanner."""


def _json(document: object) -> web.Response:
    response = web.Response(body=payments.dumps(document), content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


async def wallet_page(request: web.Request) -> web.Response:
    ui = request.app[WEB_UI]
    lang = pages.language(request)
    campaigns = "".join(f'<option value="{pages.escape(c.campaign_id)}">{pages.escape(c.title)}</option>'
                        for c in await ui.claimable_campaigns())
    networks = {n.id: n for n in ui.settings.networks}
    partners = "".join(
        f'<option value="{pages.escape(p.id)}">{pages.escape(networks[p.id].name if p.id in networks else p.id)}</option>'
        for p in ui.settings.partners)
    unit = ui.settings.home_network.points_unit
    return pages.page("wallet.html", lang, {"campaign_options": campaigns, "partner_options": partners,
                                            "points_unit": pages.escape(unit),
                                            "network_name": pages.escape(ui.settings.home_network.name)})


async def whoami(request: web.Request) -> web.Response:
    """The member and device a bearer token belongs to: what a signed-in page needs to ask for codes."""
    ui = request.app[WEB_UI]
    bearer = await ui.members.authenticate(request.headers.get("Authorization"))
    return _json({"member_id": bearer.member_id, "slot": bearer.slot, "code_step_s": ui.settings.code_step_s,
                  "unit": ui.settings.home_network.points_unit})


async def code_card(request: web.Request) -> web.Response:
    """The current code and both its pictures in one answer, so the digits, the bars and the QR
    always show the same code (three requests could straddle a step)."""
    ui = request.app[WEB_UI]
    bearer = await ui.members.authenticate(request.headers.get("Authorization"))
    slot_text = request.match_info["slot"]
    if not SLOT_RE.match(slot_text):
        raise Problem("device_not_found")
    listing = await ui.members.codes(bearer, request.match_info["member_id"], int(slot_text), 1)
    code = listing["codes"][0]
    # Rendering takes milliseconds of CPU; a thread keeps it off the loop that authorises sales.
    svg, png = await asyncio.to_thread(_pictures, code["code"])
    return _json({**code, "server_time": _now_iso(ui.now_ms()),
                  "code128_svg": "data:image/svg+xml;base64," + base64.b64encode(svg).decode(),
                  "qr_png": "data:image/png;base64," + base64.b64encode(png).decode()})


def _pictures(code: str) -> tuple[bytes, bytes]:
    return render.code128_svg(code), render.qr_png(code, box_size=QR_BOX_PX)


def _now_iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
