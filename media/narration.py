"""Narration of an ad: the copy spoken by the project's TTS, with caption timings.

The script is spoken one sentence at a time, so sentence boundaries in the audio are exact
(we placed them). Inside a sentence the caption phrases (a few words each) are timed by
aligning the audio with faster-whisper's word timestamps when an aligner is given; where a
word is not found, its time is interpolated from its neighbours by character count. Captions
show the script's own words either way: Whisper only tells us *when*, never *what*.

Engine choice follows the language: Piper (neural, English) for ``en``; espeak-ng for ``ko``
until a Korean neural voice ships in a package (see README). A failing engine falls back to
espeak-ng for the whole script, so a job never ends up half in one voice.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voice.audio import Float32Array, resample
from voice.engines.contracts import Synthesizer, Transcriber
from voice.errors import EngineError

log = logging.getLogger(__name__)

SENTENCE_PAUSE_S = 0.18
# Captions: short enough to read at a glance on a phone, long enough not to flicker.
MAX_CAPTION_WORDS = 5
MAX_CAPTION_CHARS = 30
_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])\s+")
_CLAUSE_END = re.compile(r"[,;:，、]$")
_WORD_CHARS = re.compile(r"[^\w%$€£₩¥]+")


@dataclass(frozen=True)
class Word:
    """One script word and when it is spoken (narration seconds)."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Phrase:
    """One caption: the script's words, shown from ``start`` to ``end`` (narration seconds).

    ``words`` times each of them (for word-by-word captions): in order, inside the phrase, never
    overlapping; empty where only the phrase's time is known."""

    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()

    def shifted(self, offset: float, limit: float) -> Phrase:
        """The same caption ``offset`` seconds later, nothing past ``limit``."""
        return Phrase(
            self.text,
            self.start + offset,
            min(limit, self.end + offset),
            tuple(
                Word(w.text, min(limit, w.start + offset), min(limit, w.end + offset))
                for w in self.words
            ),
        )


@dataclass(frozen=True)
class Narration:
    text: str
    audio: Float32Array  # mono float32
    sample_rate: int
    sentences: tuple[Phrase, ...]
    phrases: tuple[Phrase, ...]
    engine: str
    aligned: bool  # caption times from Whisper word timestamps (else by character count)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


Row = tuple[str, float, float]  # a Phrase or Word as JSON stores it


def phrases_from_rows(phrases: Sequence[Row], words: Sequence[Row]) -> list[Phrase]:
    """Phrases back from their stored rows; ``words`` is every phrase's words in order, as many
    as the phrases' texts have (else, as in files from before word timings, none is used)."""
    counts = [len(text.split()) for text, _, _ in phrases]
    if sum(counts) != len(words):
        return [Phrase(*p) for p in phrases]
    out: list[Phrase] = []
    at = 0
    for p, n in zip(phrases, counts, strict=True):
        out.append(Phrase(*p, words=tuple(Word(*w) for w in words[at : at + n])))
        at += n
    return out


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def caption_groups(words: Sequence[str]) -> list[tuple[int, int]]:
    """Split a sentence's words into caption phrases: [start, end) index pairs.

    Break after a clause mark when the phrase has two words or more, else when it would grow
    past MAX_CAPTION_WORDS / MAX_CAPTION_CHARS. The last phrase absorbs a lone trailing word
    so that no caption is a single orphan like "now."."""
    groups: list[tuple[int, int]] = []
    start = 0
    chars = 0
    for i, word in enumerate(words):
        if i > start and (i - start >= MAX_CAPTION_WORDS or chars + len(word) > MAX_CAPTION_CHARS):
            groups.append((start, i))
            start, chars = i, 0
        chars += len(word) + 1
        if _CLAUSE_END.search(word) and i + 1 - start >= 2:
            groups.append((start, i + 1))
            start, chars = i + 1, 0
    if start < len(words):
        if groups and len(words) - start == 1 and groups[-1][1] - groups[-1][0] < MAX_CAPTION_WORDS:
            groups[-1] = (groups[-1][0], len(words))
        else:
            groups.append((start, len(words)))
    return groups


