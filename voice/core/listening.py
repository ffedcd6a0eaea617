r"""How one session hears turns: the VAD state machine, semantic_vad's pause judgement,
speech over the agent (barge-in or backchannel) and the idle prompt. I/O-free, like the rest
of the core: a mixin of :class:`voice.core.session.VoiceSession`, which owns the state it
reads (declared below for type checkers) and the conversation, responses and bounds.

Turn detection (server VAD), in :class:`TurnState`\ s::

    QUIET ──2 speech frames──▶ SPEECH ──pause ≥ speculative_ms──▶ (speculative ASR, and a
      ▲                        ▲   │                                held response prefetched)
      │                        └───┘ speech again: speculative work is dropped
      └──────── pause ≥ silence_duration_ms: endpoint, commit, transcript → response released

With semantic_vad the pause is judged at ``speculative_after_ms`` (the end-of-turn model on
the audio, the speculative transcript, and a text model's reading of it where configured:
the rule is :func:`voice.core.turntaking.judge`) and ends the turn at once or after the
eagerness's wait.

Speech that starts while the agent answers is OVERLAP until ``barge_in_min_ms`` of it, or words
that are not a backchannel, make it an interruption (then SPEECH); a backchannel goes back to
QUIET and the answer plays on.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Literal

from voice.audio import FRAME_SAMPLES, INTERNAL_RATE, Timeline
from voice.core import protocol as p
from voice.core.actions import (
    Action,
    CancelResponse,
    JudgeText,
    JudgeTurn,
    PrimeText,
    Send,
    StartResponse,
    Transcribe,
)
from voice.core.conversation import Item
from voice.core.heard import usable
from voice.core.record import TurnRecord
from voice.core.turntaking import (
    BACKCHANNEL_PROMPTS,
    PATIENCE,
    is_backchannel,
    judge,
    sure_enough,
)
from voice.engines.contracts import Transcript

if TYPE_CHECKING:
    from voice.core.session import SessionConfig, _Response

FRAME_MS = FRAME_SAMPLES * 1000 // INTERNAL_RATE  # 32


class TurnState(Enum):
    """What the input side hears; a turn is born in SPEECH and ends at its endpoint (QUIET)."""

    QUIET = "quiet"  # nobody speaks: waiting for speech (the idle prompt's timer may run)
    SPEECH = "speech"  # the caller speaks, or pauses inside a turn (its silence is counted)
    OVERLAP = "overlap"  # speech over the agent's answer, not yet known to interrupt it


class Listening:
    """Turn detection for :class:`~voice.core.session.VoiceSession` (its only user)."""

    if TYPE_CHECKING:  # the session's, set in its __init__ and used here
        config: SessionConfig
        items: dict[str, Item]
        _buffer: Timeline
        _state: TurnState
        _run: int
        _speech_start_ms: float
        _last_speech_ms: float
        _last_speech_at: float
        _silence_ms: int
        _item_id: str | None
        _turn: TurnRecord | None
        _last_partial_ms: float
        _partial_text: str
        _requests: dict[str, tuple[str, str | None, TurnRecord | None]]
        _speculative: str | None
        _spec_result: Transcript | None
        _spec_done: bool
        _judge: str | None
        _judged: tuple[float | None] | None
        _text_asked: bool
        _text_judged: tuple[float | None] | None
        _pause_limit_ms: int | None
        _idle_from: float | None
        _idle_armed: bool
        _overlap_speech_ms: int
        _response: _Response | None

        # ... and the session's methods called from here, with the arguments used here.
        def _transcribe(
            self,
            purpose: Literal["partial", "speculative"],
            item_id: str | None,
            turn: TurnRecord | None,
            start_ms: float,
            end_ms: float,
            *,
            prompt: str | None = None,
        ) -> Transcribe: ...
        def _drop_speculative(self) -> list[Action]: ...
        def _new_turn(self, now: float) -> TurnRecord: ...
        def _start_response(
            self, turn: TurnRecord, now: float, *, canned: str | None = None
        ) -> StartResponse: ...
        def _commit(
            self, item_id: str, turn: TurnRecord, now: float, start_ms: float
        ) -> list[Action]: ...
        def _turn_too_long(self, td: p.TurnDetection, now: float) -> list[Action]: ...

    def _vad_frame(
        self, prob: float, frame_end_ms: float, td: p.TurnDetection, now: float
    ) -> list[Action]:
        speech = prob >= td.threshold
        if self._state is TurnState.QUIET:
            self._run = self._run + 1 if speech else 0
            if self._run >= 2:
                return self._speech_started(frame_end_ms, td, now)
            return self._idle_check(td, frame_end_ms, now)
        if frame_end_ms - self._speech_start_ms >= self.config.max_buffer_ms:
            return self._turn_too_long(td, now)
        if speech:
            self._last_speech_ms, self._last_speech_at, self._silence_ms = frame_end_ms, now, 0
            out = self._drop_speculative()
            if self._state is TurnState.OVERLAP:
                self._overlap_speech_ms += FRAME_MS
                if self._overlap_speech_ms >= self.config.barge_in_min_ms:
                    out += self._overlap_confirmed(td)
                return out
            if (
                frame_end_ms - self._last_partial_ms >= self.config.partial_every_ms
                and not self._requests
            ):
                self._last_partial_ms = frame_end_ms
                out.append(
                    self._transcribe(
                        "partial", self._item_id, self._turn, self._speech_start_ms, frame_end_ms
                    )
                )
            return out
        self._silence_ms += FRAME_MS
        if self._state is TurnState.OVERLAP:  # short speech over the agent: its transcript decides
            if self._speculative is not None or self._silence_ms < self.config.speculative_after_ms:
                return []
            action = self._transcribe(
                "speculative",
                self._item_id,
                None,
                self._speech_start_ms,
                frame_end_ms,
                prompt=BACKCHANNEL_PROMPTS.get(self.config.language or "en")
                if self.config.backchannel_prompt
                else None,
            )
            self._speculative, self._spec_result = action.request_id, None
            return [action]
        if self._silence_ms >= self._pause_limit(td):
            return self._endpoint(td, now)
        if self._silence_ms >= self.config.speculative_after_ms and self._speculative is None:
            action = self._transcribe(
                "speculative", self._item_id, self._turn, self._speech_start_ms, frame_end_ms
            )
            self._speculative, self._spec_result = action.request_id, None
            if td.type != "semantic_vad":
                return [action]
            self._new_judgement()
            assert self._judge is not None
            return [action, JudgeTurn(self._judge, action.audio)]
        return []

    def _pause_limit(self, td: p.TurnDetection) -> int:
        """The silence that ends a turn whatever else is known."""
        if td.type == "server_vad":
            return td.silence_duration_ms
        if self._pause_limit_ms is not None:
            return self._pause_limit_ms
        return PATIENCE[td.eagerness].max_wait_ms

    def _new_judgement(self) -> None:
        self._judge, self._judged = p.new_id("eot"), None
        self._text_asked, self._text_judged = False, None

    def _settle_pause(self, now: float) -> list[Action]:
        """semantic_vad: once the judgement, the speculative transcript and (with a text
        model) its reading are in, end the turn now or keep listening (up to the eagerness's
        wait). The text model is asked as soon as the transcript is in."""
        td = self.config.turn_detection
        if td is None or self._judge is None:
            return []
        if self._state is TurnState.QUIET or self._turn is None:
            return []
        out: list[Action] = []
        text = self._spec_text() if self._spec_done else ""
        if self._spec_done and self.config.text_turn and not self._text_asked:
            self._text_asked = True
            if text:
                out.append(JudgeText(self._judge, text, self._agent_said()))
            else:
                self._text_judged = (None,)  # no words to read
        if self._judged is None:
            return out
        if not self._spec_done:
            # A sure model ends the turn before the transcript, unless a text model is to
            # read it: the sound of "I would like to book a table" is often sure.
            if self.config.text_turn or not sure_enough(self._judged[0], td.eagerness):
                return out  # the transcript decides with it
            self._record_pause(self._judged[0], "model_sure")
            return self._endpoint(td, now)  # the decode in flight becomes the final one
        if self.config.text_turn and self._text_judged is None:
            return out
        (probability,) = self._judged
        text_probability = self._text_judged[0] if self._text_judged is not None else None
        verdict = judge(
            probability,
            text,
            td.eagerness,
            after_question=self._agent_asked(),
            text_probability=text_probability,
        )
        self._judge = None  # one verdict a pause
        self._record_pause(probability, verdict.why, text_probability)
        if verdict.finished or self._silence_ms >= verdict.wait_ms:
            return out + self._endpoint(td, now)
        self._pause_limit_ms = verdict.wait_ms
        return out

    def _spec_text(self) -> str:
        """The pause's speculative transcript, "" when it failed or the guard refused it."""
        c, result = self.config, self._spec_result
        if result is None or not usable(
            result, no_speech=c.no_speech_threshold, min_logprob=c.min_avg_logprob
        ):
            return ""
        return result.text

    def _record_pause(
        self, probability: float | None, why: str, text_probability: float | None = None
    ) -> None:
        assert self._turn is not None
        pauses = self._turn.extra.setdefault("pauses", [])
        assert isinstance(pauses, list)
        pause: dict[str, object] = {
            "at_ms": self._silence_ms,
            "p": None if probability is None else round(probability, 3),
            "verdict": why,
        }
        if text_probability is not None:
            pause["p_text"] = round(text_probability, 3)
        pauses.append(pause)

    def _agent_said(self) -> str | None:
        """The agent's last words, if it has spoken."""
        for item in reversed(self.items.values()):
            if item.role == "assistant" and item.kind == "message":
                return item.text
        return None

    def _agent_asked(self) -> bool:
        """Whether the agent's last words were a question (its answer is then likely short)."""
        said = self._agent_said()
        return said is not None and said.rstrip().endswith("?")

    def _idle_check(self, td: p.TurnDetection, frame_end_ms: float, now: float) -> list[Action]:
        """idle_timeout_ms: the agent finished and nobody spoke since: prompt the user, once."""
        if td.idle_timeout_ms is None or self._idle_from is None or not self._idle_armed:
            return []
        if self._response is not None or now - self._idle_from < td.idle_timeout_ms / 1000:
            return []
        self._idle_from, self._idle_armed = None, False
        turn = self._new_turn(now)
        turn.mark("endpoint", now)
        turn.extra["idle_timeout"] = True
        out: list[Action] = [
            Send(
                p.event(
                    "input_audio_buffer.timeout_triggered",
                    audio_start_ms=int(
                        max(self._buffer.start_ms, frame_end_ms - td.idle_timeout_ms)
                    ),
                    audio_end_ms=int(frame_end_ms),
                    item_id=p.new_id("item"),
                )
            )
        ]
        return [*out, self._start_response(turn, now, canned=self.config.still_there)]

    def _speech_started(self, frame_end_ms: float, td: p.TurnDetection, now: float) -> list[Action]:
        out: list[Action] = []
        self._silence_ms = 0
        self._idle_from, self._idle_armed = None, True
        onset = frame_end_ms - self._run * FRAME_MS
        self._speech_start_ms = max(self._buffer.start_ms, onset - td.prefix_padding_ms)
        self._last_speech_ms, self._last_speech_at = frame_end_ms, now
        self._last_partial_ms, self._partial_text = frame_end_ms, ""
        resp = self._response
        interrupting = resp is not None and not resp.held and td.interrupt_response
        # Speech over the agent is not yet an interruption: "uh-huh" must not cancel it.
        overlap = interrupting and self.config.barge_in_min_ms > 0
        self._state = TurnState.OVERLAP if overlap else TurnState.SPEECH
        self._overlap_speech_ms = self._run * FRAME_MS
        if interrupting and self._state is not TurnState.OVERLAP:
            out += self._interrupt()
        out += self._drop_speculative()
        self._item_id = p.new_id("item")
        self._turn = self._new_turn(now)
        self._turn.mark("speech_start", now)
        if self._state is TurnState.OVERLAP:
            return out  # announced once it is an interruption (or a turn)
        out.append(self._announce_speech())
        said = self._agent_said()
        if td.type == "semantic_vad" and self.config.text_turn and said:
            out.append(PrimeText(said))
        return out

    def _announce_speech(self) -> Send:
        return Send(
            p.event(
                "input_audio_buffer.speech_started",
                audio_start_ms=int(self._speech_start_ms),
                item_id=self._item_id,
            )
        )

    def _interrupt(self) -> list[Action]:
        """Barge-in: the active response is cancelled (its unplayed audio is dropped)."""
        resp = self._response
        if resp is None or resp.held:
            return []
        resp.turn.add_recovery("barge_in")
        return [CancelResponse(resp.id, "turn_detected")]

    def _overlap_confirmed(self, td: p.TurnDetection) -> list[Action]:
        """Speech over the agent is a real turn: announce it and interrupt the answer (when
        it is still going). semantic_vad then judges the pause the words ended in."""
        self._state = TurnState.SPEECH
        out: list[Action] = [self._announce_speech(), *self._interrupt()]
        if td.type == "semantic_vad" and self._silence_ms > 0:
            self._new_judgement()
            assert self._judge is not None
            out.append(
                JudgeTurn(
                    self._judge, self._buffer.slice(self._speech_start_ms, self._buffer.end_ms)
                )
            )
        return out

    def _overlap_heard(self, result: Transcript | None, now: float) -> list[Action]:
        """Short speech over the agent was transcribed: a backchannel ("uh-huh", "okay") or
        noise is let go (the agent goes on); any other words interrupt it."""
        td = self.config.turn_detection
        assert td is not None
        c = self.config
        text = (
            result.text
            if result is not None
            and usable(result, no_speech=c.no_speech_threshold, min_logprob=c.min_avg_logprob)
            else ""
        )
        if text and not is_backchannel(text):
            out = self._overlap_confirmed(td)
            if td.type == "server_vad" and self._silence_ms >= td.silence_duration_ms:
                out += self._endpoint(td, now)  # the pause ended while the words were decoded
            return out
        if self._response is not None:
            resp_extra = self._response.turn.extra
            resp_extra["backchannels"] = int(str(resp_extra.get("backchannels", 0))) + 1
        self._state, self._run = TurnState.QUIET, 0
        self._item_id, self._turn = None, None
        self._drop_speculative()
        return []

    def _endpoint(self, td: p.TurnDetection, now: float) -> list[Action]:
        self._state, self._run = TurnState.QUIET, 0
        self._judge, self._judged, self._pause_limit_ms = None, None, None
        self._text_asked, self._text_judged = False, None
        assert self._item_id is not None and self._turn is not None
        item_id, turn = self._item_id, self._turn
        turn.mark("speech_end", self._last_speech_at)
        turn.mark("endpoint", now)
        end_ms = int(min(self._buffer.end_ms, self._last_speech_ms + FRAME_MS))
        out: list[Action] = [
            Send(p.event("input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=item_id))
        ]
        return out + self._commit(item_id, turn, now, self._speech_start_ms)
