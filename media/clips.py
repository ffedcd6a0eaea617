"""Video clips as scenes: a merchant's MP4, MOV or WebM, checked and made ready to render.

An upload is a clip by its bytes (an ISO media file with a video brand, or a Matroska/WebM
header), never by its name. ffprobe reads it with a time limit; what it finds decides: the
container (MP4/MOV or WebM), a video stream in a codec we decode (H.264, HEVC, VP8, VP9, AV1,
MPEG-4, ProRes), its size and length within the limits. Then one ffmpeg run makes the form
every later stage reads: its first ``keep_s`` seconds, at most 1920 px on the long side, 30 fps,
H.264, and no sound (a clip's own audio would fight the narration and the music). A file
ffprobe or ffmpeg cannot read, a truncated one, one with no picture: refused with the reason,
naming the file, as a bad photo is.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.files import atomic_path
from media import ffmpeg
from media.errors import InputError, RenderError
from media.images import safe_name

# A prepared clip: the one suffix nothing else in inputs/ has (photos are .jpg, logos .png).
CLIP_SUFFIX = ".mp4"
CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "MP4/MOV", "matroska,webm": "WebM"}
VIDEO_CODECS = {"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "prores"}
# Brands of ISO media files that hold video (images use heic, avif... handled as photos).
_VIDEO_BRANDS = {
    b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"M4V ", b"qt  ",
    b"3gp4", b"3gp5", b"3gp6", b"3g2a", b"dash", b"mmp4", b"MSNV", b"XAVC", b"hvc1",
}  # fmt: skip
_EBML = b"\x1a\x45\xdf\xa3"
PROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ClipLimits:
    max_bytes: int = 100 << 20
    max_seconds: float = 60.0  # of the upload; only the first keep_s are used
    min_seconds: float = 0.5
    max_side: int = 4096
    keep_s: float = 10.0


@dataclass(frozen=True)
class PreparedClip:
    path: Path
    width: int
    height: int
    duration_s: float  # of what was kept
    had_audio: bool  # muted either way
    source_name: str


def sniff_video(data: bytes) -> str | None:
    """``mp4`` or ``webm`` when the bytes start like a video file, else None."""
    if data[:4] == _EBML:
        return "webm"
    if len(data) >= 12 and data[4:8] == b"ftyp":
        box_end = min(int.from_bytes(data[:4], "big"), len(data), 1024)
        brands = {data[8:12]} | {data[i : i + 4] for i in range(16, box_end - 3, 4)}
        image_only = {b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis"}
        if data[8:12] not in image_only and brands & _VIDEO_BRANDS:
            return "mp4"
    return None


def is_clip(path: Path) -> bool:
    """Whether a prepared input is a clip (photos and logos are never .mp4)."""
    return path.suffix == CLIP_SUFFIX


def _fail(name: str, problem: str, reason: str) -> InputError:
    return InputError(f"{name}: {problem}", upload=name, reason=reason, field="images")


def _probe(path: Path, name: str) -> dict[str, Any]:
    try:
        return ffmpeg.describe(path, timeout_s=PROBE_TIMEOUT_S)
    except ffmpeg.Unreadable as exc:
        problem = (
            "the video takes too long to read"
            if exc.timed_out
            else "not a video we can read (damaged or cut short?)"
        )
        raise _fail(name, problem, "video_unreadable") from None


def check(info: dict[str, Any], name: str, limits: ClipLimits) -> None:
    """Refuse the clip ffprobe described in ``info``, with the reason, if it breaks a rule (pure)."""
    container = info.get("format", {}).get("format_name", "")
    if container not in CONTAINERS:
        raise _fail(
            name, f"videos must be MP4, MOV or WebM, not {container or 'unknown'}", "video_format"
        )
    video = next((s for s in info.get("streams", []) if s.get("codec_type") == "video"), None)
    if video is None:
        raise _fail(name, "the file has no picture", "video_no_picture")
    codec = video.get("codec_name", "")
    if codec not in VIDEO_CODECS:
        known = ", ".join(sorted(VIDEO_CODECS))
        raise _fail(
            name, f"video codec {codec or 'unknown'} is not one we read ({known})", "video_codec"
        )
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if not (16 <= width <= limits.max_side and 16 <= height <= limits.max_side):
        raise _fail(
            name, f"the video is {width}x{height}; 16 to {limits.max_side} px a side", "video_size"
        )
    try:
        duration = float(info["format"].get("duration") or video.get("duration") or 0.0)
    except ValueError:
        duration = 0.0
    if not limits.min_seconds <= duration <= limits.max_seconds:
        raise _fail(
            name,
            f"the video lasts {duration:.1f} s; {limits.min_seconds:g} to {limits.max_seconds:g} s",
            "video_length",
        )


def prepare_clip(
    data: bytes | Path, out_dir: Path, *, name: str, limits: ClipLimits = ClipLimits()
) -> PreparedClip:
    """Validate one clip and write its normalized form into ``out_dir`` (``<hash>.mp4``)."""
    source_name = safe_name(name)
    raw = data.read_bytes() if isinstance(data, Path) else data
    if len(raw) > limits.max_bytes:
        raise _fail(
            name, f"the video is over the {limits.max_bytes >> 20} MB limit", "file_too_big"
        )
    if sniff_video(raw) is None:
        raise _fail(source_name, "not an MP4, MOV or WebM video", "video_format")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{hashlib.sha256(raw).hexdigest()[:16]}{CLIP_SUFFIX}"
    with tempfile.TemporaryDirectory(prefix="castwork-clip-") as tmp:
        source = Path(tmp) / "upload"
        source.write_bytes(raw)
        info = _probe(source, source_name)
        check(info, source_name, limits)
        had_audio = any(s.get("codec_type") == "audio" for s in info.get("streams", []))
        if not target.exists():
            with atomic_path(target) as part:
                try:
                    ffmpeg.run(
                        [
                            "-t", f"{limits.keep_s:.3f}", "-i", str(source), "-map", "0:v:0", "-an",
                            "-vf", "scale='if(gte(iw,ih),min(1920,iw),-2)':'if(gte(iw,ih),-2,min(1920,ih))',"
                            "fps=30,format=yuv420p,setsar=1",
                            "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
                            "-movflags", "+faststart", "-f", "mp4", str(part),
                        ],
                        timeout_s=120,
                    )  # fmt: skip
                except RenderError as exc:  # ffmpeg could not decode what ffprobe accepted
                    raise _fail(
                        source_name, "the video cannot be decoded (damaged?)", "video_unreadable"
                    ) from exc
    kept = ffmpeg.probe(target)
    return PreparedClip(
        path=target,
        width=kept.width or 0,
        height=kept.height or 0,
        duration_s=kept.duration,
        had_audio=had_audio,
        source_name=source_name,
    )
