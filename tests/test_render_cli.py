"""`castwork render JOB.yaml --out DIR`: no broker, a progress bar; Korean copy end to end."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from media import ffmpeg
from media.folder import JobPaths
from media.pipeline import NarrationInfo, plan_for
from media.templates import FRAME_SIZES, get_template
from tests.ad_helpers import ROOT, made_font, made_track, ocr, photo_bytes
from tests.test_clips import make_clip
from workers.settings import load_settings

pytestmark = pytest.mark.models


def test_render_korean_job_from_yaml(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(photo_bytes("chelsea"))
    make_clip(tmp_path / "b.mov", seconds=2.0)  # a video clip among the photos
    job = {
        "template": "news",
        "headline": "신메뉴 출시 기념 전 품목 할인 행사를 진행합니다",
        "price": "4,500원",
        "cta": "지금 주문하기",
        "store": "블루도어 카페",
        "images": ["a.jpg", "b.mov"],
        "brand": {"primary": "#F1FAEE", "accent": "#2A9D8F"},
        "formats": ["1:1"],
    }
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(job, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "render"
    proc = subprocess.run(
        [sys.executable, "-m", "castwork.cli", "render", str(job_file), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finalize" in proc.stderr and "100%" in proc.stderr  # the progress bar ran to the end
    manifest = json.loads((out / "out" / "manifest.json").read_text())
    assert manifest["language"] == "ko"
    assert manifest["narration"]["engine"].startswith("espeak")
    (item,) = manifest["outputs"]
    video = out / "out" / item["video"]
    probe = ffmpeg.probe(video)
    assert (probe.width, probe.height, probe.audio_codec) == (1080, 1080, "aac")
    frame_path = tmp_path / "end.png"
    ffmpeg.frame(video, frame_path, at_s=probe.duration - 0.2)
    frame = Image.open(frame_path).convert("RGB")
    box = get_template("news").layouts["1:1"].end_card["headline"].pixels(*FRAME_SIZES["1:1"])
    x, y, w, h = box
    # The long Korean headline wrapped (and shrank) inside its box: its words are all there.
    # (Not 출시: Tesseract reads its 출 as 줄 in some encodes of this same frame.)
    words = ("신메뉴", "기념", "할인")
    crop = frame.crop((x, y, x + w, y + h))
    read = ocr(crop, lang="kor", until=lambda t: all(w in t.replace(" ", "") for w in words))
    for word in words:
        assert word in read.replace(" ", ""), read
    # In the brand's colours: the light primary behind the (light) end card, the accent pill
    # behind the price.
    pixels = np.asarray(frame, dtype=int)
    assert np.abs(pixels[5, 5] - [0xF1, 0xFA, 0xEE]).max() < 12, pixels[5, 5]
    px, py, pw, ph = (
        get_template("news").layouts["1:1"].end_card["price"].pixels(*FRAME_SIZES["1:1"])
    )
    pill = pixels[py : py + ph, px : px + pw]
    near = (np.abs(pill - [0x2A, 0x9D, 0x8F]).max(axis=2) < 16).mean()
    assert near > 0.15, near
    # The clip is the second scene and plays there (two moments of it differ), muted; the
    # quality report measured the file: nothing black, frozen or loud, not flagged.
    paths = JobPaths(out)
    spec = paths.read_spec(paths.spec_file)
    info = NarrationInfo.load(paths.narration_file)
    plan = plan_for(spec, paths, load_settings(), "1:1", info)
    scene = plan.clips[1]
    assert scene.kind == "video"
    stills = []
    for k, at in enumerate((0.6, 1.0)):
        ffmpeg.frame(video, tmp_path / f"clip{k}.png", at_s=scene.start + at)
        stills.append(np.asarray(Image.open(tmp_path / f"clip{k}.png").convert("L"), dtype=float))
    assert np.abs(stills[0] - stills[1]).mean() > 2.0
    quality = manifest["quality"]
    status = {c["name"]: c["status"] for c in quality["outputs"]["1:1"]}
    assert not quality["flagged"] and status["frozen_frames"] == "pass", quality
    assert status["loudness"] == "pass" and status["black_frames"] == "pass", quality


def test_render_refuses_a_bad_job_file_clearly(tmp_path: Path) -> None:
    job_file = tmp_path / "job.yaml"
    job_file.write_text("headline: Hi\nimages: []\n")
    proc = subprocess.run(
        [sys.executable, "-m", "castwork.cli", "render", str(job_file), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "images: " in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("job", "extra", "message"),
    [
        ("headline: Hi\nimages: [missing.jpg]\n", [], "images: no such file"),
        ("headline: Hi\nimages: [a.jpg]\n", ["--formats", "4:3"], "formats.0: "),
    ],
)
def test_render_bad_paths_and_formats_are_clear(
    tmp_path: Path, job: str, extra: list[str], message: str
) -> None:
    (tmp_path / "a.jpg").write_bytes(photo_bytes("coffee"))
    job_file = tmp_path / "job.yaml"
    job_file.write_text(job)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "castwork.cli",
            "render",
            str(job_file),
            "--out",
            str(tmp_path / "o"),
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr


def _seconds(x: np.ndarray, start: float, end: float) -> np.ndarray:
    return x[int(start * 48_000) : int(end * 48_000)]


def _line_db(x: np.ndarray, hz: float) -> float:
    """Amplitude (dB) of a steady tone at ``hz`` in ``x``, per sample: comparable across lengths."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) / len(x)
    freqs = np.fft.rfftfreq(len(x), 1 / 48_000)
    return float(20 * np.log10(spectrum[np.abs(freqs - hz) < 3].max()))


