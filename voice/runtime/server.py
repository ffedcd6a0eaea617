"""The voice server: the listener around one :class:`~voice.runtime.connection.Connection`
per client (the WebSocket shell of :class:`voice.core.session.VoiceSession`).

It adds auth (API keys, client secrets: :mod:`voice.runtime.client_secrets`), limits,
readiness and drain, ``/metrics``, the talk page (:mod:`voice.runtime.talkpage`) and the one
plain POST it answers (:mod:`voice.runtime.posts`); it answers only loopback ``Host`` names
without keys, and browsers only from loopback or listed pages (``Origin``,
:mod:`base.access`): no web page elsewhere can drive a local server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from base import heap, metrics
from base.access import CSRF_HEADER, bearer_token, is_key, is_loopback, origin_allowed, trusted_host
from base.errors import ConfigError
from base.threads import started_pool
from voice.core import protocol
from voice.core.record import TurnRecord
from voice.engines.contracts import Message, VoiceActivity
from voice.engines.llm import LlamaCppChat
from voice.errors import ProtocolError
from voice.learning.cases import CaseRecorder
from voice.learning.experiments import NO_ARM, assign
from voice.runtime import client_secrets, latency, talkpage, twilio
from voice.runtime.assembly import EngineCache, language_runtime, load_runtimes
from voice.runtime.client_secrets import ClientSecrets, Grant, SecretRefused, SecretStore
from voice.runtime.connection import Connection
from voice.runtime.latency import TurnLog
from voice.runtime.posts import Answer, Post, PostingConnection
from voice.runtime.shared_secrets import RedisSecrets
from voice.runtime.turns import Engines, Runtime, TurnPolicy
from voice.settings import VoiceSettings
from voice.tools import ToolBox

log = logging.getLogger(__name__)
PATH = "/v1/realtime"
SECRETS_PATH = "/v1/realtime/client_secrets"
_SEND_BUFFER_BYTES = 64 * 1024  # the kernel doubles it
_WS_QUEUE = 4


def key_id(authorization: str | None) -> str:
    """A stable label for the API key in an ``Authorization`` header, safe to log: the
    first 8 hex digits of its SHA-256 (``anonymous`` without one)."""
    secret = bearer_token(authorization)
    if not secret:
        return "anonymous"
    return "key-" + hashlib.sha256(secret.encode()).hexdigest()[:8]


def _header(request: Request, name: str) -> str | None:
    """A request header; a repeated one joined with commas (as HTTP reads it), which no
    check accepts: two Host or Origin headers are a request we do not answer."""
    return ", ".join(request.headers.get_all(name)) or None


class VoiceServer:
    def __init__(
        self,
        settings: VoiceSettings,
        engines: Engines,
        vad: VoiceActivity,
        *,
        policy: TurnPolicy,
        turn_log: TurnLog,
        runtimes: Sequence[Runtime] = (),
        cases: CaseRecorder | None = None,
        languages: Callable[[Runtime, str], Runtime] | None = None,
    ) -> None:
        """``languages``: builds an arm's runtime in a session language (default: from
        ``settings.languages``, models loaded on first use)."""
        v = settings.voice
        self.keys = {k.get_secret_value() for k in v.api_keys}
        if not self.keys and not is_loopback(v.host):
            raise ConfigError(
                "voice.api_keys [CASTWORK_VOICE__API_KEYS]", f"required when binding to {v.host}"
            )
        self.settings, self.engines, self.vad, self.policy, self.turn_log = (
            settings,
            engines,
            vad,
            policy,
            turn_log,
        )
        # The experiment's arms; without one, a single runtime of the engines given.
        self.runtimes = list(runtimes) or [Runtime(NO_ARM, engines, vad, policy, settings)]
        self.cases = cases
        self.sessions: Counter[str] = Counter()  # open sessions by key id
        self.origins = {o.lower().rstrip("/") for o in v.allowed_origins}
        self.asr_busy = 0  # decodes in flight across sessions; partials wait for an idle ASR
        # Draining: no new sessions, the open ones finish (see drain()).
        self.draining = False
        self._all_gone = asyncio.Event()
        self.listener: Server | None = None  # once started
        self.client_secrets: SecretStore = (
            RedisSecrets(v.client_secret_store, v.max_client_secrets)
            if v.client_secret_store
            else ClientSecrets(v.max_client_secrets)
        )
        if languages is None:
            cache = EngineCache()
            languages = partial(language_runtime, cache=cache)
        self._build_language = languages
        self._in_language: dict[tuple[str, str], Runtime] = {}
        self._language_lock = asyncio.Lock()

    async def start(self, host: str | None = None, port: int | None = None) -> Server:
        v = self.settings.voice
        bind = host if host is not None else v.host
        # __init__ checked voice.host; an address given here (castwork voice --host) must
        # pass the same rule, or a keyless server could listen on every interface.
        if not self.keys and not is_loopback(bind):
            raise ConfigError(
                "voice.api_keys [CASTWORK_VOICE__API_KEYS]", f"required when binding to {bind}"
            )
        loop = asyncio.get_running_loop()
        # Read at scrape time, which runs on this loop (process_request).
        latency.ASYNCIO_TASKS.set_function(lambda: len(asyncio.all_tasks(loop)))
        server = self

        class _Connection(_VoiceConnection):
            async def answer(self, post: Post) -> Answer:
                return await server.answer_post(post)

        self.listener = await serve(
            self._handle,
            bind,
            port if port is not None else v.port,
            process_request=self._process_request,
            create_connection=_Connection,
            select_subprotocol=_select_subprotocol,
            max_size=v.max_message_bytes,
            max_queue=_WS_QUEUE,
            ping_interval=20,
            # The closing handshake with a client that reads nothing would wait forever.
            close_timeout=min(v.send_timeout_s, 10.0),
            # Base64 audio barely compresses; deflating every frame cost a third of a core.
            compression=None,
        )
        return self.listener

    def pick(self, session_id: str, key: str) -> Runtime:
        """The arm a new session is served by (see :mod:`voice.learning.experiments`)."""
        if len(self.runtimes) == 1:
            return self.runtimes[0]
        exp = self.settings.experiment
        name = assign(
            key if exp.split_by == "key" else session_id,
            [(r.name, r.weight) for r in self.runtimes],
            exp.salt,
        )
        return next(r for r in self.runtimes if r.name == name)

    async def runtime_for(self, arm: Runtime, language: str) -> Runtime:
        """``arm`` in ``language`` (settings.languages), built once, on a thread: the first
        session in a language waits for its models to load, the next ones do not."""
        key = (arm.name, language)
        if key not in self._in_language:
            async with self._language_lock:
                if key not in self._in_language:
                    t0 = time.perf_counter()
                    built = await asyncio.to_thread(self._build_language, arm, language)
                    self._in_language[key] = built
                    log.info(
                        "language %s ready in %.1f s: asr=%s llm=%s tts=%s",
                        language,
                        time.perf_counter() - t0,
                        built.engines.asr.name,
                        ",".join(c.name for c in built.engines.chat),
                        built.engines.tts.name,
                    )
        return self._in_language[key]

    def finish_turn(self, turn: TurnRecord) -> None:
        self.turn_log.write(turn)
        if self.cases is not None:
            self.cases.offer(turn)

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":  # liveness only: says nothing but "ok"
            return conn.respond(HTTPStatus.OK, "ok\n")
        if path == "/readyz":  # for a load balancer: is there a seat for one more session?
            status, text = self.readiness()
            return conn.respond(status, text + "\n")
        if path == "/talk/config" or talkpage.asset(path) is not None:
            return self._talk_page(conn, request, path)
        if path not in (PATH, twilio.PATH, "/metrics"):
            return conn.respond(HTTPStatus.NOT_FOUND, f"the Realtime endpoint is {PATH}\n")
        if (
            refused := self._foreign(_header(request, "Host"), _header(request, "Origin"))
        ) is not None:
            return conn.respond(HTTPStatus.FORBIDDEN, refused + "\n")
        # A browser's client secret (as a bearer token or a subprotocol entry) opens a
        # Realtime session, nothing else: not /metrics, not the minting of more.
        secret = None
        if path == PATH:
            secret = client_secrets.presented_secret(
                _header(request, "Authorization"), _header(request, "Sec-WebSocket-Protocol")
            )
        # A Twilio stream cannot send headers: its key comes in the start message.
        if (
            self.keys
            and secret is None
            and path != twilio.PATH
            and not self._known(bearer_token(_header(request, "Authorization")))
        ):
            return conn.respond(
                HTTPStatus.UNAUTHORIZED, "missing or unknown API key (Authorization: Bearer ...)\n"
            )
        if self.draining and path in (PATH, twilio.PATH):
            # Before the upgrade: a balancer (or the client) tries another server at once.
            response = conn.respond(
                HTTPStatus.SERVICE_UNAVAILABLE, "this server is draining; connect again\n"
            )
            response.headers["Retry-After"] = "1"
            return response
        if secret is not None:
            try:  # spent here: one handshake, one session
                grant = await self.client_secrets.redeem(secret, time.time())
            except SecretRefused as exc:
                return conn.respond(HTTPStatus(exc.status), exc.message + "\n")
            assert isinstance(conn, _VoiceConnection)
            conn.grant = grant
        if path == "/metrics":
            return Response(
                HTTPStatus.OK,
                "OK",
                Headers({"Content-Type": "text/plain; version=0.0.4"}),
                metrics.metrics_text(),
            )
        return None

    def _talk_page(self, conn: ServerConnection, request: Request, path: str) -> Response:
        refused = self._foreign(_header(request, "Host"), _header(request, "Origin"))
        if refused is not None:
            return conn.respond(HTTPStatus.FORBIDDEN, refused + "\n")
        # Keyless (loopback only), the page mints its own secret; with keys, a backend mints
        # one and hands the page a link to /talk#ek_...
        secret_url = None if self.keys else talkpage.SECRET_PATH
        found = talkpage.asset(path) or talkpage.config(PATH, secret_url=secret_url)
        return Response(HTTPStatus.OK, "OK", Headers(talkpage.headers(found)), found.body)

    async def answer_post(self, post: Post) -> Answer:
        """``POST /v1/realtime/client_secrets`` (see :mod:`voice.runtime.client_secrets`);
        any other POST is not found."""
        path = post.path.split("?", 1)[0]
        if path not in (SECRETS_PATH, talkpage.SECRET_PATH):
            return _error(404, "not_found", f"no POST endpoint {path!r}; secrets: {SECRETS_PATH}")
        refused = self._foreign(post.headers.get("host"), post.headers.get("origin"))
        if refused is not None:
            return _error(403, "forbidden", refused)
        if path == talkpage.SECRET_PATH:
            # The talk page's own: only where the server has no keys (loopback), and only from
            # a script of a page here (a form of another site cannot add this header).
            if self.keys:
                return _error(403, "forbidden", f"this server has keys: mint with {SECRETS_PATH}")
            if post.headers.get(CSRF_HEADER.lower()) is None:
                return _error(403, "forbidden", f"the {CSRF_HEADER} header is required")
        authorization = post.headers.get("authorization")
        token = bearer_token(authorization)
        if self.keys and (token.startswith(client_secrets.PREFIX) or not self._known(token)):
            # A secret is no key: whoever holds one cannot mint another.
            return _error(401, "invalid_api_key", "a server API key is required (Bearer ...)")
        v = self.settings.voice
        try:
            seconds, session = client_secrets.parse_request(
                post.body, default_s=v.client_secret_ttl_s, max_s=v.client_secret_max_s
            )
            grant = await self.client_secrets.mint(
                key_id(authorization), seconds, session, time.time()
            )
        except SecretRefused as exc:
            kind = {429: "rate_limit_exceeded", 503: "server_error"}.get(
                exc.status, "invalid_request_error"
            )
            return _error(exc.status, kind, exc.message)
        log.info("client secret minted for %s, valid %d s", grant.key, seconds)
        body = client_secrets.response(grant, self.runtimes[0].name or "castwork")
        return Answer(200, json.dumps(body).encode())

    def _foreign(self, host: str | None, origin: str | None) -> str | None:
        """Why a request from another site is refused, if it is. Keyless, the server trusts
        that only this machine reaches it: a page whose domain was rebound to 127.0.0.1 still
        sends its own name as Host. A browser names the page's site in Origin: a loopback
        page, or one of voice.allowed_origins, may open a session; clients that are not
        browsers send no Origin."""
        if not self.keys and not trusted_host(host, loopback_only=True, allowed=()):
            return f"Host {host!r} is not a loopback name (this server has no API keys)"
        if origin is None or origin.lower().rstrip("/") in self.origins:
            return None
        if origin_allowed(origin, host_header=host, loopback_only=True):
            return None
        return f"Origin {origin!r} may not open sessions (voice.allowed_origins)"

    def readiness(self) -> tuple[HTTPStatus, str]:
        """200 while a session would be taken; 503 when full or draining."""
        open_now, seats = sum(self.sessions.values()), self.settings.voice.max_sessions
        if self.draining:
            return HTTPStatus.SERVICE_UNAVAILABLE, f"draining: {open_now} sessions finishing"
        if open_now >= seats:
            return HTTPStatus.SERVICE_UNAVAILABLE, f"full: {open_now} of {seats} sessions"
        return HTTPStatus.OK, f"ready: {seats - open_now} of {seats} seats free"

    async def drain(self, limit_s: float, hurry: asyncio.Event | None = None) -> None:
        """Stop taking sessions, let the open ones finish for up to ``limit_s`` (or until
        ``hurry`` is set), close what is left with 1012 (service restart: reconnect), then
        stop listening. The listener stays up meanwhile, so health checks see the 503."""
        self.draining = True
        open_now = sum(self.sessions.values())
        if open_now:
            log.info("draining: waiting up to %.0f s for %d sessions", limit_s, open_now)
            waits = [asyncio.ensure_future(self._all_gone.wait())]
            if hurry is not None:
                waits.append(asyncio.ensure_future(hurry.wait()))
            _, pending = await asyncio.wait(
                waits, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED
            )
            for w in pending:
                w.cancel()
        server = self.listener
        assert server is not None, "drain() before start()"
        left = list(server.connections)
        if left:
            log.warning("drain over: closing %d sessions (1012)", len(left))
            await asyncio.gather(
                *(ws.close(1012, "server restarting; connect again") for ws in left),
                return_exceptions=True,
            )
        server.close()
        await server.wait_closed()
        await self.client_secrets.aclose()

    def _known(self, presented: str) -> bool:
        return is_key(presented, self.keys)

    async def _handle(self, ws: ServerConnection) -> None:
        grant = ws.grant if isinstance(ws, _VoiceConnection) else None
        if grant is not None:  # counted and logged under the key that minted the secret
            key = grant.key
        else:
            key = key_id(_header(ws.request, "Authorization")) if ws.request else "anonymous"
        v = self.settings.voice
        refusal = None
        if sum(self.sessions.values()) >= v.max_sessions:
            refusal = f"server at capacity ({v.max_sessions} sessions); try again later"
        elif self.sessions[key] >= v.max_sessions_per_key:
            refusal = f"this key already has {v.max_sessions_per_key} sessions open"
        if refusal:
            err = protocol.error_event(ProtocolError(refusal, code="session_limit_reached"))
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps(err))
                await ws.close(1013, "at capacity")
            return
        sock = ws.transport.get_extra_info("socket")
        if sock is not None:
            # Bounded kernel buffering per caller (autotuning would allow megabytes): memory
            # stays small with many sessions and a stalled reader shows within seconds. 128 KiB
            # (doubled by the kernel) is about 2 s of 24 kHz audio, far above what real time needs on any network.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER_BYTES)
        self.sessions[key] += 1
        latency.SESSIONS_ACTIVE.inc()
        phone = ws.request is not None and ws.request.path.split("?", 1)[0] == twilio.PATH
        link = twilio.TwilioLink(ws, self.keys) if phone else ws
        try:
            bound_session = grant.session if grant is not None else None
            query = parse_qs(urlsplit(ws.request.path).query) if ws.request else {}
            turns = query.get("castwork_turns") == ["1"]
            await Connection(self, link, key=key, session=bound_session, turn_events=turns).run()
        finally:
            self.sessions[key] -= 1
            latency.SESSIONS_ACTIVE.dec()
            if self.draining and not any(self.sessions.values()):
                self._all_gone.set()
            if not any(self.sessions.values()):  # the last caller left: give memory back
                await asyncio.get_running_loop().run_in_executor(None, heap.trim)


def _url_host(address: str) -> str:
    if address in ("0.0.0.0", "::"):  # every interface: this machine's own name for it
        return "127.0.0.1"
    return f"[{address}]" if ":" in address else address


def _select_subprotocol(
    conn: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    chosen = client_secrets.select_subprotocol(list(offered))
    return Subprotocol(chosen) if chosen else None


class _VoiceConnection(PostingConnection):
    """A connection of this server: answers POSTs (client secrets), and carries the grant of
    the client secret its handshake presented."""

    grant: Grant | None = None


def _error(status: int, kind: str, message: str) -> Answer:
    body = {"error": {"type": kind, "code": kind, "message": message}}
    return Answer(status, json.dumps(body).encode())


def _eager_default_executor(loop: asyncio.AbstractEventLoop) -> None:
    """Give the loop its thread pool (model calls run there), every thread started now."""
    # Python's own default size.
    loop.set_default_executor(started_pool(min(32, (os.cpu_count() or 1) + 4), "castwork-worker"))


def warm_local_llms(runtimes: Sequence[Runtime]) -> None:
    """Local models read the default instructions and the server's tools into every context
    before the first caller does (:meth:`LlamaCppChat.warm`). A client's own instructions or
    tools still cost their first turn a cold read. Arms that share a model and instructions
    warm it once. Only an optimisation: a prompt that fails here (longer than the context,
    say) is logged, and the turns report it as they would have."""
    done: set[tuple[int, str]] = set()
    for rt in runtimes:
        system: Message = {"role": "system", "content": rt.settings.llm.instructions}
        tools = rt.engines.tools.specs() if rt.engines.tools else []
        for chat in rt.engines.chat:
            if not isinstance(chat, LlamaCppChat) or (id(chat), system["content"]) in done:
                continue
            done.add((id(chat), system["content"]))
            try:
                chat.warm([system], tools)
            except Exception as exc:  # llama.cpp raises ValueError and RuntimeError alike
                log.warning(
                    "could not warm %s (first turns read the prompt cold): %s", chat.name, exc
                )


async def serve_forever(
    settings: VoiceSettings,
    *,
    host: str | None = None,
    port: int | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Load the engines, serve until SIGINT/SIGTERM (or ``stop``), then close sessions."""
    import signal

    _eager_default_executor(asyncio.get_running_loop())
    t0 = time.perf_counter()
    cache = EngineCache()  # shared with the languages' runtimes, built on first use
    runtimes = await asyncio.to_thread(load_runtimes, settings, cache)
    for rt in runtimes:
        log.info(
            "engines loaded in %.1f s%s: asr=%s llm=%s tts=%s",
            time.perf_counter() - t0,
            "" if rt.name == NO_ARM else f" for arm {rt.name} (weight {rt.weight:g})",
            rt.engines.asr.name,
            ",".join(c.name for c in rt.engines.chat),
            rt.engines.tts.name,
        )
    tools = (
        await ToolBox.start(settings.tools) if settings.tools.http or settings.tools.mcp else None
    )
    if tools is not None:
        log.info("server tools: %s", ", ".join(tools.names()) or "none answered")
        for rt in runtimes:
            rt.engines.tools = tools
    t0 = time.perf_counter()
    await asyncio.to_thread(warm_local_llms, runtimes)
    log.info("local LLM contexts warmed in %.1f s", time.perf_counter() - t0)
    turn_log = TurnLog(settings.turn_log_path)
    cases = CaseRecorder.from_settings(settings)
    if cases is not None:
        log.info("capturing failure cases into %s", settings.cases_dir)
    first = runtimes[0]
    server = VoiceServer(
        settings,
        first.engines,
        first.vad,
        policy=first.policy,
        turn_log=turn_log,
        runtimes=runtimes,
        cases=cases,
        languages=partial(language_runtime, cache=cache),
    )
    srv = await server.start(host, port)
    bound_to = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in srv.sockets)
    log.info("voice server on ws://%s%s (turn log %s)", bound_to, PATH, settings.turn_log_path)
    first_bound = next(iter(srv.sockets)).getsockname()
    # Printed, not only logged: the address a person opens to talk (README quick start).
    print(
        f"talk page: http://{_url_host(first_bound[0])}:{first_bound[1]}{talkpage.PAGE}", flush=True
    )
    hurry = asyncio.Event()
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:  # the first drains, a second ends the drain at once
            (hurry if stop.is_set() else stop).set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
    await stop.wait()
    await server.drain(settings.voice.drain_s, hurry)
    turn_log.close()
    if tools is not None:
        await tools.aclose()
    if cases is not None:
        await asyncio.to_thread(cases.close)
