"""A small set of spoken user turns made by the project: Piper speaks known sentences.

Used by ``bench/voice_latency.py`` and as the default set of ``castwork eval``. The clips are
synthesised once into ``<data_dir>/evalset/`` (16 kHz WAV + the reference text), so nothing
binary is committed and anyone can rebuild them bit for bit.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voice import audio as pcm
from voice.engines import Synthesizer

SENTENCES = (
    "What time does the store open tomorrow?",
    "Can you tell me a short joke about cats?",
    "I would like to book a table for two at seven.",
    "How is the weather going to be this weekend?",
    "Please remind me to call my sister tonight.",
    "What is the capital of France?",
    "My order has not arrived yet, can you check it?",
    "Recommend a good book for a long flight.",
    "How many minutes should I boil an egg?",
    "Thanks, that was really helpful.",
)


@dataclass(frozen=True)
class Clip:
    path: Path
    text: str

    def audio(self) -> pcm.Float32Array:
        samples, rate = pcm.read_wav(self.path)
        return pcm.resample(samples, rate, pcm.INTERNAL_RATE)


def build(tts: Synthesizer, directory: Path, sentences: tuple[str, ...] = SENTENCES) -> list[Clip]:
    """Synthesise the clips that are missing (atomically) and return the whole set."""
    directory.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, text in enumerate(sentences):
        path = directory / f"{i:02d}.wav"
        if not path.is_file():
            speech = pcm.concat(list(tts.synthesize(text)))
            audio = np.concatenate(
                [np.zeros(3200, np.float32), pcm.resample(speech, tts.sample_rate, 16_000)]
            )
            fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(pcm.wav_bytes(audio, 16_000))
            os.replace(tmp, path)
            path.with_suffix(".txt").write_text(text + "\n")
        clips.append(Clip(path, text))
    (directory / "set.json").write_text(
        json.dumps([{"wav": c.path.name, "text": c.text} for c in clips], indent=1)
    )
    return clips


def load(directory: Path) -> list[Clip]:
    """A set on disk: WAV files, each with a .txt of the same name holding the reference."""
    clips = [
        Clip(w, w.with_suffix(".txt").read_text().strip()) for w in sorted(directory.glob("*.wav"))
    ]
    if not clips:
        raise FileNotFoundError(f"no .wav clips in {directory}")
    return clips
