"""Audio at the edges: decode client formats into the one internal format, and back.

Inside Castwork audio is 16 kHz mono float32 in [-1, 1] (what Silero VAD and Whisper take).
Each edge converts once: client PCM16 24 kHz or G.711 8 kHz in, TTS output (Piper 22.05 kHz)
out to whatever the client asked for.
"""

from __future__ import annotations

import io
import wave
from collections import deque
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import soxr

INTERNAL_RATE = 16_000
# 32 ms at 16 kHz: the frame size Silero was trained on, the unit the session core counts in.
FRAME_SAMPLES = 512
AudioFormat = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
FORMAT_RATES: dict[str, int] = {"audio/pcm": 24_000, "audio/pcmu": 8_000, "audio/pcma": 8_000}

Float32Array = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]


def resample(audio: Float32Array, src_rate: int, dst_rate: int) -> Float32Array:
    if src_rate == dst_rate or audio.size == 0:
        return audio.astype(np.float32, copy=False)
    out: Float32Array = soxr.resample(audio, src_rate, dst_rate, quality="HQ").astype(np.float32)
    return out


def int16_to_float(samples: Int16Array) -> Float32Array:
    return (samples.astype(np.float32) / 32768.0).astype(np.float32)


def float_to_int16(samples: Float32Array) -> Int16Array:
    """The inverse of :func:`int16_to_float` (x 32768, rounded): full scale is -1 .. 32767/32768,
    so a round trip gives back the same samples."""
    return np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768.0).astype(np.int16)


# --- G.711 (ITU-T) -------------------------------------------------------------------------
# Decoding goes through 256-entry tables; encoding is the standard segment search, vectorised.

_MULAW_BIAS = 0x84
_SEG_END = np.array([0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF])


def _mulaw_decode_table() -> Int16Array:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _MULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _MULAW_BIAS - t, t - _MULAW_BIAS).astype(np.int16)


def _alaw_decode_table() -> Int16Array:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(
        seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << np.maximum(seg - 1, 0))
    )
    return np.where(a & 0x80, t, -t).astype(np.int16)


_MULAW_TABLE = _mulaw_decode_table()
_ALAW_TABLE = _alaw_decode_table()


def mulaw_encode(pcm: Int16Array) -> bytes:
    x = pcm.astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    x = np.minimum(np.abs(x), 8159) + (_MULAW_BIAS >> 2)
    seg = np.searchsorted(_SEG_END[:8] >> 2, x, side="left")
    out = np.where(seg >= 8, 0x7F, (seg << 4) | ((x >> (seg + 1)) & 0x0F))
    return (out ^ mask).astype(np.uint8).tobytes()


def alaw_encode(pcm: Int16Array) -> bytes:
    x = pcm.astype(np.int32) >> 3
    mask = np.where(x >= 0, 0xD5, 0x55)
    x = np.where(x >= 0, x, -x - 1)
    seg = np.searchsorted(_SEG_END[:8] >> 3, x, side="left")
    aval = np.where(seg < 2, (x >> 1) & 0x0F, (x >> seg) & 0x0F) | (seg << 4)
    out = np.where(seg >= 8, 0x7F, aval)
    return (out ^ mask).astype(np.uint8).tobytes()


def to_pcm16(data: bytes, fmt: str) -> Int16Array:
    """Client bytes -> 16-bit samples at the format's own rate."""
    if fmt == "audio/pcm":
        if len(data) % 2:
            raise ValueError("audio/pcm data must hold whole 16-bit samples")
        return np.frombuffer(data, dtype="<i2")
    if fmt == "audio/pcmu":
        return _MULAW_TABLE[np.frombuffer(data, dtype=np.uint8)]
    if fmt == "audio/pcma":
        return _ALAW_TABLE[np.frombuffer(data, dtype=np.uint8)]
    raise ValueError(f"unsupported audio format {fmt!r}")


def decode(data: bytes, fmt: str) -> Float32Array:
    """Client bytes -> internal 16 kHz float32, for a whole clip."""
    return resample(int16_to_float(to_pcm16(data, fmt)), FORMAT_RATES[fmt], INTERNAL_RATE)


class StreamDecoder:
    """Client bytes -> internal 16 kHz float32 for a stream of small chunks.

    The resampler keeps its filter state between chunks: resampling each 20-40 ms chunk on
    its own would put a discontinuity at every chunk boundary.
    """

    def __init__(self, fmt: str) -> None:
        if fmt not in FORMAT_RATES:
            raise ValueError(f"unsupported audio format {fmt!r}")
        self.fmt = fmt
        self._stream = soxr.ResampleStream(
            FORMAT_RATES[fmt], INTERNAL_RATE, 1, dtype="float32", quality="HQ"
        )

    def decode(self, data: bytes) -> Float32Array:
        out: Float32Array = self._stream.resample_chunk(int16_to_float(to_pcm16(data, self.fmt)))
        return out.astype(np.float32, copy=False)


