"""Shared helpers for ad-job tests: real photos, a worker process, output checks."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from PIL import Image

from media.quality.measure import inner_panel

ROOT = Path(__file__).resolve().parent.parent


def photo_bytes(name: str, size: int = 1400) -> bytes:
    """A real photograph (public domain / CC0, bundled in scikit-image) as JPEG bytes."""
    import skimage.data

    array = getattr(skimage.data, name)()
    im = Image.fromarray(array).convert("RGB")
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def worker_env(redis_url: str, jobs_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "CASTWORK_BROKER__URL": redis_url,
            "CASTWORK_JOBS__DIR": str(jobs_dir),
            "CASTWORK_JOBS__HEARTBEAT_TIMEOUT_S": "2",
            "CASTWORK_JOBS__MIN_BACKOFF_MS": "100",
            "CASTWORK_JOBS__MAX_BACKOFF_MS": "500",
            # Seconds per output; the tests of the report turn it on (the farm test does).
            "CASTWORK_MEDIA__QUALITY_REPORT": "false",
            **extra,
        }
    )
    return env


@contextmanager
def worker_process(
    env: dict[str, str], *, threads: int = 2, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`castwork worker` in its own process group (so a test can SIGKILL all of it); its
    output appended to ``log`` when given (to show in a failed assertion)."""
    sink = open(log, "ab") if log is not None else None  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "castwork.cli",
            "worker",
            "--processes",
            "1",
            "--threads",
            str(threads),
        ],
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdout=sink or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if sink else subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kill_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)
        if sink is not None:
            sink.close()


def kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def wait_for(predicate: object, timeout_s: float, what: str, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def ocr(
    image: Image.Image, *, lang: str = "eng", until: str | Callable[[str], bool] | None = None
) -> str:
    """Tesseract's readings of ``image``: as is, inverted (light-on-dark text reads better
    inverted) and its inner panel; upper-cased and joined. ``until``: stop reading once the
    readings so far contain it, or satisfy it (the check the caller makes; most crops read at
    once, and each reading costs a Tesseract run)."""
    import shutil
    import tempfile

    from PIL import ImageOps

    if shutil.which("tesseract") is None:
        raise RuntimeError("tesseract is not installed (./setup.sh installs tesseract-ocr)")
    gray = ImageOps.grayscale(image)
    variants = [gray, ImageOps.invert(gray)]
    panel = inner_panel(gray)
    if panel is not None:
        variants += [panel, ImageOps.invert(panel)]
    texts = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, variant in enumerate(variants):
            path = Path(tmp) / f"{k}.png"
            variant.resize((variant.width * 2, variant.height * 2), Image.Resampling.LANCZOS).save(
                path
            )
            for psm in ("6", "7"):
                out = subprocess.run(
                    ["tesseract", str(path), "-", "-l", lang, "--psm", psm],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=True,
                )
                texts.append(out.stdout)
                so_far = " ".join(" ".join(texts).upper().split())
                done = until(so_far) if callable(until) else until and until.upper() in so_far
                if done:
                    return so_far
    return " ".join(" ".join(texts).upper().split())


def spoken_words(captions: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], float]]:
    """Each caption word of a job view, with when its turn ends (the next word's start, or
    its caption's end for the last one): while it is lit in karaoke captions."""
    for caption in captions:
        words = caption["words"]
        for i, word in enumerate(words):
            yield word, (words[i + 1]["start"] if i + 1 < len(words) else caption["end"])


def lit_pixels(
    crop: Image.Image, colour: tuple[int, int, int] = (0xFF, 0xD6, 0x0A)
) -> Image.Image | None:
    """The pixels of ``crop`` near ``colour`` (a karaoke highlight through H.264), black on
    white and cut to their bounding box; None when there are none."""
    import numpy as np

    a = np.asarray(crop.convert("RGB")).astype(int)
    near = np.abs(a - np.array(colour)).max(axis=2) < 60
    if near.sum() < 50:
        return None
    ys, xs = np.nonzero(near)
    page = np.where(near, 0, 255).astype(np.uint8)
    cut = Image.fromarray(page).crop((xs.min() - 6, ys.min() - 6, xs.max() + 7, ys.max() + 7))
    return cut


def made_font(chars: str, family: str = "Castwork Block", *, cff: bool = False) -> bytes:
    """A real font file (fontTools' FontBuilder) with a glyph for each of ``chars``: every glyph
    a solid block, so text set in it is unmistakable in a rendered frame. TrueType outlines,
    or CFF ones (an .otf) with ``cff``."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.t2CharStringPen import T2CharStringPen
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    names = [".notdef", "space", "block"]
    cmap = {ord(" "): "space", **{ord(c): "block" for c in chars if c != " "}}
    fb = FontBuilder(1000, isTTF=not cff)
    fb.setupGlyphOrder(names)
    fb.setupCharacterMap(cmap)

    def draw(pen: Any, w: int) -> None:
        if w:
            pen.moveTo((50, 0))
            pen.lineTo((50, 700))
            pen.lineTo((w - 50, 700))
            pen.lineTo((w - 50, 0))
            pen.closePath()

    widths = {".notdef": 500, "space": 300, "block": 600}
    if cff:
        charstrings = {}
        for name in names:
            pen = T2CharStringPen(widths[name], None)
            draw(pen, 0 if name == "space" else widths[name])
            charstrings[name] = pen.getCharString()
        fb.setupCFF(family.replace(" ", ""), {"FullName": family}, charstrings, {})
    else:
        glyphs = {}
        for name in names:
            pen = TTGlyphPen(None)
            draw(pen, 0 if name == "space" else widths[name])
            glyphs[name] = pen.glyph()
        fb.setupGlyf(glyphs)
    fb.setupHorizontalMetrics({n: (widths[n], 50) for n in names})
    fb.setupHorizontalHeader(ascent=900, descent=-200)
    fb.setupNameTable({"familyName": family, "styleName": "Regular"})
    fb.setupOS2(sTypoAscender=900, sTypoDescender=-200, usWinAscent=900, usWinDescent=200)
    fb.setupPost()
    buf = io.BytesIO()
    fb.save(buf)
    return buf.getvalue()


def made_track(path: Path, seconds: float, *, hz: float = 440.0, volume_db: float = -6.0) -> Path:
    """A real music file made by ffmpeg (the container from ``path``'s suffix): a chord around
    ``hz`` at ``volume_db`` with a beat, so loudness and pitch can be checked after mixing."""
    tones = "+".join(f"sin(2*PI*{hz * r:.2f}*t)" for r in (1.0, 1.26, 1.5))
    expr = f"({tones})/3*(0.6+0.4*sin(2*PI*2*t))"
    subprocess.run(
        [
            "ffmpeg", "-v", "error", "-y", "-f", "lavfi",
            "-i", f"aevalsrc={expr}|{expr}:s=44100:d={seconds}",
            "-af", f"volume={volume_db}dB", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def latin_house_font() -> bytes:
    """A real, readable brand font: the house font's Bold cut down to printable ASCII by
    fontTools' subsetter (an .otf with CFF outlines), so OCR still reads what it sets."""
    import string

    from fontTools import subset

    from media.fonts import font_path

    path, index = font_path("bold")
    options = subset.Options(font_number=index, name_IDs=["*"], layout_features=["*"])
    font = subset.load_font(str(path), options)
    try:
        subsetter = subset.Subsetter(options)
        subsetter.populate(text=string.printable + "’…–")
        subsetter.subset(font)
        buf = io.BytesIO()
        subset.save_font(font, buf, options)
    finally:
        font.close()
    return buf.getvalue()
