"""Bundled music (media.music) and the ad soundtrack mix (media.soundtrack).

The written files are checked independently of the code under test: read back with ``wave``,
measured with pyloudnorm and with ffmpeg's own EBU R128 meter.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import wave
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import pyloudnorm
import pytest

from media import music, soundtrack
from media.music import STYLES, MusicStyle
from media.soundtrack import MixSpec

ON_CI = os.environ.get("CI") == "true"
RATE = 48_000
PIPER_RATE = 22_050
G = TypeVar("G", bound=np.generic)
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


# --- Helpers -------------------------------------------------------------------------------


def _read_wav(path: Path) -> tuple[F64, int, int, int]:
    """(samples as (n, channels) float, rate, channels, sample width) straight from the file."""
    with wave.open(str(path), "rb") as w:
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        channels, rate, width = w.getnchannels(), w.getframerate(), w.getsampwidth()
    return raw.reshape(-1, channels) / 32768.0, rate, channels, width


def _ffmpeg_r128(path: Path) -> tuple[float, float]:
    """(integrated LUFS, true peak dBFS) from ffmpeg's ebur128 filter: an independent meter."""
    if shutil.which("ffmpeg") is None:
        if ON_CI:
            pytest.fail("ffmpeg is not installed (./setup.sh installs it)")
        pytest.skip("ffmpeg is not installed")
    cmd = ["ffmpeg", "-nostats", "-hide_banner", "-i", str(path)]
    cmd += ["-af", "ebur128=peak=true", "-f", "null", "-"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    summary = proc.stderr.rsplit("Summary:", 1)[-1]
    lufs = re.search(r"I:\s+(-?[\d.]+) LUFS", summary)
    peak = re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary)
    assert lufs and peak, proc.stderr[-2000:]
    return float(lufs.group(1)), float(peak.group(1))


def _speech_like(seconds: float, bursts: list[tuple[float, float]], seed: int = 1) -> F32:
    """Noise shaped like speech at Piper's rate: ~4 syllables/s inside each burst, silence out."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * PIPER_RATE)) / PIPER_RATE
    # A crude vocal tract: noise through a low-pass (first-order) keeps energy under ~3 kHz.
    noise = rng.standard_normal(len(t))
    voiced = np.convolve(noise, np.ones(6) / 6, mode="same") + 0.3 * np.sin(2 * np.pi * 140 * t)
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t)
    gate = np.zeros_like(t)
    for start, end in bursts:
        gate[(t >= start) & (t < end)] = 1.0
    return (0.25 * voiced * syllables * gate).astype(np.float32)


def _rms_db(x: F64 | F32) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12))


def _segment(x: npt.NDArray[G], start_s: float, end_s: float) -> npt.NDArray[G]:
    return x[round(start_s * RATE) : round(end_s * RATE)]


def _hf_flux(x: F32) -> float:
    """Onset strength above ~5 kHz (drums), relative to the whole signal's level."""
    mono = x.mean(axis=1).astype(np.float64)
    high = np.diff(mono, n=2)  # second difference: a steep high-pass
    frames = high[: len(high) // 512 * 512].reshape(-1, 512)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    return float(np.mean(np.maximum(np.diff(energy), 0.0)) / (np.sqrt(np.mean(mono**2)) + 1e-12))


def _centroid_hz(x: F32) -> float:
    mono = x.mean(axis=1).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(mono))
    freqs = np.fft.rfftfreq(len(mono), 1 / RATE)
    return float(np.sum(freqs * spectrum) / np.sum(spectrum))


def _tempo_bpm(x: F32) -> float:
    """Tempo from the autocorrelation of a 10 ms onset envelope, searched in 70-140 bpm."""
    hop = 480
    mono = x.mean(axis=1).astype(np.float64)
    frames = mono[: len(mono) // hop * hop].reshape(-1, hop)
    onset = np.maximum(np.diff(np.log(np.sqrt(np.mean(frames**2, axis=1)) + 1e-4)), 0.0)
    onset -= onset.mean()
    ac = np.correlate(onset, onset, mode="full")[len(onset) - 1 :]
    lags = np.arange(round(60 / 140 * 100), round(60 / 70 * 100) + 1)
    return float(60 * 100 / lags[int(np.argmax(ac[lags]))])


@pytest.fixture(scope="module")
def clips() -> dict[MusicStyle, F32]:
    return {style: music.synthesize(style, 12.0) for style in STYLES}


# --- Music ---------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_each_style_is_stereo_float_nonsilent_and_under_the_peak(
    style: MusicStyle, clips: dict[MusicStyle, F32]
) -> None:
    clip = clips[style]
    assert clip.dtype == np.float32
    assert clip.shape == (12 * RATE, 2)
    assert np.max(np.abs(clip)) <= 0.9
    assert _rms_db(clip) > -30  # clearly audible, not a few stray samples
    # Stereo, not mono copied twice: the pad is detuned apart and notes are panned.
    assert not np.allclose(clip[:, 0], clip[:, 1])


