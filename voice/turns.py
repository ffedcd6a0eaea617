"""Runs one response: LLM → speakable pieces → TTS → paced audio events, with recovery.

Three stages joined by queues, so the LLM keeps writing while a piece is synthesised and a
piece is synthesised while earlier audio is sent::

    _think (LLM chain)  ──pieces──▶  _speak (TTS, fallback engine)  ──audio──▶  _deliver (paced)

A held response (prefetched during the user's pause) runs the first two stages at once and
starts ``_deliver`` only when released. Recovery branches (each a reason code on the turn):

- LLM: no first token by the deadline, an error, or an empty answer → next backend in the
  chain (``llm_fallback``); all failed → a cached spoken apology (``llm_all_failed``).
- TTS error → the rest of the answer in the fallback engine (``tts_fallback``).
- Cancelled (barge-in, client cancel) → stops at once; ``response.done`` says ``cancelled``
  and the spoken text is cut to what was played.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from voice import audio as pcm
from voice import protocol as p
from voice.chunker import SpeakableChunker
from voice.config import Settings
from voice.engines import ChatModel, Synthesizer, Transcriber, Transcript, VoiceActivity
from voice.errors import EngineError
from voice.latency import TurnRecord
from voice.session import StartResponse, spoken_text

log = logging.getLogger(__name__)
APOLOGY = "Sorry, I'm having trouble answering right now. Please try again in a moment."
Sender = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Engines:
    """The models a session uses; loaded once per server and shared by its sessions."""

    asr: Transcriber
    chat: list[ChatModel]
    tts: Synthesizer
    asr_fallback: Transcriber | None = None
    tts_fallback: Synthesizer | None = None
    apology: tuple[pcm.Float32Array, int] | None = None  # cached clip and its rate


@dataclass(frozen=True)
class TurnPolicy:
    first_token_timeout_s: float = 2.5
    total_timeout_s: float = 20.0
    max_tokens: int = 96
    temperature: float = 0.3
    # How far sent audio may run ahead of real-time playback: bounds the client's buffer
    # and the audio thrown away on barge-in.
    lead_ms: float = 800.0
    delta_ms: int = 200


@dataclass
class Runtime:
    """What one experiment arm serves with (the whole server, without an experiment)."""

    name: str
    engines: Engines
    vad: VoiceActivity
    policy: TurnPolicy
    settings: Settings
    weight: float = 1.0
    lineage: dict[str, object] = field(default_factory=dict)


async def transcribe(engines: Engines, audio: pcm.Float32Array) -> tuple[Transcript | None, bool]:
    """Primary ASR, then the fallback model once. Returns (result or None, whether it retried)."""
    try:
        return await asyncio.to_thread(engines.asr.transcribe, audio), False
    except EngineError as exc:
        log.warning("ASR %s failed: %s", engines.asr.name, exc)
    if engines.asr_fallback is None:
        return None, False
    try:
        return await asyncio.to_thread(engines.asr_fallback.transcribe, audio), True
    except EngineError as exc:
        log.warning("fallback ASR %s failed: %s", engines.asr_fallback.name, exc)
        return None, True


@dataclass
class _Piece:
    text: str
    audio: pcm.Float32Array | None = None
    rate: int = 0


@dataclass
class ResponseRunner:
    start: StartResponse
    engines: Engines
    policy: TurnPolicy
    send: Sender
    output_format: str = "audio/pcm"
    voice: str = "joe"
    segments: list[tuple[str, float, float]] = field(default_factory=list)
    status: str = "in_progress"
    reason: str | None = None
    played_ms: float = 0.0

    def __post_init__(self) -> None:
        self.released = asyncio.Event()
        if not self.start.held:
            self.released.set()
        self._work: asyncio.Task[None] | None = None
        self._output_tokens = 0
        self._llm_text: list[str] = []
        self._first_sent_at: float | None = None
        self._sent_ms = 0.0
        self._audio = "audio" in self.start.modalities
        self._announced = False

    @property
    def turn(self) -> TurnRecord:
        return self.start.turn

    def release(self) -> None:
        self.released.set()

    def cancel(self, reason: str) -> None:
        """Stop now. Audio already sent but not yet played is counted as unheard."""
        if self.reason is None:
            self.reason = reason
            if self._first_sent_at is not None:
                self.played_ms = min(self._sent_ms, (time.monotonic() - self._first_sent_at) * 1000)
        if self._work is not None:
            self._work.cancel()

    async def run(self) -> None:
        self._work = asyncio.ensure_future(self._pipeline())
        if self.reason is not None:
            # Cancelled before this task first ran (a response.cancel right behind the
            # response.create): cancel() found no work to stop, so stop it here, before it starts.
            self._work.cancel()
        try:
            await self._work
            self.status = "completed"
            self.played_ms = self._sent_ms
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.reason is None or (task is not None and task.cancelling()):
                raise  # the session itself is going away
            self.status = "cancelled"
        except Exception:
            # A bug or an engine error nobody mapped: the client still gets its
            # response.done (failed) and the session goes on.
            log.exception("response %s failed", self.start.response_id)
            self.status = "failed"
        self.turn.mark("response_done")
        if self.released.is_set():
            await self._finish()

    async def _pipeline(self) -> None:
        pieces: asyncio.Queue[_Piece | None] = asyncio.Queue()
        # Synthesis runs at most two pieces ahead of delivery: a held (prefetched) response
        # that is never released has then wasted little.
        sounds: asyncio.Queue[_Piece | None] = asyncio.Queue(maxsize=2)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._think(pieces))
            tg.create_task(self._speak(pieces, sounds) if self._audio else _relay(pieces, sounds))
            await self.released.wait()
            await self._deliver(sounds)

    # --- stage 1: words -------------------------------------------------------------------------

    async def _think(self, out: asyncio.Queue[_Piece | None]) -> None:
        if self.start.canned_text:
            await out.put(_Piece(self.start.canned_text))
            await out.put(None)
            return
        for i, chat in enumerate(self.engines.chat):
            if i:
                self.turn.add_recovery("llm_fallback")
            if await self._try_backend(chat, out):
                await out.put(None)
                return
        self.turn.add_recovery("llm_all_failed")
        # Grouped by model, the apology turns stand apart from every backend's own.
        self.turn.models.setdefault("llm", "apology")
        apology = self.engines.apology
        await out.put(_Piece(APOLOGY, *apology) if apology else _Piece(APOLOGY))
        await out.put(None)

    async def _try_backend(self, chat: ChatModel, out: asyncio.Queue[_Piece | None]) -> bool:
        """Stream one backend's answer into ``out``; False if it gave nothing usable in time."""
        chunker = SpeakableChunker()
        max_tokens = min(
            self.policy.max_tokens, self.start.max_output_tokens or self.policy.max_tokens
        )
        stream = chat.stream(
            self.start.messages, max_tokens=max_tokens, temperature=self.policy.temperature
        )
        produced = False
        try:
            async with asyncio.timeout(self.policy.first_token_timeout_s) as deadline:
                first = await anext(stream)
                self.turn.mark("llm_first_token")
                self.turn.models["llm"] = chat.name
                # From here: the whole answer within total_timeout_s, and no silence longer
                # than first_token_timeout_s between tokens (a stream that stalls mid-answer
                # must not hold the user for the whole total budget).
                loop = asyncio.get_running_loop()
                end = loop.time() + self.policy.total_timeout_s
                stall = self.policy.first_token_timeout_s
                tokens = [first]
                while tokens:
                    for token in tokens:
                        self._output_tokens += 1
                        self._llm_text.append(token)
                        for piece in chunker.push(token):
                            produced = await self._emit_piece(piece, out) or produced
                    deadline.reschedule(min(end, loop.time() + stall))
                    tokens = [await anext(stream)]
        except StopAsyncIteration:
            pass
        except Exception as exc:  # EngineError, TimeoutError, or a backend's own bug
            level = (
                logging.WARNING if isinstance(exc, EngineError | TimeoutError) else logging.ERROR
            )
            log.log(level, "LLM %s failed: %s", chat.name, str(exc) or type(exc).__name__)
            if not produced:
                return False
            self.turn.add_recovery("llm_cut_short")  # keep what was already said
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        for piece in chunker.flush():
            produced = await self._emit_piece(piece, out) or produced
        return produced

    async def _emit_piece(self, text: str, out: asyncio.Queue[_Piece | None]) -> bool:
        if not text.strip():
            return False
        self.turn.mark("first_piece")
        await out.put(_Piece(text))
        return True

    # --- stage 2: sound -------------------------------------------------------------------------

    async def _speak(
        self, pieces: asyncio.Queue[_Piece | None], out: asyncio.Queue[_Piece | None]
    ) -> None:
        engine: Synthesizer | None = self.engines.tts
        self.turn.models.setdefault("tts", self.engines.tts.name)
        while (piece := await pieces.get()) is not None:
            if piece.audio is None:
                while engine is not None:
                    try:
                        chunks = await asyncio.to_thread(_synthesize, engine, piece.text)
                        piece.audio = pcm.concat(chunks)
                        piece.rate = engine.sample_rate
                        break
                    except EngineError as exc:
                        log.warning("TTS %s failed: %s", engine.name, exc)
                        fallback = self.engines.tts_fallback
                        engine = fallback if engine is not fallback else None
                        if engine is not None:
                            self.turn.add_recovery("tts_fallback")
                            self.turn.models["tts"] = engine.name
                if engine is None:
                    self.turn.add_recovery("tts_failed")
                    continue
            self.turn.mark("tts_first_audio")
            await out.put(piece)
        await out.put(None)

    # --- stage 3: delivery ----------------------------------------------------------------------

    async def _deliver(self, sounds: asyncio.Queue[_Piece | None]) -> None:
        await self._announce()
        while (piece := await sounds.get()) is not None:
            if self._audio and piece.audio is not None:
                await self._send_audio(piece)
            else:
                self.segments.append((piece.text, self._sent_ms, self._sent_ms))
                await self.send(
                    p.event("response.output_text.delta", **self._where(), delta=piece.text + " ")
                )

    async def _announce(self) -> None:
        """response.created and the empty output item, once: a response cancelled before it
        delivered anything still opens before it closes."""
        if self._announced:
            return
        self._announced = True
        s = self.start
        item = p.assistant_item(s.item_id, transcript="", audio=self._audio, status="in_progress")
        await self.send(p.event("response.created", response=self._response_object("in_progress")))
        await self.send(
            p.event(
                "response.output_item.added", response_id=s.response_id, output_index=0, item=item
            )
        )
        await self.send(p.event("conversation.item.added", previous_item_id=None, item=item))
        part = {"type": "audio", "transcript": ""} if self._audio else {"type": "text", "text": ""}
        await self.send(p.event("response.content_part.added", **self._where(), part=part))

    async def _send_audio(self, piece: _Piece) -> None:
        assert piece.audio is not None
        data = pcm.encode(piece.audio, piece.rate, self.output_format)
        step = int(pcm.bytes_per_ms(self.output_format) * self.policy.delta_ms) // 2 * 2
        start_ms = self._sent_ms
        await self.send(
            p.event(
                "response.output_audio_transcript.delta",
                **self._where(),
                delta=("" if not self.segments else " ") + piece.text,
            )
        )
        self.segments.append(
            (piece.text, start_ms, start_ms + len(data) / pcm.bytes_per_ms(self.output_format))
        )
        for offset in range(0, len(data), step):
            await self._pace()
            chunk = data[offset : offset + step]
            await self.send(
                p.event(
                    "response.output_audio.delta",
                    **self._where(),
                    delta=base64.b64encode(chunk).decode(),
                )
            )
            if self._first_sent_at is None:
                self._first_sent_at = time.monotonic()
                self.turn.mark("first_audio_sent")
            self._sent_ms += len(chunk) / pcm.bytes_per_ms(self.output_format)

    async def _pace(self) -> None:
        if self._first_sent_at is None:
            return
        ahead = self._sent_ms - (time.monotonic() - self._first_sent_at) * 1000
        if ahead > self.policy.lead_ms:
            await asyncio.sleep((ahead - self.policy.lead_ms) / 1000)

    async def _finish(self) -> None:
        await self._announce()
        s = self.start
        transcript = (
            spoken_text(self.segments, self.played_ms)
            if self.status == "cancelled"
            else self._full_text()
        )
        item_status = "completed" if self.status == "completed" else "incomplete"
        item = p.assistant_item(
            s.item_id, transcript=transcript, audio=self._audio, status=item_status
        )
        if self._audio:
            await self.send(p.event("response.output_audio.done", **self._where()))
            await self.send(
                p.event(
                    "response.output_audio_transcript.done", **self._where(), transcript=transcript
                )
            )
            part: dict[str, Any] = {"type": "audio", "transcript": transcript}
        else:
            await self.send(p.event("response.output_text.done", **self._where(), text=transcript))
            part = {"type": "text", "text": transcript}
        await self.send(p.event("response.content_part.done", **self._where(), part=part))
        await self.send(
            p.event(
                "response.output_item.done", response_id=s.response_id, output_index=0, item=item
            )
        )
        await self.send(p.event("conversation.item.done", previous_item_id=None, item=item))
        details: dict[str, Any] | None = None
        if self.status == "cancelled":
            details = {"type": "cancelled", "reason": _wire_reason(self.reason)}
        elif self.status == "failed":
            details = {
                "type": "failed",
                "error": {"type": "server_error", "code": "response_failed"},
            }
        resp = self._response_object(self.status, output=[item], details=details)
        await self.send(p.event("response.done", response=resp))

    # --- helpers --------------------------------------------------------------------------------

    def _full_text(self) -> str:
        return " ".join(t for t, _, _ in self.segments).strip()

    def reply_text(self) -> str:
        """Everything the response meant to say: the LLM's words, else the pieces spoken."""
        if self._llm_text:
            return "".join(self._llm_text).strip()
        return " ".join(text for text, _, _ in self.segments) or (self.start.canned_text or "")

    def spoken_segments(self) -> list[tuple[str, float, float]]:
        """What the conversation keeps: only the audio that was (probably) heard."""
        if self.status != "cancelled":
            if self._llm_text and self.segments:
                # The LLM's exact text, so that llama.cpp's prompt cache matches it next turn.
                return [
                    ("".join(self._llm_text).strip(), self.segments[0][1], self.segments[-1][2])
                ]
            return self.segments
        heard = spoken_text(self.segments, self.played_ms)
        return [(heard, 0.0, self.played_ms)] if heard else []

    def _where(self) -> dict[str, Any]:
        s = self.start
        return {
            "response_id": s.response_id,
            "item_id": s.item_id,
            "output_index": 0,
            "content_index": 0,
        }

    def _response_object(
        self,
        status: str,
        output: list[dict[str, Any]] | None = None,
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        s = self.start
        input_tokens = sum(len(m["content"]) for m in s.messages) // 4
        return p.response_object(
            s.response_id,
            status=status,
            output=output,
            modalities=s.modalities,
            output_format=self.output_format,
            voice=self.voice,
            max_output_tokens=s.max_output_tokens or "inf",
            status_details=details,
            usage=p.usage(input_tokens, self._output_tokens) if status != "in_progress" else None,
        )


def _synthesize(engine: Synthesizer, text: str) -> list[pcm.Float32Array]:
    return list(engine.synthesize(text))


async def _relay(src: asyncio.Queue[_Piece | None], dst: asyncio.Queue[_Piece | None]) -> None:
    """Text-only responses skip TTS."""
    while (piece := await src.get()) is not None:
        await dst.put(piece)
    await dst.put(None)


def _wire_reason(reason: str | None) -> str:
    # The protocol knows two cancel reasons; ours map onto them.
    return "turn_detected" if reason == "turn_detected" else "client_cancelled"
