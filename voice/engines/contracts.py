"""The contracts between a voice session and its models.

Each model sits behind one small Protocol; one backend per module implements it
(:mod:`voice.engines.vad`, :mod:`voice.engines.asr`, :mod:`voice.engines.llm`, :mod:`voice.engines.tts`), and
:mod:`voice.testing.fakes` ships fakes with scripted latency and failures.

Blocking calls (``speech_probability``, ``transcribe``, ``synthesize``) are plain methods:
the caller runs them in a worker thread. Only ``ChatModel.stream`` is async, because its
remote backend is network I/O.

Tools: a chat model is offered :class:`ToolSpec` functions and a :data:`ToolChoice`; its
stream then yields text (``str``) and :class:`ToolCallDelta` pieces, in the order the model
wrote them ("Let me check." then a call). What runs a call, and where, is not the model's
business (:mod:`voice.tools`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, Protocol, TypedDict

from voice.audio import Float32Array


class ToolCall(TypedDict):
    """A call the model made, as chat-completions messages carry it."""

    id: str
    type: Literal["function"]
    function: dict[str, str]  # {"name": ..., "arguments": JSON text}


class Message(TypedDict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    # assistant: the calls it made (content may then be empty); tool: which call this answers.
    tool_calls: NotRequired[list[ToolCall]]
    tool_call_id: NotRequired[str]


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call: a name, what it does, and a JSON Schema for arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def openai(self) -> dict[str, Any]:
        """The chat-completions ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


# What a tool may be called: the chat-completions rule, for every kind of tool.
TOOL_NAME = r"^[A-Za-z0-9_-]{1,64}$"


def check_parameters(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's arguments schema: a valid JSON Schema for an object (what function calling
    sends). Raises ValueError saying what is wrong. One rule for the client's tools, the
    operator's HTTP tools and what MCP servers report."""
    # Imported here: jsonschema costs ~90 ms, and only sessions with tools need it.
    from jsonschema import Draft202012Validator, SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema, default=Draft202012Validator).check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema at {exc.json_path}: {exc.message}") from None
    if schema.get("type") != "object":
        raise ValueError('the arguments must be an object schema: {"type": "object", ...}')
    return schema


# "auto": the model decides; "none": no calls; "required": at least one call; or a
# function's name: that function.
ToolChoice = str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call as the model writes it. The first piece of each call (by
    ``index`` within one answer) carries ``call_id`` and ``name``; ``arguments`` pieces
    concatenate to the call's JSON arguments."""

    index: int
    arguments: str = ""
    call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Transcript:
    text: str
    # Worst (highest) no-speech probability and mean log-probability over segments:
    # the hallucination guard reads these.
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    words: Sequence[Word] = field(default_factory=tuple)
    model: str = ""


class VoiceActivity(Protocol):
    """Speech probability per fixed-size 16 kHz frame; keeps recurrent state between frames."""

    frame_samples: int

    def speech_probability(self, frame: Float32Array) -> float: ...

    def reset(self) -> None: ...

    def fork(self) -> VoiceActivity:
        """A fresh stream (own state) sharing the loaded model."""
        ...


class EndOfTurn(Protocol):
    """Whether a speaker has finished, from the sound of the turn so far (16 kHz, ending in
    the pause being judged)."""

    name: str

    def probability(self, audio: Float32Array) -> float: ...


class TextEndOfTurn(Protocol):
    """Whether a speaker has finished, from the words so far (and what the agent said before
    them)."""

    name: str

    def probability(self, text: str, before: str | None = None) -> float: ...

    def prime(self, before: str | None) -> None:
        """Read ``before`` ahead of time (an optimisation: may do nothing)."""
        ...


class Transcriber(Protocol):
    name: str

    def transcribe(
        self, audio: Float32Array, *, word_timestamps: bool = False, prompt: str | None = None
    ) -> Transcript:
        """``prompt``: text the model reads as what was said before (its spelling carries
        over); a model without prompts ignores it."""
        ...


class ChatModel(Protocol):
    name: str

    def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        tools: Sequence[ToolSpec] = (),
        tool_choice: ToolChoice = "auto",
        parallel_tool_calls: bool = True,
    ) -> AsyncIterator[str | ToolCallDelta]:
        """Text pieces and tool-call pieces in the order written. Without ``tools``, text
        only. A backend that cannot do tools raises EngineError when given some."""
        ...


class Synthesizer(Protocol):
    name: str
    sample_rate: int

    def synthesize(self, text: str) -> Iterator[Float32Array]:
        """Yield audio chunks (float32 mono at ``sample_rate``) as they are made."""
        ...