@pytest.mark.parametrize("style", STYLES)
def test_synthesis_is_deterministic_and_the_seed_varies_it(
    style: MusicStyle, clips: dict[MusicStyle, F32]
) -> None:
    again = music.synthesize(style, 12.0)
    assert np.array_equal(again, clips[style])
    other = music.synthesize(style, 12.0, seed=7)
    assert not np.array_equal(other, clips[style])


@pytest.mark.parametrize("style", STYLES)
def test_music_loops_seamlessly(style: MusicStyle) -> None:
    period = music.loop_samples(style)
    long = music.synthesize(style, 2.5 * period / RATE)
    assert np.array_equal(long[period : 2 * period], long[:period])
    # Tails wrap around inside the loop: the step across the seam is like any other step.
    seam = np.abs(long[period] - long[period - 1]).max()
    assert seam <= np.quantile(np.abs(np.diff(long[:period], axis=0)), 0.999)


def test_styles_are_clearly_different(clips: dict[MusicStyle, F32]) -> None:
    flux = {style: _hf_flux(clip) for style, clip in clips.items()}
    # 'calm' has no drums: far less high-frequency transient energy than the other two.
    assert flux["calm"] * 3 < min(flux["bright"], flux["pulse"])
    centroids = sorted(_centroid_hz(clip) for clip in clips.values())
    assert all(b / a > 1.1 for a, b in itertools.pairwise(centroids))
    for a in STYLES:
        for b in STYLES:
            if a < b:
                corr = np.corrcoef(clips[a][:, 0], clips[b][:, 0])[0, 1]
                assert abs(corr) < 0.2, (a, b, corr)


@pytest.mark.parametrize(("style", "lo", "hi"), [("bright", 110, 120), ("pulse", 122, 130)])
def test_drum_styles_play_at_their_tempo(
    style: MusicStyle, lo: float, hi: float, clips: dict[MusicStyle, F32]
) -> None:
    assert lo <= _tempo_bpm(clips[style]) <= hi


def test_music_file_is_cached_16_bit_stereo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = music.music_file("calm", 3.0, tmp_path)
    samples, rate, channels, width = _read_wav(path)
    assert (rate, channels, width) == (RATE, 2, 2)
    assert len(samples) == 3 * RATE
    assert np.allclose(samples, music.synthesize("calm", 3.0), atol=1.5 / 32768)
    assert "calm" in path.name and path.parent == tmp_path

    def refuse(*_: object, **__: object) -> F32:
        raise AssertionError("a cached file must not be synthesized again")

    monkeypatch.setattr(music, "synthesize", refuse)
    assert music.music_file("calm", 3.0, tmp_path) == path
    monkeypatch.undo()
    other = music.music_file("calm", 4.0, tmp_path)
    assert other != path
    assert music.music_file("pulse", 3.0, tmp_path) not in (path, other)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in tmp_path.glob("music-*.wav")
    )


def test_music_file_leaves_nothing_behind_when_writing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_: F32) -> npt.NDArray[np.int16]:
        raise OSError("disk full")

    monkeypatch.setattr(music, "float_to_int16", broken)
    with pytest.raises(OSError, match="disk full"):
        music.music_file("bright", 1.0, tmp_path)
    assert list(tmp_path.iterdir()) == []  # no half-written WAV, no temp file


def test_unknown_style_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown music style"):
        music.synthesize("jazz", 1.0)  # type: ignore[arg-type]


# --- Mix -----------------------------------------------------------------------------------

