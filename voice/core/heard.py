"""Whether a transcript holds words the caller said, or what Whisper makes up for silence."""

from __future__ import annotations

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
