"""The real embedded engines, each on real audio (fast enough to run on every commit)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.voice_fakes import wer
from voice.audio import FRAME_SAMPLES, resample
from voice.core.heard import is_hallucination
from voice.engines.asr import WhisperTranscriber, looks_looped
from voice.engines.factory import build_asr, build_chat_chain
from voice.engines.tts import EspeakSynthesizer, PiperSynthesizer
from voice.engines.vad import SileroVad
from voice.testing.clips import CLIP_TEXT, bundled_clip
from workers.settings import Settings

pytestmark = pytest.mark.models


def _probs(vad: SileroVad, audio: np.ndarray) -> np.ndarray:
    stream = vad.fork()
    n = len(audio) // FRAME_SAMPLES
    return np.array(
        [
            stream.speech_probability(audio[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
            for i in range(n)
        ]
    )


def test_vad_finds_speech_and_not_silence(vad: SileroVad) -> None:
    assert np.mean(_probs(vad, bundled_clip()) > 0.5) > 0.5
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(16_000) * 0.003).astype(np.float32)
    assert np.max(_probs(vad, noise)) < 0.5


def test_whisper_transcribes_the_clip(asr_tiny: WhisperTranscriber) -> None:
    result = asr_tiny.transcribe(bundled_clip())
    assert wer(CLIP_TEXT, result.text) < 0.25, result.text
    assert result.no_speech_prob < 0.3 and result.avg_logprob > -1.0


def test_a_window_that_fits_the_turn_hears_the_same_words(
    asr_tiny: WhisperTranscriber, settings: Settings
) -> None:
    """The short encoder window (asr.min_window_s, on by default) against the 30 s one."""
    full = build_asr(
        settings.model_copy(update={"asr": settings.asr.model_copy(update={"min_window_s": 0})}),
        "tiny.en",
    )
    clip = bundled_clip()
    assert asr_tiny._min_window_s > 0 and len(clip) < 8 * 16_000
    fitted, whole = asr_tiny.transcribe(clip), full.transcribe(clip)
    assert wer(CLIP_TEXT, fitted.text) < 0.25, fitted.text
    assert wer(whole.text, fitted.text) < 0.15, (whole.text, fitted.text)
    assert fitted.no_speech_prob < 0.3 and fitted.avg_logprob > -1.0


def test_a_bounded_decode_stops_at_its_token_budget(settings: Settings) -> None:
    """``asr.max_tokens_per_s`` (Korean's guard against looping decodes): at 0.1 token per
    second the 4.7 s clip gets the 10-token margin, a few words of its sixteen."""

    def whisper(**asr: object) -> WhisperTranscriber:
        update = {"min_window_s": 0, **asr}
        return build_asr(
            settings.model_copy(update={"asr": settings.asr.model_copy(update=update)}), "tiny.en"
        )

    clip = bundled_clip()
    full = whisper().transcribe(clip)
    bounded = whisper(max_tokens_per_s=0.1, temperatures=[0.0]).transcribe(clip)
    assert wer(CLIP_TEXT, full.text) < 0.25, full.text
    assert 0 < len(bounded.text.split()) < 12, bounded.text
    assert full.text.lower().startswith(bounded.text.lower().rstrip(".,").split()[0].lower())


@pytest.mark.parametrize(
    ("text", "seconds", "looped"),
    [
        ("What is the capital of France?", 2.0, False),
        ("What is the capital of France? What is the", 2.0, True),
        ("Okay. Okay. Okay.", 1.0, True),
        ("Thanks! That was really helpful! Thanks! That was really helpful!", 2.5, True),
        ("Yes.", 0.6, False),
        ("one two three four five six seven eight nine ten eleven twelve", 1.5, True),
        ("I would like to book a table for two at seven tonight.", 3.5, False),
    ],
)
def test_a_looped_short_window_decode_is_recognised(
    text: str, seconds: float, looped: bool
) -> None:
    assert looks_looped(text, seconds) is looped


def test_whisper_on_silence_is_caught_by_the_guard(asr_tiny: WhisperTranscriber) -> None:
    result = asr_tiny.transcribe(np.zeros(16_000, dtype=np.float32))
    assert is_hallucination(result.text) or result.no_speech_prob > 0.5


def test_piper_speech_is_intelligible(
    piper: PiperSynthesizer, asr_tiny: WhisperTranscriber
) -> None:
    text = "Your package will arrive on Friday afternoon."
    chunks = list(piper.synthesize(text))
    audio = np.concatenate(chunks)
    assert 1.5 < len(audio) / piper.sample_rate < 5
    heard = asr_tiny.transcribe(resample(audio, piper.sample_rate, 16_000)).text
    assert wer(text, heard) < 0.2, heard


def test_espeak_fallback_speaks() -> None:
    tts = EspeakSynthesizer()
    audio = np.concatenate(list(tts.synthesize("Sorry, I did not catch that.")))
    assert len(audio) / tts.sample_rate > 1.0 and np.abs(audio).max() > 0.1


def test_gguf_chat_streams_an_answer(settings: Settings) -> None:
    chat = build_chat_chain(settings)[0]

    async def collect() -> list[str]:
        messages = [{"role": "user", "content": "Say hello."}]
        return [p async for p in chat.stream(messages, max_tokens=16, temperature=0.0)]  # type: ignore[arg-type]

    pieces = asyncio.run(collect())
    assert len(pieces) > 1 and "".join(pieces).strip()
