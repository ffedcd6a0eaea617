"""A merchant's music track under the narration, in place of the house music.

An upload is checked like a clip (:mod:`media.clips`): its bytes must start like an audio file
(MP3, AAC/M4A, Ogg, FLAC, WAV or WebM), ffprobe reads it with a time limit and must find an
audio stream in a codec we decode and a length within the limits. One ffmpeg run decodes its
first ``keep_s`` seconds to 48 kHz stereo; then it is **loudness-normalised** to the level of
the house music (BS.1770 integrated loudness, as the mixer measures it), so a hot master and a
quiet demo sit the same way under the voice, and its true peaks are held under the mixer's
ceiling. The soundtrack mixer (:mod:`media.soundtrack`) then ducks it under the narration and
fades it out exactly as it does the house music.

A track shorter than the ad is looped with a crossfade (a hard cut at the loop point clicks).
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from media import ffmpeg
from media.errors import InputError, RenderError
from media.images import safe_name
from media.music import Float32Array, write_wav_atomic
from media.soundtrack import RATE, SILENCE_LUFS, integrated_lufs, limit

# The integrated loudness of the house music as synthesized (media.music: bright -15.1,
# pulse -13.4, calm -12.0 LUFS; tests/test_brand_kit.py keeps this honest). A track is brought
# to it, so a template's music_gain_db and duck_db mean the same for every track.
HOUSE_MUSIC_LUFS = -13.5
_CEILING_DB = -1.0
_CROSSFADE_S = 1.0
_FADE_IN_S = 0.05  # a track cut mid-note would click at the start otherwise
PROBE_TIMEOUT_S = 30.0
AUDIO_CODECS = {
    "mp3", "aac", "vorbis", "opus", "flac", "alac",
    "pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_u8",
}  # fmt: skip
# What the first bytes of an audio file look like; the name of an upload proves nothing.
_MP4_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"mp42", b"isom", b"mp41", b"dash", b"iso5", b"iso6"}


@dataclass(frozen=True)
class TrackLimits:
    max_bytes: int = 20 << 20
    max_seconds: float = 900.0  # of the upload; only the first keep_s are used
    min_seconds: float = 2.0
    keep_s: float = 120.0


@dataclass(frozen=True)
class PreparedTrack:
    path: Path  # 16-bit stereo WAV at RATE, normalised
    duration_s: float  # of what was kept
    source_lufs: float  # the upload's loudness before normalising
    codec: str
    source_name: str


def sniff_audio(data: bytes) -> str | None:
    """A name for the container when the bytes start like an audio file we take, else None."""
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"  # an ID3 tag, or an MPEG audio frame sync (ADTS AAC starts so too)
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in _MP4_AUDIO_BRANDS:
        return "m4a"
    return None


def _fail(name: str, problem: str, reason: str) -> InputError:
    return InputError(f"{name}: {problem}", upload=name, reason=reason, field="music_track")


def _probe(path: Path, name: str) -> dict[str, Any]:
    try:
        return ffmpeg.describe(path, timeout_s=PROBE_TIMEOUT_S)
    except ffmpeg.Unreadable as exc:
        problem = (
            "the track takes too long to read"
            if exc.timed_out
            else "not audio we can read (damaged or cut short?)"
        )
        raise _fail(name, problem, "audio_unreadable") from None


def check(info: dict[str, Any], name: str, limits: TrackLimits) -> str:
    """The codec of the track ffprobe described in ``info``; refused with the reason if it
    breaks a rule (pure)."""
    audio = next((s for s in info.get("streams", []) if s.get("codec_type") == "audio"), None)
    if audio is None:
        raise _fail(name, "the file has no sound", "audio_none")
    codec = str(audio.get("codec_name", ""))
    if codec not in AUDIO_CODECS:
        known = ", ".join(sorted(AUDIO_CODECS))
        raise _fail(name, f"audio codec {codec or 'unknown'} is not one we read ({known})", "codec")
    try:
        duration = float(info.get("format", {}).get("duration") or audio.get("duration") or 0.0)
    except ValueError:
        duration = 0.0
    if not limits.min_seconds <= duration <= limits.max_seconds:
        raise _fail(
            name,
            f"the track lasts {duration:.1f} s; {limits.min_seconds:g} to {limits.max_seconds:g} s",
            "audio_length",
        )
    return codec


def _decode(source: Path, name: str, keep_s: float) -> Float32Array:
    cmd = [
        ffmpeg.binary(), "-hide_banner", "-nostdin", "-v", "error", "-t", f"{keep_s:.3f}",
        "-i", str(source), "-map", "0:a:0", "-vn", "-ac", "2", "-ar", str(RATE),
        "-f", "f32le", "-",
    ]  # fmt: skip
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise _fail(name, "the track takes too long to decode", "audio_unreadable") from None
    if out.returncode != 0 or not out.stdout:
        raise _fail(name, "the track cannot be decoded (damaged?)", "audio_unreadable")
    samples = np.frombuffer(out.stdout, dtype="<f4")
    return np.ascontiguousarray(samples[: len(samples) // 2 * 2].reshape(-1, 2))


def normalise(samples: Float32Array, name: str = "track") -> tuple[Float32Array, float]:
    """(``samples`` at the house music's loudness with true peaks under the ceiling, their
    loudness before); refuses a silent track."""
    lufs = integrated_lufs(samples)
    if lufs <= SILENCE_LUFS:
        raise _fail(name, "the track is silent", "audio_silent")
    gained = (samples * np.float32(10 ** ((HOUSE_MUSIC_LUFS - lufs) / 20))).astype(np.float32)
    out = limit(gained, _CEILING_DB)
    ramp = min(len(out), int(_FADE_IN_S * RATE))
    out[:ramp] *= np.linspace(0.0, 1.0, ramp, dtype=np.float32)[:, None]
    return out, lufs


def prepare_track(
    data: bytes | Path, out_dir: Path, *, name: str, limits: TrackLimits = TrackLimits()
) -> PreparedTrack:
    """Validate one music track and write its normalised form into ``out_dir``
    (``track-<hash>.wav``)."""
    source_name = safe_name(name)
    raw = data.read_bytes() if isinstance(data, Path) else data
    if len(raw) > limits.max_bytes:
        raise _fail(name, f"the track is over the {limits.max_bytes >> 20} MB limit", "too_large")
    if sniff_audio(raw[:64]) is None:
        raise _fail(
            source_name, "not an audio file (send MP3, AAC/M4A, Ogg, FLAC, WAV)", "audio_format"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"track-{hashlib.sha256(raw).hexdigest()[:16]}.wav"
    with tempfile.TemporaryDirectory(prefix="castwork-track-") as tmp:
        source = Path(tmp) / "upload"
        source.write_bytes(raw)
        codec = check(_probe(source, source_name), source_name, limits)
        samples, lufs = normalise(_decode(source, source_name, limits.keep_s), source_name)
    if not target.exists():
        write_wav_atomic(target, samples, RATE)
    return PreparedTrack(target, len(samples) / RATE, lufs, codec, source_name)


def load_track(path: Path, duration_s: float) -> Float32Array:
    """A prepared track as (n, 2) float32 of exactly ``duration_s``: cut, or looped with a
    crossfade when shorter."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 2 or w.getframerate() != RATE:
            raise RenderError(f"{path.name}: not a prepared track (16-bit stereo {RATE} Hz)")
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    track = (frames.reshape(-1, 2).astype(np.float32) / np.float32(32768.0)).copy()
    n = max(1, round(duration_s * RATE))
    if len(track) >= n:
        return track[:n]
    fade = min(int(_CROSSFADE_S * RATE), len(track) // 3)
    out = track
    up = np.linspace(0.0, 1.0, fade, dtype=np.float32)[:, None]
    while len(out) < n:
        # Equal-gain crossfade: the tail fades out while the head fades in over it.
        seam = out[len(out) - fade :] * (1 - up) + track[:fade] * up
        out = np.concatenate([out[: len(out) - fade], seam, track[fade:]])
    return np.ascontiguousarray(out[:n])
