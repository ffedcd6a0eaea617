"""Who a server answers to: ``Host`` and ``Origin`` rules, keys, and our pages' CSP (one place).

A server without keys trusts where it listens: it binds to loopback, so only this machine
can connect. A web page from anywhere still can, through the visitor's browser:

* **DNS rebinding.** ``evil.example`` resolves to 127.0.0.1 a moment after its page loaded;
  the browser then takes the local server for the page's own site and lets the page read its
  answers. The browser does send ``Host: evil.example:8000``, though. A keyless server answers
  only loopback names (``localhost``, ``127.0.0.1``, ``[::1]``, on any port):
  :func:`trusted_host`.
* **Cross-site requests.** Any page may send a form, or a fetch without custom headers, to
  any address, and the browser adds ``Origin`` (its own site) to it. A state-changing
  request whose ``Origin`` is not the server's own site (keyless: not a loopback site) is
  refused: :func:`origin_allowed`.

With keys in force, a key authenticates every request that matters; the host names served
are then the operator's list (``*``, ``name``, or ``*.domain`` for its subdomains).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import TypeVar

# host, host:port, [v6] or [v6]:port: what a Host header or an origin's authority holds.
_AUTHORITY = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._~-]+))(?::(?P<port>[0-9]{1,5}))?"
)
_ORIGIN = re.compile(r"(?P<scheme>[A-Za-z]+)://(?P<authority>[^/?#]+)")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1; ``[::1]`` too)."""
    host = host.lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:  # another name, or a wildcard such as 0.0.0.0
        return False


def split_authority(value: str) -> tuple[str, int | None] | None:
    """``(host, port)`` of a Host header (host lowercased, IPv6 without brackets, port None
    when not given); None when it is not one."""
    found = _AUTHORITY.fullmatch(value.strip())
    if found is None:
        return None
    port = int(found["port"]) if found["port"] else None
    if port is not None and not 0 < port < 65_536:
        return None
    return (found["v6"] or found["name"]).lower(), port


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """Whether ``host`` is one of ``patterns``: ``*`` (any), a name, or ``*.domain`` (its
    subdomains, not the domain itself)."""
    for pattern in patterns:
        pattern = pattern.lower().removeprefix("[").removesuffix("]")
        if pattern in ("*", host) or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False


def trusted_host(header: str | None, *, loopback_only: bool, allowed: Iterable[str]) -> bool:
    """Whether a request with this ``Host`` header is for us: a loopback name when
    ``loopback_only`` (no keys), else a name of ``allowed`` (``*``: any, even none)."""
    allowed = list(allowed)
    if not loopback_only and "*" in allowed:
        return True
    parsed = split_authority(header or "")
    if parsed is None:
        return False
    host, _ = parsed
    return is_loopback(host) if loopback_only else host_matches(host, allowed)


def origin_allowed(origin: str, *, host_header: str | None, loopback_only: bool) -> bool:
    """Whether a request that carries ``Origin: origin`` comes from a page we trust: a
    loopback site when ``loopback_only`` (any port: the server's own page included), else
    the server's own site (the same host and port as the ``Host`` header). ``null`` (a
    sandboxed frame, a file) and anything malformed are not trusted."""
    found = _ORIGIN.fullmatch(origin.strip())
    parsed = split_authority(found["authority"]) if found else None
    if found is None or parsed is None:
        return False
    scheme, (host, port) = found["scheme"].lower(), parsed
    if scheme not in _DEFAULT_PORTS:
        return False
    if loopback_only:
        return is_loopback(host)
    own = split_authority(host_header or "")
    if own is None:
        return False
    # Behind a TLS proxy the Host header carries no port while the origin is https: each
    # side's missing port is the origin scheme's default.
    default = _DEFAULT_PORTS[scheme]
    return own[0] == host and (own[1] or default) == (port or default)


K = TypeVar("K")


def find_key(presented: str, keys: Mapping[K, str | bytes]) -> K | None:
    """The name of the key ``presented`` is, or None. Every key is compared, in constant time
    and without an early exit: timing says nothing about which key matched, or how close a
    guess came."""
    given = presented.encode()
    found = None
    for name, key in keys.items():
        if hmac.compare_digest(given, key if isinstance(key, bytes) else key.encode()):
            found = name
    return found


def is_key(presented: str, keys: Iterable[str | bytes]) -> bool:
    """Whether ``presented`` is one of ``keys`` (compared as :func:`find_key` does)."""
    return find_key(presented, dict(enumerate(keys))) is not None


# Sent by our pages' scripts with every state-changing request: a form of another site cannot
# add a header, and a script of another site cannot without CORS, which we never grant.
CSRF_HEADER = "X-Castwork-CSRF"


def page_csp(*, media: bool = False, forms: bool = False) -> str:
    """The Content-Security-Policy of our HTML pages: our own script, styles and connections
    only, nothing inline, nothing from elsewhere, never framed. ``media``: images and sound
    from ``blob:`` too (previews made in the page); ``forms``: forms may post to us."""
    blob = " blob:" if media else ""
    return (
        f"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:{blob}; "
        + (f"media-src 'self'{blob}; " if media else "")
        + "connect-src 'self'; "
        + ("form-action 'self'; " if forms else "form-action 'none'; ")
        + "base-uri 'none'; frame-ancestors 'none'"
    )


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header ("" for none, or another
    scheme). The scheme is case-insensitive and any whitespace may surround both parts: the
    same key, however it is written, must be the same key to every check and every count."""
    parts = (authorization or "").split(None, 1)
    return parts[1].strip() if len(parts) == 2 and parts[0].lower() == "bearer" else ""
