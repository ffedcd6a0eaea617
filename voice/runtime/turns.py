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
from functools import partial
from typing import Any

from voice import audio as pcm
from voice.core import protocol as p
from voice.core.actions import StartResponse
from voice.core.chunker import SpeakableChunker
from voice.core.record import TurnRecord
from voice.core.session import spoken_text
from voice.engines.contracts import (
    ChatModel,
    EndOfTurn,
    Message,
    Synthesizer,
    TextEndOfTurn,
    ToolCallDelta,
    ToolSpec,
    Transcriber,
    Transcript,
    VoiceActivity,
)
from voice.errors import EngineError, ToolArgumentsError, ToolError
from voice.runtime.toolcalls import CallAssembler, CallRecord, Side, chat_messages, offered
from voice.settings import VoiceSettings
from voice.tools import ToolBox, validate

log = logging.getLogger(__name__)
# What is said when no model answers (llm.apology; pre-synthesised into Engines.apology).
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
    # The operator's server-side tools (HTTP, MCP), offered beside the client's own.
    tools: ToolBox | None = None
    # semantic_vad's end-of-turn model (None: the transcript alone judges a pause).
    turn: EndOfTurn | None = None
    # ... and its reader of the pause's words (None: the transcript's last word alone).
    text_turn: TextEndOfTurn | None = None


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
    # Model rounds a response may spend on tool calls before it must answer in words.
    max_tool_rounds: int = 3
    # A server tool still running after this long gets a short spoken filler, once.
    filler_after_s: float = 0.7
    filler_text: str = "One moment."
    apology_text: str = APOLOGY
    # Where the first speakable piece is cut (voice.core.chunker).
    first_piece_min_chars: int = 8
    first_piece_max_chars: int = 24


@dataclass
class Runtime:
    """What one experiment arm serves with (the whole server, without an experiment)."""

    name: str
    engines: Engines
    vad: VoiceActivity
    policy: TurnPolicy
    settings: VoiceSettings
    weight: float = 1.0
    lineage: dict[str, object] = field(default_factory=dict)


async def transcribe(
    engines: Engines, audio: pcm.Float32Array, *, prompt: str | None = None
) -> tuple[Transcript | None, bool]:
    """Primary ASR, then the fallback model once. Returns (result or None, whether it retried)."""
    try:
        return await asyncio.to_thread(partial(engines.asr.transcribe, audio, prompt=prompt)), False
    except EngineError as exc:
        log.warning("ASR %s failed: %s", engines.asr.name, exc)
    if engines.asr_fallback is None:
        return None, False
    try:
        return await asyncio.to_thread(
            partial(engines.asr_fallback.transcribe, audio, prompt=prompt)
        ), True
    except EngineError as exc:
        log.warning("fallback ASR %s failed: %s", engines.asr_fallback.name, exc)
        return None, True


@dataclass
class _Piece:
    text: str
    audio: pcm.Float32Array | None = None
    rate: int = 0
    # A tool-call event, delivered in its place among the spoken pieces, never synthesised:
    # "start" (item added), "args" (a piece of arguments), "done" (arguments complete),
    # "result" (a server call's output or error).
    call: CallRecord | None = None
    step: str = ""


