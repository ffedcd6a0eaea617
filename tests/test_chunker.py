from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice.core.chunker import SpeakableChunker

ANSWER = (
    "Well, the thing about the weather, as far as I know, is that it changes. "
    "It rained yesterday. It was sunny today! Will it snow tomorrow? "
    "Nobody really knows for sure, e.g. the U.S. forecasters. Dr. Smith says 3.5 cm is likely."
)


def _whole(text: str, **kw: int) -> list[str]:
    chunker = SpeakableChunker(**kw)
    return chunker.push(text) + chunker.flush()


def _streamed(tokens: list[str], **kw: int) -> list[str]:
    chunker = SpeakableChunker(**kw)
    pieces = [piece for token in tokens for piece in chunker.push(token)]
    return pieces + chunker.flush()


def test_first_piece_is_a_short_clause() -> None:
    pieces = _whole(ANSWER)
    assert pieces[0] == "Well, the thing about the weather,"  # "Well," alone is under 12 chars


def test_first_piece_without_a_boundary_is_cut_at_the_last_space() -> None:
    pieces = _whole("one two three four five six seven eight nine ten eleven twelve thirteen")
    assert pieces[0] == "one two three four five six seven eight nine ten eleven"
    assert len(pieces[0]) <= 60


def test_later_pieces_are_sentences_merged_to_min_chars() -> None:
    pieces = _whole(ANSWER)
    assert pieces[1:] == [
        "as far as I know, is that it changes. It rained yesterday.",
        "It was sunny today! Will it snow tomorrow?",
        "Nobody really knows for sure, e.g. the U.S. forecasters.",
        "Dr. Smith says 3.5 cm is likely.",
    ]
    assert all(p[-1] in ".!?" for p in pieces[1:])


def test_numbers_and_abbreviations_are_not_split() -> None:
    text = (
        "Okay, here it is. Dr. Jones paid 3.5 dollars, i.e. 350 cents, in the U.S. on 1,000 days."
    )
    pieces = _whole(text, min_chars=1)
    assert pieces == ["Okay, here it is.", text.removeprefix("Okay, here it is. ")]


def test_long_text_without_boundaries_is_cut_at_max_chars() -> None:
    pieces = _whole("word " * 200, max_chars=100)
    assert all(len(p) <= 100 for p in pieces)
    assert " ".join(pieces) == " ".join(["word"] * 200)


def test_newlines_end_sentences_and_whitespace_is_normalised() -> None:
    text = "Here is the list you asked for:\n\n  first   item with   details\nsecond item\n"
    pieces = _whole(text, first_min_chars=5, min_chars=5)
    assert pieces == ["Here is the list you asked for:", "first item with details", "second item"]


def test_characters_one_at_a_time_give_the_same_pieces() -> None:
    assert _streamed(list(ANSWER)) == _whole(ANSWER)
    llm_like = re.findall(r"\s*\w+|\s*[^\w\s]", ANSWER)  # " weather", ",", " as" ...
    assert "".join(llm_like) == ANSWER
    assert _streamed(llm_like) == _whole(ANSWER)


def test_flush_returns_the_tail_and_resets() -> None:
    chunker = SpeakableChunker()
    assert chunker.push("Sure, I can help with that. ") == ["Sure, I can help with that."]
    assert chunker.push("right away") == []
    assert chunker.flush() == ["right away"]
    assert chunker.flush() == []
    # A fresh response starts with a short first piece again.
    assert chunker.push("Alright then, next one ") == ["Alright then,"]


def test_punctuation_only_fragments_are_merged_or_dropped() -> None:
    chunker = SpeakableChunker(first_min_chars=1, min_chars=1)
    assert chunker.push("Hello there. ") == ["Hello there."]
    assert chunker.push("... Next one. ") == ["... Next one."]
    assert chunker.push(" !! ") == []
    assert chunker.flush() == []


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        SpeakableChunker(min_chars=100, max_chars=50)


_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789", min_size=1, max_size=30)
_TOKEN = st.one_of(
    st.tuples(_WORD, st.sampled_from(["", "", "", ",", ".", "!", "?", ";", ":", "...", ".5"])).map(
        "".join
    ),
    st.sampled_from(["Dr.", "e.g.", "U.S.", "3.5", "1,000", '"Quoted."', "(aside)", "word—word"]),
)
_SEP = st.sampled_from([" ", " ", " ", "  ", "\n", "\n\n ", " — "])


@st.composite
def _texts(draw: st.DrawFn) -> tuple[str, list[str]]:
    words = draw(st.lists(_TOKEN, min_size=1, max_size=120))
    text = words[0]
    for word in words[1:]:
        text += draw(_SEP) + word
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=30)))
    tokens = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    return text, tokens


@given(
    _texts(),
    st.integers(1, 30),
    st.integers(0, 60),
    st.integers(2, 80),  # max_chars >= 2: room for a lone "—" merged before a long word
    st.integers(0, 200),
)
def test_no_text_is_lost_or_reordered(
    sample: tuple[str, list[str]], first_min: int, first_extra: int, min_chars: int, extra: int
) -> None:
    text, tokens = sample
    limits = {
        "first_min_chars": first_min,
        "first_max_chars": first_min + first_extra,
        "min_chars": min_chars,
        "max_chars": max(min_chars + extra, first_min + first_extra),
    }
    pieces = _streamed(tokens, **limits)
    assert pieces == _whole(text, **limits)
    assert " ".join(pieces) == " ".join(text.split())
    assert all(p and p == p.strip() and "  " not in p and "\n" not in p for p in pieces)
    longest_word = max(len(w) for w in text.split())
    assert all(len(p) <= limits["max_chars"] + longest_word for p in pieces[:-1])


def test_a_first_piece_cut_at_a_space_does_not_end_on_a_word_that_leads_on() -> None:
    text = "I'm sorry, I'm not available for a store visit tomorrow."
    assert _whole(text, first_max_chars=32)[:2] == [
        "I'm sorry, I'm not available",
        "for a store visit tomorrow.",
    ]
    # Cut at 20 ("to the of a an the"), then back past "the" and not past "an": that would
    # leave fewer than first_min_chars (12).
    assert _whole("to the of a an the for with the end of it all", first_max_chars=20)[0] == (
        "to the of a an"
    )
    # A short clause is the first piece once first_min_chars allows it.
    assert _whole(text, first_min_chars=8, first_max_chars=32)[0] == "I'm sorry,"
