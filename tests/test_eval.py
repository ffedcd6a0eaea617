"""`castwork eval`: WER with a real English normalizer, arms, and a real run of the bundled
set through real sessions with tiny.en and base side by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from base.errors import ConfigError
from base.settings import with_overrides
from voice.monitoring import textnorm
from voice.monitoring.evalset import BUNDLED, Prompt, with_noise
from voice.monitoring.evaluate import Arm
from workers.settings import load_settings


@pytest.mark.parametrize(
    ("reference", "hypothesis"),
    [
        (
            "It costs $25 and ships in 3 days.",
            "It costs twenty-five dollars and ships in three days",
        ),
        (
            "Can Dr. Brown see me at 4:30 on Friday?",
            "can doctor brown see me at four thirty on friday",
        ),
        ("Can Dr. Brown see me at 4:30 on Friday?", "Can Dr Brown see me at 4.30 on Friday?"),
        (
            "Is Mr. Lee's shop open until 9 p.m. tonight?",
            "Is Mister Lee's shop open until 9pm tonight?",
        ),
        ("I need 2 tickets.", "I need two tickets!"),
        ("The colour is grey.", "the color is gray"),
        ("What's the capital of France?", "What is the capital of France"),
        ("Hmm, thanks, that was really helpful.", "Thanks. That was really helpful!"),
    ],
)
def test_normalizer_makes_spellings_of_the_same_words_equal(
    reference: str, hypothesis: str
) -> None:
    assert textnorm.word_errors(reference, hypothesis).edits == 0, (
        textnorm.normalize(reference),
        textnorm.normalize(hypothesis),
    )


def test_word_errors_count_each_kind() -> None:
    e = textnorm.word_errors("book a table for two at seven", "look a table for at seven please")
    assert (e.reference_words, e.substitutions, e.deletions, e.insertions) == (7, 1, 1, 1)
    assert e.rate == pytest.approx(3 / 7)
    assert textnorm.word_errors("hello there", "").deletions == 2
    assert textnorm.word_errors("", "").rate == 0.0
    total = textnorm.corpus_errors([("a b c d", "a b c d"), ("e f", "e x")])
    assert total.rate == pytest.approx(1 / 6)  # corpus WER, not the mean of per-clip WERs


def test_arm_specs() -> None:
    assert Arm.parse("base:asr.model=base") == Arm("base", {"asr.model": "base"})
    arm = Arm.parse("fast:vad.silence_duration_ms=300;llm.max_tokens=40")
    assert arm.overrides == {"vad.silence_duration_ms": 300, "llm.max_tokens": 40}
    with pytest.raises(ConfigError, match="give a name"):
        Arm.parse(":asr.model=base")
    with pytest.raises(ConfigError, match="setting=value"):
        Arm.parse("x:asr.model")
    s = load_settings()
    assert with_overrides(s, {"asr.model": "base"}).asr.model == "base"
    with pytest.raises(ConfigError, match=r"asr\.modle"):
        with_overrides(s, {"asr.modle": "base"})
    with pytest.raises(ConfigError, match=r"vad\.silence_duration_ms"):
        with_overrides(s, {"vad.silence_duration_ms": "soon"})


def test_noise_is_mixed_at_the_asked_ratio() -> None:
    import numpy as np

    t = np.arange(16_000) / 16_000
    speech = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    noisy = with_noise(speech, 5.0, seed=1)
    noise = noisy - speech
    snr = 10 * np.log10(np.mean(speech**2) / np.mean(noise**2))
    assert snr == pytest.approx(5.0, abs=0.3)
    assert np.array_equal(noisy, with_noise(speech, 5.0, seed=1))  # rebuilt bit for bit
    assert any(p.snr_db for p in BUNDLED) and all(isinstance(p, Prompt) for p in BUNDLED)


@pytest.mark.models
def test_eval_compares_tiny_and_base_on_the_bundled_set(tmp_path: Path) -> None:
    """The command a developer runs, on the bundled set: both arms through real sessions,
    WER and latency side by side, and a report whose figures follow from its own clips."""
    out = tmp_path / "report"
    # Two clips: one clean, one over noise (each clip costs both arms a real-time session).
    pick = [0, 16]
    set_dir = tmp_path / "set"
    proc = subprocess.run(
        [sys.executable, "-c", _BUILD_SUBSET, str(set_dir), json.dumps(pick)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [
            sys.executable, "-m", "castwork.cli", "eval", str(set_dir),
            "--asr", "tiny.en", "base", "--warmup", "0", "--out", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        # Answers are played back in real time: short ones keep each session a few seconds.
        env={**os.environ, "CASTWORK_LLM__MAX_TOKENS": "16"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    header = table.splitlines()[0].split()
    assert header == ["tiny.en", "base"]
    for row in (
        "ASR WER",
        "reply intelligibility",
        "voice-to-voice P50 / P95 ms (server)",
        "LLM first token",
    ):
        assert row in table

    report = json.loads((out / "report.json").read_text())
    arms = {a["arm"]: a for a in report["arms"]}
    assert set(arms) == {"tiny.en", "base"}
    assert arms["tiny.en"]["models"]["asr"] == "whisper:tiny.en"
    assert arms["base"]["models"]["asr"] == "whisper:base"
    for arm in arms.values():
        clips = arm["per_clip"]
        assert len(clips) == 2
        # The arm's WER is the corpus WER of its own per-clip transcripts.
        errors = textnorm.corpus_errors([(c["reference"], c["transcript"] or "") for c in clips])
        assert arm["asr"]["reference_words"] == errors.reference_words
        assert arm["asr"]["wer"] == pytest.approx(round(errors.rate, 4))
        assert arm["asr"]["wer"] < 0.35  # Piper's clear voice: both models mostly right
        # Every clip became one spoken turn with a measured voice-to-voice.
        assert [c["record"]["outcome"] for c in clips] == ["spoken"] * 2
        assert arm["latency_ms"]["voice_to_voice"]["count"] == 2
        assert 100 < arm["latency_ms"]["voice_to_voice"]["p50"] < 10_000
        # The replies were heard back by the judge and mostly understood.
        assert all(c["reply"] and c["reply_heard"] is not None for c in clips)
        assert arm["reply_intelligibility"]["wer"] < 0.5
        assert (out / arm["arm"] / "replies").is_dir()
    # base against tiny.en on the same clips, each difference with its interval and a verdict.
    (diff,) = report["differences"]
    assert diff["arm"] == "base" and diff["baseline"] == "tiny.en"
    wer_change = arms["base"]["asr"]["wer"] - arms["tiny.en"]["asr"]["wer"]
    assert diff["wer_change"] == pytest.approx(wer_change, abs=1e-3)
    lo, hi = diff["wer_ci"]
    assert lo <= diff["wer_change"] <= hi
    assert "differences from the first arm" in table
    assert "base vs tiny.en: ASR WER" in table and ("within noise" in table or "real" in table)


_BUILD_SUBSET = """
import json, sys
from pathlib import Path
from voice.monitoring import evalset
from workers.settings import load_settings
from voice.engines.factory import build_tts
pick = json.loads(sys.argv[2])
evalset.build(build_tts(load_settings()), Path(sys.argv[1]), tuple(evalset.BUNDLED[i] for i in pick))
"""


def test_bad_sets_and_arguments_fail_before_any_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from castwork.cli import main
    from voice import audio as pcm

    good = pcm.wav_bytes(np.zeros(8000, np.float32), 16_000)
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err

    no_text = tmp_path / "no_text"
    no_text.mkdir()
    (no_text / "a.wav").write_bytes(good)
    assert main(["eval", str(no_text)]) == 2
    assert "a.wav: no reference text (a.txt)" in capsys.readouterr().err

    for name, data in [
        ("corrupt", b"RIFF\x00\x00garbage"),
        ("truncated", good[:30]),
        ("short", good[:100]),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "a.wav").write_bytes(data)
        (folder / "a.txt").write_text("hello")
        assert main(["eval", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("castwork eval: a.wav: ") and "Traceback" not in err, err

    ok = tmp_path / "ok"
    ok.mkdir()
    (ok / "a.wav").write_bytes(good)
    (ok / "a.txt").write_text("hello")
    assert main(["eval", str(ok), "--judge", str(tmp_path / "no-such-model")]) == 1
    assert "no-such-model" in capsys.readouterr().err
    assert main(["eval", str(ok), "--arm", "x:asr.modle=base"]) == 1
    assert "asr.modle" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert main(["eval", str(ok), "--out", str(blocked / "report")]) == 2
    assert "cannot write the report" in capsys.readouterr().err
    for flag, value in [("--limit", "0"), ("--warmup", "-1"), ("--limit", "many")]:
        with pytest.raises(SystemExit) as exit_:
            main(["eval", str(ok), flag, value])
        assert exit_.value.code == 2
        capsys.readouterr()


def test_non_finite_times_are_refused() -> None:
    from voice.monitoring import turnstats

    for text in ("nan", "inf", "-inf"):
        with pytest.raises(ValueError, match="not a finite number"):
            turnstats.parse_time(text, now=0.0)