@dataclass
class _Answer:
    """One model round: what it said and the calls it made."""

    text: str
    calls: list[CallRecord]


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
    # Every tool call the response made, in order (client and server).
    calls: list[CallRecord] = field(default_factory=list)
    # Told when a server call the response started returns after the response ended (the
    # caller interrupted it): its result belongs in the history, though nobody speaks it.
    on_late_result: Callable[[CallRecord], Awaitable[None]] | None = None

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
        self._outputs = 0  # output items announced so far (their output_index)
        self._message_index: int | None = None  # the spoken message item's output_index
        self._filled = False  # the slow-tool filler was spoken

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

    # --- stage 1: words (and tool calls) ----------------------------------------------------------

    async def _think(self, out: asyncio.Queue[_Piece | None]) -> None:
        if self.start.canned_text:
            await out.put(_Piece(self.start.canned_text))
            await out.put(None)
            return
        messages = list(self.start.messages)
        server = self.engines.tools
        choice = self.start.tool_choice
        for round_ in range(self.policy.max_tool_rounds + 1):
            # The last round offers no tools: after max_tool_rounds the model must answer.
            if round_ == self.policy.max_tool_rounds:
                choice = "none"
            tools, choice = offered(self.start.tools, server.specs() if server else [], choice)
            answer = await self._answer(messages, tools, choice, round_, out)
            if answer is None or not answer.calls:
                break  # answered in words (or every backend failed: the apology is queued)
            await self._settle(answer.calls, out)
            if any(c.side == "client" and c.error is None for c in answer.calls):
                break  # the client runs its calls and answers with function_call_output
            messages += chat_messages(answer.calls, answer.text)
            # After a tool result the model decides freely: "required" would loop.
            choice = "auto"
        await out.put(None)

    async def _answer(
        self,
        messages: list[Message],
        tools: list[ToolSpec],
        choice: str,
        round_: int,
        out: asyncio.Queue[_Piece | None],
    ) -> _Answer | None:
        """One model round through the LLM chain (fallback on failure); None: all failed."""
        for i, chat in enumerate(self.engines.chat):
            if i:
                self.turn.add_recovery("llm_fallback")
            answer = await self._try_backend(chat, messages, tools, choice, round_, out)
            if answer is not None:
                return answer
        self.turn.add_recovery("llm_all_failed")
        # Grouped by model, the apology turns stand apart from every backend's own.
        self.turn.models.setdefault("llm", "apology")
        apology = self.engines.apology
        text = self.policy.apology_text
        await out.put(_Piece(text, *apology) if apology else _Piece(text))
        return None

    async def _try_backend(
        self,
        chat: ChatModel,
        messages: list[Message],
        tools: list[ToolSpec],
        choice: str,
        round_: int,
        out: asyncio.Queue[_Piece | None],
    ) -> _Answer | None:
        """Stream one backend's answer into ``out``; None if it gave nothing usable in time."""
        chunker = SpeakableChunker(
            first_min_chars=self.policy.first_piece_min_chars,
            first_max_chars=max(
                self.policy.first_piece_max_chars, self.policy.first_piece_min_chars
            ),
        )
        max_tokens = min(
            self.policy.max_tokens, self.start.max_output_tokens or self.policy.max_tokens
        )
        calls = CallAssembler(round_, self._sides(tools))
        stream = chat.stream(
            messages,
            max_tokens=max_tokens,
            temperature=self.policy.temperature,
            tools=tools,
            tool_choice=choice,
            parallel_tool_calls=self.start.parallel_tool_calls,
        )
        produced = False
        text: list[str] = []
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
                        if isinstance(token, ToolCallDelta):
                            produced = True
                            await self._call_piece(token, calls, chunker, out)
                            continue
                        self._llm_text.append(token)
                        text.append(token)
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
                return None
            self.turn.add_recovery("llm_cut_short")  # keep what was already said
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        for piece in chunker.flush():
            produced = await self._emit_piece(piece, out) or produced
        made = list(calls.calls.values())
        for call in made:
            self._check(call, tools)
            call.state = "called"
            await out.put(_Piece("", call=call, step="done"))
        return _Answer("".join(text).strip(), made) if produced else None

    async def _call_piece(
        self,
        delta: ToolCallDelta,
        calls: CallAssembler,
        chunker: SpeakableChunker,
        out: asyncio.Queue[_Piece | None],
    ) -> None:
        call, opened = calls.push(delta)
        if opened:
            self.turn.mark("tool_decided")
            # "Let me check." before the call is spoken before the call shows.
            for piece in chunker.flush():
                await self._emit_piece(piece, out)
            self.calls.append(call)
            await out.put(_Piece("", call=call, step="start"))
        if delta.arguments:
            await out.put(_Piece(delta.arguments, call=call, step="args"))

    def _sides(self, tools: list[ToolSpec]) -> dict[str, tuple[Side, str]]:
        """Who runs each offered tool: the operator's server (and under which label) or the
        client."""
        server = self.engines.tools
        sides: dict[str, tuple[Side, str]] = {}
        for spec in tools:
            tool = server.get(spec.name) if server is not None else None
            sides[spec.name] = ("server", tool.server_label) if tool else ("client", "")
        return sides

    def _check(self, call: CallRecord, tools: list[ToolSpec]) -> None:
        """Refuse a call to a tool not offered, or with arguments its schema rejects, before
        anything runs it: the model reads the reason and may try again."""
        spec = next((t for t in tools if t.name == call.name), None)
        try:
            if spec is None:
                raise ToolArgumentsError(f"there is no tool named {call.name!r}", tool=call.name)
            call.parsed = validate(spec, call.arguments)
        except ToolArgumentsError as exc:
            call.error = str(exc)
            self.turn.add_recovery(exc.code)

    async def _settle(self, calls: list[CallRecord], out: asyncio.Queue[_Piece | None]) -> None:
        """Run the round's server calls (at once), with a filler if they are slow."""
        server = self.engines.tools
        runs = [c for c in calls if c.side == "server" and c.error is None and server is not None]
        if not runs or server is None:
            return
        if any(_acts(server, c.name) for c in runs):
            # Speculative work never acts on the world: wait until the turn is really over.
            await self.released.wait()
        self.turn.mark("tool_call_sent")
        tasks = [asyncio.ensure_future(self._run_call(server, c)) for c in runs]
        pending = asyncio.gather(*tasks)
        # A cancelled response (barge-in) does not cancel a call in flight: its result is
        # kept for the history (on_late_result), and it is never spoken.
        shielded = asyncio.shield(pending)
        done, _ = await asyncio.wait({shielded}, timeout=self.policy.filler_after_s)
        if not done and not self._filled and self.policy.filler_text:
            self._filled = True
            self.turn.add_recovery("tool_filler")
            await out.put(_Piece(self.policy.filler_text))
        await shielded
        self.turn.mark("tool_result")
        for call in runs:
            await out.put(_Piece("", call=call, step="result"))

    async def _run_call(self, server: ToolBox, call: CallRecord) -> None:
        tool = server.get(call.name)
        assert tool is not None  # _check refused calls to tools not offered
        try:
            call.output = await tool.call(call.parsed or {})
        except ToolError as exc:  # tool_error, tool_timeout: the model hears why
            log.warning("tool %s failed (%s): %s", call.name, exc.code, exc)
            call.error = str(exc)
            self.turn.add_recovery(exc.code)
        except Exception:  # the tool's own bug: the session goes on
            log.exception("tool %s failed", call.name)
            call.error = f"{call.name} failed"
            self.turn.add_recovery("tool_error")
        call.state = "done"
        if self.reason is not None and self.on_late_result is not None:
            await self.on_late_result(call)  # the caller interrupted: history, not speech

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
            if piece.call is None and piece.audio is None:
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
            if piece.call is None:
                self.turn.mark("tts_first_audio")
            await out.put(piece)
        await out.put(None)

    # --- stage 3: delivery ----------------------------------------------------------------------

    async def _deliver(self, sounds: asyncio.Queue[_Piece | None]) -> None:
        await self._announce()
        while (piece := await sounds.get()) is not None:
            if piece.call is not None:
                await self._deliver_call(piece.call, piece.step, piece.text)
                continue
            await self._open_message()
            if self._audio and piece.audio is not None:
                await self._send_audio(piece)
            else:
                self.segments.append((piece.text, self._sent_ms, self._sent_ms))
                await self.send(
                    p.event("response.output_text.delta", **self._where(), delta=piece.text + " ")
                )

    async def _announce(self) -> None:
        """response.created, once: a response cancelled before it delivered anything still
        opens before it closes."""
        if self._announced:
            return
        self._announced = True
        await self.send(p.event("response.created", response=self._response_object("in_progress")))
        if not self.start.tools and self.engines.tools is None:
            await self._open_message()  # no tools: the spoken item is the whole response

    async def _open_message(self) -> None:
        """The spoken message item, announced at its first piece (a response that only calls
        a tool has none)."""
        if self._message_index is not None:
            return
        self._message_index = self._next_index()
        s = self.start
        item = p.assistant_item(s.item_id, transcript="", audio=self._audio, status="in_progress")
        await self.send(
            p.event(
                "response.output_item.added",
                response_id=s.response_id,
                output_index=self._message_index,
                item=item,
            )
        )
        await self.send(p.event("conversation.item.added", previous_item_id=None, item=item))
        part = {"type": "audio", "transcript": ""} if self._audio else {"type": "text", "text": ""}
        await self.send(p.event("response.content_part.added", **self._where(), part=part))

    async def _deliver_call(self, call: CallRecord, step: str, delta: str) -> None:
        where = {"response_id": self.start.response_id, "item_id": call.item_id}
        mcp = call.side == "server"
        if step == "start":
            call.output_index = self._next_index()
            item = call.item() | ({"status": "in_progress"} if not mcp else {})
            await self.send(
                p.event(
                    "response.output_item.added", **where, output_index=call.output_index, item=item
                )
            )
            await self.send(p.event("conversation.item.added", previous_item_id=None, item=item))
            return
        where["output_index"] = call.output_index  # type: ignore[assignment]
        if step == "args":
            if mcp:
                args = p.event("response.mcp_call_arguments.delta", **where, delta=delta)
            else:
                args = p.event(
                    "response.function_call_arguments.delta",
                    **where,
                    call_id=call.call_id,
                    delta=delta,
                )
            await self.send(args)
        elif step == "done" and mcp:
            await self.send(
                p.event("response.mcp_call_arguments.done", **where, arguments=call.arguments)
            )
            if call.error is None:
                await self.send(
                    p.event(
                        "response.mcp_call.in_progress",
                        item_id=call.item_id,
                        output_index=call.output_index,
                    )
                )
            else:
                await self._close_call(call, where)
        elif step == "done":
            await self.send(
                p.event(
                    "response.function_call_arguments.done",
                    **where,
                    call_id=call.call_id,
                    name=call.name,
                    arguments=call.arguments,
                )
            )
            await self._close_call(call, where)
        elif step == "result":
            await self._close_call(call, where)

    async def _close_call(
        self, call: CallRecord, where: dict[str, Any], *, interrupted: bool = False
    ) -> None:
        call.closed = True
        item = call.item()
        if interrupted:
            item = call.item(interrupted=True)
        if call.side == "server":
            failed = item.get("error") is not None
            await self.send(
                p.event(
                    "response.mcp_call.failed" if failed else "response.mcp_call.completed",
                    item_id=call.item_id,
                    output_index=call.output_index,
                )
            )
        await self.send(p.event("response.output_item.done", **where, item=item))
        await self.send(p.event("conversation.item.done", previous_item_id=None, item=item))

    def _next_index(self) -> int:
        self._outputs += 1
        return self._outputs - 1

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
        for call in self.calls:
            if call.output_index >= 0 and not call.closed:
                # Cut off (barge-in) before it ended: a half-written call is never run, and a
                # server call still running is shown interrupted (its result, if it comes,
                # goes into the history).
                await self._close_call(
                    call,
                    {
                        "response_id": s.response_id,
                        "item_id": call.item_id,
                        "output_index": call.output_index,
                    },
                    interrupted=True,
                )
        if self._message_index is None and self.calls:
            resp = self._response_object(
                self.status,
                output=[c.item() for c in self.calls if c.output_index >= 0],
                details=self._details(),
            )
            await self.send(p.event("response.done", response=resp))
            return
        await self._open_message()
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
                "response.output_item.done",
                response_id=s.response_id,
                output_index=self._message_index,
                item=item,
            )
        )
        await self.send(p.event("conversation.item.done", previous_item_id=None, item=item))
        shown = [(c.output_index, c.item()) for c in self.calls if c.output_index >= 0]
        output = [
            it for _, it in sorted([*shown, (self._message_index or 0, item)], key=lambda x: x[0])
        ]
        resp = self._response_object(self.status, output=output, details=self._details())
        await self.send(p.event("response.done", response=resp))

    def _details(self) -> dict[str, Any] | None:
        if self.status == "cancelled":
            return {"type": "cancelled", "reason": _wire_reason(self.reason)}
        if self.status == "failed":
            return {"type": "failed", "error": {"type": "server_error", "code": "response_failed"}}
        return None

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
            if self._llm_text and self.segments and not self.calls:
                # The LLM's exact text, so that llama.cpp's prompt cache matches it next turn.
                return [
                    ("".join(self._llm_text).strip(), self.segments[0][1], self.segments[-1][2])
                ]
            return self.segments
        heard = spoken_text(self.segments, self.played_ms)
        return [(heard, 0.0, self.played_ms)] if heard else []

    def calls_before_message(self) -> int:
        """How many of :attr:`calls` the response gave before its spoken message."""
        at = self._message_index
        return len(self.calls) if at is None else sum(0 <= c.output_index < at for c in self.calls)

    def _where(self) -> dict[str, Any]:
        s = self.start
        return {
            "response_id": s.response_id,
            "item_id": s.item_id,
            "output_index": self._message_index or 0,
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


def _acts(server: ToolBox, name: str) -> bool:
    tool = server.get(name)
    return tool is None or tool.side_effects


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
