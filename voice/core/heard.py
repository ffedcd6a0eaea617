"""Whether a transcript holds words the caller said, or what Whisper makes up for silence."""

from __future__ import annotations

from voice.engines.contracts import Transcript

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


def usable(result: Transcript, *, no_speech: float = 0.6, min_logprob: float = -1.0) -> bool:
    """The hallucination guard: silence, noise and subtitle phrases never reach the LLM."""
    if is_hallucination(result.text):
        return False
    return not (result.no_speech_prob > no_speech and result.avg_logprob < min_logprob)
