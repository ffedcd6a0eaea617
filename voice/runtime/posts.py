"""Plain HTTP POSTs on the voice server's port, beside its WebSocket handshakes.

websockets parses only bodiless requests (a handshake has none), but a Realtime client asks
for a client secret with ``POST /v1/realtime/client_secrets`` and a JSON body, on the same
host and port it then connects to. :class:`PostingConnection` (given to websockets as
``create_connection``, its documented hook) looks at the first bytes of a connection: a
request that starts with ``POST`` is read with h11 (one request, body bounded), answered by
:attr:`PostingConnection.answer`, and the connection closed; anything else goes to
websockets untouched, byte for byte.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11
from websockets.asyncio.server import ServerConnection

log = logging.getLogger(__name__)

_METHOD_BYTES = 5  # len(b"POST "): enough to tell a POST from a GET handshake


@dataclass(frozen=True)
class Post:
    path: str  # with its query string
    headers: dict[str, str]  # lower-cased names; a repeated header joined with ", "
    body: bytes


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class PostingConnection(ServerConnection):
    """A WebSocket server connection that also answers one plain POST (see the module)."""

    #: Set by the server on a subclass: answers a POST (or a coroutine that will: the
    #: connection waits for it, reading nothing more).
    answer: Callable[[Post], Answer | Awaitable[Answer]]
    #: The largest body read; a longer one is answered 413 unread.
    max_body: int = 64 << 10

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._first = b""
        self._decided = False
        self._http: h11.Connection | None = None
        self._post: tuple[str, dict[str, str]] | None = None
        self._body = bytearray()
        self._done = False
        self._answering: asyncio.Task[None] | None = None  # held: the loop keeps weak refs

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        if not self._decided:
            self._first += data
            if len(self._first) < _METHOD_BYTES:
                return
            self._decided = True
            data, self._first = self._first, b""
            if data.startswith(b"POST "):
                self._http = h11.Connection(h11.SERVER, max_incomplete_event_size=16 << 10)
        if self._http is None:
            super().data_received(data)
            return
        try:
            self._http.receive_data(data)
            self._read()
        except h11.RemoteProtocolError as exc:
            self._reply(Answer(400, f'{{"error": "bad request: {exc}"}}'.encode()))

    def _read(self) -> None:
        assert self._http is not None
        while not self._done:
            event = self._http.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                headers: dict[str, str] = {}
                for name, value in event.headers:
                    key = name.decode("latin-1").lower()
                    text = value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
                length = headers.get("content-length", "0")
                if not length.isdigit() or int(length) > self.max_body:
                    self._reply(Answer(413, b'{"error": "request body too large"}'))
                    return
                self._post = (event.target.decode("latin-1"), headers)
                if self._http.they_are_waiting_for_100_continue:  # curl, for bodies over 1 KiB
                    self.transport.write(
                        self._http.send(h11.InformationalResponse(status_code=100, headers=[]))
                        or b""
                    )
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self.max_body:
                    self._reply(Answer(413, b'{"error": "request body too large"}'))
                    return
            elif isinstance(event, h11.EndOfMessage) and self._post is not None:
                path, headers = self._post
                self._done = True  # whatever else arrives is not read
                try:
                    answer = self.answer(Post(path, headers, bytes(self._body)))
                except Exception:  # a bug must not leave the client waiting
                    log.exception("answering POST %s failed", path.split("?", 1)[0])
                    answer = Answer(500, b'{"error": "internal error"}')
                if inspect.isawaitable(answer):
                    self._answering = asyncio.ensure_future(self._reply_later(path, answer))
                else:
                    self._reply(answer)
            elif isinstance(event, h11.ConnectionClosed):
                self._done = True
                self.transport.close()

    async def _reply_later(self, path: str, pending: Awaitable[Answer]) -> None:
        try:
            answer = await pending
        except Exception:
            log.exception("answering POST %s failed", path.split("?", 1)[0])
            answer = Answer(500, b'{"error": "internal error"}')
        if not self.transport.is_closing():  # the client may have hung up meanwhile
            self._reply(answer)

    def _reply(self, answer: Answer) -> None:
        assert self._http is not None
        self._done = True
        headers = [
            ("Content-Type", answer.content_type),
            ("Content-Length", str(len(answer.body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
            *answer.headers,
        ]
        try:
            out = self._http.send(h11.Response(status_code=answer.status, headers=headers))
            out = (out or b"") + (self._http.send(h11.Data(data=answer.body)) or b"")
            out += self._http.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:  # the request was too broken to answer in HTTP/1.1
            out = b""
        self.transport.write(out)
        self.transport.close()
