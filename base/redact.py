"""Secrets out of what is printed, logged or stored: the one place that masks them.

Settings hold secrets in two shapes. Keys are :class:`pydantic.SecretStr` and dump as
``**********`` by themselves. URLs are plain strings that may carry a password
(``redis://:pw@host``, ``amqp://user:pw@host``, ``https://user:pw@llm``) or a key in their
query (``?password=``, ``?api_key=``): :func:`mask_url` masks those parts and keeps the rest
(scheme, host, port, path), which is what a reader of a log or a turn record needs.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

MASK = "***"
# What pydantic prints for a SecretStr: a masked value looks the same wherever it came from.
SECRET_MASK = "**********"
# A whole string that is one URL (and not prose that mentions one).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")
# Query parameters (and, in dumped data, keys) whose value is a secret.
SECRET_NAMES = frozenset(
    {
        "password", "passwd", "pass", "pwd", "secret", "token", "auth", "key", "api_key",
        "apikey", "api-key", "access_token", "auth_token", "client_secret", "signature", "sig",
    }
)  # fmt: skip


def mask_url(url: str) -> str:
    """``url`` with its password, a bare user-info token, and secret query values masked.

    ``redis://:pw@host:6379/0`` -> ``redis://:***@host:6379/0``; ``amqp://user:pw@h`` ->
    ``amqp://user:***@h``; ``https://h/v1?api_key=k&x=1`` -> ``https://h/v1?api_key=***&x=1``.
    A user name alone is masked too (``https://TOKEN@host``: a token is often sent that way).
    Text that does not parse as a URL is masked whole: it might be one, mistyped.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a malformed port, as a bad URL
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if colon else f"{MASK}@{hostport}"
    query, fragment = _mask_params(parts.query), _mask_params(parts.fragment)
    return urlunsplit(parts._replace(netloc=netloc, query=query, fragment=fragment))


def _mask_params(query: str) -> str:
    if "=" not in query:
        return query
    return "&".join(_mask_param(p) for p in query.split("&"))


def _mask_param(param: str) -> str:
    name, eq, value = param.partition("=")
    return f"{name}={MASK}" if eq and value and _is_secret_name(unquote_plus(name)) else param


def _is_secret_name(name: str) -> bool:
    last = name.rsplit(".", 1)[-1].lower()
    return last in SECRET_NAMES or last.endswith(("_key", "_secret", "_token", "password"))


def redacted(data: Any) -> Any:
    """A copy of JSON-like ``data`` (a settings dump) with every URL masked by
    :func:`mask_url` and the value of every key named like a secret (``api_key``,
    ``password``, ``*_token``) replaced: free-form settings, such as an experiment arm's
    overrides, hold secrets as plain strings."""
    if isinstance(data, dict):
        return {
            k: SECRET_MASK
            if isinstance(k, str) and _is_secret_name(k) and isinstance(v, str) and v
            else redacted(v)
            for k, v in data.items()
        }
    if isinstance(data, list | tuple):
        return [redacted(v) for v in data]
    if isinstance(data, str) and _URL.fullmatch(data):
        return mask_url(data)
    return data