def encode(samples: Float32Array, rate: int, fmt: str) -> bytes:
    """Float32 audio at ``rate`` -> client bytes in ``fmt``."""
    pcm = float_to_int16(resample(samples, rate, FORMAT_RATES[fmt]))
    if fmt == "audio/pcm":
        return pcm.astype("<i2").tobytes()
    if fmt == "audio/pcmu":
        return mulaw_encode(pcm)
    if fmt == "audio/pcma":
        return alaw_encode(pcm)
    raise ValueError(f"unsupported audio format {fmt!r}")


def bytes_per_ms(fmt: str) -> float:
    width = 2 if fmt == "audio/pcm" else 1
    return FORMAT_RATES[fmt] * width / 1000.0


def base64_ms(text: str, fmt: str) -> float:
    """How long the audio in base64 ``text`` lasts, read off its length: a limit can refuse it
    before anything is decoded (exact for valid base64; invalid base64 fails to decode later)."""
    padding = len(text) - len(text.rstrip("="))
    return max(0, len(text) // 4 * 3 - padding) / bytes_per_ms(fmt)


def read_wav(path: str | Path | bytes) -> tuple[Float32Array, int]:
    """Read a PCM16 WAV (any rate, mono or stereo; a file, or its bytes) as mono float32."""
    source = io.BytesIO(path) if isinstance(path, bytes) else str(path)
    with wave.open(source, "rb") as w:
        if w.getsampwidth() != 2:
            what = "the WAV" if isinstance(path, bytes) else path
            raise ValueError(f"{what}: only 16-bit PCM WAV is supported")
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        channels, rate = w.getnchannels(), w.getframerate()
    if channels > 1:
        frames = frames.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return int16_to_float(frames), rate


def wav_bytes(samples: Float32Array, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(float_to_int16(samples).astype("<i2").tobytes())
    return buf.getvalue()


def concat(chunks: list[Float32Array]) -> Float32Array:
    return (
        np.concatenate(chunks).astype(np.float32, copy=False)
        if chunks
        else np.zeros(0, dtype=np.float32)
    )


class Timeline:
    """A session's input audio on one clock that never goes back: ``end_ms`` is all the audio
    ever appended, and only the samples from ``start_ms`` on are kept (what came before was
    committed, cleared, or trimmed away while nobody spoke)."""

    def __init__(self) -> None:
        self._chunks: deque[Float32Array] = deque()
        self._start = 0  # sample positions on the session's clock
        self._end = 0

    @property
    def start_ms(self) -> float:
        return self._start * 1000 / INTERNAL_RATE

    @property
    def end_ms(self) -> float:
        return self._end * 1000 / INTERNAL_RATE

    @property
    def kept_ms(self) -> float:
        return (self._end - self._start) * 1000 / INTERNAL_RATE

    def append(self, samples: Float32Array) -> None:
        if len(samples):
            self._chunks.append(samples)
            self._end += len(samples)

    def slice(self, start_ms: float, end_ms: float) -> Float32Array:
        """The kept audio between two times of the clock (clipped to what is kept), as a new
        array: a view would hold the whole buffer alive in whoever keeps the slice."""
        a = int(max(0.0, start_ms - self.start_ms) * INTERNAL_RATE / 1000)
        b = int(max(0.0, end_ms - self.start_ms) * INTERNAL_RATE / 1000)
        parts: list[Float32Array] = []
        offset = 0
        for chunk in self._chunks:
            if offset >= b:
                break
            if offset + len(chunk) > a:
                parts.append(chunk[max(0, a - offset) : b - offset])
            offset += len(chunk)
        return concat(parts)  # np.concatenate copies, even a single part

    def keep_last(self, ms: float) -> None:
        """Forget all but the newest ``ms`` of audio."""
        drop = self._end - self._start - int(ms * INTERNAL_RATE / 1000)
        while drop > 0 and self._chunks:
            first = self._chunks[0]
            if len(first) <= drop:
                self._chunks.popleft()
                taken = len(first)
            else:
                self._chunks[0] = first[drop:].copy()  # a view would keep the whole chunk
                taken = drop
            self._start += taken
            drop -= taken

    def clear(self) -> None:
        self._chunks.clear()
        self._start = self._end


class AudioRateLimit:
    """Audio taken at up to ``rate`` times real time, with ``burst_ms`` of audio in hand: a
    token bucket counted in milliseconds of audio, refilled by the clock (seconds)."""

    def __init__(self, rate: float, burst_ms: float) -> None:
        self.rate, self.burst_ms = rate, burst_ms
        self._tokens = burst_ms
        self._at: float | None = None

    def take(self, ms: float, now: float) -> bool:
        """Whether ``ms`` of audio arriving at ``now`` is within the limit (it is then counted)."""
        if self._at is not None:
            refill = max(0.0, now - self._at) * 1000 * self.rate
            self._tokens = min(self.burst_ms, self._tokens + refill)
        self._at = now
        if ms > self._tokens:
            return False
        self._tokens -= ms
        return True


class FrameSplitter:
    """Cuts a stream of samples into fixed frames, carrying the remainder to the next push."""

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self._rest = np.zeros(0, dtype=np.float32)

    def push(self, samples: Float32Array) -> list[Float32Array]:
        data = np.concatenate([self._rest, samples]) if self._rest.size else samples
        n = len(data) // self.frame
        self._rest = data[n * self.frame :].copy()
        return [data[i * self.frame : (i + 1) * self.frame] for i in range(n)]