BURSTS = [(0.0, 2.5), (4.0, 6.0), (8.5, 11.0)]  # narration seconds; pauses of 1.5 and 2.5 s
PAUSES = [(3.0, 3.5), (6.7, 7.8)]  # the middle of those pauses, clear of the ramps


@pytest.fixture(scope="module")
def narration() -> F32:
    return _speech_like(11.0, BURSTS)


@pytest.fixture(scope="module")
def pulse_music() -> F32:
    return music.synthesize("pulse", 10.0)  # shorter than the video: it must loop


def test_mix_writes_exact_length_on_target_loudness_and_peak(
    tmp_path: Path, narration: F32, pulse_music: F32
) -> None:
    spec = MixSpec(total_s=14.3337, narration_offset_s=1.5)
    report = soundtrack.mix(narration, PIPER_RATE, pulse_music, RATE, spec, tmp_path / "a.wav")
    samples, rate, channels, width = _read_wav(report.path)
    assert (rate, channels, width) == (RATE, 2, 2)
    assert len(samples) == round(14.3337 * RATE)
    assert report.duration_s == pytest.approx(14.3337, abs=1 / RATE)

    lufs = pyloudnorm.Meter(RATE).integrated_loudness(samples)
    assert lufs == pytest.approx(-14.0, abs=0.5)
    assert report.integrated_lufs == pytest.approx(lufs, abs=0.05)
    ff_lufs, ff_peak = _ffmpeg_r128(report.path)
    assert ff_lufs == pytest.approx(-14.0, abs=0.5)
    assert ff_peak <= -1.0 + 0.2
    assert report.peak_db <= -1.0
    assert report.speech_to_music_db > 15  # ducked music sits well under the voice


