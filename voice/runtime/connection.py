"""One client's session on the voice server: :class:`Connection` parses its events, decodes
its audio, runs VAD, carries out the core's actions (ASR and responses as tasks, events into
a bounded outgoing queue) and frees everything when the client goes. The server
(:mod:`voice.runtime.server`) accepts it, checks who it is and how many are open.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from base.logs import bound
from voice import audio as pcm
from voice.audio import FRAME_SAMPLES
from voice.core import protocol
from voice.core.actions import (
    Action,
    CancelResponse,
    Close,
    FinishTurn,
    JudgeText,
    JudgeTurn,
    PrimeText,
    ReleaseResponse,
    Send,
    StartResponse,
    Transcribe,
)
from voice.core.record import TurnRecord
from voice.core.session import SessionConfig, VoiceSession
from voice.errors import ProtocolError
from voice.runtime import twilio
from voice.runtime.toolcalls import CallRecord
from voice.runtime.turns import ResponseRunner, transcribe
from voice.settings import VoiceSettings

if TYPE_CHECKING:
    from voice.runtime.server import VoiceServer

log = logging.getLogger(__name__)
# Messages received and not yet handled, per connection: at most 64 (2.5 s of 40 ms chunks,
# each keeping the time it arrived while processing lags) and about 2 MiB, and 4 more WebSocket
# frames behind them. A client that sends faster waits on TCP; a flood of 1 MiB messages is
# held as a few MiB here, where a count alone let (64 + 32) x 1 MiB pile up.
_INBOX_MESSAGES = 64
_INBOX_BYTES = 2 << 20
# An append above this much base64 is decoded in a thread: a 1 MiB message of G.711 is 98 s
# of audio, tens of milliseconds of decoding and resampling every other session would wait for.
_DECODE_INLINE_MAX = 64 * 1024


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
        turn_events: bool = False,
    ) -> None:
        self.server, self.ws = server, ws
        # A client secret's bound configuration: applied as the first session.update.
        self.bound_session = session
        self.turn_events = turn_events  # send castwork.turn after each turn (the talk page)
        # A phone link translates events itself; JSON for it would be parsed straight back.
        self._emit: Callable[[dict[str, Any]], Awaitable[None]] = (
            ws.send_event if isinstance(ws, twilio.TwilioLink) else partial(_send_json, ws)
        )
        session_id = protocol.new_id("sess")
        # The arm's runtime; self.rt is the one serving now: the arm's in the session's
        # language (see _follow_language).
        self.arm = self.rt = rt = server.pick(session_id, key)
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
            voice=_voice_name(s),
            turn_detection=td,
            speculative_after_ms=s.vad.speculative_after_ms,
            partial_every_ms=s.vad.partial_every_ms,
            barge_in_min_ms=s.vad.barge_in_min_ms,
            text_turn=rt.engines.text_turn is not None,
            backchannel_prompt=s.vad.backchannel_prompt,
            no_speech_threshold=s.asr.no_speech_threshold,
            min_avg_logprob=s.asr.min_avg_logprob,
            history_chars=s.llm.history_chars,
            max_buffer_ms=v.max_buffer_s * 1000,
            max_audio_rate=v.max_audio_rate,
            audio_burst_ms=v.audio_burst_s * 1000,
            max_items=v.max_items,
            max_item_chars=v.max_item_chars,
            max_conversation_chars=v.max_conversation_chars,
            languages=frozenset({"en", *server.settings.languages}),
            still_there=s.llm.still_there,
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
                        if isinstance(ev, protocol.SessionUpdate):
                            await self._follow_language(ev)
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

    async def _follow_language(self, ev: protocol.SessionUpdate) -> None:
        """Serve the session in the language it asks for (settings.languages): that
        language's runtime for the next turns (ASR, LLM, voice), and its default instructions,
        voice and phrases where the client has not chosen its own. An unserved language is
        left to the core, which refuses it."""
        audio_in = ev.session.audio.input if ev.session.audio else None
        asked = audio_in.transcription if audio_in else None
        if asked is None or "language" not in asked.model_fields_set:
            return
        language = None if asked.language in (None, "en") else asked.language
        if language is not None and language not in self.server.settings.languages:
            return
        old = self.rt.settings
        self.rt = (
            self.arm if language is None else await self.server.runtime_for(self.arm, language)
        )
        new, c = self.rt.settings, self.core.config
        if c.instructions == old.llm.instructions:
            c.instructions = new.llm.instructions
        if c.voice == _voice_name(old):
            c.voice = _voice_name(new)
        c.still_there = new.llm.still_there
        c.text_turn = self.rt.engines.text_turn is not None  # none reads Korean, for one
        log.info("session language %s: %s", language or "en", self.rt.engines.asr.name)

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
            elif isinstance(action, JudgeText):
                self._spawn(self._judge_text(action))
            elif isinstance(action, PrimeText):
                self._spawn(self._prime_text(action))
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
            result, retried = await transcribe(self.rt.engines, action.audio, prompt=action.prompt)
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

    async def _judge_text(self, action: JudgeText) -> None:
        model, probability = self.rt.engines.text_turn, None
        if model is not None:
            try:
                probability = await asyncio.to_thread(model.probability, action.text, action.before)
            except Exception:  # a broken reader must not end the turn: the rest decides
                log.exception("text end-of-turn model %s failed", model.name)
        await self._do(self.core.on_text_judged(action.request_id, probability, time.monotonic()))

    async def _prime_text(self, action: PrimeText) -> None:
        model = self.rt.engines.text_turn
        if model is not None:
            try:
                await asyncio.to_thread(model.prime, action.before)
            except Exception:  # only an optimisation: the pause's reading reads it all
                log.exception("text end-of-turn model %s failed to read ahead", model.name)

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
        if self.turn_events:
            record = turn.to_json()
            event = protocol.event(
                "castwork.turn",
                turn_id=turn.turn_id,
                outcome=turn.outcome,
                recovery=record["recovery"],
                durations_ms=record["durations_ms"],
            )
            self._spawn(self._send(event))

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


async def _send_json(ws: ServerConnection, event: dict[str, Any]) -> None:
    await ws.send(json.dumps(event))


def _voice_name(settings: VoiceSettings) -> str:
    """The voice a session reports: Piper's voice, or espeak-ng's language voice."""
    return settings.tts.espeak_voice if settings.tts.engine == "espeak" else settings.tts.voice
