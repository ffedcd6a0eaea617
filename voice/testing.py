"""Fake engines with scripted latency and failures, shipped for logic tests (like dramatiq's
stub broker). They honour the same Protocols as the real engines in :mod:`voice.engines`.

Audio conventions for fakes: a frame whose RMS exceeds ``EnergyVad.threshold`` is speech, so a
test can build "speech" from a tone and "silence" from zeros (:func:`tone`, :func:`silence`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from voice.audio import INTERNAL_RATE, Float32Array
from voice.engines import Message, Transcript
from voice.errors import EngineError


def tone(
    ms: float, *, rate: int = INTERNAL_RATE, amplitude: float = 0.3, hz: float = 220.0
) -> Float32Array:
    t = np.arange(int(rate * ms / 1000)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def silence(ms: float, *, rate: int = INTERNAL_RATE) -> Float32Array:
    return np.zeros(int(rate * ms / 1000), dtype=np.float32)


class EnergyVad:
    """Speech probability from loudness: deterministic on synthetic audio."""

    frame_samples = 512

    def __init__(self, threshold: float = 0.05) -> None:
        self.threshold = threshold
        self.calls = 0

    def speech_probability(self, frame: Float32Array) -> float:
        self.calls += 1
        return 0.95 if float(np.sqrt(np.mean(frame**2))) > self.threshold else 0.02

    def reset(self) -> None:
        pass

    def fork(self) -> EnergyVad:
        return EnergyVad(self.threshold)


@dataclass
class FakeTranscriber:
    """Returns ``texts`` in turn (the last one repeats); ``fail`` raises on those call numbers."""

    texts: Sequence[str] = ("hello there",)
    latency_s: float = 0.0
    fail: set[int] = field(default_factory=set)
    name: str = "fake-asr"
    no_speech_prob: float = 0.01
    calls: int = 0

    def transcribe(self, audio: Float32Array, *, word_timestamps: bool = False) -> Transcript:
        self.calls += 1
        time.sleep(self.latency_s)
        if self.calls in self.fail or -1 in self.fail:
            raise EngineError(f"{self.name}: scripted failure", stage="asr")
        text = self.texts[min(self.calls, len(self.texts)) - 1]
        return Transcript(
            text=text, no_speech_prob=self.no_speech_prob, avg_logprob=-0.2, model=self.name
        )


@dataclass
class FakeChat:
    """Streams ``reply`` word by word. Scripted misbehaviour:

    - ``first_token_delay_s``: wait before the first token (a slow or hung backend)
    - ``error_after``: raise EngineError after that many tokens (0 = before the first)
    - ``token_delay_s``: between tokens
    """

    reply: str = "Sure. I can help with that today."
    first_token_delay_s: float = 0.0
    token_delay_s: float = 0.0
    error_after: int | None = None
    name: str = "fake-llm"
    calls: int = 0
    last_messages: list[Message] = field(default_factory=list)

    async def stream(
        self, messages: Sequence[Message], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str]:
        self.calls += 1
        self.last_messages = list(messages)
        await asyncio.sleep(self.first_token_delay_s)
        for i, word in enumerate(self.reply.split(" ")[:max_tokens]):
            if self.error_after is not None and i >= self.error_after:
                raise EngineError(f"{self.name}: scripted failure", stage="llm")
            if i:
                await asyncio.sleep(self.token_delay_s)
            yield word if i == 0 else " " + word


@dataclass
class FakeSynthesizer:
    """A tone whose length follows the text (60 ms a character); fails on scripted calls."""

    name: str = "fake-tts"
    sample_rate: int = 22_050
    latency_s: float = 0.0
    fail: set[int] = field(default_factory=set)
    ms_per_char: float = 60.0
    calls: int = 0
    spoken: list[str] = field(default_factory=list)

    def synthesize(self, text: str) -> Iterator[Float32Array]:
        self.calls += 1
        time.sleep(self.latency_s)
        if self.calls in self.fail or -1 in self.fail:
            raise EngineError(f"{self.name}: scripted failure", stage="tts")
        self.spoken.append(text)
        yield tone(len(text) * self.ms_per_char, rate=self.sample_rate, hz=330.0)
