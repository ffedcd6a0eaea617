"""When a pause ends the turn (``semantic_vad``): the rule that weighs the signals. I/O-free.

Early in each pause (``judge_after_ms``) these signals are read about the speech so far:

* the end-of-turn model's probability that the speaker has finished (Smart Turn v3.2: how it
  sounds: falling pitch, a drawn-out last word);
* what the speculative transcript says: a clause that reads unfinished ("..." or a last word
  like "and", "the", "to") is not a turn's end, however it sounds;
* with a text model (``vad.text_turn_model``), how likely a language model finds the message
  to end after those words: below ``text_threshold`` the words want more ("I would like to
  book a table" sounds finished and Whisper writes it with a full stop; the words alone do
  not end there).

Without a text model, a model that is sure (``sure``) ends the turn without waiting for the
transcript (Whisper takes longer than the model); with one, every pause waits for the words'
reading. Otherwise the wait is adaptive: when all say "finished", the turn ends at once;
when the model only leans that way, the turn ends if the pause reaches ``likely_wait_ms``;
otherwise (an unfinished transcript, or the model says the speaker goes on) at
``max_wait_ms``. The conversation is a third signal: a short answer to a question the agent
just asked is usually complete, so there the model's thresholds are lowered.

Each eagerness is a threshold and a wait, chosen on the dev half of ``bench/turn_taking.py``
and reported on its held-out half.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Eagerness = Literal["low", "medium", "high", "auto"]


@dataclass(frozen=True)
class Patience:
    """How one eagerness trades cut-ins for waiting."""

    sure: float  # the model's P(finished) from which the turn ends without the transcript
    threshold: float  # from this (and a finished transcript) the turn ends at once
    likely: float  # at or above this (below threshold), it ends at likely_wait_ms
    likely_wait_ms: int
    max_wait_ms: int  # a pause this long ends the turn whatever the signals said
    # A short answer (SHORT_ANSWER_WORDS) to the agent's question ends at once from:
    answer_threshold: float
    # The text model's P(the message ends here) below which the words read unfinished.
    text_threshold: float = 0.1


# "auto" is "medium", as in OpenAI's API. Chosen on the dev half of bench/turn_taking.py.
PATIENCE: dict[str, Patience] = {
    "high": Patience(
        sure=0.9,
        threshold=0.5,
        likely=0.2,
        likely_wait_ms=500,
        max_wait_ms=800,
        answer_threshold=0.1,
        text_threshold=0.05,
    ),
    "medium": Patience(
        sure=0.9,
        threshold=0.9,
        likely=0.5,
        likely_wait_ms=800,
        max_wait_ms=1500,
        answer_threshold=0.1,
        text_threshold=0.1,
    ),
    "low": Patience(
        sure=0.95,
        threshold=0.95,
        likely=0.7,
        likely_wait_ms=1200,
        max_wait_ms=3000,
        answer_threshold=0.3,
        text_threshold=0.2,
    ),
}
PATIENCE["auto"] = PATIENCE["medium"]
SHORT_ANSWER_WORDS = 4

# A transcript whose last word is one of these has not finished its clause.
UNFINISHED_WORDS = frozenset(
    [
        "and",
        "or",
        "but",
        "so",
        "because",
        "if",
        "that",
        "which",
        "who",
        "whose",
        "where",
        "the",
        "a",
        "an",
        "to",
        "of",
        "for",
        "with",
        "from",
        "at",
        "in",
        "on",
        "by",
        "about",
        "into",
        "my",
        "your",
        "our",
        "their",
        "his",
        "her",
        "its",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "i",
        "we",
        "you",
        "he",
        "she",
        "they",
        "could",
        "would",
        "should",
        "can",
        "will",
        "whether",
        "when",
        "while",
        "than",
        "as",
        "like",
        "then",
    ]
)
_WORDS = re.compile(r"[a-z0-9']+")


def reads_unfinished(text: str) -> bool:
    """Whether a transcript reads as a clause still going: "...", a trailing comma or dash, or
    a last word that cannot end one."""
    t = text.strip()
    if not t:
        return False  # nothing heard: no evidence either way
    if t.endswith(("...", "…", ",", "-", "—")):
        return True
    words = _WORDS.findall(t.lower())
    return bool(words) and words[-1] in UNFINISHED_WORDS


def sure_enough(probability: float | None, eagerness: str) -> bool:
    """Whether the model alone ends the turn (before the transcript is in)."""
    return probability is not None and probability >= PATIENCE[eagerness].sure


@dataclass(frozen=True)
class Verdict:
    wait_ms: int  # the pause that ends the turn (0: now)
    why: str  # for the turn record: which signal decided

    @property
    def finished(self) -> bool:
        return self.wait_ms == 0


def judge(
    probability: float | None,
    transcript: str | None,
    eagerness: str,
    *,
    after_question: bool = False,
    text_probability: float | None = None,
) -> Verdict:
    """Whether the pause ends the turn now. ``probability`` None: no end-of-turn model (the
    transcript alone decides); ``transcript`` None: the speculative decode failed;
    ``text_probability``: the text model's P(the message ends here), None without one."""
    patience = PATIENCE[eagerness]
    text = transcript or ""
    if reads_unfinished(text):
        return Verdict(patience.max_wait_ms, "transcript_unfinished")
    short_answer = after_question and 0 < len(_WORDS.findall(text.lower())) <= SHORT_ANSWER_WORDS
    # Read before the sound: Whisper writes a fragment as a sentence, and Smart Turn hears a
    # falling clause end as finished ("I would like to book a table" scored 0.58-0.98), but
    # the words alone still want more. A short answer to a question is exempt: "Tuesday at
    # ten" needs no more words, whatever the model expects.
    if (
        text_probability is not None
        and text_probability < patience.text_threshold
        and not short_answer
    ):
        return Verdict(patience.max_wait_ms, "text_unfinished")
    if probability is None:
        return Verdict(0, "transcript")
    if short_answer and probability >= patience.answer_threshold:
        return Verdict(0, "answer")
    if probability >= patience.threshold:
        return Verdict(0, "model")
    if probability >= patience.likely:
        return Verdict(patience.likely_wait_ms, "model_likely")
    return Verdict(patience.max_wait_ms, "model_unfinished")


