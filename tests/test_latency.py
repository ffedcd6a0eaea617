from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from base.metrics import REGISTRY, metrics_text
from tests.mounts import tmpfs
from voice.core.record import STAGES, TurnRecord
from voice.monitoring import turnlog_reader
from voice.runtime.latency import TurnLog


def _record(turn_id: str = "t1", outcome: str = "spoken") -> TurnRecord:
    record = TurnRecord(
        session_id="s1",
        turn_id=turn_id,
        models={"asr": "whisper:tiny.en", "llm": "gguf:smollm2-135m", "tts": "piper:joe"},
    )
    marks = (10.0, 11.0, 11.5, 11.45, 11.7, 11.8, 11.95, 11.96, 13.0)
    # The stages every turn passes (the tool marks come only on turns that call a tool).
    for name, at in zip(STAGES[: len(marks)], marks, strict=True):
        record.mark(name, at)
    record.add_recovery("asr_retry")
    record.outcome = outcome
    record.extra["audio_ms_sent"] = 1040
    return record


def test_durations_from_marks() -> None:
    durations = _record().durations()
    assert durations == pytest.approx(
        {
            "endpointing": 500.0,
            "asr": 0.0,  # speculative ASR finished 50 ms before the endpoint: clamped
            "llm_first_token": 200.0,  # from the later of endpoint and asr_final
            "first_piece": 100.0,
            "tts_first_audio": 150.0,
            "send": 10.0,
            "voice_to_voice": 960.0,
        }
    )


def test_a_speculative_answer_ahead_of_the_endpoint_costs_only_what_comes_after_it(
    tmp_path: Path,
) -> None:
    """Answered in the pause: the first token came before the endpoint. No stage is negative
    (such a record was dropped by the reader as broken, taking the fastest turns out of the
    figures), and the stages still add up to voice-to-voice."""
    record = TurnRecord(session_id="s", turn_id="t")
    for mark, at in [
        ("speech_end", 10.0),
        ("asr_final", 10.3),
        ("llm_first_token", 10.45),
        ("endpoint", 10.5),
        ("first_piece", 10.55),
        ("tts_first_audio", 10.65),
        ("first_audio_sent", 10.66),
    ]:
        record.mark(mark, at)
    durations = record.durations()
    assert durations == pytest.approx(
        {
            "endpointing": 500.0,
            "asr": 0.0,
            "llm_first_token": 0.0,
            "first_piece": 50.0,  # from the endpoint, not from the earlier first token
            "tts_first_audio": 100.0,
            "send": 10.0,
            "voice_to_voice": 660.0,
        }
    )
    stages = ("endpointing", "asr", "llm_first_token", "first_piece", "tts_first_audio", "send")
    assert sum(durations[s] for s in stages) == pytest.approx(durations["voice_to_voice"])
    log = TurnLog(tmp_path / "turns.jsonl")
    log.write(record)
    log.close()
    read = turnlog_reader.read([tmp_path / "turns.jsonl"])
    assert len(read.turns) == 1 and read.bad == []


def test_durations_only_for_marks_that_exist() -> None:
    record = TurnRecord(session_id="s", turn_id="t")
    record.mark("speech_end", 1.0)
    record.mark("endpoint", 1.25)
    record.mark("asr_final", 1.5)
    assert record.durations() == pytest.approx({"endpointing": 250.0, "asr": 250.0})
    assert TurnRecord(session_id="s", turn_id="t").durations() == {}


def test_first_mark_wins() -> None:
    record = TurnRecord(session_id="s", turn_id="t")
    record.mark("tts_first_audio", 5.0)
    record.mark("tts_first_audio", 9.0)
    record.mark("speech_end")  # now, from the monotonic clock
    assert record.marks["tts_first_audio"] == 5.0
    assert record.marks["speech_end"] > 0


def test_json_line_written_and_parseable(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "turns.jsonl"
    log = TurnLog(path)
    log.write(_record("t1"))
    log.write(_record("t2", outcome="cancelled"))
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["turn_id"] for line in lines] == ["t1", "t2"]
    first = lines[0]
    assert set(first) == {
        "ts",
        "session_id",
        "turn_id",
        "key",
        "arm",
        "outcome",
        "recovery",
        "models",
        "durations_ms",
        "marks_ms",
        "extra",
        "lineage",
    }
    assert first["outcome"] == "spoken" and first["recovery"] == ["asr_retry"]
    assert first["durations_ms"]["voice_to_voice"] == 960.0
    assert first["marks_ms"]["speech_start"] == 0.0
    assert first["marks_ms"]["first_audio_sent"] == 1960.0
    assert first["extra"] == {"audio_ms_sent": 1040}
    assert first["models"]["tts"] == "piper:joe"


