"""The quality report: its rules on figures (pure), and a real ad measured and read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from media.narration import Phrase, Word
from media.quality.checks import Expected, Measures, assess, read_back
from media.quality.measure import analyse

EXPECTED = Expected(
    audio=True,
    end_card_start_s=8.0,
    texts={"headline": "Handmade ceramic mugs", "cta": "Shop now"},
    captions=[
        Phrase(
            "Handmade ceramic mugs.",
            0.5,
            1.9,
            (Word("Handmade", 0.5, 1.0), Word("ceramic", 1.0, 1.5), Word("mugs.", 1.5, 1.9)),
        ),
        Phrase("Shop now.", 2.1, 2.8),
    ],
    speech=(0.5, 2.8),
    captions_aligned=True,
    boxes={"headline": (0.07, 0.60, 0.93, 0.75), "caption": (0.06, 0.86, 0.94, 0.94)},
    feed=True,
)
GOOD = Measures(
    duration_s=11.0,
    loudness_lufs=-14.2,
    true_peak_db=-1.1,
    read={"headline": ["HANDMADE CERAMIC\nMUGS"], "cta": ["| Shop now |"]},
)


def _by_name(measures: Measures, expected: Expected = EXPECTED) -> dict[str, tuple[str, bool]]:
    return {c.name: (c.status, c.flags) for c in assess(measures, expected)}


def test_a_good_ad_passes_every_hard_check() -> None:
    got = _by_name(GOOD)
    assert got == {
        "loudness": ("pass", False),
        "true_peak": ("pass", False),
        "black_frames": ("pass", False),
        "frozen_frames": ("pass", False),
        "text": ("pass", False),
        "captions": ("pass", False),
        # The template's 9:16 caption box sits where feeds draw their own captions: said,
        # not failed (a layout choice, not a broken render).
        "safe_zone": ("warn", False),
    }


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"loudness_lufs": -23.0}, "loudness"),
        ({"true_peak_db": 0.4}, "true_peak"),
        ({"black": [(3.0, 3.6)]}, "black_frames"),
        ({"frozen": [(2.0, 4.5)]}, "frozen_frames"),
        ({"loudness_lufs": None, "true_peak_db": None}, "loudness"),
    ],
)
def test_a_broken_render_fails_a_hard_check_and_flags(change: dict[str, object], name: str) -> None:
    status, flags = _by_name(Measures(**{**vars(GOOD), **change}))[name]  # type: ignore[arg-type]
    assert (status, flags) == ("fail", True)


def test_soft_findings_warn_without_flagging() -> None:
    misread = Measures(**{**vars(GOOD), "read": {"headline": ["HANDMADE"], "cta": ["Shop now"]}})
    assert _by_name(misread)["text"] == ("warn", False)
    # The end card holds still on purpose; a freeze there is no fault.
    assert (
        _by_name(Measures(**{**vars(GOOD), "frozen": [(8.5, 11.0)]}))["frozen_frames"][0] == "pass"
    )
    no_ocr = Measures(**{**vars(GOOD), "read": None})
    assert _by_name(no_ocr)["text"] == ("skipped", False)
    unaligned = Expected(**{**vars(EXPECTED), "captions_aligned": False})
    assert _by_name(GOOD, unaligned)["captions"] == ("warn", False)


def test_captions_out_of_step_with_the_speech_fail() -> None:
    late = Expected(**{**vars(EXPECTED), "speech": (3.0, 5.0)})
    assert _by_name(GOOD, late)["captions"] == ("fail", True)
    overlapping = Expected(
        **{**vars(EXPECTED), "captions": [Phrase("a b", 0.5, 2.0), Phrase("c", 1.5, 2.5)]}
    )
    assert _by_name(GOOD, overlapping)["captions"] == ("fail", True)


def test_read_back_counts_the_copy_found_in_order() -> None:
    assert read_back("Shop now", "| SHOP NOW |") == 1.0
    assert read_back("Handmade ceramic mugs", "HANDMADE CERAMIC MUG5") > 0.9
    assert read_back("Handmade ceramic mugs", "") == 0.0


def test_ffmpeg_finds_black_frozen_and_silent_stretches(tmp_path: Path) -> None:
    # 1 s moving picture, 1 s black, 2 s of one still frame; a tone then silence.
    from media import ffmpeg

    video = tmp_path / "probe.mp4"
    ffmpeg.run(
        [
            "-f", "lavfi", "-i", "testsrc2=s=320x240:r=30:d=1",
            "-f", "lavfi", "-i", "color=black:s=320x240:r=30:d=1",
            "-f", "lavfi", "-i", "color=gray:s=320x240:r=30:d=2",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=4",
            "-filter_complex", "[0:v][1:v][2:v]concat=n=3:v=1:a=0[v]",
            "-map", "[v]", "-map", "3:a", "-c:v", "libx264", "-preset", "ultrafast",
            "-c:a", "aac", "-shortest", str(video),
        ],
        timeout_s=60,
    )  # fmt: skip
    m = analyse(video, has_audio=True)
    assert m.duration_s == pytest.approx(4.0, abs=0.1)
    ((start, end),) = m.black
    assert start == pytest.approx(1.0, abs=0.1) and end == pytest.approx(2.0, abs=0.1)
    assert any(a <= 2.2 and b >= 3.9 for a, b in m.frozen)  # the still (and the black) frames
    assert m.loudness_lufs is not None and -30 < m.loudness_lufs < 0
    assert m.true_peak_db is not None and m.true_peak_db < 0.5
