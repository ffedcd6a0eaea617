"""Failure-case capture: turns that went wrong, kept (masked) to learn from.

A turn that took a recovery branch (``no_speech``, ``asr_retry``, ``llm_fallback``,
``barge_in``, ``abandoned``...) or whose voice-to-voice crossed ``capture.slow_ms`` becomes a
*case*: a folder with ``case.json`` (transcripts, reply, turn record, lineage, settings) and,
unless its text held personal data, ``audio.wav`` (the user's speech for the turn)::

    <cases_dir>/20261121T101502-case_3f9a.../case.json, audio.wav

Three parts, so the live turn never waits for a disk:

- :func:`reasons` and :func:`build_case` are pure: which turns to keep, and the masked case.
- :class:`CaseStore` writes a case atomically (a hidden temporary folder, fsynced, renamed
  into place: a reader or a crash never sees half a case) and applies retention (newest
  ``max_cases``, none older than ``max_age_days``).
- :class:`CaseRecorder` is what the server calls when a turn ends: ``offer`` only puts the turn
  on a bounded queue (a full queue drops the case and counts it); one writer thread builds and
  stores cases. A case keeps at most the first ``max_audio_s`` of the turn's audio, and the
  queue at most ``max_queued_audio_s`` in all: a slow disk and long turns cannot pile up
  audio in memory.

:func:`export` turns stored cases into an eval set (``castwork eval`` reads it).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from base.metrics import REGISTRY
from voice import audio as pcm
from voice.core.record import TurnRecord
from voice.learning.lineage import shaping_settings
from voice.learning.pii import mask
from voice.settings import CaptureSettings, VoiceSettings

log = logging.getLogger(__name__)

CASES_CAPTURED = Counter(
    "castwork_cases_captured_total",
    "Failure cases written, by reason.",
    ["reason"],
    registry=REGISTRY,
)
CASES_DROPPED = Counter(
    "castwork_cases_dropped_total",
    "Failure cases not written, by why (queue_full, write_error).",
    ["why"],
    registry=REGISTRY,
)
CASE_FILE = "case.json"
AUDIO_FILE = "audio.wav"
_TMP_PREFIX = ".tmp-"
# Whisper hears 30 s at a time; a longer turn's case keeps its first 30 s (3.8 MB of 16 kHz
# float32 waiting in the queue, 0.96 MB of WAV on disk).
MAX_CASE_AUDIO_S = 30.0
# Audio waiting in the queue in all (19 MB): beyond it a case is dropped like on a full queue.
MAX_QUEUED_AUDIO_S = 300.0


def reasons(record: TurnRecord, capture: CaptureSettings) -> list[str]:
    """Why this turn is a case (empty: it is not)."""
    wanted: set[str] = set(capture.reasons)
    out: list[str] = [code for code in dict.fromkeys(record.recovery) if code in wanted]
    v2v = record.durations().get("voice_to_voice")
    if "slow" in wanted and v2v is not None and v2v > capture.slow_ms:
        out.append("slow")
    return out


@dataclass(frozen=True)
class Case:
    """A case ready to store: ``data`` goes to case.json, ``audio`` (16 kHz) to audio.wav."""

    case_id: str
    data: dict[str, Any]
    audio: pcm.Float32Array | None


def build_case(
    record: TurnRecord,
    why: Sequence[str],
    *,
    settings: dict[str, Any],
    keep_audio_with_pii: bool = False,
    now: float | None = None,
) -> Case:
    """The case for a finished turn: every text masked, audio dropped when the text held
    personal data (unless ``keep_audio_with_pii``)."""
    ev = record.evidence
    texts: dict[str, str | None] = {}
    found: list[str] = []
    for name in ("transcript", "heard", "reply", "spoken"):
        value = getattr(ev, name)
        if value is None:
            texts[name] = None
            continue
        m = mask(value)
        texts[name] = m.text
        found += [k for k in m.kinds if k not in found]
    audio = ev.audio if ev.audio is not None and len(ev.audio) else None
    dropped = None
    if audio is not None and found and not keep_audio_with_pii:
        audio, dropped = None, "the turn's text held personal data (" + ", ".join(found) + ")"
    data = {
        "case_id": f"case_{record.turn_id.removeprefix('turn_')}",
        "captured_at": time.time() if now is None else now,
        "reasons": list(why),
        "session_id": record.session_id,
        "turn_id": record.turn_id,
        "arm": record.arm,
        **texts,
        "personal_data": found,
        "audio": AUDIO_FILE if audio is not None else None,
        "audio_ms": round(len(audio) * 1000 / pcm.INTERNAL_RATE, 1) if audio is not None else 0,
        "audio_dropped": dropped,
        # The turn's audio was longer than a case keeps (CaseRecorder.max_audio_s): its
        # transcript covers more than audio.wav.
        "audio_cut_from_ms": record.extra.get("audio_cut_from_ms"),
        "record": record.to_json(),
        "lineage": dict(record.lineage),
        "settings": settings,
    }
    return Case(str(data["case_id"]), data, audio)


class CaseStore:
    """Cases as folders under ``root``; names sort by capture time."""

    def __init__(self, root: Path, *, max_cases: int = 1000, max_age_days: float = 14.0) -> None:
        self.root = root
        self.max_cases = max_cases
        self.max_age_s = max_age_days * 86400

    def write(self, case: Case) -> Path:
        """Store ``case`` atomically; returns its folder. Raises OSError (disk full...)."""
        self.root.mkdir(parents=True, exist_ok=True)
        at = float(case.data["captured_at"])
        # Microseconds too: names order the cases for retention, and within one second the
        # case ids alone would order them by chance.
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}"
        final = self.root / f"{stamp}-{case.case_id}"
        tmp = self.root / f"{_TMP_PREFIX}{case.case_id}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            if case.audio is not None:
                (tmp / AUDIO_FILE).write_bytes(pcm.wav_bytes(case.audio, pcm.INTERNAL_RATE))
            (tmp / CASE_FILE).write_text(json.dumps(case.data, ensure_ascii=False, indent=1))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            n = 1
            while final.exists():  # the same turn offered twice must not overwrite the first
                n += 1
                final = self.root / f"{stamp}-{case.case_id}-{n}"
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self.root)
        return final

    def folders(self) -> list[Path]:
        """Stored cases, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(
            p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(_TMP_PREFIX[0])
        )

    def prune(self, now: float | None = None) -> int:
        """Apply retention; also clear temporary folders a crash left. Returns cases removed."""
        now = time.time() if now is None else now
        removed = 0
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.name.startswith(_TMP_PREFIX) and now - p.stat().st_mtime > 3600:
                    shutil.rmtree(p, ignore_errors=True)
        cases = self.folders()
        for i, folder in enumerate(cases):
            too_many = len(cases) - i > self.max_cases
            if too_many or now - _captured_at(folder) > self.max_age_s:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    def cases(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """(folder, case.json) of each readable case, oldest first; unreadable ones skipped."""
        for folder in self.folders():
            try:
                data = json.loads((folder / CASE_FILE).read_text())
            except (OSError, ValueError):
                log.warning("case %s unreadable; skipped", folder)
                continue
            if isinstance(data, dict):
                yield folder, data


def _samples(record: TurnRecord) -> int:
    audio = record.evidence.audio
    return 0 if audio is None else len(audio)


def _captured_at(folder: Path) -> float:
    stamp = folder.name.split("-", 1)[0].split(".", 1)[0]
    try:
        return time.mktime(time.strptime(stamp, "%Y%m%dT%H%M%S")) - time.timezone
    except ValueError:
        return folder.stat().st_mtime


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CaseRecorder:
    """Takes finished turns from the server; writes the failure cases on its own thread."""

    def __init__(
        self,
        store: CaseStore,
        capture: CaptureSettings,
        settings: VoiceSettings,
        *,
        max_audio_s: float = MAX_CASE_AUDIO_S,
        max_queued_audio_s: float = MAX_QUEUED_AUDIO_S,
    ) -> None:
        self.store, self.capture = store, capture
        self.max_audio = int(max_audio_s * pcm.INTERNAL_RATE)  # samples
        self.max_queued_audio = int(max_queued_audio_s * pcm.INTERNAL_RATE)
        self._queued_audio = 0  # samples waiting in the queue
        self._lock = threading.Lock()
        # What case.json records as the settings in force: the turn-shaping sections and the
        # experiment (which arms existed).
        self._settings = {
            **shaping_settings(settings),
            "experiment": settings.experiment.model_dump(mode="json"),
        }
        self._queue: queue.Queue[tuple[TurnRecord, list[str]] | None] = queue.Queue(
            capture.queue_size
        )
        self.written = 0
        self.dropped = 0
        self.cpu_seconds = 0.0  # the writer thread's CPU for cases (what capture costs)
        self._thread = threading.Thread(target=self._run, name="case-writer", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: VoiceSettings) -> CaseRecorder | None:
        c = settings.capture
        if not c.enabled:
            return None
        store = CaseStore(settings.cases_dir, max_cases=c.max_cases, max_age_days=c.max_age_days)
        return cls(store, c, settings)

    def offer(self, record: TurnRecord) -> bool:
        """Queue ``record`` if it is a case. Never blocks: a full queue (or one holding
        ``max_queued_audio_s`` of audio) drops it, counted."""
        why = reasons(record, self.capture)
        if not why:
            return False
        record = self._capped(record)
        samples = _samples(record)
        with self._lock:
            if self._queued_audio + samples > self.max_queued_audio:
                return self._drop()
            self._queued_audio += samples
        try:
            self._queue.put_nowait((record, why))
        except queue.Full:
            with self._lock:
                self._queued_audio -= samples
            return self._drop()
        return True

    def _drop(self) -> bool:
        self.dropped += 1
        CASES_DROPPED.labels(why="queue_full").inc()
        return False

    def _capped(self, record: TurnRecord) -> TurnRecord:
        """``record`` with at most ``max_audio`` samples of audio: a copy whose evidence holds
        a copy of the first part, so that the whole turn's audio is not kept alive."""
        audio = record.evidence.audio
        if audio is None or len(audio) <= self.max_audio:
            return record
        full_ms = round(len(audio) * 1000 / pcm.INTERNAL_RATE, 1)
        return replace(
            record,
            extra={**record.extra, "audio_cut_from_ms": full_ms},
            evidence=replace(record.evidence, audio=audio[: self.max_audio].copy()),
        )

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (up to ``timeout``), then stop the thread."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(None, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        since_prune = 0
        stored = self._prune()
        while (item := self._queue.get()) is not None:
            record, why = item
            with self._lock:
                self._queued_audio -= _samples(record)
            started = time.thread_time()
            try:
                case = build_case(
                    record,
                    why,
                    settings=self._settings,
                    keep_audio_with_pii=self.capture.keep_audio_with_pii,
                )
                self.store.write(case)
            except Exception as exc:  # a full disk must not kill the writer
                self.dropped += 1
                CASES_DROPPED.labels(why="write_error").inc()
                log.warning("case for turn %s not written: %s", record.turn_id, exc)
                continue
            finally:
                self.cpu_seconds += time.thread_time() - started
            self.written += 1
            for reason in why:
                CASES_CAPTURED.labels(reason=reason).inc()
            since_prune += 1
            stored += 1
            # Counted, not listed: listing a thousand folders per case would cost the live
            # turns GIL time for nothing.
            if since_prune >= 20 or stored > self.capture.max_cases:
                since_prune = 0
                stored = self._prune()

    def _prune(self) -> int:
        """Apply retention; returns how many cases are stored after it."""
        try:
            self.store.prune()
            return len(self.store.folders())
        except OSError as exc:  # retention runs again after the next writes
            log.warning("case retention failed: %s", exc)
            return 0


# --- export -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    written: int
    skipped: dict[str, int]  # why -> cases


def export(
    store: CaseStore,
    out_dir: Path,
    *,
    reference: Callable[[pcm.Float32Array], str] | None = None,
    only: Sequence[str] = (),
    progress: Callable[[str], None] = lambda _: None,
) -> Exported:
    """Write each case that has audio as ``<case_id>.wav`` + ``<case_id>.txt`` (the reference
    text), the layout :func:`voice.monitoring.evalset.load_set` reads, plus ``cases.jsonl`` saying where
    each came from. The reference is ``reference(audio)`` (a stronger model's transcript, a
    draft for a person to correct) or, without one, the case's own masked transcript.
    ``only``: keep cases with any of these reasons."""
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, int] = {}
    written = 0
    with open(out_dir / "cases.jsonl", "w") as manifest:
        for folder, data in store.cases():
            if only and not set(only) & set(data.get("reasons", [])):
                skipped["reason not asked for"] = skipped.get("reason not asked for", 0) + 1
                continue
            wav = folder / AUDIO_FILE
            if not data.get("audio") or not wav.is_file():
                why = "no audio (personal data)" if data.get("audio_dropped") else "no audio"
                skipped[why] = skipped.get(why, 0) + 1
                continue
            if data.get("audio_cut_from_ms") and reference is None:
                why = "audio cut short (the transcript covers more)"
                skipped[why] = skipped.get(why, 0) + 1
                continue
            samples, rate = pcm.read_wav(wav)
            audio = pcm.resample(samples, rate, pcm.INTERNAL_RATE)
            if len(audio) < pcm.INTERNAL_RATE // 10:  # what an eval set refuses
                skipped["audio under 0.1 s"] = skipped.get("audio under 0.1 s", 0) + 1
                continue
            if reference is not None:
                text, source = mask(reference(audio)).text, "reference model"
            else:
                text, source = data.get("heard") or data.get("transcript") or "", "case transcript"
            name = str(data.get("case_id") or folder.name)
            shutil.copyfile(wav, out_dir / f"{name}.wav")
            (out_dir / f"{name}.txt").write_text(text.strip() + "\n")
            manifest.write(
                json.dumps(
                    {
                        "clip": f"{name}.wav",
                        "reference": text.strip(),
                        "reference_from": source,
                        "transcript": data.get("transcript"),
                        "reasons": data.get("reasons", []),
                        "arm": data.get("arm"),
                        "lineage": data.get("lineage", {}),
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
            written += 1
            progress(f"{name}: {', '.join(data.get('reasons', []))}")
    return Exported(written, skipped)
