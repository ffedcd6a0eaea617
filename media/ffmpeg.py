"""The one module that runs ffmpeg and ffprobe."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.files import atomic_path
from media.errors import FfmpegMissing, MediaError, RenderCancelled, RenderError, storage_error


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
        raise _failed(proc.returncode, proc.stderr.strip()[-500:])


def aac_args(bitrate: str) -> list[str]:
    """How every output's audio is encoded. Intensity stereo off: on dense, limited mixes it
    let one channel's low end come out ~1 dB hotter than it went in, through the true-peak
    ceiling (measured on real soundtracks: up to +0.9 dBTP over a -1.6 dBTP input)."""
    return ["-c:a", "aac", "-aac_is", "0", "-b:a", bitrate, "-ar", "48000"]


# The summary ebur128 prints at the end (its per-frame lines say "TPK", not this).
TRUE_PEAK = re.compile(r"True peak:\s+Peak:\s+(-?[\d.]+|-inf) dBFS")


def encoded_true_peak(wav: Path, bitrate: str, *, timeout_s: float = 60.0) -> float:
    """The true peak (dBTP, ebur128's 4x oversampling) of ``wav`` once encoded to AAC at
    ``bitrate`` as the renderer encodes it: a lossy codec's overshoot is only seen so (an AAC
    frame can peak a dB or more above its input on limited, dense audio)."""
    with tempfile.TemporaryDirectory(prefix="castwork-aac-") as tmp:
        encoded = Path(tmp) / "check.m4a"
        run(["-i", str(wav), *aac_args(bitrate), str(encoded)], timeout_s=timeout_s)
        cmd = [binary(), "-hide_banner", "-nostdin", "-i", str(encoded)]
        cmd += ["-af", "ebur128=peak=true", "-f", "null", "-"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    found = TRUE_PEAK.findall(re.sub(r"\s+", " ", proc.stderr))
    if proc.returncode != 0 or not found:
        raise _failed(proc.returncode, proc.stderr.strip()[-500:])
    return -math.inf if found[-1] == "-inf" else float(found[-1])


# Write errors that ffmpeg reports on its output by their C library text ("No space left on
# device"): storage trouble, not a bad render, and told apart so that a full disk is retried
# and a read-only one is not (media.errors.DiskFull, StorageUnwritable).
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _failed(returncode: int, stderr_tail: str) -> MediaError:
    for code in _WRITE_ERRNOS:
        if os.strerror(code) in stderr_tail:
            found = storage_error(
                OSError(code, os.strerror(code)), "ffmpeg cannot write its output"
            )
            if found is not None:
                return found
    return RenderError(f"ffmpeg failed ({returncode}): {stderr_tail}")


@dataclass(frozen=True)
class Probe:
    duration: float
    width: int | None
    height: int | None
    fps: float | None
    video_codec: str | None
    audio_codec: str | None


class Unreadable(RenderError):
    """ffprobe could not describe a file (``timed_out``: it took too long); callers that judge
    a merchant's upload turn it into their own :class:`InputError`."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.transient = timed_out  # as a timed-out ffmpeg run is


def describe(path: Path, *, timeout_s: float = 30.0) -> dict[str, Any]:
    """ffprobe's JSON description of ``path`` (format and streams); :class:`Unreadable`."""
    cmd = [binary("ffprobe"), "-v", "error", "-print_format", "json"]
    cmd += ["-show_format", "-show_streams", str(path)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise Unreadable(f"ffprobe took over {timeout_s:.0f} s on {path}", timed_out=True) from None
    if out.returncode != 0:
        raise Unreadable(
            f"ffprobe cannot read {path}: {out.stderr.strip()[-300:]}", timed_out=False
        )
    data: dict[str, Any] = json.loads(out.stdout or "{}")
    return data


def probe(path: Path) -> Probe:
    data = describe(path)
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


# --- Rendering: one process per output, with progress, a timeout and atomic files -------

ProgressFn = Callable[[float], None]
CancelFn = Callable[[], bool]


def _die_with_parent() -> list[str]:
    """A prefix that makes ffmpeg get SIGKILL when the process that started it dies.

    Without it a worker killed with SIGKILL leaves an orphan ffmpeg burning a core and writing
    a temporary file nobody will rename. util-linux's setpriv sets PR_SET_PDEATHSIG and execs
    ffmpeg in place (same pid); a ``preexec_fn`` could do the same but is unsafe in a threaded
    worker. Where setpriv is missing the orphan is only wasteful: its temp name is unique."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def render(
    args: list[str],
    *,
    duration_s: float,
    timeout_s: float,
    on_progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> None:
    """Run ffmpeg with ``-progress pipe:1`` in ``args``; report the share done (0..1).

    Kills ffmpeg on timeout (transient RenderError) or when ``should_cancel`` says so
    (RenderCancelled). stderr goes to a temporary file so a chatty ffmpeg cannot block on a
    full pipe while we read stdout."""
    cmd = [*_die_with_parent(), binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    cmd += args
    deadline = time.monotonic() + timeout_s
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        assert proc.stdout is not None
        try:
            _follow_progress(proc, duration_s, deadline, on_progress, should_cancel)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip()[-600:]
            raise _failed(proc.returncode, tail)


def _follow_progress(
    proc: subprocess.Popen[bytes],
    duration_s: float,
    deadline: float,
    on_progress: ProgressFn | None,
    should_cancel: CancelFn | None,
) -> None:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    buffer = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.25)
        if time.monotonic() > deadline:
            proc.kill()
            err = RenderError(f"ffmpeg took longer than its time limit ({duration_s:.0f} s video)")
            err.transient = True
            raise err
        if should_cancel is not None and should_cancel():
            proc.kill()
            raise RenderCancelled("the job was cancelled")
        if not ready:
            if proc.poll() is not None:
                return
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"out_time_us=") and on_progress is not None and duration_s > 0:
                try:
                    done = int(line.split(b"=", 1)[1]) / 1e6
                except ValueError:  # "N/A" before the first frame
                    continue
                on_progress(min(1.0, max(0.0, done / duration_s)))


def thumbnail(video: Path, out: Path, *, at_s: float, width: int = 540) -> None:
    """A JPEG of the frame at ``at_s``, ``width`` pixels wide."""
    with atomic_path(out) as tmp:
        run(
            [
                "-ss", f"{at_s:.3f}", "-i", str(video), "-frames:v", "1",
                "-vf", f"scale={width}:-2", "-q:v", "3", "-f", "image2", str(tmp),
            ],
            timeout_s=60,
        )  # fmt: skip


def frame(video: Path, out: Path, *, at_s: float) -> None:
    """One full-size PNG frame (for tests and OCR)."""
    run(["-ss", f"{at_s:.3f}", "-i", str(video), "-frames:v", "1", str(out)], timeout_s=60)


def preview(video: Path, out: Path, *, seconds: float = 6.0, width: int = 360) -> None:
    """A small, short MP4 to show in lists and chats: the first seconds, low resolution."""
    with atomic_path(out) as tmp:
        run(
            [
                "-i", str(video), "-t", f"{seconds:.2f}", "-vf", f"scale={width}:-2",
                "-c:v", "libx264", "-preset", "veryfast", "-crf", "28", *aac_args("64k"),
                "-movflags", "+faststart", "-f", "mp4", str(tmp),
            ],
            timeout_s=120,
        )  # fmt: skip
