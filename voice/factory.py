"""Build engines from settings: the one place that maps configuration to backends."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from voice import audio as pcm
from voice import lineage
from voice.asr import WhisperTranscriber
from voice.audio import concat
from voice.config import LlmBackend, Settings
from voice.engines import ChatModel, Synthesizer
from voice.errors import EngineError
from voice.experiments import arm_configs
from voice.llm import LlamaCppChat, OpenAIChat
from voice.models import resolve_asr, resolve_llm, resolve_tts, resolve_turn, resolve_vad
from voice.tts import EspeakSynthesizer, PiperSynthesizer
from voice.turns import APOLOGY, Engines, Runtime, TurnPolicy
from voice.turntaking.smart_turn import SmartTurn
from voice.vad import SileroVad

T = TypeVar("T")


def build_vad(settings: Settings) -> SileroVad:
    return SileroVad(resolve_vad(settings.vad.model).path)


def build_turn(settings: Settings) -> SmartTurn | None:
    """semantic_vad's end-of-turn model; None when ``vad.turn_model`` is empty."""
    ref = settings.vad.turn_model
    return SmartTurn(resolve_turn(ref).path, name=ref) if ref else None


def build_asr(settings: Settings, ref: str | None = None) -> WhisperTranscriber:
    ref = ref or settings.asr.model
    model = resolve_asr(ref, settings.model_cache)
    a = settings.asr
    return WhisperTranscriber(
        model.path,
        name=f"whisper:{ref}",
        device=a.device,
        compute_type=a.compute_type,
        cpu_threads=a.cpu_threads,
        beam_size=a.beam_size,
        language=a.language,
        min_window_s=a.min_window_s,
    )


def build_chat(
    backend: LlmBackend, *, timeout_s: float = 30, cache_dir: Path | None = None
) -> ChatModel:
    """``cache_dir``: where a split GGUF is assembled (``settings.model_cache``)."""
    if backend.kind == "gguf":
        model = resolve_llm(backend.model, cache_dir)
        return LlamaCppChat(
            model.path,
            name=backend.label,
            n_threads=backend.n_threads,
            n_threads_batch=backend.n_threads_batch,
            context_tokens=backend.context_tokens,
            parallel=backend.parallel,
        )
    assert backend.url is not None  # checked by LlmBackend
    key = backend.api_key.get_secret_value() if backend.api_key else None
    return OpenAIChat(
        str(backend.url), model=backend.model, name=backend.label, api_key=key, timeout_s=timeout_s
    )


def build_chat_chain(settings: Settings) -> list[ChatModel]:
    return [
        build_chat(b, timeout_s=settings.llm.total_timeout_s, cache_dir=settings.model_cache)
        for b in settings.llm.backends
    ]


def build_tts(settings: Settings) -> Synthesizer:
    t = settings.tts
    if t.engine == "espeak":
        return EspeakSynthesizer(voice=t.espeak_voice)
    model = resolve_tts(t.voice)
    return PiperSynthesizer(
        model.path, name=f"piper:{t.voice}", length_scale=t.length_scale, threads=t.threads
    )


def build_fallback_tts(settings: Settings) -> Synthesizer | None:
    if settings.tts.fallback == "none":
        return None
    return EspeakSynthesizer(voice=settings.tts.espeak_voice)


Once = Callable[[str, object, Callable[[], Any]], Any]


def load_engines(settings: Settings) -> Engines:
    """Load every engine a voice server needs, once, and pre-synthesise the apology clip."""
    return _engines(settings, lambda kind, section, build: build())


def load_runtimes(settings: Settings) -> list[Runtime]:
    """One runtime per experiment arm (one in all without an experiment). Arms that configure
    a model the same way share its loaded engine: an ASR-only experiment loads one LLM."""
    configs = arm_configs(settings)  # every arm validated before any model loads
    cache: dict[str, object] = {}

    def once(kind: str, section: object, build: Callable[[], T]) -> T:
        key = kind + ":" + json.dumps(section, sort_keys=True, default=str)
        if key not in cache:
            cache[key] = build()
        return cast(T, cache[key])

    return [
        Runtime(
            arm.name,
            _engines(arm.settings, once),
            once("vad", arm.settings.vad.model, lambda: build_vad(arm.settings)),  # noqa: B023 - called at once
            turn_policy(arm.settings),
            arm.settings,
            weight=arm.weight,
            lineage=lineage.of_settings(arm.settings),
        )
        for arm in configs
    ]


def _engines(s: Settings, once: Once) -> Engines:
    """The engines for settings ``s``; ``once(kind, section, build)`` may hand back an engine
    already built for the same section instead of calling ``build``."""
    # A Whisper model is the same engine wherever it is used (primary or fallback).
    asr = s.asr.model_dump(mode="json", exclude={"model", "fallback_model"})
    tts, tts_fallback, apology = once("tts", s.tts.model_dump(mode="json"), lambda: _tts_pair(s))
    fallback = s.asr.fallback_model
    return Engines(
        asr=once("asr", [asr, s.asr.model], lambda: build_asr(s)),
        chat=once("llm", s.llm.model_dump(mode="json"), lambda: build_chat_chain(s)),
        tts=tts,
        asr_fallback=once("asr", [asr, fallback], lambda: build_asr(s, fallback))
        if fallback
        else None,
        tts_fallback=tts_fallback,
        apology=apology,
        turn=once("turn", s.vad.turn_model, lambda: build_turn(s)),
    )


def _tts_pair(
    settings: Settings,
) -> tuple[Synthesizer, Synthesizer | None, tuple[pcm.Float32Array, int] | None]:
    """The TTS engine, its fallback and the apology clip pre-synthesised by the first that can."""
    tts = build_tts(settings)
    fallback = build_fallback_tts(settings)
    apology = None
    for engine in (tts, fallback):
        if engine is None:
            continue
        try:
            apology = (concat(list(engine.synthesize(APOLOGY))), engine.sample_rate)
            break
        except EngineError:
            continue
    return tts, fallback, apology


def turn_policy(settings: Settings) -> TurnPolicy:
    llm = settings.llm
    return TurnPolicy(
        first_token_timeout_s=llm.first_token_timeout_s,
        total_timeout_s=llm.total_timeout_s,
        max_tokens=llm.max_tokens,
        temperature=llm.temperature,
        max_tool_rounds=settings.tools.max_rounds,
        filler_after_s=settings.tools.filler_after_ms / 1000,
        filler_text=settings.tools.filler_text if settings.tools.filler_after_ms else "",
    )
