from __future__ import annotations

import numpy as np
import pytest

from voice import audio


def _tone(rate: int, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["audio/pcm", "audio/pcmu", "audio/pcma"])
def test_round_trip_keeps_the_signal(fmt: str) -> None:
    tone = _tone(audio.INTERNAL_RATE)
    data = audio.encode(tone, audio.INTERNAL_RATE, fmt)
    assert len(data) == pytest.approx(audio.bytes_per_ms(fmt) * 500, abs=4)
    back = audio.decode(data, fmt)
    assert abs(len(back) - len(tone)) <= 2
    n = min(len(back), len(tone)) - 200
    err = np.sqrt(np.mean((back[100:n] - tone[100:n]) ** 2))
    assert err < (0.002 if fmt == "audio/pcm" else 0.02)


def test_g711_matches_reference_points() -> None:
    # ITU-T G.711: silence encodes to 0xFF (mu-law) and 0xD5 (A-law); extremes saturate.
    pcm = np.array([0, 32767, -32768], dtype=np.int16)
    assert audio.mulaw_encode(pcm) == bytes([0xFF, 0x80, 0x00])
    assert audio.alaw_encode(pcm) == bytes([0xD5, 0xAA, 0x2A])


def test_odd_pcm_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match="whole 16-bit samples"):
        audio.decode(b"\x00\x01\x02", "audio/pcm")


def test_stream_decoder_matches_whole_clip_decoding() -> None:
    tone = _tone(24_000, 1.0)
    data = audio.encode(tone, 24_000, "audio/pcm")
    decoder = audio.StreamDecoder("audio/pcm")
    chunked = np.concatenate([decoder.decode(data[i : i + 960]) for i in range(0, len(data), 960)])
    whole = audio.decode(data, "audio/pcm")
    n = min(len(chunked), len(whole)) - 400
    # Same signal, no seams every 20 ms (the stream lags by the filter's delay).
    lag = int(np.argmax(np.correlate(chunked[400:1400], whole[400:900], mode="valid")))
    assert np.max(np.abs(chunked[400 + lag : n] - whole[400 : n - lag])) < 0.01
