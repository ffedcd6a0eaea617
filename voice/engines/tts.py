"""Speech synthesis: Piper (neural, default) and espeak-ng (formant, fallback)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from base.errors import ModelError
from voice.audio import Float32Array, int16_to_float
from voice.errors import EngineError

# Piper and espeak choke on control characters and speak markup literally.
_UNSPEAKABLE = re.compile(r"[\x00-\x1f\x7f*_#`~<>\[\]{}|]+")


def clean_text(text: str) -> str:
    return " ".join(_UNSPEAKABLE.sub(" ", text).split())


class PiperSynthesizer:
    """A loaded Piper voice. ``synthesize`` blocks: iterate it in a worker thread."""

    def __init__(
        self, model_path: Path, *, name: str = "piper", length_scale: float = 1.0, threads: int = 2
    ) -> None:
        import json

        import onnxruntime
        from piper import PiperVoice, SynthesisConfig
        from piper.config import PiperConfig

        try:
            opts = onnxruntime.SessionOptions()
            opts.intra_op_num_threads = threads
            # No ONNX Runtime arena: it grows to fit every sentence length it has seen and
            # never gives that back (+200 MiB over 40 replies), while glibc's heap, which the
            # server trims when its last caller leaves, does (+3 MiB after the trim). Short
            # first pieces synthesise as fast without it (P50 ~71 ms both), whole sentences
            # 10-20% slower (40 replies, one thread: 13.0-13.9 s against 11.5-11.8 s).
            opts.enable_cpu_mem_arena = False
            # Idle pool threads would otherwise spin and steal the cores Whisper and the LLM need.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            config = PiperConfig.from_dict(json.loads(Path(f"{model_path}.json").read_text()))
            session = onnxruntime.InferenceSession(
                str(model_path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
            self._voice = PiperVoice(config=config, session=session)
        except Exception as exc:
            raise ModelError(f"cannot load Piper voice {model_path}: {exc}", model=name) from exc
        self._config = SynthesisConfig(length_scale=length_scale)
        self.name = name
        self.sample_rate: int = self._voice.config.sample_rate

    def synthesize(self, text: str) -> Iterator[Float32Array]:
        text = clean_text(text)
        if not text:
            return
        try:
            # Piper yields one chunk per sentence it finds in the text.
            for chunk in self._voice.synthesize(text, syn_config=self._config):
                yield int16_to_float(chunk.audio_int16_array)
        except Exception as exc:
            raise EngineError(f"Piper failed: {exc}", stage="tts", model=self.name) from exc


class EspeakSynthesizer:
    """espeak-ng through its command line: no weights, 35 ms for 4 s of speech."""

    sample_rate = 22_050

    def __init__(
        self, *, voice: str = "en-us", name: str = "espeak-ng", binary: str = "espeak-ng"
    ) -> None:
        path = shutil.which(binary)
        if path is None:
            raise ModelError(
                f"{binary} is not installed; run ./setup.sh (or: apt-get install espeak-ng)",
                model=name,
            )
        self._binary = path
        self._voice = voice
        self.name = name

    def synthesize(self, text: str) -> Iterator[Float32Array]:
        text = clean_text(text)
        if not text:
            return
        try:
            # Text goes on stdin, never on the command line: nothing is parsed as an option.
            proc = subprocess.run(
                [self._binary, "-v", self._voice, "--stdout"],
                input=text.encode(),
                capture_output=True,
                timeout=30,
                check=True,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            raise EngineError(f"espeak-ng failed: {exc}", stage="tts", model=self.name) from exc
        data = proc.stdout
        # A 44-byte RIFF header precedes the samples; espeak writes 22 050 Hz mono PCM16.
        pcm = np.frombuffer(data[44 : 44 + (len(data) - 44) // 2 * 2], dtype="<i2")
        yield int16_to_float(pcm)
