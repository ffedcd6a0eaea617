"""Word error rate with Whisper's text normalizers, so "$25" and "twenty-five dollars",
"Dr." and "doctor", "colour" and "color" are the same words.

The normalizers are OpenAI Whisper's own (``EnglishTextNormalizer``: numbers and currencies
to digits, abbreviations and titles expanded, British spellings to American, punctuation and
fillers dropped; ``BasicTextNormalizer`` for other languages), from the ``whisper-normalizer``
package (MIT) so that we do not pull the whole ``openai-whisper`` and its torch pin.
The alignment itself is ``jiwer``'s.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import jiwer


@cache
def normalizer(language: str = "en") -> Callable[[str], str]:
    if language == "en":
        from whisper_normalizer.english import EnglishTextNormalizer

        return EnglishTextNormalizer()  # type: ignore[no-any-return]
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()  # type: ignore[no-any-return]


# Where Whisper's English normalizer gives two spellings of one thing different words:
# "4:30" became "4 30" but "four thirty" "430"; "9 p.m." became "p m" but "9pm" "pm".
_EN_BEFORE = (
    (re.compile(r"\b(\d{1,2})[:.](\d{2})\b"), r"\1\2"),
    (re.compile(r"\b([ap])\.\s?m\b\.?", re.IGNORECASE), r"\1m"),
)


def normalize(text: str, language: str = "en") -> str:
    if language == "en":
        for pattern, replacement in _EN_BEFORE:
            text = pattern.sub(replacement, text)
    return " ".join(normalizer(language)(text).split())


@dataclass(frozen=True)
class WordErrors:
    """Counts over one or more utterances; ``rate`` is the corpus WER (edits / reference words)."""

    reference_words: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def edits(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        if self.reference_words == 0:
            return 0.0 if self.insertions == 0 else 1.0
        return self.edits / self.reference_words

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(
            self.reference_words + other.reference_words,
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
        )


NO_ERRORS = WordErrors(0, 0, 0, 0)


def word_errors(reference: str, hypothesis: str, language: str = "en") -> WordErrors:
    ref, hyp = normalize(reference, language), normalize(hypothesis, language)
    if not ref:  # jiwer refuses an empty reference: every hypothesis word is an insertion
        return WordErrors(0, 0, 0, len(hyp.split()))
    if not hyp:
        return WordErrors(len(ref.split()), 0, len(ref.split()), 0)
    out = jiwer.process_words(ref, hyp)
    return WordErrors(
        out.hits + out.substitutions + out.deletions,
        out.substitutions,
        out.deletions,
        out.insertions,
    )


def corpus_errors(pairs: Sequence[tuple[str, str]], language: str = "en") -> WordErrors:
    total = NO_ERRORS
    for ref, hyp in pairs:
        total = total + word_errors(ref, hyp, language)
    return total
