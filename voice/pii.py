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
from dataclasses import dataclass

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

PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("email", _EMAIL),
    ("email", _SPOKEN_EMAIL),
    ("rrn", _RRN),
    ("card", _CARD),
    ("phone", _PHONE),
    ("number", _LONG_NUMBER),
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
