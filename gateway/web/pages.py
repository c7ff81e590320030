"""The two pages and their static files: templates, strings in Korean and English, headers.

Pages are rendered on the server from `templates/*.html`: `{{t:key}}` is the
string `key` in the page's language, `{{name}}` a value the handler gives
(already escaped here). Every string of both pages is in `strings.json`,
under "ko" and "en", and the page carries both in a JSON data block so the
language switch needs no reload. The scripts and the style sheet are files
of ours in `static/`, served from memory; nothing comes from another origin,
and the Content-Security-Policy says so to the browser.
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any, Mapping

from aiohttp import web

from gateway.problems import Problem

ROOT = Path(__file__).resolve().parent
LANGUAGES = ("ko", "en")
DEFAULT_LANGUAGE = "ko"
"""The home network's members are Korean; a browser that prefers English gets English."""

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
    "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
))
"""Our own scripts and styles only, images from the code routes (data: URLs), requests to us only;
no inline script can run, so an injected string in a page could never execute."""
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
_PLACEHOLDER_RE = re.compile(r"\{\{(t:)?([a-z0-9_.]+)\}\}")


@functools.cache
def strings() -> dict[str, dict[str, str]]:
    """Every label of both pages, {"ko": {key: text}, "en": {key: text}}."""
    return json.loads((ROOT / "strings.json").read_text(encoding="utf-8"))


@functools.cache
def _template(name: str) -> str:
    return (ROOT / "templates" / name).read_text(encoding="utf-8")


def language(request: web.Request) -> str:
    """?lang=ko|en, else the browser's first preference of the two, else Korean."""
    asked = request.query.get("lang", "")
    if asked in LANGUAGES:
        return asked
    for part in request.headers.get("Accept-Language", "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LANGUAGES:
            return tag
    return DEFAULT_LANGUAGE


def render(name: str, lang: str, values: Mapping[str, str] | None = None) -> str:
    """The template with its strings in `lang` and `values` (HTML given by the handler, trusted as is)."""
    table = strings()[lang]
    given = dict(values or {})
    # Both languages for the switch, as a JSON data block: "<" escaped so no string can end the block.
    given["strings_json"] = json.dumps(strings(), ensure_ascii=False).replace("<", "\\u003c")
    given["lang"] = lang

    def fill(match: re.Match[str]) -> str:
        if match[1]:
            return html.escape(table[match[2]])
        return given[match[2]]

    return _PLACEHOLDER_RE.sub(fill, _template(name))


def page(name: str, lang: str, values: Mapping[str, str] | None = None) -> web.Response:
    response = web.Response(text=render(name, lang, values), content_type="text/html", charset="utf-8")
    response.headers.update(PAGE_HEADERS)
    return response


@functools.cache
def static_files() -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, content type, ETag) of every file in static/, read once."""
    found = {}
    for path in sorted((ROOT / "static").iterdir()):
        if path.is_file() and path.suffix in _CONTENT_TYPES:
            body = path.read_bytes()
            found[path.name] = (body, _CONTENT_TYPES[path.suffix], '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    return found


async def static_file(request: web.Request) -> web.Response:
    """A script, style sheet or icon of the pages; revalidated by ETag, so a new release shows at once."""
    found = static_files().get(request.match_info["name"])
    if found is None:
        raise Problem("not_found", f"no file {request.path}")
    body, content_type, etag = found
    headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)
