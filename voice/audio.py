"""Audio at the edges: decode client formats into the one internal format, and back.

Inside Castwork audio is 16 kHz mono float32 in [-1, 1] (what Silero VAD and Whisper take).
Each edge converts once: client PCM16 24 kHz or G.711 8 kHz in, TTS output (Piper 22.05 kHz)
out to whatever the client asked for.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import soxr

INTERNAL_RATE = 16_000
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
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)


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


def read_wav(path: str | Path) -> tuple[Float32Array, int]:
    """Read a PCM16 WAV (any rate, mono or stereo) as mono float32."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
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