def _tone_db(x: np.ndarray, hz: float) -> float:
    """Level (dB) of the spectral line at ``hz`` over its neighbourhood's median: how clearly a
    steady tone stands out of whatever else plays (speech is broadband, a tone is a line)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / 48_000)
    line = spectrum[np.abs(freqs - hz) < 3].max()
    around = spectrum[(np.abs(freqs - hz) > 30) & (np.abs(freqs - hz) < 200)]
    return float(20 * np.log10(line / np.median(around)))


def test_render_a_job_in_its_brand_font_over_its_brand_music(tmp_path: Path) -> None:
    for name in ("coffee", "chelsea", "rocket"):  # three scenes: music plays on after the voice
        (tmp_path / f"{name}.jpg").write_bytes(photo_bytes(name, size=800))
    (tmp_path / "block.ttf").write_bytes(made_font(string.printable.strip() + "’…–"))
    made_track(tmp_path / "jingle.mp3", 6.0, hz=415.3, volume_db=0.0)  # G#: no house key has it
    job = {
        "template": "showcase",
        "headline": "Handmade ceramic mugs",
        "price": "$24",
        "store": "Clay and Co",
        "images": ["coffee.jpg", "chelsea.jpg", "rocket.jpg"],
        "font": "block.ttf",
        "music_track": "jingle.mp3",
        "formats": ["1:1"],
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job), encoding="utf-8")
    out = tmp_path / "render"
    proc = subprocess.run(
        [sys.executable, "-m", "castwork.cli", "render", "job.yaml", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((out / "out" / "manifest.json").read_text())
    assert manifest["brand"] == {
        "font": True,
        "font_used": True,
        "font_note": None,
        "music_track": True,
    }
    # The end card's headline is set in blocks: its white ink fills its box as no letters do.
    (item,) = manifest["outputs"]
    video = out / "out" / item["video"]
    ffmpeg.frame(video, tmp_path / "end.png", at_s=ffmpeg.probe(video).duration - 0.2)
    x, y, w, h = get_template("showcase").layouts["1:1"].end_card["headline"].pixels(1080, 1080)
    crop = np.asarray(Image.open(tmp_path / "end.png").convert("L"))[y : y + h, x : x + w]
    rows = [r for r in crop > 200 if r.sum() > 20]  # each row through the text's ink
    fill = np.mean([r.sum() / (np.flatnonzero(r)[-1] - np.flatnonzero(r)[0] + 1) for r in rows])
    assert len(rows) > 60 and fill > 0.7, fill  # letters would fill under half of each row
    # Under the voice plays the merchant's chord, ducked while the narration speaks, and the
    # delivered audio is on the feeds' loudness and under their peak ceiling.
    paths = JobPaths(out)
    info = NarrationInfo.load(paths.narration_file)
    plan = plan_for(paths.read_spec(paths.spec_file), paths, load_settings(), "1:1", info)
    assert plan.font is not None and plan.font.suffix == ".ttf"
    with wave.open(str(paths.soundtrack), "rb") as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    mix = frames.reshape(-1, 2).mean(axis=1) / 32768.0
    offset = next(c["start"] for c in manifest["captions"]) - info.phrases[0][1]
    first, last = info.sentences[0], info.sentences[-1]
    # While it speaks (pauses between sentences are short: the music stays down through them)
    # and after it, before the fade-out.
    spoken = _seconds(mix, offset + first[1] + 0.2, offset + last[2] - 0.2)
    after = _seconds(mix, offset + last[2] + 0.5, manifest["duration_s"] - 1.3)
    assert len(spoken) > 96_000 and len(after) > 24_000, (first, last, manifest["duration_s"])
    assert _tone_db(mix, 415.3) > 12  # the track's tones are there, as sharp lines
    # Ducked: the tone's own level is well down while the voice speaks.
    assert _line_db(after, 415.3) - _line_db(spoken, 415.3) > 6
    status = {c["name"]: c["status"] for c in manifest["quality"]["outputs"]["1:1"]}
    assert status["loudness"] == status["true_peak"] == "pass", manifest["quality"]
