"""The WebSocket shell around :class:`voice.core.session.VoiceSession`.

One :class:`Connection` per client: it parses events, decodes audio, runs VAD, carries out
the core's actions (ASR and responses as tasks, events into a bounded outgoing queue) and
frees everything when the client goes. The server adds auth, limits and ``/metrics``, and
answers only loopback ``Host`` names without keys, and browsers only from loopback or listed
pages (``Origin``, :mod:`base.access`): no web page elsewhere can drive a local server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from base import metrics
from base.access import bearer_token, is_key, is_loopback, origin_allowed, trusted_host
from base.errors import ConfigError
from base.logs import bound
from base.threads import started_pool
from voice import audio as pcm
from voice.audio import FRAME_SAMPLES
from voice.core import protocol
from voice.core.actions import (
    Action,
    CancelResponse,
    Close,
    FinishTurn,
    JudgeTurn,
    ReleaseResponse,
    Send,
    StartResponse,
    Transcribe,
)
from voice.core.record import TurnRecord
from voice.core.session import SessionConfig, VoiceSession
from voice.engines.contracts import Message, VoiceActivity
from voice.engines.llm import LlamaCppChat
from voice.errors import ProtocolError
from voice.learning.cases import CaseRecorder
from voice.learning.experiments import NO_ARM, assign
from voice.runtime import client_secrets, latency, twilio
from voice.runtime.client_secrets import ClientSecrets, Grant, SecretRefused
from voice.runtime.latency import TurnLog
from voice.runtime.posts import Answer, Post, PostingConnection
from voice.runtime.toolcalls import CallRecord
from voice.runtime.turns import Engines, ResponseRunner, Runtime, TurnPolicy, transcribe
from voice.settings import VoiceSettings
from voice.tools import ToolBox

log = logging.getLogger(__name__)
PATH = "/v1/realtime"
SECRETS_PATH = "/v1/realtime/client_secrets"
_SEND_BUFFER_BYTES = 64 * 1024  # the kernel doubles it
# Messages received and not yet handled, per connection: at most 64 (2.5 s of 40 ms chunks,
# each keeping the time it arrived while processing lags) and about 2 MiB, and 4 more WebSocket
# frames behind them. A client that sends faster waits on TCP; a flood of 1 MiB messages is
# held as a few MiB here, where a count alone let (64 + 32) x 1 MiB pile up.
_INBOX_MESSAGES = 64
_INBOX_BYTES = 2 << 20
_WS_QUEUE = 4
# An append above this much base64 is decoded in a thread: a 1 MiB message of G.711 is 98 s
# of audio, tens of milliseconds of decoding and resampling every other session would wait for.
_DECODE_INLINE_MAX = 64 * 1024


def _libc_trim() -> Any:
    """glibc's malloc_trim, or None (musl, macOS...)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_malloc_trim = _libc_trim()


def give_back_heap() -> None:
    """Return freed heap pages to the OS. The native models (llama.cpp, CTranslate2, ONNX)
    allocate and free large buffers on every turn from many threads; glibc keeps what they free
    in per-thread arenas, so an idle server would otherwise sit on its busiest hour's memory.
    ctypes drops the GIL for the call."""
    if _malloc_trim is not None:
        _malloc_trim(0)


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
    ) -> None:
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
        self.client_secrets = ClientSecrets(v.max_client_secrets)

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
            def answer(self, post: Post) -> Answer:
                return server.answer_post(post)

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

    def finish_turn(self, turn: TurnRecord) -> None:
        self.turn_log.write(turn)
        if self.cases is not None:
            self.cases.offer(turn)

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":  # liveness only: says nothing but "ok"
            return conn.respond(HTTPStatus.OK, "ok\n")
        if path == "/readyz":  # for a load balancer: is there a seat for one more session?
            status, text = self.readiness()
            return conn.respond(status, text + "\n")
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
                grant = self.client_secrets.redeem(secret, time.time())
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

    def answer_post(self, post: Post) -> Answer:
        """``POST /v1/realtime/client_secrets`` (see :mod:`voice.runtime.client_secrets`);
        any other POST is not found."""
        path = post.path.split("?", 1)[0]
        if path != SECRETS_PATH:
            return _error(404, "not_found", f"no POST endpoint {path!r}; secrets: {SECRETS_PATH}")
        if (
            refused := self._foreign(post.headers.get("host"), post.headers.get("origin"))
        ) is not None:
            return _error(403, "forbidden", refused)
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
            grant = self.client_secrets.mint(key_id(authorization), seconds, session, time.time())
        except SecretRefused as exc:
            kind = "rate_limit_exceeded" if exc.status == 429 else "invalid_request_error"
            return _error(exc.status, kind, exc.message)
        log.info("client secret minted for %s, valid %d s", grant.key, seconds)
        body = self.client_secrets.response(grant, self.runtimes[0].name or "castwork")
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
            await Connection(self, link, key=key, session=bound_session).run()
        finally:
            self.sessions[key] -= 1
            latency.SESSIONS_ACTIVE.dec()
            if self.draining and not any(self.sessions.values()):
                self._all_gone.set()
            if not any(self.sessions.values()):  # the last caller left: give memory back
                await asyncio.get_running_loop().run_in_executor(None, give_back_heap)


