"""What the session core asks its shell to do: the actions it returns for every input.

The shell carries them out in order (send an event, transcribe, judge a pause, start, release
or cancel a response, write a finished turn's record, close) and reports results back as
inputs; it decides nothing about turns itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from voice.audio import Float32Array
from voice.core.record import TurnRecord
from voice.engines.contracts import Message, ToolChoice, ToolSpec


@dataclass(frozen=True)
class Send:
    event: dict[str, Any]


@dataclass(frozen=True)
class Transcribe:
    request_id: str
    audio: Float32Array = field(repr=False)
    purpose: Literal["partial", "speculative", "final"]
    turn: TurnRecord | None
    # Text the decoder reads as what came before (Whisper's prompt): its spelling and style
    # carry over, so fillers it would otherwise drop or mishear are written out.
    prompt: str | None = None


@dataclass(frozen=True)
class JudgeText:
    """Ask the text end-of-turn model whether ``text`` (the pause's transcript) ends the
    message, the agent having said ``before``; the answer comes back through
    :meth:`VoiceSession.on_text_judged`."""

    request_id: str
    text: str
    before: str | None


@dataclass(frozen=True)
class PrimeText:
    """Have the text end-of-turn model read the agent's last words now, while the caller
    speaks, so that the readings at the caller's pauses start from them. Nothing comes back."""

    before: str


@dataclass(frozen=True)
class JudgeTurn:
    """Ask the end-of-turn model whether the speech in ``audio`` (the turn so far, ending in
    the pause) is finished; the answer comes back through :meth:`VoiceSession.on_turn_judged`."""

    request_id: str
    audio: Float32Array = field(repr=False)


@dataclass(frozen=True)
class StartResponse:
    response_id: str
    item_id: str
    messages: list[Message]
    turn: TurnRecord
    modalities: list[str]
    max_output_tokens: int | None
    # Spoken as is, without the LLM (recovery: "sorry, I didn't catch that").
    canned_text: str | None = None
    # Prefetched during the pause: generate, but send nothing until ReleaseResponse.
    held: bool = False
    # The client's function tools offered to the model (the operator's server tools are
    # added by the runner), how the model may use them, and several calls at once or not.
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    parallel_tool_calls: bool = True


@dataclass(frozen=True)
class ReleaseResponse:
    response_id: str


@dataclass(frozen=True)
class CancelResponse:
    response_id: str
    reason: Literal["turn_detected", "client_cancelled", "superseded", "no_speech"]


@dataclass(frozen=True)
class FinishTurn:
    turn: TurnRecord


@dataclass(frozen=True)
class Close:
    """End the session with this WebSocket close code, once what was sent before is out."""

    code: int
    reason: str


Action = (
    Send
    | Transcribe
    | JudgeTurn
    | JudgeText
    | PrimeText
    | StartResponse
    | ReleaseResponse
    | CancelResponse
    | FinishTurn
    | Close
)
POLICY_VIOLATION = 1008  # the WebSocket close code