# Said while the agent speaks, these mean "go on", not "stop" ("no", "wait" and "stop" are not
# here: they interrupt).
BACKCHANNELS = frozenset(
    [
        "uh-huh",
        "uh",
        "huh",
        "mm-hmm",
        "mhm",
        "mm",
        "hmm",
        "hm",
        "mmm",
        "um",
        "uh",
        "okay",
        "ok",
        "yeah",
        "yes",
        "yep",
        "yup",
        "right",
        "sure",
        "alright",
        "all",
        "i",
        "see",
        "got",
        "it",
        "oh",
        "ah",
        "wow",
        "cool",
        "nice",
        "great",
        "good",
        "really",
        "true",
        "exactly",
        # Added after the fresh set of bench/barge_in.py cancelled on "Makes sense." (with
        # the phrases below); scored on a second fresh set written by someone who had not
        # seen this list.
        "perfect",
        "gotcha",
        "absolutely",
        "definitely",
        "totally",
        "interesting",
        "awesome",
        "excellent",
        "fine",
        "lovely",
        "indeed",
    ]
)
# Acknowledgements whose words alone could also ask or object ("of", "that's", "go"): they
# count only together.
BACKCHANNEL_PHRASES = (
    "makes sense",
    "sounds good",
    "fair enough",
    "of course",
    "that's right",
    "that's true",
    "go on",
    "go ahead",
)
MAX_BACKCHANNEL_WORDS = 3
# A hummed "mm-hmm" has no vowel for Whisper to spell, so it comes out as letters ("M-H-N",
# "Mm-", "uhh"): a word made of m, h, n and u only, with an m or an h, is a hum.
_HUM = re.compile(r"(?=[mhnu]*[mh])[mhnu]+")

# With vad.backchannel_prompt, the decode of speech over the agent reads this first
# (Whisper's prompt), so fillers are spelled out instead of heard as words ("Mm-hmm." was "in
# a month.", "Uh huh." "I have" on Piper's clips decoded alone; OpenAI's prompting guide gives
# the same advice for keeping fillers). Off by default: bench/barge_in.py measured no fewer
# cancelled answers with it and slower barge-ins. Per session language.
BACKCHANNEL_PROMPTS = {"en": "Mm-hmm. Uh-huh. Okay. Yeah."}


def is_backchannel(text: str) -> bool:
    """Whether words heard over the agent only acknowledge it ("uh-huh", "okay, yeah")."""
    words = re.findall(r"[a-z'-]+", text.lower().replace("’", "'"))
    if not 0 < len(words) <= MAX_BACKCHANNEL_WORDS:
        return False
    rest = f" {' '.join(words)} "
    for phrase in BACKCHANNEL_PHRASES:
        rest = rest.replace(f" {phrase} ", " ")
    return all(w in BACKCHANNELS or _HUM.fullmatch(w.replace("-", "")) for w in rest.split())
