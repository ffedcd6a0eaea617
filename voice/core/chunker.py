"""Cut a stream of LLM tokens into speakable pieces for TTS.

The first piece decides how soon the caller hears anything, so it is cut short: at the first
clause boundary once ``first_min_chars`` are buffered. Later pieces are whole sentences,
short ones merged, because a TTS voice phrases a sentence better than a fragment of one.

Text is fed one character at a time whatever the token sizes, so the pieces never depend on
how the LLM happened to split its output. A cut needs the whitespace after a ``.``: "3.5" is
never cut, and the word before the dot is checked against a small abbreviation list ("Dr.",
"e.g.", "U.S."). Fragments with nothing to say (only punctuation) are merged into the next
piece, or dropped at the very end of the stream where nothing follows.
"""

from __future__ import annotations

import re
from enum import Enum

# Lower-case, with the dot. Dotted initials ("e.g.", "U.S.", "J.") are caught by _INITIALS.
ABBREVIATIONS = frozenset(
    {"mr.", "mrs.", "ms.", "dr.", "prof.", "sr.", "jr.", "st.", "mt.", "vs.", "etc.", "inc."}
    | {"ltd.", "co.", "corp.", "dept.", "approx.", "fig.", "est.", "min.", "max.", "no."}
)
_INITIALS = re.compile(r"(?:[^\W\d_]\.)+")
_CLOSERS = "\"')]}»”’"
_OPENERS = "\"'([{«“‘"
_CLAUSE_MARKS = ",;:—–"
# A first piece cut at a space (no clause boundary in time) does not end on these: "I'm not
# available for | a visit" phrases worse than "I'm not available | for a visit".
_LEADING_WORDS = frozenset({
    "a", "an", "the", "to", "of", "for", "with", "at", "in", "on", "by", "from", "and", "or",
    "but", "so", "as", "than", "that", "this", "my", "your", "our", "their", "his", "her",
    "its", "is", "are", "was", "were", "be", "will", "would", "can", "could", "i", "you", "we",
    "they", "it", "any", "some", "every", "all", "not", "no", "very", "more", "most",
})  # fmt: skip


class _Kind(Enum):
    CLAUSE = 1
    SENTENCE = 2


def _speakable(piece: str) -> bool:
    return any(c.isalnum() for c in piece)


class SpeakableChunker:
    """Stateful cutter for one response; :meth:`flush` ends it and makes it reusable."""

    def __init__(
        self,
        *,
        first_min_chars: int = 12,
        first_max_chars: int = 60,
        min_chars: int = 40,
        max_chars: int = 220,
    ) -> None:
        if not 0 < first_min_chars <= first_max_chars or not 0 < min_chars <= max_chars:
            raise ValueError("need 0 < first_min_chars <= first_max_chars, 0 < min <= max")
        self.first_min_chars = first_min_chars
        self.first_max_chars = first_max_chars
        self.min_chars = min_chars
        self.max_chars = max_chars
        # Normalised text not yet emitted: no leading whitespace, each whitespace run kept as
        # one character ("\n" when the run held a newline, else " ").
        self._buf = ""
        self._soft: int | None = None  # index of the whitespace after the last boundary
        self._emitted = False

    def push(self, token: str) -> list[str]:
        """Add a token; return the pieces it completed (often none)."""
        pieces: list[str] = []
        for ch in token:
            piece = self._feed(ch)
            if piece is not None:
                pieces.append(piece)
        return pieces

    def flush(self) -> list[str]:
        """End of the stream: return what is left (if speakable) and reset for reuse."""
        rest = self._buf.replace("\n", " ").strip()
        self._buf, self._soft, self._emitted = "", None, False
        return [rest] if _speakable(rest) else []

    def _feed(self, ch: str) -> str | None:
        buf = self._buf
        if not ch.isspace():
            self._buf = buf + ch
            return self._hard_cut()
        if not buf:
            return None  # leading whitespace
        if buf[-1] == "\n" or (buf[-1] == " " and ch != "\n"):
            return None  # inside a whitespace run that is already a boundary or no better
        if buf[-1] == " ":  # a newline upgrades the run into a sentence boundary
            self._buf = buf[:-1]
            kind: _Kind | None = _Kind.SENTENCE
        else:
            kind = _Kind.SENTENCE if ch == "\n" else _boundary(buf)
        return self._at_whitespace(kind, "\n" if ch == "\n" else " ")

    def _at_whitespace(self, kind: _Kind | None, ws: str) -> str | None:
        """The buffer ends a word; cut it whole if a boundary here is good enough."""
        size = len(self._buf)
        if self._emitted:
            good = kind is _Kind.SENTENCE and size >= self.min_chars
        else:
            good = kind is not None and size >= self.first_min_chars
        # A single word longer than the limit can only be cut once it ends.
        if (good or size > self._limit()) and _speakable(self._buf):
            return self._cut(size)
        if kind is not None:
            self._soft = size
        self._buf += ws
        return None

    def _hard_cut(self) -> str | None:
        """Past the limit without a good boundary: cut at the last whitespace (or boundary)."""
        buf = self._buf
        if len(buf) <= self._limit():
            return None
        at = max(buf.rfind(" "), buf.rfind("\n"))
        if at <= 0:
            return None  # one long word so far
        if self._emitted and self._soft is not None and self._soft >= self.min_chars:
            at = self._soft  # a clause boundary phrases better than an arbitrary space
        elif not self._emitted:
            at = self._before_leading_words(buf, at)
        if not _speakable(buf[:at]):
            return None
        return self._cut(at)

    def _before_leading_words(self, buf: str, at: int) -> int:
        """``at`` moved back past words that lead into what follows (at most two, never
        under ``first_min_chars``)."""
        for _ in range(2):
            start = max(buf.rfind(" ", 0, at), buf.rfind("\n", 0, at))
            word = buf[start + 1 : at].strip(_CLOSERS + _OPENERS).lower()
            if start < self.first_min_chars or word not in _LEADING_WORDS:
                break
            at = start
        return at

    def _cut(self, at: int) -> str:
        piece = self._buf[:at].replace("\n", " ").strip()
        self._buf = self._buf[at + 1 :]
        self._soft = None
        self._emitted = True
        return piece

    def _limit(self) -> int:
        return self.max_chars if self._emitted else self.first_max_chars


def _boundary(text: str) -> _Kind | None:
    """What the end of ``text`` (just before a whitespace) is a boundary of, if anything."""
    end = text.rstrip(_CLOSERS)
    if not end:
        return None
    last = end[-1]
    if last in "!?":
        return _Kind.SENTENCE
    if last == ".":
        word = end[max(end.rfind(" "), end.rfind("\n")) + 1 :].lstrip(_OPENERS).lower()
        if word in ABBREVIATIONS or _INITIALS.fullmatch(word):
            return None
        return _Kind.SENTENCE
    if last in _CLAUSE_MARKS:
        return _Kind.CLAUSE
    return None
