"""Smart Turn v3.2 (Pipecat's end-of-turn model): does the audio so far sound finished?

The model (ONNX, 8.7 MB, BSD-2-Clause, 23 languages) reads the last 8 s of the turn at
16 kHz as Whisper-style log-mel features (80 bins x 800 frames) and gives the probability
that the speaker has finished. Its input, per its model card and Pipecat's own loader: the
audio's last 8 s, zero-padded at the front when shorter; the waveform normalised to zero
mean and unit variance before the spectrogram; Whisper's log-mel (log10, floored 8 below
the peak, then (x + 4) / 4). faster-whisper's feature extractor computes that log-mel, so we
use it rather than a copy of Pipecat's.

One inference takes ~50 ms on one thread: call it off the event loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from base.errors import ModelError
from voice import audio as pcm

RATE = 16_000
WINDOW_S = 8
_WINDOW = RATE * WINDOW_S
_FRAMES = _WINDOW // 160  # Whisper's hop: 10 ms


class SmartTurn:
    """An end-of-turn model loaded from an ONNX file (see :func:`voice.engines.registry.resolve_turn`)."""

    def __init__(self, path: Path, *, name: str = "smart-turn-v3.2", threads: int = 1) -> None:
        import onnxruntime as ort
        from faster_whisper.feature_extractor import FeatureExtractor

        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types on a bad file
            raise ModelError(f"cannot load end-of-turn model {path}: {exc}", model=name) from exc
        inputs = {i.name: i.shape for i in self._session.get_inputs()}
        if list(inputs) != ["input_features"] or list(inputs["input_features"])[1:] != [
            80,
            _FRAMES,
        ]:
            raise ModelError(
                f"{path} is not a Smart Turn v3 model (inputs {inputs}; expected input_features "
                f"[batch, 80, {_FRAMES}])",
                model=name,
            )
        self.name = name
        self._mel = FeatureExtractor(feature_size=80, sampling_rate=RATE, chunk_length=WINDOW_S)

    def features(self, audio: pcm.Float32Array) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The model's input for ``audio`` (16 kHz mono float32): shape (80, 800)."""
        window = np.zeros(_WINDOW, dtype=np.float32)
        tail = np.asarray(audio, dtype=np.float32)[-_WINDOW:]
        if len(tail):
            window[-len(tail) :] = tail
        window = (window - window.mean()) / np.sqrt(window.var() + 1e-7)
        mel = self._mel(window, padding=0)
        return np.asarray(mel[:, :_FRAMES], dtype=np.float32)

    def probability(self, audio: pcm.Float32Array) -> float:
        """How sure the model is that the turn in ``audio`` is finished (0 to 1)."""
        features = self.features(audio)[np.newaxis]
        (out,) = self._session.run(None, {"input_features": features})
        return float(np.asarray(out).reshape(-1)[0])
