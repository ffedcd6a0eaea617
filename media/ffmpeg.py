"""The one module that runs ffmpeg and ffprobe."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from media.errors import FfmpegMissing, RenderError


def binary(name: str = "ffmpeg") -> str:
    path = shutil.which(name)
    if path is None:
        raise FfmpegMissing(f"{name} is not installed; run ./setup.sh (or: apt-get install ffmpeg)")
    return path


def version() -> str:
    out = subprocess.run(
        [binary(), "-hide_banner", "-version"], capture_output=True, text=True, check=True
    )
    return out.stdout.split("\n", 1)[0].removeprefix("ffmpeg version ").split(" ")[0]


def run(args: list[str], *, timeout_s: float) -> None:
    """Run ffmpeg with ``args``; its own timeout, since a blocked process ignores signals in Python."""
    cmd = [binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        err = RenderError(f"ffmpeg timed out after {timeout_s:.0f} s")
        err.transient = True
        raise err from exc
    if proc.returncode != 0:
        raise RenderError(f"ffmpeg failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")


@dataclass(frozen=True)
class Probe:
    duration: float
    width: int | None
    height: int | None
    fps: float | None
    video_codec: str | None
    audio_codec: str | None


def probe(path: Path) -> Probe:
    out = subprocess.run(
        [
            binary("ffprobe"),
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if out.returncode != 0:
        raise RenderError(f"ffprobe cannot read {path}: {out.stderr.strip()[-300:]}")
    data: dict[str, Any] = json.loads(out.stdout)
    video = next((s for s in data["streams"] if s["codec_type"] == "video"), None)
    audio = next((s for s in data["streams"] if s["codec_type"] == "audio"), None)
    fps = None
    if video and "/" in video.get("avg_frame_rate", ""):
        num, den = video["avg_frame_rate"].split("/")
        fps = float(num) / float(den) if float(den) else None
    return Probe(
        duration=float(data["format"].get("duration", 0.0)),
        width=video.get("width") if video else None,
        height=video.get("height") if video else None,
        fps=fps,
        video_codec=video.get("codec_name") if video else None,
        audio_codec=audio.get("codec_name") if audio else None,
    )


def smoke_test(out_dir: Path) -> Probe:
    """Encode one second of test video with a tone to H.264/AAC MP4 and probe it back."""
    target = out_dir / "smoke.mp4"
    run(
        [
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30:duration=1",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            "-movflags",
            "+faststart",
            str(target),
        ],
        timeout_s=60,
    )
    return probe(target)
