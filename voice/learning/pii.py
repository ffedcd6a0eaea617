"""Personal-data masking for text that is stored or logged (transcripts, replies, captured cases).

Pure and deterministic: :func:`mask` replaces what looks like an e-mail address, a card
number, a Korean resident registration number, a phone number or another long identifying
number with a bracketed tag, and says which kinds it found. It errs towards masking: a
false positive costs a word in a log, a miss leaks a person's number.

Speech-to-text writes numbers in many shapes ("010-1234-5678", "010 1234 5678",
"+82 10 1234 5678", "(555) 123-4567", "4111 1111 1111 1111"), so the patterns allow
spaces, dots and dashes between digit groups. Order matters: the most specific pattern
runs first, so a card number is not half-masked as a phone number.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

_SEP = r"[ .\-]?"  # between digit groups, as ASR and people write them

_EMAIL = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._%+\-]*@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
)
# Also the spoken form an ASR writes: "kim dot min at example dot com".
_SPOKEN_EMAIL = re.compile(
    r"\b[\w.]+(?: dot [\w]+)* at [\w\-]+(?: dot [\w\-]+)*\s?(?:dot|\.)\s?(?:com|net|org|kr|io|co)\b",
    re.IGNORECASE,
)
# Korean resident registration number: YYMMDD-SXXXXXX, S in 1-8 (1-4 citizens, 5-8 foreigners).
_RRN = re.compile(
    r"(?<!\d)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\s?[-–]?\s?[1-8]\d{6}(?!\d)"
)
# Payment cards: 13 to 19 digits, optionally in groups of 4 (Amex 4-6-5).
_CARD = re.compile(r"(?<!\d)(?:\d{4}[ \-]?){3}\d{1,7}(?!\d)|(?<!\d)\d{4}[ \-]\d{6}[ \-]\d{5}(?!\d)")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    # Korean: mobile 010/011/016-019, Seoul 02, regions 0XX, optional +82 (drops the 0).
    rf"(?:\+82{_SEP}(?:0)?|0)(?:1[016789]|2|[3-6][1-5]|70){_SEP}\d{{3,4}}{_SEP}\d{{4}}"
    # North American: +1, (555) 123-4567, 555-123-4567, 555.123.4567.
    rf"|(?:\+?1{_SEP})?\(?\d{{3}}\)?{_SEP}\d{{3}}{_SEP}\d{{4}}"
    # Any other international number: + then 8 to 15 digits in groups.
    rf"|\+\d{{1,3}}(?:{_SEP}\d{{1,4}}){{2,5}}"
    r")(?!\d)"
)
# Whatever is left with 9 or more digits in a row (account numbers, passport numbers...).
_LONG_NUMBER = re.compile(r"(?<!\d)\d(?:[ \-]?\d){8,}(?!\d)")

# Numbers read out digit by digit, as callers give a phone or card number and as an ASR writes
# them: "oh one oh, one two three four", "double five", "공일공 일이삼사에 오육칠팔". A run of
# digit words (and digit groups) that adds up to 7 or more digits is masked: no ordinary
# sentence says seven digits one by one, and the shortest local phone numbers have seven.
_EN_DIGITS = r"(?:zero|oh|o|one|two|three|four|five|six|seven|eight|nine)"
_EN_TOKEN = rf"(?:(?:double|triple)[ \-]{_EN_DIGITS}|{_EN_DIGITS}|\d+)"
_EN_RUN = re.compile(rf"\b{_EN_TOKEN}(?:[ ,\-]+{_EN_TOKEN})*\b", re.IGNORECASE)
# Sino-Korean digits. A group is a whole word of them (so 오늘, 회사, 이사 never match);
# callers often end a group with 에 ("공일공에 일이삼사"), and the last group may carry a
# particle ("...오육칠팔로"). The last group has two digits or more, so that a particle word
# such as "이에요" after a number is not read as one more digit.
_KO_D = r"[공영일이삼사오육륙칠팔구]"
_KO_SEP = r"(?:에?[ ,\-]+|에)"
_KO_PARTICLE = r"번?(?:으로|로|이에요|예요|에요|입니다|이고|이요|은|는|을|를|이|가|와|과|고|요)?"
_KO_RUN = re.compile(
    rf"(?<![가-힣\d])(?:(?:{_KO_D}+|\d+){_KO_SEP})*(?:{_KO_D}{{2,}}|\d{{2,}})"
    rf"(?={_KO_PARTICLE}(?![가-힣\d]))"
)
_KO_DIGIT = re.compile(r"[공영일이삼사오육륙칠팔구0-9]")
_EN_COUNTED = re.compile(rf"\b(?:(double|triple)[ \-])?({_EN_DIGITS}\b|\d+)", re.IGNORECASE)


def _digits_said(run: str, korean: bool) -> int:
    """How many digits a run of digit words says ("double five" is two, "4111" four)."""
    if korean:
        return len(_KO_DIGIT.findall(run))
    total = 0
    for repeat, word in _EN_COUNTED.findall(run):
        times = {"": 1, "double": 2, "triple": 3}[repeat.lower()]
        total += len(word) * times if word.isdigit() else times
    return total


class _SpokenNumber:
    """A pattern-like object (``subn``) for digit-by-digit numbers in English and Korean."""

    def subn(self, tag: str, text: str) -> tuple[str, int]:
        found = 0

        def replacer(korean: bool) -> Callable[[re.Match[str]], str]:
            spoken = re.compile(r"[^\d\W]" if not korean else r"[공영일이삼사오육륙칠팔구]")

            def one(m: re.Match[str]) -> str:
                nonlocal found
                run = m.group(0)
                # Runs of figures alone are the other patterns' business.
                if _digits_said(run, korean) < 7 or not spoken.search(run):
                    return run
                found += 1
                return tag

            return one

        text = _EN_RUN.sub(replacer(False), text)
        text = _KO_RUN.sub(replacer(True), text)
        return text, found


class _Pattern(Protocol):
    def subn(self, repl: str, string: str) -> tuple[str, int]: ...


PATTERNS: tuple[tuple[str, _Pattern], ...] = (
    ("email", _EMAIL),
    ("email", _SPOKEN_EMAIL),
    ("rrn", _RRN),
    ("card", _CARD),
    ("phone", _PHONE),
    ("number", _LONG_NUMBER),
    ("number", _SpokenNumber()),
)
TAGS = {
    "email": "[EMAIL]",
    "rrn": "[RRN]",
    "card": "[CARD]",
    "phone": "[PHONE]",
    "number": "[NUMBER]",
}


@dataclass(frozen=True)
class Masked:
    text: str
    kinds: tuple[str, ...]  # what was found, in pattern order, each kind once

    @property
    def found(self) -> bool:
        return bool(self.kinds)


def mask(text: str) -> Masked:
    """``text`` with personal data replaced by tags such as ``[PHONE]``."""
    kinds: list[str] = []
    for kind, pattern in PATTERNS:
        text, n = pattern.subn(TAGS[kind], text)
        if n and kind not in kinds:
            kinds.append(kind)
    return Masked(text, tuple(kinds))
