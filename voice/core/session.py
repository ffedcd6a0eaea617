r"""The I/O-free core of one voice session: events in, actions out. It never awaits.

The shell (:mod:`voice.runtime.server`) feeds it client events, audio with its VAD probabilities,
transcripts and response results, each with the monotonic time ``now``; it returns actions
(send an event, transcribe audio, start/release/cancel a response, finish a turn record).

How it hears turns (the VAD state machine, semantic_vad's pause judgement, barge-ins and
backchannels) is :mod:`voice.core.listening`. A speculative decode and a held response are
prepared during each pause, so when the endpoint is confirmed the transcript, and often the
first audio, already exist.

What one client can make it hold is bounded (``SessionConfig.max_*``): while nobody speaks only
the prefix padding of audio is kept; a manual buffer is refused appends past ``max_buffer_ms``
and a spoken turn that long is committed there; audio arriving faster than ``max_audio_rate``
times real time (beyond a burst) is dropped, and a client that goes on is closed; the
conversation keeps at most ``max_items`` items and ``max_conversation_chars`` of text, and items
the model no longer sees keep only their id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from voice.audio import INTERNAL_RATE, AudioRateLimit, Float32Array, Timeline
from voice.core import protocol as p
from voice.core.actions import (
    POLICY_VIOLATION,
    Action,
    CancelResponse,
    Close,
    FinishTurn,
    ReleaseResponse,
    Send,
    StartResponse,
    Transcribe,
)
from voice.core.conversation import Item, to_messages
from voice.core.heard import usable
from voice.core.listening import FRAME_MS, Listening, TurnState
from voice.core.record import TurnRecord, digest
from voice.engines.contracts import Message, ToolChoice, ToolSpec, Transcript
from voice.errors import ProtocolError

SORRY_DIDNT_CATCH = "Sorry, I didn't catch that. Could you say it again?"
STILL_THERE = "Are you still there?"


# --- state --------------------------------------------------------------------------------


@dataclass
class SessionConfig:
    instructions: str
    voice: str
    input_format: str = "audio/pcm"
    output_format: str = "audio/pcm"
    turn_detection: p.TurnDetection | None = field(default_factory=p.TurnDetection)
    modalities: list[str] = field(default_factory=lambda: ["audio"])
    max_output_tokens: int | Literal["inf"] = "inf"
    speed: float = 1.0
    # Castwork knobs (not in the OpenAI protocol): when speculative decoding starts in a pause,
    # and how often partial transcripts are attempted while the user speaks.
    speculative_after_ms: int = 160
    partial_every_ms: int = 1200
    # Speech over the agent interrupts it once this much of it is heard, or when its words
    # are not a backchannel ("uh-huh", "okay"); 0: any speech interrupts at once.
    barge_in_min_ms: int = 1000
    # semantic_vad: a text model reads each pause's transcript (Engines.text_turn); the turn
    # then waits for it even when the sound alone is sure.
    text_turn: bool = False
    # That speech is decoded after a prompt of fillers (turntaking.BACKCHANNEL_PROMPTS).
    backchannel_prompt: bool = False
    # The hallucination guard's thresholds (settings.asr).
    no_speech_threshold: float = 0.6
    min_avg_logprob: float = -1.0
    # Past conversation sent to the model, in characters (settings.llm.history_chars).
    history_chars: int = 2400
    # What one client can make the session hold (settings.voice, documented there).
    max_buffer_ms: float = 120_000
    max_audio_rate: float = 4.0
    audio_burst_ms: float = 60_000
    max_items: int = 1000
    max_item_chars: int = 20_000
    max_conversation_chars: int = 200_000
    # The client's function tools (session.update), how the model may use them, and whether
    # it may make several calls at once.
    tools: list[p.FunctionTool] = field(default_factory=list)
    tool_choice: p.ToolChoiceIn = "auto"
    parallel_tool_calls: bool = True
    # The language the caller speaks (audio.input.transcription.language; None: the server's
    # own, English), one of ``languages`` (settings.languages and English); what is said after
    # a long silence, in the session's language.
    language: str | None = None
    languages: frozenset[str] = frozenset({"en"})
    still_there: str = STILL_THERE

    def session_object(self, session_id: str, model: str) -> dict[str, Any]:
        def fmt(kind: str) -> dict[str, Any]:
            return {"type": kind, "rate": 24_000} if kind == "audio/pcm" else {"type": kind}

        td = self.turn_detection
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": model,
            "instructions": self.instructions,
            "output_modalities": self.modalities,
            "max_output_tokens": self.max_output_tokens,
            "tools": [t.model_dump() for t in self.tools],
            "tool_choice": _wire_choice(self.tool_choice),
            "parallel_tool_calls": self.parallel_tool_calls,
            "audio": {
                "input": {
                    "format": fmt(self.input_format),
                    "transcription": {"model": "whisper", "language": self.language},
                    "noise_reduction": None,
                    "turn_detection": td.wire() if td else None,
                },
                "output": {
                    "format": fmt(self.output_format),
                    "voice": self.voice,
                    "speed": self.speed,
                },
            },
        }


@dataclass
class _Response:
    id: str
    item_id: str
    turn: TurnRecord
    held: bool
    transcript_request: str | None = None  # the speculative decode it was prefetched from
    modalities: list[str] = field(default_factory=lambda: ["audio"])
    # What the client says it played of this response's audio before the caller spoke over
    # it (a truncate that came while the response was still running): applied to its item.
    heard_ms: float | None = None


class VoiceSession(Listening):
    """One session's conversation, responses and bounds; how it hears turns is :class:`Listening`."""

    def __init__(
        self,
        session_id: str,
        config: SessionConfig,
        *,
        model: str = "castwork",
        key: str = "-",
        arm: str = "-",
        lineage: dict[str, object] | None = None,
    ) -> None:
        self.id = session_id
        # Labels copied into every turn record: which API key (an id, never the secret) and
        # which experiment arm the session belongs to.
        self.key, self.arm = key, arm
        # Model identities and settings hash of the session's arm (voice.learning.lineage), copied into
        # every turn record with the hash of the instructions each response used.
        self.lineage = dict(lineage or {})
        self.config = config
        self.model = model
        self.items: dict[str, Item] = {}
        self._forgotten: set[str] = set()  # items the model no longer sees (history bound)
        self._buffer = Timeline()  # the uncommitted input audio, on the session's clock
        self._frames = 0  # VAD frames seen (global)
        self._rate = AudioRateLimit(config.max_audio_rate, config.audio_burst_ms)
        self._over_rate_ms = 0.0  # audio dropped by the rate limit since it last let some in
        self._full_told = False  # the client knows its buffer is full (until commit or clear)
        # VAD / turn state
        self._state = TurnState.QUIET
        self._run = 0
        self._speech_start_ms = 0.0
        self._last_speech_ms = 0.0
        self._last_speech_at = 0.0
        self._silence_ms = 0
        self._item_id: str | None = None
        self._turn: TurnRecord | None = None
        self._last_partial_ms = 0.0
        self._partial_text = ""
        # ASR requests in flight: request id -> (purpose, item id, turn)
        self._requests: dict[str, tuple[str, str | None, TurnRecord | None]] = {}
        self._speculative: str | None = None  # request id of this pause's decode
        self._spec_result: Transcript | None = None
        self._spec_retried = False
        self._spec_done = False  # this pause's speculative decode answered (maybe with None)
        # semantic_vad: this pause's end-of-turn judgement (request id, then its probability)
        self._judge: str | None = None
        self._judged: tuple[float | None] | None = None
        # ... and the text model's reading of its transcript (asked once the decode is in)
        self._text_asked = False
        self._text_judged: tuple[float | None] | None = None
        self._pause_limit_ms: int | None = None  # the wait the judgement chose for this pause
        # idle_timeout_ms: when the agent last finished speaking, and whether the user has
        # spoken since it last prompted them
        self._idle_from: float | None = None
        self._idle_armed = True
        # How much of an OVERLAP was speech (barge_in_min_ms of it makes it an interruption).
        self._overlap_speech_ms = 0
        self._awaiting_final: dict[str, str] = {}  # request id -> item id, post-endpoint
        self._response: _Response | None = None
        # Every response started and not yet reported done (a cancelled one may end after the
        # next began), and every turn not yet finished: the core alone finishes turns.
        self._live: dict[str, _Response] = {}
        self._open_turns: dict[str, TurnRecord] = {}
        self._response_requested: p.ResponseParams | None = None
        self._answerable_turn: TurnRecord | None = None
        self._auto_answer = False

    # --- entry points ------------------------------------------------------------------------

    def start(self) -> list[Action]:
        return [
            Send(
                p.event("session.created", session=self.config.session_object(self.id, self.model))
            )
        ]

    def on_client_event(self, ev: p.ClientEvent, now: float) -> list[Action]:
        handler = getattr(self, "_on_" + ev.type.replace(".", "_"))
        actions: list[Action] = handler(ev, now)
        return actions

    def admit_audio(
        self, ms: float, now: float, event_id: str | None = None
    ) -> tuple[bool, list[Action]]:
        """Whether to take an append of ``ms`` of audio, asked before it is decoded: refused
        audio never reaches the clock (or the VAD). The client is told why once per run of
        refusals; one that goes on past the rate limit by more than a burst is closed."""
        c = self.config
        if not self._rate.take(ms, now):  # the rate counts all audio sent, kept or not
            told, self._over_rate_ms = self._over_rate_ms > 0, self._over_rate_ms + ms
            if not told:
                return False, [
                    refusal(
                        f"audio arrives faster than {c.max_audio_rate:g}x real time (after a "
                        f"burst of {c.audio_burst_ms / 1000:g} s): dropped until it slows down",
                        "input_audio_rate_exceeded",
                        event_id,
                    )
                ]
            if self._over_rate_ms > c.audio_burst_ms:  # told, and it went on for a burst
                why = f"audio sent faster than {c.max_audio_rate:g}x real time"
                return False, [Close(POLICY_VIOLATION, why)]
            return False, []
        self._over_rate_ms = 0.0
        if c.turn_detection is None and self._buffer.kept_ms + ms > c.max_buffer_ms:
            if self._full_told:
                return False, []
            self._full_told = True
            return False, [
                refusal(
                    f"input audio buffer full ({c.max_buffer_ms / 1000:g} s): appends are "
                    "refused until input_audio_buffer.commit or clear",
                    "input_audio_buffer_full",
                    event_id,
                )
            ]
        return True, []

    def on_audio(self, samples: Float32Array, probs: list[float], now: float) -> list[Action]:
        """Audio appended by the client (taken by :meth:`admit_audio`), with the VAD
        probability of each 32 ms frame it completed."""
        self._buffer.append(samples)
        out: list[Action] = []
        td = self.config.turn_detection
        for prob in probs:
            self._frames += 1
            if td is not None:
                out += self._vad_frame(prob, self._frames * FRAME_MS, td, now)
        if td is not None and self._state is TurnState.QUIET:
            # Nobody speaks: keep only what a speech start reaches back to (the prefix padding,
            # the two frames that confirm speech, and the part of a frame the VAD has not seen).
            self._buffer.keep_last(td.prefix_padding_ms + 3 * FRAME_MS)
        return out

    def on_transcript(
        self, request_id: str, result: Transcript | None, now: float, *, retried: bool = False
    ) -> list[Action]:
        """A decode finished. ``result`` None: every ASR model failed for this request.
        ``retried``: the primary model failed and the fallback model was asked."""
        purpose, item_id, turn = self._requests.pop(request_id, ("stale", None, None))
        if purpose == "partial":
            return self._partial(result, item_id)
        if purpose == "speculative":
            if request_id != self._speculative:
                return []  # speech resumed: this decode is stale
            self._spec_result, self._spec_retried, self._spec_done = result, retried, True
            if self._state is TurnState.OVERLAP:
                return self._overlap_heard(result, now)
            return self._prefetch(request_id, result, now) + self._settle_pause(now)
        if item_id is None or turn is None:
            return []
        self._awaiting_final.pop(request_id, None)
        if retried:
            turn.add_recovery("asr_retry")
        return self._final(item_id, turn, result, now)

    def on_turn_judged(
        self, request_id: str, probability: float | None, now: float
    ) -> list[Action]:
        """The end-of-turn model's answer to a :class:`JudgeTurn` (None: no model, or it
        failed: the transcript alone decides)."""
        if request_id != self._judge:
            return []  # speech resumed, or the pause already ended the turn
        self._judged = (probability,)
        return self._settle_pause(now)

    def on_text_judged(
        self, request_id: str, probability: float | None, now: float
    ) -> list[Action]:
        """The text model's answer to a :class:`JudgeText` (None: it failed: the sound and
        the transcript's last word decide)."""
        if request_id != self._judge:
            return []
        self._text_judged = (probability,)
        return self._settle_pause(now)

    def on_response_done(
        self,
        response_id: str,
        status: str,
        segments: list[tuple[str, float, float]],
        now: float,
        calls: Sequence[Item] = (),
        message_at: int = 0,
        *,
        sent: Sequence[tuple[str, float, float]] | None = None,
        reply: str = "",
        cancel_to_done_ms: float | None = None,
    ) -> list[Action]:
        """The runner finished (completed, cancelled or failed): finish its turn (when the
        response was heard: released, not only prefetched), and record what was heard
        (``segments``) and the tool calls it made, in the order the response gave them
        (``message_at`` calls came before its spoken message). ``sent``: every segment sent
        (default ``segments``); ``reply``: what the model wrote; ``cancel_to_done_ms``: how
        long the runner took to stop after a cancel."""
        finished: list[Action] = []
        if (live := self._live.pop(response_id, None)) is not None:
            finished = self._response_turn_done(
                live, status, segments, segments if sent is None else sent, reply,
                cancel_to_done_ms, has_calls=bool(calls),
            )  # fmt: skip
        resp = self._response
        if resp is None or resp.id != response_id:
            return finished
        self._response = None
        for call in calls[:message_at]:
            self._keep(call)
        if (not resp.held and not calls) or segments:
            text = " ".join(s[0] for s in segments).strip()
            item = Item(
                resp.item_id,
                "assistant",
                text,
                audio=True,
                status="completed" if status == "completed" else "incomplete",
                segments=segments,
            )
            if resp.heard_ms is not None:
                _truncate(item, resp.heard_ms)
            self._keep(item)
        for call in calls[message_at:]:
            self._keep(call)
        if status == "completed" and self._state is TurnState.QUIET:
            self._idle_from = now
        if self._auto_answer and self._answerable_turn is not None:
            turn, self._answerable_turn, self._auto_answer = self._answerable_turn, None, False
            return [*finished, self._start_response(turn, now)]
        return [*finished, *self._maybe_start_requested(now)]

    def _response_turn_done(
        self,
        resp: _Response,
        status: str,
        heard: Sequence[tuple[str, float, float]],
        sent: Sequence[tuple[str, float, float]],
        reply: str,
        cancel_to_done_ms: float | None,
        *,
        has_calls: bool,
    ) -> list[Action]:
        turn = resp.turn
        turn.evidence.reply = reply
        turn.evidence.spoken = " ".join(text for text, _, _ in heard)
        if resp.held:  # prefetched and never released: speculation, its turn ends elsewhere
            return []
        if status == "completed" and has_calls and not sent:
            turn.outcome = "tool_call"  # the client runs it; its answer is a new response
        elif status == "completed":
            turn.outcome = "spoken" if "audio" in resp.modalities else "text_only"
        else:
            turn.outcome = status
        if cancel_to_done_ms is not None:
            turn.extra["cancel_to_done_ms"] = round(cancel_to_done_ms, 1)
        turn.extra["audio_sent_ms"] = round(sent[-1][2] if sent else 0.0, 1)
        return [self._finish(turn)]

    def on_close(self, now: float) -> list[Action]:
        """The connection is gone: every turn not finished is abandoned (the one being spoken
        keeps the speech so far as its evidence)."""
        if (speaking := self._turn) is not None:
            if speaking.evidence.audio is None:
                speaking.evidence.audio = self.speech_so_far()
            self._open_turns.setdefault(speaking.turn_id, speaking)
        out: list[Action] = []
        for turn in list(self._open_turns.values()):
            if turn.outcome == "in_progress":
                turn.add_recovery("abandoned")
                turn.outcome = "abandoned"
                out.append(self._finish(turn))
        self._open_turns.clear()
        return out

    def _finish(self, turn: TurnRecord) -> FinishTurn:
        self._open_turns.pop(turn.turn_id, None)
        return FinishTurn(turn)

    def on_tool_result(self, item_id: str, output: str) -> list[Action]:
        """A server tool call's result came after its response ended (the caller interrupted
        it): the model reads it from now on; nobody speaks it."""
        item = self.items.get(item_id)
        if item is not None and item.kind == "mcp_call" and item.output is None:
            item.output = output
        return []

    # --- client events --------------------------------------------------------------------

    def _on_session_update(self, ev: p.SessionUpdate, now: float) -> list[Action]:
        s, c = ev.session, self.config
        dropped: list[Action] = []
        asked = s.audio.input.transcription if s.audio and s.audio.input else None
        if asked is not None and "language" in asked.model_fields_set:
            if asked.language is not None and asked.language not in c.languages:
                served = ", ".join(sorted(c.languages))
                why = f"audio.input.transcription.language: {asked.language!r} is not served here ({served})"
                return [refusal(why, "invalid_value", ev.event_id)]
            c.language = asked.language
        if s.instructions is not None:
            c.instructions = s.instructions
        if s.output_modalities:
            c.modalities = list(s.output_modalities)
        if s.max_output_tokens is not None:
            c.max_output_tokens = s.max_output_tokens
        if s.tools is not None:
            c.tools = list(s.tools)
        if s.tool_choice is not None:
            c.tool_choice = s.tool_choice
        if s.parallel_tool_calls is not None:
            c.parallel_tool_calls = s.parallel_tool_calls
        if s.audio and s.audio.input:
            inp = s.audio.input
            if inp.format:
                c.input_format = inp.format.type
            if "turn_detection" in inp.model_fields_set:
                c.turn_detection = inp.turn_detection
                if inp.turn_detection is None:
                    self._state, self._run = TurnState.QUIET, 0
                    dropped = self._drop_speculative()
        if s.audio and s.audio.output:
            out = s.audio.output
            if out.format:
                c.output_format = out.format.type
            if out.voice:
                c.voice = out.voice
            if out.speed:
                c.speed = out.speed
        return [
            *dropped,
            Send(p.event("session.updated", session=c.session_object(self.id, self.model))),
        ]

    def _on_input_audio_buffer_append(
        self, ev: p.InputAudioBufferAppend, now: float
    ) -> list[Action]:
        raise AssertionError("the shell decodes audio and calls on_audio")  # pragma: no cover

    def _on_input_audio_buffer_commit(
        self, ev: p.InputAudioBufferCommit, now: float
    ) -> list[Action]:
        if self._buffer.kept_ms < 100:
            return [
                refusal(
                    "buffer too small: expected at least 100ms of audio, "
                    f"got {self._buffer.kept_ms:.0f}ms",
                    "input_audio_buffer_commit_empty",
                    ev.event_id,
                )
            ]
        turn = self._turn or self._new_turn(now)
        item_id = self._item_id or p.new_id("item")
        turn.mark("speech_end", now)
        turn.mark("endpoint", now)
        self._state, self._run = TurnState.QUIET, 0
        return self._commit(item_id, turn, now, self._buffer.start_ms)

    def _on_input_audio_buffer_clear(self, ev: p.InputAudioBufferClear, now: float) -> list[Action]:
        self._drop_buffer()
        self._state, self._run = TurnState.QUIET, 0
        return [*self._drop_speculative(), Send(p.event("input_audio_buffer.cleared"))]

    def _on_conversation_item_create(
        self, ev: p.ConversationItemCreate, now: float
    ) -> list[Action]:
        item = ev.item
        item_id = item.id or p.new_id("item")
        if item_id in self.items:
            return [refusal(f"item {item_id} already exists", "item_exists", ev.event_id)]
        made = _item_from(item, item_id)
        # A client may answer a call as soon as its arguments are done, before the response
        # that made it ends (and its call joins the conversation): the answer pairs with its
        # call by call_id whenever that comes.
        if (
            made.kind == "function_call_output"
            and self._response is None
            and not any(
                i.kind == "function_call" and i.call_id == made.call_id for i in self.items.values()
            )
        ):
            why = f"no function_call with call_id {made.call_id!r} in the conversation"
            return [refusal(why, "item_not_found", ev.event_id)]
        if (full := self._no_room_for(made.size)) is not None:
            return [refusal(*full, ev.event_id)]
        self._keep(made)
        shown = made.shown()
        previous = self._previous_id(item_id)
        return [
            Send(p.event("conversation.item.added", previous_item_id=previous, item=shown)),
            Send(p.event("conversation.item.done", previous_item_id=previous, item=shown)),
        ]

    def _on_conversation_item_truncate(
        self, ev: p.ConversationItemTruncate, now: float
    ) -> list[Action]:
        item = self.items.get(ev.item_id)
        resp = self._response
        if item is None and resp is not None and resp.item_id == ev.item_id:
            # The caller spoke over an answer still running here (the client plays what we
            # send, so it knows first): its item is truncated when the response ends.
            resp.heard_ms = ev.audio_end_ms
        elif item is None or item.role != "assistant":
            return [refusal(f"no assistant item {ev.item_id}", "item_not_found", ev.event_id)]
        else:
            _truncate(item, ev.audio_end_ms)
        return [
            Send(
                p.event(
                    "conversation.item.truncated",
                    item_id=ev.item_id,
                    content_index=ev.content_index,
                    audio_end_ms=ev.audio_end_ms,
                )
            )
        ]

    def _on_conversation_item_delete(
        self, ev: p.ConversationItemDelete, now: float
    ) -> list[Action]:
        if self.items.pop(ev.item_id, None) is None:
            return [refusal(f"no item {ev.item_id}", "item_not_found", ev.event_id)]
        self._forgotten.discard(ev.item_id)
        return [Send(p.event("conversation.item.deleted", item_id=ev.item_id))]

    def _on_response_create(self, ev: p.ResponseCreate, now: float) -> list[Action]:
        if self._response is not None and not self._response.held:
            return [
                refusal(
                    "conversation already has an active response",
                    "conversation_already_has_active_response",
                    ev.event_id,
                )
            ]
        self._response_requested = ev.response or p.ResponseParams()
        return self._maybe_start_requested(now)

    def _on_response_cancel(self, ev: p.ResponseCancel, now: float) -> list[Action]:
        resp = self._response
        if resp is None or resp.held or (ev.response_id and ev.response_id != resp.id):
            return [
                refusal("no active response to cancel", "response_cancel_not_active", ev.event_id)
            ]
        return [CancelResponse(resp.id, "client_cancelled")]

    def _on_output_audio_buffer_clear(
        self, ev: p.OutputAudioBufferClear, now: float
    ) -> list[Action]:
        resp = self._response
        if resp is None or resp.held:
            return []
        return [
            CancelResponse(resp.id, "client_cancelled"),
            Send(p.event("output_audio_buffer.cleared", response_id=resp.id)),
        ]

    # --- turns ending (the rest of turn detection is voice.core.listening) ---------------------

    def _turn_too_long(self, td: p.TurnDetection, now: float) -> list[Action]:
        """A spoken turn reached ``max_buffer_ms``: it is committed there (and answered), and
        the speech that goes on starts the next turn."""
        assert self._turn is not None
        self._turn.extra["buffer_full"] = True
        c = self.config
        why = (
            f"input audio buffer full: a turn reached {c.max_buffer_ms / 1000:g} s "
            "and was committed there"
        )
        return [refusal(why, "input_audio_buffer_full"), *self._endpoint(td, now)]

    def _commit(self, item_id: str, turn: TurnRecord, now: float, start_ms: float) -> list[Action]:
        end_ms = min(self._buffer.end_ms, start_ms + self.config.max_buffer_ms)
        audio = self._buffer.slice(start_ms, end_ms)
        turn.evidence.audio = audio
        previous = self._previous_id(item_id)
        self._keep(Item(item_id, "user", "", audio=True, status="in_progress"))
        self._drop_buffer()
        self._item_id, self._turn = None, None
        out: list[Action] = [
            Send(
                p.event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
            ),
            Send(
                p.event(
                    "conversation.item.added",
                    previous_item_id=previous,
                    item=p.user_item(item_id, audio=True, status="in_progress"),
                )
            ),
        ]
        spec, self._speculative, self._spec_done = self._speculative, None, False
        if spec is not None and self._spec_result is not None:
            if self._spec_retried:
                turn.add_recovery("asr_retry")
            return out + self._final(item_id, turn, self._spec_result, now)
        if spec is not None and spec in self._requests:
            # The speculative decode covers this audio (the rest is silence): wait for it.
            self._requests[spec] = ("final", item_id, turn)
            self._awaiting_final[spec] = item_id
            return out
        action = self._transcribe(
            "final", item_id, turn, 0, len(audio) * 1000 / INTERNAL_RATE, audio=audio
        )
        self._awaiting_final[action.request_id] = item_id
        return [*out, action]

    # --- transcripts and responses -------------------------------------------------------------

    def _partial(self, result: Transcript | None, item_id: str | None) -> list[Action]:
        if result is None or item_id != self._item_id or not result.text:
            return []
        text = result.text.strip()
        if not text.startswith(self._partial_text) or text == self._partial_text:
            return []  # Whisper revised earlier words: deltas can only append
        delta, self._partial_text = text[len(self._partial_text) :], text
        return [
            Send(
                p.event(
                    "conversation.item.input_audio_transcription.delta",
                    item_id=item_id,
                    content_index=0,
                    delta=delta,
                )
            )
        ]

    def _prefetch(self, request_id: str, result: Transcript | None, now: float) -> list[Action]:
        td = self.config.turn_detection
        c = self.config
        if result is None or td is None or not td.create_response:
            return []
        if not usable(result, no_speech=c.no_speech_threshold, min_logprob=c.min_avg_logprob):
            return []
        if self._response is not None or self._item_id is None or self._turn is None:
            return []
        return [
            self._start_response(
                self._turn, now, held=True, user_text=result.text, from_request=request_id
            )
        ]

    def _final(
        self, item_id: str, turn: TurnRecord, result: Transcript | None, now: float
    ) -> list[Action]:
        turn.mark("asr_final", now)
        item = self.items.get(item_id)
        held = self._response if self._response is not None and self._response.held else None
        out: list[Action] = []
        if result is None:  # ASR failed even on the fallback model
            turn.add_recovery("asr_failed")
            if held:
                out.append(CancelResponse(held.id, "superseded"))
                self._response = None
            if item:
                item.status = "incomplete"
            if self._response is not None:  # one response at a time: stay silent, log it
                turn.outcome = "failed"
                return [*out, self._finish(turn)]
            return [*out, self._start_response(turn, now, canned=SORRY_DIDNT_CATCH)]
        c = self.config
        text = (
            result.text.strip()
            if usable(result, no_speech=c.no_speech_threshold, min_logprob=c.min_avg_logprob)
            else ""
        )
        if item:
            item.text, item.status = text, "completed"
        turn.evidence.transcript, turn.evidence.heard = result.text, text
        if result.model:
            turn.models["asr"] = result.model
        out += [
            Send(
                p.event(
                    "conversation.item.input_audio_transcription.completed",
                    item_id=item_id,
                    content_index=0,
                    transcript=text,
                    usage={"type": "duration", "seconds": 0},
                )
            ),
            Send(
                p.event(
                    "conversation.item.done",
                    previous_item_id=self._previous_id(item_id),
                    item=p.user_item(item_id, audio=True, transcript=text),
                )
            ),
        ]
        if not text:
            turn.add_recovery("no_speech")
            turn.outcome = "no_speech"
            if held:
                out.append(CancelResponse(held.id, "no_speech"))
                self._response = None
            return [*out, self._finish(turn)]
        td = self.config.turn_detection
        if self._state is not TurnState.QUIET and td is not None and td.create_response:
            # The caller went on before the answer began (the pause was not the end): the
            # next turn's answer covers both, its history holds these words.
            if held is not None:
                out.append(CancelResponse(held.id, "superseded"))
                self._response = None
            turn.outcome = "continued"
            return [*out, self._finish(turn)]
        if held is not None:
            held.held = False
            return [*out, ReleaseResponse(held.id)]
        if td is not None and td.create_response:
            if self._response is None:
                return [*out, self._start_response(turn, now)]
            # Speech over a response that was not interrupted: answer when it ends.
            self._answerable_turn, self._auto_answer = turn, True
            return out
        self._answerable_turn = turn  # a later response.create answers this turn
        return out + self._maybe_start_requested(now)

    def _maybe_start_requested(self, now: float) -> list[Action]:
        params = self._response_requested
        if params is None or self._awaiting_final or self._response is not None:
            return []  # a transcript the response needs is still being decoded
        self._response_requested = None
        turn, self._answerable_turn = self._answerable_turn or self._new_turn(now), None
        turn.mark("endpoint", now)
        return [self._start_response(turn, now, params=params)]

    def _history(self, reserved: int) -> list[Message]:
        """The finished items the model sees, within ``config.history_chars`` (``reserved``
        counted too). Over the bound, the oldest are forgotten until half of it is used: the
        prompt's start then stays the same for the next turns, and llama.cpp reuses its cache.
        The newest item is always kept: it is what the user just said."""
        kept = [
            i
            for i in self.items.values()
            if i.visible and i.status != "in_progress" and i.id not in self._forgotten
        ]
        total = reserved + sum(i.size for i in kept)
        if total > self.config.history_chars:
            while len(kept) > 1 and total > self.config.history_chars // 2:
                gone = kept.pop(0)
                self._forgotten.add(gone.id)
                total -= gone.size
                # The model never sees it again: only its id stays, for the client's references.
                gone.text, gone.segments, gone.arguments, gone.output = "", [], "", None
        return to_messages(kept)

    def _start_response(
        self,
        turn: TurnRecord,
        now: float,
        *,
        held: bool = False,
        canned: str | None = None,
        user_text: str | None = None,
        from_request: str | None = None,
        params: p.ResponseParams | None = None,
    ) -> StartResponse:
        instructions = (
            params.instructions if params and params.instructions else self.config.instructions
        )
        messages: list[Message] = [{"role": "system", "content": instructions}]
        turn.lineage["prompt"] = digest(instructions)
        messages += self._history(len(user_text or ""))
        if user_text:
            messages.append({"role": "user", "content": user_text.strip()})
        limit = (
            params.max_output_tokens if params and params.max_output_tokens else None
        ) or self.config.max_output_tokens
        modalities: list[str] = (
            list(params.output_modalities)
            if params and params.output_modalities
            else self.config.modalities
        )
        resp = _Response(p.new_id("resp"), p.new_id("item"), turn, held, from_request, modalities)
        self._response = resp
        self._live[resp.id] = resp
        self._open_turns[turn.turn_id] = turn
        return StartResponse(
            resp.id,
            resp.item_id,
            messages,
            turn,
            modalities=modalities,
            max_output_tokens=None if limit == "inf" else int(limit),
            canned_text=canned,
            held=held,
            tools=[
                _spec(t)
                for t in (
                    params.tools if params and params.tools is not None else self.config.tools
                )
            ],
            tool_choice=_choice(
                params.tool_choice if params and params.tool_choice else self.config.tool_choice
            ),
            parallel_tool_calls=self.config.parallel_tool_calls,
        )

    # --- helpers ------------------------------------------------------------------------------

    def _new_turn(self, now: float) -> TurnRecord:
        return TurnRecord(
            session_id=self.id,
            turn_id=p.new_id("turn"),
            key=self.key,
            arm=self.arm,
            # The session's instructions now; a response with its own replaces the hash.
            lineage={**self.lineage, "prompt": digest(self.config.instructions)},
        )

    def _transcribe(
        self,
        purpose: Literal["partial", "speculative", "final"],
        item_id: str | None,
        turn: TurnRecord | None,
        start_ms: float,
        end_ms: float,
        *,
        audio: Float32Array | None = None,
        prompt: str | None = None,
    ) -> Transcribe:
        request_id = p.new_id("asr")
        self._requests[request_id] = (purpose, item_id, turn)
        if turn is not None:
            self._open_turns[turn.turn_id] = turn
        return Transcribe(
            request_id,
            self._buffer.slice(start_ms, end_ms) if audio is None else audio,
            purpose,
            turn,
            prompt,
        )

    def _drop_speculative(self) -> list[Action]:
        out: list[Action] = []
        if self._speculative is not None:
            self._requests.pop(self._speculative, None)
            resp = self._response
            if resp is not None and resp.held and resp.transcript_request == self._speculative:
                out.append(CancelResponse(resp.id, "superseded"))
                self._response = None
        self._speculative, self._spec_result, self._spec_done = None, None, False
        self._judge, self._judged, self._pause_limit_ms = None, None, None
        self._text_asked, self._text_judged = False, None
        return out

    def _drop_buffer(self) -> None:
        self._buffer.clear()
        self._full_told = False

    def _keep(self, item: Item) -> None:
        """Add ``item``. Past ``max_items`` the oldest go, those the model no longer sees first."""
        self.items[item.id] = item
        while len(self.items) > self.config.max_items:
            gone = next((i for i in self.items if i in self._forgotten), next(iter(self.items)))
            del self.items[gone]
            self._forgotten.discard(gone)

    def _no_room_for(self, chars: int) -> tuple[str, str] | None:
        """Why a client's new item of ``chars`` characters is refused (message, code), if it is.
        Items the model no longer sees make way first."""
        c = self.config
        if chars > c.max_item_chars:
            return f"item text has {chars} characters; at most {c.max_item_chars}", "item_too_large"
        stubs = [i for i in self.items if i in self._forgotten]
        for gone in stubs[: max(0, len(self.items) - c.max_items + 1)]:
            del self.items[gone]
            self._forgotten.discard(gone)
        held = sum(i.size for i in self.items.values())
        if len(self.items) < c.max_items and held + chars <= c.max_conversation_chars:
            return None
        why = (
            f"conversation full (at most {c.max_items} items, {c.max_conversation_chars} "
            "characters the model still sees): delete items, or create a response, which "
            "moves the oldest out of the model's view"
        )
        return why, "conversation_full"

    def _previous_id(self, item_id: str) -> str | None:
        ids = list(self.items)
        if item_id in ids:
            i = ids.index(item_id)
            return ids[i - 1] if i > 0 else None
        return ids[-1] if ids else None

    @property
    def state(self) -> TurnState:
        return self._state

    @property
    def open_turn(self) -> TurnRecord | None:
        """The turn the user is speaking in, if any (for a disconnect to log as abandoned)."""
        return self._turn

    @property
    def buffered_ms(self) -> float:
        """Uncommitted input audio the session holds now."""
        return self._buffer.kept_ms

    def speech_so_far(self) -> Float32Array:
        """The audio of the turn the user is speaking in (empty when none)."""
        if self._turn is None:
            return np.zeros(0, dtype=np.float32)
        return self._buffer.slice(self._speech_start_ms, self._buffer.end_ms)

    @property
    def response_active(self) -> bool:
        return self._response is not None and not self._response.held


