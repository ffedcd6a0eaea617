"""Figures of one rendered output: one ffmpeg pass (loudness, true peak, black and frozen
frames) and Tesseract reading the end card's texts back. Blocking; seconds per output."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from media import ffmpeg
from media.errors import RenderError
from media.quality.checks import Measures

# Analysed at a small size: black and frozen frames show as well, for a fraction of the work.
ANALYSIS_WIDTH = 270
_BLACK = re.compile(r"black_start:\s*([\d.]+)\s+black_end:\s*([\d.]+)")
_FREEZE_START = re.compile(r"freeze_start:\s*([\d.]+)")
_FREEZE_END = re.compile(r"freeze_end:\s*([\d.]+)")
_LUFS = re.compile(r"I:\s+(-?[\d.]+|-inf) LUFS")


def _number(text: str) -> float:
    return float("-inf") if text == "-inf" else float(text)


def analyse(video: Path, *, has_audio: bool, timeout_s: float = 120.0) -> Measures:
    """One decoding pass over ``video``."""
    filters = [
        "-vf",
        f"scale={ANALYSIS_WIDTH}:-2:flags=fast_bilinear,blackdetect=d=0.2:pix_th=0.10,"
        "freezedetect=n=0.001:d=1.5",
    ]
    if has_audio:
        filters += ["-af", "ebur128=peak=true:framelog=verbose"]
    # Decoded without the deblocking filter: black and frozen stretches show as well, sooner.
    cmd = [
        ffmpeg.binary(),
        "-hide_banner",
        "-nostdin",
        "-skip_loop_filter",
        "all",
        "-i",
        str(video),
        *filters,
        "-f",
        "null",
        "-",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise RenderError(f"quality analysis timed out after {timeout_s:.0f} s") from exc
    if proc.returncode != 0:
        raise RenderError(f"quality analysis failed: {proc.stderr.strip()[-300:]}")
    log = proc.stderr
    freezes = [float(x) for x in _FREEZE_START.findall(log)]
    ends = [float(x) for x in _FREEZE_END.findall(log)]
    duration = ffmpeg.probe(video).duration
    # A freeze still running at the end has no end line: it lasts to the end.
    frozen = [(a, ends[i] if i < len(ends) else duration) for i, a in enumerate(freezes)]
    lufs = _LUFS.findall(log)
    peak = ffmpeg.TRUE_PEAK.findall(re.sub(r"\s+", " ", log))
    return Measures(
        duration_s=duration,
        loudness_lufs=_number(lufs[-1]) if lufs else None,
        true_peak_db=_number(peak[-1]) if peak else None,
        black=[(float(a), float(b)) for a, b in _BLACK.findall(log)],
        frozen=frozen,
    )


def inner_panel(gray: Image.Image) -> Image.Image | None:
    """The block that stands out from the crop's border colour (a pill or button), inset so its
    rounded edge is gone, on a margin of its own colour: Tesseract reads text on a coloured
    pill poorly while the pill's outline is in view. None when there is no such block."""
    a = np.asarray(gray).astype(int)
    border = float(np.median(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])))
    ys, xs = np.nonzero(np.abs(a - border) > 60)
    if xs.size == 0:
        return None
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    dx, dy = (x1 - x0) // 12, (y1 - y0) // 8
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    inner = gray.crop((x0 + dx, y0 + dy, x1 - dx, y1 - dy))
    return ImageOps.expand(inner, 20, fill=int(np.median(np.asarray(inner))))


def read_texts(
    video: Path,
    at_s: float,
    boxes: dict[str, tuple[tuple[int, int, int, int], str]],
    language: str,
    *,
    legible: Callable[[str, str], bool],
) -> dict[str, list[str]] | None:
    """Tesseract's readings of each box (x, y, w, h px) of the frame at ``at_s``, for the text
    expected there: as it is, then inverted (light text on dark reads better so) unless the
    first reading was ``legible``. None when Tesseract is not installed (the check is then
    skipped, not failed)."""
    tesseract = shutil.which("tesseract")
    if tesseract is None:
        return None
    lang = "kor+eng" if language == "ko" else "eng"
    out: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="castwork-quality-") as tmp:
        still = Path(tmp) / "frame.png"
        ffmpeg.frame(video, still, at_s=at_s)
        with Image.open(still) as opened:
            frame = ImageOps.grayscale(opened)
        for name, ((x, y, w, h), shown) in boxes.items():
            crop = frame.crop((x, y, x + w, y + h))
            readings: list[str] = []
            variants = [crop, ImageOps.invert(crop)]
            panel = inner_panel(crop)
            if panel is not None:
                variants += [panel, ImageOps.invert(panel)]
            for k, variant in enumerate(variants):
                path = Path(tmp) / f"{name}-{k}.png"
                size = (variant.width * 2, variant.height * 2)
                variant.resize(size, Image.Resampling.LANCZOS).save(path)
                proc = subprocess.run(
                    [tesseract, str(path), "-", "-l", lang, "--psm", "6"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                readings.append(proc.stdout.strip() if proc.returncode == 0 else "")
                if legible(shown, readings[-1]):
                    break
            out[name] = readings
    return out
