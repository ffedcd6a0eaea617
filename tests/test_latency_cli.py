"""`castwork latency` over the turn log of a real `bench/voice_latency.py` run.

``tests/data/voice-latency-turns.jsonl`` is that log, unedited (1 session, then 4 concurrent
sessions, 6 turns each, on the embedded models; see the README). Every figure the command
prints is checked against numpy over the same lines, read here independently.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from castwork.cli import main
from voice.monitoring import turnstats
from voice.monitoring.turnlog_reader import TurnLogTail, log_files

REAL_LOG = Path(__file__).resolve().parent / "data" / "voice-latency-turns.jsonl"
STAGES = ("endpointing", "asr", "llm_first_token", "first_piece", "tts_first_audio", "send")


def lines() -> list[dict[str, Any]]:
    return [json.loads(line) for line in REAL_LOG.read_text().splitlines() if line.strip()]


def direct(rows: list[dict[str, Any]], metric: str) -> dict[str, float]:
    values = [r["durations_ms"][metric] for r in rows if metric in r["durations_ms"]]
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"count": len(values), "p50": p50, "p95": p95, "p99": p99, "max": max(values)}


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    code = main(["latency", *args, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def write(path: Path, rows: list[dict[str, Any]], extra: list[bytes] = ()) -> Path:  # type: ignore[assignment]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows) + b"".join(extra)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def test_the_real_log_has_what_the_tests_need() -> None:
    rows = lines()
    assert len(rows) >= 24
    assert len({r["session_id"] for r in rows}) >= 5
    assert all("voice_to_voice" in r["durations_ms"] for r in rows if r["outcome"] == "spoken")


def test_percentiles_match_a_direct_computation(capsys: pytest.CaptureFixture[str]) -> None:
    rows = lines()
    code, report, err = run_json(capsys, str(REAL_LOG))
    assert code == 0 and err == "" and report["bad_lines"] == 0
    assert report["turns"] == len(rows)
    for metric in ("voice_to_voice", *STAGES):
        want = direct(rows, metric)
        got = report["overall"]["stats"][metric]
        assert got["count"] == want["count"]
        for q in ("p50", "p95", "p99", "max"):
            assert got[q] == pytest.approx(want[q], abs=1e-9), (metric, q)
    # Grouped by outcome: each group's voice-to-voice over its own lines.
    for group in report["groups"]["outcome"]:
        mine = [r for r in rows if r["outcome"] == group["name"]]
        assert group["turns"] == len(mine)
        if "voice_to_voice" in group["stats"]:
            want = direct(mine, "voice_to_voice")
            assert group["stats"]["voice_to_voice"]["p95"] == pytest.approx(want["p95"])
    # Recovery rates: turns that took the branch / all turns.
    for code_name, (taken, rate) in report["overall"]["recovery"].items():
        n = sum(code_name in r["recovery"] for r in rows)
        assert taken == n and rate == pytest.approx(n / len(rows))


def test_text_table_prints_the_same_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["latency", str(REAL_LOG)]) == 0
    out = capsys.readouterr().out
    want = direct(lines(), "voice_to_voice")
    row = next(line for line in out.splitlines() if line.startswith("voice-to-voice"))
    assert row.split()[1:] == [
        str(want["count"]),
        *(f"{want[q]:.0f}" for q in ("p50", "p95", "p99", "max")),
    ]
    assert "## by model" in out and "LLM first token" in out


def test_rotated_gzipped_directory_with_bad_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = lines()
    third = len(rows) // 3
    logs = tmp_path / "logs"
    logs.mkdir()
    bad = [
        b"this is not json\n",
        b'{"ts": 1, "session_id": "s"}\n',  # a record without its fields
        b"[1, 2, 3]\n",
        b"\xff\xfe not utf-8\n",
        b'{"ts": "yesterday", "session_id": "s", "turn_id": "t", "outcome": "spoken"}\n',
        b'{"ts": 1, "session_id": "s", "turn_id": "t", "outcome": "spoken", "durations_ms": {"asr": -5}}\n',
        b'{"half a line',  # the writer died mid-line
    ]
    write(logs / "turns.jsonl.2.gz", rows[:third])
    write(logs / "turns.jsonl.1", rows[third : 2 * third], bad[:4])
    write(logs / "turns.jsonl", rows[2 * third :], bad[4:])
    (logs / "server.log").write_text("not a turn log: ignored\n")
    assert [p.name for p in log_files(logs)] == ["turns.jsonl.2.gz", "turns.jsonl.1", "turns.jsonl"]

    code, report, err = run_json(capsys, str(logs))
    assert code == 0
    assert report["turns"] == len(rows) and report["bad_lines"] == len(bad)
    assert f"skipped {len(bad)} unreadable line(s)" in err
    assert "turns.jsonl.1:" in err and "not JSON" in err
    want = direct(rows, "voice_to_voice")
    assert report["overall"]["stats"]["voice_to_voice"]["p95"] == pytest.approx(want["p95"])


def test_a_truncated_gzip_keeps_what_it_could_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = lines()
    whole = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    broken = tmp_path / "turns.jsonl.1.gz"
    broken.write_bytes(whole[: len(whole) * 2 // 3])
    code, report, err = run_json(capsys, str(broken))
    assert code == 0
    assert 0 < report["turns"] < len(rows)
    assert "file unreadable from here on" in err


def test_stdin(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "castwork.cli", "latency", "-", "--json"],
        input=REAL_LOG.read_bytes() + b"garbage\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["turns"] == len(lines()) and report["bad_lines"] == 1
    assert b"<stdin>:" in proc.stderr


def test_filters(capsys: pytest.CaptureFixture[str]) -> None:
    rows = lines()
    session = rows[-1]["session_id"]
    _, report, _ = run_json(capsys, str(REAL_LOG), "--session", session)
    assert report["turns"] == sum(r["session_id"] == session for r in rows)

    ts = sorted(r["ts"] for r in rows)
    middle = ts[len(ts) // 2]
    _, early, _ = run_json(capsys, str(REAL_LOG), "--until", str(middle))
    _, late, _ = run_json(capsys, str(REAL_LOG), "--since", str(middle))
    assert early["turns"] + late["turns"] == len(rows)
    assert early["turns"] == sum(t < middle for t in ts)

    llm = rows[0]["models"]["llm"]
    _, by_model, _ = run_json(capsys, str(REAL_LOG), "--model", llm, "--by", "llm,key")
    assert by_model["turns"] == sum(r["models"].get("llm") == llm for r in rows)
    assert [g["name"] for g in by_model["groups"]["llm"]] == [llm]
    key = rows[0]["key"]
    _, by_key, _ = run_json(capsys, str(REAL_LOG), "--key", key)
    assert by_key["turns"] == sum(r["key"] == key for r in rows)
    _, none, _ = run_json(capsys, str(REAL_LOG), "--key", "key-00000000")
    assert none["turns"] == 0
    _, spoken, _ = run_json(capsys, str(REAL_LOG), "--outcome", "spoken")
    assert spoken["turns"] == sum(r["outcome"] == "spoken" for r in rows)


def test_bad_arguments_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["latency", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["latency", str(REAL_LOG), "--since", "last tuesday"]) == 2
    assert "bad time 'last tuesday'" in capsys.readouterr().err
    assert main(["latency", str(REAL_LOG), "--by", "colour"]) == 2
    assert "--by colour" in capsys.readouterr().err
    assert main(["latency", str(REAL_LOG), "--compare", str(REAL_LOG), "yesterday"]) == 2
    assert "neither a log path nor a START..END window" in capsys.readouterr().err


# --- --compare ----------------------------------------------------------------------------


def slower(rows: list[dict[str, Any]], stage: str, factor: float) -> list[dict[str, Any]]:
    """The same turns with one stage (and so voice-to-voice) ``factor`` times longer."""
    out = []
    for r in rows:
        r = json.loads(json.dumps(r))
        d = r["durations_ms"]
        if stage in d:
            extra = d[stage] * (factor - 1)
            d[stage] += extra
            if "voice_to_voice" in d:
                d["voice_to_voice"] += extra
        out.append(r)
    return out


def test_compare_passes_an_unchanged_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    again = write(tmp_path / "again.jsonl", lines())
    assert main(["latency", "--compare", str(REAL_LOG), str(again)]) == 0
    out = capsys.readouterr().out
    assert "no regression" in out and "REGRESSION" not in out


def test_compare_flags_a_planted_regression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = lines()
    planted = write(tmp_path / "slow-llm.jsonl", slower(rows, "llm_first_token", 1.6))
    code = main(["latency", "--compare", str(REAL_LOG), str(planted), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    flagged = {d["metric"] for d in report["metrics"] if d["regression"]}
    assert "llm_first_token" in flagged
    assert flagged <= {"llm_first_token", "voice_to_voice"}  # nothing else moved
    llm = next(d for d in report["metrics"] if d["metric"] == "llm_first_token")
    want = direct(slower(rows, "llm_first_token", 1.6), "llm_first_token")["p95"]
    assert llm["b"]["p95"] == pytest.approx(want)
    assert llm["p95_change_ms"] == pytest.approx(want - direct(rows, "llm_first_token")["p95"])

    # The text form names it, and a looser threshold lets it through.
    assert main(["latency", "--compare", str(REAL_LOG), str(planted)]) == 1
    assert "REGRESSION" in capsys.readouterr().out
    assert main(["latency", "--compare", str(REAL_LOG), str(planted), "--threshold", "500"]) == 0
    capsys.readouterr()


def test_compare_flags_a_rise_in_a_recovery_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = lines()
    worse = json.loads(json.dumps(rows))
    for r in worse[: len(worse) // 4]:
        r["recovery"] = [*r["recovery"], "llm_fallback"]
    b = write(tmp_path / "fallbacks.jsonl", worse)
    assert main(["latency", "--compare", str(REAL_LOG), str(b)]) == 1
    assert "recovery llm_fallback" in capsys.readouterr().out


def test_compare_two_time_windows_of_one_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = lines()
    hour = 3600.0
    base_ts = 1_800_000_000.0
    first = [{**r, "ts": base_ts + i} for i, r in enumerate(rows)]
    second = [{**r, "ts": base_ts + hour + i} for i, r in enumerate(slower(rows, "asr", 3.0))]
    log = write(tmp_path / "turns.jsonl", first + second)
    a = f"{base_ts}..{base_ts + hour}"
    b = f"{base_ts + hour}.."
    code = main(["latency", str(log), "--compare", a, b, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["a_turns"] == report["b_turns"] == len(rows)
    assert "asr" in report["regressions"]
    assert code == 1


def test_compare_does_not_judge_a_handful_of_turns() -> None:
    rows = [turnstats.Turn.model_validate(r) for r in lines()[:4]]
    slow = [turnstats.Turn.model_validate(r) for r in slower(lines()[:4], "send", 10)]
    c = turnstats.compare(turnstats.summarize(rows), turnstats.summarize(slow), min_count=10)
    assert c.regressions == []
    assert "not judged" in turnstats.format_comparison(c)


# --- pieces -------------------------------------------------------------------------------


def test_time_forms() -> None:
    now = 1_800_000_000.0
    assert turnstats.parse_time("15m", now=now) == now - 900
    assert turnstats.parse_time("2h", now=now) == now - 7200
    assert turnstats.parse_time("1700000000", now=now) == 1_700_000_000
    assert turnstats.parse_time("2026-11-21T10:00:00+00:00", now=now) == 1_795_255_200
    assert turnstats.parse_window("2h..1h", now=now) == (now - 7200, now - 3600)
    assert turnstats.parse_window("1h..", now=now) == (now - 3600, None)
    with pytest.raises(ValueError, match="ends before it starts"):
        turnstats.parse_window("1h..2h", now=now)
    with pytest.raises(ValueError, match=r"START\.\.END"):
        turnstats.parse_window("1h", now=now)


def test_tail_reads_only_new_lines_and_follows_rotation(tmp_path: Path) -> None:
    rows = lines()
    log = tmp_path / "turns.jsonl"
    tail = TurnLogTail(log, keep_s=1e12)
    assert tail.refresh() == []  # no log yet
    write(log, rows[:5], [b'{"ts": 1, "half'])
    assert len(tail.refresh()) == 5  # the half line waits
    with log.open("ab") as f:
        f.write(b'": 2}\n')  # completes a line that is not a record
        f.write(b"".join(json.dumps(r).encode() + b"\n" for r in rows[5:8]))
    assert len(tail.refresh()) == 8 and tail.bad == 1
    log.rename(tmp_path / "turns.jsonl.1")  # rotated: a new live file
    write(log, rows[8:10])
    assert [t.turn_id for t in tail.refresh()] == sorted(
        [r["turn_id"] for r in rows[:10]],
        key=lambda i: next(r["ts"] for r in rows if r["turn_id"] == i),
    )


def test_tail_drops_old_turns(tmp_path: Path) -> None:
    now = time.time()
    rows = [{**r, "ts": now - 10_000 + i} for i, r in enumerate(lines()[:3])]
    rows += [{**r, "ts": now + i} for i, r in enumerate(lines()[3:6])]
    write(tmp_path / "turns.jsonl", rows)
    tail = TurnLogTail(tmp_path / "turns.jsonl", keep_s=3600)
    assert len(tail.refresh()) == 3


def test_default_is_the_configured_log_and_its_rotations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = lines()
    write(tmp_path / "turns.jsonl.1.gz", rows[:10])
    write(tmp_path / "turns.jsonl", rows[10:])
    write(tmp_path / "other.jsonl", rows[:3])  # another log in the same folder: not read
    monkeypatch.setenv("CASTWORK_LOG__TURN_LOG", str(tmp_path / "turns.jsonl"))
    code, report, _ = run_json(capsys)
    assert code == 0 and report["turns"] == len(rows)
    monkeypatch.setenv("CASTWORK_LOG__TURN_LOG", str(tmp_path / "none" / "turns.jsonl"))
    assert main(["latency"]) == 2
    assert "no turn log yet" in capsys.readouterr().err
