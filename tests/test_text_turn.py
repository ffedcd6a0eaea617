"""semantic_vad's text signal: the embedded SmolLM2 loaded offline from its wheel reads a
pause's words, expects more after a fragment and none after a whole request, and on a real
server keeps a sentence that sounds finished at its pause ("I would like to book a table")
from being answered in two halves."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from base.errors import ModelError
from voice.clients.realtime import RealtimeClient
from voice.core.turntaking import PATIENCE
from voice.engines.registry import resolve_llm
from voice.engines.text_turn import TextTurn, words_of
from voice.testing.fakes import FakeEndOfTurn, FakeTranscriber, silence, tone
from voice.testing.harness import fake_engines, running_server
from workers.settings import Settings

pytestmark = pytest.mark.models
THRESHOLD = PATIENCE["auto"].text_threshold


@pytest.fixture(scope="module")
def reader() -> TextTurn:
    return TextTurn(resolve_llm("smollm2-135m", Settings().model_cache).path, name="smollm2-135m")


def test_the_words_are_read_without_whispers_punctuation() -> None:
    assert words_of("I would like to book a table.") == "i would like to book a table"
    assert words_of("  Okay...  so,   what's next?! ") == "okay so what's next"


@pytest.mark.parametrize(
    ("first", "rest"),
    [
        ("Can I pay with", "a credit card?"),
        ("Could you check if", "my order has shipped?"),
        ("Set an alarm for", "seven tomorrow morning."),
    ],
)
def test_a_fragment_wants_more_words_and_a_whole_request_does_not(
    reader: TextTurn, first: str, rest: str
) -> None:
    assert reader.probability(first) < THRESHOLD <= reader.probability(f"{first} {rest}")


def test_what_the_agent_asked_is_read_too(reader: TextTurn) -> None:
    alone = reader.probability("Tuesday.")
    answering = reader.probability("Tuesday.", "Which day suits you?")
    assert answering > alone  # an answer to a question is more likely complete


def test_reading_on_from_what_the_context_holds_gives_the_same_answers(reader: TextTurn) -> None:
    agent = "We have tables at seven and at half past eight. Which time would you like?"
    words = [
        "I would like",
        "I would like to book a table",
        "I would like to book a table for four",
    ]
    # Each read from only the agent's words in the context...
    fresh = []
    for w in words:
        reader.prime("Hello, how can I help?")  # another conversation in the context
        reader.prime(agent)
        fresh.append(reader.probability(w, agent))
    # ... and read on at each pause of one turn, the earlier words kept. llama.cpp's sums
    # differ slightly with how the tokens were batched, never by much.
    for w, p in zip(words, fresh, strict=True):
        assert reader.probability(w, agent) == pytest.approx(p, rel=0.15, abs=1e-3)
    assert fresh[0] < THRESHOLD  # the fragment still wants more words


def test_a_file_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(ModelError, match="cannot load GGUF model"):
        TextTurn(junk, name="junk")


def _paused_sentence() -> np.ndarray:
    """Speech, a 700 ms mid-sentence pause, more speech, then a long silence."""
    return np.concatenate([silence(200), tone(800), silence(700), tone(800), silence(2200)])


async def _commits(tmp_path: Path, text_turn: TextTurn | None, agent: str | None = None) -> int:
    engines = fake_engines(
        # Whisper writes the first half as a sentence, as it does.
        asr=FakeTranscriber(
            texts=["I would like to book a table.", "I would like to book a table for two."]
        ),
        turn=FakeEndOfTurn(0.99),  # the sound says "finished" at every pause
        text_turn=text_turn,
    )
    options = {"vad": {"turn_detection": "semantic_vad"}}
    async with running_server(tmp_path, engines, **options) as (url, _, _):
        client = await RealtimeClient.open(url)
        try:
            if agent:  # the agent has spoken: its words are read ahead while the caller speaks
                await client.add_agent_message(agent)
            await client.stream(_paused_sentence(), 16_000)
            await asyncio.sleep(0.3)
            return client.types().count("input_audio_buffer.committed")
        finally:
            await client.close()


async def test_the_words_keep_a_paused_sentence_in_one_turn(
    tmp_path: Path, reader: TextTurn
) -> None:
    assert await _commits(tmp_path / "sound", None) == 2  # the sound alone cuts in
    assert await _commits(tmp_path / "words", reader) == 1
    greeting = "Hi! How can I help you?"
    assert await _commits(tmp_path / "after", reader, greeting) == 1