def test_limiter_holds_true_peak_on_a_spiky_narration(tmp_path: Path) -> None:
    # Clicks at 0 dBFS over quiet speech: normalizing to -14 LUFS pushes them far over -1 dBTP.
    speech = _speech_like(6.0, [(0.0, 6.0)]) * 0.3
    speech[:: PIPER_RATE // 3] = 1.0
    report = soundtrack.mix(speech, PIPER_RATE, None, RATE, MixSpec(7.0, 0.5), tmp_path / "s.wav")
    samples, *_ = _read_wav(report.path)
    ff_lufs, ff_peak = _ffmpeg_r128(report.path)
    assert ff_peak <= -1.0 + 0.2
    assert ff_lufs == pytest.approx(-14.0, abs=0.5)
    assert pyloudnorm.Meter(RATE).integrated_loudness(samples) == pytest.approx(-14.0, abs=0.5)


def test_mix_is_deterministic(tmp_path: Path, narration: F32, pulse_music: F32) -> None:
    spec = MixSpec(total_s=12.0, narration_offset_s=0.5)
    a = soundtrack.mix(narration, PIPER_RATE, pulse_music, RATE, spec, tmp_path / "a.wav")
    b = soundtrack.mix(narration, PIPER_RATE, pulse_music, RATE, spec, tmp_path / "b.wav")
    assert a.path.read_bytes() == b.path.read_bytes()


def test_narration_is_placed_at_its_offset(tmp_path: Path, pulse_music: F32) -> None:
    speech = _speech_like(2.0, [(0.0, 2.0)])
    spec = MixSpec(total_s=5.0, narration_offset_s=1.75)
    report = soundtrack.mix(speech, PIPER_RATE, None, RATE, spec, tmp_path / "o.wav")
    samples, *_ = _read_wav(report.path)
    first = int(np.flatnonzero(np.abs(samples[:, 0]) > 0.01)[0])
    assert abs(first / RATE - 1.75) < 0.005
    assert np.array_equal(samples[:, 0], samples[:, 1])  # narration alone is centred
    assert not np.any(_segment(samples, 3.8, 5.0))  # and ends where it ends


def test_music_ducks_under_detected_speech_and_returns_in_pauses(
    narration: F32, pulse_music: F32
) -> None:
    offset = 1.0
    spec = MixSpec(total_s=13.0, narration_offset_s=offset)
    stems = soundtrack.render_stems(narration, PIPER_RATE, pulse_music, RATE, spec)
    # Detection found the bursts: speech inside them, none in the pauses.
    for start, end in BURSTS:
        assert _segment(stems.speech, offset + start + 0.1, offset + end - 0.1).mean() > 0.9
    assert not _segment(stems.speech, offset + 2.7, offset + 3.8).any()

    # Music alone (its own stem), away from the ramps: inside speech vs mid-pause.
    music_stem = stems.music
    during = [_rms_db(_segment(music_stem, offset + s + 0.2, offset + e - 0.2)) for s, e in BURSTS]
    pauses = [_rms_db(_segment(music_stem, offset + s, offset + e)) for s, e in PAUSES]
    assert max(during) <= min(pauses) - 8.0
    # Back to its level in the pauses: -16 dB below the unducked music.
    assert min(pauses) > _rms_db(_segment(pulse_music, 3.0, 9.0)) - 16.0 - 2.0


def test_ducking_follows_given_spans_in_the_written_file(tmp_path: Path) -> None:
    # Narration of zeros + explicit spans: the file then holds only the music. A steady tone
    # as the music makes the applied gain readable from the RMS of any short window.
    t = np.arange(12 * RATE) / RATE
    tone = np.repeat((0.5 * np.sin(2 * np.pi * 440 * t))[:, None], 2, axis=1).astype(np.float32)
    spans = [(2.0, 4.0), (4.5, 5.5), (6.3, 7.0)]  # a 0.5 s pause (bridged) and a 0.8 s one
    spec = MixSpec(total_s=12.0, narration_offset_s=0.0)
    silent = np.zeros(11 * PIPER_RATE, dtype=np.float32)
    report = soundtrack.mix(
        silent, PIPER_RATE, tone, RATE, spec, tmp_path / "d.wav", speech_spans=spans
    )
    samples, *_ = _read_wav(report.path)
    free = _rms_db(_segment(samples, 8.5, 10.0))
    ducked = _rms_db(_segment(samples, 2.1, 3.9))
    assert ducked == pytest.approx(free - 10.0, abs=0.3)  # duck_db, exactly
    # The short pause keeps the music down; in the long one it comes all the way back.
    assert _rms_db(_segment(samples, 4.0, 4.5)) == pytest.approx(ducked, abs=0.3)
    assert _rms_db(_segment(samples, 5.9, 6.2)) == pytest.approx(free, abs=0.3)
    # Look-ahead: already down when speech starts, not yet back up right after it ends.
    assert _rms_db(_segment(samples, 1.99, 2.0)) == pytest.approx(ducked, abs=0.5)
    assert _rms_db(_segment(samples, 7.0, 7.05)) < free - 8.0
    assert report.speech_to_music_db == -np.inf  # no speech energy at all


def test_music_fades_in_and_out(tmp_path: Path, pulse_music: F32) -> None:
    spec = MixSpec(total_s=8.0, narration_offset_s=0.0)
    report = soundtrack.mix(None, RATE, pulse_music, RATE, spec, tmp_path / "f.wav")
    samples, *_ = _read_wav(report.path)
    assert np.abs(samples[:48]).max() < 0.01
    assert np.abs(samples[-48:]).max() < 0.01
    assert _rms_db(_segment(samples, 7.6, 7.9)) < _rms_db(_segment(samples, 5.0, 6.5)) - 6.0


def test_narration_past_the_end_is_refused(tmp_path: Path, narration: F32) -> None:
    spec = MixSpec(total_s=11.5, narration_offset_s=1.0)  # 1.0 + 11.0 > 11.5
    out = tmp_path / "x.wav"
    with pytest.raises(ValueError, match=r"narration ends at 12\.000 s"):
        soundtrack.mix(narration, PIPER_RATE, None, RATE, spec, out)
    assert not out.exists()


def test_music_only_and_narration_only(tmp_path: Path, narration: F32, pulse_music: F32) -> None:
    spec = MixSpec(total_s=12.5, narration_offset_s=1.0)
    only_music = soundtrack.mix(None, PIPER_RATE, pulse_music, RATE, spec, tmp_path / "m.wav")
    only_voice = soundtrack.mix(narration, PIPER_RATE, None, RATE, spec, tmp_path / "v.wav")
    for report in (only_music, only_voice):
        samples, *_ = _read_wav(report.path)
        assert len(samples) == round(12.5 * RATE)
        assert pyloudnorm.Meter(RATE).integrated_loudness(samples) == pytest.approx(-14, abs=0.5)
    assert only_voice.speech_to_music_db == np.inf
    music_samples, *_ = _read_wav(only_music.path)
    assert not np.array_equal(music_samples[:, 0], music_samples[:, 1])  # stereo music kept


def test_no_narration_no_music_is_digital_silence(tmp_path: Path) -> None:
    report = soundtrack.mix(None, PIPER_RATE, None, RATE, MixSpec(3.0, 0.0), tmp_path / "z.wav")
    samples, rate, channels, _ = _read_wav(report.path)
    assert (len(samples), rate, channels) == (3 * RATE, RATE, 2)
    assert not np.any(samples)
    assert report.integrated_lufs == soundtrack.SILENCE_LUFS
    assert report.peak_db == -np.inf


def test_mono_music_at_another_rate_is_resampled_and_looped(tmp_path: Path) -> None:
    t = np.arange(44_100) / 44_100
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # 1 s, must tile to 6 s
    report = soundtrack.mix(None, PIPER_RATE, tone, 44_100, MixSpec(6.0, 0.0), tmp_path / "t.wav")
    samples, *_ = _read_wav(report.path)
    assert len(samples) == 6 * RATE
    spectrum = np.abs(np.fft.rfft(_segment(samples, 1.0, 5.0)[:, 0]))
    peak_hz = np.fft.rfftfreq(4 * RATE, 1 / RATE)[int(np.argmax(spectrum))]
    assert peak_hz == pytest.approx(440, abs=1)


def test_a_short_narration_in_a_long_video_is_still_found(pulse_music: F32) -> None:
    # 1 s of speech in 20 s: the loudness reference must not come from the silent 95%.
    speech = _speech_like(1.0, [(0.0, 1.0)]) * 0.2
    spec = MixSpec(total_s=20.0, narration_offset_s=9.0)
    stems = soundtrack.render_stems(speech, PIPER_RATE, pulse_music, RATE, spec)
    assert _segment(stems.speech, 9.05, 9.95).mean() > 0.9
    assert not stems.speech[: 9 * RATE].any() and not stems.speech[10 * RATE + 960 :].any()
    assert _rms_db(_segment(stems.music, 9.1, 9.9)) <= _rms_db(_segment(stems.music, 4, 6)) - 8


def test_a_clip_too_short_to_measure_still_has_its_peaks_held(tmp_path: Path) -> None:
    t = np.arange(int(0.3 * PIPER_RATE)) / PIPER_RATE
    tone = np.sin(2 * np.pi * 300 * t).astype(np.float32)  # full scale, above -1 dBTP
    report = soundtrack.mix(tone, PIPER_RATE, None, RATE, MixSpec(0.3, 0.0), tmp_path / "c.wav")
    samples, *_ = _read_wav(report.path)
    assert len(samples) == round(0.3 * RATE)
    assert 20 * np.log10(np.abs(samples).max()) <= -1.0
    assert report.integrated_lufs == soundtrack.SILENCE_LUFS  # below one 400 ms gating block


def test_delivered_soundtrack_keeps_the_ceiling_once_encoded_to_aac(
    tmp_path: Path, narration: F32, pulse_music: F32
) -> None:
    # Mixed at -0.1 dBTP, AAC's overshoot takes the encoded audio over -1 dBTP: the delivery
    # check mixes again under a lower ceiling until the encoded audio is under it.
    from media import ffmpeg
    from media.pipeline import DELIVERY_PEAK_DB, mix_for_delivery

    ceilings: list[float] = []

    def mix_with(spec: MixSpec) -> soundtrack.MixReport:
        ceilings.append(spec.true_peak_db)
        return soundtrack.mix(narration, PIPER_RATE, pulse_music, RATE, spec, tmp_path / "d.wav")

    start = MixSpec(total_s=14.0, narration_offset_s=1.5, true_peak_db=-0.1)
    assert ffmpeg.encoded_true_peak(mix_with(start).path, "160k") > DELIVERY_PEAK_DB
    ceilings.clear()
    report = mix_for_delivery(mix_with, start, "160k")
    assert len(ceilings) >= 2 and ceilings == sorted(ceilings, reverse=True)
    assert ffmpeg.encoded_true_peak(report.path, "160k") <= DELIVERY_PEAK_DB
    lufs, _ = _ffmpeg_r128(report.path)
    assert lufs == pytest.approx(-14.0, abs=0.5)  # the loudness target holds: the limiter works
