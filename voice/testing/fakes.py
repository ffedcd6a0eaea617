"""Fake engines with scripted latency and failures, shipped for logic tests (like dramatiq's
stub broker). They honour the same Protocols as the real engines in :mod:`voice.engines.contracts`.

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
from voice.engines.contracts import Message, ToolCallDelta, ToolChoice, ToolSpec, Transcript
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
    prompts: list[str | None] = field(default_factory=list)  # each call's prompt

    def transcribe(
        self, audio: Float32Array, *, word_timestamps: bool = False, prompt: str | None = None
    ) -> Transcript:
        self.calls += 1
        self.prompts.append(prompt)
        time.sleep(self.latency_s)
        if self.calls in self.fail or -1 in self.fail:
            raise EngineError(f"{self.name}: scripted failure", stage="asr")
        text = self.texts[min(self.calls, len(self.texts)) - 1]
        return Transcript(
            text=text, no_speech_prob=self.no_speech_prob, avg_logprob=-0.2, model=self.name
        )


@dataclass
class FakeEndOfTurn:
    """An end-of-turn model that always hears ``probability`` (Smart Turn's interface)."""

    probability_: float = 0.99
    name: str = "fake-turn"
    calls: int = 0

    def probability(self, audio: Float32Array) -> float:
        self.calls += 1
        return self.probability_


@dataclass
class FakeChat:
    """Streams ``reply`` word by word. Scripted misbehaviour:

    - ``first_token_delay_s``: wait before the first token (a slow or hung backend)
    - ``error_after``: raise EngineError after that many tokens (0 = before the first)
    - ``token_delay_s``: between tokens

    Tools: when tools are offered and the conversation does not end with a tool result, the
    reply is followed by ``tool_calls`` (name, JSON arguments), their arguments streamed in
    pieces of ``arg_chunk`` characters. After a tool result it answers ``tool_reply`` with
    ``{output}`` replaced by that result.
    """

    reply: str = "Sure. I can help with that today."
    first_token_delay_s: float = 0.0
    token_delay_s: float = 0.0
    error_after: int | None = None
    name: str = "fake-llm"
    tool_calls: Sequence[tuple[str, str]] = ()
    tool_reply: str = "It says {output}."
    arg_chunk: int = 8
    calls: int = 0
    last_messages: list[Message] = field(default_factory=list)
    last_tools: list[ToolSpec] = field(default_factory=list)
    last_tool_choice: ToolChoice = "auto"

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        tools: Sequence[ToolSpec] = (),
        tool_choice: ToolChoice = "auto",
        parallel_tool_calls: bool = True,
    ) -> AsyncIterator[str | ToolCallDelta]:
        self.calls += 1
        self.last_messages, self.last_tools = list(messages), list(tools)
        self.last_tool_choice = tool_choice
        await asyncio.sleep(self.first_token_delay_s)
        after_tool = bool(messages) and messages[-1]["role"] == "tool"
        reply = self.tool_reply.format(output=messages[-1]["content"]) if after_tool else self.reply
        for i, word in enumerate(reply.split(" ")[:max_tokens] if reply else []):
            if self.error_after is not None and i >= self.error_after:
                raise EngineError(f"{self.name}: scripted failure", stage="llm")
            if i:
                await asyncio.sleep(self.token_delay_s)
            yield word if i == 0 else " " + word
        if not tools or after_tool or tool_choice == "none":
            return
        for index, (name, arguments) in enumerate(self.tool_calls):
            yield ToolCallDelta(index, call_id=f"call_fake{self.calls}_{index}", name=name)
            for at in range(0, len(arguments), self.arg_chunk):
                await asyncio.sleep(self.token_delay_s)
                yield ToolCallDelta(index, arguments[at : at + self.arg_chunk])


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
