"""Whisper via faster-whisper (CTranslate2), with the hallucination guard's raw figures."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from voice.audio import Float32Array
from voice.engines import Transcript, Word
from voice.errors import EngineError, ModelError

# Phrases Whisper is known to invent on silence or noise (it saw them in subtitles).
HALLUCINATIONS = frozenset(
    {
        "you",
        "thank you",
        "thank you.",
        "thanks for watching",
        "thanks for watching!",
        "thank you for watching",
        "thank you for watching.",
        "please subscribe",
        "bye",
        "bye.",
        "you.",
        "so",
        "so.",
        "okay.",
        ".",
        "...",
        "[music]",
        "(music)",
        "[blank_audio]",
        "[silence]",
        "subtitles by the amara.org community",
    }
)


def is_hallucination(text: str) -> bool:
    norm = " ".join(text.lower().split())
    return not norm.strip(" .,!?") or norm in HALLUCINATIONS


class WhisperTranscriber:
    """A loaded Whisper model. ``transcribe`` blocks: call it from a worker thread."""

    def __init__(
        self,
        model_path: Path,
        *,
        name: str,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        beam_size: int = 1,
        language: str | None = "en",
    ) -> None:
        from faster_whisper import WhisperModel

        self.name = name
        self._beam_size = beam_size
        self._language = language
        try:
            self._model = WhisperModel(
                str(model_path), device=device, compute_type=compute_type, cpu_threads=cpu_threads
            )
        except Exception as exc:  # ctranslate2 raises RuntimeError/ValueError on bad dirs
            raise ModelError(f"cannot load Whisper model {model_path}: {exc}", model=name) from exc
        # English-only models refuse a language argument other than "en".
        if not self._model.model.is_multilingual:
            self._language = "en"
        # CTranslate2 runs one decode at a time per model on CPU; serialising here keeps
        # concurrent sessions from oversubscribing the cores.
        self._lock = threading.Lock()

    def transcribe(self, audio: Float32Array, *, word_timestamps: bool = False) -> Transcript:
        if audio.size == 0:
            return Transcript(text="", no_speech_prob=1.0, model=self.name)
        try:
            with self._lock:
                segments, _info = self._model.transcribe(
                    np.ascontiguousarray(audio, dtype=np.float32),
                    language=self._language,
                    beam_size=self._beam_size,
                    word_timestamps=word_timestamps,
                    condition_on_previous_text=False,
                    vad_filter=False,
                    without_timestamps=not word_timestamps,
                )
                # The generator does the decoding: consume it here, inside the worker.
                segs = list(segments)
        except Exception as exc:
            raise EngineError(f"Whisper failed: {exc}", stage="asr", model=self.name) from exc
        text = " ".join(s.text.strip() for s in segs).strip()
        words = tuple(
            Word(w.word.strip(), float(w.start), float(w.end))
            for s in segs
            for w in (s.words or ())
        )
        return Transcript(
            text=text,
            no_speech_prob=max((s.no_speech_prob for s in segs), default=1.0),
            avg_logprob=float(np.mean([s.avg_logprob for s in segs])) if segs else -10.0,
            words=words,
            model=self.name,
        )
