"""The talk page's files (``voice/assets/talk/``), served by the voice server at ``/talk``
(and by the API's page server): plain HTML, CSS and JavaScript with a strict
Content-Security-Policy: its own script and styles, connections to its own origin only (the
WebSocket included), nothing inline, never framed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from base.access import page_csp

PAGE = "/talk"
SECRET_PATH = "/talk/secret"
_FILES = {
    "/talk": ("index.html", "text/html; charset=utf-8"),
    "/talk/talk.js": ("talk.js", "text/javascript; charset=utf-8"),
    "/talk/worklets.js": ("worklets.js", "text/javascript; charset=utf-8"),
    "/talk/talk.css": ("talk.css", "text/css; charset=utf-8"),
}
CSP = page_csp(media=True)


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str


@cache
def _read(name: str) -> bytes:
    return (files("voice") / "assets" / "talk" / name).read_bytes()


def asset(path: str) -> Asset | None:
    """A file of the page by its URL path; None for any other path."""
    found = _FILES.get(path)
    return Asset(_read(found[0]), found[1]) if found else None


def config(realtime_url: str, *, secret_url: str | None) -> Asset:
    """``/talk/config``: where the page connects, and where it gets a client secret (None
    where the server has keys: the page then needs one in its link, ``/talk#ek_...``)."""
    body = {"realtime_url": realtime_url, "secret_url": secret_url}
    return Asset(json.dumps(body).encode(), "application/json")


def headers(asset: Asset) -> dict[str, str]:
    out = {"Content-Type": asset.content_type, "Cache-Control": "no-cache"}
    if asset.content_type.startswith("text/html"):
        out["Content-Security-Policy"] = CSP
        out["X-Content-Type-Options"] = "nosniff"
    return out
