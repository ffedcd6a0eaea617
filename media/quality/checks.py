"""The rules of the quality report (pure): figures and the plan in, verdicts out."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from media.narration import Phrase

Status = Literal["pass", "warn", "fail", "skipped"]

# The mix is normalised to -14 LUFS / -1 dBTP; AAC encoding moves both a little.
TARGET_LUFS = -14.0
LUFS_TOLERANCE = 1.5
MAX_TRUE_PEAK_DB = -0.5
# A text read back this close to the copy counts as legible (OCR misreads a letter or two).
OCR_MIN_RATIO = 0.7
# Where a 9:16 feed (Reels, TikTok, Shorts) draws its own buttons and captions over the video,
# in fractions of the frame: the top bar, the bottom caption/music area, the right-hand column.
FEED_OVERLAYS: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("top bar", (0.0, 0.0, 1.0, 0.06)),
    ("bottom caption area", (0.0, 0.80, 1.0, 1.0)),
    ("right-hand buttons", (0.86, 0.40, 1.0, 0.80)),
)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    hard: bool  # a failed hard check flags the job

    @property
    def flags(self) -> bool:
        return self.hard and self.status == "fail"


@dataclass(frozen=True)
class Measures:
    """What :mod:`media.quality.measure` found in one output."""

    duration_s: float
    loudness_lufs: float | None  # None: no audio stream
    true_peak_db: float | None
    black: list[tuple[float, float]] = field(default_factory=list)  # (start, end) s
    frozen: list[tuple[float, float]] = field(default_factory=list)
    read: dict[str, list[str]] | None = None  # field -> OCR readings; None: no OCR here


@dataclass(frozen=True)
class Expected:
    """What the output should be, from the plan and the narration."""

    audio: bool
    end_card_start_s: float
    texts: dict[str, str]  # end-card field -> copy shown
    captions: Sequence[Phrase]
    speech: tuple[float, float] | None  # narration span in video seconds
    captions_aligned: bool
    boxes: dict[str, tuple[float, float, float, float]]  # layer -> x0, y0, x1, y1 (fractions)
    feed: bool  # a 9:16 output, seen in feeds with UI drawn over it


def loudness(m: Measures, e: Expected) -> list[Check]:
    if not e.audio:
        return [Check("loudness", "skipped", "no soundtrack asked for", hard=False)]
    if m.loudness_lufs is None or m.true_peak_db is None:
        return [Check("loudness", "fail", "no audio stream in the output", hard=True)]
    off = abs(m.loudness_lufs - TARGET_LUFS)
    lufs = Check(
        "loudness",
        "pass" if off <= LUFS_TOLERANCE else "fail",
        f"{m.loudness_lufs:.1f} LUFS integrated (target {TARGET_LUFS:.0f} ± {LUFS_TOLERANCE})",
        hard=True,
    )
    peak = Check(
        "true_peak",
        "pass" if m.true_peak_db <= MAX_TRUE_PEAK_DB else "fail" if m.true_peak_db > 0 else "warn",
        f"{m.true_peak_db:.1f} dBTP (at most {MAX_TRUE_PEAK_DB})",
        hard=True,
    )
    return [lufs, peak]


def frames(m: Measures, e: Expected) -> list[Check]:
    black = [(a, b) for a, b in m.black if b - a >= 0.2]
    # The end card is meant to hold still once its texts have landed.
    frozen = [(a, b) for a, b in m.frozen if a < e.end_card_start_s]
    return [
        Check(
            "black_frames",
            "fail" if black else "pass",
            ", ".join(f"black {a:.2f}-{b:.2f} s" for a, b in black) or "none",
            hard=True,
        ),
        Check(
            "frozen_frames",
            "fail" if frozen else "pass",
            ", ".join(f"still {a:.2f}-{b:.2f} s" for a, b in frozen) or "none before the end card",
            hard=True,
        ),
    ]


def _norm(text: str) -> str:
    return re.sub(r"\W+", "", text).upper()


def read_back(shown: str, reading: str) -> float:
    """How much of ``shown`` a reading has, in order (0..1): stray marks OCR adds around a
    text (a pill's edge read as "|") cost nothing, a misread letter costs that letter."""
    want, got = _norm(shown), _norm(reading)
    if not want:
        return 1.0
    blocks = difflib.SequenceMatcher(a=want, b=got, autojunk=False).get_matching_blocks()
    return sum(b.size for b in blocks) / len(want)


def legible(shown: str, reading: str) -> bool:
    return read_back(shown, reading) >= OCR_MIN_RATIO


def text(m: Measures, e: Expected) -> list[Check]:
    if m.read is None:
        return [Check("text", "skipped", "no OCR (tesseract missing, or switched off)", hard=False)]
    misread = []
    for name, shown in e.texts.items():
        readings = m.read.get(name) or [""]
        scores = [read_back(shown, r) for r in readings]
        if max(scores) < OCR_MIN_RATIO:
            best = readings[scores.index(max(scores))]
            misread.append(f"{name} {shown!r} read as {best.strip()!r}")
    return [
        Check(
            "text",
            "warn" if misread else "pass",
            "; ".join(misread) or f"{len(e.texts)} end-card texts read back",
            hard=False,  # OCR misreads stylised text; a person looks
        )
    ]


def captions(e: Expected, duration_s: float) -> list[Check]:
    if not e.captions:
        return [Check("captions", "skipped", "no captions", hard=False)]
    problems = []
    for a, b in zip(e.captions, e.captions[1:], strict=False):
        if b.start < a.end - 1e-6:
            problems.append(f"{a.text!r} overlaps {b.text!r}")
    for c in e.captions:
        if not 0 <= c.start < c.end <= duration_s + 0.05:
            problems.append(f"{c.text!r} at {c.start:.2f}-{c.end:.2f} s is outside the video")
        if any(not c.start - 1e-6 <= w.start <= w.end <= c.end + 1e-6 for w in c.words):
            problems.append(f"{c.text!r}: a word is timed outside its caption")
    if e.speech is not None:
        first, last = e.captions[0].start, e.captions[-1].end
        if first < e.speech[0] - 0.25 or last > e.speech[1] + 0.5:
            problems.append(
                f"captions {first:.2f}-{last:.2f} s, speech {e.speech[0]:.2f}-{e.speech[1]:.2f} s"
            )
    if problems:
        return [Check("captions", "fail", "; ".join(problems), hard=True)]
    how = "word timestamps" if e.captions_aligned else "character count (no alignment)"
    return [
        Check(
            "captions",
            "pass" if e.captions_aligned else "warn",
            f"{len(e.captions)} captions within the speech, timed by {how}",
            hard=True,
        )
    ]


def safe_zone(e: Expected) -> list[Check]:
    if not e.feed:
        return []
    covered = []
    for layer, (x0, y0, x1, y1) in e.boxes.items():
        for zone, (zx0, zy0, zx1, zy1) in FEED_OVERLAYS:
            if x0 < zx1 and zx0 < x1 and y0 < zy1 and zy0 < y1:
                covered.append(f"{layer} under the {zone}")
    return [
        Check(
            "safe_zone",
            "warn" if covered else "pass",
            "; ".join(covered) or "every text clear of feed buttons and captions",
            hard=False,  # a layout choice of the template, not a broken render
        )
    ]


def assess(m: Measures, e: Expected) -> list[Check]:
    return [
        *loudness(m, e),
        *frames(m, e),
        *text(m, e),
        *captions(e, m.duration_s),
        *safe_zone(e),
    ]