def _voiced_span(audio: Float32Array, rate: int) -> tuple[int, int]:
    """First and last sample above a quiet floor: Piper pads sentences with silence."""
    if audio.size == 0:
        return 0, 0
    win = max(1, rate // 100)
    n = len(audio) // win
    if n == 0:
        return 0, len(audio)
    rms = np.sqrt(np.mean(audio[: n * win].reshape(n, win) ** 2, axis=1))
    loud = np.flatnonzero(rms > max(1e-3, float(rms.max()) * 0.05))
    if loud.size == 0:
        return 0, len(audio)
    return int(loud[0]) * win, min(len(audio), (int(loud[-1]) + 1) * win)


def _speak(synth: Synthesizer, text: str) -> Float32Array:
    chunks = list(synth.synthesize(text))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _synthesize(
    sentences: list[str], synth: Synthesizer
) -> tuple[Float32Array, list[tuple[float, float]]]:
    """Speak each sentence; trim its padding; return audio and each sentence's voiced span."""
    rate = synth.sample_rate
    pause = np.zeros(round(SENTENCE_PAUSE_S * rate), dtype=np.float32)
    pieces: list[Float32Array] = []
    spans: list[tuple[float, float]] = []
    cursor = 0
    for i, sentence in enumerate(sentences):
        audio = _speak(synth, sentence)
        a, b = _voiced_span(audio, rate)
        # Keep 40 ms either side so plosives and breaths are not clipped.
        pad = rate // 25
        audio = audio[max(0, a - pad) : min(len(audio), b + pad)]
        if i:
            pieces.append(pause)
            cursor += len(pause)
        spans.append((cursor / rate, (cursor + len(audio)) / rate))
        pieces.append(audio)
        cursor += len(audio)
    if not pieces:
        return np.zeros(0, dtype=np.float32), []
    return np.concatenate(pieces), spans


def _norm(word: str) -> str:
    return _WORD_CHARS.sub("", word.lower())


def _word_times(
    words: list[str], span: tuple[float, float], heard: Sequence[tuple[str, float, float]]
) -> tuple[list[tuple[float, float]], int]:
    """Times for each script word of one sentence: from the aligner where the words match,
    else spread over the sentence by character count. Returns the times and how many matched."""
    start, end = span
    weights = np.array([max(1, len(w)) for w in words], dtype=np.float64)
    edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
    times = [(float(edges[i]), float(edges[i + 1])) for i in range(len(words))]
    inside = [h for h in heard if h[2] > start - 0.1 and h[1] < end + 0.1]
    if not inside:
        return times, 0
    matcher = difflib.SequenceMatcher(
        a=[_norm(w) for w in words], b=[_norm(h[0]) for h in inside], autojunk=False
    )
    matched = 0
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            h = inside[block.b + k]
            times[block.a + k] = (max(start, h[1]), min(end, h[2]))
            matched += 1
    return times, matched


def _phrases(
    sentences: list[str],
    spans: list[tuple[float, float]],
    heard: Sequence[tuple[str, float, float]],
) -> tuple[list[Phrase], float]:
    phrases: list[Phrase] = []
    total = matched = 0
    for sentence, span in zip(sentences, spans, strict=True):
        words = sentence.split()
        times, m = _word_times(words, span, heard)
        total += len(words)
        matched += m
        for a, b in caption_groups(words):
            timed = tuple(Word(words[i], *times[i]) for i in range(a, b))
            phrases.append(Phrase(" ".join(words[a:b]), times[a][0], times[b - 1][1], timed))
    # Captions must never overlap or run backwards, whatever the aligner said.
    fixed: list[Phrase] = []
    for p in phrases:
        start = max(p.start, fixed[-1].end if fixed else 0.0)
        end = max(p.end, start + 0.2)
        fixed.append(Phrase(p.text, start, end, _ordered(p.words, start, end)))
    return fixed, (matched / total if total else 0.0)


def _ordered(words: Sequence[Word], start: float, end: float) -> tuple[Word, ...]:
    """Word times inside [start, end], each starting no earlier than the one before ends:
    a word the aligner placed out of order is squeezed in rather than shown backwards."""
    out: list[Word] = []
    cursor = start
    for w in words:
        a = min(end, max(cursor, w.start))
        b = min(end, max(a, w.end))
        out.append(Word(w.text, a, b))
        cursor = b
    return tuple(out)


def narrate(
    text: str,
    synth: Synthesizer,
    *,
    fallback: Synthesizer | None = None,
    aligner: Transcriber | None = None,
) -> Narration:
    """Speak ``text`` and time its caption phrases. Blocking (TTS and Whisper run here)."""
    sentences = split_sentences(text)
    engine = getattr(synth, "name", type(synth).__name__)
    try:
        audio, spans = _synthesize(sentences, synth)
        rate = synth.sample_rate
    except EngineError:
        if fallback is None:
            raise
        log.warning("narration: %s failed; speaking the whole script with the fallback", engine)
        engine = getattr(fallback, "name", type(fallback).__name__)
        audio, spans = _synthesize(sentences, fallback)
        rate = fallback.sample_rate
    heard: list[tuple[str, float, float]] = []
    if aligner is not None and audio.size:
        try:
            transcript = aligner.transcribe(resample(audio, rate, 16_000), word_timestamps=True)
            heard = [(w.text, w.start, w.end) for w in transcript.words]
        except EngineError as exc:
            # Captions fall back to character timing; the ad is still right.
            log.warning("narration: alignment failed (%s); timing captions by characters", exc)
    phrases, match_rate = _phrases(sentences, spans, heard)
    return Narration(
        text=" ".join(sentences),
        audio=audio,
        sample_rate=rate,
        sentences=tuple(Phrase(s, a, b) for s, (a, b) in zip(sentences, spans, strict=True)),
        phrases=tuple(phrases),
        engine=engine,
        # Half the words found is enough to trust the timing of the rest by interpolation.
        aligned=match_rate >= 0.5,
    )
