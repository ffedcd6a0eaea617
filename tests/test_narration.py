"""Narration: sentences spoken one by one, caption phrases timed (by Whisper where it can)."""

from __future__ import annotations

import numpy as np
import pytest

from media.narration import MAX_CAPTION_WORDS, caption_groups, narrate, split_sentences
from voice.engines.asr import WhisperTranscriber
from voice.engines.tts import PiperSynthesizer
from voice.testing.fakes import FakeSynthesizer

SCRIPT = "Handmade ceramic mugs. Each one glazed by hand, in our small studio. Yours for $24."


def test_split_sentences_and_caption_groups() -> None:
    assert split_sentences(SCRIPT) == [
        "Handmade ceramic mugs.",
        "Each one glazed by hand, in our small studio.",
        "Yours for $24.",
    ]
    words = ["Each", "one", "glazed", "by", "hand,", "in", "our", "small", "studio."]
    groups = caption_groups(words)
    assert [" ".join(words[a:b]) for a, b in groups] == [
        "Each one glazed by hand,",
        "in our small studio.",
    ]
    long = ("word " * 13).split()
    groups = caption_groups(long)
    assert all(b - a <= MAX_CAPTION_WORDS + 1 for a, b in groups)
    assert [i for a, b in groups for i in range(a, b)] == list(range(13))  # every word, once


def test_fake_tts_sentences_in_order_with_pauses() -> None:
    tts = FakeSynthesizer(ms_per_char=40)
    n = narrate(SCRIPT, tts)
    assert tts.spoken == split_sentences(SCRIPT)
    assert n.engine == "fake-tts" and not n.aligned
    starts = [s.start for s in n.sentences]
    assert starts == sorted(starts) and n.sentences[-1].end <= n.duration + 1e-6
    assert " ".join(p.text for p in n.phrases) == SCRIPT  # captions are the script's words
    for a, b in zip(n.phrases, n.phrases[1:], strict=False):
        assert a.end <= b.start + 1e-9


def test_failing_tts_falls_back_for_the_whole_script() -> None:
    broken = FakeSynthesizer(fail={2})
    fallback = FakeSynthesizer(name="fallback")
    n = narrate(SCRIPT, broken, fallback=fallback)
    assert n.engine == "fallback"
    assert fallback.spoken == split_sentences(SCRIPT)  # all of it, not half in each voice


@pytest.mark.models
def test_real_piper_narration_aligned_by_whisper(
    piper: PiperSynthesizer, asr_tiny: WhisperTranscriber
) -> None:
    n = narrate(SCRIPT, piper, aligner=asr_tiny)
    assert n.engine.startswith("piper") and n.aligned
    assert 4.0 < n.duration < 9.0
    # Each caption lies inside its sentence's audio, and the audio there is speech, not pause.
    for phrase in n.phrases:
        sentence = next(s for s in n.sentences if s.start - 0.05 <= phrase.start <= s.end)
        assert phrase.end <= sentence.end + 0.05
        a, b = round(phrase.start * n.sample_rate), round(phrase.end * n.sample_rate)
        assert float(np.sqrt(np.mean(n.audio[a:b] ** 2))) > 0.01, phrase
    # The word "studio" is spoken at the end of the second sentence, and its caption says so.
    studio = next(p for p in n.phrases if "studio" in p.text)
    assert studio.end == pytest.approx(n.sentences[1].end, abs=0.35)
    # Each caption times its own words, in order, inside it (for word-by-word captions);
    # "studio" is the last word spoken in its sentence.
    for phrase in n.phrases:
        assert [w.text for w in phrase.words] == phrase.text.split()
        starts = [w.start for w in phrase.words]
        assert starts == sorted(starts) and phrase.start <= starts[0]
        assert all(w.start <= w.end <= phrase.end for w in phrase.words)
    word = next(w for p in n.phrases for w in p.words if "studio" in w.text)
    assert word.end == pytest.approx(n.sentences[1].end, abs=0.35)
    assert word.end - word.start < 1.0