class _Inbox:
    """Messages received, with their arrival times, and not yet handled: bounded in count and
    in bytes, so that a client sending faster than we handle waits (TCP backpressure)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[str | bytes, float] | None] = asyncio.Queue(
            _INBOX_MESSAGES
        )
        self._bytes = 0
        self._room = asyncio.Event()

    async def put(self, item: tuple[str | bytes, float] | None) -> None:
        if item is not None:
            while self._bytes > _INBOX_BYTES:
                self._room.clear()
                await self._room.wait()
            self._bytes += len(item[0])
        await self._queue.put(item)

    async def get(self) -> tuple[str | bytes, float] | None:
        item = await self._queue.get()
        if item is not None:
            self._bytes -= len(item[0])
            self._room.set()
        return item


class Connection:
    def __init__(
        self,
        server: VoiceServer,
        ws: ServerConnection | twilio.TwilioLink,
        *,
        key: str = "anonymous",
        session: dict[str, Any] | None = None,
    ) -> None:
        self.server, self.ws = server, ws
        # A client secret's bound configuration: applied as the first session.update.
        self.bound_session = session
        # A phone link translates events itself; JSON for it would be parsed straight back.
        self._emit: Callable[[dict[str, Any]], Awaitable[None]] = (
            ws.send_event if isinstance(ws, twilio.TwilioLink) else partial(_send_json, ws)
        )
        session_id = protocol.new_id("sess")
        self.rt = rt = server.pick(session_id, key)
        s = rt.settings  # the arm's: its VAD, ASR guard, instructions and voice
        v = server.settings.voice
        td = protocol.TurnDetection(
            threshold=s.vad.threshold,
            prefix_padding_ms=s.vad.prefix_padding_ms,
            silence_duration_ms=s.vad.silence_duration_ms,
            type=s.vad.turn_detection,
            eagerness=s.vad.eagerness,
        )
        config = SessionConfig(
            instructions=s.llm.instructions,
            voice=s.tts.voice,
            turn_detection=td,
            speculative_after_ms=s.vad.speculative_after_ms,
            partial_every_ms=s.vad.partial_every_ms,
            barge_in_min_ms=s.vad.barge_in_min_ms,
            no_speech_threshold=s.asr.no_speech_threshold,
            min_avg_logprob=s.asr.min_avg_logprob,
            history_chars=s.llm.history_chars,
            max_buffer_ms=v.max_buffer_s * 1000,
            max_audio_rate=v.max_audio_rate,
            audio_burst_ms=v.audio_burst_s * 1000,
            max_items=v.max_items,
            max_item_chars=v.max_item_chars,
            max_conversation_chars=v.max_conversation_chars,
        )
        self.core = VoiceSession(session_id, config, key=key, arm=rt.name, lineage=rt.lineage)
        self.vad = rt.vad.fork()
        self.frames = pcm.FrameSplitter(FRAME_SAMPLES)
        self.decoder = pcm.StreamDecoder(config.input_format)
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=256)
        self.runners: dict[str, ResponseRunner] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.cancelled_at: dict[str, float] = {}  # response id -> when its cancel came
        self.closing: Close | None = None  # the core ended the session: close with this

    async def run(self) -> None:
        with bound(session_id=self.core.id):
            log.info("session opened")
            writer = asyncio.create_task(self._writer())
            try:
                await self._do(self.core.start())
                if self.bound_session:
                    update = protocol.SessionUpdate(
                        type="session.update",
                        session=protocol.SessionPatch.model_validate(self.bound_session),
                    )
                    await self._do(self.core.on_client_event(update, time.monotonic()))
                async with asyncio.timeout(self.server.settings.voice.session_max_s):
                    await self._reader()
            except TimeoutError:
                await self._send(
                    protocol.error_event(
                        ProtocolError(
                            "session reached its maximum duration", code="session_expired"
                        )
                    )
                )
            except ConnectionClosed:
                pass
            finally:
                await self._teardown(writer)

    async def _reader(self) -> None:
        """Receive in one task and process in this one, so that each message keeps the time it
        arrived even when processing lags (VAD and decodes compete for the cores)."""
        inbox = _Inbox()
        receiver = asyncio.create_task(self._receive(inbox))
        try:
            while (got := await inbox.get()) is not None:
                raw, arrived = got
                lag = time.monotonic() - arrived
                if lag > 0.1:
                    log.debug("processing lags %.0f ms behind arrival", lag * 1000)
                try:
                    ev = protocol.parse_client_event(raw)
                    if isinstance(ev, protocol.InputAudioBufferAppend):
                        actions = await self._append(ev, arrived)
                    else:
                        actions = self.core.on_client_event(ev, arrived)
                except ProtocolError as exc:
                    actions = [Send(protocol.error_event(exc))]
                except Exception as exc:  # one bad message must not end the session
                    log.exception("could not handle a client message")
                    actions = [Send(protocol.error_event(exc))]
                await self._do(actions)
                if self.closing is not None:
                    break
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)

    async def _receive(self, inbox: _Inbox) -> None:
        idle = self.server.settings.voice.idle_timeout_s
        while True:
            try:
                # Not wait_for: on 3.11 it can swallow a cancel that lands as a message arrives,
                # and the reader's stop (a Close from the core) would wait for the client.
                async with asyncio.timeout(idle):
                    raw = await self.ws.recv()
            except TimeoutError:
                error = ProtocolError(f"no message for {idle:.0f} s", code="idle_timeout")
                await self._send(protocol.error_event(error))
                break
            except ConnectionClosed:
                break
            await inbox.put((raw, time.monotonic()))
        await inbox.put(None)  # not in a finally: when cancelled, nobody is reading any more

    async def _append(self, ev: protocol.InputAudioBufferAppend, arrived: float) -> list[Action]:
        fmt = self.core.config.input_format
        if self.decoder.fmt != fmt:  # session.update changed the input format
            self.decoder = pcm.StreamDecoder(fmt)
        taken, refused = self.core.admit_audio(pcm.base64_ms(ev.audio, fmt), arrived, ev.event_id)
        if not taken:
            return refused
        if len(ev.audio) > _DECODE_INLINE_MAX:
            samples = await asyncio.to_thread(self._decode, ev)
        else:
            samples = self._decode(ev)
        frames = self.frames.push(samples)
        probs: list[float] = []
        if frames and self.core.config.turn_detection is not None:
            # 0.2 ms a frame: cheap, but a model call all the same, so off the event loop.
            probs = await asyncio.to_thread(
                lambda: [self.vad.speech_probability(f) for f in frames]
            )
        else:
            probs = [0.0] * len(frames)
        return self.core.on_audio(samples, probs, arrived)

    def _decode(self, ev: protocol.InputAudioBufferAppend) -> pcm.Float32Array:
        try:
            return self.decoder.decode(base64.b64decode(ev.audio, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(
                f"input_audio_buffer.append: bad audio: {exc}",
                code="invalid_audio",
                event_id=ev.event_id,
            ) from None

    # --- actions --------------------------------------------------------------------------------

    async def _do(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                await self._send(action.event)
            elif isinstance(action, Transcribe):
                self._spawn(self._transcribe(action))
            elif isinstance(action, JudgeTurn):
                self._spawn(self._judge(action))
            elif isinstance(action, StartResponse):
                self._start_response(action)
            elif isinstance(action, ReleaseResponse):
                if runner := self.runners.get(action.response_id):
                    runner.release()
            elif isinstance(action, CancelResponse):
                if runner := self.runners.get(action.response_id):
                    self.cancelled_at.setdefault(action.response_id, time.monotonic())
                    runner.cancel(action.reason)
            elif isinstance(action, FinishTurn):
                self._finish_turn(action.turn)
            elif isinstance(action, Close):
                self.closing = action

    async def _transcribe(self, action: Transcribe) -> None:
        if action.purpose == "partial" and self.server.asr_busy:
            await self._do(self.core.on_transcript(action.request_id, None, time.monotonic()))
            return
        self.server.asr_busy += 1
        try:
            result, retried = await transcribe(self.rt.engines, action.audio)
        finally:
            self.server.asr_busy -= 1
        await self._do(
            self.core.on_transcript(action.request_id, result, time.monotonic(), retried=retried)
        )

    async def _judge(self, action: JudgeTurn) -> None:
        model, probability = self.rt.engines.turn, None
        if model is not None:
            try:
                probability = await asyncio.to_thread(model.probability, action.audio)
            except Exception:  # a broken judge must not end the turn: the transcript decides
                log.exception("end-of-turn model %s failed", model.name)
        await self._do(self.core.on_turn_judged(action.request_id, probability, time.monotonic()))

    def _start_response(self, action: StartResponse) -> None:
        cfg = self.core.config
        runner = ResponseRunner(
            action,
            self.rt.engines,
            self.rt.policy,
            self._send,
            output_format=cfg.output_format,
            voice=cfg.voice,
            on_late_result=self._late_tool_result,
        )
        self.runners[action.response_id] = runner
        self._spawn(self._run_response(runner))

    async def _run_response(self, runner: ResponseRunner) -> None:
        try:
            await runner.run()
        except Exception:
            log.exception("response %s failed", runner.start.response_id)
            runner.status = "failed"
        finally:
            self.runners.pop(runner.start.response_id, None)
        response_id = runner.start.response_id
        cancelled_at = self.cancelled_at.pop(response_id, None)
        # A held response never released was speculation: its calls were never made.
        calls = runner.calls if runner.released.is_set() else []
        await self._do(
            self.core.on_response_done(
                response_id,
                runner.status,
                runner.spoken_segments(),
                time.monotonic(),
                calls=[c.as_item() for c in calls],
                message_at=runner.calls_before_message(),
                sent=runner.segments,
                reply=runner.reply_text(),
                cancel_to_done_ms=None
                if cancelled_at is None
                else (time.monotonic() - cancelled_at) * 1000,
            )
        )

    async def _late_tool_result(self, call: CallRecord) -> None:
        await self._do(self.core.on_tool_result(call.item_id, call.result_text()))

    def _finish_turn(self, turn: TurnRecord) -> None:
        self.server.finish_turn(turn)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # --- output -----------------------------------------------------------------------------

    async def _send(self, event: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(
                self.outbox.put(event), self.server.settings.voice.send_timeout_s
            )
        except TimeoutError:
            self._drop_stalled("outgoing queue full")

    def _drop_stalled(self, why: str) -> None:
        # No closing handshake: a close frame would queue behind everything it did not read.
        log.warning("%s; dropping the connection", why)
        self.ws.transport.abort()

    async def _writer(self) -> None:
        timeout = self.server.settings.voice.send_timeout_s
        while (event := await self.outbox.get()) is not None:
            try:
                # Answers are paced at real time, so a send that cannot finish for this long
                # means the client's socket has taken nothing (its buffers and ours are full).
                await asyncio.wait_for(self._emit(event), timeout)
            except TimeoutError:
                self._drop_stalled(f"client read nothing for {timeout:.0f} s")
                return

    async def _teardown(self, writer: asyncio.Task[None]) -> None:
        for runner in list(self.runners.values()):
            runner.cancel("client_cancelled")
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for action in self.core.on_close(time.monotonic()):
            if isinstance(action, FinishTurn):
                self._finish_turn(action.turn)
        with contextlib.suppress(asyncio.QueueFull):
            self.outbox.put_nowait(None)
        try:
            async with asyncio.timeout(1.0):
                await writer
        except (TimeoutError, ConnectionClosed):
            writer.cancel()
        if self.closing is not None:  # after the writer: the error events go out first
            log.warning("closing the session: %s", self.closing.reason)
            with contextlib.suppress(ConnectionClosed):
                await self.ws.close(self.closing.code, self.closing.reason)
        log.info("session closed")


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


async def _send_json(ws: ServerConnection, event: dict[str, Any]) -> None:
    await ws.send(json.dumps(event))


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

    from voice.runtime.assembly import load_runtimes

    _eager_default_executor(asyncio.get_running_loop())
    t0 = time.perf_counter()
    runtimes = await asyncio.to_thread(load_runtimes, settings)
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
    )
    srv = await server.start(host, port)
    bound_to = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in srv.sockets)
    log.info("voice server on ws://%s%s (turn log %s)", bound_to, PATH, settings.turn_log_path)
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
