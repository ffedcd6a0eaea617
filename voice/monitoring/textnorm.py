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
    if language == "ko":
        text = korean_numbers(text)
    return " ".join(normalizer(language)(text).split())


# Korean: Whisper writes a spoken number as digits or in Hangul ("25,000원" or "이만오천 원"),
# and word spacing varies ("이만오천원"): numbers are read out in Sino-Korean words, and
# scores on Korean count characters (CER), not space-separated words. Native Korean numbers
# ("세 시" for 3시) are not matched: the readings differ by counter.
_KO_DIGITS = "영일이삼사오육칠팔구"
_KO_SMALL = ((1000, "천"), (100, "백"), (10, "십"))
_KO_LARGE = ((10**12, "조"), (10**8, "억"), (10**4, "만"))
_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")


def _ko_below_10000(n: int) -> str:
    out = ""
    for unit, name in _KO_SMALL:
        d, n = divmod(n, unit)
        if d:
            out += ("" if d == 1 else _KO_DIGITS[d]) + name
    return out + (_KO_DIGITS[n] if n else "")


def _ko_integer(n: int) -> str:
    if n == 0:
        return _KO_DIGITS[0]
    out = ""
    for unit, name in _KO_LARGE:
        d, n = divmod(n, unit)
        if d:
            # 10000 is 만, not 일만 (as 1000 is 천).
            out += ("" if d == 1 and name == "만" else _ko_below_10000(d)) + name
    return out + _ko_below_10000(n)


def korean_numbers(text: str) -> str:
    """Arabic numbers as Sino-Korean words: ``25,000원`` -> ``이만오천원``, ``1.5`` -> ``일점오``."""

    def read(match: re.Match[str]) -> str:
        whole, _, fraction = match.group(0).replace(",", "").partition(".")
        words = _ko_integer(int(whole))
        if fraction:
            words += "점" + "".join(_KO_DIGITS[int(d)] for d in fraction)
        return words

    return _NUMBER.sub(read, text)


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


# Languages written without reliable word spacing: errors counted per character (CER).
BY_CHARACTER = frozenset({"ko", "ja", "zh"})


def word_errors(reference: str, hypothesis: str, language: str = "en") -> WordErrors:
    """Edits between reference and hypothesis, normalized: per word, or per character (spaces
    dropped) for :data:`BY_CHARACTER` languages."""
    ref, hyp = normalize(reference, language), normalize(hypothesis, language)
    if language in BY_CHARACTER:
        ref, hyp = " ".join(ref.replace(" ", "")), " ".join(hyp.replace(" ", ""))
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
