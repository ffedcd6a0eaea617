"""Which webhook URLs Castwork calls: a merchant must not be able to make it reach into its own
network (server-side request forgery)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from media.errors import InputError

MAX_URL = 2000


class WebhookRefused(InputError):
    """A webhook URL Castwork will not call (permanent: the same URL stays refused)."""

    code = "webhook_refused"


def check_url(url: str, *, allow_private: bool, resolve: bool = True) -> str:
    """``url`` if Castwork may POST to it, else :class:`WebhookRefused` with the reason.
    ``resolve``: also look its host up and refuse internal addresses (DNS can change: the
    sender checks again at every attempt)."""
    if len(url) > MAX_URL:
        raise WebhookRefused(f"webhook_url: longer than {MAX_URL} characters", field="webhook_url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("webhook_url: an http:// or https:// URL", field="webhook_url")
    if parts.username or parts.password:
        raise WebhookRefused("webhook_url: no credentials in the URL", field="webhook_url")
    if allow_private or not resolve:
        return url
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookRefused("webhook_url: a bad port", field="webhook_url") from None
    try:
        found = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except OSError:
        raise WebhookRefused(
            f"webhook_url: {parts.hostname!r} does not resolve", field="webhook_url"
        ) from None
    for *_, address in found:
        ip = ipaddress.ip_address(address[0])
        if not ip.is_global or ip.is_multicast:
            raise WebhookRefused(
                f"webhook_url: {parts.hostname!r} is an internal address ({ip}); "
                "webhooks go to public addresses (webhooks.allow_private)",
                field="webhook_url",
            )
    return url
