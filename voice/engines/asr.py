"""Whisper via faster-whisper (CTranslate2), with the hallucination guard's raw figures."""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from base.errors import ModelError
from voice.audio import Float32Array
from voice.engines.contracts import Transcript, Word
from voice.errors import EngineError

FULL_WINDOW_S = 30  # what Whisper was trained on: every input is padded to 30 s
WINDOW_MARGIN_S = 2.0
_WORD = re.compile(r"[\w']+")


def _windowed_model(model_path: Path, **kwargs: Any) -> Any:
    """A faster-whisper model whose encoder may see a shorter window than 30 s.

    faster-whisper pads every input to 30 s of features, and the encoder's cost follows the
    window, not the speech: ~410 ms for tiny.en on 2 cores whether the turn lasts 1 s or 25.
    CTranslate2's encoder takes a shorter window (10 s: ~60 ms). Whisper never saw one in
    training, so the decoder may loop on it: :meth:`WhisperTranscriber.transcribe` checks the
    result and decodes again on the full window when it looks wrong."""
    from faster_whisper import WhisperModel

    class Windowed(WhisperModel):  # type: ignore[misc]
        frames: int | None = None  # the window for the next decode (None: 30 s)

        def encode(self, features: Any) -> Any:
            if self.frames is not None and features.shape[-1] > self.frames:
                features = features[..., : self.frames]
            return super().encode(features)

    return Windowed(str(model_path), **kwargs)


def looks_looped(text: str, seconds: float) -> bool:
    """Whether a short-window decode looks like the decoder ran on: a phrase repeated at the
    end ("Okay. Okay. Okay.", "What is the capital of France? What is the"), or more words
    than anyone says in the time. (A caller who really said "no, no" costs a second decode.)"""
    words = _WORD.findall(text.lower())
    if len(words) > 5 * max(seconds, 1.0):
        return True
    for k in range(1, len(words) // 2 + 1):
        if words[-k:] == words[-2 * k : -k]:
            return True
    # A loop cut off mid-phrase: the start of the text comes back at its end.
    head = words[:3]
    return len(words) >= 6 and len(head) == 3 and words[-3:] == head


class WhisperTranscriber:
    """A loaded Whisper model. ``transcribe`` blocks: call it from a worker thread.

    ``min_window_s`` > 0: turns shorter than the 30 s window are encoded in a window that
    fits them (at least ``min_window_s``, the speech plus 2 s), and decoded again on the full
    window when the result looks looped (:func:`looks_looped`). 0: always the full window.
    ``temperatures``: Whisper's fallback schedule; ``max_tokens_per_s`` > 0 bounds a turn's
    full-window decode to that many tokens per second of audio (word-timed alignment of
    known text is never bounded)."""

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
        min_window_s: float = 0.0,
        temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        max_tokens_per_s: float = 0.0,
    ) -> None:
        self.name = name
        self._beam_size = beam_size
        self._temperatures = temperatures
        self._max_tokens_per_s = max_tokens_per_s
        self._language = language
        self._min_window_s = min_window_s
        self.redecoded = 0  # short-window results that looked looped and were decoded again
        try:
            self._model = _windowed_model(
                model_path, device=device, compute_type=compute_type, cpu_threads=cpu_threads
            )
        except Exception as exc:  # ctranslate2 raises RuntimeError/ValueError on bad dirs
            raise ModelError(f"cannot load Whisper model {model_path}: {exc}", model=name) from exc
        # English-only models refuse a language argument other than "en".
        if not self._model.model.is_multilingual:
            self._language = "en"
        # CTranslate2 runs one decode at a time per model on CPU; serialising here keeps
        # concurrent sessions from oversubscribing the cores.
        self._lock = threading.Lock()

    def transcribe(
        self, audio: Float32Array, *, word_timestamps: bool = False, prompt: str | None = None
    ) -> Transcript:
        if audio.size == 0:
            return Transcript(text="", no_speech_prob=1.0, model=self.name)
        seconds = audio.size / 16_000
        window_s = max(self._min_window_s, math.ceil(seconds + WINDOW_MARGIN_S))
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        try:
            with self._lock:
                if self._min_window_s > 0 and window_s < FULL_WINDOW_S and not word_timestamps:
                    segs = self._decode(audio, int(window_s * 100), seconds, prompt=prompt)
                    if not looks_looped(_text(segs), seconds):
                        return self._transcript(segs)
                    self.redecoded += 1
                segs = self._decode(
                    audio, None, seconds, word_timestamps=word_timestamps, prompt=prompt
                )
        except Exception as exc:
            raise EngineError(f"Whisper failed: {exc}", stage="asr", model=self.name) from exc
        return self._transcript(segs)

    def _decode(
        self,
        audio: Float32Array,
        frames: int | None,
        seconds: float,
        *,
        word_timestamps: bool = False,
        prompt: str | None = None,
    ) -> list[Any]:
        self._model.frames = frames
        segments, _info = self._model.transcribe(
            audio,
            language=self._language,
            beam_size=self._beam_size,
            word_timestamps=word_timestamps,
            condition_on_previous_text=False,
            initial_prompt=prompt,
            vad_filter=False,
            # In a short window the timestamp tokens are what lets the decoder find the
            # speech's end (without them it loops far more often), and a bound on tokens
            # stops a loop early.
            without_timestamps=frames is None and not word_timestamps,
            max_new_tokens=self._token_bound(frames, seconds, word_timestamps),
            temperature=list(self._temperatures),
        )
        # The generator does the decoding: consume it here, inside the worker.
        return list(segments)

    def _token_bound(self, frames: int | None, seconds: float, word_timestamps: bool) -> int | None:
        if frames is not None:
            return int(seconds * 6 + 10)
        if self._max_tokens_per_s > 0 and not word_timestamps:
            return min(int(seconds * self._max_tokens_per_s + 10), 440)
        return None

    def _transcript(self, segs: list[Any]) -> Transcript:
        text = _text(segs)
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


def _text(segs: list[Any]) -> str:
    return " ".join(s.text.strip() for s in segs).strip()
