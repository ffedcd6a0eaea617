"""The end-of-turn model: loaded offline from the pipecat-ai wheel, fed the features its own
reference code computes, and judging spoken clips (Piper's voice: real recordings are the
benchmark's job)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from base.errors import ModelError
from voice.core.turntaking import PATIENCE
from voice.engines.registry import resolve_turn, resolve_vad
from voice.engines.smart_turn import SmartTurn
from voice.engines.tts import PiperSynthesizer
from voice.monitoring import evalset
from workers.settings import Settings

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def model() -> SmartTurn:
    return SmartTurn(resolve_turn("smart-turn-v3.2").path)


def _reference() -> ModuleType:
    """Pipecat's numpy feature code beside the model file, loaded by path (importing the
    pipecat package would need its dependencies): the check that our features are its own."""
    path = resolve_turn("smart-turn-v3.2").path.parent.parent / "_whisper_features.py"
    spec = importlib.util.spec_from_file_location("smart_turn_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_model_comes_from_the_installed_wheel() -> None:
    resolved = resolve_turn("smart-turn-v3.2")
    assert resolved.path.is_file() and "site-packages" in resolved.path.parts
    assert resolved.source == "pipecat-ai==1.14.0" and resolved.licence == "BSD-2-Clause"
    assert resolved.path.stat().st_size == 8_679_182


def test_features_are_those_of_the_models_own_reference(model: SmartTurn) -> None:
    reference = _reference()
    rng = np.random.default_rng(0)
    for seconds in (1.3, 8.0, 11.5):  # padded at the front, exact, and only the last 8 s kept
        audio = (0.1 * rng.standard_normal(int(16_000 * seconds))).astype(np.float32)
        window = audio[-128_000:]
        window = np.pad(window, (128_000 - len(window), 0))
        expected = reference.compute_whisper_log_mel_features(window, do_normalize=True)
        got = model.features(audio)
        assert got.shape == expected.shape == (80, 800)
        assert np.abs(got - expected).max() < 1e-4


def test_finished_and_cut_off_sentences(
    model: SmartTurn, settings: Settings, piper: PiperSynthesizer
) -> None:
    clips = {c.text: c.audio() for c in evalset.build(piper, settings.data_dir / "evalset")}
    pause = np.zeros(3200, np.float32)  # the 200 ms a short pause has when it is judged
    for text in ("What time does the store open tomorrow?", "What is the capital of France?"):
        assert model.probability(np.concatenate([clips[text], pause])) > 0.9, text
    booking = clips["I would like to book a table for two at seven."]
    cut = booking[: int(len(booking) * 0.55)]  # "I would like to book a table for..."
    # Below semantic_vad's "sure" (then the transcript decides too). Piper's voice varies a
    # little from one synthesis to the next: this cut has scored 0.3 to 0.6.
    assert model.probability(np.concatenate([cut, pause])) < PATIENCE["auto"].sure


def test_a_file_that_is_not_the_model_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match="cannot load end-of-turn model"):
        SmartTurn(junk)
    with pytest.raises(ModelError, match="not a Smart Turn v3 model"):
        SmartTurn(resolve_vad("silero").path)  # a real ONNX model, with other inputs
