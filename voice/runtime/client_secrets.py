"""Short-lived client secrets, in the shape of OpenAI's GA ``POST /v1/realtime/client_secrets``.

A web page must never hold a server's API key. The page's own backend asks this server for a
secret with its real key (and, optionally, the session configuration to bind to it), and
hands the secret to the browser, which opens the Realtime WebSocket with it: as the bearer
token, or, since a browser cannot set headers on a WebSocket, in the subprotocol list
(``["realtime", "openai-insecure-api-key.<secret>"]``, as OpenAI's browser clients do).

Rules, checked here once: a secret is ``ek_`` and 32 random bytes; it expires
(``expires_after.seconds``, default ``voice.client_secret_ttl_s``), opens one session only
(spent at the handshake), carries the id of the key that minted it (its sessions count
against that key's limits and are logged under it), and is refused as a key for minting
more. Where secrets live is a :class:`SecretStore`: this server's memory
(:class:`ClientSecrets`, the default), or a Redis every server behind a balancer shares
(:class:`voice.runtime.shared_secrets.RedisSecrets`, ``voice.client_secret_store``), so a
page may mint on one server and connect to another.

:class:`ClientSecrets` is pure (a clock is passed in); the server parses requests with
:func:`parse_request` and finds a presented secret with :func:`presented_secret`.
"""

from __future__ import annotations

import json
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voice.core import protocol
from voice.errors import ProtocolError

PREFIX = "ek_"
SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
REALTIME_SUBPROTOCOL = "realtime"
MAX_BODY_BYTES = 64 << 10


@dataclass(frozen=True)
class Grant:
    """What a secret allows: one session, for the key that minted it, configured so."""

    value: str
    key: str  # the minting key's id (voice.runtime.server.key_id)
    expires_at: float  # Unix time
    session: dict[str, Any]  # a session.update's "session", applied before anything else


class SecretRefused(Exception):
    """Why a request for a secret, or a presented secret, is refused: HTTP status and text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def unusable() -> SecretRefused:
    """One answer for unknown, used and expired secrets: nothing to learn by probing."""
    return SecretRefused(
        401, "the client secret is unknown, used or expired; ask your server for a new one"
    )


def full() -> SecretRefused:
    return SecretRefused(429, "too many client secrets outstanding; try again shortly")


def new_value() -> str:
    return PREFIX + secrets.token_urlsafe(32)


class SecretStore(Protocol):
    """Where minted secrets wait for their one handshake."""

    async def mint(self, key: str, seconds: int, session: dict[str, Any], now: float) -> Grant:
        """A new grant; 429 (:func:`full`) when ``capacity`` secrets are outstanding."""
        ...

    async def redeem(self, value: str, now: float) -> Grant:
        """The grant of ``value``, spent; 401 (:func:`unusable`) if unknown, used or expired."""
        ...

    async def aclose(self) -> None: ...


class _ExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    anchor: str = "created_at"
    seconds: int | None = Field(default=None, ge=10, le=7200)


class _MintRequest(BaseModel):
    # Unknown top-level fields are refused: a typo must not mint a secret that ignores it.
    model_config = ConfigDict(extra="forbid")
    expires_after: _ExpiresAfter = _ExpiresAfter()
    session: dict[str, Any] = {}


def parse_request(body: bytes, *, default_s: int, max_s: int) -> tuple[int, dict[str, Any]]:
    """(seconds the secret lives, the session to bind) from a request body, checked the way
    a ``session.update`` is; :class:`SecretRefused` (400) with the reason."""
    try:
        data = json.loads(body or b"{}")
        request = _MintRequest.model_validate(data)
    except ValueError as exc:  # not JSON, or not the request's shape
        detail = exc.errors()[0] if isinstance(exc, ValidationError) else None
        where = ".".join(str(p) for p in detail["loc"]) if detail else "body"
        reason = detail["msg"] if detail else str(exc)
        raise SecretRefused(400, f"{where}: {reason}") from None
    if request.expires_after.anchor != "created_at":
        raise SecretRefused(400, "expires_after.anchor: only created_at is supported")
    seconds = request.expires_after.seconds or default_s
    if seconds > max_s:
        raise SecretRefused(400, f"expires_after.seconds: at most {max_s} on this server")
    session = request.session
    if session.get("type", "realtime") != "realtime":
        raise SecretRefused(400, "session.type: only realtime sessions are served here")
    try:  # the same check a session.update gets when it arrives
        protocol.parse_client_event(json.dumps({"type": "session.update", "session": session}))
    except ProtocolError as exc:
        raise SecretRefused(400, f"session: {exc}") from None
    return seconds, session


def presented_secret(authorization: str | None, subprotocols: str | None) -> str | None:
    """The client secret a handshake carries: ``Authorization: Bearer ek_...`` or a
    ``Sec-WebSocket-Protocol`` entry ``openai-insecure-api-key.ek_...``; None without one."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip().startswith(PREFIX):
            return token.strip()
    for entry in (subprotocols or "").split(","):
        entry = entry.strip()
        if entry.startswith(SUBPROTOCOL_PREFIX):
            return entry[len(SUBPROTOCOL_PREFIX) :]
    return None


def select_subprotocol(offered: list[str]) -> str | None:
    """The subprotocol to answer: ``realtime`` when offered (a browser that sent its secret
    there needs one of its entries back), else none."""
    return REALTIME_SUBPROTOCOL if REALTIME_SUBPROTOCOL in offered else None


class ClientSecrets:
    """Secrets minted and not yet used or expired, oldest first, in this process; bounded."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._grants: OrderedDict[str, Grant] = OrderedDict()

    def __len__(self) -> int:
        return len(self._grants)

    def _expire(self, now: float) -> None:
        # Minted in order with one lifetime each, so expired ones are mostly at the front;
        # a long-lived one there stops the sweep early, which only delays others' removal.
        while self._grants:
            oldest = next(iter(self._grants.values()))
            if oldest.expires_at > now:
                break
            self._grants.popitem(last=False)

    async def mint(self, key: str, seconds: int, session: dict[str, Any], now: float) -> Grant:
        self._expire(now)
        if len(self._grants) >= self.capacity:
            raise full()
        grant = Grant(new_value(), key, now + seconds, session)
        self._grants[grant.value] = grant
        return grant

    async def redeem(self, value: str, now: float) -> Grant:
        grant = self._grants.pop(value, None)
        if grant is None or grant.expires_at <= now:
            raise unusable()
        return grant

    async def aclose(self) -> None:
        self._grants.clear()


def response(grant: Grant, model: str) -> dict[str, Any]:
    """The body answered to the minting request (GA shape)."""
    session = {"type": "realtime", "object": "realtime.session", "model": model}
    session.update(grant.session)
    return {"value": grant.value, "expires_at": int(grant.expires_at), "session": session}