def _item_from(item: p.ItemIn, item_id: str) -> Item:
    """The session's item for one a client created."""
    if item.type == "function_call":
        return Item(
            item_id,
            "assistant",
            "",
            kind="function_call",
            call_id=item.call_id or "",
            name=item.name or "",
            arguments=item.arguments or "{}",
        )
    if item.type == "function_call_output":
        return Item(
            item_id,
            "assistant",
            "",
            kind="function_call_output",
            call_id=item.call_id or "",
            output=item.output or "",
        )
    text = " ".join((c.text or c.transcript or "") for c in item.content).strip()
    assert item.role is not None  # ItemIn checks a message has one
    return Item(item_id, item.role, text)


def _spec(tool: p.FunctionTool) -> ToolSpec:
    return ToolSpec(tool.name, tool.description, tool.parameters)


def _choice(choice: p.ToolChoiceIn) -> ToolChoice:
    return choice if isinstance(choice, str) else choice.name


def _wire_choice(choice: p.ToolChoiceIn) -> Any:
    return choice if isinstance(choice, str) else choice.model_dump()


def refusal(message: str, code: str, event_id: str | None = None) -> Send:
    """The ``error`` event that refuses a client's request (naming its event, when it has one)."""
    return Send(p.error_event(ProtocolError(message, code=code), event_id=event_id))


def spoken_text(segments: list[tuple[str, float, float]], played_ms: float) -> str:
    """The text of the audio actually played: whole pieces, then a share of the cut one's words."""
    words: list[str] = []
    for text, start, end in segments:
        if played_ms >= end:
            words += text.split()
        elif played_ms > start:
            piece = text.split()
            words += piece[: int(len(piece) * (played_ms - start) / max(end - start, 1e-6))]
            break
        else:
            break
    return " ".join(words)


def _truncate(item: Item, audio_end_ms: float) -> None:
    """``item`` as heard: the words of its audio before ``audio_end_ms``."""
    item.text = spoken_text(item.segments, audio_end_ms) if item.segments else item.text
    item.segments = [seg for seg in item.segments if seg[1] < audio_end_ms]
    item.status = "incomplete"