def test_rotation_keeps_at_most_backups(tmp_path: Path) -> None:
    path = tmp_path / "turns.jsonl"
    log = TurnLog(path, max_bytes=2000, backups=3)
    for i in range(50):
        log.write(_record(f"t{i}"))
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["turns.jsonl", "turns.jsonl.1", "turns.jsonl.2", "turns.jsonl.3"]
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())
    # Newest in the live file, older ones shifted up, every line whole.
    newest = [json.loads(line)["turn_id"] for line in path.read_text().splitlines()]
    older = [
        json.loads(x)["turn_id"] for x in (tmp_path / "turns.jsonl.1").read_text().splitlines()
    ]
    assert newest[-1] == "t49"
    assert int(older[-1][1:]) + 1 == int(newest[0][1:])


def test_reopening_appends(tmp_path: Path) -> None:
    path = tmp_path / "turns.jsonl"
    for turn in ("a", "b"):
        log = TurnLog(path)
        log.write(_record(turn))
        log.close()
    assert len(path.read_text().splitlines()) == 2


def test_metrics_after_writes() -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = sample("castwork_voice_to_voice_seconds_count", outcome="text_only")
    retries = sample("castwork_turn_recovery_total", code="asr_retry")
    TurnLog(None).write(_record("m1", outcome="text_only"))
    assert sample("castwork_voice_to_voice_seconds_count", outcome="text_only") == before + 1
    assert sample("castwork_turn_recovery_total", code="asr_retry") == retries + 1
    text = metrics_text().decode()
    assert 'castwork_turn_stage_seconds_bucket{le="0.2",stage="llm_first_token"}' in text
    assert 'castwork_turn_stage_seconds_sum{stage="voice_to_voice"}' in text
    assert 'castwork_turns_total{outcome="text_only"}' in text
    assert "castwork_sessions_active 0.0" in text


def test_parent_is_a_file_does_not_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "not_a_dir").write_text("x")
    log = TurnLog(tmp_path / "not_a_dir" / "turns.jsonl")
    with caplog.at_level(logging.WARNING, logger="voice.runtime.latency"):
        log.write(_record("t1"))
        log.write(_record("t2"))
    log.close()
    assert len([r for r in caplog.records if "not written" in r.getMessage()]) == 1


@pytest.mark.skipif(not os.access("/dev/full", os.W_OK), reason="no /dev/full")
def test_full_disk_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    log = TurnLog(Path("/dev/full"))  # every write fails with ENOSPC
    with caplog.at_level(logging.WARNING, logger="voice.runtime.latency"):
        for i in range(3):
            log.write(_record(f"t{i}"))
    log.close()
    warnings = [r for r in caplog.records if "No space left" in r.getMessage()]
    assert len(warnings) == 1


@contextmanager
def _read_only(folder: Path) -> Iterator[Path]:
    """``folder``, unwritable: a read-only mount for root (root writes through a chmod 0500
    directory), the directory's mode for anyone else (who may not mount)."""
    if os.geteuid() == 0:
        with tmpfs(folder, "ro"):
            yield folder
        return
    folder.mkdir()
    folder.chmod(0o500)
    try:
        yield folder
    finally:
        folder.chmod(0o700)


def test_read_only_directory_does_not_raise(tmp_path: Path) -> None:
    with _read_only(tmp_path / "logs") as folder:
        log = TurnLog(folder / "turns.jsonl")
        log.write(_record())
        log.close()
        assert not (folder / "turns.jsonl").exists()


def test_recovers_on_a_fresh_line_after_a_failed_write(tmp_path: Path) -> None:
    path = tmp_path / "turns.jsonl"
    path.write_text('{"half a line')  # what a write cut short by a full disk leaves
    log = TurnLog(path)
    log._failed = True
    log.write(_record("t1"))
    log.close()
    lines = path.read_text().splitlines()
    assert lines[0] == '{"half a line' and json.loads(lines[1])["turn_id"] == "t1"


def test_tool_stages_from_marks() -> None:
    record = TurnRecord(session_id="s1", turn_id="t1")
    for name, at in (
        ("speech_end", 10.0),
        ("endpoint", 10.5),
        ("asr_final", 10.6),
        ("llm_first_token", 10.8),
        ("tool_decided", 10.8),
        ("tool_call_sent", 10.9),
        ("tool_result", 11.4),
    ):
        record.mark(name, at)
    d = record.durations()
    assert round(d["tool_decision"]) == 200 and round(d["tool_call"]) == 500
