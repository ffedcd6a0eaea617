"""Per-turn latency records: one JSON line per finished turn, and Prometheus metrics.

A :class:`TurnRecord` collects monotonic timestamps ("marks") as a turn moves through the
pipeline; :meth:`TurnRecord.durations` turns them into the per-stage latencies that matter
for a voice agent, ending with voice-to-voice (user stops speaking → first audio sent).
:class:`TurnLog` appends the record to a size-rotated file and feeds the metrics. A turn log
is diagnostics, never a reason to fail a turn: write errors (a full disk) are logged once.

The metrics live in :data:`REGISTRY`, not the process-wide default registry, so tests and
embedded servers can be created repeatedly without "duplicated timeseries" errors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

log = logging.getLogger(__name__)

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

REGISTRY = CollectorRegistry()
# 10 ms to 10 s: a fast stage is tens of ms, voice-to-voice is good under 1 s, bad over 3 s.
_BUCKETS = (
    *(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5),
    *(0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0),
)
STAGE_SECONDS = Histogram(
    "castwork_turn_stage_seconds",
    "Latency of one stage of a turn (see voice.latency.TurnRecord.durations).",
    ["stage"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
VOICE_TO_VOICE_SECONDS = Histogram(
    "castwork_voice_to_voice_seconds",
    "End of the user's speech to the first audio sent back.",
    ["outcome"],
    buckets=_BUCKETS,
    registry=REGISTRY,
)
RECOVERY_TOTAL = Counter(
    "castwork_turn_recovery_total",
    "Recovery actions taken in turns, by reason code.",
    ["code"],
    registry=REGISTRY,
)
TURNS_TOTAL = Counter(
    "castwork_turns_total", "Finished turns, by outcome.", ["outcome"], registry=REGISTRY
)
SESSIONS_ACTIVE = Gauge("castwork_sessions_active", "Voice sessions open now.", registry=REGISTRY)
# Resources that must come back to baseline once sessions end (the soak benchmark watches them):
# process_resident_memory_bytes and process_open_fds from the collector, threads and tasks here.
ProcessCollector(registry=REGISTRY)
THREADS = Gauge("castwork_threads", "Python threads alive in this process.", registry=REGISTRY)
THREADS.set_function(threading.active_count)
ASYNCIO_TASKS = Gauge(
    "castwork_asyncio_tasks",
    "Asyncio tasks not yet done on the serving event loop (set by the server that owns it).",
    registry=REGISTRY,
)


def live_sessions() -> int:
    """Voice sessions open now in this process (the :data:`SESSIONS_ACTIVE` gauge)."""
    return int(REGISTRY.get_sample_value("castwork_sessions_active") or 0)


def metrics_text() -> bytes:
    """The Prometheus text exposition of :data:`REGISTRY`."""
    return generate_latest(REGISTRY)


@dataclass
class Evidence:
    """What a captured failure case keeps beyond the record (see :mod:`voice.cases`). Held in
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
    key: str = "-"  # id of the API key the session used (see voice.server.key_id)
    arm: str = "-"  # experiment arm, where sessions are split between configurations
    started_at: float = field(default_factory=time.time)  # wall clock, for the log only
    marks: dict[str, float] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    recovery: list[str] = field(default_factory=list)
    outcome: str = "in_progress"
    extra: dict[str, object] = field(default_factory=dict)
    # Which model files, instructions and settings produced the turn (voice.lineage).
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


def observe(record: TurnRecord) -> None:
    """Feed a finished turn into the Prometheus metrics."""
    durations = record.durations()
    for stage, ms in durations.items():
        STAGE_SECONDS.labels(stage=stage).observe(ms / 1000)
    if "voice_to_voice" in durations:
        VOICE_TO_VOICE_SECONDS.labels(outcome=record.outcome).observe(
            durations["voice_to_voice"] / 1000
        )
    for code in record.recovery:
        RECOVERY_TOTAL.labels(code=code).inc()
    TURNS_TOTAL.labels(outcome=record.outcome).inc()


class TurnLog:
    """Append-only JSON-lines file of finished turns, rotated by size like logrotate:
    ``turns.jsonl`` → ``turns.jsonl.1`` → ... → ``turns.jsonl.<backups>`` (then dropped).

    Each line goes out in one unbuffered append. After a failed write (disk full) the next
    record starts on a fresh line, so a reader loses at most the broken one. Thread-safe.
    """

    def __init__(self, path: Path | None, *, max_bytes: int = 20 << 20, backups: int = 5) -> None:
        if max_bytes <= 0 or backups < 0:
            raise ValueError("max_bytes must be > 0 and backups >= 0")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._size = 0
        self._failed = False  # a write failed: the file may end in half a line
        self._warned = False

    def write(self, record: TurnRecord) -> None:
        """Update the metrics and append the record; never raises on I/O errors."""
        observe(record)
        if self.path is None:
            return
        line = json.dumps(record.to_json(), ensure_ascii=False, default=str) + "\n"
        with self._lock:
            try:
                self._append(line.encode())
            except OSError as exc:
                self._failed = True
                self._close()
                if not self._warned:
                    self._warned = True
                    log.warning("turn log %s not written (%s); going on without it", self.path, exc)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _append(self, data: bytes) -> None:
        assert self.path is not None
        if self._file is None:
            self._open()
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        if self._failed:  # recovered after an error: end any half-written line first
            self._failed = False
            if self._size and self._last_byte() != b"\n":
                data = b"\n" + data
        self._write_all(data)

    def _open(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open across writes
        self._size = self._file.seek(0, os.SEEK_END)

    def _rotate(self) -> None:
        assert self.path is not None
        self._close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._open()

    def _write_all(self, data: bytes) -> None:
        assert self._file is not None
        view = memoryview(data)
        while view:
            n = self._file.write(view)
            if not n:
                raise OSError("short write")
            view = view[n:]
            self._size += n

    def _last_byte(self) -> bytes:
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1)

    def _close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
