from __future__ import annotations

from pathlib import Path

import pytest

from castwork.doctor import report, run_checks
from workers.settings import Settings, load_settings

pytestmark = pytest.mark.models


def test_doctor_loads_and_smoke_tests_every_engine(redis_url: str) -> None:
    # The text end-of-turn model is off by default: on here, so it is checked too.
    settings = load_settings(broker={"url": redis_url}, vad={"text_turn_model": "smollm2-135m"})
    results = run_checks(settings)
    text = report(results)
    assert all(r.ok for r in results), text
    names = {r.name.split(" ")[0].split("[")[0] for r in results}
    assert names == {"vad", "asr", "turn", "llm", "tts", "ffmpeg", "broker"}
    assert [r.name for r in results if r.name.startswith("turn")] == ["turn", "turn text"]
    assert all(r.load_s is not None and r.load_s >= 0 for r in results)
    assert "failed" in text.splitlines()[-1] and text.splitlines()[-1].endswith("0 failed")


def test_doctor_reports_a_dead_broker(settings: Settings) -> None:
    bad = load_settings(broker={"url": "redis://127.0.0.1:1/0"})
    results = run_checks(bad, only={"broker"})
    assert len(results) == 1 and not results[0].ok and "does not answer" in results[0].smoke


def test_doctor_says_whether_the_broker_persists_and_hides_its_password(tmp_path: Path) -> None:
    from tests.test_serve import redis_server

    with redis_server(tmp_path, "--requirepass", "zz-secret", "--appendonly", "no") as port:
        url = f"redis://:zz-secret@127.0.0.1:{port}/0"
        (result,) = run_checks(load_settings(broker={"url": url}), only={"broker"})
    assert result.ok and "keeps no append-only file" in result.smoke
    text = report([result])
    assert f"redis://:***@127.0.0.1:{port}/0" in text and "zz-secret" not in text
