"""A brand kit's font and music track (media.brandkit): real font files built with fontTools,
real audio files made by ffmpeg, checked, normalised, and seen in rendered text and mixes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from media.brandkit.font import COVERAGE, choose_font, inspect_font, missing_characters
from media.brandkit.track import (
    HOUSE_MUSIC_LUFS,
    TrackLimits,
    check,
    load_track,
    prepare_track,
    sniff_audio,
)
from media.errors import InputError
from media.music import STYLES, synthesize
from media.soundtrack import RATE, integrated_lufs, true_peak_db
from media.text import TextStyle, has_glyph, render_text
from tests.ad_helpers import made_font, made_track

LATIN = COVERAGE["en"] + " .,!?$%&'-:"
MB = 1 << 20


def _reason(exc: pytest.ExceptionInfo[InputError]) -> str:
    return str(exc.value.fields["reason"])


# --- Fonts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cff", [False, True], ids=["ttf", "otf"])
def test_a_font_is_read_with_what_it_covers(cff: bool) -> None:
    info = inspect_font(made_font(LATIN, "Acme Block", cff=cff), "acme.ttf", max_bytes=MB)
    assert (info.family, info.style, info.languages) == ("Acme Block", "Regular", ("en",))
    assert info.format == ("OpenType (CFF)" if cff else "TrueType")
    both = inspect_font(made_font(LATIN + COVERAGE["ko"]), "kr.ttf", max_bytes=MB)
    assert both.languages == ("en", "ko")


def test_broken_foreign_and_useless_fonts_are_refused_with_a_reason() -> None:
    good = made_font(LATIN)
    cases = {
        "not_a_font": [b"GIF89a" + good, b"wOFF" + good[4:], b"ttcf" + good[4:], b""],
        "broken": [good[: len(good) // 2], good[:200]],
        "no_coverage": [made_font("#*@")],
        "too_large": [good + bytes(MB)],
    }
    for reason, blobs in cases.items():
        for blob in blobs:
            with pytest.raises(InputError) as exc:
                inspect_font(blob, "upload.ttf", max_bytes=MB)
            assert _reason(exc) == reason, (reason, str(exc.value))
            assert "upload.ttf" in str(exc.value) and exc.value.fields["field"] == "font"


def test_garbage_inside_a_real_header_is_refused_not_crashed() -> None:
    good = bytearray(made_font(LATIN))
    rng = np.random.default_rng(7)
    for _ in range(20):
        bad = bytearray(good)
        for i in rng.integers(12, len(bad), 40):
            bad[i] = int(rng.integers(0, 256))
        try:
            inspect_font(bytes(bad), "fuzz.ttf", max_bytes=MB)
        except InputError as exc:
            assert exc.fields["reason"] in {"broken", "no_characters", "no_coverage", "no_ink"}


def test_the_brand_font_is_used_only_for_text_it_covers(tmp_path: Path) -> None:
    font = tmp_path / "latin.ttf"
    font.write_bytes(made_font(LATIN))
    english = ["Fresh beans", "$12", "Shop now", "Roasted today 🔥"]  # emoji: dropped anyway
    assert missing_characters(font, ["Hi 🔥"]) == "🔥"
    assert choose_font(font, english, house_draws=has_glyph).path == font
    choice = choose_font(font, [*english, "신메뉴 할인"], house_draws=has_glyph)
    assert choice.path is None and choice.note and "신메뉴할인"[:3] in choice.note.replace(" ", "")
    assert choose_font(None, english, house_draws=has_glyph).path is None


def _fill_ratio(png: Path) -> float:
    """Painted share of the text's ink box: solid blocks fill it, letters do not."""
    a = np.asarray(Image.open(png).convert("RGBA"))[:, :, 3] > 128
    ys, xs = np.nonzero(a)
    box = a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return float(box.mean())


def test_text_set_in_the_brand_font_is_drawn_with_it(tmp_path: Path) -> None:
    font = tmp_path / "block.ttf"
    font.write_bytes(made_font(LATIN))
    house = render_text("Shop now", 600, 200, TextStyle(), tmp_path / "a")
    brand = render_text("Shop now", 600, 200, TextStyle(font=str(font)), tmp_path / "b")
    assert house.path.name != brand.path.name  # the font is part of the file's identity
    assert _fill_ratio(brand.path) > 0.6 > 0.45 > _fill_ratio(house.path)
    assert brand.lines == ("Shop now",)


