"""Per-turn latency records written out: one JSON line per finished turn, and Prometheus metrics.

The records themselves (:class:`voice.core.record.TurnRecord`) are the session core's.
:class:`TurnLog` appends the record to a size-rotated file and feeds the metrics. A turn log
is diagnostics, never a reason to fail a turn: write errors (a full disk) are logged once.

The metrics live in :data:`base.metrics.REGISTRY`, not the process-wide default registry, so tests and
embedded servers can be created repeatedly without "duplicated timeseries" errors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import BinaryIO

from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
)

from base.metrics import REGISTRY
from voice.core.record import TurnRecord

log = logging.getLogger(__name__)

# 10 ms to 10 s: a fast stage is tens of ms, voice-to-voice is good under 1 s, bad over 3 s.
_BUCKETS = (
    *(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5),
    *(0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0),
)
STAGE_SECONDS = Histogram(
    "castwork_turn_stage_seconds",
    "Latency of one stage of a turn (see voice.core.record.TurnRecord.durations).",
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
ASYNCIO_TASKS = Gauge(
    "castwork_asyncio_tasks",
    "Asyncio tasks not yet done on the serving event loop (set by the server that owns it).",
    registry=REGISTRY,
)


def live_sessions() -> int:
    """Voice sessions open now in this process (the :data:`SESSIONS_ACTIVE` gauge)."""
    return int(REGISTRY.get_sample_value("castwork_sessions_active") or 0)


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
