"""What one turn did and when: the record the session core fills and the shells time.

A :class:`TurnRecord` collects monotonic timestamps ("marks") as a turn moves through the
pipeline; :meth:`TurnRecord.durations` turns them into the per-stage latencies that matter
for a voice agent, ending with voice-to-voice (user stops speaking -> first audio sent).
Writing records out and counting them is :mod:`voice.runtime.latency`'s job.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

STAGES = (
    "speech_start",
    "speech_end",
    "endpoint",
    "asr_final",
    "llm_first_token",
    "first_piece",
    "tts_first_audio",
    "first_audio_sent",
    "response_done",
    # Tool turns: the model's first tool-call piece, a server tool called, its result back.
    "tool_decided",
    "tool_call_sent",
    "tool_result",
)


@dataclass
class Evidence:
    """What a captured failure case keeps beyond the record (see :mod:`voice.learning.cases`). Held in
    memory only until the turn is finished: never written to the turn log."""

    audio: Any = None  # the user's speech for the turn, float32 at 16 kHz
    transcript: str | None = None  # what the ASR returned
    heard: str | None = None  # what the session took as the user's words
    reply: str | None = None  # what the LLM wrote (or the canned reply)
    spoken: str | None = None  # what was played before the turn ended (barge-in cuts it)


@dataclass
class TurnRecord:
    """What happened in one turn and when. Marks are ``time.monotonic()`` seconds."""

    session_id: str
    turn_id: str
    key: str = "-"  # id of the API key the session used (see voice.runtime.server.key_id)
    arm: str = "-"  # experiment arm, where sessions are split between configurations
    started_at: float = field(default_factory=time.time)  # wall clock, for the log only
    marks: dict[str, float] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    recovery: list[str] = field(default_factory=list)
    outcome: str = "in_progress"
    extra: dict[str, object] = field(default_factory=dict)
    # Which model files, instructions and settings produced the turn (voice.learning.lineage).
    lineage: dict[str, object] = field(default_factory=dict)
    evidence: Evidence = field(default_factory=Evidence, repr=False, compare=False)

    def mark(self, name: str, at: float | None = None) -> None:
        """Record that ``name`` happened (now, or ``at``). The first write wins, so a stage
        reached again (a retry, a second audio chunk) keeps its first time."""
        if name not in self.marks:
            self.marks[name] = time.monotonic() if at is None else at

    def add_recovery(self, code: str) -> None:
        self.recovery.append(code)

    def durations(self) -> dict[str, float]:
        """Per-stage latencies in milliseconds, for the stages whose marks are all set."""
        m = self.marks
        out: dict[str, float] = {}

        def span(name: str, start: str, end: str) -> None:
            if start in m and end in m:
                out[name] = (m[end] - m[start]) * 1000

        span("endpointing", "speech_end", "endpoint")
        if "endpoint" in m and "asr_final" in m:
            # Speculative ASR may finish before the endpoint is declared: that costs nothing.
            out["asr"] = max(0.0, (m["asr_final"] - m["endpoint"]) * 1000)
        # The LLM can start once both the endpoint and the transcript are there.
        ready = max((m[k] for k in ("asr_final", "endpoint") if k in m), default=None)

        def after(start: str, end: str) -> None:
            # A speculative answer (started in a pause on the partial transcript) may pass
            # its first marks before the endpoint: a stage costs only what it adds after it.
            if start in m and end in m:
                begin = m[start] if ready is None else max(m[start], ready)
                out[end] = max(0.0, (m[end] - begin) * 1000)

        if "llm_first_token" in m and ready is not None:
            out["llm_first_token"] = max(0.0, (m["llm_first_token"] - ready) * 1000)
        after("llm_first_token", "first_piece")
        after("first_piece", "tts_first_audio")
        span("send", "tts_first_audio", "first_audio_sent")
        span("voice_to_voice", "speech_end", "first_audio_sent")
        if "tool_decided" in m and ready is not None:
            # From the moment the model could start to its first tool-call piece.
            out["tool_decision"] = max(0.0, (m["tool_decided"] - ready) * 1000)
        span("tool_call", "tool_call_sent", "tool_result")
        return out

    def to_json(self) -> dict[str, Any]:
        """The log line: durations and marks in ms, marks relative to the earliest one."""
        origin = min(self.marks.values(), default=0.0)
        return {
            "ts": self.started_at,
            "session_id": self.session_id,
            "turn_id": self.turn_id,
            "key": self.key,
            "arm": self.arm,
            "outcome": self.outcome,
            "recovery": list(self.recovery),
            "models": dict(self.models),
            "durations_ms": {k: round(v, 1) for k, v in self.durations().items()},
            "marks_ms": {k: round((v - origin) * 1000, 1) for k, v in self.marks.items()},
            "extra": dict(self.extra),
            "lineage": dict(self.lineage),
        }


def digest(text: str) -> str:
    """A short, stable content hash for text (instructions, settings) in a record's lineage."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
