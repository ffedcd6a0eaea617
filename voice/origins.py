"""Which ``Host`` and ``Origin`` a server answers to: the one place for those rules.

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

import ipaddress
import re
from collections.abc import Iterable

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
