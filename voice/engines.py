"""The contracts between a voice session and its models.

Each model sits behind one small Protocol; one backend per module implements it
(:mod:`voice.vad`, :mod:`voice.asr`, :mod:`voice.llm`, :mod:`voice.tts`), and
:mod:`voice.testing` ships fakes with scripted latency and failures.

Blocking calls (``speech_probability``, ``transcribe``, ``synthesize``) are plain methods:
the caller runs them in a worker thread. Only ``ChatModel.stream`` is async, because its
remote backend is network I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypedDict

from voice.audio import Float32Array


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


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


class Transcriber(Protocol):
    name: str

    def transcribe(self, audio: Float32Array, *, word_timestamps: bool = False) -> Transcript: ...


class ChatModel(Protocol):
    name: str

    def stream(
        self, messages: Sequence[Message], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str]: ...


class Synthesizer(Protocol):
    name: str
    sample_rate: int

    def synthesize(self, text: str) -> Iterator[Float32Array]:
        """Yield audio chunks (float32 mono at ``sample_rate``) as they are made."""
        ...