# --- Music tracks ----------------------------------------------------------------------------


def test_house_music_level_is_the_reference_tracks_are_brought_to() -> None:
    for style in STYLES:
        assert integrated_lufs(synthesize(style, 20.0)) == pytest.approx(HOUSE_MUSIC_LUFS, abs=2)


@pytest.mark.parametrize("suffix", [".mp3", ".m4a", ".ogg", ".flac", ".wav"])
def test_a_track_in_any_common_format_is_decoded_and_normalised(
    tmp_path: Path, suffix: str
) -> None:
    src = made_track(tmp_path / f"song{suffix}", 6.0, volume_db=-3.0)
    assert sniff_audio(src.read_bytes()[:64]) is not None
    track = prepare_track(src, tmp_path / "in", name=src.name)
    samples = load_track(track.path, track.duration_s)
    assert track.duration_s == pytest.approx(6.0, abs=0.1)
    assert integrated_lufs(samples) == pytest.approx(HOUSE_MUSIC_LUFS, abs=0.5)
    assert true_peak_db(samples) <= -1.0 + 0.1


def test_loud_and_quiet_masters_end_up_at_the_same_level(tmp_path: Path) -> None:
    hot = made_track(tmp_path / "hot.mp3", 5.0, volume_db=0.0)
    quiet = made_track(tmp_path / "quiet.mp3", 5.0, volume_db=-30.0)
    levels = []
    for src in (hot, quiet):
        t = prepare_track(src, tmp_path / "in", name=src.name)
        levels.append((t.source_lufs, integrated_lufs(load_track(t.path, 5.0))))
    assert levels[0][0] - levels[1][0] > 25  # 30 dB apart going in
    assert levels[0][1] == pytest.approx(levels[1][1], abs=0.5)  # the same coming out


def test_a_short_track_loops_with_a_crossfade_to_the_ads_length(tmp_path: Path) -> None:
    src = made_track(tmp_path / "short.wav", 4.0)
    track = prepare_track(src, tmp_path / "in", name=src.name)
    samples = load_track(track.path, 11.0)
    assert samples.shape == (11 * RATE, 2)
    # No click at a seam: no sample-to-sample jump bigger than the tones themselves make.
    jumps = np.abs(np.diff(samples[:, 0]))
    assert jumps.max() < 4 * np.percentile(jumps, 99.9)
    level = [integrated_lufs(samples[i * RATE : (i + 3) * RATE]) for i in range(0, 8, 2)]
    assert max(level) - min(level) < 1.5  # no dip or bump where it loops


def test_bad_tracks_are_refused_with_a_reason(tmp_path: Path) -> None:
    good = made_track(tmp_path / "ok.mp3", 5.0).read_bytes()
    silent = made_track(tmp_path / "silent.wav", 3.0, volume_db=-200.0).read_bytes()
    short = made_track(tmp_path / "blip.mp3", 0.5).read_bytes()
    cases = {
        "audio_format": b"hello, not audio" * 10,
        "audio_unreadable": b"ID3" + bytes(5000),
        "audio_silent": silent,
        "audio_length": short,
        "too_large": good,
    }
    for reason, blob in cases.items():
        limits = TrackLimits(max_bytes=len(good) - 1) if reason == "too_large" else TrackLimits()
        with pytest.raises(InputError) as exc:
            prepare_track(blob, tmp_path / "in", name="upload.mp3", limits=limits)
        assert _reason(exc) == reason, (reason, str(exc.value))
        assert exc.value.fields["field"] == "music_track"


def test_probe_rules_are_pure() -> None:
    audio = {"codec_type": "audio", "codec_name": "mp3"}
    info = {"format": {"duration": "30.0"}, "streams": [audio]}
    assert check(info, "a.mp3", TrackLimits()) == "mp3"
    for bad, reason in [
        ({"format": {"duration": "30"}, "streams": [{"codec_type": "video"}]}, "audio_none"),
        ({**info, "streams": [{**audio, "codec_name": "dts"}]}, "codec"),
        ({**info, "format": {"duration": "5000"}}, "audio_length"),
    ]:
        with pytest.raises(InputError) as exc:
            check(bad, "a.mp3", TrackLimits())
        assert _reason(exc) == reason
