"""A voice server's runtimes assembled from settings: engines loaded once, one runtime per
experiment arm, and the turn policy (deadlines, tool rounds, filler) read off the settings."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar, cast

from base.errors import ConfigError
from base.settings import with_overrides
from voice import audio as pcm
from voice.audio import concat
from voice.engines.contracts import Synthesizer, Transcriber
from voice.engines.factory import (
    build_asr,
    build_asr_chain,
    build_chat_chain,
    build_text_turn,
    build_tts_chain,
    build_turn,
    build_vad,
)
from voice.errors import EngineError
from voice.learning import lineage
from voice.learning.experiments import arm_configs
from voice.runtime.turns import Engines, Runtime, TurnPolicy
from voice.settings import VoiceSettings

T = TypeVar("T")


Once = Callable[[str, object, Callable[[], Any]], Any]


def load_engines(settings: VoiceSettings) -> Engines:
    """Load every engine a voice server needs, once, and pre-synthesise the apology clip."""
    return _engines(settings, lambda kind, section, build: build())


class EngineCache:
    """Engines built once per configuration: arms and languages configured alike share
    them (an ASR-only experiment loads one LLM; Korean sessions reuse the Whisper base the
    English ones load as their fallback)."""

    def __init__(self) -> None:
        self._built: dict[str, object] = {}
        self._lock = threading.Lock()  # languages are built in threads, on first use

    def once(self, kind: str, section: object, build: Callable[[], T]) -> T:
        key = kind + ":" + json.dumps(section, sort_keys=True, default=str)
        with self._lock:
            if key not in self._built:
                self._built[key] = build()
            return cast(T, self._built[key])


def load_runtimes(settings: VoiceSettings, cache: EngineCache | None = None) -> list[Runtime]:
    """One runtime per experiment arm (one in all without an experiment)."""
    configs = arm_configs(settings)  # every arm validated before any model loads
    once = (cache or EngineCache()).once
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


def language_runtime(arm: Runtime, language: str, cache: EngineCache) -> Runtime:
    """``arm`` in ``language``: its settings with ``languages[language]`` applied, engines
    from ``cache`` (loaded on first use), its VAD and server tools shared."""
    overrides = arm.settings.languages[language]
    try:
        s = with_overrides(arm.settings, overrides)
    except ConfigError as exc:
        message = str(exc).removeprefix(f"setting {exc.setting}: ")
        raise ConfigError(f"languages.{language} {exc.setting}", message) from None
    engines = replace(_engines(s, cache.once), tools=arm.engines.tools)
    return Runtime(
        arm.name,
        engines,
        arm.vad,
        turn_policy(s),
        s,
        weight=arm.weight,
        lineage=lineage.of_settings(s),
    )


def _engines(s: VoiceSettings, once: Once) -> Engines:
    """The engines for settings ``s``; ``once(kind, section, build)`` may hand back an engine
    already built for the same section instead of calling ``build``."""
    # The apology clip is part of the pair: the same voice with another apology is another.
    tts_key = [s.tts.model_dump(mode="json"), s.llm.apology]
    tts, tts_fallback, apology = once("tts", tts_key, lambda: _tts_pair(s))
    asr, *asr_fallback = _asr_chain(s, once)
    return Engines(
        asr=asr,
        chat=once("llm", s.llm.model_dump(mode="json"), lambda: build_chat_chain(s)),
        tts=tts,
        asr_fallback=asr_fallback[0] if asr_fallback else None,
        tts_fallback=tts_fallback,
        apology=apology,
        turn=once("turn", s.vad.turn_model, lambda: build_turn(s)),
        text_turn=once(
            "text_turn", [s.vad.text_turn_model, str(s.model_cache)], lambda: build_text_turn(s)
        ),
    )


def _asr_chain(s: VoiceSettings, once: Once) -> list[Transcriber]:
    if s.asr.backends:
        chain: list[Transcriber] = once(
            "asr-chain", s.asr.model_dump(mode="json"), lambda: build_asr_chain(s)
        )
        return chain
    # A Whisper model is the same engine wherever it is used (primary or fallback).
    asr = s.asr.model_dump(mode="json", exclude={"model", "fallback_model"})
    fallback = s.asr.fallback_model
    primary: Transcriber = once("asr", [asr, s.asr.model], lambda: build_asr(s))
    if not fallback:
        return [primary]
    return [primary, once("asr", [asr, fallback], lambda: build_asr(s, fallback))]


def _tts_pair(
    settings: VoiceSettings,
) -> tuple[Synthesizer, Synthesizer | None, tuple[pcm.Float32Array, int] | None]:
    """The TTS engine, its fallback and the apology clip pre-synthesised by the first that can."""
    tts, *rest = build_tts_chain(settings)
    fallback = rest[0] if rest else None
    apology = None
    for engine in (tts, fallback):
        if engine is None:
            continue
        try:
            clip = concat(list(engine.synthesize(settings.llm.apology)))
            apology = (clip, engine.sample_rate)
            break
        except EngineError:
            continue
    return tts, fallback, apology


def turn_policy(settings: VoiceSettings) -> TurnPolicy:
    llm = settings.llm
    return TurnPolicy(
        first_token_timeout_s=llm.first_token_timeout_s,
        total_timeout_s=llm.total_timeout_s,
        max_tokens=llm.max_tokens,
        temperature=llm.temperature,
        max_tool_rounds=settings.tools.max_rounds,
        filler_after_s=settings.tools.filler_after_ms / 1000,
        filler_text=settings.tools.filler_text if settings.tools.filler_after_ms else "",
        apology_text=settings.llm.apology,
        first_piece_min_chars=settings.tts.first_piece_min_chars,
        first_piece_max_chars=settings.tts.first_piece_max_chars,
    )
