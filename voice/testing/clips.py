"""A bundled clip for smoke tests: `castwork doctor` and the tests that run the real models."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from voice.audio import Float32Array, read_wav, resample

CLIP_TEXT = (
    "Hello, this is a test of the voice assistant. Please check the weather for tomorrow morning."
)


def bundled_clip() -> Float32Array:
    """A 5 s English utterance made with the project's own Piper voice (16 kHz)."""
    audio, rate = read_wav(Path(str(files("voice") / "assets" / "hello.wav")))
    return resample(audio, rate, 16_000)
